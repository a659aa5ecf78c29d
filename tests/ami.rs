//! AMI end to end: the real binary with manager.conf on a free port, driven by a raw socket and
//! by real Python client libraries (panoramisk, pyst2) from tests/python/.

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const DIALPLAN: &str = r#"
[general]
autofallthrough = yes

[default]
exten => 100,1,Answer()
 same => n,Set(FOO=bar)
 same => n,Wait(0.2)
 same => n,Hangup()

exten => 200,1,Answer()
 same => n,Wait(20)

exten => 500,1,Answer()
 same => n,Set(FOO=async foo)
 same => n,AGI(agi:async,first,sec ond)
 same => n,UserEvent(AfterAsync,Status: ${AGISTATUS},Fromagi: ${FROMAGI})
 same => n,Wait(1)
 same => n,AGI(agi:async)
 same => n,UserEvent(AfterAsync2,Queued: ${QUEUED})
 same => n,Hangup()

exten => 300,hint,Local/300@default
exten => 300,1,Answer()
 same => n,Wait(20)
"#;

fn manager_conf(port: u16) -> String {
    format!(
        "[general]\nenabled = yes\nport = {port}\nbindaddr = 127.0.0.1\n\n\
         [admin]\nsecret = s3cret\nread = all\nwrite = all\n\n\
         [limited]\nsecret = lim\nread = call\nwrite = call,user\n\n\
         [patient]\nsecret = s3cret\nread = all\nwrite = all\nwritetimeout = 30000\n"
    )
}

fn start(port: u16) -> TestPbx {
    let conf = manager_conf(port);
    TestPbx::start(&[("extensions.conf", DIALPLAN), ("manager.conf", &conf)])
}

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VOXPBX_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let p = repo().join("tests/python/.venv/bin/python");
    p.exists().then_some(p)
}

fn run_py(script: &str, args: &[&str]) -> Value {
    let py = python().expect(
        "no Python: set VOXPBX_PYTHON or create tests/python/.venv \
         (python3 -m venv tests/python/.venv && tests/python/.venv/bin/pip install -r tests/python/requirements.txt)",
    );
    let out = Command::new(py)
        .arg(repo().join("tests/python").join(script))
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bad JSON from {script}: {e}: {stdout}"))
}

/// A raw-socket AMI client: the banner, then `key: value` messages up to the blank line.
struct Ami {
    r: BufReader<TcpStream>,
    w: TcpStream,
    banner: String,
}

impl Ami {
    fn connect(port: u16) -> Ami {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut banner = String::new();
        r.read_line(&mut banner).unwrap();
        Ami { r, w, banner }
    }

    /// Send one action (`lines` are `Key: Value` without CRLF) and read the next message.
    fn action(&mut self, lines: &[&str]) -> String {
        let mut out = String::new();
        for l in lines {
            out.push_str(l);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        self.w.write_all(out.as_bytes()).unwrap();
        self.msg()
    }

    /// Log in (events off unless asked) and return the reply.
    fn login(&mut self, user: &str, secret: &str, action_id: &str) -> String {
        let (u, s, a) = (
            format!("Username: {user}"),
            format!("Secret: {secret}"),
            format!("ActionID: {action_id}"),
        );
        self.action(&["Action: Login", &u, &s, &a, "Events: off"])
    }

    /// Read one AMI message (up to the blank line); empty at EOF.
    fn msg(&mut self) -> String {
        let mut msg = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).unwrap_or(0) == 0 {
                return msg;
            }
            if line == "\r\n" {
                if msg.is_empty() {
                    continue;
                }
                return msg;
            }
            msg.push_str(&line);
        }
    }

    /// Read until the server closes the connection.
    fn drain(&mut self) {
        let mut rest = Vec::new();
        let _ = self.r.read_to_end(&mut rest);
    }
}

/// False (with a NOTE) when the Python venv with panoramisk/pyst2 is missing.
fn have_python() -> bool {
    if python().is_none() {
        eprintln!("NOTE: no Python venv (scripts/setup.sh creates tests/python/.venv): skipping");
        return false;
    }
    true
}

/// Run a Python client script against 127.0.0.1:`port` as admin, with `extra` arguments after
/// the credentials; its JSON output.
fn run_admin_py(script: &str, port: u16, extra: &[&str]) -> Value {
    let port = port.to_string();
    let mut args = vec!["127.0.0.1", &port, "admin", "s3cret"];
    args.extend_from_slice(extra);
    run_py(script, &args)
}

