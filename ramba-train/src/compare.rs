//! Architecture comparison (`ramba-train --config X --compare ramba,mamba2,...`): one experiment
//! trained once per architecture (`model.arch` swapped, everything else equal), every run then
//! evaluated the same way, and one table in the shape of the paper's Table 2: perplexity by
//! length, passkey accuracy by length, RULER tasks by length, one row per architecture.
//!
//! A run folder that already holds a finished run is evaluated, not retrained (an unfinished
//! one is resumed), so a comparison interrupted half-way picks up where it stopped.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ramba_core::backend::BackendInfo;
use ramba_core::checkpoint::has_checkpoints;
use ramba_core::config::Arch;
use ramba_core::ops::RambaBackend;
use ramba_core::stream::ChunkStoreKind;
use ramba_eval::grid::{short_len, GridLimits};
use ramba_eval::passkey::{run_passkey, AnswerDecoding, Haystack, PasskeySettings};
use ramba_eval::perplexity::{perplexity_by_length, PplSettings};
use ramba_eval::ruler::{ruler_task, run_ruler, RulerSettings, Scoring};
use ramba_eval::run::load_run;
use ramba_experiment::ExperimentConfig;
use ramba_report::{line_chart, write_csv, write_json_pretty, Series};
use serde::Serialize;

use crate::trainer::{train, RunRequest};

/// What to compare.
#[derive(Clone, Debug)]
pub struct CompareSettings {
    /// The experiment, its paths already absolute; `run.name` prefixes the runs' names.
    pub config: ExperimentConfig,
    /// Architectures, in table order.
    pub archs: Vec<Arch>,
    /// Held-out text for perplexity by length (`None`: no perplexity columns).
    pub text: Option<PathBuf>,
    /// RULER tasks evaluated (names; `[]`: no RULER columns).
    pub ruler_tasks: Vec<String>,
    /// How RULER answers are judged.
    pub scoring: Scoring,
    /// Windows per perplexity length.
    pub ppl_windows: usize,
    /// Set by Ctrl-C: training checkpoints and the comparison stops.
    pub stop: Arc<AtomicBool>,
}

/// One architecture's row.
#[derive(Clone, Debug, Serialize)]
pub struct CompareRow {
    /// `model.arch`.
    pub arch: String,
    /// The run folder.
    pub run_dir: PathBuf,
    /// Trainable parameters.
    pub params: usize,
    /// Perplexity per length (`None`: the text is too short for it).
    pub ppl: Vec<Option<f64>>,
    /// Passkey accuracy per length, mean over depths (`None`: skipped).
    pub passkey: Vec<Option<f64>>,
    /// Per RULER task, accuracy per length (mean over depths).
    pub ruler: Vec<Vec<Option<f64>>>,
}

/// The comparison: lengths and one row per architecture.
#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    /// Training length (`data.seq_len`).
    pub seq_len: usize,
    /// Evaluated lengths (`eval.passkey_multiples × data.seq_len`).
    pub lengths: Vec<usize>,
    /// The RULER tasks, in column order.
    pub ruler_tasks: Vec<String>,
    /// Whether perplexity was measured.
    pub has_ppl: bool,
    /// One per architecture.
    pub rows: Vec<CompareRow>,
}

/// The `model.arch` name of `arch`.
pub fn arch_name(arch: Arch) -> String {
    toml::Value::try_from(arch)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{arch:?}"))
}

/// `ramba,mamba2` → the architectures; an unknown name is an error listing the known ones.
pub fn parse_archs(list: &str) -> Result<Vec<Arch>> {
    let known = "ramba, mamba2, transformer, swa_hsa, mamba_nsa";
    list.split(',')
        .map(|s| {
            let s = s.trim();
            toml::Value::String(s.to_string())
                .try_into::<Arch>()
                .map_err(|_| anyhow::anyhow!("--compare: unknown arch `{s}`; known: {known}"))
        })
        .collect()
}

