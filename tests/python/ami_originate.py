"""Async AMI Originate with panoramisk, collecting every event until the originated channel
hangs up.

Usage: ami_originate.py HOST PORT USER SECRET CHANNEL CONTEXT EXTEN [TIMEOUT_S]
Prints one JSON object: {"ack": {...}, "response": {...OriginateResponse...},
"events": [every event received, in arrival order]}; the Rust test (tests/ami.rs) asserts on it.
"""
import asyncio
import json
import sys

from panoramisk import Manager


def d(msg):
    if isinstance(msg, list):
        return [d(m) for m in msg]
    return {k: v for k, v in msg.items()}


async def main():
    host, port, user, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    channel, context, exten = sys.argv[5], sys.argv[6], sys.argv[7]
    limit = float(sys.argv[8]) if len(sys.argv) > 8 else 20.0
    out = {"events": []}
    events = out["events"]
    done = asyncio.Event()
    hung = set()

    def on_event(manager, message):
        m = d(message)
        events.append(m)
        if m.get("Event") == "Hangup":
            name = m.get("Channel", "")
            if name.startswith(channel + "-"):
                hung.add(name)
            # A Local channel is a pair (;1 and ;2): wait until both halves are gone.
            if len(hung) >= (2 if channel.startswith("Local/") else 1):
                done.set()

    m = Manager(host=host, port=port, username=user, secret=secret, ping_delay=1000)
    m.register_event("*", on_event)
    await m.connect()
    for _ in range(100):
        if m.authenticated:
            break
        await asyncio.sleep(0.05)
    out["authenticated"] = m.authenticated

    # panoramisk returns [ack, OriginateResponse] for an async originate.
    r = await asyncio.wait_for(
        m.send_action(
            {
                "Action": "Originate",
                "Channel": channel,
                "Context": context,
                "Exten": exten,
                "Priority": "1",
                "Async": "true",
                "ActionID": "orig-1",
                "CallerID": "AMI <4242>",
                "Timeout": "10000",
            }
        ),
        limit,
    )
    r = d(r)
    out["ack"] = r[0] if isinstance(r, list) else r
    if isinstance(r, list):
        out["response"] = next((x for x in r if x.get("Event") == "OriginateResponse"), {})
    try:
        await asyncio.wait_for(done.wait(), limit)
        out["hangup_seen"] = True
    except asyncio.TimeoutError:
        out["hangup_seen"] = False
    await asyncio.sleep(0.3)
    m.close()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
