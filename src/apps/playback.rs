//! Prompts and digits: Playback, Background, WaitExten, ControlPlayback, Read, SayDigits,
//! SayNumber, SayAlpha, SayPhonetic, SayUnixTime, Milliwatt, Playtones, StopPlaytones, Record,
//! WaitForSilence, SendDTMF.

use super::{has_opt, parse_options};
use crate::channel::{Channel, ChannelState, Generator, ReadEvent};
use crate::dialplan::functions::core_funcs::{digit_timeout, response_timeout};
use crate::dialplan::pbx::{self, AppDef, AppExec, AppResult};
use crate::dialplan::subst::split_args;
use crate::media::file::{find_sound, Playback, Recorder};
use crate::media::tone::ToneGen;
use crate::media::Frame;
use futures_util::future::BoxFuture;
use std::any::Any;
use std::time::{Duration, Instant};

pub fn apps() -> Vec<AppDef> {
    vec![
        AppDef {
            name: "Playback",
            synopsis: "Play a file",
            exec: AppExec::Async(playback),
        },
        AppDef {
            name: "Background",
            synopsis: "Play an audio file while waiting for digits of an extension to go to",
            exec: AppExec::Async(background),
        },
        AppDef {
            name: "WaitExten",
            synopsis: "Waits for an extension to be entered",
            exec: AppExec::Async(wait_exten),
        },
        AppDef {
            name: "ControlPlayback",
            synopsis: "Play a file with fast forward and rewind",
            exec: AppExec::Async(control_playback),
        },
        AppDef {
            name: "Read",
            synopsis: "Read a variable",
            exec: AppExec::Async(read),
        },
        AppDef {
            name: "SayDigits",
            synopsis: "Say Digits",
            exec: AppExec::Async(say_digits),
        },
        AppDef {
            name: "SayNumber",
            synopsis: "Say Number",
            exec: AppExec::Async(say_number),
        },
        AppDef {
            name: "SayAlpha",
            synopsis: "Say Alpha",
            exec: AppExec::Async(say_alpha),
        },
        AppDef {
            name: "SayPhonetic",
            synopsis: "Say Phonetic",
            exec: AppExec::Async(say_phonetic),
        },
        AppDef {
            name: "SayUnixTime",
            synopsis: "Says a specified time in a custom format",
            exec: AppExec::Async(say_unixtime),
        },
        AppDef {
            name: "Milliwatt",
            synopsis: "Generates a 1004 Hz test tone at 0dbm (mu-law)",
            exec: AppExec::Async(milliwatt),
        },
        AppDef {
            name: "Playtones",
            synopsis: "Play a tone list",
            exec: AppExec::Sync(playtones),
        },
        AppDef {
            name: "StopPlaytones",
            synopsis: "Stop playing a tone list",
            exec: AppExec::Sync(|c, _| {
                c.stop_generator();
                AppResult::Continue
            }),
        },
        AppDef {
            name: "Record",
            synopsis: "Record to a file",
            exec: AppExec::Async(record),
        },
        AppDef {
            name: "WaitForSilence",
            synopsis: "Waits for a specified amount of silence",
            exec: AppExec::Async(wait_for_silence),
        },
        AppDef {
            name: "SendDTMF",
            synopsis: "Sends arbitrary DTMF digits",
            exec: AppExec::Async(send_dtmf),
        },
    ]
}

/// A sound file played as a channel generator.
pub struct FileGen(pub Playback);

