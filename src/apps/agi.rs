//! `AGI`, `EAGI` and `DeadAGI`: run an AGI script (local program, FastAGI server or AsyncAGI
//! over AMI) against the channel, wire-compatible with Asterisk's `res_agi`.
//!
//! The protocol details (environment block, tokenizer, dispatch, reply lines) live in
//! [`crate::interfaces::agi`]; this module does the I/O and runs the commands on the channel.

use super::playback::{
    collect_digits, datetime_files, number_files, open_sound, say_files, StreamEnd,
};
use crate::channel::{CallerId, ChanCtl, Channel, ChannelState, ReadEvent};
use crate::dialplan::functions::core_funcs::{digit_timeout, response_timeout};
use crate::dialplan::pbx::{self, AppDef, AppExec, AppResult};
use crate::dialplan::subst::split_args;
use crate::events::{Event, EventClass};
use crate::interfaces::agi::asyncq;
use crate::interfaces::agi::codec::{async_env, async_result, is_failure_line, FASTAGI_PORT};
use crate::interfaces::agi::db::astdb;
use crate::interfaces::agi::reader::DEFAULT_MAX_LINE;
use crate::interfaces::agi::{
    dispatch, AgiEnv, AgiResult, AgiTarget, AgiUrl, CommandSpec, Dispatch, LineReader, HANGUP_LINE,
    TRYING,
};
use crate::media::file::Recorder;
use crate::media::Format;
use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub fn apps() -> Vec<AppDef> {
    vec![
        AppDef {
            name: "AGI",
            synopsis: "Executes an AGI compliant application",
            exec: AppExec::Async(agi_app),
        },
        AppDef {
            name: "EAGI",
            synopsis: "Executes an EAGI compliant application",
            exec: AppExec::Async(eagi_app),
        },
        AppDef {
            name: "DeadAGI",
            synopsis: "Executes AGI on a hungup channel",
            exec: AppExec::Async(agi_app),
        },
    ]
}

/// How long a FastAGI connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After the channel hung up, how long the script may stay silent before AGI gives up on it.
const DEAD_IDLE: Duration = Duration::from_secs(30);

/// `AGISTATUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgiStatus {
    Success,
    Failure,
    NotFound,
    Hangup,
}

impl AgiStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgiStatus::Success => "SUCCESS",
            AgiStatus::Failure => "FAILURE",
            AgiStatus::NotFound => "NOTFOUND",
            AgiStatus::Hangup => "HANGUP",
        }
    }
}

fn agi_app<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(run(chan, args, false))
}

fn eagi_app<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(run(chan, args, true))
}

static THREAD_IDS: AtomicU64 = AtomicU64::new(1);

/// `AGISIGHUP=no` disables the hangup notice.
fn sighup(chan: &Channel) -> bool {
    !chan
        .vars
        .get("AGISIGHUP")
        .is_some_and(|v| v.eq_ignore_ascii_case("no"))
}

/// `ast_true`.
fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "yes" | "true" | "y" | "t" | "1" | "on"
    )
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The environment block for this channel.
pub fn build_env(chan: &Channel, request: &str, args: &[String], enhanced: bool) -> AgiEnv {
    AgiEnv {
        request: request.to_string(),
        channel: chan.name.clone(),
        language: chan.language.clone(),
        channel_type: chan.tech().to_string(),
        uniqueid: chan.uniqueid.clone(),
        version: crate::core::VERSION.to_string(),
        callerid: non_empty(&chan.caller.num),
        calleridname: non_empty(&chan.caller.name),
        callingpres: 0,
        callingani2: 0,
        callington: 0,
        callingtns: 0,
        dnid: non_empty(&chan.dnid),
        rdnis: non_empty(&chan.rdnis),
        context: chan.context.clone(),
        extension: chan.exten.clone(),
        priority: chan.priority,
        enhanced,
        accountcode: chan.account_code.clone(),
        threadid: THREAD_IDS.fetch_add(1, Ordering::Relaxed),
        args: args.to_vec(),
    }
}

async fn run(chan: &mut Channel, args: &str, enhanced: bool) -> AppResult {
    let a = split_args(args);
    let cmd = a.first().map(|s| s.trim().to_string()).unwrap_or_default();
    let script_args: Vec<String> = a.iter().skip(1).cloned().collect();
    let status = match AgiTarget::parse(&cmd) {
        Err(e) => {
            tracing::warn!("{}: AGI: {}", chan.name, e);
            AgiStatus::Failure
        }
        Ok(target) => {
            // AsyncAGI reports `agi_request: async`, as Asterisk's launch_asyncagi does.
            let request = if target == AgiTarget::Async {
                "async"
            } else {
                cmd.as_str()
            };
            let env = build_env(chan, request, &script_args, enhanced);
            match target {
                AgiTarget::Fast(url) | AgiTarget::HighAvailability(url) => {
                    if enhanced {
                        tracing::warn!("{}: EAGI audio is only given to local scripts", chan.name);
                    }
                    run_fast(chan, &url, &env).await
                }
                AgiTarget::Async => run_async(chan, &env).await,
                AgiTarget::Local(path) => {
                    run_local(chan, &path, &script_args, &env, enhanced).await
                }
            }
        }
    };
    pbx::set_var(chan, "AGISTATUS", status.as_str());
    if status == AgiStatus::Hangup {
        AppResult::Hangup
    } else {
        AppResult::Continue
    }
}

// ---------------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------------

/// What the command loop talks to.
struct Conn {
    rd: Box<dyn AsyncRead + Unpin + Send>,
    wr: Box<dyn AsyncWrite + Unpin + Send>,
    lines: LineReader,
    fast: bool,
    pid: Option<u32>,
    /// EAGI: non-blocking write end of the audio pipe (fd 3 in the child).
    audio: Option<std::os::fd::OwnedFd>,
    dead: bool,
    status: AgiStatus,
    write_failed: bool,
}

/// What reading the next line gave.
enum Next {
    Line(String),
    /// A line too long to keep (answered with 510).
    TooLong,
    /// The peer closed; `partial`: it stopped in the middle of a line.
    Eof {
        partial: bool,
    },
    /// Give up (AGIEXITONHANGUP, or a hung-up channel with a silent script).
    Stop,
}

impl Conn {
    fn new(
        rd: Box<dyn AsyncRead + Unpin + Send>,
        wr: Box<dyn AsyncWrite + Unpin + Send>,
        fast: bool,
    ) -> Conn {
        Conn {
            rd,
            wr,
            lines: LineReader::new(DEFAULT_MAX_LINE),
            fast,
            pid: None,
            audio: None,
            dead: false,
            status: AgiStatus::Success,
            write_failed: false,
        }
    }

    async fn send(&mut self, s: &str) -> bool {
        if self.write_failed {
            return false;
        }
        let ok = self.wr.write_all(s.as_bytes()).await.is_ok() && self.wr.flush().await.is_ok();
        if !ok {
            self.write_failed = true;
        }
        ok
    }

