//! Learning-rate schedules: a linear warm-up, then cosine decay to a floor
//! (`cosine_with_min_lr`) or warm-up–stable–decay (the peak held, then a linear decay to the
//! floor over the last `decay_ratio` of the steps).

use ramba_experiment::{LrSchedule, TrainConfig};

/// A run's learning rate per optimizer step.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    total: u64,
    peak: f64,
    floor: f64,
    warmup: u64,
    /// First step of the final decay (`"wsd"`).
    decay_from: u64,
    shape: LrSchedule,
}

impl Schedule {
    /// The schedule `t` describes.
    pub fn new(t: &TrainConfig) -> Self {
        let total = t.steps;
        let steps = |ratio: f64| (ratio * total as f64).round() as u64;
        Self {
            total,
            peak: t.lr,
            floor: t.lr * t.min_lr_ratio,
            warmup: steps(t.warmup_ratio),
            decay_from: total.saturating_sub(steps(t.decay_ratio)),
            shape: t.schedule,
        }
    }

    /// The learning rate before optimizer step `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let (start, span) = match self.shape {
            LrSchedule::Cosine => (self.warmup, self.total.saturating_sub(self.warmup)),
            LrSchedule::Wsd => {
                let start = self.decay_from.max(self.warmup);
                (start, self.total.saturating_sub(start))
            }
        };
        if step < start {
            return self.peak;
        }
        let progress = ((step - start) as f64 / span.max(1) as f64).min(1.0);
        let fall = match self.shape {
            LrSchedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            LrSchedule::Wsd => 1.0 - progress,
        };
        self.floor + (self.peak - self.floor) * fall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(steps: u64, warmup: f64, min: f64, shape: LrSchedule, decay: f64) -> Schedule {
        Schedule::new(&TrainConfig {
            steps,
            lr: 1.0,
            warmup_ratio: warmup,
            min_lr_ratio: min,
            schedule: shape,
            decay_ratio: decay,
            ..TrainConfig::default()
        })
    }

    #[test]
    fn warmup_then_cosine_to_floor() {
        let s = schedule(100, 0.1, 0.2, LrSchedule::Cosine, 0.5);
        let lr = |step| s.at(step);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!((lr(55) - 0.6).abs() < 1e-12, "{}", lr(55));
        assert!(lr(99) > 0.2 && lr(99) < 0.201);
        assert!((1..100).all(|s| lr(s) <= lr(s - 1) || s <= 10));
        assert_eq!(schedule(10, 0.0, 0.1, LrSchedule::Cosine, 0.2).at(0), 1.0);
    }

    #[test]
    fn wsd_holds_the_peak_then_decays_linearly() {
        let s = schedule(100, 0.1, 0.1, LrSchedule::Wsd, 0.2);
        assert!((s.at(0) - 0.1).abs() < 1e-12);
        assert!((10..=80).all(|step| s.at(step) == 1.0));
        assert!((s.at(90) - 0.55).abs() < 1e-12, "{}", s.at(90));
        assert!(s.at(99) > 0.1 && s.at(99) < 0.15, "{}", s.at(99));
        assert!((81..100).all(|step| s.at(step) < s.at(step - 1)));
        // A decay longer than what follows the warm-up starts right after it.
        let s = schedule(10, 0.5, 0.0, LrSchedule::Wsd, 0.8);
        assert_eq!(s.at(5), 1.0);
        assert!((s.at(9) - 0.2).abs() < 1e-12, "{}", s.at(9));
    }
}
