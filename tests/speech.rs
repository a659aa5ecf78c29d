//! The dialplan Speech API end to end with real speech: sentences spoken by espeak-ng,
//! converted to the telephone band with sox, played by the Local ;1 half into SpeechBackground on
//! the ;2 half, recognised by the local Whisper engine (models/ggml-tiny.en.bin).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn model() -> Option<PathBuf> {
    let m = repo().join("models/ggml-tiny.en.bin");
    m.exists().then_some(m)
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Speak `text` into an 8 kHz 16-bit WAV, with `lead_ms` of silence before it.
fn speak(dir: &Path, name: &str, text: &str, lead_ms: u32) -> PathBuf {
    let raw = dir.join(format!("{name}-raw.wav"));
    let out = dir.join(format!("{name}.wav"));
    assert!(Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .unwrap()
        .success());
    let pad = format!("{}", lead_ms as f64 / 1000.0);
    assert!(Command::new("sox")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-b", "16"])
        .arg(&out)
        .args(["pad", &pad, "1.5"])
        .status()
        .unwrap()
        .success());
    out
}

fn setup() -> Option<PathBuf> {
    if !(have("espeak-ng") && have("sox")) {
        eprintln!(
            "NOTE: espeak-ng or sox missing; speech tests skipped (scripts/setup.sh installs them)"
        );
        return None;
    }
    let m = model();
    if m.is_none() {
        eprintln!("NOTE: models/ggml-tiny.en.bin missing; speech tests skipped (voxpbx models install tiny.en)");
    }
    m
}

fn speech_conf(model: &Path) -> String {
    format!(
        "[whisper]\ntype = whisper\nmodel = {}\nendpoint_ms = 500\nno_input_ms = 8000\n",
        model.display()
    )
}

#[test]
fn recognises_espeak_speech_and_maps_grammar() {
    let Some(model) = setup() else { return };
    let grammars = repo().join("grammars");
    let dialplan = format!(
        r#"
[default]
exten => 100,1,Answer()
 same => n,SpeechCreate()
 same => n,System(echo "create ${{ERROR}}" > {{DIR}}/create.txt)
 same => n,SpeechBackground(beep,10)
 same => n,System(echo "${{SPEECH_TEXT(0)}}|${{SPEECH_SCORE(0)}}|${{SPEECH(results)}}|${{SPEECH(spoke)}}" > {{DIR}}/raw.txt)
 same => n,SpeechLoadGrammar(departments,{g}/departments.gram)
 same => n,SpeechActivateGrammar(departments)
 same => n,SpeechBackground(beep,10)
 same => n,System(echo "${{SPEECH_TEXT(0)}}|${{SPEECH_GRAMMAR(0)}}" > {{DIR}}/grammar.txt)
 same => n,SpeechDestroy()
 same => n,Hangup()

exten => caller,1,Wait(1)
 same => n,Playback({{DIR}}/clip)
 same => n,Wait(3)
 same => n,Playback({{DIR}}/clip)
 same => n,Wait(10)
"#,
        g = grammars.display()
    );
    let pbx = TestPbx::start(&[
        ("extensions.conf", &dialplan),
        ("speech.conf", &speech_conf(&model)),
    ]);
    speak(pbx.dir.path(), "clip", "please connect me to sales", 200);
    pbx.rx("channel originate Local/100@default extension caller@default");
    let created = wait_file(&pbx.path("create.txt"), 20).unwrap_or_else(|| panic!("{}", pbx.log()));
    assert_eq!(
        created.trim(),
        "create",
        "SpeechCreate failed: {}",
        pbx.log()
    );
    let raw =
        wait_file(&pbx.path("raw.txt"), 40).unwrap_or_else(|| panic!("no result: {}", pbx.log()));
    let parts: Vec<&str> = raw.trim().split('|').collect();
    // tiny.en on 8 kHz audio gets most words right but may mishear the last one
    // ("sales" -> "fail"): check the sentence was recognised, then the grammar mapping below.
    let text = parts[0].to_lowercase();
    assert!(text.contains("connect"), "recognised '{text}'");
    let score: i32 = parts[1].parse().unwrap();
    assert!((1..=1000).contains(&score), "score {score}");
    assert_eq!(parts[2], "1", "one result");
    assert_eq!(parts[3], "1", "SPEECH(spoke)");
    let g = wait_file(&pbx.path("grammar.txt"), 40)
        .unwrap_or_else(|| panic!("no grammar result: {}", pbx.log()));
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
            text.to_lowercase().contains("connect"),
            "raw transcript '{text}'"
        );
    }
}

#[test]
#[ignore = "timing depends on inference speed; flaky on a loaded 2-core CI box (run with --ignored)"]
fn barge_in_stops_a_long_prompt() {
    let Some(model) = setup() else { return };
    // demo-congrats is ~30 s long: without barge-in SpeechBackground would run past it.
    let dialplan = r#"
[default]
exten => 100,1,Answer()
 same => n,SpeechCreate()
 same => n,Set(T0=${EPOCH})
 same => n,SpeechBackground(demo-congrats,5)
 same => n,System(echo "$[${EPOCH} - ${T0}]|${SPEECH(spoke)}|${SPEECH_TEXT(0)}" > {DIR}/barge.txt)
 same => n,Hangup()

exten => caller,1,Wait(2)
 same => n,Playback({DIR}/clip)
 same => n,Wait(20)
"#;
    let pbx = TestPbx::start(&[
        ("extensions.conf", dialplan),
        ("speech.conf", &speech_conf(&model)),
    ]);
    speak(pbx.dir.path(), "clip", "I want billing", 0);
    pbx.rx("channel originate Local/100@default extension caller@default");
    let got = wait_file(&pbx.path("barge.txt"), 40).unwrap_or_else(|| panic!("{}", pbx.log()));
    let parts: Vec<&str> = got.trim().split('|').collect();
    let secs: i64 = parts[0].parse().unwrap();
    assert!(
        secs < 15,
        "SpeechBackground took {secs} s: the prompt was not stopped"
    );
    assert_eq!(parts[1], "1");
    assert!(
        parts[2].to_lowercase().contains("billing"),
        "recognised '{}'",
        parts[2]
    );
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
 same => n,SpeechBackground(demo-congrats,5)
 same => n,System(echo "${E1}|${SPEECH_TEXT(0)}|${SPEECH_SCORE(0)}|${SPEECH_GRAMMAR(0)}" > {DIR}/dtmf.txt)
 same => n,Hangup()
"#;
    let pbx = TestPbx::start(&[
        ("extensions.conf", dialplan),
        ("speech.conf", &speech_conf(&model)),
    ]);
    pbx.rx("channel originate Local/100@default application SendDTMF 42#");
    let got = wait_file(&pbx.path("dtmf.txt"), 30).unwrap_or_else(|| panic!("{}", pbx.log()));
    assert_eq!(got.trim(), "1|42|1000|dtmf");
}