/// Start the PBX on a free AMI port and run a Python client script against it as admin
/// ([`run_admin_py`]); `None` (with a NOTE) when the Python venv is missing.
fn py_against_pbx(script: &str, extra: &[&str]) -> Option<(TestPbx, Value)> {
    if !have_python() {
        return None;
    }
    let port = free_tcp_port();
    let pbx = start(port);
    let v = run_admin_py(script, port, extra);
    Some((pbx, v))
}

/// A raw AMI client with a tiny (4 KB) receive window, logged in as `user` (secret s3cret)
/// with user events on, that reads nothing until the caller does; its reader, banner consumed.
fn slow_client(port: u16, user: &str) -> BufReader<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let slow_stream: TcpStream = sock.into();
    slow_stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut slow = BufReader::new(slow_stream.try_clone().unwrap());
    let mut banner = String::new();
    slow.read_line(&mut banner).unwrap();
    let login =
        format!("Action: Login\r\nUsername: {user}\r\nSecret: s3cret\r\nEvents: user\r\n\r\n");
    (&slow_stream).write_all(login.as_bytes()).unwrap();
    slow
}

/// Log another client in as admin and raise `n` UserEvents of ~1 KB from it (written by a
/// thread in 256 KB batches); returns the (still connected) client once all `n` are
/// acknowledged.
fn flood_user_events(port: u16, n: usize) -> Ami {
    let mut ami = Ami::connect(port);
    assert!(ami.login("admin", "s3cret", "f").contains("Success"));
    let mut w = ami.w.try_clone().unwrap();
    let body = "x".repeat(1000);
    let writer = std::thread::spawn(move || {
        let mut batch = String::new();
        for i in 0..n {
            batch.push_str(&format!(
                "Action: UserEvent\r\nUserEvent: Flood\r\nN: {i}\r\nBody: {body}\r\n\r\n"
            ));
            if batch.len() > 256 * 1024 {
                w.write_all(batch.as_bytes()).unwrap();
                batch.clear();
            }
        }
        w.write_all(batch.as_bytes()).unwrap();
    });
    let mut ok = 0;
    while ok < n {
        let m = ami.msg();
        assert!(!m.is_empty(), "flooding client cut off after {ok} replies");
        if m.starts_with("Response: Success") {
            ok += 1;
        }
    }
    writer.join().unwrap();
    ami
}

/// Failure context: the client's JSON output and the PBX log.
fn context<'a>(v: &'a Value, pbx: &'a TestPbx) -> impl Fn(&str) -> String + 'a {
    move |what: &str| {
        format!(
            "{what}: {}\nlog:\n{}",
            serde_json::to_string_pretty(v).unwrap(),
            pbx.log()
        )
    }
}

#[test]
fn raw_socket_banner_response_first_and_unknown_action() {
    let port = free_tcp_port();
    let pbx = start(port);
    let mut ami = Ami::connect(port);
    assert_eq!(ami.banner, "Asterisk Call Manager/13.0.0\r\n");

    // Before login: Permission denied.
    let m = ami.action(&["Action: Ping", "ActionID: p0"]);
    assert_eq!(
        m,
        "Response: Error\r\nActionID: p0\r\nMessage: Permission denied\r\n"
    );

    let m = ami.login("admin", "s3cret", "L1");
    assert!(
        m.starts_with("Response: Success\r\nActionID: L1\r\n"),
        "{m}"
    );
    assert!(m.contains("Message: Authentication accepted"), "{m}");

    let m = ami.action(&["Action: FooBar", "ActionID: u-42"]);
    assert_eq!(
        m,
        "Response: Error\r\nActionID: u-42\r\nMessage: Invalid/unknown command: FooBar. Use Action: ListCommands to show available commands.\r\n"
    );

    let m = ami.action(&[
        "Action: Command",
        "Command: core show channels count",
        "ActionID: c1",
    ]);
    assert!(
        m.starts_with(
            "Response: Success\r\nActionID: c1\r\nMessage: Command output follows\r\nOutput: "
        ),
        "{m}"
    );

    let m = ami.action(&["Action: CoreSettings", "ActionID: cs"]);
    assert!(
        m.starts_with("Response: Success\r\nActionID: cs\r\n"),
        "{m}"
    );
    assert!(m.contains("AMIversion: 13.0.0\r\n"), "{m}");

    // AsyncAGI's AGI action: both headers required; a channel that does not exist.
    let m = ami.action(&["Action: AGI", "Channel: Local/x-1;1", "ActionID: a1"]);
    assert!(
        m.ends_with("Message: Both, Channel and Command are *required*\r\n"),
        "{m}"
    );
    let m = ami.action(&["Action: AGI", "Channel: Local/x-1;1", "Command: NOOP"]);
    assert!(
        m.ends_with("Message: Channel Local/x-1;1 does not exist.\r\n"),
        "{m}"
    );

    let m = ami.action(&["Action: Logoff"]);
    assert!(m.starts_with("Response: Goodbye"), "{m}");
    ami.drain();

    let shown = pbx.rx("manager show settings");
    assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
    let shown = pbx.rx("manager show connected");
    assert!(shown.contains("users connected."), "{shown}");
    let shown = pbx.rx("manager show stats");
    assert!(shown.contains("Events published: "), "{shown}");
    assert!(shown.contains("Events dropped: 0"), "{shown}");
}

