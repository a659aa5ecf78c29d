//! Grammar phrase scoring: when the active grammars are a small menu ("sales", "support",
//! "billing"), every phrase is scored against the audio by forced decoding with Whisper's
//! decoder, instead of hoping the free transcript spells one of them.
//!
//! A short word on a narrow-band line is often transcribed as something else ("sales" as
//! "Pay on."), yet the decoder, asked how likely the audio is to read " Sales.", gives it a high
//! probability. So after the free decode, with the encoder's output still in the Whisper state,
//! each phrase's tokens are fed one at a time and the log-probability of each next token (and of
//! the end of text after the last) is read. A phrase's score is its mean token log-probability;
//! the best phrase wins when its probability (the exponential of that mean, x 1000) clears
//! `phrase_threshold`, else the engine falls back to matching the free transcript.
//!
//! The phrases' token sequences share one trie (written spellings: " Sales" and " Sales." share
//! " Sales"), walked depth first so the decoder's key/value cache always holds exactly the
//! path to the current node: one decoder step per trie node, and none for a branch whose best
//! possible mean can no longer reach the threshold.

use crate::speech::grammar::Grammar;
use std::sync::Arc;

/// One decoder step: feed `tokens` at positions `n_past..`, get the logits for the next token.
pub type Decoder<'a> = dyn FnMut(&[i32], usize) -> Result<Vec<f32>, String> + 'a;

/// One phrase of an active grammar, as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Phrase {
    pub grammar: String,
    pub phrase: String,
    pub tag: Option<String>,
}

impl Phrase {
    /// What a match reports as its text: the tag when there is one, else the phrase.
    pub fn value(&self) -> &str {
        self.tag.as_deref().unwrap_or(&self.phrase)
    }
}

/// A phrase's score against one utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct PhraseScore {
    pub phrase: Phrase,
    /// exp(mean token log-probability) x 1000, 0..=1000.
    pub score: i32,
}

#[derive(Debug, Default)]
struct Node {
    token: i32,
    children: Vec<usize>,
    /// Phrases one of whose spellings ends here.
    ends: Vec<usize>,
    /// Tokens from here to the deepest end below (0 when this node is a leaf end).
    depth_below: usize,
}

/// The tokenized phrases of a session's active grammars.
#[derive(Debug)]
pub struct PhraseSet {
    phrases: Vec<Phrase>,
    /// Node 0 is the root (no token).
    nodes: Vec<Node>,
}

/// The spellings Whisper writes a short answer in: sentence case, with and without a full stop,
/// and the grammar's own spelling when it differs.
fn spellings(phrase: &str) -> Vec<String> {
    let mut chars = phrase.chars();
    let Some(first) = chars.next() else {
        return Vec::new();
    };
    let capital: String = first.to_uppercase().chain(chars).collect();
    let mut out = vec![format!(" {capital}"), format!(" {capital}.")];
    if capital != phrase {
        out.push(format!(" {phrase}"));
    }
    out
}

impl PhraseSet {
    /// The distinct phrases of `grammars` (first grammar first), tokenized by `tokenize`.
    /// None when there are none or more than `max` (a large grammar is matched on the
    /// transcript instead) or a phrase cannot be tokenized.
    pub fn build(
        grammars: &[Arc<Grammar>],
        max: usize,
        mut tokenize: impl FnMut(&str) -> Option<Vec<i32>>,
    ) -> Option<PhraseSet> {
        let mut phrases: Vec<Phrase> = Vec::new();
        for g in grammars {
            for e in &g.entries {
                if e.phrase.is_empty()
                    || phrases
                        .iter()
                        .any(|p| p.grammar == g.name && p.phrase == e.phrase)
                {
                    continue;
                }
                phrases.push(Phrase {
                    grammar: g.name.clone(),
                    phrase: e.phrase.clone(),
                    tag: e.tag.clone(),
                });
                if phrases.len() > max {
                    return None;
                }
            }
        }
        if phrases.is_empty() {
            return None;
        }
        let mut set = PhraseSet {
            phrases,
            nodes: vec![Node::default()],
        };
        for i in 0..set.phrases.len() {
            for s in spellings(&set.phrases[i].phrase) {
                let toks = tokenize(&s).filter(|t| !t.is_empty())?;
                set.insert(&toks, i);
            }
        }
        set.compute_depths(0);
        Some(set)
    }

    fn insert(&mut self, tokens: &[i32], phrase: usize) {
        let mut n = 0;
        for &t in tokens {
            n = match self.nodes[n]
                .children
                .iter()
                .copied()
                .find(|&c| self.nodes[c].token == t)
            {
                Some(c) => c,
                None => {
                    self.nodes.push(Node {
                        token: t,
                        ..Node::default()
                    });
                    let c = self.nodes.len() - 1;
                    self.nodes[n].children.push(c);
                    c
                }
            };
        }
        if !self.nodes[n].ends.contains(&phrase) {
            self.nodes[n].ends.push(phrase);
        }
    }

