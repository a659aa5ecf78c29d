//! Math functions, as Asterisk's `func_math.c` and `func_rand.c`: MATH, INC, DEC, MIN, MAX,
//! ABS, RAND. Numbers are read the way `sscanf("%lf")`/`sscanf("%d")` read them (leading
//! whitespace, longest numeric prefix), and printed with C's `%f`/`%d`/`%x`/`%c`.

use super::strings::std_args;
use crate::channel::Channel;
use crate::dialplan::pbx::{self, FuncDef, FuncRead, FuncResult};
use rand::Rng;

pub fn funcs() -> Vec<FuncDef> {
    vec![
        FuncDef {
            name: "MATH",
            synopsis: "Performs Mathematical Functions",
            read: Some(FuncRead::Sync(|_, a| math_args(a))),
            write: None,
        },
        FuncDef {
            name: "INC",
            synopsis: "Increments the value of a variable, while returning the updated value to the dialplan",
            read: Some(FuncRead::Sync(|c, a| crement(c, a, 1))),
            write: None,
        },
        FuncDef {
            name: "DEC",
            synopsis: "Decrements the value of a variable, while returning the updated value to the dialplan",
            read: Some(FuncRead::Sync(|c, a| crement(c, a, -1))),
            write: None,
        },
        FuncDef {
            name: "MIN",
            synopsis: "Returns the minimum of two numbers",
            read: Some(FuncRead::Sync(|_, a| min_max(a, false))),
            write: None,
        },
        FuncDef {
            name: "MAX",
            synopsis: "Returns the maximum of two numbers",
            read: Some(FuncRead::Sync(|_, a| min_max(a, true))),
            write: None,
        },
        FuncDef {
            name: "ABS",
            synopsis: "Returns absolute value of a number",
            read: Some(FuncRead::Sync(|_, a| abs(a))),
            write: None,
        },
        FuncDef {
            name: "RAND",
            synopsis: "Choose a random number in a range",
            read: Some(FuncRead::Sync(|_, a| rand_args(a))),
            write: None,
        },
    ]
}

/// C's `isspace` in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// `sscanf(s, "%30d")`-like: leading whitespace, optional sign, at least one digit.
/// Returns the value (saturated) and the text after it.
pub fn scan_int(s: &str) -> Option<(i64, &str)> {
    let t = s.trim_start_matches(is_c_space);
    let (neg, body, signlen) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..], 1),
        Some(b'+') => (false, &t[1..], 1),
        _ => (false, t, 0),
    };
    let n = body
        .bytes()
        .take(30 - signlen)
        .take_while(u8::is_ascii_digit)
        .count();
    if n == 0 {
        return None;
    }
    let mut v: i64 = 0;
    for c in body[..n].bytes() {
        v = v.saturating_mul(10).saturating_add(i64::from(c - b'0'));
    }
    Some((if neg { -v } else { v }, &body[n..]))
}

