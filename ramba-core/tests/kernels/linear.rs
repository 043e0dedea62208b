//! The linear node (`ops::linear`) against the op-by-op reference on the CPU: output and the
//! gradients of the input, the weight and the bias, for ragged shapes, a weight gradient split
//! over slices of rows, a transposed weight view (the tied LM head), and half-precision
//! activations with f32 weights.

use super::*;
use burn::tensor::DType;
use ramba_core::ops::linear::{self, weight_grad_splits};

struct LinearCase {
    batch: usize,
    seq: usize,
    d_in: usize,
    d_out: usize,
    /// The weight is a `[d_out, d_in]` parameter read transposed (tied embeddings).
    transposed: bool,
    bias: bool,
}

/// `(y, dx, dw, db)` of `sum(linear(x, w, b) · r)` on backend `B`, all as f32 host vectors.
fn run<B: burn::tensor::backend::AutodiffBackend + RambaBackend>(
    cs: &LinearCase,
    dtype: DType,
    device: &B::Device,
) -> [Vec<f64>; 4] {
    let mut r = rng(11);
    let x = random::<B, 3>(&mut r, [cs.batch, cs.seq, cs.d_in], 1.0, device);
    let w_shape = if cs.transposed {
        [cs.d_out, cs.d_in]
    } else {
        [cs.d_in, cs.d_out]
    };
    let w = random::<B, 2>(&mut r, w_shape, 0.2, device);
    let b = random::<B, 1>(&mut r, [cs.d_out], 0.5, device);
    let probe = random::<B, 3>(&mut r, [cs.batch, cs.seq, cs.d_out], 1.0, device);

    let x = x.cast(dtype).require_grad();
    let w = w.require_grad();
    let b = b.require_grad();
    let weight = if cs.transposed {
        w.clone().transpose()
    } else {
        w.clone()
    };
    let y = linear::linear(x.clone(), weight, cs.bias.then(|| b.clone()));
    assert_eq!(y.dtype(), dtype, "the output keeps the input's dtype");
    let loss = (y.clone().cast(DType::F32) * probe).sum();
    let grads = loss.backward();
    let dx = x.grad(&grads).expect("dx");
    let dw = w.grad(&grads).expect("dw");
    assert_eq!(dw.dtype(), DType::F32, "the weight gradient is f32");
    let db = if cs.bias {
        to_vec(b.grad(&grads).expect("db"))
    } else {
        vec![]
    };
    [
        to_vec(y.inner().cast(DType::F32)),
        to_vec(dx.cast(DType::F32)),
        to_vec(dw),
        db,
    ]
}

fn check(cs: LinearCase, dtype: DType, tol: f64) {
    assert!(
        <AdGpu as RambaBackend>::fused_linear(),
        "the CubeCL backend runs linear layers as nodes"
    );
    let got = run::<AdGpu>(&cs, dtype, &Default::default());
    // The oracle: the CPU's op-by-op reference in f32 from the same (rounded) inputs is close
    // enough for half precision at the half tolerance.
    let want = run::<AdCpu>(&cs, DType::F32, &Default::default());
    for (name, (g, w)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
        if w.is_empty() {
            continue;
        }
        assert!(
            g.iter().all(|v| v.is_finite()),
            "{name}: non-finite values ({dtype:?})"
        );
        let err = rel_err_vec(g, w);
        assert!(err < tol, "{name} ({dtype:?}): relative error {err:.3e}");
    }
}

#[test]
fn linear_node_matches_reference() {
    // Ragged rows, a bias, one slice.
    check(
        LinearCase {
            batch: 2,
            seq: 37,
            d_in: 48,
            d_out: 29,
            transposed: false,
            bias: true,
        },
        DType::F32,
        TOL,
    );
    // Enough rows that the weight gradient is split (and the split divides them).
    let (batch, seq, d_in, d_out) = (3, 700, 40, 24);
    assert_eq!(weight_grad_splits(batch * seq, d_in, d_out), 4);
    check(
        LinearCase {
            batch,
            seq,
            d_in,
            d_out,
            transposed: false,
            bias: false,
        },
        DType::F32,
        TOL,
    );
    // The tied head's transposed view.
    check(
        LinearCase {
            batch: 2,
            seq: 33,
            d_in: 32,
            d_out: 67,
            transposed: true,
            bias: false,
        },
        DType::F32,
        TOL,
    );
}

