//! The cross-entropy in plain tensor ops: the CPU backend's forward, and the oracle of the
//! blockwise forward and backward of [`super::autodiff`], which are written here too (they are
//! plain tensor ops on the inner backend).

use burn::prelude::*;
use burn::tensor::{DType, IndexingUpdateOp};

/// Rows per block of the blockwise passes: about 256 MiB of f32 logits each.
pub fn block_rows(vocab: usize) -> usize {
    ((64usize << 20) / vocab.max(1)).max(1)
}

/// `log_softmax`, gather and the weighted mean over `logits [.., V]`, `targets` and `weights
/// [..]` of any rank, differentiable through `Autodiff`.
pub fn cross_entropy<B: Backend, const D: usize, const DT: usize>(
    logits: Tensor<B, D>,
    targets: Tensor<B, DT, Int>,
    weights: Tensor<B, DT>,
) -> Tensor<B, 1> {
    let logp = burn::tensor::activation::log_softmax(logits.cast(DType::F32), D - 1);
    let picked: Tensor<B, DT> = logp
        .gather(D - 1, targets.unsqueeze_dim(DT))
        .squeeze_dim(DT);
    let weights = weights.cast(DType::F32);
    let total = weights.clone().sum().clamp_min(1e-9);
    (picked * weights).sum().neg() / total
}

/// The primitive form of [`cross_entropy`], for the seam's default method.
pub fn cross_entropy_primitive<B: Backend>(
    logits: burn::tensor::ops::FloatTensor<B>,
    targets: burn::tensor::ops::IntTensor<B>,
    weights: burn::tensor::ops::FloatTensor<B>,
) -> burn::tensor::ops::FloatTensor<B> {
    use crate::ops::{from_float, into_float};
    into_float(cross_entropy::<B, 2, 1>(
        from_float(logits),
        Tensor::from_primitive(targets),
        from_float(weights),
    ))
}

/// What the blockwise forward returns: the loss `[1]`, each row's log-sum-exp `[N]` and the
/// weights' sum `[1]`, all f32.
pub struct Forward<B: Backend> {
    /// The weighted mean.
    pub loss: Tensor<B, 1>,
    /// `log Σ_v exp z_iv`.
    pub lse: Tensor<B, 1>,
    /// `max(Σ w, 1e-9)`.
    pub total: Tensor<B, 1>,
}

/// Each row's `log Σ_v exp z_v` of `logits [N, V]`, `block` rows at a time in f32: f32 `[N]`.
pub fn row_logsumexp_blockwise<B: Backend>(logits: Tensor<B, 2>, block: usize) -> Tensor<B, 1> {
    let n = logits.dims()[0];
    Tensor::cat(
        (0..n)
            .step_by(block)
            .map(|start| {
                let end = (start + block).min(n);
                let z = logits.clone().slice(start..end).cast(DType::F32);
                let max = z.clone().max_dim(1);
                ((z - max.clone()).exp().sum_dim(1).log() + max).reshape([end - start])
            })
            .collect(),
        0,
    )
}

/// `Σ_i w_i (lse_i − z_i[t_i])` (f32 `[1]`) from the rows' log-sum-exp `lse [N]` (f32).
pub fn weighted_nll_sum<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
    lse: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let n = logits.dims()[0];
    let picked = logits
        .gather(1, targets.unsqueeze_dim(1))
        .cast(DType::F32)
        .reshape([n]);
    ((lse - picked) * weights.cast(DType::F32)).sum()
}

/// The loss from the rows' log-sum-exp `lse [N]` (f32): `Σ w (lse − z[t]) / Σ w`.
pub fn loss_from_lse<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
    lse: Tensor<B, 1>,
) -> Forward<B> {
    let total = weights.clone().cast(DType::F32).sum().clamp_min(1e-9);
    Forward {
        loss: weighted_nll_sum(logits, targets, weights, lse.clone()) / total.clone(),
        lse,
        total,
    }
}

/// The loss without a graph, `block` rows at a time in f32.
pub fn forward_blockwise<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
    block: usize,
) -> Forward<B> {
    let lse = row_logsumexp_blockwise(logits.clone(), block);
    loss_from_lse(logits, targets, weights, lse)
}

/// Each row's factor of the logits' gradient, `w · g / Σw` (f32 `[N]`), for the loss gradient
/// `grad [1]`.
pub fn grad_coefficients<B: Backend>(
    weights: Tensor<B, 1>,
    total: Tensor<B, 1>,
    grad: Tensor<B, 1>,
) -> Tensor<B, 1> {
    weights.cast(DType::F32) * (grad.cast(DType::F32) / total)
}

/// The logits' gradient for the loss gradient `grad [1]`: `(softmax(z) − onehot(t)) · w · g / Σw`,
/// `block` rows at a time in f32, returned in the logits' dtype.
#[allow(clippy::too_many_arguments)]
pub fn backward_blockwise<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
    lse: Tensor<B, 1>,
    total: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    block: usize,
) -> Tensor<B, 2> {
    let coef = grad_coefficients(weights, total, grad);
    logits_grad_blockwise(logits, targets, coef, lse, block)
}

/// `(softmax(z) − onehot(t)) · coef` row by row for `coef [N]` and `lse [N]` (f32), `block`
/// rows at a time in f32, returned in the logits' dtype.
pub fn logits_grad_blockwise<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    coef: Tensor<B, 1>,
    lse: Tensor<B, 1>,
    block: usize,
) -> Tensor<B, 2> {
    let n = logits.dims()[0];
    let dtype = logits.dtype();
    // Each block's gradient is written over the block's logits, which nothing reads again: the
    // logits' buffer becomes the gradient's (in place when the graph held its last reference,
    // else after one copy), instead of collecting every block and concatenating them, which held
    // the logits, the blocks and the concatenation at once (3 × 3.3 GB at 8 × 4096 tokens of a
    // 50,280-token vocabulary in bf16).
    let mut out = logits;
    for start in (0..n).step_by(block) {
        let end = (start + block).min(n);
        let rows = end - start;
        let z = out.clone().slice(start..end).cast(DType::F32);
        let c = coef.clone().slice(start..end).reshape([rows, 1]);
        let softmax = (z - lse.clone().slice(start..end).reshape([rows, 1])).exp();
        let at_target = targets.clone().slice(start..end).reshape([rows, 1]);
        let d = (softmax * c.clone())
            .scatter(1, at_target, c.neg(), IndexingUpdateOp::Add)
            .cast(dtype);
        out = out.slice_assign(start..end, d);
    }
    out
}
