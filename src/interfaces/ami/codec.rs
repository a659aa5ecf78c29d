//! AMI message framing: the sans-IO decoder for `Key: Value` blocks and the CRLF writers.
//!
//! Reading follows Asterisk's `get_input`/`do_message`: a line ends with CRLF or a bare LF,
//! a blank line ends the message, header lookup is case-insensitive, repeated headers are kept
//! in order. Writing always uses CRLF. Response builders put `Response:` first and the echoed
//! `ActionID:` second, which clients depend on.
//!
//! Input is never trusted: over-long lines, too many headers and over-large messages become a
//! [`FrameError`] (with the headers read so far, so the reply can still echo the `ActionID`),
//! and decoding resumes with the next message.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::perm::Perm;

/// The AMI protocol version sent in the banner (`AMI_VERSION` in Asterisk master's manager.h).
pub const AMI_VERSION: &str = "13.0.0";

/// The greeting sent when a client connects.
pub const BANNER: &str = "Asterisk Call Manager/13.0.0\r\n";

/// Default limit for one line (Asterisk itself stops at 1024 bytes; being more lenient is safe).
pub const DEFAULT_MAX_LINE: usize = 8 * 1024;
/// Default limit for one message (all its header lines).
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;
/// Asterisk's `AST_MAX_MANHEADERS`.
pub const DEFAULT_MAX_HEADERS: usize = 128;

/// One `Name: Value` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// An AMI message: an ordered list of headers (an action, a response or an event).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    headers: Vec<Header>,
}

impl Message {
    pub fn new() -> Message {
        Message::default()
    }

    pub fn with_headers(headers: Vec<Header>) -> Message {
        Message { headers }
    }

    /// Append a header (kept in order; names may repeat).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.headers.push(Header {
            name: name.into(),
            value: value.into(),
        });
    }

    /// Builder-style [`Message::push`].
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Message {
        self.push(name, value);
        self
    }

    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    pub fn len(&self) -> usize {
        self.headers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// The first header with this name (case-insensitive), even if its value is empty
    /// (Asterisk's `astman_get_header`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The first header with this name and a non-empty value.
    pub fn get_nonempty(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name) && !h.value.is_empty())
            .map(|h| h.value.as_str())
    }

    /// The last header with this name.
    pub fn get_last(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every value of this header, in order (`Variable:`, `Output:`, `ChanVariable:`...).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// `Action:` (the first non-empty one, as Asterisk looks it up).
    pub fn action(&self) -> Option<&str> {
        self.get_nonempty("Action")
    }

    /// `ActionID:` when present and non-empty (only then is it echoed).
    pub fn action_id(&self) -> Option<&str> {
        self.get("ActionID").filter(|v| !v.is_empty())
    }

    /// All `Variable:` headers split into `name=value` pairs, in order. A header may carry
    /// several comma-separated pairs (`Variable: a=1,b=2`); commas inside double quotes or
    /// parentheses and backslash-escaped commas do not split. Entries without `=` are skipped.
    pub fn variables(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for v in self.get_all("Variable") {
            for item in split_app_args(v) {
                if let Some((k, val)) = item.split_once('=') {
                    out.push((k.trim().to_string(), val.to_string()));
                }
            }
        }
        out
    }

    /// Encode with CRLF line endings and the terminating blank line. Values containing CR
    /// or LF are written with those characters replaced by spaces (no header injection).
    pub fn encode(&self) -> Bytes {
        let mut b = MessageBuilder::new();
        for h in &self.headers {
            b.header(&h.name, &h.value);
        }
        b.finish()
    }
}

/// Split an argument list the way Asterisk's `AST_STANDARD_APP_ARGS` does for `Variable:`:
/// commas separate, except inside `"..."` or `(...)` or after a backslash.
fn split_app_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                cur.push(c);
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            '(' if !quoted => {
                depth += 1;
                cur.push(c);
            }
            ')' if !quoted => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            ',' if !quoted && depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Writes one AMI message with CRLF line endings into a buffer. Values (and names) have CR
