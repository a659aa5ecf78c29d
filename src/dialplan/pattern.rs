//! Extension names and patterns (`_X`, `_Z`, `_N`, `_[1-5a-c]`, `.`, `!`) with Asterisk's
//! ordering of which pattern wins.
//!
//! Semantics follow Asterisk's `main/pbx.c` (`_extension_match_core`, `ext_cmp`,
//! `ext_cmp_pattern_pos` and the match trie):
//!
//! * A name not starting with `_` is a literal. `-` is eye candy and ignored on both sides
//!   (`555-1212` == `5551212`); everything else compares byte for byte, case-sensitively.
//! * `_` starts a pattern: `X` = `0-9`, `Z` = `1-9`, `N` = `2-9` (the class letters are
//!   case-insensitive), `[...]` is a set of characters and ranges (everything inside is
//!   literal; a `-` first or last is literal; an empty set `[]` is ignored), `.` matches one
//!   or more of anything, `!` zero or more of anything, `-` is ignored and every other
//!   character is literal.
//! * `.` and `!` must be the last element of a pattern (Asterisk documents this; its trie
//!   never matches anything after them), so [`ExtenName::parse`] rejects anything following
//!   them.
//!
//! The order ([`compare`]) is Asterisk's `ext_cmp`: literals before patterns, literals by
//! their bytes (ignoring `-`), patterns element by element where the element with the
//! smaller set of possible characters sorts first (a literal character, then `N` (8), `Z`
//! (9), `X` (10), sets by size then lowest member), `.` and then `!` last. One deliberate
//! difference from `ext_cmp`: a pattern that has *ended* sorts before one that continues
//! (Asterisk's `ext_cmp` puts the end after `!`). That is what Asterisk's run-time matcher
//! (the trie in `new_find_extension`) does when both match the same dialled string, e.g.
//! `_XX` wins over `_XX!` for `12`; for sorting it means "then shorter first". Remaining
//! ties (`555-1212` vs `5551212`) are broken by the raw text so the order is total.

use std::cmp::Ordering;

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

impl MatchKind {
    /// Asterisk's `ast_exists_extension` sense: matches the string as it is.
    pub fn is_exact(self) -> bool {
        matches!(self, MatchKind::Exact { .. })
    }

    /// Asterisk's `ast_canmatch_extension` sense: matches now or could with more digits.
    pub fn can_match(self) -> bool {
        !matches!(self, MatchKind::No)
    }

    /// Asterisk's `ast_matchmore_extension` sense: could match a longer string.
    pub fn match_more(self) -> bool {
        matches!(self, MatchKind::Exact { more: true } | MatchKind::Prefix)
    }
}

/// One element of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Elem {
    /// A set of characters, as sorted, merged, non-empty, inclusive ranges. A literal
    /// character is a one-character set.
    Set(CharSet),
    /// `.`: one or more of anything (always last).
    Dot,
    /// `!`: zero or more of anything (always last).
    Bang,
}

/// Sorted, merged, non-empty inclusive ranges, with a bitmap for the ASCII part so that
/// matching a dialled digit is one bit test.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CharSet {
    ranges: Vec<(char, char)>,
    ascii: u128,
}

impl CharSet {
    fn new(ranges: Vec<(char, char)>) -> CharSet {
        let ranges = normalize_ranges(ranges);
        let mut ascii = 0u128;
        for &(lo, hi) in &ranges {
            for c in (lo as u32)..=(hi as u32).min(127) {
                ascii |= 1 << c;
            }
        }
        CharSet { ranges, ascii }
    }

    fn contains(&self, c: char) -> bool {
        if (c as u32) < 128 {
            self.ascii & (1 << c as u32) != 0
        } else {
            self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Literal name with the `-` characters removed.
    Literal(String),
    Pattern(Vec<Elem>),
}

/// A parsed extension name: a literal (`100`, `s`) or a pattern (`_NXX.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtenName {
    pub raw: String,
    kind: Kind,
}

const DIGITS: (char, char) = ('0', '9');

fn normalize_ranges(mut ranges: Vec<(char, char)>) -> Vec<(char, char)> {
    ranges.sort_unstable();
    let mut out: Vec<(char, char)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        if let Some(last) = out.last_mut() {
            // Adjacent or overlapping ranges merge.
            if (lo as u32) <= (last.1 as u32).saturating_add(1) {
                if hi > last.1 {
                    last.1 = hi;
                }
                continue;
            }
        }
        out.push((lo, hi));
    }
    out
}

