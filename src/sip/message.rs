//! The SIP message model (RFC 3261 §7, §19, §20): requests, responses, URIs, name-addrs,
//! Via, CSeq, and an ordered header list with case-insensitive names and compact forms.
//!
//! Header values are kept as text (unfolded and trimmed, one entry per list element for
//! the headers whose grammar allows a comma-separated list). Typed views (`Via`,
//! `NameAddr`, `CSeq`, ...) are parsed on demand by the accessors on [`Headers`]; the
//! message parser ([`super::parse::parse_message`]) has already checked that the mandatory
//! ones parse, so on a parsed message those accessors do not fail.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use bytes::Bytes;

use super::parse::{self, SipParseError};

/// A request method. Known methods are matched case-sensitively (RFC 3261 §7.1);
/// anything else that is a token is an extension method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// Any other token, e.g. `NEWMETHOD`.
    Extension(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(s) => s,
        }
    }

    /// Parse a method token; `None` if it is not a valid token.
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other if !other.is_empty() && other.bytes().all(parse::is_token_char) => {
                Method::Extension(other.to_string())
            }
            _ => return None,
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = SipParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::parse(s).ok_or_else(|| SipParseError::BadStartLine(format!("bad method {s:?}")))
    }
}

/// A transport named in a Via header or used to send a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Sctp,
    Ws,
    Wss,
}

impl Transport {
    /// Reliable transports switch off the retransmission timers (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }
    /// The token used in Via (`UDP`, `TCP`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }
    /// Case-insensitive; `None` for unknown transports.
    pub fn from_token(s: &str) -> Option<Transport> {
        [
            Transport::Udp,
            Transport::Tcp,
            Transport::Tls,
            Transport::Sctp,
            Transport::Ws,
            Transport::Wss,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
    /// Default port for this transport (5061 for TLS, 5060 otherwise; WS/WSS have none
    /// in SIP, 80/443 are their HTTP defaults).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            Transport::Ws => 80,
            Transport::Wss => 443,
            _ => 5060,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host: a domain name or an IP address (IPv6 written in brackets on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Domain(String),
    Ip(IpAddr),
}

impl Host {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Domain(_) => None,
        }
    }
    /// Case-insensitive comparison for domains, value comparison for addresses.
    pub fn same_as(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Domain(a), Host::Domain(b)) => a.eq_ignore_ascii_case(b),
            (Host::Ip(a), Host::Ip(b)) => a == b,
            _ => false,
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Host {
        Host::Ip(ip)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
        }
    }
}

/// `;name[=value]`. Values are kept as written (a quoted-string value keeps its quotes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

impl Param {
    pub fn new(name: impl Into<String>, value: Option<String>) -> Param {
        Param {
            name: name.into(),
            value,
        }
    }
}

/// Look up a parameter by case-insensitive name. `Some(None)` is a flag parameter.
pub fn find_param<'a>(params: &'a [Param], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.value.as_deref())
}

/// Replace (or append) a parameter by case-insensitive name.
pub fn set_param(params: &mut Vec<Param>, name: &str, value: Option<String>) {
    if let Some(p) = params
        .iter_mut()
        .find(|p| p.name.eq_ignore_ascii_case(name))
    {
        p.value = value;
    } else {
        params.push(Param::new(name, value));
    }
}

fn write_params(f: &mut fmt::Formatter<'_>, params: &[Param]) -> fmt::Result {
    for p in params {
        f.write_char(';')?;
        f.write_str(&p.name)?;
        if let Some(v) = &p.value {
            f.write_char('=')?;
            f.write_str(v)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Sip,
    Sips,
}

/// A `sip:` / `sips:` URI (RFC 3261 §19.1). User, password, parameters and headers are
/// kept in their escaped form as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SipUri {
    pub scheme: Scheme,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Vec<Param>,
    /// `?name=value&...` headers (never allowed in a Request-URI).
    pub headers: Vec<(String, String)>,
}

impl SipUri {
    pub fn new(user: Option<&str>, host: Host, port: Option<u16>) -> SipUri {
        SipUri {
            scheme: Scheme::Sip,
            user: user.map(str::to_string),
            password: None,
            host,
            port,
            params: Vec::new(),
            headers: Vec::new(),
        }
    }
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
    /// `;lr` present (loose router, RFC 3261 §16.12).
    pub fn is_loose_router(&self) -> bool {
        self.param("lr").is_some()
    }
    /// The `transport` URI parameter, if it names a known transport.
    pub fn transport(&self) -> Option<Transport> {
        self.param("transport")
            .flatten()
            .and_then(Transport::from_token)
    }
    /// Port to use: the explicit port, else 5061 for `sips:` / `transport=tls`, else 5060.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(
            if self.scheme == Scheme::Sips || self.transport() == Some(Transport::Tls) {
                5061
            } else {
                5060
            },
        )
    }
    /// The socket address when the host is an IP literal (DNS is the shell's job).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .ip()
            .map(|ip| SocketAddr::new(ip, self.port_or_default()))
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.scheme {
            Scheme::Sip => "sip:",
            Scheme::Sips => "sips:",
        })?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if let Some(pw) = &self.password {
                write!(f, ":{pw}")?;
            }
            f.write_char('@')?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write_params(f, &self.params)?;
        for (i, (n, v)) in self.headers.iter().enumerate() {
            f.write_char(if i == 0 { '?' } else { '&' })?;
            write!(f, "{n}={v}")?;
        }
        Ok(())
    }
}

