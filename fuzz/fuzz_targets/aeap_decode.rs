//! Fuzz the AEAP message codec and transaction layer with arbitrary text frames.
//! Properties: never panics; a decoded message re-encodes to text that decodes to the same
//! message (when it still fits the 32767-byte limit); transactions accept any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use voxpbx::aeap::message::{decode, DecodeError, MAX_TEXT_LEN};
use voxpbx::aeap::transaction::Transactions;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = decode(text) {
        let encoded = msg.encode();
        match decode(&encoded) {
            Ok(again) => assert_eq!(again, msg, "re-encoding changed the message: {encoded}"),
            Err(DecodeError::TooLarge(n)) => assert!(n > MAX_TEXT_LEN),
            Err(e) => panic!("re-encoded message does not decode ({e}): {encoded}"),
        }
    }
    let now = Instant::now();
    let mut tx = Transactions::default();
    let (id, _) = tx.send_request(now, "get", &[]);
    let _ = tx.handle_text(now, text);
    // The same text with the outstanding id spliced in exercises the matching path.
    let _ = tx.handle_text(now, &text.replace("ID", &id));
    let _ = tx.handle_timeout(now + Duration::from_secs(2));
});
