//! Deconvolution, the transposed convolution (upstream: src/caffe/layers/deconv_layer.cpp):
//! the forward pass is Convolution's input-gradient pass and the backward pass its forward
//! pass, with weights `(channels, num_output / group, kernel_h, kernel_w)`. Output size per
//! spatial axis: `stride (size - 1) + dilation (kernel - 1) + 1 - 2 pad`. The shared logic is in
//! [`base_conv`](super::base_conv).

use crate::backend::Backend;
use crate::blob::Blob;
use crate::layers::base_conv::ConvBase;
use crate::layers::{Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The Deconvolution layer.
pub struct DeconvolutionLayer<B: Backend> {
    base: ConvBase<B>,
}

impl<B: Backend> DeconvolutionLayer<B> {
    /// Reads `convolution_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(DeconvolutionLayer {
            base: ConvBase::new(param, "Deconvolution", true)?,
        })
    }
}

impl<B: Backend> Layer<B> for DeconvolutionLayer<B> {
    fn layer_type(&self) -> &'static str {
        "Deconvolution"
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
        for (bottom, top) in bottoms.iter().zip(tops.iter_mut()) {
            // The convolution's data gradient, with the bottom as its output's gradient (the
            // first buffer, the convolution's input, is not read without a weight gradient).
            let (b, out) = (bottom.data(), top.data_mut());
            base.conv_backward(be, b, weight, b, None, Some(out))?;
            if base.bias_term() {
                base.forward_bias(be, params.get(1).data(), top.data_mut())?;
            }
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
            if weight_down {
                // dW += bottom col(top_diff)^T: the convolution's weight gradient with the top's
                // diff as its input and the bottom as its output's gradient.
                let (weight, weight_diff) = params.get_mut(0).data_diff_mut();
                let (input, out_diff) = (top.diff(), bottom.data());
                base.conv_backward(be, input, weight, out_diff, Some(weight_diff), None)?;
            }
            if propagate_down[i] {
                // bottom_diff = W col(top_diff): the convolution's forward pass.
                let weight = params.get(0).data();
                base.conv_forward(be, top.diff(), weight, None, bottom.diff_mut())?;
            }
        }
        Ok(())
    }
}
