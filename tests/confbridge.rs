//! ConfBridge through Local channels: three parties mixed, a prompt reaching the others,
//! muting (profile, CLI, DTMF menu), kicking and `confbridge list`.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const DIALPLAN: &str = r#"
[default]
; Conference legs: the Local ;2 halves join a conference.
exten => _90X,1,ConfBridge(c1)
 same => n,Hangup()

exten => 910,1,ConfBridge(c2,,muted_user)
 same => n,System(echo "${CONFBRIDGE_RESULT}" > {DIR}/m_result.txt)
 same => n,Hangup()

exten => 911,1,ConfBridge(c2)
 same => n,Hangup()

exten => 920,1,ConfBridge(c3)
 same => n,Hangup()

; What the Local ;1 halves do: speak a prompt, play a tone, press *.
exten => 801,1,Wait(1)
 same => n,Playback(hello-world)
 same => n,Wait(1)
 same => n,Hangup()

exten => 810,1,Milliwatt()

exten => 820,1,Wait(0.5)
 same => n,SendDTMF(*)
 same => n,Wait(15)
"#;

const CONFBRIDGE: &str = r#"
[muted_user]
type=user
startmuted=yes
"#;

fn start() -> TestPbx {
    TestPbx::start(&[
        ("extensions.conf", DIALPLAN),
        ("confbridge.conf", CONFBRIDGE),
    ])
}

/// Participant rows of `confbridge list <conf>`.
fn members(pbx: &TestPbx, conf: &str) -> Vec<String> {
    pbx.rx(&format!("confbridge list {conf}"))
        .lines()
        .filter(|l| l.starts_with("Local/"))
        .map(|l| l.to_string())
        .collect()
}

