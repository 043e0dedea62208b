//! The CubeCL kernels (wgpu: lavapipe on CPU machines, a real GPU elsewhere) against the
//! reference ops, on random inputs: HSA forward (output and log-sum-exp), HSA backward (dq, dk,
//! dv, dweights), fused selection (indices, exactly), and a whole training step.
//!
//! Tolerance: `‖x − y‖/‖y‖ < 1e-4` in f32 (the kernels accumulate in f32 in another order than
//! the reference's matmuls; the differences seen are ~1e-7). Before each kernel call the memory
//! pool is filled with NaN-poisoned buffers of the outputs' sizes, so an element a kernel fails
//! to write shows up as NaN instead of a stale value.

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use ramba_core::config::{Arch, Landmark, ModelConfig};
use ramba_core::ops::{hsa, selection, ChunkWeighting, HsaOptions, RambaBackend, SelectionOptions};
use ramba_core::testing::*;

/// wgpu (lavapipe in CI); with `--features cuda-tests` the same tests run on CUDA, plus the
/// tensor-core (bf16) ones, on a GPU machine.
#[cfg(not(feature = "cuda-tests"))]
type Gpu = TestWgpu;
#[cfg(feature = "cuda-tests")]
type Gpu = burn::backend::Cuda;
const TOL: f64 = 1e-4;
/// A whole model step also runs Burn's own matmuls, which use TF32 tensor cores for f32 on
/// CUDA (~3e-4 relative); on wgpu they are exact f32.
const STEP_TOL: f64 = if cfg!(feature = "cuda-tests") {
    1e-2
} else {
    1e-3
};

/// The oracle runs on the CPU backend (exact f32), whatever backend the kernels run on. Data
/// travels flattened: CUDA refuses to read some strided (e.g. row-pitched) layouts.
fn cpu<const D: usize>(x: &Tensor<Gpu, D>) -> Tensor<TestCpu, D> {
    let shape = x.shape();
    let flat = x.clone().reshape([shape.num_elements()]).into_data();
    Tensor::<TestCpu, 1>::from_data(flat.convert::<f32>(), &Default::default()).reshape(shape)
}

fn cpu_int(x: &Tensor<Gpu, 4, Int>) -> Tensor<TestCpu, 4, Int> {
    let shape = x.shape();
    let flat = x.clone().reshape([shape.num_elements()]).into_data();
    Tensor::<TestCpu, 1, Int>::from_data(flat.convert::<i64>(), &Default::default()).reshape(shape)
}

#[derive(Clone, Copy, Debug)]
struct Case {
    b: usize,
    l: usize,
    hq: usize,
    hkv: usize,
    dh: usize,
    s: usize,
    k: usize,
    off_by_one: bool,
}

/// The shapes of the test plan: G = 16, 4 and 1; L not a multiple of S; fewer visible chunks
/// than K; K = 1; h_kv = 2; batch > 1; both softmax variants.
fn cases() -> Vec<Case> {
    let c = |b, l, hq, hkv, dh, s, k, off_by_one| Case {
        b,
        l,
        hq,
        hkv,
        dh,
        s,
        k,
        off_by_one,
    };
    vec![
        c(2, 45, 16, 1, 8, 8, 3, false), // G = 16, ragged
        c(1, 53, 8, 2, 16, 8, 2, true),  // G = 4, h_kv = 2, off-by-one
        c(2, 36, 2, 2, 8, 4, 1, false),  // G = 1, K = 1
        c(1, 30, 4, 1, 4, 6, 8, true),   // fewer visible chunks than K
        c(1, 7, 4, 1, 4, 8, 2, false),   // no complete chunk at all
    ]
}

/// Random inputs of a case, with indices and weights from the reference selection.
struct Inputs<B: Backend> {
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    indices: Tensor<B, 4, Int>,
    weights: Tensor<B, 4>,
    d_out: Tensor<B, 4>,
}

