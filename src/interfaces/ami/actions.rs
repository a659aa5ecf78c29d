//! AMI actions implemented against the PBX core (Originate, Hangup, Redirect, Getvar, Setvar,
//! Status, CoreShowChannels, CoreStatus, CoreSettings, Command, UserEvent, ExtensionState,
//! PlayDTMF, Reload, AGI). Login/Challenge/Ping/Events/Logoff/ListCommands/Filter are handled by
//! the sans-IO [`Session`](super::session::Session) itself.
//!
//! Each handler returns the complete reply as one buffer (a list action's start, items and
//! completion event together) so replies of one session never interleave.

use super::codec::MessageBuilder;
use super::session::{ActionRequest, ActionTable, AmiShared};
use super::{ManagerConfig, Perm};
use crate::channel::{CallerId, ChanCtl, ChannelState};
use crate::core::{Core, OriginateReq, OriginateTarget};
use crate::events::{ChannelSnapshot, Event, EventClass};
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Actions this module implements: (name, synopsis). Their write classes are Asterisk's.
pub const ACTIONS: [(&str, &str); 15] = [
    ("Originate", "Originate a call."),
    ("Hangup", "Hangup channel."),
    ("Redirect", "Redirect (transfer) a call."),
    ("Getvar", "Gets a channel variable or function value."),
    ("Setvar", "Sets a channel variable or function value."),
    ("Status", "List channel status."),
    ("CoreShowChannels", "List currently active channels."),
    ("CoreStatus", "Show PBX core status variables."),
    ("CoreSettings", "Show PBX core settings (version etc)."),
    ("Command", "Execute CLI command."),
    ("UserEvent", "Send an arbitrary event."),
    ("ExtensionState", "Check Extension Status."),
    ("PlayDTMF", "Play DTMF signal on a specific channel."),
    ("Reload", "Send a reload event."),
    ("AGI", "Add an AGI command to execute by Async AGI."),
];

/// Applications an Originate may only start when the user also has `system` write permission
/// (Asterisk's list in `action_originate`).
const SYSTEM_APPS: [&str; 6] = ["system", "exec", "trysystem", "eval", "mixmonitor", "agi"];

/// The action table: every implemented action registered with Asterisk's write class.
pub fn action_table() -> ActionTable {
    let mut t = ActionTable::new();
    for (name, synopsis) in ACTIONS {
        // Every entry of ACTIONS is in Asterisk's authority table (checked by a unit test).
        t.register_known(name, synopsis);
    }
    t
}

/// What an action handler needs.
#[derive(Clone)]
pub struct AmiCtx {
    pub core: Arc<Core>,
    pub shared: Arc<AmiShared>,
}

/// Whether the action may block for long (sync Originate): the caller should run it in its own
/// task so the session's later actions are not held up.
pub fn is_blocking(req: &ActionRequest) -> bool {
    req.name.eq_ignore_ascii_case("originate") && !req.get("Async").is_some_and(is_true)
}

fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "yes" | "true" | "y" | "t" | "1" | "on"
    )
}

/// Work to do once the reply has been queued to the client (publishing an event the action
/// caused, starting an async originate), so the reply always precedes those events.
pub type Deferred = Box<dyn FnOnce() + Send>;

/// Run one action; returns the complete reply and what to do after sending it.
pub async fn handle(ctx: &AmiCtx, req: &ActionRequest) -> (Bytes, Option<Deferred>) {
    let bytes = match req.name.to_ascii_lowercase().as_str() {
        "originate" => return originate(ctx, req).await,
        "userevent" => return user_event(ctx, req),
        "hangup" => hangup(ctx, req),
        "redirect" => redirect(ctx, req),
        "getvar" => getvar(ctx, req).await,
        "setvar" => setvar(ctx, req).await,
        "status" => status(ctx, req).await,
        "coreshowchannels" => core_show_channels(ctx, req),
        "corestatus" => core_status(ctx, req),
        "coresettings" => core_settings(ctx, req),
        "command" => command(ctx, req).await,
        "extensionstate" => extension_state(ctx, req),
        "playdtmf" => play_dtmf(ctx, req),
        "reload" => reload(ctx, req),
        "agi" => return agi(ctx, req).await,
        _ => req.unknown(),
    };
    (bytes, None)
}

fn nonempty<'a>(req: &'a ActionRequest, name: &str) -> Option<&'a str> {
    req.get(name).map(str::trim).filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Originate

