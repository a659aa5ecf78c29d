//! Grammars for the local recognizers: what callers are expected to say, and the semantic value
//! (tag) each phrase stands for.
//!
//! Two formats, both expanded into a flat list of (phrase, tag):
//! - **Phrase lists** (`.txt`, `.gram`): one phrase per line, `phrase = tag`, alternatives
//!   `a | b = tag`, `#` comments, blank lines ignored.
//! - **SRGS XML** (`.xml`, `.grxml`, or any file starting with `<`), the common subset:
//!   `<grammar root=...>`, `<rule id=...>`, `<one-of>`, `<item repeat="n" | "n-m" | "n-">`,
//!   `<ruleref uri="#id"/>` (and `special="NULL|VOID|GARBAGE"`), `<token>`, `<tag>` and text.
//!   Tags: a literal (`sales`), `out = "v"` (replace), `out += "v"` / `out = out + "v"`
//!   (append), `out.key = "v"` (adds `key=v`). Tags along a phrase's path are applied in order.
//!
//! The XML is read by a small tolerant parser written here: Cargo.toml has no XML crate, and
//! grammars need only elements, attributes, text, comments, CDATA and the five entities.
//!
//! Matching ([`Grammar::best_match`]) normalises the transcript (lowercase, punctuation
//! stripped, number words <-> digits) and aligns it to every phrase with a token-level edit
//! distance whose substitution cost is the characters' edit distance, letting the phrase sit
//! inside a longer transcript ("um, sales please" finds "sales").

use std::collections::HashMap;
use std::path::Path;

/// Most phrases a grammar may expand to (SRGS repeats multiply quickly).
pub const MAX_EXPANSIONS: usize = 20_000;
/// Largest repeat count expanded for an open repeat (`repeat="1-"`).
const OPEN_REPEAT_MAX: u32 = 4;
/// Deepest rule reference chain (guards against recursive grammars).
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrammarError {
    #[error("cannot read grammar {path}: {error}")]
    Io { path: String, error: String },
    #[error("grammar line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("grammar: {0}")]
    Invalid(String),
}

fn syntax(line: usize, message: impl Into<String>) -> GrammarError {
    GrammarError::Syntax {
        line,
        message: message.into(),
    }
}

/// One expanded phrase.
#[derive(Debug, Clone, PartialEq)]
pub struct GrammarEntry {
    /// The phrase as written (whitespace collapsed).
    pub phrase: String,
    /// Semantic value, if the grammar gave one.
    pub tag: Option<String>,
    /// Normalised tokens used for matching.
    tokens: Vec<String>,
}

impl GrammarEntry {
    pub fn new(phrase: &str, tag: Option<String>) -> GrammarEntry {
        let phrase = phrase.split_whitespace().collect::<Vec<_>>().join(" ");
        GrammarEntry {
            tokens: normalize(&phrase),
            phrase,
            tag,
        }
    }
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }
    /// The value a recognizer reports: the tag when there is one, else the phrase.
    pub fn value(&self) -> &str {
        self.tag.as_deref().unwrap_or(&self.phrase)
    }
}

/// A match of a transcript against a grammar.
#[derive(Debug, Clone, PartialEq)]
pub struct GrammarMatch {
    pub grammar: String,
    pub phrase: String,
    pub tag: Option<String>,
    /// 0..=1000.
    pub confidence: i32,
}

