//! `voxpbx bench stt`: speech-to-text latency over real SIP calls.
//!
//! Paths measured side by side in one run (so ratios hold on a loaded machine):
//! - `floor`: the clips straight into the engine's inference pool (`WhisperEngine::
//!   transcribe_direct`: no PBX, no RTP, no VAD), so the floor has the engine's settings,
//!   resampler, window sizing and repetition-loop cut.
//! - `sip`: a voxpbx daemon started by the bench (or a running one given with `--target`)
//!   answers SIP calls placed with [`crate::sip::ua::dial`]; each call streams one clip as RTP at
//!   real-time pace into `SpeechBackground` running the engine in process, while the daemon
//!   plays a tone prompt the caller's speech must stop (barge-in).
//! - `aeap-hop`: the same, with the daemon's `aeap` engine pointed at `voxpbx aeap-serve`
//!   (started by the bench) serving the same whisper engine: the cost of the AEAP hop.
//! - `aeap`: an external AEAP engine given with `--aeap URL`.
//!
//! Per call, against the RTP timeline of what was sent (the clip's stored speech onset/end plus
//! the UA's play start; the bench and the daemon share the machine's clock):
//! - end of speech -> final result: arrival of the daemon's `SpeechResult` AMI event;
//! - speech onset -> prompt stopped *as the caller hears it*: the first 20 ms frame of the UA's
//!   recording (one frame per tick, jitter buffer included) after which the prompt tone stays
//!   silent; the `SpeechBargeIn` AMI event's arrival is kept beside it;
//! - the engine's own split (`SPEECH_ENGINE(timing)`): endpointing wait (last voiced audio ->
//!   endpoint), endpoint -> result, Whisper compute, first partial; RTF = compute / audio;
//! - daemon (and aeap-serve) CPU seconds per audio second and peak RSS (VmHWM).
//!
//! The daemon's dialplan (what a `--target` PBX must run in the context the calls reach; the
//! bench dials `sip:<100000+call>@HOST:PORT`):
//!
//! ```text
//! exten => _X.,1,UserEvent(BenchStart,Call: ${EXTEN})
//!  same => n,SpeechCreate(ENGINE)
//!  same => n,Answer()
//!  same => n,SpeechBackground(PROMPT,3)
//!  same => n,UserEvent(BenchDone,Call: ${EXTEN},Timing: ${SPEECH_ENGINE(timing)})
//!  same => n,SpeechDestroy()
//!  same => n,Hangup()
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::corpus::{self, Clip};
use super::wer::{self, WerResult};
use crate::config::{ConfFile, Section};
use crate::sip::ua::{dial, DialAudio, DialOpts, DialSummary};
use crate::speech::engines::whisper::{WhisperEngine, WhisperSettings};

/// Codec of the calls (the daemon's endpoint allows only this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchCodec {
    Ulaw,
    Alaw,
}

impl BenchCodec {
    pub fn parse(s: &str) -> Result<BenchCodec, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ulaw" | "pcmu" | "g711u" => Ok(BenchCodec::Ulaw),
            "alaw" | "pcma" | "g711a" => Ok(BenchCodec::Alaw),
            o => Err(format!("unknown codec '{o}' (ulaw or alaw)")),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            BenchCodec::Ulaw => "ulaw",
            BenchCodec::Alaw => "alaw",
        }
    }
}

/// Which paths to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paths {
    pub floor: bool,
    pub sip: bool,
    pub hop: bool,
}

impl Paths {
    pub const ALL: Paths = Paths {
        floor: true,
        sip: true,
        hop: true,
    };
    /// `floor,sip,hop` (any subset, comma separated).
    pub fn parse(s: &str) -> Result<Paths, String> {
        let mut p = Paths {
            floor: false,
            sip: false,
            hop: false,
        };
        for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "floor" => p.floor = true,
                "sip" => p.sip = true,
                "hop" | "aeap-hop" => p.hop = true,
                o => return Err(format!("unknown path '{o}' (floor, sip, hop)")),
            }
        }
        if !(p.floor || p.sip || p.hop) {
            return Err("no path selected".into());
        }
        Ok(p)
    }
}

/// A running PBX to measure instead of one the bench starts.
#[derive(Debug, Clone)]
pub struct Target {
    /// SIP `HOST:PORT` the calls go to.
    pub sip: String,
    /// AMI `HOST:PORT`.
    pub ami: String,
    pub ami_user: String,
    pub ami_secret: String,
}

/// Options of `voxpbx bench stt`.
#[derive(Debug, Clone)]
pub struct SttOpts {
    /// Engine sections of speech.conf (empty = every whisper section).
    pub engines: Vec<String>,
    /// External AEAP engines (ws:// or wss:// URLs).
    pub aeap: Vec<String>,
    pub paths: Paths,
    pub corpus: PathBuf,
    /// Calls per path (0 = one per clip; more than the clips cycles through them).
    pub calls: usize,
    pub concurrency: usize,
    pub codec: BenchCodec,
    pub json: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    /// Configuration directory whose speech.conf defines the engines.
    pub conf: PathBuf,
    pub target: Option<Target>,
}

/// One clip through the floor.
#[derive(Debug, Clone, Serialize)]
pub struct FloorMeasure {
    pub clip: String,
    pub text: String,
    pub wer: f64,
    pub inference_ms: f64,
    pub audio_ms: u64,
    pub rtf: f64,
}

/// One call.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CallMeasure {
    pub call: usize,
    pub clip: String,
    pub text: String,
    pub wer: f64,
    pub audio_ms: u64,
    pub speech_start_ms: u64,
    pub speech_end_ms: u64,
    /// End of speech (UA play start + speech_end_ms) -> SpeechResult event.
    pub eos_to_result_ms: Option<f64>,
    /// Speech onset -> the prompt goes quiet in the caller's received audio.
    pub onset_to_prompt_stop_ms: Option<f64>,
    /// Speech onset -> SpeechBargeIn event.
    pub onset_to_bargein_event_ms: Option<f64>,
    /// Engine-timed: last voiced audio -> endpoint.
    pub endpoint_wait_ms: Option<f64>,
    /// Engine-timed: endpoint -> result.
    pub after_endpoint_ms: Option<f64>,
    /// Engine-timed: last voiced audio -> first partial result.
    pub eos_to_first_partial_ms: Option<f64>,
    /// Engine-timed Whisper compute for the utterance (speculative runs included).
    pub inference_ms: Option<f64>,
    pub rtf: Option<f64>,
    pub error: Option<String>,
}

/// Everything measured on one path of one engine.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PathReport {
    pub engine: String,
    /// `sip`, `aeap-hop`, `aeap` or `target`.
    pub path: String,
    pub calls: Vec<CallMeasure>,
    pub wer: Option<WerSummary>,
    /// CPU seconds of the daemon (and aeap-serve) per second of audio sent.
    pub cpu_s_per_audio_s: Option<f64>,
    /// Daemon VmHWM in MB.
    pub peak_mb: Option<f64>,
    /// aeap-serve VmHWM in MB (aeap-hop).
    pub server_peak_mb: Option<f64>,
    pub wall_s: f64,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct FloorReport {
    pub engine: String,
    pub clips: Vec<FloorMeasure>,
    pub wer: Option<WerSummary>,
    pub notes: Vec<String>,
}

