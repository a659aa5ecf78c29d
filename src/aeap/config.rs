//! aeap.conf, read as Asterisk's res_aeap reads it (spec A.2), plus voxpbx extensions.
//!
//! Asterisk semantics:
//! * `[id]` sections with `type=client` are clients; other sections are ignored (sorcery
//!   criteria). The id is the speech engine name for `protocol=speech_to_text` clients.
//! * `url` is required and must begin with `ws` (case-sensitive prefix, as `client_config_apply`).
//! * `protocol` is sent as the WebSocket subprotocol.
//! * `codecs` uses allow/disallow syntax (`!all,ulaw,alaw`).
//! * `@name=value` become `setup` `params` (string values); a bare `@` is ignored.
//!
//! voxpbx differences and extensions (documented in docs/aeap.md):
//! * a speech client without codecs loads with a **warning** (Asterisk loads it silently and
//!   fails later at SpeechCreate); unknown codec names and bad URLs are errors naming file:line;
//! * `allow=` / `disallow=` lines are accepted as well as `codecs=`, applied in file order;
//! * several `url` lines form a failover list, tried in order;
//! * `barge_in = yes|no` (default yes): voxpbx runs a VAD on the audio and sets QUIET/SPOKE;
//! * `request_timeout_ms` (default 1000), `connect_timeout_ms` (default 2000);
//! * `partial_results = yes|no` (default no): the engine may send
//!   `set {"partial_results":[{"text":...}]}`;
//! * `[aeap-server]` configures voxpbx's own AEAP speech server (listen, engine, limits).

use crate::config::{is_true, ConfFile, ConfigError, Entry, Section};
use crate::media::Format;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The protocol that makes a client a speech engine (`SPEECH_PROTOCOL`).
pub const SPEECH_PROTOCOL: &str = "speech_to_text";
/// The section configuring voxpbx's own AEAP server.
pub const SERVER_SECTION: &str = "aeap-server";
/// Default port of the server (the reference app's port).
pub const DEFAULT_SERVER_PORT: u16 = 9099;

/// Every format voxpbx knows, the expansion of `all`.
const ALL_FORMATS: [Format; 6] = [
    Format::Ulaw,
    Format::Alaw,
    Format::Slin8,
    Format::Slin16,
    Format::Slin48,
    Format::G722,
];

/// One `type=client` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Section name = speech engine name.
    pub name: String,
    /// Failover list, tried in order (one `url` line in stock Asterisk).
    pub urls: Vec<String>,
    pub protocol: Option<String>,
    /// Allowed formats in preference order (empty when `codecs` is missing).
    pub codecs: Vec<Format>,
    /// The `codecs`/`allow`/`disallow` values as written, for display.
    pub codecs_text: Option<String>,
    /// `@name=value` fields, `@` stripped, in file order (later duplicates replace).
    pub params: Vec<(String, String)>,
    pub barge_in: bool,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub partial_results: bool,
    pub file: PathBuf,
    pub line: usize,
}