/// `sscanf(s, "%30lf")`-like: the longest prefix that is a C floating-point number
/// (decimal with optional exponent, hexadecimal `0x1.8p3`, `inf`, `infinity`, `nan`).
pub fn scan_double(s: &str) -> Option<f64> {
    let t = s.trim_start_matches(is_c_space);
    let t = match t.char_indices().nth(30) {
        Some((i, _)) => &t[..i],
        None => t,
    };
    let b = t.as_bytes();
    let mut i = 0;
    let neg = match b.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let sign = if neg { -1.0 } else { 1.0 };
    let rest = &t[i..];
    let lower = rest.to_ascii_lowercase();
    if lower.starts_with("inf") {
        return Some(sign * f64::INFINITY);
    }
    if lower.starts_with("nan") {
        return Some(f64::NAN);
    }
    let rb = rest.as_bytes();
    if lower.starts_with("0x")
        && rb.get(2).is_some_and(|c| {
            c.is_ascii_hexdigit() || (*c == b'.' && rb.get(3).is_some_and(u8::is_ascii_hexdigit))
        })
    {
        let mut j = 2;
        let mut mant = 0f64;
        let mut exp: i64 = 0;
        while j < rb.len() && rb[j].is_ascii_hexdigit() {
            mant = mant * 16.0 + (rb[j] as char).to_digit(16).unwrap_or(0) as f64;
            j += 1;
        }
        if j < rb.len() && rb[j] == b'.' {
            j += 1;
            while j < rb.len() && rb[j].is_ascii_hexdigit() {
                mant = mant * 16.0 + (rb[j] as char).to_digit(16).unwrap_or(0) as f64;
                exp -= 4;
                j += 1;
            }
        }
        if j < rb.len() && (rb[j] == b'p' || rb[j] == b'P') {
            if let Some((e, _)) = scan_exp(&rest[j + 1..]) {
                exp += e;
            }
        }
        return Some(sign * mant * 2f64.powi(exp.clamp(-2000, 2000) as i32));
    }
    // Decimal: digits [. digits] [e [sign] digits]
    let mut j = 0;
    let mut digits = 0;
    while j < rb.len() && rb[j].is_ascii_digit() {
        j += 1;
        digits += 1;
    }
    if j < rb.len() && rb[j] == b'.' {
        j += 1;
        while j < rb.len() && rb[j].is_ascii_digit() {
            j += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return None;
    }
    let mut end = j;
    if j < rb.len() && (rb[j] == b'e' || rb[j] == b'E') {
        if let Some((_, used)) = scan_exp(&rest[j + 1..]) {
            end = j + 1 + used;
        }
    }
    let v: f64 = rest[..end].parse().ok()?;
    Some(sign * v)
}

/// `[sign] digits` of an exponent: (value, bytes used).
fn scan_exp(s: &str) -> Option<(i64, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    let neg = match b.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let start = i;
    let mut v: i64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        v = v.saturating_mul(10).saturating_add((b[i] - b'0') as i64);
        i += 1;
    }
    if i == start {
        return None;
    }
    Some((if neg { -v } else { v }, i))
}

