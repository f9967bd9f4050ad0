//! MVN: mean-variance normalisation of each image's channels, or of each whole image
//! (upstream: src/caffe/layers/mvn_layer.cpp).
//!
//! `mvn_param { normalize_variance: true across_channels: false eps: 1e-9 }`. The bottom is
//! read with upstream's legacy 4-axis view `(num, channels, height, width)`, missing axes 1.
//! Each row, one `(n, c)` plane (or one image `n` with `across_channels`), becomes
//! `y = x - mean(x)`, then with `normalize_variance` `y / (sqrt(mean(y^2)) + eps)`: as upstream,
//! eps is added to the standard deviation, not to the variance.
//!
//! Backward is upstream's: with `normalize_variance`,
//! `dx = (dy - mean(dy) - y mean(y dy)) / (sqrt(var) + eps)`, which treats `sqrt(var) + eps` as
//! `sqrt(var)` in the derivative (exact as eps goes to 0); without it, `dx = dy - mean(dy)`.

use crate::backend::{Axis, AxisReduction, Backend, Binary, Broadcast, Scalar, Src, Unary, Views};
use crate::layers::loss::scratch;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The MVN layer.
pub struct MvnLayer<B: Backend> {
    normalize_variance: bool,
    across_channels: bool,
    eps: f32,
    /// The bottom as `rows x dim x 1`: one row per normalised group.
    axis: Axis,
    /// Per row: the mean, then scratch for backward's sums.
    mean: Option<B::Buffer>,
    /// Per row: `sqrt(variance) + eps` (kept for backward).
    std_dev: Option<B::Buffer>,
    /// Full size: `(x - mean)^2`.
    squares: Option<B::Buffer>,
}

impl<B: Backend> MvnLayer<B> {
    /// Reads `mvn_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.mvn_param.unwrap_or_default();
        let eps = p.eps();
        if !eps.is_finite() || eps < 0.0 {
            return Err(LayerError::invalid(format!(
                "mvn_param.eps must be a finite non-negative number, got {eps}"
            )));
        }
        Ok(MvnLayer {
            normalize_variance: p.normalize_variance(),
            across_channels: p.across_channels(),
            eps,
            axis: Axis::new(0, 0, 1),
            mean: None,
            std_dev: None,
            squares: None,
        })
    }

    fn rows(&self) -> usize {
        self.axis.outer
    }

    fn count(&self) -> usize {
        self.axis.outer * self.axis.dim
    }

    /// `1 / dim` as upstream's `1. / dim`, rounded from f64.
    fn inv_dim(&self) -> f32 {
        (1.0 / self.axis.dim as f64) as f32
    }
}

impl<B: Backend> Layer<B> for MvnLayer<B> {
    fn layer_type(&self) -> &'static str {
        "MVN"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let bottom = blobs.bottom(0);
        let shape = bottom.shape().to_vec();
        if shape.len() > 4 {
            return Err(LayerError::invalid(format!(
                "MVN reads its bottom as (num, channels, height, width): bottom shape {} has \
                 more than 4 axes",
                bottom.shape_string()
            )));
        }
        let legacy = |i: usize| shape.get(i).copied().unwrap_or(1);
        let rows = if self.across_channels {
            legacy(0)
        } else {
            legacy(0) * legacy(1)
        };
        let count = bottom.count();
        let dim = count.checked_div(rows).unwrap_or(0);
        self.axis = Axis::new(rows, dim, 1);
        blobs.top_mut(0).reshape(&shape)?;
        let be = ctx.backend;
        scratch(be, &mut self.mean, rows)?;
        scratch(be, &mut self.std_dev, rows)?;
        scratch(be, &mut self.squares, count)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let (axis, rows, count, inv_dim) = (self.axis, self.rows(), self.count(), self.inv_dim());
        let mut mean = scratch(be, &mut self.mean, rows)?.slice_mut(0, rows);
        let mut std_dev = scratch(be, &mut self.std_dev, rows)?.slice_mut(0, rows);
        let mut squares = scratch(be, &mut self.squares, count)?.slice_mut(0, count);
        let (bottoms, mut tops) = blobs.forward_all()?;
        let x = bottoms[0].data_view();
        let mut y = tops[0].data_view_mut();

        // y = x - E(x), row by row.
        be.reduce_over_axis(AxisReduction::Sum, axis, x, mean.reborrow())?;
        be.scale(Scalar::Value(-inv_dim), Src::InPlace, mean.reborrow())?;
        let neg_mean = mean.as_slice();
        be.broadcast(
            Binary::Add,
            Broadcast::OverAxis,
            axis,
            neg_mean,
            x.src(),
            y.reborrow(),
        )?;
        if !self.normalize_variance {
            return Ok(());
        }
        // y /= sqrt(E(y^2)) + eps.
        be.unary(Unary::Sqr, y.as_slice().src(), squares.reborrow())?;
        be.reduce_over_axis(
            AxisReduction::Sum,
            axis,
            squares.as_slice(),
            std_dev.reborrow(),
        )?;
        be.scale(Scalar::Value(inv_dim), Src::InPlace, std_dev.reborrow())?;
        be.unary(Unary::Sqrt, Src::InPlace, std_dev.reborrow())?;
        be.unary(Unary::AddScalar(self.eps), Src::InPlace, std_dev.reborrow())?;
        let std_dev = std_dev.as_slice();
        be.broadcast(
            Binary::Div,
            Broadcast::OverAxis,
            axis,
            std_dev,
            Src::InPlace,
            y,
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
        if !propagate_down[0] {
            return Ok(());
        }
        let be = ctx.backend;
        let (axis, rows, inv_dim) = (self.axis, self.rows(), self.inv_dim());
        let mut sums = scratch(be, &mut self.mean, rows)?.slice_mut(0, rows);
        let std_dev = scratch(be, &mut self.std_dev, rows)?.slice(0, rows);
        let (tops, mut bottoms) = blobs.backward_all()?;
        let (y, dy) = (tops[0].data_view(), tops[0].diff_view());
        let mut dx = bottoms[0].diff_view_mut();

        if !self.normalize_variance {
            // dx = dy - E(dy).
            be.reduce_over_axis(AxisReduction::Sum, axis, dy, sums.reborrow())?;
            be.scale(Scalar::Value(-inv_dim), Src::InPlace, sums.reborrow())?;
            let neg_mean = sums.as_slice();
            be.broadcast(
                Binary::Add,
                Broadcast::OverAxis,
                axis,
                neg_mean,
                dy.src(),
                dx,
            )?;
            return Ok(());
        }
        // dx = y sum(y dy) + sum(dy), per row.
        be.reduce_over_axis(AxisReduction::Dot(y), axis, dy, sums.reborrow())?;
        let dot = sums.as_slice();
        be.broadcast(
            Binary::Mul,
            Broadcast::OverAxis,
            axis,
            dot,
            y.src(),
            dx.reborrow(),
        )?;
        be.reduce_over_axis(AxisReduction::Sum, axis, dy, sums.reborrow())?;
        let sum = sums.as_slice();
        be.broadcast(
            Binary::Add,
            Broadcast::OverAxis,
            axis,
            sum,
            Src::InPlace,
            dx.reborrow(),
        )?;
        // dx = (dy - dx / dim) / (sqrt(var) + eps).
        be.axpby(Scalar::Value(1.0), dy, -inv_dim, dx.reborrow())?;
        be.broadcast(
            Binary::Div,
            Broadcast::OverAxis,
            axis,
            std_dev,
            Src::InPlace,
            dx,
        )?;
        Ok(())
    }
}
