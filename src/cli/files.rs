//! The commands that read and write files without running a net: `inspect`, `upgrade-net`,
//! `upgrade-solver`, and the training-log tools `compare-logs` and `plot-log`.

use anyhow::Result;
use rcaffe::proto;
use std::path::PathBuf;

/// `rcaffe inspect`'s argument.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The file to inspect.
    pub file: PathBuf,
}

/// `rcaffe inspect`: prints what the file holds.
pub fn inspect(args: InspectArgs) -> Result<()> {
    print!("{}", rcaffe::inspect::inspect(&args.file)?);
    Ok(())
}

/// The arguments of `rcaffe upgrade-net` and `rcaffe upgrade-solver`.
#[derive(clap::Args, Debug)]
pub struct UpgradeArgs {
    pub input: PathBuf,
    pub output: PathBuf,
}

/// `rcaffe upgrade-net`: a legacy net prototxt rewritten in the current format.
pub fn upgrade_net(args: UpgradeArgs) -> Result<()> {
    proto::upgrade::upgrade_net_file(&args.input, &args.output)?;
    Ok(())
}

/// `rcaffe upgrade-solver`: a legacy solver prototxt rewritten in the current format.
pub fn upgrade_solver(args: UpgradeArgs) -> Result<()> {
    proto::upgrade::upgrade_solver_file(&args.input, &args.output)?;
    Ok(())
}

/// `rcaffe compare-logs`'s arguments.
#[derive(clap::Args, Debug)]
pub struct CompareLogsArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Also plot both runs' curves overlaid: overlay.png or overlay.svg.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Names for the two logs (repeatable; default: their file stems).
    #[arg(long)]
    pub label: Vec<String>,
}

/// `rcaffe compare-logs`: prints the two logs' largest differences, and plots them if asked.
pub fn compare_logs(args: CompareLogsArgs) -> Result<()> {
    let CompareLogsArgs {
        a,
        b,
        output,
        label,
    } = args;
    let report = rcaffe::caffe_log::compare::compare_log_files(&a, &b, &label, output.as_deref())?;
    print!("{report}");
    if let Some(output) = output {
        println!("Wrote {}", output.display());
    }
    Ok(())
}

/// `rcaffe plot-log`'s arguments.
#[derive(clap::Args, Debug)]
pub struct PlotLogArgs {
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// Output file: curves.png or curves.svg.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// A name for each log, in order (repeatable; default: their file stems).
    #[arg(long)]
    pub label: Vec<String>,
    /// The figure's title (default: the labels joined by "vs").
    #[arg(long)]
    pub title: Option<String>,
}

/// `rcaffe plot-log`: the logs' curves overlaid in one figure.
pub fn plot_log(args: PlotLogArgs) -> Result<()> {
    let PlotLogArgs {
        logs,
        output,
        label,
        title,
    } = args;
    rcaffe::caffe_log::figure::plot_log_files(&logs, &label, title.as_deref(), &output)?;
    println!("Wrote {}", output.display());
    Ok(())
}
