//! EuclideanLoss: `sum (a - b)^2 / (2 num)` (upstream: src/caffe/layers/euclidean_loss_layer.cpp).
//!
//! Two bottoms of the same first dimension and count; either or both get a gradient
//! (`±(a - b) loss_weight / num`), and force_backward reaches both.

use crate::backend::{Backend, Binary, Scalar, Src, Views};
use crate::layers::loss::{check_first_dims, scratch};
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The EuclideanLoss layer.
pub struct EuclideanLossLayer<B: Backend> {
    /// `a - b` from the forward pass.
    diff: Option<B::Buffer>,
    /// `(a - b)^2`.
    squares: Option<B::Buffer>,
    /// Divisors on the device (the layer never reads back to the host, so that a CUDA graph
    /// can record it): `num`, then 2, in the forward pass; `num` twice in the backward.
    divisor: Option<B::Buffer>,
    /// The gradients' scales, `±loss_weight / num`.
    factors: Option<B::Buffer>,
    count: usize,
}

impl<B: Backend> EuclideanLossLayer<B> {
    /// EuclideanLoss has no parameters of its own.
    pub fn new(_param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(EuclideanLossLayer {
            diff: None,
            squares: None,
            divisor: None,
            factors: None,
            count: 0,
        })
    }
}

impl<B: Backend> Layer<B> for EuclideanLossLayer<B> {
    fn layer_type(&self) -> &'static str {
        "EuclideanLoss"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(2, 1).with_auto_top_blobs()
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (a, b) = (blobs.bottom(0), blobs.bottom(1));
        check_first_dims(a, b)?;
        if a.count_from(1)? != b.count_from(1)? {
            return Err(LayerError::invalid(format!(
                "Inputs must have the same dimension: bottom 0 {} vs. bottom 1 {}",
                a.shape_string(),
                b.shape_string()
            )));
        }
        self.count = a.count();
        blobs.top_mut(0).reshape(&[])?;
        let be = ctx.backend;
        scratch(be, &mut self.diff, self.count)?;
        scratch(be, &mut self.squares, self.count)?;
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
        let n = self.count;
        let mut diff = scratch(be, &mut self.diff, n)?.slice_mut(0, n);
        let num = blobs.bottom(0).num()? as f32;
        let (a, b) = (blobs.bottom(0).data_view(), blobs.bottom(1).data_view());
        be.binary(Binary::Sub, a.src(), b.src(), diff.reborrow())?;
        // dot(diff, diff) / num / 2, in upstream's order, on the device.
        let diff = diff.as_slice().src();
        let mut squares = scratch(be, &mut self.squares, n)?.slice_mut(0, n);
        be.binary(Binary::Mul, diff, diff, squares.reborrow())?;
        let mut loss = blobs.top_mut(0).data_view_mut();
        be.sum_into(1.0, squares.as_slice(), loss.reborrow())?;
        let mut divisor = scratch(be, &mut self.divisor, 1)?.slice_mut(0, 1);
        for by in [num, 2.0] {
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
        let be = ctx.backend;
        let n = self.count;
        // factors = (loss_weight, -loss_weight) / num, on the device.
        let num = blobs.bottom(0).num()? as f32;
        let (divisor, factors) = (
            scratch(be, &mut self.divisor, 2)?,
            scratch(be, &mut self.factors, 2)?,
        );
        be.fill(num, divisor.slice_mut(0, 2))?;
        let loss_weight = blobs.top(0).diff_view();
        be.copy(loss_weight, factors.slice_mut(0, 1))?;
        be.scale(
            Scalar::Value(-1.0),
            loss_weight.src(),
            factors.slice_mut(1, 1),
        )?;
        let divisor = divisor.slice(0, 2).src();
        be.binary(Binary::Div, Src::InPlace, divisor, factors.slice_mut(0, 2))?;
        let diff = scratch(be, &mut self.diff, n)?.slice(0, n);
        for (i, &down) in propagate_down.iter().enumerate().take(2) {
            if down {
                let alpha = Scalar::At(&*factors, i);
                let dx = blobs.bottom_mut(i).diff_view_mut();
                be.axpby(alpha, diff, 0.0, dx)?;
            }
        }
        Ok(())
    }
}
