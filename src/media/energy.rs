//! Frame energy (RMS, dBFS, Asterisk's mean-absolute measure), a silence detector that
//! behaves like Asterisk's DSP silence detection (`ast_dsp_silence`: WaitForSilence,
//! `RECORD FILE ... s=`, Record's silence option), and a talk detector with `TALK_DETECT`
//! semantics.

use super::frame::{Format, Frame};
use super::g711;

/// Asterisk's default `silencethreshold` (dsp.conf).
pub const DEFAULT_SILENCE_THRESHOLD: u32 = 256;
/// `TALK_DETECT` default: silence (ms) before talking is considered stopped.
pub const DEFAULT_TALK_SILENCE_MS: u64 = 2500;
/// `TALK_DETECT` default: sound (ms) before talking is considered started.
pub const DEFAULT_TALK_TALKING_MS: u64 = 160;
/// dBFS reported for digital silence.
pub const MIN_DBFS: f64 = -120.0;

/// Root mean square of the samples (0 for an empty slice).
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: i64 = samples.iter().map(|s| (*s as i64) * (*s as i64)).sum();
    (sum as f64 / samples.len() as f64).sqrt()
}

/// RMS level relative to full scale (a full-scale square wave is 0 dBFS, a full-scale sine
/// about -3 dBFS). Silence is [`MIN_DBFS`].
pub fn dbfs(samples: &[i16]) -> f64 {
    let r = rms(samples);
    if r <= 0.0 {
        return MIN_DBFS;
    }
    (20.0 * (r / 32768.0).log10()).max(MIN_DBFS)
}

/// Mean absolute sample value: the energy measure Asterisk's DSP compares with the
/// silence threshold.
pub fn mean_abs(samples: &[i16]) -> u32 {
    if samples.is_empty() {
        return 0;
    }
    let sum: u64 = samples.iter().map(|s| s.unsigned_abs() as u64).sum();
    (sum / samples.len() as u64) as u32
}

/// Largest absolute sample value.
pub fn peak(samples: &[i16]) -> u16 {
    samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0)
}

/// Mean absolute value of a frame's audio without decoding into a buffer. `None` for
/// formats that can't be decoded here (G.722) or an empty frame.
pub fn frame_mean_abs(f: &Frame) -> Option<u32> {
    let (sum, n): (u64, usize) = match f.format {
        Format::Ulaw => (
            f.data
                .iter()
                .map(|b| g711::ulaw_to_linear(*b).unsigned_abs() as u64)
                .sum(),
            f.data.len(),
        ),
        Format::Alaw => (
            f.data
                .iter()
                .map(|b| g711::alaw_to_linear(*b).unsigned_abs() as u64)
                .sum(),
            f.data.len(),
        ),
        Format::Slin8 | Format::Slin16 | Format::Slin48 => (
            f.data
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]).unsigned_abs() as u64)
                .sum(),
            f.data.len() / 2,
        ),
        Format::G722 => return None,
    };
    if n == 0 {
        return None;
    }
    Some((sum / n as u64) as u32)
}

/// Silence detection like Asterisk's `ast_dsp_silence`: a frame whose mean absolute value
/// is below the threshold is silent; the detector counts consecutive silence and noise in
/// milliseconds (each reset by the other).
#[derive(Debug, Clone)]
pub struct SilenceDetector {
    threshold: u32,
    rate: u32,
    silence_samples: u64,
    noise_samples: u64,
}

impl SilenceDetector {
    /// `threshold` as in dsp.conf's `silencethreshold` (mean absolute value, 16-bit scale);
    /// `rate` is the sample rate of the audio fed in.
    pub fn new(threshold: u32, rate: u32) -> SilenceDetector {
        SilenceDetector {
            threshold,
            rate: rate.max(1),
            silence_samples: 0,
            noise_samples: 0,
        }
    }

    pub fn threshold(&self) -> u32 {
        self.threshold
    }
    pub fn set_threshold(&mut self, t: u32) {
        self.threshold = t;
    }

