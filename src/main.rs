//! The `rcaffe` command line: arguments in, library calls out.

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use rcaffe::backend::cuda::{device, CudaBackend};
use rcaffe::backend::{rng_from_seed, Backend, CpuBackend};
use rcaffe::net::Net;
use rcaffe::proto::caffe::Phase;
use rcaffe::{data, proto, solver};
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

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a net with a solver (Caffe's `caffe train`).
    Train {
        /// The solver prototxt.
        #[arg(long)]
        solver: PathBuf,
        /// Comma-separated .caffemodel files to start from (fine-tuning).
        #[arg(long)]
        weights: Option<String>,
        /// A .solverstate to resume from.
        #[arg(long)]
        snapshot: Option<PathBuf>,
        /// GPU ids to use ("0"); without it the solver's solver_mode decides.
        #[arg(long)]
        gpu: Option<String>,
        /// What SIGINT does: stop, snapshot or none.
        #[arg(long, default_value = "stop")]
        sigint_effect: String,
        /// What SIGHUP does: stop, snapshot or none.
        #[arg(long, default_value = "snapshot")]
        sighup_effect: String,
        /// Train for this many iterations instead of the solver's max_iter.
        #[arg(long)]
        max_iter: Option<i32>,
        /// Display every N iterations instead of the solver's display.
        #[arg(long)]
        display: Option<i32>,
        /// Test every N iterations instead of the solver's test_interval.
        #[arg(long)]
        test_interval: Option<i32>,
        /// Net stages for the train net's include/exclude rules (repeatable).
        #[arg(long)]
        stage: Vec<String>,
        /// The train net's level.
        #[arg(long, default_value_t = 0)]
        level: i32,
    },
    /// Score a model on its test phase (Caffe's `caffe test`).
    Test {
        /// The net prototxt.
        #[arg(long)]
        model: PathBuf,
        /// The trained weights: comma-separated .caffemodel files (required, as upstream).
        #[arg(long)]
        weights: Option<String>,
        /// Number of iterations to run.
        #[arg(long, default_value_t = 50)]
        iterations: u32,
        /// GPU id to use.
        #[arg(long)]
        gpu: Option<String>,
        /// Net stages for the include/exclude rules (repeatable).
        #[arg(long)]
        stage: Vec<String>,
        /// The net level.
        #[arg(long, default_value_t = 0)]
        level: i32,
    },
    /// Time a net's forward and backward passes, layer by layer (Caffe's `caffe time`), or
    /// with -solver whole training iterations.
    #[command(group(clap::ArgGroup::new("timed").required(true).args(["model", "solver"])))]
    Time {
        /// The net prototxt.
        #[arg(long)]
        model: Option<PathBuf>,
        /// A solver prototxt instead: time whole training iterations of its train net
        /// (forward, backward, update; on a GPU the replayed CUDA graph), no test passes, on
        /// the device `train` would use (-gpu, else the solver's solver_mode and device_id).
        #[arg(long)]
        solver: Option<PathBuf>,
        /// Number of iterations to time.
        #[arg(long, default_value_t = 50)]
        iterations: u32,
        /// The phase to build the net in: TRAIN or TEST (with -model).
        #[arg(long, conflicts_with = "solver")]
        phase: Option<String>,
        /// Net stages, for layers' include/exclude rules (repeatable).
        #[arg(long)]
        stage: Vec<String>,
        /// The net level, for layers' include/exclude rules.
        #[arg(long)]
        level: Option<i32>,
        /// GPU id to use.
        #[arg(long)]
        gpu: Option<String>,
    },
    /// Range test, fixed vs triangular2 training, plots and a table, on the bundled Fashion-MNIST.
    Demo {
        /// Where to write everything the demo makes.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show what a .caffemodel, .solverstate, .binaryproto or .prototxt file holds.
    Inspect {
        /// The file to inspect.
        file: PathBuf,
    },
    /// Upgrade a legacy (V0/V1) net prototxt to the current format.
    #[command(alias = "upgrade_net_proto_text")]
    UpgradeNet { input: PathBuf, output: PathBuf },
    /// Upgrade a legacy solver prototxt (solver_type enum) to the current format.
    #[command(alias = "upgrade_solver_proto_text")]
    UpgradeSolver { input: PathBuf, output: PathBuf },
    /// Convert MNIST IDX files (gzip or not) into an LMDB of Datums, as upstream's
    /// convert_mnist_data.
    #[command(alias = "convert_mnist_data")]
    ConvertMnist {
        images: PathBuf,
        labels: PathBuf,
        output: PathBuf,
        /// The database to write (only lmdb).
        #[arg(long, default_value = "lmdb")]
        backend: data::DbBackend,
    },
    /// Convert every data_batch_*.bin and test_batch.bin in DIR (gzip or not) into
    /// OUT_DIR/cifar10_train_lmdb and OUT_DIR/cifar10_test_lmdb, as upstream's convert_cifar_data
    /// (OUT_DIR is created if need be).
    #[command(alias = "convert_cifar_data")]
    ConvertCifar {
        dir: PathBuf,
        out_dir: PathBuf,
        /// The database to write (only lmdb), upstream's third argument.
        #[arg(default_value = "lmdb")]
        backend: data::DbBackend,
    },
    /// Convert a list of "path label" lines (paths under ROOT) into an LMDB of Datums, as
    /// upstream's convert_imageset.
    #[command(alias = "convert_imageset")]
    ConvertImageset {
        root: PathBuf,
        list: PathBuf,
        output: PathBuf,
        /// Resize images to this height (with --resize-width).
        #[arg(long, default_value_t = 0)]
        resize_height: u32,
        /// Resize images to this width (with --resize-height).
        #[arg(long, default_value_t = 0)]
        resize_width: u32,
        /// Shuffle the list before writing.
        #[arg(long)]
        shuffle: bool,
        /// Seed of the shuffle.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Read the images as grey.
        #[arg(long)]
        gray: bool,
        /// Store encoded images (the files themselves) instead of raw pixels.
        #[arg(long)]
        encoded: bool,
        /// Re-encode as this type (png, jpg); implies --encoded.
        #[arg(long, default_value = "")]
        encode_type: String,
        /// Check that all records have the same size.
        #[arg(long)]
        check_size: bool,
        /// The database to write (only lmdb).
        #[arg(long, default_value = "lmdb")]
        backend: data::DbBackend,
    },
    /// Compute the mean image of an LMDB (and its per-channel means), as upstream's
    /// compute_image_mean.
    #[command(alias = "compute_image_mean")]
    ComputeImageMean {
        lmdb: PathBuf,
        /// Where to write the mean as a .binaryproto.
        output: Option<PathBuf>,
        /// The database to read (only lmdb).
        #[arg(long, default_value = "lmdb")]
        backend: data::DbBackend,
    },
    /// Show the GPU's properties (Caffe's `caffe device_query`).
    #[command(alias = "device_query")]
    DeviceQuery {
        /// GPU id to query.
        #[arg(long, default_value = "0")]
        gpu: String,
    },
    /// Plot or tabulate a solver's learning-rate schedule (.png, .svg or .csv).
    #[command(alias = "plot_lr")]
    PlotLr {
        /// The solver prototxt (the net it names need not exist).
        #[arg(long)]
        solver: PathBuf,
        /// Iterations to cover (default: the solver's max_iter).
        #[arg(long)]
        iterations: Option<u32>,
        /// Output file: schedule.png, schedule.svg or schedule.csv.
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Compare two training logs (ours or upstream Caffe's) iteration by iteration: the
    /// largest differences of lr, loss and every test output.
    #[command(alias = "compare_logs")]
    CompareLogs {
        a: PathBuf,
        b: PathBuf,
        /// Also plot both runs' curves overlaid: overlay.png or overlay.svg.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Names for the two logs (repeatable; default: their file stems).
        #[arg(long)]
        label: Vec<String>,
    },
    /// Plot test accuracy, training loss and learning rate against iteration for one or more
    /// training logs, overlaid (.png or .svg).
    #[command(alias = "plot_log")]
    PlotLog {
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// Output file: curves.png or curves.svg.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// A name for each log, in order (repeatable; default: their file stems).
        #[arg(long)]
        label: Vec<String>,
        /// The figure's title (default: the labels joined by "vs").
        #[arg(long)]
        title: Option<String>,
    },
    /// The paper's learning-rate range test: train with the rate rising linearly, test at
    /// intervals, plot accuracy against rate and suggest base_lr and max_lr.
    #[command(alias = "lr_range")]
    LrRange {
        /// The solver prototxt (its net, weights, update rule and test net are used).
        #[arg(long)]
        solver: PathBuf,
        /// The first rate (default 0).
        #[arg(long)]
        min_lr: Option<f32>,
        /// The last rate (default 10 × the solver's base_lr or max_lr).
        #[arg(long)]
        max_lr: Option<f32>,
        /// Length in epochs of the train net's data (default 8).
        #[arg(long, conflicts_with = "iterations")]
        epochs: Option<f64>,
        /// Length in iterations.
        #[arg(long)]
        iterations: Option<u32>,
        /// Number of tests over the run.
        #[arg(long, default_value_t = rcaffe::lr_range::DEFAULT_TEST_POINTS)]
        tests: u32,
        /// Output prefix: writes PREFIX.csv, PREFIX.png and PREFIX.svg.
        #[arg(short = 'o', long, default_value = "lr_range")]
        output: PathBuf,
    },
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
        Command::Train {
            solver,
            weights,
            snapshot,
            gpu,
            sigint_effect,
            sighup_effect,
            max_iter,
            display,
            test_interval,
            stage,
            level,
        } => {
            let signal_effects = solver::SignalEffects::parse(&sigint_effect, &sighup_effect)?;
            let options = solver::TrainOptions {
                weights,
                snapshot,
                max_iter,
                display,
                test_interval,
                level,
                stages: stage,
                signal_effects: Some(signal_effects),
                actions: None,
                progress: true,
            };
            let param = solver::read_train_solver(&solver, &options)?;
            match choose_gpu(gpu.as_deref(), solver_gpu(&param), true)? {
                Some(backend) => {
                    solver::train_on(param, &solver, &options, &backend)?;
                }
                None => {
                    log::info!("Use CPU.");
                    solver::train_on(param, &solver, &options, &CpuBackend::default())?;
                }
            }
            Ok(())
        }
        Command::Test {
            model,
            weights,
            iterations,
            gpu,
            stage,
            level,
        } => {
            // Absent or empty, the library refuses it with upstream's message.
            let weights = weights.as_deref().unwrap_or_default();
            match choose_gpu(gpu.as_deref(), None, false)? {
                Some(backend) => {
                    solver::test_on(&backend, &model, weights, iterations as i32, level, &stage)?;
                }
                None => {
                    solver::test(&model, weights, iterations as i32, level, &stage)?;
                }
            }
            Ok(())
        }
        Command::Time {
            model,
            solver,
            iterations,
            phase,
            stage,
            level,
            gpu,
        } => {
            let level = level.unwrap_or(0);
            let what = match (model, solver) {
                (_, Some(path)) => {
                    let options = solver::TrainOptions {
                        level,
                        stages: stage.clone(),
                        ..solver::TrainOptions::default()
                    };
                    let param = solver::read_train_solver(&path, &options)?;
                    Timed::Training {
                        param: Box::new(rcaffe::benchmark::training::training_only(param)),
                        path,
                    }
                }
                (Some(model), None) => Timed::Net {
                    model,
                    phase: parse_phase(phase.as_deref())?,
                },
                (None, None) => bail!("time needs -model or -solver"),
            };
            time(&what, iterations, &stage, level, gpu.as_deref())
        }
        Command::Demo { out } => {
            rcaffe::demo::run_demo(&out.unwrap_or_else(|| PathBuf::from("demo-output")))?;
            Ok(())
        }
        Command::DeviceQuery { gpu } => device_query(&gpu),
        Command::Inspect { file } => {
            print!("{}", rcaffe::inspect::inspect(&file)?);
            Ok(())
        }
        Command::UpgradeNet { input, output } => {
            proto::upgrade::upgrade_net_file(&input, &output)?;
            Ok(())
        }
        Command::UpgradeSolver { input, output } => {
            proto::upgrade::upgrade_solver_file(&input, &output)?;
            Ok(())
        }
        Command::ConvertMnist {
            images,
            labels,
            output,
            backend: data::DbBackend::Lmdb,
        } => {
            let mut bar = ProgressBar::new();
            let written =
                data::convert_mnist_with(&images, &labels, &output, &mut |p| bar.show(p))?;
            bar.finish();
            println!("Wrote {written} records to {}", output.display());
            Ok(())
        }
        Command::ConvertCifar {
            dir,
            out_dir,
            backend: data::DbBackend::Lmdb,
        } => {
            let mut bar = ProgressBar::new();
            let summary = data::convert_cifar_with(&dir, &out_dir, &mut |p| bar.show(p))?;
            bar.finish();
            println!(
                "Wrote {} records to {} and {} to {}",
                summary.train,
                summary.train_lmdb.display(),
                summary.test,
                summary.test_lmdb.display()
            );
            Ok(())
        }
        Command::ConvertImageset {
            root,
            list,
            output,
            resize_height,
            resize_width,
            shuffle,
            seed,
            gray,
            encoded,
            encode_type,
            check_size,
            backend: data::DbBackend::Lmdb,
        } => {
            let options = data::ImagesetOptions {
                resize_height,
                resize_width,
                shuffle,
                seed,
                gray,
                encoded,
                encode_type,
                check_size,
            };
            let mut bar = ProgressBar::new();
            let summary =
                data::convert_imageset_with(&root, &list, &output, &options, &mut |p| bar.show(p))?;
            bar.finish();
            println!(
                "Wrote {} of {} images to {} ({} skipped)",
                summary.written,
                summary.total,
                output.display(),
                summary.skipped.len()
            );
            Ok(())
        }
        Command::ComputeImageMean {
            lmdb,
            output,
            backend: data::DbBackend::Lmdb,
        } => {
            let mean = data::compute_image_mean(&lmdb, output.as_deref())?;
            let means: Vec<String> = mean.channel_means.iter().map(|m| m.to_string()).collect();
            println!(
                "Mean of {} images; per-channel means (for mean_value): {}",
                mean.count,
                means.join(", ")
            );
            Ok(())
        }
        Command::PlotLr {
            solver,
            iterations,
            output,
        } => {
            let param = proto::read_solver(&solver)?;
            rcaffe::lr_policy::write_lr_schedule(&param, iterations, &output).map_err(|error| {
                match error {
                    // Policy errors are about the solver file; name it and the line.
                    rcaffe::lr_policy::ScheduleError::Policy(policy) => anyhow::Error::from(
                        solver::FieldError::from(policy).in_file(&solver, &param),
                    ),
                    other => other.into(),
                }
            })?;
            println!("Wrote {}", output.display());
            Ok(())
        }
        Command::CompareLogs {
            a,
            b,
            output,
            label,
        } => {
            let report =
                rcaffe::caffe_log::compare::compare_log_files(&a, &b, &label, output.as_deref())?;
            print!("{report}");
            if let Some(output) = output {
                println!("Wrote {}", output.display());
            }
            Ok(())
        }
        Command::PlotLog {
            logs,
            output,
            label,
            title,
        } => {
            rcaffe::caffe_log::figure::plot_log_files(&logs, &label, title.as_deref(), &output)?;
            println!("Wrote {}", output.display());
            Ok(())
        }
        Command::LrRange {
            solver,
            min_lr,
            max_lr,
            epochs,
            iterations,
            tests,
            output,
        } => {
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
    }
}

/// A converter's progress bar: one redrawn line, only when stderr is a terminal.
struct ProgressBar {
    line: Option<rcaffe::progress::TerminalLine>,
    last: String,
}

impl ProgressBar {
    fn new() -> Self {
        Self {
            line: rcaffe::progress::TerminalLine::if_terminal(),
            last: String::new(),
        }
    }

    fn show(&mut self, progress: data::Progress<'_>) {
        let Some(line) = &mut self.line else { return };
        if !(line.due() || progress.done == progress.total) {
            return;
        }
        let fraction = if progress.total == 0 {
            1.0
        } else {
            progress.done as f64 / progress.total as f64
        };
        let filled = ((fraction * 30.0).round() as usize).min(30);
        self.last = format!(
            "{:>8} [{}{}] {}/{} ({:.0}%)",
            progress.stage,
            "#".repeat(filled),
            " ".repeat(30 - filled),
            progress.done,
            progress.total,
            fraction * 100.0
        );
        line.draw(&self.last);
    }

    fn finish(&mut self) {
        if let (Some(line), false) = (&mut self.line, self.last.is_empty()) {
            line.finish(&self.last);
        }
    }
}

/// The CUDA backend to run on, or `None` for the CPU. `flag` is `-gpu` (`0`, `0,1`, `all`: the
/// first device is used, with a warning when more were asked for); without a usable device it
/// is an error naming the device and the reason. Without `-gpu`, `solver_gpu` is the
/// `device_id` of a solver with `solver_mode: GPU`: that falls back to the CPU with a warning.
/// Logs what upstream's `caffe` logs: `Using GPUs 0` and `GPU 0: <name>` for train
/// (`train_lines`), `Use GPU with device ID 0` otherwise.
fn choose_gpu(
    flag: Option<&str>,
    solver_gpu: Option<i32>,
    train_lines: bool,
) -> Result<Option<CudaBackend>> {
    let (ordinal, wanted) = match (flag, solver_gpu) {
        (Some(spec), _) => {
            let unusable = |e: device::Unusable| {
                anyhow::anyhow!(
                    "-gpu {spec}: no usable CUDA device: {e}; omit -gpu to run on the CPU"
                )
            };
            let ids = device::GpuIds::parse(spec).map_err(|m| anyhow::anyhow!("-gpu {m}"))?;
            let (ordinal, warning) = ids.first().map_err(unusable)?;
            if let Some(warning) = warning {
                log::warn!("{warning}");
            }
            let backend = device::open(ordinal).map_err(unusable)?;
            (ordinal, backend)
        }
        (None, Some(id)) => {
            let opened = usize::try_from(id)
                .map_err(|_| format!("device_id {id} is not a device"))
                .and_then(|ordinal| {
                    device::open(ordinal)
                        .map(|backend| (ordinal, backend))
                        .map_err(|e| format!("no usable CUDA device: {e}"))
                });
            match opened {
                Ok(found) => found,
                Err(reason) => {
                    log::warn!("solver_mode: GPU requested, but {reason}; using the CPU");
                    return Ok(None);
                }
            }
        }
        (None, None) => return Ok(None),
    };
    let name = device::name(ordinal).unwrap_or_else(|e| format!("(name unknown: {e})"));
    if train_lines {
        log::info!("Using GPUs {ordinal}");
        log::info!("GPU {ordinal}: {name}");
    } else {
        log::info!("Use GPU with device ID {ordinal}");
        log::info!("GPU device name: {name}");
    }
    Ok(Some(wanted))
}

/// `rcaffe device-query -gpu N`: upstream's fields for each device asked for.
fn device_query(spec: &str) -> Result<()> {
    let ids = device::GpuIds::parse(spec).map_err(|m| anyhow::anyhow!("-gpu {m}"))?;
    let unusable = |e: device::Unusable| {
        anyhow::anyhow!("device-query -gpu {spec}: no usable CUDA device: {e}")
    };
    let ordinals = match ids {
        device::GpuIds::List(ids) => ids,
        device::GpuIds::All => (0..device::probe().map_err(unusable)?).collect(),
    };
    for ordinal in ordinals {
        log::info!("Querying GPUs {ordinal}");
        for (label, value) in device::query(ordinal).map_err(unusable)? {
            log::info!("{:<31}{value}", format!("{label}:"));
        }
    }
    Ok(())
}

/// Caffe's `-phase` flag: TRAIN or TEST, TRAIN when absent (as `caffe time`).
fn parse_phase(phase: Option<&str>) -> Result<Phase> {
    match phase {
        None | Some("TRAIN") => Ok(Phase::Train),
        Some("TEST") => Ok(Phase::Test),
        Some(other) => bail!("-phase must be TRAIN or TEST, not '{other}'"),
    }
}

/// The device a solver file asks for: `device_id` when `solver_mode: GPU` (upstream: a `-gpu`
/// flag wins over it).
fn solver_gpu(param: &proto::caffe::SolverParameter) -> Option<i32> {
    let mode = proto::caffe::solver_parameter::SolverMode::Gpu;
    (param.solver_mode.is_some() && param.solver_mode() == mode).then(|| param.device_id())
}

/// What `rcaffe time` times.
enum Timed {
    /// A net's forward and backward passes, layer by layer (upstream's `caffe time`).
    Net { model: PathBuf, phase: Phase },
    /// Whole training iterations of a solver's train net: `param`, read from `path` with
    /// everything but training turned off.
    Training {
        path: PathBuf,
        param: Box<proto::caffe::SolverParameter>,
    },
}

/// Times on the device `-gpu` names; for training, as `rcaffe train`, else on the one the
/// solver's `solver_mode: GPU` asks for (the CPU, with a warning, when it is not usable).
fn time(
    what: &Timed,
    iterations: u32,
    stages: &[String],
    level: i32,
    gpu: Option<&str>,
) -> Result<()> {
    let wanted = match what {
        Timed::Training { param, .. } => solver_gpu(param),
        Timed::Net { .. } => None,
    };
    match choose_gpu(gpu, wanted, false)? {
        Some(backend) => time_on(&backend, what, iterations, stages, level),
        None => {
            log::info!("Use CPU.");
            time_on(&CpuBackend::default(), what, iterations, stages, level)
        }
    }
}

fn time_on<B: Backend>(
    backend: &B,
    what: &Timed,
    iterations: u32,
    stages: &[String],
    level: i32,
) -> Result<()> {
    match what {
        Timed::Net { model, phase } => {
            let mut net = Net::from_file(model, *phase, level, stages, backend, rng_from_seed(0))?;
            rcaffe::benchmark::time_net(&mut net, iterations)?;
        }
        Timed::Training { path, param } => {
            let mut training = solver::Solver::new(param.as_ref().clone(), path, backend)?;
            rcaffe::benchmark::training::time_training(&mut training, iterations)?;
        }
    }
    Ok(())
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
            Command::Train {
                solver,
                weights,
                gpu,
                ..
            } => {
                assert_eq!(solver, PathBuf::from("s.prototxt"));
                assert_eq!(weights.as_deref(), Some("w.caffemodel"));
                assert_eq!(gpu.as_deref(), Some("0"));
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn gflags_spellings_are_accepted() {
        let cli =
            parse("rcaffe train -solver=s.prototxt -sigint_effect=snapshot --sighup_effect none");
        match cli.command {
            Command::Train {
                sigint_effect,
                sighup_effect,
                ..
            } => {
                assert_eq!(sigint_effect, "snapshot");
                assert_eq!(sighup_effect, "none");
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(matches!(
            parse("rcaffe device_query -gpu 0").command,
            Command::DeviceQuery { .. }
        ));
    }
}
