//! WindowData: batches of image windows for R-CNN detection training, sampled from a window
//! file (upstream: src/caffe/layers/window_data_layer.cpp).
//!
//! The window file repeats, per image: `# <image_index>`, the image path (after
//! `window_data_param.root_folder`, joined as text as upstream does), its channels, height and
//! width, the number of windows, then one `class_index overlap x1 y1 x2 y2` line per window
//! (inclusive pixel corners). A window whose overlap is at least `fg_threshold` is
//! foreground (its class must be positive); one below `bg_threshold` is background (label 0);
//! the rest are dropped.
//!
//! Each batch holds `batch_size - floor(batch_size * fg_fraction)` background windows, then
//! the foreground ones, each drawn uniformly from its set. A window is cut out of its image
//! (read in colour), widened so that after warping `context_pad` pixels of context surround
//! it (`crop_mode: "square"` also makes it square), clipped to the image, warped with
//! bilinear interpolation into its part of the `crop_size x crop_size` crop (the part that
//! fell outside the image stays 0), mirrored with `mirror`, and stored as
//! `(pixel - mean) * scale`.
//!
//! As upstream, `crop_size`, `mirror`, `mean_file` and `mean_value` come from
//! `transform_param`, while `scale` comes from `window_data_param`; the deprecated
//! `window_data_param` `crop_size`, `mirror` and `mean_file` are not read (a warning says so).
//! Errors name the window file and line: a malformed line, a window outside its image, an
//! image that cannot be read or is not the size the file declares.
//!
//! Where this differs from OpenCV: the bilinear warp is OpenCV's `INTER_LINEAR`
//! ([`resize_linear`]), pixel for pixel for PNG; JPEG decoding may differ from libjpeg's by a
//! grey level. Image indices must count up from 0 in file order (upstream uses the index to
//! look the image up and would read the wrong one otherwise), and images must declare 3
//! channels (upstream always reads colour).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::Rng as _;

use crate::backend::{rng_from_seed, Backend, Rng};
use crate::blob::Blob;
use crate::data::imgcodec::{decode_image, read_image, resize_linear, ColorMode, Image};
use crate::data::prefetch::{Batch, BatchSource, Prefetcher};
use crate::data::DataError;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::{LayerParameter, TransformationParameter, WindowDataParameter};
use crate::proto::{blob_proto_shape, read_blob_proto};

/// Every image is read in colour: three channels, BGR.
const CHANNELS: usize = 3;

/// The WindowData layer.
pub struct WindowDataLayer {
    name: String,
    param: WindowDataParameter,
    transform_param: TransformationParameter,
    prefetch: usize,
    prefetcher: Option<Prefetcher>,
}

fn data_error(e: DataError) -> LayerError {
    LayerError::invalid(e.to_string())
}

impl WindowDataLayer {
    /// Reads and checks `window_data_param` and the `transform_param` fields it uses.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.window_data_param.clone().unwrap_or_default();
        let t = param.transform_param.clone().unwrap_or_default();
        let invalid = |m: &str| Err(LayerError::invalid(m));
        if p.source().is_empty() {
            return invalid("window_data_param.source is required");
        }
        if p.batch_size() == 0 {
            return invalid("window_data_param.batch_size must be positive");
        }
        if !(0.0..=1.0).contains(&p.fg_fraction()) {
            return invalid("window_data_param.fg_fraction must lie in [0, 1]");
        }
        if !matches!(p.crop_mode(), "warp" | "square") {
            return invalid("window_data_param.crop_mode must be \"warp\" or \"square\"");
        }
        if t.crop_size() == 0 {
            return invalid("WindowData needs transform_param.crop_size (the warped size)");
        }
        if 2 * p.context_pad() >= t.crop_size() {
            return invalid(
                "window_data_param.context_pad must be less than half of transform_param.crop_size",
            );
        }
        if t.mean_file.is_some() && !t.mean_value.is_empty() {
            return invalid(
                "transform_param: cannot specify mean_file and mean_value at the same time",
            );
        }
        if !matches!(t.mean_value.len(), 0 | 1 | CHANNELS) {
            return invalid("transform_param.mean_value: specify either 1 mean_value or 3");
        }
        for (set, field) in [
            (p.crop_size.is_some(), "crop_size"),
            (p.mirror.is_some(), "mirror"),
            (p.mean_file.is_some(), "mean_file"),
        ] {
            if set {
                log::warn!(
                    "window_data_param.{field} is deprecated and not read; set \
                     transform_param.{field}"
                );
            }
        }
        Ok(WindowDataLayer {
            name: param.name().to_string(),
            param: p,
            transform_param: t,
            prefetch: param.data_param.as_ref().map_or(4, |d| d.prefetch()) as usize,
            prefetcher: None,
        })
    }
}

