//! The tokio shell around the sans-IO SIP core: `pjsip.conf` / `rtp.conf` loading, one
//! UDP socket per transport driving a [`TransactionLayer`], OPTIONS, REGISTER (contacts
//! per AOR), and inbound INVITE from identified endpoints creating `PJSIP/<ep>-<hex>`
//! channels whose media runs through a per-call driver task owning an [`RtpSession`].

use super::message::{Host, Method, NameAddr, Request, Response, SipUri, Transport, Uri, Via};
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
}

/// A `type=endpoint` section.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointCfg {
    pub name: String,
    pub context: String,
    pub allow: Vec<Codec>,
    pub aors: Vec<String>,
    pub auth: Option<String>,
    pub dtmf_mode: String,
    pub rtp_symmetric: bool,
    /// `rtp_timeout` (seconds): hang up an answered call after this long without RTP (0 = off).
    pub rtp_timeout: Duration,
}

/// A `type=auth` section (userpass).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthCfg {
    pub name: String,
    pub username: String,
    pub password: String,
}

/// A `type=aor` section.
#[derive(Debug, Clone, PartialEq)]
pub struct AorCfg {
    pub name: String,
    pub contacts: Vec<String>,
    pub max_contacts: u32,
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
                    if proto != "udp" {
                        tracing::warn!("pjsip transport {}: protocol {proto} unsupported", s.name);
                        continue;
                    }
                    let b = s.get("bind").unwrap_or("0.0.0.0:5060");
                    let bind = b
                        .parse::<SocketAddr>()
                        .or_else(|_| b.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 5060)))
                        .map_err(|_| {
                            ConfigError::new(&s.file, s.line, format!("bad bind address '{b}'"))
                        })?;
                    cfg.transports.push(TransportCfg {
                        name: s.name.clone(),
                        bind,
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
                        dtmf_mode: s.get("dtmf_mode").unwrap_or("rfc4733").to_string(),
                        rtp_symmetric: s.get_bool("rtp_symmetric").unwrap_or(false),
                        rtp_timeout: Duration::from_secs(s.get_parse("rtp_timeout")?.unwrap_or(0)),
                    });
                }
                "auth" => cfg.auths.push(AuthCfg {
                    name: s.name.clone(),
                    username: s.get("username").unwrap_or(&s.name).to_string(),
                    password: s.get("password").unwrap_or("").to_string(),
                }),
                "aor" => cfg.aors.push(AorCfg {
                    name: s.name.clone(),
                    contacts: s
                        .get_all("contact")
                        .flat_map(|c| c.split(','))
                        .map(|c| c.trim().to_string())
                        .filter(|c| !c.is_empty())
                        .collect(),
                    max_contacts: s.get_parse("max_contacts")?.unwrap_or(0),
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

/// A registered contact.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub uri: String,
    pub expires_at: Instant,
    pub source: SocketAddr,
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
    pub contacts: Mutex<HashMap<String, Vec<Contact>>>,
    /// Active PJSIP channels: name -> (endpoint, remote RTP).
    pub calls: Mutex<HashMap<String, (String, String)>>,
    next_rtp: AtomicU16,
    local: Mutex<Option<(SocketAddr, mpsc::UnboundedSender<StackCmd>)>>,
}

static CHAN_SEQ: AtomicU32 = AtomicU32::new(0);

impl SipStack {
    fn local_ip(bind: SocketAddr) -> IpAddr {
        if bind.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            bind.ip()
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
        contacts: Mutex::new(HashMap::new()),
        calls: Mutex::new(HashMap::new()),
        local: Mutex::new(None),
    });
    core.ext.insert(stack.clone());
    register_cli(&core);
    for t in stack.config.transports.clone() {
        let sock = UdpSocket::bind(t.bind).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut l = stack.local.lock();
            if l.is_none() {
                *l = Some((sock.local_addr()?, tx.clone()));
            }
        }
        let core2 = core.clone();
        let stack2 = stack.clone();
        tokio::spawn(async move {
            transport_task(core2, stack2, Arc::new(sock), tx, rx).await;
        });
    }
    Ok(())
}

