//! `rcaffe train` and `rcaffe test` as library calls.

use std::path::{Path, PathBuf};

use super::{
    loss_suffix, output_lines, weight_list, ActionRequests, Result, SignalEffects, SignalHandler,
    Solver, SolverAction, SolverError,
};
use crate::backend::{rng_from_seed, Backend, CpuBackend};
use crate::log::cpp_float;
use crate::net::Net;
use crate::proto::caffe::solver_parameter::SolverMode;
use crate::proto::caffe::{NetState, Phase, SolverParameter};

/// What `rcaffe train` takes besides the solver file (upstream's `caffe train` flags).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// `-weights a.caffemodel,b.caffemodel`: replaces the solver's `weights` field.
    pub weights: Option<String>,
    /// `-snapshot x.solverstate`: resume from it (not together with `weights`).
    pub snapshot: Option<PathBuf>,
    /// Overrides the solver's `max_iter`.
    pub max_iter: Option<i32>,
    /// Overrides the solver's `display`.
    pub display: Option<i32>,
    /// Overrides the solver's `test_interval`.
    pub test_interval: Option<i32>,
    /// `-level`: the train net's state level.
    pub level: i32,
    /// `-stage`: stages added to the train net's state.
    pub stages: Vec<String>,
    /// `-sigint_effect`/`-sighup_effect`: with `Some`, SIGINT and SIGHUP are caught for the run
    /// and do what it says (`rcaffe train` passes upstream's defaults: SIGINT stops, SIGHUP
    /// snapshots); with `None` (the library default) signals are left alone.
    pub signal_effects: Option<SignalEffects>,
    /// Actions requested from elsewhere (another thread, a test), polled with the signals.
    pub actions: Option<ActionRequests>,
    /// Show a progress bar on stderr when it is a terminal (`rcaffe train` sets it).
    pub progress: bool,
}

/// `rcaffe train` on the CPU: reads the solver file, builds the solver, restores or finetunes
/// as asked and trains to `max_iter`, logging as upstream's `caffe train`. Returns the solver,
/// so that a caller can read the final weights or test scores. (`rcaffe train` itself picks the
/// device from `-gpu` and `solver_mode`, then calls [`read_train_solver`] and [`train_on`].)
pub fn train(solver_path: &Path, options: &TrainOptions) -> Result<Solver<CpuBackend>> {
    let param = read_train_solver(solver_path, options)?;
    if param.solver_mode.is_some() && param.solver_mode() == SolverMode::Gpu {
        log::warn!(
            "solver_mode: GPU requested, but solver::train runs on the CPU (`rcaffe train` and \
             solver::train_on use a GPU); using the CPU"
        );
    }
    log::info!("Use CPU.");
    train_on(param, solver_path, options, &CpuBackend::default())
}

/// The solver file `rcaffe train` trains with: `solver_path` read, with `options`' level,
/// stages, overrides, weights and snapshot applied (each override logged). The solver's
/// `solver_mode` and `device_id` are left for the caller to act on.
pub fn read_train_solver(solver_path: &Path, options: &TrainOptions) -> Result<SolverParameter> {
    if options.snapshot.is_some() && options.weights.is_some() {
        return Err(SolverError::Config(
            "Give a snapshot to resume training or weights to finetune but not both.".to_string(),
        ));
    }
    let mut param = crate::proto::read_solver(solver_path)?;
    let train_state = param.train_state.get_or_insert_with(NetState::default);
    train_state.level = Some(options.level);
    train_state.stage.extend(options.stages.iter().cloned());
    // Overrides let a user smoke-test a zoo solver without editing it; the log says so.
    if let Some(max_iter) = options.max_iter {
        log::info!("Overriding max_iter: {} -> {max_iter}", param.max_iter());
        param.max_iter = Some(max_iter);
    }
    if let Some(display) = options.display {
        log::info!("Overriding display: {} -> {display}", param.display());
        param.display = Some(display);
    }
    if let Some(test_interval) = options.test_interval {
        log::info!(
            "Overriding test_interval: {} -> {test_interval}",
            param.test_interval()
        );
        param.test_interval = Some(test_interval);
    }
    if options.snapshot.is_some() {
        param.weights.clear();
    } else if let Some(weights) = &options.weights {
        param.weights = vec![weights.clone()];
    }
    Ok(param)
}

