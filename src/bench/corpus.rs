//! Benchmark corpus: a folder of `NAME.wav` (8 kHz mono 16-bit) + `NAME.txt` (transcript) +
//! `NAME.json` (`speech_start_ms` / `speech_end_ms`, from an offline energy pass, saved once).
//!
//! `generate` speaks the lines of `bench/corpus.txt` with espeak-ng in several voices and speeds,
//! band-limits them to the telephone band with sox and adds white-noise variants at 20 and 10 dB SNR.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// Errors of corpus handling.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: bad wav: {1}")]
    Wav(PathBuf, String),
    #[error("{0}: bad json: {1}")]
    Json(PathBuf, String),
    #[error("{0}:{1}: expected NAME|transcript")]
    Line(PathBuf, usize),
    #[error("`{0}` failed: {1}")]
    Tool(String, String),
    #[error("corpus {0} has no clips")]
    Empty(PathBuf),
}

/// Where speech is in a clip, in ms from its start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpeechSpan {
    pub speech_start_ms: u64,
    pub speech_end_ms: u64,
}

/// One clip of a corpus.
#[derive(Debug, Clone)]
pub struct Clip {
    pub name: String,
    pub wav: PathBuf,
    pub transcript: String,
    pub span: SpeechSpan,
    /// Clip length in ms.
    pub duration_ms: u64,
    /// Samples at `rate` Hz (8 kHz for generated corpora).
    pub samples: Vec<i16>,
    pub rate: u32,
}

/// Read an 8 kHz (or any rate) mono 16-bit wav; returns (samples, rate).
pub fn read_wav(path: &Path) -> Result<(Vec<i16>, u32), CorpusError> {
    let mut r =
        hound::WavReader::open(path).map_err(|e| CorpusError::Wav(path.into(), e.to_string()))?;
    let spec = r.spec();
    if spec.bits_per_sample != 16 || spec.sample_format != hound::SampleFormat::Int {
        return Err(CorpusError::Wav(path.into(), "expected 16-bit PCM".into()));
    }
    let ch = usize::from(spec.channels.max(1));
    let all: Result<Vec<i16>, _> = r.samples::<i16>().collect();
    let all = all.map_err(|e| CorpusError::Wav(path.into(), e.to_string()))?;
    Ok((all.into_iter().step_by(ch).collect(), spec.sample_rate))
}

/// Write mono 16-bit wav.
pub fn write_wav(path: &Path, samples: &[i16], rate: u32) -> Result<(), CorpusError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .map_err(|e| CorpusError::Wav(path.into(), e.to_string()))?;
    for &s in samples {
        w.write_sample(s)
            .map_err(|e| CorpusError::Wav(path.into(), e.to_string()))?;
    }
    w.finalize()
        .map_err(|e| CorpusError::Wav(path.into(), e.to_string()))
}

/// Offline energy pass: 20 ms frames; speech is every frame whose mean absolute level is above
/// `max(noise floor * 4, peak frame * 0.05, 64)`. Returns None for a silent clip.
pub fn speech_span(samples: &[i16], rate: u32) -> Option<SpeechSpan> {
    let flen = (rate as usize / 50).max(1);
    let levels: Vec<u32> = samples
        .chunks(flen)
        .map(crate::media::energy::mean_abs)
        .collect();
    let max = levels.iter().copied().max()?;
    let mut sorted = levels.clone();
    sorted.sort_unstable();
    let floor = sorted[sorted.len() / 10];
    let thr = (floor.saturating_mul(4)).max(max / 20).max(64);
    let first = levels.iter().position(|&l| l > thr)?;
    let last = levels.iter().rposition(|&l| l > thr)?;
    let ms = |f: usize| (f * flen) as u64 * 1000 / u64::from(rate.max(1));
    Some(SpeechSpan {
        speech_start_ms: ms(first),
        speech_end_ms: ms(last + 1).min(ms(levels.len())),
    })
}

/// Load every `NAME.wav` with a `NAME.txt` in `dir`, computing and saving `NAME.json` when absent.
pub fn load(dir: &Path) -> Result<Vec<Clip>, CorpusError> {
    let rd = std::fs::read_dir(dir).map_err(|e| CorpusError::Io(dir.into(), e))?;
    let mut wavs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    wavs.sort();
    let mut clips = Vec::new();
    for wav in wavs {
        let txt = wav.with_extension("txt");
        let Ok(transcript) = std::fs::read_to_string(&txt) else {
            continue;
        };
        let (samples, rate) = read_wav(&wav)?;
        let json = wav.with_extension("json");
        let span = match std::fs::read_to_string(&json) {
            Ok(s) => serde_json::from_str(&s)
                .map_err(|e| CorpusError::Json(json.clone(), e.to_string()))?,
            Err(_) => {
                let span = speech_span(&samples, rate).unwrap_or(SpeechSpan {
                    speech_start_ms: 0,
                    speech_end_ms: 0,
                });
                save_span(&json, &span)?;
                span
            }
        };
        let name = wav
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let duration_ms = samples.len() as u64 * 1000 / u64::from(rate.max(1));
        clips.push(Clip {
            name,
            wav,
            transcript: transcript.trim().to_string(),
            span,
            duration_ms,
            samples,
            rate,
        });
    }
    if clips.is_empty() {
        return Err(CorpusError::Empty(dir.into()));
    }
    Ok(clips)
}

