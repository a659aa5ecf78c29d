//! Typed `manager.conf`: the `[general]` settings, AMI users, IP ACLs and event filters.
//!
//! Built from a parsed [`ConfFile`]; every error names the file and line. Keys Asterisk knows
//! but voxpbx does not use (TLS details, `webenabled`, ...) are kept or ignored, never fatal.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use regex::Regex;

use super::codec::Header;
use super::perm::Perm;
use crate::config::{is_true, ConfFile, ConfigError, Entry, Section};

/// Asterisk's default AMI port.
pub const DEFAULT_PORT: u16 = 5038;
/// Asterisk's default AMI-over-TLS port.
pub const DEFAULT_TLS_PORT: u16 = 5039;

/// `[general]` of manager.conf plus the users.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub enabled: bool,
    pub webenabled: bool,
    pub port: u16,
    pub bindaddr: IpAddr,
    pub displayconnects: bool,
    pub timestampevents: bool,
    /// Seconds an unauthenticated connection may stay open.
    pub authtimeout: Duration,
    /// Maximum number of unauthenticated connections at once.
    pub authlimit: usize,
    pub allowmultiplelogin: bool,
    pub brokeneventsaction: bool,
    pub debug: bool,
    pub httptimeout: Duration,
    /// Channel variables appended to channel events as `ChanVariable:`.
    pub channelvars: Vec<String>,
    /// Event names never sent to any session.
    pub disabledevents: Vec<String>,
    pub tlsenable: bool,
    pub tlsbindaddr: Option<String>,
    pub tlscertfile: Option<String>,
    pub tlsprivatekey: Option<String>,
    /// voxpbx addition: failed logins from one IP tolerated within `authfail_window`
    /// before that IP is blocked for `authfail_block` (0 disables).
    pub authfail_limit: u32,
    pub authfail_window: Duration,
    pub authfail_block: Duration,
    pub users: Vec<AmiUser>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            enabled: false,
            webenabled: false,
            port: DEFAULT_PORT,
            bindaddr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            displayconnects: true,
            timestampevents: false,
            authtimeout: Duration::from_secs(30),
            authlimit: 50,
            allowmultiplelogin: true,
            brokeneventsaction: false,
            debug: false,
            httptimeout: Duration::from_secs(60),
            channelvars: Vec::new(),
            disabledevents: Vec::new(),
            tlsenable: false,
            tlsbindaddr: None,
            tlscertfile: None,
            tlsprivatekey: None,
            authfail_limit: 20,
            authfail_window: Duration::from_secs(60),
            authfail_block: Duration::from_secs(60),
            users: Vec::new(),
        }
    }
}

/// One AMI user (a non-`general` section of manager.conf).
#[derive(Debug, Clone)]
pub struct AmiUser {
    pub username: String,
    pub secret: Option<String>,
    pub read: Perm,
    pub write: Perm,
    pub acl: Acl,
    pub displayconnects: bool,
    pub allowmultiplelogin: bool,
    /// Milliseconds a write to this user's socket may block (at least 100).
    pub writetimeout: Duration,
    /// `setvar=NAME=value` channel variables for channels this user originates.
    pub setvars: Vec<(String, String)>,
    pub filters: EventFilters,
}

impl AmiUser {
    /// A user with a secret and permissions, no ACL and no filters.
    pub fn new(username: &str, secret: &str, read: Perm, write: Perm) -> AmiUser {
        AmiUser {
            username: username.to_string(),
            secret: Some(secret.to_string()),
            read,
            write,
            acl: Acl::default(),
            displayconnects: true,
            allowmultiplelogin: true,
            writetimeout: Duration::from_millis(100),
            setvars: Vec::new(),
            filters: EventFilters::default(),
        }
    }
}

