//! `RtpSession`: one RTP media stream (one local SSRC, one remote party), sans-IO.
//!
//! Send side: outgoing sequence numbers and timestamps stay continuous whatever feeds
//! `send_frame` (playback, then a bridge, ...): the timestamp advances by the samples sent; after
//! a pause longer than 80 ms it jumps to match the elapsed time; the marker bit is set on the
//! first packet, after a pause, after `source_changed()`, on a payload-type change and after a
//! DTMF event. RFC 4733 DTMF shares the sequence/timestamp space; audio is suppressed while an
//! event is being sent.
//!
//! Receive side: audio goes through the adaptive [`JitterBuffer`] (pulled by `poll_frame`),
//! telephone-events become `DtmfBegin`/`DtmfEnd` events, RTCP is parsed (muxed or on its own
//! port) for reception reports, RTT and BYE. With `symmetric` (Asterisk `rtp_symmetric`), the
//! remote address is learned from the first packet and re-learned after `symmetric_probation`
//! in-sequence packets from a new address; packets from other addresses are dropped.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::media::{Format, Frame};

use super::dtmf::{digit_to_event, DtmfEvent, DtmfReceiver, DtmfSender};
use super::jitter::{JitterBuffer, JitterConfig, Playout};
use super::packet::{
    is_rtcp, ntp_middle32, ntp_timestamp, Bye, PacketError, ReceiverReport, ReportBlock,
    RtcpPacket, RtpHeader, SdesChunk, SenderReport, RTP_HEADER_LEN,
};
use super::{duration_to_units, rtp_clock_rate, rtp_units};

/// A pause longer than this (in sent media) is a gap: the timestamp jumps and the marker is set.
const MAX_TS_SKEW_MS: u32 = 80;
/// Media sent ahead of real time (bursts) is credited up to this much.
const MAX_TX_LEAD_MS: u32 = 200;
/// RFC 3550 §A.1 sequence validation constants.
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;

#[derive(Debug, thiserror::Error)]
pub enum RtpError {
    #[error(transparent)]
    Packet(#[from] PacketError),
    #[error("no telephone-event payload type was negotiated")]
    NoTelephoneEvent,
    #[error("'{0}' is not a DTMF digit")]
    InvalidDigit(char),
}

/// Payload type ↔ format mapping from the negotiated SDP.
#[derive(Debug, Clone)]
pub struct PayloadMap {
    by_pt: [Option<Format>; 128],
    /// Send preference: the first payload type added for each format.
    send: Vec<(Format, u8)>,
    telephone_event: Option<(u8, u32)>,
}

impl Default for PayloadMap {
    fn default() -> Self {
        PayloadMap {
            by_pt: [None; 128],
            send: Vec::new(),
            telephone_event: None,
        }
    }
}

impl PayloadMap {
    pub fn new() -> PayloadMap {
        PayloadMap::default()
    }

    /// The static RFC 3551 types voxpbx handles: 0 PCMU, 8 PCMA, 9 G722.
    pub fn with_static() -> PayloadMap {
        PayloadMap::new()
            .with(0, Format::Ulaw)
            .with(8, Format::Alaw)
            .with(9, Format::G722)
    }

    /// Maps `pt` (0..=127; others are ignored) to `format`.
    pub fn with(mut self, pt: u8, format: Format) -> PayloadMap {
        self.add(pt, format);
        self
    }

    pub fn with_telephone_event(mut self, pt: u8, rate: u32) -> PayloadMap {
        self.set_telephone_event(pt, rate);
        self
    }

    pub fn add(&mut self, pt: u8, format: Format) {
        if pt > 127 {
            return;
        }
        self.by_pt[pt as usize] = Some(format);
        if !self.send.iter().any(|(f, _)| *f == format) {
            self.send.push((format, pt));
        }
    }

    /// Sets the telephone-event payload type and its clock rate (usually 101 / 8000).
    pub fn set_telephone_event(&mut self, pt: u8, rate: u32) {
        if pt <= 127 && rate > 0 {
            self.by_pt[pt as usize] = None;
            self.send.retain(|(_, p)| *p != pt);
            self.telephone_event = Some((pt, rate));
        }
    }

    pub fn format(&self, pt: u8) -> Option<Format> {
        self.by_pt.get(pt as usize).copied().flatten()
    }

    /// The payload type to send `format` with.
    pub fn pt_for(&self, format: Format) -> Option<u8> {
        self.send
            .iter()
            .find(|(f, _)| *f == format)
            .map(|(_, p)| *p)
    }

    /// `(payload type, clock rate)` of telephone-event, if negotiated.
    pub fn telephone_event(&self) -> Option<(u8, u32)> {
        self.telephone_event
    }
}

#[derive(Debug, Clone)]
pub struct RtpConfig {
    /// Local SSRC; random when `None`.
    pub ssrc: Option<u32>,
    /// First sequence number / timestamp; random when `None`.
    pub initial_seq: Option<u16>,
    pub initial_ts: Option<u32>,
    pub payloads: PayloadMap,
    /// Where to send RTP (from SDP); learned from received packets when `symmetric`.
    pub remote: Option<SocketAddr>,
    /// Where to send RTCP; default: the RTP address with port + 1 (or the RTP address with mux).
    pub remote_rtcp: Option<SocketAddr>,
    /// RTCP multiplexed on the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// Learn the remote address from received packets (Asterisk `rtp_symmetric` / `nat`).
    pub symmetric: bool,
    /// In-sequence packets needed from a new address before a learned address changes.
    pub symmetric_probation: u32,
    /// `rtp_timeout`: emit `Event::Timeout` after this long without RTP (zero = off).
    pub timeout: Duration,
    /// RTCP report interval (zero = no RTCP). Fixed, as Asterisk's `rtcpinterval`.
    pub rtcp_interval: Duration,
    /// Packetization time; DTMF updates are sent at this interval.
    pub ptime: Duration,
    pub jitter: JitterConfig,
    /// SDES CNAME; default `voxpbx-<ssrc>`.
    pub cname: Option<String>,
    /// A received DTMF digit without its end packets ends after this long without packets.
    pub dtmf_end_timeout: Duration,
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            ssrc: None,
            initial_seq: None,
            initial_ts: None,
            payloads: PayloadMap::with_static().with_telephone_event(101, 8000),
            remote: None,
            remote_rtcp: None,
            rtcp_mux: false,
            symmetric: false,
            symmetric_probation: 4,
            timeout: Duration::ZERO,
            rtcp_interval: Duration::from_secs(5),
            ptime: Duration::from_millis(20),
            jitter: JitterConfig::default(),
            cname: None,
            dtmf_end_timeout: Duration::from_millis(500),
        }
    }
}

/// A datagram for the socket shell to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dest: SocketAddr,
    pub data: Vec<u8>,
    /// Send from the RTCP socket (unless muxed, then `dest` is the RTP address).
    pub rtcp: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    DtmfBegin {
        digit: char,
    },
    DtmfEnd {
        digit: char,
        duration_ms: u32,
    },
    /// The remote SSRC changed (a new source behind the same stream).
    SsrcChanged {
        old: u32,
        new: u32,
    },
    /// Symmetric RTP learned (or re-learned) the remote RTP address.
    RemoteAddress(SocketAddr),
    /// The remote source sent an RTCP BYE.
    Bye {
        ssrc: u32,
        reason: Option<String>,
    },
    /// No RTP for `timeout`.
    Timeout,
}