    /// Feed slin samples; returns true when this chunk is silent.
    pub fn process(&mut self, samples: &[i16]) -> bool {
        self.account(mean_abs(samples), samples.len())
    }

    /// Feed a frame of any supported format (G.722 frames are ignored and return false).
    /// If the frame's rate differs from the detector's, durations use the frame's rate.
    pub fn process_frame(&mut self, f: &Frame) -> bool {
        match frame_mean_abs(f) {
            Some(e) => {
                // count in detector-rate samples
                let n = f.samples() as u64 * self.rate as u64 / f.format.rate() as u64;
                self.account(e, n as usize)
            }
            None => false,
        }
    }

    fn account(&mut self, energy: u32, n: usize) -> bool {
        if n == 0 {
            return self.silence_samples > 0;
        }
        if energy < self.threshold {
            self.silence_samples += n as u64;
            self.noise_samples = 0;
            true
        } else {
            self.noise_samples += n as u64;
            self.silence_samples = 0;
            false
        }
    }

    /// Consecutive silence so far, in ms.
    pub fn total_silence_ms(&self) -> u64 {
        self.silence_samples * 1000 / self.rate as u64
    }
    /// Consecutive non-silence so far, in ms.
    pub fn total_noise_ms(&self) -> u64 {
        self.noise_samples * 1000 / self.rate as u64
    }
    pub fn reset(&mut self) {
        self.silence_samples = 0;
        self.noise_samples = 0;
    }
}

/// Talking state changes, as `TALK_DETECT` raises `ChannelTalkingStart` / `ChannelTalkingStop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TalkEvent {
    Start,
    /// Talking stopped; `talk_ms` is how long the talking lasted (trailing silence excluded).
    Stop {
        talk_ms: u64,
    },
}

/// Talk detection: talking starts after `talking_ms` of continuous sound and stops after
/// `silence_ms` of continuous silence.
#[derive(Debug, Clone)]
pub struct TalkDetector {
    det: SilenceDetector,
    silence_ms: u64,
    talking_ms: u64,
    talking: bool,
    /// Sample clock (detector rate) and the sample at which talking began.
    clock: u64,
    start: u64,
}

impl TalkDetector {
    /// `TALK_DETECT(set)=silence_ms,talking_ms` with dsp.conf's `threshold`.
    pub fn new(threshold: u32, rate: u32, silence_ms: u64, talking_ms: u64) -> TalkDetector {
        TalkDetector {
            det: SilenceDetector::new(threshold, rate),
            silence_ms,
            talking_ms,
            talking: false,
            clock: 0,
            start: 0,
        }
    }

    /// Asterisk's defaults (threshold 256, 2500 ms silence, 160 ms talking).
    pub fn with_defaults(rate: u32) -> TalkDetector {
        TalkDetector::new(
            DEFAULT_SILENCE_THRESHOLD,
            rate,
            DEFAULT_TALK_SILENCE_MS,
            DEFAULT_TALK_TALKING_MS,
        )
    }

    pub fn is_talking(&self) -> bool {
        self.talking
    }

    /// Feed slin samples at the detector's rate.
    pub fn process(&mut self, samples: &[i16]) -> Option<TalkEvent> {
        self.det.process(samples);
        self.clock += samples.len() as u64;
        self.step()
    }

    /// Feed a frame of any supported format.
    pub fn process_frame(&mut self, f: &Frame) -> Option<TalkEvent> {
        self.det.process_frame(f);
        self.clock += f.samples() as u64 * self.det.rate as u64 / f.format.rate() as u64;
        self.step()
    }

    fn step(&mut self) -> Option<TalkEvent> {
        let rate = self.det.rate as u64;
        if self.talking {
            if self.det.total_silence_ms() >= self.silence_ms {
                self.talking = false;
                let end = self.clock - self.det.silence_samples.min(self.clock);
                let talk_ms = end.saturating_sub(self.start) * 1000 / rate;
                return Some(TalkEvent::Stop { talk_ms });
            }
        } else if self.det.total_noise_ms() >= self.talking_ms {
            self.talking = true;
            self.start = self.clock - self.det.noise_samples.min(self.clock);
            return Some(TalkEvent::Start);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::translate::encode_from_slin;

    fn sine(amp: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (std::f64::consts::TAU * 400.0 * i as f64 / 8000.0).sin()) as i16)
            .collect()
    }

