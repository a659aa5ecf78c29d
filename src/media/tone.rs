//! Tone generation in Asterisk's tone-list syntax (indications.conf, `PlayTones`).
//!
//! A list is comma (or `|`) separated parts; each part is one of
//! `f1+f2/ms`, `f1+f2`, `f1*f2/ms` (f1 amplitude-modulated by f2), `f1*f2`, `f1/ms`, `f1`,
//! or the MIDI-note forms `M60+M64/ms`, `M60/ms`, ... A frequency of 0 is silence; a part
//! without a duration plays forever. A part prefixed by `!` is played once; the list loops
//! from the first part without `!`, and a list made only of `!` parts ends after one pass.
//! (Asterisk's syntax has no `%` form.)

use bytes::{BufMut, BytesMut};
use thiserror::Error;

use super::frame::{Format, Frame};

/// Asterisk's default tone volume (per frequency, peak), "-8 dB".
pub const DEFAULT_VOLUME: i16 = 7219;
/// Peak amplitude of a 0 dBm0 sine in 16-bit linear (Asterisk's Milliwatt app).
pub const MILLIWATT_VOLUME: i16 = 23255;
/// The tone Asterisk's `Milliwatt()` plays (1004 Hz at [`MILLIWATT_VOLUME`]).
pub const MILLIWATT_TONE: &str = "1004/1000";
/// The classic digital milliwatt: one period of a 1000 Hz 0 dBm0 sine in µ-law at 8 kHz
/// (Asterisk's `Milliwatt(o)`).
pub const MILLIWATT_ULAW: [u8; 8] = [0x1e, 0x0b, 0x0b, 0x1e, 0x9e, 0x8b, 0x8b, 0x9e];

/// Errors from parsing a tone list.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ToneError {
    #[error("invalid tone part '{0}' (expected f1[+f2|*f2][/ms] or M<note>...)")]
    BadPart(String),
    #[error("empty tone list")]
    Empty,
    #[error("tone rate {0} Hz is not a slin rate (8000, 16000, 48000)")]
    UnsupportedRate(u32),
}

/// One part of a tone list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TonePart {
    pub freq1: f64,
    pub freq2: f64,
    /// `f1*f2`: f1 amplitude-modulated by f2.
    pub modulate: bool,
    /// Duration in ms; 0 = forever.
    pub duration_ms: u32,
    /// Played once (`!` prefix), not part of the loop.
    pub once: bool,
}

/// A parsed tone list.
#[derive(Debug, Clone, PartialEq)]
pub struct ToneSpec {
    pub parts: Vec<TonePart>,
    /// Index the cadence loops back to (first part without `!`); `None`: play once.
    pub repeat_from: Option<usize>,
}

/// MIDI note number -> Hz (A4 = note 69 = 440 Hz).
fn midi_to_hz(note: u32) -> Option<f64> {
    if note > 127 {
        return None;
    }
    Some(440.0 * 2f64.powf((note as f64 - 69.0) / 12.0))
}

fn parse_freq(s: &str) -> Option<(f64, bool)> {
    let s = s.trim();
    if let Some(n) = s.strip_prefix('M').or_else(|| s.strip_prefix('m')) {
        let note: u32 = n.trim().parse().ok()?;
        return midi_to_hz(note).map(|f| (f, true));
    }
    let f: f64 = s.parse().ok()?;
    if !(0.0..=96_000.0).contains(&f) || !f.is_finite() {
        return None;
    }
    Some((f, false))
}

