#!/usr/bin/env bash
# Run every voxpbx test: formatting and lints, unit tests, integration tests with real peers
# (SIPp, Python AMI/AGI/AEAP clients, espeak-ng speech through the Whisper model).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export VOXPBX_PYTHON="$PWD/tests/python/.venv/bin/python"
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> cargo test (release: the one build setup.sh --run, the README test and the daemon tests share)"
cargo test --release --locked -- --test-threads=2
echo "==> fuzz the wire parsers (SIP, SDP, AEAP, AMI, AGI, RTP) for a bounded time"
scripts/fuzz.sh 20 sip_parse sdp_parse aeap_decode ami_parse agi_parse rtp_parse
