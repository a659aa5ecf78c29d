//! The PBX loop and the dialplan runtime: variable and function evaluation, application
//! execution, Goto/Gosub helpers, special extensions (`i`, `t`, `T`, `e`, `h`) and hangup handlers.

use super::subst::{self, Part, Template};
use crate::channel::{Channel, ChannelState};
use crate::events::{Event, EventClass};
use futures_util::future::BoxFuture;
use std::time::{SystemTime, UNIX_EPOCH};

/// What an application returns: 0 (continue) or -1 (hang up), as in Asterisk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppResult {
    Continue,
    Hangup,
}

pub type AsyncApp = for<'a> fn(&'a mut Channel, &'a str) -> BoxFuture<'a, AppResult>;
pub type SyncApp = fn(&mut Channel, &str) -> AppResult;

pub enum AppExec {
    Sync(SyncApp),
    Async(AsyncApp),
}

pub struct AppDef {
    pub name: &'static str,
    pub synopsis: &'static str,
    pub exec: AppExec,
}

pub type FuncResult = Result<String, String>;
pub type AsyncRead = for<'a> fn(&'a mut Channel, &'a str) -> BoxFuture<'a, FuncResult>;
pub type SyncRead = fn(&mut Channel, &str) -> FuncResult;
pub type AsyncWrite =
    for<'a> fn(&'a mut Channel, &'a str, &'a str) -> BoxFuture<'a, Result<(), String>>;
pub type SyncWrite = fn(&mut Channel, &str, &str) -> Result<(), String>;

pub enum FuncRead {
    Sync(SyncRead),
    Async(AsyncRead),
}
pub enum FuncWrite {
    Sync(SyncWrite),
    Async(AsyncWrite),
}

pub struct FuncDef {
    pub name: &'static str,
    pub synopsis: &'static str,
    pub read: Option<FuncRead>,
    pub write: Option<FuncWrite>,
}

/// Register applications (names are case-insensitive).
pub fn register_apps(core: &crate::core::Core, apps: Vec<AppDef>) {
    let mut g = core.apps.write();
    for a in apps {
        g.insert(a.name.to_ascii_lowercase(), std::sync::Arc::new(a));
    }
}

/// Register functions (names are upper-cased).
pub fn register_funcs(core: &crate::core::Core, funcs: Vec<FuncDef>) {
    let mut g = core.funcs.write();
    for f in funcs {
        g.insert(f.name.to_ascii_uppercase(), std::sync::Arc::new(f));
    }
}

/// Split `NAME(args)` into (NAME, args) (a missing `)` is tolerated, as in Asterisk).
pub fn split_func(s: &str) -> Option<(&str, &str)> {
    subst::split_function_call(s)
}

/// Evaluate a parsed template with the channel.
pub fn substitute<'a>(chan: &'a mut Channel, t: &'a Template) -> BoxFuture<'a, String> {
    Box::pin(async move {
        let mut out = String::new();
        for part in &t.0 {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var {
                    name,
                    offset,
                    length,
                } => {
                    let n = substitute(chan, name).await;
                    let mut value = read_var_or_func(chan, &n).await.unwrap_or_default();
                    if let Some(off) = offset {
                        let off_s = substitute(chan, off).await;
                        let len_s = match length {
                            Some(l) => Some(substitute(chan, l).await),
                            None => None,
                        };
                        let (off_n, len_n) = subst::substring_spec(&off_s, len_s.as_deref());
                        value = subst::substring(&value, off_n, len_n);
                    }
                    out.push_str(&value);
                }
                Part::Expr(inner) => {
                    let text = substitute(chan, inner).await;
                    match super::expr::evaluate(&text) {
                        Ok(v) => out.push_str(&v),
                        Err(e) => {
                            tracing::warn!(
                                "{}: error in expression '$[{}]': {}",
                                chan.name,
                                text,
                                e
                            );
                        }
                    }
                }
            }
        }
        out
    })
}

/// Substitute a string (parses then evaluates).
pub async fn substitute_str(chan: &mut Channel, s: &str) -> String {
    if !s.contains('$') && !s.contains('\\') {
        return s.to_string();
    }
    let t = subst::parse(s);
    substitute(chan, &t).await
}

