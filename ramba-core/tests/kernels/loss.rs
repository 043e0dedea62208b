//! The loss kernels (`cubecl-kernels/src/cross_entropy.rs`), the sum over rows
//! (`cubecl-kernels/src/reduce.rs`) and the blockwise head-and-loss node
//! (`ops::cross_entropy::head`) against the CPU's reference: ragged vocabularies and rows,
//! half-precision logits, several blocks, a shared logits buffer that must survive the
//! in-place gradient, and NaN-poisoned outputs.

use super::*;
use burn::tensor::DType;
use ramba_core::ops::cross_entropy::{self, head, reference};

fn targets<B: Backend>(
    rows: usize,
    vocab: usize,
    seed: u64,
    device: &B::Device,
) -> Tensor<B, 1, Int> {
    let mut r = rng(seed);
    let v: Vec<i64> = (0..rows)
        .map(|_| (rand::Rng::random::<u64>(&mut r) % vocab as u64) as i64)
        .collect();
    Tensor::from_data(TensorData::new(v, [rows]).convert::<B::IntElem>(), device)
}

/// The loss mask: positive weights with every fifth row masked out.
fn loss_weights<B: Backend>(rows: usize, device: &B::Device) -> Tensor<B, 1> {
    let v: Vec<f64> = (0..rows)
        .map(|i| {
            if i % 5 == 3 {
                0.0
            } else {
                0.5 + (i % 7) as f64 * 0.25
            }
        })
        .collect();
    from_vec(v, [rows], device)
}

fn assert_vec_close(name: &str, got: &[f64], want: &[f64], tol: f64) {
    assert!(
        got.iter().all(|x| x.is_finite()),
        "{name}: non-finite output (an element left unwritten?)"
    );
    assert!(
        want.iter().any(|&x| x != 0.0),
        "{name}: the reference is all zero"
    );
    let err = rel_err_vec(got, want);
    assert!(err < tol, "{name}: relative error {err:.3e}");
}

#[test]
fn cross_entropy_kernels_match_reference() {
    let device = Default::default();
    // A vocabulary that is not a multiple of the kernels' 256 × 4 columns a step, one shorter
    // than a cube's threads, and rows past one cube.
    for (rows, vocab, dtype, tol) in [
        (37, 1031, DType::F32, TOL),
        (5, 200, DType::F32, TOL),
        (19, 2053, HALF, 1e-2),
    ] {
        let mut r = rng(rows as u64 + vocab as u64);
        let logits_cpu = random::<TestCpu, 2>(&mut r, [rows, vocab], 3.0, &Default::default());
        let logits: Tensor<Gpu, 2> =
            from_vec(to_vec(logits_cpu.clone()), [rows, vocab], &device).cast(dtype);
        // The oracle works from the same rounded logits.
        let logits_cpu: Tensor<TestCpu, 2> = from_vec(
            to_vec(logits.clone().cast(DType::F32)),
            [rows, vocab],
            &Default::default(),
        );
        let t = targets::<Gpu>(rows, vocab, 3, &device);
        let t_cpu = targets::<TestCpu>(rows, vocab, 3, &Default::default());
        let coef_cpu = random::<TestCpu, 1>(&mut r, [rows], 1.0, &Default::default());
        let coef: Tensor<Gpu, 1> = from_vec(to_vec(coef_cpu.clone()), [rows], &device);

        poison::<Gpu>(&[[1, 1, rows, vocab], [1, 1, 1, rows]], &device);
        let lse: Tensor<Gpu, 1> = float(<Gpu as RambaBackend>::row_logsumexp(prim_nd(
            logits.clone(),
        )));
        let lse_cpu = reference::row_logsumexp_blockwise(logits_cpu.clone(), 7);
        assert_vec_close(
            &format!("lse {rows}x{vocab} {dtype:?}"),
            &to_vec(lse.clone()),
            &to_vec(lse_cpu.clone()),
            TOL,
        );

        // `logits` is still held here: the kernel must write a copy, not over it.
        let before = to_vec(logits.clone().cast(DType::F32));
        let grad: Tensor<Gpu, 2> = float(<Gpu as RambaBackend>::cross_entropy_logits_grad(
            prim_nd(logits.clone()),
            t.into_primitive(),
            prim_nd(coef),
            prim_nd(lse),
        ));
        assert_eq!(grad.dtype(), dtype, "the gradient keeps the logits' dtype");
        assert_eq!(
            to_vec(logits.cast(DType::F32)),
            before,
            "the gradient overwrote logits another tensor still held"
        );
        let grad_cpu = reference::logits_grad_blockwise(logits_cpu, t_cpu, coef_cpu, lse_cpu, 7);
        assert_vec_close(
            &format!("d_logits {rows}x{vocab} {dtype:?}"),
            &to_vec(grad.cast(DType::F32)),
            &to_vec(grad_cpu),
            tol,
        );
    }
}

