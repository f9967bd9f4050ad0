//! `rcaffe demo`: the paper's claim on all of the bundled Fashion-MNIST (60,000 images). A
//! learning-rate range test of LeNet (section 3.3) reads the bounds; LeNet then trains with the
//! zoo's own solver, unchanged (`inv` from 0.01, 10,000 iterations), and with `triangular2`
//! between the bounds (figure 1's comparison). The table says, for each, its best and final
//! accuracy and when it first reached the baseline's best. Everything it makes goes into one
//! folder.

use crate::backend::CpuBackend;
use crate::data::convert_mnist;
use crate::lr_policy::{LrSchedule, LrState};
use crate::lr_range::{self, RangeLength, RangeTestOptions};
use crate::plot::{Chart, Series};
use crate::proto::caffe::{NetParameter, SolverParameter};
use crate::proto::{read_net, read_solver};
use crate::solver::{Solver, TestScores};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The outcome of one training run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The policy and its rates ("inv 0.01", "triangular2 0.006–0.033").
    pub policy: String,
    /// The solver file's name.
    pub solver: String,
    pub iterations: i32,
    /// (iteration, test accuracy) at every test.
    pub accuracy: Vec<(i32, f32)>,
}

impl RunSummary {
    pub fn final_accuracy(&self) -> f32 {
        self.accuracy.last().map_or(0.0, |&(_, a)| a)
    }

    /// The best test accuracy and the first iteration that reached it.
    pub fn best(&self) -> (f32, i32) {
        self.accuracy.iter().fold(
            (0.0, 0),
            |best, &(i, a)| if a > best.0 { (a, i) } else { best },
        )
    }

    /// The first test iteration at which accuracy reached `target`.
    pub fn iterations_to_reach(&self, target: f32) -> Option<i32> {
        self.accuracy
            .iter()
            .find(|&&(_, a)| a >= target)
            .map(|&(i, _)| i)
    }
}

/// A folder of the project (`models/`, `data/`): beside the working directory when run from the
/// repository, else where the crate was built.
fn project_path(relative: &str) -> PathBuf {
    let here = PathBuf::from(relative);
    if here.exists() {
        here
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
    }
}

/// Converts the bundled IDX files into `out`'s LMDBs unless they are there already.
fn prepare_data(out: &Path) -> Result<(PathBuf, PathBuf)> {
    let idx = project_path(DATA);
    let mut lmdbs = Vec::new();
    for (part, name) in [("train", "fmnist_train_lmdb"), ("t10k", "fmnist_test_lmdb")] {
        let lmdb = out.join(name);
        if !lmdb.join("data.mdb").exists() {
            let images = idx.join(format!("{part}-images-idx3-ubyte.gz"));
            let labels = idx.join(format!("{part}-labels-idx1-ubyte.gz"));
            convert_mnist(&images, &labels, &lmdb).with_context(|| {
                format!("converting {} into {}", images.display(), lmdb.display())
            })?;
        }
        lmdbs.push(lmdb);
    }
    Ok((lmdbs.remove(0), lmdbs.remove(0)))
}

/// The bundled LeNet net with its Data layers reading `train` and `test`.
fn demo_net(train: &Path, test: &Path) -> Result<NetParameter> {
    let mut net = read_net(&project_path("models/lenet/lenet_train_test.prototxt"))?;
    for layer in &mut net.layer {
        if let Some(data) = &mut layer.data_param {
            let is_train = data.source().contains("train");
            let source = if is_train { train } else { test };
            data.source = Some(source.to_string_lossy().into_owned());
        }
    }
    Ok(net)
}

/// The solver in `solver_file` training `net`, snapshots into `out`.
fn demo_solver(solver_file: &str, net: &NetParameter, out: &Path) -> Result<SolverParameter> {
    let mut param = read_solver(&project_path(solver_file))?;
    param.net = None;
    param.net_param = Some(net.clone());
    let prefix = out.join(param.snapshot_prefix());
    param.snapshot_prefix = Some(prefix.to_string_lossy().into_owned());
    Ok(param)
}

