//! File functions, as Asterisk's `func_env.c`: STAT, FILE (read and write, byte and line
//! mode), FILE_COUNT_LINE, FILE_FORMAT.
//!
//! FILE reads at most [`FILE_MAX`] bytes; line mode and in-place writes load the file in
//! memory and refuse files larger than that.
//!
//! Line mode (`l` option) counts lines by terminator (`\n`, `\r\n` or `\r`, detected from
//! the first terminator in the file unless the `format` argument says `u`, `d` or `m`).
//! A line offset is 0-based (`FILE(f,0,1,l)` is the first line); a negative offset counts
//! lines back from the end (`-3` = the last three lines); a negative length ends the range
//! that many terminators back from the end, before the terminator.

use super::math::scan_int;
use super::strings::std_args;
use crate::dialplan::pbx::{FuncDef, FuncRead, FuncResult, FuncWrite};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;

/// Largest amount of file data FILE reads or rewrites.
pub const FILE_MAX: u64 = 8 * 1024 * 1024;

pub fn funcs() -> Vec<FuncDef> {
    vec![
        FuncDef {
            name: "STAT",
            synopsis: "Does a check on the specified file",
            read: Some(FuncRead::Sync(|_, a| Ok(stat(a)))),
            write: None,
        },
        FuncDef {
            name: "FILE",
            synopsis: "Read or write text file",
            read: Some(FuncRead::Sync(|_, a| file_read(a))),
            write: Some(FuncWrite::Sync(|_, a, v| file_write(a, v))),
        },
        FuncDef {
            name: "FILE_COUNT_LINE",
            synopsis: "Obtains the number of lines of a text file",
            read: Some(FuncRead::Sync(|_, a| file_count_line(a))),
            write: None,
        },
        FuncDef {
            name: "FILE_FORMAT",
            synopsis: "Return the newline format of a text file",
            read: Some(FuncRead::Sync(|_, a| {
                Ok(read_bounded(a)
                    .ok()
                    .and_then(|d| detect_format(&d))
                    .map(LineFormat::letter)
                    .unwrap_or('x')
                    .to_string())
            })),
            write: None,
        },
    ]
}

/// STAT(flag,filename): `e` exists, `s` size, `f` regular file, `d` directory, `m` mode
/// (octal), `A`/`C`/`M` access/change/modification epoch. `0` when the file is missing.
pub fn stat(args: &str) -> String {
    let Some((flag, path)) = args.split_once(',') else {
        return "0".into();
    };
    let Ok(m) = std::fs::metadata(path) else {
        return "0".into();
    };
    match flag.chars().next() {
        Some('e') => "1".into(),
        Some('s') => m.len().to_string(),
        Some('f') => u8::from(m.is_file()).to_string(),
        Some('d') => u8::from(m.is_dir()).to_string(),
        Some('M') => m.mtime().to_string(),
        Some('A') => m.atime().to_string(),
        Some('C') => m.ctime().to_string(),
        Some('m') => format!("{:o}", m.mode()),
        _ => "0".into(),
    }
}

/// Line terminator style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    Unix,
    Dos,
    Mac,
}

impl LineFormat {
    pub fn term(self) -> &'static [u8] {
        match self {
            LineFormat::Unix => b"\n",
            LineFormat::Dos => b"\r\n",
            LineFormat::Mac => b"\r",
        }
    }

    pub fn letter(self) -> char {
        match self {
            LineFormat::Unix => 'u',
            LineFormat::Dos => 'd',
            LineFormat::Mac => 'm',
        }
    }

    /// From a `format` argument: its first letter `u`, `d` or `m` (any case).
    pub fn from_arg(s: &str) -> Option<LineFormat> {
        match s.chars().next()?.to_ascii_lowercase() {
            'u' => Some(LineFormat::Unix),
            'd' => Some(LineFormat::Dos),
            'm' => Some(LineFormat::Mac),
            _ => None,
        }
    }
}

/// The style of the first line terminator in `data`.
pub fn detect_format(data: &[u8]) -> Option<LineFormat> {
    let p = data.iter().position(|b| *b == b'\n' || *b == b'\r')?;
    Some(if data[p] == b'\n' {
        LineFormat::Unix
    } else if data.get(p + 1) == Some(&b'\n') {
        LineFormat::Dos
    } else {
        LineFormat::Mac
    })
}

