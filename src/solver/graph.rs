//! Whole-iteration replay: on a backend that records work (CUDA graphs, see
//! [`Backend::begin_capture`]), one training iteration's forward pass after the data layers,
//! its backward pass and the update are captured once and replayed on later iterations as a
//! single launch instead of hundreds.
//!
//! * The data layers (the leading layers without bottoms: Data, DummyData, Input, …) run
//!   directly every iteration: they upload the next batch into the device buffers the graph
//!   reads, on the same stream, before the replay.
//! * The first iteration runs directly (it allocates workspaces and settles every blob's
//!   size); the second is captured, then launched.
//! * Replay needs `iter_size: 1`, no gradient clipping, and no `debug_info` on the iteration
//!   (those read values back to the host mid-iteration). Beyond that, the backend refuses, while
//!   capturing, every op that needs the host (a reduction returning a value, a host-side label
//!   check, a host-drawn random fill, an allocation); the first refusal is logged as one info
//!   line, `CUDA graph not used: …`, the iteration finishes directly, and so do all later ones.
//! * A graph bakes in the addresses it touches and its scalar arguments, so what changes from
//!   one iteration to the next is read from device memory instead: the update multiplies by
//!   each parameter's step scale (the learning rate times `lr_mult`, for Adam with the bias
//!   correction), which the host writes into a small buffer before every replay. So every
//!   learning-rate policy and every update rule replays the same graph. A graph is kept with the
//!   data tops' shapes and captured again when they change.
//!
//! A bad label met inside a replay is reported when the replay ends (the kernels flag it in
//! device memory; see the CUDA backend), so unlike the direct path, where the label check comes
//! first, that iteration's update has been applied by then. The run stops with the error.
//!
//! The loss is read from the loss tops after the replay ([`Net::loss`]). So a loss layer must
//! leave its loss on the device: SoftmaxWithLoss (the zoo's classifiers end with it),
//! SigmoidCrossEntropyLoss and EuclideanLoss (the autoencoder's) do; HingeLoss and a TRAIN
//! Accuracy still read back, and a net with one of them runs directly.
//! Dropout draws its masks on the device from a counter-based stream whose counter lives in
//! device memory, so each replay draws new masks.
//!
//! [`Backend::begin_capture`]: crate::backend::Backend::begin_capture
//! [`Net::loss`]: crate::net::Net::loss

use super::{Result, Solver};
use crate::backend::{Backend, CapturedWork};

/// What [`Solver::graph_iteration`] did this iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Outcome {
    /// Nothing: the caller runs forward, backward and the update directly.
    NotRun,
    /// Forward and backward ran directly (a capture was attempted and refused); the update is
    /// still to be applied. Carries the loss.
    ForwardBackward(f32),
    /// Forward, backward and the update ran as a graph; the host side of the update (the
    /// schedule's state, the lr line, the count) remains. Carries the loss.
    Replayed(f32),
}

/// What a graph depends on besides buffer addresses, which stay fixed once every blob has its
/// size: the shapes of the batch.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Key {
    data_shapes: Vec<Vec<usize>>,
}

/// The solver's replay state.
#[derive(Default)]
pub(super) enum IterationGraph {
    /// The backend cannot record, or it was tried once and refused: always run directly.
    Off,
    /// Nothing run yet: the first iteration runs directly, as a warm-up.
    #[default]
    Untried,
    /// The warm-up iteration ran; the next one is captured.
    Warm,
    /// A captured iteration, its key and how many iterations it has run.
    Ready {
        work: Box<dyn CapturedWork>,
        key: Key,
        uses: u32,
    },
}

