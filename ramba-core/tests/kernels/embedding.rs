//! The embedding node (`ops::embedding`): the lookup and the weight gradient formed by grouping
//! tokens by id (`cubecl-kernels/src/embedding.rs`) against Burn's CPU embedding, with repeated
//! ids, ids used once, ids never used (their rows must be exactly zero) and a ragged width.

use super::*;
use ramba_core::ops::embedding::embedding;

/// `(lookup, dE)` of `sum(embedding(E, tokens) · probe)` on `B`, as host vectors.
fn run<B: burn::tensor::backend::AutodiffBackend + RambaBackend>(
    vocab: usize,
    d: usize,
    tokens: &[i64],
    batch: usize,
    device: &B::Device,
) -> [Vec<f64>; 2] {
    let mut r = rng(17);
    let weight = random::<B, 2>(&mut r, [vocab, d], 1.0, device).require_grad();
    let seq = tokens.len() / batch;
    let ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(tokens.to_vec(), [batch, seq]).convert::<B::IntElem>(),
        device,
    );
    let probe = random::<B, 3>(&mut r, [batch, seq, d], 1.0, device);
    let y = embedding(weight.clone(), ids);
    let grads = (y.clone() * probe).sum().backward();
    let dw = weight.grad(&grads).expect("dE");
    [to_vec(y.inner()), to_vec(dw)]
}

#[test]
fn embedding_gradient_matches_reference() {
    let (vocab, d, batch) = (97, 45, 3);
    // Id 5 many times, a few ids once, most ids never (their rows stay zero).
    let tokens: Vec<i64> = (0..batch * 41)
        .map(|i| match i % 4 {
            0 => 5,
            1 => (i as i64 * 7) % vocab as i64,
            2 => 96,
            _ => (i as i64 * 13) % 50,
        })
        .collect();
    poison::<Gpu>(&[[1, 1, vocab, d]], &Default::default());
    let got = run::<AdGpu>(vocab, d, &tokens, batch, &Default::default());
    let want = run::<AdCpu>(vocab, d, &tokens, batch, &Default::default());
    for (name, (g, w)) in ["lookup", "dE"].iter().zip(got.iter().zip(&want)) {
        assert!(g.iter().all(|v| v.is_finite()), "{name}: non-finite values");
        let err = rel_err_vec(g, w);
        assert!(err < TOL, "{name}: relative error {err:.3e}");
    }
    // Rows of ids no token used are exactly zero, not left unwritten.
    let used: std::collections::HashSet<i64> = tokens.iter().copied().collect();
    for v in (0..vocab).filter(|v| !used.contains(&(*v as i64))) {
        assert!(
            got[1][v * d..(v + 1) * d].iter().all(|&x| x == 0.0),
            "row {v} of dE is not zero though no token used it"
        );
    }
    // The same sums in the same order: a second run is bit-identical.
    let again = run::<AdGpu>(vocab, d, &tokens, batch, &Default::default());
    assert_eq!(
        got[1], again[1],
        "the embedding gradient is not deterministic"
    );
}
