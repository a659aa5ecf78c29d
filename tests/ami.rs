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

exten => 300,hint,Local/300@default
exten => 300,1,Answer()
 same => n,Wait(20)
"#;

fn manager_conf(port: u16) -> String {
    format!(
        "[general]\nenabled = yes\nport = {port}\nbindaddr = 127.0.0.1\n\n\
         [admin]\nsecret = s3cret\nread = all\nwrite = all\n\n\
         [limited]\nsecret = lim\nread = call\nwrite = call,user\n"
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

/// Read one AMI message (up to the blank line).
fn read_msg(r: &mut BufReader<TcpStream>) -> String {
    let mut msg = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
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

#[test]
fn raw_socket_banner_response_first_and_unknown_action() {
    let port = free_tcp_port();
    let pbx = start(port);
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut banner = String::new();
    r.read_line(&mut banner).unwrap();
    assert_eq!(banner, "Asterisk Call Manager/13.0.0\r\n");

    // Before login: Permission denied.
    w.write_all(b"Action: Ping\r\nActionID: p0\r\n\r\n")
        .unwrap();
    let m = read_msg(&mut r);
    assert_eq!(
        m,
        "Response: Error\r\nActionID: p0\r\nMessage: Permission denied\r\n"
    );

    w.write_all(b"Action: Login\r\nUsername: admin\r\nSecret: s3cret\r\nActionID: L1\r\nEvents: off\r\n\r\n")
        .unwrap();
    let m = read_msg(&mut r);
    assert!(
        m.starts_with("Response: Success\r\nActionID: L1\r\n"),
        "{m}"
    );
    assert!(m.contains("Message: Authentication accepted"), "{m}");

    w.write_all(b"Action: FooBar\r\nActionID: u-42\r\n\r\n")
        .unwrap();
    let m = read_msg(&mut r);
    assert_eq!(
        m,
        "Response: Error\r\nActionID: u-42\r\nMessage: Invalid/unknown command: FooBar. Use Action: ListCommands to show available commands.\r\n"
    );

    w.write_all(b"Action: Command\r\nCommand: core show channels count\r\nActionID: c1\r\n\r\n")
        .unwrap();
    let m = read_msg(&mut r);
    assert!(
        m.starts_with(
            "Response: Success\r\nActionID: c1\r\nMessage: Command output follows\r\nOutput: "
        ),
        "{m}"
    );

    w.write_all(b"Action: CoreSettings\r\nActionID: cs\r\n\r\n")
        .unwrap();
    let m = read_msg(&mut r);
    assert!(
        m.starts_with("Response: Success\r\nActionID: cs\r\n"),
        "{m}"
    );
    assert!(m.contains("AMIversion: 13.0.0\r\n"), "{m}");

    w.write_all(b"Action: Logoff\r\n\r\n").unwrap();
    let m = read_msg(&mut r);
    assert!(m.starts_with("Response: Goodbye"), "{m}");
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);

    let shown = pbx.rx("manager show settings");
    assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
    let shown = pbx.rx("manager show connected");
    assert!(shown.contains("users connected."), "{shown}");
}

fn get<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

#[test]
fn panoramisk_client() {
    if python().is_none() {
        eprintln!("skipping: no Python venv");
        return;
    }
    let port = free_tcp_port();
    let pbx = start(port);
    let v = run_py(
        "ami_panoramisk.py",
        &[
            "127.0.0.1",
            &port.to_string(),
            "admin",
            "s3cret",
            "limited",
            "lim",
        ],
    );
    let log = pbx.log();
    let ctx = |what: &str| {
        format!(
            "{what}: {}\nlog:\n{log}",
            serde_json::to_string_pretty(&v).unwrap()
        )
    };

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
    if python().is_none() {
        eprintln!("skipping: no Python venv");
        return;
    }
    let port = free_tcp_port();
    let pbx = start(port);
    let v = run_py(
        "ami_pyst2.py",
        &["127.0.0.1", &port.to_string(), "admin", "s3cret"],
    );
    let ctx = || {
        format!(
            "{}\nlog:\n{}",
            serde_json::to_string_pretty(&v).unwrap(),
            pbx.log()
        )
    };
    assert_eq!(get(&v, "title"), "Asterisk Call Manager", "{}", ctx());
    assert_eq!(get(&v, "version"), "13.0.0");
    assert_eq!(get(&v, "bad_login"), "Authentication failed", "{}", ctx());
    assert_eq!(get(&v["login"], "Message"), "Authentication accepted");
    assert_eq!(get(&v["ping"], "Ping"), "Pong");
    assert_eq!(get(&v["command"], "Message"), "Command output follows");
    assert_eq!(get(&v["getvar"], "Value"), "2", "{}", ctx());
    assert_eq!(get(&v["originate"], "Response"), "Success", "{}", ctx());
    assert_eq!(get(&v["status"], "Response"), "Success", "{}", ctx());
    assert_eq!(
        get(&v["extension_state"], "Hint"),
        "Local/300@default",
        "{}",
        ctx()
    );
    assert_eq!(get(&v["extension_state"], "Status"), "0");
    assert_eq!(get(&v["no_hint"], "Status"), "-1");
    assert_eq!(get(&v["core_status"], "Response"), "Success");
    assert_eq!(get(&v["logoff"], "Response"), "Goodbye");
}
