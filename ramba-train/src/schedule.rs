//! Learning-rate schedule: linear warm-up, then cosine decay to a floor (`cosine_with_min_lr`).

/// The learning rate before optimizer step `step` (0-based) of `total`.
pub fn learning_rate(step: u64, total: u64, peak: f64, warmup_ratio: f64, min_ratio: f64) -> f64 {
    let warmup = (warmup_ratio * total as f64).round() as u64;
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let floor = peak * min_ratio;
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::learning_rate;

    #[test]
    fn warmup_then_cosine_to_floor() {
        let lr = |s| learning_rate(s, 100, 1.0, 0.1, 0.2);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!((lr(55) - 0.6).abs() < 1e-12, "{}", lr(55));
        assert!(lr(99) > 0.2 && lr(99) < 0.201);
        assert!((1..100).all(|s| lr(s) <= lr(s - 1) || s <= 10));
        assert_eq!(learning_rate(0, 10, 0.5, 0.0, 0.1), 0.5);
    }
}