/// C's `%f` (six decimals; `inf`, `-inf`, `nan`, `-nan`).
pub fn c_fixed(v: f64) -> String {
    if v.is_nan() {
        return if v.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if v.is_infinite() {
        return if v < 0.0 { "-inf" } else { "inf" }.into();
    }
    format!("{v:.6}")
}

/// `(int) v == v ? "%d" : "%f"`, as MIN/MAX/ABS print.
pub fn c_num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v >= i32::MIN as f64 && v <= i32::MAX as f64 {
        format!("{}", v as i32)
    } else {
        c_fixed(v)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Add,
    Div,
    Mul,
    Sub,
    Mod,
    Pow,
    Shl,
    Shr,
    And,
    Xor,
    Or,
    Gt,
    Lt,
    Ge,
    Le,
    Eq,
}

/// MATH(expression[,type]): `number1 op number2` with `+ - * / % ^ << >> AND OR XOR
/// < > <= >= ==`; `type` is `f`/`float` (default), `i`/`int`, `h`/`hex` or `c`/`char`.
pub fn math(expr: &str, kind: Option<&str>) -> FuncResult {
    if expr.is_empty() {
        return Err(
            "Syntax: MATH(<number1><op><number 2>[,<type_of_result>]) - missing argument!".into(),
        );
    }
    let (neg1, m1) = match expr.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, expr),
    };
    // (operator, start of the operator, length of the operator text)
    let find = |c: char| m1.find(c);
    let found: Option<(Op, usize, usize)> = if let Some(p) = find('*') {
        Some((Op::Mul, p, 1))
    } else if let Some(p) = find('/') {
        Some((Op::Div, p, 1))
    } else if let Some(p) = find('%') {
        Some((Op::Mod, p, 1))
    } else if let Some(p) = find('^') {
        Some((Op::Pow, p, 1))
    } else if let Some(p) = m1.find("AND") {
        Some((Op::And, p, 3))
    } else if let Some(p) = m1.find("XOR") {
        Some((Op::Xor, p, 3))
    } else if let Some(p) = m1.find("OR") {
        Some((Op::Or, p, 2))
    } else if let Some(p) = find('>') {
        match m1.as_bytes().get(p + 1) {
            Some(b'=') => Some((Op::Ge, p, 2)),
            Some(b'>') => Some((Op::Shr, p, 2)),
            _ => Some((Op::Gt, p, 1)),
        }
    } else if let Some(p) = find('<') {
        match m1.as_bytes().get(p + 1) {
            Some(b'=') => Some((Op::Le, p, 2)),
            Some(b'<') => Some((Op::Shl, p, 2)),
            _ => Some((Op::Lt, p, 1)),
        }
    } else if let Some(p) = find('=') {
        match m1.as_bytes().get(p + 1) {
            Some(b'=') => Some((Op::Eq, p, 2)),
            _ => None,
        }
    } else if let Some(p) = find('+') {
        Some((Op::Add, p, 1))
    } else {
        // Subtraction last, so that a negative second number works.
        find('-').map(|p| (Op::Sub, p, 1))
    };
    #[derive(PartialEq)]
    enum Kind {
        Float,
        Int,
        Hex,
        Char,
    }
    let kind = match kind {
        None => Kind::Float,
        Some(k) => match k.to_ascii_lowercase().as_str() {
            "f" | "float" => Kind::Float,
            "i" | "int" => Kind::Int,
            "h" | "hex" => Kind::Hex,
            "c" | "char" => Kind::Char,
            _ => return Err(format!("Unknown type of result requested '{k}'.")),
        },
    };
    let Some((op, pos, oplen)) = found else {
        return Err("Supply all the parameters - just this once, please".into());
    };
    let (s1, s2) = (&m1[..pos], &m1[pos + oplen..]);
    let mut n1 = scan_double(s1).ok_or_else(|| format!("'{s1}' is not a valid number"))?;
    let n2 = scan_double(s2).ok_or_else(|| format!("'{s2}' is not a valid number"))?;
    if neg1 {
        n1 = -n1;
    }
    let (i1, i2) = (n1 as i32, n2 as i32);
    let cmp = |b: bool| Ok(if b { "TRUE" } else { "FALSE" }.to_string());
    let v: f64 = match op {
        Op::Add => n1 + n2,
        Op::Div => {
            if n2 <= 0.0 {
                0.0
            } else {
                n1 / n2
            }
        }
        Op::Mul => n1 * n2,
        Op::Sub => n1 - n2,
        Op::Mod => {
            if i2 == 0 {
                0.0
            } else {
                i1.wrapping_rem(i2) as f64
            }
        }
        Op::Pow => n1.powf(n2),
        Op::Shl => i1.wrapping_shl(i2 as u32) as f64,
        Op::Shr => i1.wrapping_shr(i2 as u32) as f64,
        Op::And => (i1 & i2) as f64,
        Op::Xor => (i1 ^ i2) as f64,
        Op::Or => (i1 | i2) as f64,
        Op::Gt => return cmp(n1 > n2),
        Op::Lt => return cmp(n1 < n2),
        Op::Ge => return cmp(n1 >= n2),
        Op::Le => return cmp(n1 <= n2),
        Op::Eq => return cmp(n1 == n2),
    };
    Ok(match kind {
        Kind::Float => c_fixed(v),
        Kind::Int => (v as i32).to_string(),
        Kind::Hex => format!("{:x}", v as i64 as u32),
        Kind::Char => {
            let b = v as i64 as u8;
            if b == 0 {
                String::new()
            } else {
                char::from(b).to_string()
            }
        }
    })
}

fn math_args(args: &str) -> FuncResult {
    if args.is_empty() {
        return math("", None);
    }
    let a = std_args(args, 2);
    math(
        a.first().map(|s| s.as_str()).unwrap_or(""),
        a.get(1).map(|s| s.as_str()),
    )
}

