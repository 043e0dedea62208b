//! Linear layers as single graph nodes on the backends that choose their own matmul kernel
//! ([`RambaBackend::fused_linear`]: the CubeCL ones; the CPU trains through [`reference`]).
//!
//! Differentiated op by op, a mixed-precision `x · cast(W)` over `[batch, seq, d]` costs a cast
//! node, a batched matmul whose weight gradient is `batch` products summed by a strided
//! reduction, and a second cast of that gradient back to f32. The node of [`autodiff`] casts
//! the weight inside, multiplies the rows as one `[rows, d_in]` matrix with the kernel named by
//! [`linear_kernels`], and writes the weight gradient straight into f32 (tensor-core operands,
//! f32 accumulation), splitting the rows into a few slices when the gradient alone has too few
//! output tiles to fill the device (a split-K product, slices summed in f32).

pub mod autodiff;
pub mod parts;
pub mod reference;

use std::sync::RwLock;

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
pub use cubecl_kernels::matmul::{MatmulFamily, MatmulKernel};

use super::{from_float, into_float, RambaBackend};

/// `x [.., d_in] · weight [d_in, d_out] + bias [d_out]`, in `x`'s dtype with f32 accumulation;
/// the parameters (f32 master weights) are cast at use. `weight` may be a transposed view (the
/// tied LM head passes `embeddingᵀ`).
pub fn linear<B: RambaBackend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    if !B::fused_linear() {
        return reference::linear(x, weight, bias);
    }
    let dtype = x.dtype();
    let mut shape = x.dims();
    let d_in = shape[D - 1];
    let d_out = weight.dims()[1];
    let rows = x.shape().num_elements() / d_in;
    let y = from_float::<B, 2>(B::linear_rows(
        into_float(x.reshape([rows, d_in])),
        into_float(weight),
    ));
    shape[D - 1] = d_out;
    let y = y.reshape(shape);
    match bias {
        Some(b) => y + b.cast(dtype).unsqueeze(),
        None => y,
    }
}

/// [`linear`] (no bias) for an output consumed in consecutive column parts of `widths` (which sum
/// to at most `weight`'s `d_out`): `x · weight[:, part]` for each part, so no activation is ever
/// sliced. Under `Autodiff` where the backend fuses the linear layers it is one node whose
/// backward runs one input-gradient and one weight-gradient product for all the parts (see
/// [`parts`]).
pub fn linear_parts<B: RambaBackend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    widths: &[usize],
) -> Vec<Tensor<B, D>> {
    let [d_in, d_out] = weight.dims();
    assert!(
        widths.iter().sum::<usize>() <= d_out,
        "linear_parts: widths {widths:?} exceed the weight's {d_out} columns"
    );
    if !B::fused_linear() {
        return parts::column_ranges(widths)
            .into_iter()
            .map(|cols| reference::linear(x.clone(), weight.clone().slice([0..d_in, cols]), None))
            .collect();
    }
    let shape = x.dims();
    let rows = x.shape().num_elements() / d_in;
    B::linear_row_parts(
        into_float(x.reshape([rows, d_in])),
        into_float(weight),
        widths,
    )
    .into_iter()
    .zip(widths)
    .map(|(part, &w)| {
        let mut out = shape;
        out[D - 1] = w;
        from_float::<B, 2>(part).reshape(out)
    })
    .collect()
}

/// `t` in `dtype` (a product's operand, or a gradient back in its parameter's dtype); itself when
/// it already is.
pub(crate) fn cast_to<B: Backend>(t: FloatTensor<B>, dtype: burn::tensor::DType) -> FloatTensor<B> {
    use burn::tensor::TensorMetadata;
    if t.dtype() == dtype {
        t
    } else {
        B::float_cast(t, dtype.into())
    }
}

/// Which of a linear layer's three products a matmul is; each may run its own kernel (their
/// layouts differ: the input gradient reads the weight transposed, the weight gradient reads
/// the activations transposed and sums over the rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearPass {
    /// `y = x · W`.
    Forward,
    /// `dx = dy · Wᵀ`.
    InputGrad,
    /// `dW = xᵀ · dy`.
    WeightGrad,
}

/// The matmul kernel of each [`LinearPass`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearKernels {
    pub forward: MatmulKernel,
    pub input_grad: MatmulKernel,
    pub weight_grad: MatmulKernel,
}

impl LinearKernels {
    /// What half-precision operands run unless [`MATMUL_KERNEL_ENV`] or [`set_linear_kernels`]
    /// says otherwise (`docs/perf.md` has the measurements behind it).
    pub const DEFAULT: Self = Self {
        forward: MatmulKernel {
            family: MatmulFamily::DoubleCyclic,
            mma: true,
        },
        input_grad: MatmulKernel {
            family: MatmulFamily::DoubleCyclic,
            mma: true,
        },
        weight_grad: MatmulKernel {
            family: MatmulFamily::SpecializedCyclic,
            mma: true,
        },
    };

