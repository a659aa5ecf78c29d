//! Sans-IO AMI session: one TCP connection's protocol state, independent of the PBX.
//!
//! The I/O shell (a tokio task per connection) drives a [`Session`]:
//!
//! 1. [`AmiShared::accept`] when a connection arrives (refused past `authlimit` or for an IP
//!    blocked after repeated failed logins: close the socket without a word, as Asterisk does);
//! 2. [`Session::handle_input`] with the bytes read, [`Session::handle_timeout`] when the time
//!    from [`Session::poll_timeout`] has come;
//! 3. after every call, drain [`Session::poll_output`] until `None`: write `Send` bytes in
//!    order, run `Action` requests on the PBX (which answers with [`Session::send`] and the
//!    [`ActionRequest`] reply helpers), log `Security` notices, and close on `Close`;
//! 4. offer every published [`AmiEvent`] to [`Session::deliver`], which applies the read
//!    permission, the `Events:` mask and the user's event filters.
//!
//! The session handles Login (plain and MD5 challenge), Challenge, Logoff, Ping, Events,
//! Filter and ListCommands itself; other actions are checked against the [`ActionTable`] and
//! the user's write permission and handed to the PBX. Time is always an input; the only
//! randomness (the MD5 challenge) comes from a seed given at accept time.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use md5::{Digest, Md5};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::codec::{
    self, format_timestamp, AmiEvent, Decoder, FrameError, Header, Limits, Message, MessageBuilder,
    BANNER,
};
use super::config::{EventFilter, EventFilters, ManagerConfig};
use super::perm::Perm;

/// How long a failed login (or a refused duplicate login) waits before the error and close.
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// The current time, as the shell tells it: a monotonic instant for timers and the wall clock
/// (time since the Unix epoch) for `Timestamp:` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    pub since_epoch: Duration,
}

impl Now {
    pub fn new(instant: Instant, since_epoch: Duration) -> Now {
        Now {
            instant,
            since_epoch,
        }
    }

    /// Read both clocks. For the I/O shell only; protocol code is always told the time.
    pub fn system() -> Now {
        Now {
            instant: Instant::now(),
            since_epoch: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }
}

/// The text Asterisk answers for an action nobody registered.
pub fn unknown_command_text(action: &str) -> String {
    format!(
        "Invalid/unknown command: {action}. Use Action: ListCommands to show available commands."
    )
}

/// `Response: Error` for an unknown action, ready to send.
pub fn unknown_command_error(action_id: Option<&str>, action: &str) -> Bytes {
    codec::error(action_id, &unknown_command_text(action))
}

// ---------------------------------------------------------------------------------------------
// Action registry
// ---------------------------------------------------------------------------------------------

/// A registered action: the write class it needs (any one of the bits is enough; empty means
/// any logged-in user) and its one-line synopsis for ListCommands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionInfo {
    pub name: String,
    pub authority: Perm,
    pub synopsis: String,
}

/// Actions the session answers itself, with their authority and synopsis.
pub const BUILTIN_ACTIONS: [(&str, Perm, &str); 7] = [
    ("Challenge", Perm::NONE, "Generate Challenge for MD5 Auth."),
    ("Events", Perm::NONE, "Control Event Flow."),
    (
        "Filter",
        Perm::SYSTEM,
        "Dynamically add filters for the current manager session.",
    ),
    (
        "ListCommands",
        Perm::NONE,
        "List available manager commands.",
    ),
    ("Login", Perm::NONE, "Login Manager."),
    ("Logoff", Perm::NONE, "Logoff Manager."),
    ("Ping", Perm::NONE, "Keepalive command."),
];

/// The write class Asterisk requires for well-known actions, for [`ActionTable::register_known`].
pub fn asterisk_authority(action: &str) -> Option<Perm> {
    use Perm as P;
    let sys_call = P::SYSTEM | P::CALL;
    let call_rep = P::CALL | P::REPORTING;
    let sys_rep = P::SYSTEM | P::REPORTING;
    let table: &[(&str, Perm)] = &[
        ("Hangup", sys_call),
        ("Status", P::SYSTEM | P::CALL | P::REPORTING),
        ("Setvar", P::CALL),
        ("Getvar", call_rep),
        ("GetConfig", P::SYSTEM | P::CONFIG),
        ("GetConfigJSON", P::SYSTEM | P::CONFIG),
        ("UpdateConfig", P::CONFIG),
        ("CreateConfig", P::CONFIG),
        ("ListCategories", P::CONFIG),
        ("Redirect", P::CALL),
        ("Atxfer", P::CALL),
        ("BlindTransfer", P::CALL),
        ("Originate", P::ORIGINATE),
        ("Command", P::COMMAND),
        ("ExtensionState", call_rep),
        ("PresenceState", call_rep),
        ("AbsoluteTimeout", sys_call),
        ("MailboxStatus", call_rep),
        ("MailboxCount", call_rep),
        ("SendText", P::CALL),
        ("UserEvent", P::USER),
        ("CoreSettings", sys_rep),
        ("CoreStatus", sys_rep),
        ("Reload", P::CONFIG | P::SYSTEM),
        ("CoreShowChannels", sys_rep),
        ("ModuleLoad", P::SYSTEM),
        ("ModuleCheck", P::SYSTEM),
        ("AOCMessage", P::AOC),
        ("AGI", P::AGI),
        ("DBGet", sys_rep),
        ("DBGetTree", sys_rep),
        ("DBPut", P::SYSTEM),
        ("DBDel", P::SYSTEM),
        ("DBDelTree", P::SYSTEM),
        ("DeviceStateList", call_rep),
        ("ExtensionStateList", call_rep),
        ("PresenceStateList", call_rep),
        ("PlayDTMF", P::CALL),
        ("LoggerRotate", sys_rep),
        ("BridgeList", P::REPORTING),
        ("BridgeInfo", P::REPORTING),
        ("BridgeDestroy", P::CALL),
        ("BridgeKick", P::CALL),
        ("Bridge", P::CALL),
        ("MixMonitor", sys_call),
        ("StopMixMonitor", sys_call),
    ];
    table
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(action))
        .map(|(_, p)| *p)
}

/// The actions the PBX layer implements (the built-in session actions are not listed here).
#[derive(Debug, Clone, Default)]
pub struct ActionTable {
    map: HashMap<String, ActionInfo>,
}

impl ActionTable {
    pub fn new() -> ActionTable {
        ActionTable::default()
    }

    /// Register (or replace) an action.
    pub fn register(&mut self, name: &str, authority: Perm, synopsis: &str) {
        self.map.insert(
            name.to_ascii_lowercase(),
            ActionInfo {
                name: name.to_string(),
                authority,
                synopsis: synopsis.to_string(),
            },
        );
    }

    /// Register an action under the write class Asterisk gives it. `false` if the name is not
    /// one of the well-known actions (use [`ActionTable::register`] then).
    pub fn register_known(&mut self, name: &str, synopsis: &str) -> bool {
        match asterisk_authority(name) {
            Some(a) => {
                self.register(name, a, synopsis);
                true
            }
            None => false,
        }
    }

    pub fn unregister(&mut self, name: &str) -> bool {
        self.map.remove(&name.to_ascii_lowercase()).is_some()
    }

    /// Case-insensitive lookup.
    pub fn get(&self, name: &str) -> Option<&ActionInfo> {
        self.map.get(&name.to_ascii_lowercase())
    }

