//! Contact qualification (`qualify_frequency` on an aor), sans-IO: every contact is
//! sent an OPTIONS every `frequency`; any response within `qualify_timeout` (default
//! 3 s, as Asterisk) makes it Reachable with the round-trip time, no response or a
//! transport error Unreachable. The shell sends the OPTIONS [`Qualifier::poll_due`]
//! asks for, reports [`Qualifier::on_response`] / [`Qualifier::on_failure`], and wakes
//! at [`Qualifier::poll_timeout`]; status changes come back as [`StatusChange`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Asterisk's default `qualify_timeout`.
pub const DEFAULT_QUALIFY_TIMEOUT: Duration = Duration::from_secs(3);

/// A contact's reachability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactStatus {
    Unknown,
    Reachable,
    Unreachable,
}

impl ContactStatus {
    /// The AMI `ContactStatus` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ContactStatus::Unknown => "Unknown",
            ContactStatus::Reachable => "Reachable",
            ContactStatus::Unreachable => "Unreachable",
        }
    }
    /// The `pjsip show contacts` status column.
    pub fn cli(self) -> &'static str {
        match self {
            ContactStatus::Unknown => "Unknown",
            ContactStatus::Reachable => "Avail",
            ContactStatus::Unreachable => "Unavail",
        }
    }
}

/// A contact to qualify: its identity (aor + uri), its endpoint and where to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifyTarget {
    pub aor: String,
    pub endpoint: String,
    pub uri: String,
    pub dest: SocketAddr,
    pub frequency: Duration,
    pub timeout: Duration,
}

/// The state of one qualified contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactState {
    pub target: QualifyTarget,
    pub status: ContactStatus,
    pub rtt: Option<Duration>,
    next_at: Instant,
    /// When the outstanding OPTIONS was sent.
    pending: Option<Instant>,
}

impl ContactState {
    /// Whether an OPTIONS to it is outstanding.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }
}

/// A reachability change, to publish as a `ContactStatus` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub aor: String,
    pub endpoint: String,
    pub uri: String,
    pub status: ContactStatus,
    pub rtt: Option<Duration>,
}

/// Key of a contact: (aor, uri).
pub type ContactKey = (String, String);

/// All qualified contacts.
#[derive(Debug, Default)]
pub struct Qualifier {
    contacts: HashMap<ContactKey, ContactState>,
}

impl Qualifier {
    pub fn new() -> Qualifier {
        Qualifier::default()
    }

    /// Make the set of qualified contacts `targets`: new ones are due now, missing
    /// ones are dropped, changed destinations/frequencies are updated in place.
    pub fn sync(&mut self, now: Instant, targets: Vec<QualifyTarget>) {
        let mut keep = std::collections::HashSet::new();
        for t in targets {
            if t.frequency.is_zero() {
                continue;
            }
            let key = (t.aor.clone(), t.uri.clone());
            keep.insert(key.clone());
            match self.contacts.get_mut(&key) {
                Some(c) => c.target = t,
                None => {
                    self.contacts.insert(
                        key,
                        ContactState {
                            target: t,
                            status: ContactStatus::Unknown,
                            rtt: None,
                            next_at: now,
                            pending: None,
                        },
                    );
                }
            }
        }
        self.contacts.retain(|k, _| keep.contains(k));
    }

    /// The next contact to send an OPTIONS to now, if any (marks it outstanding).
    pub fn poll_due(&mut self, now: Instant) -> Option<(ContactKey, QualifyTarget)> {
        let (key, c) = self
            .contacts
            .iter_mut()
            .find(|(_, c)| c.pending.is_none() && c.next_at <= now)?;
        c.pending = Some(now);
        c.next_at = now + c.target.frequency;
        Some((key.clone(), c.target.clone()))
    }

    fn set(
        &mut self,
        key: &ContactKey,
        status: ContactStatus,
        rtt: Option<Duration>,
    ) -> Option<StatusChange> {
        let c = self.contacts.get_mut(key)?;
        c.pending = None;
        c.rtt = rtt;
        if c.status == status {
            return None;
        }
        c.status = status;
        Some(StatusChange {
            aor: c.target.aor.clone(),
            endpoint: c.target.endpoint.clone(),
            uri: c.target.uri.clone(),
            status,
            rtt,
        })
    }

    /// Any final response to the OPTIONS: Reachable, with the round trip time. A
    /// response after the qualify timeout (or for no outstanding OPTIONS) is ignored.
    pub fn on_response(&mut self, now: Instant, key: &ContactKey) -> Option<StatusChange> {
        let sent = self.contacts.get(key)?.pending?;
        self.set(
            key,
            ContactStatus::Reachable,
            Some(now.saturating_duration_since(sent)),
        )
    }

