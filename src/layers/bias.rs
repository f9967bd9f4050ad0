//! Bias: adds a bias broadcast over the axes it does not cover
//! (upstream: src/caffe/layers/bias_layer.cpp).
//!
//! `bias_param { axis: 1 num_axes: 1 filler {..} }`. With one bottom the bias is a learned
//! parameter of shape `bottom.shape[axis .. axis + num_axes]` (`num_axes: -1`: to the last
//! axis; 0: a scalar), filled by `filler` (default constant 0). With two bottoms the second is
//! the bias, applied from `axis` (any axis when it is a scalar) and `num_axes` is ignored.
//! Runs in place.

use crate::backend::{Axis, Backend, Binary, Broadcast, Slice, SliceMut, Src, Views};
use crate::blob::Blob;
use crate::filler::Filler;
use crate::layers::loss::scratch;
use crate::layers::softmax::AxisView;
use crate::layers::{BlobCounts, Blobs, Context, Count, InOut, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The shape of a learned operand (Bias, Scale) applied to `bottom` from `axis` over
/// `num_axes` axes (-1: to the end), as upstream's `LayerSetUp`. `field` names the parameter
/// message ("bias_param") and `what` the operand ("bias").
pub fn learned_shape<B: Backend>(
    bottom: &Blob<B>,
    axis: i32,
    num_axes: i32,
    field: &str,
    what: &str,
) -> Result<Vec<usize>, LayerError> {
    let start = bottom
        .canonical_axis_index(axis as isize)
        .map_err(|e| LayerError::invalid(format!("{field}.axis: {e}")))?;
    let end = match num_axes {
        -1 => bottom.num_axes(),
        n if n >= 0 => start + n as usize,
        n => {
            return Err(LayerError::invalid(format!(
                "{field}.num_axes must be non-negative, or -1 to extend to the end of bottom[0]; \
                 got {n}"
            )))
        }
    };
    if end > bottom.num_axes() {
        return Err(LayerError::invalid(format!(
            "{what} blob's shape extends past bottom[0]'s shape when applied starting with \
             bottom[0] axis = {start} ({field}.num_axes: {num_axes}, bottom[0] {})",
            bottom.shape_string()
        )));
    }
    Ok(bottom.shape()[start..end].to_vec())
}

/// How an operand of shape `operand` applies to `bottom` from `axis`, as upstream's `Reshape`:
/// a scalar applies from axis 0; otherwise its dimensions must equal the bottom's from `axis`.
/// The view's `dim` is the operand's count.
pub fn broadcast_view<B: Backend>(
    bottom: &Blob<B>,
    operand: &[usize],
    axis: i32,
    field: &str,
    what: &str,
) -> Result<AxisView, LayerError> {
    let start = if operand.is_empty() {
        0
    } else {
        bottom
            .canonical_axis_index(axis as isize)
            .map_err(|e| LayerError::invalid(format!("{field}.axis: {e}")))?
    };
    let end = start + operand.len();
    if end > bottom.num_axes() {
        return Err(LayerError::invalid(format!(
            "{what} blob's shape extends past bottom[0]'s shape when applied starting with \
             bottom[0] axis = {start} ({what} {:?}, bottom[0] {})",
            operand,
            bottom.shape_string()
        )));
    }
    for (i, &d) in operand.iter().enumerate() {
        if bottom.shape()[start + i] != d {
            return Err(LayerError::invalid(format!(
                "dimension mismatch between bottom[0]->shape({}) and {what}->shape({i}): \
                 bottom[0] {}, {what} {:?}",
                start + i,
                bottom.shape_string(),
                operand
            )));
        }
    }
    Ok(AxisView {
        outer: bottom.count_range(0, start)?,
        dim: operand.iter().product(),
        inner: bottom.count_from(end)?,
    })
}

/// `y += bias[c]` on every channel `c` of `axis`.
fn add_bias<B: Backend>(
    be: &B,
    axis: Axis,
    bias: Slice<'_, B::Buffer>,
    y: SliceMut<'_, B::Buffer>,
) -> Result<(), LayerError> {
    be.broadcast(
        Binary::Add,
        Broadcast::PerChannel,
        axis,
        bias,
        Src::InPlace,
        y,
    )?;
    Ok(())
}

/// The Bias layer.
pub struct BiasLayer<B: Backend> {
    axis: i32,
    num_axes: i32,
    filler: Filler,
    view: AxisView,
    /// The second bottom's data, when running in place with two bottoms.
    bias_copy: Option<B::Buffer>,
    /// The top diff, when running in place with two bottoms.
    top_diff: Option<B::Buffer>,
}

impl<B: Backend> BiasLayer<B> {
    /// Reads `bias_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.bias_param.clone().unwrap_or_default();
        let filler = Filler::from_param(&p.filler.clone().unwrap_or_default())
            .map_err(|e| LayerError::invalid(format!("bias_param.filler: {e}")))?;
        Ok(BiasLayer {
            axis: p.axis(),
            num_axes: p.num_axes(),
            filler,
            view: AxisView::default(),
            bias_copy: None,
            top_diff: None,
        })
    }
}

