//! Scale: multiplies by a scale broadcast over the axes it does not cover, optionally adding a
//! bias (upstream: src/caffe/layers/scale_layer.cpp).
//!
//! `scale_param { axis: 1 num_axes: 1 filler {..} bias_term: false bias_filler {..} }`. With one
//! bottom the scale is a learned parameter of shape `bottom.shape[axis .. axis + num_axes]`
//! (`num_axes: -1`: to the last axis; 0: a scalar) filled by `filler` (default constant 1).
//! With two bottoms the second is the scale, applied from `axis` (any axis when it is a
//! scalar). `bias_term` adds a learned bias as a Bias layer with the same `axis` would, its
//! `num_axes` that of the scale (the second bottom's axes in the two-bottom form), filled by
//! `bias_filler` (default constant 0). Parameters: `[scale, bias]`, or `[bias]` with two
//! bottoms. Runs in place.

use crate::backend::{Backend, Binary, Broadcast, Src, Views};
use crate::blob::Blob;
use crate::filler::Filler;
use crate::layers::bias::{broadcast_view, learned_shape};
use crate::layers::loss::scratch;
use crate::layers::softmax::AxisView;
use crate::layers::{BlobCounts, Blobs, Context, Count, InOut, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The Scale layer.
pub struct ScaleLayer<B: Backend> {
    axis: i32,
    num_axes: i32,
    filler: Filler,
    bias_term: bool,
    bias_filler: Filler,
    view: AxisView,
    bias_view: AxisView,
    /// Index of the bias among the parameters.
    bias_param: Option<usize>,
    /// The bottom data, kept when running in place (backward needs it).
    bottom_copy: Option<B::Buffer>,
    /// The second bottom's data, when running in place with two bottoms.
    scale_copy: Option<B::Buffer>,
    /// `dy * x`, summed into the scale's gradient.
    product: Option<B::Buffer>,
}

impl<B: Backend> ScaleLayer<B> {
    /// Reads `scale_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.scale_param.clone().unwrap_or_default();
        let filler = match &p.filler {
            Some(f) => Filler::from_param(f)
                .map_err(|e| LayerError::invalid(format!("scale_param.filler: {e}")))?,
            None => Filler::Constant { value: 1.0 },
        };
        let bias_filler = Filler::from_param(&p.bias_filler.clone().unwrap_or_default())
            .map_err(|e| LayerError::invalid(format!("scale_param.bias_filler: {e}")))?;
        Ok(ScaleLayer {
            axis: p.axis(),
            num_axes: p.num_axes(),
            filler,
            bias_term: p.bias_term(),
            bias_filler,
            view: AxisView::default(),
            bias_view: AxisView::default(),
            bias_param: None,
            bottom_copy: None,
            scale_copy: None,
            product: None,
        })
    }

    /// The scale's gradient, the sum of `dy x` over outer and inner: accumulated into the
    /// learned parameter, written into the second bottom's diff.
    fn scale_gradient(
        &mut self,
        be: &B,
        blobs: &mut Blobs<'_, B>,
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let v = self.view;
        let (axis, n) = (v.axis(), v.count());
        let mut product = scratch(be, &mut self.product, n)?.slice_mut(0, n);
        let x = if blobs.is_in_place(0) {
            scratch(be, &mut self.bottom_copy, n)?.slice(0, n)
        } else {
            blobs.bottom(0).data_view()
        };
        let dy = blobs.top(0).diff_view();
        be.binary(Binary::Mul, dy.src(), x.src(), product.reborrow())?;
        let product = product.as_slice();
        if blobs.num_bottom() == 1 {
            let scale_diff = params.get_mut(0).diff_view_mut();
            be.sum_per_channel(axis, 1.0, product, 1.0, scale_diff)?;
        } else {
            let scale_diff = blobs.bottom_mut(1).diff_view_mut();
            be.sum_per_channel(axis, 1.0, product, 0.0, scale_diff)?;
        }
        Ok(())
    }

    /// `dx = dy scale`.
    fn input_gradient(
        &mut self,
        be: &B,
        blobs: &mut Blobs<'_, B>,
        params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (axis, channels) = (self.view.axis(), self.view.dim);
        if blobs.num_bottom() == 1 {
            let scale = params.get(0).data_view();
            match blobs.backward_io(0) {
                InOut::Separate { input, output } => {
                    let dy = input.diff_view().src();
                    let dx = output.diff_view_mut();
                    be.broadcast(Binary::Mul, Broadcast::PerChannel, axis, scale, dy, dx)?;
                }
                InOut::Same(blob) => {
                    let dx = blob.diff_view_mut();
                    be.broadcast(
                        Binary::Mul,
                        Broadcast::PerChannel,
                        axis,
                        scale,
                        Src::InPlace,
                        dx,
                    )?;
                }
            }
        } else if !blobs.is_in_place(0) {
            let (tops, mut bottoms) = blobs.backward_all()?;
            let (x, s) = bottoms.split_at_mut(1);
            let scale = s[0].data_view();
            let dy = tops[0].diff_view().src();
            let dx = x[0].diff_view_mut();
            be.broadcast(Binary::Mul, Broadcast::PerChannel, axis, scale, dy, dx)?;
        } else {
            let scale = scratch(be, &mut self.scale_copy, channels)?.slice(0, channels);
            let dx = blobs.top_mut(0).diff_view_mut();
            be.broadcast(
                Binary::Mul,
                Broadcast::PerChannel,
                axis,
                scale,
                Src::InPlace,
                dx,
            )?;
        }
        Ok(())
    }
}

