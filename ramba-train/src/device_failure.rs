//! Device failures in a training step, as errors that say what happened and what to change.
//!
//! CubeCL reports a failed allocation in two ways: as an error kept by the device's server and
//! returned by the next sync (the kernels launched meanwhile read unallocated buffers, so the
//! loss turns `inf` or `NaN`), or as a panic inside the runtime. The trainer checks the device
//! after every step, before it looks at the loss, and catches the panics of a step, so that
//! running out of memory reads as such and never as a diverged loss.

use std::panic::{catch_unwind, AssertUnwindSafe};

use anyhow::{anyhow, Result};
use burn::prelude::Backend;
use ramba_core::backend::{is_out_of_memory, panic_message};
use ramba_experiment::ExperimentConfig;

/// Runs `step` (one optimizer step's forward and backward passes), turning a panic of the
/// device runtime into an error (see [`explain`]).
pub fn guard<T>(cfg: &ExperimentConfig, step: u64, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic_message(&*panic).unwrap_or_else(|| "a panic without a message".into());
        Err(explain(cfg, step, &message))
    })
}

/// Waits for the device and turns an error it kept into one that says what happened.
pub fn check<B: Backend>(cfg: &ExperimentConfig, step: u64, device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| explain(cfg, step, &e.to_string()))
}

/// The error for a device failure described by `message` in optimizer step `step` (1-based).
pub fn explain(cfg: &ExperimentConfig, step: u64, message: &str) -> anyhow::Error {
    let kept = format!(
        "the last checkpoint and metrics in {} are kept",
        cfg.run_dir().display()
    );
    let first_line = message
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message);
    if !is_out_of_memory(message) {
        return anyhow!(
            "the device failed in step {step}: {}; {kept}",
            first_line.trim()
        );
    }
    let (batch, seq, accum) = (cfg.data.batch_size, cfg.data.seq_len, cfg.train.grad_accum);
    let halve = if batch > 1 && batch.is_multiple_of(2) {
        format!(
            " (--set data.batch_size={} --set train.grad_accum={} keeps {} rows a step)",
            batch / 2,
            accum * 2,
            batch * accum
        )
    } else {
        String::new()
    };
    anyhow!(
        "out of device memory in step {step}, at data.batch_size = {batch} rows of \
         data.seq_len = {seq} tokens with train.precision = \"{}\": lower data.batch_size and \
         raise train.grad_accum to keep the batch{halve}, or shorten data.seq_len; {kept} \
         (device: {})",
        cfg.train.precision,
        first_line.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ExperimentConfig {
        let mut c = ExperimentConfig::default();
        c.data.batch_size = 8;
        c.data.seq_len = 4096;
        c
    }

    #[test]
    fn out_of_memory_names_the_keys_to_change() {
        let raw = "An execution error happened during profiling\nCaused by:\n  BufferTooBig { size: 6593445888 }";
        let e = explain(&cfg(), 3, raw).to_string();
        for want in [
            "out of device memory in step 3",
            "data.batch_size = 8",
            "--set data.batch_size=4 --set train.grad_accum=2",
            "are kept",
        ] {
            assert!(e.contains(want), "`{want}` missing from: {e}");
        }
    }

    #[test]
    fn a_panic_in_a_step_becomes_an_error() {
        let r: Result<()> = guard(&cfg(), 1, || {
            panic!("CUDA_ERROR_OUT_OF_MEMORY, out of memory")
        });
        let e = r.unwrap_err().to_string();
        assert!(e.starts_with("out of device memory in step 1"), "{e}");
        let r: Result<()> = guard(&cfg(), 2, || panic!("illegal address"));
        let e = r.unwrap_err().to_string();
        assert!(
            e.starts_with("the device failed in step 2: illegal address"),
            "{e}"
        );
    }
}
