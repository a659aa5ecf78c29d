//! Channels: one call leg, owned by exactly one task.
//!
//! A [`Channel`] is a plain struct moved into the task that runs it (its PBX loop, or the Dial
//! that created it). Other parts of the system hold a [`ChannelHandle`] (id + control sender)
//! from the [`registry`](crate::core::Core::channels) and talk to the owner by message
//! ([`ChanCtl`]). The technology driver (SIP dialog + RTP, Local pair, ...) is connected through a
//! [`TechLink`]: two bounded queues of [`ChanMsg`] (frames, DTMF, indications, hangup).
//!
//! Waiting happens in [`Channel::read`], which also services control messages, writes the
//! active [`Generator`] (prompt playback, tones) at 20 ms pace, and feeds media taps.

pub mod local;
pub mod vars;

use crate::core::Core;
use crate::events::{ChannelSnapshot, Event, EventClass};
use crate::media::translate::Translator;
use crate::media::{Format, Frame};
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Interval, MissedTickBehavior};

pub use vars::Vars;

pub type ChannelId = u64;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// `enum ast_channel_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    Down = 0,
    Reserved = 1,
    OffHook = 2,
    Dialing = 3,
    Ring = 4,
    Ringing = 5,
    Up = 6,
    Busy = 7,
}

impl ChannelState {
    /// `ast_state2str`.
    pub fn desc(self) -> &'static str {
        match self {
            ChannelState::Down => "Down",
            ChannelState::Reserved => "Rsrvd",
            ChannelState::OffHook => "OffHook",
            ChannelState::Dialing => "Dialing",
            ChannelState::Ring => "Ring",
            ChannelState::Ringing => "Ringing",
            ChannelState::Up => "Up",
            ChannelState::Busy => "Busy",
        }
    }
}

/// Caller / connected line identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerId {
    pub num: String,
    pub name: String,
}

impl CallerId {
    /// Parse `"Name" <num>`, `Name <num>`, `<num>` or `num`.
    pub fn parse(s: &str) -> CallerId {
        let s = s.trim();
        if let (Some(lt), Some(gt)) = (s.rfind('<'), s.rfind('>')) {
            if lt < gt {
                let name = s[..lt].trim().trim_matches('"').trim().to_string();
                return CallerId {
                    num: s[lt + 1..gt].trim().to_string(),
                    name,
                };
            }
        }
        if s.starts_with('"') {
            return CallerId {
                num: String::new(),
                name: s.trim_matches('"').to_string(),
            };
        }
        CallerId {
            num: s.to_string(),
            name: String::new(),
        }
    }
    /// `"Name" <num>` as CALLERID(all) shows it.
    pub fn all(&self) -> String {
        match (self.name.is_empty(), self.num.is_empty()) {
            (true, true) => String::new(),
            (true, false) => format!("<{}>", self.num),
            (false, true) => format!("\"{}\" <>", self.name),
            (false, false) => format!("\"{}\" <{}>", self.name, self.num),
        }
    }
}

/// Indications and call-progress between a channel and its technology.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Owner -> tech: place the call (outbound channels). Tech -> owner on a Local `;2` half.
    Call {
        caller: CallerId,
        vars: Vec<(String, String)>,
    },
    Answer,
    Ringing,
    Progress,
    Proceeding,
    Busy,
    Congestion,
    Hold,
    Unhold,
    /// The media source changed (marker bit / new SSRC on RTP).
    SrcUpdate,
    /// Tech -> owner: the negotiated native format changed.
    Format(Format),
    /// Connected line update from the far end.
    ConnectedLine(CallerId),
}

/// What flows between a channel and its technology driver, in both directions.
#[derive(Debug, Clone)]
pub enum ChanMsg {
    Frame(Frame),
    DtmfBegin(char),
    DtmfEnd(char, u32),
    Control(Control),
    /// Hangup with an Asterisk/Q.850 cause code.
    Hangup(i32),
}

