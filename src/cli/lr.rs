//! The learning-rate commands: `plot-lr` (a solver's schedule), `lr-range` (the paper's range
//! test) and `demo` (range test and cyclical training on the bundled Fashion-MNIST).

use anyhow::Result;
use rcaffe::{proto, solver};
use std::path::PathBuf;

/// `rcaffe demo`'s flag.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where to write everything the demo makes.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `rcaffe demo`: everything into `-out`, `demo-output` by default.
pub fn demo(args: DemoArgs) -> Result<()> {
    let out = args.out.unwrap_or_else(|| PathBuf::from("demo-output"));
    rcaffe::demo::run_demo(&out)?;
    Ok(())
}

/// `rcaffe plot-lr`'s flags.
#[derive(clap::Args, Debug)]
pub struct PlotLrArgs {
    /// The solver prototxt (the net it names need not exist).
    #[arg(long)]
    pub solver: PathBuf,
    /// Iterations to cover (default: the solver's max_iter).
    #[arg(long)]
    pub iterations: Option<u32>,
    /// Output file: schedule.png, schedule.svg or schedule.csv.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
}

/// `rcaffe plot-lr`: the solver's rate at each iteration, as a chart or a table.
pub fn plot_lr(args: PlotLrArgs) -> Result<()> {
    let PlotLrArgs {
        solver,
        iterations,
        output,
    } = args;
    let param = proto::read_solver(&solver)?;
    rcaffe::lr_policy::write_lr_schedule(&param, iterations, &output).map_err(|error| {
        match error {
            // Policy errors are about the solver file; name it and the line.
            rcaffe::lr_policy::ScheduleError::Policy(policy) => {
                anyhow::Error::from(solver::FieldError::from(policy).in_file(&solver, &param))
            }
            other => other.into(),
        }
    })?;
    println!("Wrote {}", output.display());
    Ok(())
}

/// `rcaffe lr-range`'s flags.
#[derive(clap::Args, Debug)]
pub struct LrRangeArgs {
    /// The solver prototxt (its net, weights, update rule and test net are used).
    #[arg(long)]
    pub solver: PathBuf,
    /// The first rate (default 0).
    #[arg(long)]
    pub min_lr: Option<f32>,
    /// The last rate (default 10 × the solver's base_lr or max_lr).
    #[arg(long)]
    pub max_lr: Option<f32>,
    /// Length in epochs of the train net's data (default 8).
    #[arg(long, conflicts_with = "iterations")]
    pub epochs: Option<f64>,
    /// Length in iterations.
    #[arg(long)]
    pub iterations: Option<u32>,
    /// Number of tests over the run.
    #[arg(long, default_value_t = rcaffe::lr_range::DEFAULT_TEST_POINTS)]
    pub tests: u32,
    /// Output prefix: writes PREFIX.csv, PREFIX.png and PREFIX.svg.
    #[arg(short = 'o', long, default_value = "lr_range")]
    pub output: PathBuf,
}

/// `rcaffe lr-range`: runs the range test, prints its report and names the files written.
pub fn lr_range(args: LrRangeArgs) -> Result<()> {
    let LrRangeArgs {
        solver,
        min_lr,
        max_lr,
        epochs,
        iterations,
        tests,
        output,
    } = args;
    let length = match (iterations, epochs) {
        (Some(n), _) => Some(rcaffe::lr_range::RangeLength::Iterations(n)),
        (None, Some(k)) => Some(rcaffe::lr_range::RangeLength::Epochs(k)),
        (None, None) => None,
    };
    let options = rcaffe::lr_range::RangeTestOptions {
        min_lr,
        max_lr,
        length,
        test_points: tests,
    };
    let run = rcaffe::lr_range::run_and_report(&solver, &options, &output)?;
    print!("{}", run.report);
    let files: Vec<String> = run.files.iter().map(|f| f.display().to_string()).collect();
    println!("\nWrote {}", files.join(", "));
    Ok(())
}