/// `${NAME}` or `${FUNC(args)}`.
pub async fn read_var_or_func(chan: &mut Channel, name: &str) -> Option<String> {
    if let Some((f, args)) = split_func(name) {
        return match call_func_read(chan, f, args).await {
            Ok(v) => Some(v),
            Err(e) => {
                if !e.is_empty() {
                    tracing::warn!("{}: {}({}): {}", chan.name, f, args, e);
                }
                None
            }
        };
    }
    get_var(chan, name)
}

pub async fn call_func_read(chan: &mut Channel, name: &str, args: &str) -> Result<String, String> {
    let f = chan
        .core
        .func(name)
        .ok_or_else(|| format!("Function {} not registered", name))?;
    match &f.read {
        Some(FuncRead::Sync(r)) => r(chan, args),
        Some(FuncRead::Async(r)) => r(chan, args).await,
        None => Err(format!("Function {} cannot be read", name)),
    }
}

pub async fn call_func_write(
    chan: &mut Channel,
    name: &str,
    args: &str,
    value: &str,
) -> Result<(), String> {
    let f = chan
        .core
        .func(name)
        .ok_or_else(|| format!("Function {} not registered", name))?;
    match &f.write {
        Some(FuncWrite::Sync(w)) => w(chan, args, value),
        Some(FuncWrite::Async(w)) => w(chan, args, value).await,
        None => Err(format!("Function {} cannot be written to", name)),
    }
}

/// `pbx_retrieve_variable`: channel builtins, channel variables, globals, then global builtins.
pub fn get_var(chan: &Channel, name: &str) -> Option<String> {
    let builtin = match name {
        "EXTEN" => Some(chan.exten.clone()),
        "CONTEXT" => Some(chan.context.clone()),
        "PRIORITY" => Some(chan.priority.to_string()),
        "CHANNEL" => Some(chan.name.clone()),
        "UNIQUEID" => Some(chan.uniqueid.clone()),
        "LINKEDID" => Some(chan.linkedid.clone()),
        "CALLERID" => Some(chan.caller.all()),
        "CALLERIDNUM" => Some(chan.caller.num.clone()),
        "CALLERIDNAME" => Some(chan.caller.name.clone()),
        "DNID" => Some(chan.dnid.clone()),
        "RDNIS" => Some(chan.rdnis.clone()),
        "HANGUPCAUSE" => Some(chan.hangup_cause.to_string()),
        "LANGUAGE" => Some(chan.language.clone()),
        "ACCOUNTCODE" => Some(chan.account_code.clone()),
        "CHANNELSTATE" => Some((chan.state as u8).to_string()),
        _ => None,
    };
    if builtin.is_some() {
        return builtin;
    }
    if let Some(v) = chan.vars.get(name) {
        return Some(v.to_string());
    }
    if let Some(v) = chan.core.globals.read().get(name) {
        return Some(v.clone());
    }
    global_builtin(&chan.core, name)
}

/// Builtins that need no channel.
pub fn global_builtin(core: &crate::core::Core, name: &str) -> Option<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    match name {
        "EPOCH" => Some(now.as_secs().to_string()),
        "SYSTEMNAME" => Some(core.options.system_name.clone()),
        "ASTVERSION" | "VOXPBXVERSION" => Some(crate::core::VERSION.to_string()),
        "TIMESTAMP" => Some(chrono::Local::now().format("%Y%m%d-%H%M%S").to_string()),
        "DATETIME" => Some(chrono::Local::now().format("%d%m%Y-%H:%M:%S").to_string()),
        "ASTETCDIR" => Some(core.dirs.conf.display().to_string()),
        "ASTSPOOLDIR" => Some(core.dirs.spool.display().to_string()),
        "ASTDATADIR" => Some(core.dirs.data.display().to_string()),
        "ASTLOGDIR" => Some(core.dirs.log.display().to_string()),
        "ASTRUNDIR" => Some(core.dirs.run.display().to_string()),
        _ => None,
    }
}

/// `pbx_builtin_setvar_helper`: sets a channel variable (or global with a leading `GLOBAL(`
/// handled by the function), publishes VarSet. Empty value with `unset` semantics is not
/// Asterisk's: an empty value is set to empty.
pub fn set_var(chan: &mut Channel, name: &str, value: &str) {
    chan.vars.set(name, value);
    chan.publish(
        Event::new("VarSet", EventClass::Dialplan)
            .field("Variable", name.to_string())
            .field("Value", value.to_string()),
    );
}