fn inputs<B: RambaBackend>(cs: Case, seed: u64, device: &B::Device) -> Inputs<B> {
    let mut r = rng(seed);
    let dr = 5;
    let n_chunks = cs.l / cs.s;
    let q = random(&mut r, [cs.b, cs.l, cs.hq, cs.dh], 1.0, device);
    let k = random(&mut r, [cs.b, cs.l, cs.hkv, cs.dh], 1.0, device);
    let v = random(&mut r, [cs.b, cs.l, cs.hkv, cs.dh], 1.0, device);
    let qr = random::<B, 4>(&mut r, [cs.b, cs.l, cs.hkv, dr], 1.0, device);
    let lmk = random::<B, 4>(&mut r, [cs.b, n_chunks, cs.hkv, dr], 1.0, device);
    let options = SelectionOptions {
        chunk_size: cs.s,
        top_k: cs.k,
        weighting: ChunkWeighting::StickBreaking,
        query_start: 0,
    };
    let indices = if n_chunks == 0 {
        Tensor::full([cs.b, cs.l, cs.hkv, cs.k], -1, device)
    } else {
        selection::reference::select_chunks(qr.clone(), lmk.clone(), options)
    };
    let valid = indices.clone().greater_equal_elem(0);
    let weights = if n_chunks == 0 {
        Tensor::zeros([cs.b, cs.l, cs.hkv, cs.k], device)
    } else {
        let scores = selection::slot_scores(qr, lmk, indices.clone());
        selection::chunk_weights(scores, valid, ChunkWeighting::StickBreaking)
    };
    let d_out = random(&mut r, [cs.b, cs.l, cs.hq, cs.dh], 1.0, device);
    Inputs {
        q,
        k,
        v,
        indices,
        weights,
        d_out,
    }
}

fn options(cs: Case) -> HsaOptions {
    HsaOptions {
        chunk_size: cs.s,
        softmax_off_by_one: cs.off_by_one,
    }
}

/// Fills the allocator with NaN buffers of these shapes and frees them, so the next
/// allocations of the same sizes start poisoned.
fn poison<B: Backend>(shapes: &[[usize; 4]], device: &B::Device) {
    let buffers: Vec<Tensor<B, 4>> = shapes
        .iter()
        .map(|&s| Tensor::full(s, f32::NAN, device))
        .collect();
    B::sync(device).expect("sync");
    drop(buffers);
}

fn prim<B: Backend>(x: Tensor<B, 4>) -> burn::tensor::ops::FloatTensor<B> {
    x.into_primitive().tensor()
}

fn tensor<B: Backend>(x: burn::tensor::ops::FloatTensor<B>) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

fn assert_close(name: &str, got: Tensor<Gpu, 4>, want: Tensor<TestCpu, 4>) {
    let (got, want) = (to_vec(got), to_vec(want));
    assert!(
        got.iter().all(|x| x.is_finite()),
        "{name}: non-finite output (an element left unwritten?)"
    );
    let err = rel_err_vec(&got, &want);
    assert!(err < TOL, "{name}: relative error {err:.3e}");
}

#[test]
fn hsa_forward_matches_reference() {
    assert!(
        Gpu::fused_hsa(),
        "the wgpu backend must run the HSA kernels"
    );
    let device = Default::default();
    for (i, cs) in cases().into_iter().enumerate() {
        let x = inputs::<Gpu>(cs, 100 + i as u64, &device);
        let (want_out, want_lse) = hsa::reference::forward(
            cpu(&x.q),
            cpu(&x.k),
            cpu(&x.v),
            cpu_int(&x.indices),
            cpu(&x.weights),
            options(cs),
        );
        poison::<Gpu>(
            &[[cs.b, cs.l, cs.hq, cs.dh], [cs.b, cs.l, cs.hq, cs.k]],
            &device,
        );
        let fwd = Gpu::hsa_forward(
            prim(x.q),
            prim(x.k),
            prim(x.v),
            x.indices.into_primitive(),
            prim(x.weights),
            options(cs),
        );
        assert_close(&format!("{cs:?} out"), tensor(fwd.out), want_out);
        assert_close(&format!("{cs:?} lse"), tensor(fwd.lse), want_lse);
    }
}

