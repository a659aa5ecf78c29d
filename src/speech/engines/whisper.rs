//! The local Whisper recognizer (whisper-rs / whisper.cpp), configured in speech.conf:
//!
//! ```text
//! [whisper]
//! type = whisper
//! model = ggml-tiny.en.bin   ; in voxpbx.conf's [directories] models; `voxpbx models install tiny.en`
//! language = en
//! threads = 2            ; threads per inference
//! beam_size = 1          ; 1 = greedy, >1 = beam search
//! endpoint_ms = 500      ; trailing silence that ends an utterance
//! no_input_ms = 5000     ; no speech within this time: DONE without results (0 = never)
//! max_utterance_ms = 15000
//! min_speech_ms = 80     ; voiced audio needed for an onset (barge-in)
//! vad = webrtc          ; webrtc | silero (Silero VAD: `voxpbx models install silero`)
//! vad_aggressiveness = 2 ; webrtc: 0..3
//! vad_threshold = 0.5    ; silero: speech probability that starts speech (ends 0.15 below)
//! vad_model = silero_vad.onnx
//! onnxruntime = libonnxruntime.so.1.31.1   ; ORT_DYLIB_PATH overrides it
//! pool_size = 2          ; concurrent inferences (one Whisper state each)
//! queue_size = 2         ; utterances that may wait for a free worker; beyond: busy error
//! speculative = yes      ; decode after speculative_ms of silence, keep it if silence holds
//! speculative_ms = 200
//! audio_ctx = auto       ; auto | full | N (encoder window, 50 per second of audio)
//! grammar_threshold = 500; minimum grammar match confidence (0..1000)
//! grammar_prompt = yes   ; prime Whisper with the active grammars' phrases
//! bandwidth_extension = 1.25 ; 8 kHz calls whose phrases all score below the threshold are
//!                        ; scored again with a 4-8 kHz band synthesised at this level (x each
//!                        ; unvoiced frame's RMS); no / 0 = never
//! phrase_scoring = yes   ; score each phrase of a small active grammar against the audio
//! phrase_threshold = 300 ; minimum phrase score (0..1000)
//! phrase_max = 64        ; grammars with more phrases are matched on the transcript only
//! nbest = 3              ; alternatives returned when SPEECH_RESULTS_TYPE is nbest
//! ```
//!
//! Where things happen (what keeps the time from end of speech to result short):
//! - `write()` runs on the channel task: G.711/slin decode, VAD (webrtc-vad or Silero),
//!   endpointing, copying samples into the utterance buffer. Onset sets QUIET at once (barge-in).
//! - The model is loaded once per engine; a fixed pool of worker threads each owns one
//!   `WhisperState` and a reusable 8->16 kHz rubato resampler. The queue is
//!   bounded: a full pool fails the recognition with a busy error, it never stalls.
//! - `audio_ctx` is sized to the utterance, falling back to the full window when that yields
//!   nothing. After `speculative_ms` of silence the utterance is decoded speculatively;
//!   speech resuming cancels it (skipped if its encoder has not started, discarded otherwise),
//!   silence reaching the endpoint makes it the result.
//!
//! - When no phrase of a small grammar is sure on an 8 kHz call, the utterance is decoded and
//!   scored again with its missing 4-8 kHz band synthesised in unvoiced frames
//!   ([`bwe`](super::bwe)): without it tiny.en hears an 8 kHz "sales" as "Pay on.".
//!
//! Results: the transcript and a score (mean token probability x 1000). With a small active
//! grammar (a menu, up to `phrase_max` phrases) every phrase is also scored against the audio by
//! forced decoding ([`phrases`](super::phrases)), reusing the encoder output of the transcript's
//! decode; the best phrase over `phrase_threshold` is the result (its tag or the phrase as text,
//! the phrase score as score, the grammar name as grammar). Otherwise, and for larger grammars,
//! the transcript is matched to the phrases (only near-verbatim when the phrases were scored);
//! a transcript matching nothing is returned raw with no grammar.
//! n-best (SPEECH_RESULTS_TYPE=nbest): with `beam_size` > 1 the hypotheses whisper.cpp's beam
//! search explores are recorded through its logits callback (it returns only the winner; see
//! [`nbest`](super::nbest)) and up to `nbest` distinct ones are returned, each also mapped to
//! the active grammars. Result 0 is always what a 1-best recognition returns. With greedy
//! decoding (`beam_size = 1`) the alternatives are the transcript's next-best grammar matches.
//! `SPEECH_ENGINE(transcript)` reads the last raw transcript.

use crate::config::Section;
use crate::media::g711::{alaw_to_linear, ulaw_to_linear};
use crate::media::{Format, Frame};
use crate::speech::engine::{
    Engine, EngineSession, ResultsType, SpeechError, SpeechResult, SpeechShared, SpeechState,
    SpeechTiming,
};
use crate::speech::engines::bwe::BandwidthExtender;
use crate::speech::engines::nbest;
use crate::speech::engines::phrases::{PhraseScore, PhraseSet};
use crate::speech::grammar::{self, Grammar};
use crate::speech::silero::{self, SileroModel};
use crate::speech::vad::{EndReason, EndpointConfig, Vad, VadEvent, VadKind};
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use rubato::{FftFixedInOut, Resampler};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

/// Model used when speech.conf names none (relative to the working directory or the conf).
pub const DEFAULT_MODEL: &str = "ggml-tiny.en.bin";
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
/// Frames added to the utterance's own when sizing `audio_ctx`, and the smallest window used:
/// measured with tiny.en on espeak clips, windows under 256 frames make Whisper loop
/// ("Technical support. Technical support. ...") on 1-2 s utterances.
const AUDIO_CTX_MARGIN: i32 = 128;
const AUDIO_CTX_MIN: i32 = 256;
/// Transcript match confidence of a phrase said verbatim (see `map_results`): an exact phrase
/// anywhere in the transcript scores at least this (0.8 for the alignment, up to 0.2 more for
/// covering the whole transcript), a fuzzy look-alike less.
const VERBATIM_MATCH: i32 = 800;
/// Default `bandwidth_extension`: the level of the synthesised 4-8 kHz band against each
/// unvoiced frame's RMS (see [`bwe`](super::bwe)), chosen with `voxpbx bench grammar` (README: "Menu
/// recognition").
const DEFAULT_BWE_GAIN: f32 = 1.25;
/// Default `phrase_threshold`: a phrase whose tokens average this probability (x 1000) or
/// better is taken as what the caller said.
const DEFAULT_PHRASE_THRESHOLD: i32 = 300;

/// Encoder window size policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCtx {
    /// Sized to the utterance (+ margin); the full window when that yields no text or a
    /// repetition loop.
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
                _ => Err(format!(
                    "audio_ctx must be auto, full or 32..1500, not '{s}'"
                )),
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

/// Engine and per-call settings. Engine-only keys: `model`, `pool_size`, `queue_size`, `vad`,
/// `vad_model`, `onnxruntime`.
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperSettings {
    pub model: PathBuf,
    pub language: String,
    pub threads: u32,
    pub beam_size: u32,
    pub endpoint: EndpointConfig,
    pub speculative: bool,
    pub vad_aggressiveness: u8,
    /// Voice activity detector (engine-level).
    pub vad: VadKind,
    /// Silero: the ONNX model and the ONNX Runtime library (`ORT_DYLIB_PATH` overrides it).
    pub vad_model: PathBuf,
    pub onnxruntime: PathBuf,
    /// Silero: speech probability that starts speech (0..=1).
    pub vad_threshold: f32,
    pub pool_size: usize,
    pub queue_size: usize,
    pub audio_ctx: AudioCtx,
    pub grammar_threshold: i32,
    pub grammar_prompt: bool,
    /// Level of the 4-8 kHz band synthesised for 8 kHz audio before inference, x each unvoiced
    /// frame's RMS (0 = off; see [`bwe`](super::bwe)).
    pub bandwidth_extension: f32,
    /// Score every phrase of a small active grammar by forced decoding (see [`phrases`](super::phrases)).
    pub phrase_scoring: bool,
    /// Minimum phrase score (0..1000) for a forced-decoding match.
    pub phrase_threshold: i32,
    /// Active grammars with more phrases than this are matched on the transcript only.
    pub phrase_max: usize,
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
            vad: VadKind::Webrtc,
            vad_model: PathBuf::from(silero::DEFAULT_MODEL),
            onnxruntime: PathBuf::from(silero::DEFAULT_LIBRARY),
            vad_threshold: silero::DEFAULT_THRESHOLD,
            pool_size: 2,
            queue_size: 2,
            audio_ctx: AudioCtx::Auto,
            grammar_threshold: 500,
            grammar_prompt: true,
            bandwidth_extension: DEFAULT_BWE_GAIN,
            phrase_scoring: true,
            phrase_threshold: DEFAULT_PHRASE_THRESHOLD,
            phrase_max: 64,
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
    "vad_threshold",
    "audio_ctx",
    "grammar_threshold",
    "grammar_prompt",
    "bandwidth_extension",
    "phrase_scoring",
    "phrase_threshold",
    "phrase_max",
    "prompt",
    "nbest",
];
/// Keys only speech.conf sets.
const ENGINE_KEYS: &[&str] = &[
    "model",
    "pool_size",
    "queue_size",
    "vad",
    "vad_model",
    "onnxruntime",
];
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
    "phrase_threshold",
    "phrase_max",
    "nbest",
    "pool_size",
    "queue_size",
];

