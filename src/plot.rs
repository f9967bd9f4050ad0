//! Line charts written as PNG or SVG: a title, axis labels, any number of named series (with a
//! legend when there are several), and an optional secondary y axis on the right, e.g. a
//! learning rate drawn over loss curves. Series may share a colour or be dashed; the legend
//! goes to the corner where it hides least, and where every corner would hide a curve the y
//! axes are raised to make room. A [`Figure`] stacks several charts in one image.
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

use plotters::chart::DualCoordChartContext;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The coordinates of a chart's axes.
type Coords = Cartesian2d<RangedCoordf64, RangedCoordf64>;

/// The font plotters' "sans-serif" family resolves to once registered.
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Series colours, in order of addition (matplotlib's ten, distinct on white).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
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
    /// The cause's text is part of the message, so the cause is not also given as the error's
    /// source.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
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
    /// Index into the palette; `None` takes the series' position in its chart, so series get
    /// distinct colours unless two are meant to match (one run's loss and its rate, say).
    pub color: Option<usize>,
    /// Drawn dashed, to tell apart two series of one colour.
    pub dashed: bool,
}

impl Series {
    /// A series on the primary (left) axis.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            axis: YAxis::Primary,
            color: None,
            dashed: false,
        }
    }

    /// Moves the series to the secondary (right) axis.
    pub fn on_secondary_axis(mut self) -> Self {
        self.axis = YAxis::Secondary;
        self
    }

    /// Draws the series in the palette's colour number `index` (wrapping around).
    pub fn color(mut self, index: usize) -> Self {
        self.color = Some(index);
        self
    }

    /// Draws the series as a dashed line.
    pub fn dashed(mut self) -> Self {
        self.dashed = true;
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
    /// Limits the left axis never goes past (an accuracy's [0, 1]), however the data and the
    /// legend pad it.
    pub y_limits: Option<(f64, f64)>,
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
            y_limits: None,
        }
    }

    /// Keeps the left axis within `[low, high]` (see [`Chart::y_limits`]).
    pub fn y_within(mut self, low: f64, high: f64) -> Self {
        self.y_limits = Some((low, high));
        self
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
        write_image(self, path)
    }

    /// The chart as an SVG document; `path` only names the chart in errors.
    pub fn to_svg(&self, path: &Path) -> Result<String, PlotError> {
        svg_of(self, path)
    }

    /// The chart as a PNG file's bytes; `path` only names the chart in errors.
    pub fn to_png(&self, path: &Path) -> Result<Vec<u8>, PlotError> {
        png_of(self, path)
    }

    /// Draws the chart into `area`. `caption_size` is the title's font size;
    /// `reserve_right_axis` keeps room for a right axis even without secondary series, so
    /// stacked panels' plotting areas line up.
    fn draw_into<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        caption_size: u32,
        reserve_right_axis: bool,
    ) -> Result<(), String> {
        let error = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let on_axis = |axis: YAxis| self.series.iter().filter(move |s| s.axis == axis);
        let has_secondary = on_axis(YAxis::Secondary).next().is_some();
        let right_axis = has_secondary || reserve_right_axis;
        let x_range = padded_range(self.series.iter().flat_map(|s| finite(s).map(|p| p.0)), 0.0);
        let mut y_range = padded_range(
            on_axis(YAxis::Primary).flat_map(|s| finite(s).map(|p| p.1)),
            0.05,
        );
        let mut y2_range = padded_range(
            on_axis(YAxis::Secondary).flat_map(|s| finite(s).map(|p| p.1)),
            0.05,
        );
        // A legend once there is something to tell apart and a name to tell it by.
        let show_legend = self.series.len() > 1 && self.series.iter().any(|s| !s.name.is_empty());
        let legend = self.legend_size(estimated_plot_size(
            area.dim_in_pixel(),
            !self.title.is_empty(),
            caption_size,
            right_axis,
        ));
        if show_legend && self.legend_corner(legend, &x_range, &y_range, &y2_range).1 > 0 {
            // Every corner would hide some curve: raise both y axes' tops so the curves keep
            // clear of a band as high as the legend.
            y_range = with_headroom(&y_range, legend.1);
            y2_range = with_headroom(&y2_range, legend.1);
        }
        if let Some((low, high)) = self.y_limits {
            y_range = y_range.start.max(low)..y_range.end.min(high);
        }

        let mut builder = ChartBuilder::on(area);
        if !self.title.is_empty() {
            builder.caption(&self.title, ("sans-serif", caption_size));
        }
        let mut chart = builder
            .margin(16)
            // Room for the last x tick label, centred on the plot's right edge.
            .margin_right(if right_axis { 16 } else { 40 })
            .x_label_area_size(56)
            .y_label_area_size(96)
            .right_y_label_area_size(if right_axis { 96 } else { 0 })
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

        self.draw_series(&mut chart)?;
        if show_legend {
            let (position, _) = self.legend_corner(legend, &x_range, &y_range, &y2_range);
            chart
                .configure_series_labels()
                .position(position)
                .label_font(tick_style)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(error)?;
        }
        Ok(())
    }

    /// Draws every series on its axis, each run of finite points as a line of its own; the
    /// first run of a named series carries its legend entry.
    fn draw_series<'a, DB: DrawingBackend + 'a>(
        &self,
        chart: &mut DualCoordChartContext<'a, DB, Coords, Coords>,
    ) -> Result<(), String> {
        let error = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        for (index, series) in self.series.iter().enumerate() {
            let color = PALETTE[series.color.unwrap_or(index) % PALETTE.len()];
            let style = color.stroke_width(2);
            let mut labelled = false;
            for run in finite_runs(&series.points) {
                let points = run.iter().copied();
                let annotation = match (series.axis, series.dashed) {
                    (YAxis::Primary, false) => chart.draw_series(LineSeries::new(points, style)),
                    (YAxis::Primary, true) => {
                        chart.draw_series(DashedLineSeries::new(points, 8, 5, style))
                    }
                    (YAxis::Secondary, false) => {
                        chart.draw_secondary_series(LineSeries::new(points, style))
                    }
                    (YAxis::Secondary, true) => {
                        chart.draw_secondary_series(DashedLineSeries::new(points, 8, 5, style))
                    }
                }
                .map_err(error)?;
                if !labelled && !series.name.is_empty() {
                    labelled = true;
                    let dashed = series.dashed;
                    annotation.label(&series.name).legend(move |(x, y)| {
                        let sample = vec![(x, y), (x + 20, y)];
                        let style = color.stroke_width(2);
                        if dashed {
                            DashedPathElement::new(sample, 6, 4, style).into_dyn()
                        } else {
                            PathElement::new(sample, style).into_dyn()
                        }
                    });
                }
            }
        }
        Ok(())
    }

    /// The legend's estimated width and height as fractions of a plotting area of
    /// `plot_size` pixels: plotters draws a 30-pixel sample and the name (about 9 pixels a
    /// character at 16 pixels) on rows of about 22 pixels.
    fn legend_size(&self, plot_size: (f64, f64)) -> (f64, f64) {
        let named = self.series.iter().filter(|s| !s.name.is_empty());
        let longest_name = named.clone().map(|s| s.name.chars().count()).max();
        let rows = named.count() as f64;
        let width = 45.0 + 9.0 * longest_name.unwrap_or(0) as f64;
        let height = 14.0 + 22.0 * rows;
        (
            (width / plot_size.0.max(1.0)).min(1.0),
            (height / plot_size.1.max(1.0)).min(0.9),
        )
    }

    /// The corner of the plotting area where a legend of `legend` (fractions of the area)
    /// hides the least of the curves, and how many sampled points of the lines it would
    /// cover; the first of upper right, upper left, lower right and lower left on a tie.
    fn legend_corner(
        &self,
        (legend_width, legend_height): (f64, f64),
        x_range: &Range<f64>,
        y_range: &Range<f64>,
        y2_range: &Range<f64>,
    ) -> (SeriesLabelPosition, usize) {
        // plotters insets the legend by 5 pixels (about 1% of the area) from the corner.
        let (legend_width, legend_height) = (legend_width + 0.01, legend_height + 0.01);
        let corners = [
            (SeriesLabelPosition::UpperRight, 1.0 - legend_width, 0.0),
            (SeriesLabelPosition::UpperLeft, 0.0, 0.0),
            (
                SeriesLabelPosition::LowerRight,
                1.0 - legend_width,
                1.0 - legend_height,
            ),
            (SeriesLabelPosition::LowerLeft, 0.0, 1.0 - legend_height),
        ];
        // Each line's points in the unit square, x rightwards and y downwards.
        let normalized: Vec<Vec<(f64, f64)>> = self
            .series
            .iter()
            .map(|series| {
                let y_range = match series.axis {
                    YAxis::Primary => y_range,
                    YAxis::Secondary => y2_range,
                };
                series
                    .points
                    .iter()
                    .map(|&(x, y)| {
                        (
                            (x - x_range.start) / (x_range.end - x_range.start),
                            (y_range.end - y) / (y_range.end - y_range.start),
                        )
                    })
                    .collect()
            })
            .collect();
        let covered = |left: f64, top: f64| {
            let inside = |(x, y): (f64, f64)| {
                x >= left && x <= left + legend_width && y >= top && y <= top + legend_height
            };
            normalized
                .iter()
                .flat_map(|line| line.windows(2))
                .filter(|pair| pair.iter().all(|(x, y)| x.is_finite() && y.is_finite()))
                .map(|pair| {
                    // Samples along the segment, so sparse lines count as well as dense ones.
                    const SAMPLES: usize = 16;
                    let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
                    (0..SAMPLES)
                        .map(|k| k as f64 / SAMPLES as f64)
                        .filter(|t| inside((x0 + t * (x1 - x0), y0 + t * (y1 - y0))))
                        .count()
                })
                .sum::<usize>()
        };
        corners
            .into_iter()
            .map(|(position, left, top)| (position, covered(left, top)))
            .fold(
                None,
                |best: Option<(SeriesLabelPosition, usize)>, candidate| match best {
                    Some(best) if best.1 <= candidate.1 => Some(best),
                    _ => Some(candidate),
                },
            )
            .unwrap_or((SeriesLabelPosition::UpperRight, 0))
    }
}