/// [`train`] on `backend`, from a solver [`read_train_solver`] returned (`solver_path` is where
/// it came from, for the paths inside it and for errors).
pub fn train_on<B: Backend>(
    param: SolverParameter,
    solver_path: &Path,
    options: &TrainOptions,
    backend: &B,
) -> Result<Solver<B>> {
    let mut solver = Solver::new(param, solver_path, backend)?;
    let handler = match options.signal_effects {
        Some(effects) => Some(SignalHandler::new(effects).map_err(SolverError::Signals)?),
        None => None,
    };
    let requests = options.actions.clone();
    if handler.is_some() || requests.is_some() {
        solver.set_action_source(move || {
            let from_signal = handler.as_ref().map_or(SolverAction::None, |h| h.check());
            if from_signal != SolverAction::None {
                return from_signal;
            }
            requests
                .as_ref()
                .map_or(SolverAction::None, ActionRequests::take)
        });
    }
    solver.show_progress(options.progress);
    if let Some(snapshot) = &options.snapshot {
        log::info!("Resuming from {}", snapshot.display());
        solver.restore(snapshot)?;
    }
    log::info!("Starting Optimization");
    let solved = solver.solve(None);
    // The signal flags go with the source; signal-hook keeps its handler installed, so from
    // here on SIGINT/SIGHUP are ignored until the process ends (`rcaffe train` ends next).
    solver.clear_action_source();
    solver.show_progress(false);
    solved?;
    log::info!("Optimization Done.");
    Ok(solver)
}

/// `rcaffe test`: builds `model` in the TEST phase on the CPU, loads `weights` (a
/// comma-separated list, refused when it names no file, as upstream: random weights score
/// nothing) and runs `iterations` forward passes, logging each batch's outputs and their means
/// as upstream's `caffe test`. Returns `(output name, mean)` per output element and the mean
/// loss.
pub fn test(
    model: &Path,
    weights: &str,
    iterations: i32,
    level: i32,
    stages: &[String],
) -> Result<(Vec<(String, f32)>, f32)> {
    log::info!("Use CPU.");
    test_on(
        &CpuBackend::default(),
        model,
        weights,
        iterations,
        level,
        stages,
    )
}

/// [`test()`] on `backend`.
pub fn test_on<B: Backend>(
    backend: &B,
    model: &Path,
    weights: &str,
    iterations: i32,
    level: i32,
    stages: &[String],
) -> Result<(Vec<(String, f32)>, f32)> {
    let weight_files: Vec<&str> = weight_list(weights).collect();
    if weight_files.is_empty() {
        return Err(SolverError::NoWeights);
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut net = Net::from_file(
        model,
        Phase::Test,
        level,
        stages,
        backend,
        rng_from_seed(seed),
    )?;
    for file in weight_files {
        net.copy_trained_layers_from_file(Path::new(file))?;
    }
    log::info!("Running for {iterations} iterations.");
    let mut sums: Vec<(String, f32, f32)> = Vec::new();
    let mut loss = 0.0f32;
    for i in 0..iterations {
        let iter_loss = net.forward()?;
        loss += iter_loss;
        let lines = output_lines(&net)?;
        for (name, value, _) in &lines {
            log::info!("Batch {i}, {name} = {}", cpp_float(f64::from(*value)));
        }
        if i == 0 {
            sums = lines;
        } else {
            for (sum, (_, value, _)) in sums.iter_mut().zip(lines) {
                sum.1 += value;
            }
        }
    }
    loss /= iterations.max(1) as f32;
    log::info!("Loss: {}", cpp_float(f64::from(loss)));
    let mut means = Vec::with_capacity(sums.len());
    for (name, sum, weight) in sums {
        let mean = sum / iterations.max(1) as f32;
        log::info!(
            "{name} = {}{}",
            cpp_float(f64::from(mean)),
            loss_suffix(weight, mean)
        );
        means.push((name, mean));
    }
    Ok((means, loss))
}
