//! The AMI TCP server: the I/O shell around the sans-IO [`Session`](super::session::Session).
//!
//! - `manager.conf` from the conf dir; missing or `enabled = no` leaves AMI off.
//! - One task per connection drives its `Session` (banner first) and writes what it outputs.
//! - Actions run in a per-session worker, in order; a blocking (sync) Originate runs in its own
//!   task so it does not hold up later actions of that session.
//! - Once logged in, a session subscribes to the event bus with a bounded queue of
//!   [`EVENT_QUEUE`] events. A slow client never stalls calls: when its queue is full, events are
//!   dropped for that client only, and it is told with a voxpbx event
//!   `Event: EventsDropped` / `Privilege: system,all` / `Count: <n>` (never silent).
//! - Channel events carry the channel snapshot in Asterisk's order, the second party's
//!   snapshot with a `Dest` prefix, then the voxpbx header `ChannelSeq: <n>`: the per-channel
//!   sequence number, increasing by one for each event of that channel, so clients can order
//!   one channel's events; then the event's own fields.
//! - An event is rendered once for all sessions ([`RenderCache`], keyed by the bus sequence
//!   number), and a session writes the events that queued up meanwhile in one system call
//!   (up to [`EVENT_BATCH`] events / [`WRITE_BATCH_BYTES`]), so many listening clients cost
//!   little per event.

use super::actions::{self, AmiCtx};
use super::codec::{AmiEvent, EventBuilder};
use super::config::ManagerConfig;
use super::perm::Perm;
use super::session::{AmiShared, BootInfo, Now, SecurityEvent, SessionOutput};
use crate::core::Core;
use crate::events::{Event, EventClass};
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Events buffered per session before the bus drops (and counts) them.
pub const EVENT_QUEUE: usize = 1024;

/// Events a session takes from its queue in one go before writing them.
pub const EVENT_BATCH: usize = 64;

/// Bytes coalesced into one write.
pub const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Rendered events shared by all sessions: a small ring indexed by the bus sequence number.
/// Sessions read the same events at about the same time, so the ring only needs to cover the
/// spread between the fastest and the slowest reader; a miss just renders again.
pub struct RenderCache {
    slots: Mutex<Vec<Option<Rendered>>>,
}

/// A cache slot: bus sequence number, whether it has a `Timestamp:` line, the rendering.
type Rendered = (u64, bool, Arc<AmiEvent>);

impl RenderCache {
    const SLOTS: usize = 1024;

    pub fn new() -> RenderCache {
        RenderCache {
            slots: Mutex::new(vec![None; Self::SLOTS]),
        }
    }

    /// The AMI form of `ev` (rendered by the first session that asks).
    pub fn get(&self, ev: &Event, timestamp: bool) -> Arc<AmiEvent> {
        if ev.seq == 0 {
            return Arc::new(render_event(ev, timestamp));
        }
        let i = (ev.seq % Self::SLOTS as u64) as usize;
        if let Some((seq, ts, r)) = &self.slots.lock()[i] {
            if *seq == ev.seq && *ts == timestamp {
                return r.clone();
            }
        }
        let r = Arc::new(render_event(ev, timestamp));
        self.slots.lock()[i] = Some((ev.seq, timestamp, r.clone()));
        r
    }
}

impl Default for RenderCache {
    fn default() -> Self {
        RenderCache::new()
    }
}

/// One connected session, for `manager show connected`.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub username: String,
    pub start_epoch: u64,
    pub started: Instant,
    pub read: Perm,
    pub write: Perm,
}

/// The running server, stored in `core.ext`.
pub struct AmiServer {
    pub shared: Arc<AmiShared>,
    pub local_addr: SocketAddr,
    conns: Mutex<HashMap<u64, ConnInfo>>,
    next_conn: AtomicU64,
    rendered: RenderCache,
}

impl AmiServer {
    /// Connected sessions, oldest first.
    pub fn connections(&self) -> Vec<ConnInfo> {
        let mut v: Vec<(u64, ConnInfo)> = self
            .conns
            .lock()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v.into_iter().map(|(_, c)| c).collect()
    }
}

