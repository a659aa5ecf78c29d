//! Sample-rate conversion of mono i16 audio (8k <-> 16k <-> 48k, and other common rates),
//! wrapping rubato's synchronous FFT resampler.
//!
//! The resampler works in fixed chunks (20 ms by default, 5 ms for [`Latency::Low`]). Input of
//! any length is accepted: whole chunks are converted straight from the caller's slice and a
//! partial chunk is kept until the next call, so a stream of 20 ms frames yields exactly one
//! 20 ms frame per call. All buffers are allocated in the constructor; `process*` never
//! allocates unless the caller's output `Vec` has to grow.

use rubato::{FftFixedInOut, Resampler as _};
use thiserror::Error;

/// Errors from building or running a resampler.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ResampleError {
    #[error("unsupported sample rate {0} Hz (expected 1000..=192000)")]
    UnsupportedRate(u32),
    #[error("cannot build a resampler from {from} Hz to {to} Hz: {reason}")]
    Construction { from: u32, to: u32, reason: String },
    #[error("resampling failed: {0}")]
    Process(String),
}

/// Chunking / latency trade-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Latency {
    /// 20 ms chunks: best filter, delay of 10 ms (half a chunk).
    #[default]
    Standard,
    /// 5 ms chunks: shorter filter, delay of 2.5 ms.
    Low,
}

impl Latency {
    /// Chunk length in milliseconds.
    pub fn chunk_ms(self) -> u32 {
        match self {
            Latency::Standard => 20,
            Latency::Low => 5,
        }
    }
}

const SCALE_IN: f32 = 1.0 / 32768.0;

#[inline]
fn to_i16(x: f32) -> i16 {
    let v = (x * 32768.0).round();
    if v >= 32767.0 {
        32767
    } else if v <= -32768.0 {
        -32768
    } else {
        v as i16
    }
}

struct Engine {
    inner: FftFixedInOut<f32>,
    chunk_in: usize,
    chunk_out: usize,
    in_buf: [Vec<f32>; 1],
    out_buf: [Vec<f32>; 1],
    pending: Vec<i16>,
}

impl Engine {
    /// Convert one whole chunk (`input.len() == chunk_in`), appending to `out`.
    fn run_chunk(&mut self, input: &[i16], out: &mut Vec<i16>) -> Result<(), ResampleError> {
        for (d, s) in self.in_buf[0].iter_mut().zip(input) {
            *d = *s as f32 * SCALE_IN;
        }
        let (_, produced) = self
            .inner
            .process_into_buffer(&self.in_buf, &mut self.out_buf, None)
            .map_err(|e| ResampleError::Process(e.to_string()))?;
        out.extend(self.out_buf[0][..produced].iter().map(|x| to_i16(*x)));
        Ok(())
    }
}

/// A mono i16 resampler between two fixed rates.
pub struct Resampler {
    from: u32,
    to: u32,
    latency: Latency,
    /// `None` when `from == to` (pass-through).
    engine: Option<Engine>,
    frame_out: Vec<i16>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("latency", &self.latency)
            .field("delay_samples", &self.delay_samples())
            .finish()
    }
}

fn check_rate(r: u32) -> Result<(), ResampleError> {
    if (1000..=192_000).contains(&r) {
        Ok(())
    } else {
        Err(ResampleError::UnsupportedRate(r))
    }
}

impl Resampler {
    /// A resampler with 20 ms chunks.
    pub fn new(from: u32, to: u32) -> Result<Resampler, ResampleError> {
        Resampler::with_latency(from, to, Latency::Standard)
    }

