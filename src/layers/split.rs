//! Split: copies one bottom to several tops and sums their gradients back (upstream:
//! src/caffe/layers/split_layer.cpp). The net inserts one wherever a blob feeds more than one
//! consumer, so that each consumer writes its own diff.
//!
//! Upstream's tops share the bottom's data buffer; here each top holds a copy (the net's blob
//! arena has one buffer per blob). The values and the memory figure the net logs are the same.

use crate::backend::{Backend, Scalar};
use crate::layers::{BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The Split layer.
pub struct SplitLayer;

impl SplitLayer {
    /// Split has no parameters.
    pub fn new(_param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(SplitLayer)
    }
}

impl<B: Backend> Layer<B> for SplitLayer {
    fn layer_type(&self) -> &'static str {
        "Split"
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
        for top in tops {
            top.reshape(bottom[0].shape())?;
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
        for top in tops {
            ctx.backend
                .copy(bottom[0].data_view(), top.data_view_mut())?;
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
        let mut diff = bottom[0].diff_view_mut();
        ctx.backend.copy(tops[0].diff_view(), diff.reborrow())?;
        for top in &tops[1..] {
            ctx.backend
                .axpby(Scalar::Value(1.0), top.diff_view(), 1.0, diff.reborrow())?;
        }
        Ok(())
    }
}
