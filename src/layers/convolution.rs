//! Convolution and Deconvolution, one layer parameterised by direction (upstream:
//! src/caffe/layers/conv_layer.cpp and deconv_layer.cpp). The shared logic (parameters, shapes,
//! GEMMs, the 1x1 fast path) is in [`base_conv`](super::base_conv).
//!
//! Convolution: for each image, im2col then one GEMM per group with the weights
//! `(num_output, channels / group, kernel_h, kernel_w)`, plus an optional bias per output
//! channel. Several bottoms are convolved with the same weights, each into the top of the same
//! index. Output size per spatial axis: `(size + 2 pad - (dilation (kernel - 1) + 1)) / stride +
//! 1`.
//!
//! Deconvolution, the transposed convolution: the forward pass is Convolution's input-gradient
//! pass and the backward pass its forward pass, with weights
//! `(channels, num_output / group, kernel_h, kernel_w)`. Output size per spatial axis:
//! `stride (size - 1) + dilation (kernel - 1) + 1 - 2 pad`.

use crate::backend::{Backend, ConvGrads};
use crate::blob::Blob;
use crate::layers::base_conv::ConvBase;
use crate::layers::{BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// A convolution layer; `TRANSPOSED` makes it a Deconvolution.
pub struct ConvLayer<B: Backend, const TRANSPOSED: bool> {
    base: ConvBase<B>,
}

/// The Convolution layer.
pub type ConvolutionLayer<B> = ConvLayer<B, false>;
/// The Deconvolution layer.
pub type DeconvolutionLayer<B> = ConvLayer<B, true>;

impl<B: Backend, const TRANSPOSED: bool> ConvLayer<B, TRANSPOSED> {
    const TYPE: &'static str = if TRANSPOSED {
        "Deconvolution"
    } else {
        "Convolution"
    };

    /// Reads `convolution_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(ConvLayer {
            base: ConvBase::new(param, Self::TYPE, TRANSPOSED)?,
        })
    }
}

impl<B: Backend, const TRANSPOSED: bool> Layer<B> for ConvLayer<B, TRANSPOSED> {
    fn layer_type(&self) -> &'static str {
        Self::TYPE
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::AtLeast(1), Count::AtLeast(1)).with_equal_bottom_top()
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
        let weight = params.get(0).data_view();
        for (bottom, top) in bottoms.iter().zip(tops.iter_mut()) {
            if TRANSPOSED {
                // The convolution's data gradient, with the bottom as its output's gradient (the
                // first view, the convolution's input, is not read without a weight gradient).
                let b = bottom.data_view();
                let grads = ConvGrads {
                    dw: None,
                    dx: Some(top.data_view_mut()),
                };
                base.conv_backward(be, b, weight, b, grads)?;
                if base.bias_term() {
                    base.forward_bias(be, params.get(1).data_view(), top.data_view_mut())?;
                }
            } else {
                let bias = base.bias_term().then(|| params.get(1).data_view());
                base.conv_forward(be, bottom.data_view(), weight, bias, top.data_view_mut())?;
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
            let dy = top.diff_view();
            if bias_down {
                base.backward_bias(be, dy, params.get_mut(1).diff_view_mut())?;
            }
            if TRANSPOSED {
                if weight_down {
                    // dW += bottom col(top_diff)^T: the convolution's weight gradient with the
                    // top's diff as its input and the bottom as its output's gradient.
                    let (weight, weight_diff) = params.get_mut(0).data_and_diff_mut();
                    let grads = ConvGrads {
                        dw: Some(weight_diff),
                        dx: None,
                    };
                    base.conv_backward(be, dy, weight, bottom.data_view(), grads)?;
                }
                if propagate_down[i] {
                    // bottom_diff = W col(top_diff): the convolution's forward pass.
                    let weight = params.get(0).data_view();
                    base.conv_forward(be, dy, weight, None, bottom.diff_view_mut())?;
                }
                continue;
            }
            if !(weight_down || propagate_down[i]) {
                continue;
            }
            let (weight, weight_diff) = params.get_mut(0).data_and_diff_mut();
            let (bottom_data, bottom_diff) = bottom.data_and_diff_mut();
            let grads = ConvGrads {
                dw: weight_down.then_some(weight_diff),
                dx: propagate_down[i].then_some(bottom_diff),
            };
            base.conv_backward(be, bottom_data, weight, dy, grads)?;
        }
        Ok(())
    }
}
