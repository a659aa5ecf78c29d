//! Media through Local channels: prompts, recording, DTMF, special extensions, hangup handlers.

mod common;
use common::*;
use std::time::Duration;

const DIALPLAN: &str = r#"
[default]
exten => 300,1,Answer()
 same => n,Playback(hello-world)
 same => n,Hangup()

exten => 400,1,Answer()
 same => n,Read(D,,4,,1,3)
 same => n,System(echo "${D} ${READSTATUS}" > {DIR}/dtmf.txt)
 same => n,Hangup()

exten => 500,1,Answer()
 same => n,Set(CHANNEL(hangup_handler_push)=handlers,s,1(from-500))
 same => n,Goto(nowhere,1)

exten => i,1,System(echo "invalid ${INVALID_EXTEN}" > {DIR}/invalid.txt)
 same => n,Hangup()

exten => h,1,System(echo "h ${EXTEN}" > {DIR}/h.txt)

exten => _6XX,1,System(echo "pattern ${EXTEN}" > {DIR}/pattern.txt)
exten => 601,1,System(echo "exact ${EXTEN}" > {DIR}/exact.txt)

[handlers]
exten => s,1,System(echo "handler ${ARG1}" > {DIR}/handler.txt)
 same => n,Return()
"#;

#[test]
fn playback_is_recorded_through_a_local_channel() {
    let pbx = TestPbx::start(&[("extensions.conf", DIALPLAN)]);
    let rec = pbx.path("rec.wav");
    pbx.rx(&format!(
        "channel originate Local/300@default application Record {},0,10,q",
        rec.display()
    ));
    assert!(pbx.wait_no_channels(15), "{}", pbx.log());
    std::thread::sleep(Duration::from_millis(200));
    let mut r =
        hound::WavReader::open(&rec).unwrap_or_else(|e| panic!("no recording: {e}\n{}", pbx.log()));
    let spec = r.spec();
    let samples: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    let secs = samples.len() as f64 / spec.sample_rate as f64;
    // hello-world is 1.4 s long.
    assert!((1.0..3.0).contains(&secs), "recorded {secs} s");
    let rms =
        (samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / samples.len() as f64).sqrt();
    assert!(rms > 300.0, "recording is silent (rms {rms})");
}

#[test]
fn dtmf_reaches_read_through_a_local_channel() {
    let pbx = TestPbx::start(&[("extensions.conf", DIALPLAN)]);
    pbx.rx("channel originate Local/400@default application SendDTMF 1234");
    let got = wait_file(&pbx.path("dtmf.txt"), 15).unwrap_or_else(|| panic!("{}", pbx.log()));
    assert_eq!(got.trim(), "1234 OK");
}

#[test]
fn invalid_extension_h_and_hangup_handlers() {
    let pbx = TestPbx::start(&[("extensions.conf", DIALPLAN)]);
    pbx.rx("channel originate Local/500@default application Wait 5");
    assert_eq!(
        wait_file(&pbx.path("invalid.txt"), 10).unwrap().trim(),
        "invalid nowhere"
    );
    assert_eq!(wait_file(&pbx.path("h.txt"), 10).unwrap().trim(), "h h");
    assert_eq!(
        wait_file(&pbx.path("handler.txt"), 10).unwrap().trim(),
        "handler from-500"
    );
}

#[test]
fn exact_extension_beats_pattern() {
    let pbx = TestPbx::start(&[("extensions.conf", DIALPLAN)]);
    pbx.rx("channel originate Local/601@default application Wait 1");
    pbx.rx("channel originate Local/699@default application Wait 1");
    assert_eq!(
        wait_file(&pbx.path("exact.txt"), 10).unwrap().trim(),
        "exact 601"
    );
    assert_eq!(
        wait_file(&pbx.path("pattern.txt"), 10).unwrap().trim(),
        "pattern 699"
    );
}