    pub fn iter(&self) -> impl Iterator<Item = &ActionInfo> {
        self.map.values()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------------

/// Why a connection was refused at accept time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    #[error("too many unauthenticated AMI connections (authlimit {0})")]
    AuthLimit(usize),
    #[error("{0} is blocked after repeated failed AMI logins")]
    Blocked(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct FailRecord {
    window_start: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct SharedState {
    unauthenticated: usize,
    logins: HashMap<String, usize>,
    failures: HashMap<IpAddr, FailRecord>,
}

/// When the PBX booted and last reloaded, for the `FullyBooted` event sent at login.
#[derive(Debug, Clone, Copy)]
pub struct BootInfo {
    pub started: Instant,
    pub last_reload: Instant,
}

/// State shared by all AMI sessions: the configuration (swappable on reload), the action
/// table, the count of unauthenticated connections, who is logged in, and failed logins per IP.
#[derive(Debug)]
pub struct AmiShared {
    config: ArcSwap<ManagerConfig>,
    actions: ArcSwap<ActionTable>,
    boot: Mutex<Option<BootInfo>>,
    state: Mutex<SharedState>,
}

impl AmiShared {
    pub fn new(config: ManagerConfig, actions: ActionTable) -> Arc<AmiShared> {
        Arc::new(AmiShared {
            config: ArcSwap::from_pointee(config),
            actions: ArcSwap::from_pointee(actions),
            boot: Mutex::new(None),
            state: Mutex::new(SharedState::default()),
        })
    }

    pub fn config(&self) -> Arc<ManagerConfig> {
        self.config.load_full()
    }

    /// Replace the configuration (reload). Sessions already logged in keep their permissions
    /// and filters, as in Asterisk; new logins see the new users.
    pub fn set_config(&self, config: ManagerConfig) {
        self.config.store(Arc::new(config));
    }

    pub fn actions(&self) -> Arc<ActionTable> {
        self.actions.load_full()
    }

    pub fn set_actions(&self, actions: ActionTable) {
        self.actions.store(Arc::new(actions));
    }

    /// Mark the PBX fully booted; from now on logins with `system` read get `FullyBooted`.
    pub fn set_fully_booted(&self, info: BootInfo) {
        *self.boot.lock() = Some(info);
    }

    pub fn unauthenticated_count(&self) -> usize {
        self.state.lock().unauthenticated
    }

    /// How many sessions are logged in as `username`.
    pub fn login_count(&self, username: &str) -> usize {
        self.state
            .lock()
            .logins
            .get(&username.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// Whether `ip` is currently blocked for failed logins.
    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.state
            .lock()
            .failures
            .get(&ip)
            .and_then(|r| r.blocked_until)
            .is_some_and(|t| t > now)
    }

    /// Start a session for a new connection. The first output is the banner.
    pub fn accept(
        self: &Arc<Self>,
        peer: SocketAddr,
        now: Now,
        rng_seed: u64,
    ) -> Result<Session, AcceptError> {
        let cfg = self.config();
        {
            let mut st = self.state.lock();
            let ip = peer.ip();
            if st
                .failures
                .get(&ip)
                .and_then(|r| r.blocked_until)
                .is_some_and(|t| t > now.instant)
            {
                return Err(AcceptError::Blocked(ip));
            }
            if st.unauthenticated >= cfg.authlimit {
                return Err(AcceptError::AuthLimit(cfg.authlimit));
            }
            st.unauthenticated += 1;
        }
        Ok(Session::start(Arc::clone(self), &cfg, peer, now, rng_seed))
    }

    fn record_failure(&self, ip: IpAddr, now: Instant, cfg: &ManagerConfig) {
        if cfg.authfail_limit == 0 {
            return;
        }
        let mut st = self.state.lock();
        if st.failures.len() > 4096 {
            let keep = cfg.authfail_window.max(cfg.authfail_block);
            st.failures.retain(|_, r| {
                r.blocked_until.is_some_and(|t| t > now)
                    || now.saturating_duration_since(r.window_start) <= keep
            });
        }
        let rec = st.failures.entry(ip).or_insert(FailRecord {
            window_start: now,
            count: 0,
            blocked_until: None,
        });
        if now.saturating_duration_since(rec.window_start) > cfg.authfail_window {
            rec.window_start = now;
            rec.count = 0;
        }
        rec.count = rec.count.saturating_add(1);
        if rec.count >= cfg.authfail_limit {
            rec.blocked_until = Some(now + cfg.authfail_block);
            rec.window_start = now;
            rec.count = 0;
        }
    }

    fn record_success(&self, ip: IpAddr) {
        self.state.lock().failures.remove(&ip);
    }
}

// ---------------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------------

/// What the session asks the shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionOutput {
    /// Write these bytes.
    Send(Bytes),
    /// Close the connection (after writing everything sent before).
    Close,
    /// An authorised action for the PBX layer to execute and answer.
    Action(ActionRequest),
    /// Something worth logging or turning into a security event.
    Security(SecurityEvent),
}

/// Authentication and access notices (Asterisk's security events, by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityEvent {
    SuccessfulAuth {
        username: String,
    },
    InvalidAccountId {
        username: String,
    },
    FailedAcl {
        username: String,
    },
    InvalidPassword {
        username: String,
    },
    ChallengeResponseFailed {
        username: String,
    },
    /// A login from an IP that is blocked for failed logins.
    Blocked {
        username: String,
    },
    /// A second login for a user with `allowmultiplelogin=no`.
    SessionLimit {
        username: String,
    },
    RequestNotAllowed {
        action: String,
    },
    RequestBadFormat {
        action: String,
    },
    /// The connection did not log in within `authtimeout`.
    AuthTimeout,
    Logoff {
        username: String,
    },
}

/// A parsed, authorised action for the PBX layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRequest {
    /// The action name as the client sent it.
    pub name: String,
    /// All headers, `Action:` included.
    pub message: Message,
    pub username: String,
    pub read: Perm,
    pub write: Perm,
    /// The write class the action was registered with.
    pub authority: Perm,
    /// The user's `setvar=` variables (for Originate).
    pub setvars: Arc<[(String, String)]>,
}

impl ActionRequest {
    pub fn action_id(&self) -> Option<&str> {
        self.message.action_id()
    }

    /// A header of the request (case-insensitive, first occurrence).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.message.get(name)
    }

    /// `Response: Success` + `Message:`.
    pub fn success(&self, message: &str) -> Bytes {
        codec::success(self.action_id(), message)
    }

    /// `Response: Error` + `Message:`.
    pub fn error(&self, message: &str) -> Bytes {
        codec::error(self.action_id(), message)
    }

    /// A response of any kind, ActionID echoed; add headers and finish.
    pub fn response(&self, kind: &str, message: Option<&str>) -> MessageBuilder {
        codec::response(kind, self.action_id(), None, message)
    }

    /// `Response: Success`, `EventList: start`, `Message: <message>`.
    pub fn list_start(&self, message: &str) -> Bytes {
        codec::list_start(self.action_id(), message)
    }

    /// One list item (`Event: <name>`, `ActionID`); add fields and finish.
    pub fn list_item(&self, event_name: &str) -> MessageBuilder {
        codec::list_item(event_name, self.action_id())
    }

    /// The list's closing event; add extra fields if any and finish.
    pub fn list_complete(&self, event_name: &str, count: usize) -> MessageBuilder {
        codec::list_complete(event_name, self.action_id(), count)
    }

    /// The unknown-action error, for a PBX that decides it does not implement this action.
    pub fn unknown(&self) -> Bytes {
        unknown_command_error(self.action_id(), &self.name)
    }
}

#[derive(Debug, Clone)]
struct LoggedIn {
    username: String,
    read: Perm,
    write: Perm,
    displayconnects: bool,
    writetimeout: Duration,
    setvars: Arc<[(String, String)]>,
}

#[derive(Debug, Clone)]
enum State {
    /// Waiting for a login until the deadline.
    Unauthenticated {
        deadline: Instant,
    },
    Authenticated,
    /// A delayed error reply, then close (failed login).
    ClosingAt {
        at: Instant,
        reply: Bytes,
    },
    Closed,
}

/// Counters for observability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub messages_in: u64,
    pub events_sent: u64,
    pub events_filtered: u64,
}