/// and LF replaced by spaces so a value can never end a header or a message early.
#[derive(Debug, Default)]
pub struct MessageBuilder {
    buf: BytesMut,
}

impl MessageBuilder {
    pub fn new() -> MessageBuilder {
        MessageBuilder {
            buf: BytesMut::with_capacity(256),
        }
    }

    /// Append `Name: Value\r\n`.
    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        put_clean(&mut self.buf, name);
        self.buf.put_slice(b": ");
        put_clean(&mut self.buf, value);
        self.buf.put_slice(b"\r\n");
        self
    }

    /// Append a header only when `value` is `Some` and non-empty.
    pub fn header_opt(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.header(name, v);
        }
        self
    }

    /// Append every header of `msg` in order.
    pub fn headers_from(&mut self, msg: &Message) -> &mut Self {
        for h in msg.headers() {
            self.header(&h.name, &h.value);
        }
        self
    }

    /// Append a multi-line text as repeated headers, one per line (the Asterisk 14+ `Command`
    /// output format: `Output: line`). A trailing newline does not produce an empty header.
    pub fn multiline(&mut self, name: &str, text: &str) -> &mut Self {
        let text = text.strip_suffix('\n').unwrap_or(text);
        if text.is_empty() {
            return self;
        }
        for line in text.split('\n') {
            self.header(name, line.strip_suffix('\r').unwrap_or(line));
        }
        self
    }

    /// Terminate with the blank line and return the bytes.
    pub fn finish(mut self) -> Bytes {
        self.buf.put_slice(b"\r\n");
        self.buf.freeze()
    }
}

fn put_clean(buf: &mut BytesMut, s: &str) {
    if !s.bytes().any(|b| b == b'\r' || b == b'\n') {
        buf.put_slice(s.as_bytes());
        return;
    }
    for b in s.bytes() {
        buf.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
}

/// Start a response: `Response: <kind>` first, then `ActionID:` (if any), then `EventList:`
/// (if given), then `Message:` (if given). Add more headers, then [`MessageBuilder::finish`].
pub fn response(
    kind: &str,
    action_id: Option<&str>,
    event_list: Option<&str>,
    message: Option<&str>,
) -> MessageBuilder {
    let mut b = MessageBuilder::new();
    b.header("Response", kind);
    b.header_opt("ActionID", action_id);
    if let Some(l) = event_list {
        b.header("EventList", l);
    }
    if let Some(m) = message {
        b.header("Message", m);
    }
    b
}

/// `Response: Success` (+ `Message:`), finished.
pub fn success(action_id: Option<&str>, message: &str) -> Bytes {
    response("Success", action_id, None, Some(message)).finish()
}

/// `Response: Error` + `Message:`, finished.
pub fn error(action_id: Option<&str>, message: &str) -> Bytes {
    response("Error", action_id, None, Some(message)).finish()
}

/// The start of a list action's reply: `Response: Success`, `ActionID`, `EventList: start`,
/// `Message: <message>` (e.g. "Channels will follow").
pub fn list_start(action_id: Option<&str>, message: &str) -> Bytes {
    response("Success", action_id, Some("start"), Some(message)).finish()
}

/// One item of a list: `Event: <name>` then `ActionID`. Add the item's fields, then finish.
pub fn list_item(event_name: &str, action_id: Option<&str>) -> MessageBuilder {
    let mut b = MessageBuilder::new();
    b.header("Event", event_name);
    b.header_opt("ActionID", action_id);
    b
}

/// The list's closing event: `Event: <name>`, `ActionID`, `EventList: Complete`,
/// `ListItems: <count>`. Add extra fields if the action has any, then finish.
pub fn list_complete(event_name: &str, action_id: Option<&str>, count: usize) -> MessageBuilder {
    let mut b = list_item(event_name, action_id);
    b.header("EventList", "Complete");
    b.header("ListItems", &count.to_string());
    b
}

/// Format a `Timestamp:` value: seconds since the epoch with 6 decimals (`1700000000.123456`).
pub fn format_timestamp(since_epoch: Duration) -> String {
    format!(
        "{}.{:06}",
        since_epoch.as_secs(),
        since_epoch.subsec_micros()
    )
}

/// An event as published to AMI sessions: encoded once, filtered per session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmiEvent {
    pub name: String,
    pub class: Perm,
    /// The fields after `Event`/`Privilege`/`Timestamp`/`SystemName` (for header filters).
    pub fields: Vec<Header>,
    /// The full wire form, CRLF-terminated, blank line included.
    pub wire: Bytes,
}