fn get<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

#[test]
fn panoramisk_client() {
    let Some((pbx, v)) = py_against_pbx("ami_panoramisk.py", &["limited", "lim"]) else {
        return;
    };
    let ctx = context(&v, &pbx);

    assert_eq!(
        get(&v["bad_login"], "Response"),
        "Error",
        "{}",
        ctx("bad login")
    );
    assert_eq!(get(&v["bad_login"], "Message"), "Authentication failed");
    assert_eq!(
        get(&v["md5_login"], "Response"),
        "Success",
        "{}",
        ctx("md5")
    );
    assert_eq!(v["authenticated"], Value::Bool(true));

    assert_eq!(
        get(&v["originate_sync"], "Response"),
        "Success",
        "{}",
        ctx("originate")
    );
    assert_eq!(
        get(&v["originate_sync"], "Message"),
        "Originate successfully queued"
    );

    let asy = v["originate_async"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", ctx("async")));
    assert_eq!(get(&asy[0], "Response"), "Success");
    let resp = asy
        .iter()
        .find(|m| get(m, "Event") == "OriginateResponse")
        .unwrap_or_else(|| panic!("{}", ctx("OriginateResponse")));
    assert_eq!(get(resp, "ActionID"), "async-1");
    assert_eq!(get(resp, "Response"), "Success");
    assert_eq!(get(resp, "Reason"), "4");
    assert_eq!(get(resp, "Channel"), "Local/200@default");
    assert_eq!(get(resp, "Exten"), "200");
    assert_eq!(get(resp, "CallerIDNum"), "777");
    assert!(!get(resp, "Uniqueid").is_empty() && get(resp, "Uniqueid") != "<null>");

    let csc = v["core_show_channels"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", ctx("csc")));
    assert_eq!(get(&csc[0], "EventList"), "start");
    let items: Vec<&Value> = csc
        .iter()
        .filter(|m| get(m, "Event") == "CoreShowChannel")
        .collect();
    assert!(items.len() >= 2, "{}", ctx("csc items"));
    let last = csc.last().unwrap();
    assert_eq!(get(last, "Event"), "CoreShowChannelsComplete");
    assert_eq!(get(last, "EventList"), "Complete");
    assert_eq!(get(last, "ListItems"), items.len().to_string());
    assert!(items.iter().all(|i| get(i, "ActionID") == "csc-1"));

    assert_eq!(get(&v["setvar_global"], "Response"), "Success");
    assert_eq!(get(&v["getvar_global"], "Value"), "ramisk");
    assert_eq!(
        get(&v["setvar_chan"], "Response"),
        "Success",
        "{}",
        ctx("setvar chan")
    );
    assert_eq!(get(&v["getvar_chan"], "Value"), "xyz");
    assert_eq!(get(&v["getvar_func"], "Value"), "5");

    assert_eq!(get(&v["command"], "Response"), "Success");
    assert_eq!(get(&v["command"], "Message"), "Command output follows");
    assert!(v["command"].get("Output").is_some(), "{}", ctx("command"));

    assert_eq!(get(&v["userevent"], "Response"), "Success");
    let events = v["events"].as_array().unwrap();
    let ue = events
        .iter()
        .find(|e| get(e, "Event") == "UserEvent")
        .unwrap_or_else(|| panic!("{}", ctx("UserEvent")));
    assert_eq!(get(ue, "UserEvent"), "PanoTest");
    assert_eq!(get(ue, "Foo"), "bar");
    assert_eq!(get(ue, "Privilege"), "user,all");

    // The ;2 leg of the sync originate ran exten 100: its events arrive in ChannelSeq order.
    let leg = events
        .iter()
        .find(|e| {
            get(e, "Event") == "Newchannel"
                && get(e, "Channel").starts_with("Local/100@default-")
                && get(e, "Channel").ends_with(";2")
        })
        .map(|e| get(e, "Channel").to_string())
        .unwrap_or_else(|| panic!("{}", ctx("Newchannel ;2")));
    let mine: Vec<&Value> = events.iter().filter(|e| get(e, "Channel") == leg).collect();
    let seqs: Vec<u64> = mine
        .iter()
        .map(|e| get(e, "ChannelSeq").parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "seqs {seqs:?}");
    assert_eq!(seqs[0], 1);
    let names: Vec<&str> = mine.iter().map(|e| get(e, "Event")).collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("no {n} in {names:?}"))
    };
    assert!(pos("Newchannel") < pos("Newstate"));
    assert!(pos("Newexten") < pos("VarSet"));
    assert!(pos("VarSet") < pos("Hangup"));
    let varset = mine
        .iter()
        .find(|e| get(e, "Event") == "VarSet" && get(e, "Variable") == "FOO")
        .unwrap();
    assert_eq!(get(varset, "Value"), "bar");
    assert_eq!(get(varset, "Privilege"), "dialplan,all");
    let hup = mine.iter().find(|e| get(e, "Event") == "Hangup").unwrap();
    assert_eq!(get(hup, "Context"), "default");
    assert!(hup.get("Linkedid").is_some() && hup.get("Cause").is_some());

    let hr = v["hangup_regex"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", ctx("hangup regex")));
    assert_eq!(
        get(hr.last().unwrap(), "Event"),
        "ChannelsHungupListComplete"
    );

    assert_eq!(get(&v["unknown"], "Response"), "Error");
    assert!(get(&v["unknown"], "Message").starts_with("Invalid/unknown command: NoSuchThing."));

    assert_eq!(
        get(&v["limited_originate"], "Response"),
        "Error",
        "{}",
        ctx("limited")
    );
    assert_eq!(get(&v["limited_originate"], "Message"), "Permission denied");
    assert!(pbx.wait_no_channels(10));
}

#[test]
fn pyst2_client() {
    let Some((pbx, v)) = py_against_pbx("ami_pyst2.py", &[]) else {
        return;
    };
    let ctx = context(&v, &pbx);
    assert_eq!(
        get(&v, "title"),
        "Asterisk Call Manager",
        "{}",
        ctx("pyst2")
    );
    assert_eq!(get(&v, "version"), "13.0.0");
    assert_eq!(
        get(&v, "bad_login"),
        "Authentication failed",
        "{}",
        ctx("pyst2")
    );
    assert_eq!(get(&v["login"], "Message"), "Authentication accepted");
    assert_eq!(get(&v["ping"], "Ping"), "Pong");
    assert_eq!(get(&v["command"], "Message"), "Command output follows");
    assert_eq!(get(&v["getvar"], "Value"), "2", "{}", ctx("pyst2"));
    assert_eq!(
        get(&v["originate"], "Response"),
        "Success",
        "{}",
        ctx("pyst2")
    );
    assert_eq!(get(&v["status"], "Response"), "Success", "{}", ctx("pyst2"));
    assert_eq!(
        get(&v["extension_state"], "Hint"),
        "Local/300@default",
        "{}",
        ctx("pyst2")
    );
    assert_eq!(get(&v["extension_state"], "Status"), "0");
    assert_eq!(get(&v["no_hint"], "Status"), "-1");
    assert_eq!(get(&v["core_status"], "Response"), "Success");
    assert_eq!(get(&v["logoff"], "Response"), "Goodbye");
}

fn have_sipp() -> bool {
    Command::new("sipp").arg("-v").output().is_ok()
}

/// Events about `chan` (by `Channel:`), in arrival order, with their `ChannelSeq`.
fn chan_events<'a>(events: &'a [Value], chan: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| get(e, "Channel") == chan)
        .collect()
}

