//! Text metrics for downstream evaluation: SQuAD-style exact match and token F1, ROUGE-L, and
//! multiple-choice accuracy. Pure functions of strings, shared by whoever generates the text.

use std::collections::HashMap;

/// SQuAD's answer normalisation: lowercase, delete ASCII punctuation, drop the articles
/// `a`/`an`/`the` as whole words, collapse whitespace to single spaces. Punctuation is deleted,
/// not replaced by a space (`"don't"` → `"dont"`), as in the official SQuAD script, so
/// scores are comparable with published numbers.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// 1.0 when `prediction` equals one of `golds` after [`normalize_answer`], else 0.0 (also
/// 0.0 without golds).
pub fn exact_match(prediction: &str, golds: &[impl AsRef<str>]) -> f64 {
    let p = normalize_answer(prediction);
    let hit = golds.iter().any(|g| normalize_answer(g.as_ref()) == p);
    if hit {
        1.0
    } else {
        0.0
    }
}

/// Token F1 against the best of `golds` (0.0 without golds): the harmonic mean of precision
/// and recall over the multiset of normalised words. When either side normalises to no words
/// the score is 1.0 if both do and 0.0 otherwise (the SQuAD 2.0 convention, so an empty gold
/// rewards an empty prediction).
pub fn token_f1(prediction: &str, golds: &[impl AsRef<str>]) -> f64 {
    let p = normalize_answer(prediction);
    let p: Vec<&str> = p.split_whitespace().collect();
    golds
        .iter()
        .map(|g| {
            let g = normalize_answer(g.as_ref());
            let g: Vec<&str> = g.split_whitespace().collect();
            f1_of_words(&p, &g)
        })
        .fold(0.0, f64::max)
}

