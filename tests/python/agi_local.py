#!/usr/bin/env python3
"""A local AGI script for voxpbx's tests (plain python, no library).

usage: agi_local.py <out.json>
Reads the environment, runs a few commands, then waits for a digit until the call hangs up
and records whether SIGHUP arrived.
"""
import json
import signal
import sys
import time

got = {"sighup": False, "log": []}


def on_hup(signum, frame):
    got["sighup"] = True


signal.signal(signal.SIGHUP, on_hup)

env = []
while True:
    line = sys.stdin.readline()
    if not line or line == "\n":
        break
    k, _, v = line.rstrip("\n").partition(": ")
    env.append([k, v])
got["env"] = env


def cmd(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    reply = sys.stdin.readline().rstrip("\n")
    got["log"].append([text, reply])
    return reply


cmd("ANSWER")
cmd('SET VARIABLE LOCALVAR "from script"')
cmd("GET VARIABLE LOCALVAR")
cmd("DATABASE PUT local k v1")
cmd("DATABASE GET local k")
cmd("WAIT FOR DIGIT 10000")
# The hangup notice (SIGHUP) follows the reply that saw the hangup; give it a moment.
for _ in range(60):
    if got["sighup"]:
        break
    time.sleep(0.05)
with open(sys.argv[1], "w") as f:
    json.dump(got, f)