async fn transport_task(
    core: Arc<Core>,
    stack: Arc<SipStack>,
    sock: Arc<UdpSocket>,
    cmd_tx: mpsc::UnboundedSender<StackCmd>,
    mut cmd_rx: mpsc::UnboundedReceiver<StackCmd>,
) {
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let mut calls: HashMap<String, mpsc::UnboundedSender<CallIn>> = HashMap::new();
    let mut tx_call: HashMap<TxId, String> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let deadline = layer.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let Ok((n, src)) = r else { continue };
                let now = Instant::now();
                if let Err(e) = layer.handle_datagram(now, src, Transport::Udp, &buf[..n]) {
                    tracing::debug!("SIP from {src}: {e}");
                    reply_400(&mut layer, src, &buf[..n]);
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
                            layer.send_stateless(dest, Transport::Udp, &super::SipMessage::Request(r));
                        } else if let Ok(id) = layer.send_request(now, dest, Transport::Udp, r.clone()) {
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
            if sock.send_to(&t.data, t.dest).await.is_err() {
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
                        &core, &stack, &mut layer, &cmd_tx, &mut calls, local, tx, request, source,
                    );
                }
                Event::Cancelled { cancel, .. } => {
                    if let Ok(cid) = cancel.headers.call_id() {
                        if let Some(s) = calls.get(cid) {
                            let _ = s.send(CallIn::Cancelled);
                        }
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
                }
                _ => {}
            }
        }
        while let Some(t) = layer.poll_transmit() {
            let _ = sock.send_to(&t.data, t.dest).await;
        }
    }
}

