//! AEAP (Asterisk External Application Protocol), wire-compatible with Asterisk's res_aeap and
//! res_speech_aeap. See docs/aeap.md for the protocol and how voxpbx uses it.
//!
//! * [`message`]: sans-IO JSON message codec (kinds, names, ids, 32 KiB limit, key order).
//! * [`transaction`]: sans-IO request/response transactions with timeouts, told the time.
//! * [`config`]: aeap.conf (clients, voxpbx extensions, `[aeap-server]`).
//! * [`transport`]: WebSocket client connect with Asterisk's handshake rules.
//! * [`client`]: [`client::AeapEngine`], an external speech engine for the Speech API.
//! * [`server`]: serves voxpbx's own engines to Asterisk's res_speech_aeap.

mod audio;
pub mod client;
pub mod config;
pub mod message;
pub mod server;
pub mod transaction;
pub mod transport;

pub use client::{show_clients, speech_engines, sync_speech_engines, AeapEngine};
pub use config::{from_conf, AeapConfig, ClientConfig, ServerConfig, ServerLimits};
pub use message::{decode, DecodeError, Json, Kind, Message};
pub use server::serve;
pub use transaction::{Event, Transactions};
