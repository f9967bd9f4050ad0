//! ContrastiveLoss: Hadsell, Chopra and LeCun's loss on pairs of feature vectors
//! (upstream: src/caffe/layers/contrastive_loss_layer.cpp and .cu).
//!
//! Bottoms: features `a` and `b`, both `(num, C)` (height and width 1), and `num` pair labels
//! `y` (channels, height and width 1). With `d^2 = |a_n - b_n|^2`, a pair with
//! `trunc(y_n) != 0` (similar) adds `d^2`, any other (dissimilar) adds
//! `max(margin - d, 0)^2`, or `max(margin - d^2, 0)` with
//! `contrastive_loss_param { legacy_version: true }`; the loss is the sum over `2 num`.
//! Both `a` and `b` get gradients (of opposite signs); `y` gets none.

use crate::backend::{
    Activation, Axis, AxisReduction, Backend, Binary, Broadcast, Scalar, SliceMut, Src, Unary,
    Views,
};
use crate::blob::Blob;
use crate::layers::loss::{check_first_dims, scratch};
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// Upstream's guard against dividing by a zero distance in the dissimilar pairs' gradient.
const DISTANCE_EPSILON: f32 = 1e-4;

/// The ContrastiveLoss layer.
pub struct ContrastiveLossLayer<B: Backend> {
    margin: f32,
    legacy_version: bool,
    num: usize,
    channels: usize,
    /// `a - b` from the forward pass.
    diff: Option<B::Buffer>,
    /// Feature-sized scratch: `(a - b)^2` forward, the unscaled gradient backward.
    work: Option<B::Buffer>,
    /// `d^2` per pair from the forward pass.
    dist_sq: Option<B::Buffer>,
    /// 1 for a similar pair, 0 for a dissimilar one, from the forward pass.
    similar: Option<B::Buffer>,
    /// Per-pair scratch: the pair's loss forward, its gradient coefficient backward.
    per_pair: Option<B::Buffer>,
    /// Per-pair scratch: 1 for a dissimilar pair, 0 for a similar one.
    dissimilar: Option<B::Buffer>,
    /// Divisors on the device (the layer never reads back to the host, so that a CUDA graph
    /// can record it): `num`, then 2, forward; `num` twice backward.
    divisor: Option<B::Buffer>,
    /// The gradients' scales, `±loss_weight / num`.
    factors: Option<B::Buffer>,
}

