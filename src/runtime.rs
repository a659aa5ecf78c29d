//! Startup and shutdown of the daemon: voxpbx.conf, directories, module loading, console.

use crate::config::{ConfFile, ConfigError};
use crate::core::{Core, Dirs, Options};
use crate::dialplan::Dialplan;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything parsed before the daemon starts (so a broken file stops `voxpbx run` with an error).
pub struct Prepared {
    pub dirs: Dirs,
    pub options: Options,
    pub dialplan: Dialplan,
}

/// A stable short hash of the config dir, so instances with different dirs never collide.
fn dir_hash(p: &Path) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in p.to_string_lossy().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:012x}", h & 0xffff_ffff_ffff)
}

/// The default configuration directory: `$VOXPBX_CONF`, else the repository's `conf/`.
pub fn default_conf_dir() -> PathBuf {
    if let Ok(d) = std::env::var("VOXPBX_CONF") {
        return PathBuf::from(d);
    }
    crate::config::install_dir().join("conf")
}

fn resolve(base: &Path, v: &str) -> PathBuf {
    let p = PathBuf::from(v.trim());
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// Read voxpbx.conf (optional) into directories and options.
pub fn read_main_conf(conf_dir: &Path) -> Result<(Dirs, Options), ConfigError> {
    let conf_dir = std::fs::canonicalize(conf_dir).unwrap_or_else(|_| conf_dir.to_path_buf());
    let conf = ConfFile::load_optional(&conf_dir, "voxpbx.conf")?.unwrap_or_default();
    let run_default = std::env::temp_dir().join(format!("voxpbx-{}", dir_hash(&conf_dir)));
    let d = conf.section("directories");
    let get = |k: &str| d.and_then(|s| s.get(k)).map(|v| resolve(&conf_dir, v));
    let run = get("run")
        .or_else(|| get("astrundir"))
        .unwrap_or_else(|| run_default.clone());
    let data = get("data")
        .or_else(|| get("astdatadir"))
        .unwrap_or_else(|| run.join("data"));
    let install = crate::config::install_dir();
    let mut sounds: Vec<PathBuf> = d
        .map(|s| s.get_all("sounds").map(|v| resolve(&conf_dir, v)).collect())
        .unwrap_or_default();
    if sounds.is_empty() {
        sounds.push(data.join("sounds"));
        sounds.push(install.join("sounds"));
        sounds.push(PathBuf::from("/usr/share/asterisk/sounds"));
    }
    let dirs = Dirs {
        conf: conf_dir.clone(),
        spool: get("spool")
            .or_else(|| get("astspooldir"))
            .unwrap_or_else(|| run.join("spool")),
        log: get("log")
            .or_else(|| get("astlogdir"))
            .unwrap_or_else(|| run.join("log")),
        agi: get("agi")
            .or_else(|| get("astagidir"))
            .unwrap_or_else(|| conf_dir.join("agi-bin")),
        models: get("models").unwrap_or_else(|| install.join("models")),
        grammars: get("grammars").unwrap_or_else(|| install.join("grammars")),
        sounds,
        data,
        run,
    };
    let o = conf.section("options");
    let mut options = Options {
        verbose: 3,
        language: "en".into(),
        system_name: String::new(),
        max_calls: 0,
        digit_timeout_ms: 5000,
        response_timeout_ms: 10000,
    };
    if let Some(o) = o {
        if let Some(v) = o.get_parse::<u32>("verbose")? {
            options.verbose = v;
        }
        if let Some(v) = o.get("defaultlanguage").or_else(|| o.get("language")) {
            options.language = v.to_string();
        }
        if let Some(v) = o.get("systemname") {
            options.system_name = v.to_string();
        }
        if let Some(v) = o.get_parse::<usize>("maxcalls")? {
            options.max_calls = v;
        }
    }
    Ok((dirs, options))
}

/// Parse and validate everything; errors name file and line.
pub fn prepare(conf_dir: &Path) -> Result<Prepared, ConfigError> {
    let (dirs, options) = read_main_conf(conf_dir)?;
    let dialplan = Dialplan::load(&dirs.conf)?;
    for d in [&dirs.run, &dirs.spool, &dirs.log, &dirs.data] {
        std::fs::create_dir_all(d)
            .map_err(|e| ConfigError::new(d, 0, format!("cannot create directory: {e}")))?;
    }
    Ok(Prepared {
        dirs,
        options,
        dialplan,
    })
}

/// Build the core and load every module. Errors here are fatal at startup.
pub async fn boot(p: Prepared) -> anyhow::Result<Arc<Core>> {
    let core = Core::new(p.dirs, p.options, p.dialplan);
    core.register_tech(Arc::new(crate::channel::local::LocalTech));
    core.register_tech(Arc::new(crate::sip::stack::PjsipTech));
    crate::apps::register_all(&core);
    crate::dialplan::functions::register_all(&core);
    crate::console::register_builtin(&core);
    crate::interfaces::agi::db::register(&core);
    crate::speech::setup::load(&core).await?;
    if let Err(e) = crate::sip::stack::start(core.clone()).await {
        tracing::error!("PJSIP: {e}");
    }
    if let Err(e) = crate::interfaces::ami::server::start(core.clone()).await {
        tracing::error!("AMI: {e}");
    }
    crate::bridge::mixing::register(&core);
    let pidfile = core.dirs.run.join("voxpbx.pid");
    let _ = std::fs::write(&pidfile, format!("{}\n", std::process::id()));
    let c2 = core.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::console::serve(c2).await {
            tracing::error!("console socket: {e}");
        }
    });
    Ok(core)
}

/// Run until `core stop` or a signal.
pub async fn run_until_shutdown(core: Arc<Core>) {
    let mut rx = core.shutdown.subscribe();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = rx.changed() => {}
        _ = tokio::signal::ctrl_c() => { core.request_shutdown(); }
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => { core.request_shutdown(); }
    }
    for (h, _) in core.channels.list() {
        h.send(crate::channel::ChanCtl::Hangup(16));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !core.channels.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(core.dirs.run.join("voxpbx.pid"));
    let _ = std::fs::remove_file(crate::console::socket_path(&core.dirs.run));
}
