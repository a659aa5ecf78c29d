//! Conference mixing of N legs of signed linear audio at one rate.
//!
//! Each round, every leg pushes one frame; [`Mixer::mix`] sums the unmuted legs into a 32-bit
//! accumulator and derives, per leg, "everyone but me" (the sum minus the leg's own
//! contribution), saturated to 16 bits. A leg that pushed nothing this round counts as
//! silence. All buffers are sized when a leg is added; mixing never allocates.

use thiserror::Error;

use super::frame::{Format, Frame};
use super::g711;

/// Handle of a leg in a [`Mixer`].
pub type LegId = usize;

/// Errors from mixer calls.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MixError {
    #[error("unknown mixer leg {0}")]
    UnknownLeg(LegId),
    #[error("frame format {got} does not match the mixer rate {rate} Hz")]
    WrongFormat { got: &'static str, rate: u32 },
}

#[derive(Debug, Clone)]
struct Leg {
    active: bool,
    muted: bool,
    has_input: bool,
    input: Vec<i16>,
    output: Vec<i16>,
}

#[inline]
fn sat(v: i32) -> i16 {
    v.clamp(i16::MIN as i32, i16::MAX as i32) as i16
}

/// An N-leg mixer.
#[derive(Debug, Clone)]
pub struct Mixer {
    rate: u32,
    samples: usize,
    legs: Vec<Leg>,
    sum: Vec<i32>,
    mixed: Vec<i16>,
}

impl Mixer {
    /// A mixer for 20 ms frames at `rate`.
    pub fn new(rate: u32) -> Mixer {
        Mixer::with_frame_samples(rate, (rate / 50) as usize)
    }

