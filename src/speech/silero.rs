//! Silero VAD (the `silero_vad.onnx` model of `silero-vad` 6.2.3) run through ONNX Runtime with
//! the `ort` crate: per-chunk speech probability for [`crate::speech::vad::Vad`].
//!
//! - ONNX Runtime is a shared library loaded at run time (`ort`'s `load-dynamic`), once per
//!   process: `ORT_DYLIB_PATH` if set, else the configured path (default
//!   `models/libonnxruntime.so.1.31.1`, taken from the `onnxruntime==1.31.1` wheel by
//!   `voxpbx models install silero`). A library older than 1.31 fails cleanly (ort checks it).
//! - [`SileroModel`] holds the model bytes and a small pool of idle ORT sessions: creating a
//!   session costs milliseconds, so a recognizer session takes one when it is created and gives
//!   it back when it is dropped. Sessions run with one intra-op thread, inline on the caller's
//!   (the channel media task's) thread: ~0.2 ms per 32 ms chunk, no I/O.
//! - [`SileroDetector`] keeps the model's recurrent state and the 64 (16 kHz) / 32 (8 kHz)
//!   samples of context between chunks of 512 / 256 new samples, and turns probabilities into
//!   voiced decisions with hysteresis like silero's own `VADIterator`: speech starts at
//!   `threshold` (0.5) and ends below `threshold - 0.15` (0.35).
//!
//! Every failure (missing model or library, old library, a file that is not the Silero model)
//! is one line that names the file and `voxpbx models install silero`; nothing here panics on
//! bad files.

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Model used when speech.conf names none.
pub const DEFAULT_MODEL: &str = "silero_vad.onnx";
/// ONNX Runtime library used when neither `ORT_DYLIB_PATH` nor speech.conf names one.
pub const DEFAULT_LIBRARY: &str = "libonnxruntime.so.1.31.1";
/// Speech probability at which speech starts (silero's default).
pub const DEFAULT_THRESHOLD: f32 = 0.5;
/// Hysteresis: speech ends below `threshold - HYSTERESIS`.
pub const HYSTERESIS: f32 = 0.15;
/// Audio per model step, at both rates.
pub const CHUNK_MS: u32 = 32;
/// Idle sessions kept for reuse; more are dropped when returned.
pub const MAX_IDLE_SESSIONS: usize = 32;
const INSTALL: &str = "install it with `voxpbx models install silero`";
/// Recurrent state: [2, batch 1, 128].
const STATE_LEN: usize = 2 * 128;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SileroError {
    /// Loading the library or the model failed (one line, with the install hint).
    #[error("{0}")]
    Load(String),
    #[error("Silero VAD supports 8000 and 16000 Hz audio, not {0} Hz")]
    UnsupportedRate(u32),
    #[error("Silero VAD threshold must be from 0.0 to 1.0, not {0}")]
    BadThreshold(f32),
    #[error("Silero VAD inference failed: {0}")]
    Inference(String),
}

/// One line out of a possibly multi-line library message.
fn one_line(s: impl std::fmt::Display) -> String {
    s.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ONNX Runtime library to load: `ORT_DYLIB_PATH` when set, else `configured`.
pub fn library_path(configured: &Path) -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => configured.to_path_buf(),
    }
}

/// The process's ONNX Runtime environment (ort allows one per process) and the library it came
/// from. Failed attempts are not remembered: a later call with a good path may succeed.
static RUNTIME: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// Load ONNX Runtime from `library` (once per process; later calls return the same environment,
/// whatever path they name, since a process can hold one ONNX Runtime).
pub fn runtime(library: &Path) -> Result<Environment, SileroError> {
    let mut guard = RUNTIME.lock();
    if let Some((loaded, env)) = guard.as_ref() {
        if loaded != library {
            tracing::debug!(
                "ONNX Runtime already loaded from {}; ignoring {}",
                loaded.display(),
                library.display()
            );
        }
        return Ok(env.clone());
    }
    let (abs, built) = load_runtime(library)?;
    *guard = Some((abs, built.clone()));
    Ok(built)
}

