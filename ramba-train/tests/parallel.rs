//! Data-parallel training on the CPU backend: two replicas in one process (burn-collective), and
//! two processes on localhost (two nodes), each train like one device with the same global
//! batch.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ramba_core::backend::{open, BackendKind, CpuBackend};
use ramba_experiment::ExperimentConfig;
use ramba_report::read_jsonl;
use ramba_train::trainer::{train, RunRequest, TrainOutcome};

/// A tiny RAMba on byte tokens. Memory reset with stale states makes the replicas exchange
/// their rows' recurrent states; accumulation sums two micro-batches before the all-reduce.
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
batch_size = 4
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
eval_every = 3
val_batches = 1
checkpoint_every = 3
grad_accum = 2
memory_reset = true
stale_state_prob = 1.0
threads = 1
[eval]
passkey_after_training = false
[run]
backend = "cpu"
"#;

/// The CPU backend's seed is process-wide: runs that initialise models at the same time in one
/// process would interleave their draws. The tests here take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ramba-ddp-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn experiment(dir: &Path) -> PathBuf {
    let path = dir.join("exp.toml");
    std::fs::write(&path, TINY).unwrap();
    path
}

fn config(dir: &Path, name: &str, extra: &[&str]) -> ExperimentConfig {
    let mut overrides: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    overrides.push(format!("run.name={name}"));
    overrides.push(format!("run.dir=\"{}\"", dir.display()));
    ExperimentConfig::load(&experiment(dir), &overrides).unwrap_or_else(|e| panic!("{e:#}"))
}

fn run(cfg: ExperimentConfig, resume: bool, stop_at: Option<u64>) -> TrainOutcome {
    let info = open(BackendKind::Cpu).unwrap();
    let req = RunRequest {
        config: cfg,
        resume,
        stop: Arc::new(AtomicBool::new(false)),
        stop_at,
    };
    train::<CpuBackend>(req, Default::default(), &info).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `(step, key)` of every metrics record that has `key`.
fn series(run_dir: &Path, key: &str) -> Vec<(u64, f64)> {
    read_jsonl(run_dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter_map(|r| Some((r.get("step")?.as_u64()?, r.get(key)?.as_f64()?)))
        .collect()
}

/// Same steps, values within `rel` of each other.
fn assert_close(what: &str, a: &[(u64, f64)], b: &[(u64, f64)], rel: f64) {
    assert!(!a.is_empty(), "{what}: nothing logged");
    assert_eq!(
        a.iter().map(|x| x.0).collect::<Vec<_>>(),
        b.iter().map(|x| x.0).collect::<Vec<_>>(),
        "{what}: steps differ"
    );
    for ((s, x), (_, y)) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= rel * x.abs().max(1e-3),
            "{what}, step {s}: {x} vs {y}"
        );
    }
}

#[test]
fn two_replicas_train_like_one_device_and_resume() {
    let _turn = turn();
    let dir = scratch("local");
    let one = run(config(&dir, "one", &[]), false, None);
    let two = run(config(&dir, "two", &["train.devices=[0, 1]"]), false, None);
    assert_eq!(two.step, 6);
    let (l1, l2) = (series(&one.run_dir, "loss"), series(&two.run_dir, "loss"));
    assert_eq!(l1.len(), 6);
    assert_close("training loss", &l1, &l2, 1e-4);
    assert_close(
        "validation loss",
        &series(&one.run_dir, "val_loss"),
        &series(&two.run_dir, "val_loss"),
        1e-4,
    );
    // Answer tallies are summed over the replicas: the same rates as one device.
    assert_close(
        "answer token accuracy",
        &series(&one.run_dir, "answer_token_acc"),
        &series(&two.run_dir, "answer_token_acc"),
        1e-6,
    );

    // One writer: the checkpoints of a two-replica run resume into the same run.
    let first = run(
        config(&dir, "split", &["train.devices=[0, 1]"]),
        false,
        Some(3),
    );
    assert_eq!(first.step, 3);
    let resumed = run(config(&dir, "split", &["train.devices=[0, 1]"]), true, None);
    assert_eq!(resumed.step, 6);
    assert_close("resumed loss", &l2, &series(&resumed.run_dir, "loss"), 1e-5);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the node processes if the test fails before they exit.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the experiment as `nodes` processes on localhost with `devices` replicas each; returns
/// node 0's run folder.
fn run_nodes(dir: &Path, name: &str, nodes: usize, devices: &str) -> PathBuf {
    let exp = experiment(dir);
    let coordinator = format!("127.0.0.1:{}", free_port());
    let mut children = Nodes(vec![]);
    for rank in 0..nodes {
        let log = std::fs::File::create(dir.join(format!("{name}{rank}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ramba-train"))
            .arg("--config")
            .arg(&exp)
            .args(["--set", &format!("train.cluster.nodes={nodes}")])
            .args(["--set", &format!("train.cluster.rank={rank}")])
            .args([
                "--set",
                &format!("train.cluster.coordinator=\"{coordinator}\""),
            ])
            .args(["--set", &format!("train.devices={devices}")])
            .args(["--set", &format!("run.name={name}{rank}")])
            .args(["--set", &format!("run.dir=\"{}\"", dir.display())])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        children.0.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    for (rank, child) in children.0.iter_mut().enumerate() {
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: node {rank} did not finish"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let log = std::fs::read_to_string(dir.join(format!("{name}{rank}.log"))).unwrap();
        assert!(status.success(), "{name}: node {rank} failed:\n{log}");
    }
    // Only node 0 writes: no metrics, no checkpoints elsewhere.
    for rank in 1..nodes {
        let other = dir.join(format!("{name}{rank}"));
        assert!(!other.join("metrics.jsonl").exists());
        assert!(!other.join("checkpoints").exists());
    }
    dir.join(format!("{name}0"))
}

#[test]
fn nodes_on_localhost_train_like_one_device() {
    let _turn = turn();
    let dir = scratch("nodes");
    let one = run(config(&dir, "one", &[]), false, None);
    let expected = series(&one.run_dir, "loss");
    // Two machines with one device each; two machines with two replicas each (the local
    // all-reduce, the link between the nodes, then the hand-out to the local peers).
    for (name, devices) in [("single", "[0]"), ("pair", "[0, 1]")] {
        let node0 = run_nodes(&dir, name, 2, devices);
        assert_close(name, &expected, &series(&node0, "loss"), 1e-4);
        assert!(node0.join("checkpoints/LATEST").exists());
    }
}
