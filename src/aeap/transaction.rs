//! AEAP request/response transactions (sans-IO, told the time). Shared by the client and the
//! server. Mirrors `transaction.c` / `aeap.c` (spec A.4):
//! * every request we originate gets a fresh UUID id and a deadline (Asterisk: 1000 ms);
//! * an incoming **response** whose id matches an outstanding request ends that transaction:
//!   [`Event::Response`], or [`Event::Failed`] when it carries `error_msg`;
//! * a response that matches nothing (late, after its timeout, or unknown) is reported as
//!   [`Event::Unmatched`] for the caller to ignore (Asterisk dispatches it with a NULL object;
//!   ignoring it is the safe version of that);
//! * an incoming request is [`Event::Request`], unless it carries `error_msg`: such messages
//!   never reach a handler ([`Event::PeerError`]);
//! * undecodable text is [`Event::Invalid`]: the caller drops it silently, except
//!   [`DecodeError::TooLarge`], which means disconnect.

use super::message::{self, DecodeError, Json, Kind, Message};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Asterisk's per-request timeout (`speech_aeap_send_request`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A non-error response to our request `request` (its name; compare with `msg.name`).
    Response {
        id: String,
        request: String,
        msg: Message,
    },
    /// The peer answered our request with `error_msg`.
    Failed {
        id: String,
        request: String,
        error: String,
    },
    /// A request from the peer, to be handled and answered.
    Request(Message),
    /// A message with `error_msg` that matched no transaction; never handled.
    PeerError {
        kind: Kind,
        name: String,
        id: String,
        error: String,
    },
    /// A response matching no outstanding request (late or unknown id).
    Unmatched(Message),
    /// Our request `name` got no answer in time.
    Timeout { id: String, name: String },
    /// Text that is not an AEAP message.
    Invalid(DecodeError),
}

#[derive(Debug, Clone)]
struct Pending {
    name: String,
    deadline: Instant,
}

/// Outstanding requests of one connection.
#[derive(Debug, Clone)]
pub struct Transactions {
    timeout: Duration,
    pending: HashMap<String, Pending>,
}

impl Default for Transactions {
    fn default() -> Self {
        Transactions::new(DEFAULT_TIMEOUT)
    }
}