/// The AMI permission class of a bus event class.
pub fn event_perm(c: EventClass) -> Perm {
    match c {
        EventClass::System => Perm::SYSTEM,
        EventClass::Call | EventClass::Speech => Perm::CALL,
        EventClass::Log => Perm::LOG,
        EventClass::Verbose => Perm::VERBOSE,
        EventClass::Command => Perm::COMMAND,
        EventClass::Agent => Perm::AGENT,
        EventClass::User => Perm::USER,
        EventClass::Config => Perm::CONFIG,
        EventClass::Dtmf => Perm::DTMF,
        EventClass::Reporting => Perm::REPORTING,
        EventClass::Cdr => Perm::CDR,
        EventClass::Dialplan => Perm::DIALPLAN,
        EventClass::Originate => Perm::ORIGINATE,
        EventClass::Agi => Perm::AGI,
    }
}

/// Render a bus event for AMI (see the module docs for the field order).
pub fn render_event(ev: &Event, timestamp: bool) -> AmiEvent {
    let ts = if timestamp {
        Some(ev.time.duration_since(UNIX_EPOCH).unwrap_or_default())
    } else {
        None
    };
    let mut fields: Vec<(String, String)> = Vec::with_capacity(32 + ev.fields.len());
    if let Some(s) = &ev.channel {
        actions::snapshot_fields(s, "", &mut fields);
    }
    if let Some(d) = &ev.dest {
        actions::snapshot_fields(d, "Dest", &mut fields);
    }
    if let Some(n) = ev.chan_seq {
        fields.push(("ChannelSeq".into(), n.to_string()));
    }
    for (k, v) in &ev.fields {
        fields.push((k.to_string(), v.clone()));
    }
    EventBuilder::new(ev.name.to_string(), event_perm(ev.class))
        .timestamp(ts)
        .fields(fields)
        .build()
}

/// The `EventsDropped` notice sent to a session whose queue overflowed.
pub fn events_dropped(count: u64, timestamp: bool) -> AmiEvent {
    let ts = timestamp.then(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    });
    EventBuilder::new("EventsDropped", Perm::SYSTEM)
        .timestamp(ts)
        .field("Count", count.to_string())
        .build()
}

/// Start AMI if manager.conf enables it: bind, register CLI commands, accept connections.
pub async fn start(core: Arc<Core>) -> anyhow::Result<()> {
    let Some(conf) = crate::core::load_conf(&core.dirs, "manager.conf")? else {
        return Ok(());
    };
    let cfg = ManagerConfig::from_conf(&conf)?;
    if !cfg.enabled {
        return Ok(());
    }
    let addr = SocketAddr::new(cfg.bindaddr, cfg.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("AMI: cannot bind {addr}: {e}"))?;
    let local_addr = listener.local_addr()?;
    let shared = AmiShared::new(cfg, actions::action_table());
    let server = Arc::new(AmiServer {
        shared: shared.clone(),
        local_addr,
        conns: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(1),
        rendered: RenderCache::new(),
    });
    core.ext.insert(server.clone());
    register_cli(&core);
    // FullyBooted at login needs the boot time: record it once the PBX is up.
    {
        let core = core.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let notified = core.booted_notify.notified();
                if core.fully_booted.load(Ordering::SeqCst) {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
            }
            shared.set_fully_booted(BootInfo {
                started: core.started,
                last_reload: *core.last_reload.read(),
            });
        });
    }
    tracing::info!("AMI listening on {local_addr}");
    let ctx = AmiCtx {
        core: core.clone(),
        shared,
    };
    tokio::spawn(async move {
        let mut shutdown = core.shutdown.subscribe();
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, peer)) => {
                        let ctx = ctx.clone();
                        let server = server.clone();
                        tokio::spawn(async move {
                            serve_conn(ctx, server, stream, peer).await;
                        });
                    }
                    Err(e) => {
                        tracing::warn!("AMI accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = shutdown.changed() => break,
            }
        }
    });
    Ok(())
}

fn log_security(peer: SocketAddr, ev: &SecurityEvent) {
    match ev {
        SecurityEvent::SuccessfulAuth { username } => {
            tracing::info!("Manager '{username}' logged on from {}", peer.ip())
        }
        SecurityEvent::Logoff { username } => {
            tracing::info!("Manager '{username}' logged off from {}", peer.ip())
        }
        other => tracing::warn!("AMI {}: {:?}", peer.ip(), other),
    }
}

