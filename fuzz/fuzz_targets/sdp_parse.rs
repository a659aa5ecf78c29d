//! Fuzz the SDP parser and the offer/answer code: any bytes must give `Ok` or an
//! `SdpError`, never a panic; an SDP that parses must serialize to one that parses,
//! and answering it must give an answer or `NoCommonCodec`.
//! Run with `cargo +nightly fuzz run sdp_parse` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};
use voxpbx::sip::sdp::{answer, Codec, Direction, Sdp};

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = Sdp::parse(data) else { return };
    let _ = (sdp.audio(), sdp.is_hold());
    let text = sdp.to_string();
    let again = Sdp::parse(text.as_bytes()).expect("serialized SDP must parse");
    assert_eq!(again.media.len(), sdp.media.len());
    let local = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let prefs = [Codec::Pcmu, Codec::Pcma, Codec::G722];
    if let Ok(ans) = answer(&sdp, &prefs, local, 10000, Direction::SendRecv) {
        assert_eq!(ans.media.len(), sdp.media.len());
        Sdp::parse(ans.to_string().as_bytes()).expect("an answer must parse");
    }
});
