//! n-best from whisper.cpp's own beam search.
//!
//! `whisper_full` explores several hypotheses (one per decoder) but returns only the winner.
//! Its logits-filter callback sees every hypothesis prefix a decoder extends together with the
//! next-token logits, so a [`Lattice`] records, per prefix, the log-probabilities of the most
//! likely next tokens and of ending there. Afterwards every explored prefix that may end is a
//! hypothesis with a known log-probability: ranking them gives the n-best list at the cost of
//! a log-softmax per decoder step (no extra decoder passes).

use parking_lot::Mutex;
use std::collections::HashMap;

/// A hypothesis: text tokens with their log-probabilities and the log-probability of ending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hypothesis {
    /// Text tokens, without the end-of-text token.
    pub tokens: Vec<i32>,
    /// Log-probability of each token in `tokens`.
    pub logprobs: Vec<f32>,
    /// Log-probability of ending after `tokens`.
    pub end_logprob: f32,
}

impl Hypothesis {
    /// Ranking key: mean log-probability over the tokens and the end (whisper.cpp's default
    /// length normalisation), so long hypotheses are not penalised for their length.
    pub fn rank(&self) -> f64 {
        let sum: f64 =
            self.logprobs.iter().map(|&l| f64::from(l)).sum::<f64>() + f64::from(self.end_logprob);
        sum / (self.logprobs.len() + 1) as f64
    }

    /// Mean token probability x 1000 (the engine's score scale for transcripts).
    pub fn score(&self) -> i32 {
        if self.logprobs.is_empty() {
            return 0;
        }
        let mean = self
            .logprobs
            .iter()
            .map(|&l| f64::from(l).exp())
            .sum::<f64>()
            / self.logprobs.len() as f64;
        ((mean * 1000.0).round() as i32).clamp(0, 1000)
    }
}

/// What one decoder step saw after a prefix.
#[derive(Debug, Clone)]
struct Node {
    /// The most likely next text tokens (2 x beam) and their log-probabilities.
    next: Vec<(i32, f32)>,
    /// Log-probability of end-of-text next; `None` when the search could not end here (end of
    /// text suppressed, or not among the `beam` most likely next tokens).
    end: Option<f32>,
}

/// The prefixes a beam search extended. Filled from whisper.cpp's sampling threads (one call per
/// decoder and step, possibly concurrently), read once the search is over.
#[derive(Debug)]
pub struct Lattice {
    eot: i32,
    beam: usize,
    k: usize,
    nodes: Mutex<HashMap<Vec<i32>, Node>>,
}

impl Lattice {
    /// `eot`: the end-of-text token; ids above it (Whisper's special and timestamp tokens) are
    /// not text. `beam`: the search's width; it picks the continuations of a hypothesis among
    /// its `beam` most likely next tokens (end of text included), twice that many are kept.
    pub fn new(eot: i32, beam: usize) -> Lattice {
        Lattice {
            eot: eot.max(0),
            beam: beam.max(1),
            k: beam.max(1) * 2,
            nodes: Mutex::new(HashMap::new()),
        }
    }

    /// Tokens read from a logits row: text tokens and end-of-text (`eot + 1`).
    pub fn row_len(&self) -> usize {
        self.eot as usize + 1
    }

