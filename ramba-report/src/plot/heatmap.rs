//! Heatmaps of values in `0..=1` (passkey retrieval accuracy by context length and depth).

use std::path::Path;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::Ticked;
use super::canvas::{draw_no_data, render_png, text_width, Canvas, PlotResultExt, FONT};
use super::colour::{accuracy_colour, text_colour_on};

/// Width of the colour-scale strip on the right, in pixels.
const SCALE_WIDTH: u32 = 120;
/// Caption and x-label sizes shared by the grid and the colour scale, so both line up.
const CAPTION: (&str, u32) = (FONT, 26);
const MARGIN: u32 = 20;
const X_LABEL_AREA: u32 = 60;

/// Writes a heatmap to `path` as a PNG.
///
/// `values[row][col]` is the value for `y_ticks[row]` and `x_ticks[col]`; row 0 is drawn at the
/// top (depth 0% first, as passkey plots read). Cells are coloured red (0) → yellow → green (1),
/// clamped to `0..=1`, and annotated with the value as a percentage; `None` (and NaN) cells are
/// grey and marked "n/a". The image grows with the grid so annotations stay readable. A shape
/// mismatch between the ticks and `values` is an error; an empty grid gives a "no data" chart.
pub fn heatmap(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    x_ticks: &[String],
    y_ticks: &[String],
    values: &[Vec<Option<f64>>],
) -> Result<()> {
    let grid = Grid {
        x_ticks,
        y_ticks,
        values,
    };
    let result = grid.check().and_then(|()| {
        render_png(path, grid.image_size(), |root| {
            if grid.is_empty() {
                draw_no_data(root, title, "no data")
            } else {
                draw(root, title, x_label, y_label, &grid)
            }
        })
    });
    result.with_context(|| format!("writing heatmap {}", path.display()))
}

/// The heatmap input, validated by [`Grid::check`].
struct Grid<'a> {
    x_ticks: &'a [String],
    y_ticks: &'a [String],
    values: &'a [Vec<Option<f64>>],
}

impl Grid<'_> {
    /// Every row has one value per x tick, and there is one row per y tick.
    fn check(&self) -> Result<()> {
        if self.values.len() != self.y_ticks.len() {
            bail!(
                "{} rows of values but {} y tick labels",
                self.values.len(),
                self.y_ticks.len()
            );
        }
        for (i, row) in self.values.iter().enumerate() {
            if row.len() != self.x_ticks.len() {
                bail!(
                    "row {i} has {} values but there are {} x tick labels",
                    row.len(),
                    self.x_ticks.len()
                );
            }
        }
        Ok(())
    }

    fn cols(&self) -> usize {
        self.x_ticks.len()
    }

    fn rows(&self) -> usize {
        self.y_ticks.len()
    }

    fn is_empty(&self) -> bool {
        self.cols() == 0 || self.rows() == 0
    }

    /// About 90×55 pixels per cell plus room for labels, within sane bounds.
    fn image_size(&self) -> (u32, u32) {
        let w = (300 + 90 * self.cols().min(100) as u32).clamp(900, 2400);
        let h = (220 + 55 * self.rows().min(100) as u32).clamp(550, 1600);
        (w, h)
    }

    /// Chart y coordinate of the bottom of `row`: row 0 is drawn at the top.
    fn row_bottom(&self, row: usize) -> f64 {
        (self.rows() - 1 - row) as f64
    }

    /// Tick label for a chart x coordinate (cell centres are at `col + 0.5`).
    fn x_label(&self, coord: f64) -> String {
        let col = coord.floor();
        if col >= 0.0 && (col as usize) < self.cols() {
            self.x_ticks[col as usize].clone()
        } else {
            String::new()
        }
    }

    /// Tick label for a chart y coordinate.
    fn y_label(&self, coord: f64) -> String {
        let flipped = coord.floor();
        if flipped >= 0.0 && (flipped as usize) < self.rows() {
            self.y_ticks[self.rows() - 1 - flipped as usize].clone()
        } else {
            String::new()
        }
    }
}

/// The annotation of a cell: a whole percentage, or "n/a" for a missing value.
fn cell_text(value: Option<f64>) -> String {
    match value.filter(|v| !v.is_nan()) {
        Some(v) => format!("{:.0}%", v * 100.0),
        None => "n/a".to_string(),
    }
}

