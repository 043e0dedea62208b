//! Launch helpers shared by the kernel families.

use burn::tensor::{DType, Shape};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;
use cubecl::server::CubeCountSelection;

/// A cube count of at least `n_cubes` cubes within the device's per-axis limits (wgpu allows
/// 65,535 a dimension). Kernels index cubes with the linear `CUBE_POS` and return early past
/// `n_cubes`.
pub fn cube_count_for<R: CubeRuntime>(client: &ComputeClient<R>, n_cubes: usize) -> CubeCount {
    let n = u32::try_from(n_cubes).expect("more than 2^32 cubes in one launch");
    CubeCountSelection::new(client, n).cube_count()
}

/// The narrowest address type that reaches every element of `tensors` (32-bit while it can,
/// 64-bit past 2³² elements).
pub fn address_type_of<R: CubeRuntime>(tensors: &[&CubeTensor<R>]) -> AddressType {
    tensors
        .iter()
        .map(|t| t.required_address_type())
        .max()
        .unwrap_or_default()
}

/// An uninitialised contiguous tensor on `like`'s device.
pub(crate) fn empty_like_shape<R: CubeRuntime>(
    like: &CubeTensor<R>,
    shape: Shape,
    dtype: DType,
) -> CubeTensor<R> {
    burn_cubecl::ops::numeric::empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        shape,
        dtype,
    )
}

/// A zero-filled contiguous tensor on `like`'s device. Burn's `zeros_client` may hand out a
/// row-pitched layout on CUDA (rows padded for alignment), which kernels indexing linearly
/// would misread: a short last dimension (the scan's per-chunk `dA`/`dD` partials, `n_chunks`
/// long) is made contiguous.
pub(crate) fn zeros_like_shape<R: CubeRuntime>(
    like: &CubeTensor<R>,
    shape: Shape,
    dtype: DType,
) -> CubeTensor<R> {
    into_contiguous(burn_cubecl::ops::numeric::zeros_client(
        like.client.clone(),
        like.device.clone(),
        shape,
        dtype,
    ))
}

/// `state` ready to be updated in place by a kernel: itself when nobody else holds it and it is
/// contiguous, else a contiguous copy (so an update never changes a tensor the caller still
/// references).
pub(crate) fn into_owned_contiguous<R: CubeRuntime>(state: CubeTensor<R>) -> CubeTensor<R> {
    if state.can_mut() && state.is_contiguous() {
        state
    } else {
        into_contiguous(state.copy())
    }
}
