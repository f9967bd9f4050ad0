//! The learning-rate range test of Smith's "Cyclical Learning Rates for Training Neural
//! Networks" (section 3.3).
//!
//! The test trains the solver's net, from its weights, while the rate rises linearly from
//! `min_lr` to `max_lr` over the run — the `triangular` policy with `stepsize = max_iter`, as
//! the paper does it — and tests at regular intervals. [`suggest_bounds`] then reads the
//! accuracy-against-rate curve the way the paper tells a person to: `base_lr` where accuracy
//! starts to rise, `max_lr` where the rise slows, turns ragged or falls. It works on a smoothed
//! curve (a running median, then a running mean), so one lucky or unlucky test does not move
//! the answer, and it says so when the curve gives no bound rather than inventing one.
//!
//! The epoch length it counts its run in, and the guidance the train log gives for the cyclic
//! policies, are the solver's: [`crate::solver::guidance`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::backend::CpuBackend;
use crate::lr_policy::{LrSchedule, LrState};
use crate::plot::{Chart, PlotError, Series};
use crate::proto::caffe::SolverParameter;
use crate::proto::{read_solver, ProtoError};
use crate::solver::guidance::{epoch_of_solver, Epoch};
use crate::solver::{Solver, SolverError};

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
    let setup = |message: String| RangeTestError::Setup {
        path: origin.to_path_buf(),
        message,
    };
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
    let epoch = epoch_of_solver(&param, origin);
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
    let interval = iterations.div_ceil(test_points);

    // The paper's set-up: triangular with stepsize = max_iter is a straight ramp from base_lr
    // up to max_lr. Testing and display are driven from here, not by the solver.
    param.lr_policy = Some("triangular".into());
    param.base_lr = Some(min_lr);
    param.max_lr = Some(max_lr);
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
    param.average_loss = Some(interval as i32);

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
            setup(format!(
                "test net #0 has no accuracy output (its outputs: {})",
                scores
                    .outputs
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
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

/// The test output read as accuracy: "accuracy", else the first whose name contains "acc".
fn accuracy_output(outputs: &[(String, f32)]) -> Option<(String, f32)> {
    outputs
        .iter()
        .find(|(name, _)| name == "accuracy")
        .or_else(|| outputs.iter().find(|(name, _)| name.contains("acc")))
        .cloned()
}

// ---- reading the curve ---------------------------------------------------------------------

/// Why a bound could not be read from the curve.
#[derive(Debug, Clone, PartialEq)]
pub enum NoBound {
    /// Too few finite points to smooth.
    TooFewPoints { count: usize },
    /// The smoothed accuracy never rises clearly above the noise.
    NoRise { rise: f64, noise: f64 },
    /// Accuracy is still climbing at the highest rate tested: the upper bound is beyond it.
    StillRising { at_lr: f64 },
}

impl std::fmt::Display for NoBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoBound::TooFewPoints { count } => write!(
                f,
                "only {count} test points; the curve needs at least {MIN_POINTS} to be read"
            ),
            NoBound::NoRise { rise, noise } => write!(
                f,
                "accuracy does not rise clearly over the range (smoothed rise {rise:.3}, noise \
                 {noise:.3}); try a wider range or a longer test"
            ),
            NoBound::StillRising { at_lr } => write!(
                f,
                "accuracy is still rising at the highest rate tested ({}); rerun with a larger \
                 max_lr",
                format_rate(*at_lr)
            ),
        }
    }
}

/// The fewest points [`suggest_bounds`] reads.
pub const MIN_POINTS: usize = 5;
/// The smoothed rise must exceed this many noise deviations (and [`MIN_RISE`]).
const RISE_OVER_NOISE: f64 = 4.0;
/// The smallest accuracy rise taken as a rise at all.
const MIN_RISE: f64 = 0.02;
/// `base_lr` is where the smoothed curve has made this fraction of its rise…
const START_FRACTION: f64 = 0.1;
/// …and `max_lr` where it has made this fraction: past it the rise has slowed, turned ragged
/// or reversed.
const TOP_FRACTION: f64 = 0.9;

/// A knee counts when the curve bulges above its chord by this fraction of the rise.
const KNEE_SIGNIFICANCE: f64 = 0.1;

/// The bounds read from an accuracy-against-rate curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// Where accuracy starts to rise.
    pub base_lr: std::result::Result<f64, NoBound>,
    /// Where the rise slows, turns ragged or falls.
    pub max_lr: std::result::Result<f64, NoBound>,
    /// The curve as read: (lr, smoothed accuracy).
    pub smoothed: Vec<(f64, f64)>,
    /// The estimated noise of one test (a robust standard deviation).
    pub noise: f64,
}

