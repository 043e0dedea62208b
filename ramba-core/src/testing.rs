//! Helpers shared by the tests of this workspace: seeded random tensors, relative errors, and a
//! macro that runs a generic test on every backend available without a GPU.

use burn::prelude::*;

use crate::config::{Arch, Landmark, ModelConfig};
use crate::ops::ChunkWeighting;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The CPU backend of the test matrix.
pub type TestCpu = burn::backend::NdArray<f32>;
/// The wgpu backend of the test matrix (lavapipe on a CPU-only machine).
pub type TestWgpu = burn::backend::Wgpu;
/// Double precision CPU backend for finite-difference checks.
pub type TestF64 = burn::backend::NdArray<f64>;

/// `‖x − y‖ / ‖y‖` over all elements (the tolerance measure of the test plan).
pub fn rel_err<B: Backend, const D: usize>(x: Tensor<B, D>, y: Tensor<B, D>) -> f64 {
    rel_err_vec(&to_vec(x), &to_vec(y))
}

/// `‖x − y‖ / ‖y‖` on host vectors; `0` when both are zero.
pub fn rel_err_vec(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "length mismatch");
    let num: f64 = x
        .iter()
        .zip(y)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    let den: f64 = y.iter().map(|b| b * b).sum::<f64>().sqrt();
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// A tensor's elements as `f64`.
pub fn to_vec<B: Backend, const D: usize>(x: Tensor<B, D>) -> Vec<f64> {
    x.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("float data")
}

/// Seeded normal-ish values (sum of uniforms), never all zeros.
pub fn random_vec(rng: &mut StdRng, n: usize, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u: f64 = (0..4).map(|_| rng.random::<f64>() - 0.5).sum();
            u * scale * 1.7
        })
        .collect()
}

/// A seeded random tensor of the given shape.
pub fn random<B: Backend, const D: usize>(
    rng: &mut StdRng,
    shape: [usize; D],
    scale: f64,
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    from_vec(random_vec(rng, n, scale), shape, device)
}

/// A tensor from host values.
pub fn from_vec<B: Backend, const D: usize>(
    v: Vec<f64>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v, shape).convert::<B::FloatElem>(), device)
}

/// A seeded RNG.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// The device of the wgpu tests, after checking once per process that an adapter opens. Without
/// one (no GPU and no lavapipe) cubecl's wgpu runtime dies in an `unwrap` with a long backtrace;
/// this fails the test with one line naming the fix instead.
pub fn wgpu_device() -> burn::backend::wgpu::WgpuDevice {
    static PROBE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    let probe = PROBE.get_or_init(|| {
        crate::backend::open(crate::backend::BackendKind::Wgpu)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    });
    if let Err(e) = probe {
        panic!(
            "the wgpu tests need a Vulkan adapter and none opened ({}); install Mesa's lavapipe \
             (apt-get install mesa-vulkan-drivers) or run scripts/test, which does",
            e.lines().next().unwrap_or_default()
        );
    }
    Default::default()
}

/// Instantiates generic test functions `fn name<B: RambaBackend>(device: &B::Device)` once per
/// backend: `mod cpu` (NdArray) and `mod wgpu` (lavapipe when no GPU).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod cpu {
            $(#[test] fn $name() { super::$name::<$crate::testing::TestCpu>(&Default::default()) })*
        }
        mod wgpu {
            $(#[test] fn $name() { super::$name::<$crate::testing::TestWgpu>(&$crate::testing::wgpu_device()) })*
        }
    };
}

/// A model small enough for lavapipe: 5 chunks of 8 tokens at L = 40, G = 4.
pub fn tiny_config(arch: Arch) -> ModelConfig {
    let mut c = ModelConfig {
        arch,
        vocab_size: 37,
        d_model: 32,
        n_lower: 1,
        n_groups: 1,
        hsa_per_group: 2,
        blocks_per_hsa: 1,
        ..Default::default()
    };
    c.mamba.head_dim = 16;
    c.mamba.d_state = 8;
    c.mamba.chunk_size = 16;
    c.hsa.chunk_size = 8;
    c.hsa.top_k = 2;
    c.hsa.n_heads = 4;
    c.hsa.n_kv_heads = 1;
    c.hsa.head_dim = 8;
    c.hsa.retrieval_dim = 16;
    c.hsa.encoder_heads = 2;
    c.hsa.encoder_kv_heads = 2;
    c.hsa.mlp_hidden = 48;
    c.attention.n_heads = 4;
    c.attention.n_kv_heads = 2;
    c.attention.window = 6;
    c.attention.mlp_hidden = 48;
    c.validate().expect("tiny config is valid");
    c
}

/// The variants exercised: every arch, plus the HSA options.
pub fn config_variants() -> Vec<(&'static str, ModelConfig)> {
    let mut mean = tiny_config(Arch::Ramba);
    mean.hsa.landmark = Landmark::Mean;
    mean.hsa.encoder_layers = 0;
    mean.hsa.weighting = ChunkWeighting::Softmax;
    mean.hsa.softmax_off_by_one = true;
    let mut mlp = tiny_config(Arch::SwaHsa);
    mlp.hsa.hsa_mlp = true;
    mlp.n_groups = 2;
    mlp.hsa_per_group = 1;
    // Chunk-unaware selection scores chunks by mean-pooled keys: mean landmarks.
    let mut nsa = tiny_config(Arch::Ramba);
    nsa.arch = Arch::MambaNsa;
    nsa.hsa.landmark = Landmark::Mean;
    nsa.hsa.encoder_layers = 0;
    nsa.validate().expect("mamba_nsa config is valid");
    vec![
        ("ramba", tiny_config(Arch::Ramba)),
        ("ramba_mean_softmax", mean),
        ("mamba2", tiny_config(Arch::Mamba2)),
        ("transformer", tiny_config(Arch::Transformer)),
        ("swa_hsa", tiny_config(Arch::SwaHsa)),
        ("swa_hsa_mlp_2groups", mlp),
        ("mamba_nsa", nsa),
    ]
}
