//! Media hot-path benchmarks: per-20 ms-frame costs of G.711, resampling, mixing and energy.
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use voxpbx::media::energy;
use voxpbx::media::g711;
use voxpbx::media::mix::Mixer;
use voxpbx::media::resample::Resampler;

fn sine(rate: u32, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| (9000.0 * (std::f64::consts::TAU * 440.0 * i as f64 / rate as f64).sin()) as i16)
        .collect()
}

fn g711_benches(c: &mut Criterion) {
    let pcm = sine(8000, 160);
    let mut enc = [0u8; 160];
    let mut dec = [0i16; 160];
    let mut g = c.benchmark_group("g711_20ms");
    g.throughput(Throughput::Elements(160));
    g.bench_function("ulaw_encode", |b| {
        b.iter(|| g711::linear_to_ulaw_slice(black_box(&pcm), &mut enc))
    });
    g711::linear_to_ulaw_slice(&pcm, &mut enc);
    g.bench_function("ulaw_decode", |b| {
        b.iter(|| g711::ulaw_to_linear_slice(black_box(&enc), &mut dec))
    });
    g.bench_function("alaw_encode", |b| {
        b.iter(|| g711::linear_to_alaw_slice(black_box(&pcm), &mut enc))
    });
    g711::linear_to_alaw_slice(&pcm, &mut enc);
    g.bench_function("alaw_decode", |b| {
        b.iter(|| g711::alaw_to_linear_slice(black_box(&enc), &mut dec))
    });
    g.finish();
}

fn resample_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("resample_20ms");
    for &(from, to) in &[(8000u32, 16000u32), (16000, 8000)] {
        let input = sine(from, from as usize / 50);
        let mut r = Resampler::new(from, to).expect("valid rates");
        let mut out = Vec::with_capacity(to as usize / 25);
        g.bench_function(format!("{}k_to_{}k", from / 1000, to / 1000), |b| {
            b.iter(|| {
                out.clear();
                r.process(black_box(&input), &mut out).expect("fixed sizes")
            })
        });
    }
    g.finish();
}

fn mix_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("mix_20ms_8k");
    for &n in &[2usize, 10, 50] {
        let mut m = Mixer::new(8000);
        let legs: Vec<_> = (0..n).map(|_| m.add_leg()).collect();
        let frames: Vec<Vec<i16>> = (0..n).map(|i| sine(8000 + i as u32 * 10, 160)).collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                for (l, f) in legs.iter().zip(&frames) {
                    m.push(*l, f).expect("leg exists");
                }
                m.mix();
                black_box(m.output(legs[0]));
            })
        });
    }
    g.finish();
}

fn energy_benches(c: &mut Criterion) {
    let pcm = sine(8000, 160);
    let mut g = c.benchmark_group("energy_20ms_8k");
    g.bench_function("rms", |b| b.iter(|| energy::rms(black_box(&pcm))));
    g.bench_function("dbfs", |b| b.iter(|| energy::dbfs(black_box(&pcm))));
    let mut det = energy::SilenceDetector::new(energy::DEFAULT_SILENCE_THRESHOLD, 8000);
    g.bench_function("silence_detect", |b| {
        b.iter(|| det.process(black_box(&pcm)))
    });
    g.finish();
}

criterion_group!(
    benches,
    g711_benches,
    resample_benches,
    mix_benches,
    energy_benches
);
criterion_main!(benches);
