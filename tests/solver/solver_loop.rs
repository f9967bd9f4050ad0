//! The training loop, snapshots and restores on a tiny net (DummyData with constant data, two
//! InnerProducts, a Sigmoid, a Euclidean loss): the log's structure against upstream's LeNet
//! log, bit-identical resumes for every update rule, and upstream's own LeNet `.solverstate`.

use std::path::{Path, PathBuf};

use rcaffe::backend::CpuBackend;
use rcaffe::data::hdf5::Reader;
use rcaffe::proto::caffe::SolverParameter;
use rcaffe::proto::{parse_text, read_solverstate};
use rcaffe::solver::{Solver, SolverError};

const UPSTREAM: &str = "/work/shared/reference/upstream/lenet";

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
    param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
    inner_product_param {
      num_output: 5
      weight_filler { type: "gaussian" std: 0.5 }
      bias_filler { type: "constant" value: 0.1 }
    }
  }
  layer { name: "act" type: "Sigmoid" bottom: "h" top: "h" }
  layer {
    name: "ip2" type: "InnerProduct" bottom: "h" top: "p"
    inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } }
  }
  layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
}
random_seed: 1701
"#;

fn solver_param(extra: &str, prefix: &Path) -> SolverParameter {
    let policy = if extra.contains("lr_policy") {
        ""
    } else {
        "lr_policy: 'fixed' base_lr: 0.1"
    };
    let text = format!(
        "{TINY_NET}\n{extra}\n{policy}\nsnapshot_prefix: \"{}\"\n",
        prefix.display()
    );
    parse_text(&text, Path::new("tiny.solver.prototxt")).unwrap()
}

fn build(param: SolverParameter) -> Solver<CpuBackend> {
    Solver::new_recording(
        param,
        Path::new("tiny.solver.prototxt"),
        &CpuBackend::default(),
    )
    .unwrap()
}

fn weights(solver: &Solver<CpuBackend>) -> Vec<Vec<f32>> {
    solver
        .net()
        .learnable_params()
        .iter()
        .map(|b| b.data_to_vec().unwrap())
        .collect()
}

// ---- the log's structure --------------------------------------------------------------------

/// What a solver log line is, with the iteration it names; `None` for lines the comparison
/// ignores. Also checks the line's exact wording.
fn kind(line: &str) -> Option<(&'static str, Option<i64>)> {
    let num_after = |s: &str| -> Option<i64> {
        s.chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .ok()
    };
    if line.starts_with("Solving ") {
        return Some(("solving", None));
    }
    if line.starts_with("Learning Rate Policy: ") {
        return Some(("policy", None));
    }
    if line == "Optimization Done." {
        return Some(("done", None));
    }
    if let Some(rest) = line.strip_prefix("    Train net output #") {
        assert!(rest.contains(": ") && rest.contains(" = "), "{line}");
        if rest.contains("(*") {
            assert!(rest.ends_with(" loss)"), "{line}");
        }
        return Some(("train_output", None));
    }
    if let Some(rest) = line.strip_prefix("    Test net output #") {
        assert!(rest.contains(": ") && rest.contains(" = "), "{line}");
        return Some(("test_output", None));
    }
    if let Some(rest) = line.strip_prefix("Snapshotting to binary proto file ") {
        assert!(rest.ends_with(".caffemodel"), "{line}");
        let n = rest.rsplit("_iter_").next().and_then(num_after);
        return Some(("snapshot_model", n));
    }
    if let Some(rest) = line.strip_prefix("Snapshotting solver state to binary proto file ") {
        assert!(rest.ends_with(".solverstate"), "{line}");
        let n = rest.rsplit("_iter_").next().and_then(num_after);
        return Some(("snapshot_state", n));
    }
    if let Some(rest) = line.strip_prefix("Iteration ") {
        let n = num_after(rest);
        let after = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        if after.starts_with(" (") {
            assert!(
                after.contains(" iter/s, ") && after.contains(" iters), loss = "),
                "{line}"
            );
            return Some(("display", n));
        }
        if after.starts_with(", lr = ") {
            return Some(("lr", n));
        }
        if after.starts_with(", Testing net (#") {
            assert!(after.ends_with(')'), "{line}");
            return Some(("testing", n));
        }
        if after.starts_with(", loss = ") {
            return Some(("final_loss", n));
        }
        panic!("unexpected iteration line: {line}");
    }
    None
}

