//! Registrar bindings (RFC 3261 §10.3), sans-IO: told `now`, no sockets.
//!
//! [`Registrar::register`] applies one REGISTER to an AOR following Asterisk's `aor`
//! options: `Expires` header or per-contact `expires` parameter (the parameter wins),
//! `default_expiration` when neither is given, `minimum_expiration` (a smaller non-zero
//! value is refused with 423 + `Min-Expires`), `maximum_expiration` (larger values are
//! cut down), `expires=0` / `Contact: *` + `Expires: 0` to unregister, `max_contacts`
//! (0: the AOR accepts no registrations, as in Asterisk) and `remove_existing` (when
//! full, the bindings closest to expiry make room; without it the REGISTER gets 403).
//! A refresh from the same Call-ID must carry a higher CSeq (§10.3 step 7) or it is
//! refused with 500.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::message::{HeaderName, Request};

/// The registration-related options of an `aor` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AorPolicy {
    pub max_contacts: u32,
    pub remove_existing: bool,
    pub default_expiration: u32,
    pub minimum_expiration: u32,
    pub maximum_expiration: u32,
}

impl Default for AorPolicy {
    /// Asterisk's defaults.
    fn default() -> AorPolicy {
        AorPolicy {
            max_contacts: 0,
            remove_existing: false,
            default_expiration: 3600,
            minimum_expiration: 60,
            maximum_expiration: 7200,
        }
    }
}

/// One registered contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The contact URI as registered (without `<>` or header parameters).
    pub uri: String,
    pub expires_at: Instant,
    /// Where the REGISTER came from (for NAT'd phones: where to send requests).
    pub source: SocketAddr,
    pub call_id: String,
    pub cseq: u32,
    pub user_agent: Option<String>,
}

/// Why a REGISTER was refused; [`RegisterError::status`] is the response code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("interval too brief, minimum {0} s")]
    IntervalTooBrief(u32),
    #[error("too many contacts for AOR (max {0})")]
    TooManyContacts(u32),
    #[error("bad Contact or Expires: {0}")]
    Invalid(&'static str),
    #[error("out-of-order CSeq for this Call-ID")]
    OutOfOrder,
}

impl RegisterError {
    pub fn status(&self) -> u16 {
        match self {
            RegisterError::IntervalTooBrief(_) => 423,
            RegisterError::TooManyContacts(_) => 403,
            RegisterError::Invalid(_) => 400,
            RegisterError::OutOfOrder => 500,
        }
    }
}

/// Bindings per AOR name.
#[derive(Debug, Default)]
pub struct Registrar {
    aors: HashMap<String, Vec<Binding>>,
}

impl Registrar {
    pub fn new() -> Registrar {
        Registrar::default()
    }

