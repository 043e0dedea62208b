//! CubeCL kernels for the ops in `ramba_core::ops::RambaBackend`, generic over
//! `cubecl::Runtime` (CUDA and wgpu).
//!
//! Nothing is implemented here yet: every op currently runs its reference implementation
//! (`ramba-core/src/ops/reference/`). The kernel issues add, one file per kernel family with its
//! launcher beside it: `hsa/{forward,backward_dq,backward_dkdv,index}.rs`, `scan/`, `conv/`.