/// One AMI connection's protocol state. See the module docs for the driving contract.
#[derive(Debug)]
pub struct Session {
    shared: Arc<AmiShared>,
    peer: SocketAddr,
    decoder: Decoder,
    out: VecDeque<SessionOutput>,
    state: State,
    challenge: Option<String>,
    rng: StdRng,
    user: Option<LoggedIn>,
    send_events: Perm,
    filters: EventFilters,
    counted_unauth: bool,
    counted_login: Option<String>,
    brokeneventsaction: bool,
    stats: SessionStats,
}

impl Session {
    fn start(
        shared: Arc<AmiShared>,
        cfg: &ManagerConfig,
        peer: SocketAddr,
        now: Now,
        seed: u64,
    ) -> Session {
        let mut s = Session {
            shared,
            peer,
            decoder: Decoder::new(Limits::default()),
            out: VecDeque::new(),
            state: State::Unauthenticated {
                deadline: now.instant + cfg.authtimeout,
            },
            challenge: None,
            rng: StdRng::seed_from_u64(seed),
            user: None,
            send_events: Perm::ALL,
            filters: EventFilters::default(),
            counted_unauth: true,
            counted_login: None,
            brokeneventsaction: cfg.brokeneventsaction,
            stats: SessionStats::default(),
        };
        s.out
            .push_back(SessionOutput::Send(Bytes::from_static(BANNER.as_bytes())));
        s
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn is_authenticated(&self) -> bool {
        self.user.is_some() && !self.is_closed()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed | State::ClosingAt { .. })
    }