impl<B: Backend> ContrastiveLossLayer<B> {
    /// Reads `contrastive_loss_param` (`margin`, `legacy_version`).
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.contrastive_loss_param.unwrap_or_default();
        Ok(ContrastiveLossLayer {
            margin: p.margin(),
            legacy_version: p.legacy_version(),
            num: 0,
            channels: 0,
            diff: None,
            work: None,
            dist_sq: None,
            similar: None,
            per_pair: None,
            dissimilar: None,
            divisor: None,
            factors: None,
        })
    }

    /// The features as `num x channels` positions.
    fn features(&self) -> Axis {
        Axis::new(self.num, self.channels, 1)
    }

    /// Checks upstream's shapes: `a` and `b` `(num, C, 1, 1)`, `y` `(num, 1, 1, 1)`.
    fn check_shapes(blobs: &Blobs<'_, B>) -> Result<(), LayerError> {
        let (a, b, y) = (blobs.bottom(0), blobs.bottom(1), blobs.bottom(2));
        check_first_dims(a, b)?;
        let flat = |blob: &Blob<B>| -> Result<bool, LayerError> {
            Ok(blob.height()? == 1 && blob.width()? == 1)
        };
        if a.channels()? != b.channels()? || !flat(a)? || !flat(b)? {
            return Err(LayerError::invalid(format!(
                "ContrastiveLoss takes two feature blobs of the same shape (num, channels, 1, 1): \
                 bottom 0 {} vs. bottom 1 {}",
                a.shape_string(),
                b.shape_string()
            )));
        }
        if y.channels()? != 1 || !flat(y)? || y.num()? != a.num()? {
            return Err(LayerError::invalid(format!(
                "ContrastiveLoss takes one similarity label per pair (num, 1, 1, 1): labels {} \
                 for features {}",
                y.shape_string(),
                a.shape_string()
            )));
        }
        Ok(())
    }

    /// `per_pair[n] = max(margin - d, 0)^2` (or `max(margin - d^2, 0)`, legacy).
    fn dissimilar_terms(&mut self, be: &B) -> Result<(), LayerError> {
        let num = self.num;
        let dist_sq = scratch(be, &mut self.dist_sq, num)?.slice(0, num);
        let mut term = scratch(be, &mut self.per_pair, num)?.slice_mut(0, num);
        if self.legacy_version {
            be.copy(dist_sq, term.reborrow())?;
        } else {
            be.unary(Unary::Sqrt, dist_sq.src(), term.reborrow())?;
        }
        margin_minus(be, self.margin, term.reborrow())?;
        if !self.legacy_version {
            be.unary(Unary::Sqr, Src::InPlace, term)?;
        }
        Ok(())
    }

    /// `per_pair[n]`: the factor of `a_n - b_n` in the gradient of pair `n`'s term (before
    /// `loss_weight / num`): 1 for a similar pair; for a dissimilar one within the margin,
    /// `-1` (legacy) or `-(margin - d) / (d + 1e-4)`; 0 beyond it.
    fn gradient_coefficients(&mut self, be: &B) -> Result<(), LayerError> {
        let num = self.num;
        let dist_sq = scratch(be, &mut self.dist_sq, num)?.slice(0, num);
        let mut coef = scratch(be, &mut self.per_pair, num)?.slice_mut(0, num);
        let mut other = scratch(be, &mut self.dissimilar, num)?.slice_mut(0, num);
        if self.legacy_version {
            // [margin - d^2 > 0], the sign of max(margin - d^2, 0)
            be.copy(dist_sq, coef.reborrow())?;
            margin_minus(be, self.margin, coef.reborrow())?;
            be.unary(Unary::Sign, Src::InPlace, coef.reborrow())?;
        } else {
            // max(margin - d, 0) / (d + 1e-4)
            be.unary(Unary::Sqrt, dist_sq.src(), coef.reborrow())?;
            be.unary(
                Unary::AddScalar(DISTANCE_EPSILON),
                coef.as_slice().src(),
                other.reborrow(),
            )?;
            margin_minus(be, self.margin, coef.reborrow())?;
            be.binary(
                Binary::Div,
                Src::InPlace,
                other.as_slice().src(),
                coef.reborrow(),
            )?;
        }
        // coef = -coef (1 - s) + s, with s the 0/1 similarity: exact for both kinds of pair.
        let similar = scratch(be, &mut self.similar, num)?.slice(0, num);
        be.scale(Scalar::Value(-1.0), similar.src(), other.reborrow())?;
        be.unary(Unary::AddScalar(1.0), Src::InPlace, other.reborrow())?;
        be.scale(Scalar::Value(-1.0), Src::InPlace, coef.reborrow())?;
        be.binary(
            Binary::Mul,
            Src::InPlace,
            other.as_slice().src(),
            coef.reborrow(),
        )?;
        be.binary(Binary::Add, Src::InPlace, similar.src(), coef)?;
        Ok(())
    }
}