/// Trains with `solver_file`, between `bounds` (base_lr, max_lr) when given, its weights
/// filled from [`DEMO_SEED`].
fn train_one(
    solver_file: &str,
    net: &NetParameter,
    out: &Path,
    bounds: Option<(f32, f32)>,
) -> Result<(RunSummary, SolverParameter)> {
    let solver_path = project_path(solver_file);
    let mut param = demo_solver(solver_file, net, out)?;
    if let Some((base_lr, max_lr)) = bounds {
        param.base_lr = Some(base_lr);
        param.max_lr = Some(max_lr);
    }
    param.random_seed = Some(DEMO_SEED);
    let rate = |rate: f32| lr_range::format_rate(f64::from(rate));
    let policy = match param.max_lr {
        Some(max_lr) => format!(
            "{} {}–{}",
            param.lr_policy(),
            rate(param.base_lr()),
            rate(max_lr)
        ),
        None => format!("{} {}", param.lr_policy(), rate(param.base_lr())),
    };
    let backend = CpuBackend::default();
    let mut solver = Solver::new(param.clone(), &solver_path, &backend)?;
    solver.solve(None)?;
    let accuracy = solver
        .test_scores()
        .iter()
        .filter(|scores: &&TestScores| scores.net_id == 0)
        .filter_map(|scores| {
            scores
                .outputs
                .iter()
                .find(|(name, _)| name == "accuracy")
                .map(|&(_, value)| (scores.iter, value))
        })
        .collect();
    let solver_name = Path::new(solver_file).file_name().map_or_else(
        || solver_file.to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok((
        RunSummary {
            policy,
            solver: solver_name,
            iterations: param.max_iter(),
            accuracy,
        },
        param,
    ))
}

/// The first run's (the baseline's) best accuracy, which every run is measured against.
fn baseline_best(runs: &[RunSummary]) -> f32 {
    runs.first().map_or(0.0, |run| run.best().0)
}

/// The table the demo prints: one row per run, each measured against the baseline's best
/// accuracy.
pub fn summary_table(runs: &[RunSummary]) -> String {
    let target = baseline_best(runs);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| policy | solver | iterations | best accuracy (at) | final accuracy | iterations to \
         {:.2}% |",
        target * 100.0
    );
    let _ = writeln!(table, "| --- | --- | ---: | ---: | ---: | ---: |");
    for run in runs {
        let (best, best_at) = run.best();
        let reach = run
            .iterations_to_reach(target)
            .map_or("not reached".to_string(), |i| i.to_string());
        let _ = writeln!(
            table,
            "| {} | {} | {} | {:.2}% ({best_at}) | {:.2}% | {reach} |",
            run.policy,
            run.solver,
            run.iterations,
            best * 100.0,
            run.final_accuracy() * 100.0,
        );
    }
    table
}

/// The same as [`summary_table`], as CSV (`summary.csv`): accuracies as fractions, an empty
/// `iterations_to_baseline_best` where a run never reached it.
pub fn summary_csv(runs: &[RunSummary]) -> String {
    let target = baseline_best(runs);
    let mut csv = String::from(
        "policy,solver,iterations,best_accuracy,best_at,final_accuracy,\
         iterations_to_baseline_best\n",
    );
    for run in runs {
        let (best, best_at) = run.best();
        let reach = run
            .iterations_to_reach(target)
            .map_or(String::new(), |i| i.to_string());
        let _ = writeln!(
            csv,
            "{},{},{},{best},{best_at},{},{reach}",
            run.policy,
            run.solver,
            run.iterations,
            run.final_accuracy()
        );
    }
    csv
}

/// What the demo ran and printed.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The range test's report; its solver snippet is the triangular2 run's solver.
    pub range_report: String,
    /// The baseline run, then the triangular2 run, each with the solver it trained with.
    pub runs: Vec<(RunSummary, SolverParameter)>,
    /// The summary table.
    pub table: String,
}

