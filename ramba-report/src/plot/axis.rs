//! Axis ranges, tick positions and tick labels.
//!
//! Ticks are computed here and handed to plotters as fixed key points, rather than left to
//! plotters: its log axis only ticks at powers of ten, so a loss curve between 2 and 8 on a log
//! scale would get no y labels at all. A log axis is drawn as a linear axis over `log10(y)` with
//! labels showing `y`.

use std::ops::Range;

use anyhow::{bail, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;

/// One axis of a chart, in chart coordinates (`log10(value)` on a log axis).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Axis {
    /// Visible range, in chart coordinates.
    pub range: Range<f64>,
    /// Tick positions, in chart coordinates, inside `range`.
    pub ticks: Vec<f64>,
    log: bool,
}

impl Axis {
    /// A linear axis showing `lo..=hi`, widened by `pad` times the span on each side. A
    /// degenerate range (a single value) is widened so the value sits in the middle.
    pub fn linear(lo: f64, hi: f64, pad: f64) -> Result<Axis> {
        let span = hi - lo;
        if !span.is_finite() || !lo.is_finite() || !hi.is_finite() {
            bail!("values from {lo} to {hi} span too wide a range to plot");
        }
        let scale = lo.abs().max(hi.abs());
        let (mut a, mut b) = if span <= scale * 1e-9 {
            let half = if scale == 0.0 { 1.0 } else { scale * 0.1 };
            (lo - half, hi + half)
        } else {
            (lo - span * pad, hi + span * pad)
        };
        if !(a.is_finite() && b.is_finite() && a < b) {
            // Only reachable near f64::MAX; drop the padding rather than fail.
            (a, b) = (lo, hi);
        }
        Ok(Axis {
            ticks: nice_ticks(a, b, 8),
            range: a..b,
            log: false,
        })
    }

    /// A base-10 log axis showing `lo..=hi` (both `> 0`), padded by 5% of the decades shown.
    pub fn log10(lo: f64, hi: f64) -> Result<Axis> {
        if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
            bail!("a log axis needs positive finite values, got {lo} to {hi}");
        }
        let (mut a, mut b) = (lo.log10(), hi.log10());
        if b - a < 1e-9 {
            // A single value: show it between half and twice itself.
            a -= std::f64::consts::LOG10_2;
            b += std::f64::consts::LOG10_2;
        } else {
            let pad = (b - a) * 0.05;
            a -= pad;
            b += pad;
        }
        Ok(Axis {
            ticks: log_ticks(a, b),
            range: a..b,
            log: true,
        })
    }

    /// Chart coordinate of a data value.
    pub fn coord(&self, value: f64) -> f64 {
        if self.log {
            value.log10()
        } else {
            value
        }
    }

    /// Tick label for a chart coordinate.
    pub fn label(&self, coord: f64) -> String {
        format_tick(if self.log { 10f64.powf(coord) } else { coord })
    }

    /// The plotters coordinate for this axis, ticking exactly at [`Axis::ticks`].
    pub fn spec(&self) -> Ticked {
        Ticked::new(self.range.clone(), self.ticks.clone())
    }
}

/// A linear plotters coordinate whose key points (ticks, labels, grid lines) are given.
///
/// plotters' own `with_key_points` cannot be used: it keeps `f64`'s `NoDefaultFormatting`,
/// which leaves it without the `ValueFormatter` that `configure_mesh` demands.
pub(crate) struct Ticked {
    linear: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ticked {
    pub fn new(range: Range<f64>, ticks: Vec<f64>) -> Self {
        Ticked {
            linear: range.into(),
            ticks,
        }
    }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold points (labels, main grid) are the ticks; no light grid lines in between.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.linear.range()
    }
}

/// The "nice" step (1, 2, 2.5 or 5 times a power of ten) at or above `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .find(|&n| norm <= n + 1e-9)
        .unwrap_or(10.0);
    nice * mag
}

/// About `target` evenly spaced round values inside `lo..=hi` (at most 100).
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let step = nice_step((hi - lo) / target as f64);
    if !(step > 0.0 && step.is_finite()) {
        return vec![lo, hi];
    }
    let first = (lo / step).ceil();
    let last = (hi / step).floor();
    if !(first.is_finite() && last.is_finite()) || last < first {
        return vec![lo, hi];
    }
    let count = ((last - first) as usize + 1).min(100);
    (0..count)
        .map(|i| {
            let v = (first + i as f64) * step;
            // Snap rounding noise such as 1e-17 to an exact zero so it is labelled "0".
            if v.abs() < step * 1e-9 {
                0.0
            } else {
                v
            }
        })
        .collect()
}

