//! SigmoidCrossEntropyLoss: the cross-entropy of `sigmoid(x)` against targets in `[0, 1]`
//! (upstream: src/caffe/layers/sigmoid_cross_entropy_loss_layer.cpp).
//!
//! Bottoms: scores `x` and targets `t` of the same count (first dimension `num`). The loss is
//! `sum ln(1 + exp(x - 2 x [x >= 0])) - x (t - [x >= 0])`, upstream's overflow-free form,
//! over the positions whose target is not `loss_param.ignore_label`, divided per
//! `loss_param.normalization` (default BATCH_SIZE here, unlike SoftmaxWithLoss) or the legacy
//! `normalize`. The gradient is `(sigmoid(x) - t) loss_weight / normalizer`, 0 where ignored;
//! the targets get none.

use crate::backend::{Activation, Backend, Binary, Scalar, Src, Unary, Views};
use crate::layers::loss::{
    check_first_dims, ignore_label, label_backprop_error, normalize_loss, normalizer_slot, scratch,
    weight_over_normalizer, Normalization,
};
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The SigmoidCrossEntropyLoss layer.
pub struct SigmoidCrossEntropyLossLayer<B: Backend> {
    ignore_label: Option<i32>,
    normalization: Normalization,
    outer: usize,
    inner: usize,
    /// The normalizer of the last forward pass, one element on the device.
    normalizer: Option<B::Buffer>,
    /// One element: scratch in the forward pass, loss weight / normalizer in the backward.
    factor: Option<B::Buffer>,
    /// `sigmoid(x)` from the forward pass.
    sigmoid: Option<B::Buffer>,
    /// Per-element loss terms.
    terms: Option<B::Buffer>,
    /// 1 where the target is not ignored (only with `ignore_label`).
    mask: Option<B::Buffer>,
}

impl<B: Backend> SigmoidCrossEntropyLossLayer<B> {
    /// Reads `loss_param` (`ignore_label`, `normalization`, `normalize`).
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(SigmoidCrossEntropyLossLayer {
            ignore_label: ignore_label(param),
            normalization: Normalization::from_param(param, Normalization::BatchSize)?,
            outer: 0,
            inner: 0,
            normalizer: None,
            factor: None,
            sigmoid: None,
            terms: None,
            mask: None,
        })
    }
}

impl<B: Backend> Layer<B> for SigmoidCrossEntropyLossLayer<B> {
    fn layer_type(&self) -> &'static str {
        "SigmoidCrossEntropyLoss"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(2, 1).with_auto_top_blobs()
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
        let (x, t) = (blobs.bottom(0), blobs.bottom(1));
        check_first_dims(x, t)?;
        if x.count() != t.count() {
            return Err(LayerError::invalid(format!(
                "SIGMOID_CROSS_ENTROPY_LOSS layer inputs must have the same count: scores {}, \
                 targets {}",
                x.shape_string(),
                t.shape_string()
            )));
        }
        self.outer = x.shape_at(0)?;
        self.inner = x.count_from(1)?;
        let n = x.count();
        blobs.top_mut(0).reshape(&[])?;
        let be = ctx.backend;
        scratch(be, &mut self.sigmoid, n)?;
        scratch(be, &mut self.terms, n)?;
        if self.ignore_label.is_some() {
            scratch(be, &mut self.mask, n)?;
        }
        scratch(be, &mut self.factor, 1)?;
        normalizer_slot(be, &mut self.normalizer)
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let n = self.outer * self.inner;
        let sigmoid = scratch(be, &mut self.sigmoid, n)?.slice_mut(0, n);
        let mut terms = scratch(be, &mut self.terms, n)?.slice_mut(0, n);
        let (x, t) = (blobs.bottom(0).data_view(), blobs.bottom(1).data_view());
        let (x, t) = (x.src(), t.src());
        be.activation_forward(Activation::Sigmoid, x, sigmoid)?;
        be.binary(Binary::SigmoidCrossEntropy, x, t, terms.reborrow())?;
        let valid_mask = match self.ignore_label {
            None => None,
            Some(_) => {
                let mask = scratch(be, &mut self.mask, n)?;
                let label_mask = Unary::LabelMask {
                    ignore_label: self.ignore_label,
                };
                be.unary(label_mask, t, mask.slice_mut(0, n))?;
                be.binary(
                    Binary::Mul,
                    Src::InPlace,
                    mask.slice(0, n).src(),
                    terms.reborrow(),
                )?;
                Some(&*mask)
            }
        };
        let factor = scratch(be, &mut self.factor, 1)?;
        let normalizer = scratch(be, &mut self.normalizer, 1)?;
        let loss = blobs.top_mut(0).data_mut();
        be.sum_into(1.0, terms.as_slice(), loss.slice_mut(0, 1))?;
        normalize_loss(
            be,
            self.normalization,
            (self.outer, self.inner),
            valid_mask,
            (factor, normalizer),
            loss,
        )?;
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
            return Err(label_backprop_error("SigmoidCrossEntropyLoss"));
        }
        if !propagate_down[0] {
            return Ok(());
        }
        let be = ctx.backend;
        let n = self.outer * self.inner;
        let weight = scratch(be, &mut self.factor, 1)?;
        let normalizer = scratch(be, &mut self.normalizer, 1)?;
        weight_over_normalizer(be, blobs.top(0), normalizer, weight)?;
        let sigmoid = scratch(be, &mut self.sigmoid, n)?.slice(0, n);
        let (_, mut bottoms) = blobs.backward_all()?;
        let (x, t) = bottoms.split_at_mut(1);
        let mut dx = x[0].diff_view_mut();
        let t = t[0].data_view();
        be.binary(Binary::Sub, sigmoid.src(), t.src(), dx.reborrow())?;
        if self.ignore_label.is_some() {
            let mask = scratch(be, &mut self.mask, n)?.slice(0, n);
            be.binary(Binary::Mul, Src::InPlace, mask.src(), dx.reborrow())?;
        }
        be.scale(Scalar::At(weight, 0), Src::InPlace, dx)?;
        Ok(())
    }
}
