//! `voxpbx bench`: speech-recognition benchmarks (corpus generation, WER, latency).
pub mod corpus;
pub mod grammar;
pub mod stt;
pub mod wer;
