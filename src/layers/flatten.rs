//! Flatten: merges axes `flatten_param.axis` (default 1) through `flatten_param.end_axis`
//! (default -1, the last) of the bottom into one (upstream:
//! src/caffe/layers/flatten_layer.cpp). Upstream's top shares the bottom's buffers; here it
//! is a copy, and the gradient is copied back. Never in place.

use crate::backend::Backend;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The Flatten layer.
pub struct FlattenLayer {
    axis: i32,
    end_axis: i32,
}

impl FlattenLayer {
    /// Reads `flatten_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.flatten_param.unwrap_or_default();
        Ok(FlattenLayer {
            axis: p.axis(),
            end_axis: p.end_axis(),
        })
    }
}

impl<B: Backend> Layer<B> for FlattenLayer {
    fn layer_type(&self) -> &'static str {
        "Flatten"
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
        let (bottom, mut top) = blobs.forward_all()?;
        let bottom = bottom[0];
        let start = bottom.canonical_axis_index(self.axis as isize)?;
        let end = bottom.canonical_axis_index(self.end_axis as isize)?;
        if end + 1 < start {
            return Err(LayerError::invalid(format!(
                "flatten_param.end_axis ({}) comes before flatten_param.axis ({}) for a bottom \
                 of shape {}",
                self.end_axis,
                self.axis,
                bottom.shape_string()
            )));
        }
        let shape = bottom.shape();
        let mut top_shape = shape[..start].to_vec();
        top_shape.push(bottom.count_range(start, end + 1)?);
        top_shape.extend_from_slice(&shape[end + 1..]);
        top[0].reshape(&top_shape)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (bottom, mut top) = blobs.forward_all()?;
        ctx.backend
            .copy(bottom[0].data_view(), top[0].data_view_mut())?;
        Ok(())
    }

    fn backward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        if propagate_down[0] {
            let (top, mut bottom) = blobs.backward_all()?;
            ctx.backend
                .copy(top[0].diff_view(), bottom[0].diff_view_mut())?;
        }
        Ok(())
    }
}
