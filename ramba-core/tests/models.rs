//! Models: forward/backward on every backend, causality, state carrying, parameter counts and
//! config validation.

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use ramba_core::backend_tests;
use ramba_core::config::{Arch, ModelConfig};
use ramba_core::model::ModelState;
use ramba_core::nn::attention::{AttentionMask, AttentionSettings, SelfAttention};
use ramba_core::ops::RambaBackend;
use ramba_core::testing::*;

fn tiny(arch: Arch) -> ModelConfig {
    tiny_config(arch)
}

fn variants() -> Vec<(&'static str, ModelConfig)> {
    config_variants()
}

fn tokens<B: Backend>(
    seed: u64,
    batch: usize,
    seq: usize,
    vocab: usize,
    _device: &B::Device,
) -> Vec<i64> {
    let mut r = rng(seed);
    random_vec(&mut r, batch * seq, 1.0)
        .iter()
        .map(|x| ((x.abs() * 1000.0) as i64) % vocab as i64)
        .collect()
}

fn int2<B: Backend>(v: Vec<i64>, shape: [usize; 2], device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(v, shape).convert::<B::IntElem>(), device)
}

/// Checks the gradient of every float parameter: present, finite, not all zero. Problems are
/// collected with the parameter's module path.
struct GradCheck<'a> {
    grads: &'a GradientsParams,
    path: Vec<String>,
    params: usize,
    problems: Vec<String>,
}

impl<B: burn::tensor::backend::AutodiffBackend> ModuleVisitor<B> for GradCheck<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.params += 1;
        let name = self.path.join(".");
        match self.grads.get::<B::InnerBackend, D>(param.id) {
            None => self.problems.push(format!("{name}: no gradient")),
            Some(g) => {
                let g = to_vec(g);
                if g.iter().any(|x| !x.is_finite()) {
                    self.problems.push(format!("{name}: non-finite gradient"));
                } else if g.iter().all(|&x| x == 0.0) {
                    self.problems.push(format!("{name}: gradient is all zeros"));
                }
            }
        }
    }
}

/// Forward and backward of every variant: finite loss near ln(vocab) at init, and a finite,
/// non-zero gradient for every parameter tensor (HSA's selection included: it learns only
/// through the chunk weights).
fn every_model_trains_one_step<B: RambaBackend>(device: &B::Device) {
    let (batch, seq) = (2, 40);
    for (name, cfg) in variants() {
        let model = cfg.init::<Autodiff<B>>(device);
        let t = tokens::<B>(1, batch, seq + 1, cfg.vocab_size, device);
        let all = int2::<Autodiff<B>>(t, [batch, seq + 1], device);
        let inputs = all.clone().slice([0..batch, 0..seq]);
        let targets = all.slice([0..batch, 1..seq + 1]);
        let mask = Tensor::ones([batch, seq], device);
        let logits = model.forward(inputs.clone());
        assert_eq!(logits.dims(), [batch, seq, cfg.vocab_size], "{name}");
        let loss = model.loss(inputs, targets, mask);
        let value: f64 = loss.clone().into_scalar().elem();
        assert!(value.is_finite(), "{name}: loss {value}");
        let uniform = (cfg.vocab_size as f64).ln();
        assert!(
            (value - uniform).abs() < 1.0,
            "{name}: initial loss {value} far from ln(vocab) = {uniform}"
        );
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut check = GradCheck {
            grads: &grads,
            path: vec![],
            params: 0,
            problems: vec![],
        };
        model.visit(&mut check);
        assert!(check.params > 0, "{name}: no parameters visited");
        assert!(
            check.problems.is_empty(),
            "{name}: {} of {} parameters: {:?}",
            check.problems.len(),
            check.params,
            check.problems
        );
    }
}

