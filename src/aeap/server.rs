//! An AEAP `speech_to_text` server: voxpbx's own speech engines (whisper, ...) served to
//! Asterisk's res_speech_aeap, unchanged (spec A.3-A.6 from the application's side).
//!
//! Per connection (one per Asterisk speech object):
//! 1. WebSocket upgrade: `speech_to_text` is echoed when offered; a client offering only other
//!    subprotocols is refused (400); no extensions are ever negotiated.
//! 2. `setup`: the first offered codec among `ulaw`, `alaw`, `slin` (8 kHz) that the engine can
//!    take (directly, or decoded to slin 8/16 kHz here) is chosen and answered as
//!    `codecs:[{name}]`, `params` echoed; none -> `error_msg "No supported codec(s)"`. An engine
//!    session is created and started (READY). Setup `params` are applied with `change()`
//!    (errors ignored), except `engine`, which picks the engine when the server has none fixed.
//! 3. Binary frames feed `write()` while READY. When the engine's state turns DONE the server
//!    sends `{"request":"set","params":{"results":[...]},"id":...}` (array reversed so that
//!    Asterisk, which prepends, ends up with the engine's order). DONE without results (no
//!    input, engine error) sends `results: []`, which ends Asterisk's SpeechBackground. The
//!    session is restarted when audio comes again (Asterisk's next SpeechBackground); an engine
//!    that cannot restart closes the connection (1011), which Asterisk turns into DONE.
//! 4. `get ["results"]` answers from what there is (cached results, the engine's `get`, the
//!    partial transcript, else `[]`); `get [name]` uses `get_setting`; `set {dtmf|results_type|
//!    name}` uses the session. Unknown names get Asterisk's "Unsupported and/or un-handled
//!    message"; invalid JSON is dropped; text over 32767 bytes or audio beyond the per-session
//!    limit closes the connection (1009 / 1008).

use super::audio::ToSlin;
pub use super::config::ServerLimits;
use super::message::{encode_response, DecodeError, Json, Message, UNSUPPORTED};
use super::transaction::{Event, Transactions};
use crate::media::{Format, Frame};
use crate::speech::engine::{
    Engine, EngineRegistry, EngineSession, ResultsType, SpeechError, SpeechResult, SpeechShared,
    SpeechState,
};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// The subprotocol Asterisk offers for speech.
pub const PROTOCOL: &str = "speech_to_text";

type Ws = WebSocketStream<TcpStream>;

/// Server counters (for a CLI `aeap show server`).
#[derive(Debug, Default)]
pub struct ServerStats {
    pub active: AtomicUsize,
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub results_sent: AtomicU64,
    pub invalid_messages: AtomicU64,
}

/// Serve AEAP speech sessions on `listener` until the task is dropped/aborted.
/// `engine_name`: the engine every session uses; `None` = the `engine` setup param if given,
/// else the registry's default engine.
pub async fn serve(
    listener: TcpListener,
    engines: Arc<EngineRegistry>,
    engine_name: Option<String>,
    limits: ServerLimits,
) {
    serve_with_stats(
        listener,
        engines,
        engine_name,
        limits,
        Arc::new(ServerStats::default()),
    )
    .await
}

/// [`serve`] with counters the caller can read.
pub async fn serve_with_stats(
    listener: TcpListener,
    engines: Arc<EngineRegistry>,
    engine_name: Option<String>,
    limits: ServerLimits,
    stats: Arc<ServerStats>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_sessions.max(1)));
    let ctx = Arc::new(Ctx {
        engines,
        engine_name,
        limits,
        stats,
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("AEAP server accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
                    ctx.stats.active.fetch_add(1, Ordering::Relaxed);
                    handle_connection(stream, peer, &ctx).await;
                    ctx.stats.active.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
            Err(_) => {
                ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, "AEAP server full ({} sessions), refusing", ctx.limits.max_sessions);
                tokio::spawn(async move {
                    let mut stream = stream;
                    let _ = stream
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        }
    }
}

struct Ctx {
    engines: Arc<EngineRegistry>,
    engine_name: Option<String>,
    limits: ServerLimits,
    stats: Arc<ServerStats>,
}

fn server_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_frame_size(Some(65535))
        .max_message_size(Some(65535))
}

/// The upgrade callback: echo `speech_to_text`, refuse clients offering only other protocols.
#[allow(clippy::result_large_err)] // the signature is tungstenite's Callback
fn negotiate(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offered: Vec<String> = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(resp);
    }
    if offered.iter().any(|p| p == PROTOCOL) {
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(PROTOCOL));
        return Ok(resp);
    }
    let mut err = ErrorResponse::new(Some(format!(
        "unsupported subprotocol; this server speaks '{PROTOCOL}'\n"
    )));
    *err.status_mut() = StatusCode::BAD_REQUEST;
    Err(err)
}

