//! The `rcaffe` command line: arguments in, library calls out.
//!
//! This file holds the command tree and `main`; each command's flags and body are in
//! `src/cli/` (the binary's own modules, not the library's), grouped by what they work on.

#[path = "cli/convert.rs"]
mod convert;
#[path = "cli/files.rs"]
mod files;
#[path = "cli/lr.rs"]
mod lr;
#[path = "cli/nets.rs"]
mod nets;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "rcaffe",
    version,
    about = "Caffe's trainer in Rust, with cyclical learning rates",
    long_about = "Caffe's trainer in Rust, with cyclical learning rates.\n\nCaffe's single-dash \
                  flags work too: `rcaffe train -solver s.prototxt -gpu 0`."
)]
struct Cli {
    /// Also write the log to a file in this folder (glog's format, as on stderr); wins over
    /// GLOG_log_dir. glog's GLOG_minloglevel, GLOG_v, GLOG_logtostderr, GLOG_alsologtostderr and
    /// GLOG_stderrthreshold are read as upstream's caffe reads them.
    #[arg(long, global = true)]
    log_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// The commands, in the order `--help` lists them; each one's flags are its `…Args` struct.
#[derive(Subcommand, Debug)]
enum Command {
    /// Train a net with a solver (Caffe's `caffe train`).
    Train(nets::TrainArgs),
    /// Score a model on its test phase (Caffe's `caffe test`).
    Test(nets::TestArgs),
    /// Time a net's forward and backward passes, layer by layer (Caffe's `caffe time`), or
    /// with -solver whole training iterations.
    #[command(group(clap::ArgGroup::new("timed").required(true).args(["model", "solver"])))]
    Time(nets::TimeArgs),
    /// The paper on the bundled Fashion-MNIST: a range test, then the zoo's LeNet solver
    /// against triangular2 between its bounds; a table, summary.csv and plots.
    Demo(lr::DemoArgs),
    /// Show what a .caffemodel, .solverstate, .binaryproto or .prototxt file holds.
    Inspect(files::InspectArgs),
    /// Upgrade a legacy (V0/V1) net prototxt to the current format.
    #[command(alias = "upgrade_net_proto_text")]
    UpgradeNet(files::UpgradeArgs),
    /// Upgrade a legacy solver prototxt (solver_type enum) to the current format.
    #[command(alias = "upgrade_solver_proto_text")]
    UpgradeSolver(files::UpgradeArgs),
    /// Convert MNIST IDX files (gzip or not) into an LMDB (or LevelDB) of Datums, as upstream's
    /// convert_mnist_data.
    #[command(alias = "convert_mnist_data")]
    ConvertMnist(convert::ConvertMnistArgs),
    /// Convert MNIST IDX files (gzip or not) into a LevelDB (or LMDB) of random image pairs
    /// for a siamese net, as upstream's examples/siamese/convert_mnist_siamese_data.
    #[command(alias = "convert_mnist_siamese_data")]
    ConvertMnistSiamese(convert::ConvertMnistSiameseArgs),
    /// Convert every data_batch_*.bin and test_batch.bin in DIR (gzip or not) into
    /// OUT_DIR/cifar10_train_lmdb and OUT_DIR/cifar10_test_lmdb (or _leveldb), as upstream's
    /// convert_cifar_data (OUT_DIR is created if need be).
    #[command(alias = "convert_cifar_data")]
    ConvertCifar(convert::ConvertCifarArgs),
    /// Make CIFAR-10's binary batches (data_batch_N.bin, test_batch.bin) in OUT_DIR from the
    /// MNIST IDX files in DIR: each image centred in 32x32 and repeated in three channels, so
    /// the CIFAR-10 nets train on (Fashion-)MNIST.
    MnistToCifar(convert::MnistToCifarArgs),
    /// Convert a list of "path label" lines (paths under ROOT) into an LMDB (or LevelDB) of
    /// Datums, as upstream's convert_imageset.
    #[command(alias = "convert_imageset")]
    ConvertImageset(convert::ConvertImagesetArgs),
    /// Compute the mean image of an LMDB or LevelDB (and its per-channel means), as upstream's
    /// compute_image_mean.
    #[command(alias = "compute_image_mean")]
    ComputeImageMean(convert::ComputeImageMeanArgs),
    /// Show the GPU's properties (Caffe's `caffe device_query`).
    #[command(alias = "device_query")]
    DeviceQuery(nets::DeviceQueryArgs),
    /// Plot or tabulate a solver's learning-rate schedule (.png, .svg or .csv).
    #[command(alias = "plot_lr")]
    PlotLr(lr::PlotLrArgs),
    /// Compare two training logs (ours or upstream Caffe's) iteration by iteration: the
    /// largest differences of lr, loss and every test output.
    #[command(alias = "compare_logs")]
    CompareLogs(files::CompareLogsArgs),
    /// Plot test accuracy, training loss and learning rate against iteration for one or more
    /// training logs, overlaid (.png or .svg).
    #[command(alias = "plot_log")]
    PlotLog(files::PlotLogArgs),
    /// The paper's learning-rate range test: train with the rate rising linearly, test at
    /// intervals, plot accuracy against rate and suggest base_lr and max_lr.
    #[command(alias = "lr_range")]
    LrRange(lr::LrRangeArgs),
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let args = rcaffe::gflags::normalize(std::env::args().collect(), &Cli::command());
    let cli = Cli::parse_from(args);
    let mut glog = rcaffe::log::GlogEnv::from_env();
    let log_file = match glog.log_folder(cli.log_dir) {
        Some(folder) => match open_log_file(&folder) {
            Ok(file) => Some(file),
            Err(error) => {
                eprintln!("rcaffe: {error:#}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let stderr_level = glog.stderr_level(log_file.is_some());
    rcaffe::log::GlogLogger::new(glog.level(), stderr_level, log_file).install();
    for warning in &glog.warnings {
        log::warn!("{warning}");
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rcaffe: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Output into a closed pipe (`rcaffe inspect x | head -1`) ends the process quietly by SIGPIPE,
/// as it ends upstream's `caffe` and other Unix tools. Rust ignores SIGPIPE, which would make
/// such a write an error, and `print!` panic on it.
fn restore_default_sigpipe() {
    // SAFETY: runs first in main, before any thread starts; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn open_log_file(folder: &std::path::Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(folder)
        .with_context(|| format!("creating log folder {}", folder.display()))?;
    let name = format!("rcaffe.{}.log", std::process::id());
    let path = folder.join(name);
    std::fs::File::create(&path).with_context(|| format!("creating log file {}", path.display()))
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Train(args) => nets::train(args),
        Command::Test(args) => nets::test(args),
        Command::Time(args) => nets::time(args),
        Command::Demo(args) => lr::demo(args),
        Command::Inspect(args) => files::inspect(args),
        Command::UpgradeNet(args) => files::upgrade_net(args),
        Command::UpgradeSolver(args) => files::upgrade_solver(args),
        Command::ConvertMnist(args) => convert::convert_mnist(args),
        Command::ConvertMnistSiamese(args) => convert::convert_mnist_siamese(args),
        Command::ConvertCifar(args) => convert::convert_cifar(args),
        Command::MnistToCifar(args) => convert::mnist_to_cifar(args),
        Command::ConvertImageset(args) => convert::convert_imageset(args),
        Command::ComputeImageMean(args) => convert::compute_image_mean(args),
        Command::DeviceQuery(args) => nets::device_query(args),
        Command::PlotLr(args) => lr::plot_lr(args),
        Command::CompareLogs(args) => files::compare_logs(args),
        Command::PlotLog(args) => files::plot_log(args),
        Command::LrRange(args) => lr::lr_range(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Cli {
        let args = line.split_whitespace().map(String::from).collect();
        Cli::try_parse_from(rcaffe::gflags::normalize(args, &Cli::command())).unwrap()
    }

    #[test]
    fn caffe_single_dash_flags_parse_like_double_dash_ones() {
        let single = parse("rcaffe train -solver s.prototxt -weights w.caffemodel -gpu 0");
        let double = parse("rcaffe train --solver s.prototxt --weights w.caffemodel --gpu 0");
        assert_eq!(format!("{single:?}"), format!("{double:?}"));
        match single.command {
            Command::Train(args) => {
                assert_eq!(args.solver, PathBuf::from("s.prototxt"));
                assert_eq!(args.weights.as_deref(), Some("w.caffemodel"));
                assert_eq!(args.gpu.as_deref(), Some("0"));
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn gflags_spellings_are_accepted() {
        let cli =
            parse("rcaffe train -solver=s.prototxt -sigint_effect=snapshot --sighup_effect none");
        match cli.command {
            Command::Train(args) => {
                assert_eq!(args.sigint_effect, "snapshot");
                assert_eq!(args.sighup_effect, "none");
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(matches!(
            parse("rcaffe device_query -gpu 0").command,
            Command::DeviceQuery(..)
        ));
    }
}
