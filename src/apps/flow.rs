//! Goto, GotoIf, GotoIfTime, Gosub, GosubIf, Return, StackPop, While/EndWhile/ExitWhile/ContinueWhile.

use super::basic::{is_true_cond, split_true_false};
use crate::channel::Channel;
use crate::dialplan::pbx::{self, AppDef, AppExec, AppResult};
use crate::dialplan::subst::split_args;
use crate::dialplan::timespec::TimeSpec;

pub fn apps() -> Vec<AppDef> {
    vec![
        AppDef {
            name: "Goto",
            synopsis: "Jump to a particular priority, extension, or context",
            exec: AppExec::Sync(goto),
        },
        AppDef {
            name: "GotoIf",
            synopsis: "Conditional goto",
            exec: AppExec::Sync(goto_if),
        },
        AppDef {
            name: "GotoIfTime",
            synopsis: "Conditional Goto based on the current time",
            exec: AppExec::Sync(goto_if_time),
        },
        AppDef {
            name: "Gosub",
            synopsis: "Jump to label, saving return address",
            exec: AppExec::Sync(gosub),
        },
        AppDef {
            name: "GosubIf",
            synopsis: "Conditionally jump to label, saving return address",
            exec: AppExec::Sync(gosub_if),
        },
        AppDef {
            name: "Return",
            synopsis: "Return from gosub routine",
            exec: AppExec::Sync(ret),
        },
        AppDef {
            name: "StackPop",
            synopsis: "Remove one address from gosub stack",
            exec: AppExec::Sync(stack_pop),
        },
        AppDef {
            name: "While",
            synopsis: "Start a while loop",
            exec: AppExec::Sync(while_),
        },
        AppDef {
            name: "EndWhile",
            synopsis: "End a while loop",
            exec: AppExec::Sync(end_while),
        },
        AppDef {
            name: "ExitWhile",
            synopsis: "End a While loop",
            exec: AppExec::Sync(exit_while),
        },
        AppDef {
            name: "ContinueWhile",
            synopsis: "Restart a While loop",
            exec: AppExec::Sync(continue_while),
        },
    ]
}

fn goto(chan: &mut Channel, args: &str) -> AppResult {
    if pbx::goto(chan, args) {
        AppResult::Continue
    } else {
        AppResult::Hangup
    }
}

fn goto_if(chan: &mut Channel, args: &str) -> AppResult {
    let Some((cond, rest)) = args.split_once('?') else {
        tracing::warn!("GotoIf requires an argument (condition?label1[:label2])");
        return AppResult::Continue;
    };
    let (t, f) = split_true_false(rest);
    let target = if is_true_cond(cond) { Some(t) } else { f };
    match target {
        Some(t) if !t.trim().is_empty() => goto(chan, &t),
        _ => AppResult::Continue,
    }
}

fn goto_if_time(chan: &mut Channel, args: &str) -> AppResult {
    let Some((spec, rest)) = args.split_once('?') else {
        tracing::warn!("GotoIfTime requires an argument: <time range>,<days of week>,<days of month>,<months>[,<timezone>]?[labeliftrue][:labeliffalse]");
        return AppResult::Continue;
    };
    let matched = match TimeSpec::parse(spec) {
        Ok(t) => t.matches(chrono::Local::now()),
        Err(e) => {
            tracing::warn!("GotoIfTime: bad time spec '{}': {}", spec, e);
            false
        }
    };
    let (t, f) = split_true_false(rest);
    let target = if matched { Some(t) } else { f };
    match target {
        Some(t) if !t.trim().is_empty() => goto(chan, &t),
        _ => AppResult::Continue,
    }
}

fn gosub(chan: &mut Channel, args: &str) -> AppResult {
    let (target, a) = pbx::split_gosub_target(args);
    if pbx::gosub(chan, &target, &a, false) {
        AppResult::Continue
    } else {
        AppResult::Hangup
    }
}

