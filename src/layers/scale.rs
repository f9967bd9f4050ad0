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

use crate::backend::{Axis, Backend, BackendError, Binary, Broadcast, Slice, SliceMut, Src, Views};
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
    /// The bottom around the scale (and the bias, which has the scale's shape).
    view: AxisView,
    /// Index of the bias among the parameters.
    bias_param: Option<usize>,
    /// The bottom data, kept when running in place (backward needs it).
    bottom_copy: Option<B::Buffer>,
    /// The second bottom's data, when running in place with two bottoms.
    scale_copy: Option<B::Buffer>,
    /// Per channel: a second bottom's gradient before it is copied into that bottom's diff.
    scale_gradient: Option<B::Buffer>,
    /// Full size: `dy * x`, summed into the scale's gradient, without [`Backend::scale_gradients`].
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
            bias_param: None,
            bottom_copy: None,
            scale_copy: None,
            scale_gradient: None,
            product: None,
        })
    }

    /// The parameter gradients, summed over outer and inner: the bias's `sum(dy)` and the
    /// learned scale's `sum(dy x)` accumulated into their diffs; with two bottoms, the scale's
    /// written into the second bottom's diff.
    fn parameter_gradients(
        &mut self,
        be: &B,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (axis, n, c) = (self.view.axis(), self.view.count(), self.view.dim);
        let bias = self.bias_param.filter(|&k| params.propagate_down(k));
        let learned_scale = blobs.num_bottom() == 1 && params.propagate_down(0);
        let bottom_scale = blobs.num_bottom() == 2 && propagate_down[1];
        if bias.is_none() && !learned_scale && !bottom_scale {
            return Ok(());
        }
        let x = if blobs.is_in_place(0) {
            scratch(be, &mut self.bottom_copy, n)?.slice(0, n)
        } else {
            blobs.bottom(0).data_view()
        };
        let dy = blobs.top(0).diff_view();
        let mut all = params.all_mut();
        let (learned, rest) = all.split_at_mut(usize::from(blobs.num_bottom() == 1));
        let bias_diff = bias.map(|k| rest[k - learned.len()].diff_view_mut());
        // A second bottom's gradient goes through scratch: that bottom cannot be borrowed
        // for writing beside the top read here.
        let scale_diff = if learned_scale {
            Some((learned[0].diff_view_mut(), 1.0))
        } else if bottom_scale {
            Some((
                scratch(be, &mut self.scale_gradient, c)?.slice_mut(0, c),
                0.0,
            ))
        } else {
            None
        };
        if be.capabilities().fused_scale {
            be.scale_gradients(axis, x, dy, scale_diff, bias_diff)?;
        } else {
            let product = scratch(be, &mut self.product, n)?.slice_mut(0, n);
            composed_gradients(be, axis, x, dy, product, scale_diff, bias_diff)?;
        }
        if bottom_scale {
            let gradient = scratch(be, &mut self.scale_gradient, c)?.slice(0, c);
            be.copy(gradient, blobs.bottom_mut(1).diff_view_mut())?;
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
        let per_channel = Broadcast::PerChannel;
        if blobs.num_bottom() == 1 {
            let scale = params.get(0).data_view();
            match blobs.backward_io(0) {
                InOut::Separate { input, output } => {
                    let dy = input.diff_view().src();
                    let dx = output.diff_view_mut();
                    be.broadcast(Binary::Mul, per_channel, axis, scale, dy, dx)?;
                }
                InOut::Same(blob) => {
                    let dx = blob.diff_view_mut();
                    be.broadcast(Binary::Mul, per_channel, axis, scale, Src::InPlace, dx)?;
                }
            }
        } else if !blobs.is_in_place(0) {
            let (tops, mut bottoms) = blobs.backward_all()?;
            let (x, s) = bottoms.split_at_mut(1);
            let scale = s[0].data_view();
            let dy = tops[0].diff_view().src();
            let dx = x[0].diff_view_mut();
            be.broadcast(Binary::Mul, per_channel, axis, scale, dy, dx)?;
        } else {
            let scale = scratch(be, &mut self.scale_copy, channels)?.slice(0, channels);
            let dx = blobs.top_mut(0).diff_view_mut();
            be.broadcast(Binary::Mul, per_channel, axis, scale, Src::InPlace, dx)?;
        }
        Ok(())
    }
}

