//! AGI (Asterisk Gateway Interface): FastAGI, local AGI/EAGI and AsyncAGI, wire-compatible
//! with Asterisk's `res_agi`.
//!
//! - [`codec`]: environment block, tokenizer, dispatch decisions, reply lines, URLs,
//!   AsyncAGI URL-encoding;
//! - [`commands`]: the command table (names, usage, dead-ok, argument counts);
//! - [`reader`]: a bounded, garbage-tolerant line reader for script/FastAGI input.
pub mod asyncq;
pub mod codec;
pub mod commands;
pub mod db;
pub mod reader;

pub use codec::{
    dispatch, parse_args, usage_reply, AgiEnv, AgiError, AgiResult, AgiTarget, AgiUrl, Dispatch,
    DEAD_CHANNEL, HANGUP_LINE, INVALID_COMMAND, TRYING,
};
pub use commands::{find_command, CommandSpec, COMMANDS};
pub use reader::{AgiLine, LineReader};
