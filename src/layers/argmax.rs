//! ArgMax: the indices (and with `argmax_param.out_max_val`, the values) of the `top_k`
//! largest entries (upstream: src/caffe/layers/argmax_layer.cpp). With `argmax_param.axis`
//! the maximum is taken along that axis and the top has the bottom's shape with that axis
//! `top_k` long, holding the values when `out_max_val` and the indices otherwise. Without an
//! axis each item `n` is flattened and the top is `(N, 1, top_k)`, or `(N, 2, top_k)` with the
//! indices then the values, padded with 1s to the bottom's number of axes. Equal values rank
//! the larger index first, as upstream's sort on (value, index) pairs. No backward.

use crate::backend::{Axis, Backend, Block, Views};
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The ArgMax layer.
pub struct ArgMaxLayer<B: Backend> {
    out_max_val: bool,
    top_k: usize,
    axis: Option<i32>,
    /// The values (data) and indices (diff) of the last forward pass, `(outer, top_k, inner)`.
    scratch: Option<Blob<B>>,
}

impl<B: Backend> ArgMaxLayer<B> {
    /// Reads `argmax_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.argmax_param.unwrap_or_default();
        if p.top_k() < 1 {
            return Err(LayerError::invalid(
                "argmax_param.top_k: top k must not be less than 1",
            ));
        }
        Ok(ArgMaxLayer {
            out_max_val: p.out_max_val(),
            top_k: p.top_k() as usize,
            axis: p.axis,
            scratch: None,
        })
    }

    /// The axis searched, checking `top_k` against its length.
    fn search_axis(&self, bottom: &Blob<B>) -> Result<Axis, LayerError> {
        let (outer, dim, inner) = match self.axis {
            Some(axis) => {
                let axis = bottom.canonical_axis_index(axis as isize)?;
                let dim = bottom.shape()[axis];
                (
                    bottom.count_range(0, axis)?,
                    dim,
                    bottom.count_from(axis + 1)?,
                )
            }
            None => {
                let shape = bottom.shape();
                if shape.is_empty() {
                    return Err(LayerError::invalid(
                        "ArgMax without argmax_param.axis needs a bottom with at least 1 axis",
                    ));
                }
                (shape[0], bottom.count_from(1)?, 1)
            }
        };
        if self.top_k > dim {
            return Err(LayerError::invalid(format!(
                "argmax_param.top_k ({}) must be less than or equal to the {} ({dim}) of the \
                 bottom, shape {}",
                self.top_k,
                if self.axis.is_some() {
                    "dimension of the axis"
                } else {
                    "dimension of the flattened bottom blob per instance"
                },
                bottom.shape_string()
            )));
        }
        Ok(Axis::new(outer, dim, inner))
    }
}

impl<B: Backend> Layer<B> for ArgMaxLayer<B> {
    fn layer_type(&self) -> &'static str {
        "ArgMax"
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
        let (bottom, mut top) = blobs.forward_all()?;
        let bottom = bottom[0];
        let searched = self.search_axis(bottom)?;
        let shape = match self.axis {
            Some(axis) => {
                let mut shape = bottom.shape().to_vec();
                shape[bottom.canonical_axis_index(axis as isize)?] = self.top_k;
                shape
            }
            None => {
                let mut shape = vec![1; bottom.num_axes().max(3)];
                shape[0] = bottom.shape()[0];
                shape[1] = if self.out_max_val { 2 } else { 1 };
                shape[2] = self.top_k;
                shape
            }
        };
        top[0].reshape(&shape)?;
        let scratch = [searched.outer, self.top_k, searched.inner];
        match &mut self.scratch {
            Some(s) => s.reshape(&scratch)?,
            None => self.scratch = Some(Blob::new(ctx.backend, &scratch)?),
        }
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
        let axis = self.search_axis(bottom[0])?;
        let k = self.top_k;
        let scratch = self
            .scratch
            .as_mut()
            .ok_or_else(|| LayerError::invalid("ArgMax run before reshape"))?;
        let n = scratch.count();
        let (values, indices) = scratch.data_diff_mut();
        let found = [values.slice_mut(0, n), indices.slice_mut(0, n)];
        b.top_k_over_axis(axis, k, bottom[0].data_view(), found)?;
        let (values, indices) = (values.slice(0, n), indices.slice(0, n));
        let y = top[0].data_mut();
        match (self.axis.is_some(), self.out_max_val) {
            (true, true) => b.copy(values, y.slice_mut(0, n))?,
            (_, false) => b.copy(indices, y.slice_mut(0, n))?,
            (false, true) => {
                // Per item: the k indices, then the k values.
                let per_item = Block {
                    rows: axis.outer,
                    cols: k,
                    x_stride: k,
                    y_stride: 2 * k,
                };
                b.copy_2d(&per_item, indices, y.whole_mut())?;
                b.copy_2d(&per_item, values, y.tail_mut(k))?;
            }
        }
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        if propagate_down.iter().any(|&d| d) {
            return Err(LayerError::invalid(
                "ArgMax has no backward pass (upstream: not implemented)",
            ));
        }
        Ok(())
    }
}