/// The two queues joining a channel and its technology driver.
pub struct TechLink {
    pub tech: &'static str,
    pub rx: mpsc::Receiver<ChanMsg>,
    pub tx: mpsc::Sender<ChanMsg>,
    pub native: Format,
}

/// Depth of the queues of a TechLink: 256 frames = 5 s of 20 ms audio.
pub const LINK_DEPTH: usize = 256;

impl TechLink {
    /// A connected pair of links (each side's `tx` feeds the other's `rx`).
    pub fn pair(tech: &'static str, native: Format) -> (TechLink, TechLink) {
        let (atx, brx) = mpsc::channel(LINK_DEPTH);
        let (btx, arx) = mpsc::channel(LINK_DEPTH);
        (
            TechLink {
                tech,
                rx: arx,
                tx: atx,
                native,
            },
            TechLink {
                tech,
                rx: brx,
                tx: btx,
                native,
            },
        )
    }
}

/// Requests other tasks send to a channel's owner.
pub enum ChanCtl {
    /// Soft hangup (`channel request hangup`, AMI Hangup).
    Hangup(i32),
    /// Async goto (AMI Redirect).
    Redirect {
        context: String,
        exten: String,
        priority: i32,
    },
    /// Run a closure on the owner task with the channel (Getvar/Setvar/Status/AsyncAGI...).
    Run(Box<dyn FnOnce(&mut Channel) + Send>),
    /// Hand the channel over to another owner (bridging an unrelated channel).
    TakeOver(oneshot::Sender<Channel>),
    /// Queue DTMF to be sent to the far end (AMI PlayDTMF).
    SendDtmf(String, u32),
}

/// A cheap handle to a channel owned by some task.
#[derive(Clone)]
pub struct ChannelHandle {
    pub id: ChannelId,
    pub ctl: mpsc::UnboundedSender<ChanCtl>,
}

impl ChannelHandle {
    pub fn send(&self, c: ChanCtl) -> bool {
        self.ctl.send(c).is_ok()
    }
    /// Run `f` on the owning task and return its value (None if the channel is gone).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Channel) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let ok = self.send(ChanCtl::Run(Box::new(move |c| {
            let _ = tx.send(f(c));
        })));
        if !ok {
            return None;
        }
        rx.await.ok()
    }
}

/// What `Channel::read` returns.
#[derive(Debug)]
pub enum ReadEvent {
    Voice(Frame),
    DtmfBegin(char),
    /// A complete DTMF digit (end of the event).
    Dtmf(char),
    Control(Control),
    /// The active generator (prompt) finished.
    StreamDone,
    /// The deadline passed.
    Timeout,
    /// Hung up (remote or soft hangup).
    Hangup,
    /// An async goto or take-over is pending: the application must return.
    Interrupted,
}

/// A source of outgoing audio, written at 20 ms pace by `read()` (playback, tones, silence).
pub trait Generator: Send {
    /// The next frame, or None when finished.
    fn next_frame(&mut self) -> Option<Frame>;
    /// Position in samples (AGI `endpos`).
    fn position(&self) -> u64 {
        0
    }
    /// Seek by `ms` (negative = rewind); for ControlPlayback.
    fn skip_ms(&mut self, _ms: i64) {}
    fn as_any(&mut self) -> &mut dyn Any;
}

/// A media tap: a recorder, recognizer or fork attached to the channel. It always gets `close`
/// (on detach or when the channel ends, hangup included).
pub trait MediaTap: Send {
    /// `incoming` = audio read from the far end; otherwise audio written to it.
    fn on_frame(&mut self, incoming: bool, f: &Frame);
    fn close(&mut self);
}

/// Gosub return frame.
#[derive(Debug, Clone)]
pub struct StackFrame {
    pub context: String,
    pub exten: String,
    pub priority: i32,
    /// Saved `ARGn` values and LOCAL() variables to restore on Return.
    pub saved: Vec<(String, Option<String>)>,
    pub args: usize,
    /// True when the frame was pushed by an internal caller (AGI GOSUB, hangup handler...).
    pub internal: bool,
}

