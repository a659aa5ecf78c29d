//! Format translation: decode to signed linear at the source rate, resample when the rates
//! differ, encode to the target format.
//!
//! G.722 is not translated: no well-kept pure-Rust G.722 codec fits this crate, so
//! [`Translator::new`] refuses it (a G.722 -> G.722 pass-through is allowed).

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::frame::{Format, Frame};
use super::g711;
use super::resample::{Latency, ResampleError, Resampler};

/// Errors from setting up a translation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TranslateError {
    #[error("cannot translate {from} to {to}: the {codec} codec is not supported (no G.722 codec is built in)")]
    Unsupported {
        from: &'static str,
        to: &'static str,
        codec: &'static str,
    },
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

/// Whether `format` can be decoded and encoded here.
pub fn is_codec_supported(format: Format) -> bool {
    !matches!(format, Format::G722)
}

fn check_pair(from: Format, to: Format) -> Result<(), TranslateError> {
    for f in [from, to] {
        if !is_codec_supported(f) {
            return Err(TranslateError::Unsupported {
                from: from.name(),
                to: to.name(),
                codec: f.name(),
            });
        }
    }
    Ok(())
}

/// Decode `data` in `format` into `out` (cleared first). Unsupported formats (G.722) are an
/// error.
pub fn decode_into(format: Format, data: &[u8], out: &mut Vec<i16>) -> Result<(), TranslateError> {
    out.clear();
    let n = format.samples_in(data.len());
    match format {
        Format::Ulaw => {
            out.resize(n, 0);
            g711::ulaw_to_linear_slice(data, out);
        }
        Format::Alaw => {
            out.resize(n, 0);
            g711::alaw_to_linear_slice(data, out);
        }
        Format::Slin8 | Format::Slin16 | Format::Slin48 => {
            out.resize(n, 0);
            g711::slin_bytes_to_samples(data, out);
        }
        Format::G722 => {
            return Err(TranslateError::Unsupported {
                from: format.name(),
                to: "slin",
                codec: format.name(),
            })
        }
    }
    Ok(())
}

/// Encode `samples` to `format`, appending the payload to `out`.
pub fn encode_into(
    format: Format,
    samples: &[i16],
    out: &mut BytesMut,
) -> Result<(), TranslateError> {
    match format {
        Format::Ulaw => {
            out.reserve(samples.len());
            for s in samples {
                out.put_u8(g711::linear_to_ulaw(*s));
            }
        }
        Format::Alaw => {
            out.reserve(samples.len());
            for s in samples {
                out.put_u8(g711::linear_to_alaw(*s));
            }
        }
        Format::Slin8 | Format::Slin16 | Format::Slin48 => {
            out.reserve(samples.len() * 2);
            for s in samples {
                out.put_i16_le(*s);
            }
        }
        Format::G722 => {
            return Err(TranslateError::Unsupported {
                from: "slin",
                to: format.name(),
                codec: format.name(),
            })
        }
    }
    Ok(())
}

/// Decode a frame to signed linear samples at its own rate. A G.722 frame (unsupported)
/// decodes to silence of the right duration; use [`decode_into`] to get an error instead.
pub fn decode_to_slin(f: &Frame) -> Vec<i16> {
    let mut v = Vec::with_capacity(f.samples());
    if decode_into(f.format, &f.data, &mut v).is_err() {
        v.clear();
        v.resize(f.samples(), 0);
    }
    v
}

/// Encode signed linear samples (at `format`'s rate) to `format`. For G.722 (unsupported)
/// the payload is empty; use [`encode_into`] to get an error instead.
pub fn encode_from_slin(format: Format, samples: &[i16]) -> Bytes {
    let mut b = BytesMut::new();
    if encode_into(format, samples, &mut b).is_err() {
        return Bytes::new();
    }
    b.freeze()
}

