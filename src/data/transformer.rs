//! Upstream's `DataTransformer` (src/caffe/data_transformer.cpp): what a data layer does to
//! each record on its way into the batch.
//!
//! For one Datum of `C x H x W` values `x`, in upstream's order:
//!
//! 1. mirror: with `mirror: true`, one draw `r mod 2` decides whether the image is flipped
//!    left-right (in both phases);
//! 2. crop: with `crop_size: S`, an `S x S` window; in TRAIN its corner is drawn
//!    (`h_off = r mod (H - S + 1)`, then `w_off = r mod (W - S + 1)`, after the mirror draw),
//!    in TEST it is centred (`(H - S) / 2`, `(W - S) / 2`, rounded down);
//! 3. for each kept value, `y = (x - m) * scale`, where `m` is the mean file's value at the
//!    same *uncropped* position (the mean is cropped with the image) or the channel's
//!    `mean_value` (one value is used for every channel), or 0; the scale applies after the
//!    subtraction, in f32.
//!
//! The random draws come from the generator the caller passes in; a transformer holds no
//! state that changes, so it can be shared.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::Rng as _;

use crate::backend::Rng;
use crate::proto::caffe::{Datum, Phase, TransformationParameter};
use crate::proto::{blob_proto_shape, read_blob_proto};

use super::datum::{datum_values, decode_datum, DatumShape, DatumValues};
use super::imgcodec::{ColorMode, Image};
use super::{DataError, Result};

/// A mean image read from a `.binaryproto` file.
#[derive(Debug, Clone)]
struct MeanImage {
    path: PathBuf,
    shape: DatumShape,
    values: Vec<f32>,
}

/// Applies a `TransformationParameter` to records (see the [module documentation](self)).
#[derive(Debug)]
pub struct DataTransformer {
    phase: Phase,
    scale: f32,
    mirror: bool,
    crop_size: usize,
    mean: Option<MeanImage>,
    mean_values: Vec<f32>,
    force_color: bool,
    force_gray: bool,
    warned_force: AtomicBool,
}

/// `r mod n` for one draw, as upstream's `Rand(n)`.
fn rand_below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u32() as usize) % n
}

impl DataTransformer {
    /// Reads the parameters, and the mean file if one is named (logging upstream's
    /// `Loading mean file from: <path>`). Errors: both `mean_file` and `mean_value`, both
    /// `force_color` and `force_gray`, an unreadable mean file.
    pub fn new(param: &TransformationParameter, phase: Phase) -> Result<Self> {
        if param.mean_file.is_some() && !param.mean_value.is_empty() {
            return Err(DataError::invalid(
                "transform_param: cannot specify mean_file and mean_value at the same time",
            ));
        }
        if param.force_color() && param.force_gray() {
            return Err(DataError::invalid(
                "transform_param: cannot set both force_color and force_gray",
            ));
        }
        let mean = match &param.mean_file {
            Some(file) => {
                log::info!("Loading mean file from: {file}");
                Some(read_mean(&PathBuf::from(file))?)
            }
            None => None,
        };
        Ok(DataTransformer {
            phase,
            scale: param.scale(),
            mirror: param.mirror(),
            crop_size: param.crop_size() as usize,
            mean,
            mean_values: param.mean_value.clone(),
            force_color: param.force_color(),
            force_gray: param.force_gray(),
            warned_force: AtomicBool::new(false),
        })
    }

    /// The phase the transformer was made for.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// `crop_size` (0: no crop).
    pub fn crop_size(&self) -> usize {
        self.crop_size
    }

    /// Whether transforming draws random numbers (upstream's `InitRand` test): mirroring, or
    /// cropping in TRAIN.
    pub fn needs_rng(&self) -> bool {
        self.mirror || (self.phase == Phase::Train && self.crop_size > 0)
    }

    /// How an encoded Datum is decoded: forced colour or grey, else as stored.
    pub fn color_mode(&self) -> ColorMode {
        if self.force_color {
            ColorMode::Color
        } else if self.force_gray {
            ColorMode::Gray
        } else {
            ColorMode::Native
        }
    }