/// A parsed Originate request.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginateParams {
    pub channel: String,
    pub target: OriginateTarget,
    pub timeout_ms: u64,
    pub caller: CallerId,
    pub vars: Vec<(String, String)>,
    pub account: String,
    pub is_async: bool,
}

impl PartialEq for OriginateTarget {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                OriginateTarget::Exten {
                    context: a,
                    exten: b,
                    priority: c,
                },
                OriginateTarget::Exten {
                    context: x,
                    exten: y,
                    priority: z,
                },
            ) => a == x && b == y && c == z,
            (
                OriginateTarget::App { app: a, data: b },
                OriginateTarget::App { app: x, data: y },
            ) => a == x && b == y,
            _ => false,
        }
    }
}

/// Parse Originate's headers (Asterisk's `action_originate` checks and messages).
pub fn parse_originate(req: &ActionRequest) -> Result<OriginateParams, String> {
    let channel = nonempty(req, "Channel").ok_or("Channel not specified")?;
    if !channel.contains('/') {
        return Err("Invalid channel".into());
    }
    let timeout_ms = match nonempty(req, "Timeout") {
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| "Invalid timeout".to_string())?,
        None => 30_000,
    };
    let target = if let Some(app) = nonempty(req, "Application") {
        if SYSTEM_APPS.iter().any(|a| app.eq_ignore_ascii_case(a))
            && !req.write.contains(Perm::SYSTEM)
        {
            return Err("Originate with certain 'Application' arguments requires the additional System privilege, which you do not have.".into());
        }
        OriginateTarget::App {
            app: app.to_string(),
            data: req.get("Data").unwrap_or("").to_string(),
        }
    } else {
        let exten = nonempty(req, "Exten").ok_or("Exten not specified")?;
        let priority = match nonempty(req, "Priority") {
            Some(p) => p
                .parse::<i32>()
                .ok()
                .filter(|p| *p >= 1)
                .ok_or("Invalid priority")?,
            None => 1,
        };
        OriginateTarget::Exten {
            context: nonempty(req, "Context").unwrap_or("default").to_string(),
            exten: exten.to_string(),
            priority,
        }
    };
    let mut vars: Vec<(String, String)> = req.setvars.iter().cloned().collect();
    vars.extend(req.message.variables());
    Ok(OriginateParams {
        channel: channel.to_string(),
        target,
        timeout_ms,
        caller: req.get("CallerID").map(CallerId::parse).unwrap_or_default(),
        vars,
        account: req.get("Account").unwrap_or("").trim().to_string(),
        is_async: req.get("Async").is_some_and(is_true),
    })
}

/// Asterisk's `OriginateResponse` event for an async originate.
pub fn originate_response(
    action_id: Option<&str>,
    p: &OriginateParams,
    result: &Result<crate::dialplan::originate::Originated, crate::core::OriginateFailure>,
) -> Event {
    let mut ev = Event::new("OriginateResponse", EventClass::Call);
    if let Some(id) = action_id {
        ev = ev.field("ActionID", id.to_string());
    }
    ev = ev
        .field(
            "Response",
            if result.is_ok() { "Success" } else { "Failure" },
        )
        .field("Channel", p.channel.clone());
    match &p.target {
        OriginateTarget::Exten {
            context,
            exten,
            priority: _,
        } => {
            ev = ev
                .field("Context", context.clone())
                .field("Exten", exten.clone());
        }
        OriginateTarget::App { app, data } => {
            ev = ev
                .field("Application", app.clone())
                .field("Data", data.clone());
        }
    }
    let (reason, uniqueid) = match result {
        // 4 = AST_CONTROL_ANSWER, as Asterisk reports for an answered originate.
        Ok(o) => (4, o.uniqueid.clone()),
        Err(f) => (f.reason, "<null>".to_string()),
    };
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "<unknown>".to_string()
        } else {
            s.to_string()
        }
    };
    ev.field("Reason", reason.to_string())
        .field("Uniqueid", uniqueid)
        .field("CallerIDNum", or_unknown(&p.caller.num))
        .field("CallerIDName", or_unknown(&p.caller.name))
}