/// The kinds of `lines`, runs of outputs collapsed to one entry.
fn structure<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<(&'static str, Option<i64>)> {
    let mut out: Vec<(&'static str, Option<i64>)> = Vec::new();
    for line in lines {
        if let Some(k) = kind(line) {
            let repeat = matches!(k.0, "train_output" | "test_output")
                && out.last().is_some_and(|last| last.0 == k.0);
            if !repeat {
                out.push(k);
            }
        }
    }
    out
}

/// The messages upstream's solver logged from "Solving" on (solver.cpp and sgd_solver.cpp).
fn upstream_solver_messages(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut started = false;
    for line in log.lines() {
        let Some((head, message)) = line.split_once("] ") else {
            continue;
        };
        if !(head.contains(" solver.cpp:") || head.contains(" sgd_solver.cpp:")) {
            continue;
        }
        started |= message.starts_with("Solving ");
        if started {
            out.push(message.to_string());
        }
    }
    out
}

#[test]
fn log_structure_matches_upstream_lenet_run() {
    let dir = tempfile::tempdir().unwrap();
    // sgd_inv's schedule and intervals, on the tiny net.
    let param = solver_param(
        "test_iter: 2 test_interval: 100 base_lr: 0.01 display: 1 max_iter: 300 \
         lr_policy: 'inv' gamma: 0.0001 power: 0.75 momentum: 0.9 weight_decay: 0.0005 \
         snapshot: 150 snapshot_after_train: false",
        &dir.path().join("tiny"),
    );
    let mut solver = build(param);
    solver.solve(None).unwrap();
    let ours = solver.take_log();
    let upstream_log = std::fs::read_to_string(format!("{UPSTREAM}/sgd_inv.log")).unwrap();
    let theirs = upstream_solver_messages(&upstream_log);
    let ours_structure = structure(ours.iter().map(String::as_str));
    let theirs_structure = structure(theirs.iter().map(String::as_str));
    assert_eq!(ours_structure.len(), theirs_structure.len());
    for (i, (a, b)) in ours_structure.iter().zip(&theirs_structure).enumerate() {
        assert_eq!(a, b, "entry {i}");
    }
    // Same schedule: every printed learning rate is upstream's, digit for digit.
    let lrs = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.split_once(", lr = "))
            .map(|(_, v)| v.to_owned())
            .collect()
    };
    assert_eq!(lrs(&ours), lrs(&theirs));
    assert!(dir.path().join("tiny_iter_150.caffemodel").exists());
    assert!(dir.path().join("tiny_iter_300.solverstate").exists());
    assert_eq!(solver.iter(), 300);
}

#[test]
fn display_lines_read_as_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let param = solver_param(
        "base_lr: 0.1 display: 2 max_iter: 4 lr_policy: 'fixed' average_loss: 2 \
         test_iter: 1 test_interval: 2 test_initialization: false test_compute_loss: true",
        &dir.path().join("tiny"),
    );
    let mut solver = build(param);
    solver.solve(None).unwrap();
    let log = solver.take_log();
    let train: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("Train net output"))
        .collect();
    assert_eq!(train.len(), 2, "{log:#?}");
    assert!(
        train[0].starts_with("    Train net output #0: loss = ") && train[0].ends_with(" loss)"),
        "{}",
        train[0]
    );
    assert!(log.iter().any(|l| l == "Iteration 0, lr = 0.1"), "{log:#?}");
    assert!(log.iter().any(|l| l.starts_with("Test loss: ")), "{log:#?}");
    // test_initialization false: the first test is at iteration 2.
    let tests: Vec<&String> = log.iter().filter(|l| l.contains("Testing net")).collect();
    assert_eq!(tests[0], "Iteration 2, Testing net (#0)");
    assert_eq!(tests.len(), 2);
    assert_eq!(solver.test_scores().len(), 2);
    assert_eq!(solver.test_scores()[0].outputs[0].0, "loss");
    // Smoothed loss over 2: the displayed loss at 2 is the mean of the losses at 1 and 2.
    assert!(
        log.iter().any(|l| l.starts_with("Iteration 4, loss = ")),
        "{log:#?}"
    );
}

#[test]
fn iter_size_and_clipping_log_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let param = solver_param(
        "base_lr: 0.5 display: 1 max_iter: 3 lr_policy: 'fixed' iter_size: 2 \
         clip_gradients: 0.001 regularization_type: 'L1' weight_decay: 0.01",
        &dir.path().join("tiny"),
    );
    let mut solver = build(param);
    solver.solve(None).unwrap();
    let log = solver.take_log();
    let clip: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("Gradient clipping: "))
        .collect();
    assert_eq!(clip.len(), 3, "{log:#?}");
    assert!(
        clip[0].contains("scaling down gradients (L2 norm ")
            && clip[0].contains(" > 0.001) by scale factor "),
        "{}",
        clip[0]
    );
}

// ---- snapshot and restore -------------------------------------------------------------------

const RULES: [&str; 6] = [
    "type: 'SGD' momentum: 0.9",
    "type: 'Nesterov' momentum: 0.9",
    "type: 'AdaGrad'",
    "type: 'RMSProp' rms_decay: 0.9",
    "type: 'AdaDelta' momentum: 0.9 delta: 1e-6",
    "type: 'Adam' momentum: 0.9 momentum2: 0.999",
];

