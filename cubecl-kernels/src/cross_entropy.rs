//! The cross-entropy's two passes over the logits, one launch each: each row's log-sum-exp, and
//! the logits' gradient `(softmax(z) − onehot(t)) · c` written over the logits.
//!
//! Op by op, the loss over `z [N, V]` (8 × 4096 rows of a 50,280-token vocabulary: 1.6 G
//! elements) cast blocks of rows to f32 and ran max, subtract, exp and sum over them forward,
//! and cast, subtract, exp, multiply, scatter and cast back backward: ~80 bytes moved per logit,
//! and Burn's untuned row reductions (one thread per row). Here the forward reads each logit
//! once (an online max and sum per thread, f32) and the backward reads and writes it once, in
//! the logits' dtype.
//!
//! Shapes: `logits [rows, vocab]` contiguous, any float dtype; `targets [rows]` (an int dtype,
//! each in `0..vocab`); `coef`, `lse [rows]` f32.
//!
//! Grid: one cube of [`THREADS`] threads per row; thread `t` takes the columns
//! `j ≡ t (mod THREADS)`, [`UNROLL`] of them per step so their loads are in flight together.

use burn::tensor::{DType, Shape};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use crate::launch::{address_type_of, cube_count_for, empty_like_shape, into_owned_contiguous};

/// Threads per cube (a power of two: the shared-memory tree halves it).
const THREADS: usize = 256;
/// Columns a thread loads per step.
const UNROLL: usize = 4;
/// Below every finite logit; `exp(LOW − m)` is 0 for any real `m`, and `LOW − LOW` is 0.
const LOW: f32 = -3.0e38;

/// One level of the (max, sum) tree: the lower `half` slots absorb the upper ones.
#[cube]
fn combine_level(
    maxes: &mut SharedMemory<f32>,
    sums: &mut SharedMemory<f32>,
    t: usize,
    #[comptime] half: usize,
) {
    if t < half {
        let (ma, mb) = (maxes[t], maxes[t + half]);
        let m = max(ma, mb);
        sums[t] = sums[t] * f32::exp(ma - m) + sums[t + half] * f32::exp(mb - m);
        maxes[t] = m;
    }
    sync_cube();
}

