//! Tile: repeats the bottom `tiles` times along one axis (upstream:
//! src/caffe/layers/tile_layer.cpp). `tile_param.axis` (default 1, negative counts from the
//! end) and `tile_param.tiles` (required, positive). The top has the bottom's shape with that
//! axis `tiles` times as long: each block `bottom[o, ..]` of the `inner = count(axis)`
//! elements from the axis on appears `tiles` times in a row. Backward sums the copies' gradients.

use crate::backend::{Axis, AxisReduction, Backend, Block, Views};
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The Tile layer.
pub struct TileLayer {
    axis: i32,
    tiles: usize,
}

impl TileLayer {
    /// Reads `tile_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.tile_param.unwrap_or_default();
        let tiles = p
            .tiles
            .ok_or_else(|| LayerError::invalid("tile_param.tiles must be specified"))?;
        if tiles <= 0 {
            return Err(LayerError::invalid(format!(
                "tile_param.tiles must be positive; got {tiles}"
            )));
        }
        Ok(TileLayer {
            axis: p.axis(),
            tiles: tiles as usize,
        })
    }

    fn tiled_axis<B: Backend>(&self, bottom: &Blob<B>) -> Result<usize, LayerError> {
        bottom
            .canonical_axis_index(self.axis as isize)
            .map_err(|e| LayerError::invalid(format!("tile_param.axis: {e}")))
    }

    /// The bottom as `(outer, inner)`: the items before the axis and the elements of each.
    fn outer_inner<B: Backend>(&self, bottom: &Blob<B>) -> Result<(usize, usize), LayerError> {
        let axis = self.tiled_axis(bottom)?;
        Ok((bottom.count_range(0, axis)?, bottom.count_from(axis)?))
    }
}

impl<B: Backend> Layer<B> for TileLayer {
    fn layer_type(&self) -> &'static str {
        "Tile"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let bottom = blobs.bottom(0);
        let axis = self.tiled_axis(bottom)?;
        let mut shape = bottom.shape().to_vec();
        shape[axis] *= self.tiles;
        blobs.top_mut(0).reshape(&shape)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (bottom, mut top) = blobs.forward_all()?;
        let (outer, inner) = self.outer_inner(bottom[0])?;
        // Copy t of every block lands `t inner` into the block's run of `tiles` copies.
        let copy = Block {
            rows: outer,
            cols: inner,
            x_stride: inner,
            y_stride: self.tiles * inner,
        };
        for t in 0..self.tiles {
            let y = top[0].data_mut().tail_mut(t * inner);
            ctx.backend.copy_2d(&copy, bottom[0].data_view(), y)?;
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
        let (top, mut bottom) = blobs.backward_all()?;
        let (outer, inner) = self.outer_inner(&*bottom[0])?;
        // The top is `outer x tiles x inner`: summing over the tiles is the bottom's gradient.
        let copies = Axis::new(outer, self.tiles, inner);
        ctx.backend.reduce_over_axis(
            AxisReduction::Sum,
            copies,
            top[0].diff_view(),
            bottom[0].diff_view_mut(),
        )?;
        Ok(())
    }
}
