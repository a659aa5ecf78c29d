//! The local Whisper recognizer (whisper-rs / whisper.cpp), configured in speech.conf:
//!
//! ```text
//! [whisper]
//! type = whisper
//! model = models/ggml-tiny.en.bin   ; install with `voxpbx models install tiny.en`
//! language = en
//! threads = 2            ; threads per inference
//! beam_size = 1          ; 1 = greedy, >1 = beam search
//! endpoint_ms = 500      ; trailing silence that ends an utterance
//! no_input_ms = 5000     ; no speech within this time: DONE without results (0 = never)
//! max_utterance_ms = 15000
//! min_speech_ms = 80     ; voiced audio needed for an onset (barge-in)
//! vad = webrtc
//! vad_aggressiveness = 2
//! pool_size = 2          ; concurrent inferences (one Whisper state each)
//! queue_size = 2         ; utterances that may wait for a free worker; beyond: busy error
//! speculative = yes      ; decode after speculative_ms of silence, keep it if silence holds
//! speculative_ms = 200
//! audio_ctx = auto       ; auto | full | N (encoder window, 50 per second of audio)
//! grammar_threshold = 500; minimum grammar match confidence (0..1000)
//! grammar_prompt = yes   ; prime Whisper with the active grammars' phrases
//! nbest = 3              ; alternatives returned when SPEECH_RESULTS_TYPE is nbest
//! ```
//!
//! Where things happen (LATENCY.md):
//! - `write()` runs on the channel task: G.711/slin decode, webrtc VAD, endpointing, copying
//!   samples into the utterance buffer. Onset sets QUIET at once (barge-in, lever 4).
//! - The model is loaded once per engine; a fixed pool of worker threads each owns one
//!   `WhisperState` (lever 5) and a reusable 8->16 kHz rubato resampler (lever 7). The queue is
//!   bounded: a full pool fails the recognition with a busy error, it never stalls (lever 6).
//! - `audio_ctx` is sized to the utterance, falling back to the full window when that yields
//!   nothing (lever 1). After `speculative_ms` of silence the utterance is decoded speculatively;
//!   speech resuming aborts it, silence reaching the endpoint makes it the result (lever 2).
//!
//! Results: the transcript and a score (mean token probability x 1000). With active grammars
//! the best phrase's tag (or the phrase) becomes the text, the match confidence the score and
//! the grammar name the grammar; a transcript matching nothing is returned raw with no grammar.
//! n-best: whisper.cpp does not expose its beam candidates, so the alternatives are the next
//! best grammar matches (nbest 1, 2, ...); without a grammar n-best holds the transcript only.
//! `SPEECH_ENGINE(transcript)` reads the last raw transcript.

use crate::config::Section;
use crate::media::{Format, Frame};
use crate::speech::engine::{
    Engine, EngineSession, ResultsType, SpeechError, SpeechResult, SpeechShared, SpeechState, SpeechTiming,
};
use crate::speech::grammar::{self, Grammar};
use crate::speech::vad::{EndReason, EndpointConfig, Vad, VadEvent};
use arc_swap::ArcSwapOption;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use rubato::{FftFixedInOut, Resampler};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState};

/// Model used when speech.conf names none (relative to the working directory or the conf).
pub const DEFAULT_MODEL: &str = "models/ggml-tiny.en.bin";
/// Audio kept before the detected speech start (soft word onsets).
const PREROLL_MS: u64 = 200;
/// Audio kept after the last voiced frame.
const TAIL_MS: u64 = 150;
/// whisper.cpp ignores input shorter than 1 s: shorter utterances are padded with silence.
const MIN_SAMPLES_16K: usize = 16_000 + 1_600;
/// Prompt text built from grammar phrases is cut at this length.
const PROMPT_MAX_CHARS: usize = 400;
/// ... and at this many tokens (whisper.cpp allows n_text_ctx / 2).
const PROMPT_MAX_TOKENS: usize = 150;
/// The encoder produces 50 frames per second of audio (320 samples at 16 kHz).
const SAMPLES_PER_CTX: usize = 320;
/// Frames added to the utterance's own when sizing `audio_ctx`.
const AUDIO_CTX_MARGIN: i32 = 64;
const AUDIO_CTX_MIN: i32 = 128;

/// Encoder window size policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCtx {
    /// Sized to the utterance (+ margin), full window when that yields no text.
    Auto,
    /// The model's full 30 s window.
    Full,
    /// A fixed number of encoder frames.
    Fixed(i32),
}

impl AudioCtx {
    pub fn parse(s: &str) -> Result<AudioCtx, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(AudioCtx::Auto),
            "full" | "0" => Ok(AudioCtx::Full),
            v => match v.parse::<i32>() {
                Ok(n) if (32..=1500).contains(&n) => Ok(AudioCtx::Fixed(n)),
                _ => Err(format!("audio_ctx must be auto, full or 32..1500, not '{s}'")),
            },
        }
    }

    /// The `audio_ctx` parameter for `samples` of 16 kHz audio (0 = full window).
    pub fn resolve(self, samples: usize, n_audio_ctx: i32) -> i32 {
        match self {
            AudioCtx::Full => 0,
            AudioCtx::Fixed(n) => n.min(n_audio_ctx),
            AudioCtx::Auto => {
                let frames = samples.div_ceil(SAMPLES_PER_CTX) as i32 + AUDIO_CTX_MARGIN;
                let rounded = (frames + 63) / 64 * 64;
                let n = rounded.max(AUDIO_CTX_MIN);
                if n >= n_audio_ctx {
                    0
                } else {
                    n
                }
            }
        }
    }
}

impl std::fmt::Display for AudioCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AudioCtx::Auto => f.write_str("auto"),
            AudioCtx::Full => f.write_str("full"),
            AudioCtx::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// Engine and per-call settings. Engine-only keys: `model`, `pool_size`, `queue_size`, `vad`.
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperSettings {
    pub model: PathBuf,
    pub language: String,
    pub threads: u32,
    pub beam_size: u32,
    pub endpoint: EndpointConfig,
    pub speculative: bool,
    pub vad_aggressiveness: u8,
    pub pool_size: usize,
    pub queue_size: usize,
    pub audio_ctx: AudioCtx,
    pub grammar_threshold: i32,
    pub grammar_prompt: bool,
    /// Fixed prompt text (overrides the grammar phrases).
    pub prompt: Option<String>,
    pub nbest: usize,
}

impl Default for WhisperSettings {
    fn default() -> Self {
        WhisperSettings {
            model: PathBuf::from(DEFAULT_MODEL),
            language: "en".into(),
            threads: 2,
            beam_size: 1,
            endpoint: EndpointConfig::default(),
            speculative: true,
            vad_aggressiveness: 2,
            pool_size: 2,
            queue_size: 2,
            audio_ctx: AudioCtx::Auto,
            grammar_threshold: 500,
            grammar_prompt: true,
            prompt: None,
            nbest: 3,
        }
    }
}