/// PBX timing state (`TIMEOUT()`).
#[derive(Debug, Clone, Default)]
pub struct Timeouts {
    pub digit_ms: Option<u64>,
    pub response_ms: Option<u64>,
    pub absolute: Option<Instant>,
}

/// One call leg.
pub struct Channel {
    pub id: ChannelId,
    pub name: String,
    pub uniqueid: String,
    pub linkedid: String,
    pub state: ChannelState,
    pub context: String,
    pub exten: String,
    pub priority: i32,
    /// Set by Goto-like apps: the PBX loop must not advance the priority.
    pub jumped: bool,
    pub caller: CallerId,
    pub connected: CallerId,
    pub dnid: String,
    pub rdnis: String,
    pub language: String,
    pub account_code: String,
    pub hangup_cause: i32,
    pub vars: Vars,
    pub stack: Vec<StackFrame>,
    pub timeouts: Timeouts,
    pub hangup_handlers: Vec<String>,
    pub datastores: HashMap<&'static str, Box<dyn Any + Send>>,
    pub created: Instant,
    pub answered_at: Option<Instant>,
    pub app: String,
    pub app_data: String,
    pub core: Arc<Core>,
    link: TechLink,
    ctl_rx: mpsc::UnboundedReceiver<ChanCtl>,
    ctl_tx: mpsc::UnboundedSender<ChanCtl>,
    hungup: bool,
    soft_hangup: bool,
    pending_goto: Option<(String, String, i32)>,
    pending_takeover: Option<oneshot::Sender<Channel>>,
    generator: Option<(Box<dyn Generator>, Interval)>,
    taps: Vec<(u64, Box<dyn MediaTap>)>,
    next_tap: u64,
    read_format: Option<Format>,
    read_trans: Option<Translator>,
    write_trans: Option<Translator>,
    event_seq: u64,
    /// Bridged peer name, for snapshots.
    pub bridged_to: Option<String>,
    registered: bool,
}

impl Channel {
    /// Create a channel in state Down on `link`; registers it with the core.
    pub fn new(core: &Arc<Core>, name: String, link: TechLink) -> Channel {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let uniqueid = format!("{}.{}", core.start_epoch, id);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let mut ch = Channel {
            id,
            name,
            linkedid: uniqueid.clone(),
            uniqueid,
            state: ChannelState::Down,
            context: "default".into(),
            exten: "s".into(),
            priority: 1,
            jumped: false,
            caller: CallerId::default(),
            connected: CallerId::default(),
            dnid: String::new(),
            rdnis: String::new(),
            language: core.options.language.clone(),
            account_code: String::new(),
            hangup_cause: 0,
            vars: Vars::default(),
            stack: Vec::new(),
            timeouts: Timeouts::default(),
            hangup_handlers: Vec::new(),
            datastores: HashMap::new(),
            created: Instant::now(),
            answered_at: None,
            app: String::new(),
            app_data: String::new(),
            core: core.clone(),
            link,
            ctl_rx,
            ctl_tx,
            hungup: false,
            soft_hangup: false,
            pending_goto: None,
            pending_takeover: None,
            generator: None,
            taps: Vec::new(),
            next_tap: 1,
            read_format: None,
            read_trans: None,
            write_trans: None,
            event_seq: 0,
            bridged_to: None,
            registered: false,
        };
        core.channels
            .insert(ch.id, ch.handle(), Arc::new(ch.snapshot()));
        ch.registered = true;
        ch.publish(Event::new("Newchannel", EventClass::Call));
        ch
    }

    /// Create a channel `name` on a fresh [`TechLink::pair`] of technology `tech` in the native
    /// format `native` (registered with the core like [`Channel::new`]); returns it with the
    /// other end of the link, for the technology's driver.
    pub fn alloc(
        core: &Arc<Core>,
        name: String,
        tech: &'static str,
        native: Format,
    ) -> (Channel, TechLink) {
        let (driver, link) = TechLink::pair(tech, native);
        (Channel::new(core, name, link), driver)
    }

