//! Channel and PBX functions: CALLERID, CONNECTEDLINE, CHANNEL, GLOBAL, SHARED, TIMEOUT,
//! HANGUPCAUSE, DIALPLAN_EXISTS, VALID_EXTEN, ENV, EVAL, IF, ISNULL, EXISTS, LEN.

use crate::channel::{CallerId, Channel};
use crate::dialplan::pbx::{self, FuncDef, FuncRead, FuncResult, FuncWrite};
use crate::dialplan::subst::split_args;
use futures_util::future::BoxFuture;
use std::time::{Duration, Instant};

pub fn funcs() -> Vec<FuncDef> {
    vec![
        FuncDef {
            name: "CALLERID",
            synopsis: "Gets or sets Caller*ID data on the channel",
            read: Some(FuncRead::Sync(callerid_read)),
            write: Some(FuncWrite::Sync(callerid_write)),
        },
        FuncDef {
            name: "CONNECTEDLINE",
            synopsis: "Gets or sets Connected Line data on the channel",
            read: Some(FuncRead::Sync(connected_read)),
            write: Some(FuncWrite::Sync(connected_write)),
        },
        FuncDef {
            name: "CHANNEL",
            synopsis: "Gets/sets various pieces of information about the channel",
            read: Some(FuncRead::Sync(channel_read)),
            write: Some(FuncWrite::Sync(channel_write)),
        },
        FuncDef {
            name: "GLOBAL",
            synopsis: "Gets or sets the global variable specified",
            read: Some(FuncRead::Sync(global_read)),
            write: Some(FuncWrite::Sync(global_write)),
        },
        FuncDef {
            name: "SHARED",
            synopsis: "Gets or sets the shared variable specified",
            read: Some(FuncRead::Sync(shared_read)),
            write: Some(FuncWrite::Sync(shared_write)),
        },
        FuncDef {
            name: "TIMEOUT",
            synopsis: "Gets or sets timeouts on the channel",
            read: Some(FuncRead::Sync(timeout_read)),
            write: Some(FuncWrite::Sync(timeout_write)),
        },
        FuncDef {
            name: "HANGUPCAUSE",
            synopsis: "Gets per-channel hangupcause information",
            read: Some(FuncRead::Sync(|c, _| Ok(c.hangup_cause.to_string()))),
            write: None,
        },
        FuncDef {
            name: "DIALPLAN_EXISTS",
            synopsis: "Checks the existence of a dialplan target",
            read: Some(FuncRead::Sync(dialplan_exists)),
            write: None,
        },
        FuncDef {
            name: "VALID_EXTEN",
            synopsis: "Determine whether an extension exists or not",
            read: Some(FuncRead::Sync(valid_exten)),
            write: None,
        },
        FuncDef {
            name: "ENV",
            synopsis: "Gets or sets the environment variable specified",
            read: Some(FuncRead::Sync(|_, a| {
                Ok(std::env::var(a.trim()).unwrap_or_default())
            })),
            write: Some(FuncWrite::Sync(env_write)),
        },
        FuncDef {
            name: "EVAL",
            synopsis: "Evaluate stored variables",
            read: Some(FuncRead::Async(eval)),
            write: None,
        },
        FuncDef {
            name: "IF",
            synopsis: "Check for an expression",
            read: Some(FuncRead::Sync(if_func)),
            write: None,
        },
        FuncDef {
            name: "ISNULL",
            synopsis: "Check if a value is NULL",
            read: Some(FuncRead::Sync(|_, a| {
                Ok(if a.is_empty() { "1" } else { "0" }.into())
            })),
            write: None,
        },
        FuncDef {
            name: "EXISTS",
            synopsis: "Test the existence of a value",
            read: Some(FuncRead::Sync(|_, a| {
                Ok(if a.is_empty() { "0" } else { "1" }.into())
            })),
            write: None,
        },
        FuncDef {
            name: "LEN",
            synopsis: "Return the length of the string given",
            read: Some(FuncRead::Sync(|_, a| Ok(a.chars().count().to_string()))),
            write: None,
        },
    ]
}

fn callerid_get(c: &CallerId, what: &str) -> FuncResult {
    match what.trim().to_ascii_lowercase().as_str() {
        "num" | "number" => Ok(c.num.clone()),
        "name" => Ok(c.name.clone()),
        "all" | "" => Ok(c.all()),
        "ani" | "ani-num" => Ok(c.num.clone()),
        "pres" | "num-pres" | "name-pres" => Ok("allowed_not_screened".into()),
        other => Err(format!("Unknown callerid data type '{}'", other)),
    }
}

fn callerid_set(c: &mut CallerId, what: &str, value: &str) -> Result<(), String> {
    match what.trim().to_ascii_lowercase().as_str() {
        "num" | "number" => c.num = value.to_string(),
        "name" => c.name = value.to_string(),
        "all" | "" => *c = CallerId::parse(value),
        "ani" | "ani-num" | "pres" | "num-pres" | "name-pres" => {}
        other => return Err(format!("Unknown callerid data type '{}'", other)),
    }
    Ok(())
}

