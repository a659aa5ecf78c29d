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

/// Datastore key under which an [`AsyncQueue`] lives once a channel entered AsyncAGI.
pub const ASYNC_DATASTORE: &str = "asyncagi";

/// A channel's AsyncAGI command queue, kept in its datastores from the first `AGI(agi:async)`
/// until the channel is destroyed. Like res_agi.c (which intentionally keeps the datastore
/// after `launch_asyncagi` returns), commands queued while the channel is back in the dialplan
/// (after `ASYNCAGI BREAK`) wait here and run when the channel enters AsyncAGI again; they are
/// dropped with the channel.
#[derive(Debug)]
pub struct AsyncQueue {
    tx: tokio::sync::mpsc::UnboundedSender<AsyncCommand>,
    /// Present while no AsyncAGI loop is consuming the queue.
    rx: Option<tokio::sync::mpsc::UnboundedReceiver<AsyncCommand>>,
}

impl AsyncQueue {
    fn new() -> AsyncQueue {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        AsyncQueue { tx, rx: Some(rx) }
    }
}

/// Enter AsyncAGI: create the channel's queue if needed and take its consumer side, which holds
/// any commands queued since the last [`detach`]. None when another AsyncAGI loop on this
/// channel already holds it.
pub fn attach(
    chan: &mut crate::channel::Channel,
) -> Option<tokio::sync::mpsc::UnboundedReceiver<AsyncCommand>> {
    let entry = chan
        .datastores
        .entry(ASYNC_DATASTORE)
        .or_insert_with(|| Box::new(AsyncQueue::new()));
    if entry.downcast_ref::<AsyncQueue>().is_none() {
        *entry = Box::new(AsyncQueue::new());
    }
    entry.downcast_mut::<AsyncQueue>().and_then(|q| q.rx.take())
}

/// Leave AsyncAGI: give the consumer side back so later `AGI` actions keep queueing.
pub fn detach(
    chan: &mut crate::channel::Channel,
    rx: tokio::sync::mpsc::UnboundedReceiver<AsyncCommand>,
) {
    if let Some(q) = chan
        .datastores
        .get_mut(ASYNC_DATASTORE)
        .and_then(|d| d.downcast_mut::<AsyncQueue>())
    {
        q.rx = Some(rx);
    }
}

/// Queue a command (called on the channel's owner task). Returns false when the channel never
/// entered AsyncAGI (res_agi.c: "Channel ... is not setup for Async AGI").
pub fn queue(chan: &mut crate::channel::Channel, cmd: AsyncCommand) -> bool {
    chan.datastores
        .get(ASYNC_DATASTORE)
        .and_then(|d| d.downcast_ref::<AsyncQueue>())
        .map(|q| q.tx.send(cmd).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(id: &str) -> AsyncCommand {
        AsyncCommand {
            command: "NOOP".into(),
            command_id: id.into(),
            gate: None,
        }
    }

    #[tokio::test]
    async fn queue_survives_break_and_reentry() {
        let dir = tempfile::tempdir().unwrap();
        let (dirs, options) = crate::runtime::read_main_conf(dir.path()).unwrap();
        let core = crate::core::Core::new(dirs, options, crate::dialplan::Dialplan::default());
        let (link, _peer) = crate::channel::TechLink::pair("Test", crate::media::Format::Slin8);
        let mut chan = crate::channel::Channel::new(&core, "Test/q-1".into(), link);
        // Never in AsyncAGI: rejected, as res_agi.c does.
        assert!(!queue(&mut chan, cmd("0")));
        let mut rx = attach(&mut chan).expect("first attach");
        assert!(attach(&mut chan).is_none(), "one consumer at a time");
        assert!(queue(&mut chan, cmd("1")));
        assert_eq!(rx.recv().await.unwrap().command_id, "1");
        // ASYNCAGI BREAK: the channel is back in the dialplan; commands are still accepted.
        detach(&mut chan, rx);
        assert!(queue(&mut chan, cmd("2")));
        assert!(queue(&mut chan, cmd("3")));
        // Re-entering AsyncAGI runs them in order.
        let mut rx = attach(&mut chan).expect("re-attach");
        assert_eq!(rx.recv().await.unwrap().command_id, "2");
        assert_eq!(rx.recv().await.unwrap().command_id, "3");
        assert!(rx.try_recv().is_err());
    }

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
