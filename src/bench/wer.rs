//! Word error rate: Levenshtein alignment over normalised words.
//!
//! Normalisation lowercases, strips punctuation (apostrophes inside words are dropped, so
//! "don't" = "dont"), and maps the digits 0-20 and their number words to one spelling, so "two"
//! and "2" compare equal.

/// The outcome of aligning a hypothesis against a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WerResult {
    /// Words in the normalised reference.
    pub ref_words: usize,
    pub substitutions: usize,
    pub deletions: usize,
    pub insertions: usize,
}

impl WerResult {
    /// Total edits.
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// Errors / reference words. An empty reference gives 0 for an empty hypothesis, else 1.
    /// The value can exceed 1 when the hypothesis has many insertions.
    pub fn wer(&self) -> f64 {
        if self.ref_words == 0 {
            return if self.insertions == 0 { 0.0 } else { 1.0 };
        }
        self.errors() as f64 / self.ref_words as f64
    }

    /// Sum of two results (for corpus-level WER).
    pub fn add(&mut self, o: &WerResult) {
        self.ref_words += o.ref_words;
        self.substitutions += o.substitutions;
        self.deletions += o.deletions;
        self.insertions += o.insertions;
    }
}

const NUMBER_WORDS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

/// Normalise one text into words.
pub fn normalize_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text.split(|c: char| c.is_whitespace() || c == '-' || c == '/') {
        let w: String = raw
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(|c| c.to_lowercase())
            .collect();
        if w.is_empty() {
            continue;
        }
        let w = match w.parse::<usize>() {
            Ok(n) if n < NUMBER_WORDS.len() => NUMBER_WORDS[n].to_string(),
            _ => w,
        };
        out.push(w);
    }
    out
}

/// Align `hypothesis` to `reference` (both raw text) and count the edits.
pub fn wer(reference: &str, hypothesis: &str) -> WerResult {
    align(&normalize_words(reference), &normalize_words(hypothesis))
}

/// Levenshtein alignment over word slices; ties prefer substitution, then deletion.
pub fn align(r: &[String], h: &[String]) -> WerResult {
    // cost[i][j] with (subs, dels, ins) carried so the breakdown matches the minimum.
    #[derive(Clone, Copy)]
    struct Cell {
        cost: usize,
        s: usize,
        d: usize,
        i: usize,
    }
    let w = h.len() + 1;
    let mut prev: Vec<Cell> = (0..w)
        .map(|j| Cell {
            cost: j,
            s: 0,
            d: 0,
            i: j,
        })
        .collect();
    let mut cur = prev.clone();
    for (ri, rw) in r.iter().enumerate() {
        cur[0] = Cell {
            cost: ri + 1,
            s: 0,
            d: ri + 1,
            i: 0,
        };
        for j in 1..w {
            let diag = prev[j - 1];
            let same = *rw == h[j - 1];
            let sub = Cell {
                cost: diag.cost + usize::from(!same),
                s: diag.s + usize::from(!same),
                ..diag
            };
            let up = prev[j];
            let del = Cell {
                cost: up.cost + 1,
                d: up.d + 1,
                ..up
            };
            let left = cur[j - 1];
            let ins = Cell {
                cost: left.cost + 1,
                i: left.i + 1,
                ..left
            };
            let mut best = sub;
            if del.cost < best.cost {
                best = del;
            }
            if ins.cost < best.cost {
                best = ins;
            }
            cur[j] = best;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let last = prev[w - 1];
    WerResult {
        ref_words: r.len(),
        substitutions: last.s,
        deletions: last.d,
        insertions: last.i,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize_words("Hello, World!  I'd like 2 tickets."),
            vec!["hello", "world", "id", "like", "two", "tickets"]
        );
        assert_eq!(normalize_words("20 21"), vec!["twenty", "21"]);
        assert!(normalize_words(" ... ").is_empty());
    }

    #[test]
    fn identical_is_zero() {
        let r = wer("Press two for sales.", "press 2 for sales");
        assert_eq!(r.errors(), 0);
        assert_eq!(r.wer(), 0.0);
    }

    #[test]
    fn hand_checked() {
        // ref:  i want to pay my bill please   (7 words)
        // hyp:  i want pay my bills please now
        // "to" deleted, "bill"->"bills" substituted, "now" inserted: 3 errors / 7.
        let r = wer(
            "I want to pay my bill please",
            "i want pay my bills please now",
        );
        assert_eq!(r.ref_words, 7);
        assert_eq!((r.substitutions, r.deletions, r.insertions), (1, 1, 1));
        assert!((r.wer() - 3.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn empty_cases() {
        assert_eq!(wer("", "").wer(), 0.0);
        assert_eq!(wer("", "hello").wer(), 1.0);
        let r = wer("one two three", "");
        assert_eq!(r.deletions, 3);
        assert_eq!(r.wer(), 1.0);
        let r = wer("yes", "no no no");
        assert_eq!(r.substitutions + r.insertions, 3);
        assert_eq!(r.wer(), 3.0);
    }

    #[test]
    fn add_accumulates() {
        let mut t = WerResult::default();
        t.add(&wer("a b", "a c"));
        t.add(&wer("d e", "d e"));
        assert_eq!(t.ref_words, 4);
        assert_eq!(t.errors(), 1);
    }
}