#[test]
fn linear_node_in_half_precision_matches_reference() {
    for transposed in [false, true] {
        check(
            LinearCase {
                batch: 2,
                seq: 300,
                d_in: 64,
                d_out: 48,
                transposed,
                bias: true,
            },
            HALF,
            1e-2,
        );
    }
}

/// `(parts, dx, dw)` of `Σ_k sum(part_k · r_k)` over the parts `used` names, for
/// `linear_parts(x, w, widths)` on backend `B`, as f32 host vectors.
fn run_parts<B: burn::tensor::backend::AutodiffBackend + RambaBackend>(
    (rows, d_in, d_out): (usize, usize, usize),
    widths: &[usize],
    used: &[bool],
    dtype: DType,
    device: &B::Device,
) -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) {
    let mut r = rng(12);
    let x = random::<B, 3>(&mut r, [2, rows, d_in], 1.0, device)
        .cast(dtype)
        .require_grad();
    let w = random::<B, 2>(&mut r, [d_in, d_out], 0.2, device).require_grad();
    let parts = linear::linear_parts(x.clone(), w.clone(), widths);
    assert_eq!(parts.len(), widths.len());
    let mut loss = None;
    for ((part, &width), &use_it) in parts.iter().zip(widths).zip(used) {
        let probe = random::<B, 3>(&mut r, [2, rows, width], 1.0, device);
        if use_it {
            let term = (part.clone().cast(DType::F32) * probe).sum();
            loss = Some(match loss {
                Some(l) => l + term,
                None => term,
            });
        }
    }
    let grads = loss.expect("at least one part used").backward();
    let dx = x.grad(&grads).expect("dx");
    let dw = w.grad(&grads).expect("dw");
    assert_eq!(dw.dtype(), DType::F32, "the weight gradient is f32");
    (
        parts
            .into_iter()
            .map(|p| to_vec(p.inner().cast(DType::F32)))
            .collect(),
        to_vec(dx.cast(DType::F32)),
        to_vec(dw),
    )
}

/// The column-part products (Mamba-2's `in_proj`) as one node: every part and the gradients of
/// the input and the weight against the CPU's per-part reference, with every part in the loss,
/// with parts left out (their columns' weight gradient is zero), with columns no part takes,
/// and in half precision.
#[test]
fn linear_parts_node_matches_reference() {
    let cases: [(&[usize], &[bool], usize); 4] = [
        (&[13, 13, 5, 5, 3], &[true; 5], 39),
        (&[13, 13, 5, 5, 3], &[true, false, true, false, true], 39),
        (&[16, 7], &[false, true], 30),
        (&[24], &[true], 24),
    ];
    for (dtype, tol) in [(DType::F32, TOL), (HALF, 1e-2)] {
        for (widths, used, d_out) in cases {
            let shape = (300, 20, d_out);
            let got = run_parts::<AdGpu>(shape, widths, used, dtype, &Default::default());
            let want = run_parts::<AdCpu>(shape, widths, used, DType::F32, &Default::default());
            let case = format!("widths {widths:?}, used {used:?}, {dtype:?}");
            let mut pairs: Vec<(String, &Vec<f64>, &Vec<f64>)> = got
                .0
                .iter()
                .zip(&want.0)
                .enumerate()
                .map(|(k, (g, w))| (format!("part {k}"), g, w))
                .collect();
            pairs.push(("dx".into(), &got.1, &want.1));
            pairs.push(("dw".into(), &got.2, &want.2));
            for (name, g, w) in pairs {
                assert!(g.iter().all(|v| v.is_finite()), "{case}: {name} non-finite");
                let err = rel_err_vec(g, w);
                assert!(err < tol, "{case}: {name}: relative error {err:.3e}");
            }
            // Columns of unused parts and columns no part takes get exactly zero gradient.
            let mut start = 0;
            for (&width, &use_it) in widths.iter().zip(used) {
                if !use_it {
                    let zero = (0..shape.1)
                        .all(|i| (start..start + width).all(|j| got.2[i * d_out + j] == 0.0));
                    assert!(zero, "{case}: dw of an unused part is not zero");
                }
                start += width;
            }
            let rest = (0..shape.1).all(|i| (start..d_out).all(|j| got.2[i * d_out + j] == 0.0));
            assert!(rest, "{case}: dw of columns no part takes is not zero");
        }
    }
}

