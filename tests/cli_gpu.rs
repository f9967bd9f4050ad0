//! `-gpu`, `solver_mode: GPU` and `device-query` through the `rcaffe` binary, on a machine
//! without a usable CUDA device (CI's): clear errors naming the device and the reason, and the
//! CPU fallback with one warning. On a machine with a device these tests say they skipped;
//! `scripts/gpu-check.sh` covers that side.

mod common;

use common::{rcaffe_in, stderr};
use std::path::Path;

use rcaffe::backend::cuda::device;

/// Whether this machine has a usable device, in which case the no-device tests skip.
fn device_present(test: &str) -> bool {
    match device::probe() {
        Ok(count) => {
            eprintln!("SKIPPED {test}: this machine has {count} CUDA device(s)");
            true
        }
        Err(_) => false,
    }
}

/// A two-iteration solver on DummyData, asking for the GPU, in `dir`.
fn tiny_gpu_solver(dir: &Path) -> &'static str {
    std::fs::write(
        dir.join("solver.prototxt"),
        r#"
net_param {
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
}
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
fn gpu_flag_without_a_device_is_a_clear_error() {
    if device_present("gpu_flag_without_a_device_is_a_clear_error") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let solver = tiny_gpu_solver(dir.path());
    for args in [
        vec!["train", "-solver", solver, "-gpu", "0"],
        vec![
            "test",
            "-model",
            solver,
            "-weights",
            "w.caffemodel",
            "-gpu",
            "0",
        ],
        vec!["time", "-model", solver, "-gpu", "0"],
    ] {
        let output = rcaffe_in(dir.path(), &args);
        let log = stderr(&output);
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
        assert!(!log.contains("panicked"), "{log}");
    }
}

#[test]
fn gpu_lists_warn_that_only_the_first_device_is_used() {
    if device_present("gpu_lists_warn_that_only_the_first_device_is_used") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let solver = tiny_gpu_solver(dir.path());
    let output = rcaffe_in(dir.path(), &["train", "-solver", solver, "-gpu", "0,1"]);
    let log = stderr(&output);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains(
            "multi-GPU training is not supported: 2 devices were asked for; using device 0 only"
        ),
        "{log}"
    );
    assert!(log.contains("-gpu 0,1: no usable CUDA device"), "{log}");

    let output = rcaffe_in(dir.path(), &["train", "-solver", solver, "-gpu", "first"]);
    let log = stderr(&output);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("-gpu 'first' is not a device id, a comma-separated list of ids, or 'all'"),
        "{log}"
    );
}

#[test]
fn solver_mode_gpu_without_a_device_trains_on_the_cpu_with_one_warning() {
    if device_present("solver_mode_gpu_without_a_device_trains_on_the_cpu_with_one_warning") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let solver = tiny_gpu_solver(dir.path());
    let output = rcaffe_in(dir.path(), &["train", "-solver", solver]);
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.starts_with('W')).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("solver_mode: GPU requested, but no usable CUDA device: ")
            && warnings[0].ends_with("; using the CPU"),
        "{log}"
    );
    assert!(log.contains("] Use CPU."), "{log}");
    assert!(log.contains("Optimization Done."), "{log}");
    assert!(dir.path().join("tiny_iter_2.caffemodel").exists());
}

#[test]
fn device_query_without_a_device_is_a_clear_error() {
    if device_present("device_query_without_a_device_is_a_clear_error") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["device-query", "-gpu", "0"],
        vec!["device_query", "-gpu", "all"],
    ] {
        let output = rcaffe_in(dir.path(), &args);
        let log = stderr(&output);
        assert!(!output.status.success(), "{args:?}: {log}");
        assert!(
            log.contains(&format!(
                "rcaffe: error: device-query -gpu {}: no usable CUDA device: ",
                args[2]
            )),
            "{args:?}: {log}"
        );
        assert!(!log.contains("panicked"), "{log}");
    }
}
