//! AGI wire format: the environment block, the command-line tokenizer, command dispatch
//! decisions, reply lines, `agi://` URLs and the URL-encoding AsyncAGI uses over AMI.
//!
//! Everything here is pure text processing: no sockets, no clock, no panics on bad input.

use std::fmt::Write as _;

use super::commands::{find_command, CommandSpec};

/// The FastAGI port when the URL gives none.
pub const FASTAGI_PORT: u16 = 4573;
/// Asterisk's `MAX_ARGS`: at most this many tokens minus one are kept from a command line.
pub const MAX_ARGS: usize = 128;

/// `510`: the command is not known.
pub const INVALID_COMMAND: &str = "510 Invalid or unknown command\n";
/// `511`: the command may not run on a hung-up channel.
pub const DEAD_CHANNEL: &str = "511 Command Not Permitted on a dead channel or intercept routine\n";
/// The interim line before GOSUB runs; clients must keep reading until a non-100 line.
pub const TRYING: &str = "100 result=0 Trying...\n";
/// Sent inline to a FastAGI server when the channel hangs up.
pub const HANGUP_LINE: &str = "HANGUP\n";
/// `520` when a command has no usage text.
pub const USAGE_NOT_AVAILABLE: &str = "520 Invalid command syntax.  Proper usage not available.\n";

/// AGI errors: bad URLs and unreadable input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgiError {
    #[error("invalid AGI URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("AGI line longer than {max} bytes (discarded)")]
    LineTooLong { max: usize },
}

// ---------------------------------------------------------------------------------------------
// Environment block
// ---------------------------------------------------------------------------------------------

/// What the AGI script is told about the channel at start (Asterisk's `setup_env`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgiEnv {
    /// The script or URL as given to `AGI()` (`agi://host/script`, `async`, a path).
    pub request: String,
    pub channel: String,
    pub language: String,
    /// The channel technology (`PJSIP`, `Local`, ...).
    pub channel_type: String,
    pub uniqueid: String,
    /// The PBX version string.
    pub version: String,
    /// Caller number; `None` is sent as `unknown`.
    pub callerid: Option<String>,
    /// Caller name; `None` is sent as `unknown`.
    pub calleridname: Option<String>,
    pub callingpres: i32,
    pub callingani2: i32,
    pub callington: i32,
    pub callingtns: i32,
    /// Dialed number; `None` is sent as `unknown`.
    pub dnid: Option<String>,
    /// Redirecting number; `None` is sent as `unknown`.
    pub rdnis: Option<String>,
    pub context: String,
    pub extension: String,
    pub priority: i32,
    /// EAGI (audio on fd 3): `1.0`, otherwise `0.0`.
    pub enhanced: bool,
    pub accountcode: String,
    pub threadid: u64,
    /// `agi_arg_1` .. `agi_arg_N` (the `AGI()` arguments after the script).
    pub args: Vec<String>,
}

/// Keep values on one line: CR and LF become spaces.
fn one_line(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\r', '\n']) {
        std::borrow::Cow::Owned(v.replace(['\r', '\n'], " "))
    } else {
        std::borrow::Cow::Borrowed(v)
    }
}

impl AgiEnv {
    /// `(key, value)` pairs in Asterisk's order, `agi_request` first, `agi_arg_N` last.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".to_string());
        let mut out: Vec<(String, String)> = vec![
            ("agi_request".into(), self.request.clone()),
            ("agi_channel".into(), self.channel.clone()),
            ("agi_language".into(), self.language.clone()),
            ("agi_type".into(), self.channel_type.clone()),
            ("agi_uniqueid".into(), self.uniqueid.clone()),
            ("agi_version".into(), self.version.clone()),
            ("agi_callerid".into(), unknown(&self.callerid)),
            ("agi_calleridname".into(), unknown(&self.calleridname)),
            ("agi_callingpres".into(), self.callingpres.to_string()),
            ("agi_callingani2".into(), self.callingani2.to_string()),
            ("agi_callington".into(), self.callington.to_string()),
            ("agi_callingtns".into(), self.callingtns.to_string()),
            ("agi_dnid".into(), unknown(&self.dnid)),
            ("agi_rdnis".into(), unknown(&self.rdnis)),
            ("agi_context".into(), self.context.clone()),
            ("agi_extension".into(), self.extension.clone()),
            ("agi_priority".into(), self.priority.to_string()),
            (
                "agi_enhanced".into(),
                if self.enhanced { "1.0" } else { "0.0" }.into(),
            ),
            ("agi_accountcode".into(), self.accountcode.clone()),
            ("agi_threadid".into(), self.threadid.to_string()),
        ];
        for (i, a) in self.args.iter().enumerate() {
            out.push((format!("agi_arg_{}", i + 1), a.clone()));
        }
        out
    }

    /// The environment block: `key: value\n` lines and the terminating empty line.
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(512);
        for (k, v) in self.pairs() {
            let _ = writeln!(s, "{k}: {}", one_line(&v));
        }
        s.push('\n');
        s
    }

    /// What a FastAGI server receives on connect: `agi_network: yes`, then
    /// `agi_network_script:` when the URL has a script part, then the environment block.
    pub fn encode_fastagi(&self, url: &AgiUrl) -> String {
        let mut s = fastagi_preamble(url);
        s.push_str(&self.encode());
        s
    }
}

