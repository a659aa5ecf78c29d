//! The AEAP client: an external `speech_to_text` application used as a voxpbx speech engine
//! (Asterisk's res_speech_aeap, spec A.3-A.5).
//!
//! One WebSocket per speech object, opened in `create()`. A background task per session owns
//! the socket and the [`Transactions`]; the session talks to it through channels:
//! * audio: `write()` hands the frame payload (a `Bytes` clone, no copy) to a bounded queue and
//!   returns at once; when the queue is full the frame is dropped and counted;
//! * requests (`setup`, `get`, `set`): a command plus a oneshot for the answer, awaited with a
//!   bound (request timeout + margin) so a stuck socket can never hang the dialplan.
//!
//! Incoming `set {"results":[...]}` requests become results (prepended, so reversed, and
//! accumulating, as Asterisk) and state DONE. A close or read error sets DONE with an error
//! at once (asterisk/asterisk#303) and fails pending requests immediately.

use super::audio::EnergyVad;
use super::config::{AeapConfig, ClientConfig};
use super::message::{encode_response, DecodeError, Json, Message, MAX_TEXT_LEN, UNSUPPORTED};
use super::transaction::{Event, Transactions};
use super::transport::{self, WsStream};
use crate::media::{Format, Frame};
use crate::speech::engine::{
    Engine, EngineRegistry, EngineSession, ResultsType, SpeechError, SpeechResult, SpeechShared,
    SpeechState,
};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// `SPEECH_AEAP_VERSION`.
pub const SPEECH_AEAP_VERSION: &str = "0.1.0";
/// Frames queued towards the socket (1 s of 20 ms frames) before `write()` starts dropping.
const AUDIO_QUEUE: usize = 50;
/// Extra time the caller waits beyond the request timeout for the task to report.
const REQUEST_MARGIN: Duration = Duration::from_millis(250);
/// How long `destroy()` waits for the close handshake before dropping the socket.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// Names res_speech_aeap has response handlers for.
fn handled_response(name: &str) -> bool {
    ["setup", "get", "set"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

/// Counters for `aeap show clients` / events.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub active: AtomicUsize,
    pub created: AtomicU64,
    pub create_failures: AtomicU64,
    pub connections_lost: AtomicU64,
    pub frames_sent: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub requests_timed_out: AtomicU64,
}

/// A speech engine backed by an external AEAP application (one aeap.conf client).
pub struct AeapEngine {
    cfg: Arc<ClientConfig>,
    stats: Arc<ClientStats>,
}

impl AeapEngine {
    pub fn new(cfg: ClientConfig) -> AeapEngine {
        AeapEngine {
            cfg: Arc::new(cfg),
            stats: Arc::new(ClientStats::default()),
        }
    }
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }
    /// `aeap show client <id>` block with live counters appended.
    pub fn show(&self) -> String {
        let mut s = self.cfg.show();
        s.pop(); // the trailing blank line, re-added below
        let st = &self.stats;
        s.push_str(&format!(
            "\tsessions: {} active, {} created, {} failed, {} lost\n\tframes: {} sent, {} dropped\n\trequests timed out: {}\n\n",
            st.active.load(Ordering::Relaxed),
            st.created.load(Ordering::Relaxed),
            st.create_failures.load(Ordering::Relaxed),
            st.connections_lost.load(Ordering::Relaxed),
            st.frames_sent.load(Ordering::Relaxed),
            st.frames_dropped.load(Ordering::Relaxed),
            st.requests_timed_out.load(Ordering::Relaxed),
        ));
        s
    }

    async fn create_session(
        &self,
        format: Format,
        shared: Arc<SpeechShared>,
    ) -> Result<Box<dyn EngineSession>, SpeechError> {
        let r = self.try_urls(format, shared).await;
        match &r {
            Ok(_) => {
                self.stats.created.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.create_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(engine = %self.cfg.name, "AEAP speech create failed: {e}");
            }
        }
        r
    }

    async fn try_urls(
        &self,
        format: Format,
        shared: Arc<SpeechShared>,
    ) -> Result<Box<dyn EngineSession>, SpeechError> {
        if !self.cfg.codecs.contains(&format) {
            return Err(SpeechError::NoFormat(self.cfg.name.clone()));
        }
        let mut failures = Vec::new();
        for url in &self.cfg.urls {
            match self.try_url(url, format, shared.clone()).await {
                Ok(s) => return Ok(Box::new(s)),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Next(e)) => {
                    tracing::info!(engine = %self.cfg.name, url = %url, "AEAP connect failed: {e}");
                    failures.push(e);
                }
            }
        }
        Err(SpeechError::Disconnected(format!(
            "aeap client '{}': {}",
            self.cfg.name,
            failures.join("; ")
        )))
    }

    async fn try_url(
        &self,
        url: &str,
        format: Format,
        shared: Arc<SpeechShared>,
    ) -> Result<AeapSession, Attempt> {
        let ws = transport::connect(url, self.cfg.protocol.as_deref(), self.cfg.connect_timeout)
            .await
            .map_err(|e| Attempt::Next(e.to_string()))?;
        let session = AeapSession::spawn(ws, url, &self.cfg, shared, self.stats.clone());
        let codec = format.codec_name();
        let params = Json::Object(
            self.cfg
                .params
                .iter()
                .map(|(k, v)| (k.clone(), Json::str(v.clone())))
                .collect(),
        );
        let body = vec![
            ("version".to_string(), Json::str(SPEECH_AEAP_VERSION)),
            (
                "codecs".to_string(),
                Json::Array(vec![Json::object([("name", Json::str(codec))])]),
            ),
            ("params".to_string(), params),
        ];
        let mut session = session;
        let result = session.request("setup", body).await;
        let outcome = match result {
            Ok(msg) => check_setup_response(&msg, codec, url),
            Err(SpeechError::Timeout(e)) | Err(SpeechError::Disconnected(e)) => {
                Err(Attempt::Next(format!("{url}: {e}")))
            }
            Err(e) => Err(Attempt::Fatal(SpeechError::Engine(format!(
                "{url} refused setup: {e}"
            )))),
        };
        match outcome {
            Ok(()) => {
                // SeqCst pairs with the task's `alive` store / `established` load: at least
                // one side sees the other and reports a loss (twice is harmless).
                session.conn.established.store(true, Ordering::SeqCst);
                if !session.conn.alive.load(Ordering::SeqCst) {
                    // Lost right after answering setup: report it now.
                    session.shared.fail(session.lost_error().to_string());
                }
                Ok(session)
            }
            Err(a) => {
                session.shutdown().await;
                Err(a)
            }
        }
    }
}