impl Suggestion {
    /// The paper's rule of thumb from `max_lr`: `base_lr` = `max_lr`/3 and `max_lr`/4.
    pub fn rule_of_thumb(&self) -> Option<(f64, f64)> {
        self.max_lr.as_ref().ok().map(|&m| (m / 3.0, m / 4.0))
    }
}

/// Reads `base_lr` and `max_lr` from (lr, accuracy) points, as the paper reads its figure 3:
/// the curve is smoothed (running median, then running mean, over about an eighth of the
/// points), `base_lr` is where it has made a tenth of its rise above its lowest level before the
/// peak, `max_lr` where it has made nine tenths of it or, if earlier, at its knee (the point
/// farthest above the straight line from the low to the peak), where the rise slows. A rise within the noise gives no bounds;
/// a curve still climbing at its end gives no `max_lr`. Non-finite points are ignored.
pub fn suggest_bounds(points: &[(f64, f64)]) -> Suggestion {
    let mut points: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(lr, acc)| lr.is_finite() && acc.is_finite())
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = points.len();
    if n < MIN_POINTS {
        let none = NoBound::TooFewPoints { count: n };
        return Suggestion {
            base_lr: Err(none.clone()),
            max_lr: Err(none),
            smoothed: points,
            noise: f64::NAN,
        };
    }
    let lrs: Vec<f64> = points.iter().map(|p| p.0).collect();
    let accuracy: Vec<f64> = points.iter().map(|p| p.1).collect();
    let window = (n / 8).max(3) | 1;
    // The median alone keeps corners where they are (the knee is read on it); the mean after
    // it takes out the rest of the noise (the crossings are read on that).
    let median_filtered = running_median(&accuracy, window);
    let smooth = running_mean(&median_filtered, window);
    let residuals: Vec<f64> = accuracy
        .iter()
        .zip(&smooth)
        .map(|(a, s)| (a - s).abs())
        .collect();
    let noise = 1.4826 * median(&residuals);
    let smoothed: Vec<(f64, f64)> = lrs.iter().copied().zip(smooth.iter().copied()).collect();

    let peak = argmax(&smooth);
    let low_index = argmin(&smooth[..=peak]);
    let low = smooth[low_index];
    let rise = smooth[peak] - low;
    if rise < MIN_RISE.max(RISE_OVER_NOISE * noise) {
        let none = NoBound::NoRise { rise, noise };
        return Suggestion {
            base_lr: Err(none.clone()),
            max_lr: Err(none),
            smoothed,
            noise,
        };
    }
    let crossing = |fraction: f64| {
        let level = low + fraction * rise;
        let i = (low_index..=peak)
            .find(|&i| smooth[i] >= level)
            .unwrap_or(peak);
        if i == 0 || smooth[i] == smooth[i - 1] {
            return lrs[i];
        }
        // Between the last point below the level and the first at or above it.
        let t = (level - smooth[i - 1]) / (smooth[i] - smooth[i - 1]);
        lrs[i - 1] + t.clamp(0.0, 1.0) * (lrs[i] - lrs[i - 1])
    };
    let base_lr = crossing(START_FRACTION);
    let top_lr = crossing(TOP_FRACTION);
    // Where the rise slows: the knee, the point of the median-filtered curve farthest above the
    // chord from its low to its peak, when it stands out; a slow creep towards the peak would
    // otherwise carry the 90% crossing well past it. Of points within the noise of the
    // farthest, the first is taken: the bound errs low, where training stays stable.
    let chord = |i: usize| {
        let span = (lrs[peak] - lrs[low_index]).max(f64::MIN_POSITIVE);
        low + rise * (lrs[i] - lrs[low_index]) / span
    };
    let bulges: Vec<f64> = (low_index..=peak)
        .map(|i| median_filtered[i] - chord(i))
        .collect();
    let bulge = bulges.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let knee = low_index + bulges.iter().position(|&b| b >= bulge - noise).unwrap_or(0);
    let slowing_lr = if bulge >= KNEE_SIGNIFICANCE * rise && lrs[knee] > base_lr {
        top_lr.min(lrs[knee])
    } else {
        top_lr
    };

    // Still climbing at the end: the peak is among the last half-window of points and the last
    // window's slope is at least half the slope of the main rise.
    let last = n - 1;
    let tail = last - (window - 1).min(last);
    let end_slope = (smooth[last] - smooth[tail]) / (lrs[last] - lrs[tail]).max(f64::MIN_POSITIVE);
    let rise_slope =
        (TOP_FRACTION - START_FRACTION) * rise / (top_lr - base_lr).max(f64::MIN_POSITIVE);
    let still_rising = peak + window / 2 >= last && end_slope >= 0.5 * rise_slope;
    let max_lr = if still_rising {
        Err(NoBound::StillRising { at_lr: lrs[last] })
    } else {
        Ok(slowing_lr)
    };
    Suggestion {
        base_lr: Ok(base_lr),
        max_lr,
        smoothed,
        noise,
    }
}