impl From<DtmfEvent> for Event {
    fn from(e: DtmfEvent) -> Self {
        match e {
            DtmfEvent::Begin { digit } => Event::DtmfBegin { digit },
            DtmfEvent::End { digit, duration_ms } => Event::DtmfEnd { digit, duration_ms },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtpStats {
    pub packets_sent: u64,
    /// Payload octets sent (the RTCP SR octet count).
    pub bytes_sent: u64,
    pub packets_received: u64,
    /// Payload octets received.
    pub bytes_received: u64,
    /// Cumulative packets lost from the current remote source (RFC 3550: expected - received).
    pub lost: i64,
    /// Interarrival jitter of the received audio (RFC 3550).
    pub jitter: Duration,
    /// Datagrams that failed to parse.
    pub malformed: u64,
    /// Valid packets dropped: unknown payload type or not from the learned address.
    pub ignored: u64,
    /// Frames `send_frame` could not send (no remote, format not negotiated).
    pub send_dropped: u64,
    pub rtcp_sent: u64,
    pub rtcp_received: u64,
    /// From the remote's latest report about us.
    pub remote_fraction_lost: u8,
    pub remote_cumulative_lost: i32,
    pub remote_jitter: u32,
    pub rtt: Option<Duration>,
}

/// RFC 3550 §A.1/§A.3 reception statistics for the remote source.
#[derive(Debug, Clone, Default)]
struct RecvStats {
    init: bool,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    transit: Option<u32>,
    jitter_q4: u32,
    rate: u32,
}

impl RecvStats {
    fn init_seq(&mut self, seq: u16) {
        self.base_seq = seq as u32;
        self.max_seq = seq;
        self.bad_seq = u16::MAX as u32 + 2; // never matches
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    fn update_seq(&mut self, seq: u16) {
        if !self.init {
            self.init = true;
            self.init_seq(seq);
        } else {
            let udelta = seq.wrapping_sub(self.max_seq);
            if udelta < MAX_DROPOUT {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(1 << 16);
                }
                self.max_seq = seq;
            } else if udelta <= u16::MAX - MAX_MISORDER {
                // A large jump: restart the count if the next packet confirms it.
                if seq as u32 == self.bad_seq {
                    self.init_seq(seq);
                } else {
                    self.bad_seq = seq.wrapping_add(1) as u32;
                    return;
                }
            }
            // else: a duplicate or reordered packet
        }
        self.received += 1;
    }

    fn update_jitter(&mut self, arrival_since_epoch: Duration, ts: u32, rate: u32) {
        if rate != self.rate {
            self.rate = rate;
            self.transit = None;
            self.jitter_q4 = 0;
        }
        let transit = duration_to_units(arrival_since_epoch, rate).wrapping_sub(ts);
        if let Some(prev) = self.transit {
            let d = (transit.wrapping_sub(prev) as i32).unsigned_abs();
            if d <= rate.saturating_mul(10) {
                self.jitter_q4 = (self.jitter_q4 + d).saturating_sub((self.jitter_q4 + 8) >> 4);
            }
        }
        self.transit = Some(transit);
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(self.max_seq as u32)
    }

    fn expected(&self) -> u64 {
        (self.extended_max().wrapping_sub(self.base_seq) as u64) + 1
    }

    fn lost(&self) -> i64 {
        if !self.init {
            return 0;
        }
        self.expected() as i64 - self.received as i64
    }

    fn jitter(&self) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((self.jitter_q4 >> 4) as u64 * 1_000_000_000 / self.rate as u64)
    }

    fn report_block(
        &mut self,
        ssrc: u32,
        last_sr: Option<(u32, Instant)>,
        now: Instant,
    ) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (lsr, dlsr) = match last_sr {
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at);
                (
                    lsr,
                    (d.as_nanos() * 65536 / 1_000_000_000).min(u32::MAX as u128) as u32,
                )
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: self.lost().clamp(i32::MIN as i64, i32::MAX as i64) as i32,
            highest_seq: self.extended_max(),
            jitter: self.jitter_q4 >> 4,
            last_sr: lsr,
            delay_since_last_sr: dlsr,
        }
    }
}

#[derive(Debug)]
struct ActiveDtmf {
    sender: DtmfSender,
    pt: u8,
    ts: u32,
    /// The event's length in the audio clock.
    audio_units: u32,
}

#[derive(Debug)]
pub struct RtpSession {
    cfg: RtpConfig,
    ssrc: u32,
    cname: Bytes,
    epoch: Instant,
    wall: (Instant, SystemTime),
    remote_rtp: Option<SocketAddr>,
    remote_rtcp: Option<SocketAddr>,
    rtp_learned: bool,
    /// The RTCP address came from received RTCP (symmetric), not from SDP.
    rtcp_learned: bool,
    /// Symmetric RTP: a new address on probation (address, expected next seq, packets seen).
    candidate: Option<(SocketAddr, u16, u32)>,
    // send side
    tx_seq: u16,
    tx_next_ts: u32,
    tx_anchor: Option<(Instant, u32)>,
    tx_rate: u32,
    tx_last_pt: Option<u8>,
    tx_last: Option<(Instant, u32)>,
    need_marker: bool,
    dtmf_tx: Option<ActiveDtmf>,
    dtmf_queue: VecDeque<(char, u32)>,
    dtmf_next_start: Option<Instant>,
    // receive side
    remote_ssrc: Option<u32>,
    rx: RecvStats,
    jb: JitterBuffer,
    dtmf_rx: DtmfReceiver,
    events: VecDeque<Event>,
    last_rx: Instant,
    timed_out: bool,
    on_hold: bool,
    // RTCP
    next_rtcp: Instant,
    last_sr_rx: Option<(u32, Instant)>,
    sent_at_last_report: u64,
    stats: RtpStats,
}

