//! The extensions.conf model: contexts, extensions, priorities, includes, ignorepats, hints;
//! loading from the parsed config and lookups with Asterisk's matching rules.

use super::pattern::{compare, ExtenName, MatchKind};
use super::subst::{self, Template};
use super::timespec::TimeSpec;
use crate::config::{parse_file, ConfFile, ConfigError, Entry, Op};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One priority line: `exten => 100,1(label),App(args)`.
#[derive(Debug, Clone)]
pub struct Priority {
    pub priority: i32,
    pub label: Option<String>,
    pub app: String,
    /// Raw argument text (what `dialplan show` prints).
    pub args: String,
    /// Parsed once for fast substitution.
    pub template: Template,
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Extension {
    pub name: ExtenName,
    /// `exten => 100/5551212,...` caller ID match.
    pub cid: Option<ExtenName>,
    pub priorities: Vec<Priority>,
    pub hint: Option<String>,
}

impl Extension {
    pub fn priority(&self, p: i32) -> Option<&Priority> {
        self.priorities.iter().find(|x| x.priority == p)
    }
    pub fn label(&self, label: &str) -> Option<i32> {
        self.priorities
            .iter()
            .find(|x| x.label.as_deref() == Some(label))
            .map(|x| x.priority)
    }
    fn last_priority(&self) -> i32 {
        self.priorities
            .iter()
            .map(|p| p.priority)
            .max()
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct Include {
    pub context: String,
    pub time: Option<TimeSpec>,
    pub raw: String,
}

#[derive(Debug, Clone, Default)]
pub struct Context {
    pub name: String,
    /// Literal extensions first, then patterns in Asterisk's order (see `pattern::compare`).
    pub extensions: Vec<Extension>,
    pub includes: Vec<Include>,
    pub ignorepats: Vec<ExtenName>,
}

#[derive(Debug, Clone)]
pub struct General {
    pub static_: bool,
    pub writeprotect: bool,
    pub autofallthrough: bool,
    pub clearglobalvars: bool,
}

impl Default for General {
    fn default() -> Self {
        General {
            static_: true,
            writeprotect: false,
            autofallthrough: true,
            clearglobalvars: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Dialplan {
    pub general: General,
    pub globals: Vec<(String, String)>,
    pub contexts: HashMap<String, Context>,
    /// Context names in file order (for `dialplan show`).
    pub order: Vec<String>,
    pub file: PathBuf,
}

/// A dialplan location found by lookup.
#[derive(Debug, Clone)]
pub struct Found<'a> {
    pub context: &'a Context,
    pub extension: &'a Extension,
}

const MAX_INCLUDE_DEPTH: usize = 32;

impl Dialplan {
    /// Load `extensions.conf` from the config dir (a missing file is an empty dialplan).
    pub fn load(conf_dir: &Path) -> Result<Dialplan, ConfigError> {
        let path = conf_dir.join("extensions.conf");
        if !path.exists() {
            return Ok(Dialplan {
                file: path,
                ..Default::default()
            });
        }
        let conf = parse_file(&path)?;
        Dialplan::from_conf(&conf)
    }

    pub fn from_conf(conf: &ConfFile) -> Result<Dialplan, ConfigError> {
        let mut dp = Dialplan {
            file: conf.path.clone(),
            ..Default::default()
        };
        for sec in conf.real_sections() {
            match sec.name.as_str() {
                "general" => {
                    let g = &mut dp.general;
                    if let Some(v) = sec.get_bool("static") {
                        g.static_ = v;
                    }
                    if let Some(v) = sec.get_bool("writeprotect") {
                        g.writeprotect = v;
                    }
                    if let Some(v) = sec.get_bool("autofallthrough") {
                        g.autofallthrough = v;
                    }
                    if let Some(v) = sec.get_bool("clearglobalvars") {
                        g.clearglobalvars = v;
                    }
                }
                "globals" => {
                    for e in &sec.entries {
                        dp.globals.push((e.key.clone(), e.value.clone()));
                    }
                }
                name => {
                    if !dp.contexts.contains_key(name) {
                        dp.order.push(name.to_string());
                        dp.contexts.insert(
                            name.to_string(),
                            Context {
                                name: name.to_string(),
                                ..Default::default()
                            },
                        );
                    }
                    let ctx = dp.contexts.get_mut(name).expect("inserted above");
                    let mut last_exten: Option<(String, Option<String>)> = None;
                    for e in &sec.entries {
                        load_entry(ctx, e, &mut last_exten)?;
                    }
                }
            }
        }
        for ctx in dp.contexts.values_mut() {
            ctx.extensions.sort_by(|a, b| {
                compare(&a.name, &b.name).then_with(|| b.cid.is_some().cmp(&a.cid.is_some()))
            });
        }
        Ok(dp)
    }

    pub fn context(&self, name: &str) -> Option<&Context> {
        self.contexts.get(name)
    }

    /// Find the extension that runs `exten` in `context` for caller `cid` (includes followed,
    /// time-restricted includes checked against `now`).
    pub fn find_exten(&self, context: &str, exten: &str, cid: &str) -> Option<Found<'_>> {
        let mut seen = Vec::new();
        self.find_in(context, exten, cid, &mut seen, 0, chrono::Utc::now())
    }

    fn find_in<'a>(
        &'a self,
        context: &str,
        exten: &str,
        cid: &str,
        seen: &mut Vec<String>,
        depth: usize,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<Found<'a>> {
        if depth > MAX_INCLUDE_DEPTH || seen.iter().any(|s| s == context) {
            return None;
        }
        seen.push(context.to_string());
        let ctx = self.contexts.get(context)?;
        for e in &ctx.extensions {
            if matches!(e.name.matches(exten), MatchKind::Exact { .. }) {
                if let Some(c) = &e.cid {
                    if !matches!(c.matches(cid), MatchKind::Exact { .. }) {
                        continue;
                    }
                }
                return Some(Found {
                    context: ctx,
                    extension: e,
                });
            }
        }
        for inc in &ctx.includes {
            if let Some(t) = &inc.time {
                if !t.matches_at(now) {
                    continue;
                }
            }
            if let Some(f) = self.find_in(&inc.context, exten, cid, seen, depth + 1, now) {
                return Some(f);
            }
        }
        None
    }

    /// `ast_exists_extension` for a priority.
    pub fn exists(&self, context: &str, exten: &str, priority: i32, cid: &str) -> bool {
        self.find_exten(context, exten, cid)
            .map(|f| f.extension.priority(priority).is_some())
            .unwrap_or(false)
    }

    /// `ast_canmatch_extension`: matches now or could with more digits.
    pub fn can_match(&self, context: &str, exten: &str, cid: &str) -> bool {
        self.walk(context, |ctx| {
            ctx.extensions
                .iter()
                .any(|e| !matches!(e.name.matches(exten), MatchKind::No) && cid_ok(e, cid))
        })
    }

    /// `ast_matchmore_extension`: some extension would match a longer string.
    pub fn match_more(&self, context: &str, exten: &str, cid: &str) -> bool {
        self.walk(context, |ctx| {
            ctx.extensions.iter().any(|e| {
                matches!(
                    e.name.matches(exten),
                    MatchKind::Prefix | MatchKind::Exact { more: true }
                ) && cid_ok(e, cid)
            })
        })
    }

    /// Is `digits` matched by an `ignorepat` of the context (or its includes)?
    pub fn ignore_pattern(&self, context: &str, digits: &str) -> bool {
        self.walk(context, |ctx| {
            ctx.ignorepats
                .iter()
                .any(|p| !matches!(p.matches(digits), MatchKind::No))
        })
    }

    fn walk(&self, context: &str, mut f: impl FnMut(&Context) -> bool) -> bool {
        let mut stack = vec![(context.to_string(), 0usize)];
        let mut seen: Vec<String> = Vec::new();
        let now = chrono::Utc::now();
        while let Some((name, depth)) = stack.pop() {
            if depth > MAX_INCLUDE_DEPTH || seen.contains(&name) {
                continue;
            }
            seen.push(name.clone());
            if let Some(ctx) = self.contexts.get(&name) {
                if f(ctx) {
                    return true;
                }
                for inc in ctx.includes.iter().rev() {
                    if inc.time.as_ref().map(|t| t.matches_at(now)).unwrap_or(true) {
                        stack.push((inc.context.clone(), depth + 1));
                    }
                }
            }
        }
        false
    }

    /// The hint of `exten@context`, if any.
    pub fn hint(&self, context: &str, exten: &str) -> Option<&str> {
        self.find_exten(context, exten, "")
            .and_then(|f| f.extension.hint.as_deref())
    }

    /// `dialplan show [CONTEXT]` output in Asterisk's layout.
    pub fn show(&self, only: Option<&str>) -> String {
        let mut out = String::new();
        let mut shown = 0usize;
        let mut exts = 0usize;
        let mut prios = 0usize;
        for name in &self.order {
            if let Some(o) = only {
                if o != name {
                    continue;
                }
            }
            let ctx = &self.contexts[name];
            shown += 1;
            out.push_str(&format!("[ Context '{}' created by 'pbx_config' ]\n", name));
            for e in &ctx.extensions {
                exts += 1;
                let mut first = true;
                if let Some(h) = &e.hint {
                    out.push_str(&format!("  '{}' =>{:>10}hint: {}\n", e.name.raw, "", h));
                    first = false;
                }
                for p in &e.priorities {
                    prios += 1;
                    let label = p
                        .label
                        .as_ref()
                        .map(|l| format!("[{}]", l))
                        .unwrap_or_default();
                    let app = format!("{}({})", p.app, p.args);
                    if first {
                        out.push_str(&format!(
                            "  '{}' =>{:>8}{}. {:<45} [pbx_config]\n",
                            e.name.raw, label, p.priority, app
                        ));
                        first = false;
                    } else {
                        out.push_str(&format!(
                            "  {:>16}{}. {:<45} [pbx_config]\n",
                            label, p.priority, app
                        ));
                    }
                }
            }
            for inc in &ctx.includes {
                out.push_str(&format!(
                    "  Include =>        '{}'                       [pbx_config]\n",
                    inc.raw
                ));
            }
            for ig in &ctx.ignorepats {
                out.push_str(&format!(
                    "  Ignore pattern => '{}'                       [pbx_config]\n",
                    ig.raw
                ));
            }
            out.push('\n');
        }
        if let Some(o) = only {
            if shown == 0 {
                return format!("There is no existence of '{}' context\n", o);
            }
        }
        out.push_str(&format!(
            "-= {} extensions ({} priorities) in {} contexts. =-\n",
            exts, prios, shown
        ));
        out
    }
}

fn cid_ok(e: &Extension, cid: &str) -> bool {
    e.cid
        .as_ref()
        .map(|c| matches!(c.matches(cid), MatchKind::Exact { .. }))
        .unwrap_or(true)
}

/// Split `name,prio(label),app` respecting `[...]` in pattern names.
fn split_exten_line(v: &str) -> Option<(&str, &str, &str)> {
    let mut depth = 0i32;
    let mut commas = Vec::new();
    for (i, c) in v.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth <= 0 => {
                commas.push(i);
                if commas.len() == 2 {
                    break;
                }
            }
            _ => {}
        }
    }
    match commas.as_slice() {
        [a, b] => Some((&v[..*a], &v[a + 1..*b], &v[b + 1..])),
        [a] => Some((&v[..*a], &v[a + 1..], "")),
        _ => None,
    }
}

/// Split `App(args)` / `App,args` / `App`.
pub fn split_app(s: &str) -> (String, String) {
    let s = s.trim();
    let paren = s.find('(');
    let comma = s.find(',');
    match (paren, comma) {
        (Some(p), c) if c.map(|c| p < c).unwrap_or(true) => {
            let app = s[..p].trim().to_string();
            let rest = &s[p + 1..];
            let args = rest.strip_suffix(')').unwrap_or(rest).to_string();
            (app, args)
        }
        (_, Some(c)) => (s[..c].trim().to_string(), s[c + 1..].to_string()),
        _ => (s.to_string(), String::new()),
    }
}

fn load_entry(
    ctx: &mut Context,
    e: &Entry,
    last: &mut Option<(String, Option<String>)>,
) -> Result<(), ConfigError> {
    let key = e.key.to_ascii_lowercase();
    match key.as_str() {
        "exten" | "same" => {
            let (name, cid, prio_s, app_s) = if key == "same" {
                let (n, c) = last.clone().ok_or_else(|| {
                    ConfigError::at(e, "'same =>' without a preceding 'exten =>'")
                })?;
                let (p, a) = match e.value.split_once(',') {
                    Some((p, a)) => (p, a),
                    None => (e.value.as_str(), ""),
                };
                (n, c, p.trim().to_string(), a.to_string())
            } else {
                let (n, p, a) = split_exten_line(&e.value).ok_or_else(|| {
                    ConfigError::at(e, "expected 'exten => name,priority,Application(args)'")
                })?;
                let n = n.trim();
                let (n, c) = match n.split_once('/') {
                    Some((n, c)) if !n.is_empty() => (n.to_string(), Some(c.to_string())),
                    _ => (n.to_string(), None),
                };
                (n, c, p.trim().to_string(), a.to_string())
            };
            if name.is_empty() {
                return Err(ConfigError::at(e, "empty extension name"));
            }
            *last = Some((name.clone(), cid.clone()));
            let ename = ExtenName::parse(&name)
                .map_err(|m| ConfigError::at(e, format!("bad extension '{}': {}", name, m)))?;
            let cidname = match &cid {
                Some(c) => Some(ExtenName::parse(c).map_err(|m| {
                    ConfigError::at(e, format!("bad caller id match '{}': {}", c, m))
                })?),
                None => None,
            };
            let idx = match ctx
                .extensions
                .iter()
                .position(|x| x.name == ename && x.cid == cidname)
            {
                Some(i) => i,
                None => {
                    ctx.extensions.push(Extension {
                        name: ename,
                        cid: cidname,
                        priorities: Vec::new(),
                        hint: None,
                    });
                    ctx.extensions.len() - 1
                }
            };
            let ext = &mut ctx.extensions[idx];
            if prio_s.eq_ignore_ascii_case("hint") {
                ext.hint = Some(app_s.trim().to_string());
                return Ok(());
            }
            let (pnum_s, label) = match prio_s.find('(') {
                Some(i) => {
                    let l = prio_s[i + 1..].trim_end_matches(')').trim().to_string();
                    (prio_s[..i].trim().to_string(), Some(l))
                }
                None => (prio_s.clone(), None),
            };
            let last_p = ext.last_priority();
            let pnum = if pnum_s.eq_ignore_ascii_case("n") {
                last_p + 1
            } else if let Some(rest) = pnum_s.strip_prefix("n+") {
                last_p
                    + rest
                        .parse::<i32>()
                        .map_err(|_| ConfigError::at(e, format!("invalid priority '{}'", pnum_s)))?
            } else if pnum_s.eq_ignore_ascii_case("s") {
                last_p
            } else {
                pnum_s
                    .parse::<i32>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        ConfigError::at(
                            e,
                            format!(
                                "invalid priority '{}': expected a number, 'n' or 'hint'",
                                pnum_s
                            ),
                        )
                    })?
            };
            if ext.priority(pnum).is_some() {
                return Err(ConfigError::at(
                    e,
                    format!("duplicate priority {} for extension '{}'", pnum, name),
                ));
            }
            let (app, args) = split_app(&app_s);
            if app.is_empty() {
                return Err(ConfigError::at(
                    e,
                    "expected an application after the priority",
                ));
            }
            ext.priorities.push(Priority {
                priority: pnum,
                label,
                template: subst::parse(&args),
                app,
                args,
                file: e.file.clone(),
                line: e.line,
            });
            ext.priorities.sort_by_key(|p| p.priority);
            Ok(())
        }
        "include" => {
            let v = e.value.trim();
            let (name, rest) = match v.find([',', '|']) {
                Some(i) => (&v[..i], Some(&v[i + 1..])),
                None => (v, None),
            };
            let time = match rest {
                Some(r) if !r.trim().is_empty() => Some(
                    TimeSpec::parse(r)
                        .map_err(|m| ConfigError::at(e, format!("bad include time spec: {}", m)))?,
                ),
                _ => None,
            };
            ctx.includes.push(Include {
                context: name.trim().to_string(),
                time,
                raw: v.to_string(),
            });
            Ok(())
        }
        "ignorepat" => {
            let p = ExtenName::parse(e.value.trim())
                .map_err(|m| ConfigError::at(e, format!("bad ignorepat: {}", m)))?;
            ctx.ignorepats.push(p);
            Ok(())
        }
        "switch" | "eswitch" | "lswitch" => {
            tracing::warn!(
                "{}:{}: switch statements are not supported; ignored",
                e.file.display(),
                e.line
            );
            Ok(())
        }
        _ => {
            if e.op == Op::Object || e.op == Op::Assign {
                Err(ConfigError::at(
                    e,
                    format!(
                        "unknown dialplan keyword '{}': expected exten, same, include or ignorepat",
                        e.key
                    ),
                ))
            } else {
                Ok(())
            }
        }
    }
}