/// Every matmul kernel the linear layers can name computes every product it accepts: the tiny
/// models' layer shapes (where a kernel may take a problem that the shapes above leave to the
/// fallback), forward, input-gradient and weight-gradient layouts, transposed views, in f32
/// and half precision, against the CPU's f32 product. A kernel that cannot run a problem says
/// so (`matmul_with_kernel` errs) and is not timed or used for it; cubek's default must run
/// them all.
#[test]
fn every_matmul_kernel_computes_what_it_accepts() {
    let device = Default::default();
    // (m, k, n, lhs read transposed, rhs read transposed)
    let cases = [
        (96, 32, 37, false, true),
        (96, 37, 32, false, false),
        (32, 96, 37, true, false),
        (96, 32, 16, false, false),
        (96, 32, 48, false, false),
        (96, 48, 32, false, false),
        (32, 96, 48, true, false),
        (66, 32, 67, false, true),
        // Inner dimensions that are no multiple of 8 (cubek's double-buffered unit kernel got
        // these wrong on lavapipe).
        (70, 24, 301, false, true),
        (74, 29, 48, false, true),
        (48, 74, 29, true, false),
        (600, 64, 48, false, false),
        (300, 256, 200, false, false),
    ];
    // The tensor-core kernels read f32 operands as TF32 on CUDA (10-bit mantissas: ~3e-4
    // relative).
    let f32_tol = if cfg!(feature = "cuda-tests") {
        2e-3
    } else {
        TOL
    };
    let mut failures = vec![];
    let mut default_ran = 0;
    // Half operands into a half product, and into an f32 one (the weight gradient's).
    let dtypes = [
        (DType::F32, DType::F32, f32_tol),
        (HALF, HALF, 1e-2),
        (HALF, DType::F32, 1e-2),
    ];
    for (m, k, n, lhs_t, rhs_t) in cases {
        // Each operand as stored (`[cols, rows]` when read transposed), on both devices.
        let mut r = rng(3);
        let mut stored = |rows, cols, t: bool| {
            let shape = if t { [cols, rows] } else { [rows, cols] };
            let x = random::<TestCpu, 2>(&mut r, shape, 1.0, &Default::default());
            let on_gpu = from_vec::<Gpu, 2>(to_vec(x.clone()), shape, &device);
            (x, on_gpu)
        };
        let ((a, a_gpu), (b, b_gpu)) = (stored(m, k, lhs_t), stored(k, n, rhs_t));
        let want = to_vec(read(a, lhs_t).matmul(read(b, rhs_t)));
        for &(dtype, out_dtype, tol) in &dtypes {
            let lhs = read(a_gpu.clone().cast(dtype), lhs_t);
            let rhs = read(b_gpu.clone().cast(dtype), rhs_t);
            for kernel in linear::MatmulKernel::all() {
                // A kernel that leaves part of its output unwritten must not inherit the last
                // kernel's product from the allocator.
                poison_as::<Gpu>(&[[1, 1, m, n]], out_dtype, &device);
                let got = Gpu::matmul_with_kernel(
                    lhs.clone().into_primitive().tensor(),
                    rhs.clone().into_primitive().tensor(),
                    out_dtype,
                    kernel,
                );
                let case = format!(
                    "{kernel} {dtype:?} → {out_dtype:?} [{m}, {k}]·[{k}, {n}] (lhsᵀ {lhs_t}, \
                     rhsᵀ {rhs_t})"
                );
                match got {
                    Ok(y) => {
                        let y = Tensor::<Gpu, 2>::from_primitive(TensorPrimitive::Float(y));
                        let err = rel_err_vec(&to_vec(y.cast(DType::F32)), &want);
                        eprintln!("{case}: {err:.2e}");
                        if kernel.family == linear::MatmulFamily::Default {
                            default_ran += 1;
                        }
                        if err.is_nan() || err > tol {
                            failures.push(format!("{case}: relative error {err:.3e}"));
                        }
                    }
                    Err(why) if kernel.family == linear::MatmulFamily::Default => {
                        failures.push(format!("{case}: the default kernel cannot run it: {why}"))
                    }
                    Err(_) => eprintln!("{case}: not accepted"),
                }
            }
        }
    }
    assert_eq!(
        default_ran,
        cases.len() * dtypes.len(),
        "the default kernel ran every case"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `x`, read transposed when `transposed` (a view: the storage order stays).
fn read<B: Backend>(x: Tensor<B, 2>, transposed: bool) -> Tensor<B, 2> {
    if transposed {
        x.transpose()
    } else {
        x
    }
}
