//! Images as Caffe's OpenCV calls see them: 8-bit pixels, rows of interleaved channels, colour
//! in BGR order; decoded from JPEG or PNG with the `image` crate, resized with OpenCV's
//! bilinear rule, and encoded back for encoded Datums (upstream: src/caffe/util/io.cpp,
//! `ReadImageToCVMat`, `DecodeDatumToCVMat*`).
//!
//! How close to OpenCV this is:
//! * PNG is lossless, so decoded pixels are OpenCV's exactly.
//! * JPEG decoders may differ from libjpeg by a grey level in places (IDCT and chroma
//!   upsampling are not specified bit for bit).
//! * Colour to grey uses OpenCV's `cvtColor` fixed-point weights
//!   (`(4899 R + 9617 G + 1868 B + 8192) >> 14`); OpenCV's `imread(..., GRAYSCALE)` lets the
//!   codec do that conversion (libjpeg takes the JPEG's own luma plane), which can differ by a
//!   level.
//! * [`resize_linear`] is OpenCV's `INTER_LINEAR` for 8-bit images pixel for pixel (checked
//!   against OpenCV 5.1's output): pixel-centre mapping, 11-bit fixed-point weights, columns
//!   clamped and rows clipped at the borders as OpenCV does, and the rounding of its vectorised
//!   vertical pass, which 5.1 applies to whole rows (exact doubling and row ends included).
//!   OpenCV builds without SIMD, and older ones for the values at the end of a row, round as
//!   its scalar path does and can differ there by one level.

use std::io::Cursor as IoCursor;
use std::path::Path;

use image::{DynamicImage, ExtendedColorType, ImageEncoder};

use super::{DataError, Result};

/// How to decode (OpenCV's imread flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMode {
    /// As stored (`IMREAD_UNCHANGED`): grey stays one channel, colour is BGR, alpha kept (BGRA).
    Native,
    /// Three channels, BGR (`IMREAD_COLOR`): grey is replicated, alpha dropped.
    Color,
    /// One channel (`IMREAD_GRAYSCALE`).
    Gray,
}

/// An 8-bit image, rows of interleaved channels (BGR or BGRA for colour), like a `cv::Mat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    /// `height * width * channels` bytes, row by row.
    pub data: Vec<u8>,
}

impl Image {
    /// The pixels channel-major (`channels x height x width`), Caffe's Datum layout.
    pub fn to_chw(&self) -> Vec<u8> {
        let (h, w, c) = (self.height, self.width, self.channels);
        let mut out = vec![0u8; c * h * w];
        for y in 0..h {
            for x in 0..w {
                for k in 0..c {
                    out[(k * h + y) * w + x] = self.data[(y * w + x) * c + k];
                }
            }
        }
        out
    }
}

fn swap_rb(data: &mut [u8], channels: usize) {
    for px in data.chunks_exact_mut(channels) {
        px.swap(0, 2);
    }
}

/// OpenCV's fixed-point RGB to grey weights (`cvtColor`, `yuv_shift` 14).
fn grey(r: u8, g: u8, b: u8) -> u8 {
    ((4899 * u32::from(r) + 9617 * u32::from(g) + 1868 * u32::from(b) + (1 << 13)) >> 14) as u8
}

/// Decodes a JPEG or PNG file's bytes.
pub fn decode_image(bytes: &[u8], mode: ColorMode) -> std::result::Result<Image, String> {
    let dynamic = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    let (width, height) = (dynamic.width() as usize, dynamic.height() as usize);
    let is_grey = matches!(
        dynamic,
        DynamicImage::ImageLuma8(_)
            | DynamicImage::ImageLumaA8(_)
            | DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
    );
    let (channels, data) = match mode {
        ColorMode::Native => match dynamic {
            DynamicImage::ImageLuma8(img) => (1, img.into_raw()),
            DynamicImage::ImageRgb8(img) => {
                let mut data = img.into_raw();
                swap_rb(&mut data, 3);
                (3, data)
            }
            DynamicImage::ImageLumaA8(_) | DynamicImage::ImageRgba8(_) => {
                let mut data = dynamic.to_rgba8().into_raw();
                swap_rb(&mut data, 4);
                (4, data)
            }
            _ => {
                return Err(format!(
                    "{:?} pixels are not 8-bit: a Datum holds 8-bit pixels (decode it in colour \
                     or grey instead)",
                    dynamic.color()
                ))
            }
        },
        ColorMode::Color => {
            let mut data = dynamic.to_rgb8().into_raw();
            swap_rb(&mut data, 3);
            (3, data)
        }
        ColorMode::Gray if is_grey => (1, dynamic.to_luma8().into_raw()),
        ColorMode::Gray => {
            let rgb = dynamic.to_rgb8();
            let data = rgb.pixels().map(|p| grey(p[0], p[1], p[2])).collect();
            (1, data)
        }
    };
    Ok(Image {
        height,
        width,
        channels,
        data,
    })
}

/// Reads and decodes an image file.
pub fn read_image(path: &Path, mode: ColorMode) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|e| DataError::read(path, "image", e))?;
    decode_image(&bytes, mode)
        .map_err(|e| DataError::format(path, format!("not a readable image: {e}")))
}

const COEF_BITS: u32 = 11;
const COEF_SCALE: i32 = 1 << COEF_BITS;

