#!/usr/bin/env bash
# Speak the demo prompts with espeak-ng into sounds/en/ as 8 kHz 16-bit WAV (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p sounds/en
say() {
  local name=$1; shift
  [ -s "sounds/en/$name.wav" ] && return 0
  espeak-ng -v en-us -s 165 -w "/tmp/voxpbx-$name.wav" "$*"
  sox "/tmp/voxpbx-$name.wav" -r 8000 -c 1 -b 16 "sounds/en/$name.wav"
  rm -f "/tmp/voxpbx-$name.wav"
}
say voxpbx-menu "Welcome to voxpbx. Please say sales, support, or billing. Or press 1, 2, or 3."
say voxpbx-sales "Connecting you to sales."
say voxpbx-support "Connecting you to support."
say voxpbx-billing "Connecting you to billing."
say voxpbx-sorry "Sorry, I did not understand. Goodbye."
