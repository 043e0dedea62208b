//! The `ramba-eval` CLI end to end on a tiny context: a run folder is written (config and a
//! checkpoint of a freshly initialised tiny model), then `passkey` and `ppl` run on it.

use std::path::PathBuf;
use std::process::Command;

use ramba_core::backend::CpuBackend;
use ramba_core::checkpoint::{checkpoint_dir, save_weights};
use ramba_experiment::ExperimentConfig;

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

/// A run folder holding `TINY`'s config and a checkpoint of its freshly initialised model.
fn run_folder(name: &str) -> PathBuf {
    run_folder_of(name, TINY)
}

/// A run folder holding `config` and a checkpoint of its freshly initialised model.
fn run_folder_of(name: &str, config: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ramba-eval-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = ExperimentConfig::from_toml_str(config).unwrap();
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
    // 3 depth rows + header + mean. Answers are generated after a streamed prefill, so 2k
    // (above max_context = 1024) runs too, in segments, with its cost reported.
    assert!(
        table.contains("depth") && table.contains("512") && table.contains("2k"),
        "{table}"
    );
    assert!(!table.contains("skipped"), "{table}");
    assert!(table.contains("prefill t/s"), "{table}");
    for f in [
        "passkey.json",
        "passkey.csv",
        "passkey.png",
        "passkey_cost.csv",
        "passkey_memory.png",
    ] {
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

/// `ppl` beyond one forward: windows longer than `--segment` are streamed segment by segment
/// (device and offloaded chunk stores) and give the one-forward loss, including a window whose
/// length is not a multiple of the segment. Larger initial weights than TINY's, so the logits
/// depend on the context and a wrong target or segment weighting shows in the loss.
#[test]
fn ppl_streams_windows_longer_than_a_segment() {
    let config = TINY.replace("vocab_size = 257", "vocab_size = 257\ninit_std = 0.3");
    let dir = run_folder_of("ppl-stream", &config);
    let d = dir.to_str().unwrap();
    let text = dir.join("held_out.txt");
    std::fs::write(
        &text,
        "Pack my box with five dozen liquor jugs, 0123456789. ".repeat(40),
    )
    .unwrap();
    let losses = |extra: &[&str], tag: &str| -> Vec<f64> {
        let out = dir.join(format!("eval-{tag}"));
        let mut args = vec![
            "ppl",
            "--run",
            d,
            "--backend",
            "cpu",
            "--text",
            text.to_str().unwrap(),
            "--lengths",
            "200,448",
            "--max-windows",
            "2",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (ok, _, err) = eval(&args);
        assert!(ok, "{tag}: {err}");
        let json = std::fs::read_to_string(out.join("ppl.json")).unwrap();
        let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["loss"].as_f64().unwrap())
            .collect()
    };
    let whole = losses(&[], "whole");
    assert_eq!(whole.len(), 2);
    for (extra, tag) in [
        (&["--segment", "96"][..], "device"),
        (&["--segment", "96", "--offload"][..], "offloaded"),
    ] {
        let streamed = losses(extra, tag);
        for (s, w) in streamed.iter().zip(&whole) {
            assert!(
                ((s - w) / w).abs() < 1e-4,
                "{tag}: streamed loss {s} vs one forward {w}"
            );
        }
    }
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

/// Inputs that panicked, aborted, ran for ever or silently did something else.
#[test]
fn edge_arguments_are_bounded_or_reported() {
    let dir = run_folder("edges");
    let d = dir.to_str().unwrap();
    let pk = |extra: &[&str]| {
        let mut args = vec!["passkey", "--run", d, "--backend", "cpu"];
        args.extend_from_slice(extra);
        eval(&args)
    };
    for depths in ["0:inf:1", "0:1:1e-12", "0:1:1e-7"] {
        let (ok, _, err) = pk(&["--depths", depths]);
        assert!(
            !ok && err.contains("--depths") && !err.contains("panicked"),
            "{depths}: {err}"
        );
    }
    let (ok, _, err) = pk(&["--trials", "0"]);
    assert!(!ok && err.contains("--trials"), "{err}");
    let (ok, _, err) = pk(&["--lengths", "18446744073709551615k"]);
    assert!(!ok && err.contains("too large"), "{err}");
    // One length too short for the prompt is a skipped cell; the others still run.
    let (ok, table, err) = pk(&["--lengths", "64,256", "--depths", "0.5", "--trials", "1"]);
    assert!(ok, "{err}");
    assert!(err.contains("too short"), "{err}");
    assert!(table.contains("skipped"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval/passkey.json")).unwrap())
            .unwrap();
    let cells = json["cells"].as_array().unwrap();
    assert!(cells[0]["skipped"].as_str().unwrap().contains("too short"));
    assert_eq!(cells[1]["trials"].as_array().unwrap().len(), 1);

    let ppl = |text: &str, extra: &[&str]| {
        let path = dir.join("text.txt");
        std::fs::write(&path, text).unwrap();
        let mut args = vec![
            "ppl",
            "--run",
            d,
            "--backend",
            "cpu",
            "--text",
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let _ = std::fs::remove_dir_all(dir.join("eval"));
        eval(&args)
    };
    let (ok, _, err) = ppl("", &[]);
    assert!(!ok && err.contains("0 tokens"), "{err}");
    let (ok, _, err) = ppl("short text", &["--lengths", "256"]);
    assert!(!ok && err.contains("too few"), "{err}");
    assert!(!dir.join("eval/ppl.json").exists(), "no empty results");
    let (ok, _, err) = ppl(&"some text ".repeat(100), &["--max-windows", "0"]);
    assert!(!ok && err.contains("--max-windows"), "{err}");
}

/// NaN weights: ppl still reports, with a warning naming the cause.
#[test]
fn nan_weights_warn() {
    use burn::module::{Module, ModuleMapper, Param};
    use burn::prelude::*;
    struct Poison;
    impl<B: Backend> ModuleMapper<B> for Poison {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            param.map(|t| t.mul_scalar(f32::NAN))
        }
    }
    let dir = run_folder("nan");
    let cfg = ExperimentConfig::from_toml_str(TINY).unwrap();
    let model = cfg
        .model
        .init::<CpuBackend>(&Default::default())
        .map(&mut Poison);
    // Replaces the healthy weights run_folder wrote (safetensors files are not overwritten).
    let weights = checkpoint_dir(&dir, 1).join("model.safetensors");
    std::fs::remove_file(&weights).unwrap();
    save_weights(&model, &weights).unwrap();
    let text = dir.join("t.txt");
    std::fs::write(&text, "hello world. ".repeat(50)).unwrap();
    let (ok, _, err) = eval(&[
        "ppl",
        "--run",
        dir.to_str().unwrap(),
        "--backend",
        "cpu",
        "--text",
        text.to_str().unwrap(),
        "--lengths",
        "64",
        "--max-windows",
        "1",
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("WARNING") && err.contains("non-finite"),
        "{err}"
    );
}

/// `generate` continues a prompt (greedy by default, sampled with a seed), and bad flags are
/// errors naming the flag or file; the teacher-forced, offloaded passkey runs too.
#[test]
fn generate_and_offloaded_teacher_forced_passkey() {
    let dir = run_folder("generate");
    let d = dir.to_str().unwrap();
    let gen = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--run",
            d,
            "--backend",
            "cpu",
            "--max-tokens",
            "6",
        ];
        args.extend_from_slice(extra);
        eval(&args)
    };
    let (ok, greedy, err) = gen(&["--prompt", "The pass key is", "--segment", "5"]);
    assert!(ok, "{err}");
    assert!(err.contains("prefilled 15 tokens"), "{err}");
    let (ok, again, _) = gen(&["--prompt", "The pass key is", "--offload"]);
    assert!(ok);
    assert_eq!(
        greedy, again,
        "greedy decoding is deterministic, whatever the store"
    );
    let sampled = [
        "--prompt",
        "abc",
        "--temperature",
        "0.8",
        "--top-p",
        "0.9",
        "--seed",
        "4",
    ];
    let (ok, a, err) = gen(&sampled);
    assert!(ok, "{err}");
    assert_eq!(a, gen(&sampled).1, "a seed fixes the draws");

    let (ok, _, err) = gen(&["--prompt", "abc", "--temperature=-1"]);
    assert!(!ok && err.contains("--temperature"), "{err}");
    let (ok, _, err) = gen(&["--prompt-file", "/nonexistent/prompt.txt"]);
    assert!(!ok && err.contains("/nonexistent/prompt.txt"), "{err}");
    let (ok, _, err) = gen(&[]);
    assert!(!ok && err.contains("--prompt"), "{err}");

    let (ok, table, err) = eval(&[
        "passkey",
        "--run",
        d,
        "--backend",
        "cpu",
        "--lengths",
        "256,2k",
        "--depths",
        "0.5",
        "--trials",
        "1",
        "--teacher-forced",
        "--offload",
        "--segment",
        "300",
    ]);
    assert!(ok, "{err}");
    assert!(!table.contains("skipped"), "{table}");
    let cost = std::fs::read_to_string(dir.join("eval/passkey_cost.csv")).unwrap();
    // 256 is scored in one pass (≤ max_context); only 2k is streamed.
    assert_eq!(cost.lines().count(), 2, "{cost}");
    assert!(cost.lines().nth(1).unwrap().starts_with("2048,"), "{cost}");
}

/// An interrupt during the passkey evaluation stops it: the remaining cells are skipped as
/// interrupted (ramba-train sets this flag from Ctrl-C / SIGTERM).
#[test]
fn interrupted_passkey_stops() {
    use ramba_eval::passkey::{run_passkey, Haystack, PasskeySettings, INTERRUPTED};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let cfg = ExperimentConfig::from_toml_str(TINY).unwrap();
    let model = cfg.model.init::<CpuBackend>(&Default::default());
    let settings = PasskeySettings {
        lengths: vec![256, 512],
        depths: vec![0.0, 1.0],
        trials: 1,
        haystack: Haystack::Filler,
        seed: 1,
        max_context: 1024,
        decoding: Default::default(),
        store: Default::default(),
        segment: 1024,
        batch_tokens: 4096,
        stop: Some(Arc::new(AtomicBool::new(true))),
    };
    let mut lines = 0;
    let report = run_passkey(
        &model,
        &ramba_data::ByteTokenizer,
        &settings,
        &Default::default(),
        |_| lines += 1,
    )
    .unwrap();
    assert!(report.interrupted());
    assert_eq!(report.grid.cells.len(), 4);
    assert!(report
        .grid
        .cells
        .iter()
        .all(|c| c.skipped.as_deref() == Some(INTERRUPTED) && c.trials.is_empty()));
    assert_eq!(lines, 0, "no cell was evaluated");
}

/// A checkpoint is plain safetensors (what Python's `safetensors` package reads, see
/// `scripts/check_safetensors.py`): an 8-byte little-endian header length, a JSON header of
/// `name: {dtype, shape, data_offsets}`, then the data. Its names and shapes are the model's.
#[test]
fn safetensors_header_matches_the_model() {
    use burn_store::ModuleSnapshot;
    let dir = run_folder("safetensors");
    let bytes = std::fs::read(checkpoint_dir(&dir, 1).join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let cfg = ExperimentConfig::from_toml_str(TINY).unwrap();
    let model = cfg.model.init::<CpuBackend>(&Default::default());
    let expected: std::collections::BTreeMap<String, Vec<usize>> = model
        .collect(None, None, false)
        .iter()
        .map(|s| (s.full_path(), s.shape.to_vec()))
        .collect();
    let mut found = std::collections::BTreeMap::new();
    let mut end = 0;
    for (name, v) in &header {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(v["dtype"], "F32", "{name}");
        let shape: Vec<usize> = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let offsets = v["data_offsets"].as_array().unwrap();
        let (a, b) = (
            offsets[0].as_u64().unwrap() as usize,
            offsets[1].as_u64().unwrap() as usize,
        );
        assert_eq!(b - a, 4 * shape.iter().product::<usize>(), "{name}");
        end = end.max(b);
        found.insert(name.clone(), shape);
    }
    assert_eq!(found, expected);
    assert_eq!(8 + n + end, bytes.len(), "data fills the file exactly");
    let embedding = found
        .iter()
        .find(|(name, _)| name.ends_with("embedding.weight"))
        .map(|(_, shape)| shape.clone());
    assert_eq!(
        embedding,
        Some(vec![cfg.model.vocab_size, cfg.model.d_model]),
        "{found:?}"
    );
}

/// A checkpoint of another architecture is one short error, not a dump of every tensor.
#[test]
fn architecture_mismatch_is_short() {
    let dir = run_folder("mismatch");
    let mut cfg = ExperimentConfig::from_toml_str(TINY).unwrap();
    cfg.model.arch = ramba_core::config::Arch::Transformer;
    cfg.model.attention.n_heads = 2;
    cfg.model.attention.n_kv_heads = 2;
    std::fs::write(dir.join("config.toml"), cfg.to_toml().unwrap()).unwrap();
    let (ok, _, err) = eval(&[
        "passkey",
        "--run",
        dir.to_str().unwrap(),
        "--backend",
        "cpu",
    ]);
    assert!(!ok && err.contains("different model config"), "{err}");
    assert!(err.len() < 3000, "{} bytes: {err}", err.len());
    assert!(err.lines().all(|l| l.len() < 1000), "{err}");
}

/// `ruler` end to end: every task's cells, by free generation and teacher-forced, JSON, CSV
/// and one PNG per task; a length above eval.max_context is a skipped cell.
#[test]
fn ruler_on_a_tiny_run() {
    let dir = run_folder("ruler");
    let d = dir.to_str().unwrap();
    let hay = dir.join("essay.txt");
    std::fs::write(
        &hay,
        "It was a bright cold day in April. The clocks were striking thirteen. ".repeat(4),
    )
    .unwrap();
    for scoring in ["free-generation", "teacher-forced"] {
        let (ok, table, err) = eval(&[
            "ruler",
            "--run",
            d,
            "--backend",
            "cpu",
            "--tasks",
            "niah,niah_multi_query,variable_tracking",
            "--lengths",
            "512,2k",
            "--depths",
            "0.5",
            "--trials",
            "1",
            "--scoring",
            scoring,
            "--haystack",
            hay.to_str().unwrap(),
        ]);
        assert!(ok, "{scoring}: {err}");
        assert!(
            table.contains("niah_multi_query") && table.contains("skipped"),
            "{table}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("eval/ruler.json")).unwrap())
                .unwrap();
        assert_eq!(json["scoring"], scoring);
        let tasks = json["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 3);
        for t in tasks {
            let cells = t["cells"].as_array().unwrap();
            assert_eq!(cells.len(), 2, "{t}");
            let trial = &cells[0]["trials"][0];
            assert!(
                trial["answer"].as_str().is_some_and(|a| !a.is_empty()),
                "{t}"
            );
            assert!(trial["recall"].as_f64().is_some(), "{t}");
            assert!(cells[1]["skipped"]
                .as_str()
                .unwrap()
                .contains("max_context"));
            if t["task"] != "variable_tracking" {
                assert!(t["settings"]["haystack"]
                    .as_str()
                    .is_some_and(|h| h.ends_with("essay.txt")));
            }
            let png = dir.join(format!("eval/ruler_{}.png", t["task"].as_str().unwrap()));
            assert!(png.exists(), "{}", png.display());
        }
        let csv = std::fs::read_to_string(dir.join("eval/ruler.csv")).unwrap();
        assert!(csv.starts_with("task,length,depth,correct,trials,accuracy,skipped,recall"));
        assert_eq!(csv.lines().count(), 1 + 3 * 2, "{csv}");
    }
    let (ok, _, err) = eval(&["ruler", "--run", d, "--backend", "cpu", "--tasks", "niha"]);
    assert!(
        !ok && err.contains("niha") && err.contains("niah_multi_key"),
        "{err}"
    );
    let (ok, _, err) = eval(&[
        "ruler",
        "--run",
        d,
        "--backend",
        "cpu",
        "--tasks",
        "niah",
        "--haystack",
        "/nonexistent/essays",
    ]);
    assert!(!ok && err.contains("/nonexistent/essays"), "{err}");
}

/// `passkey --haystack`: natural text instead of the filler; a binary file is an error naming it.
#[test]
fn passkey_in_a_file_haystack() {
    let dir = run_folder("haystack");
    let d = dir.to_str().unwrap();
    let hay = dir.join("essay.txt");
    std::fs::write(&hay, "In 1984 the winter was long. Snow fell for days.").unwrap();
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
        "2",
        "--haystack",
        hay.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("eval/passkey_haystack.json")).unwrap(),
    )
    .unwrap();
    assert!(json["haystack"]["file"]
        .as_str()
        .is_some_and(|h| h.ends_with("essay.txt")));
    assert_eq!(json["cells"][0]["trials"].as_array().unwrap().len(), 2);
    assert!(dir.join("eval/passkey_haystack.png").exists());

    let bin = dir.join("blob.txt");
    std::fs::write(&bin, [b'a', 0, b'b']).unwrap();
    let (ok, _, err) = eval(&[
        "passkey",
        "--run",
        d,
        "--backend",
        "cpu",
        "--haystack",
        bin.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("blob.txt") && err.contains("binary"),
        "{err}"
    );
    let (ok, _, err) = eval(&[
        "passkey",
        "--run",
        d,
        "--backend",
        "cpu",
        "--haystack",
        bin.to_str().unwrap(),
        "--random-tokens",
    ]);
    assert!(!ok && err.contains("--random-tokens"), "{err}");
}

fn fixture(name: &str) -> String {
    format!(
        "{}/../ramba-data/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `task` on each format's fixture: the format's metric for every example, JSON and CSV; a
/// malformed line is an error naming the file and line.
#[test]
fn task_scores_each_format() {
    let dir = run_folder("task");
    let d = dir.to_str().unwrap();
    for (file, format, metric) in [
        ("squad.jsonl", "qa", "f1"),
        ("xsum.jsonl", "summarization", "rouge_l"),
        ("longbench.jsonl", "choice", "accuracy"),
    ] {
        let data = fixture(file);
        let (ok, out, err) = eval(&[
            "task",
            "--run",
            d,
            "--backend",
            "cpu",
            "--data",
            &data,
            "--format",
            format,
            "--max-new-tokens",
            "4",
        ]);
        assert!(ok, "{file}: {err}");
        assert!(out.contains(metric), "{out}");
        let stem = file.trim_end_matches(".jsonl");
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("eval/task_{stem}.json"))).unwrap(),
        )
        .unwrap();
        let v = json[metric].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{json}");
        let n = json["examples"].as_u64().unwrap() as usize;
        assert!(n >= 2, "{json}");
        assert_eq!(json["results"].as_array().unwrap().len(), n);
        let csv = std::fs::read_to_string(dir.join(format!("eval/task_{stem}.csv"))).unwrap();
        assert_eq!(csv.lines().count(), n + 1, "{csv}");
    }
    let (ok, _, err) = eval(&[
        "task",
        "--run",
        d,
        "--backend",
        "cpu",
        "--data",
        &fixture("malformed.jsonl"),
        "--format",
        "qa",
    ]);
    assert!(!ok && err.contains("malformed.jsonl:3"), "{err}");
    let (ok, _, err) = eval(&[
        "task",
        "--run",
        d,
        "--backend",
        "cpu",
        "--data",
        "x.jsonl",
        "--format",
        "essay",
    ]);
    assert!(!ok && err.contains("essay"), "{err}");
}

/// `retrieval-map`: every token's selected chunks and weights (JSON), a PNG per retrieval
/// head, and the last token's chunks with their text; models without HSA are a clear error.
#[test]
fn retrieval_map_of_a_prompt() {
    use ramba_data::Tokenizer;
    let dir = run_folder("map");
    let d = dir.to_str().unwrap();
    let prompt = dir.join("prompt.txt");
    let text = ramba_data::passkey_prompt(&ramba_data::ByteTokenizer, 300, 0.3, 42424).unwrap();
    std::fs::write(&prompt, ramba_data::ByteTokenizer.decode(&text.prompt)).unwrap();
    let (ok, out, err) = eval(&[
        "retrieval-map",
        "--run",
        d,
        "--backend",
        "cpu",
        "--prompt-file",
        prompt.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("group 0 head 0") && out.contains("weight"),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("eval/retrieval_map.json")).unwrap(),
    )
    .unwrap();
    let n = json["tokens"].as_u64().unwrap() as usize;
    assert_eq!(n, text.prompt.len());
    let head = &json["groups"][0][0];
    let chunks = head["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), n);
    // Chunk size 32, top-2: the first 32 tokens see nothing, token 70 sees chunks 0 and 1.
    assert!(chunks[31].as_array().unwrap().is_empty());
    let mut seen: Vec<u64> = chunks[70]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [0, 1]);
    assert!(dir.join("eval/retrieval_map_g0_h0.png").exists());

    let (ok, _, err) = eval(&[
        "retrieval-map",
        "--run",
        d,
        "--backend",
        "cpu",
        "--prompt-file",
        "/nonexistent/prompt.txt",
    ]);
    assert!(!ok && err.contains("/nonexistent/prompt.txt"), "{err}");
}

/// The quickstart's architecture (trained at 384 tokens) asked for the key at 64K tokens, 170×
/// its training length, through the streaming path: prefill in segments, then free generation.
/// The offloaded chunk store writes exactly what the device store writes, and holds the keys
/// and values of every complete chunk in host memory. (Accuracy needs the trained model:
/// docs/perf.md has it; this checks the path runs at that length in CI time.)
#[test]
fn quickstart_model_streams_a_64k_passkey() {
    let config = include_str!("../../configs/quickstart.toml");
    let dir = run_folder_of("quickstart-64k", config);
    let d = dir.to_str().unwrap();
    let passkey = |store: &str| {
        let out = dir.join(format!("eval-{store}"));
        let mut args = vec![
            "passkey",
            "--run",
            d,
            "--backend",
            "cpu",
            "--lengths",
            "64k",
            "--depths",
            "0.5",
            "--trials",
            "1",
            "--segment",
            "8192",
            "--out",
        ];
        args.push(out.to_str().unwrap());
        if store == "offloaded" {
            args.push("--offload");
        }
        let (ok, table, err) = eval(&args);
        assert!(ok, "{store}: {err}");
        assert!(!table.contains("skipped"), "{store}: {table}");
        let report = std::fs::read_to_string(out.join("passkey.json")).unwrap();
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        let trial = &report["cells"][0]["trials"][0];
        let cost = std::fs::read_to_string(out.join("passkey_cost.csv")).unwrap();
        let row: Vec<String> = cost
            .lines()
            .nth(1)
            .unwrap()
            .split(',')
            .map(String::from)
            .collect();
        (trial["generated"].as_str().unwrap().to_string(), row)
    };
    let (on_device, device_cost) = passkey("device");
    let (offloaded, offload_cost) = passkey("offloaded");
    assert_eq!(
        offloaded, on_device,
        "the offloaded store changed what the model wrote"
    );
    assert_eq!(device_cost[0], "65536");
    // Columns: length, accuracy, tokens/s, peak host, peak device, store host, store device.
    let store_host: u64 = offload_cost[5].parse().unwrap();
    let (device_host, device_on_device): (u64, u64) = (
        device_cost[5].parse().unwrap(),
        device_cost[6].parse().unwrap(),
    );
    let offload_on_device: u64 = offload_cost[6].parse().unwrap();
    assert_eq!(device_host, 0);
    // Quickstart: chunks of 16 tokens, one K/V head of 16 dims, f32: ≥ 4,000 complete chunks
    // of the ~65.5K-token prompt, keys and values.
    let per_chunk = 2 * 16 * 16 * 4;
    assert!(
        store_host >= 4000 * per_chunk && store_host <= 4096 * per_chunk,
        "{store_host}"
    );
    assert!(
        offload_on_device < device_on_device / 4,
        "{offload_on_device} vs {device_on_device}"
    );
}
