//! Token embedding lookup, with a weight gradient that the CubeCL backends form by grouping the
//! tokens by id (`cubecl-kernels/src/embedding.rs`) instead of Burn's one thread per column.
//!
//! [`embedding`] is what models call. Under `Autodiff<B>` it is one graph node
//! ([`autodiff`]) whose backward calls [`RambaBackend::embedding_grad`]: Burn's own
//! `embedding_backward` by default (the CPU's, unchanged), the kernel on the CubeCL backends.

pub mod autodiff;

use burn::prelude::*;

use super::{from_float, into_float, RambaBackend};

/// `weight [vocab, d]` rows at `tokens [batch, seq]` → `[batch, seq, d]` in the weight's dtype.
pub fn embedding<B: RambaBackend>(weight: Tensor<B, 2>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    from_float(B::embedding_lookup(
        into_float(weight),
        tokens.into_primitive(),
    ))
}
