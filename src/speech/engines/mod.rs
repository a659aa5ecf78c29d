//! Recognizer implementations of [`crate::speech::Engine`].
pub mod nbest;
pub mod whisper;

pub use whisper::WhisperEngine;
