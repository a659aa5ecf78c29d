//! Small audio helpers private to AEAP: per-sample decoding (G.711 from media::g711), a minimal energy detector for
//! barge-in, and payload conversion to signed linear for engines served by the AEAP server.
//! (The speech layer has its own VAD in src/speech/vad.rs; these stay minimal and private.)

use crate::media::g711::{alaw_to_linear, ulaw_to_linear};
use crate::media::Format;

/// Calls `f` with each decoded sample of a payload; formats that need a real decoder (G.722)
/// yield nothing. Returns the number of samples visited.
pub(crate) fn for_each_sample(format: Format, data: &[u8], mut f: impl FnMut(i16)) -> usize {
    match format {
        Format::Ulaw => {
            data.iter().for_each(|b| f(ulaw_to_linear(*b)));
            data.len()
        }
        Format::Alaw => {
            data.iter().for_each(|b| f(alaw_to_linear(*b)));
            data.len()
        }
        Format::Slin8 | Format::Slin16 | Format::Slin48 => {
            data.chunks_exact(2)
                .for_each(|c| f(i16::from_le_bytes([c[0], c[1]])));
            data.len() / 2
        }
        Format::G722 => 0,
    }
}

/// Speech-onset detector on frame energy: fires once when the mean absolute level stays above
/// `max(MIN_LEVEL, 3 x noise floor)` for `ONSET_MS`. Adapts the noise floor while quiet.
#[derive(Debug, Clone)]
pub(crate) struct EnergyVad {
    noise: Option<f32>,
    voiced_ms: u32,
    fired: bool,
}

const MIN_LEVEL: f32 = 400.0;
const ONSET_MS: u32 = 60;

impl EnergyVad {
    pub(crate) fn new() -> EnergyVad {
        EnergyVad {
            noise: None,
            voiced_ms: 0,
            fired: false,
        }
    }

    /// New utterance: the detector may fire again (the noise floor is kept).
    pub(crate) fn reset(&mut self) {
        self.voiced_ms = 0;
        self.fired = false;
    }

    /// Feed one frame; true exactly once per utterance, at the onset.
    pub(crate) fn process(&mut self, format: Format, data: &[u8]) -> bool {
        if self.fired {
            return false;
        }
        let mut sum: u64 = 0;
        let n = for_each_sample(format, data, |s| sum += (s as i32).unsigned_abs() as u64);
        if n == 0 {
            return false;
        }
        let level = sum as f32 / n as f32;
        let ms = (n as u64 * 1000 / format.rate() as u64) as u32;
        let noise = *self.noise.get_or_insert(level.min(MIN_LEVEL));
        let threshold = MIN_LEVEL.max(noise * 3.0);
        if level > threshold {
            self.voiced_ms += ms.max(1);
            if self.voiced_ms >= ONSET_MS {
                self.fired = true;
                return true;
            }
        } else {
            self.voiced_ms = 0;
            self.noise = Some(noise * 0.95 + level * 0.05);
        }
        false
    }
}

/// Converts payloads to signed linear at 8 or 16 kHz for engines that do not take the wire
/// codec (G.711 decode; 8 -> 16 kHz by linear interpolation, carrying the last sample across
/// frames). The output buffer is reused by the caller.
#[derive(Debug, Clone)]
pub(crate) struct ToSlin {
    from: Format,
    to: Format,
    last: i16,
}

impl ToSlin {
    /// `None` when the conversion is not supported.
    pub(crate) fn new(from: Format, to: Format) -> Option<ToSlin> {
        let src_ok = matches!(from, Format::Ulaw | Format::Alaw | Format::Slin8);
        let dst_ok = matches!(to, Format::Slin8 | Format::Slin16);
        (src_ok && dst_ok && from != to).then_some(ToSlin { from, to, last: 0 })
    }

    pub(crate) fn target(&self) -> Format {
        self.to
    }

    pub(crate) fn convert(&mut self, data: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let up = self.to == Format::Slin16;
        let mut last = self.last;
        for_each_sample(self.from, data, |s| {
            if up {
                let mid = ((last as i32 + s as i32) / 2) as i16;
                out.extend_from_slice(&mid.to_le_bytes());
            }
            out.extend_from_slice(&s.to_le_bytes());
            last = s;
        });
        self.last = last;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(amp: f32, ms: u32) -> Vec<u8> {
        let n = 8 * ms as usize;
        let mut v = Vec::with_capacity(n * 2);
        for i in 0..n {
            let s = (amp * (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 8000.0).sin()) as i16;
            v.extend_from_slice(&s.to_le_bytes());
        }
        v
    }

    #[test]
    fn vad_fires_once_on_sustained_speech_only() {
        let mut vad = EnergyVad::new();
        let quiet = tone(50.0, 20);
        let loud = tone(8000.0, 20);
        for _ in 0..20 {
            assert!(!vad.process(Format::Slin8, &quiet));
        }
        // A single loud click (20 ms) is not speech.
        assert!(!vad.process(Format::Slin8, &loud));
        assert!(!vad.process(Format::Slin8, &quiet));
        assert!(!vad.process(Format::Slin8, &loud));
        assert!(!vad.process(Format::Slin8, &loud));
        assert!(vad.process(Format::Slin8, &loud));
        assert!(!vad.process(Format::Slin8, &loud));
        vad.reset();
        assert!(!vad.process(Format::Slin8, &loud));
        assert!(!vad.process(Format::Slin8, &loud));
        assert!(vad.process(Format::Slin8, &loud));
    }

    #[test]
    fn vad_on_ulaw_silence_never_fires() {
        let mut vad = EnergyVad::new();
        let silence = vec![0xFFu8; 160];
        for _ in 0..100 {
            assert!(!vad.process(Format::Ulaw, &silence));
        }
        assert!(!vad.process(Format::G722, &[0u8; 160]));
    }

    #[test]
    fn to_slin_conversions() {
        assert!(ToSlin::new(Format::Ulaw, Format::Ulaw).is_none());
        assert!(ToSlin::new(Format::G722, Format::Slin8).is_none());
        let mut c = ToSlin::new(Format::Ulaw, Format::Slin8).unwrap();
        let mut out = Vec::new();
        c.convert(&[0xFF, 0x80], &mut out);
        assert_eq!(out, [0i16.to_le_bytes(), 32124i16.to_le_bytes()].concat());
        let mut c = ToSlin::new(Format::Slin8, Format::Slin16).unwrap();
        let input: Vec<u8> = [100i16, 200].iter().flat_map(|s| s.to_le_bytes()).collect();
        c.convert(&input, &mut out);
        let got: Vec<i16> = out
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(got, vec![50, 100, 150, 200]);
        c.convert(&input, &mut out);
        let got: Vec<i16> = out
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(got, vec![150, 100, 150, 200]);
    }
}
