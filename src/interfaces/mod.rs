//! External interfaces layered on the PBX core: AMI, AGI (ARI, call files, ... follow).
//!
//! Each interface has a sans-IO protocol core here; the runtime drives it from its I/O shell.
pub mod agi;
pub mod ami;
