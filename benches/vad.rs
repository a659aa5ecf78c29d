//! VAD cost on real speech: webrtc-vad (20 ms chunks) vs Silero VAD through ONNX Runtime
//! (32 ms chunks), per chunk and per second of 8 kHz audio through `Vad::process` (endpointer
//! included). The speech is one second of espeak-ng at 8 kHz; Silero needs
//! `voxpbx models install silero` (models/silero_vad.onnx, models/libonnxruntime.so.1.31.1).
//!
//! `cargo bench --bench vad`
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use voxpbx::speech::silero::{self, SileroModel};
use voxpbx::speech::vad::{EndpointConfig, Vad};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One second of real speech at `rate` (espeak-ng + sox), or a vowel-like synthetic signal when
/// the tools are missing (said on stderr).
fn speech_1s(rate: u32) -> Vec<i16> {
    let dir = std::env::temp_dir().join(format!("voxpbx-bench-vad-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let raw = dir.join("raw.wav");
    let out = dir.join(format!("speech{rate}.wav"));
    let ok = Command::new("espeak-ng")
        .args(["-v", "en-us", "-w"])
        .arg(&raw)
        .arg("please connect me to the sales department")
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && Command::new("sox")
            .arg(&raw)
            .args(["-r", &rate.to_string(), "-c", "1", "-b", "16"])
            .arg(&out)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    let samples: Vec<i16> = if ok {
        hound::WavReader::open(&out)
            .map(|mut r| r.samples::<i16>().map_while(Result::ok).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let _ = std::fs::remove_dir_all(&dir);
    let n = rate as usize;
    if samples.len() >= n + n / 5 {
        // Skip espeak's short lead-in silence.
        return samples[n / 5..n / 5 + n].to_vec();
    }
    eprintln!("NOTE: espeak-ng/sox missing: benchmarking a synthetic vowel instead of speech");
    (0..n)
        .map(|i| {
            let t = i as f32 / rate as f32;
            let s: f32 = (1..=12)
                .map(|h| (std::f32::consts::TAU * 150.0 * h as f32 * t).sin() / h as f32)
                .sum();
            (s * 6000.0) as i16
        })
        .collect()
}

fn silero_model() -> Option<Arc<SileroModel>> {
    let m = repo().join("models").join(silero::DEFAULT_MODEL);
    let l = silero::library_path(&repo().join("models").join(silero::DEFAULT_LIBRARY));
    if !(m.exists() && l.exists()) {
        eprintln!("NOTE: Silero files missing (voxpbx models install silero): webrtc only");
        return None;
    }
    match SileroModel::load(&m, &l) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("NOTE: {e}: webrtc only");
            None
        }
    }
}

fn per_chunk(c: &mut Criterion) {
    let model = silero_model();
    let mut g = c.benchmark_group("vad_chunk");
    for rate in [8000u32, 16000] {
        let speech = speech_1s(rate);
        let k = rate / 1000;
        let mut webrtc = Vad::new(rate, 2, EndpointConfig::default()).expect("valid");
        let chunks: Vec<&[i16]> = speech.chunks_exact((20 * k) as usize).collect();
        let mut i = 0;
        g.bench_function(format!("webrtc_20ms_{k}k"), |b| {
            b.iter(|| {
                i = (i + 1) % chunks.len();
                webrtc.is_voiced(black_box(chunks[i]))
            })
        });
        if let Some(m) = &model {
            let mut d = m.detector(rate, 0.5).expect("detector");
            let chunks: Vec<&[i16]> = speech.chunks_exact(d.chunk_len()).collect();
            let mut i = 0;
            g.bench_function(format!("silero_32ms_{k}k"), |b| {
                b.iter(|| {
                    i = (i + 1) % chunks.len();
                    d.is_voiced(black_box(chunks[i]))
                })
            });
            assert_eq!(d.errors(), 0);
        }
    }
    g.finish();
}

/// One second of 8 kHz speech in 20 ms RTP-sized frames through `Vad::process`.
fn per_second(c: &mut Criterion) {
    let model = silero_model();
    let speech = speech_1s(8000);
    let mut g = c.benchmark_group("vad_1s_speech_8k");
    g.throughput(Throughput::Elements(1));
    let run = |vad: &mut Vad| {
        vad.reset();
        let mut n = 0usize;
        for f in speech.chunks(160) {
            vad.process(black_box(f), |_| n += 1);
        }
        n
    };
    let mut webrtc = Vad::new(8000, 2, EndpointConfig::default()).expect("valid");
    g.bench_function("webrtc", |b| b.iter(|| run(&mut webrtc)));
    if let Some(m) = &model {
        let mut vad = Vad::silero(
            m.detector(8000, 0.5).expect("detector"),
            EndpointConfig::default(),
        );
        g.bench_function("silero", |b| b.iter(|| run(&mut vad)));
    }
    g.finish();
}

/// What the session pool saves: a detector from the pool vs loading (new session + checks).
fn setup_cost(c: &mut Criterion) {
    let Some(m) = silero_model() else { return };
    let mut g = c.benchmark_group("silero_setup");
    g.sample_size(10);
    g.bench_function("detector_from_pool", |b| {
        b.iter(|| m.detector(8000, 0.5).expect("detector"))
    });
    let (mp, lp) = (
        repo().join("models").join(silero::DEFAULT_MODEL),
        silero::library_path(&repo().join("models").join(silero::DEFAULT_LIBRARY)),
    );
    g.bench_function("model_load_new_session", |b| {
        b.iter(|| SileroModel::load(Path::new(&mp), &lp).expect("load"))
    });
    g.finish();
}

criterion_group!(benches, per_chunk, per_second, setup_cost);
criterion_main!(benches);
