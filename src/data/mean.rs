//! The mean image of an LMDB or a LevelDB (upstream: tools/compute_image_mean.cpp).
//!
//! Every record's values are added into one f32 sum per position, in key order, then divided
//! by the record count in f32: the same operations in the same order as upstream, so the mean
//! file is bit-identical to upstream's (for 8-bit data the sums are exact integers below
//! 2^24 up to 65,793 records, and beyond that f32 rounds them as upstream's f32 does).
//! Encoded records are decoded as stored (`DecodeDatumNative`).

use std::path::Path;

use crate::proto::caffe::BlobProto;
use crate::proto::write_binary;

use super::convert::Progress;
use super::datum::{decode_datum, parse_datum, Datum};
use super::db::{count_records, DbCursor};
use super::imgcodec::ColorMode;
use super::{DataError, DbBackend, Result};

/// The result of [`compute_image_mean`].
#[derive(Debug, Clone, PartialEq)]
pub struct ImageMean {
    /// `1 x C x H x W`, in the legacy num/channels/height/width fields as upstream writes it.
    pub blob: BlobProto,
    /// The mean of each channel over all positions (the values upstream logs as
    /// `mean_value channel [c]`).
    pub channel_means: Vec<f32>,
    /// Records averaged.
    pub count: u64,
}

/// The values of a (decoded) Datum as f32 in `sum`'s accumulation, or an error naming what
/// is wrong.
fn accumulate(sum: &mut [f32], datum: &Datum, expected: usize) -> Result<()> {
    let bytes = datum.data.as_deref().unwrap_or_default();
    let size = bytes.len().max(datum.float_data.len());
    if size != expected {
        return Err(DataError::invalid(format!(
            "Incorrect data field size {size} (the first record holds {expected} values)"
        )));
    }
    if !bytes.is_empty() {
        for (s, &b) in sum.iter_mut().zip(bytes) {
            *s += f32::from(b);
        }
    } else {
        for (s, &v) in sum.iter_mut().zip(&datum.float_data) {
            *s += v;
        }
    }
    Ok(())
}

/// Computes the mean image of the LMDB at `input` and, when `output` is given, writes it there
/// as a binary `BlobProto`. Logs upstream's lines (`Processed N files.`, `mean_value channel
/// [c]: v`).
pub fn compute_image_mean(input: &Path, output: Option<&Path>) -> Result<ImageMean> {
    compute_image_mean_with(input, DbBackend::Lmdb, output, &mut |_| {})
}

/// [`compute_image_mean`] of the `backend` database at `input`, reporting progress to
/// `progress`.
pub fn compute_image_mean_with(
    input: &Path,
    backend: DbBackend,
    output: Option<&Path>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ImageMean> {
    let total = count_records(input, backend)?;
    let mut cursor = DbCursor::open(input, backend)?;
    let first = parse_datum(cursor.value()).map_err(|e| e.in_record(input, cursor.key()))?;
    if first.encoded() {
        log::info!("Decoding Datum");
    }
    let first =
        decode_datum(&first, ColorMode::Native).map_err(|e| e.in_record(input, cursor.key()))?;
    let (channels, height, width) = (first.channels(), first.height(), first.width());
    let data_size = (channels.max(0) as usize) * (height.max(0) as usize) * (width.max(0) as usize);
    let size_in_datum = first
        .data
        .as_ref()
        .map_or(0, Vec::len)
        .max(first.float_data.len());
    let mut sum = vec![0f32; size_in_datum];

    log::info!("Starting iteration");
    let mut count = 0u64;
    loop {
        let in_record = |e: DataError| e.in_record(input, cursor.key());
        let datum = parse_datum(cursor.value())
            .and_then(|d| decode_datum(&d, ColorMode::Native))
            .map_err(in_record)?;
        accumulate(&mut sum, &datum, data_size).map_err(in_record)?;
        count += 1;
        if count.is_multiple_of(10000) {
            log::info!("Processed {count} files.");
            progress(Progress {
                stage: "mean",
                done: count,
                total,
            });
        }
        // Once around: the cursor is back on the first record after the last.
        if cursor.next_wrapping()? {
            break;
        }
    }
    drop(cursor);
    if !count.is_multiple_of(10000) {
        log::info!("Processed {count} files.");
    }
    progress(Progress {
        stage: "mean",
        done: count,
        total,
    });

    let divisor = count as f32;
    let data: Vec<f32> = sum.iter().map(|&s| s / divisor).collect();
    let blob = BlobProto {
        num: Some(1),
        channels: Some(channels),
        height: Some(height),
        width: Some(width),
        data,
        ..Default::default()
    };
    if let Some(output) = output {
        log::info!("Write to {}", output.display());
        write_binary(output, &blob)?;
    }
    let dim = (height.max(0) as usize) * (width.max(0) as usize);
    log::info!("Number of channels: {channels}");
    let mut channel_means = Vec::with_capacity(channels.max(0) as usize);
    for c in 0..channels.max(0) as usize {
        let total: f32 = blob.data[dim * c..dim * (c + 1)]
            .iter()
            .fold(0f32, |acc, &v| acc + v);
        let mean = total / dim as f32;
        log::info!(
            "mean_value channel [{c}]: {}",
            crate::log::cpp_float(f64::from(mean))
        );
        channel_means.push(mean);
    }
    Ok(ImageMean {
        blob,
        channel_means,
        count,
    })
}
