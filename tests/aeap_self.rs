//! voxpbx against itself over AEAP: the daemon's `aeap` speech engine (aeap.conf) points at
//! `voxpbx aeap-serve --engine whisper` started by the test, and recognises espeak-ng speech sent
//! over a real SIP call (µ-law RTP at real-time pace from `voxpbx::sip::ua::dial`).

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use voxpbx::bench::stt::prompt_tone;
use voxpbx::bench::wer::wer;
use voxpbx::sip::ua::{dial, DialAudio, DialOpts, Hangup};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn daemon_aeap_engine_against_aeap_serve_over_sip() {
    let model = repo().join("models/ggml-tiny.en.bin");
    if !have_tts("the AEAP self test") {
        return;
    }
    if !model.exists() {
        eprintln!(
            "NOTE: {} missing (voxpbx models install tiny.en); skipped",
            model.display()
        );
        return;
    }
    // The engine server.
    let sdir = tempfile::tempdir().unwrap();
    std::fs::write(
        sdir.path().join("speech.conf"),
        format!(
            "[whisper]\ntype = whisper\nmodel = {}\nendpoint_ms = 500\nno_input_ms = 15000\n",
            model.display()
        ),
    )
    .unwrap();
    std::fs::write(
        sdir.path().join("voxpbx.conf"),
        format!(
            "[directories]\nrun = {}\n",
            sdir.path().join("run").display()
        ),
    )
    .unwrap();
    let port = free_tcp_port();
    let log = std::fs::File::create(sdir.path().join("serve.log")).unwrap();
    let _server = Server(
        Command::new(bin())
            .args(["aeap-serve", "--engine", "whisper", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-C")
            .arg(sdir.path())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start aeap-serve"),
    );
    let end = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < end,
            "aeap-serve did not listen: {}",
            std::fs::read_to_string(sdir.path().join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The PBX: SIP in, SpeechBackground on the AEAP engine.
    let (sip_port, pjsip, rtp_conf) = phone_sip_conf(20);
    let pbx = TestPbx::start(&[
        (
            "aeap.conf",
            &format!(
                "[selfhop]\ntype = client\nurl = ws://127.0.0.1:{port}\nprotocol = speech_to_text\ncodecs = !all,ulaw\n"
            ),
        ),
        ("speech.conf", ""),
        ("pjsip.conf", &pjsip),
        ("rtp.conf", &rtp_conf),
        (
            "extensions.conf",
            r#"
[default]
exten => 100,1,SpeechCreate(selfhop)
 same => n,System(echo "${ERROR}" > {DIR}/create.txt)
 same => n,Answer()
 same => n,SpeechBackground({DIR}/prompt,10)
 same => n,System(echo "${SPEECH_TEXT(0)}|${SPEECH_SCORE(0)}|${SPEECH(spoke)}|${SPEECH_ENGINE(timing)}" > {DIR}/result.txt)
 same => n,SpeechDestroy()
 same => n,Hangup()
"#,
        ),
    ]);
    write_wav(&pbx.path("prompt.wav"), 8000, &prompt_tone(300));

    // The caller's speech.
    let said = "I want to pay my bill";
    let speech = speak(pbx.dir.path(), "clip", said);
    let mut audio = vec![0i16; 8 * 500];
    audio.extend(&speech);
    audio.extend(vec![0i16; 8 * 20_000]);
    let mut o = DialOpts::new(format!("sip:100@127.0.0.1:{sip_port}"));
    o.audio = Some(DialAudio::Samples {
        rate: 8000,
        samples: audio,
    });
    o.hangup_after = Some(Duration::from_secs(30));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(dial(o)).expect("dial");
    assert_eq!(s.status, 200, "{}", pbx.log());
    assert_eq!(
        s.hangup,
        Hangup::Remote,
        "the PBX hangs up after the result"
    );
    let created = wait_file(&pbx.path("create.txt"), 5).unwrap_or_default();
    assert_eq!(
        created.trim(),
        "",
        "SpeechCreate(selfhop) failed: {}",
        pbx.log()
    );
    let got =
        wait_file(&pbx.path("result.txt"), 5).unwrap_or_else(|| panic!("no result: {}", pbx.log()));
    let parts: Vec<&str> = got.trim().split('|').collect();
    let w = wer(said, parts[0]);
    assert!(
        w.wer() <= 0.4,
        "recognised '{}' over AEAP (WER {:.2})",
        parts[0],
        w.wer()
    );
    let score: i32 = parts[1].parse().unwrap_or(-1);
    assert!((0..=1000).contains(&score), "score {}", parts[1]);
    assert_eq!(parts[2], "1", "SPEECH(spoke) from voxpbx's own VAD");
    // SPEECH_ENGINE(timing) travels as an AEAP `get` to the server's whisper session.
    assert!(parts[3].contains("wait="), "timing '{}'", parts[3]);
}
