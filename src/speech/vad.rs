//! Voice activity detection and endpointing for the local recognizers.
//!
//! Two layers:
//! - [`Endpointer`]: the pure state machine over per-frame voiced/unvoiced decisions. Time is
//!   the audio itself (the sum of the frame durations it was told about), so it is tested with
//!   synthetic decisions and never reads a clock. It finds the speech onset (a minimum amount of
//!   voiced audio, so clicks do not count), a speculative pause point (to decode before the endpoint), the
//!   endpoint (trailing silence), the no-input timeout and the maximum utterance length.
//! - [`Vad`]: a detector producing those decisions on chunks of 8 kHz or 16 kHz signed-linear
//!   audio, whatever the size of the frames it is given: webrtc-vad (libfvad, 20 ms chunks, the
//!   default) or Silero VAD through ONNX Runtime ([`crate::speech::silero`], 32 ms chunks). The
//!   endpointer is told each chunk's duration, so its timers mean the same with either.
//!
//! libfvad's detector is a plain heap struct without globals or thread-locals, but the
//! `webrtc_vad::Vad` wrapper holds a raw pointer and is therefore not `Send`. A recognizer
//! session is `Send` (it moves with its channel task between runtime threads), so the detector
//! is wrapped in [`SendVad`]; see the SAFETY note there.

use crate::speech::silero::{SileroDetector, SileroError};
use webrtc_vad::{SampleRate, VadMode};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VadError {
    #[error("VAD supports 8000 and 16000 Hz audio, not {0} Hz")]
    UnsupportedRate(u32),
    #[error("VAD aggressiveness must be 0..=3, not {0}")]
    BadAggressiveness(u8),
    #[error("{0}")]
    Silero(#[from] SileroError),
}

/// Which detector a [`Vad`] runs (`vad = webrtc|silero` in speech.conf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VadKind {
    #[default]
    Webrtc,
    Silero,
}

impl VadKind {
    pub fn parse(s: &str) -> Result<VadKind, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "webrtc" => Ok(VadKind::Webrtc),
            "silero" => Ok(VadKind::Silero),
            _ => Err(format!("unknown vad '{}' (webrtc or silero)", s.trim())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VadKind::Webrtc => "webrtc",
            VadKind::Silero => "silero",
        }
    }
}

impl std::fmt::Display for VadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Endpointing parameters, all in milliseconds of audio. A zero disables a timer
/// (`no_input_ms`, `max_utterance_ms`, `speculative_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Voiced audio needed before speech counts as started (ignores clicks).
    pub min_speech_ms: u32,
    /// Unvoiced gap tolerated while accumulating `min_speech_ms`; a longer gap starts over.
    pub onset_gap_ms: u32,
    /// Trailing silence that ends the utterance.
    pub endpoint_ms: u32,
    /// No speech onset within this time from the start: give up (no input).
    pub no_input_ms: u32,
    /// Utterances are cut at this length (from the speech start).
    pub max_utterance_ms: u32,
    /// Trailing silence after which a speculative decode may start (before the endpoint).
    pub speculative_ms: u32,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            min_speech_ms: 80,
            onset_gap_ms: 40,
            endpoint_ms: 500,
            no_input_ms: 5000,
            max_utterance_ms: 15000,
            speculative_ms: 200,
        }
    }
}

/// Why an utterance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// `endpoint_ms` of trailing silence.
    Silence,
    /// `max_utterance_ms` reached while the caller was still talking.
    MaxLength,
}

/// What the endpointer decided after a frame. Times are audio milliseconds since the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech started at `speech_start_ms`; detected at `at_ms` (barge-in point).
    Onset { speech_start_ms: u64, at_ms: u64 },
    /// `speculative_ms` of silence after speech: a good moment to decode what was heard.
    Pause { speech_end_ms: u64 },
    /// Speech resumed after a `Pause`: drop the speculative work.
    Resume,
    /// The utterance is complete; it spans `speech_start_ms..speech_end_ms`.
    Endpoint {
        speech_start_ms: u64,
        speech_end_ms: u64,
        reason: EndReason,
    },
    /// No speech before `no_input_ms`.
    NoInput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Speech { start_ms: u64 },
    Finished,
}

