//! The linear layers' matrix products under each matmul kernel the CubeCL backends can name
//! (`ramba_core::ops::linear::MatmulKernel`): for each layer shape `d_in → d_out` at `rows`
//! tokens, the forward `x · W`, the input gradient `dy · Wᵀ` (the weight read transposed in
//! place) and the weight gradient `xᵀ · dy` into f32, whole and split over slices of rows as
//! the linear node runs it. Prints TFLOP/s per kernel and pass; `LinearKernels::DEFAULT` is
//! chosen from these tables.

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Distribution, TensorPrimitive};
use ramba_core::ops::linear::{weight_grad_splits, MatmulKernel};
use ramba_core::ops::RambaBackend;
use serde::Serialize;

use super::timing::time_ms_flushed;

/// What to measure.
#[derive(Clone, Debug)]
pub struct MatmulBenchSettings {
    /// Tokens a step (`batch × seq`): the products' long side.
    pub rows: usize,
    /// Layer shapes `(d_in, d_out)`.
    pub shapes: Vec<(usize, usize)>,
    /// Operand dtype (the weight gradient is written in f32 whatever it is).
    pub dtype: DType,
    pub kernels: Vec<MatmulKernel>,
    pub flush_l2: bool,
    pub budget_ms: f64,
}

/// One kernel on one pass of one shape.
#[derive(Clone, Debug, Serialize)]
pub struct MatmulBenchRow {
    pub kernel: String,
    pub d_in: usize,
    pub d_out: usize,
    pub rows: usize,
    /// `fwd`, `dgrad`, `wgrad` (whole) or `wgrad/S` (split over `S` slices, summed).
    pub pass: String,
    pub ms: f64,
    pub tflops: f64,
    /// Why the kernel could not run this pass.
    pub error: Option<String>,
}

fn float<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// One timed product: `Err` when the kernel cannot run it.
type Pass<'a> = Box<dyn Fn() -> Result<(), String> + 'a>;

/// Every kernel × shape × pass of `settings`.
pub fn run<B: RambaBackend>(device: &B::Device, s: &MatmulBenchSettings) -> Vec<MatmulBenchRow> {
    let mut out = vec![];
    for &(d_in, d_out) in &s.shapes {
        let random = |shape: [usize; 2]| {
            Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 1.0), device).cast(s.dtype)
        };
        let x = random([s.rows, d_in]);
        let w = random([d_in, d_out]);
        let dy = random([s.rows, d_out]);
        let splits = weight_grad_splits(s.rows, d_in, d_out);
        let per = s.rows / splits;
        let flops = 2.0 * (s.rows * d_in * d_out) as f64;
        for &kernel in &s.kernels {
            let mut passes: Vec<(String, Pass)> = vec![
                (
                    "fwd".into(),
                    Box::new(|| {
                        B::matmul_with_kernel(float(x.clone()), float(w.clone()), s.dtype, kernel)
                            .map(drop)
                    }),
                ),
                (
                    "dgrad".into(),
                    Box::new(|| {
                        let wt = float(w.clone().transpose());
                        B::matmul_with_kernel(float(dy.clone()), wt, s.dtype, kernel).map(drop)
                    }),
                ),
                (
                    "wgrad".into(),
                    Box::new(|| {
                        let xt = float(x.clone().transpose());
                        B::matmul_with_kernel(xt, float(dy.clone()), DType::F32, kernel).map(drop)
                    }),
                ),
            ];
            if splits > 1 {
                passes.push((
                    format!("wgrad/{splits}"),
                    Box::new(|| {
                        let xs = x.clone().reshape([splits, per, d_in]).swap_dims(1, 2);
                        let dys = dy.clone().reshape([splits, per, d_out]);
                        let partial =
                            B::matmul_with_kernel(float(xs), float(dys), DType::F32, kernel)?;
                        let _ = tensor::<B, 3>(partial).sum_dim(0);
                        Ok(())
                    }),
                ));
            }
            for (pass, f) in passes {
                let row = |ms: f64, error: Option<String>| MatmulBenchRow {
                    kernel: kernel.to_string(),
                    d_in,
                    d_out,
                    rows: s.rows,
                    pass: pass.clone(),
                    ms,
                    tflops: flops / (ms * 1e-3) / 1e12,
                    error,
                };
                // The first call compiles, and says whether the kernel runs this problem.
                let r = match f() {
                    Err(e) => row(
                        f64::NAN,
                        Some(e.split_whitespace().collect::<Vec<_>>().join(" ")),
                    ),
                    Ok(()) => {
                        let ms = time_ms_flushed::<B>(device, s.budget_ms, s.flush_l2, || {
                            f().expect("the kernel ran on the first call");
                        });
                        row(ms, None)
                    }
                };
                // Progress as it goes: a sweep of every kernel takes minutes.
                eprintln!(
                    "{} {}→{} {}: {:.3} ms, {:.1} TFLOP/s{}",
                    r.kernel,
                    d_in,
                    d_out,
                    r.pass,
                    r.ms,
                    r.tflops,
                    r.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                );
                out.push(r);
            }
        }
    }
    out
}

/// One table: a row per kernel, a column per shape and pass, TFLOP/s (the best per column in
/// bold; `–` where the kernel cannot run the problem).
pub fn table(rows: &[MatmulBenchRow]) -> String {
    let mut columns: Vec<(usize, usize, String)> = vec![];
    let mut kernels: Vec<String> = vec![];
    for r in rows {
        let col = (r.d_in, r.d_out, r.pass.clone());
        if !columns.contains(&col) {
            columns.push(col);
        }
        if !kernels.contains(&r.kernel) {
            kernels.push(r.kernel.clone());
        }
    }
    let best = |col: &(usize, usize, String)| {
        rows.iter()
            .filter(|r| (r.d_in, r.d_out, &r.pass) == (col.0, col.1, &col.2) && r.error.is_none())
            .map(|r| r.tflops)
            .fold(f64::NAN, f64::max)
    };
    let rows_of = rows.first().map(|r| r.rows).unwrap_or(0);
    let mut out = format!("TFLOP/s at {rows_of} rows\n\n| kernel |");
    for (d_in, d_out, pass) in &columns {
        out += &format!(" {d_in}→{d_out} {pass} |");
    }
    out += "\n|---|";
    out += &"---|".repeat(columns.len());
    out += "\n";
    for k in &kernels {
        out += &format!("| {k} |");
        for col in &columns {
            let cell = rows
                .iter()
                .find(|r| &r.kernel == k && (r.d_in, r.d_out, &r.pass) == (col.0, col.1, &col.2));
            out += &match cell {
                Some(r) if r.error.is_none() && r.tflops == best(col) => {
                    format!(" **{:.1}** |", r.tflops)
                }
                Some(r) if r.error.is_none() => format!(" {:.1} |", r.tflops),
                _ => " – |".to_string(),
            };
        }
        out += "\n";
    }
    out
}
