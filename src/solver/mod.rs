//! The training loop (upstream: src/caffe/solver.cpp and src/caffe/solvers/sgd_solver.cpp).
//!
//! [`Solver`] builds the train net and the test nets a solver names, then runs upstream's
//! `Solve`: per iteration, clear the parameter diffs, test when due, `iter_size` forward/backward
//! passes, smooth and display the loss, apply the update (learning rate, gradient clipping,
//! normalisation by `iter_size`, weight decay, the update rule, `data -= diff`) and snapshot when
//! due. Its log lines are upstream's, word for word, so Caffe's log parsers read them; they can
//! also be kept in memory ([`Solver::record_log`]).
//!
//! An action source ([`Solver::set_action_source`]: SIGINT/SIGHUP through a
//! [`SignalHandler`], or [`ActionRequests`]) can ask for a snapshot or an early stop, as
//! upstream's `-sigint_effect`/`-sighup_effect`; `rcaffe train` also shows a progress bar when
//! stderr is a terminal.
//!
//! [`train`] and [`test()`] are the `rcaffe train` and `rcaffe test` commands as library calls.

mod commands;
mod error;
mod graph;
pub mod guidance;
mod progress;
pub mod signals;
mod snapshot;
pub mod update_rules;

use std::path::Path;
use std::time::Instant;

use crate::backend::{rng_from_seed, Backend, Rng, Scalar, Src, Views};
use crate::blob::Blob;
use crate::layers::LayerFactory;
use crate::log::cpp_float;
use crate::lr_policy::{LrSchedule, LrState};
use crate::net::{Multipliers, Net};
use crate::proto::caffe::{NetParameter, SolverParameter};
use crate::proto::{print_text, resolve_solver_nets};
pub use commands::{read_train_solver, test, test_on, train, train_on, TrainOptions};
pub use error::{FieldError, Result, SolverError};
pub use progress::{format_duration, format_progress};
pub use signals::{
    ActionRequests, InvalidSignalEffect, SignalEffects, SignalHandler, SolverAction, SIGNAL_EFFECTS,
};
pub use update_rules::{Regularization, UpdateRule, SOLVER_TYPES};

/// The mean outputs of one test pass.
#[derive(Debug, Clone, PartialEq)]
pub struct TestScores {
    /// The iteration the test ran at.
    pub iter: i32,
    /// Which test net.
    pub net_id: usize,
    /// `(output blob name, mean value)` per output element, in upstream's order.
    pub outputs: Vec<(String, f32)>,
    /// The mean loss, when `test_compute_loss` is set.
    pub loss: Option<f32>,
}

/// Sends lines to the `log` facade and optionally keeps them; erases the progress bar, when
/// one is shown, before each line.
#[derive(Debug, Default)]
struct LogSink {
    kept: Option<Vec<String>>,
    progress: Option<progress::Progress>,
}

impl LogSink {
    fn info(&mut self, line: String) {
        if let Some(bar) = &mut self.progress {
            bar.clear();
        }
        log::info!("{line}");
        if let Some(kept) = &mut self.kept {
            kept.push(line);
        }
    }
    fn warn(&mut self, line: String) {
        if let Some(bar) = &mut self.progress {
            bar.clear();
        }
        log::warn!("{line}");
        if let Some(kept) = &mut self.kept {
            kept.push(line);
        }
    }
}

/// A solver: the train net, the test nets, the update rule and its history.
pub struct Solver<B: Backend> {
    param: SolverParameter,
    backend: B,
    net: Net<B>,
    test_nets: Vec<Net<B>>,
    schedule: LrSchedule,
    lr_state: LrState,
    rule: UpdateRule,
    regularization: Regularization,
    iter: i32,
    /// Upstream's `history_`: one blob per learnable parameter, then, for AdaDelta and Adam, a
    /// second set.
    history: Vec<Blob<B>>,
    /// Scratch per learnable parameter for the update rules composed from ops; empty where the
    /// backend fuses them.
    update: Vec<Blob<B>>,
    /// Scratch per learnable parameter for the composed rules and L1 regularization; empty
    /// where neither runs.
    temp: Vec<Blob<B>>,
    /// Each learnable parameter's [`UpdateRule::step_scale`] for the iteration being applied,
    /// written before the update runs (or a recorded one is replayed).
    step_scales: B::Buffer,
    losses: Vec<f32>,
    smoothed_loss: f32,
    iterations_last: i32,
    timer: Instant,
    test_scores: Vec<TestScores>,
    log: LogSink,
    /// Upstream's `action_request_function_`: polled once per iteration and test batch.
    action_source: Option<ActionSource>,
    /// Upstream's `requested_early_exit_`.
    requested_early_exit: bool,
    /// Whole-iteration replay on a device that records work (CUDA graphs).
    graph: graph::IterationGraph,
}

