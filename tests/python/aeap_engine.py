#!/usr/bin/env python3
"""A scriptable AEAP speech_to_text engine (the external application side), for testing an
AEAP client (voxpbx's res_speech_aeap equivalent).

Written from the protocol description (docs/aeap.md and Asterisk's res_aeap), not from
any client implementation: it validates what a compatible client must send and answers the way
real engines (the asterisk/aeap-speech-to-text reference app and friends) do.

Usage: aeap_engine.py [--host 127.0.0.1] [--port 0] [--no-subprotocol] [--tls CERT KEY]
Prints "PORT <n>" on stdout once listening.

Behaviour is chosen per connection by the `setup` params (all strings):
  scenario   normal | codec_mismatch | setup_error | silent_setup | silent | close_mid |
             invalid_json | big | bad_set | partial | get_only        (default normal)
  after_bytes  audio bytes to receive before acting (default 1600 = 200 ms of ulaw)
  sets       JSON list of results arrays, each sent as its own `set` request
             (default [[{"text":"hello world","score":87,"grammar":"g1","best":0}]])
  results    JSON results array answered to `get ["results"]` (default: the last set sent)

`get` names: results, raw_setup, subprotocol, path, audio_bytes, replies (JSON list of the
client's replies to our requests), last_close_code (of the previous connection), and anything
stored by `set`; other names get an error_msg.
"""

import argparse
import asyncio
import json
import sys
import time
import uuid

from websockets.asyncio.server import serve

DEFAULT_SETS = [[{"text": "hello world", "score": 87, "grammar": "g1", "best": 0}]]
STATE = {"last_close_code": ""}


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def check_setup(raw, msg):
    """Spec A.5.1 / A.9 items 2-3: what a compatible client's setup looks like."""
    if raw != compact(msg):
        return "setup is not compact JSON"
    keys = list(msg.keys())
    if keys != ["request", "version", "codecs", "params", "id"]:
        return "setup keys/order %r" % keys
    if msg["version"] != "0.1.0":
        return "version %r" % msg["version"]
    codecs = msg["codecs"]
    if not isinstance(codecs, list) or len(codecs) != 1:
        return "codecs must hold exactly one entry"
    if not isinstance(codecs[0], dict) or list(codecs[0].keys()) != ["name"]:
        return "codec entry must have only 'name'"
    if not isinstance(msg["params"], dict) or not all(isinstance(v, str) for v in msg["params"].values()):
        return "params must be an object of strings"
    try:
        if str(uuid.UUID(msg["id"])) != msg["id"]:
            return "id is not a lowercase uuid"
    except (ValueError, TypeError, AttributeError):
        return "id is not a uuid"
    return None


