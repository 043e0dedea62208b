//! HSA backward, pass 2: `dK` and `dV` per chunk, walking the chunk's entries of the
//! [inverted index](super::index). No atomics: one cube owns a chunk's `S × D` gradient tiles,
//! so the sums run in the index's (token-major) order and are deterministic.
//!
//! For every entry `(t, k)` that selected chunk `c` (weight `w`, heads `j` of the group):
//! ```text
//! p  = exp(q_{t,j} · K_cᵀ · scale − lse)      dp = dO_{t,j} · V_cᵀ
//! ds = w · p ∘ (dp − D_{t,k,j})               (D from pass 1)
//! dV_c += (w·p)ᵀ · dO_t                       dK_c += dsᵀ · q_t · scale
//! ```
//! Shapes: `q`, `d_out [B, L, h_q, D]`; `k`, `v`, `dk`, `dv [B, L, h_kv, D]`;
//! `weights [B, L, h_kv, K]`; `lse`, `delta [B, L, h_q, K]` f32; index as in [`super::index`].
//! Grid: one cube per chunk key `(b, g, c)`; rows of the incomplete last chunk get zeros.

use cubecl::prelude::*;

use super::index::InvertedIndex;
use super::HsaShape;
use crate::launch::{address_type_of, cube_count_for};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};

/// Threads per cube of pass 2.
pub const CHUNK_THREADS: u32 = 256;

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn hsa_backward_dkdv_kernel<F: Float, W: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    weights: &Tensor<W>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    d_out: &Tensor<F>,
    entries: &Array<u32>,
    offsets: &Array<u32>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    seq: usize,
    n_chunks: usize,
    n_keys: usize,
    scale: f32,
    #[comptime] group: usize,
    #[comptime] head_dim: usize,
    #[comptime] chunk: usize,
    #[comptime] top_k: usize,
    #[comptime] h_kv: usize,
    #[define(F, W)] _dtypes: [StorageType; 2],
) {
    let key = CUBE_POS;
    let threads = comptime!(CHUNK_THREADS as usize);
    let tid = UNIT_POS as usize;
    if key >= n_keys {
        // The cubes past the chunk keys, one per (b, g), zero the rows of the incomplete last
        // chunk: no token selects them.
        let bg = key - n_keys;
        if bg < n_keys / n_chunks {
            let g = bg % h_kv;
            let b = bg / h_kv;
            let tail = seq - n_chunks * chunk;
            let mut i = tid;
            while i < tail * head_dim {
                let r = n_chunks * chunk + i / head_dim;
                let at = ((b * seq + r) * h_kv + g) * head_dim + i % head_dim;
                dk[at] = F::cast_from(0.0f32);
                dv[at] = F::cast_from(0.0f32);
                i += threads;
            }
        }
        terminate!();
    }
    let c = key % n_chunks;
    let bg = key / n_chunks;
    let g = bg % h_kv;
    let b = bg / h_kv;
    let h_q = comptime!(group * h_kv);
    let row_stride = h_kv * head_dim;
    let row0 = ((b * seq + c * chunk) * h_kv + g) * head_dim;

    let mut qs = SharedMemory::<f32>::new(comptime!(group * head_dim));
    let mut dos = SharedMemory::<f32>::new(comptime!(group * head_dim));
    let mut pw = SharedMemory::<f32>::new(comptime!(group * chunk));
    let mut ds = SharedMemory::<f32>::new(comptime!(group * chunk));

    let n_own = comptime!(chunk * head_dim);
    let per_thread = comptime!(n_own.div_ceil(CHUNK_THREADS as usize));
    let mut acc_k = Array::<f32>::new(per_thread);
    let mut acc_v = Array::<f32>::new(per_thread);
    #[unroll]
    for m in 0..per_thread {
        acc_k[m] = 0.0;
        acc_v[m] = 0.0;
    }

    let start = offsets[key] as usize;
    let end = offsets[key + 1] as usize;
    for n in start..end {
        let e = entries[n] as usize;
        let item = e / top_k;
        let slot = e % top_k;
        let bt = item / h_kv;
        let q_base = (bt * h_q + g * group) * head_dim;
        let lse_base = (bt * h_q + g * group) * top_k + slot;
        let w = f32::cast_from(weights[e]);

        let mut i = tid;
        while i < comptime!(group * head_dim) {
            qs[i] = f32::cast_from(q[q_base + i]);
            dos[i] = f32::cast_from(d_out[q_base + i]);
            i += threads;
        }
        sync_cube();
        let mut i = tid;
        while i < comptime!(group * chunk) {
            let j = i / chunk;
            let r = i % chunk;
            let mut s = 0.0f32;
            let mut dp = 0.0f32;
            for e2 in 0..head_dim {
                let at = row0 + r * row_stride + e2;
                s += qs[j * head_dim + e2] * f32::cast_from(k[at]);
                dp += dos[j * head_dim + e2] * f32::cast_from(v[at]);
            }
            let p = f32::exp(s * scale - lse[lse_base + j * top_k]);
            pw[i] = w * p;
            ds[i] = w * p * (dp - delta[lse_base + j * top_k]) * scale;
            i += threads;
        }
        sync_cube();
        #[unroll]
        for m in 0..per_thread {
            let o = tid + m * threads;
            if o < n_own {
                let r = o / head_dim;
                let e2 = o % head_dim;
                let mut sv = 0.0f32;
                let mut sk = 0.0f32;
                for j in 0..group {
                    sv += pw[j * chunk + r] * dos[j * head_dim + e2];
                    sk += ds[j * chunk + r] * qs[j * head_dim + e2];
                }
                acc_v[m] += sv;
                acc_k[m] += sk;
            }
        }
        sync_cube();
    }

    #[unroll]
    for m in 0..per_thread {
        let o = tid + m * threads;
        if o < n_own {
            let r = o / head_dim;
            let e2 = o % head_dim;
            let at = row0 + r * row_stride + e2;
            dk[at] = F::cast_from(acc_k[m]);
            dv[at] = F::cast_from(acc_v[m]);
        }
    }
}

