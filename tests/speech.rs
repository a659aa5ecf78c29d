//! The dialplan Speech API end to end with real speech over real SIP calls: sentences spoken by
//! espeak-ng, converted to the telephone band (8 kHz) with sox, sent as µ-law RTP at real-time
//! pace by `voxpbx::sip::ua::dial` into SpeechBackground, recognised by the local Whisper engine
//! (models/ggml-tiny.en.bin).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

use voxpbx::bench::corpus::speech_span;
use voxpbx::bench::stt::{prompt_stop_ms, prompt_tone};
use voxpbx::bench::wer::wer;
use voxpbx::sip::ua::{dial, DialAudio, DialOpts, DialSummary};

fn model() -> Option<PathBuf> {
    let m = repo().join("models/ggml-tiny.en.bin");
    m.exists().then_some(m)
}

fn silence(ms: usize) -> Vec<i16> {
    vec![0; ms * 8]
}

fn setup() -> Option<PathBuf> {
    if !have_tts("speech tests") {
        return None;
    }
    let m = model();
    if m.is_none() {
        eprintln!("NOTE: models/ggml-tiny.en.bin missing; speech tests skipped (voxpbx models install tiny.en)");
    }
    m
}

/// A PBX answering SIP on 127.0.0.1 with the whisper engine and `dialplan` in context `default`.
struct SipPbx {
    pbx: TestPbx,
    sip_port: u16,
}

/// `speech_extra`: more lines for the engine's speech.conf section.
fn start_pbx(model: &Path, speech_extra: &str, dialplan: &str) -> SipPbx {
    let (sip_port, pjsip, rtp_conf) = phone_sip_conf(40);
    let pbx = TestPbx::start(&[
        ("extensions.conf", dialplan),
        (
            "speech.conf",
            &format!(
                "[whisper]\ntype = whisper\nmodel = {}\nendpoint_ms = 500\nno_input_ms = 15000\n{speech_extra}",
                model.display()
            ),
        ),
        ("pjsip.conf", &pjsip),
        ("rtp.conf", &rtp_conf),
    ]);
    // The prompts: a short tone and a long one (barge-in must cut it).
    write_wav(&pbx.path("short.wav"), 8000, &prompt_tone(300));
    write_wav(&pbx.path("long.wav"), 8000, &prompt_tone(20_000));
    SipPbx { pbx, sip_port }
}

fn call(p: &SipPbx, exten: &str, audio: Vec<i16>, hangup_after: Duration) -> DialSummary {
    let mut o = DialOpts::new(format!("sip:{exten}@127.0.0.1:{}", p.sip_port));
    o.audio = Some(DialAudio::Samples {
        rate: 8000,
        samples: audio,
    });
    o.keep_recording = true;
    o.hangup_after = Some(hangup_after);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(dial(o)).expect("dial");
    assert_eq!(s.status, 200, "call not answered: {s:?}\n{}", p.pbx.log());
    s
}

/// Call extension 100 saying `said` after 1.5 s of silence (then 20 s of silence) and check
/// that the prompt goes quiet in the caller's received audio within 300 ms of the speech onset.
fn barge_in_call(p: &SipPbx, said: &str, vad: &str) -> DialSummary {
    let speech = speak(p.pbx.dir.path(), "clip", said);
    let span = speech_span(&speech, 8000).expect("speech in the clip");
    let lead_ms = 1500u64;
    let mut audio = silence(lead_ms as usize);
    audio.extend(&speech);
    audio.extend(silence(20_000));
    let s = call(p, "100", audio, Duration::from_secs(30));
    let onset = (s.play_started_ms.unwrap() - s.answered_ms.unwrap()) as f64
        + (lead_ms + span.speech_start_ms) as f64;
    let stop = prompt_stop_ms(&s.recorded, 10).unwrap_or_else(|| {
        panic!(
            "the prompt never stopped in the caller's audio ({} samples)\n{}",
            s.recorded.len(),
            p.pbx.log()
        )
    }) as f64;
    let barge = stop - onset;
    eprintln!("{vad}: onset -> prompt stopped (caller's audio): {barge:.0} ms");
    assert!(barge > 0.0, "prompt stopped {barge} ms before the speech");
    assert!(barge <= 300.0, "prompt stopped {barge:.0} ms after onset");
    s
}

/// Normalised WER bound for tiny.en on 8 kHz espeak speech (it may mishear one word of five).
const WER_BOUND: f64 = 0.4;