/// The lines sent before the environment to a FastAGI server.
pub fn fastagi_preamble(url: &AgiUrl) -> String {
    let mut s = String::from("agi_network: yes\n");
    if !url.script.is_empty() {
        let _ = writeln!(s, "agi_network_script: {}", one_line(&url.script));
    }
    s
}

/// Parse an environment block (the inverse of [`AgiEnv::encode`]; for tests and clients).
/// Stops at the first empty line; lines without `:` are skipped.
pub fn parse_env(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.push((
                k.trim().to_string(),
                v.strip_prefix(' ').unwrap_or(v).to_string(),
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Command lines
// ---------------------------------------------------------------------------------------------

/// Split a command line into tokens like Asterisk's `parse_args`: spaces and tabs separate,
/// double quotes group (and may start a word mid-way), a backslash makes the next character
/// literal (a quote, a backslash, a space). `""` gives an empty token. Unbalanced quotes run
/// to the end of the line. At most `MAX_ARGS - 1` tokens are kept.
pub fn parse_args(line: &str) -> Vec<String> {
    let mut argv: Vec<String> = Vec::new();
    let mut cur: Option<String> = None;
    let mut quoted = false;
    let mut escaped = false;
    let mut truncated = false;
    let flush = |cur: &mut Option<String>, argv: &mut Vec<String>| {
        if let Some(w) = cur.take() {
            argv.push(w);
        }
    };
    for c in line.chars() {
        match c {
            '"' if !escaped => {
                quoted = !quoted;
                if quoted && cur.is_none() && !truncated {
                    if argv.len() >= MAX_ARGS - 1 {
                        truncated = true;
                    } else {
                        cur = Some(String::new());
                    }
                }
            }
            ' ' | '\t' if !quoted && !escaped => flush(&mut cur, &mut argv),
            '\\' if !escaped => escaped = true,
            _ => {
                escaped = false;
                match cur.as_mut() {
                    Some(w) => w.push(c),
                    None => {
                        if argv.len() >= MAX_ARGS - 1 {
                            truncated = true;
                        } else if !truncated {
                            cur = Some(String::from(c));
                        }
                    }
                }
            }
        }
    }
    flush(&mut cur, &mut argv);
    argv
}

/// What to do with one command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// Run the command with these tokens (the command words included).
    Run {
        spec: &'static CommandSpec,
        argv: Vec<String>,
    },
    /// Wrong number of arguments: send [`usage_reply`].
    Usage {
        spec: &'static CommandSpec,
        argv: Vec<String>,
    },
    /// The channel is hung up and the command is not dead-ok: send [`DEAD_CHANNEL`].
    NotPermitted {
        spec: &'static CommandSpec,
        argv: Vec<String>,
    },
    /// No such command (or an empty line): send [`INVALID_COMMAND`].
    Unknown { argv: Vec<String> },
}

impl Dispatch {
    /// The reply for the non-`Run` cases (`None` for `Run`: the command produces it).
    pub fn error_reply(&self) -> Option<String> {
        match self {
            Dispatch::Run { .. } => None,
            Dispatch::Usage { spec, .. } => Some(usage_reply(spec)),
            Dispatch::NotPermitted { .. } => Some(DEAD_CHANNEL.to_string()),
            Dispatch::Unknown { .. } => Some(INVALID_COMMAND.to_string()),
        }
    }

    /// The AMI `AGIExecEnd` `ResultCode` for the non-`Run` cases.
    pub fn result_code(&self) -> Option<u16> {
        match self {
            Dispatch::Run { .. } => None,
            Dispatch::Usage { .. } => Some(520),
            Dispatch::NotPermitted { .. } => Some(511),
            Dispatch::Unknown { .. } => Some(510),
        }
    }
}

/// Tokenize a line and decide: unknown command, not allowed on a dead channel, bad argument
/// count, or run.
pub fn dispatch(line: &str, channel_dead: bool) -> Dispatch {
    let argv = parse_args(line);
    let Some(spec) = find_command(&argv) else {
        return Dispatch::Unknown { argv };
    };
    if channel_dead && !spec.dead_ok {
        return Dispatch::NotPermitted { spec, argv };
    }
    if !spec.argc_ok(argv.len()) {
        return Dispatch::Usage { spec, argv };
    }
    Dispatch::Run { spec, argv }
}

/// A local script that could not be executed prints `failure` (Asterisk then fails the AGI).
pub fn is_failure_line(line: &str) -> bool {
    line.len() >= 7 && line.as_bytes()[..7].eq_ignore_ascii_case(b"failure")
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

/// The `520` multi-line usage reply for a command.
pub fn usage_reply(spec: &CommandSpec) -> String {
    let usage = spec.usage();
    if usage.trim().is_empty() {
        return USAGE_NOT_AVAILABLE.to_string();
    }
    let mut s = String::from("520-Invalid command syntax.  Proper usage follows:\n");
    s.push_str(&usage);
    if !usage.ends_with('\n') {
        s.push('\n');
    }
    s.push_str("520 End of proper usage.\n");
    s
}

/// A `200 result=` line: `200 result=<n>[ (<data>)][ endpos=<n>][ k=v...]\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgiResult {
    pub result: String,
    pub data: Option<String>,
    pub endpos: Option<i64>,
    pub extra: Vec<(String, String)>,
}

impl AgiResult {
    /// `200 result=<n>`.
    pub fn new(result: i64) -> AgiResult {
        AgiResult {
            result: result.to_string(),
            data: None,
            endpos: None,
            extra: Vec::new(),
        }
    }

    /// `200 result=<text>` (GET DATA's digits, which may have leading zeros).
    pub fn text(result: &str) -> AgiResult {
        AgiResult {
            result: one_line(result).into_owned(),
            data: None,
            endpos: None,
            extra: Vec::new(),
        }
    }

    /// ` (<data>)`: a variable's value, `timeout`, `hangup`, `dtmf`, `speech`...
    pub fn data(mut self, data: impl Into<String>) -> AgiResult {
        self.data = Some(data.into());
        self
    }

    /// ` endpos=<n>` (the sample offset where playback or recording stopped).
    pub fn endpos(mut self, pos: i64) -> AgiResult {
        self.endpos = Some(pos);
        self
    }

    /// ` <key>=<value>` after endpos (SPEECH RECOGNIZE's `results=`, `score0=`...).
    pub fn kv(mut self, key: impl Into<String>, value: impl Into<String>) -> AgiResult {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// The reply line, newline-terminated.
    pub fn line(&self) -> String {
        let mut s = format!("200 result={}", self.result);
        if let Some(d) = &self.data {
            let _ = write!(s, " ({})", one_line(d));
        }
        if let Some(p) = self.endpos {
            let _ = write!(s, " endpos={p}");
        }
        for (k, v) in &self.extra {
            let _ = write!(s, " {}={}", one_line(k), one_line(v));
        }
        s.push('\n');
        s
    }
}

impl std::fmt::Display for AgiResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line())
    }
}

