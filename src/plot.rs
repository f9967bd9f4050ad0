//! Line charts written as PNG or SVG: a title, axis labels, any number of named series (with a
//! legend when there are several), and an optional secondary y axis on the right, e.g. a
//! learning rate drawn over loss curves.
//!
//! Text is drawn with DejaVu Sans embedded in the binary (assets/fonts/, with its license), so
//! rendering needs no system font libraries.
//!
//! ```no_run
//! use rcaffe::plot::{Chart, Series};
//! let chart = Chart::new("Training")
//!     .x_label("iteration")
//!     .y_label("loss")
//!     .secondary_y_label("learning rate")
//!     .series(Series::new("loss", vec![(0.0, 2.3), (100.0, 1.1)]))
//!     .series(Series::new("lr", vec![(0.0, 0.001), (100.0, 0.006)]).on_secondary_axis());
//! chart.write(std::path::Path::new("training.png")).unwrap();
//! ```

use plotters::coord::Shift;
use plotters::prelude::*;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The font plotters' "sans-serif" family resolves to once registered.
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Series colours, in order of addition (matplotlib's first six, distinct on white).
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// What can go wrong writing a chart. Every variant names the output file.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error(
        "{}: unsupported chart format; supported extensions: {}",
        path.display(),
        ImageFormat::EXTENSIONS.join(", ")
    )]
    UnsupportedFormat { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: drawing the chart failed: {message}", path.display())]
    Render { path: PathBuf, message: String },
}

/// The image formats a chart can be written in, chosen by the output file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Svg,
}

impl ImageFormat {
    /// The extensions [`ImageFormat::from_path`] recognises (in any letter case).
    pub const EXTENSIONS: [&'static str; 2] = ["png", "svg"];

    /// The format named by `path`'s extension, if it is one of [`ImageFormat::EXTENSIONS`].
    pub fn from_path(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?;
        if extension.eq_ignore_ascii_case("png") {
            Some(Self::Png)
        } else if extension.eq_ignore_ascii_case("svg") {
            Some(Self::Svg)
        } else {
            None
        }
    }
}

/// Which y axis a series is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YAxis {
    /// The left axis.
    #[default]
    Primary,
    /// The right axis, with its own range and label.
    Secondary,
}

/// One named line of (x, y) points, drawn in order. Non-finite points break the line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub axis: YAxis,
}

impl Series {
    /// A series on the primary (left) axis.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            axis: YAxis::Primary,
        }
    }

    /// Moves the series to the secondary (right) axis.
    pub fn on_secondary_axis(mut self) -> Self {
        self.axis = YAxis::Secondary;
        self
    }
}

/// A line chart: build it with the chained setters, then [`Chart::write`] it.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub secondary_y_label: String,
    pub series: Vec<Series>,
    /// Width and height in pixels.
    pub size: (u32, u32),
}

