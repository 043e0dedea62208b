//! Pure formatting of training status lines (no I/O, no clocks), so it can be tested exactly.

use std::fmt;
use std::time::Duration;

/// A snapshot of training progress, rendered as one line, e.g.
/// `step 120/1000 loss 2.3412 lr 1.00e-3 tok/s 5321 elapsed 12.3s eta 81.0s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Status {
    /// The step just completed.
    pub step: u64,
    /// The final step of the run.
    pub total: u64,
    /// Training loss at `step`.
    pub loss: f64,
    /// Learning rate at `step`.
    pub lr: f64,
    /// Throughput in tokens per second.
    pub tokens_per_s: f64,
    /// Wall time since this process started training (not since the run's step 0).
    pub elapsed: Duration,
    /// Estimated time to `total`; `None` before any step has completed in this process.
    pub eta: Option<Duration>,
}

impl Status {
    /// Everything but the `step x/y` prefix; the progress bar shows the step count itself.
    pub fn details(&self) -> String {
        let eta = self.eta.map_or_else(|| "?".to_string(), format_duration);
        format!(
            "loss {:.4} lr {:.2e} tok/s {:.0} elapsed {} eta {}",
            self.loss,
            self.lr,
            self.tokens_per_s,
            format_duration(self.elapsed),
            eta
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {}/{} {}", self.step, self.total, self.details())
    }
}

/// Short human duration: `12.3s` under 100 s, `12m05s` under an hour, `2h05m` beyond.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 100.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        let s = secs.round() as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = (secs / 60.0).round() as u64;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// Estimated time until `total`, from the average rate of the steps done in this process
/// (`start_step` is where it resumed, so steps done before a restart do not count as fast).
/// `None` when no step has been done yet or the estimate is not a finite duration.
pub fn eta(start_step: u64, step: u64, total: u64, elapsed: Duration) -> Option<Duration> {
    let done = step.saturating_sub(start_step);
    if done == 0 {
        return None;
    }
    let remaining = total.saturating_sub(step) as f64;
    Duration::try_from_secs_f64(elapsed.as_secs_f64() * remaining / done as f64).ok()
}

/// Whether the plain (non-terminal) display prints a line at `step`: every `every` steps and at
/// the last step. `every == 0` means only the last step.
pub fn should_print(step: u64, total: u64, every: u64) -> bool {
    step >= total || (every > 0 && step.is_multiple_of(every))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_matches_the_documented_format() {
        let status = Status {
            step: 120,
            total: 1000,
            loss: 2.34123,
            lr: 1e-3,
            tokens_per_s: 5321.4,
            elapsed: Duration::from_millis(12_300),
            eta: Some(Duration::from_secs(81)),
        };
        assert_eq!(
            status.to_string(),
            "step 120/1000 loss 2.3412 lr 1.00e-3 tok/s 5321 elapsed 12.3s eta 81.0s"
        );
    }

    #[test]
    fn line_without_eta_and_with_nan_loss() {
        let status = Status {
            step: 0,
            total: 10,
            loss: f64::NAN,
            lr: 3e-4,
            tokens_per_s: 0.0,
            elapsed: Duration::ZERO,
            eta: None,
        };
        assert_eq!(
            status.to_string(),
            "step 0/10 loss NaN lr 3.00e-4 tok/s 0 elapsed 0.0s eta ?"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(Duration::from_millis(81_040)), "81.0s");
        assert_eq!(format_duration(Duration::from_secs(725)), "12m05s");
        assert_eq!(format_duration(Duration::from_secs(7500)), "2h05m");
    }

    #[test]
    fn eta_uses_steps_done_since_resume() {
        // Resumed at 100, 20 steps in 10 s: 0.5 s/step, 880 steps left.
        let e = eta(100, 120, 1000, Duration::from_secs(10)).unwrap();
        assert_eq!(e, Duration::from_secs(440));
        assert_eq!(eta(100, 100, 1000, Duration::from_secs(10)), None);
        assert_eq!(
            eta(0, 1000, 1000, Duration::from_secs(10)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn printing_cadence() {
        assert!(!should_print(119, 1000, 10));
        assert!(should_print(120, 1000, 10));
        assert!(should_print(1000, 1000, 300));
        assert!(!should_print(5, 10, 0));
        assert!(should_print(10, 10, 0));
    }
}