// ---- The window file ----------------------------------------------------------------------

/// One image of the window file.
#[derive(Debug, Clone)]
struct ImageRecord {
    path: PathBuf,
    height: usize,
    width: usize,
    /// The line of its `#` header.
    line: usize,
    /// The file's bytes, with `cache_images`.
    cached: Option<Vec<u8>>,
}

/// One kept window: its image, label (0 for background) and inclusive corners.
#[derive(Debug, Clone, Copy)]
struct Window {
    image: usize,
    label: i32,
    corners: [i32; 4],
}

/// The images and the foreground and background windows of a window file.
#[derive(Debug, Default)]
struct WindowFile {
    images: Vec<ImageRecord>,
    foreground: Vec<Window>,
    background: Vec<Window>,
}

/// The whitespace-separated tokens of a file, with their line numbers (upstream reads the
/// file with `>>`, so line breaks carry no meaning).
struct Tokens<'a> {
    path: &'a Path,
    tokens: Vec<(usize, &'a str)>,
    next: usize,
}

impl<'a> Tokens<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        let tokens = text
            .lines()
            .enumerate()
            .flat_map(|(i, line)| line.split_whitespace().map(move |t| (i + 1, t)))
            .collect();
        Tokens {
            path,
            tokens,
            next: 0,
        }
    }

    fn at_end(&self) -> bool {
        self.next >= self.tokens.len()
    }

    fn error(&self, line: usize, message: String) -> DataError {
        DataError::format(self.path, format!("line {line}: {message}"))
    }

    /// The next token and its line.
    fn token(&mut self, what: &str) -> Result<(&'a str, usize), DataError> {
        let Some(&(line, token)) = self.tokens.get(self.next) else {
            let line = self.tokens.last().map_or(1, |&(line, _)| line);
            return Err(self.error(line, format!("expected {what}, found the end of the file")));
        };
        self.next += 1;
        Ok((token, line))
    }

    /// The next token as a `T`, and its line.
    fn value<T: FromStr>(&mut self, what: &str) -> Result<(T, usize), DataError> {
        let (token, line) = self.token(what)?;
        match token.parse() {
            Ok(value) => Ok((value, line)),
            Err(_) => Err(self.error(line, format!("expected {what}, found \"{token}\""))),
        }
    }
}

/// Reads a window file and sorts its windows by overlap (see the module documentation).
fn read_window_file(path: &Path, p: &WindowDataParameter) -> Result<WindowFile, DataError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| DataError::read(path, "window file", e))?;
    let mut tokens = Tokens::new(path, &text);
    if tokens.at_end() {
        return Err(DataError::format(path, "the window file is empty"));
    }
    let mut file = WindowFile::default();
    while !tokens.at_end() {
        read_image_record(&mut tokens, p, &mut file)?;
    }
    Ok(file)
}