/// The new value for INC/DEC of a variable holding `value`: it must be an integer with
/// nothing after it.
pub fn crement_value(value: &str, delta: i32) -> Result<i32, String> {
    if value.is_empty() {
        return Err("variable is empty".into());
    }
    match scan_int(value) {
        Some((n, "")) => Ok((n.clamp(i32::MIN as i64, i32::MAX as i64) as i32).wrapping_add(delta)),
        _ => Err(format!("'{value}' is not a numeric value")),
    }
}

fn crement(chan: &mut Channel, var: &str, delta: i32) -> FuncResult {
    if var.is_empty() {
        return Err(format!(
            "Syntax: {}(<data>) - missing argument!",
            if delta > 0 { "INC" } else { "DEC" }
        ));
    }
    let Some(value) = pbx::get_var(chan, var) else {
        return Err(format!("Failed to obtain variable {var}, bailing out"));
    };
    let n = crement_value(&value, delta).map_err(|e| format!("The content of ${{{var}}}: {e}"))?;
    let s = n.to_string();
    pbx::set_var(chan, var, &s);
    Ok(s)
}

/// MIN (`max` false) / MAX of one or two numbers.
pub fn min_max(args: &str, max: bool) -> FuncResult {
    let a = std_args(args, 2);
    let s1 = a.first().map(|s| s.as_str()).unwrap_or("");
    let s2 = a.get(1).map(|s| s.as_str()).unwrap_or("");
    if s1.is_empty() && s2.is_empty() {
        return Err("Missing argument for number(s).".into());
    }
    let n1 = if s1.is_empty() {
        None
    } else {
        Some(scan_double(s1).ok_or_else(|| format!("'{s1}' is not a valid number"))?)
    };
    let n2 = if s2.is_empty() {
        n1
    } else {
        Some(scan_double(s2).ok_or_else(|| format!("'{s2}' is not a valid number"))?)
    };
    let r = match (n1, n2) {
        (Some(x), Some(y)) => {
            if max {
                if x < y {
                    y
                } else {
                    x
                }
            } else if x > y {
                y
            } else {
                x
            }
        }
        (None, Some(y)) => y,
        (Some(x), None) => x,
        (None, None) => return Err("Missing argument for number(s).".into()),
    };
    Ok(c_num(r))
}

pub fn abs(args: &str) -> FuncResult {
    let a = std_args(args, 1);
    let s = a.first().map(|s| s.as_str()).unwrap_or("");
    match scan_double(s) {
        Some(n) if !s.is_empty() => Ok(c_num(n.abs())),
        _ => Err(format!("Bad or missing argument for number: {s}")),
    }
}

/// RAND([min][,max]): an integer in [min, max] (defaults 0 and 2147483647; swapped when
/// reversed).
pub fn rand_in(min: Option<i64>, max: Option<i64>) -> i64 {
    let mut lo = min.unwrap_or(0);
    let mut hi = max.unwrap_or(i32::MAX as i64);
    if hi < lo {
        std::mem::swap(&mut lo, &mut hi);
    }
    rand::thread_rng().gen_range(lo..=hi)
}

