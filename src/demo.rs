//! `rcaffe demo`: the paper's recipe on the bundled Fashion-MNIST. A learning-rate range test
//! of LeNet (section 3.3) suggests the bounds; LeNet then trains twice for the same budget,
//! once at a fixed learning rate and once with `triangular2` between the suggested bounds
//! (figure 1), and the demo prints a table and draws the range test and both accuracy curves.
//! Everything it makes goes into one folder.

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
    pub policy: String,
    pub iterations: i32,
    /// (iteration, test accuracy) at every test.
    pub accuracy: Vec<(i32, f32)>,
}

impl RunSummary {
    pub fn final_accuracy(&self) -> f32 {
        self.accuracy.last().map_or(0.0, |&(_, a)| a)
    }

    pub fn best_accuracy(&self) -> f32 {
        self.accuracy.iter().map(|&(_, a)| a).fold(0.0, f32::max)
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
    let idx = project_path("data/fashion-mnist-mini");
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

/// Trains with `solver_file`, between `bounds` (base_lr, max_lr) when given.
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
    let policy = match param.max_lr {
        Some(max_lr) => format!(
            "{} {}–{}",
            param.lr_policy(),
            lr_range::format_rate(f64::from(param.base_lr())),
            lr_range::format_rate(f64::from(max_lr))
        ),
        None => format!(
            "{} {}",
            param.lr_policy(),
            lr_range::format_rate(f64::from(param.base_lr()))
        ),
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
    Ok((
        RunSummary {
            policy,
            iterations: param.max_iter(),
            accuracy,
        },
        param,
    ))
}

/// The table the demo prints: one row per run.
pub fn summary_table(runs: &[RunSummary]) -> String {
    let target = runs.first().map_or(0.0, RunSummary::final_accuracy);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| policy | iterations | final accuracy | best accuracy | iterations to {:.1}% |",
        target * 100.0
    );
    let _ = writeln!(table, "| --- | --- | --- | --- | --- |");
    for run in runs {
        let reach = run
            .iterations_to_reach(target)
            .map_or("not reached".to_string(), |i| i.to_string());
        let _ = writeln!(
            table,
            "| {} | {} | {:.1}% | {:.1}% | {} |",
            run.policy,
            run.iterations,
            run.final_accuracy() * 100.0,
            run.best_accuracy() * 100.0,
            reach
        );
    }
    table
}

/// What the demo ran and printed.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The range test's report; its solver snippet is the triangular2 run's solver.
    pub range_report: String,
    /// The fixed run, then the triangular2 run, each with the solver it trained with.
    pub runs: Vec<(RunSummary, SolverParameter)>,
    /// The summary table.
    pub table: String,
}

/// The triangular2 solver, whose stepsize and max_iter the range test's snippet shows.
const TRIANGULAR2_SOLVER: &str = "models/lenet/solver_triangular2.prototxt";

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
    let mut chart = Chart::new("LeNet on Fashion-MNIST: fixed vs triangular2")
        .x_label("iteration")
        .y_label("test accuracy")
        .secondary_y_label("learning rate");
    for (solver_file, run_bounds) in [
        ("models/lenet/solver_fixed.prototxt", None),
        (TRIANGULAR2_SOLVER, bounds),
    ] {
        println!("Training LeNet with {solver_file} ...");
        let (run, param) = quietly(|| train_one(solver_file, &net, out, run_bounds))?;
        println!(
            "  {}: final test accuracy {:.1}%",
            run.policy,
            run.final_accuracy() * 100.0
        );
        let schedule = LrSchedule::new(&param)?;
        let mut state = LrState::default();
        let rates: Vec<(f64, f64)> = (0..=param.max_iter())
            .map(|i| (f64::from(i), f64::from(schedule.rate(i as u32, &mut state))))
            .collect();
        let points = run
            .accuracy
            .iter()
            .map(|&(i, a)| (f64::from(i), f64::from(a)))
            .collect();
        chart = chart
            .series(Series::new(format!("{} accuracy", run.policy), points))
            .series(Series::new(format!("{} lr", run.policy), rates).on_secondary_axis());
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
    let csv_path = out.join("accuracy.csv");
    std::fs::write(&csv_path, csv).with_context(|| format!("writing {}", csv_path.display()))?;
    let summaries: Vec<RunSummary> = runs.iter().map(|(run, _)| run.clone()).collect();
    let table = summary_table(&summaries);
    let table_path = out.join("summary.md");
    std::fs::write(&table_path, format!("{range_report}\n{table}"))
        .with_context(|| format!("writing {}", table_path.display()))?;
    println!("\n{table}");
    println!(
        "Everything is in {}: lr_range.png/.svg/.csv (the range test), accuracy.png, \
         accuracy.csv, summary.md, the LMDBs and the trained models.",
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

/// The range test's span for LeNet: wide enough to see accuracy rise, level off and collapse.
const RANGE_MIN_LR: f32 = 0.001;
const RANGE_MAX_LR: f32 = 0.1;
const RANGE_EPOCHS: f64 = 4.0;

/// The paper's section 3.3 on LeNet: returns the suggested (base_lr, max_lr), rounded as
/// printed, or `None` when the curve gave none (the triangular2 run then keeps its file's
/// bounds), and the report it printed, whose snippet has the triangular2 run's `stepsize`.
/// Writes `lr_range.{csv,png,svg}` into `out`.
fn range_test(
    net: &NetParameter,
    out: &Path,
    stepsize: i32,
) -> Result<(Option<(f32, f32)>, String)> {
    let solver_file = "models/lenet/solver_fixed.prototxt";
    println!(
        "Range test: LeNet with the rate rising from {RANGE_MIN_LR} to {RANGE_MAX_LR} over \
         {RANGE_EPOCHS} epochs ..."
    );
    let param = demo_solver(solver_file, net, out)?;
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
            iterations: 100,
            accuracy: accuracy.to_vec(),
        }
    }

    #[test]
    fn table_measures_against_the_first_runs_final_accuracy() {
        let fixed = run("fixed", &[(0, 0.1), (50, 0.6), (100, 0.7)]);
        let cyclic = run("triangular2", &[(0, 0.1), (50, 0.72), (100, 0.8)]);
        let table = summary_table(&[fixed, cyclic]);
        assert!(
            table.contains("| fixed | 100 | 70.0% | 70.0% | 100 |"),
            "{table}"
        );
        assert!(
            table.contains("| triangular2 | 100 | 80.0% | 80.0% | 50 |"),
            "{table}"
        );
        let slow = run("slow", &[(100, 0.5)]);
        assert_eq!(slow.iterations_to_reach(0.7), None);
    }
}
