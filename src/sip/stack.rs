//! The tokio shell around the sans-IO SIP core: `pjsip.conf` / `rtp.conf` loading, one
//! UDP socket per transport driving a [`TransactionLayer`], OPTIONS, REGISTER (contacts
//! per AOR), and inbound INVITE from identified endpoints creating `PJSIP/<ep>-<hex>`
//! channels whose media runs through a per-call driver task owning an [`RtpSession`].

use super::auth::{Algorithm, DigestServer, Verdict};
use super::message::{Host, Method, NameAddr, Request, Response, SipUri, Transport, Uri, Via};
use super::outreg::{RegState, RegistrationCfg, RegistrationClient};
use super::qualify::{ContactKey, Qualifier, QualifyTarget, StatusChange};
use super::registrar::{AorPolicy, Registrar};
use super::sdp::{self, Codec, Direction, Sdp};
use super::transaction::{Event, TimerConfig, TransactionLayer, TxId};
use super::HeaderName;
use crate::channel::{ChanMsg, Channel, Control, TechLink};
use crate::config::ConfFile;
use crate::core::Core;
use crate::rtp::jitter::Playout;
use crate::rtp::session::{Event as RtpEvent, PayloadMap, RtpConfig, RtpSession};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// A `type=transport` section.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportCfg {
    pub name: String,
    pub bind: SocketAddr,
    /// `protocol`: udp or tcp.
    pub protocol: Transport,
    /// `external_signaling_address` (+ `external_signaling_port`, default the bound
    /// port): the address put in our Via and Contact headers.
    pub external_signaling: Option<(IpAddr, Option<u16>)>,
    /// `external_media_address`: the address put in our SDP (`c=`, `o=`).
    pub external_media: Option<IpAddr>,
}

impl TransportCfg {
    /// The host and port to advertise in Via/Contact for a transport bound at `local`.
    pub fn signaling_addr(&self, local: SocketAddr) -> (IpAddr, u16) {
        match self.external_signaling {
            Some((ip, port)) => (ip, port.unwrap_or(local.port())),
            None => (SipStack::local_ip(local), local.port()),
        }
    }
    /// The address to advertise in SDP for media bound on `local_ip`.
    pub fn media_ip(&self, local_ip: IpAddr) -> IpAddr {
        self.external_media.unwrap_or(local_ip)
    }
}

/// A `type=endpoint` section.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointCfg {
    pub name: String,
    pub context: String,
    pub allow: Vec<Codec>,
    pub aors: Vec<String>,
    pub auth: Option<String>,
    /// `outbound_auth`: credentials used when a request we send is challenged.
    pub outbound_auth: Option<String>,
    pub dtmf_mode: String,
    pub rtp_symmetric: bool,
    /// `rtp_timeout` (seconds): hang up an answered call after this long without RTP (0 = off).
    pub rtp_timeout: Duration,
    /// `force_rport` (default yes): answer to the source port even without `;rport`.
    pub force_rport: bool,
    /// `rewrite_contact` (default no): send to the address requests came from (the
    /// REGISTER's source for calls to a registered contact, the INVITE's source for
    /// in-dialog requests), not to the Contact URI.
    pub rewrite_contact: bool,
}

/// A `type=auth` section (userpass).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthCfg {
    pub name: String,
    pub username: String,
    pub password: String,
    /// `realm` (default `asterisk`, as Asterisk's `default_realm`).
    pub realm: String,
    /// `nonce_lifetime` in seconds (default 32).
    pub nonce_lifetime: u64,
    /// `supported_algorithms_uas`: the challenges we send, most preferred first
    /// (default SHA-256 then MD5, RFC 8760 order).
    pub algorithms: Vec<Algorithm>,
}

/// A `type=aor` section.
#[derive(Debug, Clone, PartialEq)]
pub struct AorCfg {
    pub name: String,
    pub contacts: Vec<String>,
    /// max_contacts, remove_existing, default/minimum/maximum_expiration.
    pub policy: AorPolicy,
    /// `qualify_frequency` (s, 0: off): OPTIONS to every contact this often.
    pub qualify_frequency: u64,
    /// `qualify_timeout` (s, default 3.0): no answer within it: Unreachable.
    pub qualify_timeout: Duration,
}

/// A `type=identify` section: `match` as (network, prefix length).
#[derive(Debug, Clone, PartialEq)]
pub struct IdentifyCfg {
    pub endpoint: String,
    pub matches: Vec<(IpAddr, u8)>,
}

/// Everything read from `pjsip.conf` and `rtp.conf`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PjsipConfig {
    pub transports: Vec<TransportCfg>,
    pub endpoints: Vec<EndpointCfg>,
    pub auths: Vec<AuthCfg>,
    pub aors: Vec<AorCfg>,
    pub identifies: Vec<IdentifyCfg>,
    pub registrations: Vec<RegistrationCfg>,
    pub rtp_start: u16,
    pub rtp_end: u16,
}

fn parse_codecs(allow: &[&str]) -> Vec<Codec> {
    let mut v: Vec<Codec> = Vec::new();
    for item in allow.iter().flat_map(|a| a.split(',')) {
        let c = match item.trim().to_ascii_lowercase().as_str() {
            "all" => {
                v.clear();
                v.extend([Codec::Pcmu, Codec::Pcma, Codec::G722]);
                continue;
            }
            "ulaw" | "pcmu" => Codec::Pcmu,
            "alaw" | "pcma" => Codec::Pcma,
            "g722" => Codec::G722,
            _ => continue,
        };
        if !v.contains(&c) {
            v.push(c);
        }
    }
    v
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let s = s.trim();
    let (ip, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = ip.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max)?,
        None => max,
    };
    Some((ip, len))
}

fn cidr_contains(net: (IpAddr, u8), ip: IpAddr) -> bool {
    match (net.0, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if net.1 == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(net.1))
            };
            (u32::from(n) & mask) == (u32::from(a) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if net.1 == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(net.1))
            };
            (u128::from(n) & mask) == (u128::from(a) & mask)
        }
        _ => false,
    }
}

impl PjsipConfig {
    /// Build from parsed `pjsip.conf` and (optional) `rtp.conf`. Bad values are errors.
    pub fn from_conf(
        pjsip: &ConfFile,
        rtp: Option<&ConfFile>,
    ) -> Result<PjsipConfig, crate::config::ConfigError> {
        use crate::config::ConfigError;
        let mut cfg = PjsipConfig {
            rtp_start: 10000,
            rtp_end: 20000,
            ..Default::default()
        };
        for s in pjsip.real_sections() {
            let ty = s.get("type").unwrap_or("").to_ascii_lowercase();
            match ty.as_str() {
                "transport" => {
                    let proto = s.get("protocol").unwrap_or("udp").to_ascii_lowercase();
                    let protocol = match proto.as_str() {
                        "udp" => Transport::Udp,
                        "tcp" => Transport::Tcp,
                        _ => {
                            tracing::warn!(
                                "pjsip transport {}: protocol {proto} unsupported",
                                s.name
                            );
                            continue;
                        }
                    };
                    let b = s.get("bind").unwrap_or("0.0.0.0:5060");
                    let bind = b
                        .parse::<SocketAddr>()
                        .or_else(|_| b.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 5060)))
                        .map_err(|_| {
                            ConfigError::new(&s.file, s.line, format!("bad bind address '{b}'"))
                        })?;
                    let ip_opt = |key: &str| -> Result<Option<IpAddr>, ConfigError> {
                        match s.get(key).map(str::trim).filter(|v| !v.is_empty()) {
                            None => Ok(None),
                            Some(v) => v.parse::<IpAddr>().map(Some).map_err(|_| {
                                ConfigError::new(
                                    &s.file,
                                    s.line,
                                    format!("{key} '{v}': an IP address is required"),
                                )
                            }),
                        }
                    };
                    let ext_port: Option<u16> =
                        s.get_parse("external_signaling_port")?.filter(|p| *p != 0);
                    cfg.transports.push(TransportCfg {
                        name: s.name.clone(),
                        bind,
                        protocol,
                        external_signaling: ip_opt("external_signaling_address")?
                            .map(|ip| (ip, ext_port)),
                        external_media: ip_opt("external_media_address")?,
                    });
                }
                "endpoint" => {
                    let allow: Vec<&str> = s.get_all("allow").collect();
                    let mut allow = parse_codecs(&allow);
                    if allow.is_empty() {
                        allow.push(Codec::Pcmu);
                    }
                    cfg.endpoints.push(EndpointCfg {
                        name: s.name.clone(),
                        context: s.get("context").unwrap_or("default").to_string(),
                        allow,
                        aors: s
                            .get("aors")
                            .unwrap_or("")
                            .split(',')
                            .map(|a| a.trim().to_string())
                            .filter(|a| !a.is_empty())
                            .collect(),
                        auth: s
                            .get("auth")
                            .map(|a| a.trim().to_string())
                            .filter(|a| !a.is_empty()),
                        outbound_auth: s
                            .get("outbound_auth")
                            .map(|a| a.trim().to_string())
                            .filter(|a| !a.is_empty()),
                        dtmf_mode: s.get("dtmf_mode").unwrap_or("rfc4733").to_string(),
                        rtp_symmetric: s.get_bool("rtp_symmetric").unwrap_or(false),
                        rtp_timeout: Duration::from_secs(s.get_parse("rtp_timeout")?.unwrap_or(0)),
                        force_rport: s.get_bool("force_rport").unwrap_or(true),
                        rewrite_contact: s.get_bool("rewrite_contact").unwrap_or(false),
                    });
                }
                "auth" => cfg.auths.push(AuthCfg {
                    name: s.name.clone(),
                    username: s.get("username").unwrap_or(&s.name).to_string(),
                    password: s.get("password").unwrap_or("").to_string(),
                    realm: s
                        .get("realm")
                        .filter(|r| !r.is_empty())
                        .unwrap_or("asterisk")
                        .to_string(),
                    nonce_lifetime: s.get_parse("nonce_lifetime")?.unwrap_or(32),
                    algorithms: match s.get("supported_algorithms_uas") {
                        None => vec![Algorithm::Sha256, Algorithm::Md5],
                        Some(v) => {
                            let mut algs = Vec::new();
                            for a in v.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                                let alg = Algorithm::parse(a).ok_or_else(|| {
                                    ConfigError::new(
                                        &s.file,
                                        s.line,
                                        format!("unsupported digest algorithm '{a}'"),
                                    )
                                })?;
                                if !algs.contains(&alg) {
                                    algs.push(alg);
                                }
                            }
                            if algs.is_empty() {
                                return Err(ConfigError::new(
                                    &s.file,
                                    s.line,
                                    "supported_algorithms_uas is empty",
                                ));
                            }
                            algs
                        }
                    },
                }),
                "aor" => cfg.aors.push(AorCfg {
                    name: s.name.clone(),
                    contacts: s
                        .get_all("contact")
                        .flat_map(|c| c.split(','))
                        .map(|c| c.trim().to_string())
                        .filter(|c| !c.is_empty())
                        .collect(),
                    policy: AorPolicy {
                        max_contacts: s.get_parse("max_contacts")?.unwrap_or(0),
                        remove_existing: s.get_bool("remove_existing").unwrap_or(false),
                        default_expiration: s.get_parse("default_expiration")?.unwrap_or(3600),
                        minimum_expiration: s.get_parse("minimum_expiration")?.unwrap_or(60),
                        maximum_expiration: s.get_parse("maximum_expiration")?.unwrap_or(7200),
                    },
                    qualify_frequency: s.get_parse("qualify_frequency")?.unwrap_or(0),
                    qualify_timeout: {
                        let t: f64 = s.get_parse("qualify_timeout")?.unwrap_or(3.0);
                        if !(t.is_finite() && t > 0.0 && t <= 3600.0) {
                            return Err(ConfigError::new(&s.file, s.line, "bad qualify_timeout"));
                        }
                        Duration::from_secs_f64(t)
                    },
                }),
                "identify" => {
                    let mut matches = Vec::new();
                    for m in s.get_all("match").flat_map(|m| m.split(',')) {
                        if m.trim().is_empty() {
                            continue;
                        }
                        matches.push(parse_cidr(m).ok_or_else(|| {
                            ConfigError::new(&s.file, s.line, format!("bad match '{m}'"))
                        })?);
                    }
                    cfg.identifies.push(IdentifyCfg {
                        endpoint: s.get("endpoint").unwrap_or("").to_string(),
                        matches,
                    });
                }
                _ => {}
            }
        }
        // Registrations last: they refer to auth sections.
        for s in pjsip.real_sections() {
            if !s
                .get("type")
                .is_some_and(|t| t.eq_ignore_ascii_case("registration"))
            {
                continue;
            }
            let uri = |key: &str| -> Result<SipUri, ConfigError> {
                let v = s.get(key).unwrap_or("").trim();
                v.trim_matches(|c| c == '<' || c == '>')
                    .parse::<SipUri>()
                    .map_err(|e| ConfigError::new(&s.file, s.line, format!("bad {key} '{v}': {e}")))
            };
            let server_uri = uri("server_uri")?;
            let client_uri = uri("client_uri")?;
            let auth = match s
                .get("outbound_auth")
                .map(str::trim)
                .filter(|a| !a.is_empty())
            {
                Some(a) => {
                    let au = cfg.auths.iter().find(|x| x.name == a).ok_or_else(|| {
                        ConfigError::new(&s.file, s.line, format!("no auth section '{a}'"))
                    })?;
                    Some((au.username.clone(), au.password.clone()))
                }
                None => None,
            };
            cfg.registrations.push(RegistrationCfg {
                name: s.name.clone(),
                contact_user: s
                    .get("contact_user")
                    .map(str::to_string)
                    .or_else(|| client_uri.user.clone())
                    .unwrap_or_else(|| "s".to_string()),
                server_uri,
                client_uri,
                auth,
                expiration: s.get_parse("expiration")?.unwrap_or(3600),
                retry_interval: s.get_parse("retry_interval")?.unwrap_or(60),
                forbidden_retry_interval: s.get_parse("forbidden_retry_interval")?.unwrap_or(0),
                max_retries: s.get_parse("max_retries")?.unwrap_or(10),
            });
        }
        if let Some(r) = rtp.and_then(|r| r.section("general")) {
            if let Some(v) = r.get_parse::<u16>("rtpstart")? {
                cfg.rtp_start = v;
            }
            if let Some(v) = r.get_parse::<u16>("rtpend")? {
                cfg.rtp_end = v;
            }
        }
        if cfg.rtp_end < cfg.rtp_start {
            cfg.rtp_end = cfg.rtp_start;
        }
        Ok(cfg)
    }

    pub fn endpoint(&self, name: &str) -> Option<&EndpointCfg> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// The endpoint an `identify` section maps `ip` to.
    pub fn identify(&self, ip: IpAddr) -> Option<&EndpointCfg> {
        self.identifies
            .iter()
            .find(|i| i.matches.iter().any(|m| cidr_contains(*m, ip)))
            .and_then(|i| self.endpoint(&i.endpoint))
    }
}

