//! Media core: frames, formats, codecs, resampling, tones, sound files, mixing, energy detection.
pub mod frame;

pub use frame::{Format, Frame};