/// Silence payload of `samples` samples in `format`.
pub(crate) fn silence_into(format: Format, samples: usize, out: &mut BytesMut) {
    let (byte, len) = match format {
        Format::Ulaw => (g711::ULAW_SILENCE, samples),
        Format::Alaw => (g711::ALAW_SILENCE, samples),
        Format::Slin8 | Format::Slin16 | Format::Slin48 => (0, samples * 2),
        // G.722 has no all-zero silence code; this path is never taken for supported pairs.
        Format::G722 => (0, samples / 2),
    };
    out.reserve(len);
    out.put_bytes(byte, len);
}

/// Initial output buffer size: room for several 60 ms frames at 48 kHz, so that in steady
/// state `BytesMut::reserve` reclaims the same allocation once older frames are dropped.
const OUT_BUF_CAPACITY: usize = 48 * 60 * 2 * 4;

/// A stateful translator from one format to another.
pub struct Translator {
    from: Format,
    to: Format,
    latency: Latency,
    resampler: Option<Resampler>,
    slin: Vec<i16>,
    resampled: Vec<i16>,
    out: BytesMut,
    /// (last input ts, last output ts) for ts continuity.
    ts: Option<(u32, u32)>,
}

impl std::fmt::Debug for Translator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Translator")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("resampler", &self.resampler)
            .finish()
    }
}

impl Translator {
    /// A translator from `from` to `to` (20 ms resampler chunks).
    pub fn new(from: Format, to: Format) -> Result<Translator, TranslateError> {
        Translator::with_latency(from, to, Latency::Standard)
    }

    /// A translator choosing the resampler chunking.
    pub fn with_latency(
        from: Format,
        to: Format,
        latency: Latency,
    ) -> Result<Translator, TranslateError> {
        if from != to {
            check_pair(from, to)?;
        }
        let resampler = if from != to && from.rate() != to.rate() {
            Some(Resampler::with_latency(from.rate(), to.rate(), latency)?)
        } else {
            None
        };
        Ok(Translator {
            from,
            to,
            latency,
            resampler,
            slin: Vec::with_capacity(2880),
            resampled: Vec::with_capacity(2880),
            out: BytesMut::with_capacity(OUT_BUF_CAPACITY),
            ts: None,
        })
    }

    pub fn from(&self) -> Format {
        self.from
    }
    pub fn to(&self) -> Format {
        self.to
    }
    /// True when frames are passed through unchanged.
    pub fn is_passthrough(&self) -> bool {
        self.from == self.to
    }
    /// Resampler delay in output samples (0 without resampling).
    pub fn delay_samples(&self) -> usize {
        self.resampler.as_ref().map_or(0, |r| r.delay_samples())
    }

    /// Forget history (resampler state and timestamp mapping).
    pub fn reset(&mut self) {
        if let Some(r) = self.resampler.as_mut() {
            r.reset();
        }
        self.ts = None;
    }

    /// Re-target the input side when a frame arrives in a different format than configured.
    fn reconfigure(&mut self, from: Format) -> Result<(), TranslateError> {
        if from != self.to {
            check_pair(from, self.to)?;
        }
        self.resampler = if from != self.to && from.rate() != self.to.rate() {
            Some(Resampler::with_latency(
                from.rate(),
                self.to.rate(),
                self.latency,
            )?)
        } else {
            None
        };
        self.from = from;
        self.ts = None;
        Ok(())
    }

    fn map_ts(&mut self, in_ts: u32, from_rate: u32) -> u32 {
        let to_rate = self.to.rate() as i64;
        let from_rate = from_rate as i64;
        let out = match self.ts {
            None => ((in_ts as u64 * to_rate as u64) / from_rate as u64) as u32,
            Some((last_in, last_out)) => {
                let d = in_ts.wrapping_sub(last_in) as i32 as i64;
                last_out.wrapping_add((d * to_rate / from_rate) as i32 as u32)
            }
        };
        self.ts = Some((in_ts, out));
        out
    }

