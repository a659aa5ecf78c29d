//! Mixing bridges: named conferences (what `ConfBridge` joins), each mixed by one tokio task.
//!
//! A [`Conference`] is created by the first [`ConfRegistry::join`] of its name and destroyed
//! when its last participant leaves. Participants exchange audio with the conference task over
//! bounded queues: the channel's frames go in, mixed frames come out, and both sides only
//! `try_send`, so a slow or dead participant loses its own frames but never stalls the others.
//! Every mixing interval (20 ms by default) the task runs [`MixCore`]: one interval of each
//! participant's buffered audio goes into the media [`Mixer`], and each participant gets
//! "everyone but me" as signed linear at the conference rate (8 or 16 kHz). The mixing loop
//! reuses its buffers; outgoing payloads are cut from a per-participant slab, so there is one
//! allocation per [`OUT_SLAB_INTERVALS`] frames rather than one per frame.
//!
//! Membership (join, leave, mute, kick) is kept in the [`Conference`] and changed under the
//! registry lock, so a join racing the last leave either lands in the old conference or
//! creates a new one, and the Bridge*/Confbridge* events of one conference come in order.
//! The registry lives in the core's typed extensions ([`ConfRegistry::of`]).

use crate::channel::{Channel, ChannelId};
use crate::config::{ConfFile, ConfigError, Section};
use crate::core::Core;
use crate::events::{Bus, Event, EventClass};
use crate::media::mix::{LegId, Mixer};
use crate::media::{g711, Format, Frame};
use bytes::{BufMut, BytesMut};
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::MissedTickBehavior;

pub const DEFAULT_BRIDGE_PROFILE: &str = "default_bridge";
pub const DEFAULT_USER_PROFILE: &str = "default_user";
pub const DEFAULT_MENU: &str = "default_menu";

/// Depth of a participant's queue of frames into the conference (160 ms of 20 ms frames).
pub const AUDIO_IN_DEPTH: usize = 8;
/// Depth of a participant's queue of mixed frames out of the conference.
pub const AUDIO_OUT_DEPTH: usize = 8;
/// Input a participant may have buffered, in mixing intervals, before the oldest is dropped.
const MAX_BUFFERED_INTERVALS: usize = 6;
/// After a round, buffered input beyond this many intervals is dropped (bounds the latency a
/// participant whose clock runs fast can build up).
const MAX_LAG_INTERVALS: usize = 3;
/// Size of a participant's output slab, in frames: one allocation per this many frames.
pub const OUT_SLAB_INTERVALS: usize = 50;

/// Errors of conferences and their configuration.
#[derive(Debug, Error)]
pub enum ConfError {
    #[error("conference bridge profile '{0}' does not exist")]
    NoBridgeProfile(String),
    #[error("conference user profile '{0}' does not exist")]
    NoUserProfile(String),
    #[error("conference menu '{0}' does not exist")]
    NoMenu(String),
    #[error("conference '{0}' is full")]
    Full(String),
    #[error("a conference needs a name")]
    NoName,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

// ---------------------------------------------------------------------------------------------
// Profiles (confbridge.conf)
// ---------------------------------------------------------------------------------------------

/// A `type=bridge` section of confbridge.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeProfile {
    pub name: String,
    /// Mixing rate; None = auto (16 kHz when a participant's native rate is 16 kHz or more).
    pub internal_sample_rate: Option<u32>,
    /// 10, 20, 40 or 80 ms.
    pub mixing_interval_ms: u32,
    /// 0 = unlimited.
    pub max_members: usize,
}

impl BridgeProfile {
    fn named(name: &str) -> BridgeProfile {
        BridgeProfile {
            name: name.to_string(),
            internal_sample_rate: None,
            mixing_interval_ms: 20,
            max_members: 0,
        }
    }
}

impl Default for BridgeProfile {
    fn default() -> Self {
        BridgeProfile::named(DEFAULT_BRIDGE_PROFILE)
    }
}

/// A `type=user` section of confbridge.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    pub name: String,
    pub admin: bool,
    pub marked: bool,
    pub startmuted: bool,
    pub quiet: bool,
}

impl UserProfile {
    fn named(name: &str) -> UserProfile {
        UserProfile {
            name: name.to_string(),
            admin: false,
            marked: false,
            startmuted: false,
            quiet: false,
        }
    }
}

impl Default for UserProfile {
    fn default() -> Self {
        UserProfile::named(DEFAULT_USER_PROFILE)
    }
}

/// What a DTMF sequence of a menu does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MenuAction {
    ToggleMute,
    LeaveConference,
    NoOp,
}

/// A `type=menu` section: DTMF sequences and their actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu {
    pub name: String,
    pub entries: Vec<(String, MenuAction)>,
}

/// How a DTMF sequence matches a menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MenuMatch {
    Exact(MenuAction),
    /// The sequence starts a longer entry: wait for more digits.
    Prefix,
    None,
}

impl Menu {
    /// The built-in minimal menu: `*` toggles mute.
    pub fn builtin() -> Menu {
        Menu {
            name: DEFAULT_MENU.to_string(),
            entries: vec![("*".to_string(), MenuAction::ToggleMute)],
        }
    }

    pub fn lookup(&self, seq: &str) -> MenuMatch {
        if let Some((_, a)) = self
            .entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(seq))
        {
            return MenuMatch::Exact(*a);
        }
        let up = seq.to_ascii_uppercase();
        if self
            .entries
            .iter()
            .any(|(k, _)| k.to_ascii_uppercase().starts_with(&up))
        {
            MenuMatch::Prefix
        } else {
            MenuMatch::None
        }
    }
}

/// Parse a menu action (`toggle_mute`, `leave_conference`, `no_op`); a comma list takes the
/// first supported action. Other Asterisk actions are accepted as no-ops with a warning.
fn parse_action(v: &str, entry: &crate::config::Entry) -> MenuAction {
    for a in v.split(',').map(|a| a.trim().to_ascii_lowercase()) {
        match a.as_str() {
            "toggle_mute" => return MenuAction::ToggleMute,
            "leave_conference" => return MenuAction::LeaveConference,
            "no_op" => return MenuAction::NoOp,
            _ => {}
        }
    }
    tracing::warn!(
        "{}:{}: menu action '{}' is not supported; '{}' does nothing",
        entry.file.display(),
        entry.line,
        v,
        entry.key
    );
    MenuAction::NoOp
}

/// Every profile and menu of confbridge.conf, plus the built-in defaults.
#[derive(Debug, Clone)]
pub struct Profiles {
    pub bridges: HashMap<String, BridgeProfile>,
    pub users: HashMap<String, UserProfile>,
    pub menus: HashMap<String, Menu>,
}

impl Default for Profiles {
    fn default() -> Self {
        let mut p = Profiles {
            bridges: HashMap::new(),
            users: HashMap::new(),
            menus: HashMap::new(),
        };
        p.bridges
            .insert(DEFAULT_BRIDGE_PROFILE.into(), BridgeProfile::default());
        p.users
            .insert(DEFAULT_USER_PROFILE.into(), UserProfile::default());
        p.menus.insert(DEFAULT_MENU.into(), Menu::builtin());
        p
    }
}

fn bool_opt(s: &Section, key: &str, into: &mut bool) {
    if let Some(v) = s.get_bool(key) {
        *into = v;
    }
}