fn parse_part(raw: &str) -> Result<TonePart, ToneError> {
    let bad = || ToneError::BadPart(raw.to_string());
    let mut s = raw.trim();
    let once = if let Some(r) = s.strip_prefix('!') {
        s = r.trim_start();
        true
    } else {
        false
    };
    let (freqs, dur) = match s.split_once('/') {
        Some((f, d)) => (f, Some(d.trim())),
        None => (s, None),
    };
    let duration_ms = match dur {
        Some(d) => d.parse::<u32>().map_err(|_| bad())?,
        None => 0,
    };
    let (f1, f2, modulate) = if let Some((a, b)) = freqs.split_once('+') {
        (a, Some(b), false)
    } else if let Some((a, b)) = freqs.split_once('*') {
        (a, Some(b), true)
    } else {
        (freqs, None, false)
    };
    let (freq1, m1) = parse_freq(f1).ok_or_else(bad)?;
    let freq2 = match f2 {
        Some(f2) => {
            let (f, m2) = parse_freq(f2).ok_or_else(bad)?;
            if m1 != m2 {
                // Asterisk accepts M-notes only for both or neither frequency.
                return Err(bad());
            }
            f
        }
        None => 0.0,
    };
    Ok(TonePart {
        freq1,
        freq2,
        modulate,
        duration_ms,
        once,
    })
}

impl ToneSpec {
    /// Parse an Asterisk tone list such as `440+480/2000,0/4000` or `!350+440/100,!0/100,350+440`.
    pub fn parse(list: &str) -> Result<ToneSpec, ToneError> {
        let sep = if list.contains('|') && !list.contains(',') {
            '|'
        } else {
            ','
        };
        let mut parts = Vec::new();
        let mut repeat_from = None;
        for raw in list.split(sep) {
            if raw.trim().is_empty() {
                continue;
            }
            let p = parse_part(raw)?;
            if !p.once && repeat_from.is_none() {
                repeat_from = Some(parts.len());
            }
            parts.push(p);
        }
        if parts.is_empty() {
            return Err(ToneError::Empty);
        }
        Ok(ToneSpec { parts, repeat_from })
    }

    /// A DTMF digit: `duration_ms` of the pair then stop, or continuous with `None`.
    pub fn dtmf(digit: char, duration_ms: Option<u32>) -> Option<ToneSpec> {
        let (lo, hi) = dtmf_freqs(digit)?;
        let part = TonePart {
            freq1: lo as f64,
            freq2: hi as f64,
            modulate: false,
            duration_ms: duration_ms.unwrap_or(0),
            once: duration_ms.is_some(),
        };
        Some(ToneSpec {
            parts: vec![part],
            repeat_from: if duration_ms.is_some() { None } else { Some(0) },
        })
    }

    /// Length of one pass through the list in ms (`None` if a part plays forever).
    pub fn cycle_ms(&self) -> Option<u64> {
        let mut t = 0u64;
        for p in &self.parts {
            if p.duration_ms == 0 {
                return None;
            }
            t += p.duration_ms as u64;
        }
        Some(t)
    }
}

/// DTMF row/column frequencies for `0-9 * # A-D` (case-insensitive letters).
pub fn dtmf_freqs(digit: char) -> Option<(u32, u32)> {
    const ROWS: [u32; 4] = [697, 770, 852, 941];
    const COLS: [u32; 4] = [1209, 1336, 1477, 1633];
    let (r, c) = match digit.to_ascii_uppercase() {
        '1' => (0, 0),
        '2' => (0, 1),
        '3' => (0, 2),
        'A' => (0, 3),
        '4' => (1, 0),
        '5' => (1, 1),
        '6' => (1, 2),
        'B' => (1, 3),
        '7' => (2, 0),
        '8' => (2, 1),
        '9' => (2, 2),
        'C' => (2, 3),
        '*' => (3, 0),
        '0' => (3, 1),
        '#' => (3, 2),
        'D' => (3, 3),
        _ => return None,
    };
    Some((ROWS[r], COLS[c]))
}