impl ClientConfig {
    /// A client with defaults, for programmatic use and tests.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> ClientConfig {
        ClientConfig {
            name: name.into(),
            urls: vec![url.into()],
            protocol: Some(SPEECH_PROTOCOL.to_string()),
            codecs: vec![Format::Ulaw],
            codecs_text: None,
            params: Vec::new(),
            barge_in: true,
            request_timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_millis(2000),
            partial_results: false,
            file: PathBuf::new(),
            line: 0,
        }
    }

    /// `protocol` is exactly `speech_to_text` (`strcmp`, as Asterisk).
    pub fn is_speech(&self) -> bool {
        self.protocol.as_deref() == Some(SPEECH_PROTOCOL)
    }

    /// `(ulaw|alaw)`, Asterisk's codec list rendering; `(nothing)` when empty.
    pub fn codecs_display(&self) -> String {
        if self.codecs.is_empty() {
            return "(nothing)".to_string();
        }
        let names: Vec<&str> = self.codecs.iter().map(|f| f.name()).collect();
        format!("({})", names.join("|"))
    }

    /// The block `aeap show client <id>` prints: `client: <id>` then the options sorted by name,
    /// tab-indented, then a blank line (res_aeap's `aeap_cli_show`). voxpbx extension options
    /// are listed among them.
    pub fn show(&self) -> String {
        let mut opts: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.params {
            opts.push((format!("@{k}"), v.clone()));
        }
        opts.push(("codecs".into(), self.codecs_display()));
        opts.push(("protocol".into(), self.protocol.clone().unwrap_or_default()));
        for u in &self.urls {
            opts.push(("url".into(), u.clone()));
        }
        opts.push(("barge_in".into(), yes_no(self.barge_in).into()));
        opts.push((
            "partial_results".into(),
            yes_no(self.partial_results).into(),
        ));
        opts.push((
            "request_timeout_ms".into(),
            self.request_timeout.as_millis().to_string(),
        ));
        opts.push((
            "connect_timeout_ms".into(),
            self.connect_timeout.as_millis().to_string(),
        ));
        // Stable sort keeps failover urls in order.
        opts.sort_by(|a, b| a.0.cmp(&b.0));
        let mut s = format!("client: {}\n", self.name);
        for (k, v) in opts {
            s.push_str(&format!("\t{k}: {v}\n"));
        }
        s.push('\n');
        s
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `aeap show clients`: every client block, or Asterisk's "No AEAP configuration found".
pub fn show_clients(clients: &[ClientConfig]) -> String {
    if clients.is_empty() {
        return "No AEAP configuration found\n".to_string();
    }
    clients.iter().map(ClientConfig::show).collect()
}

/// Limits of the in-daemon AEAP server, per connection unless said otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerLimits {
    /// Audio accepted per session (default 5 minutes); beyond it the session is closed (1008).
    pub max_audio: Duration,
    /// Concurrent connections (default 100); more are refused with HTTP 503.
    pub max_sessions: usize,
    /// Time allowed between the upgrade and `setup` (default 10 s).
    pub setup_timeout: Duration,
    /// Timeout of the `set results` requests the server sends (default 1 s).
    pub request_timeout: Duration,
    /// Time allowed for the WebSocket upgrade (default 5 s).
    pub handshake_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_audio: Duration::from_secs(300),
            max_sessions: 100,
            setup_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_millis(1000),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// `[aeap-server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Engine serving the sessions; `None` = the default engine (or `@engine` from setup).
    pub engine: Option<String>,
    pub limits: ServerLimits,
}

/// Everything aeap.conf configures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AeapConfig {
    pub clients: Vec<ClientConfig>,
    pub server: Option<ServerConfig>,
    /// Non-fatal problems, each `file:line: message`; log them at load.
    pub warnings: Vec<String>,
}

impl AeapConfig {
    /// Clients whose protocol is `speech_to_text`, in file order (the first is the default
    /// speech engine when registered first).
    pub fn speech_clients(&self) -> impl Iterator<Item = &ClientConfig> {
        self.clients.iter().filter(|c| c.is_speech())
    }
    pub fn client(&self, name: &str) -> Option<&ClientConfig> {
        self.clients.iter().find(|c| c.name == name)
    }
}

/// Build the typed config from a parsed aeap.conf.
pub fn from_conf(conf: &ConfFile) -> Result<AeapConfig, ConfigError> {
    let mut out = AeapConfig::default();
    for section in conf.real_sections() {
        if section.name == SERVER_SECTION {
            if out.server.is_some() {
                return Err(ConfigError::new(
                    &section.file,
                    section.line,
                    "duplicate [aeap-server] section",
                ));
            }
            out.server = parse_server(section)?;
            continue;
        }
        let is_client = section
            .get("type")
            .map(|t| t.trim().eq_ignore_ascii_case("client"))
            .unwrap_or(false);
        if !is_client {
            continue;
        }
        if let Some(prev) = out.clients.iter().find(|c| c.name == section.name) {
            return Err(ConfigError::new(
                &section.file,
                section.line,
                format!(
                    "duplicate AEAP client '{}' (first defined at {}:{})",
                    section.name,
                    prev.file.display(),
                    prev.line
                ),
            ));
        }
        let client = parse_client(section, &mut out.warnings)?;
        out.clients.push(client);
    }
    Ok(out)
}

