//! What the loss layers share: upstream's `LossLayer` (src/caffe/layers/loss_layer.cpp) bottom
//! check, the loss normalisation of SoftmaxWithLoss and SigmoidCrossEntropyLoss
//! (`get_normalizer` in src/caffe/layers/softmax_loss_layer.cpp), reading the loss weight from
//! the top's diff, and a layer-owned scratch buffer.
//!
//! SoftmaxWithLoss, SigmoidCrossEntropyLoss and EuclideanLoss compute their loss and gradient
//! scale with device ops only ([`normalize_loss`], [`weight_over_normalizer`],
//! `Backend::sum_into`), so that a CUDA graph can record a training iteration; HingeLoss
//! still reads back to the host.

use crate::backend::{Backend, Binary, DeviceBuffer, Src, Views};
use crate::blob::Blob;
use crate::layers::softmax::AxisView;
use crate::layers::LayerError;
use crate::proto::caffe::loss_parameter::NormalizationMode;
use crate::proto::caffe::LayerParameter;

/// How a loss is divided before it is reported (upstream's `LossParameter.NormalizationMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    /// By every position, ignored or not: `outer * inner`.
    Full,
    /// By the positions whose label is not `ignore_label`.
    Valid,
    /// By `outer` (the batch size).
    BatchSize,
    /// Not at all.
    None,
}

impl Normalization {
    /// `loss_param.normalization` if set, else the legacy `loss_param.normalize` (true: VALID,
    /// false: BATCH_SIZE), else `default` (VALID for SoftmaxWithLoss, BATCH_SIZE for
    /// SigmoidCrossEntropyLoss, as upstream).
    pub fn from_param(param: &LayerParameter, default: Normalization) -> Result<Self, LayerError> {
        let Some(loss) = param.loss_param.as_ref() else {
            return Ok(default);
        };
        if let Some(raw) = loss.normalization {
            let mode = NormalizationMode::try_from(raw).map_err(|_| {
                LayerError::invalid(format!(
                    "loss_param.normalization has the unknown value {raw}"
                ))
            })?;
            return Ok(match mode {
                NormalizationMode::Full => Normalization::Full,
                NormalizationMode::Valid => Normalization::Valid,
                NormalizationMode::BatchSize => Normalization::BatchSize,
                NormalizationMode::None => Normalization::None,
            });
        }
        Ok(match loss.normalize {
            Some(true) => Normalization::Valid,
            Some(false) => Normalization::BatchSize,
            None => default,
        })
    }

    /// The divisor: `outer * inner` (FULL), `valid` (VALID), `outer` (BATCH_SIZE) or 1 (NONE),
    /// and at least 1 so that a batch whose labels are all ignored gives 0, not NaN.
    pub fn normalizer(self, outer: usize, inner: usize, valid: usize) -> f32 {
        let n = match self {
            Normalization::Full => (outer * inner) as f32,
            Normalization::Valid => valid as f32,
            Normalization::BatchSize => outer as f32,
            Normalization::None => 1.0,
        };
        n.max(1.0)
    }
}

/// `loss_param.ignore_label`, if set.
pub fn ignore_label(param: &LayerParameter) -> Option<i32> {
    param.loss_param.as_ref().and_then(|l| l.ignore_label)
}

/// Upstream's `LossLayer::Reshape` check: the predictions and the labels (or targets) have the
/// same first dimension.
pub fn check_first_dims<B: Backend>(data: &Blob<B>, label: &Blob<B>) -> Result<(), LayerError> {
    let (d, l) = (data.shape_at(0)?, label.shape_at(0)?);
    if d != l {
        return Err(LayerError::invalid(format!(
            "The data and label should have the same first dimension: data {} vs. label {}",
            data.shape_string(),
            label.shape_string()
        )));
    }
    Ok(())
}

/// The predictions `data` around `axis`, checked to have one label per position. `field` names
/// the parameter holding the axis ("softmax_param.axis"), `kind` the layer in upstream's
/// message ("softmax", "infogain").
pub fn label_positions<B: Backend>(
    data: &Blob<B>,
    label: &Blob<B>,
    (axis, field): (i32, &str),
    kind: &str,
) -> Result<AxisView, LayerError> {
    check_first_dims(data, label)?;
    let view =
        AxisView::new(data, axis).map_err(|e| LayerError::invalid(format!("{field}: {e}")))?;
    if view.positions() != label.count() {
        return Err(LayerError::invalid(format!(
            "Number of labels must match number of predictions; e.g., if {kind} axis == 1 \
             and prediction shape is (N, C, H, W), label count (number of labels) must be \
             N*H*W, with integer values in {{0, 1, ..., C-1}}: predictions {} around axis \
             {axis} give {} positions, labels {}",
            data.shape_string(),
            view.positions(),
            label.shape_string()
        )));
    }
    Ok(view)
}