/// Draws the grid with its labels on the left part of `root` and the colour scale on the right.
fn draw(
    root: &Canvas<'_>,
    title: &str,
    x_label: &str,
    y_label: &str,
    grid: &Grid<'_>,
) -> Result<()> {
    let (w, _) = root.dim_in_pixel();
    let (main, scale) = root.split_horizontally(w - SCALE_WIDTH);
    let (cols, rows) = (grid.cols(), grid.rows());

    let y_tick_width = grid
        .y_ticks
        .iter()
        .map(|t| text_width(t, 15.0))
        .max()
        .unwrap_or(0);
    let mut chart = ChartBuilder::on(&main)
        .caption(title, CAPTION)
        .margin(MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(y_tick_width + 50)
        .build_cartesian_2d(
            Ticked::new(
                0.0..cols as f64,
                (0..cols).map(|c| c as f64 + 0.5).collect(),
            ),
            Ticked::new(
                0.0..rows as f64,
                (0..rows).map(|r| r as f64 + 0.5).collect(),
            ),
        )
        .plot_err()?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .x_label_formatter(&|v| grid.x_label(*v))
        .y_label_formatter(&|v| grid.y_label(*v))
        .draw()
        .plot_err()?;

    let cells = grid.values.iter().enumerate().flat_map(|(r, row)| {
        row.iter()
            .enumerate()
            .map(move |(c, &v)| (c as f64, grid.row_bottom(r), v))
    });
    chart
        .draw_series(cells.clone().flat_map(|(x, y, v)| {
            let corners = [(x, y), (x + 1.0, y + 1.0)];
            [
                Rectangle::new(corners, accuracy_colour(v).filled()),
                // White borders separate neighbouring cells of similar colour.
                Rectangle::new(corners, WHITE.stroke_width(2)),
            ]
        }))
        .plot_err()?;

    // Font size from the cell size in pixels; skip annotations that would not fit.
    let (pw, ph) = chart.plotting_area().dim_in_pixel();
    let cell_w = f64::from(pw) / cols as f64;
    let cell_h = f64::from(ph) / rows as f64;
    let font_size = (cell_h * 0.4).min(cell_w * 0.28).min(22.0);
    if font_size >= 7.0 {
        chart
            .draw_series(cells.map(|(x, y, v)| {
                // Built field by field: `TextStyle::color` borrows the colour for the style's
                // lifetime, which a per-cell temporary colour cannot satisfy.
                let style = TextStyle {
                    font: (FONT, font_size).into_font(),
                    color: text_colour_on(accuracy_colour(v)).to_backend_color(),
                    pos: Pos::new(HPos::Center, VPos::Center),
                };
                Text::new(cell_text(v), (x + 0.5, y + 0.5), style)
            }))
            .plot_err()?;
    }

    draw_scale(&scale)
}

/// The colour scale: a vertical gradient from 0% (bottom) to 100% (top) with labels.
fn draw_scale(area: &Canvas<'_>) -> Result<()> {
    // An invisible caption of the grid's caption size keeps the strip aligned with the grid.
    let mut chart = ChartBuilder::on(area)
        .caption(" ", CAPTION)
        .margin(MARGIN)
        .margin_left(5)
        .x_label_area_size(X_LABEL_AREA)
        .right_y_label_area_size(55)
        .build_cartesian_2d(
            Ticked::new(0.0..1.0, Vec::new()),
            Ticked::new(0.0..1.0, vec![0.0, 0.25, 0.5, 0.75, 1.0]),
        )
        .plot_err()?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .label_style((FONT, 14))
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .draw()
        .plot_err()?;
    const STEPS: usize = 100;
    chart
        .draw_series((0..STEPS).map(|i| {
            let lo = i as f64 / STEPS as f64;
            let hi = (i + 1) as f64 / STEPS as f64;
            let colour = accuracy_colour(Some((lo + hi) / 2.0));
            Rectangle::new([(0.0, lo), (1.0, hi)], colour.filled())
        }))
        .plot_err()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::test_support::assert_png;
    use crate::testutil::TempDir;

    fn labels(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn passkey() -> (Vec<String>, Vec<String>, Vec<Vec<Option<f64>>>) {
        let x = labels(&["1k", "2k", "4k", "8k", "16k"]);
        let y = labels(&["0%", "25%", "50%", "75%", "100%"]);
        let values = (0..5)
            .map(|r| {
                (0..5)
                    .map(|c| match (r, c) {
                        (2, 4) => None,
                        (1, 3) => Some(f64::NAN),
                        _ => Some(1.0 - 0.2 * c as f64 * (r as f64 / 4.0)),
                    })
                    .collect()
            })
            .collect();
        (x, y, values)
    }

    #[test]
    fn writes_a_png_with_missing_cells() {
        let dir = TempDir::new("heatmap");
        let (x, y, values) = passkey();
        let path = dir.path().join("eval/passkey.png");
        heatmap(&path, "Passkey", "context length", "depth", &x, &y, &values).unwrap();
        assert_png(&path);
    }

    #[test]
    fn one_cell_large_grid_and_out_of_range_values() {
        let dir = TempDir::new("heatmap");
        let path = dir.path().join("one.png");
        heatmap(
            &path,
            "t",
            "x",
            "y",
            &labels(&["a"]),
            &labels(&["b"]),
            &[vec![Some(1.7)]],
        )
        .unwrap();
        assert_png(&path);

        let x: Vec<String> = (0..60).map(|i| i.to_string()).collect();
        let y: Vec<String> = (0..40).map(|i| format!("row {i}")).collect();
        let values: Vec<Vec<Option<f64>>> = (0..40)
            .map(|r| {
                (0..60)
                    .map(|c| Some(((r * c) % 11) as f64 / 10.0 - 0.1))
                    .collect()
            })
            .collect();
        let path = dir.path().join("large.png");
        heatmap(&path, "large", "x", "y", &x, &y, &values).unwrap();
        assert_png(&path);
    }

    #[test]
    fn empty_grid_gives_a_no_data_chart() {
        let dir = TempDir::new("heatmap");
        let path = dir.path().join("empty.png");
        heatmap(&path, "t", "x", "y", &[], &[], &[]).unwrap();
        assert_png(&path);
        let path = dir.path().join("no-cols.png");
        heatmap(&path, "t", "x", "y", &[], &labels(&["a"]), &[vec![]]).unwrap();
        assert_png(&path);
    }

    #[test]
    fn shape_mismatch_is_an_error_naming_the_path() {
        let dir = TempDir::new("heatmap");
        let path = dir.path().join("bad.png");
        let err = heatmap(
            &path,
            "t",
            "x",
            "y",
            &labels(&["a", "b"]),
            &labels(&["r"]),
            &[vec![Some(0.5)]],
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("bad.png") && msg.contains("row 0"), "{msg}");
        let err = heatmap(
            &path,
            "t",
            "x",
            "y",
            &labels(&["a"]),
            &[],
            &[vec![Some(0.5)]],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("y tick labels"), "{err:#}");
        assert!(!path.exists());
    }

    #[test]
    fn bad_path_is_an_error_naming_it() {
        let dir = TempDir::new("heatmap");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let path = file.join("passkey.png");
        let (x, y, values) = passkey();
        let err = heatmap(&path, "t", "x", "y", &x, &y, &values).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn labels_map_cell_centres_to_ticks() {
        let x = labels(&["1k", "2k"]);
        let y = labels(&["top", "mid", "bottom"]);
        let values = vec![vec![None; 2]; 3];
        let grid = Grid {
            x_ticks: &x,
            y_ticks: &y,
            values: &values,
        };
        assert_eq!(grid.x_label(0.5), "1k");
        assert_eq!(grid.x_label(1.5), "2k");
        assert_eq!(grid.x_label(2.5), "");
        assert_eq!(grid.y_label(2.5), "top");
        assert_eq!(grid.y_label(0.5), "bottom");
        assert_eq!(grid.row_bottom(0), 2.0);
        assert_eq!(cell_text(Some(0.875)), "88%");
        assert_eq!(cell_text(Some(1.0)), "100%");
        assert_eq!(cell_text(None), "n/a");
        assert_eq!(cell_text(Some(f64::NAN)), "n/a");
    }
}