impl Profiles {
    /// Load `confbridge.conf` from the config dir (missing file = the built-in defaults).
    pub fn load(conf_dir: &Path) -> Result<Profiles, ConfigError> {
        match ConfFile::load_optional(conf_dir, "confbridge.conf")? {
            Some(f) => Profiles::from_conf(&f),
            None => Ok(Profiles::default()),
        }
    }

    /// Build from a parsed confbridge.conf. Sections choose their kind with `type=`.
    pub fn from_conf(file: &ConfFile) -> Result<Profiles, ConfigError> {
        let mut p = Profiles::default();
        for s in file.real_sections() {
            if s.name.eq_ignore_ascii_case("general") {
                continue;
            }
            let Some(ty) = s.entry("type") else {
                return Err(ConfigError::new(
                    &s.file,
                    s.line,
                    format!(
                        "section [{}] has no type (expected type=bridge, user or menu)",
                        s.name
                    ),
                ));
            };
            match ty.value.trim().to_ascii_lowercase().as_str() {
                "bridge" => {
                    let mut b = BridgeProfile::named(&s.name);
                    if let Some(e) = s.entry("internal_sample_rate") {
                        let v = e.value.trim();
                        b.internal_sample_rate = if v.eq_ignore_ascii_case("auto") || v == "0" {
                            None
                        } else {
                            match v.parse::<u32>() {
                                Ok(8000) => Some(8000),
                                Ok(r) if r > 8000 && r <= 192_000 => Some(16000),
                                _ => {
                                    return Err(ConfigError::at(
                                        e,
                                        format!("invalid internal_sample_rate '{v}' (expected auto or a rate of 8000 Hz or more)"),
                                    ))
                                }
                            }
                        };
                    }
                    if let Some(e) = s.entry("mixing_interval") {
                        b.mixing_interval_ms = match e.value.trim().parse::<u32>() {
                            Ok(v @ (10 | 20 | 40 | 80)) => v,
                            _ => {
                                return Err(ConfigError::at(
                                    e,
                                    format!(
                                        "invalid mixing_interval '{}' (expected 10, 20, 40 or 80)",
                                        e.value
                                    ),
                                ))
                            }
                        };
                    }
                    if let Some(m) = s.get_parse::<usize>("max_members")? {
                        b.max_members = m;
                    }
                    p.bridges.insert(s.name.clone(), b);
                }
                "user" => {
                    let mut u = UserProfile::named(&s.name);
                    bool_opt(s, "admin", &mut u.admin);
                    bool_opt(s, "marked", &mut u.marked);
                    bool_opt(s, "startmuted", &mut u.startmuted);
                    bool_opt(s, "quiet", &mut u.quiet);
                    p.users.insert(s.name.clone(), u);
                }
                "menu" => {
                    let mut m = Menu {
                        name: s.name.clone(),
                        entries: Vec::new(),
                    };
                    for e in s
                        .entries
                        .iter()
                        .filter(|e| !e.key.eq_ignore_ascii_case("type"))
                    {
                        let key = e.key.trim();
                        if key.is_empty()
                            || !key.chars().all(|c| "0123456789*#ABCDabcd".contains(c))
                        {
                            return Err(ConfigError::at(
                                e,
                                format!("invalid DTMF sequence '{key}' in menu [{}]", s.name),
                            ));
                        }
                        let action = parse_action(&e.value, e);
                        m.entries.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
                        m.entries.push((key.to_string(), action));
                    }
                    p.menus.insert(s.name.clone(), m);
                }
                other => {
                    return Err(ConfigError::at(
                        ty,
                        format!("unknown type '{other}' (expected bridge, user or menu)"),
                    ))
                }
            }
        }
        Ok(p)
    }

    pub fn bridge(&self, name: &str) -> Result<&BridgeProfile, ConfError> {
        self.bridges
            .get(name)
            .ok_or_else(|| ConfError::NoBridgeProfile(name.to_string()))
    }
    pub fn user(&self, name: &str) -> Result<&UserProfile, ConfError> {
        self.users
            .get(name)
            .ok_or_else(|| ConfError::NoUserProfile(name.to_string()))
    }
    pub fn menu(&self, name: &str) -> Result<&Menu, ConfError> {
        self.menus
            .get(name)
            .ok_or_else(|| ConfError::NoMenu(name.to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// The mixing loop (sans-IO)
// ---------------------------------------------------------------------------------------------

/// The rate a participant prefers: 16 kHz for wideband natives, else 8 kHz.
pub fn preferred_rate(native: Format) -> u32 {
    if native.rate() >= 16000 {
        16000
    } else {
        8000
    }
}

/// The mixing rate for a fixed profile rate or the participants' preferred rates.
pub fn mix_rate(fixed: Option<u32>, prefs: impl IntoIterator<Item = u32>) -> u32 {
    match fixed {
        Some(r) if r >= 16000 => 16000,
        Some(_) => 8000,
        None => {
            if prefs.into_iter().any(|r| r >= 16000) {
                16000
            } else {
                8000
            }
        }
    }
}

fn slin_format(rate: u32) -> Format {
    if rate >= 16000 {
        Format::Slin16
    } else {
        Format::Slin8
    }
}

/// A participant's place in a [`MixCore`].
pub type SlotId = usize;

#[derive(Debug)]
struct Slot {
    used: bool,
    pref_rate: u32,
    muted: bool,
    leg: LegId,
    /// Buffered input samples; `fill` of them are valid.
    inbuf: Vec<i16>,
    fill: usize,
    out: BytesMut,
    ts: u32,
    seq: u16,
}

/// The conference mixing loop as plain state: feed participants' frames, run a round every
/// interval, take each participant's "everyone but me" frame. No clock, no queues; the
/// conference task drives it. Membership changes may allocate; rounds do not.
#[derive(Debug)]
pub struct MixCore {
    fixed_rate: Option<u32>,
    interval_ms: u32,
    format: Format,
    mixer: Mixer,
    slots: Vec<Slot>,
}

fn new_mixer(rate: u32, interval_ms: u32) -> Mixer {
    Mixer::with_frame_samples(rate, (rate / 1000 * interval_ms) as usize)
}

impl MixCore {
    /// `fixed_rate`: the profile's internal_sample_rate (None = auto).
    pub fn new(fixed_rate: Option<u32>, interval_ms: u32) -> MixCore {
        let interval_ms = match interval_ms {
            10 | 20 | 40 | 80 => interval_ms,
            _ => 20,
        };
        let rate = mix_rate(fixed_rate, None);
        MixCore {
            fixed_rate,
            interval_ms,
            format: slin_format(rate),
            mixer: new_mixer(rate, interval_ms),
            slots: Vec::new(),
        }
    }

    /// The format of the mix (and of the frames participants should send).
    pub fn format(&self) -> Format {
        self.format
    }
    pub fn rate(&self) -> u32 {
        self.mixer.rate()
    }
    pub fn interval_ms(&self) -> u32 {
        self.interval_ms
    }
    /// Samples per round.
    pub fn frame_samples(&self) -> usize {
        self.mixer.frame_samples()
    }
    /// Number of participants.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.used).count()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn reset_slot(s: &mut Slot, mixer: &mut Mixer) {
        let n = mixer.frame_samples();
        s.leg = mixer.add_leg();
        // Cannot fail: the leg was just added.
        let _ = mixer.set_muted(s.leg, s.muted);
        s.inbuf.clear();
        s.inbuf.resize(n * MAX_BUFFERED_INTERVALS, 0);
        s.fill = 0;
    }

    /// Add a participant preferring `pref_rate`; may change the mixing rate.
    pub fn add(&mut self, pref_rate: u32, muted: bool) -> SlotId {
        let id = match self.slots.iter().position(|s| !s.used) {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    used: false,
                    pref_rate,
                    muted,
                    leg: 0,
                    inbuf: Vec::new(),
                    fill: 0,
                    out: BytesMut::new(),
                    ts: 0,
                    seq: 0,
                });
                self.slots.len() - 1
            }
        };
        {
            let s = &mut self.slots[id];
            s.used = true;
            s.pref_rate = pref_rate;
            s.muted = muted;
            s.ts = rand::random();
            s.seq = rand::random();
        }
        if !self.retune() {
            MixCore::reset_slot(&mut self.slots[id], &mut self.mixer);
        }
        id
    }

