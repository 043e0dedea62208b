//! RMSNorm, Mamba-2's gated RMSNorm and SiLU, forward and backward, each one launch.
//!
//! RMSNorm of `u` (the gated form: `u = x · SiLU(z)`): `rstd = 1 / √(mean(u²) + ε)`,
//! `y = u · rstd · γ`. Backward, with `û = u · rstd` and `g = dy · γ`:
//! `du = rstd · (g − û · mean(g · û))`, `dγ = Σ_rows dy · û`; the gated form then has
//! `dx = du · SiLU(z)` and `dz = du · x · σ(z) · (1 + z · (1 − σ(z)))`. All arithmetic is f32;
//! `x`, `z`, `y`, `dy`, `dx`, `dz` are in the activations' dtype, `γ`, `rstd` and `dγ` f32.
//!
//! Shapes: `x`, `z`, `y`, `dy`, `dx`, `dz` `[rows, d]` contiguous; `gamma [d]`; `rstd [rows]`;
//! the backward's `dγ` partial sums `[⌈rows / ROWS_PER_CUBE⌉, d]`, summed over the first axis
//! by the caller.
//!
//! Grid: the forward runs one cube of [`THREADS`] per row, each thread holding the row's
//! elements `j ≡ thread (mod THREADS)` in registers (`d` is compile-time) between the sum of
//! squares and the scaling. The backward runs one cube per [`ROWS_PER_CUBE`] rows, walking them
//! in order and keeping each thread's share of `dγ` in registers, so `dγ` never needs a pass of
//! its own over `[rows, d]`. SiLU runs one thread per element.

use burn::tensor::{DType, Shape};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use crate::launch::{address_type_of, cube_count_for, empty_like_shape};

/// Threads per cube ([`cube_sum`]'s tree has log₂ of it levels).
const THREADS: usize = 128;
/// Rows one backward cube walks. Few, so that many cubes are in flight to hide each row's
/// reduction latency (32 ran at ~1 TB/s on an H200); the `dγ` partials this leaves,
/// `rows / ROWS_PER_CUBE` of them, are one more pass of `reduce::sum_rows`.
pub const ROWS_PER_CUBE: usize = 8;

/// One level of the shared-memory tree: the lower `half` slots add the upper ones.
#[cube]
fn tree_level(smem: &mut SharedMemory<f32>, t: usize, #[comptime] half: usize) {
    if t < half {
        smem[t] += smem[t + half];
    }
    sync_cube();
}

/// Sum of `v` over the cube's [`THREADS`] threads (a tree in shared memory); every thread gets
/// the total.
#[cube]
fn cube_sum(v: f32, smem: &mut SharedMemory<f32>) -> f32 {
    let t = UNIT_POS as usize;
    smem[t] = v;
    sync_cube();
    // THREADS = 128: seven levels.
    tree_level(smem, t, 64usize);
    tree_level(smem, t, 32usize);
    tree_level(smem, t, 16usize);
    tree_level(smem, t, 8usize);
    tree_level(smem, t, 4usize);
    tree_level(smem, t, 2usize);
    tree_level(smem, t, 1usize);
    let total = smem[0];
    // Nobody may overwrite the total before every thread has read it.
    sync_cube();
    total
}

/// `σ(v)`.
#[cube]
pub(crate) fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + f32::exp(-v))
}

/// `SiLU′(v) = σ(v) · (1 + v · (1 − σ(v)))`.
#[cube]
pub(crate) fn silu_grad(v: f32) -> f32 {
    let s = sigmoid(v);
    s * (1.0 + v * (1.0 - s))
}