#[test]
fn recognises_speech_over_sip_and_maps_grammar() {
    let Some(model) = setup() else { return };
    let grammars = repo().join("grammars");
    let dialplan = format!(
        r#"
[default]
exten => 100,1,SpeechCreate()
 same => n,Answer()
 same => n,SpeechBackground({{DIR}}/short,10)
 same => n,System(echo "${{SPEECH_TEXT(0)}}|${{SPEECH_SCORE(0)}}|${{SPEECH(results)}}|${{SPEECH(spoke)}}" > {{DIR}}/raw.txt)
 same => n,SpeechLoadGrammar(departments,{g}/departments.gram)
 same => n,SpeechActivateGrammar(departments)
 same => n,SpeechBackground({{DIR}}/short,30)
 same => n,System(echo "${{SPEECH_TEXT(0)}}|${{SPEECH_GRAMMAR(0)}}" > {{DIR}}/grammar.txt)
 same => n,SpeechDestroy()
 same => n,Hangup()
"#,
        g = grammars.display()
    );
    let p = start_pbx(&model, "", &dialplan);
    let said = "please connect me to sales";
    let speech = speak(p.pbx.dir.path(), "clip", said);
    // Speech, a pause long enough for the first result, the same speech again, then silence
    // (a phone keeps sending RTP; the engine's endpointing runs on received audio).
    let mut audio = silence(500);
    audio.extend(&speech);
    // (12 s: the first result must be in before the second SpeechBackground starts listening,
    // even on a loaded 2-core CI box; that one waits up to 30 s for speech, so an idle box that
    // has the first result after 3 s still hears the second utterance.)
    audio.extend(silence(12_000));
    audio.extend(&speech);
    audio.extend(silence(20_000));
    let s = call(&p, "100", audio, Duration::from_secs(60));
    assert_eq!(s.hangup, voxpbx::sip::ua::Hangup::Remote, "{s:?}");
    let raw = wait_file(&p.pbx.path("raw.txt"), 5)
        .unwrap_or_else(|| panic!("no result: {}", p.pbx.log()));
    let parts: Vec<&str> = raw.trim().split('|').collect();
    let w = wer(said, parts[0]);
    assert!(
        w.wer() <= WER_BOUND,
        "recognised '{}' (WER {:.2})",
        parts[0],
        w.wer()
    );
    let score: i32 = parts[1].parse().unwrap();
    assert!((1..=1000).contains(&score), "score {score}");
    assert_eq!(parts[2], "1", "one result");
    assert_eq!(parts[3], "1", "SPEECH(spoke)");
    let g = wait_file(&p.pbx.path("grammar.txt"), 5)
        .unwrap_or_else(|| panic!("no grammar result: {}", p.pbx.log()));
    let (text, grammar) = g.trim().split_once('|').unwrap();
    // With the grammar active the transcript maps to one of its phrases, or stays raw.
    if grammar == "departments" {
        assert!(
            ["sales", "support", "billing"].contains(&text),
            "mapped to '{text}'"
        );
    } else {
        assert_eq!(grammar, "", "unexpected grammar '{grammar}'");
        assert!(
            wer(said, text).wer() <= WER_BOUND,
            "raw transcript '{text}'\n{}",
            p.pbx.log()
        );
    }
}

/// A caller that stops sending RTP when it stops talking (silence suppression, or a UA whose
/// file ended): SpeechBackground feeds the missing time to the engine as silence, so the
/// endpoint fires after `endpoint_ms` instead of the engine's 15 s no-input timeout.
#[test]
fn endpoint_fires_when_the_caller_stops_sending_rtp() {
    let Some(model) = setup() else { return };
    let dialplan = r#"
[default]
exten => 100,1,SpeechCreate()
 same => n,Answer()
 same => n,SpeechBackground({DIR}/short,10)
 same => n,System(echo "${SPEECH_TEXT(0)}|${SPEECH(results)}" > {DIR}/result.txt)
 same => n,SpeechDestroy()
 same => n,Hangup()
"#;
    let p = start_pbx(&model, "", dialplan);
    let said = "please connect me to support";
    let mut audio = silence(500);
    audio.extend(speak(p.pbx.dir.path(), "clip", said));
    // No trailing silence: the UA sends nothing once the clip has played.
    let s = call(&p, "100", audio, Duration::from_secs(40));
    assert_eq!(s.hangup, voxpbx::sip::ua::Hangup::Remote, "{s:?}");
    let r = wait_file(&p.pbx.path("result.txt"), 5)
        .unwrap_or_else(|| panic!("no result: {}", p.pbx.log()));
    let (text, results) = r.trim().split_once('|').unwrap();
    assert_eq!(results, "1", "one result, got '{r}'");
    assert!(wer(said, text).wer() <= WER_BOUND, "recognised '{text}'");
    // Functional bound, not a timing claim: without the silence fill the call would last
    // until the 15 s no-input timeout.
    assert!(
        s.duration_ms < 14_000,
        "call lasted {} ms: the endpoint never fired",
        s.duration_ms
    );
}

/// Barge-in as the caller hears it: the prompt's RTP goes quiet in the UA's recording within
/// 300 ms of the speech onset in what the UA sent.
#[test]
fn barge_in_stops_the_prompt_within_300ms() {
    let Some(model) = setup() else { return };
    let dialplan = r#"
[default]
exten => 100,1,SpeechCreate()
 same => n,Answer()
 same => n,SpeechBackground({DIR}/long,5)
 same => n,System(echo "${SPEECH(spoke)}|${SPEECH_TEXT(0)}" > {DIR}/barge.txt)
 same => n,Hangup()
"#;
    let p = start_pbx(&model, "", dialplan);
    barge_in_call(&p, "I want billing", "webrtc-vad");
    let got = wait_file(&p.pbx.path("barge.txt"), 5).unwrap_or_else(|| panic!("{}", p.pbx.log()));
    assert!(got.starts_with("1|"), "{got}");
}