impl ManagerConfig {
    /// Build from a parsed manager.conf.
    pub fn from_conf(conf: &ConfFile) -> Result<ManagerConfig, ConfigError> {
        let mut cfg = ManagerConfig::default();
        for general in conf.sections_named("general") {
            cfg.apply_general(general)?;
        }
        for section in conf.real_sections() {
            if section.name.eq_ignore_ascii_case("general") {
                continue;
            }
            let user = cfg.user_from_section(section)?;
            // A repeated user section replaces the earlier one, as Asterisk's reload does.
            cfg.users
                .retain(|u| !u.username.eq_ignore_ascii_case(&user.username));
            cfg.users.push(user);
        }
        Ok(cfg)
    }

    fn apply_general(&mut self, s: &Section) -> Result<(), ConfigError> {
        for e in &s.entries {
            let v = e.value.trim();
            match e.key.to_ascii_lowercase().as_str() {
                "enabled" => self.enabled = is_true(v),
                "webenabled" => self.webenabled = is_true(v),
                "port" => {
                    self.port = parse_num::<u16>(e)
                        .filter(|p| *p > 0)
                        .ok_or_else(|| bad(e, "a port number 1-65535"))?
                }
                "bindaddr" => {
                    self.bindaddr = parse_bind_addr(v).ok_or_else(|| bad(e, "an IP address"))?;
                }
                "displayconnects" => self.displayconnects = is_true(v),
                "timestampevents" => self.timestampevents = is_true(v),
                "authtimeout" => {
                    let n = parse_num::<u64>(e)
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad(e, "a number of seconds >= 1"))?;
                    self.authtimeout = Duration::from_secs(n);
                }
                "authlimit" => {
                    self.authlimit = parse_num::<usize>(e)
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad(e, "a number >= 1"))?;
                }
                "allowmultiplelogin" => self.allowmultiplelogin = is_true(v),
                "brokeneventsaction" => self.brokeneventsaction = is_true(v),
                "debug" => self.debug = is_true(v),
                "httptimeout" => {
                    let n = parse_num::<u64>(e).ok_or_else(|| bad(e, "a number of seconds"))?;
                    if n > 0 {
                        self.httptimeout = Duration::from_secs(n);
                    }
                }
                "channelvars" => self.channelvars = split_list(v),
                "disabledevents" => self.disabledevents = split_list(v),
                "tlsenable" | "sslenable" => self.tlsenable = is_true(v),
                "tlsbindaddr" | "sslbindaddr" => self.tlsbindaddr = Some(v.to_string()),
                "tlscertfile" | "sslcert" => self.tlscertfile = Some(v.to_string()),
                "tlsprivatekey" | "sslprivatekey" => self.tlsprivatekey = Some(v.to_string()),
                "authfaillimit" => {
                    self.authfail_limit = parse_num::<u32>(e).ok_or_else(|| bad(e, "a number"))?
                }
                "authfailwindow" => {
                    self.authfail_window =
                        Duration::from_secs(parse_num::<u64>(e).ok_or_else(|| bad(e, "seconds"))?)
                }
                "authfailblock" => {
                    self.authfail_block =
                        Duration::from_secs(parse_num::<u64>(e).ok_or_else(|| bad(e, "seconds"))?)
                }
                // Other TLS options, realm, etc.: accepted and unused.
                _ => {}
            }
        }
        Ok(())
    }

    fn user_from_section(&self, s: &Section) -> Result<AmiUser, ConfigError> {
        let mut u = AmiUser {
            username: s.name.clone(),
            secret: None,
            read: Perm::NONE,
            write: Perm::NONE,
            acl: Acl::default(),
            displayconnects: self.displayconnects,
            allowmultiplelogin: self.allowmultiplelogin,
            writetimeout: Duration::from_millis(100),
            setvars: Vec::new(),
            filters: EventFilters::default(),
        };
        for e in &s.entries {
            let key = e.key.trim();
            let lkey = key.to_ascii_lowercase();
            match lkey.as_str() {
                "secret" => u.secret = Some(e.value.clone()),
                "read" => u.read = Perm::parse_list(&e.value),
                "write" => u.write = Perm::parse_list(&e.value),
                "permit" | "deny" => {
                    let rule = AclRule::parse(&e.value, lkey == "permit")
                        .map_err(|m| ConfigError::at(e, format!("{key}: {m}")))?;
                    u.acl.rules.push(rule);
                }
                "acl" => {
                    return Err(ConfigError::at(
                        e,
                        format!(
                            "named ACL '{}' is not supported; use permit=/deny= lines",
                            e.value.trim()
                        ),
                    ))
                }
                "displayconnects" => u.displayconnects = is_true(&e.value),
                "allowmultiplelogin" => u.allowmultiplelogin = is_true(&e.value),
                "writetimeout" => {
                    let ms = parse_num::<u64>(e)
                        .filter(|n| *n >= 100)
                        .ok_or_else(|| bad(e, "milliseconds >= 100"))?;
                    u.writetimeout = Duration::from_millis(ms);
                }
                "setvar" => {
                    if let Some((n, v)) = e.value.split_once('=') {
                        u.setvars.push((n.trim().to_string(), v.to_string()));
                    }
                }
                _ if lkey.starts_with("eventfilter") => {
                    let f = EventFilter::parse(key, &e.value).map_err(|m| ConfigError::at(e, m))?;
                    u.filters.add(f);
                }
                _ => {}
            }
        }
        Ok(u)
    }

    /// Look a user up by name (case-insensitive, as Asterisk does).
    pub fn user(&self, name: &str) -> Option<&AmiUser> {
        self.users
            .iter()
            .find(|u| u.username.eq_ignore_ascii_case(name))
    }

    pub fn is_event_disabled(&self, name: &str) -> bool {
        self.disabledevents
            .iter()
            .any(|d| d.eq_ignore_ascii_case(name))
    }
}