/// The source position `f = (d + 0.5) src / dst - 0.5` of output position `d`, OpenCV's
/// `INTER_LINEAR` mapping, as its integer part and fraction (both as OpenCV computes them, in
/// float).
fn source_position(d: usize, src: usize, dst: usize) -> (i64, f32) {
    let scale = src as f64 / dst as f64;
    let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
    let s = f.floor();
    (s as i64, f - s)
}

/// 11-bit fixed-point weights of a pixel and the next for `fraction`, each rounded on its own,
/// half to even, as OpenCV's `saturate_cast<short>` does.
fn weights(fraction: f32) -> (i32, i32) {
    let w0 = ((1.0 - fraction) * COEF_SCALE as f32).round_ties_even() as i32;
    let w1 = (fraction * COEF_SCALE as f32).round_ties_even() as i32;
    (w0, w1)
}

/// Source column and weights for each output column. At the borders OpenCV moves the position
/// onto the image and drops the fraction.
fn column_taps(src: usize, dst: usize) -> Vec<(usize, i32, i32)> {
    (0..dst)
        .map(|d| {
            let (s, fraction) = source_position(d, src, dst);
            let (s, fraction) = if s < 0 {
                (0, 0.0)
            } else if s >= src as i64 - 1 {
                (src as i64 - 1, 0.0)
            } else {
                (s, fraction)
            };
            let (w0, w1) = weights(fraction);
            (s as usize, w0, w1)
        })
        .collect()
}

/// The two source rows and their weights for each output row. Rows, unlike columns, keep
/// their fraction at the borders: OpenCV clips the row indices instead, so both weights may
/// fall on the same edge row.
fn row_taps(src: usize, dst: usize) -> Vec<(usize, usize, i32, i32)> {
    let clip = |row: i64| row.clamp(0, src as i64 - 1) as usize;
    (0..dst)
        .map(|d| {
            let (s, fraction) = source_position(d, src, dst);
            let (w0, w1) = weights(fraction);
            (clip(s), clip(s + 1), w0, w1)
        })
        .collect()
}

/// One output value from two horizontally interpolated rows (scale 2^11) and the row weights,
/// in the arithmetic of OpenCV's vectorised vertical pass (`VResizeLinearVec_32s8u`), which
/// x86 builds run: each row value shifted down 4 bits into 16 bits, multiplied by its
/// weight keeping the high 16 bits of the product, the two added, rounded off 2 bits.
fn vertical_blend(upper: i32, lower: i32, w0: i32, w1: i32) -> u8 {
    let high_product = |value: i32, weight: i32| ((value >> 4).clamp(-32768, 32767) * weight) >> 16;
    let sum = high_product(upper, w0) + high_product(lower, w1);
    ((sum + 2) >> 2).clamp(0, 255) as u8
}

/// Resizes to `height x width` with OpenCV's bilinear interpolation (`cv::resize`,
/// `INTER_LINEAR`, 8-bit): pixel for pixel what OpenCV 5.1 gives (`tests/datasets/data_convert.rs`,
/// `imageset_resize_matches_opencv`).
pub fn resize_linear(image: &Image, height: usize, width: usize) -> Image {
    let (sh, sw, c) = (image.height, image.width, image.channels);
    if (sh, sw) == (height, width) || sh == 0 || sw == 0 {
        return image.clone();
    }
    let xs = column_taps(sw, width);
    // Horizontal pass into fixed-point rows (scale 2^11), then the vertical blend.
    let hrow = |y: usize| -> Vec<i32> {
        let row = &image.data[y * sw * c..(y + 1) * sw * c];
        let mut out = vec![0i32; width * c];
        for (dx, &(sx, a0, a1)) in xs.iter().enumerate() {
            let sx1 = (sx + 1).min(sw - 1);
            for k in 0..c {
                out[dx * c + k] =
                    i32::from(row[sx * c + k]) * a0 + i32::from(row[sx1 * c + k]) * a1;
            }
        }
        out
    };
    let rows: Vec<Vec<i32>> = (0..sh).map(hrow).collect();
    let mut data = vec![0u8; height * width * c];
    for (out, (upper, lower, b0, b1)) in data.chunks_exact_mut(width * c).zip(row_taps(sh, height))
    {
        for ((value, &u), &l) in out.iter_mut().zip(&rows[upper]).zip(&rows[lower]) {
            *value = vertical_blend(u, l, b0, b1);
        }
    }
    Image {
        height,
        width,
        channels: c,
        data,
    }
}

/// Encodes an image as `encoding` ("png", or "jpg"/"jpeg" at OpenCV's default quality 95),
/// as `cv::imencode` would for a 1- or 3-channel (BGR) image.
pub fn encode_image(image: &Image, encoding: &str) -> std::result::Result<Vec<u8>, String> {
    let (w, h) = (image.width as u32, image.height as u32);
    let (color, data) = match image.channels {
        1 => (ExtendedColorType::L8, image.data.clone()),
        3 => {
            let mut rgb = image.data.clone();
            swap_rb(&mut rgb, 3);
            (ExtendedColorType::Rgb8, rgb)
        }
        n => return Err(format!("cannot encode a {n}-channel image")),
    };
    let mut out = Vec::new();
    let result = match encoding.to_ascii_lowercase().as_str() {
        "png" => image::codecs::png::PngEncoder::new(IoCursor::new(&mut out))
            .write_image(&data, w, h, color),
        "jpg" | "jpeg" => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .write_image(&data, w, h, color),
        other => return Err(format!("encode_type '{other}' is not supported (png, jpg)")),
    };
    result.map_err(|e| e.to_string())?;
    Ok(out)
}
