//! End-to-end dialplan tests: the real binary, Local channels originated with `voxpbx rx`,
//! results observed through System() writing files and through the console.

mod common;
use common::*;

#[test]
fn originate_local_runs_dialplan_and_expressions() {
    let pbx = TestPbx::start(&[(
        "extensions.conf",
        r#"
[general]
autofallthrough = yes

[globals]
GREETING = hello
OUT = {DIR}/out.txt

[default]
exten => 100,1,Answer()
 same => n,Set(X=${GREETING})
 same => n,Set(Y=$[1 + 2 * 3])
 same => n,Set(Z=${X:1:3})
 same => n,Set(W=$["abc" = "abc"])
 same => n,Set(R=$["foobar" : "foo(.*)"])
 same => n,Gosub(sub-add,s,1(20,22))
 same => n,Set(I=0)
 same => n,While($[${I} < 3])
 same => n,Set(I=$[${I} + 1])
 same => n,EndWhile()
 same => n,GotoIf($[${I} = 3]?ok:bad)
 same => n(bad),System(echo bad > ${OUT})
 same => n,Hangup()
 same => n(ok),System(echo "${X} ${Y} ${Z} ${W} ${R} ${GOSUB_RETVAL} ${I} ${LEN(${X})} ${CALLERID(num)}" > ${OUT})
 same => n,Hangup()

exten => 200,1,Answer()
 same => n,Wait(10)

[sub-add]
exten => s,1,Return($[${ARG1} + ${ARG2}])
"#,
    )]);
    let out = pbx.path("out.txt");
    assert!(pbx.rx("dialplan show default").contains("'100'"));
    let r = pbx.rx("channel originate Local/100@default application Wait 1");
    assert!(r.trim().is_empty(), "originate output: {r}");
    let got = wait_file(&out, 10).unwrap_or_else(|| panic!("no output file; log:\n{}", pbx.log()));
    assert_eq!(
        got.trim(),
        "hello 7 ell 1 bar 42 3 5",
        "log:\n{}",
        pbx.log()
    );
    assert!(
        pbx.wait_no_channels(10),
        "channels left: {}",
        pbx.rx("core show channels")
    );
}

#[test]
fn broken_config_refuses_to_start_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("extensions.conf"),
        "[default]\nexten => 100,1,Answer()\nexten => 101,x,NoOp()\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["run", "-f", "-C"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("extensions.conf:3"), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line error: {err}");
}

#[test]
fn dialplan_reload_keeps_old_dialplan_on_error() {
    let pbx = TestPbx::start(&[("extensions.conf", "[default]\nexten => 100,1,NoOp(first)\n")]);
    std::fs::write(
        pbx.path("extensions.conf"),
        "[default]\nexten => 100,1,NoOp(second\nexten => bad\n",
    )
    .unwrap();
    let r = pbx.rx("dialplan reload");
    assert!(
        r.contains("keeping the old dialplan") && r.contains("extensions.conf:3"),
        "{r}"
    );
    assert!(pbx.rx("dialplan show default").contains("NoOp(first)"));
    std::fs::write(
        pbx.path("extensions.conf"),
        "[default]\nexten => 100,1,NoOp(second)\n",
    )
    .unwrap();
    assert!(pbx.rx("dialplan reload").contains("reloaded"));
    assert!(pbx.rx("dialplan show default").contains("NoOp(second)"));
}

#[test]
fn console_commands() {
    let pbx = TestPbx::start(&[(
        "extensions.conf",
        "[default]\nexten => 200,1,Answer()\n same => n,Wait(30)\n",
    )]);
    assert!(pbx.rx("core show version").starts_with("voxpbx "));
    assert!(pbx.rx("core show uptime").contains("System uptime"));
    assert!(pbx.rx("core show applications").contains("Answer"));
    assert!(pbx.rx("core show functions").contains("CALLERID"));
    assert!(pbx.rx("core set verbose 4").contains("now 4"));
    pbx.rx("channel originate Local/200@default application Wait 30");
    let mut ok = false;
    for _ in 0..50 {
        let s = pbx.rx("core show channels concise");
        if s.lines().count() >= 2 && s.contains("Local/200@default") {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ok, "{}", pbx.rx("core show channels"));
    assert!(pbx
        .rx("channel request hangup all")
        .contains("Requested Hangup"));
    assert!(pbx.wait_no_channels(10));
}