impl GrammarMatch {
    pub fn value(&self) -> &str {
        self.tag.as_deref().unwrap_or(&self.phrase)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grammar {
    pub name: String,
    pub entries: Vec<GrammarEntry>,
}

impl Grammar {
    /// Load by extension: `.xml`/`.grxml` SRGS, `.txt`/`.gram` phrase list; other names are
    /// sniffed (a first non-blank `<` means XML).
    pub fn load(name: &str, path: &Path) -> Result<Grammar, GrammarError> {
        let text = std::fs::read_to_string(path).map_err(|e| GrammarError::Io {
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "xml" | "grxml" | "srgs" => Grammar::parse_srgs(name, &text),
            "txt" | "gram" => Grammar::parse_phrase_list(name, &text),
            _ => Grammar::parse(name, &text),
        }
    }

    /// Parse text in either format (sniffed).
    pub fn parse(name: &str, text: &str) -> Result<Grammar, GrammarError> {
        if text.trim_start().starts_with('<') {
            Grammar::parse_srgs(name, text)
        } else {
            Grammar::parse_phrase_list(name, text)
        }
    }

    /// The phrase-list format.
    pub fn parse_phrase_list(name: &str, text: &str) -> Result<Grammar, GrammarError> {
        if text.trim_start().starts_with("#ABNF") {
            return Err(GrammarError::Invalid(
                "SRGS ABNF grammars are not supported; use SRGS XML or a phrase list".into(),
            ));
        }
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = match raw.find('#') {
                Some(p) => &raw[..p],
                None => raw,
            }
            .trim();
            if line.is_empty() {
                continue;
            }
            let (phrases, tag) = match line.split_once('=') {
                Some((p, t)) => {
                    let t = t.trim();
                    if t.is_empty() {
                        return Err(syntax(i + 1, "empty tag after '='"));
                    }
                    (p, Some(t.to_string()))
                }
                None => (line, None),
            };
            for p in phrases.split('|') {
                let p = p.trim();
                if p.is_empty() {
                    return Err(syntax(i + 1, "empty phrase"));
                }
                let e = GrammarEntry::new(p, tag.clone());
                if e.tokens.is_empty() {
                    return Err(syntax(i + 1, format!("phrase '{p}' has no words")));
                }
                entries.push(e);
            }
        }
        Grammar::finish(name, entries)
    }

    /// The SRGS XML subset.
    pub fn parse_srgs(name: &str, text: &str) -> Result<Grammar, GrammarError> {
        let root = xml::parse(text)?;
        if local(&root.name) != "grammar" {
            return Err(syntax(
                root.line,
                format!("root element is <{}>, expected <grammar>", root.name),
            ));
        }
        if root
            .attr("mode")
            .is_some_and(|m| m.eq_ignore_ascii_case("dtmf"))
        {
            return Err(GrammarError::Invalid(
                "DTMF-mode grammars are not supported".into(),
            ));
        }
        let mut rules: HashMap<String, &xml::Element> = HashMap::new();
        let mut first_rule = None;
        for child in root.elements() {
            if local(&child.name) == "rule" {
                let id = child
                    .attr("id")
                    .ok_or_else(|| syntax(child.line, "<rule> without id"))?
                    .to_string();
                first_rule.get_or_insert(id.clone());
                rules.insert(id, child);
            }
        }
        let root_id = root
            .attr("root")
            .map(str::to_string)
            .or(first_rule)
            .ok_or_else(|| GrammarError::Invalid("grammar has no rules".into()))?;
        let rule = rules
            .get(root_id.as_str())
            .ok_or_else(|| GrammarError::Invalid(format!("root rule '{root_id}' not found")))?;
        let ctx = Expander { rules: &rules };
        let paths = ctx.children(&rule.children, 0)?;
        let mut entries = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for p in paths {
            let phrase = p.words.join(" ");
            let e = GrammarEntry::new(&phrase, p.tag.render());
            if e.tokens.is_empty() || !seen.insert((e.tokens.clone(), e.tag.clone())) {
                continue;
            }
            entries.push(e);
        }
        Grammar::finish(name, entries)
    }

    fn finish(name: &str, entries: Vec<GrammarEntry>) -> Result<Grammar, GrammarError> {
        if entries.is_empty() {
            return Err(GrammarError::Invalid(format!(
                "grammar '{name}' has no phrases"
            )));
        }
        Ok(Grammar {
            name: name.to_string(),
            entries,
        })
    }

    /// Distinct phrases, in grammar order, as short sentences for a recognizer prompt
    /// ("Sales. Technical support."), at most `max_chars`. Sentences rather than a comma list:
    /// with a comma list Whisper tends to continue the list ("sales, sales, sales").
    pub fn prompt_text(&self, max_chars: usize) -> String {
        let mut out = String::new();
        let mut seen = std::collections::HashSet::new();
        for e in &self.entries {
            if !seen.insert(e.phrase.as_str()) {
                continue;
            }
            let mut chars = e.phrase.chars();
            let Some(first) = chars.next() else { continue };
            let sentence: String = first
                .to_uppercase()
                .chain(chars)
                .chain(std::iter::once('.'))
                .collect();
            let sep = if out.is_empty() { "" } else { " " };
            if out.len() + sep.len() + sentence.len() > max_chars {
                break;
            }
            out.push_str(sep);
            out.push_str(&sentence);
        }
        out
    }

    /// The best phrase for `text` with confidence >= `threshold` (0..=1000).
    pub fn best_match(&self, text: &str, threshold: i32) -> Option<GrammarMatch> {
        self.matches(text, threshold, 1).into_iter().next()
    }

    /// Up to `n` matches, best first, one per distinct value (tag or phrase).
    pub fn matches(&self, text: &str, threshold: i32, n: usize) -> Vec<GrammarMatch> {
        let tokens = normalize(text);
        if tokens.is_empty() || n == 0 {
            return Vec::new();
        }
        let mut scored: Vec<(i32, usize)> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (similarity(&e.tokens, &tokens), i))
            .filter(|(c, _)| *c >= threshold)
            .collect();
        // Best confidence first; among equals, the longer phrase (more specific), then order.
        scored.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(
                    self.entries[b.1]
                        .tokens
                        .len()
                        .cmp(&self.entries[a.1].tokens.len()),
                )
                .then(a.1.cmp(&b.1))
        });
        let mut out: Vec<GrammarMatch> = Vec::new();
        for (c, i) in scored {
            let e = &self.entries[i];
            if out.iter().any(|m| m.value() == e.value()) {
                continue;
            }
            out.push(GrammarMatch {
                grammar: self.name.clone(),
                phrase: e.phrase.clone(),
                tag: e.tag.clone(),
                confidence: c,
            });
            if out.len() == n {
                break;
            }
        }
        out
    }
}

/// Best matches across several grammars (active grammars of a session).
pub fn match_grammars(
    grammars: &[&Grammar],
    text: &str,
    threshold: i32,
    n: usize,
) -> Vec<GrammarMatch> {
    let mut all: Vec<GrammarMatch> = grammars
        .iter()
        .flat_map(|g| g.matches(text, threshold, n))
        .collect();
    all.sort_by_key(|m| std::cmp::Reverse(m.confidence));
    all.truncate(n);
    all
}

// ---------------------------------------------------------------------------------------------
// Normalisation and similarity