/// Write all of `data`, giving up when the client accepts nothing for `idle` (manager.conf
/// `writetimeout`, default 100 ms; Asterisk sets the same inactivity timeout on the session's
/// stream for each write). A client that keeps reading, however slowly, is not cut off; one that
/// stops reading is, after `idle`. Only this session's task waits here: the event bus hands
/// events to the session's bounded queue with `try_send` and never blocks on a client.
/// False when the client is gone or too slow.
async fn write_all<W: tokio::io::AsyncWrite + Unpin>(
    stream: &mut W,
    data: &[u8],
    idle: Duration,
) -> bool {
    let mut off = 0;
    while off < data.len() {
        match tokio::time::timeout(idle, stream.write(&data[off..])).await {
            Ok(Ok(n)) if n > 0 => off += n,
            _ => return false,
        }
    }
    true
}

async fn serve_conn(ctx: AmiCtx, server: Arc<AmiServer>, stream: TcpStream, peer: SocketAddr) {
    let seed: u64 = rand::random();
    let mut session = match ctx.shared.accept(peer, Now::system(), seed) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("AMI connection from {peer} refused: {e}");
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let conn_id = server.next_conn.fetch_add(1, Ordering::Relaxed);
    let (mut rd, mut wr) = stream.into_split();
    let (act_tx, act_rx) = mpsc::unbounded_channel::<super::session::ActionRequest>();
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<Bytes>();
    let worker = tokio::spawn(action_worker(ctx.clone(), act_rx, reply_tx));
    let mut sub: Option<crate::events::Subscription> = None;
    let mut buf = vec![0u8; 8192];
    let mut pending = BytesMut::new();
    let mut registered = false;
    let mut shutdown = ctx.core.shutdown.subscribe();
    'conn: loop {
        // Flush what the session produced, coalescing consecutive sends into one write.
        let limit = session.write_timeout();
        while let Some(out) = session.poll_output() {
            match out {
                SessionOutput::Send(b) => {
                    pending.extend_from_slice(&b);
                    if pending.len() >= WRITE_BATCH_BYTES {
                        if !write_all(&mut wr, &pending, limit).await {
                            break 'conn;
                        }
                        pending.clear();
                    }
                    continue;
                }
                _ if !pending.is_empty() => {
                    if !write_all(&mut wr, &pending, limit).await {
                        break 'conn;
                    }
                    pending.clear();
                }
                _ => {}
            }
            match out {
                SessionOutput::Send(_) => {}
                SessionOutput::Close => break 'conn,
                SessionOutput::Action(req) => {
                    if act_tx.send(req).is_err() {
                        break 'conn;
                    }
                }
                SessionOutput::Security(ev) => log_security(peer, &ev),
            }
        }
        if !pending.is_empty() {
            if !write_all(&mut wr, &pending, limit).await {
                break 'conn;
            }
            pending.clear();
        }
        // Subscribe to the bus only while the session can receive some event (logged in, and
        // its read permission meets its `Events:` mask): a client with `Events: off` has no
        // queue to overflow and gets no EventsDropped notices.
        let wants_events =
            session.is_authenticated() && session.read_perm().intersects(session.event_mask());
        if wants_events && sub.is_none() {
            sub = Some(ctx.core.bus.subscribe(EVENT_QUEUE));
        } else if !wants_events && sub.is_some() {
            sub = None;
        }
        if session.is_authenticated() && !registered {
            registered = true;
            server.conns.lock().insert(
                conn_id,
                ConnInfo {
                    peer,
                    username: session.username().unwrap_or("").to_string(),
                    start_epoch: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    started: Instant::now(),
                    read: session.read_perm(),
                    write: session.write_perm(),
                },
            );
        }
        let deadline = session.poll_timeout();
        let timestamps = ctx.shared.config().timestampevents;
        // Biased: a reply queued before the events its action caused is written first.
        tokio::select! {
            biased;
            Some(reply) = reply_rx.recv() => session.send(reply),
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => break 'conn,
                Ok(n) => session.handle_input(Now::system(), &buf[..n]),
            },
            ev = async {
                match sub.as_mut() {
                    Some(s) => s.rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(ev) = ev else { break 'conn };
                if let Some(s) = sub.as_mut() {
                    let dropped = s.take_dropped();
                    if dropped > 0 {
                        session.send(events_dropped(dropped, timestamps).wire);
                    }
                    session.deliver(&server.rendered.get(&ev, timestamps));
                    // Take what else queued up meanwhile: written together below.
                    for _ in 1..EVENT_BATCH {
                        let Ok(ev) = s.rx.try_recv() else { break };
                        session.deliver(&server.rendered.get(&ev, timestamps));
                    }
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            } => session.handle_timeout(Now::system()),
            _ = shutdown.changed() => break 'conn,
        }
    }
    server.conns.lock().remove(&conn_id);
    worker.abort();
    drop(session);
    let _ = wr.shutdown().await;
}

async fn action_worker(
    ctx: AmiCtx,
    mut rx: mpsc::UnboundedReceiver<super::session::ActionRequest>,
    tx: mpsc::UnboundedSender<Bytes>,
) {
    while let Some(req) = rx.recv().await {
        if actions::is_blocking(&req) {
            let ctx = ctx.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let (reply, after) = actions::handle(&ctx, &req).await;
                let _ = tx.send(reply);
                if let Some(f) = after {
                    f();
                }
            });
        } else {
            let (reply, after) = actions::handle(&ctx, &req).await;
            if tx.send(reply).is_err() {
                break;
            }
            if let Some(f) = after {
                f();
            }
        }
    }
}

