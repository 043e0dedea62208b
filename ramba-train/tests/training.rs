//! End-to-end training on the CPU backend: the loss falls, resume equals an uninterrupted run,
//! bad experiment files give named errors, and the CLI runs from TOML to passkey report.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ramba_core::backend::{open, BackendKind, CpuBackend};
use ramba_core::experiment::ExperimentConfig;
use ramba_report::read_jsonl;
use ramba_train::trainer::{train, RunRequest};

/// A tiny RAMba on byte tokens; the passkey prompt needs ≥ 251 tokens, so L = 256.
const TINY: &str = r#"
[model]
arch = "ramba"
vocab_size = 257
d_model = 32
n_lower = 1
hsa_per_group = 1
blocks_per_hsa = 1
[model.mamba]
head_dim = 16
d_state = 8
chunk_size = 64
[model.hsa]
chunk_size = 32
top_k = 2
n_heads = 2
n_kv_heads = 1
head_dim = 16
retrieval_dim = 32
encoder_heads = 2
encoder_kv_heads = 2
mlp_hidden = 64
[model.attention]
n_heads = 2
n_kv_heads = 2
window = 32
mlp_hidden = 64
[data]
seq_len = 256
batch_size = 2
[[data.sources]]
kind = "passkey"
weight = 1.0
[[data.sources]]
kind = "filler"
weight = 1.0
[train]
steps = 6
lr = 3e-3
warmup_ratio = 0.0
log_every = 1
eval_every = 0
val_batches = 1
checkpoint_every = 3
[eval]
passkey_after_training = false
passkey_multiples = [1, 2]
passkey_depths = [0.0, 1.0]
passkey_trials = 1
[run]
backend = "cpu"
"#;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ramba-train-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(dir: &Path, name: &str, extra: &[&str]) -> ExperimentConfig {
    let path = dir.join("exp.toml");
    std::fs::write(&path, TINY).unwrap();
    let mut overrides: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    overrides.push(format!("run.name={name}"));
    overrides.push(format!("run.dir=\"{}\"", dir.display()));
    ExperimentConfig::load(&path, &overrides).unwrap()
}

fn run(
    cfg: ExperimentConfig,
    resume: bool,
    stop_at: Option<u64>,
) -> ramba_train::trainer::TrainOutcome {
    let info = open(BackendKind::Cpu).unwrap();
    let req = RunRequest {
        config: cfg,
        resume,
        stop: Arc::new(AtomicBool::new(false)),
        stop_at,
    };
    train::<CpuBackend>(req, Default::default(), &info).unwrap()
}

fn losses(run_dir: &Path) -> Vec<(u64, f64)> {
    read_jsonl(run_dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter_map(|r| Some((r.get("step")?.as_u64()?, r.get("loss")?.as_f64()?)))
        .collect()
}

#[test]
fn loss_falls_on_a_tiny_run() {
    let dir = scratch("falls");
    for (name, extra) in [
        ("ramba", vec!["train.steps=25", "train.checkpoint_every=0"]),
        (
            "reset",
            vec![
                "train.steps=25",
                "train.checkpoint_every=0",
                "train.memory_reset=true",
                "train.stale_state_prob=0.5",
                "train.grad_accum=2",
            ],
        ),
        (
            "swa",
            vec![
                "train.steps=25",
                "train.checkpoint_every=0",
                "model.arch=\"swa_hsa\"",
            ],
        ),
    ] {
        let out = run(config(&dir, name, &extra), false, None);
        let l = losses(&out.run_dir);
        assert_eq!(l.len(), 25, "{name}: one record per step");
        let first: f64 = l[..3].iter().map(|x| x.1).sum::<f64>() / 3.0;
        let last: f64 = l[22..].iter().map(|x| x.1).sum::<f64>() / 3.0;
        assert!(
            last < first - 0.5,
            "{name}: loss did not fall: {first:.3} -> {last:.3}"
        );
        assert!(out.final_val_loss.is_some_and(|v| v.is_finite()));
        assert!(out.run_dir.join("plots/loss.png").exists());
        assert!(out.run_dir.join("config.toml").exists());
    }
}

#[test]
fn resume_equals_uninterrupted() {
    let dir = scratch("resume");
    let whole = run(config(&dir, "whole", &[]), false, None);
    let first = run(config(&dir, "split", &[]), false, Some(3));
    assert_eq!(first.step, 3);
    let resumed = run(config(&dir, "split", &[]), true, None);
    assert_eq!(resumed.step, 6);
    let (a, b) = (losses(&whole.run_dir), losses(&resumed.run_dir));
    assert_eq!(a.len(), 6);
    assert_eq!(
        b.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6],
        "no duplicated or missing steps"
    );
    for ((s, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-6 * x.abs(), "step {s}: {x} vs {y}");
    }
}