fn parse_client(s: &Section, warnings: &mut Vec<String>) -> Result<ClientConfig, ConfigError> {
    let mut c = ClientConfig::new(s.name.clone(), String::new());
    c.urls.clear();
    c.protocol = None;
    c.codecs.clear();
    c.file = s.file.clone();
    c.line = s.line;
    let mut codec_texts: Vec<String> = Vec::new();
    let mut codecs_given = false;
    for e in &s.entries {
        let key = e.key.trim();
        let value = e.value.trim();
        if let Some(name) = key.strip_prefix('@') {
            if name.is_empty() {
                continue;
            }
            match c.params.iter_mut().find(|(k, _)| k == name) {
                Some(slot) => slot.1 = value.to_string(),
                None => c.params.push((name.to_string(), value.to_string())),
            }
            continue;
        }
        match key.to_ascii_lowercase().as_str() {
            "type" => {}
            "url" => {
                check_url(e, &s.name)?;
                c.urls.push(value.to_string());
            }
            "protocol" => {
                c.protocol = if value.is_empty() {
                    None
                } else {
                    Some(value.to_string())
                }
            }
            "codecs" | "allow" => {
                codecs_given = true;
                codec_texts.push(value.to_string());
                apply_codecs(&mut c.codecs, e, true)?;
            }
            "disallow" => {
                codecs_given = true;
                codec_texts.push(format!("!{value}"));
                apply_codecs(&mut c.codecs, e, false)?;
            }
            "barge_in" => c.barge_in = parse_bool(e)?,
            "partial_results" => c.partial_results = parse_bool(e)?,
            "request_timeout_ms" => c.request_timeout = parse_ms(e, 1, 60_000)?,
            "connect_timeout_ms" => c.connect_timeout = parse_ms(e, 1, 60_000)?,
            _ => warnings.push(format!(
                "{}:{}: unknown option '{}' in AEAP client '{}' (ignored)",
                e.file.display(),
                e.line,
                e.key,
                s.name
            )),
        }
    }
    if c.urls.is_empty() {
        return Err(ConfigError::new(
            &s.file,
            s.line,
            format!("AEAP - URL must be present for '{}'", s.name),
        ));
    }
    if codecs_given {
        c.codecs_text = Some(codec_texts.join(","));
    }
    if c.is_speech() && c.codecs.is_empty() {
        warnings.push(format!(
            "{}:{}: AEAP client '{}' has no codecs{}: SpeechCreate({}) will fail with ERROR=1; add e.g. codecs=!all,ulaw",
            s.file.display(),
            s.line,
            s.name,
            if codecs_given { " left after allow/disallow" } else { "" },
            s.name
        ));
    }
    Ok(c)
}

fn check_url(e: &Entry, client: &str) -> Result<(), ConfigError> {
    let v = e.value.trim();
    if v.is_empty() {
        return Err(ConfigError::at(
            e,
            format!("AEAP - URL must be present for '{client}'"),
        ));
    }
    if !v.starts_with("ws") {
        return Err(ConfigError::at(
            e,
            format!("AEAP - URL must be ws or wss for '{client}' (got '{v}')"),
        ));
    }
    let u = url::Url::parse(v)
        .map_err(|err| ConfigError::at(e, format!("invalid URL '{v}' for '{client}': {err}")))?;
    if u.scheme() != "ws" && u.scheme() != "wss" {
        return Err(ConfigError::at(
            e,
            format!("AEAP - URL must be ws or wss for '{client}' (got '{v}')"),
        ));
    }
    if u.host_str().map(str::is_empty).unwrap_or(true) {
        return Err(ConfigError::at(
            e,
            format!("URL '{v}' for '{client}' has no host"),
        ));
    }
    Ok(())
}

/// `ast_format_cap_update_by_allow_disallow`: comma list, `!` flips allow/disallow, `all`,
/// `name:framing` (framing ignored).
fn apply_codecs(codecs: &mut Vec<Format>, e: &Entry, allowing: bool) -> Result<(), ConfigError> {
    for item in e.value.split(',') {
        let mut item = item.trim();
        if item.is_empty() {
            continue;
        }
        let mut allow = allowing;
        if let Some(rest) = item.strip_prefix('!') {
            allow = !allowing;
            item = rest.trim();
        }
        let name = item.split(':').next().unwrap_or("").trim();
        let formats: Vec<Format> = if name.eq_ignore_ascii_case("all") {
            ALL_FORMATS.to_vec()
        } else {
            match Format::from_name(name) {
                Some(f) => vec![f],
                None => {
                    let known: Vec<&str> = ALL_FORMATS.iter().map(|f| f.name()).collect();
                    return Err(ConfigError::at(
                        e,
                        format!(
                            "unknown or unsupported codec '{}' (voxpbx supports: {})",
                            name,
                            known.join(", ")
                        ),
                    ));
                }
            }
        };
        for f in formats {
            if allow {
                if !codecs.contains(&f) {
                    codecs.push(f);
                }
            } else {
                codecs.retain(|x| *x != f);
            }
        }
    }
    Ok(())
}