    /// The channel hung up: tell the script.
    async fn on_hangup(&mut self, sighup: bool) {
        if self.dead {
            return;
        }
        self.dead = true;
        if self.status == AgiStatus::Success {
            self.status = AgiStatus::Hangup;
        }
        if !sighup {
            return;
        }
        if self.fast {
            let _ = self.send(HANGUP_LINE).await;
        } else if let Some(pid) = self.pid {
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: kill(2) on our own child's pid has no memory effects.
                unsafe {
                    libc::kill(pid, libc::SIGHUP);
                }
            }
        }
    }

    fn feed_audio(&mut self, f: &crate::media::Frame) {
        let Some(fd) = &self.audio else { return };
        use std::os::fd::AsRawFd;
        // Non-blocking: a script that does not read fd 3 loses audio, never stalls the call.
        // SAFETY: the fd is owned and open; the buffer is valid for its length.
        let n = unsafe {
            libc::write(
                fd.as_raw_fd(),
                f.data.as_ptr() as *const libc::c_void,
                f.data.len(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock {
                self.audio = None;
            }
        }
    }

    /// Read the next command line, serving the channel (hangup, EAGI audio) while waiting.
    async fn next(&mut self, chan: &mut Channel) -> Next {
        let mut buf = [0u8; 4096];
        loop {
            match self.lines.next_line() {
                Some(Ok(l)) => return Next::Line(l.text),
                Some(Err(_)) => return Next::TooLong,
                None => {}
            }
            let exit_on_hangup = chan.vars.get("AGIEXITONHANGUP").is_some_and(is_true);
            if self.dead && exit_on_hangup {
                return Next::Stop;
            }
            let dead = self.dead;
            tokio::select! {
                r = self.rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => {
                        let partial = self.lines.finish().is_some();
                        return Next::Eof { partial };
                    }
                    Ok(n) => self.lines.push(&buf[..n]),
                },
                ev = chan.read(), if !dead => match ev {
                    ReadEvent::Hangup | ReadEvent::Interrupted => self.on_hangup(sighup(chan)).await,
                    ReadEvent::Voice(f) => self.feed_audio(&f),
                    _ => {}
                },
                _ = tokio::time::sleep(DEAD_IDLE), if dead => return Next::Stop,
            }
        }
    }
}

async fn command_loop(chan: &mut Channel, conn: &mut Conn) {
    if chan.is_hungup() {
        conn.dead = true;
    }
    loop {
        if conn.write_failed {
            if conn.status == AgiStatus::Success {
                conn.status = AgiStatus::Failure;
            }
            return;
        }
        let line = match conn.next(chan).await {
            Next::Line(l) => l,
            Next::TooLong => {
                let _ = conn.send(crate::interfaces::agi::INVALID_COMMAND).await;
                continue;
            }
            Next::Eof { partial } => {
                if partial && conn.status == AgiStatus::Success {
                    conn.status = AgiStatus::Failure;
                }
                return;
            }
            Next::Stop => return,
        };
        if line.trim().is_empty() {
            continue;
        }
        if !conn.fast && is_failure_line(&line) {
            conn.status = AgiStatus::Failure;
            return;
        }
        if !conn.dead && chan.is_hungup() {
            conn.on_hangup(sighup(chan)).await;
        }
        let dead = conn.dead;
        let (reply, brk) = handle_line(chan, &line, dead, Some(conn)).await;
        if !conn.send(&reply).await {
            continue;
        }
        if brk {
            return;
        }
        if !conn.dead && chan.is_hungup() {
            conn.on_hangup(sighup(chan)).await;
        }
    }
}

static COMMAND_IDS: AtomicU64 = AtomicU64::new(1);

/// Dispatch and run one command line; returns the reply and whether AGI should end
/// (`ASYNCAGI BREAK`). Publishes `AGIExecStart`/`AGIExecEnd`.
async fn handle_line(
    chan: &mut Channel,
    line: &str,
    dead: bool,
    conn: Option<&mut Conn>,
) -> (String, bool) {
    let id = COMMAND_IDS.fetch_add(1, Ordering::Relaxed).to_string();
    chan.publish(
        Event::new("AGIExecStart", EventClass::Agi)
            .field("CommandId", id.clone())
            .field("Command", line.to_string()),
    );
    let d = dispatch(line, dead);
    let (reply, brk, code, res) = match d {
        Dispatch::Run { spec, argv } => {
            let out = run_command(chan, spec, &argv, conn).await;
            (out.0, out.1, 200u16, "Success")
        }
        other => {
            let code = other.result_code().unwrap_or(510);
            let res = match code {
                520 => "Usage",
                511 => "Command Not Permitted on a dead channel or intercept routine",
                _ => "Invalid or unknown command",
            };
            (other.error_reply().unwrap_or_default(), false, code, res)
        }
    };
    chan.publish(
        Event::new("AGIExecEnd", EventClass::Agi)
            .field("CommandId", id)
            .field("Command", line.to_string())
            .field("ResultCode", code.to_string())
            .field("Result", res),
    );
    (reply, brk)
}

// ---------------------------------------------------------------------------------------------
// FastAGI, local scripts, AsyncAGI
// ---------------------------------------------------------------------------------------------

async fn run_fast(chan: &mut Channel, url: &AgiUrl, env: &AgiEnv) -> AgiStatus {
    let addr = format!(
        "{}:{}",
        url.host.trim_start_matches('[').trim_end_matches(']'),
        url.port.unwrap_or(FASTAGI_PORT)
    );
    let stream =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!("{}: FastAGI connect to {} failed: {}", chan.name, addr, e);
                return AgiStatus::Failure;
            }
            Err(_) => {
                tracing::warn!("{}: FastAGI connect to {} timed out", chan.name, addr);
                return AgiStatus::Failure;
            }
        };
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut conn = Conn::new(Box::new(rd), Box::new(wr), true);
    if !conn.send(&env.encode_fastagi(url)).await {
        return AgiStatus::Failure;
    }
    command_loop(chan, &mut conn).await;
    conn.status
}

fn resolve_script(chan: &Channel, path: &str) -> std::path::PathBuf {
    let p = std::path::PathBuf::from(path);
    if p.is_absolute() {
        p
    } else {
        chan.core.dirs.agi.join(p)
    }
}

