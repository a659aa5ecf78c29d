//! `voxpbx bench`: speech-recognition benchmarks (corpus generation, WER, latency).
pub mod corpus;
pub mod stt;
pub mod wer;
