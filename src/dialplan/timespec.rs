//! Time specs for `include => ctx,times,weekdays,mdays,months[,tz]`, GotoIfTime, IFTIME.
//!
//! Semantics follow Asterisk's `main/pbx_timing.c` (`ast_build_timing`, `ast_check_timing2`):
//!
//! * Fields are separated by `,` or `|`; missing trailing fields and empty fields mean `*`.
//! * `times`: `*`, `hh:mm` (that one minute) or `hh:mm-hh:mm`, **both ends included** (so
//!   `09:00-17:00` still matches at 17:00), wrapping past midnight (`22:00-06:00`).
//! * `weekdays`: `sun`..`sat` (case-insensitive; full names are accepted too) or `1`..`7`
//!   with `1` = Sunday, as Asterisk numbers them; `mdays`: `1`..`31`; `months`: `jan`..`dec`
//!   or `1`..`12`. Ranges are cyclic (`fri-mon`, `nov-feb`, `25-5`).
//! * Any field may list several elements joined with `&` (`mon&wed&fri`, `1-5&20`).
//! * The optional fifth field is an IANA time zone name (`Europe/Berlin`) in which the
//!   time is evaluated.
//!
//! Unlike Asterisk, which logs and skips an invalid element, an invalid element is an error.

use chrono::{Datelike, Timelike};

const MINUTES_PER_DAY: usize = 24 * 60;
const MINUTE_WORDS: usize = MINUTES_PER_DAY.div_ceil(64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSpec {
    /// One bit per minute of the day.
    minutes: [u64; MINUTE_WORDS],
    /// Bit 0 = Sunday.
    weekdays: u8,
    /// Bit 0 = the 1st.
    mdays: u32,
    /// Bit 0 = January.
    months: u16,
    tz: Option<chrono_tz::Tz>,
}

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const DAYS_LONG: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const MONTHS_LONG: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

impl TimeSpec {
    /// Parse `times,weekdays,mdays,months[,tz]` (`|` also accepted as separator).
    pub fn parse(spec: &str) -> Result<TimeSpec, String> {
        let fields: Vec<&str> = spec.split([',', '|']).map(str::trim).collect();
        if spec.trim().is_empty() {
            return Err("empty time spec".to_string());
        }
        if fields.len() > 5 {
            return Err(format!(
                "time spec '{spec}' has {} fields, expected times,weekdays,mdays,months[,timezone]",
                fields.len()
            ));
        }
        let field = |i: usize| fields.get(i).copied().unwrap_or("");
        let minutes = parse_times(field(0))?;
        let weekdays = parse_range(field(1), 7, &[&DAYS, &DAYS_LONG], "day of week")? as u8;
        let mdays = parse_range(field(2), 31, &[], "day of month")?;
        let months = parse_range(field(3), 12, &[&MONTHS, &MONTHS_LONG], "month")? as u16;
        let tz = match field(4) {
            "" => None,
            name => Some(
                name.parse::<chrono_tz::Tz>()
                    .map_err(|_| format!("unknown time zone '{name}' in time spec"))?,
            ),
        };
        Ok(TimeSpec {
            minutes,
            weekdays,
            mdays,
            months,
            tz,
        })
    }

    /// Does the given local time match? With a time zone in the spec, the instant is
    /// looked at in that zone instead.
    pub fn matches(&self, now: chrono::DateTime<chrono::Local>) -> bool {
        match self.tz {
            Some(tz) => self.matches_wall_clock(&now.with_timezone(&tz)),
            None => self.matches_wall_clock(&now),
        }
    }

    /// Does the instant match, in the spec's time zone or else the machine's local one?
    pub fn matches_at(&self, utc: chrono::DateTime<chrono::Utc>) -> bool {
        match self.tz {
            Some(tz) => self.matches_wall_clock(&utc.with_timezone(&tz)),
            None => self.matches_wall_clock(&utc.with_timezone(&chrono::Local)),
        }
    }

    /// Match wall-clock fields as they are, ignoring the spec's time zone (for callers that
    /// have already converted, or that work with a `NaiveDateTime`).
    pub fn matches_wall_clock<T: Datelike + Timelike>(&self, t: &T) -> bool {
        let month = t.month0();
        let mday = t.day0();
        let wday = t.weekday().num_days_from_sunday();
        let minute = (t.hour() * 60 + t.minute()) as usize;
        self.months & (1 << month) != 0
            && self.mdays & (1 << mday) != 0
            && self.weekdays & (1 << wday) != 0
            && minute < MINUTES_PER_DAY
            && self.minutes[minute / 64] & (1 << (minute % 64)) != 0
    }

    /// The time zone named in the spec, if any.
    pub fn timezone(&self) -> Option<chrono_tz::Tz> {
        self.tz
    }
}

fn parse_hhmm(s: &str) -> Result<usize, String> {
    let (h, m) = s
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("'{s}' isn't a valid time"))?;
    let num = |x: &str, max: usize| -> Option<usize> {
        let x = x.trim();
        if x.is_empty() || x.len() > 2 || !x.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        x.parse::<usize>().ok().filter(|v| *v <= max)
    };
    match (num(h, 23), num(m, 59)) {
        (Some(h), Some(m)) => Ok(h * 60 + m),
        _ => Err(format!("'{s}' isn't a valid time (hh:mm)")),
    }
}