/// Best effort 400 for a request that failed to parse (needs the Via etc. to be readable).
fn reply_400(layer: &mut TransactionLayer, src: SocketAddr, data: &[u8]) {
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
        layer.send_stateless(src, Transport::Udp, &msg);
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
    local: SocketAddr,
    tx: TxId,
    req: Request,
    source: SocketAddr,
) {
    match req.method {
        Method::Options => {
            let mut r = Response::from_request(&req, 200).with_to_tag(&super::new_tag());
            r.headers.push(
                HeaderName::ALLOW,
                "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER",
            );
            let _ = layer.send_response(Instant::now(), tx, r);
        }
        Method::Register => handle_register(stack, layer, tx, &req, source),
        Method::Invite => {
            let Some(ep) = stack.config.identify(source.ip()).cloned() else {
                respond(layer, tx, &req, 403);
                return;
            };
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

fn handle_register(
    stack: &Arc<SipStack>,
    layer: &mut TransactionLayer,
    tx: TxId,
    req: &Request,
    source: SocketAddr,
) {
    let user = req
        .headers
        .to()
        .ok()
        .and_then(|t| t.uri.as_sip().and_then(|u| u.user.clone()))
        .unwrap_or_default();
    let Some(aor) = stack.config.aors.iter().find(|a| a.name == user) else {
        respond(layer, tx, req, 404);
        return;
    };
    let default_exp: u64 = req
        .headers
        .get(&HeaderName::EXPIRES)
        .and_then(|e| e.trim().parse().ok())
        .unwrap_or(3600);
    let now = Instant::now();
    let mut map = stack.contacts.lock();
    let list = map.entry(aor.name.clone()).or_default();
    list.retain(|c| c.expires_at > now);
    if req.headers.is_contact_star() {
        list.clear();
    } else if let Ok(cs) = req.headers.contacts() {
        for c in cs {
            let exp = c
                .param("expires")
                .flatten()
                .and_then(|e| e.parse().ok())
                .unwrap_or(default_exp);
            let uri = c.uri.to_string();
            list.retain(|x| x.uri != uri);
            if exp > 0 {
                if aor.max_contacts > 0 && list.len() as u32 >= aor.max_contacts {
                    list.remove(0);
                }
                list.push(Contact {
                    uri,
                    expires_at: now + Duration::from_secs(exp),
                    source,
                });
            }
        }
    }
    let mut r = Response::from_request(req, 200).with_to_tag(&super::new_tag());
    for c in list.iter() {
        let left = c.expires_at.saturating_duration_since(now).as_secs();
        r.headers
            .push(HeaderName::CONTACT, format!("<{}>;expires={left}", c.uri));
    }
    drop(map);
    let _ = layer.send_response(now, tx, r);
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
    local: SocketAddr,
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
    let Ok(answer) = sdp::answer(&offer, &ep.allow, ip, rtp_port, Direction::SendRecv) else {
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
    let contact = NameAddr::new(SipUri::new(
        invite.uri.as_sip().and_then(|u| u.user.as_deref()),
        Host::Ip(ip),
        Some(local.port()),
    ));
    let Ok(mut dialog) = super::Dialog::uas(&invite, &local_tag, Some(contact)) else {
        return fail(400);
    };
    let exten = invite
        .uri
        .as_sip()
        .and_then(|u| u.user.clone())
        .unwrap_or_else(|| "s".to_string());
    let seq = CHAN_SEQ.fetch_add(1, Ordering::Relaxed) ^ rand::random::<u32>();
    let name = format!("PJSIP/{}-{:08x}", ep.name, seq);
    let (mine, theirs) = TechLink::pair("PJSIP", codec.format());
    let mut chan = Channel::new(&core, name.clone(), theirs);
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
        sdp_body,
        remote_sip: source,
        local,
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
    local: SocketAddr,
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
            Transport::Udp,
            Host::Ip(SipStack::local_ip(self.local)),
            Some(self.local.port()),
            &super::new_branch(),
        );
        let req = dialog.create_request(Method::Bye, via);
        let dest = match dialog.next_hop() {
            Uri::Sip(u) => u.socket_addr().unwrap_or(self.remote_sip),
            _ => self.remote_sip,
        };
        let _ = self.cmd.send(StackCmd::Request(dest, req));
    }

    fn send_ack(&self, dialog: &super::Dialog) {
        let via = Via::new(
            Transport::Udp,
            Host::Ip(SipStack::local_ip(self.local)),
            Some(self.local.port()),
            &super::new_branch(),
        );
        let req = dialog.create_ack(via);
        let _ = self.cmd.send(StackCmd::Request(self.next_hop(dialog), req));
    }

    fn next_hop(&self, dialog: &super::Dialog) -> SocketAddr {
        match dialog.next_hop() {
            Uri::Sip(u) => u.socket_addr().unwrap_or(self.remote_sip),
            _ => self.remote_sip,
        }
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
                        Some(ChanMsg::Frame(f)) => {
                            if let Some(t) = rtp.send_frame(now, &f) { let _ = sock.send_to(&t.data, t.dest).await; }
                        }
                        Some(ChanMsg::DtmfBegin(_)) => {}
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
                                _ => {
                                    if let Some(tx) = tx {
                                        let mut r = dialog.create_response(&req, 200);
                                        if req.method == Method::Invite { r.set_body(Some("application/sdp"), self.sdp_body.clone()); }
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
        let target = match uri {
            Some(u) => u,
            None => {
                let now = Instant::now();
                let reg = stack.contacts.lock();
                ep.aors
                    .iter()
                    .find_map(|a| {
                        reg.get(a)
                            .and_then(|l| l.iter().rev().find(|c| c.expires_at > now))
                            .map(|c| c.uri.clone())
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
        let dest = target
            .socket_addr()
            .ok_or_else(|| format!("cannot resolve '{target}' (IP addresses only)"))?;
        let (local, cmd) = stack
            .local
            .lock()
            .clone()
            .ok_or_else(|| "no PJSIP transport".to_string())?;
        let codec = ep.allow.first().copied().unwrap_or(Codec::Pcmu);
        let seq = CHAN_SEQ.fetch_add(1, Ordering::Relaxed) ^ rand::random::<u32>();
        let name = format!("PJSIP/{}-{:08x}", ep.name, seq);
        let (mine, theirs) = TechLink::pair("PJSIP", codec.format());
        let chan = Channel::new(core, name.clone(), theirs);
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
    let offer = sdp::offer(&ep.allow, ip, rtp_port, Direction::SendRecv);
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
        Host::Ip(ip),
        Some(local.port()),
        &super::new_branch(),
    );
    invite.headers.push(HeaderName::VIA, via.to_string());
    invite.headers.push(HeaderName::MAX_FORWARDS, "70");
    let from_host = if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
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
        format!("<sip:{user}@{from_host}:{}>", local.port()),
    );
    invite
        .headers
        .push(HeaderName::ALLOW, "INVITE, ACK, CANCEL, BYE, OPTIONS");
    invite.set_body(Some("application/sdp"), sdp_body.clone());
    let (in_tx, mut inbox) = mpsc::unbounded_channel();
    let _ = cmd.send(StackCmd::Register(cid.clone(), in_tx));
    let _ = cmd.send(StackCmd::Request(dest, invite.clone()));
    let mut cancelled = false;
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
        sdp_body,
        remote_sip: dest,
        local,
    };
    d.send_ack(&dialog);
    if cancelled {
        d.send_bye(&mut dialog);
        let _ = cmd.send(StackCmd::Unregister(cid));
        return;
    }
    let remote_sdp = Sdp::parse(&answer.body).ok();
    let audio = remote_sdp.as_ref().and_then(|s| s.audio());
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
                    let reg = e.aors.iter().any(|a| s.contacts.lock().get(a).is_some_and(|l| !l.is_empty()));
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
                for (aor, list) in s.contacts.lock().iter() {
                    for c in list.iter().filter(|c| c.expires_at > now) {
                        n += 1;
                        out.push_str(&format!("  Contact:  {}/{} Avail\n", aor, c.uri));
                    }
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
        Arc::new(|_core: Arc<Core>, _args: Vec<String>| {
            Box::pin(async move { "No objects found.\n".to_string() })
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = c.endpoint("alice").unwrap();
        assert_eq!(e.context, "from-sip");
        assert_eq!(e.allow, vec![Codec::Pcmu]);
        assert_eq!(
            c.identify("127.0.0.1".parse().unwrap()).unwrap().name,
            "alice"
        );
        assert!(c.identify("10.0.0.1".parse().unwrap()).is_none());
        assert_eq!(c.aors[0].max_contacts, 1);
        assert_eq!(c.rtp_start, 10000);
    }
}