fn parse_num<T: std::str::FromStr>(e: &Entry) -> Option<T> {
    e.value.trim().parse::<T>().ok()
}

fn bad(e: &Entry, expected: &str) -> ConfigError {
    ConfigError::at(
        e,
        format!(
            "invalid value '{}' for '{}': expected {}",
            e.value.trim(),
            e.key,
            expected
        ),
    )
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_bind_addr(v: &str) -> Option<IpAddr> {
    let v = v.trim();
    let v = v
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(v);
    v.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// ACLs
// ---------------------------------------------------------------------------------------------

/// One `permit=` / `deny=` line: an address with a netmask, optionally negated with `!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    pub permit: bool,
    pub negate: bool,
    pub addr: IpAddr,
    pub prefix: u8,
}

impl AclRule {
    /// Parse `a.b.c.d`, `a.b.c.d/NN`, `a.b.c.d/m.m.m.m`, `v6`, `v6/NN`, `[v6]/NN`, each with
    /// an optional leading `!`.
    pub fn parse(value: &str, permit: bool) -> Result<AclRule, String> {
        let mut v = value.trim();
        let negate = if let Some(rest) = v.strip_prefix('!') {
            v = rest.trim_start();
            true
        } else {
            false
        };
        let (addr_s, mask_s) = match v.split_once('/') {
            Some((a, m)) => (a.trim(), Some(m.trim())),
            None => (v, None),
        };
        let addr_s = addr_s
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(addr_s);
        let addr: IpAddr = addr_s
            .parse()
            .map_err(|_| format!("'{value}' is not an address[/mask]"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match mask_s {
            None => max,
            Some(m) if m.bytes().all(|b| b.is_ascii_digit()) && !m.is_empty() => {
                let p: u8 = m
                    .parse()
                    .map_err(|_| format!("bad prefix length in '{value}'"))?;
                if p > max {
                    return Err(format!("prefix length {p} too long in '{value}'"));
                }
                p
            }
            Some(m) => {
                let mask: Ipv4Addr = m.parse().map_err(|_| format!("bad netmask in '{value}'"))?;
                if !addr.is_ipv4() {
                    return Err(format!("dotted netmask with an IPv6 address in '{value}'"));
                }
                let bits = u32::from(mask);
                let p = bits.leading_ones();
                if bits.checked_shl(p).unwrap_or(0) != 0 {
                    return Err(format!("netmask is not contiguous in '{value}'"));
                }
                p as u8
            }
        };
        Ok(AclRule {
            permit,
            negate,
            addr,
            prefix,
        })
    }

    fn matches(&self, ip: IpAddr) -> bool {
        let hit = match (canonical(self.addr), canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix.min(32))
                };
                u32::from(net) & m == u32::from(a) & m
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix.min(128))
                };
                u128::from(net) & m == u128::from(a) & m
            }
            _ => return false,
        };
        hit != self.negate
    }
}

