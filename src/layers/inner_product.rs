//! InnerProduct, the fully connected layer (upstream: src/caffe/layers/inner_product_layer.cpp).
//!
//! The bottom is viewed as `M x K` with `M = count(0, axis)` and `K = count(axis)`; the top is
//! the bottom's shape up to `axis`, then `num_output` (`N`). Weights are `N x K` (`K x N` with
//! `transpose: true`), and `top = bottom W^T + bias` (`bottom W` when transposed).

use crate::backend::{Axis, Backend, Binary, Broadcast, Gemm, Src, Transpose};
use crate::blob::Blob;
use crate::filler::Filler;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::{FillerParameter, LayerParameter};

/// The InnerProduct layer.
pub struct InnerProductLayer {
    num_output: usize,
    bias_term: bool,
    transpose: bool,
    axis: i32,
    weight_filler: FillerParameter,
    bias_filler: FillerParameter,
    /// `K`, fixed at setup.
    k: usize,
    /// `M`, set in reshape.
    m: usize,
}

impl InnerProductLayer {
    /// Reads and checks `inner_product_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.inner_product_param.clone().unwrap_or_default();
        let num_output = p.num_output() as usize;
        if num_output == 0 {
            return Err(LayerError::invalid(
                "inner_product_param.num_output must be positive",
            ));
        }
        let weight_filler = p.weight_filler.clone().unwrap_or_default();
        let bias_filler = p.bias_filler.clone().unwrap_or_default();
        Filler::from_param(&weight_filler)
            .map_err(|e| LayerError::invalid(format!("inner_product_param.weight_filler: {e}")))?;
        if p.bias_term() {
            Filler::from_param(&bias_filler).map_err(|e| {
                LayerError::invalid(format!("inner_product_param.bias_filler: {e}"))
            })?;
        }
        Ok(InnerProductLayer {
            num_output,
            bias_term: p.bias_term(),
            transpose: p.transpose(),
            axis: p.axis(),
            weight_filler,
            bias_filler,
            k: 0,
            m: 0,
        })
    }

    fn axis<B: Backend>(&self, bottom: &Blob<B>) -> Result<usize, LayerError> {
        bottom
            .canonical_axis_index(self.axis as isize)
            .map_err(|e| LayerError::invalid(format!("inner_product_param.axis: {e}")))
    }

    fn weight_shape(&self) -> [usize; 2] {
        if self.transpose {
            [self.k, self.num_output]
        } else {
            [self.num_output, self.k]
        }
    }

    /// The top as `M x N`: the bias goes to each of the `N` outputs.
    fn outputs(&self) -> Axis {
        Axis::new(self.m, self.num_output, 1)
    }
}

impl<B: Backend> Layer<B> for InnerProductLayer {
    fn layer_type(&self) -> &'static str {
        "InnerProduct"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }

    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let bottom = blobs.bottom(0);
        let axis = self.axis(bottom)?;
        self.k = bottom.count_from(axis)?;
        let mut weight = Blob::new(ctx.backend, &self.weight_shape())?;
        Filler::from_param(&self.weight_filler)?.fill(&mut weight, ctx.rng)?;
        params.push(weight);
        if self.bias_term {
            let mut bias = Blob::new(ctx.backend, &[self.num_output])?;
            Filler::from_param(&self.bias_filler)?.fill(&mut bias, ctx.rng)?;
            params.push(bias);
        }
        Ok(())
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let bottom = blobs.bottom(0);
        let axis = self.axis(bottom)?;
        let k = bottom.count_from(axis)?;
        if k != self.k {
            return Err(LayerError::invalid(format!(
                "InnerProduct: input size incompatible with inner product parameters: bottom \
                 shape {} has {k} inputs from axis {axis}, set up for {}",
                bottom.shape_string(),
                self.k
            )));
        }
        let weight = params.get(0);
        if weight.shape() != self.weight_shape() {
            return Err(LayerError::invalid(format!(
                "InnerProduct: incorrect weight shape: expected {:?}, found {}",
                self.weight_shape(),
                weight.shape_string()
            )));
        }
        if self.bias_term && params.get(1).shape() != [self.num_output] {
            return Err(LayerError::invalid(format!(
                "InnerProduct: incorrect bias shape: expected [{}], found {}",
                self.num_output,
                params.get(1).shape_string()
            )));
        }
        self.m = bottom.count_range(0, axis)?;
        let mut top_shape = bottom.shape()[..axis].to_vec();
        top_shape.push(self.num_output);
        blobs.top_mut(0).reshape(&top_shape)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        use Transpose::*;
        let be = ctx.backend;
        let (m, n, k) = (self.m, self.num_output, self.k);
        let (bottom, mut top) = blobs.forward_all()?;
        let mut y = top[0].data_view_mut();
        let tw = if self.transpose { NoTrans } else { Trans };
        let product = Gemm::packed(NoTrans, tw, m, n, k);
        let (x, w) = (bottom[0].data_view(), params.get(0).data_view());
        be.gemm(&product, x, w, y.reborrow())?;
        if self.bias_term {
            let bias = params.get(1).data_view();
            let per_output = self.outputs();
            be.broadcast(
                Binary::Add,
                Broadcast::PerChannel,
                per_output,
                bias,
                Src::InPlace,
                y,
            )?;
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
        use Transpose::*;
        let be = ctx.backend;
        let (m, n, k) = (self.m, self.num_output, self.k);
        let (top, mut bottom) = blobs.backward_all()?;
        let dy = top[0].diff_view();
        if params.propagate_down(0) {
            let x = bottom[0].data_view();
            let dw = params.get_mut(0).diff_view_mut();
            if self.transpose {
                // dW (K x N) += x^T dy
                be.gemm(&Gemm::packed(Trans, NoTrans, k, n, m).beta(1.0), x, dy, dw)?;
            } else {
                // dW (N x K) += dy^T x
                be.gemm(&Gemm::packed(Trans, NoTrans, n, k, m).beta(1.0), dy, x, dw)?;
            }
        }
        if self.bias_term && params.propagate_down(1) {
            let db = params.get_mut(1).diff_view_mut();
            be.sum_per_channel(self.outputs(), 1.0, dy, 1.0, db)?;
        }
        if propagate_down[0] {
            let tw = if self.transpose { Trans } else { NoTrans };
            // dx (M x K) = dy W (dy W^T when transposed)
            let product = Gemm::packed(NoTrans, tw, m, k, n);
            let w = params.get(0).data_view();
            be.gemm(&product, dy, w, bottom[0].diff_view_mut())?;
        }
        Ok(())
    }
}
