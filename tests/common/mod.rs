//! Shared helpers for integration tests: start the real `voxpbx` binary on a temporary
//! configuration directory, run console commands, find free ports, wait for files.
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
        if p > 60000 || p < 1024 {
            continue;
        }
        if (0..count).all(|i| UdpSocket::bind(("127.0.0.1", p + i)).is_ok()) {
            return p;
        }
    }
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
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
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
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
