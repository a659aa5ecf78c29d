//! Parsing of `${VAR}`, `${VAR:off:len}`, `${FUNC(args)}`, `$[expr]` into a template tree.
//! Evaluation needs the channel and lives in the PBX runtime; this module is pure.
//!
//! The scanner is Asterisk's (`ast_str_substitute_variables_full` in `main/pbx_variables.c`):
//!
//! * `${` is closed by the matching `}`; inside it every `{` (and `${`) opens a level.
//!   `$[` is closed by the matching `]`; inside it every `[` (and `$[`) opens a level.
//!   A `$` not followed by `{` or `[` is literal.
//! * Inside `${...}` the first `:` outside parentheses (and outside nested `${}`/`$[]`) ends
//!   the name; the text after it is `offset`, and after the next `:` comes `length` (the
//!   rest, as Asterisk's `sscanf("%d:%d")` reads it). The name is itself a template
//!   (`${${X}_suffix}`), and a name containing `(` is a function call (`${CUT(${A},-,1):2}`;
//!   see [`split_function_call`]).
//! * Additions over Asterisk: `\$` before `{` or `[` is a literal `$` (the `${`/`$[` is not
//!   substituted), and `\\` keeps both backslashes in the output but stops the second one
//!   from escaping a following `$`. All other backslashes are kept verbatim, so that
//!   [`split_args`] later resolves them exactly as Asterisk's `AST_STANDARD_APP_ARGS` does.
//! * An unbalanced `${` or `$[` is kept as literal text and parsing continues after it
//!   (Asterisk logs "missing '}'" and uses the rest of the line as a variable name).
//!
//! [`Template`]'s `Display` writes source text that parses back to the same template.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    /// `${name[:offset[:length]]}`; `name` itself may contain substitutions (`${${X}}`),
    /// and a name ending in `(...)` is a function call.
    Var {
        name: Template,
        offset: Option<Template>,
        length: Option<Template>,
    },
    /// `$[ ... ]`
    Expr(Template),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template(pub Vec<Part>);

impl Template {
    /// The text, when the template contains no substitution at all.
    pub fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// True when there is nothing to substitute.
    pub fn is_literal(&self) -> bool {
        self.literal().is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Deepest nesting of `${`/`$[` parsed into the tree; deeper text stays literal.
const MAX_DEPTH: usize = 64;

pub fn parse(text: &str) -> Template {
    parse_depth(text, 0)
}

fn parse_depth(text: &str, depth: usize) -> Template {
    let b = text.as_bytes();
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut lit_start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if b.get(i + 1) == Some(&b'\\') => i += 2,
            b'\\' if b.get(i + 1) == Some(&b'$') && matches!(b.get(i + 2), Some(b'{' | b'[')) => {
                lit.push_str(&text[lit_start..i]);
                lit.push('$');
                i += 2;
                lit_start = i;
            }
            b'$' if matches!(b.get(i + 1), Some(b'{' | b'[')) && depth < MAX_DEPTH => {
                let is_var = b[i + 1] == b'{';
                let Some(close) = find_close(b, i + 2, is_var) else {
                    // Unbalanced: the `${` / `$[` stays literal, parsing goes on after it.
                    i += 2;
                    continue;
                };
                lit.push_str(&text[lit_start..i]);
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                let inner = &text[i + 2..close];
                parts.push(if is_var {
                    parse_var(inner, depth + 1)
                } else {
                    Part::Expr(parse_depth(inner, depth + 1))
                });
                i = close + 1;
                lit_start = i;
            }
            _ => i += 1,
        }
    }
    lit.push_str(&text[lit_start..]);
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Template(parts)
}

/// Asterisk's end-of-substitution scan from just after `${` (or `$[`): the index of the
/// closing `}` (or `]`), or `None` when unbalanced.
fn find_close(b: &[u8], start: usize, is_var: bool) -> Option<usize> {
    let (open, close) = if is_var { (b'{', b'}') } else { (b'[', b']') };
    let mut depth = 1usize;
    let mut j = start;
    while j < b.len() {
        let c = b[j];
        let next = b.get(j + 1).copied();
        if c == b'$' && next == Some(open) {
            depth += 1;
            j += 1;
        } else if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return Some(j);
            }
        } else if c == b'$' && matches!(next, Some(b'{' | b'[')) {
            // The other kind of substitution: its opener is not counted.
            j += 1;
        }
        j += 1;
    }
    None
}