/// A source of requested actions (see [`Solver::set_action_source`]).
pub type ActionSource = Box<dyn FnMut() -> SolverAction + Send>;

/// Whether `iter` is a multiple of a positive `every`.
fn due(every: i32, iter: i32) -> bool {
    every > 0 && iter % every == 0
}

/// The file names of a comma-separated weights list (`-weights a.caffemodel,b.caffemodel`, an
/// entry of the solver's `weights`).
fn weight_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
}

/// Splits upstream's `weights` entries (each a comma-separated list) into file names.
fn weight_files(param: &SolverParameter) -> Vec<String> {
    param
        .weights
        .iter()
        .flat_map(|list| weight_list(list))
        .map(str::to_string)
        .collect()
}

impl<B: Backend> Solver<B> {
    /// Builds the solver `param` describes on `backend`, as upstream's `Solver::Init` (with the
    /// update rule's checks and its history allocated, as `SGDSolver::PreSolve` and the
    /// AdaDelta/Adam pre-solves): nets from [`resolve_solver_nets`] (`origin` is the solver
    /// file, named in errors), weights from the `weights` field, `random_seed` seeding the
    /// nets (the clock when it is negative).
    pub fn new(param: SolverParameter, origin: &Path, backend: &B) -> Result<Self> {
        Self::with_log(param, origin, backend, LogSink::default(), None)
    }

    /// [`Solver::new`] with nets that take layer types from `factory` besides the registry's
    /// (tried first; the Python package's `type: "Python"` layers).
    pub fn new_with_factory(
        param: SolverParameter,
        origin: &Path,
        backend: &B,
        factory: &LayerFactory<B>,
    ) -> Result<Self> {
        Self::with_log(param, origin, backend, LogSink::default(), Some(factory))
    }

    /// [`Solver::new`], keeping every line the solver logs from its construction on (see
    /// [`Solver::take_log`]).
    pub fn new_recording(param: SolverParameter, origin: &Path, backend: &B) -> Result<Self> {
        Self::with_log(
            param,
            origin,
            backend,
            LogSink {
                kept: Some(Vec::new()),
                progress: None,
            },
            None,
        )
    }

    /// The solver fields read before anything is built, with upstream's checks.
    fn check_fields(
        param: &SolverParameter,
    ) -> std::result::Result<(UpdateRule, Regularization, LrSchedule), FieldError> {
        if param.average_loss() < 1 {
            return Err(FieldError::new(
                "average_loss",
                format!("should be at least 1 (it is {})", param.average_loss()),
            ));
        }
        if param.iter_size() < 1 {
            return Err(FieldError::new(
                "iter_size",
                format!("should be at least 1 (it is {})", param.iter_size()),
            ));
        }
        Ok((
            UpdateRule::from_param(param)?,
            Regularization::from_param(param)?,
            LrSchedule::new(param)?,
        ))
    }

