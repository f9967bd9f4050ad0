//! EuclideanLoss: `sum (a - b)^2 / (2 num)` (upstream: src/caffe/layers/euclidean_loss_layer.cpp).
//!
//! Two bottoms of the same first dimension and count; either or both get a gradient
//! (`±(a - b) loss_weight / num`), and force_backward reaches both.

use crate::backend::{Backend, Scalar, Src};
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
        let diff = scratch(be, &mut self.diff, n)?;
        let (a, b) = (blobs.bottom(0), blobs.bottom(1));
        be.sub(n, Src::At(a.data(), 0), Src::At(b.data(), 0), diff, 0)?;
        let num = a.num()? as f32;
        // dot(diff, diff) / num / 2, in upstream's order, on the device.
        let squares = scratch(be, &mut self.squares, n)?;
        be.mul(n, Src::At(diff, 0), Src::At(diff, 0), squares, 0)?;
        let loss = blobs.top_mut(0).data_mut();
        be.sum_into(n, 1.0, squares, 0, loss, 0)?;
        let divisor = scratch(be, &mut self.divisor, 1)?;
        for by in [num, 2.0] {
            be.set(1, by, divisor, 0)?;
            be.div(1, Src::InPlace, Src::At(divisor, 0), loss, 0)?;
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
        be.set(2, num, divisor, 0)?;
        let loss_weight = blobs.top(0).diff();
        be.copy(1, loss_weight, 0, factors, 0)?;
        be.scale(1, -1.0, Src::At(loss_weight, 0), factors, 1)?;
        be.div(2, Src::InPlace, Src::At(divisor, 0), factors, 0)?;
        let diff = scratch(be, &mut self.diff, n)?;
        for (i, &down) in propagate_down.iter().enumerate().take(2) {
            if down {
                let alpha = Scalar::At(&*factors, i);
                be.axpby(n, alpha, diff, 0, 0.0, blobs.bottom_mut(i).diff_mut(), 0)?;
            }
        }
        Ok(())
    }
}