/// The endpointing state machine (pure logic, audio time).
#[derive(Debug, Clone)]
pub struct Endpointer {
    cfg: EndpointConfig,
    now_ms: u64,
    phase: Phase,
    /// Waiting: voiced milliseconds accumulated towards an onset, the gap since the last voiced
    /// frame, and where the accumulating run started.
    voiced_ms: u32,
    gap_ms: u32,
    run_start_ms: u64,
    /// Speech: end of the last voiced frame.
    last_voiced_end_ms: u64,
    paused: bool,
}

impl Endpointer {
    pub fn new(cfg: EndpointConfig) -> Endpointer {
        Endpointer {
            cfg,
            now_ms: 0,
            phase: Phase::Waiting,
            voiced_ms: 0,
            gap_ms: 0,
            run_start_ms: 0,
            last_voiced_end_ms: 0,
            paused: false,
        }
    }

    /// Start over (a new recognition), keeping the configuration.
    pub fn reset(&mut self) {
        *self = Endpointer::new(self.cfg);
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    /// Change the parameters mid-recognition (`SPEECH_ENGINE(endpoint_ms)=...`); they apply
    /// from the next frame.
    pub fn set_config(&mut self, cfg: EndpointConfig) {
        self.cfg = cfg;
    }

    /// Audio time consumed so far.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn in_speech(&self) -> bool {
        matches!(self.phase, Phase::Speech { .. })
    }

    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Start of the current utterance, once speech was detected.
    pub fn speech_start_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::Speech { start_ms } => Some(start_ms),
            _ => None,
        }
    }

    /// Feed one frame's decision. `frame_ms` is its duration. At most one event per frame.
    pub fn step(&mut self, voiced: bool, frame_ms: u32) -> Option<VadEvent> {
        let start = self.now_ms;
        self.now_ms += u64::from(frame_ms);
        let end = self.now_ms;
        match self.phase {
            Phase::Finished => None,
            Phase::Waiting => {
                if voiced {
                    if self.voiced_ms == 0 {
                        self.run_start_ms = start;
                    }
                    self.voiced_ms += frame_ms;
                    self.gap_ms = 0;
                    if self.voiced_ms >= self.cfg.min_speech_ms.max(1) {
                        self.phase = Phase::Speech {
                            start_ms: self.run_start_ms,
                        };
                        self.last_voiced_end_ms = end;
                        self.paused = false;
                        return Some(VadEvent::Onset {
                            speech_start_ms: self.run_start_ms,
                            at_ms: end,
                        });
                    }
                } else if self.voiced_ms > 0 {
                    self.gap_ms += frame_ms;
                    if self.gap_ms > self.cfg.onset_gap_ms {
                        self.voiced_ms = 0;
                        self.gap_ms = 0;
                    }
                }
                if self.cfg.no_input_ms > 0 && end >= u64::from(self.cfg.no_input_ms) {
                    self.phase = Phase::Finished;
                    return Some(VadEvent::NoInput);
                }
                None
            }
            Phase::Speech { start_ms } => {
                if voiced {
                    self.last_voiced_end_ms = end;
                }
                if self.cfg.max_utterance_ms > 0
                    && end - start_ms >= u64::from(self.cfg.max_utterance_ms)
                {
                    self.phase = Phase::Finished;
                    return Some(VadEvent::Endpoint {
                        speech_start_ms: start_ms,
                        speech_end_ms: self.last_voiced_end_ms,
                        reason: EndReason::MaxLength,
                    });
                }
                if voiced {
                    if self.paused {
                        self.paused = false;
                        return Some(VadEvent::Resume);
                    }
                    return None;
                }
                let silence = end - self.last_voiced_end_ms;
                if silence >= u64::from(self.cfg.endpoint_ms) {
                    self.phase = Phase::Finished;
                    return Some(VadEvent::Endpoint {
                        speech_start_ms: start_ms,
                        speech_end_ms: self.last_voiced_end_ms,
                        reason: EndReason::Silence,
                    });
                }
                if self.cfg.speculative_ms > 0
                    && !self.paused
                    && silence >= u64::from(self.cfg.speculative_ms)
                {
                    self.paused = true;
                    return Some(VadEvent::Pause {
                        speech_end_ms: self.last_voiced_end_ms,
                    });
                }
                None
            }
        }
    }
}