async fn originate(ctx: &AmiCtx, req: &ActionRequest) -> (Bytes, Option<Deferred>) {
    let p = match parse_originate(req) {
        Ok(p) => p,
        Err(e) => return (req.error(&e), None),
    };
    let oreq = OriginateReq {
        channel: p.channel.clone(),
        target: p.target.clone(),
        timeout_ms: p.timeout_ms,
        caller: p.caller.clone(),
        vars: p.vars.clone(),
        account: p.account.clone(),
    };
    if p.is_async {
        let core = ctx.core.clone();
        let action_id = req.action_id().map(str::to_string);
        let start: Deferred = Box::new(move || {
            tokio::spawn(async move {
                let r = crate::dialplan::originate::originate(&core, oreq).await;
                core.bus
                    .publish(originate_response(action_id.as_deref(), &p, &r));
            });
        });
        return (req.success("Originate successfully queued"), Some(start));
    }
    let reply = match crate::dialplan::originate::originate(&ctx.core, oreq).await {
        Ok(_) => req.success("Originate successfully queued"),
        Err(_) => req.error("Originate failed"),
    };
    (reply, None)
}

// ---------------------------------------------------------------------------------------------
// Hangup, Redirect, PlayDTMF, AGI

fn hangup(ctx: &AmiCtx, req: &ActionRequest) -> Bytes {
    let Some(name) = nonempty(req, "Channel") else {
        return req.error("No channel specified");
    };
    let cause = match nonempty(req, "Cause") {
        Some(c) => match c.parse::<i32>() {
            Ok(n) if (0..=127).contains(&n) => n,
            _ => return req.error("Invalid cause"),
        },
        None => 16,
    };
    if let Some(pat) = name
        .strip_prefix('/')
        .and_then(|r| r.strip_suffix('/'))
        .filter(|_| name.len() >= 2)
    {
        let re = match regex::Regex::new(pat) {
            Ok(r) => r,
            Err(_) => return req.error("Invalid regex"),
        };
        let mut out = BytesMut::new();
        out.extend_from_slice(&req.list_start("Channels hung up will follow"));
        let mut n = 0;
        for (h, s) in ctx.core.channels.list() {
            if re.is_match(&s.name) {
                h.send(ChanCtl::Hangup(cause));
                let mut b = req.list_item("ChannelHungup");
                b.header("Channel", &s.name);
                out.extend_from_slice(&b.finish());
                n += 1;
            }
        }
        out.extend_from_slice(&req.list_complete("ChannelsHungupListComplete", n).finish());
        return out.freeze();
    }
    match ctx.core.channels.find(name) {
        Some((h, _)) => {
            h.send(ChanCtl::Hangup(cause));
            req.success("Channel Hungup")
        }
        None => req.error("No such channel"),
    }
}

fn parse_priority(v: Option<&str>) -> Result<i32, ()> {
    match v.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(1),
        Some(p) => p.parse::<i32>().ok().filter(|p| *p >= 1).ok_or(()),
    }
}

fn redirect(ctx: &AmiCtx, req: &ActionRequest) -> Bytes {
    let Some(name) = nonempty(req, "Channel") else {
        return req.error("Channel not specified");
    };
    let Ok(priority) = parse_priority(req.get("Priority")) else {
        return req.error("Invalid priority");
    };
    let Some(exten) = nonempty(req, "Exten") else {
        return req.error("Exten not specified");
    };
    let Some((h, snap)) = ctx.core.channels.find(name) else {
        return req.error(&format!("Channel does not exist: {name}"));
    };
    let context = nonempty(req, "Context")
        .unwrap_or(&snap.context)
        .to_string();
    let extra = match nonempty(req, "ExtraChannel") {
        Some(xname) => {
            let Ok(xpri) = parse_priority(req.get("ExtraPriority")) else {
                return req.error("Invalid ExtraPriority");
            };
            let Some((xh, xs)) = ctx.core.channels.find(xname) else {
                return req.error(&format!("ExtraChannel does not exist: {xname}"));
            };
            let xctx = nonempty(req, "ExtraContext")
                .unwrap_or(&xs.context)
                .to_string();
            let xexten = nonempty(req, "ExtraExten").unwrap_or(exten).to_string();
            Some((xh, xctx, xexten, xpri))
        }
        None => None,
    };
    h.send(ChanCtl::Redirect {
        context,
        exten: exten.to_string(),
        priority,
    });
    match extra {
        Some((xh, context, exten, priority)) => {
            xh.send(ChanCtl::Redirect {
                context,
                exten,
                priority,
            });
            req.success("Dual Redirect successful")
        }
        None => req.success("Redirect successful"),
    }
}

