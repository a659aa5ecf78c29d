//! RFC 3261 §17 transactions as a sans-IO state machine (with the RFC 6026 Accepted
//! states), driven by a shell:
//!
//! * inputs: [`TransactionLayer::handle_datagram`] / [`TransactionLayer::handle_message`]
//!   (bytes or a parsed message from the network), [`TransactionLayer::handle_timeout`],
//!   and the TU's commands [`TransactionLayer::send_request`],
//!   [`TransactionLayer::send_response`], [`TransactionLayer::cancel`],
//!   [`TransactionLayer::send_stateless`], [`TransactionLayer::transport_error`];
//! * outputs: [`TransactionLayer::poll_transmit`], [`TransactionLayer::poll_event`],
//!   [`TransactionLayer::poll_timeout`].
//!
//! Drain contract (as str0m/quinn): after every input, drain `poll_transmit` and
//! `poll_event` until they return `None`, then (re)arm one timer at `poll_timeout()` and
//! call `handle_timeout(now)` when it fires. `now` must never go backwards.
//!
//! What the layer does beyond the bare §17 machines, so that the TU does not have to:
//! * adds `received`/`rport` to the top Via of incoming requests (RFC 3581) and sends
//!   responses back to the source address when `rport` is present or `force_rport` is set;
//! * sends `100 Trying` for INVITE (at once, or after `trying_delay` if the TU is silent);
//! * answers CANCEL (RFC 3261 §9.2): 200 to the CANCEL and 487 to the INVITE if it is
//!   still proceeding, then reports [`Event::Cancelled`]; 481 if nothing matches;
//! * retransmits a UAS 2xx to INVITE until the ACK arrives (§13.3.1.4), matching the
//!   ACK by Call-ID, CSeq and From tag, and reports [`Timer::L`] if none comes;
//! * [`TransactionLayer::cancel`] waits for a provisional response before sending CANCEL
//!   (§9.1) and gives the INVITE 64*T1 to end afterwards.
//!
//! The states are one enum per transaction rather than rustls-style consuming types:
//! transactions live in a map keyed by [`TxId`] and are touched by timers and messages
//! in any order, so an in-place enum keeps the code short.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::message::{
    new_tag, HeaderName, Method, Request, Response, SipMessage, Transport, Via, BRANCH_COOKIE,
};
use super::parse::{parse_message, SipParseError};

/// Timer values (RFC 3261 Table 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, 500 ms.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network, 5 s.
    pub t4: Duration,
    /// Wait for response retransmissions after a non-2xx to INVITE (UDP), at least 32 s.
    pub timer_d: Duration,
    /// When to send `100 Trying` for an INVITE the TU has not answered: `Some(ZERO)` =
    /// at once, `Some(200ms)` = RFC 3261 §17.2.1's "unless the TU answers within 200 ms",
    /// `None` = never.
    pub trying_delay: Option<Duration>,
    /// Always send responses to the request's source address and port (symmetric
    /// response routing, Asterisk's `force_rport`), even without `;rport`.
    pub force_rport: bool,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
            trying_delay: Some(Duration::ZERO),
            force_rport: true,
        }
    }
}

impl TimerConfig {
    fn t64(&self) -> Duration {
        self.t1 * 64
    }
}

/// The transaction timers. `Trying`, `Retransmit2xx`, `CancelWait` and `ServerGuard`
/// are this layer's additions (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE request retransmit (UDP).
    A,
    /// INVITE transaction timeout.
    B,
    /// Wait for response retransmits after a non-2xx final (INVITE client).
    D,
    /// Non-INVITE request retransmit (UDP).
    E,
    /// Non-INVITE transaction timeout.
    F,
    /// INVITE final response retransmit (UDP).
    G,
    /// Wait for ACK of a non-2xx final.
    H,
    /// Wait for ACK retransmits.
    I,
    /// Wait for non-INVITE request retransmits.
    J,
    /// Wait for non-INVITE response retransmits.
    K,
    /// RFC 6026: INVITE server Accepted state; reported if the 2xx was never ACKed.
    L,
    /// RFC 6026: INVITE client Accepted state.
    M,
    /// Send 100 Trying for an unanswered INVITE.
    Trying,
    /// Retransmit a 2xx to INVITE until the ACK (UDP).
    Retransmit2xx,
    /// 64*T1 after CANCEL without a final response to the INVITE.
    CancelWait,
    /// A non-INVITE request the TU has not answered in 64*T1.
    ServerGuard,
}

const TIMERS: [Timer; 16] = [
    Timer::A,
    Timer::B,
    Timer::D,
    Timer::E,
    Timer::F,
    Timer::G,
    Timer::H,
    Timer::I,
    Timer::J,
    Timer::K,
    Timer::L,
    Timer::M,
    Timer::Trying,
    Timer::Retransmit2xx,
    Timer::CancelWait,
    Timer::ServerGuard,
];

impl Timer {
    fn idx(self) -> usize {
        self as usize
    }
}

/// A transaction handle (an index, not a reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxKind {
    InviteClient,
    NonInviteClient,
    InviteServer,
    NonInviteServer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    Calling,
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

/// Bytes to send. `tx` names the transaction, so a send failure can be reported back
/// with [`TransactionLayer::transport_error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dest: SocketAddr,
    pub transport: Transport,
    pub data: Bytes,
    pub tx: Option<TxId>,
}

/// What the transaction layer tells the TU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new request. `tx` is its server transaction; `None` for an ACK to a 2xx, which
    /// belongs to the dialog, not to a transaction.
    Request {
        tx: Option<TxId>,
        request: Request,
        source: SocketAddr,
        transport: Transport,
    },
    /// A response for client transaction `tx` (2xx retransmissions to INVITE included:
    /// re-send the ACK). `None`: a stray response that matched no transaction.
    Response {
        tx: Option<TxId>,
        response: Response,
        source: SocketAddr,
        transport: Transport,
    },
    /// The INVITE server transaction `tx` was cancelled; the layer has already answered
    /// 200 to the CANCEL and 487 to the INVITE.
    Cancelled { tx: TxId, cancel: Request },
    /// `tx` timed out: B/F (no final response), H (no ACK for a non-2xx), L (no ACK for
    /// a 2xx: send BYE), CancelWait, ServerGuard (the TU never answered).
    Timeout { tx: TxId, timer: Timer },
    /// The shell reported a send failure for `tx`.
    TransportError { tx: TxId },
    /// `tx` is gone; its id will not be used again.
    Terminated { tx: TxId },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    #[error(transparent)]
    Parse(#[from] SipParseError),
    #[error("the request's top Via has no branch")]
    NoBranch,
    #[error("ACK is not sent in a transaction: use send_stateless")]
    AckNotTransaction,
    #[error("a transaction with this branch and method already exists")]
    Duplicate,
    #[error("no transaction {0:?}")]
    UnknownTransaction(TxId),
    #[error("{0:?} is not a server transaction")]
    NotServer(TxId),
    #[error("{0:?} is not an INVITE client transaction")]
    NotInviteClient(TxId),
    #[error("{tx:?} cannot do this in state {state:?}")]
    InvalidState { tx: TxId, state: TxState },
    #[error("status {0} is not a response code")]
    BadStatus(u16),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Client {
        branch: String,
        method: Method,
    },
    /// RFC 3261 §17.2.3 (branch with the magic cookie). ACK is stored as INVITE.
    Server {
        branch: String,
        sent_by: String,
        method: Method,
    },
    /// RFC 2543 peers (no cookie): Call-ID, CSeq number, From tag, top Via.
    Legacy {
        call_id: String,
        cseq: u32,
        from_tag: String,
        sent_by: String,
        method: Method,
    },
}