/// `webrtc_vad::Vad` made `Send`.
///
/// SAFETY: the wrapped pointer is a libfvad instance: a heap struct owned exclusively by this
/// value, with no global or thread-local state in libfvad (checked in webrtc-vad 0.4.0's
/// bundled sources). Moving it to another thread is sound; it is never shared (`Sync` is not
/// implemented) and every use goes through `&mut self`.
pub struct SendVad(webrtc_vad::Vad);
unsafe impl Send for SendVad {}

impl std::fmt::Debug for SendVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendVad")
    }
}

/// Chunk length the detector runs on.
pub const VAD_CHUNK_MS: u32 = 20;

fn sample_rate(rate: u32) -> Result<SampleRate, VadError> {
    match rate {
        8000 => Ok(SampleRate::Rate8kHz),
        16000 => Ok(SampleRate::Rate16kHz),
        r => Err(VadError::UnsupportedRate(r)),
    }
}

fn vad_mode(aggressiveness: u8) -> Result<VadMode, VadError> {
    Ok(match aggressiveness {
        0 => VadMode::Quality,
        1 => VadMode::LowBitrate,
        2 => VadMode::Aggressive,
        3 => VadMode::VeryAggressive,
        a => return Err(VadError::BadAggressiveness(a)),
    })
}

/// The per-chunk classifier behind a [`Vad`].
#[derive(Debug)]
enum Detector {
    Webrtc(SendVad),
    Silero(Box<SileroDetector>),
}

/// A detector (webrtc-vad or Silero) + [`Endpointer`], fed with signed-linear samples of any
/// frame size.
#[derive(Debug)]
pub struct Vad {
    detector: Detector,
    rate: u32,
    /// webrtc-vad mode (kept, and validated, with Silero too: a call may set it either way).
    aggressiveness: u8,
    /// Samples of the chunk being filled (allocated once, `chunk_len` long).
    chunk: Vec<i16>,
    fill: usize,
    chunk_len: usize,
    /// Duration of one chunk, told to the endpointer per step.
    chunk_ms: u32,
    endpointer: Endpointer,
}

impl Vad {
    /// webrtc-vad: `rate` 8000 or 16000, `aggressiveness` 0 (least) ..= 3 (most restrictive).
    pub fn new(rate: u32, aggressiveness: u8, cfg: EndpointConfig) -> Result<Vad, VadError> {
        let sr = sample_rate(rate)?;
        let mode = vad_mode(aggressiveness)?;
        let chunk_len = (rate / 1000 * VAD_CHUNK_MS) as usize;
        Ok(Vad {
            detector: Detector::Webrtc(SendVad(webrtc_vad::Vad::new_with_rate_and_mode(sr, mode))),
            rate,
            aggressiveness,
            chunk: vec![0; chunk_len],
            fill: 0,
            chunk_len,
            chunk_ms: VAD_CHUNK_MS,
            endpointer: Endpointer::new(cfg),
        })
    }

    /// Silero VAD: the detector's rate and 32 ms chunks (from
    /// [`SileroModel::detector`](crate::speech::silero::SileroModel::detector)).
    pub fn silero(mut detector: SileroDetector, cfg: EndpointConfig) -> Vad {
        detector.reset();
        let rate = detector.rate();
        let chunk_len = detector.chunk_len();
        let chunk_ms = (chunk_len as u64 * 1000 / u64::from(rate)) as u32;
        Vad {
            detector: Detector::Silero(Box::new(detector)),
            rate,
            aggressiveness: 2,
            chunk: vec![0; chunk_len],
            fill: 0,
            chunk_len,
            chunk_ms,
            endpointer: Endpointer::new(cfg),
        }
    }

