//! Originate (`app_originate.c`), ChannelRedirect (`app_channelredirect.c`) and ClearHash
//! (`func_strings.c`).
//!
//! * `Originate(tech_data,type,arg1[,arg2[,arg3[,timeout[,options]]]])`: place a call and,
//!   once answered, send it to `arg1` (context), `arg2` (exten, default `s`), `arg3`
//!   (priority, default 1) for type `exten`, or run application `arg1` with data `arg2` for
//!   type `app`. Blocks until the call is answered or fails (timeout in seconds, default
//!   30), then sets `ORIGINATE_STATUS` to `SUCCESS`, `FAILED`, `BUSY`, `CONGESTION`,
//!   `HANGUP`, `RINGING` (no answer) or `UNKNOWN`. Option `B(context^exten^priority^args)`
//!   runs a Gosub on the calling channel first. Invalid arguments hang up the caller, as in
//!   Asterisk.
//! * `ChannelRedirect(channel,[[context,]exten,]priority)`: send another channel to a
//!   dialplan location; sets `CHANNELREDIRECT_STATUS` to `SUCCESS` or `NOCHANNEL`.
//! * `ClearHash(hashname)`: remove every key of a HASH().

use crate::apps::{opt_arg, parse_options};
use crate::channel::{ChanCtl, Channel, ReadEvent};
use crate::core::{OriginateReq, OriginateTarget};
use crate::dialplan::functions::math::scan_int;
use crate::dialplan::functions::strings::{clear_hash, std_args};
use crate::dialplan::pbx::{self, AppDef, AppExec, AppResult};
use crate::dialplan::Dialplan;
use futures_util::future::BoxFuture;

pub fn apps() -> Vec<AppDef> {
    vec![
        AppDef {
            name: "Originate",
            synopsis: "Originate a call",
            exec: AppExec::Async(originate_app),
        },
        AppDef {
            name: "ChannelRedirect",
            synopsis: "Redirects given channel to a dialplan target",
            exec: AppExec::Sync(channel_redirect),
        },
        AppDef {
            name: "ClearHash",
            synopsis: "Clear the keys from a specified hashname",
            exec: AppExec::Sync(|c, a| {
                clear_hash(c, a);
                AppResult::Continue
            }),
        },
    ]
}

/// A parsed Originate() call.
#[derive(Debug, Clone)]
pub struct OriginateArgs {
    pub channel: String,
    pub target: OriginateTarget,
    pub timeout_ms: u64,
    /// `B` option: Gosub target on the calling channel, `^` already turned into `,`.
    pub predial_caller: Option<String>,
}

/// Parse Originate()'s arguments.
pub fn parse_originate(args: &str) -> Result<OriginateArgs, String> {
    if args.is_empty() {
        return Err("Originate() requires arguments".into());
    }
    let a = std_args(args, 7);
    if a.len() < 3 {
        return Err("Incorrect number of arguments".into());
    }
    let mut timeout: u64 = 30;
    if let Some(t) = a.get(5).filter(|t| !t.is_empty()) {
        match scan_int(t) {
            Some((n, _)) if n >= 0 => timeout = n as u64,
            _ => tracing::info!("Invalid timeout: '{}'. Setting timeout to 30 seconds", t),
        }
    }
    let channel = a[0].clone();
    match channel.split_once('/') {
        Some((tech, data)) if !tech.is_empty() && !data.is_empty() => {}
        _ => return Err(format!("Channel Tech/Data invalid: '{channel}'")),
    }
    let opts = parse_options(a.get(6).map(|s| s.as_str()).unwrap_or(""));
    if let Some((c, _)) = opts.iter().find(|(c, _)| *c != 'b' && *c != 'B') {
        return Err(format!("Invalid options: '{c}'"));
    }
    if opt_arg(&opts, 'b').is_some() {
        tracing::warn!("Originate: option b (predial Gosub on the new channel) is not supported");
    }
    let predial_caller = opt_arg(&opts, 'B')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('^', ","));
    let target = match a[1].to_ascii_lowercase().as_str() {
        "exten" => {
            let mut priority = 1;
            if let Some(p) = a.get(4).filter(|p| !p.is_empty()) {
                priority = match scan_int(p) {
                    Some((n, _)) => n.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
                    None => return Err(format!("Invalid priority: '{p}'")),
                };
            }
            let exten = a
                .get(3)
                .filter(|e| !e.is_empty())
                .cloned()
                .unwrap_or_else(|| "s".into());
            OriginateTarget::Exten {
                context: a[2].clone(),
                exten,
                priority,
            }
        }
        "app" => OriginateTarget::App {
            app: a[2].clone(),
            data: a.get(3).cloned().unwrap_or_default(),
        },
        other => {
            return Err(format!(
                "Incorrect type, it should be 'exten' or 'app': {other}"
            ))
        }
    };
    Ok(OriginateArgs {
        channel,
        target,
        timeout_ms: timeout.saturating_mul(1000),
        predial_caller,
    })
}