fn register_cli(core: &Arc<Core>) {
    core.register_cli(
        "manager show connected",
        "List connected manager interface users",
        Arc::new(|core: Arc<Core>, _args: Vec<String>| {
            Box::pin(async move {
                match core.ext.get::<AmiServer>() {
                    Some(s) => show_connected(&s.connections()),
                    None => "Manager interface is not enabled.\n".to_string(),
                }
            })
        }),
    );
    core.register_cli(
        "manager show settings",
        "Show manager global settings",
        Arc::new(|core: Arc<Core>, _args: Vec<String>| {
            Box::pin(async move {
                match core.ext.get::<AmiServer>() {
                    Some(s) => show_settings(&s.shared.config(), s.local_addr),
                    None => "Manager interface is not enabled.\n".to_string(),
                }
            })
        }),
    );
    core.register_cli(
        "manager show stats",
        "Show event bus counters: events published, dropped for slow sessions",
        Arc::new(|core: Arc<Core>, _args: Vec<String>| {
            Box::pin(async move {
                let (published, dropped, subs) = core.bus.stats();
                show_stats(published, dropped, subs)
            })
        }),
    );
}

/// `manager show stats` output (voxpbx): the bus counters a load test reads.
pub fn show_stats(published: u64, dropped: u64, subscribers: usize) -> String {
    format!(
        "Events published: {published}\nEvents dropped: {dropped}\nSubscribers: {subscribers}\n\
         Event queue (events): {EVENT_QUEUE}\n"
    )
}

/// `manager show connected` output.
pub fn show_connected(conns: &[ConnInfo]) -> String {
    let mut out = format!(
        "  {:<15.15}  {:<40.40}  {:<10}  {:<10}  {:<10}  {:<10}\n",
        "Username", "IP Address", "Start", "Elapsed", "ReadPerms", "WritePerms"
    );
    for c in conns {
        out.push_str(&format!(
            "  {:<15.15}  {:<40.40}  {:<10}  {:<10}  {:<10x}  {:<10x}\n",
            c.username,
            c.peer.ip().to_string(),
            c.start_epoch,
            c.started.elapsed().as_secs(),
            c.read.bits(),
            c.write.bits()
        ));
    }
    out.push_str(&format!("{} users connected.\n", conns.len()));
    out
}