/// Changing tokens at positions ≥ t leaves the logits before t unchanged, whole model.
fn models_are_causal<B: RambaBackend>(device: &B::Device) {
    let (seq, t) = (40, 21);
    for (name, cfg) in variants() {
        let model = cfg.init::<B>(device);
        let a = tokens::<B>(2, 1, seq, cfg.vocab_size, device);
        let mut b = tokens::<B>(3, 1, seq, cfg.vocab_size, device);
        b[..t].copy_from_slice(&a[..t]);
        let la = to_vec(model.forward(int2::<B>(a, [1, seq], device)));
        let lb = to_vec(model.forward(int2::<B>(b, [1, seq], device)));
        let n = t * cfg.vocab_size;
        let before = la[..n]
            .iter()
            .zip(&lb[..n])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        let after = la[n..]
            .iter()
            .zip(&lb[n..])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(before < 1e-5, "{name}: logits before t changed by {before}");
        assert!(
            after > 1e-3,
            "{name}: the changed tokens must matter after t"
        );
    }
}

/// Running two segments with the blocks' state carried equals running them at once (mamba2).
fn mamba_state_carries_across_segments<B: RambaBackend>(device: &B::Device) {
    let cfg = tiny(Arch::Mamba2);
    let model = cfg.init::<B>(device);
    let seq = 24;
    let toks = tokens::<B>(4, 2, seq, cfg.vocab_size, device);
    let whole = to_vec(model.forward(int2::<B>(toks.clone(), [2, seq], device)));
    let cut = |lo: usize, hi: usize| -> Vec<i64> {
        (0..2)
            .flat_map(|b| toks[b * seq + lo..b * seq + hi].to_vec())
            .collect()
    };
    let (l1, state) = model.forward_with_state(int2::<B>(cut(0, 10), [2, 10], device), None);
    let (l2, _) =
        model.forward_with_state(int2::<B>(cut(10, seq), [2, seq - 10], device), Some(state));
    let (l1, l2) = (to_vec(l1), to_vec(l2));
    let v = cfg.vocab_size;
    let joined: Vec<f64> = (0..2)
        .flat_map(|b| {
            l1[b * 10 * v..(b + 1) * 10 * v]
                .iter()
                .chain(&l2[b * (seq - 10) * v..(b + 1) * (seq - 10) * v])
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(rel_err_vec(&joined, &whole) < 1e-4);
}

/// `model.mamba.train_segment`: in training each full slice of a row runs from its own state
/// (the given one for the first, zeros after) and a shorter tail runs as one more; the
/// returned state is the tail's. Inference ignores the option.
fn train_segments_run_independently<B: RambaBackend>(device: &B::Device) {
    let mut cfg = tiny(Arch::Mamba2);
    cfg.mamba.train_segment = 8;
    let (seq, seg, v) = (20, 8, cfg.vocab_size);
    let trained = cfg.init::<Autodiff<B>>(device);
    let plain = trained.valid();
    let toks = tokens::<B>(6, 2, seq + 5, v, device);
    let cut = |lo: usize, hi: usize| -> Vec<i64> {
        (0..2)
            .flat_map(|b| toks[b * (seq + 5) + lo..b * (seq + 5) + hi].to_vec())
            .collect()
    };
    let (_, seed) = plain.forward_with_state(int2::<B>(cut(seq, seq + 5), [2, 5], device), None);

    let (logits, state) = trained.forward_with_state(
        int2::<Autodiff<B>>(cut(0, seq), [2, seq], device),
        Some(ModelState::from_inner(seed.clone())),
    );
    let segmented = to_vec(logits);
    let slices = [(0, seg), (seg, 2 * seg), (2 * seg, seq)];
    let mut parts = Vec::new();
    let mut last = None;
    for (i, &(lo, hi)) in slices.iter().enumerate() {
        let init = (i == 0).then(|| seed.clone());
        let (l, s) = plain.forward_with_state(int2::<B>(cut(lo, hi), [2, hi - lo], device), init);
        parts.push((to_vec(l), hi - lo));
        last = Some(s);
    }
    let joined: Vec<f64> = (0..2)
        .flat_map(|b| {
            parts
                .iter()
                .flat_map(move |(l, n)| l[b * n * v..(b + 1) * n * v].to_vec())
        })
        .collect();
    assert!(rel_err_vec(&segmented, &joined) < 1e-4);

    // The returned state continues like the tail's own final state.
    let next = int2::<B>(cut(seq, seq + 5), [2, 5], device);
    let after = |s| to_vec(plain.forward_with_state(next.clone(), Some(s)).0);
    let (a, b) = (after(state.inner()), after(last.expect("three slices")));
    assert!(rel_err_vec(&a, &b) < 1e-4);

    // Without autodiff the recurrence spans the row, and that differs.
    let whole = to_vec(plain.forward(int2::<B>(cut(0, seq), [2, seq], device)));
    let unseeded = to_vec(trained.forward(int2::<Autodiff<B>>(cut(0, seq), [2, seq], device)));
    assert!(
        rel_err_vec(&unseeded, &whole) > 1e-3,
        "segments must cut the recurrence"
    );
}

/// `model.mamba.segment_inference`: outside training the recurrence restarts at every multiple of
/// `train_segment`, wherever the calls of a stream split the row: prefilling `0..5`, `5..19`,
/// then decoding token by token equals the whole row at once, and equals its slices run as
/// fresh sequences; without the option the recurrence spans the row.
fn segment_inference_restarts_at_slice_boundaries<B: RambaBackend>(device: &B::Device) {
    use ramba_core::stream::ChunkStoreKind;
    let mut cfg = tiny(Arch::Mamba2);
    cfg.mamba.train_segment = 8;
    cfg.mamba.segment_inference = true;
    cfg.validate().expect("valid");
    let (seq, v) = (30, cfg.vocab_size);
    let model = cfg.init::<B>(device);
    let toks = tokens::<B>(11, 2, seq, v, device);
    let cut = |lo: usize, hi: usize| -> Tensor<B, 2, Int> {
        let rows = (0..2)
            .flat_map(|b| toks[b * seq + lo..b * seq + hi].to_vec())
            .collect();
        int2::<B>(rows, [2, hi - lo], device)
    };
    let whole = model.forward(cut(0, seq));

    // The slices of 8 as fresh sequences.
    let slices: Vec<Tensor<B, 3>> = [(0, 8), (8, 16), (16, 24), (24, seq)]
        .into_iter()
        .map(|(lo, hi)| model.forward(cut(lo, hi)))
        .collect();
    let sliced = to_vec(Tensor::cat(slices, 1));
    assert!(rel_err_vec(&to_vec(whole.clone()), &sliced) < 1e-4);

    // A stream split inside the slices, then single steps (one crossing a boundary at 24).
    let mut stream = model.stream_state(ChunkStoreKind::Device);
    let mut parts = vec![
        model.prefill(cut(0, 5), &mut stream),
        model.prefill(cut(5, 19), &mut stream),
    ];
    for t in 19..seq {
        let step = model.step(cut(t, t + 1).reshape([2]), &mut stream);
        parts.push(step.unsqueeze_dim(1));
    }
    let streamed = to_vec(Tensor::cat(parts, 1));
    assert!(rel_err_vec(&to_vec(whole.clone()), &streamed) < 1e-4);

    // Without the option the same weights carry the state across the boundaries.
    cfg.mamba.segment_inference = false;
    let spanning = cfg.init::<B>(device).load_record(model.into_record());
    let spanned = to_vec(spanning.forward(cut(0, seq)));
    assert!(
        rel_err_vec(&spanned, &sliced) > 1e-3,
        "the option must cut the recurrence"
    );
}

/// A sliding window of w: keys older than w positions do not reach the output.
fn sliding_window_forgets<B: RambaBackend>(device: &B::Device) {
    let s = AttentionSettings {
        d_model: 16,
        n_heads: 2,
        n_kv_heads: 1,
        qkv_bias: false,
        qk_norm: false,
        rope_theta: 10_000.0,
        init_std: 0.3,
        norm_eps: 1e-5,
    };
    let attn = SelfAttention::<B>::new(&s, device);
    let mut r = rng(5);
    let x = random_vec(&mut r, 12 * 16, 1.0);
    let mut y = x.clone();
    for v in &mut y[..3 * 16] {
        *v += 1.0; // positions 0..3 change
    }
    let run = |v: Vec<f64>, m| to_vec(attn.forward(from_vec::<B, 3>(v, [1, 12, 16], device), 0, m));
    let (a, b) = (
        run(x.clone(), AttentionMask::Window(4)),
        run(y.clone(), AttentionMask::Window(4)),
    );
    // Position i sees keys i-3..=i: positions ≥ 3 + 3 = 6 no longer see 0..3.
    let diff = |lo: usize, hi: usize| {
        a[lo * 16..hi * 16]
            .iter()
            .zip(&b[lo * 16..hi * 16])
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max)
    };
    assert!(diff(6, 12) < 1e-6, "window leaked: {}", diff(6, 12));
    assert!(diff(3, 6) > 1e-4, "keys inside the window must matter");
    let (c, d) = (run(x, AttentionMask::Causal), run(y, AttentionMask::Causal));
    assert!(
        c[6 * 16..]
            .iter()
            .zip(&d[6 * 16..])
            .any(|(p, q)| (p - q).abs() > 1e-4),
        "full causal attention sees everything"
    );
}

/// Every architecture returns one state per decoder block: Mamba blocks carry theirs (the
/// second segment's logits depend on it), attention blocks are stateless (it changes nothing).
fn every_model_carries_its_block_states<B: RambaBackend>(device: &B::Device) {
    use ramba_core::nn::block::BlockState;
    let seq = 16;
    for (name, cfg) in variants() {
        let model = cfg.init::<B>(device);
        let toks = tokens::<B>(7, 1, 2 * seq, cfg.vocab_size, device);
        let first = int2::<B>(toks[..seq].to_vec(), [1, seq], device);
        let second = || int2::<B>(toks[seq..].to_vec(), [1, seq], device);
        let (_, state) = model.forward_with_state(first, None);
        assert_eq!(
            state.blocks.len(),
            cfg.n_blocks(),
            "{name}: one state per block"
        );
        let mamba = state
            .blocks
            .iter()
            .filter(|b| matches!(b, BlockState::Mamba(_)))
            .count();
        let expected = if cfg.arch.uses_mamba() {
            cfg.n_blocks()
        } else {
            0
        };
        assert_eq!(mamba, expected, "{name}: Mamba states");
        let carried = to_vec(model.forward_with_state(second(), Some(state)).0);
        let fresh = to_vec(model.forward_with_state(second(), None).0);
        assert!(carried.iter().all(|x| x.is_finite()), "{name}");
        let diff = rel_err_vec(&carried, &fresh);
        if cfg.arch.uses_mamba() {
            assert!(
                diff > 1e-5,
                "{name}: the carried state must matter ({diff})"
            );
        } else {
            assert!(diff < 1e-6, "{name}: attention keeps no state ({diff})");
        }
    }
}

backend_tests!(
    every_model_trains_one_step,
    models_are_causal,
    mamba_state_carries_across_segments,
    every_model_carries_its_block_states,
    train_segments_run_independently,
    segment_inference_restarts_at_slice_boundaries,
    sliding_window_forgets
);

/// The paper's RAMba-370M (the defaults): ≈389M parameters, +5.4% over its Mamba-2 part.
#[test]
fn ramba_370m_has_389m_parameters() {
    let device = Default::default();
    let cfg = ModelConfig::default();
    cfg.validate().unwrap();
    let ramba = cfg.init::<TestCpu>(&device).num_params();
    let mamba = ModelConfig {
        arch: Arch::Mamba2,
        ..cfg
    }
    .init::<TestCpu>(&device)
    .num_params();
    println!("RAMba-370M: {ramba} parameters; Mamba-2 part {mamba}");
    assert!((388_000_000..=390_500_000).contains(&ramba), "{ramba}");
    let overhead = ramba as f64 / mamba as f64 - 1.0;
    assert!(
        (0.050..0.058).contains(&overhead),
        "HSA overhead {overhead}"
    );
}

#[test]
fn bad_configs_name_the_key() {
    let err = |text: &str| format!("{:#}", ModelConfig::from_toml_str(text).unwrap_err());
    let e = err("d_modle = 256");
    assert!(e.contains("d_modle"), "{e}");
    let e = err("[hsa]\nchunk_sise = 32");
    assert!(e.contains("chunk_sise"), "{e}");
    let e = err("arch = \"rambaa\"");
    assert!(e.contains("rambaa"), "{e}");
    let e = err("[hsa]\nn_heads = 6\nn_kv_heads = 4");
    assert!(
        e.contains("model.hsa.n_kv_heads") && e.contains("model.hsa.n_heads"),
        "{e}"
    );
    let e = err("arch = \"transformer\"\nd_model = 100\n[attention]\nn_heads = 16");
    assert!(e.contains("model.attention.n_heads"), "{e}");
    let e = err("[mamba]\nhead_dim = 48");
    assert!(e.contains("model.mamba.head_dim"), "{e}");
    let e = err("[hsa]\nchunk_size = 0");
    assert!(e.contains("model.hsa.chunk_size"), "{e}");
    let e = err("[mamba]\nsegment_inference = true");
    assert!(e.contains("model.mamba.train_segment"), "{e}");
    // Chunk-unaware selection (and mamba_nsa) needs mean-pooled landmarks.
    for text in [
        "arch = \"mamba_nsa\"",
        "[hsa]\nselection = \"chunk_unaware\"",
    ] {
        let e = err(text);
        assert!(e.contains("model.hsa.landmark"), "{text}: {e}");
    }
    let e = err("[hsa]\nselection = \"nsa\"");
    assert!(e.contains("chunk_unaware"), "{e}");
    let ok = ModelConfig::from_toml_str("arch = \"mamba_nsa\"\n[hsa]\nlandmark = \"mean\"");
    assert_eq!(
        ok.unwrap().selection(),
        ramba_core::ops::SelectionMode::ChunkUnaware
    );
    let e = format!(
        "{:#}",
        ModelConfig::default()
            .validate_seq_len("data.seq_len", 100)
            .unwrap_err()
    );
    assert!(
        e.contains("model.hsa.chunk_size") && e.contains("data.seq_len"),
        "{e}"
    );
    assert!(ModelConfig::default()
        .validate_seq_len("data.seq_len", 4096)
        .is_ok());
}

/// Without a Vulkan adapter (no GPU, no lavapipe: simulated by pointing the Vulkan loader at no
/// driver) a wgpu test fails with one line naming the fix, not a panic deep in cubecl's wgpu
/// runtime.
#[test]
fn missing_vulkan_adapter_is_one_clear_line() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "wgpu::models_are_causal", "--test-threads=1"])
        .env("VK_ICD_FILENAMES", "/nonexistent/no_icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/no_icd.json")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("apt-get install mesa-vulkan-drivers") && text.contains("Vulkan adapter"),
        "{text}"
    );
    assert!(!text.contains("unwrap()"), "{text}");
}