    #[test]
    fn levels() {
        assert_eq!(rms(&[]), 0.0);
        assert_eq!(dbfs(&[0; 160]), MIN_DBFS);
        assert!((rms(&[1000, -1000, 1000, -1000]) - 1000.0).abs() < 1e-9);
        assert!(dbfs(&[i16::MIN; 10]).abs() < 1e-9);
        let s = sine(32767.0, 8000);
        assert!((dbfs(&s) + 3.01).abs() < 0.05, "{}", dbfs(&s));
        let s = sine(3276.7, 8000);
        assert!((dbfs(&s) + 23.01).abs() < 0.05);
        assert_eq!(mean_abs(&[100, -300]), 200);
        assert_eq!(peak(&[5, -32768, 7]), 32768);
        let f = Frame::new(Format::Ulaw, encode_from_slin(Format::Ulaw, &[1000; 160]));
        let e = frame_mean_abs(&f).unwrap();
        assert!((e as i32 - 1000).abs() < 40);
        assert_eq!(
            frame_mean_abs(&Frame::from_slin(Format::Slin16, &[-7; 4])),
            Some(7)
        );
        assert_eq!(
            frame_mean_abs(&Frame::new(Format::G722, bytes::Bytes::from_static(&[1]))),
            None
        );
    }

    #[test]
    fn silence_accounting_like_asterisk() {
        let mut d = SilenceDetector::new(DEFAULT_SILENCE_THRESHOLD, 8000);
        let loud = sine(5000.0, 160);
        let quiet = sine(200.0, 160); // mean abs ~127 < 256
        for _ in 0..10 {
            assert!(!d.process(&loud));
        }
        assert_eq!(d.total_noise_ms(), 200);
        assert_eq!(d.total_silence_ms(), 0);
        for i in 1..=30 {
            assert!(d.process(&quiet));
            assert_eq!(d.total_silence_ms(), 20 * i);
        }
        assert_eq!(d.total_noise_ms(), 0);
        d.process(&loud);
        assert_eq!(d.total_silence_ms(), 0);
        // frames in µ-law at 8 kHz and slin16 fed to a 16 kHz detector
        let mut d16 = SilenceDetector::new(256, 16000);
        let f = Frame::new(Format::Ulaw, encode_from_slin(Format::Ulaw, &[0; 160]));
        assert!(d16.process_frame(&f));
        assert!(d16.process_frame(&Frame::from_slin(Format::Slin16, &[0; 320])));
        assert_eq!(d16.total_silence_ms(), 40);
        d16.reset();
        assert_eq!(d16.total_silence_ms(), 0);
    }

    #[test]
    fn talk_detection() {
        let mut t = TalkDetector::with_defaults(8000);
        let loud = sine(5000.0, 160);
        let quiet = [0i16; 160];
        let mut events = Vec::new();
        // 1 s silence, 1 s talk, 3 s silence
        for k in 0..250 {
            let s: &[i16] = if (50..100).contains(&k) {
                &loud
            } else {
                &quiet
            };
            if let Some(e) = t.process(s) {
                events.push((k, e));
            }
        }
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0], (57, TalkEvent::Start)); // 8 frames = 160 ms
        assert_eq!(events[1], (224, TalkEvent::Stop { talk_ms: 1000 })); // after 2500 ms silence
        assert!(!t.is_talking());
        // short blips don't start talking
        let mut t = TalkDetector::new(256, 8000, 500, 160);
        for _ in 0..20 {
            assert_eq!(t.process(&loud), None);
            for _ in 0..10 {
                assert_eq!(t.process(&quiet), None);
            }
        }
        assert!(!t.is_talking());
    }
}