/// All of Fashion-MNIST, as distributed.
const DATA: &str = "data/fashion-mnist";
/// The baseline: upstream's examples/mnist/lenet_solver.prototxt, setting for setting.
const ZOO_SOLVER: &str = "models/lenet/lenet_solver.prototxt";
/// The challenger, whose stepsize and max_iter the range test's snippet shows.
const TRIANGULAR2_SOLVER: &str = "models/lenet/lenet_solver_triangular2.prototxt";
/// Both runs fill their weights from this seed (the zoo's file sets none), so that the demo
/// prints the same figures each time on a given machine.
pub const DEMO_SEED: i64 = 1;

/// Runs the demo into `out`; returns what it ran and printed.
pub fn run_demo(out: &Path) -> Result<Demo> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    println!(
        "Converting the bundled Fashion-MNIST into LMDBs in {} ...",
        out.display()
    );
    let (train, test) = prepare_data(out)?;
    let net = demo_net(&train, &test)?;

    let stepsize = read_solver(&project_path(TRIANGULAR2_SOLVER))?.stepsize();
    let (bounds, range_report) = range_test(&net, out, stepsize)?;

    let mut runs = Vec::new();
    let mut chart = Chart::new("LeNet on Fashion-MNIST: the zoo's solver vs triangular2")
        .x_label("iteration")
        .y_label("test accuracy")
        .y_within(0.0, 1.0)
        .secondary_y_label("learning rate");
    for (solver_file, run_bounds) in [(ZOO_SOLVER, None), (TRIANGULAR2_SOLVER, bounds)] {
        let started = std::time::Instant::now();
        println!("Training LeNet with {solver_file} ...");
        let (run, param) = quietly(|| train_one(solver_file, &net, out, run_bounds))?;
        let (best, best_at) = run.best();
        println!(
            "  {}: {} iterations in {:.0} s; best test accuracy {:.2}% at {best_at}, final \
             {:.2}%",
            run.policy,
            run.iterations,
            started.elapsed().as_secs_f64(),
            best * 100.0,
            run.final_accuracy() * 100.0
        );
        let schedule = LrSchedule::new(&param)?;
        let mut state = LrState::default();
        let rates: Vec<(f64, f64)> = (0..=param.max_iter())
            .map(|i| (f64::from(i), f64::from(schedule.rate(i as u32, &mut state))))
            .collect();
        // The test before training (chance, 10%) is left out: it would squash the part of
        // the curves where they differ.
        let points = run
            .accuracy
            .iter()
            .filter(|&&(i, _)| i > 0)
            .map(|&(i, a)| (f64::from(i), f64::from(a)))
            .collect();
        let color = runs.len();
        chart = chart
            .series(Series::new(format!("{} accuracy", run.policy), points).color(color))
            .series(
                Series::new(format!("{} lr", run.policy), rates)
                    .on_secondary_axis()
                    .color(color)
                    .dashed(),
            );
        runs.push((run, param));
    }
    if runs.len() != 2 || runs.iter().any(|(r, _)| r.accuracy.is_empty()) {
        bail!("a demo run produced no test results");
    }
    let plot = out.join("accuracy.png");
    chart.write(&plot)?;
    let mut csv = String::from("policy,iteration,accuracy\n");
    for (run, _) in &runs {
        for (iteration, accuracy) in &run.accuracy {
            let _ = writeln!(csv, "{},{iteration},{accuracy}", run.policy);
        }
    }
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("accuracy.csv", csv)?;
    let summaries: Vec<RunSummary> = runs.iter().map(|(run, _)| run.clone()).collect();
    let table = summary_table(&summaries);
    write("summary.csv", summary_csv(&summaries))?;
    write("summary.md", format!("{range_report}\n{table}"))?;
    println!("\n{table}");
    println!(
        "Everything is in {}: lr_range.png/.svg/.csv (the range test), accuracy.png, \
         accuracy.csv, summary.csv, summary.md, the LMDBs and the trained models.",
        out.display()
    );
    Ok(Demo {
        range_report,
        runs,
        table,
    })
}

/// Runs `work` with the log at warnings only: the per-iteration log would bury the demo's own
/// output.
fn quietly<T>(work: impl FnOnce() -> T) -> T {
    let level = log::max_level();
    log::set_max_level(log::LevelFilter::Warn);
    let result = work();
    log::set_max_level(level);
    result
}

