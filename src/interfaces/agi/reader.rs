//! A robust line reader for AGI input (FastAGI sockets, local script pipes).
//!
//! Whatever arrives — non-UTF-8 bytes, NULs, an HTML page, a line without end — becomes
//! lines or an error value, never a panic, and memory stays bounded by the line limit
//! (asterisk/asterisk#2069: HTML sent to a FastAGI port crashed Asterisk).

use bytes::BytesMut;

use super::codec::AgiError;

/// Default longest accepted line (Asterisk reads commands into a 2 KiB buffer; long
/// `SET VARIABLE` values are why this is larger).
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

/// One line read from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgiLine {
    /// The text, without the line ending; cut at the first NUL (as C code would see it);
    /// invalid UTF-8 replaced by U+FFFD.
    pub text: String,
    /// The line was not valid UTF-8 (and was repaired).
    pub lossy: bool,
}

/// Sans-IO line splitter: push bytes, pull lines. Lines end with LF; a CR before it is
/// dropped. A line longer than the limit yields [`AgiError::LineTooLong`] once and its bytes
/// are skipped up to the next LF.
#[derive(Debug)]
pub struct LineReader {
    buf: BytesMut,
    scanned: usize,
    max_line: usize,
    discarding: bool,
}

impl Default for LineReader {
    fn default() -> Self {
        LineReader::new(DEFAULT_MAX_LINE)
    }
}

impl LineReader {
    pub fn new(max_line: usize) -> LineReader {
        LineReader {
            buf: BytesMut::new(),
            scanned: 0,
            max_line: max_line.max(16),
            discarding: false,
        }
    }

    /// Feed received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.discarding {
            if let Some(i) = data.iter().position(|&b| b == b'\n') {
                self.discarding = false;
                self.buf.extend_from_slice(&data[i + 1..]);
            }
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete line, an error for an over-long line, or `None` for "need more".
    pub fn next_line(&mut self) -> Option<Result<AgiLine, AgiError>> {
        if self.discarding {
            return None;
        }
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            None => {
                if self.buf.len() > self.max_line {
                    self.buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Some(Err(AgiError::LineTooLong { max: self.max_line }));
                }
                self.scanned = self.buf.len();
                None
            }
            Some(rel) => {
                let end = self.scanned + rel;
                let line = self.buf.split_to(end + 1);
                self.scanned = 0;
                if end > self.max_line {
                    return Some(Err(AgiError::LineTooLong { max: self.max_line }));
                }
                Some(Ok(make_line(&line[..end])))
            }
        }
    }

    /// At end of input: the unterminated last line, if any (Asterisk still runs it).
    pub fn finish(&mut self) -> Option<Result<AgiLine, AgiError>> {
        if let Some(r) = self.next_line() {
            return Some(r);
        }
        if self.discarding || self.buf.is_empty() {
            self.discarding = false;
            self.buf.clear();
            self.scanned = 0;
            return None;
        }
        let rest = self.buf.split();
        self.scanned = 0;
        Some(Ok(make_line(&rest)))
    }
}

fn make_line(raw: &[u8]) -> AgiLine {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let raw = match raw.iter().position(|&b| b == 0) {
        Some(nul) => &raw[..nul],
        None => raw,
    };
    match std::str::from_utf8(raw) {
        Ok(s) => AgiLine {
            text: s.to_string(),
            lossy: false,
        },
        Err(_) => AgiLine {
            text: String::from_utf8_lossy(raw).into_owned(),
            lossy: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interfaces::agi::codec::{dispatch, Dispatch};

    fn lines(r: &mut LineReader) -> Vec<Result<AgiLine, AgiError>> {
        std::iter::from_fn(|| r.next_line()).collect()
    }

    #[test]
    fn splits_lines_in_any_chunking() {
        let data = b"ANSWER\nSTREAM FILE x \"\"\r\nNOOP\n";
        for size in 1..data.len() {
            let mut r = LineReader::default();
            let mut got = Vec::new();
            for c in data.chunks(size) {
                r.push(c);
                got.extend(lines(&mut r).into_iter().map(|l| l.unwrap().text));
            }
            assert_eq!(
                got,
                ["ANSWER", "STREAM FILE x \"\"", "NOOP"],
                "chunk {size}"
            );
        }
    }

    #[test]
    fn non_utf8_and_nul() {
        let mut r = LineReader::default();
        r.push(b"VERBOSE \xff\xfe 1\nSET VARIABLE X a\0junk\n");
        let got = lines(&mut r);
        let first = got[0].as_ref().unwrap();
        assert!(first.lossy);
        assert_eq!(first.text, "VERBOSE \u{fffd}\u{fffd} 1");
        assert_eq!(got[1].as_ref().unwrap().text, "SET VARIABLE X a");
    }

    #[test]
    fn huge_line_is_an_error_once_then_recovers() {
        let mut r = LineReader::new(64);
        r.push(&[b'A'; 50]);
        assert!(r.next_line().is_none());
        r.push(&[b'A'; 50]);
        assert_eq!(r.next_line(), Some(Err(AgiError::LineTooLong { max: 64 })));
        assert!(r.next_line().is_none());
        for _ in 0..1000 {
            r.push(&[b'B'; 1000]);
            assert!(r.next_line().is_none());
        }
        assert_eq!(r.buffered(), 0, "memory stays bounded");
        r.push(b"still long\nNOOP\n");
        assert_eq!(r.next_line().unwrap().unwrap().text, "NOOP");
    }

    #[test]
    fn long_line_arriving_whole() {
        let mut r = LineReader::new(16);
        let mut d = vec![b'x'; 40];
        d.extend_from_slice(b"\nNOOP\n");
        r.push(&d);
        assert!(matches!(
            r.next_line(),
            Some(Err(AgiError::LineTooLong { .. }))
        ));
        assert_eq!(r.next_line().unwrap().unwrap().text, "NOOP");
    }

    #[test]
    fn html_garbage_yields_unknown_commands() {
        let mut r = LineReader::default();
        r.push(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n<html><body>\xc3\x28</body></html>\n");
        for l in lines(&mut r) {
            let l = l.unwrap();
            assert!(
                matches!(dispatch(&l.text, false), Dispatch::Unknown { .. }),
                "{:?}",
                l.text
            );
        }
    }

    #[test]
    fn finish_returns_unterminated_tail() {
        let mut r = LineReader::default();
        r.push(b"NOOP\nHANGUP");
        assert_eq!(r.next_line().unwrap().unwrap().text, "NOOP");
        assert!(r.next_line().is_none());
        assert_eq!(r.finish().unwrap().unwrap().text, "HANGUP");
        assert!(r.finish().is_none());
    }
}
