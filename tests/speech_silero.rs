//! `vad = silero` end to end: a real SIP call (espeak-ng speech, 8 kHz µ-law RTP at real-time
//! pace) into SpeechBackground on the whisper engine with Silero VAD doing the endpointing and
//! the barge-in. Needs models/ggml-tiny.en.bin and `voxpbx models install silero`
//! (models/silero_vad.onnx, models/libonnxruntime.so.1.31.1); skipped with a NOTE without them.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use voxpbx::bench::corpus::{read_wav, speech_span};
use voxpbx::bench::stt::{prompt_stop_ms, prompt_tone};
use voxpbx::bench::wer::wer;
use voxpbx::sip::ua::{dial, DialAudio, DialOpts, Hangup};

/// Same bound as tests/speech.rs: tiny.en on 8 kHz espeak speech may mishear one word of five.
const WER_BOUND: f64 = 0.4;

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

struct Files {
    whisper: PathBuf,
    vad: PathBuf,
    ort: PathBuf,
}

fn setup() -> Option<Files> {
    if !(have("espeak-ng") && have("sox")) {
        eprintln!("NOTE: espeak-ng or sox missing; Silero speech test skipped (scripts/setup.sh installs them)");
        return None;
    }
    let f = Files {
        whisper: repo().join("models/ggml-tiny.en.bin"),
        vad: repo().join("models/silero_vad.onnx"),
        ort: repo().join("models/libonnxruntime.so.1.31.1"),
    };
    for p in [&f.whisper, &f.vad, &f.ort] {
        if !p.exists() {
            eprintln!(
                "NOTE: {} missing; Silero speech test skipped (voxpbx models install tiny.en silero)",
                p.display()
            );
            return None;
        }
    }
    Some(f)
}

/// Speak `text` as 8 kHz 16-bit samples (telephone band).
fn speak(dir: &Path, text: &str) -> Vec<i16> {
    let raw = dir.join("clip-raw.wav");
    let out = dir.join("clip.wav");
    assert!(Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .unwrap()
        .success());
    assert!(Command::new("sox")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-b", "16"])
        .arg(&out)
        .args(["highpass", "300", "lowpass", "3400"])
        .status()
        .unwrap()
        .success());
    let (s, rate) = read_wav(&out).unwrap();
    assert_eq!(rate, 8000);
    s
}

fn silence(ms: usize) -> Vec<i16> {
    vec![0; ms * 8]
}

fn start_pbx(f: &Files, speech_conf_extra: &str, dialplan: &str) -> (TestPbx, u16) {
    let sip_port = free_udp_port();
    let rtp = free_rtp_range(40);
    let pbx = TestPbx::start(&[
        ("extensions.conf", dialplan),
        (
            "speech.conf",
            &format!(
                "[whisper]\ntype = whisper\nmodel = {}\nvad = silero\nvad_model = {}\nonnxruntime = {}\n\
                 endpoint_ms = 500\nno_input_ms = 15000\n{speech_conf_extra}",
                f.whisper.display(),
                f.vad.display(),
                f.ort.display()
            ),
        ),
        (
            "pjsip.conf",
            &format!(
                "[udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{sip_port}\n\n\
                 [phone]\ntype = endpoint\ncontext = default\ndisallow = all\nallow = ulaw\nrtp_symmetric = yes\n\n\
                 [phone-id]\ntype = identify\nendpoint = phone\nmatch = 127.0.0.1\n"
            ),
        ),
        (
            "rtp.conf",
            &format!("[general]\nrtpstart = {rtp}\nrtpend = {}\n", rtp + 39),
        ),
    ]);
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wr = hound::WavWriter::create(pbx.path("long.wav"), spec).unwrap();
    for s in prompt_tone(20_000) {
        wr.write_sample(s).unwrap();
    }
    wr.finalize().unwrap();
    (pbx, sip_port)
}