const DIGIT_WORDS: [(&str, &str); 12] = [
    ("zero", "0"),
    ("oh", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("niner", "9"),
];

/// Lowercase, strip punctuation (apostrophes vanish, other punctuation splits words), digit
/// words become digits and digit strings split into single digits ("1234" == "one two three
/// four"). Bracketed annotations such as `[BLANK_AUDIO]` or `(music)` are dropped.
pub fn normalize(text: &str) -> Vec<String> {
    let mut cleaned = String::with_capacity(text.len());
    let mut depth = 0i32;
    for ch in text.chars() {
        match ch {
            '[' | '(' | '{' => depth += 1,
            ']' | ')' | '}' => depth = (depth - 1).max(0),
            _ if depth > 0 => {}
            '\'' | '\u{2019}' => {}
            c if c.is_alphanumeric() => cleaned.extend(c.to_lowercase()),
            _ => cleaned.push(' '),
        }
    }
    let mut out = Vec::new();
    for word in cleaned.split_whitespace() {
        if let Some((_, d)) = DIGIT_WORDS.iter().find(|(w, _)| *w == word) {
            out.push((*d).to_string());
        } else if word.chars().all(|c| c.is_ascii_digit()) {
            out.extend(word.chars().map(|c| c.to_string()));
        } else if word.chars().any(|c| c.is_ascii_digit())
            && word.chars().all(|c| c.is_ascii_alphanumeric())
        {
            // "2nd", "4g": split digits from letters.
            let mut cur = String::new();
            for c in word.chars() {
                if c.is_ascii_digit() {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                    out.push(c.to_string());
                } else {
                    cur.push(c);
                }
            }
            if !cur.is_empty() {
                out.push(cur);
            }
        } else {
            out.push(word.to_string());
        }
    }
    out
}

fn char_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// American Soundex code of a word (letters only; empty when it has none).
fn soundex(word: &str) -> String {
    fn code(c: char) -> u8 {
        match c {
            'b' | 'f' | 'p' | 'v' => b'1',
            'c' | 'g' | 'j' | 'k' | 'q' | 's' | 'x' | 'z' => b'2',
            'd' | 't' => b'3',
            'l' => b'4',
            'm' | 'n' => b'5',
            'r' => b'6',
            'h' | 'w' => b'h',
            _ => b'0', // vowels, y
        }
    }
    let letters: Vec<char> = word
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let Some(&first) = letters.first() else {
        return String::new();
    };
    let mut out = vec![first.to_ascii_uppercase() as u8];
    let mut last = code(first);
    for &c in &letters[1..] {
        let k = code(c);
        if k == b'h' {
            continue; // h and w do not separate equal codes
        }
        if k != b'0' && k != last {
            out.push(k);
            if out.len() == 4 {
                break;
            }
        }
        last = k;
    }
    while out.len() < 4 {
        out.push(b'0');
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Cost of replacing one word by another: 0 when equal, up to 1 when unrelated. Spelling
/// distance, lowered for words that sound alike (Soundex): recognizers confuse "sales" and
/// "sails", "billing" and "feeling".
fn word_cost(a: &str, b: &str) -> f64 {
    if a == b {
        return 0.0;
    }
    // Single characters (digits above all) never "almost" match another one.
    if a.chars().count() == 1 || b.chars().count() == 1 {
        return 1.0;
    }
    let len = a.chars().count().max(b.chars().count());
    let spelled = char_distance(a, b) as f64 / len as f64;
    let (sa, sb) = (soundex(a), soundex(b));
    let sounded = if sa.is_empty() || sb.is_empty() {
        1.0
    } else if sa == sb {
        0.25
    } else if sa[1..] == sb[1..] && sa[1..] != *"000" {
        0.5
    } else {
        1.0
    };
    spelled.min(sounded)
}

/// Confidence (0..=1000) that `text` says `phrase`: a semi-global alignment (transcript words
/// before and after the phrase are free), scaled down a little when the phrase covers only part
/// of the transcript.
pub fn similarity(phrase: &[String], text: &[String]) -> i32 {
    let m = phrase.len();
    let n = text.len();
    if m == 0 || n == 0 {
        return 0;
    }
    // d[i][j]: cost of aligning phrase[..i] ending at text[..j]; row 0 is free (skip prefix).
    let mut prev = vec![0.0f64; n + 1];
    let mut cur = vec![0.0f64; n + 1];
    // Track how many transcript words the best alignment spans, to compute coverage.
    let mut prev_span = vec![0usize; n + 1];
    let mut cur_span = vec![0usize; n + 1];
    for i in 1..=m {
        cur[0] = i as f64;
        cur_span[0] = 0;
        for j in 1..=n {
            let sub = prev[j - 1] + word_cost(&phrase[i - 1], &text[j - 1]);
            let del = prev[j] + 1.0; // phrase word missing from the transcript
            let ins = cur[j - 1] + 1.0; // extra transcript word inside the phrase
            if sub <= del && sub <= ins {
                cur[j] = sub;
                cur_span[j] = prev_span[j - 1] + 1;
            } else if del <= ins {
                cur[j] = del;
                cur_span[j] = prev_span[j];
            } else {
                cur[j] = ins;
                cur_span[j] = cur_span[j - 1] + 1;
            }
        }
        std::mem::swap(&mut prev, &mut cur);
        std::mem::swap(&mut prev_span, &mut cur_span);
    }
    let (best_j, cost) =
        (1..=n).map(|j| (j, prev[j])).fold(
            (0, f64::INFINITY),
            |acc, x| if x.1 < acc.1 { x } else { acc },
        );
    let sim = (1.0 - cost / m as f64).max(0.0);
    let span = prev_span[best_j].max(1);
    let coverage = (span as f64 / n as f64).min(1.0);
    let conf = sim * (0.8 + 0.2 * coverage);
    (conf * 1000.0).round().clamp(0.0, 1000.0) as i32
}

// ---------------------------------------------------------------------------------------------
// SRGS expansion

/// What a stretch of a path does to the semantic result `out`.
#[derive(Debug, Clone, Default, PartialEq)]
enum Out {
    #[default]
    Keep,
    Append(String),
    Replace(String),
}

impl Out {
    /// `self` followed by `next`.
    fn then(&mut self, next: &Out) {
        match next {
            Out::Keep => {}
            Out::Replace(s) => *self = Out::Replace(s.clone()),
            Out::Append(s) => match self {
                Out::Keep => *self = Out::Append(s.clone()),
                Out::Append(a) | Out::Replace(a) => a.push_str(s),
            },
        }
    }
}

/// Semantic value accumulated along a path.
#[derive(Debug, Clone, Default, PartialEq)]
struct TagValue {
    out: Out,
    fields: Vec<(String, String)>,
}

impl TagValue {
    fn set_field(&mut self, key: &str, val: String) {
        self.fields.retain(|(k, _)| k != key);
        self.fields.push((key.to_string(), val));
    }

    /// Apply a `<tag>` script (the subset described in the module docs).
    fn apply(&mut self, script: &str) {
        for stmt in script.split(';') {
            let s = stmt.trim();
            if s.is_empty() {
                continue;
            }
            if let Some((k, v)) = s.strip_prefix("out.").and_then(|r| r.split_once('=')) {
                self.set_field(k.trim(), literal(v));
                continue;
            }
            let op = match s.strip_prefix("out").map(str::trim_start) {
                Some(r) if r.starts_with("+=") => Out::Append(literal(&r[2..])),
                Some(r) if r.starts_with('=') => {
                    let v = r[1..].trim();
                    match v
                        .strip_prefix("out")
                        .map(str::trim_start)
                        .and_then(|x| x.strip_prefix('+'))
                    {
                        Some(app) => Out::Append(literal(app)),
                        None => Out::Replace(literal(v)),
                    }
                }
                // A bare literal is the value.
                _ => Out::Replace(literal(s)),
            };
            self.out.then(&op);
        }
    }

    fn merge(&mut self, other: &TagValue) {
        self.out.then(&other.out);
        for (k, v) in &other.fields {
            self.set_field(k, v.clone());
        }
    }

    fn render(&self) -> Option<String> {
        let mut parts: Vec<String> = Vec::new();
        if let Out::Append(o) | Out::Replace(o) = &self.out {
            if !o.is_empty() {
                parts.push(o.clone());
            }
        }
        for (k, v) in &self.fields {
            parts.push(format!("{k}={v}"));
        }
        if parts.is_empty() {
            None
        } else {
            Some(parts.join(";"))
        }
    }
}

/// A quoted JS string literal's content, else the trimmed text.
fn literal(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_string();
        }
    }
    s.to_string()
}

#[derive(Debug, Clone, Default)]
struct Path_ {
    words: Vec<String>,
    tag: TagValue,
}

impl Path_ {
    fn concat(&self, other: &Path_) -> Path_ {
        let mut p = self.clone();
        p.words.extend(other.words.iter().cloned());
        p.tag.merge(&other.tag);
        p
    }
}

struct Expander<'a> {
    rules: &'a HashMap<String, &'a xml::Element>,
}

