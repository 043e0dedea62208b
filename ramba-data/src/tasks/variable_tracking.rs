//! `kind = "variable_tracking"`: RULER's variable tracking. Chains of assignments
//! (`VAR ABCDE = 12345.`, then `VAR FGHIJ = VAR ABCDE.`, …) hidden in a haystack; the question
//! gives one chain's value and the answer lists every variable of that chain, in chain order.
//! The other chains, with other values, are distractors. Multi-hop tracing over long range.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::prompt::check_depth;
use super::task_prompt::{join_items, EvalTask};
use super::words::draw_distinct;
use super::{Needle, Sample, SyntheticTask, TaskContext, TaskPrompt};

/// Upper bound on `variable_tracking.chains`.
pub const MAX_CHAINS: usize = 16;
/// Upper bound on `variable_tracking.hops`.
pub const MAX_HOPS: usize = 32;
/// Letters in a variable name.
const NAME_LEN: usize = 5;

/// Settings of the variable-tracking task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VariableTrackingTask {
    /// Chains of assignments, each from its own value; the first is asked for.
    pub chains: usize,
    /// Assignments after the first in each chain: a chain names `hops + 1` variables.
    pub hops: usize,
    /// Haystack text: a file, or a folder whose `*.txt` / `*.md` files are read in sorted
    /// order (relative to the config file), repeated or cut to length. Absent: the passkey
    /// filler. Variable names and values never occur in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub haystack: Option<PathBuf>,
}

impl Default for VariableTrackingTask {
    /// One chain of four hops (RULER's setting).
    fn default() -> Self {
        Self {
            chains: 1,
            hops: 4,
            haystack: None,
        }
    }
}

impl SyntheticTask for VariableTrackingTask {
    fn name(&self) -> &'static str {
        "variable_tracking"
    }

    fn validate(&self, key: &str) -> Result<()> {
        let Self { chains, hops, .. } = *self;
        if chains == 0 || chains > MAX_CHAINS {
            bail!("{key}.chains must be in 1..={MAX_CHAINS} (got {chains})");
        }
        if hops == 0 || hops > MAX_HOPS {
            bail!("{key}.hops must be in 1..={MAX_HOPS} (got {hops})");
        }
        super::validate_haystack(&self.haystack, key)
    }

    fn haystack_path(&self) -> Option<&Path> {
        self.haystack.as_deref()
    }

    fn check_fits(&self, ctx: &TaskContext, len: usize) -> Result<()> {
        let names = vec![vec!["Z".repeat(NAME_LEN); self.hops + 1]; self.chains];
        let values = vec!["99999".to_string(); self.chains];
        let depths = vec![vec![0.5; self.hops + 1]; self.chains];
        vt_from(ctx, len, &names, &values, &depths, 0).map(|_| ())
    }

    fn sample(&self, ctx: &TaskContext, len: usize, rng: &mut dyn RngCore) -> Result<Sample> {
        let depth = rng.random_range(0.0..=1.0);
        Ok(self.prompt(ctx, len, depth, rng)?.into_sample())
    }
}

impl EvalTask for VariableTrackingTask {
    /// The asked chain's first assignment goes at `depth`, its later ones at random depths
    /// after it; every other chain starts at a random depth.
    fn prompt(
        &self,
        ctx: &TaskContext,
        len: usize,
        depth: f64,
        rng: &mut dyn RngCore,
    ) -> Result<TaskPrompt> {
        check_depth(depth)?;
        let hay = ctx.hay();
        let per_chain = self.hops + 1;
        let mut taken = HashSet::new();
        let name = |r: &mut dyn RngCore| -> String {
            (0..NAME_LEN)
                .map(|_| char::from(b'A' + r.random_range(0..26u8)))
                .collect()
        };
        // "VAR" itself is three letters, so no five-letter name can be mistaken for it.
        let flat = draw_distinct(
            self.chains * per_chain,
            hay,
            &mut taken,
            "variable names",
            name,
            rng,
        )?;
        let names: Vec<Vec<String>> = flat.chunks(per_chain).map(<[_]>::to_vec).collect();
        let number = |r: &mut dyn RngCore| r.random_range(10_000..=99_999u32).to_string();
        let values = draw_distinct(self.chains, hay, &mut taken, "values", number, rng)?;
        let depths: Vec<Vec<f64>> = (0..self.chains)
            .map(|c| {
                let start = if c == 0 {
                    depth
                } else {
                    rng.random_range(0.0..=1.0)
                };
                // Sorted, so each chain reads in order: a variable is assigned before it is
                // copied.
                let mut rest: Vec<f64> = (1..per_chain)
                    .map(|_| rng.random_range(start..=1.0))
                    .collect();
                rest.sort_by(f64::total_cmp);
                std::iter::once(start).chain(rest).collect()
            })
            .collect();
        let first = rng.random_range(0..hay.n_sentences());
        vt_from(ctx, len, &names, &values, &depths, first)
    }
}

