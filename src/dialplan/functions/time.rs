//! Time functions: STRFTIME and STRPTIME (Asterisk's `func_strings.c`) and IFTIME
//! (`func_logic.c`).
//!
//! * `STRFTIME([epoch][,timezone][,format])`: `epoch` may have a fraction (default: now),
//!   `timezone` is an IANA name (default: the system's zone; an unknown name also falls back
//!   to it, as Asterisk's `ast_localtime` does), `format` defaults to `%c`. Besides the
//!   C-library conversions (and glibc's `-`, `_`, `0`, `^`, `#` flags and field widths),
//!   `%q` gives milliseconds and `%1q`..`%6q` that many digits of the fraction of a second.
//! * `STRPTIME(datetime,timezone,format)`: the epoch of a wall-clock time in the zone.
//!   Fields missing from the format are those of a zeroed `struct tm` (year 1900, January,
//!   day 0 = the last day of the month before), as with `strptime(3)` + `mktime(3)`.
//! * `IFTIME(times,weekdays,mdays,months[,tz]?[true][:false])`.

use super::strings::std_args;
use crate::dialplan::pbx::{FuncDef, FuncRead, FuncResult};
use crate::dialplan::timespec::TimeSpec;
use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use std::fmt::Write as _;

pub fn funcs() -> Vec<FuncDef> {
    vec![
        FuncDef {
            name: "STRFTIME",
            synopsis: "Returns the current date/time in the specified format",
            read: Some(FuncRead::Sync(|_, a| Ok(strftime_args(a, Utc::now())))),
            write: None,
        },
        FuncDef {
            name: "STRPTIME",
            synopsis: "Returns the epoch of the arbitrary date/time string structured as described by the format",
            read: Some(FuncRead::Sync(|_, a| strptime_args(a))),
            write: None,
        },
        FuncDef {
            name: "IFTIME",
            synopsis: "Temporal Conditional",
            read: Some(FuncRead::Sync(|_, a| iftime(a, Utc::now()))),
            write: None,
        },
    ]
}

/// A time zone to show or read times in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Zone {
    Named(chrono_tz::Tz),
    /// The system zone when it has no IANA name we can find.
    Local,
}