fn rand_args(args: &str) -> FuncResult {
    let a = std_args(args, 2);
    let p = |i: usize| a.get(i).and_then(|s| s.parse::<i32>().ok()).map(i64::from);
    Ok(rand_in(p(0), p(1)).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanning() {
        assert_eq!(scan_int(" 42x"), Some((42, "x")));
        assert_eq!(scan_int("-7"), Some((-7, "")));
        assert_eq!(scan_int("x"), None);
        assert_eq!(scan_int("-"), None);
        assert_eq!(scan_double(" 3.5abc"), Some(3.5));
        assert_eq!(scan_double("1e3"), Some(1000.0));
        assert_eq!(scan_double("1e"), Some(1.0));
        assert_eq!(scan_double(".5"), Some(0.5));
        assert_eq!(scan_double("-2."), Some(-2.0));
        assert_eq!(scan_double("0x10"), Some(16.0));
        assert_eq!(scan_double("0x1.8p1"), Some(3.0));
        assert_eq!(scan_double("0xg"), Some(0.0));
        assert_eq!(scan_double("inf"), Some(f64::INFINITY));
        assert_eq!(scan_double("abc"), None);
        assert_eq!(scan_double(""), None);
        assert_eq!(scan_double("."), None);
    }

    #[test]
    fn math_ops() {
        assert_eq!(math("123%16", Some("int")).unwrap(), "11");
        assert_eq!(math("170 AND 63", Some("i")).unwrap(), "42");
        assert_eq!(math("170AND63", Some("i")).unwrap(), "42");
        assert_eq!(math("5 OR 2", Some("i")).unwrap(), "7");
        assert_eq!(math("6XOR3", Some("i")).unwrap(), "5");
        assert_eq!(math("1+2", None).unwrap(), "3.000000");
        assert_eq!(math("10/4", None).unwrap(), "2.500000");
        assert_eq!(math("10/0", None).unwrap(), "0.000000");
        assert_eq!(math("10/-2", None).unwrap(), "0.000000");
        assert_eq!(math("-5-3", Some("int")).unwrap(), "-8");
        assert_eq!(math("5*-3", Some("int")).unwrap(), "-15");
        assert_eq!(math("2^10", Some("i")).unwrap(), "1024");
        assert_eq!(math("1<<4", Some("i")).unwrap(), "16");
        assert_eq!(math("256>>4", Some("i")).unwrap(), "16");
        assert_eq!(math("255+0", Some("hex")).unwrap(), "ff");
        assert_eq!(math("-1+0", Some("h")).unwrap(), "ffffffff");
        assert_eq!(math("64+1", Some("c")).unwrap(), "A");
        assert_eq!(math("3>2", None).unwrap(), "TRUE");
        assert_eq!(math("3<=2", None).unwrap(), "FALSE");
        assert_eq!(math("3>=3", None).unwrap(), "TRUE");
        assert_eq!(math("3==3.0", None).unwrap(), "TRUE");
        assert_eq!(math("7%0", Some("i")).unwrap(), "0");
        assert!(math("3=3", None).is_err());
        assert!(math("42", None).is_err());
        assert!(math("a+1", None).is_err());
        assert!(math("1+2", Some("x")).is_err());
        assert_eq!(math_args("1+2,i").unwrap(), "3");
        assert!(math_args("").is_err());
    }

    #[test]
    fn min_max_abs() {
        assert_eq!(min_max("7,4", false).unwrap(), "4");
        assert_eq!(min_max("4,7", true).unwrap(), "7");
        assert_eq!(min_max("4.5,7", false).unwrap(), "4.500000");
        assert_eq!(min_max(",3", true).unwrap(), "3");
        assert_eq!(min_max("3,", false).unwrap(), "3");
        assert!(min_max(",", true).is_err());
        assert!(min_max("x,1", true).is_err());
        assert_eq!(abs("-13").unwrap(), "13");
        assert_eq!(abs("-1.5").unwrap(), "1.500000");
        assert!(abs("").is_err());
    }

    #[test]
    fn crement_and_rand() {
        assert_eq!(crement_value("41", 1).unwrap(), 42);
        assert_eq!(crement_value(" 0", -1).unwrap(), -1);
        assert!(crement_value("4x", 1).is_err());
        assert!(crement_value("", 1).is_err());
        assert!(crement_value("x", 1).is_err());
        for _ in 0..100 {
            let r = rand_in(Some(5), Some(3));
            assert!((3..=5).contains(&r));
        }
        assert_eq!(rand_in(Some(7), Some(7)), 7);
        let r: i64 = rand_args("1,2").unwrap().parse().unwrap();
        assert!((1..=2).contains(&r));
    }
}