fn gosub_if(chan: &mut Channel, args: &str) -> AppResult {
    let Some((cond, rest)) = args.split_once('?') else {
        tracing::warn!(
            "GosubIf requires an argument: condition?labeliftrue[(args)][:labeliffalse[(args)]]"
        );
        return AppResult::Continue;
    };
    let (t, f) = split_true_false(rest);
    let target = if is_true_cond(cond) { Some(t) } else { f };
    match target {
        Some(t) if !t.trim().is_empty() => gosub(chan, &t),
        _ => AppResult::Continue,
    }
}

fn ret(chan: &mut Channel, args: &str) -> AppResult {
    let Some(frame) = pbx::gosub_return(chan) else {
        tracing::warn!("Return without Gosub: stack is empty");
        return AppResult::Hangup;
    };
    chan.vars.set("GOSUB_RETVAL", args);
    chan.context = frame.context;
    chan.exten = frame.exten;
    chan.priority = frame.priority;
    chan.jumped = true;
    AppResult::Continue
}

fn stack_pop(chan: &mut Channel, _args: &str) -> AppResult {
    if pbx::gosub_return(chan).is_none() {
        tracing::warn!("StackPop: stack is empty");
    }
    AppResult::Continue
}

/// Loop markers: (context, exten, priority of the While).
type WhileStack = Vec<(String, String, i32)>;

fn while_stack(chan: &mut Channel) -> &mut WhileStack {
    chan.datastores
        .entry("while")
        .or_insert_with(|| Box::new(WhileStack::new()))
        .downcast_mut::<WhileStack>()
        .expect("the 'while' datastore always holds a WhileStack")
}

/// Find the EndWhile matching the While at `from` in the current extension.
fn find_end_while(chan: &Channel, from: i32) -> Option<i32> {
    let dp = chan.core.dialplan.load();
    let f = dp.find_exten(&chan.context, &chan.exten, &chan.caller.num)?;
    let mut depth = 0;
    for p in f.extension.priorities.iter().filter(|p| p.priority > from) {
        match p.app.to_ascii_lowercase().as_str() {
            "while" => depth += 1,
            "endwhile" => {
                if depth == 0 {
                    return Some(p.priority);
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    None
}

fn jump_after_end(chan: &mut Channel, from: i32) -> AppResult {
    match find_end_while(chan, from) {
        Some(p) => {
            chan.priority = p + 1;
            chan.jumped = true;
            AppResult::Continue
        }
        None => {
            tracing::warn!("{}: could not find a matching EndWhile", chan.name);
            AppResult::Hangup
        }
    }
}

fn while_(chan: &mut Channel, args: &str) -> AppResult {
    let here = (chan.context.clone(), chan.exten.clone(), chan.priority);
    let prio = chan.priority;
    let top_is_here = while_stack(chan).last() == Some(&here);
    if is_true_cond(args) {
        if !top_is_here {
            while_stack(chan).push(here);
        }
        AppResult::Continue
    } else {
        if top_is_here {
            while_stack(chan).pop();
        }
        jump_after_end(chan, prio)
    }
}

fn end_while(chan: &mut Channel, _args: &str) -> AppResult {
    match while_stack(chan).last().cloned() {
        Some((c, e, p)) => {
            chan.context = c;
            chan.exten = e;
            chan.priority = p;
            chan.jumped = true;
            AppResult::Continue
        }
        None => {
            tracing::warn!("EndWhile without While");
            AppResult::Continue
        }
    }
}

fn exit_while(chan: &mut Channel, _args: &str) -> AppResult {
    match while_stack(chan).pop() {
        Some((c, e, p)) => {
            chan.context = c;
            chan.exten = e;
            jump_after_end(chan, p)
        }
        None => {
            tracing::warn!("ExitWhile without While");
            AppResult::Continue
        }
    }
}

fn continue_while(chan: &mut Channel, args: &str) -> AppResult {
    end_while(chan, args)
}

/// Parse a comma list of `name=value` (used by several apps).
pub fn kv_list(args: &str) -> Vec<(String, String)> {
    split_args(args)
        .into_iter()
        .filter_map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        })
        .collect()
}