/// The system's IANA zone: `TZ`, else the target of `/etc/localtime`, else `/etc/timezone`.
fn system_tz() -> Option<chrono_tz::Tz> {
    if let Ok(tz) = std::env::var("TZ") {
        let t = tz.trim_start_matches(':');
        if !t.is_empty() {
            return t.parse().ok();
        }
    }
    if let Ok(target) = std::fs::read_link("/etc/localtime") {
        let s = target.to_string_lossy();
        if let Some(p) = s.find("zoneinfo/") {
            if let Ok(tz) = s[p + "zoneinfo/".len()..].parse() {
                return Some(tz);
            }
        }
    }
    std::fs::read_to_string("/etc/timezone")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// `ast_localtime`'s zone choice: the named zone, else the system zone.
pub fn resolve_zone(name: &str) -> Zone {
    let name = name.trim();
    if !name.is_empty() {
        if let Ok(tz) = name.parse::<chrono_tz::Tz>() {
            return Zone::Named(tz);
        }
        tracing::debug!("unknown time zone '{}', using the system zone", name);
    }
    match system_tz() {
        Some(tz) => Zone::Named(tz),
        None => Zone::Local,
    }
}

/// `ast_get_timeval`: a (possibly fractional) epoch; None when it does not start with a
/// number. Returns (seconds, microseconds), microseconds having the sign of the value.
pub fn parse_epoch(s: &str) -> Option<(i64, i32)> {
    let v = super::math::scan_double(s)?;
    if !v.is_finite() {
        return None;
    }
    let v = v.clamp(-1e15, 1e15);
    let secs = v.trunc() as i64;
    let usec = ((v - v.trunc()) * 1_000_000.0) as i32;
    Some((secs, usec))
}

/// glibc's strftime conversions that chrono formats the same way.
const CONVERSIONS: &str = "aAbBcCdDeFgGhHIjklmMnpPrRsStTuUVwWxXyYzZ";

/// Format one conversion (`spec` is chrono syntax, e.g. `%-d`) or None when chrono cannot.
fn chrono_one<T: TimeZone>(dt: &DateTime<T>, spec: &str) -> Option<String>
where
    T::Offset: std::fmt::Display,
{
    if StrftimeItems::new(spec).any(|i| matches!(i, Item::Error)) {
        return None;
    }
    let mut s = String::new();
    write!(s, "{}", dt.format(spec)).ok()?;
    Some(s)
}

/// C `strftime` with Asterisk's `%q`/`%Nq` (fraction of a second from `usec`).
pub fn c_strftime<T: TimeZone>(dt: &DateTime<T>, format: &str, usec: u32) -> String
where
    T::Offset: std::fmt::Display,
{
    let f: Vec<char> = format.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < f.len() {
        if f[i] != '%' {
            out.push(f[i]);
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        // %q and %1q..%6q
        if let Some(&d) = f.get(i) {
            let digits = if d == 'q' {
                Some(3)
            } else if ('1'..='6').contains(&d) && f.get(i + 1) == Some(&'q') {
                i += 1;
                Some(d as usize - '0' as usize)
            } else {
                None
            };
            if let Some(n) = digits {
                let frac = usec.min(999_999) / 10u32.pow(6 - n as u32);
                let _ = write!(out, "{:0width$}", frac, width = n);
                i += 1;
                continue;
            }
        }
        if f.get(i) == Some(&'%') {
            out.push('%');
            i += 1;
            continue;
        }
        let mut flag = None;
        while let Some(&c) = f.get(i) {
            if "-_0^#".contains(c) {
                flag = Some(c);
                i += 1;
            } else {
                break;
            }
        }
        let mut width = 0usize;
        while let Some(&c) = f.get(i) {
            if c.is_ascii_digit() {
                width = (width * 10 + (c as usize - '0' as usize)).min(1024);
                i += 1;
            } else {
                break;
            }
        }
        if matches!(f.get(i), Some('E') | Some('O')) {
            i += 1;
        }
        let Some(&conv) = f.get(i) else {
            out.extend(&f[start..]);
            break;
        };
        i += 1;
        let spec_text: String = f[start..i].iter().collect();
        if !CONVERSIONS.contains(conv) {
            out.push_str(&spec_text);
            continue;
        }
        let chrono_spec = match flag {
            Some(c @ ('-' | '_' | '0')) => format!("%{c}{conv}"),
            _ => format!("%{conv}"),
        };
        let Some(mut v) = chrono_one(dt, &chrono_spec) else {
            out.push_str(&spec_text);
            continue;
        };
        if conv == 'Z' && v.starts_with(['+', '-']) {
            // No zone abbreviation known (system zone without a name).
            v = if v == "+00:00" {
                "UTC".into()
            } else {
                v.replace(':', "")
            };
        }
        match flag {
            Some('^') => v = v.to_uppercase(),
            Some('#') => {
                v = if conv == 'p' || conv == 'Z' {
                    v.to_lowercase()
                } else {
                    v.to_uppercase()
                }
            }
            _ => {}
        }
        let len = v.chars().count();
        if width > len {
            let fill =
                if flag == Some('0') || (flag.is_none() && v.chars().all(|c| c.is_ascii_digit())) {
                    '0'
                } else {
                    ' '
                };
            out.extend(std::iter::repeat_n(fill, width - len));
        }
        out.push_str(&v);
    }
    out
}

/// Format an epoch in a zone.
pub fn strftime_at(secs: i64, usec: i32, zone: Zone, format: &str) -> String {
    // A negative fraction belongs to the second before.
    let (secs, usec) = if usec < 0 {
        (secs - 1, (usec + 1_000_000) as u32)
    } else {
        (secs, usec as u32)
    };
    let Some(utc) = DateTime::<Utc>::from_timestamp(secs, usec * 1000) else {
        return String::new();
    };
    match zone {
        Zone::Named(tz) => c_strftime(&utc.with_timezone(&tz), format, usec),
        Zone::Local => c_strftime(&utc.with_timezone(&chrono::Local), format, usec),
    }
}

/// STRFTIME arguments against `now`.
pub fn strftime_args(args: &str, now: DateTime<Utc>) -> String {
    let a = std_args(args, 3);
    let (secs, usec) = a
        .first()
        .and_then(|e| parse_epoch(e))
        .unwrap_or((now.timestamp(), now.timestamp_subsec_micros() as i32));
    let zone = resolve_zone(a.get(1).map(|s| s.as_str()).unwrap_or(""));
    let format = a.get(2).map(|s| s.as_str()).unwrap_or("%c");
    strftime_at(secs, usec, zone, format)
}

/// `strptime` + `mktime` in `zone`: the epoch, or None when nothing matched.
pub fn strptime(s: &str, zone: Zone, format: &str) -> Option<i64> {
    let mut p = Parsed::new();
    match chrono::format::parse(&mut p, s, StrftimeItems::new(format)) {
        Ok(()) => {}
        // Text after what the format describes is ignored, as strptime(3) does.
        Err(e) if e.kind() == chrono::format::ParseErrorKind::TooLong => {}
        Err(_) => return None,
    }
    if let Some(ts) = p.timestamp() {
        return Some(ts);
    }
    let year = match (p.year(), p.year_div_100(), p.year_mod_100()) {
        (Some(y), _, _) => y,
        (None, Some(c), Some(m)) => c * 100 + m,
        (None, None, Some(m)) => {
            if m >= 69 {
                1900 + m
            } else {
                2000 + m
            }
        }
        (None, Some(c), None) => c * 100,
        (None, None, None) => 1900,
    };
    let month = p.month().unwrap_or(1);
    let day = p.day().unwrap_or(0) as i64;
    let hour = p.hour_div_12().unwrap_or(0) * 12 + p.hour_mod_12().unwrap_or(0);
    let (minute, second) = (
        p.minute().unwrap_or(0) as i64,
        p.second().unwrap_or(0) as i64,
    );
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let naive: NaiveDateTime = first
        .and_hms_opt(0, 0, 0)?
        .checked_add_signed(Duration::days(day - 1))?
        .checked_add_signed(Duration::hours(hour as i64))?
        .checked_add_signed(Duration::minutes(minute))?
        .checked_add_signed(Duration::seconds(second))?;
    let local = |n: &NaiveDateTime| -> Option<i64> {
        match zone {
            Zone::Named(tz) => wall_to_epoch(&tz, n),
            Zone::Local => wall_to_epoch(&chrono::Local, n),
        }
    };
    local(&naive)
}

/// A wall-clock time to an epoch: the earlier of an ambiguous time; a time in a gap is
/// read with the offset in force before the gap (so it moves forward, as `mktime` does).
fn wall_to_epoch<T: TimeZone>(tz: &T, n: &NaiveDateTime) -> Option<i64> {
    if let Some(dt) = tz.from_local_datetime(n).earliest() {
        return Some(dt.timestamp());
    }
    let before = tz
        .from_local_datetime(&(*n - Duration::hours(3)))
        .earliest()?;
    let off = before.offset().fix().local_minus_utc() as i64;
    Some(n.and_utc().timestamp() - off)
}

fn strptime_args(args: &str) -> FuncResult {
    if args.is_empty() {
        return Err("Asterisk function STRPTIME() requires an argument.".into());
    }
    let a = std_args(args, 3);
    let format = a.get(2).map(|s| s.as_str()).unwrap_or("");
    if format.is_empty() {
        return Err("No format supplied to STRPTIME(<timestring>,<timezone>,<format>)".into());
    }
    let zone = resolve_zone(a.get(1).map(|s| s.as_str()).unwrap_or(""));
    match strptime(a.first().map(|s| s.as_str()).unwrap_or(""), zone, format) {
        Some(t) => Ok(t.to_string()),
        None => {
            tracing::warn!("STRPTIME() found no time specified within the string");
            Ok(String::new())
        }
    }
}

/// `ast_strip_quoted(s, "\"", "\"")`: trim whitespace, then one pair of enclosing quotes.
pub fn strip_quoted(s: &str) -> &str {
    let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
    if let Some(inner) = s.strip_prefix('"') {
        if let Some(inner) = inner.strip_suffix('"') {
            return inner;
        }
        if s == "\"" {
            return "";
        }
    }
    s
}

/// IFTIME(timespec?[true][:false]) evaluated at `now`.
pub fn iftime(args: &str, now: DateTime<Utc>) -> FuncResult {
    let usage = "Syntax IFTIME(<timespec>?[<true>][:<false>])";
    let data = strip_quoted(args);
    let Some((expr, rest)) = data.split_once('?') else {
        return Err(usage.into());
    };
    if expr.is_empty() {
        return Err(usage.into());
    }
    let (iftrue, iffalse) = match rest.split_once(':') {
        Some((t, f)) => (t, Some(f)),
        None => (rest, None),
    };
    let spec = TimeSpec::parse(expr).map_err(|e| format!("Invalid Time Spec: {e}"))?;
    Ok(if spec.matches_at(now) {
        strip_quoted(iftrue).to_string()
    } else {
        iffalse.map(strip_quoted).unwrap_or("").to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> Zone {
        Zone::Named(chrono_tz::Europe::Berlin)
    }

    #[test]
    fn strftime_basic() {
        // 2006-03-01 07:30:35 America/Chicago = 1141219835
        let chicago = Zone::Named(chrono_tz::America::Chicago);
        assert_eq!(
            strftime_at(1141219835, 0, chicago, "%Y-%m-%d %H:%M:%S"),
            "2006-03-01 07:30:35"
        );
        assert_eq!(
            strftime_at(1141219835, 0, chicago, "%c"),
            "Wed Mar  1 07:30:35 2006"
        );
        assert_eq!(strftime_at(1141219835, 0, chicago, "%Z %z"), "CST -0600");
        assert_eq!(
            strftime_at(0, 0, Zone::Named(chrono_tz::UTC), "%s|%j|%a %A %b %B|%p|%%"),
            "0|001|Thu Thursday Jan January|AM|%"
        );
        assert_eq!(
            strftime_at(0, 0, berlin(), "%-d.%-m. %e|%_H|%^a|%#p"),
            "1.1.  1| 1|THU|am"
        );
        assert_eq!(
            strftime_at(0, 0, berlin(), "%Ey|%Od|%5Y|%k"),
            "70|01|01970| 1"
        );
        // Unknown conversions are copied; a lone % at the end too.
        assert_eq!(strftime_at(0, 0, berlin(), "%Q %f x%"), "%Q %f x%");
    }

    #[test]
    fn strftime_fractions() {
        let z = Zone::Named(chrono_tz::UTC);
        assert_eq!(strftime_at(10, 123456, z, "%S.%q"), "10.123");
        assert_eq!(strftime_at(10, 123456, z, "%1q %2q %6q"), "1 12 123456");
        assert_eq!(strftime_at(10, 5000, z, "%3q"), "005");
        assert_eq!(parse_epoch("10.5"), Some((10, 500000)));
        assert_eq!(parse_epoch("x"), None);
        let now = DateTime::<Utc>::from_timestamp(86400, 0).unwrap();
        assert_eq!(strftime_args(",UTC,%Y-%m-%d", now), "1970-01-02");
        assert_eq!(strftime_args("0,UTC,%d/%m,%Y", now), "01/01,1970");
        assert_eq!(strftime_args("0,Europe/Berlin,%H:%M", now), "01:00");
    }

    #[test]
    fn strptime_cases() {
        let chicago = Zone::Named(chrono_tz::America::Chicago);
        assert_eq!(
            strptime("2006-03-01 07:30:35", chicago, "%Y-%m-%d %H:%M:%S"),
            Some(1141219835)
        );
        let utc = Zone::Named(chrono_tz::UTC);
        assert_eq!(strptime("1970-01-02", utc, "%Y-%m-%d"), Some(86400));
        assert_eq!(strptime("1234567890", utc, "%s"), Some(1234567890));
        // Trailing text is ignored.
        assert_eq!(
            strptime("1970-01-02 and more", utc, "%Y-%m-%d"),
            Some(86400)
        );
        // Missing day: day 0 of January 1970 is 31 December 1969.
        assert_eq!(strptime("1970", utc, "%Y"), Some(-86400));
        assert_eq!(strptime("garbage", utc, "%Y-%m-%d"), None);
        assert_eq!(
            strptime_args("2006-03-01 07:30:35,America/Chicago,%Y-%m-%d %H:%M:%S").unwrap(),
            "1141219835"
        );
        assert!(strptime_args("2006,UTC,").is_err());
        // In a DST gap the time moves forward.
        let t = strptime("2021-03-28 02:30", berlin(), "%Y-%m-%d %H:%M").unwrap();
        assert_eq!(strftime_at(t, 0, berlin(), "%H:%M"), "03:30");
    }

    #[test]
    fn iftime_cases() {
        // 1970-01-01 was a Thursday; 00:00 UTC.
        let at = DateTime::<Utc>::from_timestamp(12 * 3600, 0).unwrap();
        assert_eq!(iftime("*,thu,*,*,UTC?yes:no", at).unwrap(), "yes");
        assert_eq!(iftime("*,fri,*,*,UTC?yes:no", at).unwrap(), "no");
        assert_eq!(
            iftime("11:00-13:00,*,1,jan,UTC?\"in\":\"out\"", at).unwrap(),
            "in"
        );
        assert_eq!(iftime("13:00-14:00|*|*|*|UTC?in", at).unwrap(), "");
        assert_eq!(iftime("\"*,*,*,*,UTC?a:b\"", at).unwrap(), "a");
        assert!(iftime("*,*,*,*", at).is_err());
        assert!(iftime("?a:b", at).is_err());
        assert!(iftime("*,nosuchday?a:b", at).is_err());
        assert_eq!(strip_quoted("  \"x\" "), "x");
        assert_eq!(strip_quoted("\"x"), "\"x");
    }
}