impl FromStr for SipUri {
    type Err = SipParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match parse::parse_uri(s)? {
            Uri::Sip(u) => Ok(u),
            Uri::Other(_) => Err(SipParseError::BadUri {
                uri: s.to_string(),
                reason: "not a sip: or sips: URI".into(),
            }),
        }
    }
}

/// Any URI that may appear in a Request-URI or an address header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Uri {
    Sip(SipUri),
    /// Another scheme (`tel:`, `http:`, unknown ones), kept verbatim (RFC 4475 §3.3.2).
    Other(String),
}

impl Uri {
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other(_) => None,
        }
    }
    pub fn as_sip_mut(&mut self) -> Option<&mut SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other(_) => None,
        }
    }
}

impl From<SipUri> for Uri {
    fn from(u: SipUri) -> Uri {
        Uri::Sip(u)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Other(s) => f.write_str(s),
        }
    }
}

impl FromStr for Uri {
    type Err = SipParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse::parse_uri(s)
    }
}

/// `["display name"] <uri> *(;param)` — From, To, Contact, Route, Record-Route, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Unescaped display name.
    pub display_name: Option<String>,
    pub uri: Uri,
    /// Header parameters (after the `>`), e.g. `tag`, `expires`, `q`.
    pub params: Vec<Param>,
}

impl NameAddr {
    pub fn new(uri: impl Into<Uri>) -> NameAddr {
        NameAddr {
            display_name: None,
            uri: uri.into(),
            params: Vec::new(),
        }
    }
    pub fn tag(&self) -> Option<&str> {
        find_param(&self.params, "tag").flatten()
    }
    pub fn set_tag(&mut self, tag: &str) {
        set_param(&mut self.params, "tag", Some(tag.to_string()));
    }
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display_name {
            write_quoted(f, d)?;
            f.write_char(' ')?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

impl FromStr for NameAddr {
    type Err = SipParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse::parse_name_addr(s, "name-addr")
    }
}

/// Write `s` as a quoted-string: `"` and `\` and control characters are escaped as
/// quoted-pairs; CR and LF (which no quoted-pair can carry) become spaces.
pub(crate) fn write_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '\r' | '\n' => f.write_char(' ')?,
            '"' | '\\' => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// One Via value: `SIP/2.0/<transport> host[:port] *(;param)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token as written, upper-cased (`UDP`, `TCP`, or an unknown one).
    pub transport: String,
    pub host: Host,
    pub port: Option<u16>,
    /// `branch`, `received`, `rport`, `maddr`, `ttl` and extensions, in order.
    pub params: Vec<Param>,
}

impl Via {
    pub fn new(transport: Transport, host: Host, port: Option<u16>, branch: &str) -> Via {
        Via {
            transport: transport.as_str().to_string(),
            host,
            port,
            params: vec![Param::new("branch", Some(branch.to_string()))],
        }
    }
    pub fn transport_kind(&self) -> Option<Transport> {
        Transport::from_token(&self.transport)
    }
    pub fn branch(&self) -> Option<&str> {
        find_param(&self.params, "branch").flatten()
    }
    pub fn set_branch(&mut self, branch: &str) {
        set_param(&mut self.params, "branch", Some(branch.to_string()));
    }
    /// The `received` parameter as written (IPv6 may be bracketed).
    pub fn received(&self) -> Option<&str> {
        find_param(&self.params, "received").flatten()
    }
    pub fn received_ip(&self) -> Option<IpAddr> {
        let r = self.received()?;
        r.trim_start_matches('[').trim_end_matches(']').parse().ok()
    }
    pub fn set_received(&mut self, ip: IpAddr) {
        set_param(&mut self.params, "received", Some(ip.to_string()));
    }
    /// `None`: no rport; `Some(None)`: `;rport` requested (RFC 3581); `Some(Some(p))`: filled.
    pub fn rport(&self) -> Option<Option<u16>> {
        find_param(&self.params, "rport").map(|v| v.and_then(|p| p.parse().ok()))
    }
    pub fn set_rport(&mut self, port: u16) {
        set_param(&mut self.params, "rport", Some(port.to_string()));
    }
    /// `host[:port]` as used for transaction matching (host lower-cased).
    pub fn sent_by(&self) -> String {
        let mut s = self.host.to_string().to_ascii_lowercase();
        if let Some(p) = self.port {
            let _ = write!(s, ":{p}");
        }
        s
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write_params(f, &self.params)
    }
}

