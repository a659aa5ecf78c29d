//! The dialplan Speech API (Asterisk's app_speech_utils): SpeechCreate, SpeechLoadGrammar,
//! SpeechUnloadGrammar, SpeechActivateGrammar, SpeechDeactivateGrammar, SpeechStart,
//! SpeechBackground, SpeechProcessingSound, SpeechDestroy and the SPEECH* functions.
//!
//! Semantics follow Asterisk's app_speech_utils and res_speech. voxpbx additions: engines may
//! set QUIET at speech onset (barge-in, for every engine that has VAD), `SPEECH_ERROR` tells why a
//! recognition ended abnormally, and speech events are published on the bus.

use super::parse_options;
use crate::channel::{Channel, ChannelState, ReadEvent};
use crate::dialplan::pbx::{
    self, AppDef, AppExec, AppResult, FuncDef, FuncRead, FuncResult, FuncWrite,
};
use crate::dialplan::subst::split_args;
use crate::events::{Event, EventClass};
use crate::media::Frame;
use crate::speech::{ResultsType, Speech, SpeechResult, SpeechState};
use futures_util::future::BoxFuture;
use std::time::{Duration, Instant};

/// The channel datastore holding speech objects; the last created is the active one.
pub const DATASTORE: &str = "speech";

type SpeechStack = Vec<Speech>;

pub fn apps() -> Vec<AppDef> {
    vec![
        AppDef {
            name: "SpeechCreate",
            synopsis: "Create a Speech Structure",
            exec: AppExec::Async(speech_create),
        },
        AppDef {
            name: "SpeechLoadGrammar",
            synopsis: "Load a Grammar",
            exec: AppExec::Sync(load_grammar),
        },
        AppDef {
            name: "SpeechUnloadGrammar",
            synopsis: "Unload a Grammar",
            exec: AppExec::Sync(unload_grammar),
        },
        AppDef {
            name: "SpeechActivateGrammar",
            synopsis: "Activate a grammar",
            exec: AppExec::Sync(activate_grammar),
        },
        AppDef {
            name: "SpeechDeactivateGrammar",
            synopsis: "Deactivate a grammar",
            exec: AppExec::Sync(deactivate_grammar),
        },
        AppDef {
            name: "SpeechStart",
            synopsis: "Start recognizing voice in the audio stream",
            exec: AppExec::Sync(speech_start),
        },
        AppDef {
            name: "SpeechBackground",
            synopsis: "Play a sound file and wait for speech to be recognized",
            exec: AppExec::Async(speech_background),
        },
        AppDef {
            name: "SpeechProcessingSound",
            synopsis: "Change background processing sound",
            exec: AppExec::Sync(processing_sound),
        },
        AppDef {
            name: "SpeechDestroy",
            synopsis: "End speech recognition",
            exec: AppExec::Async(speech_destroy),
        },
    ]
}

pub fn funcs() -> Vec<FuncDef> {
    vec![
        FuncDef {
            name: "SPEECH",
            synopsis: "Gets information about speech recognition results",
            read: Some(FuncRead::Sync(speech_func)),
            write: None,
        },
        FuncDef {
            name: "SPEECH_SCORE",
            synopsis: "Gets the confidence score of a result",
            read: Some(FuncRead::Sync(|c, a| {
                find_result(c, a).map(|r| r.score.to_string())
            })),
            write: None,
        },
        FuncDef {
            name: "SPEECH_TEXT",
            synopsis: "Gets the recognized text of a result",
            read: Some(FuncRead::Sync(|c, a| find_result(c, a).map(|r| r.text))),
            write: None,
        },
        FuncDef {
            name: "SPEECH_GRAMMAR",
            synopsis: "Gets the matched grammar of a result if available",
            read: Some(FuncRead::Sync(|c, a| {
                find_result(c, a).map(|r| r.grammar.unwrap_or_default())
            })),
            write: None,
        },
        FuncDef {
            name: "SPEECH_ENGINE",
            synopsis: "Get or change a speech engine specific attribute",
            read: Some(FuncRead::Async(engine_get)),
            write: Some(FuncWrite::Async(engine_set)),
        },
        FuncDef {
            name: "SPEECH_RESULTS_TYPE",
            synopsis: "Sets the type of results that will be returned",
            read: None,
            write: Some(FuncWrite::Async(results_type_set)),
        },
    ]
}

