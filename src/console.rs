//! The console: a Unix control socket in the run directory (`voxpbx rx` talks to it, like
//! `asterisk -rx`) and the built-in CLI commands.

use crate::core::{Core, OriginateReq, OriginateTarget};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

pub const SOCKET_NAME: &str = "voxpbx.ctl";

pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}

/// Split a CLI line into words; double quotes group.
pub fn split_cli(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut inq = false;
    let mut has = false;
    for c in line.chars() {
        match c {
            '"' => {
                inq = !inq;
                has = true;
            }
            c if c.is_whitespace() && !inq => {
                if has || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            c => cur.push(c),
        }
    }
    if has || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Serve the control socket until shutdown.
pub async fn serve(core: Arc<Core>) -> std::io::Result<()> {
    let path = socket_path(&core.dirs.run);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let mut shutdown = core.shutdown.subscribe();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let (stream, _) = match r { Ok(x) => x, Err(e) => { tracing::warn!("console accept: {e}"); continue; } };
                let core = core.clone();
                tokio::spawn(async move {
                    let (rd, mut wr) = stream.into_split();
                    let mut lines = BufReader::new(rd).lines();
                    if let Ok(Some(line)) = lines.next_line().await {
                        let out = core.run_cli(&line).await;
                        let _ = wr.write_all(out.as_bytes()).await;
                        let _ = wr.shutdown().await;
                    }
                });
            }
            _ = shutdown.changed() => { break; }
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Client side of `voxpbx rx`: send a command, return the output. `wait` retries connecting
/// (for `core waitfullybooted` right after starting the daemon).
pub async fn remote_command(run_dir: &Path, cmd: &str, wait: Duration) -> std::io::Result<String> {
    let path = socket_path(run_dir);
    let deadline = std::time::Instant::now() + wait;
    let mut stream = loop {
        match UnixStream::connect(&path).await {
            Ok(s) => break s,
            Err(e) => {
                if std::time::Instant::now() >= deadline {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!(
                            "Unable to connect to remote voxpbx (does {} exist?): {}",
                            path.display(),
                            e
                        ),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    stream.write_all(cmd.as_bytes()).await?;
    stream.write_all(b"\n").await?;
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut out).await?;
    Ok(out)
}

fn fmt_duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86400,
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
    );
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{} day{}", d, if d == 1 { "" } else { "s" }));
    }
    if h > 0 {
        parts.push(format!("{} hour{}", h, if h == 1 { "" } else { "s" }));
    }
    if m > 0 {
        parts.push(format!("{} minute{}", m, if m == 1 { "" } else { "s" }));
    }
    parts.push(format!("{} second{}", s, if s == 1 { "" } else { "s" }));
    parts.join(", ")
}

macro_rules! cli {
    ($core:expr, $words:expr, $usage:expr, |$c:ident, $a:ident| $body:expr) => {
        $core.register_cli(
            $words,
            $usage,
            Arc::new(|$c: Arc<Core>, $a: Vec<String>| Box::pin(async move { $body })),
        )
    };
}

/// Register the built-in commands.
pub fn register_builtin(core: &Arc<Core>) {
    cli!(
        core,
        "core show version",
        "Show voxpbx version",
        |_c, _a| format!(
            "voxpbx {} built for {}-{}\n",
            crate::core::VERSION,
            std::env::consts::ARCH,
            std::env::consts::OS
        )
    );
    cli!(core, "core show uptime", "Show uptime", |c, a| {
        let up = c.started.elapsed().as_secs();
        let rl = c.last_reload.read().elapsed().as_secs();
        if a.first().map(|s| s == "seconds").unwrap_or(false) {
            format!("System uptime: {}\nLast reload: {}\n", up, rl)
        } else {
            format!(
                "System uptime: {}\nLast reload: {}\n",
                fmt_duration(up),
                fmt_duration(rl)
            )
        }
    });
    cli!(
        core,
        "core waitfullybooted",
        "Wait until fully booted",
        |c, _a| {
            loop {
                let n = c.booted_notify.notified();
                if c.fully_booted.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                n.await;
            }
            "voxpbx has fully booted.\n".to_string()
        }
    );
    cli!(
        core,
        "core stop now",
        "Stop now, hanging up all calls",
        |c, _a| {
            for (h, _) in c.channels.list() {
                h.send(crate::channel::ChanCtl::Hangup(16));
            }
            c.request_shutdown();
            "Shutting down\n".to_string()
        }
    );
    cli!(
        core,
        "core stop gracefully",
        "Stop when all calls have ended",
        |c, _a| {
            c.shutting_down
                .store(true, std::sync::atomic::Ordering::SeqCst);
            while !c.channels.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            c.request_shutdown();
            "Shutting down\n".to_string()
        }
    );
    cli!(
        core,
        "core set verbose",
        "core set verbose <level>",
        |c, a| {
            match a.first().and_then(|s| s.parse::<u32>().ok()) {
                Some(n) => {
                    let old = c.verbose.swap(n, std::sync::atomic::Ordering::Relaxed);
                    if old == n {
                        format!("Verbosity is at least {}\n", n)
                    } else {
                        format!("Verbosity was {} and is now {}\n", old, n)
                    }
                }
                None => "Usage: core set verbose <level>\n".to_string(),
            }
        }
    );
    cli!(
        core,
        "core show channels",
        "core show channels [concise|count]",
        |c, a| show_channels(&c, a.first().map(|s| s.as_str()))
    );
    cli!(
        core,
        "core show applications",
        "List applications",
        |c, _a| {
            let apps = c.apps.read();
            let mut v: Vec<_> = apps.values().map(|a| (a.name, a.synopsis)).collect();
            v.sort();
            let mut out = String::from("    -= Registered voxpbx Applications =-\n");
            for (n, s) in &v {
                out.push_str(&format!("{:>20}: {}\n", n, s));
            }
            out.push_str(&format!("    -= {} Applications Registered =-\n", v.len()));
            out
        }
    );
    cli!(core, "core show functions", "List functions", |c, _a| {
        let funcs = c.funcs.read();
        let mut v: Vec<_> = funcs.values().map(|f| (f.name, f.synopsis)).collect();
        v.sort();
        let mut out = String::from("Installed Custom Functions:\n--------------------------------------------------------------------------------\n");
        for (n, s) in &v {
            out.push_str(&format!("{:<20} {}\n", n, s));
        }
        out.push_str(&format!("{} custom functions installed.\n", v.len()));
        out
    });
    cli!(core, "core show help", "List commands", |c, _a| {
        let cmds = c.cli.read();
        let mut v: Vec<String> = cmds
            .iter()
            .map(|c| format!("{:<40} {}", c.words.join(" "), c.usage))
            .collect();
        v.sort();
        v.join("\n") + "\n"
    });
    cli!(core, "dialplan show", "dialplan show [context]", |c, a| {
        let dp = c.dialplan.load();
        let only = a.first().map(|s| s.trim_start_matches('@').to_string());
        dp.show(only.as_deref())
    });
    cli!(
        core,
        "dialplan reload",
        "Reload extensions.conf",
        |c, _a| match c.reload_dialplan() {
            Ok(()) => "Dialplan reloaded.\n".to_string(),
            Err(e) => {
                tracing::error!("dialplan reload failed, keeping the old dialplan: {e}");
                format!("Dialplan reload failed, keeping the old dialplan: {e}\n")
            }
        }
    );
    cli!(
        core,
        "channel request hangup",
        "channel request hangup <name|all>",
        |c, a| {
            let Some(name) = a.first() else {
                return "Usage: channel request hangup <channel>|<all>\n".into();
            };
            if name.eq_ignore_ascii_case("all") {
                let list = c.channels.list();
                for (h, _) in &list {
                    h.send(crate::channel::ChanCtl::Hangup(16));
                }
                return format!("Requested Hangup on {} channels\n", list.len());
            }
            match c.channels.find(name) {
                Some((h, s)) => {
                    h.send(crate::channel::ChanCtl::Hangup(16));
                    format!("Requested Hangup on channel '{}'\n", s.name)
                }
                None => format!("{} is not a known channel\n", name),
            }
        }
    );
    cli!(
        core,
        "channel originate",
        "channel originate <tech/data> extension <exten>@<context> | application <app> [data]",
        |c, a| originate_cli(&c, &a).await
    );
}

async fn originate_cli(core: &Arc<Core>, a: &[String]) -> String {
    let usage = "Usage: channel originate <tech/data> application <appname> [appdata]\n       channel originate <tech/data> extension [exten@][context]\n";
    if a.len() < 2 {
        return usage.to_string();
    }
    let target = match a[1].to_ascii_lowercase().as_str() {
        "application" if a.len() >= 3 => OriginateTarget::App {
            app: a[2].clone(),
            data: a[3..].join(" "),
        },
        "extension" => {
            let spec = a.get(2).cloned().unwrap_or_else(|| "s".into());
            let (exten, context) = match spec.split_once('@') {
                Some((e, c)) => (
                    if e.is_empty() {
                        "s".to_string()
                    } else {
                        e.to_string()
                    },
                    c.to_string(),
                ),
                None => (spec.clone(), "default".to_string()),
            };
            OriginateTarget::Exten {
                context,
                exten,
                priority: 1,
            }
        }
        _ => return usage.to_string(),
    };
    let req = OriginateReq {
        channel: a[0].clone(),
        target,
        timeout_ms: 30_000,
        caller: Default::default(),
        vars: Vec::new(),
        account: String::new(),
    };
    let core = core.clone();
    // Asterisk's CLI originate returns at once; failures are logged.
    tokio::spawn(async move {
        if let Err(e) = crate::dialplan::originate::originate(&core, req).await {
            tracing::warn!("originate failed: {}", e.message);
        }
    });
    String::new()
}

fn show_channels(core: &Core, mode: Option<&str>) -> String {
    let list = core.channels.list();
    let mut out = String::new();
    match mode {
        Some("concise") => {
            for (_, s) in &list {
                let dur = s.created.map(|c| c.elapsed().as_secs()).unwrap_or(0);
                out.push_str(&format!(
                    "{}!{}!{}!{}!{}!{}!{}!{}!{}!{}!{}!{}!{}\n",
                    s.name,
                    s.context,
                    s.exten,
                    s.priority,
                    s.state_desc,
                    s.app,
                    s.app_data,
                    s.caller_num,
                    s.account_code,
                    "",
                    3,
                    dur,
                    s.bridged_to.clone().unwrap_or_else(|| "(None)".into()),
                ));
            }
            return out;
        }
        Some("count") => {}
        _ => {
            out.push_str(&format!(
                "{:<20} {:<20} {:<7} {:<30}\n",
                "Channel", "Location", "State", "Application(Data)"
            ));
            for (_, s) in &list {
                let loc = format!("{}@{}:{}", s.exten, s.context, s.priority);
                out.push_str(&format!(
                    "{:<20} {:<20} {:<7} {}({})\n",
                    s.name, loc, s.state_desc, s.app, s.app_data
                ));
            }
        }
    }
    let calls = list.iter().filter(|(_, s)| !s.name.ends_with(";2")).count();
    out.push_str(&format!(
        "{} active channel{}\n",
        list.len(),
        if list.len() == 1 { "" } else { "s" }
    ));
    out.push_str(&format!(
        "{} active call{}\n",
        calls / 2 + calls % 2,
        if calls == 1 { "" } else { "s" }
    ));
    out
}
