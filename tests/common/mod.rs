//! Fixtures shared by test files (`mod common;`). Each test file uses some of them, so the rest
//! are dead code there.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The `rcaffe` command with `args`, for a test that sets up more before running it.
pub fn rcaffe_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rcaffe"));
    command.args(args);
    command
}

/// How close a computed `f32` must be to its `f64` reference: within
/// `max(absolute, relative × |reference|)`.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub relative: f64,
    pub absolute: f64,
}

impl Tolerance {
    /// `relative` of the reference's magnitude, and never less than `relative × floor` (for
    /// references near zero).
    pub const fn relative(relative: f64, floor: f64) -> Self {
        Tolerance {
            relative,
            absolute: relative * floor,
        }
    }
}

/// A bare number is a relative tolerance with a floor of 1: `tol × max(|reference|, 1)`.
impl From<f64> for Tolerance {
    fn from(relative: f64) -> Self {
        Tolerance::relative(relative, 1.0)
    }
}

/// Asserts that `got` has `want`'s length and that every element is within `tolerance` of the
/// reference; a failure names `what`, the element and both values. A NaN on either side fails.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tolerance: impl Into<Tolerance>) {
    let Tolerance { relative, absolute } = tolerance.into();
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = f64::from(g);
        assert!(
            (g - w).abs() <= absolute.max(relative * w.abs()),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

/// Runs the `rcaffe` binary as a user runs it.
pub fn rcaffe(args: &[&str]) -> Output {
    rcaffe_command(args)
        .output()
        .expect("the rcaffe binary runs")
}

/// Runs the `rcaffe` binary in `folder`.
pub fn rcaffe_in(folder: &Path, args: &[&str]) -> Output {
    rcaffe_command(args)
        .current_dir(folder)
        .output()
        .expect("the rcaffe binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A solver with an inline two-layer net on DummyData that trains in milliseconds, tests every
/// 3 iterations and logs every iteration: for tests that need a real training log.
pub const TINY_SOLVER: &str = r#"
net_param {
  name: "tiny"
  layer {
    name: "data" type: "DummyData" top: "x" top: "y"
    dummy_data_param {
      shape { dim: 4 dim: 3 } shape { dim: 4 dim: 1 }
      data_filler { type: "gaussian" std: 1 }
      data_filler { type: "constant" value: 0.5 }
    }
  }
  layer {
    name: "ip" type: "InnerProduct" bottom: "x" top: "p"
    inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 0.1 } }
  }
  layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
}
test_iter: 2
test_interval: 3
base_lr: 0.1
lr_policy: "step"
gamma: 0.5
stepsize: 4
momentum: 0.9
max_iter: 9
display: 1
random_seed: 7
snapshot_after_train: false
"#;
