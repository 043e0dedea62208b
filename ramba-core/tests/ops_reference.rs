//! Reference ops against independent oracles: hand-computed values, naive host loops, the
//! closed forms of the spec, and finite differences (f64).

use burn::prelude::*;
use ramba_core::backend_tests;
use ramba_core::ops::{conv, hsa, scan, selection};
use ramba_core::ops::{ChunkWeighting, HsaOptions, RambaBackend, ScanOptions, SelectionOptions};
use ramba_core::testing::*;

/// f32 reference vs an f64 host loop: ‖x−y‖/‖y‖ below this (the plan's f32 bound).
const TOL_F32: f64 = 1e-4;

// ---------------------------------------------------------------------------------------------
// Naive host oracles (f64, direct transcriptions of the spec).

struct HsaCase {
    b: usize,
    l: usize,
    hq: usize,
    hkv: usize,
    dh: usize,
    s: usize,
    k: usize,
    c: usize,
}

/// Spec §3 by loops: returns (indices, weights) `[b][t][g][k]` flattened.
fn naive_select(scores: &[f64], cs: &HsaCase, weighting: ChunkWeighting) -> (Vec<i64>, Vec<f64>) {
    let (b, l, h, c, k, s) = (cs.b, cs.l, cs.hkv, cs.c, cs.k, cs.s);
    let mut idx = vec![-1i64; b * l * h * k];
    let mut w = vec![0.0; b * l * h * k];
    for bi in 0..b {
        for t in 0..l {
            for g in 0..h {
                let row = |cc: usize| scores[((bi * l + t) * h + g) * c + cc];
                let mut vis: Vec<usize> = (0..c).filter(|&cc| t >= (cc + 1) * s).collect();
                vis.sort_by(|&x, &y| row(y).partial_cmp(&row(x)).unwrap());
                vis.truncate(k);
                vis.sort_by(|x, y| y.cmp(x));
                let sel: Vec<f64> = vis.iter().map(|&cc| row(cc)).collect();
                let ws: Vec<f64> = match weighting {
                    ChunkWeighting::StickBreaking => {
                        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
                        let mut rest = 1.0;
                        sel.iter()
                            .map(|&x| {
                                let wk = sig(x) * rest;
                                rest *= 1.0 - sig(x);
                                wk
                            })
                            .collect()
                    }
                    ChunkWeighting::Softmax => {
                        let m = sel.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let z: f64 = sel.iter().map(|x| (x - m).exp()).sum();
                        sel.iter().map(|x| (x - m).exp() / z).collect()
                    }
                };
                for (slot, (&cc, &wk)) in vis.iter().zip(&ws).enumerate() {
                    let o = ((bi * l + t) * h + g) * k + slot;
                    idx[o] = cc as i64;
                    w[o] = wk;
                }
            }
        }
    }
    (idx, w)
}

/// Spec §4 by loops.
fn naive_hsa(
    q: &[f64],
    kk: &[f64],
    v: &[f64],
    idx: &[i64],
    w: &[f64],
    cs: &HsaCase,
    n: f64,
) -> Vec<f64> {
    let (b, l, hq, hkv, dh, s, k) = (cs.b, cs.l, cs.hq, cs.hkv, cs.dh, cs.s, cs.k);
    let grp = hq / hkv;
    let mut out = vec![0.0; b * l * hq * dh];
    for bi in 0..b {
        for t in 0..l {
            for j in 0..hq {
                let g = j / grp;
                for slot in 0..k {
                    let o = ((bi * l + t) * hkv + g) * k + slot;
                    if idx[o] < 0 {
                        continue;
                    }
                    let c = idx[o] as usize;
                    let logits: Vec<f64> = (0..s)
                        .map(|r| {
                            let pos = c * s + r;
                            (0..dh)
                                .map(|e| {
                                    q[((bi * l + t) * hq + j) * dh + e]
                                        * kk[((bi * l + pos) * hkv + g) * dh + e]
                                })
                                .sum::<f64>()
                                / (dh as f64).sqrt()
                        })
                        .collect();
                    let m = logits.iter().cloned().fold(0.0f64, f64::max);
                    let z: f64 = logits.iter().map(|x| (x - m).exp()).sum::<f64>() + n * (-m).exp();
                    for e in 0..dh {
                        let ov: f64 = (0..s)
                            .map(|r| {
                                (logits[r] - m).exp() / z
                                    * v[((bi * l + c * s + r) * hkv + g) * dh + e]
                            })
                            .sum();
                        out[((bi * l + t) * hq + j) * dh + e] += w[o] * ov;
                    }
                }
            }
        }
    }
    out
}

fn int_tensor<B: Backend>(v: &[i64], shape: [usize; 4], device: &B::Device) -> Tensor<B, 4, Int> {
    Tensor::from_data(
        TensorData::new(v.to_vec(), shape).convert::<B::IntElem>(),
        device,
    )
}

