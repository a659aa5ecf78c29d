//! `voxpbx bench grammar`: how well a small grammar (a menu) is recognised, with phrase scoring
//! (forced decoding of every phrase) and with transcript matching only, on a spoken corpus:
//!
//! ```text
//! voxpbx bench corpus generate --list bench/menu.txt --out /tmp/menu
//! voxpbx bench grammar --grammar grammars/departments.gram --corpus /tmp/menu
//! ```
//!
//! A clip's expected answer is the value of the grammar phrase its reference transcript is, or no
//! match when it is none of them (an out-of-grammar utterance). Each clip is decoded by
//! the engine's own pool ([`WhisperEngine::transcribe_grammars`]: the session's bias prompt,
//! window sizing and mapping; no VAD) once per mode. Reported per mode and condition (clean,
//! each SNR): accuracy (right value, or no match where none is expected), false accepts (a value
//! for an out-of-grammar clip) and inference time p50/p95.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::corpus;
use super::stt::{engine_sections, is_whisper, models_dir, percentile};
use crate::speech::engines::whisper::{WhisperEngine, WhisperSettings};
use crate::speech::grammar::{self, Grammar};

#[derive(Debug, Clone)]
pub struct GrammarOpts {
    /// Configuration directory (speech.conf, voxpbx.conf for the models directory).
    pub conf: PathBuf,
    /// speech.conf section (default: the first whisper engine).
    pub engine: Option<String>,
    pub grammar: PathBuf,
    pub corpus: PathBuf,
    pub json: Option<PathBuf>,
}

/// One clip decoded in one mode.
#[derive(Debug, Clone, Serialize)]
pub struct GrammarMeasure {
    pub clip: String,
    pub condition: String,
    pub mode: &'static str,
    pub expected: Option<String>,
    pub got: Option<String>,
    pub score: i32,
    pub transcript: String,
    /// The free transcript's own score (mean token probability x 1000).
    pub transcript_score: i32,
    /// The best phrase scores (phrase-scoring mode), best first.
    pub phrases: Vec<(String, i32)>,
    /// The result came from the bandwidth-extended pass.
    pub bandwidth_extended: bool,
    pub inference_ms: f64,
}

impl GrammarMeasure {
    fn correct(&self) -> bool {
        self.expected == self.got
    }
}

/// Totals of one mode under one condition.
#[derive(Debug, Clone, Serialize)]
pub struct GrammarRow {
    pub mode: &'static str,
    pub condition: String,
    pub clips: usize,
    pub accuracy: f64,
    /// Out-of-grammar clips given a value, of the out-of-grammar clips.
    pub false_accepts: usize,
    pub out_of_grammar: usize,
    pub inference_p50_ms: f64,
    pub inference_p95_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GrammarReport {
    pub engine: String,
    pub grammar: String,
    pub rows: Vec<GrammarRow>,
    pub measures: Vec<GrammarMeasure>,
}

const MODES: [(&str, bool); 2] = [("phrase-scoring", true), ("transcript", false)];

/// `NAME-snr10` -> "snr10", else "clean".
fn condition(clip: &str) -> String {
    clip.rsplit_once("-snr")
        .filter(|(_, n)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        .map(|(_, n)| format!("snr{n}"))
        .unwrap_or_else(|| "clean".into())
}

pub fn run(opts: &GrammarOpts) -> anyhow::Result<GrammarReport> {
    let sections = engine_sections(&opts.conf)?;
    let sec = sections
        .iter()
        .filter(|s| is_whisper(s))
        .find(|s| opts.engine.as_deref().is_none_or(|e| s.name == e))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no whisper engine in the speech.conf of {}",
                opts.conf.display()
            )
        })?;
    let mut settings =
        WhisperSettings::from_section(sec, &models_dir(&opts.conf)?).map_err(anyhow::Error::msg)?;
    settings.pool_size = 1;
    let engine = WhisperEngine::new(&sec.name, settings).map_err(anyhow::Error::msg)?;
    let grammar =
        Arc::new(Grammar::load("menu", &opts.grammar).map_err(|e| anyhow::anyhow!("{e}"))?);
    let grammars = [grammar.clone()];
    let clips = corpus::load(&opts.corpus)?;
    let mut measures = Vec::new();
    for (i, clip) in clips.iter().enumerate() {
        let pcm: Vec<f32> = clip
            .samples
            .iter()
            .map(|&s| f32::from(s) / 32768.0)
            .collect();
        let expected = expected_value(&grammar, &clip.transcript);
        if i == 0 {
            // Warm-up: first-use allocations are not part of any mode's cost.
            engine.transcribe_grammars(&pcm, clip.rate, &grammars, true)?;
        }
        for (mode, scoring) in MODES {
            let (t, results) = engine.transcribe_grammars(&pcm, clip.rate, &grammars, scoring)?;
            let best = results.first().filter(|r| r.grammar.is_some());
            let m = GrammarMeasure {
                clip: clip.name.clone(),
                condition: condition(&clip.name),
                mode,
                expected: expected.clone(),
                got: best.map(|r| r.text.clone()),
                score: best.map(|r| r.score).unwrap_or(0),
                transcript: t.text.clone(),
                transcript_score: t.score,
                phrases: t
                    .phrases
                    .iter()
                    .take(3)
                    .map(|p| (p.phrase.phrase.clone(), p.score))
                    .collect(),
                bandwidth_extended: t.bandwidth_extended,
                inference_ms: t.inference_secs * 1000.0,
            };
            println!(
                "{:<40} {:<15} expected {:<10} got {:<10} {:>4} {:>6.0} ms {:<4} {:?}",
                m.clip,
                m.mode,
                m.expected.as_deref().unwrap_or("-"),
                m.got.as_deref().unwrap_or("-"),
                m.score,
                m.inference_ms,
                if m.bandwidth_extended { "bwe" } else { "" },
                m.transcript
            );
            measures.push(m);
        }
    }
    let rows = summarize(&measures);
    let report = GrammarReport {
        engine: sec.name.clone(),
        grammar: opts.grammar.display().to_string(),
        rows,
        measures,
    };
    print_table(&report);
    if let Some(p) = &opts.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(report)
}