class Session:
    def __init__(self, ws):
        self.ws = ws
        self.params = {}
        self.scenario = "normal"
        self.raw_setup = ""
        self.audio = 0
        self.acted = False
        self.settings = {}
        self.replies = []
        self.sets = DEFAULT_SETS
        self.results = None
        self.codec = None

    async def send(self, obj):
        await self.ws.send(compact(obj))

    async def request_set(self, params):
        await self.send({"request": "set", "id": str(uuid.uuid4()), "params": params})

    async def on_setup(self, raw, msg):
        self.raw_setup = raw
        params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
        self.params = params
        self.scenario = params.get("scenario", "normal")
        if "sets" in params:
            self.sets = json.loads(params["sets"])
        if "results" in params:
            self.results = json.loads(params["results"])
        error = check_setup(raw, msg)
        if error:
            await self.send({"response": "setup", "id": msg.get("id", ""), "error_msg": "spec violation: " + error})
            return
        if self.scenario == "silent_setup":
            return
        if self.scenario == "setup_error":
            await self.send({"response": "setup", "id": msg["id"], "error_msg": "No supported codec(s)"})
            return
        offered = msg["codecs"][0]["name"]
        self.codec = offered
        name = offered
        if self.scenario == "codec_mismatch":
            name = "alaw" if offered != "alaw" else "ulaw"
        # Like the reference app: extra keys (sampleRate, attributes, params) are allowed.
        await self.send({"response": "setup", "id": msg["id"],
                         "codecs": [{"name": name, "sampleRate": 8000, "attributes": []}],
                         "params": params})

    async def on_get(self, msg):
        names = msg.get("params")
        if not isinstance(names, list) or not names:
            await self.send({"response": "get", "id": msg.get("id", ""), "error_msg": "Missing request parameters"})
            return
        name = names[0]
        if name == "results":
            res = self.results if self.results is not None else (self.sets[-1] if self.acted else [])
            value = res
        elif name == "raw_setup":
            value = self.raw_setup
        elif name == "subprotocol":
            value = self.ws.subprotocol or ""
        elif name == "requested_subprotocol":
            value = self.ws.request.headers.get("Sec-WebSocket-Protocol", "")
        elif name == "path":
            value = self.ws.request.path
        elif name == "audio_bytes":
            value = str(self.audio)
        elif name == "replies":
            value = compact(self.replies)
        elif name == "last_close_code":
            value = STATE["last_close_code"]
        elif name in self.settings:
            value = self.settings[name]
        else:
            await self.send({"response": "get", "id": msg.get("id", ""), "error_msg": "unknown setting '%s'" % name})
            return
        await self.send({"response": "get", "id": msg["id"], "params": {name: value}})

    async def on_set(self, msg):
        params = msg.get("params")
        if not isinstance(params, dict) or not params:
            await self.send({"response": "set", "id": msg.get("id", ""), "error_msg": "Missing request parameters"})
            return
        for k, v in params.items():
            self.settings[k] = v
        await self.send({"response": "set", "id": msg["id"]})

    async def act(self):
        """The audio threshold was reached: do what the scenario says."""
        s = self.scenario
        if s in ("silent", "get_only"):
            return
        if s == "close_mid":
            # The close reason carries CLOCK_MONOTONIC so the test can time the client's reaction.
            await self.ws.close(code=1011, reason="t=%.6f" % time.monotonic())
            return
        if s == "invalid_json":
            await self.ws.send("this is {not json")
            await self.ws.send('{"request":"set","id":"x1","params":')
        if s == "big":
            filler = "x" * (40 * 1024)
            await self.request_set({"results": [{"text": filler, "score": 1}]})
            return
        if s == "bad_set":
            await self.request_set({"foo": "bar", "results": []})
            await self.request_set({})
            await self.send({"request": "set", "id": str(uuid.uuid4())})
            await self.send({"request": "frobnicate", "id": str(uuid.uuid4())})
            await self.send({"request": "set", "id": str(uuid.uuid4()), "error_msg": "never handled",
                             "params": {"results": [{"text": "must not appear"}]}})
        if s == "partial":
            await self.request_set({"partial_results": [{"text": "hel"}]})
            await asyncio.sleep(0.05)
        for results in self.sets:
            await self.request_set({"results": results})

    async def run(self):
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.audio += len(message)
                    if not self.acted and self.audio >= int(self.params.get("after_bytes", "1600")):
                        self.acted = True
                        await self.act()
                    continue
                try:
                    msg = json.loads(message)
                except ValueError:
                    continue
                if not isinstance(msg, dict):
                    continue
                if "request" in msg:
                    name = str(msg.get("request", "")).lower()
                    if self.scenario == "silent" and name != "setup":
                        continue
                    if name == "setup":
                        await self.on_setup(message, msg)
                    elif name == "get":
                        await self.on_get(msg)
                    elif name == "set":
                        await self.on_set(msg)
                    else:
                        await self.send({"response": msg["request"], "id": msg.get("id", ""),
                                         "error_msg": "Unsupported request"})
                elif "response" in msg:
                    self.replies.append(message)
        finally:
            STATE["last_close_code"] = str(self.ws.close_code)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--no-subprotocol", action="store_true",
                    help="do not echo Sec-WebSocket-Protocol (like Go gorilla servers)")
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve wss:// with this certificate")
    args = ap.parse_args()

    async def handler(ws):
        await Session(ws).run()

    kwargs = {"compression": None, "max_size": 1 << 20}
    if not args.no_subprotocol:
        kwargs["subprotocols"] = ["speech_to_text"]
    if args.tls:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls[0], args.tls[1])
        kwargs["ssl"] = ctx
    async with serve(handler, args.host, args.port, **kwargs) as server:
        port = server.sockets[0].getsockname()[1]
        print("PORT %d" % port, flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