fn parse_num<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    v: &str,
    min: T,
    max: T,
) -> Result<T, String> {
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
                    // Accepts codes and names ("de", "german"); stored as the code. (The hooks
                    // keep whisper.cpp from printing "unknown language" on stderr.)
                    whisper_rs::install_logging_hooks();
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
            "vad" => self.vad = VadKind::parse(v)?,
            "vad_aggressiveness" => self.vad_aggressiveness = parse_num(v, 0, 3)?,
            "vad_threshold" => {
                self.vad_threshold = match v.parse::<f32>() {
                    Ok(t) if (0.0..=1.0).contains(&t) => t,
                    _ => return Err(format!("expected a number from 0.0 to 1.0, got '{v}'")),
                }
            }
            "vad_model" | "onnxruntime" => {
                if v.is_empty() {
                    return Err(format!("{} path is empty", key.trim()));
                }
                if key.trim().eq_ignore_ascii_case("vad_model") {
                    self.vad_model = PathBuf::from(v);
                } else {
                    self.onnxruntime = PathBuf::from(v);
                }
            }
            "pool_size" => self.pool_size = parse_num(v, 1, 64)?,
            "queue_size" => self.queue_size = parse_num(v, 1, 1024)?,
            "audio_ctx" => self.audio_ctx = AudioCtx::parse(v)?,
            "grammar_threshold" => self.grammar_threshold = parse_num(v, 0, 1000)?,
            "grammar_prompt" => self.grammar_prompt = parse_bool(v)?,
            "bandwidth_extension" => {
                self.bandwidth_extension = match (v.parse::<f32>(), parse_bool(v)) {
                    (Ok(g), _) if (0.0..=4.0).contains(&g) => g,
                    (Err(_), Ok(true)) => DEFAULT_BWE_GAIN,
                    (Err(_), Ok(false)) => 0.0,
                    _ => {
                        return Err(format!(
                            "expected yes, no or a level from 0 to 4, got '{v}'"
                        ))
                    }
                }
            }
            "phrase_scoring" => self.phrase_scoring = parse_bool(v)?,
            "phrase_threshold" => self.phrase_threshold = parse_num(v, 0, 1000)?,
            "phrase_max" => self.phrase_max = parse_num(v, 1, 1000)?,
            "prompt" => {
                self.prompt = if v.is_empty() {
                    None
                } else {
                    Some(v.replace('\0', " "))
                };
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
            "vad" => self.vad.to_string(),
            "vad_aggressiveness" => self.vad_aggressiveness.to_string(),
            "vad_threshold" => self.vad_threshold.to_string(),
            "vad_model" => self.vad_model.display().to_string(),
            "onnxruntime" => self.onnxruntime.display().to_string(),
            "pool_size" => self.pool_size.to_string(),
            "queue_size" => self.queue_size.to_string(),
            "audio_ctx" => self.audio_ctx.to_string(),
            "grammar_threshold" => self.grammar_threshold.to_string(),
            "grammar_prompt" => yes_no(self.grammar_prompt).into(),
            "bandwidth_extension" => self.bandwidth_extension.to_string(),
            "phrase_scoring" => yes_no(self.phrase_scoring).into(),
            "phrase_threshold" => self.phrase_threshold.to_string(),
            "phrase_max" => self.phrase_max.to_string(),
            "prompt" => self.prompt.clone().unwrap_or_default(),
            "nbest" => self.nbest.to_string(),
            _ => return None,
        })
    }

    /// Endpointing as the session runs it (`speculative = no` disables the pause event).
    fn endpoint_config(&self) -> EndpointConfig {
        EndpointConfig {
            speculative_ms: if self.speculative {
                self.endpoint.speculative_ms
            } else {
                0
            },
            ..self.endpoint
        }
    }

    /// Read a speech.conf section (only `get` / `get_parse` are used). Relative model paths are
    /// in `models` (voxpbx.conf `[directories] models`).
    pub fn from_section(section: &Section, models: &Path) -> Result<WhisperSettings, String> {
        let mut s = WhisperSettings::default();
        if let Some(t) = section.get("type") {
            if !t.trim().eq_ignore_ascii_case("whisper") {
                return Err(format!(
                    "[{}] type = {t}: not a whisper engine",
                    section.name
                ));
            }
        }
        for key in ENGINE_KEYS.iter().chain(SESSION_KEYS) {
            let Some(v) = section.get(key) else { continue };
            if NUMERIC_KEYS.contains(key) {
                // For the file:line of a non-numeric value.
                section.get_parse::<i64>(key).map_err(|e| e.to_string())?;
            }
            s.set(key, v)
                .map_err(|e| format!("speech.conf [{}] {key} = {v}: {e}", section.name))?;
        }
        for p in [&mut s.model, &mut s.vad_model, &mut s.onnxruntime] {
            if p.is_relative() {
                *p = models.join(&*p);
            }
        }
        Ok(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Audio helpers

/// Decode a frame's payload into `out` (cleared first). False when the format is not one this
/// engine decodes.
fn decode_frame(format: Format, data: &[u8], out: &mut Vec<i16>) -> bool {
    out.clear();
    match format {
        Format::Ulaw => out.extend(data.iter().map(|&b| ulaw_to_linear(b))),
        Format::Alaw => out.extend(data.iter().map(|&b| alaw_to_linear(b))),
        Format::Slin8 | Format::Slin16 => out.extend(
            data.chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]])),
        ),
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
        let r =
            FftFixedInOut::<f32>::new(from, to, 1024, 1).map_err(|e| format!("resampler: {e}"))?;
        let inb = vec![vec![0.0; r.input_frames_max()]];
        let outb = vec![vec![0.0; r.output_frames_max()]];
        Ok(Upsampler {
            from,
            to,
            r,
            inb,
            outb,
        })
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
            let (_, produced) = self
                .r
                .process_into_buffer(&self.inb, &mut self.outb, None)
                .map_err(|e| format!("resampler: {e}"))?;
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
    /// The decode looped ("sales. sales. sales.") and was cut after the first occurrence.
    pub loop_cut: bool,
    /// Other beam-search hypotheses, best first (only when n-best was asked for and
    /// `beam_size` > 1); texts differ from `text` and from each other once normalised.
    pub alternatives: Vec<Alternative>,
    /// Forced-decoding scores of the active grammar's phrases, best first (empty when the
    /// grammar is too large or phrase scoring is off).
    pub phrases: Vec<PhraseScore>,
    /// Text and phrase scores come from the pass with the upper band synthesised.
    pub bandwidth_extended: bool,
}

/// An n-best alternative to a [`Transcript`].
#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    pub text: String,
    /// Mean token probability x 1000, as [`Transcript::score`].
    pub score: i32,
}

#[derive(Clone)]
struct JobOptions {
    language: String,
    beam_size: u32,
    threads: u32,
    audio_ctx: AudioCtx,
    prompt_tokens: Arc<Vec<i32>>,
    /// Beam-search alternatives wanted besides the transcript (0 = none).
    alternatives: usize,
    /// Level of the upper band synthesised for 8 kHz audio (0 = none).
    bandwidth_extension: f32,
    /// The active grammar's phrases to score, and the score below which a branch is dropped.
    phrases: Option<Arc<PhraseSet>>,
    phrase_threshold: i32,
}

/// How a session turns a transcript into results.
#[derive(Default)]
struct Mapping {
    grammars: Vec<Arc<Grammar>>,
    threshold: i32,
    phrase_threshold: i32,
    nbest: usize,
}

/// The results of a transcript. The first is what a normal (1-best) recognition gives: the
/// transcript's best grammar match, or the raw transcript when nothing matches or no grammar is
/// active. With n-best the rest are the other candidates ranked by score, without repeats: the
/// grammar matches of the transcript and of its beam alternatives, and the raw alternatives
/// themselves when the transcript matched no grammar.
fn map_results(t: &Transcript, m: &Mapping) -> Vec<SpeechResult> {
    if t.phrases
        .first()
        .is_some_and(|p| p.score >= m.phrase_threshold)
    {
        return phrase_results(&t.phrases, m);
    }
    if t.text.is_empty() {
        return Vec::new();
    }
    // Every phrase was scored against the audio and none cleared the threshold: only a
    // (near-)verbatim phrase in the transcript is still taken as a match, not a fuzzy one.
    let threshold = if t.phrases.is_empty() {
        m.threshold
    } else {
        m.threshold.max(VERBATIM_MATCH)
    };
    let n = m.nbest.max(1);
    let refs: Vec<&Grammar> = m.grammars.iter().map(|g| g.as_ref()).collect();
    let hyps = std::iter::once((t.text.as_str(), t.score))
        .chain(t.alternatives.iter().map(|a| (a.text.as_str(), a.score)));
    let mut first: Option<SpeechResult> = None;
    let mut rest: Vec<SpeechResult> = Vec::new();
    for (i, (text, score)) in hyps.enumerate() {
        let matches = if refs.is_empty() {
            Vec::new()
        } else {
            grammar::match_grammars(&refs, text, threshold, n)
        };
        let raw =
            matches.is_empty() && (i == 0 || first.as_ref().is_some_and(|f| f.grammar.is_none()));
        let found = matches
            .into_iter()
            .map(|mt| SpeechResult {
                text: mt.value().to_string(),
                score: mt.confidence,
                grammar: Some(mt.grammar),
                nbest: 0,
            })
            .chain(raw.then(|| SpeechResult {
                text: text.to_string(),
                score,
                grammar: None,
                nbest: 0,
            }));
        for r in found {
            if first.is_none() {
                first = Some(r);
            } else if ![first.as_ref()]
                .into_iter()
                .flatten()
                .chain(rest.iter())
                .any(|o| {
                    o.grammar == r.grammar
                        && grammar::normalize(&o.text) == grammar::normalize(&r.text)
                })
            {
                rest.push(r);
            }
        }
    }
    rest.sort_by_key(|r| std::cmp::Reverse(r.score));
    first
        .into_iter()
        .chain(rest)
        .take(n)
        .enumerate()
        .map(|(i, r)| SpeechResult {
            nbest: i as i32,
            ..r
        })
        .collect()
}

/// Results from forced-decoding phrase scores (best first): every phrase over the threshold,
/// one per grammar and value, up to the n-best size.
fn phrase_results(scores: &[PhraseScore], m: &Mapping) -> Vec<SpeechResult> {
    let mut out: Vec<SpeechResult> = Vec::new();
    for s in scores.iter().filter(|s| s.score >= m.phrase_threshold) {
        let (grammar, value) = (&s.phrase.grammar, s.phrase.value());
        if out
            .iter()
            .any(|r| r.grammar.as_ref() == Some(grammar) && r.text == value)
        {
            continue;
        }
        out.push(SpeechResult {
            text: value.to_string(),
            score: s.score,
            grammar: Some(grammar.clone()),
            nbest: out.len() as i32,
        });
        if out.len() == m.nbest.max(1) {
            break;
        }
    }
    out
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
    ctx: Arc<WhisperContext>,
    state: WhisperState,
    eot: i32,
    n_audio_ctx: i32,
    /// Base parameters per (language, beam size), built once and cloned per job (whisper-rs
    /// copies the language into a CString it never frees, so it is set once per worker).
    params: HashMap<(String, u32), FullParams<'static, 'static>>,
    up8k: Option<Upsampler>,
    bwe: BandwidthExtender,
    pcm16: Vec<f32>,
    /// The upsampled audio with the upper band synthesised (the second pass).
    wide: Vec<f32>,
}

impl Worker {
    fn base_params(&mut self, language: &str, beam: u32) -> &FullParams<'static, 'static> {
        self.params
            .entry((language.to_string(), beam))
            .or_insert_with(|| {
                let strategy = if beam > 1 {
                    SamplingStrategy::BeamSearch {
                        beam_size: beam as i32,
                        patience: -1.0,
                    }
                } else {
                    SamplingStrategy::Greedy { best_of: 1 }
                };
                let mut p = FullParams::new(strategy);
                // whisper.cpp's own static language names: no allocation kept alive by us (the
                // language was validated, and canonicalised to a short code, when it was set).
                let lang: &'static str = if language == "auto" {
                    "auto"
                } else {
                    whisper_rs::get_lang_id(language)
                        .and_then(whisper_rs::get_lang_str)
                        .unwrap_or("en")
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
                p
            })
    }

