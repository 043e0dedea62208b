//! Streaming inference: prefill over segments, then decoding steps, equals one forward over
//! the whole stream, for every architecture; the offloaded chunk store equals the device one.

use burn::prelude::*;
use ramba_core::backend_tests;
use ramba_core::config::ModelConfig;
use ramba_core::model::{LanguageModel, StreamState};
use ramba_core::ops::RambaBackend;
use ramba_core::stream::{ChunkStoreKind, StreamStage};
use ramba_core::testing::*;

const BATCH: usize = 2;
/// Prefill segments: not multiples of the chunk size (8), longer and shorter than the sliding
/// window (6), one of a single token; decoding steps follow up to `LEN`.
const SEGMENTS: [usize; 5] = [5, 1, 11, 8, 3];
const LEN: usize = 40;

/// The test variants with larger weights, so retrieval and attention visibly move the logits.
fn models() -> Vec<(&'static str, ModelConfig)> {
    config_variants()
        .into_iter()
        .map(|(name, mut cfg)| {
            cfg.init_std = 0.1;
            (name, cfg)
        })
        .collect()
}

fn token_ids(vocab: usize) -> Vec<i64> {
    let mut r = rng(11);
    random_vec(&mut r, BATCH * LEN, 1.0)
        .iter()
        .map(|x| ((x.abs() * 1000.0) as i64) % vocab as i64)
        .collect()
}

fn tokens<B: Backend>(ids: &[i64], lo: usize, hi: usize, device: &B::Device) -> Tensor<B, 2, Int> {
    let rows: Vec<i64> = (0..BATCH)
        .flat_map(|b| ids[b * LEN + lo..b * LEN + hi].to_vec())
        .collect();
    Tensor::from_data(
        TensorData::new(rows, [BATCH, hi - lo]).convert::<B::IntElem>(),
        device,
    )
}

fn one_row<B: Backend>(ids: &[i64], device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(
        TensorData::new(ids.to_vec(), [1, ids.len()]).convert::<B::IntElem>(),
        device,
    )
}

/// Logits `[BATCH, LEN, vocab]` of the segments then the steps, in a store of `kind`.
fn streamed<B: RambaBackend>(
    model: &LanguageModel<B>,
    ids: &[i64],
    kind: ChunkStoreKind,
    device: &B::Device,
) -> Tensor<B, 3> {
    streamed_in(model, ids, &mut model.stream_state(kind), device)
}

/// [`streamed`] through a given fresh `state`.
fn streamed_in<B: RambaBackend>(
    model: &LanguageModel<B>,
    ids: &[i64],
    state: &mut StreamState<B>,
    device: &B::Device,
) -> Tensor<B, 3> {
    let mut parts = Vec::new();
    let mut at = 0;
    for n in SEGMENTS {
        parts.push(model.prefill(tokens::<B>(ids, at, at + n, device), state));
        at += n;
    }
    while at < LEN {
        let token = tokens::<B>(ids, at, at + 1, device).reshape([BATCH]);
        parts.push(model.step(token, state).unsqueeze_dim(1));
        at += 1;
    }
    assert_eq!(state.position(), LEN);
    Tensor::cat(parts, 1)
}

/// The first HSA variant of [`models`].
fn hsa_model() -> (&'static str, ModelConfig) {
    models()
        .into_iter()
        .find(|(_, c)| c.arch.has_hsa())
        .expect("an HSA variant")
}

/// For every architecture: segments and steps give the whole forward's logits (1e-4).
fn prefill_and_steps_equal_the_whole_forward<B: RambaBackend>(device: &B::Device) {
    for (name, cfg) in models() {
        let model = cfg.init::<B>(device);
        let ids = token_ids(cfg.vocab_size);
        let whole = model.forward(tokens::<B>(&ids, 0, LEN, device));
        let stream = streamed(&model, &ids, ChunkStoreKind::Device, device);
        let err = rel_err(stream, whole);
        assert!(err < 1e-4, "{name}: streamed logits differ by {err:e}");
        if cfg.arch.has_hsa() {
            let store = ChunkStoreKind::Device;
            let mut state = model.stream_state(store);
            let _ = model.prefill(tokens::<B>(&ids, 0, LEN - 1, device), &mut state);
            let chunks = state.chunk_store().map(|s| s.n_chunks());
            assert_eq!(chunks, Some((LEN - 1) / cfg.hsa.chunk_size), "{name}");
        }
    }
}