enum Attempt {
    /// Connection-level failure: try the next URL.
    Next(String),
    /// The application answered and refused: no failover.
    Fatal(SpeechError),
}

/// `handle_response_setup`: non-empty `codecs` whose first `name` equals the offer exactly.
fn check_setup_response(msg: &Message, codec: &str, url: &str) -> Result<(), Attempt> {
    if !msg.is_named("setup") {
        return Err(Attempt::Fatal(SpeechError::Engine(format!(
            "{url} answered setup with an unexpected '{}' response",
            msg.name
        ))));
    }
    let name = msg
        .get("codecs")
        .and_then(Json::as_array)
        .and_then(|a| a.first())
        .and_then(|c| c.get("name"))
        .and_then(Json::as_str);
    match name {
        Some(n) if n == codec => Ok(()),
        Some(n) => Err(Attempt::Fatal(SpeechError::Engine(format!(
            "{url}: setup codec '{n}' unsupported (offered '{codec}')"
        )))),
        None => Err(Attempt::Fatal(SpeechError::Engine(format!(
            "{url}: setup response has no codecs"
        )))),
    }
}

impl Engine for AeapEngine {
    fn name(&self) -> &str {
        &self.cfg.name
    }
    fn formats(&self) -> Vec<Format> {
        self.cfg.codecs.clone()
    }
    fn describe(&self) -> String {
        format!(
            "{} (AEAP {} codecs={})",
            self.cfg.name,
            self.cfg.urls.join(","),
            self.cfg.codecs_display()
        )
    }
    fn create(
        &self,
        format: Format,
        shared: Arc<SpeechShared>,
    ) -> BoxFuture<'_, Result<Box<dyn EngineSession>, SpeechError>> {
        Box::pin(self.create_session(format, shared))
    }
}

