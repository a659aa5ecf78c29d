//! The speech engine layer (Asterisk's res_speech): the `Engine` trait every recognizer
//! implements (local whisper, AEAP client, ...), the per-call `EngineSession`, the state shared
//! between the channel task and the engine's background work, and the engine registry.
//!
//! Semantics follow Asterisk's res_speech (`ast_speech_*`).
//! Dialplan apps (SpeechCreate...) and AGI `SPEECH *` commands both drive a [`Speech`] object.

use crate::media::{Format, Frame};
use futures_util::future::BoxFuture;
use parking_lot::{Mutex, MutexGuard, RwLock};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// `enum ast_speech_states`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeechState {
    NotReady = 0,
    Ready = 1,
    Wait = 2,
    Done = 3,
}

/// One recognition result (`struct ast_speech_result`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpeechResult {
    pub text: String,
    /// Integer confidence 0..=1000 (AEAP engines may send 0..=100).
    pub score: i32,
    pub grammar: Option<String>,
    /// n-best list index (`nbest_num`).
    pub nbest: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultsType {
    #[default]
    Normal,
    Nbest,
}

impl ResultsType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultsType::Normal => "normal",
            ResultsType::Nbest => "nbest",
        }
    }
    /// Case-insensitive; other values are `None` (Asterisk ignores them).
    pub fn parse(s: &str) -> Option<ResultsType> {
        match s.trim().to_ascii_lowercase().as_str() {
            "normal" => Some(ResultsType::Normal),
            "nbest" => Some(ResultsType::Nbest),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SpeechError {
    #[error("no speech engine named '{0}'")]
    NoEngine(String),
    #[error("engine '{engine}' does not support {what}")]
    Unsupported { engine: String, what: &'static str },
    #[error("no common audio format between the channel and engine '{0}'")]
    NoFormat(String),
    #[error("engine is busy: {0}")]
    Busy(String),
    #[error("engine connection lost: {0}")]
    Disconnected(String),
    #[error("engine request timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    Engine(String),
}

/// Timestamps an engine records for latency reporting (events, `voxpbx bench stt`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SpeechTiming {
    /// VAD detected speech onset (barge-in point).
    pub onset: Option<Instant>,
    /// Last voiced audio seen (end of speech), before the endpointing wait.
    pub speech_end: Option<Instant>,
    /// Endpointing fired (trailing silence reached), inference began.
    pub endpoint: Option<Instant>,
    /// First partial result.
    pub first_partial: Option<Instant>,
    /// Final result available (state DONE).
    pub done: Option<Instant>,
    /// Audio seconds of the utterance and inference seconds, for real-time factor.
    pub audio_secs: f64,
    pub inference_secs: f64,
}

impl SpeechTiming {
    /// End of speech -> final result, in ms (the endpointing wait included): what the caller
    /// waits for an answer. `SPEECH(latency)` and the `SpeechResult` event's `LatencyMs`.
    pub fn latency_ms(&self) -> Option<u128> {
        match (self.speech_end, self.done) {
            (Some(a), Some(b)) => Some(b.saturating_duration_since(a).as_millis()),
            _ => None,
        }
    }
}

/// Mutable speech state, behind `SpeechShared`'s lock (Asterisk's `speech->lock`).
#[derive(Debug, Default)]
pub struct SpeechInner {
    pub state: SpeechStateCell,
    /// `AST_SPEECH_QUIET`: stop the prompt (barge-in).
    pub quiet: bool,
    /// `AST_SPEECH_SPOKE`: the caller spoke.
    pub spoke: bool,
    /// Cached results in dialplan order (index 0 is what `SPEECH_TEXT(0)` reads first).
    pub results: Option<Vec<SpeechResult>>,
    /// Latest partial (interim) transcript, voxpbx extension.
    pub partial: Option<String>,
    /// Why the engine ended the recognition abnormally (connection lost, pool full...).
    pub error: Option<String>,
    pub timing: SpeechTiming,
}

/// Wrapper so `SpeechInner` can derive Default with `NotReady`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeechStateCell(pub SpeechState);
impl Default for SpeechStateCell {
    fn default() -> Self {
        SpeechStateCell(SpeechState::NotReady)
    }
}

/// State shared between the channel task and engine background work. Engines change it and
/// call `notify_waiters` through the helpers; SpeechBackground waits on `changed()`.
#[derive(Debug, Default)]
pub struct SpeechShared {
    inner: Mutex<SpeechInner>,
    notify: tokio::sync::Notify,
}

impl SpeechShared {
    pub fn new() -> Arc<SpeechShared> {
        Arc::new(SpeechShared::default())
    }
    pub fn lock(&self) -> MutexGuard<'_, SpeechInner> {
        self.inner.lock()
    }
    pub fn state(&self) -> SpeechState {
        self.inner.lock().state.0
    }
    /// `ast_speech_change_state`: WAIT also sets SPOKE.
    pub fn set_state(&self, s: SpeechState) {
        {
            let mut g = self.inner.lock();
            g.state = SpeechStateCell(s);
            if s == SpeechState::Wait {
                g.spoke = true;
            }
            if s == SpeechState::Done && g.timing.done.is_none() {
                g.timing.done = Some(Instant::now());
            }
        }
        self.notify.notify_waiters();
    }
    /// Barge-in: the engine heard speech start. Sets QUIET and SPOKE.
    pub fn set_quiet(&self, at: Instant) {
        {
            let mut g = self.inner.lock();
            g.quiet = true;
            g.spoke = true;
            if g.timing.onset.is_none() {
                g.timing.onset = Some(at);
            }
        }
        self.notify.notify_waiters();
    }
    /// Results arrived: they are *prepended* to the cache, as Asterisk does for `set results`
    /// (pass them in the order the engine produced them), and the state becomes DONE.
    pub fn push_results(&self, results: Vec<SpeechResult>) {
        {
            let mut g = self.inner.lock();
            let cache = g.results.get_or_insert_with(Vec::new);
            for r in results {
                cache.insert(0, r);
            }
        }
        self.set_state(SpeechState::Done);
    }
    /// Replace the cached results (dialplan order) without touching the state.
    pub fn set_results(&self, results: Option<Vec<SpeechResult>>) {
        self.inner.lock().results = results;
    }
    pub fn set_partial(&self, text: String) {
        {
            let mut g = self.inner.lock();
            if g.timing.first_partial.is_none() {
                g.timing.first_partial = Some(Instant::now());
            }
            g.partial = Some(text);
        }
        self.notify.notify_waiters();
    }
    /// The engine failed (connection dropped, inference error): DONE with an error.
    pub fn fail(&self, error: impl Into<String>) {
        self.inner.lock().error = Some(error.into());
        self.set_state(SpeechState::Done);
    }
    /// Resolves after the next change made through these helpers.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
    /// `ast_speech_start` part 1: clear flags, results, partial, error, timing.
    pub fn reset(&self) {
        let mut g = self.inner.lock();
        g.quiet = false;
        g.spoke = false;
        g.results = None;
        g.partial = None;
        g.error = None;
        g.timing = SpeechTiming::default();
    }
}

/// A recognizer type configured in speech.conf (or aeap.conf).
pub trait Engine: Send + Sync {
    fn name(&self) -> &str;
    /// Formats the engine accepts, in preference order.
    fn formats(&self) -> Vec<Format>;
    /// One line for `speech show engines`.
    fn describe(&self) -> String {
        format!("{} formats={:?}", self.name(), self.formats())
    }
    /// Create a per-call session (`create` callback). `format` is the chosen audio format.
    fn create(
        &self,
        format: Format,
        shared: Arc<SpeechShared>,
    ) -> BoxFuture<'_, Result<Box<dyn EngineSession>, SpeechError>>;
}

/// One speech object's engine side. Every method is called from the channel task and must not
/// block it: heavy work goes to a thread pool, network waits are bounded by timeouts.
pub trait EngineSession: Send {
    fn engine_name(&self) -> &str;
    fn load_grammar(&mut self, _name: &str, _path: &Path) -> Result<(), SpeechError> {
        Err(self.unsupported("grammar load"))
    }
    fn unload_grammar(&mut self, _name: &str) -> Result<(), SpeechError> {
        Err(self.unsupported("grammar unload"))
    }
    fn activate_grammar(&mut self, _name: &str) -> Result<(), SpeechError> {
        Err(self.unsupported("grammar activate"))
    }
    fn deactivate_grammar(&mut self, _name: &str) -> Result<(), SpeechError> {
        Err(self.unsupported("grammar deactivate"))
    }
    /// `start`: begin a recognition; the engine sets READY on the shared state.
    fn start(&mut self) -> Result<(), SpeechError>;
    /// Audio in the session's format; only called in READY. Must return at once.
    fn write(&mut self, frame: &Frame);
    fn dtmf<'a>(&'a mut self, _digits: &'a str) -> BoxFuture<'a, Result<(), SpeechError>> {
        Box::pin(async { Ok(()) })
    }
    /// `SPEECH_ENGINE(name)=value`.
    fn change<'a>(
        &'a mut self,
        name: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), SpeechError>>;
    /// `${SPEECH_ENGINE(name)}`.
    fn get_setting<'a>(&'a mut self, name: &'a str) -> BoxFuture<'a, Result<String, SpeechError>>;
    fn change_results_type(&mut self, t: ResultsType) -> BoxFuture<'_, Result<(), SpeechError>>;
    /// `get` callback: results when none are cached (DONE without results, or option `p`).
    fn get_results(&mut self) -> BoxFuture<'_, Option<Vec<SpeechResult>>>;
    /// Release resources (close connections, cancel inference). Called exactly once.
    fn destroy(&mut self) -> BoxFuture<'_, ()>;
    fn unsupported(&self, what: &'static str) -> SpeechError {
        SpeechError::Unsupported {
            engine: self.engine_name().to_string(),
            what,
        }
    }
}