async fn run_local(
    chan: &mut Channel,
    path: &str,
    args: &[String],
    env: &AgiEnv,
    enhanced: bool,
) -> AgiStatus {
    let script = resolve_script(chan, path);
    if !script.exists() {
        tracing::warn!(
            "{}: AGI script {} does not exist",
            chan.name,
            script.display()
        );
        return AgiStatus::NotFound;
    }
    let core = chan.core.clone();
    let mut cmd = tokio::process::Command::new(&script);
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .env("AST_CONFIG_DIR", &core.dirs.conf)
        .env("AST_SPOOL_DIR", &core.dirs.spool)
        .env("AST_VAR_DIR", &core.dirs.data)
        .env("AST_DATA_DIR", &core.dirs.data)
        .env("AST_LOG_DIR", &core.dirs.log)
        .env("AST_AGI_DIR", &core.dirs.agi)
        .env("AST_RUN_DIR", &core.dirs.run);
    let mut audio = None;
    if enhanced {
        match audio_pipe() {
            Ok((rd, wr)) => {
                use std::os::fd::{AsRawFd, IntoRawFd};
                let rfd = rd.into_raw_fd();
                // SAFETY: between fork and exec only async-signal-safe calls (dup2) are made.
                unsafe {
                    cmd.pre_exec(move || {
                        if libc::dup2(rfd, 3) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                let _ = wr.as_raw_fd();
                audio = Some((rfd, wr));
            }
            Err(e) => tracing::warn!("{}: EAGI audio pipe: {}", chan.name, e),
        }
    }
    let spawned = cmd.spawn();
    let audio_wr = audio.map(|(rfd, wr)| {
        // SAFETY: rfd came from into_raw_fd above and is closed exactly once here.
        unsafe {
            libc::close(rfd);
        }
        wr
    });
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                "{}: cannot execute AGI script {}: {}",
                chan.name,
                script.display(),
                e
            );
            return AgiStatus::Failure;
        }
    };
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return AgiStatus::Failure;
    };
    let mut conn = Conn::new(Box::new(stdout), Box::new(stdin), false);
    conn.pid = child.id();
    if enhanced {
        chan.set_read_format(Some(Format::Slin8));
        conn.audio = audio_wr;
    }
    core.verbose_msg(
        3,
        &format!("    -- Launched AGI Script {}", script.display()),
    );
    if conn.send(&env.encode()).await {
        command_loop(chan, &mut conn).await;
    } else {
        conn.status = AgiStatus::Failure;
    }
    if enhanced {
        chan.set_read_format(None);
    }
    let mut status = conn.status;
    drop(conn);
    // The script closed its stdout (or gave up); collect its exit status without blocking the
    // call for long: a non-zero exit turns SUCCESS into FAILURE.
    match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
        Ok(Ok(st)) => {
            if status == AgiStatus::Success && !st.success() {
                status = AgiStatus::Failure;
            }
        }
        _ => {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
    core.verbose_msg(
        3,
        &format!(
            "    -- <{}>AGI Script {} completed, returning {}",
            chan.name,
            script.display(),
            status.as_str()
        ),
    );
    status
}

fn audio_pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two open fds, owned by nobody else.
    let (r, w) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fds[1], libc::F_GETFL);
        libc::fcntl(fds[1], libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    Ok((r, w))
}

