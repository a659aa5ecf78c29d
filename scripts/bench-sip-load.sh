#!/usr/bin/env bash
# SIP/RTP load benchmark (not a test): N concurrent G.711 calls from SIPp into voxpbx, either
# into Echo() ("echo") or through a SIP<->SIP bridge (Dial to a SIPp UAS that echoes the RTP,
# "bridge"). SIPp streams 20 ms PCMU both ways; voxpbx's outgoing RTP towards the callers goes
# to one RTP sink (the SDP offers point there) that measures per-stream loss and RFC 3550
# jitter, and silent gaps (> 60 ms without a packet). Reported: CPU per call (voxpbx's utime+stime from /proc over the steady state),
# memory per call (RSS delta / N), loss, jitter, call setup time (INVITE -> 200, SIPp).
#
# Usage: scripts/bench-sip-load.sh [MODE...]      MODE: echo | bridge (default: both)
# Env:   CALLS=200 HOLD=40 (s each call lasts) RATE=50 (calls/s) WINDOW=20 (s measured)
#        CARGO_TARGET_DIR (release build; default ./target)   VOXPBX=path (skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${CALLS:-200}
HOLD=${HOLD:-40}
RATE=${RATE:-50}
WINDOW=${WINDOW:-20}
MODES=("$@")
[ ${#MODES[@]} -eq 0 ] && MODES=(echo bridge)
command -v sipp >/dev/null || { echo "sipp (Debian sip-tester) is required" >&2; exit 1; }

if [ -z "${VOXPBX:-}" ]; then
  cargo build --release --bin voxpbx >&2
  VOXPBX="${CARGO_TARGET_DIR:-target}/release/voxpbx"
fi
WORK=$(mktemp -d /tmp/voxpbx-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
TCK=$(getconf CLK_TCK)

# 20 ms PCMU source for SIPp's rtp_stream: raw mu-law, looped.
python3 - "$WORK/audio.ulaw" <<'EOF'
import math, struct, sys
def ulaw(s):
    s = max(-32635, min(32635, s)); sign = 0x80 if s < 0 else 0; s = abs(s) + 0x84
    exp = 7
    for e in range(7, -1, -1):
        if s & (0x4000 >> (7 - e)): exp = e; break
    return (~(sign | (exp << 4) | ((s >> (exp + 3)) & 0x0f))) & 0xff
n = 8000 * 4
open(sys.argv[1], "wb").write(bytes(ulaw(int(6000 * math.sin(2 * math.pi * 440 * i / 8000))) for i in range(n)))
EOF

# The RTP sink: demultiplexes voxpbx's streams by SSRC; loss = expected - received per stream
# (RFC 3550 A.3, from the extended sequence range), jitter = RFC 3550 A.8 at 8 kHz.
cat > "$WORK/sink.py" <<'EOF'
import json, signal, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
s.bind(("127.0.0.1", int(sys.argv[1])))
st = {}
done = False
def stop(*_):
    global done
    done = True
signal.signal(signal.SIGTERM, stop)
s.settimeout(0.2)
t0 = time.monotonic()
while not done:
    try:
        d = s.recv(2048)
    except socket.timeout:
        continue
    if len(d) < 12 or d[0] >> 6 != 2 or 72 <= (d[1] & 0x7f) <= 79:
        continue
    now = (time.monotonic() - t0) * 8000.0
    seq, ts, ssrc = struct.unpack_from("!HII", d, 2)
    x = st.get(ssrc)
    if x is None:
        # received, first seq, highest (extended), cycles, transit, jitter, first/last arrival,
        # silent gaps (> 60 ms without a packet): count and total
        st[ssrc] = [1, seq, seq, 0, now - ts, 0.0, now, now, 0, 0.0]
        continue
    gap = now - x[7]
    if gap > 480:
        x[8] += 1
        x[9] += gap / 8.0
    x[7] = now
    x[0] += 1
    hi = x[2] & 0xffff
    if ((seq - hi) & 0xffff) < 0x8000:
        if seq < hi:
            x[3] += 1
        x[2] = (x[3] << 16) | seq
    tr = now - ts
    dd = abs(tr - x[4])
    if dd < 8000 * 10:
        x[5] += (dd - x[5]) / 16.0
    x[4] = tr
rec = sum(v[0] for v in st.values())
exp = sum(v[2] - v[1] + 1 for v in st.values())
jit = sorted(v[5] / 8.0 for v in st.values())
json.dump({"streams": len(st), "received": rec, "expected": exp, "lost": max(0, exp - rec),
           "jitter_ms_mean": sum(jit) / len(jit) if jit else 0.0,
           "jitter_ms_max": jit[-1] if jit else 0.0,
           "stream_s_mean": sum(v[7] - v[6] for v in st.values()) / 8000.0 / max(1, len(st)),
           "gaps_per_stream": sum(v[8] for v in st.values()) / max(1, len(st)),
           "gap_ms_per_stream": sum(v[9] for v in st.values()) / max(1, len(st))},
          open(sys.argv[2], "w"))
EOF

run_mode() {
  local mode=$1 dir="$WORK/$1"
  mkdir -p "$dir/run"
  local sip_port sink_port uas_port
  sip_port=$(free_port); sink_port=$(free_port); uas_port=$(free_port)
  cat > "$dir/voxpbx.conf" <<EOF
[directories]
run = $dir/run
[options]
verbose = 0
EOF
  cat > "$dir/pjsip.conf" <<EOF
[udp]
type=transport
protocol=udp
bind=127.0.0.1:$sip_port

[load]
type=endpoint
context=load
allow=ulaw
aors=load

[load]
type=aor
max_contacts=1

[load-id]
type=identify
endpoint=load
match=127.0.0.1
EOF
  printf '[general]\nrtpstart=30000\nrtpend=39999\n' > "$dir/rtp.conf"
  cat > "$dir/extensions.conf" <<EOF
[load]
exten => echo,1,Answer()
 same => n,Echo()
exten => bridge,1,Dial(PJSIP/load/sip:uas@127.0.0.1:$uas_port,10)
EOF
  RUST_LOG=warn "$VOXPBX" run -f -C "$dir" > "$dir/voxpbx.log" 2>&1 &
  local pbx=$!
  PIDS+=("$pbx")
  "$VOXPBX" rx --wait 20 -C "$dir" "core waitfullybooted" > /dev/null
  python3 "$WORK/sink.py" "$sink_port" "$dir/sink.json" &
  local sink=$!
  PIDS+=("$sink")
  local per_call=1 uas=""
  if [ "$mode" = bridge ]; then
    per_call=2
    (cd "$dir" && exec sipp -sn uas -i 127.0.0.1 -p "$uas_port" -mp 44000 -rtp_echo -rtp_buffsize 8388608 \
      -nostdin -bg > /dev/null 2>&1) || true
    uas=$(pgrep -n -f "sipp -sn uas -i 127.0.0.1 -p $uas_port" || true)
    [ -n "$uas" ] && PIDS+=("$uas")
  fi
  sleep 1
  local rss0 cpu0 cpu1 rss1 t0 t1
  rss0=$(rss_kb "$pbx")
  sed "s#AUDIO_FILE#$WORK/audio.ulaw#" tests/sipp/load_uac.xml > "$dir/load_uac.xml"
  (cd "$dir" && sipp 127.0.0.1:"$sip_port" -sf "$dir/load_uac.xml" -s "$mode" -i 127.0.0.1 \
    -m "$CALLS" -l "$CALLS" -r "$RATE" -d "$((HOLD * 1000))" -key rtpport "$sink_port" \
    -mp 40000 -nostdin -trace_stat -trace_rtt -rtt_freq 1 -timeout $((HOLD + 60))s \
    > "$dir/sipp.out" 2>&1) &
  local sipp_job=$!
  # Steady state: all calls up (channels = calls x legs), then measure WINDOW seconds.
  local want=$((CALLS * per_call)) n=0 deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ]; do
    n=$("$VOXPBX" rx -C "$dir" "core show channels count" 2>/dev/null | awk '/active channel/{print $1}')
    [ "${n:-0}" -ge "$want" ] && break
    sleep 0.5
  done
  sleep 3
  local sipp_pid
  sipp_pid=$(pgrep -n -f "sipp 127.0.0.1:$sip_port" || echo "")
  local scpu0=0 scpu1=0
  cpu0=$(cpu_ticks "$pbx"); [ -n "$sipp_pid" ] && scpu0=$(cpu_ticks "$sipp_pid")
  t0=$(date +%s.%N)
  sleep "$WINDOW"
  cpu1=$(cpu_ticks "$pbx"); [ -n "$sipp_pid" ] && scpu1=$(cpu_ticks "$sipp_pid")
  t1=$(date +%s.%N)
  rss1=$(rss_kb "$pbx")
  local load
  load=$(uptime | sed 's/.*load average: //')
  wait "$sipp_job" || true
  sleep 1
  kill -TERM "$sink"; wait "$sink" 2>/dev/null || true
  local rtt
  rtt=$(python3 - "$dir" <<'EOF'
import glob, sys
vals = []
for f in glob.glob(sys.argv[1] + "/*_rtt.csv"):
    for line in open(f).read().splitlines()[1:]:
        p = line.split(";")
        try: vals.append(float(p[1]))
        except (IndexError, ValueError): pass
vals.sort()
if vals:
    print("%.1f/%.1f" % (vals[len(vals)//2], vals[min(len(vals)-1, int(len(vals)*0.99))]))
else:
    print("n/a")
EOF
)
  local ok failed
  ok=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++)h[$i]=i} END{print $h["SuccessfulCall(C)"]}' "$dir"/load_uac_*_.csv 2>/dev/null || echo "?")
  failed=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++)h[$i]=i} END{print $h["FailedCall(C)"]}' "$dir"/load_uac_*_.csv 2>/dev/null || echo "?")
  python3 - "$mode" "$CALLS" "$n" "$cpu0" "$cpu1" "$t0" "$t1" "$TCK" "$rss0" "$rss1" "$dir/sink.json" "$rtt" "$ok" "$failed" "$load" "$scpu0" "$scpu1" <<'EOF'
import json, sys
(mode, calls, up, c0, c1, t0, t1, tck, r0, r1, sink, rtt, ok, failed, load, s0, s1) = sys.argv[1:]
calls = int(calls); secs = float(t1) - float(t0)
cpu = (int(c1) - int(c0)) / int(tck) / secs * 100.0
scpu = (int(s1) - int(s0)) / int(tck) / secs * 100.0
s = json.load(open(sink))
loss = 100.0 * s["lost"] / s["expected"] if s["expected"] else float("nan")
print(f"| {mode} | {calls} | {up} | {cpu:.1f} % | {cpu / calls:.3f} % | {(int(r1) - int(r0)) / calls:.0f} KiB "
      f"| {s['lost']} / {s['expected']} ({loss:.3f} %) | {s['gaps_per_stream']:.1f} | {s['jitter_ms_mean']:.2f} / {s['jitter_ms_max']:.2f} ms "
      f"| {rtt} ms | {ok} ok / {failed} failed | SIPp {scpu:.0f} % | {load} |")
EOF
  kill "$pbx" 2>/dev/null || true
  [ -n "$uas" ] && kill "$uas" 2>/dev/null || true
  wait "$pbx" 2>/dev/null || true
}

echo "machine: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(uname -r)"
echo "before: $(uptime)"
echo "| mode | calls | channels up | voxpbx CPU (of one core) | CPU per call | RSS per call | loss (voxpbx -> caller) | gaps > 60 ms per stream | jitter mean / max | setup median / p99 | SIPp calls | SIPp CPU | load avg (1/5/15) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for m in "${MODES[@]}"; do run_mode "$m"; done
echo "work dir (logs): $WORK"
