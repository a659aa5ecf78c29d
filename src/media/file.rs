//! Sound files the Asterisk way: lookup by name and language, decoding to signed linear,
//! playback as 20 ms frames in any supported format (with seeking for ControlPlayback and
//! the position AGI reports as `endpos`), and recording.
//!
//! Formats by extension: `.wav` / `.wav16` (RIFF: 8/16/24/32-bit PCM, float, µ-law, A-law;
//! decoded with symphonia, with a built-in reader as fallback for files symphonia rejects,
//! such as µ-law WAVs with a 16-byte `fmt ` chunk or unfinalised recordings), raw signed
//! linear `.sln` (8 kHz), `.sln12` ... `.sln192`, `.raw`, and raw `.ulaw` / `.alaw` (with
//! Asterisk's aliases `.ul`, `.mu`, `.pcm`, `.al`, ...). GSM is not supported (no decoder
//! fits), so `.gsm` files are skipped by the lookup.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use super::frame::{Format, Frame};
use super::g711;
use super::resample::{resample_all, ResampleError};
use super::translate::{encode_into, is_codec_supported, TranslateError, Translator};

/// Extensions tried by [`find_sound`], in order of preference.
pub const LOOKUP_EXTENSIONS: [&str; 5] = ["sln16", "wav", "sln", "ulaw", "alaw"];

/// Errors from sound file handling.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unsupported sound file type '{ext}'")]
    UnsupportedType { path: PathBuf, ext: String },
    #[error("{path}: invalid or unsupported WAV file: {reason}")]
    BadWav { path: PathBuf, reason: String },
    #[error("{path}: cannot record at {rate} Hz (WAV recordings are 8000, 16000 or 48000 Hz)")]
    BadRate { path: PathBuf, rate: u32 },
    #[error("{path}: cannot append: {reason}")]
    Append { path: PathBuf, reason: String },
    #[error(transparent)]
    Translate(#[from] TranslateError),
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How a file's bytes are laid out, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoundKind {
    /// RIFF WAVE.
    Wav,
    /// Raw signed linear 16-bit LE at this rate.
    Slin(u32),
    /// Raw µ-law, 8 kHz.
    Ulaw,
    /// Raw A-law, 8 kHz.
    Alaw,
}

impl SoundKind {
    /// The kind for a file extension (without the dot, case-insensitive).
    pub fn from_extension(ext: &str) -> Option<SoundKind> {
        Some(match ext.to_ascii_lowercase().as_str() {
            "wav" | "wav16" => SoundKind::Wav,
            "sln" | "raw" | "slin" => SoundKind::Slin(8000),
            "sln12" => SoundKind::Slin(12000),
            "sln16" => SoundKind::Slin(16000),
            "sln24" => SoundKind::Slin(24000),
            "sln32" => SoundKind::Slin(32000),
            "sln44" => SoundKind::Slin(44100),
            "sln48" => SoundKind::Slin(48000),
            "sln96" => SoundKind::Slin(96000),
            "sln192" => SoundKind::Slin(192000),
            "ulaw" | "ul" | "mu" | "ulw" | "pcm" => SoundKind::Ulaw,
            "alaw" | "al" | "alw" => SoundKind::Alaw,
            _ => return None,
        })
    }

    fn of_path(path: &Path) -> Result<SoundKind, FileError> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        SoundKind::from_extension(ext).ok_or_else(|| FileError::UnsupportedType {
            path: path.to_path_buf(),
            ext: ext.to_string(),
        })
    }
}

/// Language directories to try, Asterisk's order: the language, then with `_suffix`es
/// removed one at a time, then no language, then `en` (unless already tried).
fn language_candidates(language: &str) -> Vec<Option<String>> {
    let mut v: Vec<Option<String>> = Vec::new();
    let mut lang = language.trim().to_string();
    while !lang.is_empty() {
        v.push(Some(lang.clone()));
        match lang.rfind('_') {
            Some(i) => lang.truncate(i),
            None => break,
        }
    }
    v.push(None);
    if !v.iter().any(|l| l.as_deref() == Some("en")) {
        v.push(Some("en".to_string()));
    }
    v
}

fn has_known_extension(name: &str) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| SoundKind::from_extension(e).is_some())
}

fn try_exts(base: &Path, explicit: bool) -> Option<PathBuf> {
    if explicit {
        return base.is_file().then(|| base.to_path_buf());
    }
    for ext in LOOKUP_EXTENSIONS {
        let mut s = base.as_os_str().to_owned();
        s.push(".");
        s.push(ext);
        let p = PathBuf::from(s);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// Find a sound file as Asterisk does. `name` may be absolute (used as is), relative to a
/// sounds directory (`digits/1`), and may carry an explicit extension (`hello.wav`). For a
/// relative name, each language candidate (see above) is tried in every directory as
/// `<dir>/<lang>/<name>.<ext>` (or `<dir>/<name>.<ext>` for "no language"), extensions in
/// [`LOOKUP_EXTENSIONS`] order.
pub fn find_sound(sounds_dirs: &[PathBuf], language: &str, name: &str) -> Option<PathBuf> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let explicit = has_known_extension(name);
    let p = Path::new(name);
    if p.is_absolute() {
        return try_exts(p, explicit);
    }
    for lang in language_candidates(language) {
        for dir in sounds_dirs {
            let base = match &lang {
                Some(l) => dir.join(l).join(name),
                None => dir.join(name),
            };
            if let Some(found) = try_exts(&base, explicit) {
                return Some(found);
            }
        }
    }
    None
}

/// A decoded sound file: mono signed linear samples at the file's rate. Cloning is cheap
/// (the samples are shared).
#[derive(Clone)]
pub struct SoundFile {
    rate: u32,
    samples: Arc<[i16]>,
}

impl std::fmt::Debug for SoundFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoundFile")
            .field("rate", &self.rate)
            .field("samples", &self.samples.len())
            .finish()
    }
}