/// The HSA modules stand alone: built from their own configs (burn-nn style, no `ModelConfig`),
/// they run together with the shapes the model's own copies have.
#[test]
fn hsa_modules_build_from_their_own_configs() {
    use ramba_core::nn::chunk_memory::ChunkMemoryConfig;
    use ramba_core::nn::hsa_layer::HsaLayerConfig;
    use ramba_core::nn::retrieval::RetrievalConfig;
    let device = Default::default();
    let (batch, seq, d) = (2, 20, 32);
    let memory = ChunkMemoryConfig::new(d, 16, 48)
        .with_chunk_size(4)
        .with_n_kv_heads(2)
        .with_head_dim(8)
        .with_encoder_heads(2)
        .with_encoder_kv_heads(2)
        .init::<TestCpu>(&device);
    let retrieval = RetrievalConfig::new(d, 16)
        .with_n_heads(2)
        .with_chunk_size(4)
        .with_top_k(3)
        .init::<TestCpu>(&device);
    let hsa = HsaLayerConfig::new(d)
        .with_n_heads(4)
        .with_head_dim(8)
        .with_chunk_size(4)
        .with_mlp_hidden(Some(48))
        .init::<TestCpu>(&device);
    let h: Tensor<TestCpu, 3> = random(&mut rng(5), [batch, seq, d], 1.0, &device);
    let mem = memory.forward(h.clone());
    assert_eq!(mem.landmarks.dims(), [batch, seq / 4, 2, 8]);
    assert_eq!(mem.keys.dims(), [batch, seq, 2, 8]);
    let selection = retrieval.forward(h.clone(), &mem);
    assert_eq!(selection.indices.dims(), [batch, seq, 2, 3]);
    let out = hsa.forward(h, &mem, &selection);
    assert_eq!(out.dims(), [batch, seq, d]);
    assert!(to_vec(out).iter().all(|x| x.is_finite()));

    // The model maps its settings onto the same configs.
    let cfg = variants()
        .into_iter()
        .find(|(n, _)| *n == "swa_hsa_mlp_2groups")
        .map(|(_, c)| c)
        .expect("variant exists");
    let r = cfg.retrieval_config();
    assert_eq!(
        (r.d_model, r.retrieval_dim, r.n_heads, r.chunk_size, r.top_k),
        (32, 16, 1, 8, 2)
    );
    let l = cfg.hsa_layer_config();
    assert_eq!((l.n_heads, l.head_dim, l.mlp_hidden), (4, 8, Some(48)));
    let m = cfg.chunk_memory_config();
    assert_eq!((m.head_dim, m.mlp_hidden, m.encoder_heads), (8, 48, 2));
    let plain = tiny(Arch::Ramba);
    assert_eq!(plain.hsa_layer_config().mlp_hidden, None, "no bypass MLP");
}