fn too_many() -> GrammarError {
    GrammarError::Invalid(format!(
        "grammar expands to more than {MAX_EXPANSIONS} phrases"
    ))
}

fn product(a: Vec<Path_>, b: &[Path_]) -> Result<Vec<Path_>, GrammarError> {
    if a.len().saturating_mul(b.len()) > MAX_EXPANSIONS {
        return Err(too_many());
    }
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in &a {
        for y in b {
            out.push(x.concat(y));
        }
    }
    Ok(out)
}

impl Expander<'_> {
    /// A sequence of nodes: the product of their expansions.
    fn children(&self, nodes: &[xml::Node], depth: usize) -> Result<Vec<Path_>, GrammarError> {
        let mut acc = vec![Path_::default()];
        for n in nodes {
            let alts = self.node(n, depth)?;
            acc = product(acc, &alts)?;
        }
        Ok(acc)
    }

    fn node(&self, node: &xml::Node, depth: usize) -> Result<Vec<Path_>, GrammarError> {
        if depth > MAX_DEPTH {
            return Err(GrammarError::Invalid(
                "rule references nest too deeply (recursive grammar?)".into(),
            ));
        }
        match node {
            xml::Node::Text(t) => {
                let words: Vec<String> = t.split_whitespace().map(str::to_string).collect();
                Ok(vec![Path_ {
                    words,
                    tag: TagValue::default(),
                }])
            }
            xml::Node::Element(e) => match local(&e.name) {
                "one-of" => {
                    let mut out = Vec::new();
                    for item in e.elements() {
                        out.extend(self.node(&xml::Node::Element(item.clone()), depth + 1)?);
                        if out.len() > MAX_EXPANSIONS {
                            return Err(too_many());
                        }
                    }
                    Ok(out)
                }
                "item" => {
                    let body = self.children(&e.children, depth + 1)?;
                    let (min, max) = match e.attr("repeat") {
                        None => (1, 1),
                        Some(r) => parse_repeat(r)
                            .ok_or_else(|| syntax(e.line, format!("bad repeat '{r}'")))?,
                    };
                    let mut out = Vec::new();
                    let mut power = vec![Path_::default()];
                    for k in 0..=max {
                        if k >= min {
                            out.extend(power.iter().cloned());
                        }
                        if k < max {
                            power = product(power, &body)?;
                        }
                        if out.len() > MAX_EXPANSIONS {
                            return Err(too_many());
                        }
                    }
                    Ok(out)
                }
                "ruleref" => {
                    if let Some(sp) = e.attr("special") {
                        return match sp.to_ascii_uppercase().as_str() {
                            "NULL" | "GARBAGE" => Ok(vec![Path_::default()]),
                            "VOID" => Ok(Vec::new()),
                            other => Err(syntax(e.line, format!("unknown special rule '{other}'"))),
                        };
                    }
                    let uri = e
                        .attr("uri")
                        .ok_or_else(|| syntax(e.line, "<ruleref> without uri"))?;
                    let id = uri.strip_prefix('#').ok_or_else(|| {
                        syntax(
                            e.line,
                            format!("external rule reference '{uri}' is not supported"),
                        )
                    })?;
                    let rule = self
                        .rules
                        .get(id)
                        .ok_or_else(|| syntax(e.line, format!("unknown rule '#{id}'")))?;
                    self.children(&rule.children, depth + 1)
                }
                "tag" => {
                    let mut tag = TagValue::default();
                    tag.apply(&e.text());
                    Ok(vec![Path_ {
                        words: Vec::new(),
                        tag,
                    }])
                }
                "token" => {
                    let words: Vec<String> =
                        e.text().split_whitespace().map(str::to_string).collect();
                    Ok(vec![Path_ {
                        words,
                        tag: TagValue::default(),
                    }])
                }
                "rule" => self.children(&e.children, depth + 1),
                // Documentation-only or unsupported decorations are ignored.
                _ => Ok(vec![Path_::default()]),
            },
        }
    }
}

