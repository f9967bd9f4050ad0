//! Softmax along one axis (upstream: src/caffe/layers/softmax_layer.cpp).
//!
//! `softmax_param { axis: 1 }` (the default; negative counts from the end). Every other axis
//! indexes an independent softmax. As upstream, the maximum along the axis is subtracted before
//! `exp`, then each value is divided by the sum. Runs in place.

use crate::backend::{Backend, Src};
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
}

/// `y = softmax(x)` along the view's axis, `x` possibly `y` itself; `scale` holds
/// `outer * inner` elements of scratch.
pub fn softmax_forward<B: Backend>(
    be: &B,
    v: AxisView,
    x: Src<'_, B::Buffer>,
    y: &mut B::Buffer,
    scale: &mut B::Buffer,
) -> Result<(), LayerError> {
    let (o, d, i) = (v.outer, v.dim, v.inner);
    if let Src::At(x, off) = x {
        be.copy(v.count(), x, off, y, 0)?;
    }
    be.max_over_axis(o, d, i, y, 0, scale, 0)?;
    be.sub_along_axis(o, d, i, scale, 0, y, 0)?;
    be.exp(v.count(), Src::InPlace, y, 0)?;
    be.sum_over_axis(o, d, i, y, 0, scale, 0)?;
    be.div_along_axis(o, d, i, scale, 0, y, 0)?;
    Ok(())
}

/// `dx = (dy - sum_c dy y) y` along the view's axis, with `y` the forward output; `dy` may be
/// `dx` itself (`Src::InPlace`).
pub fn softmax_backward<B: Backend>(
    be: &B,
    v: AxisView,
    y: &B::Buffer,
    dy: Src<'_, B::Buffer>,
    dx: &mut B::Buffer,
    scale: &mut B::Buffer,
) -> Result<(), LayerError> {
    let (o, d, i) = (v.outer, v.dim, v.inner);
    if let Src::At(dy, off) = dy {
        be.copy(v.count(), dy, off, dx, 0)?;
    }
    be.dot_over_axis(o, d, i, dx, 0, y, 0, scale, 0)?;
    be.sub_along_axis(o, d, i, scale, 0, dx, 0)?;
    be.mul(v.count(), Src::InPlace, Src::At(y, 0), dx, 0)?;
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
        let scale = scratch(ctx.backend, &mut self.scale, self.view.positions())?;
        match blobs.forward_io(0) {
            InOut::Separate { input, output } => softmax_forward(
                ctx.backend,
                self.view,
                Src::At(input.data(), 0),
                output.data_mut(),
                scale,
            ),
            InOut::Same(blob) => {
                softmax_forward(ctx.backend, self.view, Src::InPlace, blob.data_mut(), scale)
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
        let scale = scratch(ctx.backend, &mut self.scale, self.view.positions())?;
        match blobs.backward_io(0) {
            InOut::Separate {
                input: top,
                output: bottom,
            } => softmax_backward(
                ctx.backend,
                self.view,
                top.data(),
                Src::At(top.diff(), 0),
                bottom.diff_mut(),
                scale,
            ),
            InOut::Same(blob) => {
                let (data, diff) = blob.data_diff_mut();
                softmax_backward(ctx.backend, self.view, data, Src::InPlace, diff, scale)
            }
        }
    }
}