impl<B: Backend> Layer<B> for ScaleLayer<B> {
    fn layer_type(&self) -> &'static str {
        "Scale"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::Range(1, 2), Count::Exactly(1))
    }
    fn supports_in_place(&self) -> bool {
        true
    }

    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let bottom = blobs.bottom(0);
        if blobs.num_bottom() == 1 {
            let shape = learned_shape(bottom, self.axis, self.num_axes, "scale_param", "scale")?;
            let mut scale = Blob::new(ctx.backend, &shape)?;
            self.filler
                .fill(&mut scale, ctx.rng)
                .map_err(|e| LayerError::invalid(format!("scale_param.filler: {e}")))?;
            params.push(scale);
        }
        if self.bias_term {
            let num_axes = if blobs.num_bottom() > 1 {
                blobs.bottom(1).num_axes() as i32
            } else {
                self.num_axes
            };
            let shape = learned_shape(bottom, self.axis, num_axes, "scale_param", "bias")?;
            let mut bias = Blob::new(ctx.backend, &shape)?;
            self.bias_filler
                .fill(&mut bias, ctx.rng)
                .map_err(|e| LayerError::invalid(format!("scale_param.bias_filler: {e}")))?;
            self.bias_param = Some(params.len());
            params.push(bias);
        }
        Ok(())
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let bottom = blobs.bottom(0);
        let scale = if blobs.num_bottom() > 1 {
            blobs.bottom(1)
        } else {
            params.get(0)
        };
        self.view = broadcast_view(bottom, scale.shape(), self.axis, "scale_param", "scale")?;
        if let Some(k) = self.bias_param {
            let shape = params.get(k).shape();
            self.bias_view = broadcast_view(bottom, shape, self.axis, "scale_param", "bias")?;
        }
        if blobs.is_in_place(0) {
            scratch(ctx.backend, &mut self.bottom_copy, self.view.count())?;
        } else {
            let shape = bottom.shape().to_vec();
            blobs.top_mut(0).reshape(&shape)?;
        }
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let v = self.view;
        let (axis, n) = (v.axis(), v.count());
        if blobs.num_bottom() == 1 {
            let scale = params.get(0).data_view();
            match blobs.forward_io(0) {
                InOut::Separate { input, output } => {
                    let x = input.data_view().src();
                    let y = output.data_view_mut();
                    be.broadcast(Binary::Mul, Broadcast::PerChannel, axis, scale, x, y)?;
                }
                InOut::Same(blob) => {
                    let copy = scratch(be, &mut self.bottom_copy, n)?;
                    be.copy(blob.data_view(), copy.slice_mut(0, n))?;
                    let y = blob.data_view_mut();
                    be.broadcast(
                        Binary::Mul,
                        Broadcast::PerChannel,
                        axis,
                        scale,
                        Src::InPlace,
                        y,
                    )?;
                }
            }
        } else if !blobs.is_in_place(0) {
            let (bottoms, mut tops) = blobs.forward_all()?;
            let scale = bottoms[1].data_view();
            let x = bottoms[0].data_view().src();
            let y = tops[0].data_view_mut();
            be.broadcast(Binary::Mul, Broadcast::PerChannel, axis, scale, x, y)?;
        } else {
            let scale = scratch(be, &mut self.scale_copy, v.dim)?;
            be.copy(blobs.bottom(1).data_view(), scale.slice_mut(0, v.dim))?;
            let copy = scratch(be, &mut self.bottom_copy, n)?;
            be.copy(blobs.bottom(0).data_view(), copy.slice_mut(0, n))?;
            let (scale, y) = (scale.slice(0, v.dim), blobs.top_mut(0).data_view_mut());
            be.broadcast(
                Binary::Mul,
                Broadcast::PerChannel,
                axis,
                scale,
                Src::InPlace,
                y,
            )?;
        }
        if let Some(k) = self.bias_param {
            let b = self.bias_view;
            let bias = params.get(k).data_view();
            let y = blobs.top_mut(0).data_view_mut();
            be.broadcast(
                Binary::Add,
                Broadcast::PerChannel,
                b.axis(),
                bias,
                Src::InPlace,
                y,
            )?;
        }
        Ok(())
    }

    fn backward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        // The bias first: it accumulates the top diff summed over outer and inner.
        if let Some(k) = self.bias_param {
            if params.propagate_down(k) {
                let b = self.bias_view;
                let dy = blobs.top(0).diff_view();
                let bias_diff = params.get_mut(k).diff_view_mut();
                be.sum_per_channel(b.axis(), 1.0, dy, 1.0, bias_diff)?;
            }
        }
        let scale_wanted = if blobs.num_bottom() == 1 {
            params.propagate_down(0)
        } else {
            propagate_down[1]
        };
        if scale_wanted {
            self.scale_gradient(be, blobs, params)?;
        }
        if propagate_down[0] {
            self.input_gradient(be, blobs, params)?;
        }
        Ok(())
    }
}
