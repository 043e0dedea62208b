//! One configured data source, ready to produce rows: loaded token streams with their
//! train/val parts, or a synthetic task generator.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rand::Rng;

use crate::config::{DataConfig, SourceConfig};
use crate::downstream::ExampleSet;
use crate::shards::ShardSet;
use crate::split::Split;
use crate::tasks::TaskGenerator;
use crate::text::load_text;
use crate::tokenizer::Tokenizer;

/// Where a token source's ids live.
enum TokenStore {
    /// Tokenized text, held in memory.
    Memory(Vec<u32>),
    /// Memory-mapped shards.
    Shards(ShardSet),
}

impl TokenStore {
    fn len(&self) -> usize {
        match self {
            TokenStore::Memory(t) => t.len(),
            TokenStore::Shards(s) => s.len(),
        }
    }
}

enum Body {
    Tokens {
        store: TokenStore,
        train: Range<usize>,
        val: Range<usize>,
        /// "3 documents" / "2 files", for [`Source::describe`].
        units: String,
    },
    Task(TaskGenerator),
    /// Downstream examples; rows train on their answers only.
    Examples(ExampleSet),
}

/// A source ready to sample from.
pub(crate) struct Source {
    /// `data.sources[i] (kind path)`: how errors and logs refer to this source.
    pub(crate) label: String,
    /// Relative sampling weight.
    pub(crate) weight: f64,
    body: Body,
}

/// One generated row of `seq_len + 1` tokens.
pub(crate) struct Row {
    pub(crate) tokens: Vec<u32>,
    /// Token ranges of the answers within `tokens`, in order.
    pub(crate) answers: Vec<(usize, usize)>,
    /// Something was substituted to keep the row valid (see `DataPipeline::try_batch`).
    pub(crate) problem: Option<String>,
    /// Only the answers carry loss (downstream examples: the prompt is given, and padding is
    /// not text).
    pub(crate) answers_only: bool,
}

/// Train/val token ranges: the last `round(n × val_fraction)` tokens validate, the rest
/// train (rounding the held-out count, not `n × (1 − f)`, so 5% of 5000 is exactly 250
/// despite 0.95 not being representable). With `val_fraction == 0` nothing is held out
/// and both splits read everything.
fn split_ranges(n: usize, val_fraction: f64) -> (Range<usize>, Range<usize>) {
    if val_fraction == 0.0 {
        return (0..n, 0..n);
    }
    let held_out = ((n as f64) * val_fraction).round() as usize;
    let t = n - held_out.min(n);
    (0..t, t..n)
}

/// A token source's body: its train/val ranges, checked to hold a row each.
fn token_body(store: TokenStore, units: String, label: &str, data: &DataConfig) -> Result<Body> {
    let window = data.seq_len + 1;
    let n = store.len();
    let (train, val) = split_ranges(n, data.val_fraction);
    for (name, r) in [("train", &train), ("val", &val)] {
        if r.len() < window {
            bail!(
                "{label}: the {name} split has {} tokens (of {n}, data.val_fraction = {}), \
                 fewer than the data.seq_len + 1 = {window} each row needs",
                r.len(),
                data.val_fraction
            );
        }
    }
    Ok(Body::Tokens {
        store,
        train,
        val,
        units,
    })
}

impl Source {
    /// Loads/prepares source `index` of `data`; relative paths resolve against `base_dir`.
    pub(crate) fn build(
        index: usize,
        cfg: &SourceConfig,
        data: &DataConfig,
        tok: &Arc<dyn Tokenizer>,
        base_dir: &Path,
    ) -> Result<Self> {
        let label = match cfg.path() {
            Some(p) => format!("data.sources[{index}] ({} {})", cfg.kind(), p.display()),
            None => format!("data.sources[{index}] ({})", cfg.kind()),
        };
        let window = data.seq_len + 1;
        let body = match cfg {
            SourceConfig::Task { task, .. } => {
                let g = TaskGenerator::new_in(tok.clone(), task.clone(), base_dir)
                    .with_context(|| label.clone())?;
                g.check_fits(window).with_context(|| {
                    format!("{label} does not fit in data.seq_len + 1 = {window} tokens")
                })?;
                Body::Task(g)
            }
            SourceConfig::Text { path, .. } => {
                let (t, docs) =
                    load_text(&base_dir.join(path), tok.as_ref()).with_context(|| label.clone())?;
                token_body(
                    TokenStore::Memory(t),
                    format!("{docs} documents"),
                    &label,
                    data,
                )?
            }
            SourceConfig::Jsonl {
                path,
                format,
                too_long,
                ..
            } => Body::Examples(
                ExampleSet::build(
                    &base_dir.join(path),
                    *format,
                    *too_long,
                    tok.as_ref(),
                    window,
                    data.val_fraction,
                    &label,
                )
                .with_context(|| label.clone())?,
            ),
            SourceConfig::Shards { path, dtype, .. } => {
                let set = ShardSet::open(&base_dir.join(path), *dtype)
                    .and_then(|s| {
                        s.check_vocab(tok.vocab_size(), &tok.name())?;
                        Ok(s)
                    })
                    .with_context(|| label.clone())?;
                let files = set.n_files();
                token_body(
                    TokenStore::Shards(set),
                    format!("{files} files"),
                    &label,
                    data,
                )?
            }
        };
        Ok(Self {
            label,
            weight: cfg.weight(),
            body,
        })
    }

