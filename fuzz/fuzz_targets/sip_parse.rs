//! Fuzz the SIP parser and stream framer: any bytes must give `Ok` or a
//! `SipParseError`, never a panic; a message that parses must re-encode to bytes that
//! parse to the same headers and body, and that frame as one complete message.
//! Run with `cargo +nightly fuzz run sip_parse` from the repository root
//! (seed corpus: `tests/sip_torture/valid` and `tests/sip_torture/invalid`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxpbx::sip::{frame_stream, parse_message, HeaderName, SipParseError};

fuzz_target!(|data: &[u8]| {
    let _ = frame_stream(data);
    let Ok(msg) = parse_message(data) else { return };
    // Exercise the typed accessors.
    let h = msg.headers();
    let _ = (
        h.vias(),
        h.from(),
        h.to(),
        h.cseq(),
        h.contacts(),
        h.routes(),
        h.record_routes(),
    );
    let bytes = msg.to_bytes();
    match parse_message(&bytes) {
        Ok(again) => {
            let strip = |m: &voxpbx::sip::SipMessage| {
                let mut h = m.headers().clone();
                h.remove(&HeaderName::CONTENT_LENGTH);
                h
            };
            assert_eq!(strip(&again), strip(&msg));
            assert_eq!(again.body(), msg.body());
            assert_eq!(frame_stream(&bytes), Ok(Some(bytes.len())));
        }
        // Expanding compact names and comma lists can cross the size limits.
        Err(SipParseError::TooLarge | SipParseError::TooManyHeaders) => {}
        Err(e) => panic!("re-encoded message does not parse: {e}"),
    }
});