impl SoundFile {
    /// Decode the whole file at `path` (type by extension).
    pub fn open(path: impl AsRef<Path>) -> Result<SoundFile, FileError> {
        let path = path.as_ref();
        let kind = SoundKind::of_path(path)?;
        match kind {
            SoundKind::Wav => {
                let (rate, samples) = match decode_wav_symphonia(path) {
                    Ok(r) => r,
                    Err(sym_err) => {
                        let bytes = std::fs::read(path).map_err(io_err(path))?;
                        parse_wav(&bytes).map_err(|own| FileError::BadWav {
                            path: path.to_path_buf(),
                            reason: format!("{sym_err}; {own}"),
                        })?
                    }
                };
                Ok(SoundFile {
                    rate,
                    samples: samples.into(),
                })
            }
            SoundKind::Slin(rate) => {
                let bytes = std::fs::read(path).map_err(io_err(path))?;
                let mut v = vec![0i16; bytes.len() / 2];
                g711::slin_bytes_to_samples(&bytes, &mut v);
                Ok(SoundFile {
                    rate,
                    samples: v.into(),
                })
            }
            SoundKind::Ulaw | SoundKind::Alaw => {
                let bytes = std::fs::read(path).map_err(io_err(path))?;
                let mut v = vec![0i16; bytes.len()];
                if kind == SoundKind::Ulaw {
                    g711::ulaw_to_linear_slice(&bytes, &mut v);
                } else {
                    g711::alaw_to_linear_slice(&bytes, &mut v);
                }
                Ok(SoundFile {
                    rate: 8000,
                    samples: v.into(),
                })
            }
        }
    }

    /// A sound built from samples (tests, generated prompts).
    pub fn from_samples(rate: u32, samples: Vec<i16>) -> SoundFile {
        SoundFile {
            rate,
            samples: samples.into(),
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }
    pub fn len(&self) -> usize {
        self.samples.len()
    }
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / self.rate.max(1) as u64
    }
}

/// Append `interleaved` (with `channels` channels) to `out` as mono (channel average).
fn downmix(interleaved: &[i16], channels: usize, out: &mut Vec<i16>) {
    if channels <= 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    out.extend(
        interleaved
            .chunks_exact(channels)
            .map(|c| (c.iter().map(|s| *s as i32).sum::<i32>() / channels as i32) as i16),
    );
}

