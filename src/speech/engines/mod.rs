//! Recognizer implementations of [`crate::speech::Engine`].
pub mod bwe;
pub mod nbest;
pub mod phrases;
pub mod whisper;

pub use whisper::WhisperEngine;
