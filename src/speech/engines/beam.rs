//! Beam search over a decoder's next-token logits, keeping every finished hypothesis: the
//! n-best list of the local Whisper engine.
//!
//! whisper.cpp runs its own beam search inside `whisper_full` but returns only the winner, so
//! the engine re-runs the decoder through whisper.cpp's public `whisper_decode` /
//! `whisper_get_logits` (one hypothesis prefix per call, the prompt's KV cache kept) and this
//! module does the bookkeeping. It knows nothing about Whisper: the caller supplies a function
//! that writes the logits for the token after a prefix, so the search is tested with a toy
//! language model.

/// A finished (or, at the token cap, unfinished) hypothesis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hypothesis {
    /// Text tokens, without the end-of-text token.
    pub tokens: Vec<i32>,
    /// Log-probability of each token in `tokens`.
    pub logprobs: Vec<f32>,
    /// Log-probability of ending here (0 for a hypothesis cut at the token cap).
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

#[derive(Debug, Clone, Copy)]
pub struct BeamConfig {
    /// Hypotheses kept alive per step (and the number of finished ones that ends the search).
    pub beam: usize,
    /// Token cap per hypothesis.
    pub max_tokens: usize,
    /// End of text. Token ids above it (Whisper's special and timestamp tokens) are never chosen.
    pub eot: i32,
    /// A token that may not start the text (Whisper's blank " "), besides `eot`.
    pub blank: Option<i32>,
}

/// Run the search. `logits(prefix, out)` fills `out` with the next-token logits after `prefix`
/// (at least `eot + 1` values). Returns up to `beam` hypotheses, best first; finished ones are
/// preferred, unfinished ones at the token cap only fill up an otherwise empty list.
pub fn beam_search<E>(
    cfg: &BeamConfig,
    mut logits: impl FnMut(&[i32], &mut Vec<f32>) -> Result<(), E>,
) -> Result<Vec<Hypothesis>, E> {
    let beam = cfg.beam.max(1);
    let n_allowed = (cfg.eot.max(0) as usize) + 1;
    let mut live = vec![Hypothesis::default()];
    let mut done: Vec<Hypothesis> = Vec::new();
    let mut buf: Vec<f32> = Vec::new();
    // (running sum, source beam, token, token log-probability)
    let mut cands: Vec<(f64, usize, i32, f32)> = Vec::with_capacity(beam * beam);
    let mut top: Vec<(f32, i32)> = Vec::with_capacity(beam + 1);
    for step in 0..cfg.max_tokens {
        cands.clear();
        for (bi, h) in live.iter().enumerate() {
            logits(&h.tokens, &mut buf)?;
            if buf.len() < n_allowed {
                continue;
            }
            let row = &mut buf[..n_allowed];
            if step == 0 {
                row[cfg.eot as usize] = f32::NEG_INFINITY;
                if let Some(b) = cfg.blank.filter(|&b| b >= 0 && (b as usize) < n_allowed) {
                    row[b as usize] = f32::NEG_INFINITY;
                }
            }
            let Some(lse) = log_sum_exp(row) else {
                continue;
            };
            top_k(row, beam, &mut top);
            let base: f64 = h.logprobs.iter().map(|&l| f64::from(l)).sum();
            for &(logit, tok) in &top {
                let lp = logit - lse;
                cands.push((base + f64::from(lp), bi, tok, lp));
            }
        }
        if cands.is_empty() {
            break;
        }
        cands.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut next = Vec::with_capacity(beam);
        for &(_, bi, tok, lp) in &cands {
            if next.len() == beam {
                break;
            }
            let src = &live[bi];
            if tok == cfg.eot {
                let mut h = src.clone();
                h.end_logprob = lp;
                done.push(h);
            } else {
                let mut h = src.clone();
                h.tokens.push(tok);
                h.logprobs.push(lp);
                next.push(h);
            }
        }
        // Evaluation order does not change the result; in token order, hypotheses sharing a
        // prefix come one after another, so a caller caching the last prefix decodes less.
        next.sort_by(|a, b| a.tokens.cmp(&b.tokens));
        live = next;
        if done.len() >= beam || live.is_empty() {
            break;
        }
    }
    if done.is_empty() {
        done = live;
    }
    done.sort_by(|a, b| b.rank().total_cmp(&a.rank()));
    done.truncate(beam);
    Ok(done)
}

/// log(sum(exp(x))) over the finite values; None when there are none.
fn log_sum_exp(row: &[f32]) -> Option<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return None;
    }
    let sum: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
    Some(max + sum.ln() as f32)
}