impl AmiEvent {
    /// The wire text (always valid UTF-8: it was built from `str`s).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.wire)
    }
}

/// Builds an [`AmiEvent`]: `Event: <name>`, `Privilege: <class>,all`, optional
/// `Timestamp: secs.micros` (when `timestampevents=yes`), optional `SystemName:`, then fields.
#[derive(Debug)]
pub struct EventBuilder {
    name: String,
    class: Perm,
    timestamp: Option<Duration>,
    system_name: Option<String>,
    fields: Vec<Header>,
}

impl EventBuilder {
    pub fn new(name: impl Into<String>, class: Perm) -> EventBuilder {
        EventBuilder {
            name: name.into(),
            class,
            timestamp: None,
            system_name: None,
            fields: Vec::new(),
        }
    }

    /// Include `Timestamp:` (time since the Unix epoch).
    pub fn timestamp(mut self, since_epoch: Option<Duration>) -> Self {
        self.timestamp = since_epoch;
        self
    }

    /// Include `SystemName:` (asterisk.conf `systemname`), when non-empty.
    pub fn system_name(mut self, name: Option<&str>) -> Self {
        self.system_name = name.filter(|n| !n.is_empty()).map(str::to_string);
        self
    }

    pub fn field(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.push(Header {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    pub fn fields<I, K, V>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        for (k, v) in it {
            self.fields.push(Header {
                name: k.into(),
                value: v.into(),
            });
        }
        self
    }

    pub fn build(self) -> AmiEvent {
        let mut b = MessageBuilder::new();
        b.header("Event", &self.name);
        b.header("Privilege", &self.class.privilege_string());
        if let Some(ts) = self.timestamp {
            b.header("Timestamp", &format_timestamp(ts));
        }
        if let Some(sn) = &self.system_name {
            b.header("SystemName", sn);
        }
        for h in &self.fields {
            b.header(&h.name, &h.value);
        }
        AmiEvent {
            name: self.name,
            class: self.class,
            fields: self.fields,
            wire: b.finish(),
        }
    }
}

/// Limits for the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_line: usize,
    pub max_message: usize,
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: DEFAULT_MAX_LINE,
            max_message: DEFAULT_MAX_MESSAGE,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// Why a message could not be taken as is. Decoding continues with the next message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameErrorKind {
    /// A line was longer than the limit (it was discarded).
    #[error("Failed to parse message: line too long")]
    LineTooLong,
    /// More header lines than the limit (the extra ones were discarded).
    #[error("Too many lines in message or allocation failure")]
    TooManyHeaders,
    /// The message as a whole was larger than the limit (the rest was discarded).
    #[error("Too many lines in message or allocation failure")]
    MessageTooLarge,
}

/// A framing error with the headers that were read before (or around) the bad part, so the
/// error reply can echo `ActionID`. `Display` is the text Asterisk sends in `Message:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct FrameError {
    pub kind: FrameErrorKind,
    pub partial: Message,
}