    fn with_log(
        param: SolverParameter,
        origin: &Path,
        backend: &B,
        mut log: LogSink,
        factory: Option<&LayerFactory<B>>,
    ) -> Result<Self> {
        log.info(format!(
            "Initializing solver from parameters: \n{}",
            print_text(&param)
        ));
        let (rule, regularization, schedule) =
            Self::check_fields(&param).map_err(|e| e.in_file(origin, &param))?;
        snapshot::check_write_permissions(&param)?;

        let seed = if param.random_seed() >= 0 {
            param.random_seed() as u64
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        };
        let net_rng = |index: u64| -> Rng { rng_from_seed(seed.wrapping_add(index)) };
        let build = |param: &NetParameter, rng: Rng| match factory {
            Some(factory) => Net::new_with_factory(param, backend, rng, factory),
            None => Net::new(param, backend, rng),
        };

        let nets = resolve_solver_nets(&param, origin)?;
        let weights = weight_files(&param);
        let describe = |d: &str| {
            if d.ends_with("_param") {
                format!("specified in {d}.")
            } else {
                format!("from {d}")
            }
        };
        log.info(format!(
            "Creating training net {}",
            describe(&nets.train.description)
        ));
        let mut net =
            build(&nets.train.param, net_rng(0)).map_err(|e| e.placed_in(&nets.train.origin))?;
        for file in &weights {
            log.info(format!("Finetuning from {file}"));
            net.copy_trained_layers_from_file(Path::new(file))?;
        }
        let mut test_nets = Vec::with_capacity(nets.tests.len());
        for (i, source) in nets.tests.iter().enumerate() {
            log.info(format!(
                "Creating test net (#{i}) specified by {}",
                source.description
            ));
            let mut test_net = build(&source.param, net_rng(1 + i as u64))
                .map_err(|e| e.placed_in(&source.origin))?;
            test_net.set_debug_info(param.debug_info());
            for file in &weights {
                log.info(format!("Finetuning from {file}"));
                test_net.copy_trained_layers_from_file(Path::new(file))?;
            }
            test_nets.push(test_net);
        }
        log.info("Solver scaffolding done.".to_string());

        let alloc_like = |blobs: &[Blob<B>]| -> Result<Vec<Blob<B>>> {
            blobs
                .iter()
                .map(|p| Blob::new(backend, p.shape()).map_err(SolverError::from))
                .collect()
        };
        let params = net.learnable_params();
        let mut history = Vec::new();
        for _ in 0..rule.history_sets() {
            history.extend(alloc_like(params)?);
        }
        // Scratch for the update rules composed from ops, and for L1's sign(data); a backend
        // with fused updates needs neither (on a GPU they would double the parameters' memory).
        let composed = !backend.capabilities().fused_updates;
        let update = if composed {
            alloc_like(params)?
        } else {
            Vec::new()
        };
        let temp = if composed || regularization == Regularization::L1 {
            alloc_like(params)?
        } else {
            Vec::new()
        };
        let step_scales = backend.alloc(params.len())?;
        Ok(Self {
            param,
            backend: backend.clone(),
            net,
            test_nets,
            schedule,
            lr_state: LrState::default(),
            rule,
            regularization,
            iter: 0,
            history,
            update,
            temp,
            step_scales,
            losses: Vec::new(),
            smoothed_loss: 0.0,
            iterations_last: 0,
            timer: Instant::now(),
            test_scores: Vec::new(),
            log,
            action_source: None,
            requested_early_exit: false,
            graph: graph::IterationGraph::default(),
        })
    }

    /// Starts or stops keeping the lines the solver logs.
    pub fn record_log(&mut self, on: bool) {
        self.log.kept = on.then(|| self.log.kept.take().unwrap_or_default());
    }

    /// The lines kept since the last call (empty when not recording).
    pub fn take_log(&mut self) -> Vec<String> {
        match &mut self.log.kept {
            Some(kept) => std::mem::take(kept),
            None => Vec::new(),
        }
    }

    /// Upstream's `SetActionFunction`: `source` is asked once per iteration (after the update)
    /// and once per test batch what to do; [`SolverAction::Snapshot`] writes a snapshot and
    /// goes on, [`SolverAction::Stop`] ends training early. With an [`ActionRequests`] `r`:
    /// `solver.set_action_source(move || r.take())`.
    pub fn set_action_source(&mut self, source: impl FnMut() -> SolverAction + Send + 'static) {
        self.action_source = Some(Box::new(source));
    }

    /// Removes the action source (dropping it, and a [`SignalHandler`] it owns).
    pub fn clear_action_source(&mut self) {
        self.action_source = None;
    }

    /// Whether the last [`Solver::solve`] or [`Solver::step`] was stopped by a request.
    pub fn stopped_early(&self) -> bool {
        self.requested_early_exit
    }

    /// Shows a progress bar on stderr while training, when `on` and stderr is a terminal.
    pub fn show_progress(&mut self, on: bool) {
        self.log.progress = if on {
            progress::Progress::if_terminal()
        } else {
            None
        };
    }

