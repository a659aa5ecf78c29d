//! Speech recognition: the engine layer, VAD, grammars, engines (whisper, AEAP).
pub mod engine;
pub mod engines;
pub mod grammar;
pub mod setup;
pub mod silero;
pub mod vad;

pub use engine::{
    Engine, EngineRegistry, EngineSession, ResultsType, Speech, SpeechError, SpeechResult,
    SpeechShared, SpeechState,
};
