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

use crate::backend::{Backend, Src};
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
        let (o, d, i, n) = (v.outer, v.dim, v.inner, v.count());
        if blobs.num_bottom() == 1 {
            let scale = params.get(0).data();
            match blobs.forward_io(0) {
                InOut::Separate { input, output } => {
                    let x = Src::At(input.data(), 0);
                    be.mul_per_channel(o, d, i, scale, 0, x, output.data_mut(), 0)?;
                }
                InOut::Same(blob) => {
                    let copy = scratch(be, &mut self.bottom_copy, n)?;
                    be.copy(n, blob.data(), 0, copy, 0)?;
                    be.mul_per_channel(o, d, i, scale, 0, Src::InPlace, blob.data_mut(), 0)?;
                }
            }
        } else if !blobs.is_in_place(0) {
            let (bottoms, mut tops) = blobs.forward_all()?;
            let x = Src::At(bottoms[0].data(), 0);
            be.mul_per_channel(o, d, i, bottoms[1].data(), 0, x, tops[0].data_mut(), 0)?;
        } else {
            let scale = scratch(be, &mut self.scale_copy, d)?;
            be.copy(d, blobs.bottom(1).data(), 0, scale, 0)?;
            let copy = scratch(be, &mut self.bottom_copy, n)?;
            be.copy(n, blobs.bottom(0).data(), 0, copy, 0)?;
            let y = blobs.top_mut(0).data_mut();
            be.mul_per_channel(o, d, i, scale, 0, Src::InPlace, y, 0)?;
        }
        if let Some(k) = self.bias_param {
            let b = self.bias_view;
            let y = blobs.top_mut(0).data_mut();
            be.add_per_channel(b.outer, b.dim, b.inner, params.get(k).data(), 0, y, 0)?;
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
        let v = self.view;
        let (o, d, i, n) = (v.outer, v.dim, v.inner, v.count());
        let in_place = blobs.is_in_place(0);
        let learned = blobs.num_bottom() == 1;
        // The bias first: it accumulates the top diff summed over outer and inner.
        if let Some(k) = self.bias_param {
            if params.propagate_down(k) {
                let b = self.bias_view;
                let dy = blobs.top(0).diff();
                let diff = params.get_mut(k).diff_mut();
                be.sum_per_channel(b.outer, b.dim, b.inner, 1.0, dy, 0, 1.0, diff, 0)?;
            }
        }
        // The scale: sum of dy * x over outer and inner; accumulated into the learned
        // parameter, written into the second bottom's diff.
        let scale_wanted = if learned {
            params.propagate_down(0)
        } else {
            propagate_down[1]
        };
        if scale_wanted {
            let product = scratch(be, &mut self.product, n)?;
            let x = if in_place {
                &*scratch(be, &mut self.bottom_copy, n)?
            } else {
                blobs.bottom(0).data()
            };
            be.mul(
                n,
                Src::At(blobs.top(0).diff(), 0),
                Src::At(x, 0),
                product,
                0,
            )?;
            if learned {
                let diff = params.get_mut(0).diff_mut();
                be.sum_per_channel(o, d, i, 1.0, product, 0, 1.0, diff, 0)?;
            } else {
                let diff = blobs.bottom_mut(1).diff_mut();
                be.sum_per_channel(o, d, i, 1.0, product, 0, 0.0, diff, 0)?;
            }
        }
        if !propagate_down[0] {
            return Ok(());
        }
        // dx = dy * scale.
        if learned {
            let scale = params.get(0).data();
            match blobs.backward_io(0) {
                InOut::Separate { input, output } => {
                    let dy = Src::At(input.diff(), 0);
                    be.mul_per_channel(o, d, i, scale, 0, dy, output.diff_mut(), 0)?;
                }
                InOut::Same(blob) => {
                    be.mul_per_channel(o, d, i, scale, 0, Src::InPlace, blob.diff_mut(), 0)?;
                }
            }
        } else if !in_place {
            let (tops, mut bottoms) = blobs.backward_all()?;
            let (x, s) = bottoms.split_at_mut(1);
            let dy = Src::At(tops[0].diff(), 0);
            be.mul_per_channel(o, d, i, s[0].data(), 0, dy, x[0].diff_mut(), 0)?;
        } else {
            let scale = scratch(be, &mut self.scale_copy, d)?;
            let dx = blobs.top_mut(0).diff_mut();
            be.mul_per_channel(o, d, i, scale, 0, Src::InPlace, dx, 0)?;
        }
        Ok(())
    }
}
