//! voxpbx: a PBX built around a real-time audio pipeline. The README's "What works" table says
//! where each area lives.
pub mod aeap;
pub mod apps;
pub mod bench;
pub mod bridge;
pub mod channel;
pub mod config;
pub mod console;
pub mod core;
pub mod dialplan;
pub mod events;
pub mod interfaces;
pub mod media;
pub mod models;
pub mod rtp;
pub mod runtime;
pub mod sip;
pub mod speech;