fn save_span(path: &Path, span: &SpeechSpan) -> Result<(), CorpusError> {
    let s = serde_json::to_string_pretty(span)
        .map_err(|e| CorpusError::Json(path.into(), e.to_string()))?;
    std::fs::write(path, s + "\n").map_err(|e| CorpusError::Io(path.into(), e))
}

/// Parse `NAME|transcript` lines (`#` comments and blank lines skipped).
pub fn parse_list(path: &Path, text: &str) -> Result<Vec<(String, String)>, CorpusError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (n, t) = l
            .split_once('|')
            .ok_or_else(|| CorpusError::Line(path.into(), i + 1))?;
        let n: String = n
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if n.is_empty() || t.trim().is_empty() {
            return Err(CorpusError::Line(path.into(), i + 1));
        }
        out.push((n, t.trim().to_string()));
    }
    Ok(out)
}

/// Options of `voxpbx bench corpus generate`.
#[derive(Debug, Clone)]
pub struct GenerateOpts {
    pub list: PathBuf,
    pub out: PathBuf,
    pub voices: Vec<String>,
    pub speeds: Vec<u32>,
    pub snrs: Vec<f64>,
    /// Only the first N lines of the list (0 = all).
    pub max_lines: usize,
    /// Band-limit to the telephone band (300-3400 Hz); else the whole 0-4 kHz of 8 kHz audio
    /// (what `sox in.wav -r 8000 out.wav` gives, as in the README's demo).
    pub telephone_band: bool,
}

impl GenerateOpts {
    pub fn new(list: PathBuf, out: PathBuf) -> GenerateOpts {
        GenerateOpts {
            list,
            out,
            voices: vec!["en-us".into(), "en-gb".into(), "en-us+f3".into()],
            speeds: vec![150, 175],
            snrs: vec![20.0, 10.0],
            max_lines: 0,
            telephone_band: true,
        }
    }
}

