//! AMI (Asterisk Manager Interface), wire-compatible with Asterisk's `manager.c`.
//!
//! - [`codec`]: message framing (decoder, CRLF writers, response/event/list builders, banner);
//! - [`perm`]: permission classes (`read=`/`write=`, `Privilege:`);
//! - [`config`]: typed manager.conf (users, ACLs, event filters);
//! - [`session`]: the per-connection sans-IO session (login, permissions, event filtering).
pub mod actions;
pub mod codec;
pub mod config;
pub mod perm;
pub mod server;
pub mod session;

pub use codec::{
    AmiEvent, Decoder, EventBuilder, FrameError, Header, Message, MessageBuilder, AMI_VERSION,
    BANNER,
};
pub use config::{Acl, AclRule, AmiUser, EventFilter, EventFilters, ManagerConfig};
pub use perm::Perm;
pub use session::{
    AcceptError, ActionRequest, ActionTable, AmiShared, BootInfo, Now, SecurityEvent, Session,
    SessionOutput,
};
