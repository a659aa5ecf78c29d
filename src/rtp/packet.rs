//! RTP (RFC 3550 §5) and RTCP (RFC 3550 §6: SR, RR, SDES, BYE, compound) wire formats.
//!
//! Parsing is zero-copy: payloads, header extensions and SDES/BYE texts are `Bytes` slices of
//! the input. Every malformed input yields a [`PacketError`]; nothing here panics on any bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// RTP fixed header length.
pub const RTP_HEADER_LEN: usize = 12;
/// RTCP packet types.
pub const RTCP_SR: u8 = 200;
pub const RTCP_RR: u8 = 201;
pub const RTCP_SDES: u8 = 202;
pub const RTCP_BYE: u8 = 203;
pub const RTCP_APP: u8 = 204;
/// SDES item types (RFC 3550 §6.5).
pub const SDES_END: u8 = 0;
pub const SDES_CNAME: u8 = 1;
pub const SDES_NAME: u8 = 2;
pub const SDES_TOOL: u8 = 6;

/// Why a packet could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet too short: {len} bytes, need at least {need}")]
    TooShort { len: usize, need: usize },
    #[error("unsupported RTP/RTCP version {0} (expected 2)")]
    BadVersion(u8),
    #[error("invalid padding length {pad} in a {len}-byte packet")]
    BadPadding { pad: usize, len: usize },
    #[error("RTCP length field ({words} words) overruns the datagram ({left} bytes left)")]
    BadRtcpLength { words: usize, left: usize },
    #[error("malformed RTCP {kind}: {what}")]
    MalformedRtcp {
        kind: &'static str,
        what: &'static str,
    },
    #[error("empty RTCP compound packet")]
    EmptyCompound,
    #[error("cannot build packet: {0}")]
    Build(&'static str),
}

fn need(data: &[u8], n: usize) -> Result<(), PacketError> {
    if data.len() < n {
        Err(PacketError::TooShort {
            len: data.len(),
            need: n,
        })
    } else {
        Ok(())
    }
}

fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// Up to 15 contributing sources, stored inline (no allocation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CsrcList {
    len: u8,
    ids: [u32; 15],
}

impl CsrcList {
    pub fn as_slice(&self) -> &[u32] {
        &self.ids[..self.len as usize]
    }
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Adds a CSRC; error when 15 are already present.
    pub fn push(&mut self, csrc: u32) -> Result<(), PacketError> {
        if self.len as usize >= self.ids.len() {
            return Err(PacketError::Build("more than 15 CSRCs"));
        }
        self.ids[self.len as usize] = csrc;
        self.len += 1;
        Ok(())
    }
}

/// An RTP header extension (RFC 3550 §5.3.1): profile-defined 16 bits and 32-bit-aligned data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderExtension {
    pub profile: u16,
    pub data: Bytes,
}

/// RTP fixed header plus CSRCs and extension.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub csrc: CsrcList,
    pub extension: Option<HeaderExtension>,
}

impl RtpHeader {
    /// Encoded length of this header in bytes.
    pub fn encoded_len(&self) -> usize {
        RTP_HEADER_LEN
            + 4 * self.csrc.len()
            + self.extension.as_ref().map_or(0, |e| 4 + e.data.len())
    }

    /// Appends the header to `out`. `padding` sets the P bit (the caller appends the padding).
    pub fn write(&self, padding: bool, out: &mut Vec<u8>) -> Result<(), PacketError> {
        if self.payload_type > 127 {
            return Err(PacketError::Build("payload type above 127"));
        }
        if let Some(ext) = &self.extension {
            if ext.data.len() % 4 != 0 {
                return Err(PacketError::Build(
                    "header extension length not a multiple of 4",
                ));
            }
            if ext.data.len() / 4 > u16::MAX as usize {
                return Err(PacketError::Build("header extension too long"));
            }
        }
        let b0 = 0x80
            | if padding { 0x20 } else { 0 }
            | if self.extension.is_some() { 0x10 } else { 0 }
            | self.csrc.len() as u8;
        let b1 = if self.marker { 0x80 } else { 0 } | self.payload_type;
        out.extend_from_slice(&[b0, b1]);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for c in self.csrc.as_slice() {
            out.extend_from_slice(&c.to_be_bytes());
        }
        if let Some(ext) = &self.extension {
            out.extend_from_slice(&ext.profile.to_be_bytes());
            out.extend_from_slice(&((ext.data.len() / 4) as u16).to_be_bytes());
            out.extend_from_slice(&ext.data);
        }
        Ok(())
    }
}