/// [`Backend::scale_forward`] from broadcasts and a copy, for backends without it (and the
/// bits the fused op must give).
pub(crate) fn composed_forward<B: Backend>(
    be: &B,
    axis: Axis,
    (scale, bias): (Slice<'_, B::Buffer>, Option<Slice<'_, B::Buffer>>),
    x: Src<'_, B::Buffer>,
    mut y: SliceMut<'_, B::Buffer>,
    keep: Option<SliceMut<'_, B::Buffer>>,
) -> Result<(), BackendError> {
    if let Some(keep) = keep {
        match x {
            Src::InPlace => be.copy(y.as_slice(), keep)?,
            Src::Slice(x) => be.copy(x, keep)?,
        }
    }
    let per_channel = Broadcast::PerChannel;
    be.broadcast(Binary::Mul, per_channel, axis, scale, x, y.reborrow())?;
    if let Some(bias) = bias {
        be.broadcast(Binary::Add, per_channel, axis, bias, Src::InPlace, y)?;
    }
    Ok(())
}

/// [`Backend::scale_gradients`] from a product and channel sums, for backends without it (and
/// the bits the fused op must give); `product` is full-size scratch.
pub(crate) fn composed_gradients<B: Backend>(
    be: &B,
    axis: Axis,
    x: Slice<'_, B::Buffer>,
    dy: Slice<'_, B::Buffer>,
    mut product: SliceMut<'_, B::Buffer>,
    scale_diff: Option<(SliceMut<'_, B::Buffer>, f32)>,
    bias_diff: Option<SliceMut<'_, B::Buffer>>,
) -> Result<(), BackendError> {
    if let Some(bias_diff) = bias_diff {
        be.sum_per_channel(axis, 1.0, dy, 1.0, bias_diff)?;
    }
    if let Some((scale_diff, beta)) = scale_diff {
        be.binary(Binary::Mul, dy.src(), x.src(), product.reborrow())?;
        be.sum_per_channel(axis, 1.0, product.as_slice(), beta, scale_diff)?;
    }
    Ok(())
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
            // Checks the bias against the bottom; with the scale's shape, it has its view.
            let shape = params.get(k).shape();
            let bias_view = broadcast_view(bottom, shape, self.axis, "scale_param", "bias")?;
            debug_assert_eq!(bias_view.axis(), self.view.axis());
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
        let in_place = blobs.is_in_place(0);
        if blobs.num_bottom() == 2 && in_place {
            // The top overwrites the first bottom; keep the scale beside its copy.
            let scale = scratch(be, &mut self.scale_copy, v.dim)?;
            be.copy(blobs.bottom(1).data_view(), scale.slice_mut(0, v.dim))?;
        }
        let keep = if in_place {
            Some(scratch(be, &mut self.bottom_copy, n)?.slice_mut(0, n))
        } else {
            None
        };
        let bias = self.bias_param.map(|k| params.get(k).data_view());
        let fused = be.capabilities().fused_scale;
        let run = |scale, x, y| {
            if fused {
                be.scale_forward(axis, scale, bias, x, y, keep)
            } else {
                composed_forward(be, axis, (scale, bias), x, y, keep)
            }
        };
        if blobs.num_bottom() == 1 {
            let scale = params.get(0).data_view();
            match blobs.forward_io(0) {
                InOut::Separate { input, output } => {
                    run(scale, input.data_view().src(), output.data_view_mut())?
                }
                InOut::Same(blob) => run(scale, Src::InPlace, blob.data_view_mut())?,
            }
        } else if !in_place {
            let (bottoms, mut tops) = blobs.forward_all()?;
            let scale = bottoms[1].data_view();
            run(scale, bottoms[0].data_view().src(), tops[0].data_view_mut())?;
        } else {
            let scale = scratch(be, &mut self.scale_copy, v.dim)?.slice(0, v.dim);
            run(scale, Src::InPlace, blobs.top_mut(0).data_view_mut())?;
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
        // The parameters first: they read the top diff, which an in-place input gradient
        // overwrites.
        self.parameter_gradients(be, blobs, propagate_down, params)?;
        if propagate_down[0] {
            self.input_gradient(be, blobs, params)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{composed_forward, composed_gradients};
    use crate::backend::cpu::{CpuBackend, CpuBuffer};
    use crate::backend::{Axis, Backend, Src, Views};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ seed).wrapping_mul(2654435761).rotate_left(11);
                (h % 30011) as f32 / 3000.0 - 5.0
            })
            .collect()
    }

    fn bits(v: &CpuBuffer) -> Vec<u32> {
        v.as_slice().iter().map(|x| x.to_bits()).collect()
    }

    /// `[y, keep]` of one forward pass, fused or composed.
    fn forward(
        be: &CpuBackend,
        axis: Axis,
        fused: bool,
        in_place: bool,
        bias: bool,
    ) -> [CpuBuffer; 2] {
        let (count, c) = (axis.outer * axis.dim * axis.inner, axis.dim);
        let x = CpuBuffer::from_vec(values(count, 1));
        let mut y = CpuBuffer::from_vec(if in_place {
            values(count, 1)
        } else {
            vec![f32::NAN; count]
        });
        let mut keep = CpuBuffer::from_vec(vec![f32::NAN; count]);
        let (scale, shift) = (
            CpuBuffer::from_vec(values(c, 2)),
            CpuBuffer::from_vec(values(c, 3)),
        );
        let bias = bias.then(|| shift.whole());
        let x = if in_place {
            Src::InPlace
        } else {
            x.whole().src()
        };
        let keep_view = in_place.then(|| keep.whole_mut());
        if fused {
            be.scale_forward(axis, scale.whole(), bias, x, y.whole_mut(), keep_view)
                .unwrap();
        } else {
            composed_forward(be, axis, (scale.whole(), bias), x, y.whole_mut(), keep_view).unwrap();
        }
        [y, keep]
    }

    /// `[scale_diff, bias_diff]` after one gradient pass onto running diffs, fused or composed.
    fn gradients(
        be: &CpuBackend,
        axis: Axis,
        fused: bool,
        beta: f32,
        bias: bool,
    ) -> [CpuBuffer; 2] {
        let (count, c) = (axis.outer * axis.dim * axis.inner, axis.dim);
        let (x, dy) = (
            CpuBuffer::from_vec(values(count, 4)),
            CpuBuffer::from_vec(values(count, 5)),
        );
        // With `beta` 0 the old diff is not read: NaN there must not come through.
        let old = if beta == 0.0 {
            vec![f32::NAN; c]
        } else {
            values(c, 6)
        };
        let mut scale_diff = CpuBuffer::from_vec(old);
        let mut bias_diff = CpuBuffer::from_vec(values(c, 7));
        let scale_view = Some((scale_diff.whole_mut(), beta));
        let bias_view = bias.then(|| bias_diff.whole_mut());
        if fused {
            be.scale_gradients(axis, x.whole(), dy.whole(), scale_view, bias_view)
                .unwrap();
        } else {
            let mut product = CpuBuffer::from_vec(vec![f32::NAN; count]);
            let product = product.whole_mut();
            composed_gradients(
                be,
                axis,
                x.whole(),
                dy.whole(),
                product,
                scale_view,
                bias_view,
            )
            .unwrap();
        }
        [scale_diff, bias_diff]
    }

    /// The CPU's fused Scale passes give the bits of the composition the other backends run,
    /// on one thread and on three, with and without a bias, in place or not, for rows shorter
    /// and longer than a block of lanes and than a task's row.
    #[test]
    fn fused_scale_gives_the_composed_bits() {
        for threads in [1, 3] {
            let be = CpuBackend::new(threads).unwrap();
            for axis in [
                Axis::new(5, 3, 37),
                Axis::new(2, 40, 1),
                Axis::new(9, 16, 1100),
            ] {
                for (in_place, bias) in [(false, false), (false, true), (true, false), (true, true)]
                {
                    let fused = forward(&be, axis, true, in_place, bias);
                    let composed = forward(&be, axis, false, in_place, bias);
                    for (i, (a, b)) in fused.iter().zip(&composed).enumerate() {
                        let what = format!("{axis:?} in place {in_place} bias {bias}: output {i}");
                        assert_eq!(bits(a), bits(b), "{what}");
                    }
                }
                for (beta, bias) in [(0.0, false), (1.0, true), (0.0, true)] {
                    let fused = gradients(&be, axis, true, beta, bias);
                    let composed = gradients(&be, axis, false, beta, bias);
                    assert_eq!(
                        bits(&fused[0]),
                        bits(&composed[0]),
                        "{axis:?} beta {beta}: scale"
                    );
                    assert_eq!(
                        bits(&fused[1]),
                        bits(&composed[1]),
                        "{axis:?} bias {bias}: bias"
                    );
                }
            }
        }
    }
}
