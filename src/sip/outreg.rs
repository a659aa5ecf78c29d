//! Outbound registration (a `type=registration` section), sans-IO.
//!
//! [`RegistrationClient`] builds REGISTER requests and reacts to their responses; the
//! shell sends what [`RegistrationClient::poll_request`] returns through its transaction
//! layer, feeds the final response to [`RegistrationClient::handle_response`] (which may
//! return an authenticated retry to send at once), reports a transaction timeout or
//! transport error with [`RegistrationClient::handle_failure`], and wakes it at
//! [`RegistrationClient::poll_timeout`]. Behaviour follows Asterisk's res_pjsip_outbound_registration:
//! register at start, refresh before the granted expiry, on 401/407 answer the challenge once
//! per nonce, on failure retry after `retry_interval` (after `forbidden_retry_interval` for 403,
//! giving up when that is 0), stop after `max_retries` consecutive failures.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::auth;
use super::message::{
    new_branch, new_call_id, new_tag, Host, Method, Request, Response, SipUri, Transport, Via,
};
use super::HeaderName;

/// A `type=registration` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationCfg {
    pub name: String,
    /// Where REGISTER goes (the registrar), e.g. `sip:provider.example:5060`.
    pub server_uri: SipUri,
    /// The AOR being registered (From/To), e.g. `sip:1234@provider.example`.
    pub client_uri: SipUri,
    /// User part of our Contact (default: `s`).
    pub contact_user: String,
    /// Credentials from the `outbound_auth` section: (username, password).
    pub auth: Option<(String, String)>,
    pub expiration: u32,
    pub retry_interval: u32,
    pub forbidden_retry_interval: u32,
    pub max_retries: u32,
}

/// Registration state as `pjsip show registrations` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegState {
    Unregistered,
    Registered,
    /// Failed; a retry is scheduled.
    Rejected,
    /// Gave up (max_retries reached, or 403 with forbidden_retry_interval=0).
    Stopped,
}

impl RegState {
    pub fn as_str(self) -> &'static str {
        match self {
            RegState::Unregistered => "Unregistered",
            RegState::Registered => "Registered",
            RegState::Rejected => "Rejected",
            RegState::Stopped => "Stopped",
        }
    }
}

/// The state machine for one outbound registration.
#[derive(Debug)]
pub struct RegistrationClient {
    cfg: RegistrationCfg,
    local_ip: IpAddr,
    local_port: u16,
    transport: Transport,
    call_id: String,
    from_tag: String,
    cseq: u32,
    state: RegState,
    /// When to send the next REGISTER (None while one is in flight or stopped).
    next_at: Option<Instant>,
    in_flight: Option<Request>,
    /// The nonce we already answered for the request in flight (answer each only once).
    answered_nonce: Option<String>,
    failures: u32,
    granted: u32,
    /// The last final status received.
    pub last_status: Option<u16>,
    /// When the current registration expires (Registered only).
    pub expires_at: Option<Instant>,
}

impl RegistrationClient {
    pub fn new(
        cfg: RegistrationCfg,
        local_ip: IpAddr,
        local_port: u16,
        now: Instant,
    ) -> RegistrationClient {
        RegistrationClient {
            call_id: new_call_id(Some(&local_ip.to_string())),
            from_tag: new_tag(),
            cfg,
            local_ip,
            local_port,
            transport: Transport::Udp,
            cseq: 0,
            state: RegState::Unregistered,
            next_at: Some(now),
            in_flight: None,
            answered_nonce: None,
            failures: 0,
            granted: 0,
            last_status: None,
            expires_at: None,
        }
    }

    pub fn config(&self) -> &RegistrationCfg {
        &self.cfg
    }
    pub fn state(&self) -> RegState {
        self.state
    }