    /// The OPTIONS failed (transport error, transaction timeout): Unreachable.
    pub fn on_failure(&mut self, key: &ContactKey) -> Option<StatusChange> {
        self.contacts.get(key)?.pending?;
        self.set(key, ContactStatus::Unreachable, None)
    }

    /// Time out outstanding OPTIONS older than their qualify timeout.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<StatusChange> {
        let late: Vec<ContactKey> = self
            .contacts
            .iter()
            .filter(|(_, c)| c.pending.is_some_and(|s| now >= s + c.target.timeout))
            .map(|(k, _)| k.clone())
            .collect();
        late.iter().filter_map(|k| self.on_failure(k)).collect()
    }

    /// When to call [`Qualifier::poll_due`] / [`Qualifier::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.contacts
            .values()
            .map(|c| match c.pending {
                Some(s) => s + c.target.timeout,
                None => c.next_at,
            })
            .min()
    }

    /// The state of a contact.
    pub fn get(&self, aor: &str, uri: &str) -> Option<&ContactState> {
        self.contacts.get(&(aor.to_string(), uri.to_string()))
    }

    /// All contacts, sorted by (aor, uri).
    pub fn all(&self) -> Vec<&ContactState> {
        let mut v: Vec<&ContactState> = self.contacts.values().collect();
        v.sort_by(|a, b| (&a.target.aor, &a.target.uri).cmp(&(&b.target.aor, &b.target.uri)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> QualifyTarget {
        QualifyTarget {
            aor: "alice".into(),
            endpoint: "alice".into(),
            uri: uri.into(),
            dest: "127.0.0.1:5070".parse().unwrap(),
            frequency: Duration::from_secs(10),
            timeout: DEFAULT_QUALIFY_TIMEOUT,
        }
    }

    #[test]
    fn reachable_then_unreachable_on_fake_clock() {
        let t0 = Instant::now();
        let mut q = Qualifier::new();
        q.sync(t0, vec![target("sip:a@x")]);
        assert_eq!(q.poll_timeout(), Some(t0));
        let (key, t) = q.poll_due(t0).unwrap();
        assert_eq!(t.uri, "sip:a@x");
        assert!(
            q.poll_due(t0).is_none(),
            "one outstanding OPTIONS at a time"
        );
        assert_eq!(q.poll_timeout(), Some(t0 + Duration::from_secs(3)));
        let ch = q.on_response(t0 + Duration::from_millis(12), &key).unwrap();
        assert_eq!(ch.status, ContactStatus::Reachable);
        assert_eq!(ch.rtt, Some(Duration::from_millis(12)));
        // Next round at t0 + 10 s.
        assert_eq!(q.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        assert!(q.poll_due(t0 + Duration::from_secs(9)).is_none());
        let t1 = t0 + Duration::from_secs(10);
        q.poll_due(t1).unwrap();
        // Still reachable with a new RTT: no change event, RTT updated.
        assert!(q.on_response(t1 + Duration::from_millis(5), &key).is_none());
        assert_eq!(
            q.get("alice", "sip:a@x").unwrap().rtt,
            Some(Duration::from_millis(5))
        );
        // No answer within 3 s: Unreachable; a late answer is ignored.
        let t2 = t0 + Duration::from_secs(20);
        q.poll_due(t2).unwrap();
        assert!(q
            .handle_timeout(t2 + Duration::from_millis(2999))
            .is_empty());
        let ch = q.handle_timeout(t2 + Duration::from_secs(3));
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].status, ContactStatus::Unreachable);
        assert!(q.on_response(t2 + Duration::from_secs(4), &key).is_none());
        assert_eq!(
            q.get("alice", "sip:a@x").unwrap().status,
            ContactStatus::Unreachable
        );
    }

    #[test]
    fn sync_adds_and_removes() {
        let t0 = Instant::now();
        let mut q = Qualifier::new();
        q.sync(t0, vec![target("sip:a@x"), target("sip:b@x")]);
        assert_eq!(q.all().len(), 2);
        let (k, _) = q.poll_due(t0).unwrap();
        q.on_failure(&k).unwrap();
        q.sync(t0, vec![target("sip:a@x")]);
        assert_eq!(q.all().len(), 1);
        let mut zero = target("sip:c@x");
        zero.frequency = Duration::ZERO;
        q.sync(t0, vec![zero]);
        assert!(q.all().is_empty());
        assert!(q.poll_timeout().is_none());
        assert!(q.on_failure(&k).is_none());
    }
}