/// The range test's span for LeNet: wide enough to see accuracy rise, level off and collapse
/// (it diverges near 0.08, which stops the test there).
const RANGE_MIN_LR: f32 = 0.001;
const RANGE_MAX_LR: f32 = 0.1;
const RANGE_EPOCHS: f64 = 2.0;

/// The paper's section 3.3 on LeNet: returns the suggested (base_lr, max_lr), rounded as
/// printed, or `None` when the curve gave none (the triangular2 run then keeps its file's
/// bounds), and the report it printed, whose snippet has the triangular2 run's `stepsize`.
/// Writes `lr_range.{csv,png,svg}` into `out`.
fn range_test(
    net: &NetParameter,
    out: &Path,
    stepsize: i32,
) -> Result<(Option<(f32, f32)>, String)> {
    let solver_file = ZOO_SOLVER;
    println!(
        "Range test: LeNet with the rate rising from {RANGE_MIN_LR} to {RANGE_MAX_LR} over \
         {RANGE_EPOCHS} epochs ..."
    );
    let mut param = demo_solver(solver_file, net, out)?;
    param.random_seed = Some(DEMO_SEED);
    let options = RangeTestOptions {
        min_lr: Some(RANGE_MIN_LR),
        max_lr: Some(RANGE_MAX_LR),
        length: Some(RangeLength::Epochs(RANGE_EPOCHS)),
        ..RangeTestOptions::default()
    };
    let run = quietly(|| {
        lr_range::run_and_report_with(
            param,
            &project_path(solver_file),
            &options,
            &out.join("lr_range"),
            "LeNet on Fashion-MNIST: learning-rate range test",
        )
    })?;
    // The snippet shows the stepsize the triangular2 run trains with, not lr-range's default.
    let report = match &run.test.epoch {
        Some(epoch) => {
            let epochs = f64::from(stepsize) / epoch.iterations() as f64;
            lr_range::report(&run.test, &run.suggestion, epochs)
        }
        None => run.report,
    };
    println!("{report}");
    let bounds = lr_range::rounded_bounds(&run.suggestion);
    if bounds.is_none() {
        println!(
            "No bounds from the range test: triangular2 keeps the bounds in {TRIANGULAR2_SOLVER}."
        );
    }
    Ok((bounds, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(policy: &str, accuracy: &[(i32, f32)]) -> RunSummary {
        RunSummary {
            policy: policy.into(),
            solver: format!("{policy}.prototxt"),
            iterations: 100,
            accuracy: accuracy.to_vec(),
        }
    }

    #[test]
    fn the_summary_measures_against_the_first_runs_best_accuracy() {
        // The baseline peaks at 50 (72%) and ends lower; the challenger passes 72% at 75.
        let baseline = run(
            "inv",
            &[(0, 0.1), (25, 0.6), (50, 0.72), (75, 0.7), (100, 0.71)],
        );
        let cyclic = run(
            "triangular2",
            &[(0, 0.1), (25, 0.5), (50, 0.7), (75, 0.8), (100, 0.8)],
        );
        assert_eq!(baseline.best(), (0.72, 50));
        assert_eq!(cyclic.best(), (0.8, 75), "the first iteration at the best");
        let slow = run("slow", &[(100, 0.5)]);
        let runs = [baseline, cyclic, slow];
        let table = summary_table(&runs);
        assert!(table.contains("iterations to 72.00% |"), "{table}");
        for row in [
            "| inv | inv.prototxt | 100 | 72.00% (50) | 71.00% | 50 |",
            "| triangular2 | triangular2.prototxt | 100 | 80.00% (75) | 80.00% | 75 |",
            "| slow | slow.prototxt | 100 | 50.00% (100) | 50.00% | not reached |",
        ] {
            assert!(table.contains(row), "{row} in\n{table}");
        }
        assert_eq!(
            summary_csv(&runs),
            "policy,solver,iterations,best_accuracy,best_at,final_accuracy,\
             iterations_to_baseline_best\n\
             inv,inv.prototxt,100,0.72,50,0.71,50\n\
             triangular2,triangular2.prototxt,100,0.8,75,0.8,75\n\
             slow,slow.prototxt,100,0.5,100,0.5,\n"
        );
    }
}