#[test]
fn rows_split_over_threads_train_like_one_thread() {
    // Memory reset and accumulation make the split carry states and sum several micro-batches.
    let dir = scratch("threads");
    let common = [
        "data.batch_size=3",
        "train.memory_reset=true",
        "train.stale_state_prob=1.0",
        "train.grad_accum=2",
        "train.checkpoint_every=0",
    ];
    let with = |threads: &str| {
        let mut extra = common.to_vec();
        extra.push(threads);
        let name = threads.replace(['.', '='], "-");
        losses(&run(config(&dir, &name, &extra), false, None).run_dir)
    };
    let (one, two) = (with("train.threads=1"), with("train.threads=2"));
    assert_eq!(one.len(), 6);
    assert_eq!(one.len(), two.len());
    for ((s, x), (_, y)) in one.iter().zip(&two) {
        assert!((x - y).abs() <= 1e-4 * x.abs(), "step {s}: {x} vs {y}");
    }
}

/// Every config under `configs/` loads and validates, and one flag swaps the quickstart's
/// architecture.
#[test]
fn shipped_configs_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            ExperimentConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e:#}"));
            n += 1;
        }
    }
    assert!(
        n >= 6,
        "expected the quickstart, small, 370M and baseline configs; found {n}"
    );
    for arch in ["ramba", "mamba2", "transformer", "swa_hsa"] {
        let set = vec![format!("model.arch={arch}")];
        ExperimentConfig::load(&dir.join("quickstart.toml"), &set)
            .unwrap_or_else(|e| panic!("quickstart with {arch}: {e:#}"));
    }
}

#[test]
fn bad_experiment_files_name_the_key() {
    let dir = scratch("bad");
    let write = |text: &str| {
        let p = dir.join("bad.toml");
        std::fs::write(&p, text).unwrap();
        p
    };
    let err = |p: &Path, sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        format!("{:#}", ExperimentConfig::load(p, &sets).unwrap_err())
    };
    let p = write(&format!("{TINY}\n[optimizer]\nlr = 1\n"));
    let e = err(&p, &[]);
    assert!(e.contains("optimizer") && e.contains("bad.toml"), "{e}");
    let p = write(TINY);
    let e = err(&p, &["train.lrr=1"]);
    assert!(e.contains("lrr"), "{e}");
    let e = err(&p, &["model.d_modle=3"]);
    assert!(e.contains("d_modle"), "{e}");
    let e = err(&p, &["data.seq_len=250"]);
    assert!(
        e.contains("data.seq_len") && e.contains("model.hsa.chunk_size"),
        "{e}"
    );
    let e = err(&p, &["train.lr=-1"]);
    assert!(e.contains("train.lr"), "{e}");
    let e = err(&p, &["model.hsa.n_kv_heads=4"]);
    assert!(
        e.contains("model.hsa.n_kv_heads") && e.contains("model.hsa.n_heads"),
        "{e}"
    );
    let e = err(&p, &["train.steps=\"many\""]);
    assert!(e.contains("steps") || e.contains("many"), "{e}");
    let e = format!(
        "{:#}",
        ExperimentConfig::load(&dir.join("missing.toml"), &[]).unwrap_err()
    );
    assert!(e.contains("missing.toml"), "{e}");
}

#[test]
fn cli_trains_and_reports_passkey() {
    let dir = scratch("cli");
    let cfg = dir.join("exp.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ramba-train"))
        .args(["--config", cfg.to_str().unwrap(), "--backend", "cpu"])
        .args([
            "--set",
            "train.steps=4",
            "--set",
            "eval.passkey_after_training=true",
        ])
        .args([
            "--set",
            &format!("run.dir=\"{}\"", dir.display()),
            "--set",
            "run.name=cli",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("backend cpu"),
        "the chosen backend is printed: {stderr}"
    );
    assert!(stderr.contains("passkey accuracy"), "{stderr}");
    let run = dir.join("cli");
    for f in [
        "config.toml",
        "metrics.jsonl",
        "plots/loss.png",
        "eval/passkey.json",
        "eval/passkey.csv",
        "eval/passkey.png",
        "checkpoints/LATEST",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    // A second start on the same folder refuses instead of overwriting the run.
    let again = Command::new(env!("CARGO_BIN_EXE_ramba-train"))
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            &format!("run.dir=\"{}\"", dir.display()),
            "--set",
            "run.name=cli",
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    // A bad key fails before any work, naming the key.
    let bad = Command::new(env!("CARGO_BIN_EXE_ramba-train"))
        .args(["--config", cfg.to_str().unwrap(), "--set", "train.warmup=3"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(e.contains("warmup") && !e.contains("panicked"), "{e}");
}
