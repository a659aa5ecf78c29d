//! Fuzz AGI input: the line reader, tokenizer, dispatch, reply parser, URL and env parsing
//! must never panic or hang on any bytes (asterisk/asterisk#2069: HTML on a FastAGI port).
//! Run with `cargo +nightly fuzz run agi_parse` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxpbx::interfaces::agi::codec::{
    dispatch, parse_args, parse_env, parse_reply, uri_decode, uri_encode, AgiResult, AgiTarget,
};
use voxpbx::interfaces::agi::LineReader;

fuzz_target!(|data: &[u8]| {
    let (chunk, body) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c % 64) + 1, rest),
        None => return,
    };

    let mut reader = LineReader::new(512);
    let mut dead = false;
    for piece in body.chunks(chunk) {
        reader.push(piece);
        while let Some(line) = reader.next_line() {
            if let Ok(line) = line {
                let d = dispatch(&line.text, dead);
                let _ = d.error_reply();
                dead = !dead;
            }
        }
        assert!(
            reader.buffered() <= 512 + chunk,
            "reader buffer must stay bounded"
        );
    }
    let _ = reader.finish();

    let text = String::from_utf8_lossy(body);
    let argv = parse_args(&text);
    assert!(argv.len() < 128);
    let _ = parse_reply(&text);
    let _ = parse_env(&text);
    let _ = AgiTarget::parse(&text);
    let _ = AgiResult::text(&text).data(text.as_ref()).line();
    assert_eq!(uri_decode(&uri_encode(&text)), text);
});
