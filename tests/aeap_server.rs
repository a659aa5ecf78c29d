//! voxpbx's AEAP server (engines served to Asterisk's res_speech_aeap), driven by
//! tests/python/aeap_client.py, an independent client that behaves like res_speech_aeap, and
//! by voxpbx's own AEAP client. The engine behind the server is a fake defined here.

mod aeap_support;

use aeap_support::{py_client, wait_until};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use voxpbx::aeap::{serve, AeapEngine, ClientConfig, ServerLimits};
use voxpbx::media::{Format, Frame};
use voxpbx::speech::engine::{
    Engine, EngineRegistry, EngineSession, ResultsType, SpeechError, SpeechResult, SpeechShared,
    SpeechState,
};

#[derive(Default)]
struct Log {
    created: Vec<Format>,
    bytes: usize,
    frame_formats: Vec<Format>,
    settings: HashMap<String, String>,
    dtmf: Vec<String>,
    results_type: Option<ResultsType>,
    destroyed: usize,
}

/// Says "heard N ms" (score 900, grammar "fake") plus an n-best alternative once it has heard
/// `utter_ms` of audio (a setup param, applied through `change`). `partial=1` sets a partial.
struct FakeEngine {
    formats: Vec<Format>,
    log: Arc<Mutex<Log>>,
}

struct FakeSession {
    shared: Arc<SpeechShared>,
    log: Arc<Mutex<Log>>,
    heard_ms: u32,
    utter_ms: u32,
    partial: bool,
    starts: u32,
    fail_on_restart: bool,
}

impl Engine for FakeEngine {
    fn name(&self) -> &str {
        "fake"
    }
    fn formats(&self) -> Vec<Format> {
        self.formats.clone()
    }
    fn create(
        &self,
        format: Format,
        shared: Arc<SpeechShared>,
    ) -> BoxFuture<'_, Result<Box<dyn EngineSession>, SpeechError>> {
        self.log.lock().created.push(format);
        let s = FakeSession {
            shared,
            log: self.log.clone(),
            heard_ms: 0,
            utter_ms: 400,
            partial: false,
            starts: 0,
            fail_on_restart: false,
        };
        Box::pin(async move { Ok(Box::new(s) as Box<dyn EngineSession>) })
    }
}

impl EngineSession for FakeSession {
    fn engine_name(&self) -> &str {
        "fake"
    }
    fn start(&mut self) -> Result<(), SpeechError> {
        self.heard_ms = 0;
        self.starts += 1;
        if self.fail_on_restart && self.starts > 1 {
            self.shared.fail("model crashed");
            return Ok(());
        }
        self.shared.set_state(SpeechState::Ready);
        Ok(())
    }
    fn write(&mut self, frame: &Frame) {
        {
            let mut log = self.log.lock();
            log.bytes += frame.data.len();
            if log.frame_formats.last() != Some(&frame.format) {
                log.frame_formats.push(frame.format);
            }
        }
        if self.partial {
            self.shared.set_partial("hel".into());
        }
        self.heard_ms += frame.duration_ms();
        if self.heard_ms >= self.utter_ms {
            let best = SpeechResult {
                text: format!("heard {} ms", self.heard_ms),
                score: 900,
                grammar: Some("fake".into()),
                nbest: 0,
            };
            let alt = SpeechResult {
                text: "alt".into(),
                score: 100,
                grammar: None,
                nbest: 1,
            };
            self.shared.set_results(Some(vec![best, alt]));
            self.shared.set_state(SpeechState::Done);
        }
    }
    fn dtmf<'a>(&'a mut self, digits: &'a str) -> BoxFuture<'a, Result<(), SpeechError>> {
        self.log.lock().dtmf.push(digits.to_string());
        Box::pin(async { Ok(()) })
    }
    fn change<'a>(
        &'a mut self,
        name: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), SpeechError>> {
        match name {
            "utter_ms" => self.utter_ms = value.parse().unwrap_or(400),
            "partial" => self.partial = value == "1",
            "fail_on_restart" => self.fail_on_restart = value == "1",
            _ => {}
        }
        self.log
            .lock()
            .settings
            .insert(name.to_string(), value.to_string());
        Box::pin(async { Ok(()) })
    }
    fn get_setting<'a>(&'a mut self, name: &'a str) -> BoxFuture<'a, Result<String, SpeechError>> {
        let v = self.log.lock().settings.get(name).cloned();
        Box::pin(
            async move { v.ok_or_else(|| SpeechError::Engine(format!("no setting '{name}'"))) },
        )
    }
    fn change_results_type(&mut self, t: ResultsType) -> BoxFuture<'_, Result<(), SpeechError>> {
        self.log.lock().results_type = Some(t);
        Box::pin(async { Ok(()) })
    }
    fn get_results(&mut self) -> BoxFuture<'_, Option<Vec<SpeechResult>>> {
        Box::pin(async { None })
    }
    fn destroy(&mut self) -> BoxFuture<'_, ()> {
        self.log.lock().destroyed += 1;
        Box::pin(async {})
    }
}

