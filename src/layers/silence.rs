//! Silence: consumes its bottoms and produces nothing, so that unused blobs are not reported
//! as net outputs (upstream: src/caffe/layers/silence_layer.cpp). Its gradient is zero.

use crate::backend::Backend;
use crate::layers::{BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The Silence layer.
pub struct SilenceLayer;

impl SilenceLayer {
    /// Silence has no parameters.
    pub fn new(_param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(SilenceLayer)
    }
}

impl<B: Backend> Layer<B> for SilenceLayer {
    fn layer_type(&self) -> &'static str {
        "Silence"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::AtLeast(1), Count::Exactly(0))
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        Ok(())
    }

    fn forward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        Ok(())
    }

    fn backward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        for (i, &down) in propagate_down.iter().enumerate() {
            if down {
                ctx.backend.fill(0.0, blobs.bottom_mut(i).diff_view_mut())?;
            }
        }
        Ok(())
    }
}