/// ORIGINATE_STATUS for an originate failure reason (`OriginateFailure::reason`).
pub fn originate_status(reason: i32) -> &'static str {
    match reason {
        0 => "FAILED",
        1 => "HANGUP",
        3 => "RINGING",
        4 => "SUCCESS",
        5 => "BUSY",
        8 => "CONGESTION",
        _ => "UNKNOWN",
    }
}

/// Run a Gosub on the channel and come back to where it was (`ast_app_exec_sub`).
async fn run_sub(chan: &mut Channel, sub: &str) {
    let saved = (chan.context.clone(), chan.exten.clone(), chan.priority);
    let (target, args) = pbx::split_gosub_target(sub);
    if pbx::gosub(chan, &target, &args, true) {
        pbx::run_segment(chan, 1000).await;
    }
    chan.context = saved.0;
    chan.exten = saved.1;
    chan.priority = saved.2;
    chan.jumped = false;
}

fn originate_app<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let parsed = match parse_originate(args) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("{}: Originate: {}", chan.name, e);
                pbx::set_var(chan, "ORIGINATE_STATUS", "FAILED");
                return AppResult::Hangup;
            }
        };
        if let Some(sub) = &parsed.predial_caller {
            run_sub(chan, sub).await;
        }
        let req = OriginateReq {
            channel: parsed.channel,
            target: parsed.target,
            timeout_ms: parsed.timeout_ms,
            caller: Default::default(),
            vars: Vec::new(),
            account: String::new(),
        };
        let core = chan.core.clone();
        let mut fut = std::pin::pin!(crate::dialplan::originate::originate(&core, req));
        // Keep servicing the calling channel (autoservice) while the call is placed.
        let mut listen = true;
        let res = loop {
            tokio::select! {
                r = &mut fut => break r,
                ev = chan.read(), if listen => {
                    if matches!(ev, ReadEvent::Hangup | ReadEvent::Interrupted) {
                        listen = false;
                    }
                }
            }
        };
        let status = match &res {
            Ok(_) => "SUCCESS",
            Err(f) => {
                tracing::info!("{}: Originate failed: {}", chan.name, f.message);
                originate_status(f.reason)
            }
        };
        pbx::set_var(chan, "ORIGINATE_STATUS", status);
        if chan.must_return() {
            AppResult::Hangup
        } else {
            AppResult::Continue
        }
    })
}

/// Resolve `[[context,]exten,]priority` relative to a channel at `cur` (context, exten,
/// priority): a priority may be a number, `+n`/`-n` or a label.
pub fn resolve_target(
    dp: &Dialplan,
    cur: (&str, &str, i32),
    cid: &str,
    target: &str,
) -> Result<(String, String, i32), String> {
    let parts = crate::dialplan::subst::split_args(target);
    let (ctx, ext, pri) = match parts.len() {
        0 => return Err("no target".into()),
        1 => (cur.0.to_string(), cur.1.to_string(), parts[0].clone()),
        2 => (cur.0.to_string(), parts[0].clone(), parts[1].clone()),
        _ => (parts[0].clone(), parts[1].clone(), parts[2].clone()),
    };
    let ctx = if ctx.is_empty() {
        cur.0.to_string()
    } else {
        ctx
    };
    let ext = if ext.is_empty() {
        cur.1.to_string()
    } else {
        ext
    };
    let pri = pri.trim();
    let p = if let Ok(n) = pri.parse::<i32>() {
        if pri.starts_with(['+', '-']) {
            cur.2.saturating_add(n)
        } else {
            n
        }
    } else {
        dp.find_exten(&ctx, &ext, cid)
            .and_then(|f| f.extension.label(pri))
            .ok_or_else(|| {
                format!("Priority '{pri}' must be a number > 0, or valid label '{pri}' at '{ctx}'")
            })?
    };
    Ok((ctx, ext, p))
}

