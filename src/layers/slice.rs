//! Slice: cuts its bottom along one axis into its tops (upstream:
//! src/caffe/layers/slice_layer.cpp). `slice_param.axis` (default 1) or the legacy
//! `slice_param.slice_dim`, not both. `slice_point` lists the cut indices (one fewer than the
//! tops, strictly increasing); without it the axis is split evenly among the tops.

use crate::backend::{Backend, Block, Views};
use crate::layers::concat::legacy_or_axis;
use crate::layers::{BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The Slice layer.
pub struct SliceLayer {
    axis: i32,
    slice_dim: Option<u32>,
    slice_point: Vec<u32>,
}

impl SliceLayer {
    /// Reads `slice_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.slice_param.clone().unwrap_or_default();
        if p.axis.is_some() && p.slice_dim.is_some() {
            return Err(LayerError::invalid(
                "slice_param: either axis or slice_dim should be specified; not both",
            ));
        }
        Ok(SliceLayer {
            axis: p.axis(),
            slice_dim: p.slice_dim,
            slice_point: p.slice_point.clone(),
        })
    }

    fn axis<B: Backend>(&self, bottom: &crate::blob::Blob<B>) -> Result<usize, LayerError> {
        let legacy = self.slice_dim.map(|d| ("slice_param.slice_dim", d));
        legacy_or_axis(bottom, legacy, self.axis)
    }

    /// The length of each top along the axis, by upstream's rules.
    fn sizes(&self, dim: usize, num_top: usize) -> Result<Vec<usize>, LayerError> {
        if self.slice_point.is_empty() {
            if !dim.is_multiple_of(num_top) {
                return Err(LayerError::invalid(format!(
                    "Slice: the number of top blobs ({num_top}) should evenly divide the input \
                     slice axis ({dim})"
                )));
            }
            return Ok(vec![dim / num_top; num_top]);
        }
        if self.slice_point.len() + 1 != num_top {
            return Err(LayerError::invalid(format!(
                "slice_param.slice_point has {} points for {num_top} tops; it needs one fewer \
                 than the tops",
                self.slice_point.len()
            )));
        }
        if num_top > dim {
            return Err(LayerError::invalid(format!(
                "Slice: {num_top} tops are more than the slice axis length {dim}"
            )));
        }
        let mut sizes = Vec::with_capacity(num_top);
        let mut prev = 0;
        for &p in &self.slice_point {
            let p = p as usize;
            if p <= prev {
                return Err(LayerError::invalid(format!(
                    "slice_param.slice_point must be strictly increasing and positive: {:?}",
                    self.slice_point
                )));
            }
            sizes.push(p - prev);
            prev = p;
        }
        if prev > dim {
            return Err(LayerError::invalid(format!(
                "slice_param.slice_point {prev} lies beyond the slice axis length {dim}"
            )));
        }
        sizes.push(dim - prev);
        Ok(sizes)
    }
}

impl<B: Backend> Layer<B> for SliceLayer {
    fn layer_type(&self) -> &'static str {
        "Slice"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::Exactly(1), Count::AtLeast(1))
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (bottom, tops) = blobs.forward_all()?;
        let axis = self.axis(bottom[0])?;
        let mut shape = bottom[0].shape().to_vec();
        let sizes = self.sizes(shape[axis], tops.len())?;
        for (top, size) in tops.into_iter().zip(sizes) {
            shape[axis] = size;
            top.reshape(&shape)?;
        }
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (bottom, tops) = blobs.forward_all()?;
        let bottom = bottom[0];
        let axis = self.axis(bottom)?;
        let (outer, inner) = (bottom.count_range(0, axis)?, bottom.count_from(axis + 1)?);
        let bottom_row = bottom.shape()[axis] * inner;
        let mut offset = 0;
        for top in tops {
            let row = top.shape()[axis] * inner;
            let block = Block {
                rows: outer,
                cols: row,
                x_stride: bottom_row,
                y_stride: row,
            };
            ctx.backend
                .copy_2d(&block, bottom.data().tail(offset), top.data_view_mut())?;
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
        if !propagate_down[0] {
            return Ok(());
        }
        let (tops, mut bottom) = blobs.backward_all()?;
        let bottom = &mut bottom[0];
        let axis = self.axis(&**bottom)?;
        let (outer, inner) = (bottom.count_range(0, axis)?, bottom.count_from(axis + 1)?);
        let bottom_row = bottom.shape()[axis] * inner;
        let mut offset = 0;
        for top in tops {
            let row = top.shape()[axis] * inner;
            let block = Block {
                rows: outer,
                cols: row,
                x_stride: row,
                y_stride: bottom_row,
            };
            ctx.backend
                .copy_2d(&block, top.diff_view(), bottom.diff_mut().tail_mut(offset))?;
            offset += row;
        }
        Ok(())
    }
}
