//! RNN and LSTM: recurrent layers run as an unrolled net (upstream:
//! src/caffe/layers/recurrent_layer.cpp, rnn_layer.cpp, lstm_layer.cpp).
//!
//! Bottoms: `x` (`T x N x ...`: `T` time steps of `N` independent streams), `cont` (`T x N`,
//! 0 where a sequence starts), optionally `x_static` (`N x ...`, the same input at every step)
//! and, with `recurrent_param.expose_hidden`, the initial state (`h_0`, and `c_0` for LSTM,
//! each `1 x N x num_output`). Tops: the output (`T x N x num_output`) and, with
//! `expose_hidden`, the final state. Without `expose_hidden` the final state of one pass is the
//! initial state of the next, as upstream.
//!
//! At setup the layer builds upstream's unrolled net ([`unroll`]) with our own [`Net`], in the
//! layer's phase. Its parameters are the unrolled net's shared parameters, in upstream's order
//! and shapes (RNN: `W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o`; LSTM: `W_xc, b_c,
//! [W_xc_static], W_hc`), so upstream's .caffemodel files load. The outer net owns them (the
//! solver updates them, nets share them); each pass copies them into the unrolled net and adds
//! its gradients back. Unlike upstream, the initial state's gradient reaches exposed bottoms;
//! as upstream, the final-state tops take no gradient and `cont` has none (backward refuses it).

pub mod unroll;

use rand::Rng as _;

use crate::backend::{rng_from_seed, Backend};
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::net::Net;
use crate::proto::caffe::{LayerParameter, RecurrentParameter};
use unroll::{Cell, Plan};

/// The RNN layer.
pub type RnnLayer<B> = RecurrentLayer<B, false>;
/// The LSTM layer.
pub type LstmLayer<B> = RecurrentLayer<B, true>;

/// A recurrent layer: an LSTM when `LSTM`, else an RNN.
pub struct RecurrentLayer<B: Backend, const LSTM: bool> {
    cell: Cell,
    param: RecurrentParameter,
    name: String,
    unrolled: Option<Unrolled<B>>,
}

impl<B: Backend> RnnLayer<B> {
    /// Reads and checks `recurrent_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        Self::with_cell(param, Cell::Rnn)
    }
}

impl<B: Backend> LstmLayer<B> {
    /// Reads and checks `recurrent_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        Self::with_cell(param, Cell::Lstm)
    }
}

/// The unrolled net and where its blobs are.
struct Unrolled<B: Backend> {
    net: Net<B>,
    /// The last layer to run (the pseudo-losses follow it).
    last_layer: usize,
    steps: usize,
    static_input: bool,
    state_outputs: Vec<String>,
}

fn net_error(e: impl std::fmt::Display) -> LayerError {
    LayerError::invalid(format!("unrolled net: {e}"))
}

/// Copies `from` (data or diff as `diff` says) into `to`'s data or diff, as `into_diff` says;
/// both must have the same count.
fn copy<B: Backend>(
    be: &B,
    from: &Blob<B>,
    diff: bool,
    to: &mut Blob<B>,
    into_diff: bool,
) -> Result<(), LayerError> {
    let x = if diff {
        from.diff_view()
    } else {
        from.data_view()
    };
    let y = if into_diff {
        to.diff_view_mut()
    } else {
        to.data_view_mut()
    };
    be.copy(x, y)?;
    Ok(())
}

/// The bottom index of the first exposed state input: after `x`, `cont` and `x_static`.
fn first_state_bottom(static_input: bool) -> usize {
    2 + usize::from(static_input)
}

impl<B: Backend> Unrolled<B> {
    fn blob(&mut self, name: &str) -> Result<&mut Blob<B>, LayerError> {
        self.net
            .blob_by_name_mut(name)
            .ok_or_else(|| net_error(format!("no blob '{name}'")))
    }
}

impl<B: Backend, const LSTM: bool> RecurrentLayer<B, LSTM> {
    fn with_cell(param: &LayerParameter, cell: Cell) -> Result<Self, LayerError> {
        let p = param.recurrent_param.clone().unwrap_or_default();
        if p.num_output() == 0 {
            return Err(LayerError::invalid(
                "recurrent_param.num_output must be positive",
            ));
        }
        // The LSTM's gate inputs are 4 * num_output wide, built in u32 like the field.
        if cell == Cell::Lstm && p.num_output() > u32::MAX / 4 {
            return Err(LayerError::invalid(format!(
                "recurrent_param.num_output {} is too large for LSTM (its 4 gates must fit in \
                 {} outputs)",
                p.num_output(),
                u32::MAX
            )));
        }
        Ok(RecurrentLayer {
            cell,
            param: p,
            name: param.name().to_string(),
            unrolled: None,
        })
    }