/// One engine per `protocol=speech_to_text` client, in file order.
pub fn speech_engines(cfg: &AeapConfig) -> Vec<Arc<AeapEngine>> {
    cfg.speech_clients()
        .map(|c| Arc::new(AeapEngine::new(c.clone())))
        .collect()
}

/// Register (or re-register after a reload) the AEAP speech engines, like res_speech_aeap's
/// `speech_observer_loaded`: engines of `previous` whose client is gone or changed are
/// unregistered, new or changed ones registered; unchanged ones are kept (with their counters).
/// Returns the engines now registered and the registration errors (e.g. a name clash with a
/// non-AEAP engine). Sessions already created keep working on their old engine.
pub fn sync_speech_engines(
    registry: &EngineRegistry,
    previous: &[Arc<AeapEngine>],
    cfg: &AeapConfig,
) -> (Vec<Arc<AeapEngine>>, Vec<SpeechError>) {
    let mut now = Vec::new();
    let mut errors = Vec::new();
    for old in previous {
        let keep = cfg.speech_clients().any(|c| same_client(c, old.config()));
        if !keep {
            registry.unregister(old.name());
        }
    }
    for c in cfg.speech_clients() {
        if let Some(old) = previous.iter().find(|o| same_client(c, o.config())) {
            now.push(old.clone());
            continue;
        }
        let e = Arc::new(AeapEngine::new(c.clone()));
        match registry.register(e.clone()) {
            Ok(()) => now.push(e),
            Err(err) => errors.push(err),
        }
    }
    (now, errors)
}

fn same_client(a: &ClientConfig, b: &ClientConfig) -> bool {
    // Location does not matter for equality of behaviour.
    a.name == b.name
        && a.urls == b.urls
        && a.protocol == b.protocol
        && a.codecs == b.codecs
        && a.params == b.params
        && a.barge_in == b.barge_in
        && a.request_timeout == b.request_timeout
        && a.connect_timeout == b.connect_timeout
        && a.partial_results == b.partial_results
}

/// `aeap show clients` with live counters for registered engines.
pub fn show_clients(cfg: &AeapConfig, engines: &[Arc<AeapEngine>]) -> String {
    if cfg.clients.is_empty() {
        return "No AEAP configuration found\n".to_string();
    }
    cfg.clients
        .iter()
        .map(|c| match engines.iter().find(|e| e.name() == c.name) {
            Some(e) => e.show(),
            None => c.show(),
        })
        .collect()
}

/// Parse a `results` array as `speech_results_from_json`: text string, integer score (else 0),
/// grammar string, integer best (else 0). Anything that is not an array yields none.
/// Returned in JSON order.
pub fn parse_results(v: &Json) -> Vec<SpeechResult> {
    let Some(items) = v.as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .map(|r| SpeechResult {
            text: r
                .get("text")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string(),
            score: r.get("score").and_then(Json::as_integer).unwrap_or(0) as i32,
            grammar: r.get("grammar").and_then(Json::as_str).map(str::to_string),
            nbest: r.get("best").and_then(Json::as_integer).unwrap_or(0) as i32,
        })
        .collect()
}

enum Cmd {
    Request {
        name: &'static str,
        body: Vec<(String, Json)>,
        reply: oneshot::Sender<Result<Message, SpeechError>>,
    },
    Close,
}