/// Assign `NAME=value` where NAME may be a function: `Set()` semantics.
pub async fn assign(chan: &mut Channel, name: &str, value: &str) {
    let name = name.trim();
    if let Some((f, args)) = split_func(name) {
        if let Err(e) = call_func_write(chan, f, args, value).await {
            tracing::warn!("{}: cannot set {}: {}", chan.name, name, e);
        }
    } else if !name.is_empty() {
        set_var(chan, name, value);
    }
}

/// Run one application by name with already-substituted arguments.
pub async fn exec_app(chan: &mut Channel, app: &str, args: &str) -> Option<AppResult> {
    let def = chan.core.app(app)?;
    let prev = (
        std::mem::take(&mut chan.app),
        std::mem::take(&mut chan.app_data),
    );
    chan.app = def.name.to_string();
    chan.app_data = args.to_string();
    let r = match &def.exec {
        AppExec::Sync(f) => f(chan, args),
        AppExec::Async(f) => f(chan, args).await,
    };
    if chan.app == def.name {
        chan.app = prev.0;
        chan.app_data = prev.1;
    }
    Some(r)
}

/// Parse a Goto target `[[context,]exten,]priority` (priority may be a label) relative to the
/// channel and jump there. Returns false (and logs) when the target does not exist.
pub fn goto(chan: &mut Channel, target: &str) -> bool {
    let parts = super::subst::split_args(target);
    let (ctx, ext, pri) = match parts.len() {
        0 => return false,
        1 => (chan.context.clone(), chan.exten.clone(), parts[0].clone()),
        2 => (chan.context.clone(), parts[0].clone(), parts[1].clone()),
        _ => (parts[0].clone(), parts[1].clone(), parts[2].clone()),
    };
    goto_parts(chan, &ctx, &ext, &pri)
}

pub fn goto_parts(chan: &mut Channel, ctx: &str, ext: &str, pri: &str) -> bool {
    let ctx = if ctx.is_empty() {
        chan.context.clone()
    } else {
        ctx.to_string()
    };
    let ext = if ext.is_empty() {
        chan.exten.clone()
    } else {
        ext.to_string()
    };
    let dp = chan.core.dialplan.load();
    let pri = pri.trim();
    let p = match pri.parse::<i32>() {
        Ok(p) => p,
        Err(_) => {
            let rel = if let Some(r) = pri.strip_prefix('+') {
                r.parse::<i32>().ok().map(|n| chan.priority + n)
            } else if let Some(r) = pri.strip_prefix('-') {
                r.parse::<i32>().ok().map(|n| chan.priority - n)
            } else {
                None
            };
            match rel {
                Some(p) => p,
                None => match dp
                    .find_exten(&ctx, &ext, &chan.caller.num)
                    .and_then(|f| f.extension.label(pri))
                {
                    Some(p) => p,
                    None => {
                        tracing::warn!(
                            "{}: priority '{}' must be a number, or a valid label in {}@{}",
                            chan.name,
                            pri,
                            ext,
                            ctx
                        );
                        return false;
                    }
                },
            }
        }
    };
    chan.context = ctx;
    chan.exten = ext;
    chan.priority = p;
    chan.jumped = true;
    true
}

/// Push a Gosub frame and jump; `args` become ARG1..n.
pub fn gosub(chan: &mut Channel, target: &str, args: &[String], internal: bool) -> bool {
    let ret = crate::channel::StackFrame {
        context: chan.context.clone(),
        exten: chan.exten.clone(),
        priority: chan.priority + 1,
        saved: Vec::new(),
        args: 0,
        internal,
    };
    let (old_ctx, old_ext, old_pri) = (chan.context.clone(), chan.exten.clone(), chan.priority);
    if !goto(chan, target) {
        return false;
    }
    let dp = chan.core.dialplan.load();
    if !dp.exists(&chan.context, &chan.exten, chan.priority, &chan.caller.num) {
        tracing::warn!(
            "{}: Gosub to nonexistent location {},{},{}",
            chan.name,
            chan.context,
            chan.exten,
            chan.priority
        );
        chan.context = old_ctx;
        chan.exten = old_ext;
        chan.priority = old_pri;
        chan.jumped = false;
        return false;
    }
    let mut frame = ret;
    let max_old = chan.stack.last().map(|f| f.args).unwrap_or(0);
    for i in 1..=args.len().max(max_old) {
        let key = format!("ARG{}", i);
        frame
            .saved
            .push((key.clone(), chan.vars.get(&key).map(|s| s.to_string())));
        match args.get(i - 1) {
            Some(v) => chan.vars.set(&key, v),
            None => {
                chan.vars.remove(&key);
            }
        }
    }
    frame.args = args.len();
    chan.stack.push(frame);
    true
}

