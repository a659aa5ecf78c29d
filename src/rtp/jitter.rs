//! Adaptive jitter buffer.
//!
//! Packets go in with `put(now, ssrc, marker, frame)` (the frame carries the RTP seq and
//! timestamp) and come out in sequence order with `get(now)`, called once per frame interval
//! (20 ms). Storage is a fixed ring indexed by sequence number: no allocation per packet.
//!
//! Playout: after the first packet (and after a resync or an underrun) the buffer waits until
//! the oldest packet has aged `target_delay`, then plays one packet per `get`. A hole whose
//! successors are already buffered is reported as [`Playout::Missing`] (conceal it); an empty
//! buffer is an underrun (`Missing` while the stream is recent, `Empty` once idle) and makes the
//! buffer re-wait the target delay. The target follows the RFC 3550 interarrival jitter
//! (`3 × J`), raised by late packets and by underruns that end with a timestamp-continuous
//! packet (not by DTX pauses) — a boost that decays by 2 ms/s — and bounded by
//! `min_delay..=max_delay`. After such a stall, playout resumes as soon as the target is buffered
//! (the late head is not aged a second time). When more than `target + 2 frames` is buffered, one
//! packet per `get` is dropped until the depth is back.
//!
//! Duplicates and packets arriving after their slot was played or skipped are dropped. An SSRC
//! or clock-rate change resyncs at once; a sequence jump (≥ capacity ahead or > 100 behind) is
//! accepted when the next packet confirms it, as RFC 3550 §A.1 does. Sequence numbers are
//! extended to 64 bits internally, so wraparound is seamless.

use std::time::{Duration, Instant};

use crate::media::{Format, Frame};

use super::{duration_to_units, rtp_clock_rate, rtp_units};

/// Packets more than this far behind the playout point are a sequence jump, not reordering.
const MAX_MISORDER: i64 = 100;
/// Target delay = this × the interarrival jitter.
const JITTER_MULT: u32 = 3;
/// The boost decays by 1 ms every this long.
const BOOST_DECAY_STEP: Duration = Duration::from_millis(500);
/// Timestamp steps larger than this (seconds) are not jitter but a jump (ignored by the estimate).
const MAX_TRANSIT_STEP_S: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitterConfig {
    /// Lowest target delay (default 20 ms).
    pub min_delay: Duration,
    /// Highest target delay (default 200 ms).
    pub max_delay: Duration,
    /// Ring size in packets (default 64; at least 8).
    pub capacity: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            capacity: 64,
        }
    }
}

/// What `put` did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The first packet of a stream.
    Started,
    Accepted,
    /// The buffer restarted on this packet (SSRC, clock rate or confirmed sequence jump).
    Resynced,
    Duplicate,
    /// Arrived after its slot was played out as missing.
    Late,
    /// A sequence jump, dropped until the next packet confirms it.
    Held,
}

/// What `get` yields for one frame interval.
#[derive(Debug, Clone)]
pub enum Playout {
    Frame(Frame),
    /// A packet is missing (lost, late, or a mid-stream underrun): conceal `samples` samples
    /// (at `format.rate()`).
    Missing {
        format: Format,
        samples: u32,
    },
    /// Nothing to play: not started, still buffering, or the stream went idle.
    Empty,
}

