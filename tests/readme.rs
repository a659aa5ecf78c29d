//! The README's "two commands" section, run as a new user runs it.
//!
//! - `readme_demo_on_the_shipped_conf`: the shipped `conf/`, copied to a temporary directory as
//!   an install would copy it, runs the demo; the README's demo commands (espeak-ng + sox, then
//!   `voxpbx dial ... --play`) call it saying "sales", "support" and "billing"; the console must
//!   show the README's `recognized text=... score=... latency_ms=...` line and route the call.
//! - `readme_two_commands_walked`: every command of the section's code blocks, literally, from
//!   the repository root: `scripts/setup.sh --run` (set-up, release build, the demo in the
//!   foreground), then the demo block. `scripts/test.sh` is the command running this test, so it
//!   is the one line not run here.
//!
//! Both use the shipped configuration's fixed ports (SIP 5060, AMI 5038), so they take turns.
//! They skip with a note when the model, espeak-ng or sox is missing (`scripts/setup.sh`
//! installs them; CI always has them).

mod common;
use common::{bin, have_tts, reap, repo, wait_until};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

static SHIPPED_PORTS: Mutex<()> = Mutex::new(());

/// The code blocks (```sh ... ```) of the README section titled `title`, as command lines
/// (comments and blank lines dropped, trailing comments cut).
fn readme_blocks(title: &str) -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README has no '## {title}' section"));
    let section = &readme[start + 4..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut blocks = Vec::new();
    let mut cur: Option<Vec<String>> = None;
    for line in section.lines() {
        if line.starts_with("```") {
            match cur.take() {
                Some(b) => blocks.push(b),
                None => cur = Some(Vec::new()),
            }
            continue;
        }
        if let Some(b) = cur.as_mut() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let l = match l.find("  #") {
                Some(i) => l[..i].trim_end(),
                None => l,
            };
            b.push(l.to_string());
        }
    }
    blocks
}

/// The demo block: the one that places the call.
fn demo_block() -> Vec<String> {
    readme_blocks("The two commands")
        .into_iter()
        .find(|b| b.iter().any(|l| l.contains(" dial ")))
        .expect("README: no code block with `voxpbx dial` in 'The two commands'")
}

/// The shipped configuration's SIP and AMI ports must be free (a daemon left running would answer
/// in the test's place).
fn assert_shipped_ports_free() {
    let sip = std::net::UdpSocket::bind("0.0.0.0:5060");
    let ami = std::net::TcpListener::bind("127.0.0.1:5038");
    assert!(
        sip.is_ok() && ami.is_ok(),
        "UDP 5060 or TCP 5038 is taken (another voxpbx or PBX running?): the README demo needs them"
    );
}

/// The shipped configuration's turn (its ports are fixed), or None (with a note) when the model,
/// the prompts or the speech tools are missing.
fn shipped_turn(what: &str) -> Option<MutexGuard<'static, ()>> {
    if !ready(what) {
        return None;
    }
    let turn = SHIPPED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    assert_shipped_ports_free();
    Some(turn)
}

fn ready(what: &str) -> bool {
    let model = repo().join("models/ggml-tiny.en.bin");
    let prompts = repo().join("sounds/en/voxpbx-menu.wav");
    if !model.exists() || !prompts.exists() {
        eprintln!(
            "NOTE: {} or {} missing (scripts/setup.sh installs them): {what} skipped",
            model.display(),
            prompts.display()
        );
        return false;
    }
    have_tts(what)
}

/// A daemon whose console (stdout + stderr) goes to a file.
struct Daemon {
    child: Child,
    log: PathBuf,
    conf: Option<PathBuf>,
}

impl Daemon {
    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    fn wait_console(&self, needle: &str, secs: u64) -> bool {
        wait_until(secs, || self.console().contains(needle))
    }

    /// `voxpbx rx` on this daemon's configuration.
    fn rx(&self, cmd: &str, wait: u64) -> String {
        let mut c = Command::new(bin());
        c.args(["rx", "--wait", &wait.to_string()]);
        if let Some(conf) = &self.conf {
            c.arg("-C").arg(conf);
        }
        let out = c.arg(cmd).output().expect("voxpbx rx");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.rx("core stop now", 0);
        reap(&mut self.child);
    }
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let f = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(f.try_clone().unwrap()))
        .stderr(Stdio::from(f))
        .spawn()
        .expect("spawn")
}

