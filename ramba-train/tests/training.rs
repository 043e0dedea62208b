//! End-to-end training on the CPU backend: the loss falls, resume equals an uninterrupted run,
//! bad experiment files give named errors, and the CLI runs from TOML to passkey report.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use ramba_core::backend::{open, BackendKind, CpuBackend};
use ramba_experiment::ExperimentConfig;
use ramba_report::read_jsonl;
use ramba_train::trainer::{train, RunRequest, TrainOutcome};

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
    config_from(TINY, dir, name, extra)
}

fn config_from(toml: &str, dir: &Path, name: &str, extra: &[&str]) -> ExperimentConfig {
    let path = dir.join("exp.toml");
    std::fs::write(&path, toml).unwrap();
    let mut overrides: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    overrides.push(format!("run.name={name}"));
    overrides.push(format!("run.dir=\"{}\"", dir.display()));
    ExperimentConfig::load(&path, &overrides).unwrap()
}

/// Burn's ndarray backend draws initial weights from one process-wide RNG, which `train` seeds
/// from `run.seed`: a model built on another test thread between that seed and the init would
/// change a run's weights (and two runs meant to be equal would differ from step 1). Whatever
/// builds a model holds this.
static RNG: Mutex<()> = Mutex::new(());

fn rng_turn() -> MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn try_run(
    cfg: ExperimentConfig,
    resume: bool,
    stop_at: Option<u64>,
) -> anyhow::Result<TrainOutcome> {
    try_run_with(cfg, resume, stop_at, Arc::new(AtomicBool::new(false)))
}