#[cube(launch_unchecked, address_type = "dynamic")]
fn row_logsumexp_kernel<F: Float>(
    logits: &Tensor<F>,
    lse: &mut Tensor<f32>,
    rows: usize,
    vocab: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let t = UNIT_POS as usize;
    let base = row * vocab;
    let mut m = f32::new(LOW);
    let mut s = 0.0f32;
    let mut v = Array::<f32>::new(UNROLL);
    let mut j0 = 0usize;
    while j0 < vocab {
        let mut local = f32::new(LOW);
        #[unroll]
        for u in 0..UNROLL {
            let j = j0 + u * THREADS + t;
            let mut x = f32::new(LOW);
            if j < vocab {
                x = f32::cast_from(logits[base + j]);
            }
            v[u] = x;
            local = max(local, x);
        }
        let m_new = max(m, local);
        let mut add = 0.0f32;
        #[unroll]
        for u in 0..UNROLL {
            add += f32::exp(v[u] - m_new);
        }
        // Columns past the end contribute exp(LOW − m_new) = 0, unless the whole row so far is
        // past the end (m_new = LOW), which only a thread with no columns sees: its sum is
        // cleared below.
        s = s * f32::exp(m - m_new) + add;
        m = m_new;
        j0 += THREADS * UNROLL;
    }
    if t >= vocab {
        s = 0.0;
    }
    let mut maxes = SharedMemory::<f32>::new(THREADS);
    let mut sums = SharedMemory::<f32>::new(THREADS);
    maxes[t] = m;
    sums[t] = s;
    sync_cube();
    // THREADS = 256: eight levels.
    combine_level(&mut maxes, &mut sums, t, 128usize);
    combine_level(&mut maxes, &mut sums, t, 64usize);
    combine_level(&mut maxes, &mut sums, t, 32usize);
    combine_level(&mut maxes, &mut sums, t, 16usize);
    combine_level(&mut maxes, &mut sums, t, 8usize);
    combine_level(&mut maxes, &mut sums, t, 4usize);
    combine_level(&mut maxes, &mut sums, t, 2usize);
    combine_level(&mut maxes, &mut sums, t, 1usize);
    if t == 0 {
        lse[row] = f32::ln(sums[0]) + maxes[0];
    }
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn logits_grad_kernel<F: Float, I: Int>(
    values: &mut Tensor<F>,
    targets: &Tensor<I>,
    coef: &Tensor<f32>,
    lse: &Tensor<f32>,
    rows: usize,
    vocab: usize,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let t = UNIT_POS as usize;
    let base = row * vocab;
    let c = coef[row];
    let l = lse[row];
    let target = i32::cast_from(targets[row]);
    let mut v = Array::<f32>::new(UNROLL);
    let mut j0 = 0usize;
    while j0 < vocab {
        #[unroll]
        for u in 0..UNROLL {
            let j = j0 + u * THREADS + t;
            if j < vocab {
                v[u] = f32::cast_from(values[base + j]);
            }
        }
        #[unroll]
        for u in 0..UNROLL {
            let j = j0 + u * THREADS + t;
            if j < vocab {
                let mut g = f32::exp(v[u] - l) * c;
                if j as i32 == target {
                    g -= c;
                }
                values[base + j] = F::cast_from(g);
            }
        }
        j0 += THREADS * UNROLL;
    }
}

fn dims2<R: CubeRuntime>(x: &CubeTensor<R>) -> [usize; 2] {
    let shape = x.meta.shape();
    assert_eq!(
        shape.num_dims(),
        2,
        "the cross-entropy kernels take logits [rows, vocab]"
    );
    [shape[0], shape[1]]
}

/// `log Σ_v exp z_v` of each row of `logits [rows, vocab]`, f32 `[rows]`.
pub fn row_logsumexp<R: CubeRuntime>(logits: CubeTensor<R>) -> CubeTensor<R> {
    let [rows, vocab] = dims2(&logits);
    let logits = into_contiguous(logits);
    let lse = empty_like_shape(&logits, Shape::new([rows]), DType::F32);
    if rows == 0 {
        return lse;
    }
    let client = logits.client.clone();
    let dtype = logits.dtype.into();
    let address = address_type_of(&[&logits]);
    unsafe {
        row_logsumexp_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, rows),
            CubeDim::new_1d(THREADS as u32),
            address,
            logits.into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            rows,
            vocab,
            dtype,
        )
    };
    lse
}

/// The logits' gradient `(softmax(z) − onehot(t)) · coef` row by row, for the forward's `lse`,
/// in the logits' dtype. It is written over the logits' buffer when nobody else holds it (the
/// loss's backward is the logits' last reader), else over a copy.
pub fn logits_grad<R: CubeRuntime>(
    logits: CubeTensor<R>,
    targets: CubeTensor<R>,
    coef: CubeTensor<R>,
    lse: CubeTensor<R>,
) -> CubeTensor<R> {
    let [rows, vocab] = dims2(&logits);
    let values = into_owned_contiguous(logits);
    let targets = into_contiguous(targets);
    let coef = into_contiguous(coef);
    let lse = into_contiguous(lse);
    assert_eq!(coef.dtype, DType::F32, "the loss coefficients are f32");
    assert_eq!(lse.dtype, DType::F32, "the log-sum-exp is f32");
    if rows == 0 {
        return values;
    }
    let client = values.client.clone();
    let dtypes = [values.dtype.into(), targets.dtype.into()];
    let address = address_type_of(&[&values]);
    unsafe {
        logits_grad_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, rows),
            CubeDim::new_1d(THREADS as u32),
            address,
            values.clone().into_tensor_arg(),
            targets.into_tensor_arg(),
            coef.into_tensor_arg(),
            lse.into_tensor_arg(),
            rows,
            vocab,
            dtypes,
        )
    };
    values
}
