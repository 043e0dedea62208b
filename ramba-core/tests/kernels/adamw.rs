//! `FusedAdamW` (one kernel a parameter on the CubeCL backends) against Burn's `AdamW` on the
//! CPU: the same weights after several steps with and without weight decay, and optimizer
//! records that load into either optimizer.

use super::*;
use burn::nn::{Linear, LinearConfig};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use ramba_core::optim::{AdamWSettings, FusedAdamW};

const STEPS: usize = 4;
const LR: f64 = 3e-2;

fn settings(weight_decay: f32) -> AdamWSettings {
    AdamWSettings {
        beta_1: 0.9,
        beta_2: 0.95,
        epsilon: 1e-8,
        weight_decay,
    }
}

/// A layer with the given weights.
fn layer<B: burn::tensor::backend::AutodiffBackend>(
    w: &[f64],
    b: &[f64],
    device: &B::Device,
) -> Linear<B> {
    let mut layer = LinearConfig::new(12, 7).init::<B>(device);
    layer.weight = layer
        .weight
        .map(|_| from_vec(w.to_vec(), [12, 7], device).require_grad());
    layer.bias = layer
        .bias
        .map(|p| p.map(|_| from_vec(b.to_vec(), [7], device).require_grad()));
    layer
}

/// The gradients of `sum(layer(x) · probe)`, `x` and `probe` drawn from the step's seed.
fn grads<B: burn::tensor::backend::AutodiffBackend>(
    layer: &Linear<B>,
    step: usize,
    device: &B::Device,
) -> GradientsParams {
    let mut r = rng(100 + step as u64);
    let x = random::<B, 2>(&mut r, [9, 12], 1.0, device);
    let probe = random::<B, 2>(&mut r, [9, 7], 1.0, device);
    let loss = (layer.forward(x) * probe).sum();
    GradientsParams::from_grads(loss.backward(), layer)
}

fn train<B, O>(mut optim: O, w: &[f64], b: &[f64], device: &B::Device) -> (Vec<f64>, O)
where
    B: burn::tensor::backend::AutodiffBackend,
    O: Optimizer<Linear<B>, B>,
{
    let mut layer = layer::<B>(w, b, device);
    for step in 0..STEPS {
        let g = grads(&layer, step, device);
        layer = optim.step(LR, layer, g);
    }
    let mut out = to_vec(layer.weight.val().inner());
    out.extend(to_vec(layer.bias.expect("bias").val().inner()));
    (out, optim)
}

#[test]
fn fused_adamw_matches_burns_adamw() {
    assert!(<Gpu as RambaBackend>::fused_adamw());
    let mut r = rng(7);
    let (w, b) = (random_vec(&mut r, 12 * 7, 0.5), random_vec(&mut r, 7, 0.5));
    for decay in [0.0, 0.1] {
        let s = settings(decay);
        let fused: OptimizerAdaptor<FusedAdamW, Linear<AdGpu>, AdGpu> = FusedAdamW::new(s).init();
        let burn_adamw = AdamWConfig::new()
            .with_beta_1(s.beta_1)
            .with_beta_2(s.beta_2)
            .with_epsilon(s.epsilon)
            .with_weight_decay(s.weight_decay)
            .init::<AdCpu, Linear<AdCpu>>();
        let (got, fused) = train::<AdGpu, _>(fused, &w, &b, &Default::default());
        let (want, _) = train::<AdCpu, _>(burn_adamw, &w, &b, &Default::default());
        let moved = rel_err_vec(&want, &[w.clone(), b.clone()].concat());
        assert!(
            moved > 1e-2,
            "the steps must move the weights ({moved:.2e})"
        );
        let err = rel_err_vec(&got, &want);
        assert!(err < TOL, "weight decay {decay}: relative error {err:.3e}");

        // The fused optimizer's state is Burn's AdamW state: its record loads into AdamW.
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::new();
        let bytes = recorder
            .record(fused.to_record(), ())
            .expect("recording the fused state");
        let record: <OptimizerAdaptor<AdamW, Linear<AdGpu>, AdGpu> as Optimizer<
            Linear<AdGpu>,
            AdGpu,
        >>::Record = recorder
            .load(bytes, &Default::default())
            .expect("the fused state loads as AdamW's");
        assert_eq!(record.len(), 2, "weight and bias states");
    }
}

/// The parameters after `STEPS` fused steps equal those of `STEPS − 1` fused steps, a record
/// round trip through Burn's AdamW type, and one more fused step: resuming from a checkpoint
/// written by either optimizer continues the same trajectory.
#[test]
fn fused_adamw_resumes_from_a_record() {
    let device = Default::default();
    let mut r = rng(8);
    let (w, b) = (random_vec(&mut r, 12 * 7, 0.5), random_vec(&mut r, 7, 0.5));
    let s = settings(0.1);
    let straight: OptimizerAdaptor<FusedAdamW, Linear<AdGpu>, AdGpu> = FusedAdamW::new(s).init();
    let (want, _) = train::<AdGpu, _>(straight, &w, &b, &device);

    let mut optim: OptimizerAdaptor<FusedAdamW, Linear<AdGpu>, AdGpu> = FusedAdamW::new(s).init();
    let mut layer = layer::<AdGpu>(&w, &b, &device);
    for step in 0..STEPS - 1 {
        let g = grads(&layer, step, &device);
        layer = optim.step(LR, layer, g);
    }
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::new();
    let bytes = recorder.record(optim.to_record(), ()).expect("record");
    let as_adamw: <OptimizerAdaptor<AdamW, Linear<AdGpu>, AdGpu> as Optimizer<
        Linear<AdGpu>,
        AdGpu,
    >>::Record = recorder.load(bytes, &device).expect("load as AdamW");
    let bytes = recorder.record(as_adamw, ()).expect("record as AdamW");
    let back = recorder.load(bytes, &device).expect("load as FusedAdamW");
    let mut resumed: OptimizerAdaptor<FusedAdamW, Linear<AdGpu>, AdGpu> = FusedAdamW::new(s).init();
    resumed = resumed.load_record(back);
    let g = grads(&layer, STEPS - 1, &device);
    layer = resumed.step(LR, layer, g);
    let mut got = to_vec(layer.weight.val().inner());
    got.extend(to_vec(layer.bias.expect("bias").val().inner()));
    let moved = rel_err_vec(&want, &[w.clone(), b.clone()].concat());
    assert!(
        moved > 1e-2,
        "the steps must move the weights ({moved:.2e})"
    );
    let err = rel_err_vec(&got, &want);
    assert!(err < 1e-6, "resumed: relative error {err:.3e}");
}
