//! HingeLoss: the one-vs-all hinge loss of `num` score vectors
//! (upstream: src/caffe/layers/hinge_loss_layer.cpp).
//!
//! Bottoms: scores `(num, dim)` (all axes after the first flattened) and `num` labels in
//! `0..dim`. With `t = max(0, 1 - δ x)`, `δ = +1` at the label and -1 elsewhere, the loss is
//! `sum t / num` (`hinge_loss_param { norm: L1 }`, the default) or `sum t^2 / num` (`L2`).
//! The labels get no gradient.

use crate::backend::{Activation, Axis, Backend, Reduction, Scalar, Src, Unary, Views};
use crate::layers::loss::{
    check_first_dims, label_backprop_error, loss_weight, scratch, write_scalar,
};
use crate::layers::{labels, BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::hinge_loss_parameter::Norm;
use crate::proto::caffe::LayerParameter;

/// `(alpha, beta)` of an affine map at the label that negates the value there.
const NEGATE: (f32, f32) = (-1.0, 0.0);

/// The HingeLoss layer.
pub struct HingeLossLayer<B: Backend> {
    norm: Norm,
    num: usize,
    dim: usize,
    /// `max(0, 1 - δ x)` from the forward pass (upstream keeps it in the bottom diff).
    margins: Option<B::Buffer>,
}

impl<B: Backend> HingeLossLayer<B> {
    /// Reads `hinge_loss_param.norm`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let raw = param
            .hinge_loss_param
            .and_then(|p| p.norm)
            .unwrap_or(Norm::L1 as i32);
        let norm = Norm::try_from(raw).map_err(|_| {
            LayerError::invalid(format!(
                "hinge_loss_param.norm has the unknown value {raw} (L1 = 1, L2 = 2)"
            ))
        })?;
        Ok(HingeLossLayer {
            norm,
            num: 0,
            dim: 0,
            margins: None,
        })
    }

    /// The scores as `num x dim` positions (the labels pick along `dim`).
    fn scores(&self) -> Axis {
        Axis::new(self.num, self.dim, 1)
    }
}

impl<B: Backend> Layer<B> for HingeLossLayer<B> {
    fn layer_type(&self) -> &'static str {
        "HingeLoss"
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
        self.num = data.num()?;
        self.dim = data.count().checked_div(self.num).unwrap_or(0);
        if label.count() < self.num {
            return Err(LayerError::invalid(format!(
                "HingeLoss needs one label per score vector: scores {}, labels {}",
                data.shape_string(),
                label.shape_string()
            )));
        }
        blobs.top_mut(0).reshape(&[])?;
        scratch(ctx.backend, &mut self.margins, self.num * self.dim)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let (scores, count) = (self.scores(), self.num * self.dim);
        let mut t = scratch(be, &mut self.margins, count)?.slice_mut(0, count);
        let (data, label) = (blobs.bottom(0), blobs.bottom(1));
        // t = max(0, 1 + x) with x negated at the label.
        be.copy(data.data_view(), t.reborrow())?;
        be.affine_at_label(scores, labels(label, None), NEGATE, t.reborrow())?;
        be.unary(Unary::AddScalar(1.0), Src::InPlace, t.reborrow())?;
        let relu = Activation::Relu { slope: 0.0 };
        be.activation_forward(relu, Src::InPlace, t.reborrow())?;
        let t = t.as_slice();
        let total = match self.norm {
            Norm::L1 => be.reduce(Reduction::Asum, t)?,
            Norm::L2 => be.reduce(Reduction::Dot(t), t)?,
        };
        write_scalar(be, blobs.top_mut(0), total / self.num as f32)
    }

    fn backward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        if propagate_down[1] {
            return Err(label_backprop_error("HingeLoss"));
        }
        if !propagate_down[0] {
            return Ok(());
        }
        let be = ctx.backend;
        let weight = loss_weight(be, blobs.top(0))?;
        let (scores, count) = (self.scores(), self.num * self.dim);
        let t = scratch(be, &mut self.margins, count)?.slice(0, count);
        let (_, mut bottoms) = blobs.backward_all()?;
        let (data, label) = bottoms.split_at_mut(1);
        let mut dx = data[0].diff_view_mut();
        // dt/dx is -δ; upstream negates t at the label again, then takes the sign (L1) or
        // doubles (L2).
        be.copy(t, dx.reborrow())?;
        be.affine_at_label(scores, labels(label[0], None), NEGATE, dx.reborrow())?;
        let num = self.num as f32;
        match self.norm {
            Norm::L1 => {
                be.unary(Unary::Sign, Src::InPlace, dx.reborrow())?;
                be.scale(Scalar::Value(weight / num), Src::InPlace, dx)?;
            }
            Norm::L2 => be.scale(Scalar::Value(weight * 2.0 / num), Src::InPlace, dx)?,
        }
        Ok(())
    }
}