/// Assert one channel's events arrived in sequence order: ChannelSeq 1, 2, 3... with no gap.
fn assert_chan_seq(events: &[&Value], what: &str) {
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| {
            get(e, "ChannelSeq")
                .parse()
                .unwrap_or_else(|_| panic!("{what}: no ChannelSeq in {e}"))
        })
        .collect();
    assert!(!seqs.is_empty(), "{what}: no events");
    assert_eq!(seqs[0], 1, "{what}: seqs {seqs:?}");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "{what}: seqs {seqs:?}"
    );
}

/// Position of the first event named `name` in a channel's events.
fn pos_of(events: &[&Value], name: &str) -> usize {
    let names: Vec<&str> = events.iter().map(|e| get(e, "Event")).collect();
    names
        .iter()
        .position(|x| *x == name)
        .unwrap_or_else(|| panic!("no {name} in {names:?}"))
}

/// The state names a channel went through (`Newstate`'s ChannelStateDesc), in order.
fn states(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| get(e, "Event") == "Newstate")
        .map(|e| get(e, "ChannelStateDesc").to_string())
        .collect()
}

#[test]
fn panoramisk_originate_to_sip_endpoint_events_in_channel_order() {
    if !have_python() {
        return;
    }
    if !have_sipp() {
        eprintln!("NOTE: sipp not installed (scripts/setup.sh installs it): skipping");
        return;
    }
    let port = free_tcp_port();
    let sip_port = free_udp_port();
    let sipp_port = free_udp_port();
    let rtp = free_rtp_range(20);
    let pjsip = format!(
        "[udp]\ntype=transport\nprotocol=udp\nbind=127.0.0.1:{sip_port}\n\n\
         [sippuas]\ntype=endpoint\ncontext=default\nallow=ulaw\naors=sippuas\n\n\
         [sippuas]\ntype=aor\ncontact=sip:sippuas@127.0.0.1:{sipp_port}\n"
    );
    let conf = manager_conf(port);
    let rtp_conf = format!("[general]\nrtpstart={rtp}\nrtpend={}\n", rtp + 19);
    let pbx = TestPbx::start(&[
        ("extensions.conf", DIALPLAN),
        ("manager.conf", &conf),
        ("pjsip.conf", &pjsip),
        ("rtp.conf", &rtp_conf),
    ]);
    let mut sipp = Command::new("sipp")
        .arg("-sf")
        .arg(repo().join("tests/sipp/uas_answer.xml"))
        .args(["-m", "1", "-i", "127.0.0.1", "-nostdin"])
        .args(["-p", &sipp_port.to_string()])
        .args(["-mp", &free_rtp_range(4).to_string()])
        .args(["-timeout", "30s", "-timeout_error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run sipp");
    std::thread::sleep(Duration::from_millis(300));
    // Exten 100 answers, sets FOO, waits 0.2 s and hangs up: voxpbx sends the BYE.
    let v = run_admin_py(
        "ami_originate.py",
        port,
        &["PJSIP/sippuas", "default", "100"],
    );
    let sipp_ok = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        matches!(sipp.try_wait(), Ok(Some(st)) if st.success())
    });
    let _ = sipp.kill();
    let _ = sipp.wait();
    let ctx = context(&v, &pbx);
    assert_eq!(get(&v["ack"], "Response"), "Success", "{}", ctx("ack"));
    assert_eq!(
        get(&v["ack"], "Message"),
        "Originate successfully queued",
        "{}",
        ctx("ack")
    );
    let resp = &v["response"];
    assert_eq!(get(resp, "Response"), "Success", "{}", ctx("response"));
    assert_eq!(get(resp, "ActionID"), "orig-1");
    assert_eq!(get(resp, "Channel"), "PJSIP/sippuas");
    assert_eq!(get(resp, "Context"), "default");
    assert_eq!(get(resp, "Exten"), "100");
    assert_eq!(get(resp, "Reason"), "4");
    assert_eq!(get(resp, "CallerIDNum"), "4242");
    assert_eq!(v["hangup_seen"], Value::Bool(true), "{}", ctx("hangup"));
    assert!(sipp_ok, "{}", ctx("sipp did not finish (BYE)"));

    let events = v["events"].as_array().unwrap();
    let name = events
        .iter()
        .find(|e| {
            get(e, "Event") == "Newchannel" && get(e, "Channel").starts_with("PJSIP/sippuas-")
        })
        .map(|e| get(e, "Channel").to_string())
        .unwrap_or_else(|| panic!("{}", ctx("Newchannel PJSIP/sippuas-")));
    let mine = chan_events(events, &name);
    assert_chan_seq(&mine, &name);
    assert_eq!(get(mine[0], "Event"), "Newchannel", "{}", ctx("first"));
    assert_eq!(get(mine[0], "Uniqueid"), get(resp, "Uniqueid"));
    // Ringing (the UAS sends 180) then Up (200 OK), before the dialplan runs.
    let st = states(&mine);
    assert_eq!(
        st.last().map(String::as_str),
        Some("Up"),
        "{}",
        ctx("states")
    );
    if st.len() > 1 {
        assert_eq!(st[st.len() - 2], "Ringing", "{}", ctx("states"));
    }
    assert!(pos_of(&mine, "Newstate") < pos_of(&mine, "Newexten"));
    let foo = mine
        .iter()
        .position(|e| get(e, "Event") == "VarSet" && get(e, "Variable") == "FOO")
        .unwrap_or_else(|| panic!("{}", ctx("VarSet FOO")));
    assert!(pos_of(&mine, "Newexten") < foo);
    assert!(foo < pos_of(&mine, "Hangup"));
    let hup = mine[mine.len() - 1];
    assert_eq!(get(hup, "Event"), "Hangup", "{}", ctx("last"));
    assert_eq!(get(hup, "Cause"), "16");
    assert_eq!(get(hup, "Exten"), "100");
    // The OriginateResponse came after the answer and before the hangup.
    let idx = |e: &Value| events.iter().position(|x| std::ptr::eq(x, e)).unwrap();
    let resp_at = events
        .iter()
        .position(|e| get(e, "Event") == "OriginateResponse");
    if let Some(r) = resp_at {
        assert!(r < idx(hup), "{}", ctx("OriginateResponse after Hangup"));
    }
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}