impl Generator for FileGen {
    fn next_frame(&mut self) -> Option<Frame> {
        self.0.next_frame()
    }
    fn position(&self) -> u64 {
        self.0.position_samples()
    }
    fn skip_ms(&mut self, ms: i64) {
        self.0.skip_ms(ms)
    }
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

/// A tone list (or milliwatt) as a generator.
pub struct ToneGenerator(pub ToneGen);

impl Generator for ToneGenerator {
    fn next_frame(&mut self) -> Option<Frame> {
        self.0.next_frame()
    }
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

/// Open a prompt for the channel's language, encoded for its native format.
pub fn open_sound(chan: &Channel, name: &str) -> Option<Box<dyn Generator>> {
    let path = find_sound(&chan.core.dirs.sounds, &chan.language, name.trim())?;
    match Playback::open(&path, chan.native_format()) {
        Ok(p) => Some(Box::new(FileGen(p))),
        Err(e) => {
            tracing::warn!("{}: cannot play {}: {}", chan.name, path.display(), e);
            None
        }
    }
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    Done,
    Digit(char),
    Hangup,
    NotFound,
}

/// `ast_streamfile` + `ast_waitstream`: play `name`, stop on a digit in `escape`.
/// Returns how it ended and the position reached in samples (AGI `endpos`).
pub async fn stream_file(
    chan: &mut Channel,
    name: &str,
    escape: &str,
    offset_samples: u64,
) -> (StreamEnd, u64) {
    let Some(mut g) = open_sound(chan, name) else {
        tracing::warn!("{}: file {} does not exist", chan.name, name);
        return (StreamEnd::NotFound, 0);
    };
    if offset_samples > 0 {
        g.skip_ms((offset_samples / 8) as i64);
    }
    chan.start_generator(g);
    loop {
        match chan.read().await {
            ReadEvent::StreamDone => return (StreamEnd::Done, 0),
            ReadEvent::Dtmf(d) if escape.contains(d) => {
                let pos = chan.stop_generator();
                return (StreamEnd::Digit(d), pos);
            }
            ReadEvent::Hangup | ReadEvent::Interrupted => {
                let pos = chan.stop_generator();
                return (StreamEnd::Hangup, pos);
            }
            _ => {}
        }
    }
}

/// Play a list of files; stop on a digit in `escape`.
pub async fn play_list(chan: &mut Channel, files: &[String], escape: &str) -> StreamEnd {
    for f in files {
        match stream_file(chan, f, escape, 0).await.0 {
            StreamEnd::Done | StreamEnd::NotFound => {}
            other => return other,
        }
    }
    StreamEnd::Done
}

fn split_files(s: &str) -> Vec<String> {
    s.split('&')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect()
}

fn playback<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let a = split_args(args);
        let files = split_files(a.first().map(|s| s.as_str()).unwrap_or(""));
        let opts = a.get(1).map(|s| s.to_ascii_lowercase()).unwrap_or_default();
        if files.is_empty() {
            tracing::warn!("Playback requires an argument (filename)");
            return AppResult::Hangup;
        }
        if chan.state != ChannelState::Up {
            if opts.contains("skip") {
                pbx::set_var(chan, "PLAYBACKSTATUS", "SUCCESS");
                return AppResult::Continue;
            }
            if !opts.contains("noanswer") {
                chan.answer();
            }
        }
        let mut status = "SUCCESS";
        for f in &files {
            match stream_file(chan, f, "", 0).await.0 {
                StreamEnd::NotFound => {
                    status = "FAILED";
                    break;
                }
                StreamEnd::Hangup => return AppResult::Hangup,
                _ => {}
            }
        }
        pbx::set_var(chan, "PLAYBACKSTATUS", status);
        AppResult::Continue
    })
}

/// After a first digit, collect the rest of an extension (digit timeout between digits) and
/// jump there, or to `i`. Used by Background and WaitExten.
async fn collect_exten(chan: &mut Channel, context: &str, first: char) -> AppResult {
    let mut exten = first.to_string();
    let core = chan.core.clone();
    let dp = &core.dialplan;
    loop {
        let d = dp.load();
        if !d.match_more(context, &exten, &chan.caller.num) {
            break;
        }
        drop(d);
        match chan
            .read_timeout(Duration::from_millis(digit_timeout(chan)))
            .await
        {
            ReadEvent::Dtmf(x) => exten.push(x),
            ReadEvent::Timeout => break,
            ReadEvent::Hangup | ReadEvent::Interrupted => return AppResult::Hangup,
            _ => continue,
        }
    }
    let exists = dp.load().exists(context, &exten, 1, &chan.caller.num);
    if exists {
        chan.context = context.to_string();
        chan.exten = exten;
        chan.priority = 1;
        chan.jumped = true;
        AppResult::Continue
    } else {
        chan.exten = exten;
        if pbx::goto_special(chan, "i", "INVALID") {
            chan.jumped = true;
            AppResult::Continue
        } else {
            AppResult::Hangup
        }
    }
}

