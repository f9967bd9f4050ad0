//! Input: tops of fixed shapes that the caller fills (upstream: src/caffe/layers/input_layer.cpp).
//!
//! `input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } }` gives every top that shape; one
//! `shape` per top gives each its own; no `shape` leaves the tops unshaped for the caller to
//! reshape. The net lists Input tops as its input blobs.

use crate::backend::Backend;
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::{BlobShape, LayerParameter};

/// The Input layer.
pub struct InputLayer {
    shapes: Vec<BlobShape>,
}

impl InputLayer {
    /// Reads `input_param.shape`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let shapes = param
            .input_param
            .as_ref()
            .map(|p| p.shape.clone())
            .unwrap_or_default();
        for (i, shape) in shapes.iter().enumerate() {
            if let Some(d) = shape.dim.iter().find(|&&d| d < 0) {
                return Err(LayerError::invalid(format!(
                    "input_param.shape[{i}] has a negative dimension {d}"
                )));
            }
        }
        Ok(InputLayer { shapes })
    }
}

impl<B: Backend> Layer<B> for InputLayer {
    fn layer_type(&self) -> &'static str {
        "Input"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::Exactly(0), Count::AtLeast(1))
    }

    fn layer_setup(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let num_top = blobs.num_top();
        let num_shape = self.shapes.len();
        if !(num_shape == 0 || num_shape == 1 || num_shape == num_top) {
            return Err(LayerError::invalid(format!(
                "input_param: must specify 'shape' once, once per top blob, or not at all: \
                 {num_top} tops vs. {num_shape} shapes"
            )));
        }
        if num_shape > 0 {
            for i in 0..num_top {
                let shape = &self.shapes[if num_shape == 1 { 0 } else { i }];
                blobs.top_mut(i).reshape_proto(shape)?;
            }
        }
        Ok(())
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
        _ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        _propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        Ok(())
    }
}