    fn exposed(&self) -> usize {
        if self.param.expose_hidden() {
            self.cell.state_inputs().len()
        } else {
            0
        }
    }

    fn unrolled(&mut self) -> Result<&mut Unrolled<B>, LayerError> {
        self.unrolled
            .as_mut()
            .ok_or_else(|| LayerError::invalid("recurrent layer run before setup"))
    }

    /// Checks `x` and `cont` against each other (and `T` once set up): returns `(T, N)`.
    fn check_sequence(blobs: &Blobs<'_, B>) -> Result<(usize, usize), LayerError> {
        let (x, cont) = (blobs.bottom(0), blobs.bottom(1));
        if x.num_axes() < 2 {
            return Err(LayerError::invalid(format!(
                "bottom 0 (x) must have at least 2 axes (time steps, streams, ...); got {}",
                x.shape_string()
            )));
        }
        let (steps, streams) = (x.shape()[0], x.shape()[1]);
        if cont.shape() != [steps, streams] {
            return Err(LayerError::invalid(format!(
                "bottom 1 (cont) must have shape [{steps}, {streams}] (time steps, streams of \
                 bottom 0); got {}",
                cont.shape_string()
            )));
        }
        Ok((steps, streams))
    }
}

impl<B: Backend, const LSTM: bool> Layer<B> for RecurrentLayer<B, LSTM> {
    fn layer_type(&self) -> &'static str {
        match self.cell {
            Cell::Rnn => "RNN",
            Cell::Lstm => "LSTM",
        }
    }
    fn counts(&self) -> BlobCounts {
        let least = 2 + self.exposed();
        BlobCounts::new(
            Count::Range(least, least + 1),
            Count::Exactly(1 + self.exposed()),
        )
    }
    /// `cont` has no gradient.
    fn allow_force_backward(&self, bottom_index: usize) -> bool {
        bottom_index != 1
    }

    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let (steps, streams) = Self::check_sequence(blobs)?;
        let static_input = blobs.num_bottom() > 2 + self.exposed();
        let static_shape = if static_input {
            let shape = blobs.bottom(2).shape().to_vec();
            if shape.first() != Some(&streams) {
                return Err(LayerError::invalid(format!(
                    "bottom 2 (x_static) must have the {streams} streams of bottom 0 as its \
                     first axis; got shape {}",
                    blobs.bottom(2).shape_string()
                )));
            }
            Some(shape)
        } else {
            None
        };
        let plan = Plan {
            cell: self.cell,
            param: &self.param,
            layer_name: &self.name,
            phase: ctx.phase,
            x_shape: blobs.bottom(0).shape(),
            cont_shape: blobs.bottom(1).shape(),
            static_shape: static_shape.as_deref(),
            expose_hidden: self.param.expose_hidden(),
        };
        let (net_param, pseudo_loss) = unroll::unrolled_net(&plan)?;
        let rng = rng_from_seed(ctx.rng.next_u64());
        let mut net = Net::new(&net_param, ctx.backend, rng).map_err(net_error)?;
        net.set_debug_info(self.param.debug_info());
        // Counted in the built net: it has inserted Split layers.
        let last_layer = net
            .layer_index(&pseudo_loss)
            .and_then(|i| i.checked_sub(1))
            .ok_or_else(|| net_error(format!("no layer before '{pseudo_loss}'")))?;
        for blob in net.learnable_params() {
            let mut own = Blob::new(ctx.backend, blob.shape())?;
            copy(ctx.backend, blob, false, &mut own, false)?;
            params.push(own);
        }
        let state_outputs = self.cell.state_outputs(steps);
        let mut unrolled = Unrolled {
            net,
            last_layer,
            steps,
            static_input,
            state_outputs,
        };
        // The state carried into the first pass is 0, and no gradient crosses passes.
        for name in unrolled.state_outputs.clone() {
            let blob = unrolled.blob(&name)?;
            ctx.backend.fill(0.0, blob.data_view_mut())?;
            ctx.backend.fill(0.0, blob.diff_view_mut())?;
        }
        self.unrolled = Some(unrolled);
        Ok(())
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (steps, streams) = Self::check_sequence(blobs)?;
        let cell = self.cell;
        let state_shape = [1, streams, self.param.num_output() as usize];
        let exposed = self.exposed();
        let first_state = first_state_bottom(self.unrolled()?.static_input);
        let u = self.unrolled()?;
        if steps != u.steps {
            return Err(LayerError::invalid(format!(
                "bottom 0 (x) has {steps} time steps; the layer was set up for {}",
                u.steps
            )));
        }
        let mut inputs = vec![("x", 0), ("cont", 1)];
        if u.static_input {
            inputs.push(("x_static", 2));
        }
        for (name, i) in inputs {
            u.blob(name)?.reshape(blobs.bottom(i).shape())?;
        }
        for (k, name) in cell.state_inputs().iter().enumerate() {
            u.blob(name)?.reshape(&state_shape)?;
            if k < exposed && blobs.bottom(first_state + k).shape() != state_shape {
                return Err(LayerError::invalid(format!(
                    "bottom {} ({name}) must have shape {state_shape:?}; got {}",
                    first_state + k,
                    blobs.bottom(first_state + k).shape_string()
                )));
            }
        }
        u.net.reshape().map_err(net_error)?;
        let output_shape = u.blob(cell.output())?.shape().to_vec();
        blobs.top_mut(0).reshape(&output_shape)?;
        for k in 0..exposed {
            blobs.top_mut(1 + k).reshape(&state_shape)?;
        }
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let cell = self.cell;
        let exposed = self.exposed();
        let first_state = first_state_bottom(self.unrolled()?.static_input);
        let u = self.unrolled()?;
        for (k, inner) in u.net.learnable_params_mut().iter_mut().enumerate() {
            copy(be, params.get(k), false, inner, false)?;
        }
        let mut inputs = vec![("x", 0), ("cont", 1)];
        if u.static_input {
            inputs.push(("x_static", 2));
        }
        for (name, i) in inputs {
            copy(be, blobs.bottom(i), false, u.blob(name)?, false)?;
        }
        let state_outputs = u.state_outputs.clone();
        for (k, (input, output)) in cell.state_inputs().iter().zip(&state_outputs).enumerate() {
            if k < exposed {
                copy(
                    be,
                    blobs.bottom(first_state + k),
                    false,
                    u.blob(input)?,
                    false,
                )?;
            } else {
                let last = u.blob(output)?.data_to_vec()?;
                u.blob(input)?.set_data(&last)?;
            }
        }
        u.net.forward_to(u.last_layer).map_err(net_error)?;
        copy(be, u.blob(cell.output())?, false, blobs.top_mut(0), false)?;
        for (k, output) in state_outputs.iter().take(exposed).enumerate() {
            copy(be, u.blob(output)?, false, blobs.top_mut(1 + k), false)?;
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
        if propagate_down[1] {
            return Err(LayerError::invalid(format!(
                "{} cannot backpropagate to bottom 1 (the sequence continuation indicators)",
                Layer::<B>::layer_type(self)
            )));
        }
        let be = ctx.backend;
        let cell = self.cell;
        let exposed = self.exposed();
        let first_state = first_state_bottom(self.unrolled()?.static_input);
        let u = self.unrolled()?;
        u.net.clear_param_diffs().map_err(net_error)?;
        copy(be, blobs.top(0), true, u.blob(cell.output())?, true)?;
        u.net.backward_from_to(u.last_layer, 0).map_err(net_error)?;
        for (k, inner) in u.net.learnable_params().iter().enumerate() {
            if params.propagate_down(k) {
                be.axpby(
                    1.0.into(),
                    inner.diff_view(),
                    1.0,
                    params.get_mut(k).diff_view_mut(),
                )?;
            }
        }
        let mut inputs = vec![("x", 0)];
        if u.static_input {
            inputs.push(("x_static", 2));
        }
        for (k, name) in cell.state_inputs().iter().take(exposed).enumerate() {
            inputs.push((*name, first_state + k));
        }
        for (name, i) in inputs {
            if propagate_down[i] {
                copy(be, u.blob(name)?, true, blobs.bottom_mut(i), true)?;
            }
        }
        Ok(())
    }
}
