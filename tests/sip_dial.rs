//! `voxpbx dial` against SIPp in UAS mode (skipped with a note when /usr/bin/sipp is missing).
//! The echo test with sample comparison over SIP (through voxpbx's Echo()) is in sip_media.rs.

mod common;
use common::{free_udp_port, test_signal, write_wav};

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SIPP: &str = "/usr/bin/sipp";

fn have_sipp() -> bool {
    if Path::new(SIPP).exists() {
        true
    } else {
        eprintln!("note: {SIPP} not installed; skipping the SIPp dial test");
        false
    }
}

/// SIPp's built-in UAS for one call, echoing RTP on its media port.
struct Sipp {
    child: Child,
    port: u16,
}

impl Sipp {
    fn start() -> Sipp {
        let port = free_udp_port();
        let media = free_udp_port();
        let child = Command::new(SIPP)
            .args([
                "-sn",
                "uas",
                "-i",
                "127.0.0.1",
                "-m",
                "1",
                "-nostdin",
                "-rtp_echo",
            ])
            .args(["-p", &port.to_string(), "-mp", &media.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sipp");
        // Give SIPp time to bind.
        std::thread::sleep(Duration::from_millis(500));
        Sipp { child, port }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dial_cli_against_sipp_uas() {
    if !have_sipp() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let play = dir.path().join("play.wav");
    let rec = dir.path().join("rec.wav");
    write_wav(&play, 16000, &test_signal(16000, 1500, 523.0, 12345));
    let sipp = Sipp::start();
    let out = Command::new(env!("CARGO_BIN_EXE_voxpbx"))
        .arg("dial")
        .arg(format!("sip:service@127.0.0.1:{}", sipp.port))
        .args(["--from", "tester", "--json", "--hangup-after", "2.5"])
        .arg("--play")
        .arg(&play)
        .arg("--record")
        .arg(&rec)
        .output()
        .expect("run voxpbx dial");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dial failed: {stdout} {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line expected: {stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["hangup"], "local");
    assert_eq!(v["codec"], "PCMU");
    // 1.5 s of audio in 20 ms packets.
    assert!(v["rtp_sent"].as_u64().unwrap() >= 70, "{v}");
    assert!(v["bytes_sent"].as_u64().unwrap() >= 70 * 160, "{v}");
    // SIPp echoes the RTP back.
    assert!(v["rtp_received"].as_u64().unwrap() > 0, "{v}");
    let duration = v["duration_ms"].as_u64().unwrap();
    assert!((2400..6000).contains(&duration), "{v}");
    assert!(v["play_started_ms"].as_u64().unwrap() >= v["answered_ms"].as_u64().unwrap());
    assert!(v["play_started_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
    let r = hound::WavReader::open(&rec).expect("recording");
    assert_eq!(r.spec().sample_rate, 8000);
    assert!(r.len() >= 8000 * 2, "recording too short: {}", r.len());
}
