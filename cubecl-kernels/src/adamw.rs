//! One AdamW step of one parameter tensor in one launch.
//!
//! With `g` the gradient, `m`, `v` the moments, `t` the step, and the bias corrections
//! `c₁ = 1 − β₁ᵗ`, `c₂ = 1 − β₂ᵗ` computed on the host:
//! `m ← β₁·m + (1 − β₁)·g`, `v ← β₂·v + (1 − β₂)·g²`,
//! `p ← p·(1 − lr·λ) − lr · (m / c₁) / (√(v / c₂) + ε)`: Burn's `AdamW`, whose op-by-op form
//! launches about fifteen kernels a parameter (`docs/perf.md`, 2026-12-07: optimizer and
//! clipping were half of a step's 11,000 launches).
//!
//! Shapes: `param`, `grad`, `m`, `v` contiguous with the same number of elements, f32 (the
//! master weights). `param`, `m` and `v` are updated in place.
//!
//! Grid: one thread per element.

use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use crate::launch::{address_type_of, cube_count_for};

/// Threads per cube.
const THREADS: usize = 256;

/// The scalars of one step.
#[derive(Clone, Copy, Debug)]
pub struct AdamWScalars {
    pub lr: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    /// `lr · weight_decay`.
    pub decay: f32,
    /// `1 − β₁ᵗ`.
    pub bias_correction_1: f32,
    /// `1 − β₂ᵗ`.
    pub bias_correction_2: f32,
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn adamw_kernel(
    param: &mut Tensor<f32>,
    grad: &Tensor<f32>,
    m: &mut Tensor<f32>,
    v: &mut Tensor<f32>,
    lr: f32,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    decay: f32,
    bias_correction_1: f32,
    bias_correction_2: f32,
    n: usize,
) {
    let i = CUBE_POS * comptime!(THREADS) + UNIT_POS as usize;
    if i < n {
        let g = grad[i];
        let m1 = m[i] * beta_1 + g * (1.0 - beta_1);
        let m2 = v[i] * beta_2 + g * g * (1.0 - beta_2);
        m[i] = m1;
        v[i] = m2;
        let delta = (m1 / bias_correction_1) / (f32::sqrt(m2 / bias_correction_2) + epsilon);
        param[i] = param[i] * (1.0 - decay) - delta * lr;
    }
}

/// A tensor this launch may write: itself when nobody else holds it, else a contiguous copy.
fn owned<R: CubeRuntime>(t: CubeTensor<R>) -> CubeTensor<R> {
    crate::launch::into_owned_contiguous(t)
}

/// One step: `(param, m, v)` after it (updated in place where the buffers are not shared).
pub fn adamw_step<R: CubeRuntime>(
    param: CubeTensor<R>,
    grad: CubeTensor<R>,
    m: CubeTensor<R>,
    v: CubeTensor<R>,
    s: AdamWScalars,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let n = param.meta.shape().num_elements();
    let (param, m, v) = (owned(param), owned(m), owned(v));
    let grad = into_contiguous(grad);
    if n == 0 {
        return (param, m, v);
    }
    let client = param.client.clone();
    let address = address_type_of(&[&param]);
    unsafe {
        adamw_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n.div_ceil(THREADS)),
            CubeDim::new_1d(THREADS as u32),
            address,
            param.clone().into_tensor_arg(),
            grad.into_tensor_arg(),
            m.clone().into_tensor_arg(),
            v.clone().into_tensor_arg(),
            s.lr,
            s.beta_1,
            s.beta_2,
            s.epsilon,
            s.decay,
            s.bias_correction_1,
            s.bias_correction_2,
            n,
        )
    };
    (param, m, v)
}
