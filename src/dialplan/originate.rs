//! Originate: place a call and, once answered, send it to an extension or an application.
//! Used by the CLI (`channel originate`), AMI Originate, call files and the Originate app.

use crate::channel::{Channel, ChannelState, Control, ReadEvent};
use crate::core::{Core, OriginateFailure, OriginateReq, OriginateTarget};
use crate::events::{Event, EventClass};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Result of a successful originate: the channel name and unique id.
#[derive(Debug, Clone)]
pub struct Originated {
    pub channel: String,
    pub uniqueid: String,
}

/// `DialString` of a dial event: what follows `Tech/` (Asterisk's `channel->device`).
fn dial_string(dial: &str) -> &str {
    dial.split_once('/').map(|x| x.1).unwrap_or("")
}

/// DIALSTATUS for an outbound leg that hung up before answering (as Dial() maps it).
fn status_for_cause(cause: i32) -> &'static str {
    match cause {
        17 => "BUSY",
        18 | 19 => "NOANSWER",
        1 | 3 | 20 | 27 | 38 | 66 => "CHANUNAVAIL",
        _ => "CONGESTION",
    }
}

/// Publish `DialBegin` (`DialString`) or `DialEnd` (`DialStatus`) for an originated channel.
/// Like Asterisk's dial API with no calling channel (`ast_channel_publish_dial(NULL, peer, ..)`),
/// the event carries only the `Dest*` snapshot of the outbound channel, then the same fields
/// Dial() sends.
fn publish_dial(chan: &Channel, name: &'static str, key: &'static str, value: &str) {
    let mut ev = Event::new(name, EventClass::Call).field(key, value.to_string());
    ev.dest = Some(Arc::new(chan.snapshot()));
    chan.core.bus.publish(ev);
}

/// Place the call, wait up to `timeout_ms` for an answer, then start the target in its own task.
/// Publishes `DialBegin` once the channel is called and `DialEnd` with the outcome.
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
    publish_dial(&chan, "DialBegin", "DialString", dial_string(&req.channel));
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
                publish_dial(&chan, "DialEnd", "DialStatus", "BUSY");
                chan.hangup(17);
                return Err(OriginateFailure {
                    reason: 5,
                    message: "busy".into(),
                });
            }
            ReadEvent::Control(Control::Congestion) => {
                publish_dial(&chan, "DialEnd", "DialStatus", "CONGESTION");
                chan.hangup(34);
                return Err(OriginateFailure {
                    reason: 8,
                    message: "congestion".into(),
                });
            }
            ReadEvent::Hangup => {
                let cause = chan.hangup_cause;
                publish_dial(&chan, "DialEnd", "DialStatus", status_for_cause(cause));
                chan.hangup(cause);
                return Err(OriginateFailure {
                    reason: 1,
                    message: format!("hangup (cause {})", cause),
                });
            }
            ReadEvent::Timeout => {
                publish_dial(&chan, "DialEnd", "DialStatus", "NOANSWER");
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
    publish_dial(&chan, "DialEnd", "DialStatus", "ANSWER");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{CallerId, ChanMsg, TechLink};
    use crate::core::Technology;
    use parking_lot::Mutex;

    /// A technology whose far ends the test drives.
    #[derive(Default)]
    struct FarEnd {
        links: Mutex<Vec<TechLink>>,
    }

    impl Technology for FarEnd {
        fn name(&self) -> &'static str {
            "Far"
        }
        fn request(
            &self,
            core: &Arc<Core>,
            data: &str,
            _requestor: Option<&Channel>,
        ) -> Result<Channel, String> {
            let (chan, theirs) = Channel::alloc(
                core,
                format!("Far/{data}-1"),
                "Far",
                crate::media::Format::Slin8,
            );
            self.links.lock().push(theirs);
            Ok(chan)
        }
    }

    fn setup() -> (tempfile::TempDir, Arc<Core>, Arc<FarEnd>) {
        let dir = tempfile::tempdir().unwrap();
        let (dirs, options) = crate::runtime::read_main_conf(dir.path()).unwrap();
        let core = Core::new(dirs, options, crate::dialplan::Dialplan::default());
        let far = Arc::new(FarEnd::default());
        core.register_tech(far.clone());
        (dir, core, far)
    }

    fn req(timeout_ms: u64) -> OriginateReq {
        OriginateReq {
            channel: "Far/alice".into(),
            target: OriginateTarget::App {
                app: "NoSuchAppForTest".into(),
                data: String::new(),
            },
            timeout_ms,
            caller: CallerId::default(),
            vars: Vec::new(),
            account: String::new(),
        }
    }

    /// The DialBegin/DialEnd events published so far, as (name, DestChannel, field).
    fn dial_events(sub: &mut crate::events::Subscription) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        while let Ok(ev) = sub.rx.try_recv() {
            let key = match ev.name.as_ref() {
                "DialBegin" => "DialString",
                "DialEnd" => "DialStatus",
                _ => continue,
            };
            assert!(ev.channel.is_none(), "originate has no calling channel");
            let dest = ev.dest.as_ref().map(|d| d.name.clone()).unwrap_or_default();
            out.push((
                ev.name.to_string(),
                dest,
                ev.get(key).unwrap_or("").to_string(),
            ));
        }
        out
    }

    async fn far_link(far: &FarEnd) -> TechLink {
        for _ in 0..200 {
            if let Some(l) = far.links.lock().pop() {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("channel never requested");
    }

    #[tokio::test]
    async fn answered_originate_publishes_dial_begin_and_end() {
        let (_d, core, far) = setup();
        let mut sub = core.bus.subscribe(1024);
        let c = core.clone();
        let task = tokio::spawn(async move { originate(&c, req(5000)).await });
        let link = far_link(&far).await;
        link.tx
            .send(ChanMsg::Control(Control::Answer))
            .await
            .unwrap();
        let out = task.await.unwrap().expect("answered");
        assert_eq!(out.channel, "Far/alice-1");
        assert_eq!(
            dial_events(&mut sub),
            vec![
                ("DialBegin".into(), "Far/alice-1".into(), "alice".into()),
                ("DialEnd".into(), "Far/alice-1".into(), "ANSWER".into()),
            ]
        );
    }

    #[tokio::test]
    async fn busy_and_unanswered_originates_publish_dial_status() {
        let (_d, core, far) = setup();
        let mut sub = core.bus.subscribe(1024);
        let c = core.clone();
        let task = tokio::spawn(async move { originate(&c, req(5000)).await });
        let link = far_link(&far).await;
        link.tx.send(ChanMsg::Control(Control::Busy)).await.unwrap();
        assert_eq!(task.await.unwrap().unwrap_err().reason, 5);
        let ev = dial_events(&mut sub);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(
            ev[1],
            ("DialEnd".into(), "Far/alice-1".into(), "BUSY".into())
        );

        let err = originate(&core, req(50)).await.unwrap_err();
        assert_eq!(err.reason, 3);
        let ev = dial_events(&mut sub);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(ev[0].0, "DialBegin");
        assert_eq!(ev[1].2, "NOANSWER");
        assert_eq!(status_for_cause(17), "BUSY");
        assert_eq!(status_for_cause(20), "CHANUNAVAIL");
        assert_eq!(dial_string("Local/100@default"), "100@default");
    }
}