#[test]
fn hsa_backward_matches_reference() {
    let device = Default::default();
    for (i, cs) in cases().into_iter().enumerate() {
        let x = inputs::<Gpu>(cs, 200 + i as u64, &device);
        let want = hsa::reference::backward(
            cpu(&x.q),
            cpu(&x.k),
            cpu(&x.v),
            cpu_int(&x.indices),
            cpu(&x.weights),
            cpu(&x.d_out),
            options(cs),
        );
        let fwd = Gpu::hsa_forward(
            prim(x.q.clone()),
            prim(x.k.clone()),
            prim(x.v.clone()),
            x.indices.clone().into_primitive(),
            prim(x.weights.clone()),
            options(cs),
        );
        poison::<Gpu>(
            &[
                [cs.b, cs.l, cs.hq, cs.dh],
                [cs.b, cs.l, cs.hkv, cs.dh],
                [cs.b, cs.l, cs.hkv, cs.dh],
                [cs.b, cs.l, cs.hkv, cs.k],
                [cs.b, cs.l, cs.hq, cs.k],
            ],
            &device,
        );
        let got = Gpu::hsa_backward(
            prim(x.q),
            prim(x.k),
            prim(x.v),
            x.indices.into_primitive(),
            prim(x.weights),
            fwd.lse,
            prim(x.d_out),
            options(cs),
        );
        let [dq, dk, dv, dw] = want;
        assert_close(&format!("{cs:?} dq"), tensor(got.q), dq);
        assert_close(&format!("{cs:?} dk"), tensor(got.k), dk);
        assert_close(&format!("{cs:?} dv"), tensor(got.v), dv);
        assert_close(&format!("{cs:?} dweights"), tensor(got.weights), dw);
    }
}

/// The inverted index puts the entries of each chunk in token order, so the backward is
/// deterministic: two runs give bit-identical gradients.
#[test]
fn hsa_backward_is_deterministic() {
    let device = Default::default();
    let cs = cases()[0];
    let x = inputs::<Gpu>(cs, 300, &device);
    let run = || {
        let fwd = Gpu::hsa_forward(
            prim(x.q.clone()),
            prim(x.k.clone()),
            prim(x.v.clone()),
            x.indices.clone().into_primitive(),
            prim(x.weights.clone()),
            options(cs),
        );
        let g = Gpu::hsa_backward(
            prim(x.q.clone()),
            prim(x.k.clone()),
            prim(x.v.clone()),
            x.indices.clone().into_primitive(),
            prim(x.weights.clone()),
            fwd.lse,
            prim(x.d_out.clone()),
            options(cs),
        );
        (to_vec(tensor::<Gpu>(g.k)), to_vec(tensor::<Gpu>(g.v)))
    };
    assert_eq!(run(), run());
}

/// Gradient causality through the kernels: the loss on outputs before `t` has zero gradient
/// with respect to q, k and v at positions ≥ t... except k, v of complete chunks, which tokens
/// before t never read either, so all of q, k, v at positions ≥ t get exactly zero.
#[test]
fn hsa_kernel_gradients_are_causal() {
    let device = Default::default();
    let cs = cases()[1];
    let t = 29;
    let x = inputs::<Autodiff<Gpu>>(cs, 400, &device);
    let q = x.q.require_grad();
    let k = x.k.require_grad();
    let v = x.v.require_grad();
    let out = hsa::hsa(
        q.clone(),
        k.clone(),
        v.clone(),
        x.indices,
        x.weights,
        options(cs),
    );
    let loss = (out.slice([0..cs.b, 0..t]) * x.d_out.slice([0..cs.b, 0..t])).sum();
    let grads = loss.backward();
    for (name, g) in [
        ("q", q.grad(&grads).unwrap()),
        ("k", k.grad(&grads).unwrap()),
        ("v", v.grad(&grads).unwrap()),
    ] {
        let [b, l, h, d] = g.dims();
        let future = to_vec(g.clone().slice([0..b, t..l, 0..h, 0..d]));
        assert!(future.iter().all(|&x| x == 0.0), "d{name} leaks from ≥ t");
        assert!(to_vec(g).iter().any(|&x| x != 0.0), "d{name} is all zero");
    }
}

struct Grads(Vec<Vec<f64>>, burn::optim::GradientsParams);
impl<B: Backend> ModuleVisitor<Autodiff<B>> for Grads {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Autodiff<B>, D>>) {
        let g = self.1.get::<B, D>(param.id).map(to_vec).unwrap_or_default();
        self.0.push(g);
    }
}

