//! Fuzz AMI input: the framing decoder (in arbitrary chunks) and a whole session fed the same
//! bytes must never panic, hang or grow without bound.
//! Run with `cargo +nightly fuzz run ami_parse` from the repository root.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use voxpbx::interfaces::ami::codec::{Decoder, Limits};
use voxpbx::interfaces::ami::config::{EventFilter, ManagerConfig};
use voxpbx::interfaces::ami::session::{ActionTable, AmiShared, Now};
use voxpbx::interfaces::ami::{AmiUser, EventBuilder, Perm, SessionOutput};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a chunk size so splits land everywhere.
    let (chunk, body) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c % 64) + 1, rest),
        None => return,
    };

    let mut dec = Decoder::new(Limits {
        max_line: 256,
        max_message: 2048,
        max_headers: 16,
    });
    for piece in body.chunks(chunk) {
        dec.push(piece);
        while let Some(m) = dec.next_message() {
            if let Ok(m) = m {
                let _ = m.action();
                let _ = m.variables();
                let _ = m.encode();
            }
        }
        assert!(
            dec.buffered() <= 256 + chunk,
            "decoder buffer must stay bounded"
        );
    }

    // Event filter parsing from arbitrary key/value text.
    let text = String::from_utf8_lossy(body);
    if let Some((k, v)) = text.split_once('=') {
        let _ = EventFilter::parse(k, v);
    }

    // A session: banner, login attempts, actions, events.
    let cfg = ManagerConfig {
        enabled: true,
        users: vec![AmiUser::new("admin", "secret", Perm::ALL, Perm::ALL)],
        ..ManagerConfig::default()
    };
    let mut actions = ActionTable::new();
    actions.register_known("Originate", "Originate a call.");
    let shared = AmiShared::new(cfg, actions);
    let t0 = Instant::now();
    let now = |ms: u64| {
        Now::new(
            t0 + Duration::from_millis(ms),
            Duration::from_secs(1_700_000_000),
        )
    };
    let Ok(mut s) = shared.accept("127.0.0.1:1".parse().unwrap(), now(0), 7) else {
        return;
    };
    let ev = EventBuilder::new("Hangup", Perm::CALL)
        .field("Channel", "PJSIP/a-1")
        .build();
    let mut t = 0;
    for piece in body.chunks(chunk) {
        t += 100;
        s.handle_input(now(t), piece);
        s.deliver(&ev);
        while let Some(o) = s.poll_output() {
            if let SessionOutput::Action(req) = o {
                s.send(req.success("ok"));
            }
        }
    }
    s.handle_timeout(now(t + 60_000));
    while s.poll_output().is_some() {}
});
