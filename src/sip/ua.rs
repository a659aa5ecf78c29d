//! `voxpbx dial`: a small SIP user agent (UAC) for demos, tests and benchmarks.
//!
//! It is the tokio shell around the sans-IO cores: [`TransactionLayer`] for SIP over UDP,
//! [`RtpSession`] for media. One call: INVITE with an SDP offer (PCMU, PCMA,
//! telephone-event 101), digest authentication on 401/407, ACK on 2xx, then at real-time
//! pace (20 ms ticks, `MissedTickBehavior::Burst`) it plays audio, sends RFC 4733 digits,
//! records what it receives and hangs up with BYE (or answers the far end's BYE).
//!
//! Timeline: every `*_ms` field of [`DialSummary`] counts from the moment the first INVITE
//! was sent; the `*_unix_ms` fields are wall-clock instants so that external tools can
//! align events. The recording starts at the answer and has exactly one 20 ms frame per
//! tick (silence where nothing was received), so sample `n` of the recording is
//! `answered_ms + n / 8` ms into the call.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::time::MissedTickBehavior;

use super::auth::authorize_request;
use super::sdp::{self, Codec, Direction, Sdp};
use super::{
    new_branch, new_call_id, new_tag, Dialog, Event, HeaderName, Host, Method, NameAddr, Request,
    Response, SipUri, TimerConfig, TransactionLayer, Transport, TxId, Uri, Via,
};
use crate::media::file::{Playback, Recorder, SoundFile};
use crate::media::translate::decode_into;
use crate::media::Format;
use crate::rtp::{self, PayloadMap, Playout, RtpConfig, RtpSession};

/// Samples per 20 ms frame at 8 kHz (what the recording is written at).
const FRAME_8K: usize = 160;
/// Duration of each sent DTMF digit.
const DTMF_DIGIT_MS: u32 = 100;
/// Pause between sent DTMF digits.
const DTMF_GAP_MS: u64 = 60;

/// What to play into the call.
#[derive(Debug, Clone)]
pub enum DialAudio {
    /// A sound file the media module reads (WAV of any rate, .ulaw, .alaw, .slin*...).
    File(PathBuf),
    /// Signed 16-bit mono samples at `rate` Hz (8000, 16000, 48000 or anything resampled).
    Samples { rate: u32, samples: Vec<i16> },
}

/// Options for one call.
#[derive(Debug, Clone)]
pub struct DialOpts {
    /// The SIP URI to call (`sip:600@127.0.0.1:5060`); the host must be an IP or resolve.
    pub target: String,
    /// User part of From and Contact (default `voxpbx`).
    pub from_user: Option<String>,
    /// Digest credentials for 401/407 challenges.
    pub auth: Option<(String, String)>,
    pub audio: Option<DialAudio>,
    /// Digits to send as RFC 4733 events, and when (ms after the answer).
    pub dtmf: Option<(String, u64)>,
    /// Write what was received (8 kHz 16-bit) to this file.
    pub record: Option<PathBuf>,
    /// Keep the received audio in [`DialSummary::recorded`] (for in-process benchmarks).
    pub keep_recording: bool,
    /// Hang up this long after the answer (default: 2 s after playback and DTMF end).
    pub hangup_after: Option<Duration>,
    /// Give up when no final response arrived in this time (default 32 s).
    pub answer_timeout: Duration,
    /// Local address to bind (default: the address routing to the target).
    pub bind_ip: Option<IpAddr>,
}

impl DialOpts {
    pub fn new(target: impl Into<String>) -> DialOpts {
        DialOpts {
            target: target.into(),
            from_user: None,
            auth: None,
            audio: None,
            dtmf: None,
            record: None,
            keep_recording: false,
            hangup_after: None,
            answer_timeout: Duration::from_secs(32),
            bind_ip: None,
        }
    }
}

/// Who ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hangup {
    Local,
    Remote,
    /// Never answered (final status >= 300 or no answer).
    None,
}