/// Reads one image's record: its header and its windows.
fn read_image_record(
    tokens: &mut Tokens<'_>,
    p: &WindowDataParameter,
    file: &mut WindowFile,
) -> Result<(), DataError> {
    let (hash, line) = tokens.token("'#'")?;
    if hash != "#" {
        return Err(tokens.error(
            line,
            format!("expected '#' before an image, found \"{hash}\""),
        ));
    }
    let image = file.images.len();
    let (index, _) = tokens.value::<usize>("the image index")?;
    if index != image {
        return Err(tokens.error(
            line,
            format!("image index {index} where {image} was expected (indices count up from 0)"),
        ));
    }
    let (name, _) = tokens.token("the image path")?;
    let (channels, line_c) = tokens.value::<usize>("the image's channels")?;
    if channels != CHANNELS {
        return Err(tokens.error(
            line_c,
            format!("{name} has {channels} channels; WindowData reads images in colour (3)"),
        ));
    }
    let (height, _) = tokens.value::<usize>("the image's height")?;
    let (width, _) = tokens.value::<usize>("the image's width")?;
    let (num_windows, _) = tokens.value::<usize>("the number of windows")?;
    for _ in 0..num_windows {
        let (label, line) = tokens.value::<i32>("a window's class index")?;
        let (overlap, _) = tokens.value::<f32>("a window's overlap")?;
        let mut corners = [0i32; 4];
        for (corner, what) in corners.iter_mut().zip(["x1", "y1", "x2", "y2"]) {
            *corner = tokens.value::<i32>(&format!("a window's {what}"))?.0;
        }
        let [x1, y1, x2, y2] = corners;
        if x1 < 0 || y1 < 0 || x1 > x2 || y1 > y2 || x2 as usize >= width || y2 as usize >= height {
            return Err(tokens.error(
                line,
                format!(
                    "window ({x1}, {y1})-({x2}, {y2}) does not lie in the {width}x{height} image \
                     {name}"
                ),
            ));
        }
        if overlap >= p.fg_threshold() {
            if label <= 0 {
                return Err(tokens.error(
                    line,
                    format!("a foreground window (overlap {overlap}) needs a class above 0"),
                ));
            }
            file.foreground.push(Window {
                image,
                label,
                corners,
            });
        } else if overlap < p.bg_threshold() {
            file.background.push(Window {
                image,
                label: 0,
                corners,
            });
        }
    }
    file.images.push(ImageRecord {
        path: PathBuf::from(format!("{}{name}", p.root_folder())),
        height,
        width,
        line,
        cached: None,
    });
    Ok(())
}

// ---- Geometry -----------------------------------------------------------------------------

/// Where a window's pixels go: the image region read (inclusive corners, inside the image),
/// the size it is warped to, and where that lands in the `crop x crop` crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// `[x1, y1, x2, y2]` of the region read.
    pub region: [usize; 4],
    /// Width and height the region is warped to.
    pub size: [usize; 2],
    /// Column and row of the warped region's top-left corner in the crop.
    pub offset: [usize; 2],
}

/// How a window is cut and warped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropGeometry {
    /// `transform_param.crop_size`.
    pub crop: usize,
    /// `window_data_param.context_pad`.
    pub context_pad: usize,
    /// `crop_mode: "square"`.
    pub square: bool,
}

