//! Run-time backend selection, shared by every binary.
//!
//! Burn backends are types, so a binary picks one at start and runs its whole job generically:
//! it implements [`BackendTask`] and calls [`dispatch`]. `auto` takes CUDA if a device opens,
//! else wgpu on a hardware adapter, else the CPU backend (a software Vulkan such as lavapipe is
//! used only when asked for: ndarray is faster on the same cores); the choice and the
//! device name are reported through [`BackendInfo`].

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;

use anyhow::{bail, Result};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ops::{fused_ops_summary, RambaBackend};

/// CUDA through CubeCL (kernels compiled at run time with NVRTC).
pub type CudaBackend = burn::backend::Cuda<f32, i32>;
/// wgpu through CubeCL (Vulkan, Metal, DX12; lavapipe on a CPU-only Linux machine).
pub type WgpuBackend = burn::backend::Wgpu<f32, i32, u32>;
/// Burn's ndarray CPU backend.
pub type CpuBackend = burn::backend::NdArray<f32>;

/// What the user asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// CUDA, else wgpu, else CPU.
    #[default]
    Auto,
    /// CUDA device 0.
    Cuda,
    /// The default wgpu adapter.
    Wgpu,
    /// The ndarray CPU backend.
    Cpu,
}

impl FromStr for BackendKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => Self::Auto,
            "cuda" => Self::Cuda,
            "wgpu" => Self::Wgpu,
            "cpu" | "ndarray" => Self::Cpu,
            other => bail!("unknown backend `{other}`: expected auto, cuda, wgpu or cpu"),
        })
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Cuda => "cuda",
            Self::Wgpu => "wgpu",
            Self::Cpu => "cpu",
        })
    }
}

/// The backend that was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    /// `cuda`, `wgpu` or `cpu` (never `auto`).
    pub kind: BackendKind,
    /// A human-readable device description.
    pub device_name: String,
    /// Which ops run fused kernels and which the reference
    /// ([`fused_ops_summary`](crate::ops::fused_ops_summary)); set by [`dispatch`].
    pub ops: String,
}

impl fmt::Display for BackendInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend {} ({})", self.kind, self.device_name)?;
        if !self.ops.is_empty() {
            write!(f, "; ops {}", self.ops)?;
        }
        Ok(())
    }
}

/// A job that runs on whichever backend was chosen. `B` is the inference backend; training
/// wraps it in `burn::backend::Autodiff<B>` itself.
pub trait BackendTask {
    /// What the job returns.
    type Output;
    /// Runs the job on backend `B`.
    fn run<B: RambaBackend>(self, device: B::Device, info: &BackendInfo) -> Self::Output;
}

/// Opens the requested backend (resolving `auto`) and runs `task` on it.
pub fn dispatch<T: BackendTask>(kind: BackendKind, task: T) -> Result<T::Output> {
    configure_runtime();
    // A misspelt kernel name is refused here, not in the first linear layer of a run.
    crate::ops::linear::linear_kernels_from_env().map_err(anyhow::Error::msg)?;
    let mut info = open(kind)?;
    // Printed with the backend, so a missing override can never train silently on the
    // reference.
    info.ops = match info.kind {
        BackendKind::Cuda => fused_ops_summary::<CudaBackend>(),
        BackendKind::Wgpu => fused_ops_summary::<WgpuBackend>(),
        _ => fused_ops_summary::<CpuBackend>(),
    };
    Ok(match info.kind {
        BackendKind::Cuda => task.run::<CudaBackend>(Default::default(), &info),
        BackendKind::Wgpu => task.run::<WgpuBackend>(Default::default(), &info),
        _ => task.run::<CpuBackend>(Default::default(), &info),
    })
}

/// CubeCL's run-time settings, fixed before any device opens: what CubeCL itself would read
/// (`cubecl.toml`, or the `[cubecl]` table of `burn.toml`, in the working folder or above, and
/// its `CUBECL_*` environment variables), plus a persistent kernel cache unless those name one.
/// CubeCL keeps no compiled kernel across runs by default, so every run of a config compiled
/// its CUDA kernels again (15–60 s before the first step of the ~100M configs); with the cache,
/// a second run loads their PTX from disk (the `target` folder of the project it runs in, else
/// the user's cache folder) and the driver's own cache holds the machine code.
pub fn configure_runtime() {
    use cubecl::config::cache::CacheConfig;
    use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if CubeClRuntimeConfig::storage().lock().is_some() {
            return; // already read or set: too late to change
        }
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        if config.compilation.cache.is_none() {
            config.compilation.cache = Some(CacheConfig::Target);
        }
        CubeClRuntimeConfig::set(config);
    });
}