/// `"n"`, `"n-m"`, `"n-"` (open: up to n+OPEN_REPEAT_MAX), `"0-1"`; `optional`-style words no.
fn parse_repeat(r: &str) -> Option<(u32, u32)> {
    let r = r.trim();
    if let Some((a, b)) = r.split_once('-') {
        let min: u32 = a.trim().parse().ok()?;
        let max: u32 = if b.trim().is_empty() {
            min.max(1) + OPEN_REPEAT_MAX - 1
        } else {
            b.trim().parse().ok()?
        };
        if max < min || max > 64 {
            return None;
        }
        Some((min, max))
    } else {
        let n: u32 = r.parse().ok()?;
        if n > 64 {
            return None;
        }
        Some((n, n))
    }
}

/// Element name without a namespace prefix.
fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

// ---------------------------------------------------------------------------------------------
// A small tolerant XML reader (elements, attributes, text, comments, CDATA, PIs, DOCTYPE).

mod xml {
    use super::{syntax, GrammarError};

    #[derive(Debug, Clone, PartialEq)]
    pub enum Node {
        Element(Element),
        Text(String),
    }

    #[derive(Debug, Clone, PartialEq)]
    pub struct Element {
        pub name: String,
        pub attrs: Vec<(String, String)>,
        pub children: Vec<Node>,
        pub line: usize,
    }

    impl Element {
        pub fn attr(&self, name: &str) -> Option<&str> {
            self.attrs
                .iter()
                .find(|(k, _)| k == name || super::local(k) == name)
                .map(|(_, v)| v.as_str())
        }
        pub fn elements(&self) -> impl Iterator<Item = &Element> {
            self.children.iter().filter_map(|n| match n {
                Node::Element(e) => Some(e),
                Node::Text(_) => None,
            })
        }
        /// Concatenated text content (direct and nested).
        pub fn text(&self) -> String {
            let mut s = String::new();
            for c in &self.children {
                match c {
                    Node::Text(t) => s.push_str(t),
                    Node::Element(e) => s.push_str(&e.text()),
                }
            }
            s
        }
    }