/// IPv4-mapped IPv6 addresses are compared as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// An ordered permit/deny list. With no rules every address is allowed; otherwise the last
/// rule that matches decides (Asterisk's `ast_apply_ha`), and an address no rule matches is
/// allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    pub rules: Vec<AclRule>,
}

impl Acl {
    pub fn allows(&self, ip: IpAddr) -> bool {
        let mut allow = true;
        for r in &self.rules {
            if r.matches(ip) {
                allow = r.permit;
            }
        }
        allow
    }
}

// ---------------------------------------------------------------------------------------------
// Event filters
// ---------------------------------------------------------------------------------------------

/// How an advanced filter's expression is applied.
#[derive(Debug, Clone)]
pub enum MatchMethod {
    Regex(Regex),
    Exact(String),
    StartsWith(String),
    EndsWith(String),
    Contains(String),
    /// No expression: the filter matches on name/header alone.
    None,
}

impl MatchMethod {
    fn matches(&self, data: &str) -> bool {
        match self {
            MatchMethod::Regex(r) => r.is_match(data),
            MatchMethod::Exact(s) => data == s,
            MatchMethod::StartsWith(s) => data.starts_with(s.as_str()),
            MatchMethod::EndsWith(s) => data.ends_with(s.as_str()),
            MatchMethod::Contains(s) => data.contains(s.as_str()),
            MatchMethod::None => true,
        }
    }
}

/// One `eventfilter` line, legacy (`eventfilter = [!]regex`) or advanced
/// (`eventfilter(action(include|exclude),name(X),header(H),method(M)) = expr`).
#[derive(Debug, Clone)]
pub struct EventFilter {
    pub exclude: bool,
    /// Exact event name (case-sensitive, as Asterisk compares it).
    pub name: Option<String>,
    /// Restrict the match to this header's values (name compared case-insensitively).
    pub header: Option<String>,
    pub method: MatchMethod,
}

/// Compile a POSIX-ERE-style pattern as Asterisk's `regcomp(REG_EXTENDED)` would treat it:
/// `.` also matches line breaks (the event text spans lines).
fn compile_filter_regex(pat: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pat)
        .dot_matches_new_line(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("event filter regex '{pat}' does not compile: {e}"))
}

impl EventFilter {
    /// A legacy filter: a regex over the whole event text, `!` first to exclude.
    pub fn legacy(pattern: &str) -> Result<EventFilter, String> {
        let (exclude, pat) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if pat.is_empty() {
            return Err("legacy event filter with no pattern".into());
        }
        Ok(EventFilter {
            exclude,
            name: None,
            header: None,
            method: MatchMethod::Regex(compile_filter_regex(pat)?),
        })
    }

