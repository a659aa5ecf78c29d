//! Answer, Hangup, NoOp, Verbose, Log, Set, MSet, Wait, Progress, Ringing, Busy, Congestion,
//! Echo, System, TrySystem, UserEvent, Exec, TryExec, ExecIf, ImportVar.

use crate::channel::{cause_from_str, Channel, Control, ReadEvent};
use crate::dialplan::pbx::{self, AppDef, AppExec, AppResult};
use crate::dialplan::subst::split_args;
use crate::events::{Event, EventClass};
use futures_util::future::BoxFuture;
use std::time::Duration;

pub fn apps() -> Vec<AppDef> {
    vec![
        AppDef {
            name: "Answer",
            synopsis: "Answer a channel if ringing",
            exec: AppExec::Async(answer),
        },
        AppDef {
            name: "Hangup",
            synopsis: "Hang up the calling channel",
            exec: AppExec::Sync(hangup),
        },
        AppDef {
            name: "NoOp",
            synopsis: "Do Nothing (No Operation)",
            exec: AppExec::Sync(|_, _| AppResult::Continue),
        },
        AppDef {
            name: "Verbose",
            synopsis: "Send arbitrary text to verbose output",
            exec: AppExec::Sync(verbose),
        },
        AppDef {
            name: "Log",
            synopsis: "Send arbitrary text to a selected log level",
            exec: AppExec::Sync(log),
        },
        AppDef {
            name: "Set",
            synopsis: "Set channel variable or function value",
            exec: AppExec::Async(set),
        },
        AppDef {
            name: "MSet",
            synopsis: "Set channel variable(s) or function value(s)",
            exec: AppExec::Async(mset),
        },
        AppDef {
            name: "Wait",
            synopsis: "Waits for some time",
            exec: AppExec::Async(wait),
        },
        AppDef {
            name: "Progress",
            synopsis: "Indicate progress",
            exec: AppExec::Sync(progress),
        },
        AppDef {
            name: "Ringing",
            synopsis: "Indicate ringing tone",
            exec: AppExec::Sync(ringing),
        },
        AppDef {
            name: "Busy",
            synopsis: "Indicate the Busy condition",
            exec: AppExec::Async(busy),
        },
        AppDef {
            name: "Congestion",
            synopsis: "Indicate the Congestion condition",
            exec: AppExec::Async(congestion),
        },
        AppDef {
            name: "Echo",
            synopsis: "Echo media, DTMF back to the calling party",
            exec: AppExec::Async(echo),
        },
        AppDef {
            name: "System",
            synopsis: "Execute a system command",
            exec: AppExec::Async(system),
        },
        AppDef {
            name: "TrySystem",
            synopsis: "Try executing a system command",
            exec: AppExec::Async(try_system),
        },
        AppDef {
            name: "UserEvent",
            synopsis: "Send an arbitrary user-defined event",
            exec: AppExec::Sync(user_event),
        },
        AppDef {
            name: "Exec",
            synopsis: "Executes dialplan application",
            exec: AppExec::Async(exec),
        },
        AppDef {
            name: "TryExec",
            synopsis: "Executes dialplan application, always returning",
            exec: AppExec::Async(try_exec),
        },
        AppDef {
            name: "ExecIf",
            synopsis: "Executes dialplan application, conditionally",
            exec: AppExec::Async(exec_if),
        },
        AppDef {
            name: "ImportVar",
            synopsis: "Import a variable from a channel into a new variable",
            exec: AppExec::Async(import_var),
        },
    ]
}

fn answer<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        if chan.state == crate::channel::ChannelState::Up {
            return AppResult::Continue;
        }
        if !chan.answer() {
            return AppResult::Hangup;
        }
        let delay = split_args(args)
            .first()
            .and_then(|d| d.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if delay > 0 && !chan.sleep(Duration::from_millis(delay)).await {
            return AppResult::Hangup;
        }
        AppResult::Continue
    })
}

fn hangup(chan: &mut Channel, args: &str) -> AppResult {
    let cause = cause_from_str(args).unwrap_or(16);
    if !args.trim().is_empty() && cause_from_str(args).is_none() {
        tracing::warn!("{}: invalid hangup cause '{}'", chan.name, args);
    }
    chan.soft_hangup(cause);
    AppResult::Hangup
}