impl CropGeometry {
    /// Places window `[x1, y1, x2, y2]` (inside an `image_width x image_height` image) as
    /// upstream does, in f32 with C's rounding (half away from zero); with `mirror` the
    /// padding is mirrored too. `None` when nothing is left to warp.
    pub fn place(
        &self,
        window: [i32; 4],
        image_width: usize,
        image_height: usize,
        mirror: bool,
    ) -> Option<Placement> {
        let crop = self.crop as i64;
        let [x1, y1, x2, y2] = window.map(i64::from);
        if self.context_pad == 0 && !self.square {
            let region = [x1, y1, x2, y2].map(|v| v.max(0) as usize);
            return Some(Placement {
                region,
                size: [self.crop, self.crop],
                offset: [0, 0],
            });
        }
        let context_scale = self.crop as f32 / (self.crop as f32 - 2.0 * self.context_pad as f32);
        let mut half_height = (y2 - y1 + 1) as f32 / 2.0;
        let mut half_width = (x2 - x1 + 1) as f32 / 2.0;
        let center_x = x1 as f32 + half_width;
        let center_y = y1 as f32 + half_height;
        if self.square {
            half_height = half_height.max(half_width);
            half_width = half_height;
        }
        let round = |v: f32| v.round() as i64;
        let (x1, x2) = (
            round(center_x - half_width * context_scale),
            round(center_x + half_width * context_scale),
        );
        let (y1, y2) = (
            round(center_y - half_height * context_scale),
            round(center_y + half_height * context_scale),
        );
        // The widened region may leave the image: clip it, and keep how far it went out.
        let (cols, rows) = (image_width as i64, image_height as i64);
        let (pad_x1, pad_y1) = ((-x1).max(0), (-y1).max(0));
        let (pad_x2, pad_y2) = ((x2 - cols + 1).max(0), (y2 - rows + 1).max(0));
        let region = [x1 + pad_x1, y1 + pad_y1, x2 - pad_x2, y2 - pad_y2];
        // Scales that warp the unclipped region onto the whole crop.
        let scale_x = self.crop as f32 / (x2 - x1 + 1) as f32;
        let scale_y = self.crop as f32 / (y2 - y1 + 1) as f32;
        let mut width = round((region[2] - region[0] + 1) as f32 * scale_x);
        let mut height = round((region[3] - region[1] + 1) as f32 * scale_y);
        let pad_h = round(pad_y1 as f32 * scale_y);
        let pad_w = if mirror {
            round(pad_x2 as f32 * scale_x)
        } else {
            round(pad_x1 as f32 * scale_x)
        };
        // Rounding may push the warped region past the crop's edge.
        height = height.min(crop - pad_h);
        width = width.min(crop - pad_w);
        if width <= 0 || height <= 0 || region[0] > region[2] || region[1] > region[3] {
            return None;
        }
        Some(Placement {
            region: region.map(|v| v as usize),
            size: [width as usize, height as usize],
            offset: [pad_w as usize, pad_h as usize],
        })
    }
}

/// The pixels of `region` (`[x1, y1, x2, y2]`, inclusive, inside the image).
fn cut(image: &Image, region: [usize; 4]) -> Image {
    let [x1, y1, x2, y2] = region;
    let c = image.channels;
    let row_len = (x2 - x1 + 1) * c;
    let mut data = Vec::with_capacity(row_len * (y2 - y1 + 1));
    for y in y1..=y2 {
        let start = (y * image.width + x1) * c;
        data.extend_from_slice(&image.data[start..start + row_len]);
    }
    Image {
        height: y2 - y1 + 1,
        width: x2 - x1 + 1,
        channels: c,
        data,
    }
}

// ---- Batches ------------------------------------------------------------------------------

/// What is subtracted from each pixel before scaling.
enum Mean {
    None,
    /// One value per channel.
    Values([f32; CHANNELS]),
    /// A mean image (`channels x height x width`), read at the crop's position plus `offset`
    /// in both axes (upstream centres it by its width).
    Image {
        values: Vec<f32>,
        height: usize,
        width: usize,
        offset: usize,
    },
}

impl Mean {
    fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        match self {
            Mean::None => 0.0,
            Mean::Values(v) => v[c],
            Mean::Image {
                values,
                height,
                width,
                offset,
            } => values[(c * height + y + offset) * width + x + offset],
        }
    }
}

/// Reads the mean: `transform_param.mean_file` (checked to cover the crop) or `mean_value`.
fn read_mean(t: &TransformationParameter, crop: usize) -> Result<Mean, LayerError> {
    if let [v] = t.mean_value[..] {
        return Ok(Mean::Values([v; CHANNELS]));
    }
    if let [b, g, r] = t.mean_value[..] {
        return Ok(Mean::Values([b, g, r]));
    }
    let Some(file) = &t.mean_file else {
        return Ok(Mean::None);
    };
    log::info!("Loading mean file from: {file}");
    let fail = |m: String| LayerError::invalid(format!("transform_param.mean_file {file}: {m}"));
    let proto = read_blob_proto(Path::new(file)).map_err(|e| fail(e.to_string()))?;
    let shape = blob_proto_shape(&proto);
    let axis = |i: usize| shape.get(i).map_or(1, |&d| d.max(0) as usize);
    let (channels, height, width) = (axis(1), axis(2), axis(3));
    let offset = width.saturating_sub(crop) / 2;
    if channels != CHANNELS || width < crop || offset + crop > height {
        return Err(fail(format!(
            "shape {shape:?} does not cover a {CHANNELS}x{crop}x{crop} crop"
        )));
    }
    let values: Vec<f32> = if proto.double_data.is_empty() {
        proto.data.clone()
    } else {
        proto.double_data.iter().map(|&v| v as f32).collect()
    };
    if values.len() < channels * height * width {
        return Err(fail(format!("{} values for shape {shape:?}", values.len())));
    }
    Ok(Mean::Image {
        values,
        height,
        width,
        offset,
    })
}

