//! voxpbx: a PBX built around a real-time audio pipeline. See ARCHITECTURE.md (shared/design).
pub mod config;
pub mod dialplan;
pub mod media;
pub mod speech;
