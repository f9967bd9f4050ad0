//! Dropout (upstream: src/caffe/layers/dropout_layer.cpp). In TRAIN each element is kept with
//! probability `1 - dropout_param.dropout_ratio` and scaled by `1 / (1 - ratio)`; in TEST the
//! layer is the identity. Runs in place.
//!
//! The masks come from a counter-based stream of the layer's own ([`philox`]), keyed from the
//! net's RNG at the first TRAIN pass: drawn in parallel, the same on the CPU and the GPU, and
//! drawn on the device, so a CUDA graph can record the layer.
//!
//! [`philox`]: crate::backend::philox
//!
//! Upstream's `DropoutParameter` has no `scale_train` (that is a fork's field), so scaling at
//! train time is the only mode; this project's schema matches upstream's.

use crate::backend::{philox, Backend, Binary, Src, Views};
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, InOut, Layer, LayerError, Params};
use crate::proto::caffe::{LayerParameter, Phase};
use rand::Rng as _;

/// The Dropout layer.
pub struct DropoutLayer<B: Backend> {
    ratio: f32,
    /// `1 / (1 - ratio)`.
    scale: f32,
    /// The last TRAIN mask, already scaled: each element 0 or `scale`.
    mask: Option<Blob<B>>,
    /// The masks' random stream, created at the first TRAIN pass.
    stream: Option<B::Buffer>,
}

impl<B: Backend> DropoutLayer<B> {
    /// Reads `dropout_param.dropout_ratio` (default 0.5), which must lie in `[0, 1)`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let ratio = param.dropout_param.unwrap_or_default().dropout_ratio();
        if !(0.0..1.0).contains(&ratio) {
            return Err(LayerError::invalid(format!(
                "dropout_param.dropout_ratio must be in [0, 1), got {ratio}"
            )));
        }
        Ok(DropoutLayer {
            ratio,
            scale: (1.0 / (1.0 - f64::from(ratio))) as f32,
            mask: None,
            stream: None,
        })
    }

    fn mask(&self) -> Result<&Blob<B>, LayerError> {
        self.mask
            .as_ref()
            .ok_or_else(|| LayerError::invalid("Dropout run before reshape"))
    }
}

impl<B: Backend> Layer<B> for DropoutLayer<B> {
    fn layer_type(&self) -> &'static str {
        "Dropout"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }
    fn supports_in_place(&self) -> bool {
        true
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let shape = blobs.bottom(0).shape().to_vec();
        if !blobs.is_in_place(0) {
            blobs.top_mut(0).reshape(&shape)?;
        }
        match &mut self.mask {
            Some(mask) => mask.reshape(&shape)?,
            None => self.mask = Some(Blob::new(ctx.backend, &shape)?),
        }
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        if ctx.phase != Phase::Train {
            if let InOut::Separate { input, output } = blobs.forward_io(0) {
                be.copy(input.data_view(), output.data_view_mut())?;
            }
            return Ok(());
        }
        let keep = (1.0 - f64::from(self.ratio)) as f32;
        let mut mask = self
            .mask
            .as_mut()
            .ok_or_else(|| LayerError::invalid("Dropout run before reshape"))?
            .data_view_mut();
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let mut stream = be.alloc(philox::STATE_LEN)?;
                be.upload(&philox::new_state(ctx.rng.next_u64()), stream.whole_mut())?;
                self.stream.insert(stream)
            }
        };
        be.bernoulli_stream(keep, stream.whole_mut(), mask.reborrow())?;
        be.scale(self.scale.into(), Src::InPlace, mask.reborrow())?;
        let mask = mask.as_slice().src();
        match blobs.forward_io(0) {
            InOut::Separate { input, output } => {
                let x = input.data_view().src();
                be.binary(Binary::Mul, x, mask, output.data_view_mut())?
            }
            InOut::Same(blob) => {
                let y = blob.data_view_mut();
                be.binary(Binary::Mul, Src::InPlace, mask, y)?
            }
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
        let be = ctx.backend;
        let train = ctx.phase == Phase::Train;
        let mask = self.mask()?.data_view().src();
        match blobs.backward_io(0) {
            InOut::Separate {
                input: top,
                output: bottom,
            } => {
                let (dy, dx) = (top.diff_view(), bottom.diff_view_mut());
                if train {
                    be.binary(Binary::Mul, dy.src(), mask, dx)?;
                } else {
                    be.copy(dy, dx)?;
                }
            }
            InOut::Same(blob) => {
                if train {
                    let dx = blob.diff_view_mut();
                    be.binary(Binary::Mul, Src::InPlace, mask, dx)?;
                }
            }
        }
        Ok(())
    }
}
