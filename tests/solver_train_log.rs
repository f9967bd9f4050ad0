//! What `rcaffe train` logs around the solver (its own test binary: it installs a logger that
//! keeps every line): `solver_mode: GPU` falls back to the CPU with one warning, and the lines
//! upstream's `caffe train` adds come in upstream's order.

use std::sync::Mutex;

use rcaffe::solver::{train, TrainOptions};

static LINES: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct Keep;

impl log::Log for Keep {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LINES
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

#[test]
fn gpu_mode_falls_back_to_the_cpu_with_one_warning() {
    log::set_boxed_logger(Box::new(Keep)).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let dir = tempfile::tempdir().unwrap();
    let solver_file = dir.path().join("tiny.solver.prototxt");
    std::fs::write(
        &solver_file,
        format!(
            r#"
net_param {{
  name: "tiny"
  layer {{
    name: "data" type: "DummyData" top: "x" top: "y"
    dummy_data_param {{
      shape {{ dim: 2 dim: 3 }} shape {{ dim: 2 dim: 1 }}
      data_filler {{ type: "constant" value: 1 }}
      data_filler {{ type: "constant" value: 0 }}
    }}
  }}
  layer {{
    name: "ip" type: "InnerProduct" bottom: "x" top: "p"
    inner_product_param {{ num_output: 1 weight_filler {{ type: "constant" value: 0.1 }} }}
  }}
  layer {{ name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }}
}}
base_lr: 0.1 lr_policy: "fixed" max_iter: 2 display: 1
solver_mode: GPU
snapshot_prefix: "{}"
"#,
            dir.path().join("tiny").display()
        ),
    )
    .unwrap();
    train(&solver_file, &TrainOptions::default()).unwrap();
    let lines = LINES.lock().unwrap().clone();
    let warnings: Vec<&String> = lines
        .iter()
        .filter(|(level, _)| *level == log::Level::Warn)
        .map(|(_, l)| l)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("GPU") && warnings[0].contains("CPU"));
    let order: Vec<&str> = lines
        .iter()
        .map(|(_, l)| l.as_str())
        .filter(|l| {
            [
                "Use CPU.",
                "Starting Optimization",
                "Solving tiny",
                "Optimization Done.",
            ]
            .contains(l)
        })
        .collect();
    assert_eq!(
        order,
        [
            "Use CPU.",
            "Starting Optimization",
            "Solving tiny",
            "Optimization Done.",
            "Optimization Done."
        ]
    );
}
