//! RFC 4733 telephone-events (DTMF): payload format, a receiver that turns the packet stream of
//! an event into `Begin`/`End` once each, and a sender that paces the packets of one digit.

use std::time::{Duration, Instant};

use super::packet::PacketError;

/// Default volume for generated events (-10 dBm0, as Asterisk sends).
pub const DEFAULT_VOLUME: u8 = 10;

/// The 4-byte telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPayload {
    pub event: u8,
    pub end: bool,
    /// Power level as -dBm0 (0..=63).
    pub volume: u8,
    /// Duration so far in RTP timestamp units.
    pub duration: u16,
}

impl DtmfPayload {
    pub const LEN: usize = 4;

    /// Parses the first event of a payload (extra bytes are ignored; the R bit is ignored).
    pub fn parse(d: &[u8]) -> Result<DtmfPayload, PacketError> {
        if d.len() < Self::LEN {
            return Err(PacketError::TooShort {
                len: d.len(),
                need: Self::LEN,
            });
        }
        Ok(DtmfPayload {
            event: d[0],
            end: d[1] & 0x80 != 0,
            volume: d[1] & 0x3f,
            duration: u16::from_be_bytes([d[2], d[3]]),
        })
    }

    pub fn to_bytes(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            if self.end { 0x80 } else { 0 } | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }
}

/// Maps a DTMF digit to its event code: `0-9`, `*`=10, `#`=11, `A-D`=12..15, flash `X`=16
/// (Asterisk's letter for flash). Letters are case-insensitive.
pub fn digit_to_event(digit: char) -> Option<u8> {
    Some(match digit.to_ascii_uppercase() {
        c @ '0'..='9' => c as u8 - b'0',
        '*' => 10,
        '#' => 11,
        c @ 'A'..='D' => c as u8 - b'A' + 12,
        'X' => 16,
        _ => return None,
    })
}

/// The digit for an event code (inverse of [`digit_to_event`]); `None` for non-DTMF events.
pub fn event_to_digit(event: u8) -> Option<char> {
    Some(match event {
        0..=9 => (b'0' + event) as char,
        10 => '*',
        11 => '#',
        12..=15 => (b'A' + event - 12) as char,
        16 => 'X',
        _ => return None,
    })
}

/// What the receiver reports, once per event each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfEvent {
    Begin { digit: char },
    End { digit: char, duration_ms: u32 },
}

#[derive(Debug, Clone)]
struct RxEvent {
    ts: u32,
    event: u8,
    digit: char,
    ended: bool,
    /// Units from earlier segments of a long event (RFC 4733 §2.5.2.3).
    base: u32,
    duration: u32,
    rate: u32,
    last_at: Instant,
}

impl RxEvent {
    fn duration_ms(&self) -> u32 {
        ((self.base as u64 + self.duration as u64) * 1000 / self.rate.max(1) as u64) as u32
    }
}

/// Receive side: de-duplicates updates and the end retransmissions; ends an event whose end
/// packets were all lost after `end_timeout` without packets, or when the next event starts.
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    current: Option<RxEvent>,
    end_timeout: Duration,
}

impl DtmfReceiver {
    pub fn new(end_timeout: Duration) -> DtmfReceiver {
        DtmfReceiver {
            current: None,
            end_timeout,
        }
    }