    /// What f32 operands run unless told otherwise: the unit kernel, which keeps f32's
    /// precision. The tensor-core kernels read f32 as TF32 (10-bit mantissas, ~3e-4 relative
    /// error per product); a researcher who asks for `precision = "f32"` asks for f32
    /// arithmetic, as PyTorch's default (`allow_tf32 = False` for matmuls) gives. Half
    /// precision is the fast path.
    pub const F32: Self = Self::every_pass(MatmulKernel {
        family: MatmulFamily::Unit,
        mma: false,
    });

    /// `kernel` for all three passes.
    pub const fn every_pass(kernel: MatmulKernel) -> Self {
        Self {
            forward: kernel,
            input_grad: kernel,
            weight_grad: kernel,
        }
    }

    /// The kernel of `pass`.
    pub fn of(&self, pass: LinearPass) -> MatmulKernel {
        match pass {
            LinearPass::Forward => self.forward,
            LinearPass::InputGrad => self.input_grad,
            LinearPass::WeightGrad => self.weight_grad,
        }
    }
}

impl std::str::FromStr for LinearKernels {
    type Err = String;

    /// One kernel name for every pass (`specialized_mma`), or `fwd=K,dgrad=K,wgrad=K` with
    /// any of the three left out (those keep [`LinearKernels::DEFAULT`]'s).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.contains('=') {
            return Ok(Self::every_pass(s.trim().parse()?));
        }
        let mut kernels = Self::DEFAULT;
        for part in s.split(',') {
            let (pass, name) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not PASS=KERNEL"))?;
            let kernel: MatmulKernel = name.trim().parse()?;
            match pass.trim() {
                "fwd" => kernels.forward = kernel,
                "dgrad" => kernels.input_grad = kernel,
                "wgrad" => kernels.weight_grad = kernel,
                other => return Err(format!("`{other}` is not a pass (fwd, dgrad, wgrad)")),
            }
        }
        Ok(kernels)
    }
}

/// The environment variable that names the linear layers' matmul kernels on CubeCL backends
/// ([`LinearKernels`]' syntax, e.g. `specialized_mma` or
/// `fwd=specialized_mma,wgrad=double_mma`), for measuring kernels against each other.
pub const MATMUL_KERNEL_ENV: &str = "RAMBA_MATMUL_KERNEL";

/// The kernels `RAMBA_MATMUL_KERNEL` names, `None` when it is unset; `Err` (naming the
/// variable, its value and the known kernels) when it names none. [`crate::backend::dispatch`]
/// checks it before any work starts.
pub fn linear_kernels_from_env() -> Result<Option<LinearKernels>, String> {
    kernels_from_setting(std::env::var(MATMUL_KERNEL_ENV).ok())
}

/// [`linear_kernels_from_env`] for a given value of the variable.
fn kernels_from_setting(value: Option<String>) -> Result<Option<LinearKernels>, String> {
    value
        .map(|value| {
            value
                .parse()
                .map_err(|err| format!("{MATMUL_KERNEL_ENV}={value}: {err}"))
        })
        .transpose()
}

/// The kernels named by [`set_linear_kernels`] or, at first use, by `RAMBA_MATMUL_KERNEL`;
/// `None` inside when neither named any.
static NAMED: RwLock<Option<Option<LinearKernels>>> = RwLock::new(None);

/// The kernel the linear layers' product `pass` runs on CubeCL backends for operands of
/// `dtype`: the one [`set_linear_kernels`] or `RAMBA_MATMUL_KERNEL` named (for every dtype),
/// else [`LinearKernels::F32`]'s for f32 operands and [`LinearKernels::DEFAULT`]'s for half
/// precision.
///
/// # Panics
/// When `RAMBA_MATMUL_KERNEL` names no kernels; the binaries refuse such a value at start-up
/// ([`linear_kernels_from_env`]), before any work.
pub fn linear_kernel(pass: LinearPass, dtype: burn::tensor::DType) -> MatmulKernel {
    let named = *NAMED.read().unwrap_or_else(|e| e.into_inner());
    let named = named.unwrap_or_else(|| {
        let from_env = linear_kernels_from_env().unwrap_or_else(|err| panic!("{err}"));
        *NAMED.write().unwrap_or_else(|e| e.into_inner()) = Some(from_env);
        from_env
    });
    let kernels = match named {
        Some(kernels) => kernels,
        None if dtype == burn::tensor::DType::F32 => LinearKernels::F32,
        None => LinearKernels::DEFAULT,
    };
    kernels.of(pass)
}

/// Names the linear layers' matmul kernels, for every dtype, for the rest of the process.
pub fn set_linear_kernels(kernels: LinearKernels) {
    *NAMED.write().unwrap_or_else(|e| e.into_inner()) = Some(Some(kernels));
}

