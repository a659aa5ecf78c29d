//! Recognizer implementations of [`crate::speech::Engine`].
pub mod beam;
pub mod whisper;

pub use whisper::WhisperEngine;
