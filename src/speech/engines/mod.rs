//! Recognizer implementations of [`crate::speech::Engine`].
pub mod whisper;

pub use whisper::WhisperEngine;
