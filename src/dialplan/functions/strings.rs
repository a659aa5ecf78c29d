//! String functions, as Asterisk's `func_strings.c`, `func_cut.c`, `func_sprintf.c`,
//! `func_base64.c` and `func_uri.c`: CUT, FIELDQTY, FIELDNUM, LISTFILTER, FILTER, REPLACE,
//! STRREPLACE, STRBETWEEN, REGEX, TOUPPER, TOLOWER, QUOTE, CSV_QUOTE, KEYPADHASH, SPRINTF,
//! BASE64_ENCODE, BASE64_DECODE, URIENCODE, URIDECODE, PASSTHRU, SHIFT, POP, PUSH, UNSHIFT,
//! ARRAY, HASH, HASHKEYS.
//!
//! Every function has a pure helper working on strings (tested below); the [`FuncDef`]
//! wrappers only fetch and store channel variables.
//!
//! Argument splitting is Asterisk's `__ast_app_separate_args` ([`separate_args`]): like
//! `AST_STANDARD_APP_ARGS`, the last declared argument takes the rest of the text verbatim.
//! Functions that take a variable *name* (CUT, FIELDQTY, REPLACE, SHIFT, ...) evaluate
//! `${name}`, so the name may itself be a function call (`CUT(CALLERID(num),-,1)`).

use crate::channel::Channel;
use crate::dialplan::pbx::{self, FuncDef, FuncRead, FuncResult, FuncWrite};
use base64::Engine as _;
use futures_util::future::BoxFuture;
use std::fmt::Write as _;

use super::math::{scan_double, scan_int};
pub use crate::dialplan::subst::separate_args;

pub fn funcs() -> Vec<FuncDef> {
    vec![
        FuncDef {
            name: "CUT",
            synopsis: "Slices and dices strings, based upon a named delimiter",
            read: Some(FuncRead::Async(cut_read)),
            write: None,
        },
        FuncDef {
            name: "FIELDQTY",
            synopsis: "Count the fields with an arbitrary delimiter",
            read: Some(FuncRead::Async(fieldqty_read)),
            write: None,
        },
        FuncDef {
            name: "FIELDNUM",
            synopsis: "Return the 1-based offset of a field in a list",
            read: Some(FuncRead::Async(fieldnum_read)),
            write: None,
        },
        FuncDef {
            name: "LISTFILTER",
            synopsis: "Remove an item from a list, by name",
            read: Some(FuncRead::Async(listfilter_read)),
            write: None,
        },
        FuncDef {
            name: "FILTER",
            synopsis: "Filter the string to include only the allowed characters",
            read: Some(FuncRead::Sync(|_, a| filter_args(a))),
            write: None,
        },
        FuncDef {
            name: "REPLACE",
            synopsis: "Replace a set of characters in a given string with another character",
            read: Some(FuncRead::Async(replace_read)),
            write: None,
        },
        FuncDef {
            name: "STRREPLACE",
            synopsis: "Replace instances of a substring within a string with another string",
            read: Some(FuncRead::Async(strreplace_read)),
            write: None,
        },
        FuncDef {
            name: "STRBETWEEN",
            synopsis: "Inserts a substring between each character in a string",
            read: Some(FuncRead::Async(strbetween_read)),
            write: None,
        },
        FuncDef {
            name: "REGEX",
            synopsis: "Check string against a regular expression",
            read: Some(FuncRead::Sync(|_, a| regex_match(a))),
            write: None,
        },
        FuncDef {
            name: "TOUPPER",
            synopsis: "Convert string to all uppercase letters",
            read: Some(FuncRead::Sync(|_, a| Ok(a.to_ascii_uppercase()))),
            write: None,
        },
        FuncDef {
            name: "TOLOWER",
            synopsis: "Convert string to all lowercase letters",
            read: Some(FuncRead::Sync(|_, a| Ok(a.to_ascii_lowercase()))),
            write: None,
        },
        FuncDef {
            name: "QUOTE",
            synopsis: "Quotes a given string, escaping embedded quotes as necessary",
            read: Some(FuncRead::Sync(|_, a| Ok(quote(a)))),
            write: None,
        },
        FuncDef {
            name: "CSV_QUOTE",
            synopsis: "Quotes a given string for use in a CSV file",
            read: Some(FuncRead::Sync(|_, a| Ok(csv_quote(a)))),
            write: None,
        },
        FuncDef {
            name: "KEYPADHASH",
            synopsis: "Hash the letters in string into equivalent keypad numbers",
            read: Some(FuncRead::Sync(|_, a| Ok(keypadhash(a)))),
            write: None,
        },
        FuncDef {
            name: "SPRINTF",
            synopsis: "Format a variable according to a format string",
            read: Some(FuncRead::Sync(|_, a| sprintf_args(a))),
            write: None,
        },
        FuncDef {
            name: "BASE64_ENCODE",
            synopsis: "Encode a string in base64",
            read: Some(FuncRead::Sync(|_, a| base64_encode(a))),
            write: None,
        },
        FuncDef {
            name: "BASE64_DECODE",
            synopsis: "Decode a base64 string",
            read: Some(FuncRead::Sync(|_, a| base64_decode(a))),
            write: None,
        },
        FuncDef {
            name: "URIENCODE",
            synopsis: "Encodes a string to URI-safe encoding according to RFC 2396",
            read: Some(FuncRead::Sync(|_, a| Ok(uri_encode(a)))),
            write: None,
        },
        FuncDef {
            name: "URIDECODE",
            synopsis: "Decodes a URI-encoded string according to RFC 2396",
            read: Some(FuncRead::Sync(|_, a| Ok(uri_decode(a)))),
            write: None,
        },
        FuncDef {
            name: "PASSTHRU",
            synopsis: "Pass the given argument back as a value",
            read: Some(FuncRead::Sync(|_, a| Ok(a.to_string()))),
            write: None,
        },
        FuncDef {
            name: "SHIFT",
            synopsis: "Removes and returns the first item off of a variable containing delimited text",
            read: Some(FuncRead::Async(shift_read)),
            write: None,
        },
        FuncDef {
            name: "POP",
            synopsis: "Removes and returns the last item off of a variable containing delimited text",
            read: Some(FuncRead::Async(pop_read)),
            write: None,
        },
        FuncDef {
            name: "PUSH",
            synopsis: "Appends one or more values to the end of a variable containing delimited text",
            read: None,
            write: Some(FuncWrite::Async(push_write)),
        },
        FuncDef {
            name: "UNSHIFT",
            synopsis: "Inserts one or more values to the beginning of a variable containing delimited text",
            read: None,
            write: Some(FuncWrite::Async(unshift_write)),
        },
        FuncDef {
            name: "ARRAY",
            synopsis: "Allows setting multiple variables at once",
            read: None,
            write: Some(FuncWrite::Sync(array_write)),
        },
        FuncDef {
            name: "HASH",
            synopsis: "Implementation of a dialplan associative array",
            read: Some(FuncRead::Sync(hash_read)),
            write: Some(FuncWrite::Sync(hash_write)),
        },
        FuncDef {
            name: "HASHKEYS",
            synopsis: "Retrieve the keys of the HASH() function",
            read: Some(FuncRead::Sync(|c, a| Ok(hash_keys(c, a).join(",")))),
            write: None,
        },
    ]
}