fn decode_wav_symphonia(path: &Path) -> Result<(u32, Vec<i16>), String> {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::DecoderOptions;
    use symphonia::core::errors::Error as SymError;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;

    let file = File::open(path).map_err(|e| e.to_string())?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    hint.with_extension("wav");
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| e.to_string())?;
    let mut format = probed.format;
    let track = format.default_track().ok_or("no audio track")?;
    let track_id = track.id;
    let rate = track.codec_params.sample_rate.ok_or("no sample rate")?;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut sbuf: Option<(SampleBuffer<i16>, usize)> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.to_string()),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(SymError::DecodeError(_)) => continue,
            Err(e) => return Err(e.to_string()),
        };
        let spec = *decoded.spec();
        let channels = spec.channels.count().max(1);
        let frames = decoded.frames();
        let fits = sbuf
            .as_ref()
            .is_some_and(|(b, ch)| *ch == channels && b.capacity() >= frames * channels);
        if !fits {
            sbuf = Some((SampleBuffer::new(frames as u64, spec), channels));
        }
        if let Some((b, _)) = sbuf.as_mut() {
            b.copy_interleaved_ref(decoded);
            downmix(b.samples(), channels, &mut out);
        }
    }
    Ok((rate, out))
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Built-in RIFF WAVE reader: PCM 8/16/24/32-bit, IEEE float 32, µ-law, A-law (also inside
/// WAVE_FORMAT_EXTENSIBLE). A data chunk whose size is 0, 0xFFFFFFFF or past the end of the
/// file (an unfinalised recording) extends to the end of the file.
pub fn parse_wav(bytes: &[u8]) -> Result<(u32, Vec<i16>), String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut at = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = le32(bytes, at + 4).ok_or("truncated chunk header")? as usize;
        let body = at + 8;
        if id == b"fmt " {
            let tag = le16(bytes, body).ok_or("truncated fmt chunk")?;
            let channels = le16(bytes, body + 2).ok_or("truncated fmt chunk")?;
            let rate = le32(bytes, body + 4).ok_or("truncated fmt chunk")?;
            let bits = le16(bytes, body + 14).ok_or("truncated fmt chunk")?;
            let tag = if tag == 0xFFFE {
                // EXTENSIBLE: the real tag is the first two bytes of the sub-format GUID
                le16(bytes, body + 24).ok_or("truncated WAVE_FORMAT_EXTENSIBLE chunk")?
            } else {
                tag
            };
            fmt = Some((tag, channels, rate, bits));
        } else if id == b"data" {
            let (tag, channels, rate, bits) = fmt.ok_or("data chunk before fmt chunk")?;
            if channels == 0 || rate == 0 {
                return Err(format!("bad fmt: {channels} channels at {rate} Hz"));
            }
            let end = if size == 0 || size == u32::MAX as usize || body + size > bytes.len() {
                bytes.len()
            } else {
                body + size
            };
            let data = &bytes[body..end];
            let mut interleaved: Vec<i16> = match (tag, bits) {
                (1, 8) => data.iter().map(|b| ((*b as i16) - 128) << 8).collect(),
                (1, 16) => data
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect(),
                (1, 24) => data
                    .chunks_exact(3)
                    .map(|c| i16::from_le_bytes([c[1], c[2]]))
                    .collect(),
                (1, 32) => data
                    .chunks_exact(4)
                    .map(|c| i16::from_le_bytes([c[2], c[3]]))
                    .collect(),
                (3, 32) => data
                    .chunks_exact(4)
                    .map(|c| {
                        let f = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                        (f * 32768.0).round().clamp(-32768.0, 32767.0) as i16
                    })
                    .collect(),
                (6, 8) => data.iter().map(|b| g711::alaw_to_linear(*b)).collect(),
                (7, 8) => data.iter().map(|b| g711::ulaw_to_linear(*b)).collect(),
                _ => {
                    return Err(format!(
                        "unsupported encoding: format tag {tag}, {bits} bits"
                    ))
                }
            };
            let ch = channels as usize;
            if ch > 1 {
                let mut mono = Vec::with_capacity(interleaved.len() / ch);
                downmix(&interleaved, ch, &mut mono);
                interleaved = mono;
            }
            return Ok((rate, interleaved));
        }
        // chunks are word aligned
        at = body.saturating_add(size).saturating_add(size & 1);
    }
    Err("no data chunk".into())
}

/// Plays a sound as 20 ms frames in a target format.
///
/// The file is converted to the target rate once, up front (delay-compensated), so seeking
/// is exact and cheap. Positions are reported in samples of the *file's* rate, like
/// Asterisk's `ast_tellstream` (AGI `endpos`).
pub struct Playback {
    target: Format,
    src_rate: u32,
    src_len: usize,
    /// Audio at the target rate.
    audio: Arc<[i16]>,
    /// Position in `audio`.
    pos: usize,
    frame_samples: usize,
    ts: u32,
    seq: u16,
    out: BytesMut,
}

impl std::fmt::Debug for Playback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playback")
            .field("target", &self.target)
            .field("file_rate", &self.src_rate)
            .field("position_samples", &self.position_samples())
            .field("len_samples", &self.src_len)
            .finish()
    }
}

impl Playback {
    /// Open, decode and prepare `path` for playing in `target`.
    pub fn open(path: impl AsRef<Path>, target: Format) -> Result<Playback, FileError> {
        Playback::new(&SoundFile::open(path)?, target)
    }

    /// Prepare `file` for playing in `target` (G.722 is refused).
    pub fn new(file: &SoundFile, target: Format) -> Result<Playback, FileError> {
        // Refuse unsupported targets now rather than per frame.
        if !is_codec_supported(target) {
            return Err(TranslateError::Unsupported {
                from: "slin",
                to: target.name(),
                codec: target.name(),
            }
            .into());
        }
        let to = target.rate();
        let audio: Arc<[i16]> = if file.rate == to {
            Arc::clone(&file.samples)
        } else {
            resample_all(file.rate, to, &file.samples)?.into()
        };
        let frame_samples = to as usize / 50;
        Ok(Playback {
            target,
            src_rate: file.rate,
            src_len: file.samples.len(),
            audio,
            pos: 0,
            frame_samples,
            ts: 0,
            seq: 0,
            out: BytesMut::with_capacity(frame_samples * 2 * 16),
        })
    }

    pub fn format(&self) -> Format {
        self.target
    }
    /// The file's own sample rate.
    pub fn file_rate(&self) -> u32 {
        self.src_rate
    }
    /// Length in samples of the file's rate.
    pub fn len_samples(&self) -> u64 {
        self.src_len as u64
    }
    pub fn duration_ms(&self) -> u64 {
        self.src_len as u64 * 1000 / self.src_rate.max(1) as u64
    }
    /// Position in samples of the file's rate (AGI `endpos`).
    pub fn position_samples(&self) -> u64 {
        let to = self.target.rate() as u64;
        ((self.pos as u64 * self.src_rate as u64) / to).min(self.src_len as u64)
    }
    pub fn position_ms(&self) -> u64 {
        self.pos as u64 * 1000 / self.target.rate() as u64
    }
    pub fn is_finished(&self) -> bool {
        self.pos >= self.audio.len()
    }