async fn handle_connection(stream: TcpStream, peer: SocketAddr, ctx: &Ctx) {
    let accept = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        negotiate,
        Some(server_ws_config()),
    );
    let ws = match tokio::time::timeout(ctx.limits.handshake_timeout, accept).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::info!(%peer, "AEAP upgrade failed: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "AEAP upgrade timed out");
            return;
        }
    };
    tracing::debug!(%peer, "AEAP session connected");
    let mut conn = ServerConn {
        ctx,
        peer,
        tx: Transactions::new(ctx.limits.request_timeout),
        live: None,
    };
    let mut ws = ws;
    let end = conn.run(&mut ws).await;
    match end {
        End::Peer => {
            tracing::debug!(%peer, "AEAP session closed by peer");
            // Send the queued close reply (tungstenite answers a peer's close on flush).
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                let _ = ws.flush().await;
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
        End::Error(e) => tracing::info!(%peer, "AEAP session ended: {e}"),
        End::Close(code, reason) => {
            tracing::info!(%peer, "AEAP session closed: {reason}");
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let close = async {
                let _ = ws.close(Some(frame)).await;
                while let Some(Ok(_)) = ws.next().await {}
            };
            let _ = tokio::time::timeout(Duration::from_millis(500), close).await;
        }
    }
    if let Some(live) = conn.live.as_mut() {
        live.session.destroy().await;
    }
}

enum End {
    Peer,
    Error(String),
    Close(CloseCode, String),
}

/// The engine side of one set-up connection.
struct Live {
    session: Box<dyn EngineSession>,
    shared: Arc<SpeechShared>,
    /// Codec on the wire.
    wire: Format,
    convert: Option<ToSlin>,
    buf: Vec<u8>,
    /// Audio received so far, in samples at the wire rate.
    samples: u64,
    max_samples: u64,
    ts: u32,
    seq: u16,
    /// The last utterance was reported; restart the engine when audio comes again.
    needs_restart: bool,
    frames_since_start: u64,
}

struct ServerConn<'a> {
    ctx: &'a Ctx,
    peer: SocketAddr,
    tx: Transactions,
    live: Option<Live>,
}