    /// When the client wants to be woken (None: waiting for a response, or stopped).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_at
    }

    fn build(&mut self) -> Request {
        self.cseq += 1;
        let mut r = Request::new(Method::Register, self.cfg.server_uri.clone());
        let via = Via::new(
            self.transport,
            Host::Ip(self.local_ip),
            Some(self.local_port),
            &new_branch(),
        );
        let mut via_s = via.to_string();
        via_s.push_str(";rport");
        r.headers.push(HeaderName::VIA, via_s);
        r.headers.push(HeaderName::MAX_FORWARDS, "70");
        r.headers.push(
            HeaderName::FROM,
            format!("<{}>;tag={}", self.cfg.client_uri, self.from_tag),
        );
        r.headers
            .push(HeaderName::TO, format!("<{}>", self.cfg.client_uri));
        r.headers.push(HeaderName::CALL_ID, self.call_id.clone());
        r.headers
            .push(HeaderName::CSEQ, format!("{} REGISTER", self.cseq));
        let host = match self.local_ip {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        r.headers.push(
            HeaderName::CONTACT,
            format!("<sip:{}@{host}:{}>", self.cfg.contact_user, self.local_port),
        );
        r.headers
            .push(HeaderName::EXPIRES, self.cfg.expiration.to_string());
        r.headers.push(HeaderName::USER_AGENT, "voxpbx");
        r
    }

    /// The REGISTER to send now, if one is due.
    pub fn poll_request(&mut self, now: Instant) -> Option<Request> {
        match self.next_at {
            Some(t) if t <= now && self.in_flight.is_none() => {
                if self.state == RegState::Registered && self.expires_at.is_some_and(|e| e <= now) {
                    self.state = RegState::Unregistered;
                }
                self.next_at = None;
                self.answered_nonce = None;
                let r = self.build();
                self.in_flight = Some(r.clone());
                Some(r)
            }
            _ => None,
        }
    }

    fn fail(&mut self, now: Instant, forbidden: bool) {
        self.in_flight = None;
        self.expires_at = None;
        self.failures += 1;
        let wait = if forbidden {
            self.cfg.forbidden_retry_interval
        } else {
            self.cfg.retry_interval
        };
        if wait == 0 || (self.cfg.max_retries > 0 && self.failures > self.cfg.max_retries) {
            self.state = RegState::Stopped;
            self.next_at = None;
        } else {
            self.state = RegState::Rejected;
            self.next_at = Some(now + Duration::from_secs(u64::from(wait)));
        }
    }

    /// The request in flight timed out or could not be sent.
    pub fn handle_failure(&mut self, now: Instant) {
        if self.in_flight.is_some() {
            self.last_status = Some(408);
            self.fail(now, false);
        }
    }

    /// A response to the REGISTER in flight (provisional ones are ignored). Returns a
    /// request to send at once (the REGISTER with credentials after 401/407).
    pub fn handle_response(&mut self, now: Instant, resp: &Response) -> Option<Request> {
        let inflight = self.in_flight.as_ref()?;
        if resp.headers.call_id().ok() != Some(self.call_id.as_str())
            || resp.headers.cseq().map(|c| c.seq).ok() != Some(self.cseq)
            || resp.status < 200
        {
            return None;
        }
        self.last_status = Some(resp.status);
        match resp.status {
            200..=299 => {
                let granted = resp
                    .headers
                    .contacts()
                    .ok()
                    .and_then(|cs| {
                        cs.iter()
                            .filter(|c| {
                                c.uri.as_sip().and_then(|u| u.user.as_deref())
                                    == Some(self.cfg.contact_user.as_str())
                            })
                            .find_map(|c| c.param("expires").flatten().and_then(|e| e.parse().ok()))
                    })
                    .or_else(|| {
                        resp.headers
                            .get(&HeaderName::EXPIRES)
                            .and_then(|e| e.trim().parse().ok())
                    })
                    .unwrap_or(self.cfg.expiration);
                self.in_flight = None;
                self.failures = 0;
                if granted == 0 {
                    // The registrar removed us: try again later.
                    self.fail(now, false);
                    return None;
                }
                self.granted = granted;
                self.state = RegState::Registered;
                self.expires_at = Some(now + Duration::from_secs(u64::from(granted)));
                // Refresh ahead of expiry (Asterisk re-registers ~10 s early).
                let early = if granted > 20 { 10 } else { granted / 2 };
                self.next_at = Some(now + Duration::from_secs(u64::from(granted - early)));
                None
            }
            401 | 407 => {
                let Some((user, pass)) = self.cfg.auth.clone() else {
                    self.fail(now, false);
                    return None;
                };
                let hdr = if resp.status == 407 {
                    HeaderName::PROXY_AUTHENTICATE
                } else {
                    HeaderName::WWW_AUTHENTICATE
                };
                let nonce = resp
                    .headers
                    .get_all(&hdr)
                    .filter_map(|v| auth::Challenge::parse(v).ok())
                    .max_by_key(|c| c.algorithm == auth::Algorithm::Sha256)
                    .map(|c| (c.nonce, c.stale));
                let Some((nonce, stale)) = nonce else {
                    self.fail(now, false);
                    return None;
                };
                // Answer each nonce once; a second challenge with a new nonce is only
                // answered when it says stale=true (our password was right).
                if self.answered_nonce.as_deref() == Some(nonce.as_str())
                    || (self.answered_nonce.is_some() && !stale)
                {
                    self.fail(now, false);
                    return None;
                }
                let mut req = inflight.clone();
                if auth::authorize_request(&mut req, resp, &user, &pass, &new_tag(), 1).is_err() {
                    self.fail(now, false);
                    return None;
                }
                self.answered_nonce = Some(nonce);
                self.cseq += 1;
                req.headers
                    .set(HeaderName::CSEQ, format!("{} REGISTER", self.cseq));
                if let Ok(mut via) = req.headers.top_via() {
                    via.set_branch(&new_branch());
                    req.headers.set_top_via(&via);
                }
                self.in_flight = Some(req.clone());
                Some(req)
            }
            423 => {
                // Interval too brief: retry at once with the registrar's minimum.
                let min = resp
                    .headers
                    .get(&HeaderName::MIN_EXPIRES)
                    .and_then(|m| m.trim().parse::<u32>().ok());
                match min {
                    Some(m) if m > self.cfg.expiration => {
                        self.cfg.expiration = m;
                        self.in_flight = None;
                        self.next_at = Some(now);
                        None
                    }
                    _ => {
                        self.fail(now, false);
                        None
                    }
                }
            }
            403 => {
                self.fail(now, true);
                None
            }
            _ => {
                self.fail(now, false);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth::{Algorithm, DigestServer, Verdict};

    fn cfg(auth: bool) -> RegistrationCfg {
        RegistrationCfg {
            name: "trunk".into(),
            server_uri: "sip:127.0.0.1:5080".parse().unwrap(),
            client_uri: "sip:1234@127.0.0.1".parse().unwrap(),
            contact_user: "1234".into(),
            auth: auth.then(|| ("1234".to_string(), "pw".to_string())),
            expiration: 300,
            retry_interval: 60,
            forbidden_retry_interval: 0,
            max_retries: 3,
        }
    }

    fn client(auth: bool, t0: Instant) -> RegistrationClient {
        RegistrationClient::new(cfg(auth), "127.0.0.1".parse().unwrap(), 5060, t0)
    }

    #[test]
    fn registers_and_refreshes_before_expiry() {
        let t0 = Instant::now();
        let mut c = client(false, t0);
        assert_eq!(c.poll_timeout(), Some(t0));
        let r = c.poll_request(t0).unwrap();
        assert_eq!(r.method, Method::Register);
        assert_eq!(r.headers.get(&HeaderName::EXPIRES), Some("300"));
        assert!(c.poll_request(t0).is_none(), "one in flight at a time");
        let mut ok = Response::from_request(&r, 200);
        ok.headers
            .push(HeaderName::CONTACT, "<sip:1234@127.0.0.1:5060>;expires=120");
        assert!(c.handle_response(t0, &ok).is_none());
        assert_eq!(c.state(), RegState::Registered);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(110)));
        assert!(c.poll_request(t0 + Duration::from_secs(109)).is_none());
        let r2 = c.poll_request(t0 + Duration::from_secs(110)).unwrap();
        assert_eq!(r2.headers.call_id().unwrap(), r.headers.call_id().unwrap());
        assert_eq!(r2.headers.cseq().unwrap().seq, 2);
    }

    #[test]
    fn answers_a_challenge_once_with_a_new_cseq() {
        let t0 = Instant::now();
        let server = DigestServer::new("asterisk", b"k", 32);
        let mut c = client(true, t0);
        let r = c.poll_request(t0).unwrap();
        let ch = server.challenge_response(
            100,
            &r,
            false,
            false,
            &[Algorithm::Sha256, Algorithm::Md5],
            "x",
        );
        let r2 = c.handle_response(t0, &ch).expect("authenticated retry");
        assert_eq!(r2.headers.cseq().unwrap().seq, 2);
        assert_ne!(
            r2.headers.top_via().unwrap().branch(),
            r.headers.top_via().unwrap().branch()
        );
        let v = server.verify_request(100, &r2, false, |u| (u == "1234").then(|| "pw".into()));
        assert!(matches!(v, Verdict::Authorized { .. }), "{v:?}");
        // Challenged again with a fresh nonce and no stale flag: the password is wrong.
        let ch2 = server.challenge_response(100, &r2, false, false, &[Algorithm::Md5], "x");
        assert!(c.handle_response(t0, &ch2).is_none());
        assert_eq!(c.state(), RegState::Rejected);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn stale_challenge_is_answered_again() {
        let t0 = Instant::now();
        let server = DigestServer::new("asterisk", b"k", 32);
        let mut c = client(true, t0);
        let r = c.poll_request(t0).unwrap();
        let ch = server.challenge_response(100, &r, false, false, &[Algorithm::Md5], "x");
        let r2 = c.handle_response(t0, &ch).unwrap();
        let ch2 = server.challenge_response(200, &r2, false, true, &[Algorithm::Md5], "x");
        let r3 = c.handle_response(t0, &ch2).expect("stale: answer again");
        assert_eq!(r3.headers.cseq().unwrap().seq, 3);
    }

    #[test]
    fn no_credentials_timeout_and_giving_up() {
        let t0 = Instant::now();
        let mut c = client(false, t0);
        let r = c.poll_request(t0).unwrap();
        let ch = Response::from_request(&r, 401);
        assert!(c.handle_response(t0, &ch).is_none());
        assert_eq!(c.state(), RegState::Rejected);
        let mut t = t0;
        for _ in 0..3 {
            t = c.poll_timeout().unwrap();
            assert!(c.poll_request(t).is_some());
            c.handle_failure(t);
        }
        assert_eq!(c.state(), RegState::Stopped);
        assert_eq!(c.poll_timeout(), None);
        assert!(c.poll_request(t + Duration::from_secs(3600)).is_none());
    }

    #[test]
    fn forbidden_stops_when_no_forbidden_retry() {
        let t0 = Instant::now();
        let mut c = client(false, t0);
        let r = c.poll_request(t0).unwrap();
        c.handle_response(t0, &Response::from_request(&r, 403));
        assert_eq!(c.state(), RegState::Stopped);
    }

    #[test]
    fn interval_too_brief_raises_expiration() {
        let t0 = Instant::now();
        let mut c = client(false, t0);
        let r = c.poll_request(t0).unwrap();
        let mut resp = Response::from_request(&r, 423);
        resp.headers.push(HeaderName::MIN_EXPIRES, "600");
        c.handle_response(t0, &resp);
        let r2 = c.poll_request(t0).unwrap();
        assert_eq!(r2.headers.get(&HeaderName::EXPIRES), Some("600"));
    }

    #[test]
    fn stray_responses_are_ignored() {
        let t0 = Instant::now();
        let mut c = client(false, t0);
        let r = c.poll_request(t0).unwrap();
        let mut other = Response::from_request(&r, 200);
        other.headers.set(HeaderName::CALL_ID, "other");
        assert!(c.handle_response(t0, &other).is_none());
        assert_eq!(c.state(), RegState::Unregistered);
        assert!(c
            .handle_response(t0, &Response::from_request(&r, 100))
            .is_none());
        assert_eq!(c.state(), RegState::Unregistered);
    }
}