fn play_dtmf(ctx: &AmiCtx, req: &ActionRequest) -> Bytes {
    let Some(name) = nonempty(req, "Channel") else {
        return req.error("Channel not specified");
    };
    let Some(digit) = nonempty(req, "Digit") else {
        return req.error("No digit specified");
    };
    let duration = match nonempty(req, "Duration") {
        Some(d) => match d.parse::<u32>() {
            Ok(n) => n.clamp(40, 10_000),
            Err(_) => return req.error("Invalid duration"),
        },
        None => 250,
    };
    if !digit
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D' | 'a'..='d'))
    {
        return req.error("Invalid digit");
    }
    match ctx.core.channels.find(name) {
        Some((h, _)) if h.send(ChanCtl::SendDtmf(digit.to_string(), duration)) => {
            req.success("DTMF successfully queued")
        }
        _ => req.error("Channel not found"),
    }
}

async fn agi(ctx: &AmiCtx, req: &ActionRequest) -> (Bytes, Option<Deferred>) {
    use crate::interfaces::agi::asyncq::{queue, AsyncCommand};
    let (Some(name), Some(command)) = (nonempty(req, "Channel"), nonempty(req, "Command")) else {
        return (req.error("Both, Channel and Command are *required*"), None);
    };
    let Some((h, snap)) = ctx.core.channels.find(name) else {
        return (req.error(&format!("Channel {name} does not exist.")), None);
    };
    // The command waits for this ack to be written before it runs (see AsyncCommand::gate).
    let (ack_sent, gate) = tokio::sync::oneshot::channel();
    let cmd = AsyncCommand {
        command: command.to_string(),
        command_id: req.get("CommandID").unwrap_or("").to_string(),
        gate: Some(gate),
    };
    match h.run(move |c| queue(c, cmd)).await {
        Some(true) => (
            req.success("Added AGI command to queue"),
            Some(Box::new(move || {
                let _ = ack_sent.send(());
            })),
        ),
        Some(false) => (
            req.error(&format!(
                "Failed to add AGI command to channel {} queue",
                snap.name
            )),
            None,
        ),
        None => (req.error(&format!("Channel {name} does not exist.")), None),
    }
}

// ---------------------------------------------------------------------------------------------
// Getvar, Setvar

fn is_function(name: &str) -> bool {
    crate::dialplan::pbx::split_func(name).is_some()
}

async fn getvar(ctx: &AmiCtx, req: &ActionRequest) -> Bytes {
    let Some(var) = nonempty(req, "Variable") else {
        return req.error("No variable specified");
    };
    let var = var.to_string();
    let value = match nonempty(req, "Channel") {
        None => {
            if is_function(&var) {
                return req.error("Functions require a channel");
            }
            let g = ctx.core.globals.read().get(&var).cloned();
            g.or_else(|| crate::dialplan::pbx::global_builtin(&ctx.core, &var))
                .unwrap_or_default()
        }
        Some(name) => {
            let Some((h, _)) = ctx.core.channels.find(name) else {
                return req.error("No such channel");
            };
            let v2 = var.clone();
            let r = h
                .run(move |c| {
                    // Functions run on the owner task; one that would wait cannot be served here.
                    crate::dialplan::pbx::read_var_or_func(c, &v2)
                        .now_or_never()
                        .ok_or(())
                })
                .await;
            match r {
                Some(Ok(v)) => v.unwrap_or_default(),
                Some(Err(())) => return req.error("Function cannot be read now"),
                None => return req.error("No such channel"),
            }
        }
    };
    let mut b = req.response("Success", None);
    b.header("Variable", &var).header("Value", &value);
    b.finish()
}

