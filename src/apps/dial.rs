//! Dial and Bridge: place outbound calls from the dialplan and bridge them with the caller.

use super::{has_opt, opt_arg, parse_options};
use crate::bridge::{self, BridgeOpts, Side};
use crate::channel::{cause_text, ChanCtl, Channel, ChannelState, Control, ReadEvent};
use crate::dialplan::pbx::{self, AppDef, AppExec, AppResult};
use crate::dialplan::subst::split_args;
use crate::events::{Event, EventClass};
use futures_util::future::BoxFuture;
use std::time::{Duration, Instant};

pub fn apps() -> Vec<AppDef> {
    vec![
        AppDef {
            name: "Dial",
            synopsis: "Attempt to connect to another device or endpoint and bridge the call",
            exec: AppExec::Async(dial),
        },
        AppDef {
            name: "Bridge",
            synopsis: "Bridge two channels",
            exec: AppExec::Async(bridge_app),
        },
    ]
}

struct Leg {
    chan: Channel,
    dialstring: String,
    done: bool,
    status: &'static str,
}

fn dial_end(caller: &mut Channel, leg: &Leg, status: &str) {
    let mut ev = Event::new("DialEnd", EventClass::Call).field("DialStatus", status.to_string());
    ev.dest = Some(std::sync::Arc::new(leg.chan.snapshot()));
    caller.publish(ev);
}

/// Overall DIALSTATUS when nobody answered.
fn combine_status(legs: &[Leg], timed_out: bool) -> &'static str {
    if timed_out {
        return "NOANSWER";
    }
    for s in ["BUSY", "CONGESTION", "NOANSWER", "CHANUNAVAIL"] {
        if legs.iter().any(|l| l.status == s) {
            return s;
        }
    }
    "CHANUNAVAIL"
}