/// Charts stacked vertically in one image, sharing a title: accuracy above loss, say, where
/// one axis would squash either. Panels keep room for a right axis if any has one, so their
/// plotting areas line up.
///
/// ```no_run
/// use rcaffe::plot::{Chart, Figure, Series};
/// let figure = Figure::new("Run")
///     .panel(Chart::new("").y_label("accuracy").series(Series::new("acc", vec![(0.0, 0.1)])))
///     .panel(Chart::new("").y_label("loss").series(Series::new("loss", vec![(0.0, 2.3)])));
/// figure.write(std::path::Path::new("run.png")).unwrap();
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub title: String,
    /// Top to bottom, each given an equal share of the height; their own sizes are ignored.
    pub panels: Vec<Chart>,
    /// Width and height in pixels.
    pub size: (u32, u32),
}

impl Figure {
    /// An empty figure, 1024 pixels wide and 440 a panel high once panels are added.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            panels: Vec::new(),
            size: (1024, 0),
        }
    }

    pub fn panel(mut self, chart: Chart) -> Self {
        self.panels.push(chart);
        self
    }

    /// A fixed size instead of the default 440 pixels a panel.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// Writes the figure as PNG or SVG, as `path`'s extension says.
    pub fn write(&self, path: &Path) -> Result<(), PlotError> {
        write_image(self, path)
    }

    /// The figure as an SVG document; `path` only names the figure in errors.
    pub fn to_svg(&self, path: &Path) -> Result<String, PlotError> {
        svg_of(self, path)
    }

    /// The figure as a PNG file's bytes; `path` only names the figure in errors.
    pub fn to_png(&self, path: &Path) -> Result<Vec<u8>, PlotError> {
        png_of(self, path)
    }
}