    fn compute_depths(&mut self, n: usize) -> usize {
        let children = self.nodes[n].children.clone();
        let d = children
            .into_iter()
            .map(|c| self.compute_depths(c) + 1)
            .max()
            .unwrap_or(0);
        self.nodes[n].depth_below = d;
        d
    }

    pub fn len(&self) -> usize {
        self.phrases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.phrases.is_empty()
    }

    /// Decoder steps a full walk takes (one per trie node).
    pub fn steps(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Score every phrase. `prefix` is the decoder's start sequence (bias prompt, start of
    /// transcript, language, task, no timestamps); `decoder(tokens, n_past)` feeds `tokens` at
    /// positions `n_past..` and returns the logits for the token after the last; `eot` is the end-of-text token (the text vocabulary is
    /// `0..=eot`). Branches that cannot reach `min_score` are not decoded (their phrases score
    /// 0). Scores come back best first; ties keep grammar order.
    pub fn score(
        &self,
        prefix: &[i32],
        eot: i32,
        min_score: i32,
        decoder: &mut Decoder<'_>,
    ) -> Result<Vec<PhraseScore>, String> {
        let mut best = vec![f64::NEG_INFINITY; self.phrases.len()];
        let Some((&last, head)) = prefix.split_last() else {
            return Err("empty decoder prefix".into());
        };
        if !head.is_empty() {
            decoder(head, 0)?;
        }
        let logits = decoder(&[last], head.len())?;
        let root = log_softmax(&logits, eot)?;
        let min_mean = if min_score <= 0 {
            f64::NEG_INFINITY
        } else {
            (f64::from(min_score.min(1000)) / 1000.0).ln()
        };
        let mut walk = Walk {
            set: self,
            eot: eot as usize,
            base: prefix.len(),
            min_mean,
            best: &mut best,
            decoder,
        };
        walk.visit(0, 0, 0.0, &root)?;
        let mut out: Vec<PhraseScore> = self
            .phrases
            .iter()
            .zip(best)
            .map(|(p, mean)| PhraseScore {
                phrase: p.clone(),
                score: if mean.is_finite() {
                    (mean.exp() * 1000.0).round().clamp(0.0, 1000.0) as i32
                } else {
                    0
                },
            })
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.score));
        Ok(out)
    }
}

struct Walk<'a> {
    set: &'a PhraseSet,
    eot: usize,
    base: usize,
    min_mean: f64,
    best: &'a mut [f64],
    decoder: &'a mut Decoder<'a>,
}

impl Walk<'_> {
    /// At `node` (`depth` phrase tokens in, their log-probabilities summing to `sum`), with the
    /// next-token log-probabilities `lp`.
    fn visit(&mut self, node: usize, depth: usize, sum: f64, lp: &[f32]) -> Result<(), String> {
        let n = &self.set.nodes[node];
        for &p in &n.ends {
            let mean = (sum + f64::from(lp[self.eot])) / (depth + 1) as f64;
            if mean > self.best[p] {
                self.best[p] = mean;
            }
        }
        for &c in &n.children {
            let child = &self.set.nodes[c];
            let s = sum + f64::from(lp[child.token as usize]);
            // Every later token (and the end) costs log-probability <= 0, so the best mean a
            // phrase below can reach is s over the longest length there.
            let longest = (depth + 1 + child.depth_below + 1) as f64;
            if s / longest < self.min_mean {
                continue;
            }
            let logits = (self.decoder)(&[child.token], self.base + depth)?;
            let next = log_softmax(&logits, self.eot as i32)?;
            self.visit(c, depth + 1, s, &next)?;
        }
        Ok(())
    }
}

