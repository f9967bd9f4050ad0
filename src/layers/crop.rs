//! Crop (upstream: src/caffe/layers/crop_layer.cpp): crops bottom 0 to the shape of bottom 1
//! along every axis from `axis` on (default 2, the spatial axes), keeping bottom 0's size
//! before it. `offset` gives where the crop starts: none (0 everywhere), one value for every
//! cropped axis, or one value per cropped axis. Bottom 1 only supplies a shape and gets no
//! gradient; bottom 0's gradient is the top's diff placed back at the crop, zero elsewhere.
//!
//! The copy is planned once per reshape as a set of strided 2-D blocks (adjacent axes that are
//! not cropped are merged), each one `copy_2d` op.

use crate::backend::{Backend, Block, Views};
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The Crop layer.
pub struct CropLayer {
    axis: i32,
    offsets: Vec<usize>,
    plan: Plan,
}

/// The copy as `outer` loops of 2-D blocks: `(size, bottom stride, top stride)` per outer axis,
/// then `rows x cols` blocks with the given row strides, starting at `base` in the bottom.
#[derive(Debug, Clone, Default)]
struct Plan {
    outer: Vec<(usize, usize, usize)>,
    rows: usize,
    cols: usize,
    bottom_row_stride: usize,
    top_row_stride: usize,
    base: usize,
}

impl Plan {
    /// One block copied from the bottom to the top (the forward pass).
    fn to_top(&self) -> Block {
        Block {
            rows: self.rows,
            cols: self.cols,
            x_stride: self.bottom_row_stride,
            y_stride: self.top_row_stride,
        }
    }

    /// One block copied back from the top to the bottom (the backward pass).
    fn to_bottom(&self) -> Block {
        Block {
            rows: self.rows,
            cols: self.cols,
            x_stride: self.top_row_stride,
            y_stride: self.bottom_row_stride,
        }
    }

    /// Calls `f(bottom_offset, top_offset)` for every block.
    fn for_each_block<E>(&self, mut f: impl FnMut(usize, usize) -> Result<(), E>) -> Result<(), E> {
        if self.outer.iter().any(|&(size, _, _)| size == 0) {
            return Ok(());
        }
        let mut index = vec![0usize; self.outer.len()];
        loop {
            let (mut b, mut t) = (self.base, 0);
            for (&i, &(_, bs, ts)) in index.iter().zip(&self.outer) {
                b += i * bs;
                t += i * ts;
            }
            f(b, t)?;
            // Odometer over the outer axes, last fastest.
            let mut d = self.outer.len();
            loop {
                if d == 0 {
                    return Ok(());
                }
                d -= 1;
                index[d] += 1;
                if index[d] < self.outer[d].0 {
                    break;
                }
                index[d] = 0;
            }
        }
    }
}

impl CropLayer {
    /// Reads `crop_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.crop_param.clone().unwrap_or_default();
        Ok(CropLayer {
            axis: p.axis(),
            offsets: p.offset.iter().map(|&o| o as usize).collect(),
            plan: Plan::default(),
        })
    }
}

impl<B: Backend> Layer<B> for CropLayer {
    fn layer_type(&self) -> &'static str {
        "Crop"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(2, 1)
    }

    fn layer_setup(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let bottom = blobs.bottom(0);
        let start = bottom
            .canonical_axis_index(self.axis as isize)
            .map_err(|e| LayerError::invalid(format!("crop_param.axis: {e}")))?;
        let cropped = bottom.num_axes() - start;
        if self.offsets.len() > 1 && self.offsets.len() != cropped {
            return Err(LayerError::invalid(format!(
                "crop_param.offset: {} values given; the number of offset values must be 1 or \
                 equal to the number of dimensions from axis {start} on ({cropped}) of bottom \
                 shape {}",
                self.offsets.len(),
                bottom.shape_string()
            )));
        }
        Ok(())
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (data, like) = (blobs.bottom(0), blobs.bottom(1));
        let nd = data.num_axes();
        let start = data
            .canonical_axis_index(self.axis as isize)
            .map_err(|e| LayerError::invalid(format!("crop_param.axis: {e}")))?;
        if like.num_axes() < nd {
            return Err(LayerError::invalid(format!(
                "Crop: bottom 1 (shape {}) has fewer axes than bottom 0 (shape {})",
                like.shape_string(),
                data.shape_string()
            )));
        }
        let mut shape = data.shape().to_vec();
        let mut offsets = vec![0usize; nd];
        for i in start..nd {
            let offset = match self.offsets.len() {
                0 => 0,
                1 => self.offsets[0],
                _ => self.offsets[i - start],
            };
            let size = like.shape()[i];
            if offset + size > data.shape()[i] {
                return Err(LayerError::invalid(format!(
                    "crop_param.offset: the crop for dimension {i} is out of bounds with size \
                     {size} and offset {offset} (bottom 0 shape {}, bottom 1 shape {})",
                    data.shape_string(),
                    like.shape_string()
                )));
            }
            shape[i] = size;
            offsets[i] = offset;
        }
        // Row-major strides of both blobs; merge an axis into the next when the next is whole
        // in both (then the pair is one axis of the product size).
        let strides =
            |s: &[usize]| -> Vec<usize> { (0..nd).map(|i| s[i + 1..].iter().product()).collect() };
        let (bs, ts) = (strides(data.shape()), strides(&shape));
        let base = (0..nd).map(|i| offsets[i] * bs[i]).sum();
        let mut dims: Vec<(usize, usize, usize)> = Vec::with_capacity(nd);
        for i in 0..nd {
            let dim = (shape[i], bs[i], ts[i]);
            match dims.last_mut() {
                Some(prev) if prev.1 == dim.0 * dim.1 && prev.2 == dim.0 * dim.2 => {
                    *prev = (prev.0 * dim.0, dim.1, dim.2);
                }
                _ => dims.push(dim),
            }
        }
        let (cols, _, _) = dims.pop().expect("a blob with an axis has a dimension");
        let (rows, bottom_row_stride, top_row_stride) = dims.pop().unwrap_or((1, cols, cols));
        self.plan = Plan {
            outer: dims,
            rows,
            cols,
            bottom_row_stride,
            top_row_stride,
            base,
        };
        blobs.top_mut(0).reshape(&shape)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let p = &self.plan;
        let (bottom, mut top) = blobs.forward_all()?;
        let block = p.to_top();
        let (x, y) = (bottom[0].data(), top[0].data_mut());
        p.for_each_block(|b, t| be.copy_2d(&block, x.tail(b), y.tail_mut(t)))?;
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
        let be = ctx.backend;
        let p = &self.plan;
        let (top, mut bottom) = blobs.backward_all()?;
        be.fill(0.0, bottom[0].diff_view_mut())?;
        let block = p.to_bottom();
        let (dy, dx) = (top[0].diff(), bottom[0].diff_mut());
        p.for_each_block(|b, t| be.copy_2d(&block, dy.tail(t), dx.tail_mut(b)))?;
        Ok(())
    }
}