impl Playout {
    pub fn frame(self) -> Option<Frame> {
        match self {
            Playout::Frame(f) => Some(f),
            _ => None,
        }
    }
    pub fn is_missing(&self) -> bool {
        matches!(self, Playout::Missing { .. })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets given to `put`.
    pub received: u64,
    /// Frames returned by `get`.
    pub played: u64,
    /// Sequence numbers played out as missing.
    pub lost: u64,
    pub late: u64,
    pub duplicates: u64,
    /// Frames dropped to shrink the buffer.
    pub overflow_dropped: u64,
    pub underruns: u64,
    pub resyncs: u64,
}

#[derive(Debug)]
struct Slot {
    ext: u64,
    arrival: Instant,
    frame: Frame,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Buffering,
    Playing,
}

#[derive(Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Vec<Option<Slot>>,
    count: usize,
    state: State,
    ssrc: u32,
    rate: u32,
    format: Format,
    /// Extended sequence number of the next packet to play.
    play_seq: u64,
    highest: u64,
    played_any: bool,
    /// RTP units per frame (from the latest packet).
    frame_units: u32,
    epoch: Option<Instant>,
    transit: Option<u32>,
    /// RFC 3550 interarrival jitter in RTP units, scaled by 16.
    jitter_q4: u32,
    boost: Duration,
    boost_updated: Option<Instant>,
    /// Bit k set: sequence `play_seq - 1 - k` was played out as missing.
    missing_hist: u64,
    probation: Option<u16>,
    last_put: Option<Instant>,
    /// Timestamp the next frame should carry if the stream is continuous.
    next_ts: Option<u32>,
    /// An underrun in progress: when it began and the timestamp that was due.
    underrun: Option<(Instant, u32)>,
    /// The underrun ended with the packet that was due (a network stall, not DTX): resume as
    /// soon as the target delay is buffered instead of aging the late head again.
    stall_resume: bool,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(cfg: JitterConfig) -> JitterBuffer {
        let cap = cfg.capacity.max(8);
        let mut slots = Vec::with_capacity(cap);
        slots.resize_with(cap, || None);
        JitterBuffer {
            cfg,
            slots,
            count: 0,
            state: State::Idle,
            ssrc: 0,
            rate: 8000,
            format: Format::Ulaw,
            play_seq: 0,
            highest: 0,
            played_any: false,
            frame_units: 160,
            epoch: None,
            transit: None,
            jitter_q4: 0,
            boost: Duration::ZERO,
            boost_updated: None,
            missing_hist: 0,
            probation: None,
            last_put: None,
            next_ts: None,
            underrun: None,
            stall_resume: false,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> &JitterStats {
        &self.stats
    }

    /// Packets currently buffered.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The current SSRC, once a packet was accepted.
    pub fn ssrc(&self) -> Option<u32> {
        (self.state != State::Idle).then_some(self.ssrc)
    }

    /// RFC 3550 interarrival jitter estimate in RTP units.
    pub fn jitter_units(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// RFC 3550 interarrival jitter estimate.
    pub fn jitter(&self) -> Duration {
        self.units_to_duration(self.jitter_units())
    }

    /// The delay the buffer is aiming for.
    pub fn target_delay(&self) -> Duration {
        let from_jitter = self.jitter() * JITTER_MULT;
        from_jitter
            .max(self.boost)
            .max(self.cfg.min_delay)
            .min(self.cfg.max_delay)
    }

    fn units_to_duration(&self, units: u32) -> Duration {
        Duration::from_nanos(units as u64 * 1_000_000_000 / self.rate.max(1) as u64)
    }

    fn frame_duration(&self) -> Duration {
        self.units_to_duration(self.frame_units)
    }

    /// Forgets the stream (packets, position, estimates). Statistics are kept.
    pub fn reset(&mut self) {
        self.clear_slots();
        self.state = State::Idle;
        self.transit = None;
        self.jitter_q4 = 0;
        self.boost = Duration::ZERO;
        self.boost_updated = None;
        self.probation = None;
        self.played_any = false;
        self.missing_hist = 0;
        self.next_ts = None;
        self.underrun = None;
        self.stall_resume = false;
    }

    fn clear_slots(&mut self) {
        if self.count > 0 {
            self.slots.iter_mut().for_each(|s| *s = None);
        }
        self.count = 0;
    }

    fn idx(&self, ext: u64) -> usize {
        (ext % self.slots.len() as u64) as usize
    }

    /// Adds a received packet. `frame.seq`/`frame.ts` must be the RTP sequence and timestamp.
    pub fn put(&mut self, now: Instant, ssrc: u32, frame: Frame) -> PutOutcome {
        self.stats.received += 1;
        let rate = rtp_clock_rate(frame.format);
        if self.state == State::Idle {
            self.start(now, ssrc, frame);
            return PutOutcome::Started;
        }
        if ssrc != self.ssrc || rate != self.rate {
            self.stats.resyncs += 1;
            self.start(now, ssrc, frame);
            return PutOutcome::Resynced;
        }
        let cap = self.slots.len() as i64;
        let d = frame.seq.wrapping_sub(self.play_seq as u16) as i16 as i64;
        let ext = (self.play_seq as i64 + d) as u64;
        if d < 0 {
            if d < -MAX_MISORDER {
                return self.jump(now, ssrc, frame);
            }
            // Reordered ahead of the very first packet: nothing played yet, move the start back.
            if !self.played_any && ((self.highest - ext) as i64) < cap {
                self.play_seq = ext;
                self.store(now, ext, frame);
                return PutOutcome::Accepted;
            }
            let k = (-d - 1) as u32;
            if k < 64 && self.missing_hist & (1 << k) != 0 {
                self.missing_hist &= !(1 << k);
                self.stats.late += 1;
                // It needed `-d` more frames of delay than we had.
                let want = self.target_delay() + self.frame_duration() * (-d) as u32;
                self.raise_boost(now, want);
                return PutOutcome::Late;
            }
            self.stats.duplicates += 1;
            return PutOutcome::Duplicate;
        }
        if d >= cap {
            return self.jump(now, ssrc, frame);
        }
        let i = self.idx(ext);
        if let Some(s) = &self.slots[i] {
            if s.ext == ext {
                self.stats.duplicates += 1;
                return PutOutcome::Duplicate;
            }
        }
        self.store(now, ext, frame);
        PutOutcome::Accepted
    }

    fn jump(&mut self, now: Instant, ssrc: u32, frame: Frame) -> PutOutcome {
        if self.probation == Some(frame.seq) {
            self.stats.resyncs += 1;
            self.start(now, ssrc, frame);
            PutOutcome::Resynced
        } else {
            self.probation = Some(frame.seq.wrapping_add(1));
            PutOutcome::Held
        }
    }

    fn start(&mut self, now: Instant, ssrc: u32, frame: Frame) {
        self.clear_slots();
        self.ssrc = ssrc;
        self.rate = rtp_clock_rate(frame.format);
        self.play_seq = (1u64 << 32) | frame.seq as u64;
        self.highest = self.play_seq;
        self.played_any = false;
        self.missing_hist = 0;
        self.probation = None;
        self.transit = None;
        self.next_ts = None;
        self.underrun = None;
        self.stall_resume = false;
        self.state = State::Buffering;
        if self.epoch.is_none() {
            self.epoch = Some(now);
        }
        let ext = self.play_seq;
        self.store(now, ext, frame);
    }

    fn store(&mut self, now: Instant, ext: u64, frame: Frame) {
        let units = rtp_units(frame.format, frame.data.len());
        if units > 0 {
            self.frame_units = units;
        }
        self.format = frame.format;
        self.update_jitter(now, frame.ts);
        if let Some((since, due_ts)) = self.underrun.take() {
            // The packet we ran dry waiting for, with a continuous timestamp, was late: the
            // delay should have covered the wait. (A timestamp jump is a talkspurt after DTX.)
            if ext == self.play_seq && frame.ts == due_ts {
                let want = self.target_delay() + now.saturating_duration_since(since);
                self.raise_boost(now, want);
                self.stall_resume = true;
            }
        }
        let i = self.idx(ext);
        if self.slots[i].is_none() {
            self.count += 1;
        }
        self.slots[i] = Some(Slot {
            ext,
            arrival: now,
            frame,
        });
        self.highest = self.highest.max(ext);
        self.last_put = Some(now);
        self.probation = None;
    }

    /// RFC 3550 §A.8 interarrival jitter, in integer RTP units scaled by 16.
    fn update_jitter(&mut self, now: Instant, ts: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = duration_to_units(now.saturating_duration_since(epoch), self.rate);
        let transit = arrival.wrapping_sub(ts);
        if let Some(prev) = self.transit {
            let d = (transit.wrapping_sub(prev) as i32).unsigned_abs();
            if d <= self.rate.saturating_mul(MAX_TRANSIT_STEP_S) {
                self.jitter_q4 = (self.jitter_q4 + d).saturating_sub((self.jitter_q4 + 8) >> 4);
            }
        }
        self.transit = Some(transit);
    }

    fn raise_boost(&mut self, now: Instant, to: Duration) {
        self.boost = self.boost.max(to).min(self.cfg.max_delay);
        self.boost_updated = Some(now);
    }

    fn decay_boost(&mut self, now: Instant) {
        let Some(t) = self.boost_updated else { return };
        let steps =
            (now.saturating_duration_since(t).as_nanos() / BOOST_DECAY_STEP.as_nanos()) as u32;
        if steps > 0 {
            self.boost = self
                .boost
                .saturating_sub(Duration::from_millis(steps as u64));
            self.boost_updated = Some(t + BOOST_DECAY_STEP * steps);
        }
    }

    fn advance(&mut self, missing: bool) {
        self.play_seq += 1;
        self.missing_hist = (self.missing_hist << 1) | missing as u64;
    }

    fn take(&mut self, ext: u64) -> Option<Slot> {
        let i = self.idx(ext);
        match &self.slots[i] {
            Some(s) if s.ext == ext => {
                self.count -= 1;
                self.slots[i].take()
            }
            _ => None,
        }
    }

    fn missing(&self) -> Playout {
        let samples = (self.frame_units as u64 * self.format.rate() as u64
            / rtp_clock_rate(self.format) as u64) as u32;
        Playout::Missing {
            format: self.format,
            samples,
        }
    }

    /// `Missing` while the stream is recent (the consumer conceals), `Empty` once it is idle.
    fn gap(&self, now: Instant) -> Playout {
        let recent = self.last_put.is_some_and(|t| {
            now.saturating_duration_since(t) <= self.cfg.max_delay + self.frame_duration()
        });
        if self.played_any && recent {
            self.missing()
        } else {
            Playout::Empty
        }
    }

    /// The playout for one frame interval.
    pub fn get(&mut self, now: Instant) -> Playout {
        self.decay_boost(now);
        match self.state {
            State::Idle => return Playout::Empty,
            State::Buffering => {
                if self.count == 0 {
                    return self.gap(now);
                }
                let Some(head) = (self.play_seq..=self.highest).find(|&e| {
                    let i = self.idx(e);
                    self.slots[i].as_ref().is_some_and(|s| s.ext == e)
                }) else {
                    return self.gap(now); // unreachable while count > 0; harmless
                };
                let arrival = self.slots[self.idx(head)]
                    .as_ref()
                    .map_or(now, |s| s.arrival);
                let target = self.target_delay();
                // After a stall the head is already late: play once the burst that follows it
                // fills the target, rather than delaying it by another target on top.
                let buffered =
                    self.frame_duration() * (self.highest + 1 - head).min(u32::MAX as u64) as u32;
                let refilled = self.stall_resume && buffered >= target;
                if now < arrival + target && !refilled {
                    return self.gap(now);
                }
                self.stall_resume = false;
                if head > self.play_seq {
                    let n = head - self.play_seq;
                    if self.played_any {
                        self.stats.lost += n;
                    }
                    self.missing_hist = if n >= 64 {
                        u64::MAX
                    } else {
                        (self.missing_hist << n) | ((1u64 << n) - 1)
                    };
                    self.play_seq = head;
                }
                self.state = State::Playing;
            }
            State::Playing => {}
        }
        if self.count > 0 {
            let frame = self.frame_duration();
            let level = frame * (self.highest + 1 - self.play_seq).min(u32::MAX as u64) as u32;
            if level > self.target_delay() + frame * 2 {
                match self.take(self.play_seq) {
                    Some(_) => {
                        self.stats.overflow_dropped += 1;
                        self.advance(false);
                    }
                    None => {
                        self.stats.lost += 1;
                        self.advance(true);
                    }
                }
                self.next_ts = self.next_ts.map(|t| t.wrapping_add(self.frame_units));
            }
        }
        if self.count == 0 {
            self.state = State::Buffering;
            self.stats.underruns += 1;
            if let Some(ts) = self.next_ts {
                self.underrun = Some((now, ts));
            }
            return self.gap(now);
        }
        match self.take(self.play_seq) {
            Some(slot) => {
                self.advance(false);
                self.played_any = true;
                self.stats.played += 1;
                let units = rtp_units(slot.frame.format, slot.frame.data.len());
                self.next_ts = Some(slot.frame.ts.wrapping_add(units));
                Playout::Frame(slot.frame)
            }
            None => {
                self.advance(true);
                self.stats.lost += 1;
                self.next_ts = self.next_ts.map(|t| t.wrapping_add(self.frame_units));
                self.missing()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const SSRC: u32 = 0x1111;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn pkt(seq: u16, ts: u32) -> Frame {
        // A marker byte in the payload lets tests check which packet came out.
        let mut v = vec![0u8; 160];
        v[0] = seq as u8;
        v[1] = (seq >> 8) as u8;
        Frame {
            format: Format::Ulaw,
            data: Bytes::from(v),
            ts,
            seq,
        }
    }

    fn seq_of(p: &Playout) -> Option<u16> {
        match p {
            Playout::Frame(f) => Some(f.seq),
            _ => None,
        }
    }

    /// Feeds `arrivals` (ms, seq) and calls `get` every 20 ms starting at `get_offset` ms, until
    /// `end` ms. Returns the playout per tick.
    fn simulate(
        jb: &mut JitterBuffer,
        t0: Instant,
        arrivals: &[(u64, u16)],
        get_offset: u64,
        end: u64,
    ) -> Vec<Playout> {
        let mut out = Vec::new();
        let mut ai = 0;
        let mut t = get_offset;
        while t <= end {
            while ai < arrivals.len() && arrivals[ai].0 <= t {
                let (_, seq) = arrivals[ai];
                jb.put(t0 + ms(arrivals[ai].0), SSRC, pkt(seq, seq as u32 * 160));
                ai += 1;
            }
            out.push(jb.get(t0 + ms(t)));
            t += 20;
        }
        out
    }

    fn frames(out: &[Playout]) -> Vec<u16> {
        out.iter().filter_map(seq_of).collect()
    }

    #[test]
    fn in_order() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        assert!(matches!(jb.get(t0), Playout::Empty));
        let arrivals: Vec<(u64, u16)> = (0..50).map(|i| (i as u64 * 20, i)).collect();
        let out = simulate(&mut jb, t0, &arrivals, 5, 1040);
        assert!(matches!(out[0], Playout::Empty), "buffers min_delay first");
        assert_eq!(seq_of(&out[1]), Some(0));
        assert_eq!(frames(&out), (0..50).collect::<Vec<_>>());
        assert!(
            out[1..50].iter().all(|p| seq_of(p).is_some()),
            "one frame per tick, no gaps"
        );
        assert_eq!(jb.stats().lost, 0);
        assert_eq!(jb.target_delay(), ms(20));
        assert_eq!(jb.jitter(), Duration::ZERO);
    }

    #[test]
    fn reordered() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        // Pairs swapped: 1,0,3,2,... each pair arriving 1 ms apart.
        let mut arrivals = Vec::new();
        for i in (0..40u16).step_by(2) {
            arrivals.push((i as u64 * 20 + 20, i + 1));
            arrivals.push((i as u64 * 20 + 21, i));
        }
        let out = simulate(&mut jb, t0, &arrivals, 5, 1200);
        assert_eq!(frames(&out), (0..40).collect::<Vec<_>>());
        assert_eq!(jb.stats().lost, 0);
        assert_eq!(jb.stats().late, 0);
    }

    #[test]
    fn lost_packets_are_missing() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let arrivals: Vec<(u64, u16)> = (0..20)
            .filter(|i| *i != 5 && *i != 6)
            .map(|i| (i as u64 * 20, i))
            .collect();
        let out = simulate(&mut jb, t0, &arrivals, 5, 440);
        let seqs: Vec<Option<u16>> = out[1..21].iter().map(seq_of).collect();
        let mut expect: Vec<Option<u16>> = (0..20).map(Some).collect();
        expect[5] = None;
        expect[6] = None;
        assert_eq!(seqs, expect);
        assert!(matches!(
            out[6],
            Playout::Missing {
                format: Format::Ulaw,
                samples: 160
            }
        ));
        assert!(out[7].is_missing());
        assert_eq!(jb.stats().lost, 2);
    }

    #[test]
    fn duplicates_dropped() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        assert_eq!(jb.put(t0, SSRC, pkt(0, 0)), PutOutcome::Started);
        assert_eq!(jb.put(t0, SSRC, pkt(0, 0)), PutOutcome::Duplicate);
        assert_eq!(jb.put(t0 + ms(20), SSRC, pkt(1, 160)), PutOutcome::Accepted);
        assert_eq!(
            jb.put(t0 + ms(21), SSRC, pkt(1, 160)),
            PutOutcome::Duplicate
        );
        assert_eq!(seq_of(&jb.get(t0 + ms(25))), Some(0));
        // A duplicate of a played packet is still a duplicate, not late.
        assert_eq!(jb.put(t0 + ms(26), SSRC, pkt(0, 0)), PutOutcome::Duplicate);
        assert_eq!(seq_of(&jb.get(t0 + ms(45))), Some(1));
        assert_eq!(jb.stats().duplicates, 3);
        assert_eq!(jb.stats().late, 0);
        assert_eq!(jb.len(), 0);
    }

    #[test]
    fn late_packet_dropped_and_raises_target() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        // Packet 3 arrives 80 ms late.
        let mut arrivals: Vec<(u64, u16)> = (0..10)
            .filter(|i| *i != 3)
            .map(|i| (i as u64 * 20, i))
            .collect();
        arrivals.push((140, 3));
        arrivals.sort();
        let before = jb.target_delay();
        let out = simulate(&mut jb, t0, &arrivals, 5, 200);
        assert!(out[4].is_missing());
        assert_eq!(jb.stats().late, 1);
        assert!(!frames(&out).contains(&3));
        assert!(jb.target_delay() > before, "{:?}", jb.target_delay());
    }

    #[test]
    fn seq_wraparound() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let seqs: Vec<u16> = (0..30u16).map(|i| 65520u16.wrapping_add(i)).collect();
        let mut out = Vec::new();
        for (i, s) in seqs.iter().enumerate() {
            let t = t0 + ms(i as u64 * 20);
            jb.put(
                t,
                SSRC,
                pkt(*s, (u32::MAX - 1000).wrapping_add(i as u32 * 160)),
            );
            out.push(jb.get(t + ms(5)));
        }
        out.push(jb.get(t0 + ms(605)));
        assert_eq!(frames(&out), seqs);
        assert_eq!(jb.stats().lost, 0);
        assert_eq!(jb.stats().resyncs, 0);
        assert_eq!(jb.jitter(), Duration::ZERO, "timestamp wrap is not jitter");
    }