/// Keys a call may change with `SPEECH_ENGINE(key)=value`.
const SESSION_KEYS: &[&str] = &[
    "language",
    "threads",
    "beam_size",
    "endpoint_ms",
    "no_input_ms",
    "max_utterance_ms",
    "min_speech_ms",
    "speculative",
    "speculative_ms",
    "vad_aggressiveness",
    "audio_ctx",
    "grammar_threshold",
    "grammar_prompt",
    "prompt",
    "nbest",
];
/// Keys only speech.conf sets.
const ENGINE_KEYS: &[&str] = &["model", "pool_size", "queue_size", "vad"];
const NUMERIC_KEYS: &[&str] = &[
    "threads",
    "beam_size",
    "endpoint_ms",
    "no_input_ms",
    "max_utterance_ms",
    "min_speech_ms",
    "speculative_ms",
    "vad_aggressiveness",
    "grammar_threshold",
    "nbest",
    "pool_size",
    "queue_size",
];

fn parse_num<T: std::str::FromStr + PartialOrd + std::fmt::Display>(v: &str, min: T, max: T) -> Result<T, String> {
    match v.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!("expected a number from {min} to {max}, got '{v}'")),
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "y" | "t" | "1" | "on" => Ok(true),
        "no" | "false" | "n" | "f" | "0" | "off" => Ok(false),
        _ => Err(format!("expected yes or no, got '{v}'")),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl WhisperSettings {
    /// Set one key (speech.conf or `SPEECH_ENGINE`). Engine-only keys are accepted here; the
    /// session refuses them.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let v = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "model" => {
                if v.is_empty() {
                    return Err("model path is empty".into());
                }
                self.model = PathBuf::from(v);
            }
            "language" => {
                let l = v.to_ascii_lowercase();
                self.language = if l == "auto" {
                    l
                } else if l.is_empty() || l.contains('\0') {
                    return Err(format!("unknown language '{v}'"));
                } else {
                    // Accepts codes and names ("de", "german"); stored as the code.
                    whisper_rs::get_lang_id(&l)
                        .and_then(whisper_rs::get_lang_str)
                        .ok_or_else(|| format!("unknown language '{v}'"))?
                        .to_string()
                };
            }
            "threads" => self.threads = parse_num(v, 1, 64)?,
            "beam_size" => self.beam_size = parse_num(v, 1, 16)?,
            "endpoint_ms" => self.endpoint.endpoint_ms = parse_num(v, 100, 10_000)?,
            "no_input_ms" => self.endpoint.no_input_ms = parse_num(v, 0, 600_000)?,
            "max_utterance_ms" => self.endpoint.max_utterance_ms = parse_num(v, 0, 60_000)?,
            "min_speech_ms" => self.endpoint.min_speech_ms = parse_num(v, 20, 2_000)?,
            "speculative" => self.speculative = parse_bool(v)?,
            "speculative_ms" => self.endpoint.speculative_ms = parse_num(v, 60, 5_000)?,
            "vad" => match v.to_ascii_lowercase().as_str() {
                "webrtc" => {}
                "silero" => {
                    return Err("vad = silero is not built into this voxpbx; use vad = webrtc".into());
                }
                _ => return Err(format!("unknown vad '{v}' (webrtc)")),
            },
            "vad_aggressiveness" => self.vad_aggressiveness = parse_num(v, 0, 3)?,
            "pool_size" => self.pool_size = parse_num(v, 1, 64)?,
            "queue_size" => self.queue_size = parse_num(v, 1, 1024)?,
            "audio_ctx" => self.audio_ctx = AudioCtx::parse(v)?,
            "grammar_threshold" => self.grammar_threshold = parse_num(v, 0, 1000)?,
            "grammar_prompt" => self.grammar_prompt = parse_bool(v)?,
            "prompt" => {
                self.prompt = if v.is_empty() { None } else { Some(v.replace('\0', " ")) };
            }
            "nbest" => self.nbest = parse_num(v, 1, 20)?,
            other => return Err(format!("unknown setting '{other}'")),
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key.trim().to_ascii_lowercase().as_str() {
            "model" => self.model.display().to_string(),
            "language" => self.language.clone(),
            "threads" => self.threads.to_string(),
            "beam_size" => self.beam_size.to_string(),
            "endpoint_ms" => self.endpoint.endpoint_ms.to_string(),
            "no_input_ms" => self.endpoint.no_input_ms.to_string(),
            "max_utterance_ms" => self.endpoint.max_utterance_ms.to_string(),
            "min_speech_ms" => self.endpoint.min_speech_ms.to_string(),
            "speculative" => yes_no(self.speculative).into(),
            "speculative_ms" => self.endpoint.speculative_ms.to_string(),
            "vad" => "webrtc".into(),
            "vad_aggressiveness" => self.vad_aggressiveness.to_string(),
            "pool_size" => self.pool_size.to_string(),
            "queue_size" => self.queue_size.to_string(),
            "audio_ctx" => self.audio_ctx.to_string(),
            "grammar_threshold" => self.grammar_threshold.to_string(),
            "grammar_prompt" => yes_no(self.grammar_prompt).into(),
            "prompt" => self.prompt.clone().unwrap_or_default(),
            "nbest" => self.nbest.to_string(),
            _ => return None,
        })
    }

    /// Endpointing as the session runs it (`speculative = no` disables the pause event).
    fn endpoint_config(&self) -> EndpointConfig {
        EndpointConfig { speculative_ms: if self.speculative { self.endpoint.speculative_ms } else { 0 }, ..self.endpoint }
    }

    /// Read a speech.conf section (only `get` / `get_parse` are used).
    pub fn from_section(section: &Section) -> Result<WhisperSettings, String> {
        let mut s = WhisperSettings::default();
        if let Some(t) = section.get("type") {
            if !t.trim().eq_ignore_ascii_case("whisper") {
                return Err(format!("[{}] type = {t}: not a whisper engine", section.name));
            }
        }
        for key in ENGINE_KEYS.iter().chain(SESSION_KEYS) {
            let Some(v) = section.get(key) else { continue };
            if NUMERIC_KEYS.contains(key) {
                // For the file:line of a non-numeric value.
                section.get_parse::<i64>(key).map_err(|e| e.to_string())?;
            }
            s.set(key, v).map_err(|e| format!("speech.conf [{}] {key} = {v}: {e}", section.name))?;
        }
        s.model = resolve_model_path(&s.model, section);
        Ok(s)
    }
}

/// A relative model path is looked up in the working directory, then next to the conf file
/// and in its parent (a repo's `conf/speech.conf` finds the repo's `models/`).
fn resolve_model_path(model: &Path, section: &Section) -> PathBuf {
    if model.is_absolute() || model.exists() {
        return model.to_path_buf();
    }
    if let Some(dir) = section.file.parent() {
        for base in [Some(dir), dir.parent()].into_iter().flatten() {
            let p = base.join(model);
            if p.exists() {
                return p;
            }
        }
    }
    model.to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// Audio helpers

/// G.711 µ-law to linear. Private copy so this engine does not depend on media::g711 (being
/// written concurrently); the lead may switch it over.
fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u as i32;
    let mut t = ((u & 0x0F) << 3) + 0x84;
    t <<= (u & 0x70) >> 4;
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// G.711 A-law to linear (private copy, see [`ulaw_to_linear`]).
fn alaw_to_linear(a: u8) -> i16 {
    let a = (a ^ 0x55) as i32;
    let mut t = (a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// Decode a frame's payload into `out` (cleared first). False when the format is not one this
/// engine decodes.
fn decode_frame(format: Format, data: &[u8], out: &mut Vec<i16>) -> bool {
    out.clear();
    match format {
        Format::Ulaw => out.extend(data.iter().map(|&b| ulaw_to_linear(b))),
        Format::Alaw => out.extend(data.iter().map(|&b| alaw_to_linear(b))),
        Format::Slin8 | Format::Slin16 => {
            out.extend(data.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])))
        }
        _ => return false,
    }
    true
}

