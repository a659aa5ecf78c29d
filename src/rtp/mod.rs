//! Sans-IO RTP core: packets (RTP/RTCP), RFC 4733 DTMF, an adaptive jitter buffer and the
//! per-stream [`RtpSession`]. No sockets, no clock reads: the socket shell passes `now` and the
//! received datagrams in, and sends the [`Transmit`]s that come out.
//!
//! Driving a session (the shell's loop):
//! - on a datagram: `session.handle_receive(now, from, bytes)`, then drain `poll_event(now)`;
//! - every frame interval (20 ms): `poll_frame(now)` gives a frame, a `Missing` (conceal) or `Empty`;
//! - on an outgoing frame: `send_frame(now, &frame)` → `Option<Transmit>`;
//! - at `poll_deadline()`: drain `poll_transmit(now)` (DTMF), `poll_rtcp(now)`, `poll_timeout(now)`
//!   and `poll_event(now)`.
pub mod dtmf;
pub mod jitter;
pub mod packet;
pub mod session;

pub use dtmf::{DtmfEvent, DtmfPayload, DtmfReceiver, DtmfSender};
pub use jitter::{JitterBuffer, JitterConfig, JitterStats, Playout, PutOutcome};
pub use packet::{PacketError, RtcpPacket, RtpHeader, RtpPacket};
pub use session::{Event, PayloadMap, RtpConfig, RtpError, RtpSession, RtpStats, Transmit};

use crate::media::Format;

/// The RTP clock rate of a format (RFC 3551): G.722 is clocked at 8000 although it samples
/// at 16 kHz; every other format uses its sample rate.
pub fn rtp_clock_rate(format: Format) -> u32 {
    match format {
        Format::G722 => 8000,
        f => f.rate(),
    }
}

/// Number of RTP timestamp units covered by `payload_len` bytes of `format`.
pub fn rtp_units(format: Format, payload_len: usize) -> u32 {
    match format {
        // 16 kHz audio, 2 samples per byte, clocked at 8 kHz: one unit per byte.
        Format::G722 => payload_len as u32,
        f => f.samples_in(payload_len) as u32,
    }
}

/// Converts a duration to RTP timestamp units at `rate` (rounded down, wrapping in u32).
pub(crate) fn duration_to_units(d: std::time::Duration, rate: u32) -> u32 {
    (d.as_nanos() * rate as u128 / 1_000_000_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clock_rates_and_units() {
        assert_eq!(rtp_clock_rate(Format::G722), 8000);
        assert_eq!(rtp_clock_rate(Format::Slin16), 16000);
        assert_eq!(rtp_units(Format::G722, 160), 160);
        assert_eq!(rtp_units(Format::Ulaw, 160), 160);
        assert_eq!(rtp_units(Format::Slin16, 640), 320);
        assert_eq!(duration_to_units(Duration::from_millis(20), 8000), 160);
        assert_eq!(
            duration_to_units(Duration::from_secs(1_000_000), 8000),
            (8_000_000_000u64 % (1 << 32)) as u32
        );
    }
}
