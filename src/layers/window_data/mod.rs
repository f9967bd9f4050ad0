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
//!
//! [`window_file`] reads the window file, [`warp`] places and normalises a window's pixels;
//! here are the layer and its batch sampling.

mod warp;
mod window_file;

pub use warp::{CropGeometry, Placement};

use std::path::PathBuf;

use rand::Rng as _;

use crate::backend::{rng_from_seed, Backend, Rng};
use crate::blob::Blob;
use crate::data::imgcodec::{decode_image, read_image, resize_linear, ColorMode, Image};
use crate::data::prefetch::{Batch, BatchSource, Prefetcher};
use crate::data::DataError;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::{LayerParameter, TransformationParameter, WindowDataParameter};
use warp::{cut, read_mean, Mean};
use window_file::{log_windows, read_window_file, Window, WindowFile};

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
        // In 64 bits: twice a large u32 pad would wrap and pass.
        if 2 * u64::from(p.context_pad()) >= u64::from(t.crop_size()) {
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

// ---- Batches ------------------------------------------------------------------------------

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

    /// The windows of one kind, foreground or background.
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

impl WindowDataLayer {
    /// Reads the window file (and with `cache_images` every image's bytes), checks that each
    /// kind of window a batch asks for exists, and builds the batch source.
    fn batches(&self, rng: Rng) -> Result<WindowBatches, LayerError> {
        let p = &self.param;
        let window_file = PathBuf::from(p.source());
        let mut file = read_window_file(&window_file, p).map_err(LayerError::from)?;
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
            Some(Prefetcher::start(&self.name, self.prefetch, source).map_err(LayerError::from)?);
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
        super::data::forward_prefetched(self.prefetcher.as_mut(), "WindowData", blobs, true)
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
