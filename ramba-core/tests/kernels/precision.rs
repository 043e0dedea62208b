//! Mixed-precision training (`train.precision`): a tiny model of every architecture trained
//! 30 AdamW steps computing in half precision (bf16 on CUDA, f16 on wgpu, which has no bf16)
//! follows the f32 loss curve from the same initial weights; the parameters stay f32, and
//! weights trained in either precision load into a model computing in the other.

use super::*;
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::DType;
use ramba_core::model::LanguageModel;

const STEPS: usize = 30;
const BATCH: usize = 2;
const SEQ: usize = 48;

/// How far the half-precision loss curve may stray from the f32 one, relative to the f32 loss
/// at the same step. f16 keeps 11 significant bits (relative rounding 2⁻¹² ≈ 2.4e-4 per value),
/// bf16 8 (2⁻⁹ ≈ 2e-3); one step's loss moves by about that, and 30 Adam steps, which scale
/// every update to the learning rate whatever the gradient's size, carry the two trajectories
/// apart. On lavapipe in f16 the worst step was 1.9e-2 (`swa_hsa`; mean 3.8e-3), so f16 gets
/// 5% (2% mean) and bf16, with 8× the rounding, 10% (4% mean). A real fault (a wrong cast, a
/// kernel reading half bits as f32) gives losses that do not fall, are off by far more, or NaN.
const MAX_STEP_DEVIATION: f64 = if cfg!(feature = "cuda-tests") {
    0.10
} else {
    0.05
};
const MAX_MEAN_DEVIATION: f64 = if cfg!(feature = "cuda-tests") {
    0.04
} else {
    0.02
};

/// Tokens with structure a tiny model learns in 30 steps (each row repeats a random motif of
/// 6 tokens), so that the curves fall and "follows" means something.
fn motif_batches(vocab: usize) -> Vec<Vec<i64>> {
    let mut r = rng(5);
    (0..4)
        .map(|_| {
            let mut toks = Vec::with_capacity(BATCH * (SEQ + 1));
            for _ in 0..BATCH {
                let motif: Vec<i64> = random_vec(&mut r, 6, 1.0)
                    .iter()
                    .map(|x| ((x.abs() * 1000.0) as i64) % vocab as i64)
                    .collect();
                toks.extend((0..SEQ + 1).map(|i| motif[i % 6]));
            }
            toks
        })
        .collect()
}

/// A batch of `toks` (`BATCH` rows of `SEQ + 1` tokens) as the model's inputs and targets.
fn inputs_and_targets<B: Backend>(
    toks: &[i64],
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let all = Tensor::<B, 2, Int>::from_data(
        TensorData::new(toks.to_vec(), [BATCH, SEQ + 1]).convert::<B::IntElem>(),
        device,
    );
    (
        all.clone().slice([0..BATCH, 0..SEQ]),
        all.slice([0..BATCH, 1..SEQ + 1]),
    )
}

fn loss_of<B: RambaBackend>(
    model: &LanguageModel<B>,
    toks: &[i64],
    device: &B::Device,
) -> Tensor<B, 1> {
    let (inputs, targets) = inputs_and_targets::<B>(toks, device);
    model.loss(inputs, targets, Tensor::ones([BATCH, SEQ], device))
}

/// Trains `model` for [`STEPS`] steps on `batches` in turn; returns the losses and the model.
fn train(
    mut model: LanguageModel<Autodiff<Gpu>>,
    batches: &[Vec<i64>],
) -> (Vec<f64>, LanguageModel<Autodiff<Gpu>>) {
    let device = Default::default();
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let mut losses = Vec::with_capacity(STEPS);
    for step in 0..STEPS {
        let loss = loss_of(&model, &batches[step % batches.len()], &device);
        losses.push(loss.clone().into_scalar().elem::<f64>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(5e-3, model, grads);
    }
    (losses, model)
}

/// Every parameter's dtype, by visiting the module.
struct Dtypes(Vec<DType>);

impl<B: Backend> ModuleVisitor<B> for Dtypes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().dtype());
    }
}