/// Reusable rubato resampler for whole utterances (8 kHz -> 16 kHz).
struct Upsampler {
    from: usize,
    to: usize,
    r: FftFixedInOut<f32>,
    inb: Vec<Vec<f32>>,
    outb: Vec<Vec<f32>>,
}

impl Upsampler {
    fn new(from: usize, to: usize) -> Result<Upsampler, String> {
        let r = FftFixedInOut::<f32>::new(from, to, 1024, 1).map_err(|e| format!("resampler: {e}"))?;
        let inb = vec![vec![0.0; r.input_frames_max()]];
        let outb = vec![vec![0.0; r.output_frames_max()]];
        Ok(Upsampler { from, to, r, inb, outb })
    }

    /// Resample `input` into `out` (cleared), compensating the filter delay.
    fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), String> {
        self.r.reset();
        out.clear();
        let delay = self.r.output_delay();
        let want = input.len() * self.to / self.from;
        let chunk = self.r.input_frames_next();
        let mut pos = 0;
        while out.len() < delay + want {
            let n = input.len().saturating_sub(pos).min(chunk);
            self.inb[0][..n].copy_from_slice(&input[pos..pos + n]);
            self.inb[0][n..chunk].fill(0.0);
            pos += n;
            let (_, produced) =
                self.r.process_into_buffer(&self.inb, &mut self.outb, None).map_err(|e| format!("resampler: {e}"))?;
            out.extend_from_slice(&self.outb[0][..produced]);
        }
        out.drain(..delay);
        out.truncate(want);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Inference pool

/// What one inference produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// Trimmed transcript ("" when nothing was recognised).
    pub text: String,
    /// Mean token probability x 1000.
    pub score: i32,
    /// Utterance length (before padding).
    pub audio_secs: f64,
    /// Wall time of resampling + inference (+ fallback).
    pub inference_secs: f64,
    /// `audio_ctx` of the decode that produced the text (0 = full window).
    pub audio_ctx: i32,
    /// The sized window gave no text and the full window was used.
    pub fallback: bool,
}

#[derive(Clone)]
struct JobOptions {
    language: String,
    beam_size: u32,
    threads: u32,
    audio_ctx: AudioCtx,
    prompt_tokens: Arc<Vec<i32>>,
}

/// How a session turns a transcript into results.
#[derive(Default)]
struct Mapping {
    grammars: Vec<Arc<Grammar>>,
    threshold: i32,
    nbest: usize,
}

fn map_results(t: &Transcript, m: &Mapping) -> Vec<SpeechResult> {
    if t.text.is_empty() {
        return Vec::new();
    }
    if !m.grammars.is_empty() {
        let refs: Vec<&Grammar> = m.grammars.iter().map(|g| g.as_ref()).collect();
        let matches = grammar::match_grammars(&refs, &t.text, m.threshold, m.nbest.max(1));
        if !matches.is_empty() {
            return matches
                .into_iter()
                .enumerate()
                .map(|(i, mt)| SpeechResult {
                    text: mt.value().to_string(),
                    score: mt.confidence,
                    grammar: Some(mt.grammar),
                    nbest: i as i32,
                })
                .collect();
        }
    }
    vec![SpeechResult { text: t.text.clone(), score: t.score, grammar: None, nbest: 0 }]
}

enum Reply {
    Slot(Arc<JobSlot>),
    Direct(mpsc::Sender<Result<Transcript, SpeechError>>),
}

struct Job {
    pcm: Vec<f32>,
    rate: u32,
    opts: JobOptions,
    cancel: Arc<AtomicBool>,
    reply: Reply,
}

const CANCELLED: &str = "cancelled";

/// One pool thread's resources.
struct Worker {
    state: WhisperState,
    eot: i32,
    n_audio_ctx: i32,
    /// Cancel flag of the job being decoded, read by whisper.cpp's abort callback.
    abort: Arc<ArcSwapOption<AtomicBool>>,
    /// Base parameters per (language, beam size). whisper-rs leaks the language CString and
    /// the abort closure each time they are set, so they are set once here and cloned per job.
    params: HashMap<(String, u32), FullParams<'static, 'static>>,
    up8k: Option<Upsampler>,
    pcm16: Vec<f32>,
}

impl Worker {
    fn base_params(&mut self, language: &str, beam: u32) -> &FullParams<'static, 'static> {
        let abort = self.abort.clone();
        self.params.entry((language.to_string(), beam)).or_insert_with(|| {
            let strategy = if beam > 1 {
                SamplingStrategy::BeamSearch { beam_size: beam as i32, patience: -1.0 }
            } else {
                SamplingStrategy::Greedy { best_of: 1 }
            };
            let mut p = FullParams::new(strategy);
            // whisper.cpp's own static language names: no allocation kept alive by us (the
            // language was validated, and canonicalised to a short code, when it was set).
            let lang: &'static str = if language == "auto" {
                "auto"
            } else {
                whisper_rs::get_lang_id(language).and_then(whisper_rs::get_lang_str).unwrap_or("en")
            };
            p.set_language(Some(lang));
            p.set_translate(false);
            p.set_no_context(true);
            p.set_no_timestamps(true);
            p.set_single_segment(true);
            p.set_print_special(false);
            p.set_print_progress(false);
            p.set_print_realtime(false);
            p.set_print_timestamps(false);
            p.set_suppress_blank(true);
            p.set_suppress_nst(true);
            p.set_temperature(0.0);
            // No temperature fallback re-decodes: they multiply latency on short commands.
            p.set_temperature_inc(0.0);
            p.set_abort_callback_safe(move || abort.load().as_ref().is_some_and(|f| f.load(Ordering::Relaxed)));
            p
        })
    }

    fn decode(&mut self, pcm: &[f32], audio_ctx: i32, opts: &JobOptions, cancel: &Arc<AtomicBool>) -> Result<Transcript, String> {
        let base = self.base_params(&opts.language, opts.beam_size).clone();
        let mut p: FullParams<'static, '_> = base;
        p.set_n_threads(opts.threads as i32);
        p.set_audio_ctx(audio_ctx);
        if !opts.prompt_tokens.is_empty() {
            p.set_tokens(&opts.prompt_tokens);
        }
        self.abort.store(Some(cancel.clone()));
        let r = self.state.full(p, pcm);
        self.abort.store(None);
        if cancel.load(Ordering::Acquire) {
            return Err(CANCELLED.into());
        }
        r.map_err(|e| format!("whisper inference failed: {e}"))?;
        let mut text = String::new();
        let (mut psum, mut pn) = (0.0f64, 0u32);
        for i in 0..self.state.full_n_segments() {
            let Some(seg) = self.state.get_segment(i) else { continue };
            if let Ok(s) = seg.to_str_lossy() {
                text.push_str(&s);
            }
            for k in 0..seg.n_tokens() {
                if let Some(tok) = seg.get_token(k) {
                    if tok.token_id() < self.eot {
                        psum += f64::from(tok.token_probability());
                        pn += 1;
                    }
                }
            }
        }
        let mut text = text.trim().to_string();
        if grammar::normalize(&text).is_empty() {
            // Only annotations such as [BLANK_AUDIO] or punctuation.
            text.clear();
        }
        let score = if pn == 0 || text.is_empty() { 0 } else { ((psum / f64::from(pn)) * 1000.0).round() as i32 };
        Ok(Transcript { text, score: score.clamp(0, 1000), audio_secs: 0.0, inference_secs: 0.0, audio_ctx, fallback: false })
    }

    fn run(&mut self, job: &Job) -> Result<Transcript, String> {
        let t0 = Instant::now();
        let mut pcm16 = std::mem::take(&mut self.pcm16);
        let r = self.run_inner(job, &mut pcm16);
        self.pcm16 = pcm16;
        r.map(|mut t| {
            t.inference_secs = t0.elapsed().as_secs_f64();
            t
        })
    }

    fn run_inner(&mut self, job: &Job, pcm16: &mut Vec<f32>) -> Result<Transcript, String> {
        match job.rate {
            16000 => {
                pcm16.clear();
                pcm16.extend_from_slice(&job.pcm);
            }
            8000 => {
                if self.up8k.is_none() {
                    self.up8k = Some(Upsampler::new(8000, 16000)?);
                }
                if let Some(up) = self.up8k.as_mut() {
                    up.process(&job.pcm, pcm16)?;
                }
            }
            r => return Err(format!("unsupported sample rate {r}")),
        }
        let audio_secs = pcm16.len() as f64 / 16000.0;
        if pcm16.len() < MIN_SAMPLES_16K {
            pcm16.resize(MIN_SAMPLES_16K, 0.0);
        }
        let ctx = job.opts.audio_ctx.resolve(pcm16.len(), self.n_audio_ctx);
        let mut t = self.decode(pcm16, ctx, &job.opts, &job.cancel)?;
        if t.text.is_empty() && ctx != 0 && job.opts.audio_ctx == AudioCtx::Auto {
            t = self.decode(pcm16, 0, &job.opts, &job.cancel)?;
            t.fallback = true;
        }
        t.audio_secs = audio_secs;
        Ok(t)
    }
}