async fn run_async(chan: &mut Channel, env: &AgiEnv) -> AgiStatus {
    let Some(mut rx) = asyncq::attach(chan) else {
        tracing::warn!("{}: AsyncAGI already running on this channel", chan.name);
        return AgiStatus::Failure;
    };
    chan.publish(Event::new("AsyncAGIStart", EventClass::Agi).field("Env", async_env(env)));
    let mut status = AgiStatus::Success;
    loop {
        if chan.is_hungup() {
            status = AgiStatus::Hangup;
            break;
        }
        tokio::select! {
            c = rx.recv() => {
                let Some(mut c) = c else { break };
                c.wait_gate().await;
                let (reply, brk) = handle_line(chan, &c.command, false, None).await;
                let mut ev = Event::new("AsyncAGIExec", EventClass::Agi);
                if !c.command_id.is_empty() {
                    // Asterisk's blob key is `CommandId` (clients match it case-insensitively).
                    ev = ev.field("CommandId", c.command_id.clone());
                }
                chan.publish(ev.field("Result", async_result(&reply)));
                if brk {
                    break;
                }
            }
            ev = chan.read() => {
                if matches!(ev, ReadEvent::Hangup | ReadEvent::Interrupted) {
                    status = AgiStatus::Hangup;
                    break;
                }
            }
        }
    }
    // Keep the queue (res_agi.c keeps its datastore): commands added now run on the next
    // AGI(agi:async) and are dropped with the channel.
    asyncq::detach(chan, rx);
    chan.publish(Event::new("AsyncAGIEnd", EventClass::Agi));
    status
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

fn r(n: i64) -> String {
    AgiResult::new(n).line()
}

fn ascii(d: char) -> i64 {
    d as i64
}

fn arg(argv: &[String], i: usize) -> &str {
    argv.get(i).map(|s| s.as_str()).unwrap_or("")
}

/// Play a file, stop on an escape digit; returns how it ended and the position in samples.
async fn stream(
    chan: &mut Channel,
    name: &str,
    escape: &str,
    offset: u64,
    control: Option<&Control>,
) -> (StreamEnd, u64) {
    let Some(mut g) = open_sound(chan, name) else {
        return (StreamEnd::NotFound, offset);
    };
    if offset > 0 {
        g.skip_ms((offset / 8) as i64);
    }
    let mut pos = g.position();
    chan.start_generator(g);
    let mut paused: Option<Box<dyn crate::channel::Generator>> = None;
    loop {
        let ev = chan.read().await;
        if let Some(g) = chan.generator_mut() {
            pos = g.position();
        }
        match ev {
            ReadEvent::StreamDone => return (StreamEnd::Done, pos),
            ReadEvent::Dtmf(d) => {
                if let Some(c) = control {
                    if Some(d) == c.ff {
                        if let Some(g) = chan.generator_mut() {
                            g.skip_ms(c.skip_ms);
                        }
                        continue;
                    }
                    if Some(d) == c.rew {
                        if let Some(g) = chan.generator_mut() {
                            g.skip_ms(-c.skip_ms);
                        }
                        continue;
                    }
                    if Some(d) == c.pause {
                        match paused.take() {
                            Some(g) => chan.start_generator(g),
                            None => paused = chan.take_generator(),
                        }
                        continue;
                    }
                }
                if escape.contains(d) {
                    chan.stop_generator();
                    return (StreamEnd::Digit(d), pos);
                }
            }
            ReadEvent::Hangup | ReadEvent::Interrupted => {
                chan.stop_generator();
                return (StreamEnd::Hangup, pos);
            }
            _ => {}
        }
    }
}

/// CONTROL STREAM FILE keys.
struct Control {
    skip_ms: i64,
    ff: Option<char>,
    rew: Option<char>,
    pause: Option<char>,
}

fn stream_reply(end: StreamEnd, pos: u64) -> String {
    let n = match end {
        StreamEnd::Done => 0,
        StreamEnd::Digit(d) => ascii(d),
        StreamEnd::Hangup | StreamEnd::NotFound => -1,
    };
    AgiResult::new(n).endpos(pos as i64).line()
}

fn say_reply(end: StreamEnd) -> String {
    match end {
        StreamEnd::Done | StreamEnd::NotFound => r(0),
        StreamEnd::Digit(d) => r(ascii(d)),
        StreamEnd::Hangup => r(-1),
    }
}

fn digit_file(c: char) -> Option<String> {
    match c {
        '0'..='9' => Some(format!("digits/{c}")),
        '*' => Some("digits/star".into()),
        '#' => Some("digits/pound".into()),
        _ => None,
    }
}

fn alpha_file(c: char, phonetic: bool) -> Option<String> {
    let l = c.to_ascii_lowercase();
    match l {
        'a'..='z' if phonetic => Some(format!("phonetic/{l}_p")),
        'a'..='z' => Some(format!("letters/{l}")),
        '0'..='9' | '*' | '#' => digit_file(l),
        '.' => Some("letters/dot".into()),
        '-' => Some("letters/dash".into()),
        '@' => Some("letters/at".into()),
        '$' => Some("letters/dollar".into()),
        '=' => Some("letters/equals".into()),
        '!' => Some("letters/exclaimation-point".into()),
        '+' => Some("letters/plus".into()),
        '/' => Some("letters/slash".into()),
        ' ' => Some("letters/space".into()),
        _ => None,
    }
}

async fn wait_digit(chan: &mut Channel, ms: i64) -> Option<Option<char>> {
    let deadline = (ms >= 0).then(|| Instant::now() + Duration::from_millis(ms as u64));
    loop {
        match chan.read_until(deadline).await {
            ReadEvent::Dtmf(d) => return Some(Some(d)),
            ReadEvent::Timeout => return Some(None),
            ReadEvent::Hangup | ReadEvent::Interrupted => return None,
            _ => {}
        }
    }
}

/// Substitute `${NAME}` references with plain variables of another channel.
fn simple_subst(chan: &Channel, expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                out.push_str(&pbx::get_var(chan, &after[..j]).unwrap_or_default());
                rest = &after[j + 1..];
            }
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn other_channel(chan: &Channel, name: &str) -> Option<Option<crate::channel::ChannelHandle>> {
    if name.is_empty() || name == chan.name {
        return Some(None);
    }
    chan.core.channels.find(name).map(|(h, _)| Some(h))
}

/// Run a dispatched command; returns the reply and whether AGI ends.
async fn run_command(
    chan: &mut Channel,
    spec: &'static CommandSpec,
    argv: &[String],
    conn: Option<&mut Conn>,
) -> (String, bool) {
    let name = spec.name();
    let out = match name.as_str() {
        "ANSWER" => {
            if chan.state != ChannelState::Up && !chan.answer() {
                r(-1)
            } else {
                r(0)
            }
        }
        "ASYNCAGI BREAK" => return (r(0), true),
        "CHANNEL STATUS" => match other_channel(chan, arg(argv, 2)) {
            Some(None) => r(chan.state as i64),
            Some(Some(_)) => match chan.core.channels.find(arg(argv, 2)) {
                Some((_, s)) => r(s.state as i64),
                None => r(-1),
            },
            None => r(-1),
        },
        "STREAM FILE" => {
            let offset = arg(argv, 4).parse::<u64>().unwrap_or(0);
            let (end, pos) = stream(chan, arg(argv, 2), arg(argv, 3), offset, None).await;
            stream_reply(end, pos)
        }
        "CONTROL STREAM FILE" => {
            let skip = arg(argv, 5)
                .parse::<i64>()
                .ok()
                .filter(|v| *v > 0)
                .unwrap_or(3000);
            let c = |i: usize, d: char| match argv.get(i) {
                Some(s) => s.chars().next(),
                None => Some(d),
            };
            let ctl = Control {
                skip_ms: skip,
                ff: c(6, '#'),
                rew: c(7, '*'),
                pause: argv.get(8).and_then(|s| s.chars().next()),
            };
            let offset = arg(argv, 9).parse::<u64>().unwrap_or(0) * 8;
            let (end, pos) = stream(chan, arg(argv, 3), arg(argv, 4), offset, Some(&ctl)).await;
            let status = match end {
                StreamEnd::Done => "SUCCESS",
                StreamEnd::Digit(_) => "USERSTOPPED",
                StreamEnd::Hangup => "ERROR",
                StreamEnd::NotFound => "ERROR",
            };
            pbx::set_var(chan, "CPLAYBACKSTATUS", status);
            pbx::set_var(chan, "CPLAYBACKOFFSET", &(pos / 8).to_string());
            if let StreamEnd::Digit(d) = end {
                pbx::set_var(chan, "CPLAYBACKSTOPKEY", &d.to_string());
            }
            stream_reply(end, pos)
        }
        "GET DATA" => {
            let ms = arg(argv, 3)
                .parse::<u64>()
                .ok()
                .filter(|v| *v > 0)
                .unwrap_or_else(|| response_timeout(chan));
            let max = arg(argv, 4)
                .parse::<usize>()
                .ok()
                .filter(|v| *v > 0)
                .unwrap_or(1024);
            let files = vec![arg(argv, 2).to_string()];
            match collect_digits(chan, &files, max, Duration::from_millis(ms), Some('#')).await {
                None => r(-1),
                Some((digits, timed_out)) => {
                    let mut res = AgiResult::text(&digits);
                    if timed_out {
                        res = res.data("timeout");
                    }
                    res.line()
                }
            }
        }
        "GET OPTION" => {
            let (end, pos) = stream(chan, arg(argv, 2), arg(argv, 3), 0, None).await;
            match end {
                StreamEnd::Digit(d) => AgiResult::new(ascii(d)).endpos(pos as i64).line(),
                StreamEnd::Hangup => AgiResult::new(-1).endpos(pos as i64).line(),
                StreamEnd::NotFound => AgiResult::new(-1).endpos(0).line(),
                StreamEnd::Done => {
                    let ms = match argv.get(4).and_then(|s| s.parse::<i64>().ok()) {
                        Some(s) if s > 0 => s * 1000,
                        _ => digit_timeout(chan) as i64,
                    };
                    let escape = arg(argv, 3).to_string();
                    let deadline = Instant::now() + Duration::from_millis(ms as u64);
                    loop {
                        let left = deadline
                            .saturating_duration_since(Instant::now())
                            .as_millis() as i64;
                        match wait_digit(chan, left).await {
                            None => break AgiResult::new(-1).endpos(pos as i64).line(),
                            Some(None) => break AgiResult::new(0).endpos(pos as i64).line(),
                            Some(Some(d)) if escape.contains(d) => {
                                break AgiResult::new(ascii(d)).endpos(pos as i64).line()
                            }
                            Some(Some(_)) => {}
                        }
                    }
                }
            }
        }
        "WAIT FOR DIGIT" => {
            let ms = arg(argv, 3).parse::<i64>().unwrap_or(-1);
            match wait_digit(chan, ms).await {
                None => r(-1),
                Some(None) => r(0),
                Some(Some(d)) => r(ascii(d)),
            }
        }
        "SAY DIGITS" => {
            let files: Vec<String> = arg(argv, 2).chars().filter_map(digit_file).collect();
            say_reply(say_files(chan, &files, arg(argv, 3)).await)
        }
        "SAY NUMBER" => match arg(argv, 2).trim().parse::<i64>() {
            Ok(n) => say_reply(say_files(chan, &number_files(n), arg(argv, 3)).await),
            Err(_) => crate::interfaces::agi::usage_reply(spec),
        },
        "SAY ALPHA" | "SAY PHONETIC" => {
            let ph = name == "SAY PHONETIC";
            let files: Vec<String> = arg(argv, 2)
                .chars()
                .filter_map(|c| alpha_file(c, ph))
                .collect();
            say_reply(say_files(chan, &files, arg(argv, 3)).await)
        }
        "SAY DATE" | "SAY TIME" | "SAY DATETIME" => {
            let Ok(secs) = arg(argv, 2).trim().parse::<i64>() else {
                return (crate::interfaces::agi::usage_reply(spec), false);
            };
            let (fmt, tz) = match name.as_str() {
                "SAY DATE" => ("ABdY".to_string(), chrono_tz::UTC),
                "SAY TIME" => ("IMp".to_string(), chrono_tz::UTC),
                _ => (
                    argv.get(4)
                        .filter(|f| !f.is_empty())
                        .cloned()
                        .unwrap_or_else(|| "ABdY 'digits/at' IMp".into()),
                    argv.get(5)
                        .and_then(|z| z.parse().ok())
                        .unwrap_or(chrono_tz::UTC),
                ),
            };
            match chrono::DateTime::from_timestamp(secs, 0) {
                Some(t) => {
                    let files = datetime_files(t.with_timezone(&tz), &fmt);
                    say_reply(say_files(chan, &files, arg(argv, 3)).await)
                }
                None => r(-1),
            }
        }
        "RECORD FILE" => record_file(chan, argv).await,
        "SET VARIABLE" => {
            pbx::assign(chan, arg(argv, 2), arg(argv, 3)).await;
            r(1)
        }
        "GET VARIABLE" => match pbx::read_var_or_func(chan, arg(argv, 2)).await {
            Some(v) => AgiResult::new(1).data(v).line(),
            None => r(0),
        },
        "GET FULL VARIABLE" => match other_channel(chan, arg(argv, 4)) {
            Some(None) => {
                let v = pbx::substitute_str(chan, arg(argv, 3)).await;
                AgiResult::new(1).data(v).line()
            }
            Some(Some(h)) => {
                let expr = arg(argv, 3).to_string();
                match h.run(move |c| simple_subst(c, &expr)).await {
                    Some(v) => AgiResult::new(1).data(v).line(),
                    None => r(0),
                }
            }
            None => r(0),
        },
        "EXEC" => {
            let app = arg(argv, 1).to_string();
            let mut args = argv.get(2..).map(|a| a.join(" ")).unwrap_or_default();
            if chan.vars.get("AGIEXECFULL").is_some_and(is_true) {
                args = pbx::substitute_str(chan, &args).await;
            }
            chan.core.verbose_msg(
                3,
                &format!(
                    "    -- AGI Script Executing Application: ({}) Options: ({})",
                    app, args
                ),
            );
            match pbx::exec_app(chan, &app, &args).await {
                None => {
                    tracing::warn!("{}: could not find application ({})", chan.name, app);
                    r(-2)
                }
                Some(AppResult::Continue) => r(0),
                Some(AppResult::Hangup) => r(-1),
            }
        }
        "HANGUP" => match other_channel(chan, arg(argv, 1)) {
            Some(None) => {
                chan.soft_hangup(16);
                r(1)
            }
            Some(Some(h)) => {
                if h.send(ChanCtl::Hangup(16)) {
                    r(1)
                } else {
                    r(-1)
                }
            }
            None => r(-1),
        },
        "NOOP" => r(0),
        "VERBOSE" => {
            let level = arg(argv, 2).parse::<u32>().unwrap_or(1).clamp(1, 4);
            chan.core
                .verbose_msg(level, &format!("{}: {}", chan.name, arg(argv, 1)));
            r(1)
        }
        "SET CALLERID" => {
            chan.set_caller(CallerId::parse(arg(argv, 2)));
            r(1)
        }
        "SET CONTEXT" => {
            chan.context = arg(argv, 2).to_string();
            r(0)
        }
        "SET EXTENSION" => {
            chan.exten = arg(argv, 2).to_string();
            r(0)
        }
        "SET PRIORITY" => {
            let (ctx, ext) = (chan.context.clone(), chan.exten.clone());
            if pbx::goto_parts(chan, &ctx, &ext, arg(argv, 2)) {
                r(0)
            } else {
                r(-1)
            }
        }
        "SET AUTOHANGUP" => {
            let secs = arg(argv, 2).parse::<f64>().unwrap_or(0.0);
            chan.timeouts.absolute =
                (secs > 0.0).then(|| Instant::now() + Duration::from_secs_f64(secs));
            r(0)
        }
        "SET MUSIC" => {
            let on = arg(argv, 2).eq_ignore_ascii_case("on");
            let app = if on {
                "StartMusicOnHold"
            } else {
                "StopMusicOnHold"
            };
            if pbx::exec_app(chan, app, arg(argv, 3)).await.is_none() {
                chan.indicate(if on {
                    crate::channel::Control::Hold
                } else {
                    crate::channel::Control::Unhold
                });
            }
            r(0)
        }
        "DATABASE GET" | "DATABASE PUT" | "DATABASE DEL" | "DATABASE DELTREE" => {
            database(chan, &name, argv)
        }
        "GOSUB" => gosub(chan, argv, conn).await,
        "SEND TEXT" | "SEND IMAGE" | "TDD MODE" => r(0),
        "RECEIVE CHAR" => {
            let ms = arg(argv, 2).parse::<u64>().unwrap_or(0);
            if ms > 0 && !chan.sleep(Duration::from_millis(ms)).await {
                r(-1)
            } else {
                AgiResult::new(0).data("timeout").line()
            }
        }
        "RECEIVE TEXT" => r(-1),
        n if n.starts_with("SPEECH ") => speech(chan, n, argv).await,
        _ => crate::interfaces::agi::INVALID_COMMAND.to_string(),
    };
    (out, false)
}

fn database(chan: &Channel, name: &str, argv: &[String]) -> String {
    let db = match astdb(&chan.core) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("{}", e);
            return r(0);
        }
    };
    let (f, k) = (arg(argv, 2), arg(argv, 3));
    match name {
        "DATABASE GET" => match db.get(f, k) {
            Ok(Some(v)) => AgiResult::new(1).data(v).line(),
            _ => r(0),
        },
        "DATABASE PUT" => r(db.put(f, k, arg(argv, 4)).is_ok() as i64),
        "DATABASE DEL" => r(matches!(db.del(f, k), Ok(true)) as i64),
        _ => r(matches!(db.deltree(f, argv.get(3).map(|s| s.as_str())), Ok(n) if n > 0) as i64),
    }
}

