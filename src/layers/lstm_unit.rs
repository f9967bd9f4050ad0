//! LSTMUnit: one time step of an LSTM cell, the building block of the LSTM layer (upstream:
//! src/caffe/layers/lstm_unit_layer.cpp).
//!
//! Bottoms: the previous cell `c_prev` (`1 x N x D`), the gate inputs `x` (`1 x N x 4D`, per
//! instance the pre-activations of the gates in upstream's order i, f, o, g) and the sequence
//! continuation indicators `cont` (`1 x N`). Tops: the cell `c` and the hidden state `h`, both
//! `1 x N x D`:
//!
//! ```text
//! i = sigmoid(x_i)   f = cont sigmoid(x_f)   o = sigmoid(x_o)   g = tanh(x_g)
//! c = f c_prev + i g                         h = o tanh(c)
//! ```
//!
//! so `cont = 0` starts a new sequence. The gates are gathered into four contiguous planes so
//! that every step is one existing element-wise op. `cont` has no gradient (backward refuses
//! it); the forget gate's gradient is upstream's `f (1 - f)` of the masked gate.

use crate::backend::{Activation, Axis, Backend, Binary, Block, Broadcast, Src, Views};
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The gate planes in the activation buffer, in upstream's order within `x`.
const INPUT: usize = 0;
const FORGET: usize = 1;
const OUTPUT: usize = 2;
const CANDIDATE: usize = 3;

/// The LSTMUnit layer.
pub struct LstmUnitLayer<B: Backend> {
    /// `N`, the independent streams.
    streams: usize,
    /// `D`, the cell width.
    hidden: usize,
    /// `4 x N x D`: the gate activations in data, their pre-activation gradients in diff.
    gates: Option<Blob<B>>,
    /// `N x D`: `tanh(c)` in data, the total gradient of `c` in diff.
    tanh_c: Option<Blob<B>>,
    /// `N x D` scratch for products.
    scratch: Option<Blob<B>>,
}

impl<B: Backend> LstmUnitLayer<B> {
    /// LSTMUnit takes no parameters.
    pub fn new(_param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(LstmUnitLayer {
            streams: 0,
            hidden: 0,
            gates: None,
            tanh_c: None,
            scratch: None,
        })
    }

    fn plane(&self) -> usize {
        self.streams * self.hidden
    }

    /// The rows of gate `k` within `x` (one row of `4D` per stream) against its plane.
    fn gate_rows(&self) -> Block {
        Block {
            rows: self.streams,
            cols: self.hidden,
            x_stride: 4 * self.hidden,
            y_stride: self.hidden,
        }
    }

    fn buffers(&mut self) -> Result<Buffers<'_, B>, LayerError> {
        match (&mut self.gates, &mut self.tanh_c, &mut self.scratch) {
            (Some(g), Some(t), Some(s)) => Ok((g, t, s)),
            _ => Err(LayerError::invalid("LSTMUnit: forward before reshape")),
        }
    }
}

/// The gate, `tanh(c)` and product buffers, to use together.
type Buffers<'s, B> = (&'s mut Blob<B>, &'s mut Blob<B>, &'s mut Blob<B>);

/// Checks that `blob` is `1 x streams (x width)`, naming it.
fn check_step_shape<B: Backend>(
    blob: &Blob<B>,
    what: &str,
    want: &[usize],
) -> Result<(), LayerError> {
    if blob.shape() == want {
        Ok(())
    } else {
        Err(LayerError::invalid(format!(
            "LSTMUnit bottom {what} must have shape {want:?}; got {}",
            blob.shape_string()
        )))
    }
}

fn scratch_blob<B: Backend>(
    slot: &mut Option<Blob<B>>,
    be: &B,
    shape: &[usize],
) -> Result<(), LayerError> {
    match slot {
        Some(blob) => blob.reshape(shape)?,
        None => *slot = Some(Blob::new(be, shape)?),
    }
    Ok(())
}