/// Indications for country `us` (Asterisk's indications.conf).
pub mod us {
    pub const RINGCADENCE: [u32; 2] = [2000, 4000];
    pub const DIAL: &str = "350+440";
    pub const BUSY: &str = "480+620/500,0/500";
    pub const RING: &str = "440+480/2000,0/4000";
    pub const CONGESTION: &str = "480+620/250,0/250";
    pub const CALLWAITING: &str = "440/300,0/10000";
    pub const DIALRECALL: &str =
        "!350+440/100,!0/100,!350+440/100,!0/100,!350+440/100,!0/100,350+440";
    pub const RECORD: &str = "1400/500,0/15000";
    pub const INFO: &str = "!950/330,!1400/330,!1800/330,0";
    pub const STUTTER: &str = "!350+440/100,!0/100,!350+440/100,!0/100,!350+440/100,!0/100,!350+440/100,!0/100,!350+440/100,!0/100,!350+440/100,!0/100,350+440";

    /// Look an indication up by its indications.conf name.
    pub fn indication(name: &str) -> Option<&'static str> {
        Some(match name {
            "dial" => DIAL,
            "busy" => BUSY,
            "ring" => RING,
            "congestion" => CONGESTION,
            "callwaiting" => CALLWAITING,
            "dialrecall" => DIALRECALL,
            "record" => RECORD,
            "info" => INFO,
            "stutter" => STUTTER,
            _ => return None,
        })
    }
}

/// Phase-accumulator oscillator (phase in cycles, kept in [0, 1) for precision).
#[derive(Debug, Clone, Copy, Default)]
struct Osc {
    phase: f64,
    step: f64,
}

impl Osc {
    fn new(freq: f64, rate: u32) -> Osc {
        Osc {
            phase: 0.0,
            step: freq / rate as f64,
        }
    }
    #[inline]
    fn next(&mut self) -> f64 {
        let v = (self.phase * std::f64::consts::TAU).sin();
        self.phase += self.step;
        if self.phase >= 1.0 {
            self.phase -= self.phase.floor();
        }
        v
    }
}

/// Generates a tone list as signed linear audio, looping the cadence.
#[derive(Debug, Clone)]
pub struct ToneGen {
    spec: ToneSpec,
    rate: u32,
    format: Format,
    volume: f64,
    idx: usize,
    /// Samples already played of the current part.
    pos: u64,
    /// Current part's length in samples (0 = forever).
    part_len: u64,
    o1: Osc,
    o2: Osc,
    finished: bool,
    /// Samples generated so far (frame timestamps).
    ts: u32,
    seq: u16,
    /// Reused payload buffer (frames split off it; reclaimed once they are dropped).
    out: BytesMut,
}

impl ToneGen {
    /// A generator for `spec` at `rate` (8000, 16000 or 48000) and [`DEFAULT_VOLUME`].
    pub fn new(spec: ToneSpec, rate: u32) -> Result<ToneGen, ToneError> {
        ToneGen::with_volume(spec, rate, DEFAULT_VOLUME)
    }

    /// Parse `list` and build a generator.
    pub fn parse(list: &str, rate: u32) -> Result<ToneGen, ToneError> {
        ToneGen::new(ToneSpec::parse(list)?, rate)
    }

    /// A generator with a peak `volume` per frequency (Asterisk's `vol`; `<= 0` = default).
    pub fn with_volume(spec: ToneSpec, rate: u32, volume: i16) -> Result<ToneGen, ToneError> {
        let format = Format::slin_for_rate(rate).ok_or(ToneError::UnsupportedRate(rate))?;
        if spec.parts.is_empty() {
            return Err(ToneError::Empty);
        }
        let volume = if volume <= 0 { DEFAULT_VOLUME } else { volume } as f64;
        let mut g = ToneGen {
            spec,
            rate,
            format,
            volume,
            idx: 0,
            pos: 0,
            part_len: 0,
            o1: Osc::default(),
            o2: Osc::default(),
            finished: false,
            ts: 0,
            seq: 0,
            out: BytesMut::with_capacity(rate as usize / 50 * 2 * 16),
        };
        g.start_part(0);
        Ok(g)
    }

    /// The milliwatt test tone as Asterisk's `Milliwatt()` plays it.
    pub fn milliwatt(rate: u32) -> Result<ToneGen, ToneError> {
        ToneGen::with_volume(ToneSpec::parse(MILLIWATT_TONE)?, rate, MILLIWATT_VOLUME)
    }