    /// Convert one frame. Frames already in the target format pass through (cheap clone).
    /// A frame in a format other than `from` re-targets the translator; if that format can't
    /// be decoded (G.722) the result is silence of the same duration in the target format.
    /// With resampling, output comes in whole resampler chunks, so a frame shorter than a
    /// chunk may produce an empty payload (20 ms frames always produce 20 ms).
    pub fn convert(&mut self, f: &Frame) -> Frame {
        if f.format == self.to {
            return f.clone();
        }
        let in_rate = f.format.rate();
        let decodable = f.format == self.from || self.reconfigure(f.format).is_ok();
        let ts = self.map_ts(f.ts, in_rate);
        if !decodable {
            let samples = (f.samples() as u64 * self.to.rate() as u64 / in_rate as u64) as usize;
            silence_into(self.to, samples, &mut self.out);
            return Frame {
                format: self.to,
                data: self.out.split().freeze(),
                ts,
                seq: f.seq,
            };
        }
        // Supported formats only from here on (checked in new / reconfigure).
        let ok = decode_into(f.format, &f.data, &mut self.slin).is_ok();
        debug_assert!(ok);
        let samples: &[i16] = match self.resampler.as_mut() {
            Some(r) => {
                self.resampled.clear();
                if r.process(&self.slin, &mut self.resampled).is_err() {
                    // Cannot happen with the fixed buffer sizes; degrade to silence.
                    let n = self.slin.len() * self.to.rate() as usize / in_rate as usize;
                    self.resampled.clear();
                    self.resampled.resize(n, 0);
                }
                &self.resampled
            }
            None => &self.slin,
        };
        if encode_into(self.to, samples, &mut self.out).is_err() {
            silence_into(self.to, samples.len(), &mut self.out);
        }
        Frame {
            format: self.to,
            data: self.out.split().freeze(),
            ts,
            seq: f.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f64, amp: f64, n: usize, phase0: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (i + phase0) as f64 / rate as f64;
                (amp * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn codec_helpers() {
        let s = [0i16, 1000, -1000, 32767];
        let u = encode_from_slin(Format::Ulaw, &s);
        assert_eq!(u.len(), 4);
        assert_eq!(u[0], 0xFF);
        let a = encode_from_slin(Format::Alaw, &s);
        assert_eq!(a[0], 0xD5);
        let l = encode_from_slin(Format::Slin16, &s);
        assert_eq!(l.len(), 8);
        assert_eq!(decode_to_slin(&Frame::new(Format::Slin16, l)), s.to_vec());
        let back = decode_to_slin(&Frame::new(Format::Ulaw, u));
        assert_eq!(back[0], 0);
        assert!((back[1] - 1000).abs() < 40);
        // G.722: explicit errors from the fallible forms, silence/empty from the others.
        assert!(encode_from_slin(Format::G722, &s).is_empty());
        let g = Frame::new(Format::G722, Bytes::from_static(&[1, 2, 3, 4]));
        assert_eq!(decode_to_slin(&g), vec![0; 8]);
        let mut v = Vec::new();
        assert!(matches!(
            decode_into(Format::G722, &[1], &mut v),
            Err(TranslateError::Unsupported { .. })
        ));
    }

    #[test]
    fn media_state_can_move_between_tasks() {
        fn send<T: Send + 'static>() {}
        send::<Translator>();
        send::<Resampler>();
        send::<crate::media::file::Playback>();
        send::<crate::media::file::Recorder>();
        send::<crate::media::tone::ToneGen>();
        send::<crate::media::mix::Mixer>();
        send::<crate::media::energy::TalkDetector>();
    }

    #[test]
    fn g722_is_refused() {
        let e = Translator::new(Format::G722, Format::Ulaw).unwrap_err();
        assert!(e.to_string().contains("g722"), "{e}");
        assert!(Translator::new(Format::Slin16, Format::G722).is_err());
        assert!(Translator::new(Format::G722, Format::G722)
            .unwrap()
            .is_passthrough());
    }

    #[test]
    fn passthrough() {
        let mut t = Translator::new(Format::Ulaw, Format::Ulaw).unwrap();
        let f = Frame {
            format: Format::Ulaw,
            data: Bytes::from(vec![0x55u8; 160]),
            ts: 1234,
            seq: 7,
        };
        let o = t.convert(&f);
        assert_eq!(o.data, f.data);
        assert_eq!((o.ts, o.seq), (1234, 7));
    }

    #[test]
    fn ulaw_to_slin16_sizes_ts_and_content() {
        let mut t = Translator::new(Format::Ulaw, Format::Slin16).unwrap();
        let mut ts = 4_294_967_000u32; // wraps during the stream
        let mut out_ts = Vec::new();
        let mut pcm = Vec::new();
        for k in 0..25 {
            let s = sine(8000, 700.0, 9000.0, 160, k * 160);
            let f = Frame {
                format: Format::Ulaw,
                data: encode_from_slin(Format::Ulaw, &s),
                ts,
                seq: k as u16,
            };
            let o = t.convert(&f);
            assert_eq!(o.format, Format::Slin16);
            assert_eq!(o.samples(), 320);
            assert_eq!(o.seq, k as u16);
            out_ts.push(o.ts);
            pcm.extend(o.slin_samples());
            ts = ts.wrapping_add(160);
        }
        for w in out_ts.windows(2) {
            assert_eq!(w[1].wrapping_sub(w[0]), 320);
        }
        // The 700 Hz tone survives (zero crossings at 16 kHz after the filter delay).
        let steady = &pcm[t.delay_samples() + 320..];
        let crossings = steady.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
        let expected = 700.0 * steady.len() as f64 / 16000.0;
        assert!(
            (crossings as f64 - expected).abs() <= 2.0,
            "{crossings} vs {expected}"
        );
    }

    #[test]
    fn slin48_to_alaw_and_back() {
        let mut down = Translator::new(Format::Slin48, Format::Alaw).unwrap();
        let mut up = Translator::new(Format::Alaw, Format::Slin48).unwrap();
        for k in 0..10u32 {
            let s = sine(48000, 1000.0, 8000.0, 960, (k * 960) as usize);
            let f = Frame {
                format: Format::Slin48,
                data: encode_from_slin(Format::Slin48, &s),
                ts: k * 960,
                seq: 0,
            };
            let a = down.convert(&f);
            assert_eq!(a.format, Format::Alaw);
            assert_eq!(a.data.len(), 160);
            assert_eq!(a.ts, k * 160);
            let b = up.convert(&a);
            assert_eq!(b.samples(), 960);
            assert_eq!(b.ts, k * 960);
        }
    }

    #[test]
    fn reconfigures_on_format_change() {
        let mut t = Translator::new(Format::Ulaw, Format::Slin8).unwrap();
        let f = Frame::new(Format::Alaw, Bytes::from(vec![0xD5u8; 160]));
        let o = t.convert(&f);
        assert_eq!(t.from(), Format::Alaw);
        assert_eq!(o.slin_samples(), vec![8i16; 160]);
        // An undecodable frame becomes silence of the same duration.
        let g = Frame::new(Format::G722, Bytes::from(vec![0u8; 160]));
        let o = t.convert(&g);
        assert_eq!(o.format, Format::Slin8);
        assert_eq!(o.samples(), 160);
        assert!(o.slin_samples().iter().all(|s| *s == 0));
    }

    #[test]
    fn output_buffer_is_reused() {
        let mut t = Translator::new(Format::Slin8, Format::Ulaw).unwrap();
        let f = Frame::from_slin(Format::Slin8, &[0i16; 160]);
        let first = t.convert(&f);
        let p1 = first.data.as_ptr();
        drop(first);
        for _ in 0..300 {
            let _ = t.convert(&f);
        }
        // After frames are dropped the same allocation is reclaimed.
        let again = t.convert(&f);
        let base = p1 as usize;
        let p = again.data.as_ptr() as usize;
        assert!(
            p >= base && p < base + OUT_BUF_CAPACITY,
            "buffer was reallocated"
        );
    }
}