fn wait_members(
    pbx: &TestPbx,
    conf: &str,
    secs: u64,
    want: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let m = members(pbx, conf);
        if want(&m) || Instant::now() >= end {
            return m;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Samples of a recording, and the RMS of each 100 ms window.
fn windows(path: &Path, pbx: &TestPbx) -> (Vec<i16>, Vec<f64>) {
    let mut r = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("no recording {}: {e}\n{}", path.display(), pbx.log()));
    let rate = r.spec().sample_rate as usize;
    let samples: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    let rms = samples
        .chunks(rate / 10)
        .map(|w| (w.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt())
        .collect();
    (samples, rms)
}

#[test]
fn three_parties_hear_the_prompt() {
    let pbx = start();
    let (b, c) = (pbx.path("b.wav"), pbx.path("c.wav"));
    pbx.rx(&format!(
        "channel originate Local/902@default application Record {},0,6,q",
        b.display()
    ));
    pbx.rx(&format!(
        "channel originate Local/903@default application Record {},0,6,q",
        c.display()
    ));
    pbx.rx("channel originate Local/901@default extension 801@default");
    let m = wait_members(&pbx, "c1", 10, |m| m.len() == 3);
    assert_eq!(m.len(), 3, "{m:?}\n{}", pbx.log());
    for n in ["901", "902", "903"] {
        assert!(
            m.iter()
                .any(|l| l.starts_with(&format!("Local/{n}@default-"))),
            "{m:?}"
        );
    }
    let list = pbx.rx("confbridge list");
    let row: Vec<&str> = list
        .lines()
        .find(|l| l.starts_with("c1 "))
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row, vec!["c1", "3", "0", "No", "No"], "{list}");
    assert!(pbx.wait_no_channels(20), "{}", pbx.log());
    std::thread::sleep(Duration::from_millis(200));
    for rec in [&b, &c] {
        let (samples, rms) = windows(rec, &pbx);
        let secs = samples.len() as f64 / 8000.0;
        assert!(
            (4.0..7.0).contains(&secs),
            "{}: recorded {secs} s",
            rec.display()
        );
        let loud = rms.iter().filter(|r| **r > 500.0).count();
        // hello-world is 1.4 s of speech.
        assert!(
            loud >= 5,
            "{}: only {loud} loud 100 ms windows: {rms:?}",
            rec.display()
        );
        assert!(
            rms.iter().filter(|r| **r < 1.0).count() >= 10,
            "{}: no silence around the prompt",
            rec.display()
        );
    }
    let after = pbx.rx("confbridge list");
    assert!(!after.contains("c1 "), "conference not destroyed: {after}");
}

#[test]
fn muted_party_is_not_heard_until_unmuted_then_kicked() {
    let pbx = start();
    // A party muted by its user profile plays a tone into c2.
    pbx.rx("channel originate Local/910@default extension 810@default");
    let m = wait_members(&pbx, "c2", 10, |m| m.len() == 1);
    assert_eq!(m.len(), 1, "{}", pbx.log());
    assert_eq!(m[0].get(31..37).map(str::trim), Some("m"), "{m:?}");

    let r1 = pbx.path("r1.wav");
    pbx.rx(&format!(
        "channel originate Local/911@default application Record {},0,2,q",
        r1.display()
    ));
    assert_eq!(wait_members(&pbx, "c2", 10, |m| m.len() == 2).len(), 2);
    assert_eq!(wait_members(&pbx, "c2", 10, |m| m.len() == 1).len(), 1);
    std::thread::sleep(Duration::from_millis(200));
    let (samples, rms) = windows(&r1, &pbx);
    assert!(samples.len() >= 8000, "recorded {} samples", samples.len());
    assert!(rms.iter().all(|r| *r < 1.0), "muted tone leaked: {rms:?}");

    assert_eq!(
        pbx.rx("confbridge unmute c2 Local/910@default"),
        "Unmuting Local/910@default from confbridge c2\n"
    );
    assert_eq!(
        pbx.rx("confbridge unmute c2 Local/999"),
        "No channel named 'Local/999' found in conference bridge 'c2'!\n"
    );
    assert_eq!(
        pbx.rx("confbridge mute nope all"),
        "No conference bridge named 'nope' found!\n"
    );
    let m = members(&pbx, "c2");
    assert_eq!(m[0].get(31..37).map(str::trim), Some(""), "{m:?}");
    let r2 = pbx.path("r2.wav");
    pbx.rx(&format!(
        "channel originate Local/911@default application Record {},0,2,q",
        r2.display()
    ));
    assert_eq!(wait_members(&pbx, "c2", 10, |m| m.len() == 2).len(), 2);
    assert_eq!(wait_members(&pbx, "c2", 10, |m| m.len() == 1).len(), 1);
    std::thread::sleep(Duration::from_millis(200));
    let (_, rms) = windows(&r2, &pbx);
    let loud = rms.iter().filter(|r| **r > 1000.0).count();
    assert!(loud >= 10, "unmuted tone not heard: {rms:?}");

    assert_eq!(
        pbx.rx("confbridge kick c2 all"),
        "Kicked 'all' out of conference 'c2'\n"
    );
    assert_eq!(
        wait_file(&pbx.path("m_result.txt"), 10)
            .unwrap_or_default()
            .trim(),
        "KICKED"
    );
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
    assert_eq!(
        pbx.rx("confbridge list c2"),
        "No conference bridge named 'c2' found!\n"
    );
}

#[test]
fn star_toggles_mute() {
    let pbx = start();
    pbx.rx("channel originate Local/920@default extension 820@default");
    let m = wait_members(&pbx, "c3", 10, |m| {
        m.len() == 1 && m[0].get(31..37).map(str::trim) == Some("m")
    });
    assert_eq!(m.len(), 1, "{}", pbx.log());
    assert_eq!(
        m[0].get(31..37).map(str::trim),
        Some("m"),
        "DTMF * did not mute: {m:?}\n{}",
        pbx.log()
    );
    assert_eq!(
        pbx.rx("confbridge kick c3 participants"),
        "Kicked 'participants' out of conference 'c3'\n"
    );
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}