fn set_count(set: &[(char, char)]) -> u64 {
    set.iter()
        .map(|&(lo, hi)| u64::from(hi as u32 - lo as u32) + 1)
        .sum()
}

/// Asterisk's tie-break for two sets of equal size and equal lowest member: the set that
/// holds the lowest character the other one lacks sorts first.
fn cmp_set_members(a: &[(char, char)], b: &[(char, char)]) -> Ordering {
    let mut i = 0;
    while i < a.len() && i < b.len() {
        let (s1, e1) = a[i];
        let (s2, e2) = b[i];
        if s1 != s2 {
            return if s1 < s2 {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if e1 != e2 {
            // The set whose range runs further holds e_min+1, which the other lacks
            // (ranges are merged, so the other's next range starts after e_min+1).
            return if e1 > e2 {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        i += 1;
    }
    // The set with more ranges holds a character the other lacks.
    b.len().cmp(&a.len())
}

/// Sort key rank of one pattern position: (class, count, lowest char).
fn elem_cmp(a: Option<&Elem>, b: Option<&Elem>) -> Ordering {
    fn rank(e: Option<&Elem>) -> u8 {
        match e {
            None => 0,
            Some(Elem::Set(_)) => 1,
            Some(Elem::Dot) => 2,
            Some(Elem::Bang) => 3,
        }
    }
    match (a, b) {
        (Some(Elem::Set(x)), Some(Elem::Set(y))) => {
            let (x, y) = (&x.ranges, &y.ranges);
            set_count(x)
                .cmp(&set_count(y))
                .then_with(|| x[0].0.cmp(&y[0].0))
                .then_with(|| cmp_set_members(x, y))
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

impl ExtenName {
    pub fn parse(raw: &str) -> Result<ExtenName, String> {
        if raw.is_empty() {
            return Err("empty extension name".to_string());
        }
        let kind = match raw.strip_prefix('_') {
            None => Kind::Literal(raw.chars().filter(|&c| c != '-').collect()),
            Some(body) => Kind::Pattern(parse_pattern(raw, body)?),
        };
        Ok(ExtenName {
            raw: raw.to_string(),
            kind,
        })
    }

    pub fn is_pattern(&self) -> bool {
        matches!(self.kind, Kind::Pattern(_))
    }

    pub fn matches(&self, dialled: &str) -> MatchKind {
        let mut data = dialled.chars().filter(|&c| c != '-');
        match &self.kind {
            Kind::Literal(name) if !dialled.contains('-') => {
                if name.len() == dialled.len() {
                    if name == dialled {
                        MatchKind::Exact { more: false }
                    } else {
                        MatchKind::No
                    }
                } else if name.starts_with(dialled) {
                    MatchKind::Prefix
                } else {
                    MatchKind::No
                }
            }
            Kind::Literal(name) => {
                let mut name_chars = name.chars();
                loop {
                    match (name_chars.next(), data.next()) {
                        (None, None) => return MatchKind::Exact { more: false },
                        (Some(_), None) => return MatchKind::Prefix,
                        (None, Some(_)) => return MatchKind::No,
                        (Some(a), Some(b)) if a == b => {}
                        (Some(_), Some(_)) => return MatchKind::No,
                    }
                }
            }
            Kind::Pattern(elems) => {
                let mut elems = elems.iter();
                loop {
                    let elem = elems.next();
                    let Some(c) = data.next() else {
                        return match elem {
                            None => MatchKind::Exact { more: false },
                            Some(Elem::Bang) => MatchKind::Exact { more: true },
                            Some(_) => MatchKind::Prefix,
                        };
                    };
                    match elem {
                        None => return MatchKind::No,
                        Some(Elem::Dot) | Some(Elem::Bang) => {
                            return MatchKind::Exact { more: true }
                        }
                        Some(Elem::Set(set)) => {
                            if !set.contains(c) {
                                return MatchKind::No;
                            }
                        }
                    }
                }
            }
        }
    }
}

impl std::fmt::Display for ExtenName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

impl std::str::FromStr for ExtenName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExtenName::parse(s)
    }
}

fn parse_pattern(raw: &str, body: &str) -> Result<Vec<Elem>, String> {
    let chars: Vec<char> = body.chars().collect();
    let mut elems = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        if matches!(elems.last(), Some(Elem::Dot) | Some(Elem::Bang)) {
            if chars[i] == '-' {
                i += 1;
                continue;
            }
            return Err(format!(
                "pattern '{raw}': '.' and '!' are only allowed at the end of a pattern"
            ));
        }
        let c = chars[i];
        i += 1;
        match c {
            '-' => {}
            'X' | 'x' => elems.push(Elem::Set(CharSet::new(vec![DIGITS]))),
            'Z' | 'z' => elems.push(Elem::Set(CharSet::new(vec![('1', '9')]))),
            'N' | 'n' => elems.push(Elem::Set(CharSet::new(vec![('2', '9')]))),
            '.' => elems.push(Elem::Dot),
            '!' => elems.push(Elem::Bang),
            '[' => {
                let Some(len) = chars[i..].iter().position(|&c| c == ']') else {
                    return Err(format!("pattern '{raw}': '[' without a closing ']'"));
                };
                let inner = &chars[i..i + len];
                i += len + 1;
                let mut ranges = Vec::new();
                let mut j = 0;
                while j < inner.len() {
                    let lo = inner[j];
                    if j + 2 < inner.len() && inner[j + 1] == '-' {
                        let hi = inner[j + 2];
                        // Asterisk silently matches nothing for a reversed range.
                        if lo <= hi {
                            ranges.push((lo, hi));
                        }
                        j += 3;
                    } else {
                        ranges.push((lo, lo));
                        j += 1;
                    }
                }
                if !ranges.is_empty() {
                    elems.push(Elem::Set(CharSet::new(ranges)));
                } else if !inner.is_empty() {
                    // Only reversed ranges: a set that can never match.
                    return Err(format!("pattern '{raw}': character set matches nothing"));
                }
                // An empty set `[]` is ignored, as in Asterisk.
            }
            other => elems.push(Elem::Set(CharSet::new(vec![(other, other)]))),
        }
    }
    if elems.is_empty() {
        return Err(format!("pattern '{raw}' is empty"));
    }
    Ok(elems)
}

/// Asterisk's order: literals before patterns; between patterns, the more specific first.
pub fn compare(a: &ExtenName, b: &ExtenName) -> std::cmp::Ordering {
    let primary = match (&a.kind, &b.kind) {
        (Kind::Literal(x), Kind::Literal(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Kind::Literal(_), Kind::Pattern(_)) => Ordering::Less,
        (Kind::Pattern(_), Kind::Literal(_)) => Ordering::Greater,
        (Kind::Pattern(x), Kind::Pattern(y)) => {
            let n = x.len().max(y.len());
            let mut ord = Ordering::Equal;
            for i in 0..n {
                ord = elem_cmp(x.get(i), y.get(i));
                if ord != Ordering::Equal {
                    break;
                }
            }
            ord
        }
    };
    primary.then_with(|| a.raw.cmp(&b.raw))
}

/// The extension that wins for `dialled` (an exact match, the most specific by [`compare`]).
pub fn best_match<'a>(
    names: impl Iterator<Item = &'a ExtenName>,
    dialled: &str,
) -> Option<&'a ExtenName> {
    let mut best: Option<&'a ExtenName> = None;
    for name in names {
        if !name.matches(dialled).is_exact() {
            continue;
        }
        best = match best {
            Some(b) if compare(b, name) != Ordering::Greater => Some(b),
            _ => Some(name),
        };
    }
    best
}

/// For a slice already sorted with [`compare`]: the first exact match is the winner.
pub fn first_match<'a>(sorted: &'a [ExtenName], dialled: &str) -> Option<&'a ExtenName> {
    sorted.iter().find(|n| n.matches(dialled).is_exact())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> ExtenName {
        ExtenName::parse(s).unwrap()
    }

    const NO: MatchKind = MatchKind::No;
    const PREFIX: MatchKind = MatchKind::Prefix;
    const EXACT: MatchKind = MatchKind::Exact { more: false };
    const MORE: MatchKind = MatchKind::Exact { more: true };

    #[test]
    fn literal_names() {
        let n = e("100");
        assert!(!n.is_pattern());
        assert_eq!(n.matches("100"), EXACT);
        assert_eq!(n.matches("10"), PREFIX);
        assert_eq!(n.matches(""), PREFIX);
        assert_eq!(n.matches("1000"), NO);
        assert_eq!(n.matches("101"), NO);
        assert_eq!(e("s").matches("s"), EXACT);
        assert_eq!(e("s").matches("S"), NO);
        assert_eq!(e("h").matches("h"), EXACT);
        assert_eq!(e("+15551234").matches("+15551234"), EXACT);
        assert_eq!(e("+15551234").matches("+1555"), PREFIX);
    }

    #[test]
    fn dashes_are_ignored() {
        assert_eq!(e("555-1212").matches("5551212"), EXACT);
        assert_eq!(e("5551212").matches("555-1212"), EXACT);
        assert_eq!(e("555-1212").matches("555-"), PREFIX);
        assert_eq!(e("_NXX-XXXX").matches("555-1212"), EXACT);
        assert_eq!(e("_NXX-XXXX").matches("5551212"), EXACT);
        assert_eq!(
            compare(&e("555-1212"), &e("5551212")),
            "555-1212".cmp("5551212")
        );
    }

    #[test]
    fn classes() {
        let p = e("_NXX");
        assert!(p.is_pattern());
        assert_eq!(p.matches("200"), EXACT);
        assert_eq!(p.matches("199"), NO);
        assert_eq!(p.matches("20"), PREFIX);
        assert_eq!(p.matches(""), PREFIX);
        assert_eq!(p.matches("2000"), NO);
        assert_eq!(e("_Z").matches("0"), NO);
        assert_eq!(e("_Z").matches("1"), EXACT);
        assert_eq!(e("_X").matches("a"), NO);
        // Class letters are case-insensitive, other letters are literal and case-sensitive.
        assert_eq!(e("_nxz").matches("201"), EXACT);
        assert_eq!(e("_s").matches("s"), EXACT);
        assert_eq!(e("_s").matches("S"), NO);
    }

    #[test]
    fn sets() {
        let p = e("_[1-5a-c]X");
        assert_eq!(p.matches("10"), EXACT);
        assert_eq!(p.matches("b9"), EXACT);
        assert_eq!(p.matches("60"), NO);
        assert_eq!(p.matches("d0"), NO);
        // Inside a set everything is literal, `-` first or last too.
        assert_eq!(e("_[X-]").matches("X"), EXACT);
        assert_eq!(e("_[X-]").matches("-"), PREFIX, "'-' in data is ignored");
        assert_eq!(e("_[-a]").matches("a"), EXACT);
        assert_eq!(e("_[]1").matches("1"), EXACT, "empty set is ignored");
        assert!(ExtenName::parse("_[12").is_err());
        assert!(ExtenName::parse("_[9-1]").is_err());
    }

    #[test]
    fn dot_and_bang() {
        let p = e("_X.");
        assert_eq!(p.matches(""), PREFIX);
        assert_eq!(p.matches("1"), PREFIX);
        assert_eq!(p.matches("12"), MORE);
        assert_eq!(p.matches("123456"), MORE);
        assert_eq!(p.matches("a2"), NO);
        let b = e("_1!");
        assert_eq!(b.matches(""), PREFIX);
        assert_eq!(b.matches("1"), MORE);
        assert_eq!(b.matches("1234"), MORE);
        assert_eq!(b.matches("2"), NO);
        assert_eq!(e("_.").matches("anything"), MORE);
        assert_eq!(e("_!").matches(""), MORE);
        assert!(ExtenName::parse("_X.1").is_err());
        assert!(ExtenName::parse("_X!X").is_err());
        assert!(ExtenName::parse("_X.-").is_ok());
    }

    #[test]
    fn match_kind_helpers() {
        assert!(EXACT.is_exact() && MORE.is_exact() && !PREFIX.is_exact());
        assert!(PREFIX.can_match() && !NO.can_match());
        assert!(PREFIX.match_more() && MORE.match_more() && !EXACT.match_more());
    }

    #[test]
    fn bad_names() {
        assert!(ExtenName::parse("").is_err());
        assert!(ExtenName::parse("_").is_err());
        assert!(ExtenName::parse("_-").is_err());
    }

    #[test]
    fn ordering_of_patterns() {
        let mut names: Vec<ExtenName> = [
            "_.", "_X.", "_NXX", "_1XX", "_[1-3]XX", "_X!", "123", "_12X", "_XXX", "_ZXX",
        ]
        .iter()
        .map(|s| e(s))
        .collect();
        names.sort_by(compare);
        let sorted: Vec<&str> = names.iter().map(|n| n.raw.as_str()).collect();
        assert_eq!(
            sorted,
            ["123", "_12X", "_1XX", "_[1-3]XX", "_NXX", "_ZXX", "_XXX", "_X.", "_X!", "_."]
        );
    }

    #[test]
    fn ordering_details() {
        use Ordering::*;
        // Sets of the same size: the one with the lowest member first.
        assert_eq!(compare(&e("_[12]"), &e("_[13]")), Less);
        assert_eq!(compare(&e("_[13]"), &e("_[23]")), Less);
        assert_eq!(
            compare(&e("_[2-9]"), &e("_N")),
            Equal.then("_[2-9]".cmp("_N"))
        );
        // A single-character set is the literal.
        assert_eq!(compare(&e("_[5]"), &e("_5")), "_[5]".cmp("_5"));
        // End of pattern before continuing: `_XX` beats `_XX!` on "12".
        assert_eq!(compare(&e("_XX"), &e("_XX!")), Less);
        assert_eq!(compare(&e("_X."), &e("_X!")), Less);
        assert_eq!(compare(&e("1"), &e("_1")), Less);
        assert_eq!(compare(&e("_1"), &e("1")), Greater);
        assert_eq!(compare(&e("_NXX"), &e("_NXX")), Equal);
        // Lowercase class letters equal uppercase ones apart from the text tie-break.
        assert_eq!(compare(&e("_nxx"), &e("_NXX")), "_nxx".cmp("_NXX"));
        // Sets larger than X sort after X.
        assert_eq!(compare(&e("_X"), &e("_[0-9a]")), Less);
        assert_eq!(compare(&e("_[0-9a]"), &e("_.")), Less);
    }

    #[test]
    fn best_match_picks_most_specific() {
        let names: Vec<ExtenName> = [
            "_.", "_X.", "_NXX", "_1XX", "_[1-3]XX", "_X!", "123", "_12X", "_XXX", "s",
        ]
        .iter()
        .map(|s| e(s))
        .collect();
        let best = |d: &str| best_match(names.iter(), d).map(|n| n.raw.as_str());
        assert_eq!(best("123"), Some("123"));
        assert_eq!(best("124"), Some("_12X"));
        assert_eq!(best("134"), Some("_1XX"));
        assert_eq!(best("234"), Some("_[1-3]XX"));
        assert_eq!(best("456"), Some("_NXX"));
        assert_eq!(best("056"), Some("_XXX"));
        assert_eq!(best("0567"), Some("_X."));
        assert_eq!(best("0"), Some("_X!"));
        assert_eq!(best("s"), Some("s"));
        assert_eq!(best("abc"), Some("_."));
        assert_eq!(best(""), None);
        let mut sorted = names.clone();
        sorted.sort_by(compare);
        for d in [
            "123", "124", "134", "234", "456", "056", "0567", "0", "s", "abc", "",
        ] {
            assert_eq!(
                first_match(&sorted, d).map(|n| n.raw.as_str()),
                best(d),
                "dialled {d}"
            );
        }
        assert_eq!(best_match(std::iter::empty(), "1"), None);
    }

    #[test]
    fn compare_is_a_total_order() {
        let names: Vec<ExtenName> = [
            "_.", "_X.", "_NXX", "_1XX", "_[1-3]XX", "_X!", "123", "_12X", "_[13]", "_[12]",
            "_[2-9]", "_N", "_n", "1-2-3", "_!", "_[a-c]X", "_[0-9a]",
        ]
        .iter()
        .map(|s| e(s))
        .collect();
        for a in &names {
            assert_eq!(compare(a, a), Ordering::Equal);
            for b in &names {
                assert_eq!(compare(a, b), compare(b, a).reverse(), "{a} vs {b}");
                for c in &names {
                    if compare(a, b) == Ordering::Less && compare(b, c) == Ordering::Less {
                        assert_eq!(compare(a, c), Ordering::Less, "{a} < {b} < {c}");
                    }
                }
            }
        }
    }

    #[test]
    fn unicode_does_not_panic() {
        let p = e("_[é-ü]X");
        assert_eq!(p.matches("ö1"), EXACT);
        assert_eq!(p.matches("a1"), NO);
        assert_eq!(e("ñ").matches("ñ"), EXACT);
    }
}