fn dial<'a>(caller: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let a = split_args(args);
        let targets = a.first().cloned().unwrap_or_default();
        let timeout = a
            .get(1)
            .and_then(|t| t.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0);
        let opts = parse_options(a.get(2).map(|s| s.as_str()).unwrap_or(""));
        for v in [
            "DIALSTATUS",
            "DIALEDTIME",
            "ANSWEREDTIME",
            "DIALEDPEERNAME",
            "DIALEDPEERNUMBER",
        ] {
            caller.vars.remove(v);
        }
        if targets.trim().is_empty() {
            tracing::warn!("Dial requires an argument (technology/resource)");
            return AppResult::Hangup;
        }
        let start = Instant::now();
        let mut legs: Vec<Leg> = Vec::new();
        for ds in targets
            .split('&')
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            match caller.core.clone().request_channel(ds, Some(caller)) {
                Ok(mut ch) => {
                    ch.connected = caller.caller.clone();
                    let mut ev = Event::new("DialBegin", EventClass::Call).field(
                        "DialString",
                        ds.split_once('/').map(|x| x.1).unwrap_or("").to_string(),
                    );
                    ev.dest = Some(std::sync::Arc::new(ch.snapshot()));
                    caller.publish(ev);
                    ch.call(caller.caller.clone(), Vec::new());
                    caller.core.verbose_msg(3, &format!("    -- Called {}", ds));
                    legs.push(Leg {
                        chan: ch,
                        dialstring: ds.to_string(),
                        done: false,
                        status: "",
                    });
                }
                Err(e) => {
                    tracing::warn!(
                        "Unable to create channel of type '{}' (cause 66 - {}): {}",
                        ds,
                        cause_text(66),
                        e
                    );
                }
            }
        }
        if legs.is_empty() {
            pbx::set_var(caller, "DIALSTATUS", "CHANUNAVAIL");
            return AppResult::Continue;
        }
        if has_opt(&opts, 'r') || has_opt(&opts, 'm') {
            caller.indicate(Control::Ringing);
        }
        let deadline = timeout.map(|t| start + Duration::from_secs_f64(t));
        // Wait for an answer.
        let winner: Option<usize> = loop {
            if legs.iter().all(|l| l.done) {
                break None;
            }
            let (idx, ev) = {
                let mut futs: Vec<BoxFuture<'_, (usize, ReadEvent)>> = Vec::new();
                futs.push(Box::pin(async {
                    (usize::MAX, caller.read_until(deadline).await)
                }));
                for (i, l) in legs.iter_mut().enumerate() {
                    if !l.done {
                        futs.push(Box::pin(
                            async move { (i, l.chan.read_until(deadline).await) },
                        ));
                    }
                }
                futures_util::future::select_all(futs).await.0
            };
            if idx == usize::MAX {
                match ev {
                    ReadEvent::Hangup | ReadEvent::Interrupted => {
                        for l in legs.iter_mut().filter(|l| !l.done) {
                            l.done = true;
                            l.chan.hangup(16);
                        }
                        for l in &legs {
                            dial_end(caller, l, "CANCEL");
                        }
                        pbx::set_var(caller, "DIALSTATUS", "CANCEL");
                        return AppResult::Hangup;
                    }
                    ReadEvent::Timeout => {
                        for l in legs.iter_mut().filter(|l| !l.done) {
                            l.done = true;
                            l.status = "NOANSWER";
                            l.chan.hangup(19);
                        }
                        for l in &legs {
                            dial_end(caller, l, "NOANSWER");
                        }
                        pbx::set_var(caller, "DIALSTATUS", "NOANSWER");
                        pbx::set_var(caller, "DIALEDTIME", &start.elapsed().as_secs().to_string());
                        return AppResult::Continue;
                    }
                    _ => continue,
                }
            }
            let l = &mut legs[idx];
            match ev {
                ReadEvent::Control(Control::Answer) => break Some(idx),
                ReadEvent::Control(Control::Ringing)
                    if !has_opt(&opts, 'm') && !has_opt(&opts, 'r') =>
                {
                    caller.indicate(Control::Ringing);
                }
                ReadEvent::Control(Control::Progress) => caller.indicate(Control::Progress),
                ReadEvent::Control(Control::Busy) => {
                    l.done = true;
                    l.status = "BUSY";
                    l.chan.hangup(17);
                }
                ReadEvent::Control(Control::Congestion) => {
                    l.done = true;
                    l.status = "CONGESTION";
                    l.chan.hangup(34);
                }
                // Early media from the callee while it rings or is in progress.
                ReadEvent::Voice(f) if !has_opt(&opts, 'r') && !has_opt(&opts, 'm') => {
                    caller.write(&f)
                }
                ReadEvent::Hangup => {
                    l.done = true;
                    let cause = l.chan.hangup_cause;
                    l.status = match cause {
                        17 => "BUSY",
                        18 | 19 => "NOANSWER",
                        1 | 3 | 20 | 27 | 38 | 66 => "CHANUNAVAIL",
                        _ => "CONGESTION",
                    };
                    l.chan.hangup(cause);
                }
                _ => {}
            }
        };
        let Some(w) = winner else {
            let st = combine_status(&legs, false);
            for l in &legs {
                dial_end(caller, l, l.status);
            }
            pbx::set_var(caller, "DIALSTATUS", st);
            pbx::set_var(caller, "DIALEDTIME", &start.elapsed().as_secs().to_string());
            return AppResult::Continue;
        };
        let mut peer = legs.remove(w);
        for mut l in legs.drain(..) {
            if !l.done {
                l.chan.hangup(26);
                dial_end(caller, &l, "CANCEL");
            }
        }
        dial_end(caller, &peer, "ANSWER");
        caller.core.verbose_msg(
            3,
            &format!("    -- {} answered {}", peer.chan.name, caller.name),
        );
        let answered = Instant::now();
        pbx::set_var(caller, "DIALSTATUS", "ANSWER");
        pbx::set_var(caller, "DIALEDPEERNAME", &peer.chan.name.clone());
        pbx::set_var(
            caller,
            "DIALEDPEERNUMBER",
            peer.dialstring.split_once('/').map(|x| x.1).unwrap_or(""),
        );
        if caller.state != ChannelState::Up {
            caller.answer();
        }
        // U(context^exten^priority[^args]): run a subroutine on the callee before bridging.
        if let Some(u) = opt_arg(&opts, 'U') {
            let target = u.replace('^', ",");
            let (t, args) = pbx::split_gosub_target(&target);
            peer.chan.stack.clear();
            if pbx::gosub(&mut peer.chan, &t, &args, true) {
                pbx::run_segment(&mut peer.chan, 1000).await;
            }
            let status = peer
                .chan
                .vars
                .get("GOSUB_RESULT")
                .unwrap_or("")
                .to_uppercase();
            if status == "ABORT" || peer.chan.is_hungup() {
                peer.chan.hangup(16);
                pbx::set_var(caller, "DIALEDTIME", &start.elapsed().as_secs().to_string());
                pbx::set_var(caller, "ANSWEREDTIME", "0");
                return AppResult::Continue;
            }
        }
        // D(called:calling): DTMF after answer.
        if let Some(d) = opt_arg(&opts, 'D') {
            let mut parts = d.splitn(2, ':');
            let called = parts.next().unwrap_or("").to_string();
            let calling = parts.next().unwrap_or("").to_string();
            if !called.is_empty() {
                peer.chan.send_dtmf(&called, 250).await;
            }
            if !calling.is_empty() {
                caller.send_dtmf(&calling, 250).await;
            }
        }
        // L(x[:y]): limit in ms.
        let limit = opt_arg(&opts, 'L')
            .and_then(|l| {
                l.split(':')
                    .next()
                    .and_then(|x| x.trim().parse::<u64>().ok())
            })
            .map(Duration::from_millis);
        // G(context^exten^priority): both legs go to the dialplan instead of bridging.
        if let Some(g) = opt_arg(&opts, 'G') {
            let parts: Vec<&str> = g.split('^').collect();
            let (ctx, ext, pri) = match parts.len() {
                1 => (
                    caller.context.clone(),
                    caller.exten.clone(),
                    parts[0].parse().unwrap_or(1),
                ),
                2 => (
                    caller.context.clone(),
                    parts[0].to_string(),
                    parts[1].parse().unwrap_or(1),
                ),
                _ => (
                    parts[0].to_string(),
                    parts[1].to_string(),
                    parts[2].parse().unwrap_or(1),
                ),
            };
            pbx::spawn(peer.chan, &ctx, &ext, pri + 1);
            caller.context = ctx;
            caller.exten = ext;
            caller.priority = pri;
            caller.jumped = true;
            return AppResult::Continue;
        }
        let side = bridge::two_party(caller, &mut peer.chan, &BridgeOpts { limit }).await;
        pbx::set_var(caller, "DIALEDTIME", &start.elapsed().as_secs().to_string());
        pbx::set_var(
            caller,
            "ANSWEREDTIME",
            &answered.elapsed().as_secs().to_string(),
        );
        // A redirected callee gets its own PBX; otherwise it is hung up.
        if let Some((c, e, p)) = peer.chan.take_pending_goto() {
            pbx::spawn(peer.chan, &c, &e, p);
        } else {
            peer.chan.hangup(16);
        }
        match side {
            Side::A => AppResult::Hangup,
            Side::Limit => {
                if has_opt(&opts, 'g') {
                    AppResult::Continue
                } else {
                    caller.soft_hangup(16);
                    AppResult::Hangup
                }
            }
            Side::B => {
                if has_opt(&opts, 'g') {
                    AppResult::Continue
                } else {
                    caller.soft_hangup(16);
                    AppResult::Hangup
                }
            }
        }
    })
}

