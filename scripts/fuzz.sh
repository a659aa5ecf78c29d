#!/usr/bin/env bash
# Run every fuzz target (fuzz/fuzz_targets/*.rs, libFuzzer through libfuzzer-sys) for a bounded
# time each, seeded from the test corpora:   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# It builds the targets the way cargo-fuzz does, with the coverage instrumentation flags that are
# stable in rustc (no nightly, no cargo-fuzz install, no AddressSanitizer: the code under test is
# safe Rust, and a panic aborts the run with the crashing input saved under fuzz/artifacts/<run>/).
# scripts/test.sh runs it for a few seconds per target; run it longer by hand when parsers change.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
triple=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target/fuzz}
# --target keeps these flags off build scripts and proc macros, as cargo-fuzz does.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v voxpbx-fuzz)
fi
echo "==> building fuzz targets: ${targets[*]}"
cargo build --locked --release --manifest-path fuzz/Cargo.toml --target "$triple" \
  $(printf -- '--bin %s ' "${targets[@]}")

# Seeds: the SIP torture corpus for SIP, plus a few well-formed messages for the others.
seeds() {
  case "$1" in
    sip_parse) echo tests/sip_torture ;;
    sdp_parse) echo tests/sip_torture/valid ;;
    config_parser) echo conf ;;
    *) ;;
  esac
}
# Crashes of this run go to a folder of their own, so an old, already-known crash file does not fail it.
run_dir=fuzz/artifacts/$(date +%Y%m%d-%H%M%S)
mkdir -p "$run_dir"
for t in "${targets[@]}"; do
  echo "==> fuzz $t (${secs}s)"
  corpus="$CARGO_TARGET_DIR/corpus/$t"
  mkdir -p "$corpus"
  seed_dirs=()
  s=$(seeds "$t")
  if [ -n "$s" ]; then
    while IFS= read -r d; do seed_dirs+=("$d"); done < <(find "$s" -type d)
  fi
  "$CARGO_TARGET_DIR/$triple/release/$t" "$corpus" "${seed_dirs[@]}" \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$run_dir/$t-" -print_final_stats=1 2>&1 | grep -a -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|==|SUMMARY|thread|panicked)" || true
  if ls "$run_dir/$t"-* >/dev/null 2>&1; then
    echo "fuzz $t found a crash: $(ls "$run_dir/$t"-*)" >&2
    echo "reproduce: $CARGO_TARGET_DIR/$triple/release/$t $(ls "$run_dir/$t"-* | head -1)" >&2
    exit 1
  fi
done
rmdir "$run_dir" 2>/dev/null || true
echo "==> fuzzing clean"