/// Trains (or reuses) and evaluates every architecture on backend `B`.
pub fn compare<B: RambaBackend>(
    settings: &CompareSettings,
    device: B::Device,
    info: &BackendInfo,
    mut log: impl FnMut(&str),
) -> Result<CompareReport> {
    if settings.archs.is_empty() {
        bail!("--compare: give at least one architecture");
    }
    let base = &settings.config;
    let seq = base.data.seq_len;
    let lengths: Vec<usize> = base
        .eval
        .passkey_multiples
        .iter()
        .map(|m| m * seq)
        .collect();
    let tasks = settings
        .ruler_tasks
        .iter()
        .map(|t| ruler_task(t, None))
        .collect::<Result<Vec<_>>>()?;
    let text_tokens = match &settings.text {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading --compare-text {}", p.display()))?,
        ),
        None => None,
    };
    // Every config first, so a bad one is reported before hours of training.
    let configs = settings
        .archs
        .iter()
        .map(|&arch| {
            let mut cfg = base.clone();
            cfg.model.arch = arch;
            cfg.run.name = format!("{}-{}", base.run.name, arch_name(arch));
            // Evaluated below, the same way for every architecture.
            cfg.eval.passkey_after_training = false;
            cfg.validate()
                .with_context(|| format!("--compare: the {} config", arch_name(arch)))?;
            Ok(cfg)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut rows = vec![];
    for cfg in configs {
        let name = arch_name(cfg.model.arch);
        let run_dir = cfg.run_dir();
        let resume = has_checkpoints(&run_dir)?;
        log(&format!(
            "compare: {name} ({}) in {}",
            if resume {
                "reusing or resuming"
            } else {
                "training"
            },
            run_dir.display()
        ));
        let outcome = train::<B>(
            RunRequest {
                config: cfg.clone(),
                resume,
                stop: settings.stop.clone(),
                stop_at: None,
            },
            device.clone(),
            info,
        )?;
        if outcome.interrupted {
            bail!("interrupted while training {name}; run the same command again to continue");
        }
        let run = load_run::<B>(&run_dir, &device)?;
        let tok = run.tokenizer.clone();
        let limits = GridLimits {
            max_context: cfg.eval.max_context,
            stop: Some(settings.stop.clone()),
        };
        let ppl = match &text_tokens {
            None => vec![],
            Some(text) => {
                let tokens = tok.encode(text);
                let ppl_settings = PplSettings {
                    max_windows: settings.ppl_windows,
                    segment: cfg.eval.max_context,
                    store: ChunkStoreKind::Device,
                };
                let got = perplexity_by_length(
                    &run.model,
                    &tokens,
                    &lengths,
                    ppl_settings,
                    &device,
                    &mut log,
                );
                lengths
                    .iter()
                    .map(|l| got.iter().find(|r| r.length == *l).map(|r| r.ppl))
                    .collect()
            }
        };
        let passkey = run_passkey(
            &run.model,
            tok.as_ref(),
            &PasskeySettings {
                lengths: lengths.clone(),
                depths: cfg.eval.passkey_depths.clone(),
                trials: cfg.eval.passkey_trials,
                haystack: Haystack::Filler,
                seed: cfg.run.seed ^ 0x9e37_79b9,
                max_context: limits.max_context,
                // Every arch's answers are decoded the way --scoring says, as for RULER.
                decoding: match settings.scoring {
                    Scoring::FreeGeneration => AnswerDecoding::Generate,
                    Scoring::TeacherForced => AnswerDecoding::TeacherForced,
                },
                store: ChunkStoreKind::Device,
                segment: limits.max_context,
                batch_tokens: 16_384,
                stop: limits.stop.clone(),
            },
            &device,
            &mut log,
        )?;
        let ruler = if tasks.is_empty() {
            vec![]
        } else {
            let report = run_ruler(
                &run.model,
                tok.clone(),
                &RulerSettings {
                    tasks: tasks.clone(),
                    lengths: lengths.clone(),
                    depths: cfg.eval.passkey_depths.clone(),
                    trials: cfg.eval.passkey_trials,
                    scoring: settings.scoring,
                    seed: cfg.run.seed ^ 0x5eed,
                    limits: limits.clone(),
                    batch_tokens: 16_384,
                },
                &device,
                &mut log,
            )?;
            report.write(&run_dir.join("eval"))?;
            report
                .tasks
                .iter()
                .map(|t| t.grid.accuracy_by_length())
                .collect()
        };
        if passkey.interrupted() {
            bail!("interrupted while evaluating {name}");
        }
        passkey.write(&run_dir.join("eval"), "passkey")?;
        rows.push(CompareRow {
            arch: name,
            run_dir,
            params: burn::module::Module::num_params(&run.model),
            ppl,
            passkey: passkey.accuracy_by_length(),
            ruler,
        });
    }
    Ok(CompareReport {
        seq_len: seq,
        lengths,
        ruler_tasks: tasks.iter().map(|t| t.name().to_string()).collect(),
        has_ppl: text_tokens.is_some(),
        rows,
    })
}

impl CompareReport {
    /// Column names: `arch`, `params`, then `ppl@L`, `passkey@L` and `{task}@L` per length.
    pub fn header(&self) -> Vec<String> {
        let mut h = vec!["arch".to_string(), "params".to_string()];
        let mut block = |what: &str| {
            for &l in &self.lengths {
                h.push(format!("{what}@{}", short_len(l)));
            }
        };
        if self.has_ppl {
            block("ppl");
        }
        block("passkey");
        for t in &self.ruler_tasks {
            block(t);
        }
        h
    }

    /// One row of cells per architecture, in [`header`](Self::header) order: perplexities
    /// with two decimals, accuracies in percent, `-` where skipped.
    pub fn cells(&self) -> Vec<Vec<String>> {
        let pct = |v: &Option<f64>| v.map_or("-".into(), |a| format!("{:.1}", a * 100.0));
        self.rows
            .iter()
            .map(|r| {
                let mut c = vec![r.arch.clone(), r.params.to_string()];
                c.extend(
                    r.ppl
                        .iter()
                        .map(|v| v.map_or("-".into(), |p| format!("{p:.2}"))),
                );
                c.extend(r.passkey.iter().map(pct));
                for task in &r.ruler {
                    c.extend(task.iter().map(pct));
                }
                c
            })
            .collect()
    }

    /// The table as Markdown (perplexity; accuracies in %).
    pub fn markdown(&self) -> String {
        let header = self.header();
        let mut out = format!("| {} |\n", header.join(" | "));
        out += &format!("|{}\n", "---|".repeat(header.len()));
        for row in self.cells() {
            out += &format!("| {} |\n", row.join(" | "));
        }
        out
    }

    /// Writes `compare.json`, `compare.csv`, `compare.md` and the charts
    /// (`compare_passkey.png`, `compare_ppl.png`, `compare_{task}.png`) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json_pretty(dir.join("compare.json"), self)?;
        let header = self.header();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        write_csv(dir.join("compare.csv"), &header, &self.cells())?;
        let md = dir.join("compare.md");
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("writing {}", md.display()))?;
        let chart = |file: &str,
                     title: &str,
                     y: &str,
                     pick: &dyn Fn(&CompareRow) -> &[Option<f64>],
                     scale: f64| {
            let series: Vec<Series> = self
                .rows
                .iter()
                .map(|r| {
                    let points = self
                        .lengths
                        .iter()
                        .zip(pick(r))
                        .filter_map(|(&l, v)| v.map(|v| (l as f64, v * scale)))
                        .collect();
                    Series::new(r.arch.clone(), points)
                })
                .collect();
            line_chart(
                &dir.join(file),
                title,
                "context length (tokens)",
                y,
                &series,
                false,
            )
        };
        chart(
            "compare_passkey.png",
            "Passkey accuracy by length",
            "accuracy (%)",
            &|r| &r.passkey,
            100.0,
        )?;
        if self.has_ppl {
            chart(
                "compare_ppl.png",
                "Perplexity by length",
                "perplexity",
                &|r| &r.ppl,
                1.0,
            )?;
        }
        for (i, t) in self.ruler_tasks.iter().enumerate() {
            chart(
                &format!("compare_{t}.png"),
                &format!("RULER {t} by length"),
                "exact match (%)",
                &|r| &r.ruler[i],
                100.0,
            )?;
        }
        Ok(())
    }
}