fn server_key(req: &Request, via: &Via) -> Result<Key, SipParseError> {
    let method = if req.method == Method::Ack {
        Method::Invite
    } else {
        req.method.clone()
    };
    Ok(match via.branch() {
        Some(b) if b.starts_with(BRANCH_COOKIE) => Key::Server {
            branch: b.to_string(),
            sent_by: via.sent_by(),
            method,
        },
        _ => Key::Legacy {
            call_id: req.headers.call_id()?.to_string(),
            cseq: req.headers.cseq()?.seq,
            from_tag: req.headers.from()?.tag().unwrap_or("").to_string(),
            sent_by: via.sent_by(),
            method,
        },
    })
}

/// (Call-ID, CSeq number, From tag): how an ACK for a 2xx finds its INVITE.
type AckKey = (String, u32, String);

fn ack_key(req: &Request) -> Option<AckKey> {
    Some((
        req.headers.call_id().ok()?.to_string(),
        req.headers.cseq().ok()?.seq,
        req.headers.from().ok()?.tag().unwrap_or("").to_string(),
    ))
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same Request-URI,
/// Call-ID, From, CSeq number and top Via as the INVITE, To from the response, the
/// INVITE's Route headers.
pub fn build_ack(invite: &Request, response: &Response) -> Result<Request, SipParseError> {
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    let h = &invite.headers;
    let via = h
        .get(&HeaderName::VIA)
        .ok_or(SipParseError::MissingHeader("Via"))?;
    ack.headers.push(HeaderName::VIA, via);
    ack.headers.push(HeaderName::MAX_FORWARDS, "70");
    for route in h.get_all(&HeaderName::ROUTE) {
        ack.headers.push(HeaderName::ROUTE, route);
    }
    ack.headers.push(
        HeaderName::FROM,
        h.get(&HeaderName::FROM)
            .ok_or(SipParseError::MissingHeader("From"))?,
    );
    let to = response
        .headers
        .get(&HeaderName::TO)
        .ok_or(SipParseError::MissingHeader("To"))?;
    ack.headers.push(HeaderName::TO, to);
    ack.headers.push(HeaderName::CALL_ID, h.call_id()?);
    ack.headers
        .push(HeaderName::CSEQ, format!("{} ACK", h.cseq()?.seq));
    Ok(ack)
}

/// The CANCEL for an INVITE (RFC 3261 §9.1): same Request-URI, Call-ID, From, To, CSeq
/// number, top Via (so the same branch) and Route headers.
pub fn build_cancel(invite: &Request) -> Result<Request, SipParseError> {
    let mut c = Request::new(Method::Cancel, invite.uri.clone());
    let h = &invite.headers;
    let via = h
        .get(&HeaderName::VIA)
        .ok_or(SipParseError::MissingHeader("Via"))?;
    c.headers.push(HeaderName::VIA, via);
    c.headers.push(HeaderName::MAX_FORWARDS, "70");
    for route in h.get_all(&HeaderName::ROUTE) {
        c.headers.push(HeaderName::ROUTE, route);
    }
    for (name, label) in [
        (HeaderName::FROM, "From"),
        (HeaderName::TO, "To"),
        (HeaderName::CALL_ID, "Call-ID"),
    ] {
        let v = h.get(&name).ok_or(SipParseError::MissingHeader(label))?;
        c.headers.push(name, v);
    }
    c.headers
        .push(HeaderName::CSEQ, format!("{} CANCEL", h.cseq()?.seq));
    Ok(c)
}

/// Where a response goes (RFC 3261 §18.2.2 and RFC 3581).
fn response_dest(
    via: &Via,
    source: SocketAddr,
    transport: Transport,
    force_rport: bool,
) -> SocketAddr {
    if transport.is_reliable() || force_rport || via.rport().is_some() {
        return source;
    }
    let ip = via.received_ip().or(via.host.ip()).unwrap_or(source.ip());
    SocketAddr::new(ip, via.port.unwrap_or(5060))
}

struct Tx {
    kind: TxKind,
    state: TxState,
    key: Key,
    remote: SocketAddr,
    transport: Transport,
    request: Request,
    /// Client: the request as sent. Server: the last response sent.
    wire: Option<Bytes>,
    /// INVITE client: the ACK for a non-2xx final response.
    ack: Option<Bytes>,
    /// Server: the last response sent (its To tag is reused for 487).
    last_response: Option<Response>,
    deadlines: [Option<Instant>; TIMERS.len()],
    interval: Duration,
    /// A CANCEL sent by [`TransactionLayer::cancel`]: nothing is reported to the TU.
    internal: bool,
    pending_cancel: bool,
    acked: bool,
    ack_key: Option<AckKey>,
}

/// Output queues and the timer heap, split from the transaction map for borrowing.
#[derive(Default)]
struct Out {
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    heap: BinaryHeap<Reverse<(Instant, u64, usize)>>,
}

impl Out {
    fn arm(&mut self, id: TxId, tx: &mut Tx, timer: Timer, at: Instant) {
        tx.deadlines[timer.idx()] = Some(at);
        self.heap.push(Reverse((at, id.0, timer.idx())));
    }
    fn send(&mut self, id: TxId, tx: &Tx, data: Bytes) {
        self.transmits.push_back(Transmit {
            dest: tx.remote,
            transport: tx.transport,
            data,
            tx: Some(id),
        });
    }
    fn event(&mut self, tx: &Tx, e: Event) {
        if !tx.internal {
            self.events.push_back(e);
        }
    }
}

fn disarm(tx: &mut Tx, timers: &[Timer]) {
    for t in timers {
        tx.deadlines[t.idx()] = None;
    }
}

/// The RFC 3261 transaction layer. See the module docs for the drive loop.
pub struct TransactionLayer {
    config: TimerConfig,
    txs: HashMap<TxId, Tx>,
    keys: HashMap<Key, TxId>,
    acks: HashMap<AckKey, TxId>,
    out: Out,
    next_id: u64,
}

impl TransactionLayer {
    /// T1 is raised to at least 1 ms and T2 to at least T1, so timers always advance.
    pub fn new(mut config: TimerConfig) -> Self {
        config.t1 = config.t1.max(Duration::from_millis(1));
        config.t2 = config.t2.max(config.t1);
        TransactionLayer {
            config,
            txs: HashMap::new(),
            keys: HashMap::new(),
            acks: HashMap::new(),
            out: Out::default(),
            next_id: 1,
        }
    }

    pub fn config(&self) -> &TimerConfig {
        &self.config
    }
    /// Live transactions.
    pub fn len(&self) -> usize {
        self.txs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }
    pub fn state(&self, tx: TxId) -> Option<TxState> {
        self.txs.get(&tx).map(|t| t.state)
    }
    pub fn kind(&self, tx: TxId) -> Option<TxKind> {
        self.txs.get(&tx).map(|t| t.kind)
    }
    /// The request that created `tx` (for a server transaction: with received/rport set).
    pub fn request(&self, tx: TxId) -> Option<&Request> {
        self.txs.get(&tx).map(|t| &t.request)
    }
    /// Where `tx` sends (the peer).
    pub fn remote(&self, tx: TxId) -> Option<SocketAddr> {
        self.txs.get(&tx).map(|t| t.remote)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }
    /// The next instant `handle_timeout` must be called; `None` when no timer is armed.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, id, t))) = self.out.heap.peek() {
            if self
                .txs
                .get(&TxId(id))
                .is_some_and(|tx| tx.deadlines[t] == Some(at))
            {
                return Some(at);
            }
            self.out.heap.pop();
        }
        None
    }

    fn alloc(&mut self) -> TxId {
        let id = TxId(self.next_id);
        self.next_id += 1;
        id
    }

    fn new_tx(
        &self,
        kind: TxKind,
        key: Key,
        remote: SocketAddr,
        transport: Transport,
        request: Request,
    ) -> Tx {
        Tx {
            kind,
            state: match kind {
                TxKind::InviteClient => TxState::Calling,
                TxKind::NonInviteClient | TxKind::NonInviteServer => TxState::Trying,
                TxKind::InviteServer => TxState::Proceeding,
            },
            key,
            remote,
            transport,
            request,
            wire: None,
            ack: None,
            last_response: None,
            deadlines: [None; TIMERS.len()],
            interval: self.config.t1,
            internal: false,
            pending_cancel: false,
            acked: false,
            ack_key: None,
        }
    }

    /// Remove `id` if it reached Terminated.
    fn reap(&mut self, id: TxId) {
        if self
            .txs
            .get(&id)
            .is_some_and(|t| t.state == TxState::Terminated)
        {
            self.remove(id);
        }
    }

    fn remove(&mut self, id: TxId) {
        if let Some(tx) = self.txs.remove(&id) {
            if self.keys.get(&tx.key) == Some(&id) {
                self.keys.remove(&tx.key);
            }
            if let Some(k) = &tx.ack_key {
                if self.acks.get(k) == Some(&id) {
                    self.acks.remove(k);
                }
            }
            self.out.event(&tx, Event::Terminated { tx: id });
        }
    }

    // ------------------------------------------------------------------ TU commands

    /// Start a client transaction for `request` (anything but ACK) and send it to `dest`.
    /// The top Via must carry a branch (see [`super::message::new_branch`]).
    pub fn send_request(
        &mut self,
        now: Instant,
        dest: SocketAddr,
        transport: Transport,
        request: Request,
    ) -> Result<TxId, TxError> {
        let id = self.alloc();
        self.start_client(now, id, dest, transport, request, false)?;
        Ok(id)
    }

    fn start_client(
        &mut self,
        now: Instant,
        id: TxId,
        dest: SocketAddr,
        transport: Transport,
        request: Request,
        internal: bool,
    ) -> Result<(), TxError> {
        if request.method == Method::Ack {
            return Err(TxError::AckNotTransaction);
        }
        let via = request.headers.top_via()?;
        let branch = via
            .branch()
            .filter(|b| !b.is_empty())
            .ok_or(TxError::NoBranch)?;
        let key = Key::Client {
            branch: branch.to_string(),
            method: request.method.clone(),
        };
        if self.keys.contains_key(&key) {
            return Err(TxError::Duplicate);
        }
        let kind = if request.method == Method::Invite {
            TxKind::InviteClient
        } else {
            TxKind::NonInviteClient
        };
        let wire = Bytes::from(request.to_bytes());
        let mut tx = self.new_tx(kind, key.clone(), dest, transport, request);
        tx.internal = internal;
        tx.wire = Some(wire.clone());
        self.out.send(id, &tx, wire);
        let c = &self.config;
        let (retransmit, timeout) = match kind {
            TxKind::InviteClient => (Timer::A, Timer::B),
            _ => (Timer::E, Timer::F),
        };
        if !transport.is_reliable() {
            self.out.arm(id, &mut tx, retransmit, now + c.t1);
        }
        self.out.arm(id, &mut tx, timeout, now + c.t64());
        self.keys.insert(key, id);
        self.txs.insert(id, tx);
        Ok(())
    }

    /// Send a response on server transaction `tx`.
    pub fn send_response(
        &mut self,
        now: Instant,
        tx: TxId,
        response: Response,
    ) -> Result<(), TxError> {
        if !(100..700).contains(&response.status) {
            return Err(TxError::BadStatus(response.status));
        }
        let c = self.config.clone();
        let t = self
            .txs
            .get_mut(&tx)
            .ok_or(TxError::UnknownTransaction(tx))?;
        let status = response.status;
        let invalid = TxError::InvalidState { tx, state: t.state };
        let wire = Bytes::from(response.to_bytes());
        let reliable = t.transport.is_reliable();
        match (t.kind, t.state) {
            (TxKind::InviteServer, TxState::Proceeding) => {
                disarm(t, &[Timer::Trying]);
                self.out.send(tx, t, wire.clone());
                t.wire = Some(wire);
                if (200..300).contains(&status) {
                    t.state = TxState::Accepted;
                    self.out.arm(tx, t, Timer::L, now + c.t64());
                    if !reliable {
                        t.interval = c.t1;
                        self.out.arm(tx, t, Timer::Retransmit2xx, now + c.t1);
                    }
                    if let Some(k) = ack_key(&t.request) {
                        self.acks.insert(k.clone(), tx);
                        t.ack_key = Some(k);
                    }
                } else if status >= 300 {
                    t.state = TxState::Completed;
                    if !reliable {
                        t.interval = c.t1;
                        self.out.arm(tx, t, Timer::G, now + c.t1);
                    }
                    self.out.arm(tx, t, Timer::H, now + c.t64());
                }
                t.last_response = Some(response);
            }
            (TxKind::InviteServer, TxState::Accepted) if (200..300).contains(&status) => {
                // Another 2xx (the TU re-sending, or a second fork's answer).
                self.out.send(tx, t, wire.clone());
                t.wire = Some(wire);
                t.last_response = Some(response);
            }
            (TxKind::NonInviteServer, TxState::Trying | TxState::Proceeding) => {
                self.out.send(tx, t, wire.clone());
                t.wire = Some(wire);
                t.last_response = Some(response);
                if status < 200 {
                    t.state = TxState::Proceeding;
                } else {
                    disarm(t, &[Timer::ServerGuard]);
                    t.state = TxState::Completed;
                    if reliable {
                        t.state = TxState::Terminated;
                    } else {
                        self.out.arm(tx, t, Timer::J, now + c.t64());
                    }
                }
            }
            (TxKind::InviteClient | TxKind::NonInviteClient, _) => {
                return Err(TxError::NotServer(tx))
            }
            _ => return Err(invalid),
        }
        self.reap(tx);
        Ok(())
    }

    /// Cancel INVITE client transaction `tx` (RFC 3261 §9.1). In Calling the CANCEL waits
    /// for the first provisional response. The INVITE's own final response (487, or a
    /// 2xx that crossed the CANCEL) still arrives as an [`Event::Response`].
    pub fn cancel(&mut self, now: Instant, tx: TxId) -> Result<(), TxError> {
        let t64 = self.config.t64();
        let t = self
            .txs
            .get_mut(&tx)
            .ok_or(TxError::UnknownTransaction(tx))?;
        if t.kind != TxKind::InviteClient {
            return Err(TxError::NotInviteClient(tx));
        }
        match t.state {
            TxState::Calling => {
                t.pending_cancel = true;
                Ok(())
            }
            TxState::Proceeding => {
                if t.pending_cancel || t.deadlines[Timer::CancelWait.idx()].is_some() {
                    return Ok(()); // already cancelling
                }
                self.out.arm(tx, t, Timer::CancelWait, now + t64);
                self.send_cancel(now, tx)
            }
            state => Err(TxError::InvalidState { tx, state }),
        }
    }

    fn send_cancel(&mut self, now: Instant, invite_tx: TxId) -> Result<(), TxError> {
        let Some(t) = self.txs.get(&invite_tx) else {
            return Ok(());
        };
        let cancel = build_cancel(&t.request)?;
        let (dest, transport) = (t.remote, t.transport);
        let id = self.alloc();
        self.start_client(now, id, dest, transport, cancel, true)
    }

    /// Send a message outside any transaction (an ACK for a 2xx, a stateless response).
    pub fn send_stateless(&mut self, dest: SocketAddr, transport: Transport, msg: &SipMessage) {
        self.out.transmits.push_back(Transmit {
            dest,
            transport,
            data: Bytes::from(msg.to_bytes()),
            tx: None,
        });
    }

    /// The shell could not send a [`Transmit`] of `tx`: report it and end the transaction.
    pub fn transport_error(&mut self, tx: TxId) {
        if let Some(t) = self.txs.get_mut(&tx) {
            self.out.event(t, Event::TransportError { tx });
            t.state = TxState::Terminated;
            self.reap(tx);
        }
    }

    // ------------------------------------------------------------------ network input

    /// Parse a datagram (or a frame cut by [`super::parse::frame_stream`]) and handle it.
    /// A parse error is returned and nothing else happens.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        data: &[u8],
    ) -> Result<(), TxError> {
        let msg = parse_message(data)?;
        self.handle_message(now, source, transport, msg)
    }

    pub fn handle_message(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        msg: SipMessage,
    ) -> Result<(), TxError> {
        match msg {
            SipMessage::Request(r) => self.on_request(now, source, transport, r),
            SipMessage::Response(r) => self.on_response(now, source, transport, r),
        }
    }

    fn on_request(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        mut req: Request,
    ) -> Result<(), TxError> {
        let mut via = req.headers.top_via()?;
        if via.rport().is_some() {
            via.set_rport(source.port());
            via.set_received(source.ip());
            req.headers.set_top_via(&via);
        } else if via.host.ip() != Some(source.ip()) {
            via.set_received(source.ip());
            req.headers.set_top_via(&via);
        }
        let key = server_key(&req, &via)?;

        if req.method == Method::Ack {
            return self.on_ack(now, source, transport, key, req);
        }
        if let Some(&id) = self.keys.get(&key) {
            // A retransmission: repeat the last response where the state says so.
            if let Some(t) = self.txs.get(&id) {
                let resend = match (t.kind, t.state) {
                    (
                        TxKind::InviteServer | TxKind::NonInviteServer,
                        TxState::Proceeding | TxState::Completed,
                    ) => t.wire.clone(),
                    _ => None,
                };
                if let Some(w) = resend {
                    self.out.send(id, t, w);
                }
            }
            return Ok(());
        }

        let dest = response_dest(&via, source, transport, self.config.force_rport);
        let id = self.alloc();
        let kind = if req.method == Method::Invite {
            TxKind::InviteServer
        } else {
            TxKind::NonInviteServer
        };
        let mut tx = self.new_tx(kind, key.clone(), dest, transport, req.clone());
        self.keys.insert(key.clone(), id);

        if req.method == Method::Cancel {
            tx.internal = true;
            self.txs.insert(id, tx);
            return self.on_cancel(now, id, key, req);
        }
        match kind {
            TxKind::InviteServer => match self.config.trying_delay {
                Some(d) if d.is_zero() => {
                    let trying = Bytes::from(Response::from_request(&req, 100).to_bytes());
                    self.out.send(id, &tx, trying.clone());
                    tx.wire = Some(trying);
                }
                Some(d) => self.out.arm(id, &mut tx, Timer::Trying, now + d),
                None => {}
            },
            _ => self
                .out
                .arm(id, &mut tx, Timer::ServerGuard, now + self.config.t64()),
        }
        self.txs.insert(id, tx);
        self.out.events.push_back(Event::Request {
            tx: Some(id),
            request: req,
            source,
            transport,
        });
        Ok(())
    }

    fn on_ack(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        key: Key,
        req: Request,
    ) -> Result<(), TxError> {
        let t4 = self.config.t4;
        if let Some(&id) = self.keys.get(&key) {
            if let Some(t) = self.txs.get_mut(&id) {
                if t.kind == TxKind::InviteServer {
                    match t.state {
                        TxState::Completed => {
                            disarm(t, &[Timer::G, Timer::H]);
                            t.state = TxState::Confirmed;
                            if t.transport.is_reliable() {
                                t.state = TxState::Terminated;
                            } else {
                                self.out.arm(id, t, Timer::I, now + t4);
                            }
                            self.reap(id);
                            return Ok(());
                        }
                        TxState::Accepted => {
                            // A peer that reuses the INVITE branch for the 2xx ACK.
                            t.acked = true;
                            disarm(t, &[Timer::Retransmit2xx]);
                        }
                        _ => return Ok(()), // Confirmed: absorb; Proceeding: bogus
                    }
                }
            }
        } else if let Some(k) = ack_key(&req) {
            if let Some(&id) = self.acks.get(&k) {
                if let Some(t) = self.txs.get_mut(&id) {
                    t.acked = true;
                    disarm(t, &[Timer::Retransmit2xx]);
                }
            }
        }
        self.out.events.push_back(Event::Request {
            tx: None,
            request: req,
            source,
            transport,
        });
        Ok(())
    }

    fn on_cancel(
        &mut self,
        now: Instant,
        cancel_id: TxId,
        key: Key,
        cancel: Request,
    ) -> Result<(), TxError> {
        let invite_key = match key {
            Key::Server {
                branch, sent_by, ..
            } => Key::Server {
                branch,
                sent_by,
                method: Method::Invite,
            },
            Key::Legacy {
                call_id,
                cseq,
                from_tag,
                sent_by,
                ..
            } => Key::Legacy {
                call_id,
                cseq,
                from_tag,
                sent_by,
                method: Method::Invite,
            },
            k @ Key::Client { .. } => k,
        };
        let invite = self
            .keys
            .get(&invite_key)
            .copied()
            .and_then(|id| self.txs.get(&id).map(|t| (id, t)));
        let Some((invite_id, inv)) = invite else {
            let r = Response::from_request(&cancel, 481).with_to_tag(&new_tag());
            return self.send_response(now, cancel_id, r);
        };
        // The To tag of the INVITE's provisional response, if it had one (RFC 3261 §9.2).
        let to_tag = inv
            .last_response
            .as_ref()
            .and_then(|r| r.headers.to().ok())
            .and_then(|to| to.tag().map(str::to_string))
            .unwrap_or_else(new_tag);
        let proceeding = inv.state == TxState::Proceeding;
        let r487 = Response::from_request(&inv.request, 487).with_to_tag(&to_tag);
        self.send_response(
            now,
            cancel_id,
            Response::from_request(&cancel, 200).with_to_tag(&to_tag),
        )?;
        if proceeding {
            self.send_response(now, invite_id, r487)?;
            self.out.events.push_back(Event::Cancelled {
                tx: invite_id,
                cancel,
            });
        }
        Ok(())
    }

    fn on_response(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        resp: Response,
    ) -> Result<(), TxError> {
        let via = resp.headers.top_via()?;
        let cseq = resp.headers.cseq()?;
        let key = via.branch().map(|b| Key::Client {
            branch: b.to_string(),
            method: cseq.method,
        });
        let Some(id) = key.and_then(|k| self.keys.get(&k).copied()) else {
            self.out.events.push_back(Event::Response {
                tx: None,
                response: resp,
                source,
                transport,
            });
            return Ok(());
        };
        let c = self.config.clone();
        let Some(t) = self.txs.get_mut(&id) else {
            return Ok(());
        };
        let status = resp.status;
        let reliable = t.transport.is_reliable();
        let event = Event::Response {
            tx: Some(id),
            response: resp.clone(),
            source,
            transport,
        };
        match (t.kind, t.state) {
            (TxKind::InviteClient, TxState::Calling | TxState::Proceeding) => {
                disarm(t, &[Timer::A, Timer::B]);
                if status < 200 {
                    t.state = TxState::Proceeding;
                    self.out.event(t, event);
                } else if status < 300 {
                    disarm(t, &[Timer::CancelWait]);
                    t.pending_cancel = false;
                    t.state = TxState::Accepted;
                    self.out.arm(id, t, Timer::M, now + c.t64());
                    self.out.event(t, event);
                } else {
                    disarm(t, &[Timer::CancelWait]);
                    t.pending_cancel = false;
                    let ack = Bytes::from(build_ack(&t.request, &resp)?.to_bytes());
                    self.out.send(id, t, ack.clone());
                    t.ack = Some(ack);
                    t.state = TxState::Completed;
                    self.out.event(t, event);
                    if reliable {
                        t.state = TxState::Terminated;
                    } else {
                        self.out.arm(id, t, Timer::D, now + c.timer_d);
                    }
                }
            }
            (TxKind::InviteClient, TxState::Completed) if status >= 300 => {
                if let Some(ack) = t.ack.clone() {
                    self.out.send(id, t, ack);
                }
            }
            (TxKind::InviteClient, TxState::Accepted) if (200..300).contains(&status) => {
                self.out.event(t, event);
            }
            (TxKind::NonInviteClient, TxState::Trying | TxState::Proceeding) => {
                if status < 200 {
                    t.state = TxState::Proceeding;
                } else {
                    disarm(t, &[Timer::E, Timer::F]);
                    t.state = TxState::Completed;
                }
                self.out.event(t, event);
                if t.state == TxState::Completed {
                    if reliable {
                        t.state = TxState::Terminated;
                    } else {
                        self.out.arm(id, t, Timer::K, now + c.t4);
                    }
                }
            }
            _ => {} // absorbed
        }
        let send_cancel = t.pending_cancel && t.state == TxState::Proceeding;
        if send_cancel {
            t.pending_cancel = false;
            self.out.arm(id, t, Timer::CancelWait, now + c.t64());
            self.send_cancel(now, id)?;
        }
        self.reap(id);
        Ok(())
    }

    // ------------------------------------------------------------------ timers

    /// Fire every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, raw_id, t))) = self.out.heap.peek() {
            if at > now {
                break;
            }
            self.out.heap.pop();
            let id = TxId(raw_id);
            let Some(tx) = self.txs.get_mut(&id) else {
                continue;
            };
            if tx.deadlines[t] != Some(at) {
                continue; // re-armed or disarmed since
            }
            tx.deadlines[t] = None;
            self.fire(now, id, TIMERS[t]);
            self.reap(id);
        }
    }

    fn fire(&mut self, now: Instant, id: TxId, timer: Timer) {
        let c = &self.config;
        let Some(t) = self.txs.get_mut(&id) else {
            return;
        };
        let out = &mut self.out;
        match timer {
            Timer::A | Timer::E
                if matches!(
                    t.state,
                    TxState::Calling | TxState::Trying | TxState::Proceeding
                ) =>
            {
                if let Some(w) = t.wire.clone() {
                    out.send(id, t, w);
                }
                t.interval = match (timer, t.state) {
                    (Timer::A, _) => t.interval * 2,
                    (_, TxState::Proceeding) => c.t2,
                    _ => (t.interval * 2).min(c.t2),
                };
                out.arm(id, t, timer, now + t.interval);
            }
            Timer::G if t.state == TxState::Completed => {
                if let Some(w) = t.wire.clone() {
                    out.send(id, t, w);
                }
                t.interval = (t.interval * 2).min(c.t2);
                out.arm(id, t, timer, now + t.interval);
            }
            Timer::Retransmit2xx if t.state == TxState::Accepted && !t.acked => {
                if let Some(w) = t.wire.clone() {
                    out.send(id, t, w);
                }
                t.interval = (t.interval * 2).min(c.t2);
                out.arm(id, t, timer, now + t.interval);
            }
            Timer::Trying if t.state == TxState::Proceeding && t.wire.is_none() => {
                let trying = Bytes::from(Response::from_request(&t.request, 100).to_bytes());
                out.send(id, t, trying.clone());
                t.wire = Some(trying);
            }
            Timer::B | Timer::F | Timer::H | Timer::CancelWait | Timer::ServerGuard => {
                out.event(t, Event::Timeout { tx: id, timer });
                t.state = TxState::Terminated;
            }
            Timer::L => {
                if !t.acked {
                    out.event(t, Event::Timeout { tx: id, timer });
                }
                t.state = TxState::Terminated;
            }
            Timer::D | Timer::I | Timer::J | Timer::K | Timer::M => t.state = TxState::Terminated,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::SipMessage;

    const PEER: &str = "192.0.2.10:5060";

    fn peer() -> SocketAddr {
        PEER.parse().unwrap()
    }

    fn parse(s: &str) -> SipMessage {
        parse_message(s.replace('\n', "\r\n").as_bytes()).unwrap()
    }

    fn mkreq(method: &str, branch: &str, extra: &str) -> Request {
        let m = parse(&format!(
            "{method} sip:bob@192.0.2.10 SIP/2.0\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\n\
Max-Forwards: 70\n\
From: <sip:alice@192.0.2.1>;tag=ft\n\
To: <sip:bob@192.0.2.10>\n\
Call-ID: call-1@192.0.2.1\n\
CSeq: 7 {method}\n\
{extra}Content-Length: 0\n\n"
        ));
        match m {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    fn response_to(req: &Request, status: u16, to_tag: Option<&str>) -> Vec<u8> {
        let mut r = Response::from_request(req, status);
        if let Some(t) = to_tag {
            r.set_to_tag(t);
        }
        r.to_bytes()
    }

    type Log<T> = Vec<(Duration, T)>;

    struct Harness {
        layer: TransactionLayer,
        t0: Instant,
        now: Instant,
        sent: Log<Transmit>,
        events: Log<Event>,
    }

    impl Harness {
        fn new(config: TimerConfig) -> Self {
            let t0 = Instant::now();
            Harness {
                layer: TransactionLayer::new(config),
                t0,
                now: t0,
                sent: vec![],
                events: vec![],
            }
        }
        fn drain(&mut self) {
            let at = self.now - self.t0;
            while let Some(t) = self.layer.poll_transmit() {
                self.sent.push((at, t));
            }
            while let Some(e) = self.layer.poll_event() {
                self.events.push((at, e));
            }
        }
        /// Advance the fake clock to `t0 + until`, firing timers on the way.
        fn run_until(&mut self, until: Duration) {
            let end = self.t0 + until;
            while let Some(at) = self.layer.poll_timeout() {
                if at > end {
                    break;
                }
                self.now = at;
                self.layer.handle_timeout(at);
                self.drain();
            }
            self.now = end;
        }
        fn recv(&mut self, data: &[u8], transport: Transport) {
            self.layer
                .handle_datagram(self.now, peer(), transport, data)
                .unwrap();
            self.drain();
        }
        fn sent_times(&self) -> Vec<f64> {
            self.sent.iter().map(|(d, _)| d.as_secs_f64()).collect()
        }
        fn take(&mut self) -> (Log<Transmit>, Log<Event>) {
            (
                std::mem::take(&mut self.sent),
                std::mem::take(&mut self.events),
            )
        }
    }

    fn sent_text(t: &Transmit) -> String {
        String::from_utf8(t.data.to_vec()).unwrap()
    }

    #[test]
    fn invite_client_timer_a_doubles_until_b() {
        let mut h = Harness::new(TimerConfig::default());
        let id = h
            .layer
            .send_request(
                h.now,
                peer(),
                Transport::Udp,
                mkreq("INVITE", "z9hG4bKa", ""),
            )
            .unwrap();
        h.drain();
        h.run_until(Duration::from_secs(40));
        assert_eq!(h.sent_times(), vec![0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]);
        assert_eq!(
            h.events
                .iter()
                .map(|(d, e)| (d.as_secs_f64(), e.clone()))
                .collect::<Vec<_>>(),
            vec![
                (
                    32.0,
                    Event::Timeout {
                        tx: id,
                        timer: Timer::B
                    }
                ),
                (32.0, Event::Terminated { tx: id })
            ]
        );
        assert!(h.layer.is_empty());
        assert_eq!(h.layer.poll_timeout(), None);
    }

    #[test]
    fn non_invite_client_timer_e_caps_at_t2_until_f() {
        let mut h = Harness::new(TimerConfig::default());
        let id = h
            .layer
            .send_request(
                h.now,
                peer(),
                Transport::Udp,
                mkreq("OPTIONS", "z9hG4bKo", ""),
            )
            .unwrap();
        h.drain();
        h.run_until(Duration::from_secs(40));
        assert_eq!(
            h.sent_times(),
            vec![0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        );
        assert_eq!(
            h.events[0],
            (
                Duration::from_secs(32),
                Event::Timeout {
                    tx: id,
                    timer: Timer::F
                }
            )
        );
    }

    #[test]
    fn non_invite_client_proceeding_uses_t2() {
        let mut h = Harness::new(TimerConfig::default());
        let req = mkreq("BYE", "z9hG4bKp", "");
        let id = h
            .layer
            .send_request(h.now, peer(), Transport::Udp, req.clone())
            .unwrap();
        h.drain();
        h.run_until(Duration::from_millis(600)); // one retransmit at 0.5
        h.recv(&response_to(&req, 100, None), Transport::Udp);
        assert_eq!(h.layer.state(id), Some(TxState::Proceeding));
        h.run_until(Duration::from_secs(10));
        // After the 1xx the next retransmits run at T2 (4 s) from the last firing (1.5 s).
        assert_eq!(h.sent_times(), vec![0.0, 0.5, 1.5, 5.5, 9.5]);
        h.recv(&response_to(&req, 200, Some("x")), Transport::Udp);
        assert_eq!(h.layer.state(id), Some(TxState::Completed));
        h.recv(&response_to(&req, 200, Some("x")), Transport::Udp); // absorbed
        let responses = h
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Response { .. }))
            .count();
        assert_eq!(responses, 2); // 100 and the first 200
        h.run_until(Duration::from_secs(16));
        assert_eq!(h.layer.state(id), None); // Timer K (T4 = 5 s)
        assert_eq!(h.events.last().unwrap().1, Event::Terminated { tx: id });
        assert_eq!(h.sent.len(), 5);
    }

    #[test]
    fn reliable_transport_has_no_retransmissions() {
        let mut h = Harness::new(TimerConfig::default());
        let req = mkreq("INVITE", "z9hG4bKt", "");
        let id = h
            .layer
            .send_request(h.now, peer(), Transport::Tcp, req.clone())
            .unwrap();
        h.drain();
        h.run_until(Duration::from_secs(20));
        assert_eq!(h.sent.len(), 1);
        h.recv(&response_to(&req, 486, Some("b")), Transport::Tcp);
        // ACK sent and the transaction ends at once (Timer D = 0 on TCP).
        assert_eq!(h.sent.len(), 2);
        assert_eq!(h.layer.state(id), None);

        let req = mkreq("MESSAGE", "z9hG4bKt2", "");
        let id = h
            .layer
            .send_request(h.now, peer(), Transport::Tcp, req)
            .unwrap();
        h.drain();
        h.run_until(Duration::from_secs(60));
        assert_eq!(h.sent.len(), 3);
        assert!(h.events.contains(&(
            Duration::from_secs(52),
            Event::Timeout {
                tx: id,
                timer: Timer::F
            }
        )));
    }

    #[test]
    fn invite_client_non_2xx_gets_ack_and_absorbs_retransmissions() {
        let mut h = Harness::new(TimerConfig::default());
        let req = mkreq("INVITE", "z9hG4bKi", "Route: <sip:proxy.example.com;lr>\n");
        let id = h
            .layer
            .send_request(h.now, peer(), Transport::Udp, req.clone())
            .unwrap();
        h.drain();
        h.recv(&response_to(&req, 180, Some("bt")), Transport::Udp);
        assert_eq!(h.layer.state(id), Some(TxState::Proceeding));
        h.run_until(Duration::from_secs(5));
        assert_eq!(h.sent.len(), 1, "no Timer A after a provisional response");
        h.recv(&response_to(&req, 486, Some("bt")), Transport::Udp);
        assert_eq!(h.layer.state(id), Some(TxState::Completed));
        let ack = sent_text(&h.sent[1].1);
        assert!(ack.starts_with("ACK sip:bob@192.0.2.10 SIP/2.0\r\n"));
        assert!(ack.contains("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKi\r\n"));
        assert!(ack.contains("CSeq: 7 ACK\r\n"));
        assert!(ack.contains(";tag=bt"));
        assert!(ack.contains("Route: <sip:proxy.example.com;lr>\r\n"));
        h.recv(&response_to(&req, 486, Some("bt")), Transport::Udp);
        assert_eq!(h.sent.len(), 3);
        assert_eq!(sent_text(&h.sent[2].1), ack);
        let finals = h
            .events
            .iter()
            .filter(
                |(_, e)| matches!(e, Event::Response { response, .. } if response.status == 486),
            )
            .count();
        assert_eq!(finals, 1);
        h.run_until(Duration::from_secs(40));
        assert_eq!(h.layer.state(id), None); // Timer D (32 s)
    }

    #[test]
    fn invite_client_2xx_retransmissions_reach_tu() {
        let mut h = Harness::new(TimerConfig::default());
        let req = mkreq("INVITE", "z9hG4bK2xx", "");
        let id = h
            .layer
            .send_request(h.now, peer(), Transport::Udp, req.clone())
            .unwrap();
        h.drain();
        h.recv(&response_to(&req, 200, Some("bt")), Transport::Udp);
        h.recv(&response_to(&req, 200, Some("bt")), Transport::Udp);
        assert_eq!(h.layer.state(id), Some(TxState::Accepted));
        let oks = h
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Response { tx: Some(t), .. } if *t == id))
            .count();
        assert_eq!(oks, 2);
        assert_eq!(h.sent.len(), 1, "the transaction never ACKs a 2xx");
        h.run_until(Duration::from_secs(33));
        assert_eq!(h.layer.state(id), None); // Timer M
    }

    #[test]
    fn invite_server_trying_retransmit_and_non_2xx_with_g_h() {
        let mut h = Harness::new(TimerConfig::default());
        let inv = mkreq("INVITE", "z9hG4bKsrv", "");
        h.recv(&inv.to_bytes(), Transport::Udp);
        let (sent, events) = h.take();
        assert_eq!(sent.len(), 1);
        assert!(sent_text(&sent[0].1).starts_with("SIP/2.0 100 Trying\r\n"));
        let Event::Request { tx: Some(id), .. } = events[0].1.clone() else {
            panic!("{events:?}")
        };
        // Retransmitted INVITE: 100 again, no new event.
        h.recv(&inv.to_bytes(), Transport::Udp);
        let (sent, events) = h.take();
        assert_eq!(sent.len(), 1);
        assert!(events.is_empty());
        // TU rejects; Timer G retransmits doubling to T2, Timer H gives up at 64*T1.
        let req = h.layer.request(id).unwrap().clone();
        h.layer
            .send_response(
                h.now,
                id,
                Response::from_request(&req, 486).with_to_tag("u"),
            )
            .unwrap();
        h.drain();
        h.run_until(Duration::from_secs(40));
        assert_eq!(
            h.sent_times(),
            vec![0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        );
        assert_eq!(
            h.events[0],
            (
                Duration::from_secs(32),
                Event::Timeout {
                    tx: id,
                    timer: Timer::H
                }
            )
        );
    }

    #[test]
    fn invite_server_ack_absorbed_then_timer_i() {
        let mut h = Harness::new(TimerConfig::default());
        let inv = mkreq("INVITE", "z9hG4bKack", "");
        h.recv(&inv.to_bytes(), Transport::Udp);
        let (_, events) = h.take();
        let Event::Request {
            tx: Some(id),
            request,
            ..
        } = events[0].1.clone()
        else {
            panic!()
        };
        h.layer
            .send_response(
                h.now,
                id,
                Response::from_request(&request, 404).with_to_tag("u"),
            )
            .unwrap();
        h.drain();
        h.run_until(Duration::from_millis(700)); // one G retransmit at 0.5
        let mut ack = request.clone();
        ack.method = Method::Ack;
        ack.headers.set(HeaderName::CSEQ, "7 ACK");
        h.recv(&ack.to_bytes(), Transport::Udp);
        assert_eq!(h.layer.state(id), Some(TxState::Confirmed));
        h.recv(&ack.to_bytes(), Transport::Udp);
        h.recv(&inv.to_bytes(), Transport::Udp); // INVITE retransmission in Confirmed: absorbed
        h.run_until(Duration::from_secs(4));
        assert_eq!(h.sent.len(), 2, "no retransmission after the ACK");
        assert!(h.events.is_empty(), "the ACK is absorbed: {:?}", h.events);
        h.run_until(Duration::from_secs(6));
        assert_eq!(h.layer.state(id), None); // Timer I = T4
    }

    #[test]
    fn invite_server_2xx_retransmitted_until_ack_then_l() {
        let mut h = Harness::new(TimerConfig::default());
        let inv = mkreq("INVITE", "z9hG4bKok", "");
        h.recv(&inv.to_bytes(), Transport::Udp);
        let (_, events) = h.take();
        let Event::Request {
            tx: Some(id),
            request,
            ..
        } = events[0].1.clone()
        else {
            panic!()
        };
        h.layer
            .send_response(
                h.now,
                id,
                Response::from_request(&request, 200).with_to_tag("u"),
            )
            .unwrap();
        h.drain();
        h.run_until(Duration::from_secs(2));
        assert_eq!(h.sent_times(), vec![0.0, 0.5, 1.5]);
        // ACK for the 2xx: a new branch; matched by Call-ID/CSeq/From tag and passed up.
        let mut ack = mkreq("ACK", "z9hG4bKnew", "");
        ack.headers
            .set(HeaderName::TO, "<sip:bob@192.0.2.10>;tag=u");
        h.recv(&ack.to_bytes(), Transport::Udp);
        assert!(
            matches!(h.events.last().unwrap().1, Event::Request { tx: None, ref request, .. } if request.method == Method::Ack)
        );
        h.run_until(Duration::from_secs(40));
        assert_eq!(h.sent.len(), 3, "retransmission stops at the ACK");
        assert_eq!(h.events.last().unwrap().1, Event::Terminated { tx: id });
        assert!(!h
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::Timeout { .. })));

        // Without an ACK, Timer L reports the failure.
        let mut h = Harness::new(TimerConfig::default());
        h.recv(
            &mkreq("INVITE", "z9hG4bKok2", "").to_bytes(),
            Transport::Udp,
        );
        let (_, events) = h.take();
        let Event::Request {
            tx: Some(id),
            request,
            ..
        } = events[0].1.clone()
        else {
            panic!()
        };
        h.layer
            .send_response(
                h.now,
                id,
                Response::from_request(&request, 200).with_to_tag("u"),
            )
            .unwrap();
        h.drain();
        h.run_until(Duration::from_secs(40));
        assert_eq!(
            h.sent_times(),
            vec![0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        );
        assert!(h.events.contains(&(
            Duration::from_secs(32),
            Event::Timeout {
                tx: id,
                timer: Timer::L
            }
        )));
    }

    #[test]
    fn non_invite_server_timer_j() {
        let mut h = Harness::new(TimerConfig::default());
        let opt = mkreq("OPTIONS", "z9hG4bKnis", "");
        h.recv(&opt.to_bytes(), Transport::Udp);
        let (sent, events) = h.take();
        assert!(sent.is_empty(), "no 100 Trying for non-INVITE");
        let Event::Request {
            tx: Some(id),
            request,
            ..
        } = events[0].1.clone()
        else {
            panic!()
        };
        h.recv(&opt.to_bytes(), Transport::Udp); // Trying: absorbed
        assert!(h.sent.is_empty() && h.events.is_empty());
        h.layer
            .send_response(
                h.now,
                id,
                Response::from_request(&request, 200).with_to_tag("u"),
            )
            .unwrap();
        h.drain();
        h.recv(&opt.to_bytes(), Transport::Udp); // Completed: resend the final
        assert_eq!(h.sent.len(), 2);
        assert_eq!(h.sent[0].1.data, h.sent[1].1.data);
        assert!(matches!(
            h.layer
                .send_response(h.now, id, Response::from_request(&request, 200)),
            Err(TxError::InvalidState { .. })
        ));
        h.run_until(Duration::from_secs(31));
        assert_eq!(h.layer.state(id), Some(TxState::Completed));
        h.run_until(Duration::from_secs(33));
        assert_eq!(h.layer.state(id), None);
        assert!(!h
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::Timeout { .. })));

        // TCP: Timer J is zero.
        h.recv(
            &mkreq("OPTIONS", "z9hG4bKtcp", "").to_bytes(),
            Transport::Tcp,
        );
        let Event::Request {
            tx: Some(id),
            request,
            ..
        } = h.events.last().unwrap().1.clone()
        else {
            panic!()
        };
        h.layer
            .send_response(h.now, id, Response::from_request(&request, 200))
            .unwrap();
        assert_eq!(h.layer.state(id), None);
    }

    #[test]
    fn server_guard_when_tu_never_answers() {
        let mut h = Harness::new(TimerConfig::default());
        h.recv(&mkreq("INFO", "z9hG4bKg", "").to_bytes(), Transport::Udp);
        let Event::Request { tx: Some(id), .. } = h.events[0].1.clone() else {
            panic!()
        };
        h.run_until(Duration::from_secs(33));
        assert!(h.events.contains(&(
            Duration::from_secs(32),
            Event::Timeout {
                tx: id,
                timer: Timer::ServerGuard
            }
        )));
        assert!(h.layer.is_empty());
    }

    #[test]
    fn delayed_trying() {
        let mut h = Harness::new(TimerConfig {
            trying_delay: Some(Duration::from_millis(200)),
            ..Default::default()
        });
        h.recv(&mkreq("INVITE", "z9hG4bKd1", "").to_bytes(), Transport::Udp);
        assert!(h.sent.is_empty());
        h.run_until(Duration::from_millis(300));
        assert_eq!(h.sent_times(), vec![0.2]);
        // Answered in time: no 100.
        h.recv(&mkreq("INVITE", "z9hG4bKd2", "").to_bytes(), Transport::Udp);
        let Event::Request {
            tx: Some(id),
            request,
            ..
        } = h.events.last().unwrap().1.clone()
        else {
            panic!()
        };
        h.layer
            .send_response(
                h.now,
                id,
                Response::from_request(&request, 180).with_to_tag("r"),
            )
            .unwrap();
        h.drain();
        h.run_until(Duration::from_secs(1));
        assert_eq!(h.sent.len(), 2);
        assert!(sent_text(&h.sent[1].1).starts_with("SIP/2.0 180"));
    }

    #[test]
    fn cancel_matches_invite_branch() {
        let mut h = Harness::new(TimerConfig::default());
        let inv = mkreq("INVITE", "z9hG4bKc", "");
        h.recv(&inv.to_bytes(), Transport::Udp);
        let Event::Request {
            tx: Some(id),
            request,
            ..
        } = h.events[0].1.clone()
        else {
            panic!()
        };
        h.layer
            .send_response(
                h.now,
                id,
                Response::from_request(&request, 180).with_to_tag("ring"),
            )
            .unwrap();
        h.drain();
        h.take();
        let cancel = build_cancel(&inv).unwrap();
        h.recv(&cancel.to_bytes(), Transport::Udp);
        let (sent, events) = h.take();
        let texts: Vec<String> = sent.iter().map(|(_, t)| sent_text(t)).collect();
        assert_eq!(texts.len(), 2);
        assert!(texts[0].starts_with("SIP/2.0 200 OK") && texts[0].contains("CSeq: 7 CANCEL"));
        assert!(texts[1].starts_with("SIP/2.0 487") && texts[1].contains("CSeq: 7 INVITE"));
        assert!(texts[0].contains("tag=ring") && texts[1].contains("tag=ring"));
        assert!(matches!(&events[0].1, Event::Cancelled { tx, .. } if *tx == id));
        assert_eq!(h.layer.state(id), Some(TxState::Completed));
        // A CANCEL for nothing gets 481.
        let stray = build_cancel(&mkreq("INVITE", "z9hG4bKnone", "")).unwrap();
        h.recv(&stray.to_bytes(), Transport::Udp);
        assert!(sent_text(&h.sent[0].1).starts_with("SIP/2.0 481"));
        assert!(h.events.is_empty());
    }

    #[test]
    fn client_cancel_waits_for_provisional() {
        let mut h = Harness::new(TimerConfig::default());
        let req = mkreq("INVITE", "z9hG4bKcc", "");
        let id = h
            .layer
            .send_request(h.now, peer(), Transport::Udp, req.clone())
            .unwrap();
        h.drain();
        h.layer.cancel(h.now, id).unwrap();
        h.drain();
        assert_eq!(h.sent.len(), 1, "no CANCEL before a provisional response");
        h.recv(&response_to(&req, 180, Some("b")), Transport::Udp);
        let cancel = sent_text(&h.sent[1].1);
        assert!(cancel.starts_with("CANCEL sip:bob@192.0.2.10 SIP/2.0\r\n"));
        assert!(cancel.contains("branch=z9hG4bKcc") && cancel.contains("CSeq: 7 CANCEL"));
        let cancel_req = match parse_message(cancel.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        };
        let events_before = h.events.len();
        h.recv(&response_to(&cancel_req, 200, Some("b")), Transport::Udp);
        assert_eq!(
            h.events.len(),
            events_before,
            "the CANCEL's 200 is internal"
        );
        h.recv(&response_to(&req, 487, Some("b")), Transport::Udp);
        assert!(
            matches!(&h.events.last().unwrap().1, Event::Response { response, .. } if response.status == 487)
        );
        assert!(sent_text(&h.sent.last().unwrap().1).starts_with("ACK "));
        assert!(matches!(
            h.layer.cancel(h.now, id),
            Err(TxError::InvalidState { .. })
        ));
    }

    #[test]
    fn cancel_wait_times_out_invite() {
        let mut h = Harness::new(TimerConfig::default());
        let req = mkreq("INVITE", "z9hG4bKcw", "");
        let id = h
            .layer
            .send_request(h.now, peer(), Transport::Udp, req.clone())
            .unwrap();
        h.recv(&response_to(&req, 100, None), Transport::Udp);
        h.layer.cancel(h.now, id).unwrap();
        h.drain();
        h.run_until(Duration::from_secs(40));
        assert!(h.events.iter().any(|(_, e)| *e
            == Event::Timeout {
                tx: id,
                timer: Timer::CancelWait
            }));
        // The internal CANCEL transaction reports nothing of its own.
        assert!(!h
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::Timeout { tx, .. } if *tx != id)));
    }

    #[test]
    fn received_and_rport() {
        let mut h = Harness::new(TimerConfig {
            force_rport: false,
            ..Default::default()
        });
        let src: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let mut r = mkreq("OPTIONS", "z9hG4bKr", "");
        r.headers.set(
            HeaderName::VIA,
            "SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKr;rport",
        );
        h.layer
            .handle_datagram(h.now, src, Transport::Udp, &r.to_bytes())
            .unwrap();
        h.drain();
        let Event::Request {
            tx: Some(id),
            request,
            ..
        } = h.events[0].1.clone()
        else {
            panic!()
        };
        let via = request.headers.top_via().unwrap();
        assert_eq!(via.rport(), Some(Some(40000)));
        assert_eq!(via.received(), Some("203.0.113.7"));
        h.layer
            .send_response(h.now, id, Response::from_request(&request, 200))
            .unwrap();
        let t = h.layer.poll_transmit().unwrap();
        assert_eq!(t.dest, src);
        assert!(sent_text(&t).contains("rport=40000;received=203.0.113.7"));
        // No rport and no force_rport: received address, Via port.
        let mut r = mkreq("OPTIONS", "z9hG4bKr2", "");
        r.headers.set(
            HeaderName::VIA,
            "SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKr2",
        );
        h.layer
            .handle_datagram(h.now, src, Transport::Udp, &r.to_bytes())
            .unwrap();
        let Some(Event::Request {
            tx: Some(id),
            request,
            ..
        }) = h.layer.poll_event()
        else {
            panic!()
        };
        h.layer
            .send_response(h.now, id, Response::from_request(&request, 200))
            .unwrap();
        assert_eq!(
            h.layer.poll_transmit().unwrap().dest,
            "203.0.113.7:5062".parse().unwrap()
        );
    }

    #[test]
    fn stray_response_errors_and_transport_error() {
        let mut h = Harness::new(TimerConfig::default());
        let req = mkreq("INVITE", "z9hG4bKs", "");
        h.recv(&response_to(&req, 200, Some("x")), Transport::Udp);
        assert!(matches!(h.events[0].1, Event::Response { tx: None, .. }));

        let mut no_branch = mkreq("OPTIONS", "z9hG4bKx", "");
        no_branch.headers.set(HeaderName::VIA, "SIP/2.0/UDP h");
        assert_eq!(
            h.layer
                .send_request(h.now, peer(), Transport::Udp, no_branch),
            Err(TxError::NoBranch)
        );
        let ack = mkreq("ACK", "z9hG4bKy", "");
        assert_eq!(
            h.layer.send_request(h.now, peer(), Transport::Udp, ack),
            Err(TxError::AckNotTransaction)
        );
        let id = h
            .layer
            .send_request(h.now, peer(), Transport::Udp, req.clone())
            .unwrap();
        assert_eq!(
            h.layer.send_request(h.now, peer(), Transport::Udp, req),
            Err(TxError::Duplicate)
        );
        assert_eq!(
            h.layer.send_response(h.now, id, Response::new(200)),
            Err(TxError::NotServer(id))
        );
        assert_eq!(
            h.layer.send_response(h.now, id, Response::new(99)),
            Err(TxError::BadStatus(99))
        );
        h.layer.transport_error(id);
        h.drain();
        assert!(h.events.ends_with(&[
            (Duration::ZERO, Event::TransportError { tx: id }),
            (Duration::ZERO, Event::Terminated { tx: id })
        ]));
        assert!(h
            .layer
            .handle_datagram(h.now, peer(), Transport::Udp, b"garbage")
            .is_err());
    }

    #[test]
    fn legacy_rfc2543_branchless_matching() {
        let mut h = Harness::new(TimerConfig::default());
        let mut inv = mkreq("INVITE", "x", "");
        inv.headers
            .set(HeaderName::VIA, "SIP/2.0/UDP 192.0.2.1:5060");
        h.recv(&inv.to_bytes(), Transport::Udp);
        h.recv(&inv.to_bytes(), Transport::Udp);
        let requests = h
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Request { .. }))
            .count();
        assert_eq!(requests, 1, "the retransmission matched without a branch");
    }
}