fn background<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let a = split_args(args);
        let files = split_files(a.first().map(|s| s.as_str()).unwrap_or(""));
        let opts = a.get(1).cloned().unwrap_or_default();
        let context = a
            .get(3)
            .filter(|c| !c.is_empty())
            .cloned()
            .unwrap_or_else(|| chan.context.clone());
        if chan.state != ChannelState::Up {
            if opts.contains('s') {
                pbx::set_var(chan, "BACKGROUNDSTATUS", "SUCCESS");
                return AppResult::Continue;
            }
            if !opts.contains('n') {
                chan.answer();
            }
        }
        let mut status = "SUCCESS";
        for f in &files {
            match stream_file(chan, f, "0123456789*#ABCD", 0).await.0 {
                StreamEnd::Digit(d) => {
                    pbx::set_var(chan, "BACKGROUNDSTATUS", "SUCCESS");
                    let dp = chan.core.dialplan.load();
                    let ok = dp.can_match(&context, &d.to_string(), &chan.caller.num);
                    drop(dp);
                    if opts.contains('m') && !ok {
                        continue;
                    }
                    return collect_exten(chan, &context, d).await;
                }
                StreamEnd::Hangup => return AppResult::Hangup,
                StreamEnd::NotFound => {
                    status = "FAILED";
                    break;
                }
                StreamEnd::Done => {}
            }
        }
        pbx::set_var(chan, "BACKGROUNDSTATUS", status);
        AppResult::Continue
    })
}

fn wait_exten<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let a = split_args(args);
        let ms = a
            .first()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map(|s| (s * 1000.0) as u64)
            .unwrap_or_else(|| response_timeout(chan));
        let opts = parse_options(a.get(1).map(|s| s.as_str()).unwrap_or(""));
        if has_opt(&opts, 'm') {
            if let Ok(g) = ToneGen::parse(crate::media::tone::us::RING, 8000) {
                chan.start_generator(Box::new(ToneGenerator(g)));
            }
        }
        let context = chan.context.clone();
        let r = match chan.read_timeout(Duration::from_millis(ms)).await {
            ReadEvent::Dtmf(d) => {
                chan.stop_generator();
                collect_exten(chan, &context, d).await
            }
            ReadEvent::Hangup | ReadEvent::Interrupted => AppResult::Hangup,
            _ => {
                chan.stop_generator();
                if pbx::goto_special(chan, "t", "RESPONSETIMEOUT") {
                    chan.jumped = true;
                    AppResult::Continue
                } else {
                    AppResult::Hangup
                }
            }
        };
        chan.stop_generator();
        r
    })
}

fn control_playback<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let a = split_args(args);
        let file = a.first().cloned().unwrap_or_default();
        let skip: i64 = a
            .get(1)
            .and_then(|s| s.trim().parse().ok())
            .filter(|s| *s > 0)
            .unwrap_or(3000);
        let key = |i: usize, def: &str| {
            a.get(i)
                .filter(|s| !s.is_empty())
                .cloned()
                .unwrap_or_else(|| def.to_string())
        };
        let (ff, rew, stop, pause, restart) =
            (key(2, "#"), key(3, "*"), key(4, ""), key(5, ""), key(6, ""));
        let Some(g) = open_sound(chan, &file) else {
            pbx::set_var(chan, "CPLAYBACKSTATUS", "ERROR");
            return AppResult::Continue;
        };
        if chan.state != ChannelState::Up {
            chan.answer();
        }
        chan.start_generator(g);
        let mut paused: Option<Box<dyn Generator>> = None;
        let (status, stopkey) = loop {
            match chan.read().await {
                ReadEvent::StreamDone => break ("SUCCESS", String::new()),
                ReadEvent::Hangup | ReadEvent::Interrupted => {
                    chan.stop_generator();
                    return AppResult::Hangup;
                }
                ReadEvent::Dtmf(d) => {
                    let d = d.to_string();
                    if d == ff {
                        if let Some(g) = chan.generator_mut() {
                            g.skip_ms(skip);
                        }
                    } else if d == rew {
                        if let Some(g) = chan.generator_mut() {
                            g.skip_ms(-skip);
                        }
                    } else if !stop.is_empty() && stop.contains(&d) {
                        let pos = chan.stop_generator();
                        pbx::set_var(chan, "CPLAYBACKOFFSET", &(pos / 8).to_string());
                        break ("USERSTOPPED", d);
                    } else if !pause.is_empty() && pause.contains(&d) {
                        match paused.take() {
                            Some(g) => chan.start_generator(g),
                            None => {
                                if let Some(g) = chan.take_generator() {
                                    paused = Some(g);
                                }
                            }
                        }
                    } else if !restart.is_empty() && restart.contains(&d) {
                        if let Some(g) = open_sound(chan, &file) {
                            chan.start_generator(g);
                        }
                    }
                }
                _ => {}
            }
        };
        pbx::set_var(chan, "CPLAYBACKSTATUS", status);
        if !stopkey.is_empty() {
            pbx::set_var(chan, "CPLAYBACKSTOPKEY", &stopkey);
        }
        AppResult::Continue
    })
}

