//! `-sigint_effect`/`-sighup_effect` and the solver's action source: effect names, snapshot and
//! stop requests in the training loop and in a test pass, `train`'s options, real SIGINT/SIGHUP
//! through the handler, and `rcaffe train` stopping cleanly on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcaffe::backend::CpuBackend;
use rcaffe::proto::parse_text;
use rcaffe::solver::{
    train, ActionRequests, SignalEffects, SignalHandler, Solver, SolverAction, TrainOptions,
};

const TINY_NET: &str = r#"
net_param {
  name: "tiny"
  layer {
    name: "data" type: "DummyData" top: "x" top: "y"
    dummy_data_param {
      shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
      data_filler { type: "constant" value: 0.5 }
      data_filler { type: "constant" value: -0.3 }
    }
  }
  layer {
    name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
    inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } }
  }
  layer { name: "act" type: "Sigmoid" bottom: "h" top: "h" }
  layer {
    name: "ip2" type: "InnerProduct" bottom: "h" top: "p"
    inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } }
  }
  layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
}
random_seed: 1701
lr_policy: "fixed" base_lr: 0.1
"#;

fn solver_text(extra: &str, prefix: &Path) -> String {
    format!(
        "{TINY_NET}\n{extra}\nsnapshot_prefix: \"{}\"\n",
        prefix.display()
    )
}

fn build(extra: &str, prefix: &Path) -> Solver<CpuBackend> {
    let param = parse_text(
        &solver_text(extra, prefix),
        Path::new("tiny.solver.prototxt"),
    )
    .unwrap();
    Solver::new_recording(
        param,
        Path::new("tiny.solver.prototxt"),
        &CpuBackend::default(),
    )
    .unwrap()
}

fn snapshot_exists(prefix: &Path, iter: i32) -> bool {
    let base = format!("{}_iter_{iter}", prefix.display());
    PathBuf::from(format!("{base}.caffemodel")).exists()
        && PathBuf::from(format!("{base}.solverstate")).exists()
}

/// A source that answers the `n`th poll (from 1) as `script` says, `None` otherwise.
fn scripted(script: Vec<(u32, SolverAction)>) -> impl FnMut() -> SolverAction + Send + 'static {
    let mut polls = 0u32;
    move || {
        polls += 1;
        script
            .iter()
            .find(|(n, _)| *n == polls)
            .map_or(SolverAction::None, |(_, a)| *a)
    }
}

#[test]
fn effect_names() {
    assert_eq!("stop".parse(), Ok(SolverAction::Stop));
    assert_eq!("snapshot".parse(), Ok(SolverAction::Snapshot));
    assert_eq!("none".parse(), Ok(SolverAction::None));
    assert_eq!(
        SignalEffects::default(),
        SignalEffects::parse("stop", "snapshot").unwrap()
    );
    let err = SignalEffects::parse("stop", "halt")
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"halt\""), "{err}");
    assert!(err.contains("stop, snapshot and none"), "{err}");
}

#[test]
fn action_requests_hold_one_pending_action() {
    let r = ActionRequests::new();
    assert_eq!(r.take(), SolverAction::None);
    r.request(SolverAction::Snapshot);
    let clone = r.clone();
    assert_eq!(clone.take(), SolverAction::Snapshot);
    assert_eq!(r.take(), SolverAction::None);
    r.request(SolverAction::Snapshot);
    r.request(SolverAction::Stop);
    assert_eq!(r.take(), SolverAction::Stop);
}

#[test]
fn snapshot_then_stop_in_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("tiny");
    let mut solver = build("max_iter: 10 display: 0", &prefix);
    // Polled once per iteration, after the update: the 3rd poll is at iteration 3.
    solver.set_action_source(scripted(vec![
        (3, SolverAction::Snapshot),
        (6, SolverAction::Stop),
    ]));
    solver.solve(None).unwrap();
    assert_eq!(solver.iter(), 6);
    assert!(solver.stopped_early());
    assert!(snapshot_exists(&prefix, 3));
    // Stop: the snapshot after training is written, and nothing after it.
    assert!(snapshot_exists(&prefix, 6));
    assert!(!snapshot_exists(&prefix, 10));
    let log = solver.take_log();
    assert_eq!(log.last().unwrap(), "Optimization stopped early.");
    assert!(!log.iter().any(|l| l == "Optimization Done."));

    // `none` requests change nothing; a new solve runs on to max_iter.
    solver.set_action_source(|| SolverAction::None);
    solver.solve(None).unwrap();
    assert_eq!(solver.iter(), 10);
    assert!(!solver.stopped_early());
    assert!(snapshot_exists(&prefix, 10));
}