    /// Parse from a manager.conf key (`eventfilter` or `eventfilter(...)`) and its value.
    pub fn parse(key: &str, value: &str) -> Result<EventFilter, String> {
        let key = key.trim();
        let Some(open) = key.find('(') else {
            return EventFilter::legacy(value.trim_start());
        };
        let value = value.trim();
        let (mut exclude, pattern) = match value.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, value),
        };
        let opts = key[open + 1..].trim();
        let opts = opts
            .strip_suffix(')')
            .ok_or_else(|| format!("'{key}': filter options not formatted correctly"))?;
        let mut name = None;
        let mut header = None;
        let mut method_name: Option<String> = None;
        let mut found = false;
        for opt in split_options(opts) {
            let opt = opt.trim();
            if opt.is_empty() {
                continue;
            }
            let (oname, oval) = match (opt.find('('), opt.ends_with(')')) {
                (Some(i), true) => (opt[..i].trim(), opt[i + 1..opt.len() - 1].trim()),
                _ => return Err(format!("'{key}': option '{opt}' not formatted correctly")),
            };
            found = true;
            match oname {
                "action" => match oval {
                    "include" => exclude = false,
                    "exclude" => exclude = true,
                    o => return Err(format!("'{key}': 'action' option '{o}' is unknown")),
                },
                "name" => {
                    if oval.is_empty() {
                        return Err(format!("'{key}': 'name' parameter is empty"));
                    }
                    name = Some(oval.to_string());
                }
                "header" => {
                    let h = oval.strip_suffix(':').unwrap_or(oval).trim();
                    if h.is_empty() {
                        return Err(format!("'{key}': 'header' parameter is empty"));
                    }
                    header = Some(h.to_string());
                }
                "method" => method_name = Some(oval.to_string()),
                o => return Err(format!("'{key}': filter option '{o}' is unknown")),
            }
        }
        if !found {
            return Err(format!(
                "'{key}': no action, name, header, or method option found"
            ));
        }
        let method = match method_name.as_deref().unwrap_or("none") {
            "none" => MatchMethod::None,
            "regex" => MatchMethod::Regex(compile_filter_regex(pattern)?),
            "exact" => MatchMethod::Exact(pattern.to_string()),
            "starts_with" => MatchMethod::StartsWith(pattern.to_string()),
            "ends_with" => MatchMethod::EndsWith(pattern.to_string()),
            "contains" => MatchMethod::Contains(pattern.to_string()),
            m => return Err(format!("'{key}': 'method' option '{m}' is unknown")),
        };
        let is_none = matches!(method, MatchMethod::None);
        if pattern.is_empty() && !is_none {
            return Err(format!(
                "'{key}': a method other than 'none' needs a filter pattern"
            ));
        }
        if !pattern.is_empty() && is_none {
            return Err(format!(
                "'{key}': method 'none' (the default) cannot have a filter pattern"
            ));
        }
        if is_none && name.is_none() && header.is_none() {
            return Err(format!("'{key}': no name or header and no filter pattern"));
        }
        Ok(EventFilter {
            exclude,
            name,
            header,
            method,
        })
    }

    /// Does this filter match the event? `fields` are the event's headers; `text` gives the
    /// full event text (only computed for filters that match on it).
    pub fn matches(&self, name: &str, fields: &[Header], text: &LazyText<'_>) -> bool {
        if let Some(n) = &self.name {
            if n != name {
                return false;
            }
        }
        match &self.header {
            None => match self.method {
                MatchMethod::None => true,
                _ => self.method.matches(text.get()),
            },
            Some(h) => fields
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case(h) && !f.value.is_empty())
                .any(|f| self.method.matches(&f.value)),
        }
    }
}

/// Split `a(x),b(y, z)` on commas outside parentheses.
fn split_options(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A user's (or session's) include/exclude filters.
///
/// No filters: every event passes. Include filters only: an event must match one.
/// Exclude filters only: an event must match none. Both: it must match an include filter
/// and no exclude filter.
#[derive(Debug, Clone, Default)]
pub struct EventFilters {
    pub include: Vec<EventFilter>,
    pub exclude: Vec<EventFilter>,
}

impl EventFilters {
    pub fn add(&mut self, f: EventFilter) {
        if f.exclude {
            self.exclude.push(f);
        } else {
            self.include.push(f);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Whether any filter needs the full event text.
    pub fn needs_text(&self) -> bool {
        self.include
            .iter()
            .chain(&self.exclude)
            .any(|f| f.header.is_none() && !matches!(f.method, MatchMethod::None))
    }

    /// Apply the filters. `text` is called (at most once) only if a filter needs the full text.
    pub fn allows<'a>(
        &self,
        name: &str,
        fields: &[Header],
        text: &'a dyn Fn() -> Cow<'a, str>,
    ) -> bool {
        if self.is_empty() {
            return true;
        }
        let lazy = LazyText::new(text);
        if !self.include.is_empty() && !self.include.iter().any(|f| f.matches(name, fields, &lazy))
        {
            return false;
        }
        !self.exclude.iter().any(|f| f.matches(name, fields, &lazy))
    }
}

/// The full text of an event, built on first use.
pub struct LazyText<'a> {
    cell: OnceCell<Cow<'a, str>>,
    make: &'a dyn Fn() -> Cow<'a, str>,
}