/// A parsed reply line (for tests and for AGI clients): code, result, data, key/values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedReply {
    pub code: u16,
    pub result: Option<String>,
    pub data: Option<String>,
    pub extra: Vec<(String, String)>,
}

/// Parse `200 result=1 (value) endpos=5` style lines. `None` if there is no 3-digit code.
pub fn parse_reply(line: &str) -> Option<ParsedReply> {
    let line = line.trim_end_matches(['\r', '\n']);
    let code: u16 = line.get(..3)?.parse().ok()?;
    let rest = line.get(3..).unwrap_or("").trim_start_matches([' ', '-']);
    let mut reply = ParsedReply {
        code,
        result: None,
        data: None,
        extra: Vec::new(),
    };
    let mut rest = rest;
    if let Some(r) = rest.strip_prefix("result=") {
        let end = r.find(' ').unwrap_or(r.len());
        reply.result = Some(r[..end].to_string());
        rest = r[end..].trim_start();
        if let Some(d) = rest.strip_prefix('(') {
            if let Some(close) = d.rfind(')') {
                reply.data = Some(d[..close].to_string());
                rest = d[close + 1..].trim_start();
            }
        }
        for tok in rest.split_whitespace() {
            if let Some((k, v)) = tok.split_once('=') {
                reply.extra.push((k.to_string(), v.to_string()));
            }
        }
    }
    Some(reply)
}

