//! The `ramba-eval` CLI end to end on a tiny context: a run folder is written (config and a
//! checkpoint of a freshly initialised tiny model), then `passkey` and `ppl` run on it.

use std::path::PathBuf;
use std::process::Command;

use ramba_core::backend::CpuBackend;
use ramba_core::checkpoint::{checkpoint_dir, save_weights};
use ramba_core::experiment::ExperimentConfig;

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
[data]
seq_len = 256
[eval]
max_context = 1024
"#;

fn run_folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ramba-eval-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = ExperimentConfig::from_toml_str(TINY).unwrap();
    std::fs::write(dir.join("config.toml"), cfg.to_toml().unwrap()).unwrap();
    let ckpt = checkpoint_dir(&dir, 1);
    std::fs::create_dir_all(&ckpt).unwrap();
    let model = cfg.model.init::<CpuBackend>(&Default::default());
    save_weights(&model, &ckpt.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.join("checkpoints/LATEST"),
        ckpt.file_name().unwrap().to_string_lossy().as_bytes(),
    )
    .unwrap();
    dir
}

fn eval(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ramba-eval"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn passkey_and_ppl_on_a_tiny_run() {
    let dir = run_folder("ok");
    let d = dir.to_str().unwrap();
    let (ok, table, err) = eval(&[
        "passkey",
        "--run",
        d,
        "--backend",
        "cpu",
        "--lengths",
        "256,512,2k",
        "--depths",
        "0:1:0.5",
        "--trials",
        "2",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("backend cpu"), "{err}");
    // 3 depth rows + header + mean; 2k exceeds max_context = 1024 and is reported as skipped.
    assert!(
        table.contains("depth") && table.contains("512") && table.contains("skipped"),
        "{table}"
    );
    assert!(err.contains("streaming inference"), "{err}");
    for f in ["passkey.json", "passkey.csv", "passkey.png"] {
        assert!(dir.join("eval").join(f).exists(), "{f}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval/passkey.json")).unwrap())
            .unwrap();
    assert_eq!(json["cells"].as_array().unwrap().len(), 9);

    let (ok, _, err) = eval(&[
        "passkey",
        "--run",
        d,
        "--backend",
        "cpu",
        "--lengths",
        "256",
        "--depths",
        "0.5",
        "--trials",
        "1",
        "--random-tokens",
    ]);
    assert!(ok, "{err}");
    assert!(dir.join("eval/passkey_needle.json").exists());

    let text = dir.join("held_out.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(80),
    )
    .unwrap();
    let (ok, table, err) = eval(&[
        "ppl",
        "--run",
        d,
        "--backend",
        "cpu",
        "--text",
        text.to_str().unwrap(),
        "--lengths",
        "64,256",
        "--max-windows",
        "2",
    ]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{table}");
    // An untrained byte model is near-uniform: ppl close to the vocabulary size.
    let ppl: f64 = rows[0].split_whitespace().last().unwrap().parse().unwrap();
    assert!(ppl > 100.0 && ppl < 400.0, "{ppl}");
    assert!(dir.join("eval/ppl.png").exists());
}

#[test]
fn bad_arguments_are_clear_errors() {
    let (ok, _, err) = eval(&["passkey", "--run", "/nonexistent/run", "--backend", "cpu"]);
    assert!(
        !ok && err.contains("/nonexistent/run") && !err.contains("panicked"),
        "{err}"
    );
    let dir = run_folder("bad");
    let d = dir.to_str().unwrap();
    let (ok, _, err) = eval(&[
        "passkey",
        "--run",
        d,
        "--backend",
        "cpu",
        "--depths",
        "0:2:0.5",
    ]);
    assert!(!ok && err.contains("--depths"), "{err}");
    let (ok, _, err) = eval(&["passkey", "--run", d, "--backend", "cpu", "--lengths", "4q"]);
    assert!(!ok && err.contains("4q"), "{err}");
    let (ok, _, err) = eval(&[
        "ppl",
        "--run",
        d,
        "--backend",
        "cpu",
        "--text",
        "/nonexistent.txt",
    ]);
    assert!(!ok && err.contains("nonexistent.txt"), "{err}");
    let (ok, _, err) = eval(&["passkey", "--run", d, "--backend", "quantum"]);
    assert!(!ok && err.contains("quantum"), "{err}");
}