/// Load the library and build the environment (no caching; see [`runtime`]).
fn load_runtime(library: &Path) -> Result<(PathBuf, Environment), SileroError> {
    let meta = std::fs::metadata(library).map_err(|_| {
        SileroError::Load(format!(
            "ONNX Runtime library {} not found: {INSTALL} (or set onnxruntime / ORT_DYLIB_PATH)",
            library.display()
        ))
    })?;
    if !meta.is_file() {
        return Err(SileroError::Load(format!(
            "ONNX Runtime library {} is not a file: {INSTALL}",
            library.display()
        )));
    }
    // ort resolves a relative path against the executable's directory first; hand it an
    // absolute one so the working directory (or the conf's) is what counts.
    let abs = std::fs::canonicalize(library).unwrap_or_else(|_| library.to_path_buf());
    let fail = |e: String| {
        SileroError::Load(format!(
            "ONNX Runtime library {} cannot be used ({e}): {INSTALL}",
            library.display()
        ))
    };
    // ort reports load problems as errors; the catch is for its internal `expect`s on a library
    // that passed the version check but misbehaves.
    let built = std::panic::catch_unwind(|| -> Result<Environment, String> {
        ort::init_from(&abs)
            .map_err(one_line)?
            .with_name("voxpbx")
            .with_telemetry(false)
            .build()
            .map_err(one_line)
    })
    .map_err(|_| fail("the library panicked while loading".into()))?
    .map_err(fail)?;
    Ok((abs, built))
}

/// A loaded Silero model and its pool of idle sessions (one model per engine; cheap to share).
pub struct SileroModel {
    path: PathBuf,
    bytes: Vec<u8>,
    env: Environment,
    idle: Mutex<Vec<Session>>,
}

impl std::fmt::Debug for SileroModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroModel")
            .field("path", &self.path)
            .field("idle", &self.idle.lock().len())
            .finish()
    }
}

/// Samples per step and of context at `rate`.
fn geometry(rate: u32) -> Result<(usize, usize), SileroError> {
    match rate {
        8000 => Ok((256, 32)),
        16000 => Ok((512, 64)),
        r => Err(SileroError::UnsupportedRate(r)),
    }
}

fn check_threshold(t: f32) -> Result<f32, SileroError> {
    if (0.0..=1.0).contains(&t) {
        Ok(t)
    } else {
        Err(SileroError::BadThreshold(t))
    }
}

impl SileroModel {
    /// Load ONNX Runtime (see [`runtime`]; `library` before `ORT_DYLIB_PATH` is applied, see
    /// [`library_path`]) and the model at `model`, and check that it is the Silero VAD: one
    /// session is created and run on silence at both rates. The session stays in the pool.
    pub fn load(model: &Path, library: &Path) -> Result<Arc<SileroModel>, SileroError> {
        let bytes = std::fs::read(model).map_err(|e| {
            let what = if e.kind() == std::io::ErrorKind::NotFound {
                "not found".to_string()
            } else {
                one_line(e)
            };
            SileroError::Load(format!(
                "Silero VAD model {} {what}: {INSTALL}",
                model.display()
            ))
        })?;
        let env = runtime(&library_path(library))?;
        let m = Arc::new(SileroModel {
            path: model.to_path_buf(),
            bytes,
            env,
            idle: Mutex::new(Vec::new()),
        });
        let bad = |e: String| {
            SileroError::Load(format!(
                "Silero VAD model {} is not usable ({e}; corrupt or not silero_vad.onnx): reinstall it with `voxpbx models install silero`",
                model.display()
            ))
        };
        let session = m.new_session().map_err(|e| bad(e.to_string()))?;
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        if names != ["input", "state", "sr"] || session.outputs().len() < 2 {
            return Err(bad(format!(
                "inputs {names:?}, {} outputs; expected input, state, sr and 2 outputs",
                session.outputs().len()
            )));
        }
        m.idle.lock().push(session);
        for rate in [8000, 16000] {
            let mut d = m
                .detector(rate, DEFAULT_THRESHOLD)
                .map_err(|e| bad(e.to_string()))?;
            let p = d
                .probability(&vec![0; d.chunk_len()])
                .map_err(|e| bad(e.to_string()))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(bad(format!("probability {p} on silence")));
            }
        }
        Ok(m)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sessions waiting in the pool.
    pub fn idle_sessions(&self) -> usize {
        self.idle.lock().len()
    }