// ---------------------------------------------------------------------------------------------
// URLs
// ---------------------------------------------------------------------------------------------

/// A FastAGI server address from `agi://host[:port][/script][?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgiUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    pub port: Option<u16>,
    /// Everything after the host's `/` (or from a `?` right after the host), sent as
    /// `agi_network_script`; empty when there is none.
    pub script: String,
}

impl AgiUrl {
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(FASTAGI_PORT)
    }

    /// The script path without the query (`foo` from `foo?x=1`).
    pub fn script_path(&self) -> &str {
        self.script.split('?').next().unwrap_or("")
    }

    /// The query after `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.script.split_once('?').map(|(_, q)| q)
    }

    /// The DNS SRV name looked up for `hagi://`.
    pub fn srv_name(&self) -> String {
        format!("_agi._tcp.{}", self.host)
    }

    /// `host:port` for connecting (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port_or_default())
        } else {
            format!("{}:{}", self.host, self.port_or_default())
        }
    }

    fn parse_rest(original: &str, rest: &str) -> Result<AgiUrl, AgiError> {
        let err = |reason: &str| AgiError::InvalidUrl {
            url: original.to_string(),
            reason: reason.to_string(),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (hostport, script) = rest.split_at(split);
        let script = script.strip_prefix('/').unwrap_or(script);
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let close = v6.find(']').ok_or_else(|| err("unclosed '[' in host"))?;
            let host = &v6[..close];
            let after = &v6[close + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(err("unexpected text after ']'")),
            };
            (host, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                Some(_) => return Err(err("IPv6 addresses must be in brackets")),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(err("missing host"));
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("invalid character in host"));
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(err("invalid port")),
            },
        };
        Ok(AgiUrl {
            host: host.to_string(),
            port,
            script: script.to_string(),
        })
    }
}

/// What `AGI(<cmd>)` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgiTarget {
    /// `agi://...`: connect to a FastAGI server.
    Fast(AgiUrl),
    /// `hagi://domain/...`: SRV lookup of `_agi._tcp.domain` (a port disables the lookup).
    HighAvailability(AgiUrl),
    /// `agi:async`: AsyncAGI over AMI.
    Async,
    /// A script path (relative to the AGI directory unless absolute).
    Local(String),
}

