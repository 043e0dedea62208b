//! PNG charts: line charts (loss curves, perplexity by length) and heatmaps (passkey accuracy).
//!
//! Charts are drawn with plotters into memory, encoded as PNG and written atomically, so a chart
//! refreshed during training is never seen half-written. Text is rendered with DejaVu Sans,
//! embedded in the binary, so charts need no installed font and no fontconfig.

mod axis;
mod canvas;
mod colour;
mod heatmap;
mod line;

pub use heatmap::heatmap;
pub use line::line_chart;

/// One named line of a [`line_chart`]: `(x, y)` points, drawn in the given order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points; non-finite ones (and, on a log scale, non-positive `y`) are skipped.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from a name and points.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    /// Asserts that `path` holds a PNG (signature bytes) of non-trivial size.
    pub(crate) fn assert_png(path: &Path) {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            &bytes[..8],
            b"\x89PNG\r\n\x1a\n",
            "{} is not a PNG",
            path.display()
        );
        assert!(
            bytes.len() > 2000,
            "{} is suspiciously small",
            path.display()
        );
    }
}
