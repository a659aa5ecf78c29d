//! Digest authentication (RFC 2617 / RFC 7616 as used by SIP, RFC 3261 §22): MD5 and
//! SHA-256, `qop=auth` with `nc`/`cnonce` (and the RFC 2069 form without qop).
//!
//! Server side ([`DigestServer`]): nonces are stateless — `hex(timestamp) hex(salt)
//! hex(HMAC-SHA256(secret, timestamp|salt|realm)[..16])` — so any process holding the
//! secret can check a nonce and its age from `now_unix` alone; an expired nonce with a
//! correct digest yields [`Verdict::Stale`] (re-challenge with `stale=true`). Being
//! stateless, the server does not track `nc` values: a captured Authorization can be
//! replayed until its nonce expires (keep `nonce_ttl` short, as Asterisk's 32 s).
//!
//! Client side: [`authorize`] computes the credentials for a challenge, and
//! [`authorize_request`] adds them to a request after a 401/407.

use std::fmt::{self, Write as _};

use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::message::{write_quoted, HeaderName, Request, Response};
use super::parse::{parse_uri, Scanner};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("not a Digest header")]
    NotDigest,
    #[error("malformed Digest parameters: {0}")]
    Malformed(&'static str),
    #[error("missing Digest parameter {0}")]
    Missing(&'static str),
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("the response carries no usable challenge")]
    NoChallenge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }
    pub fn parse(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }
    /// Lower-case hex digest of the parts joined by `:`.
    pub fn hash(self, parts: &[&str]) -> String {
        fn run<D: md5::Digest>(mut d: D, parts: &[&str]) -> String {
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p.as_bytes());
            }
            hex::encode(d.finalize())
        }
        match self {
            Algorithm::Md5 => run(Md5::new(), parts),
            Algorithm::Sha256 => run(Sha256::new(), parts),
        }
    }
}

/// `WWW-Authenticate` / `Proxy-Authenticate: Digest ...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The server offers `qop=auth`.
    pub qop_auth: bool,
    pub stale: bool,
}

/// `Authorization` / `Proxy-Authorization: Digest ...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub opaque: Option<String>,
    /// `Some((nc, cnonce))` when `qop=auth` is used.
    pub qop: Option<(u32, String)>,
}

