//! Extension names and patterns (`_X`, `_Z`, `_N`, `_[1-5a-c]`, `.`, `!`) with Asterisk's
//! ordering of which pattern wins.

/// How an extension name relates to a dialled string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// Cannot match, not even with more digits.
    No,
    /// Matches exactly now (and may or may not match longer strings too: see `more`).
    Exact { more: bool },
    /// Does not match yet, but could after more digits (`canmatch`).
    Prefix,
}

/// A parsed extension name: a literal (`100`, `s`) or a pattern (`_NXX.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtenName {
    pub raw: String,
    _priv: (),
}

impl ExtenName {
    pub fn parse(raw: &str) -> Result<ExtenName, String> {
        let _ = raw;
        todo!("pattern")
    }
    pub fn is_pattern(&self) -> bool {
        todo!("pattern")
    }
    pub fn matches(&self, dialled: &str) -> MatchKind {
        let _ = dialled;
        todo!("pattern")
    }
}

/// Asterisk's order: literals before patterns; between patterns, the more specific first.
pub fn compare(a: &ExtenName, b: &ExtenName) -> std::cmp::Ordering {
    let _ = (a, b);
    todo!("pattern")
}