/// Pop a Gosub frame, restoring ARGn and LOCAL variables. Returns the frame.
pub fn gosub_return(chan: &mut Channel) -> Option<crate::channel::StackFrame> {
    let frame = chan.stack.pop()?;
    for (k, v) in &frame.saved {
        match v {
            Some(v) => chan.vars.set(k, v),
            None => {
                chan.vars.remove(k);
            }
        }
    }
    Some(frame)
}

/// How the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum PbxEnd {
    /// Hung up (and the channel has been hung up).
    Hangup,
    /// Handed over to another owner via take-over; the caller must not touch the channel.
    TakenOver,
}

fn set_exception(chan: &mut Channel, reason: &str) -> bool {
    let dp = chan.core.dialplan.load();
    if dp.exists(&chan.context, "e", 1, &chan.caller.num) {
        chan.vars.set("EXCEPTION_REASON", reason);
        chan.exten = "e".into();
        chan.priority = 1;
        return true;
    }
    false
}

/// Jump to a special extension (`i`, `t`, `T`) or `e`; false when neither exists.
pub fn goto_special(chan: &mut Channel, exten: &str, reason: &str) -> bool {
    let dp = chan.core.dialplan.load();
    if dp.exists(&chan.context, exten, 1, &chan.caller.num) {
        if exten == "i" {
            let invalid = chan.exten.clone();
            chan.vars.set("INVALID_EXTEN", &invalid);
        }
        chan.exten = exten.into();
        chan.priority = 1;
        return true;
    }
    set_exception(chan, reason)
}

/// Run the dialplan on a channel until it hangs up; then the `h` extension and hangup
/// handlers, then the channel is hung up. The channel is consumed.
pub async fn run(mut chan: Channel) -> PbxEnd {
    let core = chan.core.clone();
    let mut first = true;
    loop {
        chan.poll_ctl();
        if let Some(tx) = chan.take_pending_takeover() {
            // The new owner gets the channel; if it went away, keep running.
            match tx.send(chan) {
                Ok(()) => return PbxEnd::TakenOver,
                Err(c) => chan = c,
            }
        }
        if let Some((c, e, p)) = chan.take_pending_goto() {
            chan.context = c;
            chan.exten = e;
            chan.priority = p;
        }
        if chan.is_hungup() {
            break;
        }
        if let Some(abs) = chan.timeouts.absolute {
            if std::time::Instant::now() >= abs {
                chan.timeouts.absolute = None;
                if !goto_special(&mut chan, "T", "ABSOLUTETIMEOUT") {
                    break;
                }
            }
        }
        let dp = core.dialplan.load();
        let found = dp
            .find_exten(&chan.context, &chan.exten, &chan.caller.num)
            .map(|f| f.extension.priority(chan.priority).cloned());
        match found {
            Some(Some(p)) => {
                first = false;
                drop(dp);
                let args = substitute(&mut chan, &p.template).await;
                chan.app = p.app.clone();
                chan.app_data = args.clone();
                chan.publish(
                    Event::new("Newexten", EventClass::Dialplan)
                        .field("Extension", chan.exten.clone())
                        .field("Application", p.app.clone())
                        .field("AppData", args.clone()),
                );
                core.verbose_msg(
                    3,
                    &format!(
                        "    -- Executing [{}@{}:{}] {}(\"{}\", \"{}\") in new stack",
                        chan.exten, chan.context, chan.priority, p.app, chan.name, args
                    ),
                );
                chan.jumped = false;
                match exec_app(&mut chan, &p.app, &args).await {
                    None => {
                        tracing::warn!(
                            "No application '{}' for extension ({}, {}, {})",
                            p.app,
                            chan.context,
                            chan.exten,
                            chan.priority
                        );
                        break;
                    }
                    Some(AppResult::Hangup) => {
                        // An app returning because of an async goto or take-over is not a hangup.
                        if !chan.is_hungup() && chan.must_return() {
                            continue;
                        }
                        break;
                    }
                    Some(AppResult::Continue) => {
                        if !chan.jumped {
                            chan.priority += 1;
                        }
                    }
                }
            }
            Some(None) => {
                // The extension exists but not this priority: fell off the end.
                drop(dp);
                if core.dialplan.load().general.autofallthrough {
                    let status = chan.vars.get("DIALSTATUS").unwrap_or("").to_string();
                    core.verbose_msg(
                        2,
                        &format!(
                            "  == Auto fallthrough, channel '{}' status is '{}'",
                            chan.name,
                            if status.is_empty() {
                                "UNKNOWN"
                            } else {
                                &status
                            }
                        ),
                    );
                    break;
                }
                break;
            }
            None => {
                drop(dp);
                let was_first = first;
                first = false;
                core.verbose_msg(
                    2,
                    &format!("  == Channel '{}' sent to invalid extension: context,exten,priority={},{},{}", chan.name, chan.context, chan.exten, chan.priority),
                );
                if chan.exten != "i" && chan.exten != "e" && goto_special(&mut chan, "i", "INVALID")
                {
                    continue;
                }
                let _ = was_first;
                break;
            }
        }
    }
    run_hangup(&mut chan).await;
    chan.hangup(0);
    PbxEnd::Hangup
}