fn worker_loop(mut w: Worker, rx: Arc<Mutex<mpsc::Receiver<Job>>>, running: Arc<AtomicUsize>) {
    loop {
        let job = {
            let guard = rx.lock();
            match guard.recv() {
                Ok(j) => j,
                Err(_) => return, // the engine is gone
            }
        };
        if job.cancel.load(Ordering::Acquire) {
            continue;
        }
        running.fetch_add(1, Ordering::Relaxed);
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run(&job)))
            .unwrap_or_else(|_| Err("whisper inference panicked".into()));
        running.fetch_sub(1, Ordering::Relaxed);
        match job.reply {
            Reply::Direct(tx) => {
                let _ = tx.send(out.map_err(SpeechError::Engine));
            }
            Reply::Slot(slot) => slot.complete(out),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Result delivery to a session

/// Shared between a session and its in-flight jobs.
struct SessionLink {
    shared: Arc<SpeechShared>,
    /// Recognition number; results of an older one are dropped. Held while delivering.
    epoch: Mutex<u64>,
    last_transcript: Mutex<String>,
}

impl SessionLink {
    fn deliver(&self, epoch: u64, out: Result<(Transcript, Vec<SpeechResult>), String>) {
        let cur = self.epoch.lock();
        if *cur != epoch {
            return;
        }
        match out {
            Ok((t, results)) => {
                {
                    let mut g = self.shared.lock();
                    g.timing.audio_secs = t.audio_secs;
                    g.timing.inference_secs = t.inference_secs;
                }
                *self.last_transcript.lock() = t.text;
                // push_results prepends one by one: reversed, the cache reads best first.
                self.shared.push_results(results.into_iter().rev().collect());
            }
            Err(e) => self.shared.fail(e),
        }
    }

    fn partial(&self, epoch: u64, text: &str) {
        let cur = self.epoch.lock();
        if *cur == epoch && !text.is_empty() {
            self.shared.set_partial(text.to_string());
        }
    }
}

enum SlotMode {
    /// Speculative decode running: keep the result until the endpoint.
    Speculative,
    /// Deliver on completion.
    Final,
    /// Speculative result waiting for the endpoint.
    Held(Result<(Transcript, Vec<SpeechResult>), String>),
    /// Delivered or dropped.
    Done,
}

struct JobSlot {
    link: Arc<SessionLink>,
    epoch: u64,
    cancel: Arc<AtomicBool>,
    mapping: Arc<Mapping>,
    mode: Mutex<SlotMode>,
}

impl JobSlot {
    fn complete(&self, out: Result<Transcript, String>) {
        if self.cancel.load(Ordering::Acquire) || matches!(&out, Err(e) if e == CANCELLED) {
            *self.mode.lock() = SlotMode::Done;
            return;
        }
        let out = out.map(|t| {
            let r = map_results(&t, &self.mapping);
            (t, r)
        });
        let speculative = matches!(*self.mode.lock(), SlotMode::Speculative);
        if speculative {
            if let Ok((t, _)) = &out {
                self.link.partial(self.epoch, &t.text);
            }
        }
        let deliver = {
            let mut m = self.mode.lock();
            match std::mem::replace(&mut *m, SlotMode::Done) {
                SlotMode::Speculative => {
                    *m = SlotMode::Held(out);
                    None
                }
                SlotMode::Final => Some(out),
                other => {
                    *m = other;
                    None
                }
            }
        };
        if let Some(out) = deliver {
            self.link.deliver(self.epoch, out);
        }
    }

    /// The endpoint was reached: deliver a held result now, or when the decode finishes.
    fn promote(&self) {
        let held = {
            let mut m = self.mode.lock();
            match std::mem::replace(&mut *m, SlotMode::Done) {
                SlotMode::Speculative => {
                    *m = SlotMode::Final;
                    None
                }
                SlotMode::Held(out) => Some(out),
                other => {
                    *m = other;
                    None
                }
            }
        };
        if let Some(out) = held {
            self.link.deliver(self.epoch, out);
        }
    }

    fn held_results(&self) -> Option<Vec<SpeechResult>> {
        match &*self.mode.lock() {
            SlotMode::Held(Ok((_, r))) => Some(r.clone()),
            _ => None,
        }
    }

    fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }
}

// ---------------------------------------------------------------------------------------------
// Engine

struct Core {
    name: String,
    ctx: WhisperContext,
    settings: WhisperSettings,
    sender: mpsc::SyncSender<Job>,
    running: Arc<AtomicUsize>,
    n_audio_ctx: i32,
    grammar_cache: Mutex<HashMap<PathBuf, (Option<SystemTime>, Arc<Grammar>)>>,
}