/// The active speech object of a channel (used by AGI's SPEECH commands too).
pub fn speech_mut(chan: &mut Channel) -> Option<&mut Speech> {
    chan.datastores
        .get_mut(DATASTORE)
        .and_then(|d| d.downcast_mut::<SpeechStack>())
        .and_then(|s| s.last_mut())
}

fn speech_ref(chan: &Channel) -> Option<&Speech> {
    chan.datastores
        .get(DATASTORE)
        .and_then(|d| d.downcast_ref::<SpeechStack>())
        .and_then(|s| s.last())
}

/// Create a speech object on `engine` ("" = default). Sets ERROR like SpeechCreate.
pub async fn create(chan: &mut Channel, engine: &str) -> Result<(), String> {
    let e = chan.core.speech.find(engine).map_err(|e| e.to_string())?;
    let formats = [chan.native_format()];
    let sp = Speech::new(e, &formats).await.map_err(|e| e.to_string())?;
    let stack = chan
        .datastores
        .entry(DATASTORE)
        .or_insert_with(|| Box::new(SpeechStack::new()));
    if let Some(s) = stack.downcast_mut::<SpeechStack>() {
        s.push(sp);
    }
    Ok(())
}

fn speech_create<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        match create(chan, args.trim()).await {
            Ok(()) => {
                chan.vars.remove("ERROR");
            }
            Err(e) => {
                tracing::warn!("{}: SpeechCreate({}) failed: {}", chan.name, args.trim(), e);
                pbx::set_var(chan, "ERROR", "1");
                pbx::set_var(chan, "SPEECH_ERROR", &e);
            }
        }
        AppResult::Continue
    })
}

/// Resolve a grammar path: absolute, relative to the conf dir, or in the grammars dir.
pub fn grammar_path(chan: &Channel, path: &str) -> std::path::PathBuf {
    let p = std::path::PathBuf::from(path.trim());
    if p.is_absolute() || p.exists() {
        return p;
    }
    let c = chan.core.dirs.conf.join(&p);
    if c.exists() {
        return c;
    }
    chan.core.dirs.grammars.join(&p)
}

fn grammar_op(
    chan: &mut Channel,
    what: &str,
    f: impl FnOnce(&mut Speech) -> Result<(), crate::speech::SpeechError>,
) -> AppResult {
    let name = chan.name.clone();
    match speech_mut(chan) {
        None => AppResult::Hangup,
        Some(sp) => match f(sp) {
            Ok(()) => AppResult::Continue,
            Err(e) => {
                tracing::warn!("{}: {} failed: {}", name, what, e);
                AppResult::Hangup
            }
        },
    }
}

fn load_grammar(chan: &mut Channel, args: &str) -> AppResult {
    let a = split_args(args);
    if a.len() != 2 {
        tracing::warn!("SpeechLoadGrammar requires two arguments (grammar name, path)");
        return AppResult::Hangup;
    }
    let path = grammar_path(chan, &a[1]);
    grammar_op(chan, "SpeechLoadGrammar", |sp| {
        sp.session.load_grammar(a[0].trim(), &path)
    })
}

fn unload_grammar(chan: &mut Channel, args: &str) -> AppResult {
    let n = args.trim().to_string();
    grammar_op(chan, "SpeechUnloadGrammar", |sp| {
        sp.session.unload_grammar(&n)
    })
}

fn activate_grammar(chan: &mut Channel, args: &str) -> AppResult {
    let n = args.trim().to_string();
    grammar_op(chan, "SpeechActivateGrammar", |sp| {
        sp.session.activate_grammar(&n)
    })
}

fn deactivate_grammar(chan: &mut Channel, args: &str) -> AppResult {
    let n = args.trim().to_string();
    grammar_op(chan, "SpeechDeactivateGrammar", |sp| {
        sp.session.deactivate_grammar(&n)
    })
}

fn speech_start(chan: &mut Channel, _args: &str) -> AppResult {
    grammar_op(chan, "SpeechStart", |sp| sp.start())
}

fn processing_sound(chan: &mut Channel, args: &str) -> AppResult {
    let Some(sp) = speech_mut(chan) else {
        return AppResult::Hangup;
    };
    let s = args.trim();
    sp.processing_sound = if s.is_empty() || s.eq_ignore_ascii_case("none") {
        None
    } else {
        Some(s.to_string())
    };
    AppResult::Continue
}

fn speech_destroy<'a>(chan: &'a mut Channel, _args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let popped = chan
            .datastores
            .get_mut(DATASTORE)
            .and_then(|d| d.downcast_mut::<SpeechStack>())
            .and_then(|s| s.pop());
        match popped {
            Some(mut sp) => {
                sp.destroy().await;
                AppResult::Continue
            }
            None => AppResult::Hangup,
        }
    })
}