#[test]
fn half_precision_training_follows_f32() {
    let device = Default::default();
    let mut failures = vec![];
    for arch in [Arch::Ramba, Arch::Mamba2, Arch::Transformer, Arch::SwaHsa] {
        let cfg = tiny_config(arch);
        let batches = motif_batches(cfg.vocab_size);
        let dir =
            std::env::temp_dir().join(format!("ramba-precision-{}-{arch:?}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let init = dir.join("init.safetensors");
        <Gpu as Backend>::seed(&device, 3);
        ramba_core::checkpoint::save_weights(&cfg.init::<Autodiff<Gpu>>(&device), &init).unwrap();
        let fresh = || {
            ramba_core::checkpoint::load_weights(cfg.init::<Autodiff<Gpu>>(&device), &init).unwrap()
        };

        let (f32_losses, f32_model) = train(fresh(), &batches);
        let half = fresh().with_compute_dtype(HALF);
        assert_eq!(half.compute_dtype(), HALF);
        let (half_losses, half_model) = train(half, &batches);

        let deviation: Vec<f64> = f32_losses
            .iter()
            .zip(&half_losses)
            .map(|(a, b)| (a - b).abs() / a.abs())
            .collect();
        let worst = deviation.iter().cloned().fold(0.0, f64::max);
        let mean = deviation.iter().sum::<f64>() / STEPS as f64;
        let fell = |l: &[f64]| 1.0 - l[STEPS - 1] / l[0];
        let fell = fell(&f32_losses).min(fell(&half_losses));
        eprintln!(
            "{arch:?}: f32 {:.4} → {:.4}, {HALF:?} {:.4} → {:.4}; deviation max {worst:.2e}, \
             mean {mean:.2e}",
            f32_losses[0],
            f32_losses[STEPS - 1],
            half_losses[0],
            half_losses[STEPS - 1]
        );
        let follows = worst <= MAX_STEP_DEVIATION && mean <= MAX_MEAN_DEVIATION;
        if !follows {
            failures.push(format!(
                "{arch:?}: the {HALF:?} loss curve strays from f32 by up to {worst:.3e} \
                 (mean {mean:.3e})"
            ));
        }
        if fell < 0.2 {
            failures.push(format!(
                "{arch:?}: a loss fell by only {:.0}%: the comparison is vacuous",
                fell * 100.0
            ));
        }
        // Computing in half precision changes the numbers: equal curves would mean the casts
        // never happened.
        if deviation.iter().all(|&d| d < 1e-7) {
            failures.push(format!("{arch:?}: {HALF:?} and f32 losses are identical"));
        }

        // Master weights: the half run's parameters are still f32.
        let mut dtypes = Dtypes(vec![]);
        half_model.visit(&mut dtypes);
        if let Some(d) = dtypes.0.iter().find(|d| **d != DType::F32) {
            failures.push(format!("{arch:?}: a parameter of the half run is {d:?}"));
        }

        // Weights of either run load into a model computing in the other precision.
        let (from_half, from_f32) = (dir.join("half.safetensors"), dir.join("f32.safetensors"));
        ramba_core::checkpoint::save_weights(&half_model, &from_half).unwrap();
        ramba_core::checkpoint::save_weights(&f32_model, &from_f32).unwrap();
        let probe = &batches[0];
        let eval = |model: &LanguageModel<Autodiff<Gpu>>| -> f64 {
            loss_of(&model.valid(), probe, &device)
                .into_scalar()
                .elem::<f64>()
        };
        let half_as_f32 = ramba_core::checkpoint::load_weights(fresh(), &from_half).unwrap();
        let f32_as_half = ramba_core::checkpoint::load_weights(fresh(), &from_f32)
            .unwrap()
            .with_compute_dtype(HALF);
        let (a, b) = (
            eval(&half_as_f32),
            eval(&half_model.with_compute_dtype(DType::F32)),
        );
        if a != b {
            failures.push(format!(
                "{arch:?}: the half run's checkpoint loaded into f32 gives loss {a}, its own \
                 weights in f32 {b}"
            ));
        }
        let (a, b) = (eval(&f32_as_half), eval(&f32_model));
        let close = (a - b).abs() <= MAX_STEP_DEVIATION * b;
        if !close {
            failures.push(format!(
                "{arch:?}: the f32 run's checkpoint computing in {HALF:?} gives loss {a}, in \
                 f32 {b}"
            ));
        }
        std::fs::remove_dir_all(&dir).ok();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The logits of a tiny model trained in f32 on the GPU, computed again in f32 and in half
/// precision by the GPU's inference forward, match the CPU backend's f32 logits of the same
/// weights, and each fused loss matches the cross-entropy of its own logits. Trained weights
/// (not the initial ones) make the logits far from uniform, so a wrong row, a misread target
/// or a leak from later positions moves the loss by far more than rounding. On failure the
/// message names the worst position of each batch row.
#[test]
fn forward_in_each_precision_matches_the_cpu() {
    let device = Default::default();
    let cpu_device = Default::default();
    let mut failures = vec![];
    for arch in [Arch::Transformer, Arch::Mamba2, Arch::Ramba, Arch::SwaHsa] {
        let cfg = tiny_config(arch);
        let batches = motif_batches(cfg.vocab_size);
        <Gpu as Backend>::seed(&device, 3);
        let (_, trained) = train(cfg.init::<Autodiff<Gpu>>(&device), &batches);
        let dir =
            std::env::temp_dir().join(format!("ramba-forward-{}-{arch:?}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trained.safetensors");
        ramba_core::checkpoint::save_weights(&trained, &path).unwrap();
        let cpu_model =
            ramba_core::checkpoint::load_weights(cfg.init::<TestCpu>(&cpu_device), &path).unwrap();
        std::fs::remove_dir_all(&dir).ok();

        let probe = &batches[1];
        let vocab = cfg.vocab_size;
        let want_logits = logits_of(&cpu_model, probe, &cpu_device);
        let want_loss: f64 = loss_of(&cpu_model, probe, &cpu_device).into_scalar().elem();
        let targets: Vec<usize> = (0..BATCH)
            .flat_map(|b| (1..=SEQ).map(move |t| probe[b * (SEQ + 1) + t] as usize))
            .collect();
        for (dtype, tol) in [(DType::F32, 2e-3), (HALF, 3e-2)] {
            let model = trained.valid().with_compute_dtype(dtype);
            let logits = logits_of(&model, probe, &device);
            let loss: f64 = loss_of(&model, probe, &device).into_scalar().elem();
            let of_logits = host_cross_entropy(&logits, &targets, vocab);
            let err = rel_err_vec(&logits, &want_logits);
            eprintln!(
                "{arch:?} {dtype:?}: logits error {err:.2e}; loss {loss:.5}, of its logits \
                 {of_logits:.5}, CPU f32 {want_loss:.5}"
            );
            let off = |e: f64, bound: f64| e.is_nan() || e > bound;
            if off(err, tol) || off((loss - want_loss).abs(), tol * want_loss) {
                let worst: Vec<String> = (0..BATCH)
                    .map(|b| {
                        let (t, e) = (0..SEQ)
                            .map(|t| {
                                let at = (b * SEQ + t) * vocab..(b * SEQ + t + 1) * vocab;
                                (t, rel_err_vec(&logits[at.clone()], &want_logits[at]))
                            })
                            .fold((0, 0.0), |a, x| if x.1 > a.1 { x } else { a });
                        format!("row {b}: position {t} off by {e:.2e}")
                    })
                    .collect();
                failures.push(format!(
                    "{arch:?} {dtype:?}: logits off by {err:.2e} ({}), loss {loss} against \
                     the CPU's {want_loss}",
                    worst.join(", ")
                ));
            }
            if off((loss - of_logits).abs(), 1e-3 * of_logits) {
                failures.push(format!(
                    "{arch:?} {dtype:?}: the fused loss {loss} is not the loss of the \
                     logits, {of_logits}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The inference forward's logits of the probe's inputs, f32, as a host vector.
fn logits_of<B: RambaBackend>(
    model: &LanguageModel<B>,
    toks: &[i64],
    device: &B::Device,
) -> Vec<f64> {
    let (inputs, _) = inputs_and_targets::<B>(toks, device);
    to_vec(model.forward(inputs).cast(DType::F32))
}

/// The mean cross-entropy of `logits [rows, vocab]` against `targets`, in f64.
fn host_cross_entropy(logits: &[f64], targets: &[usize], vocab: usize) -> f64 {
    let total: f64 = logits
        .chunks(vocab)
        .zip(targets)
        .map(|(row, &t)| {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            m + row.iter().map(|z| (z - m).exp()).sum::<f64>().ln() - row[t]
        })
        .sum();
    total / targets.len() as f64
}