fn window_bounds(i: usize, n: usize, window: usize) -> std::ops::Range<usize> {
    let half = window / 2;
    i.saturating_sub(half)..(i + half + 1).min(n)
}

fn running_median(values: &[f64], window: usize) -> Vec<f64> {
    (0..values.len())
        .map(|i| median(&values[window_bounds(i, values.len(), window)]))
        .collect()
}

fn running_mean(values: &[f64], window: usize) -> Vec<f64> {
    (0..values.len())
        .map(|i| {
            let part = &values[window_bounds(i, values.len(), window)];
            part.iter().sum::<f64>() / part.len() as f64
        })
        .collect()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
    }
}

/// The first index of the largest value.
fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

/// The first index of the smallest value.
fn argmin(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v < values[best] { i } else { best })
}

// ---- reporting -----------------------------------------------------------------------------

/// A rate with two significant digits, as a solver file would hold it ("0.0012", "0.03"):
/// C's `%.2g`, the same formatting the prototxt printer uses.
pub fn format_rate(rate: f64) -> String {
    crate::proto::format_g(rate, 2)
}

/// The suggested bounds rounded as printed (two significant digits), when both were found.
pub fn rounded_bounds(suggestion: &Suggestion) -> Option<(f32, f32)> {
    let parse = |rate: f64| format_rate(rate).parse::<f32>().ok();
    match (&suggestion.base_lr, &suggestion.max_lr) {
        (Ok(base), Ok(max)) if base < max => Some((parse(*base)?, parse(*max)?)),
        _ => None,
    }
}

/// What `rcaffe lr-range` prints: where the loss diverged, the suggested bounds (or why there
/// are none), the rule of thumb, and a solver snippet with a stepsize of `stepsize_epochs`
/// epochs when the epoch is known.
pub fn report(test: &RangeTest, suggestion: &Suggestion, stepsize_epochs: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Range test: lr {} to {} over {} iterations{}, {} tests.",
        format_rate(test.min_lr),
        format_rate(test.max_lr),
        test.iterations,
        test.epoch.as_ref().map_or(String::new(), |e| format!(
            " ({:.1} epochs of {} iterations)",
            f64::from(test.iterations) / e.iterations() as f64,
            e.iterations()
        )),
        test.points.len()
    );
    if let Some(d) = &test.divergence {
        let _ = writeln!(
            out,
            "The loss diverged at iteration {} (lr {}, training loss {:.3}): stopped there. \
             Keep max_lr below {}.",
            d.iteration,
            format_rate(d.lr),
            d.loss,
            format_rate(d.lr)
        );
    }
    let bound = |b: &std::result::Result<f64, NoBound>| match b {
        Ok(rate) => format_rate(*rate),
        Err(why) => format!("none found: {why}"),
    };
    let _ = writeln!(
        out,
        "Suggested base_lr (accuracy starts to rise): {}",
        bound(&suggestion.base_lr)
    );
    let _ = writeln!(
        out,
        "Suggested max_lr (the rise slows, turns ragged or falls): {}",
        bound(&suggestion.max_lr)
    );
    if let Some((third, quarter)) = suggestion.rule_of_thumb() {
        let _ = writeln!(
            out,
            "The paper's rule of thumb from max_lr: base_lr = max_lr/3 = {} or max_lr/4 = {}",
            format_rate(third),
            format_rate(quarter)
        );
    }
    let Some((base, max)) = rounded_bounds(suggestion) else {
        let _ = writeln!(out, "No solver snippet: both bounds are needed.");
        return out;
    };
    let _ = writeln!(out, "\nSolver snippet:\n");
    let _ = writeln!(out, "lr_policy: \"triangular2\"");
    let _ = writeln!(out, "base_lr: {}", format_rate(f64::from(base)));
    let _ = writeln!(out, "max_lr: {}", format_rate(f64::from(max)));
    match &test.epoch {
        Some(epoch) => {
            let per_epoch = epoch.iterations();
            let stepsize = (stepsize_epochs * per_epoch as f64).round() as u64;
            let _ = writeln!(
                out,
                "stepsize: {stepsize}  # {stepsize_epochs} epochs of {per_epoch} iterations \
                 ({} images / batch {}); the paper: 2-10 epochs",
                epoch.images,
                epoch.batch_size * epoch.iter_size
            );
            let _ = writeln!(
                out,
                "# end training at a cycle's end: max_iter = a multiple of {}",
                2 * stepsize
            );
        }
        None => {
            let _ = writeln!(
                out,
                "# stepsize: 2-10 epochs, an epoch being training images / batch size (the \
                 train net's source could not be counted)"
            );
        }
    }
    out
}

