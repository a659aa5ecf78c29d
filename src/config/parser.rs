//! The `.conf` parser. See the module docs of `config`.
//!
//! Follows Asterisk's `main/config.c` (`config_text_file_load` and `process_text_line`):
//!
//! * comments: `;` to end of line, `\;` is a literal `;`, block comments `;-- ... --;` that may
//!   span lines and nest (`;---` is *not* a block start, as in Asterisk);
//! * `[name]`, `[name](!)`, `[name](t1,t2)`, `[name](!,t)`, `[name](+)`; everything after the
//!   closing `]` that does not start with `(` is ignored, as is everything after the `)`;
//! * `key = value`, `key => value`, `key += value` (the text after `+=` is appended verbatim to
//!   the last value of that exact key in the section, then the result is trimmed);
//!   a leading `\` escapes the first character of the key (`\[x] = 1` has the key `[x]`);
//! * `#include`, `#tryinclude` with `"file"`, `<file>` or a bare name, globs allowed; an
//!   included file starts in the section that was current when it was included.
//!
//! Where Asterisk only logs a warning and goes on (unknown directive, directive without an
//! argument, a line without `=`, an empty key, an unterminated block comment) this parser
//! returns an error naming the file and line: a config that does not mean what it says is
//! never silently accepted.
use super::{ConfFile, ConfigError, Entry, Op, Section};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// How deep `#include`s may nest (the top file is level 0).
pub const MAX_INCLUDE_DEPTH: usize = 20;
/// Largest single file read (a config file, not a data file).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Upper bound on the memory the parsed result may use (keys, values, file names, per-entry
/// overhead), after template expansion. Inheritance can multiply entries exponentially
/// (`[b](a,a,a)`, `[c](b,b,b)`, ...); this turns that into an error instead of an OOM.
const MAX_TOTAL_BYTES: usize = 256 * 1024 * 1024;
/// Rough per-entry overhead charged against [`MAX_TOTAL_BYTES`].
const ENTRY_OVERHEAD: usize = 96;

/// Parse a file, following `#include` (globs, relative to the including file's directory).
pub fn parse_file(path: &Path) -> Result<ConfFile, ConfigError> {
    let text = match read_conf_file(path) {
        Ok(FileRead::Text(t)) => t,
        Ok(FileRead::Missing) => return Err(ConfigError::new(path, 0, "file not found")),
        Ok(FileRead::NotRegular) => return Err(ConfigError::new(path, 0, "not a regular file")),
        Err(e) => return Err(ConfigError::new(path, 0, format!("cannot read: {e}"))),
    };
    parse_str(&text, path)
}

/// Parse text as if it were the file `name` (includes resolve relative to `name`'s directory).
pub fn parse_str(text: &str, name: &Path) -> Result<ConfFile, ConfigError> {
    parse_str_limited(text, name, MAX_TOTAL_BYTES)
}

fn parse_str_limited(text: &str, name: &Path, max_bytes: usize) -> Result<ConfFile, ConfigError> {
    let mut p = Parser {
        conf: ConfFile {
            path: name.to_path_buf(),
            sections: Vec::new(),
        },
        current: None,
        last_by_key: Vec::new(),
        used_bytes: 0,
        max_bytes,
    };
    p.parse_text(text, name, 0)?;
    Ok(p.conf)
}

/// Result of trying to read one file.
enum FileRead {
    Text(String),
    Missing,
    /// A directory, device, FIFO...: Asterisk ignores those ("not a regular file").
    NotRegular,
}