/// State shared between a session and its connection task.
#[derive(Debug, Default)]
struct ConnState {
    alive: AtomicBool,
    /// We are closing on purpose: the end of the connection is not an error.
    closing: AtomicBool,
    /// Setup succeeded: from now on a lost connection is reported on the speech object
    /// (before that, create() reports it and may fail over).
    established: AtomicBool,
    lost: Mutex<Option<String>>,
    dropped: AtomicU64,
}

struct ActiveGuard(Arc<ClientStats>);
impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One speech object's AEAP connection.
pub struct AeapSession {
    engine: String,
    url: String,
    shared: Arc<SpeechShared>,
    conn: Arc<ConnState>,
    cmd_tx: mpsc::Sender<Cmd>,
    audio_tx: mpsc::Sender<Bytes>,
    task: Option<JoinHandle<()>>,
    vad: Option<EnergyVad>,
    request_timeout: Duration,
    stats: Arc<ClientStats>,
    /// Counts this session in `ClientStats::active` until destroyed (or dropped).
    active: Option<ActiveGuard>,
}

impl AeapSession {
    fn spawn(
        ws: WsStream,
        url: &str,
        cfg: &ClientConfig,
        shared: Arc<SpeechShared>,
        stats: Arc<ClientStats>,
    ) -> AeapSession {
        let conn = Arc::new(ConnState {
            alive: AtomicBool::new(true),
            ..Default::default()
        });
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (audio_tx, audio_rx) = mpsc::channel(AUDIO_QUEUE);
        let task = Connection {
            url: url.to_string(),
            engine: cfg.name.clone(),
            shared: shared.clone(),
            conn: conn.clone(),
            partial_results: cfg.partial_results,
            stats: stats.clone(),
            tx: Transactions::new(cfg.request_timeout),
            waiters: HashMap::new(),
        };
        let handle = tokio::spawn(task.run(ws, cmd_rx, audio_rx));
        stats.active.fetch_add(1, Ordering::Relaxed);
        AeapSession {
            engine: cfg.name.clone(),
            url: url.to_string(),
            shared,
            conn,
            cmd_tx,
            audio_tx,
            task: Some(handle),
            vad: cfg.barge_in.then(EnergyVad::new),
            request_timeout: cfg.request_timeout,
            stats: stats.clone(),
            active: Some(ActiveGuard(stats)),
        }
    }

    /// The URL this session is connected to (after failover).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Frames dropped because the socket could not keep up.
    pub fn frames_dropped(&self) -> u64 {
        self.conn.dropped.load(Ordering::Relaxed)
    }

    fn lost_error(&self) -> SpeechError {
        let why = self
            .conn
            .lost
            .lock()
            .clone()
            .unwrap_or_else(|| "connection closed".into());
        SpeechError::Disconnected(format!("aeap connection to {} lost: {}", self.url, why))
    }

    /// Send a request and wait (bounded) for its answer. `error_msg` answers are
    /// `SpeechError::Engine`.
    async fn request(
        &mut self,
        name: &'static str,
        body: Vec<(String, Json)>,
    ) -> Result<Message, SpeechError> {
        if !self.conn.alive.load(Ordering::Acquire) {
            return Err(self.lost_error());
        }
        let (reply, rx) = oneshot::channel();
        let cmd_tx = self.cmd_tx.clone();
        let wait = async move {
            cmd_tx
                .send(Cmd::Request { name, body, reply })
                .await
                .map_err(|_| ())?;
            rx.await.map_err(|_| ())
        };
        match tokio::time::timeout(self.request_timeout + REQUEST_MARGIN, wait).await {
            Ok(Ok(r)) => r,
            Ok(Err(())) => Err(self.lost_error()),
            Err(_) => {
                self.stats
                    .requests_timed_out
                    .fetch_add(1, Ordering::Relaxed);
                Err(SpeechError::Timeout(format!("message '{name}' timed out")))
            }
        }
    }

    /// `set {name: value}`; any non-error `set` response is success.
    async fn set(&mut self, name: &str, value: &str) -> Result<(), SpeechError> {
        let body = vec![(
            "params".to_string(),
            Json::object([(name, Json::str(value))]),
        )];
        let msg = self.request("set", body).await?;
        if msg.is_named("set") {
            Ok(())
        } else {
            Err(SpeechError::Engine(format!(
                "unexpected '{}' response to set",
                msg.name
            )))
        }
    }