    /// A resampler with the given chunking.
    pub fn with_latency(from: u32, to: u32, latency: Latency) -> Result<Resampler, ResampleError> {
        check_rate(from)?;
        check_rate(to)?;
        let frame_cap = (to as usize / 50 + 1) * 2;
        if from == to {
            return Ok(Resampler {
                from,
                to,
                latency,
                engine: None,
                frame_out: Vec::with_capacity(frame_cap),
            });
        }
        let want_in = (from as usize * latency.chunk_ms() as usize) / 1000;
        let inner = FftFixedInOut::<f32>::new(from as usize, to as usize, want_in.max(1), 1)
            .map_err(|e| ResampleError::Construction {
                from,
                to,
                reason: e.to_string(),
            })?;
        let chunk_in = inner.input_frames_next();
        let chunk_out = inner.output_frames_next();
        Ok(Resampler {
            from,
            to,
            latency,
            engine: Some(Engine {
                inner,
                chunk_in,
                chunk_out,
                in_buf: [vec![0.0; chunk_in]],
                out_buf: [vec![0.0; chunk_out]],
                pending: Vec::with_capacity(chunk_in),
            }),
            frame_out: Vec::with_capacity(frame_cap.max(chunk_out * 2)),
        })
    }

    pub fn from_rate(&self) -> u32 {
        self.from
    }
    pub fn to_rate(&self) -> u32 {
        self.to
    }
    pub fn latency(&self) -> Latency {
        self.latency
    }
    /// True when the rates are equal and samples are copied unchanged.
    pub fn is_passthrough(&self) -> bool {
        self.engine.is_none()
    }
    /// Input samples per internal chunk (0 for pass-through).
    pub fn chunk_in(&self) -> usize {
        self.engine.as_ref().map_or(0, |e| e.chunk_in)
    }
    /// Output samples per internal chunk (0 for pass-through).
    pub fn chunk_out(&self) -> usize {
        self.engine.as_ref().map_or(0, |e| e.chunk_out)
    }

    /// Delay of the filter in output samples (at `to_rate`): an impulse at input sample 0
    /// appears at output sample `delay_samples()`.
    pub fn delay_samples(&self) -> usize {
        self.engine.as_ref().map_or(0, |e| e.inner.output_delay())
    }

    /// Delay in milliseconds (filter delay only; a partial chunk held back adds to it).
    pub fn delay_ms(&self) -> f64 {
        self.delay_samples() as f64 * 1000.0 / self.to as f64
    }

    /// Input samples currently held back waiting for a whole chunk.
    pub fn pending_samples(&self) -> usize {
        self.engine.as_ref().map_or(0, |e| e.pending.len())
    }

    /// Resample `input`, appending the output to `out`; returns the number of samples
    /// appended. Output appears in whole chunks; a trailing partial chunk of input is kept.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) -> Result<usize, ResampleError> {
        let start = out.len();
        let Some(e) = self.engine.as_mut() else {
            out.extend_from_slice(input);
            return Ok(input.len());
        };
        let mut rest = input;
        if !e.pending.is_empty() {
            let need = e.chunk_in - e.pending.len();
            let take = need.min(rest.len());
            e.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if e.pending.len() == e.chunk_in {
                // Move the buffer out so run_chunk can borrow the engine mutably.
                let pend = std::mem::take(&mut e.pending);
                let r = e.run_chunk(&pend, out);
                e.pending = pend;
                e.pending.clear();
                r?;
            }
        }
        let mut chunks = rest.chunks_exact(e.chunk_in);
        for c in &mut chunks {
            e.run_chunk(c, out)?;
        }
        e.pending.extend_from_slice(chunks.remainder());
        Ok(out.len() - start)
    }

    /// Resample one frame into an internal buffer and return it. For a 20 ms input frame and
    /// a 20 ms (or 5 ms) chunk size this is exactly one 20 ms output frame.
    pub fn process_frame(&mut self, input: &[i16]) -> Result<&[i16], ResampleError> {
        let mut buf = std::mem::take(&mut self.frame_out);
        buf.clear();
        let r = self.process(input, &mut buf);
        self.frame_out = buf;
        r?;
        Ok(&self.frame_out)
    }

    /// End of stream: pad the held-back input with silence and push enough silence through
    /// to drain the filter delay. Appends to `out`; returns the count appended.
    pub fn flush(&mut self, out: &mut Vec<i16>) -> Result<usize, ResampleError> {
        let delay = self.delay_samples();
        let Some(e) = self.engine.as_mut() else {
            return Ok(0);
        };
        let start = out.len();
        let zeros = vec![0i16; e.chunk_in];
        if !e.pending.is_empty() {
            let mut pend = std::mem::take(&mut e.pending);
            pend.resize(e.chunk_in, 0);
            let r = e.run_chunk(&pend, out);
            pend.clear();
            e.pending = pend;
            r?;
        }
        let extra = delay.div_ceil(e.chunk_out);
        for _ in 0..extra {
            e.run_chunk(&zeros, out)?;
        }
        Ok(out.len() - start)
    }

    /// Forget all history (after a seek or a stream change).
    pub fn reset(&mut self) {
        if let Some(e) = self.engine.as_mut() {
            e.inner.reset();
            e.pending.clear();
        }
    }
}

