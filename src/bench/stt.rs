//! `voxpbx bench stt`: the same clips through Whisper directly (the floor) and through the full
//! pipeline (a voxpbx daemon, a Local channel playing the clip at real-time pace into
//! SpeechBackground, events read over AMI). Reports WER and latency percentiles per engine.
//!
//! Pipeline mode uses Local channels (`Local/<idx>@bench`, the `;1` side runs `Playback` of the
//! clip, the `;2` side runs SpeechBackground); SIP mode is not implemented. Play start is taken as
//! the arrival of the `SpeechStart` event of the `;2` side (SpeechBackground starts right after
//! Answer, which is what starts Playback on `;1`).
//!
//! The floor calls whisper-rs with the settings the whisper engine uses for short commands
//! (greedy, no timestamps, single segment, language fixed, `audio_ctx` sized to the clip with a
//! 128-frame margin and a 256 minimum, full window when that yields no text).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::corpus::{self, Clip};
use super::wer::{self, WerResult};

/// Options of `voxpbx bench stt`.
#[derive(Debug, Clone)]
pub struct SttOpts {
    /// Engine sections of speech.conf (empty = every whisper section).
    pub engines: Vec<String>,
    pub corpus: PathBuf,
    /// Clips to run (0 = all).
    pub calls: usize,
    pub concurrency: usize,
    pub json: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    /// Configuration directory whose speech.conf defines the engines.
    pub target: PathBuf,
    /// Skip the pipeline (floor only).
    pub floor_only: bool,
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

/// One clip through the pipeline.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PipeMeasure {
    pub clip: String,
    pub text: String,
    pub wer: f64,
    pub audio_ms: u64,
    pub speech_start_ms: u64,
    pub speech_end_ms: u64,
    /// End of speech (play start + speech_end_ms) -> SpeechResult arrival.
    pub eos_to_result_ms: Option<f64>,
    /// Speech onset (play start + speech_start_ms) -> SpeechBargeIn arrival.
    pub onset_to_bargein_ms: Option<f64>,
    /// The engine's own figures from the SpeechResult event.
    pub latency_ms: Option<f64>,
    pub inference_ms: Option<f64>,
    pub error: Option<String>,
}

