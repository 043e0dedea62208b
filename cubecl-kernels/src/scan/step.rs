//! One-token scan step for decoding: `h ← exp(Δ A) h + Δ x Bᵀ`, `y = h C + D x`, in place on
//! the state, one launch per layer per token.
//!
//! Shapes: `x`, `y`: `[B, H, P]`; `delta`: `[B, H]`; `a`, `d`: `[H]`; `b`, `c`: `[B, G, N]`;
//! `state`: `[B, H, P, N]` (updated in place; any float dtype, accumulated in f32).
//!
//! Grid: one thread per `(batch, head, p)`, walking its state row of `N` (consecutive threads'
//! rows are adjacent, so each row's cache lines are fully used across the loop).

use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use super::empty_like_shape;
use crate::launch::{address_type_of, cube_count_for, into_owned_contiguous};

const THREADS: u32 = 128;

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn scan_step_kernel<F: Float>(
    x: &Tensor<F>,
    delta: &Tensor<F>,
    a: &Tensor<F>,
    b: &Tensor<F>,
    c: &Tensor<F>,
    d: &Tensor<F>,
    state: &mut Tensor<F>,
    y: &mut Tensor<F>,
    n_rows: usize,
    #[comptime] heads: usize,
    #[comptime] groups: usize,
    #[comptime] head_dim: usize,
    #[comptime] d_state: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = CUBE_POS * comptime!(THREADS as usize) + UNIT_POS as usize;
    if row >= n_rows {
        terminate!();
    }
    let bh = row / head_dim;
    let h = bh % heads;
    let batch = bh / heads;
    let g = h / comptime!(heads / groups);
    let dt = f32::cast_from(delta[bh]);
    let decay = f32::exp(dt * f32::cast_from(a[h]));
    let xv = f32::cast_from(x[row]);
    let input = dt * xv;
    let bc = (batch * groups + g) * d_state;
    let base = row * d_state;
    let mut acc = f32::new(0.0);
    for n in 0..d_state {
        let hn = decay * f32::cast_from(state[base + n]) + input * f32::cast_from(b[bc + n]);
        state[base + n] = F::cast_from(hn);
        acc += hn * f32::cast_from(c[bc + n]);
    }
    y[row] = F::cast_from(acc + f32::cast_from(d[h]) * xv);
}

/// Launches the step; returns `(y [B, H, P], state)` where `state` is the input state updated
/// in place (made contiguous first if it was not).
#[allow(clippy::too_many_arguments)]
pub fn scan_step<R: CubeRuntime>(
    x: CubeTensor<R>,
    delta: CubeTensor<R>,
    a: CubeTensor<R>,
    b: CubeTensor<R>,
    c: CubeTensor<R>,
    d: CubeTensor<R>,
    state: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let [x, delta, a, b, c, d] = [x, delta, a, b, c, d].map(into_contiguous);
    let state = into_owned_contiguous(state);
    let shape = state.meta.shape().clone();
    let (batch, heads, head_dim, d_state) = (shape[0], shape[1], shape[2], shape[3]);
    let groups = b.meta.shape()[1];
    let y = empty_like_shape(&x, x.meta.shape().clone(), x.dtype);
    let n_rows = batch * heads * head_dim;
    if n_rows == 0 {
        return (y, state);
    }
    let client = x.client.clone();
    let dtype = x.dtype.into();
    let address = address_type_of(&[&state]);
    unsafe {
        scan_step_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_rows.div_ceil(THREADS as usize)),
            CubeDim::new_1d(THREADS),
            address,
            x.into_tensor_arg(),
            delta.into_tensor_arg(),
            a.into_tensor_arg(),
            b.into_tensor_arg(),
            c.into_tensor_arg(),
            d.into_tensor_arg(),
            state.clone().into_tensor_arg(),
            y.clone().into_tensor_arg(),
            n_rows,
            heads,
            groups,
            head_dim,
            d_state,
            dtype,
        )
    };
    (y, state)
}
