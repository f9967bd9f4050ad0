//! Concat: joins its bottoms along one axis (upstream: src/caffe/layers/concat_layer.cpp).
//! `concat_param.axis` (default 1, negative counts from the end) or the legacy
//! `concat_param.concat_dim`, not both. Every bottom must match the first except along the
//! axis. With a single bottom upstream shares its buffers; here the top is a copy.

use crate::backend::{Backend, Block, Views};
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The Concat layer.
pub struct ConcatLayer {
    axis: i32,
    /// The legacy `concat_dim`, when given.
    concat_dim: Option<u32>,
}

impl ConcatLayer {
    /// Reads `concat_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.concat_param.unwrap_or_default();
        if p.axis.is_some() && p.concat_dim.is_some() {
            return Err(LayerError::invalid(
                "concat_param: either axis or concat_dim should be specified; not both",
            ));
        }
        Ok(ConcatLayer {
            axis: p.axis(),
            concat_dim: p.concat_dim,
        })
    }
}

/// The axis a Concat or Slice works along: the legacy `<field>_dim` (non-negative, below the
/// number of axes) if given, else the canonical form of `axis`.
pub(crate) fn legacy_or_axis<B: Backend>(
    bottom: &Blob<B>,
    legacy: Option<(&str, u32)>,
    axis: i32,
) -> Result<usize, LayerError> {
    match legacy {
        Some((field, dim)) => {
            let dim = dim as usize;
            if dim >= bottom.num_axes() {
                return Err(LayerError::invalid(format!(
                    "{field} {dim} out of range for a bottom of shape {}",
                    bottom.shape_string()
                )));
            }
            Ok(dim)
        }
        None => Ok(bottom.canonical_axis_index(axis as isize)?),
    }
}

impl ConcatLayer {
    fn axis<B: Backend>(&self, bottom: &Blob<B>) -> Result<usize, LayerError> {
        let legacy = self.concat_dim.map(|d| ("concat_param.concat_dim", d));
        legacy_or_axis(bottom, legacy, self.axis)
    }
}

impl<B: Backend> Layer<B> for ConcatLayer {
    fn layer_type(&self) -> &'static str {
        "Concat"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::AtLeast(1), Count::Exactly(1))
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (bottoms, mut top) = blobs.forward_all()?;
        let axis = self.axis(bottoms[0])?;
        let mut shape = bottoms[0].shape().to_vec();
        for (i, bottom) in bottoms.iter().enumerate().skip(1) {
            let other = bottom.shape();
            let fits = other.len() == shape.len()
                && (0..shape.len()).all(|j| j == axis || other[j] == shape[j]);
            if !fits {
                return Err(LayerError::invalid(format!(
                    "Concat bottom {i} has shape {} but bottom 0 has {}: all inputs must have \
                     the same number of axes and the same shape except at axis {axis}",
                    bottom.shape_string(),
                    bottoms[0].shape_string()
                )));
            }
            shape[axis] += other[axis];
        }
        top[0].reshape(&shape)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (bottoms, mut top) = blobs.forward_all()?;
        let top = &mut top[0];
        let axis = self.axis(bottoms[0])?;
        let (outer, inner) = (top.count_range(0, axis)?, top.count_from(axis + 1)?);
        let top_row = top.shape()[axis] * inner;
        let mut offset = 0;
        for bottom in &bottoms {
            let row = bottom.shape()[axis] * inner;
            let block = Block {
                rows: outer,
                cols: row,
                x_stride: row,
                y_stride: top_row,
            };
            ctx.backend
                .copy_2d(&block, bottom.data_view(), top.data_mut().tail_mut(offset))?;
            offset += row;
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
        let (top, bottoms) = blobs.backward_all()?;
        let top = top[0];
        let axis = self.axis(&*bottoms[0])?;
        let (outer, inner) = (top.count_range(0, axis)?, top.count_from(axis + 1)?);
        let top_row = top.shape()[axis] * inner;
        let mut offset = 0;
        for (bottom, &down) in bottoms.into_iter().zip(propagate_down) {
            let row = bottom.shape()[axis] * inner;
            if down {
                let block = Block {
                    rows: outer,
                    cols: row,
                    x_stride: top_row,
                    y_stride: row,
                };
                ctx.backend
                    .copy_2d(&block, top.diff().tail(offset), bottom.diff_view_mut())?;
            }
            offset += row;
        }
        Ok(())
    }
}
