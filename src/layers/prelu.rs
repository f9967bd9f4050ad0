//! PReLU: `y = max(x, 0) + a_c min(x, 0)` with a learnable slope `a_c` per channel (axis 1),
//! or one slope for the whole blob with `prelu_param.channel_shared` (upstream:
//! src/caffe/layers/prelu_layer.cpp). The slopes start from `prelu_param.filler`, by default
//! the constant 0.25. Runs in place, keeping a copy of the input for backward as upstream.

use crate::backend::{Axis, Backend, Binary, Broadcast, Src};
use crate::blob::Blob;
use crate::filler::Filler;
use crate::layers::{BlobCounts, Blobs, Context, InOut, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The PReLU layer.
pub struct PReLULayer<B: Backend> {
    channel_shared: bool,
    filler: Filler,
    /// The input, kept when running in place.
    saved: Option<Blob<B>>,
}

impl<B: Backend> PReLULayer<B> {
    /// Reads `prelu_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.prelu_param.clone().unwrap_or_default();
        let filler = match &p.filler {
            Some(f) => Filler::from_param(f)?,
            None => Filler::Constant { value: 0.25 },
        };
        Ok(PReLULayer {
            channel_shared: p.channel_shared(),
            filler,
            saved: None,
        })
    }

    /// The bottom as the PReLU ops see it, `outer x channels x inner`: one slope per axis-1
    /// channel, or one for everything.
    fn channels(&self, bottom: &Blob<B>) -> Result<Axis, LayerError> {
        let shape = bottom.shape();
        if shape.len() < 2 {
            return Err(LayerError::invalid(format!(
                "PReLU needs a bottom with at least 2 axes, got shape {}",
                bottom.shape_string()
            )));
        }
        let inner = bottom.count_from(2)?;
        Ok(if self.channel_shared {
            Axis::new(shape[0], 1, shape[1] * inner)
        } else {
            Axis::new(shape[0], shape[1], inner)
        })
    }
}

impl<B: Backend> Layer<B> for PReLULayer<B> {
    fn layer_type(&self) -> &'static str {
        "PReLU"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }
    fn supports_in_place(&self) -> bool {
        true
    }

    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let channels = self.channels(blobs.bottom(0))?.dim;
        let shape: &[usize] = if self.channel_shared {
            &[]
        } else {
            &[channels]
        };
        let mut slope = Blob::new(ctx.backend, shape)?;
        self.filler.fill(&mut slope, ctx.rng)?;
        params.push(slope);
        Ok(())
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let channels = self.channels(blobs.bottom(0))?.dim;
        let slopes = params.get(0).count();
        if slopes != channels {
            return Err(LayerError::invalid(format!(
                "PReLU has {slopes} slopes but needs {channels} (prelu_param.channel_shared is \
                 {}): the slope blob is inconsistent with the prototxt",
                self.channel_shared
            )));
        }
        let shape = blobs.bottom(0).shape().to_vec();
        if !blobs.is_in_place(0) {
            blobs.top_mut(0).reshape(&shape)?;
        } else {
            match &mut self.saved {
                Some(saved) => saved.reshape(&shape)?,
                None => self.saved = Some(Blob::new(ctx.backend, &shape)?),
            }
        }
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let channels = self.channels(blobs.bottom(0))?;
        let (b, slope) = (ctx.backend, params.get(0).data_view());
        let prelu = |x, y| b.broadcast(Binary::PRelu, Broadcast::PerChannel, channels, slope, x, y);
        match blobs.forward_io(0) {
            InOut::Separate { input, output } => {
                prelu(input.data_view().src(), output.data_view_mut())?;
            }
            InOut::Same(blob) => {
                let saved = self.saved.as_mut().ok_or_else(not_reshaped)?;
                b.copy(blob.data_view(), saved.data_view_mut())?;
                prelu(Src::InPlace, blob.data_view_mut())?;
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
        let channels = self.channels(blobs.bottom(0))?;
        let b = ctx.backend;
        let want_slope = params.propagate_down(0);
        let slope = params.get_mut(0);
        // The slope gradient first: in place, the bottom diff overwrites the top diff.
        match blobs.backward_io(0) {
            InOut::Separate {
                input: top,
                output: bottom,
            } => {
                let (x, dx) = bottom.data_and_diff_mut();
                let dy = top.diff_view();
                if want_slope {
                    b.prelu_slope_grad(channels, x, dy, slope.diff_view_mut())?;
                }
                if propagate_down[0] {
                    b.prelu_backward(channels, slope.data_view(), x, dy.src(), dx)?;
                }
            }
            InOut::Same(blob) => {
                let x = self.saved.as_ref().ok_or_else(not_reshaped)?.data_view();
                if want_slope {
                    b.prelu_slope_grad(channels, x, blob.diff_view(), slope.diff_view_mut())?;
                }
                if propagate_down[0] {
                    let dx = blob.diff_view_mut();
                    b.prelu_backward(channels, slope.data_view(), x, Src::InPlace, dx)?;
                }
            }
        }
        Ok(())
    }
}

fn not_reshaped() -> LayerError {
    LayerError::invalid("in-place PReLU run before reshape")
}
