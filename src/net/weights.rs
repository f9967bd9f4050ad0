//! Weights in and out: copying trained layers from a `.caffemodel` or another net, and the
//! `NetParameter` a snapshot writes (upstream: `CopyTrainedLayersFrom`, `ShareTrainedLayersWith`,
//! `ToProto` in src/caffe/net.cpp, `Layer::ToProto` in include/caffe/layer.hpp).

use std::path::Path;

use super::{Net, NetError, Result};
use crate::backend::{Backend, CpuBackend};
use crate::blob::Blob;
use crate::proto::blob_proto_shape;
use crate::proto::caffe::NetParameter;

impl<B: Backend> Net<B> {
    /// The first layer named `name`.
    pub(super) fn first_layer_named(&self, name: &str) -> Option<usize> {
        self.layer_names().position(|n| n == name)
    }

    /// Copies the weights of every layer of `param` into the layer of the same name: a source
    /// layer with no namesake is skipped ("Ignoring source layer X"), a different number of
    /// blobs or a blob of another shape is an error naming the layer. A blob saved with the
    /// legacy 4-D fields (num, channels, height, width) matches a target whose shape, padded
    /// with leading 1s to 4 axes, is the same, as upstream allows.
    pub fn copy_trained_layers_from(&mut self, param: &NetParameter) -> Result<()> {
        for source in &param.layer {
            let name = source.name();
            let Some(target) = self.first_layer_named(name) else {
                log::info!("Ignoring source layer {name}");
                continue;
            };
            let ids = self.layers[target].learnable_ids.clone();
            if ids.len() != source.blobs.len() {
                return Err(NetError::Weights(format!(
                    "Incompatible number of blobs for layer {name}: the source has {}, the \
                     target {}",
                    source.blobs.len(),
                    ids.len()
                )));
            }
            for (j, (&id, proto)) in ids.iter().zip(&source.blobs).enumerate() {
                let blob = &mut self.learnable_params[id];
                if !blob.shape_equals(proto) {
                    let dims = blob_proto_shape(proto);
                    let mut source_shape: String = dims.iter().map(|d| format!("{d} ")).collect();
                    source_shape.push_str(&format!("({})", dims.iter().product::<i64>()));
                    return Err(NetError::Weights(format!(
                        "Cannot copy param {j} weights from layer '{name}'; shape mismatch.  \
                         Source param shape is {source_shape}; target param shape is {}. To \
                         learn this layer's parameters from scratch rather than copying from a \
                         saved net, rename the layer. (A blob saved with the legacy 4-D \
                         num/channels/height/width fields matches when the target shape padded \
                         with leading 1s is the same.)",
                        blob.shape_string()
                    )));
                }
                blob.from_proto(proto, false)?;
            }
        }
        Ok(())
    }

    /// Reads a `.caffemodel` and copies its weights ([`Net::copy_trained_layers_from`]); an
    /// HDF5 file (by its signature, as upstream's `H5Fis_hdf5`) is read as a `.caffemodel.h5`
    /// ([`Net::copy_trained_layers_from_hdf5`]).
    pub fn copy_trained_layers_from_file(&mut self, path: &Path) -> Result<()> {
        if crate::data::hdf5::is_hdf5(path) {
            return self.copy_trained_layers_from_hdf5(path);
        }
        let param = crate::proto::read_caffemodel(path)?;
        self.copy_trained_layers_from(&param).map_err(|e| match e {
            NetError::Weights(m) => NetError::Weights(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Copies the weights of every layer of `other` into this net's layer of the same name
    /// (upstream's `ShareTrainedLayersWith` shares the memory instead, which the CPU backend
    /// does with [`Net::share_trained_layers_with`]; a solver copies, before each test pass).
    pub fn copy_trained_layers_from_net(&mut self, other: &Net<B>) -> Result<()> {
        self.for_each_namesake_param(other, "copy", |target, source| {
            target.copy_from(source, false, false)
        })
    }

    /// Calls `f(target, source)` for each parameter blob of each layer of this net that has a
    /// namesake in `other`, after checking that the two layers have the same number of blobs,
    /// of the same shapes (`what`, "copy" or "share", names the operation in the error).
    fn for_each_namesake_param(
        &mut self,
        other: &Net<B>,
        what: &str,
        mut f: impl FnMut(&mut Blob<B>, &Blob<B>) -> crate::blob::Result<()>,
    ) -> Result<()> {
        for (source_layer, name) in other.layer_names().enumerate() {
            let Some(target) = self.first_layer_named(name) else {
                log::info!("Ignoring source layer {name}");
                continue;
            };
            let source_ids = &other.layers[source_layer].learnable_ids;
            let target_ids = self.layers[target].learnable_ids.clone();
            if source_ids.len() != target_ids.len() {
                return Err(NetError::Weights(format!(
                    "Incompatible number of blobs for layer {name}: the source has {}, the \
                     target {}",
                    source_ids.len(),
                    target_ids.len()
                )));
            }
            for (j, (&s, &t)) in source_ids.iter().zip(&target_ids).enumerate() {
                let source = &other.learnable_params[s];
                let target = &mut self.learnable_params[t];
                if source.shape() != target.shape() {
                    return Err(NetError::Weights(format!(
                        "Cannot {what} param {j} weights from layer '{name}'; shape mismatch.  \
                         Source param shape is {}; target param shape is {}",
                        source.shape_string(),
                        target.shape_string()
                    )));
                }
                f(target, source)?;
            }
        }
        Ok(())
    }

    /// The net as a `NetParameter` for a `.caffemodel` (upstream's `ToProto`): its name and,
    /// per layer, the parameter the net built it from (Splits included, phase set, the
    /// implicit loss weight of loss layers recorded) with the layer's parameter blobs (data,
    /// and diff if `write_diff`) in place of any blobs it had.
    pub fn to_proto(&self, write_diff: bool) -> Result<NetParameter> {
        let mut out = NetParameter {
            name: Some(self.name.clone()),
            ..Default::default()
        };
        for layer in &self.layers {
            let mut param = layer.param.clone();
            param.blobs.clear();
            for &id in &layer.learnable_ids {
                param
                    .blobs
                    .push(self.learnable_params[id].to_proto(write_diff)?);
            }
            out.layer.push(param);
        }
        Ok(out)
    }
}

impl Net<CpuBackend> {
    /// Upstream's `ShareTrainedLayersWith`: every layer of `other` with a namesake here lends
    /// it its weights' memory, so that a change to either net's weights (a solver's update,
    /// a write through an array) is the other's too. Same checks as
    /// [`Net::copy_trained_layers_from_net`]; the diffs stay separate. Both nets are marked
    /// ([`Net::shares_weights`]).
    ///
    /// # Safety
    ///
    /// The nets alias: neither may be used while the other is borrowed mutably (never from two
    /// threads at once, nor from inside an engine call on the other, such as a Python layer's).
    pub unsafe fn share_trained_layers_with(&mut self, other: &mut Net<CpuBackend>) -> Result<()> {
        // SAFETY: the caller keeps the two nets from being used at once.
        self.for_each_namesake_param(other, "share", |target, source| unsafe {
            target.share_data(source)
        })?;
        self.shares_weights = true;
        other.shares_weights = true;
        Ok(())
    }
}