    pub fn username(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.username.as_str())
    }

    pub fn read_perm(&self) -> Perm {
        self.user.as_ref().map_or(Perm::NONE, |u| u.read)
    }

    pub fn write_perm(&self) -> Perm {
        self.user.as_ref().map_or(Perm::NONE, |u| u.write)
    }

    /// The current `Events:` mask.
    pub fn event_mask(&self) -> Perm {
        self.send_events
    }

    /// Whether the shell should log connects/disconnects for this session.
    pub fn display_connects(&self) -> bool {
        self.user.as_ref().map_or_else(
            || self.shared.config().displayconnects,
            |u| u.displayconnects,
        )
    }

    /// How long a write may block before the shell gives up on this client.
    pub fn write_timeout(&self) -> Duration {
        self.user
            .as_ref()
            .map_or(Duration::from_millis(100), |u| u.writetimeout)
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<SessionOutput> {
        self.out.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next (`None`: no timer pending).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Unauthenticated { deadline } => Some(*deadline),
            State::ClosingAt { at, .. } => Some(*at),
            State::Authenticated | State::Closed => None,
        }
    }

    /// Advance timers: the login deadline and delayed failure replies.
    pub fn handle_timeout(&mut self, now: Now) {
        match &self.state {
            State::Unauthenticated { deadline } if now.instant >= *deadline => {
                self.out
                    .push_back(SessionOutput::Security(SecurityEvent::AuthTimeout));
                self.close();
            }
            State::ClosingAt { at, reply } if now.instant >= *at => {
                let reply = reply.clone();
                self.out.push_back(SessionOutput::Send(reply));
                self.close();
            }
            _ => {}
        }
    }

    /// Feed bytes read from the socket; complete messages are processed at once.
    pub fn handle_input(&mut self, now: Now, data: &[u8]) {
        self.handle_timeout(now);
        if self.is_closed() {
            return;
        }
        self.decoder.push(data);
        while !self.is_closed() {
            let Some(next) = self.decoder.next_message() else {
                break;
            };
            self.stats.messages_in += 1;
            match next {
                Ok(msg) => self.process(now, msg),
                Err(e) => self.frame_error(e),
            }
        }
    }

    /// Queue bytes for the client (a PBX reply to an [`ActionRequest`]). Ignored once closed.
    pub fn send(&mut self, bytes: Bytes) {
        if !matches!(self.state, State::Closed) {
            self.out.push_back(SessionOutput::Send(bytes));
        }
    }

    /// Offer a published event; queued for sending if this session wants it.
    pub fn deliver(&mut self, ev: &AmiEvent) -> bool {
        if !self.is_authenticated() || self.shared.config.load().is_event_disabled(&ev.name) {
            return false;
        }
        let wanted = self.check_event(ev.class, &ev.name, &ev.fields, &|| ev.text());
        if wanted {
            self.stats.events_sent += 1;
            self.out.push_back(SessionOutput::Send(ev.wire.clone()));
        } else {
            self.stats.events_filtered += 1;
        }
        wanted
    }

    /// Whether an event of this class, name and fields would be sent to this session: it
    /// must be logged in, its read permission and `Events:` mask must both contain every bit
    /// of `class`, and its event filters must let the event through. (Legacy filters match
    /// the event text as Asterisk writes it, without a `Timestamp:` line.)
    pub fn wants_event(&self, class: Perm, name: &str, fields: &[Header]) -> bool {
        if !self.is_authenticated() {
            return false;
        }
        let text = || {
            let mut b = MessageBuilder::new();
            b.header("Event", name)
                .header("Privilege", &class.privilege_string());
            for h in fields {
                b.header(&h.name, &h.value);
            }
            std::borrow::Cow::Owned(String::from_utf8_lossy(&b.finish()).into_owned())
        };
        self.check_event(class, name, fields, &text)
    }

    fn check_event<'a>(
        &self,
        class: Perm,
        name: &str,
        fields: &[Header],
        text: &'a dyn Fn() -> std::borrow::Cow<'a, str>,
    ) -> bool {
        let Some(u) = &self.user else { return false };
        u.read.contains(class)
            && self.send_events.contains(class)
            && self.filters.allows(name, fields, text)
    }

    fn close(&mut self) {
        if !matches!(self.state, State::Closed) {
            self.state = State::Closed;
            self.release();
            self.out.push_back(SessionOutput::Close);
        }
    }

    /// Give back the shared counters (unauthenticated slot, login count). Idempotent.
    fn release(&mut self) {
        if !self.counted_unauth && self.counted_login.is_none() {
            return;
        }
        let mut st = self.shared.state.lock();
        if self.counted_unauth {
            st.unauthenticated = st.unauthenticated.saturating_sub(1);
            self.counted_unauth = false;
        }
        if let Some(name) = self.counted_login.take() {
            if let Some(n) = st.logins.get_mut(&name) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.logins.remove(&name);
                }
            }
        }
    }

    fn reply(&mut self, bytes: Bytes) {
        self.out.push_back(SessionOutput::Send(bytes));
    }

    fn security(&mut self, ev: SecurityEvent) {
        self.out.push_back(SessionOutput::Security(ev));
    }

    fn close_after_delay(&mut self, now: Now, reply: Bytes) {
        self.state = State::ClosingAt {
            at: now.instant + AUTH_FAILURE_DELAY,
            reply,
        };
    }

    fn frame_error(&mut self, e: FrameError) {
        let text = e.to_string();
        self.reply(codec::error(e.partial.action_id(), &text));
    }

    fn process(&mut self, now: Now, msg: Message) {
        let Some(action) = msg.action().map(str::to_string) else {
            self.security(SecurityEvent::RequestBadFormat {
                action: "NONE".into(),
            });
            self.reply(codec::error(msg.action_id(), "Missing action in request"));
            return;
        };
        let lower = action.to_ascii_lowercase();
        let pre_auth = matches!(lower.as_str(), "login" | "logoff" | "challenge");
        if self.user.is_none() && !pre_auth {
            self.security(SecurityEvent::RequestNotAllowed {
                action: action.clone(),
            });
            self.reply(codec::error(msg.action_id(), "Permission denied"));
            return;
        }
        if self.user.is_none()
            && (lower == "login" || lower == "challenge")
            && self.refuse_duplicate_login(now, &msg)
        {
            return;
        }
        if let Some((_, authority, _)) = BUILTIN_ACTIONS
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(&action))
        {
            if !authority.is_empty() && !self.write_perm().intersects(*authority) {
                self.security(SecurityEvent::RequestNotAllowed {
                    action: action.clone(),
                });
                self.reply(codec::error(msg.action_id(), "Permission denied"));
                return;
            }
            match lower.as_str() {
                "login" => self.action_login(now, &msg),
                "logoff" => self.action_logoff(&msg),
                "challenge" => self.action_challenge(&msg),
                "ping" => self.action_ping(now, &msg),
                "events" => self.action_events(&msg),
                "filter" => self.action_filter(&msg),
                _ => self.action_listcommands(&msg),
            }
            return;
        }
        let table = self.shared.actions();
        let Some(info) = table.get(&action) else {
            self.security(SecurityEvent::RequestBadFormat {
                action: action.clone(),
            });
            self.reply(unknown_command_error(msg.action_id(), &action));
            return;
        };
        let Some(user) = &self.user else { return };
        if !info.authority.is_empty() && !user.write.intersects(info.authority) {
            self.security(SecurityEvent::RequestNotAllowed {
                action: action.clone(),
            });
            self.reply(codec::error(msg.action_id(), "Permission denied"));
            return;
        }
        let req = ActionRequest {
            name: action,
            username: user.username.clone(),
            read: user.read,
            write: user.write,
            authority: info.authority,
            setvars: Arc::clone(&user.setvars),
            message: msg,
        };
        self.out.push_back(SessionOutput::Action(req));
    }

    /// `allowmultiplelogin=no` and the user is already logged in elsewhere: wait, refuse, close.
    fn refuse_duplicate_login(&mut self, now: Now, msg: &Message) -> bool {
        let Some(username) = msg.get("Username").filter(|u| !u.is_empty()) else {
            return false;
        };
        if self.shared.login_count(username) == 0 {
            return false;
        }
        let cfg = self.shared.config();
        match cfg.user(username) {
            Some(u) if !u.allowmultiplelogin => {
                self.security(SecurityEvent::SessionLimit {
                    username: username.to_string(),
                });
                self.close_after_delay(now, codec::error(msg.action_id(), "Login Already In Use"));
                true
            }
            _ => false,
        }
    }

    fn action_login(&mut self, now: Now, msg: &Message) {
        if self.user.is_some() {
            self.reply(codec::success(msg.action_id(), "Already authenticated"));
            return;
        }
        let cfg = self.shared.config();
        let username = msg.get("Username").unwrap_or("").to_string();
        let ip = self.peer.ip();
        let failure = if self.shared.is_blocked(ip, now.instant) {
            Some(SecurityEvent::Blocked {
                username: username.clone(),
            })
        } else {
            self.authenticate(&cfg, &username, msg)
        };
        if let Some(ev) = failure {
            self.shared.record_failure(ip, now.instant, &cfg);
            self.security(ev);
            self.close_after_delay(now, codec::error(msg.action_id(), "Authentication failed"));
            return;
        }
        let Some(user) = cfg.user(&username) else {
            return;
        };
        let logged = LoggedIn {
            username: user.username.clone(),
            read: user.read,
            write: user.write,
            displayconnects: user.displayconnects,
            writetimeout: user.writetimeout,
            setvars: user.setvars.clone().into(),
        };
        self.filters = user.filters.clone();
        if let Some(mask) = msg.get("Events").and_then(Perm::parse_event_mask) {
            self.send_events = mask;
        }
        {
            let mut st = self.shared.state.lock();
            if self.counted_unauth {
                st.unauthenticated = st.unauthenticated.saturating_sub(1);
                self.counted_unauth = false;
            }
            let key = user.username.to_ascii_lowercase();
            *st.logins.entry(key.clone()).or_insert(0) += 1;
            self.counted_login = Some(key);
        }
        self.shared.record_success(ip);
        self.state = State::Authenticated;
        self.security(SecurityEvent::SuccessfulAuth {
            username: logged.username.clone(),
        });
        let read = logged.read;
        self.user = Some(logged);
        self.reply(codec::success(msg.action_id(), "Authentication accepted"));
        let boot = *self.shared.boot.lock();
        if let Some(boot) = boot {
            if self.send_events.contains(Perm::SYSTEM) && read.contains(Perm::SYSTEM) {
                let uptime = now
                    .instant
                    .saturating_duration_since(boot.started)
                    .as_secs();
                let reload = now
                    .instant
                    .saturating_duration_since(boot.last_reload)
                    .as_secs();
                let mut b = MessageBuilder::new();
                b.header("Event", "FullyBooted")
                    .header("Privilege", &Perm::SYSTEM.privilege_string())
                    .header("Uptime", &uptime.to_string())
                    .header("LastReload", &reload.to_string())
                    .header("Status", "Fully Booted");
                self.reply(b.finish());
            }
        }
    }

    /// `None` when the credentials are good, else the reason.
    fn authenticate(
        &self,
        cfg: &ManagerConfig,
        username: &str,
        msg: &Message,
    ) -> Option<SecurityEvent> {
        let name = || username.to_string();
        if username.is_empty() {
            return Some(SecurityEvent::InvalidAccountId { username: name() });
        }
        let Some(user) = cfg.user(username) else {
            return Some(SecurityEvent::InvalidAccountId { username: name() });
        };
        if !user.acl.allows(self.peer.ip()) {
            return Some(SecurityEvent::FailedAcl { username: name() });
        }
        if msg
            .get("AuthType")
            .is_some_and(|t| t.eq_ignore_ascii_case("MD5"))
        {
            let key = msg.get("Key").unwrap_or("");
            return match (&self.challenge, &user.secret) {
                (Some(ch), Some(secret)) if !key.is_empty() => {
                    if md5_key(ch, secret).eq_ignore_ascii_case(key.trim()) {
                        None
                    } else {
                        Some(SecurityEvent::ChallengeResponseFailed { username: name() })
                    }
                }
                _ => Some(SecurityEvent::ChallengeResponseFailed { username: name() }),
            };
        }
        match &user.secret {
            Some(secret) if msg.get("Secret").unwrap_or("") == secret => None,
            _ => Some(SecurityEvent::InvalidPassword { username: name() }),
        }
    }

    fn action_logoff(&mut self, msg: &Message) {
        if let Some(u) = &self.user {
            let username = u.username.clone();
            self.security(SecurityEvent::Logoff { username });
        }
        self.reply(
            codec::response(
                "Goodbye",
                msg.action_id(),
                None,
                Some("Thanks for all the fish."),
            )
            .finish(),
        );
        self.close();
    }

    fn action_challenge(&mut self, msg: &Message) {
        if !msg
            .get("AuthType")
            .is_some_and(|t| t.eq_ignore_ascii_case("MD5"))
        {
            self.reply(codec::error(msg.action_id(), "Must specify AuthType"));
            return;
        }
        if self.challenge.is_none() {
            let n: u32 = self.rng.gen_range(0..=i32::MAX as u32);
            self.challenge = Some(n.to_string());
        }
        let ch = self.challenge.clone().unwrap_or_default();
        let mut b = codec::response("Success", msg.action_id(), None, None);
        b.header("Challenge", &ch);
        self.reply(b.finish());
    }

    fn action_ping(&mut self, now: Now, msg: &Message) {
        let mut b = codec::response("Success", msg.action_id(), None, None);
        b.header("Ping", "Pong")
            .header("Timestamp", &format_timestamp(now.since_epoch));
        self.reply(b.finish());
    }

    fn action_events(&mut self, msg: &Message) {
        let mask = msg.get("EventMask").and_then(Perm::parse_event_mask);
        if let Some(m) = mask {
            self.send_events = m;
        }
        if self.brokeneventsaction && (mask.is_none() || mask == Some(Perm::ALL)) {
            return;
        }
        match mask {
            Some(m) => {
                let mut b = codec::response("Success", msg.action_id(), None, None);
                b.header("Events", if m.is_empty() { "Off" } else { "On" });
                self.reply(b.finish());
            }
            None => self.reply(codec::error(msg.action_id(), "Invalid event mask")),
        }
    }

    fn action_filter(&mut self, msg: &Message) {
        let op = msg.get("Operation").unwrap_or("");
        if !op.eq_ignore_ascii_case("Add") {
            self.reply(codec::error(msg.action_id(), "Unknown operation"));
            return;
        }
        let filter = msg.get("Filter").unwrap_or("");
        match EventFilter::legacy(filter) {
            Ok(f) => {
                self.filters.add(f);
                self.reply(codec::success(msg.action_id(), "Success"));
            }
            Err(_) => self.reply(codec::error(
                msg.action_id(),
                "Filter did not compile.  Check the syntax of the filter given.",
            )),
        }
    }

    fn action_listcommands(&mut self, msg: &Message) {
        let write = self.write_perm();
        let table = self.shared.actions();
        let mut list: Vec<(String, Perm, String)> = BUILTIN_ACTIONS
            .iter()
            .map(|(n, a, s)| (n.to_string(), *a, s.to_string()))
            .collect();
        list.extend(
            table
                .iter()
                .map(|i| (i.name.clone(), i.authority, i.synopsis.clone())),
        );
        list.sort_by_key(|(n, _, _)| n.to_ascii_lowercase());
        let mut b = codec::response("Success", msg.action_id(), None, None);
        for (name, auth, syn) in list {
            if auth.is_empty() || write.intersects(auth) {
                b.header(&name, &format!("{syn} (Priv: {})", auth.privilege_string()));
            }
        }
        self.reply(b.finish());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.release();
    }
}

