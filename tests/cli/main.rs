//! The `rcaffe` binary, run as a user runs it.

#[path = "../common/mod.rs"]
mod common;
mod errors;
mod gpu;
mod hdf5_example;

use common::{rcaffe, rcaffe_in, stderr, stdout, TINY_SOLVER};
use std::path::Path;
use std::process::{Command, Output};

const UPSTREAM: &str = "../shared/reference/upstream";

#[test]
fn plot_lr_writes_every_iteration_with_caffe_spelling() {
    let folder = tempfile::tempdir().unwrap();
    let csv = folder.path().join("schedule.csv");
    let solver = format!("{UPSTREAM}/lenet/sgd_triangular2.solver.prototxt");
    let output = rcaffe(&[
        "plot-lr",
        "-solver",
        &solver,
        "-iterations",
        "200",
        "-o",
        csv.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "iteration,lr");
    assert_eq!(rows.len(), 1 + 201);
    // triangular2 from 0.001 to 0.006 with stepsize 50: the first peak, then half the amplitude.
    assert_eq!(rows[1 + 50], "50,0.006");
    assert_eq!(rows[1 + 100], "100,0.001");
    assert_eq!(rows[1 + 150], "150,0.0035");
}

#[test]
fn plot_lr_names_the_solver_when_its_policy_is_wrong() {
    let folder = tempfile::tempdir().unwrap();
    let solver = folder.path().join("s.prototxt");
    std::fs::write(
        &solver,
        "base_lr: 0.01\nmax_lr: 0.1\nlr_policy: \"triangular\"\nmax_iter: 10\n",
    )
    .unwrap();
    let output = rcaffe(&[
        "plot-lr",
        "--solver",
        solver.to_str().unwrap(),
        "-o",
        "x.csv",
    ]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(solver.to_str().unwrap()) && message.contains("stepsize"),
        "{message}"
    );
}

#[test]
fn inspect_reports_layers_shapes_and_statistics() {
    let output = rcaffe(&["inspect", &format!("{UPSTREAM}/lenet/init.caffemodel")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = stdout(&output);
    assert!(
        report.contains("net \"LeNet\": 9 layers, 4 with weights, 8 blobs, 431080 values"),
        "{report}"
    );
    let conv1 = report
        .lines()
        .find(|l| l.contains("conv1") && l.contains("20 1 5 5"))
        .unwrap();
    assert!(conv1.contains(" 500 "), "{conv1}");

    let output = rcaffe(&[
        "inspect",
        &format!("{UPSTREAM}/lenet/sgd_inv_iter_150.solverstate"),
    ]);
    assert!(
        stdout(&output).contains("iteration 150"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn upgrade_net_writes_a_current_format_net() {
    let folder = tempfile::tempdir().unwrap();
    let output_path = folder.path().join("new.prototxt");
    let output = rcaffe(&[
        "upgrade-net",
        "tests/data/legacy/v1_all_types.prototxt",
        output_path.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let upgraded = rcaffe::proto::read_net(&output_path).unwrap();
    assert!(upgraded.layers.is_empty() && !upgraded.layer.is_empty());
}

#[test]
fn bad_prototxt_exits_with_the_place_named() {
    let folder = tempfile::tempdir().unwrap();
    let net = folder.path().join("bad.prototxt");
    std::fs::write(&net, "name: \"x\"\nlayer {\n  nme: \"conv\"\n}\n").unwrap();
    let output = rcaffe(&["inspect", net.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains(&format!("{}:3:3: unknown field 'nme'", net.display())),
        "{message}"
    );
    assert!(message.contains("did you mean 'name'"), "{message}");
}

#[test]
fn time_prints_upstreams_per_layer_table_and_totals() {
    let output = rcaffe(&[
        "time",
        "-model",
        "../shared/caffe-zoo/examples/mnist/lenet.prototxt",
        "-iterations",
        "2",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let log = stderr(&output);
    for layer in ["conv1", "pool1", "conv2", "ip1", "prob"] {
        assert!(
            log.contains(&format!("{layer:>10}\tforward: ")),
            "{layer}: {log}"
        );
        assert!(
            log.contains(&format!("{layer:>10}\tbackward: ")),
            "{layer}: {log}"
        );
    }
    for total in [
        "Average Forward pass: ",
        "Average Backward pass: ",
        "Average Forward-Backward: ",
    ] {
        assert!(log.contains(total), "{total}: {log}");
    }
    assert!(log.contains("Testing for 2 iterations."), "{log}");
}

#[test]
fn a_solver_field_that_cannot_be_used_is_named_with_its_file_and_line() {
    let folder = tempfile::tempdir().unwrap();
    let solver = folder.path().join("s.prototxt");
    let net = "net_param { layer { name: 'x' type: 'Input' top: 'x' \
               input_param { shape { dim: 1 } } } }";
    for (body, place) in [
        // A typo in the policy: its line.
        (
            "base_lr: 0.01\n# a comment\nlr_policy: \"trianglar\"\n",
            ":4: lr_policy: unknown lr_policy \"trianglar\"",
        ),
        // A rule's check on another field: that field's line.
        (
            "type: \"AdaGrad\"\nbase_lr: 0.01\nmomentum: 0.9\n",
            ":4: momentum: Momentum cannot be used with AdaGrad",
        ),
        // The second stepvalue out of order.
        (
            "lr_policy: \"multistep\"\nstepvalue: 100\nstepvalue: 50\ngamma: 0.1\n",
            ":4: stepvalue: lr_policy \"multistep\" needs increasing stepvalues",
        ),
        // A field the policy needs and the file lacks: no line to give.
        (
            "lr_policy: \"triangular\"\nstepsize: 10\nbase_lr: 0.01\n",
            ": max_lr: lr_policy \"triangular\" needs max_lr",
        ),
    ] {
        std::fs::write(&solver, format!("{net}\n{body}")).unwrap();
        let output = rcaffe(&["train", "-solver", solver.to_str().unwrap()]);
        assert!(!output.status.success());
        let message = stderr(&output);
        let want = format!("{}{place}", solver.display());
        assert!(message.contains(&want), "{want}\n{message}");
    }
    // A value the command line overrode: the file's line would point at another value.
    let body = "lr_policy: \"poly\"\npower: 1\nmax_iter: 100\n";
    std::fs::write(&solver, format!("{net}\n{body}")).unwrap();
    let path = solver.to_str().unwrap();
    let output = rcaffe(&["train", "-solver", path, "--max-iter", "0"]);
    let want = format!("{path}: max_iter: lr_policy \"poly\" needs max_iter > 0");
    assert!(stderr(&output).contains(&want), "{}", stderr(&output));
}

#[test]
fn time_with_a_solver_times_whole_training_iterations() {
    let dir = tempfile::tempdir().unwrap();
    let solver = dir.path().join("solver.prototxt");
    std::fs::write(
        &solver,
        r#"net_param {
  layer {
    name: "data" type: "DummyData" top: "data" top: "label"
    dummy_data_param {
      shape { dim: 8 dim: 1 dim: 12 dim: 12 } shape { dim: 8 }
      data_filler { type: "uniform" } data_filler { type: "constant" value: 1 }
    }
  }
  layer {
    name: "conv" type: "Convolution" bottom: "data" top: "conv"
    convolution_param { num_output: 4 kernel_size: 5 weight_filler { type: "xavier" } }
  }
  layer {
    name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
    inner_product_param { num_output: 3 weight_filler { type: "xavier" } }
  }
  layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
}
base_lr: 0.01 lr_policy: "triangular2" max_lr: 0.1 stepsize: 2 momentum: 0.9
test_iter: 1 test_interval: 1 display: 1 snapshot: 1 max_iter: 100 solver_mode: GPU
"#,
    )
    .unwrap();
    let output = rcaffe(&[
        "time",
        "-solver",
        solver.to_str().unwrap(),
        "-iterations",
        "3",
    ]);
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("2 untimed iterations, then 3 timed"), "{log}");
    assert!(log.contains("Average training iteration: "), "{log}");
    // As train: solver_mode GPU asks for its device, or falls back to the CPU saying why.
    assert!(
        log.contains("solver_mode: GPU requested, but") || log.contains("Use GPU with device ID 0"),
        "{log}"
    );
    // Training only: the solver's test passes, displays and snapshots are off.
    assert!(!log.contains("Testing net"), "{log}");
    assert!(!log.contains("loss = "), "{log}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // One of -model and -solver, not both.
    let neither = rcaffe(&["time"]);
    assert!(!neither.status.success());
    assert!(
        stderr(&neither).contains("--solver"),
        "{}",
        stderr(&neither)
    );
}

/// Upstream's `create_mnist.sh`, `create_mnist_siamese.sh`, `create_cifar10.sh` and
/// `make_cifar10_mean.sh` call the tools with gflags' spellings; each line here is one of theirs
/// with `rcaffe` in place of the tool.
#[test]
fn caffe_data_scripts_run_as_written() {
    let folder = tempfile::tempdir().unwrap();
    let path = |name: &str| folder.path().join(name).to_str().unwrap().to_owned();
    let images = "data/fashion-mnist-mini/t10k-images-idx3-ubyte.gz";
    let labels = "data/fashion-mnist-mini/t10k-labels-idx1-ubyte.gz";
    for (name, flag) in [
        ("plain", vec![]),
        ("a", vec!["--backend=lmdb"]),
        ("b", vec!["-backend", "lmdb"]),
        ("c", vec!["-backend=lmdb"]),
    ] {
        let output = path(name);
        let mut args = vec!["convert_mnist_data", images, labels, &output];
        args.extend(flag.iter().copied());
        let run = rcaffe(&args);
        assert!(run.status.success(), "{args:?}: {}", stderr(&run));
        assert!(stdout(&run).contains("Wrote 1000 records"), "{args:?}");
    }
    let leveldb = rcaffe(&[
        "convert-mnist",
        images,
        labels,
        &path("d"),
        "--backend=leveldb",
    ]);
    assert!(leveldb.status.success(), "{}", stderr(&leveldb));
    assert!(folder.path().join("d/CURRENT").is_file());
    let refused = rcaffe(&[
        "convert-mnist",
        images,
        labels,
        &path("e"),
        "--backend=rocksdb",
    ]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("unknown database backend \"rocksdb\"; use lmdb or leveldb"),
        "{}",
        stderr(&refused)
    );
    assert!(!folder.path().join("e").exists());

    // create_mnist_siamese.sh: LevelDB pairs by default.
    let run = rcaffe(&["convert_mnist_siamese_data", images, labels, &path("pairs")]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).contains("Wrote 1000 pairs"));
    assert!(folder.path().join("pairs/CURRENT").is_file());

    // create_cifar10.sh: the database type as a third argument, into a folder not made yet.
    let cifar = folder.path().join("examples/cifar10");
    let run = rcaffe(&[
        "convert_cifar_data",
        "data/fashion-cifar-mini",
        cifar.to_str().unwrap(),
        "lmdb",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(cifar.join("cifar10_train_lmdb").is_dir());
    assert!(cifar.join("cifar10_test_lmdb").is_dir());

    // make_cifar10_mean.sh: the flag before the positional arguments; upstream's mean, byte for
    // byte.
    let mean = cifar.join("mean.binaryproto");
    let run = rcaffe(&[
        "compute_image_mean",
        "-backend=lmdb",
        cifar.join("cifar10_train_lmdb").to_str().unwrap(),
        mean.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        std::fs::read(&mean).unwrap(),
        std::fs::read(format!("{UPSTREAM}/fcifar_mini_mean.binaryproto")).unwrap()
    );
}

#[test]
fn version_takes_one_dash_or_two() {
    for flag in ["-version", "--version"] {
        let run = rcaffe(&[flag]);
        assert!(run.status.success(), "{flag}: {}", stderr(&run));
        assert_eq!(
            stdout(&run).trim(),
            format!("rcaffe {}", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
    }
}

#[test]
fn train_runs_the_zoo_lenet_solver_unchanged_from_a_caffe_layout() {
    // Caffe's layout: the zoo files in examples/mnist/, the LMDBs beside them, run from the root.
    let root = tempfile::tempdir().unwrap();
    let mnist = root.path().join("examples/mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    for file in ["lenet_solver.prototxt", "lenet_train_test.prototxt"] {
        std::fs::copy(
            format!("../shared/caffe-zoo/examples/mnist/{file}"),
            mnist.join(file),
        )
        .unwrap();
    }
    let data = std::fs::canonicalize("data/fashion-mnist-mini").unwrap();
    for (part, lmdb) in [("train", "mnist_train_lmdb"), ("t10k", "mnist_test_lmdb")] {
        let images = data.join(format!("{part}-images-idx3-ubyte.gz"));
        let labels = data.join(format!("{part}-labels-idx1-ubyte.gz"));
        let output = rcaffe(&[
            "convert-mnist",
            images.to_str().unwrap(),
            labels.to_str().unwrap(),
            mnist.join(lmdb).to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let output = rcaffe_in(
        root.path(),
        &[
            "train",
            "-solver",
            "examples/mnist/lenet_solver.prototxt",
            "--max-iter",
            "500",
            "--test-interval",
            "500",
        ],
    );
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    // The zoo solver asks for the GPU: there where the machine has one, else one warning and
    // the CPU.
    match rcaffe::backend::cuda::device::probe() {
        Ok(_) => assert!(log.contains("] Using GPUs 0"), "{log}"),
        Err(_) => assert_eq!(log.matches("using the CPU").count(), 1, "{log}"),
    }
    let accuracies: Vec<f32> = log
        .lines()
        .filter_map(|line| line.split("Test net output #0: accuracy = ").nth(1))
        .map(|value| value.trim().parse().unwrap())
        .collect();
    assert_eq!(accuracies.len(), 2, "{log}");
    assert!(accuracies[1] > 0.8, "final test accuracy {}", accuracies[1]);
    assert!(mnist.join("lenet_iter_500.caffemodel").exists());
    assert!(mnist.join("lenet_iter_500.solverstate").exists());
    assert!(log.contains("Optimization Done."), "{log}");
}

#[test]
fn out_of_range_solver_values_are_refused_before_any_command_runs() {
    let folder = tempfile::tempdir().unwrap();
    let solver = folder.path().join("s.prototxt");
    let path = solver.to_str().unwrap();
    let plot = folder.path().join("lr.csv");
    let plot = plot.to_str().unwrap();
    for (setting, command, place) in [
        (
            "base_lr: -0.01",
            vec!["train", "-solver", path],
            ":2: base_lr: base_lr must be at least 0",
        ),
        (
            "base_lr: -0.01",
            vec!["plot-lr", "-solver", path, "-o", plot],
            ":2: base_lr: base_lr must be at least 0",
        ),
        (
            "momentum: 1",
            vec!["time", "-solver", path, "-iterations", "1"],
            ":2: momentum: should lie between 0 and 1, 1 excluded (it is 1)",
        ),
        (
            "weight_decay: -1",
            vec![
                "lr-range",
                "-solver",
                path,
                "--iterations",
                "10",
                "--tests",
                "2",
            ],
            ":2: weight_decay: should be at least 0 and finite (it is -1)",
        ),
    ] {
        // TINY_SOLVER's own value of the field gives way to the setting under test.
        let field = setting.split(':').next().unwrap();
        let rest: String = TINY_SOLVER
            .lines()
            .filter(|line| line.split(':').next() != Some(field))
            .map(|line| format!("{line}\n"))
            .collect();
        std::fs::write(&solver, format!("# under test\n{setting}\n{rest}")).unwrap();
        let output = rcaffe_in(folder.path(), &command);
        let log = stderr(&output);
        assert!(!output.status.success(), "{command:?}: {log}");
        let want = format!("rcaffe: error: {path}{place}");
        assert!(log.contains(&want), "{command:?}: {want}\n{log}");
        // Refused before a single iteration.
        assert!(!log.contains("Iteration 0"), "{command:?}: {log}");
    }
}

/// A net on DummyData whose loss layer reads a blob no layer makes.
const NET_WITH_A_BAD_BOTTOM: &str = r#"
name: "bad"
layer {
  name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 1 } }
}
layer {
  name: "ip" type: "InnerProduct" bottom: "x" top: "p"
  inner_product_param { num_output: 1 }
}
layer { name: "loss" type: "EuclideanLoss" bottom: "q" bottom: "y" top: "loss" }
"#;

#[test]
fn test_without_weights_is_refused_as_upstream() {
    let folder = tempfile::tempdir().unwrap();
    let model = folder.path().join("net.prototxt");
    std::fs::write(&model, NET_WITH_A_BAD_BOTTOM.replace("\"q\"", "\"p\"")).unwrap();
    let model = model.to_str().unwrap();
    for command in [
        vec!["test", "-model", model],
        vec!["test", "-model", model, "-weights", ""],
    ] {
        let output = rcaffe(&command);
        let log = stderr(&output);
        assert!(!output.status.success(), "{command:?}: {log}");
        assert!(
            log.contains("rcaffe: error: Need model weights to score"),
            "{command:?}: {log}"
        );
        assert!(!log.contains("Batch 0"), "{command:?}: {log}");
    }
}

/// Runs the `rcaffe` binary in `folder` with glog's variables `vars` set and no others.
fn rcaffe_with_glog(folder: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rcaffe"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("GLOG_")) {
        command.env_remove(name);
    }
    command
        .args(args)
        .envs(vars.iter().copied())
        .current_dir(folder)
        .output()
        .expect("the rcaffe binary runs")
}

/// Whether `line` is a glog line of `severity` (`I`, `W`, `E`): the letter, then MMDD.
fn is_glog_line(line: &str, severity: char) -> bool {
    let mut chars = line.chars();
    chars.next() == Some(severity) && chars.take(4).filter(char::is_ascii_digit).count() == 4
}

#[test]
fn glog_minloglevel_drops_info_then_warnings_but_never_the_error() {
    let folder = tempfile::tempdir().unwrap();
    // A warning (the deprecated solver_type), then an error (the bad bottom).
    let net = NET_WITH_A_BAD_BOTTOM.replace('\n', " ");
    std::fs::write(
        folder.path().join("s.prototxt"),
        format!(
            "net_param {{ {net} }}\nbase_lr: 0.1 lr_policy: \"fixed\" max_iter: 1\n\
             solver_type: SGD\n"
        ),
    )
    .unwrap();
    let error = "rcaffe: error: net 'bad': Unknown bottom blob 'q' (layer 'loss', bottom index 0)";
    let deprecated = "will only support 'type' field";
    let train = ["train", "-solver", "s.prototxt"];
    for (level, info, warning) in [
        (None, true, true),
        (Some("0"), true, true),
        (Some("1"), false, true),
        (Some("2"), false, false),
        (Some("3"), false, false),
    ] {
        let vars: Vec<(&str, &str)> = level.map(|l| ("GLOG_minloglevel", l)).into_iter().collect();
        let output = rcaffe_with_glog(folder.path(), &train, &vars);
        let log = stderr(&output);
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.last(), Some(&error), "{level:?}: {log}");
        assert_eq!(
            lines.iter().any(|l| is_glog_line(l, 'I')),
            info,
            "{level:?}: {log}"
        );
        let warned = lines
            .iter()
            .any(|l| is_glog_line(l, 'W') && l.contains(deprecated));
        assert_eq!(warned, warning, "{level:?}: {log}");
    }
    // A value that is no number: read as glog reads it (0, everything), with a warning saying so.
    let output = rcaffe_with_glog(folder.path(), &train, &[("GLOG_minloglevel", "abc")]);
    let log = stderr(&output);
    assert!(
        log.lines().any(|l| is_glog_line(l, 'W')
            && l.ends_with(
                "GLOG_minloglevel=abc is read as 0, as glog reads it (its leading integer)"
            )),
        "{log}"
    );
    assert!(log.lines().any(|l| is_glog_line(l, 'I')), "{log}");
}

#[test]
fn glog_log_dir_holds_the_log_file_and_the_flag_wins() {
    let folder = tempfile::tempdir().unwrap();
    let from_env = folder.path().join("from_env");
    let from_flag = folder.path().join("from_flag");
    std::fs::write(folder.path().join("net.prototxt"), NET_WITH_A_BAD_BOTTOM).unwrap();
    let time = ["time", "-model", "net.prototxt"];
    let log_files = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };

    let env = [("GLOG_log_dir", from_env.to_str().unwrap())];
    let output = rcaffe_with_glog(folder.path(), &time, &env);
    let files = log_files(&from_env);
    assert_eq!(files.len(), 1, "{}", stderr(&output));
    // The file holds what stderr showed, in glog's format.
    assert!(
        files[0].contains("] Initializing net from parameters"),
        "{}",
        files[0]
    );

    let mut with_flag = time.to_vec();
    with_flag.extend(["-log_dir", from_flag.to_str().unwrap()]);
    rcaffe_with_glog(folder.path(), &with_flag, &env);
    assert_eq!(log_files(&from_flag).len(), 1);
    assert_eq!(log_files(&from_env).len(), 1);

    // GLOG_logtostderr=1: stderr only, as glog, and a warning that no file is written.
    let to_stderr = [env[0], ("GLOG_logtostderr", "1")];
    let output = rcaffe_with_glog(folder.path(), &time, &to_stderr);
    assert_eq!(log_files(&from_env).len(), 1);
    assert!(
        stderr(&output).contains("GLOG_logtostderr is set: logging to stderr only, no log file in"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_failure_building_a_zoo_net_ends_stderr_with_the_layer_and_reason() {
    let folder = tempfile::tempdir().unwrap();
    let zoo = std::fs::read_to_string("../shared/caffe-zoo/models/bvlc_googlenet/deploy.prototxt")
        .unwrap();
    let net = folder.path().join("deploy.prototxt");
    std::fs::write(
        &net,
        zoo.replacen(
            "bottom: \"inception_3a/output\"",
            "bottom: \"inception_3a/outptu\"",
            1,
        ),
    )
    .unwrap();
    let output = rcaffe(&["time", "-model", net.to_str().unwrap(), "-iterations", "1"]);
    let log = stderr(&output);
    assert!(!output.status.success());
    // Hundreds of lines of the net come first; the last says what is wrong, and where.
    assert!(log.lines().count() > 1000, "{log}");
    assert_eq!(
        log.lines().last(),
        Some(
            "rcaffe: error: net 'GoogleNet': Unknown bottom blob 'inception_3a/outptu' (layer \
             'inception_3b/1x1', bottom index 0)"
        )
    );
}