impl<B: Backend> Layer<B> for LstmUnitLayer<B> {
    fn layer_type(&self) -> &'static str {
        "LSTMUnit"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(3, 2)
    }
    /// `cont` has no gradient.
    fn allow_force_backward(&self, bottom_index: usize) -> bool {
        bottom_index != 2
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let c_prev = blobs.bottom(0);
        if c_prev.num_axes() != 3 || c_prev.shape()[0] != 1 {
            return Err(LayerError::invalid(format!(
                "LSTMUnit bottom 0 (c_prev) must have shape 1 x N x D; got {}",
                c_prev.shape_string()
            )));
        }
        let shape = c_prev.shape().to_vec();
        let (n, d) = (shape[1], shape[2]);
        check_step_shape(blobs.bottom(1), "1 (x)", &[1, n, 4 * d])?;
        check_step_shape(blobs.bottom(2), "2 (cont)", &[1, n])?;
        (self.streams, self.hidden) = (n, d);
        blobs.top_mut(0).reshape(&shape)?;
        blobs.top_mut(1).reshape(&shape)?;
        scratch_blob(&mut self.gates, ctx.backend, &[4, n, d])?;
        scratch_blob(&mut self.tanh_c, ctx.backend, &[n, d])?;
        scratch_blob(&mut self.scratch, ctx.backend, &[n, d])?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let (nd, d, rows) = (self.plane(), self.hidden, self.gate_rows());
        let per_stream = Axis::new(1, self.streams, d);
        let (gates, tanh_c, scratch) = self.buffers()?;
        let (bottom, mut top) = blobs.forward_all()?;
        let (c_prev, x, cont) = (bottom[0], bottom[1], bottom[2]);
        for k in 0..4 {
            be.copy_2d(
                &rows,
                x.data().tail(k * d),
                gates.data_mut().slice_mut(k * nd, nd),
            )?;
        }
        let acts = gates.data_mut();
        be.activation_forward(Activation::Sigmoid, Src::InPlace, acts.slice_mut(0, 3 * nd))?;
        let candidate = acts.slice_mut(CANDIDATE * nd, nd);
        be.activation_forward(Activation::Tanh, Src::InPlace, candidate)?;
        let forget = acts.slice_mut(FORGET * nd, nd);
        let mul = Binary::Mul;
        be.broadcast(
            mul,
            Broadcast::PerChannel,
            per_stream,
            cont.data_view(),
            Src::InPlace,
            forget,
        )?;
        let acts = gates.data();
        let plane = |k: usize| acts.slice(k * nd, nd).src();
        let (c_top, h_top) = top.split_at_mut(1);
        let c = &mut c_top[0];
        be.binary(
            mul,
            plane(FORGET),
            c_prev.data_view().src(),
            c.data_view_mut(),
        )?;
        be.binary(mul, plane(INPUT), plane(CANDIDATE), scratch.data_view_mut())?;
        be.axpby(1.0.into(), scratch.data_view(), 1.0, c.data_view_mut())?;
        be.activation_forward(
            Activation::Tanh,
            c.data_view().src(),
            tanh_c.data_view_mut(),
        )?;
        be.binary(
            mul,
            plane(OUTPUT),
            tanh_c.data_view().src(),
            h_top[0].data_view_mut(),
        )?;
        Ok(())
    }

    fn backward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        if propagate_down[2] {
            return Err(LayerError::invalid(
                "LSTMUnit cannot backpropagate to bottom 2 (the sequence continuation indicators)",
            ));
        }
        if !propagate_down[0] && !propagate_down[1] {
            return Ok(());
        }
        let be = ctx.backend;
        let (nd, d) = (self.plane(), self.hidden);
        let rows = Block {
            x_stride: d,
            y_stride: 4 * d,
            ..self.gate_rows()
        };
        let (gates, tanh_c, scratch) = self.buffers()?;
        let (top, mut bottom) = blobs.backward_all()?;
        let (c_prev_blob, rest) = bottom.split_at_mut(1);
        let (c_prev_blob, x_blob) = (&mut c_prev_blob[0], &mut rest[0]);
        let (dc, dh) = (top[0].diff_view(), top[1].diff_view());
        let mul = Binary::Mul;
        // The total gradient of c: its own plus the one through h = o tanh(c).
        be.binary(
            mul,
            dh.src(),
            gates.data().slice(OUTPUT * nd, nd).src(),
            scratch.data_view_mut(),
        )?;
        let (t, dc_total) = tanh_c.data_and_diff_mut();
        be.activation_backward(Activation::Tanh, t, t, scratch.data_view().src(), dc_total)?;
        be.axpby(1.0.into(), dc, 1.0, tanh_c.diff_view_mut())?;
        let dc_total = tanh_c.diff_view();
        if propagate_down[0] {
            let forget = gates.data().slice(FORGET * nd, nd).src();
            be.binary(mul, dc_total.src(), forget, c_prev_blob.diff_view_mut())?;
        }
        if !propagate_down[1] {
            return Ok(());
        }
        let c_prev = c_prev_blob.data_view();
        let (acts, grads) = gates.data_diff_mut();
        let plane = |k: usize| acts.slice(k * nd, nd).src();
        let dc_total = || tanh_c.diff_view().src();
        be.binary(
            mul,
            dc_total(),
            plane(CANDIDATE),
            grads.slice_mut(INPUT * nd, nd),
        )?;
        be.binary(
            mul,
            dc_total(),
            c_prev.src(),
            grads.slice_mut(FORGET * nd, nd),
        )?;
        be.binary(
            mul,
            dh.src(),
            tanh_c.data_view().src(),
            grads.slice_mut(OUTPUT * nd, nd),
        )?;
        be.binary(
            mul,
            dc_total(),
            plane(INPUT),
            grads.slice_mut(CANDIDATE * nd, nd),
        )?;
        let sigmoids = acts.slice(0, 3 * nd);
        let tanhs = acts.slice(CANDIDATE * nd, nd);
        be.activation_backward(
            Activation::Sigmoid,
            sigmoids,
            sigmoids,
            Src::InPlace,
            grads.slice_mut(0, 3 * nd),
        )?;
        let candidate_grad = grads.slice_mut(CANDIDATE * nd, nd);
        be.activation_backward(Activation::Tanh, tanhs, tanhs, Src::InPlace, candidate_grad)?;
        let dx = x_blob.diff_mut();
        for k in 0..4 {
            be.copy_2d(&rows, grads.slice(k * nd, nd), dx.tail_mut(k * d))?;
        }
        Ok(())
    }
}