#[test]
fn stop_during_a_test_pass() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("tiny");
    let mut solver = build(
        "max_iter: 10 display: 0 test_iter: 3 test_interval: 5 test_initialization: false",
        &prefix,
    );
    // Polls 1-5 follow iterations 1-5; poll 6 is before the test pass's first batch; the
    // snapshot asked there is written when the pass ends.
    solver.set_action_source(scripted(vec![
        (6, SolverAction::Snapshot),
        (7, SolverAction::Stop),
    ]));
    solver.solve(None).unwrap();
    assert_eq!(solver.iter(), 5);
    assert!(solver.stopped_early());
    assert!(snapshot_exists(&prefix, 5));
    let log = solver.take_log();
    assert!(log.iter().any(|l| l == "Test interrupted."), "{log:#?}");
    assert!(solver.test_scores().is_empty());
}

fn write_solver(dir: &Path, extra: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join("tiny");
    let file = dir.join("tiny.solver.prototxt");
    std::fs::write(&file, solver_text(extra, &prefix)).unwrap();
    (file, prefix)
}

#[test]
fn train_polls_its_action_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (file, prefix) = write_solver(dir.path(), "max_iter: 50 display: 0");
    let actions = ActionRequests::new();
    actions.request(SolverAction::Stop);
    let solver = train(
        &file,
        &TrainOptions {
            actions: Some(actions.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(solver.iter(), 1);
    assert!(solver.stopped_early());
    assert!(snapshot_exists(&prefix, 1));
    assert_eq!(actions.take(), SolverAction::None);
}

/// Every real signal in this file is raised here, in one test: a signal reaches every handler
/// registered in the process, so two such tests running at once would see each other's.
#[test]
fn real_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT};
    use signal_hook::low_level::raise;

    // Held for the whole test: once registered, neither signal can end the test process.
    let ignoring = SignalHandler::new(SignalEffects {
        sigint: SolverAction::None,
        sighup: SolverAction::None,
    })
    .unwrap();
    let handler = SignalHandler::new(SignalEffects::default()).unwrap();
    assert_eq!(handler.check(), SolverAction::None);
    raise(SIGHUP).unwrap();
    assert_eq!(handler.check(), SolverAction::Snapshot);
    assert_eq!(handler.check(), SolverAction::None);
    raise(SIGINT).unwrap();
    assert_eq!(handler.check(), SolverAction::Stop);
    // Both pending: SIGHUP's effect first, as upstream's CheckForSignals.
    raise(SIGINT).unwrap();
    raise(SIGHUP).unwrap();
    assert_eq!(handler.check(), SolverAction::Snapshot);
    assert_eq!(handler.check(), SolverAction::Stop);
    assert_eq!(ignoring.check(), SolverAction::None);
    drop(handler);

    // Through `train`: SIGINT, raised until training returns, stops it with a snapshot.
    let dir = tempfile::tempdir().unwrap();
    let (file, prefix) = write_solver(dir.path(), "max_iter: 100000000 display: 0");
    let done = Arc::new(AtomicBool::new(false));
    let raiser = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                raise(SIGINT).unwrap();
            }
        })
    };
    let solver = train(
        &file,
        &TrainOptions {
            signal_effects: Some(SignalEffects::default()),
            ..Default::default()
        },
    );
    done.store(true, Ordering::SeqCst);
    raiser.join().unwrap();
    let solver = solver.unwrap();
    assert!(solver.stopped_early());
    assert!(solver.iter() < 100_000_000);
    assert!(snapshot_exists(&prefix, solver.iter()));
}

#[test]
fn rcaffe_train_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let (file, prefix) = write_solver(dir.path(), "max_iter: 100000000 display: 0");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rcaffe"))
        .args(["train", "-solver"])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    // The handlers are installed before this line is logged.
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no 'Starting Optimization':\n{log}"
        );
        log.push_str(&line);
        if line.contains("Starting Optimization") {
            break;
        }
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid, with a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    log.push_str(&rest);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("Optimization stopped early."), "{log}");
    // No progress bar: stderr is a pipe.
    assert!(!log.contains("iter/s | ETA"), "{log}");
    let snapshot = log
        .lines()
        .find_map(|l| {
            l.split("Snapshotting solver state to binary proto file ")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no snapshot line:\n{log}"));
    assert!(
        snapshot.starts_with(&*prefix.to_string_lossy()),
        "{snapshot}"
    );
    assert!(Path::new(snapshot.trim()).exists(), "{snapshot}");
}

#[test]
fn rcaffe_train_rejects_an_unknown_effect() {
    let out = Command::new(env!("CARGO_BIN_EXE_rcaffe"))
        .args([
            "train",
            "-solver",
            "unused.prototxt",
            "-sighup_effect",
            "halt",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Invalid signal effect \"halt\"") && err.contains("stop, snapshot and none"),
        "{err}"
    );
}