    /// `get [name]`; returns the response params.
    async fn get(&mut self, name: &str) -> Result<Json, SpeechError> {
        let body = vec![("params".to_string(), Json::Array(vec![Json::str(name)]))];
        let msg = self.request("get", body).await?;
        if !msg.is_named("get") {
            return Err(SpeechError::Engine(format!(
                "unexpected '{}' response to get",
                msg.name
            )));
        }
        match msg.params() {
            Some(p @ Json::Object(o)) if !o.is_empty() => Ok(p.clone()),
            _ => Err(SpeechError::Engine("no 'get' parameters returned".into())),
        }
    }

    /// Close with 1000 and wait (bounded) for the task; abort it if it is stuck.
    async fn shutdown(&mut self) {
        self.conn.closing.store(true, Ordering::Release);
        let _ = self.cmd_tx.try_send(Cmd::Close);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(CLOSE_WAIT * 2, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        self.active = None;
    }
}

impl EngineSession for AeapSession {
    fn engine_name(&self) -> &str {
        &self.engine
    }

    /// READY (no message is sent, as Asterisk). On a dead connection the state becomes DONE
    /// with the error right away, so SpeechBackground does not wait for audio nobody hears.
    fn start(&mut self) -> Result<(), SpeechError> {
        if let Some(v) = self.vad.as_mut() {
            v.reset();
        }
        if self.conn.alive.load(Ordering::Acquire) {
            self.shared.set_state(SpeechState::Ready);
        } else {
            let e = self.lost_error();
            self.shared.fail(e.to_string());
        }
        Ok(())
    }

    fn write(&mut self, frame: &Frame) {
        if let Some(v) = self.vad.as_mut() {
            if v.process(frame.format, &frame.data) {
                self.shared.set_quiet(Instant::now());
            }
        }
        if !self.conn.alive.load(Ordering::Relaxed) {
            return;
        }
        match self.audio_tx.try_send(frame.data.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.conn.dropped.fetch_add(1, Ordering::Relaxed);
                self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn dtmf<'a>(&'a mut self, digits: &'a str) -> BoxFuture<'a, Result<(), SpeechError>> {
        Box::pin(self.set("dtmf", digits))
    }

    fn change<'a>(
        &'a mut self,
        name: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), SpeechError>> {
        Box::pin(self.set(name, value))
    }

    /// `get [name]`: the first key of the answer must be `name` with a string value.
    fn get_setting<'a>(&'a mut self, name: &'a str) -> BoxFuture<'a, Result<String, SpeechError>> {
        Box::pin(async move {
            let params = self.get(name).await?;
            match params.first_member() {
                Some((k, Json::String(v))) if k == name => Ok(v.clone()),
                Some((k, _)) if k == name => {
                    Err(SpeechError::Engine(format!("'{name}' is not a string")))
                }
                Some((k, _)) => Err(SpeechError::Engine(format!(
                    "asked for '{name}', got '{k}'"
                ))),
                None => Err(SpeechError::Engine("no 'get' parameters returned".into())),
            }
        })
    }

    fn change_results_type(&mut self, t: ResultsType) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(async move { self.set("results_type", t.as_str()).await })
    }

    /// Cached results, else `get ["results"]` (reversed like `set results`). `None` when there
    /// are none or the request fails.
    fn get_results(&mut self) -> BoxFuture<'_, Option<Vec<SpeechResult>>> {
        Box::pin(async move {
            if let Some(r) = self.shared.lock().results.clone() {
                return Some(r);
            }
            match self.get("results").await {
                Ok(params) => match params.first_member() {
                    Some(("results", v)) => {
                        let mut r = parse_results(v);
                        r.reverse();
                        (!r.is_empty()).then_some(r)
                    }
                    _ => {
                        tracing::warn!(engine = %self.engine, "Unable to 'get' speech results");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(engine = %self.engine, "Unable to 'get' speech results: {e}");
                    None
                }
            }
        })
    }