#[test]
fn resume_is_bit_identical_for_every_rule() {
    for rule in RULES {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("tiny");
        let extra = format!(
            "{rule} base_lr: 0.05 lr_policy: 'multistep' gamma: 0.5 stepvalue: 2 stepvalue: 5 \
             weight_decay: 0.001 max_iter: 8 snapshot: 4 display: 0"
        );
        let mut straight = build(solver_param(&extra, &prefix));
        straight.solve(None).unwrap();
        let want = weights(&straight);
        let state = dir.path().join("tiny_iter_4.solverstate");
        assert!(state.exists(), "{rule}");
        assert_eq!(
            read_solverstate(&state).unwrap().current_step(),
            1,
            "{rule}"
        );

        let mut resumed = build(solver_param(&extra, &prefix));
        resumed.solve(Some(&state)).unwrap();
        assert_eq!(resumed.iter(), 8);
        assert_eq!(weights(&resumed), want, "{rule}: resumed weights differ");
        for (a, b) in resumed.history().iter().zip(straight.history()) {
            assert_eq!(a.data_to_vec().unwrap(), b.data_to_vec().unwrap(), "{rule}");
        }
        let expected_history = straight.net().learnable_params().len()
            * if rule.contains("AdaDelta") || rule.contains("Adam") {
                2
            } else {
                1
            };
        assert_eq!(straight.history().len(), expected_history, "{rule}");
        assert_eq!(
            read_solverstate(&state).unwrap().history.len(),
            expected_history,
            "{rule}"
        );
    }
}

#[test]
fn restore_rejects_a_state_of_another_rule() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("tiny");
    let mut sgd = build(solver_param("type: 'SGD' max_iter: 1 snapshot: 1", &prefix));
    sgd.solve(None).unwrap();
    let mut adam = build(solver_param("type: 'Adam' max_iter: 2", &prefix));
    let err = adam
        .restore(&dir.path().join("tiny_iter_1.solverstate"))
        .unwrap_err();
    assert!(
        matches!(err, SolverError::State { .. }) && err.to_string().contains("history"),
        "{err}"
    );
}

#[test]
fn snapshot_after_train_in_hdf5() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("tiny");
    let mut solver = build(solver_param(
        "max_iter: 3 snapshot_after_train: true snapshot_format: HDF5",
        &prefix,
    ));
    solver.solve(None).unwrap();
    let log = solver.take_log();
    let model = dir.path().join("tiny_iter_3.caffemodel.h5");
    let state = dir.path().join("tiny_iter_3.solverstate.h5");
    for (line, file) in [
        ("Snapshotting to HDF5 file ", &model),
        ("Snapshotting solver state to HDF5 file ", &state),
    ] {
        let want = format!("{line}{}", file.display());
        assert!(log.contains(&want), "{want}: {log:#?}");
        assert!(file.exists(), "{}", file.display());
    }
    assert!(!dir.path().join("tiny_iter_3.caffemodel").exists());

    // Upstream's solverstate.h5 layout.
    let file = Reader::open(&state).unwrap();
    assert_eq!(file.read_int("iter").unwrap(), 3);
    assert_eq!(file.read_int("current_step").unwrap(), 0);
    assert_eq!(
        file.read_string("learned_net").unwrap(),
        model.to_string_lossy()
    );
    let params = solver.net().learnable_params();
    assert_eq!(file.links("history").unwrap().len(), params.len());
    for (i, (blob, param)) in solver.history().iter().zip(params).enumerate() {
        let array = file.read_array(&format!("history/{i}")).unwrap();
        assert_eq!(array.shape, param.shape());
        assert_eq!(array.values, blob.data_to_vec().unwrap());
    }
    // And the caffemodel.h5's: data/<layer>/<index>, every layer a group.
    let file = Reader::open(&model).unwrap();
    assert_eq!(
        file.links("data").unwrap(),
        ["act", "data", "ip1", "ip2", "loss"]
    );
    assert_eq!(file.links("data/ip1").unwrap(), ["0", "1"]);
    assert_eq!(
        file.read_array("data/ip2/0").unwrap().values,
        params[2].data_to_vec().unwrap()
    );
    assert_eq!(
        file.links("/").unwrap(),
        ["data"],
        "no diffs without snapshot_diff"
    );
}

#[test]
fn hdf5_snapshots_resume_as_binaryproto_ones_do() {
    for rule in [
        "type: 'SGD' momentum: 0.9",
        "type: 'Adam' momentum: 0.9 momentum2: 0.999",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let extra = format!(
            "{rule} base_lr: 0.05 lr_policy: 'multistep' gamma: 0.5 stepvalue: 2 stepvalue: 5 \
             weight_decay: 0.001 max_iter: 8 snapshot: 4 display: 0"
        );
        let mut binary = build(solver_param(&extra, &dir.path().join("binary")));
        binary.solve(None).unwrap();
        let want = weights(&binary);

        let hdf5_extra = format!("{extra} snapshot_format: HDF5 snapshot_diff: true");
        let hdf5_prefix = dir.path().join("hdf5");
        let mut straight = build(solver_param(&hdf5_extra, &hdf5_prefix));
        straight.solve(None).unwrap();
        assert_eq!(weights(&straight), want, "{rule}");

        // Resuming from the .solverstate.h5 (whose learned_net is the .caffemodel.h5) runs on
        // exactly as the binaryproto run did.
        let state = dir.path().join("hdf5_iter_4.solverstate.h5");
        let mut resumed = build(solver_param(&hdf5_extra, &hdf5_prefix));
        resumed.solve(Some(&state)).unwrap();
        assert_eq!(resumed.iter(), 8);
        assert_eq!(weights(&resumed), want, "{rule}: resumed weights differ");
        for (a, b) in resumed.history().iter().zip(binary.history()) {
            assert_eq!(a.data_to_vec().unwrap(), b.data_to_vec().unwrap(), "{rule}");
        }

        // The iteration-4 weights read from either format are the same.
        let mut from_binary = build(solver_param(&extra, &dir.path().join("x")));
        let mut from_hdf5 = build(solver_param(&extra, &dir.path().join("y")));
        from_binary
            .net_mut()
            .copy_trained_layers_from_file(&dir.path().join("binary_iter_4.caffemodel"))
            .unwrap();
        from_hdf5
            .net_mut()
            .copy_trained_layers_from_file(&dir.path().join("hdf5_iter_4.caffemodel.h5"))
            .unwrap();
        assert_eq!(weights(&from_hdf5), weights(&from_binary), "{rule}");
        let model = Reader::open(&dir.path().join("hdf5_iter_4.caffemodel.h5")).unwrap();
        assert!(
            model.has_dataset("diff/ip1/0"),
            "snapshot_diff writes the diffs"
        );
    }
}