fn callerid_read(chan: &mut Channel, args: &str) -> FuncResult {
    callerid_get(
        &chan.caller,
        split_args(args)
            .first()
            .map(|s| s.as_str())
            .unwrap_or("all"),
    )
}

fn callerid_write(chan: &mut Channel, args: &str, value: &str) -> Result<(), String> {
    let mut c = chan.caller.clone();
    callerid_set(
        &mut c,
        split_args(args)
            .first()
            .map(|s| s.as_str())
            .unwrap_or("all"),
        value,
    )?;
    chan.set_caller(c);
    Ok(())
}

fn connected_read(chan: &mut Channel, args: &str) -> FuncResult {
    callerid_get(
        &chan.connected,
        split_args(args)
            .first()
            .map(|s| s.as_str())
            .unwrap_or("all"),
    )
}

fn connected_write(chan: &mut Channel, args: &str, value: &str) -> Result<(), String> {
    let mut c = chan.connected.clone();
    callerid_set(
        &mut c,
        split_args(args)
            .first()
            .map(|s| s.as_str())
            .unwrap_or("all"),
        value,
    )?;
    chan.connected = c;
    chan.publish(crate::events::Event::new(
        "NewConnectedLine",
        crate::events::EventClass::Call,
    ));
    Ok(())
}

fn channel_read(chan: &mut Channel, args: &str) -> FuncResult {
    let item = args.trim().to_ascii_lowercase();
    Ok(match item.as_str() {
        "name" => chan.name.clone(),
        "state" => chan.state.desc().to_string(),
        "uniqueid" => chan.uniqueid.clone(),
        "linkedid" => chan.linkedid.clone(),
        "language" => chan.language.clone(),
        "accountcode" => chan.account_code.clone(),
        "context" => chan.context.clone(),
        "exten" => chan.exten.clone(),
        "priority" => chan.priority.to_string(),
        "channeltype" => chan.tech().to_string(),
        "hangupsource" => String::new(),
        "audionativeformat" | "nativeformat" => chan.native_format().name().to_string(),
        "audioreadformat" => chan.read_format().name().to_string(),
        "audiowriteformat" => chan.native_format().name().to_string(),
        "callgroup" | "pickupgroup" | "musicclass" | "parkinglot" | "peeraccount" | "userfield"
        | "tenantid" => chan
            .vars
            .get(&format!("__CHANNEL_{}", item))
            .unwrap_or("")
            .to_string(),
        "hangup_handler_stack" => chan
            .hangup_handlers
            .iter()
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join(","),
        other => {
            return Err(format!(
                "Unknown or unavailable item requested: '{}'",
                other
            ))
        }
    })
}

fn channel_write(chan: &mut Channel, args: &str, value: &str) -> Result<(), String> {
    let item = args.trim().to_ascii_lowercase();
    match item.as_str() {
        "language" => chan.language = value.to_string(),
        "accountcode" => chan.account_code = value.to_string(),
        "hangup_handler_push" => chan.hangup_handlers.push(value.to_string()),
        "hangup_handler_pop" => {
            chan.hangup_handlers.pop();
            if !value.is_empty() {
                chan.hangup_handlers.push(value.to_string());
            }
        }
        "hangup_handler_wipe" => {
            chan.hangup_handlers.clear();
            if !value.is_empty() {
                chan.hangup_handlers.push(value.to_string());
            }
        }
        "musicclass" | "callgroup" | "pickupgroup" | "parkinglot" | "userfield" | "tenantid" => {
            chan.vars.set(&format!("__CHANNEL_{}", item), value)
        }
        other => {
            return Err(format!(
                "Unknown or unavailable item requested: '{}'",
                other
            ))
        }
    }
    Ok(())
}

fn global_read(chan: &mut Channel, args: &str) -> FuncResult {
    Ok(chan
        .core
        .globals
        .read()
        .get(args.trim())
        .cloned()
        .unwrap_or_default())
}

fn global_write(chan: &mut Channel, args: &str, value: &str) -> Result<(), String> {
    chan.core
        .globals
        .write()
        .insert(args.trim().to_string(), value.to_string());
    Ok(())
}

fn shared_key(chan: &Channel, args: &str) -> (String, String) {
    let a = split_args(args);
    let var = a.first().cloned().unwrap_or_default();
    let ch = a
        .get(1)
        .cloned()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| chan.name.clone());
    (ch, var)
}

fn shared_read(chan: &mut Channel, args: &str) -> FuncResult {
    let (ch, var) = shared_key(chan, args);
    Ok(chan
        .core
        .shared_vars
        .read()
        .get(&ch)
        .and_then(|m| m.get(&var))
        .cloned()
        .unwrap_or_default())
}