impl Core {
    fn submit(&self, job: Job) -> Result<(), SpeechError> {
        match self.sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(_)) => Err(SpeechError::Busy(format!(
                "whisper engine '{}': all {} workers busy and {} utterances queued",
                self.name, self.settings.pool_size, self.settings.queue_size
            ))),
            Err(mpsc::TrySendError::Disconnected(_)) => {
                Err(SpeechError::Engine(format!("whisper engine '{}': worker pool stopped", self.name)))
            }
        }
    }

    /// Parse a grammar file, cached by path and modification time.
    fn load_grammar(&self, name: &str, path: &Path) -> Result<Arc<Grammar>, SpeechError> {
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if let Some((t, g)) = self.grammar_cache.lock().get(path) {
            if *t == mtime && mtime.is_some() && g.name == name {
                return Ok(g.clone());
            }
        }
        let g = Arc::new(Grammar::load(name, path).map_err(|e| SpeechError::Engine(e.to_string()))?);
        let mut cache = self.grammar_cache.lock();
        if cache.len() > 256 {
            cache.clear();
        }
        cache.insert(path.to_path_buf(), (mtime, g.clone()));
        Ok(g)
    }

    fn prompt_tokens(&self, text: &str) -> Arc<Vec<i32>> {
        let text = text.replace('\0', " ");
        let text = text.trim();
        if text.is_empty() {
            return Arc::new(Vec::new());
        }
        // A token is at least one byte, so len + 8 is always enough room (whisper-rs mishandles
        // a too-small buffer).
        let mut toks = self.ctx.tokenize(&format!(" {text}"), text.len() + 8).unwrap_or_default();
        toks.truncate(PROMPT_MAX_TOKENS);
        Arc::new(toks)
    }
}

/// The local Whisper speech engine.
#[derive(Clone)]
pub struct WhisperEngine {
    core: Arc<Core>,
}

impl std::fmt::Debug for WhisperEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperEngine").field("name", &self.core.name).field("settings", &self.core.settings).finish()
    }
}

/// `voxpbx models install NAME` for a model file name `ggml-NAME.bin`.
fn install_hint(model: &Path) -> String {
    let name = model
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("ggml-"))
        .and_then(|n| n.strip_suffix(".bin"))
        .filter(|n| crate::models::find(n).is_some())
        .unwrap_or("tiny.en");
    format!("voxpbx models install {name}")
}

fn check_model_file(model: &Path) -> Result<(), String> {
    use std::io::Read;
    let hint = install_hint(model);
    let meta = std::fs::metadata(model)
        .map_err(|_| format!("whisper model {} not found: install it with `{hint}`", model.display()))?;
    let mut magic = [0u8; 4];
    let ok = meta.is_file()
        && meta.len() > 1 << 20
        && std::fs::File::open(model).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && u32::from_le_bytes(magic) == 0x6767_6d6c;
    if !ok {
        return Err(format!("whisper model {} is not a ggml model (corrupt?): reinstall it with `{hint}`", model.display()));
    }
    Ok(())
}

impl WhisperEngine {
    /// Build the engine from a speech.conf section (`type = whisper`); the section name is the
    /// engine name. Loads the model and starts the worker pool.
    pub fn from_section(section: &Section) -> Result<WhisperEngine, String> {
        let settings = WhisperSettings::from_section(section)?;
        WhisperEngine::new(&section.name, settings)
    }