struct Server {
    url: String,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_server(formats: Vec<Format>, limits: ServerLimits) -> Server {
    let log = Arc::new(Mutex::new(Log::default()));
    let reg = Arc::new(EngineRegistry::default());
    reg.register(Arc::new(FakeEngine {
        formats,
        log: log.clone(),
    }))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(serve(listener, reg, None, limits));
    Server { url, log, task }
}

fn args(url: &str, extra: &[&str]) -> Vec<String> {
    let mut v = vec!["--url".to_string(), url.to_string()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Wait for the server side to finish a closed session.
async fn wait_destroyed(log: &Arc<Mutex<Log>>, n: usize) {
    for _ in 0..100 {
        if log.lock().destroyed >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("session not destroyed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_session_like_asterisk() {
    let srv = start_server(vec![Format::Ulaw, Format::Slin8], ServerLimits::default()).await;
    let rep = py_client(&args(
        &srv.url,
        &[
            "--params",
            r#"{"language":"en-US","utter_ms":"400"}"#,
            "--audio-ms",
            "3000",
            "--set",
            "foo=bar",
            "--get",
            "foo",
            "--get",
            "missing",
            "--dtmf",
            "12",
            "--results-type",
            "nbest",
        ],
    ))
    .await;
    assert_eq!(rep["subprotocol"], "speech_to_text");
    assert_eq!(rep["setup_ok"], true);
    let setup = &rep["setup_response"];
    assert_eq!(setup["response"], "setup");
    assert_eq!(setup["codecs"], json!([{"name": "ulaw"}]));
    assert_eq!(
        setup["params"],
        json!({"language": "en-US", "utter_ms": "400"})
    );
    assert!(setup.get("error_msg").is_none());
    // Asterisk's view after prepending: the engine's own order.
    assert_eq!(
        rep["results"],
        json!([
            {"text": "heard 400 ms", "score": 900, "grammar": "fake", "best": 0},
            {"text": "alt", "score": 100, "best": 1}
        ])
    );
    assert_eq!(rep["results_raw"].as_array().unwrap().len(), 1);
    let frames = rep["frames_sent"].as_u64().unwrap();
    assert!(
        (20..100).contains(&frames),
        "audio stopped at the results: {frames}"
    );
    assert!(
        rep["set"]["foo"].get("error_msg").is_none(),
        "{}",
        rep["set"]["foo"]
    );
    assert_eq!(rep["get"]["foo"]["params"], json!({"foo": "bar"}));
    assert!(rep["get"]["missing"]["error_msg"]
        .as_str()
        .unwrap()
        .contains("no setting 'missing'"));
    assert!(rep["dtmf"].get("error_msg").is_none());
    assert!(rep["results_type"].get("error_msg").is_none());
    assert_eq!(rep["close_code"], 1000);
    wait_destroyed(&srv.log, 1).await;
    let log = srv.log.lock();
    assert_eq!(log.created, vec![Format::Ulaw]);
    assert_eq!(log.frame_formats, vec![Format::Ulaw]);
    assert_eq!(log.dtmf, vec!["12"]);
    assert_eq!(log.results_type, Some(ResultsType::Nbest));
    assert_eq!(
        log.settings.get("language").map(String::as_str),
        Some("en-US")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_negotiation_and_conversion() {
    // Engine takes only slin 8 kHz: alaw is accepted on the wire and decoded for it.
    let srv = start_server(vec![Format::Slin8], ServerLimits::default()).await;
    let rep = py_client(&args(
        &srv.url,
        &[
            "--codec",
            "alaw",
            "--params",
            r#"{"utter_ms":"200"}"#,
            "--audio-ms",
            "1000",
        ],
    ))
    .await;
    assert_eq!(rep["setup_response"]["codecs"], json!([{"name": "alaw"}]));
    assert!(rep["results"].as_array().is_some_and(|r| !r.is_empty()));
    wait_destroyed(&srv.log, 1).await;
    {
        let log = srv.log.lock();
        assert_eq!(log.created, vec![Format::Slin8]);
        assert_eq!(log.frame_formats, vec![Format::Slin8]);
        assert_eq!(log.bytes % 320, 0);
    }
    // slin16 is never what Asterisk sends; unsupported names are refused.
    let rep = py_client(&args(&srv.url, &["--codec", "slin16"])).await;
    assert_eq!(rep["setup_ok"], false);
    assert_eq!(rep["setup_response"]["error_msg"], "No supported codec(s)");

    // Engine takes only slin16: ulaw is decoded and upsampled.
    let srv = start_server(vec![Format::Slin16], ServerLimits::default()).await;
    let rep = py_client(&args(
        &srv.url,
        &[
            "--codec",
            "ulaw",
            "--params",
            r#"{"utter_ms":"200"}"#,
            "--audio-ms",
            "1000",
        ],
    ))
    .await;
    assert_eq!(rep["setup_response"]["codecs"], json!([{"name": "ulaw"}]));
    wait_destroyed(&srv.log, 1).await;
    let log = srv.log.lock();
    assert_eq!(log.created, vec![Format::Slin16]);
    assert_eq!(log.bytes % 640, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_results_partial_or_empty() {
    let srv = start_server(vec![Format::Ulaw], ServerLimits::default()).await;
    let rep = py_client(&args(
        &srv.url,
        &[
            "--params",
            r#"{"utter_ms":"100000"}"#,
            "--audio-ms",
            "300",
            "--get-results",
        ],
    ))
    .await;
    assert_eq!(rep["get_results"]["params"], json!({"results": []}));
    assert!(rep["results"].is_null());
    let rep = py_client(&args(
        &srv.url,
        &[
            "--params",
            r#"{"utter_ms":"100000","partial":"1"}"#,
            "--audio-ms",
            "300",
            "--get-results",
        ],
    ))
    .await;
    assert_eq!(
        rep["get_results"]["params"],
        json!({"results": [{"text": "hel", "score": 0, "best": 0}]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_sessions() {
    let srv = start_server(vec![Format::Ulaw], ServerLimits::default()).await;
    let rep = py_client(&args(
        &srv.url,
        &[
            "--sessions",
            "8",
            "--params",
            r#"{"utter_ms":"300"}"#,
            "--audio-ms",
            "2000",
        ],
    ))
    .await;
    let reps = rep.as_array().unwrap();
    assert_eq!(reps.len(), 8);
    for r in reps {
        assert_eq!(r["results"][0]["text"], "heard 300 ms", "{r}");
    }
    wait_destroyed(&srv.log, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_dropped_oversize_closes() {
    let srv = start_server(vec![Format::Ulaw], ServerLimits::default()).await;
    let rep = py_client(&args(
        &srv.url,
        &[
            "--send-invalid",
            "--params",
            r#"{"utter_ms":"200"}"#,
            "--audio-ms",
            "1000",
        ],
    ))
    .await;
    assert_eq!(rep["results"][0]["text"], "heard 200 ms");
    let rep = py_client(&args(&srv.url, &["--send-big", "--audio-ms", "1000"])).await;
    assert_eq!(rep["close_code"], 1009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_limit_closes_session() {
    let limits = ServerLimits {
        max_audio: Duration::from_secs(1),
        ..ServerLimits::default()
    };
    let srv = start_server(vec![Format::Ulaw], limits).await;
    let rep = py_client(&args(
        &srv.url,
        &["--params", r#"{"utter_ms":"100000"}"#, "--audio-ms", "2000"],
    ))
    .await;
    assert_eq!(rep["close_code"], 1008);
    assert!(rep["close_reason"]
        .as_str()
        .unwrap()
        .contains("audio limit"));
    let frames = rep["frames_sent"].as_u64().unwrap();
    assert!(frames <= 55, "{frames}");
}

fn ulaw_frame() -> Frame {
    Frame::new(Format::Ulaw, Bytes::from(vec![0xFFu8; 160]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voxpbx_client_to_voxpbx_server() {
    let srv = start_server(vec![Format::Ulaw], ServerLimits::default()).await;
    let mut c = ClientConfig::new("remote", srv.url.clone());
    c.params = vec![("utter_ms".into(), "200".into())];
    let engine = AeapEngine::new(c);
    let shared = SpeechShared::new();
    let mut s = match engine.create(Format::Ulaw, shared.clone()).await {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    for round in 0..2 {
        shared.reset();
        s.start().unwrap();
        for _ in 0..10 {
            s.write(&ulaw_frame());
        }
        assert!(
            wait_until(&shared, Duration::from_secs(5), |sh| sh.state()
                == SpeechState::Done)
            .await,
            "round {round}"
        );
        let got = shared.lock().results.clone().unwrap();
        assert_eq!(got[0].text, "heard 200 ms");
        assert_eq!(got[0].grammar.as_deref(), Some("fake"));
        assert_eq!(
            got[1],
            SpeechResult {
                text: "alt".into(),
                score: 100,
                grammar: None,
                nbest: 1
            }
        );
    }
    s.change("foo", "bar").await.unwrap();
    assert_eq!(s.get_setting("foo").await.unwrap(), "bar");
    s.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limit_refuses_extra_connections() {
    let limits = ServerLimits {
        max_sessions: 1,
        ..ServerLimits::default()
    };
    let srv = start_server(vec![Format::Ulaw], limits).await;
    let first = AeapEngine::new(ClientConfig::new("a", srv.url.clone()));
    let mut s1 = match first.create(Format::Ulaw, SpeechShared::new()).await {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let second = AeapEngine::new(ClientConfig::new("b", srv.url.clone()));
    match second.create(Format::Ulaw, SpeechShared::new()).await {
        Ok(_) => panic!("second session accepted"),
        Err(e) => assert!(e.to_string().contains("503"), "{e}"),
    }
    s1.destroy().await;
    wait_destroyed(&srv.log, 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut s3 = match second.create(Format::Ulaw, SpeechShared::new()).await {
        Ok(s) => s,
        Err(e) => panic!("slot not released: {e}"),
    };
    s3.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_that_cannot_restart_closes_the_connection() {
    let srv = start_server(vec![Format::Ulaw], ServerLimits::default()).await;
    let mut c = ClientConfig::new("remote", srv.url.clone());
    c.params = vec![
        ("utter_ms".into(), "100".into()),
        ("fail_on_restart".into(), "1".into()),
    ];
    let engine = AeapEngine::new(c);
    let shared = SpeechShared::new();
    let mut s = match engine.create(Format::Ulaw, shared.clone()).await {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    s.start().unwrap();
    for _ in 0..5 {
        s.write(&ulaw_frame());
    }
    assert!(
        wait_until(&shared, Duration::from_secs(5), |sh| sh.state()
            == SpeechState::Done)
        .await
    );
    assert!(shared.lock().error.is_none());
    // The next utterance: the engine fails to restart, the server closes, DONE with the reason.
    shared.reset();
    s.start().unwrap();
    s.write(&ulaw_frame());
    assert!(
        wait_until(&shared, Duration::from_secs(5), |sh| sh.state()
            == SpeechState::Done)
        .await
    );
    let error = shared.lock().error.clone().unwrap_or_default();
    assert!(
        error.contains("code 1011: speech engine failed: model crashed"),
        "{error}"
    );
    s.destroy().await;
}