/// Parse `Digest name=value, name="value", ...` into (lower-cased name, value) pairs.
fn digest_params(value: &str) -> Result<Vec<(String, String)>, AuthError> {
    let mut sc = Scanner::new(value);
    sc.skip_ws();
    let scheme = sc.take_while(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !scheme.eq_ignore_ascii_case("Digest") || !sc.skip_ws() {
        return Err(AuthError::NotDigest);
    }
    let mut out: Vec<(String, String)> = Vec::new();
    loop {
        sc.skip_ws();
        let name = sc.take_while(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if name.is_empty() {
            return Err(AuthError::Malformed("expected a parameter name"));
        }
        sc.skip_ws();
        if !sc.eat(b'=') {
            return Err(AuthError::Malformed("expected '='"));
        }
        sc.skip_ws();
        let v = if sc.peek() == Some(b'"') {
            sc.quoted().map_err(AuthError::Malformed)?.1
        } else {
            sc.take_while(|b| b > b' ' && b != b',' && b != b'"' && b < 0x7f)
                .to_string()
        };
        let name = name.to_ascii_lowercase();
        if out.iter().any(|(n, _)| *n == name) {
            return Err(AuthError::Malformed("repeated parameter"));
        }
        out.push((name, v));
        sc.skip_ws();
        if sc.at_end() {
            return Ok(out);
        }
        if !sc.eat(b',') {
            return Err(AuthError::Malformed("expected ','"));
        }
        if sc.rest().trim().is_empty() {
            return Ok(out);
        }
    }
}

fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn algorithm_of(params: &[(String, String)]) -> Result<Algorithm, AuthError> {
    match get(params, "algorithm") {
        None => Ok(Algorithm::Md5),
        Some(a) => Algorithm::parse(a)
            .ok_or_else(|| AuthError::UnsupportedAlgorithm(a.chars().take(32).collect())),
    }
}

impl Challenge {
    pub fn parse(value: &str) -> Result<Challenge, AuthError> {
        let p = digest_params(value)?;
        Ok(Challenge {
            realm: get(&p, "realm")
                .ok_or(AuthError::Missing("realm"))?
                .to_string(),
            nonce: get(&p, "nonce")
                .ok_or(AuthError::Missing("nonce"))?
                .to_string(),
            opaque: get(&p, "opaque").map(str::to_string),
            algorithm: algorithm_of(&p)?,
            qop_auth: get(&p, "qop")
                .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth"))),
            stale: get(&p, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest realm=")?;
        write_quoted(f, &self.realm)?;
        f.write_str(", nonce=")?;
        write_quoted(f, &self.nonce)?;
        if let Some(o) = &self.opaque {
            f.write_str(", opaque=")?;
            write_quoted(f, o)?;
        }
        write!(f, ", algorithm={}", self.algorithm.as_str())?;
        if self.qop_auth {
            f.write_str(", qop=\"auth\"")?;
        }
        if self.stale {
            f.write_str(", stale=true")?;
        }
        Ok(())
    }
}

impl Credentials {
    pub fn parse(value: &str) -> Result<Credentials, AuthError> {
        let p = digest_params(value)?;
        let req = |n: &'static str| get(&p, n).map(str::to_string).ok_or(AuthError::Missing(n));
        let qop = match get(&p, "qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let nc = get(&p, "nc").ok_or(AuthError::Missing("nc"))?;
                if nc.len() != 8 {
                    return Err(AuthError::Malformed("nc is not 8 hex digits"));
                }
                let nc = u32::from_str_radix(nc, 16)
                    .map_err(|_| AuthError::Malformed("nc is not 8 hex digits"))?;
                Some((nc, req("cnonce")?))
            }
            Some(_) => return Err(AuthError::Malformed("unsupported qop")),
        };
        Ok(Credentials {
            username: req("username")?,
            realm: req("realm")?,
            nonce: req("nonce")?,
            uri: req("uri")?,
            response: req("response")?,
            algorithm: algorithm_of(&p)?,
            opaque: get(&p, "opaque").map(str::to_string),
            qop,
        })
    }

    /// The digest these credentials should carry, given HA1.
    pub fn expected_response(&self, method: &str, ha1: &str) -> String {
        let alg = self.algorithm;
        let ha2 = alg.hash(&[method, &self.uri]);
        match &self.qop {
            Some((nc, cnonce)) => {
                let nc = format!("{nc:08x}");
                alg.hash(&[ha1, &self.nonce, &nc, cnonce, "auth", &ha2])
            }
            None => alg.hash(&[ha1, &self.nonce, &ha2]),
        }
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest username=")?;
        write_quoted(f, &self.username)?;
        f.write_str(", realm=")?;
        write_quoted(f, &self.realm)?;
        f.write_str(", nonce=")?;
        write_quoted(f, &self.nonce)?;
        f.write_str(", uri=")?;
        write_quoted(f, &self.uri)?;
        f.write_str(", response=")?;
        write_quoted(f, &self.response)?;
        write!(f, ", algorithm={}", self.algorithm.as_str())?;
        if let Some((nc, cnonce)) = &self.qop {
            f.write_str(", cnonce=")?;
            write_quoted(f, cnonce)?;
            write!(f, ", qop=auth, nc={nc:08x}")?;
        }
        if let Some(o) = &self.opaque {
            f.write_str(", opaque=")?;
            write_quoted(f, o)?;
        }
        Ok(())
    }
}

/// HA1 = H(username:realm:password).
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hash(&[username, realm, password])
}

/// Client side: the credentials answering `challenge` for a request `method uri`.
/// `cnonce` should be random (e.g. [`super::message::new_tag`]); `nc` counts the uses
/// of this nonce, starting at 1.
pub fn authorize(
    challenge: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Credentials {
    let mut c = Credentials {
        username: username.to_string(),
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_string(),
        response: String::new(),
        algorithm: challenge.algorithm,
        opaque: challenge.opaque.clone(),
        qop: challenge.qop_auth.then(|| (nc, cnonce.to_string())),
    };
    c.response = c.expected_response(
        method,
        &ha1(challenge.algorithm, username, &challenge.realm, password),
    );
    c
}

/// Client side: add `Authorization` (after 401) or `Proxy-Authorization` (after 407) to
/// `request` for the best challenge in `challenge_response` (SHA-256 over MD5), replacing
/// earlier credentials for the same realm. The caller then re-sends `request` with a new
/// branch and CSeq.
pub fn authorize_request(
    request: &mut Request,
    challenge_response: &Response,
    username: &str,
    password: &str,
    cnonce: &str,
    nc: u32,
) -> Result<(), AuthError> {
    let (challenge_header, answer_header) = match challenge_response.status {
        407 => (
            HeaderName::PROXY_AUTHENTICATE,
            HeaderName::PROXY_AUTHORIZATION,
        ),
        _ => (HeaderName::WWW_AUTHENTICATE, HeaderName::AUTHORIZATION),
    };
    let challenge = challenge_response
        .headers
        .get_all(&challenge_header)
        .filter_map(|v| Challenge::parse(v).ok())
        .max_by_key(|c| c.algorithm == Algorithm::Sha256)
        .ok_or(AuthError::NoChallenge)?;
    let creds = authorize(
        &challenge,
        username,
        password,
        request.method.as_str(),
        &request.uri.to_string(),
        cnonce,
        nc,
    );
    // Drop older credentials for this realm, keep others (several proxies may challenge).
    let others: Vec<String> = request
        .headers
        .get_all(&answer_header)
        .filter(|v| {
            Credentials::parse(v)
                .map(|c| c.realm != challenge.realm)
                .unwrap_or(true)
        })
        .map(str::to_string)
        .collect();
    request.headers.remove(&answer_header);
    for v in others {
        request.headers.push(answer_header.clone(), v);
    }
    request.headers.push(answer_header, creds.to_string());
    Ok(())
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Authorized {
        username: String,
    },
    /// Correct digest, expired nonce: challenge again with `stale=true`.
    Stale,
    /// Wrong password, forged nonce, wrong realm or URI: challenge again (or 403).
    Rejected(&'static str),
    /// No credentials for our realm: challenge.
    Missing,
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

enum NonceState {
    Fresh,
    Expired,
    Invalid,
}

/// Server-side digest: challenges with self-validating nonces, and verification.
#[derive(Clone)]
pub struct DigestServer {
    realm: String,
    secret: Vec<u8>,
    nonce_ttl: u64,
}

impl fmt::Debug for DigestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestServer")
            .field("realm", &self.realm)
            .field("nonce_ttl", &self.nonce_ttl)
            .finish()
    }
}

impl DigestServer {
    /// `secret`: random bytes shared by every process that verifies (not a password).
    pub fn new(realm: impl Into<String>, secret: &[u8], nonce_ttl_secs: u64) -> DigestServer {
        DigestServer {
            realm: realm.into(),
            secret: secret.to_vec(),
            nonce_ttl: nonce_ttl_secs,
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A nonce for `now_unix` with the given salt (use random salts; fixed ones are for tests).
    pub fn make_nonce(&self, now_unix: u64, salt: u64) -> String {
        let mac = hmac_sha256(
            &self.secret,
            &[
                &now_unix.to_be_bytes(),
                &salt.to_be_bytes(),
                self.realm.as_bytes(),
            ],
        );
        let mut s = format!("{now_unix:016x}{salt:016x}");
        for b in &mac[..16] {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    fn check_nonce(&self, nonce: &str, now_unix: u64) -> NonceState {
        if nonce.len() != 64 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return NonceState::Invalid;
        }
        let (Ok(ts), Ok(salt)) = (
            u64::from_str_radix(&nonce[..16], 16),
            u64::from_str_radix(&nonce[16..32], 16),
        ) else {
            return NonceState::Invalid;
        };
        if !ct_eq(
            self.make_nonce(ts, salt).as_bytes(),
            nonce.to_ascii_lowercase().as_bytes(),
        ) {
            return NonceState::Invalid;
        }
        if ts > now_unix.saturating_add(60) {
            NonceState::Invalid // from the future: someone else's clock or a forged secret
        } else if now_unix.saturating_sub(ts) > self.nonce_ttl {
            NonceState::Expired
        } else {
            NonceState::Fresh
        }
    }

    /// A challenge with a fresh nonce.
    pub fn challenge(&self, now_unix: u64, algorithm: Algorithm, stale: bool) -> Challenge {
        Challenge {
            realm: self.realm.clone(),
            nonce: self.make_nonce(now_unix, rand::random()),
            opaque: None,
            algorithm,
            qop_auth: true,
            stale,
        }
    }

    /// A 401 (or 407 when `proxy`) for `req` with one challenge per algorithm (offer
    /// SHA-256 first; many phones only know MD5).
    pub fn challenge_response(
        &self,
        now_unix: u64,
        req: &Request,
        proxy: bool,
        stale: bool,
        algorithms: &[Algorithm],
        to_tag: &str,
    ) -> Response {
        let mut r = Response::from_request(req, if proxy { 407 } else { 401 }).with_to_tag(to_tag);
        let name = if proxy {
            HeaderName::PROXY_AUTHENTICATE
        } else {
            HeaderName::WWW_AUTHENTICATE
        };
        for &alg in algorithms {
            r.headers.push(
                name.clone(),
                self.challenge(now_unix, alg, stale).to_string(),
            );
        }
        r
    }

    /// Check credentials against a stored HA1 (`H(user:realm:password)`).
    pub fn verify_ha1(
        &self,
        now_unix: u64,
        method: &str,
        creds: &Credentials,
        ha1: &str,
    ) -> Verdict {
        if creds.realm != self.realm {
            return Verdict::Rejected("wrong realm");
        }
        let state = self.check_nonce(&creds.nonce, now_unix);
        if matches!(state, NonceState::Invalid) {
            return Verdict::Rejected("invalid nonce");
        }
        let expected = creds.expected_response(method, ha1);
        if !ct_eq(
            expected.as_bytes(),
            creds.response.to_ascii_lowercase().as_bytes(),
        ) {
            return Verdict::Rejected("wrong digest");
        }
        match state {
            NonceState::Expired => Verdict::Stale,
            _ => Verdict::Authorized {
                username: creds.username.clone(),
            },
        }
    }

    /// Check credentials against a clear-text password.
    pub fn verify(
        &self,
        now_unix: u64,
        method: &str,
        creds: &Credentials,
        password: &str,
    ) -> Verdict {
        self.verify_ha1(
            now_unix,
            method,
            creds,
            &ha1(creds.algorithm, &creds.username, &creds.realm, password),
        )
    }

    /// Check `req`'s `Authorization` (or `Proxy-Authorization` when `proxy`) for our
    /// realm. `password_of(username)` returns the user's password, `None` if unknown.
    /// The digest `uri` must name the Request-URI (or at least its host).
    pub fn verify_request(
        &self,
        now_unix: u64,
        req: &Request,
        proxy: bool,
        password_of: impl FnOnce(&str) -> Option<String>,
    ) -> Verdict {
        let name = if proxy {
            HeaderName::PROXY_AUTHORIZATION
        } else {
            HeaderName::AUTHORIZATION
        };
        let Some(creds) = req
            .headers
            .get_all(&name)
            .filter_map(|v| Credentials::parse(v).ok())
            .find(|c| c.realm == self.realm)
        else {
            return Verdict::Missing;
        };
        // Some UAs (SIPp among them) put a shortened URI in the digest; as PJSIP is
        // lenient here, accept any SIP URI naming the same host as the Request-URI.
        let parsed = parse_uri(&creds.uri).ok();
        let same_host = match (parsed.as_ref().and_then(|u| u.as_sip()), req.uri.as_sip()) {
            (Some(a), Some(b)) => a.host.same_as(&b.host),
            _ => false,
        };
        let uri_ok =
            creds.uri == req.uri.to_string() || parsed.as_ref() == Some(&req.uri) || same_host;
        if !uri_ok {
            return Verdict::Rejected("digest uri does not match the Request-URI");
        }
        match password_of(&creds.username) {
            Some(pw) => self.verify(now_unix, req.method.as_str(), &creds, &pw),
            None => Verdict::Rejected("unknown user"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::SipMessage;
    use crate::sip::parse::parse_message;

    #[test]
    fn hmac_rfc4231_case2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn rfc2617_md5_vector() {
        let ch = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert!(ch.qop_auth);
        assert_eq!(ch.algorithm, Algorithm::Md5);
        let c = authorize(
            &ch,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
            1,
        );
        assert_eq!(c.response, "6629fae49393a05397450978507c4ef1");
        let back = Credentials::parse(&c.to_string()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn rfc7616_sha256_vector() {
        let ch = Challenge {
            realm: "http-auth@example.org".into(),
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v".into(),
            opaque: Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS".into()),
            algorithm: Algorithm::Sha256,
            qop_auth: true,
            stale: false,
        };
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let c = authorize(
            &ch,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            cnonce,
            1,
        );
        assert_eq!(
            c.response,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        let md5 = Challenge {
            algorithm: Algorithm::Md5,
            ..ch
        };
        let c = authorize(
            &md5,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            cnonce,
            1,
        );
        assert_eq!(c.response, "8ca523f5e9506fed4657c9700eebdbec");
        assert!(Challenge::parse(&md5.to_string()).unwrap() == md5);
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            Challenge::parse("Basic realm=\"x\""),
            Err(AuthError::NotDigest)
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"n\""),
            Err(AuthError::Missing("realm"))
        );
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess"),
            Err(AuthError::UnsupportedAlgorithm(_))
        ));
        assert!(Challenge::parse("Digest realm=\"r\", realm=\"s\", nonce=\"n\"").is_err());
        assert!(Challenge::parse("Digest realm=\"r").is_err());
        assert!(Challenge::parse("Digest realm \"r\"").is_err());
        assert!(Credentials::parse(
            "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:a\", response=\"x\", qop=auth, nc=1, cnonce=\"c\""
        )
        .is_err());
        // Trailing comma and unquoted tokens are tolerated.
        let c = Challenge::parse("Digest realm=r,nonce=n,stale=TRUE,").unwrap();
        assert!(c.stale && !c.qop_auth);
    }

    fn register(auth: Option<&str>) -> Request {
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let raw = format!(
            "REGISTER sip:pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bKr\r\n\
From: <sip:100@pbx.example.com>;tag=a\r\nTo: <sip:100@pbx.example.com>\r\n\
Call-ID: reg1\r\nCSeq: 1 REGISTER\r\n{auth}Content-Length: 0\r\n\r\n"
        );
        match parse_message(raw.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn server_round_trip_stale_and_failures() {
        let server = DigestServer::new("voxpbx", b"0123456789abcdef", 30);
        let t = 1_700_000_000;
        let mut req = register(None);
        assert_eq!(
            server.verify_request(t, &req, false, |_| Some("pw".into())),
            Verdict::Missing
        );

        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let challenge = server.challenge_response(t, &req, false, false, &[alg], "tt");
            assert_eq!(challenge.status, 401);
            let mut r = req.clone();
            authorize_request(&mut r, &challenge, "100", "pw", "cn0nce", 1).unwrap();
            assert_eq!(r.headers.count(&HeaderName::AUTHORIZATION), 1);
            let ok = Verdict::Authorized {
                username: "100".into(),
            };
            let lookup = |u: &str| (u == "100").then(|| "pw".to_string());
            assert_eq!(server.verify_request(t + 5, &r, false, lookup), ok);
            assert_eq!(
                server.verify_request(t + 31, &r, false, lookup),
                Verdict::Stale
            );
            assert_eq!(
                server.verify_request(t + 5, &r, false, |_| Some("bad".into())),
                Verdict::Rejected("wrong digest")
            );
            assert_eq!(
                server.verify_request(t + 5, &r, false, |_| None),
                Verdict::Rejected("unknown user")
            );
            // Re-authorizing replaces the credentials for the realm.
            authorize_request(&mut r, &challenge, "100", "pw", "cn0nce", 2).unwrap();
            assert_eq!(r.headers.count(&HeaderName::AUTHORIZATION), 1);
            req = register(None);
        }

        // A forged nonce, another realm's secret, a nonce from the future, a wrong URI.
        let other = DigestServer::new("voxpbx", b"another secret", 30);
        for nonce in [
            other.make_nonce(t, 1),
            "00".repeat(32),
            server.make_nonce(t + 3600, 1),
        ] {
            let ch = Challenge {
                realm: "voxpbx".into(),
                nonce,
                opaque: None,
                algorithm: Algorithm::Md5,
                qop_auth: true,
                stale: false,
            };
            let creds = authorize(&ch, "100", "pw", "REGISTER", "sip:pbx.example.com", "c", 1);
            let r = register(Some(&creds.to_string()));
            assert_eq!(
                server.verify_request(t, &r, false, |_| Some("pw".into())),
                Verdict::Rejected("invalid nonce")
            );
        }
        let ch = server.challenge(t, Algorithm::Md5, false);
        let creds = authorize(
            &ch,
            "100",
            "pw",
            "REGISTER",
            "sip:elsewhere.example.com",
            "c",
            1,
        );
        let r = register(Some(&creds.to_string()));
        assert_eq!(
            server.verify_request(t, &r, false, |_| Some("pw".into())),
            Verdict::Rejected("digest uri does not match the Request-URI")
        );
        // RFC 2069 style (no qop) is still accepted.
        let ch = Challenge {
            qop_auth: false,
            ..server.challenge(t, Algorithm::Md5, false)
        };
        let creds = authorize(&ch, "100", "pw", "REGISTER", "sip:pbx.example.com", "c", 1);
        assert!(creds.qop.is_none());
        let r = register(Some(&creds.to_string()));
        assert!(matches!(
            server.verify_request(t, &r, false, |_| Some("pw".into())),
            Verdict::Authorized { .. }
        ));
    }

    #[test]
    fn proxy_challenge_prefers_sha256() {
        let server = DigestServer::new("voxpbx", b"k", 30);
        let mut req = register(None);
        let ch = server.challenge_response(
            10,
            &req,
            true,
            true,
            &[Algorithm::Sha256, Algorithm::Md5],
            "t",
        );
        assert_eq!(ch.status, 407);
        assert_eq!(ch.headers.count(&HeaderName::PROXY_AUTHENTICATE), 2);
        assert!(ch
            .headers
            .get(&HeaderName::PROXY_AUTHENTICATE)
            .unwrap()
            .contains("stale=true"));
        authorize_request(&mut req, &ch, "100", "pw", "c", 1).unwrap();
        let v = req.headers.get(&HeaderName::PROXY_AUTHORIZATION).unwrap();
        assert!(v.contains("algorithm=SHA-256"));
        assert!(matches!(
            server.verify_request(12, &req, true, |_| Some("pw".into())),
            Verdict::Authorized { .. }
        ));
        assert_eq!(
            authorize_request(&mut req, &Response::new(401), "u", "p", "c", 1),
            Err(AuthError::NoChallenge)
        );
    }
}
