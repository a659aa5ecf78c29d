//! `$[ ... ]` expressions with Asterisk's operator set.
//!
//! The grammar, value types and operator semantics follow Asterisk's `main/ast_expr2.y` and
//! `main/ast_expr2.fl`. Precedence, lowest first:
//!
//! | operators | notes |
//! |---|---|
//! | `a ? b :: c` | left-associative; a string condition is true unless empty, `""` or `0` |
//! | `\|` `\|\|` | left if it is neither empty nor zero, else right |
//! | `&` `&&` | left if both are non-empty and non-zero, else `0` |
//! | `=` `==` `!=` `<` `>` `<=` `>=` | numeric when both sides are numbers, else byte-wise string comparison; result `1`/`0` |
//! | `+` `-` | |
//! | `*` `/` `%` | `/` is a real division (`10 / 4` is `2.5`), `%` is `fmod` |
//! | unary `!` `-` | `!` is true for empty, `0` or a string whose `atoi` is 0 |
//! | `:` `=~` `~~` | regex match anchored at the start / anywhere; `~~` concatenates |
//! | `( )`, `NAME(args, ...)` | grouping; the math functions `ast_expr2.y` builds in |
//!
//! Operands are tokens separated by operators or blanks (`1+1` works). A token made only of
//! digits with an optional decimal part is a number; anything else is a string. A double
//! quoted token (`"a b"`) is one string operand, and, as in Asterisk, **its quotes stay part
//! of the value**: `"a" = "a"` is `1`, `"a" = a` is `0`, and `$["x"]` yields `"x"` with its
//! quotes. Only `:`, `=~` and `~~` strip the quotes from their operands.
//!
//! Deliberate differences from Asterisk, which logs a warning and returns a made-up number
//! in these cases: arithmetic on a non-number, division (or `%`) by zero, a bad regular
//! expression, an unknown function and a syntax error all return [`ExprError`] (Asterisk
//! substitutes `0` for the whole expression on a syntax error). `|`, `&` and `? ::` only
//! evaluate the operand they need, so `1 | 1/0` is `1`. Numbers are `i64` when integral and
//! `f64` otherwise (Asterisk uses `long double`); non-integral results are printed with 15
//! significant digits and trailing zeros trimmed (`1/3` gives `0.333333333333333`, Asterisk
//! gives 18 digits). Regular expressions use the `regex` crate (leftmost-first rather than
//! POSIX leftmost-longest alternation).

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError(msg.into()))
}

/// Deepest nesting of parentheses, unary operators and `?` accepted.
const MAX_DEPTH: usize = 256;
/// Compiled size limit for `:` / `=~` regular expressions.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Evaluate an already-substituted expression string, as `ast_expr` does.
pub fn evaluate(text: &str) -> Result<String, ExprError> {
    let tokens = lex(text)?;
    if tokens.is_empty() {
        return Ok(String::new());
    }
    let mut p = Parser {
        toks: &tokens,
        pos: 0,
        depth: 0,
    };
    let v = p.cond(true)?;
    if let Some(t) = p.peek() {
        return err(format!("syntax error: unexpected {}", t.describe()));
    }
    Ok(v.into_string())
}

// ---------------------------------------------------------------------------------------
// Values

#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn is_zero(self) -> bool {
        match self {
            Num::Int(i) => i == 0,
            Num::Float(f) => f == 0.0,
        }
    }

    fn from_f64(f: f64) -> Num {
        Num::Float(f)
    }

    fn format(self) -> String {
        match self {
            Num::Int(i) => i.to_string(),
            Num::Float(f) => format_float(f),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Num(Num),
    /// A string that looks like a number (`AST_EXPR_numeric_string`).
    NumStr(String),
    /// Any other string (`AST_EXPR_string`), quotes included if it was quoted.
    Str(String),
}

impl Val {
    /// `make_str`: numeric when non-empty and made only of digits and dots.
    fn make_str(s: String) -> Val {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            Val::NumStr(s)
        } else {
            Val::Str(s)
        }
    }

    fn dummy() -> Val {
        Val::Num(Num::Int(0))
    }

    fn is_string(&self) -> bool {
        matches!(self, Val::Str(_))
    }

    fn to_number(&self) -> Option<Num> {
        match self {
            Val::Num(n) => Some(*n),
            Val::NumStr(s) => Some(parse_number_prefix(s)),
            Val::Str(_) => None,
        }
    }

    fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Val::Num(n) => n.format().into(),
            Val::NumStr(s) | Val::Str(s) => s.as_str().into(),
        }
    }

    fn into_string(self) -> String {
        match self {
            Val::Num(n) => n.format(),
            Val::NumStr(s) | Val::Str(s) => s,
        }
    }

    /// `is_zero_or_null`.
    fn is_zero_or_null(&self) -> bool {
        match self {
            Val::Num(n) => n.is_zero(),
            Val::NumStr(s) | Val::Str(s) => {
                s.is_empty() || self.to_number().is_some_and(|n| n.is_zero())
            }
        }
    }
}