    /// Record the next-token logits after `prefix` (`logits` holds at least [`row_len`]
    /// values; suppressed tokens are -inf).
    ///
    /// [`row_len`]: Lattice::row_len
    pub fn record(&self, prefix: &[i32], logits: &[f32]) {
        let Some(row) = logits.get(..self.row_len()) else {
            return;
        };
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return;
        }
        let sum: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
        let lse = max + sum.ln() as f32;
        let mut next: Vec<(i32, f32)> = Vec::with_capacity(self.k + 1);
        for (i, &x) in row[..self.eot as usize].iter().enumerate() {
            if !x.is_finite() || (next.len() == self.k && x <= next[self.k - 1].1) {
                continue;
            }
            let pos = next.partition_point(|&(_, v)| v >= x);
            next.insert(pos, (i as i32, x));
            next.truncate(self.k);
        }
        let end = row[self.eot as usize];
        let ahead = next.iter().filter(|&&(_, v)| v > end).count();
        let end = (end.is_finite() && ahead < self.beam).then_some(end - lse);
        for n in &mut next {
            n.1 -= lse;
        }
        self.nodes
            .lock()
            .insert(prefix.to_vec(), Node { next, end });
    }

    /// Every recorded prefix the search could end, best first ([`Hypothesis::rank`]). A prefix
    /// whose path left the recorded top tokens somewhere is skipped (its probability is unknown).
    pub fn hypotheses(&self) -> Vec<Hypothesis> {
        let nodes = self.nodes.lock();
        let mut out: Vec<Hypothesis> = Vec::new();
        'prefixes: for (prefix, node) in nodes.iter() {
            let Some(end) = node.end.filter(|_| !prefix.is_empty()) else {
                continue;
            };
            let mut logprobs = Vec::with_capacity(prefix.len());
            for i in 0..prefix.len() {
                let lp = nodes
                    .get(&prefix[..i])
                    .and_then(|p| p.next.iter().find(|(t, _)| *t == prefix[i]))
                    .map(|&(_, lp)| lp);
                match lp {
                    Some(lp) => logprobs.push(lp),
                    None => continue 'prefixes,
                }
            }
            out.push(Hypothesis {
                tokens: prefix.clone(),
                logprobs,
                end_logprob: end,
            });
        }
        out.sort_by(|a, b| {
            b.rank()
                .total_cmp(&a.rank())
                .then_with(|| a.tokens.cmp(&b.tokens))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOT: i32 = 5;

    /// Logits (natural log of unnormalised probabilities) over tokens 0..=5 plus a special
    /// token 6 that must be ignored.
    fn row(p: &[(i32, f32)]) -> Vec<f32> {
        let mut r = vec![f32::NEG_INFINITY; 7];
        for &(t, v) in p {
            r[t as usize] = v.ln();
        }
        r[6] = 100.0;
        r
    }

    /// What a width-2 beam search over a toy model would report: after "" 1 (0.6) or 2 (0.4),
    /// end suppressed; after [1] end (0.5) or 3 (0.5); after [2] 4 (1.0); after [2,4] end (1.0);
    /// after [1,3] end (0.9) or 0 (0.1).
    fn toy() -> Lattice {
        let l = Lattice::new(EOT, 2);
        l.record(&[], &row(&[(1, 0.6), (2, 0.4)]));
        l.record(&[1], &row(&[(EOT, 0.5), (3, 0.5)]));
        l.record(&[2], &row(&[(4, 1.0)]));
        l.record(&[2, 4], &row(&[(EOT, 1.0)]));
        l.record(&[1, 3], &row(&[(EOT, 0.9), (0, 0.1)]));
        l
    }

    #[test]
    fn hypotheses_ranked_by_mean_logprob() {
        let h = toy().hypotheses();
        let seqs: Vec<Vec<i32>> = h.iter().map(|h| h.tokens.clone()).collect();
        // Means (end included): [2,4] ln .4 / 3 = -0.31; [1,3] (ln .6 + ln .5 + ln .9) / 3 =
        // -0.43; [1] (ln .6 + ln .5) / 2 = -0.60. The prefix [] cannot end (suppressed).
        assert_eq!(seqs, vec![vec![2, 4], vec![1, 3], vec![1]]);
        assert!(h.windows(2).all(|w| w[0].rank() >= w[1].rank()));
        assert!(h.iter().all(|h| !h.tokens.contains(&6)));
        assert_eq!(h[2].score(), 600, "mean probability of its one token");
        assert!((f64::from(h[0].logprobs[0]) - 0.4f64.ln()).abs() < 1e-5);
    }

    #[test]
    fn unknown_paths_and_bad_rows_are_skipped() {
        let l = Lattice::new(EOT, 1);
        // Beam 1 keeps two next tokens: after "" only 1 and 2 of the three, so a prefix through
        // token 0 has no known probability.
        l.record(&[], &row(&[(1, 0.5), (2, 0.3), (0, 0.2)]));
        l.record(&[0], &row(&[(EOT, 1.0)]));
        l.record(&[1], &row(&[(EOT, 1.0)]));
        // A row of all -inf and a short row are ignored.
        l.record(&[1, 1], &[f32::NEG_INFINITY; 7]);
        l.record(&[1, 2], &[0.0; 3]);
        // After [2, 3] the end is third most likely: a beam of 1 could not end there.
        l.record(&[2], &row(&[(3, 1.0)]));
        l.record(&[2, 3], &row(&[(0, 0.5), (1, 0.3), (EOT, 0.2)]));
        let h = l.hypotheses();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].tokens, vec![1]);
        assert!(Lattice::new(EOT, 3).hypotheses().is_empty());
    }

    #[test]
    fn concurrent_recording() {
        let l = toy();
        std::thread::scope(|s| {
            for t in 0..4 {
                let l = &l;
                s.spawn(move || l.record(&[2, 4, t], &row(&[(EOT, 1.0)])));
            }
        });
        assert_eq!(l.nodes.lock().len(), 9);
    }
}
