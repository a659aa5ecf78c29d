//! Media frames: audio in a named format, with an RTP-style sample timestamp.

use bytes::Bytes;

/// An audio format as Asterisk names it (`ast_format_get_codec_name` / format name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Ulaw,
    Alaw,
    /// Signed linear 16-bit little-endian, 8 kHz.
    Slin8,
    Slin16,
    Slin48,
    G722,
}

impl Format {
    /// Sample rate of the decoded audio.
    pub fn rate(self) -> u32 {
        match self {
            Format::Ulaw | Format::Alaw | Format::Slin8 => 8000,
            Format::Slin16 | Format::G722 => 16000,
            Format::Slin48 => 48000,
        }
    }
    /// Asterisk format name (`slin16`, `ulaw`, ...), as used in `allow=` and `codecs=`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Ulaw => "ulaw",
            Format::Alaw => "alaw",
            Format::Slin8 => "slin",
            Format::Slin16 => "slin16",
            Format::Slin48 => "slin48",
            Format::G722 => "g722",
        }
    }
    /// Asterisk *codec* name: every signed-linear rate is `slin` (what AEAP sends).
    pub fn codec_name(self) -> &'static str {
        match self {
            Format::Slin8 | Format::Slin16 | Format::Slin48 => "slin",
            f => f.name(),
        }
    }
    pub fn from_name(name: &str) -> Option<Format> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "ulaw" | "mulaw" | "pcmu" | "g711u" => Format::Ulaw,
            "alaw" | "pcma" | "g711a" => Format::Alaw,
            "slin" | "slin8" => Format::Slin8,
            "slin16" => Format::Slin16,
            "slin48" => Format::Slin48,
            "g722" => Format::G722,
            _ => return None,
        })
    }
    /// The signed-linear format at `rate` (8000, 16000 or 48000 Hz).
    pub fn slin_for_rate(rate: u32) -> Option<Format> {
        match rate {
            8000 => Some(Format::Slin8),
            16000 => Some(Format::Slin16),
            48000 => Some(Format::Slin48),
            _ => None,
        }
    }
    pub fn is_slin(self) -> bool {
        matches!(self, Format::Slin8 | Format::Slin16 | Format::Slin48)
    }
    /// Bytes of payload for `ms` milliseconds of audio.
    pub fn bytes_for_ms(self, ms: u32) -> usize {
        let samples = (self.rate() / 1000 * ms) as usize;
        match self {
            Format::Ulaw | Format::Alaw => samples,
            Format::G722 => samples / 2,
            _ => samples * 2,
        }
    }
    /// Number of samples (at `rate()`) in a payload of `len` bytes.
    pub fn samples_in(self, len: usize) -> usize {
        match self {
            Format::Ulaw | Format::Alaw => len,
            Format::G722 => len * 2,
            _ => len / 2,
        }
    }
}

/// One frame of audio. `data` is the raw payload in `format` (slin is i16 LE).
#[derive(Debug, Clone)]
pub struct Frame {
    pub format: Format,
    pub data: Bytes,
    /// Timestamp in samples at the format's rate (RTP-style), for continuity across sources.
    pub ts: u32,
    /// RTP sequence number when the frame came from RTP, else a running count.
    pub seq: u16,
}

impl Frame {
    pub fn new(format: Format, data: Bytes) -> Frame {
        Frame {
            format,
            data,
            ts: 0,
            seq: 0,
        }
    }
    pub fn samples(&self) -> usize {
        self.format.samples_in(self.data.len())
    }
    pub fn duration_ms(&self) -> u32 {
        (self.samples() as u64 * 1000 / self.format.rate() as u64) as u32
    }
    /// `ms` milliseconds of silence in `format` (the codec's silence code, zeros for slin).
    pub fn silence(format: Format, ms: u32) -> Frame {
        let mut b = bytes::BytesMut::new();
        let samples = (format.rate() / 1000 * ms) as usize;
        crate::media::translate::silence_into(format, samples, &mut b);
        Frame::new(format, b.freeze())
    }
    /// Build a slin frame from samples.
    pub fn from_slin(format: Format, samples: &[i16]) -> Frame {
        debug_assert!(format.is_slin());
        let mut v = Vec::with_capacity(samples.len() * 2);
        for s in samples {
            v.extend_from_slice(&s.to_le_bytes());
        }
        Frame::new(format, Bytes::from(v))
    }
    /// Samples of a slin frame (panics in debug if the frame is not slin).
    pub fn slin_samples(&self) -> Vec<i16> {
        debug_assert!(self.format.is_slin());
        self.data
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect()
    }
}