/// Checkpoints load by parameter name (`model.safetensors` keys are module paths), so the HSA
/// modules' names and shapes are pinned here: a refactor of their configs or constructors must
/// leave them as they are, or old checkpoints stop loading.
#[test]
fn hsa_checkpoint_names_are_stable() {
    use burn_store::ModuleSnapshot;
    let device = Default::default();
    for (name, want) in [
        ("ramba", HSA_NAMES_RAMBA),
        ("ramba_mean_softmax", HSA_NAMES_MEAN),
        ("swa_hsa_mlp_2groups", HSA_NAMES_MLP),
    ] {
        let cfg = variants()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c)
            .expect("variant exists");
        let model = cfg.init::<TestCpu>(&device);
        let got: Vec<String> = model
            .collect(None, None, false)
            .iter()
            .map(|s| (s.full_path(), s.shape.to_vec()))
            .filter(|(path, _)| {
                (path.contains(".memory.") || path.contains(".groups."))
                    && !path.contains(".blocks.")
            })
            .map(|(path, shape)| format!("{path} {shape:?}"))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let want: Vec<&str> = want
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(got, want, "{name}: got\n{}", got.join("\n"));
    }
}

/// `ramba`: CLS landmarks with a one-layer encoder, one group of two HSA layers.
const HSA_NAMES_RAMBA: &str = "
    Hsa.groups.0.retrieval.norm.gamma [32]
    Hsa.groups.0.retrieval.query.weight [32, 16]
    Hsa.groups.0.stages.0.hsa.norm.gamma [32]
    Hsa.groups.0.stages.0.hsa.out.weight [32, 32]
    Hsa.groups.0.stages.0.hsa.query.weight [32, 32]
    Hsa.groups.0.stages.1.hsa.norm.gamma [32]
    Hsa.groups.0.stages.1.hsa.out.weight [32, 32]
    Hsa.groups.0.stages.1.hsa.query.weight [32, 32]
    Hsa.memory.cls [32]
    Hsa.memory.encoder.0.attn.k.bias [32]
    Hsa.memory.encoder.0.attn.k.weight [32, 32]
    Hsa.memory.encoder.0.attn.k_norm.gamma [16]
    Hsa.memory.encoder.0.attn.o.weight [32, 32]
    Hsa.memory.encoder.0.attn.q.bias [32]
    Hsa.memory.encoder.0.attn.q.weight [32, 32]
    Hsa.memory.encoder.0.attn.q_norm.gamma [16]
    Hsa.memory.encoder.0.attn.v.bias [32]
    Hsa.memory.encoder.0.attn.v.weight [32, 32]
    Hsa.memory.encoder.0.attn_norm.gamma [32]
    Hsa.memory.encoder.0.mlp.down.weight [48, 32]
    Hsa.memory.encoder.0.mlp.gate.weight [32, 48]
    Hsa.memory.encoder.0.mlp.up.weight [32, 48]
    Hsa.memory.encoder.0.mlp_norm.gamma [32]
    Hsa.memory.key.weight [32, 8]
    Hsa.memory.landmark.weight [32, 16]
    Hsa.memory.norm.gamma [32]
    Hsa.memory.value.weight [32, 8]