/// In-run ratios of one engine.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Comparison {
    pub engine: String,
    /// p50 of the pipeline's Whisper compute / p50 of the floor's.
    pub inference_over_floor: Option<f64>,
    /// p50 of (endpoint -> result) in the pipeline / p50 of the floor's inference.
    pub after_endpoint_over_floor: Option<f64>,
    /// AEAP hop minus in-process end of speech -> result, per clip, p50 and p95.
    pub hop_added_p50_ms: Option<f64>,
    pub hop_added_p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct WerSummary {
    pub wer: f64,
    pub ref_words: usize,
    pub substitutions: usize,
    pub deletions: usize,
    pub insertions: usize,
}

impl From<WerResult> for WerSummary {
    fn from(w: WerResult) -> Self {
        WerSummary {
            wer: w.wer(),
            ref_words: w.ref_words,
            substitutions: w.substitutions,
            deletions: w.deletions,
            insertions: w.insertions,
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub machine: String,
    /// `/proc/loadavg` at the start and the end of the run.
    pub load_start: String,
    pub load_end: String,
    pub corpus: String,
    pub codec: String,
    pub concurrency: usize,
    pub floor: Vec<FloorReport>,
    pub paths: Vec<PathReport>,
    pub comparisons: Vec<Comparison>,
}

/// Nearest-rank percentile of `v` (p in 0..=100); None when empty.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    Some(s[rank.min(s.len()) - 1])
}

/// The engine sections of `<conf>/speech.conf`, read by the daemon's own config parser.
pub(crate) fn engine_sections(conf: &Path) -> anyhow::Result<Vec<Section>> {
    let file = ConfFile::load_optional(conf, "speech.conf")
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .ok_or_else(|| anyhow::anyhow!("{}: not found", conf.join("speech.conf").display()))?;
    Ok(file.real_sections().cloned().collect())
}

/// `type = whisper` (the engines with a floor and an AEAP hop).
pub(crate) fn is_whisper(s: &Section) -> bool {
    s.get("type")
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("whisper"))
}

/// The models directory of the config dir `conf` (voxpbx.conf `[directories] models`): where
/// its speech.conf's relative model paths point.
pub(crate) fn models_dir(conf: &Path) -> anyhow::Result<PathBuf> {
    Ok(crate::runtime::read_main_conf(conf)?.0.models)
}

fn run_floor(
    out: &mut Vec<FloorMeasure>,
    clips: &[Clip],
    sec: &Section,
    conf: &Path,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    // The engine itself with one worker: its settings, resampler and loop handling.
    let mut settings =
        WhisperSettings::from_section(sec, &models_dir(conf)?).map_err(anyhow::Error::msg)?;
    settings.pool_size = 1;
    let engine = WhisperEngine::new(&sec.name, settings).map_err(anyhow::Error::msg)?;
    let pcm =
        |c: &Clip| -> Vec<f32> { c.samples.iter().map(|&s| f32::from(s) / 32768.0).collect() };
    // Warm-up pass so the first clip does not pay for first-use allocations.
    if let Some(c) = clips.first() {
        let _ = engine.transcribe_direct(&pcm(c), 8000);
    }
    for c in clips {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let pcm = pcm(c);
        let t0 = Instant::now();
        let text = engine.transcribe_direct(&pcm, 8000)?.text;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let w = wer::wer(&c.transcript, &text);
        eprintln!(
            "  floor {:<32} {:>7.1} ms  wer {:.2}  \"{}\"",
            c.name,
            ms,
            w.wer(),
            text
        );
        out.push(FloorMeasure {
            clip: c.name.clone(),
            text,
            wer: w.wer(),
            inference_ms: ms,
            audio_ms: c.duration_ms,
            rtf: ms / c.duration_ms.max(1) as f64,
        });
    }
    Ok(())
}

/// CPU seconds (utime + stime) of a process.
pub fn proc_cpu_s(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the name start at 3 (state); utime = 14, stime = 15.
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((ut + st) / if tck > 0 { tck as f64 } else { 100.0 })
}

/// VmHWM of a process in MB.
pub fn proc_peak_mb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = l.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