    pub fn kind(&self) -> VadKind {
        match self.detector {
            Detector::Webrtc(_) => VadKind::Webrtc,
            Detector::Silero(_) => VadKind::Silero,
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Duration of the chunks the detector classifies (20 ms webrtc, 32 ms Silero).
    pub fn chunk_ms(&self) -> u32 {
        self.chunk_ms
    }

    pub fn aggressiveness(&self) -> u8 {
        self.aggressiveness
    }

    /// webrtc-vad's mode; validated and remembered but without effect on Silero.
    pub fn set_aggressiveness(&mut self, aggressiveness: u8) -> Result<(), VadError> {
        let mode = vad_mode(aggressiveness)?;
        if let Detector::Webrtc(d) = &mut self.detector {
            d.0.set_mode(mode);
        }
        self.aggressiveness = aggressiveness;
        Ok(())
    }

    /// Silero's speech probability threshold (0..=1); None for webrtc-vad.
    pub fn threshold(&self) -> Option<f32> {
        match &self.detector {
            Detector::Silero(d) => Some(d.threshold()),
            Detector::Webrtc(_) => None,
        }
    }

    /// Set Silero's threshold (validated; without effect on webrtc-vad).
    pub fn set_threshold(&mut self, threshold: f32) -> Result<(), VadError> {
        match &mut self.detector {
            Detector::Silero(d) => d.set_threshold(threshold)?,
            Detector::Webrtc(_) => {
                if !(0.0..=1.0).contains(&threshold) {
                    return Err(SileroError::BadThreshold(threshold).into());
                }
            }
        }
        Ok(())
    }

    pub fn endpointer(&self) -> &Endpointer {
        &self.endpointer
    }

    pub fn endpointer_mut(&mut self) -> &mut Endpointer {
        &mut self.endpointer
    }

    /// Start a new recognition: detector history, partial chunk and endpointer cleared.
    pub fn reset(&mut self) {
        match &mut self.detector {
            Detector::Webrtc(d) => {
                // fvad_reset restores the default rate and mode: set ours again (both are
                // valid, so the crate's internal asserts cannot fire).
                d.0.reset();
                if let (Ok(sr), Ok(mode)) = (sample_rate(self.rate), vad_mode(self.aggressiveness))
                {
                    d.0.set_sample_rate(sr);
                    d.0.set_mode(mode);
                }
            }
            Detector::Silero(d) => d.reset(),
        }
        self.fill = 0;
        self.endpointer.reset();
    }

    /// Classify one complete chunk ([`chunk_ms`](Self::chunk_ms) long at `rate`).
    pub fn is_voiced(&mut self, chunk: &[i16]) -> bool {
        if chunk.len() != self.chunk_len {
            return false;
        }
        match &mut self.detector {
            Detector::Webrtc(d) => d.0.is_voice_segment(chunk).unwrap_or(false),
            Detector::Silero(d) => d.is_voiced(chunk),
        }
    }

    /// Feed samples; `on_event` is called for every endpointer event, in order.
    pub fn process(&mut self, mut samples: &[i16], mut on_event: impl FnMut(VadEvent)) {
        while !samples.is_empty() {
            let take = (self.chunk_len - self.fill).min(samples.len());
            self.chunk[self.fill..self.fill + take].copy_from_slice(&samples[..take]);
            self.fill += take;
            samples = &samples[take..];
            if self.fill == self.chunk_len {
                self.fill = 0;
                let voiced = match &mut self.detector {
                    // The chunk has exactly the length libfvad accepts, so this cannot be Err.
                    Detector::Webrtc(d) => d.0.is_voice_segment(&self.chunk).unwrap_or(false),
                    // Inference errors count as unvoiced (logged once by the detector).
                    Detector::Silero(d) => d.is_voiced(&self.chunk),
                };
                if let Some(ev) = self.endpointer.step(voiced, self.chunk_ms) {
                    on_event(ev);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a pattern of (voiced, frames) through the endpointer in 20 ms frames.
    fn run(ep: &mut Endpointer, pattern: &[(bool, usize)]) -> Vec<(u64, VadEvent)> {
        let mut out = Vec::new();
        for &(v, n) in pattern {
            for _ in 0..n {
                if let Some(e) = ep.step(v, 20) {
                    out.push((ep.now_ms(), e));
                }
            }
        }
        out
    }

    fn cfg() -> EndpointConfig {
        EndpointConfig {
            min_speech_ms: 80,
            onset_gap_ms: 40,
            endpoint_ms: 500,
            no_input_ms: 5000,
            max_utterance_ms: 15000,
            speculative_ms: 200,
        }
    }

    #[test]
    fn clicks_do_not_start_speech() {
        let mut ep = Endpointer::new(cfg());
        // Isolated 20-40 ms clicks separated by > onset_gap silence.
        let ev = run(
            &mut ep,
            &[
                (true, 1),
                (false, 5),
                (true, 2),
                (false, 5),
                (true, 3),
                (false, 10),
            ],
        );
        assert!(ev.is_empty(), "{ev:?}");
        assert!(!ep.in_speech());
    }

    #[test]
    fn onset_after_min_speech_with_start_time() {
        let mut ep = Endpointer::new(cfg());
        let ev = run(&mut ep, &[(false, 10), (true, 4)]);
        assert_eq!(
            ev,
            vec![(
                280,
                VadEvent::Onset {
                    speech_start_ms: 200,
                    at_ms: 280
                }
            )]
        );
        assert_eq!(ep.speech_start_ms(), Some(200));
    }

    #[test]
    fn short_gap_keeps_accumulating() {
        let mut ep = Endpointer::new(cfg());
        // 40 ms voiced, 40 ms gap (tolerated), 40 ms voiced -> onset at 120 ms, start 0.
        let ev = run(&mut ep, &[(true, 2), (false, 2), (true, 2)]);
        assert_eq!(
            ev,
            vec![(
                120,
                VadEvent::Onset {
                    speech_start_ms: 0,
                    at_ms: 120
                }
            )]
        );
    }

    #[test]
    fn endpoint_after_trailing_silence_with_speculative_pause() {
        let mut ep = Endpointer::new(cfg());
        let ev = run(&mut ep, &[(true, 50), (false, 30)]);
        assert_eq!(
            ev,
            vec![
                (
                    80,
                    VadEvent::Onset {
                        speech_start_ms: 0,
                        at_ms: 80
                    }
                ),
                (
                    1200,
                    VadEvent::Pause {
                        speech_end_ms: 1000
                    }
                ),
                (
                    1500,
                    VadEvent::Endpoint {
                        speech_start_ms: 0,
                        speech_end_ms: 1000,
                        reason: EndReason::Silence
                    }
                ),
            ]
        );
        assert!(ep.is_finished());
        // Nothing after the end.
        assert_eq!(ep.step(true, 20), None);
    }

    #[test]
    fn resume_after_pause_then_new_pause_and_endpoint() {
        let mut ep = Endpointer::new(cfg());
        let ev = run(&mut ep, &[(true, 10), (false, 12), (true, 5), (false, 25)]);
        let kinds: Vec<_> = ev.iter().map(|e| e.1).collect();
        assert_eq!(
            kinds,
            vec![
                VadEvent::Onset {
                    speech_start_ms: 0,
                    at_ms: 80
                },
                VadEvent::Pause { speech_end_ms: 200 },
                VadEvent::Resume,
                VadEvent::Pause { speech_end_ms: 540 },
                VadEvent::Endpoint {
                    speech_start_ms: 0,
                    speech_end_ms: 540,
                    reason: EndReason::Silence
                },
            ]
        );
        assert_eq!(ev[2].0, 460);
        assert_eq!(ev[4].0, 1040);
    }

    #[test]
    fn pause_shorter_than_speculative_is_not_reported() {
        let mut ep = Endpointer::new(cfg());
        let ev = run(&mut ep, &[(true, 10), (false, 9), (true, 10), (false, 30)]);
        assert!(!ev.iter().any(|e| e.1 == VadEvent::Resume), "{ev:?}");
    }

    #[test]
    fn speculative_disabled() {
        let mut ep = Endpointer::new(EndpointConfig {
            speculative_ms: 0,
            ..cfg()
        });
        let ev = run(&mut ep, &[(true, 10), (false, 30)]);
        assert!(!ev.iter().any(|e| matches!(e.1, VadEvent::Pause { .. })));
        assert!(ev.iter().any(|e| matches!(e.1, VadEvent::Endpoint { .. })));
    }

    #[test]
    fn no_input_timeout() {
        let mut ep = Endpointer::new(EndpointConfig {
            no_input_ms: 1000,
            ..cfg()
        });
        let ev = run(&mut ep, &[(false, 49), (true, 1), (false, 10)]);
        assert_eq!(ev, vec![(1000, VadEvent::NoInput)]);
        assert!(ep.is_finished());
    }

    #[test]
    fn no_input_disabled_waits_forever() {
        let mut ep = Endpointer::new(EndpointConfig {
            no_input_ms: 0,
            ..cfg()
        });
        let ev = run(&mut ep, &[(false, 10_000)]);
        assert!(ev.is_empty());
    }

    #[test]
    fn no_input_does_not_fire_once_speaking() {
        let mut ep = Endpointer::new(EndpointConfig {
            no_input_ms: 300,
            endpoint_ms: 2000,
            ..cfg()
        });
        let ev = run(&mut ep, &[(true, 50)]);
        assert_eq!(ev.len(), 1);
        assert!(matches!(ev[0].1, VadEvent::Onset { .. }));
    }

    #[test]
    fn max_utterance_cuts_long_speech() {
        let mut ep = Endpointer::new(EndpointConfig {
            max_utterance_ms: 2000,
            ..cfg()
        });
        let ev = run(&mut ep, &[(false, 5), (true, 200)]);
        assert_eq!(
            ev.last().copied(),
            Some((
                2100,
                VadEvent::Endpoint {
                    speech_start_ms: 100,
                    speech_end_ms: 2100,
                    reason: EndReason::MaxLength
                }
            ))
        );
    }

    #[test]
    fn live_config_change_applies() {
        let mut ep = Endpointer::new(cfg());
        run(&mut ep, &[(true, 10)]);
        ep.set_config(EndpointConfig {
            endpoint_ms: 100,
            speculative_ms: 0,
            ..cfg()
        });
        let ev = run(&mut ep, &[(false, 5)]);
        assert_eq!(
            ev,
            vec![(
                300,
                VadEvent::Endpoint {
                    speech_start_ms: 0,
                    speech_end_ms: 200,
                    reason: EndReason::Silence
                }
            )]
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut ep = Endpointer::new(cfg());
        run(&mut ep, &[(true, 10), (false, 30)]);
        assert!(ep.is_finished());
        ep.reset();
        assert_eq!(ep.now_ms(), 0);
        assert!(!ep.is_finished());
        let ev = run(&mut ep, &[(true, 4)]);
        assert_eq!(
            ev,
            vec![(
                80,
                VadEvent::Onset {
                    speech_start_ms: 0,
                    at_ms: 80
                }
            )]
        );
    }

    #[test]
    fn vad_rejects_bad_rate_and_mode() {
        assert_eq!(
            Vad::new(44100, 2, cfg()).unwrap_err(),
            VadError::UnsupportedRate(44100)
        );
        assert_eq!(
            Vad::new(8000, 7, cfg()).unwrap_err(),
            VadError::BadAggressiveness(7)
        );
    }

    /// A synthetic vowel-like signal: harmonics of 150 Hz with a slow envelope.
    fn voice(rate: u32, ms: u32) -> Vec<i16> {
        let n = (rate / 1000 * ms) as usize;
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let s: f32 = (1..=12)
                    .map(|h| (2.0 * std::f32::consts::PI * 150.0 * h as f32 * t).sin() / h as f32)
                    .sum();
                (s * 6000.0) as i16
            })
            .collect()
    }

    fn run_vad(rate: u32, frame_ms: u32) {
        let mut vad = Vad::new(
            rate,
            2,
            EndpointConfig {
                speculative_ms: 0,
                ..cfg()
            },
        )
        .unwrap();
        let mut audio = vec![0i16; (rate / 1000 * 400) as usize];
        audio.extend(voice(rate, 800));
        audio.extend(vec![0i16; (rate / 1000 * 800) as usize]);
        let mut events = Vec::new();
        let frame = (rate / 1000 * frame_ms) as usize;
        for f in audio.chunks(frame) {
            vad.process(f, |e| events.push(e));
        }
        assert!(
            matches!(events.first(), Some(VadEvent::Onset { speech_start_ms, .. }) if (380..=480).contains(speech_start_ms)),
            "{events:?}"
        );
        match events.last() {
            Some(VadEvent::Endpoint {
                speech_end_ms,
                reason: EndReason::Silence,
                ..
            }) => {
                assert!((1100..=1400).contains(speech_end_ms), "{events:?}")
            }
            other => panic!("expected endpoint, got {other:?}"),
        }
    }

    #[test]
    fn webrtc_vad_8k_20ms_frames() {
        run_vad(8000, 20);
    }

    #[test]
    fn webrtc_vad_16k_odd_frames() {
        // 30 ms frames are re-chunked into 20 ms pieces.
        run_vad(16000, 30);
    }

    #[test]
    fn vad_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Vad>();
    }
}