impl<B: Backend> Layer<B> for ContrastiveLossLayer<B> {
    fn layer_type(&self) -> &'static str {
        "ContrastiveLoss"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(3, 1).with_auto_top_blobs()
    }
    fn allow_force_backward(&self, bottom_index: usize) -> bool {
        bottom_index != 2
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        Self::check_shapes(blobs)?;
        let a = blobs.bottom(0);
        (self.num, self.channels) = (a.num()?, a.channels()?);
        let (be, count, num) = (ctx.backend, a.count(), self.num);
        blobs.top_mut(0).reshape(&[])?;
        scratch(be, &mut self.diff, count)?;
        scratch(be, &mut self.work, count)?;
        for slot in [
            &mut self.dist_sq,
            &mut self.similar,
            &mut self.per_pair,
            &mut self.dissimilar,
        ] {
            scratch(be, slot, num)?;
        }
        scratch(be, &mut self.divisor, 2)?;
        scratch(be, &mut self.factors, 2)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let (features, num) = (self.features(), self.num);
        let count = num * self.channels;
        let (a, b, y) = (blobs.bottom(0), blobs.bottom(1), blobs.bottom(2));
        let mut diff = scratch(be, &mut self.diff, count)?.slice_mut(0, count);
        be.binary(
            Binary::Sub,
            a.data_view().src(),
            b.data_view().src(),
            diff.reborrow(),
        )?;
        let mut squares = scratch(be, &mut self.work, count)?.slice_mut(0, count);
        let diff = diff.as_slice().src();
        be.binary(Binary::Mul, diff, diff, squares.reborrow())?;
        let dist_sq = scratch(be, &mut self.dist_sq, num)?;
        let sum = AxisReduction::Sum;
        be.reduce_over_axis(sum, features, squares.as_slice(), dist_sq.slice_mut(0, num))?;
        // upstream's static_cast<int>(y) != 0
        let similar_pair = Unary::LabelMask {
            ignore_label: Some(0),
        };
        let similar = scratch(be, &mut self.similar, num)?;
        be.unary(similar_pair, y.data_view().src(), similar.slice_mut(0, num))?;
        // per_pair = term (1 - s) + d^2 s
        self.dissimilar_terms(be)?;
        let similar = scratch(be, &mut self.similar, num)?.slice(0, num);
        let dist_sq = scratch(be, &mut self.dist_sq, num)?.slice(0, num);
        let mut other = scratch(be, &mut self.dissimilar, num)?.slice_mut(0, num);
        let mut pair = scratch(be, &mut self.per_pair, num)?.slice_mut(0, num);
        be.scale(Scalar::Value(-1.0), similar.src(), other.reborrow())?;
        be.unary(Unary::AddScalar(1.0), Src::InPlace, other.reborrow())?;
        be.binary(
            Binary::Mul,
            Src::InPlace,
            other.as_slice().src(),
            pair.reborrow(),
        )?;
        be.binary(Binary::Mul, dist_sq.src(), similar.src(), other.reborrow())?;
        be.binary(
            Binary::Add,
            Src::InPlace,
            other.as_slice().src(),
            pair.reborrow(),
        )?;
        // loss = sum / num / 2, in upstream's order, on the device.
        let mut loss = blobs.top_mut(0).data_view_mut();
        be.sum_into(1.0, pair.as_slice(), loss.reborrow())?;
        let mut divisor = scratch(be, &mut self.divisor, 1)?.slice_mut(0, 1);
        for by in [num as f32, 2.0] {
            be.fill(by, divisor.reborrow())?;
            let divisor = divisor.as_slice().src();
            be.binary(Binary::Div, Src::InPlace, divisor, loss.reborrow())?;
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
        if !propagate_down[0] && !propagate_down[1] {
            return Ok(());
        }
        let be = ctx.backend;
        let (features, num) = (self.features(), self.num);
        let count = num * self.channels;
        // factors = (loss_weight, -loss_weight) / num, on the device.
        let (divisor, factors) = (
            scratch(be, &mut self.divisor, 2)?,
            scratch(be, &mut self.factors, 2)?,
        );
        be.fill(num as f32, divisor.slice_mut(0, 2))?;
        let loss_weight = blobs.top(0).diff_view();
        be.copy(loss_weight, factors.slice_mut(0, 1))?;
        be.scale(
            Scalar::Value(-1.0),
            loss_weight.src(),
            factors.slice_mut(1, 1),
        )?;
        let divisor = divisor.slice(0, 2).src();
        be.binary(Binary::Div, Src::InPlace, divisor, factors.slice_mut(0, 2))?;
        // work = coef[n] (a_n - b_n), shared by both bottoms.
        self.gradient_coefficients(be)?;
        let coef = scratch(be, &mut self.per_pair, num)?.slice(0, num);
        let diff = scratch(be, &mut self.diff, count)?.slice(0, count);
        let work = scratch(be, &mut self.work, count)?;
        let over_pairs = Broadcast::OverAxis;
        be.broadcast(
            Binary::Mul,
            over_pairs,
            features,
            coef,
            diff.src(),
            work.slice_mut(0, count),
        )?;
        let factors = scratch(be, &mut self.factors, 2)?;
        for (i, &down) in propagate_down.iter().enumerate().take(2) {
            if down {
                let alpha = Scalar::At(&*factors, i);
                let dx = blobs.bottom_mut(i).diff_view_mut();
                be.axpby(alpha, work.slice(0, count), 0.0, dx)?;
            }
        }
        Ok(())
    }
}

/// `x = max(margin - x, 0)`, in place.
fn margin_minus<B: Backend>(
    be: &B,
    margin: f32,
    mut x: SliceMut<'_, B::Buffer>,
) -> Result<(), LayerError> {
    be.scale(Scalar::Value(-1.0), Src::InPlace, x.reborrow())?;
    be.unary(Unary::AddScalar(margin), Src::InPlace, x.reborrow())?;
    let relu = Activation::Relu { slope: 0.0 };
    be.activation_forward(relu, Src::InPlace, x)?;
    Ok(())
}