/// Tick positions (as `log10` of values) for a log axis over `log10` range `a..b`.
fn log_ticks(a: f64, b: f64) -> Vec<f64> {
    let decades = b - a;
    let (first_pow, last_pow) = (a.ceil() as i32, b.floor() as i32);
    let values: Vec<f64> = if decades > 12.0 {
        // Many decades: every n-th power of ten, about 8 labels.
        let every = (decades / 8.0).ceil() as usize;
        (first_pow..=last_pow)
            .step_by(every.max(1))
            .map(|p| 10f64.powi(p))
            .collect()
    } else if last_pow - first_pow >= 2 {
        (first_pow..=last_pow).map(|p| 10f64.powi(p)).collect()
    } else if decades >= 1.0 {
        // One or two decades: 1, 2 and 5 times each power of ten.
        (a.floor() as i32..=b.ceil() as i32)
            .flat_map(|p| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(p)))
            .filter(|v| (a..=b).contains(&v.log10()))
            .collect()
    } else {
        Vec::new()
    };
    let values = if values.len() >= 2 {
        values
    } else {
        // Less than a decade: round values, as on a linear axis.
        let (lo, hi) = (10f64.powf(a), 10f64.powf(b));
        nice_ticks(lo, hi, 5)
            .into_iter()
            .filter(|&v| v > 0.0)
            .collect()
    };
    values.into_iter().map(f64::log10).collect()
}

/// Compact tick label: up to 4 significant digits without trailing zeros, scientific notation
/// for very large or small magnitudes.
pub(crate) fn format_tick(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    if !v.is_finite() {
        return v.to_string();
    }
    let mag = v.abs();
    if !(1e-3..1e6).contains(&mag) {
        return format!("{v:.1e}");
    }
    let decimals = (3 - mag.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(axis: &Axis) -> Vec<String> {
        axis.ticks.iter().map(|&t| axis.label(t)).collect()
    }

    #[test]
    fn linear_ticks_are_round_and_inside() {
        let axis = Axis::linear(0.0, 1000.0, 0.0).unwrap();
        assert_eq!(axis.range, 0.0..1000.0);
        assert_eq!(
            labels(&axis),
            ["0", "200", "400", "600", "800", "1000"].map(String::from)
        );
        let axis = Axis::linear(2.31, 2.37, 0.05).unwrap();
        assert!(axis.ticks.len() >= 4, "{axis:?}");
        assert!(axis.ticks.iter().all(|t| axis.range.contains(t)));
        assert_eq!(axis.label(axis.ticks[0]), "2.31");
    }

    #[test]
    fn degenerate_linear_ranges_are_widened() {
        let axis = Axis::linear(5.0, 5.0, 0.05).unwrap();
        assert!(axis.range.start < 5.0 && axis.range.end > 5.0);
        let axis = Axis::linear(0.0, 0.0, 0.05).unwrap();
        assert_eq!(axis.range, -1.0..1.0);
        assert!(Axis::linear(-f64::MAX, f64::MAX, 0.05).is_err());
        let axis = Axis::linear(0.0, f64::MAX, 0.05).unwrap();
        assert!(axis.range.end.is_finite());
    }

    #[test]
    fn log_ticks_over_many_decades_are_powers_of_ten() {
        let axis = Axis::log10(0.01, 1000.0).unwrap();
        assert_eq!(
            labels(&axis),
            ["0.01", "0.1", "1", "10", "100", "1000"].map(String::from)
        );
    }

    #[test]
    fn log_ticks_within_a_decade_are_round_values() {
        let axis = Axis::log10(2.0, 8.0).unwrap();
        let l = labels(&axis);
        assert!(l.len() >= 3, "{l:?}");
        assert!(l.contains(&"4".to_string()), "{l:?}");
        let axis = Axis::log10(3.0, 3.0).unwrap();
        assert!(axis.ticks.len() >= 2);
        assert!(Axis::log10(0.0, 1.0).is_err());
    }

    #[test]
    fn log_ticks_over_one_or_two_decades_use_1_2_5() {
        let axis = Axis::log10(0.5, 20.0).unwrap();
        assert_eq!(
            labels(&axis),
            ["0.5", "1", "2", "5", "10", "20"].map(String::from)
        );
    }

    #[test]
    fn tick_labels() {
        assert_eq!(format_tick(0.0), "0");
        assert_eq!(format_tick(2.3456), "2.346");
        assert_eq!(format_tick(12000.0), "12000");
        assert_eq!(format_tick(0.05), "0.05");
        assert_eq!(format_tick(0.30000000000000004), "0.3");
        assert_eq!(format_tick(-1.5), "-1.5");
        assert_eq!(format_tick(2e6), "2.0e6");
        assert_eq!(format_tick(1e-4), "1.0e-4");
    }
}