impl FromStr for Via {
    type Err = SipParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse::parse_via(s)
    }
}

/// `CSeq: <seq> <method>`; seq is below 2^31 (RFC 3261 §8.1.1.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

impl FromStr for CSeq {
    type Err = SipParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse::parse_cseq(s)
    }
}

/// A header name compared case-insensitively. Compact forms (`v f t i m l c k s e o r u b
/// x a j d y`) and known names are mapped to their canonical spelling; unknown names keep
/// the spelling they arrived with.
#[derive(Debug, Clone)]
pub struct HeaderName(Cow<'static, str>);

macro_rules! header_names {
    ($($konst:ident = $name:literal),* $(,)?) => {
        impl HeaderName {
            $(pub const $konst: HeaderName = HeaderName(Cow::Borrowed($name));)*
        }
    };
}

header_names! {
    VIA = "Via", FROM = "From", TO = "To", CALL_ID = "Call-ID", CSEQ = "CSeq",
    CONTACT = "Contact", MAX_FORWARDS = "Max-Forwards", CONTENT_LENGTH = "Content-Length",
    CONTENT_TYPE = "Content-Type", CONTENT_ENCODING = "Content-Encoding", ROUTE = "Route",
    RECORD_ROUTE = "Record-Route", SUPPORTED = "Supported", REQUIRE = "Require",
    PROXY_REQUIRE = "Proxy-Require", UNSUPPORTED = "Unsupported", ALLOW = "Allow",
    ACCEPT = "Accept", ACCEPT_ENCODING = "Accept-Encoding", ACCEPT_LANGUAGE = "Accept-Language",
    SUBJECT = "Subject", EXPIRES = "Expires", MIN_EXPIRES = "Min-Expires",
    USER_AGENT = "User-Agent", SERVER = "Server", WWW_AUTHENTICATE = "WWW-Authenticate",
    AUTHORIZATION = "Authorization", PROXY_AUTHENTICATE = "Proxy-Authenticate",
    PROXY_AUTHORIZATION = "Proxy-Authorization", AUTHENTICATION_INFO = "Authentication-Info",
    EVENT = "Event", ALLOW_EVENTS = "Allow-Events", SUBSCRIPTION_STATE = "Subscription-State",
    REFER_TO = "Refer-To", REFERRED_BY = "Referred-By", REPLACES = "Replaces",
    SESSION_EXPIRES = "Session-Expires", MIN_SE = "Min-SE", DATE = "Date",
    TIMESTAMP = "Timestamp", RETRY_AFTER = "Retry-After", WARNING = "Warning",
    ORGANIZATION = "Organization", PRIORITY = "Priority", REPLY_TO = "Reply-To",
    IN_REPLY_TO = "In-Reply-To", ALERT_INFO = "Alert-Info", CALL_INFO = "Call-Info",
    ERROR_INFO = "Error-Info", CONTENT_DISPOSITION = "Content-Disposition",
    CONTENT_LANGUAGE = "Content-Language", MIME_VERSION = "MIME-Version", PATH = "Path",
    SERVICE_ROUTE = "Service-Route", REASON = "Reason", RACK = "RAck", RSEQ = "RSeq",
    ACCEPT_CONTACT = "Accept-Contact", REJECT_CONTACT = "Reject-Contact",
    REQUEST_DISPOSITION = "Request-Disposition", IDENTITY = "Identity",
    P_ASSERTED_IDENTITY = "P-Asserted-Identity", P_PREFERRED_IDENTITY = "P-Preferred-Identity",
    PRIVACY = "Privacy", DIVERSION = "Diversion", HISTORY_INFO = "History-Info",
}

/// Known names: (canonical, comma-separated list allowed).
fn known_header(lower: &[u8]) -> Option<(HeaderName, bool)> {
    let (name, list) = match lower {
        b"v" | b"via" => (HeaderName::VIA, true),
        b"f" | b"from" => (HeaderName::FROM, false),
        b"t" | b"to" => (HeaderName::TO, false),
        b"i" | b"call-id" => (HeaderName::CALL_ID, false),
        b"cseq" => (HeaderName::CSEQ, false),
        b"m" | b"contact" => (HeaderName::CONTACT, true),
        b"max-forwards" => (HeaderName::MAX_FORWARDS, false),
        b"l" | b"content-length" => (HeaderName::CONTENT_LENGTH, false),
        b"c" | b"content-type" => (HeaderName::CONTENT_TYPE, false),
        b"e" | b"content-encoding" => (HeaderName::CONTENT_ENCODING, true),
        b"route" => (HeaderName::ROUTE, true),
        b"record-route" => (HeaderName::RECORD_ROUTE, true),
        b"k" | b"supported" => (HeaderName::SUPPORTED, true),
        b"require" => (HeaderName::REQUIRE, true),
        b"proxy-require" => (HeaderName::PROXY_REQUIRE, true),
        b"unsupported" => (HeaderName::UNSUPPORTED, true),
        b"allow" => (HeaderName::ALLOW, true),
        b"accept" => (HeaderName::ACCEPT, true),
        b"accept-encoding" => (HeaderName::ACCEPT_ENCODING, true),
        b"accept-language" => (HeaderName::ACCEPT_LANGUAGE, true),
        b"s" | b"subject" => (HeaderName::SUBJECT, false),
        b"expires" => (HeaderName::EXPIRES, false),
        b"min-expires" => (HeaderName::MIN_EXPIRES, false),
        b"user-agent" => (HeaderName::USER_AGENT, false),
        b"server" => (HeaderName::SERVER, false),
        b"www-authenticate" => (HeaderName::WWW_AUTHENTICATE, false),
        b"authorization" => (HeaderName::AUTHORIZATION, false),
        b"proxy-authenticate" => (HeaderName::PROXY_AUTHENTICATE, false),
        b"proxy-authorization" => (HeaderName::PROXY_AUTHORIZATION, false),
        b"authentication-info" => (HeaderName::AUTHENTICATION_INFO, false),
        b"o" | b"event" => (HeaderName::EVENT, false),
        b"u" | b"allow-events" => (HeaderName::ALLOW_EVENTS, true),
        b"subscription-state" => (HeaderName::SUBSCRIPTION_STATE, false),
        b"r" | b"refer-to" => (HeaderName::REFER_TO, false),
        b"b" | b"referred-by" => (HeaderName::REFERRED_BY, false),
        b"replaces" => (HeaderName::REPLACES, false),
        b"x" | b"session-expires" => (HeaderName::SESSION_EXPIRES, false),
        b"min-se" => (HeaderName::MIN_SE, false),
        b"date" => (HeaderName::DATE, false),
        b"timestamp" => (HeaderName::TIMESTAMP, false),
        b"retry-after" => (HeaderName::RETRY_AFTER, false),
        b"warning" => (HeaderName::WARNING, true),
        b"organization" => (HeaderName::ORGANIZATION, false),
        b"priority" => (HeaderName::PRIORITY, false),
        b"reply-to" => (HeaderName::REPLY_TO, false),
        b"in-reply-to" => (HeaderName::IN_REPLY_TO, true),
        b"alert-info" => (HeaderName::ALERT_INFO, true),
        b"call-info" => (HeaderName::CALL_INFO, true),
        b"error-info" => (HeaderName::ERROR_INFO, true),
        b"content-disposition" => (HeaderName::CONTENT_DISPOSITION, false),
        b"content-language" => (HeaderName::CONTENT_LANGUAGE, true),
        b"mime-version" => (HeaderName::MIME_VERSION, false),
        b"path" => (HeaderName::PATH, true),
        b"service-route" => (HeaderName::SERVICE_ROUTE, true),
        b"reason" => (HeaderName::REASON, true),
        b"rack" => (HeaderName::RACK, false),
        b"rseq" => (HeaderName::RSEQ, false),
        b"a" | b"accept-contact" => (HeaderName::ACCEPT_CONTACT, true),
        b"j" | b"reject-contact" => (HeaderName::REJECT_CONTACT, true),
        b"d" | b"request-disposition" => (HeaderName::REQUEST_DISPOSITION, true),
        b"y" | b"identity" => (HeaderName::IDENTITY, false),
        b"p-asserted-identity" => (HeaderName::P_ASSERTED_IDENTITY, true),
        b"p-preferred-identity" => (HeaderName::P_PREFERRED_IDENTITY, true),
        b"privacy" => (HeaderName::PRIVACY, false),
        b"diversion" => (HeaderName::DIVERSION, true),
        b"history-info" => (HeaderName::HISTORY_INFO, true),
        _ => return None,
    };
    Some((name, list))
}

impl HeaderName {
    /// Canonicalize a name as received (compact forms expanded).
    pub fn new(name: &str) -> HeaderName {
        Self::classify(name).0
    }

    /// The canonical name and whether its grammar is a comma-separated list.
    pub(crate) fn classify(name: &str) -> (HeaderName, bool) {
        let mut buf = [0u8; 24];
        if name.len() <= buf.len() {
            for (d, s) in buf.iter_mut().zip(name.bytes()) {
                *d = s.to_ascii_lowercase();
            }
            if let Some(k) = known_header(&buf[..name.len()]) {
                return k;
            }
        }
        (HeaderName(Cow::Owned(name.to_string())), false)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &HeaderName) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}
impl Eq for HeaderName {}

impl PartialEq<str> for HeaderName {
    fn eq(&self, other: &str) -> bool {
        *self == HeaderName::new(other)
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for HeaderName {
    fn from(s: &str) -> HeaderName {
        HeaderName::new(s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: String,
}

/// Headers in message order. List-valued headers hold one entry per element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    list: Vec<Header>,
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.list.iter()
    }
    pub fn len(&self) -> usize {
        self.list.len()
    }
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    pub fn push(&mut self, name: HeaderName, value: impl Into<String>) {
        self.list.push(Header {
            name,
            value: value.into(),
        });
    }
    /// Insert before every other header of the same name (a new top Via, a Route).
    pub fn push_front(&mut self, name: HeaderName, value: impl Into<String>) {
        let pos = self
            .list
            .iter()
            .position(|h| h.name == name)
            .unwrap_or(self.list.len());
        self.list.insert(
            pos,
            Header {
                name,
                value: value.into(),
            },
        );
    }
    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&str> {
        self.list
            .iter()
            .find(|h| h.name == *name)
            .map(|h| h.value.as_str())
    }
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.list
            .iter()
            .filter(move |h| h.name == *name)
            .map(|h| h.value.as_str())
    }
    pub fn count(&self, name: &HeaderName) -> usize {
        self.list.iter().filter(|h| h.name == *name).count()
    }
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.list.iter().any(|h| h.name == *name)
    }
    /// Replace the first value of `name` in place and drop the others; append if absent.
    pub fn set(&mut self, name: HeaderName, value: impl Into<String>) {
        let value = value.into();
        match self.list.iter().position(|h| h.name == name) {
            Some(pos) => {
                self.list[pos].value = value;
                let mut i = 0;
                self.list.retain(|h| {
                    let keep = i <= pos || h.name != name;
                    i += 1;
                    keep
                });
            }
            None => self.push(name, value),
        }
    }
    /// Remove every value of `name`; returns how many were removed.
    pub fn remove(&mut self, name: &HeaderName) -> usize {
        let before = self.list.len();
        self.list.retain(|h| h.name != *name);
        before - self.list.len()
    }
    /// Remove the first value of `name` (e.g. pop the top Via).
    pub fn remove_first(&mut self, name: &HeaderName) -> Option<String> {
        let pos = self.list.iter().position(|h| h.name == *name)?;
        Some(self.list.remove(pos).value)
    }

    fn required(&self, name: &HeaderName, label: &'static str) -> Result<&str, SipParseError> {
        self.get(name).ok_or(SipParseError::MissingHeader(label))
    }

    /// Every Via, top first.
    pub fn vias(&self) -> Result<Vec<Via>, SipParseError> {
        self.get_all(&HeaderName::VIA)
            .map(parse::parse_via)
            .collect()
    }
    pub fn top_via(&self) -> Result<Via, SipParseError> {
        parse::parse_via(self.required(&HeaderName::VIA, "Via")?)
    }
    /// Replace the top Via value (keeps its position).
    pub fn set_top_via(&mut self, via: &Via) {
        if let Some(h) = self.list.iter_mut().find(|h| h.name == HeaderName::VIA) {
            h.value = via.to_string();
        } else {
            self.push(HeaderName::VIA, via.to_string());
        }
    }
    pub fn from(&self) -> Result<NameAddr, SipParseError> {
        parse::parse_name_addr(self.required(&HeaderName::FROM, "From")?, "From")
    }
    pub fn to(&self) -> Result<NameAddr, SipParseError> {
        parse::parse_name_addr(self.required(&HeaderName::TO, "To")?, "To")
    }
    pub fn call_id(&self) -> Result<&str, SipParseError> {
        self.required(&HeaderName::CALL_ID, "Call-ID")
    }
    pub fn cseq(&self) -> Result<CSeq, SipParseError> {
        parse::parse_cseq(self.required(&HeaderName::CSEQ, "CSeq")?)
    }
    /// `None` when absent.
    pub fn max_forwards(&self) -> Result<Option<u8>, SipParseError> {
        self.get(&HeaderName::MAX_FORWARDS)
            .map(parse::parse_max_forwards)
            .transpose()
    }
    /// Contacts in order; a `Contact: *` yields an empty list and [`Headers::is_contact_star`].
    pub fn contacts(&self) -> Result<Vec<NameAddr>, SipParseError> {
        self.get_all(&HeaderName::CONTACT)
            .filter(|v| v.trim() != "*")
            .map(|v| parse::parse_name_addr(v, "Contact"))
            .collect()
    }
    pub fn is_contact_star(&self) -> bool {
        self.get_all(&HeaderName::CONTACT).any(|v| v.trim() == "*")
    }
    pub fn routes(&self) -> Result<Vec<NameAddr>, SipParseError> {
        self.get_all(&HeaderName::ROUTE)
            .map(|v| parse::parse_name_addr(v, "Route"))
            .collect()
    }
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, SipParseError> {
        self.get_all(&HeaderName::RECORD_ROUTE)
            .map(|v| parse::parse_name_addr(v, "Record-Route"))
            .collect()
    }
    pub fn content_type(&self) -> Option<&str> {
        self.get(&HeaderName::CONTENT_TYPE)
    }
    /// The value of a header that holds a list of tokens (`Supported`, `Require`,
    /// `Allow`), flattened across repeated headers.
    pub fn tokens<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for h in &self.list {
            if h.name == HeaderName::CONTENT_LENGTH {
                continue;
            }
            out.extend_from_slice(h.name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            push_header_value(out, &h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Append a header value, turning any CR/LF into spaces so a value can never inject a line.
fn push_header_value(out: &mut Vec<u8>, value: &str) {
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        out.extend(
            value
                .bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.extend_from_slice(value.as_bytes());
    }
}

fn encode_tail(headers: &Headers, body: &[u8], out: &mut Vec<u8>) {
    headers.encode(out);
    let _ = write!(VecWriter(out), "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
}

struct VecWriter<'a>(&'a mut Vec<u8>);
impl fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Bytes,
}

impl Request {
    pub fn new(method: Method, uri: impl Into<Uri>) -> Request {
        Request {
            method,
            uri: uri.into(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Serialize with CRLF line ends; `Content-Length` always states the body length.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(512 + self.body.len());
        let _ = write!(VecWriter(out), "{} {} SIP/2.0\r\n", self.method, self.uri);
        encode_tail(&self.headers, &self.body, out);
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
    /// Set the body and its Content-Type (`None` removes Content-Type).
    pub fn set_body(&mut self, content_type: Option<&str>, body: impl Into<Bytes>) {
        self.body = body.into();
        match content_type {
            Some(ct) => self.headers.set(HeaderName::CONTENT_TYPE, ct),
            None => {
                self.headers.remove(&HeaderName::CONTENT_TYPE);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Bytes,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            reason: reason_phrase(status).to_string(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// A response to `req` (RFC 3261 §8.2.6.2): copies every Via, From, To, Call-ID and
    /// CSeq (values exactly as received), and for a dialog-creating 101–299 response to
    /// INVITE/SUBSCRIBE also Record-Route (§12.1.1). Add a To tag with [`Response::with_to_tag`].
    pub fn from_request(req: &Request, status: u16) -> Response {
        let mut r = Response::new(status);
        let copy_rr = (101..300).contains(&status)
            && matches!(req.method, Method::Invite | Method::Subscribe);
        for h in req.headers.iter() {
            let n = &h.name;
            if *n == HeaderName::VIA
                || *n == HeaderName::FROM
                || *n == HeaderName::TO
                || *n == HeaderName::CALL_ID
                || *n == HeaderName::CSEQ
                || (copy_rr && *n == HeaderName::RECORD_ROUTE)
            {
                r.headers.push(n.clone(), h.value.clone());
            }
        }
        r
    }

    /// Add `tag` to the To header unless it already has one.
    pub fn with_to_tag(mut self, tag: &str) -> Response {
        self.set_to_tag(tag);
        self
    }
    pub fn set_to_tag(&mut self, tag: &str) {
        if let Ok(mut to) = self.headers.to() {
            if to.tag().is_none() {
                to.set_tag(tag);
                self.headers.set(HeaderName::TO, to.to_string());
            }
        }
    }
    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
    pub fn is_final(&self) -> bool {
        self.status >= 200
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(512 + self.body.len());
        let reason: Cow<'_, str> = if self.reason.contains(['\r', '\n']) {
            Cow::Owned(self.reason.replace(['\r', '\n'], " "))
        } else {
            Cow::Borrowed(&self.reason)
        };
        let _ = write!(VecWriter(out), "SIP/2.0 {:03} {}\r\n", self.status, reason);
        encode_tail(&self.headers, &self.body, out);
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
    pub fn set_body(&mut self, content_type: Option<&str>, body: impl Into<Bytes>) {
        self.body = body.into();
        match content_type {
            Some(ct) => self.headers.set(HeaderName::CONTENT_TYPE, ct),
            None => {
                self.headers.remove(&HeaderName::CONTENT_TYPE);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    Request(Request),
    Response(Response),
}

impl SipMessage {
    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            SipMessage::Request(r) => &mut r.headers,
            SipMessage::Response(r) => &mut r.headers,
        }
    }
    pub fn body(&self) -> &Bytes {
        match self {
            SipMessage::Request(r) => &r.body,
            SipMessage::Response(r) => &r.body,
        }
    }
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            SipMessage::Request(r) => r.encode(out),
            SipMessage::Response(r) => r.encode(out),
        }
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

impl From<Request> for SipMessage {
    fn from(r: Request) -> SipMessage {
        SipMessage::Request(r)
    }
}
impl From<Response> for SipMessage {
    fn from(r: Response) -> SipMessage {
        SipMessage::Response(r)
    }
}

/// The default reason phrase for a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        199 => "Early Dialog Terminated",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        580 => "Precondition Failure",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match status / 100 {
            1 => "Progress",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// The RFC 3261 branch magic cookie.
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// A fresh branch: the magic cookie plus 64 random bits.
pub fn new_branch() -> String {
    format!("{BRANCH_COOKIE}{:016x}", rand::random::<u64>())
}

/// A fresh From/To tag (64 random bits).
pub fn new_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A fresh Call-ID: 128 random bits, `@host` appended when given.
pub fn new_call_id(host: Option<&str>) -> String {
    let id = format!("{:032x}", rand::random::<u128>());
    match host {
        Some(h) => format!("{id}@{h}"),
        None => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> SipUri {
        s.parse().unwrap()
    }

    #[test]
    fn header_names_compact_and_case() {
        assert_eq!(HeaderName::new("v"), HeaderName::VIA);
        assert_eq!(HeaderName::new("V").as_str(), "Via");
        assert_eq!(HeaderName::new("cAlL-iD").as_str(), "Call-ID");
        assert_eq!(HeaderName::new("l"), HeaderName::CONTENT_LENGTH);
        assert_eq!(HeaderName::new("k"), HeaderName::SUPPORTED);
        assert_eq!(HeaderName::new("X-Custom").as_str(), "X-Custom");
        assert_eq!(HeaderName::new("x-custom"), HeaderName::new("X-CUSTOM"));
        assert!(HeaderName::classify("Route").1);
        assert!(!HeaderName::classify("Authorization").1);
    }

    #[test]
    fn headers_set_remove_front() {
        let mut h = Headers::new();
        h.push(HeaderName::VIA, "SIP/2.0/UDP a");
        h.push(HeaderName::new("X-A"), "1");
        h.push(HeaderName::VIA, "SIP/2.0/UDP b");
        h.push_front(HeaderName::VIA, "SIP/2.0/UDP top");
        assert_eq!(h.get(&HeaderName::VIA), Some("SIP/2.0/UDP top"));
        h.set(HeaderName::VIA, "SIP/2.0/UDP only");
        assert_eq!(
            h.get_all(&HeaderName::VIA).collect::<Vec<_>>(),
            vec!["SIP/2.0/UDP only"]
        );
        assert_eq!(
            h.iter().next().map(|x| x.value.as_str()),
            Some("SIP/2.0/UDP only")
        );
        assert_eq!(h.remove(&HeaderName::new("x-a")), 1);
        assert_eq!(h.len(), 1);
        assert_eq!(
            h.remove_first(&HeaderName::VIA).as_deref(),
            Some("SIP/2.0/UDP only")
        );
        assert!(h.is_empty());
    }

    #[test]
    fn uri_display_roundtrip() {
        for s in [
            "sip:alice@example.com",
            "sips:bob:secret@[2001:db8::1]:5071;transport=tcp;lr?subject=hi&x=y",
            "sip:192.0.2.4:5060;maddr=239.255.255.1",
            "sip:example.com",
        ] {
            assert_eq!(uri(s).to_string(), s);
        }
        let u = uri("sips:example.com");
        assert_eq!(u.port_or_default(), 5061);
        assert_eq!(uri("sip:1.2.3.4;transport=tls").port_or_default(), 5061);
        assert_eq!(
            uri("sip:1.2.3.4:5080").socket_addr(),
            Some("1.2.3.4:5080".parse().unwrap())
        );
        assert!(uri("sip:p.example.com;lr").is_loose_router());
    }

    #[test]
    fn name_addr_display_escapes() {
        let mut na = NameAddr::new(uri("sip:a@b"));
        na.display_name = Some("Say \"hi\"\\\r\n".into());
        na.set_tag("xyz");
        let s = na.to_string();
        assert_eq!(s, "\"Say \\\"hi\\\"\\\\  \" <sip:a@b>;tag=xyz");
        let back: NameAddr = s.parse().unwrap();
        assert_eq!(back.display_name.as_deref(), Some("Say \"hi\"\\  "));
        assert_eq!(back.tag(), Some("xyz"));
    }

    #[test]
    fn via_accessors() {
        let mut v: Via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport"
            .parse()
            .unwrap();
        assert_eq!(v.branch(), Some("z9hG4bKabc"));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.transport_kind(), Some(Transport::Udp));
        v.set_received("192.0.2.9".parse().unwrap());
        v.set_rport(4000);
        assert_eq!(v.rport(), Some(Some(4000)));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport=4000;received=192.0.2.9"
        );
        assert_eq!(v.received_ip(), Some("192.0.2.9".parse().unwrap()));
        assert_eq!(v.sent_by(), "10.0.0.1:5060");
    }

    #[test]
    fn response_from_request_copies_headers() {
        let raw = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
Via: SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\n\
Record-Route: <sip:p1.example.com;lr>\r\n\
From: Alice <sip:alice@example.com>;tag=1928\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: abc@host\r\n\
CSeq: 314 INVITE\r\n\
Max-Forwards: 70\r\n\
Subject: lunch\r\n\
Content-Length: 0\r\n\r\n";
        let req = match parse::parse_message(raw).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        };
        for status in [100u16, 180, 200, 400, 401, 403, 404, 486, 487, 488, 501] {
            let r = Response::from_request(&req, status);
            assert_eq!(r.reason, reason_phrase(status));
            assert_eq!(r.headers.vias().unwrap().len(), 2);
            assert_eq!(r.headers.call_id().unwrap(), "abc@host");
            assert_eq!(r.headers.cseq().unwrap().seq, 314);
            assert!(!r.headers.contains(&HeaderName::SUBJECT));
            assert_eq!(
                r.headers.contains(&HeaderName::RECORD_ROUTE),
                (101..300).contains(&status)
            );
        }
        let r = Response::from_request(&req, 180).with_to_tag("t1");
        assert_eq!(r.headers.to().unwrap().tag(), Some("t1"));
        // A second tag is not added.
        let r = r.with_to_tag("t2");
        assert_eq!(r.headers.to().unwrap().tag(), Some("t1"));
        let bytes = r.to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("SIP/2.0 180 Ringing\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        match parse::parse_message(&bytes).unwrap() {
            SipMessage::Response(back) => assert_eq!(back.status, 180),
            _ => panic!("not a response"),
        }
    }

    #[test]
    fn encode_sets_content_length_and_strips_crlf() {
        let mut req = Request::new(Method::Options, uri("sip:a@b"));
        req.headers.push(HeaderName::CONTENT_LENGTH, "999");
        req.headers
            .push(HeaderName::new("X-Evil"), "a\r\nInjected: yes");
        req.set_body(Some("text/plain"), &b"hello"[..]);
        let text = String::from_utf8(req.to_bytes()).unwrap();
        assert!(text.contains("Content-Length: 5\r\n\r\nhello"));
        assert!(!text.contains("999"));
        assert!(text.contains("X-Evil: a  Injected: yes\r\n"));
    }

    #[test]
    fn random_ids() {
        let b = new_branch();
        assert!(b.starts_with(BRANCH_COOKIE) && b.len() == 23);
        assert_ne!(new_tag(), new_tag());
        assert!(new_call_id(Some("h")).ends_with("@h"));
    }

    #[test]
    fn method_parse() {
        assert_eq!(Method::parse("INVITE"), Some(Method::Invite));
        assert_eq!(
            Method::parse("invite"),
            Some(Method::Extension("invite".into()))
        );
        assert_eq!(Method::parse("BAD METHOD"), None);
        assert_eq!(Method::parse(""), None);
    }
}