async fn gosub(chan: &mut Channel, argv: &[String], conn: Option<&mut Conn>) -> String {
    let saved = (
        chan.context.clone(),
        chan.exten.clone(),
        chan.priority,
        chan.jumped,
    );
    let target = format!("{},{},{}", arg(argv, 1), arg(argv, 2), arg(argv, 3));
    let args: Vec<String> = match argv.get(4) {
        Some(a) => split_args(a),
        None => Vec::new(),
    };
    if !pbx::gosub(chan, &target, &args, true) {
        return "200 result=-1 Gosub label not found\n".to_string();
    }
    if let Some(c) = conn {
        let _ = c.send(TRYING).await;
    }
    let depth = chan.stack.len();
    pbx::run_segment(chan, 100_000).await;
    // A segment that ended without Return leaves its frame: drop it.
    while chan.stack.len() >= depth && depth > 0 {
        if pbx::gosub_return(chan).is_none() {
            break;
        }
    }
    chan.context = saved.0;
    chan.exten = saved.1;
    chan.priority = saved.2;
    chan.jumped = saved.3;
    "200 result=0 Gosub complete\n".to_string()
}

async fn record_file(chan: &mut Channel, argv: &[String]) -> String {
    // RECORD FILE <file> <format> <escape> <timeout_ms> [offset] [BEEP] [s=<silence>]
    let file = arg(argv, 2);
    let fmt = arg(argv, 3);
    let escape = arg(argv, 4).to_string();
    let timeout_ms = arg(argv, 5).parse::<i64>().unwrap_or(-1);
    let mut beep = false;
    let mut silence_s = 0u64;
    for a in argv.iter().skip(6) {
        if let Some(s) = a.strip_prefix("s=") {
            silence_s = s.parse().unwrap_or(0);
        } else if a.eq_ignore_ascii_case("beep") {
            beep = true;
        }
    }
    let mut path = std::path::PathBuf::from(format!("{file}.{fmt}"));
    if !path.is_absolute() {
        let base = chan
            .core
            .dirs
            .sounds
            .first()
            .cloned()
            .unwrap_or_else(|| chan.core.dirs.data.join("sounds"));
        path = base.join(path);
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if beep {
        if let (StreamEnd::Hangup, _) = stream(chan, "beep", &escape, 0, None).await {
            return AgiResult::new(-1).data("hangup").endpos(0).line();
        }
    }
    let mut rec = match Recorder::create(&path) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("{}: RECORD FILE {}: {}", chan.name, path.display(), e);
            return AgiResult::new(-1).data("writefile").line();
        }
    };
    chan.set_read_format(Some(Format::Slin8));
    let mut det = crate::media::energy::SilenceDetector::new(
        crate::media::energy::DEFAULT_SILENCE_THRESHOLD,
        8000,
    );
    let deadline =
        (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
    let mut samples: i64 = 0;
    let reply = loop {
        match chan.read_until(deadline).await {
            ReadEvent::Voice(f) => {
                samples += (f.data.len() / 2) as i64;
                let _ = rec.write_frame(&f);
                if silence_s > 0 {
                    det.process(&f.slin_samples());
                    if det.total_silence_ms() >= silence_s * 1000 {
                        break AgiResult::new(0).data("timeout").endpos(samples).line();
                    }
                }
            }
            ReadEvent::Dtmf(d) if escape.contains(d) => {
                break AgiResult::new(ascii(d)).data("dtmf").endpos(samples).line();
            }
            ReadEvent::Timeout => break AgiResult::new(0).data("timeout").endpos(samples).line(),
            ReadEvent::Hangup | ReadEvent::Interrupted => {
                break AgiResult::new(-1).data("hangup").endpos(samples).line();
            }
            _ => {}
        }
    };
    chan.set_read_format(None);
    if let Err(e) = rec.finish() {
        tracing::warn!("{}: RECORD FILE: {}", chan.name, e);
    }
    reply
}

