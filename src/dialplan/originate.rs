//! Originate: place a call and, once answered, send it to an extension or an application.
//! Used by the CLI (`channel originate`), AMI Originate, call files and the Originate app.

use crate::channel::{ChannelState, Control, ReadEvent};
use crate::core::{Core, OriginateFailure, OriginateReq, OriginateTarget};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Result of a successful originate: the channel name and unique id.
#[derive(Debug, Clone)]
pub struct Originated {
    pub channel: String,
    pub uniqueid: String,
}

/// Place the call, wait up to `timeout_ms` for an answer, then start the target in its own task.
pub async fn originate(
    core: &Arc<Core>,
    req: OriginateReq,
) -> Result<Originated, OriginateFailure> {
    let mut chan = core
        .request_channel(&req.channel, None)
        .map_err(|m| OriginateFailure {
            reason: 0,
            message: m,
        })?;
    for (k, v) in &req.vars {
        crate::dialplan::pbx::set_var(&mut chan, k, v);
    }
    if !req.account.is_empty() {
        chan.account_code = req.account.clone();
    }
    chan.set_caller(req.caller.clone());
    chan.call(req.caller.clone(), Vec::new());
    let timeout = if req.timeout_ms == 0 {
        30_000
    } else {
        req.timeout_ms
    };
    let deadline = Instant::now() + Duration::from_millis(timeout);
    loop {
        match chan.read_until(Some(deadline)).await {
            ReadEvent::Control(Control::Answer) => break,
            ReadEvent::Control(Control::Busy) => {
                chan.hangup(17);
                return Err(OriginateFailure {
                    reason: 5,
                    message: "busy".into(),
                });
            }
            ReadEvent::Control(Control::Congestion) => {
                chan.hangup(34);
                return Err(OriginateFailure {
                    reason: 8,
                    message: "congestion".into(),
                });
            }
            ReadEvent::Hangup => {
                let cause = chan.hangup_cause;
                chan.hangup(cause);
                return Err(OriginateFailure {
                    reason: 1,
                    message: format!("hangup (cause {})", cause),
                });
            }
            ReadEvent::Timeout => {
                chan.hangup(19);
                return Err(OriginateFailure {
                    reason: 3,
                    message: "no answer".into(),
                });
            }
            _ => {}
        }
        if chan.state == ChannelState::Up {
            break;
        }
    }
    let out = Originated {
        channel: chan.name.clone(),
        uniqueid: chan.uniqueid.clone(),
    };
    match req.target {
        OriginateTarget::Exten {
            context,
            exten,
            priority,
        } => {
            crate::dialplan::pbx::spawn(chan, &context, &exten, priority);
        }
        OriginateTarget::App { app, data } => {
            tokio::spawn(async move {
                let mut chan = chan;
                chan.context = "default".into();
                chan.exten = "s".into();
                if crate::dialplan::pbx::exec_app(&mut chan, &app, &data)
                    .await
                    .is_none()
                {
                    tracing::warn!("originate: no application '{}'", app);
                }
                chan.hangup(16);
            });
        }
    }
    Ok(out)
}