fn parse_bool(e: &Entry) -> Result<bool, ConfigError> {
    let v = e.value.trim().to_ascii_lowercase();
    if is_true(&v) {
        return Ok(true);
    }
    if matches!(v.as_str(), "no" | "false" | "n" | "f" | "0" | "off") {
        return Ok(false);
    }
    Err(ConfigError::at(
        e,
        format!(
            "invalid value '{}' for '{}': expected yes or no",
            e.value.trim(),
            e.key
        ),
    ))
}

fn parse_ms(e: &Entry, min: u64, max: u64) -> Result<Duration, ConfigError> {
    match e.value.trim().parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(Duration::from_millis(v)),
        _ => Err(ConfigError::at(
            e,
            format!(
                "invalid value '{}' for '{}': expected milliseconds {}..={}",
                e.value.trim(),
                e.key,
                min,
                max
            ),
        )),
    }
}

fn parse_count(e: &Entry, min: u64, max: u64) -> Result<u64, ConfigError> {
    match e.value.trim().parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(ConfigError::at(
            e,
            format!(
                "invalid value '{}' for '{}': expected a number {}..={}",
                e.value.trim(),
                e.key,
                min,
                max
            ),
        )),
    }
}

/// `listen=ip:port`, `listen=ip` (port 9099) or `listen=:port` (127.0.0.1).
fn parse_listen(e: &Entry) -> Result<SocketAddr, ConfigError> {
    let v = e.value.trim();
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = v
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, DEFAULT_SERVER_PORT));
    }
    if let Some(p) = v.strip_prefix(':') {
        if let Ok(port) = p.parse::<u16>() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    Err(ConfigError::at(
        e,
        format!("invalid listen address '{v}': expected ip:port"),
    ))
}