#[test]
fn panoramisk_originate_to_local_both_halves_in_channel_order() {
    let Some((pbx, v)) =
        py_against_pbx("ami_originate.py", &["Local/100@default", "default", "100"])
    else {
        return;
    };
    let ctx = context(&v, &pbx);
    assert_eq!(
        get(&v["response"], "Response"),
        "Success",
        "{}",
        ctx("response")
    );
    assert_eq!(v["hangup_seen"], Value::Bool(true), "{}", ctx("hangup"));
    let events = v["events"].as_array().unwrap();
    let halves: Vec<String> = events
        .iter()
        .filter(|e| {
            get(e, "Event") == "Newchannel" && get(e, "Channel").starts_with("Local/100@default-")
        })
        .map(|e| get(e, "Channel").to_string())
        .collect();
    assert_eq!(halves.len(), 2, "{}", ctx("halves"));
    for h in &halves {
        let mine = chan_events(events, h);
        assert_chan_seq(&mine, h);
        assert_eq!(get(mine[0], "Event"), "Newchannel");
        assert_eq!(get(mine[mine.len() - 1], "Event"), "Hangup", "{}", ctx(h));
        assert_eq!(
            states(&mine).last().map(String::as_str),
            Some("Up"),
            "{}",
            ctx(h)
        );
        // Both halves ran exten 100 (;1 after the answer, ;2 from the start).
        assert!(
            pos_of(&mine, "Newexten") < pos_of(&mine, "Hangup"),
            "{}",
            ctx(h)
        );
    }
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}

