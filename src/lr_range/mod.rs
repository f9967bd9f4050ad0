//! The learning-rate range test of Smith's "Cyclical Learning Rates for Training Neural
//! Networks" (section 3.3).
//!
//! The test trains the solver's net, from its weights, while the rate rises linearly from
//! `min_lr` to `max_lr` over the run — the `triangular` policy with `stepsize = max_iter`, as
//! the paper does it — and tests at regular intervals. [`suggest_bounds`] then reads the
//! accuracy-against-rate curve the way the paper tells a person to: `base_lr` where accuracy
//! starts to rise, `max_lr` where the rise stops, turns ragged or falls. It works on a smoothed
//! curve (a running median, then a running mean), so one lucky or unlucky test does not move
//! the answer, and it says so when the curve gives no bound rather than inventing one.
//!
//! The epoch length it counts its run in, and the guidance the train log gives for the cyclic
//! policies, are the solver's: [`crate::solver::guidance`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::backend::CpuBackend;
use crate::lr_policy::{LrSchedule, LrState};
use crate::plot::PlotError;
use crate::proto::caffe::SolverParameter;
use crate::proto::{read_solver, ProtoError};
use crate::solver::guidance::{epoch_of_solver, Epoch};
use crate::solver::{Solver, SolverError};

mod bounds;
mod report;

pub use bounds::{format_rate, suggest_bounds, NoBound, Suggestion, MIN_POINTS};
pub use report::{output_paths, range_chart, report, rounded_bounds, write_outputs};

/// How many tests a range test runs over its length when not told otherwise.
pub const DEFAULT_TEST_POINTS: u32 = 40;
/// The range test's length in epochs when neither iterations nor epochs are given (the paper
/// runs "several epochs"; its CIFAR-10 test ran eight).
pub const DEFAULT_EPOCHS: f64 = 8.0;

/// What can stop a range test.
#[derive(Debug, thiserror::Error)]
pub enum RangeTestError {
    #[error(transparent)]
    Solver(#[from] SolverError),
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// The solver or the options cannot give a range test; names the solver file.
    #[error("{}: {message}", path.display())]
    Setup { path: PathBuf, message: String },
    /// The cause's text is part of the message, so the cause is not also given as the error's
    /// source.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, RangeTestError>;

// ---- running the test ----------------------------------------------------------------------

/// How long a range test runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeLength {
    Iterations(u32),
    /// Needs the train net's epoch (a Data or ImageData layer).
    Epochs(f64),
}

/// What `rcaffe lr-range` takes besides the solver.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeTestOptions {
    /// The first rate (default: 0).
    pub min_lr: Option<f32>,
    /// The last rate (default: 10 × the solver's largest rate, `max_lr` or `base_lr`).
    pub max_lr: Option<f32>,
    /// The length (default: [`DEFAULT_EPOCHS`] epochs).
    pub length: Option<RangeLength>,
    /// How many tests over the run (default [`DEFAULT_TEST_POINTS`]).
    pub test_points: u32,
}

impl Default for RangeTestOptions {
    fn default() -> Self {
        Self {
            min_lr: None,
            max_lr: None,
            length: None,
            test_points: DEFAULT_TEST_POINTS,
        }
    }
}

/// One test of a range test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RangePoint {
    pub iteration: u32,
    /// The rate at this iteration.
    pub lr: f64,
    /// The mean training loss over the iterations since the previous test.
    pub train_loss: f64,
    pub test_accuracy: f64,
    pub test_loss: f64,
}

/// Where the loss diverged and the test stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Divergence {
    pub iteration: u32,
    pub lr: f64,
    /// The training loss then (possibly NaN or infinite).
    pub loss: f64,
}

/// A finished range test.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeTest {
    pub min_lr: f64,
    pub max_lr: f64,
    /// The planned length.
    pub iterations: u32,
    pub epoch: Option<Epoch>,
    /// Name of the test output read as accuracy.
    pub accuracy_output: String,
    pub points: Vec<RangePoint>,
    /// Set when the loss diverged before the planned end.
    pub divergence: Option<Divergence>,
}

impl RangeTest {
    /// (lr, test accuracy) of every test.
    pub fn accuracy_curve(&self) -> Vec<(f64, f64)> {
        self.points
            .iter()
            .map(|p| (p.lr, p.test_accuracy))
            .collect()
    }