#[test]
fn sum_rows_matches_reference() {
    let device = Default::default();
    // Tall and narrow (several passes of partial sums), wide and short (one pass), a
    // non-power-of-two width, one row, and half-precision input.
    for (rows, cols, dtype) in [
        (20_000, 24, DType::F32),
        (16, 3000, DType::F32),
        (777, 641, DType::F32),
        (1, 7, DType::F32),
        (4100, 33, HALF),
    ] {
        let mut r = rng(rows as u64 * 31 + cols as u64);
        let x_cpu = random::<TestCpu, 2>(&mut r, [rows, cols], 1.0, &Default::default());
        let x: Tensor<Gpu, 2> = from_vec(to_vec(x_cpu), [rows, cols], &device).cast(dtype);
        let x_cpu: Tensor<TestCpu, 2> = from_vec(
            to_vec(x.clone().cast(DType::F32)),
            [rows, cols],
            &Default::default(),
        );
        poison::<Gpu>(&[[1, 1, 1, cols], [1, 1, 64, cols]], &device);
        let got: Tensor<Gpu, 1> = float(<Gpu as RambaBackend>::sum_rows(prim_nd(x)));
        assert_eq!(got.dtype(), DType::F32, "the sums are f32");
        let want = x_cpu.sum_dim(0).reshape([cols]);
        assert_vec_close(
            &format!("sum_rows {rows}x{cols} {dtype:?}"),
            &to_vec(got),
            &to_vec(want),
            TOL,
        );
    }
}

/// `(loss, dx, dW)` of the head-and-loss node on `B` for the tied head's transposed view
/// (`transposed`) or a `[d, V]` weight, as host vectors.
fn head_loss<B: burn::tensor::backend::AutodiffBackend + RambaBackend>(
    rows: usize,
    d: usize,
    vocab: usize,
    transposed: bool,
    dtype: DType,
    device: &B::Device,
) -> [Vec<f64>; 3] {
    let mut r = rng(5);
    let x = random::<B, 2>(&mut r, [rows, d], 1.0, device)
        .cast(dtype)
        .require_grad();
    let shape = if transposed { [vocab, d] } else { [d, vocab] };
    let w = random::<B, 2>(&mut r, shape, 0.3, device).require_grad();
    let weight = if transposed {
        w.clone().transpose()
    } else {
        w.clone()
    };
    let loss = cross_entropy::linear_cross_entropy(
        x.clone(),
        weight,
        targets::<B>(rows, vocab, 9, device),
        loss_weights::<B>(rows, device),
    );
    // A loss gradient other than 1, as the trainer's share of a split batch gives.
    let grads = loss.clone().mul_scalar(0.75).backward();
    let dx = x.grad(&grads).expect("dx");
    assert_eq!(dx.dtype(), dtype, "dx keeps the activations' dtype");
    let dw = w.grad(&grads).expect("dW");
    assert_eq!(dw.dtype(), DType::F32, "dW is the master weight's dtype");
    [
        to_vec(loss.inner()),
        to_vec(dx.cast(DType::F32)),
        to_vec(dw),
    ]
}

#[test]
fn head_and_loss_node_matches_reference() {
    // Half precision first: a failure there is not hidden behind one in f32.
    for (transposed, dtype, tol) in [
        (true, HALF, 1e-2),
        (true, DType::F32, TOL),
        (false, DType::F32, TOL),
    ] {
        let (rows, d, vocab) = (70, 24, 301);
        let got = head_loss::<AdGpu>(rows, d, vocab, transposed, dtype, &Default::default());
        let want = head_loss::<AdCpu>(rows, d, vocab, transposed, DType::F32, &Default::default());
        for (name, (g, w)) in ["loss", "dx", "dW"].iter().zip(got.iter().zip(&want)) {
            assert_vec_close(
                &format!("{name} (transposed {transposed}, {dtype:?})"),
                g,
                w,
                tol,
            );
        }
    }
}

#[test]
fn head_and_loss_blocks_match_one_block() {
    // Several blocks, the last one short, against one block of all the rows.
    let device = Default::default();
    let (rows, d, vocab) = (53, 16, 133);
    let mut r = rng(21);
    let x = random::<Gpu, 2>(&mut r, [rows, d], 1.0, &device);
    let w = random::<Gpu, 2>(&mut r, [d, vocab], 0.3, &device);
    let run = |block: usize| {
        let out = head::blocks::<Gpu>(
            prim_nd(x.clone()),
            prim_nd(w.clone()),
            targets::<Gpu>(rows, vocab, 4, &device).into_primitive(),
            prim_nd(loss_weights::<Gpu>(rows, &device)),
            block,
            true,
        );
        let (dx, dw) = out.grads.expect("gradients");
        [
            to_vec(float::<Gpu, 1>(out.loss)),
            to_vec(float::<Gpu, 2>(dx)),
            to_vec(float::<Gpu, 2>(dw)),
        ]
    };
    let (split, whole) = (run(10), run(rows));
    for (name, (g, w)) in ["loss", "dx", "dW"].iter().zip(split.iter().zip(&whole)) {
        assert_vec_close(&format!("{name}, blocks of 10 rows"), g, w, TOL);
    }
}