#[test]
fn asyncagi_over_ami_with_panoramisk() {
    let Some((pbx, v)) = py_against_pbx("ami_asyncagi.py", &[]) else {
        return;
    };
    let ctx = context(&v, &pbx);
    let start = &v["start"];
    let chan = get(start, "Channel");
    assert!(
        chan.starts_with("Local/500@default-") && chan.ends_with(";2"),
        "{}",
        ctx("AsyncAGIStart")
    );
    assert_eq!(get(start, "Privilege"), "agi,all");
    // Env is the URL-encoded environment block, as Asterisk's ast_uri_encode(ast_uri_http).
    let raw = get(start, "Env");
    assert!(
        raw.starts_with("agi_request%3A%20async%0Aagi_channel%3A%20Local%2F500%40default-"),
        "{raw}"
    );
    assert!(raw.ends_with("%0A%0A"), "{raw}");
    let env = get(&v, "env");
    let pairs: Vec<(&str, &str)> = env
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_once(": ").unwrap_or((l, "")))
        .collect();
    let val = |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1);
    assert_eq!(pairs[0], ("agi_request", "async"));
    assert_eq!(val("agi_channel"), Some(chan));
    assert_eq!(val("agi_extension"), Some("500"));
    assert_eq!(val("agi_priority"), Some("3"));
    assert_eq!(val("agi_enhanced"), Some("0.0"));
    assert_eq!(val("agi_arg_1"), Some("first"));
    assert_eq!(val("agi_arg_2"), Some("sec ond"));

    assert_eq!(
        get(&v["err_no_command"], "Message"),
        "Both, Channel and Command are *required*"
    );
    assert_eq!(
        get(&v["err_no_channel"], "Message"),
        "Channel Local/nope-00000000;2 does not exist."
    );
    let other = format!("{};1", &chan[..chan.len() - 2]);
    assert_eq!(get(&v["err_not_async"], "Response"), "Error");
    assert_eq!(
        get(&v["err_not_async"], "Message"),
        format!("Failed to add AGI command to channel {other} queue")
    );
    // The ack always comes before the command's AsyncAGIExec.
    assert_eq!(
        v["exec_before_ack"],
        serde_json::json!([]),
        "{}",
        ctx("ack order")
    );
    for (cid, ack) in v["acks"].as_object().unwrap() {
        assert_eq!(get(ack, "Response"), "Success", "{}", ctx(cid));
    }
    // panoramisk hands over the decoded, trimmed `Result`; the wire form is URL-encoded like Asterisk's
    // ast_uri_encode(ast_uri_http) (the RFC 2396 mark set `-_.!~*'()` stays as it is).
    let result = |cid: &str| -> String {
        let e = &v["exec"][cid];
        assert_eq!(get(e, "Event"), "AsyncAGIExec", "{}", ctx(cid));
        assert_eq!(get(e, "Channel"), chan);
        get(e, "Result").to_string()
    };
    let wire = |cid: &str| get(&v["raw_exec"], cid).to_string();
    assert_eq!(result("c1"), "200 result=1 (async foo)");
    assert_eq!(wire("c1"), "200%20result%3D1%20(async%20foo)%0A");
    assert_eq!(result("c2"), "200 result=1");
    assert_eq!(wire("c2"), "200%20result%3D1%0A");
    assert_eq!(result("c3"), "200 result=6");
    assert_eq!(result("c4"), "510 Invalid or unknown command");
    assert_eq!(wire("c4"), "510%20Invalid%20or%20unknown%20command%0A");
    assert_eq!(result("c5"), "200 result=0");
    assert_eq!(result("c6"), "200 result=1 (x y)");
    assert!(
        wire("c7")
            .starts_with("520-Invalid%20command%20syntax.%20%20Proper%20usage%20follows%3A%0A"),
        "{}",
        wire("c7")
    );
    assert!(result("c7").ends_with("\n520 End of proper usage."));
    assert_eq!(result("brk"), "200 result=0");
    // Commands queued back to back ran in order.
    let order: Vec<&str> = v["exec_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        order,
        ["c1", "c2", "c3", "c4", "c5", "c6", "c7"],
        "{}",
        ctx("order")
    );
    // AsyncAGIEnd after the break, then the dialplan went on with AGISTATUS=SUCCESS.
    assert_eq!(get(&v["end"], "Event"), "AsyncAGIEnd", "{}", ctx("end"));
    let after = &v["after"];
    assert_eq!(get(after, "Status"), "SUCCESS", "{}", ctx("after"));
    assert_eq!(get(after, "Fromagi"), "x y");
    // Action: AGI after the break was accepted (see the acks above), and the command ran once
    // the channel entered AsyncAGI again, as in res_agi.c.
    assert_eq!(result("queued"), "200 result=1");
    assert_eq!(v["starts_on_chan"], 2, "{}", ctx("re-entry"));
    assert_eq!(get(&v["after2"], "Queued"), "yes", "{}", ctx("after2"));
    // The AsyncAGI events are in the channel's sequence.
    let events = v["events"].as_array().unwrap();
    let mine = chan_events(events, chan);
    assert_chan_seq(&mine, chan);
    assert!(pos_of(&mine, "AsyncAGIStart") < pos_of(&mine, "AsyncAGIExec"));
    assert!(pos_of(&mine, "AsyncAGIExec") < pos_of(&mine, "AsyncAGIEnd"));
    assert!(pos_of(&mine, "AsyncAGIEnd") < pos_of(&mine, "UserEvent"));

    // Hung up while in AsyncAGI: AsyncAGIEnd, then Hangup.
    let chan2 = get(&v, "chan2");
    assert_eq!(
        get(&v["hangup2"], "Response"),
        "Success",
        "{}",
        ctx("hangup2")
    );
    assert_eq!(get(&v["end2"], "Channel"), chan2, "{}", ctx("end2"));
    assert_eq!(
        get(&v["hangup2_event"], "Channel"),
        chan2,
        "{}",
        ctx("hangup2 event")
    );
    let mine2 = chan_events(events, chan2);
    assert_chan_seq(&mine2, chan2);
    assert!(pos_of(&mine2, "AsyncAGIEnd") < pos_of(&mine2, "Hangup"));
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}