impl Chart {
    /// An empty 1024×640 chart.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            x_label: String::new(),
            y_label: String::new(),
            secondary_y_label: String::new(),
            series: Vec::new(),
            size: (1024, 640),
        }
    }

    pub fn x_label(mut self, label: impl Into<String>) -> Self {
        self.x_label = label.into();
        self
    }

    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = label.into();
        self
    }

    pub fn secondary_y_label(mut self, label: impl Into<String>) -> Self {
        self.secondary_y_label = label.into();
        self
    }

    pub fn series(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// Writes the chart as PNG or SVG, as `path`'s extension says.
    pub fn write(&self, path: &Path) -> Result<(), PlotError> {
        let format = ImageFormat::from_path(path).ok_or_else(|| PlotError::UnsupportedFormat {
            path: path.to_path_buf(),
        })?;
        let bytes = match format {
            ImageFormat::Png => self.to_png(path)?,
            ImageFormat::Svg => self.to_svg(path)?.into_bytes(),
        };
        std::fs::write(path, bytes).map_err(|source| PlotError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The chart as an SVG document; `path` only names the chart in errors.
    pub fn to_svg(&self, path: &Path) -> Result<String, PlotError> {
        let mut svg = String::new();
        let root = SVGBackend::with_string(&mut svg, self.size).into_drawing_area();
        self.draw(root)
            .map_err(|message| render_error(path, message))?;
        Ok(svg)
    }

    /// The chart as a PNG file's bytes; `path` only names the chart in errors.
    pub fn to_png(&self, path: &Path) -> Result<Vec<u8>, PlotError> {
        let (width, height) = self.size;
        let mut rgb = vec![0u8; 3 * width as usize * height as usize];
        let root = BitMapBackend::with_buffer(&mut rgb, self.size).into_drawing_area();
        self.draw(root)
            .map_err(|message| render_error(path, message))?;
        let mut png_bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut png_bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder
            .write_header()
            .and_then(|mut writer| writer.write_image_data(&rgb))
            .map_err(|error| render_error(path, format!("PNG encoding: {error}")))?;
        Ok(png_bytes)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        register_font()?;
        let error = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(error)?;

        let on_axis = |axis: YAxis| self.series.iter().filter(move |s| s.axis == axis);
        let has_secondary = on_axis(YAxis::Secondary).next().is_some();
        let x_range = padded_range(self.series.iter().flat_map(|s| finite(s).map(|p| p.0)), 0.0);
        let y_range = padded_range(
            on_axis(YAxis::Primary).flat_map(|s| finite(s).map(|p| p.1)),
            0.05,
        );
        let y2_range = padded_range(
            on_axis(YAxis::Secondary).flat_map(|s| finite(s).map(|p| p.1)),
            0.05,
        );

        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 28))
            .margin(16)
            // Room for the last x tick label, centred on the plot's right edge.
            .margin_right(if has_secondary { 16 } else { 40 })
            .x_label_area_size(56)
            .y_label_area_size(96)
            .right_y_label_area_size(if has_secondary { 96 } else { 0 })
            .build_cartesian_2d(x_range.clone(), y_range.clone())
            .map_err(error)?
            .set_secondary_coord(x_range.clone(), y2_range.clone());

        let label_style = ("sans-serif", 20);
        let tick_style = ("sans-serif", 16);
        let x_ticks = tick_formatter(&x_range);
        let y_ticks = tick_formatter(&y_range);
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .axis_desc_style(label_style)
            .label_style(tick_style)
            .x_label_formatter(&x_ticks)
            .y_label_formatter(&y_ticks)
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(error)?;
        if has_secondary {
            let y2_ticks = tick_formatter(&y2_range);
            chart
                .configure_secondary_axes()
                .y_desc(&self.secondary_y_label)
                .axis_desc_style(label_style)
                .label_style(tick_style)
                .y_label_formatter(&y2_ticks)
                .draw()
                .map_err(error)?;
        }

        for (index, series) in self.series.iter().enumerate() {
            let color = PALETTE[index % PALETTE.len()];
            let style = color.stroke_width(2);
            let mut labelled = false;
            for run in finite_runs(&series.points) {
                let line = LineSeries::new(run.iter().copied(), style);
                let annotation = match series.axis {
                    YAxis::Primary => chart.draw_series(line),
                    YAxis::Secondary => chart.draw_secondary_series(line),
                }
                .map_err(error)?;
                if !labelled {
                    labelled = true;
                    annotation.label(&series.name).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                }
            }
        }
        if self.series.len() > 1 {
            chart
                .configure_series_labels()
                .label_font(tick_style)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(error)?;
        }
        root.present().map_err(error)
    }
}

fn render_error(path: &Path, message: String) -> PlotError {
    PlotError::Render {
        path: path.to_path_buf(),
        message,
    }
}

/// Registers the embedded font once per process: plotters keeps its fonts in a global table.
fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded font could not be loaded".to_owned())
    }
}

fn finite(series: &Series) -> impl Iterator<Item = (f64, f64)> + '_ {
    series
        .points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

/// The maximal stretches of consecutive finite points.
fn finite_runs(points: &[(f64, f64)]) -> impl Iterator<Item = &[(f64, f64)]> {
    points
        .split(|(x, y)| !(x.is_finite() && y.is_finite()))
        .filter(|run| !run.is_empty())
}

/// The values' span widened by `margin` of itself on both sides; a single value gets a span
/// around it, and no value at all gives 0..1.
fn padded_range(values: impl Iterator<Item = f64>, margin: f64) -> Range<f64> {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if low > high {
        return 0.0..1.0;
    }
    let span = high - low;
    if span > 0.0 {
        (low - margin * span)..(high + margin * span)
    } else {
        let half = if low == 0.0 { 1.0 } else { low.abs() * 0.1 };
        (low - half)..(high + half)
    }
}

/// Tick labels with as many digits as the axis's range needs: plain decimals for ordinary
/// magnitudes, scientific notation for very small or very large ones (learning rates, say).
fn tick_formatter(range: &Range<f64>) -> impl Fn(&f64) -> String {
    let magnitude = range.start.abs().max(range.end.abs());
    // plotters puts about ten ticks on an axis; one more digit than their spacing needs.
    let spacing = (range.end - range.start) / 10.0;
    let spacing_exponent = spacing.log10().floor() as i32;
    let scientific = magnitude != 0.0 && !(1e-3..1e7).contains(&magnitude);
    let magnitude_exponent = magnitude.log10().floor() as i32;
    move |&value| {
        if value == 0.0 {
            "0".to_owned()
        } else if scientific {
            let digits = (magnitude_exponent - spacing_exponent + 1).clamp(0, 8) as usize;
            let text = format!("{value:.digits$e}");
            match text.split_once('e') {
                Some((mantissa, exponent)) => format!("{}e{exponent}", trim_zeros(mantissa)),
                None => text,
            }
        } else {
            let digits = (1 - spacing_exponent).clamp(0, 12) as usize;
            trim_zeros(&format!("{value:.digits$}")).to_owned()
        }
    }
}

/// "0.0150" → "0.015", "2.000" → "2"; integers are left alone.
fn trim_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}