/// Read a config file lossily (bytes that are not UTF-8 become U+FFFD).
/// Only regular files are read, so `#include /dev/zero` cannot hang or exhaust memory.
fn read_conf_file(path: &Path) -> std::io::Result<FileRead> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileRead::Missing),
        Err(e) => return Err(e),
    };
    if !meta.is_file() {
        return Ok(FileRead::NotRegular);
    }
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileRead::Missing),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "file larger than {} MiB",
            MAX_FILE_BYTES / (1024 * 1024)
        )));
    }
    Ok(FileRead::Text(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Asterisk's `ast_strip`: drop leading and trailing bytes below 33 (blanks and controls).
fn strip(s: &str) -> &str {
    s.trim_matches(|c: char| (c as u32) < 33)
}

/// Shorten a line for an error message.
fn excerpt(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push_str("...");
        out
    }
}

/// Remove comments from one physical line.
///
/// `open` holds the line numbers of the block comments (`;--`) still open, innermost last;
/// it carries over from line to line. Returns `None` when the whole line lies inside a block
/// comment, otherwise the text outside comments (`\;` already turned into `;`).
fn strip_comments(raw: &str, open: &mut Vec<usize>, lineno: usize) -> Option<String> {
    let b = raw.as_bytes();
    // Text kept so far; None while the line started inside a block comment that has not
    // ended yet (Asterisk's process_buf == NULL).
    let mut out: Option<String> = if open.is_empty() {
        Some(String::new())
    } else {
        None
    };
    // Start of the current kept segment (meaningful only outside block comments).
    let mut seg = 0usize;
    // Where to look for the next ';'. Asterisk deletes the backslash of `\;` in place; every
    // test below only looks at bytes at or after `pos`, which that deletion never touches, so
    // the original indices can be used and the backslash is just left out of the output.
    // All bytes looked at are ASCII, so every slice boundary is a char boundary.
    let mut pos = 0usize;
    while let Some(off) = b
        .get(pos..)
        .and_then(|rest| rest.iter().position(|&c| c == b';'))
    {
        let p = pos + off;
        if p > pos && b[p - 1] == b'\\' {
            // Escaped semicolon: a literal ';' (kept), the backslash is dropped.
            if open.is_empty() {
                if let Some(o) = out.as_mut() {
                    o.push_str(&raw[seg..p - 1]);
                }
                seg = p;
            }
            pos = p + 1;
            continue;
        }
        let block_start = b.get(p + 1) == Some(&b'-')
            && b.get(p + 2) == Some(&b'-')
            && b.get(p + 3) != Some(&b'-');
        if block_start {
            if open.is_empty() {
                if let Some(o) = out.as_mut() {
                    o.push_str(&raw[seg..p]);
                }
            }
            open.push(lineno);
            pos = p + 3;
        } else if !open.is_empty() && p >= pos + 2 && b[p - 1] == b'-' && b[p - 2] == b'-' {
            // "--;" closes the innermost block comment. (Outside any block comment Asterisk
            // would drive its nesting counter negative; here it is an ordinary `;` comment.)
            open.pop();
            pos = p + 1;
            if open.is_empty() {
                seg = pos;
                out.get_or_insert_with(String::new);
            }
        } else if open.is_empty() {
            // Plain `;` comment: the rest of the line is ignored.
            if let Some(o) = out.as_mut() {
                o.push_str(&raw[seg..p]);
            }
            return out;
        } else {
            pos = p + 1;
        }
    }
    if open.is_empty() {
        if let Some(o) = out.as_mut() {
            o.push_str(&raw[seg..]);
        }
    }
    out
}

/// Does an `#include` argument use glob syntax (GLOB_NOMAGIC: only then is it expanded)?
fn has_glob_magic(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Where a section header puts the entries that follow it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The section being declared on this line (not yet in the list).
    New,
    /// An existing section, index into `conf.sections` (`(+)`).
    Existing(usize),
}

struct Parser {
    conf: ConfFile,
    /// Asterisk's `cfg->current`: the section most recently declared or appended to.
    /// An included file starts in it.
    current: Option<usize>,
    /// Per section (same indices as `conf.sections`): key -> index of its last entry, so
    /// that `+=` is O(1) instead of a scan of the section.
    last_by_key: Vec<HashMap<String, usize>>,
    /// Memory charged so far against `max_bytes`.
    used_bytes: usize,
    /// [`MAX_TOTAL_BYTES`] (smaller in tests).
    max_bytes: usize,
}

impl Parser {
    /// Record entries `from..` of section `si` in its key index.
    fn index_entries(&mut self, si: usize, from: usize) {
        let map = &mut self.last_by_key[si];
        for (i, e) in self.conf.sections[si].entries.iter().enumerate().skip(from) {
            match map.get_mut(e.key.as_str()) {
                Some(slot) => *slot = i,
                None => {
                    map.insert(e.key.clone(), i);
                }
            }
        }
    }

    fn charge(&mut self, bytes: usize, file: &Path, line: usize) -> Result<(), ConfigError> {
        self.used_bytes = self.used_bytes.saturating_add(bytes);
        if self.used_bytes > self.max_bytes {
            return Err(ConfigError::new(
                file,
                line,
                format!(
                    "configuration too large (over {} KiB after template expansion)",
                    self.max_bytes / 1024
                ),
            ));
        }
        Ok(())
    }

    /// Parse the text of one file. `depth` is its include nesting level (top file: 0).
    fn parse_text(&mut self, text: &str, file: &Path, depth: usize) -> Result<(), ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // The section lines go to; an included file starts in the includer's current section
        // but does not change which section the includer itself is in (as in Asterisk).
        let mut cat = self.current;
        let mut open_comments: Vec<usize> = Vec::new();
        for (idx, raw) in text.split('\n').enumerate() {
            let lineno = idx + 1;
            let Some(line) = strip_comments(raw, &mut open_comments, lineno) else {
                continue;
            };
            let line = strip(&line);
            if line.is_empty() {
                continue;
            }
            self.process_line(line, lineno, file, &mut cat, depth)?;
        }
        if let Some(&start) = open_comments.last() {
            return Err(ConfigError::new(
                file,
                start,
                "unterminated block comment: ';--' without a matching '--;'",
            ));
        }
        Ok(())
    }

    fn process_line(
        &mut self,
        line: &str,
        lineno: usize,
        file: &Path,
        cat: &mut Option<usize>,
        depth: usize,
    ) -> Result<(), ConfigError> {
        if line.starts_with('[') {
            self.section_header(line, lineno, file, cat)
        } else if let Some(body) = line.strip_prefix('#') {
            self.directive(body, lineno, file, depth)
        } else {
            self.key_value(line, lineno, file, *cat)
        }
    }

    fn section_header(
        &mut self,
        line: &str,
        lineno: usize,
        file: &Path,
        cat: &mut Option<usize>,
    ) -> Result<(), ConfigError> {
        let err = |msg: String| ConfigError::new(file, lineno, msg);
        let Some(close) = line.find(']') else {
            return Err(err(format!(
                "expected ']' to close the section name in '{}'",
                excerpt(line)
            )));
        };
        let name = &line[1..close];
        let after = &line[close + 1..];
        let options = match after.strip_prefix('(') {
            None => None,
            Some(opts) => match opts.find(')') {
                Some(end) => Some(&opts[..end]),
                None => {
                    return Err(err(format!(
                        "expected ')' to close the options of section [{}]",
                        excerpt(name)
                    )))
                }
            },
        };
        self.charge(name.len() + ENTRY_OVERHEAD, file, lineno)?;
        let mut new = Section {
            name: name.to_string(),
            is_template: false,
            templates: Vec::new(),
            entries: Vec::new(),
            file: file.to_path_buf(),
            line: lineno,
        };
        let mut target = Target::New;
        // With `(+)`: where the entries added to the existing section start.
        let mut existing_from = 0usize;
        for tok in options.unwrap_or("").split(',') {
            let tok = strip(tok);
            if tok.is_empty() {
                continue;
            }
            if tok == "!" {
                match target {
                    Target::New => new.is_template = true,
                    Target::Existing(i) => self.conf.sections[i].is_template = true,
                }
            } else if let Some(filter) = tok.strip_prefix('+') {
                if !strip(filter).is_empty() {
                    return Err(err(format!(
                        "section filters in '(+{})' are not supported; use '(+)'",
                        excerpt(filter)
                    )));
                }
                if target != Target::New {
                    continue; // a second '+': already appending to that section
                }
                let Some(i) = self
                    .conf
                    .sections
                    .iter()
                    .position(|s| !s.is_template && s.name.eq_ignore_ascii_case(name))
                else {
                    return Err(err(format!(
                        "[{}](+) appends to a section, but no section [{}] was defined before",
                        excerpt(name),
                        excerpt(name)
                    )));
                };
                // What was gathered for the new section so far moves into the existing one.
                existing_from = self.conf.sections[i].entries.len();
                let existing = &mut self.conf.sections[i];
                existing.is_template |= new.is_template;
                existing.entries.append(&mut new.entries);
                existing.templates.append(&mut new.templates);
                target = Target::Existing(i);
            } else {
                let Some(base) = self
                    .conf
                    .sections
                    .iter()
                    .position(|s| s.name.eq_ignore_ascii_case(tok))
                else {
                    return Err(err(format!(
                        "unknown template '{}': no section of that name was defined before",
                        excerpt(tok)
                    )));
                };
                let cost: usize = self.conf.sections[base]
                    .entries
                    .iter()
                    .map(entry_cost)
                    .sum();
                self.charge(cost, file, lineno)?;
                let inherited = self.conf.sections[base].entries.clone();
                let base_name = self.conf.sections[base].name.clone();
                let dest = match target {
                    Target::New => &mut new,
                    Target::Existing(i) => &mut self.conf.sections[i],
                };
                dest.entries.extend(inherited);
                dest.templates.push(base_name);
            }
        }
        let idx = match target {
            Target::New => {
                self.conf.sections.push(new);
                self.last_by_key.push(HashMap::new());
                let idx = self.conf.sections.len() - 1;
                self.index_entries(idx, 0);
                idx
            }
            Target::Existing(i) => {
                self.index_entries(i, existing_from);
                i
            }
        };
        self.current = Some(idx);
        *cat = Some(idx);
        Ok(())
    }

    fn directive(
        &mut self,
        body: &str,
        lineno: usize,
        file: &Path,
        depth: usize,
    ) -> Result<(), ConfigError> {
        let err = |msg: String| ConfigError::new(file, lineno, msg);
        let name_end = body.find(|c: char| (c as u32) <= 32).unwrap_or(body.len());
        let name = &body[..name_end];
        let arg = strip(&body[name_end..]);
        let try_include = if name.eq_ignore_ascii_case("include") {
            false
        } else if name.eq_ignore_ascii_case("tryinclude") {
            true
        } else if name.eq_ignore_ascii_case("exec") {
            return Err(err("#exec is not supported".to_string()));
        } else {
            return Err(err(format!(
                "unknown directive '#{}': expected #include or #tryinclude",
                excerpt(name)
            )));
        };
        let directive = if try_include {
            "#tryinclude"
        } else {
            "#include"
        };
        // Dequote "file" and <file> (only when the closing quote is there, as Asterisk).
        let mut target = arg;
        for (open, close) in [('"', '"'), ('<', '>')] {
            if let Some(inner) = arg.strip_prefix(open) {
                if let Some(inner) = inner.strip_suffix(close) {
                    target = inner;
                } else if arg.len() == 1 {
                    target = "";
                }
            }
        }
        if target.is_empty() {
            return Err(err(format!("{directive} needs a file name")));
        }
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(err(format!(
                "{directive} \"{}\": includes nested more than {MAX_INCLUDE_DEPTH} levels \
                 deep (recursive #include?)",
                excerpt(target)
            )));
        }
        let dir = file.parent().unwrap_or(Path::new(""));
        let target_path = Path::new(target);
        let candidates: Vec<PathBuf> = if has_glob_magic(target) {
            let pattern = if target_path.is_absolute() || dir.as_os_str().is_empty() {
                target.to_string()
            } else {
                let dir = glob::Pattern::escape(&dir.to_string_lossy());
                format!("{}/{}", dir.trim_end_matches('/'), target)
            };
            let opts = glob::MatchOptions {
                case_sensitive: true,
                require_literal_separator: true,
                require_literal_leading_dot: true,
            };
            match glob::glob_with(&pattern, opts) {
                // Unreadable directories are skipped, as glob(3) without GLOB_ERR does.
                Ok(paths) => paths.filter_map(Result::ok).collect(),
                Err(e) => {
                    return Err(err(format!(
                        "{directive}: invalid glob pattern '{}': {e}",
                        excerpt(target)
                    )))
                }
            }
        } else if target_path.is_absolute() {
            vec![target_path.to_path_buf()]
        } else {
            vec![dir.join(target_path)]
        };
        let single = !has_glob_magic(target);
        let mut count = 0usize;
        for path in candidates {
            match read_conf_file(&path) {
                Ok(FileRead::Text(text)) => {
                    count += 1;
                    self.parse_text(&text, &path, depth + 1)?;
                }
                Ok(FileRead::Missing) => {}
                Ok(FileRead::NotRegular) => {
                    if single && !try_include {
                        return Err(err(format!(
                            "{directive}: '{}' is not a regular file",
                            path.display()
                        )));
                    }
                }
                Err(e) => {
                    return Err(err(format!(
                        "{directive}: cannot read '{}': {e}",
                        path.display()
                    )))
                }
            }
        }
        if count == 0 && !try_include {
            let msg = if single {
                format!(
                    "#include file '{}' not found",
                    dir.join(target_path).display()
                )
            } else {
                format!("#include pattern '{}' matches no file", excerpt(target))
            };
            return Err(err(msg));
        }
        Ok(())
    }

    fn key_value(
        &mut self,
        line: &str,
        lineno: usize,
        file: &Path,
        cat: Option<usize>,
    ) -> Result<(), ConfigError> {
        let err = |msg: String| ConfigError::new(file, lineno, msg);
        let Some(ci) = cat else {
            return Err(err(format!(
                "key outside of any section: '{}' (expected a [section] header first)",
                excerpt(line)
            )));
        };
        // A leading backslash escapes the first character of the key (which may then be
        // '[', '#' or even '=').
        let (s, skip) = match line.strip_prefix('\\') {
            Some(rest) => match rest.chars().next() {
                Some(c) if (c as u32) >= 33 => (rest, c.len_utf8()),
                _ => return Err(err(
                    "invalid escape: '\\' at the start of a line must be followed by a character"
                        .to_string(),
                )),
            },
            None => (line, 0),
        };
        let Some(eq) = s[skip..].find('=').map(|i| i + skip) else {
            return Err(err(format!(
                "expected 'key = value' or 'key => value', found '{}'",
                excerpt(line)
            )));
        };
        if eq > skip && s.as_bytes()[eq - 1] == b'+' {
            let key = strip(&s[..eq - 1]);
            let rest = &s[eq + 1..];
            if key.is_empty() {
                return Err(err("expected a key before '+='".to_string()));
            }
            // The last entry with exactly this key (case-sensitive, as Asterisk's strcmp).
            if let Some(&pos) = self.last_by_key[ci].get(key) {
                // Asterisk: previous value + everything after "+=", then trimmed. Done in
                // place so that many `+=` lines stay linear.
                self.charge(rest.len(), file, lineno)?;
                let entry = &mut self.conf.sections[ci].entries[pos];
                entry.value.push_str(rest);
                let kept = entry
                    .value
                    .trim_end_matches(|c: char| (c as u32) < 33)
                    .len();
                entry.value.truncate(kept);
                if entry.value.starts_with(|c: char| (c as u32) < 33) {
                    entry.value = strip(&entry.value).to_string();
                }
                if entry.op != Op::Object {
                    entry.op = Op::Append;
                }
                return Ok(());
            }
            // Nothing to append to: like '='.
            return self.add_entry(ci, key, strip(rest), Op::Assign, file, lineno);
        }
        let mut rest = &s[eq + 1..];
        let op = match rest.strip_prefix('>') {
            Some(r) => {
                rest = r;
                Op::Object
            }
            None => Op::Assign,
        };
        let key = strip(&s[..eq]);
        if key.is_empty() {
            return Err(err(format!(
                "expected a key before '{}'",
                if op == Op::Object { "=>" } else { "=" }
            )));
        }
        self.add_entry(ci, key, strip(rest), op, file, lineno)
    }

    fn add_entry(
        &mut self,
        ci: usize,
        key: &str,
        value: &str,
        op: Op,
        file: &Path,
        line: usize,
    ) -> Result<(), ConfigError> {
        let entry = Entry {
            key: key.to_string(),
            value: value.to_string(),
            op,
            file: file.to_path_buf(),
            line,
        };
        self.charge(entry_cost(&entry), file, line)?;
        let entries = &mut self.conf.sections[ci].entries;
        entries.push(entry);
        let from = entries.len() - 1;
        self.index_entries(ci, from);
        Ok(())
    }
}

