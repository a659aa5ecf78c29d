#!/usr/bin/env bash
# Run every cargo-fuzz target for a bounded time (default 30 s each):  scripts/fuzz.sh [SECONDS]
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 enables them on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
for t in $(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v voxpbx-fuzz); do
  echo "==> fuzz $t (${secs}s)"
  cargo fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=2048
done
