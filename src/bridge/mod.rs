//! Bridges: a two-party bridge run by the task that owns both legs (frames relayed without
//! transcoding when formats match), and mixing bridges for conferences (`mixing`).

pub mod mixing;

use crate::channel::{Channel, Control, ReadEvent};
use crate::events::{Event, EventClass};
use std::time::{Duration, Instant};

static NEXT_BRIDGE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Which leg ended the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
    /// The time limit (Dial's L option) ran out.
    Limit,
}

#[derive(Debug, Clone, Default)]
pub struct BridgeOpts {
    /// Maximum call duration.
    pub limit: Option<Duration>,
}

fn bridge_event(name: &'static str, id: &str, n: usize) -> Event {
    Event::new(name, EventClass::Call)
        .field("BridgeUniqueid", id.to_string())
        .field("BridgeType", "basic")
        .field("BridgeTechnology", "simple_bridge")
        .field("BridgeCreator", "<unknown>")
        .field("BridgeName", "<unknown>")
        .field("BridgeNumChannels", n.to_string())
        .field("BridgeVideoSourceMode", "none")
}

/// Relay media, DTMF and indications between two legs until one hangs up (or must return).
/// Both legs stay owned by the caller of this function.
pub async fn two_party(a: &mut Channel, b: &mut Channel, opts: &BridgeOpts) -> Side {
    let id = format!(
        "{:08x}-bridge-{}",
        a.core.start_epoch as u32,
        NEXT_BRIDGE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    a.core.bus.publish(bridge_event("BridgeCreate", &id, 0));
    a.bridged_to = Some(b.name.clone());
    b.bridged_to = Some(a.name.clone());
    a.publish(bridge_event("BridgeEnter", &id, 1));
    b.publish(bridge_event("BridgeEnter", &id, 2));
    let deadline = opts.limit.map(|l| Instant::now() + l);
    let ended = loop {
        let (side, ev) = tokio::select! {
            ev = a.read_until(deadline) => (Side::A, ev),
            ev = b.read_until(deadline) => (Side::B, ev),
        };
        let (from, to) = match side {
            Side::A => (&mut *a, &mut *b),
            _ => (&mut *b, &mut *a),
        };
        match ev {
            ReadEvent::Voice(f) => to.write(&f),
            ReadEvent::DtmfBegin(d) => to.send_dtmf_begin(d),
            ReadEvent::Dtmf(d) => to.send_dtmf_end(d, 100),
            ReadEvent::Control(c) => match c {
                Control::Hold | Control::Unhold | Control::SrcUpdate => to.indicate(c),
                Control::ConnectedLine(cid) => {
                    to.indicate(Control::ConnectedLine(cid));
                }
                _ => {}
            },
            ReadEvent::Hangup | ReadEvent::Interrupted => break side,
            ReadEvent::Timeout => break Side::Limit,
            ReadEvent::StreamDone => {
                let _ = from;
            }
        }
    };
    a.bridged_to = None;
    b.bridged_to = None;
    a.publish(bridge_event("BridgeLeave", &id, 1));
    b.publish(bridge_event("BridgeLeave", &id, 0));
    a.core.bus.publish(bridge_event("BridgeDestroy", &id, 0));
    ended
}
