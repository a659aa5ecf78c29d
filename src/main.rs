//! The `voxpbx` command: run | rx | dial | bench | aeap-serve | models.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "voxpbx",
    version,
    about = "A PBX in Rust with speech recognition built in"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the PBX.
    Run {
        /// Configuration directory (default: the repository's conf/).
        #[arg(short = 'C', long = "config")]
        config: Option<PathBuf>,
        /// Stay in the foreground.
        #[arg(short = 'f', long)]
        foreground: bool,
        /// Log to stderr with this tracing filter (default info).
        #[arg(long, default_value = "info")]
        log: String,
    },
    /// Speech models: `models list`, `models install [tiny.en|base|silero]`.
    Models {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Serve configured speech engines over AEAP (for Asterisk's res_speech_aeap).
    AeapServe {
        #[arg(short = 'C', long = "config")]
        config: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9099")]
        listen: String,
        /// Engine to serve (default: the first in speech.conf).
        #[arg(long)]
        engine: Option<String>,
    },
    /// Run a console command against the running instance (like `asterisk -rx`).
    Rx {
        #[arg(short = 'C', long = "config")]
        config: Option<PathBuf>,
        /// Seconds to wait for the instance to appear (default: 10 for waitfullybooted, else 0).
        #[arg(long)]
        wait: Option<u64>,
        command: String,
    },
    /// Place one SIP call (UDP): play audio, send DTMF, record, hang up; print JSON.
    Dial {
        /// The SIP URI to call, e.g. sip:600@127.0.0.1:5060.
        uri: String,
        /// User part of From/Contact (default voxpbx).
        #[arg(long)]
        from: Option<String>,
        /// Digest credentials for 401/407: user:pass.
        #[arg(long)]
        auth: Option<String>,
        /// Sound file to play after the answer (WAV of any rate, .ulaw, .alaw, .slin...).
        #[arg(long)]
        play: Option<PathBuf>,
        /// RFC 4733 digits to send, optionally at an offset after the answer: 123#@1500.
        #[arg(long)]
        dtmf: Option<String>,
        /// Record the received audio (8 kHz 16-bit WAV).
        #[arg(long)]
        record: Option<PathBuf>,
        /// Hang up this many seconds after the answer (default: playback end + 2 s).
        #[arg(long)]
        hangup_after: Option<f64>,
        /// Seconds to wait for a final response (default 32).
        #[arg(long, default_value_t = 32.0)]
        answer_timeout: f64,
        /// Local IP address to bind (default: the one routing to the target).
        #[arg(long)]
        bind: Option<std::net::IpAddr>,
        /// Print the summary as JSON (always JSON; kept for scripts that pass it).
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks: speech corpus generation and STT accuracy/latency.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Benchmark corpora.
    Corpus {
        #[command(subcommand)]
        cmd: CorpusCmd,
    },
    /// Speech-to-text latency and WER over real SIP calls (and Whisper directly, the floor).
    Stt {
        /// Engine (speech.conf section); repeat for several (default: every whisper engine).
        #[arg(long = "engine")]
        engines: Vec<String>,
        /// An external AEAP speech engine (ws:// or wss:// URL); repeat for several.
        #[arg(long = "aeap")]
        aeap: Vec<String>,
        /// Paths to run, comma separated: floor (whisper-rs direct), sip (in-process engine),
        /// hop (the engine behind `voxpbx aeap-serve`).
        #[arg(long, default_value = "floor,sip,hop")]
        paths: String,
        /// Corpus folder (NAME.wav + NAME.txt [+ NAME.json]).
        #[arg(long, default_value = "bench/corpus")]
        corpus: PathBuf,
        /// Calls per path (default: one per clip; more cycles through the clips).
        #[arg(long, default_value_t = 0)]
        calls: usize,
        /// Calls in flight at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Codec of the calls: ulaw or alaw.
        #[arg(long, default_value = "ulaw")]
        codec: String,
        /// Write every measurement as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Draw the latency distributions as SVG.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Configuration directory with the speech.conf to use (default: the repository's conf/).
        #[arg(long)]
        conf: Option<PathBuf>,
        /// Measure a running PBX at SIP HOST:PORT instead of starting one (its dialplan must be
        /// the bench dialplan, see `voxpbx::bench::stt`).
        #[arg(long)]
        target: Option<String>,
        /// AMI HOST:PORT of the --target PBX.
        #[arg(long, default_value = "127.0.0.1:5038")]
        ami: String,
        #[arg(long, default_value = "bench")]
        ami_user: String,
        #[arg(long, default_value = "bench")]
        ami_secret: String,
    },
    /// Menu recognition: a small grammar recognised with phrase scoring and with transcript
    /// matching only, on a corpus of spoken answers (accuracy, false accepts, inference time).
    Grammar {
        /// The grammar (phrase list or SRGS XML).
        #[arg(long, default_value = "grammars/departments.gram")]
        grammar: PathBuf,
        /// Corpus folder (NAME.wav + NAME.txt): `voxpbx bench corpus generate --list
        /// bench/menu.txt --out DIR`.
        #[arg(long)]
        corpus: PathBuf,
        /// Engine (speech.conf section; default: the first whisper engine).
        #[arg(long)]
        engine: Option<String>,
        /// Configuration directory with the speech.conf to use (default: the repository's conf/).
        #[arg(long)]
        conf: Option<PathBuf>,
        /// Write every measurement as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CorpusCmd {
    /// Speak bench/corpus.txt with espeak-ng, band-limit with sox, add noisy variants.
    Generate {
        /// Output folder.
        #[arg(long, default_value = "bench/corpus")]
        out: PathBuf,
        /// Utterance list (NAME|transcript lines; default: the repository's bench/corpus.txt).
        #[arg(long)]
        list: Option<PathBuf>,
        /// espeak-ng voices (default en-us, en-gb, en-us+f3).
        #[arg(long = "voice")]
        voices: Vec<String>,
        /// Speaking rates in words per minute (default 150, 175).
        #[arg(long = "speed")]
        speeds: Vec<u32>,
        /// Only the first N utterances of the list.
        #[arg(long, default_value_t = 0)]
        max: usize,
        /// No noisy variants.
        #[arg(long)]
        clean_only: bool,
        /// Keep the whole 0-4 kHz band (default: the telephone band, 300-3400 Hz).
        #[arg(long)]
        full_band: bool,
    },
}

fn bench_main(cmd: BenchCmd) -> ExitCode {
    match cmd {
        BenchCmd::Corpus {
            cmd:
                CorpusCmd::Generate {
                    out,
                    list,
                    voices,
                    speeds,
                    max,
                    clean_only,
                    full_band,
                },
        } => {
            let mut o = voxpbx::bench::corpus::GenerateOpts::new(
                list.unwrap_or_else(voxpbx::bench::corpus::default_list),
                out,
            );
            if !voices.is_empty() {
                o.voices = voices;
            }
            if !speeds.is_empty() {
                o.speeds = speeds;
            }
            if clean_only {
                o.snrs.clear();
            }
            o.max_lines = max;
            o.telephone_band = !full_band;
            match voxpbx::bench::corpus::generate(&o) {
                Ok(n) => {
                    println!("{n} clips in {}", o.out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("voxpbx bench corpus generate: {e}");
                    ExitCode::from(1)
                }
            }
        }
        BenchCmd::Stt {
            engines,
            aeap,
            paths,
            corpus,
            calls,
            concurrency,
            codec,
            json,
            plot,
            conf,
            target,
            ami,
            ami_user,
            ami_secret,
        } => {
            let parsed = voxpbx::bench::stt::BenchCodec::parse(&codec)
                .and_then(|c| voxpbx::bench::stt::Paths::parse(&paths).map(|p| (c, p)));
            let (codec, paths) = match parsed {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("voxpbx bench stt: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = voxpbx::bench::stt::SttOpts {
                engines,
                aeap,
                paths,
                corpus,
                calls,
                concurrency,
                codec,
                json,
                plot,
                conf: conf.unwrap_or_else(voxpbx::runtime::default_conf_dir),
                target: target.map(|sip| voxpbx::bench::stt::Target {
                    sip,
                    ami,
                    ami_user,
                    ami_secret,
                }),
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("voxpbx: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(voxpbx::bench::stt::run(opts)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("voxpbx bench stt: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        BenchCmd::Grammar {
            grammar,
            corpus,
            engine,
            conf,
            json,
        } => {
            let opts = voxpbx::bench::grammar::GrammarOpts {
                conf: conf.unwrap_or_else(voxpbx::runtime::default_conf_dir),
                engine,
                grammar,
                corpus,
                json,
            };
            match voxpbx::bench::grammar::run(&opts) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("voxpbx bench grammar: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn init_logging(filter: &str, log_file: Option<PathBuf>) {
    use tracing_subscriber::EnvFilter;
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_target(false);
    match log_file.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    }) {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Bench { cmd } => bench_main(cmd),
        Cmd::Run {
            config,
            foreground,
            log,
        } => {
            let dir = config.unwrap_or_else(voxpbx::runtime::default_conf_dir);
            let prepared = match voxpbx::runtime::prepare(&dir) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("voxpbx: configuration error: {e}");
                    return ExitCode::from(1);
                }
            };
            if !foreground {
                // Detach like asterisk without -f: the parent returns once the config parsed.
                // SAFETY: fork happens before any thread (tokio runtime) is started.
                let pid = unsafe { libc::fork() };
                if pid < 0 {
                    eprintln!("voxpbx: fork failed");
                    return ExitCode::from(1);
                }
                if pid > 0 {
                    return ExitCode::SUCCESS;
                }
                // SAFETY: plain libc call in the single-threaded child.
                unsafe {
                    libc::setsid();
                }
                init_logging(&log, Some(prepared.dirs.log.join("messages")));
            } else {
                init_logging(&log, None);
            }
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("voxpbx: cannot start runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(async move {
                match voxpbx::runtime::boot(prepared).await {
                    Ok(core) => {
                        core.mark_fully_booted();
                        tracing::info!(
                            "voxpbx {} ready (config {})",
                            voxpbx::core::VERSION,
                            core.dirs.conf.display()
                        );
                        voxpbx::runtime::run_until_shutdown(core).await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        tracing::error!("startup failed: {e:#}");
                        eprintln!("voxpbx: startup failed: {e:#}");
                        ExitCode::from(1)
                    }
                }
            })
        }
        Cmd::Models { args } => ExitCode::from(voxpbx::models::run_cli(&args).clamp(0, 255) as u8),
        Cmd::AeapServe {
            config,
            listen,
            engine,
        } => aeap_serve(config, listen, engine),
        Cmd::Rx {
            config,
            wait,
            command,
        } => {
            let dir = config.unwrap_or_else(voxpbx::runtime::default_conf_dir);
            let (dirs, _) = match voxpbx::runtime::read_main_conf(&dir) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("voxpbx: configuration error: {e}");
                    return ExitCode::from(1);
                }
            };
            let wait = wait.unwrap_or(if command.contains("waitfullybooted") {
                10
            } else {
                0
            });
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("voxpbx: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(voxpbx::console::remote_command(
                &dirs.run,
                &command,
                Duration::from_secs(wait),
            )) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Dial {
            uri,
            from,
            auth,
            play,
            dtmf,
            record,
            hangup_after,
            answer_timeout,
            bind,
            json: _,
        } => {
            use voxpbx::sip::ua;
            let mut opts = ua::DialOpts::new(uri);
            opts.from_user = from;
            opts.record = record;
            opts.bind_ip = bind;
            opts.audio = play.map(ua::DialAudio::File);
            opts.answer_timeout = Duration::from_secs_f64(answer_timeout.max(0.1));
            opts.hangup_after = hangup_after.map(|s| Duration::from_secs_f64(s.max(0.0)));
            let parsed = (|| -> anyhow::Result<()> {
                if let Some(a) = &auth {
                    opts.auth = Some(ua::parse_auth_arg(a)?);
                }
                if let Some(d) = &dtmf {
                    opts.dtmf = Some(ua::parse_dtmf_arg(d)?);
                }
                Ok(())
            })();
            if let Err(e) = parsed {
                eprintln!("voxpbx dial: {e}");
                return ExitCode::from(2);
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("voxpbx: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(ua::dial(opts)) {
                Ok(summary) => {
                    match serde_json::to_string(&summary) {
                        Ok(line) => println!("{line}"),
                        Err(e) => eprintln!("voxpbx dial: {e}"),
                    }
                    if (200..300).contains(&summary.status) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("voxpbx dial: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn aeap_serve(config: Option<PathBuf>, listen: String, engine: Option<String>) -> ExitCode {
    init_logging("info", None);
    let dir = config.unwrap_or_else(voxpbx::runtime::default_conf_dir);
    let (dirs, _) = match voxpbx::runtime::read_main_conf(&dir) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("voxpbx: configuration error: {e}");
            return ExitCode::from(1);
        }
    };
    let registry = std::sync::Arc::new(voxpbx::speech::EngineRegistry::default());
    if let Err(e) = voxpbx::speech::setup::register_local_engines(&dirs, &registry) {
        eprintln!("voxpbx: {e}");
        return ExitCode::from(1);
    }
    if registry.list().is_empty() {
        eprintln!(
            "voxpbx: no speech engine configured in {}/speech.conf",
            dirs.conf.display()
        );
        return ExitCode::from(1);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("voxpbx: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("voxpbx: cannot listen on {listen}: {e}");
                return ExitCode::from(1);
            }
        };
        eprintln!("voxpbx aeap-serve: speech_to_text on ws://{listen}");
        voxpbx::aeap::serve(listener, registry, engine, Default::default()).await;
        ExitCode::SUCCESS
    })
}
