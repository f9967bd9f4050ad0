//! Convolution (upstream: src/caffe/layers/conv_layer.cpp): for each image, im2col then one
//! GEMM per group with the weights `(num_output, channels / group, kernel_h, kernel_w)`, plus an
//! optional bias per output channel. Several bottoms are convolved with the same weights, each
//! into the top of the same index. Output size per spatial axis:
//! `(size + 2 pad - (dilation (kernel - 1) + 1)) / stride + 1`. The shared logic (parameters,
//! shapes, GEMMs, the 1x1 fast path) is in [`base_conv`](super::base_conv).

use crate::backend::Backend;
use crate::blob::Blob;
use crate::layers::base_conv::ConvBase;
use crate::layers::{Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The Convolution layer.
pub struct ConvolutionLayer<B: Backend> {
    base: ConvBase<B>,
}

impl<B: Backend> ConvolutionLayer<B> {
    /// Reads `convolution_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(ConvolutionLayer {
            base: ConvBase::new(param, "Convolution", false)?,
        })
    }
}

impl<B: Backend> Layer<B> for ConvolutionLayer<B> {
    fn layer_type(&self) -> &'static str {
        "Convolution"
    }
    fn min_num_bottom(&self) -> Option<usize> {
        Some(1)
    }
    fn min_num_top(&self) -> Option<usize> {
        Some(1)
    }
    fn equal_num_bottom_top(&self) -> bool {
        true
    }

    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        self.base.layer_setup(ctx, blobs, params)
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        self.base.reshape(ctx, blobs, params)
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let base = &mut self.base;
        let (bottoms, mut tops) = blobs.forward_all()?;
        let weight = params.get(0).data();
        let bias = base.bias_term().then(|| params.get(1).data());
        for (bottom, top) in bottoms.iter().zip(tops.iter_mut()) {
            base.conv_forward(be, bottom.data(), weight, bias, top.data_mut())?;
        }
        Ok(())
    }

    fn backward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let base = &mut self.base;
        let weight_down = params.propagate_down(0);
        let bias_down = base.bias_term() && params.propagate_down(1);
        let (tops, mut bottoms) = blobs.backward_all()?;
        for (i, (top, bottom)) in tops.iter().zip(bottoms.iter_mut()).enumerate() {
            if bias_down {
                base.backward_bias(be, top.diff(), params.get_mut(1).diff_mut())?;
            }
            if !(weight_down || propagate_down[i]) {
                continue;
            }
            // The weights are read while their gradient is written, the bottom's data while its
            // diff is: two buffers of one blob each.
            let (weight, weight_diff) = params.get_mut(0).data_diff_mut();
            let (bottom_data, bottom_diff) = bottom.data_diff_mut();
            let weight: &B::Buffer = weight;
            base.conv_backward(
                be,
                bottom_data,
                weight,
                top.diff(),
                weight_down.then_some(weight_diff),
                propagate_down[i].then_some(bottom_diff),
            )?;
        }
        Ok(())
    }
}
