#!/usr/bin/env python3
"""A plain asyncio FastAGI server for voxpbx's integration tests.

usage: fastagi_server.py <port> <out_dir>

Scripts (agi_network_script):
  main     runs a fixed command sequence; writes <out_dir>/main.json with the environment
           (ordered pairs) and every (command, reply lines) exchange.
  peer     the other Local leg: sends DTMF / hangs up when `main` asks for it.
  garbage  sends HTML garbage and disconnects in the middle of a command line.
  speech   the SPEECH commands on a caller's audio (agi_arg_1 = the grammars folder):
           CREATE, SET, LOAD/ACTIVATE GRAMMAR, RECOGNIZE, DEACTIVATE/UNLOAD, DESTROY.
Writes <out_dir>/ready once listening.
"""
import asyncio
import json
import os
import sys

PORT = int(sys.argv[1])
OUT = sys.argv[2]

peer_queue: "asyncio.Queue[str]" = asyncio.Queue()


def dump(name, obj):
    tmp = os.path.join(OUT, name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, os.path.join(OUT, name))


async def read_env(reader):
    env = []
    while True:
        line = await reader.readline()
        if not line:
            break
        line = line.decode().rstrip("\n")
        if line == "":
            break
        k, _, v = line.partition(": ")
        env.append([k, v])
    return env


class Session:
    def __init__(self, reader, writer, log):
        self.r = reader
        self.w = writer
        self.log = log

    async def line(self, timeout=15):
        data = await asyncio.wait_for(self.r.readline(), timeout)
        return data.decode().rstrip("\n")

    async def cmd(self, text, until_final=True, timeout=15):
        """Send a command; collect reply lines until a final one (not 100, not 520-)."""
        self.w.write((text + "\n").encode())
        await self.w.drain()
        lines = []
        while True:
            l = await self.line(timeout)
            lines.append(l)
            if l.startswith("100 ") or l.startswith("520-"):
                continue
            if lines[0].startswith("520-") and not l.startswith("520 "):
                continue
            break
        self.log.append([text, lines])
        return lines


async def main_script(s, env, out):
    await s.cmd("ANSWER")
    await peer_queue.put("dtmf 5")
    await s.cmd("STREAM FILE hello-world 5")
    await peer_queue.put("dtmf 7")
    await s.cmd("WAIT FOR DIGIT 5000")
    await peer_queue.put("dtmf 123#")
    await s.cmd("GET DATA hello-world 3000 5")
    await s.cmd('SAY NUMBER 42 ""')
    await s.cmd('SET VARIABLE FOO "bar baz"')
    await s.cmd("GET VARIABLE FOO")
    await s.cmd("GET VARIABLE NOPE")
    await s.cmd('GET FULL VARIABLE "${FOO}-${EXTEN}"')
    await s.cmd('EXEC Set "X=1"')
    await s.cmd("EXEC NoSuchApp foo")
    await s.cmd("GET VARIABLE X")
    await s.cmd("DATABASE PUT fam key val")
    await s.cmd("DATABASE GET fam key")
    await s.cmd("DATABASE DEL fam key")
    await s.cmd("DATABASE GET fam key")
    await s.cmd("CHANNEL STATUS")
    await s.cmd("GOSUB default sub 1")
    await s.cmd("GET VARIABLE GOSUBRAN")
    await s.cmd("FOO BAR")
    await s.cmd("STREAM FILE")
    await s.cmd("NOOP")
    await peer_queue.put("hangup")
    out["notice"] = await s.line(15)
    await s.cmd("ANSWER")
    await s.cmd("SET VARIABLE AFTER yes")


async def peer_script(s, env, out):
    await s.cmd("ANSWER")
    while True:
        what = await asyncio.wait_for(peer_queue.get(), 60)
        await asyncio.sleep(0.4)
        if what.startswith("dtmf "):
            await s.cmd("EXEC SendDTMF " + what[5:])
        elif what == "hangup":
            await s.cmd("HANGUP")
            return


async def speech_script(s, env, out):
    grammars = dict(env).get("agi_arg_1", "grammars")
    await s.cmd("ANSWER")
    await s.cmd("SPEECH CREATE nosuchengine")
    await s.cmd("SPEECH CREATE whisper")
    await s.cmd("SPEECH SET endpoint_ms 600")
    await s.cmd("SPEECH LOAD GRAMMAR departments %s/departments.gram" % grammars)
    await s.cmd("SPEECH ACTIVATE GRAMMAR departments")
    # The caller speaks ~2 s after the answer; recognition may take a while on a busy box.
    await s.cmd("SPEECH RECOGNIZE beep 10", timeout=90)
    await s.cmd("SPEECH DEACTIVATE GRAMMAR departments")
    await s.cmd("SPEECH UNLOAD GRAMMAR departments")
    # The caller is silent now: no speech within 2 s after the prompt.
    await s.cmd("SPEECH RECOGNIZE beep 2 0", timeout=60)
    await s.cmd("SPEECH DESTROY")
    await s.cmd("SPEECH RECOGNIZE beep 1")
    await s.cmd("SPEECH RECOGNIZE")
    await s.cmd("HANGUP")


async def garbage_script(reader, writer, out):
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html><body>garbage</body></html>\n")
    await writer.drain()
    replies = []
    try:
        for _ in range(5):
            l = await asyncio.wait_for(reader.readline(), 5)
            replies.append(l.decode().rstrip("\n"))
    except Exception:
        pass
    out["replies"] = replies
    writer.write(b"STREAM FI")
    await writer.drain()
    writer.close()


async def handle(reader, writer):
    env = await read_env(reader)
    d = dict(env)
    name = d.get("agi_network_script", "")
    out = {"env": env, "log": []}
    try:
        if name == "garbage":
            await garbage_script(reader, writer, out)
        else:
            s = Session(reader, writer, out["log"])
            if name == "main":
                await main_script(s, env, out)
            elif name == "peer":
                await peer_script(s, env, out)
            elif name == "speech":
                await speech_script(s, env, out)
    except Exception as e:  # record and close
        out["error"] = repr(e)
    finally:
        dump(name + ".json", out)
        try:
            writer.close()
        except Exception:
            pass


async def amain():
    server = await asyncio.start_server(handle, "127.0.0.1", PORT)
    with open(os.path.join(OUT, "ready"), "w") as f:
        f.write("ok")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(amain())