fn f1_of_words(pred: &[&str], gold: &[&str]) -> f64 {
    if pred.is_empty() || gold.is_empty() {
        return if pred.is_empty() && gold.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in gold {
        *counts.entry(w).or_default() += 1;
    }
    let mut same = 0usize;
    for w in pred {
        if let Some(c) = counts.get_mut(w) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    f_measure(same, pred.len(), gold.len())
}

/// `2PR / (P + R)` with `P = overlap / predicted`, `R = overlap / reference`; 0 without overlap.
fn f_measure(overlap: usize, predicted: usize, reference: usize) -> f64 {
    if overlap == 0 {
        return 0.0;
    }
    let p = overlap as f64 / predicted as f64;
    let r = overlap as f64 / reference as f64;
    2.0 * p * r / (p + r)
}

/// The words ROUGE compares: lowercase, every run of characters that are not letters or
/// digits acts as a separator (the tokenisation of the reference `rouge-score` package,
/// without stemming).
fn rouge_words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Length of the longest common subsequence of two word sequences (two DP rows, so memory
/// is linear in the shorter side even for long summaries).
fn lcs_len(a: &[String], b: &[String]) -> usize {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let mut prev = vec![0usize; short.len() + 1];
    let mut cur = vec![0usize; short.len() + 1];
    for x in long {
        for (j, y) in short.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[short.len()]
}

/// ROUGE-L F-measure (β = 1) of `prediction` against `reference`: LCS-based precision and
/// recall over words. 0.0 when either side has no words.
pub fn rouge_l(prediction: &str, reference: &str) -> f64 {
    let p = rouge_words(prediction);
    let r = rouge_words(reference);
    if p.is_empty() || r.is_empty() {
        return 0.0;
    }
    f_measure(lcs_len(&p, &r), p.len(), r.len())
}

/// [`rouge_l`] against the best of several references (0.0 without references).
pub fn rouge_l_max(prediction: &str, references: &[impl AsRef<str>]) -> f64 {
    references
        .iter()
        .map(|r| rouge_l(prediction, r.as_ref()))
        .fold(0.0, f64::max)
}

/// The letter of choice `index` (`0` → `'A'`); choices are lettered A, B, C, …
pub fn choice_letter(index: usize) -> char {
    char::from(b'A' + (index % 26) as u8)
}

/// The choice a generated answer picks: the first stand-alone letter among the first
/// `n_choices` (`"B"`, `" (B)"`, `"B. Paris"`), where stand-alone means no letter or digit
/// right before or after it, so the `A` inside `"Answer"` does not count. `None` when there
/// is none.
pub fn parse_choice(generated: &str, n_choices: usize) -> Option<usize> {
    let chars: Vec<char> = generated.chars().collect();
    let alnum = |i: Option<&char>| i.is_some_and(|c| c.is_alphanumeric());
    chars.iter().enumerate().find_map(|(i, &c)| {
        let idx = (c as usize).checked_sub('A' as usize)?;
        let alone = !alnum(i.checked_sub(1).and_then(|j| chars.get(j))) && !alnum(chars.get(i + 1));
        (idx < n_choices.min(26) && alone).then_some(idx)
    })
}

/// Fraction of `(predicted, label)` pairs where the prediction is the label; a `None`
/// prediction (no choice found) counts as wrong. `None` for no pairs.
pub fn choice_accuracy(results: &[(Option<usize>, usize)]) -> Option<f64> {
    if results.is_empty() {
        return None;
    }
    let right = results.iter().filter(|(p, l)| *p == Some(*l)).count();
    Some(right as f64 / results.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn normalisation_follows_squad() {
        assert_eq!(normalize_answer("The  Eiffel-Tower!"), "eiffeltower");
        assert_eq!(
            normalize_answer("  A cat, an owl and THE dog. "),
            "cat owl and dog"
        );
        assert_eq!(
            normalize_answer("Theory"),
            "theory",
            "articles only as whole words"
        );
        assert_eq!(normalize_answer("don't"), "dont");
        assert_eq!(normalize_answer("..."), "");
    }

    #[test]
    fn exact_match_takes_the_best_gold() {
        assert_eq!(exact_match("the Eiffel Tower.", &["Eiffel Tower"]), 1.0);
        assert_eq!(exact_match("Paris", &["London", "paris!"]), 1.0);
        assert_eq!(exact_match("Paris France", &["Paris"]), 0.0);
        assert_eq!(exact_match("Paris", &[] as &[&str]), 0.0);
    }

    #[test]
    fn token_f1_by_hand() {
        // pred {quick, brown, fox}, gold {brown, fox, jumps, high}: overlap 2,
        // P = 2/3, R = 2/4, F1 = 2·(2/3)(1/2)/(2/3 + 1/2) = 4/7.
        let f = token_f1("The quick brown fox", &["brown fox jumps high"]);
        assert!(close(f, 4.0 / 7.0), "{f}");
        // Repeated words count once per occurrence in both: pred "x y y", gold "y z":
        // overlap 1 (gold has one y), P = 1/3, R = 1/2, F1 = 0.4.
        assert!(close(token_f1("x y y", &["y z"]), 0.4));
        // Max over golds, and exact answers score 1.
        assert!(close(token_f1("brown fox", &["cat", "the brown fox"]), 1.0));
        assert_eq!(token_f1("cat", &["dog"]), 0.0);
        assert_eq!(token_f1("the", &["a"]), 1.0, "both empty after normalising");
        assert_eq!(token_f1("cat", &["the"]), 0.0);
        assert_eq!(token_f1("cat", &[] as &[&str]), 0.0);
    }

    #[test]
    fn rouge_l_by_hand() {
        // pred: police killed the gunman (4); ref: police kill the gunman (4);
        // LCS = police, the, gunman = 3; P = R = 3/4, F = 0.75.
        assert!(close(
            rouge_l("police killed the gunman", "police kill the gunman"),
            0.75
        ));
        // pred 2 words, ref 5 words, LCS 2: P = 1, R = 2/5, F = 2·0.4/1.4 = 4/7.
        assert!(close(rouge_l("cat sat", "the cat sat on mats"), 4.0 / 7.0));
        // Order matters (subsequence, not bag): LCS("b a", "a b") = 1, F = 0.5.
        assert!(close(rouge_l("b a", "a b"), 0.5));
        // Case and punctuation are separators only.
        assert!(close(rouge_l("The CAT, sat.", "the cat sat"), 1.0));
        assert_eq!(rouge_l("", "the cat"), 0.0);
        assert_eq!(rouge_l("dog", "cat"), 0.0);
        assert!(close(rouge_l_max("cat sat", &["dog", "cat sat"]), 1.0));
    }

    #[test]
    fn lcs_is_symmetric_and_exact() {
        let w = |s: &str| rouge_words(s);
        assert_eq!(lcs_len(&w("a b c d e f"), &w("x b y d f")), 3);
        assert_eq!(lcs_len(&w("x b y d f"), &w("a b c d e f")), 3);
        assert_eq!(lcs_len(&w(""), &w("a")), 0);
    }

    #[test]
    fn choices_parse_and_score() {
        assert_eq!(parse_choice(" B", 4), Some(1));
        assert_eq!(parse_choice("(C) because", 4), Some(2));
        assert_eq!(
            parse_choice("Answer: D.", 4),
            Some(3),
            "the A of Answer is not a choice"
        );
        assert_eq!(parse_choice("E", 4), None, "only the first n letters");
        assert_eq!(parse_choice("none", 4), None);
        assert_eq!(parse_choice("AB", 4), None);
        assert_eq!(choice_letter(0), 'A');
        assert_eq!(choice_letter(3), 'D');
        let acc = choice_accuracy(&[(Some(0), 0), (Some(1), 2), (None, 1), (Some(3), 3)]);
        assert_eq!(acc, Some(0.5));
        assert_eq!(choice_accuracy(&[]), None);
    }
}