/// Skip an escape or a nested substitution at `i`; returns the index after it, or `None`
/// when `i` starts neither.
fn skip_special(b: &[u8], i: usize) -> Option<usize> {
    match b[i] {
        b'\\' if b.get(i + 1) == Some(&b'\\') => Some(i + 2),
        b'\\' if b.get(i + 1) == Some(&b'$') && matches!(b.get(i + 2), Some(b'{' | b'[')) => {
            Some(i + 2)
        }
        b'$' if matches!(b.get(i + 1), Some(b'{' | b'[')) => {
            let close = find_close(b, i + 2, b[i + 1] == b'{')?;
            Some(close + 1)
        }
        _ => None,
    }
}

/// Split the inside of `${...}` into name, offset and length.
fn parse_var(inner: &str, depth: usize) -> Part {
    let b = inner.as_bytes();
    let mut parens: i64 = 0;
    let mut colon = None;
    let mut i = 0;
    while i < b.len() {
        if let Some(next) = skip_special(b, i) {
            i = next;
            continue;
        }
        match b[i] {
            b'(' => parens += 1,
            b')' => parens -= 1,
            b':' if parens == 0 => {
                colon = Some(i);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let Some(colon) = colon else {
        return Part::Var {
            name: parse_depth(inner, depth),
            offset: None,
            length: None,
        };
    };
    let name = parse_depth(&inner[..colon], depth);
    let rest = &inner[colon + 1..];
    let rb = rest.as_bytes();
    let mut j = 0;
    let mut second = None;
    while j < rb.len() {
        if let Some(next) = skip_special(rb, j) {
            j = next;
            continue;
        }
        if rb[j] == b':' {
            second = Some(j);
            break;
        }
        j += 1;
    }
    let (offset, length) = match second {
        Some(k) => (
            parse_depth(&rest[..k], depth),
            Some(parse_depth(&rest[k + 1..], depth)),
        ),
        None => (parse_depth(rest, depth), None),
    };
    Part::Var {
        name,
        offset: Some(offset),
        length,
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.0 {
            match part {
                Part::Lit(s) => {
                    let b = s.as_bytes();
                    let mut start = 0;
                    for i in 0..b.len() {
                        if b[i] == b'$' && matches!(b.get(i + 1), Some(b'{' | b'[')) {
                            f.write_str(&s[start..i])?;
                            f.write_str("\\")?;
                            start = i;
                        }
                    }
                    f.write_str(&s[start..])?;
                }
                Part::Var {
                    name,
                    offset,
                    length,
                } => {
                    write!(f, "${{{name}")?;
                    if let Some(o) = offset {
                        write!(f, ":{o}")?;
                    }
                    if let Some(l) = length {
                        write!(f, ":{l}")?;
                    }
                    f.write_str("}")?;
                }
                Part::Expr(t) => write!(f, "$[{t}]")?,
            }
        }
        Ok(())
    }
}

/// Asterisk substring semantics (`${VAR:offset:length}`, negative values too).
///
/// A negative offset counts from the end (clamped to the start); an offset past the end
/// gives `""`. `length` `None` means the rest; a negative length leaves that many
/// characters off the end; `Some(0)` gives `""`. Counts are in characters.
pub fn substring(value: &str, offset: i64, length: Option<i64>) -> String {
    let lr = value.chars().count() as i64;
    let length = length.unwrap_or(i64::MAX);
    if offset == 0 && length >= lr {
        return value.to_string();
    }
    let mut offset = offset;
    if offset < 0 {
        offset = (lr + offset).max(0);
    }
    if offset >= lr {
        return String::new();
    }
    let rest = lr - offset;
    let take = if length >= 0 {
        length.min(rest)
    } else if rest > length.saturating_neg() {
        rest + length
    } else {
        0
    };
    value
        .chars()
        .skip(offset as usize)
        .take(take as usize)
        .collect()
}

/// Offset and length from the substituted `offset` and `length` texts of a [`Part::Var`],
/// read as Asterisk's `sscanf(text, "%d:%d")` does: `${X::3}` has no valid offset and so
/// means the whole value; garbage after the numbers is ignored.
pub fn substring_spec(offset: &str, length: Option<&str>) -> (i64, Option<i64>) {
    let joined;
    let text = match length {
        Some(l) => {
            joined = format!("{offset}:{l}");
            joined.as_str()
        }
        None => offset,
    };
    let Some((off, rest)) = scan_int(text) else {
        return (0, None);
    };
    let len = rest.strip_prefix(':').and_then(scan_int).map(|(l, _)| l);
    (off, len)
}

/// `%d`: optional leading whitespace, sign, at least one digit. Saturates on overflow.
fn scan_int(s: &str) -> Option<(i64, &str)> {
    let t = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n = body.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return None;
    }
    let mut v: i64 = 0;
    for c in body[..n].bytes() {
        v = v.saturating_mul(10).saturating_add(i64::from(c - b'0'));
    }
    Some((if neg { -v } else { v }, &body[n..]))
}

/// Split a substituted function name into `(name, args)` as Asterisk's `func_args` does:
/// the name ends at the first `(`, the arguments at the last `)` (or the end, when it is
/// missing). `None` when there is no `(` (a plain variable).
pub fn split_function_call(name: &str) -> Option<(&str, &str)> {
    let open = name.find('(')?;
    let args = &name[open + 1..];
    let args = match args.rfind(')') {
        Some(close) => &args[..close],
        None => args,
    };
    Some((&name[..open], args))
}

/// Split dialplan application arguments as `AST_STANDARD_APP_ARGS` does: on `,` outside
/// parentheses, square brackets and double quotes; double quotes are removed, a backslash
/// is removed and the character after it is taken literally. `""` gives no arguments; a
/// trailing `,` gives a final empty one.
pub fn split_args(args: &str) -> Vec<String> {
    separate_args(args, ',', true, usize::MAX)
}

/// `__ast_app_separate_args(buf, delim, remove_chars, array, max)`.
///
/// Splits on `delim` outside parentheses, square brackets and (unless `delim` is `"`)
/// double quotes. With `remove_chars`, quotes are removed and a backslash is removed with
/// the character after it taken literally; without, both are kept. At most `max`
/// arguments: the last one is the rest of the text, unprocessed. An empty text gives no
/// arguments; a text ending with the delimiter gives a final empty argument.
pub fn separate_args(s: &str, delim: char, remove_chars: bool, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    if s.is_empty() || max == 0 {
        return out;
    }
    let mut rest = s;
    let mut hit_delim = false;
    while !rest.is_empty() && out.len() < max - 1 {
        let mut cur = String::new();
        let (mut paren, mut bracket, mut quote) = (0u32, 0u32, false);
        let mut consumed = rest.len();
        hit_delim = false;
        let mut it = rest.char_indices();
        while let Some((i, c)) = it.next() {
            match c {
                '(' => {
                    paren += 1;
                    cur.push(c);
                }
                ')' => {
                    paren = paren.saturating_sub(1);
                    cur.push(c);
                }
                '[' => {
                    bracket += 1;
                    cur.push(c);
                }
                ']' => {
                    bracket = bracket.saturating_sub(1);
                    cur.push(c);
                }
                '"' if delim != '"' => {
                    quote = !quote;
                    if !remove_chars {
                        cur.push(c);
                    }
                }
                '\\' => {
                    if !remove_chars {
                        cur.push(c);
                    }
                    if let Some((_, n)) = it.next() {
                        cur.push(n);
                    }
                }
                c if c == delim && paren == 0 && bracket == 0 && !quote => {
                    consumed = i + c.len_utf8();
                    hit_delim = true;
                    break;
                }
                c => cur.push(c),
            }
        }
        out.push(cur);
        rest = &rest[consumed..];
    }
    if !rest.is_empty() || hit_delim {
        out.push(rest.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Part {
        Part::Lit(s.to_string())
    }
    fn t(parts: Vec<Part>) -> Template {
        Template(parts)
    }
    fn var(name: &str) -> Part {
        Part::Var {
            name: t(vec![lit(name)]),
            offset: None,
            length: None,
        }
    }

    #[test]
    fn plain_text() {
        assert_eq!(parse(""), t(vec![]));
        assert_eq!(parse("hello"), t(vec![lit("hello")]));
        assert_eq!(parse("cost $5 {x} [y]"), t(vec![lit("cost $5 {x} [y]")]));
        assert_eq!(parse("a$"), t(vec![lit("a$")]));
        assert_eq!(parse("hello").literal(), Some("hello"));
        assert_eq!(parse("").literal(), Some(""));
        assert!(parse("${X}").literal().is_none());
    }

    #[test]
    fn variables() {
        assert_eq!(parse("${EXTEN}"), t(vec![var("EXTEN")]));
        assert_eq!(parse("a${B}c"), t(vec![lit("a"), var("B"), lit("c")]));
        assert_eq!(parse("${A}${B}"), t(vec![var("A"), var("B")]));
        assert_eq!(
            parse("${EXTEN:1}"),
            t(vec![Part::Var {
                name: t(vec![lit("EXTEN")]),
                offset: Some(t(vec![lit("1")])),
                length: None
            }])
        );
        assert_eq!(
            parse("${EXTEN:-4:2}"),
            t(vec![Part::Var {
                name: t(vec![lit("EXTEN")]),
                offset: Some(t(vec![lit("-4")])),
                length: Some(t(vec![lit("2")]))
            }])
        );
        assert_eq!(
            parse("${X:1:2:3}"),
            t(vec![Part::Var {
                name: t(vec![lit("X")]),
                offset: Some(t(vec![lit("1")])),
                length: Some(t(vec![lit("2:3")]))
            }])
        );
    }

    #[test]
    fn nested_names_and_offsets() {
        assert_eq!(
            parse("${${X}_suffix}"),
            t(vec![Part::Var {
                name: t(vec![var("X"), lit("_suffix")]),
                offset: None,
                length: None
            }])
        );
        assert_eq!(
            parse("${A:${OFF}:${LEN}}"),
            t(vec![Part::Var {
                name: t(vec![lit("A")]),
                offset: Some(t(vec![var("OFF")])),
                length: Some(t(vec![var("LEN")]))
            }])
        );
        // A `:` inside a nested substitution does not split the outer name.
        assert_eq!(
            parse("${${X:1}}"),
            t(vec![Part::Var {
                name: t(vec![Part::Var {
                    name: t(vec![lit("X")]),
                    offset: Some(t(vec![lit("1")])),
                    length: None
                }]),
                offset: None,
                length: None
            }])
        );
        // Braces inside count, as in Asterisk.
        assert_eq!(parse("${A{B}}"), t(vec![var("A{B}")]));
    }

    #[test]
    fn functions() {
        assert_eq!(
            parse("${CUT(${A},-,1)}"),
            t(vec![Part::Var {
                name: t(vec![lit("CUT("), var("A"), lit(",-,1)")]),
                offset: None,
                length: None
            }])
        );
        assert_eq!(
            parse("${CUT(a:b,-,1):2:3}"),
            t(vec![Part::Var {
                name: t(vec![lit("CUT(a:b,-,1)")]),
                offset: Some(t(vec![lit("2")])),
                length: Some(t(vec![lit("3")]))
            }])
        );
        assert_eq!(split_function_call("CUT(a,-,1)"), Some(("CUT", "a,-,1")));
        assert_eq!(split_function_call("F(a(b))"), Some(("F", "a(b)")));
        assert_eq!(split_function_call("F(open"), Some(("F", "open")));
        assert_eq!(split_function_call("F()"), Some(("F", "")));
        assert_eq!(split_function_call("PLAIN"), None);
    }

    #[test]
    fn expressions() {
        assert_eq!(parse("$[1+1]"), t(vec![Part::Expr(t(vec![lit("1+1")]))]));
        assert_eq!(
            parse("x$[${A} + $[2*3]]y"),
            t(vec![
                lit("x"),
                Part::Expr(t(vec![
                    var("A"),
                    lit(" + "),
                    Part::Expr(t(vec![lit("2*3")]))
                ])),
                lit("y")
            ])
        );
        assert_eq!(parse("$[a[1]]"), t(vec![Part::Expr(t(vec![lit("a[1]")]))]));
        assert_eq!(
            parse("${X:$[1+1]}"),
            t(vec![Part::Var {
                name: t(vec![lit("X")]),
                offset: Some(t(vec![Part::Expr(t(vec![lit("1+1")]))])),
                length: None
            }])
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(parse("\\${X}"), t(vec![lit("${X}")]));
        assert_eq!(parse("\\$[1]"), t(vec![lit("$[1]")]));
        assert_eq!(parse("\\\\${X}"), t(vec![lit("\\\\"), var("X")]));
        assert_eq!(
            parse("a\\,b"),
            t(vec![lit("a\\,b")]),
            "other escapes are kept"
        );
        assert_eq!(parse("\\$5"), t(vec![lit("\\$5")]));
        assert_eq!(parse("end\\"), t(vec![lit("end\\")]));
    }

    #[test]
    fn unbalanced() {
        assert_eq!(parse("${X"), t(vec![lit("${X")]));
        assert_eq!(parse("a${"), t(vec![lit("a${")]));
        assert_eq!(parse("$[1+"), t(vec![lit("$[1+")]));
        assert_eq!(parse("${A ${B}"), t(vec![lit("${A "), var("B")]));
        assert_eq!(
            parse("${}"),
            t(vec![Part::Var {
                name: t(vec![]),
                offset: None,
                length: None
            }])
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "",
            "plain",
            "${A}",
            "a${B:1:2}c",
            "${${X}_s:-3}",
            "${CUT(${A},-,1):2}",
            "$[${A} + $[1]]",
            "\\${X}",
            "\\\\${X}",
            "${X",
            "${A ${B}",
            "x\\$[1]",
        ] {
            let tpl = parse(s);
            assert_eq!(
                parse(&tpl.to_string()),
                tpl,
                "{s:?} -> {:?}",
                tpl.to_string()
            );
        }
    }

    #[test]
    fn display_round_trips_random() {
        use rand::{Rng, SeedableRng};
        let alphabet = ['$', '{', '}', '[', ']', '\\', ':', '(', ')', 'a', '1', '-'];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let len = rng.gen_range(0..16);
            let s: String = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let tpl = parse(&s);
            assert_eq!(
                parse(&tpl.to_string()),
                tpl,
                "{s:?} -> {:?}",
                tpl.to_string()
            );
        }
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let s = "${".repeat(5000) + &"}".repeat(5000);
        let _ = parse(&s);
        let s = "$[".repeat(5000) + &"]".repeat(5000);
        let _ = parse(&s);
    }

    #[test]
    fn substring_semantics() {
        assert_eq!(substring("1234567", 0, None), "1234567");
        assert_eq!(substring("1234567", 1, None), "234567");
        assert_eq!(substring("1234567", 1, Some(3)), "234");
        assert_eq!(substring("1234567", -4, None), "4567");
        assert_eq!(substring("1234567", -4, Some(2)), "45");
        assert_eq!(substring("1234567", -40, Some(2)), "12");
        assert_eq!(substring("1234567", 0, Some(-2)), "12345");
        assert_eq!(substring("1234567", 2, Some(-2)), "345");
        assert_eq!(substring("1234567", 5, Some(-2)), "");
        assert_eq!(substring("1234567", 0, Some(0)), "");
        assert_eq!(substring("1234567", 7, None), "");
        assert_eq!(substring("1234567", 100, Some(1)), "");
        assert_eq!(substring("1234567", 0, Some(100)), "1234567");
        assert_eq!(substring("", -1, Some(-1)), "");
        assert_eq!(substring("héllo", 1, Some(2)), "él");
        assert_eq!(substring("x", i64::MIN, Some(i64::MIN)), "");
    }

    #[test]
    fn substring_spec_is_sscanf() {
        assert_eq!(substring_spec("1", None), (1, None));
        assert_eq!(substring_spec("-4", Some("2")), (-4, Some(2)));
        assert_eq!(
            substring_spec("", Some("3")),
            (0, None),
            "${{X::3}} is the whole value"
        );
        assert_eq!(substring_spec("abc", None), (0, None));
        assert_eq!(substring_spec("2", Some("x")), (2, None));
        assert_eq!(substring_spec("1:2", None), (1, Some(2)));
        assert_eq!(substring_spec(" 3", Some(" 4")), (3, Some(4)));
        assert_eq!(substring_spec("2", Some("3:9")), (2, Some(3)));
        assert_eq!(
            substring_spec("99999999999999999999999", None),
            (i64::MAX, None)
        );
    }

    #[test]
    fn app_args() {
        let v = |s: &str| split_args(s);
        assert_eq!(v(""), Vec::<String>::new());
        assert_eq!(v("a"), ["a"]);
        assert_eq!(v("a,b,c"), ["a", "b", "c"]);
        assert_eq!(v("a,,c"), ["a", "", "c"]);
        assert_eq!(v("a,"), ["a", ""]);
        assert_eq!(v(","), ["", ""]);
        assert_eq!(v("\"a,b\",c"), ["a,b", "c"]);
        assert_eq!(v("x\"a,b\"y,c"), ["xa,by", "c"]);
        assert_eq!(v("a\\,b,c"), ["a,b", "c"]);
        assert_eq!(v("a\\\\,b"), ["a\\", "b"]);
        assert_eq!(v("say \\\"hi\\\",x"), ["say \"hi\"", "x"]);
        assert_eq!(v("FUNC(a,b),c"), ["FUNC(a,b)", "c"]);
        assert_eq!(v("[a,b],c"), ["[a,b]", "c"]);
        assert_eq!(v("a),b"), ["a)", "b"], "stray ')' does not go negative");
        assert_eq!(v("\\(,x"), ["(", "x"], "escaped '(' is not counted");
        assert_eq!(v("trailing\\"), ["trailing"]);
        assert_eq!(v(" a , b "), [" a ", " b "], "blanks are kept");
        assert_eq!(
            separate_args("a=b=c", '=', false, usize::MAX),
            ["a", "b", "c"]
        );
        assert_eq!(
            separate_args("\"a=b\"=\\c", '=', false, usize::MAX),
            ["\"a=b\"", "\\c"]
        );
    }
}