fn channel_redirect(chan: &mut Channel, args: &str) -> AppResult {
    let a = std_args(args, 2);
    if a.len() < 2 || a[0].is_empty() || a[1].is_empty() {
        tracing::warn!("ChannelRedirect requires an argument (channel,[[context,]exten,]priority)");
        return AppResult::Hangup;
    }
    let Some((handle, snap)) = chan.core.channels.find(&a[0]) else {
        tracing::warn!("No such channel: {}", a[0]);
        pbx::set_var(chan, "CHANNELREDIRECT_STATUS", "NOCHANNEL");
        return AppResult::Continue;
    };
    let dp = chan.core.dialplan.load();
    match resolve_target(
        &dp,
        (&snap.context, &snap.exten, snap.priority),
        &snap.caller_num,
        &a[1],
    ) {
        Ok((context, exten, priority)) => {
            handle.send(ChanCtl::Redirect {
                context,
                exten,
                priority,
            });
        }
        Err(e) => tracing::warn!("{}: ChannelRedirect: {}", chan.name, e),
    }
    drop(dp);
    pbx::set_var(chan, "CHANNELREDIRECT_STATUS", "SUCCESS");
    AppResult::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn originate_arguments() {
        let o = parse_originate("Local/100@default,exten,ctx,200,3,10").unwrap();
        assert_eq!(o.channel, "Local/100@default");
        assert_eq!(o.timeout_ms, 10_000);
        assert!(
            matches!(&o.target, OriginateTarget::Exten { context, exten, priority: 3 }
            if context == "ctx" && exten == "200")
        );
        let o = parse_originate("Local/100@default,exten,ctx").unwrap();
        assert!(
            matches!(&o.target, OriginateTarget::Exten { context, exten, priority: 1 }
            if context == "ctx" && exten == "s")
        );
        assert_eq!(o.timeout_ms, 30_000);
        let o = parse_originate("Local/1@x,APP,Playback,hello-world,,x,B(sub^s^1^a1)").unwrap();
        assert!(matches!(&o.target, OriginateTarget::App { app, data }
            if app == "Playback" && data == "hello-world"));
        assert_eq!(o.timeout_ms, 30_000);
        assert_eq!(o.predial_caller.as_deref(), Some("sub,s,1,a1"));
        assert!(parse_originate("").is_err());
        assert!(parse_originate("Local/1@x,exten").is_err());
        assert!(parse_originate("Local,exten,ctx").is_err());
        assert!(parse_originate("Local/1,dial,ctx").is_err());
        assert!(parse_originate("Local/1,exten,ctx,s,abc").is_err());
        assert!(parse_originate("Local/1,exten,ctx,s,1,5,z").is_err());
        assert_eq!(originate_status(5), "BUSY");
        assert_eq!(originate_status(8), "CONGESTION");
        assert_eq!(originate_status(3), "RINGING");
        assert_eq!(originate_status(0), "FAILED");
        assert_eq!(originate_status(99), "UNKNOWN");
    }

    #[test]
    fn redirect_targets() {
        let conf = crate::config::parse_str(
            "[default]\nexten => 100,1,NoOp()\n same => n(here),NoOp()\n[other]\nexten => s,1,NoOp()\n same => n(lbl),NoOp()\n",
            std::path::Path::new("extensions.conf"),
        )
        .unwrap();
        let dp = Dialplan::from_conf(&conf).unwrap();
        let cur = ("default", "100", 1);
        assert_eq!(
            resolve_target(&dp, cur, "", "5").unwrap(),
            ("default".into(), "100".into(), 5)
        );
        assert_eq!(
            resolve_target(&dp, cur, "", "here").unwrap(),
            ("default".into(), "100".into(), 2)
        );
        assert_eq!(
            resolve_target(&dp, cur, "", "200,1").unwrap(),
            ("default".into(), "200".into(), 1)
        );
        assert_eq!(
            resolve_target(&dp, cur, "", "other,s,lbl").unwrap(),
            ("other".into(), "s".into(), 2)
        );
        assert_eq!(
            resolve_target(&dp, cur, "", "+2").unwrap(),
            ("default".into(), "100".into(), 3)
        );
        assert!(resolve_target(&dp, cur, "", "nolabel").is_err());
        assert!(resolve_target(&dp, cur, "", "").is_err());
    }
}
