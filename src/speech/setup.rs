//! Loading speech engines at boot: `speech.conf` (local engines, first = default) and
//! `aeap.conf` (external engines over AEAP), the in-daemon AEAP server (`[aeap-server]`),
//! and the `speech show engines` / `aeap show clients` console commands.

use crate::core::{Core, Dirs};
use crate::speech::{Engine, EngineRegistry};
use std::sync::Arc;

/// Live AEAP state kept for the console.
pub struct AeapState {
    pub config: crate::aeap::AeapConfig,
    pub engines: Vec<Arc<crate::aeap::AeapEngine>>,
}

/// Register every configured engine. Errors in one engine are logged; a broken file is fatal.
pub async fn load(core: &Arc<Core>) -> anyhow::Result<()> {
    register_local_engines(&core.dirs, &core.speech)?;
    let aeap_conf = crate::core::load_conf(&core.dirs, "aeap.conf")?;
    let cfg = match &aeap_conf {
        Some(c) => crate::aeap::from_conf(c)?,
        None => crate::aeap::AeapConfig::default(),
    };
    for w in &cfg.warnings {
        tracing::warn!("{}", w);
    }
    let (engines, errors) = crate::aeap::sync_speech_engines(&core.speech, &[], &cfg);
    for e in errors {
        tracing::error!("aeap.conf: {}", e);
    }
    if let Some(server) = cfg.server.clone() {
        match tokio::net::TcpListener::bind(server.listen).await {
            Ok(l) => {
                let reg = core.speech.clone();
                tokio::spawn(crate::aeap::serve(
                    l,
                    reg,
                    server.engine.clone(),
                    server.limits.clone(),
                ));
                tracing::info!("AEAP server listening on {}", server.listen);
            }
            Err(e) => tracing::error!("[aeap-server] cannot listen on {}: {}", server.listen, e),
        }
    }
    core.ext.insert(Arc::new(parking_lot::Mutex::new(AeapState {
        config: cfg,
        engines,
    })));
    register_cli(core);
    Ok(())
}

fn register_cli(core: &Arc<Core>) {
    core.register_cli(
        "speech show engines",
        "List speech engines (the first is the default)",
        Arc::new(|c: Arc<Core>, _a: Vec<String>| {
            Box::pin(async move {
                let list = c.speech.list();
                let mut out = String::new();
                for (i, e) in list.iter().enumerate() {
                    out.push_str(&format!(
                        "{}{}\n",
                        e.describe(),
                        if i == 0 { " (default)" } else { "" }
                    ));
                }
                out.push_str(&format!("{} speech engine(s) registered\n", list.len()));
                out
            })
        }),
    );
    core.register_cli(
        "aeap show clients",
        "Show AEAP client configurations",
        Arc::new(|c: Arc<Core>, _a: Vec<String>| {
            Box::pin(async move {
                match c.ext.get::<parking_lot::Mutex<AeapState>>() {
                    Some(s) => {
                        let g = s.lock();
                        crate::aeap::show_clients(&g.config, &g.engines)
                    }
                    None => "No AEAP configuration found\n".into(),
                }
            })
        }),
    );
    core.register_cli(
        "aeap show client",
        "aeap show client <id>",
        Arc::new(|c: Arc<Core>, a: Vec<String>| {
            Box::pin(async move {
                let Some(id) = a.first() else {
                    return "Usage: aeap show client <id>\n".to_string();
                };
                let Some(s) = c.ext.get::<parking_lot::Mutex<AeapState>>() else {
                    return "No AEAP configuration found\n".into();
                };
                let g = s.lock();
                match g.engines.iter().find(|e| e.name().eq_ignore_ascii_case(id)) {
                    Some(e) => e.show(),
                    None => match g
                        .config
                        .clients
                        .iter()
                        .find(|c| c.name.eq_ignore_ascii_case(id))
                    {
                        Some(cfg) => cfg.show(),
                        None => format!("No AEAP configuration found for '{}'\n", id),
                    },
                }
            })
        }),
    );
}

/// Register the engines of `speech.conf` (used by the daemon and by `voxpbx aeap-serve`).
pub fn register_local_engines(dirs: &Dirs, registry: &EngineRegistry) -> anyhow::Result<()> {
    let Some(conf) = crate::core::load_conf(dirs, "speech.conf")? else {
        return Ok(());
    };
    for sec in conf.real_sections() {
        let ty = sec.get("type").unwrap_or("").trim().to_ascii_lowercase();
        match ty.as_str() {
            "whisper" => match crate::speech::engines::whisper::WhisperEngine::from_section(
                sec,
                &dirs.models,
            ) {
                Ok(e) => {
                    if let Err(err) = registry.register(Arc::new(e)) {
                        tracing::error!("speech.conf [{}]: {}", sec.name, err);
                    }
                }
                Err(err) => tracing::error!("speech.conf [{}]: {}", sec.name, err),
            },
            // AEAP engines are defined in aeap.conf, as in Asterisk.
            "aeap" => {}
            other => {
                anyhow::bail!(
                    "{}:{}: unknown speech engine type '{}' (expected whisper or aeap)",
                    sec.file.display(),
                    sec.line,
                    other
                )
            }
        }
    }
    Ok(())
}