/// The values the h5py fixture writes for a blob of `n` values: `scale * (i - n/2) / n`.
fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| scale * (i as f32 - n as f32 / 2.0) / n as f32)
        .collect()
}

fn assert_near(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-7, "{what}: {got:?} vs {want:?}");
    }
}

#[test]
fn a_state_h5_in_upstreams_layout_made_by_h5py_restores() {
    // iter and current_step int32 (1,), learned_net a NULLTERM string naming the
    // .caffemodel.h5 beside it, history/0..3 (tests/data/hdf5/make_fixtures.py).
    let state = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hdf5/upstream_tiny_iter_2.solverstate.h5");
    let dir = tempfile::tempdir().unwrap();
    let mut solver = build(solver_param(
        "type: 'SGD' momentum: 0.9 max_iter: 3 display: 0",
        &dir.path().join("tiny"),
    ));
    solver.restore(&state).unwrap();
    assert_eq!(solver.iter(), 2);
    let sizes = [15, 5, 10, 2];
    for (i, (blob, n)) in solver
        .net()
        .learnable_params()
        .iter()
        .zip(sizes)
        .enumerate()
    {
        assert_near(
            &format!("weights {i}"),
            &blob.data_to_vec().unwrap(),
            &ramp(n, 1.0),
        );
    }
    for (i, (blob, n)) in solver.history().iter().zip(sizes).enumerate() {
        assert_near(
            &format!("history {i}"),
            &blob.data_to_vec().unwrap(),
            &ramp(n, 0.01),
        );
    }
    solver.solve(None).unwrap();
    assert_eq!(solver.iter(), 3);
}

#[test]
fn a_state_h5_of_another_rule_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("tiny");
    let mut sgd = build(solver_param(
        "type: 'SGD' max_iter: 1 snapshot: 1 snapshot_format: HDF5",
        &prefix,
    ));
    sgd.solve(None).unwrap();
    let mut adam = build(solver_param("type: 'Adam' max_iter: 2", &prefix));
    let err = adam
        .restore(&dir.path().join("tiny_iter_1.solverstate.h5"))
        .unwrap_err();
    assert!(
        matches!(err, SolverError::State { .. }) && err.to_string().contains("history"),
        "{err}"
    );
    let missing = adam
        .restore(&dir.path().join("absent.solverstate.h5"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("absent.solverstate.h5"), "{missing}");
}

#[test]
fn non_finite_loss_stops_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("tiny");
    let mut solver = build(solver_param(
        "base_lr: 1e30 lr_policy: 'fixed' max_iter: 50 snapshot: 1 display: 0",
        &prefix,
    ));
    let err = solver.solve(None).unwrap_err();
    let SolverError::NonFiniteLoss { iter, .. } = &err else {
        panic!("expected a non-finite loss, got {err}");
    };
    let message = err.to_string();
    assert!(
        message.contains("1e+30") && message.contains("max_lr"),
        "{message}"
    );
    // Every snapshot written is of an iteration before the bad one.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("tiny_iter_") {
            let n: i32 = rest.split('.').next().unwrap().parse().unwrap();
            assert!(n <= *iter, "{name} written at or after iteration {iter}");
        }
    }
}

#[test]
fn weights_field_finetunes() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("tiny");
    let mut a = build(solver_param("max_iter: 2 snapshot: 2", &prefix));
    a.solve(None).unwrap();
    let model = dir.path().join("tiny_iter_2.caffemodel");
    let mut param = solver_param(
        "max_iter: 0 test_iter: 1 test_interval: 10",
        &dir.path().join("b"),
    );
    param.random_seed = Some(99);
    param.weights = vec![format!(" {} ", model.display())];
    let b = build(param);
    assert_eq!(weights(&b), weights(&a));
    let test_weights: Vec<Vec<f32>> = b.test_nets()[0]
        .learnable_params()
        .iter()
        .map(|p| p.data_to_vec().unwrap())
        .collect();
    assert_eq!(test_weights, weights(&a));
}

// ---- upstream's LeNet solver state --------------------------------------------------------

