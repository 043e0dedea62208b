//! The norm nodes (`ops::norm`: RMSNorm, Mamba-2's gated RMSNorm, SiLU) against the CPU's
//! op-by-op reference: outputs and the gradients of every input, for widths under, at and over
//! one cube's threads (and not a multiple of them), rows not a multiple of the backward's rows
//! per cube, in f32 and in half precision with an f32 scale.

use super::*;
use burn::tensor::DType;
use ramba_core::ops::norm;

#[derive(Clone, Copy, Debug)]
enum NormKind {
    Rms,
    Gated,
    Silu,
}

/// `(y, dx, dz, dγ)` of `sum(norm(x, z, γ) · r)` on backend `B` as f32 host vectors (`dz`,
/// `dγ` empty where the kind has no such input).
fn run<B: burn::tensor::backend::AutodiffBackend + RambaBackend>(
    kind: NormKind,
    (rows, d): (usize, usize),
    dtype: DType,
    device: &B::Device,
) -> [Vec<f64>; 4] {
    let mut r = rng((rows * 1000 + d) as u64);
    let x = random::<B, 3>(&mut r, [1, rows, d], 1.0, device)
        .cast(dtype)
        .require_grad();
    let z = random::<B, 3>(&mut r, [1, rows, d], 1.5, device)
        .cast(dtype)
        .require_grad();
    let gamma = (random::<B, 1>(&mut r, [d], 0.3, device) + 1.0).require_grad();
    let probe = random::<B, 3>(&mut r, [1, rows, d], 1.0, device);
    let y = match kind {
        NormKind::Rms => norm::rms_norm(x.clone(), gamma.clone(), 1e-5),
        NormKind::Gated => norm::gated_rms_norm(x.clone(), z.clone(), gamma.clone(), 1e-5),
        NormKind::Silu => norm::silu(x.clone()),
    };
    assert_eq!(y.dtype(), dtype, "the output keeps the input's dtype");
    let grads = (y.clone().cast(DType::F32) * probe).sum().backward();
    let grad = |g: Option<Tensor<B::InnerBackend, 3>>| to_vec(g.expect("grad").cast(DType::F32));
    let dz = match kind {
        NormKind::Gated => grad(z.grad(&grads)),
        _ => vec![],
    };
    let dgamma = match kind {
        NormKind::Silu => vec![],
        _ => to_vec(gamma.grad(&grads).expect("dγ")),
    };
    [
        to_vec(y.inner().cast(DType::F32)),
        grad(x.grad(&grads)),
        dz,
        dgamma,
    ]
}

#[test]
fn norm_nodes_match_reference() {
    assert!(
        <AdGpu as RambaBackend>::fused_norm_and_loss(),
        "the CubeCL backend runs the norms as nodes"
    );
    for kind in [NormKind::Rms, NormKind::Gated, NormKind::Silu] {
        for shape in [(37, 64), (19, 128), (45, 200), (9, 640)] {
            for (dtype, tol) in [(DType::F32, TOL), (HALF, 1e-2)] {
                let got = run::<AdGpu>(kind, shape, dtype, &Default::default());
                let want = run::<AdCpu>(kind, shape, DType::F32, &Default::default());
                for (name, (g, w)) in ["y", "dx", "dz", "dγ"].iter().zip(got.iter().zip(&want)) {
                    if w.is_empty() {
                        continue;
                    }
                    let case = format!("{kind:?} {shape:?} {dtype:?}: {name}");
                    assert!(g.iter().all(|v| v.is_finite()), "{case}: non-finite values");
                    let err = rel_err_vec(g, w);
                    assert!(err < tol, "{case}: relative error {err:.3e}");
                }
            }
        }
    }
}