/// Why `SPEECH RECOGNIZE` ended.
#[derive(Debug, Clone, PartialEq)]
enum RecognizeEnd {
    Speech(Vec<crate::speech::engine::SpeechResult>),
    Digit(char),
    Timeout,
    Hangup,
}

/// The `SPEECH RECOGNIZE` reply (res_agi.c `handle_speechrecognize`); `endpos` is the sample
/// offset in the prompt where speech (barge-in) stopped it, 0 when it was not stopped so.
fn recognize_reply(end: &RecognizeEnd, endpos: u64) -> String {
    let endpos = endpos as i64;
    match end {
        RecognizeEnd::Speech(results) => {
            let mut res = AgiResult::new(1)
                .data("speech")
                .endpos(endpos)
                .kv("results", results.len().to_string());
            for (i, x) in results.iter().enumerate() {
                res = res
                    .kv(format!("score{i}"), x.score.to_string())
                    .kv(format!("text{i}"), format!("\"{}\"", x.text))
                    .kv(format!("grammar{i}"), x.grammar.clone().unwrap_or_default());
            }
            res.line()
        }
        RecognizeEnd::Digit(d) => format!("200 result=1 (digit) digit={d} endpos={endpos}\n"),
        RecognizeEnd::Timeout => AgiResult::new(1).data("timeout").endpos(endpos).line(),
        RecognizeEnd::Hangup => AgiResult::new(1).data("hangup").endpos(endpos).line(),
    }
}

