//! Reduction: reduces every axis from `reduction_param.axis` on to one number (upstream:
//! src/caffe/layers/reduction_layer.cpp). The top keeps the axes before `axis` (default 0: the
//! top is a scalar); each of its `num = count(0, axis)` entries is `coeff` times the SUM, ASUM
//! (sum of absolute values), SUMSQ (sum of squares) or MEAN of the `dim = count(axis)`
//! elements of one bottom item. MEAN is SUM with `coeff / dim`. Backward, for each item with
//! `g = coeff dy`: SUM and MEAN give `g`, ASUM `sign(x) g`, SUMSQ `2 x g`.

use crate::backend::{Axis, AxisReduction, Backend, Binary, Broadcast, Src, Unary, Views};
use crate::blob::Blob;
use crate::layers::loss::scratch;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::reduction_parameter::ReductionOp;
use crate::proto::caffe::LayerParameter;

/// The Reduction layer.
pub struct ReductionLayer<B: Backend> {
    op: ReductionOp,
    axis: i32,
    coeff: f32,
    /// ASUM: the absolute values of the bottom, summed per item.
    magnitudes: Option<B::Buffer>,
}

impl<B: Backend> ReductionLayer<B> {
    /// Reads `reduction_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.reduction_param.unwrap_or_default();
        let op = match p.operation {
            None => ReductionOp::Sum,
            Some(v) => ReductionOp::try_from(v).map_err(|_| {
                LayerError::invalid(format!(
                    "reduction_param.operation {v} is not SUM (1), ASUM (2), SUMSQ (3) or \
                     MEAN (4)"
                ))
            })?,
        };
        Ok(ReductionLayer {
            op,
            axis: p.axis(),
            coeff: p.coeff(),
            magnitudes: None,
        })
    }

    /// The bottom as `num` items of `dim` elements, one row each.
    fn rows(&self, bottom: &Blob<B>) -> Result<Axis, LayerError> {
        let axis = self.reduced_axis(bottom)?;
        Ok(Axis::new(
            bottom.count_range(0, axis)?,
            bottom.count_from(axis)?,
            1,
        ))
    }

    fn reduced_axis(&self, bottom: &Blob<B>) -> Result<usize, LayerError> {
        bottom
            .canonical_axis_index(self.axis as isize)
            .map_err(|e| LayerError::invalid(format!("reduction_param.axis: {e}")))
    }

    /// The factor applied to each item's reduction: `coeff`, over `dim` for MEAN.
    fn effective_coeff(&self, rows: Axis) -> f32 {
        match self.op {
            ReductionOp::Mean => self.coeff / rows.dim as f32,
            _ => self.coeff,
        }
    }
}

impl<B: Backend> Layer<B> for ReductionLayer<B> {
    fn layer_type(&self) -> &'static str {
        "Reduction"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let bottom = blobs.bottom(0);
        let axis = self.reduced_axis(bottom)?;
        let shape = bottom.shape()[..axis].to_vec();
        blobs.top_mut(0).reshape(&shape)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let b = ctx.backend;
        let (bottom, mut top) = blobs.forward_all()?;
        let rows = self.rows(bottom[0])?;
        let x = bottom[0].data_view();
        let mut y = top[0].data_view_mut();
        match self.op {
            ReductionOp::Sum | ReductionOp::Mean => {
                b.reduce_over_axis(AxisReduction::Sum, rows, x, y.reborrow())?
            }
            ReductionOp::Asum => {
                let n = x.len;
                let magnitudes = scratch(b, &mut self.magnitudes, n)?;
                b.unary(Unary::Abs, x.src(), magnitudes.slice_mut(0, n))?;
                let summed = magnitudes.slice(0, n);
                b.reduce_over_axis(AxisReduction::Sum, rows, summed, y.reborrow())?
            }
            ReductionOp::Sumsq => {
                b.reduce_over_axis(AxisReduction::Dot(x), rows, x, y.reborrow())?
            }
        }
        let coeff = self.effective_coeff(rows);
        if coeff != 1.0 {
            b.scale(coeff.into(), Src::InPlace, y)?;
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
        if !propagate_down[0] {
            return Ok(());
        }
        let b = ctx.backend;
        let (top, mut bottom) = blobs.backward_all()?;
        let rows = self.rows(&*bottom[0])?;
        let coeff = self.effective_coeff(rows);
        let dy = top[0].diff_view();
        let (x, mut dx) = bottom[0].data_and_diff_mut();
        // Each op's per-element derivative (with coeff, except for ASUM's sign), then times
        // its item's top gradient.
        match self.op {
            ReductionOp::Sum | ReductionOp::Mean => b.fill(coeff, dx.reborrow())?,
            ReductionOp::Asum => b.unary(Unary::Sign, x.src(), dx.reborrow())?,
            ReductionOp::Sumsq => b.scale((2.0 * coeff).into(), x.src(), dx.reborrow())?,
        }
        b.broadcast(
            Binary::Mul,
            Broadcast::OverAxis,
            rows,
            dy,
            Src::InPlace,
            dx.reborrow(),
        )?;
        if self.op == ReductionOp::Asum && coeff != 1.0 {
            b.scale(coeff.into(), Src::InPlace, dx)?;
        }
        Ok(())
    }
}