    /// A mixer for frames of `samples` samples at `rate`.
    pub fn with_frame_samples(rate: u32, samples: usize) -> Mixer {
        Mixer {
            rate,
            samples,
            legs: Vec::new(),
            sum: vec![0; samples],
            mixed: vec![0; samples],
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }
    /// Samples per frame.
    pub fn frame_samples(&self) -> usize {
        self.samples
    }
    /// Number of legs in the mix.
    pub fn leg_count(&self) -> usize {
        self.legs.iter().filter(|l| l.active).count()
    }

    /// Add a leg (reusing a removed leg's slot and buffers when there is one).
    pub fn add_leg(&mut self) -> LegId {
        if let Some(i) = self.legs.iter().position(|l| !l.active) {
            let l = &mut self.legs[i];
            l.active = true;
            l.muted = false;
            l.has_input = false;
            l.input.fill(0);
            l.output.fill(0);
            return i;
        }
        self.legs.push(Leg {
            active: true,
            muted: false,
            has_input: false,
            input: vec![0; self.samples],
            output: vec![0; self.samples],
        });
        self.legs.len() - 1
    }

    fn leg_mut(&mut self, id: LegId) -> Result<&mut Leg, MixError> {
        match self.legs.get_mut(id) {
            Some(l) if l.active => Ok(l),
            _ => Err(MixError::UnknownLeg(id)),
        }
    }

    /// Remove a leg; its id may be handed out again by `add_leg`.
    pub fn remove_leg(&mut self, id: LegId) -> Result<(), MixError> {
        let l = self.leg_mut(id)?;
        l.active = false;
        l.has_input = false;
        Ok(())
    }

    /// Mute a leg: the others no longer hear it (it still hears them).
    pub fn set_muted(&mut self, id: LegId, muted: bool) -> Result<(), MixError> {
        self.leg_mut(id)?.muted = muted;
        Ok(())
    }

    pub fn is_muted(&self, id: LegId) -> Option<bool> {
        self.legs.get(id).filter(|l| l.active).map(|l| l.muted)
    }

    /// Give a leg its audio for this round. Shorter input is padded with silence, longer
    /// input is truncated to the frame size.
    pub fn push(&mut self, id: LegId, samples: &[i16]) -> Result<(), MixError> {
        let l = self.leg_mut(id)?;
        let n = samples.len().min(l.input.len());
        l.input[..n].copy_from_slice(&samples[..n]);
        l.input[n..].fill(0);
        l.has_input = true;
        Ok(())
    }

    /// Push a frame in µ-law, A-law or slin at the mixer's rate, decoding in place.
    pub fn push_frame(&mut self, id: LegId, f: &Frame) -> Result<(), MixError> {
        let rate = self.rate;
        if f.format.rate() != rate || f.format == Format::G722 {
            return Err(MixError::WrongFormat {
                got: f.format.name(),
                rate,
            });
        }
        let l = self.leg_mut(id)?;
        let n = match f.format {
            Format::Ulaw => g711::ulaw_to_linear_slice(&f.data, &mut l.input),
            Format::Alaw => g711::alaw_to_linear_slice(&f.data, &mut l.input),
            _ => g711::slin_bytes_to_samples(&f.data, &mut l.input),
        };
        l.input[n..].fill(0);
        l.has_input = true;
        Ok(())
    }

    /// Mix this round. Afterwards [`mixed`](Mixer::mixed) is the sum of every unmuted leg and
    /// [`output`](Mixer::output) each leg's "everyone but me". Inputs are consumed: a leg
    /// that does not push before the next `mix` is silent in it.
    pub fn mix(&mut self) {
        self.sum.fill(0);
        for l in self
            .legs
            .iter()
            .filter(|l| l.active && l.has_input && !l.muted)
        {
            for (acc, s) in self.sum.iter_mut().zip(&l.input) {
                *acc += *s as i32;
            }
        }
        for (m, s) in self.mixed.iter_mut().zip(&self.sum) {
            *m = sat(*s);
        }
        for l in self.legs.iter_mut().filter(|l| l.active) {
            if l.has_input && !l.muted {
                for ((o, s), own) in l.output.iter_mut().zip(&self.sum).zip(&l.input) {
                    *o = sat(*s - *own as i32);
                }
            } else {
                l.output.copy_from_slice(&self.mixed);
            }
            l.has_input = false;
        }
    }

    /// The full mix of the last round (e.g. for recording the conference).
    pub fn mixed(&self) -> &[i16] {
        &self.mixed
    }

    /// What `id` hears: everyone but itself, from the last round.
    pub fn output(&self, id: LegId) -> Option<&[i16]> {
        self.legs
            .get(id)
            .filter(|l| l.active)
            .map(|l| l.output.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::translate::encode_from_slin;

    #[test]
    fn everyone_but_me() {
        let mut m = Mixer::new(8000);
        assert_eq!(m.frame_samples(), 160);
        let a = m.add_leg();
        let b = m.add_leg();
        let c = m.add_leg();
        m.push(a, &[100; 160]).unwrap();
        m.push(b, &[20; 160]).unwrap();
        m.push(c, &[3; 160]).unwrap();
        m.mix();
        assert!(m.mixed().iter().all(|s| *s == 123));
        assert!(m.output(a).unwrap().iter().all(|s| *s == 23));
        assert!(m.output(b).unwrap().iter().all(|s| *s == 103));
        assert!(m.output(c).unwrap().iter().all(|s| *s == 120));
        // next round: only b speaks; inputs from the last round are not reused
        m.push(b, &[7; 160]).unwrap();
        m.mix();
        assert!(m.output(a).unwrap().iter().all(|s| *s == 7));
        assert!(m.output(b).unwrap().iter().all(|s| *s == 0));
        assert!(m.output(c).unwrap().iter().all(|s| *s == 7));
    }

    #[test]
    fn mute_and_remove() {
        let mut m = Mixer::new(16000);
        let a = m.add_leg();
        let b = m.add_leg();
        m.set_muted(a, true).unwrap();
        assert_eq!(m.is_muted(a), Some(true));
        m.push(a, &[1000; 320]).unwrap();
        m.push(b, &[50; 320]).unwrap();
        m.mix();
        assert!(
            m.output(b).unwrap().iter().all(|s| *s == 0),
            "muted leg is not heard"
        );
        assert!(
            m.output(a).unwrap().iter().all(|s| *s == 50),
            "muted leg still hears"
        );
        assert!(m.mixed().iter().all(|s| *s == 50));
        m.remove_leg(b).unwrap();
        assert_eq!(m.leg_count(), 1);
        assert_eq!(m.output(b), None);
        assert_eq!(m.push(b, &[1]), Err(MixError::UnknownLeg(b)));
        assert_eq!(m.set_muted(99, true), Err(MixError::UnknownLeg(99)));
        let c = m.add_leg();
        assert_eq!(c, b, "slot reused");
        assert_eq!(m.is_muted(c), Some(false));
    }

    #[test]
    fn saturates() {
        let mut m = Mixer::new(8000);
        let legs: Vec<_> = (0..4).map(|_| m.add_leg()).collect();
        for &l in &legs {
            m.push(l, &[20000; 160]).unwrap();
        }
        m.mix();
        assert!(m.mixed().iter().all(|s| *s == i16::MAX));
        assert!(m.output(legs[0]).unwrap().iter().all(|s| *s == i16::MAX));
        for &l in &legs {
            m.push(l, &[-20000; 160]).unwrap();
        }
        m.mix();
        assert!(m.mixed().iter().all(|s| *s == i16::MIN));
        // opposite signs cancel exactly in 32 bits before saturation
        m.push(legs[0], &[30000; 160]).unwrap();
        m.push(legs[1], &[30000; 160]).unwrap();
        m.push(legs[2], &[-30000; 160]).unwrap();
        m.mix();
        assert!(m.mixed().iter().all(|s| *s == 30000));
        assert!(m.output(legs[2]).unwrap().iter().all(|s| *s == i16::MAX));
    }

    #[test]
    fn short_long_and_encoded_input() {
        let mut m = Mixer::new(8000);
        let a = m.add_leg();
        let b = m.add_leg();
        m.push(a, &[5; 10]).unwrap();
        m.push(b, &[1; 500]).unwrap();
        m.mix();
        let o = m.output(b).unwrap();
        assert!(o[..10].iter().all(|s| *s == 5) && o[10..].iter().all(|s| *s == 0));
        let u = Frame::new(Format::Ulaw, encode_from_slin(Format::Ulaw, &[0; 160]));
        m.push_frame(a, &u).unwrap();
        m.push_frame(b, &Frame::from_slin(Format::Slin8, &[9; 160]))
            .unwrap();
        m.mix();
        assert!(m.output(a).unwrap().iter().all(|s| *s == 9));
        assert!(m.output(b).unwrap().iter().all(|s| *s == 0));
        let wrong = Frame::from_slin(Format::Slin16, &[0; 320]);
        assert!(matches!(
            m.push_frame(a, &wrong),
            Err(MixError::WrongFormat { .. })
        ));
    }
}
