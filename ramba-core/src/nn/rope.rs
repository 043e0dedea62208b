//! Rotary position embedding (RoFormer), half-split ("NeoX") layout.
//!
//! The angles are computed on the host in f64 for the requested positions only, so there is no
//! maximum length and positions in the millions keep full precision.

use burn::prelude::*;

/// Rotates `x` `[batch, heads, seq, head_dim]` for positions `start..start + seq`.
pub fn apply_rope<B: Backend>(x: Tensor<B, 4>, start: usize, theta: f64) -> Tensor<B, 4> {
    let [batch, heads, seq, dim] = x.dims();
    let half = dim / 2;
    let device = x.device();
    // Frequencies once per call, not once per (position, pair).
    let freqs: Vec<f64> = (0..half)
        .map(|i| theta.powf(-(2.0 * i as f64) / dim as f64))
        .collect();
    let mut cos = Vec::with_capacity(seq * half);
    let mut sin = Vec::with_capacity(seq * half);
    for t in 0..seq {
        for freq in &freqs {
            let angle = (start + t) as f64 * freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let table = |v: Vec<f32>| {
        Tensor::<B, 2>::from_data(TensorData::new(v, [seq, half]), &device)
            .reshape([1, 1, seq, half])
            .cast(x.dtype())
    };
    let (cos, sin) = (table(cos), table(sin));
    let x1 = x.clone().slice([0..batch, 0..heads, 0..seq, 0..half]);
    let x2 = x.slice([0..batch, 0..heads, 0..seq, half..dim]);
    Tensor::cat(
        vec![
            x1.clone() * cos.clone() - x2.clone() * sin.clone(),
            x2 * cos + x1 * sin,
        ],
        3,
    )
}