/// Log-probabilities over the text tokens and end of text (`0..=eot`): what Whisper samples
/// from once timestamps and special tokens are suppressed.
fn log_softmax(logits: &[f32], eot: i32) -> Result<Vec<f32>, String> {
    let n = eot as usize + 1;
    if eot < 0 || logits.len() < n {
        return Err(format!(
            "decoder returned {} logits, expected at least {n}",
            logits.len()
        ));
    }
    let row = &logits[..n];
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    let lse = max + sum.ln();
    Ok(row.iter().map(|&x| x - lse).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy tokenizer: each word (with its leading space) is one token, "." its own token.
    fn toy_tokenize(s: &str) -> Option<Vec<i32>> {
        let mut out = Vec::new();
        for w in s.split_inclusive(' ').filter(|w| !w.trim().is_empty()) {
            let w = w.trim();
            let (word, stop) = match w.strip_suffix('.') {
                Some(x) => (x, true),
                None => (w, false),
            };
            let id = match word.to_lowercase().as_str() {
                "sales" => 1,
                "support" => 2,
                "billing" => 3,
                "department" => 4,
                _ => 5,
            } + if word.starts_with(char::is_uppercase) {
                10
            } else {
                0
            };
            out.push(id);
            if stop {
                out.push(9);
            }
        }
        Some(out)
    }

    fn grammar(text: &str) -> Arc<Grammar> {
        Arc::new(Grammar::parse_phrase_list("menu", text).unwrap())
    }

    /// A fake decoder that "heard" `heard` (token ids): it strongly predicts the next token of
    /// that sequence after matching context, and end of text (id 20) after it.
    fn fake(
        heard: Vec<i32>,
        calls: &mut usize,
    ) -> impl FnMut(&[i32], usize) -> Result<Vec<f32>, String> + '_ {
        let mut ctx: Vec<i32> = Vec::new();
        move |toks, n_past| {
            *calls += 1;
            ctx.truncate(n_past);
            ctx.extend_from_slice(toks);
            let mut logits = vec![0.0f32; 21];
            // ctx[0] is the prefix token.
            let said = &ctx[1..];
            if heard.starts_with(said) {
                let next = heard.get(said.len()).copied().unwrap_or(20);
                logits[next as usize] = 8.0;
            }
            Ok(logits)
        }
    }

    #[test]
    fn best_phrase_wins_and_scores_are_probabilities() {
        let g = grammar("sales = s\nsupport = p\nsales department = s\nbilling = b\n");
        let set = PhraseSet::build(&[g], 10, toy_tokenize).unwrap();
        assert_eq!(set.len(), 4);
        let mut calls = 0;
        // Heard " Support."
        let mut dec = fake(vec![12, 9], &mut calls);
        let scores = set.score(&[0], 20, 0, &mut dec).unwrap();
        assert_eq!(scores[0].phrase.phrase, "support");
        assert_eq!(scores[0].phrase.value(), "p");
        assert!(scores[0].score > 900, "{scores:?}");
        assert!(scores[1].score < 200, "{scores:?}");
        assert!(scores.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn end_of_text_separates_a_phrase_from_its_extension() {
        let g = grammar("sales = short\nsales department = long\n");
        let set = PhraseSet::build(&[g], 10, toy_tokenize).unwrap();
        let mut calls = 0;
        let mut dec = fake(vec![11, 4], &mut calls); // " Sales department"
        let scores = set.score(&[0], 20, 0, &mut dec).unwrap();
        assert_eq!(scores[0].phrase.value(), "long");
        let mut calls = 0;
        let mut dec = fake(vec![11], &mut calls); // " Sales"
        let scores = set.score(&[0], 20, 0, &mut dec).unwrap();
        assert_eq!(scores[0].phrase.value(), "short");
    }

    #[test]
    fn trie_shares_prefixes_and_pruning_skips_hopeless_branches() {
        let g = grammar("sales\nsales department\nsupport\nbilling\n");
        let set = PhraseSet::build(&[g], 10, toy_tokenize).unwrap();
        // " Sales", " Sales." (+1), " sales", " sales."(+1), " Sales department", ...
        let mut calls = 0;
        {
            let mut dec = fake(vec![13], &mut calls);
            set.score(&[0], 20, 0, &mut dec).unwrap();
        }
        assert_eq!(calls, set.steps() + 1, "one step per node plus the prefix");
        let mut pruned = 0;
        {
            let mut dec = fake(vec![13], &mut pruned);
            let s = set.score(&[0], 20, 500, &mut dec).unwrap();
            assert_eq!(s[0].phrase.phrase, "billing");
            assert!(s[1..].iter().all(|x| x.score < 500), "{s:?}");
        }
        assert!(pruned < calls, "{pruned} steps with pruning vs {calls}");
    }

    #[test]
    fn large_or_empty_grammars_are_not_scored() {
        let many: String = (0..30).map(|i| format!("word{i}\n")).collect();
        assert!(PhraseSet::build(&[grammar(&many)], 20, toy_tokenize).is_none());
        assert!(PhraseSet::build(&[], 20, toy_tokenize).is_none());
        assert!(PhraseSet::build(&[grammar("a\n")], 20, |_| None).is_none());
    }

    #[test]
    fn log_softmax_normalises_over_the_text_vocabulary() {
        let lp = log_softmax(&[1.0, 2.0, 3.0, 100.0], 2).unwrap();
        let total: f32 = lp.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert!(log_softmax(&[1.0], 2).is_err());
    }
}