/// The value of the grammar phrase that is exactly (once normalised) the reference transcript,
/// None for an out-of-grammar utterance.
fn expected_value(grammar: &Grammar, transcript: &str) -> Option<String> {
    let words = grammar::normalize(transcript);
    grammar
        .entries
        .iter()
        .find(|e| e.tokens() == words.as_slice())
        .map(|e| e.value().to_string())
}

/// Rows per (mode, condition), then per mode over every condition ("all").
pub fn summarize(measures: &[GrammarMeasure]) -> Vec<GrammarRow> {
    let mut groups: BTreeMap<(&'static str, String), Vec<&GrammarMeasure>> = BTreeMap::new();
    for m in measures {
        groups
            .entry((m.mode, m.condition.clone()))
            .or_default()
            .push(m);
        groups.entry((m.mode, "all".into())).or_default().push(m);
    }
    groups
        .into_iter()
        .map(|((mode, condition), ms)| {
            let times: Vec<f64> = ms.iter().map(|m| m.inference_ms).collect();
            let oog: Vec<_> = ms.iter().filter(|m| m.expected.is_none()).collect();
            GrammarRow {
                mode,
                condition,
                clips: ms.len(),
                accuracy: ms.iter().filter(|m| m.correct()).count() as f64 / ms.len() as f64,
                false_accepts: oog.iter().filter(|m| m.got.is_some()).count(),
                out_of_grammar: oog.len(),
                inference_p50_ms: percentile(&times, 50.0).unwrap_or(0.0),
                inference_p95_ms: percentile(&times, 95.0).unwrap_or(0.0),
            }
        })
        .collect()
}

fn print_table(r: &GrammarReport) {
    println!("\nengine {} grammar {}", r.engine, r.grammar);
    println!(
        "{:<15} {:<9} {:>5} {:>9} {:>13} {:>9} {:>9}",
        "mode", "condition", "clips", "accuracy", "false accept", "p50 ms", "p95 ms"
    );
    for row in &r.rows {
        println!(
            "{:<15} {:<9} {:>5} {:>8.1}% {:>6}/{:<6} {:>9.0} {:>9.0}",
            row.mode,
            row.condition,
            row.clips,
            row.accuracy * 100.0,
            row.false_accepts,
            row.out_of_grammar,
            row.inference_p50_ms,
            row.inference_p95_ms
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(
        mode: &'static str,
        clip: &str,
        expected: Option<&str>,
        got: Option<&str>,
    ) -> GrammarMeasure {
        GrammarMeasure {
            clip: clip.into(),
            condition: condition(clip),
            mode,
            expected: expected.map(Into::into),
            got: got.map(Into::into),
            score: 0,
            transcript: String::new(),
            transcript_score: 0,
            phrases: Vec::new(),
            bandwidth_extended: false,
            inference_ms: 100.0,
        }
    }

    #[test]
    fn conditions_and_totals() {
        assert_eq!(condition("sales-en_us-150"), "clean");
        assert_eq!(condition("sales-en_us-150-snr10"), "snr10");
        let rows = summarize(&[
            m("a", "x-snr10", Some("sales"), Some("sales")),
            m("a", "y", Some("sales"), None),
            m("a", "z", None, Some("billing")),
            m("a", "w", None, None),
        ]);
        let all = rows.iter().find(|r| r.condition == "all").unwrap();
        assert_eq!(all.clips, 4);
        assert_eq!(all.accuracy, 0.5);
        assert_eq!((all.false_accepts, all.out_of_grammar), (1, 2));
        let noisy = rows.iter().find(|r| r.condition == "snr10").unwrap();
        assert_eq!((noisy.clips, noisy.accuracy), (1, 1.0));
    }
}