impl<B: Backend> Solver<B> {
    /// Runs this iteration's forward, backward and update as a CUDA graph when the backend
    /// and the net allow it (see the [module documentation](self)); `display` says whether
    /// this iteration displays (its `debug_info` lines read values back to the host).
    pub(super) fn graph_iteration(&mut self, display: bool) -> Result<Outcome> {
        match self.graph {
            IterationGraph::Off => return Ok(Outcome::NotRun),
            IterationGraph::Untried => {
                self.graph = if self.backend.capabilities().capture {
                    IterationGraph::Warm
                } else {
                    IterationGraph::Off
                };
                return Ok(Outcome::NotRun);
            }
            IterationGraph::Warm | IterationGraph::Ready { .. } => {}
        }
        if let Some(reason) = self.graph_blocker() {
            self.log
                .info(format!("CUDA graph not used: {reason}; running directly"));
            self.graph = IterationGraph::Off;
            return Ok(Outcome::NotRun);
        }
        if display && self.param.debug_info() {
            return Ok(Outcome::NotRun);
        }

        // The data layers run directly: they upload this iteration's batch.
        let inputs = (0..self.net.num_layers())
            .take_while(|&i| self.net.bottom_ids(i).is_empty())
            .count();
        if inputs > 0 {
            self.net.forward_to(inputs - 1)?;
        }
        if inputs == self.net.num_layers() {
            // Nothing to record: a net of data layers only.
            self.graph = IterationGraph::Off;
            self.net.backward()?;
            return Ok(Outcome::ForwardBackward(self.net.loss()?));
        }
        // The update reads this iteration's rate from the step scales, written before the
        // replay (or the capture) on the same stream. The rate is computed without advancing
        // the schedule's state or logging: the update's host side does both afterwards.
        let rate = self
            .schedule
            .rate(self.iter as u32, &mut self.lr_state.clone());
        self.write_step_scales(rate)?;
        let key = Key {
            data_shapes: (0..inputs)
                .flat_map(|i| self.net.top_ids(i).to_vec())
                .map(|id| self.net.blobs()[id].shape().to_vec())
                .collect(),
        };

        if let IterationGraph::Ready {
            work,
            key: recorded,
            uses,
        } = &mut self.graph
        {
            if *recorded == key {
                work.replay()?;
                *uses += 1;
                return Ok(Outcome::Replayed(self.net.loss()?));
            }
            if *uses <= 1 {
                self.log.info(
                    "CUDA graph not used: the data's shapes change every iteration, so a graph \
                     would be captured for every iteration; running directly"
                        .to_string(),
                );
                self.graph = IterationGraph::Off;
                return self.finish_directly(inputs);
            }
        }

        // Capture the rest of the iteration, then run it.
        if !self.backend.begin_capture()? {
            self.graph = IterationGraph::Off;
            return self.finish_directly(inputs);
        }
        let recorded = self.record_rest(inputs);
        let ended = self.backend.end_capture();
        match (recorded, ended) {
            (Ok(()), Ok(Some(mut work))) => {
                work.replay()?;
                self.log.info(format!(
                    "CUDA graph: iteration {} captured ({} layers after the data layers, \
                     backward and update); replaying it from now on",
                    self.iter,
                    self.net.num_layers() - inputs
                ));
                self.graph = IterationGraph::Ready { work, key, uses: 1 };
                Ok(Outcome::Replayed(self.net.loss()?))
            }
            (Err(refused), _) => {
                self.log
                    .info(format!("CUDA graph not used: {refused}; running directly"));
                self.graph = IterationGraph::Off;
                self.finish_directly(inputs)
            }
            (Ok(()), Err(failed)) => {
                self.log.info(format!(
                    "CUDA graph not used: the capture failed: {failed}; running directly"
                ));
                self.graph = IterationGraph::Off;
                self.finish_directly(inputs)
            }
            (Ok(()), Ok(None)) => {
                self.graph = IterationGraph::Off;
                self.finish_directly(inputs)
            }
        }
    }

    /// What rules replay out for the whole run, if anything.
    fn graph_blocker(&self) -> Option<String> {
        if self.param.iter_size() != 1 {
            return Some(format!(
                "iter_size is {} (the gradients of several passes are accumulated on the host's \
                 schedule)",
                self.param.iter_size()
            ));
        }
        if self.param.clip_gradients() >= 0.0 {
            return Some(
                "clip_gradients reads the gradients' norm back to the host every iteration"
                    .to_string(),
            );
        }
        None
    }

    /// The device work of the iteration after the data layers: what a capture records.
    fn record_rest(&mut self, inputs: usize) -> Result<()> {
        self.net.forward_from_on_device(inputs)?;
        self.net.backward()?;
        self.update_from_step_scales()
    }

    /// Forward (after the data layers, which ran) and backward, directly.
    fn finish_directly(&mut self, inputs: usize) -> Result<Outcome> {
        let loss = self.net.forward_from(inputs)?;
        self.net.backward()?;
        Ok(Outcome::ForwardBackward(loss))
    }
}