/// `strtod` on a numeric string (digits and dots): the longest valid prefix.
fn parse_number_prefix(s: &str) -> Num {
    let b = s.as_bytes();
    let int_end = b
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(b.len());
    let mut end = int_end;
    if end < b.len() && b[end] == b'.' {
        let frac = b[end + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if frac > 0 || int_end > 0 {
            end += 1 + frac;
        }
    }
    let text = &s[..end];
    if end == int_end {
        if let Ok(i) = text.parse::<i64>() {
            return Num::Int(i);
        }
    }
    Num::Float(text.parse::<f64>().unwrap_or(0.0))
}

/// Asterisk's `strip_quotes`: when the value starts and ends with `"`, remove every `"`.
fn strip_quotes(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with('"') && s.ends_with('"') {
        s.replace('"', "").into()
    } else {
        s.into()
    }
}

/// C `atoi`: optional blanks, optional sign, digits; anything else stops it.
fn atoi(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut v: i64 = 0;
    for c in digits.bytes().take_while(u8::is_ascii_digit) {
        v = v.saturating_mul(10).saturating_add(i64::from(c - b'0'));
    }
    if neg {
        -v
    } else {
        v
    }
}

/// Print a float like `%.15g`, but integral values below 1e18 as plain integers.
fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if f == 0.0 {
        return "0".to_string();
    }
    if f.fract() == 0.0 && f.abs() < 1e18 {
        return format!("{f:.0}");
    }
    format_g(f, 15)
}

/// C's `%.<prec>g` for a finite, non-zero value.
fn format_g(f: f64, prec: usize) -> String {
    let sci = format!("{:.*e}", prec - 1, f);
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    if exp < -4 || exp >= prec as i32 {
        let m = trim_fraction(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        trim_fraction(&format!("{f:.decimals$}")).to_string()
    }
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Plus,
    Minus,
    Mul,
    Div,
    Mod,
    Compl,
    Colon,
    EqTilde,
    TildeTilde,
    Cond,
    ColonColon,
    LParen,
    RParen,
    Comma,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Or => "|",
            Op::And => "&",
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Ge => ">=",
            Op::Plus => "+",
            Op::Minus => "-",
            Op::Mul => "*",
            Op::Div => "/",
            Op::Mod => "%",
            Op::Compl => "!",
            Op::Colon => ":",
            Op::EqTilde => "=~",
            Op::TildeTilde => "~~",
            Op::Cond => "?",
            Op::ColonColon => "::",
            Op::LParen => "(",
            Op::RParen => ")",
            Op::Comma => ",",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Op(Op),
    Val(Val),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Op(op) => format!("'{}'", op.text()),
            Tok::Val(v) => format!("'{}'", v.text()),
        }
    }
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Characters that end a bare token.
fn ends_token(c: char) -> bool {
    is_blank(c)
        || matches!(c, '|' | '&' | '=' | '<' | '>' | '!' | '+' | '-' | '*' | '/')
        || matches!(c, '%' | '?' | ':' | '(' | ')' | ',' | '"')
}

fn is_number_token(s: &str) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