fn verbose(chan: &mut Channel, args: &str) -> AppResult {
    // Verbose([level,]message): a leading numeric field is the level.
    let (level, msg) = match args.split_once(',') {
        Some((l, m)) if l.trim().parse::<u32>().is_ok() => {
            (l.trim().parse::<u32>().unwrap_or(0), m)
        }
        _ => (0, args),
    };
    chan.core.verbose_msg(level, msg);
    AppResult::Continue
}

fn log(chan: &mut Channel, args: &str) -> AppResult {
    let (level, msg) = args.split_once(',').unwrap_or(("NOTICE", args));
    match level.trim().to_ascii_uppercase().as_str() {
        "ERROR" => tracing::error!("{}: {}", chan.name, msg),
        "WARNING" => tracing::warn!("{}: {}", chan.name, msg),
        "DEBUG" => tracing::debug!("{}: {}", chan.name, msg),
        "VERBOSE" | "NOTICE" | "DTMF" | "SECURITY" => tracing::info!("{}: {}", chan.name, msg),
        other => tracing::info!("{} [{}]: {}", chan.name, other, msg),
    }
    AppResult::Continue
}

fn set<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        match args.split_once('=') {
            Some((name, value)) => pbx::assign(chan, name, value).await,
            None => tracing::warn!("Set requires an argument (0={})", args),
        }
        AppResult::Continue
    })
}

fn mset<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        for pair in split_args(args) {
            if let Some((name, value)) = pair.split_once('=') {
                pbx::assign(chan, name, value).await;
            }
        }
        AppResult::Continue
    })
}

fn wait<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let secs: f64 = args.trim().parse().unwrap_or(0.0);
        if secs > 0.0 && !chan.sleep(Duration::from_secs_f64(secs)).await {
            return AppResult::Hangup;
        }
        AppResult::Continue
    })
}

fn progress(chan: &mut Channel, _args: &str) -> AppResult {
    chan.indicate(Control::Progress);
    AppResult::Continue
}

fn ringing(chan: &mut Channel, _args: &str) -> AppResult {
    chan.indicate(Control::Ringing);
    AppResult::Continue
}

/// Busy/Congestion: indicate, then wait (timeout seconds or until hangup), then hang up.
async fn indicate_and_wait(chan: &mut Channel, c: Control, cause: i32, args: &str) -> AppResult {
    chan.indicate(c);
    if chan.hangup_cause == 0 {
        chan.hangup_cause = cause;
    }
    let secs: f64 = args.trim().parse().unwrap_or(0.0);
    if secs > 0.0 {
        chan.sleep(Duration::from_secs_f64(secs)).await;
    } else {
        // No timeout: wait for the other side to hang up (bounded to keep dead calls away).
        chan.sleep(Duration::from_secs(10)).await;
    }
    AppResult::Hangup
}

fn busy<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(indicate_and_wait(chan, Control::Busy, 17, args))
}

fn congestion<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(indicate_and_wait(chan, Control::Congestion, 34, args))
}

fn echo<'a>(chan: &'a mut Channel, _args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        loop {
            match chan.read().await {
                ReadEvent::Voice(f) => chan.write(&f),
                ReadEvent::Dtmf(d) => {
                    // Echo returns when '#' is received, as Asterisk does.
                    if d == '#' {
                        return AppResult::Continue;
                    }
                    chan.send_dtmf_end(d, 100);
                }
                ReadEvent::DtmfBegin(d) if d != '#' => chan.send_dtmf_begin(d),
                ReadEvent::Hangup | ReadEvent::Interrupted => return AppResult::Hangup,
                _ => {}
            }
        }
    })
}

/// Run a shell command without blocking the channel task; sets SYSTEMSTATUS.
async fn run_system(chan: &mut Channel, cmd: &str) -> &'static str {
    if cmd.trim().is_empty() {
        return "FAILURE";
    }
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("{}: unable to execute '{}': {}", chan.name, cmd, e);
            return "FAILURE";
        }
    };
    // Keep servicing the channel (hangup, control requests) while the command runs.
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            ev = chan.read_timeout(Duration::from_secs(3600)) => {
                if matches!(ev, ReadEvent::Hangup | ReadEvent::Interrupted) {
                    // Asterisk lets the command finish; so do we, but without holding the call.
                    break child.wait().await;
                }
            }
        }
    };
    match status {
        Ok(s) if s.success() => "SUCCESS",
        Ok(s) if s.code() == Some(127) => "FAILURE",
        Ok(_) => "APPERROR",
        Err(_) => "FAILURE",
    }
}