    /// Handles one telephone-event packet (`ts`/`marker` from its RTP header, clock `rate`).
    pub fn handle(
        &mut self,
        now: Instant,
        ts: u32,
        marker: bool,
        payload: &[u8],
        rate: u32,
        emit: &mut impl FnMut(DtmfEvent),
    ) -> Result<(), PacketError> {
        let p = DtmfPayload::parse(payload)?;
        let Some(digit) = event_to_digit(p.event) else {
            return Ok(()); // a tone or line event we do not report
        };
        if let Some(cur) = &mut self.current {
            let delta = ts.wrapping_sub(cur.ts) as i32;
            if delta == 0 && cur.event == p.event {
                if !cur.ended {
                    cur.duration = cur.duration.max(p.duration as u32);
                    cur.last_at = now;
                    if p.end {
                        cur.ended = true;
                        emit(DtmfEvent::End {
                            digit: cur.digit,
                            duration_ms: cur.duration_ms(),
                        });
                    }
                }
                return Ok(()); // an end retransmission or a stale update
            }
            if delta < 0 {
                return Ok(()); // a late packet of an earlier event
            }
            // Next segment of a long event: same event, no marker, starting where the last ended.
            if !cur.ended && cur.event == p.event && !marker && delta as u32 <= cur.duration + rate
            {
                cur.base += delta as u32;
                cur.ts = ts;
                cur.duration = p.duration as u32;
                cur.last_at = now;
                if p.end {
                    cur.ended = true;
                    emit(DtmfEvent::End {
                        digit: cur.digit,
                        duration_ms: cur.duration_ms(),
                    });
                }
                return Ok(());
            }
        }
        self.flush(emit);
        let ev = RxEvent {
            ts,
            event: p.event,
            digit,
            ended: p.end,
            base: 0,
            duration: p.duration as u32,
            rate,
            last_at: now,
        };
        emit(DtmfEvent::Begin { digit });
        if ev.ended {
            emit(DtmfEvent::End {
                digit,
                duration_ms: ev.duration_ms(),
            });
        }
        self.current = Some(ev);
        Ok(())
    }

    /// Ends an event whose end packets never came.
    pub fn poll(&mut self, now: Instant, emit: &mut impl FnMut(DtmfEvent)) {
        if let Some(deadline) = self.deadline() {
            if now >= deadline {
                self.flush(emit);
            }
        }
    }

    /// When [`poll`](Self::poll) must next be called, if an event is in progress.
    pub fn deadline(&self) -> Option<Instant> {
        self.current
            .as_ref()
            .filter(|c| !c.ended)
            .map(|c| c.last_at + self.end_timeout)
    }

    /// Ends the event in progress now (SSRC change, stream stop). Keeps its timestamp so that
    /// late packets of it stay ignored.
    pub fn flush(&mut self, emit: &mut impl FnMut(DtmfEvent)) {
        if let Some(cur) = &mut self.current {
            if !cur.ended {
                cur.ended = true;
                emit(DtmfEvent::End {
                    digit: cur.digit,
                    duration_ms: cur.duration_ms(),
                });
            }
        }
    }

    /// Forgets everything (new stream).
    pub fn reset(&mut self) {
        self.current = None;
    }

    pub fn in_progress(&self) -> Option<char> {
        self.current.as_ref().filter(|c| !c.ended).map(|c| c.digit)
    }
}

/// One telephone-event packet to send: the session adds seq, timestamp, SSRC and PT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPacket {
    pub marker: bool,
    pub payload: DtmfPayload,
}

/// Send side for one digit: a first packet with the marker bit, an update every `interval` with
/// the growing duration, then the final (end) packet sent three times, one `interval` apart.
/// All packets of the event share one RTP timestamp (the session's).
#[derive(Debug, Clone)]
pub struct DtmfSender {
    digit: char,
    event: u8,
    volume: u8,
    total: u32,
    step: u32,
    interval: Duration,
    start: Instant,
    /// Index of the next update.
    next_update: u32,
    started: bool,
    ends_sent: u8,
    next_at: Instant,
}

impl DtmfSender {
    /// A sender for `digit` lasting `duration_ms` (at least one interval, at most 0xFFFF units)
    /// at telephone-event clock `rate`. `None` when `digit` is not a DTMF digit.
    pub fn new(
        now: Instant,
        digit: char,
        duration_ms: u32,
        rate: u32,
        interval: Duration,
    ) -> Option<DtmfSender> {
        let event = digit_to_event(digit)?;
        let interval = if interval.is_zero() {
            Duration::from_millis(20)
        } else {
            interval
        };
        let step = super::duration_to_units(interval, rate).clamp(1, 0xffff);
        let total = ((duration_ms as u64 * rate as u64 / 1000).min(0xffff) as u32).max(step);
        Some(DtmfSender {
            digit: digit.to_ascii_uppercase(),
            event,
            volume: DEFAULT_VOLUME,
            total,
            step,
            interval,
            start: now,
            next_update: 0,
            started: false,
            ends_sent: 0,
            next_at: now,
        })
    }

