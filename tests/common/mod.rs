//! Shared helpers for integration tests: start the real `voxpbx` binary on a temporary
//! configuration directory, run console commands, find free ports, wait for files; test audio
//! (espeak-ng speech, a structured test signal, WAV writing).
#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_voxpbx")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An even UDP port range [start, start+count) that is free now (for RTP).
pub fn free_rtp_range(count: u16) -> u16 {
    loop {
        let p = free_udp_port() & !1;
        if !(1024..=60000).contains(&p) {
            continue;
        }
        if (0..count).all(|i| UdpSocket::bind(("127.0.0.1", p + i)).is_ok()) {
            return p;
        }
    }
}

/// A PBX's SIP side for tests that call it from 127.0.0.1: endpoint `phone` (context `default`,
/// µ-law, symmetric RTP) on a free UDP port and `rtp_ports` free RTP ports.
/// Returns (SIP port, pjsip.conf, rtp.conf).
pub fn phone_sip_conf(rtp_ports: u16) -> (u16, String, String) {
    let sip_port = free_udp_port();
    let rtp = free_rtp_range(rtp_ports);
    let pjsip = format!(
        "[udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{sip_port}\n\n\
         [phone]\ntype = endpoint\ncontext = default\ndisallow = all\nallow = ulaw\nrtp_symmetric = yes\n\n\
         [phone-id]\ntype = identify\nendpoint = phone\nmatch = 127.0.0.1\n"
    );
    let rtp_conf = format!(
        "[general]\nrtpstart = {rtp}\nrtpend = {}\n",
        rtp + rtp_ports - 1
    );
    (sip_port, pjsip, rtp_conf)
}

pub struct TestPbx {
    pub dir: tempfile::TempDir,
    pub child: Child,
}

impl TestPbx {
    /// Write `files` (name, content; `{DIR}` becomes the dir's path) into a fresh config dir and start `voxpbx run -f` on it.
    pub fn start(files: &[(&str, &str)]) -> TestPbx {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let mut has_main = false;
        for (name, content) in files {
            if *name == "voxpbx.conf" {
                has_main = true;
            }
            let content = content.replace("{DIR}", &dir.path().display().to_string());
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        if !has_main {
            std::fs::write(
                dir.path().join("voxpbx.conf"),
                format!(
                    "[directories]\nrun = {}\n[options]\nverbose = 5\n",
                    run.display()
                ),
            )
            .unwrap();
        }
        let log = std::fs::File::create(dir.path().join("console.log")).unwrap();
        let child = Command::new(bin())
            .args(["run", "-f", "-C"])
            .arg(dir.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start voxpbx");
        let pbx = TestPbx { dir, child };
        let out = pbx.rx_wait("core waitfullybooted", 20);
        assert!(
            out.contains("fully booted"),
            "voxpbx did not boot: {out}\nlog:\n{}",
            pbx.log()
        );
        pbx
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn rx_wait(&self, cmd: &str, wait: u64) -> String {
        let out = Command::new(bin())
            .args(["rx", "--wait", &wait.to_string(), "-C"])
            .arg(self.dir.path())
            .arg(cmd)
            .output()
            .expect("run voxpbx rx");
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Run a console command and return its output.
    pub fn rx(&self, cmd: &str) -> String {
        self.rx_wait(cmd, 2)
    }

    /// Console/log output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Wait until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, secs: u64) -> bool {
        wait_until(secs, || self.log().contains(needle))
    }

    /// Wait for `core show channels count` to report no channels.
    pub fn wait_no_channels(&self, secs: u64) -> bool {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if self
                .rx("core show channels count")
                .starts_with("0 active channels")
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for TestPbx {
    fn drop(&mut self) {
        let _ = self.rx("core stop now");
        reap(&mut self.child);
    }
}

/// Poll `done` every 50 ms for up to `secs`; whether it became true.
pub fn wait_until(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Give a daemon told to stop 5 s to exit, then kill it.
pub fn reap(child: &mut Child) {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Wait until `path` exists and has content; returns the content.
pub fn wait_file(path: &Path, secs: u64) -> Option<String> {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return Some(s);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Whether `cmd` is on the PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Whether espeak-ng and sox (for [`speak`]) are installed; prints a NOTE that `what` is
/// skipped when they are not.
pub fn have_tts(what: &str) -> bool {
    if have("espeak-ng") && have("sox") {
        return true;
    }
    eprintln!("NOTE: espeak-ng or sox missing (scripts/setup.sh installs them): {what} skipped");
    false
}

/// Speak `text` with espeak-ng (en-us, 150 wpm) and convert it with sox to `dir/<name>.wav`,
/// 8 kHz mono 16-bit, applying the sox `effects` on the way. Returns the WAV's path.
pub fn speak_wav(dir: &Path, name: &str, text: &str, effects: &[&str]) -> PathBuf {
    let raw = dir.join(format!("{name}-raw.wav"));
    let out = dir.join(format!("{name}.wav"));
    assert!(Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .unwrap()
        .success());
    assert!(Command::new("sox")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-b", "16"])
        .arg(&out)
        .args(effects)
        .status()
        .unwrap()
        .success());
    out
}

/// Speak `text` as 8 kHz 16-bit samples in the telephone band (300-3400 Hz), no padding.
pub fn speak(dir: &Path, name: &str, text: &str) -> Vec<i16> {
    let wav = speak_wav(dir, name, text, &["highpass", "300", "lowpass", "3400"]);
    let (s, rate) = voxpbx::bench::corpus::read_wav(&wav).unwrap();
    assert_eq!(rate, 8000);
    s
}

/// A test signal with structure, so that correlation has one clear peak: a `hz` tone under a
/// 100 ms on / 200 ms low envelope plus LCG noise seeded with `seed`, `ms` long at `rate`.
pub fn test_signal(rate: u32, ms: u32, hz: f64, seed: u32) -> Vec<i16> {
    let n = rate as usize * ms as usize / 1000;
    let mut x: u32 = seed;
    (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let noise = ((x >> 16) as i32 % 2000 - 1000) as f64;
            let tone = (2.0 * std::f64::consts::PI * hz * t).sin() * 6000.0;
            let env = if (i / (rate as usize / 10)).is_multiple_of(3) {
                1.0
            } else {
                0.2
            };
            ((tone + noise) * env) as i16
        })
        .collect()
}

/// Write `samples` as a mono 16-bit WAV at `rate`.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("wav");
    for &s in samples {
        w.write_sample(s).expect("sample");
    }
    w.finalize().expect("finalize");
}
