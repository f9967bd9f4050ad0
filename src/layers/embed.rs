//! Embed: a lookup table of learned vectors (upstream: src/caffe/layers/embed_layer.cpp).
//!
//! The bottom holds integer indices in `0..input_dim` (any shape, `M` of them); the top is the
//! bottom's shape followed by `num_output` (`N`), with `top[m] = W[index[m]] (+ bias)`. The
//! weight is `input_dim x num_output` (transposed from InnerProduct's, so that a row is one
//! embedding). Indices are read on the host and checked (upstream only checks them in debug
//! builds); backward adds each top row's gradient into the weight row it came from. Indices
//! have no gradient: backward refuses `propagate_down` to the bottom, as upstream does.

use crate::backend::{Axis, Backend, Binary, Broadcast, Src, Views};
use crate::blob::Blob;
use crate::filler::Filler;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The Embed layer.
pub struct EmbedLayer {
    num_output: usize,
    input_dim: usize,
    weight_filler: Filler,
    /// `Some` when `bias_term` is set.
    bias_filler: Option<Filler>,
    /// The weight row of each top row, as the last forward pass read them.
    rows: Vec<usize>,
}

impl EmbedLayer {
    /// Reads and checks `embed_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.embed_param.clone().unwrap_or_default();
        if p.num_output() == 0 {
            return Err(LayerError::invalid(
                "embed_param.num_output must be positive",
            ));
        }
        if p.input_dim() == 0 {
            return Err(LayerError::invalid(
                "embed_param.input_dim must be positive",
            ));
        }
        let weight_filler = Filler::from_param(&p.weight_filler.clone().unwrap_or_default())
            .map_err(|e| LayerError::invalid(format!("embed_param.weight_filler: {e}")))?;
        let bias_filler = if p.bias_term() {
            let bias_filler = Filler::from_param(&p.bias_filler.clone().unwrap_or_default())
                .map_err(|e| LayerError::invalid(format!("embed_param.bias_filler: {e}")))?;
            Some(bias_filler)
        } else {
            None
        };
        Ok(EmbedLayer {
            num_output: p.num_output() as usize,
            input_dim: p.input_dim() as usize,
            weight_filler,
            bias_filler,
            rows: Vec::new(),
        })
    }

    /// The bottom's values as weight rows: each must be an integer in `0..input_dim`.
    fn read_rows<B: Backend>(&self, bottom: &Blob<B>) -> Result<Vec<usize>, LayerError> {
        let k = self.input_dim;
        bottom
            .data_to_vec()?
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if v >= 0.0 && v < k as f32 && v.fract() == 0.0 {
                    Ok(v as usize)
                } else {
                    Err(LayerError::invalid(format!(
                        "Embed bottom 0 element {i} is {v}: not an integer index in 0..{k} \
                         (embed_param.input_dim)"
                    )))
                }
            })
            .collect()
    }

    /// The top as `M x N`: the bias goes to each of the `N` outputs.
    fn outputs(&self) -> Axis {
        Axis::new(self.rows.len(), self.num_output, 1)
    }
}

impl<B: Backend> Layer<B> for EmbedLayer {
    fn layer_type(&self) -> &'static str {
        "Embed"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }
    /// The indices have no gradient, so `force_backward` leaves them alone.
    fn allow_force_backward(&self, _bottom_index: usize) -> bool {
        false
    }

    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let mut weight = Blob::new(ctx.backend, &[self.input_dim, self.num_output])?;
        self.weight_filler.fill(&mut weight, ctx.rng)?;
        params.push(weight);
        if let Some(bias_filler) = &self.bias_filler {
            let mut bias = Blob::new(ctx.backend, &[self.num_output])?;
            bias_filler.fill(&mut bias, ctx.rng)?;
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
        let weight_shape = [self.input_dim, self.num_output];
        if params.get(0).shape() != weight_shape {
            return Err(LayerError::invalid(format!(
                "Embed: incorrect weight shape: expected {weight_shape:?}, found {}",
                params.get(0).shape_string()
            )));
        }
        if self.bias_filler.is_some() && params.get(1).shape() != [self.num_output] {
            return Err(LayerError::invalid(format!(
                "Embed: incorrect bias shape: expected [{}], found {}",
                self.num_output,
                params.get(1).shape_string()
            )));
        }
        let mut shape = blobs.bottom(0).shape().to_vec();
        shape.push(self.num_output);
        blobs.top_mut(0).reshape(&shape)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let n = self.num_output;
        let (bottom, mut top) = blobs.forward_all()?;
        self.rows = self.read_rows(bottom[0])?;
        let weight = params.get(0).data();
        for (m, &row) in self.rows.iter().enumerate() {
            be.copy(
                weight.slice(row * n, n),
                top[0].data_mut().slice_mut(m * n, n),
            )?;
        }
        if self.bias_filler.is_some() {
            let bias = params.get(1).data_view();
            let y = top[0].data_view_mut();
            let add = Binary::Add;
            be.broadcast(
                add,
                Broadcast::PerChannel,
                self.outputs(),
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
        if propagate_down[0] {
            return Err(LayerError::invalid(
                "Embed cannot backpropagate to bottom 0 (the indices)",
            ));
        }
        let be = ctx.backend;
        let n = self.num_output;
        let top = blobs.top(0);
        if params.propagate_down(0) {
            let weight_diff = params.get_mut(0).diff_mut();
            for (m, &row) in self.rows.iter().enumerate() {
                let dy = top.diff().slice(m * n, n);
                be.axpby(1.0.into(), dy, 1.0, weight_diff.slice_mut(row * n, n))?;
            }
        }
        if self.bias_filler.is_some() && params.propagate_down(1) {
            let db = params.get_mut(1).diff_view_mut();
            be.sum_per_channel(self.outputs(), 1.0, top.diff_view(), 1.0, db)?;
        }
        Ok(())
    }
}