/// Upstream's refusal to propagate into the labels.
pub fn label_backprop_error(layer_type: &str) -> LayerError {
    LayerError::invalid(format!(
        "{layer_type} Layer cannot backpropagate to label inputs."
    ))
}

/// The loss weight the net stored in the diff of a loss top.
pub fn loss_weight<B: Backend>(backend: &B, top: &Blob<B>) -> Result<f32, LayerError> {
    let mut w = [0.0f32];
    backend.download(top.diff_view(), &mut w)?;
    Ok(w[0])
}

/// Writes a scalar into the data of a (count 1) top.
pub fn write_scalar<B: Backend>(
    backend: &B,
    top: &mut Blob<B>,
    value: f32,
) -> Result<(), LayerError> {
    backend.upload(&[value], top.data_view_mut())?;
    Ok(())
}

/// Divides the summed loss in `loss[0]` by its normalizer, which it first writes into
/// `normalizer[0]` (the backward reads it there), all with device ops so that a CUDA graph can
/// record the layer: for VALID with an ignore label, the number of ones in `valid_mask` (a 0/1
/// mask of the `outer * inner` positions), at least 1; otherwise
/// [`Normalization::normalizer`] of the shape. `temp` is one element of scratch.
pub fn normalize_loss<B: Backend>(
    backend: &B,
    normalization: Normalization,
    (outer, inner): (usize, usize),
    valid_mask: Option<&B::Buffer>,
    (temp, normalizer): (&mut B::Buffer, &mut B::Buffer),
    loss: &mut B::Buffer,
) -> Result<(), LayerError> {
    let positions = outer * inner;
    let mut normalizer = normalizer.slice_mut(0, 1);
    match (normalization, valid_mask) {
        (Normalization::Valid, Some(mask)) => {
            let mut floor = temp.slice_mut(0, 1);
            backend.sum_into(1.0, mask.slice(0, positions), normalizer.reborrow())?;
            backend.fill(1.0, floor.reborrow())?;
            let floor = floor.as_slice().src();
            backend.binary(Binary::Max, Src::InPlace, floor, normalizer.reborrow())?;
        }
        (mode, _) => {
            let constant = mode.normalizer(outer, inner, positions);
            backend.fill(constant, normalizer.reborrow())?;
        }
    }
    let normalizer = normalizer.as_slice().src();
    backend.binary(Binary::Div, Src::InPlace, normalizer, loss.slice_mut(0, 1))?;
    Ok(())
}

/// `factor[0] = loss weight / normalizer[0]` with device ops: the scale of a normalised loss's
/// gradient (upstream's `top[0]->cpu_diff()[0] / normalizer`).
pub fn weight_over_normalizer<B: Backend>(
    backend: &B,
    top: &Blob<B>,
    normalizer: &B::Buffer,
    factor: &mut B::Buffer,
) -> Result<(), LayerError> {
    let loss_weight = top.diff_view().src();
    let normalizer = normalizer.slice(0, 1).src();
    backend.binary(Binary::Div, loss_weight, normalizer, factor.slice_mut(0, 1))?;
    Ok(())
}

/// A loss layer's one-element normalizer buffer, allocated on first use holding 1: the
/// normalizer's floor, what the backward reads if no forward pass has counted yet.
pub fn normalizer_slot<B: Backend>(
    backend: &B,
    slot: &mut Option<B::Buffer>,
) -> Result<(), LayerError> {
    if slot.is_none() {
        backend.fill(1.0, scratch(backend, slot, 1)?.slice_mut(0, 1))?;
    }
    Ok(())
}

/// A layer-owned device buffer of at least `len` elements, allocated (zeroed) on first use and
/// reallocated only when it is too small.
pub fn scratch<'a, B: Backend>(
    backend: &B,
    slot: &'a mut Option<B::Buffer>,
    len: usize,
) -> Result<&'a mut B::Buffer, LayerError> {
    if slot.as_ref().is_none_or(|b| b.len() < len) {
        *slot = Some(backend.alloc(len)?);
    }
    Ok(slot.as_mut().expect("a buffer was just stored in the slot"))
}