    fn new_session(&self) -> Result<Session, SileroError> {
        let e = |e: ort::Error<_>| SileroError::Load(one_line(e));
        Session::builder(&self.env)
            .map_err(|e| SileroError::Load(one_line(e)))?
            .with_intra_threads(1)
            .map_err(e)?
            .with_inter_threads(1)
            .map_err(e)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(e)?
            .commit_from_memory(&self.bytes)
            .map_err(|e| SileroError::Load(one_line(e)))
    }

    /// A detector for `rate` (8000 or 16000) with a pooled session (a new one when the pool is
    /// empty). Its state starts reset.
    pub fn detector(
        self: &Arc<Self>,
        rate: u32,
        threshold: f32,
    ) -> Result<SileroDetector, SileroError> {
        let (chunk, context) = geometry(rate)?;
        let threshold = check_threshold(threshold)?;
        let pooled = self.idle.lock().pop();
        let session = match pooled {
            Some(s) => s,
            None => self.new_session()?,
        };
        Ok(SileroDetector {
            model: self.clone(),
            session: Some(session),
            rate,
            chunk,
            context,
            input: vec![0.0; context + chunk],
            state: vec![0.0; STATE_LEN],
            sr: [i64::from(rate)],
            threshold,
            triggered: false,
            last: 0.0,
            errors: 0,
        })
    }

    fn give_back(&self, s: Session) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE_SESSIONS {
            idle.push(s);
        }
    }
}

/// One stream's Silero detector: recurrent state, context and hysteresis.
pub struct SileroDetector {
    model: Arc<SileroModel>,
    /// Always `Some` until drop (then returned to the pool).
    session: Option<Session>,
    rate: u32,
    /// New samples per step, and context samples carried from the previous step.
    chunk: usize,
    context: usize,
    /// `context` samples of the previous step followed by the new chunk (model input, reused).
    input: Vec<f32>,
    state: Vec<f32>,
    sr: [i64; 1],
    threshold: f32,
    triggered: bool,
    last: f32,
    errors: u64,
}

impl std::fmt::Debug for SileroDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroDetector")
            .field("rate", &self.rate)
            .field("threshold", &self.threshold)
            .field("triggered", &self.triggered)
            .field("last", &self.last)
            .finish()
    }
}