";

/// `ramba_mean_softmax`: mean landmarks, no encoder (no CLS vector, no encoder weights).
const HSA_NAMES_MEAN: &str = "
    Hsa.groups.0.retrieval.norm.gamma [32]
    Hsa.groups.0.retrieval.query.weight [32, 16]
    Hsa.groups.0.stages.0.hsa.norm.gamma [32]
    Hsa.groups.0.stages.0.hsa.out.weight [32, 32]
    Hsa.groups.0.stages.0.hsa.query.weight [32, 32]
    Hsa.groups.0.stages.1.hsa.norm.gamma [32]
    Hsa.groups.0.stages.1.hsa.out.weight [32, 32]
    Hsa.groups.0.stages.1.hsa.query.weight [32, 32]
    Hsa.memory.key.weight [32, 8]
    Hsa.memory.landmark.weight [32, 16]
    Hsa.memory.norm.gamma [32]
    Hsa.memory.value.weight [32, 8]
";

/// `swa_hsa_mlp_2groups`: two groups of one HSA layer each, with the bypassing MLP.
const HSA_NAMES_MLP: &str = "
    Hsa.groups.0.retrieval.norm.gamma [32]
    Hsa.groups.0.retrieval.query.weight [32, 16]
    Hsa.groups.0.stages.0.hsa.mlp.down.weight [48, 32]
    Hsa.groups.0.stages.0.hsa.mlp.gate.weight [32, 48]
    Hsa.groups.0.stages.0.hsa.mlp.up.weight [32, 48]
    Hsa.groups.0.stages.0.hsa.mlp_norm.gamma [32]
    Hsa.groups.0.stages.0.hsa.norm.gamma [32]
    Hsa.groups.0.stages.0.hsa.out.weight [32, 32]
    Hsa.groups.0.stages.0.hsa.query.weight [32, 32]
    Hsa.groups.1.retrieval.norm.gamma [32]
    Hsa.groups.1.retrieval.query.weight [32, 16]
    Hsa.groups.1.stages.0.hsa.mlp.down.weight [48, 32]
    Hsa.groups.1.stages.0.hsa.mlp.gate.weight [32, 48]
    Hsa.groups.1.stages.0.hsa.mlp.up.weight [32, 48]
    Hsa.groups.1.stages.0.hsa.mlp_norm.gamma [32]
    Hsa.groups.1.stages.0.hsa.norm.gamma [32]
    Hsa.groups.1.stages.0.hsa.out.weight [32, 32]
    Hsa.groups.1.stages.0.hsa.query.weight [32, 32]
    Hsa.memory.cls [32]
    Hsa.memory.encoder.0.attn.k.bias [32]
    Hsa.memory.encoder.0.attn.k.weight [32, 32]
    Hsa.memory.encoder.0.attn.k_norm.gamma [16]
    Hsa.memory.encoder.0.attn.o.weight [32, 32]
    Hsa.memory.encoder.0.attn.q.bias [32]
    Hsa.memory.encoder.0.attn.q.weight [32, 32]
    Hsa.memory.encoder.0.attn.q_norm.gamma [16]
    Hsa.memory.encoder.0.attn.v.bias [32]
    Hsa.memory.encoder.0.attn.v.weight [32, 32]
    Hsa.memory.encoder.0.attn_norm.gamma [32]
    Hsa.memory.encoder.0.mlp.down.weight [48, 32]
    Hsa.memory.encoder.0.mlp.gate.weight [32, 48]
    Hsa.memory.encoder.0.mlp.up.weight [32, 48]
    Hsa.memory.encoder.0.mlp_norm.gamma [32]
    Hsa.memory.key.weight [32, 8]
    Hsa.memory.landmark.weight [32, 16]
    Hsa.memory.norm.gamma [32]
    Hsa.memory.value.weight [32, 8]
";
