//! Media core: frames, formats, codecs, resampling, tones, sound files, mixing, energy detection.
pub mod energy;
pub mod file;
pub mod frame;
pub mod g711;
pub mod mix;
pub mod resample;
pub mod tone;
pub mod translate;

pub use frame::{Format, Frame};