/// Resolves and opens a backend, without running anything on it.
pub fn open(kind: BackendKind) -> Result<BackendInfo> {
    configure_runtime();
    match kind {
        BackendKind::Cuda => probe_cuda().map_err(|e| anyhow::anyhow!("--backend cuda: no CUDA device could be opened ({e})")),
        BackendKind::Wgpu => probe_wgpu().map_err(|e| anyhow::anyhow!("--backend wgpu: no wgpu adapter could be opened ({e}); on Linux without a GPU install Mesa's lavapipe: apt-get install mesa-vulkan-drivers")),
        BackendKind::Cpu => Ok(cpu_info()),
        BackendKind::Auto => Ok(probe_cuda().or_else(|_| probe_wgpu().and_then(hardware_only)).unwrap_or_else(|_| cpu_info())),
    }
}

/// `auto` skips software adapters (Mesa's llvmpipe/lavapipe): on a machine without a GPU the
/// ndarray backend trains several times faster than a software Vulkan driver. `--backend wgpu`
/// still selects them.
fn hardware_only(info: BackendInfo) -> Result<BackendInfo> {
    if info.device_name.contains("(software)") {
        bail!("{} is a software renderer", info.device_name);
    }
    Ok(info)
}

fn cpu_info() -> BackendInfo {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    BackendInfo {
        kind: BackendKind::Cpu,
        device_name: format!("ndarray, {threads} CPU threads"),
        ops: String::new(),
    }
}

fn probe_cuda() -> Result<BackendInfo> {
    quietly(|| {
        let device = burn::backend::cuda::CudaDevice::new(0);
        let probe = Tensor::<CudaBackend, 1>::ones([4], &device)
            .sum()
            .into_scalar();
        assert!(probe == 4.0, "CUDA probe computed {probe}");
        BackendInfo {
            kind: BackendKind::Cuda,
            device_name: "CUDA device 0".into(),
            ops: String::new(),
        }
    })
}

fn probe_wgpu() -> Result<BackendInfo> {
    use burn::backend::wgpu::{graphics::AutoGraphicsApi, init_setup, WgpuDevice};
    quietly(|| {
        let setup = init_setup::<AutoGraphicsApi>(&WgpuDevice::DefaultDevice, Default::default());
        let adapter = setup.adapter.get_info();
        // lavapipe reports itself as a CPU device; its name ("llvmpipe") is the fallback check.
        let kind = format!("{:?}", adapter.device_type);
        let software = kind == "Cpu" || adapter.name.contains("llvmpipe");
        let tag = if software { " (software)" } else { "" };
        BackendInfo {
            kind: BackendKind::Wgpu,
            device_name: format!("{} via {:?}, {kind}{tag}", adapter.name, adapter.backend),
            ops: String::new(),
        }
    })
}

/// Runs a probe that signals failure by panicking (as the GPU runtimes do), without printing
/// the panic, and turns the panic into an error.
fn quietly<T>(probe: impl FnOnce() -> T) -> Result<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = catch_unwind(AssertUnwindSafe(probe));
    std::panic::set_hook(hook);
    result.map_err(|e| {
        let msg = panic_message(&*e).unwrap_or_else(|| "unknown error".into());
        anyhow::anyhow!("{}", msg.lines().next().unwrap_or_default())
    })
}

/// The message a panic carried (`panic!` with a literal or with a formatted string), if any.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}

/// Whether a device runtime's error or panic message says an allocation failed (CubeCL's
/// `BufferTooBig`, CUDA's `CUDA_ERROR_OUT_OF_MEMORY`, ...).
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "buffertoobig",
        "out of memory",
        "out_of_memory",
        "outofmemory",
        "out-of-memory",
    ]
    .iter()
    .any(|pat| m.contains(pat))
}
