//! MultinomialLogisticLoss: the negative log-likelihood of given class probabilities
//! (upstream: src/caffe/layers/multinomial_logistic_loss_layer.cpp).
//!
//! Bottoms: probabilities `(num, dim)` (all axes after the first flattened; typically a
//! Softmax's output) and `num` labels in `0..dim` (channels, height and width 1). The loss is
//! `-sum_n log(max(p[n, label_n], 1e-20)) / num`; the probabilities get
//! `-loss_weight / (num max(p, 1e-20))` at each label and 0 elsewhere. The labels get no
//! gradient.

use crate::backend::{Axis, Backend, Binary, Broadcast, Scalar, Src, Unary, Views};
use crate::layers::loss::{
    check_first_dims, label_backprop_error, scratch, weight_over_normalizer,
};
use crate::layers::{labels, BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// Upstream's `kLOG_THRESHOLD` (loss_layer.hpp): the floor of a probability before its log.
pub const LOG_THRESHOLD: f32 = 1e-20;

/// `(alpha, beta)` of an affine map at the label that turns a zeroed row into a one-hot one.
const ONE_AT_LABEL: (f32, f32) = (0.0, 1.0);

/// The MultinomialLogisticLoss layer.
pub struct MultinomialLogisticLossLayer<B: Backend> {
    num: usize,
    dim: usize,
    /// `max(p[n, label_n], 1e-20)` from the forward pass (the backward divides by it).
    clamped: Option<B::Buffer>,
    /// Per-sample scratch: the floor and the logs forward, the gradients at the labels
    /// backward.
    per_sample: Option<B::Buffer>,
    /// One element: `num`, kept on the device so that a CUDA graph can record the layer.
    divisor: Option<B::Buffer>,
    /// One element: `-loss_weight / num`.
    factor: Option<B::Buffer>,
}

impl<B: Backend> MultinomialLogisticLossLayer<B> {
    /// MultinomialLogisticLoss has no parameters of its own.
    pub fn new(_param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(MultinomialLogisticLossLayer {
            num: 0,
            dim: 0,
            clamped: None,
            per_sample: None,
            divisor: None,
            factor: None,
        })
    }

    /// The probabilities as `num x dim` positions (the labels pick along `dim`).
    fn probabilities(&self) -> Axis {
        Axis::new(self.num, self.dim, 1)
    }
}

impl<B: Backend> Layer<B> for MultinomialLogisticLossLayer<B> {
    fn layer_type(&self) -> &'static str {
        "MultinomialLogisticLoss"
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
        let (data, label) = (blobs.bottom(0), blobs.bottom(1));
        check_first_dims(data, label)?;
        if (label.channels()?, label.height()?, label.width()?) != (1, 1, 1) {
            return Err(LayerError::invalid(format!(
                "MultinomialLogisticLoss takes one label per sample (channels, height and width \
                 1): labels {}",
                label.shape_string()
            )));
        }
        self.num = data.num()?;
        self.dim = data.count().checked_div(self.num).unwrap_or(0);
        blobs.top_mut(0).reshape(&[])?;
        let be = ctx.backend;
        scratch(be, &mut self.clamped, self.num)?;
        scratch(be, &mut self.per_sample, self.num)?;
        scratch(be, &mut self.divisor, 1)?;
        scratch(be, &mut self.factor, 1)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let num = self.num;
        let probs = self.probabilities();
        let mut clamped = scratch(be, &mut self.clamped, num)?.slice_mut(0, num);
        let mut logs = scratch(be, &mut self.per_sample, num)?.slice_mut(0, num);
        let (data, label) = (blobs.bottom(0), blobs.bottom(1));
        be.gather_at_label(
            probs,
            data.data_view(),
            labels(label, None),
            1.0,
            clamped.reborrow(),
        )?;
        be.fill(LOG_THRESHOLD, logs.reborrow())?;
        be.binary(
            Binary::Max,
            Src::InPlace,
            logs.as_slice().src(),
            clamped.reborrow(),
        )?;
        be.unary(Unary::Log, clamped.as_slice().src(), logs.reborrow())?;
        let mut divisor = scratch(be, &mut self.divisor, 1)?.slice_mut(0, 1);
        be.fill(num as f32, divisor.reborrow())?;
        let mut loss = blobs.top_mut(0).data_view_mut();
        be.sum_into(-1.0, logs.as_slice(), loss.reborrow())?;
        be.binary(Binary::Div, Src::InPlace, divisor.as_slice().src(), loss)?;
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
            return Err(label_backprop_error("MultinomialLogisticLoss"));
        }
        if !propagate_down[0] {
            return Ok(());
        }
        let be = ctx.backend;
        let (num, probs) = (self.num, self.probabilities());
        // factor = -loss_weight / num, on the device.
        let divisor = scratch(be, &mut self.divisor, 1)?;
        be.fill(num as f32, divisor.slice_mut(0, 1))?;
        let factor = scratch(be, &mut self.factor, 1)?;
        weight_over_normalizer(be, blobs.top(0), divisor, factor)?;
        be.scale(Scalar::Value(-1.0), Src::InPlace, factor.slice_mut(0, 1))?;
        // at_label[n] = factor / clamped[n], divided in upstream's order.
        let mut at_label = scratch(be, &mut self.per_sample, num)?.slice_mut(0, num);
        be.fill(1.0, at_label.reborrow())?;
        be.scale(Scalar::At(factor, 0), Src::InPlace, at_label.reborrow())?;
        let clamped = scratch(be, &mut self.clamped, num)?.slice(0, num);
        be.binary(
            Binary::Div,
            Src::InPlace,
            clamped.src(),
            at_label.reborrow(),
        )?;
        // dx = one-hot(label) times at_label.
        let (_, mut bottoms) = blobs.backward_all()?;
        let (data, label) = bottoms.split_at_mut(1);
        let mut dx = data[0].diff_view_mut();
        be.fill(0.0, dx.reborrow())?;
        be.affine_at_label(probs, labels(label[0], None), ONE_AT_LABEL, dx.reborrow())?;
        let at_label = at_label.as_slice();
        be.broadcast(
            Binary::Mul,
            Broadcast::OverAxis,
            probs,
            at_label,
            Src::InPlace,
            dx,
        )?;
        Ok(())
    }
}