/// Collect up to `max` digits (0 = until `#`), `timeout` between digits. Returns None on hangup.
pub async fn collect_digits(
    chan: &mut Channel,
    files: &[String],
    max: usize,
    timeout: Duration,
    terminator: Option<char>,
) -> Option<(String, bool)> {
    let mut digits = String::new();
    let first = play_list(chan, files, "0123456789*#ABCD").await;
    match first {
        StreamEnd::Hangup => return None,
        StreamEnd::Digit(d) => {
            if Some(d) == terminator {
                return Some((digits, false));
            }
            digits.push(d);
            if max > 0 && digits.len() >= max {
                return Some((digits, false));
            }
        }
        _ => {}
    }
    loop {
        match chan.read_timeout(timeout).await {
            ReadEvent::Dtmf(d) => {
                if Some(d) == terminator {
                    return Some((digits, false));
                }
                digits.push(d);
                if max > 0 && digits.len() >= max {
                    return Some((digits, false));
                }
            }
            ReadEvent::Timeout => return Some((digits, true)),
            ReadEvent::Hangup | ReadEvent::Interrupted => return None,
            _ => {}
        }
    }
}

fn read<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        // Read(variable[,filename[&filename2...]][,maxdigits][,options][,attempts][,timeout])
        let a = split_args(args);
        let var = a.first().cloned().unwrap_or_default();
        if var.is_empty() {
            tracing::warn!("Read requires an argument (variable)");
            return AppResult::Continue;
        }
        let files = split_files(a.get(1).map(|s| s.as_str()).unwrap_or(""));
        let max: usize = a
            .get(2)
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
            .min(255);
        let opts = parse_options(a.get(3).map(|s| s.as_str()).unwrap_or(""));
        let attempts: usize = a
            .get(4)
            .and_then(|s| s.trim().parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1);
        let timeout = a
            .get(5)
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| Duration::from_millis(digit_timeout(chan)));
        if chan.state != ChannelState::Up {
            if has_opt(&opts, 's') {
                pbx::set_var(chan, "READSTATUS", "SKIPPED");
                return AppResult::Continue;
            }
            if !has_opt(&opts, 'n') {
                chan.answer();
            }
        }
        let terminator = if has_opt(&opts, 'e') { None } else { Some('#') };
        let mut status = "TIMEOUT";
        let mut value = String::new();
        for _ in 0..attempts {
            match collect_digits(chan, &files, max, timeout, terminator).await {
                None => {
                    pbx::set_var(chan, "READSTATUS", "HANGUP");
                    return AppResult::Hangup;
                }
                Some((d, timed_out)) => {
                    value = d;
                    if !value.is_empty() || !timed_out {
                        status = "OK";
                        break;
                    }
                }
            }
        }
        pbx::set_var(chan, &var, &value);
        pbx::set_var(chan, "READSTATUS", status);
        AppResult::Continue
    })
}

/// File names that say `n` in English (Asterisk's ast_say_number_full_en).
pub fn number_files(n: i64) -> Vec<String> {
    let mut out = Vec::new();
    let mut n = n;
    if n < 0 {
        out.push("digits/minus".to_string());
        n = -n;
    }
    if n == 0 {
        out.push("digits/0".into());
        return out;
    }
    let say_below_1000 = |mut v: i64, out: &mut Vec<String>| {
        if v >= 100 {
            out.push(format!("digits/{}", v / 100));
            out.push("digits/hundred".into());
            v %= 100;
        }
        if v >= 20 {
            out.push(format!("digits/{}", v / 10 * 10));
            v %= 10;
        }
        if v > 0 {
            out.push(format!("digits/{}", v));
        }
    };
    for (unit, name) in [
        (1_000_000_000i64, "digits/billion"),
        (1_000_000, "digits/million"),
        (1000, "digits/thousand"),
    ] {
        if n >= unit {
            say_below_1000(n / unit, &mut out);
            out.push(name.into());
            n %= unit;
        }
    }
    say_below_1000(n, &mut out);
    out
}