/// Samples and warps windows on the prefetch thread.
struct WindowBatches {
    window_file: PathBuf,
    file: WindowFile,
    geometry: CropGeometry,
    mirror: bool,
    scale: f32,
    mean: Mean,
    batch_size: usize,
    num_foreground: usize,
    rng: Rng,
}

impl WindowBatches {
    /// Image `index`, decoded in colour and checked against its declared size.
    fn load(&self, index: usize) -> Result<Image, DataError> {
        let record = &self.file.images[index];
        let in_file = |message: String| {
            DataError::format(
                &self.window_file,
                format!("line {}: {message}", record.line),
            )
        };
        let image = match &record.cached {
            Some(bytes) => decode_image(bytes, ColorMode::Color)
                .map_err(|e| DataError::format(&record.path, format!("not a readable image: {e}"))),
            None => read_image(&record.path, ColorMode::Color),
        }
        .map_err(|e| in_file(e.to_string()))?;
        if (image.height, image.width) != (record.height, record.width) {
            return Err(in_file(format!(
                "{} is {}x{} (height x width) but the window file says {}x{}",
                record.path.display(),
                image.height,
                image.width,
                record.height,
                record.width
            )));
        }
        Ok(image)
    }

    /// Cuts, warps, mirrors and normalises `window` into `out` (one zeroed item of the batch).
    fn write_window(
        &self,
        window: &Window,
        mirror: bool,
        out: &mut [f32],
    ) -> Result<(), DataError> {
        let image = self.load(window.image)?;
        let crop = self.geometry.crop;
        let placement = self
            .geometry
            .place(window.corners, image.width, image.height, mirror)
            .ok_or_else(|| {
                DataError::format(
                    &self.window_file,
                    format!("window {:?} leaves nothing to warp", window.corners),
                )
            })?;
        let [width, height] = placement.size;
        let [pad_w, pad_h] = placement.offset;
        let warped = resize_linear(&cut(&image, placement.region), height, width);
        for h in 0..height {
            for w in 0..width {
                let source_w = if mirror { width - 1 - w } else { w };
                let pixel = &warped.data[(h * width + source_w) * CHANNELS..][..CHANNELS];
                let (y, x) = (h + pad_h, w + pad_w);
                for (c, &value) in pixel.iter().enumerate() {
                    out[(c * crop + y) * crop + x] =
                        (f32::from(value) - self.mean.at(c, y, x)) * self.scale;
                }
            }
        }
        Ok(())
    }
}

impl WindowBatches {
    fn windows(&self, foreground: bool) -> &[Window] {
        if foreground {
            &self.file.foreground
        } else {
            &self.file.background
        }
    }
}

impl BatchSource for WindowBatches {
    fn fill(&mut self, batch: &mut Batch) -> Result<(), DataError> {
        let crop = self.geometry.crop;
        batch.reshape([self.batch_size, CHANNELS, crop, crop], true)?;
        batch.data.fill(0.0);
        let item_len = CHANNELS * crop * crop;
        let num_background = self.batch_size - self.num_foreground;
        // Background windows first, then foreground, as upstream.
        let picks = std::iter::repeat_n(false, num_background)
            .chain(std::iter::repeat_n(true, self.num_foreground));
        for (item, foreground) in picks.enumerate() {
            let pick = self.rng.next_u32() as usize % self.windows(foreground).len();
            let window = self.windows(foreground)[pick];
            let mirror = self.mirror && self.rng.next_u32() % 2 == 1;
            let out = &mut batch.data[item * item_len..(item + 1) * item_len];
            self.write_window(&window, mirror, out)?;
            batch.labels[item] = window.label as f32;
        }
        Ok(())
    }
}

