//! Training progress display: an indicatif bar on a terminal, plain log lines elsewhere.

mod format;

pub use format::{eta, format_duration, should_print, Status};

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress of a training loop from `start_step` (0, or the step resumed from) to `total_steps`.
///
/// When stderr is a terminal, a bar shows `step/total` with loss, learning rate, throughput,
/// elapsed time and ETA in its message. Otherwise (CI logs, files) a plain line, as rendered by
/// [`Status`], is printed to stderr every `every` steps and at the last step: a redrawn bar
/// would fill a log with control characters. Everything goes to stderr so stdout stays free for
/// machine-readable output.
#[derive(Debug)]
pub struct Progress {
    total: u64,
    start_step: u64,
    every: u64,
    started: Instant,
    bar: Option<ProgressBar>,
    last: Option<Status>,
    last_printed: Option<u64>,
}

impl Progress {
    /// Starts the display; a bar when stderr is a terminal, plain lines otherwise.
    /// `every == 0` prints only the last step in plain mode.
    pub fn new(total_steps: u64, start_step: u64, every: u64) -> Self {
        Self::with_terminal(
            total_steps,
            start_step,
            every,
            std::io::stderr().is_terminal(),
        )
    }

    /// As [`Progress::new`], with the display mode chosen by the caller.
    fn with_terminal(total_steps: u64, start_step: u64, every: u64, terminal: bool) -> Self {
        let bar = terminal.then(|| {
            // The template is a constant, so this cannot fail in practice; fall back anyway
            // rather than panic.
            let style = ProgressStyle::with_template(
                "{spinner:.green} [{bar:30.cyan/blue}] {pos}/{len} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar =
                ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr())
                    .with_style(style)
                    .with_position(start_step.min(total_steps));
            // ETA is computed by `eta` (steps since resume), not by indicatif's estimator,
            // which would count the jump to `start_step` as progress made in no time.
            bar.set_message("starting");
            bar
        });
        Progress {
            total: total_steps,
            start_step,
            every,
            started: Instant::now(),
            bar,
            last: None,
            last_printed: None,
        }
    }

    /// Records that `step` has completed with the given loss, throughput and learning rate.
    pub fn update(&mut self, step: u64, loss: f64, tokens_per_s: f64, lr: f64) {
        let elapsed = self.started.elapsed();
        let status = Status {
            step,
            total: self.total,
            loss,
            lr,
            tokens_per_s,
            elapsed,
            eta: eta(self.start_step, step, self.total, elapsed),
        };
        self.last = Some(status);
        match &self.bar {
            Some(bar) => {
                bar.set_position(step.min(self.total));
                bar.set_message(status.details());
            }
            None => {
                if should_print(step, self.total, self.every) && self.last_printed != Some(step) {
                    eprintln!("{status}");
                    self.last_printed = Some(step);
                }
            }
        }
    }

    /// Moves the end of the run, e.g. when an anneal ends it before `train.steps`: the bar's
    /// length, the step count shown and the ETA follow.
    pub fn set_total(&mut self, total_steps: u64) {
        self.total = total_steps;
        if let Some(bar) = &self.bar {
            bar.set_length(total_steps);
        }
    }

    /// Prints a message on its own line without breaking the bar.
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    /// Ends the display: the bar is left in its final state; in plain mode the latest status
    /// is printed if it was not already (a run stopped between two reporting steps).
    pub fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None => {
                if let Some(status) = self.last.filter(|s| self.last_printed != Some(s.step)) {
                    eprintln!("{status}");
                }
            }
        }
    }

    /// The most recent status passed to [`Progress::update`], if any.
    pub fn last_status(&self) -> Option<Status> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_mode_prints_on_cadence_and_last_step_once() {
        let mut p = Progress::with_terminal(25, 3, 10, false);
        assert!(p.bar.is_none());
        p.update(4, 3.0, 100.0, 1e-3);
        assert_eq!(p.last_printed, None);
        p.update(10, 2.5, 100.0, 1e-3);
        assert_eq!(p.last_printed, Some(10));
        p.update(25, 2.0, 100.0, 1e-3);
        assert_eq!(p.last_printed, Some(25));
        let last = p.last_status().unwrap();
        assert_eq!((last.step, last.total, last.loss), (25, 25, 2.0));
        assert_eq!(last.eta, Some(std::time::Duration::ZERO));
        p.println("eval done");
        p.finish();
    }

    #[test]
    fn a_moved_end_is_shown_and_counted_down_to() {
        let mut p = Progress::with_terminal(1900, 0, 50, false);
        p.update(100, 1.0, 10.0, 1e-3);
        p.set_total(400);
        p.update(300, 1.0, 10.0, 1e-3);
        let s = p.last_status().unwrap();
        assert_eq!((s.step, s.total), (300, 400));
        // 300 steps done in this process, 100 to go: a third of the time so far.
        let (eta, elapsed) = (s.eta.unwrap().as_secs_f64(), s.elapsed.as_secs_f64());
        assert!(
            (eta - elapsed / 3.0).abs() <= 1e-6 + elapsed * 1e-9,
            "{eta} vs {elapsed}"
        );
        let mut bar = Progress::with_terminal(1900, 0, 1, true);
        bar.set_total(400);
        assert_eq!(bar.bar.as_ref().unwrap().length(), Some(400));
    }

    #[test]
    fn bar_mode_tracks_position_and_survives_overshoot() {
        let mut p = Progress::with_terminal(10, 2, 1, true);
        let bar = p.bar.clone().unwrap();
        assert_eq!(bar.position(), 2);
        p.update(5, 1.0, 10.0, 1e-4);
        assert_eq!(bar.position(), 5);
        // A step past the total (misconfigured loop) must not panic.
        p.update(12, 1.0, 10.0, 1e-4);
        assert_eq!(bar.position(), 10);
        p.println("checkpoint saved");
        p.finish();
        assert!(bar.is_finished());
    }
}