fn lenet_solver(dir: &Path) -> (SolverParameter, PathBuf) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist-mini");
    // The test set stands in for both sources: only shapes matter here.
    let lmdb = dir.join("fmnist_lmdb");
    rcaffe::data::convert_mnist(
        &data.join("t10k-images-idx3-ubyte.gz"),
        &data.join("t10k-labels-idx1-ubyte.gz"),
        &lmdb,
    )
    .unwrap();
    let mut net =
        rcaffe::proto::read_net(&Path::new(UPSTREAM).join("lenet_train_test.prototxt")).unwrap();
    for layer in &mut net.layer {
        if let Some(dp) = &mut layer.data_param {
            dp.source = Some(lmdb.to_string_lossy().into_owned());
        }
    }
    let solver_path = Path::new(UPSTREAM).join("sgd_inv.solver.prototxt");
    let mut param = rcaffe::proto::read_solver(&solver_path).unwrap();
    param.net = None;
    param.net_param = Some(net);
    param.snapshot_prefix = Some(dir.join("lenet").to_string_lossy().into_owned());
    param.random_seed = Some(1);
    (param, solver_path)
}

#[test]
fn restores_upstream_lenet_solverstate() {
    let dir = tempfile::tempdir().unwrap();
    let (mut param, solver_path) = lenet_solver(dir.path());
    param.max_iter = Some(151);
    param.test_interval = Some(1000);
    let mut solver = Solver::new_recording(param, &solver_path, &CpuBackend::default()).unwrap();
    let state_path = Path::new(UPSTREAM).join("sgd_inv_iter_150.solverstate");
    solver.restore(&state_path).unwrap();
    assert_eq!(solver.iter(), 150);
    let state = read_solverstate(&state_path).unwrap();
    let params = solver.net().learnable_params();
    assert_eq!(solver.history().len(), params.len());
    for (i, (h, p)) in solver.history().iter().zip(params).enumerate() {
        assert_eq!(h.shape(), p.shape(), "history {i}");
        assert_eq!(
            h.data_to_vec().unwrap(),
            state.history[i].data,
            "history {i}"
        );
    }
    // The weights are upstream's at iteration 150.
    let model =
        rcaffe::proto::read_caffemodel(&Path::new(UPSTREAM).join("sgd_inv_iter_150.caffemodel"))
            .unwrap();
    let conv1 = model.layer.iter().find(|l| l.name() == "conv1").unwrap();
    assert_eq!(params[0].data_to_vec().unwrap(), conv1.blobs[0].data);
    // One more iteration: its learning rate reads as upstream's.
    solver.step(1).unwrap();
    let log = solver.take_log();
    assert!(
        log.iter().any(|l| l == "Iteration 150, lr = 0.00988896"),
        "{log:#?}"
    );
}

/// Upstream's `inv` rate is `base_lr * powf(...)`, all in float: every printed rate of its
/// 300-iteration log, digit for digit (in double, 6 of them differ in the sixth digit, e.g.
/// iteration 40: upstream 0.00997011, double 0.0099701).
#[test]
fn inv_rates_digit_for_digit() {
    let upstream_log = std::fs::read_to_string(format!("{UPSTREAM}/sgd_inv.log")).unwrap();
    let param: SolverParameter = parse_text(
        "base_lr: 0.01 lr_policy: 'inv' gamma: 0.0001 power: 0.75",
        Path::new("inv"),
    )
    .unwrap();
    let schedule = rcaffe::lr_policy::LrSchedule::new(&param).unwrap();
    let mut state = rcaffe::lr_policy::LrState::default();
    let mut compared = 0;
    for message in upstream_solver_messages(&upstream_log) {
        if let Some((head, rate)) = message.split_once(", lr = ") {
            let iter: u32 = head.trim_start_matches("Iteration ").parse().unwrap();
            let ours = rcaffe::log::cpp_float(f64::from(schedule.rate(iter, &mut state)));
            assert_eq!(ours, rate, "iteration {iter}");
            compared += 1;
        }
    }
    assert_eq!(compared, 300, "every iteration's printed rate");
}

// ---- end to end against upstream's LeNet runs ---------------------------------------------

/// Runs upstream's LeNet solver `run` (from its `init.caffemodel`, on the same mini
/// Fashion-MNIST LMDBs, converted here) for `iters` iterations; returns our solver messages and
/// upstream's.
fn lenet_run(run: &str, iters: i32) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist-mini");
    for (name, set) in [
        ("fmnist_mini_train_lmdb", "train"),
        ("fmnist_mini_test_lmdb", "t10k"),
    ] {
        rcaffe::data::convert_mnist(
            &data.join(format!("{set}-images-idx3-ubyte.gz")),
            &data.join(format!("{set}-labels-idx1-ubyte.gz")),
            &dir.path().join(name),
        )
        .unwrap();
    }
    let mut net =
        rcaffe::proto::read_net(&Path::new(UPSTREAM).join("lenet_train_test.prototxt")).unwrap();
    for layer in &mut net.layer {
        if let Some(dp) = &mut layer.data_param {
            let name = dp.source().to_string();
            dp.source = Some(dir.path().join(name).to_string_lossy().into_owned());
        }
    }
    let solver_path = Path::new(UPSTREAM).join(format!("{run}.solver.prototxt"));
    let mut param = rcaffe::proto::read_solver(&solver_path).unwrap();
    param.net = None;
    param.net_param = Some(net);
    param.snapshot_prefix = Some(dir.path().join("lenet").to_string_lossy().into_owned());
    param.weights = vec![format!("{UPSTREAM}/init.caffemodel")];
    param.max_iter = Some(iters);
    param.snapshot = Some(0);
    let mut solver = Solver::new_recording(param, &solver_path, &CpuBackend::default()).unwrap();
    solver.solve(None).unwrap();
    let ours = solver.take_log();
    let upstream_log = std::fs::read_to_string(format!("{UPSTREAM}/{run}.log")).unwrap();
    (ours, upstream_solver_messages(&upstream_log))
}

