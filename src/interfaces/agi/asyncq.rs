//! The AsyncAGI command queue shared by the `AGI(agi:async)` application (consumer) and the AMI
//! `AGI` action (producer). While a channel runs AsyncAGI, its datastore `ASYNC_DATASTORE` holds
//! an [`AsyncQueue`]; the AMI action reaches it with `ChannelHandle::run` and pushes commands.

/// One command queued by `Action: AGI`.
#[derive(Debug, Clone)]
pub struct AsyncCommand {
    pub command: String,
    pub command_id: String,
}

/// Datastore key under which an [`AsyncQueue`] lives while AsyncAGI runs.
pub const ASYNC_DATASTORE: &str = "asyncagi";

/// Sender side of the queue, stored in the channel's datastores.
pub type AsyncQueue = tokio::sync::mpsc::UnboundedSender<AsyncCommand>;

/// Queue a command on a channel that is in AsyncAGI (called on the channel's owner task).
/// Returns false when the channel is not running AsyncAGI.
pub fn queue(chan: &mut crate::channel::Channel, cmd: AsyncCommand) -> bool {
    chan.datastores
        .get(ASYNC_DATASTORE)
        .and_then(|d| d.downcast_ref::<AsyncQueue>())
        .map(|tx| tx.send(cmd).is_ok())
        .unwrap_or(false)
}