// ---------------------------------------------------------------------------------------
// Argument parsing and escapes
// ---------------------------------------------------------------------------------------

/// `AST_STANDARD_APP_ARGS` with `max` declared arguments.
pub fn std_args(s: &str, max: usize) -> Vec<String> {
    separate_args(s, ',', true, max)
}

fn hex_val(b: Option<&u8>) -> Option<u8> {
    let b = *b?;
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `ast_get_encoded_char` on bytes: `\n`, `\r`, `\t`, `\xHH` (one or two hex digits),
/// `\0ooo` (octal), `\c` (the character itself), or a plain byte. Returns the byte and how
/// many bytes were consumed; `None` for an empty input or `\x` without a hex digit.
pub fn encoded_byte(s: &[u8]) -> Option<(u8, usize)> {
    let first = *s.first()?;
    if first != b'\\' {
        return Some((first, 1));
    }
    match s.get(1) {
        None => Some((b'\\', 1)),
        Some(b'n') => Some((b'\n', 2)),
        Some(b'r') => Some((b'\r', 2)),
        Some(b't') => Some((b'\t', 2)),
        Some(b'x') => {
            let h1 = hex_val(s.get(2))?;
            match hex_val(s.get(3)) {
                Some(h2) => Some(((h1 << 4) | h2, 4)),
                None => Some((h1, 3)),
            }
        }
        Some(b'0') => {
            let mut v: u8 = 0;
            let mut n = 2;
            while let Some(d @ b'0'..=b'7') = s.get(n) {
                v = v.wrapping_shl(3).wrapping_add(d - b'0');
                n += 1;
            }
            Some((v, n))
        }
        Some(&c) => Some((c, 2)),
    }
}

/// `ast_get_encoded_char` on text: like [`encoded_byte`], but a plain (or backslash-quoted)
/// non-ASCII character is taken whole. Escaped byte values become the Latin-1 character.
pub fn encoded_char(s: &str) -> Option<(char, usize)> {
    let mut it = s.chars();
    match it.next()? {
        '\\' => match it.next() {
            Some(c) if !c.is_ascii() => Some((c, 1 + c.len_utf8())),
            _ => encoded_byte(s.as_bytes()).map(|(b, n)| (char::from(b), n)),
        },
        c => Some((c, c.len_utf8())),
    }
}

/// `ast_get_encoded_str`: decode escapes until the end or the first invalid one, at most
/// `max` characters.
pub fn encoded_str(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut rest = s;
    let mut n = 0;
    while n < max {
        let Some((c, used)) = encoded_char(rest) else {
            break;
        };
        out.push(c);
        n += 1;
        rest = &rest[used..];
    }
    out
}

/// `${name}` evaluated on the channel (the name may be a function call).
async fn var_value(chan: &mut Channel, name: &str) -> String {
    pbx::substitute_str(chan, &format!("${{{}}}", name)).await
}

// ---------------------------------------------------------------------------------------
// CUT, FIELDQTY, FIELDNUM, LISTFILTER
// ---------------------------------------------------------------------------------------

/// `%d` as sscanf reads it, up to 30 characters: (value, rest).
fn scan_d(s: &str) -> Option<(i64, &str)> {
    scan_int(s)
}

/// One `&`-separated element of a CUT range spec: (start, stop).
fn cut_range(r: &str) -> Option<(i64, i64)> {
    // "%d-%d"
    if let Some((a, rest)) = scan_d(r) {
        if let Some(rest2) = rest.strip_prefix('-') {
            if let Some((b, _)) = scan_d(rest2) {
                return Some((a, b));
            }
        }
    }
    // "-%d"
    if let Some(rest) = r.strip_prefix('-') {
        if let Some((b, _)) = scan_d(rest) {
            return Some((1, b));
        }
    }
    // "%d%1c" with '-', then "%d"
    if let Some((a, rest)) = scan_d(r) {
        if rest.starts_with('-') {
            return Some((a, i64::MAX));
        }
        return Some((a, a));
    }
    None
}

/// CUT on a value: `fields` like `2`, `2-3`, `-2`, `3-`, `1&3`. Fields are output in
/// order; asking for an earlier field after a later one gives nothing for it.
pub fn cut(value: &str, delim: char, spec: &str) -> Result<String, String> {
    let mut out = String::new();
    if value.is_empty() {
        return Ok(out);
    }
    let fields: Vec<&str> = value.split(delim).collect();
    let mut pos = 0usize; // index of the next field; current field number is pos + 1
    let mut emitted = 0usize;
    let mut ranges = spec.split('&');
    while pos < fields.len() {
        let Some(r) = ranges.next() else { break };
        let (start, stop) = cut_range(r)
            .ok_or_else(|| "Usage: CUT(<varname>,<char-delim>,<range-spec>)".to_string())?;
        while pos < fields.len() && (pos as i64 + 1) < start {
            pos += 1;
        }
        if pos as i64 + 1 > start {
            tracing::debug!("CUT: already past the field wanted ({})", r);
        }
        while pos < fields.len() && (pos as i64 + 1) <= stop {
            if emitted > 0 {
                out.push(delim);
            }
            out.push_str(fields[pos]);
            emitted += 1;
            pos += 1;
        }
    }
    Ok(out)
}

fn cut_read<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, FuncResult> {
    Box::pin(async move {
        let a = std_args(args, 3);
        if a.len() < 3 {
            return Err(
                "Syntax: CUT(<varname>,<char-delim>,<range-spec>) - missing argument!".into(),
            );
        }
        let value = var_value(chan, &a[0]).await;
        let delim = encoded_char(&a[1]).map(|(c, _)| c).unwrap_or('-');
        cut(&value, delim, &a[2])
    })
}

/// FIELDQTY on a value. `delim` None: the delimiter argument is absent (count 1);
/// `Some(None)`: present but empty or invalid (no splitting).
pub fn field_qty(value: &str, delim: Option<Option<char>>) -> usize {
    match delim {
        None => 1,
        Some(_) if value.is_empty() => 0,
        Some(None) => 1,
        Some(Some(d)) => value.split(d).count(),
    }
}

fn fieldqty_read<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, FuncResult> {
    Box::pin(async move {
        let a = std_args(args, 2);
        let delim = a.get(1).map(|d| encoded_char(d).map(|(c, _)| c));
        let value = if delim.is_some() {
            var_value(chan, &a[0]).await
        } else {
            String::new()
        };
        Ok(field_qty(&value, delim).to_string())
    })
}

/// FIELDNUM on a value: the 1-based number of the first field equal (ASCII
/// case-insensitively) to `field`, or 0.
pub fn field_num(value: &str, delim: &str, field: &str) -> Result<usize, String> {
    if value.is_empty() || delim.is_empty() {
        return Ok(0);
    }
    let (d, _) = encoded_char(delim).ok_or_else(|| format!("invalid delimiter '{delim}'"))?;
    Ok(value
        .split(d)
        .position(|f| f.eq_ignore_ascii_case(field))
        .map(|p| p + 1)
        .unwrap_or(0))
}

fn fieldnum_read<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, FuncResult> {
    Box::pin(async move {
        let a = std_args(args, 3);
        if a.len() < 3 {
            return Err("Usage: FIELDNUM(<listname>,<delimiter>,<fieldvalue>)".into());
        }
        let value = var_value(chan, &a[0]).await;
        field_num(&value, &a[1], &a[2]).map(|n| n.to_string())
    })
}

/// LISTFILTER on a value: remove every field equal to `field`. `delim` is decoded as a
/// string (default `,`).
pub fn list_filter(value: &str, delim: &str, field: &str) -> String {
    if !value.contains(field) {
        return value.to_string();
    }
    let mut d = encoded_str(delim, usize::MAX);
    if d.is_empty() {
        d = ",".into();
    }
    value
        .split(d.as_str())
        .filter(|f| *f != field)
        .collect::<Vec<_>>()
        .join(&d)
}

fn listfilter_read<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, FuncResult> {
    Box::pin(async move {
        let a = std_args(args, 3);
        if a.len() < 3 {
            return Err("Usage: LISTFILTER(<listname>,<delimiter>,<fieldvalue>)".into());
        }
        let value = var_value(chan, &a[0]).await;
        if value.is_empty() {
            return Err(String::new());
        }
        Ok(list_filter(&value, &a[1], &a[2]))
    })
}

// ---------------------------------------------------------------------------------------
// FILTER, REPLACE, STRREPLACE, STRBETWEEN, REGEX
// ---------------------------------------------------------------------------------------

/// FILTER: keep only the bytes of `s` listed in `allowed` (ranges `a-z`, escapes `\x41`,
/// `\-` for a literal dash). Works on bytes, as Asterisk does.
pub fn filter(allowed: &str, s: &str) -> Result<String, String> {
    let mut bits = [false; 256];
    let a = allowed.as_bytes();
    let mut i = 0;
    while i < a.len() {
        let (c1, used) =
            encoded_byte(&a[i..]).ok_or_else(|| format!("invalid escape in FILTER '{allowed}'"))?;
        i += used;
        if a.get(i) == Some(&b'-') {
            let (c2, used2) = match encoded_byte(&a[i + 1..]) {
                Some((c, n)) => (c, n),
                None => (c1, 0),
            };
            i += used2 + 1;
            if c2 < c1 {
                tracing::warn!(
                    "Range wrapping in FILTER({}). This may not be what you want.",
                    allowed
                );
            }
            let mut ac = c1;
            while ac != c2 {
                bits[ac as usize] = true;
                ac = ac.wrapping_add(1);
            }
            bits[ac as usize] = true;
        } else {
            bits[c1 as usize] = true;
        }
    }
    bits[0] = false;
    let out: Vec<u8> = s.bytes().filter(|b| bits[*b as usize]).collect();
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn filter_args(args: &str) -> FuncResult {
    // AST_STANDARD_RAW_ARGS: quotes and backslashes are kept for the escape decoder.
    let a = separate_args(args, ',', false, 2);
    if a.len() < 2 {
        return Err("Usage: FILTER(<allowed-chars>,<string>)".into());
    }
    if a[0].starts_with('"') {
        tracing::warn!("FILTER allowed characters includes the quote (\") character.  This may not be what you want.");
    }
    filter(&a[0], &a[1])
}

/// REPLACE on a value: every character of `find` becomes `replace` (or is deleted).
pub fn replace_chars(value: &str, find: &str, replace: Option<char>) -> String {
    let set: Vec<char> = find.chars().collect();
    value
        .chars()
        .filter_map(|c| if set.contains(&c) { replace } else { Some(c) })
        .collect()
}

fn replace_read<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, FuncResult> {
    Box::pin(async move {
        let a = std_args(args, 3);
        if a.len() < 2 {
            return Err("Usage: REPLACE(<varname>,<search-chars>[,<replace-char>])".into());
        }
        let find = encoded_str(&a[1], 255);
        let replace = a
            .get(2)
            .and_then(|r| encoded_char(r))
            .map(|(c, _)| c)
            .filter(|c| *c != '\0');
        if find.is_empty() || a[0].is_empty() {
            return Err(
                "The characters to search for and the variable name must not be empty.".into(),
            );
        }
        let value = var_value(chan, &a[0]).await;
        if value.is_empty() {
            return Err(String::new());
        }
        Ok(replace_chars(&value, &find, replace))
    })
}

/// STRREPLACE on a value: replace `find` by `replace`, at most `max` times (None: all).
pub fn str_replace(value: &str, find: &str, replace: &str, max: Option<usize>) -> String {
    if find.is_empty() {
        return value.to_string();
    }
    let mut out = String::new();
    let mut rest = value;
    let mut count = 0usize;
    while max.is_none_or(|m| count < m) {
        let Some(p) = rest.find(find) else { break };
        out.push_str(&rest[..p]);
        out.push_str(replace);
        rest = &rest[p + find.len()..];
        count += 1;
    }
    out.push_str(rest);
    out
}

fn strreplace_read<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, FuncResult> {
    Box::pin(async move {
        let a = std_args(args, 5);
        if a.len() < 2 {
            return Err(
                "Usage: STRREPLACE(<varname>,<find-string>[,<replace-string>,[<max-replacements>]])"
                    .into(),
            );
        }
        if a[0].is_empty() {
            return Err(String::new());
        }
        if a[1].is_empty() {
            return Err("No <find-string> specified".into());
        }
        let value = var_value(chan, &a[0]).await;
        let max = a
            .get(3)
            .and_then(|m| scan_int(m))
            .map(|(n, _)| n)
            .filter(|n| *n > 0)
            .map(|n| n as usize);
        Ok(str_replace(
            &value,
            &a[1],
            a.get(2).map(|s| s.as_str()).unwrap_or(""),
            max,
        ))
    })
}

/// STRBETWEEN on a value: `insert` between every two characters.
pub fn str_between(value: &str, insert: &str) -> String {
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i > 0 {
            out.push_str(insert);
        }
        out.push(c);
    }
    out
}

fn strbetween_read<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, FuncResult> {
    Box::pin(async move {
        let a = std_args(args, 3);
        if a.len() != 2 || a[0].is_empty() {
            return Err("Usage: STRBETWEEN(<varname>,<insert-string>)".into());
        }
        let value = var_value(chan, &a[0]).await;
        Ok(str_between(&value, &a[1]))
    })
}

/// Compile a POSIX extended regular expression (as `regcomp(REG_EXTENDED)`: `.` matches a
/// newline, `^`/`$` only at the ends). Size-limited so hostile patterns fail cleanly.
pub fn compile_ere(re: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(re)
        .dot_matches_new_line(true)
        .size_limit(1 << 20)
        .nest_limit(64)
        .build()
        .map_err(|e| format!("Malformed input REGEX({re}): {e}"))
}

/// REGEX(`"regex" string`): `1` when the string matches. One space or tab after the closing
/// quote is skipped.
pub fn regex_match(args: &str) -> FuncResult {
    let a = separate_args(args, '"', true, 3);
    if a.len() != 3 {
        return Err(
            "Unexpected arguments: should have been in the form '\"<regex>\" <string>'".into(),
        );
    }
    let s = a[2]
        .strip_prefix(' ')
        .or_else(|| a[2].strip_prefix('\t'))
        .unwrap_or(&a[2]);
    let re = compile_ere(&a[1])?;
    Ok(if re.is_match(s) { "1" } else { "0" }.into())
}

// ---------------------------------------------------------------------------------------
// QUOTE, CSV_QUOTE, KEYPADHASH
// ---------------------------------------------------------------------------------------

/// QUOTE: wrap in double quotes, escaping `\` and `"` with a backslash.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// CSV_QUOTE: wrap in double quotes, doubling embedded quotes.
pub fn csv_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// KEYPADHASH: letters to their keypad digits; other characters are dropped.
pub fn keypadhash(s: &str) -> String {
    s.chars()
        .filter_map(|c| {
            let d = match c.to_ascii_lowercase() {
                '0' => '0',
                '1' => '1',
                'a' | 'b' | 'c' | '2' => '2',
                'd' | 'e' | 'f' | '3' => '3',
                'g' | 'h' | 'i' | '4' => '4',
                'j' | 'k' | 'l' | '5' => '5',
                'm' | 'n' | 'o' | '6' => '6',
                'p' | 'q' | 'r' | 's' | '7' => '7',
                't' | 'u' | 'v' | '8' => '8',
                'w' | 'x' | 'y' | 'z' | '9' => '9',
                _ => return None,
            };
            Some(d)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// SPRINTF
// ---------------------------------------------------------------------------------------

/// One parsed printf conversion.
#[derive(Debug, Default, Clone)]
pub struct Spec {
    pub minus: bool,
    pub plus: bool,
    pub space: bool,
    pub alt: bool,
    pub zero: bool,
    pub width: usize,
    pub precision: Option<usize>,
    /// `hh`, `h`, or something else (ignored).
    pub length: String,
    pub conv: char,
}

/// Largest width or precision honoured (glibc fails on absurd ones; we clamp).
const MAX_FIELD: usize = 4096;

fn parse_spec(spec: &[char]) -> Spec {
    // spec starts with '%' and ends with the conversion character.
    let mut s = Spec {
        conv: *spec.last().unwrap_or(&'%'),
        ..Default::default()
    };
    let body = &spec[1..spec.len().saturating_sub(1).max(1)];
    let mut i = 0;
    while i < body.len() && "#0- +'I".contains(body[i]) {
        match body[i] {
            '#' => s.alt = true,
            '0' => s.zero = true,
            '-' => s.minus = true,
            ' ' => s.space = true,
            '+' => s.plus = true,
            _ => {}
        }
        i += 1;
    }
    let mut w = 0usize;
    while i < body.len() && body[i].is_ascii_digit() {
        w = (w * 10 + body[i] as usize - '0' as usize).min(MAX_FIELD);
        i += 1;
    }
    s.width = w;
    if i < body.len() && body[i] == '.' {
        i += 1;
        let mut p = 0usize;
        while i < body.len() && body[i].is_ascii_digit() {
            p = (p * 10 + body[i] as usize - '0' as usize).min(MAX_FIELD);
            i += 1;
        }
        s.precision = Some(p);
    }
    s.length = body[i..].iter().collect();
    s
}

/// Pad `body` (sign/prefix already split off into `prefix`) to the spec's width.
fn pad(spec: &Spec, prefix: &str, body: &str, zero_ok: bool) -> String {
    let len = prefix.chars().count() + body.chars().count();
    let fill = spec.width.saturating_sub(len);
    let mut out = String::with_capacity(len + fill);
    if spec.minus {
        out.push_str(prefix);
        out.push_str(body);
        out.extend(std::iter::repeat_n(' ', fill));
    } else if spec.zero && zero_ok {
        out.push_str(prefix);
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(body);
    } else {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(prefix);
        out.push_str(body);
    }
    out
}

/// C's formatting of an `int` argument for `d i o u x X c`.
pub fn format_int(spec: &Spec, v: i32) -> String {
    let (sv, uv): (i64, u64) = match spec.length.as_str() {
        "hh" => (v as i8 as i64, v as u8 as u64),
        "h" => (v as i16 as i64, v as u16 as u64),
        _ => (v as i64, v as u32 as u64),
    };
    if spec.conv == 'c' {
        let c = char::from(v as u8);
        return pad(spec, "", &c.to_string(), false);
    }
    let (prefix, mut digits) = match spec.conv {
        'd' | 'i' => {
            let sign = if sv < 0 {
                "-"
            } else if spec.plus {
                "+"
            } else if spec.space {
                " "
            } else {
                ""
            };
            (sign.to_string(), sv.unsigned_abs().to_string())
        }
        'o' => (String::new(), format!("{uv:o}")),
        'u' => (String::new(), uv.to_string()),
        'x' => (
            if spec.alt && uv != 0 { "0x" } else { "" }.to_string(),
            format!("{uv:x}"),
        ),
        _ => (
            if spec.alt && uv != 0 { "0X" } else { "" }.to_string(),
            format!("{uv:X}"),
        ),
    };
    let is_zero = uv == 0 && sv == 0;
    if let Some(p) = spec.precision {
        if p == 0 && is_zero {
            digits.clear();
        } else if digits.len() < p {
            digits = "0".repeat(p - digits.len()) + &digits;
        }
    }
    if spec.conv == 'o' && spec.alt && !digits.starts_with('0') {
        digits.insert(0, '0');
    }
    pad(spec, &prefix, &digits, spec.precision.is_none())
}

/// `%e` body for a non-negative finite value: mantissa with `prec` decimals, C exponent.
fn exp_body(v: f64, prec: usize, upper: bool) -> (String, i32) {
    let s = format!("{:.*e}", prec, v);
    let (m, e) = s.split_once('e').unwrap_or((s.as_str(), "0"));
    let exp: i32 = e.parse().unwrap_or(0);
    let body = format!(
        "{}{}{}{:02}",
        m,
        if upper { 'E' } else { 'e' },
        if exp < 0 { '-' } else { '+' },
        exp.unsigned_abs()
    );
    (body, exp)
}

fn strip_trailing_zeros(s: &str) -> String {
    // Only the fractional part of the mantissa (before any exponent).
    let (m, e) = match s.find(['e', 'E']) {
        Some(p) => (&s[..p], &s[p..]),
        None => (s, ""),
    };
    if !m.contains('.') {
        return s.to_string();
    }
    let m = m.trim_end_matches('0').trim_end_matches('.');
    format!("{m}{e}")
}

/// `%a`: hexadecimal floating point, as glibc prints it.
fn hex_float(v: f64, prec: Option<usize>, upper: bool) -> String {
    let bits = v.to_bits();
    let exp_bits = ((bits >> 52) & 0x7ff) as i32;
    let mut mant = bits & ((1u64 << 52) - 1);
    let (mut lead, exp) = if exp_bits == 0 {
        if mant == 0 {
            (0u64, 0)
        } else {
            (0u64, -1022)
        }
    } else {
        (1u64, exp_bits - 1023)
    };
    let mut digits = format!("{mant:013x}");
    match prec {
        Some(p) if p < 13 => {
            let shift = 4 * (13 - p) as u32;
            let half = 1u64 << (shift - 1);
            let rem = mant & ((1u64 << shift) - 1);
            mant >>= shift;
            if rem > half || (rem == half && mant & 1 == 1) {
                mant += 1;
                if p == 0 || mant >> (4 * p) != 0 {
                    lead += 1;
                    mant &= (1u64 << (4 * p)) - 1;
                }
            }
            digits = if p == 0 {
                String::new()
            } else {
                format!("{:0width$x}", mant, width = p)
            };
        }
        Some(p) => {
            digits.extend(std::iter::repeat_n('0', p - 13));
        }
        None => {
            digits = digits.trim_end_matches('0').to_string();
        }
    }
    let mut s = format!("0x{lead}");
    if !digits.is_empty() {
        s.push('.');
        s.push_str(&digits);
    }
    let _ = write!(
        s,
        "p{}{}",
        if exp < 0 { '-' } else { '+' },
        exp.unsigned_abs()
    );
    if upper {
        s.to_ascii_uppercase()
    } else {
        s
    }
}

/// C's formatting of a `double` for `e E f F g G a A`.
pub fn format_double(spec: &Spec, v: f64) -> String {
    let upper = spec.conv.is_ascii_uppercase();
    let sign = if v.is_sign_negative() && !v.is_nan() {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    };
    if !v.is_finite() {
        let body = if v.is_nan() { "nan" } else { "inf" };
        let body = if upper {
            body.to_ascii_uppercase()
        } else {
            body.to_string()
        };
        return pad(spec, sign, &body, false);
    }
    let a = v.abs();
    let body = match spec.conv.to_ascii_lowercase() {
        'f' => {
            let p = spec.precision.unwrap_or(6);
            let mut b = format!("{:.*}", p, a);
            if spec.alt && p == 0 {
                b.push('.');
            }
            b
        }
        'e' => {
            let p = spec.precision.unwrap_or(6);
            let (mut b, _) = exp_body(a, p, upper);
            if spec.alt && p == 0 {
                if let Some(pos) = b.find(['e', 'E']) {
                    b.insert(pos, '.');
                }
            }
            b
        }
        'g' => {
            let p = match spec.precision {
                None => 6,
                Some(0) => 1,
                Some(p) => p,
            };
            let (_, x) = exp_body(a, p - 1, upper);
            let b = if (x as i64) < p as i64 && x >= -4 {
                format!("{:.*}", (p as i64 - 1 - x as i64) as usize, a)
            } else {
                exp_body(a, p - 1, upper).0
            };
            if spec.alt {
                if b.contains('.') {
                    b
                } else {
                    match b.find(['e', 'E']) {
                        Some(pos) => format!("{}.{}", &b[..pos], &b[pos..]),
                        None => b + ".",
                    }
                }
            } else {
                strip_trailing_zeros(&b)
            }
        }
        _ => {
            // 'a': the "0x" prefix goes before zero padding.
            let h = hex_float(a, spec.precision, upper);
            let (pre, rest) = h.split_at(2);
            return pad(spec, &format!("{sign}{pre}"), rest, true);
        }
    };
    pad(spec, sign, &body, true)
}

/// SPRINTF(format,arg1,...): C printf with `int`, `double` and string arguments.
pub fn sprintf(format: &str, args: &[String]) -> Result<String, String> {
    #[derive(PartialEq, Clone, Copy)]
    enum St {
        Text,
        Flag,
        Width,
        Precision,
        Length,
        Conversion,
    }
    let f: Vec<char> = format.chars().collect();
    let mut out = String::new();
    let mut st = St::Text;
    let mut start = 0usize;
    let mut argi = 0usize;
    let mut i = 0usize;
    while i < f.len() {
        let c = f[i];
        match st {
            St::Text => {
                if c == '%' {
                    st = St::Flag;
                    start = i;
                } else {
                    out.push(c);
                }
                i += 1;
            }
            St::Flag => {
                if "#0- +'I".contains(c) {
                    i += 1;
                } else {
                    st = St::Width;
                }
            }
            St::Width => {
                if c.is_ascii_digit() {
                    i += 1;
                } else if c == '.' {
                    st = St::Precision;
                    i += 1;
                } else {
                    st = St::Length;
                }
            }
            St::Precision => {
                if c.is_ascii_digit() {
                    i += 1;
                } else {
                    st = St::Length;
                }
            }
            St::Length => {
                if c == 'h' || c == 'l' {
                    if f.get(i + 1) == Some(&c) {
                        i += 1;
                    }
                    st = St::Conversion;
                    i += 1;
                } else if "Lqjzt".contains(c) {
                    st = St::Conversion;
                    i += 1;
                } else {
                    st = St::Conversion;
                }
            }
            St::Conversion => {
                let spec_text: String = f[start..=i].iter().collect();
                if "diouxXc".contains(c) {
                    let arg = args.get(argi).ok_or_else(|| {
                        "SPRINTF() has more format specifiers than arguments!".to_string()
                    })?;
                    argi += 1;
                    let n = scan_int(arg).map(|(n, _)| n).ok_or_else(|| {
                        format!(
                            "Argument '{arg}' is not an integer number for format '{spec_text}'"
                        )
                    })?;
                    let n = n.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
                    out.push_str(&format_int(&parse_spec(&f[start..=i]), n));
                } else if "eEfFgGaA".contains(c) {
                    let arg = args.get(argi).ok_or_else(|| {
                        "SPRINTF() has more format specifiers than arguments!".to_string()
                    })?;
                    argi += 1;
                    let d = scan_double(arg).ok_or_else(|| {
                        format!("Argument '{arg}' is not a floating point number for format '{spec_text}'")
                    })?;
                    out.push_str(&format_double(&parse_spec(&f[start..=i]), d));
                } else if c == 's' {
                    let spec = parse_spec(&f[start..=i]);
                    let arg = args.get(argi).map(|s| s.as_str()).unwrap_or("(null)");
                    argi += 1;
                    let body: String = match spec.precision {
                        Some(p) => arg.chars().take(p).collect(),
                        None => arg.to_string(),
                    };
                    out.push_str(&pad(&spec, "", &body, false));
                } else if c == '%' {
                    out.push('%');
                } else {
                    return Err(format!(
                        "Format type not supported: '{}' with argument '{}'",
                        spec_text,
                        args.get(argi).map(|s| s.as_str()).unwrap_or("(null)")
                    ));
                }
                st = St::Text;
                i += 1;
            }
        }
    }
    Ok(out)
}

fn sprintf_args(args: &str) -> FuncResult {
    let a = std_args(args, 101);
    let Some((format, rest)) = a.split_first() else {
        return Ok(String::new());
    };
    sprintf(format, rest)
}

// ---------------------------------------------------------------------------------------
// BASE64, URI
// ---------------------------------------------------------------------------------------

pub fn base64_encode(s: &str) -> FuncResult {
    if s.is_empty() {
        return Err("Syntax: BASE64_ENCODE(<data>) - missing argument!".into());
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(s.as_bytes()))
}

/// `ast_base64decode`: stops at `=` or the end; characters outside the alphabet count as
/// zero bits (Asterisk is that lenient); leftover bits are dropped.
pub fn base64_decode_bytes(s: &str) -> Vec<u8> {
    fn val(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut byte, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        if c == b'=' {
            break;
        }
        byte = (byte << 6) | val(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((byte >> bits) & 0xff) as u8);
        }
        byte &= (1 << bits) - 1;
    }
    // A NUL ends the C string.
    if let Some(p) = out.iter().position(|b| *b == 0) {
        out.truncate(p);
    }
    out
}

pub fn base64_decode(s: &str) -> FuncResult {
    if s.is_empty() {
        return Err("Syntax: BASE64_DECODE(<base_64 string>) - missing argument!".into());
    }
    Ok(String::from_utf8_lossy(&base64_decode_bytes(s)).into_owned())
}

/// `ast_uri_encode(.., ast_uri_http)`: alphanumerics and `-_.!~*'()` stay, every other
/// byte becomes `%XX` (upper-case hex).
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `ast_uri_decode(.., ast_uri_http_legacy)`: `+` is a space; `%` with one or two hex
/// digits (and two characters present) is that byte; anything else is copied.
pub fn uri_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'+' {
            out.push(b' ');
        } else if c == b'%' && i + 2 < b.len() {
            match hex_val(b.get(i + 1)) {
                Some(h1) => {
                    let v = match hex_val(b.get(i + 2)) {
                        Some(h2) => (h1 << 4) | h2,
                        None => h1,
                    };
                    out.push(v);
                    i += 2;
                }
                None => out.push(c),
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    if let Some(p) = out.iter().position(|b| *b == 0) {
        out.truncate(p);
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------
// SHIFT, POP, PUSH, UNSHIFT, ARRAY
// ---------------------------------------------------------------------------------------

/// SHIFT (`first`) or POP: (item returned, new value of the variable).
pub fn shift_pop(value: &str, delim: Option<char>, first: bool) -> (String, String) {
    let found = delim.and_then(|d| {
        if first {
            value.find(d).map(|p| (p, d.len_utf8()))
        } else {
            value.rfind(d).map(|p| (p, d.len_utf8()))
        }
    });
    match found {
        None => (value.to_string(), String::new()),
        Some((p, dl)) => {
            let (before, after) = (&value[..p], &value[p + dl..]);
            if first {
                (before.to_string(), after.to_string())
            } else {
                (after.to_string(), before.to_string())
            }
        }
    }
}

/// The delimiter argument of SHIFT/POP/PUSH/UNSHIFT: `,` unless given.
fn list_delim(a: &[String]) -> Option<char> {
    match a.get(1) {
        Some(d) if !d.is_empty() => encoded_char(d).map(|(c, _)| c).filter(|c| *c != '\0'),
        _ => Some(','),
    }
}

async fn shift_pop_read(chan: &mut Channel, args: &str, first: bool) -> FuncResult {
    let a = std_args(args, 2);
    let var = a.first().cloned().unwrap_or_default();
    if var.is_empty() {
        return Err(format!(
            "{} requires a variable name",
            if first { "SHIFT" } else { "POP" }
        ));
    }
    let before = var_value(chan, &var).await;
    let delim = list_delim(&a);
    if before.is_empty() {
        return Err(String::new());
    }
    let (item, rest) = shift_pop(&before, delim, first);
    pbx::set_var(chan, &var, &rest);
    Ok(item)
}

fn shift_read<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, FuncResult> {
    Box::pin(shift_pop_read(chan, args, true))
}

fn pop_read<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, FuncResult> {
    Box::pin(shift_pop_read(chan, args, false))
}

/// PUSH (append) or UNSHIFT (`first`): the variable's new value.
pub fn push_unshift(previous: &str, new: &str, delim: char, first: bool) -> String {
    if previous.is_empty() {
        new.to_string()
    } else if first {
        format!("{new}{delim}{previous}")
    } else {
        format!("{previous}{delim}{new}")
    }
}

async fn push_unshift_write(
    chan: &mut Channel,
    args: &str,
    value: &str,
    first: bool,
) -> Result<(), String> {
    let a = std_args(args, 2);
    let var = a.first().cloned().unwrap_or_default();
    if var.is_empty() {
        return Err(format!(
            "{} requires a variable name",
            if first { "UNSHIFT" } else { "PUSH" }
        ));
    }
    let delim = list_delim(&a).unwrap_or(',');
    // Up to two leading underscores only mark inheritance.
    let n = var.bytes().take_while(|b| *b == b'_').count().min(2);
    let previous = var_value(chan, &var[n..]).await;
    let new = push_unshift(&previous, value, delim, first);
    pbx::set_var(chan, &var, &new);
    Ok(())
}

fn push_write<'a>(
    chan: &'a mut Channel,
    args: &'a str,
    value: &'a str,
) -> BoxFuture<'a, Result<(), String>> {
    Box::pin(push_unshift_write(chan, args, value, false))
}

fn unshift_write<'a>(
    chan: &'a mut Channel,
    args: &'a str,
    value: &'a str,
) -> BoxFuture<'a, Result<(), String>> {
    Box::pin(push_unshift_write(chan, args, value, true))
}

/// ARRAY(var1,var2,...)=val1,val2,...: pairs of (name, value); names without a value get
/// an empty value.
pub fn array_pairs(names: &str, values: &str) -> Vec<(String, String)> {
    let names = std_args(names, 100);
    let values = std_args(values, 100);
    names
        .into_iter()
        .enumerate()
        .map(|(i, n)| (n, values.get(i).cloned().unwrap_or_default()))
        .collect()
}

fn array_write(chan: &mut Channel, args: &str, value: &str) -> Result<(), String> {
    for (name, v) in array_pairs(args, value) {
        pbx::set_var(chan, &name, &v);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// HASH, HASHKEYS
// ---------------------------------------------------------------------------------------

/// The variable holding `HASH(name,key)`: `~HASH~name~key~`, keeping an inheritance
/// prefix of the hash name in front (`_name` gives `_~HASH~name~key~`).
pub fn hash_var_name(name: &str, key: &str) -> String {
    if let Some(n) = name.strip_prefix("__") {
        format!("__~HASH~{n}~{key}~")
    } else if let Some(n) = name.strip_prefix('_') {
        format!("_~HASH~{n}~{key}~")
    } else {
        format!("~HASH~{name}~{key}~")
    }
}

/// Keys of a hash among variable names (newest first, as Asterisk lists its variables).
pub fn hash_keys_of<'a>(names: impl Iterator<Item = &'a str>, hash: &str) -> Vec<String> {
    let prefix = format!("~HASH~{hash}~");
    let mut keys: Vec<String> = names
        .filter(|n| n.len() > prefix.len() + 1 && n.ends_with('~') && n.starts_with(&prefix))
        .map(|n| n[prefix.len()..n.len() - 1].to_string())
        .collect();
    keys.reverse();
    keys
}

pub fn hash_keys(chan: &Channel, hash: &str) -> Vec<String> {
    hash_keys_of(chan.vars.iter().map(|(k, _)| k), hash)
}

/// Set a variable so it becomes the newest (HASHKEYS order follows Asterisk's).
fn set_newest(chan: &mut Channel, name: &str, value: &str) {
    chan.vars.remove(name);
    pbx::set_var(chan, name, value);
}

fn hash_read(chan: &mut Channel, args: &str) -> FuncResult {
    let a = std_args(args, 2);
    match a.len() {
        // Read without the inheritance handling of writes, as Asterisk does.
        2 => Ok(pbx::get_var(chan, &format!("~HASH~{}~{}~", a[0], a[1])).unwrap_or_default()),
        1 => {
            let keys = hash_keys(chan, &a[0]);
            pbx::set_var(chan, "~ODBCFIELDS~", &keys.join(","));
            Ok(keys
                .iter()
                .map(|k| pbx::get_var(chan, &format!("~HASH~{}~{}~", a[0], k)).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(","))
        }
        _ => Ok(String::new()),
    }
}

fn hash_write(chan: &mut Channel, args: &str, value: &str) -> Result<(), String> {
    if !args.contains(',') {
        // HASH(name)=v1,v2,...: keys from ~ODBCFIELDS~ (set by a one-argument read).
        let fields = pbx::get_var(chan, "~ODBCFIELDS~")
            .ok_or_else(|| "HASH(name) can only be set after ~ODBCFIELDS~ is known".to_string())?;
        for (key, v) in array_pairs(&fields, value) {
            set_newest(chan, &hash_var_name(args, &key), &v);
        }
        return Ok(());
    }
    let a = std_args(args, 2);
    let key = a.get(1).cloned().unwrap_or_default();
    set_newest(chan, &hash_var_name(&a[0], &key), value);
    Ok(())
}

/// ClearHash(name): remove every key of the hash.
pub fn clear_hash(chan: &mut Channel, hash: &str) {
    let prefix = format!("~HASH~{}~", if hash.is_empty() { "null" } else { hash });
    let names: Vec<String> = chan
        .vars
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.to_string())
        .collect();
    for n in names {
        chan.vars.remove(&n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn separate_args_like_asterisk() {
        assert_eq!(separate_args("a,b,c", ',', true, 10), v(&["a", "b", "c"]));
        assert_eq!(separate_args("a,b,", ',', true, 10), v(&["a", "b", ""]));
        assert!(separate_args("", ',', true, 10).is_empty());
        // The last declared argument takes the rest verbatim.
        assert_eq!(
            separate_args("a,b\\,c,\"d\"", ',', true, 2),
            v(&["a", "b\\,c,\"d\""])
        );
        assert_eq!(separate_args("a,b\\,c", ',', true, 3), v(&["a", "b,c"]));
        assert_eq!(
            separate_args("f(a,b),[x,y],\"p,q\"", ',', true, 5),
            v(&["f(a,b)", "[x,y]", "p,q"])
        );
        assert_eq!(separate_args("a,", ',', true, 2), v(&["a", ""]));
        assert_eq!(separate_args("x,\"y\"", ',', false, 5), v(&["x", "\"y\""]));
        assert_eq!(
            separate_args("\"^a.c$\" abc", '"', true, 3),
            v(&["", "^a.c$", " abc"])
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(encoded_char("\\n"), Some(('\n', 2)));
        assert_eq!(encoded_char("\\x2C"), Some((',', 4)));
        assert_eq!(encoded_char("\\x2"), Some(('\u{2}', 3)));
        assert_eq!(encoded_char("\\054"), Some((',', 4)));
        assert_eq!(encoded_char("\\,"), Some((',', 2)));
        assert_eq!(encoded_char("\\xZ"), None);
        assert_eq!(encoded_char("é"), Some(('é', 2)));
        assert_eq!(encoded_char(""), None);
        assert_eq!(encoded_str("a\\tb\\x41", 255), "a\tbA");
    }

    #[test]
    fn cut_ranges() {
        let s = "one-two-three-four";
        assert_eq!(cut(s, '-', "1").unwrap(), "one");
        assert_eq!(cut(s, '-', "2-3").unwrap(), "two-three");
        assert_eq!(cut(s, '-', "-2").unwrap(), "one-two");
        assert_eq!(cut(s, '-', "3-").unwrap(), "three-four");
        assert_eq!(cut(s, '-', "1&3").unwrap(), "one-three");
        assert_eq!(cut(s, '-', "1&3-4").unwrap(), "one-three-four");
        assert_eq!(cut(s, '-', "9").unwrap(), "");
        // Going backwards gives nothing for the earlier field.
        assert_eq!(cut(s, '-', "3&1").unwrap(), "three");
        assert!(cut(s, '-', "x").is_err());
        assert_eq!(cut("", '-', "x").unwrap(), "");
        assert_eq!(cut("a,,c", ',', "2-3").unwrap(), ",c");
    }

    #[test]
    fn fields() {
        assert_eq!(field_qty("ex-amp-le", Some(Some('-'))), 3);
        assert_eq!(field_qty("", Some(Some('-'))), 0);
        assert_eq!(field_qty("abc", None), 1);
        assert_eq!(field_qty("a-b", Some(None)), 1);
        // Asterisk's own FIELDNUM test vectors.
        assert_eq!(field_num("abc,def,ghi,jkl", "\\,", "ghi").unwrap(), 3);
        assert_eq!(field_num("abc def ghi jkl", " ", "abc").unwrap(), 1);
        assert_eq!(field_num("abc/def/ghi/jkl", "\\x2f", "def").unwrap(), 2);
        assert_eq!(field_num("abc$def$ghi$jkl", "", "ghi").unwrap(), 0);
        assert_eq!(field_num("abc,def,ghi,jkl", "-", "").unwrap(), 0);
        assert_eq!(field_num("abc-def-ghi-jkl", "-", "mno").unwrap(), 0);
        assert_eq!(field_num("abc-DEF", "-", "def").unwrap(), 2);
        assert_eq!(list_filter("a,b,c,b", ",", "b"), "a,c");
        assert_eq!(list_filter("a&b&c", "&", "a"), "b&c");
        assert_eq!(list_filter("a,b", ",", "z"), "a,b");
    }

    #[test]
    fn filter_like_asterisk_test() {
        let s = "0042133333&DAHDI/g1/2212";
        assert_eq!(filter("A-R", s).unwrap(), "DAHDI");
        assert_eq!(filter("A\\-R", s).unwrap(), "A");
        assert_eq!(filter("\\x41-R", s).unwrap(), "DAHDI");
        assert_eq!(filter("0-9A-Ca-c", s).unwrap(), "0042133333A12212");
        assert_eq!(filter("0-9a-cA-C_+\\-", s).unwrap(), "0042133333A12212");
    }

    #[test]
    fn replace_and_strreplace() {
        assert_eq!(replace_chars("abc,def", ",", Some('-')), "abc-def");
        assert_eq!(replace_chars("abc,abc", "bc", Some('a')), "aaa,aaa");
        assert_eq!(replace_chars("abc,def", "x", Some('?')), "abc,def");
        assert_eq!(replace_chars("abc,def", ",", None), "abcdef");
        assert_eq!(
            str_replace(
                "Weasels have eaten my telephone system",
                "have eaten my",
                "are eating our",
                None
            ),
            "Weasels are eating our telephone system"
        );
        assert_eq!(
            str_replace("foofoofoofoofoofoofoo", "foofoo", "bar", None),
            "barbarbarfoo"
        );
        assert_eq!(
            str_replace("One and one and one is three", "and", "plus", Some(1)),
            "One plus one and one is three"
        );
        assert_eq!(
            str_replace("Part of this string is missing.", "missing", "", None),
            "Part of this string is ."
        );
        assert_eq!(str_between("212", "w"), "2w1w2");
        assert_eq!(str_between("A", "A"), "A");
        assert_eq!(str_between("", "w"), "");
    }

    #[test]
    fn regex_syntax() {
        assert_eq!(regex_match("\"^[0-9]+$\" 12345").unwrap(), "1");
        assert_eq!(regex_match("\"^[0-9]+$\" 12a45").unwrap(), "0");
        assert_eq!(regex_match("\"^ x\"  x").unwrap(), "1");
        assert_eq!(regex_match("\"a|b\"c").unwrap(), "0");
        assert_eq!(regex_match("\"[[:digit:]]{3}\" ab123").unwrap(), "1");
        assert!(regex_match("no quotes").is_err());
        assert!(regex_match("\"(\" x").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("ab\"c\"de"), "\"ab\\\"c\\\"de\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a\\b"), "\"a\\\\b\"");
        assert_eq!(csv_quote("\"a,b\" 123"), "\"\"\"a,b\"\" 123\"");
        assert_eq!(keypadhash("Les"), "537");
        assert_eq!(keypadhash("1-800-FLOWERS"), "18003569377");
    }

    #[test]
    fn sprintf_formats() {
        let a = |x: &[&str]| v(x);
        assert_eq!(sprintf("%d-%s", &a(&["42", "x"])).unwrap(), "42-x");
        assert_eq!(
            sprintf("%05d|%-4d|%+d|% d", &a(&["42", "7", "3", "3"])).unwrap(),
            "00042|7   |+3| 3"
        );
        assert_eq!(
            sprintf("%x %X %#x %o %#o", &a(&["255", "255", "255", "8", "8"])).unwrap(),
            "ff FF 0xff 10 010"
        );
        assert_eq!(sprintf("%u", &a(&["-1"])).unwrap(), "4294967295");
        assert_eq!(
            sprintf("%hhd %hd", &a(&["300", "70000"])).unwrap(),
            "44 4464"
        );
        assert_eq!(sprintf("%.3d|%.0d|", &a(&["5", "0"])).unwrap(), "005||");
        assert_eq!(sprintf("%c%c", &a(&["65", "66"])).unwrap(), "AB");
        assert_eq!(
            sprintf("%.2f %f %8.3f", &a(&["3.14159", "1", "2.5"])).unwrap(),
            "3.14 1.000000    2.500"
        );
        assert_eq!(
            sprintf("%e %.2E", &a(&["12345.678", "0.000123"])).unwrap(),
            "1.234568e+04 1.23E-04"
        );
        assert_eq!(
            sprintf("%g %g %g %g", &a(&["100000", "1000000", "0.0001", "3.10"])).unwrap(),
            "100000 1e+06 0.0001 3.1"
        );
        assert_eq!(sprintf("%#g", &a(&["3"])).unwrap(), "3.00000");
        assert_eq!(
            sprintf("%a %a", &a(&["1", "0.5"])).unwrap(),
            "0x1p+0 0x1p-1"
        );
        assert_eq!(sprintf("%.1a", &a(&["1.5"])).unwrap(), "0x1.8p+0");
        assert_eq!(
            sprintf("%5s|%-5s|%.2s", &a(&["ab", "cd", "xyz"])).unwrap(),
            "   ab|cd   |xy"
        );
        assert_eq!(sprintf("100%%", &[]).unwrap(), "100%");
        assert_eq!(sprintf("%s", &[]).unwrap(), "(null)");
        assert_eq!(
            sprintf("%08.3f|%-8.2e|", &a(&["-3.14159", "5"])).unwrap(),
            "-003.142|5.00e+00|"
        );
        assert_eq!(sprintf("%f", &a(&["inf"])).unwrap(), "inf");
        assert_eq!(sprintf("%ld", &a(&["12"])).unwrap(), "12");
        assert!(sprintf("%d", &a(&["abc"])).is_err());
        assert!(sprintf("%d %d", &a(&["1"])).is_err());
        assert!(sprintf("%y", &a(&["1"])).is_err());
        // An incomplete conversion at the end prints nothing.
        assert_eq!(sprintf("ab%5", &[]).unwrap(), "ab");
        assert_eq!(sprintf_args("%s-%s,a,b").unwrap(), "a-b");
    }

    #[test]
    fn base64_and_uri() {
        assert_eq!(base64_encode("hello world").unwrap(), "aGVsbG8gd29ybGQ=");
        assert_eq!(base64_decode("aGVsbG8gd29ybGQ=").unwrap(), "hello world");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), "hello");
        assert_eq!(base64_decode("aGVsbA").unwrap(), "hell");
        assert_eq!(base64_decode("a*Vs").unwrap(), "h\u{5}l");
        assert!(base64_encode("").is_err());
        assert_eq!(uri_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(uri_encode("-_.!~*'()"), "-_.!~*'()");
        assert_eq!(uri_decode("a%20b+c%26%C3%A9"), "a b c&é");
        assert_eq!(uri_decode("100%"), "100%");
        assert_eq!(uri_decode("%4"), "%4");
        assert_eq!(uri_decode("%4G"), "\u{4}");
    }

    #[test]
    fn list_ops() {
        assert_eq!(
            shift_pop("one,two,three", Some(','), true),
            ("one".into(), "two,three".into())
        );
        assert_eq!(
            shift_pop("one,two,three", Some(','), false),
            ("three".into(), "one,two".into())
        );
        assert_eq!(shift_pop("one", Some(','), true), ("one".into(), "".into()));
        assert_eq!(shift_pop("a|b", Some('|'), true), ("a".into(), "b".into()));
        assert_eq!(push_unshift("", "x", ',', false), "x");
        assert_eq!(push_unshift("a,b", "x", ',', false), "a,b,x");
        assert_eq!(push_unshift("a,b", "x", ',', true), "x,a,b");
        assert_eq!(
            array_pairs("a,b,c", "1,2"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("c".into(), "".into())
            ]
        );
    }

    #[test]
    fn hash_names() {
        assert_eq!(hash_var_name("h", "k"), "~HASH~h~k~");
        assert_eq!(hash_var_name("_h", "k"), "_~HASH~h~k~");
        assert_eq!(hash_var_name("__h", "k"), "__~HASH~h~k~");
        let names = ["~HASH~h~a~", "X", "~HASH~h~b~", "~HASH~hh~c~", "~HASH~h~~"];
        assert_eq!(hash_keys_of(names.iter().copied(), "h"), v(&["b", "a"]));
    }
}