/// Bridge(channel[,options]): take over another channel and bridge it with this one.
fn bridge_app<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let a = split_args(args);
        let name = a.first().cloned().unwrap_or_default();
        let opts = parse_options(a.get(1).map(|s| s.as_str()).unwrap_or(""));
        let Some((h, _)) = chan.core.channels.find(name.trim()) else {
            tracing::warn!("Bridge: channel {} not found", name);
            pbx::set_var(chan, "BRIDGERESULT", "NONEXISTENT");
            return AppResult::Continue;
        };
        if h.id == chan.id {
            pbx::set_var(chan, "BRIDGERESULT", "LOOP");
            return AppResult::Continue;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        h.send(ChanCtl::TakeOver(tx));
        let mut other = match tokio::time::timeout(Duration::from_secs(5), rx).await {
            Ok(Ok(c)) => c,
            _ => {
                pbx::set_var(chan, "BRIDGERESULT", "FAILURE");
                return AppResult::Continue;
            }
        };
        if chan.state != ChannelState::Up {
            chan.answer();
        }
        if other.state != ChannelState::Up {
            other.answer();
        }
        pbx::set_var(chan, "BRIDGERESULT", "SUCCESS");
        let side = bridge::two_party(chan, &mut other, &BridgeOpts::default()).await;
        if let Some((c, e, p)) = other.take_pending_goto() {
            pbx::spawn(other, &c, &e, p);
        } else if side == Side::A && has_opt(&opts, 'F') {
            let (c, e, p) = (
                other.context.clone(),
                other.exten.clone(),
                other.priority + 1,
            );
            pbx::spawn(other, &c, &e, p);
        } else {
            other.hangup(16);
        }
        if side == Side::A {
            AppResult::Hangup
        } else {
            AppResult::Continue
        }
    })
}
