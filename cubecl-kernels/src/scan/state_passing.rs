//! The sequential part of the chunked scan: states carried from chunk to chunk.
//!
//! Forward: `H_0 = init`, `H_{c+1} = exp(log_decay_c) H_c + S_c`; the chunk states `S_c` are
//! replaced in place by the chunk-start states `H_c`, and `H_{n_chunks}` is the final state.
//! Backward: with `G_{n_chunks}` the final state's gradient, `G_c = exp(log_decay_c) G_{c+1} +
//! D_c` (`D_c` the chunk's local state gradient, replaced in place by `G_{c+1}`, the gradient
//! reaching the chunk's end state), and `G_0` is the initial state's gradient.
//!
//! Shapes: chunk buffers f32 `[B, H, n_chunks, P, N]`, `log_decay` f32 `[B, H, n_chunks]`,
//! states `[B, H, P, N]` (the scan's dtype).
//!
//! Grid: one thread per `(batch, head, state element)`, [`THREADS`] a cube; each walks the
//! chunks in order, so the loads of one chunk step are coalesced across the cube. The walk is a
//! chain of dependent steps: loads are issued [`UNROLL`] chunks at a time to hide their latency.

use burn::tensor::DType;
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use super::{empty_like_shape, ScanShape, THREADS};
use crate::launch::{address_type_of, cube_count_for};

/// Chunks whose loads a thread issues together.
const UNROLL: usize = 8;

#[cube(launch_unchecked, address_type = "dynamic")]
fn state_passing_kernel<F: Float>(
    chunks: &mut Tensor<f32>,
    log_decay: &Tensor<f32>,
    init: &Tensor<F>,
    last: &mut Tensor<F>,
    n_chunks: usize,
    n_elems: usize,
    #[comptime] state_size: usize,
    #[define(F)] _dtype: StorageType,
) {
    let i = CUBE_POS * comptime!(THREADS as usize) + UNIT_POS as usize;
    if i >= n_elems {
        terminate!();
    }
    let bh = i / state_size;
    let e = i % state_size;
    let mut h = f32::cast_from(init[i]);
    // Blocks of UNROLL chunks: all of a block's loads are issued before its in-place stores
    // (which the compiler cannot move them past), so UNROLL loads are in flight instead of one.
    let mut s = Array::<f32>::new(UNROLL);
    let mut decay = Array::<f32>::new(UNROLL);
    let mut c0 = 0;
    while c0 < n_chunks {
        #[unroll]
        for k in 0..UNROLL {
            let c = c0 + k;
            if c < n_chunks {
                s[k] = chunks[(bh * n_chunks + c) * state_size + e];
                decay[k] = f32::exp(log_decay[bh * n_chunks + c]);
            }
        }
        #[unroll]
        for k in 0..UNROLL {
            let c = c0 + k;
            if c < n_chunks {
                chunks[(bh * n_chunks + c) * state_size + e] = h;
                h = decay[k] * h + s[k];
            }
        }
        c0 += UNROLL;
    }
    last[i] = F::cast_from(h);
}

#[cube(launch_unchecked, address_type = "dynamic")]
fn state_passing_backward_kernel<F: Float>(
    chunks: &mut Tensor<f32>,
    log_decay: &Tensor<f32>,
    d_last: &Tensor<F>,
    d_init: &mut Tensor<F>,
    n_chunks: usize,
    n_elems: usize,
    #[comptime] state_size: usize,
    #[define(F)] _dtype: StorageType,
) {
    let i = CUBE_POS * comptime!(THREADS as usize) + UNIT_POS as usize;
    if i >= n_elems {
        terminate!();
    }
    let bh = i / state_size;
    let e = i % state_size;
    let mut g = f32::cast_from(d_last[i]);
    // Blocks of UNROLL chunks from the last one down, loads first (see the forward).
    let mut local = Array::<f32>::new(UNROLL);
    let mut decay = Array::<f32>::new(UNROLL);
    let mut end = n_chunks;
    while end > 0 {
        #[unroll]
        for k in 0..UNROLL {
            if k < end {
                let c = end - 1 - k;
                local[k] = chunks[(bh * n_chunks + c) * state_size + e];
                decay[k] = f32::exp(log_decay[bh * n_chunks + c]);
            }
        }
        #[unroll]
        for k in 0..UNROLL {
            if k < end {
                let c = end - 1 - k;
                chunks[(bh * n_chunks + c) * state_size + e] = g;
                g = decay[k] * g + local[k];
            }
        }
        if end > UNROLL {
            end -= UNROLL;
        } else {
            end = 0;
        }
    }
    d_init[i] = F::cast_from(g);
}

/// Forward: turns `chunks` (f32 chunk states) into chunk-start states in place; returns the
/// final state in `init`'s dtype. Inputs must be contiguous.
pub fn state_passing<R: CubeRuntime>(
    chunks: CubeTensor<R>,
    log_decay: CubeTensor<R>,
    init: CubeTensor<R>,
    shape: ScanShape,
) -> CubeTensor<R> {
    let client = init.client.clone();
    let last = empty_like_shape(&init, shape.state_shape(), init.dtype);
    let n_elems = shape.state_shape().num_elements();
    if n_elems == 0 {
        return last;
    }
    let dtype = init.dtype.into();
    let address = address_type_of(&[&chunks, &init]);
    unsafe {
        state_passing_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_elems.div_ceil(THREADS as usize)),
            CubeDim::new_1d(THREADS),
            address,
            chunks.into_tensor_arg(),
            log_decay.into_tensor_arg(),
            init.into_tensor_arg(),
            last.clone().into_tensor_arg(),
            shape.n_chunks(),
            n_elems,
            shape.head_dim * shape.d_state,
            dtype,
        )
    };
    last
}

/// Backward: turns `chunks` (f32 local state gradients) into the gradients reaching each
/// chunk's end state, in place; returns the initial state's gradient in `dtype`.
pub fn state_passing_backward<R: CubeRuntime>(
    chunks: CubeTensor<R>,
    log_decay: CubeTensor<R>,
    d_last: CubeTensor<R>,
    dtype: DType,
    shape: ScanShape,
) -> CubeTensor<R> {
    let client = d_last.client.clone();
    let d_init = empty_like_shape(&d_last, shape.state_shape(), dtype);
    let n_elems = shape.state_shape().num_elements();
    if n_elems == 0 {
        return d_init;
    }
    let storage = dtype.into();
    let address = address_type_of(&[&chunks, &d_last]);
    unsafe {
        state_passing_backward_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_elems.div_ceil(THREADS as usize)),
            CubeDim::new_1d(THREADS),
            address,
            chunks.into_tensor_arg(),
            log_decay.into_tensor_arg(),
            d_last.into_tensor_arg(),
            d_init.clone().into_tensor_arg(),
            shape.n_chunks(),
            n_elems,
            shape.head_dim * shape.d_state,
            storage,
        )
    };
    d_init
}