    /// A row of exactly `n` tokens. Token sources read a uniformly random window of the
    /// split's range; tasks generate a fresh sample (falling back to `fallback`, filler,
    /// if a sample cannot be built, which `check_fits` makes rare to impossible).
    pub(crate) fn row<R: Rng + ?Sized>(
        &self,
        split: Split,
        n: usize,
        rng: &mut R,
        tok: &dyn Tokenizer,
        fallback: &TaskGenerator,
    ) -> Row {
        match &self.body {
            Body::Tokens {
                store, train, val, ..
            } => {
                let r = match split {
                    Split::Train => train,
                    Split::Val => val,
                };
                // `build` guaranteed r.len() >= n.
                let start = rng.random_range(r.start..=r.end - n);
                let (tokens, problem) = match store {
                    TokenStore::Memory(t) => (t[start..start + n].to_vec(), None),
                    TokenStore::Shards(s) => {
                        let mut w = vec![0; n];
                        let p = s.read(start, &mut w, tok.vocab_size(), tok.eos_id());
                        (
                            w,
                            p.map(|p| format!("{}: {p} (replaced by EOS)", self.label)),
                        )
                    }
                };
                Row {
                    tokens,
                    answers: Vec::new(),
                    problem,
                    answers_only: false,
                }
            }
            Body::Examples(set) => {
                let (tokens, answers) = set.row(split, n, rng, tok.eos_id());
                Row {
                    tokens,
                    answers,
                    problem: None,
                    answers_only: true,
                }
            }
            Body::Task(g) => {
                // A few redraws (still deterministic: same rng) before giving up, since
                // with subword tokenizers a rare key may tokenize longer than checked.
                let mut last_err = None;
                for _ in 0..8 {
                    match g.sample(n, rng) {
                        Ok(s) => {
                            return Row {
                                tokens: s.tokens,
                                answers: s.answers,
                                problem: None,
                                answers_only: false,
                            }
                        }
                        Err(e) => last_err = Some(e),
                    }
                }
                let problem = Some(format!(
                    "{}: cannot generate a {n}-token sample ({:#}); used filler instead",
                    self.label,
                    last_err.unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
                ));
                match fallback.sample(n, rng) {
                    Ok(s) => Row {
                        tokens: s.tokens,
                        answers: Vec::new(),
                        problem,
                        answers_only: false,
                    },
                    // Filler cannot fail for n >= 1; EOS padding keeps the shape anyway.
                    Err(_) => Row {
                        tokens: vec![tok.eos_id(); n],
                        answers: Vec::new(),
                        problem,
                        answers_only: false,
                    },
                }
            }
        }
    }

    /// One log line: what the source is and how much data it holds.
    pub(crate) fn describe(&self, total_weight: f64) -> String {
        let share = 100.0 * self.weight / total_weight;
        match &self.body {
            Body::Tokens {
                store,
                train,
                val,
                units,
            } => format!(
                "{}: {} tokens in {units} (train {}, val {}), {share:.1}% of rows",
                self.label,
                store.len(),
                train.len(),
                val.len()
            ),
            Body::Task(_) => format!("{}: synthetic, {share:.1}% of rows", self.label),
            Body::Examples(set) => {
                format!("{}: {}, {share:.1}% of rows", self.label, set.describe())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ranges_hold_out_the_tail() {
        assert_eq!(split_ranges(2000, 0.05), (0..1900, 1900..2000));
        assert_eq!(split_ranges(5000, 0.05), (0..4750, 4750..5000));
        assert_eq!(split_ranges(100, 0.0), (0..100, 0..100));
        assert_eq!(split_ranges(10, 0.5), (0..5, 5..10));
    }
}