fn shared_write(chan: &mut Channel, args: &str, value: &str) -> Result<(), String> {
    let (ch, var) = shared_key(chan, args);
    chan.core
        .shared_vars
        .write()
        .entry(ch)
        .or_default()
        .insert(var, value.to_string());
    Ok(())
}

/// Digit timeout used by WaitExten/Read/Background (TIMEOUT(digit)), ms.
pub fn digit_timeout(chan: &Channel) -> u64 {
    chan.timeouts
        .digit_ms
        .unwrap_or(chan.core.options.digit_timeout_ms)
}

/// Response timeout (TIMEOUT(response)), ms.
pub fn response_timeout(chan: &Channel) -> u64 {
    chan.timeouts
        .response_ms
        .unwrap_or(chan.core.options.response_timeout_ms)
}

fn fmt_secs(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        (ms / 1000).to_string()
    } else {
        format!("{:.3}", ms as f64 / 1000.0)
    }
}

fn timeout_read(chan: &mut Channel, args: &str) -> FuncResult {
    match args.trim().to_ascii_lowercase().as_str() {
        "digit" => Ok(fmt_secs(digit_timeout(chan))),
        "response" => Ok(fmt_secs(response_timeout(chan))),
        "absolute" => Ok(chan
            .timeouts
            .absolute
            .map(|t| fmt_secs(t.saturating_duration_since(Instant::now()).as_millis() as u64))
            .unwrap_or_else(|| "0".into())),
        other => Err(format!("Unknown timeout type '{}'", other)),
    }
}

fn timeout_write(chan: &mut Channel, args: &str, value: &str) -> Result<(), String> {
    let secs: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("invalid timeout '{}'", value))?;
    let ms = (secs * 1000.0).max(0.0) as u64;
    match args.trim().to_ascii_lowercase().as_str() {
        "digit" => chan.timeouts.digit_ms = Some(ms),
        "response" => chan.timeouts.response_ms = Some(ms),
        "absolute" => {
            chan.timeouts.absolute = if ms == 0 {
                None
            } else {
                Some(Instant::now() + Duration::from_millis(ms))
            };
        }
        other => return Err(format!("Unknown timeout type '{}'", other)),
    }
    Ok(())
}

fn dialplan_exists(chan: &mut Channel, args: &str) -> FuncResult {
    let a = split_args(args);
    let dp = chan.core.dialplan.load();
    let r = match a.len() {
        0 => false,
        1 => dp.context(&a[0]).is_some(),
        2 => dp.find_exten(&a[0], &a[1], &chan.caller.num).is_some(),
        _ => {
            let f = dp.find_exten(&a[0], &a[1], &chan.caller.num);
            match a[2].parse::<i32>() {
                Ok(p) => f
                    .map(|f| f.extension.priority(p).is_some())
                    .unwrap_or(false),
                Err(_) => f
                    .map(|f| f.extension.label(&a[2]).is_some())
                    .unwrap_or(false),
            }
        }
    };
    Ok(if r { "1" } else { "0" }.into())
}

fn valid_exten(chan: &mut Channel, args: &str) -> FuncResult {
    let a = split_args(args);
    let (ctx, ext, pri) = match a.len() {
        0 => return Err("VALID_EXTEN requires an extension".into()),
        1 => (chan.context.clone(), a[0].clone(), 1),
        2 => (a[0].clone(), a[1].clone(), 1),
        _ => (a[0].clone(), a[1].clone(), a[2].parse().unwrap_or(1)),
    };
    let ctx = if ctx.is_empty() {
        chan.context.clone()
    } else {
        ctx
    };
    let dp = chan.core.dialplan.load();
    Ok(if dp.exists(&ctx, &ext, pri, &chan.caller.num) {
        "1"
    } else {
        "0"
    }
    .into())
}

fn env_write(_chan: &mut Channel, args: &str, value: &str) -> Result<(), String> {
    let k = args.trim();
    if k.is_empty() || k.contains('=') || k.contains('\0') || value.contains('\0') {
        return Err("invalid environment variable name".into());
    }
    // Safe here: setting the environment is what ENV()= asks for; voxpbx does not read the
    // environment concurrently from other threads after startup.
    std::env::set_var(k, value);
    Ok(())
}

fn eval<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, FuncResult> {
    Box::pin(async move { Ok(pbx::substitute_str(chan, args).await) })
}

fn if_func(_chan: &mut Channel, args: &str) -> FuncResult {
    // IF(expr?true:false)
    let Some((cond, rest)) = args.split_once('?') else {
        return Err("Syntax IF(<expr>?[<true>][:<false>])".into());
    };
    let (t, f) = crate::apps::basic::split_true_false(rest);
    Ok(if crate::apps::basic::is_true_cond(cond) {
        t
    } else {
        f.unwrap_or_default()
    })
}
