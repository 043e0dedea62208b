//! Colours: a categorical palette for line series and the accuracy scale for heatmaps.

use plotters::style::RGBColor;

/// Tableau 10: distinct, colour-blind-friendlier than pure hues, readable on white.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Colour of the `i`-th series (the palette repeats after 10 series).
pub(crate) fn series_colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Cell colour for missing values.
pub(crate) const MISSING: RGBColor = RGBColor(200, 200, 200);

/// Stops of the red → yellow → green scale (as in ColorBrewer RdYlGn): 0 is bad, 1 is good.
const STOPS: [(f64, RGBColor); 3] = [
    (0.0, RGBColor(215, 48, 39)),
    (0.5, RGBColor(254, 224, 110)),
    (1.0, RGBColor(26, 152, 80)),
];

/// Colour of an accuracy in `0..=1` (clamped); grey for `None` and NaN.
pub(crate) fn accuracy_colour(value: Option<f64>) -> RGBColor {
    let Some(v) = value.filter(|v| !v.is_nan()) else {
        return MISSING;
    };
    let v = v.clamp(0.0, 1.0);
    let ((a, ca), (b, cb)) = if v <= STOPS[1].0 {
        (STOPS[0], STOPS[1])
    } else {
        (STOPS[1], STOPS[2])
    };
    let t = (v - a) / (b - a);
    let mix = |x: u8, y: u8| (f64::from(x) + (f64::from(y) - f64::from(x)) * t).round() as u8;
    RGBColor(mix(ca.0, cb.0), mix(ca.1, cb.1), mix(ca.2, cb.2))
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
        assert_eq!(accuracy_colour(Some(0.0)), STOPS[0].1);
        assert_eq!(accuracy_colour(Some(0.5)), STOPS[1].1);
        assert_eq!(accuracy_colour(Some(1.0)), STOPS[2].1);
        assert_eq!(accuracy_colour(Some(7.0)), STOPS[2].1);
        assert_eq!(accuracy_colour(Some(-1.0)), STOPS[0].1);
        assert_eq!(accuracy_colour(None), MISSING);
        assert_eq!(accuracy_colour(Some(f64::NAN)), MISSING);
        // Greener as accuracy grows.
        assert!(accuracy_colour(Some(0.9)).1 < accuracy_colour(Some(0.6)).1);
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
            text_colour_on(RGBColor(26, 152, 80)),
            RGBColor(255, 255, 255)
        );
    }
}
