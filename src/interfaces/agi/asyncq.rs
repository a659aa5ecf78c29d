//! The AsyncAGI command queue shared by the `AGI(agi:async)` application (consumer) and the AMI
//! `AGI` action (producer). While a channel runs AsyncAGI, its datastore `ASYNC_DATASTORE` holds
//! an [`AsyncQueue`]; the AMI action reaches it with `ChannelHandle::run` and pushes commands.

/// One command queued by `Action: AGI`.
#[derive(Debug)]
pub struct AsyncCommand {
    pub command: String,
    pub command_id: String,
    /// Fired once the action's `Response: Success` has been handed to the AMI session, so the
    /// command's `AsyncAGIExec` never overtakes the ack (clients such as panoramisk route the
    /// first message carrying the ids to the pending action). None: run at once.
    pub gate: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// How long a queued command waits for its ack to be sent before it runs anyway.
pub const GATE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl AsyncCommand {
    /// Wait until the ack was sent (or the sender is gone, or [`GATE_WAIT`] passed).
    pub async fn wait_gate(&mut self) {
        if let Some(g) = self.gate.take() {
            let _ = tokio::time::timeout(GATE_WAIT, g).await;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gate_opens_on_send_or_drop() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut c = AsyncCommand {
            command: "NOOP".into(),
            command_id: "1".into(),
            gate: Some(rx),
        };
        tx.send(()).unwrap();
        c.wait_gate().await;
        assert!(c.gate.is_none());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut c = AsyncCommand {
            command: "NOOP".into(),
            command_id: String::new(),
            gate: Some(rx),
        };
        drop(tx);
        tokio::time::timeout(std::time::Duration::from_millis(500), c.wait_gate())
            .await
            .expect("a dropped sender opens the gate");
    }
}