fn digit_file(c: char) -> Option<String> {
    Some(match c {
        '0'..='9' => format!("digits/{}", c),
        '*' => "digits/star".into(),
        '#' => "digits/pound".into(),
        '-' => "digits/minus".into(),
        _ => return None,
    })
}

fn alpha_file(c: char, phonetic: bool) -> Option<String> {
    let c = c.to_ascii_lowercase();
    if let Some(d) = digit_file(c) {
        return Some(d);
    }
    match c {
        'a'..='z' if phonetic => Some(format!("phonetic/{}_p", c)),
        'a'..='z' => Some(format!("letters/{}", c)),
        '@' => Some("letters/at".into()),
        '.' => Some("letters/dot".into()),
        '$' => Some("letters/dollar".into()),
        '=' => Some("letters/equals".into()),
        '!' => Some("letters/exclaimation-point".into()),
        '+' => Some("letters/plus".into()),
        '/' => Some("letters/slash".into()),
        ' ' => Some("letters/space".into()),
        _ => None,
    }
}

/// Say a list of files, escapable by any digit; AGI and the Say* apps share this.
pub async fn say_files(chan: &mut Channel, files: &[String], escape: &str) -> StreamEnd {
    play_list(chan, files, escape).await
}

fn say_result(r: StreamEnd) -> AppResult {
    if r == StreamEnd::Hangup {
        AppResult::Hangup
    } else {
        AppResult::Continue
    }
}

fn say_digits<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let files: Vec<String> = args.chars().filter_map(digit_file).collect();
        say_result(say_files(chan, &files, "").await)
    })
}

fn say_number<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let a = split_args(args);
        let Some(n) = a.first().and_then(|s| s.trim().parse::<i64>().ok()) else {
            tracing::warn!(
                "SayNumber: first argument must be a number between -2147483647 and 2147483647"
            );
            return AppResult::Continue;
        };
        say_result(say_files(chan, &number_files(n), "").await)
    })
}

fn say_alpha<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let files: Vec<String> = args.chars().filter_map(|c| alpha_file(c, false)).collect();
        say_result(say_files(chan, &files, "").await)
    })
}

fn say_phonetic<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let files: Vec<String> = args.chars().filter_map(|c| alpha_file(c, true)).collect();
        say_result(say_files(chan, &files, "").await)
    })
}

/// Files for `SayUnixTime`'s format (the common letters of ast_say_date_with_format_en).
pub fn datetime_files(t: chrono::DateTime<chrono_tz::Tz>, format: &str) -> Vec<String> {
    use chrono::{Datelike, Timelike};
    let mut out = Vec::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let mut name = String::new();
                for x in chars.by_ref() {
                    if x == '\'' {
                        break;
                    }
                    name.push(x);
                }
                if !name.is_empty() {
                    out.push(name);
                }
            }
            'A' | 'a' => out.push(format!("digits/day-{}", t.weekday().num_days_from_sunday())),
            'B' | 'b' | 'h' => out.push(format!("digits/mon-{}", t.month0())),
            'm' => out.extend(number_files(t.month() as i64)),
            'd' | 'e' => out.push(format!("digits/h-{}", t.day())),
            'Y' => {
                let y = t.year() as i64;
                if (2000..2010).contains(&y) {
                    out.extend(number_files(y));
                } else {
                    out.extend(number_files(y / 100));
                    if y % 100 != 0 {
                        if y % 100 < 10 {
                            out.push("digits/oh".into());
                        }
                        out.extend(number_files(y % 100));
                    } else {
                        out.push("digits/hundred".into());
                    }
                }
            }
            'I' | 'l' => {
                let h = t.hour() % 12;
                out.extend(number_files(if h == 0 { 12 } else { h as i64 }));
            }
            'H' | 'k' => out.extend(number_files(t.hour() as i64)),
            'M' => {
                let m = t.minute();
                if m == 0 {
                    out.push("digits/oclock".into());
                } else {
                    if m < 10 {
                        out.push("digits/oh".into());
                    }
                    out.extend(number_files(m as i64));
                }
            }
            'P' | 'p' => out.push(
                if t.hour() < 12 {
                    "digits/a-m"
                } else {
                    "digits/p-m"
                }
                .into(),
            ),
            'S' => out.extend(number_files(t.second() as i64)),
            'R' => {
                out.extend(number_files(t.hour() as i64));
                if t.minute() < 10 {
                    out.push("digits/oh".into());
                }
                out.extend(number_files(t.minute() as i64));
            }
            _ => {}
        }
    }
    out
}