fn parse_times(field: &str) -> Result<[u64; MINUTE_WORDS], String> {
    let mut mask = [0u64; MINUTE_WORDS];
    let mut set = |m: usize| mask[m / 64] |= 1 << (m % 64);
    if field.is_empty() || field == "*" {
        (0..MINUTES_PER_DAY).for_each(&mut set);
        return Ok(mask);
    }
    for part in field.split('&') {
        match part.split_once('-') {
            None => set(parse_hhmm(part)?),
            Some((start, end)) => {
                let (start, end) = (parse_hhmm(start)?, parse_hhmm(end)?);
                let mut m = start;
                while m != end {
                    set(m);
                    m = (m + 1) % MINUTES_PER_DAY;
                }
                set(end);
            }
        }
    }
    Ok(mask)
}

/// Index (0-based) of a weekday / day / month element.
fn lookup(s: &str, max: u32, names: &[&[&str]], what: &str) -> Result<u32, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = s.parse::<u32>() {
            if (1..=max).contains(&n) {
                return Ok(n - 1);
            }
        }
        return Err(format!("invalid {what} '{s}' (expected 1-{max})"));
    }
    for list in names {
        if let Some(i) = list.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32);
        }
    }
    Err(format!("invalid {what} '{s}'"))
}

fn parse_range(field: &str, max: u32, names: &[&[&str]], what: &str) -> Result<u32, String> {
    let all = (1u32 << max) - 1;
    if field.is_empty() || field == "*" {
        return Ok(all);
    }
    let mut mask = 0u32;
    for part in field.split('&') {
        let (start, end) = match part.split_once('-') {
            Some((a, b)) => (lookup(a, max, names, what)?, lookup(b, max, names, what)?),
            None => {
                let v = lookup(part, max, names, what)?;
                (v, v)
            }
        };
        let mut i = start;
        while i != end {
            mask |= 1 << i;
            i = (i + 1) % max;
        }
        mask |= 1 << end;
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};

    /// 2024-01-01 was a Monday.
    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 30)
            .unwrap()
    }

    fn ts(s: &str) -> TimeSpec {
        TimeSpec::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn wildcards() {
        let t = ts("*,*,*,*");
        assert!(t.matches_wall_clock(&at(2024, 1, 1, 0, 0)));
        assert!(t.matches_wall_clock(&at(2024, 12, 31, 23, 59)));
        assert_eq!(ts("*"), t);
        assert_eq!(ts("*|*|*|*"), t);
        assert_eq!(ts(",,,"), t);
        assert!(t.timezone().is_none());
    }

    #[test]
    fn office_hours() {
        let t = ts("09:00-17:00,mon-fri,*,*");
        assert!(t.matches_wall_clock(&at(2024, 1, 1, 9, 0)), "Monday 09:00");
        assert!(
            t.matches_wall_clock(&at(2024, 1, 1, 17, 0)),
            "end minute is included"
        );
        assert!(!t.matches_wall_clock(&at(2024, 1, 1, 17, 1)));
        assert!(!t.matches_wall_clock(&at(2024, 1, 1, 8, 59)));
        assert!(t.matches_wall_clock(&at(2024, 1, 5, 12, 0)), "Friday");
        assert!(!t.matches_wall_clock(&at(2024, 1, 6, 12, 0)), "Saturday");
        assert!(!t.matches_wall_clock(&at(2024, 1, 7, 12, 0)), "Sunday");
        assert_eq!(ts("09:00-17:00|mon-fri|*|*"), t);
        assert_eq!(ts("09:00-17:00,MON-FRI"), t);
        assert_eq!(ts("9:00-17:00,monday-friday,*,*"), t);
        assert_eq!(ts("09:00-17:00,2-6,*,*"), t, "numeric weekdays, 1 = Sunday");
    }

    #[test]
    fn wrapping_ranges() {
        let night = ts("22:00-06:00");
        assert!(night.matches_wall_clock(&at(2024, 1, 1, 23, 30)));
        assert!(night.matches_wall_clock(&at(2024, 1, 1, 0, 0)));
        assert!(night.matches_wall_clock(&at(2024, 1, 1, 6, 0)));
        assert!(!night.matches_wall_clock(&at(2024, 1, 1, 12, 0)));
        let weekend = ts("*,fri-mon");
        assert!(weekend.matches_wall_clock(&at(2024, 1, 5, 12, 0)), "Fri");
        assert!(weekend.matches_wall_clock(&at(2024, 1, 7, 12, 0)), "Sun");
        assert!(weekend.matches_wall_clock(&at(2024, 1, 1, 12, 0)), "Mon");
        assert!(!weekend.matches_wall_clock(&at(2024, 1, 3, 12, 0)), "Wed");
        let winter = ts("*,*,*,nov-feb");
        assert!(winter.matches_wall_clock(&at(2024, 12, 1, 0, 0)));
        assert!(winter.matches_wall_clock(&at(2024, 2, 1, 0, 0)));
        assert!(!winter.matches_wall_clock(&at(2024, 3, 1, 0, 0)));
        let turn = ts("*,*,30-2,*");
        assert!(turn.matches_wall_clock(&at(2024, 1, 31, 0, 0)));
        assert!(turn.matches_wall_clock(&at(2024, 1, 2, 0, 0)));
        assert!(!turn.matches_wall_clock(&at(2024, 1, 3, 0, 0)));
    }

    #[test]
    fn lists_and_single_values() {
        let t = ts("08:00-12:00&13:00-17:00,mon&wed&fri,1-15&20,jan-mar&dec");
        assert!(t.matches_wall_clock(&at(2024, 1, 1, 8, 0)), "Mon 1 Jan");
        assert!(!t.matches_wall_clock(&at(2024, 1, 1, 12, 30)), "lunch");
        assert!(t.matches_wall_clock(&at(2024, 1, 3, 13, 0)), "Wed");
        assert!(!t.matches_wall_clock(&at(2024, 1, 2, 9, 0)), "Tue");
        assert!(!t.matches_wall_clock(&at(2024, 1, 17, 9, 0)), "17th (Wed)");
        assert!(!t.matches_wall_clock(&at(2024, 4, 1, 9, 0)), "April (Mon)");
        assert!(t.matches_wall_clock(&at(2024, 12, 2, 9, 0)), "Mon 2 Dec");
        let one = ts("12:15");
        assert!(one.matches_wall_clock(&at(2024, 5, 5, 12, 15)));
        assert!(!one.matches_wall_clock(&at(2024, 5, 5, 12, 16)));
        let dec25 = ts("*,*,25,dec");
        assert!(dec25.matches_wall_clock(&at(2024, 12, 25, 10, 0)));
        assert!(!dec25.matches_wall_clock(&at(2024, 12, 26, 10, 0)));
        assert!(!dec25.matches_wall_clock(&at(2024, 11, 25, 10, 0)));
    }

    #[test]
    fn time_zones() {
        let t = ts("09:00-17:00,mon-fri,*,*,America/New_York");
        assert_eq!(t.timezone(), Some(chrono_tz::America::New_York));
        // Monday 2024-01-01 14:30 UTC is 09:30 in New York (EST, UTC-5).
        assert!(t.matches_at(Utc.with_ymd_and_hms(2024, 1, 1, 14, 30, 0).unwrap()));
        // 13:30 UTC is 08:30 there.
        assert!(!t.matches_at(Utc.with_ymd_and_hms(2024, 1, 1, 13, 30, 0).unwrap()));
        // Summer time: 13:30 UTC is 09:30 EDT on Monday 2024-07-01.
        assert!(t.matches_at(Utc.with_ymd_and_hms(2024, 7, 1, 13, 30, 0).unwrap()));
        // Weekday is taken in the zone: Saturday 02:00 UTC is still Friday 21:00 in NY.
        let fri = ts("*,fri,*,*,America/New_York");
        assert!(fri.matches_at(Utc.with_ymd_and_hms(2024, 1, 6, 2, 0, 0).unwrap()));
        let local = chrono::Local.from_utc_datetime(&at(2024, 1, 1, 14, 30));
        assert!(t.matches(local));
        let utc = ts("*,*,*,*,UTC");
        assert!(utc.matches_at(Utc::now()));
        assert!(TimeSpec::parse("*,*,*,*,Mars/Olympus").is_err());
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "  ",
            "25:00",
            "09:60-10:00",
            "9-17",
            "09:00-",
            "*,funday",
            "*,0",
            "*,8",
            "*,*,32",
            "*,*,0",
            "*,*,*,13",
            "*,*,*,foo",
            "*,*,*,*,UTC,extra",
            "0900-1700",
            "*,mon-",
            "*,*,1x",
        ] {
            assert!(TimeSpec::parse(bad).is_err(), "{bad:?} should fail");
        }
    }
}