    /// Remove a participant; false if unknown. May change the mixing rate.
    pub fn remove(&mut self, id: SlotId) -> bool {
        match self.slots.get_mut(id) {
            Some(s) if s.used => {
                s.used = false;
                s.fill = 0;
                let _ = self.mixer.remove_leg(s.leg);
                self.retune();
                true
            }
            _ => false,
        }
    }

    /// Mute (the others stop hearing it) or unmute; false if unknown.
    pub fn set_muted(&mut self, id: SlotId, muted: bool) -> bool {
        match self.slots.get_mut(id) {
            Some(s) if s.used => {
                s.muted = muted;
                self.mixer.set_muted(s.leg, muted).is_ok()
            }
            _ => false,
        }
    }

    pub fn is_muted(&self, id: SlotId) -> Option<bool> {
        self.slots.get(id).filter(|s| s.used).map(|s| s.muted)
    }

    /// Recompute the rate; on a change rebuild the mixer (buffered input is dropped).
    /// Returns whether it rebuilt (every used slot then has a fresh leg).
    fn retune(&mut self) -> bool {
        let want = mix_rate(
            self.fixed_rate,
            self.slots.iter().filter(|s| s.used).map(|s| s.pref_rate),
        );
        if want == self.mixer.rate() {
            return false;
        }
        self.mixer = new_mixer(want, self.interval_ms);
        self.format = slin_format(want);
        for s in self.slots.iter_mut().filter(|s| s.used) {
            MixCore::reset_slot(s, &mut self.mixer);
        }
        true
    }

    /// Queue a participant's frame (slin at the mix rate, or G.711 when mixing at 8 kHz).
    /// Returns false when it was dropped: unknown participant or a format of another rate
    /// (frames in flight while the rate changes). When the buffer is full the oldest audio
    /// goes first.
    pub fn feed(&mut self, id: SlotId, f: &Frame) -> bool {
        let rate = self.mixer.rate();
        let Some(s) = self.slots.get_mut(id).filter(|s| s.used) else {
            return false;
        };
        let ok = match f.format {
            Format::Ulaw | Format::Alaw => rate == 8000,
            Format::Slin8 | Format::Slin16 | Format::Slin48 => f.format.rate() == rate,
            Format::G722 => false,
        };
        if !ok {
            return false;
        }
        let cap = s.inbuf.len();
        let total = f.samples();
        let n = total.min(cap);
        if s.fill + n > cap {
            let drop = s.fill + n - cap;
            s.inbuf.copy_within(drop..s.fill, 0);
            s.fill -= drop;
        }
        let skip = total - n;
        let dst = &mut s.inbuf[s.fill..s.fill + n];
        let got = match f.format {
            Format::Ulaw => g711::ulaw_to_linear_slice(&f.data[skip..], dst),
            Format::Alaw => g711::alaw_to_linear_slice(&f.data[skip..], dst),
            _ => g711::slin_bytes_to_samples(&f.data[skip * 2..], dst),
        };
        s.fill += got;
        true
    }

    /// Mix one interval: each participant contributes one interval of buffered input (with
    /// less buffered it is silent this round and the partial audio waits for the next).
    pub fn round(&mut self) {
        let n = self.mixer.frame_samples();
        for s in self.slots.iter_mut().filter(|s| s.used) {
            if s.fill < n {
                continue;
            }
            // Cannot fail: a used slot always has a live leg.
            let _ = self.mixer.push(s.leg, &s.inbuf[..n]);
            s.inbuf.copy_within(n..s.fill, 0);
            s.fill -= n;
            let max = n * MAX_LAG_INTERVALS;
            if s.fill > max {
                let drop = s.fill - max;
                s.inbuf.copy_within(drop..s.fill, 0);
                s.fill = max;
            }
        }
        self.mixer.mix();
    }

    /// What `id` hears from the last round ("everyone but me"), as a slin frame at the mix
    /// rate. The payload is cut from the participant's slab (no allocation per frame).
    pub fn output(&mut self, id: SlotId) -> Option<Frame> {
        let s = self.slots.get_mut(id).filter(|s| s.used)?;
        let pcm = self.mixer.output(s.leg)?;
        let bytes = pcm.len() * 2;
        if s.out.capacity() < bytes {
            s.out = BytesMut::with_capacity(bytes * OUT_SLAB_INTERVALS);
        }
        for v in pcm {
            s.out.put_i16_le(*v);
        }
        let mut f = Frame::new(self.format, s.out.split().freeze());
        f.ts = s.ts;
        f.seq = s.seq;
        s.ts = s.ts.wrapping_add(pcm.len() as u32);
        s.seq = s.seq.wrapping_add(1);
        Some(f)
    }

    /// The full mix of the last round (every unmuted participant).
    pub fn mixed(&self) -> &[i16] {
        self.mixer.mixed()
    }
}

// ---------------------------------------------------------------------------------------------
// The conference task
// ---------------------------------------------------------------------------------------------

enum Cmd {
    Add {
        pid: u64,
        pref_rate: u32,
        muted: bool,
        input: mpsc::Receiver<Frame>,
        output: mpsc::Sender<Frame>,
    },
    Remove(u64),
    Mute(u64, bool),
    Stop,
}

struct LegIo {
    pid: u64,
    slot: SlotId,
    input: mpsc::Receiver<Frame>,
    output: mpsc::Sender<Frame>,
}

/// One mixing interval: drain inputs, mix, hand out frames. A full output queue drops the
/// frame (that participant is slow); a closed one removes the participant from the mix.
fn mix_tick(mix: &mut MixCore, legs: &mut Vec<LegIo>) {
    for l in legs.iter_mut() {
        while let Ok(f) = l.input.try_recv() {
            mix.feed(l.slot, &f);
        }
    }
    mix.round();
    legs.retain_mut(|l| {
        let Some(f) = mix.output(l.slot) else {
            return true;
        };
        match l.output.try_send(f) {
            Ok(()) | Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Closed(_)) => {
                mix.remove(l.slot);
                false
            }
        }
    });
}