    fn start_part(&mut self, idx: usize) {
        self.idx = idx;
        self.pos = 0;
        let p = self.spec.parts[idx];
        self.part_len = p.duration_ms as u64 * self.rate as u64 / 1000;
        self.o1 = Osc::new(p.freq1, self.rate);
        self.o2 = Osc::new(p.freq2, self.rate);
    }

    /// Advance to the next part, looping or finishing at the end of the list.
    fn advance(&mut self) {
        let next = self.idx + 1;
        if next < self.spec.parts.len() {
            self.start_part(next);
        } else if let Some(r) = self.spec.repeat_from {
            self.start_part(r);
        } else {
            self.finished = true;
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }
    /// The slin format of the frames produced.
    pub fn format(&self) -> Format {
        self.format
    }
    /// Samples in one 20 ms frame.
    pub fn frame_samples(&self) -> usize {
        self.rate as usize / 50
    }
    /// True once a play-once list has ended.
    pub fn is_finished(&self) -> bool {
        self.finished
    }
    pub fn spec(&self) -> &ToneSpec {
        &self.spec
    }

    /// Fill `out` with the next samples. Returns how many are tone; after a play-once list
    /// ends, the rest of `out` is silence. Never allocates.
    pub fn fill(&mut self, out: &mut [i16]) -> usize {
        let mut i = 0;
        while i < out.len() && !self.finished {
            // part_len == 0 means "forever"; a finite part has at least 8 samples.
            if self.part_len != 0 && self.pos >= self.part_len {
                self.advance();
                continue;
            }
            let p = self.spec.parts[self.idx];
            let n = if self.part_len == 0 {
                out.len() - i
            } else {
                ((self.part_len - self.pos) as usize).min(out.len() - i)
            };
            let vol = self.volume;
            for o in &mut out[i..i + n] {
                let a = if p.freq1 > 0.0 { self.o1.next() } else { 0.0 };
                let b = if p.freq2 > 0.0 { self.o2.next() } else { 0.0 };
                let v = if p.modulate {
                    // Asterisk: f1 scaled by 0.9 * (1 - f2), i.e. 0..1.8 x volume
                    vol * a * 0.9 * (1.0 - b)
                } else {
                    vol * (a + b)
                };
                *o = v.round().clamp(-32768.0, 32767.0) as i16;
            }
            self.pos += n as u64;
            i += n;
        }
        out[i..].fill(0);
        self.ts = self.ts.wrapping_add(i as u32);
        i
    }

    /// The next 20 ms slin frame (the last one of a play-once list may be shorter), or
    /// `None` once a play-once list has ended.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.finished {
            return None;
        }
        let mut buf = [0i16; 960];
        let n = self.frame_samples();
        let ts = self.ts;
        let got = self.fill(&mut buf[..n]);
        if got == 0 {
            return None;
        }
        self.out.reserve(got * 2);
        for s in &buf[..got] {
            self.out.put_i16_le(*s);
        }
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        Some(Frame {
            format: self.format,
            data: self.out.split().freeze(),
            ts,
            seq,
        })
    }
}

/// Plays the classic digital milliwatt pattern ([`MILLIWATT_ULAW`]) as µ-law.
#[derive(Debug, Clone, Default)]
pub struct DigitalMilliwatt {
    pos: usize,
}

impl DigitalMilliwatt {
    pub fn new() -> DigitalMilliwatt {
        DigitalMilliwatt { pos: 0 }
    }
    /// Fill `out` with the repeating 8-byte pattern, continuing where the last call ended.
    pub fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            *b = MILLIWATT_ULAW[self.pos];
            self.pos = (self.pos + 1) % MILLIWATT_ULAW.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711::ulaw_to_linear;

