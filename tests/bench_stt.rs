//! End-to-end: generate a 3-clip corpus and run `voxpbx bench stt` on it: the floor, and real
//! SIP calls (A-law) into the in-process engine and through the AEAP hop; the JSON is checked.
//! Skips (with a note) when espeak-ng, sox or models/ggml-tiny.en.bin is missing.

use std::path::PathBuf;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn bench_stt_end_to_end() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/ggml-tiny.en.bin");
    if !have("espeak-ng") || !have("sox") || !model.exists() {
        eprintln!(
            "skipping bench_stt: needs espeak-ng, sox and {}",
            model.display()
        );
        return;
    }
    let exe = env!("CARGO_BIN_EXE_voxpbx");
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("list.txt");
    let transcripts = [
        ("billing", "I want to pay my bill"),
        ("agent", "Let me talk to an agent"),
        ("yes", "Yes please"),
    ];
    let text: String = transcripts
        .iter()
        .map(|(n, t)| format!("{n}|{t}\n"))
        .collect();
    std::fs::write(&list, text).expect("list");
    let corpus = dir.path().join("corpus");
    let out = Command::new(exe)
        .args([
            "bench",
            "corpus",
            "generate",
            "--voice",
            "en-us",
            "--speed",
            "160",
            "--clean-only",
            "--list",
        ])
        .arg(&list)
        .arg("--out")
        .arg(&corpus)
        .output()
        .expect("run generate");
    assert!(
        out.status.success(),
        "generate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = dir.path().join("r.json");
    let svg = dir.path().join("r.svg");
    let out = Command::new(exe)
        .args(["bench", "stt", "--engine", "whisper", "--corpus"])
        .arg(&corpus)
        .args(["--paths", "floor,sip,hop", "--codec", "alaw", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .arg("--conf")
        .arg(root.join("conf"))
        .output()
        .expect("run bench stt");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    assert_eq!(r["codec"], "alaw");
    let floor = &r["floor"][0];
    let clips = floor["clips"].as_array().expect("floor clips");
    assert_eq!(clips.len(), 3, "every clip through the floor");
    for f in clips {
        let ms = f["inference_ms"].as_f64().expect("inference_ms");
        let audio = f["audio_ms"].as_f64().expect("audio_ms");
        assert!(ms > 0.0 && ms < audio + 30_000.0, "floor inference {ms} ms");
        assert!(f["wer"].as_f64().expect("wer") >= 0.0);
    }
    let w = floor["wer"]["wer"].as_f64().expect("floor wer");
    assert!((0.0..=1.0).contains(&w), "floor WER {w}");
    let paths = r["paths"].as_array().expect("paths");
    let names: Vec<&str> = paths.iter().filter_map(|p| p["path"].as_str()).collect();
    assert_eq!(names, ["sip", "aeap-hop"], "{}", r["paths"]);
    for p in paths {
        let calls = p["calls"].as_array().expect("calls");
        assert_eq!(calls.len(), 3, "every clip called: {p}");
        for c in calls {
            assert!(c["error"].is_null(), "call error: {c}");
            let audio = c["audio_ms"].as_f64().expect("audio_ms");
            let end = c["speech_end_ms"].as_f64().expect("speech_end_ms");
            let start = c["speech_start_ms"].as_f64().expect("speech_start_ms");
            assert!(0.0 < start && start < end && end <= audio, "span {c}");
            let lat = c["eos_to_result_ms"].as_f64().expect("eos_to_result_ms");
            // Bound: rest of the clip + 3 s SpeechBackground timeout + inference slack on a
            // loaded CI box.
            assert!(
                lat > 0.0 && lat < audio - end + 3_000.0 + 20_000.0,
                "eos->result {lat}: {c}"
            );
            let barge = c["onset_to_prompt_stop_ms"]
                .as_f64()
                .expect("prompt stop measured");
            // Negative = the prompt went quiet before the stored onset (seen once on a box at
            // load 10+ on 2 cores); measured, reported, bounded here.
            assert!(barge.abs() < audio, "onset->prompt stop {barge}");
            // The engine's split comes from SPEECH_ENGINE(timing) (an AEAP `get` for the hop,
            // which may time out on a loaded box): checked where present.
            if let Some(w) = c["endpoint_wait_ms"].as_f64() {
                assert!(w >= 0.0, "{c}");
            }
            if let Some(r) = c["rtf"].as_f64() {
                assert!(r > 0.0, "{c}");
            }
            // The call's WER is the clip's transcript against the recognised text.
            let clip = c["clip"].as_str().expect("clip");
            let reference = transcripts
                .iter()
                .find(|(n, _)| clip.starts_with(n))
                .map(|(_, t)| *t)
                .expect("known clip");
            let text = c["text"].as_str().expect("text");
            let want = voxpbx::bench::wer::wer(reference, text).wer();
            assert!((c["wer"].as_f64().expect("wer") - want).abs() < 1e-9, "{c}");
        }
        let w = p["wer"]["wer"].as_f64().expect("path wer");
        assert!((0.0..=1.0).contains(&w), "WER {w}");
        assert!(p["cpu_s_per_audio_s"].as_f64().expect("cpu") > 0.0);
        assert!(p["peak_mb"].as_f64().expect("peak") > 0.0);
    }
    assert!(paths[1]["server_peak_mb"].as_f64().expect("server peak") > 0.0);
    let cmp = &r["comparisons"][0];
    assert!(cmp["hop_added_p50_ms"].is_number(), "{cmp}");
    assert!(cmp["inference_over_floor"].as_f64().expect("ratio") > 0.0);
    assert!(std::fs::read_to_string(&svg)
        .expect("svg")
        .contains("</svg>"));
}
