#!/usr/bin/env python3
"""An AEAP speech_to_text client that behaves like Asterisk's res_speech_aeap, for testing an
AEAP *server* (an external speech application) such as `voxpbx aeap-serve`.

Written from the protocol description (docs/aeap.md and Asterisk's res_aeap):
  * connects with `Sec-WebSocket-Protocol: speech_to_text`, no extensions;
  * sends `setup` (compact JSON, `request` first, `id` last, version 0.1.0, one codec {name},
    params always present) and requires `codecs[0].name` to equal the offer within 1 s;
  * streams 20 ms binary frames of raw codec payload at real-time pace;
  * answers the app's `set {"results":[...]}` with `{"response":"set","id":...}` and stores the
    results prepended (reversed), as Asterisk does;
  * every request it sends waits at most 1 s;
  * closes with code 1000.

Prints one JSON report per session on stdout (a JSON list when --sessions > 1).
Exit status 0 unless a protocol check failed.
"""

import argparse
import asyncio
import json
import math
import sys
import time
import uuid

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

FRAME_MS = 20


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def ulaw_encode(sample):
    """G.711 mu-law encoder (sign-magnitude, bias 0x84)."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    if sample < 0:
        sample = -sample
    sample = min(sample, clip) + bias
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not (sample & mask):
        exponent -= 1
        mask >>= 1
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


SEG_AEND = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]


def alaw_encode(pcm):
    """G.711 A-law encoder (the classic Sun g711.c algorithm on 13-bit input)."""
    pcm >>= 3
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = next((i for i, e in enumerate(SEG_AEND) if pcm <= e), 8)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (pcm >> 1) & 0x0F if seg < 2 else (pcm >> seg) & 0x0F
    return aval ^ mask


def tone_frames(codec, ms, freq=440.0, amp=8000):
    """Yield 20 ms payloads of a tone in `codec` (ulaw, alaw or slin at 8 kHz)."""
    n = 160
    i = 0
    for _ in range(ms // FRAME_MS):
        samples = [int(amp * math.sin(2 * math.pi * freq * (i + k) / 8000.0)) for k in range(n)]
        i += n
        if codec == "ulaw":
            yield bytes(ulaw_encode(s) for s in samples)
        elif codec == "alaw":
            yield bytes(alaw_encode(s) for s in samples)
        else:
            yield b"".join(s.to_bytes(2, "little", signed=True) for s in samples)


class Violation(Exception):
    pass


class Client:
    def __init__(self, args, index):
        self.args = args
        self.index = index
        self.pending = {}
        self.results = None      # Asterisk's speech->results (prepended)
        self.results_raw = []    # each set's array as received
        self.done = asyncio.Event()
        self.report = {"index": index}
        self.ws = None
        self.t_audio = time.monotonic()
        self.results_event = None

    async def request(self, name, params):
        rid = str(uuid.uuid4())
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        await self.ws.send('{"request":%s,"params":%s,"id":%s}' % (json.dumps(name), compact(params), json.dumps(rid)))
        try:
            return await asyncio.wait_for(fut, 1.0)
        except asyncio.TimeoutError:
            return {"timeout": True}
        finally:
            self.pending.pop(rid, None)

    async def reader(self):
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    continue  # res_speech_aeap drops binary from the app
                try:
                    msg = json.loads(message)
                except ValueError:
                    self.report.setdefault("invalid_from_server", 0)
                    self.report["invalid_from_server"] += 1
                    continue
                if not isinstance(msg, dict):
                    continue
                if "request" in msg:
                    await self.on_request(msg, message)
                elif "response" in msg:
                    fut = self.pending.get(msg.get("id", ""))
                    if fut and not fut.done():
                        fut.set_result(msg)
        except ConnectionClosed:
            pass
        finally:
            self.done.set()

    async def on_request(self, msg, raw):
        rid = msg.get("id", "")
        name = msg.get("request")
        if "error_msg" in msg:
            return
        if name != "set":
            await self.ws.send(compact({"response": name, "id": rid, "error_msg": "Unsupported and/or un-handled message"}))
            return
        params = msg.get("params")
        if not isinstance(params, dict) or not params:
            await self.ws.send(compact({"response": "set", "id": rid, "error_msg": "no parameter(s) requested"}))
            return
        key = next(iter(params))
        if key != "results":
            await self.ws.send(compact({"response": "set", "id": rid, "error_msg": "can only set 'results'"}))
            return
        if list(msg.keys())[0] != "request":
            raise Violation("request key not first: %s" % raw)
        arr = params["results"] if isinstance(params["results"], list) else []
        for r in arr:
            if not isinstance(r.get("score", 0), int):
                raise Violation("score is not an integer: %s" % raw)
        self.results_raw.append(arr)
        if self.results is None and arr:
            self.results = []
        for r in arr:
            self.results.insert(0, r)
        self.report["results_after_ms"] = int((time.monotonic() - self.t_audio) * 1000)
        await self.ws.send(compact({"response": "set", "id": rid}))
        self.results_event.set()

    async def run(self):
        a = self.args
        t0 = time.monotonic()
        async with connect(a.url, subprotocols=["speech_to_text"], compression=None,
                           open_timeout=2, max_size=1 << 16) as ws:
            self.ws = ws
            self.report["subprotocol"] = ws.subprotocol
            self.results_event = asyncio.Event()
            reader = asyncio.create_task(self.reader())
            params = json.loads(a.params)
            setup = await self.request_setup(a.codec, params)
            self.report["setup_response"] = setup
            if "error_msg" in setup or "timeout" in setup:
                self.report["setup_ok"] = False
                await ws.close(1000)
                await reader
                return self.report
            name = (setup.get("codecs") or [{}])[0].get("name")
            if name != a.codec:
                raise Violation("setup codec %r != offered %r" % (name, a.codec))
            self.report["setup_ok"] = True
            if a.send_invalid:
                await ws.send("{this is not json")
            if a.send_big:
                await ws.send(compact({"request": "set", "id": "big", "params": {"x": "y" * (40 * 1024)}}))
            # Stream audio at real-time pace until results arrive (or the audio ends).
            self.t_audio = time.monotonic()
            sent = 0
            start = time.monotonic()
            for payload in tone_frames(a.codec, a.audio_ms):
                if self.results_event.is_set() and not a.keep_streaming:
                    break
                if self.done.is_set():
                    break
                try:
                    await ws.send(payload)
                except ConnectionClosed:
                    break
                sent += 1
                delay = start + sent * FRAME_MS / 1000.0 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            self.report["frames_sent"] = sent
            if a.wait_results and not self.results_event.is_set() and not self.done.is_set():
                try:
                    await asyncio.wait_for(self.results_event.wait(), a.wait_results)
                except asyncio.TimeoutError:
                    pass
            if a.get_results:
                self.report["get_results"] = await self.request("get", ["results"])
            for pair in a.set:
                k, _, v = pair.partition("=")
                self.report.setdefault("set", {})[k] = await self.request("set", {k: v})
            if a.dtmf:
                self.report["dtmf"] = await self.request("set", {"dtmf": a.dtmf})
            if a.results_type:
                self.report["results_type"] = await self.request("set", {"results_type": a.results_type})
            for g in a.get:
                self.report.setdefault("get", {})[g] = await self.request("get", [g])
            if not self.done.is_set():
                await ws.close(1000)
            await reader
            self.report["close_code"] = ws.close_code
            self.report["close_reason"] = ws.close_reason
        self.report["results"] = self.results
        self.report["results_raw"] = self.results_raw
        self.report["elapsed_ms"] = int((time.monotonic() - t0) * 1000)
        return self.report

    async def request_setup(self, codec, params):
        rid = str(uuid.uuid4())
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        await self.ws.send(compact({"request": "setup", "version": "0.1.0", "codecs": [{"name": codec}],
                                    "params": params, "id": rid}))
        try:
            return await asyncio.wait_for(fut, 1.0)
        except asyncio.TimeoutError:
            return {"timeout": True}
        finally:
            self.pending.pop(rid, None)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--codec", default="ulaw")
    ap.add_argument("--params", default="{}", help="setup params as a JSON object of strings")
    ap.add_argument("--audio-ms", type=int, default=2000)
    ap.add_argument("--keep-streaming", action="store_true", help="do not stop audio at results")
    ap.add_argument("--wait-results", type=float, default=0.0, help="seconds to wait for results after the audio")
    ap.add_argument("--get-results", action="store_true", help="send get [\"results\"] after the audio")
    ap.add_argument("--get", action="append", default=[], help="get [name] after the audio")
    ap.add_argument("--set", action="append", default=[], help="set {name:value} after the audio")
    ap.add_argument("--dtmf", default="")
    ap.add_argument("--results-type", default="")
    ap.add_argument("--send-invalid", action="store_true")
    ap.add_argument("--send-big", action="store_true")
    ap.add_argument("--sessions", type=int, default=1)
    a = ap.parse_args()
    try:
        reports = await asyncio.gather(*(Client(a, i).run() for i in range(a.sessions)))
    except Violation as v:
        print(json.dumps({"violation": str(v)}))
        sys.exit(2)
    out = reports[0] if a.sessions == 1 else reports
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
