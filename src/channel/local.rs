//! Local channels: `Local/exten@context[/n]`, a pair of halves joined by media. `;1` is returned
//! to the requester (Dial, Originate); `;2` runs the dialplan at `exten@context` once called.

use super::{ChanMsg, Channel, Control, ReadEvent};
use crate::core::{Core, Technology};
use crate::media::Format;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

pub struct LocalTech;

static SEQ: AtomicU32 = AtomicU32::new(1);

impl Technology for LocalTech {
    fn name(&self) -> &'static str {
        "Local"
    }

    fn request(
        &self,
        core: &Arc<Core>,
        data: &str,
        _requestor: Option<&Channel>,
    ) -> Result<Channel, String> {
        let dest = data.split('/').next().unwrap_or("");
        let (exten, context) = match dest.split_once('@') {
            Some((e, c)) => (e.to_string(), c.to_string()),
            None => (dest.to_string(), "default".to_string()),
        };
        if exten.is_empty() {
            return Err(format!(
                "invalid Local channel '{data}': expected exten@context"
            ));
        }
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let base = format!("Local/{}@{}-{:08x}", exten, context, seq);
        let (one, l2) = Channel::alloc(core, format!("{base};1"), "Local", Format::Slin8);
        let mut two = Channel::new(core, format!("{base};2"), l2);
        two.linkedid = one.linkedid.clone();
        two.dnid = exten.clone();
        tokio::spawn(async move {
            // Wait for the requester to place the call, then run the dialplan.
            loop {
                match two.read().await {
                    ReadEvent::Control(Control::Call { caller, vars }) => {
                        two.caller = caller.clone();
                        two.connected = caller;
                        for (k, v) in vars {
                            two.vars.set(&k, &v);
                        }
                        break;
                    }
                    ReadEvent::Hangup => return,
                    _ => {}
                }
            }
            // The ;1 side rings while ;2 runs its dialplan.
            let _ = two.link_tx().try_send(ChanMsg::Control(Control::Ringing));
            crate::dialplan::pbx::spawn(two, &context, &exten, 1);
        });
        Ok(one)
    }
}