    /// One `whisper_full` run. The second value is true when the output looks like a
    /// repetition loop (it hit the token cap or repeats itself).
    fn decode(
        &mut self,
        pcm: &[f32],
        audio_ctx: i32,
        opts: &JobOptions,
        cancel: &Arc<AtomicBool>,
        max_tokens: i32,
        biased: bool,
    ) -> Result<(Transcript, bool), String> {
        let base = self.base_params(&opts.language, opts.beam_size).clone();
        let mut p: FullParams<'static, '_> = base;
        p.set_n_threads(opts.threads as i32);
        p.set_audio_ctx(audio_ctx);
        p.set_max_tokens(max_tokens);
        if biased && !opts.prompt_tokens.is_empty() {
            p.set_tokens(&opts.prompt_tokens);
        }
        // Cancellation: whisper.cpp asks `encoder_begin` before running the encoder (the bulk
        // of the work on short utterances). whisper-rs 0.16's `set_abort_callback_safe` is not
        // used: its trampoline casts the boxed `dyn FnMut` back to the concrete closure type
        // and crashes.
        // SAFETY: the callback only reads the AtomicBool behind `user_data`; `cancel` (an Arc
        // held by the job) outlives this `full` call, and the params are dropped with it.
        unsafe {
            p.set_start_encoder_callback(Some(encoder_begin));
            p.set_start_encoder_callback_user_data(Arc::as_ptr(cancel) as *mut std::ffi::c_void);
        }
        // n-best: record the hypotheses whisper.cpp's beam search explores (see `nbest`).
        let lattice = (opts.alternatives > 0 && opts.beam_size > 1)
            .then(|| nbest::Lattice::new(self.eot, opts.beam_size as usize));
        if let Some(l) = &lattice {
            // SAFETY: the callback only reads the logits and tokens it is given and calls
            // `Lattice::record` (internally locked) through `user_data`, which points at
            // `lattice`: it outlives this `full` call, and the params are dropped with it.
            unsafe {
                p.set_filter_logits_callback(Some(record_logits));
                p.set_filter_logits_callback_user_data(
                    l as *const nbest::Lattice as *mut std::ffi::c_void,
                );
            }
        }
        let r = self.state.full(p, pcm);
        if cancel.load(Ordering::Acquire) {
            return Err(CANCELLED.into());
        }
        r.map_err(|e| format!("whisper inference failed: {e}"))?;
        let mut text = String::new();
        let (mut psum, mut pn) = (0.0f64, 0u32);
        for i in 0..self.state.full_n_segments() {
            let Some(seg) = self.state.get_segment(i) else {
                continue;
            };
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
        let score = if pn == 0 || text.is_empty() {
            0
        } else {
            ((psum / f64::from(pn)) * 1000.0).round() as i32
        };
        // A loop either runs into the token cap (cut it at its second occurrence) or repeats
        // three times within it.
        let capped = pn as i32 >= max_tokens - 1;
        let cut = loop_cut(&text, if capped { 2 } else { 3 });
        let runaway = capped || cut.is_some();
        let loop_cut = cut.is_some();
        if let Some(c) = cut {
            text = c;
        }
        let alternatives = match &lattice {
            Some(l) if !text.is_empty() => self.alternatives(l, &text, opts.alternatives),
            _ => Vec::new(),
        };
        Ok((
            Transcript {
                text,
                score: score.clamp(0, 1000),
                audio_secs: 0.0,
                inference_secs: 0.0,
                audio_ctx,
                fallback: false,
                loop_cut,
                alternatives,
                phrases: Vec::new(),
                bandwidth_extended: false,
            },
            runaway,
        ))
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
        let samples = pcm16.len();
        let audio_secs = samples as f64 / 16000.0;
        let mut t = self.transcribe(pcm16, audio_secs, job)?;
        if let Some(set) = &job.opts.phrases {
            t.phrases = self.phrases_or_none(set, job)?;
            // No phrase is sure on a narrow-band call: ask again with the upper band given
            // back, and keep whichever pass found the surer phrase. A pass whose phrase is sure
            // is never second-guessed: the extension turns /h/, /t/ and /p/ into /s/ as easily as
            // it restores /s/.
            let best = |t: &Transcript| t.phrases.first().map(|p| p.score).unwrap_or(0);
            let gain = job.opts.bandwidth_extension;
            if best(&t) < job.opts.phrase_threshold && job.rate == 8000 && gain > 0.0 {
                // The upsampled audio before its padding.
                let mut wide = std::mem::take(&mut self.wide);
                wide.clear();
                wide.extend_from_slice(&pcm16[..samples]);
                self.bwe.extend(&job.pcm, &mut wide, gain);
                let t2 = self.transcribe(&mut wide, audio_secs, job);
                self.wide = wide;
                let mut t2 = t2?;
                t2.phrases = self.phrases_or_none(set, job)?;
                if best(&t2) > best(&t) {
                    t2.bandwidth_extended = true;
                    t = t2;
                }
            }
        }
        t.audio_secs = audio_secs;
        Ok(t)
    }

    /// Decode 16 kHz audio (padded here to Whisper's minimum): the sized window, the full
    /// window when that gave nothing usable, without the bias prompt when that gave nothing.
    fn transcribe(
        &mut self,
        pcm16: &mut Vec<f32>,
        audio_secs: f64,
        job: &Job,
    ) -> Result<Transcript, String> {
        if pcm16.len() < MIN_SAMPLES_16K {
            pcm16.resize(MIN_SAMPLES_16K, 0.0);
        }
        let ctx = job.opts.audio_ctx.resolve(pcm16.len(), self.n_audio_ctx);
        let max_tokens = max_tokens_for(audio_secs);
        let (mut t, runaway) = self.decode(pcm16, ctx, &job.opts, &job.cancel, max_tokens, true)?;
        // A loop that could not be cut to something useful, or nothing at all: decode again
        // with the full window (what the model was trained on).
        let useless = t.text.is_empty() || (runaway && !t.loop_cut);
        if useless && ctx != 0 && job.opts.audio_ctx == AudioCtx::Auto {
            t = self
                .decode(pcm16, 0, &job.opts, &job.cancel, max_tokens, true)?
                .0;
            t.fallback = true;
        }
        // A grammar's bias prompt can make a small model emit nothing for speech that is not
        // one of its phrases; the unbiased transcript is still mapped or returned raw.
        if t.text.is_empty() && !job.opts.prompt_tokens.is_empty() {
            t = self
                .decode(pcm16, ctx, &job.opts, &job.cancel, max_tokens, false)?
                .0;
            t.fallback = true;
        }
        Ok(t)
    }

    /// The phrase scores of the audio just decoded; none (after a warning) when the decoder
    /// fails, so the transcript is still mapped.
    fn phrases_or_none(&mut self, set: &PhraseSet, job: &Job) -> Result<Vec<PhraseScore>, String> {
        if job.cancel.load(Ordering::Acquire) {
            return Err(CANCELLED.into());
        }
        Ok(self.score_phrases(set, &job.opts).unwrap_or_else(|e| {
            tracing::warn!("{e}; grammar matched on the transcript only");
            Vec::new()
        }))
    }

    /// Forced decoding of every phrase of `set` against the audio the state last encoded.
    fn score_phrases(
        &mut self,
        set: &PhraseSet,
        opts: &JobOptions,
    ) -> Result<Vec<PhraseScore>, String> {
        let ctx = &self.ctx;
        // The decoder sees what the free decode saw: the grammar's bias prompt, then the task.
        let mut prefix = Vec::with_capacity(opts.prompt_tokens.len() + 5);
        if !opts.prompt_tokens.is_empty() {
            prefix.push(ctx.token_prev());
            prefix.extend_from_slice(&opts.prompt_tokens);
        }
        prefix.push(ctx.token_sot());
        if ctx.is_multilingual() {
            let lang = whisper_rs::get_lang_id(&opts.language).unwrap_or(0);
            prefix.extend([ctx.token_lang(lang), ctx.token_transcribe()]);
        }
        prefix.push(ctx.token_not());
        let state = &mut self.state;
        let threads = opts.threads as usize;
        // whisper-rs returns the logits of the batch's first token, so the last token of a
        // batch must be fed alone (PhraseSet::score does) to read the next token's logits.
        let mut step = |toks: &[i32], n_past: usize| -> Result<Vec<f32>, String> {
            state
                .decode(toks, n_past, threads)
                .map_err(|e| format!("whisper phrase decode failed: {e}"))?;
            state
                .get_logits()
                .map(<[f32]>::to_vec)
                .map_err(|e| format!("whisper phrase decode failed: {e}"))
        };
        set.score(&prefix, self.eot, opts.phrase_threshold, &mut step)
    }
}

impl Worker {
    /// Up to `n` hypotheses of the lattice whose normalised words differ from `best` and from
    /// each other, best first.
    fn alternatives(&self, lattice: &nbest::Lattice, best: &str, n: usize) -> Vec<Alternative> {
        let mut seen = vec![grammar::normalize(best)];
        let mut out = Vec::new();
        for h in lattice.hypotheses() {
            let mut bytes = Vec::new();
            for &tok in &h.tokens {
                if let Ok(b) = self.ctx.token_to_bytes(tok) {
                    bytes.extend_from_slice(b);
                }
            }
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            // Beams that ran into a loop ("pay my bill I want to pay my bill") are cut at the
            // first repeat, which usually makes them a copy of one already listed.
            let text = loop_cut(&text, 2).unwrap_or(text);
            let norm = grammar::normalize(&text);
            if norm.is_empty() || seen.contains(&norm) {
                continue;
            }
            seen.push(norm);
            out.push(Alternative {
                text,
                score: h.score(),
            });
            if out.len() == n {
                break;
            }
        }
        out
    }
}

/// `logits_filter_callback`: hands each decoder step's prefix and logits to the job's
/// [`nbest::Lattice`] (whisper.cpp calls it from its sampling threads).
unsafe extern "C" fn record_logits(
    _ctx: *mut whisper_rs::WhisperSysContext,
    _state: *mut whisper_rs::WhisperSysState,
    tokens: *const whisper_rs::WhisperTokenData,
    n_tokens: std::os::raw::c_int,
    logits: *mut f32,
    user_data: *mut std::ffi::c_void,
) {
    if user_data.is_null() || logits.is_null() {
        return;
    }
    // SAFETY: `user_data` is the job's lattice, alive during `full` (see `Worker::decode`);
    // `tokens` holds `n_tokens` entries and `logits` one value per vocabulary entry, of which
    // `row_len` (end of text + 1) are read.
    let lattice = unsafe { &*(user_data as *const nbest::Lattice) };
    let prefix: Vec<i32> = if tokens.is_null() || n_tokens <= 0 {
        Vec::new()
    } else {
        unsafe { std::slice::from_raw_parts(tokens, n_tokens as usize) }
            .iter()
            .map(|t| t.id)
            .collect()
    };
    let row = unsafe { std::slice::from_raw_parts(logits, lattice.row_len()) };
    lattice.record(&prefix, row);
}

/// `encoder_begin_callback`: false (skip the decode) once the job is cancelled. Generic over
/// the opaque context/state types, which whisper-rs exports only with its `raw-api` feature.
unsafe extern "C" fn encoder_begin<C, S>(
    _ctx: *mut C,
    _state: *mut S,
    user_data: *mut std::ffi::c_void,
) -> bool {
    // SAFETY: `user_data` is `Arc::as_ptr` of the job's cancel flag, alive during the call
    // (see `Worker::decode`).
    let cancel = unsafe { &*(user_data as *const AtomicBool) };
    !cancel.load(Ordering::Acquire)
}

/// Token cap for an utterance: ample for speech (people say well under 7 tokens a second),
/// small enough to stop a repetition loop early.
fn max_tokens_for(audio_secs: f64) -> i32 {
    ((audio_secs * 7.0) as i32 + 12).clamp(20, 220)
}

/// If the transcript repeats a phrase `repeats` times in a row (a decoding loop: "Technical
/// support. Technical support. Technical support."), the text up to the end of its first
/// occurrence; words are compared normalised, the original spelling is kept.
fn loop_cut(text: &str, repeats: usize) -> Option<String> {
    let orig: Vec<&str> = text.split_whitespace().collect();
    let words: Vec<String> = orig
        .iter()
        .map(|w| grammar::normalize(w).join(" "))
        .collect();
    let n = words.len();
    let repeats = repeats.max(2);
    for i in 0..n {
        for len in 1..=(n - i) / repeats {
            let block = &words[i..i + len];
            if block.iter().all(|w| w.is_empty()) {
                continue;
            }
            if (1..repeats).all(|k| &words[i + k * len..i + (k + 1) * len] == block) {
                return Some(orig[..i + len].join(" "));
            }
        }
    }
    None
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
    /// The last final transcript (`SPEECH_ENGINE(transcript)`, diagnostics).
    last: Mutex<Option<Transcript>>,
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
                *self.last.lock() = Some(t);
                // push_results prepends one by one: reversed, the cache reads best first.
                self.shared
                    .push_results(results.into_iter().rev().collect());
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

/// See [`Core::grammar_setup`].
struct GrammarSetup {
    prompt_tokens: Arc<Vec<i32>>,
    phrases: Option<Arc<PhraseSet>>,
    mapping: Arc<Mapping>,
}

/// A parsed grammar file and the modification time it was parsed at.
type CachedGrammar = (Option<SystemTime>, Arc<Grammar>);

struct Core {
    name: String,
    ctx: Arc<WhisperContext>,
    settings: WhisperSettings,
    /// `vad = silero`: the model and its session pool (shared by the engine's sessions).
    silero: Option<Arc<SileroModel>>,
    sender: mpsc::SyncSender<Job>,
    running: Arc<AtomicUsize>,
    grammar_cache: Mutex<HashMap<PathBuf, CachedGrammar>>,
}

impl Core {
    fn submit(&self, job: Job) -> Result<(), SpeechError> {
        match self.sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(_)) => Err(SpeechError::Busy(format!(
                "whisper engine '{}': all {} workers busy and {} utterances queued",
                self.name, self.settings.pool_size, self.settings.queue_size
            ))),
            Err(mpsc::TrySendError::Disconnected(_)) => Err(SpeechError::Engine(format!(
                "whisper engine '{}': worker pool stopped",
                self.name
            ))),
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
        let g =
            Arc::new(Grammar::load(name, path).map_err(|e| SpeechError::Engine(e.to_string()))?);
        let mut cache = self.grammar_cache.lock();
        if cache.len() > 256 {
            cache.clear();
        }
        cache.insert(path.to_path_buf(), (mtime, g.clone()));
        Ok(g)
    }

    /// What active grammars make of a recognition: the bias prompt, the phrases to score and
    /// the result mapping (shared by a session and [`WhisperEngine::transcribe_grammars`]).
    fn grammar_setup(
        &self,
        settings: &WhisperSettings,
        grammars: Vec<Arc<Grammar>>,
        nbest: usize,
    ) -> GrammarSetup {
        let text = match &settings.prompt {
            Some(p) => p.clone(),
            None if settings.grammar_prompt => {
                let mut t = String::new();
                for g in &grammars {
                    let room = PROMPT_MAX_CHARS.saturating_sub(t.len() + 1);
                    let p = g.prompt_text(room);
                    if !p.is_empty() {
                        if !t.is_empty() {
                            t.push(' ');
                        }
                        t.push_str(&p);
                    }
                }
                t
            }
            None => String::new(),
        };
        let phrases = if settings.phrase_scoring {
            PhraseSet::build(&grammars, settings.phrase_max, |s| {
                self.ctx.tokenize(s, s.len() + 8).ok()
            })
            .map(Arc::new)
        } else {
            None
        };
        GrammarSetup {
            prompt_tokens: self.prompt_tokens(&text),
            phrases,
            mapping: Arc::new(Mapping {
                grammars,
                threshold: settings.grammar_threshold,
                phrase_threshold: settings.phrase_threshold,
                nbest,
            }),
        }
    }

    fn prompt_tokens(&self, text: &str) -> Arc<Vec<i32>> {
        let text = text.replace('\0', " ");
        let text = text.trim();
        if text.is_empty() {
            return Arc::new(Vec::new());
        }
        // A token is at least one byte, so len + 8 is always enough room (whisper-rs mishandles
        // a too-small buffer).
        let mut toks = self
            .ctx
            .tokenize(&format!(" {text}"), text.len() + 8)
            .unwrap_or_default();
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
        f.debug_struct("WhisperEngine")
            .field("name", &self.core.name)
            .field("settings", &self.core.settings)
            .finish()
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
    let meta = std::fs::metadata(model).map_err(|_| {
        format!(
            "whisper model {} not found: install it with `{hint}`",
            model.display()
        )
    })?;
    let mut magic = [0u8; 4];
    let ok = meta.is_file()
        && meta.len() > 1 << 20
        && std::fs::File::open(model)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && u32::from_le_bytes(magic) == 0x6767_6d6c;
    if !ok {
        return Err(format!(
            "whisper model {} is not a ggml model (corrupt?): reinstall it with `{hint}`",
            model.display()
        ));
    }
    Ok(())
}

impl WhisperEngine {
    /// Build the engine from a speech.conf section (`type = whisper`); the section name is the
    /// engine name. Loads the model and starts the worker pool.
    pub fn from_section(section: &Section, models: &Path) -> Result<WhisperEngine, String> {
        let settings = WhisperSettings::from_section(section, models)?;
        WhisperEngine::new(&section.name, settings)
    }

    pub fn new(name: &str, settings: WhisperSettings) -> Result<WhisperEngine, String> {
        check_model_file(&settings.model)?;
        let silero = match settings.vad {
            VadKind::Silero => Some(
                SileroModel::load(&settings.vad_model, &settings.onnxruntime)
                    .map_err(|e| format!("whisper engine '{name}': vad = silero: {e}"))?,
            ),
            VadKind::Webrtc => None,
        };
        // Route whisper.cpp's logging away from stderr (no log backend feature: dropped), so a
        // failure is the one line below.
        whisper_rs::install_logging_hooks();
        // ggml's one-time global setup is not safe against two models loading at once.
        static LOAD_LOCK: Mutex<()> = Mutex::new(());
        let _loading = LOAD_LOCK.lock();
        let ctx = WhisperContext::new_with_params(&settings.model, WhisperContextParameters::default()).map_err(|e| {
            format!(
                "whisper model {} failed to load ({e}; corrupt or incompatible): reinstall it with `{}`",
                settings.model.display(),
                install_hint(&settings.model)
            )
        })?;
        let ctx = Arc::new(ctx);
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
            let state = ctx
                .create_state()
                .map_err(|e| format!("whisper engine '{name}': cannot create state: {e}"))?;
            let w = Worker {
                ctx: ctx.clone(),
                state,
                eot,
                n_audio_ctx,
                params: HashMap::new(),
                up8k: None,
                bwe: BandwidthExtender::default(),
                pcm16: Vec::new(),
                wide: Vec::new(),
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
                silero,
                sender: tx,
                running,
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

    /// Transcribe 8 or 16 kHz mono audio directly on the pool, with the engine's settings and
    /// its 8 -> 16 kHz resampler (the benchmark floor; no PBX, no VAD, no grammar). Blocks the
    /// calling thread until the result is ready; from async code use `spawn_blocking`.
    pub fn transcribe_direct(&self, pcm: &[f32], rate: u32) -> Result<Transcript, SpeechError> {
        self.submit_direct(pcm, rate, self.core.settings.audio_ctx, None)
    }

    /// 16 kHz [`transcribe_direct`](Self::transcribe_direct) with an explicit window policy and
    /// prompt.
    pub fn transcribe_with(
        &self,
        pcm16k: &[f32],
        audio_ctx: AudioCtx,
        prompt: Option<&str>,
    ) -> Result<Transcript, SpeechError> {
        self.submit_direct(pcm16k, 16000, audio_ctx, prompt)
    }

    fn submit_direct(
        &self,
        pcm: &[f32],
        rate: u32,
        audio_ctx: AudioCtx,
        prompt: Option<&str>,
    ) -> Result<Transcript, SpeechError> {
        let s = &self.core.settings;
        self.submit_job(
            pcm,
            rate,
            JobOptions {
                language: s.language.clone(),
                beam_size: s.beam_size,
                threads: s.threads,
                audio_ctx,
                prompt_tokens: self.core.prompt_tokens(prompt.unwrap_or("")),
                alternatives: 0,
                bandwidth_extension: s.bandwidth_extension,
                phrases: None,
                phrase_threshold: 0,
            },
        )
    }

    /// One utterance decoded and mapped as a session with `grammars` active does it (bias
    /// prompt, phrase scoring when `phrase_scoring` and the grammars are small enough), without
    /// VAD or endpointing: the grammar benchmark. Blocks like
    /// [`transcribe_direct`](Self::transcribe_direct).
    pub fn transcribe_grammars(
        &self,
        pcm: &[f32],
        rate: u32,
        grammars: &[Arc<Grammar>],
        phrase_scoring: bool,
    ) -> Result<(Transcript, Vec<SpeechResult>), SpeechError> {
        let settings = WhisperSettings {
            phrase_scoring,
            ..self.core.settings.clone()
        };
        let g = self.core.grammar_setup(&settings, grammars.to_vec(), 1);
        let t = self.submit_job(
            pcm,
            rate,
            JobOptions {
                language: settings.language.clone(),
                beam_size: settings.beam_size,
                threads: settings.threads,
                audio_ctx: settings.audio_ctx,
                prompt_tokens: g.prompt_tokens,
                alternatives: 0,
                bandwidth_extension: settings.bandwidth_extension,
                phrases: g.phrases,
                phrase_threshold: settings.phrase_threshold,
            },
        )?;
        let results = map_results(&t, &g.mapping);
        Ok((t, results))
    }

    fn submit_job(
        &self,
        pcm: &[f32],
        rate: u32,
        opts: JobOptions,
    ) -> Result<Transcript, SpeechError> {
        if pcm.is_empty() {
            return Err(SpeechError::Engine("no audio".into()));
        }
        let (tx, rx) = mpsc::channel();
        self.core.submit(Job {
            pcm: pcm.to_vec(),
            rate,
            opts,
            cancel: Arc::new(AtomicBool::new(false)),
            reply: Reply::Direct(tx),
        })?;
        rx.recv()
            .map_err(|_| SpeechError::Engine("whisper worker exited".into()))?
    }

    /// A session with its concrete type (tests, benchmarks); `create` boxes the same thing.
    pub fn session(
        &self,
        format: Format,
        shared: Arc<SpeechShared>,
    ) -> Result<WhisperSession, SpeechError> {
        if !self.formats().contains(&format) {
            return Err(SpeechError::NoFormat(self.core.name.clone()));
        }
        let settings = self.core.settings.clone();
        let rate = format.rate();
        let vad = match &self.core.silero {
            Some(m) => m
                .detector(rate, settings.vad_threshold)
                .map(|d| Vad::silero(d, settings.endpoint_config()))
                .map_err(|e| SpeechError::Engine(e.to_string()))?,
            None => Vad::new(
                rate,
                settings.vad_aggressiveness,
                settings.endpoint_config(),
            )
            .map_err(|e| SpeechError::Engine(e.to_string()))?,
        };
        let link = Arc::new(SessionLink {
            shared: shared.clone(),
            epoch: Mutex::new(0),
            last: Mutex::new(None),
        });
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
            phrases: None,
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

    fn create(
        &self,
        format: Format,
        shared: Arc<SpeechShared>,
    ) -> BoxFuture<'_, Result<Box<dyn EngineSession>, SpeechError>> {
        let r = self
            .session(format, shared)
            .map(|s| Box::new(s) as Box<dyn EngineSession>);
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
    /// The active grammars' phrases, when few enough to score by forced decoding.
    phrases: Option<Arc<PhraseSet>>,
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

    /// Rebuild the prompt tokens, the phrases to score and the result mapping after grammar or
    /// setting changes.
    fn rebuild(&mut self) {
        let grammars = self
            .active_grammars
            .iter()
            .filter_map(|n| self.grammars.get(n).cloned())
            .collect();
        let nbest = if self.results_type == ResultsType::Nbest {
            self.settings.nbest
        } else {
            1
        };
        let g = self.core.grammar_setup(&self.settings, grammars, nbest);
        self.prompt_tokens = g.prompt_tokens;
        self.phrases = g.phrases;
        self.mapping = g.mapping;
    }

    fn job_options(&self) -> JobOptions {
        JobOptions {
            language: self.settings.language.clone(),
            beam_size: self.settings.beam_size,
            threads: self.settings.threads,
            audio_ctx: self.settings.audio_ctx,
            prompt_tokens: self.prompt_tokens.clone(),
            alternatives: if self.results_type == ResultsType::Nbest {
                self.settings.nbest.saturating_sub(1)
            } else {
                0
            },
            bandwidth_extension: self.settings.bandwidth_extension,
            phrases: self.phrases.clone(),
            phrase_threshold: self.settings.phrase_threshold,
        }
    }

    /// Cancel in-flight work and move to a new epoch: nothing older can be delivered after this.
    fn cancel_all(&mut self) {
        for s in [self.spec.take(), self.pending.take()]
            .into_iter()
            .flatten()
        {
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
        let s = self
            .ms_to_sample(start_ms.saturating_sub(PREROLL_MS))
            .max(self.audio_start);
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
            mode: Mutex::new(if speculative {
                SlotMode::Speculative
            } else {
                SlotMode::Final
            }),
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
            VadEvent::Onset {
                speech_start_ms, ..
            } => {
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
            VadEvent::Endpoint {
                speech_start_ms,
                speech_end_ms,
                reason,
            } => {
                self.active = false;
                let now = Instant::now();
                let silence = self.vad.endpointer().now_ms().saturating_sub(speech_end_ms);
                self.set_timing(|t| {
                    t.speech_end = now
                        .checked_sub(Duration::from_millis(silence))
                        .or(Some(now));
                    t.endpoint = Some(now);
                });
                self.shared.set_state(SpeechState::Wait);
                if let Some(spec) = self.spec.take() {
                    spec.promote();
                    self.pending = Some(spec);
                    return;
                }
                let end = if reason == EndReason::MaxLength {
                    self.vad.endpointer().now_ms()
                } else {
                    speech_end_ms
                };
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
            return Err(SpeechError::Engine(format!(
                "'{key}' can only be set in speech.conf"
            )));
        }
        if !SESSION_KEYS.contains(&key.as_str()) {
            return Err(SpeechError::Engine(format!(
                "unknown whisper setting '{name}'"
            )));
        }
        if key == "language" && value.trim() != "en" && !self.core.ctx.is_multilingual() {
            return Err(SpeechError::Engine(
                "the loaded whisper model is English-only".into(),
            ));
        }
        self.settings
            .set(&key, value)
            .map_err(|e| SpeechError::Engine(format!("{key}: {e}")))?;
        self.vad
            .endpointer_mut()
            .set_config(self.settings.endpoint_config());
        self.vad
            .set_aggressiveness(self.settings.vad_aggressiveness)
            .map_err(|e| SpeechError::Engine(e.to_string()))?;
        self.vad
            .set_threshold(self.settings.vad_threshold)
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
            return Err(SpeechError::Engine(format!(
                "grammar '{name}' is not loaded"
            )));
        }
        self.active_grammars.retain(|n| n != name);
        self.rebuild();
        Ok(())
    }

    fn activate_grammar(&mut self, name: &str) -> Result<(), SpeechError> {
        if !self.grammars.contains_key(name) {
            return Err(SpeechError::Engine(format!(
                "grammar '{name}' is not loaded"
            )));
        }
        if !self.active_grammars.iter().any(|n| n == name) {
            self.active_grammars.push(name.to_string());
            self.rebuild();
        }
        Ok(())
    }

    fn deactivate_grammar(&mut self, name: &str) -> Result<(), SpeechError> {
        if !self.active_grammars.iter().any(|n| n == name) {
            return Err(SpeechError::Engine(format!(
                "grammar '{name}' is not active"
            )));
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
        *self.link.last.lock() = None;
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
        self.audio
            .extend(self.pcm.iter().map(|&s| f32::from(s) / 32768.0));
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

    fn change<'a>(
        &'a mut self,
        name: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), SpeechError>> {
        let r = self.apply_setting(name, value);
        Box::pin(async move { r })
    }

    fn get_setting<'a>(&'a mut self, name: &'a str) -> BoxFuture<'a, Result<String, SpeechError>> {
        let key = name.trim().to_ascii_lowercase();
        let r = match key.as_str() {
            "transcript" => Ok(self
                .link
                .last
                .lock()
                .as_ref()
                .map(|t| t.text.clone())
                .unwrap_or_default()),
            "engine" => Ok("whisper".to_string()),
            // voxpbx extension (read-only): where the last utterance's time went, for
            // `voxpbx bench stt` and latency logging.
            "timing" => Ok(timing_string(&self.shared.lock().timing)),
            _ => self
                .settings
                .get(&key)
                .ok_or_else(|| SpeechError::Engine(format!("unknown whisper setting '{name}'"))),
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

/// `SPEECH_ENGINE(timing)`: `wait=MS after=MS inference=MS audio=MS [partial=MS]` for the last
/// utterance: endpointing wait (last voiced audio -> endpoint), endpoint -> DONE, Whisper compute
/// (speculative runs included), utterance audio, and last voiced audio -> first partial
/// (negative when the partial came before the end of speech). Empty when nothing was timed.
pub fn timing_string(t: &SpeechTiming) -> String {
    let ms = |a: Instant, b: Instant| -> i64 {
        if b >= a {
            b.duration_since(a).as_millis() as i64
        } else {
            -(a.duration_since(b).as_millis() as i64)
        }
    };
    let mut out = Vec::new();
    if let (Some(e), Some(p)) = (t.speech_end, t.endpoint) {
        out.push(format!("wait={}", ms(e, p)));
    }
    if let (Some(p), Some(d)) = (t.endpoint, t.done) {
        out.push(format!("after={}", ms(p, d)));
    }
    if t.done.is_some() {
        out.push(format!(
            "inference={}",
            (t.inference_secs * 1000.0).round() as i64
        ));
        out.push(format!("audio={}", (t.audio_secs * 1000.0).round() as i64));
    }
    if let (Some(e), Some(f)) = (t.speech_end, t.first_partial) {
        out.push(format!("partial={}", ms(e, f)));
    }
    out.join(" ")
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
    fn decode_frames() {
        let mut out = Vec::new();
        assert!(decode_frame(
            Format::Slin8,
            &[1, 0, 0xFF, 0xFF, 9],
            &mut out
        ));
        assert_eq!(out, [1, -1]);
        assert!(decode_frame(Format::Ulaw, &[0xFF, 0x80], &mut out));
        assert_eq!(out, [0, 32124]);
        assert!(!decode_frame(Format::G722, &[0; 10], &mut out));
    }

    #[test]
    fn repetition_loops_are_cut() {
        assert_eq!(
            loop_cut(
                "Technical support. Technical support. Technical support.",
                3
            )
            .as_deref(),
            Some("Technical support.")
        );
        assert_eq!(
            loop_cut(
                "Please connect me to Salem. Please connect me to Salem. Please connect me to Sal",
                2
            )
            .as_deref(),
            Some("Please connect me to Salem.")
        );
        assert_eq!(
            loop_cut("so I said no no no", 3).as_deref(),
            Some("so I said no")
        );
        assert_eq!(loop_cut("no no", 3), None);
        assert_eq!(loop_cut("please connect me to sales", 2), None);
        assert_eq!(loop_cut("", 2), None);
        assert_eq!(max_tokens_for(0.5), 20);
        assert_eq!(max_tokens_for(3.0), 33);
        assert_eq!(max_tokens_for(60.0), 220);
    }

    #[test]
    fn audio_ctx_sizing() {
        assert_eq!(AudioCtx::Auto.resolve(16000, 1500), 256);
        // 2.6 s -> 130 + 128 = 258 -> 320; 5 s -> 250 + 128 -> 384.
        assert_eq!(AudioCtx::Auto.resolve(41600, 1500), 320);
        assert_eq!(AudioCtx::Auto.resolve(80000, 1500), 384);
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
    fn timing_string_reports_the_split() {
        assert_eq!(timing_string(&SpeechTiming::default()), "");
        let e = Instant::now();
        let t = SpeechTiming {
            speech_end: Some(e),
            endpoint: Some(e + Duration::from_millis(500)),
            done: Some(e + Duration::from_millis(530)),
            first_partial: Some(e + Duration::from_millis(400)),
            audio_secs: 1.5,
            inference_secs: 0.21,
            ..Default::default()
        };
        assert_eq!(
            timing_string(&t),
            "wait=500 after=30 inference=210 audio=1500 partial=400"
        );
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
        assert!(s.get("nonsense").is_none());
    }

    #[test]
    fn phrase_and_bandwidth_settings() {
        let mut s = WhisperSettings::default();
        assert_eq!(s.get("phrase_scoring").as_deref(), Some("yes"));
        assert_eq!(s.get("phrase_threshold").as_deref(), Some("300"));
        assert_eq!(s.bandwidth_extension, DEFAULT_BWE_GAIN);
        s.set("bandwidth_extension", "1").unwrap();
        assert_eq!(s.bandwidth_extension, 1.0);
        s.set("bandwidth_extension", "no").unwrap();
        assert_eq!(s.get("bandwidth_extension").as_deref(), Some("0"));
        s.set("bandwidth_extension", "yes").unwrap();
        assert_eq!(s.bandwidth_extension, DEFAULT_BWE_GAIN);
        assert!(s.set("bandwidth_extension", "5").is_err());
        assert!(s.set("bandwidth_extension", "loud").is_err());
        assert!(s.set("phrase_threshold", "1001").is_err());
        assert!(s.set("phrase_max", "0").is_err());
        s.set("phrase_scoring", "no").unwrap();
        assert!(!s.phrase_scoring);
    }

    #[test]
    fn vad_settings() {
        let mut s = WhisperSettings::default();
        assert_eq!(s.get("vad").as_deref(), Some("webrtc"));
        assert_eq!(s.get("vad_threshold").as_deref(), Some("0.5"));
        assert_eq!(s.get("vad_model").as_deref(), Some("silero_vad.onnx"));
        assert_eq!(
            s.get("onnxruntime").as_deref(),
            Some("libonnxruntime.so.1.31.1")
        );
        s.set("vad", "Silero").unwrap();
        s.set("vad_threshold", "0.65").unwrap();
        s.set("vad_model", "/opt/vad.onnx").unwrap();
        s.set("onnxruntime", "/opt/libonnxruntime.so").unwrap();
        assert_eq!(s.vad, VadKind::Silero);
        assert_eq!(s.get("vad").as_deref(), Some("silero"));
        assert_eq!(s.get("vad_threshold").as_deref(), Some("0.65"));
        assert_eq!(s.vad_model, PathBuf::from("/opt/vad.onnx"));
        assert_eq!(s.onnxruntime, PathBuf::from("/opt/libonnxruntime.so"));
        s.set("vad", "webrtc").unwrap();
        assert_eq!(s.vad, VadKind::Webrtc);
        let e = s.set("vad", "energy").unwrap_err();
        assert!(
            e.contains("unknown vad 'energy'") && e.contains("silero"),
            "{e}"
        );
        for bad in ["1.5", "-0.1", "half", "", "NaN"] {
            let e = s.set("vad_threshold", bad).unwrap_err();
            assert!(e.contains("0.0 to 1.0"), "{bad}: {e}");
        }
        assert_eq!(s.vad_threshold, 0.65);
        assert!(s.set("vad_model", " ").unwrap_err().contains("empty"));
        assert!(s.set("onnxruntime", "").unwrap_err().contains("empty"));
        // Per call: the threshold yes, the detector and its files no.
        assert!(SESSION_KEYS.contains(&"vad_threshold"));
        for k in ["vad", "vad_model", "onnxruntime"] {
            assert!(
                ENGINE_KEYS.contains(&k) && !SESSION_KEYS.contains(&k),
                "{k}"
            );
        }
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
        let s = WhisperSettings::from_section(
            &section(&[
                ("type", "whisper"),
                ("model", "/nonexistent/ggml-base.bin"),
                ("endpoint_ms", "400"),
                ("pool_size", "3"),
                ("speculative", "no"),
                ("audio_ctx", "full"),
            ]),
            Path::new("/m"),
        )
        .unwrap();
        assert_eq!(s.model, PathBuf::from("/nonexistent/ggml-base.bin"));
        // Relative paths (here the defaults) are in the models directory.
        assert_eq!(s.vad_model, Path::new("/m").join(silero::DEFAULT_MODEL));
        assert_eq!(s.onnxruntime, Path::new("/m").join(silero::DEFAULT_LIBRARY));
        assert_eq!(s.endpoint.endpoint_ms, 400);
        assert_eq!(s.pool_size, 3);
        assert!(!s.speculative);
        assert_eq!(s.audio_ctx, AudioCtx::Full);
        let e = WhisperSettings::from_section(&section(&[("threads", "two")]), Path::new("/m"))
            .unwrap_err();
        assert!(e.contains("speech.conf:2"), "{e}");
        let s = WhisperSettings::from_section(
            &section(&[
                ("vad", "silero"),
                ("vad_threshold", "0.6"),
                ("vad_model", "/nonexistent/vad.onnx"),
            ]),
            Path::new("/m"),
        )
        .unwrap();
        assert_eq!(s.vad, VadKind::Silero);
        assert_eq!(s.vad_threshold, 0.6);
        assert_eq!(s.vad_model, PathBuf::from("/nonexistent/vad.onnx"));
        let e = WhisperSettings::from_section(&section(&[("vad", "rnnoise")]), Path::new("/m"))
            .unwrap_err();
        assert!(e.contains("speech.conf [whisper] vad = rnnoise"), "{e}");
        let e = WhisperSettings::from_section(&section(&[("vad_threshold", "2")]), Path::new("/m"))
            .unwrap_err();
        assert!(
            e.contains("vad_threshold") && e.contains("0.0 to 1.0"),
            "{e}"
        );
        assert!(
            WhisperSettings::from_section(&section(&[("type", "aeap")]), Path::new("/m")).is_err()
        );
    }

    #[test]
    fn missing_and_corrupt_model_is_one_clear_line() {
        let s = WhisperSettings {
            model: PathBuf::from("/nonexistent/ggml-tiny.en.bin"),
            ..Default::default()
        };
        let e = WhisperEngine::new("w", s).unwrap_err();
        assert!(!e.contains('\n'));
        assert!(e.contains("voxpbx models install tiny.en"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ggml-base.bin");
        std::fs::write(&p, vec![7u8; 2 << 20]).unwrap();
        let e = WhisperEngine::new(
            "w",
            WhisperSettings {
                model: p.clone(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.contains("voxpbx models install base") && e.contains("corrupt"),
            "{e}"
        );
        // Right magic, garbage after it: whisper.cpp refuses it.
        let mut bytes = 0x6767_6d6cu32.to_le_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(0u8, 2 << 20));
        std::fs::write(&p, bytes).unwrap();
        let e = WhisperEngine::new(
            "w",
            WhisperSettings {
                model: p,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            !e.contains('\n') && e.contains("voxpbx models install base"),
            "{e}"
        );
    }

    /// `vad = silero` with its files missing: the engine fails to load with one line naming
    /// the file and the install command (needs the whisper model to get that far).
    #[test]
    fn silero_vad_missing_files_fail_engine_load() {
        let model = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(DEFAULT_MODEL);
        if !model.exists() {
            eprintln!("NOTE: {} missing; test skipped", model.display());
            return;
        }
        let s = WhisperSettings {
            model,
            vad: VadKind::Silero,
            vad_model: PathBuf::from("/nonexistent/silero_vad.onnx"),
            pool_size: 1,
            ..Default::default()
        };
        let e = WhisperEngine::new("w", s).unwrap_err();
        assert!(
            !e.contains('\n')
                && e.contains("/nonexistent/silero_vad.onnx")
                && e.contains("voxpbx models install silero"),
            "{e}"
        );
    }

    #[test]
    fn upsampler_length_and_tone() {
        let mut up = Upsampler::new(8000, 16000).unwrap();
        let input: Vec<f32> = (0..8000)
            .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 8000.0).sin() * 0.5)
            .collect();
        let mut out = Vec::new();
        up.process(&input, &mut out).unwrap();
        assert_eq!(out.len(), 16000);
        // Aligned: the 16 kHz signal at sample 2n matches the input at n (away from the edges).
        for n in (1000..7000).step_by(250) {
            assert!(
                (out[2 * n] - input[n]).abs() < 0.02,
                "n={n}: {} vs {}",
                out[2 * n],
                input[n]
            );
        }
        // Reuse gives the same output.
        let mut again = Vec::new();
        up.process(&input, &mut again).unwrap();
        assert_eq!(out, again);
    }

    fn slot(link: &Arc<SessionLink>, speculative: bool) -> Arc<JobSlot> {
        Arc::new(JobSlot {
            link: link.clone(),
            epoch: *link.epoch.lock(),
            cancel: Arc::new(AtomicBool::new(false)),
            mapping: Arc::new(Mapping {
                grammars: vec![],
                threshold: 500,
                phrase_threshold: 300,
                nbest: 1,
            }),
            mode: Mutex::new(if speculative {
                SlotMode::Speculative
            } else {
                SlotMode::Final
            }),
        })
    }

    fn transcript(text: &str) -> Transcript {
        Transcript {
            text: text.into(),
            score: 800,
            audio_secs: 1.5,
            inference_secs: 0.2,
            audio_ctx: 256,
            fallback: false,
            loop_cut: false,
            alternatives: Vec::new(),
            phrases: Vec::new(),
            bandwidth_extended: false,
        }
    }

    fn link() -> Arc<SessionLink> {
        Arc::new(SessionLink {
            shared: SpeechShared::new(),
            epoch: Mutex::new(1),
            last: Mutex::new(None),
        })
    }

    #[test]
    fn speculative_result_held_until_the_endpoint() {
        let l = link();
        let s = slot(&l, true);
        s.complete(Ok(transcript("sales please")));
        // Held: a partial, no results yet.
        assert_eq!(l.shared.lock().partial.as_deref(), Some("sales please"));
        assert_eq!(l.shared.lock().results, None);
        assert_eq!(s.held_results().unwrap()[0].text, "sales please");
        s.promote();
        assert_eq!(l.shared.state(), SpeechState::Done);
        assert_eq!(
            l.shared.lock().results.as_ref().unwrap()[0].text,
            "sales please"
        );
        assert_eq!(l.shared.lock().timing.inference_secs, 0.2);
        assert_eq!(l.last.lock().as_ref().unwrap().text, "sales please");
        // Promoting twice delivers nothing more.
        l.shared.set_results(None);
        s.promote();
        assert_eq!(l.shared.lock().results, None);
    }

    #[test]
    fn endpoint_before_the_speculative_decode_finishes() {
        let l = link();
        let s = slot(&l, true);
        s.promote();
        assert_eq!(l.shared.lock().results, None);
        s.complete(Ok(transcript("billing")));
        assert_eq!(l.shared.state(), SpeechState::Done);
        assert_eq!(l.shared.lock().results.as_ref().unwrap()[0].text, "billing");
        // A final result is not reported as a partial.
        assert_eq!(l.shared.lock().partial, None);
    }

    #[test]
    fn cancelled_or_stale_results_are_dropped() {
        let l = link();
        let s = slot(&l, false);
        s.cancel();
        s.complete(Ok(transcript("sales")));
        assert_eq!(l.shared.state(), SpeechState::NotReady);
        let s = slot(&l, false);
        *l.epoch.lock() += 1; // a new recognition started
        s.complete(Ok(transcript("sales")));
        assert_eq!(l.shared.state(), SpeechState::NotReady);
        assert_eq!(l.shared.lock().results, None);
        let s = slot(&l, false);
        s.complete(Err("whisper inference failed: boom".into()));
        assert_eq!(l.shared.state(), SpeechState::Done);
        assert_eq!(
            l.shared.lock().error.as_deref(),
            Some("whisper inference failed: boom")
        );
    }

    #[test]
    fn nbest_results_cached_best_first() {
        let l = link();
        let g = Arc::new(Grammar::parse_phrase_list("d", "sales\nsupport\nbilling\n").unwrap());
        let s = Arc::new(JobSlot {
            link: l.clone(),
            epoch: 1,
            cancel: Arc::new(AtomicBool::new(false)),
            mapping: Arc::new(Mapping {
                grammars: vec![g],
                threshold: 300,
                phrase_threshold: 300,
                nbest: 3,
            }),
            mode: Mutex::new(SlotMode::Final),
        });
        s.complete(Ok(transcript("sales or support")));
        let r = l.shared.lock().results.clone().unwrap();
        assert_eq!(r.iter().map(|r| r.nbest).collect::<Vec<_>>(), vec![0, 1]);
        assert!(r[0].score >= r[1].score);
    }

    #[test]
    fn results_mapping() {
        let g = Arc::new(
            Grammar::parse_phrase_list(
                "departments",
                "sales = sales\nsupport = support\nbilling\n",
            )
            .unwrap(),
        );
        let t = Transcript {
            text: "Please connect me to sales.".into(),
            score: 870,
            audio_secs: 1.0,
            inference_secs: 0.1,
            audio_ctx: 128,
            fallback: false,
            loop_cut: false,
            alternatives: Vec::new(),
            phrases: Vec::new(),
            bandwidth_extended: false,
        };
        let none = Mapping {
            grammars: vec![],
            threshold: 500,
            phrase_threshold: 300,
            nbest: 1,
        };
        assert_eq!(
            map_results(&t, &none),
            vec![SpeechResult {
                text: t.text.clone(),
                score: 870,
                grammar: None,
                nbest: 0
            }]
        );
        let m = Mapping {
            grammars: vec![g.clone()],
            threshold: 500,
            phrase_threshold: 300,
            nbest: 1,
        };
        let r = map_results(&t, &m);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].text.as_str(), r[0].grammar.as_deref()),
            ("sales", Some("departments"))
        );
        let other = Transcript {
            text: "what's the weather".into(),
            ..t.clone()
        };
        assert_eq!(map_results(&other, &m)[0].grammar, None);
        let nb = Mapping {
            grammars: vec![g],
            threshold: 100,
            phrase_threshold: 300,
            nbest: 3,
        };
        let two = Transcript {
            text: "sales or billing".into(),
            ..t.clone()
        };
        let r = map_results(&two, &nb);
        assert_eq!(
            r.iter().map(|r| r.nbest).collect::<Vec<_>>(),
            (0..r.len() as i32).collect::<Vec<_>>()
        );
        assert!(r.len() >= 2);
        assert!(map_results(
            &Transcript {
                text: String::new(),
                ..t
            },
            &m
        )
        .is_empty());
    }

    /// Tests with the real model (`voxpbx models install tiny.en`) and espeak-ng speech; each
    /// prints a note and passes when the model or the tools are missing.
    mod real_model {
        use super::*;
        use crate::media::Frame;
        use bytes::Bytes;
        use std::process::Command;

        fn model() -> Option<PathBuf> {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models")
                .join(DEFAULT_MODEL);
            if p.exists() {
                Some(p)
            } else {
                eprintln!(
                    "SKIPPED: {} missing (voxpbx models install tiny.en)",
                    p.display()
                );
                None
            }
        }

        /// espeak-ng speech converted by sox: raw 16 kHz s16le or 8 kHz µ-law bytes.
        fn speak(text: &str, ulaw: bool) -> Option<Vec<u8>> {
            let dir = tempfile::tempdir().ok()?;
            let wav = dir.path().join("x.wav");
            let raw = dir.path().join("x.raw");
            let ok = Command::new("espeak-ng")
                .arg("-w")
                .arg(&wav)
                .arg(text)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                eprintln!("SKIPPED: espeak-ng not available");
                return None;
            }
            let mut sox = Command::new("sox");
            sox.arg(&wav);
            if ulaw {
                sox.args(["-r", "8000", "-c", "1", "-e", "mu-law", "-t", "raw"]);
            } else {
                sox.args([
                    "-r",
                    "16000",
                    "-c",
                    "1",
                    "-b",
                    "16",
                    "-e",
                    "signed-integer",
                    "-t",
                    "raw",
                ]);
            }
            if !sox.arg(&raw).output().is_ok_and(|o| o.status.success()) {
                eprintln!("SKIPPED: sox not available");
                return None;
            }
            std::fs::read(&raw).ok()
        }

        fn s16_to_f32(b: &[u8]) -> Vec<f32> {
            b.chunks_exact(2)
                .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0)
                .collect()
        }

        fn engine(tweak: impl FnOnce(&mut WhisperSettings)) -> Option<WhisperEngine> {
            // One worker: tests run in parallel on small machines.
            let mut s = WhisperSettings {
                model: model()?,
                pool_size: 1,
                ..Default::default()
            };
            tweak(&mut s);
            Some(WhisperEngine::new("whisper", s).unwrap())
        }

        fn has_words(text: &str, words: &[&str]) -> bool {
            let t = grammar::normalize(text);
            words.iter().all(|w| t.iter().any(|x| x == w))
        }

        /// Feed µ-law audio (silence, `clips` separated by `gap_ms` of silence, trailing
        /// silence) in 20 ms frames.
        fn feed(
            sess: &mut WhisperSession,
            shared: &SpeechShared,
            clips: &[&[u8]],
            gap_ms: usize,
            tail_ms: usize,
        ) {
            let mut audio = vec![0xFFu8; 8 * 400];
            for (i, c) in clips.iter().enumerate() {
                if i > 0 {
                    audio.extend(std::iter::repeat_n(0xFF, 8 * gap_ms));
                }
                audio.extend_from_slice(c);
            }
            audio.extend(std::iter::repeat_n(0xFF, 8 * tail_ms));
            for (i, f) in audio.chunks(160).enumerate() {
                if shared.state() != SpeechState::Ready {
                    break;
                }
                let mut fr = Frame::new(Format::Ulaw, Bytes::copy_from_slice(f));
                fr.seq = i as u16;
                sess.write(&fr);
            }
        }

        fn wait_done(shared: &SpeechShared) {
            let t0 = Instant::now();
            while shared.state() != SpeechState::Done {
                assert!(
                    t0.elapsed() < Duration::from_secs(300),
                    "no result in 300 s"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        fn departments() -> Grammar {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("grammars/departments.gram");
            Grammar::load("departments", &p).unwrap()
        }

        /// Single menu words spoken by espeak-ng (its default voice, as the README's demo does)
        /// and sent as 8 kHz µ-law come back as the grammar's phrases. tiny.en alone hears
        /// "sales" as "Pay on." on such audio; the bandwidth extension and phrase scoring fix it.
        #[test]
        fn menu_words_at_8khz_come_back_as_grammar_phrases() {
            let Some(e) = engine(|_| {}) else { return };
            // µ-law decoded, with the silence around it a session's utterance has (pre-roll and
            // tail after the endpoint).
            let padded = |raw: &[u8]| -> Vec<f32> {
                let voice = raw.iter().map(|&b| f32::from(ulaw_to_linear(b)) / 32768.0);
                std::iter::repeat_n(0.0, 2400)
                    .chain(voice)
                    .chain(std::iter::repeat_n(0.0, 1600))
                    .collect()
            };
            let g = vec![Arc::new(departments())];
            for word in ["sales", "support", "billing"] {
                let Some(raw) = speak(word, true) else { return };
                let pcm = padded(&raw);
                let (t, r) = e.transcribe_grammars(&pcm, 8000, &g, true).unwrap();
                assert!(!t.phrases.is_empty(), "{word}: phrases were not scored");
                assert_eq!(r.len(), 1, "{word}: {t:?}");
                assert_eq!(r[0].text, word, "{word}: {t:?} {r:?}");
                assert_eq!(r[0].grammar.as_deref(), Some("departments"));
                assert!((1..=1000).contains(&r[0].score), "{r:?}");
            }
            // Something that is none of the phrases is not forced onto one.
            let Some(raw) = speak("what is the weather like today", true) else {
                return;
            };
            let (t, r) = e
                .transcribe_grammars(&padded(&raw), 8000, &g, true)
                .unwrap();
            assert!(r.iter().all(|r| r.grammar.is_none()), "{t:?} {r:?}");
        }

        #[test]
        fn direct_transcription_and_audio_ctx_timing() {
            let Some(e) = engine(|_| {}) else { return };
            let Some(raw) = speak("please connect me to sales", false) else {
                return;
            };
            let pcm = s16_to_f32(&raw);
            let secs = pcm.len() as f64 / 16000.0;
            let Transcript { text, score, .. } = e.transcribe_direct(&pcm, 16000).unwrap();
            assert!(has_words(&text, &["connect"]), "{text:?}");
            assert!((1..=1000).contains(&score));
            let g = departments();
            let mut line = format!("clip {secs:.2} s:");
            for ctx in [AudioCtx::Auto, AudioCtx::Full] {
                let mut runs: Vec<Transcript> = (0..3)
                    .map(|_| e.transcribe_with(&pcm, ctx, None).unwrap())
                    .collect();
                for t in &runs {
                    // tiny.en may hear "sails" with a small window; the grammar still maps it.
                    assert_eq!(
                        g.best_match(&t.text, 500)
                            .map(|m| m.value().to_string())
                            .as_deref(),
                        Some("sales"),
                        "{t:?}"
                    );
                }
                runs.sort_by(|a, b| a.inference_secs.total_cmp(&b.inference_secs));
                line += &format!(
                    " audio_ctx={ctx} ({}) min {:.3} s median {:.3} s {:?};",
                    runs[0].audio_ctx, runs[0].inference_secs, runs[1].inference_secs, runs[0].text
                );
            }
            eprintln!("TIMING {line}");
        }

        /// Latency/accuracy table for the report: `cargo test --lib measure_whisper -- --ignored
        /// --nocapture` (env TEXTS="a|b", PROMPTS="|p1|p2", RUNS=5).
        #[test]
        #[ignore]
        fn measure_whisper() {
            let Some(e) = engine(|_| {}) else { return };
            let texts = std::env::var("TEXTS").unwrap_or("please connect me to sales".into());
            let prompts = std::env::var("PROMPTS").unwrap_or_default();
            let runs: usize = std::env::var("RUNS")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(3);
            for text in texts.split('|') {
                let (Some(wide), Some(ul)) = (speak(text, false), speak(text, true)) else {
                    return;
                };
                let wide = s16_to_f32(&wide);
                let lin: Vec<f32> = ul
                    .iter()
                    .map(|&b| f32::from(ulaw_to_linear(b)) / 32768.0)
                    .collect();
                let mut narrow = Vec::new();
                Upsampler::new(8000, 16000)
                    .unwrap()
                    .process(&lin, &mut narrow)
                    .unwrap();
                for prompt in prompts.split('|') {
                    for (label, pcm) in [("16k", &wide), ("ulaw", &narrow)] {
                        for ctx in [AudioCtx::Auto, AudioCtx::Full] {
                            let mut ts: Vec<Transcript> = (0..runs)
                                .map(|_| e.transcribe_with(pcm, ctx, Some(prompt)).unwrap())
                                .collect();
                            ts.sort_by(|a, b| a.inference_secs.total_cmp(&b.inference_secs));
                            let t = &ts[0];
                            eprintln!(
                                "MEASURE prompt={:<12} {label:4} {:.2}s ctx={ctx:<4}({:4}) min {:.3}s median {:.3}s fallback={} cut={} score={:3} {:?}",
                                format!("{:?}", &prompt[..prompt.len().min(10)]),
                                pcm.len() as f64 / 16000.0,
                                t.audio_ctx,
                                t.inference_secs,
                                ts[ts.len() / 2].inference_secs,
                                t.fallback,
                                t.loop_cut,
                                t.score,
                                t.text
                            );
                        }
                    }
                }
            }
        }

        fn session_with_departments(
            e: &WhisperEngine,
            format: Format,
        ) -> (WhisperSession, Arc<SpeechShared>) {
            let shared = SpeechShared::new();
            let mut sess = e.session(format, shared.clone()).unwrap();
            let grammars = Path::new(env!("CARGO_MANIFEST_DIR")).join("grammars");
            sess.load_grammar("departments", &grammars.join("departments.gram"))
                .unwrap();
            sess.activate_grammar("departments").unwrap();
            assert!(sess.activate_grammar("nope").is_err());
            shared.reset();
            sess.start().unwrap();
            assert_eq!(shared.state(), SpeechState::Ready);
            (sess, shared)
        }

        fn check_department(sess: &WhisperSession, shared: &SpeechShared, want: &str) {
            {
                let g = shared.lock();
                assert!(g.quiet && g.spoke, "barge-in flags");
                assert!(
                    g.timing.onset.is_some()
                        && g.timing.endpoint.is_some()
                        && g.timing.speech_end.is_some()
                );
            }
            wait_done(shared);
            let g = shared.lock();
            assert_eq!(g.error, None);
            let r = g.results.clone().unwrap();
            let t = sess.link.last.lock().clone().unwrap();
            eprintln!("SESSION {:?} {t:?} -> {r:?}", sess.format());
            assert_eq!(r.len(), 1, "{r:?}");
            assert_eq!(r[0].text, want);
            assert_eq!(r[0].grammar.as_deref(), Some("departments"));
            assert!(r[0].score >= 500);
            assert!(g.timing.inference_secs > 0.0 && g.timing.audio_secs > 1.0);
        }

        #[test]
        fn slin16_session_with_grammar_barge_in_and_endpoint() {
            let Some(e) = engine(|_| {}) else { return };
            let Some(raw) = speak("please connect me to sales", false) else {
                return;
            };
            let (mut sess, shared) = session_with_departments(&e, Format::Slin16);
            let mut audio = vec![0u8; 32 * 400];
            audio.extend_from_slice(&raw);
            audio.extend(std::iter::repeat_n(0u8, 32 * 1000));
            for f in audio.chunks(640) {
                if shared.state() != SpeechState::Ready {
                    break;
                }
                sess.write(&Frame::new(Format::Slin16, Bytes::copy_from_slice(f)));
            }
            check_department(&sess, &shared, "sales");
        }

        #[test]
        fn ulaw_session_with_grammar() {
            let Some(e) = engine(|_| {}) else { return };
            let Some(clip) = speak("I need technical support", true) else {
                return;
            };
            let (mut sess, shared) = session_with_departments(&e, Format::Ulaw);
            feed(&mut sess, &shared, &[&clip], 0, 1000);
            check_department(&sess, &shared, "support");
        }

        /// SPEECH_RESULTS_TYPE=nbest with beam search: distinct beam hypotheses after the
        /// transcript, which stays result 0 (the 1-best a normal recognition gives). A clip may
        /// have no distinct alternative; over three clips at least one must.
        #[test]
        fn nbest_beam_alternatives() {
            let Some(e) = engine(|s| {
                s.beam_size = 5;
                s.nbest = 4;
            }) else {
                return;
            };
            let texts = [
                "please connect me to sales",
                "I want to pay my bill",
                "what are your opening hours",
            ];
            let mut clips = Vec::new();
            for t in texts {
                let Some(c) = speak(t, true) else { return };
                clips.push(c);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let run = |ty: ResultsType, clip: &[u8]| -> (Transcript, Vec<SpeechResult>) {
                let shared = SpeechShared::new();
                let mut sess = e.session(Format::Ulaw, shared.clone()).unwrap();
                rt.block_on(sess.change_results_type(ty)).unwrap();
                sess.start().unwrap();
                feed(&mut sess, &shared, &[clip], 0, 1000);
                wait_done(&shared);
                assert_eq!(shared.lock().error, None);
                let r = shared.lock().results.clone().unwrap();
                let t = sess.link.last.lock().clone().unwrap();
                eprintln!("NBEST {ty:?} {:.3} s {t:?} -> {r:?}", t.inference_secs);
                assert_eq!(r[0].text, t.text);
                (t, r)
            };
            let (t, r) = run(ResultsType::Normal, &clips[0]);
            assert_eq!(r.len(), 1);
            assert!(t.alternatives.is_empty());
            let one_best = t.inference_secs;
            let mut with_alternatives = 0;
            let mut secs = 0.0;
            for clip in &clips {
                let (t, r) = run(ResultsType::Nbest, clip);
                secs += t.inference_secs / clips.len() as f64;
                assert!((1..=4).contains(&r.len()), "{r:?}");
                assert_eq!(
                    r.len(),
                    t.alternatives.len() + 1,
                    "no grammar: one result each"
                );
                let norms: Vec<_> = r.iter().map(|r| grammar::normalize(&r.text)).collect();
                for (i, n) in norms.iter().enumerate() {
                    assert!(!n.is_empty() && !norms[..i].contains(n), "{r:?}");
                }
                assert!(r.iter().enumerate().all(|(i, r)| r.nbest == i as i32
                    && (0..=1000).contains(&r.score)
                    && r.grammar.is_none()));
                assert!(r[1..].windows(2).all(|w| w[0].score >= w[1].score));
                with_alternatives += usize::from(r.len() > 1);
            }
            assert!(with_alternatives >= 1, "no clip gave an alternative");
            eprintln!("TIMING n-best beam 5: {secs:.3} s per clip vs 1-best {one_best:.3} s");
        }

        fn wait_partial(shared: &SpeechShared) {
            let t0 = Instant::now();
            while shared.lock().partial.is_none() {
                assert!(
                    t0.elapsed() < Duration::from_secs(300),
                    "no speculative result in 300 s"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        fn write_ulaw(sess: &mut WhisperSession, shared: &SpeechShared, audio: &[u8]) {
            for f in audio.chunks(160) {
                if shared.state() != SpeechState::Ready {
                    break;
                }
                sess.write(&Frame::new(Format::Ulaw, Bytes::copy_from_slice(f)));
            }
        }

        #[test]
        fn speculative_result_is_used_at_the_endpoint() {
            let Some(e) = engine(|_| {}) else { return };
            let Some(clip) = speak("I need technical support", true) else {
                return;
            };
            let shared = SpeechShared::new();
            let mut sess = e.session(Format::Ulaw, shared.clone()).unwrap();
            sess.start().unwrap();
            // 260 ms of silence: the speculative decode starts at 200 ms. Let it finish, as it
            // would while a real caller stays quiet, then reach the 500 ms endpoint.
            feed(&mut sess, &shared, &[&clip], 0, 260);
            wait_partial(&shared);
            assert_eq!(shared.state(), SpeechState::Ready);
            write_ulaw(&mut sess, &shared, &[0xFF; 8 * 300]);
            // DONE at once: the held result is delivered by the endpoint itself.
            assert_eq!(shared.state(), SpeechState::Done);
            let g = shared.lock();
            let r = g.results.clone().unwrap();
            assert!(has_words(&r[0].text, &["technical", "support"]), "{r:?}");
            assert_eq!(g.partial.as_deref(), Some(r[0].text.as_str()));
            assert!(g.timing.first_partial.is_some());
        }

        #[test]
        fn speech_resuming_after_a_pause_drops_the_speculative_result() {
            let Some(e) = engine(|_| {}) else { return };
            let (Some(a), Some(b)) = (
                speak("I need technical support", true),
                speak("and billing please", true),
            ) else {
                return;
            };
            let shared = SpeechShared::new();
            let mut sess = e.session(Format::Ulaw, shared.clone()).unwrap();
            sess.start().unwrap();
            feed(&mut sess, &shared, &[&a], 0, 260);
            wait_partial(&shared);
            let first = shared.lock().partial.clone().unwrap();
            let mut rest = b.clone();
            rest.extend(std::iter::repeat_n(0xFF, 8 * 1000));
            write_ulaw(&mut sess, &shared, &rest);
            wait_done(&shared);
            let g = shared.lock();
            assert_eq!(g.error, None);
            let r = g.results.clone().unwrap();
            eprintln!("RESUME speculative {first:?}, final {r:?}");
            // (tiny.en hears "billing" as "willing" on µ-law espeak.)
            assert!(has_words(&r[0].text, &["support", "please"]), "{r:?}");
            assert!(!has_words(&first, &["please"]));
        }

        #[test]
        fn no_input_and_settings() {
            let Some(e) = engine(|_| {}) else { return };
            let shared = SpeechShared::new();
            let mut sess = e.session(Format::Slin16, shared.clone()).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                sess.change("no_input_ms", "1000").await.unwrap();
                assert_eq!(sess.get_setting("no_input_ms").await.unwrap(), "1000");
                assert!(sess.change("model", "x").await.is_err());
                assert!(
                    sess.change("language", "de").await.is_err(),
                    "tiny.en is English-only"
                );
                assert!(sess.change("bogus", "1").await.is_err());
                assert!(sess.get_setting("bogus").await.is_err());
            });
            sess.start().unwrap();
            let silence = Frame::from_slin(Format::Slin16, &[0i16; 320]);
            for _ in 0..60 {
                if shared.state() != SpeechState::Ready {
                    break;
                }
                sess.write(&silence);
            }
            assert_eq!(shared.state(), SpeechState::Done);
            assert!(shared.lock().results.is_none());
            assert!(!shared.lock().spoke);
            // A new start is READY again.
            sess.start().unwrap();
            assert_eq!(shared.state(), SpeechState::Ready);
        }

        #[test]
        fn full_pool_is_a_busy_error_not_a_stall() {
            let Some(e) = engine(|s| {
                s.pool_size = 1;
                s.queue_size = 1;
                s.speculative = false;
            }) else {
                return;
            };
            let Some(clip) = speak("sales", true) else {
                return;
            };
            // Occupy the worker and the queue with long full-window decodes.
            let long: Vec<f32> = (0..16000 * 25)
                .map(|i| ((i as f32) * 0.05).sin() * 0.3)
                .collect();
            let hogs: Vec<_> = (0..2)
                .map(|i| {
                    let (e, long) = (e.clone(), long.clone());
                    std::thread::sleep(Duration::from_millis(150 * i));
                    std::thread::spawn(move || e.transcribe_with(&long, AudioCtx::Full, None))
                })
                .collect();
            std::thread::sleep(Duration::from_millis(150));
            let r = e.transcribe_direct(&long, 16000);
            assert!(matches!(r, Err(SpeechError::Busy(_))), "{r:?}");
            // A session endpointing now fails with the busy error instead of waiting.
            let shared = SpeechShared::new();
            let mut sess = e.session(Format::Ulaw, shared.clone()).unwrap();
            sess.start().unwrap();
            feed(&mut sess, &shared, &[&clip], 0, 800);
            assert_eq!(shared.state(), SpeechState::Done);
            let err = shared.lock().error.clone().unwrap_or_default();
            assert!(err.contains("busy"), "{err}");
            for h in hogs {
                assert!(h.join().unwrap().is_ok());
            }
        }
    }
}
