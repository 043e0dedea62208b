//! Mixed precision (`train.precision`): the parameters and the optimizer state stay f32 (master
//! weights, and what checkpoints hold); the model computes in a narrower float type.
//!
//! A model set to a compute dtype ([`LanguageModel::with_compute_dtype`]) casts its embedding
//! output to it, and every layer then works in the dtype of the activations it is given (the
//! residual stream included, as Megatron-LM does by default): projections cast their f32
//! weights at use ([`Autocast`](crate::nn::Autocast)), the kernels take half-precision
//! operands, and what needs range or accumulation stays f32: RMSNorm statistics, `Δ`, the
//! selection weights, the scan's inner state, and the softmax over the vocabulary and the loss
//! (the logits stay in the compute dtype; [`crate::ops::cross_entropy`] reads them in f32 a
//! block of rows at a time). Under `Autodiff` every cast is differentiable, so gradients reach
//! the parameters in f32.
//!
//! [`LanguageModel::with_compute_dtype`]: crate::model::LanguageModel::with_compute_dtype

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use burn::tensor::DType;
use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;

/// What the model computes in (`train.precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 on CUDA, f32 on wgpu and the CPU.
    #[default]
    Auto,
    /// Everything in f32.
    F32,
    /// bf16 compute, f32 master weights (CUDA).
    Bf16,
    /// f16 compute, f32 master weights (CUDA; wgpu where the device has f16 arithmetic).
    F16,
}

impl Precision {
    /// The compute dtype on a backend of `kind` (never `auto`), or an error naming what the
    /// backend lacks; `supports` says whether the device has a dtype's arithmetic
    /// (`Backend::supports_dtype`).
    pub fn compute_dtype(
        self,
        kind: BackendKind,
        supports: impl Fn(DType) -> bool,
    ) -> Result<DType> {
        let wanted = match (self, kind) {
            (Precision::F32, _) => return Ok(DType::F32),
            (Precision::Auto, BackendKind::Cuda) => DType::BF16,
            (Precision::Auto, _) => return Ok(DType::F32),
            (Precision::Bf16, _) => DType::BF16,
            (Precision::F16, _) => DType::F16,
        };
        let lacks = match kind {
            BackendKind::Cpu => "the ndarray backend computes in f32".to_string(),
            _ if !supports(wanted) => format!("this device has no {self} arithmetic"),
            _ => return Ok(wanted),
        };
        bail!(
            "train.precision = \"{self}\" is not available on the {kind} backend ({lacks}); use \
             \"f32\" or \"auto\" there"
        )
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl FromStr for Precision {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => Precision::Auto,
            "f32" => Precision::F32,
            "bf16" => Precision::Bf16,
            "f16" => Precision::F16,
            other => bail!("unknown precision `{other}`: expected auto, f32, bf16 or f16"),
        })
    }
}

/// The short name of a float dtype, for logs (`bf16`, `f32`, ...).
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F64 => "f64",
        DType::F32 | DType::Flex32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "a non-float dtype",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_bf16_on_cuda_only() {
        let p = Precision::Auto;
        let all = |_| true;
        assert_eq!(
            p.compute_dtype(BackendKind::Cuda, all).unwrap(),
            DType::BF16
        );
        assert_eq!(p.compute_dtype(BackendKind::Wgpu, all).unwrap(), DType::F32);
        assert_eq!(p.compute_dtype(BackendKind::Cpu, all).unwrap(), DType::F32);
    }

    #[test]
    fn half_precision_where_the_backend_lacks_it_names_the_key() {
        let err = Precision::Bf16
            .compute_dtype(BackendKind::Cpu, |_| true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.precision = \"bf16\"") && err.contains("cpu"),
            "{err}"
        );
        let only_f16 = |d| d == DType::F16;
        let err = Precision::Bf16
            .compute_dtype(BackendKind::Wgpu, only_f16)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no bf16 arithmetic"), "{err}");
        assert_eq!(
            Precision::F16
                .compute_dtype(BackendKind::Wgpu, only_f16)
                .unwrap(),
            DType::F16
        );
    }

    #[test]
    fn parses_and_prints() {
        for p in [
            Precision::Auto,
            Precision::F32,
            Precision::Bf16,
            Precision::F16,
        ] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert!("fp8".parse::<Precision>().is_err());
    }
}