    /// The CSV of the tests: `iteration,lr,train_loss,test_accuracy,test_loss`.
    pub fn to_csv(&self) -> String {
        let mut csv = String::from("iteration,lr,train_loss,test_accuracy,test_loss\n");
        for p in &self.points {
            let _ = writeln!(
                csv,
                "{},{},{},{},{}",
                p.iteration, p.lr, p.train_loss, p.test_accuracy, p.test_loss
            );
        }
        csv
    }
}

/// Runs a range test of the solver in `solver_path` (see [`run_range_test_with`]).
pub fn run_range_test(solver_path: &Path, options: &RangeTestOptions) -> Result<RangeTest> {
    let param = read_solver(solver_path)?;
    run_range_test_with(param, solver_path, options)
}

/// Runs a range test of `param` (read from `origin`, named in errors): its net and weights,
/// update rule, momentum and weight decay, the rate rising linearly from `min_lr` to `max_lr`,
/// testing test net #0 `test_points` times. Stops early when the training loss diverges (turns
/// non-finite, or exceeds both four times its lowest value and its first value).
pub fn run_range_test_with(
    mut param: SolverParameter,
    origin: &Path,
    options: &RangeTestOptions,
) -> Result<RangeTest> {
    let plan = plan(&param, origin, options)?;
    ramp(&mut param, &plan);
    let Plan {
        min_lr,
        max_lr,
        iterations,
        interval,
        epoch,
    } = plan;

    let backend = CpuBackend::default();
    let mut solver = Solver::new(param, origin, &backend)?;
    // The rates are read from the schedule the solver trains with, so the CSV shows what ran.
    let schedule = LrSchedule::new(solver.param()).map_err(SolverError::from)?;
    let rate = |iteration: u32| f64::from(schedule.rate(iteration, &mut LrState::default()));
    let mut result = RangeTest {
        min_lr: f64::from(min_lr),
        max_lr: f64::from(max_lr),
        iterations,
        epoch,
        accuracy_output: String::new(),
        points: Vec::new(),
        divergence: None,
    };
    let mut first_loss = None::<f64>;
    let mut lowest_loss = f64::INFINITY;
    while (solver.iter() as u32) < iterations {
        let steps = interval.min(iterations - solver.iter() as u32);
        match solver.step(steps as i32) {
            Ok(()) => {}
            Err(SolverError::NonFiniteLoss { iter, loss, .. }) => {
                let iteration = iter as u32;
                result.divergence = Some(Divergence {
                    iteration,
                    lr: rate(iteration),
                    loss: f64::from(loss),
                });
                break;
            }
            Err(other) => return Err(other.into()),
        }
        let iteration = solver.iter() as u32;
        let train_loss = f64::from(solver.smoothed_loss());
        let scores = solver.test(0)?;
        let (name, accuracy) = accuracy_output(&scores.outputs).ok_or_else(|| {
            setup_error(
                origin,
                format!(
                    "test net #0 has no accuracy output (its outputs: {})",
                    scores
                        .outputs
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        result.accuracy_output = name;
        let point = RangePoint {
            iteration,
            lr: rate(iteration),
            train_loss,
            test_accuracy: f64::from(accuracy),
            test_loss: scores.loss.map_or(f64::NAN, f64::from),
        };
        log::info!(
            "lr-range: iteration {iteration}/{iterations}, lr {:.6}, train loss {train_loss:.4}, \
             test accuracy {:.4}, test loss {:.4}",
            point.lr,
            point.test_accuracy,
            point.test_loss
        );
        result.points.push(point);
        let first = *first_loss.get_or_insert(train_loss);
        lowest_loss = lowest_loss.min(train_loss);
        if !train_loss.is_finite() || (train_loss > 4.0 * lowest_loss && train_loss > first) {
            result.divergence = Some(Divergence {
                iteration,
                lr: point.lr,
                loss: train_loss,
            });
            break;
        }
    }
    Ok(result)
}

/// What a range test will run: the ramp's bounds, its length, the iterations between tests,
/// and the epoch of the train net's data.
struct Plan {
    min_lr: f32,
    max_lr: f32,
    iterations: u32,
    interval: u32,
    epoch: Option<Epoch>,
}

/// A [`RangeTestError::Setup`] naming the solver file.
fn setup_error(origin: &Path, message: String) -> RangeTestError {
    RangeTestError::Setup {
        path: origin.to_path_buf(),
        message,
    }
}

/// Checks that the solver and the options can give a range test, and plans it.
fn plan(param: &SolverParameter, origin: &Path, options: &RangeTestOptions) -> Result<Plan> {
    let setup = |message: String| setup_error(origin, message);
    if param.test_iter.first().is_none_or(|&n| n <= 0) {
        return Err(setup(
            "the range test needs a test net: the solver has no test_iter (or it is 0)".into(),
        ));
    }
    let largest_rate = param.max_lr.unwrap_or(0.0).max(param.base_lr());
    let min_lr = options.min_lr.unwrap_or(0.0);
    let max_lr = options.max_lr.unwrap_or(10.0 * largest_rate);
    if !(min_lr >= 0.0 && max_lr > min_lr && max_lr.is_finite()) {
        return Err(setup(format!(
            "the range test needs 0 <= min_lr < max_lr; got min_lr {min_lr}, max_lr {max_lr}"
        )));
    }
    let epoch = epoch_of_solver(param, origin);
    let iterations = match options
        .length
        .unwrap_or(RangeLength::Epochs(DEFAULT_EPOCHS))
    {
        RangeLength::Iterations(n) => n,
        RangeLength::Epochs(epochs) => {
            let Some(epoch) = &epoch else {
                return Err(setup(
                    "cannot count epochs: the train net has no Data or ImageData layer with a \
                     readable source; give the length in iterations"
                        .into(),
                ));
            };
            (epochs * epoch.iterations() as f64).round() as u32
        }
    };
    let test_points = options.test_points.max(1);
    if iterations < test_points {
        return Err(setup(format!(
            "a range test of {iterations} iterations cannot hold {test_points} tests"
        )));
    }
    Ok(Plan {
        min_lr,
        max_lr,
        iterations,
        interval: iterations.div_ceil(test_points),
        epoch,
    })
}

/// The paper's set-up: `triangular` with `stepsize = max_iter` is a straight ramp from
/// `base_lr` up to `max_lr`. Testing and display are driven by the range test, not the solver.
fn ramp(param: &mut SolverParameter, plan: &Plan) {
    let iterations = plan.iterations;
    param.lr_policy = Some("triangular".into());
    param.base_lr = Some(plan.min_lr);
    param.max_lr = Some(plan.max_lr);
    param.stepsize = Some(iterations as i32);
    param.start_lr_policy = Some(0.0);
    param.max_iter = Some(iterations as i32);
    // Beyond the run: the solver never tests on its own (it refuses 0 with test nets).
    param.test_interval = Some(iterations.saturating_add(1).min(i32::MAX as u32) as i32);
    param.test_initialization = Some(false);
    param.test_compute_loss = Some(true);
    param.display = Some(0);
    param.snapshot = Some(0);
    param.snapshot_after_train = Some(false);
    // The smoothed loss then is the mean over each interval.
    param.average_loss = Some(plan.interval as i32);
}

/// The test output read as accuracy: "accuracy", else the first whose name contains "acc".
fn accuracy_output(outputs: &[(String, f32)]) -> Option<(String, f32)> {
    outputs
        .iter()
        .find(|(name, _)| name == "accuracy")
        .or_else(|| outputs.iter().find(|(name, _)| name.contains("acc")))
        .cloned()
}

/// A range test with its reading, report and files.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeTestRun {
    pub test: RangeTest,
    pub suggestion: Suggestion,
    /// What `rcaffe lr-range` prints.
    pub report: String,
    /// The CSV, PNG and SVG written.
    pub files: [PathBuf; 3],
}

/// The suggested stepsize of the printed snippet, in epochs (within the paper's 2–10).
pub const SNIPPET_STEPSIZE_EPOCHS: f64 = 4.0;

/// `rcaffe lr-range`: runs the test of the solver in `solver_path`, reads the curve, writes
/// `prefix`'s files and the report.
pub fn run_and_report(
    solver_path: &Path,
    options: &RangeTestOptions,
    prefix: &Path,
) -> Result<RangeTestRun> {
    let param = read_solver(solver_path)?;
    let title = format!(
        "LR range test: {}",
        solver_path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned())
    );
    run_and_report_with(param, solver_path, options, prefix, &title)
}

/// [`run_and_report`] for solver parameters already read (and perhaps edited) from `origin`.
pub fn run_and_report_with(
    param: SolverParameter,
    origin: &Path,
    options: &RangeTestOptions,
    prefix: &Path,
    title: &str,
) -> Result<RangeTestRun> {
    let test = run_range_test_with(param, origin, options)?;
    let suggestion = suggest_bounds(&test.accuracy_curve());
    let report = report(&test, &suggestion, SNIPPET_STEPSIZE_EPOCHS);
    let files = write_outputs(&test, &suggestion, prefix, title)?;
    Ok(RangeTestRun {
        test,
        suggestion,
        report,
        files,
    })
}
