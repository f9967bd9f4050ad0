//! HDF5Output: writes its two bottoms to an HDF5 file as datasets `data` and `label`
//! (upstream: src/caffe/layers/hdf5_output_layer.cpp).
//!
//! `hdf5_output_param { file_name: "out.h5" }`. Each forward pass writes the batch as float32
//! datasets in the bottoms' legacy 4-axis shape (num, channels, height, width), as upstream
//! does. Upstream creates the datasets once, so its second forward pass fails on the existing
//! names; here each pass rewrites the file (atomically) with its batch, so the file holds the
//! last one. There are no tops and nothing to propagate.

use std::path::PathBuf;

use crate::backend::Backend;
use crate::blob::Blob;
use crate::data::hdf5::{add_root_array, write_atomically, FileBuilder};
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The names upstream gives the two datasets (`HDF5_DATA_DATASET_NAME`, `HDF5_DATA_LABEL_NAME`).
const DATASET_NAMES: [&str; 2] = ["data", "label"];

/// The HDF5Output layer.
pub struct Hdf5OutputLayer {
    file_name: PathBuf,
}

impl Hdf5OutputLayer {
    /// Reads `hdf5_output_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.hdf5_output_param.clone().unwrap_or_default();
        if p.file_name().is_empty() {
            return Err(LayerError::invalid(
                "hdf5_output_param.file_name is required",
            ));
        }
        Ok(Hdf5OutputLayer {
            file_name: PathBuf::from(p.file_name()),
        })
    }
}

/// The blob's legacy shape: num, channels, height, width (missing axes are 1).
fn legacy_shape<B: Backend>(blob: &Blob<B>) -> Result<Vec<usize>, LayerError> {
    Ok(vec![
        blob.num()?,
        blob.channels()?,
        blob.height()?,
        blob.width()?,
    ])
}

impl<B: Backend> Layer<B> for Hdf5OutputLayer {
    fn layer_type(&self) -> &'static str {
        "HDF5Output"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(2, 0)
    }

    /// Creates the (empty) file, as upstream does at setup, so that an unwritable path fails
    /// before the first batch.
    fn layer_setup(
        &mut self,
        _ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        _params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        write_atomically(&self.file_name, FileBuilder::new())
            .map_err(|e| LayerError::invalid(e.to_string()))
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (data, label) = (blobs.bottom(0), blobs.bottom(1));
        if data.num()? != label.num()? {
            return Err(LayerError::invalid(format!(
                "HDF5Output: the data bottom has {} items but the label bottom {}",
                data.num()?,
                label.num()?
            )));
        }
        Ok(())
    }

    fn forward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        log::info!("Saving HDF5 file {}", self.file_name.display());
        let mut file = FileBuilder::new();
        for (i, name) in DATASET_NAMES.iter().enumerate() {
            let blob = blobs.bottom(i);
            add_root_array(&mut file, name, &legacy_shape(blob)?, &blob.data_to_vec()?);
        }
        write_atomically(&self.file_name, file).map_err(|e| LayerError::invalid(e.to_string()))
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
}