    #[test]
    fn ssrc_change_resyncs() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        for i in 0..5u16 {
            jb.put(t0 + ms(i as u64 * 20), SSRC, pkt(i, i as u32 * 160));
        }
        assert_eq!(
            seq_of(&jb.get(t0 + ms(85))),
            Some(1),
            "too deep: the oldest is dropped"
        );
        assert_eq!(jb.stats().overflow_dropped, 1);
        let new = 0x2222;
        assert_eq!(
            jb.put(t0 + ms(100), new, pkt(30000, 99)),
            PutOutcome::Resynced
        );
        assert_eq!(jb.ssrc(), Some(new));
        assert_eq!(jb.len(), 1, "old stream's packets dropped");
        jb.put(t0 + ms(120), new, pkt(30001, 259));
        assert!(
            !matches!(jb.get(t0 + ms(105)), Playout::Frame(_)),
            "re-buffers"
        );
        assert_eq!(seq_of(&jb.get(t0 + ms(125))), Some(30000));
        assert_eq!(seq_of(&jb.get(t0 + ms(145))), Some(30001));
        assert_eq!(jb.stats().resyncs, 1);
    }

    #[test]
    fn seq_jump_needs_confirmation() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.put(t0, SSRC, pkt(100, 0));
        jb.put(t0 + ms(20), SSRC, pkt(101, 160));
        // A stray packet far ahead is held, the stream goes on.
        assert_eq!(jb.put(t0 + ms(30), SSRC, pkt(9000, 5)), PutOutcome::Held);
        assert_eq!(
            jb.put(t0 + ms(40), SSRC, pkt(102, 320)),
            PutOutcome::Accepted
        );
        // A real jump: two consecutive packets.
        assert_eq!(jb.put(t0 + ms(60), SSRC, pkt(20000, 7)), PutOutcome::Held);
        assert_eq!(
            jb.put(t0 + ms(80), SSRC, pkt(20001, 167)),
            PutOutcome::Resynced
        );
        assert_eq!(seq_of(&jb.get(t0 + ms(100))), Some(20001));
        // Far behind also counts as a jump.
        assert_eq!(jb.put(t0 + ms(100), SSRC, pkt(10, 0)), PutOutcome::Held);
        assert_eq!(
            jb.put(t0 + ms(120), SSRC, pkt(11, 160)),
            PutOutcome::Resynced
        );
    }

    #[test]
    fn reordered_before_first_played() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.put(t0, SSRC, pkt(11, 160));
        assert_eq!(jb.put(t0 + ms(2), SSRC, pkt(10, 0)), PutOutcome::Accepted);
        assert_eq!(seq_of(&jb.get(t0 + ms(25))), Some(10));
        assert_eq!(seq_of(&jb.get(t0 + ms(45))), Some(11));
    }

    #[test]
    fn bursty_arrival_adapts_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        // Sent every 20 ms, delivered in bursts of 5 every 100 ms.
        let n = 500u16;
        let arrivals: Vec<(u64, u16)> = (0..n).map(|i| ((i as u64 / 5) * 100 + 100, i)).collect();
        let out = simulate(&mut jb, t0, &arrivals, 5, n as u64 * 20 + 400);
        // After warming up (2 s), playout is continuous and complete.
        let tail = &out[100..n as usize];
        assert!(
            tail.iter().all(|p| matches!(p, Playout::Frame(_))),
            "{:?}",
            tail.iter().position(|p| !matches!(p, Playout::Frame(_)))
        );
        let f = frames(&out);
        assert!(f.windows(2).all(|w| w[1] > w[0]), "in order");
        let t = jb.target_delay();
        assert!(t >= ms(80) && t <= ms(200), "target {t:?}");
        assert!(jb.jitter() > ms(20), "jitter {:?}", jb.jitter());
    }

    #[test]
    fn target_bounded_and_shrinks_back() {
        let t0 = Instant::now();
        let cfg = JitterConfig {
            min_delay: ms(40),
            max_delay: ms(120),
            capacity: 64,
        };
        let mut jb = JitterBuffer::new(cfg);
        // Heavy jitter: alternating 0 / 150 ms extra delay.
        let mut arrivals: Vec<(u64, u16)> = (0..200u16)
            .map(|i| (i as u64 * 20 + if i % 2 == 1 { 150 } else { 0 }, i))
            .collect();
        // Then a perfectly smooth network for 60 s.
        arrivals.extend((200..3200u16).map(|i| (i as u64 * 20 + 150, i)));
        arrivals.sort();
        let mut max_target = Duration::ZERO;
        let mut out = Vec::new();
        let mut ai = 0;
        let mut t = 5;
        while t <= 3200 * 20 + 500 {
            while ai < arrivals.len() && arrivals[ai].0 <= t {
                let (at, seq) = arrivals[ai];
                jb.put(t0 + ms(at), SSRC, pkt(seq, seq as u32 * 160));
                ai += 1;
            }
            out.push(jb.get(t0 + ms(t)));
            max_target = max_target.max(jb.target_delay());
            t += 20;
        }
        assert!(max_target <= ms(120), "{max_target:?}");
        assert_eq!(max_target, ms(120), "heavy jitter drives the target to max");
        assert_eq!(
            jb.target_delay(),
            ms(40),
            "smooth network brings it back to min"
        );
        assert!(jb.stats().overflow_dropped > 0, "depth shrank by dropping");
        // The end of the smooth phase plays every packet.
        assert!(out[out.len() - 400..out.len() - 30]
            .iter()
            .all(|p| matches!(p, Playout::Frame(_))));
    }

    #[test]
    fn underrun_then_idle() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.put(t0, SSRC, pkt(0, 0));
        assert_eq!(seq_of(&jb.get(t0 + ms(25))), Some(0));
        assert!(
            jb.get(t0 + ms(45)).is_missing(),
            "mid-stream underrun conceals"
        );
        assert_eq!(jb.stats().underruns, 1);
        assert!(
            matches!(jb.get(t0 + ms(1000)), Playout::Empty),
            "idle stream is empty"
        );
        // The stream resumes (e.g. after DTX with a timestamp jump): re-buffers, then plays.
        jb.put(t0 + ms(1010), SSRC, pkt(1, 8000));
        assert!(!matches!(jb.get(t0 + ms(1015)), Playout::Frame(_)));
        assert_eq!(seq_of(&jb.get(t0 + ms(1100))), Some(1));
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn dtx_pause_does_not_raise_target_but_stall_does() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut t = 0u64;
        let mut seq = 0u16;
        let mut ts = 0u32;
        // Talkspurts of 1 s separated by 1 s of DTX (seq continuous, timestamp jumps).
        for _ in 0..10 {
            for _ in 0..50 {
                jb.put(t0 + ms(t), SSRC, pkt(seq, ts));
                jb.get(t0 + ms(t + 5));
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(160);
                t += 20;
            }
            for _ in 0..50 {
                jb.get(t0 + ms(t + 5));
                t += 20;
            }
            ts = ts.wrapping_add(8000);
        }
        assert_eq!(
            jb.target_delay(),
            ms(20),
            "DTX pauses are not network delay"
        );
        assert!(jb.stats().underruns >= 10);
        // A 100 ms network stall mid-talkspurt (timestamps continuous) raises the target.
        jb.put(t0 + ms(t), SSRC, pkt(seq, ts));
        jb.get(t0 + ms(t + 25));
        jb.get(t0 + ms(t + 45));
        jb.put(t0 + ms(t + 120), SSRC, pkt(seq.wrapping_add(1), ts + 160));
        assert!(jb.target_delay() >= ms(90), "{:?}", jb.target_delay());
    }

    #[test]
    fn stall_then_burst_resumes_without_dropping() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        // Every 20 ms, except that packets 50..56 are held 120 ms by the network and arrive
        // together with packet 56.
        let arrivals: Vec<(u64, u16)> = (0..150u16)
            .map(|i| {
                let at = i as u64 * 20;
                (if (50..56).contains(&i) { 56 * 20 } else { at }, i)
            })
            .collect();
        let out = simulate(&mut jb, t0, &arrivals, 5, 150 * 20 + 400);
        assert_eq!(
            frames(&out),
            (0..150).collect::<Vec<_>>(),
            "all played, in order"
        );
        assert_eq!(jb.stats().overflow_dropped, 0);
        assert_eq!(jb.stats().lost, 0);
        // The silence lasts as long as the stall (6 frames), not the stall plus a new target.
        let first = out.iter().position(|p| seq_of(p) == Some(49)).unwrap_or(0);
        let resumed = out.iter().position(|p| seq_of(p) == Some(50)).unwrap_or(0);
        assert!(
            resumed - first <= 7,
            "silent for {} ticks",
            resumed - first - 1
        );
    }

    #[test]
    fn g722_missing_samples_and_reset() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let f = |seq: u16| Frame {
            format: Format::G722,
            data: Bytes::from(vec![0u8; 160]),
            ts: seq as u32 * 160,
            seq,
        };
        jb.put(t0, SSRC, f(0));
        jb.put(t0 + ms(40), SSRC, f(2));
        assert!(jb.get(t0 + ms(25)).frame().is_some());
        assert!(matches!(
            jb.get(t0 + ms(45)),
            Playout::Missing {
                format: Format::G722,
                samples: 320
            }
        ));
        jb.reset();
        assert!(jb.is_empty());
        assert!(matches!(jb.get(t0 + ms(65)), Playout::Empty));
        assert_eq!(jb.put(t0 + ms(70), SSRC, f(3)), PutOutcome::Started);
    }
}