fn try_run_with(
    cfg: ExperimentConfig,
    resume: bool,
    stop_at: Option<u64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<TrainOutcome> {
    let info = open(BackendKind::Cpu).unwrap();
    let _turn = rng_turn();
    let req = RunRequest {
        config: cfg,
        resume,
        stop,
        stop_at,
    };
    train::<CpuBackend>(req, Default::default(), &info)
}

fn run(cfg: ExperimentConfig, resume: bool, stop_at: Option<u64>) -> TrainOutcome {
    try_run(cfg, resume, stop_at).unwrap_or_else(|e| panic!("{e:#}"))
}

fn ckpt(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join(format!("checkpoints/step-{step:08}"))
}

fn latest(run_dir: &Path) -> String {
    std::fs::read_to_string(run_dir.join("checkpoints/LATEST")).unwrap()
}

/// The step recorded in a checkpoint's `state.json`.
fn saved_step(dir: &Path) -> u64 {
    ramba_train::state::read_state(dir).unwrap().step
}

fn steps_logged(run_dir: &Path) -> Vec<u64> {
    losses(run_dir).iter().map(|x| x.0).collect()
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
    assert!(e.contains("lrr") && e.contains("--set train.lrr=1"), "{e}");
    let e = err(&p, &["model.d_modle=3"]);
    assert!(e.contains("d_modle"), "{e}");
    let e = err(&p, &["data.seq_len=250"]);
    assert!(
        e.contains("data.seq_len") && e.contains("model.hsa.chunk_size"),
        "{e}"
    );
    let e = err(&p, &["train.lr=-1"]);
    assert!(e.contains("train.lr"), "{e}");
    let e = err(&p, &["train.schedule=\"linear\""]);
    assert!(e.contains("train.schedule") && e.contains("linear"), "{e}");
    let e = err(
        &p,
        &[
            "train.schedule=\"wsd\"",
            "train.warmup_ratio=0.5",
            "train.decay_ratio=0.6",
        ],
    );
    assert!(
        e.contains("train.warmup_ratio") && e.contains("train.decay_ratio"),
        "{e}"
    );
    for (set, key) in [
        (
            &["train.anneal_at_answer_acc=0"][..],
            "train.anneal_at_answer_acc",
        ),
        (
            &["train.anneal_at_answer_acc=1.5"][..],
            "train.anneal_at_answer_acc",
        ),
        (
            &["train.anneal_at_answer_acc=0.9", "train.anneal_steps=0"][..],
            "train.anneal_steps",
        ),
        (&["train.anneal_lr_ratio=2"][..], "train.anneal_lr_ratio"),
    ] {
        let e = err(&p, set);
        assert!(e.contains(key), "{set:?}: {e}");
    }
    let e = err(&p, &["train.precision=\"bf17\""]);
    assert!(e.contains("train.precision") && e.contains("bf17"), "{e}");
    let e = err(&p, &["model.hsa.n_kv_heads=4"]);
    assert!(
        e.contains("model.hsa.n_kv_heads") && e.contains("model.hsa.n_heads"),
        "{e}"
    );
    // A wrong type names the key and where the value came from.
    let e = err(&p, &["train.steps=\"many\""]);
    assert!(
        e.contains("train.steps") && e.contains("--set train.steps=\"many\""),
        "{e}"
    );
    let p2 = write(&TINY.replace("steps = 6", "steps = \"six\""));
    let e = err(&p2, &[]);
    assert!(
        e.contains("train.steps") && e.contains("bad.toml") && !e.contains("--set"),
        "{e}"
    );
    let p = write(TINY);
    for key in ["model.hsa.n_heads", "model.hsa.retrieval_dim"] {
        let e = err(&p, &[&format!("{key}=0")]);
        assert!(e.contains(key), "{e}");
    }
    // run.name is one folder name inside run.dir.
    for name in ["..", ".", "a/b", "/tmp/x", "\"\"", "a\\b"] {
        let e = err(&p, &[&format!("run.name={name}")]);
        assert!(e.contains("run.name"), "{name}: {e}");
    }
    let e = format!(
        "{:#}",
        ExperimentConfig::load(&dir.join("missing.toml"), &[]).unwrap_err()
    );
    assert!(e.contains("missing.toml"), "{e}");
}

/// Half precision where the backend has none is refused before anything is written, naming
/// the key; `auto` trains in f32 on the CPU.
#[test]
fn half_precision_on_the_cpu_is_refused_naming_the_key() {
    let dir = scratch("precision");
    for p in ["bf16", "f16"] {
        let cfg = config(&dir, p, &[&format!("train.precision=\"{p}\"")]);
        let run_dir = cfg.run_dir();
        let e = format!("{:#}", try_run(cfg, false, None).unwrap_err());
        assert!(
            e.contains(&format!("train.precision = \"{p}\"")) && e.contains("cpu"),
            "{e}"
        );
        assert!(
            !run_dir.join("config.toml").exists(),
            "{p}: the refused run wrote files"
        );
    }
    let out = run(config(&dir, "auto", &["train.steps=2"]), false, None);
    assert_eq!(out.step, 2);
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

/// A kill -9 during a save leaves a partial `step-N` (older versions) or `.partial-step-N`
/// folder; resuming and re-running step N must replace it, not fail with "File already
/// exists". A corrupt newest checkpoint makes resume fall back to the previous valid one.
#[test]
fn partial_stale_and_corrupt_checkpoints_are_survived() {
    let dir = scratch("stale");
    let first = run(config(&dir, "a", &[]), false, Some(3));
    let rd = first.run_dir;
    assert_eq!(latest(&rd), "step-00000003");
    // What a kill during the save of step 6 leaves behind.
    std::fs::create_dir_all(ckpt(&rd, 6)).unwrap();
    std::fs::write(ckpt(&rd, 6).join("model.safetensors"), b"\x10\x00").unwrap();
    std::fs::create_dir_all(rd.join("checkpoints/.partial-step-00000006")).unwrap();
    std::fs::write(rd.join("checkpoints/.partial-step-00000006/junk"), b"x").unwrap();
    let done = run(config(&dir, "a", &[]), true, None);
    assert_eq!(done.step, 6);
    assert_eq!(latest(&rd), "step-00000006");
    assert_eq!(
        saved_step(&ckpt(&rd, 6)),
        6,
        "the stale folder was replaced"
    );
    assert!(!rd.join("checkpoints/.partial-step-00000006").exists());
    assert_eq!(steps_logged(&rd), vec![1, 2, 3, 4, 5, 6]);

    // The newest checkpoint is corrupt: resume falls back to step 3 and re-runs 4..9.
    let model = ckpt(&rd, 6).join("model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let more = run(config(&dir, "a", &["train.steps=9"]), true, None);
    assert_eq!(more.step, 9);
    assert_eq!(steps_logged(&rd), (1..=9).collect::<Vec<_>>());
    assert_eq!(latest(&rd), "step-00000009");
    // The re-run step 6 replaced the corrupt folder with a complete checkpoint.
    assert_eq!(saved_step(&ckpt(&rd, 6)), 6);
    assert!(std::fs::read(&model).unwrap().len() >= bytes.len());
}

/// Without `LATEST`, step folders still mean "a run lives here": a new run is refused (and
/// changes nothing), resume picks the newest valid checkpoint.
#[test]
fn checkpoints_without_latest_are_a_run() {
    let dir = scratch("nolatest");
    let rd = run(config(&dir, "a", &[]), false, None).run_dir;
    std::fs::remove_file(rd.join("checkpoints/LATEST")).unwrap();
    let config_before = std::fs::read(rd.join("config.toml")).unwrap();
    let metrics_before = std::fs::read(rd.join("metrics.jsonl")).unwrap();
    let e = try_run(config(&dir, "a", &["train.lr=1e-3"]), false, None).unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("--resume"), "{e}");
    assert_eq!(
        std::fs::read(rd.join("config.toml")).unwrap(),
        config_before
    );
    assert_eq!(
        std::fs::read(rd.join("metrics.jsonl")).unwrap(),
        metrics_before
    );
    let resumed = run(config(&dir, "a", &["train.steps=7"]), true, None);
    assert_eq!(resumed.step, 7);
    assert_eq!(steps_logged(&rd), (1..=7).collect::<Vec<_>>());
}

/// Pruning removes only this run's older checkpoints: never a folder it did not write (here a
/// corrupt `step-99999999` that sorts last), never the one just written.
#[test]
fn pruning_spares_foreign_folders_and_the_newest() {
    let dir = scratch("prune");
    let extra = ["train.checkpoint_every=2", "train.keep_checkpoints=1"];
    let rd = run(config(&dir, "a", &extra), false, Some(2)).run_dir;
    let foreign = ckpt(&rd, 99_999_999);
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("model.safetensors"), b"garbage").unwrap();
    let done = run(config(&dir, "a", &extra), true, None);
    assert_eq!(done.step, 6);
    assert!(
        foreign.join("model.safetensors").exists(),
        "foreign folder kept"
    );
    assert_eq!(saved_step(&ckpt(&rd, 6)), 6, "newest kept");
    assert!(
        !ckpt(&rd, 2).exists() && !ckpt(&rd, 4).exists(),
        "older ones pruned"
    );
    assert_eq!(latest(&rd), "step-00000006");
    // And the run continues from it.
    let more = run(config(&dir, "a", &["train.steps=8"]), true, None);
    assert_eq!(more.step, 8);
}

/// `train.steps` below the checkpoint is an error that changes nothing; equal to it is
/// "nothing to do"; `--stop-at` at the current step runs no step (it ran one too many).
#[test]
fn resume_edge_cases() {
    let dir = scratch("edges");
    let rd = run(config(&dir, "a", &[]), false, Some(3)).run_dir;
    let config_before = std::fs::read(rd.join("config.toml")).unwrap();
    let e = format!(
        "{:#}",
        try_run(config(&dir, "a", &["train.steps=2"]), true, None).unwrap_err()
    );
    assert!(e.contains("train.steps") && e.contains('3'), "{e}");
    assert_eq!(
        std::fs::read(rd.join("config.toml")).unwrap(),
        config_before
    );
    let same = run(config(&dir, "a", &[]), true, Some(3));
    assert_eq!(same.step, 3);
    assert_eq!(same.final_loss, None, "no step ran");
    assert_eq!(steps_logged(&rd), vec![1, 2, 3]);
    let to_five = run(config(&dir, "a", &[]), true, Some(5));
    assert_eq!(to_five.step, 5);
    assert_eq!(steps_logged(&rd), vec![1, 2, 3, 4, 5]);
    assert_eq!(latest(&rd), "step-00000005");
    let done = run(config(&dir, "a", &["train.steps=5"]), true, None);
    assert_eq!((done.step, done.final_loss), (5, None));
}

/// `train.anneal_at_answer_acc`: once a log window's answers reach the rate, the learning rate
/// falls linearly to `anneal_lr_ratio · lr` over `anneal_steps` and the run ends there; a run
/// stopped inside the anneal resumes it exactly, and one resumed after it has nothing to do.
#[test]
fn anneal_starts_when_the_answers_are_learned_and_survives_resume() {
    let dir = scratch("anneal");
    // A pass key that is always 7: a tiny model learns to answer it within a few dozen steps,
    // so the trigger is certain to fire, at a step that depends on the learning.
    let toml = TINY.replacen(
        "kind = \"passkey\"\nweight = 1.0",
        "kind = \"passkey\"\nweight = 1.0\nmin_key = 7\nmax_key = 7",
        1,
    );
    let extra = [
        "train.steps=200",
        "train.log_every=2",
        "train.checkpoint_every=0",
        "train.anneal_at_answer_acc=0.5",
        "train.anneal_steps=6",
        "train.anneal_lr_ratio=0.1",
    ];
    let whole = run(config_from(&toml, &dir, "whole", &extra), false, None);
    let records = read_jsonl(whole.run_dir.join("metrics.jsonl")).unwrap();
    let field = |r: &serde_json::Value, k: &str| r.get(k).and_then(|v| v.as_f64());
    let train: Vec<_> = records
        .iter()
        .filter_map(|r| {
            Some((
                r.get("step")?.as_u64()?,
                field(r, "lr")?,
                field(r, "answer_acc"),
            ))
        })
        .collect();
    // The first window at ≥ 50% starts the anneal after its step; the run ends 6 steps later.
    let trigger = train
        .iter()
        .find(|(_, _, acc)| acc.is_some_and(|a| a >= 0.5))
        .map(|&(s, _, _)| s)
        .expect("the constant key was learned");
    assert!(trigger < 190, "trigger at {trigger}");
    assert_eq!(whole.step, trigger + 6, "the run ends with the anneal");
    let state = ramba_train::state::read_state(&ckpt(&whole.run_dir, whole.step)).unwrap();
    assert_eq!(state.anneal_from, Some(trigger));
    // Linear (equal falls between the records 2 steps apart) down to 0.1 · lr = 3e-4, which
    // the last step runs at.
    let lr = |step: u64| train.iter().find(|r| r.0 == step).unwrap().1;
    let (l0, l2, l4, l6) = (
        lr(trigger),
        lr(trigger + 2),
        lr(trigger + 4),
        lr(trigger + 6),
    );
    assert!((l6 - 3e-4).abs() < 1e-12, "last lr {l6}");
    assert!(
        l0 > l2 && ((l2 - l4) - (l4 - l6)).abs() < 1e-12,
        "{l0} {l2} {l4} {l6}"
    );

    // Stopped two steps into the anneal and resumed: the same steps, losses and end.
    let first = run(
        config_from(&toml, &dir, "split", &extra),
        false,
        Some(trigger + 2),
    );
    assert_eq!(first.step, trigger + 2);
    let resumed = run(config_from(&toml, &dir, "split", &extra), true, None);
    assert_eq!(resumed.step, trigger + 6);
    let (a, b) = (losses(&whole.run_dir), losses(&resumed.run_dir));
    assert_eq!(a.len(), b.len());
    for ((s, x), (t, y)) in a.iter().zip(&b) {
        assert_eq!(s, t);
        assert!((x - y).abs() <= 1e-6 * x.abs(), "step {s}: {x} vs {y}");
    }
    // Nothing left to do after the anneal, though train.steps is far away.
    let again = run(config_from(&toml, &dir, "split", &extra), true, None);
    assert_eq!((again.step, again.final_loss), (trigger + 6, None));
}

/// A regression guard on learning, not only on loss: the README's quickstart recipe, on the
/// seed that learns soonest (seed 2: its answers reached 90% at step 750 with op-by-op norms
/// and loss, at step 950 with the fused nodes, whose rounding differs; then 250 steps of
/// anneal end the run), learns to retrieve. Chance for a 5-digit key is 1e-5 and copying the
/// answer format gets no key right, so ≥ 50% at 1x and 4x can only come from retrieval. ~5–7
/// minutes on 2 cores; a run whose anneal has not ended by step 1,400 stops there and fails.
#[test]
fn quickstart_recipe_learns_retrieval() {
    let dir = scratch("learns");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/quickstart.toml");
    let overrides: Vec<String> = [
        "run.seed=2",
        "data.seed=2",
        "train.checkpoint_every=0",
        "eval.passkey_multiples=[1, 4]",
        "eval.passkey_depths=[0.0, 0.5, 1.0]",
        "eval.passkey_trials=2",
        "run.name=\"learns\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("run.dir=\"{}\"", dir.display())])
    .collect();
    let cfg = ExperimentConfig::load(&path, &overrides).unwrap_or_else(|e| panic!("{e:#}"));
    let out = run(cfg, false, Some(1400));
    let state = ramba_train::state::read_state(&ckpt(&out.run_dir, out.step)).unwrap();
    let anneal_steps = 250; // configs/quickstart.toml
    match state.anneal_from {
        None => panic!(
            "the training answers never reached train.anneal_at_answer_acc within {} steps",
            out.step
        ),
        Some(from) => assert_eq!(
            out.step,
            from + anneal_steps,
            "the anneal from step {from} had not ended at step {}",
            out.step
        ),
    }
    let report = out.passkey.expect("the end-of-training passkey report");
    let by_length = report.accuracy_by_length();
    for (multiple, acc) in [1, 4].iter().zip(&by_length) {
        let acc = acc.expect("evaluated");
        assert!(
            acc >= 0.5,
            "passkey at {multiple}x: {:.0}% ({by_length:?})",
            acc * 100.0
        );
    }
}