impl ServerConn<'_> {
    async fn run(&mut self, ws: &mut Ws) -> End {
        let setup_deadline = Instant::now() + self.ctx.limits.setup_timeout;
        loop {
            let shared = self.live.as_ref().map(|l| l.shared.clone());
            let mut notified = std::pin::pin!(shared.as_ref().map(|s| s.changed()));
            if let Some(n) = notified.as_mut().as_pin_mut() {
                // Register interest before checking, so a change in between is not lost.
                n.enable();
            }
            let pending_done = self.live.as_ref().is_some_and(|l| !l.needs_restart)
                && shared.as_ref().map(|s| s.state()) == Some(SpeechState::Done);
            if pending_done {
                if let Err(e) = self.report_done(ws).await {
                    return End::Error(e);
                }
                continue;
            }
            let deadline = if self.live.is_some() {
                self.tx.poll_timeout()
            } else {
                Some(setup_deadline)
            };
            let timer = async move {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending::<()>().await,
                }
            };
            let changed = async {
                match notified.as_mut().as_pin_mut() {
                    Some(n) => n.await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = changed => {}
                _ = timer => {
                    if self.live.is_none() {
                        return End::Close(CloseCode::Policy, "no setup received in time".into());
                    }
                    for ev in self.tx.handle_timeout(Instant::now()) {
                        if let Event::Timeout { name, .. } = ev {
                            tracing::warn!(peer = %self.peer, "AEAP '{name}' to Asterisk timed out");
                        }
                    }
                }
                msg = ws.next() => match msg {
                    None | Some(Ok(WsMessage::Close(_))) => return End::Peer,
                    Some(Err(e)) => return End::Error(e.to_string()),
                    Some(Ok(WsMessage::Binary(data))) => {
                        if let Some(end) = self.on_audio(data) {
                            return end;
                        }
                    }
                    Some(Ok(WsMessage::Text(t))) => {
                        if let Err(end) = self.on_text(ws, t.as_str()).await {
                            return end;
                        }
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    fn on_audio(&mut self, data: Bytes) -> Option<End> {
        let live = self.live.as_mut()?; // audio before setup is dropped
        let samples = live.wire.samples_in(data.len());
        live.samples += samples as u64;
        if live.samples > live.max_samples {
            return Some(End::Close(
                CloseCode::Policy,
                format!(
                    "audio limit of {} s exceeded",
                    self.ctx.limits.max_audio.as_secs()
                ),
            ));
        }
        if live.needs_restart {
            // Asterisk sends audio again only after restarting its side (a new
            // SpeechBackground): start the next utterance now.
            live.needs_restart = false;
            live.frames_since_start = 0;
            live.shared.reset();
            let started = live.session.start();
            let error = live.shared.lock().error.clone();
            if let Err(e) = started {
                return Some(End::Close(
                    CloseCode::Error,
                    format!("speech engine failed: {e}"),
                ));
            }
            if live.shared.state() == SpeechState::Done {
                if let Some(e) = error {
                    return Some(End::Close(
                        CloseCode::Error,
                        format!("speech engine failed: {e}"),
                    ));
                }
            }
        }
        if live.shared.state() != SpeechState::Ready {
            return None;
        }
        let mut frame = match live.convert.as_mut() {
            Some(c) => {
                c.convert(&data, &mut live.buf);
                Frame::new(c.target(), Bytes::copy_from_slice(&live.buf))
            }
            None => Frame::new(live.wire, data),
        };
        frame.ts = live.ts;
        frame.seq = live.seq;
        live.ts = live.ts.wrapping_add(frame.samples() as u32);
        live.seq = live.seq.wrapping_add(1);
        live.frames_since_start += 1;
        live.session.write(&frame);
        None
    }

    async fn on_text(&mut self, ws: &mut Ws, text: &str) -> Result<(), End> {
        for ev in self.tx.handle_text(Instant::now(), text) {
            let reply = match ev {
                Event::Request(msg) => Some(self.on_request(&msg).await),
                Event::Response { .. } => None,
                Event::Failed { request, error, .. } => {
                    tracing::warn!(peer = %self.peer, "Asterisk refused our '{request}': {error}");
                    None
                }
                Event::PeerError { name, error, .. } => {
                    tracing::warn!(peer = %self.peer, "AEAP peer error on '{name}': {error}");
                    None
                }
                Event::Unmatched(_) | Event::Timeout { .. } => None,
                Event::Invalid(DecodeError::TooLarge(n)) => {
                    return Err(End::Close(
                        CloseCode::Size,
                        format!("message of {n} bytes is too large"),
                    ));
                }
                Event::Invalid(e) => {
                    self.ctx
                        .stats
                        .invalid_messages
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %self.peer, "dropping invalid AEAP message: {e}");
                    None
                }
            };
            if let Some(r) = reply {
                ws.send(WsMessage::text(r))
                    .await
                    .map_err(|e| End::Error(e.to_string()))?;
            }
        }
        Ok(())
    }

    async fn on_request(&mut self, msg: &Message) -> String {
        let result = if msg.is_named("setup") {
            self.on_setup(msg).await
        } else if msg.is_named("get") {
            self.on_get(msg).await
        } else if msg.is_named("set") {
            self.on_set(msg).await.map(|()| Vec::new())
        } else {
            Err(UNSUPPORTED.to_string())
        };
        match result {
            Ok(body) => encode_response(&msg.name, &msg.id, &body, None),
            Err(e) => encode_response(&msg.name, &msg.id, &[], Some(&e)),
        }
    }

    fn resolve_engine(&self, msg: &Message) -> Result<Arc<dyn Engine>, String> {
        let from_params = msg
            .params()
            .and_then(|p| p.get("engine"))
            .and_then(Json::as_str);
        let name = self
            .ctx
            .engine_name
            .as_deref()
            .or(from_params)
            .unwrap_or("");
        self.ctx.engines.find(name).map_err(|e| e.to_string())
    }

    async fn on_setup(&mut self, msg: &Message) -> Result<Vec<(String, Json)>, String> {
        if self.live.is_some() {
            return Err("already set up".into());
        }
        let offered: Vec<&str> = msg
            .get("codecs")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.get("name").and_then(Json::as_str))
                    .collect()
            })
            .unwrap_or_default();
        if offered.is_empty() {
            return Err("Missing request parameters: codecs".into());
        }
        let engine = self.resolve_engine(msg)?;
        let formats = engine.formats();
        let chosen = offered.iter().find_map(|name| {
            let wire = wire_format(name)?;
            if formats.contains(&wire) {
                return Some((*name, wire, None));
            }
            [Format::Slin8, Format::Slin16]
                .into_iter()
                .filter(|f| formats.contains(f))
                .find_map(|f| ToSlin::new(wire, f))
                .map(|c| (*name, wire, Some(c)))
        });
        let Some((name, wire, convert)) = chosen else {
            return Err("No supported codec(s)".into());
        };
        let engine_format = convert.as_ref().map(|c| c.target()).unwrap_or(wire);
        let shared = SpeechShared::new();
        let mut session = engine
            .create(engine_format, shared.clone())
            .await
            .map_err(|e| format!("speech engine '{}': {e}", engine.name()))?;
        let params = msg.params().cloned().unwrap_or(Json::Object(Vec::new()));
        if let Some(members) = params.as_object() {
            for (k, v) in members {
                if k == "engine" {
                    continue;
                }
                if let Some(v) = v.as_str() {
                    if let Err(e) = session.change(k, v).await {
                        tracing::debug!(peer = %self.peer, "setup param '{k}' not applied: {e}");
                    }
                }
            }
        }
        shared.reset();
        if let Err(e) = session.start() {
            session.destroy().await;
            return Err(format!("speech engine '{}': {e}", engine.name()));
        }
        tracing::info!(peer = %self.peer, engine = %engine.name(), codec = name, "AEAP session set up");
        let max_samples = self.ctx.limits.max_audio.as_secs_f64() * wire.rate() as f64;
        self.live = Some(Live {
            session,
            shared,
            wire,
            convert,
            buf: Vec::with_capacity(640),
            samples: 0,
            max_samples: max_samples as u64,
            ts: 0,
            seq: 0,
            needs_restart: false,
            frames_since_start: 0,
        });
        Ok(vec![
            (
                "codecs".into(),
                Json::Array(vec![Json::object([("name", Json::str(name))])]),
            ),
            ("params".into(), params),
        ])
    }

    async fn on_get(&mut self, msg: &Message) -> Result<Vec<(String, Json)>, String> {
        let names: Vec<String> = msg
            .params()
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Json::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            return Err("no parameter(s) requested".into());
        }
        let timeout = self.ctx.limits.request_timeout;
        let live = self.live.as_mut().ok_or("setup required")?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if name == "results" {
                let cached = live.shared.lock().results.clone();
                let results = match cached {
                    Some(r) => r,
                    None => {
                        let from_engine = tokio::time::timeout(timeout, live.session.get_results())
                            .await
                            .ok()
                            .flatten();
                        match from_engine {
                            Some(r) => r,
                            None => partial_result(&live.shared).into_iter().collect(),
                        }
                    }
                };
                out.push((name, results_json(&results)));
            } else {
                let v = tokio::time::timeout(timeout, live.session.get_setting(&name))
                    .await
                    .map_err(|_| format!("'{name}' timed out"))?
                    .map_err(|e| e.to_string())?;
                out.push((name, Json::str(v)));
            }
        }
        Ok(vec![("params".into(), Json::Object(out))])
    }

    async fn on_set(&mut self, msg: &Message) -> Result<(), String> {
        let params = msg
            .params()
            .and_then(Json::as_object)
            .filter(|o| !o.is_empty())
            .ok_or("no parameter(s) requested")?;
        let timeout = self.ctx.limits.request_timeout;
        let live = self.live.as_mut().ok_or("setup required")?;
        for (k, v) in params {
            let v = v
                .as_str()
                .ok_or_else(|| format!("value of '{k}' must be a string"))?;
            let r: Result<(), SpeechError> = match k.as_str() {
                "dtmf" => tokio::time::timeout(timeout, live.session.dtmf(v))
                    .await
                    .unwrap_or_else(|_| Err(timed_out(k))),
                "results_type" => {
                    let t = ResultsType::parse(v)
                        .ok_or_else(|| format!("invalid results_type '{v}'"))?;
                    tokio::time::timeout(timeout, live.session.change_results_type(t))
                        .await
                        .unwrap_or_else(|_| Err(timed_out(k)))
                }
                _ => tokio::time::timeout(timeout, live.session.change(k, v))
                    .await
                    .unwrap_or_else(|_| Err(timed_out(k))),
            };
            r.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The engine finished an utterance: send its results to Asterisk (an empty list when it
    /// has none, which still ends SpeechBackground). The engine is restarted when audio comes
    /// again. An engine that ends without having heard a frame and without results or error
    /// (an idle timer while Asterisk sends nothing) is restarted silently.
    async fn report_done(&mut self, ws: &mut Ws) -> Result<(), String> {
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        live.needs_restart = true;
        let (results, error) = {
            let g = live.shared.lock();
            (g.results.clone(), g.error.clone())
        };
        if live.frames_since_start == 0 && results.is_none() && error.is_none() {
            return Ok(());
        }
        if let Some(e) = &error {
            tracing::info!(peer = %self.peer, "speech engine ended the utterance: {e}");
        }
        let results = results.unwrap_or_default();
        let body = vec![(
            "params".to_string(),
            Json::object([("results", results_json(&results))]),
        )];
        let (_, text) = self.tx.send_request(Instant::now(), "set", &body);
        self.ctx.stats.results_sent.fetch_add(1, Ordering::Relaxed);
        ws.send(WsMessage::text(text))
            .await
            .map_err(|e| e.to_string())
    }
}

fn timed_out(what: &str) -> SpeechError {
    SpeechError::Timeout(format!("'{what}' timed out"))
}

/// Wire codec names the server accepts (exact, as Asterisk sends them).
fn wire_format(name: &str) -> Option<Format> {
    match name {
        "ulaw" => Some(Format::Ulaw),
        "alaw" => Some(Format::Alaw),
        "slin" => Some(Format::Slin8),
        _ => None,
    }
}

fn partial_result(shared: &SpeechShared) -> Option<SpeechResult> {
    let text = shared.lock().partial.clone()?;
    Some(SpeechResult {
        text,
        score: 0,
        grammar: None,
        nbest: 0,
    })
}

/// Results in dialplan order -> the JSON array Asterisk must receive (reversed, because
/// Asterisk prepends each element).
pub fn results_json(results: &[SpeechResult]) -> Json {
    Json::Array(
        results
            .iter()
            .rev()
            .map(|r| {
                let mut m = vec![
                    ("text".to_string(), Json::str(r.text.clone())),
                    ("score".into(), Json::int(r.score as i64)),
                ];
                if let Some(g) = &r.grammar {
                    m.push(("grammar".into(), Json::str(g.clone())));
                }
                m.push(("best".into(), Json::int(r.nbest as i64)));
                Json::Object(m)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aeap::client::parse_results;

    #[test]
    fn results_roundtrip_through_asterisk_reversal() {
        let ours = vec![
            SpeechResult {
                text: "sales".into(),
                score: 920,
                grammar: Some("g".into()),
                nbest: 0,
            },
            SpeechResult {
                text: "sails".into(),
                score: 300,
                grammar: None,
                nbest: 0,
            },
        ];
        let json = results_json(&ours);
        assert_eq!(
            json.to_compact(),
            r#"[{"text":"sails","score":300,"best":0},{"text":"sales","score":920,"grammar":"g","best":0}]"#
        );
        // Asterisk prepends each element: emulate with our own client-side parser.
        let mut asterisk = Vec::new();
        for r in parse_results(&json) {
            asterisk.insert(0, r);
        }
        assert_eq!(asterisk, ours);
    }

    #[test]
    fn wire_names_exact() {
        assert_eq!(wire_format("ulaw"), Some(Format::Ulaw));
        assert_eq!(wire_format("slin"), Some(Format::Slin8));
        assert_eq!(wire_format("ULAW"), None);
        assert_eq!(wire_format("slin16"), None);
        assert_eq!(wire_format("opus"), None);
    }

    fn req(protocols: Option<&str>) -> Request {
        let mut b = Request::builder().uri("/");
        if let Some(p) = protocols {
            b = b.header("Sec-WebSocket-Protocol", p);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn subprotocol_negotiation() {
        let r = negotiate(&req(Some("speech_to_text")), Response::new(())).unwrap();
        assert_eq!(
            r.headers().get("Sec-WebSocket-Protocol").unwrap(),
            "speech_to_text"
        );
        let r = negotiate(&req(Some("foo, speech_to_text")), Response::new(())).unwrap();
        assert_eq!(
            r.headers().get("Sec-WebSocket-Protocol").unwrap(),
            "speech_to_text"
        );
        let r = negotiate(&req(None), Response::new(())).unwrap();
        assert!(r.headers().get("Sec-WebSocket-Protocol").is_none());
        let e = negotiate(&req(Some("text_to_speech")), Response::new(())).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
}
