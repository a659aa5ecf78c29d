//! SDP (RFC 8866: `v o s c t m a` and the other line types kept as they are) and the
//! RFC 3264 offer/answer model for one audio stream: PCMU (0), PCMA (8), G722 (9) and
//! telephone-event (RFC 4733, dynamic payload type, `fmtp 0-16`), `ptime`, direction
//! attributes, and hold detection.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use crate::media::Format;

/// Limits that keep a hostile body from costing much.
const MAX_LINES: usize = 2048;
const MAX_MEDIA: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SDP line {line}: {reason}")]
pub struct SdpError {
    pub line: usize,
    pub reason: String,
}

fn err(line: usize, reason: impl Into<String>) -> SdpError {
    SdpError {
        line,
        reason: reason.into(),
    }
}

/// No audio stream of the offer could be accepted (answer with 488).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no codec in common with the offer")]
pub struct NoCommonCodec;

/// Audio codecs voxpbx negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
    G722,
}

impl Codec {
    pub fn static_pt(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::G722 => 9,
        }
    }
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
        }
    }
    /// The RTP clock rate as written in SDP (8000 for G722 too, RFC 3551 §4.5.2).
    pub fn clock_rate(self) -> u32 {
        8000
    }
    pub fn format(self) -> Format {
        match self {
            Codec::Pcmu => Format::Ulaw,
            Codec::Pcma => Format::Alaw,
            Codec::G722 => Format::G722,
        }
    }
    pub fn from_format(f: Format) -> Option<Codec> {
        match f {
            Format::Ulaw => Some(Codec::Pcmu),
            Format::Alaw => Some(Codec::Pcma),
            Format::G722 => Some(Codec::G722),
            _ => None,
        }
    }
    fn from_static_pt(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            9 => Some(Codec::G722),
            _ => None,
        }
    }
    fn from_rtpmap(name: &str, rate: u32) -> Option<Codec> {
        [Codec::Pcmu, Codec::Pcma, Codec::G722]
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name) && c.clock_rate() == rate)
    }
}