/// Resample a whole buffer offline, compensating the filter delay: output sample `i`
/// corresponds to input time `i / to`. The result has `ceil(len * to / from)` samples.
pub fn resample_all(from: u32, to: u32, input: &[i16]) -> Result<Vec<i16>, ResampleError> {
    let mut r = Resampler::new(from, to)?;
    if r.is_passthrough() {
        return Ok(input.to_vec());
    }
    let expected = (input.len() as u64 * to as u64).div_ceil(from as u64) as usize;
    let delay = r.delay_samples();
    let mut out = Vec::with_capacity(expected + delay + 2 * r.chunk_out());
    r.process(input, &mut out)?;
    r.flush(&mut out)?;
    let start = delay.min(out.len());
    out.drain(..start);
    out.resize(expected, 0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f64, amp: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()) as i16
            })
            .collect()
    }

    /// Goertzel power of `freq` in `x`, normalised by length.
    fn goertzel(x: &[i16], rate: u32, freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / rate as f64;
        let c = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s = v as f64 + c * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len() as f64 * x.len() as f64)
    }

    /// Frequency estimate from positive-going zero crossings.
    fn zc_freq(x: &[i16], rate: u32) -> f64 {
        let mut first = None;
        let mut last = 0;
        let mut n = 0;
        for i in 1..x.len() {
            if x[i - 1] < 0 && x[i] >= 0 {
                if first.is_none() {
                    first = Some(i);
                } else {
                    n += 1;
                }
                last = i;
            }
        }
        n as f64 * rate as f64 / (last - first.unwrap_or(0)) as f64
    }

    fn run_stream(from: u32, to: u32, lat: Latency, freq: f64) -> (Vec<i16>, usize) {
        let mut r = Resampler::with_latency(from, to, lat).unwrap();
        let input = sine(from, freq, 10000.0, from as usize); // 1 s
        let frame_in = from as usize / 50;
        let frame_out = to as usize / 50;
        let mut all = Vec::new();
        for f in input.chunks(frame_in) {
            let out = r.process_frame(f).unwrap();
            assert_eq!(out.len(), frame_out, "{from}->{to} {lat:?}");
            all.extend_from_slice(out);
        }
        (all, r.delay_samples())
    }

    #[test]
    fn frame_counts_and_frequency() {
        for &(from, to) in &[
            (8000, 16000),
            (16000, 8000),
            (8000, 48000),
            (48000, 8000),
            (16000, 48000),
            (48000, 16000),
        ] {
            for lat in [Latency::Standard, Latency::Low] {
                let (out, delay) = run_stream(from, to, lat, 1000.0);
                assert_eq!(out.len(), to as usize);
                let steady = &out[delay + to as usize / 50..];
                let f = zc_freq(steady, to);
                assert!((f - 1000.0).abs() < 2.0, "{from}->{to} {lat:?}: {f} Hz");
                // amplitude preserved within 1 dB
                let peak = steady.iter().map(|v| v.unsigned_abs()).max().unwrap() as f64;
                assert!(
                    (peak / 10000.0 - 1.0).abs() < 0.12,
                    "{from}->{to} {lat:?}: peak {peak}"
                );
                let on = goertzel(steady, to, 1000.0);
                let off = goertzel(steady, to, 1500.0);
                assert!(on > off * 1000.0, "{from}->{to}");
            }
        }
    }

    #[test]
    fn delays() {
        let r = Resampler::new(8000, 16000).unwrap();
        assert_eq!(r.chunk_in(), 160);
        assert_eq!(r.chunk_out(), 320);
        assert_eq!(r.delay_samples(), 160);
        assert!((r.delay_ms() - 10.0).abs() < 1e-9);
        let r = Resampler::with_latency(16000, 8000, Latency::Low).unwrap();
        assert_eq!(r.chunk_in(), 80);
        assert_eq!(r.chunk_out(), 40);
        assert_eq!(r.delay_samples(), 20);
        let r = Resampler::new(8000, 8000).unwrap();
        assert!(r.is_passthrough());
        assert_eq!(r.delay_samples(), 0);
        assert!(matches!(
            Resampler::new(0, 8000),
            Err(ResampleError::UnsupportedRate(0))
        ));
        assert!(Resampler::new(8000, 1_000_000).is_err());
    }

    #[test]
    fn measured_delay_matches_report() {
        // An impulse shows up at the reported delay.
        let mut r = Resampler::new(8000, 16000).unwrap();
        let mut input = vec![0i16; 480];
        input[0] = 20000;
        let mut out = Vec::new();
        r.process(&input, &mut out).unwrap();
        let (peak_at, _) = out
            .iter()
            .enumerate()
            .max_by_key(|(_, v)| v.unsigned_abs())
            .unwrap();
        assert_eq!(peak_at, r.delay_samples());
    }

    #[test]
    fn downsampling_removes_alias() {
        // 5 kHz at 16k cannot be represented at 8k; it must not fold to 3 kHz.
        let (out, delay) = run_stream(16000, 8000, Latency::Standard, 5000.0);
        let steady = &out[delay + 160..];
        let energy: f64 =
            steady.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / steady.len() as f64;
        let rms = energy.sqrt();
        assert!(rms < 10000.0 / 2f64.sqrt() / 30.0, "alias rms {rms}");
    }

    #[test]
    fn odd_sized_input_is_buffered() {
        let mut r = Resampler::new(8000, 16000).unwrap();
        let input = sine(8000, 440.0, 8000.0, 8000);
        let mut out = Vec::new();
        for c in input.chunks(240) {
            r.process(c, &mut out).unwrap();
        }
        // 8000 = 50 chunks of 160 exactly: everything is converted.
        assert_eq!(out.len(), 16000);
        assert_eq!(r.pending_samples(), 0);
        let mut out2 = Vec::new();
        let mut r2 = Resampler::new(8000, 16000).unwrap();
        r2.process(&input[..100], &mut out2).unwrap();
        assert!(out2.is_empty());
        assert_eq!(r2.pending_samples(), 100);
        r2.flush(&mut out2).unwrap();
        assert_eq!(out2.len(), 640); // padded chunk + one chunk to drain 160 samples of delay
        r2.reset();
        assert_eq!(r2.pending_samples(), 0);
    }

    #[test]
    fn offline_resample_is_aligned() {
        let input = sine(8000, 500.0, 12000.0, 4000);
        let out = resample_all(8000, 16000, &input).unwrap();
        assert_eq!(out.len(), 8000);
        // aligned: out[2i] ~ input[i] in the middle of the signal
        let mut err = 0.0;
        for i in 1000..3000 {
            err += (out[2 * i] as f64 - input[i] as f64).abs();
        }
        assert!(
            err / 2000.0 < 150.0,
            "mean misalignment error {}",
            err / 2000.0
        );
        let back = resample_all(16000, 8000, &out).unwrap();
        assert_eq!(back.len(), 4000);
        let same = resample_all(8000, 8000, &input).unwrap();
        assert_eq!(same, input);
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        // A full-scale square wave overshoots (Gibbs); output must clip, not wrap.
        let input: Vec<i16> = (0..1600)
            .map(|i| if (i / 20) % 2 == 0 { 32767 } else { -32768 })
            .collect();
        let out = resample_all(8000, 16000, &input).unwrap();
        for w in out.windows(2).skip(100).take(2800) {
            assert!((w[0] as i32 - w[1] as i32).abs() < 40000, "wrapped: {w:?}");
        }
    }
}
