//! `Datum` records: parse, check, encode, and decode encoded images into Caffe's layout
//! (upstream: src/caffe/util/io.cpp, `CVMatToDatum`, `DecodeDatum*`).
//!
//! A Datum holds one image as `channels x height x width` values, channel-major, either as
//! bytes (`data`) or as floats (`float_data`; upstream uses the bytes whenever `data` is not
//! empty), plus a label. An *encoded* Datum (`encoded: true`) holds a JPEG or PNG file in
//! `data` instead, and no shape; decoding gives the raw layout with colour images in BGR
//! order, as OpenCV hands them to Caffe.

use prost::Message;

pub use crate::proto::caffe::Datum;

use super::imgcodec::{decode_image, ColorMode, Image};
use super::{DataError, Result};

/// Parses a record's value.
pub fn parse_datum(bytes: &[u8]) -> Result<Datum> {
    Datum::decode(bytes).map_err(|e| DataError::invalid(format!("not a valid Datum: {e}")))
}

/// Serialises a Datum the way upstream's `SerializeToString` does (fields in number order,
/// only the ones that are set).
pub fn encode_datum(datum: &Datum) -> Vec<u8> {
    datum.encode_to_vec()
}

/// `channels x height x width` of a Datum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatumShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl DatumShape {
    /// `channels * height * width`.
    pub fn count(&self) -> usize {
        self.channels * self.height * self.width
    }
}

impl std::fmt::Display for DatumShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// The values of a raw Datum.
#[derive(Debug, Clone, Copy)]
pub enum DatumValues<'a> {
    /// `data`, one byte per value.
    Bytes(&'a [u8]),
    /// `float_data`.
    Floats(&'a [f32]),
}

impl DatumValues<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            DatumValues::Bytes(b) => b.len(),
            DatumValues::Floats(f) => f.len(),
        }
    }
    /// Whether there is no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Value `i` as f32.
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            DatumValues::Bytes(b) => f32::from(b[i]),
            DatumValues::Floats(f) => f[i],
        }
    }
}

/// The shape of a raw (not encoded) Datum; every dimension must be positive.
pub fn datum_shape(datum: &Datum) -> Result<DatumShape> {
    if datum.encoded() {
        return Err(DataError::invalid(
            "the Datum is encoded: decode it before reading its shape",
        ));
    }
    let (c, h, w) = (datum.channels(), datum.height(), datum.width());
    if c <= 0 || h < 0 || w < 0 {
        return Err(DataError::invalid(format!(
            "Datum shape {c}x{h}x{w}: channels must be positive and height and width \
             non-negative"
        )));
    }
    Ok(DatumShape {
        channels: c as usize,
        height: h as usize,
        width: w as usize,
    })
}

/// The shape and values of a raw Datum, checked to agree: bytes when `data` is not empty
/// (as upstream decides), else `float_data`.
pub fn datum_values(datum: &Datum) -> Result<(DatumShape, DatumValues<'_>)> {
    let shape = datum_shape(datum)?;
    let values = match &datum.data {
        Some(bytes) if !bytes.is_empty() => DatumValues::Bytes(bytes),
        _ => DatumValues::Floats(&datum.float_data),
    };
    if values.len() != shape.count() {
        let what = match values {
            DatumValues::Bytes(_) => "data holds",
            DatumValues::Floats(_) => "float_data holds",
        };
        return Err(DataError::invalid(format!(
            "{what} {} values but channels x height x width = {shape} = {}",
            values.len(),
            shape.count()
        )));
    }
    Ok((shape, values))
}

/// A raw Datum holding `image` (upstream's `CVMatToDatum`): its shape, its pixels
/// channel-major, `encoded: false`; the label is left unset.
pub fn image_to_datum(image: &Image) -> Datum {
    Datum {
        channels: Some(image.channels as i32),
        height: Some(image.height as i32),
        width: Some(image.width as i32),
        data: Some(image.to_chw()),
        label: None,
        float_data: Vec::new(),
        encoded: Some(false),
    }
}

/// Decodes an encoded Datum into a raw one (channels-first, BGR), keeping its label; `mode`
/// picks upstream's flavour: [`ColorMode::Native`] (`DecodeDatumNative`), or forced colour or
/// grey (`DecodeDatum(datum, is_color)`). A raw Datum is returned unchanged.
pub fn decode_datum(datum: &Datum, mode: ColorMode) -> Result<Datum> {
    if !datum.encoded() {
        return Ok(datum.clone());
    }
    let bytes = datum.data.as_deref().unwrap_or_default();
    let image = decode_image(bytes, mode)
        .map_err(|e| DataError::invalid(format!("could not decode the encoded Datum: {e}")))?;
    let mut out = image_to_datum(&image);
    out.label = datum.label;
    Ok(out)
}