/// Everything measured for one engine.
#[derive(Debug, Clone, Serialize, Default)]
pub struct EngineReport {
    pub engine: String,
    pub floor: Vec<FloorMeasure>,
    pub pipeline: Vec<PipeMeasure>,
    pub floor_wer: Option<WerSummary>,
    pub pipeline_wer: Option<WerSummary>,
    /// Daemon CPU seconds per second of audio played.
    pub cpu_s_per_audio_s: Option<f64>,
    /// Daemon VmHWM in MB.
    pub peak_mb: Option<f64>,
    pub notes: Vec<String>,
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

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: String,
    pub corpus: String,
    pub mode: String,
    pub engines: Vec<EngineReport>,
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

fn engine_sections(target: &Path) -> anyhow::Result<Vec<(String, HashMap<String, String>)>> {
    let text = std::fs::read_to_string(target.join("speech.conf"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", target.join("speech.conf").display()))?;
    let mut out: Vec<(String, HashMap<String, String>)> = Vec::new();
    for line in text.lines() {
        let l = line.split(';').next().unwrap_or("").trim();
        if l.starts_with('[') {
            let name = l
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            out.push((name, HashMap::new()));
        } else if let (Some((k, v)), Some(last)) = (l.split_once('='), out.last_mut()) {
            let k = k.trim().trim_end_matches('>').trim().to_ascii_lowercase();
            last.1.insert(k, v.trim().to_string());
        }
    }
    Ok(out)
}

fn model_path(target: &Path, model: &str) -> PathBuf {
    let p = PathBuf::from(model);
    if p.is_absolute() {
        return p;
    }
    let t = target.join(&p);
    if t.exists() {
        return t;
    }
    let m = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(&p);
    if m.exists() {
        m
    } else {
        t
    }
}

/// 8 kHz i16 -> 16 kHz f32 (linear interpolation; the band is already limited to 3.4 kHz).
pub fn upsample_8k_16k(s: &[i16]) -> Vec<f32> {
    let mut out = Vec::with_capacity(s.len() * 2);
    for (i, &a) in s.iter().enumerate() {
        let a = f32::from(a) / 32768.0;
        let b = s.get(i + 1).map(|&b| f32::from(b) / 32768.0).unwrap_or(a);
        out.push(a);
        out.push((a + b) * 0.5);
    }
    out
}

struct Floor {
    state: whisper_rs::WhisperState,
    threads: i32,
    language: String,
    n_audio_ctx: i32,
}

impl Floor {
    fn load(model: &Path, threads: i32, language: &str) -> anyhow::Result<Floor> {
        whisper_rs::install_logging_hooks();
        let ctx = whisper_rs::WhisperContext::new_with_params(
            model,
            whisper_rs::WhisperContextParameters::default(),
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", model.display()))?;
        let state = ctx
            .create_state()
            .map_err(|e| anyhow::anyhow!("whisper state: {e}"))?;
        Ok(Floor {
            state,
            threads,
            language: language.to_string(),
            n_audio_ctx: 1500,
        })
    }

    fn run(&mut self, pcm: &[f32], audio_ctx: i32) -> anyhow::Result<String> {
        let mut p =
            whisper_rs::FullParams::new(whisper_rs::SamplingStrategy::Greedy { best_of: 1 });
        p.set_language(Some(&self.language));
        p.set_translate(false);
        p.set_no_context(true);
        p.set_no_timestamps(true);
        p.set_single_segment(true);
        p.set_print_special(false);
        p.set_print_progress(false);
        p.set_print_realtime(false);
        p.set_print_timestamps(false);
        p.set_suppress_blank(true);
        p.set_temperature(0.0);
        p.set_n_threads(self.threads);
        p.set_audio_ctx(audio_ctx);
        self.state
            .full(p, pcm)
            .map_err(|e| anyhow::anyhow!("whisper: {e}"))?;
        let mut text = String::new();
        for i in 0..self.state.full_n_segments() {
            if let Some(seg) = self.state.get_segment(i) {
                if let Ok(s) = seg.to_str_lossy() {
                    text.push_str(&s);
                }
            }
        }
        Ok(text.trim().to_string())
    }

    /// Transcribe with an utterance-sized window; the full window when that yields no words.
    fn transcribe(&mut self, pcm: &[f32]) -> anyhow::Result<String> {
        let frames = pcm.len().div_ceil(320) as i32 + 128;
        let n = ((frames + 63) / 64 * 64).max(256);
        let n = if n >= self.n_audio_ctx { 0 } else { n };
        let t = self.run(pcm, n)?;
        if n != 0 && wer::normalize_words(&t).is_empty() {
            return self.run(pcm, 0);
        }
        Ok(t)
    }
}

fn run_floor(
    rep: &mut EngineReport,
    clips: &[Clip],
    sec: &HashMap<String, String>,
    target: &Path,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let model = model_path(
        target,
        sec.get("model")
            .map(String::as_str)
            .unwrap_or("ggml-tiny.en.bin"),
    );
    let threads = sec.get("threads").and_then(|t| t.parse().ok()).unwrap_or(2);
    let lang = sec.get("language").cloned().unwrap_or_else(|| "en".into());
    let mut f = Floor::load(&model, threads, &lang)?;
    // Warm-up pass so the first clip does not pay for first-use allocations.
    if let Some(c) = clips.first() {
        let _ = f.transcribe(&upsample_8k_16k(&c.samples));
    }
    for c in clips {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let pcm = upsample_8k_16k(&c.samples);
        let t0 = Instant::now();
        let text = f.transcribe(&pcm)?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let w = wer::wer(&c.transcript, &text);
        eprintln!(
            "  floor {:<32} {:>7.1} ms  wer {:.2}  \"{}\"",
            c.name,
            ms,
            w.wer(),
            text
        );
        rep.floor.push(FloorMeasure {
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

// ---------------------------------------------------------------- pipeline

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
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Daemon {
    child: std::process::Child,
    dir: TempDir,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn start_daemon(target: &Path, engine: &str) -> anyhow::Result<Daemon> {
    let dir = TempDir::new()?;
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&conf)?;
    let port = free_port()?;
    let target = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    // speech.conf with model paths made absolute.
    let speech = std::fs::read_to_string(target.join("speech.conf"))?;
    let mut out = String::new();
    for line in speech.lines() {
        let t = line.trim_start();
        if let Some(v) = t
            .strip_prefix("model")
            .and_then(|r| r.trim_start().strip_prefix('='))
        {
            let v = v.split(';').next().unwrap_or("").trim();
            out.push_str(&format!("model = {}\n", model_path(&target, v).display()));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(conf.join("speech.conf"), out)?;
    std::fs::write(
        conf.join("voxpbx.conf"),
        format!(
            "[directories]\nrun = {run}\nmodels = {models}\n[options]\nverbose = 0\n",
            run = dir.path().join("run").display(),
            models = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("models")
                .display()
        ),
    )?;
    std::fs::write(
        conf.join("manager.conf"),
        format!("[general]\nenabled = yes\nport = {port}\nbindaddr = 127.0.0.1\n\n[bench]\nsecret = bench\nread = all\nwrite = all\n"),
    )?;
    // An 8 s prompt of silence, so SpeechBackground has something to barge in on.
    let prompt = dir.path().join("prompt.wav");
    corpus::write_wav(&prompt, &vec![0i16; 8000 * 8], 8000)?;
    std::fs::write(
        conf.join("extensions.conf"),
        format!(
            "[general]\nstatic = yes\n\n[bench]\nexten => _X.,1,SpeechCreate({engine})\n same => n,Answer()\n same => n,SpeechBackground({prompt},3)\n same => n,UserEvent(BenchDone,Text: ${{SPEECH_TEXT(0)}})\n same => n,SpeechDestroy()\n same => n,Hangup()\n",
            prompt = prompt.display()
        ),
    )?;
    let exe = std::env::current_exe()?;
    let child = std::process::Command::new(exe)
        .arg("run")
        .arg("-f")
        .arg("-C")
        .arg(&conf)
        .args(["--log", "warn"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    Ok(Daemon { child, dir, port })
}

type AmiMsg = (Instant, HashMap<String, String>);

async fn ami_connect(
    port: u16,
) -> anyhow::Result<(
    mpsc::UnboundedReceiver<AmiMsg>,
    tokio::net::tcp::OwnedWriteHalf,
)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let stream = loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => anyhow::bail!("AMI on port {port}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
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
                if !cur.is_empty() && tx.send((Instant::now(), std::mem::take(&mut cur))).is_err() {
                    break;
                }
            } else if let Some((k, v)) = l.split_once(':') {
                cur.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    });
    w.write_all(b"Action: Login\r\nUsername: bench\r\nSecret: bench\r\nActionID: login\r\n\r\n")
        .await?;
    Ok((rx, w))
}

fn clip_index(channel: &str) -> Option<usize> {
    let rest = channel.strip_prefix("Local/")?;
    let (idx, tail) = rest.split_once('@')?;
    if !tail.ends_with(";2") {
        return None;
    }
    idx.parse::<usize>().ok()?.checked_sub(EXTEN_BASE)
}

/// Clip i is dialled as extension EXTEN_BASE + i (`_X.` needs at least two digits).
const EXTEN_BASE: usize = 1000;

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

#[derive(Default)]
struct Pending {
    sent: Option<Instant>,
    play_start: Option<Instant>,
    bargein: Option<Instant>,
    result: Option<(Instant, HashMap<String, String>)>,
    done: bool,
}

async fn run_pipeline(
    rep: &mut EngineReport,
    clips: &[Clip],
    target: &Path,
    engine: &str,
    concurrency: usize,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let daemon = start_daemon(target, engine)?;
    let pid = daemon.child.id();
    let (mut rx, mut w) = ami_connect(daemon.port).await?;
    // Wait for the login response.
    let login_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = tokio::time::timeout_at(login_deadline.into(), rx.recv()).await;
        match m {
            Ok(Some((_, m))) if m.get("ActionID").map(String::as_str) == Some("login") => {
                if m.get("Response").map(String::as_str) != Some("Success") {
                    anyhow::bail!("AMI login failed: {:?}", m.get("Message"));
                }
                break;
            }
            Ok(Some(_)) => {}
            _ => anyhow::bail!(
                "no AMI login response (daemon log under {})",
                daemon.dir.path().display()
            ),
        }
    }
    let cpu0 = proc_cpu_s(pid);
    let mut pending: Vec<Pending> = clips.iter().map(|_| Pending::default()).collect();
    let mut next = 0usize;
    let mut active = 0usize;
    let mut audio_ms_played = 0u64;
    let concurrency = concurrency.max(1);
    loop {
        while active < concurrency && next < clips.len() && !stop.load(Ordering::Relaxed) {
            let c = &clips[next];
            let wav = std::fs::canonicalize(&c.wav).unwrap_or_else(|_| c.wav.clone());
            let a = format!(
                "Action: Originate\r\nActionID: o{next}\r\nChannel: Local/{}@bench\r\nApplication: Playback\r\nData: {}\r\nAsync: true\r\nTimeout: 10000\r\n\r\n",
                EXTEN_BASE + next,
                wav.display()
            );
            w.write_all(a.as_bytes()).await?;
            pending[next].sent = Some(Instant::now());
            audio_ms_played += c.duration_ms;
            next += 1;
            active += 1;
        }
        if active == 0 {
            break;
        }
        // Per-call deadline: clip length + prompt/timeouts + inference slack.
        let oldest = pending
            .iter()
            .zip(clips)
            .filter(|(p, _)| p.sent.is_some() && !p.done)
            .filter_map(|(p, c)| {
                p.sent
                    .map(|s| s + Duration::from_millis(c.duration_ms + 20_000))
            })
            .min();
        let Some(deadline) = oldest else { break };
        let msg = tokio::select! {
            m = tokio::time::timeout_at(deadline.into(), rx.recv()) => m,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if stop.load(Ordering::Relaxed) { break; }
                continue;
            }
        };
        match msg {
            Err(_) => {
                // Time out the oldest call.
                for (i, p) in pending.iter_mut().enumerate() {
                    if p.sent.is_some()
                        && !p.done
                        && p.sent
                            .map(|s| s + Duration::from_millis(clips[i].duration_ms + 20_000))
                            == Some(deadline)
                    {
                        p.done = true;
                        active -= 1;
                        break;
                    }
                }
            }
            Ok(None) => anyhow::bail!("AMI connection closed by the daemon"),
            Ok(Some((at, m))) => {
                let Some(ev) = m.get("Event") else { continue };
                let Some(i) = m.get("Channel").and_then(|c| clip_index(c)) else {
                    continue;
                };
                let Some(p) = pending.get_mut(i) else {
                    continue;
                };
                match ev.as_str() {
                    "SpeechStart" => p.play_start = p.play_start.or(Some(at)),
                    "SpeechBargeIn" => p.bargein = p.bargein.or(Some(at)),
                    "SpeechResult" => p.result = p.result.take().or(Some((at, m.clone()))),
                    "Hangup" | "UserEvent"
                        if !p.done
                            && (ev == "Hangup"
                                || m.get("UserEvent").map(String::as_str) == Some("BenchDone")) =>
                    {
                        p.done = true;
                        active -= 1;
                    }
                    _ => {}
                }
            }
        }
    }
    let cpu1 = proc_cpu_s(pid);
    rep.peak_mb = proc_peak_mb(pid);
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        if audio_ms_played > 0 {
            rep.cpu_s_per_audio_s = Some((b - a) / (audio_ms_played as f64 / 1000.0));
        }
    }
    for (p, c) in pending.iter().zip(clips) {
        if p.sent.is_none() {
            continue;
        }
        let mut m = PipeMeasure {
            clip: c.name.clone(),
            audio_ms: c.duration_ms,
            speech_start_ms: c.span.speech_start_ms,
            speech_end_ms: c.span.speech_end_ms,
            ..Default::default()
        };
        let ms = |a: Instant, b: Instant| -> f64 {
            if a >= b {
                a.duration_since(b).as_secs_f64() * 1000.0
            } else {
                -(b.duration_since(a).as_secs_f64() * 1000.0)
            }
        };
        if let Some(ps) = p.play_start {
            if let Some((at, ev)) = &p.result {
                m.eos_to_result_ms =
                    Some(ms(*at, ps + Duration::from_millis(c.span.speech_end_ms)));
                m.text = ev.get("Text").cloned().unwrap_or_default();
                m.latency_ms = ev.get("LatencyMs").and_then(|v| v.parse().ok());
                m.inference_ms = ev.get("InferenceMs").and_then(|v| v.parse().ok());
                if let Some(e) = ev.get("Error").filter(|e| !e.is_empty()) {
                    m.error = Some(e.clone());
                }
            } else {
                m.error = Some("no SpeechResult".into());
            }
            if let Some(b) = p.bargein {
                m.onset_to_bargein_ms =
                    Some(ms(b, ps + Duration::from_millis(c.span.speech_start_ms)));
            }
        } else {
            m.error = Some("call did not start (no SpeechStart)".into());
        }
        m.wer = wer::wer(&c.transcript, &m.text).wer();
        eprintln!(
            "  pipe  {:<32} eos->result {:>7} ms  onset->barge {:>7} ms  wer {:.2}  \"{}\"{}",
            c.name,
            m.eos_to_result_ms
                .map(|v| format!("{v:.0}"))
                .unwrap_or("-".into()),
            m.onset_to_bargein_ms
                .map(|v| format!("{v:.0}"))
                .unwrap_or("-".into()),
            m.wer,
            m.text,
            m.error
                .as_ref()
                .map(|e| format!("  [{e}]"))
                .unwrap_or_default()
        );
        rep.pipeline.push(m);
    }
    drop(daemon);
    Ok(())
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

/// Fill the WER summaries and print the table.
pub fn summarize(report: &Report) -> String {
    let mut s = format!(
        "machine: {}\ncorpus: {}  mode: {}\n",
        report.machine, report.corpus, report.mode
    );
    s.push_str(&format!(
        "{:<10} {:<6} {:>5} {:>6} {:>18} {:>18} {:>7} {:>9} {:>8}\n",
        "engine",
        "path",
        "utts",
        "WER",
        "eos->result p50/90/99",
        "onset->barge p50/90/99",
        "RTF",
        "CPU s/s",
        "peak MB"
    ));
    for e in &report.engines {
        let inf: Vec<f64> = e.floor.iter().map(|f| f.inference_ms).collect();
        let rtf: Vec<f64> = e.floor.iter().map(|f| f.rtf).collect();
        s.push_str(&format!(
            "{:<10} {:<6} {:>5} {:>6} {:>18} {:>18} {:>7} {:>9} {:>8}\n",
            e.engine,
            "floor",
            e.floor.len(),
            e.floor_wer
                .map(|w| format!("{:.3}", w.wer))
                .unwrap_or("-".into()),
            format!("inf {}", p3(&inf)),
            "-",
            percentile(&rtf, 50.0)
                .map(|v| format!("{v:.3}"))
                .unwrap_or("-".into()),
            "-",
            "-"
        ));
        let eos: Vec<f64> = e
            .pipeline
            .iter()
            .filter_map(|m| m.eos_to_result_ms)
            .collect();
        let barge: Vec<f64> = e
            .pipeline
            .iter()
            .filter_map(|m| m.onset_to_bargein_ms)
            .collect();
        let prtf: Vec<f64> = e
            .pipeline
            .iter()
            .filter_map(|m| m.inference_ms.map(|i| i / m.audio_ms.max(1) as f64))
            .collect();
        if !e.pipeline.is_empty() {
            s.push_str(&format!(
                "{:<10} {:<6} {:>5} {:>6} {:>18} {:>18} {:>7} {:>9} {:>8}\n",
                e.engine,
                "pipe",
                e.pipeline.len(),
                e.pipeline_wer
                    .map(|w| format!("{:.3}", w.wer))
                    .unwrap_or("-".into()),
                p3(&eos),
                p3(&barge),
                percentile(&prtf, 50.0)
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or("-".into()),
                e.cpu_s_per_audio_s
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or("-".into()),
                e.peak_mb.map(|v| format!("{v:.0}")).unwrap_or("-".into()),
            ));
        }
        for n in &e.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
    }
    s
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

/// A hand-written SVG: one box plot per engine and path (floor inference, pipeline
/// end-of-speech -> result, onset -> barge-in), in ms.
pub fn svg_plot(report: &Report) -> String {
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    for e in &report.engines {
        rows.push((
            format!("{} floor inference", e.engine),
            e.floor.iter().map(|f| f.inference_ms).collect(),
        ));
        rows.push((
            format!("{} eos->result", e.engine),
            e.pipeline
                .iter()
                .filter_map(|m| m.eos_to_result_ms)
                .collect(),
        ));
        rows.push((
            format!("{} onset->barge-in", e.engine),
            e.pipeline
                .iter()
                .filter_map(|m| m.onset_to_bargein_ms)
                .collect(),
        ));
    }
    rows.retain(|r| !r.1.is_empty());
    let max = rows
        .iter()
        .flat_map(|r| r.1.iter().copied())
        .fold(1.0f64, f64::max)
        * 1.05;
    let (left, width, rowh) = (230.0, 600.0, 40.0);
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

/// Run the benchmark; prints progress on stderr and the table on stdout. Ctrl-C stops and reports
/// what was measured.
pub async fn run(opts: SttOpts) -> anyhow::Result<Report> {
    let mut clips = corpus::load(&opts.corpus)?;
    if opts.calls > 0 {
        clips.truncate(opts.calls);
    }
    let sections = engine_sections(&opts.target)?;
    let engines: Vec<(String, HashMap<String, String>)> = if opts.engines.is_empty() {
        sections
            .into_iter()
            .filter(|(_, s)| {
                s.get("type")
                    .map(|t| t.eq_ignore_ascii_case("whisper"))
                    .unwrap_or(false)
            })
            .collect()
    } else {
        opts.engines
            .iter()
            .map(|n| {
                sections
                    .iter()
                    .find(|(s, _)| s == n)
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("no [{n}] in speech.conf"))
            })
            .collect::<Result<_, _>>()?
    };
    if engines.is_empty() {
        anyhow::bail!(
            "no engines to benchmark in {}",
            opts.target.join("speech.conf").display()
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
        corpus: opts.corpus.display().to_string(),
        mode: "floor: whisper-rs direct; pipeline: Local channels + AMI (no SIP)".into(),
        engines: Vec::new(),
    };
    for (name, sec) in &engines {
        let mut rep = EngineReport {
            engine: name.clone(),
            ..Default::default()
        };
        let is_whisper = sec
            .get("type")
            .map(|t| t.eq_ignore_ascii_case("whisper"))
            .unwrap_or(false);
        if is_whisper && !stop.load(Ordering::Relaxed) {
            eprintln!("[{name}] floor: {} clips", clips.len());
            let (c2, s2, t2, st2) = (
                clips.clone(),
                sec.clone(),
                opts.target.clone(),
                stop.clone(),
            );
            let mut r2 = EngineReport::default();
            let res = tokio::task::spawn_blocking(move || {
                let r = run_floor(&mut r2, &c2, &s2, &t2, &st2);
                (r2, r)
            })
            .await?;
            rep.floor = res.0.floor;
            if let Err(e) = res.1 {
                rep.notes.push(format!("floor failed: {e}"));
            }
        } else if !is_whisper {
            rep.notes.push("floor only for whisper engines".into());
        }
        if !opts.floor_only && !stop.load(Ordering::Relaxed) {
            eprintln!(
                "[{name}] pipeline: {} calls, concurrency {}",
                clips.len(),
                opts.concurrency
            );
            if let Err(e) = run_pipeline(
                &mut rep,
                &clips,
                &opts.target,
                name,
                opts.concurrency,
                &stop,
            )
            .await
            {
                rep.notes.push(format!("pipeline failed: {e}"));
            }
        }
        if !rep.floor.is_empty() {
            rep.floor_wer = Some(aggregate(
                &clips,
                &rep.floor
                    .iter()
                    .map(|f| (f.clip.clone(), f.text.clone()))
                    .collect::<Vec<_>>(),
            ));
        }
        if !rep.pipeline.is_empty() {
            rep.pipeline_wer = Some(aggregate(
                &clips,
                &rep.pipeline
                    .iter()
                    .map(|f| (f.clip.clone(), f.text.clone()))
                    .collect::<Vec<_>>(),
            ));
        }
        report.engines.push(rep);
    }
    print!("{}", summarize(&report));
    if let Some(j) = &opts.json {
        std::fs::write(j, serde_json::to_string_pretty(&report)? + "\n")
            .map_err(|e| anyhow::anyhow!("{}: {e}", j.display()))?;
    }
    if let Some(p) = &opts.plot {
        std::fs::write(p, svg_plot(&report))
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
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
    fn channel_index() {
        assert_eq!(clip_index("Local/1012@bench-0000001a;2"), Some(12));
        assert_eq!(clip_index("Local/12@bench-0000001a;1"), None);
        assert_eq!(clip_index("PJSIP/x"), None);
    }

    #[test]
    fn upsample_doubles() {
        let u = upsample_8k_16k(&[0, 16384]);
        assert_eq!(u.len(), 4);
        assert!((u[1] - 0.25).abs() < 1e-6);
    }

    #[test]
    fn proc_self() {
        let pid = std::process::id();
        assert!(proc_cpu_s(pid).is_some_and(|c| c >= 0.0));
        assert!(proc_peak_mb(pid).is_some_and(|m| m > 0.0));
    }

    #[test]
    fn svg_is_well_formed() {
        let r = Report {
            machine: "m".into(),
            corpus: "c".into(),
            mode: "x".into(),
            engines: vec![EngineReport {
                engine: "w<1>".into(),
                floor: vec![FloorMeasure {
                    clip: "a".into(),
                    text: String::new(),
                    wer: 0.0,
                    inference_ms: 120.0,
                    audio_ms: 1000,
                    rtf: 0.12,
                }],
                ..Default::default()
            }],
        };
        let s = svg_plot(&r);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains("w&lt;1&gt; floor inference"));
    }
}