/// The number after the last " = " of the first line starting with `prefix`.
fn value(lines: &[String], prefix: &str) -> f64 {
    let line = lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}"));
    let tail = line.rsplit(" = ").next().unwrap();
    tail.split_whitespace().next().unwrap().parse().unwrap()
}

/// The first test pass and the training losses of the first `iters` iterations agree with
/// upstream's log (to `rel`: float rounding, which grows as the runs go on).
fn assert_follows_upstream(run: &str, iters: i32, rel: f64) {
    let (ours, theirs) = lenet_run(run, iters);
    // Iteration 0's test: same weights, same data.
    assert_eq!(
        value(&ours, "    Test net output #0: accuracy"),
        value(&theirs, "    Test net output #0: accuracy"),
        "{run}"
    );
    let (a, b) = (
        value(&ours, "    Test net output #1: loss"),
        value(&theirs, "    Test net output #1: loss"),
    );
    assert!(
        (a - b).abs() <= 1e-5 * b,
        "{run}: test loss {a} vs upstream {b}"
    );
    for iter in 0..iters {
        let prefix = format!("Iteration {iter} (");
        let (a, b) = (value(&ours, &prefix), value(&theirs, &prefix));
        assert!(
            (a - b).abs() <= rel * b,
            "{run}: iteration {iter}: loss {a} vs upstream {b}"
        );
        let prefix = format!("Iteration {iter}, lr = ");
        let (a, b) = (value(&ours, &prefix), value(&theirs, &prefix));
        assert!(
            (a - b).abs() <= 2e-6 * b,
            "{run}: iteration {iter}: lr {a} vs {b}"
        );
    }
}

#[test]
fn lenet_sgd_inv_follows_upstream_log() {
    assert_follows_upstream("sgd_inv", 8, 1e-5);
}

#[test]
fn lenet_nesterov_follows_upstream_log() {
    assert_follows_upstream("nesterov_triangular", 8, 1e-5);
}

#[test]
fn lenet_adagrad_follows_upstream_log() {
    assert_follows_upstream("adagrad_triangular", 8, 1e-5);
}

#[test]
fn lenet_rmsprop_follows_upstream_log() {
    assert_follows_upstream("rmsprop_triangular", 8, 1e-5);
}

#[test]
fn lenet_adadelta_follows_upstream_log() {
    assert_follows_upstream("adadelta_triangular", 8, 1e-5);
}

#[test]
fn lenet_adam_follows_upstream_log() {
    assert_follows_upstream("adam_triangular", 8, 1e-5);
}

#[test]
fn lenet_l1_clip_iter_size_follows_upstream_log() {
    let run = "sgd_triangular_l1_clip_itersize";
    assert_follows_upstream(run, 6, 1e-5);
    // The clipping lines: the norm and the factor as upstream's.
    let (ours, theirs) = lenet_run(run, 3);
    let clips = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.starts_with("Gradient clipping"))
            .cloned()
            .collect()
    };
    let (a, b) = (clips(&ours), clips(&theirs));
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        let norm = |l: &str| -> f64 {
            l.split("L2 norm ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!((norm(x) - norm(y)).abs() <= 1e-5 * norm(y), "{x} vs {y}");
    }
}

// ---- the library entry points of `rcaffe train` and `rcaffe test` --------------------------