/// A client that stops reading never stalls the PBX: its queue overflows, the drops are
/// counted, and once it reads again it gets `Event: EventsDropped` with the count. It logs in
/// as a user with `writetimeout = 30000`: with the default 100 ms (Asterisk's) it would be
/// disconnected instead (see `default_writetimeout_disconnects_a_client_that_stops_reading`).
#[test]
fn slow_client_is_told_about_dropped_events() {
    let port = free_tcp_port();
    let pbx = start(port);
    // The slow client: a tiny receive window, events on, and it does not read for a while.
    let mut slow = slow_client(port, "patient");
    // Another client raises 8000 UserEvents of ~1 KB: more than the kernel buffers plus the
    // session queue (1024 events) can hold for the slow one.
    const N: usize = 8000;
    let _flooder = flood_user_events(port, N);
    // The PBX still answers while the slow client is backed up.
    assert!(pbx
        .rx("core show channels count")
        .contains("active channel"));

    // Now read: the login reply, flood events, and an EventsDropped notice with a count.
    let mut floods = 0u64;
    let mut dropped = 0u64;
    let mut last_n = None;
    loop {
        let mut line = String::new();
        match slow.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line == "Event: UserEvent\r\n" {
            floods += 1;
        } else if let Some(c) = line.strip_prefix("Count: ") {
            dropped += c.trim().parse::<u64>().unwrap();
        } else if let Some(n) = line.strip_prefix("N: ") {
            last_n = Some(n.trim().to_string());
        }
        if last_n.as_deref() == Some(&(N - 1).to_string()) && line == "\r\n" {
            break;
        }
        if floods + dropped >= N as u64 && line == "\r\n" {
            break;
        }
    }
    assert!(dropped > 0, "no EventsDropped: got {floods} events");
    assert_eq!(
        floods + dropped,
        N as u64,
        "events {floods} + dropped {dropped}"
    );
    let stats = pbx.rx("manager show stats");
    assert!(
        stats.contains(&format!("Events dropped: {dropped}")),
        "{stats}"
    );
}

/// Asterisk's default `writetimeout` (100 ms): a client that stops reading while events pile
/// up is disconnected (its own session only; the flooding client and the PBX carry on).
#[test]
fn default_writetimeout_disconnects_a_client_that_stops_reading() {
    let port = free_tcp_port();
    let pbx = start(port);
    let mut slow = slow_client(port, "admin");
    const N: usize = 4000;
    let _flooder = flood_user_events(port, N);
    std::thread::sleep(Duration::from_millis(500));
    // Reading now: what was buffered, then end of stream (not a read timeout).
    let mut floods = 0;
    let closed = loop {
        let mut line = String::new();
        match slow.read_line(&mut line) {
            Ok(0) => break true,
            Err(e) => {
                break !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
            Ok(_) => {}
        }
        if line == "Event: UserEvent\r\n" {
            floods += 1;
        }
    };
    assert!(
        closed,
        "slow client not disconnected ({floods} events read)"
    );
    assert!(floods < N, "{floods}");
    assert!(pbx
        .rx("core show channels count")
        .contains("active channel"));
}