/// Host scores `<q_t, lmk_c> / √d_r`, `[b][t][g][c]` flattened, from `queries [b, l, h, dr]`
/// and `landmarks [b, c, h, dr]`.
fn host_scores(qr: &[f64], lmk: &[f64], cs: &HsaCase, dr: usize) -> Vec<f64> {
    let (b, l, h, c) = (cs.b, cs.l, cs.hkv, cs.c);
    let mut out = vec![0.0; b * l * h * c];
    for bi in 0..b {
        for t in 0..l {
            for g in 0..h {
                for cc in 0..c {
                    let q = &qr[((bi * l + t) * h + g) * dr..][..dr];
                    let m = &lmk[((bi * c + cc) * h + g) * dr..][..dr];
                    let dot: f64 = q.iter().zip(m).map(|(x, y)| x * y).sum();
                    out[((bi * l + t) * h + g) * c + cc] = dot / (dr as f64).sqrt();
                }
            }
        }
    }
    out
}

fn selection_options(cs: &HsaCase, weighting: ChunkWeighting) -> SelectionOptions {
    SelectionOptions {
        chunk_size: cs.s,
        top_k: cs.k,
        weighting,
        query_start: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// HSA

/// One token, one chunk, d_h = 1: softmax([0, ln 3]) = [1/4, 3/4] over v = [2, 6] gives 5,
/// times weight 0.5 is 2.5; off-by-one divides by 1 + 1 + 3 instead: (2 + 18)/5 · 0.5 = 2.0.
fn hsa_hand_computed<B: RambaBackend>(device: &B::Device) {
    let ln3 = 3f64.ln();
    let q = from_vec::<B, 4>(vec![0.0, 0.0, 1.0], [1, 3, 1, 1], device);
    let k = from_vec::<B, 4>(vec![0.0, ln3, 0.0], [1, 3, 1, 1], device);
    let v = from_vec::<B, 4>(vec![2.0, 6.0, 0.0], [1, 3, 1, 1], device);
    let idx = int_tensor::<B>(&[-1, -1, 0], [1, 3, 1, 1], device);
    let w = from_vec::<B, 4>(vec![0.9, 0.9, 0.5], [1, 3, 1, 1], device);
    for (off, want) in [(false, 2.5), (true, 2.0)] {
        let opts = HsaOptions {
            chunk_size: 2,
            softmax_off_by_one: off,
        };
        let out = to_vec(hsa::hsa(
            q.clone(),
            k.clone(),
            v.clone(),
            idx.clone(),
            w.clone(),
            opts,
        ));
        // Tokens 0 and 1 have no valid slot: exactly zero even with a non-zero weight.
        assert_eq!(&out[..2], &[0.0, 0.0]);
        assert!(
            (out[2] - want).abs() < 1e-6,
            "off_by_one={off}: {} != {want}",
            out[2]
        );
    }
}

fn hsa_case<B: RambaBackend>(
    device: &B::Device,
    cs: HsaCase,
    weighting: ChunkWeighting,
    off: bool,
    seed: u64,
) {
    let mut r = rng(seed);
    let qv = random_vec(&mut r, cs.b * cs.l * cs.hq * cs.dh, 1.0);
    let kv = random_vec(&mut r, cs.b * cs.l * cs.hkv * cs.dh, 1.0);
    let vv = random_vec(&mut r, cs.b * cs.l * cs.hkv * cs.dh, 1.0);
    let dr = 6;
    let qr = random_vec(&mut r, cs.b * cs.l * cs.hkv * dr, 1.5);
    let lmk = random_vec(&mut r, cs.b * cs.c * cs.hkv * dr, 1.5);
    let sv = host_scores(&qr, &lmk, &cs, dr);
    let (nidx, nw) = naive_select(&sv, &cs, weighting);
    let want = naive_hsa(&qv, &kv, &vv, &nidx, &nw, &cs, if off { 1.0 } else { 0.0 });

    let sel = selection::select_chunks(
        from_vec::<B, 4>(qr, [cs.b, cs.l, cs.hkv, dr], device),
        from_vec(lmk, [cs.b, cs.c, cs.hkv, dr], device),
        selection_options(&cs, weighting),
    );
    let got_idx: Vec<i64> = sel
        .indices
        .clone()
        .into_data()
        .convert::<i64>()
        .to_vec()
        .unwrap();
    assert_eq!(got_idx, nidx, "selected indices");
    assert!(
        rel_err_vec(&to_vec(sel.weights.clone()), &nw) < TOL_F32,
        "weights"
    );

    let out = hsa::hsa(
        from_vec(qv, [cs.b, cs.l, cs.hq, cs.dh], device),
        from_vec(kv, [cs.b, cs.l, cs.hkv, cs.dh], device),
        from_vec(vv, [cs.b, cs.l, cs.hkv, cs.dh], device),
        sel.indices,
        sel.weights,
        HsaOptions {
            chunk_size: cs.s,
            softmax_off_by_one: off,
        },
    );
    let out = to_vec(out);
    assert!(out.iter().all(|x| x.is_finite()));
    let err = rel_err_vec(&out, &want);
    assert!(err < TOL_F32, "hsa rel err {err}");
    // Tokens of the first chunk see nothing: exactly zero.
    let row = cs.hq * cs.dh;
    for bi in 0..cs.b {
        let start = bi * cs.l * row;
        assert!(out[start..start + cs.s.min(cs.l) * row]
            .iter()
            .all(|&x| x == 0.0));
    }
}

/// G = 16 (the 370M layout), ragged length (L = 45 with S = 8), stick-breaking.
fn hsa_matches_naive_g16<B: RambaBackend>(device: &B::Device) {
    let cs = HsaCase {
        b: 2,
        l: 45,
        hq: 16,
        hkv: 1,
        dh: 8,
        s: 8,
        k: 3,
        c: 5,
    };
    hsa_case::<B>(device, cs, ChunkWeighting::StickBreaking, false, 1);
}

/// G = 1, two KV heads each selecting its own chunks, softmax weights, off-by-one.
fn hsa_matches_naive_g1<B: RambaBackend>(device: &B::Device) {
    let cs = HsaCase {
        b: 1,
        l: 40,
        hq: 2,
        hkv: 2,
        dh: 4,
        s: 4,
        k: 4,
        c: 10,
    };
    hsa_case::<B>(device, cs, ChunkWeighting::Softmax, true, 2);
}

/// K larger than the number of chunks: every token has fewer visible chunks than K.
fn hsa_fewer_chunks_than_k<B: RambaBackend>(device: &B::Device) {
    let cs = HsaCase {
        b: 1,
        l: 19,
        hq: 4,
        hkv: 2,
        dh: 4,
        s: 6,
        k: 8,
        c: 3,
    };
    hsa_case::<B>(device, cs, ChunkWeighting::StickBreaking, false, 3);
}

/// L shorter than one chunk: no chunk exists, the output is zero.
fn hsa_no_complete_chunk<B: RambaBackend>(device: &B::Device) {
    let mut r = rng(4);
    let q = random::<B, 4>(&mut r, [1, 5, 2, 4], 1.0, device);
    let k = random::<B, 4>(&mut r, [1, 5, 1, 4], 1.0, device);
    let sel = selection::select_chunks(
        random::<B, 4>(&mut r, [1, 5, 1, 3], 1.0, device),
        Tensor::zeros([1, 0, 1, 3], device),
        SelectionOptions {
            chunk_size: 8,
            top_k: 2,
            weighting: ChunkWeighting::StickBreaking,
            query_start: 0,
        },
    );
    assert_eq!(sel.indices.dims(), [1, 5, 1, 2]);
    let out = hsa::hsa(
        q,
        k.clone(),
        k,
        sel.indices,
        sel.weights,
        HsaOptions {
            chunk_size: 8,
            softmax_off_by_one: false,
        },
    );
    assert!(to_vec(out).iter().all(|&x| x == 0.0));
}

/// `exp(s_k − Σ_{i≤k} softplus(s_i))` equals `σ(s_k) Π_{i<k}(1 − σ(s_i))`, also for large |s|.
fn stick_breaking_closed_form<B: RambaBackend>(device: &B::Device) {
    let s = vec![3.0, -2.0, 0.5, 40.0, -30.0, 1.0];
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let mut rest = 1.0;
    let mut want = vec![];
    for (i, &x) in s.iter().enumerate() {
        want.push(if i < 5 { sig(x) * rest } else { 0.0 });
        rest *= 1.0 - sig(x);
    }
    let valid = Tensor::<B, 1, Int>::from_data(
        TensorData::new(vec![1i64, 1, 1, 1, 1, 0], [6]).convert::<B::IntElem>(),
        device,
    )
    .equal_elem(1);
    let got = selection::chunk_weights(
        from_vec::<B, 1>(s, [6], device),
        valid,
        ChunkWeighting::StickBreaking,
    );
    let got = to_vec(got);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    assert!(got.iter().sum::<f64>() <= 1.0 + 1e-6);

    // An invalid slot's score is whatever the gather read (chunk 0's score, for a token that sees
    // no chunk); however large, it must give weight 0, not exp(overflow) · 0 = NaN.
    for weighting in [ChunkWeighting::StickBreaking, ChunkWeighting::Softmax] {
        let valid = Tensor::<B, 1, Int>::from_data(
            TensorData::new(vec![1i64, 0, 0], [3]).convert::<B::IntElem>(),
            device,
        )
        .equal_elem(1);
        let got = to_vec(selection::chunk_weights(
            from_vec::<B, 1>(vec![2.0, 500.0, 95.0], [3], device),
            valid,
            weighting,
        ));
        let first = if weighting == ChunkWeighting::StickBreaking {
            sig(2.0)
        } else {
            1.0
        };
        assert!((got[0] - first).abs() < 1e-6, "{weighting:?}: {got:?}");
        assert_eq!(&got[1..], &[0.0, 0.0], "{weighting:?}: {got:?}");
    }
}

/// Perturbing q, k, v and the retrieval queries at positions ≥ t, and the landmarks of chunks
/// not complete before t, leaves outputs < t unchanged.
fn hsa_is_causal<B: RambaBackend>(device: &B::Device) {
    let (b, l, hq, hkv, dh, s, c, dr) = (1, 32, 4, 2, 4, 4, 8, 5);
    let t = 19;
    let mut r = rng(5);
    let inputs = |r: &mut rand::rngs::StdRng| {
        (
            random_vec(r, b * l * hq * dh, 1.0),
            random_vec(r, b * l * hkv * dh, 1.0),
            random_vec(r, b * l * hkv * dh, 1.0),
            random_vec(r, b * l * hkv * dr, 1.0),
            random_vec(r, b * c * hkv * dr, 1.0),
        )
    };
    type Inputs = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);
    let run = |(q, k, v, qr, lmk): Inputs| {
        let sel = selection::select_chunks(
            from_vec::<B, 4>(qr, [b, l, hkv, dr], device),
            from_vec(lmk, [b, c, hkv, dr], device),
            SelectionOptions {
                chunk_size: s,
                top_k: 3,
                weighting: ChunkWeighting::StickBreaking,
                query_start: 0,
            },
        );
        to_vec(hsa::hsa(
            from_vec(q, [b, l, hq, dh], device),
            from_vec(k, [b, l, hkv, dh], device),
            from_vec(v, [b, l, hkv, dh], device),
            sel.indices,
            sel.weights,
            HsaOptions {
                chunk_size: s,
                softmax_off_by_one: false,
            },
        ))
    };
    let base = inputs(&mut r);
    let mut other = inputs(&mut r);
    // Keep everything before t, change everything from t on.
    let keep = |x: &[f64], y: &mut Vec<f64>, per: usize, n: usize| {
        y[..n * per].copy_from_slice(&x[..n * per])
    };
    keep(&base.0, &mut other.0, hq * dh, t);
    keep(&base.1, &mut other.1, hkv * dh, t);
    keep(&base.2, &mut other.2, hkv * dh, t);
    keep(&base.3, &mut other.3, hkv * dr, t);
    keep(&base.4, &mut other.4, hkv * dr, t / s);
    let (x, y) = (run(base), run(other));
    let n = t * hq * dh;
    assert_eq!(&x[..n], &y[..n], "outputs before t changed");
    assert_ne!(&x[n..], &y[n..], "the perturbation must matter after t");
}

/// Chunk-unaware selection selects what chunk-aware selection does, and its compression
/// readout is causal and matches a naive loop: token `t` averages the mean-pooled values of the
/// chunks before it, weighted by the softmax of its scores; a change to a later chunk changes
/// nothing before that chunk is complete.
fn chunk_unaware_selection_is_causal_and_matches_naive<B: RambaBackend>(device: &B::Device) {
    let (l, h, dr, dh, s, k) = (18, 2, 3, 2, 4, 2);
    let c = l / s;
    let options = SelectionOptions {
        chunk_size: s,
        top_k: k,
        weighting: ChunkWeighting::Softmax,
        query_start: 0,
    };
    let mut r = rng(21);
    let (qv, lv, vv) = (
        random_vec(&mut r, l * h * dr, 1.0),
        random_vec(&mut r, c * h * dr, 1.0),
        random_vec(&mut r, l * h * dh, 1.0),
    );
    let run = |lv: &[f64], vv: &[f64]| {
        let q = from_vec::<B, 4>(qv.clone(), [1, l, h, dr], device);
        let lmk = from_vec::<B, 4>(lv.to_vec(), [1, c, h, dr], device);
        let v = from_vec::<B, 4>(vv.to_vec(), [1, l, h, dh], device);
        let aware = selection::select_chunks(q.clone(), lmk.clone(), options);
        let sel = selection::unaware::select_chunks_unaware(q, lmk, v, options);
        let same: Vec<i64> = aware.indices.into_data().convert::<i64>().to_vec().unwrap();
        let got: Vec<i64> = sel.indices.into_data().convert::<i64>().to_vec().unwrap();
        assert_eq!(same, got, "the same chunks as chunk-aware selection");
        assert!(
            rel_err(aware.weights, sel.weights) < 1e-6,
            "the same weights"
        );
        to_vec(sel.compressed.unwrap())
    };
    let got = run(&lv, &vv);
    for t in 0..l {
        for hd in 0..h {
            let seen = (t / s).min(c);
            let score = |ci: usize| -> f64 {
                (0..dr)
                    .map(|j| qv[(t * h + hd) * dr + j] * lv[(ci * h + hd) * dr + j])
                    .sum::<f64>()
                    / (dr as f64).sqrt()
            };
            let max = (0..seen).map(score).fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = (0..seen).map(|ci| (score(ci) - max).exp()).sum();
            for j in 0..dh {
                let want: f64 = (0..seen)
                    .map(|ci| {
                        let mean = (0..s)
                            .map(|u| vv[((ci * s + u) * h + hd) * dh + j])
                            .sum::<f64>()
                            / s as f64;
                        (score(ci) - max).exp() / z * mean
                    })
                    .sum();
                let g = got[(t * h + hd) * dh + j];
                assert!(
                    (g - want).abs() < 1e-4,
                    "t {t} head {hd} dim {j}: {g} vs {want}"
                );
            }
        }
    }
    // Perturb chunk 2 (tokens 8..12, landmark 2): tokens before 12 cannot see it.
    let (mut lv2, mut vv2) = (lv.clone(), vv.clone());
    for x in &mut lv2[2 * h * dr..3 * h * dr] {
        *x += 3.0;
    }
    for x in &mut vv2[8 * h * dh..12 * h * dh] {
        *x -= 2.0;
    }
    let moved = run(&lv2, &vv2);
    let n = 12 * h * dh;
    assert_eq!(
        &got[..n],
        &moved[..n],
        "outputs before chunk 2 is complete changed"
    );
    assert_ne!(
        &got[n..],
        &moved[n..],
        "the perturbation must matter after it"
    );
}

/// Validity comes from the chunk id, not the score: with every visible score `-inf`, no
/// invisible (future) chunk may appear in a valid slot.
fn selection_never_leaks_future_chunks<B: RambaBackend>(device: &B::Device) {
    let (l, s, c, k) = (24, 4, 6, 4);
    // Scores are <q, lmk> / √1: q = 1, landmarks -inf for visible chunks... every chunk gets
    // -inf, so only the chunk id can decide.
    let qr = from_vec::<B, 4>(vec![1.0; l], [1, l, 1, 1], device);
    let lmk = from_vec::<B, 4>(vec![f64::NEG_INFINITY; c], [1, c, 1, 1], device);
    let sel = selection::select_chunks(
        qr,
        lmk,
        SelectionOptions {
            chunk_size: s,
            top_k: k,
            weighting: ChunkWeighting::Softmax,
            query_start: 0,
        },
    );
    let idx: Vec<i64> = sel.indices.into_data().convert::<i64>().to_vec().unwrap();
    for t in 0..l {
        for slot in 0..k {
            let ci = idx[t * k + slot];
            assert!(
                ci < (t / s) as i64,
                "token {t} slot {slot}: chunk {ci} is not visible (t/S = {})",
                t / s
            );
        }
    }
    assert!(to_vec(sel.weights).iter().all(|w| !w.is_nan()));
}

/// The fused selection (wgpu) and the reference select the same chunks on random inputs
/// (no ties), including a query offset; ragged L, several heads, batch > 1.
fn selection_matches_reference<B: RambaBackend>(device: &B::Device) {
    let (b, l, h, dr, s, k) = (2, 75, 2, 40, 4, 5);
    let c = l / s;
    let mut r = rng(21);
    for query_start in [0usize, 13] {
        let qr = random::<B, 4>(&mut r, [b, l, h, dr], 1.0, device);
        let lmk = random::<B, 4>(&mut r, [b, c, h, dr], 1.0, device);
        let options = SelectionOptions {
            chunk_size: s,
            top_k: k,
            weighting: ChunkWeighting::StickBreaking,
            query_start,
        };
        let got = Tensor::<B, 4, Int>::from_primitive(B::select_chunks(
            qr.clone().into_primitive().tensor(),
            lmk.clone().into_primitive().tensor(),
            options,
        ));
        let want = selection::reference::select_chunks(qr, lmk, options);
        let got: Vec<i64> = got.into_data().convert::<i64>().to_vec().unwrap();
        let want: Vec<i64> = want.into_data().convert::<i64>().to_vec().unwrap();
        assert_eq!(got, want, "query_start {query_start}");
    }
}

// ---------------------------------------------------------------------------------------------
// Selective scan

struct ScanCase {
    b: usize,
    l: usize,
    h: usize,
    p: usize,
    g: usize,
    n: usize,
}

struct ScanInputs {
    x: Vec<f64>,
    delta: Vec<f64>,
    a: Vec<f64>,
    bm: Vec<f64>,
    cm: Vec<f64>,
    d: Vec<f64>,
    init: Vec<f64>,
}

fn scan_inputs(cs: &ScanCase, seed: u64) -> ScanInputs {
    let mut r = rng(seed);
    ScanInputs {
        x: random_vec(&mut r, cs.b * cs.l * cs.h * cs.p, 1.0),
        delta: random_vec(&mut r, cs.b * cs.l * cs.h, 1.0)
            .iter()
            .map(|x| 0.05 + x.abs() * 0.2)
            .collect(),
        a: random_vec(&mut r, cs.h, 1.0)
            .iter()
            .map(|x| -0.5 - x.abs())
            .collect(),
        bm: random_vec(&mut r, cs.b * cs.l * cs.g * cs.n, 1.0),
        cm: random_vec(&mut r, cs.b * cs.l * cs.g * cs.n, 1.0),
        d: random_vec(&mut r, cs.h, 1.0),
        init: random_vec(&mut r, cs.b * cs.h * cs.p * cs.n, 1.0),
    }
}

/// The recurrence, one step at a time. Returns (y, final state).
fn naive_scan(cs: &ScanCase, i: &ScanInputs, with_init: bool) -> (Vec<f64>, Vec<f64>) {
    let (b, l, h, p, g, n) = (cs.b, cs.l, cs.h, cs.p, cs.g, cs.n);
    let mut state = if with_init {
        i.init.clone()
    } else {
        vec![0.0; b * h * p * n]
    };
    let mut y = vec![0.0; b * l * h * p];
    for bi in 0..b {
        for t in 0..l {
            for hh in 0..h {
                let gg = hh / (h / g);
                let dt = i.delta[(bi * l + t) * h + hh];
                let decay = (dt * i.a[hh]).exp();
                for pp in 0..p {
                    let xv = i.x[((bi * l + t) * h + hh) * p + pp];
                    let mut acc = 0.0;
                    for nn in 0..n {
                        let si = ((bi * h + hh) * p + pp) * n + nn;
                        let bv = i.bm[((bi * l + t) * g + gg) * n + nn];
                        let cv = i.cm[((bi * l + t) * g + gg) * n + nn];
                        state[si] = decay * state[si] + dt * bv * xv;
                        acc += cv * state[si];
                    }
                    y[((bi * l + t) * h + hh) * p + pp] = acc + i.d[hh] * xv;
                }
            }
        }
    }
    (y, state)
}

fn run_scan<B: RambaBackend>(
    cs: &ScanCase,
    i: &ScanInputs,
    range: std::ops::Range<usize>,
    init: Option<Vec<f64>>,
    chunk: usize,
    device: &B::Device,
) -> (Vec<f64>, Vec<f64>) {
    let (b, l, h, p, g, n) = (cs.b, cs.l, cs.h, cs.p, cs.g, cs.n);
    let len = range.len();
    let cut = |v: &[f64], per: usize| -> Vec<f64> {
        (0..b)
            .flat_map(|bi| v[(bi * l + range.start) * per..(bi * l + range.end) * per].to_vec())
            .collect()
    };
    let (y, st) = scan::selective_scan::<B>(
        from_vec(cut(&i.x, h * p), [b, len, h, p], device),
        from_vec(cut(&i.delta, h), [b, len, h], device),
        from_vec(i.a.clone(), [h], device),
        from_vec(cut(&i.bm, g * n), [b, len, g, n], device),
        from_vec(cut(&i.cm, g * n), [b, len, g, n], device),
        from_vec(i.d.clone(), [h], device),
        init.map(|s| from_vec(s, [b, h, p, n], device)),
        ScanOptions { chunk_size: chunk },
    );
    (to_vec(y), to_vec(st))
}

/// Chunked scan = step-by-step recurrence, with and without an initial state, for a chunk that
/// divides L, one that does not, and one longer than L.
fn scan_matches_recurrence<B: RambaBackend>(device: &B::Device) {
    let cs = ScanCase {
        b: 2,
        l: 37,
        h: 4,
        p: 3,
        g: 2,
        n: 5,
    };
    let inp = scan_inputs(&cs, 7);
    for with_init in [false, true] {
        let (want_y, want_s) = naive_scan(&cs, &inp, with_init);
        for chunk in [8, 37, 64] {
            let init = with_init.then(|| inp.init.clone());
            let (y, s) = run_scan::<B>(&cs, &inp, 0..cs.l, init, chunk, device);
            let (ey, es) = (rel_err_vec(&y, &want_y), rel_err_vec(&s, &want_s));
            assert!(
                ey < TOL_F32 && es < TOL_F32,
                "init={with_init} chunk={chunk}: y {ey}, state {es}"
            );
        }
    }
}

/// Two halves with the state carried = the whole sequence.
fn scan_state_carries<B: RambaBackend>(device: &B::Device) {
    let cs = ScanCase {
        b: 1,
        l: 30,
        h: 2,
        p: 4,
        g: 1,
        n: 3,
    };
    let inp = scan_inputs(&cs, 8);
    let (whole_y, whole_s) = run_scan::<B>(&cs, &inp, 0..30, Some(inp.init.clone()), 8, device);
    let (y1, s1) = run_scan::<B>(&cs, &inp, 0..13, Some(inp.init.clone()), 8, device);
    let (y2, s2) = run_scan::<B>(&cs, &inp, 13..30, Some(s1), 8, device);
    let joined: Vec<f64> = y1.into_iter().chain(y2).collect();
    assert!(rel_err_vec(&joined, &whole_y) < TOL_F32);
    assert!(rel_err_vec(&s2, &whole_s) < TOL_F32);
}

// ---------------------------------------------------------------------------------------------
// Causal conv1d

fn conv_matches_naive_and_carries_state<B: RambaBackend>(device: &B::Device) {
    let (b, l, d, w) = (2, 9, 3, 4);
    let mut r = rng(11);
    let x = random_vec(&mut r, b * l * d, 1.0);
    let wt = random_vec(&mut r, d * w, 1.0);
    let bias = random_vec(&mut r, d, 1.0);
    let init = random_vec(&mut r, b * d * (w - 1), 1.0);
    // Naive: y[t] = bias + Σ_i w[i] · x̃[t + i], x̃ = init ++ x.
    let mut want = vec![0.0; b * l * d];
    for bi in 0..b {
        for ch in 0..d {
            let hist: Vec<f64> = (0..w - 1)
                .map(|j| init[(bi * d + ch) * (w - 1) + j])
                .chain((0..l).map(|t| x[(bi * l + t) * d + ch]))
                .collect();
            for t in 0..l {
                want[(bi * l + t) * d + ch] =
                    bias[ch] + (0..w).map(|i| wt[ch * w + i] * hist[t + i]).sum::<f64>();
            }
        }
    }
    let run = |xs: Vec<f64>, len: usize, st: Vec<f64>| {
        let (y, s) = conv::causal_conv1d::<B>(
            from_vec(xs, [b, len, d], device),
            from_vec(wt.clone(), [d, w], device),
            Some(from_vec(bias.clone(), [d], device)),
            Some(from_vec(st, [b, d, w - 1], device)),
        );
        (to_vec(y), to_vec(s))
    };
    let (y, _) = run(x.clone(), l, init.clone());
    assert!(rel_err_vec(&y, &want) < TOL_F32);
    let split = |lo: usize, hi: usize| -> Vec<f64> {
        (0..b)
            .flat_map(|bi| x[(bi * l + lo) * d..(bi * l + hi) * d].to_vec())
            .collect()
    };
    let (y1, s1) = run(split(0, 2), 2, init.clone());
    let (y2, _) = run(split(2, l), l - 2, s1);
    let joined: Vec<f64> = (0..b)
        .flat_map(|bi| {
            y1[bi * 2 * d..(bi + 1) * 2 * d]
                .iter()
                .chain(&y2[bi * (l - 2) * d..(bi + 1) * (l - 2) * d])
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        rel_err_vec(&joined, &want) < TOL_F32,
        "two segments with carried state"
    );
}

// Direct use of the module functions too (not only through the trait).
#[test]
fn module_functions_are_the_trait_defaults() {
    let device = Default::default();
    let mut r = rng(12);
    let x = random::<TestCpu, 3>(&mut r, [1, 5, 2], 1.0, &device);
    let w = random::<TestCpu, 2>(&mut r, [2, 4], 1.0, &device);
    let (a, _) = conv::reference::causal_conv1d(x.clone(), w.clone(), None, None);
    let (b, _) = conv::causal_conv1d::<TestCpu>(x, w, None, None);
    assert_eq!(to_vec(a), to_vec(b));
    let (y1, s1) = scan::reference::selective_scan(
        random::<TestCpu, 4>(&mut r, [1, 6, 2, 3], 1.0, &device),
        random::<TestCpu, 3>(&mut r, [1, 6, 2], 0.3, &device).abs(),
        from_vec::<TestCpu, 1>(vec![-0.5, -1.0], [2], &device),
        random::<TestCpu, 4>(&mut r, [1, 6, 1, 4], 1.0, &device),
        random::<TestCpu, 4>(&mut r, [1, 6, 1, 4], 1.0, &device),
        from_vec::<TestCpu, 1>(vec![0.3, 0.1], [2], &device),
        None,
        ScanOptions { chunk_size: 4 },
    );
    assert_eq!(y1.dims(), [1, 6, 2, 3]);
    assert_eq!(s1.dims(), [1, 2, 3, 4]);
}

/// The loss node (kept under every `Autodiff`) against `log_softmax` and a gather differentiated
/// by autodiff: loss and logits gradient on random logits, weights with zeros and answer-like
/// weights above 1; and the blockwise passes with blocks of 5 rows (ragged last block) against
/// the same.
fn cross_entropy_node_matches_log_softmax<B: RambaBackend>(device: &B::Device) {
    use burn::backend::Autodiff;
    use ramba_core::ops::cross_entropy::{self, reference};
    type Ad<B> = Autodiff<B>;
    let (n, vocab) = (37, 23);
    let mut r = rng(41);
    let logits = random::<Ad<B>, 2>(&mut r, [n, vocab], 3.0, device);
    let targets = Tensor::<Ad<B>, 1, Int>::from_data(
        TensorData::new(
            random_vec(&mut r, n, 1.0)
                .iter()
                .map(|x| ((x.abs() * 1e3) as i64) % vocab as i64)
                .collect::<Vec<_>>(),
            [n],
        )
        .convert::<B::IntElem>(),
        device,
    );
    let weights: Vec<f64> = (0..n).map(|i| [0.0, 1.0, 1.0, 4.0][i % 4]).collect();
    let weights = from_vec::<Ad<B>, 1>(weights, [n], device);

    let leaf = logits.clone().require_grad();
    let want = reference::cross_entropy(leaf.clone(), targets.clone(), weights.clone());
    let want_grad = leaf.grad(&want.backward()).unwrap();
    let leaf = logits.clone().require_grad();
    let got = cross_entropy::cross_entropy(leaf.clone(), targets.clone(), weights.clone());
    let got_grad = leaf.grad(&got.backward()).unwrap();
    let loss_err = rel_err(got.inner(), want.clone().inner());
    assert!(loss_err < 1e-6, "loss: relative error {loss_err:.3e}");
    let grad_err = rel_err(got_grad, want_grad.clone());
    assert!(
        grad_err < TOL_F32,
        "gradient: relative error {grad_err:.3e}"
    );

    let (z, t, w) = (logits.inner(), targets.inner(), weights.inner());
    let fwd = reference::forward_blockwise(z.clone(), t.clone(), w.clone(), 5);
    let grad =
        reference::backward_blockwise(z, t, w, fwd.lse, fwd.total, Tensor::ones([1], device), 5);
    let grad_err = rel_err(grad, want_grad);
    assert!(
        grad_err < TOL_F32,
        "blocks of 5: gradient relative error {grad_err:.3e}"
    );
    let loss_err = rel_err(fwd.loss, want.inner());
    assert!(
        loss_err < 1e-6,
        "blocks of 5: loss relative error {loss_err:.3e}"
    );
}

/// The RMSNorm, gated RMSNorm, SiLU and `softplus(dt + bias)` nodes against the same functions composed of
/// differentiable ops: outputs and the gradients of every input (the norms' scale included)
/// for a random output gradient. The nodes exist where the backend fuses them (wgpu here);
/// on the CPU backend both sides are the reference, and this checks the op-level wrappers.
fn norm_nodes_match_their_reference<B: RambaBackend>(device: &B::Device) {
    use burn::backend::Autodiff;
    use ramba_core::ops::activation;
    use ramba_core::ops::norm::{self, reference};
    type Ad<B> = Autodiff<B>;
    // A row narrower than a kernel's cube and fewer rows than a backward cube walks; then
    // ragged multiples of both.
    for (rows, d) in [(7, 10), (70, 300)] {
        let eps = 1e-5;
        let mut r = rng(43);
        let x = random::<Ad<B>, 2>(&mut r, [rows, d], 1.5, device);
        let z = random::<Ad<B>, 2>(&mut r, [rows, d], 2.0, device);
        let gamma = random::<Ad<B>, 1>(&mut r, [d], 1.0, device).add_scalar(1.0);
        let dy = random::<Ad<B>, 2>(&mut r, [rows, d], 1.0, device);
        let close = |name: &str, got: Tensor<B, 2>, want: Tensor<B, 2>| {
            let err = rel_err(got, want);
            assert!(err < TOL_F32, "{name}: relative error {err:.3e}");
        };
        let close1 = |name: &str, got: Tensor<B, 1>, want: Tensor<B, 1>| {
            let err = rel_err(got, want);
            assert!(err < TOL_F32, "{name}: relative error {err:.3e}");
        };

        // RMSNorm: node vs reference, y, dx, dγ.
        let run = |node: bool| {
            let (x, g) = (x.clone().require_grad(), gamma.clone().require_grad());
            let y = if node {
                norm::rms_norm(x.clone(), g.clone(), eps)
            } else {
                reference::rms_norm(x.clone(), g.clone(), eps)
            };
            let grads = (y.clone() * dy.clone()).sum().backward();
            (y.inner(), x.grad(&grads).unwrap(), g.grad(&grads).unwrap())
        };
        let ((y, dx, dg), (wy, wdx, wdg)) = (run(true), run(false));
        close("rms_norm y", y, wy);
        close("rms_norm dx", dx, wdx);
        close1("rms_norm dgamma", dg, wdg);

        // Gated RMSNorm: y, dx, dz, dγ.
        let run = |node: bool| {
            let (x, z, g) = (
                x.clone().require_grad(),
                z.clone().require_grad(),
                gamma.clone().require_grad(),
            );
            let y = if node {
                norm::gated_rms_norm(x.clone(), z.clone(), g.clone(), eps)
            } else {
                reference::gated_rms_norm(x.clone(), z.clone(), g.clone(), eps)
            };
            let grads = (y.clone() * dy.clone()).sum().backward();
            (
                y.inner(),
                x.grad(&grads).unwrap(),
                z.grad(&grads).unwrap(),
                g.grad(&grads).unwrap(),
            )
        };
        let ((y, dx, dz, dg), (wy, wdx, wdz, wdg)) = (run(true), run(false));
        close("gated y", y, wy);
        close("gated dx", dx, wdx);
        close("gated dz", dz, wdz);
        close1("gated dgamma", dg, wdg);

        // SiLU on a rank-2 input (flattened by the op and shaped back).
        let run = |node: bool| {
            let z = z.clone().require_grad();
            let y = if node {
                norm::silu(z.clone())
            } else {
                reference::silu(z.clone().reshape([rows * d])).reshape([rows, d])
            };
            let grads = (y.clone() * dy.clone()).sum().backward();
            (y.inner(), z.grad(&grads).unwrap())
        };
        let ((y, dz), (wy, wdz)) = (run(true), run(false));
        close("silu y", y, wy);
        close("silu dx", dz, wdz);

        // Mamba-2's step size softplus(dt + bias): Δ, d_dt and the bias gradient.
        let run = |node: bool| {
            let (dt, bias) = (z.clone().require_grad(), gamma.clone().require_grad());
            let y = if node {
                activation::biased_softplus(dt.clone(), bias.clone(), burn::tensor::DType::F32)
            } else {
                activation::softplus(dt.clone() + bias.clone().unsqueeze())
            };
            let grads = (y.clone() * dy.clone()).sum().backward();
            (
                y.inner(),
                dt.grad(&grads).unwrap(),
                bias.grad(&grads).unwrap(),
            )
        };
        let ((y, ddt, db), (wy, wddt, wdb)) = (run(true), run(false));
        close("softplus y", y, wy);
        close("softplus d_dt", ddt, wddt);
        close1("softplus d_bias", db, wdb);
    }
}

backend_tests!(
    norm_nodes_match_their_reference,
    cross_entropy_node_matches_log_softmax,
    hsa_hand_computed,
    hsa_matches_naive_g16,
    hsa_matches_naive_g1,
    hsa_fewer_chunks_than_k,
    hsa_no_complete_chunk,
    stick_breaking_closed_form,
    hsa_is_causal,
    selection_never_leaks_future_chunks,
    selection_matches_reference,
    chunk_unaware_selection_is_causal_and_matches_naive,
    scan_matches_recurrence,
    scan_state_carries,
    conv_matches_naive_and_carries_state,
);