    fn destroy(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.shutdown())
    }
}

impl Drop for AeapSession {
    fn drop(&mut self) {
        // Not destroyed explicitly: the task sees the command channel close and closes (1000).
        self.conn.closing.store(true, Ordering::Release);
    }
}

/// The task that owns one socket.
struct Connection {
    url: String,
    engine: String,
    shared: Arc<SpeechShared>,
    conn: Arc<ConnState>,
    partial_results: bool,
    stats: Arc<ClientStats>,
    tx: Transactions,
    waiters: HashMap<String, oneshot::Sender<Result<Message, SpeechError>>>,
}

impl Connection {
    async fn run(
        mut self,
        mut ws: WsStream,
        mut cmd_rx: mpsc::Receiver<Cmd>,
        mut audio_rx: mpsc::Receiver<Bytes>,
    ) {
        let lost: Option<String> = loop {
            let deadline = self.tx.poll_timeout();
            let timer = async move {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(Cmd::Request { name, body, reply }) => {
                        let (id, text) = self.tx.send_request(Instant::now(), name, &body);
                        self.waiters.insert(id, reply);
                        if let Err(e) = ws.send(WsMessage::text(text)).await {
                            break Some(format!("write failed: {e}"));
                        }
                    }
                    Some(Cmd::Close) | None => {
                        self.conn.closing.store(true, Ordering::Release);
                        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                        let close = async {
                            ws.close(Some(frame)).await.ok();
                            // Wait for the peer's close (or the end of the stream).
                            while let Some(Ok(_)) = ws.next().await {}
                        };
                        let _ = tokio::time::timeout(CLOSE_WAIT, close).await;
                        break None;
                    }
                },
                frame = audio_rx.recv() => {
                    if let Some(b) = frame {
                        if let Err(e) = ws.send(WsMessage::Binary(b)).await {
                            break Some(format!("write failed: {e}"));
                        }
                        self.stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                msg = ws.next() => match msg {
                    None => break Some("connection closed".into()),
                    Some(Err(e)) => break Some(e.to_string()),
                    Some(Ok(WsMessage::Text(t))) => {
                        if let Err(why) = self.on_text(&mut ws, t.as_str()).await {
                            break Some(why);
                        }
                    }
                    Some(Ok(WsMessage::Close(f))) => {
                        break Some(match f {
                            Some(f) if f.reason.is_empty() => format!("closed by peer (code {})", u16::from(f.code)),
                            Some(f) => format!("closed by peer (code {}: {})", u16::from(f.code), f.reason.as_str()),
                            None => "closed by peer".into(),
                        });
                    }
                    // Binary from the app is dropped (res_speech_aeap sets no on_binary);
                    // pings are answered by tungstenite.
                    Some(Ok(_)) => {}
                },
                _ = timer => {
                    for ev in self.tx.handle_timeout(Instant::now()) {
                        self.on_event_timeout(ev);
                    }
                }
            }
        };
        if let Some(why) = &lost {
            *self.conn.lost.lock() = Some(why.clone());
        }
        self.conn.alive.store(false, Ordering::SeqCst);
        for (id, _) in self.tx.fail_all() {
            if let Some(w) = self.waiters.remove(&id) {
                let _ = w.send(Err(SpeechError::Disconnected(format!(
                    "aeap connection to {} closed",
                    self.url
                ))));
            }
        }
        self.waiters.clear();
        if let Some(why) = lost {
            if !self.conn.closing.load(Ordering::Acquire)
                && self.conn.established.load(Ordering::SeqCst)
            {
                self.stats.connections_lost.fetch_add(1, Ordering::Relaxed);
                let msg = format!("aeap connection to {} lost: {}", self.url, why);
                tracing::warn!(engine = %self.engine, "{msg}");
                self.shared.fail(msg);
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
        }
    }

    fn on_event_timeout(&mut self, ev: Event) {
        if let Event::Timeout { id, name } = ev {
            tracing::warn!(engine = %self.engine, "AEAP message '{name}' timed out");
            self.stats
                .requests_timed_out
                .fetch_add(1, Ordering::Relaxed);
            if let Some(w) = self.waiters.remove(&id) {
                let _ = w.send(Err(SpeechError::Timeout(format!(
                    "message '{name}' timed out"
                ))));
            }
        }
    }

    /// Handle one text frame. `Err` = disconnect with that reason.
    async fn on_text(&mut self, ws: &mut WsStream, text: &str) -> Result<(), String> {
        for ev in self.tx.handle_text(Instant::now(), text) {
            let reply = match ev {
                Event::Response { id, msg, .. } => {
                    let reply = (!handled_response(&msg.name))
                        .then(|| encode_response(&msg.name, &msg.id, &[], Some(UNSUPPORTED)));
                    if let Some(w) = self.waiters.remove(&id) {
                        let _ = w.send(Ok(msg));
                    }
                    reply
                }
                Event::Failed { id, request, error } => {
                    tracing::warn!(engine = %self.engine, "AEAP '{request}' failed: {error}");
                    if let Some(w) = self.waiters.remove(&id) {
                        let _ = w.send(Err(SpeechError::Engine(error)));
                    }
                    None
                }
                Event::Request(msg) => Some(self.handle_request(&msg)),
                Event::PeerError { name, error, .. } => {
                    tracing::warn!(engine = %self.engine, "AEAP peer error on '{name}': {error}");
                    None
                }
                Event::Unmatched(msg) => {
                    tracing::debug!(engine = %self.engine, "ignoring unmatched '{}' response {}", msg.name, msg.id);
                    (!handled_response(&msg.name))
                        .then(|| encode_response(&msg.name, &msg.id, &[], Some(UNSUPPORTED)))
                }
                ev @ Event::Timeout { .. } => {
                    self.on_event_timeout(ev);
                    None
                }
                Event::Invalid(DecodeError::TooLarge(n)) => {
                    return Err(format!(
                        "message of {n} bytes exceeds the {MAX_TEXT_LEN}-byte limit"
                    ));
                }
                Event::Invalid(e) => {
                    tracing::debug!(engine = %self.engine, "dropping invalid AEAP message: {e}");
                    None
                }
            };
            if let Some(r) = reply {
                ws.send(WsMessage::text(r))
                    .await
                    .map_err(|e| format!("write failed: {e}"))?;
            }
        }
        Ok(())
    }

    /// Requests from the application: only `set` (`handle_request_set`).
    fn handle_request(&mut self, msg: &Message) -> String {
        if !msg.is_named("set") {
            return encode_response(&msg.name, &msg.id, &[], Some(UNSUPPORTED));
        }
        match self.handle_set(msg) {
            Ok(()) => encode_response(&msg.name, &msg.id, &[], None),
            Err(e) => {
                tracing::warn!(engine = %self.engine, "AEAP set from app refused: {e}");
                encode_response(&msg.name, &msg.id, &[], Some(e))
            }
        }
    }

    fn handle_set(&mut self, msg: &Message) -> Result<(), &'static str> {
        let (key, value) = msg
            .params()
            .and_then(Json::first_member)
            .ok_or("no parameter(s) requested")?;
        if key == "results" {
            let results = parse_results(value);
            if results.is_empty() {
                self.shared.set_state(SpeechState::Done);
            } else {
                self.shared.push_results(results);
            }
            return Ok(());
        }
        if key == "partial_results" && self.partial_results {
            if let Some(text) = parse_results(value).into_iter().next().map(|r| r.text) {
                self.shared.set_partial(text);
            }
            return Ok(());
        }
        Err("can only set 'results'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_parsing_like_asterisk() {
        let v = Json::parse(
            r#"[{"text":"hello","score":87,"grammar":"g1","best":0},{"text":"x","score":0.87},{"score":"5","best":2},7]"#,
        )
        .unwrap();
        let r = parse_results(&v);
        assert_eq!(r.len(), 4);
        assert_eq!(
            r[0],
            SpeechResult {
                text: "hello".into(),
                score: 87,
                grammar: Some("g1".into()),
                nbest: 0
            }
        );
        assert_eq!(r[1].score, 0);
        assert_eq!(
            r[2],
            SpeechResult {
                text: String::new(),
                score: 0,
                grammar: None,
                nbest: 2
            }
        );
        assert_eq!(r[3].text, "");
        assert!(parse_results(&Json::str("nope")).is_empty());
    }

    #[test]
    fn setup_response_check() {
        let ok = super::super::message::decode(
            r#"{"response":"setup","id":"1","codecs":[{"name":"ulaw"}]}"#,
        )
        .unwrap();
        assert!(check_setup_response(&ok, "ulaw", "u").is_ok());
        assert!(check_setup_response(&ok, "slin", "u").is_err());
        let case = super::super::message::decode(
            r#"{"response":"setup","id":"1","codecs":[{"name":"ULAW"}]}"#,
        )
        .unwrap();
        assert!(check_setup_response(&case, "ulaw", "u").is_err());
        let empty =
            super::super::message::decode(r#"{"response":"setup","id":"1","codecs":[]}"#).unwrap();
        assert!(check_setup_response(&empty, "ulaw", "u").is_err());
    }

    #[test]
    fn sync_registers_speech_clients_only() {
        let mut cfg = AeapConfig::default();
        cfg.clients
            .push(ClientConfig::new("stt", "ws://127.0.0.1:1"));
        let mut other = ClientConfig::new("other", "ws://127.0.0.1:2");
        other.protocol = Some("text_to_speech".into());
        cfg.clients.push(other);
        let reg = EngineRegistry::default();
        let (engines, errors) = sync_speech_engines(&reg, &[], &cfg);
        assert!(errors.is_empty());
        assert_eq!(engines.len(), 1);
        assert_eq!(reg.find("").unwrap().name(), "stt");
        assert!(reg.find("other").is_err());
        // Unchanged reload keeps the same engine object.
        let (again, _) = sync_speech_engines(&reg, &engines, &cfg);
        assert!(Arc::ptr_eq(&again[0], &engines[0]));
        // Changed codecs: re-registered.
        cfg.clients[0].codecs = vec![Format::Alaw];
        let (changed, errors) = sync_speech_engines(&reg, &again, &cfg);
        assert!(errors.is_empty());
        assert!(!Arc::ptr_eq(&changed[0], &engines[0]));
        assert_eq!(reg.find("stt").unwrap().formats(), vec![Format::Alaw]);
        // Removed.
        let (gone, _) = sync_speech_engines(&reg, &changed, &AeapConfig::default());
        assert!(gone.is_empty());
        assert!(reg.find("stt").is_err());
        let text = show_clients(&cfg, &changed);
        assert!(text.starts_with("client: stt\n"));
        assert!(text.contains("\tsessions: 0 active, 0 created, 0 failed, 0 lost\n"));
        assert!(text.contains("client: other\n"));
    }

    #[tokio::test]
    async fn create_fails_fast_when_nobody_listens() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let mut c = ClientConfig::new("stt", format!("ws://127.0.0.1:{port}"));
        c.urls.push(format!("ws://127.0.0.1:{port}/second"));
        let e = AeapEngine::new(c);
        let err = match e.create(Format::Ulaw, SpeechShared::new()).await {
            Err(err) => err,
            Ok(_) => panic!("created without a server"),
        };
        let text = err.to_string();
        assert!(text.contains("/second"), "both URLs tried: {text}");
        assert_eq!(e.stats().create_failures.load(Ordering::Relaxed), 1);
        assert_eq!(e.stats().active.load(Ordering::Relaxed), 0);
        // A format the client does not allow.
        assert!(matches!(
            e.create(Format::Alaw, SpeechShared::new()).await,
            Err(SpeechError::NoFormat(_))
        ));
    }
}