/// One `ramba` training step (loss and every parameter gradient) on `Autodiff<Wgpu>` with the
/// kernels equals the reference step on the CPU backend, same weights and tokens.
#[test]
fn training_step_with_kernels_equals_reference() {
    let mut cfg = ModelConfig {
        arch: Arch::Ramba,
        vocab_size: 37,
        d_model: 32,
        n_lower: 1,
        n_groups: 1,
        hsa_per_group: 2,
        blocks_per_hsa: 1,
        ..Default::default()
    };
    cfg.mamba.head_dim = 16;
    cfg.mamba.d_state = 8;
    cfg.mamba.chunk_size = 16;
    cfg.hsa.chunk_size = 8;
    cfg.hsa.top_k = 2;
    cfg.hsa.n_heads = 4;
    cfg.hsa.n_kv_heads = 1;
    cfg.hsa.head_dim = 8;
    cfg.hsa.retrieval_dim = 16;
    cfg.hsa.encoder_heads = 2;
    cfg.hsa.encoder_kv_heads = 2;
    cfg.hsa.mlp_hidden = 48;
    cfg.hsa.landmark = Landmark::Mean;
    cfg.hsa.encoder_layers = 0;
    cfg.validate().expect("valid tiny config");
    let (batch, seq) = (2, 43);

    let dir = std::env::temp_dir().join(format!("ramba-kernels-step-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let cpu_dev = Default::default();
    let cpu = cfg.init::<Autodiff<TestCpu>>(&cpu_dev);
    ramba_core::checkpoint::save_weights(&cpu, &path).unwrap();
    let gpu_dev = Default::default();
    let gpu =
        ramba_core::checkpoint::load_weights(cfg.init::<Autodiff<Gpu>>(&gpu_dev), &path).unwrap();
    std::fs::remove_dir_all(&dir).ok();

    let mut r = rng(7);
    let toks: Vec<i64> = random_vec(&mut r, batch * (seq + 1), 1.0)
        .iter()
        .map(|x| ((x.abs() * 1000.0) as i64) % cfg.vocab_size as i64)
        .collect();
    fn step<B: RambaBackend>(
        model: &ramba_core::model::LanguageModel<Autodiff<B>>,
        toks: &[i64],
        batch: usize,
        seq: usize,
        device: &B::Device,
    ) -> (f64, Vec<Vec<f64>>) {
        let all = Tensor::<Autodiff<B>, 2, Int>::from_data(
            TensorData::new(toks.to_vec(), [batch, seq + 1]).convert::<B::IntElem>(),
            device,
        );
        let inputs = all.clone().slice([0..batch, 0..seq]);
        let targets = all.slice([0..batch, 1..seq + 1]);
        let loss = model.loss(inputs, targets, Tensor::ones([batch, seq], device));
        let value: f64 = loss.clone().into_scalar().elem();
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), model);
        let mut visitor = Grads(vec![], grads);
        model.visit(&mut visitor);
        (value, visitor.0)
    }
    let (loss_cpu, grads_cpu) = step::<TestCpu>(&cpu, &toks, batch, seq, &cpu_dev);
    let (loss_gpu, grads_gpu) = step::<Gpu>(&gpu, &toks, batch, seq, &gpu_dev);
    assert!(
        (loss_cpu - loss_gpu).abs() < STEP_TOL * 1e-2 * loss_cpu.abs(),
        "loss {loss_gpu} vs reference {loss_cpu}"
    );
    assert_eq!(grads_cpu.len(), grads_gpu.len());
    for (i, (g, want)) in grads_gpu.iter().zip(&grads_cpu).enumerate() {
        assert_eq!(g.len(), want.len(), "parameter {i}: gradient presence");
        assert!(
            want.iter().any(|&x| x != 0.0),
            "parameter {i}: zero reference gradient"
        );
        let err = rel_err_vec(g, want);
        assert!(
            err < 1e-3,
            "parameter {i}: gradient relative error {err:.3e}"
        );
    }
}

