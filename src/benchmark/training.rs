//! `rcaffe time -solver`: whole training iterations (forward, backward and the update) as
//! `rcaffe train` runs them, timed end to end.
//!
//! Upstream's `caffe time` times the forward and backward passes layer by layer, synchronising
//! after each layer; that is the table to read beside upstream's, but it is not what a training
//! iteration costs: it leaves out the update and, on a GPU, adds a wait per layer and keeps the
//! CUDA graph the solver replays from running. This times the solver's own iterations instead.

use super::milliseconds;
use crate::backend::Backend;
use crate::data::prefetch::LoadStats;
use crate::proto::caffe::SolverParameter;
use crate::solver::{Result, Solver, SolverError};
use std::time::{Duration, Instant};

/// Iterations run before the timing starts: in the first, allocations settle and the prefetch
/// threads fill their queues; on a device that records work the second is captured as a CUDA
/// graph, which the timed iterations replay.
pub const WARMUP_ITERATIONS: i32 = 2;

/// What [`time_training`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingTiming {
    /// Timed iterations.
    pub iterations: u32,
    /// The untimed warm-up iterations together.
    pub warmup: Duration,
    /// All the timed iterations together, up to the device finishing the last.
    pub total: Duration,
    /// The prefetching data layers' loading times over the timed iterations, summed.
    pub data_load: LoadStats,
}

impl TrainingTiming {
    /// The average timed iteration.
    pub fn average(&self) -> Duration {
        self.total / self.iterations.max(1)
    }
}

/// `param` with everything but training turned off, for timing: no test nets, no display, no
/// snapshots. The learning-rate policy, update rule and train net stay as they are.
pub fn training_only(mut param: SolverParameter) -> SolverParameter {
    param.test_net.clear();
    param.test_net_param.clear();
    param.test_state.clear();
    param.test_iter.clear();
    param.test_interval = Some(0);
    param.test_initialization = Some(false);
    param.display = Some(0);
    param.snapshot = Some(0);
    param.snapshot_after_train = Some(false);
    param.debug_info = Some(false);
    param
}

/// Runs [`WARMUP_ITERATIONS`] untimed iterations of `solver`, then `iterations` timed ones (at
/// least 1), logging the average. The solver should be built from [`training_only`]'s
/// parameters, so that no test pass or snapshot falls inside the timing.
pub fn time_training<B: Backend>(
    solver: &mut Solver<B>,
    iterations: u32,
) -> Result<TrainingTiming> {
    let iterations = iterations.clamp(1, (i32::MAX - WARMUP_ITERATIONS) as u32);
    let last = WARMUP_ITERATIONS + iterations as i32;
    let param = solver.param();
    if param.lr_policy() == "poly" && last > param.max_iter() {
        // Upstream's poly rate is NaN past max_iter, which would stop the run as a diverged one.
        return Err(SolverError::Config(format!(
            "timing runs {last} iterations, past max_iter ({}), where lr_policy \"poly\" has no \
             rate: lower -iterations or raise max_iter",
            param.max_iter()
        )));
    }
    let backend = solver.net().backend().clone();
    log::info!("Timing training of {}", solver.net().name());
    log::info!(
        "{WARMUP_ITERATIONS} untimed iterations, then {iterations} timed: forward, backward and \
         the {} update, as `rcaffe train` runs them.",
        solver.rule().type_name()
    );
    let start = Instant::now();
    solver.step(WARMUP_ITERATIONS)?;
    backend.synchronize()?;
    let warmup = start.elapsed();
    let load_before = data_load(solver);
    let start = Instant::now();
    solver.step(iterations as i32)?;
    backend.synchronize()?;
    let timing = TrainingTiming {
        iterations,
        warmup,
        total: start.elapsed(),
        data_load: data_load(solver).since(&load_before),
    };
    log::info!("Warm-up: {} ms.", milliseconds(timing.warmup));
    if timing.data_load.batches > 0 {
        let per_iteration = |d: Duration| milliseconds(d / iterations);
        log::info!(
            "Data loading per iteration: {} ms in the prefetch threads, forward waited {} ms.",
            per_iteration(timing.data_load.prefetch),
            per_iteration(timing.data_load.wait)
        );
    }
    log::info!(
        "Average training iteration: {} ms.",
        milliseconds(timing.average())
    );
    log::info!("Total Time: {} ms.", milliseconds(timing.total));
    Ok(timing)
}

/// The train net's prefetching data layers' loading times so far, summed.
fn data_load<B: Backend>(solver: &Solver<B>) -> LoadStats {
    let net = solver.net();
    let mut total = LoadStats::default();
    for stats in (0..net.num_layers()).filter_map(|i| net.layer(i).load_stats()) {
        total.add(&stats);
    }
    total
}