async fn setvar(ctx: &AmiCtx, req: &ActionRequest) -> Bytes {
    let Some(var) = nonempty(req, "Variable") else {
        return req.error("No variable specified");
    };
    let var = var.to_string();
    let value = req.get("Value").unwrap_or("").to_string();
    match nonempty(req, "Channel") {
        None => {
            let name = match crate::dialplan::pbx::split_func(&var) {
                Some((f, args)) if f.eq_ignore_ascii_case("GLOBAL") => args.to_string(),
                Some(_) => return req.error("Functions require a channel"),
                None => var,
            };
            ctx.core.globals.write().insert(name.clone(), value.clone());
            ctx.core.bus.publish(
                Event::new("VarSet", EventClass::Dialplan)
                    .field("Variable", name)
                    .field("Value", value),
            );
            req.success("Variable Set")
        }
        Some(name) => {
            let Some((h, _)) = ctx.core.channels.find(name) else {
                return req.error("No such channel");
            };
            let r = h
                .run(move |c| {
                    crate::dialplan::pbx::assign(c, &var, &value)
                        .now_or_never()
                        .is_some()
                })
                .await;
            match r {
                Some(true) => req.success("Variable Set"),
                Some(false) => req.error("Function cannot be written now"),
                None => req.error("No such channel"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Status, CoreShowChannels

/// Append the channel snapshot fields in Asterisk's order (`manager_channels.c`), each name
/// prefixed with `prefix` (`""` or `"Dest"`).
pub fn snapshot_fields(s: &ChannelSnapshot, prefix: &str, out: &mut Vec<(String, String)>) {
    let unknown = |v: &str| {
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    let f: [(&str, String); 14] = [
        ("Channel", s.name.clone()),
        ("ChannelState", s.state.to_string()),
        ("ChannelStateDesc", s.state_desc.to_string()),
        ("CallerIDNum", unknown(&s.caller_num)),
        ("CallerIDName", unknown(&s.caller_name)),
        ("ConnectedLineNum", unknown(&s.connected_num)),
        ("ConnectedLineName", unknown(&s.connected_name)),
        ("Language", s.language.clone()),
        ("AccountCode", s.account_code.clone()),
        ("Context", s.context.clone()),
        ("Exten", s.exten.clone()),
        ("Priority", s.priority.to_string()),
        ("Uniqueid", s.uniqueid.clone()),
        ("Linkedid", s.linkedid.clone()),
    ];
    for (k, v) in f {
        out.push((format!("{prefix}{k}"), v));
    }
}

fn hms(secs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

fn elapsed_secs(s: &ChannelSnapshot) -> u64 {
    s.created.map(|c| c.elapsed().as_secs()).unwrap_or(0)
}

async fn status(ctx: &AmiCtx, req: &ActionRequest) -> Bytes {
    let chans = match nonempty(req, "Channel") {
        Some(name) => match ctx.core.channels.find(name) {
            Some(c) => vec![c],
            None => return req.error("No such channel"),
        },
        None => ctx.core.channels.list(),
    };
    let wanted: Vec<String> = req
        .get("Variables")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut out = BytesMut::new();
    out.extend_from_slice(&req.list_start("Channel status will follow"));
    let mut n = 0;
    for (h, s) in chans {
        let vars = if wanted.is_empty() {
            Vec::new()
        } else {
            let w = wanted.clone();
            h.run(move |c| {
                w.iter()
                    .map(|name| {
                        let v = crate::dialplan::pbx::read_var_or_func(c, name)
                            .now_or_never()
                            .flatten()
                            .unwrap_or_default();
                        (name.clone(), v)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default()
        };
        let mut b = req.list_item("Status");
        b.header("Privilege", "Call");
        let mut f = Vec::new();
        snapshot_fields(&s, "", &mut f);
        for (k, v) in &f {
            b.header(k, v);
        }
        let tech = s.name.split('/').next().unwrap_or("");
        b.header("Type", tech)
            .header("DNID", "")
            .header("EffectiveConnectedLineNum", &s.connected_num)
            .header("EffectiveConnectedLineName", &s.connected_name)
            .header("TimeToHangup", "0")
            .header("BridgeID", "")
            .header("Application", &s.app)
            .header("Data", &s.app_data)
            .header("Nativeformats", "(ulaw)")
            .header("Readformat", "ulaw")
            .header("Readtrans", "")
            .header("Writeformat", "ulaw")
            .header("Writetrans", "")
            .header("Callgroup", "0")
            .header("Pickupgroup", "0")
            .header("Seconds", &elapsed_secs(&s).to_string());
        if let Some(peer) = &s.bridged_to {
            b.header("BridgedChannel", peer);
        }
        for (k, v) in &vars {
            b.header("Variable", &format!("{k}={v}"));
        }
        out.extend_from_slice(&b.finish());
        n += 1;
    }
    let mut c = req.list_complete("StatusComplete", n);
    c.header("Items", &n.to_string());
    out.extend_from_slice(&c.finish());
    out.freeze()
}

fn core_show_channels(ctx: &AmiCtx, req: &ActionRequest) -> Bytes {
    let mut out = BytesMut::new();
    out.extend_from_slice(&req.list_start("Channels will follow"));
    let mut n = 0;
    for (_, s) in ctx.core.channels.list() {
        let mut b = req.list_item("CoreShowChannel");
        let mut f = Vec::new();
        snapshot_fields(&s, "", &mut f);
        for (k, v) in &f {
            b.header(k, v);
        }
        b.header("BridgeId", "")
            .header("Application", &s.app)
            .header("ApplicationData", &s.app_data)
            .header("Duration", &hms(elapsed_secs(&s)));
        if let Some(peer) = &s.bridged_to {
            b.header("BridgedChannel", peer);
        }
        out.extend_from_slice(&b.finish());
        n += 1;
    }
    out.extend_from_slice(&req.list_complete("CoreShowChannelsComplete", n).finish());
    out.freeze()
}

// ---------------------------------------------------------------------------------------------
// CoreStatus, CoreSettings, Command, Reload

fn local_date_time(epoch: u64) -> (String, String) {
    use chrono::TimeZone;
    match chrono::Local.timestamp_opt(epoch as i64, 0).single() {
        Some(t) => (
            t.format("%Y-%m-%d").to_string(),
            t.format("%H:%M:%S").to_string(),
        ),
        None => (String::new(), String::new()),
    }
}

fn core_status(ctx: &AmiCtx, req: &ActionRequest) -> Bytes {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let reload_epoch = now.saturating_sub(ctx.core.last_reload.read().elapsed().as_secs());
    let (sd, st) = local_date_time(ctx.core.start_epoch);
    let (rd, rt) = local_date_time(reload_epoch);
    let mut b = req.response("Success", None);
    b.header("CoreStartupDate", &sd)
        .header("CoreStartupTime", &st)
        .header("CoreReloadDate", &rd)
        .header("CoreReloadTime", &rt)
        .header("CoreCurrentCalls", &ctx.core.channels.len().to_string());
    b.finish()
}

fn core_settings(ctx: &AmiCtx, req: &ActionRequest) -> Bytes {
    let cfg: Arc<ManagerConfig> = ctx.shared.config();
    let yn = |b: bool| if b { "Yes" } else { "No" };
    let mut b = req.response("Success", None);
    b.header("AMIversion", super::AMI_VERSION)
        .header("AsteriskVersion", crate::core::VERSION)
        .header("SystemName", &ctx.core.options.system_name)
        .header("CoreMaxCalls", &ctx.core.options.max_calls.to_string())
        .header("CoreMaxLoadAvg", "0.000000")
        .header("CoreRunUser", "")
        .header("CoreRunGroup", "")
        .header("CoreMaxFilehandles", "0")
        .header("CoreRealTimeEnabled", "No")
        .header("CoreCDRenabled", "No")
        .header("CoreHTTPenabled", yn(cfg.webenabled));
    b.finish()
}

async fn command(ctx: &AmiCtx, req: &ActionRequest) -> Bytes {
    let Some(cmd) = nonempty(req, "Command") else {
        return req.error("No command provided");
    };
    let out = ctx.core.run_cli(cmd).await;
    let mut b = req.response("Success", Some("Command output follows"));
    for line in out.lines() {
        b.header("Output", line);
    }
    b.finish()
}

fn reload(ctx: &AmiCtx, req: &ActionRequest) -> Bytes {
    let module = nonempty(req, "Module").map(|m| m.to_ascii_lowercase());
    let all = module.is_none();
    let is = |names: &[&str]| module.as_deref().is_some_and(|m| names.contains(&m));
    if !all
        && !is(&["pbx_config", "pbx_config.so", "extensions", "dialplan"])
        && !is(&["manager", "manager.conf"])
    {
        return req.error("No such module");
    }
    if all || is(&["pbx_config", "pbx_config.so", "extensions", "dialplan"]) {
        if let Err(e) = ctx.core.reload_dialplan() {
            return req.error(&format!("Reload failed: {e}"));
        }
    }
    if all || is(&["manager", "manager.conf"]) {
        match reload_manager_conf(ctx) {
            Ok(()) => {}
            Err(e) => return req.error(&format!("Reload failed: {e}")),
        }
    }
    req.success("Module Reloaded")
}

/// Re-read manager.conf into the shared session state (users, filters, timeouts). A failed
/// parse keeps the old configuration.
pub fn reload_manager_conf(ctx: &AmiCtx) -> Result<(), String> {
    match crate::core::load_conf(&ctx.core.dirs, "manager.conf") {
        Ok(Some(conf)) => {
            let cfg = ManagerConfig::from_conf(&conf).map_err(|e| e.to_string())?;
            ctx.shared.set_config(cfg);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// UserEvent, ExtensionState

fn user_event(ctx: &AmiCtx, req: &ActionRequest) -> (Bytes, Option<Deferred>) {
    let Some(name) = nonempty(req, "UserEvent") else {
        return (req.error("No UserEvent specified"), None);
    };
    let mut ev = Event::new("UserEvent", EventClass::User).field("UserEvent", name.to_string());
    for h in req.message.headers() {
        if h.name.eq_ignore_ascii_case("Action") || h.name.eq_ignore_ascii_case("UserEvent") {
            continue;
        }
        ev = ev.field(Cow::Owned(h.name.clone()), h.value.clone());
    }
    let bus = ctx.core.bus.clone();
    (
        req.success("Event Sent"),
        Some(Box::new(move || bus.publish(ev))),
    )
}

/// Extension state from a hint's devices: (code, text) as Asterisk reports them.
pub fn device_state(hint: &str, chans: &[Arc<ChannelSnapshot>]) -> (i32, &'static str) {
    let mut inuse = false;
    let mut ringing = false;
    for dev in hint.split('&').map(str::trim).filter(|d| !d.is_empty()) {
        let dev_l = dev.to_ascii_lowercase();
        for s in chans {
            let n = s.name.to_ascii_lowercase();
            let matches = n == dev_l
                || n.strip_prefix(&dev_l)
                    .is_some_and(|rest| rest.starts_with('-') || rest.starts_with(';'));
            if matches {
                if s.state == ChannelState::Ringing as u8 {
                    ringing = true;
                } else {
                    inuse = true;
                }
            }
        }
    }
    match (inuse, ringing) {
        (true, true) => (9, "InUse&Ringing"),
        (true, false) => (1, "InUse"),
        (false, true) => (8, "Ringing"),
        (false, false) => (0, "Idle"),
    }
}

fn extension_state(ctx: &AmiCtx, req: &ActionRequest) -> Bytes {
    let exten = req.get("Exten").unwrap_or("").trim().to_string();
    let context = nonempty(req, "Context").unwrap_or("default").to_string();
    let dp = ctx.core.dialplan.load();
    let hint = dp.hint(&context, &exten).map(str::to_string);
    let (code, text) = match &hint {
        Some(h) => {
            let chans: Vec<_> = ctx
                .core
                .channels
                .list()
                .into_iter()
                .map(|(_, s)| s)
                .collect();
            device_state(h, &chans)
        }
        None => (-1, "Unknown"),
    };
    let mut b = req.response("Success", Some("Extension Status"));
    b.header("Exten", &exten)
        .header("Context", &context)
        .header("Hint", hint.as_deref().unwrap_or(""))
        .header("Status", &code.to_string())
        .header("StatusText", text);
    b.finish()
}

/// Build a complete message from headers (helper for tests and the server).
pub fn message(headers: &[(&str, &str)]) -> Bytes {
    let mut b = MessageBuilder::new();
    for (k, v) in headers {
        b.header(k, v);
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interfaces::ami::codec::Message;

    fn req(headers: &[(&str, &str)], write: Perm) -> ActionRequest {
        let mut m = Message::new();
        for (k, v) in headers {
            m.push(*k, *v);
        }
        ActionRequest {
            name: m.action().unwrap_or("").to_string(),
            message: m,
            username: "u".into(),
            read: Perm::ALL,
            write,
            authority: Perm::ORIGINATE,
            setvars: Arc::from(vec![("FROMCONF".to_string(), "1".to_string())]),
        }
    }

    #[test]
    fn table_has_every_action() {
        let t = action_table();
        for (n, _) in ACTIONS {
            assert!(t.get(n).is_some(), "{n} not registered");
        }
        assert_eq!(t.get("originate").unwrap().authority, Perm::ORIGINATE);
    }

    #[test]
    fn originate_parsing() {
        let r = req(
            &[
                ("Action", "Originate"),
                ("Channel", "Local/100@default"),
                ("Exten", "200"),
                ("Context", "ctx"),
                ("Priority", "2"),
                ("Timeout", "5000"),
                ("CallerID", "\"Bob\" <123>"),
                ("Variable", "a=1,b=2"),
                ("Variable", "c=3"),
                ("Async", "true"),
            ],
            Perm::ORIGINATE,
        );
        let p = parse_originate(&r).unwrap();
        assert!(p.is_async);
        assert_eq!(p.timeout_ms, 5000);
        assert_eq!(p.caller.num, "123");
        assert_eq!(p.caller.name, "Bob");
        assert_eq!(
            p.target,
            OriginateTarget::Exten {
                context: "ctx".into(),
                exten: "200".into(),
                priority: 2
            }
        );
        let names: Vec<_> = p.vars.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["FROMCONF", "a", "b", "c"]);
        assert!(!is_blocking(&r));
    }

    #[test]
    fn originate_errors() {
        let e = |h: &[(&str, &str)], w| parse_originate(&req(h, w)).unwrap_err();
        assert_eq!(
            e(&[("Action", "Originate")], Perm::ORIGINATE),
            "Channel not specified"
        );
        assert_eq!(
            e(
                &[
                    ("Action", "Originate"),
                    ("Channel", "Local/1"),
                    ("Exten", "1"),
                    ("Priority", "x")
                ],
                Perm::ORIGINATE
            ),
            "Invalid priority"
        );
        assert!(e(
            &[
                ("Action", "Originate"),
                ("Channel", "Local/1"),
                ("Application", "System")
            ],
            Perm::ORIGINATE
        )
        .contains("System privilege"));
        let ok = parse_originate(&req(
            &[
                ("Action", "Originate"),
                ("Channel", "Local/1"),
                ("Application", "Playback"),
                ("Data", "x"),
            ],
            Perm::ORIGINATE,
        ))
        .unwrap();
        assert_eq!(
            ok.target,
            OriginateTarget::App {
                app: "Playback".into(),
                data: "x".into()
            }
        );
        assert!(is_blocking(&req(&[("Action", "Originate")], Perm::ALL)));
    }

    #[test]
    fn originate_response_fields() {
        let r = req(
            &[
                ("Action", "Originate"),
                ("Channel", "Local/1@c"),
                ("Exten", "1"),
            ],
            Perm::ORIGINATE,
        );
        let p = parse_originate(&r).unwrap();
        let fail: Result<crate::dialplan::originate::Originated, _> =
            Err(crate::core::OriginateFailure {
                reason: 3,
                message: "no answer".into(),
            });
        let ev = originate_response(Some("42"), &p, &fail);
        assert_eq!(ev.get("ActionID"), Some("42"));
        assert_eq!(ev.get("Response"), Some("Failure"));
        assert_eq!(ev.get("Reason"), Some("3"));
        assert_eq!(ev.get("Uniqueid"), Some("<null>"));
        assert_eq!(ev.get("Context"), Some("default"));
        assert_eq!(ev.get("CallerIDNum"), Some("<unknown>"));
    }

    #[test]
    fn snapshot_order_and_prefix() {
        let s = ChannelSnapshot {
            name: "Local/1@c-0001;1".into(),
            state: 6,
            state_desc: "Up",
            priority: 3,
            ..Default::default()
        };
        let mut f = Vec::new();
        snapshot_fields(&s, "Dest", &mut f);
        let names: Vec<_> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names[0], "DestChannel");
        assert_eq!(names[13], "DestLinkedid");
        assert_eq!(f[3].1, "<unknown>");
        assert_eq!(f[11].1, "3");
    }

    #[test]
    fn device_states() {
        let mk = |name: &str, state: ChannelState| {
            Arc::new(ChannelSnapshot {
                name: name.into(),
                state: state as u8,
                ..Default::default()
            })
        };
        let chans = vec![
            mk("PJSIP/100-00000001", ChannelState::Up),
            mk("PJSIP/200-00000002", ChannelState::Ringing),
        ];
        assert_eq!(device_state("PJSIP/100", &chans), (1, "InUse"));
        assert_eq!(device_state("PJSIP/200", &chans), (8, "Ringing"));
        assert_eq!(device_state("PJSIP/10", &chans), (0, "Idle"));
        assert_eq!(
            device_state("PJSIP/100&PJSIP/200", &chans),
            (9, "InUse&Ringing")
        );
    }

    #[test]
    fn hms_format() {
        assert_eq!(hms(3725), "01:02:05");
    }
}