    pub fn new(name: &str, settings: WhisperSettings) -> Result<WhisperEngine, String> {
        check_model_file(&settings.model)?;
        // Route whisper.cpp's logging away from stderr (no log backend feature: dropped), so a
        // failure is the one line below.
        whisper_rs::install_logging_hooks();
        let ctx = WhisperContext::new_with_params(&settings.model, WhisperContextParameters::default()).map_err(|e| {
            format!(
                "whisper model {} failed to load ({e}; corrupt or incompatible): reinstall it with `{}`",
                settings.model.display(),
                install_hint(&settings.model)
            )
        })?;
        if !ctx.is_multilingual() && settings.language != "en" {
            return Err(format!(
                "whisper model {} is English-only; language = {} needs a multilingual model (voxpbx models install base)",
                settings.model.display(),
                settings.language
            ));
        }
        let eot = ctx.token_eot();
        let n_audio_ctx = ctx.model_n_audio_ctx();
        let (tx, rx) = mpsc::sync_channel::<Job>(settings.queue_size);
        let rx = Arc::new(Mutex::new(rx));
        let running = Arc::new(AtomicUsize::new(0));
        for i in 0..settings.pool_size {
            let state = ctx.create_state().map_err(|e| format!("whisper engine '{name}': cannot create state: {e}"))?;
            let w = Worker {
                state,
                eot,
                n_audio_ctx,
                abort: Arc::new(ArcSwapOption::empty()),
                params: HashMap::new(),
                up8k: None,
                pcm16: Vec::new(),
            };
            let rx = rx.clone();
            let running = running.clone();
            std::thread::Builder::new()
                .name(format!("whisper-{name}-{i}"))
                .spawn(move || worker_loop(w, rx, running))
                .map_err(|e| format!("whisper engine '{name}': cannot start worker thread: {e}"))?;
        }
        Ok(WhisperEngine {
            core: Arc::new(Core {
                name: name.to_string(),
                ctx,
                settings,
                sender: tx,
                running,
                n_audio_ctx,
                grammar_cache: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn settings(&self) -> &WhisperSettings {
        &self.core.settings
    }

    /// Inferences running right now.
    pub fn busy(&self) -> usize {
        self.core.running.load(Ordering::Relaxed)
    }

    /// Transcribe 16 kHz mono audio directly on the pool (the benchmark floor; no PBX, no
    /// grammar): (text, score 0..1000, inference seconds). Blocks the calling thread until the
    /// result is ready; from async code use `spawn_blocking`.
    pub fn transcribe_direct(&self, pcm16k: &[f32]) -> Result<(String, i32, f64), SpeechError> {
        let t = self.transcribe_with(pcm16k, self.core.settings.audio_ctx, None)?;
        Ok((t.text, t.score, t.inference_secs))
    }

    /// [`transcribe_direct`](Self::transcribe_direct) with an explicit window policy and prompt.
    pub fn transcribe_with(&self, pcm16k: &[f32], audio_ctx: AudioCtx, prompt: Option<&str>) -> Result<Transcript, SpeechError> {
        if pcm16k.is_empty() {
            return Err(SpeechError::Engine("no audio".into()));
        }
        let s = &self.core.settings;
        let (tx, rx) = mpsc::channel();
        self.core.submit(Job {
            pcm: pcm16k.to_vec(),
            rate: 16000,
            opts: JobOptions {
                language: s.language.clone(),
                beam_size: s.beam_size,
                threads: s.threads,
                audio_ctx,
                prompt_tokens: self.core.prompt_tokens(prompt.unwrap_or("")),
            },
            cancel: Arc::new(AtomicBool::new(false)),
            reply: Reply::Direct(tx),
        })?;
        rx.recv().map_err(|_| SpeechError::Engine("whisper worker exited".into()))?
    }

    /// A session with its concrete type (tests, benchmarks); `create` boxes the same thing.
    pub fn session(&self, format: Format, shared: Arc<SpeechShared>) -> Result<WhisperSession, SpeechError> {
        if !self.formats().contains(&format) {
            return Err(SpeechError::NoFormat(self.core.name.clone()));
        }
        let settings = self.core.settings.clone();
        let rate = format.rate();
        let vad = Vad::new(rate, settings.vad_aggressiveness, settings.endpoint_config())
            .map_err(|e| SpeechError::Engine(e.to_string()))?;
        let link = Arc::new(SessionLink { shared: shared.clone(), epoch: Mutex::new(0), last_transcript: Mutex::new(String::new()) });
        let mut s = WhisperSession {
            core: self.core.clone(),
            format,
            rate,
            shared,
            link,
            settings,
            vad,
            pcm: Vec::with_capacity(rate as usize / 10),
            audio: Vec::with_capacity(rate as usize * 3),
            audio_start: 0,
            total: 0,
            events: Vec::with_capacity(8),
            active: false,
            grammars: HashMap::new(),
            active_grammars: Vec::new(),
            prompt_tokens: Arc::new(Vec::new()),
            mapping: Arc::new(Mapping::default()),
            results_type: ResultsType::Normal,
            spec: None,
            pending: None,
            epoch: 0,
        };
        s.rebuild();
        Ok(s)
    }
}

impl Engine for WhisperEngine {
    fn name(&self) -> &str {
        &self.core.name
    }

    fn formats(&self) -> Vec<Format> {
        vec![Format::Slin16, Format::Ulaw, Format::Alaw, Format::Slin8]
    }

    fn describe(&self) -> String {
        let s = &self.core.settings;
        format!(
            "{} (whisper) model={} language={} threads={} beam_size={} pool={} busy={} formats=slin16,ulaw,alaw,slin",
            self.core.name,
            s.model.display(),
            s.language,
            s.threads,
            s.beam_size,
            s.pool_size,
            self.busy()
        )
    }

    fn create(&self, format: Format, shared: Arc<SpeechShared>) -> BoxFuture<'_, Result<Box<dyn EngineSession>, SpeechError>> {
        let r = self.session(format, shared).map(|s| Box::new(s) as Box<dyn EngineSession>);
        Box::pin(async move { r })
    }
}

// ---------------------------------------------------------------------------------------------
// Session

/// One speech object's recognizer: VAD and buffering on the channel task, inference on the pool.
pub struct WhisperSession {
    core: Arc<Core>,
    format: Format,
    rate: u32,
    shared: Arc<SpeechShared>,
    link: Arc<SessionLink>,
    settings: WhisperSettings,
    vad: Vad,
    /// Decoded samples of the current frame (reused).
    pcm: Vec<i16>,
    /// Pre-roll while waiting, then the utterance (reused across recognitions).
    audio: Vec<f32>,
    /// Sample index (since start) of `audio[0]`, and samples seen since start.
    audio_start: u64,
    total: u64,
    events: Vec<VadEvent>,
    /// Between `start` and the endpoint / no-input.
    active: bool,
    grammars: HashMap<String, Arc<Grammar>>,
    active_grammars: Vec<String>,
    prompt_tokens: Arc<Vec<i32>>,
    mapping: Arc<Mapping>,
    results_type: ResultsType,
    /// Speculative decode of the current utterance.
    spec: Option<Arc<JobSlot>>,
    /// Final decode in flight.
    pending: Option<Arc<JobSlot>>,
    epoch: u64,
}

impl WhisperSession {
    pub fn format(&self) -> Format {
        self.format
    }

    pub fn settings(&self) -> &WhisperSettings {
        &self.settings
    }

    /// Names of the active grammars, in activation order.
    pub fn active_grammars(&self) -> &[String] {
        &self.active_grammars
    }

    /// Rebuild the prompt tokens and the result mapping after grammar or setting changes.
    fn rebuild(&mut self) {
        let text = match &self.settings.prompt {
            Some(p) => p.clone(),
            None if self.settings.grammar_prompt => {
                let mut t = String::new();
                for name in &self.active_grammars {
                    if let Some(g) = self.grammars.get(name) {
                        let room = PROMPT_MAX_CHARS.saturating_sub(t.len() + 2);
                        let p = g.prompt_text(room);
                        if !p.is_empty() {
                            if !t.is_empty() {
                                t.push_str(", ");
                            }
                            t.push_str(&p);
                        }
                    }
                }
                t
            }
            None => String::new(),
        };
        self.prompt_tokens = self.core.prompt_tokens(&text);
        self.mapping = Arc::new(Mapping {
            grammars: self.active_grammars.iter().filter_map(|n| self.grammars.get(n).cloned()).collect(),
            threshold: self.settings.grammar_threshold,
            nbest: if self.results_type == ResultsType::Nbest { self.settings.nbest } else { 1 },
        });
    }

    fn job_options(&self) -> JobOptions {
        JobOptions {
            language: self.settings.language.clone(),
            beam_size: self.settings.beam_size,
            threads: self.settings.threads,
            audio_ctx: self.settings.audio_ctx,
            prompt_tokens: self.prompt_tokens.clone(),
        }
    }

    /// Cancel in-flight work and move to a new epoch: nothing older can be delivered after this.
    fn cancel_all(&mut self) {
        for s in [self.spec.take(), self.pending.take()].into_iter().flatten() {
            s.cancel();
        }
        let mut e = self.link.epoch.lock();
        *e += 1;
        self.epoch = *e;
    }

    fn ms_to_sample(&self, ms: u64) -> u64 {
        ms * u64::from(self.rate) / 1000
    }

    /// Copy of the utterance `start_ms..end_ms` (+ pre-roll and tail) at the session rate.
    fn snapshot(&self, start_ms: u64, end_ms: u64) -> Vec<f32> {
        let s = self.ms_to_sample(start_ms.saturating_sub(PREROLL_MS)).max(self.audio_start);
        let e = self.ms_to_sample(end_ms + TAIL_MS).min(self.total);
        if e <= s {
            return Vec::new();
        }
        self.audio[(s - self.audio_start) as usize..(e - self.audio_start) as usize].to_vec()
    }

    fn submit(&self, pcm: Vec<f32>, speculative: bool) -> Result<Arc<JobSlot>, SpeechError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let slot = Arc::new(JobSlot {
            link: self.link.clone(),
            epoch: self.epoch,
            cancel: cancel.clone(),
            mapping: self.mapping.clone(),
            mode: Mutex::new(if speculative { SlotMode::Speculative } else { SlotMode::Final }),
        });
        self.core.submit(Job {
            pcm,
            rate: self.rate,
            opts: self.job_options(),
            cancel,
            reply: Reply::Slot(slot.clone()),
        })?;
        Ok(slot)
    }

    fn set_timing(&self, f: impl FnOnce(&mut SpeechTiming)) {
        f(&mut self.shared.lock().timing);
    }

    fn handle(&mut self, ev: VadEvent) {
        match ev {
            VadEvent::Onset { speech_start_ms, .. } => {
                self.shared.set_quiet(Instant::now());
                // Drop the pre-roll before the utterance.
                let keep_from = self.ms_to_sample(speech_start_ms.saturating_sub(PREROLL_MS));
                if keep_from > self.audio_start {
                    let n = ((keep_from - self.audio_start) as usize).min(self.audio.len());
                    self.audio.drain(..n);
                    self.audio_start += n as u64;
                }
            }
            VadEvent::Pause { speech_end_ms } => {
                let start = self.vad.endpointer().speech_start_ms().unwrap_or(0);
                let pcm = self.snapshot(start, speech_end_ms);
                if !pcm.is_empty() {
                    // A busy pool only means no speculation this time.
                    self.spec = self.submit(pcm, true).ok();
                }
            }
            VadEvent::Resume => {
                if let Some(s) = self.spec.take() {
                    s.cancel();
                }
            }
            VadEvent::Endpoint { speech_start_ms, speech_end_ms, reason } => {
                self.active = false;
                let now = Instant::now();
                let silence = self.vad.endpointer().now_ms().saturating_sub(speech_end_ms);
                self.set_timing(|t| {
                    t.speech_end = now.checked_sub(Duration::from_millis(silence)).or(Some(now));
                    t.endpoint = Some(now);
                });
                self.shared.set_state(SpeechState::Wait);
                if let Some(spec) = self.spec.take() {
                    spec.promote();
                    self.pending = Some(spec);
                    return;
                }
                let end = if reason == EndReason::MaxLength { self.vad.endpointer().now_ms() } else { speech_end_ms };
                let pcm = self.snapshot(speech_start_ms, end);
                match self.submit(pcm, false) {
                    Ok(slot) => self.pending = Some(slot),
                    Err(e) => self.shared.fail(e.to_string()),
                }
            }
            VadEvent::NoInput => {
                self.active = false;
                self.shared.set_state(SpeechState::Done);
            }
        }
    }

    /// Keep only the pre-roll window while no speech has started.
    fn trim_preroll(&mut self) {
        let ep = self.vad.endpointer().config();
        let keep_ms = PREROLL_MS + 3 * u64::from(ep.min_speech_ms + ep.onset_gap_ms) + 100;
        let keep = self.ms_to_sample(keep_ms) as usize;
        if self.audio.len() > 2 * keep {
            let n = self.audio.len() - keep;
            self.audio.drain(..n);
            self.audio_start += n as u64;
        }
    }

    fn apply_setting(&mut self, name: &str, value: &str) -> Result<(), SpeechError> {
        let key = name.trim().to_ascii_lowercase();
        if ENGINE_KEYS.contains(&key.as_str()) {
            return Err(SpeechError::Engine(format!("'{key}' can only be set in speech.conf")));
        }
        if !SESSION_KEYS.contains(&key.as_str()) {
            return Err(SpeechError::Engine(format!("unknown whisper setting '{name}'")));
        }
        if key == "language" && value.trim() != "en" && !self.core.ctx.is_multilingual() {
            return Err(SpeechError::Engine("the loaded whisper model is English-only".into()));
        }
        self.settings.set(&key, value).map_err(|e| SpeechError::Engine(format!("{key}: {e}")))?;
        self.vad.endpointer_mut().set_config(self.settings.endpoint_config());
        self.vad
            .set_aggressiveness(self.settings.vad_aggressiveness)
            .map_err(|e| SpeechError::Engine(e.to_string()))?;
        self.rebuild();
        Ok(())
    }
}

impl EngineSession for WhisperSession {
    fn engine_name(&self) -> &str {
        &self.core.name
    }

    fn load_grammar(&mut self, name: &str, path: &Path) -> Result<(), SpeechError> {
        let g = self.core.load_grammar(name, path)?;
        self.grammars.insert(name.to_string(), g);
        if self.active_grammars.iter().any(|n| n == name) {
            self.rebuild();
        }
        Ok(())
    }

    fn unload_grammar(&mut self, name: &str) -> Result<(), SpeechError> {
        if self.grammars.remove(name).is_none() {
            return Err(SpeechError::Engine(format!("grammar '{name}' is not loaded")));
        }
        self.active_grammars.retain(|n| n != name);
        self.rebuild();
        Ok(())
    }

    fn activate_grammar(&mut self, name: &str) -> Result<(), SpeechError> {
        if !self.grammars.contains_key(name) {
            return Err(SpeechError::Engine(format!("grammar '{name}' is not loaded")));
        }
        if !self.active_grammars.iter().any(|n| n == name) {
            self.active_grammars.push(name.to_string());
            self.rebuild();
        }
        Ok(())
    }

    fn deactivate_grammar(&mut self, name: &str) -> Result<(), SpeechError> {
        if !self.active_grammars.iter().any(|n| n == name) {
            return Err(SpeechError::Engine(format!("grammar '{name}' is not active")));
        }
        self.active_grammars.retain(|n| n != name);
        self.rebuild();
        Ok(())
    }

    fn start(&mut self) -> Result<(), SpeechError> {
        self.cancel_all();
        self.vad.reset();
        self.audio.clear();
        self.audio_start = 0;
        self.total = 0;
        self.active = true;
        self.link.last_transcript.lock().clear();
        {
            // Anything a job of the previous epoch wrote before the epoch moved.
            let mut g = self.shared.lock();
            g.results = None;
            g.error = None;
            g.partial = None;
            g.timing = SpeechTiming::default();
        }
        self.shared.set_state(SpeechState::Ready);
        Ok(())
    }

    fn write(&mut self, frame: &Frame) {
        if !self.active || frame.format.rate() != self.rate {
            return;
        }
        if !decode_frame(frame.format, &frame.data, &mut self.pcm) {
            return;
        }
        self.audio.extend(self.pcm.iter().map(|&s| f32::from(s) / 32768.0));
        self.total += self.pcm.len() as u64;
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        self.vad.process(&self.pcm, |e| events.push(e));
        for e in events.drain(..) {
            self.handle(e);
        }
        self.events = events;
        if self.active && !self.vad.endpointer().in_speech() {
            self.trim_preroll();
        }
    }

    fn change<'a>(&'a mut self, name: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), SpeechError>> {
        let r = self.apply_setting(name, value);
        Box::pin(async move { r })
    }

    fn get_setting<'a>(&'a mut self, name: &'a str) -> BoxFuture<'a, Result<String, SpeechError>> {
        let key = name.trim().to_ascii_lowercase();
        let r = match key.as_str() {
            "transcript" => Ok(self.link.last_transcript.lock().clone()),
            "engine" => Ok("whisper".to_string()),
            _ => self.settings.get(&key).ok_or_else(|| SpeechError::Engine(format!("unknown whisper setting '{name}'"))),
        };
        Box::pin(async move { r })
    }

    fn change_results_type(&mut self, t: ResultsType) -> BoxFuture<'_, Result<(), SpeechError>> {
        self.results_type = t;
        self.rebuild();
        Box::pin(async { Ok(()) })
    }

    fn get_results(&mut self) -> BoxFuture<'_, Option<Vec<SpeechResult>>> {
        // Results are pushed when final; what may be asked for here is a speculative result
        // not yet confirmed by the endpoint (SpeechBackground option `p`).
        let r = self.spec.as_ref().and_then(|s| s.held_results());
        Box::pin(async move { r })
    }

