//! Bandwidth extension of narrow-band (8 kHz) speech before Whisper.
//!
//! Whisper learnt English from wide-band audio. A telephone call upsampled to 16 kHz has nothing
//! above 4 kHz, which is where the fricatives /s/, /z/ and /ʃ/ put most of their energy: on an
//! 8 kHz line Whisper tiny.en hears the word "sales" as "Pay on.", "Mail." or "File.". This
//! module gives the upper band back the way wide-band speech codecs synthesise theirs: in each
//! 10 ms frame that is unvoiced (no periodicity at pitch lags) and above the utterance's noise
//! floor, white noise high-passed at 4.2 kHz is added at `gain` x the frame's RMS, the gain
//! interpolated between frames. Voiced frames (vowels, nasals, /l/) and silence are left alone.
//! `voxpbx bench grammar` measures what it changes (README: "Menu recognition").
//!
//! Written here because no crate does speech bandwidth extension; the voicing detector is the
//! textbook normalised autocorrelation, the filter an RBJ-cookbook Butterworth high-pass.

/// Narrow-band frame: 10 ms at 8 kHz.
const FRAME: usize = 80;
/// Voicing analysis window around a frame's centre: 30 ms.
const WINDOW: usize = 240;
/// Pitch lags searched: 50-400 Hz at 8 kHz.
const LAGS: std::ops::Range<usize> = 20..160;
/// Normalised autocorrelation above which a frame is fully voiced, and the width of the ramp
/// below it to fully unvoiced.
const VOICED: f32 = 0.55;
const RAMP: f32 = 0.25;
/// Frames more than this far (dB) below the loudest frame are silence (no upper band).
const FLOOR_DB: f32 = 45.0;
/// Cut-off of the synthesised band (Hz, at 16 kHz).
const CUTOFF_HZ: f32 = 4200.0;

/// Reusable buffers (one per Whisper worker).
#[derive(Default)]
pub struct BandwidthExtender {
    gains: Vec<f32>,
    noise: Vec<f32>,
}

impl BandwidthExtender {
    /// Add the upper band to `wide`, the 16 kHz upsampling of `narrow` (two output samples per
    /// input sample; anything after those, such as padding, is left alone). `gain` scales the
    /// synthesised band against each frame's RMS.
    pub fn extend(&mut self, narrow: &[f32], wide: &mut [f32], gain: f32) {
        let frames = narrow.len() / FRAME;
        if frames == 0 || gain <= 0.0 {
            return;
        }
        self.frame_gains(narrow, frames, gain);
        let len = (2 * narrow.len()).min(wide.len());
        let wide = &mut wide[..len];
        self.highband_noise(wide.len());
        let g = &self.gains;
        for (i, (o, n)) in wide.iter_mut().zip(&self.noise).enumerate() {
            // Between frame centres, linearly.
            let pos = (i as f32 / (2 * FRAME) as f32 - 0.5).max(0.0);
            let f0 = (pos as usize).min(frames - 1);
            let f1 = (f0 + 1).min(frames - 1);
            let t = (pos - f0 as f32).min(1.0);
            *o += (g[f0] * (1.0 - t) + g[f1] * t) * n;
        }
    }

    /// Upper-band level per frame: `gain` x RMS for unvoiced frames above the floor.
    fn frame_gains(&mut self, x: &[f32], frames: usize, gain: f32) {
        self.gains.clear();
        let mut energy = Vec::with_capacity(frames);
        for f in 0..frames {
            let fr = &x[f * FRAME..(f + 1) * FRAME];
            energy.push(fr.iter().map(|v| v * v).sum::<f32>() / FRAME as f32);
        }
        let floor = energy.iter().copied().fold(0.0, f32::max) * 10f32.powf(-FLOOR_DB / 10.0);
        for (f, &e) in energy.iter().enumerate() {
            if e <= floor || e == 0.0 {
                self.gains.push(0.0);
                continue;
            }
            let c = f * FRAME + FRAME / 2;
            let s = c.saturating_sub(WINDOW / 2);
            let w = &x[s..(s + WINDOW).min(x.len())];
            let unvoiced = ((VOICED - voicing(w)) / RAMP).clamp(0.0, 1.0);
            self.gains.push(gain * unvoiced * e.sqrt());
        }
    }