fn say_unixtime<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let a = split_args(args);
        let secs = a
            .first()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or_else(|| chrono::Utc::now().timestamp());
        let tz: chrono_tz::Tz = a
            .get(1)
            .and_then(|z| z.trim().parse().ok())
            .unwrap_or(chrono_tz::UTC);
        let fmt = a
            .get(2)
            .filter(|f| !f.is_empty())
            .cloned()
            .unwrap_or_else(|| "ABdY 'digits/at' IMp".into());
        let Some(t) = chrono::DateTime::from_timestamp(secs, 0) else {
            return AppResult::Continue;
        };
        let files = datetime_files(t.with_timezone(&tz), &fmt);
        say_result(say_files(chan, &files, "").await)
    })
}

fn milliwatt<'a>(chan: &'a mut Channel, _args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        if chan.state != ChannelState::Up {
            chan.answer();
        }
        match ToneGen::milliwatt(8000) {
            Ok(g) => chan.start_generator(Box::new(ToneGenerator(g))),
            Err(e) => {
                tracing::warn!("Milliwatt: {}", e);
                return AppResult::Hangup;
            }
        }
        loop {
            match chan.read().await {
                ReadEvent::Hangup | ReadEvent::Interrupted => break,
                ReadEvent::StreamDone => break,
                _ => {}
            }
        }
        chan.stop_generator();
        AppResult::Hangup
    })
}

fn playtones(chan: &mut Channel, args: &str) -> AppResult {
    let arg = args.trim();
    let spec = crate::media::tone::us::indication(arg).unwrap_or(arg);
    match ToneGen::parse(spec, 8000) {
        Ok(g) => chan.start_generator(Box::new(ToneGenerator(g))),
        Err(e) => tracing::warn!("Playtones: unable to parse tone list '{}': {}", arg, e),
    }
    AppResult::Continue
}