fn speech_func(chan: &mut Channel, args: &str) -> FuncResult {
    let what = args.trim().to_ascii_lowercase();
    let sp = speech_ref(chan);
    if what == "status" {
        return Ok(if sp.is_some() { "1" } else { "0" }.into());
    }
    let sp = sp.ok_or_else(String::new)?;
    let g = sp.shared.lock();
    Ok(match what.as_str() {
        "spoke" => if g.spoke { "1" } else { "0" }.to_string(),
        "results" => g.results.as_ref().map(|r| r.len()).unwrap_or(0).to_string(),
        // voxpbx extensions: the partial transcript and the error that ended a recognition.
        "partial" => g.partial.clone().unwrap_or_default(),
        "error" => g.error.clone().unwrap_or_default(),
        // voxpbx extension: end of speech -> result of the last recognition, ms.
        "latency" => g
            .timing
            .latency_ms()
            .map(|ms| ms.to_string())
            .unwrap_or_default(),
        _ => String::new(),
    })
}

/// `find_result`: "n" or "nbest/n".
fn find_result(chan: &mut Channel, args: &str) -> Result<SpeechResult, String> {
    let sp = speech_ref(chan).ok_or_else(String::new)?;
    let (nbest, n) = match args.trim().split_once('/') {
        Some((a, b)) => (
            a.trim().parse::<i32>().unwrap_or(0),
            b.trim().parse::<usize>().unwrap_or(0),
        ),
        None => (0, args.trim().parse::<usize>().unwrap_or(0)),
    };
    let g = sp.shared.lock();
    g.results
        .as_ref()
        .and_then(|r| r.iter().filter(|x| x.nbest == nbest).nth(n).cloned())
        .ok_or_else(String::new)
}

fn engine_get<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, FuncResult> {
    Box::pin(async move {
        let sp = speech_mut(chan).ok_or_else(String::new)?;
        sp.session
            .get_setting(args.trim())
            .await
            .map_err(|e| e.to_string())
    })
}

fn engine_set<'a>(
    chan: &'a mut Channel,
    args: &'a str,
    value: &'a str,
) -> BoxFuture<'a, Result<(), String>> {
    Box::pin(async move {
        let sp = speech_mut(chan).ok_or_else(String::new)?;
        if let Err(e) = sp.session.change(args.trim(), value).await {
            tracing::warn!("SPEECH_ENGINE({})={}: {}", args.trim(), value, e);
        }
        Ok(())
    })
}

fn results_type_set<'a>(
    chan: &'a mut Channel,
    _args: &'a str,
    value: &'a str,
) -> BoxFuture<'a, Result<(), String>> {
    Box::pin(async move {
        let Some(t) = ResultsType::parse(value) else {
            return Ok(());
        };
        let sp = speech_mut(chan).ok_or_else(String::new)?;
        let _ = sp.change_results_type(t).await;
        Ok(())
    })
}

/// How SpeechBackground ended (`done` in Asterisk: 1 finished, 3 hangup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BgEnd {
    Finished,
    Hangup,
}

/// A gap in the caller's media longer than this is fed to the engine as silence.
const SILENCE_FILL_AFTER: Duration = Duration::from_millis(120);
/// How long a recognition loop waits for media before it looks at the gap.
pub(crate) const FEED_READ_TIMEOUT: Duration = Duration::from_millis(100);

/// Writes the caller's audio to the speech engine while it is READY (`ast_speech_write`).
/// A caller that stops sending RTP (silence suppression, or a UA whose file ended) sends no
/// frames at all; the engine still has to see that time pass, or endpointing would wait for
/// the no-input timeout, so a gap is written as 20 ms silence frames.
pub(crate) struct EngineFeed {
    /// How far the engine's audio timeline has been fed, in wall-clock terms.
    until: Instant,
}

impl EngineFeed {
    pub(crate) fn new() -> EngineFeed {
        EngineFeed {
            until: Instant::now(),
        }
    }

    /// Feed what the last read returned: the voice frame, or the silence since the last one.
    pub(crate) fn feed(&mut self, chan: &mut Channel, ev: Option<&ReadEvent>) {
        let Some(sp) = speech_mut(chan) else { return };
        if let Some(ReadEvent::Voice(f)) = ev {
            sp.write(f);
            self.until = Instant::now();
        } else if self.until.elapsed() >= SILENCE_FILL_AFTER {
            let frame = Frame::silence(sp.format, 20);
            while self.until.elapsed() >= Duration::from_millis(20) {
                sp.write(&frame);
                self.until += Duration::from_millis(20);
            }
        }
    }
}