/// The normalised input at `i`: `x`, or `x · SiLU(z)` when gated.
#[cube]
fn norm_input<F: Float>(x: &Tensor<F>, z: &Tensor<F>, i: usize, #[comptime] gated: bool) -> f32 {
    let xv = f32::cast_from(x[i]);
    if gated {
        let zv = f32::cast_from(z[i]);
        xv * zv * sigmoid(zv)
    } else {
        xv
    }
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn rms_norm_forward_kernel<F: Float>(
    x: &Tensor<F>,
    z: &Tensor<F>,
    gamma: &Tensor<f32>,
    y: &mut Tensor<F>,
    rstd: &mut Tensor<f32>,
    rows: usize,
    epsilon: f32,
    #[comptime] d: usize,
    #[comptime] gated: bool,
    #[define(F)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let t = UNIT_POS as usize;
    let per = comptime!(d.div_ceil(THREADS));
    let base = row * d;
    let mut smem = SharedMemory::<f32>::new(THREADS);
    let mut u = Array::<f32>::new(per);
    let mut acc = 0.0f32;
    #[unroll]
    for k in 0..per {
        let j = t + k * THREADS;
        if j < d {
            let v = norm_input::<F>(x, z, base + j, gated);
            u[k] = v;
            acc += v * v;
        }
    }
    let total = cube_sum(acc, &mut smem);
    let r = 1.0 / f32::sqrt(total / (d as f32) + epsilon);
    #[unroll]
    for k in 0..per {
        let j = t + k * THREADS;
        if j < d {
            y[base + j] = F::cast_from(u[k] * r * gamma[j]);
        }
    }
    if t == 0 {
        rstd[row] = r;
    }
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn rms_norm_backward_kernel<F: Float>(
    x: &Tensor<F>,
    z: &Tensor<F>,
    gamma: &Tensor<f32>,
    rstd: &Tensor<f32>,
    dy: &Tensor<F>,
    dx: &mut Tensor<F>,
    dz: &mut Tensor<F>,
    d_gamma: &mut Tensor<f32>,
    rows: usize,
    #[comptime] d: usize,
    #[comptime] gated: bool,
    #[define(F)] _dtype: StorageType,
) {
    let block = CUBE_POS;
    let t = UNIT_POS as usize;
    let per = comptime!(d.div_ceil(THREADS));
    let mut smem = SharedMemory::<f32>::new(THREADS);
    let mut dg = Array::<f32>::new(per);
    let mut uhat = Array::<f32>::new(per);
    let mut g = Array::<f32>::new(per);
    #[unroll]
    for k in 0..per {
        dg[k] = 0.0;
    }
    for rr in 0..ROWS_PER_CUBE {
        let row = block * ROWS_PER_CUBE + rr;
        // Uniform over the cube, so the syncs of `cube_sum` are reached by every thread.
        if row < rows {
            let r = rstd[row];
            let base = row * d;
            let mut acc = 0.0f32;
            #[unroll]
            for k in 0..per {
                let j = t + k * THREADS;
                if j < d {
                    let uh = norm_input::<F>(x, z, base + j, gated) * r;
                    let dyv = f32::cast_from(dy[base + j]);
                    let gv = dyv * gamma[j];
                    uhat[k] = uh;
                    g[k] = gv;
                    acc += gv * uh;
                    dg[k] += dyv * uh;
                }
            }
            let proj = cube_sum(acc, &mut smem) / (d as f32);
            #[unroll]
            for k in 0..per {
                let j = t + k * THREADS;
                if j < d {
                    let du = (g[k] - uhat[k] * proj) * r;
                    if gated {
                        let i = base + j;
                        let zv = f32::cast_from(z[i]);
                        dx[i] = F::cast_from(du * zv * sigmoid(zv));
                        dz[i] = F::cast_from(du * f32::cast_from(x[i]) * silu_grad(zv));
                    } else {
                        dx[base + j] = F::cast_from(du);
                    }
                }
            }
        }
    }
    #[unroll]
    for k in 0..per {
        let j = t + k * THREADS;
        if j < d {
            d_gamma[block * d + j] = dg[k];
        }
    }
}

#[cube(launch_unchecked, address_type = "dynamic")]
fn silu_forward_kernel<F: Float>(
    x: &Tensor<F>,
    y: &mut Tensor<F>,
    n: usize,
    #[define(F)] _dtype: StorageType,
) {
    let i = CUBE_POS * comptime!(THREADS) + UNIT_POS as usize;
    if i < n {
        let v = f32::cast_from(x[i]);
        y[i] = F::cast_from(v * sigmoid(v));
    }
}

#[cube(launch_unchecked, address_type = "dynamic")]
fn silu_backward_kernel<F: Float>(
    x: &Tensor<F>,
    dy: &Tensor<F>,
    dx: &mut Tensor<F>,
    n: usize,
    #[define(F)] _dtype: StorageType,
) {
    let i = CUBE_POS * comptime!(THREADS) + UNIT_POS as usize;
    if i < n {
        let v = f32::cast_from(x[i]);
        dx[i] = F::cast_from(f32::cast_from(dy[i]) * silu_grad(v));
    }
}

fn dims2<R: CubeRuntime>(x: &CubeTensor<R>) -> [usize; 2] {
    let shape = x.meta.shape();
    assert_eq!(shape.num_dims(), 2, "the norm kernels take [rows, d]");
    [shape[0], shape[1]]
}

/// `gamma` as a contiguous f32 vector (the parameter is f32 already under mixed precision).
fn f32_vector<R: CubeRuntime>(gamma: CubeTensor<R>) -> CubeTensor<R> {
    let gamma = into_contiguous(gamma);
    if gamma.dtype == DType::F32 {
        gamma
    } else {
        burn_cubecl::kernel::cast(gamma, DType::F32)
    }
}

/// Forward: `(y [rows, d] in x's dtype, rstd f32 [rows])`; gated when `z` is given.
pub fn rms_norm_forward<R: CubeRuntime>(
    x: CubeTensor<R>,
    z: Option<CubeTensor<R>>,
    gamma: CubeTensor<R>,
    epsilon: f64,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let [rows, d] = dims2(&x);
    let x = into_contiguous(x);
    let gated = z.is_some();
    let z = z.map(into_contiguous).unwrap_or_else(|| x.clone());
    let gamma = f32_vector(gamma);
    let y = empty_like_shape(&x, Shape::new([rows, d]), x.dtype);
    let rstd = empty_like_shape(&x, Shape::new([rows]), DType::F32);
    if rows == 0 || d == 0 {
        return (y, rstd);
    }
    let client = x.client.clone();
    let dtype = x.dtype.into();
    let address = address_type_of(&[&x, &y]);
    unsafe {
        rms_norm_forward_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, rows),
            CubeDim::new_1d(THREADS as u32),
            address,
            x.into_tensor_arg(),
            z.into_tensor_arg(),
            gamma.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            rstd.clone().into_tensor_arg(),
            rows,
            epsilon as f32,
            d,
            gated,
            dtype,
        )
    };
    (y, rstd)
}