/// `SPEECH RECOGNIZE <prompt> <timeout_s> [offset]`, the loop of res_agi.c: play the prompt
/// (from `offset` samples), feed the caller's audio to the engine while it is READY, stop the
/// prompt on barge-in (recording where it stopped for `endpos`), play the processing sound
/// while it is in WAIT, and end on results, the first DTMF digit, hangup, or `timeout` seconds
/// after the prompt ended (0: no timeout).
async fn speech_recognize(chan: &mut Channel, argv: &[String]) -> String {
    use super::speech as sp;
    use crate::speech::engine::SpeechState;
    let timeout = arg(argv, 3)
        .parse::<f64>()
        .ok()
        .filter(|t| *t > 0.0)
        .map(Duration::from_secs_f64);
    let offset: u64 = arg(argv, 4).parse().unwrap_or(0);
    let (shared, format) = {
        let Some(s) = sp::speech_mut(chan) else {
            return r(0);
        };
        let st = s.state();
        if st == SpeechState::NotReady || st == SpeechState::Done {
            s.shared.set_state(SpeechState::NotReady);
            if let Err(e) = s.start() {
                tracing::warn!("SPEECH RECOGNIZE: start failed: {}", e);
            }
        }
        (s.shared.clone(), s.format)
    };
    chan.set_read_format(Some(format));
    chan.stop_generator();
    let prompt = arg(argv, 2);
    match open_sound(chan, prompt) {
        Some(mut g) => {
            if offset > 0 {
                g.skip_ms((offset / 8) as i64);
            }
            chan.start_generator(g);
        }
        None => tracing::warn!(
            "{}: SPEECH RECOGNIZE: sound '{}' not found",
            chan.name,
            prompt
        ),
    }
    let mut current_offset: u64 = 0;
    let mut started: Option<Instant> = None;
    let mut feed = sp::EngineFeed::new();
    let end = loop {
        let ev = tokio::select! {
            ev = chan.read_timeout(sp::FEED_READ_TIMEOUT) => Some(ev),
            _ = shared.changed() => None,
        };
        if let (Some(t), Some(s)) = (timeout, started) {
            if s.elapsed() >= t {
                break RecognizeEnd::Timeout;
            }
        }
        let (quiet, state) = {
            let mut g = shared.lock();
            let q = std::mem::take(&mut g.quiet);
            (q, g.state.0)
        };
        if quiet && chan.generator_active() {
            // ast_tellstream() then ast_stopstream(): where the prompt stopped.
            current_offset = chan.stop_generator();
        }
        match state {
            SpeechState::Ready => {
                if timeout.is_some() && started.is_none() && !chan.generator_active() {
                    started = Some(Instant::now());
                }
                feed.feed(chan, ev.as_ref());
            }
            SpeechState::Wait => {
                if !chan.generator_active() {
                    let ps = sp::speech_mut(chan).and_then(|s| s.processing_sound.clone());
                    if let Some(ps) =
                        ps.filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("none"))
                    {
                        if let Some(g) = open_sound(chan, &ps) {
                            chan.start_generator(g);
                        }
                    }
                }
            }
            SpeechState::Done => {
                let results = match sp::speech_mut(chan) {
                    Some(s) => {
                        let r = s.results_get().await;
                        s.shared.set_results(r.clone());
                        s.shared.set_state(SpeechState::NotReady);
                        r.unwrap_or_default()
                    }
                    None => Vec::new(),
                };
                break RecognizeEnd::Speech(results);
            }
            SpeechState::NotReady => {}
        }
        match ev {
            Some(ReadEvent::Dtmf(d)) => break RecognizeEnd::Digit(d),
            Some(ReadEvent::Hangup) | Some(ReadEvent::Interrupted) => break RecognizeEnd::Hangup,
            _ => {}
        }
    };
    chan.stop_generator();
    chan.set_read_format(None);
    recognize_reply(&end, current_offset)
}

/// `SPEECH SET` reply: like `handle_speechset` in res_agi.c, `result=0` only when the channel has
/// no speech object; the engine's own answer (`changed`) is ignored, so it is always `result=1`.
fn speech_set_reply(changed: Option<bool>) -> String {
    match changed {
        Some(_) => r(1),
        None => r(0),
    }
}

