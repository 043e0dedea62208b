//! Where a stream's later calls spend their time, stage by stage: set `RAMBA_STREAM_PROFILE=1`
//! (or call [`StreamState::with_profile`](crate::model::StreamState::with_profile)) and read
//! [`StreamState::profile`](crate::model::StreamState::profile) after the prefill.
//!
//! Each stage waits for the device before it starts and after it ends, so its time is its own
//! queued device work plus its host work (the offloaded store's host gather and upload land in
//! [`StreamStage::Gather`]). Those waits stop the host from running ahead of the device, so a
//! profiled prefill is somewhat slower than an unprofiled one: the shares are the point, not
//! the total.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use burn::prelude::*;

/// The environment variable that turns profiling on for new stream states (any value but
/// empty or `0`).
pub const PROFILE_ENV: &str = "RAMBA_STREAM_PROFILE";

/// One stage of an HSA model's later stream call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamStage {
    /// Embedding and the lower decoder's blocks.
    Lower,
    /// Encoding the chunks the call completes (landmarks, keys, values) and storing them.
    Store,
    /// Chunk selection over every stored landmark, once per retrieval group.
    Select,
    /// Fetching the selected chunks' key and value tiles, once per retrieval group.
    Gather,
    /// The HSA layers over the gathered tiles.
    Hsa,
    /// The decoder blocks after each HSA layer.
    Blocks,
}

impl StreamStage {
    /// Every stage, in the order a call runs them.
    pub const ALL: [StreamStage; 6] = [
        StreamStage::Lower,
        StreamStage::Store,
        StreamStage::Select,
        StreamStage::Gather,
        StreamStage::Hsa,
        StreamStage::Blocks,
    ];

    /// The stage's name in the profile table.
    pub fn name(self) -> &'static str {
        match self {
            StreamStage::Lower => "lower decoder",
            StreamStage::Store => "store chunks",
            StreamStage::Select => "select",
            StreamStage::Gather => "gather",
            StreamStage::Hsa => "hsa",
            StreamStage::Blocks => "upper blocks",
        }
    }
}

/// Time per [`StreamStage`] summed over a stream's later calls (passes).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamProfile {
    totals: [Duration; StreamStage::ALL.len()],
    passes: usize,
}

impl StreamProfile {
    /// A fresh profile if [`PROFILE_ENV`] asks for one.
    pub fn from_env() -> Option<Self> {
        std::env::var_os(PROFILE_ENV)
            .filter(|v| !v.is_empty() && v != "0")
            .map(|_| Self::default())
    }

    /// Runs `f` as `stage`, timed from a device sync before it to one after it.
    pub fn time<B: Backend, T>(
        &mut self,
        stage: StreamStage,
        device: &B::Device,
        f: impl FnOnce() -> T,
    ) -> T {
        // A failed sync leaves the error for the next read to report; the profile only
        // loses the precision of this one sample.
        let _ = B::sync(device);
        let started = Instant::now();
        let out = f();
        let _ = B::sync(device);
        self.totals[stage as usize] += started.elapsed();
        out
    }

    /// Counts one later call (a pass of at most a few thousand tokens).
    pub(crate) fn end_pass(&mut self) {
        self.passes += 1;
    }

    /// Time spent in `stage`.
    pub fn total(&self, stage: StreamStage) -> Duration {
        self.totals[stage as usize]
    }

    /// Later calls profiled.
    pub fn passes(&self) -> usize {
        self.passes
    }

    /// One line per stage: total seconds, milliseconds per pass, share of the profiled time.
    pub fn table(&self) -> String {
        let all: f64 = self.totals.iter().map(Duration::as_secs_f64).sum();
        let mut out = format!(
            "stream profile over {} pass(es)\n{:<14} {:>9} {:>9} {:>6}\n",
            self.passes, "stage", "total s", "ms/pass", "share"
        );
        for stage in StreamStage::ALL {
            let s = self.total(stage).as_secs_f64();
            let per_pass = 1e3 * s / self.passes.max(1) as f64;
            let share = if all > 0.0 { 100.0 * s / all } else { 0.0 };
            let _ = writeln!(
                out,
                "{:<14} {s:>9.3} {per_pass:>9.3} {share:>5.1}%",
                stage.name()
            );
        }
        out
    }
}

/// [`StreamProfile::time`] where there is a profile, else just `f`.
pub(crate) fn timed<B: Backend, T>(
    profile: &mut Option<&mut StreamProfile>,
    stage: StreamStage,
    device: &B::Device,
    f: impl FnOnce() -> T,
) -> T {
    match profile {
        Some(p) => p.time::<B, T>(stage, device, f),
        None => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_every_stage_and_its_share() {
        let mut p = StreamProfile::default();
        p.totals[StreamStage::Select as usize] = Duration::from_millis(300);
        p.totals[StreamStage::Hsa as usize] = Duration::from_millis(100);
        p.end_pass();
        p.end_pass();
        let t = p.table();
        assert!(t.starts_with("stream profile over 2 pass(es)"), "{t}");
        for stage in StreamStage::ALL {
            assert!(t.contains(stage.name()), "{t}");
        }
        let select = t.lines().find(|l| l.starts_with("select")).unwrap();
        assert!(select.contains("0.300") && select.contains("150.000") && select.contains("75.0%"));
        let lower = t.lines().find(|l| l.starts_with("lower")).unwrap();
        assert!(lower.contains("0.0%"), "{lower}");
    }
}