#[test]
fn train_and_test_entry_points() {
    use rcaffe::solver::{test, train, TrainOptions};
    let dir = tempfile::tempdir().unwrap();
    let solver_file = dir.path().join("tiny.solver.prototxt");
    let prefix = dir.path().join("tiny");
    std::fs::write(
        &solver_file,
        format!(
            "{TINY_NET}\ntype: 'Adam' base_lr: 0.01 lr_policy: 'fixed' max_iter: 10 snapshot: 2 \
             solver_mode: CPU snapshot_prefix: \"{}\"\n",
            prefix.display()
        ),
    )
    .unwrap();
    let straight = train(&solver_file, &TrainOptions::default()).unwrap();
    assert_eq!(straight.iter(), 10);

    // -snapshot resumes; -iterations-style override of max_iter.
    let resumed = train(
        &solver_file,
        &TrainOptions {
            snapshot: Some(dir.path().join("tiny_iter_4.solverstate")),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(weights(&resumed), weights(&straight));
    let short = train(
        &solver_file,
        &TrainOptions {
            max_iter: Some(3),
            weights: Some(
                dir.path()
                    .join("tiny_iter_10.caffemodel")
                    .display()
                    .to_string(),
            ),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(short.iter(), 3);

    // Both a snapshot and weights: refused, as upstream.
    let err = train(
        &solver_file,
        &TrainOptions {
            snapshot: Some(dir.path().join("tiny_iter_4.solverstate")),
            weights: Some("x.caffemodel".into()),
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("not both"), "{err}");

    // `rcaffe test` on the net alone with the trained weights.
    let model = dir.path().join("tiny.prototxt");
    let net_text = TINY_NET
        .trim()
        .trim_start_matches("net_param {")
        .rsplit_once('}')
        .unwrap()
        .0
        .to_string();
    std::fs::write(&model, net_text.replace("random_seed: 1701", "")).unwrap();
    let caffemodel = dir.path().join("tiny_iter_10.caffemodel");
    let (outputs, loss) = test(&model, &caffemodel.display().to_string(), 3, 0, &[]).unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].0, "loss");
    assert!((outputs[0].1 - loss).abs() <= 1e-6 * loss.abs().max(1.0));
}

#[test]
fn test_refuses_to_score_without_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.prototxt");
    let net_text = TINY_NET
        .trim()
        .trim_start_matches("net_param {")
        .rsplit_once('}')
        .unwrap()
        .0
        .replace("random_seed: 1701", "");
    std::fs::write(&model, net_text).unwrap();
    // Upstream's `caffe test` refuses too: random weights score nothing.
    for weights in ["", " , "] {
        let error = rcaffe::solver::test(&model, weights, 1, 0, &[]).unwrap_err();
        assert!(matches!(error, SolverError::NoWeights), "{error}");
        assert!(
            error.to_string().starts_with("Need model weights to score"),
            "{error}"
        );
    }
}

/// A solver file in `dir` with `setting` on its line 2, training the tiny net for an iteration.
fn solver_file_with(dir: &Path, setting: &str) -> PathBuf {
    let path = dir.join("checked.solver.prototxt");
    let prefix = dir.join("checked");
    std::fs::write(
        &path,
        format!(
            "# the setting under test\n{setting}\n{TINY_NET}\nlr_policy: 'fixed' max_iter: 1 \
             snapshot_after_train: false snapshot_prefix: \"{}\"\n",
            prefix.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn out_of_range_solver_values_are_refused_with_file_line_and_field() {
    use rcaffe::solver::{train, TrainOptions};
    let dir = tempfile::tempdir().unwrap();
    for (setting, field, reason) in [
        (
            "base_lr: -0.01",
            "base_lr",
            "base_lr must be at least 0 and finite, but base_lr is -0.01",
        ),
        (
            "momentum: 1",
            "momentum",
            "should lie between 0 and 1, 1 excluded (it is 1)",
        ),
        (
            "momentum: -0.5",
            "momentum",
            "should lie between 0 and 1, 1 excluded (it is -0.5)",
        ),
        (
            "type: 'Nesterov' momentum: 1.5",
            "momentum",
            "should lie between 0 and 1, 1 excluded (it is 1.5)",
        ),
        (
            "type: 'AdaDelta' momentum: 1",
            "momentum",
            "should lie between 0 and 1, 1 excluded (it is 1)",
        ),
        (
            "type: 'Adam' momentum2: 1",
            "momentum2",
            "should lie between 0 and 1, 1 excluded (it is 1)",
        ),
        (
            "type: 'Adam' delta: -0.5",
            "delta",
            "should be at least 0 and finite (it is -0.5)",
        ),
        (
            "type: 'AdaGrad' delta: -0.5",
            "delta",
            "should be at least 0 and finite (it is -0.5)",
        ),
        (
            "weight_decay: -0.0005",
            "weight_decay",
            "should be at least 0 and finite (it is -0.0005)",
        ),
    ] {
        let path = solver_file_with(dir.path(), setting);
        let Err(error) = train(&path, &TrainOptions::default()) else {
            panic!("{setting}: trained instead of refusing");
        };
        assert!(
            matches!(&error, SolverError::Field { line: Some(2), error, .. } if error.field == field),
            "{setting}: {error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("{}:2: {field}: {reason}", path.display()),
            "{setting}"
        );
    }
}

#[test]
fn edge_values_of_the_checked_solver_fields_still_train() {
    let dir = tempfile::tempdir().unwrap();
    for setting in [
        "base_lr: 0 momentum: 0 weight_decay: 0",
        "base_lr: 0.01 momentum: 0.999",
        "base_lr: 0.01 type: 'Adam' momentum: 0 momentum2: 0",
        "base_lr: 0.01 type: 'AdaGrad' delta: 0",
    ] {
        let path = solver_file_with(dir.path(), setting);
        let trained = rcaffe::solver::train(&path, &Default::default())
            .unwrap_or_else(|error| panic!("{setting}: {error}"));
        assert_eq!(trained.iter(), 1, "{setting}");
    }
}

/// A longer run (`cargo test --test solver_loop -- --ignored`): 100 iterations of
/// `sgd_inv` and the test pass at iteration 100 stay within float drift of upstream's.
#[test]
#[ignore = "about 10 s"]
fn lenet_sgd_inv_100_iterations_follow_upstream_log() {
    let (ours, theirs) = lenet_run("sgd_inv", 100);
    let tested = |lines: &[String], what: &str| -> f64 {
        let start = lines
            .iter()
            .position(|l| l == "Iteration 100, Testing net (#0)")
            .unwrap();
        value(&lines[start..], what)
    };
    for (what, rel) in [
        ("    Test net output #0: accuracy", 0.01),
        ("    Test net output #1: loss", 0.01),
    ] {
        let (a, b) = (tested(&ours, what), tested(&theirs, what));
        eprintln!("{what}: rcaffe {a}, upstream {b}");
        assert!((a - b).abs() <= rel * b, "{what}: {a} vs upstream {b}");
    }
    for iter in [10, 50, 99] {
        let prefix = format!("Iteration {iter} (");
        let (a, b) = (value(&ours, &prefix), value(&theirs, &prefix));
        eprintln!("iteration {iter}: loss rcaffe {a}, upstream {b}");
        assert!((a - b).abs() <= 0.01 * b, "iteration {iter}: {a} vs {b}");
    }
}

/// The learning rates the LeNet runs printed, digit for digit, from lr_policy's schedule (but
/// `inv`'s, which differ in 6 of 300: see `inv_rates_digit_for_digit`).
#[test]
fn printed_rates_of_the_lenet_runs() {
    let mut total = 0;
    for run in [
        "sgd_triangular2",
        "sgd_triangular_l1_clip_itersize",
        "nesterov_triangular",
        "adam_triangular",
        "rmsprop_triangular",
        "adagrad_triangular",
        "adadelta_triangular",
    ] {
        let param =
            rcaffe::proto::read_solver(&Path::new(UPSTREAM).join(format!("{run}.solver.prototxt")))
                .unwrap();
        let schedule = rcaffe::lr_policy::LrSchedule::new(&param).unwrap();
        let mut state = rcaffe::lr_policy::LrState::default();
        let log = std::fs::read_to_string(format!("{UPSTREAM}/{run}.log")).unwrap();
        let mut bad = Vec::new();
        for message in upstream_solver_messages(&log) {
            if let Some((head, rate)) = message.split_once(", lr = ") {
                let iter: u32 = head.trim_start_matches("Iteration ").parse().unwrap();
                let ours = rcaffe::log::cpp_float(f64::from(schedule.rate(iter, &mut state)));
                if ours != rate {
                    bad.push(format!("{iter}: {ours} vs {rate}"));
                }
            }
        }
        eprintln!(
            "{run}: {} mismatches {:?}",
            bad.len(),
            &bad[..bad.len().min(4)]
        );
        total += bad.len();
    }
    assert_eq!(total, 0);
}

// ---- `rcaffe time -solver` ------------------------------------------------------------------

#[test]
fn time_training_runs_the_iterations_training_runs_and_nothing_else() {
    use rcaffe::benchmark::training::{time_training, training_only, WARMUP_ITERATIONS};
    let dir = tempfile::tempdir().unwrap();
    let param = solver_param(
        "lr_policy: 'triangular' base_lr: 0.01 max_lr: 0.3 stepsize: 3 momentum: 0.9 \
         test_iter: 1 test_interval: 1 display: 1 snapshot: 1",
        &dir.path().join("tiny"),
    );
    let mut timed = build(training_only(param.clone()));
    let timing = time_training(&mut timed, 4).unwrap();
    assert_eq!(timing.iterations, 4);
    assert_eq!(timed.iter(), WARMUP_ITERATIONS + 4);
    assert!(timing.total > std::time::Duration::ZERO);
    // No test pass, display or snapshot fell inside.
    let log = timed.take_log();
    assert!(!log.iter().any(|l| l.contains("Testing net")), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("loss = ")), "{log:#?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // The same iterations as training proper: the weights match bit for bit.
    let mut trained = build(param);
    trained.step(WARMUP_ITERATIONS + 4).unwrap();
    assert_eq!(weights(&timed), weights(&trained));
    assert!(trained.take_log().iter().any(|l| l.contains("Testing net")));
}

#[test]
fn time_training_refuses_to_run_poly_past_max_iter() {
    use rcaffe::benchmark::training::{time_training, training_only};
    let dir = tempfile::tempdir().unwrap();
    let param = solver_param(
        "lr_policy: 'poly' base_lr: 0.1 power: 1 max_iter: 5",
        &dir.path().join("tiny"),
    );
    let mut solver = build(training_only(param));
    // 2 warm-up + 3 reach max_iter exactly: fine; one more has no rate.
    time_training(&mut solver, 3).unwrap();
    let mut solver = build(training_only(solver.param().clone()));
    let message = time_training(&mut solver, 4).unwrap_err().to_string();
    assert!(message.contains("past max_iter (5)"), "{message}");
    assert_eq!(solver.iter(), 0);
}
