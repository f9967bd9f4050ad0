//! SoftmaxWithLoss: the multinomial logistic loss of the softmax of the predictions
//! (upstream: src/caffe/layers/softmax_loss_layer.cpp).
//!
//! Bottoms: predictions `(outer, C, inner)` around `softmax_param.axis` (default 1), and
//! `outer * inner` labels in `0..C` stored as f32. Top 0 is the scalar loss
//! `-sum log(max(p[label], FLT_MIN)) / normalizer`, skipping positions labelled
//! `loss_param.ignore_label`; the normalizer follows `loss_param.normalization` (default VALID)
//! or the legacy `normalize`. An optional top 1 receives the probabilities. The labels get no
//! gradient.

use crate::backend::{Backend, Binary, Scalar, Src, Unary, Views};
use crate::layers::loss::{
    ignore_label, label_backprop_error, label_positions, normalize_loss, normalizer_slot, scratch,
    weight_over_normalizer, Normalization,
};
use crate::layers::softmax::{softmax_forward, AxisView};
use crate::layers::{labels, BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The SoftmaxWithLoss layer.
pub struct SoftmaxWithLossLayer<B: Backend> {
    axis: i32,
    ignore_label: Option<i32>,
    normalization: Normalization,
    view: AxisView,
    /// The softmax output, `outer * C * inner`.
    prob: Option<B::Buffer>,
    /// Per-position scratch: the softmax's max and sum, then the FLT_MIN floor and the mask.
    scale: Option<B::Buffer>,
    /// Per-position `log(max(p[label], FLT_MIN))`.
    picked: Option<B::Buffer>,
    /// The normalizer of the last forward pass, one element: it stays on the device (as does
    /// everything this layer computes), so that a CUDA graph can record the layer.
    normalizer: Option<B::Buffer>,
    /// One element: scratch in the forward pass, loss weight / normalizer in the backward.
    factor: Option<B::Buffer>,
}

impl<B: Backend> SoftmaxWithLossLayer<B> {
    /// Reads `softmax_param.axis` and `loss_param` (`ignore_label`, `normalization`,
    /// `normalize`).
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(SoftmaxWithLossLayer {
            axis: param.softmax_param.as_ref().map_or(1, |p| p.axis()),
            ignore_label: ignore_label(param),
            normalization: Normalization::from_param(param, Normalization::Valid)?,
            view: AxisView::default(),
            prob: None,
            scale: None,
            picked: None,
            normalizer: None,
            factor: None,
        })
    }
}

impl<B: Backend> Layer<B> for SoftmaxWithLossLayer<B> {
    fn layer_type(&self) -> &'static str {
        "SoftmaxWithLoss"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::Exactly(2), Count::Range(1, 2)).with_auto_top_blobs()
    }
    fn allow_force_backward(&self, bottom_index: usize) -> bool {
        bottom_index != 1
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (data, label) = (blobs.bottom(0), blobs.bottom(1));
        let view = label_positions(data, label, (self.axis, "softmax_param.axis"), "softmax")?;
        let shape = data.shape().to_vec();
        self.view = view;
        blobs.top_mut(0).reshape(&[])?;
        if blobs.num_top() > 1 {
            blobs.top_mut(1).reshape(&shape)?;
        }
        let be = ctx.backend;
        scratch(be, &mut self.prob, view.count())?;
        scratch(be, &mut self.scale, view.positions())?;
        scratch(be, &mut self.factor, 1)?;
        scratch(be, &mut self.picked, view.positions())?;
        normalizer_slot(be, &mut self.normalizer)
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let v = self.view;
        let (axis, n, positions) = (v.axis(), v.count(), v.positions());
        let mut prob = scratch(be, &mut self.prob, n)?.slice_mut(0, n);
        let scale = scratch(be, &mut self.scale, positions)?;
        let mut picked = scratch(be, &mut self.picked, positions)?.slice_mut(0, positions);
        let (data, label) = (blobs.bottom(0), blobs.bottom(1));
        let labels = labels(label, self.ignore_label);
        let x = data.data_view().src();
        softmax_forward(be, axis, x, prob.reborrow(), scale.slice_mut(0, positions))?;
        // Ignored positions pick 1, whose log is 0: they add nothing to the sum.
        be.gather_at_label(axis, prob.as_slice(), labels, 1.0, picked.reborrow())?;
        // Clamp at FLT_MIN before the log, as upstream.
        be.fill(f32::MIN_POSITIVE, scale.slice_mut(0, positions))?;
        let floor = scale.slice(0, positions).src();
        be.binary(Binary::Max, Src::InPlace, floor, picked.reborrow())?;
        be.unary(Unary::Log, Src::InPlace, picked.reborrow())?;
        // The normalizer: for VALID with an ignore label, the count of the other positions.
        let factor = scratch(be, &mut self.factor, 1)?;
        let normalizer = scratch(be, &mut self.normalizer, 1)?;
        let valid_mask = match self.ignore_label {
            Some(_) => {
                let valid = Unary::LabelMask {
                    ignore_label: labels.ignore_label,
                };
                be.unary(valid, labels.values.src(), scale.slice_mut(0, positions))?;
                Some(&*scale)
            }
            None => None,
        };
        let loss = blobs.top_mut(0).data_mut();
        be.sum_into(-1.0, picked.as_slice(), loss.slice_mut(0, 1))?;
        normalize_loss(
            be,
            self.normalization,
            (v.outer, v.inner),
            valid_mask,
            (factor, normalizer),
            loss,
        )?;
        if blobs.num_top() > 1 {
            be.copy(prob.as_slice(), blobs.top_mut(1).data_view_mut())?;
        }
        Ok(())
    }

    fn backward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        if propagate_down[1] {
            return Err(label_backprop_error("SoftmaxWithLoss"));
        }
        if !propagate_down[0] {
            return Ok(());
        }
        let be = ctx.backend;
        let v = self.view;
        let weight = scratch(be, &mut self.factor, 1)?;
        let normalizer = scratch(be, &mut self.normalizer, 1)?;
        weight_over_normalizer(be, blobs.top(0), normalizer, weight)?;
        let prob = scratch(be, &mut self.prob, v.count())?.slice(0, v.count());
        let (_, mut bottoms) = blobs.backward_all()?;
        let (data, label) = bottoms.split_at_mut(1);
        let mut dx = data[0].diff_view_mut();
        // dx = p - onehot(label), zero at ignored positions, times weight / normalizer.
        be.copy(prob, dx.reborrow())?;
        let labels = labels(label[0], self.ignore_label);
        be.affine_at_label(v.axis(), labels, (1.0, -1.0), dx.reborrow())?;
        be.scale(Scalar::At(weight, 0), Src::InPlace, dx)?;
        Ok(())
    }
}