/// (start, end) byte spans of every line terminator.
fn terminators(data: &[u8], f: LineFormat) -> Vec<(usize, usize)> {
    match f {
        LineFormat::Unix => data
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| (i, i + 1))
            .collect(),
        LineFormat::Mac => data
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\r')
            .map(|(i, _)| (i, i + 1))
            .collect(),
        LineFormat::Dos => data
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w == b"\r\n")
            .map(|(i, _)| (i, i + 2))
            .collect(),
    }
}

/// Byte span of `length` lines (None: to the end) from line `offset`.
pub fn line_span(
    data: &[u8],
    f: LineFormat,
    offset: i64,
    length: Option<i64>,
) -> Result<(usize, usize), String> {
    let t = terminators(data, f);
    let k = t.len() as u64;
    let start = if offset == 0 {
        0
    } else if offset > 0 {
        let o = offset as u64;
        if o <= k {
            t[(o - 1) as usize].1
        } else {
            return Err(format!(
                "Offset '{offset}' refers to before the beginning of the file!"
            ));
        }
    } else {
        let n = offset.unsigned_abs();
        if k > n {
            t[(k - n - 1) as usize].1
        } else if k == n {
            0
        } else {
            return Err(format!(
                "Offset '{offset}' refers to before the beginning of the file!"
            ));
        }
    };
    let end = match length {
        None => data.len(),
        Some(0) => start,
        Some(l) if l > 0 => t
            .iter()
            .filter(|x| x.0 >= start)
            .nth(usize::try_from(l - 1).unwrap_or(usize::MAX))
            .map(|x| x.1)
            .unwrap_or(data.len()),
        Some(l) => {
            let m = l.unsigned_abs();
            if k >= m {
                t[(k - m) as usize].0
            } else {
                data.len()
            }
        }
    };
    Ok((start, end.max(start)))
}

/// Byte span for a byte-mode read of a file of `flen` bytes.
pub fn char_span(flen: u64, offset: i64, length: Option<i64>) -> Result<(u64, u64), String> {
    let flen_i = flen as i64;
    let start = if offset < 0 {
        // A seek before the start fails and leaves the position at the end.
        if flen_i + offset < 0 {
            flen
        } else {
            (flen_i + offset) as u64
        }
    } else {
        offset as u64
    };
    let end = match length {
        None => flen,
        Some(l) if l < 0 => {
            let e = flen_i + l;
            if e < start as i64 {
                return Err("length eliminates all content".into());
            }
            e as u64
        }
        Some(l) => start.saturating_add(l as u64).min(flen),
    };
    Ok((start.min(flen), end.max(start.min(flen))))
}

/// Read a whole file, refusing more than [`FILE_MAX`] bytes.
fn read_bounded(path: &str) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("Cannot open '{path}': {e}"))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > FILE_MAX {
        return Err(format!("'{path}' is larger than {FILE_MAX} bytes"));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(FILE_MAX + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("Cannot read '{path}': {e}"))?;
    if buf.len() as u64 > FILE_MAX {
        return Err(format!("'{path}' is larger than {FILE_MAX} bytes"));
    }
    Ok(buf)
}

/// The offset and length arguments as `sscanf("%lld")` reads them (absent or unreadable:
/// 0 and "to the end").
fn offset_length(a: &[String]) -> (i64, Option<i64>) {
    let offset = a
        .get(1)
        .and_then(|s| scan_int(s))
        .map(|(n, _)| n)
        .unwrap_or(0);
    let length = a.get(2).and_then(|s| scan_int(s)).map(|(n, _)| n);
    (offset, length)
}

fn line_mode(a: &[String]) -> bool {
    a.len() >= 4 && a[3].contains('l')
}