/// The result of one call; serialized as the one JSON line `voxpbx dial` prints.
#[derive(Debug, Clone, Serialize)]
pub struct DialSummary {
    /// Final response status to the INVITE (0: none arrived).
    pub status: u16,
    pub reason: String,
    /// ms from the first INVITE to the 2xx.
    pub answered_ms: Option<u64>,
    /// ms from the answer to the hangup.
    pub duration_ms: u64,
    pub rtp_sent: u64,
    pub rtp_received: u64,
    /// RTP payload octets.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub hangup: Hangup,
    pub codec: Option<String>,
    /// ms from the first INVITE to the first played frame.
    pub play_started_ms: Option<u64>,
    pub play_ended_ms: Option<u64>,
    pub first_rtp_received_ms: Option<u64>,
    pub dtmf_started_ms: Option<u64>,
    /// Digits accepted for sending (empty when the far end offered no telephone-event).
    pub dtmf_sent: String,
    /// Digits received as RFC 4733 events.
    pub dtmf_received: String,
    /// Wall-clock (unix ms) of the first INVITE.
    pub invite_unix_ms: u64,
    pub answered_unix_ms: Option<u64>,
    pub play_started_unix_ms: Option<u64>,
    pub first_rtp_received_unix_ms: Option<u64>,
    /// Samples in the recording (8 kHz); sample 0 is at the answer.
    pub recorded_samples: u64,
    pub lost: i64,
    pub jitter_ms: f64,
    /// The received audio (8 kHz) when [`DialOpts::keep_recording`] was set.
    #[serde(skip)]
    pub recorded: Vec<i16>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ms_between(a: Instant, b: Instant) -> u64 {
    b.saturating_duration_since(a).as_millis() as u64
}

/// Parse `DIGITS[@offset_ms]` (the `--dtmf` argument).
pub fn parse_dtmf_arg(s: &str) -> anyhow::Result<(String, u64)> {
    let (digits, offset) = match s.split_once('@') {
        Some((d, o)) => (
            d,
            o.trim()
                .parse::<u64>()
                .with_context(|| format!("bad DTMF offset {o:?}"))?,
        ),
        None => (s, 0),
    };
    let digits = digits.trim().to_ascii_uppercase();
    if digits.is_empty() {
        bail!("no DTMF digits");
    }
    if let Some(c) = digits
        .chars()
        .find(|c| !matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'))
    {
        bail!("invalid DTMF digit {c:?}");
    }
    Ok((digits, offset))
}

/// Parse `user:pass` (the `--auth` argument).
pub fn parse_auth_arg(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once(':') {
        Some((u, p)) if !u.is_empty() => Ok((u.to_string(), p.to_string())),
        _ => bail!("--auth wants user:pass"),
    }
}

/// Resolve a URI host:port to a socket address (IP literal or DNS A/AAAA).
async fn resolve(uri: &SipUri) -> anyhow::Result<SocketAddr> {
    if let Some(a) = uri.socket_addr() {
        return Ok(a);
    }
    let hp = format!("{}:{}", uri.host, uri.port_or_default());
    let mut addrs = tokio::net::lookup_host(hp.as_str())
        .await
        .with_context(|| format!("cannot resolve {hp}"))?;
    addrs
        .next()
        .ok_or_else(|| anyhow!("{hp} resolves to nothing"))
}

/// The local address the OS would use to reach `dest`.
fn local_ip_for(dest: SocketAddr) -> IpAddr {
    if dest.ip().is_loopback() {
        return dest.ip();
    }
    let any: SocketAddr = if dest.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    std::net::UdpSocket::bind(any)
        .and_then(|s| {
            s.connect(dest)?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The codec (and its payload type) to send, from the answer: the first PCMU/PCMA.
fn pick_codec(answer: &Sdp) -> anyhow::Result<(Codec, u8, Option<u8>, SocketAddr)> {
    let audio = answer
        .audio()
        .ok_or_else(|| anyhow!("no audio in SDP answer"))?;
    let (codec, pt) = audio
        .codecs
        .iter()
        .copied()
        .find(|(c, _)| matches!(c, Codec::Pcmu | Codec::Pcma))
        .ok_or_else(|| anyhow!("no PCMU/PCMA in SDP answer"))?;
    let ip = audio
        .addr
        .ok_or_else(|| anyhow!("no connection address in SDP answer"))?;
    Ok((
        codec,
        pt,
        audio.telephone_event,
        SocketAddr::new(ip, audio.port),
    ))
}

fn codec_format(c: Codec) -> Format {
    match c {
        Codec::Pcma => Format::Alaw,
        _ => Format::Ulaw,
    }
}

/// The SIP side: socket + transaction layer.
struct Sip {
    sock: UdpSocket,
    layer: TransactionLayer,
    local: SocketAddr,
}

impl Sip {
    fn via(&self) -> Via {
        let mut v = Via::new(
            Transport::Udp,
            Host::Ip(self.local.ip()),
            Some(self.local.port()),
            &new_branch(),
        );
        v.params.push(super::Param::new("rport", None));
        v
    }

    async fn flush(&mut self) {
        while let Some(t) = self.layer.poll_transmit() {
            if self.sock.send_to(&t.data, t.dest).await.is_err() {
                if let Some(tx) = t.tx {
                    self.layer.transport_error(tx);
                }
            }
        }
    }

    fn deadline(&mut self) -> tokio::time::Instant {
        let d = self
            .layer
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::time::Instant::from_std(d)
    }

    /// Answer an in-dialog request; true when it was a BYE.
    fn answer_request(
        &mut self,
        tx: Option<TxId>,
        req: &Request,
        dialog: Option<&mut Dialog>,
        local_sdp: &Sdp,
    ) -> bool {
        let Some(tx) = tx else { return false }; // ACK: nothing to answer
        let now = Instant::now();
        let (status, is_bye) = match (&req.method, &dialog) {
            (_, None) => (481, false),
            (Method::Bye, Some(_)) => (200, true),
            (Method::Invite, Some(_)) | (_, Some(_)) => (200, false),
        };
        let mut resp = match dialog {
            Some(d) => {
                let _ = d.handle_request(req);
                d.create_response(req, status)
            }
            None => Response::from_request(req, status),
        };
        if req.method == Method::Invite && status == 200 {
            resp.set_body(Some("application/sdp"), local_sdp.to_bytes());
        }
        let _ = self.layer.send_response(now, tx, resp);
        is_bye
    }
}

/// Place one call and run it to its end. Errors only for local failures (bad URI, sockets,
/// unreadable audio file); a rejected call returns a summary with its status.
pub async fn dial(opts: DialOpts) -> anyhow::Result<DialSummary> {
    let target: Uri = opts
        .target
        .parse()
        .map_err(|e| anyhow!("bad SIP URI {:?}: {e}", opts.target))?;
    let target_sip = target
        .as_sip()
        .ok_or_else(|| anyhow!("not a sip: URI: {}", opts.target))?
        .clone();
    let dest = resolve(&target_sip).await?;
    let local_ip = opts.bind_ip.unwrap_or_else(|| local_ip_for(dest));

    // Audio first: a bad file fails before anything is sent.
    let sound = match &opts.audio {
        Some(DialAudio::File(p)) => {
            Some(SoundFile::open(p).with_context(|| format!("cannot read {}", p.display()))?)
        }
        Some(DialAudio::Samples { rate, samples }) => {
            Some(SoundFile::from_samples(*rate, samples.clone()))
        }
        None => None,
    };
    let mut recorder = match &opts.record {
        Some(p) => Some(
            Recorder::create_with_rate(p, 8000)
                .with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => None,
    };

    let sip_sock = UdpSocket::bind(SocketAddr::new(local_ip, 0))
        .await
        .context("bind SIP socket")?;
    let rtp_sock = UdpSocket::bind(SocketAddr::new(local_ip, 0))
        .await
        .context("bind RTP socket")?;
    let sip_local = sip_sock.local_addr()?;
    let rtp_local = rtp_sock.local_addr()?;
    let mut sip = Sip {
        sock: sip_sock,
        layer: TransactionLayer::new(TimerConfig::default()),
        local: sip_local,
    };

    let user = opts.from_user.clone().unwrap_or_else(|| "voxpbx".into());
    let offer = sdp::offer(
        &[Codec::Pcmu, Codec::Pcma],
        local_ip,
        rtp_local.port(),
        Direction::SendRecv,
    );
    let mut from = NameAddr::new(SipUri::new(Some(&user), Host::Ip(local_ip), None));
    from.set_tag(&new_tag());
    let contact = NameAddr::new(SipUri::new(
        Some(&user),
        Host::Ip(local_ip),
        Some(sip_local.port()),
    ));
    let mut invite = Request::new(Method::Invite, target.clone());
    invite.headers.push(HeaderName::VIA, sip.via().to_string());
    invite.headers.push(HeaderName::MAX_FORWARDS, "70");
    invite.headers.push(HeaderName::FROM, from.to_string());
    invite
        .headers
        .push(HeaderName::TO, NameAddr::new(target.clone()).to_string());
    invite.headers.push(
        HeaderName::CALL_ID,
        new_call_id(Some(&local_ip.to_string())),
    );
    let mut cseq: u32 = 1;
    invite
        .headers
        .push(HeaderName::CSEQ, format!("{cseq} INVITE"));
    invite
        .headers
        .push(HeaderName::CONTACT, contact.to_string());
    invite
        .headers
        .push(HeaderName::ALLOW, "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO");
    invite.headers.push(
        HeaderName::USER_AGENT,
        format!("voxpbx-dial/{}", env!("CARGO_PKG_VERSION")),
    );
    invite.set_body(Some("application/sdp"), offer.to_bytes());

    let t0 = Instant::now();
    let t0_wall = SystemTime::now();
    let mut summary = DialSummary {
        status: 0,
        reason: String::new(),
        answered_ms: None,
        duration_ms: 0,
        rtp_sent: 0,
        rtp_received: 0,
        bytes_sent: 0,
        bytes_received: 0,
        hangup: Hangup::None,
        codec: None,
        play_started_ms: None,
        play_ended_ms: None,
        first_rtp_received_ms: None,
        dtmf_started_ms: None,
        dtmf_sent: String::new(),
        dtmf_received: String::new(),
        invite_unix_ms: unix_ms(t0_wall),
        answered_unix_ms: None,
        play_started_unix_ms: None,
        first_rtp_received_unix_ms: None,
        recorded_samples: 0,
        lost: 0,
        jitter_ms: 0.0,
        recorded: Vec::new(),
    };

    // ------------------------------------------------------------ INVITE transaction
    let mut invite_tx = sip
        .layer
        .send_request(t0, dest, Transport::Udp, invite.clone())
        .map_err(|e| anyhow!("INVITE: {e}"))?;
    sip.flush().await;
    let mut auth_tries = 0u32;
    let mut buf = vec![0u8; 65536];
    let give_up = tokio::time::Instant::from_std(t0 + opts.answer_timeout);
    let (mut dialog, answer_resp, ack) = 'invite: loop {
        let deadline = sip.deadline().min(give_up);
        tokio::select! {
            r = sip.sock.recv_from(&mut buf) => {
                let (n, src) = r.context("SIP receive")?;
                let _ = sip.layer.handle_datagram(Instant::now(), src, Transport::Udp, &buf[..n]);
            }
            _ = tokio::time::sleep_until(deadline) => {
                if deadline >= give_up {
                    let _ = sip.layer.cancel(Instant::now(), invite_tx);
                    sip.flush().await;
                    summary.status = 408;
                    summary.reason = "no answer".into();
                    return Ok(summary);
                }
                sip.layer.handle_timeout(Instant::now());
            }
        }
        while let Some(ev) = sip.layer.poll_event() {
            match ev {
                Event::Response {
                    tx: Some(tx),
                    response,
                    ..
                } if tx == invite_tx => {
                    let st = response.status;
                    if st < 200 {
                        continue;
                    }
                    if (st == 401 || st == 407) && auth_tries < 2 {
                        if let Some((u, p)) = &opts.auth {
                            auth_tries += 1;
                            let mut again = invite.clone();
                            cseq += 1;
                            again
                                .headers
                                .set(HeaderName::CSEQ, format!("{cseq} INVITE"));
                            again.headers.set_top_via(&sip.via());
                            let cnonce = new_tag();
                            if authorize_request(&mut again, &response, u, p, &cnonce, 1).is_ok() {
                                invite = again;
                                invite_tx = sip
                                    .layer
                                    .send_request(
                                        Instant::now(),
                                        dest,
                                        Transport::Udp,
                                        invite.clone(),
                                    )
                                    .map_err(|e| anyhow!("INVITE: {e}"))?;
                                continue;
                            }
                        }
                    }
                    summary.status = st;
                    summary.reason = response.reason.clone();
                    if st >= 300 {
                        sip.flush().await;
                        return Ok(summary);
                    }
                    let dialog =
                        Dialog::uac(&invite, &response).map_err(|e| anyhow!("bad 2xx: {e}"))?;
                    let ack = dialog.create_ack(sip.via());
                    break 'invite (dialog, response, ack);
                }
                Event::Timeout { tx, .. } | Event::TransportError { tx } if tx == invite_tx => {
                    summary.status = 408;
                    summary.reason = "request timeout".into();
                    return Ok(summary);
                }
                Event::Request { tx, request, .. } => {
                    sip.answer_request(tx, &request, None, &offer);
                }
                _ => {}
            }
        }
        sip.flush().await;
    };
    let answered = Instant::now();
    summary.answered_ms = Some(ms_between(t0, answered));
    summary.answered_unix_ms = Some(unix_ms(SystemTime::now()));
    let dialog_dest = match dialog.next_hop().as_sip() {
        Some(u) => resolve(u).await.unwrap_or(dest),
        None => dest,
    };
    let ack_bytes = ack.to_bytes();
    sip.sock.send_to(&ack_bytes, dialog_dest).await.ok();

    let media = Sdp::parse(&answer_resp.body).map_err(|e| anyhow!("bad SDP answer: {e}"));
    let (codec, pt, te, remote_rtp) = match media.and_then(|s| pick_codec(&s)) {
        Ok(m) => m,
        Err(e) => {
            // Answered without usable media: hang up politely, then report.
            let bye = dialog.create_request(Method::Bye, sip.via());
            let _ = sip
                .layer
                .send_request(Instant::now(), dialog_dest, Transport::Udp, bye);
            sip.flush().await;
            return Err(e);
        }
    };
    let format = codec_format(codec);
    summary.codec = Some(codec.encoding_name().to_string());
    let mut payloads = PayloadMap::new().with(pt, format);
    if let Some(te) = te {
        payloads = payloads.with_telephone_event(te, 8000);
    }
    let mut rtp = RtpSession::new(
        RtpConfig {
            payloads,
            remote: Some(remote_rtp),
            symmetric: true,
            ..RtpConfig::default()
        },
        answered,
        SystemTime::now(),
    );

    let mut playback = match &sound {
        Some(s) => Some(Playback::new(s, format).context("prepare playback")?),
        None => None,
    };
    let play_ms = playback.as_ref().map(|p| p.duration_ms()).unwrap_or(0);
    let dtmf_end_ms = opts
        .dtmf
        .as_ref()
        .map(|(d, off)| off + d.len() as u64 * (DTMF_DIGIT_MS as u64 + DTMF_GAP_MS + 40))
        .unwrap_or(0);
    let hangup_after = opts
        .hangup_after
        .unwrap_or_else(|| Duration::from_millis(play_ms.max(dtmf_end_ms) + 2000));
    let hangup_at = answered + hangup_after;
    let mut dtmf_pending = opts.dtmf.clone();

    // ------------------------------------------------------------ media loop
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut rbuf = vec![0u8; 2048];
    let mut pcm: Vec<i16> = Vec::with_capacity(FRAME_8K * 2);
    let silence = [0i16; FRAME_8K];
    let mut remote_bye = false;
    loop {
        let sip_deadline = sip.deadline();
        tokio::select! {
            _ = ticker.tick() => {
                let now = Instant::now();
                if now >= hangup_at {
                    break;
                }
                // Outgoing audio.
                if let Some(p) = playback.as_mut() {
                    match p.next_frame() {
                        Some(f) => {
                            if summary.play_started_ms.is_none() {
                                summary.play_started_ms = Some(ms_between(t0, now));
                                summary.play_started_unix_ms = Some(unix_ms(SystemTime::now()));
                            }
                            if let Some(t) = rtp.send_frame(now, &f) {
                                let _ = rtp_sock.send_to(&t.data, t.dest).await;
                            }
                        }
                        None => {
                            if summary.play_ended_ms.is_none() {
                                summary.play_ended_ms = Some(ms_between(t0, now));
                            }
                        }
                    }
                }
                // DTMF.
                if let Some((digits, off)) = &dtmf_pending {
                    if now >= answered + Duration::from_millis(*off) {
                        summary.dtmf_started_ms = Some(ms_between(t0, now));
                        for d in digits.chars() {
                            match rtp.send_dtmf(now, d, DTMF_DIGIT_MS) {
                                Ok(first) => {
                                    summary.dtmf_sent.push(d);
                                    if let Some(t) = first {
                                        let _ = rtp_sock.send_to(&t.data, t.dest).await;
                                    }
                                }
                                Err(e) => tracing::debug!("DTMF {d}: {e}"),
                            }
                        }
                        dtmf_pending = None;
                    }
                }
                while let Some(t) = rtp.poll_transmit(now) {
                    let _ = rtp_sock.send_to(&t.data, t.dest).await;
                }
                while let Some(t) = rtp.poll_rtcp(now) {
                    // RTCP goes to RTP port + 1 from an unbound port; best effort.
                    let _ = rtp_sock.send_to(&t.data, t.dest).await;
                }
                // Incoming audio: exactly one 20 ms frame per tick.
                pcm.clear();
                match rtp.poll_frame(now) {
                    Playout::Frame(f) => {
                        if decode_into(f.format, &f.data, &mut pcm).is_err() {
                            pcm.clear();
                        }
                    }
                    Playout::Missing { .. } | Playout::Empty => {}
                }
                pcm.resize(FRAME_8K, 0);
                let frame: &[i16] = if pcm.is_empty() { &silence } else { &pcm };
                if let Some(r) = recorder.as_mut() {
                    r.write_samples(frame).context("write recording")?;
                }
                if opts.keep_recording {
                    summary.recorded.extend_from_slice(frame);
                }
                summary.recorded_samples += FRAME_8K as u64;
                while let Some(ev) = rtp.poll_event(now) {
                    if let rtp::Event::DtmfEnd { digit, .. } = ev {
                        summary.dtmf_received.push(digit);
                    }
                }
            }
            r = rtp_sock.recv_from(&mut rbuf) => {
                if let Ok((n, src)) = r {
                    let now = Instant::now();
                    if summary.first_rtp_received_ms.is_none() && n >= 12 && rbuf[1] & 0x7f < 64 {
                        summary.first_rtp_received_ms = Some(ms_between(t0, now));
                        summary.first_rtp_received_unix_ms = Some(unix_ms(SystemTime::now()));
                    }
                    let _ = rtp.handle_receive(now, src, Bytes::copy_from_slice(&rbuf[..n]));
                }
            }
            r = sip.sock.recv_from(&mut buf) => {
                if let Ok((n, src)) = r {
                    let _ = sip.layer.handle_datagram(Instant::now(), src, Transport::Udp, &buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(sip_deadline) => {
                sip.layer.handle_timeout(Instant::now());
            }
        }
        while let Some(ev) = sip.layer.poll_event() {
            match ev {
                Event::Request { tx, request, .. } => {
                    if dialog.matches_request(&request) {
                        if sip.answer_request(tx, &request, Some(&mut dialog), &offer) {
                            remote_bye = true;
                        }
                    } else {
                        sip.answer_request(tx, &request, None, &offer);
                    }
                }
                Event::Response {
                    tx: Some(tx),
                    response,
                    ..
                } if tx == invite_tx && response.is_success() => {
                    // 2xx retransmission: our ACK was lost.
                    sip.sock.send_to(&ack_bytes, dialog_dest).await.ok();
                }
                _ => {}
            }
        }
        sip.flush().await;
        if remote_bye {
            break;
        }
    }
    let ended = Instant::now();
    summary.duration_ms = ms_between(answered, ended);

    if remote_bye {
        summary.hangup = Hangup::Remote;
    } else {
        summary.hangup = Hangup::Local;
        let bye = dialog.create_request(Method::Bye, sip.via());
        if let Ok(bye_tx) = sip
            .layer
            .send_request(ended, dialog_dest, Transport::Udp, bye)
        {
            sip.flush().await;
            let stop = tokio::time::Instant::from_std(ended + Duration::from_secs(4));
            'bye: loop {
                let deadline = sip.deadline().min(stop);
                tokio::select! {
                    r = sip.sock.recv_from(&mut buf) => {
                        if let Ok((n, src)) = r {
                            let _ = sip.layer.handle_datagram(Instant::now(), src, Transport::Udp, &buf[..n]);
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        if deadline >= stop {
                            break 'bye;
                        }
                        sip.layer.handle_timeout(Instant::now());
                    }
                }
                while let Some(ev) = sip.layer.poll_event() {
                    match ev {
                        Event::Response {
                            tx: Some(tx),
                            response,
                            ..
                        } if tx == bye_tx && response.is_final() => {
                            sip.flush().await;
                            break 'bye;
                        }
                        Event::Timeout { tx, .. } | Event::TransportError { tx }
                            if tx == bye_tx =>
                        {
                            break 'bye;
                        }
                        Event::Request { tx, request, .. } => {
                            let d = dialog.matches_request(&request).then_some(&mut dialog);
                            sip.answer_request(tx, &request, d, &offer);
                        }
                        _ => {}
                    }
                }
                sip.flush().await;
            }
        }
    }
    // Remaining DTMF events (a digit whose end arrived at the last moment).
    while let Some(ev) = rtp.poll_event(Instant::now()) {
        if let rtp::Event::DtmfEnd { digit, .. } = ev {
            summary.dtmf_received.push(digit);
        }
    }
    dialog.terminate();
    if let Some(r) = recorder.take() {
        r.finish().context("finish recording")?;
    }
    let st = rtp.stats();
    summary.rtp_sent = st.packets_sent;
    summary.rtp_received = st.packets_received;
    summary.bytes_sent = st.bytes_sent;
    summary.bytes_received = st.bytes_received;
    summary.lost = st.lost;
    summary.jitter_ms = st.jitter.as_secs_f64() * 1000.0;
    Ok(summary)
}

/// Normalized cross-correlation peak between `a` and `b` over lags `0..=max_lag` (b delayed
/// relative to a): `(best_lag, correlation)`. For checking an echoed recording.
pub fn best_correlation(a: &[i16], b: &[i16], max_lag: usize) -> (usize, f64) {
    let mut best = (0usize, 0.0f64);
    for lag in 0..=max_lag.min(b.len()) {
        let n = a.len().min(b.len() - lag);
        if n == 0 {
            break;
        }
        let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
        for i in 0..n {
            let x = a[i] as f64;
            let y = b[i + lag] as f64;
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        if xx > 0.0 && yy > 0.0 {
            let c = xy / (xx.sqrt() * yy.sqrt());
            if c > best.1 {
                best = (lag, c);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtmf_arg() {
        assert_eq!(parse_dtmf_arg("123#@500").unwrap(), ("123#".into(), 500));
        assert_eq!(parse_dtmf_arg("a1").unwrap(), ("A1".into(), 0));
        assert!(parse_dtmf_arg("12x").is_err());
        assert!(parse_dtmf_arg("@5").is_err());
        assert!(parse_dtmf_arg("1@x").is_err());
    }

    #[test]
    fn auth_arg() {
        assert_eq!(
            parse_auth_arg("alice:se:cret").unwrap(),
            ("alice".into(), "se:cret".into())
        );
        assert!(parse_auth_arg("alice").is_err());
        assert!(parse_auth_arg(":x").is_err());
    }

    #[test]
    fn picks_first_g711_codec() {
        let body = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
        let sdp = Sdp::parse(body).unwrap();
        let (c, pt, te, addr) = pick_codec(&sdp).unwrap();
        assert_eq!(c, Codec::Pcma);
        assert_eq!(pt, 8);
        assert_eq!(te, Some(101));
        assert_eq!(addr, "10.0.0.1:4000".parse().unwrap());
    }

    #[test]
    fn correlation_finds_delay() {
        let a: Vec<i16> = (0..800)
            .map(|i| ((i * 37 % 101) as i16 - 50) * 100)
            .collect();
        let mut b = vec![0i16; 80];
        b.extend_from_slice(&a);
        let (lag, c) = best_correlation(&a, &b, 200);
        assert_eq!(lag, 80);
        assert!(c > 0.99);
    }

    #[tokio::test]
    async fn rejected_call_reports_status() {
        // A tiny UAS answering every INVITE with 486.
        let uas = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = uas.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, src)) = uas.recv_from(&mut buf).await {
                if let Ok(super::super::SipMessage::Request(r)) =
                    super::super::parse_message(&buf[..n])
                {
                    if r.method == Method::Invite {
                        let resp = Response::from_request(&r, 486).with_to_tag("x");
                        let _ = uas.send_to(&resp.to_bytes(), src).await;
                    }
                }
            }
        });
        let mut o = DialOpts::new(format!("sip:600@{addr}"));
        o.answer_timeout = Duration::from_secs(5);
        let s = dial(o).await.unwrap();
        assert_eq!(s.status, 486);
        assert_eq!(s.hangup, Hangup::None);
        assert_eq!(s.rtp_sent, 0);
    }

    /// A UAS answering 200 (PCMU + telephone-event) and echoing RTP, to test the whole call.
    async fn echo_uas() -> SocketAddr {
        let sip = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let media = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sip.local_addr().unwrap();
        let mport = media.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, src)) = media.recv_from(&mut buf).await {
                let _ = media.send_to(&buf[..n], src).await;
            }
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, src)) = sip.recv_from(&mut buf).await {
                let Ok(super::super::SipMessage::Request(r)) =
                    super::super::parse_message(&buf[..n])
                else {
                    continue;
                };
                let resp = match r.method {
                    Method::Invite => {
                        let mut resp = Response::from_request(&r, 200).with_to_tag("uas");
                        resp.headers
                            .push(HeaderName::CONTACT, format!("<sip:uas@{addr}>"));
                        let body = format!(
                            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio {mport} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
                        );
                        resp.set_body(Some("application/sdp"), body.into_bytes());
                        resp
                    }
                    Method::Bye => Response::from_request(&r, 200).with_to_tag("uas"),
                    _ => continue,
                };
                let _ = sip.send_to(&resp.to_bytes(), src).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn full_call_with_echo_and_dtmf() {
        let addr = echo_uas().await;
        let signal: Vec<i16> = (0..8000)
            .map(|i| (((i * 7919) % 4001) as i16 - 2000) * 3)
            .collect();
        let mut o = DialOpts::new(format!("sip:echo@{addr}"));
        o.audio = Some(DialAudio::Samples {
            rate: 8000,
            samples: signal.clone(),
        });
        o.dtmf = Some(("15#".into(), 1200));
        o.keep_recording = true;
        o.hangup_after = Some(Duration::from_millis(2200));
        let s = dial(o).await.unwrap();
        assert_eq!(s.status, 200);
        assert_eq!(s.hangup, Hangup::Local);
        assert_eq!(s.codec.as_deref(), Some("PCMU"));
        assert_eq!(s.dtmf_sent, "15#");
        assert_eq!(s.dtmf_received, "15#");
        assert!(s.rtp_sent >= 50, "{s:?}");
        assert!(s.rtp_received >= 50, "{s:?}");
        assert!(s.play_started_ms.is_some() && s.first_rtp_received_ms.is_some());
        let (_, c) = best_correlation(&signal[..4000], &s.recorded, 2000);
        assert!(c > 0.8, "echo correlation {c}");
    }
}