    /// Upstream's `GetRequestedAction`.
    fn requested_action(&mut self) -> SolverAction {
        match &mut self.action_source {
            Some(source) => source(),
            None => SolverAction::None,
        }
    }

    /// The solver's parameters.
    pub fn param(&self) -> &SolverParameter {
        &self.param
    }
    /// The update rule.
    pub fn rule(&self) -> &UpdateRule {
        &self.rule
    }
    /// The train net.
    pub fn net(&self) -> &Net<B> {
        &self.net
    }
    /// The train net, writable.
    pub fn net_mut(&mut self) -> &mut Net<B> {
        &mut self.net
    }
    /// The test nets.
    pub fn test_nets(&self) -> &[Net<B>] {
        &self.test_nets
    }
    /// The test nets, writable.
    pub fn test_nets_mut(&mut self) -> &mut [Net<B>] {
        &mut self.test_nets
    }
    /// Copies the train net's weights into test net `id`, as before each test pass (upstream's
    /// test nets share the train net's weights; these hold copies).
    pub fn sync_test_net(&mut self, id: usize) -> Result<()> {
        self.test_nets[id].copy_trained_layers_from_net(&self.net)?;
        Ok(())
    }
    /// The next iteration to run (the number run so far).
    pub fn iter(&self) -> i32 {
        self.iter
    }
    /// The learning-rate state (`current_step`).
    pub fn lr_state(&self) -> LrState {
        self.lr_state
    }
    /// The history blobs, in `.solverstate` order.
    pub fn history(&self) -> &[Blob<B>] {
        &self.history
    }
    /// The smoothed training loss last displayed or computed.
    pub fn smoothed_loss(&self) -> f32 {
        self.smoothed_loss
    }
    /// The results of every test pass so far.
    pub fn test_scores(&self) -> &[TestScores] {
        &self.test_scores
    }

    /// Upstream's `Solve`: restores `resume` if given, runs to `max_iter`, snapshots after
    /// training if asked, displays the final loss and tests when due.
    pub fn solve(&mut self, resume: Option<&Path>) -> Result<()> {
        self.log.info(format!("Solving {}", self.net.name()));
        self.log
            .info(format!("Learning Rate Policy: {}", self.param.lr_policy()));
        // The paper's advice for cyclic policies: epoch length, stepsize range, cycle ends.
        let layers = (0..self.net.num_layers()).map(|i| self.net.layer_param(i));
        let epoch = guidance::epoch_of_layers(layers, self.param.iter_size());
        for line in guidance::cycle_guidance(&self.param, epoch.as_ref()) {
            if line.warning {
                self.log.warn(line.text);
            } else {
                self.log.info(line.text);
            }
        }
        self.requested_early_exit = false;
        if let Some(path) = resume {
            self.log.info(format!(
                "Restoring previous solver status from {}",
                path.display()
            ));
            self.restore(path)?;
        }
        let start_iter = self.iter;
        self.step(self.param.max_iter() - self.iter)?;
        let snapshot_every = self.param.snapshot();
        if self.param.snapshot_after_train() && !due(snapshot_every, self.iter) {
            self.snapshot()?;
        }
        if self.requested_early_exit {
            self.log.info("Optimization stopped early.".to_string());
            return Ok(());
        }
        if due(self.param.display(), self.iter) {
            let loss = self.net.forward()?;
            self.update_smoothed_loss(loss, start_iter, self.param.average_loss());
            self.log.info(format!(
                "Iteration {}, loss = {}",
                self.iter,
                cpp_float(f64::from(self.smoothed_loss))
            ));
        }
        if due(self.param.test_interval(), self.iter) {
            self.test_all()?;
        }
        self.log.info("Optimization Done.".to_string());
        Ok(())
    }

