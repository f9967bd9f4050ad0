//! Softmax along one axis (upstream: src/caffe/layers/softmax_layer.cpp).
//!
//! `softmax_param { axis: 1 }` (the default; negative counts from the end). Every other axis
//! indexes an independent softmax. As upstream, the maximum along the axis is subtracted before
//! `exp`, then each value is divided by the sum. Runs in place.

use crate::backend::{
    Axis, AxisReduction, Backend, Binary, Broadcast, Slice, SliceMut, Src, Unary, Views,
};
use crate::blob::Blob;
use crate::layers::loss::scratch;
use crate::layers::{BlobCounts, Blobs, Context, InOut, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// A blob viewed as `(outer, dim, inner)` around one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AxisView {
    pub outer: usize,
    pub dim: usize,
    pub inner: usize,
}

impl AxisView {
    /// The view of `blob` around `axis` (negative counts from the end).
    pub fn new<B: Backend>(blob: &Blob<B>, axis: i32) -> Result<Self, LayerError> {
        let axis = blob.canonical_axis_index(axis as isize)?;
        Ok(AxisView {
            outer: blob.count_range(0, axis)?,
            dim: blob.shape()[axis],
            inner: blob.count_from(axis + 1)?,
        })
    }
    /// Elements of the whole blob.
    pub fn count(&self) -> usize {
        self.outer * self.dim * self.inner
    }
    /// Positions (one per independent softmax): `outer * inner`.
    pub fn positions(&self) -> usize {
        self.outer * self.inner
    }
    /// The same view as the backend's axis ops take it.
    pub fn axis(&self) -> Axis {
        Axis::new(self.outer, self.dim, self.inner)
    }
}

/// `y = softmax(x)` along `axis`, `x` possibly `y` itself; `x` and `y` hold the axis's
/// elements, `scale` (scratch) at least `outer * inner`.
pub fn softmax_forward<B: Backend>(
    be: &B,
    axis: Axis,
    x: Src<'_, B::Buffer>,
    mut y: SliceMut<'_, B::Buffer>,
    mut scale: SliceMut<'_, B::Buffer>,
) -> Result<(), LayerError> {
    if let Src::Slice(x) = x {
        be.copy(x, y.reborrow())?;
    }
    be.reduce_over_axis(AxisReduction::Max, axis, y.as_slice(), scale.reborrow())?;
    be.broadcast(
        Binary::Sub,
        Broadcast::OverAxis,
        axis,
        scale.as_slice(),
        Src::InPlace,
        y.reborrow(),
    )?;
    be.unary(Unary::Exp, Src::InPlace, y.reborrow())?;
    be.reduce_over_axis(AxisReduction::Sum, axis, y.as_slice(), scale.reborrow())?;
    be.broadcast(
        Binary::Div,
        Broadcast::OverAxis,
        axis,
        scale.as_slice(),
        Src::InPlace,
        y,
    )?;
    Ok(())
}

/// `dx = (dy - sum_c dy y) y` along `axis`, with `y` the forward output; `dy` may be `dx`
/// itself (`Src::InPlace`). Views as for [`softmax_forward`].
pub fn softmax_backward<B: Backend>(
    be: &B,
    axis: Axis,
    y: Slice<'_, B::Buffer>,
    dy: Src<'_, B::Buffer>,
    mut dx: SliceMut<'_, B::Buffer>,
    mut scale: SliceMut<'_, B::Buffer>,
) -> Result<(), LayerError> {
    if let Src::Slice(dy) = dy {
        be.copy(dy, dx.reborrow())?;
    }
    be.reduce_over_axis(AxisReduction::Dot(y), axis, dx.as_slice(), scale.reborrow())?;
    be.broadcast(
        Binary::Sub,
        Broadcast::OverAxis,
        axis,
        scale.as_slice(),
        Src::InPlace,
        dx.reborrow(),
    )?;
    be.binary(Binary::Mul, Src::InPlace, y.src(), dx)?;
    Ok(())
}

/// The Softmax layer.
pub struct SoftmaxLayer<B: Backend> {
    axis: i32,
    view: AxisView,
    scale: Option<B::Buffer>,
}

impl<B: Backend> SoftmaxLayer<B> {
    /// Reads `softmax_param.axis`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(SoftmaxLayer {
            axis: param.softmax_param.as_ref().map_or(1, |p| p.axis()),
            view: AxisView::default(),
            scale: None,
        })
    }
}

impl<B: Backend> Layer<B> for SoftmaxLayer<B> {
    fn layer_type(&self) -> &'static str {
        "Softmax"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }
    fn supports_in_place(&self) -> bool {
        true
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        self.view = AxisView::new(blobs.bottom(0), self.axis)
            .map_err(|e| LayerError::invalid(format!("softmax_param.axis: {e}")))?;
        if !blobs.is_in_place(0) {
            let shape = blobs.bottom(0).shape().to_vec();
            blobs.top_mut(0).reshape(&shape)?;
        }
        scratch(ctx.backend, &mut self.scale, self.view.positions())?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (be, axis, positions) = (ctx.backend, self.view.axis(), self.view.positions());
        let scale = scratch(be, &mut self.scale, positions)?.slice_mut(0, positions);
        match blobs.forward_io(0) {
            InOut::Separate { input, output } => {
                let x = input.data_view().src();
                softmax_forward(be, axis, x, output.data_view_mut(), scale)
            }
            InOut::Same(blob) => {
                softmax_forward(be, axis, Src::InPlace, blob.data_view_mut(), scale)
            }
        }
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
        let (be, axis, positions) = (ctx.backend, self.view.axis(), self.view.positions());
        let scale = scratch(be, &mut self.scale, positions)?.slice_mut(0, positions);
        match blobs.backward_io(0) {
            InOut::Separate {
                input: top,
                output: bottom,
            } => {
                let (y, dy) = (top.data_view(), top.diff_view());
                let dx = bottom.diff_view_mut();
                softmax_backward(be, axis, y, dy.src(), dx, scale)
            }
            InOut::Same(blob) => {
                let (y, dx) = blob.data_and_diff_mut();
                softmax_backward(be, axis, y, Src::InPlace, dx, scale)
            }
        }
    }
}