fn system<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let st = run_system(chan, args).await;
        pbx::set_var(chan, "SYSTEMSTATUS", st);
        if st == "FAILURE" {
            // Asterisk's System() returns -1 (hangup) only when the command could not be run at all.
            return AppResult::Continue;
        }
        AppResult::Continue
    })
}

fn try_system<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let st = run_system(chan, args).await;
        pbx::set_var(chan, "SYSTEMSTATUS", st);
        AppResult::Continue
    })
}

fn user_event(chan: &mut Channel, args: &str) -> AppResult {
    let parts = split_args(args);
    let Some(name) = parts.first() else {
        tracing::warn!("UserEvent requires an argument (eventname[,body])");
        return AppResult::Continue;
    };
    let mut ev = Event::new("UserEvent", EventClass::User).field("UserEvent", name.clone());
    for p in &parts[1..] {
        if let Some((k, v)) = p.split_once(':') {
            ev = ev.field(k.trim().to_string(), v.trim_start().to_string());
        }
    }
    chan.publish(ev);
    AppResult::Continue
}

fn split_app_args(args: &str) -> (String, String) {
    crate::dialplan::model::split_app(args)
}

fn exec<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let (app, data) = split_app_args(args);
        match pbx::exec_app(chan, &app, &data).await {
            Some(r) => r,
            None => {
                tracing::warn!("Could not find application ({})", app);
                AppResult::Continue
            }
        }
    })
}

fn try_exec<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let (app, data) = split_app_args(args);
        let status = match pbx::exec_app(chan, &app, &data).await {
            Some(AppResult::Continue) => "SUCCESS",
            Some(AppResult::Hangup) => {
                if chan.is_hungup() {
                    "HANGUP"
                } else {
                    "FAILED"
                }
            }
            None => "NOAPP",
        };
        pbx::set_var(chan, "TRYSTATUS", status);
        if status == "HANGUP" {
            AppResult::Hangup
        } else {
            AppResult::Continue
        }
    })
}

fn exec_if<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        // ExecIf(expr?app1(args):app2(args))
        let Some((cond, rest)) = args.split_once('?') else {
            tracing::warn!("ExecIf requires an argument: expr?app(args)[:app(args)]");
            return AppResult::Hangup;
        };
        let (t, f) = split_true_false(rest);
        let chosen = if is_true_cond(cond) { Some(t) } else { f };
        if let Some(a) = chosen {
            let (app, data) = split_app_args(&a);
            if let Some(r) = pbx::exec_app(chan, &app, &data).await {
                return r;
            }
            tracing::warn!("Could not find application! ({})", app);
            return AppResult::Hangup;
        }
        AppResult::Continue
    })
}

/// Split `a(x:y):b(z)` at the first `:` outside parentheses.
pub fn split_true_false(s: &str) -> (String, Option<String>) {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ':' if depth == 0 => return (s[..i].to_string(), Some(s[i + 1..].to_string())),
            _ => {}
        }
    }
    (s.to_string(), None)
}

/// `pbx_checkcondition`: empty is false, a number is its truth, other text is true.
pub fn is_true_cond(s: &str) -> bool {
    let s = s.trim();
    if s.is_empty() {
        return false;
    }
    match s.parse::<f64>() {
        Ok(n) => n != 0.0,
        Err(_) => true,
    }
}

fn import_var<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        // ImportVar(newvar=channelname,variable)
        let Some((newvar, rest)) = args.split_once('=') else {
            return AppResult::Continue;
        };
        let Some((chname, var)) = rest.split_once(',') else {
            return AppResult::Continue;
        };
        let value = match chan.core.channels.find(chname.trim()) {
            Some((h, _)) if h.id == chan.id => pbx::read_var_or_func(chan, var.trim()).await,
            Some((h, _)) => {
                let var = var.trim().to_string();
                h.run(move |c| pbx::get_var(c, &var)).await.flatten()
            }
            None => None,
        };
        pbx::set_var(chan, newvar.trim(), &value.unwrap_or_default());
        AppResult::Continue
    })
}