    /// Upstream's `Step`: runs `iters` iterations (none when `iters <= 0`).
    pub fn step(&mut self, iters: i32) -> Result<()> {
        let start_iter = self.iter;
        let stop_iter = self.iter.saturating_add(iters.max(0));
        let average_loss = self.param.average_loss();
        self.losses.clear();
        self.smoothed_loss = 0.0;
        self.timer = Instant::now();
        self.iterations_last = self.iter;
        if let Some(bar) = &mut self.log.progress {
            bar.restart(start_iter);
        }
        while self.iter < stop_iter {
            self.net.clear_param_diffs()?;
            if due(self.param.test_interval(), self.iter)
                && (self.iter > 0 || self.param.test_initialization())
            {
                self.test_all()?;
                if self.requested_early_exit {
                    break;
                }
            }
            let display = due(self.param.display(), self.iter);
            self.net.set_debug_info(display && self.param.debug_info());
            let iter_size = self.param.iter_size();
            // On a device that records work, forward, backward and the update may run as one
            // replayed CUDA graph; the update has then been applied already.
            let recorded = self.graph_iteration(display)?;
            let mut loss = 0.0f32;
            match recorded {
                graph::Outcome::NotRun => {
                    for _ in 0..iter_size {
                        loss += self.net.forward_backward()?;
                    }
                }
                graph::Outcome::ForwardBackward(ran) | graph::Outcome::Replayed(ran) => loss = ran,
            }
            loss /= iter_size as f32;
            self.update_smoothed_loss(loss, start_iter, average_loss);
            if display {
                self.display_train_outputs()?;
            }
            if !loss.is_finite() {
                let lr = self
                    .schedule
                    .rate(self.iter as u32, &mut self.lr_state.clone());
                return Err(SolverError::NonFiniteLoss {
                    iter: self.iter,
                    loss,
                    lr: cpp_float(f64::from(lr)),
                });
            }
            if matches!(recorded, graph::Outcome::Replayed(_)) {
                // The device work is done; the schedule's state, the log and the count remain.
                self.learning_rate_logged();
                self.iter += 1;
            } else {
                self.apply_update()?;
            }
            let request = self.requested_action();
            if due(self.param.snapshot(), self.iter) || request == SolverAction::Snapshot {
                self.snapshot()?;
            }
            if request == SolverAction::Stop {
                self.requested_early_exit = true;
                break;
            }
            let max_iter = self.param.max_iter();
            let smoothed = self.smoothed_loss;
            if let Some(bar) = &mut self.log.progress {
                bar.tick(self.iter, max_iter, smoothed);
            }
        }
        let max_iter = self.param.max_iter();
        let smoothed = self.smoothed_loss;
        if let Some(bar) = &mut self.log.progress {
            bar.finish(self.iter, max_iter, smoothed);
        }
        Ok(())
    }

    fn display_train_outputs(&mut self) -> Result<()> {
        // Upstream's timer counts whole milliseconds.
        let lapse = (self.timer.elapsed().as_millis() as f32) / 1000.0;
        let per_s =
            (self.iter - self.iterations_last) as f32 / if lapse != 0.0 { lapse } else { 1.0 };
        self.log.info(format!(
            "Iteration {} ({} iter/s, {}s/{} iters), loss = {}",
            self.iter,
            cpp_float(f64::from(per_s)),
            cpp_float(f64::from(lapse)),
            self.param.display(),
            cpp_float(f64::from(self.smoothed_loss))
        ));
        self.timer = Instant::now();
        self.iterations_last = self.iter;
        let lines = output_lines(&self.net)?;
        for (k, (name, value, weight)) in lines.into_iter().enumerate() {
            self.log.info(format!(
                "    Train net output #{k}: {name} = {}{}",
                cpp_float(f64::from(value)),
                loss_suffix(weight, value)
            ));
        }
        Ok(())
    }

    /// Upstream's `UpdateSmoothedLoss`: the mean of the last `average_loss` losses.
    fn update_smoothed_loss(&mut self, loss: f32, start_iter: i32, average_loss: i32) {
        let window = average_loss.max(1) as usize;
        if self.losses.len() < window {
            self.losses.push(loss);
            let size = self.losses.len();
            self.smoothed_loss = (self.smoothed_loss * (size - 1) as f32 + loss) / size as f32;
        } else {
            let idx = ((self.iter - start_iter) as usize) % window;
            self.smoothed_loss += (loss - self.losses[idx]) / window as f32;
            self.losses[idx] = loss;
        }
    }

    /// The learning rate of the current iteration (upstream's `GetLearningRate`), advancing the
    /// schedule's state.
    fn learning_rate(&mut self) -> f32 {
        let before = self.lr_state.current_step;
        let rate = self.schedule.rate(self.iter as u32, &mut self.lr_state);
        if self.param.lr_policy() == "multistep" && self.lr_state.current_step != before {
            self.log.info(format!(
                "MultiStep Status: Iteration {}, step = {}",
                self.iter, self.lr_state.current_step
            ));
        }
        rate
    }