fn parse_server(s: &Section) -> Result<Option<ServerConfig>, ConfigError> {
    let mut enabled = true;
    let mut listen = None;
    let mut engine = None;
    let mut limits = ServerLimits::default();
    for e in &s.entries {
        match e.key.trim().to_ascii_lowercase().as_str() {
            "enabled" => enabled = parse_bool(e)?,
            "listen" | "bindaddr" => listen = Some(parse_listen(e)?),
            "engine" => {
                let v = e.value.trim();
                engine = if v.is_empty() {
                    None
                } else {
                    Some(v.to_string())
                };
            }
            "max_audio_secs" => limits.max_audio = Duration::from_secs(parse_count(e, 1, 86_400)?),
            "max_sessions" => limits.max_sessions = parse_count(e, 1, 100_000)? as usize,
            "setup_timeout_ms" => limits.setup_timeout = parse_ms(e, 1, 600_000)?,
            "request_timeout_ms" => limits.request_timeout = parse_ms(e, 1, 60_000)?,
            "handshake_timeout_ms" => limits.handshake_timeout = parse_ms(e, 1, 600_000)?,
            "type" => {}
            _ => {
                return Err(ConfigError::at(
                    e,
                    format!("unknown option '{}' in [{}]", e.key, SERVER_SECTION),
                ));
            }
        }
    }
    if !enabled {
        return Ok(None);
    }
    let listen = listen.ok_or_else(|| {
        ConfigError::new(
            &s.file,
            s.line,
            format!("[{SERVER_SECTION}] needs listen=ip:port (e.g. 127.0.0.1:9099)"),
        )
    })?;
    Ok(Some(ServerConfig {
        listen,
        engine,
        limits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Op;
    use std::path::Path;

    /// Minimal section/key builder (the real parser lives in crate::config::parser).
    fn conf(text: &str) -> ConfFile {
        let file = Path::new("/etc/voxpbx/aeap.conf");
        let mut cf = ConfFile {
            path: file.to_path_buf(),
            sections: Vec::new(),
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                cf.sections.push(Section {
                    name: name.to_string(),
                    is_template: false,
                    templates: vec![],
                    entries: vec![],
                    file: file.to_path_buf(),
                    line: i + 1,
                });
            } else if let Some((k, v)) = line.split_once('=') {
                cf.sections.last_mut().unwrap().entries.push(Entry {
                    key: k.trim().to_string(),
                    value: v.trim().to_string(),
                    op: Op::Assign,
                    file: file.to_path_buf(),
                    line: i + 1,
                });
            }
        }
        cf
    }

    #[test]
    fn sample_config() {
        let c = from_conf(&conf(
            "[my-speech-to-text]\ntype=client\nurl=ws://127.0.0.1:9099\nprotocol=speech_to_text\ncodecs=!all,ulaw\n@language=en-US\n",
        ))
        .unwrap();
        assert_eq!(c.clients.len(), 1);
        let cl = &c.clients[0];
        assert_eq!(cl.name, "my-speech-to-text");
        assert_eq!(cl.urls, vec!["ws://127.0.0.1:9099"]);
        assert!(cl.is_speech());
        assert_eq!(cl.codecs, vec![Format::Ulaw]);
        assert_eq!(
            cl.params,
            vec![("language".to_string(), "en-US".to_string())]
        );
        assert!(cl.barge_in);
        assert!(!cl.partial_results);
        assert_eq!(cl.request_timeout, Duration::from_millis(1000));
        assert_eq!(cl.connect_timeout, Duration::from_millis(2000));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(c.server.is_none());
    }

    #[test]
    fn non_client_sections_ignored() {
        let c = from_conf(&conf(
            "[general]\nfoo=bar\n[x]\ntype=other\nurl=http://nope\n",
        ))
        .unwrap();
        assert!(c.clients.is_empty());
        assert_eq!(show_clients(&c.clients), "No AEAP configuration found\n");
    }

    #[test]
    fn url_required_and_ws_prefix() {
        let e = from_conf(&conf("[a]\ntype=client\nprotocol=speech_to_text\n")).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.to_string().contains("URL must be present for 'a'"), "{e}");
        let e = from_conf(&conf("[a]\ntype=client\n\nurl=http://x:1\n")).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.to_string().starts_with("/etc/voxpbx/aeap.conf:4:"), "{e}");
        assert!(e.to_string().contains("must be ws or wss"));
        // Case-sensitive prefix, as Asterisk.
        assert!(from_conf(&conf("[a]\ntype=client\nurl=WS://x:1\n")).is_err());
        assert!(from_conf(&conf("[a]\ntype=client\nurl=wsx://x:1\n")).is_err());
        assert!(from_conf(&conf("[a]\ntype=client\nurl=wss://example.com/stt?x=1\n")).is_ok());
    }

    #[test]
    fn failover_urls_in_order() {
        let c = from_conf(&conf(
            "[a]\ntype=client\nurl=ws://a:1\nurl=ws://b:2\ncodecs=ulaw\n",
        ))
        .unwrap();
        assert_eq!(c.clients[0].urls, vec!["ws://a:1", "ws://b:2"]);
    }

    #[test]
    fn codec_syntax() {
        let c = from_conf(&conf(
            "[a]\ntype=client\nurl=ws://a:1\ncodecs=!all,alaw,ulaw:20,slin16\n",
        ))
        .unwrap();
        assert_eq!(
            c.clients[0].codecs,
            vec![Format::Alaw, Format::Ulaw, Format::Slin16]
        );
        let c = from_conf(&conf(
            "[a]\ntype=client\nurl=ws://a:1\ndisallow=all\nallow=slin\nallow=ulaw\n",
        ))
        .unwrap();
        assert_eq!(c.clients[0].codecs, vec![Format::Slin8, Format::Ulaw]);
        let c = from_conf(&conf(
            "[a]\ntype=client\nurl=ws://a:1\ncodecs=all,!slin48,!g722\n",
        ))
        .unwrap();
        assert_eq!(
            c.clients[0].codecs,
            vec![Format::Ulaw, Format::Alaw, Format::Slin8, Format::Slin16]
        );
        let e = from_conf(&conf("[a]\ntype=client\nurl=ws://a:1\ncodecs=opus\n")).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.to_string().contains("codec 'opus'"));
    }

    #[test]
    fn missing_codecs_is_a_clear_warning() {
        let c = from_conf(&conf(
            "[stt]\ntype=client\nurl=ws://a:1\nprotocol=speech_to_text\n",
        ))
        .unwrap();
        assert!(c.clients[0].codecs.is_empty());
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].starts_with("/etc/voxpbx/aeap.conf:1:"),
            "{}",
            c.warnings[0]
        );
        assert!(c.warnings[0].contains("no codecs"));
        // Not a speech client: no warning.
        let c = from_conf(&conf("[x]\ntype=client\nurl=ws://a:1\nprotocol=other\n")).unwrap();
        assert!(c.warnings.is_empty());
        // Everything disallowed.
        let c = from_conf(&conf(
            "[stt]\ntype=client\nurl=ws://a:1\nprotocol=speech_to_text\ncodecs=!all\n",
        ))
        .unwrap();
        assert!(c.warnings[0].contains("left after allow/disallow"));
    }

    #[test]
    fn custom_params() {
        let c = from_conf(&conf(
            "[a]\ntype=client\nurl=ws://a:1\ncodecs=ulaw\n@language=en-US\n@=ignored\n@Model=big\n@language=fr-FR\n",
        ))
        .unwrap();
        assert_eq!(
            c.clients[0].params,
            vec![
                ("language".to_string(), "fr-FR".to_string()),
                ("Model".to_string(), "big".to_string())
            ]
        );
    }

    #[test]
    fn extensions() {
        let c = from_conf(&conf(
            "[a]\ntype=client\nurl=ws://a:1\ncodecs=ulaw\nbarge_in=no\npartial_results=yes\nrequest_timeout_ms=250\nconnect_timeout_ms=500\nbogus=1\n",
        ))
        .unwrap();
        let cl = &c.clients[0];
        assert!(!cl.barge_in);
        assert!(cl.partial_results);
        assert_eq!(cl.request_timeout, Duration::from_millis(250));
        assert_eq!(cl.connect_timeout, Duration::from_millis(500));
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("unknown option 'bogus'"));
        let e = from_conf(&conf(
            "[a]\ntype=client\nurl=ws://a:1\nrequest_timeout_ms=0\n",
        ))
        .unwrap_err();
        assert_eq!(e.line, 4);
        let e = from_conf(&conf("[a]\ntype=client\nurl=ws://a:1\nbarge_in=maybe\n")).unwrap_err();
        assert!(e.to_string().contains("expected yes or no"));
    }

    #[test]
    fn duplicate_client_is_an_error() {
        let e = from_conf(&conf(
            "[a]\ntype=client\nurl=ws://a:1\n[a]\ntype=client\nurl=ws://b:1\n",
        ))
        .unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.to_string().contains("first defined at"));
    }

    #[test]
    fn show_format() {
        let c = from_conf(&conf(
            "[stt]\ntype=client\nurl=ws://127.0.0.1:9099\nprotocol=speech_to_text\ncodecs=!all,ulaw,alaw\n@language=en-US\n",
        ))
        .unwrap();
        let s = show_clients(&c.clients);
        assert_eq!(
            s,
            "client: stt\n\t@language: en-US\n\tbarge_in: yes\n\tcodecs: (ulaw|alaw)\n\tconnect_timeout_ms: 2000\n\tpartial_results: no\n\tprotocol: speech_to_text\n\trequest_timeout_ms: 1000\n\turl: ws://127.0.0.1:9099\n\n"
        );
    }

    #[test]
    fn server_section() {
        let c = from_conf(&conf("[aeap-server]\nlisten=0.0.0.0:9100\nengine=whisper\nmax_audio_secs=60\nmax_sessions=4\n"))
            .unwrap();
        let s = c.server.unwrap();
        assert_eq!(s.listen, "0.0.0.0:9100".parse().unwrap());
        assert_eq!(s.engine.as_deref(), Some("whisper"));
        assert_eq!(s.limits.max_audio, Duration::from_secs(60));
        assert_eq!(s.limits.max_sessions, 4);
        let c = from_conf(&conf("[aeap-server]\nlisten=127.0.0.1\n")).unwrap();
        assert_eq!(c.server.unwrap().listen.port(), DEFAULT_SERVER_PORT);
        let c = from_conf(&conf("[aeap-server]\nlisten=:9200\nenabled=no\n")).unwrap();
        assert!(c.server.is_none());
        let e = from_conf(&conf("[aeap-server]\nengine=x\n")).unwrap_err();
        assert!(e.to_string().contains("needs listen"));
        let e = from_conf(&conf("[aeap-server]\nlisten=nowhere\n")).unwrap_err();
        assert_eq!(e.line, 2);
        let e = from_conf(&conf("[aeap-server]\nlisten=:1\nmax_sessions=0\n")).unwrap_err();
        assert_eq!(e.line, 3);
    }
}