/// Run the `h` extension (if any) and the hangup handlers, with soft hangup cleared.
pub async fn run_hangup(chan: &mut Channel) {
    let core = chan.core.clone();
    chan.clear_soft_hangup_for_h();
    let dp = core.dialplan.load();
    if chan.exten != "h" && dp.exists(&chan.context, "h", 1, &chan.caller.num) {
        drop(dp);
        chan.exten = "h".into();
        chan.priority = 1;
        run_segment(chan, 1000).await;
    } else {
        drop(dp);
    }
    while let Some(h) = chan.hangup_handlers.pop() {
        chan.stack.clear();
        let parts = super::subst::split_args(&h);
        let (target, args) = split_gosub_target(&parts.join(","));
        if gosub(chan, &target, &args, true) {
            run_segment(chan, 1000).await;
        }
    }
}

/// Split `ctx,exten,prio(arg1,arg2)` into target and args.
pub fn split_gosub_target(s: &str) -> (String, Vec<String>) {
    match s.find('(') {
        Some(i) if s.ends_with(')') => {
            let args = super::subst::split_args(&s[i + 1..s.len() - 1]);
            (s[..i].to_string(), args)
        }
        _ => (s.to_string(), Vec::new()),
    }
}

/// Run priorities from the current location until the extension ends, a Return pops the
/// frame pushed by an internal Gosub, or `max` steps (guard against loops in `h`).
pub async fn run_segment(chan: &mut Channel, max: usize) {
    let core = chan.core.clone();
    let depth = chan.stack.len();
    for _ in 0..max {
        let dp = core.dialplan.load();
        let p = dp
            .find_exten(&chan.context, &chan.exten, &chan.caller.num)
            .and_then(|f| f.extension.priority(chan.priority).cloned());
        drop(dp);
        let Some(p) = p else { return };
        let args = substitute(chan, &p.template).await;
        core.verbose_msg(
            3,
            &format!(
                "    -- Executing [{}@{}:{}] {}(\"{}\", \"{}\") in new stack",
                chan.exten, chan.context, chan.priority, p.app, chan.name, args
            ),
        );
        chan.jumped = false;
        match exec_app(chan, &p.app, &args).await {
            None | Some(AppResult::Hangup) => return,
            Some(AppResult::Continue) => {
                if depth > 0 && chan.stack.len() < depth {
                    return;
                }
                if !chan.jumped {
                    chan.priority += 1;
                }
            }
        }
    }
}

/// Spawn a PBX task for a channel starting at `context,exten,priority`.
pub fn spawn(
    mut chan: Channel,
    context: &str,
    exten: &str,
    priority: i32,
) -> tokio::task::JoinHandle<PbxEnd> {
    chan.context = context.to_string();
    chan.exten = exten.to_string();
    chan.priority = priority;
    if chan.state == ChannelState::Down {
        chan.set_state(ChannelState::Ring);
    }
    tokio::spawn(run(chan))
}