    /// Upstream's `SGDSolver::ApplyUpdate`: learning rate, clipping, then per parameter
    /// normalise, regularise and compute the update; then `data -= diff` and the next iteration.
    pub fn apply_update(&mut self) -> Result<()> {
        let rate = self.learning_rate_logged();
        self.update_parameters(rate)?;
        self.iter += 1;
        Ok(())
    }

    /// [`Solver::learning_rate`], with upstream's "Iteration N, lr = x" line when displaying.
    fn learning_rate_logged(&mut self) -> f32 {
        let rate = self.learning_rate();
        if due(self.param.display(), self.iter) {
            self.log.info(format!(
                "Iteration {}, lr = {}",
                self.iter,
                cpp_float(f64::from(rate))
            ));
        }
        rate
    }

    /// The device side of [`Solver::apply_update`] at learning rate `rate`: clipping, then per
    /// parameter normalise, regularise and compute the update, then `data -= diff`.
    fn update_parameters(&mut self, rate: f32) -> Result<()> {
        self.clip_gradients()?;
        self.write_step_scales(rate)?;
        self.update_from_step_scales()
    }

    /// Writes each parameter's step scale for this iteration at learning rate `rate` (upstream's
    /// `local_rate = rate * lr_mult`, for Adam with the bias correction).
    fn write_step_scales(&mut self, rate: f32) -> Result<()> {
        let scales: Vec<f32> = self
            .net
            .param_multipliers()
            .iter()
            .map(|multipliers| self.rule.step_scale(rate * multipliers.lr(), self.iter))
            .collect();
        self.backend
            .upload(&scales, self.step_scales.slice_mut(0, scales.len()))?;
        Ok(())
    }

    /// Per parameter normalise, regularise and compute the update with the step scales
    /// written, then `data -= diff`: device work only, so a CUDA graph can record it.
    fn update_from_step_scales(&mut self) -> Result<()> {
        let count = self.net.learnable_params().len();
        let decay_mults: Vec<f32> = self
            .net
            .param_multipliers()
            .iter()
            .map(Multipliers::decay)
            .collect();
        let weight_decay = self.param.weight_decay();
        let iter_size = self.param.iter_size();
        let (first, second) = self.history.split_at_mut(count);
        let params = self.net.learnable_params_mut();
        for (i, param) in params.iter_mut().enumerate() {
            // Normalize: average the gradients accumulated over iter_size passes.
            if iter_size != 1 {
                let normalizer = Scalar::Value(1.0 / iter_size as f32);
                self.backend
                    .scale(normalizer, Src::InPlace, param.diff_view_mut())?;
            }
            update_rules::regularize(
                &self.backend,
                self.regularization,
                weight_decay * decay_mults[i],
                param,
                self.temp.get_mut(i),
            )?;
            let scratch = match (self.update.get_mut(i), self.temp.get_mut(i)) {
                (Some(update), Some(temp)) => Some(update_rules::Scratch { update, temp }),
                _ => None,
            };
            let bufs = update_rules::UpdateBuffers {
                history: &mut first[i],
                history2: second.get_mut(i),
                scratch,
            };
            update_rules::compute_update_value(
                &self.rule,
                &self.backend,
                param,
                bufs,
                Scalar::At(&self.step_scales, i),
            )?;
        }
        self.net.update()?;
        Ok(())
    }

    /// Upstream's `ClipGradients`: when `clip_gradients >= 0` and the L2 norm of all the
    /// parameters' diffs exceeds it, scales every diff down to that norm.
    fn clip_gradients(&mut self) -> Result<()> {
        let clip = self.param.clip_gradients();
        if clip < 0.0 {
            return Ok(());
        }
        let mut sumsq = 0.0f32;
        for param in self.net.learnable_params() {
            sumsq += param.sumsq_diff()?;
        }
        let norm = sumsq.sqrt();
        if norm > clip {
            let factor = clip / norm;
            self.log.info(format!(
                "Gradient clipping: scaling down gradients (L2 norm {} > {}) by scale factor {}",
                cpp_float(f64::from(norm)),
                cpp_float(f64::from(clip)),
                cpp_float(f64::from(factor))
            ));
            for param in self.net.learnable_params_mut() {
                param.scale_diff(factor)?;
            }
        }
        Ok(())
    }