    struct Reader<'a> {
        src: &'a str,
        pos: usize,
    }

    impl Reader<'_> {
        fn line(&self) -> usize {
            self.src[..self.pos].matches('\n').count() + 1
        }
        fn rest(&self) -> &str {
            &self.src[self.pos..]
        }
        fn skip_until(&mut self, pat: &str, what: &str) -> Result<(), GrammarError> {
            match self.rest().find(pat) {
                Some(i) => {
                    self.pos += i + pat.len();
                    Ok(())
                }
                None => Err(syntax(self.line(), format!("unterminated {what}"))),
            }
        }
        fn skip_ws(&mut self) {
            let n = self.rest().len() - self.rest().trim_start().len();
            self.pos += n;
        }
        fn name(&mut self) -> Result<String, GrammarError> {
            let rest = self.rest();
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '>' || c == '/' || c == '=')
                .unwrap_or(rest.len());
            if end == 0 {
                return Err(syntax(self.line(), "expected a name"));
            }
            let n = rest[..end].to_string();
            self.pos += end;
            Ok(n)
        }
    }

    pub fn unescape(s: &str) -> String {
        if !s.contains('&') {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('&') {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            let Some(end) = rest.find(';').filter(|&e| e <= 10) else {
                out.push('&');
                rest = &rest[1..];
                continue;
            };
            let ent = &rest[1..end];
            let rep = match ent {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let code = if let Some(h) =
                        ent.strip_prefix("#x").or_else(|| ent.strip_prefix("#X"))
                    {
                        u32::from_str_radix(h, 16).ok()
                    } else if let Some(d) = ent.strip_prefix('#') {
                        d.parse().ok()
                    } else {
                        None
                    };
                    code.and_then(char::from_u32)
                }
            };
            match rep {
                Some(c) => {
                    out.push(c);
                    rest = &rest[end + 1..];
                }
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Parse a document and return its root element.
    pub fn parse(src: &str) -> Result<Element, GrammarError> {
        let mut r = Reader { src, pos: 0 };
        // Stack of open elements; index 0 is a synthetic document node.
        let mut stack: Vec<Element> = vec![Element {
            name: String::new(),
            attrs: Vec::new(),
            children: Vec::new(),
            line: 1,
        }];
        while r.pos < src.len() {
            let rest = r.rest();
            if !rest.starts_with('<') {
                let end = rest.find('<').unwrap_or(rest.len());
                let text = unescape(&rest[..end]);
                r.pos += end;
                if stack.len() > 1 && !text.trim().is_empty() {
                    push_child(&mut stack, Node::Text(text));
                } else if stack.len() == 1 && !text.trim().is_empty() {
                    return Err(syntax(r.line(), "text outside the root element"));
                }
                continue;
            }
            if rest.starts_with("<!--") {
                r.skip_until("-->", "comment")?;
            } else if rest.starts_with("<![CDATA[") {
                let start = r.pos + "<![CDATA[".len();
                r.skip_until("]]>", "CDATA section")?;
                let text = src[start..r.pos - 3].to_string();
                if stack.len() > 1 {
                    push_child(&mut stack, Node::Text(text));
                }
            } else if rest.starts_with("<?") {
                r.skip_until("?>", "processing instruction")?;
            } else if rest.starts_with("<!") {
                skip_doctype(&mut r)?;
            } else if rest.starts_with("</") {
                let line = r.line();
                r.pos += 2;
                let name = r.name()?;
                r.skip_ws();
                if !r.rest().starts_with('>') {
                    return Err(syntax(line, format!("malformed end tag </{name}")));
                }
                r.pos += 1;
                if stack.len() < 2 {
                    return Err(syntax(line, format!("unexpected </{name}>")));
                }
                let open = stack
                    .pop()
                    .expect("stack has at least two elements, checked above");
                if open.name != name {
                    return Err(syntax(
                        line,
                        format!(
                            "</{name}> closes <{}> (opened line {})",
                            open.name, open.line
                        ),
                    ));
                }
                push_child(&mut stack, Node::Element(open));
            } else {
                let line = r.line();
                r.pos += 1;
                let name = r.name()?;
                let mut attrs = Vec::new();
                let self_closing;
                loop {
                    r.skip_ws();
                    let rest = r.rest();
                    if rest.starts_with("/>") {
                        r.pos += 2;
                        self_closing = true;
                        break;
                    }
                    if rest.starts_with('>') {
                        r.pos += 1;
                        self_closing = false;
                        break;
                    }
                    if rest.is_empty() {
                        return Err(syntax(line, format!("unterminated <{name}>")));
                    }
                    let key = r.name()?;
                    r.skip_ws();
                    if !r.rest().starts_with('=') {
                        // Attribute without a value (HTML style): tolerated as empty.
                        attrs.push((key, String::new()));
                        continue;
                    }
                    r.pos += 1;
                    r.skip_ws();
                    let rest = r.rest();
                    let q = rest.chars().next().unwrap_or(' ');
                    let value = if q == '"' || q == '\'' {
                        let end = rest[1..].find(q).ok_or_else(|| {
                            syntax(line, format!("unterminated value of '{key}'"))
                        })?;
                        let v = unescape(&rest[1..1 + end]);
                        r.pos += end + 2;
                        v
                    } else {
                        let end = rest
                            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
                            .unwrap_or(rest.len());
                        let v = unescape(&rest[..end]);
                        r.pos += end;
                        v
                    };
                    attrs.push((key, value));
                }
                let el = Element {
                    name,
                    attrs,
                    children: Vec::new(),
                    line,
                };
                if self_closing {
                    if stack.len() == 1 && !stack[0].children.is_empty() {
                        return Err(syntax(line, "more than one root element"));
                    }
                    push_child(&mut stack, Node::Element(el));
                } else {
                    if stack.len() == 1 && !stack[0].children.is_empty() {
                        return Err(syntax(line, "more than one root element"));
                    }
                    stack.push(el);
                }
            }
        }
        if stack.len() > 1 {
            let open = &stack[stack.len() - 1];
            return Err(syntax(
                open.line,
                format!("<{}> is never closed", open.name),
            ));
        }
        let doc = stack.pop().expect("the document node is never popped");
        doc.children
            .into_iter()
            .find_map(|n| match n {
                Node::Element(e) => Some(e),
                Node::Text(_) => None,
            })
            .ok_or_else(|| syntax(1, "no root element"))
    }

    fn push_child(stack: &mut [Element], node: Node) {
        if let Some(top) = stack.last_mut() {
            top.children.push(node);
        }
    }

    /// `<!DOCTYPE ...>` possibly with an internal subset in brackets.
    fn skip_doctype(r: &mut Reader<'_>) -> Result<(), GrammarError> {
        let mut depth = 0i32;
        for (i, c) in r.rest().char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                '>' if depth <= 0 => {
                    r.pos += i + 1;
                    return Ok(());
                }
                _ => {}
            }
        }
        Err(syntax(r.line(), "unterminated <!DOCTYPE"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        normalize(s)
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            toks("Please, connect me to SALES!"),
            ["please", "connect", "me", "to", "sales"]
        );
        assert_eq!(toks("one two 34 five"), ["1", "2", "3", "4", "5"]);
        assert_eq!(
            toks("I'd like the 2nd option"),
            ["id", "like", "the", "2", "nd", "option"]
        );
        assert_eq!(toks("[BLANK_AUDIO]"), Vec::<String>::new());
        assert_eq!(toks(" (music) yes."), ["yes"]);
        assert_eq!(toks("oh nine"), ["0", "9"]);
        assert_eq!(toks("Über-café"), ["über", "café"]);
    }

    #[test]
    fn phrase_list_parsing() {
        let g = Grammar::parse_phrase_list(
            "d",
            "# departments\nsales = sales\nsupport | technical support = support\n\nbilling\n  accounts = billing # comment\n",
        )
        .unwrap();
        let v: Vec<(&str, Option<&str>)> = g
            .entries
            .iter()
            .map(|e| (e.phrase.as_str(), e.tag.as_deref()))
            .collect();
        assert_eq!(
            v,
            vec![
                ("sales", Some("sales")),
                ("support", Some("support")),
                ("technical support", Some("support")),
                ("billing", None),
                ("accounts", Some("billing")),
            ]
        );
    }

    #[test]
    fn phrase_list_errors() {
        assert!(matches!(
            Grammar::parse_phrase_list("x", "sales =\n"),
            Err(GrammarError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            Grammar::parse_phrase_list("x", "a\n | b\n"),
            Err(GrammarError::Syntax { line: 2, .. })
        ));
        assert!(matches!(
            Grammar::parse_phrase_list("x", "# only comments\n"),
            Err(GrammarError::Invalid(_))
        ));
        assert!(matches!(
            Grammar::parse_phrase_list("x", "#ABNF 1.0;\n"),
            Err(GrammarError::Invalid(_))
        ));
        assert!(matches!(
            Grammar::parse_phrase_list("x", "!!! = x\n"),
            Err(GrammarError::Syntax { .. })
        ));
    }

    const YESNO: &str = r##"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE grammar PUBLIC "-//W3C//DTD GRAMMAR 1.0//EN" "http://www.w3.org/TR/speech-grammar/grammar.dtd">
<grammar xmlns="http://www.w3.org/2001/06/grammar" version="1.0" xml:lang="en-US" root="yesno" tag-format="semantics/1.0">
  <!-- top-level rule -->
  <rule id="yesno" scope="public">
    <item repeat="0-1"><ruleref uri="#polite"/></item>
    <one-of>
      <item>yes <tag>out="yes";</tag></item>
      <item>yeah<tag>out = 'yes'</tag></item>
      <item><token>no</token><tag>out="no";</tag></item>
      <item>nope &amp; never<tag>no</tag></item>
    </one-of>
  </rule>
  <rule id="polite"><one-of><item>oh</item><item>well</item></one-of></rule>
</grammar>"##;

    #[test]
    fn srgs_expansion_with_tags_and_optional_ruleref() {
        let g = Grammar::parse_srgs("yn", YESNO).unwrap();
        let v: Vec<(String, Option<String>)> = g
            .entries
            .iter()
            .map(|e| (e.phrase.clone(), e.tag.clone()))
            .collect();
        assert!(v.contains(&("yes".into(), Some("yes".into()))), "{v:?}");
        assert!(
            v.contains(&("well yeah".into(), Some("yes".into()))),
            "{v:?}"
        );
        assert!(v.contains(&("oh no".into(), Some("no".into()))), "{v:?}");
        assert!(
            v.contains(&("nope & never".into(), Some("no".into()))),
            "{v:?}"
        );
        assert_eq!(v.len(), 12);
    }

    #[test]
    fn srgs_repeat_and_tag_append() {
        let xml = r##"<grammar root="pin"><rule id="pin"><item repeat="2-3"><ruleref uri="#d"/></item></rule>
<rule id="d"><one-of><item>one<tag>out+="1"</tag></item><item>two<tag>out = out + "2";</tag></item></one-of></rule></grammar>"##;
        let g = Grammar::parse_srgs("pin", xml).unwrap();
        assert_eq!(g.entries.len(), 4 + 8);
        let e = g
            .entries
            .iter()
            .find(|e| e.phrase == "two one two")
            .unwrap();
        assert_eq!(e.tag.as_deref(), Some("212"));
        assert_eq!(e.tokens(), ["2", "1", "2"]);
    }

    #[test]
    fn srgs_fields_and_specials() {
        let xml = r#"<grammar root="r"><rule id="r">
  <ruleref special="GARBAGE"/> transfer to <one-of>
    <item>sales<tag>out.dept="sales"; out.ext = '200'</tag></item>
    <item>support<tag>out.dept="support"</tag></item>
    <item>nothing<ruleref special="VOID"/></item>
  </one-of></rule></grammar>"#;
        let g = Grammar::parse_srgs("r", xml).unwrap();
        assert_eq!(g.entries.len(), 2);
        assert_eq!(g.entries[0].phrase, "transfer to sales");
        assert_eq!(g.entries[0].tag.as_deref(), Some("dept=sales;ext=200"));
    }

    #[test]
    fn srgs_errors() {
        let cases = [
            "<grammar root='a'><rule id='a'>x</rule>",
            "<grammar root='a'><rule id='a'>x</rul></grammar>",
            "<grammar root='b'><rule id='a'>x</rule></grammar>",
            "<grammar><rule id='a'><ruleref uri='#nope'/></rule></grammar>",
            "<grammar><rule id='a'><ruleref uri='other.grxml#x'/></rule></grammar>",
            "<grammar><rule id='a'><item repeat='x'>a</item></rule></grammar>",
            "<grammar><rule id='a'><ruleref uri='#a'/></rule></grammar>",
            "<grammar><rule id='a'><item repeat='0-9'><one-of><item>a</item><item>b</item><item>c</item><item>d</item><item>e</item><item>f</item><item>g</item><item>h</item></one-of></item></rule></grammar>",
            "<speak>hi</speak>",
            "<grammar mode='dtmf'><rule id='a'>1</rule></grammar>",
            "<grammar><rule id='a'><!-- never closed </rule></grammar>",
            "",
        ];
        for c in cases {
            assert!(Grammar::parse_srgs("x", c).is_err(), "accepted: {c}");
        }
    }

    #[test]
    fn xml_entities_and_cdata() {
        let el = xml::parse("<a x='1 &lt; 2'>t&#65;&#x42;<![CDATA[<raw>]]></a>").unwrap();
        assert_eq!(el.attr("x"), Some("1 < 2"));
        assert_eq!(el.text(), "tAB<raw>");
    }

    fn departments() -> Grammar {
        Grammar::parse_phrase_list(
            "departments",
            "sales = sales\nsales department = sales\nsupport = support\ntechnical support = support\nbilling = billing\naccounts = billing\n",
        )
        .unwrap()
    }

    #[test]
    fn fuzzy_matching() {
        let g = departments();
        let m = g.best_match("Sales.", 500).unwrap();
        assert_eq!((m.value(), m.confidence), ("sales", 1000));
        let m = g.best_match("Please connect me to sales", 500).unwrap();
        assert_eq!(m.value(), "sales");
        assert!((800..1000).contains(&m.confidence), "{m:?}");
        let m = g
            .best_match("I need technical support please", 500)
            .unwrap();
        assert_eq!(m.phrase, "technical support");
        let m = g.best_match("billings", 500).unwrap();
        assert_eq!(m.value(), "billing");
        assert!(m.confidence < 1000 && m.confidence > 700, "{m:?}");
        assert!(g.best_match("what is the weather like", 500).is_none());
        assert!(g.best_match("", 0).is_none());
    }

    #[test]
    fn nbest_distinct_values() {
        let g = departments();
        let m = g.matches("sales support", 300, 3);
        let vals: Vec<&str> = m.iter().map(|m| m.value()).collect();
        assert_eq!(vals.len(), 2, "{m:?}");
        assert!(vals.contains(&"sales") && vals.contains(&"support"));
        assert!(m[0].confidence >= m[1].confidence);
    }

    #[test]
    fn digits_match_words_and_numbers() {
        let xml = r##"<grammar root="d"><rule id="d"><item repeat="1-4"><one-of>
<item>zero<tag>out+="0"</tag></item><item>one<tag>out+="1"</tag></item><item>two<tag>out+="2"</tag></item>
<item>three<tag>out+="3"</tag></item></one-of></item></rule></grammar>"##;
        let g = Grammar::parse_srgs("d", xml).unwrap();
        assert_eq!(
            g.best_match("1 2 3", 900).unwrap().tag.as_deref(),
            Some("123")
        );
        assert_eq!(
            g.best_match("one, two, three.", 900)
                .unwrap()
                .tag
                .as_deref(),
            Some("123")
        );
        assert_eq!(
            g.best_match("3021", 900).unwrap().tag.as_deref(),
            Some("3021")
        );
        // A wrong digit is not "close".
        assert_ne!(
            g.best_match("1 2 3", 0).unwrap().tag.as_deref(),
            Some("122")
        );
    }

    #[test]
    fn soundex_codes() {
        assert_eq!(soundex("Robert"), "R163");
        assert_eq!(soundex("Rupert"), "R163");
        assert_eq!(soundex("Ashcraft"), "A261");
        assert_eq!(soundex("Tymczak"), "T522");
        assert_eq!(soundex("sales"), soundex("sails"));
        assert_eq!(soundex("123"), "");
        assert!(word_cost("sales", "sails") <= 0.25);
        assert!(word_cost("billing", "feeling") <= 0.5);
        assert_eq!(word_cost("yes", "no"), 1.0);
    }

    #[test]
    fn similarity_properties() {
        let s = |a: &str, b: &str| similarity(&toks(a), &toks(b));
        assert_eq!(s("sales", "sales"), 1000);
        assert!(s("sales", "cells") < s("sales", "sale"));
        assert!(s("technical support", "support") < s("support", "support"));
        assert_eq!(s("yes", "no"), 0);
    }

    #[test]
    fn prompt_text_is_bounded() {
        let g = departments();
        assert_eq!(
            g.prompt_text(1000),
            "Sales. Sales department. Support. Technical support. Billing. Accounts."
        );
        assert_eq!(g.prompt_text(14), "Sales.");
    }

    #[test]
    fn sample_grammars_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("grammars");
        for f in ["yes-no.gram", "digits.xml", "departments.gram"] {
            let g = Grammar::load(f, &dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(!g.entries.is_empty());
        }
        let d = Grammar::load("departments", &dir.join("departments.gram")).unwrap();
        assert_eq!(
            d.best_match("connect me to billing please", 500)
                .unwrap()
                .value(),
            "billing"
        );
        let digits = Grammar::load("digits", &dir.join("digits.xml")).unwrap();
        assert_eq!(
            digits.best_match("four five six", 900).unwrap().value(),
            "456"
        );
        let yn = Grammar::load("yes-no", &dir.join("yes-no.gram")).unwrap();
        assert_eq!(yn.best_match("Yeah, sure.", 500).unwrap().value(), "yes");
    }
}
