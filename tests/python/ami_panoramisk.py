"""AMI checks with the panoramisk client library (asyncio).

Usage: ami_panoramisk.py HOST PORT USER SECRET [LIMITED_USER LIMITED_SECRET]
Prints one JSON object with the results; the Rust test (tests/ami.rs) asserts on it.
"""
import asyncio
import hashlib
import json
import sys

from panoramisk import Manager


def d(msg):
    """A panoramisk Message (or list of them) as plain dicts."""
    if isinstance(msg, list):
        return [d(m) for m in msg]
    return {k: v for k, v in msg.items()}


async def raw_manager(host, port):
    """A panoramisk Manager that does not log in by itself."""
    m = Manager(host=host, port=port, ping_delay=1000)
    await m.connect()
    return m


async def main():
    host, port, user, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    out = {}

    # Bad credentials: Response Error, "Authentication failed".
    m = await raw_manager(host, port)
    r = await m.send_action({'Action': 'Login', 'Username': user, 'Secret': 'wrong'})
    out['bad_login'] = d(r)
    m.close()

    # MD5 challenge login.
    m = await raw_manager(host, port)
    ch = await m.send_action({'Action': 'Challenge', 'AuthType': 'MD5'})
    key = hashlib.md5((ch['Challenge'] + secret).encode()).hexdigest()
    r = await m.send_action({'Action': 'Login', 'AuthType': 'MD5', 'Username': user, 'Key': key})
    out['md5_login'] = d(r)
    m.close()

    # Normal login (panoramisk logs in on connect), with event collection.
    m = Manager(host=host, port=port, username=user, secret=secret, ping_delay=1000)
    events = []

    def on_event(manager, message):
        events.append(d(message))

    m.register_event('*', on_event)
    await m.connect()
    for _ in range(100):
        if m.authenticated:
            break
        await asyncio.sleep(0.05)
    out['authenticated'] = m.authenticated

    # Sync originate to a Local channel; the ;2 side runs exten 100.
    r = await m.send_action({'Action': 'Originate', 'Channel': 'Local/100@default',
                             'Application': 'Wait', 'Data': '1', 'Timeout': '5000',
                             'CallerID': '"Alice" <555>', 'Variable': ['A=1', 'B=2,C=3'],
                             'Async': 'false'})
    out['originate_sync'] = d(r)

    # Async originate: panoramisk waits for the ack and the OriginateResponse that carries
    # the same ActionID, and returns both.
    r = await asyncio.wait_for(m.send_action({
        'Action': 'Originate', 'Channel': 'Local/200@default', 'Context': 'default',
        'Exten': '200', 'Priority': '1', 'Async': 'true', 'ActionID': 'async-1',
        'CallerID': 'Bob <777>'}), 10)
    out['originate_async'] = d(r)

    # Channels list while exten 200's Wait() runs.
    await asyncio.sleep(0.3)
    r = await m.send_action({'Action': 'CoreShowChannels', 'ActionID': 'csc-1'})
    out['core_show_channels'] = d(r)

    # Getvar / Setvar, global and on a channel.
    r = await m.send_action({'Action': 'Setvar', 'Variable': 'PANO', 'Value': 'ramisk'})
    out['setvar_global'] = d(r)
    r = await m.send_action({'Action': 'Getvar', 'Variable': 'PANO'})
    out['getvar_global'] = d(r)
    chans = [c for c in out['core_show_channels']
             if isinstance(c, dict) and c.get('Event') == 'CoreShowChannel']
    if chans:
        name = chans[0]['Channel']
        r = await m.send_action({'Action': 'Setvar', 'Channel': name, 'Variable': 'CV',
                                 'Value': 'xyz'})
        out['setvar_chan'] = d(r)
        r = await m.send_action({'Action': 'Getvar', 'Channel': name, 'Variable': 'CV'})
        out['getvar_chan'] = d(r)
        r = await m.send_action({'Action': 'Getvar', 'Channel': name,
                                 'Variable': 'LEN(hello)'})
        out['getvar_func'] = d(r)

    # Command output.
    r = await m.send_action({'Action': 'Command', 'Command': 'core show version'})
    out['command'] = d(r)

    # UserEvent, then wait for it to come back.
    r = await m.send_action({'Action': 'UserEvent', 'UserEvent': 'PanoTest', 'Foo': 'bar'})
    out['userevent'] = d(r)
    for _ in range(100):
        if any(e.get('Event') == 'UserEvent' for e in events):
            break
        await asyncio.sleep(0.05)

    # Hang up everything by regex, then wait for the Hangup events.
    r = await m.send_action({'Action': 'Hangup', 'Channel': '/^Local/'})
    out['hangup_regex'] = d(r)
    await asyncio.sleep(1.0)

    r = await m.send_action({'Action': 'NoSuchThing', 'ActionID': 'x1'})
    out['unknown'] = d(r)
    out['events'] = events
    m.close()

    # A user without `originate` write permission.
    if len(sys.argv) > 6:
        m = Manager(host=host, port=port, username=sys.argv[5], secret=sys.argv[6],
                    ping_delay=1000)
        await m.connect()
        for _ in range(100):
            if m.authenticated:
                break
            await asyncio.sleep(0.05)
        r = await m.send_action({'Action': 'Originate', 'Channel': 'Local/100@default',
                                 'Application': 'Wait', 'Data': '1'})
        out['limited_originate'] = d(r)
        m.close()

    print(json.dumps(out))


if __name__ == '__main__':
    asyncio.run(main())