    /// The Datum as raw values: an encoded one decoded per `force_color` / `force_gray`, a raw
    /// one borrowed as it is.
    pub fn decoded<'a>(&self, datum: &'a Datum) -> Result<Cow<'a, Datum>> {
        if datum.encoded() {
            return Ok(Cow::Owned(decode_datum(datum, self.color_mode())?));
        }
        if (self.force_color || self.force_gray) && !self.warned_force.swap(true, Ordering::Relaxed)
        {
            log::error!("force_color and force_gray only for encoded datum");
        }
        Ok(Cow::Borrowed(datum))
    }

    /// The shape `[1, C, H', W']` one transformed Datum fills (upstream's `InferBlobShape`):
    /// the crop's size when cropping. An encoded Datum is decoded first.
    pub fn infer_shape(&self, datum: &Datum) -> Result<[usize; 4]> {
        let datum = self.decoded(datum)?;
        let (shape, _) = datum_values(&datum)?;
        self.output_shape(shape)
    }

    fn output_shape(&self, shape: DatumShape) -> Result<[usize; 4]> {
        let crop = self.crop_size;
        if shape.channels == 0 {
            return Err(DataError::invalid("the image has no channel"));
        }
        if crop > 0 && (shape.height < crop || shape.width < crop) {
            return Err(DataError::invalid(format!(
                "transform_param.crop_size {crop} is larger than the {}x{} image",
                shape.height, shape.width
            )));
        }
        Ok(if crop > 0 {
            [1, shape.channels, crop, crop]
        } else {
            [1, shape.channels, shape.height, shape.width]
        })
    }

    /// Transforms one Datum into `out`, which must hold exactly the values of
    /// [`DataTransformer::infer_shape`]. An encoded Datum is decoded first.
    pub fn transform(&self, datum: &Datum, out: &mut [f32], rng: &mut Rng) -> Result<()> {
        let datum = self.decoded(datum)?;
        let (shape, values) = datum_values(&datum)?;
        self.transform_values(shape, values, out, rng)
    }

    /// Transforms an image (rows of interleaved BGR channels, as decoded) into `out`; the same
    /// result as [`DataTransformer::transform`] on the image's Datum.
    pub fn transform_image(&self, image: &Image, out: &mut [f32], rng: &mut Rng) -> Result<()> {
        let chw = image.to_chw();
        let shape = DatumShape {
            channels: image.channels,
            height: image.height,
            width: image.width,
        };
        self.transform_values(shape, DatumValues::Bytes(&chw), out, rng)
    }

    /// The core of [`DataTransformer::transform`]: `values` are `shape`'s, channel-major.
    pub fn transform_values(
        &self,
        shape: DatumShape,
        values: DatumValues<'_>,
        out: &mut [f32],
        rng: &mut Rng,
    ) -> Result<()> {
        let [_, channels, height, width] = self.output_shape(shape)?;
        let (in_h, in_w) = (shape.height, shape.width);
        if values.len() != shape.count() {
            return Err(DataError::invalid(format!(
                "{} values for a {shape} image",
                values.len()
            )));
        }
        if out.len() != channels * height * width {
            return Err(DataError::invalid(format!(
                "the {shape} image transforms to {channels}x{height}x{width} values but the \
                 batch holds {} for it",
                out.len()
            )));
        }
        let mean = self.check_mean(shape)?;
        let mean_values = self.channel_means(channels)?;

        // Draw order as upstream: the mirror coin, then the crop corner.
        let do_mirror = self.mirror && rand_below(rng, 2) != 0;
        let (h_off, w_off) = if self.crop_size > 0 {
            if self.phase == Phase::Train {
                let h = rand_below(rng, in_h - height + 1);
                let w = rand_below(rng, in_w - width + 1);
                (h, w)
            } else {
                ((in_h - height) / 2, (in_w - width) / 2)
            }
        } else {
            (0, 0)
        };

        let scale = self.scale;
        for c in 0..channels {
            for h in 0..height {
                let src_row = (c * in_h + h_off + h) * in_w + w_off;
                let dst_row = (c * height + h) * width;
                for w in 0..width {
                    let src = src_row + w;
                    let dst = if do_mirror {
                        dst_row + width - 1 - w
                    } else {
                        dst_row + w
                    };
                    let x = values.get(src);
                    out[dst] = match (mean, &mean_values) {
                        (Some(m), _) => (x - m[src]) * scale,
                        (None, Some(mv)) => (x - mv[c]) * scale,
                        (None, None) => x * scale,
                    };
                }
            }
        }
        Ok(())
    }

    /// The mean file's values, checked against the image's shape.
    fn check_mean(&self, shape: DatumShape) -> Result<Option<&[f32]>> {
        match &self.mean {
            None => Ok(None),
            Some(mean) if mean.shape == shape => Ok(Some(&mean.values)),
            Some(mean) => Err(DataError::invalid(format!(
                "transform_param.mean_file {} is {} (channels x height x width) but the image \
                 is {shape}",
                mean.path.display(),
                mean.shape
            ))),
        }
    }

    /// One mean value per channel (a single `mean_value` broadcast), or `None`.
    fn channel_means(&self, channels: usize) -> Result<Option<Cow<'_, [f32]>>> {
        match self.mean_values.len() {
            0 => Ok(None),
            1 => Ok(Some(Cow::Owned(vec![self.mean_values[0]; channels]))),
            n if n == channels => Ok(Some(Cow::Borrowed(&self.mean_values))),
            n => Err(DataError::invalid(format!(
                "transform_param.mean_value: specify either 1 mean_value or as many as \
                 channels ({channels}); {n} given"
            ))),
        }
    }
}

/// Reads a mean file and takes its shape as upstream's `Blob` legacy accessors do
/// (`channels`, `height`, `width` = axes 1, 2, 3; a missing axis counts 1).
fn read_mean(path: &std::path::Path) -> Result<MeanImage> {
    let proto = read_blob_proto(path)?;
    let shape = blob_proto_shape(&proto);
    let axis = |i: usize| shape.get(i).copied().unwrap_or(1);
    if shape.len() > 4 || shape.iter().any(|&d| d <= 0) {
        return Err(DataError::invalid(format!(
            "transform_param.mean_file {}: shape {shape:?} is not a mean image \
             (num x channels x height x width)",
            path.display()
        )));
    }
    let image = DatumShape {
        channels: axis(1) as usize,
        height: axis(2) as usize,
        width: axis(3) as usize,
    };
    let values: Vec<f32> = if proto.double_data.is_empty() {
        proto.data.clone()
    } else {
        proto.double_data.iter().map(|&v| v as f32).collect()
    };
    if values.len() < image.count() {
        return Err(DataError::invalid(format!(
            "transform_param.mean_file {}: shape {shape:?} needs {} values but {} are stored",
            path.display(),
            image.count(),
            values.len()
        )));
    }
    let mut values = values;
    values.truncate(image.count());
    Ok(MeanImage {
        path: path.to_path_buf(),
        shape: image,
        values,
    })
}