// ---------------------------------------------------------------- processes

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let p = std::env::temp_dir().join(format!(
            "voxpbx-bench-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // VOXPBX_BENCH_KEEP=1 keeps the daemon's configuration and log for a post-mortem.
        if std::env::var_os("VOXPBX_BENCH_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
struct Proc {
    child: std::process::Child,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = s.len().saturating_sub(2000);
        s.get(start..).unwrap_or("").to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str], conf: &Path, log: PathBuf) -> anyhow::Result<Proc> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(&log)?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    // SAFETY: prctl is async-signal-safe; the closure touches no shared state. The child dies
    // with the bench even when the bench is killed without unwinding (SIGTERM, SIGKILL).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd
        .args(args)
        .arg("-C")
        .arg(conf)
        .env(
            "RUST_LOG",
            std::env::var("VOXPBX_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(out.try_clone()?))
        .stderr(std::process::Stdio::from(out))
        .spawn()?;
    Ok(Proc { child, log })
}

fn free_tcp_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn free_udp_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

/// An even UDP port range `[base, base + count)` free now (the daemon's RTP ports).
fn free_rtp_range(count: u16) -> anyhow::Result<u16> {
    for _ in 0..200 {
        let base = (20_000 + rand::random::<u16>() % 20_000) & !1;
        if (0..count).all(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    anyhow::bail!("no free RTP port range of {count}")
}

/// The bench daemon's voxpbx.conf: its own run dir, the models of the config dir `conf`.
fn main_conf(dir: &Path, conf: &Path) -> anyhow::Result<String> {
    Ok(format!(
        "[directories]\nrun = {run}\nmodels = {models}\n[options]\nverbose = 0\n",
        run = dir.join("run").display(),
        models = models_dir(conf)?.display()
    ))
}

/// Calls are dialled as extension EXTEN_BASE + call number.
const EXTEN_BASE: usize = 100_000;
/// How long a call may wait for its result after the clip and the timeout (ms).
const CALL_SLACK_MS: u64 = 60_000;
/// SpeechBackground's timeout after the prompt (s).
const BG_TIMEOUT_S: u64 = 3;

/// The dialplan of a bench daemon (see the module documentation).
pub fn bench_dialplan(engine: &str, prompt: &Path) -> String {
    format!(
        "[general]\nstatic = yes\n\n[bench]\n\
         exten => _X.,1,UserEvent(BenchStart,Call: ${{EXTEN}})\n \
         same => n,SpeechCreate({engine})\n \
         same => n,Answer()\n \
         same => n,SpeechBackground({prompt},{BG_TIMEOUT_S})\n \
         same => n,UserEvent(BenchDone,Call: ${{EXTEN}},Timing: ${{SPEECH_ENGINE(timing)}})\n \
         same => n,SpeechDestroy()\n \
         same => n,Hangup()\n",
        prompt = prompt.display()
    )
}

/// A 440 Hz tone: the prompt whose stop the caller hears.
pub fn prompt_tone(ms: u64) -> Vec<i16> {
    (0..ms * 8)
        .map(|i| {
            let t = i as f64 / 8000.0;
            ((2.0 * std::f64::consts::PI * 440.0 * t).sin() * 6000.0) as i16
        })
        .collect()
}

/// The engine a bench daemon runs.
enum DaemonEngine {
    /// A speech.conf section, in process.
    Local { name: String },
    /// An AEAP engine at this URL (registered as `name`).
    Aeap { name: String, url: String },
}

struct Daemon {
    proc: Proc,
    sip: String,
    ami: String,
    _dir: TempDir,
}

fn start_daemon(
    conf: &Path,
    engine: &DaemonEngine,
    codec: BenchCodec,
    concurrency: usize,
    prompt_ms: u64,
) -> anyhow::Result<Daemon> {
    let dir = TempDir::new()?;
    let c = dir.path().join("conf");
    std::fs::create_dir_all(&c)?;
    let ami = free_tcp_port()?;
    let sip = free_udp_port()?;
    let count = (4 * concurrency.max(1) + 16).min(4000) as u16;
    let rtp = free_rtp_range(count)?;
    let name = match engine {
        DaemonEngine::Local { name } => {
            std::fs::copy(conf.join("speech.conf"), c.join("speech.conf"))?;
            name
        }
        DaemonEngine::Aeap { name, url } => {
            std::fs::write(c.join("speech.conf"), "")?;
            std::fs::write(
                c.join("aeap.conf"),
                format!(
                    "[{name}]\ntype = client\nurl = {url}\nprotocol = speech_to_text\ncodecs = !all,{}\n",
                    codec.name()
                ),
            )?;
            name
        }
    };
    std::fs::write(c.join("voxpbx.conf"), main_conf(dir.path(), conf)?)?;
    std::fs::write(
        c.join("manager.conf"),
        format!("[general]\nenabled = yes\nport = {ami}\nbindaddr = 127.0.0.1\n\n[bench]\nsecret = bench\nread = all\nwrite = all\n"),
    )?;
    std::fs::write(
        c.join("pjsip.conf"),
        format!(
            "[udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{sip}\n\n\
             [bench]\ntype = endpoint\ncontext = bench\ndisallow = all\nallow = {}\nrtp_symmetric = yes\n\n\
             [bench-id]\ntype = identify\nendpoint = bench\nmatch = 127.0.0.1\n",
            codec.name()
        ),
    )?;
    std::fs::write(
        c.join("rtp.conf"),
        format!(
            "[general]\nrtpstart = {rtp}\nrtpend = {}\n",
            rtp + count - 1
        ),
    )?;
    let prompt = dir.path().join("prompt.wav");
    corpus::write_wav(&prompt, &prompt_tone(prompt_ms), 8000)?;
    std::fs::write(
        c.join("extensions.conf"),
        bench_dialplan(name, &prompt.with_extension("")),
    )?;
    let proc = spawn(&["run", "-f"], &c, dir.path().join("daemon.log"))?;
    Ok(Daemon {
        proc,
        sip: format!("127.0.0.1:{sip}"),
        ami: format!("127.0.0.1:{ami}"),
        _dir: dir,
    })
}

/// `voxpbx aeap-serve` for one whisper engine of `conf`.
fn start_aeap_server(conf: &Path, engine: &str) -> anyhow::Result<(Proc, String, TempDir)> {
    let dir = TempDir::new()?;
    let c = dir.path().join("conf");
    std::fs::create_dir_all(&c)?;
    std::fs::copy(conf.join("speech.conf"), c.join("speech.conf"))?;
    std::fs::write(c.join("voxpbx.conf"), main_conf(dir.path(), conf)?)?;
    let port = free_tcp_port()?;
    let listen = format!("127.0.0.1:{port}");
    let proc = spawn(
        &["aeap-serve", "--listen", &listen, "--engine", engine],
        &c,
        dir.path().join("aeap-serve.log"),
    )?;
    Ok((proc, format!("ws://{listen}"), dir))
}

async fn wait_tcp(addr: &str, secs: u64, proc: Option<&mut Proc>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut proc = proc;
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(p) = proc.as_mut() {
            if let Ok(Some(st)) = p.child.try_wait() {
                anyhow::bail!("{addr}: process exited ({st}): {}", p.log_tail());
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("nothing listens on {addr} after {secs} s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------- AMI

/// What AMI said about one call (times in unix ms).
#[derive(Debug, Default, Clone)]
struct AmiCall {
    bargein: Option<f64>,
    result: Option<(f64, HashMap<String, String>)>,
    done: Option<HashMap<String, String>>,
}

#[derive(Default)]
struct AmiState {
    chans: HashMap<String, usize>,
    calls: HashMap<usize, AmiCall>,
    login: Option<Result<(), String>>,
    booted: bool,
    closed: bool,
}

struct Ami {
    state: Arc<Mutex<AmiState>>,
    notify: Arc<Notify>,
    _writer: tokio::net::tcp::OwnedWriteHalf,
}

fn unix_ms_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn call_of(m: &HashMap<String, String>) -> Option<usize> {
    m.get("Call")?
        .trim()
        .parse::<usize>()
        .ok()?
        .checked_sub(EXTEN_BASE)
}

/// Apply one AMI message to the state.
fn ami_apply(st: &mut AmiState, at: f64, m: HashMap<String, String>) {
    if m.get("ActionID").map(String::as_str) == Some("login") {
        st.login = Some(
            if m.get("Response").map(String::as_str) == Some("Success") {
                Ok(())
            } else {
                Err(m.get("Message").cloned().unwrap_or_default())
            },
        );
        return;
    }
    let Some(ev) = m.get("Event").cloned() else {
        return;
    };
    let chan = m.get("Channel").cloned().unwrap_or_default();
    match ev.as_str() {
        "FullyBooted" => st.booted = true,
        "UserEvent" => {
            let Some(k) = call_of(&m) else { return };
            match m.get("UserEvent").map(String::as_str) {
                Some("BenchStart") => {
                    st.chans.insert(chan, k);
                    st.calls.entry(k).or_default();
                }
                Some("BenchDone") => {
                    st.calls.entry(k).or_default().done = Some(m);
                }
                _ => {}
            }
        }
        "SpeechBargeIn" | "SpeechResult" => {
            let Some(&k) = st.chans.get(&chan) else {
                return;
            };
            let c = st.calls.entry(k).or_default();
            if ev == "SpeechBargeIn" {
                c.bargein = c.bargein.or(Some(at));
            } else if c.result.is_none() {
                c.result = Some((at, m));
            }
        }
        _ => {}
    }
}

async fn ami_connect(addr: &str, user: &str, secret: &str) -> anyhow::Result<Ami> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let stream = loop {
        match TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => anyhow::bail!("AMI on {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let state = Arc::new(Mutex::new(AmiState::default()));
    let notify = Arc::new(Notify::new());
    {
        let (state, notify) = (state.clone(), notify.clone());
        // VOXPBX_BENCH_DEBUG=1 prints every AMI message the bench receives.
        let debug = std::env::var_os("VOXPBX_BENCH_DEBUG").is_some();
        tokio::spawn(async move {
            let mut r = BufReader::new(r);
            let mut line = String::new();
            let mut cur: HashMap<String, String> = HashMap::new();
            loop {
                line.clear();
                match r.read_line(&mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let l = line.trim_end_matches(['\r', '\n']);
                if l.is_empty() {
                    if !cur.is_empty() {
                        let at = unix_ms_now();
                        if debug {
                            eprintln!("AMI {at:.0}: {cur:?}");
                        }
                        ami_apply(&mut state.lock(), at, std::mem::take(&mut cur));
                        notify.notify_waiters();
                    }
                } else if let Some((k, v)) = l.split_once(':') {
                    cur.insert(k.trim().to_string(), v.trim().to_string());
                }
            }
            state.lock().closed = true;
            notify.notify_waiters();
        });
    }
    w.write_all(
        format!("Action: Login\r\nUsername: {user}\r\nSecret: {secret}\r\nActionID: login\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let ami = Ami {
        state,
        notify,
        _writer: w,
    };
    ami.wait_for(Duration::from_secs(30), |s| s.login.is_some() || s.closed)
        .await;
    match ami.state.lock().login.clone() {
        Some(Ok(())) => {}
        Some(Err(e)) => anyhow::bail!("AMI login to {addr} failed: {e}"),
        None => anyhow::bail!("no AMI login response from {addr}"),
    }
    Ok(ami)
}

impl Ami {
    /// Wait until `f` holds (or the timeout passes); returns whether it holds.
    async fn wait_for(&self, timeout: Duration, f: impl Fn(&AmiState) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.notify.notified();
            if f(&self.state.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                return f(&self.state.lock());
            }
        }
    }
}

// ---------------------------------------------------------------- measuring

/// When the prompt stops in a recording (8 kHz, sample 0 at the answer), in ms: the end of the
/// last loud (prompt) 20 ms frame, when at least `quiet_frames` quiet frames follow it. Gaps
/// inside the prompt (late packets on a loaded box) do not count: the prompt resumes after them.
pub fn prompt_stop_ms(rec: &[i16], quiet_frames: usize) -> Option<u64> {
    let level = |f: &[i16]| f.iter().map(|&s| i64::from(s).abs()).sum::<i64>() / f.len() as i64;
    let frames: Vec<i64> = rec.chunks_exact(160).map(level).collect();
    let last_loud = frames.iter().rposition(|&l| l > 1000)?;
    let after = &frames[last_loud + 1..];
    let quiet = after.iter().take_while(|&&l| l < 300).count();
    (quiet >= quiet_frames).then_some((last_loud as u64 + 1) * 20)
}

/// `wait=500 after=30 ...` -> map of numbers.
pub fn parse_timing(s: &str) -> HashMap<String, f64> {
    s.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Turn one call's UA summary and AMI events into a measure.
fn measure(k: usize, clip: &Clip, sum: &anyhow::Result<DialSummary>, ami: &AmiCall) -> CallMeasure {
    let mut m = CallMeasure {
        call: k,
        clip: clip.name.clone(),
        audio_ms: clip.duration_ms,
        speech_start_ms: clip.span.speech_start_ms,
        speech_end_ms: clip.span.speech_end_ms,
        ..Default::default()
    };
    let s = match sum {
        Ok(s) if (200..300).contains(&s.status) => s,
        Ok(s) => {
            m.error = Some(format!("call failed: {} {}", s.status, s.reason));
            return m;
        }
        Err(e) => {
            m.error = Some(format!("call failed: {e:#}"));
            return m;
        }
    };
    if let (Some(p), Some(a), Some(pu)) = (s.play_started_ms, s.answered_ms, s.play_started_unix_ms)
    {
        let onset_rec = p.saturating_sub(a) as f64 + clip.span.speech_start_ms as f64;
        m.onset_to_prompt_stop_ms =
            prompt_stop_ms(&s.recorded, 10).map(|stop| stop as f64 - onset_rec);
        let pu = pu as f64;
        if let Some(b) = ami.bargein {
            m.onset_to_bargein_event_ms = Some(b - (pu + clip.span.speech_start_ms as f64));
        }
        if let Some((at, ev)) = &ami.result {
            m.eos_to_result_ms = Some(at - (pu + clip.span.speech_end_ms as f64));
            m.text = ev.get("Text").cloned().unwrap_or_default();
            if let Some(e) = ev.get("Error").filter(|e| !e.is_empty()) {
                m.error = Some(e.clone());
            }
        } else {
            m.error = Some("no SpeechResult".into());
        }
    } else {
        m.error = Some("the UA played nothing".into());
    }
    if let Some(d) = &ami.done {
        let t = parse_timing(d.get("Timing").map(String::as_str).unwrap_or(""));
        m.endpoint_wait_ms = t.get("wait").copied();
        m.after_endpoint_ms = t.get("after").copied();
        m.eos_to_first_partial_ms = t.get("partial").copied();
        m.inference_ms = t.get("inference").copied();
        if let (Some(i), Some(a)) = (t.get("inference"), t.get("audio")) {
            if *a > 0.0 {
                m.rtf = Some(i / a);
            }
        }
    }
    if m.inference_ms.is_none() {
        m.inference_ms = ami
            .result
            .as_ref()
            .and_then(|(_, ev)| ev.get("InferenceMs")?.parse().ok())
            .filter(|v: &f64| *v > 0.0);
    }
    m.wer = wer::wer(&clip.transcript, &m.text).wer();
    m
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

/// Run `calls` calls (cycling through the clips) against a PBX; `pids` are the processes whose
/// CPU and memory are charged to this path.
#[allow(clippy::too_many_arguments)]
async fn run_calls(
    rep: &mut PathReport,
    clips: &[Clip],
    calls: usize,
    concurrency: usize,
    sip: &str,
    ami: &Ami,
    pids: &[u32],
    stop: &AtomicBool,
) {
    let t0 = Instant::now();
    let cpu = || -> Option<f64> {
        if pids.is_empty() {
            return None;
        }
        pids.iter().map(|&p| proc_cpu_s(p)).sum()
    };
    let cpu0 = cpu();
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0usize;
    let mut audio_ms = 0u64;
    let mut done = 0usize;
    loop {
        while set.len() < concurrency.max(1) && next < calls && !stop.load(Ordering::Relaxed) {
            let k = next;
            let clip = &clips[k % clips.len()];
            let mut o = DialOpts::new(format!("sip:{}@{sip}", EXTEN_BASE + k));
            o.from_user = Some("bench".into());
            // Like a phone, keep sending (silent) RTP after the clip: the engine's endpointing
            // runs on received audio. The daemon hangs up once it has the result.
            let tail_ms = BG_TIMEOUT_S * 1000 + CALL_SLACK_MS;
            let mut samples = clip.samples.clone();
            samples.resize(
                samples.len() + (u64::from(clip.rate) * tail_ms / 1000) as usize,
                0,
            );
            o.audio = Some(DialAudio::Samples {
                rate: clip.rate,
                samples,
            });
            o.keep_recording = true;
            o.hangup_after = Some(Duration::from_millis(clip.duration_ms + tail_ms));
            o.answer_timeout = Duration::from_secs(30);
            audio_ms += clip.duration_ms;
            set.spawn(async move { (k, dial(o).await) });
            next += 1;
        }
        if set.is_empty() {
            break;
        }
        let joined = tokio::select! {
            j = set.join_next() => j,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if stop.load(Ordering::Relaxed) {
                    set.abort_all();
                    break;
                }
                continue;
            }
        };
        let Some(Ok((k, sum))) = joined else { continue };
        // The daemon publishes BenchDone before its BYE; give the AMI reader a moment.
        ami.wait_for(Duration::from_secs(2), |s| {
            s.calls.get(&k).is_some_and(|c| c.done.is_some()) || s.closed
        })
        .await;
        let a = ami.state.lock().calls.get(&k).cloned().unwrap_or_default();
        let clip = &clips[k % clips.len()];
        let m = measure(k, clip, &sum, &a);
        done += 1;
        eprintln!(
            "  [{done}/{calls}] {:<8} {:<28} eos->result {:>6} ms  onset->prompt stop {:>5} ms  wer {:.2}  \"{}\"{}",
            rep.path,
            clip.name,
            opt_ms(m.eos_to_result_ms),
            opt_ms(m.onset_to_prompt_stop_ms),
            m.wer,
            m.text,
            m.error
                .as_ref()
                .map(|e| format!("  [{e}]"))
                .unwrap_or_default()
        );
        rep.calls.push(m);
    }
    rep.calls.sort_by_key(|c| c.call);
    rep.wall_s = t0.elapsed().as_secs_f64();
    let cpu1 = cpu();
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        if audio_ms > 0 {
            rep.cpu_s_per_audio_s = Some((b - a) / (audio_ms as f64 / 1000.0));
        }
    }
    if stop.load(Ordering::Relaxed) {
        rep.notes.push("interrupted".into());
    }
}

/// One path: start what it needs, run the calls, collect the figures.
async fn run_path(
    opts: &SttOpts,
    clips: &[Clip],
    engine: &str,
    path: &str,
    stop: &AtomicBool,
) -> anyhow::Result<PathReport> {
    let mut rep = PathReport {
        engine: engine.to_string(),
        path: path.to_string(),
        ..Default::default()
    };
    let calls = if opts.calls == 0 {
        clips.len()
    } else {
        opts.calls
    };
    let prompt_ms = clips.iter().map(|c| c.duration_ms).max().unwrap_or(0) + 4000;
    if let Some(t) = &opts.target {
        let ami = ami_connect(&t.ami, &t.ami_user, &t.ami_secret).await?;
        run_calls(
            &mut rep,
            clips,
            calls,
            opts.concurrency,
            &t.sip,
            &ami,
            &[],
            stop,
        )
        .await;
        return Ok(rep);
    }
    let mut server = None;
    let de = match path {
        "sip" => DaemonEngine::Local {
            name: engine.to_string(),
        },
        "aeap-hop" => {
            let (mut p, url, dir) = start_aeap_server(&opts.conf, engine)?;
            wait_tcp(url.trim_start_matches("ws://"), 120, Some(&mut p)).await?;
            server = Some((p, dir));
            DaemonEngine::Aeap {
                name: format!("{engine}-hop"),
                url,
            }
        }
        _ => DaemonEngine::Aeap {
            name: "external".into(),
            url: engine.to_string(),
        },
    };
    let mut d = start_daemon(&opts.conf, &de, opts.codec, opts.concurrency, prompt_ms)?;
    let ami = match ami_connect(&d.ami, "bench", "bench").await {
        Ok(a) => a,
        Err(e) => {
            let _ = d.proc.child.try_wait();
            anyhow::bail!("{e}; daemon log: {}", d.proc.log_tail());
        }
    };
    if !ami.wait_for(Duration::from_secs(120), |s| s.booted).await {
        anyhow::bail!("daemon not fully booted: {}", d.proc.log_tail());
    }
    let mut pids = vec![d.proc.pid()];
    if let Some((p, _)) = &server {
        pids.push(p.pid());
    }
    run_calls(
        &mut rep,
        clips,
        calls,
        opts.concurrency,
        &d.sip,
        &ami,
        &pids,
        stop,
    )
    .await;
    rep.peak_mb = proc_peak_mb(d.proc.pid());
    rep.server_peak_mb = server.as_ref().and_then(|(p, _)| proc_peak_mb(p.pid()));
    if rep.calls.iter().any(|c| c.error.is_some()) {
        let tail = d.proc.log_tail();
        if !tail.trim().is_empty() {
            rep.notes.push(format!(
                "daemon log tail: {}",
                tail.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    Ok(rep)
}

// ---------------------------------------------------------------- output

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

fn p3(v: &[f64]) -> String {
    format!(
        "{}/{}/{}",
        fmt_opt(percentile(v, 50.0)),
        fmt_opt(percentile(v, 90.0)),
        fmt_opt(percentile(v, 99.0))
    )
}

fn col(calls: &[CallMeasure], f: impl Fn(&CallMeasure) -> Option<f64>) -> Vec<f64> {
    calls.iter().filter_map(f).collect()
}

/// Per-engine ratios from the floor and the paths of the same run.
pub fn compare(report: &Report) -> Vec<Comparison> {
    let mut out = Vec::new();
    for f in &report.floor {
        let floor_p50 = percentile(
            &f.clips.iter().map(|c| c.inference_ms).collect::<Vec<_>>(),
            50.0,
        );
        let sip = report
            .paths
            .iter()
            .find(|p| p.engine == f.engine && p.path == "sip");
        let hop = report
            .paths
            .iter()
            .find(|p| p.engine == f.engine && p.path == "aeap-hop");
        let mut c = Comparison {
            engine: f.engine.clone(),
            ..Default::default()
        };
        if let (Some(s), Some(fp)) = (sip, floor_p50.filter(|v| *v > 0.0)) {
            c.inference_over_floor =
                percentile(&col(&s.calls, |m| m.inference_ms), 50.0).map(|v| v / fp);
            c.after_endpoint_over_floor =
                percentile(&col(&s.calls, |m| m.after_endpoint_ms), 50.0).map(|v| v / fp);
        }
        if let (Some(s), Some(h)) = (sip, hop) {
            // Per clip: hop minus in-process (the same clip on both paths).
            let mut d = Vec::new();
            for hc in &h.calls {
                if let (Some(a), Some(b)) = (
                    hc.eos_to_result_ms,
                    s.calls
                        .iter()
                        .find(|sc| sc.call == hc.call)
                        .and_then(|sc| sc.eos_to_result_ms),
                ) {
                    d.push(a - b);
                }
            }
            c.hop_added_p50_ms = percentile(&d, 50.0);
            c.hop_added_p95_ms = percentile(&d, 95.0);
        }
        out.push(c);
    }
    out
}

/// The table printed at the end of a run.
pub fn summarize(report: &Report) -> String {
    let mut s = format!(
        "machine: {}\nload: {} (start) / {} (end)\ncorpus: {}  codec: {}  concurrency: {}\n",
        report.machine,
        report.load_start,
        report.load_end,
        report.corpus,
        report.codec,
        report.concurrency
    );
    s.push_str(
        "latencies in ms, p50/p90/p99; eos = end of speech; barge = onset -> prompt stopped in the caller's audio\n",
    );
    s.push_str(&format!(
        "{:<16} {:<9} {:>5} {:>6} {:>16} {:>6} {:>14} {:>14} {:>14} {:>7} {:>7} {:>8}\n",
        "engine",
        "path",
        "utts",
        "WER",
        "eos->result",
        "EPwait",
        "EP->result",
        "barge",
        "eos->partial",
        "RTF",
        "CPU s/s",
        "peak MB"
    ));
    for f in &report.floor {
        let inf: Vec<f64> = f.clips.iter().map(|c| c.inference_ms).collect();
        let rtf: Vec<f64> = f.clips.iter().map(|c| c.rtf).collect();
        s.push_str(&format!(
            "{:<16} {:<9} {:>5} {:>6} {:>16} {:>6} {:>14} {:>14} {:>14} {:>7} {:>7} {:>8}\n",
            f.engine,
            "floor",
            f.clips.len(),
            f.wer.map(|w| format!("{:.3}", w.wer)).unwrap_or("-".into()),
            format!("inf {}", p3(&inf)),
            "-",
            "-",
            "-",
            "-",
            percentile(&rtf, 50.0)
                .map(|v| format!("{v:.3}"))
                .unwrap_or("-".into()),
            "-",
            "-"
        ));
        for n in &f.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
    }
    for p in &report.paths {
        let rtf = col(&p.calls, |m| m.rtf);
        let measured = p
            .calls
            .iter()
            .filter(|m| m.eos_to_result_ms.is_some())
            .count();
        let peak = match (p.peak_mb, p.server_peak_mb) {
            (Some(a), Some(b)) => format!("{a:.0}+{b:.0}"),
            (Some(a), None) => format!("{a:.0}"),
            _ => "-".into(),
        };
        s.push_str(&format!(
            "{:<16} {:<9} {:>5} {:>6} {:>16} {:>6} {:>14} {:>14} {:>14} {:>7} {:>7} {:>8}\n",
            truncate(&p.engine, 16),
            p.path,
            format!("{measured}/{}", p.calls.len()),
            p.wer.map(|w| format!("{:.3}", w.wer)).unwrap_or("-".into()),
            p3(&col(&p.calls, |m| m.eos_to_result_ms)),
            fmt_opt(percentile(&col(&p.calls, |m| m.endpoint_wait_ms), 50.0)),
            p3(&col(&p.calls, |m| m.after_endpoint_ms)),
            p3(&col(&p.calls, |m| m.onset_to_prompt_stop_ms)),
            p3(&col(&p.calls, |m| m.eos_to_first_partial_ms)),
            percentile(&rtf, 50.0)
                .map(|v| format!("{v:.3}"))
                .unwrap_or("-".into()),
            p.cpu_s_per_audio_s
                .map(|v| format!("{v:.3}"))
                .unwrap_or("-".into()),
            peak
        ));
        let errors = p.calls.iter().filter(|c| c.error.is_some()).count();
        if errors > 0 {
            s.push_str(&format!("  note: {errors} call(s) with errors\n"));
        }
        if p.path != "floor" {
            s.push_str(&format!(
                "  barge-in event (SpeechBargeIn) p50/p90/p99: {}; wall {:.1} s\n",
                p3(&col(&p.calls, |m| m.onset_to_bargein_event_ms)),
                p.wall_s
            ));
        }
        for n in &p.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
    }
    for c in &report.comparisons {
        s.push_str(&format!(
            "{}: pipeline Whisper compute / floor = {}x; endpoint->result / floor inference = {}x; AEAP hop adds p50 {} ms, p95 {} ms\n",
            c.engine,
            c.inference_over_floor.map(|v| format!("{v:.2}")).unwrap_or("-".into()),
            c.after_endpoint_over_floor.map(|v| format!("{v:.2}")).unwrap_or("-".into()),
            c.hop_added_p50_ms.map(|v| format!("{v:.0}")).unwrap_or("-".into()),
            c.hop_added_p95_ms.map(|v| format!("{v:.0}")).unwrap_or("-".into()),
        ));
    }
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect()
    }
}

fn aggregate(clips: &[Clip], texts: &[(String, String)]) -> WerSummary {
    let mut t = WerResult::default();
    for (clip, text) in texts {
        if let Some(c) = clips.iter().find(|c| &c.name == clip) {
            t.add(&wer::wer(&c.transcript, text));
        }
    }
    t.into()
}

/// A hand-written SVG: one box plot per engine and path (floor inference, end of speech ->
/// result, onset -> prompt stopped), in ms.
pub fn svg_plot(report: &Report) -> String {
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    for f in &report.floor {
        rows.push((
            format!("{} floor inference", f.engine),
            f.clips.iter().map(|c| c.inference_ms).collect(),
        ));
    }
    for p in &report.paths {
        let e = truncate(&p.engine, 16);
        rows.push((
            format!("{e} {} eos->result", p.path),
            col(&p.calls, |m| m.eos_to_result_ms),
        ));
        rows.push((
            format!("{e} {} onset->prompt stop", p.path),
            col(&p.calls, |m| m.onset_to_prompt_stop_ms),
        ));
    }
    rows.retain(|r| !r.1.is_empty());
    let max = rows
        .iter()
        .flat_map(|r| r.1.iter().copied())
        .fold(1.0f64, f64::max)
        * 1.05;
    let (left, width, rowh) = (300.0, 600.0, 40.0);
    let h = 60.0 + rowh * rows.len() as f64;
    let x = |v: f64| left + (v.max(0.0) / max) * width;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"18\" font-size=\"14\">voxpbx bench stt: latency (ms), box = p25..p75, whiskers = min..max, line = p50</text>\n",
        left + width + 40.0
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 40.0 + rowh * i as f64;
        let q = |p| percentile(v, p).unwrap_or(0.0);
        let (mn, q1, md, q3, mx) = (q(0.0), q(25.0), q(50.0), q(75.0), q(100.0));
        let cy = y + rowh / 2.0;
        s.push_str(&format!(
            "<text x=\"10\" y=\"{:.1}\">{}</text>\n",
            cy + 4.0,
            xml_escape(label)
        ));
        s.push_str(&format!(
            "<line x1=\"{:.1}\" y1=\"{cy:.1}\" x2=\"{:.1}\" y2=\"{cy:.1}\" stroke=\"black\"/>\n",
            x(mn),
            x(mx)
        ));
        s.push_str(&format!("<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#9cf\" stroke=\"black\"/>\n", x(q1), y + 8.0, (x(q3) - x(q1)).max(1.0), rowh - 16.0));
        s.push_str(&format!("<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"red\" stroke-width=\"2\"/>\n", x(md), y + 8.0, y + rowh - 8.0));
        for &p in v {
            s.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{cy:.1}\" r=\"1.5\" fill=\"#036\" opacity=\"0.5\"/>\n",
                x(p)
            ));
        }
    }
    let ay = h - 15.0;
    for k in 0..=5 {
        let v = max * f64::from(k) / 5.0;
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{ay:.1}\" text-anchor=\"middle\">{v:.0}</text>\n",
            x(v)
        ));
    }
    s.push_str("</svg>\n");
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|x| x.1.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu}, {n} cpus")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn finish(report: &mut Report, clips: &[Clip], opts: &SttOpts) -> anyhow::Result<()> {
    for f in &mut report.floor {
        if !f.clips.is_empty() {
            f.wer = Some(aggregate(
                clips,
                &f.clips
                    .iter()
                    .map(|c| (c.clip.clone(), c.text.clone()))
                    .collect::<Vec<_>>(),
            ));
        }
    }
    for p in &mut report.paths {
        if !p.calls.is_empty() {
            p.wer = Some(aggregate(
                clips,
                &p.calls
                    .iter()
                    .map(|c| (c.clip.clone(), c.text.clone()))
                    .collect::<Vec<_>>(),
            ));
        }
    }
    report.comparisons = compare(report);
    report.load_end = loadavg();
    print!("{}", summarize(report));
    if let Some(j) = &opts.json {
        std::fs::write(j, serde_json::to_string_pretty(&report)? + "\n")
            .map_err(|e| anyhow::anyhow!("{}: {e}", j.display()))?;
    }
    if let Some(p) = &opts.plot {
        std::fs::write(p, svg_plot(report)).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    Ok(())
}

/// Run the benchmark; progress on stderr, the table on stdout. Ctrl-C stops and reports what
/// was measured.
pub async fn run(opts: SttOpts) -> anyhow::Result<Report> {
    let clips = corpus::load(&opts.corpus)?;
    let floor_clips: Vec<Clip> = if opts.calls > 0 && opts.calls < clips.len() {
        clips[..opts.calls].to_vec()
    } else {
        clips.clone()
    };
    let sections = if opts.target.is_some() && opts.engines.is_empty() {
        Vec::new()
    } else {
        engine_sections(&opts.conf)?
    };
    let engines: Vec<Section> = if opts.engines.is_empty() {
        sections.into_iter().filter(is_whisper).collect()
    } else {
        opts.engines
            .iter()
            .map(|n| {
                sections
                    .iter()
                    .find(|s| &s.name == n)
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("no [{n}] in speech.conf"))
            })
            .collect::<Result<_, _>>()?
    };
    if engines.is_empty() && opts.aeap.is_empty() && opts.target.is_none() {
        anyhow::bail!(
            "no engines to benchmark in {} (and no --aeap URL)",
            opts.conf.join("speech.conf").display()
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: reporting what was measured");
                stop.store(true, Ordering::Relaxed);
            }
        });
    }
    let mut report = Report {
        machine: machine(),
        load_start: loadavg(),
        corpus: opts.corpus.display().to_string(),
        codec: opts.codec.name().into(),
        concurrency: opts.concurrency.max(1),
        ..Default::default()
    };
    for sec in &engines {
        let name = &sec.name;
        if !opts.paths.floor || stop.load(Ordering::Relaxed) {
            continue;
        }
        let mut f = FloorReport {
            engine: name.clone(),
            ..Default::default()
        };
        if !is_whisper(sec) {
            f.notes.push("floor only for whisper engines".into());
            report.floor.push(f);
            continue;
        }
        eprintln!("[{name}] floor: {} clips", floor_clips.len());
        let (c2, s2, t2, st2) = (
            floor_clips.clone(),
            sec.clone(),
            opts.conf.clone(),
            stop.clone(),
        );
        let res = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let r = run_floor(&mut out, &c2, &s2, &t2, &st2);
            (out, r)
        })
        .await?;
        f.clips = res.0;
        if let Err(e) = res.1 {
            f.notes.push(format!("floor failed: {e}"));
        }
        report.floor.push(f);
    }
    let mut plan: Vec<(String, &'static str)> = Vec::new();
    if opts.target.is_some() {
        plan.push((
            opts.target
                .as_ref()
                .map(|t| t.sip.clone())
                .unwrap_or_default(),
            "target",
        ));
    } else {
        for sec in &engines {
            let name = &sec.name;
            if opts.paths.sip {
                plan.push((name.clone(), "sip"));
            }
            if opts.paths.hop && is_whisper(sec) {
                plan.push((name.clone(), "aeap-hop"));
            }
        }
        for u in &opts.aeap {
            plan.push((u.clone(), "aeap"));
        }
    }
    for (engine, path) in plan {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        eprintln!(
            "[{engine}] {path}: {} calls over SIP ({}), concurrency {}",
            if opts.calls == 0 {
                clips.len()
            } else {
                opts.calls
            },
            opts.codec.name(),
            opts.concurrency.max(1)
        );
        match run_path(&opts, &clips, &engine, path, &stop).await {
            Ok(r) => report.paths.push(r),
            Err(e) => report.paths.push(PathReport {
                engine,
                path: path.into(),
                notes: vec![format!("failed: {e:#}")],
                ..Default::default()
            }),
        }
    }
    finish(&mut report, &clips, &opts)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 90.0), Some(90.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
    }

    #[test]
    fn proc_self() {
        let pid = std::process::id();
        assert!(proc_cpu_s(pid).is_some_and(|c| c >= 0.0));
        assert!(proc_peak_mb(pid).is_some_and(|m| m > 0.0));
    }

    #[test]
    fn codec_and_paths_parse() {
        assert_eq!(BenchCodec::parse("PCMA"), Ok(BenchCodec::Alaw));
        assert_eq!(BenchCodec::parse("ulaw"), Ok(BenchCodec::Ulaw));
        assert!(BenchCodec::parse("opus").is_err());
        assert_eq!(Paths::parse("floor,sip,hop"), Ok(Paths::ALL));
        let p = Paths::parse("sip").unwrap();
        assert!(p.sip && !p.floor && !p.hop);
        assert!(Paths::parse("").is_err());
        assert!(Paths::parse("x").is_err());
    }

    #[test]
    fn prompt_stop_found_in_recording() {
        // 100 ms silence, 1 s tone, a 40 ms glitch inside it, then silence.
        let mut rec = vec![0i16; 800];
        let tone = prompt_tone(1000);
        rec.extend_from_slice(&tone[..4000]);
        rec.extend(std::iter::repeat_n(0, 320));
        rec.extend_from_slice(&tone[4320..]);
        rec.extend(std::iter::repeat_n(0, 8000));
        assert_eq!(prompt_stop_ms(&rec, 10), Some(1100));
        // A gap longer than the quiet run inside the prompt is not its stop.
        let mut gap = tone[..4000].to_vec();
        gap.extend(std::iter::repeat_n(0, 2400));
        gap.extend_from_slice(&tone[..2400]);
        gap.extend(std::iter::repeat_n(0, 3200));
        assert_eq!(prompt_stop_ms(&gap, 10), Some(1100));
        // Never stopped, or never played.
        assert_eq!(prompt_stop_ms(&prompt_tone(2000), 10), None);
        assert_eq!(prompt_stop_ms(&[0; 16000], 10), None);
        assert_eq!(prompt_stop_ms(&[], 10), None);
    }

    #[test]
    fn timing_parse() {
        let t = parse_timing("wait=500 after=-3 inference=210 audio=1500 junk bad=x");
        assert_eq!(t.get("wait"), Some(&500.0));
        assert_eq!(t.get("after"), Some(&-3.0));
        assert_eq!(t.len(), 4);
        assert!(parse_timing("").is_empty());
    }

    #[test]
    fn ami_events_are_tied_to_calls() {
        let mut st = AmiState::default();
        let m = |kv: &[(&str, &str)]| -> HashMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        ami_apply(
            &mut st,
            1.0,
            m(&[
                ("Event", "UserEvent"),
                ("UserEvent", "BenchStart"),
                ("Channel", "PJSIP/bench-1"),
                ("Call", "100007"),
            ]),
        );
        ami_apply(
            &mut st,
            2.0,
            m(&[("Event", "SpeechBargeIn"), ("Channel", "PJSIP/bench-1")]),
        );
        ami_apply(
            &mut st,
            3.0,
            m(&[
                ("Event", "SpeechResult"),
                ("Channel", "PJSIP/bench-1"),
                ("Text", "hello"),
            ]),
        );
        // Events of unknown channels are ignored.
        ami_apply(
            &mut st,
            4.0,
            m(&[("Event", "SpeechResult"), ("Channel", "PJSIP/other")]),
        );
        ami_apply(
            &mut st,
            5.0,
            m(&[
                ("Event", "UserEvent"),
                ("UserEvent", "BenchDone"),
                ("Call", "100007"),
                ("Timing", "wait=500"),
            ]),
        );
        let c = &st.calls[&7];
        assert_eq!(c.bargein, Some(2.0));
        assert_eq!(c.result.as_ref().map(|r| r.0), Some(3.0));
        assert!(c.done.is_some());
        assert_eq!(st.calls.len(), 1);
        ami_apply(
            &mut st,
            6.0,
            m(&[
                ("Response", "Error"),
                ("ActionID", "login"),
                ("Message", "no"),
            ]),
        );
        assert_eq!(st.login, Some(Err("no".into())));
    }

    #[test]
    fn measure_against_the_rtp_timeline() {
        let clip = Clip {
            name: "c".into(),
            wav: PathBuf::from("c.wav"),
            transcript: "hello world".into(),
            span: corpus::SpeechSpan {
                speech_start_ms: 300,
                speech_end_ms: 1300,
            },
            duration_ms: 1500,
            samples: Vec::new(),
            rate: 8000,
        };
        // Prompt tone from the answer until 420 ms, then silence.
        let mut rec = prompt_tone(420);
        rec.extend(std::iter::repeat_n(0, 8000));
        let sum = DialSummary {
            status: 200,
            reason: "OK".into(),
            answered_ms: Some(100),
            duration_ms: 2000,
            rtp_sent: 0,
            rtp_received: 0,
            bytes_sent: 0,
            bytes_received: 0,
            hangup: crate::sip::ua::Hangup::Remote,
            codec: Some("PCMU".into()),
            play_started_ms: Some(100),
            play_ended_ms: None,
            first_rtp_received_ms: None,
            dtmf_started_ms: None,
            dtmf_sent: String::new(),
            dtmf_received: String::new(),
            invite_unix_ms: 0,
            answered_unix_ms: Some(10_100),
            play_started_unix_ms: Some(10_100),
            first_rtp_received_unix_ms: None,
            recorded_samples: rec.len() as u64,
            lost: 0,
            jitter_ms: 0.0,
            recorded: rec,
        };
        let mut res = HashMap::new();
        res.insert("Text".to_string(), "hello world".to_string());
        let mut done = HashMap::new();
        done.insert(
            "Timing".to_string(),
            "wait=480 after=20 inference=150 audio=1000".to_string(),
        );
        let a = AmiCall {
            bargein: Some(10_100.0 + 390.0),
            result: Some((10_100.0 + 1300.0 + 520.0, res)),
            done: Some(done),
        };
        let m = measure(3, &clip, &Ok(sum), &a);
        assert_eq!(m.error, None);
        assert_eq!(m.eos_to_result_ms, Some(520.0));
        assert_eq!(m.onset_to_bargein_event_ms, Some(90.0));
        // The tone's last full frame ends at 420 ms: quiet from 420 ms, onset at 300 ms.
        assert_eq!(m.onset_to_prompt_stop_ms, Some(120.0));
        assert_eq!(m.endpoint_wait_ms, Some(480.0));
        assert_eq!(m.after_endpoint_ms, Some(20.0));
        assert_eq!(m.rtf, Some(0.15));
        assert_eq!(m.wer, 0.0);
        let failed = measure(4, &clip, &Err(anyhow::anyhow!("boom")), &AmiCall::default());
        assert!(failed.error.unwrap().contains("boom"));
    }

    #[test]
    fn dialplan_names_engine_and_prompt() {
        let d = bench_dialplan("whisper", Path::new("/tmp/p"));
        assert!(d.contains("SpeechCreate(whisper)"));
        assert!(d.contains("SpeechBackground(/tmp/p,3)"));
        assert!(d.contains("SPEECH_ENGINE(timing)"));
    }

    #[test]
    fn summary_and_svg() {
        let r = Report {
            machine: "m".into(),
            floor: vec![FloorReport {
                engine: "w<1>".into(),
                clips: vec![FloorMeasure {
                    clip: "a".into(),
                    text: String::new(),
                    wer: 0.0,
                    inference_ms: 120.0,
                    audio_ms: 1000,
                    rtf: 0.12,
                }],
                ..Default::default()
            }],
            paths: vec![
                PathReport {
                    engine: "w<1>".into(),
                    path: "sip".into(),
                    calls: vec![CallMeasure {
                        eos_to_result_ms: Some(600.0),
                        inference_ms: Some(132.0),
                        after_endpoint_ms: Some(60.0),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                PathReport {
                    engine: "w<1>".into(),
                    path: "aeap-hop".into(),
                    calls: vec![CallMeasure {
                        eos_to_result_ms: Some(610.0),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let c = compare(&r);
        assert_eq!(c.len(), 1);
        assert!((c[0].inference_over_floor.unwrap() - 1.1).abs() < 1e-9);
        assert!((c[0].after_endpoint_over_floor.unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(c[0].hop_added_p50_ms, Some(10.0));
        let t = summarize(&r);
        assert!(t.contains("aeap-hop") && t.contains("600/600/600"));
        let s = svg_plot(&r);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains("w&lt;1&gt; floor inference"));
    }
}
