//! Gradients of the reference ops against central finite differences, in f64.
//!
//! The device's default float dtype is switched to f64 once per process (burn 0.21 creates
//! tensors in the device's default dtype), which is why these tests live in their own binary.

use std::sync::Once;

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::DType;
use ramba_core::ops::{conv, hsa, scan, selection};
use ramba_core::ops::{ChunkWeighting, HsaOptions, ScanOptions, SelectionOptions};
use ramba_core::testing::*;

type Ad = Autodiff<TestF64>;

fn device() -> burn::tensor::Device<Ad> {
    static F64: Once = Once::new();
    let device = Default::default();
    F64.call_once(|| {
        burn::tensor::set_default_dtypes::<Ad>(&device, DType::F64, DType::I64)
            .expect("f64 before any tensor");
    });
    device
}

/// Central differences of `f` at ~25 coordinates of `x`, compared with the autodiff gradient.
fn check_grad(name: &str, x: &[f64], grad: &[f64], f: &dyn Fn(&[f64]) -> f64) {
    let eps = 1e-6;
    let (mut num, mut ana) = (vec![], vec![]);
    for i in (0..x.len()).step_by((x.len() / 25).max(1)) {
        let mut p = x.to_vec();
        p[i] += eps;
        let fp = f(&p);
        p[i] -= 2.0 * eps;
        let fm = f(&p);
        num.push((fp - fm) / (2.0 * eps));
        ana.push(grad[i]);
    }
    let err = rel_err_vec(&ana, &num);
    // f64 central differences are exact to ~eps² ≈ 1e-12 plus rounding (1e-16/eps ≈ 1e-10) per
    // coordinate; 1e-6 relative still catches any missing or wrong term.
    assert!(
        err < 1e-6,
        "{name}: rel err {err}\nautodiff {ana:?}\nnumeric  {num:?}"
    );
    assert!(
        num.iter().any(|g| g.abs() > 1e-6),
        "{name}: gradient is trivially zero"
    );
}

/// Checks the gradient of `loss` w.r.t. each input (by name) with finite differences.
fn check_all<const N: usize>(
    names: [&str; N],
    values: [Vec<f64>; N],
    shapes: [[usize; 4]; N],
    loss: &dyn Fn(Vec<Tensor<Ad, 4>>) -> Tensor<Ad, 1>,
) {
    let device = device();
    let make = |vals: &[Vec<f64>], grad: bool| -> Vec<Tensor<Ad, 4>> {
        vals.iter()
            .zip(shapes)
            .map(|(v, s)| {
                let t = from_vec::<Ad, 4>(v.clone(), s, &device);
                if grad {
                    t.require_grad()
                } else {
                    t
                }
            })
            .collect()
    };
    let inputs = make(&values, true);
    let grads = loss(inputs.clone()).backward();
    for i in 0..N {
        let g = to_vec(inputs[i].grad(&grads).expect("input has a gradient"));
        let f = |x: &[f64]| {
            let mut vals = values.to_vec();
            vals[i] = x.to_vec();
            loss(make(&vals, false)).into_scalar()
        };
        check_grad(names[i], &values[i], &g, &f);
    }
}

/// q, k, v, the retrieval queries and the landmarks, through select_chunks + hsa, for both
/// weightings and both softmax variants.
#[test]
fn hsa_and_selection_gradients() {
    let device = device();
    let (b, l, hq, hkv, dh, s, k, c, dr) = (1, 20, 4, 2, 3, 4, 3, 5, 3);
    for (weighting, off) in [
        (ChunkWeighting::StickBreaking, false),
        (ChunkWeighting::Softmax, true),
    ] {
        let mut r = rng(6);
        let values = [
            random_vec(&mut r, b * l * hq * dh, 1.0),
            random_vec(&mut r, b * l * hkv * dh, 1.0),
            random_vec(&mut r, b * l * hkv * dh, 1.0),
            random_vec(&mut r, b * l * hkv * dr, 1.5),
            random_vec(&mut r, b * c * hkv * dr, 1.5),
        ];
        let proj = from_vec::<Ad, 4>(
            random_vec(&mut r, b * l * hq * dh, 1.0),
            [b, l, hq, dh],
            &device,
        );
        let shapes = [
            [b, l, hq, dh],
            [b, l, hkv, dh],
            [b, l, hkv, dh],
            [b, l, hkv, dr],
            [b, c, hkv, dr],
        ];
        let loss = |t: Vec<Tensor<Ad, 4>>| {
            let [q, kk, v, qr, lmk]: [Tensor<Ad, 4>; 5] = t.try_into().unwrap();
            let sel = selection::select_chunks(
                qr,
                lmk,
                SelectionOptions {
                    chunk_size: s,
                    top_k: k,
                    weighting,
                    query_start: 0,
                },
            );
            let out = hsa::hsa(
                q,
                kk,
                v,
                sel.indices,
                sel.weights,
                HsaOptions {
                    chunk_size: s,
                    softmax_off_by_one: off,
                },
            );
            (out * proj.clone()).sum()
        };
        check_all(
            ["q", "k", "v", "retrieval queries", "landmarks"],
            values,
            shapes,
            &loss,
        );
    }
}

