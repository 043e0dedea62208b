//! Line charts: one or more series of `(x, y)` points.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use super::axis::Axis;
use super::canvas::{draw_no_data, render_png, text_width, Canvas, PlotResultExt, FONT};
use super::colour::series_colour;
use super::Series;

/// Size of line charts, in pixels.
const SIZE: (u32, u32) = (1000, 600);

/// Series with at most this many points also get a dot per point: with few points (perplexity
/// at a handful of lengths, a single validation point) the line alone hides where the data is,
/// and a single point would draw no line at all.
const MARKER_MAX_POINTS: usize = 40;

/// Writes a line chart of `series` to `path` as a PNG (1000×600), with a legend when there is
/// more than one series and a base-10 log y axis when `log_y`.
///
/// Points with a non-finite coordinate are skipped, as are points with `y <= 0` on a log axis
/// (they have no position there). When no point is left, the chart says "no data" instead of
/// failing, so callers always find a file where they expect one.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    let plotted: Vec<Vec<(f64, f64)>> =
        series.iter().map(|s| plottable(&s.points, log_y)).collect();
    let labels = Labels {
        title,
        x: x_label,
        y: y_label,
    };
    render_png(path, SIZE, |root| match axes(&plotted, log_y)? {
        None => draw_no_data(root, title, "no data"),
        Some((x, y)) => draw(root, &labels, series, &plotted, &x, &y),
    })
    .with_context(|| format!("writing line chart {}", path.display()))
}

/// Chart title and axis descriptions.
struct Labels<'a> {
    title: &'a str,
    x: &'a str,
    y: &'a str,
}

/// The points of a series that can be drawn on the chosen scale.
fn plottable(points: &[(f64, f64)], log_y: bool) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
        .collect()
}

/// Axes covering all plottable points, or `None` when there are none.
fn axes(plotted: &[Vec<(f64, f64)>], log_y: bool) -> Result<Option<(Axis, Axis)>> {
    let mut points = plotted.iter().flatten();
    let Some(&(x0, y0)) = points.next() else {
        return Ok(None);
    };
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (x0, x0, y0, y0);
    for &(x, y) in points {
        x_lo = x_lo.min(x);
        x_hi = x_hi.max(x);
        y_lo = y_lo.min(y);
        y_hi = y_hi.max(y);
    }
    // No padding on x: curves start and end at the plot edges, as loss curves usually do.
    let x = Axis::linear(x_lo, x_hi, 0.0)?;
    let y = if log_y {
        Axis::log10(y_lo, y_hi)?
    } else {
        Axis::linear(y_lo, y_hi, 0.05)?
    };
    Ok(Some((x, y)))
}

/// The corner of the plot with the fewest points, where the legend hides the least data.
fn legend_position(plotted: &[Vec<(f64, f64)>], x: &Axis, y: &Axis) -> SeriesLabelPosition {
    let frac = |v: f64, r: &std::ops::Range<f64>| (v - r.start) / (r.end - r.start);
    // (right, upper) per corner, in order of preference when counts tie.
    let corners = [
        (true, true, SeriesLabelPosition::UpperRight),
        (false, true, SeriesLabelPosition::UpperLeft),
        (true, false, SeriesLabelPosition::LowerRight),
        (false, false, SeriesLabelPosition::LowerLeft),
    ];
    let count = |right: bool, upper: bool| {
        plotted
            .iter()
            .flatten()
            .filter(|&&(px, py)| {
                let fx = frac(px, &x.range);
                let fy = frac(y.coord(py), &y.range);
                (if right { fx > 0.6 } else { fx < 0.4 })
                    && (if upper { fy > 0.6 } else { fy < 0.4 })
            })
            .count()
    };
    corners
        .into_iter()
        .min_by_key(|&(right, upper, _)| count(right, upper))
        .map_or(SeriesLabelPosition::UpperRight, |(_, _, pos)| pos)
}

