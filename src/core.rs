//! The process-wide runtime: directories, options, registries (technologies, applications,
//! functions, CLI commands, speech engines), the channel registry, the event bus and the dialplan.

use crate::channel::{CallerId, Channel, Registry};
use crate::config::{ConfFile, ConfigError};
use crate::dialplan::Dialplan;
use crate::events::Bus;
use crate::speech::EngineRegistry;
use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use parking_lot::RwLock;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `[directories]` of voxpbx.conf.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub conf: PathBuf,
    pub run: PathBuf,
    pub spool: PathBuf,
    pub sounds: Vec<PathBuf>,
    pub log: PathBuf,
    pub data: PathBuf,
    pub agi: PathBuf,
    pub models: PathBuf,
    pub grammars: PathBuf,
}

/// `[options]` of voxpbx.conf.
#[derive(Debug, Clone)]
pub struct Options {
    pub verbose: u32,
    pub language: String,
    pub system_name: String,
    pub max_calls: usize,
    /// TIMEOUT(digit) default, ms.
    pub digit_timeout_ms: u64,
    /// TIMEOUT(response) default, ms.
    pub response_timeout_ms: u64,
}

/// A channel technology (PJSIP, Local, ...).
pub trait Technology: Send + Sync {
    fn name(&self) -> &'static str;
    /// Create an outbound channel (state Down, nothing sent yet) for `data` (what follows `Tech/`).
    fn request(
        &self,
        core: &Arc<Core>,
        data: &str,
        requestor: Option<&Channel>,
    ) -> Result<Channel, String>;
}

/// Handler of a console (CLI) command: gets the words after the matched prefix.
pub type CliHandler =
    Arc<dyn Fn(Arc<Core>, Vec<String>) -> BoxFuture<'static, String> + Send + Sync>;

pub struct CliCommand {
    pub words: Vec<String>,
    pub usage: String,
    pub handler: CliHandler,
}

/// Typed extension slots for modules (SIP stack, AMI server...): `core.ext::<T>()`.
#[derive(Default)]
pub struct Extensions {
    map: RwLock<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Extensions {
    pub fn insert<T: Any + Send + Sync>(&self, v: Arc<T>) {
        self.map.write().insert(TypeId::of::<T>(), v);
    }
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.map
            .read()
            .get(&TypeId::of::<T>())
            .cloned()
            .and_then(|a| a.downcast::<T>().ok())
    }
}

pub struct Core {
    pub dirs: Dirs,
    pub options: Options,
    pub start_epoch: u64,
    pub started: Instant,
    pub last_reload: RwLock<Instant>,
    pub fully_booted: AtomicBool,
    pub booted_notify: tokio::sync::Notify,
    pub shutting_down: AtomicBool,
    pub shutdown: tokio::sync::watch::Sender<bool>,
    pub verbose: AtomicU32,
    pub bus: Bus,
    pub channels: Registry,
    pub dialplan: ArcSwap<Dialplan>,
    pub globals: RwLock<HashMap<String, String>>,
    pub shared_vars: RwLock<HashMap<String, HashMap<String, String>>>,
    pub techs: RwLock<HashMap<String, Arc<dyn Technology>>>,
    pub apps: RwLock<HashMap<String, Arc<crate::dialplan::AppDef>>>,
    pub funcs: RwLock<HashMap<String, Arc<crate::dialplan::FuncDef>>>,
    pub cli: RwLock<Vec<CliCommand>>,
    pub speech: Arc<EngineRegistry>,
    pub ext: Extensions,
}

impl Core {
    pub fn new(dirs: Dirs, options: Options, dialplan: Dialplan) -> Arc<Core> {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let start_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let verbose = options.verbose;
        let core = Arc::new(Core {
            dirs,
            options,
            start_epoch,
            started: Instant::now(),
            last_reload: RwLock::new(Instant::now()),
            fully_booted: AtomicBool::new(false),
            booted_notify: tokio::sync::Notify::new(),
            shutting_down: AtomicBool::new(false),
            shutdown,
            verbose: AtomicU32::new(verbose),
            bus: Bus::new(),
            channels: Registry::default(),
            dialplan: ArcSwap::from_pointee(dialplan),
            globals: RwLock::new(HashMap::new()),
            shared_vars: RwLock::new(HashMap::new()),
            techs: RwLock::new(HashMap::new()),
            apps: RwLock::new(HashMap::new()),
            funcs: RwLock::new(HashMap::new()),
            cli: RwLock::new(Vec::new()),
            speech: Arc::new(EngineRegistry::default()),
            ext: Extensions::default(),
        });
        core.reset_globals();
        core
    }

    /// Load `[globals]` of the current dialplan into the global variables.
    pub fn reset_globals(&self) {
        let dp = self.dialplan.load();
        let mut g = self.globals.write();
        if dp.general.clearglobalvars {
            g.clear();
        }
        for (k, v) in &dp.globals {
            g.insert(k.clone(), v.clone());
        }
    }

    pub fn verbose(&self) -> u32 {
        self.verbose.load(Ordering::Relaxed)
    }