async fn speech(chan: &mut Channel, name: &str, argv: &[String]) -> String {
    use super::speech as sp;
    match name {
        "SPEECH CREATE" => r(sp::create(chan, arg(argv, 2)).await.is_ok() as i64),
        "SPEECH SET" => speech_set_reply(match sp::speech_mut(chan) {
            Some(s) => Some(s.session.change(arg(argv, 2), arg(argv, 3)).await.is_ok()),
            None => None,
        }),
        "SPEECH DESTROY" => {
            if sp::speech_mut(chan).is_none() {
                return r(0);
            }
            r(
                (pbx::exec_app(chan, "SpeechDestroy", "").await == Some(AppResult::Continue))
                    as i64,
            )
        }
        "SPEECH LOAD GRAMMAR" => {
            let path = sp::grammar_path(chan, arg(argv, 4));
            let g = arg(argv, 3).to_string();
            match sp::speech_mut(chan) {
                Some(s) => r(s.session.load_grammar(&g, &path).is_ok() as i64),
                None => r(0),
            }
        }
        "SPEECH UNLOAD GRAMMAR" | "SPEECH ACTIVATE GRAMMAR" | "SPEECH DEACTIVATE GRAMMAR" => {
            let g = arg(argv, 3).to_string();
            match sp::speech_mut(chan) {
                Some(s) => {
                    let res = match name {
                        "SPEECH UNLOAD GRAMMAR" => s.session.unload_grammar(&g),
                        "SPEECH ACTIVATE GRAMMAR" => s.session.activate_grammar(&g),
                        _ => s.session.deactivate_grammar(&g),
                    };
                    r(res.is_ok() as i64)
                }
                None => r(0),
            }
        }
        "SPEECH RECOGNIZE" => speech_recognize(chan, argv).await,
        _ => crate::interfaces::agi::INVALID_COMMAND.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_strings() {
        assert_eq!(AgiStatus::Success.as_str(), "SUCCESS");
        assert_eq!(AgiStatus::NotFound.as_str(), "NOTFOUND");
        assert_eq!(AgiStatus::Hangup.as_str(), "HANGUP");
    }

    #[test]
    fn stream_replies() {
        assert_eq!(
            stream_reply(StreamEnd::Digit('1'), 800),
            "200 result=49 endpos=800\n"
        );
        assert_eq!(
            stream_reply(StreamEnd::Done, 11200),
            "200 result=0 endpos=11200\n"
        );
        assert_eq!(
            stream_reply(StreamEnd::NotFound, 0),
            "200 result=-1 endpos=0\n"
        );
        assert_eq!(say_reply(StreamEnd::Digit('#')), "200 result=35\n");
    }

    mod fake_speech {
        use crate::media::{Format, Frame};
        use crate::speech::engine::{
            Engine, EngineSession, ResultsType, SpeechError, SpeechResult, SpeechShared,
            SpeechState,
        };
        use futures_util::future::BoxFuture;
        use std::sync::Arc;

        /// Barges in after `quiet_after` frames of caller audio, answers after `done_after`.
        pub struct Fake {
            pub quiet_after: usize,
            pub done_after: usize,
        }
        struct Sess {
            shared: Arc<SpeechShared>,
            frames: usize,
            quiet_after: usize,
            done_after: usize,
        }
        impl Engine for Fake {
            fn name(&self) -> &str {
                "fake"
            }
            fn formats(&self) -> Vec<Format> {
                vec![Format::Slin8]
            }
            fn create(
                &self,
                _format: Format,
                shared: Arc<SpeechShared>,
            ) -> BoxFuture<'_, Result<Box<dyn EngineSession>, SpeechError>> {
                let s: Box<dyn EngineSession> = Box::new(Sess {
                    shared,
                    frames: 0,
                    quiet_after: self.quiet_after,
                    done_after: self.done_after,
                });
                Box::pin(async move { Ok(s) })
            }
        }
        impl EngineSession for Sess {
            fn engine_name(&self) -> &str {
                "fake"
            }
            fn start(&mut self) -> Result<(), SpeechError> {
                self.frames = 0;
                self.shared.set_state(SpeechState::Ready);
                Ok(())
            }
            fn write(&mut self, _frame: &Frame) {
                self.frames += 1;
                if self.frames == self.quiet_after {
                    self.shared.set_quiet(std::time::Instant::now());
                }
                if self.frames == self.done_after {
                    self.shared.push_results(vec![SpeechResult {
                        text: "sales".into(),
                        score: 900,
                        grammar: Some("departments".into()),
                        nbest: 0,
                    }]);
                }
            }
            fn change<'a>(
                &'a mut self,
                _n: &'a str,
                _v: &'a str,
            ) -> BoxFuture<'a, Result<(), SpeechError>> {
                Box::pin(async { Err(SpeechError::Engine("no settings".into())) })
            }
            fn get_setting<'a>(
                &'a mut self,
                _n: &'a str,
            ) -> BoxFuture<'a, Result<String, SpeechError>> {
                Box::pin(async { Err(SpeechError::Engine("no settings".into())) })
            }
            fn change_results_type(
                &mut self,
                _t: ResultsType,
            ) -> BoxFuture<'_, Result<(), SpeechError>> {
                Box::pin(async { Ok(()) })
            }
            fn get_results(&mut self) -> BoxFuture<'_, Option<Vec<SpeechResult>>> {
                Box::pin(async { None })
            }
            fn destroy(&mut self) -> BoxFuture<'_, ()> {
                Box::pin(async {})
            }
        }
    }

    /// A channel on a fake engine whose far end sends 20 ms of silence every 20 ms, and a
    /// 2 s prompt file. Returns the channel, the prompt path (no extension) and the feeder.
    async fn speech_channel(
        quiet_after: usize,
        done_after: usize,
    ) -> (
        tempfile::TempDir,
        Channel,
        String,
        tokio::task::JoinHandle<()>,
    ) {
        use crate::channel::{ChanMsg, TechLink};
        use crate::media::{Format, Frame};
        let dir = tempfile::tempdir().unwrap();
        let (dirs, options) = crate::runtime::read_main_conf(dir.path()).unwrap();
        let core = crate::core::Core::new(dirs, options, crate::dialplan::Dialplan::default());
        core.speech
            .register(std::sync::Arc::new(fake_speech::Fake {
                quiet_after,
                done_after,
            }))
            .unwrap();
        let prompt = dir.path().join("prompt");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(prompt.with_extension("wav"), spec).unwrap();
        for i in 0..16000 {
            w.write_sample(((i % 40) * 200 - 4000) as i16).unwrap();
        }
        w.finalize().unwrap();
        let (mine, mut far) = TechLink::pair("Test", Format::Slin8);
        let mut chan = Channel::new(&core, "Test/speech-1".into(), mine);
        chan.set_state(ChannelState::Up);
        let feeder = tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_millis(20));
            loop {
                iv.tick().await;
                while far.rx.try_recv().is_ok() {}
                let f = Frame::new(Format::Slin8, bytes::Bytes::from(vec![0u8; 320]));
                if far.tx.send(ChanMsg::Frame(f)).await.is_err() {
                    break;
                }
            }
        });
        super::super::speech::create(&mut chan, "fake")
            .await
            .unwrap();
        (dir, chan, prompt.display().to_string(), feeder)
    }

    fn argv(line: &str) -> Vec<String> {
        line.split(' ').map(String::from).collect()
    }

    #[tokio::test]
    async fn speech_recognize_reports_where_barge_in_stopped_the_prompt() {
        // Barge-in after 10 frames (~200 ms into the 2 s prompt), results after 15.
        let (_d, mut chan, prompt, feeder) = speech_channel(10, 15).await;
        let line =
            speech_recognize(&mut chan, &argv(&format!("SPEECH RECOGNIZE {prompt} 5"))).await;
        let re = regex::Regex::new(
            r#"^200 result=1 \(speech\) endpos=(\d+) results=1 score0=900 text0="sales" grammar0=departments\n$"#,
        )
        .unwrap();
        let c = re.captures(&line).unwrap_or_else(|| panic!("{line:?}"));
        let endpos: u64 = c[1].parse().unwrap();
        // Stopped part-way: after some audio, well before the end (16000 samples).
        assert!((800..12000).contains(&endpos), "{line}");
        assert!(!chan.generator_active());

        // A start offset counts in endpos (ast_tellstream is absolute in the file).
        let line = speech_recognize(
            &mut chan,
            &argv(&format!("SPEECH RECOGNIZE {prompt} 5 8000")),
        )
        .await;
        let c = re.captures(&line).unwrap_or_else(|| panic!("{line:?}"));
        let endpos2: u64 = c[1].parse().unwrap();
        assert!((8800..16000).contains(&endpos2), "{line}");
        feeder.abort();
    }

    #[tokio::test]
    async fn speech_recognize_without_barge_in_reports_endpos_zero() {
        // No barge-in, the engine never answers: timeout 1 s after the 2 s prompt ended.
        let (_d, mut chan, prompt, feeder) = speech_channel(usize::MAX, usize::MAX).await;
        let line =
            speech_recognize(&mut chan, &argv(&format!("SPEECH RECOGNIZE {prompt} 1"))).await;
        assert_eq!(line, "200 result=1 (timeout) endpos=0\n");
        feeder.abort();
    }

    #[test]
    fn recognize_replies() {
        assert_eq!(
            recognize_reply(&RecognizeEnd::Digit('5'), 1600),
            "200 result=1 (digit) digit=5 endpos=1600\n"
        );
        assert_eq!(
            recognize_reply(&RecognizeEnd::Hangup, 0),
            "200 result=1 (hangup) endpos=0\n"
        );
        assert_eq!(
            recognize_reply(&RecognizeEnd::Speech(Vec::new()), 320),
            "200 result=1 (speech) endpos=320 results=0\n"
        );
    }

    #[test]
    fn speech_set_ignores_engine_result() {
        assert_eq!(speech_set_reply(Some(false)), "200 result=1\n");
        assert_eq!(speech_set_reply(Some(true)), "200 result=1\n");
        assert_eq!(speech_set_reply(None), "200 result=0\n");
    }

    #[test]
    fn say_files() {
        assert_eq!(digit_file('*').as_deref(), Some("digits/star"));
        assert_eq!(alpha_file('B', true).as_deref(), Some("phonetic/b_p"));
        assert_eq!(alpha_file('b', false).as_deref(), Some("letters/b"));
        assert_eq!(alpha_file('~', false), None);
    }
}