/// The `k` largest finite values of `row` with their indices, largest first.
fn top_k(row: &[f32], k: usize, out: &mut Vec<(f32, i32)>) {
    out.clear();
    for (i, &x) in row.iter().enumerate() {
        if !x.is_finite() || (out.len() == k && x <= out[k - 1].0) {
            continue;
        }
        let pos = out.partition_point(|&(v, _)| v >= x);
        out.insert(pos, (x, i as i32));
        out.truncate(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOT: i32 = 5;

    /// A toy model over tokens 0..=4 (+ EOT 5, + a special token 6 that must never be chosen):
    /// after "" it prefers 1 (0.6) over 2 (0.3); after [1] it ends (0.5) or says 3 (0.45);
    /// after [2] it says 4 (0.9); after [2, 4] it ends (0.95); anything else ends (0.9).
    fn toy(prefix: &[i32], out: &mut Vec<f32>) -> Result<(), String> {
        let mut p = [0.001f32; 7];
        match prefix {
            [] => {
                p[1] = 0.6;
                p[2] = 0.3;
                p[0] = 0.05;
            }
            [1] => {
                p[EOT as usize] = 0.5;
                p[3] = 0.45;
            }
            [2] => p[4] = 0.9,
            [2, 4] => p[EOT as usize] = 0.95,
            _ => p[EOT as usize] = 0.9,
        }
        p[6] = 100.0; // special: must be ignored
        out.clear();
        out.extend(p.iter().map(|x| x.ln()));
        Ok(())
    }

    fn cfg(beam: usize) -> BeamConfig {
        BeamConfig {
            beam,
            max_tokens: 10,
            eot: EOT,
            blank: None,
        }
    }

    #[test]
    fn finds_alternatives_ranked_by_mean_logprob() {
        let hyps = beam_search(&cfg(3), toy).unwrap();
        let seqs: Vec<Vec<i32>> = hyps.iter().map(|h| h.tokens.clone()).collect();
        // Means of the log-probabilities (end included): [2,4] -0.45, [1,3] -0.47, [1] -0.60;
        // the greedy path ([1]) is not the best once lengths are normalised.
        assert_eq!(seqs, vec![vec![2, 4], vec![1, 3], vec![1]]);
        assert!(hyps.windows(2).all(|w| w[0].rank() >= w[1].rank()));
        assert!(hyps.iter().all(|h| !h.tokens.contains(&6)));
        // 0.6 renormalised over the row (which sums to 0.953): 630.
        assert!((hyps[2].score() - 630).abs() <= 2, "{}", hyps[2].score());
    }

    #[test]
    fn greedy_width_one_and_first_step_suppression() {
        let hyps = beam_search(&cfg(1), toy).unwrap();
        assert_eq!(hyps.len(), 1);
        assert_eq!(hyps[0].tokens, vec![1]);
        // Blank suppressed at the start: token 1 is never the first token.
        let c = BeamConfig {
            blank: Some(1),
            ..cfg(1)
        };
        assert_eq!(beam_search(&c, toy).unwrap()[0].tokens, vec![2, 4]);
        // EOT is never the first token: an empty hypothesis is impossible.
        let always_end = |_: &[i32], out: &mut Vec<f32>| -> Result<(), String> {
            out.clear();
            out.extend((0..=EOT).map(|t| if t == EOT { 0.0 } else { -5.0 }));
            Ok(())
        };
        let h = beam_search(&cfg(2), always_end).unwrap();
        assert!(h.iter().all(|h| !h.tokens.is_empty()));
    }

    #[test]
    fn token_cap_and_errors() {
        let never_end = |p: &[i32], out: &mut Vec<f32>| -> Result<(), String> {
            out.clear();
            out.extend((0..=EOT).map(|t| {
                if t == EOT {
                    -50.0
                } else {
                    -(t as f32) - p.len() as f32
                }
            }));
            Ok(())
        };
        let c = BeamConfig {
            max_tokens: 4,
            ..cfg(2)
        };
        let h = beam_search(&c, never_end).unwrap();
        assert_eq!(h.len(), 2);
        assert!(h
            .iter()
            .all(|h| h.tokens.len() == 4 && h.end_logprob == 0.0));
        let mut calls = 0;
        let failing = |_: &[i32], _: &mut Vec<f32>| -> Result<(), String> {
            calls += 1;
            Err("cancelled".into())
        };
        assert_eq!(beam_search(&cfg(3), failing), Err("cancelled".to_string()));
        assert_eq!(calls, 1);
    }

    #[test]
    fn top_k_and_log_sum_exp() {
        let mut out = Vec::new();
        top_k(&[0.1, 3.0, f32::NEG_INFINITY, 2.0, 3.0], 3, &mut out);
        assert_eq!(out, vec![(3.0, 1), (3.0, 4), (2.0, 3)]);
        assert!(log_sum_exp(&[f32::NEG_INFINITY]).is_none());
        let l = log_sum_exp(&[0.0, 0.0]).unwrap();
        assert!((l - 2f32.ln()).abs() < 1e-6);
    }
}
