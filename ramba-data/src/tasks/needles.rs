//! The needle-in-a-haystack prompt shared by the `niah*` tasks (RULER's NIAH family): keys
//! filed with one or more values as needle sentences in a haystack, then a question for the
//! values of one or more keys. The variants differ only in how many keys, values per key and
//! asked keys they use ([`NiahShape`]).

use std::collections::HashSet;

use anyhow::{bail, ensure, Result};
use rand::{Rng, RngCore};

use super::prompt::check_depth;
use super::task_prompt::join_items;
use super::words::{draw_keys, draw_values, longest_key, NeedleValue};
use super::{Needle, TaskContext, TaskPrompt};

/// Upper bound on the needles of one kind in a NIAH prompt (keys, values per key, or asked
/// keys): each needle is ~20 tokens, and the `word` values run out at 64.
pub const MAX_NIAH_NEEDLES: usize = 64;

/// How many needles a NIAH prompt holds and asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NiahShape {
    /// Distinct keys in the haystack (the asked ones and distractors).
    pub(crate) keys: usize,
    /// Values filed under every key, each its own needle.
    pub(crate) values: usize,
    /// Keys asked for (the first `queries` keys); the answer lists all their values.
    pub(crate) queries: usize,
}

/// A NIAH prompt with random keys and values (distinct, and absent from the haystack), the
/// first value of the first asked key at `depth` and every other needle at a random depth.
pub(crate) fn niah_prompt(
    ctx: &TaskContext,
    len: usize,
    kind: NeedleValue,
    shape: NiahShape,
    depth: f64,
    rng: &mut dyn RngCore,
) -> Result<TaskPrompt> {
    check_depth(depth)?;
    let hay = ctx.hay();
    // One pool for keys and values, so no value can equal a key or another value.
    let mut taken = HashSet::new();
    let keys = draw_keys(shape.keys, hay, &mut taken, rng)?;
    let flat = draw_values(kind, shape.keys * shape.values, hay, &mut taken, rng)?;
    let values: Vec<Vec<String>> = flat.chunks(shape.values).map(<[_]>::to_vec).collect();
    let depths: Vec<Vec<f64>> = (0..shape.keys)
        .map(|k| {
            (0..shape.values)
                .map(|v| {
                    if (k, v) == (0, 0) {
                        depth
                    } else {
                        rng.random_range(0.0..=1.0)
                    }
                })
                .collect()
        })
        .collect();
    let first = rng.random_range(0..hay.n_sentences());
    niah_from(
        ctx,
        len,
        kind,
        &keys,
        &values,
        shape.queries,
        &depths,
        first,
    )
}

/// Errors when a NIAH prompt of `shape` with the longest keys and values cannot be `len`
/// tokens long.
pub(crate) fn niah_fits(
    ctx: &TaskContext,
    len: usize,
    kind: NeedleValue,
    shape: NiahShape,
) -> Result<()> {
    let keys = vec![longest_key(); shape.keys];
    let values = vec![vec![kind.longest(); shape.values]; shape.keys];
    let depths = vec![vec![0.5; shape.values]; shape.keys];
    niah_from(ctx, len, kind, &keys, &values, shape.queries, &depths, 0).map(|_| ())
}