/// The offloaded store (keys and values in host memory) gives exactly the device store's
/// logits.
fn offloaded_store_equals_device_store<B: RambaBackend>(device: &B::Device) {
    for (name, cfg) in models().into_iter().filter(|(_, c)| c.arch.has_hsa()) {
        let model = cfg.init::<B>(device);
        let ids = token_ids(cfg.vocab_size);
        let on_device = to_vec(streamed(&model, &ids, ChunkStoreKind::Device, device));
        let offloaded = to_vec(streamed(&model, &ids, ChunkStoreKind::Offloaded, device));
        let worst = on_device
            .iter()
            .zip(&offloaded)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert_eq!(worst, 0.0, "{name}: offloaded logits differ by {worst:e}");
    }
}

/// The offloaded store keeps keys and values on the host, the device store on the device.
#[test]
fn offloaded_store_holds_keys_and_values_on_the_host() {
    let device = Default::default();
    let cfg = config_variants()[0].1.clone();
    let model = cfg.init::<TestCpu>(&device);
    let ids = token_ids(cfg.vocab_size);
    let bytes = |kind| {
        let mut state = model.stream_state(kind);
        let _ = model.prefill(tokens::<TestCpu>(&ids, 0, LEN, &device), &mut state);
        let _ = model.prefill(tokens::<TestCpu>(&ids, 0, LEN, &device), &mut state);
        let store = state.chunk_store().expect("an HSA model");
        (store.device_bytes(), store.host_bytes())
    };
    let (dev_device, dev_host) = bytes(ChunkStoreKind::Device);
    let (off_device, off_host) = bytes(ChunkStoreKind::Offloaded);
    let h = &cfg.hsa;
    // 2·LEN tokens = 10 complete chunks per row: keys and values, f32.
    let tokens_kept = 2 * LEN / h.chunk_size * h.chunk_size;
    let kv = BATCH * 2 * tokens_kept * h.n_kv_heads * h.head_dim * 4;
    assert_eq!(dev_host, 0);
    assert_eq!(off_host, kv);
    assert!(off_device < dev_device, "{off_device} vs {dev_device}");
}

backend_tests!(
    prefill_and_steps_equal_the_whole_forward,
    offloaded_store_equals_device_store
);

/// A later call longer than one pass (4096 tokens) runs in passes and still gives the whole
/// forward's logits.
#[test]
fn a_long_later_segment_equals_the_whole_forward() {
    let device = Default::default();
    let (name, cfg) = hsa_model();
    let model = cfg.init::<TestCpu>(&device);
    let (head, len) = (9, 9 + 4096 + 13);
    let mut r = rng(5);
    let ids: Vec<i64> = random_vec(&mut r, len, 1.0)
        .iter()
        .map(|x| ((x.abs() * 1000.0) as i64) % cfg.vocab_size as i64)
        .collect();
    let row = |lo: usize, hi: usize| one_row::<TestCpu>(&ids[lo..hi], &device);
    let whole = model.forward(row(0, len));
    let mut state = model.stream_state(ChunkStoreKind::Device);
    let first = model.prefill(row(0, head), &mut state);
    let rest = model.prefill(row(head, len), &mut state);
    let err = rel_err(Tensor::cat(vec![first, rest], 1), whole);
    assert!(
        err < 1e-4,
        "{name}: a long later segment differs by {err:e}"
    );
}

/// A profiled stream (segments, then steps) gives exactly the unprofiled logits, counts one
/// pass per later call and times every stage of those calls.
#[test]
fn a_profiled_stream_is_the_same_stream() {
    let device = Default::default();
    let (name, cfg) = hsa_model();
    let model = cfg.init::<TestCpu>(&device);
    let ids = token_ids(cfg.vocab_size);
    let run = |profiled: bool| {
        let mut state = model.stream_state(ChunkStoreKind::Offloaded);
        if profiled {
            state = state.with_profile();
        }
        let logits = streamed_in(&model, &ids, &mut state, &device);
        (to_vec(logits), state.profile().cloned())
    };
    let (plain, _) = run(false);
    let (profiled, profile) = run(true);
    assert_eq!(plain, profiled, "{name}: profiling changed the logits");
    let profile = profile.expect("with_profile turns profiling on");
    // Segments after the first, then one step per remaining token.
    let later_calls = SEGMENTS.len() - 1 + LEN - SEGMENTS.iter().sum::<usize>();
    assert_eq!(
        profile.passes(),
        later_calls,
        "{name}: a pass per later call"
    );
    for stage in StreamStage::ALL {
        assert!(
            !profile.total(stage).is_zero(),
            "{name}: {} never timed\n{}",
            stage.name(),
            profile.table()
        );
    }
}