    /// The live bindings of `aor`, newest last.
    pub fn contacts(&self, now: Instant, aor: &str) -> Vec<&Binding> {
        self.aors
            .get(aor)
            .map(|l| l.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default()
    }

    /// Every live binding, by AOR name.
    pub fn all(&self, now: Instant) -> Vec<(&str, &Binding)> {
        let mut v: Vec<(&str, &Binding)> = self
            .aors
            .iter()
            .flat_map(|(a, l)| l.iter().map(move |b| (a.as_str(), b)))
            .filter(|(_, b)| b.expires_at > now)
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0).then(a.1.uri.cmp(&b.1.uri)));
        v
    }

    /// Drop expired bindings.
    pub fn expire(&mut self, now: Instant) {
        for l in self.aors.values_mut() {
            l.retain(|b| b.expires_at > now);
        }
        self.aors.retain(|_, l| !l.is_empty());
    }

    /// Apply REGISTER `req` from `source` to `aor`. On success returns the AOR's bindings
    /// after the change as (contact URI, seconds left) for the 200's Contact headers.
    /// Nothing changes when an error is returned.
    pub fn register(
        &mut self,
        now: Instant,
        aor: &str,
        policy: &AorPolicy,
        req: &Request,
        source: SocketAddr,
    ) -> Result<Vec<(String, u32)>, RegisterError> {
        let header_exp = match req.headers.get(&HeaderName::EXPIRES) {
            Some(v) => Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| RegisterError::Invalid("Expires is not a number"))?,
            ),
            None => None,
        };
        let call_id = req.headers.call_id().unwrap_or("").to_string();
        let cseq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
        let user_agent = req.headers.get(&HeaderName::USER_AGENT).map(str::to_string);
        let mut list: Vec<Binding> = self.contacts(now, aor).into_iter().cloned().collect();
        if req.headers.is_contact_star() {
            if header_exp != Some(0) || req.headers.count(&HeaderName::CONTACT) != 1 {
                return Err(RegisterError::Invalid("Contact: * needs Expires: 0"));
            }
            list.clear();
        } else {
            let contacts = req
                .headers
                .contacts()
                .map_err(|_| RegisterError::Invalid("unparsable Contact"))?;
            for c in contacts {
                let exp = match c.param("expires") {
                    Some(Some(v)) => v
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| RegisterError::Invalid("bad expires parameter"))?,
                    Some(None) => return Err(RegisterError::Invalid("empty expires parameter")),
                    None => header_exp.unwrap_or(u64::from(policy.default_expiration)),
                };
                let uri = c.uri.to_string();
                if let Some(old) = list.iter().find(|b| b.uri == uri) {
                    if old.call_id == call_id && cseq <= old.cseq {
                        return Err(RegisterError::OutOfOrder);
                    }
                }
                list.retain(|b| b.uri != uri);
                if exp == 0 {
                    continue;
                }
                if exp < u64::from(policy.minimum_expiration) {
                    return Err(RegisterError::IntervalTooBrief(policy.minimum_expiration));
                }
                let exp = if policy.maximum_expiration > 0 {
                    exp.min(u64::from(policy.maximum_expiration))
                } else {
                    exp
                };
                if list.len() as u32 >= policy.max_contacts {
                    if !policy.remove_existing || policy.max_contacts == 0 {
                        return Err(RegisterError::TooManyContacts(policy.max_contacts));
                    }
                    // Make room: drop the bindings that would expire first.
                    list.sort_by_key(|b| b.expires_at);
                    let extra = list.len() + 1 - policy.max_contacts as usize;
                    list.drain(..extra);
                }
                list.push(Binding {
                    uri,
                    expires_at: now + Duration::from_secs(exp),
                    source,
                    call_id: call_id.clone(),
                    cseq,
                    user_agent: user_agent.clone(),
                });
            }
        }
        let out = list
            .iter()
            .map(|b| {
                let left = b.expires_at.saturating_duration_since(now).as_secs();
                (b.uri.clone(), u32::try_from(left).unwrap_or(u32::MAX))
            })
            .collect();
        if list.is_empty() {
            self.aors.remove(aor);
        } else {
            self.aors.insert(aor.to_string(), list);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse::parse_message;
    use crate::sip::SipMessage;

    fn reg(cid: &str, cseq: u32, extra: &str) -> Request {
        let text = format!(
            "REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{cseq}\r\n\
             From: <sip:alice@pbx>;tag=a\r\nTo: <sip:alice@pbx>\r\nCall-ID: {cid}\r\n\
             CSeq: {cseq} REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match parse_message(text.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    fn src() -> SocketAddr {
        "10.0.0.1:5060".parse().unwrap()
    }

    fn policy(max: u32, remove: bool) -> AorPolicy {
        AorPolicy {
            max_contacts: max,
            remove_existing: remove,
            ..AorPolicy::default()
        }
    }

    #[test]
    fn expires_header_param_default_and_clamp() {
        let t0 = Instant::now();
        let mut r = Registrar::new();
        let p = policy(5, false);
        let out = r
            .register(
                t0,
                "alice",
                &p,
                &reg("c", 1, "Contact: <sip:a@1.1.1.1>\r\n"),
                src(),
            )
            .unwrap();
        assert_eq!(out, vec![("sip:a@1.1.1.1".to_string(), 3600)]);
        let out = r
            .register(
                t0,
                "alice",
                &p,
                &reg(
                    "c",
                    2,
                    "Contact: <sip:a@1.1.1.1>;expires=120\r\nExpires: 300\r\n",
                ),
                src(),
            )
            .unwrap();
        assert_eq!(out, vec![("sip:a@1.1.1.1".to_string(), 120)]);
        let out = r
            .register(
                t0,
                "alice",
                &p,
                &reg("c", 3, "Contact: <sip:a@1.1.1.1>\r\nExpires: 99999\r\n"),
                src(),
            )
            .unwrap();
        assert_eq!(out[0].1, 7200, "cut to maximum_expiration");
        let e = r
            .register(
                t0,
                "alice",
                &p,
                &reg("c", 4, "Contact: <sip:a@1.1.1.1>\r\nExpires: 10\r\n"),
                src(),
            )
            .unwrap_err();
        assert_eq!(e, RegisterError::IntervalTooBrief(60));
        assert_eq!(e.status(), 423);
        // Unchanged by the refused request.
        assert_eq!(r.contacts(t0, "alice").len(), 1);
    }

    #[test]
    fn bindings_expire_on_the_clock() {
        let t0 = Instant::now();
        let mut r = Registrar::new();
        r.register(
            t0,
            "alice",
            &policy(1, true),
            &reg("c", 1, "Contact: <sip:a@1.1.1.1>;expires=60\r\n"),
            src(),
        )
        .unwrap();
        assert_eq!(r.contacts(t0 + Duration::from_secs(59), "alice").len(), 1);
        assert!(r.contacts(t0 + Duration::from_secs(60), "alice").is_empty());
        r.expire(t0 + Duration::from_secs(61));
        assert!(r.all(t0).is_empty());
    }

    #[test]
    fn unregister_by_zero_and_star() {
        let t0 = Instant::now();
        let mut r = Registrar::new();
        let p = policy(3, false);
        r.register(
            t0,
            "alice",
            &p,
            &reg("c", 1, "Contact: <sip:a@1.1.1.1>, <sip:b@2.2.2.2>\r\n"),
            src(),
        )
        .unwrap();
        assert_eq!(r.contacts(t0, "alice").len(), 2);
        let out = r
            .register(
                t0,
                "alice",
                &p,
                &reg("c", 2, "Contact: <sip:a@1.1.1.1>;expires=0\r\n"),
                src(),
            )
            .unwrap();
        assert_eq!(out, vec![("sip:b@2.2.2.2".to_string(), 3600)]);
        assert!(r
            .register(t0, "alice", &p, &reg("c", 3, "Contact: *\r\n"), src())
            .is_err());
        let out = r
            .register(
                t0,
                "alice",
                &p,
                &reg("c", 4, "Contact: *\r\nExpires: 0\r\n"),
                src(),
            )
            .unwrap();
        assert!(out.is_empty());
        assert!(r.contacts(t0, "alice").is_empty());
    }

    #[test]
    fn max_contacts_and_remove_existing() {
        let t0 = Instant::now();
        let mut r = Registrar::new();
        let strict = policy(1, false);
        r.register(
            t0,
            "alice",
            &strict,
            &reg("c1", 1, "Contact: <sip:a@1.1.1.1>\r\n"),
            src(),
        )
        .unwrap();
        let e = r
            .register(
                t0,
                "alice",
                &strict,
                &reg("c2", 1, "Contact: <sip:b@2.2.2.2>\r\n"),
                src(),
            )
            .unwrap_err();
        assert_eq!(e.status(), 403);
        let out = r
            .register(
                t0,
                "alice",
                &policy(1, true),
                &reg("c2", 1, "Contact: <sip:b@2.2.2.2>\r\n"),
                src(),
            )
            .unwrap();
        assert_eq!(out, vec![("sip:b@2.2.2.2".to_string(), 3600)]);
        // max_contacts=0: no registrations at all.
        assert_eq!(
            r.register(
                t0,
                "bob",
                &policy(0, true),
                &reg("c3", 1, "Contact: <sip:b@2.2.2.2>\r\n"),
                src()
            )
            .unwrap_err(),
            RegisterError::TooManyContacts(0)
        );
    }

    #[test]
    fn cseq_must_increase_within_a_call_id() {
        let t0 = Instant::now();
        let mut r = Registrar::new();
        let p = policy(1, true);
        r.register(
            t0,
            "a",
            &p,
            &reg("c", 5, "Contact: <sip:a@1.1.1.1>\r\n"),
            src(),
        )
        .unwrap();
        assert_eq!(
            r.register(
                t0,
                "a",
                &p,
                &reg("c", 5, "Contact: <sip:a@1.1.1.1>\r\n"),
                src()
            )
            .unwrap_err()
            .status(),
            500
        );
        assert!(r
            .register(
                t0,
                "a",
                &p,
                &reg("c", 6, "Contact: <sip:a@1.1.1.1>\r\n"),
                src()
            )
            .is_ok());
    }

    #[test]
    fn bad_expires_is_an_error() {
        let t0 = Instant::now();
        let mut r = Registrar::new();
        let p = policy(1, true);
        assert_eq!(
            r.register(
                t0,
                "a",
                &p,
                &reg("c", 1, "Contact: <sip:a@1.1.1.1>\r\nExpires: soon\r\n"),
                src()
            )
            .unwrap_err()
            .status(),
            400
        );
    }
}