impl<'a> LazyText<'a> {
    pub fn new(make: &'a dyn Fn() -> Cow<'a, str>) -> LazyText<'a> {
        LazyText {
            cell: OnceCell::new(),
            make,
        }
    }
    pub fn get(&self) -> &str {
        self.cell.get_or_init(|| (self.make)())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn entry(key: &str, value: &str, line: usize) -> Entry {
        Entry {
            key: key.into(),
            value: value.into(),
            op: crate::config::Op::Assign,
            file: PathBuf::from("manager.conf"),
            line,
        }
    }

    fn section(name: &str, entries: &[(&str, &str)]) -> Section {
        Section {
            name: name.into(),
            is_template: false,
            templates: vec![],
            entries: entries
                .iter()
                .enumerate()
                .map(|(i, (k, v))| entry(k, v, i + 2))
                .collect(),
            file: PathBuf::from("manager.conf"),
            line: 1,
        }
    }

    fn conf(sections: Vec<Section>) -> ConfFile {
        ConfFile {
            path: PathBuf::from("manager.conf"),
            sections,
        }
    }

    #[test]
    fn general_and_users() {
        let c = conf(vec![
            section(
                "general",
                &[
                    ("enabled", "yes"),
                    ("port", "5039"),
                    ("bindaddr", "127.0.0.1"),
                    ("timestampevents", "yes"),
                    ("authtimeout", "5"),
                    ("authlimit", "3"),
                    ("allowmultiplelogin", "no"),
                    ("displayconnects", "no"),
                    ("channelvars", "A, B"),
                    ("tlscipher", "whatever"),
                ],
            ),
            section(
                "admin",
                &[
                    ("secret", "s3cret"),
                    ("read", "system,call"),
                    ("write", "all"),
                    ("deny", "0.0.0.0/0.0.0.0"),
                    ("permit", "127.0.0.1/255.255.255.255"),
                    ("setvar", "FOO=bar=baz"),
                    ("eventfilter", "!Channel: DAHDI/"),
                ],
            ),
        ]);
        let m = ManagerConfig::from_conf(&c).unwrap();
        assert!(m.enabled);
        assert_eq!(m.port, 5039);
        assert_eq!(m.bindaddr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(m.timestampevents);
        assert_eq!(m.authtimeout, Duration::from_secs(5));
        assert_eq!(m.authlimit, 3);
        assert!(!m.allowmultiplelogin);
        assert_eq!(m.channelvars, vec!["A", "B"]);
        let u = m.user("ADMIN").unwrap();
        assert_eq!(u.secret.as_deref(), Some("s3cret"));
        assert_eq!(u.read, Perm::SYSTEM | Perm::CALL);
        assert_eq!(u.write, Perm::ALL);
        assert!(!u.allowmultiplelogin, "user default comes from [general]");
        assert!(!u.displayconnects);
        assert!(u.acl.allows("127.0.0.1".parse().unwrap()));
        assert!(!u.acl.allows("10.0.0.1".parse().unwrap()));
        assert_eq!(u.setvars, vec![("FOO".to_string(), "bar=baz".to_string())]);
        assert_eq!(u.filters.exclude.len(), 1);
    }

    #[test]
    fn bad_values_name_file_and_line() {
        let c = conf(vec![section(
            "general",
            &[("enabled", "yes"), ("port", "notaport")],
        )]);
        let e = ManagerConfig::from_conf(&c).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().starts_with("manager.conf:3:"), "{e}");
        let c = conf(vec![section("u", &[("permit", "999.1.1.1")])]);
        assert!(ManagerConfig::from_conf(&c).is_err());
        let c = conf(vec![section("u", &[("acl", "named")])]);
        assert!(ManagerConfig::from_conf(&c)
            .unwrap_err()
            .message
            .contains("named ACL"));
        let c = conf(vec![section("u", &[("eventfilter", "([")])]);
        assert!(ManagerConfig::from_conf(&c).is_err());
    }

    #[test]
    fn defaults_without_general() {
        let m = ManagerConfig::from_conf(&conf(vec![section("bob", &[("secret", "x")])])).unwrap();
        assert!(!m.enabled);
        assert_eq!(m.port, 5038);
        assert_eq!(m.authlimit, 50);
        let u = m.user("bob").unwrap();
        assert_eq!(u.read, Perm::NONE);
        assert_eq!(u.write, Perm::NONE);
        assert!(u.allowmultiplelogin);
    }

    #[test]
    fn acl_rules() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut acl = Acl::default();
        assert!(acl.allows(ip("1.2.3.4")));
        acl.rules.push(AclRule::parse("0.0.0.0/0", false).unwrap());
        acl.rules
            .push(AclRule::parse("192.168.1.0/24", true).unwrap());
        assert!(acl.allows(ip("192.168.1.77")));
        assert!(!acl.allows(ip("192.168.2.1")));
        assert!(
            acl.allows(ip("::ffff:192.168.1.5")),
            "v4-mapped compares as v4"
        );
        assert!(
            acl.allows(ip("2001:db8::1")),
            "no v6 rule matches -> allowed"
        );
        acl.rules.push(AclRule::parse("::/0", false).unwrap());
        assert!(!acl.allows(ip("2001:db8::1")));
        acl.rules
            .push(AclRule::parse("[2001:db8::]/32", true).unwrap());
        assert!(acl.allows(ip("2001:db8::1")));

        let neg = Acl {
            rules: vec![AclRule::parse("!10.0.0.0/8", false).unwrap()],
        };
        assert!(neg.allows(ip("10.1.1.1")));
        assert!(!neg.allows(ip("11.1.1.1")));

        assert_eq!(
            AclRule::parse("10.0.0.0/255.0.0.0", true).unwrap().prefix,
            8
        );
        assert!(AclRule::parse("10.0.0.0/255.0.255.0", true).is_err());
        assert!(AclRule::parse("10.0.0.0/33", true).is_err());
        assert!(AclRule::parse("::1/255.0.0.0", true).is_err());
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<Header> {
        pairs
            .iter()
            .map(|(k, v)| Header {
                name: k.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    fn text_of(name: &str, f: &[Header]) -> String {
        let mut s = format!("Event: {name}\r\nPrivilege: call,all\r\n");
        for h in f {
            s.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
        s
    }

    fn allows(fs: &EventFilters, name: &str, f: &[Header]) -> bool {
        fs.allows(name, f, &|| Cow::Owned(text_of(name, f)))
    }

    fn no_text() -> Cow<'static, str> {
        Cow::Borrowed("")
    }

    fn m(f: &EventFilter, name: &str, fl: &[Header]) -> bool {
        f.matches(name, fl, &LazyText::new(&no_text))
    }

    #[test]
    fn legacy_filters() {
        let mut fs = EventFilters::default();
        fs.add(EventFilter::legacy("Event: Newchannel.*Channel: PJSIP/").unwrap());
        let nc = fields(&[("Channel", "PJSIP/alice-1")]);
        assert!(allows(&fs, "Newchannel", &nc), "dot spans lines");
        assert!(!allows(
            &fs,
            "Newchannel",
            &fields(&[("Channel", "Local/x")])
        ));
        assert!(!allows(&fs, "Hangup", &nc));

        let mut ex = EventFilters::default();
        ex.add(EventFilter::parse("eventfilter", "!Channel: DAHDI/").unwrap());
        assert!(allows(&ex, "Hangup", &nc));
        assert!(!allows(&ex, "Hangup", &fields(&[("Channel", "DAHDI/1-1")])));
        assert!(EventFilter::legacy("!").is_err());
    }

    #[test]
    fn advanced_filters() {
        let mut fs = EventFilters::default();
        fs.add(EventFilter::parse("eventfilter(action(include),name(Newchannel))", "").unwrap());
        fs.add(EventFilter::parse("eventfilter(action(include),name(Hangup))", "").unwrap());
        fs.add(
            EventFilter::parse(
                "eventfilter(action(exclude),header(Channel),method(starts_with))",
                "Local/",
            )
            .unwrap(),
        );
        assert!(allows(
            &fs,
            "Newchannel",
            &fields(&[("Channel", "PJSIP/a")])
        ));
        assert!(!allows(
            &fs,
            "Newchannel",
            &fields(&[("Channel", "Local/a;1")])
        ));
        assert!(!allows(&fs, "Newstate", &fields(&[("Channel", "PJSIP/a")])));
        assert!(allows(&fs, "Hangup", &fields(&[])));

        let f = EventFilter::parse(
            "eventfilter(header(Channel),method(regex))",
            "(PJ)?SIP/(james|jim)-",
        )
        .unwrap();
        assert!(m(&f, "X", &fields(&[("Channel", "PJSIP/jim-0001")])));
        assert!(!m(&f, "X", &fields(&[("Uniqueid", "PJSIP/jim-0001")])));

        let f = EventFilter::parse(
            "eventfilter(name(Hangup), header(Cause:), method(exact))",
            "16",
        )
        .unwrap();
        assert!(m(&f, "Hangup", &fields(&[("cause", "16")])));
        assert!(!m(&f, "Hangup", &fields(&[("cause", "17")])));
        assert!(!m(&f, "hangup", &fields(&[("cause", "16")])));

        for (meth, pat, yes, no) in [
            ("ends_with", "-1", "a-1", "a-2"),
            ("contains", "ice", "alice-1", "bob-1"),
            ("exact", "x", "x", "xx"),
        ] {
            let f =
                EventFilter::parse(&format!("eventfilter(header(Channel),method({meth}))"), pat)
                    .unwrap();
            assert!(m(&f, "E", &fields(&[("Channel", yes)])), "{meth}");
            assert!(!m(&f, "E", &fields(&[("Channel", no)])), "{meth}");
        }

        // Whole-text match without a header.
        let f = EventFilter::parse("eventfilter(method(contains))", "Cause: 16").unwrap();
        let t = || Cow::Borrowed("Event: Hangup\r\nCause: 16\r\n");
        assert!(f.matches("Hangup", &[], &LazyText::new(&t)));

        // "!" on the value also excludes.
        assert!(
            EventFilter::parse(
                "eventfilter(header(Channel),method(starts_with))",
                "!Local/"
            )
            .unwrap()
            .exclude
        );
    }

    #[test]
    fn advanced_filter_errors() {
        for (k, v) in [
            ("eventfilter(name(X)", ""),
            ("eventfilter()", ""),
            ("eventfilter(action(maybe))", ""),
            ("eventfilter(bogus(1))", ""),
            ("eventfilter(name())", ""),
            ("eventfilter(name(X),method(regex))", ""),
            ("eventfilter(name(X))", "pattern"),
            ("eventfilter(method(none))", ""),
            ("eventfilter(header(C),method(fuzzy))", "x"),
            ("eventfilter(header(C),method(regex))", "(["),
        ] {
            assert!(EventFilter::parse(k, v).is_err(), "{k} = {v}");
        }
    }

    #[test]
    fn include_then_exclude_order() {
        let mut fs = EventFilters::default();
        fs.add(EventFilter::legacy("Event: Hangup").unwrap());
        fs.add(EventFilter::legacy("!Cause: 16").unwrap());
        assert!(allows(&fs, "Hangup", &fields(&[("Cause", "17")])));
        assert!(!allows(&fs, "Hangup", &fields(&[("Cause", "16")])));
        assert!(!allows(&fs, "Newchannel", &fields(&[("Cause", "17")])));
        assert!(fs.needs_text());
    }
}