impl Transactions {
    pub fn new(timeout: Duration) -> Transactions {
        Transactions {
            timeout,
            pending: HashMap::new(),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Start a request with the default timeout. Returns its id and the text to send.
    pub fn send_request(
        &mut self,
        now: Instant,
        name: &str,
        body: &[(String, Json)],
    ) -> (String, String) {
        self.send_request_with_timeout(now, name, body, self.timeout)
    }

    pub fn send_request_with_timeout(
        &mut self,
        now: Instant,
        name: &str,
        body: &[(String, Json)],
        timeout: Duration,
    ) -> (String, String) {
        let id = message::new_id();
        let text = message::encode_request(name, &id, body);
        self.pending.insert(
            id.clone(),
            Pending {
                name: name.to_string(),
                deadline: now + timeout,
            },
        );
        (id, text)
    }

    /// Feed one received text frame.
    pub fn handle_text(&mut self, now: Instant, text: &str) -> Vec<Event> {
        let mut events = self.handle_timeout(now);
        match message::decode(text) {
            Err(e) => events.push(Event::Invalid(e)),
            Ok(msg) => events.push(self.handle_message(msg)),
        }
        events
    }

    /// Feed one already-decoded message.
    pub fn handle_message(&mut self, msg: Message) -> Event {
        match msg.kind {
            Kind::Response => match self.pending.remove(&msg.id) {
                Some(p) => match msg.error_msg {
                    Some(error) => Event::Failed {
                        id: msg.id,
                        request: p.name,
                        error,
                    },
                    None => Event::Response {
                        id: msg.id.clone(),
                        request: p.name,
                        msg,
                    },
                },
                None => match msg.error_msg {
                    Some(error) => Event::PeerError {
                        kind: msg.kind,
                        name: msg.name,
                        id: msg.id,
                        error,
                    },
                    None => Event::Unmatched(msg),
                },
            },
            Kind::Request => match msg.error_msg {
                Some(error) => Event::PeerError {
                    kind: msg.kind,
                    name: msg.name,
                    id: msg.id,
                    error,
                },
                None => Event::Request(msg),
            },
        }
    }

    /// Earliest deadline of an outstanding request.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Expire every request whose deadline is at or before `now`, oldest first.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Event> {
        let mut expired: Vec<(Instant, String, String)> = Vec::new();
        self.pending.retain(|id, p| {
            if p.deadline <= now {
                expired.push((p.deadline, id.clone(), p.name.clone()));
                false
            } else {
                true
            }
        });
        expired.sort();
        expired
            .into_iter()
            .map(|(_, id, name)| Event::Timeout { id, name })
            .collect()
    }

    /// Forget a request (its waiter went away).
    pub fn cancel(&mut self, id: &str) -> bool {
        self.pending.remove(id).is_some()
    }

    /// Drop every outstanding request (connection lost); returns `(id, name)` of each.
    pub fn fail_all(&mut self) -> Vec<(String, String)> {
        self.pending.drain().map(|(id, p)| (id, p.name)).collect()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_pending(&self, id: &str) -> bool {
        self.pending.contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn matched_response_by_id() {
        let now = t0();
        let mut tx = Transactions::default();
        let (id, text) = tx.send_request(
            now,
            "get",
            &[("params".into(), Json::Array(vec![Json::str("results")]))],
        );
        assert!(text.ends_with(&format!(r#","id":"{id}"}}"#)));
        assert!(text.starts_with(r#"{"request":"get","params":["results"]"#));
        assert_eq!(tx.poll_timeout(), Some(now + DEFAULT_TIMEOUT));
        let ev = tx.handle_text(
            now + Duration::from_millis(10),
            &format!(r#"{{"response":"get","id":"{id}","params":{{"results":[]}}}}"#),
        );
        assert_eq!(ev.len(), 1);
        match &ev[0] {
            Event::Response {
                id: rid,
                request,
                msg,
            } => {
                assert_eq!(rid, &id);
                assert_eq!(request, "get");
                assert!(msg.is_named("GET"));
            }
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(tx.pending_len(), 0);
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn error_msg_fails_transaction() {
        let now = t0();
        let mut tx = Transactions::default();
        let (id, _) = tx.send_request(now, "setup", &[]);
        let ev = tx.handle_text(
            now,
            &format!(r#"{{"response":"setup","id":"{id}","error_msg":"No supported codec(s)"}}"#),
        );
        assert_eq!(
            ev,
            vec![Event::Failed {
                id,
                request: "setup".into(),
                error: "No supported codec(s)".into()
            }]
        );
    }

    #[test]
    fn timeout_then_late_response_ignored() {
        let now = t0();
        let mut tx = Transactions::default();
        let (id, _) = tx.send_request(now, "set", &[]);
        assert!(tx
            .handle_timeout(now + Duration::from_millis(999))
            .is_empty());
        let ev = tx.handle_timeout(now + Duration::from_millis(1000));
        assert_eq!(
            ev,
            vec![Event::Timeout {
                id: id.clone(),
                name: "set".into()
            }]
        );
        let ev = tx.handle_text(
            now + Duration::from_millis(1500),
            &format!(r#"{{"response":"set","id":"{id}"}}"#),
        );
        assert!(matches!(&ev[..], [Event::Unmatched(m)] if m.id == id));
    }

    #[test]
    fn handle_text_expires_due_timeouts_first() {
        let now = t0();
        let mut tx = Transactions::new(Duration::from_millis(100));
        let (a, _) = tx.send_request(now, "get", &[]);
        let (b, _) = tx.send_request(now + Duration::from_millis(50), "set", &[]);
        let ev = tx.handle_text(
            now + Duration::from_millis(120),
            &format!(r#"{{"response":"set","id":"{b}"}}"#),
        );
        assert_eq!(ev.len(), 2);
        assert_eq!(
            ev[0],
            Event::Timeout {
                id: a,
                name: "get".into()
            }
        );
        assert!(matches!(&ev[1], Event::Response { id, .. } if *id == b));
    }

    #[test]
    fn timeouts_in_deadline_order() {
        let now = t0();
        let mut tx = Transactions::new(Duration::from_millis(100));
        let (a, _) = tx.send_request(now, "a", &[]);
        let (b, _) = tx.send_request(now + Duration::from_millis(10), "b", &[]);
        let (c, _) = tx.send_request_with_timeout(now, "c", &[], Duration::from_millis(5));
        assert_eq!(tx.poll_timeout(), Some(now + Duration::from_millis(5)));
        let ev = tx.handle_timeout(now + Duration::from_secs(1));
        let ids: Vec<_> = ev
            .iter()
            .map(|e| match e {
                Event::Timeout { id, .. } => id.clone(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(ids, vec![c, a, b]);
    }

    #[test]
    fn incoming_request_and_peer_errors() {
        let now = t0();
        let mut tx = Transactions::default();
        let ev = tx.handle_text(now, r#"{"request":"set","id":"x","params":{"results":[]}}"#);
        assert!(matches!(&ev[..], [Event::Request(m)] if m.is_named("set") && m.id == "x"));
        let ev = tx.handle_text(now, r#"{"request":"set","id":"x","error_msg":"nope"}"#);
        assert!(
            matches!(&ev[..], [Event::PeerError { kind: Kind::Request, error, .. }] if error == "nope")
        );
        let ev = tx.handle_text(now, r#"{"response":"get","id":"zz","error_msg":"late"}"#);
        assert!(matches!(
            &ev[..],
            [Event::PeerError {
                kind: Kind::Response,
                ..
            }]
        ));
    }

    #[test]
    fn request_with_matching_id_does_not_complete_transaction() {
        let now = t0();
        let mut tx = Transactions::default();
        let (id, _) = tx.send_request(now, "get", &[]);
        let ev = tx.handle_text(now, &format!(r#"{{"request":"get","id":"{id}"}}"#));
        assert!(matches!(&ev[..], [Event::Request(_)]));
        assert!(tx.is_pending(&id));
    }

    #[test]
    fn invalid_and_too_large() {
        let now = t0();
        let mut tx = Transactions::default();
        assert!(matches!(
            &tx.handle_text(now, "garbage")[..],
            [Event::Invalid(DecodeError::Json(_))]
        ));
        let big = format!(r#"{{"request":"set","x":"{}"}}"#, "a".repeat(40 * 1024));
        assert!(matches!(
            &tx.handle_text(now, &big)[..],
            [Event::Invalid(DecodeError::TooLarge(_))]
        ));
    }

    #[test]
    fn cancel_and_fail_all() {
        let now = t0();
        let mut tx = Transactions::default();
        let (a, _) = tx.send_request(now, "a", &[]);
        let (_b, _) = tx.send_request(now, "b", &[]);
        assert!(tx.cancel(&a));
        assert!(!tx.cancel(&a));
        let all = tx.fail_all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1, "b");
        assert_eq!(tx.pending_len(), 0);
    }
}