/// Chunk-unaware selection: the retrieval queries, landmarks and values get their gradients
/// from the compression readout (checked by finite differences), and none at all through the
/// selected chunks' weights (which is what makes it chunk-unaware).
#[test]
fn chunk_unaware_selection_gradients() {
    let device = device();
    let (b, l, hkv, dh, s, k, c, dr) = (1, 20, 2, 3, 4, 3, 5, 3);
    let options = SelectionOptions {
        chunk_size: s,
        top_k: k,
        weighting: ChunkWeighting::StickBreaking,
        query_start: 0,
    };
    let mut r = rng(8);
    let values = [
        random_vec(&mut r, b * l * hkv * dr, 1.5),
        random_vec(&mut r, b * c * hkv * dr, 1.5),
        random_vec(&mut r, b * l * hkv * dh, 1.0),
    ];
    let shapes = [[b, l, hkv, dr], [b, c, hkv, dr], [b, l, hkv, dh]];
    let proj = from_vec::<Ad, 4>(
        random_vec(&mut r, b * l * hkv * dh, 1.0),
        [b, l, hkv, dh],
        &device,
    );
    let readout = |t: Vec<Tensor<Ad, 4>>| {
        let [qr, lmk, v]: [Tensor<Ad, 4>; 3] = t.try_into().unwrap();
        let sel = selection::unaware::select_chunks_unaware(qr, lmk, v, options);
        (sel.compressed.expect("chunk-unaware readout") * proj.clone()).sum()
    };
    check_all(
        ["retrieval queries", "landmarks", "values"],
        values.clone(),
        shapes,
        &readout,
    );

    // Through the weights alone: no gradient reaches the queries or the landmarks.
    let qr = from_vec::<Ad, 4>(values[0].clone(), shapes[0], &device).require_grad();
    let lmk = from_vec::<Ad, 4>(values[1].clone(), shapes[1], &device).require_grad();
    let v = from_vec::<Ad, 4>(values[2].clone(), shapes[2], &device);
    let sel = selection::unaware::select_chunks_unaware(qr.clone(), lmk.clone(), v, options);
    let w = sel.weights.clone();
    assert!(
        to_vec(w.clone()).iter().any(|x| *x > 1e-3),
        "weights are not trivial"
    );
    // The zero terms give both inputs a gradient entry, which must then stay all zeros.
    let loss = (w.clone() * w).sum()
        + qr.clone().sum().mul_scalar(0.0)
        + lmk.clone().sum().mul_scalar(0.0);
    let grads = loss.backward();
    for (name, x) in [("queries", &qr), ("landmarks", &lmk)] {
        let g = to_vec(x.grad(&grads).expect("a gradient entry"));
        assert!(g.iter().all(|x| *x == 0.0), "{name}: {g:?}");
    }
}

/// x, Δ, A, B, C, D and the initial state of the selective scan, through y and the final
/// state (A and D are trained parameters, so they are differentiated too).
#[test]
fn selective_scan_gradients() {
    let device = device();
    let (l, h, p, g, n) = (11, 2, 2, 1, 3);
    let mut r = rng(9);
    let values = [
        random_vec(&mut r, l * h * p, 1.0),
        random_vec(&mut r, l * h, 1.0)
            .iter()
            .map(|x| 0.1 + x.abs() * 0.3)
            .collect(),
        vec![-0.7, -1.3],
        random_vec(&mut r, l * g * n, 1.0),
        random_vec(&mut r, l * g * n, 1.0),
        vec![0.3, -0.2],
        random_vec(&mut r, h * p * n, 1.0),
    ];
    let proj_y = from_vec::<Ad, 4>(random_vec(&mut r, l * h * p, 1.0), [1, l, h, p], &device);
    let proj_s = from_vec::<Ad, 4>(random_vec(&mut r, h * p * n, 1.0), [1, h, p, n], &device);
    // Δ, A and D travel as 4-D tensors so every input fits one helper.
    let shapes = [
        [1, l, h, p],
        [1, l, h, 1],
        [1, 1, 1, h],
        [1, l, g, n],
        [1, l, g, n],
        [1, 1, 1, h],
        [1, h, p, n],
    ];
    let loss = |t: Vec<Tensor<Ad, 4>>| {
        let [x, dt, a, bm, cm, d, init]: [Tensor<Ad, 4>; 7] = t.try_into().unwrap();
        let (y, s) = scan::selective_scan::<Ad>(
            x,
            dt.reshape([1, l, h]),
            a.reshape([h]),
            bm,
            cm,
            d.reshape([h]),
            Some(init),
            ScanOptions { chunk_size: 4 },
        );
        (y * proj_y.clone()).sum() + (s * proj_s.clone()).sum()
    };
    check_all(
        ["x", "delta", "A", "B", "C", "D", "init_state"],
        values,
        shapes,
        &loss,
    );
}

/// x, the weights, the bias and the initial state of the causal conv.
#[test]
fn causal_conv1d_gradients() {
    let device = device();
    let (l, ch, w) = (7, 3, 4);
    let mut r = rng(13);
    let values = [
        random_vec(&mut r, l * ch, 1.0),
        random_vec(&mut r, ch * w, 1.0),
        random_vec(&mut r, ch, 1.0),
        random_vec(&mut r, ch * (w - 1), 1.0),
    ];
    let proj_y = from_vec::<Ad, 3>(random_vec(&mut r, l * ch, 1.0), [1, l, ch], &device);
    let proj_s = from_vec::<Ad, 3>(
        random_vec(&mut r, ch * (w - 1), 1.0),
        [1, ch, w - 1],
        &device,
    );
    let shapes = [
        [1, 1, l, ch],
        [1, 1, ch, w],
        [1, 1, 1, ch],
        [1, 1, ch, w - 1],
    ];
    let loss = |t: Vec<Tensor<Ad, 4>>| {
        let [x, wt, bias, init]: [Tensor<Ad, 4>; 4] = t.try_into().unwrap();
        let (y, s) = conv::causal_conv1d::<Ad>(
            x.reshape([1, l, ch]),
            wt.reshape([ch, w]),
            Some(bias.reshape([ch])),
            Some(init.reshape([1, ch, w - 1])),
        );
        (y * proj_y.clone()).sum() + (s * proj_s.clone()).sum()
    };
    check_all(["x", "weight", "bias", "init_state"], values, shapes, &loss);
}