/// An interrupt (Ctrl-C / SIGTERM flag) before the end-of-training passkey evaluation skips
/// it; one during it stops it (covered in ramba-eval: every remaining cell is skipped).
#[test]
fn interrupt_skips_the_final_evaluation() {
    let dir = scratch("interrupt");
    let stop = Arc::new(AtomicBool::new(true));
    let out = try_run_with(
        config(
            &dir,
            "a",
            &["eval.passkey_after_training=true", "train.steps=1"],
        ),
        false,
        None,
        stop,
    )
    .unwrap();
    assert!(out.interrupted);
    assert!(out.passkey.is_none());
    assert!(!out.run_dir.join("eval/passkey.json").exists());
    assert_eq!(latest(&out.run_dir), "step-00000001");
}

/// Every size that must be ≥ 1 is a validation error naming the key, never a divide-by-zero
/// panic; sizes where 0 means "off" or "auto" build a model that runs.
#[test]
fn zero_sizes_are_errors_or_work() {
    let dir = scratch("zeros");
    let keys = [
        "model.vocab_size",
        "model.d_model",
        "model.n_lower",
        "model.n_groups",
        "model.hsa_per_group",
        "model.blocks_per_hsa",
        "model.mamba.expand",
        "model.mamba.head_dim",
        "model.mamba.d_state",
        "model.mamba.n_groups",
        "model.mamba.conv_width",
        "model.mamba.chunk_size",
        "model.mamba.train_segment",
        "model.hsa.chunk_size",
        "model.hsa.top_k",
        "model.hsa.n_heads",
        "model.hsa.n_kv_heads",
        "model.hsa.head_dim",
        "model.hsa.retrieval_dim",
        "model.hsa.encoder_layers",
        "model.hsa.encoder_heads",
        "model.hsa.encoder_kv_heads",
        "model.hsa.mlp_hidden",
        "model.attention.n_heads",
        "model.attention.n_kv_heads",
        "model.attention.window",
        "model.attention.mlp_hidden",
        "data.seq_len",
        "data.batch_size",
        "train.grad_accum",
        "train.log_every",
        "train.keep_checkpoints",
        "eval.passkey_trials",
        "eval.max_context",
    ];
    let path = dir.join("exp.toml");
    std::fs::write(&path, TINY).unwrap();
    let mut accepted = vec![];
    for arch in ["ramba", "swa_hsa", "transformer"] {
        for key in keys {
            let sets = vec![format!("model.arch={arch}"), format!("{key}=0")];
            let cfg = match ExperimentConfig::load(&path, &sets) {
                Err(e) => {
                    let e = format!("{e:#}");
                    assert!(!e.is_empty());
                    continue;
                }
                Ok(cfg) => cfg,
            };
            // Accepted: the model must build and run forward (the panics were in here).
            let turn = rng_turn();
            let result = std::panic::catch_unwind(|| {
                use burn::prelude::*;
                let device = Default::default();
                let model = cfg.model.init::<CpuBackend>(&device);
                let ids = Tensor::<CpuBackend, 2, Int>::zeros([1, cfg.data.seq_len], &device);
                model.forward(ids).dims()
            });
            drop(turn);
            match result {
                Ok(dims) => assert_eq!(dims[2], cfg.model.vocab_size, "{arch} {key}=0"),
                Err(_) => panic!("{arch}: {key} = 0 passed validation and then panicked"),
            }
            accepted.push(format!("{arch} {key}"));
        }
    }
    // The keys where 0 means "auto" / "off" / "none" are among the accepted ones.
    for k in [
        "ramba model.hsa.mlp_hidden",
        "ramba model.mamba.train_segment",
    ] {
        assert!(accepted.iter().any(|a| a == k), "{k}: {accepted:?}");
    }
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ramba-train"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// SIGTERM (what `timeout` and job schedulers send) saves a checkpoint like Ctrl-C.
#[test]
fn sigterm_saves_a_checkpoint() {
    let dir = scratch("sigterm");
    let cfg = dir.join("exp.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ramba-train"))
        .args(["--config", cfg.to_str().unwrap()])
        .args([
            "--set",
            "train.steps=100000",
            "--set",
            "train.checkpoint_every=0",
        ])
        .args(["--set", &format!("run.dir=\"{}\"", dir.display())])
        .args(["--set", "run.name=t"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let run = dir.join("t");
    let started = std::time::Instant::now();
    // Training has begun once the first step is logged.
    while !std::fs::read_to_string(run.join("metrics.jsonl")).is_ok_and(|m| !m.is_empty()) {
        assert!(
            started.elapsed().as_secs() < 120,
            "no training step within 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: signals our own child process, which is still running (not yet waited for).
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "kill failed");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("saved"), "{stderr}");
    let latest = latest(&run);
    let step: u64 = latest.trim_start_matches("step-").parse().unwrap();
    assert!(step >= 1, "{latest}");
    assert_eq!(saved_step(&run.join("checkpoints").join(&latest)), step);
}

#[test]
fn cli_refuses_conflicting_or_failing_starts_cleanly() {
    let dir = scratch("cli-edges");
    let cfg = dir.join("exp.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let cfg = cfg.to_str().unwrap();
    let at = format!("run.dir=\"{}\"", dir.display());
    // --config next to --resume is refused rather than silently ignored.
    let (ok, e) = cli(&["--config", cfg, "--resume", dir.to_str().unwrap()]);
    assert!(
        !ok && e.contains("--config") && e.contains("--resume"),
        "{e}"
    );
    // A start that fails (missing data) leaves no empty run folder behind.
    let (ok, e) = cli(&[
        "--config",
        cfg,
        "--set",
        &at,
        "--set",
        "run.name=failed",
        "--set",
        "data.sources=[{kind=\"text\", path=\"/nonexistent/corpus.txt\"}]",
    ]);
    assert!(!ok && e.contains("corpus.txt"), "{e}");
    assert!(!dir.join("failed").exists(), "an empty run folder was left");
    // Resuming a finished run runs nothing and prints no NaN loss.
    let (ok, e) = cli(&[
        "--config",
        cfg,
        "--set",
        &at,
        "--set",
        "run.name=done",
        "--set",
        "train.steps=2",
    ]);
    assert!(ok, "{e}");
    let (ok, e) = cli(&["--resume", dir.join("done").to_str().unwrap()]);
    assert!(
        ok && e.contains("nothing to do") && !e.contains("NaN"),
        "{e}"
    );
    // --stop-at 0 is refused.
    let (ok, e) = cli(&["--config", cfg, "--set", &at, "--stop-at", "0"]);
    assert!(!ok && e.contains("stop-at"), "{e}");
}

/// A truncated optimizer file is reported as truncated (Burn's own message suggested a record
/// version problem), and with no older checkpoint to fall back to, resume fails naming it.
#[test]
fn truncated_optimizer_state_is_named() {
    let dir = scratch("optim");
    let rd = run(config(&dir, "a", &[]), false, Some(3)).run_dir;
    let f = ckpt(&rd, 3).join("optim_decay.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 3]).unwrap();
    let e = format!(
        "{:#}",
        try_run(config(&dir, "a", &[]), true, None).unwrap_err()
    );
    assert!(
        e.contains("optim_decay") && e.contains("truncated") && !e.contains("version"),
        "{e}"
    );
}

/// The architecture comparison end to end: every architecture trained on the same tiny
/// config, evaluated the same way, one table with its charts; a second call reuses the
/// finished runs and reports the same numbers.
#[test]
fn compare_every_architecture() {
    use ramba_train::compare::{compare, parse_archs, CompareSettings};
    let dir = scratch("compare");
    // mamba_nsa scores chunks by mean-pooled keys, so every arch uses mean landmarks.
    let cfg = config(
        &dir,
        "cmp",
        &[
            "train.steps=2",
            "model.hsa.landmark=mean",
            "model.hsa.encoder_layers=0",
        ],
    );
    let text = dir.join("held_out.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(60),
    )
    .unwrap();
    let settings = CompareSettings {
        config: cfg,
        archs: parse_archs("ramba,mamba2,transformer,swa_hsa,mamba_nsa").unwrap(),
        text: Some(text),
        ruler_tasks: vec!["niah".into()],
        scoring: ramba_eval::ruler::Scoring::FreeGeneration,
        ppl_windows: 1,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let info = open(BackendKind::Cpu).unwrap();
    let report = compare::<CpuBackend>(&settings, Default::default(), &info, |_| {})
        .unwrap_or_else(|e| panic!("{e:#}"));
    let archs: Vec<&str> = report.rows.iter().map(|r| r.arch.as_str()).collect();
    assert_eq!(
        archs,
        ["ramba", "mamba2", "transformer", "swa_hsa", "mamba_nsa"]
    );
    assert_eq!(report.lengths, [256, 512]);
    assert_eq!(
        report.header(),
        [
            "arch",
            "params",
            "ppl@256",
            "ppl@512",
            "passkey@256",
            "passkey@512",
            "niah@256",
            "niah@512"
        ]
    );
    for row in &report.rows {
        assert!(row.params > 0);
        // An untrained byte model is near-uniform over 257 tokens.
        assert!(
            row.ppl.iter().all(|p| p.is_some_and(|p| p > 20.0)),
            "{row:?}"
        );
        assert!(row.passkey.iter().all(Option::is_some), "{row:?}");
        assert_eq!(row.ruler.len(), 1);
        assert!(row.run_dir.join("eval/passkey.json").exists());
        assert!(row.run_dir.join("eval/ruler_niah.png").exists());
    }
    let out = dir.join("cmp-compare");
    report.write(&out).unwrap();
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert_eq!(md.lines().count(), 2 + 5, "{md}");
    assert!(md.contains("| mamba_nsa |"), "{md}");
    for f in [
        "compare.json",
        "compare.csv",
        "compare_passkey.png",
        "compare_ppl.png",
        "compare_niah.png",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    // Finished runs are evaluated again, not retrained: the same numbers.
    let again = CompareSettings {
        archs: parse_archs("mamba_nsa").unwrap(),
        ..settings
    };
    let second = compare::<CpuBackend>(&again, Default::default(), &info, |_| {}).unwrap();
    assert_eq!(second.rows[0].passkey, report.rows[4].passkey);
    assert_eq!(second.rows[0].ppl, report.rows[4].ppl);
    let e = format!("{:#}", parse_archs("ramba,nsa").unwrap_err());
    assert!(e.contains("nsa") && e.contains("mamba_nsa"), "{e}");
}

/// `train.init_from`: a run starts from another run's weights (equal to them before the
/// first step) with a fresh optimizer; a missing run and a different model are clear errors.
#[test]
fn init_from_starts_from_another_runs_weights() {
    use burn::module::Module;
    use ramba_core::backend::CpuBackend as B;
    use ramba_train::init_from::init_from;
    let dir = scratch("init-from");
    let base = config(&dir, "base", &["train.steps=2"]);
    let base_dir = base.run_dir();
    run(base, false, None);
    struct Flat(Vec<f32>);
    impl<Bk: burn::prelude::Backend> burn::module::ModuleVisitor<Bk> for Flat {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::prelude::Tensor<Bk, D>>,
        ) {
            self.0.extend(
                param
                    .val()
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .unwrap(),
            );
        }
    }
    let weights = |m: &ramba_core::model::LanguageModel<B>| -> Vec<f32> {
        let mut flat = Flat(vec![]);
        m.visit(&mut flat);
        flat.0
    };
    let turn = rng_turn();
    let src = ramba_eval::run::load_run::<B>(&base_dir, &Default::default()).unwrap();
    let cfg = config(&dir, "tuned", &["train.steps=2"]);
    let fresh = cfg.model.init::<B>(&Default::default());
    let (ckpt, loaded) = init_from(&base_dir, &cfg.model, fresh.clone(), |_| {}).unwrap();
    drop(turn);
    assert!(ckpt.ends_with("step-00000002"), "{}", ckpt.display());
    assert_eq!(weights(&loaded), weights(&src.model));
    assert_ne!(weights(&fresh), weights(&src.model));

    // Through the trainer: the fine-tuning run trains from there.
    let tuned = config(
        &dir,
        "tuned",
        &[
            "train.steps=2",
            &format!("train.init_from=\"{}\"", base_dir.display()),
        ],
    );
    let out = run(tuned, false, None);
    assert_eq!(out.step, 2);

    let e = |extra: &[&str], from: &Path| {
        let cfg = config(&dir, "bad", extra);
        let m = {
            let _turn = rng_turn();
            cfg.model.init::<B>(&Default::default())
        };
        format!("{:#}", init_from(from, &cfg.model, m, |_| {}).unwrap_err())
    };
    let msg = e(&[], &dir.join("nope"));
    assert!(
        msg.contains("train.init_from") && msg.contains("nope"),
        "{msg}"
    );
    let msg = e(
        &["model.d_model=64", "model.hsa.retrieval_dim=64"],
        &base_dir,
    );
    assert!(
        msg.contains("model.d_model: 32 there, 64 here") && msg.contains("retrieval_dim"),
        "{msg}"
    );
}