/// `manager show settings` output.
pub fn show_settings(cfg: &ManagerConfig, bound: SocketAddr) -> String {
    let yn = |b: bool| if b { "Yes" } else { "No" };
    let mut out = String::from("\nGlobal Settings:\n----------------\n");
    let mut line = |k: &str, v: String| out.push_str(&format!("  {:<22} {}\n", format!("{k}:"), v));
    line("Manager (AMI)", yn(cfg.enabled).into());
    line("Web Manager (AMI/HTTP)", yn(cfg.webenabled).into());
    line("TCP Bindaddress", bound.to_string());
    line(
        "HTTP Timeout (seconds)",
        cfg.httptimeout.as_secs().to_string(),
    );
    line("TLS Enable", yn(cfg.tlsenable).into());
    line("Allow multiple login", yn(cfg.allowmultiplelogin).into());
    line("Display connects", yn(cfg.displayconnects).into());
    line("Timestamp events", yn(cfg.timestampevents).into());
    line("Channel vars", cfg.channelvars.join(","));
    line("Disabled events", cfg.disabledevents.join(","));
    line("Debug", yn(cfg.debug).into());
    line("Auth timeout (s)", cfg.authtimeout.as_secs().to_string());
    line("Auth limit", cfg.authlimit.to_string());
    line("Event queue (events)", EVENT_QUEUE.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::ChannelSnapshot;

    #[tokio::test]
    async fn write_timeout_cuts_off_a_client_that_stops_reading() {
        // 64-byte pipe: the writer blocks as soon as the reader stops reading.
        let (mut w, _r) = tokio::io::duplex(64);
        let t0 = Instant::now();
        assert!(!write_all(&mut w, &[b'x'; 4096], Duration::from_millis(100)).await);
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
    }

    #[tokio::test]
    async fn write_timeout_is_inactivity_not_total() {
        // The reader takes 64 bytes every 30 ms: 1 KiB needs ~0.5 s in all, but no single wait
        // reaches 100 ms, so the client is kept.
        let (mut w, mut r) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut got = 0;
            while got < 1024 {
                tokio::time::sleep(Duration::from_millis(30)).await;
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            got
        });
        let t0 = Instant::now();
        assert!(write_all(&mut w, &[b'y'; 1024], Duration::from_millis(100)).await);
        assert!(t0.elapsed() >= Duration::from_millis(200));
        assert_eq!(reader.await.unwrap(), 1024);
    }

    #[test]
    fn channel_event_layout() {
        let mut ev = Event::new("Newexten", EventClass::Dialplan)
            .field("Extension", "100")
            .field("Application", "Answer");
        ev.chan_seq = Some(3);
        ev.channel = Some(Arc::new(ChannelSnapshot {
            name: "Local/100@default-00000001;1".into(),
            state: 6,
            state_desc: "Up",
            context: "default".into(),
            exten: "100".into(),
            priority: 1,
            uniqueid: "1.1".into(),
            linkedid: "1.1".into(),
            ..Default::default()
        }));
        ev.dest = Some(Arc::new(ChannelSnapshot {
            name: "PJSIP/x".into(),
            ..Default::default()
        }));
        let a = render_event(&ev, false);
        let text = a.text();
        let names: Vec<&str> = text
            .split("\r\n")
            .filter_map(|l| l.split_once(": ").map(|(k, _)| k))
            .collect();
        assert_eq!(names[0], "Event");
        assert_eq!(names[1], "Privilege");
        assert_eq!(names[2], "Channel");
        assert_eq!(names[15], "Linkedid");
        assert_eq!(names[16], "DestChannel");
        assert_eq!(names[29], "DestLinkedid");
        assert_eq!(names[30], "ChannelSeq");
        assert_eq!(names[31], "Extension");
        assert!(text.contains("Privilege: dialplan,all\r\n"));
        assert!(text.contains("ChannelSeq: 3\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!(a.class, Perm::DIALPLAN);
    }

    #[test]
    fn render_cache_renders_once_per_event() {
        let cache = RenderCache::new();
        let mut ev = Event::new("UserEvent", EventClass::User).field("UserEvent", "X");
        ev.seq = 7;
        let a = cache.get(&ev, false);
        let b = cache.get(&ev, false);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.wire, render_event(&ev, false).wire);
        // Another timestamp setting or a newer event in the same slot renders again.
        let c = cache.get(&ev, true);
        assert!(!Arc::ptr_eq(&a, &c));
        let mut later = Event::new("UserEvent", EventClass::User).field("UserEvent", "Y");
        later.seq = 7 + RenderCache::SLOTS as u64;
        assert!(cache.get(&later, true).text().contains("UserEvent: Y"));
        // Events that never went through the bus (seq 0) are rendered every time.
        let z = Event::new("UserEvent", EventClass::User);
        assert!(!Arc::ptr_eq(&cache.get(&z, false), &cache.get(&z, false)));
    }

    #[test]
    fn stats_output() {
        assert_eq!(
            show_stats(10, 2, 3),
            "Events published: 10\nEvents dropped: 2\nSubscribers: 3\nEvent queue (events): 1024\n"
        );
    }

    #[test]
    fn timestamp_and_dropped() {
        let ev = Event::new("UserEvent", EventClass::User).field("UserEvent", "x");
        let a = render_event(&ev, true);
        assert!(a.text().contains("\r\nTimestamp: "));
        assert!(!a.text().contains("ChannelSeq"));
        let d = events_dropped(7, false);
        assert_eq!(
            d.text(),
            "Event: EventsDropped\r\nPrivilege: system,all\r\nCount: 7\r\n\r\n"
        );
    }

    #[test]
    fn cli_output() {
        let s = show_connected(&[ConnInfo {
            peer: "127.0.0.1:5000".parse().unwrap(),
            username: "admin".into(),
            start_epoch: 1,
            started: Instant::now(),
            read: Perm::ALL,
            write: Perm::CALL,
        }]);
        assert!(s.contains("admin"));
        assert!(s.ends_with("1 users connected.\n"));
        let cfg = ManagerConfig {
            enabled: true,
            ..Default::default()
        };
        let t = show_settings(&cfg, "127.0.0.1:5038".parse().unwrap());
        assert!(t.contains("Manager (AMI):"));
        assert!(t.contains("127.0.0.1:5038"));
    }

    #[tokio::test]
    async fn disabled_or_missing_conf_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let (dirs, options) = crate::runtime::read_main_conf(dir.path()).unwrap();
        let core = Core::new(dirs, options, crate::dialplan::Dialplan::default());
        start(core.clone()).await.unwrap();
        assert!(core.ext.get::<AmiServer>().is_none());
        std::fs::write(dir.path().join("manager.conf"), "[general]\nenabled = no\n").unwrap();
        start(core.clone()).await.unwrap();
        assert!(core.ext.get::<AmiServer>().is_none());
    }

    #[tokio::test]
    async fn serves_banner_and_login() {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            dir.path().join("manager.conf"),
            format!("[general]\nenabled = yes\nport = {port}\nbindaddr = 127.0.0.1\n\n[admin]\nsecret = pw\nread = all\nwrite = all\n"),
        )
        .unwrap();
        let (dirs, options) = crate::runtime::read_main_conf(dir.path()).unwrap();
        let core = Core::new(dirs, options, crate::dialplan::Dialplan::default());
        start(core.clone()).await.unwrap();
        let srv = core.ext.get::<AmiServer>().unwrap();
        let s = TcpStream::connect(srv.local_addr).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert_eq!(line, "Asterisk Call Manager/13.0.0\r\n");
        w.write_all(b"Action: Login\r\nUsername: admin\r\nSecret: pw\r\nActionID: 1\r\n\r\nAction: UserEvent\r\nUserEvent: Hi\r\nActionID: 2\r\n\r\n")
            .await
            .unwrap();
        let mut all = String::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(all.contains("UserEvent: Hi") && all.ends_with("\r\n\r\n"))
            && Instant::now() < deadline
        {
            let mut l = String::new();
            if tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut l))
                .await
                .is_err()
            {
                break;
            }
            all.push_str(&l);
        }
        assert!(
            all.starts_with("Response: Success\r\nActionID: 1\r\nMessage: Authentication accepted"),
            "{all}"
        );
        assert!(all.contains("Message: Event Sent"), "{all}");
        assert!(
            all.contains("Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: Hi\r\nActionID: 2"),
            "{all}"
        );
        assert_eq!(srv.connections().len(), 1);
    }
}
