//! The commands that build nets and run them on a device: `train`, `test`, `time` and
//! `device-query`, and the choice of that device.

use anyhow::{bail, Result};
use rcaffe::backend::cuda::{device, CudaBackend};
use rcaffe::backend::{rng_from_seed, Backend, CpuBackend};
use rcaffe::net::Net;
use rcaffe::proto::caffe::Phase;
use rcaffe::{proto, solver};
use std::path::PathBuf;

/// `rcaffe train`'s flags.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The solver prototxt.
    #[arg(long)]
    pub solver: PathBuf,
    /// Comma-separated .caffemodel (or .caffemodel.h5) files to start from (fine-tuning).
    #[arg(long)]
    pub weights: Option<String>,
    /// A .solverstate (or .solverstate.h5) to resume from.
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// GPU ids to use ("0"); without it the solver's solver_mode decides.
    #[arg(long)]
    pub gpu: Option<String>,
    /// What SIGINT does: stop, snapshot or none.
    #[arg(long, default_value = "stop")]
    pub sigint_effect: String,
    /// What SIGHUP does: stop, snapshot or none.
    #[arg(long, default_value = "snapshot")]
    pub sighup_effect: String,
    /// Train for this many iterations instead of the solver's max_iter.
    #[arg(long)]
    pub max_iter: Option<i32>,
    /// Display every N iterations instead of the solver's display.
    #[arg(long)]
    pub display: Option<i32>,
    /// Test every N iterations instead of the solver's test_interval.
    #[arg(long)]
    pub test_interval: Option<i32>,
    /// Net stages for the train net's include/exclude rules (repeatable).
    #[arg(long)]
    pub stage: Vec<String>,
    /// The train net's level.
    #[arg(long, default_value_t = 0)]
    pub level: i32,
}

/// `rcaffe train`: the solver's training run, on the GPU `-gpu` or the solver asks for, else on
/// the CPU.
pub fn train(args: TrainArgs) -> Result<()> {
    let TrainArgs {
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
    } = args;
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

/// `rcaffe test`'s flags.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// The net prototxt.
    #[arg(long)]
    pub model: PathBuf,
    /// The trained weights: comma-separated .caffemodel (or .caffemodel.h5) files (required, as
    /// upstream).
    #[arg(long)]
    pub weights: Option<String>,
    /// Number of iterations to run.
    #[arg(long, default_value_t = 50)]
    pub iterations: u32,
    /// GPU id to use.
    #[arg(long)]
    pub gpu: Option<String>,
    /// Net stages for the include/exclude rules (repeatable).
    #[arg(long)]
    pub stage: Vec<String>,
    /// The net level.
    #[arg(long, default_value_t = 0)]
    pub level: i32,
}

/// `rcaffe test`: scores the model's test phase with the given weights.
pub fn test(args: TestArgs) -> Result<()> {
    let TestArgs {
        model,
        weights,
        iterations,
        gpu,
        stage,
        level,
    } = args;
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

/// `rcaffe time`'s flags (one of `-model` and `-solver` is required: the `timed` group on its
/// subcommand).
#[derive(clap::Args, Debug)]
pub struct TimeArgs {
    /// The net prototxt.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A solver prototxt instead: time whole training iterations of its train net
    /// (forward, backward, update; on a GPU the replayed CUDA graph), no test passes, on
    /// the device `train` would use (-gpu, else the solver's solver_mode and device_id).
    #[arg(long)]
    pub solver: Option<PathBuf>,
    /// Number of iterations to time.
    #[arg(long, default_value_t = 50)]
    pub iterations: u32,
    /// The phase to build the net in: TRAIN or TEST (with -model).
    #[arg(long, conflicts_with = "solver")]
    pub phase: Option<String>,
    /// Net stages, for layers' include/exclude rules (repeatable).
    #[arg(long)]
    pub stage: Vec<String>,
    /// The net level, for layers' include/exclude rules.
    #[arg(long)]
    pub level: Option<i32>,
    /// GPU id to use.
    #[arg(long)]
    pub gpu: Option<String>,
}

/// `rcaffe time`: a net's passes layer by layer (`-model`), or whole training iterations
/// (`-solver`).
pub fn time(args: TimeArgs) -> Result<()> {
    let TimeArgs {
        model,
        solver,
        iterations,
        phase,
        stage,
        level,
        gpu,
    } = args;
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
    time_on_chosen_device(&what, iterations, &stage, level, gpu.as_deref())
}

/// `rcaffe device-query`'s flags.
#[derive(clap::Args, Debug)]
pub struct DeviceQueryArgs {
    /// GPU id to query.
    #[arg(long, default_value = "0")]
    pub gpu: String,
}

/// `rcaffe device-query -gpu N`: upstream's fields for each device asked for.
pub fn device_query(args: DeviceQueryArgs) -> Result<()> {
    let spec = args.gpu.as_str();
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
fn time_on_chosen_device(
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
