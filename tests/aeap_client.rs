//! voxpbx's AEAP client (the res_speech_aeap equivalent) against a real, independent AEAP
//! engine: tests/python/aeap_engine.py (Python `websockets`), at the Engine/EngineSession level.

mod aeap_support;

use aeap_support::{monotonic_now, wait_until, PyEngine};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use voxpbx::aeap::{AeapEngine, ClientConfig};
use voxpbx::media::{Format, Frame};
use voxpbx::speech::engine::{
    Engine, EngineSession, ResultsType, SpeechError, SpeechResult, SpeechShared, SpeechState,
};

fn cfg(url: &str, params: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new("stt", url);
    c.params = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c
}

async fn create(
    c: ClientConfig,
    format: Format,
) -> (Box<dyn EngineSession>, Arc<SpeechShared>, AeapEngine) {
    let engine = AeapEngine::new(c);
    let shared = SpeechShared::new();
    let session = match engine.create(format, shared.clone()).await {
        Ok(s) => s,
        Err(e) => panic!("create failed: {e}"),
    };
    (session, shared, engine)
}

async fn create_err(c: ClientConfig) -> SpeechError {
    let engine = AeapEngine::new(c);
    match engine.create(Format::Ulaw, SpeechShared::new()).await {
        Ok(_) => panic!("create should fail"),
        Err(e) => e,
    }
}

/// A 20 ms ulaw frame: silence, or a loud square wave.
fn ulaw_frame(loud: bool) -> Frame {
    let byte = if loud { 0x80 } else { 0xFF };
    let data: Vec<u8> = (0..160)
        .map(|i| if loud && i % 16 < 8 { 0x00 } else { byte })
        .collect();
    Frame::new(Format::Ulaw, Bytes::from(data))
}