impl RtpSession {
    /// A new stream at `now`; `wallclock` is the wall-clock time at `now` (for RTCP NTP times).
    pub fn new(cfg: RtpConfig, now: Instant, wallclock: SystemTime) -> RtpSession {
        let ssrc = cfg.ssrc.unwrap_or_else(rand::random);
        let cname = cfg
            .cname
            .clone()
            .unwrap_or_else(|| format!("voxpbx-{ssrc:08x}"));
        let tx_seq = cfg.initial_seq.unwrap_or_else(rand::random);
        let tx_next_ts = cfg.initial_ts.unwrap_or_else(rand::random);
        let remote_rtcp = cfg.remote_rtcp;
        RtpSession {
            ssrc,
            cname: Bytes::from(cname),
            epoch: now,
            wall: (now, wallclock),
            remote_rtp: cfg.remote,
            remote_rtcp,
            rtp_learned: false,
            rtcp_learned: false,
            candidate: None,
            tx_seq,
            tx_next_ts,
            tx_anchor: None,
            tx_rate: 8000,
            tx_last_pt: None,
            tx_last: None,
            need_marker: true,
            dtmf_tx: None,
            dtmf_queue: VecDeque::new(),
            dtmf_next_start: None,
            remote_ssrc: None,
            rx: RecvStats::default(),
            jb: JitterBuffer::new(cfg.jitter.clone()),
            dtmf_rx: DtmfReceiver::new(cfg.dtmf_end_timeout),
            events: VecDeque::with_capacity(8),
            last_rx: now,
            timed_out: false,
            on_hold: false,
            next_rtcp: now + cfg.rtcp_interval,
            last_sr_rx: None,
            sent_at_last_report: 0,
            stats: RtpStats::default(),
            cfg,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn remote_ssrc(&self) -> Option<u32> {
        self.remote_ssrc
    }

    /// Where RTP is sent.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote_rtp
    }

    /// Where RTCP is sent.
    pub fn remote_rtcp(&self) -> Option<SocketAddr> {
        if self.cfg.rtcp_mux {
            return self.remote_rtp;
        }
        self.remote_rtcp.or_else(|| {
            self.remote_rtp.map(|mut a| {
                a.set_port(a.port().wrapping_add(1));
                a
            })
        })
    }

    /// New remote addresses (SDP answer / re-INVITE). Symmetric learning starts over.
    pub fn set_remote(&mut self, rtp: SocketAddr, rtcp: Option<SocketAddr>) {
        self.remote_rtp = Some(rtp);
        self.remote_rtcp = rtcp;
        self.rtp_learned = false;
        self.rtcp_learned = false;
        self.candidate = None;
    }

    /// New negotiated payload types.
    pub fn set_payloads(&mut self, payloads: PayloadMap) {
        self.cfg.payloads = payloads;
    }

    pub fn payloads(&self) -> &PayloadMap {
        &self.cfg.payloads
    }

    /// The frames about to be sent come from a different source: set the marker bit.
    pub fn source_changed(&mut self) {
        self.need_marker = true;
    }

    /// Hold suspends the RTP timeout; resuming restarts its clock at `now`.
    pub fn set_hold(&mut self, now: Instant, on_hold: bool) {
        if self.on_hold && !on_hold {
            self.last_rx = now;
            self.timed_out = false;
        }
        self.on_hold = on_hold;
    }

    /// Changes `rtp_timeout` (zero = off); the timeout clock restarts at `now`.
    pub fn set_timeout(&mut self, now: Instant, timeout: Duration) {
        self.cfg.timeout = timeout;
        self.last_rx = now;
        self.timed_out = false;
    }

    /// The configured `rtp_timeout` (zero = off).
    pub fn timeout(&self) -> Duration {
        self.cfg.timeout
    }

    pub fn jitter_buffer(&self) -> &JitterBuffer {
        &self.jb
    }

    pub fn stats(&self) -> RtpStats {
        let mut s = self.stats.clone();
        s.lost = self.rx.lost();
        s.jitter = self.rx.jitter();
        s
    }

    fn ntp_at(&self, now: Instant) -> u64 {
        let (at, wall) = self.wall;
        let t = if now >= at {
            wall + (now - at)
        } else {
            wall - (at - now)
        };
        ntp_timestamp(t)
    }

    // ---------------------------------------------------------------- receive

    /// Handles a datagram received on the RTP port (RTCP too when muxed: it is recognised by
    /// its packet type). Events are queued for [`poll_event`](Self::poll_event); audio goes to
    /// the jitter buffer for [`poll_frame`](Self::poll_frame). Errors only for malformed data.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: Bytes,
    ) -> Result<(), RtpError> {
        if is_rtcp(&data) {
            return self.handle_rtcp(now, from, data);
        }
        let pkt = match super::packet::RtpPacket::parse(data) {
            Ok(p) => p,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e.into());
            }
        };
        let h = &pkt.header;
        if !self.accept_source(from, h.sequence) {
            self.stats.ignored += 1;
            return Ok(());
        }
        match self.remote_ssrc {
            Some(old) if old != h.ssrc => {
                let events = &mut self.events;
                self.dtmf_rx.flush(&mut |e| events.push_back(e.into()));
                self.dtmf_rx.reset();
                self.events
                    .push_back(Event::SsrcChanged { old, new: h.ssrc });
                self.rx = RecvStats::default();
                self.last_sr_rx = None;
                self.remote_ssrc = Some(h.ssrc);
            }
            None => self.remote_ssrc = Some(h.ssrc),
            _ => {}
        }
        self.rx.update_seq(h.sequence);
        self.stats.packets_received += 1;
        self.stats.bytes_received += pkt.payload.len() as u64;
        self.last_rx = now;
        self.timed_out = false;
        if let Some((te_pt, te_rate)) = self.cfg.payloads.telephone_event() {
            if h.payload_type == te_pt {
                let events = &mut self.events;
                let r = self.dtmf_rx.handle(
                    now,
                    h.timestamp,
                    h.marker,
                    &pkt.payload,
                    te_rate,
                    &mut |e| events.push_back(e.into()),
                );
                if let Err(e) = r {
                    self.stats.malformed += 1;
                    return Err(e.into());
                }
                return Ok(());
            }
        }
        let Some(format) = self.cfg.payloads.format(h.payload_type) else {
            self.stats.ignored += 1; // comfort noise, video, unnegotiated types
            return Ok(());
        };
        self.rx.update_jitter(
            now.saturating_duration_since(self.epoch),
            h.timestamp,
            rtp_clock_rate(format),
        );
        let frame = Frame {
            format,
            data: pkt.payload,
            ts: h.timestamp,
            seq: h.sequence,
        };
        self.jb.put(now, h.ssrc, frame);
        Ok(())
    }

    /// Symmetric RTP source filtering and learning. True when the packet is to be used.
    fn accept_source(&mut self, from: SocketAddr, seq: u16) -> bool {
        if !self.cfg.symmetric {
            return true;
        }
        if !self.rtp_learned {
            self.rtp_learned = true;
            self.learn_rtp(from);
            return true;
        }
        if self.remote_rtp == Some(from) {
            self.candidate = None;
            return true;
        }
        let seen = match self.candidate {
            Some((addr, next, n)) if addr == from && next == seq => n + 1,
            _ => 1,
        };
        if seen >= self.cfg.symmetric_probation.max(1) {
            self.candidate = None;
            self.learn_rtp(from);
            true
        } else {
            self.candidate = Some((from, seq.wrapping_add(1), seen));
            false
        }
    }

    fn learn_rtp(&mut self, from: SocketAddr) {
        if self.remote_rtp != Some(from) {
            self.remote_rtp = Some(from);
            if !self.rtcp_learned {
                // The SDP's RTCP address is as stale as its RTP one: follow RTP (port + 1).
                self.remote_rtcp = None;
            }
            self.events.push_back(Event::RemoteAddress(from));
        }
    }

    /// Handles a datagram received on the RTCP port (or a muxed RTCP packet).
    pub fn handle_rtcp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: Bytes,
    ) -> Result<(), RtpError> {
        let pkts = match RtcpPacket::parse_compound(data) {
            Ok(p) => p,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e.into());
            }
        };
        self.stats.rtcp_received += 1;
        if self.cfg.symmetric && !self.cfg.rtcp_mux {
            // Learn the RTCP address from reports of the source we receive RTP from.
            let sender = match pkts.first() {
                Some(RtcpPacket::SenderReport(sr)) => Some(sr.ssrc),
                Some(RtcpPacket::ReceiverReport(rr)) => Some(rr.ssrc),
                _ => None,
            };
            if sender.is_some() && sender == self.remote_ssrc {
                self.remote_rtcp = Some(from);
                self.rtcp_learned = true;
            }
        }
        for p in pkts {
            match p {
                RtcpPacket::SenderReport(sr) => {
                    if self.remote_ssrc.is_none_or(|r| r == sr.ssrc) {
                        self.last_sr_rx = Some((ntp_middle32(sr.ntp_timestamp), now));
                    }
                    self.handle_reports(now, &sr.reports);
                }
                RtcpPacket::ReceiverReport(rr) => self.handle_reports(now, &rr.reports),
                RtcpPacket::Goodbye(bye) => {
                    for s in bye.sources {
                        if self.remote_ssrc == Some(s) {
                            let reason = bye
                                .reason
                                .as_ref()
                                .map(|r| String::from_utf8_lossy(r).into_owned());
                            self.events.push_back(Event::Bye { ssrc: s, reason });
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn handle_reports(&mut self, now: Instant, reports: &[ReportBlock]) {
        for rb in reports.iter().filter(|rb| rb.ssrc == self.ssrc) {
            self.stats.remote_fraction_lost = rb.fraction_lost;
            self.stats.remote_cumulative_lost = rb.cumulative_lost;
            self.stats.remote_jitter = rb.jitter;
            if rb.last_sr != 0 {
                let now_mid = ntp_middle32(self.ntp_at(now));
                let rtt = now_mid
                    .wrapping_sub(rb.last_sr)
                    .wrapping_sub(rb.delay_since_last_sr);
                if rtt < 0x8000_0000 {
                    self.stats.rtt = Some(Duration::from_nanos(rtt as u64 * 1_000_000_000 / 65536));
                }
            }
        }
    }

    /// The next received audio for one frame interval (call every 20 ms).
    pub fn poll_frame(&mut self, now: Instant) -> Playout {
        self.jb.get(now)
    }

    /// The next queued event (DTMF, SSRC change, address learned, BYE). Also ends a received
    /// DTMF digit whose end packets never came.
    pub fn poll_event(&mut self, now: Instant) -> Option<Event> {
        let events = &mut self.events;
        self.dtmf_rx.poll(now, &mut |e| events.push_back(e.into()));
        self.events.pop_front()
    }

    /// `Some(Event::Timeout)` once when no RTP arrived for the configured timeout (not while on
    /// hold; re-armed by the next RTP packet).
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Event> {
        if self.cfg.timeout.is_zero() || self.on_hold || self.timed_out {
            return None;
        }
        if now.saturating_duration_since(self.last_rx) >= self.cfg.timeout {
            self.timed_out = true;
            return Some(Event::Timeout);
        }
        None
    }

    // ---------------------------------------------------------------- send

    /// The timestamp and marker for media sent at `now` with clock `rate`.
    fn tx_timestamp(&mut self, now: Instant, rate: u32) -> (u32, bool) {
        let mut marker = std::mem::take(&mut self.need_marker);
        let ts = match self.tx_anchor {
            Some((at, ats)) if self.tx_rate == rate => {
                let wall =
                    ats.wrapping_add(duration_to_units(now.saturating_duration_since(at), rate));
                let diff = wall.wrapping_sub(self.tx_next_ts) as i32;
                let skew = (rate / 1000 * MAX_TS_SKEW_MS) as i32;
                if diff > skew {
                    marker = true; // a pause: keep media time in step with real time
                    wall
                } else {
                    let lead = rate / 1000 * MAX_TX_LEAD_MS;
                    if diff < -(lead as i32) {
                        // Far ahead of real time: cap the credited lead, stay continuous.
                        self.tx_anchor = Some((now, self.tx_next_ts.wrapping_sub(lead)));
                    }
                    self.tx_next_ts
                }
            }
            _ => {
                marker = true;
                self.tx_anchor = Some((now, self.tx_next_ts));
                self.tx_rate = rate;
                self.tx_next_ts
            }
        };
        (ts, marker)
    }

    fn build_rtp(&mut self, pt: u8, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let header = RtpHeader {
            marker,
            payload_type: pt,
            sequence: self.tx_seq,
            timestamp: ts,
            ssrc: self.ssrc,
            ..Default::default()
        };
        self.tx_seq = self.tx_seq.wrapping_add(1);
        let mut data = Vec::with_capacity(RTP_HEADER_LEN + payload.len());
        // Cannot fail: pt comes from a PayloadMap (<= 127), no extension.
        let _ = header.write(false, &mut data);
        data.extend_from_slice(payload);
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += payload.len() as u64;
        data
    }

    /// Packetizes one outgoing frame. `None` when there is no remote address, the format was
    /// not negotiated, or a DTMF event is being sent (the frame still advances media time).
    pub fn send_frame(&mut self, now: Instant, frame: &Frame) -> Option<Transmit> {
        let units = rtp_units(frame.format, frame.data.len());
        if self.dtmf_tx.is_some() {
            self.tx_next_ts = self.tx_next_ts.wrapping_add(units);
            return None;
        }
        let (Some(dest), Some(pt)) = (self.remote_rtp, self.cfg.payloads.pt_for(frame.format))
        else {
            self.stats.send_dropped += 1;
            return None;
        };
        if self.tx_last_pt.is_some_and(|p| p != pt) {
            self.need_marker = true;
        }
        let (ts, marker) = self.tx_timestamp(now, rtp_clock_rate(frame.format));
        let data = self.build_rtp(pt, ts, marker, &frame.data);
        self.tx_next_ts = ts.wrapping_add(units);
        self.tx_last_pt = Some(pt);
        self.tx_last = Some((now, ts));
        Some(Transmit {
            dest,
            data,
            rtcp: false,
        })
    }

    /// Starts sending an RFC 4733 digit (queued behind one in progress). Returns its first
    /// packet; the rest come from [`poll_transmit`](Self::poll_transmit).
    pub fn send_dtmf(
        &mut self,
        now: Instant,
        digit: char,
        duration_ms: u32,
    ) -> Result<Option<Transmit>, RtpError> {
        if self.cfg.payloads.telephone_event().is_none() {
            return Err(RtpError::NoTelephoneEvent);
        }
        if digit_to_event(digit).is_none() {
            return Err(RtpError::InvalidDigit(digit));
        }
        self.dtmf_queue.push_back((digit, duration_ms));
        if self.dtmf_tx.is_none() && self.dtmf_next_start.is_none_or(|t| now >= t) {
            return Ok(self.poll_transmit(now));
        }
        Ok(None)
    }

    fn start_dtmf(&mut self, now: Instant) -> bool {
        let Some((pt, te_rate)) = self.cfg.payloads.telephone_event() else {
            self.dtmf_queue.clear();
            return false;
        };
        let Some((digit, ms)) = self.dtmf_queue.pop_front() else {
            return false;
        };
        let Some(sender) = DtmfSender::new(now, digit, ms, te_rate, self.cfg.ptime) else {
            return false;
        };
        let clock = if self.tx_anchor.is_some() {
            self.tx_rate
        } else {
            te_rate
        };
        let (ts, _) = self.tx_timestamp(now, clock);
        let audio_units = (sender.duration_units() as u64 * clock as u64 / te_rate as u64) as u32;
        self.dtmf_tx = Some(ActiveDtmf {
            sender,
            pt,
            ts,
            audio_units,
        });
        true
    }

    fn finish_dtmf(&mut self, now: Instant) {
        if let Some(d) = self.dtmf_tx.take() {
            let end = d.ts.wrapping_add(d.audio_units);
            if (end.wrapping_sub(self.tx_next_ts) as i32) > 0 {
                self.tx_next_ts = end;
            }
            self.need_marker = true;
            self.dtmf_next_start = Some(now + self.cfg.ptime);
        }
    }

    /// DTMF packets due at `now` (call until `None`).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        loop {
            if self.dtmf_tx.is_none() {
                if self.dtmf_queue.is_empty() || self.dtmf_next_start.is_some_and(|t| now < t) {
                    return None;
                }
                if !self.start_dtmf(now) {
                    continue;
                }
            }
            let active = self.dtmf_tx.as_mut()?;
            let (pt, ts) = (active.pt, active.ts);
            let Some(p) = active.sender.poll(now) else {
                if active.sender.is_done() {
                    self.finish_dtmf(now);
                    continue;
                }
                return None;
            };
            let done = active.sender.is_done();
            let data = self.build_rtp(pt, ts, p.marker, &p.payload.to_bytes());
            if done {
                self.finish_dtmf(now);
            }
            match self.remote_rtp {
                Some(dest) => {
                    return Some(Transmit {
                        dest,
                        data,
                        rtcp: false,
                    })
                }
                None => self.stats.send_dropped += 1,
            }
        }
    }

    // ---------------------------------------------------------------- RTCP

    /// An RTCP compound packet (SR or RR, SDES CNAME) when the report interval has passed.
    pub fn poll_rtcp(&mut self, now: Instant) -> Option<Transmit> {
        if self.cfg.rtcp_interval.is_zero() || now < self.next_rtcp {
            return None;
        }
        self.next_rtcp = now + self.cfg.rtcp_interval;
        let dest = self.remote_rtcp()?;
        let data = self.build_rtcp(now, None)?;
        Some(Transmit {
            dest,
            data,
            rtcp: true,
        })
    }

    /// A final report with BYE, for when the stream ends.
    pub fn rtcp_bye(&mut self, now: Instant, reason: Option<&str>) -> Option<Transmit> {
        let dest = self.remote_rtcp()?;
        let data = self.build_rtcp(now, Some(reason.unwrap_or("")))?;
        Some(Transmit {
            dest,
            data,
            rtcp: true,
        })
    }

    fn build_rtcp(&mut self, now: Instant, bye: Option<&str>) -> Option<Vec<u8>> {
        let mut reports = Vec::new();
        if let Some(rssrc) = self.remote_ssrc.filter(|_| self.rx.init) {
            reports.push(self.rx.report_block(rssrc, self.last_sr_rx, now));
        }
        let sending = self.stats.packets_sent > self.sent_at_last_report;
        self.sent_at_last_report = self.stats.packets_sent;
        let first = if sending {
            let rtp_timestamp = match self.tx_last {
                Some((at, ts)) => ts.wrapping_add(duration_to_units(
                    now.saturating_duration_since(at),
                    self.tx_rate,
                )),
                None => self.tx_next_ts,
            };
            RtcpPacket::SenderReport(SenderReport {
                ssrc: self.ssrc,
                ntp_timestamp: self.ntp_at(now),
                rtp_timestamp,
                packet_count: self.stats.packets_sent as u32,
                octet_count: self.stats.bytes_sent as u32,
                reports,
            })
        } else {
            RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: self.ssrc,
                reports,
            })
        };
        let mut cname = self.cname.clone();
        cname.truncate(255);
        let mut pkts = vec![
            first,
            RtcpPacket::SourceDescription(vec![SdesChunk {
                ssrc: self.ssrc,
                items: vec![super::packet::SdesItem {
                    kind: super::packet::SDES_CNAME,
                    value: cname,
                }],
            }]),
        ];
        if let Some(reason) = bye {
            let mut r = Bytes::copy_from_slice(reason.as_bytes());
            r.truncate(255);
            pkts.push(RtcpPacket::Goodbye(Bye {
                sources: vec![self.ssrc],
                reason: (!r.is_empty()).then_some(r),
            }));
        }
        // Cannot fail with one report block, one SDES chunk and texts truncated to 255.
        let data = RtcpPacket::build_compound(&pkts).ok()?;
        self.stats.rtcp_sent += 1;
        Some(data)
    }

    /// The earliest instant at which a `poll_*` call may produce something without new input.
    pub fn poll_deadline(&self) -> Option<Instant> {
        let dtmf_tx = match &self.dtmf_tx {
            Some(d) => d.sender.deadline(),
            None if !self.dtmf_queue.is_empty() => Some(self.dtmf_next_start.unwrap_or(self.epoch)),
            None => None,
        };
        let rtcp = (!self.cfg.rtcp_interval.is_zero() && self.remote_rtcp().is_some())
            .then_some(self.next_rtcp);
        let timeout = (!self.cfg.timeout.is_zero() && !self.on_hold && !self.timed_out)
            .then(|| self.last_rx + self.cfg.timeout);
        [dtmf_tx, rtcp, timeout, self.dtmf_rx.deadline()]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::packet::RtpPacket;
    use crate::rtp::DtmfPayload;

    const LOCAL_SSRC: u32 = 0xAAAA_0001;
    const PEER_SSRC: u32 = 0xBBBB_0002;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn wall() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn cfg() -> RtpConfig {
        RtpConfig {
            ssrc: Some(LOCAL_SSRC),
            initial_seq: Some(1000),
            initial_ts: Some(50_000),
            remote: Some(addr("10.0.0.2:4000")),
            ..RtpConfig::default()
        }
    }

    fn ulaw(n: usize) -> Frame {
        Frame::new(Format::Ulaw, Bytes::from(vec![0xffu8; n]))
    }

    fn parse(t: &Transmit) -> RtpPacket {
        RtpPacket::parse(Bytes::from(t.data.clone())).unwrap()
    }

    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Bytes {
        let p = RtpPacket {
            header: RtpHeader {
                marker,
                payload_type: pt,
                sequence: seq,
                timestamp: ts,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
            padding: 0,
        };
        Bytes::from(p.to_vec().unwrap())
    }

    fn events(s: &mut RtpSession, now: Instant) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event(now)).collect()
    }

    #[test]
    fn payload_map() {
        let m = PayloadMap::with_static()
            .with(96, Format::Slin16)
            .with(97, Format::Ulaw)
            .with_telephone_event(101, 8000);
        assert_eq!(m.format(0), Some(Format::Ulaw));
        assert_eq!(m.format(97), Some(Format::Ulaw));
        assert_eq!(
            m.pt_for(Format::Ulaw),
            Some(0),
            "first mapping wins for sending"
        );
        assert_eq!(m.pt_for(Format::Slin16), Some(96));
        assert_eq!(m.pt_for(Format::Slin48), None);
        assert_eq!(m.format(101), None);
        assert_eq!(m.format(200), None);
        assert_eq!(m.telephone_event(), Some((101, 8000)));
        assert_eq!(
            PayloadMap::new()
                .with(130, Format::Ulaw)
                .pt_for(Format::Ulaw),
            None
        );
    }

    #[test]
    fn send_continuity_and_marker() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(cfg(), t0, wall());
        let mut pkts = Vec::new();
        for i in 0..5u64 {
            let t = s.send_frame(t0 + ms(i * 20), &ulaw(160)).unwrap();
            assert_eq!(t.dest, addr("10.0.0.2:4000"));
            assert!(!t.rtcp);
            assert_eq!(t.data.len(), 12 + 160);
            pkts.push(parse(&t));
        }
        for (i, p) in pkts.iter().enumerate() {
            assert_eq!(p.header.sequence, 1000 + i as u16);
            assert_eq!(p.header.timestamp, 50_000 + 160 * i as u32);
            assert_eq!(p.header.ssrc, LOCAL_SSRC);
            assert_eq!(p.header.payload_type, 0);
            assert_eq!(p.header.marker, i == 0);
        }
        // A new source (bridge after playback) with a different frame size: ts continues, marker.
        s.source_changed();
        let p = parse(&s.send_frame(t0 + ms(100), &ulaw(240)).unwrap());
        assert!(p.header.marker);
        assert_eq!(p.header.timestamp, 50_000 + 800);
        let p = parse(&s.send_frame(t0 + ms(130), &ulaw(240)).unwrap());
        assert!(!p.header.marker);
        assert_eq!(p.header.timestamp, 50_000 + 1040);
        assert_eq!(s.stats().packets_sent, 7);
        assert_eq!(s.stats().bytes_sent, 5 * 160 + 2 * 240);
    }

    #[test]
    fn send_gap_jumps_timestamp_burst_does_not() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(cfg(), t0, wall());
        s.send_frame(t0, &ulaw(160)).unwrap();
        // A burst of frames faster than real time stays continuous.
        for i in 1..10u32 {
            let p = parse(&s.send_frame(t0 + ms(1), &ulaw(160)).unwrap());
            assert_eq!(p.header.timestamp, 50_000 + 160 * i);
            assert!(!p.header.marker);
        }
        // The burst's lead is used up by the following pause: still continuous.
        let p = parse(&s.send_frame(t0 + ms(250), &ulaw(160)).unwrap());
        assert_eq!(p.header.timestamp, 50_000 + 1600);
        assert!(!p.header.marker);
        // One second of silence: the timestamp follows the clock, marker set.
        let p = parse(&s.send_frame(t0 + ms(1250), &ulaw(160)).unwrap());
        assert!(p.header.marker);
        assert_eq!(p.header.timestamp, 50_000 + 1250 * 8);
        assert_eq!(p.header.sequence, 1011, "sequence stays continuous");
        let p = parse(&s.send_frame(t0 + ms(1270), &ulaw(160)).unwrap());
        assert!(!p.header.marker);
        assert_eq!(p.header.timestamp, 50_000 + 1270 * 8);
        // A source that runs ahead of real time for long keeps at most 200 ms of lead, so a
        // later pause is still seen.
        for _ in 0..100 {
            s.send_frame(t0 + ms(1280), &ulaw(160)).unwrap();
        }
        let p = parse(&s.send_frame(t0 + ms(1280 + 500), &ulaw(160)).unwrap());
        assert!(p.header.marker);
    }

    #[test]
    fn send_format_change_and_g722_clock() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(cfg(), t0, wall());
        s.send_frame(t0, &ulaw(160)).unwrap();
        let g = Frame::new(Format::G722, Bytes::from(vec![0u8; 160]));
        let p = parse(&s.send_frame(t0 + ms(20), &g).unwrap());
        assert_eq!(p.header.payload_type, 9);
        assert!(p.header.marker, "payload type change");
        assert_eq!(p.header.timestamp, 50_160);
        let p = parse(&s.send_frame(t0 + ms(40), &g).unwrap());
        assert_eq!(p.header.timestamp, 50_320, "G.722 is clocked at 8 kHz");
        assert!(!p.header.marker);
        // Not negotiated.
        assert!(s
            .send_frame(
                t0 + ms(60),
                &Frame::new(Format::Slin48, Bytes::from(vec![0u8; 1920]))
            )
            .is_none());
        assert_eq!(s.stats().send_dropped, 1);
    }

    #[test]
    fn send_without_remote() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(
            RtpConfig {
                remote: None,
                ..cfg()
            },
            t0,
            wall(),
        );
        assert!(s.send_frame(t0, &ulaw(160)).is_none());
        assert!(s.poll_rtcp(t0 + Duration::from_secs(10)).is_none());
        assert_eq!(s.stats().send_dropped, 1);
    }

    #[test]
    fn random_identity_when_unset() {
        let t0 = Instant::now();
        let a = RtpSession::new(RtpConfig::default(), t0, wall());
        let b = RtpSession::new(RtpConfig::default(), t0, wall());
        assert_ne!(a.ssrc(), b.ssrc());
    }

    #[test]
    fn receive_audio_through_jitter_buffer() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(cfg(), t0, wall());
        let from = addr("10.0.0.2:4000");
        let mut got = Vec::new();
        for i in 0..10u16 {
            let now = t0 + ms(i as u64 * 20);
            s.handle_receive(
                now,
                from,
                rtp(
                    8,
                    500 + i,
                    1000 + i as u32 * 160,
                    PEER_SSRC,
                    i == 0,
                    &[i as u8; 160],
                ),
            )
            .unwrap();
            if let Playout::Frame(f) = s.poll_frame(now + ms(5)) {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 9);
        assert_eq!(got[0].format, Format::Alaw);
        assert_eq!(got[0].seq, 500);
        assert_eq!(got[0].ts, 1000);
        assert_eq!(got[3].data[0], 3);
        let st = s.stats();
        assert_eq!(st.packets_received, 10);
        assert_eq!(st.bytes_received, 1600);
        assert_eq!(st.lost, 0);
        assert_eq!(s.remote_ssrc(), Some(PEER_SSRC));
        // Unknown payload type (comfort noise) is ignored.
        s.handle_receive(
            t0 + ms(200),
            from,
            rtp(13, 510, 2600, PEER_SSRC, false, &[1]),
        )
        .unwrap();
        assert_eq!(s.stats().ignored, 1);
        assert!(events(&mut s, t0 + ms(200)).is_empty());
    }

    #[test]
    fn receive_malformed_is_error() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(cfg(), t0, wall());
        let from = addr("10.0.0.2:4000");
        assert!(s
            .handle_receive(t0, from, Bytes::from_static(&[0x80, 0, 1]))
            .is_err());
        assert!(s
            .handle_receive(t0, from, Bytes::from_static(&[0x80, 200, 0, 9, 1, 2, 3, 4]))
            .is_err());
        // Short telephone-event payload.
        assert!(s
            .handle_receive(t0, from, rtp(101, 1, 1, PEER_SSRC, true, &[1, 2]))
            .is_err());
        assert_eq!(s.stats().malformed, 3);
    }

    #[test]
    fn receive_loss_counted() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(cfg(), t0, wall());
        let from = addr("10.0.0.2:4000");
        for seq in [65534u16, 65535, 2, 3, 5] {
            s.handle_receive(
                t0,
                from,
                rtp(0, seq, seq as u32 * 160, PEER_SSRC, false, &[0; 160]),
            )
            .unwrap();
        }
        assert_eq!(s.stats().lost, 3, "0, 1 and 4 across the wrap");
    }

    #[test]
    fn receive_dtmf_events() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(cfg(), t0, wall());
        let from = addr("10.0.0.2:4000");
        let ev = |end, dur| {
            DtmfPayload {
                event: 1,
                end,
                volume: 10,
                duration: dur,
            }
            .to_bytes()
        };
        let mut seq = 10;
        let mut send = |s: &mut RtpSession, at: u64, marker, p: [u8; 4]| {
            seq += 1;
            s.handle_receive(
                t0 + ms(at),
                from,
                rtp(101, seq, 8000, PEER_SSRC, marker, &p),
            )
            .unwrap();
        };
        send(&mut s, 0, true, ev(false, 160));
        assert_eq!(events(&mut s, t0), vec![Event::DtmfBegin { digit: '1' }]);
        send(&mut s, 20, false, ev(false, 320));
        send(&mut s, 40, false, ev(true, 480));
        send(&mut s, 40, false, ev(true, 480));
        send(&mut s, 40, false, ev(true, 480));
        assert_eq!(
            events(&mut s, t0 + ms(40)),
            vec![Event::DtmfEnd {
                digit: '1',
                duration_ms: 60
            }]
        );
        // A digit whose end never comes is ended by the timeout (via poll_event).
        s.handle_receive(
            t0 + ms(100),
            from,
            rtp(101, 100, 9000, PEER_SSRC, true, &ev(false, 160)),
        )
        .unwrap();
        assert_eq!(
            events(&mut s, t0 + ms(100)),
            vec![Event::DtmfBegin { digit: '1' }]
        );
        assert_eq!(s.poll_deadline(), Some(t0 + ms(600)));
        assert_eq!(
            events(&mut s, t0 + ms(600)),
            vec![Event::DtmfEnd {
                digit: '1',
                duration_ms: 20
            }]
        );
        assert_eq!(
            s.jitter_buffer().stats().received,
            0,
            "DTMF does not go to the jitter buffer"
        );
    }

    #[test]
    fn ssrc_change_event() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(cfg(), t0, wall());
        let from = addr("10.0.0.2:4000");
        s.handle_receive(t0, from, rtp(0, 1, 0, PEER_SSRC, true, &[0; 160]))
            .unwrap();
        // A digit in progress is ended by the change.
        s.handle_receive(
            t0,
            from,
            rtp(
                101,
                2,
                160,
                PEER_SSRC,
                true,
                &DtmfPayload {
                    event: 9,
                    end: false,
                    volume: 10,
                    duration: 160,
                }
                .to_bytes(),
            ),
        )
        .unwrap();
        assert_eq!(events(&mut s, t0), vec![Event::DtmfBegin { digit: '9' }]);
        s.handle_receive(t0 + ms(20), from, rtp(0, 777, 99, 0x5555, true, &[0; 160]))
            .unwrap();
        assert_eq!(
            events(&mut s, t0 + ms(20)),
            vec![
                Event::DtmfEnd {
                    digit: '9',
                    duration_ms: 20
                },
                Event::SsrcChanged {
                    old: PEER_SSRC,
                    new: 0x5555
                }
            ]
        );
        assert_eq!(s.remote_ssrc(), Some(0x5555));
        assert_eq!(s.stats().lost, 0, "statistics restart for the new source");
    }

    #[test]
    fn symmetric_learning() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(
            RtpConfig {
                symmetric: true,
                remote_rtcp: Some(addr("10.0.0.2:4009")),
                ..cfg()
            },
            t0,
            wall(),
        );
        let nat = addr("203.0.113.5:31000");
        s.handle_receive(t0, nat, rtp(0, 1, 0, PEER_SSRC, true, &[0; 160]))
            .unwrap();
        assert_eq!(events(&mut s, t0), vec![Event::RemoteAddress(nat)]);
        assert_eq!(s.remote(), Some(nat));
        assert_eq!(s.remote_rtcp(), Some(addr("203.0.113.5:31001")));
        assert_eq!(s.send_frame(t0, &ulaw(160)).unwrap().dest, nat);
        // A stray packet from elsewhere is dropped.
        let other = addr("198.51.100.9:5000");
        s.handle_receive(t0, other, rtp(0, 2, 160, PEER_SSRC, false, &[0; 160]))
            .unwrap();
        assert_eq!(s.stats().ignored, 1);
        assert_eq!(s.remote(), Some(nat));
        // A NAT rebinding: 4 in-sequence packets from the new address switch over.
        for i in 0..4u16 {
            s.handle_receive(t0, other, rtp(0, 10 + i, 0, PEER_SSRC, false, &[0; 160]))
                .unwrap();
        }
        assert_eq!(s.remote(), Some(other));
        assert_eq!(events(&mut s, t0), vec![Event::RemoteAddress(other)]);
        assert_eq!(s.stats().ignored, 4);
        // Symmetric RTCP: learned from reports of the source we receive, not from strangers.
        let rr = |ssrc| {
            Bytes::from(
                RtcpPacket::build_compound(&[RtcpPacket::ReceiverReport(ReceiverReport {
                    ssrc,
                    reports: vec![],
                })])
                .unwrap(),
            )
        };
        s.handle_rtcp(t0, addr("192.0.2.1:9"), rr(0x9999)).unwrap();
        assert_eq!(s.remote_rtcp(), Some(addr("198.51.100.9:5001")));
        s.handle_rtcp(t0, addr("198.51.100.9:6123"), rr(PEER_SSRC))
            .unwrap();
        assert_eq!(s.remote_rtcp(), Some(addr("198.51.100.9:6123")));
        // set_remote restarts learning.
        s.set_remote(addr("10.0.0.9:7000"), Some(addr("10.0.0.9:7005")));
        assert_eq!(s.remote_rtcp(), Some(addr("10.0.0.9:7005")));
        s.handle_receive(t0, nat, rtp(0, 20, 0, PEER_SSRC, false, &[0; 160]))
            .unwrap();
        assert_eq!(s.remote(), Some(nat));
    }

    #[test]
    fn non_symmetric_keeps_configured_remote() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(cfg(), t0, wall());
        s.handle_receive(
            t0,
            addr("203.0.113.5:31000"),
            rtp(0, 1, 0, PEER_SSRC, true, &[0; 160]),
        )
        .unwrap();
        assert_eq!(s.remote(), Some(addr("10.0.0.2:4000")));
        assert_eq!(s.stats().packets_received, 1);
        assert!(events(&mut s, t0).is_empty());
    }

    fn dtmf_of(p: &RtpPacket) -> DtmfPayload {
        DtmfPayload::parse(&p.payload).unwrap()
    }

    #[test]
    fn send_dtmf_sequence_integrates_with_audio() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(cfg(), t0, wall());
        for i in 0..3u64 {
            s.send_frame(t0 + ms(i * 20), &ulaw(160)).unwrap();
        }
        // Audio next ts would be 50_480.
        let first = parse(&s.send_dtmf(t0 + ms(60), '#', 100).unwrap().unwrap());
        assert!(first.header.marker);
        assert_eq!(first.header.payload_type, 101);
        assert_eq!(first.header.sequence, 1003);
        assert_eq!(first.header.timestamp, 50_480);
        assert_eq!(
            dtmf_of(&first),
            DtmfPayload {
                event: 11,
                end: false,
                volume: 10,
                duration: 160
            }
        );
        let mut pkts = vec![first];
        let mut t = 60;
        while t < 400 {
            t += 1;
            let now = t0 + ms(t);
            if t % 20 == 0 {
                // Audio keeps coming during the event: suppressed.
                assert!(s.send_frame(now, &ulaw(160)).is_none() || t >= 200);
            }
            while let Some(x) = s.poll_transmit(now) {
                pkts.push(parse(&x));
            }
            if pkts.len() == 7 {
                break;
            }
        }
        assert_eq!(pkts.len(), 7);
        for (i, p) in pkts.iter().enumerate() {
            assert_eq!(p.header.sequence, 1003 + i as u16);
            assert_eq!(p.header.timestamp, 50_480, "one timestamp for the event");
            assert_eq!(p.header.marker, i == 0);
        }
        let ends: Vec<bool> = pkts.iter().map(|p| dtmf_of(p).end).collect();
        assert_eq!(ends, vec![false, false, false, false, true, true, true]);
        assert!(pkts[4..].iter().all(|p| dtmf_of(p).duration == 800));
        // Audio resumes after the event with a marker and a timestamp past the event.
        let a = parse(&s.send_frame(t0 + ms(200), &ulaw(160)).unwrap());
        assert!(a.header.marker);
        assert_eq!(a.header.sequence, 1010);
        assert!(
            a.header.timestamp.wrapping_sub(50_480) >= 800,
            "{}",
            a.header.timestamp
        );
        assert_eq!(s.stats().packets_sent, 3 + 7 + 1);
    }

    #[test]
    fn send_dtmf_queue_and_errors() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(cfg(), t0, wall());
        assert!(matches!(
            s.send_dtmf(t0, 'Q', 100),
            Err(RtpError::InvalidDigit('Q'))
        ));
        let first = parse(&s.send_dtmf(t0, '1', 40).unwrap().unwrap());
        assert!(s.send_dtmf(t0, '2', 40).unwrap().is_none(), "queued");
        let mut all = vec![(0, first)];
        for t in 0..400 {
            let now = t0 + ms(t);
            while let Some(x) = s.poll_transmit(now) {
                all.push((t, parse(&x)));
            }
        }
        let firsts: Vec<(u64, u8, u32)> = all
            .iter()
            .filter(|(_, p)| p.header.marker)
            .map(|(t, p)| (*t, dtmf_of(p).event, p.header.timestamp))
            .collect();
        assert_eq!(firsts.len(), 2);
        assert_eq!(firsts[0].1, 1);
        assert_eq!(firsts[1].1, 2);
        assert!(
            firsts[1].0 > 60,
            "second digit after the first one's end packets"
        );
        assert!(
            firsts[1].2.wrapping_sub(firsts[0].2) >= 320,
            "distinct, later timestamp"
        );
        assert_eq!(all.len(), 2 * (2 + 2));
        assert_eq!(
            s.poll_deadline(),
            Some(t0 + Duration::from_secs(5)),
            "only RTCP left"
        );

        let mut none = RtpSession::new(
            RtpConfig {
                payloads: PayloadMap::with_static(),
                ..cfg()
            },
            t0,
            wall(),
        );
        assert!(matches!(
            none.send_dtmf(t0, '1', 100),
            Err(RtpError::NoTelephoneEvent)
        ));
    }

    #[test]
    fn rtcp_sender_and_receiver_reports() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(cfg(), t0, wall());
        let from = addr("10.0.0.2:4000");
        assert!(s.poll_rtcp(t0 + ms(4999)).is_none());
        // Receive-only: RR.
        for seq in [1u16, 2, 4] {
            s.handle_receive(
                t0,
                from,
                rtp(0, seq, seq as u32 * 160, PEER_SSRC, false, &[0; 160]),
            )
            .unwrap();
        }
        let t = s.poll_rtcp(t0 + ms(5000)).unwrap();
        assert!(t.rtcp);
        assert_eq!(t.dest, addr("10.0.0.2:4001"));
        let pkts = RtcpPacket::parse_compound(Bytes::from(t.data)).unwrap();
        match &pkts[0] {
            RtcpPacket::ReceiverReport(rr) => {
                assert_eq!(rr.ssrc, LOCAL_SSRC);
                assert_eq!(rr.reports.len(), 1);
                let rb = rr.reports[0];
                assert_eq!(rb.ssrc, PEER_SSRC);
                assert_eq!(rb.cumulative_lost, 1);
                assert_eq!(rb.fraction_lost, 64, "1 of 4 lost");
                assert_eq!(rb.highest_seq, 4);
                assert_eq!(rb.last_sr, 0);
            }
            p => panic!("expected RR, got {p:?}"),
        }
        match &pkts[1] {
            RtcpPacket::SourceDescription(c) => {
                assert_eq!(&c[0].items[0].value[..], b"voxpbx-aaaa0001")
            }
            p => panic!("{p:?}"),
        }
        assert!(s.poll_rtcp(t0 + ms(5001)).is_none());
        // Sending: SR with counts.
        for i in 0..10u64 {
            s.send_frame(t0 + ms(5000 + i * 20), &ulaw(160)).unwrap();
        }
        let t = s.poll_rtcp(t0 + ms(10_000)).unwrap();
        let pkts = RtcpPacket::parse_compound(Bytes::from(t.data)).unwrap();
        match &pkts[0] {
            RtcpPacket::SenderReport(sr) => {
                assert_eq!(sr.packet_count, 10);
                assert_eq!(sr.octet_count, 1600);
                assert_eq!(sr.ntp_timestamp >> 32, 1_700_000_010 + 2_208_988_800);
                // RTP time at the report: last packet (ts 50_000+1440 at 5180 ms) + 4820 ms.
                assert_eq!(sr.rtp_timestamp, 50_000 + 1440 + 4820 * 8);
                assert_eq!(sr.reports[0].fraction_lost, 0, "no new loss this interval");
            }
            p => panic!("expected SR, got {p:?}"),
        }
        assert_eq!(s.stats().rtcp_sent, 2);
    }

    #[test]
    fn rtcp_receive_lsr_rtt_and_bye() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(
            RtpConfig {
                rtcp_mux: true,
                ..cfg()
            },
            t0,
            wall(),
        );
        let from = addr("10.0.0.2:4000");
        s.handle_receive(t0, from, rtp(0, 1, 0, PEER_SSRC, false, &[0; 160]))
            .unwrap();
        // The peer's SR (muxed on the RTP port).
        let peer_ntp = ntp_timestamp(wall() + ms(100));
        let sr = RtcpPacket::build_compound(&[RtcpPacket::SenderReport(SenderReport {
            ssrc: PEER_SSRC,
            ntp_timestamp: peer_ntp,
            ..Default::default()
        })])
        .unwrap();
        s.handle_receive(t0 + ms(100), from, Bytes::from(sr))
            .unwrap();
        assert_eq!(s.stats().rtcp_received, 1);
        // Our RR (muxed: to the RTP address) carries LSR and DLSR.
        let t = s.poll_rtcp(t0 + ms(5000)).unwrap();
        assert_eq!(t.dest, from);
        let pkts = RtcpPacket::parse_compound(Bytes::from(t.data)).unwrap();
        let RtcpPacket::ReceiverReport(rr) = &pkts[0] else {
            panic!("{pkts:?}")
        };
        assert_eq!(rr.reports[0].last_sr, ntp_middle32(peer_ntp));
        assert_eq!(rr.reports[0].delay_since_last_sr, (4.9 * 65536.0) as u32);
        // The peer reports about us: LSR = our SR at 5 s, held 100 ms, received at 5.3 s => RTT 200 ms.
        let our_lsr = ntp_middle32(ntp_timestamp(wall() + ms(5000)));
        let rr = RtcpPacket::build_compound(&[RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: PEER_SSRC,
            reports: vec![ReportBlock {
                ssrc: LOCAL_SSRC,
                fraction_lost: 25,
                cumulative_lost: 7,
                highest_seq: 1,
                jitter: 40,
                last_sr: our_lsr,
                delay_since_last_sr: 65536 / 10,
            }],
        })])
        .unwrap();
        s.handle_rtcp(t0 + ms(5300), from, Bytes::from(rr)).unwrap();
        let st = s.stats();
        assert_eq!(st.remote_fraction_lost, 25);
        assert_eq!(st.remote_cumulative_lost, 7);
        assert_eq!(st.remote_jitter, 40);
        let rtt = st.rtt.unwrap();
        assert!(rtt >= ms(199) && rtt <= ms(201), "{rtt:?}");
        // BYE from the peer.
        let bye = RtcpPacket::build_compound(&[
            RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: PEER_SSRC,
                reports: vec![],
            }),
            RtcpPacket::Goodbye(Bye {
                sources: vec![PEER_SSRC],
                reason: Some(Bytes::from_static(b"done")),
            }),
        ])
        .unwrap();
        s.handle_receive(t0 + ms(6000), from, Bytes::from(bye))
            .unwrap();
        assert_eq!(
            events(&mut s, t0 + ms(6000)),
            vec![Event::Bye {
                ssrc: PEER_SSRC,
                reason: Some("done".into())
            }]
        );
        // Our own BYE.
        let t = s.rtcp_bye(t0 + ms(6000), Some("hangup")).unwrap();
        let pkts = RtcpPacket::parse_compound(Bytes::from(t.data)).unwrap();
        assert_eq!(
            pkts.last(),
            Some(&RtcpPacket::Goodbye(Bye {
                sources: vec![LOCAL_SSRC],
                reason: Some(Bytes::from_static(b"hangup"))
            }))
        );
    }

    #[test]
    fn rtp_timeout() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(
            RtpConfig {
                timeout: Duration::from_secs(30),
                rtcp_interval: Duration::ZERO,
                ..cfg()
            },
            t0,
            wall(),
        );
        let from = addr("10.0.0.2:4000");
        assert_eq!(s.poll_deadline(), Some(t0 + Duration::from_secs(30)));
        s.handle_receive(
            t0 + Duration::from_secs(10),
            from,
            rtp(0, 1, 0, PEER_SSRC, false, &[0; 160]),
        )
        .unwrap();
        assert_eq!(s.poll_timeout(t0 + Duration::from_secs(39)), None);
        assert_eq!(
            s.poll_timeout(t0 + Duration::from_secs(40)),
            Some(Event::Timeout)
        );
        assert_eq!(s.poll_timeout(t0 + Duration::from_secs(41)), None, "once");
        assert_eq!(s.poll_deadline(), None);
        // RTP re-arms it.
        s.handle_receive(
            t0 + Duration::from_secs(50),
            from,
            rtp(0, 2, 160, PEER_SSRC, false, &[0; 160]),
        )
        .unwrap();
        assert_eq!(
            s.poll_timeout(t0 + Duration::from_secs(80)),
            Some(Event::Timeout)
        );
        // Not while on hold; unhold restarts the clock.
        s.handle_receive(
            t0 + Duration::from_secs(81),
            from,
            rtp(0, 3, 320, PEER_SSRC, false, &[0; 160]),
        )
        .unwrap();
        s.set_hold(t0 + Duration::from_secs(82), true);
        assert_eq!(s.poll_timeout(t0 + Duration::from_secs(200)), None);
        s.set_hold(t0 + Duration::from_secs(200), false);
        assert_eq!(s.poll_timeout(t0 + Duration::from_secs(229)), None);
        assert_eq!(
            s.poll_timeout(t0 + Duration::from_secs(230)),
            Some(Event::Timeout)
        );
        // 0 = off.
        s.set_timeout(t0 + Duration::from_secs(230), Duration::ZERO);
        assert_eq!(s.poll_timeout(t0 + Duration::from_secs(1000)), None);
    }
}