/// Run one README command line with `sh` in `dir` (`conf`: `$VOXPBX_CONF`, the configuration
/// `voxpbx` commands default to); returns stdout. Panics when it fails.
fn sh(line: &str, dir: &Path, conf: Option<&Path>) -> String {
    let mut c = Command::new("sh");
    c.arg("-c").arg(line).current_dir(dir);
    if let Some(conf) = conf {
        c.env("VOXPBX_CONF", conf);
    }
    let out = c.output().expect("sh");
    assert!(
        out.status.success(),
        "`{line}` failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The demo block for `word` (the README says "sales": its lines are run as they are for
/// "sales", with the word and the clip's paths made the word's otherwise), in `dir`; `voxpbx`
/// replaces `target/release/voxpbx` and `conf` is the installed configuration, when given.
/// Returns the `voxpbx dial` summary.
fn call_demo(word: &str, dir: &Path, voxpbx: Option<&str>, conf: Option<&Path>) -> String {
    let mut summary = String::new();
    for line in demo_block() {
        let mut l = line
            .replace("\"sales\"", &format!("\"{word}\""))
            .replace("/tmp/sales", &format!("/tmp/{word}"));
        if let Some(v) = voxpbx {
            l = l.replace("target/release/voxpbx", v);
        }
        let out = sh(&l, dir, conf);
        if l.contains(" dial ") {
            summary = out;
        }
    }
    summary
}

/// The console lines the demo writes for one call: the recognition line and the routing.
fn assert_recognized(console: &str, word: &str, summary: &str) {
    let line = console
        .lines()
        .find(|l| l.contains(&format!("recognized text=\"{word}\"")))
        .unwrap_or_else(|| {
            panic!("no `recognized text=\"{word}\"` line; dial: {summary}\nconsole:\n{console}")
        });
    let field = |k: &str| -> String {
        line.split(&format!("{k}="))
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("")
            .trim_end_matches([')', '"'])
            .to_string()
    };
    let score: i32 = field("score").parse().unwrap_or(-1);
    assert!((1..=1000).contains(&score), "score: {line}");
    assert_eq!(field("grammar"), "departments", "{line}");
    let latency: u64 = field("latency_ms")
        .parse()
        .unwrap_or_else(|_| panic!("latency_ms is not a number: {line}"));
    assert!(latency > 0, "{line}");
    assert!(
        console.contains(&format!("\"voxpbx-{word}\")")),
        "the call was not routed to {word}:\n{console}"
    );
    assert!(summary.contains("\"status\":200"), "dial: {summary}");
}

#[test]
fn readme_demo_on_the_shipped_conf() {
    let Some(_turn) = shipped_turn("the README demo") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("etc-voxpbx");
    std::fs::create_dir_all(&conf).unwrap();
    for e in std::fs::read_dir(repo().join("conf")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, conf.join(p.file_name().unwrap())).unwrap();
    }
    let log = tmp.path().join("console.log");
    let child = spawn_logged(
        Command::new(bin()).args(["run", "-f", "-C"]).arg(&conf),
        &log,
    );
    let d = Daemon {
        child,
        log,
        conf: Some(conf.clone()),
    };
    assert!(
        d.rx("core waitfullybooted", 30).contains("fully booted"),
        "the demo did not boot:\n{}",
        d.console()
    );
    // Calls from a directory with no configuration: what is found comes from the copy.
    for word in ["sales", "support", "billing"] {
        let summary = call_demo(word, tmp.path(), Some(bin()), Some(&conf));
        let routed = format!("\"voxpbx-{word}\")");
        assert!(
            d.wait_console(&routed, 20),
            "{word}: not routed; dial: {summary}\nconsole:\n{}",
            d.console()
        );
        assert_recognized(&d.console(), word, &summary);
    }
    let channels = d.rx("core show channels", 0);
    assert!(channels.contains("0 active channels"), "{channels}");
}

#[test]
fn readme_two_commands_walked() {
    let Some(_turn) = shipped_turn("the README's two commands") else {
        return;
    };
    let blocks = readme_blocks("The two commands");
    let setup = blocks
        .iter()
        .flatten()
        .find(|l| l.starts_with("scripts/setup.sh"))
        .expect("README: no scripts/setup.sh line")
        .clone();
    assert!(
        blocks
            .iter()
            .flatten()
            .any(|l| l.starts_with("scripts/test.sh")),
        "README: no scripts/test.sh line"
    );
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("setup.log");
    let child = spawn_logged(
        Command::new("sh").arg("-c").arg(&setup).current_dir(repo()),
        &log,
    );
    let d = Daemon {
        child,
        log,
        conf: None,
    };
    // The set-up ends by building the release binary and starting the demo in the foreground.
    let booted = (0..120).any(|_| {
        if d.rx("core waitfullybooted", 5).contains("fully booted") {
            return true;
        }
        std::thread::sleep(Duration::from_secs(5));
        false
    });
    assert!(booted, "`{setup}` did not start the demo:\n{}", d.console());
    let summary = call_demo("sales", &repo(), None, None);
    assert!(
        d.wait_console("\"voxpbx-sales\")", 20),
        "not routed; dial: {summary}\nconsole:\n{}",
        d.console()
    );
    assert_recognized(&d.console(), "sales", &summary);
}
