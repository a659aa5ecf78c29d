//! Speech recognition: the engine layer, VAD, grammars, engines (whisper, AEAP).
pub mod engine;

pub use engine::{
    Engine, EngineRegistry, EngineSession, ResultsType, Speech, SpeechError, SpeechResult,
    SpeechShared, SpeechState,
};
