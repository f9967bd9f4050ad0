//! How a window becomes pixels: where it is cut and warped to within the crop (upstream's
//! context padding and square mode), and the mean subtracted from the result.

use std::path::Path;

use super::CHANNELS;
use crate::data::imgcodec::Image;
use crate::layers::LayerError;
use crate::proto::caffe::TransformationParameter;
use crate::proto::{blob_proto_shape, read_blob_proto};

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
pub(super) fn cut(image: &Image, region: [usize; 4]) -> Image {
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

/// What is subtracted from each pixel before scaling.
pub(super) enum Mean {
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
    pub(super) fn at(&self, c: usize, y: usize, x: usize) -> f32 {
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
pub(super) fn read_mean(t: &TransformationParameter, crop: usize) -> Result<Mean, LayerError> {
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
