//! Weights in HDF5 (upstream: `Net::ToHDF5` and `CopyTrainedLayersFromHDF5` in
//! src/caffe/net.cpp).
//!
//! The layout: a group `data` with one group per layer (every layer, blobs or not), holding a
//! float32 dataset per parameter blob named by its index (`data/ip1/0`, `data/ip1/1`); with
//! diffs, a group `diff` laid out the same. A parameter shared by name is written once, under
//! the layer that owns it; its diff under every layer that uses it.

use std::path::Path;

use super::{Net, NetError, Result};
use crate::backend::Backend;
use crate::data::hdf5::{add_array, write_atomically, FileBuilder, Reader};

impl<B: Backend> Net<B> {
    /// Writes the weights (and the diffs when `write_diff`) to `path` in upstream's HDF5
    /// layout, atomically.
    pub fn write_hdf5(&self, path: &Path, write_diff: bool) -> Result<()> {
        self.check_hdf5_group_names(path)?;
        let mut file = FileBuilder::new();
        let mut data = file.create_group("data");
        let mut diff = file.create_group("diff");
        for layer in &self.layers {
            let name = layer.param.name();
            let mut layer_data = data.create_group(name);
            let mut layer_diff = diff.create_group(name);
            for (index, (&net_param_id, &learnable_id)) in layer
                .net_param_ids
                .iter()
                .zip(&layer.learnable_ids)
                .enumerate()
            {
                let blob = &self.learnable_params[learnable_id];
                let dataset = index.to_string();
                if self.net_params[net_param_id].owner.is_none() {
                    add_array(
                        &mut layer_data,
                        &dataset,
                        blob.shape(),
                        &blob.data_to_vec()?,
                    );
                }
                if write_diff {
                    add_array(
                        &mut layer_diff,
                        &dataset,
                        blob.shape(),
                        &blob.diff_to_vec()?,
                    );
                }
            }
            data.add_group(layer_data.finish());
            diff.add_group(layer_diff.finish());
        }
        file.add_group(data.finish());
        if write_diff {
            file.add_group(diff.finish());
        }
        write_atomically(path, file).map_err(|e| NetError::Weights(e.to_string()))
    }

    /// Refuses layer names the layout cannot hold, one group per name: a repeated name (as
    /// libhdf5 refuses to create a group twice for upstream) and a name that is not a single
    /// group name.
    fn check_hdf5_group_names(&self, path: &Path) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for layer in &self.layers {
            let name = layer.param.name();
            let problem = if name.is_empty() || name.contains('/') || name == "." {
                "is not a valid HDF5 group name"
            } else if !seen.insert(name) {
                "names two layers; the layout has one group per layer name"
            } else {
                continue;
            };
            return Err(NetError::Weights(format!(
                "{}: cannot save the weights in HDF5: layer name {name:?} {problem}",
                path.display()
            )));
        }
        Ok(())
    }

    /// Copies the weights of an HDF5 `.caffemodel.h5` into the layers of the same names: a
    /// source layer with no namesake is skipped, more source blobs than the layer has or a
    /// blob of another shape is an error, and a missing blob is allowed only where the target
    /// shares it from another layer, as upstream.
    pub fn copy_trained_layers_from_hdf5(&mut self, path: &Path) -> Result<()> {
        let weights_error = |message: String| NetError::Weights(message);
        let reader = Reader::open(path).map_err(|e| weights_error(e.to_string()))?;
        let source_layers = reader
            .links("data")
            .map_err(|e| weights_error(format!("Error reading weights from {e}")))?;
        for name in source_layers {
            let Some(target) = self.first_layer_named(&name) else {
                log::info!("Ignoring source layer {name}");
                continue;
            };
            let group = format!("data/{name}");
            let num_source = reader
                .links(&group)
                .map_err(|e| weights_error(e.to_string()))?
                .len();
            let layer = &self.layers[target];
            let ids: Vec<(usize, usize)> = layer
                .net_param_ids
                .iter()
                .copied()
                .zip(layer.learnable_ids.iter().copied())
                .collect();
            if num_source > ids.len() {
                return Err(weights_error(format!(
                    "{}: Incompatible number of blobs for layer {name}: the source has \
                     {num_source}, the target {}",
                    path.display(),
                    ids.len()
                )));
            }
            for (j, (net_param_id, learnable_id)) in ids.into_iter().enumerate() {
                let dataset = format!("{group}/{j}");
                if !reader.has_dataset(&dataset) {
                    if self.net_params[net_param_id].owner.is_some() {
                        continue;
                    }
                    return Err(weights_error(format!(
                        "{}: Incompatible number of blobs for layer {name}: no dataset {dataset}",
                        path.display()
                    )));
                }
                let array = reader
                    .read_array(&dataset)
                    .map_err(|e| weights_error(e.to_string()))?;
                let blob = &mut self.learnable_params[learnable_id];
                if array.shape != blob.shape() {
                    let count: usize = array.shape.iter().product();
                    let dims: String = array.shape.iter().map(|d| format!("{d} ")).collect();
                    return Err(weights_error(format!(
                        "{}: Cannot load blob from hdf5 dataset {dataset}; shape mismatch. \
                         Source shape is {dims}({count}) target shape is {}",
                        path.display(),
                        blob.shape_string()
                    )));
                }
                blob.set_data(&array.values)?;
            }
        }
        Ok(())
    }
}
