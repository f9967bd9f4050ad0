//! Parameter: a layer whose top is its one parameter blob, of shape `parameter_param.shape`
//! (upstream: include/caffe/layers/parameter_layer.hpp). Upstream's top shares the
//! parameter's data and diff; here forward copies the data to the top and backward adds the
//! top's gradient to the parameter's, which is the same once the solver has zeroed it. The
//! parameter starts at zero (a trained model's weights replace it).

use crate::backend::Backend;
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::{BlobShape, LayerParameter};

/// The Parameter layer.
pub struct ParameterLayer {
    shape: BlobShape,
}

impl ParameterLayer {
    /// Reads `parameter_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.parameter_param.clone().unwrap_or_default();
        Ok(ParameterLayer {
            shape: p.shape.unwrap_or_default(),
        })
    }
}

impl<B: Backend> Layer<B> for ParameterLayer {
    fn layer_type(&self) -> &'static str {
        "Parameter"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(0, 1)
    }

    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let mut value = Blob::empty(ctx.backend)?;
        value
            .reshape_proto(&self.shape)
            .map_err(|e| LayerError::invalid(format!("parameter_param.shape: {e}")))?;
        blobs.top_mut(0).reshape(value.shape())?;
        params.push(value);
        Ok(())
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        blobs.top_mut(0).reshape(params.get(0).shape())?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let value = params.get(0).data_view();
        ctx.backend.copy(value, blobs.top_mut(0).data_view_mut())?;
        Ok(())
    }

    fn backward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _propagate_down: &[bool],
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        if !params.propagate_down(0) {
            return Ok(());
        }
        let dy = blobs.top(0).diff_view();
        let gradient = params.get_mut(0).diff_view_mut();
        ctx.backend.axpby(1.0.into(), dy, 1.0, gradient)?;
        Ok(())
    }
}