    pub fn digit(&self) -> char {
        self.digit
    }

    /// Total duration of the event in RTP units.
    pub fn duration_units(&self) -> u32 {
        self.total
    }

    pub fn is_done(&self) -> bool {
        self.ends_sent >= 3
    }

    /// When the next packet is due; `None` once all packets were sent.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.is_done()).then_some(self.next_at)
    }

    /// The packet due at `now`, if any. Updates missed because the caller was late are skipped
    /// (the next update carries the duration for `now`).
    pub fn poll(&mut self, now: Instant) -> Option<DtmfPacket> {
        if self.is_done() || now < self.next_at {
            return None;
        }
        let marker = !self.started;
        self.started = true;
        if self.ends_sent > 0 {
            self.ends_sent += 1;
            self.next_at += self.interval;
            return Some(self.packet(marker, self.total, true));
        }
        let elapsed = (now - self.start).as_nanos() / self.interval.as_nanos().max(1);
        let k = self.next_update.max(elapsed.min(u32::MAX as u128) as u32);
        let duration = ((k as u64 + 1) * self.step as u64).min(self.total as u64) as u32;
        let end = duration >= self.total;
        self.next_update = k + 1;
        self.next_at = self.start + self.interval * self.next_update;
        if end {
            self.ends_sent = 1;
        }
        Some(self.packet(marker, duration, end))
    }

    fn packet(&self, marker: bool, duration: u32, end: bool) -> DtmfPacket {
        DtmfPacket {
            marker,
            payload: DtmfPayload {
                event: self.event,
                end,
                volume: self.volume,
                duration: duration as u16,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn pl(event: u8, end: bool, duration: u16) -> [u8; 4] {
        DtmfPayload {
            event,
            end,
            volume: 10,
            duration,
        }
        .to_bytes()
    }

    #[test]
    fn payload_roundtrip_and_errors() {
        let p = DtmfPayload {
            event: 11,
            end: true,
            volume: 63,
            duration: 0x1234,
        };
        assert_eq!(p.to_bytes(), [11, 0x80 | 63, 0x12, 0x34]);
        assert_eq!(DtmfPayload::parse(&p.to_bytes()).unwrap(), p);
        // R bit ignored.
        assert_eq!(DtmfPayload::parse(&[1, 0x40 | 5, 0, 1]).unwrap().volume, 5);
        assert!(DtmfPayload::parse(&[1, 2, 3]).is_err());
    }

    #[test]
    fn digit_mapping() {
        for (d, e) in [
            ('0', 0),
            ('9', 9),
            ('*', 10),
            ('#', 11),
            ('A', 12),
            ('d', 15),
            ('X', 16),
        ] {
            assert_eq!(digit_to_event(d), Some(e));
            assert_eq!(event_to_digit(e), Some(d.to_ascii_uppercase()));
        }
        assert_eq!(digit_to_event('E'), None);
        assert_eq!(event_to_digit(17), None);
    }

    fn collect(
        rx: &mut DtmfReceiver,
        now: Instant,
        ts: u32,
        marker: bool,
        p: [u8; 4],
    ) -> Vec<DtmfEvent> {
        let mut v = Vec::new();
        rx.handle(now, ts, marker, &p, 8000, &mut |e| v.push(e))
            .unwrap();
        v
    }

    #[test]
    fn receive_dedups_end_retransmissions() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(ms(500));
        assert_eq!(
            collect(&mut rx, t0, 1000, true, pl(5, false, 160)),
            vec![DtmfEvent::Begin { digit: '5' }]
        );
        // Retransmitted start and updates: nothing new.
        assert!(collect(&mut rx, t0, 1000, true, pl(5, false, 160)).is_empty());
        assert!(collect(&mut rx, t0 + ms(20), 1000, false, pl(5, false, 320)).is_empty());
        assert!(collect(&mut rx, t0 + ms(40), 1000, false, pl(5, false, 480)).is_empty());
        assert_eq!(
            collect(&mut rx, t0 + ms(60), 1000, false, pl(5, true, 800)),
            vec![DtmfEvent::End {
                digit: '5',
                duration_ms: 100
            }]
        );
        assert!(collect(&mut rx, t0 + ms(80), 1000, false, pl(5, true, 800)).is_empty());
        assert!(collect(&mut rx, t0 + ms(100), 1000, false, pl(5, true, 800)).is_empty());
        assert_eq!(rx.deadline(), None);
        // Same digit again: new timestamp = new event.
        assert_eq!(
            collect(&mut rx, t0 + ms(300), 2600, true, pl(5, false, 160)),
            vec![DtmfEvent::Begin { digit: '5' }]
        );
        // A late end packet of the previous event is ignored.
        assert!(collect(&mut rx, t0 + ms(301), 1000, false, pl(5, true, 800)).is_empty());
    }

    #[test]
    fn receive_only_end_packets() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(ms(500));
        assert_eq!(
            collect(&mut rx, t0, 0, false, pl(11, true, 1600)),
            vec![
                DtmfEvent::Begin { digit: '#' },
                DtmfEvent::End {
                    digit: '#',
                    duration_ms: 200
                }
            ]
        );
        assert!(collect(&mut rx, t0, 0, false, pl(11, true, 1600)).is_empty());
    }

    #[test]
    fn receive_lost_end_packets_ended_by_next_event_or_timeout() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(ms(500));
        collect(&mut rx, t0, 100, true, pl(1, false, 160));
        collect(&mut rx, t0 + ms(20), 100, false, pl(1, false, 320));
        // Next digit starts: the first one ends with the duration seen so far.
        assert_eq!(
            collect(&mut rx, t0 + ms(200), 2000, true, pl(2, false, 160)),
            vec![
                DtmfEvent::End {
                    digit: '1',
                    duration_ms: 40
                },
                DtmfEvent::Begin { digit: '2' }
            ]
        );
        assert_eq!(rx.deadline(), Some(t0 + ms(700)));
        let mut v = Vec::new();
        rx.poll(t0 + ms(699), &mut |e| v.push(e));
        assert!(v.is_empty());
        rx.poll(t0 + ms(700), &mut |e| v.push(e));
        assert_eq!(
            v,
            vec![DtmfEvent::End {
                digit: '2',
                duration_ms: 20
            }]
        );
        assert_eq!(rx.in_progress(), None);
        // Its real end arriving later is a duplicate.
        assert!(collect(&mut rx, t0 + ms(800), 2000, false, pl(2, true, 800)).is_empty());
    }

    #[test]
    fn receive_ignores_non_dtmf_events_and_short_payloads() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(ms(500));
        assert!(collect(&mut rx, t0, 0, true, pl(32, false, 160)).is_empty());
        assert!(rx.handle(t0, 0, true, &[1, 2], 8000, &mut |_| {}).is_err());
    }

    #[test]
    fn receive_long_event_segments() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(ms(500));
        collect(&mut rx, t0, 0, true, pl(0, false, 0xff00));
        // Next segment starts at ts + 0xffff, no marker.
        assert!(collect(&mut rx, t0 + ms(20), 0xffff, false, pl(0, false, 160)).is_empty());
        assert_eq!(
            collect(&mut rx, t0 + ms(40), 0xffff, false, pl(0, true, 8001)),
            vec![DtmfEvent::End {
                digit: '0',
                duration_ms: ((0xffff + 8001) * 1000 / 8000) as u32
            }]
        );
    }

    #[test]
    fn receive_timestamp_wraparound() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(ms(500));
        collect(&mut rx, t0, u32::MAX - 100, true, pl(3, true, 800));
        assert_eq!(
            collect(&mut rx, t0 + ms(200), 500, true, pl(4, false, 160)),
            vec![DtmfEvent::Begin { digit: '4' }]
        );
    }

    fn run_sender(mut s: DtmfSender, t0: Instant) -> Vec<(u64, DtmfPacket)> {
        let mut out = Vec::new();
        let mut t = 0;
        while !s.is_done() && t < 10_000 {
            while let Some(p) = s.poll(t0 + ms(t)) {
                out.push((t, p));
            }
            t += 1;
        }
        out
    }

    #[test]
    fn sender_sequence_for_100ms() {
        let t0 = Instant::now();
        let s = DtmfSender::new(t0, '7', 100, 8000, ms(20)).unwrap();
        let pkts = run_sender(s, t0);
        let summary: Vec<(u64, bool, bool, u16)> = pkts
            .iter()
            .map(|(t, p)| (*t, p.marker, p.payload.end, p.payload.duration))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, true, false, 160),
                (20, false, false, 320),
                (40, false, false, 480),
                (60, false, false, 640),
                (80, false, true, 800),
                (100, false, true, 800),
                (120, false, true, 800),
            ]
        );
        assert!(pkts
            .iter()
            .all(|(_, p)| p.payload.event == 7 && p.payload.volume == DEFAULT_VOLUME));
    }

    #[test]
    fn sender_short_and_clamped_durations() {
        let t0 = Instant::now();
        let s = DtmfSender::new(t0, '#', 5, 8000, ms(20)).unwrap();
        let pkts = run_sender(s, t0);
        assert_eq!(pkts.len(), 3);
        assert!(pkts[0].1.marker && pkts[0].1.payload.end && pkts[0].1.payload.duration == 160);
        let s = DtmfSender::new(t0, '1', 60_000, 8000, ms(20)).unwrap();
        assert_eq!(s.duration_units(), 0xffff);
        assert!(DtmfSender::new(t0, 'Z', 100, 8000, ms(20)).is_none());
    }

    #[test]
    fn sender_skips_stale_updates_when_polled_late() {
        let t0 = Instant::now();
        let mut s = DtmfSender::new(t0, '1', 200, 8000, ms(20)).unwrap();
        assert!(s.poll(t0).unwrap().marker);
        // Caller wakes 70 ms late: one update with the current duration, not four.
        let p = s.poll(t0 + ms(70)).unwrap();
        assert_eq!(p.payload.duration, 4 * 160);
        assert!(s.poll(t0 + ms(70)).is_none());
        assert_eq!(s.deadline(), Some(t0 + ms(80)));
        // First poll late still carries the marker.
        let mut s = DtmfSender::new(t0, '1', 200, 8000, ms(20)).unwrap();
        let p = s.poll(t0 + ms(45)).unwrap();
        assert!(p.marker);
        assert_eq!(p.payload.duration, 3 * 160);
    }

    #[test]
    fn sender_output_feeds_receiver() {
        let t0 = Instant::now();
        let s = DtmfSender::new(t0, 'B', 160, 8000, ms(20)).unwrap();
        let mut rx = DtmfReceiver::new(ms(500));
        let mut events = Vec::new();
        for (t, p) in run_sender(s, t0) {
            rx.handle(
                t0 + ms(t),
                4242,
                p.marker,
                &p.payload.to_bytes(),
                8000,
                &mut |e| events.push(e),
            )
            .unwrap();
        }
        assert_eq!(
            events,
            vec![
                DtmfEvent::Begin { digit: 'B' },
                DtmfEvent::End {
                    digit: 'B',
                    duration_ms: 160
                }
            ]
        );
    }
}