/// `a`, `a and b`, `a, b and c`.
fn spoken_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The prompt: instruction, haystack from sentence `first` with `keys[k]`'s value
/// `values[k][v]` at `depths[k][v]`, and the question for the first `queries` keys. The
/// answer lists the asked keys' values, key by key in question order and, within a key, in
/// the order they appear in the text.
#[allow(clippy::too_many_arguments)]
fn niah_from(
    ctx: &TaskContext,
    len: usize,
    kind: NeedleValue,
    keys: &[String],
    values: &[Vec<String>],
    queries: usize,
    depths: &[Vec<f64>],
    first: usize,
) -> Result<TaskPrompt> {
    let tok = ctx.tok.as_ref();
    let noun = kind.noun();
    let head = tok.encode(&format!(
        "Special magic {noun}s are hidden in the text below. Memorize them."
    ));
    let mut needles = Vec::new();
    for ((key, vals), ds) in keys.iter().zip(values).zip(depths) {
        for (val, &depth) in vals.iter().zip(ds) {
            needles.push(Needle {
                depth,
                tokens: tok.encode(&format!(" The special magic {noun} for {key} is {val}.")),
            });
        }
    }
    let asked = spoken_list(&keys[..queries]);
    let question = if queries == 1 && values[0].len() == 1 {
        format!(" What is the special magic {noun} for {asked}? Answer:")
    } else {
        format!(" What are all the special magic {noun}s for {asked}? Answer:")
    };
    let tail = tok.encode(&question);
    // Needle index of (key k, value v), in the order pushed above.
    let per_key = values.first().map_or(0, Vec::len);
    let index = |k: usize, v: usize| k * per_key + v;
    // The answer's length does not depend on the order of the items, so it can be measured
    // before the placement decides that order.
    let gold_len: Vec<String> = (0..queries).flat_map(|k| values[k].clone()).collect();
    let answer_len = tok.encode(&join_items(&gold_len)).len();
    let Some((prompt, starts)) = ctx
        .hay()
        .with_needles(len, &head, &needles, &tail, answer_len, first)
    else {
        let fixed = head.len()
            + needles.iter().map(|n| n.tokens.len()).sum::<usize>()
            + tail.len()
            + answer_len;
        bail!(
            "a needle prompt with {} needle(s) needs {fixed} tokens but is {len} tokens \
             (tokenizer {})",
            needles.len(),
            tok.name()
        );
    };
    let mut gold = Vec::new();
    for k in 0..queries {
        let mut vs: Vec<usize> = (0..values[k].len()).collect();
        vs.sort_by_key(|&v| starts[index(k, v)]);
        gold.extend(vs.into_iter().map(|v| values[k][v].clone()));
    }
    let answer_text = join_items(&gold);
    let answer = tok.encode(&answer_text);
    // Equal for the byte tokenizer; a subword tokenizer could merge differently across the
    // reordered items, and the caller redraws on this error.
    ensure!(
        answer.len() == answer_len,
        "the answer{answer_text} tokenizes to {} tokens in this order, {answer_len} in another \
         (tokenizer {})",
        answer.len(),
        tok.name()
    );
    let mut spans: Vec<(usize, usize)> = starts
        .iter()
        .zip(&needles)
        .map(|(&s, n)| (s, s + n.tokens.len()))
        .collect();
    spans.sort_unstable();
    let target = spans.iter().position(|&(s, _)| s == starts[index(0, 0)]);
    Ok(TaskPrompt {
        haystack: (head.len(), prompt.len() - tail.len()),
        prompt,
        answer,
        answer_text,
        gold,
        needles: spans,
        target,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::tests::generator;
    use super::super::{
        NiahMultiKeyTask, NiahMultiQueryTask, NiahMultiValueTask, NiahTask, Task, TaskGenerator,
    };
    use super::*;
    use crate::test_util::TempDir;
    use crate::tokenizer::{ByteTokenizer, Tokenizer};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::sync::Arc;

    /// Haystack tokens before the target needle, and the haystack's length without needles:
    /// the depth is the first over the second.
    pub(crate) fn depth_of(p: &TaskPrompt) -> (usize, usize) {
        let t = p.target.expect("a target needle");
        let needle_len = |&(s, e): &(usize, usize)| e - s;
        let before: usize = p.needles[..t].iter().map(needle_len).sum();
        let all: usize = p.needles.iter().map(needle_len).sum();
        (
            p.needles[t].0 - p.haystack.0 - before,
            p.haystack.1 - p.haystack.0 - all,
        )
    }

    /// A generator of `task` reading `text` as its haystack file (`hay.txt` in `dir`).
    pub(crate) fn with_haystack(dir: &TempDir, task: Task, text: &str) -> TaskGenerator {
        dir.write("hay.txt", text.as_bytes());
        TaskGenerator::new_in(Arc::new(ByteTokenizer), task, dir.path()).unwrap()
    }

    fn hay_path() -> Option<std::path::PathBuf> {
        Some("hay.txt".into())
    }

    /// Every needle's text, in prompt order.
    fn needle_texts(p: &TaskPrompt) -> Vec<String> {
        p.needles
            .iter()
            .map(|&(s, e)| ByteTokenizer.decode(&p.prompt[s..e]))
            .collect()
    }

    /// `(key, value)` of a needle sentence.
    fn parse_needle(s: &str) -> (String, String) {
        let rest = s.split(" for ").nth(1).unwrap();
        let (key, value) = rest.split_once(" is ").unwrap();
        (key.to_string(), value.trim_end_matches('.').to_string())
    }

    #[test]
    fn single_needle_sits_at_its_depth() {
        let tok = ByteTokenizer;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let d = TempDir::new("niah-depth");
        let essay =
            "Rivers carve valleys over long ages. Mountains rise slowly! Do stones remember? "
                .repeat(3);
        for value in [NeedleValue::Number, NeedleValue::Uuid, NeedleValue::Word] {
            let filler = generator(Task::Niah(NiahTask {
                value,
                haystack: None,
            }));
            let file = with_haystack(
                &d,
                Task::Niah(NiahTask {
                    value,
                    haystack: hay_path(),
                }),
                &essay,
            );
            for g in [filler, file] {
                for len in [400usize, 1000, 3000] {
                    for depth in [0.0, 0.25, 0.5, 0.9, 1.0] {
                        let p = g.eval_prompt(len, depth, &mut rng).unwrap();
                        assert_eq!(p.total_len(), len);
                        assert_eq!((p.needles.len(), p.target), (1, Some(0)));
                        let (at, hay) = depth_of(&p);
                        // Needles go to sentence boundaries: within one sentence (≤ 40 bytes).
                        let want = depth * hay as f64;
                        assert!(
                            (at as f64 - want).abs() <= 40.0,
                            "{value:?} len {len} depth {depth}: at {at} of {hay}"
                        );
                        let text = tok.decode(&p.tokens());
                        let (key, val) = parse_needle(&needle_texts(&p)[0]);
                        assert_eq!(p.gold, [val.as_str()]);
                        assert_eq!(p.answer_text, format!(" {val}."));
                        assert!(text.ends_with(&format!("{key}? Answer: {val}.")), "{text}");
                        assert_eq!(text.matches(&val).count(), 2, "needle and answer only");
                        assert!(p.score(&p.answer_text) && p.score(&format!("{val}.")));
                    }
                }
            }
        }
    }

    #[test]
    fn multi_key_distractors_never_collide_with_the_answer() {
        let tok = ByteTokenizer;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for value in [NeedleValue::Number, NeedleValue::Uuid, NeedleValue::Word] {
            let g = generator(Task::NiahMultiKey(NiahMultiKeyTask {
                n_keys: 8,
                value,
                haystack: None,
            }));
            for depth in [0.0, 0.3, 1.0] {
                let p = g.eval_prompt(2000, depth, &mut rng).unwrap();
                let needles: Vec<(String, String)> =
                    needle_texts(&p).iter().map(|s| parse_needle(s)).collect();
                assert_eq!(needles.len(), 8);
                let (asked_key, asked_value) = &needles[p.target.unwrap()];
                let prompt = tok.decode(&p.prompt);
                assert!(prompt.ends_with(&format!("for {asked_key}? Answer:")));
                assert_eq!(p.gold, [asked_value.as_str()]);
                // Keys and values are all distinct: exactly one needle answers the question.
                let mut keys: Vec<&String> = needles.iter().map(|n| &n.0).collect();
                let mut values: Vec<&String> = needles.iter().map(|n| &n.1).collect();
                keys.sort();
                keys.dedup();
                values.sort();
                values.dedup();
                assert_eq!((keys.len(), values.len()), (8, 8));
                assert_eq!(prompt.matches(asked_value.as_str()).count(), 1);
                // A distractor's value is a near miss the scorer rejects.
                for (k, v) in &needles {
                    assert_eq!(p.score(&format!(" {v}")), k == asked_key, "{k} {v}");
                }
                let (at, hay) = depth_of(&p);
                assert!(
                    (at as f64 - depth * hay as f64).abs() <= 22.0,
                    "{at} of {hay}"
                );
            }
        }
    }

    #[test]
    fn multi_value_answers_every_value_in_text_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let g = generator(Task::NiahMultiValue(NiahMultiValueTask {
            n_values: 5,
            value: NeedleValue::Uuid,
            haystack: None,
        }));
        for depth in [0.0, 0.5, 1.0] {
            let p = g.eval_prompt(3000, depth, &mut rng).unwrap();
            let needles: Vec<(String, String)> =
                needle_texts(&p).iter().map(|s| parse_needle(s)).collect();
            assert!(needles.iter().all(|n| n.0 == needles[0].0), "one key");
            let in_order: Vec<String> = needles.iter().map(|n| n.1.clone()).collect();
            assert_eq!(p.gold, in_order);
            assert_eq!(p.answer_text, format!(" {}.", in_order.join(", ")));
            // All five, any order; four, a repeat, a cut UUID or an extra are wrong.
            let mut shuffled = in_order.clone();
            shuffled.reverse();
            assert!(p.score(&shuffled.join(", ")));
            assert!(!p.score(&in_order[..4].join(", ")));
            let mut repeat = in_order.clone();
            repeat[4] = repeat[0].clone();
            assert!(!p.score(&repeat.join(", ")));
            let mut cut = in_order.clone();
            cut[2].pop();
            assert!(!p.score(&cut.join(", ")));
            assert!(!p.score(&format!("{}, {}", in_order.join(", "), "0")));
            assert_eq!(p.recall(&in_order[..4].join(", ")), 0.8);
            let (at, hay) = depth_of(&p);
            assert!(
                (at as f64 - depth * hay as f64).abs() <= 22.0,
                "{at} of {hay}"
            );
        }
    }

    #[test]
    fn multi_query_answers_in_question_order() {
        let tok = ByteTokenizer;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let g = generator(Task::NiahMultiQuery(NiahMultiQueryTask {
            n_queries: 3,
            value: NeedleValue::Word,
            haystack: None,
        }));
        let p = g.eval_prompt(1500, 0.4, &mut rng).unwrap();
        let needles: Vec<(String, String)> =
            needle_texts(&p).iter().map(|s| parse_needle(s)).collect();
        let prompt = tok.decode(&p.prompt);
        let asked = prompt
            .rsplit(" for ")
            .next()
            .unwrap()
            .trim_end_matches("? Answer:");
        let asked: Vec<&str> = asked
            .split([',', ' '])
            .filter(|w| !w.is_empty() && *w != "and")
            .collect();
        assert_eq!(asked.len(), 3, "{prompt}");
        let want: Vec<String> = asked
            .iter()
            .map(|k| needles.iter().find(|n| n.0 == *k).unwrap().1.clone())
            .collect();
        assert_eq!(p.gold, want);
        assert!(p.score(&p.answer_text));
        assert!(!p.score(&want[..2].join(", ")));
        // The target is the first asked key's needle, at the depth asked for.
        assert_eq!(needles[p.target.unwrap()].0, asked[0]);
        let (at, hay) = depth_of(&p);
        assert!(
            (at as f64 - 0.4 * hay as f64).abs() <= 22.0,
            "{at} of {hay}"
        );
    }

    #[test]
    fn needles_never_occur_in_a_file_haystack() {
        let d = TempDir::new("niah-overlap");
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        // A haystack naming all value words but two, and many keys: the draws must avoid
        // every one of them.
        let mut text: Vec<String> = crate::tasks::VALUE_WORDS[2..]
            .iter()
            .map(|w| format!("The {w} is ripe."))
            .collect();
        text.extend(
            crate::tasks::KEY_ADJECTIVES
                .iter()
                .zip(crate::tasks::KEY_NOUNS)
                .map(|(a, n)| format!("A {a}-{n} passed.")),
        );
        let g = with_haystack(
            &d,
            Task::NiahMultiValue(NiahMultiValueTask {
                n_values: 2,
                value: NeedleValue::Word,
                haystack: hay_path(),
            }),
            &text.join(" "),
        );
        let hay = reload_haystack(&d);
        for _ in 0..20 {
            let p = g.eval_prompt(1200, 0.5, &mut rng).unwrap();
            let mut gold = p.gold.clone();
            gold.sort();
            assert_eq!(gold, ["acorn", "almond"]);
            for (k, _) in needle_texts(&p).iter().map(|s| parse_needle(s)) {
                assert!(!hay.contains_word(&k), "{k}");
            }
        }
        // Three word values cannot be drawn: an error that says so.
        let g = with_haystack(
            &d,
            Task::NiahMultiValue(NiahMultiValueTask {
                n_values: 3,
                value: NeedleValue::Word,
                haystack: hay_path(),
            }),
            &text.join(" "),
        );
        let msg = format!("{:#}", g.eval_prompt(1200, 0.5, &mut rng).unwrap_err());
        assert!(
            msg.contains("word values") && msg.contains("haystack"),
            "{msg}"
        );
        // Numbers: a haystack full of seven-digit numbers.
        let nums: Vec<String> = (0..2000)
            .map(|i| format!("Item {}.", 1_000_000 + i * 4_500))
            .collect();
        let g = with_haystack(
            &d,
            Task::NiahMultiKey(NiahMultiKeyTask {
                n_keys: 8,
                value: NeedleValue::Number,
                haystack: hay_path(),
            }),
            &nums.join(" "),
        );
        let hay = reload_haystack(&d);
        for _ in 0..10 {
            let p = g.eval_prompt(4000, 0.5, &mut rng).unwrap();
            for (_, v) in needle_texts(&p).iter().map(|s| parse_needle(s)) {
                assert!(!hay.contains_word(&v), "{v} is in the haystack");
            }
        }
    }

    /// The haystack file of [`with_haystack`], loaded again.
    fn reload_haystack(d: &TempDir) -> crate::tasks::HaystackText {
        crate::tasks::HaystackText::load(&d.path().join("hay.txt")).unwrap()
    }

    #[test]
    fn limits_and_fit_errors_are_named() {
        let bad = |t: Task| format!("{:#}", t.validate("s").unwrap_err());
        let d = NiahMultiKeyTask::default();
        assert_eq!(
            bad(Task::NiahMultiKey(NiahMultiKeyTask {
                n_keys: 1,
                ..d.clone()
            })),
            "s.n_keys must be in 2..=64 (got 1)"
        );
        assert_eq!(
            bad(Task::NiahMultiValue(NiahMultiValueTask {
                n_values: 65,
                ..NiahMultiValueTask::default()
            })),
            "s.n_values must be in 2..=64 (got 65)"
        );
        assert_eq!(
            bad(Task::NiahMultiQuery(NiahMultiQueryTask {
                n_queries: 0,
                ..NiahMultiQueryTask::default()
            })),
            "s.n_queries must be in 2..=64 (got 0)"
        );
        assert_eq!(
            bad(Task::Niah(NiahTask {
                haystack: Some("".into()),
                ..NiahTask::default()
            })),
            "s.haystack must not be empty (leave it out for the passkey filler)"
        );
        let g = generator(Task::NiahMultiKey(d));
        let msg = format!("{:#}", g.check_fits(300).unwrap_err());
        assert!(
            msg.contains("4 needle(s)") && msg.contains("300 tokens"),
            "{msg}"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        assert!(
            g.eval_prompt(1000, 1.5, &mut rng).is_err(),
            "depth out of range"
        );
        // A missing haystack file is an error naming it, at construction.
        let dir = TempDir::new("niah-missing");
        let task = Task::Niah(NiahTask {
            haystack: Some("essays".into()),
            ..NiahTask::default()
        });
        let msg = format!(
            "{:#}",
            TaskGenerator::new_in(Arc::new(ByteTokenizer), task, dir.path()).unwrap_err()
        );
        assert!(
            msg.contains("niah.haystack") && msg.contains("essays"),
            "{msg}"
        );
    }
}
