//! Fuzz the RTP/RTCP/telephone-event parsers: never panic, and what parses re-encodes to
//! something that parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxpbx::rtp::{DtmfPayload, RtcpPacket, RtpPacket};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = RtpPacket::parse(data.to_vec().into()) {
        let wire = p.to_vec().expect("a parsed RTP packet re-encodes");
        let q = RtpPacket::parse(wire.into()).expect("re-encoded RTP parses");
        assert_eq!(p, q);
    }
    if let Ok(pkts) = RtcpPacket::parse_compound(data.to_vec().into()) {
        if let Ok(wire) = RtcpPacket::build_compound(&pkts) {
            let again = RtcpPacket::parse_compound(wire.into()).expect("re-encoded RTCP parses");
            assert_eq!(pkts, again);
        }
    }
    if let Ok(d) = DtmfPayload::parse(data) {
        assert_eq!(DtmfPayload::parse(&d.to_bytes()), Ok(d));
    }
});