/// Barge-in and recognition with Silero: the prompt goes quiet in the caller's audio within
/// 300 ms of the speech onset, the words are recognised, and the per-call threshold is applied.
#[test]
fn silero_vad_barges_in_and_endpoints_over_sip() {
    let Some(f) = setup() else { return };
    let dialplan = r#"
[default]
exten => 100,1,SpeechCreate()
 same => n,Answer()
 same => n,Set(SPEECH_ENGINE(vad_threshold)=0.55)
 same => n,SpeechBackground({DIR}/long,10)
 same => n,System(echo "${SPEECH(spoke)}|${SPEECH(results)}|${SPEECH_TEXT(0)}|${SPEECH_ENGINE(vad)}|${SPEECH_ENGINE(vad_threshold)}" > {DIR}/result.txt)
 same => n,SpeechDestroy()
 same => n,Hangup()
"#;
    let (pbx, sip_port) = start_pbx(&f, "", dialplan);
    assert!(
        pbx.rx("speech show engines").contains("whisper"),
        "engine not loaded:\n{}",
        pbx.log()
    );
    let said = "please connect me to sales";
    let speech = speak(pbx.dir.path(), said);
    let span = speech_span(&speech, 8000).expect("speech in the clip");
    let lead_ms = 1500u64;
    let mut audio = silence(lead_ms as usize);
    audio.extend(&speech);
    audio.extend(silence(20_000));
    let mut o = DialOpts::new(format!("sip:100@127.0.0.1:{sip_port}"));
    o.audio = Some(DialAudio::Samples {
        rate: 8000,
        samples: audio,
    });
    o.keep_recording = true;
    o.hangup_after = Some(Duration::from_secs(30));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(dial(o)).expect("dial");
    assert_eq!(s.status, 200, "call not answered: {s:?}\n{}", pbx.log());
    assert_eq!(s.hangup, Hangup::Remote, "{s:?}\n{}", pbx.log());

    let onset = (s.play_started_ms.unwrap() - s.answered_ms.unwrap()) as f64
        + (lead_ms + span.speech_start_ms) as f64;
    let stop = prompt_stop_ms(&s.recorded, 10).unwrap_or_else(|| {
        panic!(
            "the prompt never stopped in the caller's audio ({} samples)\n{}",
            s.recorded.len(),
            pbx.log()
        )
    }) as f64;
    let barge = stop - onset;
    eprintln!("silero: onset -> prompt stopped (caller's audio): {barge:.0} ms");
    assert!(barge > 0.0, "prompt stopped {barge} ms before the speech");
    assert!(barge <= 300.0, "prompt stopped {barge:.0} ms after onset");

    let r =
        wait_file(&pbx.path("result.txt"), 5).unwrap_or_else(|| panic!("no result: {}", pbx.log()));
    let parts: Vec<&str> = r.trim().split('|').collect();
    assert_eq!(parts.len(), 5, "{r}");
    assert_eq!(parts[0], "1", "SPEECH(spoke): {r}");
    assert_eq!(parts[1], "1", "one result: {r}");
    let w = wer(said, parts[2]);
    assert!(
        w.wer() <= WER_BOUND,
        "recognised '{}' (WER {:.2})",
        parts[2],
        w.wer()
    );
    assert_eq!(parts[3], "silero");
    assert_eq!(parts[4], "0.55");
}

/// A missing Silero model is one clear log line at engine load naming the install command,
/// and the engine is not registered (the PBX itself runs).
#[test]
fn missing_silero_model_fails_engine_load_clearly() {
    let Some(f) = setup() else { return };
    let broken = Files {
        whisper: f.whisper.clone(),
        vad: PathBuf::from("/nonexistent/silero_vad.onnx"),
        ort: f.ort.clone(),
    };
    let (pbx, _) = start_pbx(&broken, "", "[default]\nexten => 100,1,Hangup()\n");
    assert!(
        pbx.wait_log("voxpbx models install silero", 10),
        "no install hint in the log:\n{}",
        pbx.log()
    );
    let line = pbx
        .log()
        .lines()
        .find(|l| l.contains("voxpbx models install silero"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("/nonexistent/silero_vad.onnx") && line.contains("not found"),
        "{line}"
    );
    assert!(
        !pbx.rx("speech show engines").contains("whisper"),
        "{}",
        pbx.rx("speech show engines")
    );
}
