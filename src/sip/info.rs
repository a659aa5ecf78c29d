//! DTMF carried in SIP INFO (`dtmf_mode=info`): the `application/dtmf-relay` body
//! (`Signal=5\r\nDuration=160\r\n`, the de-facto Cisco format Asterisk speaks) and the
//! bare `application/dtmf` body (`5`, or an event code `0`-`16`). Sans-IO: parse a
//! received body into a digit and a duration, build the body we send.

/// The default duration (ms) for a digit whose body gives none.
pub const DEFAULT_DURATION_MS: u32 = 100;

/// Map an RFC 4733 event code or a digit character to the DTMF character.
fn digit_of(s: &str) -> Option<char> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u8>() {
        return match n {
            0..=9 => Some((b'0' + n) as char),
            10 => Some('*'),
            11 => Some('#'),
            12..=15 => Some((b'A' + n - 12) as char),
            16 => Some('!'), // flash hook
            _ => None,
        };
    }
    let mut chars = s.chars();
    let c = chars.next()?;
    if chars.next().is_some() {
        return None;
    }
    let c = c.to_ascii_uppercase();
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D' | '!').then_some(c)
}

/// A DTMF digit and its duration in ms from an INFO request's Content-Type and body;
/// `None` when the body is not a DTMF body or is malformed.
pub fn parse_dtmf_info(content_type: Option<&str>, body: &[u8]) -> Option<(char, u32)> {
    let ct = content_type?
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let text = std::str::from_utf8(body).ok()?;
    match ct.as_str() {
        "application/dtmf-relay" => {
            let mut digit = None;
            let mut duration = DEFAULT_DURATION_MS;
            for line in text.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "signal" => digit = digit_of(v),
                    "duration" => {
                        if let Ok(d) = v.trim().parse::<u32>() {
                            duration = d.clamp(1, 10_000);
                        }
                    }
                    _ => {}
                }
            }
            digit.map(|d| (d, duration))
        }
        "application/dtmf" => digit_of(text).map(|d| (d, DEFAULT_DURATION_MS)),
        _ => None,
    }
}

/// The `application/dtmf-relay` body for a digit sent outward.
pub fn dtmf_relay_body(digit: char, duration_ms: u32) -> String {
    format!("Signal={digit}\r\nDuration={duration_ms}\r\n")
}

/// Whether DTMF goes out as SIP INFO: `info`, or `auto` when the peer did not
/// negotiate telephone-event.
pub fn sends_info(dtmf_mode: &str, telephone_event_negotiated: bool) -> bool {
    match dtmf_mode.to_ascii_lowercase().as_str() {
        "info" => true,
        "auto" | "auto_info" => !telephone_event_negotiated,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_body() {
        assert_eq!(
            parse_dtmf_info(
                Some("application/dtmf-relay"),
                b"Signal=5\r\nDuration=160\r\n"
            ),
            Some(('5', 160))
        );
        assert_eq!(
            parse_dtmf_info(Some("Application/DTMF-Relay"), b"Signal= #\r\n"),
            Some(('#', DEFAULT_DURATION_MS))
        );
        assert_eq!(
            parse_dtmf_info(Some("application/dtmf-relay"), b"Signal=11\r\nDuration=80"),
            Some(('#', 80))
        );
        assert_eq!(
            parse_dtmf_info(Some("application/dtmf-relay"), b"Duration=80"),
            None
        );
        assert_eq!(
            parse_dtmf_info(Some("application/dtmf-relay"), b"Signal=X"),
            None
        );
    }

    #[test]
    fn dtmf_body() {
        assert_eq!(
            parse_dtmf_info(Some("application/dtmf"), b"7\r\n"),
            Some(('7', DEFAULT_DURATION_MS))
        );
        assert_eq!(
            parse_dtmf_info(Some("application/dtmf"), b"10"),
            Some(('*', DEFAULT_DURATION_MS))
        );
        assert_eq!(parse_dtmf_info(Some("application/dtmf"), b"99"), None);
        assert_eq!(parse_dtmf_info(Some("application/sdp"), b"7"), None);
        assert_eq!(parse_dtmf_info(None, b"7"), None);
        assert_eq!(
            parse_dtmf_info(Some("application/dtmf"), &[0xff, 0xfe]),
            None
        );
    }

    #[test]
    fn body_roundtrip_and_mode() {
        let b = dtmf_relay_body('9', 250);
        assert_eq!(
            parse_dtmf_info(Some("application/dtmf-relay"), b.as_bytes()),
            Some(('9', 250))
        );
        assert!(sends_info("info", true));
        assert!(sends_info("auto", false));
        assert!(!sends_info("auto", true));
        assert!(!sends_info("rfc4733", false));
        assert!(!sends_info("inband", false));
    }
}
