//! The timing harness shared by the kernel benchmarks, the anchors' method
//! (`shared/anchors-bench`): two warm-ups and an estimate, then
//! `n = clamp(budget / estimate, 5, 100)` calls, each preceded by a 256 MiB write that flushes
//! L2 and a device sync, timed host-side between syncs; the median. Memory is the allocator's
//! reserved bytes after a call minus before it, with freed pages released first (the pool keeps
//! what the call reserved, so this is the call's peak).

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use ramba_core::ops::linear::LinearPass;
use ramba_core::ops::RambaBackend;
use serde::Serialize;

/// Ceilings measured on the device: a square matmul in the bench dtype and a copy.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ceilings {
    /// Dense matmul in the bench dtype, TFLOP/s.
    pub matmul_tflops: f64,
    /// Read + write of an f32 buffer, TB/s.
    pub copy_tbs: f64,
}

/// Median milliseconds of `f`, the anchors' way.
pub fn time_ms<B: Backend>(device: &B::Device, budget_ms: f64, f: impl FnMut()) -> f64 {
    time_ms_flushed::<B>(device, budget_ms, true, f)
}

/// [`time_ms`], with the L2 flush before each call optional (a software Vulkan such as lavapipe
/// cannot allocate its 256 MiB buffer).
pub fn time_ms_flushed<B: Backend>(
    device: &B::Device,
    budget_ms: f64,
    flush_l2: bool,
    mut f: impl FnMut(),
) -> f64 {
    let flush = |device: &B::Device| {
        if flush_l2 {
            let x = Tensor::<B, 1>::full([64 << 20], 1.0, device);
            drop(x);
        }
        B::sync(device).expect("device sync");
    };
    let once = |f: &mut dyn FnMut()| {
        flush(device);
        let t0 = Instant::now();
        f();
        B::sync(device).expect("device sync");
        t0.elapsed().as_secs_f64() * 1e3
    };
    once(&mut f);
    once(&mut f);
    let estimate = once(&mut f).max(1e-3);
    let n = ((budget_ms / estimate) as usize).clamp(5, 100);
    let mut times: Vec<f64> = (0..n).map(|_| once(&mut f)).collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[n / 2]
}

pub fn reserved_mib<B: RambaBackend>(device: &B::Device) -> f64 {
    B::memory_usage(device)
        .map(|m| m.reserved as f64 / (1 << 20) as f64)
        .unwrap_or(f64::NAN)
}

/// Pool growth (MiB) while `f` runs, after releasing free pages.
pub fn peak_mib<B: RambaBackend, T>(device: &B::Device, f: impl FnOnce() -> T) -> (f64, T) {
    B::sync(device).expect("device sync");
    B::memory_cleanup(device);
    let before = reserved_mib::<B>(device);
    let out = f();
    B::sync(device).expect("device sync");
    (reserved_mib::<B>(device) - before, out)
}

/// Ceilings in `dtype`: an 8192³ matmul and a 2 GiB copy.
pub fn ceilings<B: RambaBackend>(device: &B::Device, dtype: DType, budget_ms: f64) -> Ceilings {
    let matmul_tflops = matmul_tflops::<B>(device, dtype, 8192, true, budget_ms);
    // 512 MiB: wgpu caps one buffer below 2 GiB.
    let len: usize = 128 << 20;
    let x = Tensor::<B, 1>::random([len], Distribution::Normal(0.0, 1.0), device);
    let copy = time_ms::<B>(device, budget_ms, || {
        let _ = x.clone().mul_scalar(1.0);
    });
    Ceilings {
        matmul_tflops,
        copy_tbs: 2.0 * (len * 4) as f64 / (copy * 1e-3) / 1e12,
    }
}

/// TFLOP/s of an `n³` matmul in `dtype` with the linear layers' kernel ([`time_ms_flushed`]).
pub fn matmul_tflops<B: RambaBackend>(
    device: &B::Device,
    dtype: DType,
    n: usize,
    flush_l2: bool,
    budget_ms: f64,
) -> f64 {
    let a = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device).cast(dtype);
    let b = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device).cast(dtype);
    // Through the linear layers' own kernel (`RambaBackend::matmul_into`), the ceiling their
    // products can reach.
    let (a, b) = (a.into_primitive().tensor(), b.into_primitive().tensor());
    let mm = time_ms_flushed::<B>(device, budget_ms, flush_l2, || {
        let _ = B::matmul_into(a.clone(), b.clone(), dtype, LinearPass::Forward);
    });
    2.0 * (n as f64).powi(3) / (mm * 1e-3) / 1e12
}

/// `4K`, `1M` or the plain number.
pub fn format_len(n: usize) -> String {
    if n.is_multiple_of(1 << 20) {
        format!("{}M", n >> 20)
    } else if n.is_multiple_of(1024) {
        format!("{}K", n >> 10)
    } else {
        n.to_string()
    }
}
