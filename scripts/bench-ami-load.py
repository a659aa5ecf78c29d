#!/usr/bin/env python3
"""AMI load benchmark (not a test): do 50 AMI clients subscribed to every event slow calls down?

Starts voxpbx on a temporary configuration (AMI + PJSIP on free ports), then runs the same SIPp
load twice: first with no AMI client, then with N clients logged in with `Events: on` (plus,
optionally, one client that never reads, to show a slow client's queue overflowing without
stalling anything). Reports:

- calls: attempted / successful / failed and call setup time (SIPp's INVITE -> 200 OK response
  time, `-trace_rtt`) with and without the clients;
- events per second each client sustained while the load ran (min / median / max), events
  per call, and whether each client saw every published event;
- queue drops: `EventsDropped` notices the clients received, and voxpbx's bus counters
  (`manager show stats`: events published / dropped).

Run it with the test venv (it only needs the standard library):

    tests/python/.venv/bin/python scripts/bench-ami-load.py --voxpbx target/release/voxpbx

Options: --clients 50 --calls 300 --rate 15 --hold-ms 2000 --slow 1 --json
"""
import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

DIALPLAN = """
[bench]
exten => _X.,1,Answer()
 same => n,Set(CALLER=${CALLERID(num)})
 same => n,Set(STEP=1)
 same => n,UserEvent(BenchCall,Exten: ${EXTEN})
 same => n,Wait(60)
 same => n,Hangup()
"""


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def free_rtp_range(count):
    while True:
        p = free_port(socket.SOCK_DGRAM) & ~1
        if not 1024 <= p <= 60000 - count:
            continue
        socks = []
        try:
            for i in range(count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", p + i))
                socks.append(s)
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()


class Pbx:
    def __init__(self, binary, ami_port, sip_port, rtp_start, rtp_count):
        self.bin = binary
        self.dir = tempfile.mkdtemp(prefix="voxpbx-amibench-")
        files = {
            "voxpbx.conf": "[directories]\nrun = %s/run\n[options]\nverbose = 0\n" % self.dir,
            "extensions.conf": DIALPLAN,
            "manager.conf": "[general]\nenabled = yes\nport = %d\nbindaddr = 127.0.0.1\n\n"
                            "[bench]\nsecret = bench\nread = all\nwrite = all\n" % ami_port,
            "pjsip.conf": "[udp]\ntype=transport\nprotocol=udp\nbind=127.0.0.1:%d\n\n"
                          "[sipp]\ntype=endpoint\ncontext=bench\nallow=ulaw\n\n"
                          "[sipp-id]\ntype=identify\nendpoint=sipp\nmatch=127.0.0.1\n" % sip_port,
            "rtp.conf": "[general]\nrtpstart=%d\nrtpend=%d\n" % (rtp_start, rtp_start + rtp_count - 1),
        }
        for name, text in files.items():
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(text)
        self.log = open(os.path.join(self.dir, "console.log"), "w")
        self.proc = subprocess.Popen([binary, "run", "-f", "-C", self.dir],
                                     stdout=self.log, stderr=self.log,
                                     env=dict(os.environ, RUST_LOG="warn"))
        out = self.rx("core waitfullybooted", wait=30)
        if "fully booted" not in out:
            raise SystemExit("voxpbx did not boot: %s" % out)

    def rx(self, cmd, wait=5):
        r = subprocess.run([self.bin, "rx", "--wait", str(wait), "-C", self.dir, cmd],
                           capture_output=True, text=True)
        return r.stdout + r.stderr

    def stats(self):
        out = self.rx("manager show stats")
        vals = dict(re.findall(r"^(Events published|Events dropped|Subscribers): (\d+)$", out, re.M))
        return {k: int(v) for k, v in vals.items()}

    def cpu_seconds(self):
        """User + system CPU time voxpbx used so far."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def channels(self):
        out = self.rx("core show channels count")
        m = re.match(r"(\d+) active channel", out)
        return int(m.group(1)) if m else -1

    def stop(self):
        self.rx("core stop now")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Client:
    """A raw asyncio AMI client: login with Events: on, count events and EventsDropped."""

    def __init__(self, idx, slow=False):
        self.idx = idx
        self.slow = slow
        self.events = 0
        self.bytes = 0
        self.dropped_notices = 0
        self.dropped = 0
        self.times = []  # (arrival time, events) per chunk read, for the sustained rate
        self.events_at_start = 0

    async def login(self, port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.slow:
            # A small receive window so the slow client backs up quickly.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        self.r, self.w = await asyncio.open_connection(sock=sock)
        await self.r.readline()  # banner
        self.w.write(b"Action: Login\r\nUsername: bench\r\nSecret: bench\r\nEvents: on\r\n"
                     b"ActionID: l%d\r\n\r\n" % self.idx)
        await self.w.drain()
        msg = await self.read_msg()
        if not msg.startswith("Response: Success"):
            raise SystemExit("login failed: %r" % msg)

    async def read_msg(self):
        lines = []
        while True:
            line = await self.r.readline()
            if not line:
                return "\r\n".join(lines)
            self.bytes += len(line)
            line = line.decode(errors="replace").rstrip("\r\n")
            if line == "":
                if lines:
                    return "\r\n".join(lines)
                continue
            lines.append(line)

    async def run(self, stop):
        if self.slow:
            # Never read: the kernel buffers fill, then voxpbx's per-session queue overflows.
            await stop.wait()
            return
        # Count messages on raw chunks (bytes.count runs in C), so the 50 clients in this one
        # Python process keep up with voxpbx instead of measuring Python's line parsing.
        tail = b""
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(self.r.read(65536), 0.5)
            except asyncio.TimeoutError:
                continue
            if not data:
                return
            self.bytes += len(data)
            data = tail + data
            n = data.count(b"\r\n\r\nEvent: ")
            cut = data.rfind(b"\r\n\r\n")
            tail = data[cut:] if cut >= 0 else data[-4096:]
            drops = data.count(b"Event: EventsDropped\r\n")
            if drops:
                self.dropped_notices += drops
                for m in re.finditer(rb"Event: EventsDropped\r\n(?:[^\r]*\r\n)*?Count: (\d+)", data):
                    self.dropped += int(m.group(1))
            self.events += n - drops
            self.times.append((time.monotonic(), n - drops))

    def close(self):
        try:
            self.w.close()
        except Exception:
            pass


def sipp_cmd(args, sip_port, calls, workdir):
    return ["sipp", "127.0.0.1:%d" % sip_port, "-sn", "uac", "-s", "100",
            "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)),
            "-mp", str(free_rtp_range(4)),
            "-r", str(args.rate), "-m", str(calls), "-l", str(args.rate * 10),
            "-d", str(args.hold_ms), "-nostdin",
            "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1",
            "-timeout", "%ds" % int(calls / args.rate + args.hold_ms / 1000 + 60),
            "-timeout_error"], workdir


def parse_sipp(workdir):
    """Setup times (ms) from the _rtt.csv; success/failure counts from the _.csv stats."""
    rtts, ok, failed = [], None, None
    for name in os.listdir(workdir):
        path = os.path.join(workdir, name)
        if name.endswith("_rtt.csv"):
            with open(path) as f:
                for line in f:
                    parts = line.strip().split(";")
                    if len(parts) >= 2:
                        try:
                            rtts.append(float(parts[1]))
                        except ValueError:
                            pass
        elif name.endswith("_.csv"):
            with open(path) as f:
                rows = [l.strip().split(";") for l in f if l.strip()]
            if len(rows) >= 2:
                head, last = rows[0], rows[-1]
                col = {h: i for i, h in enumerate(head)}
                ok = int(last[col["SuccessfulCall(C)"]])
                failed = int(last[col["FailedCall(C)"]])
    return rtts, ok, failed


def pct(vals, p):
    if not vals:
        return float("nan")
    s = sorted(vals)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


async def run_load(args, pbx, sip_port, n_clients, n_slow):
    clients = [Client(i) for i in range(n_clients)] + \
              [Client(n_clients + i, slow=True) for i in range(n_slow)]
    for c in clients:
        await c.login(args.ami_port)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop)) for c in clients]
    await asyncio.sleep(1.0)
    for c in clients:
        c.events_at_start = c.events
    before = pbx.stats()
    cpu0 = pbx.cpu_seconds()
    workdir = tempfile.mkdtemp(prefix="sipp-")
    cmd, cwd = sipp_cmd(args, sip_port, args.calls, workdir)
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=cwd, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
    rc = await proc.wait()
    t1 = time.monotonic()
    # Let the last hangups drain to the clients.
    for _ in range(100):
        if pbx.channels() == 0:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    after = pbx.stats()
    published = after.get("Events published", 0) - before.get("Events published", 0)
    cpu1 = pbx.cpu_seconds()
    # Every reading client should get every event published meanwhile: wait for them.
    drain_start = time.monotonic()
    base = {c.idx: c.events_at_start for c in clients}
    while time.monotonic() - drain_start < 30:
        if all(c.events - base[c.idx] + c.dropped >= published for c in clients if not c.slow):
            break
        await asyncio.sleep(0.1)
    drain_s = time.monotonic() - drain_start
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in clients:
        c.close()
    rtts, ok, failed = parse_sipp(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    fast = [c for c in clients if not c.slow]
    rates = []
    for c in fast:
        inside = sum(n for t, n in c.times if t0 <= t <= t1)
        rates.append(inside / (t1 - t0) if t1 > t0 else 0.0)
    return {
        "clients": n_clients,
        "slow_clients": n_slow,
        "sipp_rc": rc,
        "wall_s": round(t1 - t0, 1),
        "calls_ok": ok if ok is not None else len(rtts),
        "calls_failed": failed,
        "setup_ms_median": round(statistics.median(rtts), 1) if rtts else None,
        "setup_ms_p95": round(pct(rtts, 95), 1) if rtts else None,
        "setup_ms_max": round(max(rtts), 1) if rtts else None,
        "events_published": published,
        "events_per_call": round(published / max(1, ok or len(rtts)), 1),
        "client_events_per_s_min": round(min(rates), 1) if rates else None,
        "client_events_per_s_median": round(statistics.median(rates), 1) if rates else None,
        "client_events_per_s_max": round(max(rates), 1) if rates else None,
        "client_events_min": min((c.events - c.events_at_start for c in fast), default=None),
        "client_events_max": max((c.events - c.events_at_start for c in fast), default=None),
        "drain_s": round(drain_s, 1),
        "voxpbx_cpu_s": round(cpu1 - cpu0, 1),
        "client_dropped_notices": sum(c.dropped_notices for c in fast),
        "client_dropped": sum(c.dropped for c in fast),
        "bus_dropped": after.get("Events dropped", 0) - before.get("Events dropped", 0),
    }


def table(rows):
    keys = [
        ("AMI clients (events on)", lambda r: "%d + %d slow" % (r["clients"], r["slow_clients"])
         if r["slow_clients"] else str(r["clients"])),
        ("SIPp calls ok / failed", lambda r: "%s / %s" % (r["calls_ok"], r["calls_failed"])),
        ("setup ms median / p95 / max", lambda r: "%s / %s / %s" % (
            r["setup_ms_median"], r["setup_ms_p95"], r["setup_ms_max"])),
        ("SIPp run (s)", lambda r: str(r["wall_s"])),
        ("events published (per call)", lambda r: "%d (%s)" % (
            r["events_published"], r["events_per_call"])),
        ("events/s per client min / median / max", lambda r: "-" if not r["clients"] else
         "%s / %s / %s" % (r["client_events_per_s_min"], r["client_events_per_s_median"],
                           r["client_events_per_s_max"])),
        ("events received per client min / max", lambda r: "-" if not r["clients"] else
         "%s / %s" % (r["client_events_min"], r["client_events_max"])),
        ("last event delivered after the load (s)", lambda r: "-" if not r["clients"] else
         str(r["drain_s"])),
        ("voxpbx CPU during the run (s)", lambda r: str(r["voxpbx_cpu_s"])),
        ("drops: EventsDropped to readers / bus total", lambda r: "%d / %d" % (
            r["client_dropped"], r["bus_dropped"])),
    ]
    out = ["| | " + " | ".join("%d AMI clients" % r["clients"] for r in rows) + " |",
           "|---|" + "---|" * len(rows)]
    for label, f in keys:
        out.append("| %s | %s |" % (label, " | ".join(f(r) for r in rows)))
    return "\n".join(out)


async def amain(args):
    args.ami_port = free_port()
    sip_port = free_port(socket.SOCK_DGRAM)
    rtp = free_rtp_range(2 * args.rate * (args.hold_ms // 1000 + 4) + 64)
    pbx = Pbx(args.voxpbx, args.ami_port, sip_port, rtp,
              2 * args.rate * (args.hold_ms // 1000 + 4) + 64)
    try:
        rows = [await run_load(args, pbx, sip_port, 0, 0)]
        rows.append(await run_load(args, pbx, sip_port, args.clients, args.slow))
    finally:
        pbx.stop()
    if args.json:
        print(json.dumps(rows, indent=1))
    print(table(rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--voxpbx", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "voxpbx"))
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--slow", type=int, default=1, help="clients that never read")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--rate", type=int, default=15, help="calls per second")
    ap.add_argument("--hold-ms", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not shutil.which("sipp"):
        sys.exit("sipp not found (scripts/setup.sh installs it)")
    if not os.path.exists(args.voxpbx):
        sys.exit("no voxpbx binary at %s (cargo build --release, or --voxpbx)" % args.voxpbx)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
