//! EuclideanLoss: `sum (a - b)^2 / (2 num)` (upstream: src/caffe/layers/euclidean_loss_layer.cpp).
//!
//! Two bottoms of the same first dimension and count; either or both get a gradient
//! (`±(a - b) loss_weight / num`), and force_backward reaches both.

use crate::backend::{Backend, Src};
use crate::layers::loss::{check_first_dims, loss_weight, scratch, write_scalar};
use crate::layers::{Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The EuclideanLoss layer.
pub struct EuclideanLossLayer<B: Backend> {
    /// `a - b` from the forward pass.
    diff: Option<B::Buffer>,
    count: usize,
}

impl<B: Backend> EuclideanLossLayer<B> {
    /// EuclideanLoss has no parameters of its own.
    pub fn new(_param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(EuclideanLossLayer {
            diff: None,
            count: 0,
        })
    }
}

impl<B: Backend> Layer<B> for EuclideanLossLayer<B> {
    fn layer_type(&self) -> &'static str {
        "EuclideanLoss"
    }
    fn exact_num_bottom(&self) -> Option<usize> {
        Some(2)
    }
    fn exact_num_top(&self) -> Option<usize> {
        Some(1)
    }
    fn auto_top_blobs(&self) -> bool {
        true
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
        scratch(ctx.backend, &mut self.diff, self.count)?;
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
        let dot = be.dot(n, diff, 0, diff, 0)?;
        let loss = dot / a.num()? as f32 / 2.0;
        write_scalar(be, blobs.top_mut(0), loss)
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
        let weight = loss_weight(be, blobs.top(0))?;
        let diff = scratch(be, &mut self.diff, n)?;
        for (i, sign) in [(0, 1.0f32), (1, -1.0)] {
            if propagate_down[i] {
                let bottom = blobs.bottom_mut(i);
                let alpha = sign * weight / bottom.num()? as f32;
                be.axpby(n, alpha, diff, 0, 0.0, bottom.diff_mut(), 0)?;
            }
        }
        Ok(())
    }
}