    /// `len` samples of unit-RMS white noise high-passed at [`CUTOFF_HZ`] (fixed seed, so a
    /// recognition is repeatable).
    fn highband_noise(&mut self, len: usize) {
        self.noise.clear();
        let mut seed: u32 = 0x9E37_79B9;
        self.noise.extend((0..len).map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        }));
        // 4th-order Butterworth: two biquads with the Butterworth Qs.
        for q in [0.541_196_1_f32, 1.306_563] {
            let w0 = 2.0 * std::f32::consts::PI * CUTOFF_HZ / 16_000.0;
            let (sin, cos) = w0.sin_cos();
            let alpha = sin / (2.0 * q);
            let a0 = 1.0 + alpha;
            let (b0, b1) = ((1.0 + cos) / 2.0 / a0, -(1.0 + cos) / a0);
            let (a1, a2) = (-2.0 * cos / a0, (1.0 - alpha) / a0);
            let (mut x1, mut x2, mut y1, mut y2) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
            for v in self.noise.iter_mut() {
                let y = b0 * *v + b1 * x1 + b0 * x2 - a1 * y1 - a2 * y2;
                (x2, x1, y2, y1) = (x1, *v, y1, y);
                *v = y;
            }
        }
        let n = self.noise.len().max(1) as f32;
        let rms = (self.noise.iter().map(|v| v * v).sum::<f32>() / n).sqrt();
        if rms > 0.0 {
            self.noise.iter_mut().for_each(|v| *v /= rms);
        }
    }
}

/// The highest normalised autocorrelation of `w` over the pitch lags (1 = periodic).
fn voicing(w: &[f32]) -> f32 {
    let mut best = 0.0f32;
    for lag in LAGS {
        if lag * 2 > w.len() {
            break;
        }
        let (a, b) = (&w[..w.len() - lag], &w[lag..]);
        let (mut xy, mut xx, mut yy) = (0.0f32, 0.0f32, 0.0f32);
        for (x, y) in a.iter().zip(b) {
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        if xx > 0.0 && yy > 0.0 {
            best = best.max(xy / (xx * yy).sqrt());
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, amp: f32, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((s >> 16) as f32 / 32768.0 - 1.0) * amp
            })
            .collect()
    }

    /// A vowel-like periodic signal: 125 Hz pulses through a decaying resonance.
    fn vowel(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = (i % 64) as f32 / 8000.0;
                0.3 * (-t * 300.0).exp() * (2.0 * std::f32::consts::PI * 700.0 * t).sin()
            })
            .collect()
    }

    /// Energy of `x` (16 kHz) above and below 4 kHz, by a DFT.
    fn bands(x: &[f32]) -> (f32, f32) {
        let n = x.len();
        let (mut lo, mut hi) = (0.0, 0.0);
        for k in 1..n / 2 {
            let (mut re, mut im) = (0.0f32, 0.0f32);
            for (i, v) in x.iter().enumerate() {
                let a = 2.0 * std::f32::consts::PI * (k * i) as f32 / n as f32;
                re += v * a.cos();
                im -= v * a.sin();
            }
            let p = re * re + im * im;
            if k * 16_000 / n >= 4_000 {
                hi += p;
            } else {
                lo += p;
            }
        }
        (lo, hi)
    }

    #[test]
    fn voicing_separates_periodic_from_noise() {
        assert!(voicing(&vowel(WINDOW)) > 0.9);
        assert!(voicing(&noise(WINDOW, 0.1, 7)) < 0.3);
        assert_eq!(voicing(&[0.0; WINDOW]), 0.0);
    }

    #[test]
    fn unvoiced_frames_get_an_upper_band_voiced_and_silent_ones_do_not() {
        let mut b = BandwidthExtender::default();
        // 100 ms vowel, 100 ms of a fricative-like noise at -20 dB, 100 ms silence.
        let mut narrow = vowel(800);
        narrow.extend(noise(800, 0.05, 3));
        narrow.extend(std::iter::repeat_n(0.0, 800));
        let mut wide = vec![0.0f32; narrow.len() * 2];
        b.extend(&narrow, &mut wide, 1.0);
        let rms = |s: &[f32]| (s.iter().map(|v| v * v).sum::<f32>() / s.len() as f32).sqrt();
        // Away from the frame boundaries, where the gain is interpolated.
        let (vowel_part, fric_part, silent_part) =
            (&wide[200..1400], &wide[1800..3000], &wide[3400..4800]);
        let fric_rms = rms(&narrow[900..1500]);
        assert!(rms(vowel_part) < 0.05 * fric_rms, "{}", rms(vowel_part));
        let r = rms(fric_part) / fric_rms;
        assert!((0.6..1.4).contains(&r), "upper band at {r} x the frame RMS");
        assert_eq!(rms(silent_part), 0.0);
        let (lo, hi) = bands(&wide[1800..2312]);
        assert!(hi > 20.0 * lo, "band energy below 4 kHz {lo}, above {hi}");
    }

    #[test]
    fn nothing_added_without_gain_or_audio() {
        let mut b = BandwidthExtender::default();
        let narrow = noise(800, 0.1, 5);
        let mut wide = vec![0.0f32; 1600];
        b.extend(&narrow, &mut wide, 0.0);
        assert!(wide.iter().all(|&v| v == 0.0));
        b.extend(&narrow[..10], &mut wide[..20], 1.0);
        assert!(wide.iter().all(|&v| v == 0.0));
    }
}
