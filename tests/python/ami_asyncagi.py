"""AsyncAGI over AMI with panoramisk: AGI(agi:async) in the dialplan, Action: AGI with
CommandID, AsyncAGIStart / AsyncAGIExec / AsyncAGIEnd events.

Usage: ami_asyncagi.py HOST PORT USER SECRET
The dialplan's exten 500@default must Answer, Set(FOO=...), run AGI(agi:async,...), then raise
UserEvent(AfterAsync,...), Wait(1), run AGI(agi:async) again, then UserEvent(AfterAsync2,Queued: ...). Prints one JSON object; the Rust test (tests/ami.rs) asserts on it.

panoramisk's send_agi_command() waits for an Asterisk 11 style `SubEvent: Exec`, so with
Asterisk 12+ events it never completes; the AGI action is sent with as_list=False instead (the
future resolves on the ack) and the AsyncAGIExec events are collected by the event handler.
"""
import asyncio
import io
import json
import sys
from urllib.parse import unquote

from panoramisk import Manager


def d(msg):
    if isinstance(msg, list):
        return [d(m) for m in msg]
    return {k: v for k, v in msg.items()}


async def main():
    host, port, user, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    out = {"exec_before_ack": []}
    events = []

    def on_event(manager, message):
        events.append(d(message))

    async def wait_for(pred, limit=10.0):
        for _ in range(int(limit / 0.02)):
            for e in events:
                if pred(e):
                    return e
            await asyncio.sleep(0.02)
        return None

    # panoramisk URL-decodes `Result:`; the raw stream keeps the wire form for the test.
    raw = io.BytesIO()
    m = Manager(host=host, port=port, username=user, secret=secret, ping_delay=1000,
                save_stream=raw)
    m.register_event("*", on_event)
    await m.connect()
    for _ in range(100):
        if m.authenticated:
            break
        await asyncio.sleep(0.05)
    out["authenticated"] = m.authenticated

    async def agi(channel, command, command_id):
        """Action: AGI; returns the ack (an AsyncAGIExec that won the race is kept as an event)."""
        action = {"Action": "AGI", "Channel": channel, "Command": command}
        if command_id:
            action["CommandID"] = command_id
        r = d(await asyncio.wait_for(m.send_action(action, as_list=False), 10))
        if r.get("Event"):
            # The AsyncAGIExec overtook the ack: panoramisk resolved the action with it.
            out["exec_before_ack"].append(command_id)
            events.append(r)
            return {"Response": "Success", "Message": "(event first)"}
        return r

    def exec_of(cid):
        return lambda e: e.get("Event") == "AsyncAGIExec" and e.get("CommandId") == cid

    # The ;1 half waits in Wait(); the ;2 half runs exten 500 and enters AsyncAGI.
    await m.send_action({"Action": "Originate", "Channel": "Local/500@default",
                         "Application": "Wait", "Data": "10", "Async": "true",
                         "ActionID": "orig-a"})
    start = await wait_for(lambda e: e.get("Event") == "AsyncAGIStart")
    if start is None:
        out["events"] = events
        print(json.dumps(out))
        return
    chan = start["Channel"]
    out["start"] = start
    out["env"] = unquote(start.get("Env", ""))

    # Errors: no Command, no such channel, a channel that is not in AsyncAGI.
    r = await m.send_action({"Action": "AGI", "Channel": chan})
    out["err_no_command"] = d(r)
    out["err_no_channel"] = await agi("Local/nope-00000000;2", "NOOP", "")
    other = chan[:-1] + "1"
    out["err_not_async"] = await agi(other, "NOOP", "x")

    # Queue several commands back to back: they run in order, one AsyncAGIExec each.
    cmds = [
        ("c1", "GET VARIABLE FOO"),
        ("c2", 'SET VARIABLE FROMAGI "x y"'),
        ("c3", "CHANNEL STATUS"),
        ("c4", "NOSUCH THING"),
        ("c5", "EXEC Wait 0.3"),
        ("c6", "GET VARIABLE FROMAGI"),
        ("c7", "STREAM FILE"),
    ]
    out["acks"] = {}
    for cid, text in cmds:
        out["acks"][cid] = await agi(chan, text, cid)
    results = {}
    for cid, _ in cmds:
        e = await wait_for(exec_of(cid))
        results[cid] = e
    out["exec"] = results
    out["exec_order"] = [e.get("CommandId") for e in events if e.get("Event") == "AsyncAGIExec"]

    # ASYNCAGI BREAK: its own AsyncAGIExec, then AsyncAGIEnd; the dialplan goes on.
    out["acks"]["brk"] = await agi(chan, "ASYNCAGI BREAK", "brk")
    out["exec"]["brk"] = await wait_for(exec_of("brk"))
    out["end"] = await wait_for(lambda e: e.get("Event") == "AsyncAGIEnd" and e.get("Channel") == chan)
    out["after"] = await wait_for(lambda e: e.get("Event") == "UserEvent"
                                  and e.get("UserEvent") == "AfterAsync")

    # After the break the channel keeps its queue (res_agi.c keeps the datastore): a command
    # added while it is back in the dialplan is accepted and runs when it enters AsyncAGI again.
    out["acks"]["queued"] = await agi(chan, "SET VARIABLE QUEUED yes", "queued")
    out["exec"]["queued"] = await wait_for(exec_of("queued"))
    out["starts_on_chan"] = len([e for e in events if e.get("Event") == "AsyncAGIStart"
                                 and e.get("Channel") == chan])
    out["acks"]["brk2"] = await agi(chan, "ASYNCAGI BREAK", "brk2")
    out["after2"] = await wait_for(lambda e: e.get("Event") == "UserEvent"
                                   and e.get("UserEvent") == "AfterAsync2")

    # A second call: hang the channel up while it waits in AsyncAGI -> AsyncAGIEnd, Hangup.
    n_start = len([e for e in events if e.get("Event") == "AsyncAGIStart"])
    await m.send_action({"Action": "Originate", "Channel": "Local/500@default",
                         "Application": "Wait", "Data": "10", "Async": "true",
                         "ActionID": "orig-b"})
    await wait_for(lambda e: len([x for x in events if x.get("Event") == "AsyncAGIStart"]) > n_start)
    chan2 = [e for e in events if e.get("Event") == "AsyncAGIStart"][-1]["Channel"]
    out["chan2"] = chan2
    r = await m.send_action({"Action": "Hangup", "Channel": chan2})
    out["hangup2"] = d(r)
    out["end2"] = await wait_for(lambda e: e.get("Event") == "AsyncAGIEnd" and e.get("Channel") == chan2)
    out["hangup2_event"] = await wait_for(lambda e: e.get("Event") == "Hangup" and e.get("Channel") == chan2)
    await m.send_action({"Action": "Hangup", "Channel": "/^Local/"})
    await asyncio.sleep(0.5)
    out["events"] = events
    m.close()
    out["raw_exec"] = {}
    for msg in raw.getvalue().decode(errors="replace").split("\r\n\r\n"):
        lines = msg.strip().split("\r\n")
        if lines and lines[0] == "Event: AsyncAGIExec":
            h = dict(l.split(": ", 1) for l in lines if ": " in l)
            out["raw_exec"][h.get("CommandId", "")] = h.get("Result", "")
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