/// A parsed RTP packet; `payload` is a slice of the received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    pub header: RtpHeader,
    pub payload: Bytes,
    /// Padding octets at the end (0 = no P bit), including the count octet itself.
    pub padding: u8,
}

impl RtpPacket {
    /// Parses an RTP packet without copying the payload.
    pub fn parse(data: Bytes) -> Result<RtpPacket, PacketError> {
        let d: &[u8] = &data;
        need(d, RTP_HEADER_LEN)?;
        let version = d[0] >> 6;
        if version != 2 {
            return Err(PacketError::BadVersion(version));
        }
        let has_padding = d[0] & 0x20 != 0;
        let has_ext = d[0] & 0x10 != 0;
        let cc = (d[0] & 0x0f) as usize;
        let mut header = RtpHeader {
            marker: d[1] & 0x80 != 0,
            payload_type: d[1] & 0x7f,
            sequence: be16(d, 2),
            timestamp: be32(d, 4),
            ssrc: be32(d, 8),
            csrc: CsrcList::default(),
            extension: None,
        };
        let mut off = RTP_HEADER_LEN;
        need(d, off + 4 * cc)?;
        for i in 0..cc {
            header.csrc.ids[i] = be32(d, off + 4 * i);
        }
        header.csrc.len = cc as u8;
        off += 4 * cc;
        if has_ext {
            need(d, off + 4)?;
            let profile = be16(d, off);
            let len = be16(d, off + 2) as usize * 4;
            need(d, off + 4 + len)?;
            header.extension = Some(HeaderExtension {
                profile,
                data: data.slice(off + 4..off + 4 + len),
            });
            off += 4 + len;
        }
        let mut end = d.len();
        let mut padding = 0u8;
        if has_padding {
            let pad = d[end - 1] as usize;
            if pad == 0 || pad > end - off {
                return Err(PacketError::BadPadding { pad, len: d.len() });
            }
            end -= pad;
            padding = pad as u8;
        }
        Ok(RtpPacket {
            header,
            payload: data.slice(off..end),
            padding,
        })
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        self.header.encoded_len() + self.payload.len() + self.padding as usize
    }

    /// Appends the encoded packet to `out`.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), PacketError> {
        out.reserve(self.encoded_len());
        self.header.write(self.padding > 0, out)?;
        out.extend_from_slice(&self.payload);
        if self.padding > 0 {
            out.resize(out.len() + self.padding as usize - 1, 0);
            out.push(self.padding);
        }
        Ok(())
    }

    /// Encodes into a fresh buffer of exactly the right size.
    pub fn to_vec(&self) -> Result<Vec<u8>, PacketError> {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.write(&mut v)?;
        Ok(v)
    }
}