impl SileroDetector {
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// New samples per step (256 at 8 kHz, 512 at 16 kHz: 32 ms).
    pub fn chunk_len(&self) -> usize {
        self.chunk
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    pub fn set_threshold(&mut self, threshold: f32) -> Result<(), SileroError> {
        self.threshold = check_threshold(threshold)?;
        Ok(())
    }

    /// Probability below which an utterance in progress ends.
    pub fn leave_threshold(&self) -> f32 {
        (self.threshold - HYSTERESIS).max(self.threshold / 2.0)
    }

    /// Probability of the last step.
    pub fn last_probability(&self) -> f32 {
        self.last
    }

    /// Failed inference steps since creation (they count as unvoiced).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Start a new stream: state, context and hysteresis cleared.
    pub fn reset(&mut self) {
        self.state.fill(0.0);
        self.input.fill(0.0);
        self.triggered = false;
        self.last = 0.0;
    }

    /// Speech probability of one chunk of exactly [`chunk_len`](Self::chunk_len) samples,
    /// advancing the recurrent state and context.
    pub fn probability(&mut self, chunk: &[i16]) -> Result<f32, SileroError> {
        if chunk.len() != self.chunk {
            return Err(SileroError::Inference(format!(
                "chunk of {} samples, expected {}",
                chunk.len(),
                self.chunk
            )));
        }
        for (d, &s) in self.input[self.context..].iter_mut().zip(chunk) {
            *d = f32::from(s) / 32768.0;
        }
        let Some(session) = self.session.as_mut() else {
            return Err(SileroError::Inference("no session".into()));
        };
        let err = |e: ort::Error| SileroError::Inference(one_line(e));
        let input =
            TensorRef::from_array_view(([1usize, self.context + self.chunk], &self.input[..]))
                .map_err(err)?;
        let state = TensorRef::from_array_view(([2usize, 1, 128], &self.state[..])).map_err(err)?;
        let sr = TensorRef::from_array_view(((), &self.sr[..])).map_err(err)?;
        let outputs = session.run(ort::inputs![input, state, sr]).map_err(err)?;
        let mut values = outputs.values();
        let (Some(prob), Some(new_state)) = (values.next(), values.next()) else {
            return Err(SileroError::Inference(
                "model returned too few outputs".into(),
            ));
        };
        let (_, prob) = prob.try_extract_tensor::<f32>().map_err(err)?;
        let (_, new_state) = new_state.try_extract_tensor::<f32>().map_err(err)?;
        let (Some(&p), true) = (prob.first(), new_state.len() == STATE_LEN) else {
            return Err(SileroError::Inference(format!(
                "unexpected output sizes {} and {}",
                prob.len(),
                new_state.len()
            )));
        };
        self.state.copy_from_slice(new_state);
        // The next step's context: the last `context` samples of this input.
        let total = self.input.len();
        self.input.copy_within(total - self.context.., 0);
        self.last = p;
        Ok(p)
    }

    /// Voiced decision for one chunk, with hysteresis. An inference error counts as unvoiced
    /// (logged once per detector).
    pub fn is_voiced(&mut self, chunk: &[i16]) -> bool {
        match self.probability(chunk) {
            Ok(p) => self.decide(p),
            Err(e) => {
                if self.errors == 0 {
                    tracing::warn!("{e}");
                }
                self.errors += 1;
                self.triggered = false;
                false
            }
        }
    }

    /// The hysteresis step on a probability.
    fn decide(&mut self, p: f32) -> bool {
        if p >= self.threshold {
            self.triggered = true;
        } else if p < self.leave_threshold() {
            self.triggered = false;
        }
        self.triggered
    }
}

impl Drop for SileroDetector {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.model.give_back(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// The installed model + library, or None with a NOTE (CI installs them).
    fn model() -> Option<Arc<SileroModel>> {
        let m = repo().join("models").join(DEFAULT_MODEL);
        let l = library_path(&repo().join("models").join(DEFAULT_LIBRARY));
        if !m.exists() || !l.exists() {
            eprintln!(
                "NOTE: {} or {} missing; Silero tests skipped (voxpbx models install silero)",
                m.display(),
                l.display()
            );
            return None;
        }
        Some(SileroModel::load(&m, &l).expect("load silero"))
    }

    fn have(cmd: &str) -> bool {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {cmd}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// espeak-ng speech at `rate` (16-bit mono), or None with a NOTE.
    fn speak(text: &str, rate: u32) -> Option<Vec<i16>> {
        if !(have("espeak-ng") && have("sox")) {
            eprintln!("NOTE: espeak-ng or sox missing; Silero speech tests skipped");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("x.wav");
        let out = dir.path().join("y.wav");
        assert!(Command::new("espeak-ng")
            .args(["-v", "en-us", "-w"])
            .arg(&raw)
            .arg(text)
            .status()
            .unwrap()
            .success());
        assert!(Command::new("sox")
            .arg(&raw)
            .args(["-r", &rate.to_string(), "-c", "1", "-b", "16"])
            .arg(&out)
            .status()
            .unwrap()
            .success());
        let mut r = hound::WavReader::open(&out).unwrap();
        assert_eq!(r.spec().sample_rate, rate);
        Some(r.samples::<i16>().map(|s| s.unwrap()).collect())
    }

    /// Per-chunk voiced decisions over `audio`; returns (first voiced chunk, voiced count).
    fn scan(d: &mut SileroDetector, audio: &[i16]) -> (Option<usize>, usize) {
        let mut first = None;
        let mut n = 0;
        for (i, c) in audio.chunks_exact(d.chunk_len()).enumerate() {
            if d.is_voiced(c) {
                first.get_or_insert(i);
                n += 1;
            }
        }
        (first, n)
    }

    fn speech_onset(rate: u32) {
        let Some(m) = model() else { return };
        let Some(speech) = speak("please connect me to the sales department", rate) else {
            return;
        };
        let lead = rate as usize; // 1 s of silence first
        let mut audio = vec![0i16; lead];
        audio.extend(&speech);
        audio.extend(vec![0i16; rate as usize]);
        let mut d = m.detector(rate, DEFAULT_THRESHOLD).unwrap();
        let (first, voiced) = scan(&mut d, &audio);
        let chunk = d.chunk_len();
        let first = first.expect("no voiced chunk in speech");
        let onset = first * chunk;
        assert!(
            onset >= lead && onset < lead + speech.len(),
            "onset at sample {onset}, speech {lead}..{}",
            lead + speech.len()
        );
        // espeak talks most of the clip: a good share of its chunks are voiced.
        let speech_chunks = speech.len() / chunk;
        assert!(
            voiced * 2 >= speech_chunks,
            "{voiced} voiced of {speech_chunks}"
        );
        // Trailing silence ends it.
        assert!(!d.is_voiced(&vec![0; chunk]));
        assert_eq!(d.errors(), 0);
    }

    #[test]
    fn speech_onset_8k() {
        speech_onset(8000);
    }

    #[test]
    fn speech_onset_16k() {
        speech_onset(16000);
    }

    #[test]
    fn silence_and_low_noise_have_no_onset() {
        let Some(m) = model() else { return };
        for rate in [8000u32, 16000] {
            let mut d = m.detector(rate, DEFAULT_THRESHOLD).unwrap();
            assert_eq!(scan(&mut d, &vec![0; 5 * rate as usize]), (None, 0));
            // White noise at about -50 dBFS.
            let mut x: u32 = 12345;
            let noise: Vec<i16> = (0..5 * rate)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    ((x >> 16) as i16) / 300
                })
                .collect();
            d.reset();
            let (first, n) = scan(&mut d, &noise);
            assert_eq!(first, None, "rate {rate}: {n} voiced noise chunks");
            assert!(d.last_probability() < 0.35, "{}", d.last_probability());
        }
    }

    #[test]
    fn reset_restores_the_initial_state() {
        let Some(m) = model() else { return };
        let Some(speech) = speak("hello there, how are you", 8000) else {
            return;
        };
        let mut d = m.detector(8000, DEFAULT_THRESHOLD).unwrap();
        let c = d.chunk_len();
        let probe: Vec<i16> = speech[..c].to_vec();
        let fresh = d.probability(&probe).unwrap();
        for ch in speech.chunks_exact(c) {
            d.is_voiced(ch);
        }
        d.reset();
        assert_eq!(d.probability(&probe).unwrap(), fresh);
        d.reset();
        assert!(!d.is_voiced(&vec![0; c]));
        // The state matters: after speech the same chunk scores differently than fresh.
        for ch in speech.chunks_exact(c) {
            d.probability(ch).unwrap();
        }
        assert_ne!(d.probability(&probe).unwrap(), fresh);
    }

    #[test]
    fn sessions_are_pooled_and_rates_checked() {
        let Some(m) = model() else { return };
        let a = m.detector(8000, 0.5).unwrap();
        let b = m.detector(16000, 0.5).unwrap();
        let idle = m.idle_sessions();
        drop(a);
        drop(b);
        assert_eq!(m.idle_sessions(), idle + 2);
        let _c = m.detector(8000, 0.5).unwrap();
        assert_eq!(m.idle_sessions(), idle + 1);
        assert_eq!(
            m.detector(44100, 0.5).unwrap_err(),
            SileroError::UnsupportedRate(44100)
        );
        assert_eq!(
            m.detector(8000, 1.5).unwrap_err(),
            SileroError::BadThreshold(1.5)
        );
        let mut d = m.detector(8000, 0.5).unwrap();
        assert!(d.probability(&[0; 100]).is_err());
        assert!(!d.is_voiced(&[0; 100]));
        assert_eq!(d.errors(), 1);
    }

    #[test]
    fn missing_and_bad_files_are_one_clear_line() {
        let e = SileroModel::load(Path::new("/nonexistent/silero_vad.onnx"), Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not found") && e.contains("voxpbx models install silero"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("silero_vad.onnx");
        std::fs::write(&fake, b"not an onnx model").unwrap();
        // Library checks bypass the process cache (and a second ORT environment is refused,
        // so a bad file is an error whether or not another test loaded the real library). The
        // lock keeps another test from being between loading and building its environment.
        let _loading = RUNTIME.lock();
        let e = load_runtime(Path::new("/nonexistent/libonnxruntime.so"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not found") && e.contains("models install silero"),
            "{e}"
        );
        let e = load_runtime(&fake).unwrap_err().to_string();
        assert!(
            e.contains("cannot be used")
                && e.contains("models install silero")
                && !e.contains('\n'),
            "{e}"
        );
        drop(_loading);
        if model().is_none() {
            return;
        }
        let e = SileroModel::load(&fake, &repo().join("models").join(DEFAULT_LIBRARY))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not usable") && e.contains("models install silero") && !e.contains('\n'),
            "{e}"
        );
    }

    /// The same detector behind `Vad`: onset inside the speech, endpoint after it, in odd
    /// frame sizes (20 ms RTP frames re-chunked into 32 ms steps).
    #[test]
    fn vad_endpoints_speech_with_silero() {
        use crate::speech::vad::{EndReason, EndpointConfig, Vad, VadEvent, VadKind};
        let Some(m) = model() else { return };
        for rate in [8000u32, 16000] {
            let Some(speech) = speak("I would like to pay my bill", rate) else {
                return;
            };
            let ms = |n: usize| (n as u64 * 1000 / u64::from(rate)) as i64;
            let lead = rate as usize / 2;
            let mut audio = vec![0i16; lead];
            audio.extend(&speech);
            audio.extend(vec![0i16; rate as usize * 2]);
            let cfg = EndpointConfig {
                speculative_ms: 0,
                ..EndpointConfig::default()
            };
            let mut vad = Vad::silero(m.detector(rate, DEFAULT_THRESHOLD).unwrap(), cfg);
            assert_eq!(
                (vad.kind(), vad.chunk_ms(), vad.rate()),
                (VadKind::Silero, 32, rate)
            );
            let mut events = Vec::new();
            for f in audio.chunks(rate as usize / 50) {
                vad.process(f, |e| events.push(e));
            }
            let (start, end) = (ms(lead), ms(lead + speech.len()));
            match events.first() {
                Some(VadEvent::Onset {
                    speech_start_ms, ..
                }) => assert!(
                    (start - 100..end).contains(&(*speech_start_ms as i64)),
                    "{rate}: onset {speech_start_ms}, speech {start}..{end}"
                ),
                other => panic!("{rate}: expected an onset, got {other:?}"),
            }
            match events.last() {
                Some(VadEvent::Endpoint {
                    speech_end_ms,
                    reason: EndReason::Silence,
                    ..
                }) => assert!(
                    (end - 600..end + 300).contains(&(*speech_end_ms as i64)),
                    "{rate}: speech end {speech_end_ms}, speech {start}..{end}"
                ),
                other => panic!("{rate}: expected an endpoint, got {other:?}"),
            }
            // The next recognition starts from a clean state.
            vad.reset();
            assert_eq!(vad.endpointer().now_ms(), 0);
            vad.set_threshold(0.7).unwrap();
            assert_eq!(vad.threshold(), Some(0.7));
            assert!(vad.set_threshold(7.0).is_err());
        }
    }

    #[test]
    fn hysteresis() {
        let Some(m) = model() else { return };
        let mut d = m.detector(8000, 0.5).unwrap();
        assert_eq!(d.leave_threshold(), 0.35);
        let seq = [0.2, 0.49, 0.5, 0.4, 0.36, 0.34, 0.45, 0.9];
        let got: Vec<bool> = seq.iter().map(|&p| d.decide(p)).collect();
        assert_eq!(got, [false, false, true, true, true, false, false, true]);
        d.set_threshold(0.2).unwrap();
        assert!((d.leave_threshold() - 0.1).abs() < 1e-6);
        assert!(d.set_threshold(-0.1).is_err());
    }
}
