//! SIP, sans-IO: message model and parser, RFC 3261 transactions, dialogs, digest
//! authentication, SDP offer/answer. No sockets, no tasks, no clock reads: every
//! function that needs time is given `now`. The tokio transport shell (`transport.rs`,
//! another change) owns the sockets and timers and drives [`TransactionLayer`]:
//!
//! ```text
//! loop {
//!     select! {
//!         datagram/frame => layer.handle_datagram(now, src, transport, &bytes)?,
//!         timer fired    => layer.handle_timeout(now),
//!         TU command     => layer.send_request/send_response/cancel/send_stateless(..),
//!     }
//!     while let Some(t) = layer.poll_transmit() { send t.data to t.dest (on error: layer.transport_error(tx)) }
//!     while let Some(e) = layer.poll_event()    { route to the channel / dialog owner }
//!     timer = layer.poll_timeout();             // None: nothing armed
//! }
//! ```
//!
//! For TCP/TLS, cut the byte stream with [`parse::frame_stream`] first (answer a
//! `\r\n\r\n` keepalive with `\r\n`, see [`parse::is_keepalive`]).

pub mod auth;
pub mod dialog;
pub mod info;
pub mod message;
pub mod outreg;
pub mod parse;
pub mod qualify;
pub mod registrar;
pub mod sdp;
pub mod stack;
pub mod transaction;
pub mod ua;

pub use dialog::{Dialog, DialogError, DialogId, DialogState, Role};
pub use message::{
    new_branch, new_call_id, new_tag, reason_phrase, CSeq, Header, HeaderName, Headers, Host,
    Method, NameAddr, Param, Request, Response, Scheme, SipMessage, SipUri, Transport, Uri, Via,
};
pub use parse::{frame_stream, is_keepalive, parse_message, SipParseError};
pub use transaction::{
    Event, Timer, TimerConfig, TransactionLayer, Transmit, TxError, TxId, TxKind, TxState,
};