/// FILE(filename[,offset[,length[,options[,format]]]]) read.
pub fn file_read(args: &str) -> FuncResult {
    let a = std_args(args, 5);
    let path = a.first().map(|s| s.as_str()).unwrap_or("");
    let (offset, length) = offset_length(&a);
    if !line_mode(&a) {
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("Cannot open file '{}' for reading: {}", path, e);
                return Ok(String::new());
            }
        };
        let flen = f.metadata().map(|m| m.len()).unwrap_or(0);
        let (start, mut end) = char_span(flen, offset, length)?;
        if end - start > FILE_MAX {
            tracing::warn!("FILE({}): reading only the first {} bytes", path, FILE_MAX);
            end = start + FILE_MAX;
        }
        let mut buf = vec![0u8; (end - start) as usize];
        f.seek(SeekFrom::Start(start))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| format!("Cannot read '{path}': {e}"))?;
        return Ok(String::from_utf8_lossy(&buf).into_owned());
    }
    let data = read_bounded(path)?;
    let fmt = a
        .get(4)
        .and_then(|s| LineFormat::from_arg(s))
        .or_else(|| detect_format(&data))
        .ok_or_else(|| format!("'{path}' is not a line-based file"))?;
    if let Some(l) = length {
        if offset < 0 && l <= offset {
            return Err("Length eliminates all content".into());
        }
    }
    let (s, e) = line_span(&data, fmt, offset, length)?;
    Ok(String::from_utf8_lossy(&data[s..e]).into_owned())
}

/// Byte-mode change of a buffer: replace `length` bytes at `offset` (None: everything from
/// `offset`) with `value`. Writing past the end leaves a hole of zero bytes.
pub fn char_replace(
    data: &mut Vec<u8>,
    offset: i64,
    length: Option<i64>,
    value: &[u8],
) -> Result<(), String> {
    let flen = data.len() as i64;
    let off = if offset < 0 {
        let o = flen + offset;
        if o < 0 {
            return Err(format!("Cannot seek to offset {offset}"));
        }
        o
    } else {
        offset
    };
    if off as u64 > FILE_MAX {
        return Err(format!("offset {offset} beyond {FILE_MAX} bytes"));
    }
    let off = off as usize;
    let length = match length {
        Some(l) if l < 0 => {
            let l2 = flen - off as i64 + l;
            if l2 < 0 {
                return Err(format!(
                    "Length '{l}' exceeds the file length.  No data will be written."
                ));
            }
            Some(l2)
        }
        other => other,
    };
    if data.len() < off {
        data.resize(off, 0);
    }
    match length {
        None => {
            data.truncate(off);
            data.extend_from_slice(value);
        }
        Some(l) => {
            let end = (off as u64).saturating_add(l as u64).min(data.len() as u64) as usize;
            data.splice(off..end, value.iter().copied());
        }
    }
    Ok(())
}

/// Line-mode change of a buffer: replace `length` lines from line `offset` with `value`
/// (and a terminator unless `no_term`).
pub fn line_replace(
    data: &mut Vec<u8>,
    f: LineFormat,
    offset: i64,
    length: Option<i64>,
    value: &[u8],
    no_term: bool,
) -> Result<(), String> {
    if let Some(l) = length {
        if offset < 0 && l < offset {
            return Err("Length cannot specify a position prior to the offset".into());
        }
    }
    let (s, e) = line_span(data, f, offset, length)?;
    let mut v = value.to_vec();
    if !no_term {
        v.extend_from_slice(f.term());
    }
    data.splice(s..e, v);
    Ok(())
}

fn append(path: &str, bytes: &[u8]) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("Cannot open file '{path}' for appending: {e}"))
}

/// FILE(...)=value.
pub fn file_write(args: &str, value: &str) -> Result<(), String> {
    let a = std_args(args, 5);
    let path = a.first().map(|s| s.as_str()).unwrap_or("");
    if path.is_empty() {
        return Err("FILE requires a file name".into());
    }
    let (offset, length) = offset_length(&a);
    let opts = a.get(3).map(|s| s.as_str()).unwrap_or("");
    let value = value.as_bytes();
    if !line_mode(&a) {
        if opts.contains('a') {
            return append(path, value);
        }
        if offset == 0 && length.is_none() {
            return std::fs::write(path, value)
                .map_err(|e| format!("Cannot open file '{path}' for writing: {e}"));
        }
        let mut data = match read_bounded(path) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("Cannot open file '{}' for modification: {}", path, e);
                return Ok(());
            }
        };
        char_replace(&mut data, offset, length, value)?;
        return std::fs::write(path, &data).map_err(|e| format!("Cannot write '{path}': {e}"));
    }
    let existing = read_bounded(path);
    let fmt = a
        .get(4)
        .and_then(|s| LineFormat::from_arg(s))
        .or_else(|| existing.as_ref().ok().and_then(|d| detect_format(d)))
        .ok_or_else(|| format!("File '{path}' not in line format"))?;
    let no_term = opts.contains('d');
    let mut line = value.to_vec();
    if !no_term {
        line.extend_from_slice(fmt.term());
    }
    if opts.contains('a') {
        return append(path, &line);
    }
    if offset == 0 && length.is_none() {
        return std::fs::write(path, &line)
            .map_err(|e| format!("Unable to open '{path}' for writing: {e}"));
    }
    let mut data = existing.map_err(|e| format!("Cannot open '{path}' for modification: {e}"))?;
    line_replace(&mut data, fmt, offset, length, value, no_term)?;
    std::fs::write(path, &data).map_err(|e| format!("Cannot write '{path}': {e}"))
}