/// One outbound registration as `pjsip show registrations` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegStatus {
    pub name: String,
    pub server_uri: String,
    pub client_uri: String,
    pub auth: bool,
    pub state: RegState,
    pub last_status: Option<u16>,
    /// Seconds until the registration expires (Registered only).
    pub expires_in: Option<u64>,
}

/// Commands from call drivers to their transport task.
enum StackCmd {
    Respond(TxId, Response),
    Request(SocketAddr, Request),
    Register(String, mpsc::UnboundedSender<CallIn>),
    Unregister(String),
    /// CANCEL the pending INVITE client transaction of this Call-ID.
    Cancel(String),
}

/// What a transport task forwards to a call driver.
enum CallIn {
    Request(Option<TxId>, Request),
    Response(Response),
    Cancelled,
}

/// The SIP stack, stored in `core.ext()`.
pub struct SipStack {
    pub config: PjsipConfig,
    /// Inbound registrations (contacts per AOR).
    pub registrar: Mutex<Registrar>,
    /// Outbound registrations, refreshed by the transport task.
    pub registrations: Mutex<Vec<RegStatus>>,
    /// Contact qualification (`qualify_frequency`), driven by the first transport task.
    pub qualifier: Mutex<Qualifier>,
    /// Key of the stateless digest nonces (random per process).
    nonce_secret: [u8; 32],
    /// Active PJSIP channels: name -> (endpoint, remote RTP).
    pub calls: Mutex<HashMap<String, (String, String)>>,
    next_rtp: AtomicU16,
    local: Mutex<Option<(SocketAddr, mpsc::UnboundedSender<StackCmd>)>>,
}

static CHAN_SEQ: AtomicU32 = AtomicU32::new(0);

/// A new `PJSIP/<endpoint>-<8 hex>` channel in `codec`'s format (see [`Channel::alloc`]) and
/// the link end for its call driver.
fn new_pjsip_channel(core: &Arc<Core>, endpoint: &str, codec: Codec) -> (Channel, TechLink) {
    let seq = CHAN_SEQ.fetch_add(1, Ordering::Relaxed) ^ rand::random::<u32>();
    let name = format!("PJSIP/{endpoint}-{seq:08x}");
    Channel::alloc(core, name, "PJSIP", codec.format())
}

impl SipStack {
    fn local_ip(bind: SocketAddr) -> IpAddr {
        if bind.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            bind.ip()
        }
    }

    /// The configured transport bound at `local` (the first one on that port).
    pub fn transport_for(&self, local: SocketAddr) -> Option<&TransportCfg> {
        let ts = &self.config.transports;
        ts.iter()
            .find(|t| t.bind == local)
            .or_else(|| ts.iter().find(|t| t.bind.port() == local.port()))
    }

    /// (Via/Contact address, SDP address) to advertise for a transport bound at `local`.
    fn advertised(&self, local: SocketAddr) -> ((IpAddr, u16), IpAddr) {
        let ip = SipStack::local_ip(local);
        match self.transport_for(local) {
            Some(t) => (t.signaling_addr(local), t.media_ip(ip)),
            None => ((ip, local.port()), ip),
        }
    }

    /// Bind an RTP socket (even port) from the rtp.conf range.
    async fn bind_rtp(&self, ip: IpAddr) -> std::io::Result<UdpSocket> {
        let span = u32::from(self.config.rtp_end.saturating_sub(self.config.rtp_start)) + 1;
        for _ in 0..span.div_ceil(2).max(1) {
            let off = u32::from(self.next_rtp.fetch_add(2, Ordering::Relaxed)) % span;
            let port = self.config.rtp_start as u32 + (off & !1);
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            if let Ok(s) = UdpSocket::bind(SocketAddr::new(ip, port)).await {
                return Ok(s);
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no free RTP port",
        ))
    }
}

/// Load `pjsip.conf`/`rtp.conf` and start one task per transport. No `pjsip.conf`: nothing.
pub async fn start(core: Arc<Core>) -> anyhow::Result<()> {
    let Some(pj) = crate::core::load_conf(&core.dirs, "pjsip.conf")? else {
        return Ok(());
    };
    let rtp = crate::core::load_conf(&core.dirs, "rtp.conf")?;
    let config = PjsipConfig::from_conf(&pj, rtp.as_ref())?;
    let stack = Arc::new(SipStack {
        next_rtp: AtomicU16::new(0),
        config,
        registrar: Mutex::new(Registrar::new()),
        registrations: Mutex::new(Vec::new()),
        qualifier: Mutex::new(Qualifier::new()),
        nonce_secret: rand::random(),
        calls: Mutex::new(HashMap::new()),
        local: Mutex::new(None),
    });
    core.ext.insert(stack.clone());
    register_cli(&core);
    for t in stack.config.transports.clone() {
        let (tx, rx) = mpsc::unbounded_channel();
        let io = match t.protocol {
            Transport::Tcp => {
                let listener = tokio::net::TcpListener::bind(t.bind).await?;
                let local = listener.local_addr()?;
                let (in_tx, in_rx) = mpsc::unbounded_channel();
                let accept_tx = in_tx.clone();
                tokio::spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((stream, peer)) => {
                                let _ = stream.set_nodelay(true);
                                tokio::spawn(tcp_connection(stream, peer, accept_tx.clone(), None));
                            }
                            Err(e) => {
                                tracing::warn!("SIP TCP accept: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
                Io::Tcp(TcpIo {
                    local,
                    rx: in_rx,
                    tx: in_tx,
                    conns: HashMap::new(),
                })
            }
            _ => {
                let sock = UdpSocket::bind(t.bind).await?;
                let mut l = stack.local.lock();
                if l.is_none() {
                    *l = Some((sock.local_addr()?, tx.clone()));
                }
                Io::Udp(Arc::new(sock))
            }
        };
        let core2 = core.clone();
        let stack2 = stack.clone();
        tokio::spawn(async move {
            transport_task(core2, stack2, io, tx, rx).await;
        });
    }
    Ok(())
}

/// Largest SIP message accepted on a stream (TCP); a peer sending more without a
/// complete message is disconnected.
pub const MAX_STREAM_MESSAGE: usize = 65_535;

/// What TCP connection tasks tell their transport task.
enum TcpIn {
    Open(SocketAddr, mpsc::UnboundedSender<Bytes>),
    Frame(SocketAddr, Bytes),
    Closed(SocketAddr),
}

struct TcpIo {
    local: SocketAddr,
    rx: mpsc::UnboundedReceiver<TcpIn>,
    tx: mpsc::UnboundedSender<TcpIn>,
    /// Open connections by peer address: responses and requests to a peer reuse them.
    conns: HashMap<SocketAddr, mpsc::UnboundedSender<Bytes>>,
}

/// A transport task's sockets.
enum Io {
    Udp(Arc<UdpSocket>),
    Tcp(TcpIo),
}

impl Io {
    fn transport(&self) -> Transport {
        match self {
            Io::Udp(_) => Transport::Udp,
            Io::Tcp(_) => Transport::Tcp,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Io::Udp(s) => s.local_addr(),
            Io::Tcp(t) => Ok(t.local),
        }
    }

    /// The next datagram or stream-framed message (keepalives are answered by the
    /// connection task and never come here).
    async fn recv(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, Bytes)> {
        match self {
            Io::Udp(s) => match s.recv_from(buf).await {
                Ok((n, src)) => Some((src, Bytes::copy_from_slice(&buf[..n]))),
                Err(_) => None,
            },
            Io::Tcp(t) => loop {
                match t.rx.recv().await? {
                    TcpIn::Open(peer, w) => {
                        t.conns.insert(peer, w);
                    }
                    TcpIn::Closed(peer) => {
                        t.conns.remove(&peer);
                    }
                    TcpIn::Frame(peer, data) => return Some((peer, data)),
                }
            },
        }
    }

    /// Send; `false` when it certainly failed. TCP to a peer without a connection opens one.
    async fn send(&mut self, data: &Bytes, dest: SocketAddr) -> bool {
        match self {
            Io::Udp(s) => s.send_to(data, dest).await.is_ok(),
            Io::Tcp(t) => {
                if let Some(w) = t.conns.get(&dest) {
                    if w.send(data.clone()).is_ok() {
                        return true;
                    }
                    t.conns.remove(&dest);
                }
                let tx = t.tx.clone();
                let first = data.clone();
                tokio::spawn(async move {
                    match tokio::net::TcpStream::connect(dest).await {
                        Ok(stream) => {
                            let _ = stream.set_nodelay(true);
                            tcp_connection(stream, dest, tx, Some(first)).await;
                        }
                        Err(e) => tracing::info!("SIP TCP connect {dest}: {e}"),
                    }
                });
                true
            }
        }
    }
}

/// One TCP connection: cut the byte stream into messages by Content-Length
/// ([`super::parse::frame_stream`]), answer CRLFCRLF keepalives with CRLF, write what the
/// transport task queues. Ends on EOF, a framing error or an oversized message.
async fn tcp_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    to_task: mpsc::UnboundedSender<TcpIn>,
    first: Option<Bytes>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut rd, mut wr) = stream.into_split();
    let (wtx, mut wrx) = mpsc::unbounded_channel::<Bytes>();
    if let Some(f) = first {
        let _ = wtx.send(f);
    }
    let _ = to_task.send(TcpIn::Open(peer, wtx.clone()));
    let writer = tokio::spawn(async move {
        while let Some(b) = wrx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 8192];
    'conn: loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match super::parse::frame_stream(&buf) {
                Ok(Some(len)) => {
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    if super::parse::is_keepalive(&frame) {
                        if frame.len() >= 4 {
                            let _ = wtx.send(Bytes::from_static(b"\r\n"));
                        }
                    } else if frame.len() > MAX_STREAM_MESSAGE {
                        tracing::info!("SIP TCP {peer}: message over {MAX_STREAM_MESSAGE} bytes");
                        break 'conn;
                    } else {
                        let _ = to_task.send(TcpIn::Frame(peer, Bytes::from(frame)));
                    }
                }
                Ok(None) => {
                    if buf.len() > MAX_STREAM_MESSAGE {
                        tracing::info!("SIP TCP {peer}: message over {MAX_STREAM_MESSAGE} bytes");
                        break 'conn;
                    }
                    break;
                }
                Err(e) => {
                    tracing::info!("SIP TCP {peer}: {e}; closing");
                    break 'conn;
                }
            }
        }
    }
    let _ = to_task.send(TcpIn::Closed(peer));
    drop(wtx);
    writer.abort();
}