    /// Seek by `ms` milliseconds (negative: back), clamped to the file.
    pub fn skip_ms(&mut self, ms: i64) {
        let delta = ms as i128 * self.target.rate() as i128 / 1000;
        let p = (self.pos as i128 + delta).clamp(0, self.audio.len() as i128);
        self.pos = p as usize;
    }

    /// Seek to a position given in samples of the file's rate (AGI `sample offset`).
    pub fn seek_samples(&mut self, file_samples: u64) {
        let p = file_samples as u128 * self.target.rate() as u128 / self.src_rate.max(1) as u128;
        self.pos = (p.min(self.audio.len() as u128)) as usize;
    }

    /// The next 20 ms frame (the last may be shorter), or `None` at the end.
    /// Frame timestamps count the samples played, continuous across seeks.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.is_finished() {
            return None;
        }
        let end = (self.pos + self.frame_samples).min(self.audio.len());
        let chunk = &self.audio[self.pos..end];
        let n = chunk.len();
        let data: Bytes = match encode_into(self.target, chunk, &mut self.out) {
            Ok(()) => self.out.split().freeze(),
            // Unreachable: unsupported targets are refused in `new`.
            Err(_) => return None,
        };
        self.pos = end;
        let f = Frame {
            format: self.target,
            data,
            ts: self.ts,
            seq: self.seq,
        };
        self.ts = self.ts.wrapping_add(n as u32);
        self.seq = self.seq.wrapping_add(1);
        Some(f)
    }
}

/// Where a recording goes.
#[derive(Debug)]
enum RecKind {
    /// Canonical 44-byte-header PCM 16 WAV; header patched on finish.
    Wav,
    Raw,
}

/// Writes audio to `.wav` (16-bit PCM), `.sln*`, `.ulaw` or `.alaw`, chosen by extension.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    kind: RecKind,
    /// The format of the bytes stored (slin at the file rate, ulaw or alaw).
    native: Format,
    rate: u32,
    w: Option<BufWriter<File>>,
    /// Bytes of audio data in the file (excluding any header).
    data_bytes: u64,
    translator: Option<Translator>,
    scratch: BytesMut,
}

const WAV_HEADER_LEN: u64 = 44;

