//! The event bus: typed events, ordered per channel, bounded per-subscriber queues.
//!
//! Every channel event carries the channel's own sequence number (`chan_seq`), assigned by the
//! task that owns the channel, so consumers can order one channel's events even though Asterisk
//! promises no order. Subscribers get a bounded queue: a slow AMI/ARI client never stalls a call;
//! what does not fit is dropped and counted, and the subscriber can read and report the count.

use parking_lot::RwLock;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;

/// AMI permission class of an event (also used to filter for other consumers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventClass {
    System,
    Call,
    Log,
    Verbose,
    Command,
    Agent,
    User,
    Config,
    Dtmf,
    Reporting,
    Cdr,
    Dialplan,
    Originate,
    Agi,
    Speech,
}

impl EventClass {
    pub fn as_str(self) -> &'static str {
        match self {
            EventClass::System => "system",
            EventClass::Call => "call",
            EventClass::Log => "log",
            EventClass::Verbose => "verbose",
            EventClass::Command => "command",
            EventClass::Agent => "agent",
            EventClass::User => "user",
            EventClass::Config => "config",
            EventClass::Dtmf => "dtmf",
            EventClass::Reporting => "reporting",
            EventClass::Cdr => "cdr",
            EventClass::Dialplan => "dialplan",
            EventClass::Originate => "originate",
            EventClass::Agi => "agi",
            // Speech events are call-related in AMI terms.
            EventClass::Speech => "call",
        }
    }
}

/// What a channel looked like when the event was raised (AMI's channel snapshot fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelSnapshot {
    pub name: String,
    pub state: u8,
    pub state_desc: &'static str,
    pub caller_num: String,
    pub caller_name: String,
    pub connected_num: String,
    pub connected_name: String,
    pub language: String,
    pub account_code: String,
    pub context: String,
    pub exten: String,
    pub priority: i32,
    pub uniqueid: String,
    pub linkedid: String,
    /// Application and data running now (for CoreShowChannels / Status).
    pub app: String,
    pub app_data: String,
    /// When the channel was created (for durations).
    pub created: Option<std::time::Instant>,
    /// Name of the channel this one is bridged to, if any.
    pub bridged_to: Option<String>,
}

/// One event on the bus.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: Cow<'static, str>,
    pub class: EventClass,
    /// Global order of publication.
    pub seq: u64,
    /// Sequence number within the channel's own events (when `channel` is set).
    pub chan_seq: Option<u64>,
    pub time: SystemTime,
    pub channel: Option<Arc<ChannelSnapshot>>,
    /// Second party (DialBegin's `Dest*`, bridges' peer).
    pub dest: Option<Arc<ChannelSnapshot>>,
    /// Event-specific fields, in order.
    pub fields: Vec<(Cow<'static, str>, String)>,
}

impl Event {
    pub fn new(name: impl Into<Cow<'static, str>>, class: EventClass) -> Event {
        Event {
            name: name.into(),
            class,
            seq: 0,
            chan_seq: None,
            time: SystemTime::now(),
            channel: None,
            dest: None,
            fields: Vec::new(),
        }
    }
    pub fn field(mut self, k: impl Into<Cow<'static, str>>, v: impl Into<String>) -> Event {
        self.fields.push((k.into(), v.into()));
        self
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<Event>>,
    dropped: Arc<AtomicU64>,
}

/// A subscription: a bounded queue of events plus the count of events dropped because it was full.
pub struct Subscription {
    pub id: u64,
    pub rx: mpsc::Receiver<Arc<Event>>,
    pub dropped: Arc<AtomicU64>,
    bus: Arc<BusInner>,
}

impl Subscription {
    /// Events dropped since the last call (and resets the counter).
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus.subs.write().retain(|s| s.id != self.id);
    }
}

#[derive(Default)]
struct BusInner {
    subs: RwLock<Vec<Subscriber>>,
    next_id: AtomicU64,
    seq: AtomicU64,
    published: AtomicU64,
    dropped_total: AtomicU64,
}

/// The bus. Cheap to clone.
#[derive(Clone, Default)]
pub struct Bus {
    inner: Arc<BusInner>,
}

impl Bus {
    pub fn new() -> Bus {
        Bus::default()
    }
    /// Subscribe with a queue of `capacity` events.
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicU64::new(0));
        self.inner.subs.write().push(Subscriber {
            id,
            tx,
            dropped: dropped.clone(),
        });
        Subscription {
            id,
            rx,
            dropped,
            bus: self.inner.clone(),
        }
    }
    /// Publish; never blocks. Full subscriber queues drop the event and count it.
    pub fn publish(&self, mut ev: Event) {
        ev.seq = self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let ev = Arc::new(ev);
        for s in self.inner.subs.read().iter() {
            if s.tx.try_send(ev.clone()).is_err() {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                self.inner.dropped_total.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    pub fn stats(&self) -> (u64, u64, usize) {
        (
            self.inner.published.load(Ordering::Relaxed),
            self.inner.dropped_total.load(Ordering::Relaxed),
            self.inner.subs.read().len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slow_subscriber_drops_and_counts() {
        let bus = Bus::new();
        let mut fast = bus.subscribe(100);
        let slow = bus.subscribe(2);
        for i in 0..5 {
            bus.publish(Event::new("Test", EventClass::User).field("N", i.to_string()));
        }
        assert_eq!(slow.take_dropped(), 3);
        assert_eq!(slow.take_dropped(), 0);
        for i in 0..5 {
            let e = fast.rx.recv().await.unwrap();
            assert_eq!(e.get("N"), Some(i.to_string().as_str()));
            assert_eq!(e.seq, i as u64 + 1);
        }
    }

    #[test]
    fn unsubscribe_on_drop() {
        let bus = Bus::new();
        let s = bus.subscribe(1);
        assert_eq!(bus.stats().2, 1);
        drop(s);
        assert_eq!(bus.stats().2, 0);
    }
}