    fn destroy(&mut self) -> BoxFuture<'_, ()> {
        self.cancel_all();
        self.active = false;
        Box::pin(async {})
    }
}

impl Drop for WhisperSession {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_decode_known_values() {
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        // Monotonic over the positive µ-law half.
        let v: Vec<i16> = (0x80..=0xFFu8).rev().map(ulaw_to_linear).collect();
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn decode_frames() {
        let mut out = Vec::new();
        assert!(decode_frame(Format::Slin8, &[1, 0, 0xFF, 0xFF, 9], &mut out));
        assert_eq!(out, [1, -1]);
        assert!(decode_frame(Format::Ulaw, &[0xFF, 0x80], &mut out));
        assert_eq!(out, [0, 32124]);
        assert!(!decode_frame(Format::G722, &[0; 10], &mut out));
    }

    #[test]
    fn audio_ctx_sizing() {
        assert_eq!(AudioCtx::Auto.resolve(16000, 1500), 128);
        // 2.6 s -> 130 + 64 = 194 -> 256 (the value measured in models.md).
        assert_eq!(AudioCtx::Auto.resolve(41600, 1500), 256);
        assert_eq!(AudioCtx::Auto.resolve(16000 * 29, 1500), 0);
        assert_eq!(AudioCtx::Full.resolve(16000, 1500), 0);
        assert_eq!(AudioCtx::Fixed(300).resolve(16000, 1500), 300);
        assert_eq!(AudioCtx::parse("auto"), Ok(AudioCtx::Auto));
        assert_eq!(AudioCtx::parse("FULL"), Ok(AudioCtx::Full));
        assert_eq!(AudioCtx::parse("512"), Ok(AudioCtx::Fixed(512)));
        assert!(AudioCtx::parse("5").is_err());
        assert!(AudioCtx::parse("big").is_err());
    }