async fn run_conference(profile: BridgeProfile, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    let mut mix = MixCore::new(profile.internal_sample_rate, profile.mixing_interval_ms);
    let mut legs: Vec<LegIo> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(mix.interval_ms() as u64));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    loop {
        tokio::select! {
            biased;
            c = cmds.recv() => match c {
                None | Some(Cmd::Stop) => break,
                Some(Cmd::Add { pid, pref_rate, muted, input, output }) => {
                    let slot = mix.add(pref_rate, muted);
                    legs.push(LegIo { pid, slot, input, output });
                }
                Some(Cmd::Remove(pid)) => {
                    if let Some(i) = legs.iter().position(|l| l.pid == pid) {
                        let l = legs.swap_remove(i);
                        mix.remove(l.slot);
                    }
                }
                Some(Cmd::Mute(pid, m)) => {
                    if let Some(l) = legs.iter().find(|l| l.pid == pid) {
                        mix.set_muted(l.slot, m);
                    }
                }
            },
            _ = tick.tick() => {
                if !legs.is_empty() {
                    mix_tick(&mut mix, &mut legs);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Conferences, the registry, participants
// ---------------------------------------------------------------------------------------------

/// What the conference tells a participant outside of audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    Muted(bool),
    Kicked,
}

struct Member {
    pid: u64,
    channel: String,
    chan_id: ChannelId,
    caller_num: String,
    user_profile: String,
    menu: String,
    admin: bool,
    marked: bool,
    muted: bool,
    pref_rate: u32,
    notices: mpsc::UnboundedSender<Notice>,
}

/// A participant as `confbridge list <conf>` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub channel: String,
    pub chan_id: ChannelId,
    pub caller_num: String,
    pub user_profile: String,
    pub menu: String,
    pub admin: bool,
    pub marked: bool,
    pub muted: bool,
}

/// A named conference.
pub struct Conference {
    pub name: String,
    /// The bridge's unique id (BridgeUniqueid).
    pub uniqueid: String,
    pub profile: BridgeProfile,
    pub created: Instant,
    members: Mutex<Vec<Member>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    bus: Bus,
}

/// Indexes of the members `target` names: `all`, `participants` (non-admins), a channel name
/// (case-insensitive), else the first member whose name starts with it.
fn select_members(members: &[Member], target: &str) -> Vec<usize> {
    if target.eq_ignore_ascii_case("all") {
        return (0..members.len()).collect();
    }
    if target.eq_ignore_ascii_case("participants") {
        return (0..members.len()).filter(|&i| !members[i].admin).collect();
    }
    if let Some(i) = members
        .iter()
        .position(|m| m.channel.eq_ignore_ascii_case(target))
    {
        return vec![i];
    }
    let t = target.to_ascii_lowercase();
    members
        .iter()
        .position(|m| !t.is_empty() && m.channel.to_ascii_lowercase().starts_with(&t))
        .into_iter()
        .collect()
}

impl Conference {
    pub fn len(&self) -> usize {
        self.members.lock().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn marked_count(&self) -> usize {
        self.members.lock().iter().filter(|m| m.marked).count()
    }
    pub fn members(&self) -> Vec<MemberInfo> {
        self.members
            .lock()
            .iter()
            .map(|m| MemberInfo {
                channel: m.channel.clone(),
                chan_id: m.chan_id,
                caller_num: m.caller_num.clone(),
                user_profile: m.user_profile.clone(),
                menu: m.menu.clone(),
                admin: m.admin,
                marked: m.marked,
                muted: m.muted,
            })
            .collect()
    }

    /// The format the conference mixes in for its current members.
    pub fn format(&self) -> Format {
        let m = self.members.lock();
        slin_format(mix_rate(
            self.profile.internal_sample_rate,
            m.iter().map(|m| m.pref_rate),
        ))
    }

    fn mute_at(&self, m: &mut Member, muted: bool) {
        m.muted = muted;
        let _ = self.cmds.send(Cmd::Mute(m.pid, muted));
        let _ = m.notices.send(Notice::Muted(muted));
    }

    /// Mute or unmute the members `target` names (see `confbridge mute`); returns how many.
    /// Each muted channel publishes its ConfbridgeMute/ConfbridgeUnmute.
    pub fn set_muted(&self, target: &str, muted: bool) -> usize {
        let mut members = self.members.lock();
        let idx = select_members(&members, target);
        for &i in &idx {
            self.mute_at(&mut members[i], muted);
        }
        idx.len()
    }

    fn set_muted_pid(&self, pid: u64, muted: bool) -> bool {
        let mut members = self.members.lock();
        match members.iter_mut().find(|m| m.pid == pid) {
            Some(m) => {
                self.mute_at(m, muted);
                true
            }
            None => false,
        }
    }

    fn is_muted_pid(&self, pid: u64) -> bool {
        self.members.lock().iter().any(|m| m.pid == pid && m.muted)
    }

    /// Kick the members `target` names out of the mix; their ConfBridge returns with
    /// `CONFBRIDGE_RESULT=KICKED`. Returns how many.
    pub fn kick(&self, target: &str) -> usize {
        let members = self.members.lock();
        let idx = select_members(&members, target);
        for &i in &idx {
            let m = &members[i];
            let _ = m.notices.send(Notice::Kicked);
            let _ = self.cmds.send(Cmd::Remove(m.pid));
        }
        idx.len()
    }
}

fn bridge_event(name: &'static str, conf: &Conference, n: usize, with_conf: bool) -> Event {
    let mut ev = Event::new(name, EventClass::Call);
    if with_conf {
        ev = ev.field("Conference", conf.name.clone());
    }
    ev.field("BridgeUniqueid", conf.uniqueid.clone())
        .field("BridgeType", "conference")
        .field("BridgeTechnology", "softmix")
        .field("BridgeCreator", "ConfBridge")
        .field("BridgeName", conf.name.clone())
        .field("BridgeNumChannels", n.to_string())
        .field("BridgeVideoSourceMode", "none")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

/// Every conference, by lower-cased name. Reach it with [`ConfRegistry::of`].
#[derive(Default)]
pub struct ConfRegistry {
    confs: Mutex<HashMap<String, Arc<Conference>>>,
    next_pid: AtomicU64,
}

static REGISTRY_INIT: Mutex<()> = Mutex::new(());

impl ConfRegistry {
    /// The core's registry (created on first use).
    pub fn of(core: &Core) -> Arc<ConfRegistry> {
        if let Some(r) = core.ext.get::<ConfRegistry>() {
            return r;
        }
        let _g = REGISTRY_INIT.lock();
        if let Some(r) = core.ext.get::<ConfRegistry>() {
            return r;
        }
        let r = Arc::new(ConfRegistry::default());
        core.ext.insert(r.clone());
        r
    }

    /// A conference by name (case-insensitive).
    pub fn find(&self, name: &str) -> Option<Arc<Conference>> {
        self.confs.lock().get(&name.to_ascii_lowercase()).cloned()
    }

    /// All conferences, by name.
    pub fn list(&self) -> Vec<Arc<Conference>> {
        let mut v: Vec<_> = self.confs.lock().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Put `chan` into conference `name`, creating it (with `bridge`) when it does not exist;
    /// an existing conference keeps its own profile. Publishes BridgeCreate/ConfbridgeStart
    /// for a new conference, then BridgeEnter and ConfbridgeJoin on the channel.
    /// Must run inside a tokio runtime (a new conference spawns its task).
    pub fn join(
        self: &Arc<Self>,
        chan: &mut Channel,
        name: &str,
        bridge: &BridgeProfile,
        user: &UserProfile,
        menu: &str,
    ) -> Result<Participant, ConfError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(ConfError::NoName);
        }
        let key = name.to_ascii_lowercase();
        let bus: Bus = chan.core.bus.clone();
        let mut confs = self.confs.lock();
        let conf = match confs.get(&key) {
            Some(c) => c.clone(),
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                let conf = Arc::new(Conference {
                    name: name.to_string(),
                    uniqueid: uuid::Uuid::new_v4().to_string(),
                    profile: bridge.clone(),
                    created: Instant::now(),
                    members: Mutex::new(Vec::new()),
                    cmds: tx,
                    bus: bus.clone(),
                });
                tokio::spawn(run_conference(bridge.clone(), rx));
                bus.publish(bridge_event("BridgeCreate", &conf, 0, false));
                bus.publish(bridge_event("ConfbridgeStart", &conf, 0, true));
                chan.core
                    .verbose_msg(3, &format!("    -- Conference '{}' created", conf.name));
                confs.insert(key, conf.clone());
                conf
            }
        };
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed) + 1;
        let (in_tx, in_rx) = mpsc::channel(AUDIO_IN_DEPTH);
        let (out_tx, out_rx) = mpsc::channel(AUDIO_OUT_DEPTH);
        let (note_tx, note_rx) = mpsc::unbounded_channel();
        let pref_rate = preferred_rate(chan.native_format());
        let (count, format) = {
            let mut members = conf.members.lock();
            let max = conf.profile.max_members;
            if max > 0 && members.len() >= max {
                return Err(ConfError::Full(conf.name.clone()));
            }
            members.push(Member {
                pid,
                channel: chan.name.clone(),
                chan_id: chan.id,
                caller_num: chan.caller.num.clone(),
                user_profile: user.name.clone(),
                menu: menu.to_string(),
                admin: user.admin,
                marked: user.marked,
                muted: user.startmuted,
                pref_rate,
                notices: note_tx,
            });
            let _ = conf.cmds.send(Cmd::Add {
                pid,
                pref_rate,
                muted: user.startmuted,
                input: in_rx,
                output: out_tx,
            });
            let rate = mix_rate(
                conf.profile.internal_sample_rate,
                members.iter().map(|m| m.pref_rate),
            );
            (members.len(), slin_format(rate))
        };
        chan.publish(bridge_event("BridgeEnter", &conf, count, false));
        chan.publish(
            bridge_event("ConfbridgeJoin", &conf, count, true)
                .field("Admin", yes_no(user.admin))
                .field("Muted", yes_no(user.startmuted)),
        );
        drop(confs);
        chan.core.verbose_msg(
            3,
            &format!("    -- {} joined conference '{}'", chan.name, conf.name),
        );
        Ok(Participant {
            registry: self.clone(),
            conf,
            pid,
            admin: user.admin,
            format,
            audio: in_tx,
            mixed: out_rx,
            notices: note_rx,
            left: false,
        })
    }

    /// Take member `pid` out; publishes the leave events on `chan` (when given) and, for
    /// the last member, removes the conference and publishes BridgeDestroy/ConfbridgeEnd.
    fn leave(
        &self,
        conf: &Arc<Conference>,
        pid: u64,
        admin: bool,
        chan: Option<&mut Channel>,
    ) -> usize {
        let mut confs = self.confs.lock();
        let remaining = {
            let mut members = conf.members.lock();
            members.retain(|m| m.pid != pid);
            members.len()
        };
        let _ = conf.cmds.send(Cmd::Remove(pid));
        if let Some(chan) = chan {
            chan.publish(
                bridge_event("ConfbridgeLeave", conf, remaining, true)
                    .field("Admin", yes_no(admin)),
            );
            chan.publish(bridge_event("BridgeLeave", conf, remaining, false));
            chan.core.verbose_msg(
                3,
                &format!("    -- {} left conference '{}'", chan.name, conf.name),
            );
        }
        if remaining == 0 {
            let key = conf.name.to_ascii_lowercase();
            if confs
                .get(&key)
                .map(|c| Arc::ptr_eq(c, conf))
                .unwrap_or(false)
            {
                confs.remove(&key);
            }
            let _ = conf.cmds.send(Cmd::Stop);
            conf.bus
                .publish(bridge_event("BridgeDestroy", conf, 0, false));
            conf.bus
                .publish(bridge_event("ConfbridgeEnd", conf, 0, true));
        }
        remaining
    }
}

/// What a participant receives.
#[derive(Debug)]
pub enum ParticipantEvent {
    /// Mixed audio to write to the channel (slin at the conference rate).
    Audio(Frame),
    /// This participant was muted (true) or unmuted.
    Muted(bool),
    /// Kicked out (`confbridge kick`).
    Kicked,
    /// The conference went away without a kick.
    Closed,
}

/// A channel's membership in a conference. Leave with [`Participant::leave`]; dropping it
/// leaves too (without the channel events).
pub struct Participant {
    registry: Arc<ConfRegistry>,
    conf: Arc<Conference>,
    pid: u64,
    admin: bool,
    format: Format,
    audio: mpsc::Sender<Frame>,
    mixed: mpsc::Receiver<Frame>,
    notices: mpsc::UnboundedReceiver<Notice>,
    left: bool,
}

impl Participant {
    pub fn conference(&self) -> &Arc<Conference> {
        &self.conf
    }

    /// The conference's format when this participant joined (later changes show in the
    /// format of the mixed frames).
    pub fn format(&self) -> Format {
        self.format
    }

    /// Send a frame of this participant's audio; false when it was dropped (queue full).
    pub fn send_audio(&self, f: Frame) -> bool {
        self.audio.try_send(f).is_ok()
    }

    /// The next thing for this participant (cancel-safe).
    pub async fn recv(&mut self) -> ParticipantEvent {
        tokio::select! {
            biased;
            n = self.notices.recv() => match n {
                Some(Notice::Muted(m)) => ParticipantEvent::Muted(m),
                Some(Notice::Kicked) => ParticipantEvent::Kicked,
                None => ParticipantEvent::Closed,
            },
            f = self.mixed.recv() => match f {
                Some(f) => ParticipantEvent::Audio(f),
                None => match self.notices.try_recv() {
                    Ok(Notice::Kicked) => ParticipantEvent::Kicked,
                    Ok(Notice::Muted(m)) => ParticipantEvent::Muted(m),
                    Err(_) => ParticipantEvent::Closed,
                },
            },
        }
    }

    pub fn is_muted(&self) -> bool {
        self.conf.is_muted_pid(self.pid)
    }

    /// Mute or unmute this participant (a [`ParticipantEvent::Muted`] follows).
    pub fn set_muted(&self, muted: bool) -> bool {
        self.conf.set_muted_pid(self.pid, muted)
    }

    /// Publish ConfbridgeMute / ConfbridgeUnmute for this participant on its channel.
    pub fn publish_mute(&self, chan: &mut Channel, muted: bool) {
        let n = self.conf.len();
        chan.publish(
            bridge_event(
                if muted {
                    "ConfbridgeMute"
                } else {
                    "ConfbridgeUnmute"
                },
                &self.conf,
                n,
                true,
            )
            .field("Admin", yes_no(self.admin)),
        );
    }

    /// Leave the conference, publishing ConfbridgeLeave and BridgeLeave on `chan` (and the
    /// conference's end when this was the last participant). Returns how many remain.
    pub fn leave(mut self, chan: &mut Channel) -> usize {
        self.left = true;
        self.registry
            .leave(&self.conf, self.pid, self.admin, Some(chan))
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        if !self.left {
            self.registry.leave(&self.conf, self.pid, self.admin, None);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------

fn add_cli(core: &Arc<Core>, words: &str, usage: &str, f: fn(&Core, &[String]) -> String) {
    core.register_cli(
        words,
        usage,
        Arc::new(
            move |c: Arc<Core>, a: Vec<String>| -> BoxFuture<'static, String> {
                let out = f(&c, &a);
                Box::pin(async move { out })
            },
        ),
    );
}

/// `confbridge list [<conference>]`.
pub fn cli_list(core: &Core, args: &[String]) -> String {
    let reg = ConfRegistry::of(core);
    let mut out = String::new();
    match args.first() {
        None => {
            out.push_str("Conference Bridge Name           Users  Marked Locked Muted\n");
            out.push_str("================================ ====== ====== ====== =====\n");
            for c in reg.list() {
                out.push_str(&format!(
                    "{:<32} {:>6} {:>6} {:<6} {}\n",
                    c.name,
                    c.len(),
                    c.marked_count(),
                    "No",
                    "No"
                ));
            }
        }
        Some(name) => {
            let Some(c) = reg.find(name) else {
                return format!("No conference bridge named '{name}' found!\n");
            };
            out.push_str("Channel                        Flags  User Profile     Bridge Profile   Menu             CallerID\n");
            out.push_str("============================== ====== ================ ================ ================ ================\n");
            for m in c.members() {
                let mut flags = String::new();
                if m.admin {
                    flags.push('A');
                }
                if m.marked {
                    flags.push('M');
                }
                if m.muted {
                    flags.push('m');
                }
                let cid = if m.caller_num.is_empty() {
                    "<unknown>"
                } else {
                    m.caller_num.as_str()
                };
                out.push_str(&format!(
                    "{:<30} {:<6} {:<16} {:<16} {:<16} {}\n",
                    m.channel, flags, m.user_profile, c.profile.name, m.menu, cid
                ));
            }
        }
    }
    out
}

fn cli_mute(core: &Core, args: &[String], mute: bool) -> String {
    let cmd = if mute { "mute" } else { "unmute" };
    let (Some(conf), Some(who)) = (args.first(), args.get(1)) else {
        return format!(
            "Usage: confbridge {cmd} <conference> <channel>\n       {} a channel in a conference.\n       If the keyword 'all' is used, all participants are {cmd}d.\n       If the keyword 'participants' is used, all non-admin participants are {cmd}d.\n",
            if mute { "Mute" } else { "Unmute" }
        );
    };
    let Some(c) = ConfRegistry::of(core).find(conf) else {
        return format!("No conference bridge named '{conf}' found!\n");
    };
    if c.set_muted(who, mute) == 0 {
        if who.eq_ignore_ascii_case("all") || who.eq_ignore_ascii_case("participants") {
            return format!("No participants found in conference bridge '{conf}'!\n");
        }
        return format!("No channel named '{who}' found in conference bridge '{conf}'!\n");
    }
    format!(
        "{} {} from confbridge {}\n",
        if mute { "Muting" } else { "Unmuting" },
        who,
        conf
    )
}

fn cli_kick(core: &Core, args: &[String]) -> String {
    let (Some(conf), Some(who)) = (args.first(), args.get(1)) else {
        return "Usage: confbridge kick <conference> <channel>\n       Kicks a channel out of the conference bridge.\n             (all to kick everyone, participants to kick non-admins).\n".to_string();
    };
    let Some(c) = ConfRegistry::of(core).find(conf) else {
        return format!("No conference bridge named '{conf}' found!\n");
    };
    if c.kick(who) == 0 {
        if who.eq_ignore_ascii_case("all") || who.eq_ignore_ascii_case("participants") {
            return "No participants found!\n".to_string();
        }
        return format!("No participant named '{who}' found!\n");
    }
    format!("Kicked '{who}' out of conference '{conf}'\n")
}

/// Create the registry and register the `confbridge` CLI commands (called from boot).
pub fn register(core: &Arc<Core>) {
    let _ = ConfRegistry::of(core);
    add_cli(
        core,
        "confbridge list",
        "confbridge list [<name>]: List conference bridges and participants",
        cli_list,
    );
    add_cli(
        core,
        "confbridge mute",
        "confbridge mute <conference> <channel|all|participants>: Mute participants",
        |c, a| cli_mute(c, a, true),
    );
    add_cli(
        core,
        "confbridge unmute",
        "confbridge unmute <conference> <channel|all|participants>: Unmute participants",
        |c, a| cli_mute(c, a, false),
    );
    add_cli(
        core,
        "confbridge kick",
        "confbridge kick <conference> <channel|all|participants>: Kick participants",
        cli_kick,
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::channel::TechLink;

    fn slin(format: Format, v: i16) -> Frame {
        let n = format.rate() as usize / 50;
        Frame::from_slin(format, &vec![v; n])
    }

    fn all(f: &Frame, v: i16) -> bool {
        f.slin_samples().iter().all(|s| *s == v)
    }

    #[test]
    fn everyone_but_me_with_mute() {
        let mut m = MixCore::new(None, 20);
        let a = m.add(8000, false);
        let b = m.add(8000, false);
        let c = m.add(8000, false);
        assert_eq!(
            (m.format(), m.frame_samples(), m.len()),
            (Format::Slin8, 160, 3)
        );
        assert!(m.feed(a, &slin(Format::Slin8, 1000)));
        assert!(m.feed(b, &slin(Format::Slin8, 20)));
        m.round();
        let (fa, fb, fc) = (
            m.output(a).unwrap(),
            m.output(b).unwrap(),
            m.output(c).unwrap(),
        );
        assert_eq!(fa.format, Format::Slin8);
        assert_eq!(fa.data.len(), 320);
        assert!(all(&fa, 20) && all(&fb, 1000) && all(&fc, 1020));
        assert_eq!(m.mixed()[0], 1020);
        // Muted: b is not heard, but still hears.
        assert!(m.set_muted(b, true));
        assert_eq!(m.is_muted(b), Some(true));
        m.feed(a, &slin(Format::Slin8, 1000));
        m.feed(b, &slin(Format::Slin8, 20));
        m.round();
        let fa2 = m.output(a).unwrap();
        assert!(all(&fa2, 0));
        assert!(all(&m.output(b).unwrap(), 1000));
        assert!(all(&m.output(c).unwrap(), 1000));
        // Timestamps and sequence numbers advance per frame.
        assert_eq!(fa2.ts, fa.ts.wrapping_add(160));
        assert_eq!(fa2.seq, fa.seq.wrapping_add(1));
        // Nobody spoke: silence for everyone.
        m.round();
        assert!(all(&m.output(c).unwrap(), 0));
        // Removed participants get nothing; their slot is reused.
        assert!(m.remove(c));
        assert!(!m.remove(c));
        assert!(m.output(c).is_none());
        assert!(!m.feed(c, &slin(Format::Slin8, 1)));
        assert!(!m.set_muted(c, true));
        assert_eq!(m.add(8000, true), c);
        assert_eq!(m.is_muted(c), Some(true));
    }

    #[test]
    fn partial_frames_wait_and_backlog_is_bounded() {
        let mut m = MixCore::new(Some(8000), 20);
        let a = m.add(8000, false);
        let b = m.add(8000, false);
        // 100 samples are not a full interval: silent this round, kept for the next.
        m.feed(a, &Frame::from_slin(Format::Slin8, &[7; 100]));
        m.round();
        assert!(all(&m.output(b).unwrap(), 0));
        m.feed(a, &Frame::from_slin(Format::Slin8, &[9; 100]));
        m.round();
        let s = m.output(b).unwrap().slin_samples();
        assert!(s[..100].iter().all(|v| *v == 7) && s[100..].iter().all(|v| *v == 9));
        // 40 samples of 9 are left over; a burst of 10 frames keeps only the newest audio.
        for v in 1..=10 {
            m.feed(a, &slin(Format::Slin8, v * 100));
        }
        m.round();
        // The buffer holds 6 intervals: frames 5..=10; one is mixed, 3 stay (8, 9, 10).
        assert!(all(&m.output(b).unwrap(), 500));
        m.round();
        assert!(
            all(&m.output(b).unwrap(), 800),
            "lag beyond 3 intervals is dropped"
        );
        m.round();
        m.round();
        assert!(all(&m.output(b).unwrap(), 1000));
        m.round();
        assert!(all(&m.output(b).unwrap(), 0));
        // One oversized frame keeps its newest samples.
        let big: Vec<i16> = (0..2000).map(|i| i as i16).collect();
        m.feed(a, &Frame::from_slin(Format::Slin8, &big));
        m.round();
        assert_eq!(m.output(b).unwrap().slin_samples()[0], 2000 - 960);
    }

    #[test]
    fn rate_follows_participants_or_profile() {
        let mut m = MixCore::new(None, 20);
        let a = m.add(8000, false);
        assert_eq!(m.format(), Format::Slin8);
        // G.711 is mixed at 8 kHz.
        let u = Frame::new(
            Format::Ulaw,
            crate::media::translate::encode_from_slin(Format::Ulaw, &[0; 160]),
        );
        assert!(m.feed(a, &u));
        let b = m.add(16000, true);
        assert_eq!((m.format(), m.frame_samples()), (Format::Slin16, 320));
        assert_eq!(m.is_muted(b), Some(true), "mute survives the rebuild");
        assert!(
            !m.feed(a, &slin(Format::Slin8, 5)),
            "8 kHz frame in a 16 kHz mix"
        );
        assert!(!m.feed(a, &u));
        assert!(m.feed(a, &slin(Format::Slin16, 5)));
        m.round();
        let fb = m.output(b).unwrap();
        assert_eq!((fb.format, fb.data.len()), (Format::Slin16, 640));
        assert!(all(&fb, 5));
        m.remove(b);
        assert_eq!(m.format(), Format::Slin8);
        let mut fixed = MixCore::new(Some(16000), 40);
        fixed.add(8000, false);
        assert_eq!(
            (fixed.format(), fixed.frame_samples()),
            (Format::Slin16, 640)
        );
        assert_eq!(MixCore::new(None, 33).interval_ms(), 20);
        assert_eq!(mix_rate(None, [8000, 16000]), 16000);
        assert_eq!(mix_rate(Some(8000), [16000]), 8000);
        assert_eq!(preferred_rate(Format::G722), 16000);
        assert_eq!(preferred_rate(Format::Ulaw), 8000);
    }

    #[test]
    fn output_payloads_share_one_slab() {
        let mut m = MixCore::new(None, 20);
        let a = m.add(8000, false);
        let mut frames = Vec::new();
        for _ in 0..OUT_SLAB_INTERVALS {
            m.round();
            frames.push(m.output(a).unwrap());
        }
        for w in frames.windows(2) {
            assert_eq!(
                w[1].data.as_ptr() as usize,
                w[0].data.as_ptr() as usize + 320,
                "consecutive frames come from the same allocation"
            );
        }
        m.round();
        let next = m.output(a).unwrap();
        assert_eq!(next.data.len(), 320);
    }

    #[test]
    fn profiles_from_confbridge_conf() {
        let text = "[general]\n\n[big](!)\ntype=bridge\nmax_members=2\n\n[wide](big)\ninternal_sample_rate=16000\nmixing_interval=40\n\n[quiet_user]\ntype=user\nstartmuted=yes\nadmin=yes\n\n[m1]\ntype=menu\n*=toggle_mute\n9#=leave_conference\n1=playback(beep)\n";
        let f = crate::config::parse_str(text, Path::new("confbridge.conf")).unwrap();
        let p = Profiles::from_conf(&f).unwrap();
        let b = p.bridge("wide").unwrap();
        assert_eq!(
            (b.internal_sample_rate, b.mixing_interval_ms, b.max_members),
            (Some(16000), 40, 2)
        );
        assert!(p.bridge("big").is_err(), "templates are not profiles");
        assert_eq!(
            p.bridge(DEFAULT_BRIDGE_PROFILE)
                .unwrap()
                .internal_sample_rate,
            None
        );
        let u = p.user("quiet_user").unwrap();
        assert!(u.startmuted && u.admin && !u.marked);
        assert!(matches!(p.user("nobody"), Err(ConfError::NoUserProfile(_))));
        let m = p.menu("m1").unwrap();
        assert_eq!(m.lookup("*"), MenuMatch::Exact(MenuAction::ToggleMute));
        assert_eq!(m.lookup("9"), MenuMatch::Prefix);
        assert_eq!(
            m.lookup("9#"),
            MenuMatch::Exact(MenuAction::LeaveConference)
        );
        assert_eq!(m.lookup("1"), MenuMatch::Exact(MenuAction::NoOp));
        assert_eq!(m.lookup("5"), MenuMatch::None);
        assert_eq!(
            p.menu(DEFAULT_MENU).unwrap().lookup("*"),
            MenuMatch::Exact(MenuAction::ToggleMute)
        );
        for (bad, line) in [
            ("[x]\ntype=bridge\ninternal_sample_rate=fast\n", 3),
            ("[x]\ntype=bridge\nmixing_interval=15\n", 3),
            ("[x]\ntype=bridge\nmax_members=-1\n", 3),
            ("[x]\ntype=nonsense\n", 2),
            ("[x]\nadmin=yes\n", 1),
            ("[x]\ntype=menu\nhello=toggle_mute\n", 3),
        ] {
            let f = crate::config::parse_str(bad, Path::new("confbridge.conf")).unwrap();
            let e = Profiles::from_conf(&f).unwrap_err();
            assert_eq!(e.line, line, "{bad}: {e}");
        }
    }

    fn member(name: &str, admin: bool) -> Member {
        Member {
            pid: 0,
            channel: name.to_string(),
            chan_id: 0,
            caller_num: String::new(),
            user_profile: String::new(),
            menu: String::new(),
            admin,
            marked: false,
            muted: false,
            pref_rate: 8000,
            notices: mpsc::unbounded_channel().0,
        }
    }

    #[test]
    fn member_selection() {
        let ms = vec![
            member("Local/1@x-0001;2", true),
            member("Local/2@x-0002;2", false),
            member("PJSIP/bob-0003", false),
        ];
        assert_eq!(select_members(&ms, "all"), vec![0, 1, 2]);
        assert_eq!(select_members(&ms, "Participants"), vec![1, 2]);
        assert_eq!(select_members(&ms, "pjsip/BOB-0003"), vec![2]);
        assert_eq!(select_members(&ms, "Local/2@x"), vec![1]);
        assert_eq!(select_members(&ms, "Local/"), vec![0], "first prefix match");
        assert!(select_members(&ms, "SIP/none").is_empty());
        assert!(select_members(&ms, "").is_empty());
    }

    pub(crate) fn test_core() -> (Arc<Core>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (dirs, options) = crate::runtime::read_main_conf(dir.path()).unwrap();
        let core = Core::new(dirs, options, crate::dialplan::Dialplan::default());
        (core, dir)
    }

    fn drain(p: &mut Participant) -> (Vec<Frame>, Vec<bool>, bool) {
        let (mut frames, mut mutes, mut kicked) = (Vec::new(), Vec::new(), false);
        loop {
            match p.notices.try_recv() {
                Ok(Notice::Muted(m)) => mutes.push(m),
                Ok(Notice::Kicked) => kicked = true,
                Err(_) => break,
            }
        }
        while let Ok(f) = p.mixed.try_recv() {
            frames.push(f);
        }
        (frames, mutes, kicked)
    }

    #[tokio::test]
    async fn conference_mixes_mutes_kicks_and_ends() {
        let (core, _dir) = test_core();
        let mut sub = core.bus.subscribe(1000);
        let reg = ConfRegistry::of(&core);
        assert!(Arc::ptr_eq(&reg, &ConfRegistry::of(&core)));
        let mut chans = Vec::new();
        let mut links = Vec::new();
        for n in ["Test/a", "Test/b", "Test/c"] {
            let (l1, l2) = TechLink::pair("Test", Format::Slin8);
            chans.push(Channel::new(&core, n.to_string(), l1));
            links.push(l2);
        }
        let bridge = BridgeProfile::default();
        let user = UserProfile::default();
        let mut ps = Vec::new();
        for ch in chans.iter_mut() {
            ps.push(reg.join(ch, "T1", &bridge, &user, DEFAULT_MENU).unwrap());
        }
        let conf = reg.find("t1").expect("case-insensitive lookup");
        assert_eq!(conf.len(), 3);
        assert_eq!(ps[0].format(), Format::Slin8);
        assert_eq!(reg.list().len(), 1);
        let list = cli_list(&core, &["t1".to_string()]);
        assert_eq!(list.matches("Test/").count(), 3, "{list}");
        let all_list = cli_list(&core, &[]);
        let row: Vec<&str> = all_list
            .lines()
            .nth(2)
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(row, vec!["T1", "3", "0", "No", "No"], "{all_list}");

        // a says 1000, b says 10, c is silent.
        let mut heard: Vec<Vec<Frame>> = vec![Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..10 {
            ps[0].send_audio(slin(Format::Slin8, 1000));
            ps[1].send_audio(slin(Format::Slin8, 10));
            tokio::time::sleep(Duration::from_millis(20)).await;
            for (i, p) in ps.iter_mut().enumerate() {
                heard[i].extend(drain(p).0);
            }
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        for (i, p) in ps.iter_mut().enumerate() {
            heard[i].extend(drain(p).0);
        }
        assert!(heard[0].iter().any(|f| all(f, 10)), "a hears b only");
        assert!(heard[1].iter().any(|f| all(f, 1000)), "b hears a only");
        assert!(heard[2].iter().any(|f| all(f, 1010)), "c hears both");
        assert!(heard[0].iter().all(|f| all(f, 10) || all(f, 0)));

        // Mute b from outside (as the CLI does): c no longer hears it.
        assert_eq!(
            cli_mute(&core, &["t1".into(), "test/B".into()], true),
            "Muting test/B from confbridge t1\n"
        );
        let (_, mutes, _) = drain(&mut ps[1]);
        assert_eq!(mutes, vec![true]);
        ps[1].publish_mute(&mut chans[1], true);
        assert!(ps[1].is_muted());
        let list = cli_list(&core, &["T1".into()]);
        let row = list.lines().find(|l| l.starts_with("Test/b")).unwrap();
        assert_eq!(row[31..37].trim(), "m", "{list}");
        drain(&mut ps[2]);
        let mut after = Vec::new();
        for _ in 0..8 {
            ps[0].send_audio(slin(Format::Slin8, 1000));
            ps[1].send_audio(slin(Format::Slin8, 10));
            tokio::time::sleep(Duration::from_millis(20)).await;
            after.extend(drain(&mut ps[2]).0);
        }
        assert!(after.iter().any(|f| all(f, 1000)));
        assert!(
            after.iter().all(|f| all(f, 1000) || all(f, 0)),
            "muted audio leaked"
        );

        // Kick c.
        assert_eq!(
            cli_kick(&core, &["t1".into(), "Test/c".into()]),
            "Kicked 'Test/c' out of conference 't1'\n"
        );
        assert_eq!(
            cli_kick(&core, &["t1".into(), "Test/x".into()]),
            "No participant named 'Test/x' found!\n"
        );
        assert_eq!(
            cli_kick(&core, &["nope".into(), "all".into()]),
            "No conference bridge named 'nope' found!\n"
        );
        let mut pc = ps.pop().unwrap();
        assert!(matches!(pc.recv().await, ParticipantEvent::Kicked));
        assert_eq!(pc.leave(&mut chans[2]), 2);
        let pb = ps.pop().unwrap();
        assert_eq!(pb.leave(&mut chans[1]), 1);
        // The last one leaving (here by drop) ends the conference.
        drop(ps);
        assert!(reg.find("t1").is_none());
        assert!(cli_list(&core, &["t1".into()]).starts_with("No conference bridge named"));

        let mut evs = Vec::new();
        while let Ok(e) = sub.rx.try_recv() {
            if e.name.starts_with("Bridge") || e.name.starts_with("Confbridge") {
                evs.push(e);
            }
        }
        let names: Vec<&str> = evs.iter().map(|e| e.name.as_ref()).collect();
        assert_eq!(
            names,
            vec![
                "BridgeCreate",
                "ConfbridgeStart",
                "BridgeEnter",
                "ConfbridgeJoin",
                "BridgeEnter",
                "ConfbridgeJoin",
                "BridgeEnter",
                "ConfbridgeJoin",
                "ConfbridgeMute",
                "ConfbridgeLeave",
                "BridgeLeave",
                "ConfbridgeLeave",
                "BridgeLeave",
                "BridgeDestroy",
                "ConfbridgeEnd",
            ]
        );
        for e in &evs {
            assert_eq!(e.get("BridgeType"), Some("conference"));
            assert_eq!(e.get("BridgeTechnology"), Some("softmix"));
            assert_eq!(e.get("BridgeUniqueid"), Some(conf.uniqueid.as_str()));
            if e.name.starts_with("Confbridge") {
                assert_eq!(e.get("Conference"), Some("T1"));
            }
        }
        assert_eq!(evs[6].get("BridgeNumChannels"), Some("3"));
        assert_eq!(evs[8].channel.as_ref().unwrap().name, "Test/b");
        assert_eq!(evs[12].get("BridgeNumChannels"), Some("1"));
        assert_eq!(evs[3].get("Muted"), Some("No"));
        drop(links);
    }

    #[tokio::test]
    async fn a_stalled_participant_does_not_stall_the_others() {
        let (core, _dir) = test_core();
        let reg = ConfRegistry::of(&core);
        let (l1, _l2) = TechLink::pair("Test", Format::Slin8);
        let (m1, _m2) = TechLink::pair("Test", Format::Slin8);
        let mut cx = Channel::new(&core, "Test/x".into(), l1);
        let mut cy = Channel::new(&core, "Test/y".into(), m1);
        let p = BridgeProfile::default();
        let u = UserProfile::default();
        let stalled = reg.join(&mut cx, "s", &p, &u, DEFAULT_MENU).unwrap();
        let mut live = reg.join(&mut cy, "s", &p, &u, DEFAULT_MENU).unwrap();
        let mut got = 0;
        for _ in 0..30 {
            stalled.send_audio(slin(Format::Slin8, 42));
            tokio::time::sleep(Duration::from_millis(20)).await;
            got += drain(&mut live).0.iter().filter(|f| all(f, 42)).count();
        }
        assert!(got >= 10, "only {got} frames reached the live participant");
        assert!(stalled.mixed.len() <= AUDIO_OUT_DEPTH);
        live.leave(&mut cy);
        stalled.leave(&mut cx);
        assert!(reg.list().is_empty());
    }
}