/// The MD5 login key: lowercase hex of md5(challenge + secret).
pub fn md5_key(challenge: &str, secret: &str) -> String {
    let mut h = Md5::new();
    h.update(challenge.as_bytes());
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::super::config::{AclRule, AmiUser};
    use super::super::EventBuilder;
    use super::*;

    fn t0() -> Now {
        Now::new(Instant::now(), Duration::from_secs(1_700_000_000))
    }

    fn at(base: Now, secs: f64) -> Now {
        let d = Duration::from_secs_f64(secs);
        Now::new(base.instant + d, base.since_epoch + d)
    }

    fn shared_with(users: Vec<AmiUser>, f: impl FnOnce(&mut ManagerConfig)) -> Arc<AmiShared> {
        let mut cfg = ManagerConfig {
            enabled: true,
            users,
            ..ManagerConfig::default()
        };
        f(&mut cfg);
        let mut actions = ActionTable::new();
        assert!(actions.register_known("Originate", "Originate a call."));
        actions.register(
            "Status",
            Perm::SYSTEM | Perm::CALL | Perm::REPORTING,
            "List channel status.",
        );
        AmiShared::new(cfg, actions)
    }

    fn admin() -> AmiUser {
        AmiUser::new("admin", "secret", Perm::ALL, Perm::ALL)
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    fn drain(s: &mut Session) -> Vec<SessionOutput> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    fn sent_text(out: &[SessionOutput]) -> String {
        out.iter()
            .filter_map(|o| match o {
                SessionOutput::Send(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    fn login(s: &mut Session, now: Now, user: &str, secret: &str) -> Vec<SessionOutput> {
        s.handle_input(
            now,
            format!(
                "Action: Login\r\nUsername: {user}\r\nSecret: {secret}\r\nActionID: L1\r\n\r\n"
            )
            .as_bytes(),
        );
        drain(s)
    }

    #[test]
    fn banner_then_plain_login() {
        let sh = shared_with(vec![admin()], |_| {});
        let now = t0();
        let mut s = sh.accept(peer(), now, 1).unwrap();
        assert_eq!(
            drain(&mut s),
            vec![SessionOutput::Send(Bytes::from_static(
                b"Asterisk Call Manager/13.0.0\r\n"
            ))]
        );
        assert_eq!(sh.unauthenticated_count(), 1);
        let out = login(&mut s, now, "ADMIN", "secret");
        assert_eq!(
            sent_text(&out),
            "Response: Success\r\nActionID: L1\r\nMessage: Authentication accepted\r\n\r\n"
        );
        assert!(
            out.contains(&SessionOutput::Security(SecurityEvent::SuccessfulAuth {
                username: "admin".into()
            }))
        );
        assert!(s.is_authenticated());
        assert_eq!(sh.unauthenticated_count(), 0);
        assert_eq!(sh.login_count("admin"), 1);
        assert_eq!(s.poll_timeout(), None);
        drop(s);
        assert_eq!(sh.login_count("admin"), 0);
    }

    #[test]
    fn failed_login_waits_one_second_then_closes() {
        let sh = shared_with(vec![admin()], |_| {});
        let now = t0();
        let mut s = sh.accept(peer(), now, 1).unwrap();
        drain(&mut s);
        let out = login(&mut s, now, "admin", "wrong");
        assert_eq!(sent_text(&out), "", "nothing before the delay");
        assert!(
            out.contains(&SessionOutput::Security(SecurityEvent::InvalidPassword {
                username: "admin".into()
            }))
        );
        assert_eq!(s.poll_timeout(), Some(now.instant + AUTH_FAILURE_DELAY));
        // Input during the delay is ignored.
        s.handle_input(at(now, 0.5), b"Action: Ping\r\n\r\n");
        assert!(drain(&mut s).is_empty());
        s.handle_timeout(at(now, 1.0));
        let out = drain(&mut s);
        assert_eq!(
            sent_text(&out),
            "Response: Error\r\nActionID: L1\r\nMessage: Authentication failed\r\n\r\n"
        );
        assert_eq!(out.last(), Some(&SessionOutput::Close));
        assert_eq!(sh.unauthenticated_count(), 0);
    }

    #[test]
    fn unknown_user_and_missing_secret_fail() {
        let mut nosecret = AmiUser::new("nos", "", Perm::ALL, Perm::ALL);
        nosecret.secret = None;
        let sh = shared_with(vec![admin(), nosecret], |_| {});
        for (u, p, ev) in [
            (
                "ghost",
                "x",
                SecurityEvent::InvalidAccountId {
                    username: "ghost".into(),
                },
            ),
            (
                "",
                "x",
                SecurityEvent::InvalidAccountId {
                    username: "".into(),
                },
            ),
            (
                "nos",
                "",
                SecurityEvent::InvalidPassword {
                    username: "nos".into(),
                },
            ),
        ] {
            let mut s = sh.accept(peer(), t0(), 1).unwrap();
            let out = login(&mut s, t0(), u, p);
            assert!(out.contains(&SessionOutput::Security(ev)), "{u}");
            assert!(s.is_closed());
        }
    }

    #[test]
    fn md5_challenge_login() {
        let sh = shared_with(vec![admin()], |_| {});
        let now = t0();
        let mut s = sh.accept(peer(), now, 7).unwrap();
        drain(&mut s);
        s.handle_input(
            now,
            b"Action: Challenge\r\nAuthType: md5\r\nActionID: c\r\n\r\n",
        );
        let text = sent_text(&drain(&mut s));
        assert!(
            text.starts_with("Response: Success\r\nActionID: c\r\nChallenge: "),
            "{text}"
        );
        let challenge = text
            .lines()
            .nth(2)
            .unwrap()
            .trim_start_matches("Challenge: ")
            .to_string();
        assert!(challenge.parse::<u32>().is_ok());
        // Asking again gives the same challenge.
        s.handle_input(now, b"Action: Challenge\r\nAuthType: MD5\r\n\r\n");
        assert!(sent_text(&drain(&mut s)).contains(&format!("Challenge: {challenge}\r\n")));
        let key = md5_key(&challenge, "secret");
        assert_eq!(key.len(), 32);
        s.handle_input(
            now,
            format!("Action: Login\r\nAuthType: MD5\r\nUsername: admin\r\nKey: {key}\r\n\r\n")
                .as_bytes(),
        );
        assert!(sent_text(&drain(&mut s)).contains("Authentication accepted"));

        // Wrong key fails; no challenge at all fails.
        let mut s2 = sh.accept(peer(), now, 8).unwrap();
        s2.handle_input(now, b"Action: Challenge\r\nAuthType: MD5\r\n\r\nAction: Login\r\nAuthType: MD5\r\nUsername: admin\r\nKey: 00\r\n\r\n");
        assert!(drain(&mut s2).contains(&SessionOutput::Security(
            SecurityEvent::ChallengeResponseFailed {
                username: "admin".into()
            }
        )));
        let mut s3 = sh.accept(peer(), now, 9).unwrap();
        s3.handle_input(
            now,
            format!("Action: Login\r\nAuthType: MD5\r\nUsername: admin\r\nKey: {key}\r\n\r\n")
                .as_bytes(),
        );
        assert!(s3.is_closed());

        let mut s4 = sh.accept(peer(), now, 9).unwrap();
        drain(&mut s4);
        s4.handle_input(now, b"Action: Challenge\r\nActionID: z\r\n\r\n");
        assert_eq!(
            sent_text(&drain(&mut s4)),
            "Response: Error\r\nActionID: z\r\nMessage: Must specify AuthType\r\n\r\n"
        );
    }

    #[test]
    fn md5_key_known_value() {
        // md5("12345" + "mysecret")
        let mut h = Md5::new();
        h.update(b"12345mysecret");
        assert_eq!(md5_key("12345", "mysecret"), hex::encode(h.finalize()));
        assert_eq!(md5_key("", ""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn permission_denied_before_login_and_logoff_allowed() {
        let sh = shared_with(vec![admin()], |_| {});
        let mut s = sh.accept(peer(), t0(), 1).unwrap();
        drain(&mut s);
        s.handle_input(
            t0(),
            b"Action: Ping\r\nActionID: p\r\n\r\nAction: Originate\r\n\r\n",
        );
        assert_eq!(
            sent_text(&drain(&mut s)),
            "Response: Error\r\nActionID: p\r\nMessage: Permission denied\r\n\r\nResponse: Error\r\nMessage: Permission denied\r\n\r\n"
        );
        s.handle_input(t0(), b"Action: Logoff\r\n\r\n");
        let out = drain(&mut s);
        assert_eq!(
            sent_text(&out),
            "Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n\r\n"
        );
        assert_eq!(out.last(), Some(&SessionOutput::Close));
        assert_eq!(sh.unauthenticated_count(), 0);
    }

    #[test]
    fn missing_action_and_frame_errors() {
        let sh = shared_with(vec![admin()], |_| {});
        let mut s = sh.accept(peer(), t0(), 1).unwrap();
        drain(&mut s);
        s.handle_input(t0(), b"ActionID: 5\r\n\r\n");
        assert_eq!(
            sent_text(&drain(&mut s)),
            "Response: Error\r\nActionID: 5\r\nMessage: Missing action in request\r\n\r\n"
        );
        let mut long = b"ActionID: 6\r\nAction: ".to_vec();
        long.extend(std::iter::repeat_n(b'x', 20_000));
        long.extend_from_slice(b"\r\n\r\n");
        s.handle_input(t0(), &long);
        assert_eq!(
            sent_text(&drain(&mut s)),
            "Response: Error\r\nActionID: 6\r\nMessage: Failed to parse message: line too long\r\n\r\n"
        );
        assert!(!s.is_closed(), "the session survives a framing error");
    }

    #[test]
    fn ping_events_and_unknown() {
        let sh = shared_with(vec![admin()], |_| {});
        let now = t0();
        let mut s = sh.accept(peer(), now, 1).unwrap();
        login(&mut s, now, "admin", "secret");
        s.handle_input(now, b"Action: Ping\r\nActionID: 1\r\n\r\n");
        assert_eq!(
            sent_text(&drain(&mut s)),
            "Response: Success\r\nActionID: 1\r\nPing: Pong\r\nTimestamp: 1700000000.000000\r\n\r\n"
        );
        s.handle_input(now, b"Action: Events\r\nEventMask: off\r\n\r\nAction: Events\r\nEventMask: call\r\n\r\nAction: Events\r\n\r\n");
        assert_eq!(
            sent_text(&drain(&mut s)),
            "Response: Success\r\nEvents: Off\r\n\r\nResponse: Success\r\nEvents: On\r\n\r\nResponse: Error\r\nMessage: Invalid event mask\r\n\r\n"
        );
        assert_eq!(s.event_mask(), Perm::CALL);
        s.handle_input(now, b"Action: FooBar\r\nActionID: u\r\n\r\n");
        assert_eq!(
            sent_text(&drain(&mut s)),
            "Response: Error\r\nActionID: u\r\nMessage: Invalid/unknown command: FooBar. Use Action: ListCommands to show available commands.\r\n\r\n"
        );
    }

    #[test]
    fn actions_go_to_the_pbx_with_permission_check() {
        let limited = AmiUser::new("mon", "pw", Perm::CALL, Perm::REPORTING);
        let sh = shared_with(vec![admin(), limited], |_| {});
        let now = t0();
        let mut s = sh.accept(peer(), now, 1).unwrap();
        login(&mut s, now, "mon", "pw");
        s.handle_input(
            now,
            b"Action: originate\r\nActionID: o\r\n\r\nAction: Status\r\nActionID: st\r\n\r\n",
        );
        let out = drain(&mut s);
        assert!(sent_text(&out).contains("ActionID: o\r\nMessage: Permission denied"));
        let req = out
            .iter()
            .find_map(|o| match o {
                SessionOutput::Action(r) => Some(r.clone()),
                _ => None,
            })
            .expect("Status forwarded (REPORTING intersects)");
        assert_eq!(req.name, "Status");
        assert_eq!(req.username, "mon");
        assert_eq!(req.action_id(), Some("st"));
        s.send(req.list_start("Channel status will follow"));
        s.send(req.list_complete("StatusComplete", 0).finish());
        assert_eq!(
            sent_text(&drain(&mut s)),
            "Response: Success\r\nActionID: st\r\nEventList: start\r\nMessage: Channel status will follow\r\n\r\n\
             Event: StatusComplete\r\nActionID: st\r\nEventList: Complete\r\nListItems: 0\r\n\r\n"
        );
    }

    #[test]
    fn listcommands_filters_by_write_perm() {
        let limited = AmiUser::new("mon", "pw", Perm::CALL, Perm::REPORTING);
        let sh = shared_with(vec![limited], |_| {});
        let mut s = sh.accept(peer(), t0(), 1).unwrap();
        login(&mut s, t0(), "mon", "pw");
        s.handle_input(t0(), b"Action: ListCommands\r\n\r\n");
        let text = sent_text(&drain(&mut s));
        assert!(text.starts_with("Response: Success\r\n"));
        assert!(text.contains("Ping: Keepalive command. (Priv: <none>)\r\n"));
        assert!(text.contains("Status: List channel status. (Priv: system,call,reporting,all)\r\n"));
        assert!(!text.contains("Originate"));
        assert!(!text.contains("Filter:"));
        let challenge = text.find("Challenge:").unwrap();
        assert!(challenge < text.find("Ping:").unwrap(), "sorted");
    }

    #[test]
    fn event_delivery_read_perm_mask_and_filters() {
        let mut u = AmiUser::new("u", "p", Perm::CALL | Perm::SYSTEM, Perm::NONE);
        u.filters.add(
            EventFilter::parse(
                "eventfilter(action(exclude),header(Channel),method(starts_with))",
                "Local/",
            )
            .unwrap(),
        );
        let sh = shared_with(vec![u], |c| c.disabledevents = vec!["VarSet".into()]);
        let now = t0();
        let mut s = sh.accept(peer(), now, 1).unwrap();
        drain(&mut s);
        let hangup = EventBuilder::new("Hangup", Perm::CALL)
            .field("Channel", "PJSIP/a-1")
            .build();
        assert!(!s.deliver(&hangup), "not logged in");
        login(&mut s, now, "u", "p");
        assert!(s.deliver(&hangup));
        assert_eq!(
            drain(&mut s),
            vec![SessionOutput::Send(hangup.wire.clone())]
        );
        let local = EventBuilder::new("Hangup", Perm::CALL)
            .field("Channel", "Local/1@x;1")
            .build();
        assert!(!s.deliver(&local));
        let agi = EventBuilder::new("AGIExecStart", Perm::AGI).build();
        assert!(!s.deliver(&agi), "no agi read permission");
        let mixed = EventBuilder::new("X", Perm::CALL | Perm::AGI).build();
        assert!(!s.deliver(&mixed), "every class bit must be readable");
        let varset = EventBuilder::new("VarSet", Perm::CALL).build();
        assert!(!s.deliver(&varset), "disabled event");
        assert!(s.wants_event(Perm::CALL, "Newchannel", &[]));
        s.handle_input(now, b"Action: Events\r\nEventMask: system\r\n\r\n");
        drain(&mut s);
        assert!(!s.wants_event(Perm::CALL, "Newchannel", &[]));
        assert!(s.wants_event(Perm::SYSTEM, "Reload", &[]));
        assert_eq!(s.stats().events_sent, 1);
    }

    #[test]
    fn login_with_events_off_and_filter_action() {
        let sh = shared_with(vec![admin()], |_| {});
        let now = t0();
        let mut s = sh.accept(peer(), now, 1).unwrap();
        s.handle_input(
            now,
            b"Action: Login\r\nUsername: admin\r\nSecret: secret\r\nEvents: off\r\n\r\n",
        );
        drain(&mut s);
        assert!(!s.wants_event(Perm::CALL, "Hangup", &[]));
        s.handle_input(now, b"Action: Events\r\nEventMask: on\r\n\r\nAction: Filter\r\nOperation: Add\r\nFilter: Event: Hangup\r\n\r\n");
        assert!(
            sent_text(&drain(&mut s)).ends_with("Response: Success\r\nMessage: Success\r\n\r\n")
        );
        assert!(s.wants_event(Perm::CALL, "Hangup", &[]));
        assert!(!s.wants_event(Perm::CALL, "Newchannel", &[]));
        s.handle_input(now, b"Action: Filter\r\nOperation: Add\r\nFilter: ([\r\n\r\nAction: Filter\r\nOperation: Del\r\n\r\n");
        let text = sent_text(&drain(&mut s));
        assert!(text.contains("Filter did not compile."));
        assert!(text.contains("Unknown operation"));
    }

    #[test]
    fn fully_booted_on_login_with_system_read() {
        let sh = shared_with(vec![admin()], |_| {});
        let now = t0();
        sh.set_fully_booted(BootInfo {
            started: now.instant,
            last_reload: now.instant,
        });
        let mut s = sh.accept(peer(), now, 1).unwrap();
        let out = login(&mut s, at(now, 21.0), "admin", "secret");
        assert!(sent_text(&out).ends_with(
            "Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 21\r\nLastReload: 21\r\nStatus: Fully Booted\r\n\r\n"
        ));
        s.handle_input(
            now,
            b"Action: Login\r\nUsername: admin\r\nSecret: secret\r\n\r\n",
        );
        assert!(sent_text(&drain(&mut s)).contains("Already authenticated"));
    }

    #[test]
    fn auth_timeout_closes() {
        let sh = shared_with(vec![admin()], |c| c.authtimeout = Duration::from_secs(5));
        let now = t0();
        let mut s = sh.accept(peer(), now, 1).unwrap();
        drain(&mut s);
        assert_eq!(s.poll_timeout(), Some(now.instant + Duration::from_secs(5)));
        s.handle_timeout(at(now, 4.9));
        assert!(drain(&mut s).is_empty());
        s.handle_timeout(at(now, 5.0));
        assert_eq!(
            drain(&mut s),
            vec![
                SessionOutput::Security(SecurityEvent::AuthTimeout),
                SessionOutput::Close
            ]
        );
        assert_eq!(sh.unauthenticated_count(), 0);
    }

    #[test]
    fn authlimit_refuses_connections() {
        let sh = shared_with(vec![admin()], |c| c.authlimit = 2);
        let a = sh.accept(peer(), t0(), 1).unwrap();
        let mut b = sh.accept(peer(), t0(), 1).unwrap();
        assert_eq!(
            sh.accept(peer(), t0(), 1).unwrap_err(),
            AcceptError::AuthLimit(2)
        );
        login(&mut b, t0(), "admin", "secret");
        let c = sh.accept(peer(), t0(), 1);
        assert!(c.is_ok(), "a login frees a slot");
        drop(a);
        drop(c);
        assert_eq!(sh.unauthenticated_count(), 0);
    }

    #[test]
    fn allowmultiplelogin_no() {
        let mut u = admin();
        u.allowmultiplelogin = false;
        let sh = shared_with(vec![u], |_| {});
        let now = t0();
        let mut a = sh.accept(peer(), now, 1).unwrap();
        login(&mut a, now, "admin", "secret");
        let mut b = sh.accept(peer(), now, 1).unwrap();
        drain(&mut b);
        let out = login(&mut b, now, "admin", "secret");
        assert!(
            out.contains(&SessionOutput::Security(SecurityEvent::SessionLimit {
                username: "admin".into()
            }))
        );
        b.handle_timeout(at(now, 1.0));
        assert!(sent_text(&drain(&mut b)).contains("Message: Login Already In Use"));
        drop(a);
        let mut c = sh.accept(peer(), now, 1).unwrap();
        assert!(
            sent_text(&login(&mut c, now, "admin", "secret")).contains("Authentication accepted")
        );
    }

    #[test]
    fn acl_denies_login() {
        let mut u = admin();
        u.acl
            .rules
            .push(AclRule::parse("0.0.0.0/0", false).unwrap());
        u.acl
            .rules
            .push(AclRule::parse("10.0.0.0/8", true).unwrap());
        let sh = shared_with(vec![u], |_| {});
        let mut s = sh.accept(peer(), t0(), 1).unwrap();
        let out = login(&mut s, t0(), "admin", "secret");
        assert!(
            out.contains(&SessionOutput::Security(SecurityEvent::FailedAcl {
                username: "admin".into()
            }))
        );
        let mut ok = sh
            .accept("10.1.2.3:5000".parse().unwrap(), t0(), 1)
            .unwrap();
        assert!(sent_text(&login(&mut ok, t0(), "admin", "secret")).contains("accepted"));
    }

    #[test]
    fn failed_logins_per_ip_are_rate_limited() {
        let sh = shared_with(vec![admin()], |c| {
            c.authfail_limit = 3;
            c.authfail_window = Duration::from_secs(60);
            c.authfail_block = Duration::from_secs(30);
        });
        let now = t0();
        for _ in 0..3 {
            let mut s = sh.accept(peer(), now, 1).unwrap();
            login(&mut s, now, "admin", "bad");
        }
        assert!(sh.is_blocked(peer().ip(), now.instant));
        assert!(matches!(
            sh.accept(peer(), now, 1),
            Err(AcceptError::Blocked(_))
        ));
        let other: SocketAddr = "127.0.0.2:1".parse().unwrap();
        assert!(sh.accept(other, now, 1).is_ok(), "other IPs unaffected");
        let later = at(now, 31.0);
        let mut s = sh.accept(peer(), later, 1).unwrap();
        assert!(sent_text(&login(&mut s, later, "admin", "secret")).contains("accepted"));
        assert!(!sh.is_blocked(peer().ip(), later.instant));
    }

    #[test]
    fn brokeneventsaction_suppresses_replies() {
        let sh = shared_with(vec![admin()], |c| c.brokeneventsaction = true);
        let mut s = sh.accept(peer(), t0(), 1).unwrap();
        login(&mut s, t0(), "admin", "secret");
        s.handle_input(
            t0(),
            b"Action: Events\r\nEventMask: on\r\n\r\nAction: Events\r\nEventMask: off\r\n\r\n",
        );
        assert_eq!(
            sent_text(&drain(&mut s)),
            "Response: Success\r\nEvents: Off\r\n\r\n"
        );
    }

    #[test]
    fn pipelined_messages_after_logoff_are_ignored() {
        let sh = shared_with(vec![admin()], |_| {});
        let mut s = sh.accept(peer(), t0(), 1).unwrap();
        drain(&mut s);
        s.handle_input(
            t0(),
            b"Action: Logoff\r\n\r\nAction: Login\r\nUsername: admin\r\nSecret: secret\r\n\r\n",
        );
        let out = drain(&mut s);
        assert_eq!(
            out.iter()
                .filter(|o| matches!(o, SessionOutput::Send(_)))
                .count(),
            1
        );
        assert_eq!(out.last(), Some(&SessionOutput::Close));
        s.send(Bytes::from_static(b"late"));
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn action_table_helpers() {
        let mut t = ActionTable::new();
        assert!(!t.register_known("NoSuchAction", ""));
        assert!(t.register_known("dbget", "Get DB entry."));
        assert_eq!(
            t.get("DBGET").unwrap().authority,
            Perm::SYSTEM | Perm::REPORTING
        );
        assert!(t.unregister("DbGet"));
        assert!(t.get("dbget").is_none());
        assert_eq!(asterisk_authority("AGI"), Some(Perm::AGI));
        assert_eq!(
            unknown_command_text("X"),
            "Invalid/unknown command: X. Use Action: ListCommands to show available commands."
        );
    }

    /// Deterministic smoke fuzz: random bytes (biased towards AMI-looking text) never panic,
    /// and the decoder's buffer stays bounded.
    #[test]
    fn random_input_never_panics() {
        let sh = shared_with(vec![admin()], |_| {});
        let mut rng = StdRng::seed_from_u64(0xA41);
        let pieces: [&[u8]; 12] = [
            b"Action: ",
            b"Login",
            b"Username: admin\r\n",
            b"Secret: secret\r\n",
            b"\r\n",
            b"\n",
            b"Events: ",
            b"off",
            b":",
            b"\xff\xfe",
            b"ActionID: 1\r\n",
            b"Challenge",
        ];
        let ev = EventBuilder::new("Hangup", Perm::CALL)
            .field("Channel", "PJSIP/a-1")
            .build();
        for round in 0..300 {
            let now = t0();
            let Ok(mut s) = sh.accept(peer(), now, round) else {
                continue;
            };
            for step in 0..40 {
                let mut data = Vec::new();
                for _ in 0..rng.gen_range(0..6) {
                    if rng.gen_bool(0.7) {
                        data.extend_from_slice(pieces[rng.gen_range(0..pieces.len())]);
                    } else {
                        let n = rng.gen_range(0..64);
                        data.extend((0..n).map(|_| rng.gen::<u8>()));
                    }
                }
                s.handle_input(at(now, step as f64 * 0.1), &data);
                s.deliver(&ev);
                while let Some(o) = s.poll_output() {
                    if let SessionOutput::Action(req) = o {
                        s.send(req.unknown());
                    }
                }
                assert!(s.decoder.buffered() <= codec::DEFAULT_MAX_LINE + data.len());
            }
        }
        assert!(sh.unauthenticated_count() <= 1);
    }
}