/// The fused selection on wgpu equals the reference's indices exactly on random inputs, for
/// the model's layouts: several heads, ragged L, K > visible for early tokens.
#[test]
fn fused_selection_matches_reference() {
    assert!(Gpu::fused_selection());
    let device = Default::default();
    let mut r = rng(31);
    for (b, l, h, dr, s, k) in [
        (2, 70, 1, 64, 8, 4),
        (1, 129, 2, 33, 4, 8),
        (1, 40, 1, 8, 8, 1),
    ] {
        let c = l / s;
        let qr = random::<Gpu, 4>(&mut r, [b, l, h, dr], 1.0, &device);
        let lmk = random::<Gpu, 4>(&mut r, [b, c, h, dr], 1.0, &device);
        let options = SelectionOptions {
            chunk_size: s,
            top_k: k,
            weighting: ChunkWeighting::Softmax,
            query_start: 0,
        };
        let got = Tensor::<Gpu, 4, Int>::from_primitive(Gpu::select_chunks(
            prim(qr.clone()),
            prim(lmk.clone()),
            options,
        ));
        let want = selection::reference::select_chunks(cpu(&qr), cpu(&lmk), options);
        let got: Vec<i64> = got.into_data().convert::<i64>().to_vec().unwrap();
        let want: Vec<i64> = want.into_data().convert::<i64>().to_vec().unwrap();
        assert_eq!(got, want, "b={b} l={l} h={h} dr={dr} s={s} k={k}");
    }
}

/// The tensor-core kernels (bf16, G = 16, D = S = 64) against the f32 reference: forward and
/// every gradient within 1e-2 relative (bf16 inputs and P/dS tiles, f32 accumulation), with a
/// ragged length and batch > 1.
#[cfg(feature = "cuda-tests")]
#[test]
fn hsa_tensor_core_bf16_matches_reference() {
    use burn::tensor::DType;
    let device = Default::default();
    let cs = Case {
        b: 2,
        l: 64 * 9 + 37,
        hq: 16,
        hkv: 1,
        dh: 64,
        s: 64,
        k: 4,
        off_by_one: false,
    };
    for off_by_one in [false, true] {
        let cs = Case { off_by_one, ..cs };
        let x = inputs::<Gpu>(cs, 500, &device);
        let bf = |t: Tensor<Gpu, 4>| t.cast(DType::BF16);
        // The reference sees the bf16-rounded inputs in f32, on the CPU.
        let f = |t: Tensor<Gpu, 4>| cpu(&t.cast(DType::BF16).cast(DType::F32));
        let (want_out, want_lse) = hsa::reference::forward(
            f(x.q.clone()),
            f(x.k.clone()),
            f(x.v.clone()),
            cpu_int(&x.indices),
            cpu(&x.weights),
            options(cs),
        );
        let want = hsa::reference::backward(
            f(x.q.clone()),
            f(x.k.clone()),
            f(x.v.clone()),
            cpu_int(&x.indices),
            cpu(&x.weights),
            f(x.d_out.clone()),
            options(cs),
        );
        let fwd = Gpu::hsa_forward(
            prim(bf(x.q.clone())),
            prim(bf(x.k.clone())),
            prim(bf(x.v.clone())),
            x.indices.clone().into_primitive(),
            prim(x.weights.clone()),
            options(cs),
        );
        let loose = |name: &str, got: Tensor<Gpu, 4>, want: Tensor<TestCpu, 4>| {
            let (got, want) = (to_vec(got.cast(DType::F32)), to_vec(want));
            assert!(got.iter().all(|x| x.is_finite()), "{name}: non-finite");
            let err = rel_err_vec(&got, &want);
            assert!(err < 1e-2, "{name}: relative error {err:.3e}");
            eprintln!("{name}: {err:.2e}");
        };
        loose("out", tensor(fwd.out), want_out);
        loose("lse", tensor(fwd.lse.clone()), want_lse);
        let g = Gpu::hsa_backward(
            prim(bf(x.q)),
            prim(bf(x.k)),
            prim(bf(x.v)),
            x.indices.into_primitive(),
            prim(x.weights),
            fwd.lse,
            prim(bf(x.d_out)),
            options(cs),
        );
        let [dq, dk, dv, dw] = want;
        loose("dq", tensor(g.q), dq);
        loose("dk", tensor(g.k), dk);
        loose("dv", tensor(g.v), dv);
        loose("dweights", tensor(g.weights), dw);
    }
}
