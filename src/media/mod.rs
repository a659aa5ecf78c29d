//! Media core: frames, formats, codecs, resampling, tones, sound files, mixing, energy detection.
pub mod file;
pub mod frame;
pub mod translate;

pub use frame::{Format, Frame};