/// Backward gradients of one norm call.
pub struct NormGradients<R: CubeRuntime> {
    /// `[rows, d]`.
    pub x: CubeTensor<R>,
    /// `[rows, d]`, for the gated form.
    pub z: Option<CubeTensor<R>>,
    /// f32 `[⌈rows / ROWS_PER_CUBE⌉, d]`: per-cube sums of `dγ`, summed over the first axis by
    /// the caller.
    pub gamma_partials: CubeTensor<R>,
}

/// Backward for `dy`, given the forward's `rstd`.
pub fn rms_norm_backward<R: CubeRuntime>(
    x: CubeTensor<R>,
    z: Option<CubeTensor<R>>,
    gamma: CubeTensor<R>,
    rstd: CubeTensor<R>,
    dy: CubeTensor<R>,
) -> NormGradients<R> {
    let [rows, d] = dims2(&x);
    let x = into_contiguous(x);
    let dy = into_contiguous(dy);
    let rstd = into_contiguous(rstd);
    let gated = z.is_some();
    let z = z.map(into_contiguous).unwrap_or_else(|| x.clone());
    let gamma = f32_vector(gamma);
    let blocks = rows.div_ceil(ROWS_PER_CUBE);
    let dx = empty_like_shape(&x, Shape::new([rows, d]), x.dtype);
    // Without a gate the kernel never writes dz: a one-element placeholder.
    let dz = if gated {
        empty_like_shape(&x, Shape::new([rows, d]), x.dtype)
    } else {
        empty_like_shape(&x, Shape::new([1]), x.dtype)
    };
    let partials = empty_like_shape(&x, Shape::new([blocks.max(1), d]), DType::F32);
    if rows > 0 && d > 0 {
        let client = x.client.clone();
        let dtype = x.dtype.into();
        let address = address_type_of(&[&x, &dx]);
        unsafe {
            rms_norm_backward_kernel::launch_unchecked::<R>(
                &client,
                cube_count_for(&client, blocks),
                CubeDim::new_1d(THREADS as u32),
                address,
                x.into_tensor_arg(),
                z.into_tensor_arg(),
                gamma.into_tensor_arg(),
                rstd.into_tensor_arg(),
                dy.into_tensor_arg(),
                dx.clone().into_tensor_arg(),
                dz.clone().into_tensor_arg(),
                partials.clone().into_tensor_arg(),
                rows,
                d,
                gated,
                dtype,
            )
        };
    }
    NormGradients {
        x: dx,
        z: gated.then_some(dz),
        gamma_partials: partials,
    }
}

/// `x · σ(x)` elementwise, in `x`'s dtype.
pub fn silu_forward<R: CubeRuntime>(x: CubeTensor<R>) -> CubeTensor<R> {
    let x = into_contiguous(x);
    let n = x.meta.shape().num_elements();
    let y = empty_like_shape(&x, x.meta.shape().clone(), x.dtype);
    if n == 0 {
        return y;
    }
    let client = x.client.clone();
    let dtype = x.dtype.into();
    let address = address_type_of(&[&x]);
    unsafe {
        silu_forward_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n.div_ceil(THREADS)),
            CubeDim::new_1d(THREADS as u32),
            address,
            x.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            n,
            dtype,
        )
    };
    y
}

/// `dx = dy · σ(x) · (1 + x · (1 − σ(x)))`, in `x`'s dtype.
pub fn silu_backward<R: CubeRuntime>(x: CubeTensor<R>, dy: CubeTensor<R>) -> CubeTensor<R> {
    let x = into_contiguous(x);
    let dy = into_contiguous(dy);
    let n = x.meta.shape().num_elements();
    let dx = empty_like_shape(&x, x.meta.shape().clone(), x.dtype);
    if n == 0 {
        return dx;
    }
    let client = x.client.clone();
    let dtype = x.dtype.into();
    let address = address_type_of(&[&x]);
    unsafe {
        silu_backward_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n.div_ceil(THREADS)),
            CubeDim::new_1d(THREADS as u32),
            address,
            x.into_tensor_arg(),
            dy.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            n,
            dtype,
        )
    };
    dx
}