fn lex(text: &str) -> Result<Vec<Tok>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if is_blank(c) {
            i += 1;
            continue;
        }
        let two = |op: Op| (Some(op), 2);
        let one = |op: Op| (Some(op), 1);
        let (op, len) = match (c, next) {
            ('|', Some('|')) => two(Op::Or),
            ('|', _) => one(Op::Or),
            ('&', Some('&')) => two(Op::And),
            ('&', _) => one(Op::And),
            ('=', Some('=')) => two(Op::Eq),
            ('=', Some('~')) => two(Op::EqTilde),
            ('=', _) => one(Op::Eq),
            ('~', Some('~')) => two(Op::TildeTilde),
            ('>', Some('=')) => two(Op::Ge),
            ('>', _) => one(Op::Gt),
            ('<', Some('=')) => two(Op::Le),
            ('<', _) => one(Op::Lt),
            ('!', Some('=')) => two(Op::Ne),
            ('!', _) => one(Op::Compl),
            ('+', _) => one(Op::Plus),
            ('-', _) => one(Op::Minus),
            ('*', _) => one(Op::Mul),
            ('/', _) => one(Op::Div),
            ('%', _) => one(Op::Mod),
            ('?', _) => one(Op::Cond),
            (':', Some(':')) => two(Op::ColonColon),
            (':', _) => one(Op::Colon),
            ('(', _) => one(Op::LParen),
            (')', _) => one(Op::RParen),
            (',', _) => one(Op::Comma),
            _ => (None, 0),
        };
        if let Some(op) = op {
            toks.push(Tok::Op(op));
            i += len;
            continue;
        }
        if c == '"' {
            if let Some(len) = chars[i + 1..].iter().position(|&c| c == '"') {
                let s: String = chars[i..i + len + 2].iter().collect();
                toks.push(Tok::Val(Val::Str(s)));
                i += len + 2;
                continue;
            }
        }
        // A bare token; a lone unbalanced `"` starts one too. `${...}` left unsubstituted
        // is kept whole, as Asterisk's lexer does.
        let start = i;
        i += 1;
        if c == '$' && next == Some('{') {
            i = skip_braces(&chars, i + 1);
        }
        while i < chars.len() && !ends_token(chars[i]) {
            if chars[i] == '~' && chars.get(i + 1) == Some(&'~') {
                break;
            }
            if chars[i] == '$' && chars.get(i + 1) == Some(&'{') {
                i = skip_braces(&chars, i + 2);
            } else {
                i += 1;
            }
        }
        let s: String = chars[start..i].iter().collect();
        if is_number_token(&s) {
            toks.push(Tok::Val(Val::NumStr(s)));
        } else {
            toks.push(Tok::Val(Val::Str(s)));
        }
    }
    Ok(toks)
}