/// Write `n` frames (the engine acts after 10 by default), then wait for DONE.
async fn speak(session: &mut Box<dyn EngineSession>, shared: &Arc<SpeechShared>, n: usize) -> bool {
    for _ in 0..n {
        session.write(&ulaw_frame(false));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_until(shared, Duration::from_secs(5), |s| {
        s.state() == SpeechState::Done
    })
    .await
}

fn results(shared: &SpeechShared) -> Vec<SpeechResult> {
    shared.lock().results.clone().unwrap_or_default()
}

fn r(text: &str, score: i32, grammar: Option<&str>, nbest: i32) -> SpeechResult {
    SpeechResult {
        text: text.into(),
        score,
        grammar: grammar.map(str::to_string),
        nbest,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_fields_order_and_handshake() {
    let py = PyEngine::start(&[]);
    let url = format!("{}/stt?lang=en", py.url());
    let (mut s, _shared, _e) = create(cfg(&url, &[("language", "en-US")]), Format::Ulaw).await;
    let raw = s.get_setting("raw_setup").await.unwrap();
    let prefix = r#"{"request":"setup","version":"0.1.0","codecs":[{"name":"ulaw"}],"params":{"language":"en-US"},"id":""#;
    assert!(raw.starts_with(prefix), "{raw}");
    let id = raw[prefix.len()..].strip_suffix("\"}").expect("id last");
    assert_eq!(id.len(), 36);
    assert_eq!(id, id.to_ascii_lowercase());
    assert_eq!(
        s.get_setting("requested_subprotocol").await.unwrap(),
        "speech_to_text"
    );
    assert_eq!(
        s.get_setting("subprotocol").await.unwrap(),
        "speech_to_text"
    );
    assert_eq!(s.get_setting("path").await.unwrap(), "/stt?lang=en");
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_always_present_and_slin_codec_name() {
    let py = PyEngine::start(&[]);
    let mut c = cfg(&py.url(), &[]);
    c.codecs = vec![Format::Slin16];
    let (mut s, _shared, _e) = create(c, Format::Slin16).await;
    let raw = s.get_setting("raw_setup").await.unwrap();
    assert!(
        raw.contains(r#""codecs":[{"name":"slin"}],"params":{},"id":"#),
        "{raw}"
    );
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_without_subprotocol_echo_is_accepted() {
    // Asterisk treats the response's Sec-WebSocket-Protocol as optional (gorilla-style servers).
    let py = PyEngine::start(&["--no-subprotocol"]);
    let (mut s, _shared, _e) = create(cfg(&py.url(), &[]), Format::Ulaw).await;
    assert_eq!(s.get_setting("subprotocol").await.unwrap(), "");
    assert_eq!(
        s.get_setting("requested_subprotocol").await.unwrap(),
        "speech_to_text"
    );
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_failures() {
    let py = PyEngine::start(&[]);
    let e = create_err(cfg(&py.url(), &[("scenario", "codec_mismatch")])).await;
    assert!(
        e.to_string().contains("setup codec 'alaw' unsupported"),
        "{e}"
    );
    let e = create_err(cfg(&py.url(), &[("scenario", "setup_error")])).await;
    assert!(e.to_string().contains("No supported codec(s)"), "{e}");
    // No answer at all: the 1 s request timeout.
    let t = Instant::now();
    let e = create_err(cfg(&py.url(), &[("scenario", "silent_setup")])).await;
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(e.to_string().contains("timed out"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_second_url() {
    let py = PyEngine::start(&[]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let mut c = cfg(&format!("ws://127.0.0.1:{dead_port}"), &[]);
    c.urls.push(py.url());
    let (mut s, shared, _e) = create(c, Format::Ulaw).await;
    s.start().unwrap();
    assert!(speak(&mut s, &shared, 10).await);
    assert_eq!(results(&shared), vec![r("hello world", 87, Some("g1"), 0)]);
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_via_set_request() {
    let py = PyEngine::start(&[]);
    let (mut s, shared, engine) = create(cfg(&py.url(), &[]), Format::Ulaw).await;
    s.start().unwrap();
    assert_eq!(shared.state(), SpeechState::Ready);
    assert!(speak(&mut s, &shared, 10).await, "no results");
    assert_eq!(results(&shared), vec![r("hello world", 87, Some("g1"), 0)]);
    assert!(shared.lock().error.is_none());
    // Our reply to the app's set, exactly as Asterisk writes it.
    let replies: Vec<String> =
        serde_json::from_str(&s.get_setting("replies").await.unwrap()).unwrap();
    assert_eq!(replies.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&replies[0]).unwrap();
    assert_eq!(
        replies[0],
        format!(
            r#"{{"response":"set","id":"{}"}}"#,
            v["id"].as_str().unwrap()
        )
    );
    // Cached results are returned without asking the engine.
    assert_eq!(s.get_results().await.unwrap(), results(&shared));
    assert_eq!(s.get_setting("audio_bytes").await.unwrap(), "1600");
    s.destroy().await;
    assert_eq!(
        engine
            .stats()
            .active
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_reversed_accumulated_integer_scores() {
    let py = PyEngine::start(&[]);
    let sets = r#"[[{"text":"a","score":10},{"text":"b","score":20,"best":1}],[{"text":"c","score":0.9,"grammar":"g"}]]"#;
    let (mut s, shared, _e) = create(cfg(&py.url(), &[("sets", sets)]), Format::Ulaw).await;
    s.start().unwrap();
    assert!(speak(&mut s, &shared, 10).await);
    assert!(
        wait_until(&shared, Duration::from_secs(5), |sh| sh
            .lock()
            .results
            .as_ref()
            .map(|r| r.len())
            == Some(3))
        .await
    );
    assert_eq!(
        results(&shared),
        vec![
            r("c", 0, Some("g"), 0),
            r("b", 20, None, 1),
            r("a", 10, None, 0)
        ]
    );
    // A restart (SpeechStart) clears them.
    shared.reset();
    s.start().unwrap();
    assert!(shared.lock().results.is_none());
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_settings_and_results_type() {
    let py = PyEngine::start(&[]);
    let (mut s, shared, _e) = create(cfg(&py.url(), &[]), Format::Ulaw).await;
    s.start().unwrap();
    s.dtmf("12").await.unwrap();
    assert_eq!(s.get_setting("dtmf").await.unwrap(), "12");
    s.change("foo", "bar").await.unwrap();
    assert_eq!(s.get_setting("foo").await.unwrap(), "bar");
    s.change_results_type(ResultsType::Nbest).await.unwrap();
    assert_eq!(s.get_setting("results_type").await.unwrap(), "nbest");
    // error_msg in the answer fails the read.
    match s.get_setting("nope").await {
        Err(SpeechError::Engine(m)) => assert!(m.contains("unknown setting 'nope'"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(shared.state(), SpeechState::Ready);
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_requests_get_asterisk_errors() {
    let py = PyEngine::start(&[]);
    let (mut s, shared, _e) =
        create(cfg(&py.url(), &[("scenario", "bad_set")]), Format::Ulaw).await;
    s.start().unwrap();
    assert!(speak(&mut s, &shared, 10).await);
    let replies: Vec<String> =
        serde_json::from_str(&s.get_setting("replies").await.unwrap()).unwrap();
    let errors: Vec<Option<String>> = replies
        .iter()
        .map(|t| {
            serde_json::from_str::<serde_json::Value>(t).unwrap()["error_msg"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    // set {foo,...}; set {}; set without params; frobnicate; (error_msg request: no reply); results.
    assert_eq!(
        errors,
        vec![
            Some("can only set 'results'".to_string()),
            Some("no parameter(s) requested".to_string()),
            Some("no parameter(s) requested".to_string()),
            Some("Unsupported and/or un-handled message".to_string()),
            None,
        ],
        "{replies:?}"
    );
    assert!(replies[3].starts_with(r#"{"response":"frobnicate","id":""#));
    // The request carrying error_msg never reached the handler.
    assert_eq!(results(&shared), vec![r("hello world", 87, Some("g1"), 0)]);
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_closing_mid_utterance_sets_done_at_once() {
    let py = PyEngine::start(&[]);
    let (mut s, shared, engine) =
        create(cfg(&py.url(), &[("scenario", "close_mid")]), Format::Ulaw).await;
    s.start().unwrap();
    assert!(
        speak(&mut s, &shared, 10).await,
        "never DONE after the engine closed"
    );
    let seen = monotonic_now();
    let error = shared.lock().error.clone().expect("an error is recorded");
    assert!(
        error.contains("aeap connection to ws://127.0.0.1") && error.contains("lost"),
        "{error}"
    );
    assert!(error.contains("code 1011"), "{error}");
    let closed_at: f64 = error
        .split("t=")
        .nth(1)
        .and_then(|t| t.trim_end_matches(')').parse().ok())
        .expect("engine close time");
    let reaction = seen - closed_at;
    assert!(
        reaction < 0.1,
        "DONE {reaction:.3} s after the engine closed"
    );
    // Everything afterwards fails fast instead of waiting for timeouts.
    let t = Instant::now();
    assert_eq!(s.get_results().await, None);
    assert!(matches!(
        s.get_setting("x").await,
        Err(SpeechError::Disconnected(_))
    ));
    assert!(t.elapsed() < Duration::from_millis(500));
    shared.reset();
    s.start().unwrap();
    assert_eq!(shared.state(), SpeechState::Done);
    assert!(shared.lock().error.is_some());
    assert_eq!(
        engine
            .stats()
            .connections_lost
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_never_answering_times_out_in_one_second() {
    let py = PyEngine::start(&[]);
    let (mut s, shared, _e) = create(cfg(&py.url(), &[("scenario", "silent")]), Format::Ulaw).await;
    s.start().unwrap();
    let t = Instant::now();
    match s.get_setting("foo").await {
        Err(SpeechError::Timeout(m)) => assert!(m.contains("'get' timed out"), "{m}"),
        other => panic!("{other:?}"),
    }
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(s.dtmf("1").await.is_err());
    // Media was never blocked meanwhile.
    s.write(&ulaw_frame(false));
    assert_eq!(shared.state(), SpeechState::Ready);
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_dropped_silently() {
    let py = PyEngine::start(&[]);
    let (mut s, shared, _e) = create(
        cfg(&py.url(), &[("scenario", "invalid_json")]),
        Format::Ulaw,
    )
    .await;
    s.start().unwrap();
    assert!(speak(&mut s, &shared, 10).await);
    assert!(shared.lock().error.is_none());
    assert_eq!(results(&shared), vec![r("hello world", 87, Some("g1"), 0)]);
    let replies: Vec<String> =
        serde_json::from_str(&s.get_setting("replies").await.unwrap()).unwrap();
    assert_eq!(replies.len(), 1, "no reply to invalid JSON: {replies:?}");
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_32k_disconnects() {
    let py = PyEngine::start(&[]);
    let (mut s, shared, _e) = create(cfg(&py.url(), &[("scenario", "big")]), Format::Ulaw).await;
    s.start().unwrap();
    assert!(speak(&mut s, &shared, 10).await);
    let error = shared.lock().error.clone().unwrap_or_default();
    assert!(error.contains("exceeds the 32767-byte limit"), "{error}");
    assert!(shared.lock().results.is_none());
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_results_when_nothing_cached() {
    let py = PyEngine::start(&[]);
    let res = r#"[{"text":"first","score":5},{"text":"second","score":6}]"#;
    let (mut s, shared, _e) = create(
        cfg(&py.url(), &[("scenario", "get_only"), ("results", res)]),
        Format::Ulaw,
    )
    .await;
    s.start().unwrap();
    for _ in 0..12 {
        s.write(&ulaw_frame(false));
    }
    assert_eq!(shared.state(), SpeechState::Ready);
    // Reversed like `set results` (Asterisk prepends).
    assert_eq!(
        s.get_results().await,
        Some(vec![r("second", 6, None, 0), r("first", 5, None, 0)])
    );
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_results_extension() {
    let py = PyEngine::start(&[]);
    let mut c = cfg(&py.url(), &[("scenario", "partial")]);
    c.partial_results = true;
    let (mut s, shared, _e) = create(c, Format::Ulaw).await;
    s.start().unwrap();
    for _ in 0..10 {
        s.write(&ulaw_frame(false));
    }
    assert!(
        wait_until(&shared, Duration::from_secs(5), |sh| sh
            .lock()
            .partial
            .is_some())
        .await
    );
    assert_eq!(shared.lock().partial.as_deref(), Some("hel"));
    assert!(
        wait_until(&shared, Duration::from_secs(5), |sh| sh.state()
            == SpeechState::Done)
        .await
    );
    s.destroy().await;

    // Without the option the engine gets the stock error.
    let (mut s, shared, _e) =
        create(cfg(&py.url(), &[("scenario", "partial")]), Format::Ulaw).await;
    s.start().unwrap();
    assert!(speak(&mut s, &shared, 10).await);
    assert!(shared.lock().partial.is_none());
    let replies: Vec<String> =
        serde_json::from_str(&s.get_setting("replies").await.unwrap()).unwrap();
    assert!(
        replies[0].contains(r#""error_msg":"can only set 'results'""#),
        "{replies:?}"
    );
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_sets_quiet_on_speech() {
    let py = PyEngine::start(&[]);
    let (mut s, shared, _e) = create(cfg(&py.url(), &[("scenario", "silent")]), Format::Ulaw).await;
    s.start().unwrap();
    for _ in 0..20 {
        s.write(&ulaw_frame(false));
    }
    assert!(!shared.lock().quiet);
    for _ in 0..5 {
        s.write(&ulaw_frame(true));
    }
    assert!(shared.lock().quiet && shared.lock().spoke);
    assert!(shared.lock().timing.onset.is_some());
    s.destroy().await;

    let mut c = cfg(&py.url(), &[("scenario", "silent")]);
    c.barge_in = false;
    let (mut s, shared, _e) = create(c, Format::Ulaw).await;
    s.start().unwrap();
    for _ in 0..10 {
        s.write(&ulaw_frame(true));
    }
    assert!(!shared.lock().quiet);
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_closes_with_1000_and_write_never_blocks() {
    let py = PyEngine::start(&[]);
    let (mut s, _shared, engine) =
        create(cfg(&py.url(), &[("scenario", "silent")]), Format::Ulaw).await;
    s.start().unwrap();
    // A burst far larger than the queue: write() returns at once and drops the excess.
    for _ in 0..5000 {
        s.write(&ulaw_frame(false));
    }
    assert!(
        engine
            .stats()
            .frames_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    s.destroy().await;
    // The engine records the close code; ask it over a new connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut s2, _shared, _e) = create(cfg(&py.url(), &[]), Format::Ulaw).await;
    assert_eq!(s2.get_setting("last_close_code").await.unwrap(), "1000");
    s2.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_really_uses_tls() {
    // A self-signed certificate: the TLS handshake happens and the unknown issuer is refused
    // (Asterisk would have talked plain WebSocket to this port).
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status();
    if !made.map(|s| s.success()).unwrap_or(false) {
        eprintln!("openssl not available; skipping the wss test");
        return;
    }
    let py = PyEngine::start(&["--tls", cert.to_str().unwrap(), key.to_str().unwrap()]);
    let e = create_err(cfg(&format!("wss://localhost:{}", py.port), &[])).await;
    let text = e.to_string();
    assert!(text.contains("TLS with wss://localhost"), "{text}");
    assert!(text.to_ascii_lowercase().contains("certificate"), "{text}");
}
