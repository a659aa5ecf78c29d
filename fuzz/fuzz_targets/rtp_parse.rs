//! Fuzz the RTP/RTCP/telephone-event parsers: never panic, and what parses re-encodes to
//! something that parses back to the same value.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use voxpbx::rtp::{DtmfPayload, RtcpPacket, RtpPacket};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(p) = RtpPacket::parse(bytes.clone()) {
        let wire = p.to_vec().expect("a parsed RTP packet re-encodes");
        let q = RtpPacket::parse(Bytes::from(wire)).expect("re-encoded RTP parses");
        assert_eq!(p, q);
    }
    if let Ok(pkts) = RtcpPacket::parse_compound(bytes) {
        if let Ok(wire) = RtcpPacket::build_compound(&pkts) {
            let again =
                RtcpPacket::parse_compound(Bytes::from(wire)).expect("re-encoded RTCP parses");
            assert_eq!(pkts, again);
        }
    }
    if let Ok(d) = DtmfPayload::parse(data) {
        assert_eq!(
            DtmfPayload::parse(&d.to_bytes()),
            Ok(DtmfPayload {
                volume: d.volume & 0x3f,
                ..d
            })
        );
    }
});
