//! Fixtures shared by test files (`mod common;`).

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
