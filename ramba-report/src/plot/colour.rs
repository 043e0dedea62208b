//! Colours: a categorical palette for line series and the accuracy scale for heatmaps.

use plotters::style::RGBColor;

/// Colour of the `i`-th series: Tableau 10 (`colorous`), distinct and readable on white; it
/// repeats after 10 series.
pub(crate) fn series_colour(i: usize) -> RGBColor {
    let c = colorous::TABLEAU10[i % colorous::TABLEAU10.len()];
    RGBColor(c.r, c.g, c.b)
}

/// Cell colour for missing values.
pub(crate) const MISSING: RGBColor = RGBColor(200, 200, 200);

/// Colour of an accuracy in `0..=1` (clamped) on ColorBrewer's red → yellow → green scale
/// (`colorous::RED_YELLOW_GREEN`: 0 is bad, 1 is good); grey for `None` and NaN.
pub(crate) fn accuracy_colour(value: Option<f64>) -> RGBColor {
    let Some(v) = value.filter(|v| !v.is_nan()) else {
        return MISSING;
    };
    let c = colorous::RED_YELLOW_GREEN.eval_continuous(v.clamp(0.0, 1.0));
    RGBColor(c.r, c.g, c.b)
}

/// Black or white, whichever reads better on `bg` (by relative luminance).
pub(crate) fn text_colour_on(bg: RGBColor) -> RGBColor {
    let lum = 0.2126 * f64::from(bg.0) + 0.7152 * f64::from(bg.1) + 0.0722 * f64::from(bg.2);
    if lum > 140.0 {
        RGBColor(0, 0, 0)
    } else {
        RGBColor(255, 255, 255)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_ends_and_missing() {
        let (red, green) = (accuracy_colour(Some(0.0)), accuracy_colour(Some(1.0)));
        assert!(red.0 > 150 && red.1 < 100, "0 is red: {red:?}");
        assert!(green.1 > 100 && green.0 < 100, "1 is green: {green:?}");
        assert_eq!(accuracy_colour(Some(7.0)), green);
        assert_eq!(accuracy_colour(Some(-1.0)), red);
        assert_eq!(accuracy_colour(None), MISSING);
        assert_eq!(accuracy_colour(Some(f64::NAN)), MISSING);
        // Less red as accuracy grows.
        assert!(accuracy_colour(Some(0.9)).0 < accuracy_colour(Some(0.6)).0);
    }

    #[test]
    fn palette_is_distinct() {
        for i in 0..10 {
            for j in 0..i {
                assert_ne!(series_colour(i), series_colour(j));
            }
        }
        assert_eq!(series_colour(10), series_colour(0));
    }

    #[test]
    fn text_contrast() {
        assert_eq!(text_colour_on(RGBColor(255, 255, 255)), RGBColor(0, 0, 0));
        assert_eq!(
            text_colour_on(accuracy_colour(Some(1.0))),
            RGBColor(255, 255, 255)
        );
    }
}