/// Draws axes, series and legend.
fn draw(
    root: &Canvas<'_>,
    labels: &Labels<'_>,
    series: &[Series],
    plotted: &[Vec<(f64, f64)>],
    x: &Axis,
    y: &Axis,
) -> Result<()> {
    let y_tick_width = y
        .ticks
        .iter()
        .map(|&t| text_width(&y.label(t), 15.0))
        .max()
        .unwrap_or(0);
    let mut chart = ChartBuilder::on(root)
        .caption(labels.title, (FONT, 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(y_tick_width + 45)
        .build_cartesian_2d(x.spec(), y.spec())
        .plot_err()?;
    chart
        .configure_mesh()
        .x_desc(labels.x)
        .y_desc(labels.y)
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .x_label_formatter(&|v| x.label(*v))
        .y_label_formatter(&|v| y.label(*v))
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .plot_err()?;

    for (i, (s, points)) in series.iter().zip(plotted).enumerate() {
        let colour = series_colour(i);
        let coords: Vec<(f64, f64)> = points.iter().map(|&(px, py)| (px, y.coord(py))).collect();
        let anno = chart
            .draw_series(LineSeries::new(
                coords.iter().copied(),
                colour.stroke_width(2),
            ))
            .plot_err()?;
        if series.len() > 1 {
            anno.label(s.name.as_str()).legend(move |(lx, ly)| {
                PathElement::new(vec![(lx, ly), (lx + 24, ly)], colour.stroke_width(3))
            });
        }
        if coords.len() <= MARKER_MAX_POINTS {
            chart
                .draw_series(coords.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .plot_err()?;
        }
    }

    if series.len() > 1 {
        chart
            .configure_series_labels()
            .position(legend_position(plotted, x, y))
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .margin(12)
            .draw()
            .plot_err()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::test_support::assert_png;
    use crate::testutil::TempDir;

    fn loss_curves() -> Vec<Series> {
        let train = (0..=200)
            .map(|i| {
                let step = i as f64 * 10.0;
                (
                    step,
                    2.0 + 6.0 * (-step / 400.0).exp() + 0.05 * (step / 7.0).sin(),
                )
            })
            .collect();
        let val = (0..=10)
            .map(|i| {
                let step = i as f64 * 200.0;
                (step, 2.1 + 6.0 * (-step / 400.0).exp())
            })
            .collect();
        vec![
            Series::new("train loss", train),
            Series::new("val loss", val),
        ]
    }

    #[test]
    fn writes_a_png_linear_and_log() {
        let dir = TempDir::new("line");
        for log_y in [false, true] {
            let path = dir.path().join(format!("charts/loss-{log_y}.png"));
            line_chart(&path, "Loss", "step", "loss", &loss_curves(), log_y).unwrap();
            assert_png(&path);
        }
    }

    #[test]
    fn non_finite_and_non_positive_points_are_skipped() {
        let dir = TempDir::new("line");
        let series = vec![
            Series::new(
                "a",
                vec![
                    (0.0, 1.0),
                    (1.0, f64::NAN),
                    (f64::INFINITY, 2.0),
                    (2.0, 3.0),
                ],
            ),
            Series::new(
                "b",
                vec![
                    (0.0, -1.0),
                    (1.0, 0.0),
                    (2.0, f64::NEG_INFINITY),
                    (3.0, 5.0),
                ],
            ),
        ];
        for log_y in [false, true] {
            let path = dir.path().join(format!("nan-{log_y}.png"));
            line_chart(&path, "t", "x", "y", &series, log_y).unwrap();
            assert_png(&path);
        }
        assert_eq!(plottable(&series[1].points, true), [(3.0, 5.0)]);
        assert_eq!(
            plottable(&series[1].points, false),
            [(0.0, -1.0), (1.0, 0.0), (3.0, 5.0)]
        );
    }

    #[test]
    fn single_point_empty_series_and_no_series() {
        let dir = TempDir::new("line");
        let cases: Vec<(&str, Vec<Series>)> = vec![
            ("single", vec![Series::new("ppl", vec![(4096.0, 12.5)])]),
            (
                "one-empty",
                vec![
                    Series::new("ppl", vec![]),
                    Series::new("x", vec![(1.0, 1.0)]),
                ],
            ),
            (
                "all-empty",
                vec![Series::new("ppl", vec![]), Series::new("x", vec![])],
            ),
            (
                "all-nan",
                vec![Series::new("ppl", vec![(f64::NAN, f64::NAN)])],
            ),
            ("none", vec![]),
            ("zero", vec![Series::new("z", vec![(0.0, 0.0), (0.0, 0.0)])]),
        ];
        for (name, series) in cases {
            for log_y in [false, true] {
                let path = dir.path().join(format!("{name}-{log_y}.png"));
                line_chart(&path, name, "x", "y", &series, log_y)
                    .unwrap_or_else(|e| panic!("{name} log_y={log_y}: {e:#}"));
                assert_png(&path);
            }
        }
    }

    #[test]
    fn extreme_but_finite_values_do_not_panic() {
        let dir = TempDir::new("line");
        let path = dir.path().join("extreme.png");
        let series = vec![Series::new("s", vec![(0.0, 1e-300), (1.0, 1e300)])];
        line_chart(&path, "t", "x", "y", &series, true).unwrap();
        line_chart(&path, "t", "x", "y", &series, false).unwrap();
        let series = vec![Series::new("s", vec![(-f64::MAX, 0.0), (f64::MAX, 1.0)])];
        // Too wide to plot: an error naming the file, not a panic.
        let err = line_chart(&path, "t", "x", "y", &series, false).unwrap_err();
        assert!(format!("{err:#}").contains("extreme.png"), "{err:#}");
    }

    #[test]
    fn bad_path_is_an_error_naming_it() {
        let dir = TempDir::new("line");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let path = file.join("sub/chart.png");
        let err = line_chart(&path, "t", "x", "y", &loss_curves(), false).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn legend_goes_to_the_emptiest_corner() {
        // A rising curve fills lower-left and upper-right.
        let rising = vec![(0..=10).map(|i| (i as f64, i as f64)).collect::<Vec<_>>()];
        let x = Axis::linear(0.0, 10.0, 0.0).unwrap();
        let y = Axis::linear(0.0, 10.0, 0.0).unwrap();
        assert!(matches!(
            legend_position(&rising, &x, &y),
            SeriesLabelPosition::UpperLeft
        ));
    }
}