    /// Print a verbose message (console `-- ` lines) when the level allows.
    pub fn verbose_msg(&self, level: u32, msg: &str) {
        if self.verbose() >= level {
            tracing::info!(target: "verbose", "{}", msg);
        }
    }

    pub fn register_tech(&self, t: Arc<dyn Technology>) {
        self.techs.write().insert(t.name().to_ascii_lowercase(), t);
    }

    pub fn register_cli(&self, words: &str, usage: &str, handler: CliHandler) {
        self.cli.write().push(CliCommand {
            words: words
                .split_whitespace()
                .map(|w| w.to_ascii_lowercase())
                .collect(),
            usage: usage.to_string(),
            handler,
        });
    }

    /// Run a console command line; returns its output.
    pub async fn run_cli(self: &Arc<Core>, line: &str) -> String {
        let words: Vec<String> = crate::console::split_cli(line);
        let found = {
            let cmds = self.cli.read();
            cmds.iter()
                .filter(|c| {
                    c.words.len() <= words.len()
                        && c.words
                            .iter()
                            .zip(&words)
                            .all(|(a, b)| a == &b.to_ascii_lowercase())
                })
                .max_by_key(|c| c.words.len())
                .map(|c| (c.handler.clone(), c.words.len()))
        };
        match found {
            Some((h, n)) => h(self.clone(), words[n..].to_vec()).await,
            None => format!(
                "No such command '{}' (type 'core show help {}' for other possible commands)\n",
                line.trim(),
                words.first().map(|s| s.as_str()).unwrap_or("")
            ),
        }
    }

    /// Create an outbound channel for `Tech/data`.
    pub fn request_channel(
        self: &Arc<Core>,
        dial: &str,
        requestor: Option<&Channel>,
    ) -> Result<Channel, String> {
        let (tech, data) = dial
            .split_once('/')
            .ok_or_else(|| format!("invalid channel '{dial}': expected Tech/data"))?;
        let t = self.techs.read().get(&tech.to_ascii_lowercase()).cloned();
        let t = t.ok_or_else(|| format!("no such channel technology '{tech}'"))?;
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err("shutting down".into());
        }
        let mut ch = t.request(self, data, requestor)?;
        if let Some(r) = requestor {
            for (k, v) in r.vars.inheritable() {
                ch.vars.set(&k, &v);
            }
            ch.linkedid = r.linkedid.clone();
            ch.language = r.language.clone();
            ch.account_code = r.account_code.clone();
        }
        Ok(ch)
    }

    /// Look up an application case-insensitively.
    pub fn app(&self, name: &str) -> Option<Arc<crate::dialplan::AppDef>> {
        self.apps.read().get(&name.to_ascii_lowercase()).cloned()
    }

    pub fn func(&self, name: &str) -> Option<Arc<crate::dialplan::FuncDef>> {
        self.funcs.read().get(&name.to_ascii_uppercase()).cloned()
    }

    /// Reload the dialplan; on error the old one stays and the error is returned.
    pub fn reload_dialplan(&self) -> Result<(), ConfigError> {
        let dp = Dialplan::load(&self.dirs.conf)?;
        self.dialplan.store(Arc::new(dp));
        self.reset_globals();
        *self.last_reload.write() = Instant::now();
        Ok(())
    }

    pub fn mark_fully_booted(&self) {
        self.fully_booted.store(true, Ordering::SeqCst);
        self.booted_notify.notify_waiters();
        self.bus.publish(
            crate::events::Event::new("FullyBooted", crate::events::EventClass::System)
                .field("Uptime", self.started.elapsed().as_secs().to_string())
                .field(
                    "LastReload",
                    self.last_reload.read().elapsed().as_secs().to_string(),
                )
                .field("Status", "Fully Booted"),
        );
    }

    pub fn request_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
    }

    /// Resolve a sound file name the Asterisk way for `language`.
    pub fn find_sound(&self, language: &str, name: &str) -> Option<PathBuf> {
        crate::media::file::find_sound(&self.dirs.sounds, language, name)
    }
}

/// Where an originated channel goes once answered.
#[derive(Debug, Clone)]
pub enum OriginateTarget {
    Exten {
        context: String,
        exten: String,
        priority: i32,
    },
    App {
        app: String,
        data: String,
    },
}

/// An originate request (CLI, AMI, call files, dialplan Originate()).
#[derive(Debug, Clone)]
pub struct OriginateReq {
    pub channel: String,
    pub target: OriginateTarget,
    pub timeout_ms: u64,
    pub caller: CallerId,
    pub vars: Vec<(String, String)>,
    pub account: String,
}

/// Why an originate did not produce an answered call (AMI `Reason` codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginateFailure {
    /// 0 failed, 1 hangup, 3 ring timeout, 5 busy, 8 congestion (Asterisk's `AST_CONTROL_*` values).
    pub reason: i32,
    pub message: String,
}

pub fn conf_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Load an optional config file of the conf dir.
pub fn load_conf(dirs: &Dirs, name: &str) -> Result<Option<ConfFile>, ConfigError> {
    ConfFile::load_optional(&dirs.conf, name)
}