fn record<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        // Record(filename.format,[silence],[maxduration],[options])
        let a = split_args(args);
        let file = a.first().cloned().unwrap_or_default();
        if !file.contains('.') {
            tracing::warn!("Record: no extension specified to filename '{}'", file);
            pbx::set_var(chan, "RECORD_STATUS", "ERROR");
            return AppResult::Continue;
        }
        let silence_s: u64 = a.get(1).and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let max_s: u64 = a.get(2).and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let opts = parse_options(a.get(3).map(|s| s.as_str()).unwrap_or(""));
        if chan.state != ChannelState::Up {
            if has_opt(&opts, 's') {
                pbx::set_var(chan, "RECORD_STATUS", "SKIP");
                return AppResult::Continue;
            }
            if !has_opt(&opts, 'n') {
                chan.answer();
            }
        }
        let path = {
            let p = std::path::PathBuf::from(&file);
            if p.is_absolute() {
                p
            } else {
                chan.core.dirs.spool.join("monitor").join(p)
            }
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if !has_opt(&opts, 'q') {
            if let StreamEnd::Hangup = stream_file(chan, "beep", "", 0).await.0 {
                return AppResult::Hangup;
            }
        }
        let rec = if has_opt(&opts, 'a') {
            Recorder::append(&path)
        } else {
            Recorder::create(&path)
        };
        let mut rec = match rec {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("Record: cannot create {}: {}", path.display(), e);
                pbx::set_var(chan, "RECORD_STATUS", "ERROR");
                return AppResult::Continue;
            }
        };
        pbx::set_var(
            chan,
            "RECORDED_FILE",
            &path.with_extension("").display().to_string(),
        );
        chan.set_read_format(Some(crate::media::Format::Slin8));
        let mut det = crate::media::energy::SilenceDetector::new(
            crate::media::energy::DEFAULT_SILENCE_THRESHOLD,
            8000,
        );
        let deadline = if max_s > 0 {
            Some(Instant::now() + Duration::from_secs(max_s))
        } else {
            None
        };
        let any_dtmf = has_opt(&opts, 'y');
        let ignore_term = has_opt(&opts, 'x');
        let status;
        let mut hung = false;
        loop {
            match chan.read_until(deadline).await {
                ReadEvent::Voice(f) => {
                    let _ = rec.write_frame(&f);
                    if silence_s > 0 {
                        det.process(&f.slin_samples());
                        if det.total_silence_ms() >= silence_s * 1000 {
                            status = "SILENCE";
                            break;
                        }
                    }
                }
                ReadEvent::Dtmf(d)
                    if (d == '#' && !ignore_term)
                        || (any_dtmf && d != '#')
                        || (d == '*' && has_opt(&opts, 't')) =>
                {
                    status = "DTMF";
                    break;
                }
                ReadEvent::Timeout => {
                    status = "TIMEOUT";
                    break;
                }
                ReadEvent::Hangup | ReadEvent::Interrupted => {
                    status = "HANGUP";
                    hung = true;
                    break;
                }
                _ => {}
            }
        }
        chan.set_read_format(None);
        let trim = if status == "SILENCE" {
            silence_s * 1000
        } else {
            0
        };
        let kept = if trim > 0 {
            rec.finish_trimmed(trim)
        } else {
            rec.finish()
        };
        if let Err(e) = kept {
            tracing::warn!("Record: {}", e);
        }
        if hung && !has_opt(&opts, 'k') {
            // Asterisk keeps recordings on hangup only with 'k'; the file is kept (what was
            // accepted is never lost) but the status says HANGUP.
        }
        pbx::set_var(chan, "RECORD_STATUS", status);
        if hung {
            AppResult::Hangup
        } else {
            AppResult::Continue
        }
    })
}

fn wait_for_silence<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        // WaitForSilence(silencerequired[,iterations[,timeout]])
        let a = split_args(args);
        let need_ms: u64 = a
            .first()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1000);
        let iterations: u32 = a
            .get(1)
            .and_then(|s| s.trim().parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1);
        let timeout = a
            .get(2)
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0);
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t));
        chan.set_read_format(Some(crate::media::Format::Slin8));
        let mut det = crate::media::energy::SilenceDetector::new(
            crate::media::energy::DEFAULT_SILENCE_THRESHOLD,
            8000,
        );
        let mut done = 0;
        let status = loop {
            match chan.read_until(deadline).await {
                ReadEvent::Voice(f) => {
                    det.process(&f.slin_samples());
                    if det.total_silence_ms() >= need_ms {
                        done += 1;
                        if done >= iterations {
                            break "SILENCE";
                        }
                        det = crate::media::energy::SilenceDetector::new(
                            crate::media::energy::DEFAULT_SILENCE_THRESHOLD,
                            8000,
                        );
                    }
                }
                ReadEvent::Timeout => break "TIMEOUT",
                ReadEvent::Hangup | ReadEvent::Interrupted => {
                    chan.set_read_format(None);
                    return AppResult::Hangup;
                }
                _ => {}
            }
        };
        chan.set_read_format(None);
        pbx::set_var(chan, "WAITSTATUS", status);
        AppResult::Continue
    })
}

fn send_dtmf<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        // SendDTMF(digits[,timeout_ms[,duration_ms[,channel]]])
        let a = split_args(args);
        let digits = a.first().cloned().unwrap_or_default();
        let duration: u32 = a.get(2).and_then(|s| s.trim().parse().ok()).unwrap_or(250);
        if let Some(other) = a.get(3).filter(|s| !s.is_empty()) {
            if let Some((h, _)) = chan.core.channels.find(other) {
                h.send(crate::channel::ChanCtl::SendDtmf(digits, duration));
            }
            return AppResult::Continue;
        }
        if chan.send_dtmf(&digits, duration).await {
            AppResult::Continue
        } else {
            AppResult::Hangup
        }
    })
}