/// Sans-IO AMI decoder: push bytes in, take whole messages out.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    /// Bytes of `buf` already searched for LF.
    scanned: usize,
    limits: Limits,
    cur: Message,
    cur_size: usize,
    error: Option<FrameErrorKind>,
    /// Inside an over-long line: drop bytes until the next LF.
    discarding: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(Limits::default())
    }
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        let limits = Limits {
            max_line: limits.max_line.max(16),
            max_message: limits.max_message.max(16),
            max_headers: limits.max_headers.max(1),
        };
        Decoder {
            buf: BytesMut::new(),
            scanned: 0,
            limits,
            cur: Message::new(),
            cur_size: 0,
            error: None,
            discarding: false,
        }
    }

    /// Feed received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.discarding {
            // Drop the tail of an over-long line without buffering it.
            if let Some(i) = data.iter().position(|&b| b == b'\n') {
                self.discarding = false;
                self.buf.extend_from_slice(&data[i + 1..]);
            }
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when a message has been started (some header lines read) but not finished.
    pub fn in_message(&self) -> bool {
        !self.cur.is_empty() || self.error.is_some()
    }

    /// The next complete message, a framing error for a complete but bad message, or `None`
    /// when more bytes are needed.
    pub fn next_message(&mut self) -> Option<Result<Message, FrameError>> {
        loop {
            if self.discarding {
                match self.buf.iter().position(|&b| b == b'\n') {
                    None => {
                        self.buf.clear();
                        self.scanned = 0;
                        return None;
                    }
                    Some(i) => {
                        let _ = self.buf.split_to(i + 1);
                        self.scanned = 0;
                        self.discarding = false;
                        continue;
                    }
                }
            }
            let found = self.buf[self.scanned..].iter().position(|&b| b == b'\n');
            let Some(rel) = found else {
                if self.buf.len() > self.limits.max_line {
                    self.error.get_or_insert(FrameErrorKind::LineTooLong);
                    self.buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                } else {
                    self.scanned = self.buf.len();
                }
                return None;
            };
            let end = self.scanned + rel;
            let line = self.buf.split_to(end + 1);
            self.scanned = 0;
            let mut content = &line[..end];
            if let Some(stripped) = content.strip_suffix(b"\r") {
                content = stripped;
            }
            if content.is_empty() {
                let msg = std::mem::take(&mut self.cur);
                self.cur_size = 0;
                return Some(match self.error.take() {
                    None => Ok(msg),
                    Some(kind) => Err(FrameError { kind, partial: msg }),
                });
            }
            if content.len() > self.limits.max_line {
                self.error.get_or_insert(FrameErrorKind::LineTooLong);
                continue;
            }
            if self.cur.len() >= self.limits.max_headers {
                self.error.get_or_insert(FrameErrorKind::TooManyHeaders);
                continue;
            }
            if self.cur_size + content.len() > self.limits.max_message {
                self.error.get_or_insert(FrameErrorKind::MessageTooLarge);
                continue;
            }
            self.cur_size += content.len();
            if let Some(h) = parse_header_line(content) {
                self.cur.headers.push(h);
            }
        }
    }
}

/// Parse one header line. The name is what precedes the first `:` (trailing blanks trimmed);
/// the value follows it with leading blanks skipped (a colon without a space is fine, an empty
/// value is fine). Lines without a colon carry no header and give `None`. Invalid UTF-8 is
/// replaced, never rejected.
pub fn parse_header_line(line: &[u8]) -> Option<Header> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = String::from_utf8_lossy(&line[..colon]);
    let name = name.trim_end_matches([' ', '\t']);
    if name.is_empty() {
        return None;
    }
    let mut value = &line[colon + 1..];
    while let Some((&b, rest)) = value.split_first() {
        if b == b' ' || b == b'\t' {
            value = rest;
        } else {
            break;
        }
    }
    Some(Header {
        name: name.to_string(),
        value: String::from_utf8_lossy(value).into_owned(),
    })
}