/// The speech object a channel holds (`struct ast_speech`), in its "speech" datastore.
pub struct Speech {
    pub engine: Arc<dyn Engine>,
    pub session: Box<dyn EngineSession>,
    pub shared: Arc<SpeechShared>,
    pub format: Format,
    pub processing_sound: Option<String>,
    pub results_type: ResultsType,
    destroyed: bool,
}

impl Speech {
    /// `ast_speech_new`: pick the format (first engine format the channel has natively, else
    /// slin if the engine takes it, else the engine's first format, which the channel
    /// translates to) and create the engine session.
    pub async fn new(
        engine: Arc<dyn Engine>,
        channel_formats: &[Format],
    ) -> Result<Speech, SpeechError> {
        let formats = engine.formats();
        let format = formats
            .iter()
            .copied()
            .find(|f| channel_formats.contains(f))
            .or_else(|| formats.iter().copied().find(|f| *f == Format::Slin8))
            .or_else(|| formats.first().copied())
            .ok_or_else(|| SpeechError::NoFormat(engine.name().to_string()))?;
        let shared = SpeechShared::new();
        let session = engine.create(format, shared.clone()).await?;
        Ok(Speech {
            engine,
            session,
            shared,
            format,
            processing_sound: None,
            results_type: ResultsType::Normal,
            destroyed: false,
        })
    }
    pub fn state(&self) -> SpeechState {
        self.shared.state()
    }
    /// `ast_speech_start`: clear SPOKE/QUIET/results, then the engine's start.
    pub fn start(&mut self) -> Result<(), SpeechError> {
        self.shared.reset();
        self.session.start()
    }
    /// `ast_speech_write`: refused unless READY.
    pub fn write(&mut self, frame: &Frame) -> bool {
        if self.state() != SpeechState::Ready {
            return false;
        }
        self.session.write(frame);
        true
    }
    /// `ast_speech_dtmf`: refused unless READY.
    pub async fn dtmf(&mut self, digits: &str) -> Result<(), SpeechError> {
        if self.state() != SpeechState::Ready {
            return Err(SpeechError::Engine("not ready".into()));
        }
        self.session.dtmf(digits).await
    }
    /// `ast_speech_results_get`: the cache when present, else ask the engine.
    pub async fn results_get(&mut self) -> Option<Vec<SpeechResult>> {
        if let Some(r) = self.shared.lock().results.clone() {
            return Some(r);
        }
        self.session.get_results().await
    }
    pub async fn change_results_type(&mut self, t: ResultsType) -> Result<(), SpeechError> {
        self.results_type = t;
        self.session.change_results_type(t).await
    }
    pub async fn destroy(&mut self) {
        if !self.destroyed {
            self.destroyed = true;
            self.session.destroy().await;
        }
    }
}