/// FILE_COUNT_LINE(filename[,format]): number of line terminators, `-1` when unreadable.
pub fn file_count_line(args: &str) -> FuncResult {
    let a = std_args(args, 2);
    let path = a.first().map(|s| s.as_str()).unwrap_or("");
    let data = match read_bounded(path) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("{}", e);
            return Ok("-1".into());
        }
    };
    let fmt = a
        .get(1)
        .and_then(|s| LineFormat::from_arg(s))
        .or_else(|| detect_format(&data));
    Ok(fmt
        .map(|f| terminators(&data, f).len())
        .unwrap_or(0)
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &[u8] = b"l0\nl1\nl2\nl3\n";

    fn span(data: &[u8], off: i64, len: Option<i64>) -> String {
        let (s, e) = line_span(data, detect_format(data).unwrap(), off, len).unwrap();
        String::from_utf8_lossy(&data[s..e]).into_owned()
    }

    #[test]
    fn line_spans() {
        assert_eq!(span(TEXT, 0, Some(1)), "l0\n");
        assert_eq!(span(TEXT, 2, Some(1)), "l2\n");
        assert_eq!(span(TEXT, 2, Some(2)), "l2\nl3\n");
        assert_eq!(span(TEXT, 1, None), "l1\nl2\nl3\n");
        assert_eq!(span(TEXT, -1, None), "l3\n");
        assert_eq!(span(TEXT, -3, None), "l1\nl2\nl3\n");
        assert_eq!(span(TEXT, -4, None), "l0\nl1\nl2\nl3\n");
        assert_eq!(span(TEXT, 0, Some(-1)), "l0\nl1\nl2\nl3");
        assert_eq!(span(TEXT, 0, Some(-2)), "l0\nl1\nl2");
        assert_eq!(span(TEXT, 4, None), "");
        assert_eq!(span(TEXT, 1, Some(0)), "");
        assert_eq!(span(TEXT, 3, Some(9)), "l3\n");
        assert!(line_span(TEXT, LineFormat::Unix, 5, None).is_err());
        assert!(line_span(TEXT, LineFormat::Unix, -5, None).is_err());
        let dos = b"a\r\nb\r\nc\r\n";
        assert_eq!(detect_format(dos), Some(LineFormat::Dos));
        assert_eq!(span(dos, 1, Some(1)), "b\r\n");
        assert_eq!(span(dos, -1, None), "c\r\n");
        let mac = b"a\rb\rc";
        assert_eq!(detect_format(mac), Some(LineFormat::Mac));
        assert_eq!(span(mac, 2, None), "c");
        assert_eq!(detect_format(b"no terminator"), None);
    }

    #[test]
    fn char_spans() {
        assert_eq!(char_span(10, 0, None).unwrap(), (0, 10));
        assert_eq!(char_span(10, 2, Some(3)).unwrap(), (2, 5));
        assert_eq!(char_span(10, -3, None).unwrap(), (7, 10));
        assert_eq!(char_span(10, 2, Some(-2)).unwrap(), (2, 8));
        assert_eq!(char_span(10, 8, Some(50)).unwrap(), (8, 10));
        assert_eq!(char_span(10, 20, None).unwrap(), (10, 10));
        assert_eq!(char_span(10, -20, None).unwrap(), (10, 10));
        assert!(char_span(10, 5, Some(-8)).is_err());
    }

    #[test]
    fn replacements() {
        let mut d = b"0123456789".to_vec();
        char_replace(&mut d, 0, Some(1), b"bar").unwrap();
        assert_eq!(d, b"bar123456789");
        let mut d = b"0123456789".to_vec();
        char_replace(&mut d, 4, Some(0), b"X").unwrap();
        assert_eq!(d, b"0123X456789");
        let mut d = b"0123456789".to_vec();
        char_replace(&mut d, 2, None, b"ab").unwrap();
        assert_eq!(d, b"01ab");
        let mut d = b"0123456789".to_vec();
        char_replace(&mut d, -2, Some(1), b"Z").unwrap();
        assert_eq!(d, b"01234567Z9");
        let mut d = b"0123456789".to_vec();
        char_replace(&mut d, 1, Some(-1), b"-").unwrap();
        assert_eq!(d, b"0-9");
        let mut d = b"ab".to_vec();
        char_replace(&mut d, 4, Some(1), b"c").unwrap();
        assert_eq!(d, b"ab\0\0c");
        assert!(char_replace(&mut b"ab".to_vec(), -3, None, b"c").is_err());

        let mut d = TEXT.to_vec();
        line_replace(&mut d, LineFormat::Unix, 0, Some(1), b"bar", false).unwrap();
        assert_eq!(d, b"bar\nl1\nl2\nl3\n");
        let mut d = TEXT.to_vec();
        line_replace(&mut d, LineFormat::Unix, -1, None, b"last", false).unwrap();
        assert_eq!(d, b"l0\nl1\nl2\nlast\n");
        let mut d = TEXT.to_vec();
        line_replace(&mut d, LineFormat::Unix, 1, Some(2), b"", true).unwrap();
        assert_eq!(d, b"l0\nl3\n");
        let mut d = TEXT.to_vec();
        line_replace(&mut d, LineFormat::Unix, 1, Some(0), b"ins", false).unwrap();
        assert_eq!(d, b"l0\nins\nl1\nl2\nl3\n");
    }

    #[test]
    fn on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        let ps = p.to_str().unwrap();
        file_write(ps, "hello").unwrap();
        assert_eq!(file_read(ps).unwrap(), "hello");
        file_write(&format!("{ps},,,a"), " world").unwrap();
        assert_eq!(file_read(ps).unwrap(), "hello world");
        assert_eq!(file_read(&format!("{ps},6")).unwrap(), "world");
        assert_eq!(file_read(&format!("{ps},0,5")).unwrap(), "hello");
        assert_eq!(file_read(&format!("{ps},-5")).unwrap(), "world");
        file_write(&format!("{ps},0,5"), "HELLO").unwrap();
        assert_eq!(file_read(ps).unwrap(), "HELLO world");

        file_write(&format!("{ps},,,l,u"), "one").unwrap();
        file_write(&format!("{ps},,,al"), "two").unwrap();
        file_write(&format!("{ps},,,al"), "three").unwrap();
        assert_eq!(file_read(ps).unwrap(), "one\ntwo\nthree\n");
        assert_eq!(file_read(&format!("{ps},1,1,l")).unwrap(), "two\n");
        assert_eq!(file_read(&format!("{ps},-2,,l")).unwrap(), "two\nthree\n");
        file_write(&format!("{ps},1,1,l"), "2").unwrap();
        assert_eq!(file_read(ps).unwrap(), "one\n2\nthree\n");
        assert_eq!(file_count_line(ps).unwrap(), "3");
        assert_eq!(file_count_line(&format!("{ps},m")).unwrap(), "0");

        assert_eq!(stat(&format!("e,{ps}")), "1");
        assert_eq!(stat(&format!("f,{ps}")), "1");
        assert_eq!(stat(&format!("d,{ps}")), "0");
        assert_eq!(stat(&format!("s,{ps}")), "12");
        assert!(stat(&format!("m,{ps}")).starts_with("100"));
        assert!(stat(&format!("M,{ps}")).parse::<i64>().unwrap() > 1_600_000_000);
        assert_eq!(stat(&format!("d,{}", dir.path().display())), "1");
        assert_eq!(stat(&format!("e,{ps}.missing")), "0");
        assert_eq!(stat("e"), "0");

        let missing = format!("{ps}.missing");
        assert_eq!(file_read(&missing).unwrap(), "");
        assert!(file_read(&format!("{missing},0,1,l")).is_err());
        assert_eq!(file_count_line(&missing).unwrap(), "-1");
        // Modifying a missing file does nothing.
        file_write(&format!("{missing},2,1"), "x").unwrap();
        assert_eq!(stat(&format!("e,{missing}")), "0");
    }
}