impl<B: Backend> Layer<B> for BiasLayer<B> {
    fn layer_type(&self) -> &'static str {
        "Bias"
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
        if blobs.num_bottom() == 1 {
            let shape = learned_shape(
                blobs.bottom(0),
                self.axis,
                self.num_axes,
                "bias_param",
                "bias",
            )?;
            let mut bias = Blob::new(ctx.backend, &shape)?;
            self.filler
                .fill(&mut bias, ctx.rng)
                .map_err(|e| LayerError::invalid(format!("bias_param.filler: {e}")))?;
            params.push(bias);
        }
        Ok(())
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let bias = if blobs.num_bottom() > 1 {
            blobs.bottom(1)
        } else {
            params.get(0)
        };
        self.view = broadcast_view(
            blobs.bottom(0),
            bias.shape(),
            self.axis,
            "bias_param",
            "bias",
        )?;
        if !blobs.is_in_place(0) {
            let shape = blobs.bottom(0).shape().to_vec();
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
        let axis = self.view.axis();
        if blobs.num_bottom() == 1 {
            let y = match blobs.forward_io(0) {
                InOut::Separate { input, output } => {
                    be.copy(input.data_view(), output.data_view_mut())?;
                    output
                }
                InOut::Same(blob) => blob,
            };
            add_bias(be, axis, params.get(0).data_view(), y.data_view_mut())?;
        } else if !blobs.is_in_place(0) {
            let (bottoms, mut tops) = blobs.forward_all()?;
            let mut y = tops[0].data_view_mut();
            be.copy(bottoms[0].data_view(), y.reborrow())?;
            add_bias(be, axis, bottoms[1].data_view(), y)?;
        } else {
            let d = axis.dim;
            let mut bias = scratch(be, &mut self.bias_copy, d)?.slice_mut(0, d);
            be.copy(blobs.bottom(1).data_view(), bias.reborrow())?;
            add_bias(be, axis, bias.as_slice(), blobs.top_mut(0).data_view_mut())?;
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
        let axis = self.view.axis();
        let in_place = blobs.is_in_place(0);
        if blobs.num_bottom() == 1 {
            // The learned bias accumulates the top diff summed over outer and inner.
            if params.propagate_down(0) {
                let (dy, dbias) = (blobs.top(0).diff_view(), params.get_mut(0).diff_view_mut());
                be.sum_per_channel(axis, 1.0, dy, 1.0, dbias)?;
            }
            if propagate_down[0] && !in_place {
                let (tops, mut bottoms) = blobs.backward_all()?;
                be.copy(tops[0].diff_view(), bottoms[0].diff_view_mut())?;
            }
        } else if !in_place {
            let (tops, mut bottoms) = blobs.backward_all()?;
            let dy = tops[0].diff_view();
            if propagate_down[1] {
                be.sum_per_channel(axis, 1.0, dy, 0.0, bottoms[1].diff_view_mut())?;
            }
            if propagate_down[0] {
                be.copy(dy, bottoms[0].diff_view_mut())?;
            }
        } else if propagate_down[1] {
            // In place the top diff is bottom 0's: copy it aside to write bottom 1's diff.
            let n = self.view.count();
            let mut dy = scratch(be, &mut self.top_diff, n)?.slice_mut(0, n);
            be.copy(blobs.top(0).diff_view(), dy.reborrow())?;
            let dbias = blobs.bottom_mut(1).diff_view_mut();
            be.sum_per_channel(axis, 1.0, dy.as_slice(), 0.0, dbias)?;
        }
        Ok(())
    }
}
