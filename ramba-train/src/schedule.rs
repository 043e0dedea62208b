//! Learning-rate schedules: a linear warm-up, then cosine decay to a floor
//! (`cosine_with_min_lr`) or warm-up–stable–decay (the peak held, then a linear decay to the
//! floor over the last `decay_ratio` of the steps); either can be cut short by an anneal that
//! starts when the run's answers reach `train.anneal_at_answer_acc` (see [`Schedule::annealed`]).

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
    /// An anneal started mid-run: its first step, length and the rate it starts from.
    anneal: Option<Anneal>,
}

#[derive(Clone, Copy, Debug)]
struct Anneal {
    from: u64,
    steps: u64,
    start_lr: f64,
    end_lr: f64,
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
            anneal: None,
        }
    }

    /// This schedule with a linear anneal from its rate at step `from` to `lr_ratio · lr`,
    /// reached at the anneal's last step (`from + steps - 1`), where the run then ends.
    pub fn annealed(self, from: u64, steps: u64, lr_ratio: f64) -> Self {
        Self {
            anneal: Some(Anneal {
                from,
                steps: steps.max(1),
                start_lr: self.at(from),
                end_lr: self.peak * lr_ratio,
            }),
            ..self
        }
    }

    /// The first annealed step, once an anneal has started.
    pub fn anneal_from(&self) -> Option<u64> {
        self.anneal.map(|a| a.from)
    }

    /// Steps the run takes in all: `train.steps`, or the end of an anneal when that comes
    /// first.
    pub fn end(&self) -> u64 {
        self.anneal
            .map_or(self.total, |a| (a.from + a.steps).min(self.total))
    }

    /// The learning rate before optimizer step `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        if let Some(a) = self.anneal.filter(|a| step >= a.from) {
            let progress = ((step - a.from + 1) as f64 / a.steps as f64).min(1.0);
            return a.start_lr + (a.end_lr - a.start_lr) * progress;
        }
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

    #[test]
    fn an_anneal_falls_linearly_from_where_it_starts_and_ends_the_run() {
        let base = schedule(1000, 0.1, 0.1, LrSchedule::Cosine, 0.2);
        assert_eq!(base.end(), 1000);
        assert_eq!(base.anneal_from(), None);
        let s = base.annealed(300, 100, 0.01);
        assert_eq!(s.anneal_from(), Some(300));
        assert_eq!(s.end(), 400);
        // Before the anneal nothing changes.
        assert!((0..300).all(|step| s.at(step) == base.at(step)));
        // It starts one step below the rate where it began and reaches its end rate on its
        // last step.
        let from = base.at(300);
        assert!((s.at(300) - (from + (0.01 - from) / 100.0)).abs() < 1e-12);
        assert!((s.at(349) - (from + (0.01 - from) * 0.5)).abs() < 1e-12);
        assert!((s.at(399) - 0.01).abs() < 1e-12, "{}", s.at(399));
        assert!((301..400).all(|step| s.at(step) < s.at(step - 1)));
        // An anneal that would outlast train.steps ends with it.
        assert_eq!(base.annealed(950, 100, 0.01).end(), 1000);
    }
}