impl AgiTarget {
    /// Classify an `AGI()` first argument. Schemes are case-insensitive.
    pub fn parse(cmd: &str) -> Result<AgiTarget, AgiError> {
        let cmd = cmd.trim();
        let lower_prefix = |p: &str| {
            cmd.len() >= p.len() && cmd.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
        };
        if lower_prefix("agi://") {
            return AgiUrl::parse_rest(cmd, &cmd[6..]).map(AgiTarget::Fast);
        }
        if lower_prefix("hagi://") {
            return AgiUrl::parse_rest(cmd, &cmd[7..]).map(AgiTarget::HighAvailability);
        }
        if lower_prefix("agi:async") {
            return Ok(AgiTarget::Async);
        }
        if cmd.is_empty() {
            return Err(AgiError::InvalidUrl {
                url: String::new(),
                reason: "empty AGI command".into(),
            });
        }
        Ok(AgiTarget::Local(cmd.to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// AsyncAGI
// ---------------------------------------------------------------------------------------------

/// URL-encode like Asterisk's `ast_uri_encode(.., ast_uri_http)`: letters, digits and the
/// RFC 2396 mark set `-_.!~*'()` stay; every other byte becomes `%XX` (upper-case hex); space
/// is `%20`.
pub fn uri_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            )
        {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

/// Decode `%XX` escapes (and `+` as a space, as clients' decoders do). Malformed escapes are
/// kept as they are; invalid UTF-8 is replaced.
pub fn uri_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `Env:` value of `AsyncAGIStart`: the URL-encoded environment block.
pub fn async_env(env: &AgiEnv) -> String {
    uri_encode(&env.encode())
}

/// The `Result:` value of `AsyncAGIExec`: the URL-encoded reply (e.g. `200 result=0\n`).
pub fn async_result(reply: &str) -> String {
    uri_encode(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> AgiEnv {
        AgiEnv {
            request: "agi://127.0.0.1/test?x=1".into(),
            channel: "PJSIP/alice-00000001".into(),
            language: "en".into(),
            channel_type: "PJSIP".into(),
            uniqueid: "1700000000.1".into(),
            version: "voxpbx-0.1.0".into(),
            callerid: Some("1001".into()),
            calleridname: None,
            callingpres: 0,
            callingani2: 0,
            callington: 0,
            callingtns: 0,
            dnid: Some("600".into()),
            rdnis: None,
            context: "default".into(),
            extension: "600".into(),
            priority: 2,
            enhanced: false,
            accountcode: "".into(),
            threadid: 140001,
            args: vec!["one".into(), "two words".into()],
        }
    }

    #[test]
    fn env_block_order_and_unknowns() {
        let text = env().encode();
        let keys: Vec<String> = parse_env(&text).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "agi_request",
                "agi_channel",
                "agi_language",
                "agi_type",
                "agi_uniqueid",
                "agi_version",
                "agi_callerid",
                "agi_calleridname",
                "agi_callingpres",
                "agi_callingani2",
                "agi_callington",
                "agi_callingtns",
                "agi_dnid",
                "agi_rdnis",
                "agi_context",
                "agi_extension",
                "agi_priority",
                "agi_enhanced",
                "agi_accountcode",
                "agi_threadid",
                "agi_arg_1",
                "agi_arg_2"
            ]
        );
        assert!(text.starts_with("agi_request: agi://127.0.0.1/test?x=1\n"));
        assert!(text.contains("\nagi_calleridname: unknown\n"));
        assert!(text.contains("\nagi_rdnis: unknown\n"));
        assert!(text.contains("\nagi_enhanced: 0.0\n"));
        assert!(text.contains("\nagi_accountcode: \n"));
        assert!(text.contains("\nagi_arg_2: two words\n"));
        assert!(text.ends_with("\n\n"));
        assert_eq!(text.matches("\n\n").count(), 1);
    }

    #[test]
    fn fastagi_preamble_first() {
        let url = match AgiTarget::parse("agi://127.0.0.1/test?x=1").unwrap() {
            AgiTarget::Fast(u) => u,
            other => panic!("{other:?}"),
        };
        let text = env().encode_fastagi(&url);
        assert!(text.starts_with("agi_network: yes\nagi_network_script: test?x=1\nagi_request: "));
        let bare = AgiTarget::parse("agi://host").unwrap();
        let AgiTarget::Fast(bare) = bare else {
            panic!()
        };
        assert_eq!(fastagi_preamble(&bare), "agi_network: yes\n");
    }

    #[test]
    fn env_values_cannot_inject_lines() {
        let mut e = env();
        e.calleridname = Some("Evil\n\nagi_x: y".into());
        let text = e.encode();
        assert_eq!(text.matches("\n\n").count(), 1);
        assert!(text.contains("agi_calleridname: Evil  agi_x: y\n"));
    }

    #[test]
    fn tokenizer_semantics() {
        let v = |s: &str| parse_args(s);
        assert_eq!(v("STREAM FILE hello \"\""), ["STREAM", "FILE", "hello", ""]);
        assert_eq!(
            v("  SET   VARIABLE\tX  \"a b\" "),
            ["SET", "VARIABLE", "X", "a b"]
        );
        assert_eq!(
            v(r#"VERBOSE "say \"hi\"" 1"#),
            ["VERBOSE", "say \"hi\"", "1"]
        );
        assert_eq!(v(r"SET VARIABLE X a\ b"), ["SET", "VARIABLE", "X", "a b"]);
        assert_eq!(v(r"X a\\b \n"), ["X", r"a\b", "n"]);
        assert_eq!(v(r#"X ab"c d"e"#), ["X", "abc de"]);
        assert_eq!(v("X \"unterminated rest"), ["X", "unterminated rest"]);
        assert_eq!(v("X trailing\\"), ["X", "trailing"]);
        assert!(v("").is_empty());
        assert!(v("   \t ").is_empty());
        let many = "a ".repeat(300);
        assert_eq!(v(&many).len(), MAX_ARGS - 1);
        let many_quoted = "\"\" ".repeat(300);
        assert_eq!(v(&many_quoted).len(), MAX_ARGS - 1);
    }

    #[test]
    fn dispatch_decisions() {
        match dispatch("stream file hello \"\"", false) {
            Dispatch::Run { spec, argv } => {
                assert_eq!(spec.name(), "STREAM FILE");
                assert_eq!(argv.len(), 4);
            }
            d => panic!("{d:?}"),
        }
        let d = dispatch("STREAM FILE", false);
        assert!(matches!(d, Dispatch::Usage { .. }));
        let reply = d.error_reply().unwrap();
        assert!(reply.starts_with("520-Invalid command syntax.  Proper usage follows:\n"));
        assert!(reply.contains("STREAM FILE <filename> <escape_digits> [sample offset]"));
        assert!(reply.ends_with("\n520 End of proper usage.\n"));
        assert_eq!(d.result_code(), Some(520));
        let d = dispatch("ANSWER", true);
        assert_eq!(
            d.error_reply().unwrap(),
            "511 Command Not Permitted on a dead channel or intercept routine\n"
        );
        assert!(matches!(
            dispatch("SET VARIABLE X 1", true),
            Dispatch::Run { .. }
        ));
        assert_eq!(
            dispatch("BOGUS", false).error_reply().unwrap(),
            "510 Invalid or unknown command\n"
        );
        assert_eq!(dispatch("", false).result_code(), Some(510));
        assert_eq!(dispatch("<html><body>", false).result_code(), Some(510));
        assert_eq!(dispatch("GET / HTTP/1.1", false).result_code(), Some(510));
    }

    #[test]
    fn result_lines() {
        assert_eq!(AgiResult::new(0).line(), "200 result=0\n");
        assert_eq!(
            AgiResult::new(-1).endpos(0).line(),
            "200 result=-1 endpos=0\n"
        );
        assert_eq!(
            AgiResult::new(49).endpos(8000).line(),
            "200 result=49 endpos=8000\n"
        );
        assert_eq!(
            AgiResult::new(1).data("hello world").line(),
            "200 result=1 (hello world)\n"
        );
        assert_eq!(
            AgiResult::text("0123").data("timeout").line(),
            "200 result=0123 (timeout)\n"
        );
        assert_eq!(
            AgiResult::new(0).data("timeout").endpos(160).line(),
            "200 result=0 (timeout) endpos=160\n"
        );
        assert_eq!(
            AgiResult::new(1)
                .data("speech")
                .endpos(0)
                .kv("results", "1")
                .kv("score0", "900")
                .kv("text0", "\"yes\"")
                .kv("grammar0", "yesno")
                .line(),
            "200 result=1 (speech) endpos=0 results=1 score0=900 text0=\"yes\" grammar0=yesno\n"
        );
        assert_eq!(
            AgiResult::new(1).data("a\nb").line(),
            "200 result=1 (a b)\n"
        );
        assert_eq!(TRYING, "100 result=0 Trying...\n");
        assert_eq!(HANGUP_LINE, "HANGUP\n");
    }

    #[test]
    fn reply_parsing() {
        let r = parse_reply("200 result=1 (some (nested) value) endpos=5\n").unwrap();
        assert_eq!(
            (r.code, r.result.as_deref(), r.data.as_deref()),
            (200, Some("1"), Some("some (nested) value"))
        );
        assert_eq!(r.extra, vec![("endpos".to_string(), "5".to_string())]);
        assert_eq!(
            parse_reply("510 Invalid or unknown command").unwrap().code,
            510
        );
        assert_eq!(
            parse_reply("520-Invalid command syntax.").unwrap().code,
            520
        );
        assert!(parse_reply("HANGUP").is_none());
        assert!(parse_reply("").is_none());
        assert!(parse_reply("2é0").is_none());
    }

    #[test]
    fn urls() {
        let fast = |s: &str| match AgiTarget::parse(s).unwrap() {
            AgiTarget::Fast(u) => u,
            other => panic!("{other:?}"),
        };
        let u = fast("agi://agi.example.com");
        assert_eq!(
            (u.host.as_str(), u.port, u.script.as_str()),
            ("agi.example.com", None, "")
        );
        assert_eq!(u.port_or_default(), 4573);
        assert_eq!(u.authority(), "agi.example.com:4573");
        let u = fast("AGI://10.0.0.1:4600/ivr/main.agi?lang=en&x=1");
        assert_eq!(
            (u.host.as_str(), u.port, u.script.as_str()),
            ("10.0.0.1", Some(4600), "ivr/main.agi?lang=en&x=1")
        );
        assert_eq!(u.script_path(), "ivr/main.agi");
        assert_eq!(u.query(), Some("lang=en&x=1"));
        let u = fast("agi://[::1]:4574/s");
        assert_eq!((u.host.as_str(), u.port), ("::1", Some(4574)));
        assert_eq!(u.authority(), "[::1]:4574");
        let u = fast("agi://host/?extension=100");
        assert_eq!(u.script, "?extension=100");
        let u = fast("agi://host?x=1");
        assert_eq!((u.host.as_str(), u.script.as_str()), ("host", "?x=1"));
        match AgiTarget::parse("hagi://example.com/s").unwrap() {
            AgiTarget::HighAvailability(u) => assert_eq!(u.srv_name(), "_agi._tcp.example.com"),
            other => panic!("{other:?}"),
        }
        assert_eq!(AgiTarget::parse("agi:async").unwrap(), AgiTarget::Async);
        assert_eq!(
            AgiTarget::parse("test.agi").unwrap(),
            AgiTarget::Local("test.agi".into())
        );
        for bad in [
            "agi://",
            "agi://:80/x",
            "agi://h:0",
            "agi://h:99999",
            "agi://h:x",
            "agi://[::1",
            "agi://::1:80",
            "agi://a b",
            "",
        ] {
            assert!(AgiTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn async_encoding() {
        assert_eq!(
            uri_encode("agi_request: async\n"),
            "agi_request%3A%20async%0A"
        );
        assert_eq!(uri_encode("a-b.c_d~e/f"), "a-b.c_d~e%2Ff");
        // The RFC 2396 mark set stays, as with Asterisk's ast_uri_http.
        assert_eq!(uri_encode("!*'()"), "!*'()");
        assert_eq!(
            uri_encode("\"#%&+,;=?@[]"),
            "%22%23%25%26%2B%2C%3B%3D%3F%40%5B%5D"
        );
        assert_eq!(
            async_result("200 result=1 (x)\n"),
            "200%20result%3D1%20(x)%0A"
        );
        let e = env();
        let enc = async_env(&e);
        assert!(!enc.contains(['\n', ' ', ':']));
        assert_eq!(uri_decode(&enc), e.encode());
        assert_eq!(uri_decode("%zz%4"), "%zz%4");
        assert_eq!(uri_decode("a+b%20c"), "a b c");
        assert_eq!(uri_decode("%C3%A9"), "é");
        assert_eq!(uri_decode("%FF"), "\u{fffd}");
    }

    #[test]
    fn failure_line() {
        assert!(is_failure_line("failure"));
        assert!(is_failure_line("FAILURE to exec"));
        assert!(!is_failure_line("fail"));
    }

    /// Deterministic smoke fuzz over the text functions.
    #[test]
    fn random_text_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xA61);
        let alphabet: Vec<char> = " \t\"\\abcXYZ:/?[]%()=-é\u{0}\n\r0123456789"
            .chars()
            .collect();
        for _ in 0..3000 {
            let n = rng.gen_range(0..80);
            let text: String = (0..n)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let argv = parse_args(&text);
            assert!(argv.len() < MAX_ARGS);
            let _ = dispatch(&text, rng.gen_bool(0.5)).error_reply();
            let _ = parse_reply(&text);
            let _ = parse_env(&text);
            let _ = AgiTarget::parse(&format!("agi://{text}"));
            let _ = AgiTarget::parse(&text);
            assert_eq!(uri_decode(&uri_encode(&text)), text);
            assert_eq!(
                AgiResult::new(1)
                    .data(text.clone())
                    .line()
                    .matches('\n')
                    .count(),
                1
            );
        }
    }
}