fn run(cmd: &mut Command) -> Result<(), CorpusError> {
    let desc = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| CorpusError::Tool(desc.clone(), e.to_string()))?;
    if !out.status.success() {
        return Err(CorpusError::Tool(
            desc,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

fn rms_of(s: &[i16]) -> f64 {
    crate::media::energy::rms(s)
}

/// Mix white noise into `clean` so that speech RMS / noise RMS = `snr_db`.
pub fn mix_noise(
    clean: &[i16],
    span: &SpeechSpan,
    noise: &[i16],
    snr_db: f64,
    rate: u32,
) -> Vec<i16> {
    let a = (span.speech_start_ms * u64::from(rate) / 1000) as usize;
    let b = ((span.speech_end_ms * u64::from(rate) / 1000) as usize).min(clean.len());
    let speech = if a < b { &clean[a..b] } else { clean };
    let sig = rms_of(speech);
    let nr = rms_of(noise).max(1.0);
    let gain = sig / 10f64.powf(snr_db / 20.0) / nr;
    clean
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let n = if noise.is_empty() {
                0.0
            } else {
                f64::from(noise[i % noise.len()]) * gain
            };
            (f64::from(s) + n).round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// Generate a corpus; prints progress on stdout. Returns the number of clips written.
pub fn generate(opts: &GenerateOpts) -> Result<usize, CorpusError> {
    let text =
        std::fs::read_to_string(&opts.list).map_err(|e| CorpusError::Io(opts.list.clone(), e))?;
    let mut lines = parse_list(&opts.list, &text)?;
    if opts.max_lines > 0 {
        lines.truncate(opts.max_lines);
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| CorpusError::Io(opts.out.clone(), e))?;
    let tmp = opts.out.join(".tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| CorpusError::Io(tmp.clone(), e))?;
    let total = lines.len() * opts.voices.len() * opts.speeds.len() * (1 + opts.snrs.len());
    let mut n = 0usize;
    for (name, transcript) in &lines {
        for voice in &opts.voices {
            for &speed in &opts.speeds {
                let vtag: String = voice
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let base = format!("{name}-{vtag}-{speed}");
                let raw = tmp.join(format!("{base}.raw.wav"));
                run(Command::new("espeak-ng")
                    .arg("-v")
                    .arg(voice)
                    .arg("-s")
                    .arg(speed.to_string())
                    .arg("-w")
                    .arg(&raw)
                    .arg(transcript))?;
                let clean = opts.out.join(format!("{base}.wav"));
                let band: &[&str] = if opts.telephone_band {
                    &["highpass", "300", "lowpass", "3400"]
                } else {
                    &[]
                };
                run(Command::new("sox")
                    .arg(&raw)
                    .args(["-r", "8000", "-c", "1", "-b", "16"])
                    .arg(&clean)
                    .args(band)
                    .args(["pad", "0.3", "0.2"]))?;
                let (samples, rate) = read_wav(&clean)?;
                let span = speech_span(&samples, rate).unwrap_or(SpeechSpan {
                    speech_start_ms: 0,
                    speech_end_ms: 0,
                });
                let write_meta = |stem: &str| -> Result<(), CorpusError> {
                    let t = opts.out.join(format!("{stem}.txt"));
                    std::fs::write(&t, format!("{transcript}\n"))
                        .map_err(|e| CorpusError::Io(t, e))?;
                    save_span(&opts.out.join(format!("{stem}.json")), &span)
                };
                write_meta(&base)?;
                n += 1;
                println!(
                    "[{n}/{total}] {base} ({} ms, speech {}-{} ms)",
                    samples.len() as u64 * 1000 / u64::from(rate.max(1)),
                    span.speech_start_ms,
                    span.speech_end_ms
                );
                if opts.snrs.is_empty() {
                    continue;
                }
                let noise_path = tmp.join(format!("{base}.noise.wav"));
                let secs = format!("{:.3}", samples.len() as f64 / f64::from(rate.max(1)));
                run(Command::new("sox")
                    .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
                    .arg(&noise_path)
                    .args(["synth", &secs, "whitenoise", "vol", "0.5"]))?;
                let (noise, _) = read_wav(&noise_path)?;
                for &snr in &opts.snrs {
                    let stem = format!("{base}-snr{}", snr.round() as i64);
                    let mixed = mix_noise(&samples, &span, &noise, snr, rate);
                    write_wav(&opts.out.join(format!("{stem}.wav")), &mixed, rate)?;
                    write_meta(&stem)?;
                    n += 1;
                    println!("[{n}/{total}] {stem}");
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(n)
}

/// The repository's utterance list (`bench/corpus.txt` beside `conf/`).
pub fn default_list() -> PathBuf {
    crate::runtime::default_conf_dir()
        .parent()
        .map(|p| p.join("bench/corpus.txt"))
        .unwrap_or_else(|| PathBuf::from("bench/corpus.txt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: u64, amp: f64) -> Vec<i16> {
        (0..ms * 8)
            .map(|i| (amp * (i as f64 * 0.3).sin()) as i16)
            .collect()
    }

    #[test]
    fn span_finds_speech() {
        let mut s = vec![0i16; 8 * 300];
        s.extend(tone(1000, 8000.0));
        s.extend(vec![0i16; 8 * 500]);
        let sp = speech_span(&s, 8000).expect("speech");
        assert_eq!(sp.speech_start_ms, 300);
        assert_eq!(sp.speech_end_ms, 1300);
        assert!(speech_span(&vec![0i16; 800], 8000).is_none());
    }

    #[test]
    fn noise_mix_hits_snr() {
        let clean = tone(1000, 8000.0);
        let noise: Vec<i16> = (0..8000)
            .map(|i| if i % 2 == 0 { 1000 } else { -1000 })
            .collect();
        let span = SpeechSpan {
            speech_start_ms: 0,
            speech_end_ms: 1000,
        };
        let mixed = mix_noise(&clean, &span, &noise, 10.0, 8000);
        let diff: Vec<i16> = mixed.iter().zip(&clean).map(|(m, c)| m - c).collect();
        let snr = 20.0 * (rms_of(&clean) / rms_of(&diff)).log10();
        assert!((snr - 10.0).abs() < 0.2, "snr {snr}");
    }

    #[test]
    fn list_parsing() {
        let p = Path::new("x");
        let l = parse_list(p, "# c\n\nyes|Yes please\na b|Hi\n").expect("parse");
        assert_eq!(
            l,
            vec![
                ("yes".into(), "Yes please".into()),
                ("a_b".into(), "Hi".into())
            ]
        );
        assert!(parse_list(p, "nobar\n").is_err());
    }

    #[test]
    fn load_computes_json() {
        let d = tempfile::tempdir().expect("tmp");
        let mut s = vec![0i16; 8 * 200];
        s.extend(tone(500, 6000.0));
        write_wav(&d.path().join("a.wav"), &s, 8000).expect("wav");
        std::fs::write(d.path().join("a.txt"), "hello\n").expect("txt");
        let c = load(d.path()).expect("load");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].transcript, "hello");
        assert_eq!(c[0].span.speech_start_ms, 200);
        assert!(d.path().join("a.json").exists());
    }
}
