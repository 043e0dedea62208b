//! The training loss: weighted mean cross-entropy of targets over a vocabulary,
//! `Σ_i w_i (lse_i − z_i[t_i]) / Σ_i w_i` for logits `z [N, V]`, targets `t [N]` and weights
//! `w [N]` (the loss mask; answer tokens may weigh more).
//!
//! [`cross_entropy`] is what models call. [`reference`] is `log_softmax` and a gather, and under
//! `Autodiff` it keeps f32 `[N, V]` tensors for its backward (6.6 GB each at 8 × 4096 tokens
//! of a 50,280-token vocabulary). [`autodiff`] is one graph node on the backends that fuse it
//! ([`RambaBackend::fused_norm_and_loss`]: the CubeCL ones; the CPU keeps the reference): its forward
//! keeps the logits in their own dtype and the rows' log-sum-exp, its backward forms
//! `(softmax − onehot)·w` a block of rows at a time in f32, so no f32 copy of all the logits
//! exists in either direction, whatever the compute dtype.

pub mod autodiff;
pub mod head;
pub mod reference;

use burn::prelude::*;

use super::{from_float, into_float, RambaBackend};

/// The loss of `logits [N, V]` (any float dtype) for `targets [N]` weighted by `weights [N]`,
/// as an f32 `[1]`; differentiable in the logits (not in the weights).
pub fn cross_entropy<B: RambaBackend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
) -> Tensor<B, 1> {
    from_float(B::cross_entropy(
        into_float(logits),
        targets.into_primitive(),
        into_float(weights),
    ))
}

/// The loss of the LM head's logits `x [N, d] · weight [d, V]` for `targets [N]` weighted by
/// `weights [N]`, an f32 `[1]`, differentiable in `x` and `weight`. Where the backend fuses the
/// linear layers the `[N, V]` logits are formed a block of rows at a time and never kept (see
/// [`head`]); elsewhere it is [`cross_entropy`] of the product.
pub fn linear_cross_entropy<B: RambaBackend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
) -> Tensor<B, 1> {
    from_float(B::linear_cross_entropy(
        into_float(x),
        into_float(weight),
        targets.into_primitive(),
        into_float(weights),
    ))
}
