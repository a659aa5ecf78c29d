//! End-to-end: generate a 3-clip corpus and run `voxpbx bench stt` on it.
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
    std::fs::write(
        &list,
        "billing|I want to pay my bill\nagent|Let me talk to an agent\nyes|Yes please\n",
    )
    .expect("list");
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
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .arg("--target")
        .arg(root.join("conf"))
        .output()
        .expect("run bench stt");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    let e = &r["engines"][0];
    let floor = e["floor"].as_array().expect("floor");
    assert_eq!(floor.len(), 3, "every clip through the floor");
    for f in floor {
        let ms = f["inference_ms"].as_f64().expect("inference_ms");
        let audio = f["audio_ms"].as_f64().expect("audio_ms");
        assert!(ms > 0.0 && ms < audio + 30_000.0, "floor inference {ms} ms");
        assert!(f["wer"].as_f64().expect("wer") >= 0.0);
    }
    let w = e["floor_wer"]["wer"].as_f64().expect("floor wer");
    assert!((0.0..=1.0).contains(&w), "floor WER {w}");
    let pipe = e["pipeline"].as_array().expect("pipeline");
    assert_eq!(pipe.len(), 3, "every clip through the pipeline");
    let measured = pipe
        .iter()
        .filter(|p| p["eos_to_result_ms"].is_number())
        .count();
    if measured == 0 {
        eprintln!(
            "note: the daemon produced no SpeechResult (is the whisper engine registered?): {}",
            e["pipeline"]
        );
        return;
    }
    assert_eq!(measured, 3, "every call measured: {}", e["pipeline"]);
    for p in pipe {
        let audio = p["audio_ms"].as_f64().expect("audio_ms");
        let lat = p["eos_to_result_ms"].as_f64().expect("eos");
        // Bound: the rest of the clip + the 3 s SpeechBackground timeout + inference slack.
        assert!(
            lat > 0.0 && lat < audio + 3_000.0 + 10_000.0,
            "eos->result {lat}"
        );
        if let Some(b) = p["onset_to_bargein_ms"].as_f64() {
            assert!(b > 0.0 && b < audio + 3_000.0, "onset->barge-in {b}");
        }
    }
    let w = e["pipeline_wer"]["wer"].as_f64().expect("pipeline wer");
    assert!((0.0..=1.0).contains(&w), "pipeline WER {w}");
    assert!(std::fs::read_to_string(&svg)
        .expect("svg")
        .contains("</svg>"));
}