impl Drop for Speech {
    fn drop(&mut self) {
        if !self.destroyed {
            // Destroy must run even when the channel task unwinds (hangup): finish it on the
            // runtime. The session is moved out so the future owns it.
            self.destroyed = true;
            let mut session = std::mem::replace(&mut self.session, Box::new(DeadSession));
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move { session.destroy().await });
            }
        }
    }
}

/// Placeholder left behind after a session was moved out for destruction.
struct DeadSession;
impl EngineSession for DeadSession {
    fn engine_name(&self) -> &str {
        "destroyed"
    }
    fn start(&mut self) -> Result<(), SpeechError> {
        Err(SpeechError::Engine("destroyed".into()))
    }
    fn write(&mut self, _frame: &Frame) {}
    fn change<'a>(
        &'a mut self,
        _n: &'a str,
        _v: &'a str,
    ) -> BoxFuture<'a, Result<(), SpeechError>> {
        Box::pin(async { Err(SpeechError::Engine("destroyed".into())) })
    }
    fn get_setting<'a>(&'a mut self, _n: &'a str) -> BoxFuture<'a, Result<String, SpeechError>> {
        Box::pin(async { Err(SpeechError::Engine("destroyed".into())) })
    }
    fn change_results_type(&mut self, _t: ResultsType) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(async { Ok(()) })
    }
    fn get_results(&mut self) -> BoxFuture<'_, Option<Vec<SpeechResult>>> {
        Box::pin(async { None })
    }
    fn destroy(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Registered engines; the first registered is the default (`ast_speech_register`).
#[derive(Default)]
pub struct EngineRegistry {
    engines: RwLock<Vec<Arc<dyn Engine>>>,
}

impl EngineRegistry {
    /// Rejects a duplicate name (case-insensitive).
    pub fn register(&self, e: Arc<dyn Engine>) -> Result<(), SpeechError> {
        let mut g = self.engines.write();
        if g.iter().any(|x| x.name().eq_ignore_ascii_case(e.name())) {
            return Err(SpeechError::Engine(format!(
                "speech engine '{}' already registered",
                e.name()
            )));
        }
        g.push(e);
        Ok(())
    }
    pub fn unregister(&self, name: &str) {
        self.engines
            .write()
            .retain(|e| !e.name().eq_ignore_ascii_case(name));
    }
    /// Empty name = the default engine.
    pub fn find(&self, name: &str) -> Result<Arc<dyn Engine>, SpeechError> {
        let g = self.engines.read();
        let found = if name.trim().is_empty() {
            g.first().cloned()
        } else {
            g.iter()
                .find(|e| e.name().eq_ignore_ascii_case(name.trim()))
                .cloned()
        };
        found.ok_or_else(|| SpeechError::NoEngine(name.to_string()))
    }
    pub fn list(&self) -> Vec<Arc<dyn Engine>> {
        self.engines.read().clone()
    }
}