/// The paths [`write_outputs`] writes for `prefix`: CSV, PNG and SVG.
pub fn output_paths(prefix: &Path) -> [PathBuf; 3] {
    let with = |extension: &str| {
        let mut name = prefix.as_os_str().to_owned();
        name.push(format!(".{extension}"));
        PathBuf::from(name)
    };
    [with("csv"), with("png"), with("svg")]
}

/// The paper's figure: test accuracy (as tested and smoothed) against the rate, the suggested
/// bounds as vertical lines, and the training and test losses on the right axis.
pub fn range_chart(test: &RangeTest, suggestion: &Suggestion, title: &str) -> Chart {
    let accuracy = test.accuracy_curve();
    let (low, high) = accuracy
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, a)| {
            (lo.min(a), hi.max(a))
        });
    let mut chart = Chart::new(title)
        .x_label("learning rate")
        .y_label("test accuracy")
        .secondary_y_label("loss")
        .series(Series::new("test accuracy", accuracy))
        .series(Series::new(
            "smoothed accuracy",
            suggestion.smoothed.clone(),
        ));
    let mut markers = Vec::new();
    for rate in [&suggestion.base_lr, &suggestion.max_lr]
        .into_iter()
        .flatten()
    {
        // A NaN point breaks the line between the two markers.
        markers.extend([(*rate, low), (*rate, high), (f64::NAN, f64::NAN)]);
    }
    if !markers.is_empty() {
        chart = chart.series(Series::new("suggested bounds", markers));
    }
    // A diverged loss (80, NaN) would flatten the rest: losses are drawn up to twice the
    // larger of the first train and test losses, a divergence as a line hitting that ceiling.
    let ceiling = test
        .points
        .first()
        .map_or(f64::INFINITY, |p| 2.0 * p.train_loss.max(p.test_loss));
    let loss = |pick: fn(&RangePoint) -> f64| -> Vec<(f64, f64)> {
        test.points
            .iter()
            .map(|p| {
                let value = pick(p);
                let shown = if value.is_finite() {
                    value.min(ceiling)
                } else {
                    ceiling
                };
                (p.lr, shown)
            })
            .collect()
    };
    chart
        .series(Series::new("train loss", loss(|p| p.train_loss)).on_secondary_axis())
        .series(Series::new("test loss", loss(|p| p.test_loss)).on_secondary_axis())
}

/// Writes `PREFIX.csv`, `PREFIX.png` and `PREFIX.svg`; returns their paths.
pub fn write_outputs(
    test: &RangeTest,
    suggestion: &Suggestion,
    prefix: &Path,
    title: &str,
) -> Result<[PathBuf; 3]> {
    let paths = output_paths(prefix);
    let [csv, png, svg] = &paths;
    if let Some(folder) = csv.parent().filter(|f| !f.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|error| RangeTestError::Io {
            path: folder.to_path_buf(),
            error,
        })?;
    }
    std::fs::write(csv, test.to_csv()).map_err(|error| RangeTestError::Io {
        path: csv.clone(),
        error,
    })?;
    let chart = range_chart(test, suggestion, title);
    chart.write(png)?;
    chart.write(svg)?;
    Ok(paths)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_print_with_two_significant_digits() {
        assert_eq!(format_rate(0.001234), "0.0012");
        assert_eq!(format_rate(0.03), "0.03");
        assert_eq!(format_rate(0.0299), "0.03");
        assert_eq!(format_rate(1.5), "1.5");
        assert_eq!(format_rate(12.0), "12");
    }

    #[test]
    fn smoothing_helpers() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(
            running_median(&[0.0, 9.0, 0.0, 0.0], 3),
            vec![4.5, 0.0, 0.0, 0.0]
        );
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmin(&[2.0, 1.0, 1.0]), 1);
    }
}