    fn goertzel(x: &[i16], rate: u32, freq: f64) -> f64 {
        let w = std::f64::consts::TAU * freq / rate as f64;
        let c = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s = v as f64 + c * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        (s1 * s1 + s2 * s2 - c * s1 * s2).max(0.0).sqrt() * 2.0 / x.len() as f64
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn parse_forms() {
        let s = ToneSpec::parse("440+480/2000,0/4000").unwrap();
        assert_eq!(s.parts.len(), 2);
        assert_eq!(s.parts[0].freq1, 440.0);
        assert_eq!(s.parts[0].freq2, 480.0);
        assert_eq!(s.parts[0].duration_ms, 2000);
        assert_eq!(s.parts[1].freq1, 0.0);
        assert_eq!(s.repeat_from, Some(0));
        assert_eq!(s.cycle_ms(), Some(6000));

        let s = ToneSpec::parse(us::DIALRECALL).unwrap();
        assert_eq!(s.repeat_from, Some(6));
        assert!(s.parts[..6].iter().all(|p| p.once));
        assert_eq!(s.cycle_ms(), None);

        let s = ToneSpec::parse("!950/330, !1400/330 ,!1800/330").unwrap();
        assert_eq!(s.repeat_from, None);
        let s = ToneSpec::parse("425*50/1000|0/4000").unwrap();
        assert!(s.parts[0].modulate);
        assert_eq!(s.parts[0].freq2, 50.0);
        assert_eq!(s.parts.len(), 2);
        let s = ToneSpec::parse("M69+M81/100,1004").unwrap();
        assert!((s.parts[0].freq1 - 440.0).abs() < 1e-9);
        assert!((s.parts[0].freq2 - 880.0).abs() < 1e-9);
        assert_eq!(s.parts[1].duration_ms, 0);

        for bad in [
            "",
            " , ",
            "abc",
            "440+/100",
            "440/x",
            "M200",
            "M60+440",
            "-5/100",
            "440+480/-1",
        ] {
            assert!(ToneSpec::parse(bad).is_err(), "{bad:?} should fail");
        }
        assert!(ToneGen::parse("440", 11025).is_err());
    }

    #[test]
    fn ring_cadence_loops() {
        let mut g = ToneGen::parse(us::RING, 8000).unwrap();
        let mut frames = Vec::new();
        for _ in 0..400 {
            frames.push(g.next_frame().unwrap());
        }
        // 2 s tone (100 frames), 4 s silence (200 frames), then tone again.
        let on = |f: &Frame| rms(&f.slin_samples()) > 1000.0;
        assert!(frames[..100].iter().all(on));
        assert!(frames[100..300].iter().all(|f| !on(f)));
        assert!(frames[300..400].iter().all(on));
        assert_eq!(frames[1].ts, 160);
        assert_eq!(frames[399].ts, 399 * 160);
        assert_eq!(frames[5].format, Format::Slin8);
        // both frequencies present at the default volume (1 s window resolves 440 vs 480)
        let s: Vec<i16> = frames[..50].iter().flat_map(|f| f.slin_samples()).collect();
        let a = goertzel(&s, 8000, 440.0);
        let b = goertzel(&s, 8000, 480.0);
        assert!(
            (a - DEFAULT_VOLUME as f64).abs() < 800.0,
            "440 amplitude {a}"
        );
        assert!(
            (b - DEFAULT_VOLUME as f64).abs() < 800.0,
            "480 amplitude {b}"
        );
    }

    #[test]
    fn busy_cadence_at_16k_and_mid_frame_switch() {
        // congestion: 250 ms on/off -> switches in the middle of the 13th frame
        let mut g = ToneGen::parse(us::CONGESTION, 16000).unwrap();
        let mut all = Vec::new();
        for _ in 0..50 {
            let f = g.next_frame().unwrap();
            assert_eq!(f.samples(), 320);
            all.extend(f.slin_samples());
        }
        let ms = |a: usize, b: usize| &all[a * 16..b * 16];
        assert!(rms(ms(0, 249)) > 1000.0);
        assert!(rms(ms(251, 499)) == 0.0);
        assert!(rms(ms(501, 749)) > 1000.0);
        assert!(rms(ms(751, 999)) == 0.0);
    }

    #[test]
    fn play_once_list_ends() {
        let mut g = ToneGen::parse("!1000/50,!0/30", 8000).unwrap();
        let mut n = 0;
        let mut total = 0;
        while let Some(f) = g.next_frame() {
            n += 1;
            total += f.samples();
            assert!(n < 100);
        }
        assert_eq!(total, 640); // 80 ms
        assert_eq!(n, 4); // 20+20+20+20
        assert!(g.is_finished());
        let mut buf = [1i16; 10];
        assert_eq!(g.fill(&mut buf), 0);
        assert_eq!(buf, [0; 10]);
    }

    #[test]
    fn dtmf_frequencies() {
        const ALL: [u32; 8] = [697, 770, 852, 941, 1209, 1336, 1477, 1633];
        for d in "0123456789*#ABCD".chars() {
            let spec = ToneSpec::dtmf(d, Some(100)).unwrap();
            let mut g = ToneGen::new(spec, 8000).unwrap();
            let mut s = Vec::new();
            while let Some(f) = g.next_frame() {
                s.extend(f.slin_samples());
            }
            assert_eq!(s.len(), 800);
            let mut p: Vec<(u32, f64)> = ALL
                .iter()
                .map(|f| (*f, goertzel(&s, 8000, *f as f64)))
                .collect();
            p.sort_by(|a, b| b.1.total_cmp(&a.1));
            let (lo, hi) = dtmf_freqs(d).unwrap();
            let mut top = [p[0].0, p[1].0];
            top.sort();
            assert_eq!(top, [lo, hi], "digit {d}");
            assert!(p[2].1 < p[1].1 / 10.0, "digit {d}: leakage {p:?}");
        }
        assert_eq!(dtmf_freqs('5'), Some((770, 1336)));
        assert_eq!(dtmf_freqs('x'), None);
        let cont = ToneSpec::dtmf('1', None).unwrap();
        let mut g = ToneGen::new(cont, 8000).unwrap();
        for _ in 0..500 {
            assert!(g.next_frame().is_some());
        }
    }

    #[test]
    fn milliwatt() {
        // The 8-byte pattern is one period of 1000 Hz at 0 dBm0.
        let mut m = DigitalMilliwatt::new();
        let mut u = [0u8; 160];
        m.fill(&mut u[..5]);
        m.fill(&mut u[5..]);
        assert_eq!(&u[8..16], &MILLIWATT_ULAW);
        assert_eq!(u[5], MILLIWATT_ULAW[5]);
        let s: Vec<i16> = u.iter().map(|b| ulaw_to_linear(*b)).collect();
        let a = goertzel(&s, 8000, 1000.0);
        assert!((a - MILLIWATT_VOLUME as f64).abs() < 1000.0, "{a}");
        // The 1004 Hz tone of Milliwatt() has the same level.
        let mut g = ToneGen::milliwatt(8000).unwrap();
        let f = g.next_frame().unwrap().slin_samples();
        let a = goertzel(&f, 8000, 1004.0);
        assert!((a - MILLIWATT_VOLUME as f64).abs() < 300.0, "{a}");
        for _ in 0..200 {
            assert!(g.next_frame().is_some());
        }
    }

    #[test]
    fn modulated_and_volume() {
        let mut g =
            ToneGen::with_volume(ToneSpec::parse("1000*100").unwrap(), 8000, 10000).unwrap();
        let mut s = [0i16; 800];
        assert_eq!(g.fill(&mut s), 800);
        let peak = s.iter().map(|v| v.unsigned_abs()).max().unwrap();
        assert!(peak > 15000 && peak <= 18000, "{peak}");
        let mut g = ToneGen::parse("us_bogus", 8000);
        assert!(g.is_err());
        g = ToneGen::parse(us::indication("dial").unwrap(), 48000);
        let f = g.unwrap().next_frame().unwrap();
        assert_eq!(f.samples(), 960);
        assert_eq!(f.format, Format::Slin48);
        assert!(us::indication("nope").is_none());
    }
}