/// Memory charged for one entry.
fn entry_cost(e: &Entry) -> usize {
    e.key.len() + e.value.len() + e.file.as_os_str().len() + ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn parse(text: &str) -> ConfFile {
        parse_str(text, Path::new("/etc/test/test.conf")).expect("parses")
    }

    fn parse_err(text: &str) -> ConfigError {
        parse_str(text, Path::new("/etc/test/test.conf")).expect_err("must fail")
    }

    fn kv(s: &Section) -> Vec<(String, String)> {
        s.entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sections_and_values() {
        let c = parse("[general]\n  bindport =  5060 \nfoo=bar\n\n[other]\nx => 1,2,3\n");
        assert_eq!(c.sections.len(), 2);
        let g = c.section("general").unwrap();
        assert_eq!(kv(g), pairs(&[("bindport", "5060"), ("foo", "bar")]));
        assert_eq!(g.line, 1);
        assert_eq!(g.entries[0].line, 2);
        assert_eq!(g.entries[0].op, Op::Assign);
        assert_eq!(g.entries[0].file, Path::new("/etc/test/test.conf"));
        let o = c.section("other").unwrap();
        assert_eq!(o.entries[0].op, Op::Object);
        assert_eq!(o.get("x"), Some("1,2,3"));
        assert_eq!(c.path, Path::new("/etc/test/test.conf"));
    }

    #[test]
    fn value_with_equals_and_empty_value() {
        let c = parse("[s]\nexten => 1,1,Set(A=B)\nempty =\nk==v\n");
        let s = c.section("s").unwrap();
        assert_eq!(s.get("exten"), Some("1,1,Set(A=B)"));
        assert_eq!(s.get("empty"), Some(""));
        assert_eq!(s.get("k"), Some("=v"));
        assert_eq!(s.entry("k").unwrap().op, Op::Assign);
    }

    #[test]
    fn crlf_and_bom_and_tabs() {
        let c = parse("\u{feff}[a]\r\n\tkey\t=\tvalue\t\r\n");
        assert_eq!(c.section("a").unwrap().get("key"), Some("value"));
    }

    #[test]
    fn same_section_twice_is_kept_twice() {
        let c = parse("[a]\nx=1\n[a]\nx=2\n");
        assert_eq!(c.sections_named("a").count(), 2);
        assert_eq!(c.section("a").unwrap().get("x"), Some("1"));
    }

    #[test]
    fn line_comments_and_escaped_semicolon() {
        let c = parse("; header\n[a] ; trailing\nk = v ; comment\npw = se\\;cret;x\nq = \\;\n");
        let a = c.section("a").unwrap();
        assert_eq!(kv(a), pairs(&[("k", "v"), ("pw", "se;cret"), ("q", ";")]));
    }

    #[test]
    fn block_comments_multi_line_and_inline() {
        let text = "[a]\nk1 = v1\n;-- start\nk2 = hidden\n--;\nk3 = a ;-- inline --; b\n\
                    ;-- x --; k4 = after\nk5 = v5 ;-- opens\nhidden = 1\n closes --; k6 = six\n";
        let c = parse(text);
        let a = c.section("a").unwrap();
        assert_eq!(
            kv(a),
            pairs(&[
                ("k1", "v1"),
                ("k3", "a  b"),
                ("k4", "after"),
                ("k5", "v5"),
                ("k6", "six")
            ])
        );
        assert_eq!(a.entry("k6").unwrap().line, 10);
    }

    #[test]
    fn block_comments_nest() {
        let c = parse("[a]\n;-- outer\n;-- inner --;\nstill = hidden\n--;\nshown = yes\n");
        assert_eq!(kv(c.section("a").unwrap()), pairs(&[("shown", "yes")]));
    }

    #[test]
    fn triple_dash_is_a_line_comment_not_a_block() {
        let c = parse("[a]\n;--- banner ---\nk = v\n");
        assert_eq!(c.section("a").unwrap().get("k"), Some("v"));
    }

    #[test]
    fn close_marker_outside_block_is_plain_comment() {
        let c = parse("[a]\nk = v--; c\nm = n\n");
        let a = c.section("a").unwrap();
        assert_eq!(kv(a), pairs(&[("k", "v--"), ("m", "n")]));
    }

    #[test]
    fn unterminated_block_comment_is_error() {
        let e = parse_err("[a]\nk = v\n;-- never closed\nx = y\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("unterminated"), "{e}");
    }

    #[test]
    fn templates_and_inheritance() {
        let text = "[base](!)\ntype = friend\nhost = dynamic\n\
                    [more](!,base)\ncontext = internal\n\
                    [100](more)\nsecret = s100\nhost = 10.0.0.1\n";
        let c = parse(text);
        let base = &c.sections[0];
        assert!(base.is_template);
        let more = &c.sections[1];
        assert!(more.is_template);
        assert_eq!(more.templates, vec!["base".to_string()]);
        assert_eq!(
            kv(more),
            pairs(&[
                ("type", "friend"),
                ("host", "dynamic"),
                ("context", "internal")
            ])
        );
        let s = c.section("100").unwrap();
        assert!(!s.is_template);
        assert_eq!(s.templates, vec!["more".to_string()]);
        assert_eq!(
            kv(s),
            pairs(&[
                ("type", "friend"),
                ("host", "dynamic"),
                ("context", "internal"),
                ("secret", "s100"),
                ("host", "10.0.0.1"),
            ])
        );
        assert_eq!(s.get("host"), Some("10.0.0.1"));
        // inherited entries keep the location they were written at
        assert_eq!(s.entries[0].line, 2);
        assert_eq!(c.real_sections().count(), 1);
        assert!(c.section("base").is_none());
    }

    #[test]
    fn multiple_templates_in_order() {
        let c = parse("[t1](!)\na=1\n[t2](!)\nb=2\n[x](t2, t1)\nc=3\n");
        let x = c.section("x").unwrap();
        assert_eq!(kv(x), pairs(&[("b", "2"), ("a", "1"), ("c", "3")]));
        assert_eq!(x.templates, vec!["t2".to_string(), "t1".to_string()]);
    }

    #[test]
    fn inherit_from_plain_section_case_insensitive() {
        let c = parse("[Base]\na=1\n[x](base)\n");
        assert_eq!(c.section("x").unwrap().get("a"), Some("1"));
        assert_eq!(c.section("x").unwrap().templates, vec!["Base".to_string()]);
    }

    #[test]
    fn unknown_template_is_error_with_line() {
        let e = parse_err("[a]\nx=1\n\n[b](nope)\n");
        assert_eq!(e.line, 4);
        assert_eq!(e.file, Path::new("/etc/test/test.conf"));
        assert!(e.message.contains("unknown template 'nope'"), "{e}");
        assert!(e.to_string().starts_with("/etc/test/test.conf:4: "), "{e}");
    }

    #[test]
    fn template_must_be_defined_before_use() {
        let e = parse_err("[b](t)\n[t](!)\n");
        assert_eq!(e.line, 1);
    }

    #[test]
    fn append_to_section_with_plus() {
        let c = parse("[a]\nx=1\n[b]\ny=2\n[a](+)\nz=3\n");
        assert_eq!(c.sections.len(), 2);
        let a = c.section("a").unwrap();
        assert_eq!(kv(a), pairs(&[("x", "1"), ("z", "3")]));
        assert_eq!(a.entry("z").unwrap().line, 6);
    }

    #[test]
    fn append_section_with_template() {
        let c = parse("[t](!)\nq=9\n[a]\nx=1\n[a](t,+)\nz=3\n");
        let a = c.section("a").unwrap();
        assert_eq!(kv(a), pairs(&[("x", "1"), ("q", "9"), ("z", "3")]));
        assert_eq!(a.templates, vec!["t".to_string()]);
    }

    #[test]
    fn append_to_missing_section_is_error() {
        let e = parse_err("[a]\nx=1\n[b](+)\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("[b]"), "{e}");
    }

    #[test]
    fn append_to_first_of_duplicates() {
        let c = parse("[a]\nx=1\n[a]\nx=2\n[a](+)\ny=3\n");
        let all: Vec<_> = c.sections_named("a").collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].get("y"), Some("3"));
        assert_eq!(all[1].get("y"), None);
    }

    #[test]
    fn plus_equals_appends() {
        let c = parse("[a]\nallow = ulaw\nallow +=,alaw\nnew += fresh\nx = 1\nx = 2\nx +=3\n");
        let a = c.section("a").unwrap();
        assert_eq!(a.get("allow"), Some("ulaw,alaw"));
        assert_eq!(a.entry("allow").unwrap().op, Op::Append);
        assert_eq!(a.entry("allow").unwrap().line, 2);
        assert_eq!(a.get("new"), Some("fresh"));
        assert_eq!(a.entry("new").unwrap().op, Op::Assign);
        assert_eq!(a.get_all("x").collect::<Vec<_>>(), vec!["1", "23"]);
        assert_eq!(a.entries.len(), 4);
    }

    #[test]
    fn plus_equals_after_section_append_and_case_sensitive() {
        let c = parse("[a]\nk = 1\n[b]\n[a](+)\nk = 2\nk +=3\nK += x\n");
        let a = c.section("a").unwrap();
        assert_eq!(kv(a), pairs(&[("k", "1"), ("k", "23"), ("K", "x")]));
        let c = parse("[t](!)\nk = 1\n[a]\n[a](t,+)\nk +=2\n");
        assert_eq!(c.section("a").unwrap().get("k"), Some("12"));
    }

    #[test]
    fn plus_equals_onto_empty_value_trims() {
        let c = parse("[a]\nk =\nk +=   v  \n");
        assert_eq!(c.section("a").unwrap().get("k"), Some("v"));
    }

    #[test]
    fn many_escapes_and_appends_stay_fast() {
        let mut text = String::from("[a]\nk = ");
        text.push_str(&"x\\;".repeat(100_000));
        text.push('\n');
        for _ in 0..50_000 {
            text.push_str("k +=y\n");
        }
        let c = parse(&text);
        let v = c.section("a").unwrap().get("k").unwrap();
        assert_eq!(v.len(), 200_000 + 50_000);
        assert!(v.starts_with("x;x;"));
    }

    #[test]
    fn plus_equals_keeps_the_blank_after_the_operator() {
        // Asterisk appends the raw text after "+=": "a" + " b" = "a b".
        let c = parse("[s]\nk = a\nk += b\n");
        assert_eq!(c.section("s").unwrap().get("k"), Some("a b"));
    }

    #[test]
    fn plus_equals_on_inherited_value() {
        let c = parse("[t](!)\ncodecs = ulaw\n[p](t)\ncodecs +=,g722\n");
        assert_eq!(c.section("p").unwrap().get("codecs"), Some("ulaw,g722"));
        assert_eq!(c.sections[0].get("codecs"), Some("ulaw"));
    }

    #[test]
    fn plus_equals_on_object_keeps_object() {
        let c = parse("[s]\nexten => 1,1,Dial(\nexten +=SIP/a)\n");
        let e = c.section("s").unwrap().entry("exten").unwrap();
        assert_eq!(e.value, "1,1,Dial(SIP/a)");
        assert_eq!(e.op, Op::Object);
    }

    #[test]
    fn escaped_key_first_char() {
        let c = parse("[s]\n\\[k] = 1\n\\#x => 2\n\\==3\n");
        let s = c.section("s").unwrap();
        assert_eq!(kv(s), pairs(&[("[k]", "1"), ("#x", "2"), ("=", "3")]));
        let e = parse_err("[s]\n\\ x = 1\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("escape"), "{e}");
    }

    #[test]
    fn key_outside_section_is_error() {
        let e = parse_err("; comment\n\nfoo = bar\n[a]\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("key outside of any section"), "{e}");
    }

    #[test]
    fn malformed_header_is_error() {
        let e = parse_err("[ok]\n[abc\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("expected ']'"), "{e}");
        let e = parse_err("[abc](!\n");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("expected ')'"), "{e}");
    }

    #[test]
    fn header_trailing_text_ignored_like_asterisk() {
        let c = parse("[abc] junk\nk=v\n[t](!) more\n");
        assert_eq!(c.section("abc").unwrap().get("k"), Some("v"));
        assert!(c.sections[1].is_template);
    }

    #[test]
    fn line_without_equals_is_error() {
        let e = parse_err("[a]\nk = v\njustaword\n");
        assert_eq!(e.line, 3);
        assert!(
            e.message
                .contains("expected 'key = value' or 'key => value'"),
            "{e}"
        );
        let e = parse_err("[a]\n = v\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("expected a key"), "{e}");
    }

    #[test]
    fn exec_and_unknown_directives_are_errors() {
        let e = parse_err("[a]\n#exec /bin/echo\n");
        assert_eq!(e.line, 2);
        assert_eq!(e.message, "#exec is not supported");
        let e = parse_err("[a]\n#frobnicate x\n");
        assert!(e.message.contains("unknown directive '#frobnicate'"), "{e}");
        let e = parse_err("#include\n");
        assert!(e.message.contains("needs a file name"), "{e}");
        let e = parse_err("#include \"\"\n");
        assert!(e.message.contains("needs a file name"), "{e}");
    }

    #[test]
    fn error_display_format() {
        let e = ConfigError::new(Path::new("x.conf"), 7, "boom");
        assert_eq!(e.to_string(), "x.conf:7: boom");
    }

    #[test]
    fn include_forms_relative_to_including_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        fs::write(dir.path().join("a.conf"), "a = 1\n").unwrap();
        fs::write(dir.path().join("b.conf"), "[b]\nb = 2\n").unwrap();
        fs::write(sub.join("c.conf"), "[c]\n#include d.conf\n").unwrap();
        fs::write(sub.join("d.conf"), "d = 4\n").unwrap();
        let main = dir.path().join("main.conf");
        fs::write(
            &main,
            "[m]\n#include \"a.conf\"\nafter = yes\n#include <b.conf>\n#include sub/c.conf\n",
        )
        .unwrap();
        let c = parse_file(&main).unwrap();
        let m = c.section("m").unwrap();
        // the included file continues the includer's section; the includer stays in it
        assert_eq!(kv(m), pairs(&[("a", "1"), ("after", "yes")]));
        assert_eq!(m.entry("a").unwrap().file, dir.path().join("a.conf"));
        assert_eq!(m.entry("a").unwrap().line, 1);
        assert_eq!(c.section("b").unwrap().get("b"), Some("2"));
        let cs = c.section("c").unwrap();
        assert_eq!(cs.get("d"), Some("4"));
        assert_eq!(cs.entry("d").unwrap().file, sub.join("d.conf"));
        assert_eq!(c.path, main);
    }

    #[test]
    fn next_include_starts_in_section_left_by_previous_include() {
        // Asterisk: an included file starts in cfg->current, which the previous include moved.
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("one.conf"), "[one]\n").unwrap();
        fs::write(dir.path().join("two.conf"), "x = 1\n").unwrap();
        let main = dir.path().join("main.conf");
        fs::write(&main, "[m]\n#include one.conf\n#include two.conf\ny = 2\n").unwrap();
        let c = parse_file(&main).unwrap();
        assert_eq!(c.section("one").unwrap().get("x"), Some("1"));
        assert_eq!(c.section("m").unwrap().get("y"), Some("2"));
    }

    #[test]
    fn parse_str_resolves_includes_against_name_dir() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("inc.conf"), "[i]\nk = v\n").unwrap();
        let c = parse_str("#include inc.conf\n", &dir.path().join("virtual.conf")).unwrap();
        assert_eq!(c.section("i").unwrap().get("k"), Some("v"));
    }

    #[test]
    fn missing_include_is_error_at_include_line() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("main.conf");
        fs::write(&main, "[a]\nk=v\n#include nothere.conf\n").unwrap();
        let e = parse_file(&main).unwrap_err();
        assert_eq!(e.file, main);
        assert_eq!(e.line, 3);
        assert!(e.message.contains("nothere.conf"), "{e}");
        assert!(e.message.contains("not found"), "{e}");
    }

    #[test]
    fn tryinclude_missing_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("main.conf");
        fs::write(
            &main,
            "[a]\n#tryinclude nothere.conf\n#tryinclude none/*.conf\nk=v\n",
        )
        .unwrap();
        let c = parse_file(&main).unwrap();
        assert_eq!(c.section("a").unwrap().get("k"), Some("v"));
    }

    #[test]
    fn error_inside_included_file_names_that_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("bad.conf"), "[x]\n\nnot a pair\n").unwrap();
        let main = dir.path().join("main.conf");
        fs::write(&main, "#include bad.conf\n").unwrap();
        let e = parse_file(&main).unwrap_err();
        assert_eq!(e.file, dir.path().join("bad.conf"));
        assert_eq!(e.line, 3);
    }

    #[test]
    fn glob_include_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("conf.d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("20-b.conf"), "[b]\nk = 2\n").unwrap();
        fs::write(d.join("10-a.conf"), "[a]\nk = 1\n").unwrap();
        fs::write(d.join("30-c.txt"), "[c]\nk = 3\n").unwrap();
        fs::write(d.join(".hidden.conf"), "[h]\n").unwrap();
        fs::create_dir(d.join("dir.conf")).unwrap();
        let main = dir.path().join("main.conf");
        fs::write(&main, "#include conf.d/*.conf\n").unwrap();
        let c = parse_file(&main).unwrap();
        let names: Vec<_> = c.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(c.section("b").unwrap().entries[0].file, d.join("20-b.conf"));
    }

    #[test]
    fn glob_matching_nothing_is_error_for_include() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("main.conf");
        fs::write(&main, "[a]\n#include conf.d/*.conf\n").unwrap();
        let e = parse_file(&main).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("matches no file"), "{e}");
    }

    #[test]
    fn glob_in_directory_name_is_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("we[ir]d");
        fs::create_dir(&odd).unwrap();
        fs::write(odd.join("x.conf"), "[x]\n").unwrap();
        let main = odd.join("main.conf");
        fs::write(&main, "#include x*.conf\n").unwrap();
        let c = parse_file(&main).unwrap();
        assert!(c.section("x").is_some());
    }

    #[test]
    fn recursive_include_hits_depth_limit() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("loop.conf");
        fs::write(&main, "[a]\n#include loop.conf\n").unwrap();
        let e = parse_file(&main).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("nested more than 20"), "{e}");
        // also for #tryinclude
        fs::write(&main, "[a]\n#tryinclude loop.conf\n").unwrap();
        assert!(parse_file(&main).is_err());
    }

    #[test]
    fn include_depth_twenty_is_allowed() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_INCLUDE_DEPTH {
            fs::write(
                dir.path().join(format!("f{i}.conf")),
                format!("#include f{}.conf\n", i + 1),
            )
            .unwrap();
        }
        fs::write(
            dir.path().join(format!("f{MAX_INCLUDE_DEPTH}.conf")),
            "[deep]\n",
        )
        .unwrap();
        let c = parse_file(&dir.path().join("f0.conf")).unwrap();
        assert!(c.section("deep").is_some());
        // one more level fails
        fs::write(
            dir.path().join(format!("f{MAX_INCLUDE_DEPTH}.conf")),
            format!("#include f{}.conf\n", MAX_INCLUDE_DEPTH + 1),
        )
        .unwrap();
        fs::write(
            dir.path().join(format!("f{}.conf", MAX_INCLUDE_DEPTH + 1)),
            "[deep]\n",
        )
        .unwrap();
        assert!(parse_file(&dir.path().join("f0.conf")).is_err());
    }

    #[test]
    fn include_of_directory_or_device_is_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        let main = dir.path().join("main.conf");
        fs::write(&main, "#include d\n").unwrap();
        let e = parse_file(&main).unwrap_err();
        assert!(e.message.contains("not a regular file"), "{e}");
        fs::write(&main, "#include /dev/zero\n").unwrap();
        assert!(parse_file(&main).is_err());
        fs::write(&main, "#tryinclude /dev/zero\n").unwrap();
        assert!(parse_file(&main).is_ok());
    }

    #[test]
    fn parse_file_missing_and_non_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.conf");
        let e = parse_file(&p).unwrap_err();
        assert_eq!(e.file, p);
        let bin = dir.path().join("bin.conf");
        fs::write(&bin, b"[a]\nk = caf\xe9\xff\n").unwrap();
        let c = parse_file(&bin).unwrap();
        assert_eq!(
            c.section("a").unwrap().get("k"),
            Some("caf\u{fffd}\u{fffd}")
        );
    }

    #[test]
    fn load_optional() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ConfFile::load_optional(dir.path(), "none.conf")
            .unwrap()
            .is_none());
        fs::write(dir.path().join("x.conf"), "[a]\n").unwrap();
        assert!(ConfFile::load_optional(dir.path(), "x.conf")
            .unwrap()
            .is_some());
    }

    #[test]
    fn template_explosion_is_bounded() {
        let mut text = String::from("[t0]\nk = ");
        text.push_str(&"x".repeat(1000));
        text.push('\n');
        for i in 1..40 {
            let prev = format!("t{}", i - 1);
            text.push_str(&format!("[t{i}]({prev},{prev},{prev},{prev})\n"));
        }
        let e = parse_str_limited(&text, Path::new("t.conf"), 1024 * 1024).unwrap_err();
        assert!(e.message.contains("too large"), "{e}");
        // a few levels stay well inside the limit
        let ok: String = text.lines().take(6).collect::<Vec<_>>().join("\n");
        let c = parse_str_limited(&ok, Path::new("t.conf"), 1024 * 1024).unwrap();
        assert_eq!(c.sections.last().unwrap().entries.len(), 4usize.pow(4));
    }

    #[test]
    fn never_panics_on_odd_input() {
        let samples = [
            "",
            "[",
            "]",
            "[]",
            "[](",
            "[]()",
            "[a](,,,)",
            "[a](+",
            "\\",
            "[a]\n\\",
            "[a]\n\\é=1",
            "[a]\n+=",
            "[a]\n=>",
            "#",
            "# ",
            "#include \"",
            "#include <",
            "#include [",
            "#tryinclude [",
            ";",
            ";-",
            ";--",
            ";--;",
            "--;",
            "\\;",
            ";--\n--;",
            "[a]\nk=v\\",
            "[a]\nk=\u{0}\u{1}",
            "[é]\né=ü;--ö--;ä",
            "[a]\n\u{feff}x=1",
        ];
        for s in samples {
            let _ = parse_str(s, Path::new("/nonexistent-dir/x.conf"));
            let _ = parse_str(s, Path::new(""));
        }
        let c = parse_str("[]\n=1\n", Path::new("x.conf"));
        assert!(c.is_err());
        let c = parse_str("[]\nk=1\n", Path::new("x.conf")).unwrap();
        assert_eq!(c.sections[0].name, "");
    }

    #[test]
    fn pseudo_random_inputs_do_not_panic() {
        // A tiny deterministic generator over the dialect's significant characters.
        let alphabet: &[&str] = &[
            "[",
            "]",
            "(",
            ")",
            "!",
            "+",
            ",",
            "=",
            ">",
            ";",
            "-",
            "\\",
            "#",
            "include ",
            "tryinclude ",
            "\"",
            "<",
            "*",
            "\n",
            " ",
            "a",
            "b",
            "é",
            "\r",
            "\u{0}",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            let mut s = String::new();
            let len = (state % 40) as usize;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push_str(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let _ = parse_str(&s, Path::new("/nonexistent-dir/fuzz.conf"));
            state = state.wrapping_add(1);
        }
    }
}