/// From just after `${`, the index after the matching `}` (or the end).
fn skip_braces(chars: &[char], mut i: usize) -> usize {
    let mut depth = 1usize;
    while i < chars.len() && depth > 0 {
        match chars[i] {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    i
}

// ---------------------------------------------------------------------------------------
// Parser + evaluator. Each level takes `eval`: when false, the operand is parsed for syntax
// only (the branch not taken by `|`, `&` or `? ::`), and no operator is applied.

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_op(&self) -> Option<Op> {
        match self.peek() {
            Some(Tok::Op(op)) => Some(*op),
            _ => None,
        }
    }

    fn expect(&mut self, op: Op) -> Result<(), ExprError> {
        match self.peek() {
            Some(Tok::Op(o)) if *o == op => {
                self.pos += 1;
                Ok(())
            }
            Some(t) => err(format!(
                "syntax error: unexpected {}, expecting '{}'",
                t.describe(),
                op.text()
            )),
            None => err(format!(
                "syntax error: unexpected end, expecting '{}'",
                op.text()
            )),
        }
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err("expression nested too deeply");
        }
        Ok(())
    }

    fn cond(&mut self, eval: bool) -> Result<Val, ExprError> {
        self.enter()?;
        let mut left = self.or(eval)?;
        while self.peek_op() == Some(Op::Cond) {
            self.pos += 1;
            let truth = eval && cond_truth(&left);
            let mid = self.cond(eval && truth)?;
            self.expect(Op::ColonColon)?;
            let right = self.or(eval && !truth)?;
            left = if !eval {
                Val::dummy()
            } else if truth {
                mid
            } else {
                right
            };
        }
        self.depth -= 1;
        Ok(left)
    }

    fn or(&mut self, eval: bool) -> Result<Val, ExprError> {
        let mut left = self.and(eval)?;
        while self.peek_op() == Some(Op::Or) {
            self.pos += 1;
            let take_right = eval && left.is_zero_or_null();
            let right = self.and(take_right)?;
            if take_right {
                left = right;
            }
        }
        Ok(left)
    }

    fn and(&mut self, eval: bool) -> Result<Val, ExprError> {
        let mut left = self.cmp(eval)?;
        while self.peek_op() == Some(Op::And) {
            self.pos += 1;
            let need_right = eval && !left.is_zero_or_null();
            let right = self.cmp(need_right)?;
            if eval && (!need_right || right.is_zero_or_null()) {
                left = Val::Num(Num::Int(0));
            }
        }
        Ok(left)
    }

    fn cmp(&mut self, eval: bool) -> Result<Val, ExprError> {
        let mut left = self.add(eval)?;
        while let Some(op @ (Op::Eq | Op::Ne | Op::Lt | Op::Gt | Op::Le | Op::Ge)) = self.peek_op()
        {
            self.pos += 1;
            let right = self.add(eval)?;
            if eval {
                left = compare_op(op, &left, &right);
            }
        }
        Ok(left)
    }

    fn add(&mut self, eval: bool) -> Result<Val, ExprError> {
        let mut left = self.mul(eval)?;
        while let Some(op @ (Op::Plus | Op::Minus)) = self.peek_op() {
            self.pos += 1;
            let right = self.mul(eval)?;
            if eval {
                left = arith(op, &left, &right)?;
            }
        }
        Ok(left)
    }

    fn mul(&mut self, eval: bool) -> Result<Val, ExprError> {
        let mut left = self.unary(eval)?;
        while let Some(op @ (Op::Mul | Op::Div | Op::Mod)) = self.peek_op() {
            self.pos += 1;
            let right = self.unary(eval)?;
            if eval {
                left = arith(op, &left, &right)?;
            }
        }
        Ok(left)
    }

    /// Unary `!` and `-` bind looser than `:` / `=~` / `~~` (as in `ast_expr2.y`).
    fn unary(&mut self, eval: bool) -> Result<Val, ExprError> {
        match self.peek_op() {
            Some(op @ (Op::Compl | Op::Minus)) => {
                self.pos += 1;
                self.enter()?;
                let v = self.unary(eval)?;
                self.depth -= 1;
                if !eval {
                    return Ok(v);
                }
                if op == Op::Compl {
                    Ok(complement(&v))
                } else {
                    negate(&v)
                }
            }
            _ => self.matching(eval),
        }
    }

    fn matching(&mut self, eval: bool) -> Result<Val, ExprError> {
        let mut left = self.primary(eval)?;
        while let Some(op @ (Op::Colon | Op::EqTilde | Op::TildeTilde)) = self.peek_op() {
            self.pos += 1;
            // A right operand starting with a unary operator extends over further `:`s.
            let right = match self.peek_op() {
                Some(Op::Compl | Op::Minus) => self.unary(eval)?,
                _ => self.primary(eval)?,
            };
            if eval {
                left = match op {
                    Op::TildeTilde => {
                        let s = format!(
                            "{}{}",
                            strip_quotes(&left.text()),
                            strip_quotes(&right.text())
                        );
                        Val::make_str(s)
                    }
                    _ => regex_match(&left, &right, op == Op::Colon)?,
                };
            }
        }
        Ok(left)
    }

    fn primary(&mut self, eval: bool) -> Result<Val, ExprError> {
        match self.peek().cloned() {
            Some(Tok::Op(Op::LParen)) => {
                self.pos += 1;
                let v = self.cond(eval)?;
                self.expect(Op::RParen)?;
                Ok(v)
            }
            Some(Tok::Val(v)) => {
                self.pos += 1;
                if self.peek_op() == Some(Op::LParen) {
                    self.pos += 1;
                    let mut args = vec![self.cond(eval)?];
                    while self.peek_op() == Some(Op::Comma) {
                        self.pos += 1;
                        if self.peek_op() == Some(Op::RParen) {
                            args.push(Val::Str(String::new()));
                        } else {
                            args.push(self.cond(eval)?);
                        }
                    }
                    self.expect(Op::RParen)?;
                    if !eval {
                        return Ok(Val::dummy());
                    }
                    return call_function(&v.text(), &args);
                }
                Ok(v)
            }
            Some(t) => err(format!("syntax error: unexpected {}", t.describe())),
            None => err("syntax error: unexpected end of expression"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Operators

/// `op_cond`'s idea of truth.
fn cond_truth(v: &Val) -> bool {
    match v {
        Val::Str(s) => !s.is_empty() && s != "\"\"" && s != "0",
        other => other.to_number().is_some_and(|n| !n.is_zero()),
    }
}

fn compare_op(op: Op, a: &Val, b: &Val) -> Val {
    let ord = if a.is_string() || b.is_string() {
        Some(a.text().as_bytes().cmp(b.text().as_bytes()))
    } else {
        match (a.to_number(), b.to_number()) {
            (Some(Num::Int(x)), Some(Num::Int(y))) => Some(x.cmp(&y)),
            (Some(x), Some(y)) => x.as_f64().partial_cmp(&y.as_f64()),
            _ => None,
        }
    };
    let r = match (op, ord) {
        (Op::Ne, None) => true,
        (_, None) => false,
        (Op::Eq, Some(o)) => o == Ordering::Equal,
        (Op::Ne, Some(o)) => o != Ordering::Equal,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        _ => false,
    };
    Val::Num(Num::Int(i64::from(r)))
}

fn numbers(a: &Val, b: &Val) -> Result<(Num, Num), ExprError> {
    match (a.to_number(), b.to_number()) {
        (Some(x), Some(y)) => Ok((x, y)),
        (None, _) => err(format!("non-numeric argument '{}'", a.text())),
        (_, None) => err(format!("non-numeric argument '{}'", b.text())),
    }
}

fn arith(op: Op, a: &Val, b: &Val) -> Result<Val, ExprError> {
    let (x, y) = numbers(a, b)?;
    if matches!(op, Op::Div | Op::Mod) && y.is_zero() {
        return err("division by zero");
    }
    let ints = match (x, y) {
        (Num::Int(x), Num::Int(y)) => Some((x, y)),
        _ => None,
    };
    let int_result = ints.and_then(|(x, y)| match op {
        Op::Plus => x.checked_add(y),
        Op::Minus => x.checked_sub(y),
        Op::Mul => x.checked_mul(y),
        Op::Div => x
            .checked_rem(y)
            .filter(|r| *r == 0)
            .and_then(|_| x.checked_div(y)),
        Op::Mod => x.checked_rem(y),
        _ => None,
    });
    if let Some(i) = int_result {
        return Ok(Val::Num(Num::Int(i)));
    }
    let (x, y) = (x.as_f64(), y.as_f64());
    let r = match op {
        Op::Plus => x + y,
        Op::Minus => x - y,
        Op::Mul => x * y,
        Op::Div => x / y,
        Op::Mod => x % y,
        _ => return err(format!("internal: '{}' is not arithmetic", op.text())),
    };
    Ok(Val::Num(Num::from_f64(r)))
}

fn negate(v: &Val) -> Result<Val, ExprError> {
    match v.to_number() {
        Some(Num::Int(i)) => Ok(Val::Num(match i.checked_neg() {
            Some(n) => Num::Int(n),
            None => Num::Float(-(i as f64)),
        })),
        Some(Num::Float(f)) => Ok(Val::Num(Num::Float(-f))),
        None => err(format!("non-numeric argument '{}'", v.text())),
    }
}

/// `op_compl`.
fn complement(v: &Val) -> Val {
    let truth = match v {
        Val::Num(n) => !n.is_zero(),
        Val::NumStr(s) | Val::Str(s) => !(s.is_empty() || s == "0") && atoi(s) != 0,
    };
    Val::Num(Num::Int(i64::from(!truth)))
}

/// Compiled regular expressions kept per thread: dialplans evaluate the same few
/// patterns over and over, and compiling costs far more than matching.
const REGEX_CACHE_SIZE: usize = 64;

thread_local! {
    static REGEX_CACHE: std::cell::RefCell<std::collections::HashMap<String, regex::Regex>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn compile_regex(pattern: &str) -> Result<regex::Regex, ExprError> {
    if let Some(re) = REGEX_CACHE.with(|c| c.borrow().get(pattern).cloned()) {
        return Ok(re);
    }
    let re = regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ExprError(format!("invalid regular expression '{pattern}': {e}")))?;
    REGEX_CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        if cache.len() >= REGEX_CACHE_SIZE {
            cache.clear();
        }
        cache.insert(pattern.to_string(), re.clone());
    });
    Ok(re)
}

fn regex_match(a: &Val, b: &Val, anchored: bool) -> Result<Val, ExprError> {
    let subject = a.text();
    let subject = strip_quotes(&subject);
    let pattern = b.text();
    let pattern = strip_quotes(&pattern);
    let re = compile_regex(&pattern)?;
    let has_group = re.captures_len() > 1;
    let caps = re
        .captures(&subject)
        .filter(|c| !anchored || c.get(0).is_some_and(|m| m.start() == 0));
    Ok(match caps {
        Some(c) => match c.get(1) {
            Some(g) => Val::make_str(g.as_str().to_string()),
            None => {
                let n = c.get(0).map_or(0, |m| m.as_str().chars().count());
                Val::Num(Num::Int(n as i64))
            }
        },
        None if has_group => Val::Str(String::new()),
        None => Val::Num(Num::Int(0)),
    })
}

fn call_function(name: &str, args: &[Val]) -> Result<Val, ExprError> {
    let nums = |want: usize| -> Result<Vec<f64>, ExprError> {
        if args.len() != want {
            return err(format!("wrong number of arguments to {name}()"));
        }
        args.iter()
            .map(|a| {
                a.to_number().map(Num::as_f64).ok_or_else(|| {
                    ExprError(format!("non-numeric argument '{}' to {name}()", a.text()))
                })
            })
            .collect()
    };
    let unary: Option<fn(f64) -> f64> = match name {
        "COS" => Some(f64::cos),
        "SIN" => Some(f64::sin),
        "TAN" => Some(f64::tan),
        "ACOS" => Some(f64::acos),
        "ASIN" => Some(f64::asin),
        "ATAN" => Some(f64::atan),
        "SQRT" => Some(f64::sqrt),
        "FLOOR" => Some(f64::floor),
        "CEIL" => Some(f64::ceil),
        "ROUND" => Some(f64::round),
        "RINT" => Some(f64::round_ties_even),
        "TRUNC" => Some(f64::trunc),
        "EXP" => Some(f64::exp),
        "EXP2" => Some(f64::exp2),
        "EXP10" => Some(|x| 10f64.powf(x)),
        "LOG" => Some(f64::ln),
        "LOG2" => Some(f64::log2),
        "LOG10" => Some(f64::log10),
        "ABS" => Some(f64::abs),
        _ => None,
    };
    let r = if let Some(f) = unary {
        f(nums(1)?[0])
    } else {
        match name {
            "ATAN2" => {
                let v = nums(2)?;
                v[0].atan2(v[1])
            }
            "POW" => {
                let v = nums(2)?;
                v[0].powf(v[1])
            }
            "REMAINDER" => {
                let v = nums(2)?;
                if v[1] == 0.0 {
                    return err("division by zero");
                }
                v[0] - (v[0] / v[1]).round_ties_even() * v[1]
            }
            _ => return err(format!("unknown function '{name}'")),
        }
    };
    if r.fract() == 0.0 && r.abs() < 9.0e15 {
        // Exact: |r| is below 2^53.
        return Ok(Val::Num(Num::Int(r as i64)));
    }
    Ok(Val::Num(Num::Float(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: &str) -> String {
        match evaluate(s) {
            Ok(v) => v,
            Err(e) => panic!("{s:?} failed: {e}"),
        }
    }

    fn fails(s: &str) -> String {
        match evaluate(s) {
            Ok(v) => panic!("{s:?} should fail, gave {v:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn empty_and_single_operands() {
        assert_eq!(ev(""), "");
        assert_eq!(ev("   "), "");
        assert_eq!(ev("5"), "5");
        assert_eq!(ev("007"), "007", "a lone numeric token keeps its text");
        assert_eq!(ev("abc"), "abc");
        assert_eq!(ev("\"a b\""), "\"a b\"", "quotes stay part of the value");
        assert_eq!(ev("\"\""), "\"\"");
    }

    #[test]
    fn arithmetic() {
        assert_eq!(ev("1+1"), "2");
        assert_eq!(ev("1 + 1"), "2");
        assert_eq!(ev("2+3*4"), "14");
        assert_eq!(ev("(2+3)*4"), "20");
        assert_eq!(ev("10-4-3"), "3");
        assert_eq!(ev("10 / 4"), "2.5");
        assert_eq!(ev("10 / 5"), "2");
        assert_eq!(ev("1/3"), "0.333333333333333");
        assert_eq!(ev("2/3"), "0.666666666666667");
        assert_eq!(ev("10 % 3"), "1");
        assert_eq!(ev("-7 % 3"), "-1");
        assert_eq!(ev("7.5 % 2"), "1.5");
        assert_eq!(ev("1.5 + 1.5"), "3");
        assert_eq!(ev("0.1 + 0.2"), "0.3");
        assert_eq!(ev("007 + 0"), "7");
        assert_eq!(
            ev("9223372036854775807 + 1"),
            "9.22337203685478e+18",
            "overflow to float"
        );
        assert_eq!(ev("123456789012345 * 10"), "1234567890123450");
    }

    #[test]
    fn unary_minus_and_not() {
        assert_eq!(ev("-5"), "-5");
        assert_eq!(ev("- 5 + 3"), "-2");
        assert_eq!(ev("2 * -3"), "-6");
        assert_eq!(ev("--5"), "5");
        assert_eq!(ev("3 - -2"), "5");
        assert_eq!(ev("!0"), "1");
        assert_eq!(ev("!1"), "0");
        assert_eq!(ev("!abc"), "1", "atoi(\"abc\") is 0");
        assert_eq!(ev("!5abc"), "0");
        assert_eq!(ev("!\"\""), "1");
        assert_eq!(ev("!(1 = 2)"), "1");
        assert!(fails("-abc").contains("non-numeric"));
    }

    #[test]
    fn comparisons() {
        assert_eq!(ev("1 = 1"), "1");
        assert_eq!(ev("1 == 1.0"), "1", "numeric comparison");
        assert_eq!(ev("01 = 1"), "1");
        assert_eq!(ev("10 > 9"), "1");
        assert_eq!(ev("10 > 9a"), "0", "string comparison: '1' < '9'");
        assert_eq!(ev("abc < abd"), "1");
        assert_eq!(ev("abc != abc"), "0");
        assert_eq!(ev("abc >= abc"), "1");
        assert_eq!(ev("2 <= 1"), "0");
        assert_eq!(ev("\"a\" = \"a\""), "1");
        assert_eq!(
            ev("\"a\" = a"),
            "0",
            "quotes are compared too, as in Asterisk"
        );
        assert_eq!(
            ev("\"10\" < \"9\""),
            "1",
            "quoted operands compare as strings"
        );
        assert_eq!(ev("1+1 = 2"), "1", "comparison binds looser than +");
    }

    #[test]
    fn or_and() {
        assert_eq!(ev("0 | \"\""), "\"\"");
        assert_eq!(ev("0 | 5"), "5");
        assert_eq!(ev("3 | 5"), "3");
        assert_eq!(ev("abc | def"), "abc");
        assert_eq!(ev("\"\" | x"), "\"\"", "a quoted empty string is not empty");
        assert_eq!(ev("0.0 | x"), "x", "numeric zero");
        assert_eq!(ev("3 & 5"), "3");
        assert_eq!(ev("3 & 0"), "0");
        assert_eq!(ev("0 & 5"), "0");
        assert_eq!(ev("a && b"), "a");
        assert_eq!(ev("0 || 7"), "7");
        assert_eq!(ev("1 | 0 & 0"), "1", "& binds tighter than |");
        assert_eq!(ev("1 = 1 & 2 = 2"), "1");
        // Only the needed operand is evaluated.
        assert_eq!(ev("1 | 1/0"), "1");
        assert_eq!(ev("0 & 1/0"), "0");
        assert!(fails("0 | 1/0").contains("division by zero"));
    }

    #[test]
    fn conditional() {
        assert_eq!(ev("1 ? yes :: no"), "yes");
        assert_eq!(ev("0 ? yes :: no"), "no");
        assert_eq!(ev("abc ? yes :: no"), "yes");
        assert_eq!(ev("\"\" ? yes :: no"), "no");
        assert_eq!(ev("2 > 1 ? 10 + 1 :: 20"), "11");
        assert_eq!(
            ev("0 ? a :: 1 ? b :: c"),
            "b",
            "left-assoc: (0?a::1) ? b :: c"
        );
        assert_eq!(ev("1 ? 0 ? x :: y :: z"), "y", "nested in the middle");
        assert_eq!(ev("1 ? a :: b | c"), "a");
        assert_eq!(ev("0 ? a :: 0 | c"), "c", "| binds tighter than ::");
        assert_eq!(
            ev("0 ? 1/0 :: 2"),
            "2",
            "the branch not taken is not evaluated"
        );
        assert!(fails("1 ? a").contains("syntax"));
        assert!(fails("1 ? a :: b :: c").contains("syntax"));
    }

    #[test]
    fn regex_ops() {
        assert_eq!(ev("abcde : abc"), "3", "length of the match");
        assert_eq!(ev("abcde : bcd"), "0", "':' is anchored at the start");
        assert_eq!(ev("abcde =~ bcd"), "3", "'=~' is not");
        assert_eq!(ev("5551212 : \"555(.*)\""), "1212", "first capture group");
        assert_eq!(ev("5551212 : \"666(.*)\""), "", "no match with a group");
        assert_eq!(
            ev("\"hello world\" : \"hello (.*)\""),
            "world",
            "quotes stripped"
        );
        assert_eq!(
            ev("abc =~ \"(x)?b\""),
            "1",
            "group that did not participate: length"
        );
        assert_eq!(ev("123abc : \"[0-9]+\""), "3");
        assert_eq!(
            ev("123abc : \"([0-9]+)\" + 1"),
            "124",
            "a numeric capture is a number"
        );
        assert_eq!(ev("!abc : x"), "1", "unary binds looser than ':'");
        assert_eq!(ev("- 5 : 5"), "-1");
        assert_eq!(ev("a ~~ b"), "ab");
        assert_eq!(ev("\"a \" ~~ \"b\""), "a b");
        assert_eq!(ev("1 ~~ 2 + 1"), "13");
        assert!(fails("abc : \"(\"").contains("regular expression"));
    }

    #[test]
    fn errors() {
        assert!(fails("abc + 1").contains("non-numeric"));
        assert!(fails("1 + \"2\"").contains("non-numeric"));
        assert!(fails("1 / 0").contains("division by zero"));
        assert!(fails("1 % 0").contains("division by zero"));
        assert!(fails("1 +").contains("syntax"));
        assert!(fails("+ 1").contains("syntax"));
        assert!(fails("(1").contains("syntax"));
        assert!(fails("1)").contains("syntax"));
        assert!(fails("1 2").contains("syntax"));
        assert!(fails("a,b").contains("syntax"));
        assert!(fails("FOO(1)").contains("unknown function"));
        assert!(fails(&"(".repeat(10_000)).contains("deeply"));
        assert!(fails(&"-".repeat(10_000)).contains("deeply"));
    }

    #[test]
    fn long_flat_expressions_do_not_recurse() {
        let s = vec!["1"; 50_000].join("+");
        assert_eq!(ev(&s), "50000");
    }

    #[test]
    fn functions() {
        assert_eq!(ev("ABS(-3)"), "3");
        assert_eq!(ev("FLOOR(7/2)"), "3");
        assert_eq!(ev("CEIL(7/2)"), "4");
        assert_eq!(ev("ROUND(2.5)"), "3");
        assert_eq!(ev("RINT(2.5)"), "2");
        assert_eq!(ev("TRUNC(-2.7)"), "-2");
        assert_eq!(ev("POW(2,10)"), "1024");
        assert_eq!(ev("SQRT(16) + 1"), "5");
        assert_eq!(ev("REMAINDER(7, 4)"), "-1");
        assert!(fails("POW(2)").contains("wrong number"));
        assert!(fails("SQRT(x)").contains("non-numeric"));
    }

    #[test]
    fn lexing_details() {
        assert_eq!(ev("1.5.6"), "1.5.6");
        assert!(fails("1.5.6 + 1").contains("non-numeric"));
        assert!(
            fails("a-b = a-b").contains("non-numeric"),
            "'-' splits tokens"
        );
        assert_eq!(
            ev("${FOO} = ${FOO}"),
            "1",
            "unsubstituted variables are one token"
        );
        assert_eq!(ev("x\t=\r\nx"), "1");
        assert!(fails("x\ty = x\ty").contains("syntax"));
        assert_eq!(ev("é = é"), "1");
        assert_eq!(ev("\"unterminated"), "\"unterminated");
    }

    #[test]
    fn float_formatting() {
        assert_eq!(format_float(0.5), "0.5");
        assert_eq!(format_float(1e20), "1e+20");
        assert_eq!(format_float(1.5e-7), "1.5e-07");
        assert_eq!(format_float(-2.25), "-2.25");
        assert_eq!(format_float(123456789.125), "123456789.125");
        assert_eq!(format_float(f64::NAN), "nan");
    }
}