async fn transport_task(
    core: Arc<Core>,
    stack: Arc<SipStack>,
    mut io: Io,
    cmd_tx: mpsc::UnboundedSender<StackCmd>,
    mut cmd_rx: mpsc::UnboundedReceiver<StackCmd>,
) {
    let local = match io.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let proto = io.transport();
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let mut calls: HashMap<String, mpsc::UnboundedSender<CallIn>> = HashMap::new();
    let mut tx_call: HashMap<TxId, String> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    // Outbound registrations run on the first transport only.
    let first = stack.local.lock().as_ref().is_some_and(|l| l.0 == local);
    let mut regs: Vec<RegistrationClient> = if first {
        stack
            .config
            .registrations
            .iter()
            .map(|c| {
                RegistrationClient::new(
                    c.clone(),
                    SipStack::local_ip(local),
                    local.port(),
                    Instant::now(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut reg_tx: HashMap<TxId, usize> = HashMap::new();
    // Qualify runs on the first transport only, when some aor asks for it.
    let qualify = first && stack.config.aors.iter().any(|a| a.qualify_frequency > 0);
    let mut qual_tx: HashMap<TxId, ContactKey> = HashMap::new();
    loop {
        drive_registrations(&stack, &mut layer, &mut regs, &mut reg_tx, Instant::now());
        if qualify {
            drive_qualify(
                &core,
                &stack,
                &mut layer,
                &mut qual_tx,
                local,
                Instant::now(),
            );
        }
        while let Some(t) = layer.poll_transmit() {
            if !io.send(&t.data, t.dest).await {
                if let Some(tx) = t.tx {
                    layer.transport_error(tx);
                }
            }
        }
        let deadline = match (
            layer.poll_timeout(),
            regs.iter()
                .filter_map(|r| r.poll_timeout())
                .chain(
                    qualify
                        .then(|| stack.qualifier.lock().poll_timeout())
                        .flatten(),
                )
                .min(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = io.recv(&mut buf) => {
                let Some((src, data)) = r else { continue };
                let now = Instant::now();
                if let Err(e) = layer.handle_datagram(now, src, proto, &data) {
                    tracing::debug!("SIP from {src}: {e}");
                    reply_400(&mut layer, src, proto, &data);
                }
            }
            _ = sleep => layer.handle_timeout(Instant::now()),
            c = cmd_rx.recv() => {
                let Some(c) = c else { return };
                let now = Instant::now();
                match c {
                    StackCmd::Respond(tx, r) => { let _ = layer.send_response(now, tx, r); }
                    StackCmd::Request(dest, r) => {
                        if r.method == Method::Ack {
                            layer.send_stateless(dest, proto, &super::SipMessage::Request(r));
                        } else if let Ok(id) = layer.send_request(now, dest, proto, r.clone()) {
                            if let Ok(cid) = r.headers.call_id() { tx_call.insert(id, cid.to_string()); }
                        }
                    }
                    StackCmd::Register(cid, s) => { calls.insert(cid, s); }
                    StackCmd::Cancel(cid) => {
                        let ids: Vec<TxId> = tx_call.iter().filter(|(_, c)| **c == cid).map(|(t, _)| *t).collect();
                        for id in ids {
                            if layer.kind(id) == Some(super::TxKind::InviteClient) { let _ = layer.cancel(now, id); }
                        }
                    }
                    StackCmd::Unregister(cid) => { calls.remove(&cid); }
                }
            }
        }
        while let Some(t) = layer.poll_transmit() {
            if !io.send(&t.data, t.dest).await {
                if let Some(tx) = t.tx {
                    layer.transport_error(tx);
                }
            }
        }
        while let Some(ev) = layer.poll_event() {
            match ev {
                Event::Request {
                    tx,
                    request,
                    source,
                    ..
                } => {
                    let cid = request.headers.call_id().unwrap_or("").to_string();
                    if let Some(s) = calls.get(&cid) {
                        if request.method != Method::Invite
                            || request
                                .headers
                                .to()
                                .ok()
                                .and_then(|t| t.tag().map(|_| ()))
                                .is_some()
                        {
                            let _ = s.send(CallIn::Request(tx, request));
                            continue;
                        }
                    }
                    let Some(tx) = tx else { continue };
                    handle_new_request(
                        &core,
                        &stack,
                        &mut layer,
                        &cmd_tx,
                        &mut calls,
                        (local, proto),
                        tx,
                        request,
                        source,
                    );
                }
                Event::Cancelled { cancel, .. } => {
                    if let Ok(cid) = cancel.headers.call_id() {
                        if let Some(s) = calls.get(cid) {
                            let _ = s.send(CallIn::Cancelled);
                        }
                    }
                }
                Event::Response {
                    tx: Some(t),
                    response,
                    ..
                } if reg_tx.contains_key(&t) => {
                    let idx = reg_tx.get(&t).copied().unwrap_or(usize::MAX);
                    if let Some(r) = regs.get_mut(idx) {
                        if let Some(again) = r.handle_response(Instant::now(), &response) {
                            if !send_registration(&mut layer, &mut reg_tx, idx, again) {
                                r.handle_failure(Instant::now());
                            }
                        }
                    }
                }
                Event::Response {
                    tx: Some(t),
                    response,
                    ..
                } if qual_tx.contains_key(&t) && response.status >= 200 => {
                    if let Some(key) = qual_tx.get(&t) {
                        let ch = stack.qualifier.lock().on_response(Instant::now(), key);
                        publish_contact_status(&core, ch);
                    }
                }
                Event::Timeout { tx, .. } | Event::TransportError { tx }
                    if qual_tx.contains_key(&tx) =>
                {
                    if let Some(key) = qual_tx.get(&tx) {
                        let ch = stack.qualifier.lock().on_failure(key);
                        publish_contact_status(&core, ch);
                    }
                }
                Event::Timeout { tx, .. } | Event::TransportError { tx }
                    if reg_tx.contains_key(&tx) =>
                {
                    if let Some(r) = reg_tx.get(&tx).and_then(|i| regs.get_mut(*i)) {
                        r.handle_failure(Instant::now());
                    }
                }
                Event::Response { tx, response, .. } => {
                    let cid = tx
                        .and_then(|t| tx_call.get(&t).cloned())
                        .or_else(|| response.headers.call_id().ok().map(|c| c.to_string()));
                    if let Some(s) = cid.and_then(|c| calls.get(&c)) {
                        let _ = s.send(CallIn::Response(response));
                    }
                }
                Event::Timeout { tx, .. } => {
                    if let Some(s) = tx_call.get(&tx).and_then(|c| calls.get(c)) {
                        let _ = s.send(CallIn::Response(Response::new(408)));
                    }
                }
                Event::Terminated { tx } => {
                    tx_call.remove(&tx);
                    reg_tx.remove(&tx);
                    qual_tx.remove(&tx);
                }
                _ => {}
            }
        }
        while let Some(t) = layer.poll_transmit() {
            if !io.send(&t.data, t.dest).await {
                if let Some(tx) = t.tx {
                    layer.transport_error(tx);
                }
            }
        }
    }
}

fn send_registration(
    layer: &mut TransactionLayer,
    reg_tx: &mut HashMap<TxId, usize>,
    idx: usize,
    req: Request,
) -> bool {
    let dest = req.uri.as_sip().and_then(|u| u.socket_addr());
    let Some(dest) = dest else {
        return false;
    };
    match layer.send_request(Instant::now(), dest, Transport::Udp, req) {
        Ok(id) => {
            reg_tx.insert(id, idx);
            true
        }
        Err(_) => false,
    }
}

/// Send due REGISTERs and publish the registration states for the CLI.
fn drive_registrations(
    stack: &SipStack,
    layer: &mut TransactionLayer,
    regs: &mut [RegistrationClient],
    reg_tx: &mut HashMap<TxId, usize>,
    now: Instant,
) {
    if regs.is_empty() {
        return;
    }
    for (i, r) in regs.iter_mut().enumerate() {
        if let Some(req) = r.poll_request(now) {
            if !send_registration(layer, reg_tx, i, req) {
                tracing::warn!(
                    "registration {}: cannot send to {}",
                    r.config().name,
                    r.config().server_uri
                );
                r.handle_failure(now);
            }
        }
    }
    let snapshot: Vec<RegStatus> = regs
        .iter()
        .map(|r| RegStatus {
            name: r.config().name.clone(),
            server_uri: r.config().server_uri.to_string(),
            client_uri: r.config().client_uri.to_string(),
            auth: r.config().auth.is_some(),
            state: r.state(),
            last_status: r.last_status,
            expires_in: r
                .expires_at
                .map(|e| e.saturating_duration_since(now).as_secs()),
        })
        .collect();
    *stack.registrations.lock() = snapshot;
}

/// The contacts to qualify: static `contact=` URIs and registered bindings (sent to
/// where the REGISTER came from) of every aor with `qualify_frequency`.
fn qualify_targets(stack: &SipStack, now: Instant) -> Vec<QualifyTarget> {
    let mut out = Vec::new();
    let reg = stack.registrar.lock();
    for a in stack.config.aors.iter().filter(|a| a.qualify_frequency > 0) {
        let endpoint = stack
            .config
            .endpoints
            .iter()
            .find(|e| e.aors.iter().any(|n| n == &a.name))
            .map(|e| e.name.clone())
            .unwrap_or_default();
        let mk = |uri: String, dest: SocketAddr| QualifyTarget {
            aor: a.name.clone(),
            endpoint: endpoint.clone(),
            uri,
            dest,
            frequency: Duration::from_secs(a.qualify_frequency),
            timeout: a.qualify_timeout,
        };
        for c in &a.contacts {
            let dest = c
                .parse::<Uri>()
                .ok()
                .and_then(|u| u.as_sip().and_then(|u| u.socket_addr()));
            if let Some(dest) = dest {
                out.push(mk(c.clone(), dest));
            }
        }
        for b in reg.contacts(now, &a.name) {
            out.push(mk(b.uri.clone(), b.source));
        }
    }
    out
}

/// Time out, then send due qualify OPTIONS; publish reachability changes.
fn drive_qualify(
    core: &Core,
    stack: &SipStack,
    layer: &mut TransactionLayer,
    qual_tx: &mut HashMap<TxId, ContactKey>,
    local: SocketAddr,
    now: Instant,
) {
    let targets = qualify_targets(stack, now);
    let mut q = stack.qualifier.lock();
    q.sync(now, targets);
    for ch in q.handle_timeout(now) {
        publish_contact_status(core, Some(ch));
    }
    // A timed-out OPTIONS transaction is no longer ours to report.
    qual_tx.retain(|_, k| q.get(&k.0, &k.1).is_some_and(|c| c.is_pending()));
    while let Some((key, t)) = q.poll_due(now) {
        let req = options_request(&t, stack.advertised(local).0);
        match req.and_then(|r| layer.send_request(now, t.dest, Transport::Udp, r).ok()) {
            Some(id) => {
                qual_tx.insert(id, key);
            }
            None => {
                let ch = q.on_failure(&key);
                publish_contact_status(core, ch);
            }
        }
    }
}

/// An out-of-dialog OPTIONS to a contact.
fn options_request(t: &QualifyTarget, (ip, port): (IpAddr, u16)) -> Option<Request> {
    let uri: Uri = t.uri.parse().ok()?;
    let host = if ip.is_ipv6() {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    let mut req = Request::new(Method::Options, uri);
    let via = Via::new(
        Transport::Udp,
        Host::Ip(ip),
        Some(port),
        &super::new_branch(),
    );
    req.headers.push(HeaderName::VIA, via.to_string());
    req.headers.push(HeaderName::MAX_FORWARDS, "70");
    req.headers.push(
        HeaderName::FROM,
        format!("<sip:voxpbx@{host}>;tag={}", super::new_tag()),
    );
    req.headers.push(HeaderName::TO, format!("<{}>", t.uri));
    req.headers.push(
        HeaderName::CALL_ID,
        super::new_call_id(Some(&ip.to_string())),
    );
    req.headers.push(HeaderName::CSEQ, "1 OPTIONS");
    req.headers
        .push(HeaderName::CONTACT, format!("<sip:voxpbx@{host}>"));
    req.headers.push(
        HeaderName::ALLOW,
        "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO",
    );
    Some(req)
}

/// Publish a `ContactStatus` event (Asterisk's field names) for a reachability change.
fn publish_contact_status(core: &Core, ch: Option<StatusChange>) {
    let Some(ch) = ch else { return };
    tracing::info!(
        "Contact {}/{} is now {}",
        ch.aor,
        ch.uri,
        ch.status.as_str()
    );
    let rtt = ch
        .rtt
        .map(|r| r.as_micros().to_string())
        .unwrap_or_else(|| "0".into());
    core.bus.publish(
        crate::events::Event::new("ContactStatus", crate::events::EventClass::System)
            .field("URI", ch.uri)
            .field("ContactStatus", ch.status.as_str())
            .field("AOR", ch.aor)
            .field("EndpointName", ch.endpoint)
            .field("RoundtripUsec", rtt),
    );
}

/// Best effort 400 for a request that failed to parse (needs the Via etc. to be readable).
fn reply_400(layer: &mut TransactionLayer, src: SocketAddr, proto: Transport, data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.starts_with("SIP/") {
        return;
    }
    let mut out = String::from("SIP/2.0 400 Bad Request\r\n");
    for line in text.split("\r\n").skip(1) {
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        for h in [
            "via:", "v:", "from:", "f:", "to:", "t:", "call-id:", "i:", "cseq:",
        ] {
            if lower.starts_with(h) {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    if let Ok(msg) = super::parse_message(out.as_bytes()) {
        layer.send_stateless(src, proto, &msg);
    }
}

fn respond(layer: &mut TransactionLayer, tx: TxId, req: &Request, status: u16) {
    let r = Response::from_request(req, status).with_to_tag(&super::new_tag());
    let _ = layer.send_response(Instant::now(), tx, r);
}

#[allow(clippy::too_many_arguments)]
fn handle_new_request(
    core: &Arc<Core>,
    stack: &Arc<SipStack>,
    layer: &mut TransactionLayer,
    cmd_tx: &mpsc::UnboundedSender<StackCmd>,
    calls: &mut HashMap<String, mpsc::UnboundedSender<CallIn>>,
    local: (SocketAddr, Transport),
    tx: TxId,
    req: Request,
    source: SocketAddr,
) {
    match req.method {
        Method::Options => {
            let mut r = Response::from_request(&req, 200).with_to_tag(&super::new_tag());
            r.headers.push(
                HeaderName::ALLOW,
                "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO",
            );
            let _ = layer.send_response(Instant::now(), tx, r);
        }
        Method::Register => handle_register(stack, layer, tx, &req, source),
        Method::Invite => {
            let Some(ep) = identify_invite(&stack.config, &req, source.ip()).cloned() else {
                tracing::info!("SIP INVITE from {source}: no endpoint matched");
                respond(layer, tx, &req, 403);
                return;
            };
            if let Err(r) = check_auth(stack, unix_now(), &req, &ep) {
                let _ = layer.send_response(Instant::now(), tx, *r);
                return;
            }
            let Ok(offer) = Sdp::parse(&req.body) else {
                respond(layer, tx, &req, 488);
                return;
            };
            let cid = req.headers.call_id().unwrap_or("").to_string();
            let (ctx, ctrx) = mpsc::unbounded_channel();
            calls.insert(cid, ctx);
            let core = core.clone();
            let stack = stack.clone();
            let cmd = cmd_tx.clone();
            tokio::spawn(async move {
                inbound_call(core, stack, cmd, ctrx, local, ep, tx, req, offer, source).await;
            });
        }
        Method::Ack => {}
        Method::Bye | Method::Cancel => respond(layer, tx, &req, 481),
        _ => respond(layer, tx, &req, 501),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn uri_user(na: Result<NameAddr, super::SipParseError>) -> Option<String> {
    na.ok()
        .and_then(|n| n.uri.as_sip().and_then(|u| u.user.clone()))
}

/// The endpoint an INVITE belongs to, in Asterisk's default `endpoint_identifier_order`:
/// `identify` by source IP first, then the endpoint named by the From user.
pub fn identify_invite<'a>(
    cfg: &'a PjsipConfig,
    req: &Request,
    ip: IpAddr,
) -> Option<&'a EndpointCfg> {
    cfg.identify(ip)
        .or_else(|| uri_user(req.headers.from()).and_then(|u| cfg.endpoint(&u)))
}

/// The endpoint a REGISTER belongs to: the endpoint named by the From user (a phone
/// registers as itself), else the To user, else `identify` by source IP.
pub fn identify_register<'a>(
    cfg: &'a PjsipConfig,
    req: &Request,
    ip: IpAddr,
) -> Option<&'a EndpointCfg> {
    uri_user(req.headers.from())
        .and_then(|u| cfg.endpoint(&u))
        .or_else(|| uri_user(req.headers.to()).and_then(|u| cfg.endpoint(&u)))
        .or_else(|| cfg.identify(ip))
}

/// Digest check for a request from endpoint `ep` (RFC 3261 §22.4, RFC 8760): endpoints
/// without `auth=` pass. Otherwise `Err` carries the response to send: 401 with one
/// SHA-256 and one MD5 challenge when credentials are missing, for another realm or carry
/// a nonce we did not issue; 401 with `stale=true` for a correct digest on an expired
/// nonce; 403 for a wrong password or user name.
pub fn check_auth(
    stack: &SipStack,
    now_unix: u64,
    req: &Request,
    ep: &EndpointCfg,
) -> Result<(), Box<Response>> {
    let Some(auth_name) = &ep.auth else {
        return Ok(());
    };
    let forbidden = || Box::new(Response::from_request(req, 403).with_to_tag(&super::new_tag()));
    let Some(auth) = stack.config.auths.iter().find(|a| &a.name == auth_name) else {
        tracing::warn!("endpoint {}: auth '{auth_name}' is not configured", ep.name);
        return Err(forbidden());
    };
    let server = DigestServer::new(auth.realm.clone(), &stack.nonce_secret, auth.nonce_lifetime);
    let verdict = server.verify_request(now_unix, req, false, |u| {
        (u == auth.username).then(|| auth.password.clone())
    });
    let challenge = |stale: bool| {
        Box::new(server.challenge_response(
            now_unix,
            req,
            false,
            stale,
            &auth.algorithms,
            &super::new_tag(),
        ))
    };
    match verdict {
        Verdict::Authorized { .. } => Ok(()),
        Verdict::Missing => Err(challenge(false)),
        Verdict::Stale => Err(challenge(true)),
        Verdict::Rejected("invalid nonce") => Err(challenge(false)),
        Verdict::Rejected(why) => {
            tracing::info!("SIP {} for endpoint {}: {why}", req.method, ep.name);
            Err(forbidden())
        }
    }
}

fn handle_register(
    stack: &Arc<SipStack>,
    layer: &mut TransactionLayer,
    tx: TxId,
    req: &Request,
    source: SocketAddr,
) {
    let now = Instant::now();
    let Some(ep) = identify_register(&stack.config, req, source.ip()) else {
        respond(layer, tx, req, 403);
        return;
    };
    if let Err(r) = check_auth(stack, unix_now(), req, ep) {
        let _ = layer.send_response(now, tx, *r);
        return;
    }
    let user = uri_user(req.headers.to()).unwrap_or_default();
    let Some(aor) = stack
        .config
        .aors
        .iter()
        .find(|a| a.name == user && ep.aors.contains(&a.name))
    else {
        respond(layer, tx, req, 404);
        return;
    };
    let result = stack
        .registrar
        .lock()
        .register(now, &aor.name, &aor.policy, req, source);
    match result {
        Ok(list) => {
            let mut r = Response::from_request(req, 200).with_to_tag(&super::new_tag());
            for (uri, left) in list {
                r.headers
                    .push(HeaderName::CONTACT, format!("<{uri}>;expires={left}"));
            }
            r.headers.push(
                HeaderName::DATE,
                chrono::Utc::now()
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string(),
            );
            let _ = layer.send_response(now, tx, r);
        }
        Err(e) => {
            tracing::info!("REGISTER {} from {source}: {e}", aor.name);
            let mut r = Response::from_request(req, e.status()).with_to_tag(&super::new_tag());
            if let super::registrar::RegisterError::IntervalTooBrief(min) = e {
                r.headers.push(HeaderName::MIN_EXPIRES, min.to_string());
            }
            let _ = layer.send_response(now, tx, r);
        }
    }
}

fn payloads_for(audio: &sdp::AudioInfo) -> (PayloadMap, Option<Codec>) {
    let mut map = PayloadMap::new();
    for (c, pt) in &audio.codecs {
        map.add(*pt, c.format());
    }
    if let Some(te) = audio.telephone_event {
        map.set_telephone_event(te, 8000);
    }
    (map, audio.codecs.first().map(|c| c.0))
}

#[allow(clippy::too_many_arguments)]
async fn inbound_call(
    core: Arc<Core>,
    stack: Arc<SipStack>,
    cmd: mpsc::UnboundedSender<StackCmd>,
    mut inbox: mpsc::UnboundedReceiver<CallIn>,
    (local, transport): (SocketAddr, Transport),
    ep: EndpointCfg,
    tx: TxId,
    invite: Request,
    offer: Sdp,
    source: SocketAddr,
) {
    let cid = invite.headers.call_id().unwrap_or("").to_string();
    let ip = SipStack::local_ip(local);
    let fail = |status: u16| {
        let r = Response::from_request(&invite, status).with_to_tag(&super::new_tag());
        let _ = cmd.send(StackCmd::Respond(tx, r));
        let _ = cmd.send(StackCmd::Unregister(cid.clone()));
    };
    let rtp_sock = match stack.bind_rtp(ip).await {
        Ok(s) => s,
        Err(_) => return fail(503),
    };
    let rtp_port = rtp_sock.local_addr().map(|a| a.port()).unwrap_or(0);
    let (sig, media_ip) = stack.advertised(local);
    let Ok(answer) = sdp::answer(&offer, &ep.allow, media_ip, rtp_port, Direction::SendRecv) else {
        return fail(488);
    };
    let Some(audio) = answer.audio() else {
        return fail(488);
    };
    let (payloads, Some(codec)) = payloads_for(&audio) else {
        return fail(488);
    };
    let remote = offer
        .audio()
        .and_then(|a| a.addr.map(|ip| SocketAddr::new(ip, a.port)));
    let now = Instant::now();
    let mut rtp = RtpSession::new(
        RtpConfig {
            payloads,
            remote,
            symmetric: ep.rtp_symmetric,
            timeout: ep.rtp_timeout,
            ..Default::default()
        },
        now,
        SystemTime::now(),
    );
    let local_tag = super::new_tag();
    let mut contact_uri = SipUri::new(
        invite.uri.as_sip().and_then(|u| u.user.as_deref()),
        Host::Ip(sig.0),
        Some(sig.1),
    );
    if transport == Transport::Tcp {
        super::message::set_param(&mut contact_uri.params, "transport", Some("tcp".into()));
    }
    let contact = NameAddr::new(contact_uri);
    let Ok(mut dialog) = super::Dialog::uas(&invite, &local_tag, Some(contact)) else {
        return fail(400);
    };
    let exten = invite
        .uri
        .as_sip()
        .and_then(|u| u.user.clone())
        .unwrap_or_else(|| "s".to_string());
    let (mut chan, mine) = new_pjsip_channel(&core, &ep.name, codec);
    let name = chan.name.clone();
    if let Ok(from) = invite.headers.from() {
        let num = from
            .uri
            .as_sip()
            .and_then(|u| u.user.clone())
            .unwrap_or_default();
        let mut cid_s = String::new();
        if let Some(d) = from.display_name.as_deref().filter(|d| !d.is_empty()) {
            cid_s = format!("\"{d}\" <{num}>");
        } else {
            cid_s.push_str(&num);
        }
        chan.set_caller(crate::channel::CallerId::parse(&cid_s));
    }
    chan.dnid = exten.clone();
    stack.calls.lock().insert(
        name.clone(),
        (
            ep.name.clone(),
            remote.map(|r| r.to_string()).unwrap_or_default(),
        ),
    );
    crate::dialplan::pbx::spawn(chan, &ep.context, &exten, 1);
    let sdp_body = answer.to_bytes();
    let mut d = Driver {
        cmd: cmd.clone(),
        tx,
        invite,
        answered: false,
        local_sdp: Some(answer.clone()),
        sdp_body,
        remote_sip: source,
        transport,
        allow: ep.allow.clone(),
        rtp_port,
        sending: true,
        held: false,
        dtmf_info: super::info::sends_info(&ep.dtmf_mode, audio.telephone_event.is_some()),
        sig,
        media_ip,
        rewrite_contact: ep.rewrite_contact,
    };
    d.run(&mut dialog, &mut rtp, rtp_sock, mine, &mut inbox)
        .await;
    stack.calls.lock().remove(&name);
    let _ = cmd.send(StackCmd::Unregister(cid));
}

struct Driver {
    cmd: mpsc::UnboundedSender<StackCmd>,
    tx: TxId,
    invite: Request,
    answered: bool,
    sdp_body: Vec<u8>,
    remote_sip: SocketAddr,
    /// The transport of the dialog (TCP: requests go back over the INVITE's connection).
    transport: Transport,
    /// Our current SDP (its origin is kept, and its version bumped, in later answers).
    local_sdp: Option<Sdp>,
    allow: Vec<Codec>,
    rtp_port: u16,
    /// False while the peer holds us with sendonly/inactive: our frames are dropped.
    sending: bool,
    held: bool,
    /// DTMF goes out as SIP INFO (`dtmf_mode=info`, or `auto` without telephone-event).
    dtmf_info: bool,
    /// Our Via/Contact address (`external_signaling_address` or the bound one).
    sig: (IpAddr, u16),
    /// Our SDP address (`external_media_address` or the bound one).
    media_ip: IpAddr,
    /// In-dialog requests go to where the peer's requests came from.
    rewrite_contact: bool,
}

impl Driver {
    fn respond(&self, dialog: &mut super::Dialog, status: u16, sdp: bool) {
        let mut r = dialog.create_response(&self.invite, status);
        if sdp {
            r.set_body(Some("application/sdp"), self.sdp_body.clone());
        }
        dialog.on_response_sent(status);
        let _ = self.cmd.send(StackCmd::Respond(self.tx, r));
    }

    fn send_bye(&self, dialog: &mut super::Dialog) {
        let via = Via::new(
            self.transport,
            Host::Ip(self.sig.0),
            Some(self.sig.1),
            &super::new_branch(),
        );
        let req = dialog.create_request(Method::Bye, via);
        let _ = self.cmd.send(StackCmd::Request(self.next_hop(dialog), req));
    }

    /// Send a digit outward as SIP INFO (`application/dtmf-relay`).
    fn send_info_dtmf(&self, dialog: &mut super::Dialog, digit: char, duration_ms: u32) {
        let via = Via::new(
            self.transport,
            Host::Ip(self.sig.0),
            Some(self.sig.1),
            &super::new_branch(),
        );
        let mut req = dialog.create_request(Method::Info, via);
        req.set_body(
            Some("application/dtmf-relay"),
            super::info::dtmf_relay_body(digit, duration_ms).into_bytes(),
        );
        let _ = self.cmd.send(StackCmd::Request(self.next_hop(dialog), req));
    }

    fn send_ack(&self, dialog: &super::Dialog) {
        let via = Via::new(
            self.transport,
            Host::Ip(self.sig.0),
            Some(self.sig.1),
            &super::new_branch(),
        );
        let req = dialog.create_ack(via);
        let _ = self.cmd.send(StackCmd::Request(self.next_hop(dialog), req));
    }

    fn next_hop(&self, dialog: &super::Dialog) -> SocketAddr {
        if self.transport.is_reliable() || self.rewrite_contact {
            return self.remote_sip;
        }
        match dialog.next_hop() {
            Uri::Sip(u) => u.socket_addr().unwrap_or(self.remote_sip),
            _ => self.remote_sip,
        }
    }

    /// Answer a re-INVITE (RFC 3264 §8): the same codecs and port, the direction the
    /// offer allows (sendonly -> recvonly, inactive -> inactive, sendrecv back), our
    /// origin with its version bumped. While held we stop sending RTP and the RTP
    /// timeout is suspended; the channel gets Hold/Unhold. No usable offer: 488, and
    /// the session stays as it was. A re-INVITE without SDP gets our current SDP.
    fn reinvite(
        &mut self,
        dialog: &super::Dialog,
        rtp: &mut RtpSession,
        link: &TechLink,
        req: &Request,
    ) -> Response {
        let now = Instant::now();
        if req.body.is_empty() {
            let mut r = dialog.create_response(req, 200);
            r.set_body(Some("application/sdp"), self.sdp_body.clone());
            return r;
        }
        let Ok(offer) = Sdp::parse(&req.body) else {
            return dialog.create_response(req, 488);
        };
        let Ok(mut answer) = sdp::answer(
            &offer,
            &self.allow,
            self.media_ip,
            self.rtp_port,
            Direction::SendRecv,
        ) else {
            return dialog.create_response(req, 488);
        };
        if let Some(prev) = &self.local_sdp {
            answer.origin = prev.origin.clone();
            answer.bump_version();
        }
        let dir = answer.audio().map(|a| a.direction).unwrap_or_default();
        self.sending = dir.sends();
        let held = offer.is_hold();
        rtp.set_hold(now, held);
        if held != self.held {
            self.held = held;
            let c = if held { Control::Hold } else { Control::Unhold };
            let _ = link.tx.try_send(ChanMsg::Control(c));
        }
        if let Some(a) = offer.audio() {
            if let Some(addr) = a.addr.filter(|ip| !ip.is_unspecified()) {
                let remote = SocketAddr::new(addr, a.port);
                if rtp.remote() != Some(remote) {
                    rtp.set_remote(remote, None);
                }
            }
        }
        if let Some(a) = answer.audio() {
            rtp.set_payloads(payloads_for(&a).0);
        }
        self.sdp_body = answer.to_bytes();
        self.local_sdp = Some(answer);
        let mut r = dialog.create_response(req, 200);
        r.set_body(Some("application/sdp"), self.sdp_body.clone());
        r
    }

    async fn run(
        &mut self,
        dialog: &mut super::Dialog,
        rtp: &mut RtpSession,
        sock: UdpSocket,
        mut link: TechLink,
        inbox: &mut mpsc::UnboundedReceiver<CallIn>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut buf = vec![0u8; 2048];
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = Instant::now();
                    if let Playout::Frame(f) = rtp.poll_frame(now) {
                        let _ = link.tx.try_send(ChanMsg::Frame(f));
                    }
                    while let Some(t) = rtp.poll_transmit(now) {
                        let _ = sock.send_to(&t.data, t.dest).await;
                    }
                    if let Some(t) = rtp.poll_rtcp(now) {
                        if !t.rtcp { let _ = sock.send_to(&t.data, t.dest).await; }
                    }
                    if let Some(RtpEvent::Timeout) = rtp.poll_timeout(now).filter(|_| self.answered) {
                        if self.answered { self.send_bye(dialog); } else { self.respond(dialog, 408, false); }
                        let _ = link.tx.try_send(ChanMsg::Hangup(16));
                        return;
                    }
                    while let Some(ev) = rtp.poll_event(now) {
                        match ev {
                            RtpEvent::DtmfBegin { digit } => { let _ = link.tx.try_send(ChanMsg::DtmfBegin(digit)); }
                            RtpEvent::DtmfEnd { digit, duration_ms } => { let _ = link.tx.try_send(ChanMsg::DtmfEnd(digit, duration_ms)); }
                            _ => {}
                        }
                    }
                }
                r = sock.recv_from(&mut buf) => {
                    if let Ok((n, src)) = r {
                        let _ = rtp.handle_receive(Instant::now(), src, Bytes::copy_from_slice(&buf[..n]));
                    }
                }
                m = link.rx.recv() => {
                    let now = Instant::now();
                    match m {
                        Some(ChanMsg::Frame(f)) if self.sending => {
                            if let Some(t) = rtp.send_frame(now, &f) { let _ = sock.send_to(&t.data, t.dest).await; }
                        }
                        Some(ChanMsg::DtmfBegin(_)) | Some(ChanMsg::Frame(_)) => {}
                        Some(ChanMsg::DtmfEnd(d, ms)) if self.dtmf_info => {
                            if self.answered { self.send_info_dtmf(dialog, d, ms.max(100)); }
                        }
                        Some(ChanMsg::DtmfEnd(d, ms)) => {
                            if let Ok(Some(t)) = rtp.send_dtmf(now, d, ms.max(100)) { let _ = sock.send_to(&t.data, t.dest).await; }
                        }
                        Some(ChanMsg::Control(c)) => match c {
                            Control::Answer if !self.answered => { self.answered = true; rtp.set_timeout(now, rtp.timeout()); self.respond(dialog, 200, true); }
                            Control::Ringing if !self.answered => self.respond(dialog, 180, false),
                            Control::Progress if !self.answered => self.respond(dialog, 183, true),
                            Control::Busy if !self.answered => { self.respond(dialog, 486, false); return; }
                            Control::Congestion if !self.answered => { self.respond(dialog, 503, false); return; }
                            _ => {}
                        },
                        Some(ChanMsg::Hangup(_)) | None => {
                            let cause = match m { Some(ChanMsg::Hangup(c)) => c, _ => 16 };
                            if self.answered { self.send_bye(dialog); } else {
                                let status = match cause { 17 => 486, 34 | 38 => 503, 1 => 404, 21 => 603, _ => 480 };
                                self.respond(dialog, status, false);
                            }
                            return;
                        }
                    }
                }
                i = inbox.recv() => {
                    match i {
                        Some(CallIn::Request(tx, req)) => {
                            let _ = dialog.handle_request(&req);
                            match req.method {
                                Method::Bye => {
                                    if let Some(tx) = tx { let _ = self.cmd.send(StackCmd::Respond(tx, dialog.create_response(&req, 200))); }
                                    let _ = link.tx.try_send(ChanMsg::Hangup(16));
                                    return;
                                }
                                Method::Ack => {}
                                Method::Invite => {
                                    if let Some(tx) = tx {
                                        let r = self.reinvite(dialog, rtp, &link, &req);
                                        let _ = self.cmd.send(StackCmd::Respond(tx, r));
                                    }
                                }
                                Method::Info => {
                                    let dtmf = super::info::parse_dtmf_info(req.headers.content_type(), &req.body);
                                    if let Some((digit, ms)) = dtmf {
                                        let _ = link.tx.try_send(ChanMsg::DtmfBegin(digit));
                                        let _ = link.tx.try_send(ChanMsg::DtmfEnd(digit, ms));
                                    }
                                    if let Some(tx) = tx {
                                        // A DTMF body we cannot read: 400;
                                        // other INFO packages (or an empty keepalive INFO): 200.
                                        let ct = req.headers.content_type().unwrap_or("").to_ascii_lowercase();
                                        let status = if dtmf.is_none() && ct.starts_with("application/dtmf") { 400 } else { 200 };
                                        let r = dialog.create_response(&req, status);
                                        let _ = self.cmd.send(StackCmd::Respond(tx, r));
                                    }
                                }
                                _ => {
                                    if let Some(tx) = tx {
                                        let r = dialog.create_response(&req, 200);
                                        let _ = self.cmd.send(StackCmd::Respond(tx, r));
                                    }
                                }
                            }
                        }
                        Some(CallIn::Response(r)) => {
                            // A retransmitted 2xx to our INVITE: ACK again.
                            if r.is_success() && r.headers.cseq().is_ok_and(|c| c.method == Method::Invite) && dialog.role == super::Role::Uac {
                                self.send_ack(dialog);
                            }
                        }
                        Some(CallIn::Cancelled) | None => {
                            let _ = link.tx.try_send(ChanMsg::Hangup(16));
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// The `PJSIP` channel technology: `PJSIP/<endpoint>` (registered or static AOR contact)
/// or `PJSIP/<endpoint>/<sip uri>`.
pub struct PjsipTech;

impl crate::core::Technology for PjsipTech {
    fn name(&self) -> &'static str {
        "PJSIP"
    }

    fn request(
        &self,
        core: &Arc<Core>,
        data: &str,
        _requestor: Option<&Channel>,
    ) -> Result<Channel, String> {
        let stack = core
            .ext
            .get::<SipStack>()
            .ok_or_else(|| "PJSIP is not configured".to_string())?;
        let (ep_name, uri) = match data.split_once('/') {
            Some((e, u)) => (e, Some(u.to_string())),
            None => (data, None),
        };
        let ep = stack
            .config
            .endpoint(ep_name)
            .cloned()
            .ok_or_else(|| format!("no PJSIP endpoint '{ep_name}'"))?;
        // rewrite_contact: a registered contact is reached where its REGISTER came from.
        let mut via_source = None;
        let target = match uri {
            Some(u) => u,
            None => {
                let now = Instant::now();
                let reg = stack.registrar.lock();
                ep.aors
                    .iter()
                    .find_map(|a| {
                        reg.contacts(now, a).last().map(|c| {
                            via_source = Some(c.source);
                            c.uri.clone()
                        })
                    })
                    .or_else(|| {
                        ep.aors.iter().find_map(|a| {
                            stack
                                .config
                                .aors
                                .iter()
                                .find(|x| &x.name == a)
                                .and_then(|x| x.contacts.first().cloned())
                        })
                    })
                    .ok_or_else(|| format!("endpoint '{ep_name}' has no contact"))?
            }
        };
        let target: SipUri = target
            .trim_matches(|c| c == '<' || c == '>')
            .parse()
            .map_err(|e| format!("bad SIP URI '{target}': {e}"))?;
        let dest = match via_source.filter(|_| ep.rewrite_contact) {
            Some(src) => src,
            None => target
                .socket_addr()
                .ok_or_else(|| format!("cannot resolve '{target}' (IP addresses only)"))?,
        };
        let (local, cmd) = stack
            .local
            .lock()
            .clone()
            .ok_or_else(|| "no PJSIP transport".to_string())?;
        let codec = ep.allow.first().copied().unwrap_or(Codec::Pcmu);
        let (chan, mine) = new_pjsip_channel(core, &ep.name, codec);
        let name = chan.name.clone();
        tokio::spawn(async move {
            stack
                .calls
                .lock()
                .insert(name.clone(), (ep.name.clone(), String::new()));
            outbound_call(&stack, cmd, local, ep, target, dest, mine).await;
            stack.calls.lock().remove(&name);
        });
        Ok(chan)
    }
}

async fn outbound_call(
    stack: &Arc<SipStack>,
    cmd: mpsc::UnboundedSender<StackCmd>,
    local: SocketAddr,
    ep: EndpointCfg,
    target: SipUri,
    dest: SocketAddr,
    mut link: TechLink,
) {
    // Wait for the owner to place the call.
    let caller = loop {
        match link.rx.recv().await {
            Some(ChanMsg::Control(Control::Call { caller, .. })) => break caller,
            Some(ChanMsg::Hangup(_)) | None => return,
            _ => {}
        }
    };
    let hang = |link: &TechLink, cause: i32| {
        let _ = link.tx.try_send(ChanMsg::Hangup(cause));
    };
    let ip = SipStack::local_ip(local);
    let Ok(sock) = stack.bind_rtp(ip).await else {
        return hang(&link, 34);
    };
    let rtp_port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
    let (sig, media_ip) = stack.advertised(local);
    let offer = sdp::offer(&ep.allow, media_ip, rtp_port, Direction::SendRecv);
    let sdp_body = offer.to_bytes();
    let cid = super::new_call_id(Some(&ip.to_string()));
    let user = if caller.num.is_empty() {
        "voxpbx".to_string()
    } else {
        caller.num.clone()
    };
    let mut invite = Request::new(Method::Invite, target.clone());
    let via = Via::new(
        Transport::Udp,
        Host::Ip(sig.0),
        Some(sig.1),
        &super::new_branch(),
    );
    invite.headers.push(HeaderName::VIA, via.to_string());
    invite.headers.push(HeaderName::MAX_FORWARDS, "70");
    let from_host = if sig.0.is_ipv6() {
        format!("[{}]", sig.0)
    } else {
        sig.0.to_string()
    };
    let display = if caller.name.is_empty() {
        String::new()
    } else {
        format!("\"{}\" ", caller.name)
    };
    invite.headers.push(
        HeaderName::FROM,
        format!("{display}<sip:{user}@{from_host}>;tag={}", super::new_tag()),
    );
    invite.headers.push(HeaderName::TO, format!("<{target}>"));
    invite.headers.push(HeaderName::CALL_ID, cid.clone());
    invite.headers.push(HeaderName::CSEQ, "1 INVITE");
    invite.headers.push(
        HeaderName::CONTACT,
        format!("<sip:{user}@{from_host}:{}>", sig.1),
    );
    invite
        .headers
        .push(HeaderName::ALLOW, "INVITE, ACK, CANCEL, BYE, OPTIONS");
    invite.set_body(Some("application/sdp"), sdp_body.clone());
    let (in_tx, mut inbox) = mpsc::unbounded_channel();
    let _ = cmd.send(StackCmd::Register(cid.clone(), in_tx));
    let _ = cmd.send(StackCmd::Request(dest, invite.clone()));
    let mut cancelled = false;
    let mut auth_tried = false;
    let outbound_auth = ep
        .outbound_auth
        .as_ref()
        .and_then(|n| stack.config.auths.iter().find(|a| &a.name == n))
        .map(|a| (a.username.clone(), a.password.clone()));
    let answer = loop {
        tokio::select! {
            m = link.rx.recv() => match m {
                Some(ChanMsg::Hangup(_)) | None if !cancelled => {
                    cancelled = true;
                    let _ = cmd.send(StackCmd::Cancel(cid.clone()));
                }
                _ => {}
            },
            r = inbox.recv() => match r {
                Some(CallIn::Response(r)) => {
                    match r.status {
                        100 => {}
                        180..=182 if !cancelled => { let _ = link.tx.try_send(ChanMsg::Control(Control::Ringing)); }
                        183 if !cancelled => { let _ = link.tx.try_send(ChanMsg::Control(Control::Progress)); }
                        101..=199 => {}
                        200..=299 => break r,
                        401 | 407 if !auth_tried && !cancelled && outbound_auth.is_some() => {
                            // Answer the challenge once: same Call-ID and tags, next CSeq,
                            // new branch (RFC 3261 §22.2). The 401's ACK is the transaction's.
                            auth_tried = true;
                            let Some((user, pass)) = &outbound_auth else { continue };
                            if super::auth::authorize_request(&mut invite, &r, user, pass, &super::new_tag(), 1).is_err() {
                                hang(&link, 21);
                                let _ = cmd.send(StackCmd::Unregister(cid));
                                return;
                            }
                            let next = invite.headers.cseq().map(|c| c.seq + 1).unwrap_or(2);
                            invite.headers.set(HeaderName::CSEQ, format!("{next} INVITE"));
                            if let Ok(mut v) = invite.headers.top_via() {
                                v.set_branch(&super::new_branch());
                                invite.headers.set_top_via(&v);
                            }
                            let _ = cmd.send(StackCmd::Request(dest, invite.clone()));
                        }
                        s => {
                            let cause = match s {
                                486 | 600 => 17,
                                404 | 604 => 1,
                                408 | 480 => 18,
                                487 => 16,
                                403 | 603 => 21,
                                503 => 34,
                                488 | 606 => 58,
                                _ => 31,
                            };
                            if s == 486 || s == 600 {
                                let _ = link.tx.try_send(ChanMsg::Control(Control::Busy));
                            }
                            hang(&link, cause);
                            let _ = cmd.send(StackCmd::Unregister(cid));
                            return;
                        }
                    }
                }
                Some(_) => {}
                None => return,
            },
        }
    };
    let Ok(mut dialog) = super::Dialog::uac(&invite, &answer) else {
        hang(&link, 31);
        let _ = cmd.send(StackCmd::Unregister(cid));
        return;
    };
    let mut d = Driver {
        cmd: cmd.clone(),
        tx: TxId(0),
        invite,
        answered: true,
        local_sdp: Some(offer.clone()),
        sdp_body,
        remote_sip: dest,
        transport: Transport::Udp,
        allow: ep.allow.clone(),
        rtp_port,
        sending: true,
        held: false,
        dtmf_info: false,
        sig,
        media_ip,
        rewrite_contact: ep.rewrite_contact,
    };
    d.send_ack(&dialog);
    if cancelled {
        d.send_bye(&mut dialog);
        let _ = cmd.send(StackCmd::Unregister(cid));
        return;
    }
    let remote_sdp = Sdp::parse(&answer.body).ok();
    let audio = remote_sdp.as_ref().and_then(|s| s.audio());
    d.dtmf_info = super::info::sends_info(
        &ep.dtmf_mode,
        audio.as_ref().is_some_and(|a| a.telephone_event.is_some()),
    );
    let (payloads, remote) = match &audio {
        Some(a) => (
            payloads_for(a).0,
            a.addr.map(|ip| SocketAddr::new(ip, a.port)),
        ),
        None => (
            PayloadMap::with_static().with_telephone_event(101, 8000),
            None,
        ),
    };
    if let Some(c) = audio.as_ref().and_then(|a| a.codecs.first()) {
        if c.0.format() != link.native {
            let _ = link
                .tx
                .try_send(ChanMsg::Control(Control::Format(c.0.format())));
        }
    }
    let mut rtp = RtpSession::new(
        RtpConfig {
            payloads,
            remote,
            symmetric: ep.rtp_symmetric,
            timeout: ep.rtp_timeout,
            ..Default::default()
        },
        Instant::now(),
        SystemTime::now(),
    );
    let _ = link.tx.try_send(ChanMsg::Control(Control::Answer));
    d.run(&mut dialog, &mut rtp, sock, link, &mut inbox).await;
    let _ = cmd.send(StackCmd::Unregister(cid));
}

fn register_cli(core: &Arc<Core>) {
    core.register_cli(
        "pjsip show endpoints",
        "List PJSIP endpoints",
        Arc::new(|core: Arc<Core>, _args: Vec<String>| {
            Box::pin(async move {
                let Some(s) = core.ext.get::<SipStack>() else {
                    return "PJSIP not loaded\n".to_string();
                };
                let mut out = String::from(" Endpoint:  <Endpoint/CID.....................................>  <State.....>  <Channels.>\n");
                for e in &s.config.endpoints {
                    let n = s.calls.lock().values().filter(|c| c.0 == e.name).count();
                    let reg = e.aors.iter().any(|a| !s.registrar.lock().contacts(Instant::now(), a).is_empty());
                    out.push_str(&format!(" Endpoint:  {:<48} {:<13} {} of inf\n", e.name, if reg { "Not in use" } else { "Unavailable" }, n));
                }
                out.push_str(&format!("\nObjects found: {}\n", s.config.endpoints.len()));
                out
            })
        }),
    );
    core.register_cli(
        "pjsip show contacts",
        "List PJSIP contacts",
        Arc::new(|core: Arc<Core>, _args: Vec<String>| {
            Box::pin(async move {
                let Some(s) = core.ext.get::<SipStack>() else {
                    return "PJSIP not loaded\n".to_string();
                };
                let mut out = String::from("  Contact:  <Aor/ContactUri..........................> <Hash....> <Status> <RTT(ms)..>\n");
                let now = Instant::now();
                let mut n = 0;
                let q = s.qualifier.lock();
                let qual = |aor: &str, uri: &str| match q.get(aor, uri) {
                    Some(c) => format!(
                        "{} {}",
                        c.status.cli(),
                        c.rtt.map(|r| format!("{:.3}", r.as_secs_f64() * 1000.0)).unwrap_or_else(|| "nan".into())
                    ),
                    None => "Avail nan".to_string(),
                };
                let mut shown = std::collections::HashSet::new();
                for (aor, c) in s.registrar.lock().all(now) {
                    n += 1;
                    shown.insert((aor.to_string(), c.uri.clone()));
                    let left = c.expires_at.saturating_duration_since(now).as_secs();
                    out.push_str(&format!("  Contact:  {}/{} {} {} expires={left}\n", aor, c.uri, c.source, qual(aor, &c.uri)));
                }
                for c in q.all() {
                    if shown.contains(&(c.target.aor.clone(), c.target.uri.clone())) {
                        continue;
                    }
                    n += 1;
                    out.push_str(&format!("  Contact:  {}/{} {} {}\n", c.target.aor, c.target.uri, c.target.dest, qual(&c.target.aor, &c.target.uri)));
                }
                out.push_str(&format!("\nObjects found: {n}\n"));
                out
            })
        }),
    );
    core.register_cli(
        "pjsip show channels",
        "List PJSIP channels",
        Arc::new(|core: Arc<Core>, _args: Vec<String>| {
            Box::pin(async move {
                let Some(s) = core.ext.get::<SipStack>() else {
                    return "PJSIP not loaded\n".to_string();
                };
                let calls = s.calls.lock();
                let mut out = String::from("  Channel:  <ChannelId......................................>  <State.....>  <Time.....>\n");
                for name in calls.keys() {
                    out.push_str(&format!("  Channel:  {name}\n"));
                }
                out.push_str(&format!("\nObjects found: {}\n", calls.len()));
                out
            })
        }),
    );
    core.register_cli(
        "pjsip show registrations",
        "List outbound registrations",
        Arc::new(|core: Arc<Core>, _args: Vec<String>| {
            Box::pin(async move {
                let Some(s) = core.ext.get::<SipStack>() else {
                    return "PJSIP not loaded\n".to_string();
                };
                let regs = s.registrations.lock().clone();
                if regs.is_empty() {
                    return "No objects found.\n".to_string();
                }
                let mut out = String::from(" <Registration/ServerURI..............................>  <Auth....................>  <Status.......>\n");
                out.push_str("==========================================================================================\n\n");
                for r in &regs {
                    let exp = r.expires_in.map(|e| format!(" (exp. {e}s)")).unwrap_or_default();
                    out.push_str(&format!(
                        " {}/{:<48} {:<26} {}{}\n",
                        r.name,
                        r.server_uri,
                        if r.auth { "outbound_auth" } else { "n/a" },
                        r.state.as_str(),
                        exp
                    ));
                }
                out.push_str(&format!("\nObjects found: {}\n", regs.len()));
                out
            })
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_stack() -> SipStack {
        let text = "[alice]\ntype=endpoint\nauth=alice-auth\naors=alice\n\
                    [alice-auth]\ntype=auth\nusername=alice\npassword=pw\n\
                    [alice]\ntype=aor\nmax_contacts=1\n\
                    [open]\ntype=endpoint\n";
        let f = crate::config::parser::parse_str(text, std::path::Path::new("pjsip.conf")).unwrap();
        SipStack {
            config: PjsipConfig::from_conf(&f, None).unwrap(),
            registrar: Mutex::new(Registrar::new()),
            registrations: Mutex::new(Vec::new()),
            qualifier: Mutex::new(Qualifier::new()),
            nonce_secret: [7; 32],
            calls: Mutex::new(HashMap::new()),
            next_rtp: AtomicU16::new(0),
            local: Mutex::new(None),
        }
    }

    fn invite(from: &str) -> Request {
        let text = format!(
            "INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKa\r\n\
             From: <sip:{from}@10.0.0.9>;tag=x\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: c1\r\n\
             CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        match super::super::parse_message(text.as_bytes()).unwrap() {
            super::super::SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn inbound_digest_challenge_stale_and_forbidden() {
        let stack = test_stack();
        let req = invite("alice");
        let ep = identify_invite(&stack.config, &req, "10.0.0.9".parse().unwrap())
            .unwrap()
            .clone();
        assert_eq!(ep.name, "alice");
        let t0 = 1_800_000_000u64;
        // No credentials: 401 with SHA-256 offered before MD5.
        let ch = check_auth(&stack, t0, &req, &ep).unwrap_err();
        assert_eq!(ch.status, 401);
        let algs: Vec<&str> = ch.headers.get_all(&HeaderName::WWW_AUTHENTICATE).collect();
        assert_eq!(algs.len(), 2);
        assert!(
            algs[0].contains("SHA-256") && algs[1].contains("MD5"),
            "{algs:?}"
        );
        // Right password: through (both algorithms).
        for _ in 0..2 {
            let mut ok = req.clone();
            crate::sip::auth::authorize_request(&mut ok, &ch, "alice", "pw", "cn", 1).unwrap();
            assert!(check_auth(&stack, t0 + 5, &ok, &ep).is_ok());
        }
        let mut md5 = req.clone();
        let mut only_md5 = (*ch).clone();
        only_md5.headers.remove(&HeaderName::WWW_AUTHENTICATE);
        only_md5.headers.push(HeaderName::WWW_AUTHENTICATE, algs[1]);
        crate::sip::auth::authorize_request(&mut md5, &only_md5, "alice", "pw", "cn", 1).unwrap();
        assert!(check_auth(&stack, t0 + 5, &md5, &ep).is_ok());
        // The same credentials after the nonce lifetime (32 s): 401 stale=true.
        let stale = check_auth(&stack, t0 + 100, &md5, &ep).unwrap_err();
        assert_eq!(stale.status, 401);
        assert!(stale
            .headers
            .get(&HeaderName::WWW_AUTHENTICATE)
            .unwrap()
            .contains("stale=true"));
        // Wrong password: 403.
        let mut bad = req.clone();
        crate::sip::auth::authorize_request(&mut bad, &ch, "alice", "nope", "cn", 1).unwrap();
        assert_eq!(
            check_auth(&stack, t0 + 5, &bad, &ep).unwrap_err().status,
            403
        );
        // A nonce from another process/secret: a fresh challenge, not 403.
        let other = DigestServer::new("asterisk", b"other", 32).challenge_response(
            t0,
            &req,
            false,
            false,
            &[Algorithm::Md5],
            "t",
        );
        let mut foreign = req.clone();
        crate::sip::auth::authorize_request(&mut foreign, &other, "alice", "pw", "cn", 1).unwrap();
        assert_eq!(
            check_auth(&stack, t0 + 5, &foreign, &ep)
                .unwrap_err()
                .status,
            401
        );
        // Endpoint without auth: no challenge. Unknown user: no endpoint.
        let open = stack.config.endpoint("open").unwrap();
        assert!(check_auth(&stack, t0, &invite("open"), open).is_ok());
        assert!(identify_invite(
            &stack.config,
            &invite("mallory"),
            "10.0.0.9".parse().unwrap()
        )
        .is_none());
    }

    #[test]
    fn supported_algorithms_uas_option() {
        let text = "[a]\ntype=auth\nusername=a\npassword=b\nsupported_algorithms_uas=MD5\n";
        let f = crate::config::parser::parse_str(text, std::path::Path::new("pjsip.conf")).unwrap();
        assert_eq!(
            PjsipConfig::from_conf(&f, None).unwrap().auths[0].algorithms,
            vec![Algorithm::Md5]
        );
        let text = "[a]\ntype=auth\nsupported_algorithms_uas=SHA-512\n";
        let f = crate::config::parser::parse_str(text, std::path::Path::new("pjsip.conf")).unwrap();
        assert!(PjsipConfig::from_conf(&f, None).is_err());
    }

    #[test]
    fn tcp_transport_section() {
        let text = "[t]\ntype=transport\nprotocol=tcp\nbind=127.0.0.1:5061\n\
                    [w]\ntype=transport\nprotocol=wss\n";
        let f = crate::config::parser::parse_str(text, std::path::Path::new("pjsip.conf")).unwrap();
        let c = PjsipConfig::from_conf(&f, None).unwrap();
        assert_eq!(c.transports.len(), 1, "wss is skipped");
        assert_eq!(c.transports[0].protocol, Transport::Tcp);
    }

    fn stack_from(text: &str) -> SipStack {
        let f = crate::config::parser::parse_str(text, std::path::Path::new("pjsip.conf")).unwrap();
        let mut s = test_stack();
        s.config = PjsipConfig::from_conf(&f, None).unwrap();
        s
    }

    #[test]
    fn nat_options_parse_and_advertise() {
        let s = stack_from(
            "[t]\ntype=transport\nbind=10.0.0.5:5070\nexternal_signaling_address=203.0.113.9\n\
             external_signaling_port=5999\nexternal_media_address=203.0.113.10\n\
             [u]\ntype=transport\nbind=10.0.0.5:5080\n\
             [nat]\ntype=endpoint\nrewrite_contact=yes\nforce_rport=no\n\
             [plain]\ntype=endpoint\n",
        );
        let ext: SocketAddr = "10.0.0.5:5070".parse().unwrap();
        let sig: IpAddr = "203.0.113.9".parse().unwrap();
        let media: IpAddr = "203.0.113.10".parse().unwrap();
        assert_eq!(s.advertised(ext), ((sig, 5999), media));
        let plain: SocketAddr = "10.0.0.5:5080".parse().unwrap();
        let lip: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(s.advertised(plain), ((lip, 5080), lip));
        let nat = s.config.endpoint("nat").unwrap();
        assert!(nat.rewrite_contact && !nat.force_rport);
        let p = s.config.endpoint("plain").unwrap();
        assert!(!p.rewrite_contact && p.force_rport);
        // No external port: the bound one.
        let s2 = stack_from(
            "[t]\ntype=transport\nbind=10.0.0.5:5070\nexternal_signaling_address=203.0.113.9\n",
        );
        assert_eq!(s2.advertised(ext).0, (sig, 5070));
        // A host name is refused with an error, not a panic.
        let f = crate::config::parser::parse_str(
            "[t]\ntype=transport\nexternal_media_address=pbx.example.com\n",
            std::path::Path::new("pjsip.conf"),
        )
        .unwrap();
        assert!(PjsipConfig::from_conf(&f, None).is_err());
    }

    #[test]
    fn qualify_options_request_uses_external_address() {
        let t = QualifyTarget {
            aor: "a".into(),
            endpoint: "a".into(),
            uri: "sip:bob@192.0.2.7:5062".into(),
            dest: "192.0.2.7:5062".parse().unwrap(),
            frequency: Duration::from_secs(5),
            timeout: Duration::from_secs(3),
        };
        let req = options_request(&t, ("203.0.113.9".parse().unwrap(), 5999)).unwrap();
        let text = String::from_utf8_lossy(&req.to_bytes()).to_string();
        assert!(
            text.starts_with("OPTIONS sip:bob@192.0.2.7:5062 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Via: SIP/2.0/UDP 203.0.113.9:5999;branch=z9hG4bK"),
            "{text}"
        );
        assert!(
            text.contains("Contact: <sip:voxpbx@203.0.113.9:5999>"),
            "{text}"
        );
        assert!(text.contains("CSeq: 1 OPTIONS"), "{text}");
        let parsed = crate::sip::parse_message(text.as_bytes());
        assert!(parsed.is_ok(), "{text}");
    }

    #[test]
    fn qualify_config_and_targets() {
        let s = stack_from(
            "[ph]\ntype=endpoint\naors=ph\n\
             [ph]\ntype=aor\ncontact=sip:ph@192.0.2.8:5060\nqualify_frequency=15\nqualify_timeout=0.5\n\
             [off]\ntype=aor\ncontact=sip:x@192.0.2.9\n",
        );
        let t = qualify_targets(&s, Instant::now());
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].endpoint, "ph");
        assert_eq!(t[0].dest, "192.0.2.8:5060".parse::<SocketAddr>().unwrap());
        assert_eq!(t[0].frequency, Duration::from_secs(15));
        assert_eq!(t[0].timeout, Duration::from_millis(500));
        let f = crate::config::parser::parse_str(
            "[ph]\ntype=aor\nqualify_timeout=-1\n",
            std::path::Path::new("pjsip.conf"),
        )
        .unwrap();
        assert!(PjsipConfig::from_conf(&f, None).is_err());
    }

    #[test]
    fn registration_section() {
        let text = "[t-auth]\ntype=auth\nusername=u\npassword=p\n\
                    [prov]\ntype=registration\nserver_uri=sip:192.0.2.1:5060\n\
                    client_uri=sip:1234@192.0.2.1\noutbound_auth=t-auth\nexpiration=600\n";
        let f = crate::config::parser::parse_str(text, std::path::Path::new("pjsip.conf")).unwrap();
        let c = PjsipConfig::from_conf(&f, None).unwrap();
        let r = &c.registrations[0];
        assert_eq!(r.contact_user, "1234");
        assert_eq!(r.auth, Some(("u".to_string(), "p".to_string())));
        assert_eq!((r.expiration, r.retry_interval), (600, 60));
        let bad =
            "[prov]\ntype=registration\nserver_uri=sip:x\nclient_uri=sip:a@x\noutbound_auth=none\n";
        let f = crate::config::parser::parse_str(bad, std::path::Path::new("pjsip.conf")).unwrap();
        assert!(PjsipConfig::from_conf(&f, None).is_err());
    }

    #[test]
    fn cidr_matching() {
        let n = parse_cidr("10.0.0.0/8").unwrap();
        assert!(cidr_contains(n, "10.1.2.3".parse().unwrap()));
        assert!(!cidr_contains(n, "11.1.2.3".parse().unwrap()));
        let h = parse_cidr("127.0.0.1").unwrap();
        assert!(cidr_contains(h, "127.0.0.1".parse().unwrap()));
        assert!(parse_cidr("1.2.3.4/40").is_none());
        assert!(parse_cidr("bogus").is_none());
    }

    #[test]
    fn codec_list() {
        assert_eq!(parse_codecs(&["alaw,ulaw"]), vec![Codec::Pcma, Codec::Pcmu]);
        assert_eq!(parse_codecs(&["!all", "g722"]), vec![Codec::G722]);
    }

    #[test]
    fn config_parse() {
        let text = "[udp]\ntype=transport\nprotocol=udp\nbind=127.0.0.1:5070\n\
                    [ep](!)\ntype=endpoint\ncontext=from-sip\nallow=ulaw\n\
                    [alice](ep)\naors=alice\nauth=alice\n\
                    [alice]\ntype=aor\nmax_contacts=1\n\
                    [alice-auth]\ntype=auth\nusername=alice\npassword=pw\n\
                    [id]\ntype=identify\nendpoint=alice\nmatch=127.0.0.1\n";
        let f = crate::config::parser::parse_str(text, std::path::Path::new("pjsip.conf")).unwrap();
        let c = PjsipConfig::from_conf(&f, None).unwrap();
        assert_eq!(c.transports[0].bind, "127.0.0.1:5070".parse().unwrap());
        assert_eq!(c.transports[0].protocol, Transport::Udp);
        let e = c.endpoint("alice").unwrap();
        assert_eq!(e.context, "from-sip");
        assert_eq!(e.allow, vec![Codec::Pcmu]);
        assert_eq!(
            c.identify("127.0.0.1".parse().unwrap()).unwrap().name,
            "alice"
        );
        assert!(c.identify("10.0.0.1".parse().unwrap()).is_none());
        assert_eq!(c.aors[0].policy.max_contacts, 1);
        assert_eq!(c.aors[0].policy.default_expiration, 3600);
        assert_eq!(c.rtp_start, 10000);
    }
}