    pub fn handle(&self) -> ChannelHandle {
        ChannelHandle {
            id: self.id,
            ctl: self.ctl_tx.clone(),
        }
    }

    pub fn tech(&self) -> &'static str {
        self.link.tech
    }

    pub fn native_format(&self) -> Format {
        self.link.native
    }

    pub fn snapshot(&self) -> ChannelSnapshot {
        ChannelSnapshot {
            name: self.name.clone(),
            state: self.state as u8,
            state_desc: self.state.desc(),
            caller_num: self.caller.num.clone(),
            caller_name: self.caller.name.clone(),
            connected_num: self.connected.num.clone(),
            connected_name: self.connected.name.clone(),
            language: self.language.clone(),
            account_code: self.account_code.clone(),
            context: self.context.clone(),
            exten: self.exten.clone(),
            priority: self.priority,
            uniqueid: self.uniqueid.clone(),
            linkedid: self.linkedid.clone(),
            app: self.app.clone(),
            app_data: self.app_data.clone(),
            created: Some(self.created),
            bridged_to: self.bridged_to.clone(),
        }
    }

    /// Refresh the registry's snapshot (after state/location/app changes).
    pub fn update_snapshot(&self) -> Arc<ChannelSnapshot> {
        let s = Arc::new(self.snapshot());
        if self.registered {
            self.core.channels.update(self.id, s.clone());
        }
        s
    }

    /// Publish an event about this channel, with its snapshot and per-channel sequence number.
    pub fn publish(&mut self, mut ev: Event) {
        self.event_seq += 1;
        ev.chan_seq = Some(self.event_seq);
        ev.channel = Some(self.update_snapshot());
        self.core.bus.publish(ev);
    }

    pub fn set_state(&mut self, s: ChannelState) {
        if self.state != s {
            self.state = s;
            if s == ChannelState::Up && self.answered_at.is_none() {
                self.answered_at = Some(Instant::now());
            }
            self.publish(Event::new("Newstate", EventClass::Call));
        }
    }

    pub fn set_caller(&mut self, c: CallerId) {
        if self.caller != c {
            self.caller = c;
            self.publish(
                Event::new("NewCallerid", EventClass::Call)
                    .field("CID-CallingPres", "0 (Presentation Allowed, Not Screened)"),
            );
        }
    }

    pub fn is_hungup(&self) -> bool {
        self.hungup || self.soft_hangup
    }

    /// True when an app must return: hangup, async goto or take-over pending.
    pub fn must_return(&self) -> bool {
        self.is_hungup() || self.pending_goto.is_some() || self.pending_takeover.is_some()
    }

    /// Request a soft hangup from inside the owner task.
    pub fn soft_hangup(&mut self, cause: i32) {
        if !self.soft_hangup {
            self.soft_hangup = true;
            if self.hangup_cause == 0 {
                self.hangup_cause = cause;
            }
            self.publish(
                Event::new("SoftHangupRequest", EventClass::Call).field("Cause", cause.to_string()),
            );
        }
    }

    /// Clear a soft hangup (used to run the `h` extension and hangup handlers).
    pub fn clear_soft_hangup_for_h(&mut self) {
        self.soft_hangup = false;
    }

    pub fn take_pending_goto(&mut self) -> Option<(String, String, i32)> {
        self.pending_goto.take()
    }

    pub fn take_pending_takeover(&mut self) -> Option<oneshot::Sender<Channel>> {
        self.pending_takeover.take()
    }

    /// Send a message to the technology (non-blocking; frames are dropped if the queue is full).
    fn send_tech(&mut self, m: ChanMsg) {
        match self.link.tx.try_send(m) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(m)) => {
                if !matches!(m, ChanMsg::Frame(_)) {
                    // Control messages must not be lost: finish the send in the background.
                    let tx = self.link.tx.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(m).await;
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Answer the channel (inbound) if not already up.
    pub fn answer(&mut self) -> bool {
        if self.hungup {
            return false;
        }
        if self.state != ChannelState::Up {
            self.send_tech(ChanMsg::Control(Control::Answer));
            self.set_state(ChannelState::Up);
        }
        true
    }

    pub fn indicate(&mut self, c: Control) {
        match c {
            Control::Ringing if self.state != ChannelState::Up => {
                self.set_state(ChannelState::Ringing)
            }
            Control::Busy if self.state != ChannelState::Up => self.set_state(ChannelState::Busy),
            _ => {}
        }
        self.send_tech(ChanMsg::Control(c));
    }

    /// Place the call on an outbound channel created by `core.request_channel`.
    /// All variables of this channel travel with the call (a Local `;2` half receives them).
    pub fn call(&mut self, caller: CallerId, vars: Vec<(String, String)>) {
        let mut all: Vec<(String, String)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.extend(self.vars.inheritable());
        all.extend(vars);
        self.send_tech(ChanMsg::Control(Control::Call { caller, vars: all }));
    }

    pub fn send_dtmf_begin(&mut self, d: char) {
        self.send_tech(ChanMsg::DtmfBegin(d));
    }
    pub fn send_dtmf_end(&mut self, d: char, ms: u32) {
        self.send_tech(ChanMsg::DtmfEnd(d, ms));
    }

    /// Send DTMF digits outward at Asterisk's pace (digit duration, 100 ms gap). `w` waits 500 ms.
    pub async fn send_dtmf(&mut self, digits: &str, duration_ms: u32) -> bool {
        let dur = if duration_ms == 0 { 250 } else { duration_ms };
        for d in digits.chars() {
            if self.must_return() {
                return false;
            }
            if d == 'w' || d == 'W' {
                self.sleep(Duration::from_millis(500)).await;
                continue;
            }
            let d = d.to_ascii_uppercase();
            if !"0123456789*#ABCD".contains(d) {
                continue;
            }
            self.send_dtmf_begin(d);
            self.sleep(Duration::from_millis(dur as u64)).await;
            self.send_dtmf_end(d, dur);
            self.sleep(Duration::from_millis(100)).await;
        }
        !self.must_return()
    }

    /// Write audio to the far end, translating to the native format when needed.
    pub fn write(&mut self, f: &Frame) {
        if self.hungup {
            return;
        }
        let native = self.link.native;
        let out = if f.format == native {
            f.clone()
        } else {
            let t = match &mut self.write_trans {
                Some(t) if t.from() == f.format && t.to() == native => t,
                _ => match Translator::new(f.format, native) {
                    Ok(t) => self.write_trans.insert(t),
                    Err(e) => {
                        tracing::warn!(
                            "{}: cannot write {:?} to {:?}: {}",
                            self.name,
                            f.format,
                            native,
                            e
                        );
                        return;
                    }
                },
            };
            t.convert(f)
        };
        for (_, tap) in self.taps.iter_mut() {
            tap.on_frame(false, &out);
        }
        self.send_tech(ChanMsg::Frame(out));
    }

    /// Set the format voice frames are returned in by `read` (None = native).
    pub fn set_read_format(&mut self, f: Option<Format>) {
        self.read_format = f;
        self.read_trans = None;
    }

    pub fn read_format(&self) -> Format {
        self.read_format.unwrap_or(self.link.native)
    }

    /// Start writing a generator (prompt, tone). Replaces any active one.
    pub fn start_generator(&mut self, g: Box<dyn Generator>) {
        let mut iv = tokio::time::interval(Duration::from_millis(20));
        iv.set_missed_tick_behavior(MissedTickBehavior::Burst);
        self.generator = Some((g, iv));
    }

    /// Stop the active generator; returns its final position in samples.
    pub fn stop_generator(&mut self) -> u64 {
        self.generator
            .take()
            .map(|(g, _)| g.position())
            .unwrap_or(0)
    }

    /// Remove the active generator without ending it (pause).
    pub fn take_generator(&mut self) -> Option<Box<dyn Generator>> {
        self.generator.take().map(|(g, _)| g)
    }

    pub fn generator_active(&self) -> bool {
        self.generator.is_some()
    }

    pub fn generator_mut(&mut self) -> Option<&mut Box<dyn Generator>> {
        self.generator.as_mut().map(|(g, _)| g)
    }

    /// Attach a media tap; returns its id for `detach_tap`.
    pub fn attach_tap(&mut self, tap: Box<dyn MediaTap>) -> u64 {
        let id = self.next_tap;
        self.next_tap += 1;
        self.taps.push((id, tap));
        id
    }

    pub fn detach_tap(&mut self, id: u64) {
        if let Some(pos) = self.taps.iter().position(|(i, _)| *i == id) {
            let (_, mut tap) = self.taps.remove(pos);
            tap.close();
        }
    }

    fn handle_ctl(&mut self, c: ChanCtl) {
        match c {
            ChanCtl::Hangup(cause) => self.soft_hangup(cause),
            ChanCtl::Redirect {
                context,
                exten,
                priority,
            } => {
                self.pending_goto = Some((context, exten, priority));
            }
            ChanCtl::Run(f) => f(self),
            ChanCtl::TakeOver(tx) => self.pending_takeover = Some(tx),
            ChanCtl::SendDtmf(digits, dur) => {
                // Sent without pacing gaps; the far end gets begin/end pairs.
                for d in digits.chars() {
                    self.send_dtmf_begin(d);
                    self.send_dtmf_end(d, dur);
                }
            }
        }
    }

    /// Service pending control messages without waiting.
    pub fn poll_ctl(&mut self) {
        while let Ok(c) = self.ctl_rx.try_recv() {
            self.handle_ctl(c);
        }
    }

    fn on_tech_msg(&mut self, m: Option<ChanMsg>) -> Option<ReadEvent> {
        match m {
            None => {
                self.hungup = true;
                if self.hangup_cause == 0 {
                    self.hangup_cause = 16;
                }
                Some(ReadEvent::Hangup)
            }
            Some(ChanMsg::Hangup(cause)) => {
                self.hungup = true;
                if self.hangup_cause == 0 {
                    self.hangup_cause = cause;
                }
                self.publish(
                    Event::new("HangupRequest", EventClass::Call)
                        .field("Cause", self.hangup_cause.to_string()),
                );
                Some(ReadEvent::Hangup)
            }
            Some(ChanMsg::Frame(f)) => {
                for (_, tap) in self.taps.iter_mut() {
                    tap.on_frame(true, &f);
                }
                let want = self.read_format.unwrap_or(f.format);
                if want == f.format {
                    return Some(ReadEvent::Voice(f));
                }
                let t = match &mut self.read_trans {
                    Some(t) if t.from() == f.format && t.to() == want => t,
                    _ => match Translator::new(f.format, want) {
                        Ok(t) => self.read_trans.insert(t),
                        Err(_) => return Some(ReadEvent::Voice(f)),
                    },
                };
                Some(ReadEvent::Voice(t.convert(&f)))
            }
            Some(ChanMsg::DtmfBegin(d)) => {
                self.publish(
                    Event::new("DTMFBegin", EventClass::Dtmf)
                        .field("Digit", d.to_string())
                        .field("Direction", "Received"),
                );
                Some(ReadEvent::DtmfBegin(d))
            }
            Some(ChanMsg::DtmfEnd(d, ms)) => {
                self.publish(
                    Event::new("DTMFEnd", EventClass::Dtmf)
                        .field("Digit", d.to_string())
                        .field("DurationMs", ms.to_string())
                        .field("Direction", "Received"),
                );
                Some(ReadEvent::Dtmf(d))
            }
            Some(ChanMsg::Control(c)) => {
                match &c {
                    Control::Answer => self.set_state(ChannelState::Up),
                    Control::Ringing if self.state != ChannelState::Up => {
                        self.set_state(ChannelState::Ringing)
                    }
                    Control::Busy if self.state != ChannelState::Up => {
                        self.set_state(ChannelState::Busy)
                    }
                    Control::Format(f) => {
                        self.link.native = *f;
                        self.write_trans = None;
                        self.read_trans = None;
                    }
                    Control::ConnectedLine(c) => self.connected = c.clone(),
                    _ => {}
                }
                Some(ReadEvent::Control(c))
            }
        }
    }

    /// Wait for the next event, until `deadline` (None = no deadline). While waiting, control
    /// requests are serviced and the active generator writes a frame every 20 ms.
    pub async fn read_until(&mut self, deadline: Option<Instant>) -> ReadEvent {
        loop {
            self.poll_ctl();
            if self.hungup || self.soft_hangup {
                return ReadEvent::Hangup;
            }
            if self.pending_goto.is_some() || self.pending_takeover.is_some() {
                return ReadEvent::Interrupted;
            }
            if let Some(abs) = self.timeouts.absolute {
                if Instant::now() >= abs {
                    return ReadEvent::Hangup;
                }
            }
            let has_gen = self.generator.is_some();
            let sleep_to = deadline.map(tokio::time::Instant::from_std);
            let tick = async {
                match &mut self.generator {
                    Some((_, iv)) => {
                        iv.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                biased;
                c = self.ctl_rx.recv() => {
                    if let Some(c) = c { self.handle_ctl(c); }
                }
                m = self.link.rx.recv() => {
                    if let Some(ev) = self.on_tech_msg(m) { return ev; }
                }
                _ = tick, if has_gen => {
                    let next = self.generator.as_mut().and_then(|(g, _)| g.next_frame());
                    match next {
                        Some(f) => self.write(&f),
                        None => {
                            self.generator = None;
                            return ReadEvent::StreamDone;
                        }
                    }
                }
                _ = async { match sleep_to { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                    return ReadEvent::Timeout;
                }
            }
        }
    }

    pub async fn read(&mut self) -> ReadEvent {
        self.read_until(None).await
    }

    pub async fn read_timeout(&mut self, d: Duration) -> ReadEvent {
        self.read_until(Some(Instant::now() + d)).await
    }

    /// Wait `d` while servicing media; returns false when the app must return (hangup/goto).
    pub async fn sleep(&mut self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            match self.read_until(Some(deadline)).await {
                ReadEvent::Timeout => return true,
                ReadEvent::Hangup | ReadEvent::Interrupted => return false,
                _ => {}
            }
        }
    }

    /// Hang up towards the technology and unregister. Idempotent; also done on drop.
    pub fn hangup(&mut self, cause: i32) {
        if !self.registered {
            return;
        }
        if self.hangup_cause == 0 {
            self.hangup_cause = if cause == 0 { 16 } else { cause };
        }
        self.generator = None;
        for (_, mut tap) in self.taps.drain(..) {
            tap.close();
        }
        self.datastores.clear();
        let cause = self.hangup_cause;
        if !self.hungup {
            let _ = self.link.tx.try_send(ChanMsg::Hangup(cause));
        }
        self.hungup = true;
        self.publish(
            Event::new("Hangup", EventClass::Call)
                .field("Cause", cause.to_string())
                .field("Cause-txt", cause_text(cause)),
        );
        self.core.channels.remove(self.id);
        self.registered = false;
    }

    /// Split off the tech link for technologies that rewire a channel (Local optimisation, masquerade).
    pub fn link_tx(&self) -> mpsc::Sender<ChanMsg> {
        self.link.tx.clone()
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        if self.registered {
            let cause = if self.hangup_cause == 0 {
                16
            } else {
                self.hangup_cause
            };
            self.hangup(cause);
        }
    }
}

/// `ast_cause2str` for the common causes.
pub fn cause_text(cause: i32) -> &'static str {
    match cause {
        0 => "Unknown",
        1 => "Unallocated (unassigned) number",
        3 => "No route to destination",
        16 => "Normal Clearing",
        17 => "User busy",
        18 => "No user responding",
        19 => "User alerting, no answer",
        21 => "Call Rejected",
        27 => "Destination out of order",
        28 => "Invalid number format (address incomplete)",
        31 => "Normal, unspecified",
        34 => "Circuit/channel congestion",
        38 => "Network out of order",
        41 => "Temporary failure",
        42 => "Switching equipment congestion",
        58 => "Bearer capability not available",
        65 => "Bearer capability not implemented",
        66 => "Channel type not implemented",
        88 => "Incompatible destination",
        102 => "Recovery on timer expiry",
        127 => "Interworking, unspecified",
        _ => "Unknown",
    }
}

/// Hangup cause from a name (`Hangup(busy)`) or number.
pub fn cause_from_str(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return Some(n);
    }
    Some(match s.to_ascii_lowercase().as_str() {
        "normal" | "normal_clearing" => 16,
        "busy" | "user_busy" => 17,
        "noanswer" | "no_answer" | "no_user_response" => 19,
        "congestion" => 34,
        "unallocated" => 1,
        "failure" | "temporary_failure" => 41,
        _ => return None,
    })
}

/// The channel registry: every live channel's handle and latest snapshot.
#[derive(Default)]
pub struct Registry {
    inner: parking_lot::RwLock<HashMap<ChannelId, (ChannelHandle, Arc<ChannelSnapshot>)>>,
}

impl Registry {
    pub fn insert(&self, id: ChannelId, h: ChannelHandle, s: Arc<ChannelSnapshot>) {
        self.inner.write().insert(id, (h, s));
    }
    pub fn update(&self, id: ChannelId, s: Arc<ChannelSnapshot>) {
        if let Some(e) = self.inner.write().get_mut(&id) {
            e.1 = s;
        }
    }
    pub fn remove(&self, id: ChannelId) {
        self.inner.write().remove(&id);
    }
    pub fn len(&self) -> usize {
        self.inner.read().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// All channels, oldest first.
    pub fn list(&self) -> Vec<(ChannelHandle, Arc<ChannelSnapshot>)> {
        let mut v: Vec<_> = self.inner.read().values().cloned().collect();
        v.sort_by_key(|(h, _)| h.id);
        v
    }
    /// Find by exact name (case-insensitive), or by unique id.
    pub fn find(&self, name: &str) -> Option<(ChannelHandle, Arc<ChannelSnapshot>)> {
        self.inner
            .read()
            .values()
            .find(|(_, s)| s.name.eq_ignore_ascii_case(name) || s.uniqueid == name)
            .cloned()
    }
    /// Find by name prefix (as `channel request hangup` allows a unique prefix).
    pub fn find_prefix(&self, prefix: &str) -> Vec<(ChannelHandle, Arc<ChannelSnapshot>)> {
        let p = prefix.to_ascii_lowercase();
        self.list()
            .into_iter()
            .filter(|(_, s)| s.name.to_ascii_lowercase().starts_with(&p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn alloc_registers_the_channel_and_joins_the_driver_end() {
        let dir = tempfile::tempdir().unwrap();
        let (dirs, options) = crate::runtime::read_main_conf(dir.path()).unwrap();
        let core = Core::new(dirs, options, crate::dialplan::Dialplan::default());
        let (mut chan, driver) = Channel::alloc(&core, "Test/a-1".into(), "Test", Format::Ulaw);
        assert_eq!(chan.tech(), "Test");
        assert_eq!(chan.native_format(), Format::Ulaw);
        assert_eq!(driver.native, Format::Ulaw);
        assert!(core.channels.find("Test/a-1").is_some());
        driver
            .tx
            .send(ChanMsg::Control(Control::Answer))
            .await
            .unwrap();
        assert!(matches!(
            chan.read().await,
            ReadEvent::Control(Control::Answer)
        ));
        chan.hangup(16);
        assert!(core.channels.find("Test/a-1").is_none());
    }
}