/// Logs upstream's summary of the windows: how many of each class.
fn log_windows(file: &WindowFile) {
    let mut per_class = BTreeMap::from([(0, file.background.len())]);
    for window in &file.foreground {
        *per_class.entry(window.label).or_insert(0) += 1;
    }
    log::info!("Number of images: {}", file.images.len());
    for (class, count) in per_class {
        log::info!("class {class} has {count} samples");
    }
}

impl WindowDataLayer {
    /// Reads the window file (and with `cache_images` every image's bytes), checks that each
    /// kind of window a batch asks for exists, and builds the batch source.
    fn batches(&self, rng: Rng) -> Result<WindowBatches, LayerError> {
        let p = &self.param;
        let window_file = PathBuf::from(p.source());
        let mut file = read_window_file(&window_file, p).map_err(data_error)?;
        log_windows(&file);
        if p.cache_images() {
            for record in &mut file.images {
                let bytes = std::fs::read(&record.path).map_err(|e| {
                    let e = DataError::read(&record.path, "image", e);
                    LayerError::invalid(format!(
                        "{}: line {}: {e}",
                        window_file.display(),
                        record.line
                    ))
                })?;
                record.cached = Some(bytes);
            }
        }
        let batch_size = p.batch_size() as usize;
        let num_foreground = (batch_size as f32 * p.fg_fraction()) as usize;
        for (count, set, kind) in [
            (
                num_foreground,
                &file.foreground,
                "foreground (overlap >= fg_threshold)",
            ),
            (
                batch_size - num_foreground,
                &file.background,
                "background (overlap < bg_threshold)",
            ),
        ] {
            if count > 0 && set.is_empty() {
                return Err(LayerError::invalid(format!(
                    "window_data_param.source {}: a batch takes {count} {kind} windows but the \
                     file has none",
                    window_file.display()
                )));
            }
        }
        let crop = self.transform_param.crop_size() as usize;
        Ok(WindowBatches {
            window_file,
            file,
            geometry: CropGeometry {
                crop,
                context_pad: p.context_pad() as usize,
                square: p.crop_mode() == "square",
            },
            mirror: self.transform_param.mirror(),
            scale: p.scale(),
            mean: read_mean(&self.transform_param, crop)?,
            batch_size,
            num_foreground,
            rng,
        })
    }
}

impl<B: Backend> Layer<B> for WindowDataLayer {
    fn layer_type(&self) -> &'static str {
        "WindowData"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(0, 2)
    }

    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let p = &self.param;
        log::info!(
            "Window data layer: foreground (object) overlap threshold: {}, background \
             (non-object) overlap threshold: {}, foreground sampling fraction: {}, \
             cache_images: {}, root_folder: {}",
            p.fg_threshold(),
            p.bg_threshold(),
            p.fg_fraction(),
            p.cache_images(),
            p.root_folder()
        );
        let source = self.batches(rng_from_seed(ctx.rng.next_u64()))?;
        log::info!("Amount of context padding: {}", p.context_pad());
        log::info!("Crop mode: {}", p.crop_mode());
        let crop = source.geometry.crop;
        blobs
            .top_mut(0)
            .reshape(&[source.batch_size, CHANNELS, crop, crop])?;
        blobs.top_mut(1).reshape(&[source.batch_size])?;
        log::info!(
            "output data size: {},{CHANNELS},{crop},{crop}",
            source.batch_size
        );
        self.prefetcher =
            Some(Prefetcher::start(&self.name, self.prefetch, source).map_err(data_error)?);
        Ok(())
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        Ok(())
    }

    fn forward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let prefetcher = self.prefetcher.as_mut().ok_or_else(|| {
            LayerError::invalid("the WindowData layer's forward ran before its setup")
        })?;
        let batch = prefetcher.next_batch().map_err(data_error)?;
        blobs.top_mut(0).set_data(&batch.data)?;
        blobs.top_mut(1).set_data(&batch.labels)?;
        prefetcher.recycle(batch);
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        _propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        Ok(())
    }

    fn load_stats(&self) -> Option<crate::data::prefetch::LoadStats> {
        self.prefetcher.as_ref().map(Prefetcher::stats)
    }
}