/// The SpeechBackground loop (B.4), shared with AGI `SPEECH RECOGNIZE`.
/// `timeout_s`: None = no timeout; Some(0.0) = finish when the prompts end.
/// Returns the end reason and the DTMF collected.
pub async fn background(
    chan: &mut Channel,
    sounds: &[String],
    timeout_s: Option<f64>,
    partial: bool,
) -> (BgEnd, String) {
    let dtmf_maxlen: usize = pbx::get_var(chan, "SPEECH_DTMF_MAXLEN")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let terminator: Option<char> = match chan.vars.get("SPEECH_DTMF_TERMINATOR") {
        None => Some('#'),
        Some(s) => s.chars().next(),
    };
    // timeout_ms: 0 = none, -1 = when prompts end.
    let mut timeout_ms: i64 = match timeout_s {
        None => 0,
        Some(t) if t <= 0.0 => -1,
        Some(t) => (t * 1000.0) as i64,
    };
    {
        let Some(sp) = speech_mut(chan) else {
            return (BgEnd::Finished, String::new());
        };
        let st = sp.state();
        if st == SpeechState::NotReady || st == SpeechState::Done {
            sp.shared.set_state(SpeechState::NotReady);
            if let Err(e) = sp.start() {
                tracing::warn!("speech start failed: {}", e);
            }
        }
        let fmt = sp.format;
        chan.set_read_format(Some(fmt));
    }
    chan.stop_generator();
    let started_at = Instant::now();
    chan.publish(Event::new("SpeechStart", EventClass::Speech).field("Prompts", sounds.join("&")));
    let mut files = sounds
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .into_iter();
    let mut quieted = false;
    let mut dtmf = String::new();
    let mut started: Option<Instant> = None;
    let mut prompt_playing = false;
    let mut processing_started = false;
    let mut barge_reported = false;
    let mut feed = EngineFeed::new();
    let end = 'outer: loop {
        // Play the next prompt.
        if !quieted && !chan.generator_active() {
            if let Some(f) = files.next() {
                match super::playback::open_sound(chan, &f) {
                    Some(g) => {
                        chan.start_generator(g);
                        prompt_playing = true;
                    }
                    None => {
                        tracing::warn!("{}: SpeechBackground: sound '{}' not found", chan.name, f)
                    }
                }
                continue;
            }
        }
        let sp_shared = match speech_mut(chan) {
            Some(sp) => sp.shared.clone(),
            None => break BgEnd::Finished,
        };
        // Wake up on media (20 ms) or when the engine changes the speech state.
        let ev = tokio::select! {
            ev = chan.read_timeout(FEED_READ_TIMEOUT) => Some(ev),
            _ = sp_shared.changed() => None,
        };
        if let Some(s) = started {
            if (!quieted || !dtmf.is_empty())
                && timeout_ms > 0
                && s.elapsed().as_millis() as i64 >= timeout_ms
            {
                break BgEnd::Finished;
            }
        }
        // Engine state.
        let (quiet, state) = {
            let mut g = sp_shared.lock();
            let q = g.quiet;
            g.quiet = false;
            (q, g.state.0)
        };
        if quiet && !quieted {
            chan.stop_generator();
            quieted = true;
            if !barge_reported {
                barge_reported = true;
                let ms = sp_shared
                    .lock()
                    .timing
                    .onset
                    .map(|o| o.saturating_duration_since(started_at).as_millis())
                    .unwrap_or(0);
                chan.publish(
                    Event::new("SpeechBargeIn", EventClass::Speech)
                        .field("OffsetMs", ms.to_string()),
                );
            }
        }
        match state {
            SpeechState::Ready => {
                if !quieted
                    && !chan.generator_active()
                    && timeout_ms != 0
                    && started.is_none()
                    && files.len() == 0
                {
                    if timeout_ms == -1 {
                        break BgEnd::Finished;
                    }
                    started = Some(Instant::now());
                }
                if dtmf.is_empty() {
                    feed.feed(chan, ev.as_ref());
                }
            }
            SpeechState::Wait => {
                if dtmf.is_empty() && !processing_started && !chan.generator_active() {
                    let ps = speech_mut(chan).and_then(|sp| sp.processing_sound.clone());
                    if let Some(ps) = ps {
                        if let Some(g) = super::playback::open_sound(chan, &ps) {
                            chan.start_generator(g);
                        }
                    }
                    processing_started = true;
                }
            }
            SpeechState::Done => {
                if let Some(sp) = speech_mut(chan) {
                    sp.shared.set_state(SpeechState::NotReady);
                    if dtmf.is_empty() {
                        let r = sp.results_get().await;
                        sp.shared.set_results(r);
                        chan.stop_generator();
                        break BgEnd::Finished;
                    }
                }
            }
            SpeechState::NotReady => {}
        }
        match ev {
            Some(ReadEvent::Dtmf(d)) => {
                if Some(d) == terminator {
                    break BgEnd::Finished;
                }
                quieted = true;
                chan.stop_generator();
                if started.is_none() {
                    timeout_ms = crate::dialplan::functions::core_funcs::digit_timeout(chan) as i64;
                }
                started = Some(Instant::now());
                dtmf.push(d);
                if dtmf_maxlen > 0 && dtmf.len() >= dtmf_maxlen {
                    break BgEnd::Finished;
                }
            }
            Some(ReadEvent::Hangup) | Some(ReadEvent::Interrupted) => break 'outer BgEnd::Hangup,
            Some(ReadEvent::StreamDone) if prompt_playing && files.len() == 0 => {
                prompt_playing = false
            }
            _ => {}
        }
    };
    chan.stop_generator();
    let mut event = Event::new("SpeechResult", EventClass::Speech);
    if let Some(sp) = speech_mut(chan) {
        if dtmf.is_empty() && partial && sp.state() == SpeechState::Ready {
            let r = sp.results_get().await;
            sp.shared.set_results(r);
        }
        if !dtmf.is_empty() {
            sp.shared.set_results(Some(vec![SpeechResult {
                text: dtmf.clone(),
                score: 1000,
                grammar: Some("dtmf".into()),
                nbest: 0,
            }]));
            let _ = sp.dtmf(&dtmf).await;
            sp.shared.set_state(SpeechState::NotReady);
        }
        let g = sp.shared.lock();
        let best = g.results.as_ref().and_then(|r| r.first().cloned());
        let t = g.timing;
        event = event
            .field("Engine", sp.engine.name().to_string())
            .field(
                "Text",
                best.as_ref().map(|b| b.text.clone()).unwrap_or_default(),
            )
            .field(
                "Score",
                best.as_ref()
                    .map(|b| b.score.to_string())
                    .unwrap_or_default(),
            )
            .field("Grammar", best.and_then(|b| b.grammar).unwrap_or_default())
            .field(
                "Results",
                g.results.as_ref().map(|r| r.len()).unwrap_or(0).to_string(),
            )
            .field("Error", g.error.clone().unwrap_or_default())
            .field(
                "LatencyMs",
                t.latency_ms().map(|ms| ms.to_string()).unwrap_or_default(),
            )
            .field(
                "InferenceMs",
                ((t.inference_secs * 1000.0) as u64).to_string(),
            );
        if let Some(e) = g.error.clone() {
            drop(g);
            chan.vars.set("SPEECH_ERROR", &e);
        }
    }
    if end == BgEnd::Hangup {
        if let Some(stack) = chan.datastores.remove(DATASTORE) {
            drop(stack);
        }
    } else {
        chan.set_read_format(None);
        chan.publish(event);
    }
    (end, dtmf)
}

fn speech_background<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        if speech_ref(chan).is_none() {
            return AppResult::Hangup;
        }
        let a = split_args(args);
        let sound = a.first().cloned().unwrap_or_default();
        let opts = parse_options(a.get(2).map(|s| s.as_str()).unwrap_or(""));
        if chan.state != ChannelState::Up && !super::has_opt(&opts, 'n') && !chan.answer() {
            return AppResult::Hangup;
        }
        let timeout = if sound.trim().is_empty() {
            None
        } else {
            a.get(1)
                .filter(|t| !t.trim().is_empty())
                .map(|t| t.trim().parse::<f64>().unwrap_or(0.0).max(0.0))
        };
        let sounds: Vec<String> = sound
            .split('&')
            .map(|s| s.trim().trim_matches('\'').to_string())
            .collect();
        let (end, _) = background(chan, &sounds, timeout, super::has_opt(&opts, 'p')).await;
        if end == BgEnd::Hangup {
            AppResult::Hangup
        } else {
            AppResult::Continue
        }
    })
}