/// What can be rendered: a chart or a figure of several.
trait Drawing {
    fn pixel_size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String>;
}

impl Drawing for Chart {
    fn pixel_size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        register_font()?;
        let error = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(error)?;
        self.draw_into(&root, 28, false)?;
        root.present().map_err(error)
    }
}

impl Drawing for Figure {
    fn pixel_size(&self) -> (u32, u32) {
        match self.size {
            (width, 0) => {
                let title = if self.title.is_empty() { 0 } else { 40 };
                (width, title + 440 * self.panels.len().max(1) as u32)
            }
            size => size,
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        register_font()?;
        let error = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(error)?;
        let body = if self.title.is_empty() {
            root.clone()
        } else {
            root.titled(&self.title, ("sans-serif", 28))
                .map_err(error)?
        };
        let right_axis = self
            .panels
            .iter()
            .any(|panel| panel.series.iter().any(|s| s.axis == YAxis::Secondary));
        let areas = body.split_evenly((self.panels.len().max(1), 1));
        for (panel, area) in self.panels.iter().zip(&areas) {
            panel.draw_into(area, 22, right_axis)?;
        }
        root.present().map_err(error)
    }
}

fn write_image(drawing: &impl Drawing, path: &Path) -> Result<(), PlotError> {
    let format = ImageFormat::from_path(path).ok_or_else(|| PlotError::UnsupportedFormat {
        path: path.to_path_buf(),
    })?;
    let bytes = match format {
        ImageFormat::Png => png_of(drawing, path)?,
        ImageFormat::Svg => svg_of(drawing, path)?.into_bytes(),
    };
    std::fs::write(path, bytes).map_err(|error| PlotError::Io {
        path: path.to_path_buf(),
        error,
    })
}

fn svg_of(drawing: &impl Drawing, path: &Path) -> Result<String, PlotError> {
    let mut svg = String::new();
    let root = SVGBackend::with_string(&mut svg, drawing.pixel_size()).into_drawing_area();
    drawing
        .draw(root)
        .map_err(|message| render_error(path, message))?;
    Ok(svg)
}

fn png_of(drawing: &impl Drawing, path: &Path) -> Result<Vec<u8>, PlotError> {
    let (width, height) = drawing.pixel_size();
    let mut rgb = vec![0u8; 3 * width as usize * height as usize];
    let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
    drawing
        .draw(root)
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

/// The plotting area's size in pixels inside an area of `area` pixels, given the margins and
/// label areas [`Chart::draw_into`] asks for (the caption's height estimated).
fn estimated_plot_size(
    area: (u32, u32),
    has_caption: bool,
    caption_size: u32,
    right_axis: bool,
) -> (f64, f64) {
    let caption = if has_caption {
        f64::from(caption_size) * 1.5
    } else {
        0.0
    };
    let right = if right_axis { 16.0 + 96.0 } else { 40.0 };
    (
        f64::from(area.0) - 16.0 - 96.0 - right,
        f64::from(area.1) - 2.0 * 16.0 - 56.0 - caption,
    )
}

/// `range` with its top raised so that its old span fills only the part of the axis below a
/// band of `fraction` of its height (plus a little air).
fn with_headroom(range: &Range<f64>, fraction: f64) -> Range<f64> {
    let kept = (1.0 - fraction - 0.02).max(0.1);
    range.start..range.start + (range.end - range.start) / kept
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
