//! Sums over the leading axis: `[rows, cols] → [cols]` in f32, whatever the input's float dtype.
//!
//! Every parameter gradient that is a sum over tokens ends here: the norms' `dγ` partials, the
//! `dt` bias, the conv weight and bias partials, the split-K weight gradients. Burn's `sum_dim`
//! without the `autotune` feature reduces with cubek's unit routine (one thread per output,
//! walking the reduced axis alone), which turns a sum of 32,768 rows into 24 outputs into 24
//! threads doing all the work; a tall sum here spreads the rows over many cubes instead.
//!
//! Shapes: `input [rows, cols]` contiguous; `output [cols]` f32 (or `[splits, cols]` f32
//! partials between passes).
//!
//! Grid: a cube of [`THREADS`] threads covers `width` adjacent columns (a power of two up to
//! [`THREADS`]) with `THREADS / width` lanes of rows, so a warp's loads are one contiguous run
//! of a row; cubes tile the columns and `splits` slices of the rows. Each thread sums its
//! lane's rows of its slice, the lanes meet in shared memory, and a slice's sums go to
//! `partials[split]`. While `splits > 1` the partials are summed by the same kernel again.

use burn::tensor::{DType, Shape};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use crate::launch::{address_type_of, cube_count_for, empty_like_shape};

/// Threads per cube.
const THREADS: usize = 256;
/// Cubes a pass aims for (a few waves of the largest devices).
const TARGET_CUBES: usize = 1024;
/// Rows a thread sums at least before a pass splits the rows further.
const MIN_ROWS_PER_THREAD: usize = 32;

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn sum_rows_kernel<F: Float>(
    input: &Tensor<F>,
    partials: &mut Tensor<f32>,
    rows: usize,
    cols: usize,
    col_blocks: usize,
    rows_per_split: usize,
    n_cubes: usize,
    lanes: usize,
    #[comptime] width: usize,
    #[define(F)] _dtype: StorageType,
) {
    let cube = CUBE_POS;
    if cube >= n_cubes {
        terminate!();
    }
    let t = UNIT_POS as usize;
    let col = (cube % col_blocks) * width + t % width;
    let lane = t / width;
    let split = cube / col_blocks;
    let start = split * rows_per_split;
    let end = min(start + rows_per_split, rows);
    let mut acc = 0.0f32;
    if col < cols {
        let mut r = start + lane;
        while r < end {
            acc += f32::cast_from(input[r * cols + col]);
            r += lanes;
        }
    }
    let mut smem = SharedMemory::<f32>::new(THREADS);
    smem[t] = acc;
    sync_cube();
    // Halve the lanes until one is left; `lanes` is a power of two.
    let mut active = lanes;
    while active > 1 {
        let half = active / 2;
        if lane < half {
            smem[t] += smem[t + half * width];
        }
        sync_cube();
        active = half;
    }
    if lane == 0 && col < cols {
        partials[split * cols + col] = smem[t];
    }
}

/// Columns a cube covers: the smallest power of two ≥ `cols` (at least a warp), at most
/// [`THREADS`].
fn width_for(cols: usize) -> usize {
    cols.next_power_of_two().clamp(32, THREADS)
}

/// `Σ_rows input[row, col]` for `input [rows, cols]` (any float dtype), as f32 `[cols]`.
pub fn sum_rows<R: CubeRuntime>(input: CubeTensor<R>) -> CubeTensor<R> {
    let shape = input.meta.shape();
    assert_eq!(shape.num_dims(), 2, "sum_rows takes [rows, cols]");
    let (rows, cols) = (shape[0], shape[1]);
    let mut current = into_contiguous(input);
    let mut rows_now = rows;
    loop {
        let width = width_for(cols);
        let lanes = THREADS / width;
        let col_blocks = cols.div_ceil(width).max(1);
        let most_splits = (rows_now / (lanes * MIN_ROWS_PER_THREAD)).max(1);
        let splits = (TARGET_CUBES / col_blocks).clamp(1, most_splits);
        let rows_per_split = rows_now.div_ceil(splits);
        let splits = rows_now.div_ceil(rows_per_split.max(1)).max(1);
        let out_shape = if splits == 1 {
            Shape::new([cols])
        } else {
            Shape::new([splits, cols])
        };
        let out = empty_like_shape(&current, out_shape, DType::F32);
        if cols == 0 {
            return out;
        }
        if rows_now == 0 {
            return burn_cubecl::ops::numeric::zeros_client(
                out.client.clone(),
                out.device.clone(),
                Shape::new([cols]),
                DType::F32,
            );
        }
        let client = current.client.clone();
        let n_cubes = col_blocks * splits;
        let address = address_type_of(&[&current, &out]);
        let dtype = current.dtype.into();
        unsafe {
            sum_rows_kernel::launch_unchecked::<R>(
                &client,
                cube_count_for(&client, n_cubes),
                CubeDim::new_1d(THREADS as u32),
                address,
                current.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                rows_now,
                cols,
                col_blocks,
                rows_per_split,
                n_cubes,
                lanes,
                width,
                dtype,
            )
        };
        if splits == 1 {
            return out;
        }
        current = out;
        rows_now = splits;
    }
}