fn wav_header(rate: u32, data_bytes: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36u32.saturating_add(data_bytes)).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&1u16.to_le_bytes()); // mono
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * 2).to_le_bytes());
    h[32..34].copy_from_slice(&2u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

impl Recorder {
    /// Create (truncate) a recording; `.wav` records at 8 kHz, `.wav16` at 16 kHz, raw types
    /// at their own rate.
    pub fn create(path: impl AsRef<Path>) -> Result<Recorder, FileError> {
        let path = path.as_ref();
        let rate = Recorder::default_rate(path)?;
        Recorder::create_with_rate(path, rate)
    }

    fn default_rate(path: &Path) -> Result<u32, FileError> {
        Ok(match SoundKind::of_path(path)? {
            SoundKind::Wav => {
                let wav16 = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.eq_ignore_ascii_case("wav16"));
                if wav16 {
                    16000
                } else {
                    8000
                }
            }
            SoundKind::Slin(r) => r,
            SoundKind::Ulaw | SoundKind::Alaw => 8000,
        })
    }

    fn native_for(path: &Path, rate: u32) -> Result<(RecKind, Format), FileError> {
        let bad_rate = || FileError::BadRate {
            path: path.to_path_buf(),
            rate,
        };
        Ok(match SoundKind::of_path(path)? {
            SoundKind::Wav => (
                RecKind::Wav,
                Format::slin_for_rate(rate).ok_or_else(bad_rate)?,
            ),
            SoundKind::Slin(r) => (RecKind::Raw, Format::slin_for_rate(r).ok_or_else(bad_rate)?),
            SoundKind::Ulaw => (RecKind::Raw, Format::Ulaw),
            SoundKind::Alaw => (RecKind::Raw, Format::Alaw),
        })
    }

    /// Create a recording; `rate` applies to WAV (8000, 16000 or 48000). Raw types keep the
    /// rate their extension implies.
    pub fn create_with_rate(path: impl AsRef<Path>, rate: u32) -> Result<Recorder, FileError> {
        let path = path.as_ref();
        let (kind, native) = Recorder::native_for(path, rate)?;
        let mut f = File::create(path).map_err(io_err(path))?;
        if let RecKind::Wav = kind {
            f.write_all(&wav_header(native.rate(), 0))
                .map_err(io_err(path))?;
        }
        Ok(Recorder::build(path, kind, native, f, 0))
    }

    /// Open for appending (RECORD FILE / Record `a` option), creating the file if missing.
    /// An existing WAV must be 16-bit mono PCM; its rate is kept.
    pub fn append(path: impl AsRef<Path>) -> Result<Recorder, FileError> {
        let path = path.as_ref();
        if !path.exists() {
            return Recorder::create(path);
        }
        let default_rate = Recorder::default_rate(path)?;
        match SoundKind::of_path(path)? {
            SoundKind::Wav => {
                let mut f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(io_err(path))?;
                let mut head = Vec::new();
                (&mut f)
                    .take(4096)
                    .read_to_end(&mut head)
                    .map_err(io_err(path))?;
                let bad = |reason: &str| FileError::Append {
                    path: path.to_path_buf(),
                    reason: reason.to_string(),
                };
                if head.len() < 44 || &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
                    return Err(bad("not a RIFF/WAVE file"));
                }
                let (tag, ch, rate, bits) = (
                    le16(&head, 20),
                    le16(&head, 22),
                    le32(&head, 24),
                    le16(&head, 34),
                );
                if &head[12..16] != b"fmt "
                    || tag != Some(1)
                    || ch != Some(1)
                    || bits != Some(16)
                    || &head[36..40] != b"data"
                {
                    return Err(bad(
                        "only canonical 16-bit mono PCM WAV files can be appended to",
                    ));
                }
                let rate = rate.unwrap_or(0);
                let native =
                    Format::slin_for_rate(rate).ok_or_else(|| bad("unsupported sample rate"))?;
                let len = f.metadata().map_err(io_err(path))?.len();
                let data = len.saturating_sub(WAV_HEADER_LEN) & !1;
                f.set_len(WAV_HEADER_LEN + data).map_err(io_err(path))?;
                f.seek(SeekFrom::End(0)).map_err(io_err(path))?;
                Ok(Recorder::build(path, RecKind::Wav, native, f, data))
            }
            _ => {
                let (kind, native) = Recorder::native_for(path, default_rate)?;
                let f = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(io_err(path))?;
                let len = f.metadata().map_err(io_err(path))?.len();
                Ok(Recorder::build(path, kind, native, f, len))
            }
        }
    }

    fn build(path: &Path, kind: RecKind, native: Format, f: File, data_bytes: u64) -> Recorder {
        Recorder {
            path: path.to_path_buf(),
            kind,
            native,
            rate: native.rate(),
            w: Some(BufWriter::with_capacity(16 * 1024, f)),
            data_bytes,
            translator: None,
            scratch: BytesMut::with_capacity(4096),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The rate audio is stored at.
    pub fn rate(&self) -> u32 {
        self.rate
    }
    /// The format of the stored bytes.
    pub fn stored_format(&self) -> Format {
        self.native
    }
    fn bytes_per_sample(&self) -> u64 {
        if self.native.is_slin() {
            2
        } else {
            1
        }
    }
    /// Samples in the file so far (including appended-to content).
    pub fn samples_written(&self) -> u64 {
        self.data_bytes / self.bytes_per_sample()
    }
    pub fn duration_ms(&self) -> u64 {
        self.samples_written() * 1000 / self.rate as u64
    }

    fn write_bytes(&mut self, b: &[u8]) -> Result<(), FileError> {
        let w = self.w.as_mut().ok_or_else(|| FileError::Io {
            path: self.path.clone(),
            source: std::io::Error::other("recorder already finished"),
        })?;
        w.write_all(b).map_err(|source| FileError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.data_bytes += b.len() as u64;
        Ok(())
    }

    /// Write samples at the recorder's rate.
    pub fn write_samples(&mut self, samples: &[i16]) -> Result<(), FileError> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        encode_into(self.native, samples, &mut buf)?;
        let r = self.write_bytes(&buf);
        self.scratch = buf;
        r
    }

    /// Write a frame in any supported format (translated to the stored format).
    pub fn write_frame(&mut self, f: &Frame) -> Result<(), FileError> {
        if f.format == self.native {
            return self.write_bytes(&f.data);
        }
        let need_new = self
            .translator
            .as_ref()
            .is_none_or(|t| t.from() != f.format);
        if need_new {
            self.translator = Some(Translator::new(f.format, self.native)?);
        }
        let out = match self.translator.as_mut() {
            Some(t) => t.convert(f),
            None => return Ok(()),
        };
        self.write_bytes(&out.data)
    }

    fn finalize(&mut self, trim_bytes: u64) -> Result<u64, FileError> {
        let Some(w) = self.w.take() else {
            return Ok(self.samples_written());
        };
        let path = self.path.clone();
        let mut f = w.into_inner().map_err(|e| FileError::Io {
            path: path.clone(),
            source: e.into_error(),
        })?;
        if trim_bytes > 0 {
            self.data_bytes = self.data_bytes.saturating_sub(trim_bytes);
            let header = if let RecKind::Wav = self.kind {
                WAV_HEADER_LEN
            } else {
                0
            };
            f.set_len(header + self.data_bytes).map_err(io_err(&path))?;
        }
        if let RecKind::Wav = self.kind {
            let data = u32::try_from(self.data_bytes).unwrap_or(u32::MAX - 36);
            f.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
            f.write_all(&wav_header(self.rate, data))
                .map_err(io_err(&path))?;
        }
        f.flush().map_err(io_err(&path))?;
        Ok(self.samples_written())
    }

    /// Flush and close (patching the WAV header); returns the samples in the file.
    pub fn finish(mut self) -> Result<u64, FileError> {
        self.finalize(0)
    }

    /// Like `finish`, removing the last `trim_ms` (e.g. the silence that ended a recording,
    /// as Record and RECORD FILE do).
    pub fn finish_trimmed(mut self, trim_ms: u64) -> Result<u64, FileError> {
        let bytes = trim_ms * self.rate as u64 / 1000 * self.bytes_per_sample();
        self.finalize(bytes)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // A recorder dropped without finish (hangup) still leaves a valid file.
        let _ = self.finalize(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, [0u8; 4]).unwrap();
    }

    fn sine(rate: u32, freq: f64, amp: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (std::f64::consts::TAU * freq * i as f64 / rate as f64).sin()) as i16)
            .collect()
    }

    #[test]
    fn lookup_order() {
        let t = tempfile::tempdir().unwrap();
        let d1 = t.path().join("s1");
        let d2 = t.path().join("s2");
        let dirs = vec![d1.clone(), d2.clone()];
        // nothing yet
        assert_eq!(find_sound(&dirs, "en", "hello"), None);
        // no-language file in d2
        touch(&d2.join("hello.ulaw"));
        assert_eq!(
            find_sound(&dirs, "fr", "hello"),
            Some(d2.join("hello.ulaw"))
        );
        // "en" fallback comes after no-language
        touch(&d1.join("en/hello.wav"));
        assert_eq!(
            find_sound(&dirs, "fr", "hello"),
            Some(d2.join("hello.ulaw"))
        );
        assert_eq!(
            find_sound(&dirs, "en", "hello"),
            Some(d1.join("en/hello.wav"))
        );
        assert_eq!(find_sound(&dirs, "", "hello"), Some(d2.join("hello.ulaw")));
        // the language itself wins, in any dir
        touch(&d2.join("fr/hello.alaw"));
        assert_eq!(
            find_sound(&dirs, "fr", "hello"),
            Some(d2.join("fr/hello.alaw"))
        );
        // dialect falls back to the base language
        assert_eq!(
            find_sound(&dirs, "fr_CA", "hello"),
            Some(d2.join("fr/hello.alaw"))
        );
        touch(&d1.join("fr_CA/hello.sln"));
        assert_eq!(
            find_sound(&dirs, "fr_CA", "hello"),
            Some(d1.join("fr_CA/hello.sln"))
        );
        // extension preference: sln16 > wav > sln > ulaw > alaw (gsm never)
        touch(&d1.join("en/hello.sln16"));
        touch(&d1.join("en/hello.gsm"));
        assert_eq!(
            find_sound(&dirs, "en", "hello"),
            Some(d1.join("en/hello.sln16"))
        );
        touch(&d1.join("en/only.gsm"));
        assert_eq!(find_sound(&dirs, "en", "only"), None);
        // explicit extension
        assert_eq!(
            find_sound(&dirs, "en", "hello.wav"),
            Some(d1.join("en/hello.wav"))
        );
        assert_eq!(find_sound(&dirs, "en", "hello.alaw"), None);
        // subdirectories in the name
        touch(&d2.join("en/digits/1.wav"));
        assert_eq!(
            find_sound(&dirs, "de", "digits/1"),
            Some(d2.join("en/digits/1.wav"))
        );
        // absolute
        let abs = t.path().join("custom/greeting");
        touch(&abs.with_extension("sln"));
        assert_eq!(
            find_sound(&[], "en", abs.to_str().unwrap()),
            Some(abs.with_extension("sln"))
        );
        let abs_ext = abs.with_extension("sln");
        assert_eq!(
            find_sound(&[], "en", abs_ext.to_str().unwrap()),
            Some(abs_ext.clone())
        );
        assert_eq!(find_sound(&dirs, "en", ""), None);
    }

    #[test]
    fn language_order() {
        let l: Vec<_> = language_candidates("pt_BR_x").into_iter().collect();
        assert_eq!(
            l,
            vec![
                Some("pt_BR_x".into()),
                Some("pt_BR".into()),
                Some("pt".into()),
                None,
                Some("en".into())
            ]
        );
        assert_eq!(language_candidates("en"), vec![Some("en".into()), None]);
        assert_eq!(language_candidates(""), vec![None, Some("en".into())]);
    }

    #[test]
    fn wav_decode_generated_with_hound() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("tone.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&p, spec).unwrap();
        let s = sine(16000, 500.0, 12000.0, 16000);
        for v in &s {
            w.write_sample(*v).unwrap();
        }
        w.finalize().unwrap();
        let f = SoundFile::open(&p).unwrap();
        assert_eq!(f.rate(), 16000);
        assert_eq!(f.samples(), &s[..]);
        assert_eq!(f.duration_ms(), 1000);
        // stereo 8-bit is downmixed
        let p2 = t.path().join("st.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 8,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&p2, spec).unwrap();
        for _ in 0..80 {
            w.write_sample(64i8).unwrap();
            w.write_sample(0i8).unwrap();
        }
        w.finalize().unwrap();
        let f = SoundFile::open(&p2).unwrap();
        assert_eq!(f.len(), 80);
        assert!(
            f.samples().iter().all(|v| (*v - 8192).abs() <= 1),
            "{:?}",
            &f.samples()[..4]
        );
    }

    fn law_wav(tag: u16, fmt_len: u32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(4 + 8 + fmt_len + 8 + data.len() as u32).to_le_bytes());
        v.extend_from_slice(b"WAVE");
        v.extend_from_slice(b"fmt ");
        v.extend_from_slice(&fmt_len.to_le_bytes());
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&8000u32.to_le_bytes());
        v.extend_from_slice(&8000u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&8u16.to_le_bytes());
        if fmt_len == 18 {
            v.extend_from_slice(&0u16.to_le_bytes());
        }
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn law_wavs() {
        let t = tempfile::tempdir().unwrap();
        let s = sine(8000, 300.0, 9000.0, 800);
        let u: Vec<u8> = s.iter().map(|v| g711::linear_to_ulaw(*v)).collect();
        let a: Vec<u8> = s.iter().map(|v| g711::linear_to_alaw(*v)).collect();
        for fmt_len in [18u32, 16] {
            let pu = t.path().join(format!("u{fmt_len}.wav"));
            fs::write(&pu, law_wav(7, fmt_len, &u)).unwrap();
            let f = SoundFile::open(&pu).unwrap();
            assert_eq!(f.rate(), 8000);
            let want: Vec<i16> = u.iter().map(|b| g711::ulaw_to_linear(*b)).collect();
            assert_eq!(f.samples(), &want[..], "ulaw fmt {fmt_len}");
            let pa = t.path().join(format!("a{fmt_len}.wav"));
            fs::write(&pa, law_wav(6, fmt_len, &a)).unwrap();
            let f = SoundFile::open(&pa).unwrap();
            let want: Vec<i16> = a.iter().map(|b| g711::alaw_to_linear(*b)).collect();
            assert_eq!(f.samples(), &want[..], "alaw fmt {fmt_len}");
        }
        // unfinalised (data size 0) recording is read to EOF by the built-in reader
        let mut broken = law_wav(7, 16, &u);
        let n = broken.len();
        broken[n - u.len() - 4..n - u.len()].copy_from_slice(&0u32.to_le_bytes());
        let (rate, v) = parse_wav(&broken).unwrap();
        assert_eq!((rate, v.len()), (8000, 800));
        // garbage is an error, not a panic
        let pg = t.path().join("g.wav");
        fs::write(&pg, b"RIFF\x04\0\0\0WAVEjunk").unwrap();
        assert!(matches!(
            SoundFile::open(&pg),
            Err(FileError::BadWav { .. })
        ));
        assert!(parse_wav(b"RIFF").is_err());
        assert!(parse_wav(&law_wav(2, 16, &u)).is_err()); // ADPCM
        assert!(matches!(
            SoundFile::open(t.path().join("x.mp3")),
            Err(FileError::UnsupportedType { .. })
        ));
        assert!(matches!(
            SoundFile::open(t.path().join("missing.wav")),
            Err(FileError::Io { .. })
        ));
        assert!(matches!(
            SoundFile::open(t.path().join("missing.sln")),
            Err(FileError::Io { .. })
        ));
    }

    #[test]
    fn raw_files() {
        let t = tempfile::tempdir().unwrap();
        let s = sine(16000, 700.0, 5000.0, 320);
        let mut b = Vec::new();
        for v in &s {
            b.extend_from_slice(&v.to_le_bytes());
        }
        fs::write(t.path().join("a.sln16"), &b).unwrap();
        let f = SoundFile::open(t.path().join("a.sln16")).unwrap();
        assert_eq!((f.rate(), f.samples()), (16000, &s[..]));
        fs::write(t.path().join("a.ul"), [0xFFu8; 10]).unwrap();
        let f = SoundFile::open(t.path().join("a.ul")).unwrap();
        assert_eq!((f.rate(), f.samples()), (8000, &[0i16; 10][..]));
        fs::write(t.path().join("a.alaw"), [0xD5u8; 10]).unwrap();
        assert_eq!(
            SoundFile::open(t.path().join("a.alaw")).unwrap().samples(),
            &[8i16; 10]
        );
    }

    #[test]
    fn playback_frames_seek_and_position() {
        let file = SoundFile::from_samples(8000, sine(8000, 400.0, 8000.0, 8000 + 80));
        let mut p = Playback::new(&file, Format::Ulaw).unwrap();
        assert_eq!(p.duration_ms(), 1010);
        let f = p.next_frame().unwrap();
        assert_eq!(
            (f.format, f.data.len(), f.ts, f.seq),
            (Format::Ulaw, 160, 0, 0)
        );
        assert_eq!(p.position_samples(), 160);
        p.skip_ms(500);
        assert_eq!(p.position_samples(), 4160);
        p.skip_ms(-10_000);
        assert_eq!(p.position_samples(), 0);
        let f = p.next_frame().unwrap();
        assert_eq!((f.ts, f.seq), (160, 1), "timestamps continue across seeks");
        p.seek_samples(7900);
        let mut sizes = Vec::new();
        while let Some(f) = p.next_frame() {
            sizes.push(f.samples());
        }
        assert_eq!(sizes, vec![160, 20]);
        assert!(p.is_finished());
        assert_eq!(p.position_samples(), 8080);
        p.skip_ms(100);
        assert_eq!(p.position_samples(), 8080);

        // 8 kHz file played as slin16: 320-sample frames, positions still in file samples
        let mut p = Playback::new(&file, Format::Slin16).unwrap();
        let f = p.next_frame().unwrap();
        assert_eq!(f.samples(), 320);
        assert_eq!(p.position_samples(), 160);
        assert_eq!(p.position_ms(), 20);
        let mut n = 1;
        while p.next_frame().is_some() {
            n += 1;
        }
        assert_eq!(n, 51);
        assert!(Playback::new(&file, Format::G722).is_err());
    }

    #[test]
    fn playback_of_asterisk_sound() {
        let dir = PathBuf::from("/usr/share/asterisk/sounds");
        if !dir.join("en").is_dir() {
            eprintln!("asterisk sounds not installed; skipping");
            return;
        }
        let Some(path) = find_sound(&[dir], "en", "demo-congrats").or_else(|| {
            find_sound(
                &[PathBuf::from("/usr/share/asterisk/sounds")],
                "en",
                "vm-goodbye",
            )
        }) else {
            eprintln!("no known prompt found; skipping");
            return;
        };
        let f = SoundFile::open(&path).unwrap();
        assert_eq!(f.rate(), 8000);
        assert!(f.duration_ms() > 300, "{path:?}: {} ms", f.duration_ms());
        assert!(
            crate::media::energy::rms(f.samples()) > 100.0,
            "speech is not silent"
        );
        let mut p = Playback::new(&f, Format::Alaw).unwrap();
        let mut total = 0;
        while let Some(fr) = p.next_frame() {
            total += fr.samples();
        }
        assert_eq!(total, f.len());
    }

    #[test]
    fn recorder_formats_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let s = sine(8000, 440.0, 10000.0, 800);
        let frames: Vec<Frame> = s
            .chunks(160)
            .map(|c| Frame::from_slin(Format::Slin8, c))
            .collect();
        for name in ["r.wav", "r.sln", "r.ulaw", "r.alaw"] {
            let p = t.path().join(name);
            let mut r = Recorder::create(&p).unwrap();
            for f in &frames {
                r.write_frame(f).unwrap();
            }
            assert_eq!(r.samples_written(), 800);
            assert_eq!(r.finish().unwrap(), 800);
            let back = SoundFile::open(&p).unwrap();
            assert_eq!((back.rate(), back.len()), (8000, 800), "{name}");
            let err: i64 = back
                .samples()
                .iter()
                .zip(&s)
                .map(|(a, b)| (*a as i64 - *b as i64).abs())
                .max()
                .unwrap();
            assert!(err < 400, "{name}: max error {err}");
        }
        // the WAV is readable by hound too
        let rd = hound::WavReader::open(t.path().join("r.wav")).unwrap();
        assert_eq!(rd.spec().sample_rate, 8000);
        assert_eq!(rd.len(), 800);
    }

    #[test]
    fn recorder_wav16_translation_append_trim() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("rec.wav");
        let mut r = Recorder::create_with_rate(&p, 16000).unwrap();
        assert_eq!(r.stored_format(), Format::Slin16);
        // µ-law frames are decoded and upsampled to 16 kHz
        for _ in 0..10 {
            let f = Frame::new(Format::Ulaw, Bytes::from(vec![0xFFu8; 160]));
            r.write_frame(&f).unwrap();
        }
        assert_eq!(r.samples_written(), 3200);
        r.write_samples(&[1000; 320]).unwrap();
        assert_eq!(r.duration_ms(), 220);
        assert_eq!(r.finish_trimmed(20).unwrap(), 3200);
        let f = SoundFile::open(&p).unwrap();
        assert_eq!((f.rate(), f.len()), (16000, 3200));
        // append keeps the rate and adds
        let mut r = Recorder::append(&p).unwrap();
        assert_eq!(r.rate(), 16000);
        r.write_samples(&[7; 160]).unwrap();
        drop(r); // dropped without finish: header still patched
        let f = SoundFile::open(&p).unwrap();
        assert_eq!(f.len(), 3360);
        assert_eq!(f.samples()[3359], 7);
        // raw append
        let pr = t.path().join("a.sln");
        let mut r = Recorder::append(&pr).unwrap();
        r.write_samples(&[1, 2]).unwrap();
        r.finish().unwrap();
        let mut r = Recorder::append(&pr).unwrap();
        assert_eq!(r.samples_written(), 2);
        r.write_samples(&[3]).unwrap();
        r.finish().unwrap();
        assert_eq!(SoundFile::open(&pr).unwrap().samples(), &[1, 2, 3]);
        // errors
        assert!(matches!(
            Recorder::create(t.path().join("x.mp3")),
            Err(FileError::UnsupportedType { .. })
        ));
        assert!(matches!(
            Recorder::create_with_rate(t.path().join("x.wav"), 11025),
            Err(FileError::BadRate { .. })
        ));
        let mut r = Recorder::create(t.path().join("g.sln")).unwrap();
        let g = Frame::new(Format::G722, Bytes::from_static(&[0; 80]));
        assert!(matches!(r.write_frame(&g), Err(FileError::Translate(_))));
        fs::write(t.path().join("bad.wav"), b"nope").unwrap();
        assert!(matches!(
            Recorder::append(t.path().join("bad.wav")),
            Err(FileError::Append { .. })
        ));
        let w16 = t.path().join("x.wav16");
        let r = Recorder::create(&w16).unwrap();
        assert_eq!(r.rate(), 16000);
    }
}