#[test]
fn hangup_during_recognition_leaves_no_channels() {
    let Some(model) = setup() else { return };
    let dialplan = r#"
[default]
exten => 100,1,SpeechCreate()
 same => n,Answer()
 same => n,SpeechBackground({DIR}/long,5)
 same => n,System(touch {DIR}/finished)
 same => n,Hangup()
"#;
    let p = start_pbx(&model, "", dialplan);
    let speech = speak(
        p.pbx.dir.path(),
        "clip",
        "I would like to talk to somebody about my account balance please",
    );
    let mut audio = silence(300);
    audio.extend(&speech);
    // Hang up in the middle of the sentence.
    let s = call(&p, "100", audio, Duration::from_millis(1500));
    assert_eq!(s.hangup, voxpbx::sip::ua::Hangup::Local);
    assert!(
        p.pbx.wait_no_channels(10),
        "channels left: {}\n{}",
        p.pbx.rx("core show channels"),
        p.pbx.log()
    );
    // The dialplan did not continue after the hangup.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!p.pbx.path("finished").exists());
}

#[test]
fn dtmf_result_and_missing_engine() {
    let Some(model) = setup() else { return };
    let dialplan = r#"
[default]
exten => 100,1,Answer()
 same => n,SpeechCreate(nosuchengine)
 same => n,Set(E1=${ERROR})
 same => n,SpeechCreate()
 same => n,SpeechBackground({DIR}/long,5)
 same => n,System(echo "${E1}|${SPEECH_TEXT(0)}|${SPEECH_SCORE(0)}|${SPEECH_GRAMMAR(0)}" > {DIR}/dtmf.txt)
 same => n,Hangup()
"#;
    let p = start_pbx(&model, "", dialplan);
    let mut o = DialOpts::new(format!("sip:100@127.0.0.1:{}", p.sip_port));
    o.audio = Some(DialAudio::Samples {
        rate: 8000,
        samples: silence(15_000),
    });
    o.dtmf = Some(("42#".into(), 1000));
    o.hangup_after = Some(Duration::from_secs(15));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(dial(o)).expect("dial");
    assert_eq!(s.status, 200);
    let got = wait_file(&p.pbx.path("dtmf.txt"), 10).unwrap_or_else(|| panic!("{}", p.pbx.log()));
    assert_eq!(got.trim(), "1|42|1000|dtmf");
}

/// `vad = silero` lines for speech.conf when `voxpbx models install silero` has been run.
fn silero_conf() -> Option<String> {
    let vad = repo().join("models/silero_vad.onnx");
    let ort = repo().join("models/libonnxruntime.so.1.31.1");
    if !(vad.exists() && ort.exists()) {
        eprintln!(
            "NOTE: Silero files missing; Silero speech test skipped (voxpbx models install silero)"
        );
        return None;
    }
    Some(format!(
        "vad = silero\nvad_model = {}\nonnxruntime = {}\n",
        vad.display(),
        ort.display()
    ))
}

/// Barge-in and recognition with Silero VAD: the prompt goes quiet in the caller's audio within
/// 300 ms of the speech onset, the words are recognised, and the per-call threshold is applied.
#[test]
fn silero_vad_barges_in_and_endpoints_over_sip() {
    let Some(model) = setup() else { return };
    let Some(silero) = silero_conf() else { return };
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
    let p = start_pbx(&model, &silero, dialplan);
    assert!(
        p.pbx.rx("speech show engines").contains("whisper"),
        "engine not loaded:\n{}",
        p.pbx.log()
    );
    let said = "please connect me to sales";
    let s = barge_in_call(&p, said, "silero");
    assert_eq!(
        s.hangup,
        voxpbx::sip::ua::Hangup::Remote,
        "{s:?}\n{}",
        p.pbx.log()
    );
    let r = wait_file(&p.pbx.path("result.txt"), 5)
        .unwrap_or_else(|| panic!("no result: {}", p.pbx.log()));
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
    let Some(model) = setup() else { return };
    let Some(silero) = silero_conf() else { return };
    let vad = repo().join("models/silero_vad.onnx");
    let broken = silero.replace(&vad.display().to_string(), "/nonexistent/silero_vad.onnx");
    let p = start_pbx(&model, &broken, "[default]\nexten => 100,1,Hangup()\n");
    assert!(
        p.pbx.wait_log("voxpbx models install silero", 10),
        "no install hint in the log:\n{}",
        p.pbx.log()
    );
    let log = p.pbx.log();
    let line = log
        .lines()
        .find(|l| l.contains("voxpbx models install silero"))
        .unwrap_or_default();
    assert!(
        line.contains("/nonexistent/silero_vad.onnx") && line.contains("not found"),
        "{line}"
    );
    let engines = p.pbx.rx("speech show engines");
    assert!(!engines.contains("whisper"), "{engines}");
}