    /// Upstream's `TestAll`: tests every test net.
    pub fn test_all(&mut self) -> Result<()> {
        for id in 0..self.test_nets.len() {
            if self.requested_early_exit {
                break;
            }
            self.test(id)?;
        }
        Ok(())
    }

    /// Upstream's `Test`: copies the train net's weights into test net `id`, runs `test_iter`
    /// forward passes and logs the mean of each output (and the mean loss with
    /// `test_compute_loss`).
    pub fn test(&mut self, id: usize) -> Result<TestScores> {
        self.log
            .info(format!("Iteration {}, Testing net (#{id})", self.iter));
        let test_iter = self.param.test_iter.get(id).copied().unwrap_or(0);
        let test_net = &mut self.test_nets[id];
        test_net.copy_trained_layers_from_net(&self.net)?;
        let mut loss = 0.0f32;
        let mut scores: Vec<(String, f32, f32)> = Vec::new();
        let mut snapshot_after_test = false;
        let training = (self.iter, self.param.max_iter(), self.smoothed_loss);
        if let Some(bar) = &mut self.log.progress {
            bar.begin_test();
        }
        for i in 0..test_iter {
            if let Some(bar) = &mut self.log.progress {
                bar.test_tick(training, id, i, test_iter);
            }
            // Upstream drains every pending request before each batch.
            loop {
                let request = match &mut self.action_source {
                    Some(source) => source(),
                    None => SolverAction::None,
                };
                match request {
                    SolverAction::None => break,
                    SolverAction::Stop => {
                        self.requested_early_exit = true;
                        break;
                    }
                    // Upstream snapshots here; the test net is borrowed, so the snapshot (of
                    // the train net, unchanged by testing) is taken when the pass ends.
                    SolverAction::Snapshot if snapshot_after_test => break,
                    SolverAction::Snapshot => snapshot_after_test = true,
                }
            }
            if self.requested_early_exit {
                break;
            }
            let iter_loss = test_net.forward()?;
            if self.param.test_compute_loss() {
                loss += iter_loss;
            }
            let lines = output_lines(test_net)?;
            if i == 0 {
                scores = lines;
            } else {
                for (score, (_, value, _)) in scores.iter_mut().zip(lines) {
                    score.1 += value;
                }
            }
        }
        if let Some(bar) = &mut self.log.progress {
            bar.end_test();
        }
        if snapshot_after_test {
            self.snapshot()?;
        }
        let mut result = TestScores {
            iter: self.iter,
            net_id: id,
            outputs: Vec::with_capacity(scores.len()),
            loss: None,
        };
        if self.requested_early_exit {
            self.log.info("Test interrupted.".to_string());
            return Ok(result);
        }
        if self.param.test_compute_loss() {
            loss /= test_iter as f32;
            self.log
                .info(format!("Test loss: {}", cpp_float(f64::from(loss))));
            result.loss = Some(loss);
        }
        for (k, (name, sum, weight)) in scores.into_iter().enumerate() {
            let mean = sum / test_iter as f32;
            self.log.info(format!(
                "    Test net output #{k}: {name} = {}{}",
                cpp_float(f64::from(mean)),
                loss_suffix(weight, mean)
            ));
            result.outputs.push((name, mean));
        }
        self.test_scores.push(result.clone());
        Ok(result)
    }
}

/// `(name, value, loss weight)` for every element of every output blob of `net`.
fn output_lines<B: Backend>(net: &Net<B>) -> Result<Vec<(String, f32, f32)>> {
    let mut out = Vec::new();
    for &id in net.output_blob_ids() {
        let name = net.blob_name(id);
        let weight = net.blob_loss_weight(id);
        for value in net.blobs()[id].data_to_vec()? {
            out.push((name.to_string(), value, weight));
        }
    }
    Ok(out)
}

/// Upstream's " (* w = l loss)" after an output with a loss weight.
fn loss_suffix(weight: f32, value: f32) -> String {
    if weight != 0.0 {
        format!(
            " (* {} = {} loss)",
            cpp_float(f64::from(weight)),
            cpp_float(f64::from(weight * value))
        )
    } else {
        String::new()
    }
}
