//! The drawing surface: font check, in-memory bitmap, PNG encoding, plotters error conversion.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use image::codecs::png::PngEncoder;
use image::{ColorType, ImageEncoder};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::DrawingErrorKind;

use crate::fsutil::write_atomic;

/// The root drawing area charts are drawn on.
pub(crate) type Canvas<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Font family used for all chart text: DejaVu Sans, embedded in the binary (see
/// [`ensure_font`]), so plotting needs neither fontconfig nor an installed font.
pub(crate) const FONT: &str = "sans-serif";

/// DejaVu Sans (Bitstream Vera licence, `assets/DejaVuSans-LICENSE.txt`: free to embed and
/// redistribute).
const DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// What went wrong if text cannot be drawn (the font is compiled in, so this is a bug).
pub(crate) const FONT_HINT: &str = "the embedded DejaVu Sans font could not be used (a ramba bug)";

/// Registers the embedded font with plotters once per process, before any text is drawn.
pub(crate) fn ensure_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<std::result::Result<(), String>> =
        std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS)
                .map_err(|_| "DejaVuSans.ttf does not parse as a TrueType font".to_string())
        })
        .clone()
        .map_err(|e| anyhow!("{e}; {FONT_HINT}"))?;
    FontDesc::new(FontFamily::SansSerif, 16.0, FontStyle::Normal)
        .box_size("0.5%")
        .map(|_| ())
        .map_err(|e| anyhow!("no usable font for chart text ({e}); {FONT_HINT}"))
}

/// Width in pixels of `text` at font `size`; a rough estimate if the font cannot measure it.
pub(crate) fn text_width(text: &str, size: f64) -> u32 {
    let _ = ensure_font();
    FontDesc::new(FontFamily::SansSerif, size, FontStyle::Normal)
        .box_size(text)
        .map(|(w, _)| w)
        .unwrap_or((size * 0.6 * text.chars().count() as f64) as u32)
}

/// Converts plotters' drawing errors into anyhow errors, pointing at fonts when text failed.
pub(crate) trait PlotResultExt<T> {
    fn plot_err(self) -> Result<T>;
}

impl<T, E> PlotResultExt<T> for std::result::Result<T, DrawingAreaErrorKind<E>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn plot_err(self) -> Result<T> {
        self.map_err(|e| {
            let font = matches!(
                e,
                DrawingAreaErrorKind::BackendError(DrawingErrorKind::FontError(_))
            );
            let err = anyhow::Error::new(e);
            if font {
                err.context(format!("drawing text failed; {FONT_HINT}"))
            } else {
                err.context("drawing chart")
            }
        })
    }
}

/// Draws a `width`×`height` chart with `draw` on a white canvas and writes it to `path` as PNG
/// (always PNG, whatever the extension; parent directories are created).
pub(crate) fn render_png(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&Canvas<'_>) -> Result<()>,
) -> Result<()> {
    ensure_font()?;
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).plot_err()?;
        draw(&root)?;
        root.present().plot_err()?;
    }
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&pixels, width, height, ColorType::Rgb8)
        .context("encoding PNG")?;
    write_atomic(path, &png)
}

/// A chart with only its title and a centred grey message, for inputs with nothing to plot:
/// the caller still gets a file at the expected path, which says why it is empty.
pub(crate) fn draw_no_data(root: &Canvas<'_>, title: &str, message: &str) -> Result<()> {
    let area = root
        .margin(20, 20, 20, 20)
        .titled(title, (FONT, 26))
        .plot_err()?;
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from((FONT, 24).into_font())
        .color(&RGBColor(120, 120, 120))
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(message, &style, (w as i32 / 2, h as i32 / 2))
        .plot_err()
}

#[cfg(test)]
mod tests {
    use crate::plot::{line_chart, Series};
    use crate::testutil::TempDir;

    const CHILD: &str = "plot::canvas::tests::child_render_without_fonts";

    /// Run only by [`charts_render_without_system_fonts`], in a process whose fontconfig sees no
    /// fonts (fontconfig state is process-wide, so this cannot run beside the other tests).
    #[test]
    #[ignore = "run in a child process by charts_render_without_system_fonts"]
    fn child_render_without_fonts() {
        let dir = TempDir::new("nofont-child");
        let path = dir.path().join("chart.png");
        let series = [Series::new("s", vec![(0.0, 1.0), (1.0, 2.0)])];
        line_chart(&path, "title", "x", "y", &series, false).unwrap();
        crate::plot::test_support::assert_png(&path);
    }

    /// Text is drawn with the embedded font: a process that sees no system font (an empty
    /// fontconfig configuration) still renders charts. With a system font through fontconfig
    /// this failed with "no usable font".
    #[test]
    fn charts_render_without_system_fonts() {
        let dir = TempDir::new("nofont");
        let conf = dir.path().join("fonts.conf");
        // A valid fontconfig configuration that lists no font directories.
        std::fs::write(
            &conf,
            "<?xml version=\"1.0\"?>\n<fontconfig></fontconfig>\n",
        )
        .unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", CHILD, "--ignored", "--test-threads=1"])
            .env("FONTCONFIG_FILE", &conf)
            .env("FONTCONFIG_PATH", dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