/// How many slices of rows the weight gradient `x [rows, d_in]ᵀ · dy [rows, d_out]` is split
/// into: enough that the slices' output tiles (128 × 128) number about 1,024, each slice at
/// least 512 rows, and a divisor of `rows` so the slices are views.
pub fn weight_grad_splits(rows: usize, d_in: usize, d_out: usize) -> usize {
    let tiles = d_in.div_ceil(128) * d_out.div_ceil(128);
    let most = (1024 / tiles.max(1)).min(rows / 512).max(1);
    (1..=most)
        .rev()
        .find(|s| rows.is_multiple_of(*s))
        .unwrap_or(1)
}

/// `xᵀ · dy` in `out_dtype` for `x [rows, d_in]`, `dy [rows, d_out]`: the weight gradient,
/// split over [`weight_grad_splits`] slices of rows whose products are summed in f32.
pub(crate) fn weight_grad<B: RambaBackend>(
    x: FloatTensor<B>,
    dy: FloatTensor<B>,
    out_dtype: burn::tensor::DType,
) -> FloatTensor<B> {
    use burn::tensor::{DType, TensorMetadata};
    let [rows, d_in] = x.shape().dims();
    let d_out = dy.shape().dims::<2>()[1];
    let splits = weight_grad_splits(rows, d_in, d_out);
    if splits == 1 {
        return B::matmul_into(B::float_transpose(x), dy, out_dtype, LinearPass::WeightGrad);
    }
    let per = rows / splits;
    let xs = B::float_swap_dims(B::float_reshape(x, [splits, per, d_in].into()), 1, 2);
    let dys = B::float_reshape(dy, [splits, per, d_out].into());
    let partial = B::matmul_into(xs, dys, DType::F32, LinearPass::WeightGrad);
    // The slices' products summed over the leading axis, one output element per thread
    // (Burn's `sum_dim` here is cubek's unit routine too, but [`RambaBackend::sum_rows`] is the
    // seam's one sum over tokens).
    let partial = B::float_reshape(partial, [splits, d_in * d_out].into());
    let sum = B::float_reshape(B::sum_rows(partial), [d_in, d_out].into());
    if out_dtype == DType::F32 {
        sum
    } else {
        B::float_cast(sum, out_dtype.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_grad_splits_fill_the_device_with_views() {
        // ramba-small at 8 × 4096: in_proj (640 → 2836), out_proj (1280 → 640), the LM head.
        assert_eq!(weight_grad_splits(32768, 640, 2836), 8);
        assert_eq!(weight_grad_splits(32768, 1280, 640), 16);
        assert_eq!(weight_grad_splits(32768, 640, 50280), 1);
        // Few rows: never slices under 512 rows; an odd count stays whole.
        assert_eq!(weight_grad_splits(1024, 64, 64), 2);
        assert_eq!(weight_grad_splits(3 * 1031, 64, 64), 3);
        assert_eq!(weight_grad_splits(1031, 64, 64), 1);
    }

    #[test]
    fn kernel_choices_parse() {
        let all: LinearKernels = "specialized_mma".parse().unwrap();
        assert_eq!(all.forward, all.weight_grad);
        assert_eq!(all.forward.to_string(), "specialized_mma");
        let some: LinearKernels = "fwd=double_mma, wgrad=simple".parse().unwrap();
        assert_eq!(some.forward.to_string(), "double_mma");
        assert_eq!(some.input_grad, LinearKernels::DEFAULT.input_grad);
        // The defaults measured in docs/perf.md (2026-12-07, call Q).
        assert_eq!(LinearKernels::DEFAULT.forward.to_string(), "double_mma");
        assert_eq!(
            LinearKernels::DEFAULT.weight_grad.to_string(),
            "specialized_mma"
        );
        assert_eq!(some.weight_grad.to_string(), "simple");
        // f32 operands keep f32 arithmetic: no tensor-core (TF32) kernel by default.
        for pass in [
            LinearPass::Forward,
            LinearPass::InputGrad,
            LinearPass::WeightGrad,
        ] {
            assert_eq!(LinearKernels::F32.of(pass).family, MatmulFamily::Unit);
        }
        assert_eq!(
            "unit".parse::<MatmulKernel>().unwrap(),
            LinearKernels::F32.forward
        );
        assert!("bwd=simple".parse::<LinearKernels>().is_err());
        assert!("fwd=nope".parse::<LinearKernels>().is_err());
        // The start-up check names the variable, the value and the kernels it knows.
        assert_eq!(kernels_from_setting(None), Ok(None));
        let err = kernels_from_setting(Some("double_mmma".into())).unwrap_err();
        assert!(err.starts_with("RAMBA_MATMUL_KERNEL=double_mmma: unknown matmul kernel"));
        assert!(err.contains("double_mma"), "{err}");
    }
}