/// The prompt: instruction, haystack from sentence `first` with chain `c`'s assignments at
/// `depths[c]` (nondecreasing, so the chain reads in order), and the question for chain 0's
/// value, answered with chain 0's names.
fn vt_from(
    ctx: &TaskContext,
    len: usize,
    names: &[Vec<String>],
    values: &[String],
    depths: &[Vec<f64>],
    first: usize,
) -> Result<TaskPrompt> {
    let tok = ctx.tok.as_ref();
    let head = tok.encode(
        "Memorize the variable assignments hidden in the text below. You will be asked which \
         variables hold a given value.",
    );
    let mut needles = Vec::new();
    for ((chain, value), ds) in names.iter().zip(values).zip(depths) {
        for (i, (name, &depth)) in chain.iter().zip(ds).enumerate() {
            let text = match i {
                0 => format!(" VAR {name} = {value}."),
                _ => format!(" VAR {name} = VAR {}.", chain[i - 1]),
            };
            needles.push(Needle {
                depth,
                tokens: tok.encode(&text),
            });
        }
    }
    let value = &values[0];
    let tail = tok.encode(&format!(
        " Which variables are assigned the value {value} in the text above? Answer:"
    ));
    let gold = names[0].clone();
    let answer_text = join_items(&gold);
    let answer = tok.encode(&answer_text);
    let Some((prompt, starts)) =
        ctx.hay()
            .with_needles(len, &head, &needles, &tail, answer.len(), first)
    else {
        let fixed = head.len()
            + needles.iter().map(|n| n.tokens.len()).sum::<usize>()
            + tail.len()
            + answer.len();
        bail!(
            "variable tracking with {} assignments needs {fixed} tokens but is {len} tokens \
             (tokenizer {})",
            needles.len(),
            tok.name()
        );
    };
    let mut spans: Vec<(usize, usize)> = starts
        .iter()
        .zip(&needles)
        .map(|(&s, n)| (s, s + n.tokens.len()))
        .collect();
    spans.sort_unstable();
    let target = spans.iter().position(|&(s, _)| s == starts[0]);
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
mod tests {
    use super::super::needles::tests::{depth_of, with_haystack};
    use super::super::tests::generator;
    use super::super::Task;
    use super::*;
    use crate::test_util::TempDir;
    use crate::tokenizer::{ByteTokenizer, Tokenizer};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::collections::HashMap;

    /// Runs the assignments in prompt order; returns the variables holding `value`.
    fn holders(statements: &[String], value: &str) -> Vec<String> {
        let mut env: HashMap<String, String> = HashMap::new();
        let mut order = Vec::new();
        for s in statements {
            let body = s.trim().trim_start_matches("VAR ").trim_end_matches('.');
            let (name, rhs) = body.split_once(" = ").unwrap();
            let v = match rhs.strip_prefix("VAR ") {
                Some(src) => env.get(src).cloned().expect("assigned before use"),
                None => rhs.to_string(),
            };
            env.insert(name.to_string(), v);
            order.push(name.to_string());
        }
        order.retain(|n| env[n] == value);
        order
    }

    #[test]
    fn chains_resolve_to_exactly_the_answer() {
        let tok = ByteTokenizer;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let d = TempDir::new("vt");
        let essay =
            "Old maps show roads that are gone. Some towns moved. Others vanished entirely.";
        let task = |haystack| {
            Task::VariableTracking(VariableTrackingTask {
                chains: 3,
                hops: 4,
                haystack,
            })
        };
        for g in [
            generator(task(None)),
            with_haystack(&d, task(Some("hay.txt".into())), essay),
        ] {
            for depth in [0.0, 0.3, 0.7, 1.0] {
                let p = g.eval_prompt(2500, depth, &mut rng).unwrap();
                assert_eq!(p.total_len(), 2500);
                assert_eq!(p.needles.len(), 15);
                let statements: Vec<String> = p
                    .needles
                    .iter()
                    .map(|&(s, e)| tok.decode(&p.prompt[s..e]))
                    .collect();
                let prompt = tok.decode(&p.prompt);
                let value = prompt
                    .rsplit("assigned the value ")
                    .next()
                    .unwrap()
                    .trim_end_matches(" in the text above? Answer:");
                assert_eq!(p.gold.len(), 5);
                assert_eq!(holders(&statements, value), p.gold, "{statements:?}");
                // The target is the asked chain's first assignment, the value itself.
                let first = &statements[p.target.unwrap()];
                assert_eq!(first, &format!(" VAR {} = {value}.", p.gold[0]));
                assert_eq!(prompt.matches(value).count(), 2, "statement and question");
                let (at, hay) = depth_of(&p);
                assert!(
                    (at as f64 - depth * hay as f64).abs() <= 40.0,
                    "{at} of {hay}"
                );
                // Names are all distinct.
                let mut names: Vec<&str> = statements
                    .iter()
                    .map(|s| s.split_whitespace().nth(1).unwrap())
                    .collect();
                names.sort_unstable();
                names.dedup();
                assert_eq!(names.len(), 15);
                // Scoring: all five in any order; four, or a distractor added, are wrong.
                let mut rev = p.gold.clone();
                rev.reverse();
                assert!(p.score(&p.answer_text) && p.score(&rev.join(", ")));
                assert!(!p.score(&p.gold[1..].join(", ")));
                let other = names
                    .iter()
                    .find(|n| !p.gold.iter().any(|g| g == *n))
                    .unwrap();
                assert!(!p.score(&format!("{}, {other}", p.gold.join(", "))));
            }
        }
    }

    #[test]
    fn limits_are_named() {
        let bad = |t: VariableTrackingTask| format!("{:#}", t.validate("s").unwrap_err());
        let d = VariableTrackingTask::default();
        assert_eq!(
            bad(VariableTrackingTask {
                chains: 0,
                ..d.clone()
            }),
            "s.chains must be in 1..=16 (got 0)"
        );
        assert_eq!(
            bad(VariableTrackingTask {
                hops: 33,
                ..d.clone()
            }),
            "s.hops must be in 1..=32 (got 33)"
        );
        let g = generator(Task::VariableTracking(VariableTrackingTask {
            chains: 4,
            hops: 8,
            haystack: None,
        }));
        let msg = format!("{:#}", g.check_fits(500).unwrap_err());
        assert!(
            msg.contains("36 assignments") && msg.contains("500 tokens"),
            "{msg}"
        );
        g.check_fits(1200).unwrap();
    }
}