/// Decode every complete message in `data` (a convenience for tests and tools).
pub fn decode_all(data: &[u8]) -> Vec<Result<Message, FrameError>> {
    let mut d = Decoder::default();
    d.push(data);
    let mut out = Vec::new();
    while let Some(m) = d.next_message() {
        out.push(m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(r: Option<Result<Message, FrameError>>) -> Message {
        r.expect("a message").expect("no frame error")
    }

    #[test]
    fn crlf_and_bare_lf_and_lookup() {
        let mut d = Decoder::default();
        d.push(b"Action: Login\r\nusername: admin\nSecret:pw\r\nEvents:\r\n\r\n");
        let m = ok(d.next_message());
        assert_eq!(m.action(), Some("Login"));
        assert_eq!(m.get("USERNAME"), Some("admin"));
        assert_eq!(m.get("secret"), Some("pw"));
        assert_eq!(m.get("Events"), Some(""));
        assert_eq!(m.action_id(), None);
        assert!(d.next_message().is_none());
    }

    #[test]
    fn split_across_pushes_including_crlf_boundary() {
        let mut d = Decoder::default();
        let all = b"Action: Ping\r\nActionID: 42\r\n\r\nAction: Logoff\r\n\r\n";
        let mut got = Vec::new();
        for chunk in all.chunks(1) {
            d.push(chunk);
            while let Some(m) = d.next_message() {
                got.push(m.unwrap());
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].action_id(), Some("42"));
        assert_eq!(got[1].action(), Some("Logoff"));
    }

    #[test]
    fn repeated_headers_kept_in_order() {
        let msgs = decode_all(b"Action: Originate\r\nVariable: a=1\r\nVariable: b=2,c=(x,y)\r\nVariable: d=\"p,q\"\r\n\r\n");
        let m = msgs[0].clone().unwrap();
        assert_eq!(
            m.get_all("variable").collect::<Vec<_>>(),
            vec!["a=1", "b=2,c=(x,y)", "d=\"p,q\""]
        );
        assert_eq!(
            m.variables(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("c".into(), "(x,y)".into()),
                ("d".into(), "\"p,q\"".into())
            ]
        );
        assert_eq!(m.get("Variable"), Some("a=1"));
        assert_eq!(m.get_last("Variable"), Some("d=\"p,q\""));
    }

    #[test]
    fn blank_line_alone_is_an_empty_message() {
        let msgs = decode_all(b"\r\n");
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].as_ref().unwrap().is_empty());
    }

    #[test]
    fn lone_cr_stays_in_value_and_no_colon_lines_ignored() {
        let m = decode_all(b"Action: X\rY\r\ngarbage line\r\n: novalue\r\n\r\n")[0]
            .clone()
            .unwrap();
        assert_eq!(m.get("Action"), Some("X\rY"));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn long_line_is_an_error_and_decoding_resumes() {
        let mut d = Decoder::new(Limits {
            max_line: 32,
            ..Limits::default()
        });
        d.push(b"ActionID: 7\r\nAction: ");
        d.push(&[b'A'; 100]);
        assert!(d.next_message().is_none());
        d.push(&[b'B'; 100]);
        assert!(d.next_message().is_none());
        d.push(b"\r\n\r\nAction: Ping\r\n\r\n");
        let e = d.next_message().unwrap().unwrap_err();
        assert_eq!(e.kind, FrameErrorKind::LineTooLong);
        assert_eq!(e.partial.action_id(), Some("7"));
        assert_eq!(e.to_string(), "Failed to parse message: line too long");
        assert_eq!(ok(d.next_message()).action(), Some("Ping"));
        assert!(d.buffered() < 64);
    }

    #[test]
    fn long_line_complete_in_one_push() {
        let mut d = Decoder::new(Limits {
            max_line: 16,
            ..Limits::default()
        });
        let mut data = b"X: ".to_vec();
        data.extend_from_slice(&[b'x'; 40]);
        data.extend_from_slice(b"\r\n\r\n");
        d.push(&data);
        assert_eq!(
            d.next_message().unwrap().unwrap_err().kind,
            FrameErrorKind::LineTooLong
        );
    }

    #[test]
    fn too_many_headers_and_too_large() {
        let mut data = Vec::new();
        for i in 0..10 {
            data.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        data.extend_from_slice(b"\r\n");
        let mut d = Decoder::new(Limits {
            max_headers: 4,
            ..Limits::default()
        });
        d.push(&data);
        let e = d.next_message().unwrap().unwrap_err();
        assert_eq!(e.kind, FrameErrorKind::TooManyHeaders);
        assert_eq!(e.partial.len(), 4);

        let mut d = Decoder::new(Limits {
            max_message: 30,
            max_line: 20,
            max_headers: 100,
        });
        d.push(&data);
        assert_eq!(
            d.next_message().unwrap().unwrap_err().kind,
            FrameErrorKind::MessageTooLarge
        );
    }

    #[test]
    fn non_utf8_is_replaced_not_rejected() {
        let m = decode_all(b"Action: Ping\r\nCallerIDName: Jos\xe9\r\n\r\n")[0]
            .clone()
            .unwrap();
        assert_eq!(m.get("CallerIDName"), Some("Jos\u{fffd}"));
    }

    #[test]
    fn response_builder_order_and_crlf() {
        let b = response(
            "Success",
            Some("abc"),
            Some("start"),
            Some("Channels will follow"),
        )
        .finish();
        assert_eq!(
            &b[..],
            b"Response: Success\r\nActionID: abc\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n"
        );
        assert_eq!(
            &error(None, "Permission denied")[..],
            b"Response: Error\r\nMessage: Permission denied\r\n\r\n"
        );
        let mut p = response("Success", Some("1"), None, None);
        p.header("Ping", "Pong").header(
            "Timestamp",
            &format_timestamp(Duration::new(1_700_000_000, 5_000)),
        );
        assert_eq!(
            &p.finish()[..],
            b"Response: Success\r\nActionID: 1\r\nPing: Pong\r\nTimestamp: 1700000000.000005\r\n\r\n"
        );
    }

    #[test]
    fn list_helpers() {
        assert_eq!(
            &list_start(Some("9"), "Channels will follow")[..],
            b"Response: Success\r\nActionID: 9\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n"
        );
        let mut item = list_item("CoreShowChannel", Some("9"));
        item.header("Channel", "Local/1@x-0001;1");
        assert_eq!(
            &item.finish()[..],
            b"Event: CoreShowChannel\r\nActionID: 9\r\nChannel: Local/1@x-0001;1\r\n\r\n"
        );
        assert_eq!(
            &list_complete("CoreShowChannelsComplete", None, 3).finish()[..],
            b"Event: CoreShowChannelsComplete\r\nEventList: Complete\r\nListItems: 3\r\n\r\n"
        );
    }

    #[test]
    fn event_builder() {
        let ev = EventBuilder::new("Hangup", Perm::CALL)
            .timestamp(Some(Duration::from_micros(1_500_000)))
            .field("Channel", "PJSIP/a-1")
            .field("Cause", "16")
            .build();
        assert_eq!(
            &ev.wire[..],
            b"Event: Hangup\r\nPrivilege: call,all\r\nTimestamp: 1.500000\r\nChannel: PJSIP/a-1\r\nCause: 16\r\n\r\n"
        );
        assert_eq!(ev.fields.len(), 2);
        let ev2 = EventBuilder::new("FullyBooted", Perm::SYSTEM)
            .system_name(Some("pbx1"))
            .build();
        assert_eq!(
            &ev2.wire[..],
            b"Event: FullyBooted\r\nPrivilege: system,all\r\nSystemName: pbx1\r\n\r\n"
        );
    }

    #[test]
    fn writer_never_lets_values_break_framing() {
        let m = Message::new()
            .with("Action", "UserEvent")
            .with("Body", "a\r\n\r\nAction: Logoff");
        let wire = m.encode();
        let back = decode_all(&wire);
        assert_eq!(back.len(), 1);
        assert_eq!(
            back[0].as_ref().unwrap().get("Body"),
            Some("a    Action: Logoff")
        );
    }

    #[test]
    fn multiline_output() {
        let mut b = response("Success", None, None, Some("Command output follows"));
        b.multiline("Output", "line 1\nline 2\r\n");
        assert_eq!(
            &b.finish()[..],
            b"Response: Success\r\nMessage: Command output follows\r\nOutput: line 1\r\nOutput: line 2\r\n\r\n"
        );
    }

    #[test]
    fn roundtrip() {
        let m = Message::new()
            .with("Action", "Setvar")
            .with("Variable", "X")
            .with("Value", "");
        assert_eq!(decode_all(&m.encode())[0].as_ref().unwrap(), &m);
    }

    #[test]
    fn banner_has_version() {
        assert_eq!(BANNER, format!("Asterisk Call Manager/{AMI_VERSION}\r\n"));
    }
}
