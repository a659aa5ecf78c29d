"""AMI checks with the pyst2 client library (threads, blocking).

Usage: ami_pyst2.py HOST PORT USER SECRET
Prints one JSON object with the results; the Rust test (tests/ami.rs) asserts on it.
"""
import json
import sys

import asterisk.manager


def h(resp):
    return dict(resp.headers)


def main():
    host, port, user, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    out = {}
    m = asterisk.manager.Manager()
    m.connect(host, port)
    out['title'] = m.title
    out['version'] = m.version
    try:
        m.login(user, 'wrong')
        out['bad_login'] = 'accepted'
    except asterisk.manager.ManagerAuthException as e:
        out['bad_login'] = str(e)
    try:
        m.close()  # the server already closed the connection after the failed login
    except (asterisk.manager.ManagerSocketException, ValueError, OSError):
        # pyst2 races its reader thread here: the socket may already be closed under it.
        pass

    m = asterisk.manager.Manager()
    m.connect(host, port)
    out['login'] = h(m.login(user, secret))
    out['ping'] = h(m.ping())
    out['command'] = h(m.command('core show version'))
    out['setvar'] = h(m.send_action({'Action': 'Setvar', 'Variable': 'PYST', 'Value': '2'}))
    out['getvar'] = h(m.send_action({'Action': 'Getvar', 'Variable': 'PYST'}))
    out['originate'] = h(m.originate('Local/100@default', '', application='Wait', data='1',
                                     timeout='5000', caller_id='Carol <999>',
                                     variables={'X': '1'}))
    out['status'] = h(m.status())
    out['extension_state'] = h(m.extension_state('300', 'default'))
    out['no_hint'] = h(m.extension_state('100', 'default'))
    out['core_status'] = h(m.send_action({'Action': 'CoreStatus'}))
    out['logoff'] = h(m.logoff())
    try:
        m.close()  # pyst2's close() logs off again on the closed socket
    except Exception:
        pass
    print(json.dumps(out))


if __name__ == '__main__':
    main()