/// Pass 2 outputs: `(dk, dv)`, shaped like `k`.
#[allow(clippy::too_many_arguments)]
pub fn hsa_backward_dkdv<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    weights: CubeTensor<R>,
    lse: CubeTensor<R>,
    delta: CubeTensor<R>,
    d_out: CubeTensor<R>,
    index: InvertedIndex<R>,
    shape: HsaShape,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let client = q.client.clone();
    let dk = super::empty_like_shape(&k, shape.kv_shape(), k.dtype);
    let dv = super::empty_like_shape(&k, shape.kv_shape(), k.dtype);
    let n_keys = shape.batch * shape.h_kv * shape.n_chunks();
    if n_keys == 0 {
        // No complete chunk: nothing was read, every gradient row is zero.
        return (
            super::zeros_like_shape(&k, shape.kv_shape(), k.dtype),
            super::zeros_like_shape(&k, shape.kv_shape(), k.dtype),
        );
    }
    let dtypes = [q.dtype.into(), weights.dtype.into()];
    let address = address_type_of(&[&q, &k, &v, &d_out]);
    unsafe {
        hsa_backward_dkdv_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_keys + shape.batch * shape.h_kv),
            CubeDim::new_1d(CHUNK_THREADS),
            address,
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            weights.into_tensor_arg(),
            lse.into_tensor_arg(),
            delta.into_tensor_arg(),
            d_out.into_tensor_arg(),
            index.entries.into_array_arg(),
            index.offsets.into_array_arg(),
            dk.clone().into_tensor_arg(),
            dv.clone().into_tensor_arg(),
            shape.seq,
            shape.n_chunks(),
            n_keys,
            shape.scale(),
            shape.group(),
            shape.head_dim,
            shape.chunk,
            shape.top_k,
            shape.h_kv,
            dtypes,
        )
    };
    (dk, dv)
}
