//! Helpers for the AEAP integration tests: the Python peers (tests/python/aeap_engine.py and
//! aeap_client.py, using the `websockets` package from tests/python/.venv) and waiting on a
//! speech object's shared state.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use voxpbx::speech::engine::SpeechShared;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python with `websockets`: $VOXPBX_PYTHON, else tests/python/.venv/bin/python.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("VOXPBX_PYTHON") {
        return PathBuf::from(p);
    }
    let p = repo().join("tests/python/.venv/bin/python");
    assert!(
        p.exists(),
        "AEAP tests need the Python test venv: python3 -m venv tests/python/.venv && \
         tests/python/.venv/bin/pip install -r tests/python/requirements.txt (scripts/setup.sh does this)"
    );
    p
}

/// A running tests/python/aeap_engine.py on 127.0.0.1.
pub struct PyEngine {
    child: Child,
    pub port: u16,
}

impl PyEngine {
    pub fn start(extra: &[&str]) -> PyEngine {
        let mut child = Command::new(python())
            .arg(repo().join("tests/python/aeap_engine.py"))
            .args(["--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start aeap_engine.py");
        let stdout = child.stdout.take().expect("engine stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("aeap_engine.py did not start");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected engine output '{line}'"));
        PyEngine { child, port }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }
}

impl Drop for PyEngine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run tests/python/aeap_client.py with `args`; returns its JSON report.
pub async fn py_client(args: &[String]) -> serde_json::Value {
    let out = tokio::process::Command::new(python())
        .arg(repo().join("tests/python/aeap_client.py"))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("aeap_client.py timed out")
        .expect("run aeap_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "aeap_client.py failed: {stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bad report ({e}): {stdout}\n{stderr}"))
}

/// Wait until `pred` holds on the shared state (or `timeout`); true if it held.
pub async fn wait_until(
    shared: &Arc<SpeechShared>,
    timeout: Duration,
    pred: impl Fn(&SpeechShared) -> bool,
) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let notified = shared.changed();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if pred(shared) {
            return true;
        }
        if tokio::time::timeout_at(end, notified).await.is_err() {
            return pred(shared);
        }
    }
}

/// `clock_gettime(CLOCK_MONOTONIC)` in seconds: comparable with Python's `time.monotonic()`.
pub fn monotonic_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