    #[test]
    fn settings_set_get_and_errors() {
        let mut s = WhisperSettings::default();
        s.set("endpoint_ms", "300").unwrap();
        s.set("speculative", "no").unwrap();
        s.set("beam_size", "4").unwrap();
        s.set("language", "German").unwrap();
        assert_eq!(s.get("endpoint_ms").as_deref(), Some("300"));
        assert_eq!(s.get("speculative").as_deref(), Some("no"));
        assert_eq!(s.get("language").as_deref(), Some("de"));
        assert_eq!(s.endpoint_config().speculative_ms, 0);
        assert!(s.set("endpoint_ms", "abc").is_err());
        assert!(s.set("endpoint_ms", "5").is_err());
        assert!(s.set("vad_aggressiveness", "4").is_err());
        assert!(s.set("language", "klingon").is_err());
        assert!(s.set("speculative", "maybe").is_err());
        assert!(s.set("nonsense", "1").is_err());
        let e = s.set("vad", "silero").unwrap_err();
        assert!(e.contains("not built"), "{e}");
        assert!(s.get("nonsense").is_none());
    }

    fn section(entries: &[(&str, &str)]) -> Section {
        Section {
            name: "whisper".into(),
            is_template: false,
            templates: Vec::new(),
            entries: entries
                .iter()
                .enumerate()
                .map(|(i, (k, v))| crate::config::Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                    op: crate::config::Op::Assign,
                    file: PathBuf::from("speech.conf"),
                    line: i + 2,
                })
                .collect(),
            file: PathBuf::from("speech.conf"),
            line: 1,
        }
    }

    #[test]
    fn settings_from_section() {
        let s = WhisperSettings::from_section(&section(&[
            ("type", "whisper"),
            ("model", "/nonexistent/ggml-base.bin"),
            ("endpoint_ms", "400"),
            ("pool_size", "3"),
            ("speculative", "no"),
            ("audio_ctx", "full"),
        ]))
        .unwrap();
        assert_eq!(s.model, PathBuf::from("/nonexistent/ggml-base.bin"));
        assert_eq!(s.endpoint.endpoint_ms, 400);
        assert_eq!(s.pool_size, 3);
        assert!(!s.speculative);
        assert_eq!(s.audio_ctx, AudioCtx::Full);
        let e = WhisperSettings::from_section(&section(&[("threads", "two")])).unwrap_err();
        assert!(e.contains("speech.conf:2"), "{e}");
        let e = WhisperSettings::from_section(&section(&[("vad", "silero")])).unwrap_err();
        assert!(e.contains("silero"), "{e}");
        assert!(WhisperSettings::from_section(&section(&[("type", "aeap")])).is_err());
    }

    #[test]
    fn missing_and_corrupt_model_is_one_clear_line() {
        let s = WhisperSettings { model: PathBuf::from("/nonexistent/ggml-tiny.en.bin"), ..Default::default() };
        let e = WhisperEngine::new("w", s).unwrap_err();
        assert!(!e.contains('\n'));
        assert!(e.contains("voxpbx models install tiny.en"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ggml-base.bin");
        std::fs::write(&p, vec![7u8; 2 << 20]).unwrap();
        let e = WhisperEngine::new("w", WhisperSettings { model: p.clone(), ..Default::default() }).unwrap_err();
        assert!(e.contains("voxpbx models install base") && e.contains("corrupt"), "{e}");
        // Right magic, garbage after it: whisper.cpp refuses it.
        let mut bytes = 0x6767_6d6cu32.to_le_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(0u8, 2 << 20));
        std::fs::write(&p, bytes).unwrap();
        let e = WhisperEngine::new("w", WhisperSettings { model: p, ..Default::default() }).unwrap_err();
        assert!(!e.contains('\n') && e.contains("voxpbx models install base"), "{e}");
    }

    #[test]
    fn upsampler_length_and_tone() {
        let mut up = Upsampler::new(8000, 16000).unwrap();
        let input: Vec<f32> = (0..8000).map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 8000.0).sin() * 0.5).collect();
        let mut out = Vec::new();
        up.process(&input, &mut out).unwrap();
        assert_eq!(out.len(), 16000);
        // Aligned: the 16 kHz signal at sample 2n matches the input at n (away from the edges).
        for n in (1000..7000).step_by(250) {
            assert!((out[2 * n] - input[n]).abs() < 0.02, "n={n}: {} vs {}", out[2 * n], input[n]);
        }
        // Reuse gives the same output.
        let mut again = Vec::new();
        up.process(&input, &mut again).unwrap();
        assert_eq!(out, again);
    }

    #[test]
    fn results_mapping() {
        let g = Arc::new(Grammar::parse_phrase_list("departments", "sales = sales\nsupport = support\nbilling\n").unwrap());
        let t = Transcript {
            text: "Please connect me to sales.".into(),
            score: 870,
            audio_secs: 1.0,
            inference_secs: 0.1,
            audio_ctx: 128,
            fallback: false,
        };
        let none = Mapping { grammars: vec![], threshold: 500, nbest: 1 };
        assert_eq!(
            map_results(&t, &none),
            vec![SpeechResult { text: t.text.clone(), score: 870, grammar: None, nbest: 0 }]
        );
        let m = Mapping { grammars: vec![g.clone()], threshold: 500, nbest: 1 };
        let r = map_results(&t, &m);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].text.as_str(), r[0].grammar.as_deref()), ("sales", Some("departments")));
        let other = Transcript { text: "what's the weather".into(), ..t.clone() };
        assert_eq!(map_results(&other, &m)[0].grammar, None);
        let nb = Mapping { grammars: vec![g], threshold: 100, nbest: 3 };
        let two = Transcript { text: "sales or billing".into(), ..t.clone() };
        let r = map_results(&two, &nb);
        assert_eq!(r.iter().map(|r| r.nbest).collect::<Vec<_>>(), (0..r.len() as i32).collect::<Vec<_>>());
        assert!(r.len() >= 2);
        assert!(map_results(&Transcript { text: String::new(), ..t }, &m).is_empty());
    }
}
