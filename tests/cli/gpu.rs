//! `-gpu`, `solver_mode: GPU` and `device-query` through the `rcaffe` binary, device-neutral:
//! each test asks the machine whether it has a usable CUDA device and checks what `rcaffe`
//! must do there. Without one (CI's machines): clear errors naming the device and the reason,
//! and the CPU fallback with one warning. With one: the same commands run on device 0, with
//! upstream's log lines.

use crate::common::{rcaffe_in, stderr, stdout};
use std::path::Path;

use rcaffe::backend::cuda::device;

/// The reason this machine has no usable CUDA device, or `None` when it has one.
fn no_device() -> Option<String> {
    device::probe().err().map(|reason| reason.to_string())
}

/// A two-iteration solver on DummyData, asking for the GPU, in `dir`, its net in `net.prototxt`
/// there (for `test` and `time`).
fn tiny_gpu_solver(dir: &Path) -> &'static str {
    std::fs::write(
        dir.join("net.prototxt"),
        r#"
name: "tiny"
layer {
  name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param {
    shape { dim: 2 dim: 3 } shape { dim: 2 dim: 1 }
    data_filler { type: "constant" value: 1 }
    data_filler { type: "constant" value: 0 }
  }
}
layer {
  name: "ip" type: "InnerProduct" bottom: "x" top: "p"
  inner_product_param { num_output: 1 weight_filler { type: "constant" value: 0.1 } }
}
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("solver.prototxt"),
        r#"
net: "net.prototxt"
base_lr: 0.1 lr_policy: "fixed" max_iter: 2 display: 1
solver_mode: GPU
device_id: 0
snapshot_prefix: "tiny"
"#,
    )
    .unwrap();
    "solver.prototxt"
}

#[test]
fn gpu_flag_runs_on_the_device_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let solver = tiny_gpu_solver(dir.path());
    let train = rcaffe_in(dir.path(), &["train", "-solver", solver]);
    assert!(train.status.success(), "{}", stderr(&train));
    for args in [
        vec!["train", "-solver", solver, "-gpu", "0"],
        vec![
            "test",
            "-model",
            "net.prototxt",
            "-weights",
            "tiny_iter_2.caffemodel",
            "-iterations",
            "1",
            "-gpu",
            "0",
        ],
        vec![
            "time",
            "-model",
            "net.prototxt",
            "-iterations",
            "1",
            "-gpu",
            "0",
        ],
    ] {
        let output = rcaffe_in(dir.path(), &args);
        let log = stderr(&output);
        assert!(!log.contains("panicked"), "{log}");
        match no_device() {
            None => {
                assert!(output.status.success(), "{args:?}: {log}");
                let opened = if args[0] == "train" {
                    "] Using GPUs 0"
                } else {
                    "] Use GPU with device ID 0"
                };
                assert!(log.contains(opened), "{args:?}: {log}");
                assert!(!log.contains("Use CPU."), "{args:?}: {log}");
            }
            Some(_) => {
                assert!(!output.status.success(), "{args:?} succeeded: {log}");
                assert!(
                    log.contains("rcaffe: error: -gpu 0: no usable CUDA device: "),
                    "{args:?}: {log}"
                );
                // The reason, and what to do instead.
                assert!(
                    log.contains("CUDA driver") || log.contains("no device"),
                    "{args:?}: {log}"
                );
                assert!(
                    log.contains("omit -gpu to run on the CPU"),
                    "{args:?}: {log}"
                );
            }
        }
    }
}

#[test]
fn gpu_lists_warn_that_only_the_first_device_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let solver = tiny_gpu_solver(dir.path());
    let output = rcaffe_in(dir.path(), &["train", "-solver", solver, "-gpu", "0,1"]);
    let log = stderr(&output);
    assert!(
        log.contains(
            "multi-GPU training is not supported: 2 devices were asked for; using device 0 only"
        ),
        "{log}"
    );
    match no_device() {
        None => assert!(
            output.status.success() && log.contains("] Using GPUs 0"),
            "{log}"
        ),
        Some(_) => {
            assert!(!output.status.success(), "{log}");
            assert!(log.contains("-gpu 0,1: no usable CUDA device"), "{log}");
        }
    }

    let output = rcaffe_in(dir.path(), &["train", "-solver", solver, "-gpu", "first"]);
    let log = stderr(&output);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("-gpu 'first' is not a device id, a comma-separated list of ids, or 'all'"),
        "{log}"
    );
}

#[test]
fn solver_mode_gpu_trains_on_the_device_or_on_the_cpu_with_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let solver = tiny_gpu_solver(dir.path());
    let output = rcaffe_in(dir.path(), &["train", "-solver", solver]);
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.starts_with('W')).collect();
    match no_device() {
        None => {
            assert!(warnings.is_empty(), "{log}");
            assert!(log.contains("] Using GPUs 0"), "{log}");
            assert!(!log.contains("] Use CPU."), "{log}");
        }
        Some(_) => {
            assert_eq!(warnings.len(), 1, "{log}");
            assert!(
                warnings[0].contains("solver_mode: GPU requested, but no usable CUDA device: ")
                    && warnings[0].ends_with("; using the CPU"),
                "{log}"
            );
            assert!(log.contains("] Use CPU."), "{log}");
        }
    }
    assert!(log.contains("Optimization Done."), "{log}");
    assert!(dir.path().join("tiny_iter_2.caffemodel").exists());
}

#[test]
fn device_query_prints_the_device_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["device-query", "-gpu", "0"],
        vec!["device_query", "-gpu", "all"],
    ] {
        let output = rcaffe_in(dir.path(), &args);
        let log = stderr(&output);
        assert!(!log.contains("panicked"), "{log}");
        match no_device() {
            None => {
                assert!(output.status.success(), "{args:?}: {log}");
                assert!(log.contains("] Querying GPUs 0"), "{args:?}: {log}");
                assert!(log.contains("Total global memory:"), "{args:?}: {log}");
            }
            Some(_) => {
                assert!(!output.status.success(), "{args:?}: {log}");
                assert!(
                    log.contains(&format!(
                        "rcaffe: error: device-query -gpu {}: no usable CUDA device: ",
                        args[2]
                    )),
                    "{args:?}: {log}"
                );
            }
        }
    }
    // Nothing goes to stdout either way: the fields are log lines, as upstream's.
    assert!(stdout(&rcaffe_in(dir.path(), &["device-query"])).is_empty());
}