/// The payload type voxpbx offers for telephone-event.
pub const TELEPHONE_EVENT_PT: u8 = 101;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
    fn parse(s: &str) -> Option<Direction> {
        Some(match s {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
    fn from_flags(send: bool, recv: bool) -> Direction {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
    /// The same stream seen from the other end.
    pub fn reverse(self) -> Direction {
        Direction::from_flags(self.receives(), self.sends())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    /// Kept as text: some peers use more digits than a u64 holds.
    pub session_id: String,
    pub session_version: u64,
    pub net_type: String,
    pub addr_type: String,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub net_type: String,
    pub addr_type: String,
    /// Address, possibly with `/ttl[/count]` for multicast.
    pub address: String,
}

impl Connection {
    pub fn new(ip: IpAddr) -> Connection {
        Connection {
            net_type: "IN".into(),
            addr_type: if ip.is_ipv4() { "IP4" } else { "IP6" }.into(),
            address: ip.to_string(),
        }
    }
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.split('/').next()?.parse().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

impl Attribute {
    pub fn new(name: &str, value: Option<String>) -> Attribute {
        Attribute {
            name: name.to_string(),
            value,
        }
    }
}

fn find_attr<'a>(attrs: &'a [Attribute], name: &str) -> impl Iterator<Item = &'a str> + 'a {
    let name = name.to_string();
    attrs
        .iter()
        .filter(move |a| a.name == name)
        .map(|a| a.value.as_deref().unwrap_or(""))
}

fn direction_of(attrs: &[Attribute]) -> Option<Direction> {
    attrs.iter().rev().find_map(|a| {
        if a.value.is_none() {
            Direction::parse(&a.name)
        } else {
            None
        }
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, ...
    pub media: String,
    pub port: u16,
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, ...
    pub proto: String,
    /// Payload types (or other format tokens) in preference order.
    pub formats: Vec<String>,
    pub connection: Option<Connection>,
    /// `i`, `b`, `k` lines, kept as (type, value).
    pub other: Vec<(char, String)>,
    pub attributes: Vec<Attribute>,
}

impl Media {
    pub fn attr<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        find_attr(&self.attributes, name)
    }
    /// `(encoding name, clock rate)` from `a=rtpmap` for `pt`.
    pub fn rtpmap(&self, pt: u8) -> Option<(&str, u32)> {
        self.attr("rtpmap").find_map(|v| {
            let (p, rest) = v.split_once(' ')?;
            if p.trim().parse::<u8>().ok()? != pt {
                return None;
            }
            let mut it = rest.trim().split('/');
            let name = it.next()?;
            let rate = it.next()?.parse().ok()?;
            Some((name, rate))
        })
    }
    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.attr("fmtp").find_map(|v| {
            let (p, rest) = v.split_once(' ')?;
            (p.trim().parse::<u8>().ok()? == pt).then_some(rest.trim())
        })
    }
    pub fn ptime(&self) -> Option<u32> {
        self.attr("ptime").find_map(|v| v.trim().parse().ok())
    }
    fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter(|pt| *pt < 128)
    }
    /// Codecs we know in this m-line, in its order, with their payload types.
    pub fn codecs(&self) -> Vec<(Codec, u8)> {
        let mut out: Vec<(Codec, u8)> = Vec::new();
        for pt in self.payload_types() {
            let codec = match self.rtpmap(pt) {
                Some((name, rate)) => Codec::from_rtpmap(name, rate),
                None => Codec::from_static_pt(pt),
            };
            if let Some(c) = codec {
                if !out.iter().any(|(k, _)| *k == c) {
                    out.push((c, pt));
                }
            }
        }
        out
    }
    /// The telephone-event/8000 payload type, if present.
    pub fn telephone_event(&self) -> Option<u8> {
        self.payload_types().find(|&pt| {
            self.rtpmap(pt)
                .is_some_and(|(n, r)| n.eq_ignore_ascii_case("telephone-event") && r == 8000)
        })
    }
    fn is_rtp_avp_audio(&self) -> bool {
        self.media == "audio" && self.proto.eq_ignore_ascii_case("RTP/AVP")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    pub version: u32,
    pub origin: Origin,
    pub session_name: String,
    pub connection: Option<Connection>,
    pub timing: (u64, u64),
    /// Other session-level lines (`i u e p b z k r`), kept as (type, value).
    pub other: Vec<(char, String)>,
    pub attributes: Vec<Attribute>,
    pub media: Vec<Media>,
}

/// What the media layer needs from an accepted audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioInfo {
    /// RTP destination: media-level `c=`, else session-level.
    pub addr: Option<IpAddr>,
    pub port: u16,
    /// Known codecs in the stream's order (the first one is what the peer prefers).
    pub codecs: Vec<(Codec, u8)>,
    pub telephone_event: Option<u8>,
    pub ptime: Option<u32>,
    pub direction: Direction,
}

fn parse_connection(v: &str, line: usize) -> Result<Connection, SdpError> {
    let mut it = v.split(' ');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(n), Some(a), Some(addr), None)
            if !n.is_empty() && !a.is_empty() && !addr.is_empty() =>
        {
            Ok(Connection {
                net_type: n.into(),
                addr_type: a.into(),
                address: addr.into(),
            })
        }
        _ => Err(err(line, "c= needs <nettype> <addrtype> <address>")),
    }
}

fn parse_attribute(v: &str) -> Attribute {
    match v.split_once(':') {
        Some((n, val)) => Attribute {
            name: n.to_string(),
            value: Some(val.to_string()),
        },
        None => Attribute {
            name: v.to_string(),
            value: None,
        },
    }
}

impl Sdp {
    /// Parse an SDP body (UTF-8; LF or CRLF line ends).
    pub fn parse(body: &[u8]) -> Result<Sdp, SdpError> {
        let text = std::str::from_utf8(body).map_err(|_| err(0, "not UTF-8"))?;
        let mut version = None;
        let mut origin = None;
        let mut session_name = None;
        let mut connection = None;
        let mut timing = None;
        let mut other = Vec::new();
        let mut attributes = Vec::new();
        let mut media: Vec<Media> = Vec::new();
        for (idx, raw) in text.split('\n').enumerate() {
            let n = idx + 1;
            if n > MAX_LINES {
                return Err(err(n, "too many lines"));
            }
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            if line.contains(['\r', '\0']) {
                return Err(err(n, "CR or NUL inside a line"));
            }
            let b = line.as_bytes();
            if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_lowercase() {
                return Err(err(n, "expected <type>=<value>"));
            }
            let kind = b[0] as char;
            let v = &line[2..];
            if version.is_none() && kind != 'v' {
                return Err(err(n, "the first line must be v="));
            }
            match (kind, media.last_mut()) {
                ('v', _) => {
                    if version.is_some() {
                        return Err(err(n, "repeated v="));
                    }
                    version = Some(v.trim().parse::<u32>().map_err(|_| err(n, "bad version"))?);
                }
                ('o', None) => {
                    let f: Vec<&str> = v.split(' ').collect();
                    if f.len() != 6 || f.iter().any(|x| x.is_empty()) {
                        return Err(err(n, "o= needs 6 fields"));
                    }
                    if !f[1].bytes().all(|c| c.is_ascii_digit()) {
                        return Err(err(n, "bad session id"));
                    }
                    origin = Some(Origin {
                        username: f[0].into(),
                        session_id: f[1].into(),
                        session_version: f[2].parse().map_err(|_| err(n, "bad session version"))?,
                        net_type: f[3].into(),
                        addr_type: f[4].into(),
                        address: f[5].into(),
                    });
                }
                ('s', None) => session_name = Some(v.to_string()),
                ('t', None) => {
                    let (a, b) = v
                        .split_once(' ')
                        .ok_or_else(|| err(n, "t= needs start and stop"))?;
                    timing = Some((
                        a.parse().map_err(|_| err(n, "bad start time"))?,
                        b.parse().map_err(|_| err(n, "bad stop time"))?,
                    ));
                }
                ('c', None) => connection = Some(parse_connection(v, n)?),
                ('c', Some(m)) => m.connection = Some(parse_connection(v, n)?),
                ('a', None) => attributes.push(parse_attribute(v)),
                ('a', Some(m)) => m.attributes.push(parse_attribute(v)),
                ('m', _) => {
                    if media.len() >= MAX_MEDIA {
                        return Err(err(n, "too many m= lines"));
                    }
                    let mut f = v.split(' ');
                    let (Some(kind), Some(port), Some(proto)) = (f.next(), f.next(), f.next())
                    else {
                        return Err(err(n, "m= needs <media> <port> <proto> <fmt>..."));
                    };
                    let (port, port_count) = match port.split_once('/') {
                        Some((p, c)) => (p, Some(c.parse().map_err(|_| err(n, "bad port count"))?)),
                        None => (port, None),
                    };
                    let formats: Vec<String> =
                        f.filter(|x| !x.is_empty()).map(str::to_string).collect();
                    if kind.is_empty() || proto.is_empty() || formats.is_empty() {
                        return Err(err(n, "m= needs <media> <port> <proto> <fmt>..."));
                    }
                    media.push(Media {
                        media: kind.into(),
                        port: port.parse().map_err(|_| err(n, "bad port"))?,
                        port_count,
                        proto: proto.into(),
                        formats,
                        connection: None,
                        other: Vec::new(),
                        attributes: Vec::new(),
                    });
                }
                ('i' | 'b' | 'k', Some(m)) => m.other.push((kind, v.to_string())),
                ('i' | 'u' | 'e' | 'p' | 'b' | 'z' | 'k' | 'r', None) => {
                    other.push((kind, v.to_string()))
                }
                (_, Some(_)) => {
                    return Err(err(n, format!("{kind}= is not allowed in a media section")))
                }
                (_, None) => return Err(err(n, format!("unknown line type {kind}="))),
            }
        }
        Ok(Sdp {
            version: version.ok_or_else(|| err(0, "empty SDP"))?,
            origin: origin.ok_or_else(|| err(0, "missing o="))?,
            session_name: session_name.ok_or_else(|| err(0, "missing s="))?,
            connection,
            timing: timing.unwrap_or((0, 0)),
            other,
            attributes,
            media,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// Increase the origin's session version (every new offer/answer in a session).
    pub fn bump_version(&mut self) {
        self.origin.session_version = self.origin.session_version.wrapping_add(1);
    }

    pub fn attr<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        find_attr(&self.attributes, name)
    }

    /// The first audio stream that is not rejected (port 0).
    pub fn audio_media(&self) -> Option<&Media> {
        self.media
            .iter()
            .find(|m| m.media == "audio" && m.port != 0)
    }

    /// Direction of `m`: its own attribute, else the session's, else sendrecv.
    pub fn media_direction(&self, m: &Media) -> Direction {
        direction_of(&m.attributes)
            .or_else(|| direction_of(&self.attributes))
            .unwrap_or_default()
    }

    /// The accepted audio stream, as the media layer needs it.
    pub fn audio(&self) -> Option<AudioInfo> {
        let m = self.audio_media()?;
        Some(AudioInfo {
            addr: m
                .connection
                .as_ref()
                .or(self.connection.as_ref())
                .and_then(Connection::ip),
            port: m.port,
            codecs: m.codecs(),
            telephone_event: m.telephone_event(),
            ptime: m.ptime(),
            direction: self.media_direction(m),
        })
    }

    /// Hold: the audio stream is sendonly or inactive, or its address is 0.0.0.0
    /// (RFC 2543 style).
    pub fn is_hold(&self) -> bool {
        let Some(m) = self.audio_media() else {
            return false;
        };
        let dir = self.media_direction(m);
        let zero = m
            .connection
            .as_ref()
            .or(self.connection.as_ref())
            .and_then(Connection::ip)
            .is_some_and(|ip| ip.is_unspecified());
        matches!(dir, Direction::SendOnly | Direction::Inactive) || zero
    }
}

impl fmt::Display for Sdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn line(f: &mut fmt::Formatter<'_>, kind: char, v: &str) -> fmt::Result {
            // A value never carries a line break into the output.
            f.write_char(kind)?;
            f.write_char('=')?;
            for c in v.chars() {
                f.write_char(if c == '\r' || c == '\n' { ' ' } else { c })?;
            }
            f.write_str("\r\n")
        }
        fn attrs(f: &mut fmt::Formatter<'_>, attrs: &[Attribute]) -> fmt::Result {
            for a in attrs {
                match &a.value {
                    Some(v) => line(f, 'a', &format!("{}:{}", a.name, v))?,
                    None => line(f, 'a', &a.name)?,
                }
            }
            Ok(())
        }
        fn others(
            f: &mut fmt::Formatter<'_>,
            other: &[(char, String)],
            kinds: &str,
        ) -> fmt::Result {
            for (k, v) in other.iter().filter(|(k, _)| kinds.contains(*k)) {
                line(f, *k, v)?;
            }
            Ok(())
        }
        let conn = |c: &Connection| format!("{} {} {}", c.net_type, c.addr_type, c.address);
        line(f, 'v', &self.version.to_string())?;
        let o = &self.origin;
        line(
            f,
            'o',
            &format!(
                "{} {} {} {} {} {}",
                o.username, o.session_id, o.session_version, o.net_type, o.addr_type, o.address
            ),
        )?;
        line(
            f,
            's',
            if self.session_name.is_empty() {
                "-"
            } else {
                &self.session_name
            },
        )?;
        others(f, &self.other, "iuep")?;
        if let Some(c) = &self.connection {
            line(f, 'c', &conn(c))?;
        }
        others(f, &self.other, "b")?;
        line(f, 't', &format!("{} {}", self.timing.0, self.timing.1))?;
        others(f, &self.other, "rzk")?;
        attrs(f, &self.attributes)?;
        for m in &self.media {
            let port = match m.port_count {
                Some(c) => format!("{}/{}", m.port, c),
                None => m.port.to_string(),
            };
            line(
                f,
                'm',
                &format!("{} {} {} {}", m.media, port, m.proto, m.formats.join(" ")),
            )?;
            others(f, &m.other, "i")?;
            if let Some(c) = &m.connection {
                line(f, 'c', &conn(c))?;
            }
            others(f, &m.other, "bk")?;
            attrs(f, &m.attributes)?;
        }
        Ok(())
    }
}

fn new_session(local_addr: IpAddr) -> Sdp {
    let id = rand::random::<u32>() as u64;
    let conn = Connection::new(local_addr);
    Sdp {
        version: 0,
        origin: Origin {
            username: "voxpbx".into(),
            session_id: id.to_string(),
            session_version: id,
            net_type: conn.net_type.clone(),
            addr_type: conn.addr_type.clone(),
            address: conn.address.clone(),
        },
        session_name: "voxpbx".into(),
        connection: Some(conn),
        timing: (0, 0),
        other: Vec::new(),
        attributes: Vec::new(),
        media: Vec::new(),
    }
}

fn audio_media(
    port: u16,
    codecs: &[(Codec, u8)],
    telephone_event: Option<u8>,
    ptime: u32,
    direction: Direction,
) -> Media {
    let mut formats: Vec<String> = codecs.iter().map(|(_, pt)| pt.to_string()).collect();
    let mut attributes: Vec<Attribute> = codecs
        .iter()
        .map(|(c, pt)| {
            Attribute::new(
                "rtpmap",
                Some(format!("{pt} {}/{}", c.encoding_name(), c.clock_rate())),
            )
        })
        .collect();
    if let Some(pt) = telephone_event {
        formats.push(pt.to_string());
        attributes.push(Attribute::new(
            "rtpmap",
            Some(format!("{pt} telephone-event/8000")),
        ));
        attributes.push(Attribute::new("fmtp", Some(format!("{pt} 0-16"))));
    }
    attributes.push(Attribute::new("ptime", Some(ptime.to_string())));
    attributes.push(Attribute::new(direction.as_str(), None));
    Media {
        media: "audio".into(),
        port,
        port_count: None,
        proto: "RTP/AVP".into(),
        formats,
        connection: None,
        other: Vec::new(),
        attributes,
    }
}

/// An offer with one audio stream: `local_prefs` in order with their static payload
/// types, telephone-event on [`TELEPHONE_EVENT_PT`], ptime 20.
pub fn offer(local_prefs: &[Codec], local_addr: IpAddr, port: u16, direction: Direction) -> Sdp {
    let mut sdp = new_session(local_addr);
    let mut codecs: Vec<(Codec, u8)> = Vec::new();
    for &c in local_prefs {
        if !codecs.iter().any(|(k, _)| *k == c) {
            codecs.push((c, c.static_pt()));
        }
    }
    sdp.media.push(audio_media(
        port,
        &codecs,
        Some(TELEPHONE_EVENT_PT),
        20,
        direction,
    ));
    sdp
}

/// The RFC 3264 answer to `offer`: the first RTP/AVP audio stream with a codec in
/// common is accepted with every common codec in `local_prefs` order (the endpoint's
/// `allow`), using the offer's payload types, plus telephone-event if offered; every
/// other m-line is rejected with port 0. The direction is `direction` narrowed by the
/// reverse of the offered one.
pub fn answer(
    offer: &Sdp,
    local_prefs: &[Codec],
    local_addr: IpAddr,
    port: u16,
    direction: Direction,
) -> Result<Sdp, NoCommonCodec> {
    let mut sdp = new_session(local_addr);
    let mut accepted = false;
    for m in &offer.media {
        if !accepted && m.is_rtp_avp_audio() && m.port != 0 {
            let offered = m.codecs();
            let mut common: Vec<(Codec, u8)> = Vec::new();
            for c in local_prefs {
                if let Some(&(_, pt)) = offered.iter().find(|(k, _)| k == c) {
                    if !common.iter().any(|(k, _)| k == c) {
                        common.push((*c, pt));
                    }
                }
            }
            if !common.is_empty() {
                accepted = true;
                let offered_dir = offer.media_direction(m).reverse();
                let dir = Direction::from_flags(
                    offered_dir.sends() && direction.sends(),
                    offered_dir.receives() && direction.receives(),
                );
                let ptime = m.ptime().unwrap_or(20);
                sdp.media
                    .push(audio_media(port, &common, m.telephone_event(), ptime, dir));
                continue;
            }
        }
        sdp.media.push(Media {
            media: m.media.clone(),
            port: 0,
            port_count: None,
            proto: m.proto.clone(),
            formats: m.formats.iter().take(1).cloned().collect(),
            connection: None,
            other: Vec::new(),
            attributes: Vec::new(),
        });
    }
    if accepted {
        Ok(sdp)
    } else {
        Err(NoCommonCodec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com\r\n\
s=-\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 9 8 0 96 101\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:30\r\n\
a=sendrecv\r\n\
m=video 51372 RTP/AVP 31\r\n\
a=rtpmap:31 H261/90000\r\n";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_roundtrip() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(sdp.origin.session_id, "2890844526");
        assert_eq!(sdp.media.len(), 2);
        let m = &sdp.media[0];
        assert_eq!(
            m.codecs(),
            vec![(Codec::G722, 9), (Codec::Pcma, 8), (Codec::Pcmu, 0)]
        );
        assert_eq!(m.telephone_event(), Some(101));
        assert_eq!(m.fmtp(101), Some("0-15"));
        assert_eq!(m.ptime(), Some(30));
        let info = sdp.audio().unwrap();
        assert_eq!(info.addr, Some(ip("192.0.2.101")));
        assert_eq!(info.port, 49170);
        assert_eq!(info.direction, Direction::SendRecv);
        assert_eq!(sdp.to_string(), OFFER);
        assert_eq!(
            Sdp::parse(sdp.to_string().replace("\r\n", "\n").as_bytes()).unwrap(),
            sdp
        );
    }

    #[test]
    fn answer_orders_by_local_prefs() {
        let offer = Sdp::parse(OFFER.as_bytes()).unwrap();
        let a = answer(
            &offer,
            &[Codec::Pcmu, Codec::Pcma],
            ip("198.51.100.1"),
            20000,
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!(a.media.len(), 2, "one m-line per offered m-line");
        let audio = a.audio().unwrap();
        assert_eq!(audio.codecs, vec![(Codec::Pcmu, 0), (Codec::Pcma, 8)]);
        assert_eq!(audio.telephone_event, Some(101));
        assert_eq!(audio.ptime, Some(30));
        assert_eq!(audio.port, 20000);
        assert_eq!(audio.addr, Some(ip("198.51.100.1")));
        assert_eq!(a.media[0].formats, ["0", "8", "101"]);
        assert_eq!(a.media[0].fmtp(101), Some("0-16"));
        assert_eq!(a.media[1].port, 0);
        assert_eq!(a.media[1].media, "video");
        let text = a.to_string();
        assert!(text.contains("m=audio 20000 RTP/AVP 0 8 101\r\n"));
        assert!(text.contains("c=IN IP4 198.51.100.1\r\n"));
        assert!(text.contains("m=video 0 RTP/AVP 31\r\n"));
        assert!(Sdp::parse(text.as_bytes()).is_ok());

        // G722 first if we prefer it.
        let a = answer(
            &offer,
            &[Codec::G722, Codec::Pcmu],
            ip("198.51.100.1"),
            20000,
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!(a.audio().unwrap().codecs[0], (Codec::G722, 9));
    }

    #[test]
    fn dynamic_pt_and_no_common_codec() {
        let offer = Sdp::parse(
            b"v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n\
m=audio 4000 RTP/AVP 112 18\na=rtpmap:112 PCMU/8000\na=rtpmap:18 G729/8000\n",
        )
        .unwrap();
        let a = answer(
            &offer,
            &[Codec::Pcma, Codec::Pcmu],
            ip("10.0.0.2"),
            5000,
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!(a.audio().unwrap().codecs, vec![(Codec::Pcmu, 112)]);
        assert_eq!(a.audio().unwrap().telephone_event, None);
        assert_eq!(
            answer(
                &offer,
                &[Codec::G722],
                ip("10.0.0.2"),
                5000,
                Direction::SendRecv
            ),
            Err(NoCommonCodec)
        );
        let srtp = Sdp::parse(
            b"v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 4000 RTP/SAVP 0\n",
        )
        .unwrap();
        assert_eq!(
            answer(
                &srtp,
                &[Codec::Pcmu],
                ip("10.0.0.2"),
                5000,
                Direction::SendRecv
            ),
            Err(NoCommonCodec)
        );
    }

    #[test]
    fn directions_and_hold() {
        let with = |attr: &str, c: &str| {
            Sdp::parse(
                format!("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 {c}\nt=0 0\nm=audio 4000 RTP/AVP 0\n{attr}").as_bytes(),
            )
            .unwrap()
        };
        let cases = [
            (
                "a=sendonly\n",
                "10.0.0.1",
                Direction::SendRecv,
                Direction::RecvOnly,
                true,
            ),
            (
                "a=recvonly\n",
                "10.0.0.1",
                Direction::SendRecv,
                Direction::SendOnly,
                false,
            ),
            (
                "a=inactive\n",
                "10.0.0.1",
                Direction::SendRecv,
                Direction::Inactive,
                true,
            ),
            (
                "",
                "0.0.0.0",
                Direction::SendRecv,
                Direction::SendRecv,
                true,
            ),
            (
                "",
                "10.0.0.1",
                Direction::SendRecv,
                Direction::SendRecv,
                false,
            ),
            (
                "",
                "10.0.0.1",
                Direction::SendOnly,
                Direction::SendOnly,
                false,
            ),
            (
                "a=sendonly\n",
                "10.0.0.1",
                Direction::SendOnly,
                Direction::Inactive,
                true,
            ),
        ];
        for (attr, c, local, expected, hold) in cases {
            let o = with(attr, c);
            assert_eq!(o.is_hold(), hold, "{attr} {c}");
            let a = answer(&o, &[Codec::Pcmu], ip("10.0.0.2"), 5000, local).unwrap();
            assert_eq!(a.audio().unwrap().direction, expected, "{attr} {local:?}");
        }
        // Session-level direction applies to media without their own.
        let s = Sdp::parse(b"v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\na=inactive\nm=audio 4000 RTP/AVP 0\n").unwrap();
        assert!(s.is_hold());
        assert_eq!(Direction::SendOnly.reverse(), Direction::RecvOnly);
    }

    #[test]
    fn offer_shape() {
        let mut o = offer(
            &[Codec::Pcma, Codec::Pcmu, Codec::Pcma],
            ip("2001:db8::1"),
            30000,
            Direction::SendOnly,
        );
        let text = o.to_string();
        assert!(text.starts_with("v=0\r\no=voxpbx "));
        assert!(text.contains("IN IP6 2001:db8::1\r\n"));
        assert!(text.contains("m=audio 30000 RTP/AVP 8 0 101\r\n"));
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"));
        assert!(text.contains("a=ptime:20\r\na=sendonly\r\n"));
        assert!(o.is_hold());
        let v = o.origin.session_version;
        o.bump_version();
        assert_eq!(o.origin.session_version, v + 1);
        // The answerer's view of our offer.
        let a = answer(
            &Sdp::parse(text.as_bytes()).unwrap(),
            &[Codec::Pcmu],
            ip("10.0.0.9"),
            7000,
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!(a.audio().unwrap().direction, Direction::RecvOnly);
        assert_eq!(Codec::from_format(Codec::G722.format()), Some(Codec::G722));
    }

    /// The fuzz property on random edits of an offer: parse never panics, what parses
    /// serializes to something that parses, and answering it works or says why not.
    #[test]
    fn mutated_sdp_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as usize
        };
        let specials = b"\r\n =:/0123456789amcv\xff";
        let mut parsed = 0;
        for _ in 0..3000 {
            let mut m = OFFER.as_bytes().to_vec();
            for _ in 0..1 + next() % 3 {
                let i = next() % m.len();
                let b = specials[next() % specials.len()];
                match next() % 3 {
                    0 => m[i] = b,
                    1 => m.insert(i, b),
                    _ => {
                        m.remove(i);
                    }
                }
            }
            let Ok(sdp) = Sdp::parse(&m) else { continue };
            parsed += 1;
            let _ = (sdp.audio(), sdp.is_hold());
            let again = Sdp::parse(sdp.to_string().as_bytes()).expect("serialized SDP parses");
            assert_eq!(again.media.len(), sdp.media.len());
            if let Ok(a) = answer(
                &sdp,
                &[Codec::Pcmu, Codec::Pcma, Codec::G722],
                ip("192.0.2.1"),
                10000,
                Direction::SendRecv,
            ) {
                assert_eq!(a.media.len(), sdp.media.len());
                assert!(Sdp::parse(a.to_string().as_bytes()).is_ok());
            }
        }
        assert!(
            parsed > 100,
            "too few mutations parsed ({parsed}) to mean anything"
        );
    }

    #[test]
    fn parse_errors() {
        for bad in [
            &b""[..],
            b"o=- 1 1 IN IP4 x\n",
            b"v=0\ns=-\n",
            b"v=0\no=- 1 1 IN IP4\ns=-\n",
            b"v=0\no=- x 1 IN IP4 h\ns=-\n",
            b"v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 99999 RTP/AVP 0\n",
            b"v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 5000 RTP/AVP\n",
            b"v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4\n",
            b"v=0\no=- 1 1 IN IP4 h\ns=-\nX=y\n",
            b"v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 1 RTP/AVP 0\ns=again\n",
            b"v=0\no=- 1 1 IN IP4 h\ns=-\nt=0\n",
            b"\xff\xfe",
        ] {
            assert!(
                Sdp::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