/// Whether a datagram on a muxed port is RTCP rather than RTP (RFC 5761 §4: second octet 192..=223).
pub fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 2 && (192..=223).contains(&data[1])
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// Cumulative number of packets lost (24-bit signed on the wire; clamped when writing).
    pub cumulative_lost: i32,
    pub highest_seq: u32,
    pub jitter: u32,
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    const LEN: usize = 24;

    fn parse(d: &[u8]) -> ReportBlock {
        ReportBlock {
            ssrc: be32(d, 0),
            fraction_lost: d[4],
            cumulative_lost: (i32::from_be_bytes([d[5], d[6], d[7], 0])) >> 8,
            highest_seq: be32(d, 8),
            jitter: be32(d, 12),
            last_sr: be32(d, 16),
            delay_since_last_sr: be32(d, 20),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.push(self.fraction_lost);
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff);
        out.extend_from_slice(&lost.to_be_bytes()[1..4]);
        out.extend_from_slice(&self.highest_seq.to_be_bytes());
        out.extend_from_slice(&self.jitter.to_be_bytes());
        out.extend_from_slice(&self.last_sr.to_be_bytes());
        out.extend_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SenderReport {
    pub ssrc: u32,
    /// 64-bit NTP timestamp (seconds since 1900 in the high 32 bits).
    pub ntp_timestamp: u64,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
    pub reports: Vec<ReportBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiverReport {
    pub ssrc: u32,
    pub reports: Vec<ReportBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesItem {
    /// Item type (`SDES_CNAME`, ...); never 0.
    pub kind: u8,
    pub value: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdesChunk {
    pub ssrc: u32,
    pub items: Vec<SdesItem>,
}

impl SdesChunk {
    /// A chunk with a single CNAME item.
    pub fn cname(ssrc: u32, cname: &str) -> SdesChunk {
        SdesChunk {
            ssrc,
            items: vec![SdesItem {
                kind: SDES_CNAME,
                value: Bytes::copy_from_slice(cname.as_bytes()),
            }],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bye {
    pub sources: Vec<u32>,
    pub reason: Option<Bytes>,
}

/// One packet of an RTCP compound packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    SenderReport(SenderReport),
    ReceiverReport(ReceiverReport),
    SourceDescription(Vec<SdesChunk>),
    Goodbye(Bye),
    /// APP, feedback, XR, ...: kept raw (the body after the 4-byte common header, padding removed).
    Other {
        packet_type: u8,
        count: u8,
        payload: Bytes,
    },
}

impl RtcpPacket {
    /// Parses a compound RTCP packet (one or more RTCP packets back to back). Lenient about
    /// which packet comes first (RFC 3550 wants SR/RR; some peers send SDES or BYE alone).
    pub fn parse_compound(data: Bytes) -> Result<Vec<RtcpPacket>, PacketError> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < data.len() {
            let (pkt, len) = Self::parse_one(&data, off)?;
            out.push(pkt);
            off += len;
        }
        if out.is_empty() {
            return Err(PacketError::EmptyCompound);
        }
        Ok(out)
    }

    /// Parses the packet at `off` in `data`; returns it and its length in bytes.
    fn parse_one(data: &Bytes, off: usize) -> Result<(RtcpPacket, usize), PacketError> {
        let d = &data[off..];
        need(d, 4)?;
        let version = d[0] >> 6;
        if version != 2 {
            return Err(PacketError::BadVersion(version));
        }
        let count = d[0] & 0x1f;
        let pt = d[1];
        let words = be16(d, 2) as usize + 1;
        let len = words * 4;
        if len > d.len() {
            return Err(PacketError::BadRtcpLength {
                words,
                left: d.len(),
            });
        }
        let mut end = len;
        if d[0] & 0x20 != 0 {
            let pad = d[len - 1] as usize;
            if pad == 0 || pad > len - 4 {
                return Err(PacketError::BadPadding { pad, len });
            }
            end -= pad;
        }
        let body_start = off + 4;
        let body = &data[body_start..off + end];
        let rc = count as usize;
        let pkt = match pt {
            RTCP_SR => {
                let kind = "SR";
                if body.len() < 24 + rc * ReportBlock::LEN {
                    return Err(PacketError::MalformedRtcp {
                        kind,
                        what: "shorter than its report count",
                    });
                }
                let reports = (0..rc)
                    .map(|i| ReportBlock::parse(&body[24 + i * 24..]))
                    .collect();
                RtcpPacket::SenderReport(SenderReport {
                    ssrc: be32(body, 0),
                    ntp_timestamp: (be32(body, 4) as u64) << 32 | be32(body, 8) as u64,
                    rtp_timestamp: be32(body, 12),
                    packet_count: be32(body, 16),
                    octet_count: be32(body, 20),
                    reports,
                })
            }
            RTCP_RR => {
                if body.len() < 4 + rc * ReportBlock::LEN {
                    return Err(PacketError::MalformedRtcp {
                        kind: "RR",
                        what: "shorter than its report count",
                    });
                }
                let reports = (0..rc)
                    .map(|i| ReportBlock::parse(&body[4 + i * 24..]))
                    .collect();
                RtcpPacket::ReceiverReport(ReceiverReport {
                    ssrc: be32(body, 0),
                    reports,
                })
            }
            RTCP_SDES => {
                RtcpPacket::SourceDescription(parse_sdes(data, body_start, body.len(), rc)?)
            }
            RTCP_BYE => {
                let kind = "BYE";
                if body.len() < rc * 4 {
                    return Err(PacketError::MalformedRtcp {
                        kind,
                        what: "shorter than its source count",
                    });
                }
                let sources = (0..rc).map(|i| be32(body, i * 4)).collect();
                let mut reason = None;
                let at = rc * 4;
                if body.len() > at {
                    let n = body[at] as usize;
                    if body.len() < at + 1 + n {
                        return Err(PacketError::MalformedRtcp {
                            kind,
                            what: "reason overruns packet",
                        });
                    }
                    reason = Some(data.slice(body_start + at + 1..body_start + at + 1 + n));
                }
                RtcpPacket::Goodbye(Bye { sources, reason })
            }
            _ => RtcpPacket::Other {
                packet_type: pt,
                count,
                payload: data.slice(body_start..off + end),
            },
        };
        Ok((pkt, len))
    }

    fn packet_type_and_count(&self) -> (u8, usize) {
        match self {
            RtcpPacket::SenderReport(sr) => (RTCP_SR, sr.reports.len()),
            RtcpPacket::ReceiverReport(rr) => (RTCP_RR, rr.reports.len()),
            RtcpPacket::SourceDescription(chunks) => (RTCP_SDES, chunks.len()),
            RtcpPacket::Goodbye(bye) => (RTCP_BYE, bye.sources.len()),
            RtcpPacket::Other {
                packet_type, count, ..
            } => (*packet_type, *count as usize),
        }
    }

    /// Appends this packet (with its common header) to `out`.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), PacketError> {
        let (pt, count) = self.packet_type_and_count();
        if count > 31 {
            return Err(PacketError::Build(
                "more than 31 reports/chunks/sources in one RTCP packet",
            ));
        }
        let start = out.len();
        out.extend_from_slice(&[0x80 | count as u8, pt, 0, 0]);
        match self {
            RtcpPacket::SenderReport(sr) => {
                out.extend_from_slice(&sr.ssrc.to_be_bytes());
                out.extend_from_slice(&sr.ntp_timestamp.to_be_bytes());
                out.extend_from_slice(&sr.rtp_timestamp.to_be_bytes());
                out.extend_from_slice(&sr.packet_count.to_be_bytes());
                out.extend_from_slice(&sr.octet_count.to_be_bytes());
                for rb in &sr.reports {
                    rb.write(out);
                }
            }
            RtcpPacket::ReceiverReport(rr) => {
                out.extend_from_slice(&rr.ssrc.to_be_bytes());
                for rb in &rr.reports {
                    rb.write(out);
                }
            }
            RtcpPacket::SourceDescription(chunks) => {
                for chunk in chunks {
                    out.extend_from_slice(&chunk.ssrc.to_be_bytes());
                    for item in &chunk.items {
                        if item.kind == SDES_END {
                            out.truncate(start);
                            return Err(PacketError::Build("SDES item type 0"));
                        }
                        if item.value.len() > 255 {
                            out.truncate(start);
                            return Err(PacketError::Build("SDES item longer than 255 bytes"));
                        }
                        out.push(item.kind);
                        out.push(item.value.len() as u8);
                        out.extend_from_slice(&item.value);
                    }
                    // At least one null octet terminates the list, then pad to 32 bits.
                    out.push(0);
                    while !(out.len() - start).is_multiple_of(4) {
                        out.push(0);
                    }
                }
            }
            RtcpPacket::Goodbye(bye) => {
                for s in &bye.sources {
                    out.extend_from_slice(&s.to_be_bytes());
                }
                if let Some(reason) = &bye.reason {
                    if reason.len() > 255 {
                        out.truncate(start);
                        return Err(PacketError::Build("BYE reason longer than 255 bytes"));
                    }
                    out.push(reason.len() as u8);
                    out.extend_from_slice(reason);
                    while !(out.len() - start).is_multiple_of(4) {
                        out.push(0);
                    }
                }
            }
            RtcpPacket::Other { payload, .. } => {
                if payload.len() % 4 != 0 {
                    out.truncate(start);
                    return Err(PacketError::Build("RTCP payload not a multiple of 4 bytes"));
                }
                out.extend_from_slice(payload);
            }
        }
        let words = (out.len() - start) / 4 - 1;
        if words > u16::MAX as usize {
            out.truncate(start);
            return Err(PacketError::Build("RTCP packet too long"));
        }
        out[start + 2..start + 4].copy_from_slice(&(words as u16).to_be_bytes());
        Ok(())
    }

    /// Builds a compound packet from `packets`, in order.
    pub fn build_compound(packets: &[RtcpPacket]) -> Result<Vec<u8>, PacketError> {
        if packets.is_empty() {
            return Err(PacketError::EmptyCompound);
        }
        let mut out = Vec::with_capacity(128);
        for p in packets {
            p.write(&mut out)?;
        }
        Ok(out)
    }
}

fn parse_sdes(
    data: &Bytes,
    start: usize,
    len: usize,
    chunks: usize,
) -> Result<Vec<SdesChunk>, PacketError> {
    let kind = "SDES";
    let body = &data[start..start + len];
    let mut out = Vec::with_capacity(chunks.min(31));
    let mut at = 0;
    for _ in 0..chunks {
        if body.len() < at + 4 {
            return Err(PacketError::MalformedRtcp {
                kind,
                what: "chunk overruns packet",
            });
        }
        let mut chunk = SdesChunk {
            ssrc: be32(body, at),
            items: Vec::new(),
        };
        at += 4;
        loop {
            let Some(&item_type) = body.get(at) else {
                return Err(PacketError::MalformedRtcp {
                    kind,
                    what: "item list not terminated",
                });
            };
            if item_type == SDES_END {
                // Skip the terminator and the padding to the next 32-bit boundary.
                at = (at + 4) & !3;
                break;
            }
            let Some(&n) = body.get(at + 1) else {
                return Err(PacketError::MalformedRtcp {
                    kind,
                    what: "item overruns packet",
                });
            };
            let n = n as usize;
            if body.len() < at + 2 + n {
                return Err(PacketError::MalformedRtcp {
                    kind,
                    what: "item overruns packet",
                });
            }
            chunk.items.push(SdesItem {
                kind: item_type,
                value: data.slice(start + at + 2..start + at + 2 + n),
            });
            at += 2 + n;
        }
        out.push(chunk);
    }
    Ok(out)
}

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// 64-bit NTP timestamp for a wall-clock time (times before 1970 map to the Unix epoch).
pub fn ntp_timestamp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp (the `LSR` / compact NTP form).
pub fn ntp_middle32(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_rtp() -> Vec<u8> {
        let mut v = vec![
            0x80, 0x00, 0x12, 0x34, 0, 0, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef,
        ];
        v.extend_from_slice(&[1, 2, 3, 4]);
        v
    }

    #[test]
    fn parse_basic_rtp() {
        let p = RtpPacket::parse(Bytes::from(sample_rtp())).unwrap();
        assert_eq!(p.header.payload_type, 0);
        assert!(!p.header.marker);
        assert_eq!(p.header.sequence, 0x1234);
        assert_eq!(p.header.timestamp, 256);
        assert_eq!(p.header.ssrc, 0xdeadbeef);
        assert_eq!(&p.payload[..], &[1, 2, 3, 4]);
        assert_eq!(p.padding, 0);
    }

    #[test]
    fn payload_is_zero_copy() {
        let data = Bytes::from(sample_rtp());
        let p = RtpPacket::parse(data.clone()).unwrap();
        assert_eq!(p.payload.as_ptr(), data[12..].as_ptr());
    }

    #[test]
    fn roundtrip_with_csrc_extension_padding_marker() {
        let mut h = RtpHeader {
            marker: true,
            payload_type: 101,
            sequence: 65535,
            timestamp: 0xffff_fff0,
            ssrc: 7,
            ..Default::default()
        };
        h.csrc.push(11).unwrap();
        h.csrc.push(22).unwrap();
        h.extension = Some(HeaderExtension {
            profile: 0xbede,
            data: Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8]),
        });
        let p = RtpPacket {
            header: h,
            payload: Bytes::from_static(b"hello"),
            padding: 3,
        };
        let v = p.to_vec().unwrap();
        assert_eq!(v.len(), p.encoded_len());
        assert_eq!(v[0], 0x80 | 0x20 | 0x10 | 2);
        assert_eq!(v[1], 0x80 | 101);
        let q = RtpPacket::parse(Bytes::from(v)).unwrap();
        assert_eq!(q, p);
        assert_eq!(q.header.csrc.as_slice(), &[11, 22]);
    }

    #[test]
    fn rtp_errors() {
        assert!(matches!(
            RtpPacket::parse(Bytes::from_static(&[0x80; 11])),
            Err(PacketError::TooShort { .. })
        ));
        let mut v = sample_rtp();
        v[0] = 0x40;
        assert_eq!(
            RtpPacket::parse(Bytes::from(v)),
            Err(PacketError::BadVersion(1))
        );
        // CSRC count larger than the packet.
        let mut v = sample_rtp();
        v[0] = 0x8f;
        assert!(matches!(
            RtpPacket::parse(Bytes::from(v)),
            Err(PacketError::TooShort { .. })
        ));
        // Extension header missing / too long.
        let mut v = sample_rtp();
        v[0] = 0x90;
        v.extend_from_slice(&[0, 0, 0, 9]);
        assert!(matches!(
            RtpPacket::parse(Bytes::from(v)),
            Err(PacketError::TooShort { .. })
        ));
        // Padding bigger than payload, or zero.
        let mut v = sample_rtp();
        v[0] = 0xa0;
        *v.last_mut().unwrap() = 5;
        assert!(matches!(
            RtpPacket::parse(Bytes::from(v)),
            Err(PacketError::BadPadding { .. })
        ));
        let mut v = sample_rtp();
        v[0] = 0xa0;
        *v.last_mut().unwrap() = 0;
        assert!(matches!(
            RtpPacket::parse(Bytes::from(v)),
            Err(PacketError::BadPadding { .. })
        ));
        // Padding consuming the whole payload is fine.
        let mut v = sample_rtp();
        v[0] = 0xa0;
        *v.last_mut().unwrap() = 4;
        assert_eq!(RtpPacket::parse(Bytes::from(v)).unwrap().payload.len(), 0);
    }

    #[test]
    fn build_errors() {
        let h = RtpHeader {
            payload_type: 200,
            ..Default::default()
        };
        assert!(h.write(false, &mut Vec::new()).is_err());
        let h = RtpHeader {
            extension: Some(HeaderExtension {
                profile: 1,
                data: Bytes::from_static(&[1, 2, 3]),
            }),
            ..Default::default()
        };
        assert!(h.write(false, &mut Vec::new()).is_err());
        let mut c = CsrcList::default();
        for i in 0..15 {
            c.push(i).unwrap();
        }
        assert!(c.push(16).is_err());
    }

    #[test]
    fn rtcp_demux() {
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(is_rtcp(&[0x81, 201]));
        assert!(!is_rtcp(&[0x80, 0]));
        assert!(!is_rtcp(&[0x80, 0x80 | 101]));
        assert!(!is_rtcp(&[0x80]));
    }

    fn block(ssrc: u32, lost: i32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 12,
            cumulative_lost: lost,
            highest_seq: 0x0001_0005,
            jitter: 33,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 65536,
        }
    }

    #[test]
    fn rtcp_compound_roundtrip() {
        let pkts = vec![
            RtcpPacket::SenderReport(SenderReport {
                ssrc: 1,
                ntp_timestamp: 0x0102_0304_0506_0708,
                rtp_timestamp: 160,
                packet_count: 10,
                octet_count: 1600,
                reports: vec![block(2, -3)],
            }),
            RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: 1,
                reports: vec![block(3, 5), block(4, 0x7f_ffff)],
            }),
            RtcpPacket::SourceDescription(vec![
                SdesChunk::cname(1, "voxpbx@host"),
                SdesChunk {
                    ssrc: 9,
                    items: vec![
                        SdesItem {
                            kind: SDES_NAME,
                            value: Bytes::from_static(b"ab"),
                        },
                        SdesItem {
                            kind: SDES_TOOL,
                            value: Bytes::from_static(b""),
                        },
                    ],
                },
            ]),
            RtcpPacket::Goodbye(Bye {
                sources: vec![1, 2],
                reason: Some(Bytes::from_static(b"bye now")),
            }),
            RtcpPacket::Goodbye(Bye {
                sources: vec![1],
                reason: None,
            }),
            RtcpPacket::Other {
                packet_type: RTCP_APP,
                count: 3,
                payload: Bytes::from_static(&[0, 0, 0, 1, b'n', b'a', b'm', b'e']),
            },
        ];
        let wire = RtcpPacket::build_compound(&pkts).unwrap();
        assert_eq!(wire.len() % 4, 0);
        let back = RtcpPacket::parse_compound(Bytes::from(wire)).unwrap();
        assert_eq!(back, pkts);
    }

    #[test]
    fn rtcp_known_bytes() {
        // RR (ssrc 5, no reports) + SDES with one chunk: CNAME "ab", then 4 null octets
        // (end of item list plus padding to the 32-bit boundary).
        let wire: &[u8] = &[
            0x80, 201, 0, 1, 0, 0, 0, 5, //
            0x81, 202, 0, 3, 0, 0, 0, 5, 1, 2, b'a', b'b', 0, 0, 0, 0,
        ];
        assert_eq!(
            RtcpPacket::build_compound(&[
                RtcpPacket::ReceiverReport(ReceiverReport {
                    ssrc: 5,
                    reports: vec![]
                }),
                RtcpPacket::SourceDescription(vec![SdesChunk::cname(5, "ab")]),
            ])
            .unwrap(),
            wire
        );
        let pkts = RtcpPacket::parse_compound(Bytes::copy_from_slice(wire)).unwrap();
        assert_eq!(
            pkts[0],
            RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: 5,
                reports: vec![]
            })
        );
        match &pkts[1] {
            RtcpPacket::SourceDescription(c) => {
                assert_eq!(c[0].ssrc, 5);
                assert_eq!(&c[0].items[0].value[..], b"ab");
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn rtcp_negative_cumulative_lost_sign_extends() {
        let mut v = Vec::new();
        block(1, -2).write(&mut v);
        assert_eq!(&v[5..8], &[0xff, 0xff, 0xfe]);
        assert_eq!(ReportBlock::parse(&v).cumulative_lost, -2);
        let mut v = Vec::new();
        block(1, -100_000_000).write(&mut v);
        assert_eq!(ReportBlock::parse(&v).cumulative_lost, -0x80_0000);
    }

    #[test]
    fn rtcp_errors() {
        assert_eq!(
            RtcpPacket::parse_compound(Bytes::new()),
            Err(PacketError::EmptyCompound)
        );
        assert!(matches!(
            RtcpPacket::parse_compound(Bytes::from_static(&[0x80, 201])),
            Err(PacketError::TooShort { .. })
        ));
        // Length claims more than present.
        assert!(matches!(
            RtcpPacket::parse_compound(Bytes::from_static(&[0x80, 201, 0, 5, 0, 0, 0, 1])),
            Err(PacketError::BadRtcpLength { .. })
        ));
        // RR claiming one report block without the bytes.
        assert!(matches!(
            RtcpPacket::parse_compound(Bytes::from_static(&[0x81, 201, 0, 1, 0, 0, 0, 1])),
            Err(PacketError::MalformedRtcp { .. })
        ));
        // Wrong version.
        assert_eq!(
            RtcpPacket::parse_compound(Bytes::from_static(&[0x40, 201, 0, 1, 0, 0, 0, 1])),
            Err(PacketError::BadVersion(1))
        );
        // SDES item without terminator.
        assert!(RtcpPacket::parse_compound(Bytes::from_static(&[
            0x81, 202, 0, 2, 0, 0, 0, 1, 1, 2, b'a', b'b'
        ]))
        .is_err());
        // BYE reason overrunning.
        assert!(RtcpPacket::parse_compound(Bytes::from_static(&[
            0x81, 203, 0, 2, 0, 0, 0, 1, 9, b'a', b'b', b'c'
        ]))
        .is_err());
        // Bad padding count.
        assert!(
            RtcpPacket::parse_compound(Bytes::from_static(&[0xa0, 201, 0, 1, 0, 0, 0, 9])).is_err()
        );
        // Build errors.
        let too_many = RtcpPacket::Goodbye(Bye {
            sources: vec![0; 32],
            reason: None,
        });
        assert!(RtcpPacket::build_compound(&[too_many]).is_err());
        let odd = RtcpPacket::Other {
            packet_type: 204,
            count: 0,
            payload: Bytes::from_static(&[1]),
        };
        let mut v = vec![9];
        assert!(odd.write(&mut v).is_err());
        assert_eq!(v, vec![9], "failed write leaves the buffer as it was");
    }

    #[test]
    fn rtcp_padding_accepted() {
        // RR (ssrc 1) with P bit and 4 bytes of padding.
        let pkts = RtcpPacket::parse_compound(Bytes::from_static(&[
            0xa0, 201, 0, 2, 0, 0, 0, 1, 0, 0, 0, 4,
        ]))
        .unwrap();
        assert_eq!(
            pkts,
            vec![RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: 1,
                reports: vec![]
            })]
        );
    }

    #[test]
    fn ntp_conversion() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        let ntp = ntp_timestamp(t);
        assert_eq!(ntp >> 32, NTP_UNIX_OFFSET + 1);
        assert_eq!(ntp as u32, 0x8000_0000);
        assert_eq!(
            ntp_middle32(ntp),
            (((NTP_UNIX_OFFSET + 1) as u32) << 16) | 0x8000
        );
    }

    /// What the fuzz target checks: whatever parses re-encodes and parses back the same.
    fn roundtrip_invariants(data: &[u8]) {
        let bytes = Bytes::copy_from_slice(data);
        if let Ok(p) = RtpPacket::parse(bytes.clone()) {
            let q = RtpPacket::parse(Bytes::from(p.to_vec().unwrap())).unwrap();
            assert_eq!(p, q);
        }
        if let Ok(pkts) = RtcpPacket::parse_compound(bytes) {
            if let Ok(wire) = RtcpPacket::build_compound(&pkts) {
                assert_eq!(RtcpPacket::parse_compound(Bytes::from(wire)).unwrap(), pkts);
            }
        }
    }

    #[test]
    fn mutated_valid_packets_roundtrip_or_error() {
        let mut h = RtpHeader {
            payload_type: 96,
            ..Default::default()
        };
        h.csrc.push(5).unwrap();
        h.extension = Some(HeaderExtension {
            profile: 0xbede,
            data: Bytes::from_static(&[1, 2, 3, 4]),
        });
        let rtp = RtpPacket {
            header: h,
            payload: Bytes::from_static(b"abcdef"),
            padding: 2,
        }
        .to_vec()
        .unwrap();
        let rtcp = RtcpPacket::build_compound(&[
            RtcpPacket::SenderReport(SenderReport {
                ssrc: 1,
                reports: vec![block(2, 1)],
                ..Default::default()
            }),
            RtcpPacket::SourceDescription(vec![SdesChunk::cname(1, "abc")]),
            RtcpPacket::Goodbye(Bye {
                sources: vec![1],
                reason: Some(Bytes::from_static(b"x")),
            }),
        ])
        .unwrap();
        for base in [rtp, rtcp] {
            for i in 0..base.len() {
                for v in [0u8, 1, 2, 3, 0x1f, 0x20, 0x7f, 0x80, 0xa1, 0xff] {
                    let mut m = base.clone();
                    m[i] = v;
                    roundtrip_invariants(&m);
                    roundtrip_invariants(&m[..i]);
                }
            }
        }
    }

    #[test]
    fn never_panics_on_garbage() {
        // Deterministic pseudo-random inputs of many lengths, plus every single-byte prefix mutation.
        let mut x: u32 = 0x1234_5678;
        for len in 0..200usize {
            for _ in 0..20 {
                let v: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                let mut w = v.clone();
                if let Some(b) = w.first_mut() {
                    *b = (*b & 0x3f) | 0x80;
                }
                for input in [v, w] {
                    roundtrip_invariants(&input);
                }
            }
        }
    }
}
