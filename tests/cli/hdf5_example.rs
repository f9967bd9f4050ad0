//! Upstream's examples/hdf5_classification nets (stored byte for byte under
//! tests/data/upstream-examples/hdf5_classification) train unchanged through `rcaffe`, from a
//! folder laid out as upstream expects, on the h5py-made data of tests/data/hdf5/classification;
//! the logistic regression also snapshots in HDF5, resumes from the `.solverstate.h5` and is
//! scored from the `.caffemodel.h5`.

use std::path::{Path, PathBuf};

use crate::common::{rcaffe_in, stderr};

const EXAMPLE: &str = "examples/hdf5_classification";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A folder with `examples/hdf5_classification/` holding upstream's prototxts and `data/` with
/// the `.h5` files and their lists, as the example's notebook leaves it (train.h5 listed twice).
fn example_folder() -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    let example = folder.path().join(EXAMPLE);
    std::fs::create_dir_all(example.join("data")).unwrap();
    let nets = repo("tests/data/upstream-examples/hdf5_classification");
    for entry in std::fs::read_dir(nets).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "prototxt") {
            std::fs::copy(&path, example.join(path.file_name().unwrap())).unwrap();
        }
    }
    for file in ["train.h5", "test.h5"] {
        let source = repo("tests/data/hdf5/classification").join(file);
        std::fs::copy(source, example.join("data").join(file)).unwrap();
    }
    let train = format!("{EXAMPLE}/data/train.h5\n");
    std::fs::write(example.join("data/train.txt"), train.repeat(2)).unwrap();
    std::fs::write(
        example.join("data/test.txt"),
        format!("{EXAMPLE}/data/test.h5\n"),
    )
    .unwrap();
    folder
}

/// The accuracies the log's test passes report, in order.
fn test_accuracies(log: &str) -> Vec<f32> {
    log.lines()
        .filter_map(|l| l.split("Test net output #0: accuracy = ").nth(1))
        .map(|v| v.trim().parse().unwrap())
        .collect()
}

#[test]
fn the_nonlinear_example_trains_unchanged_well_above_chance() {
    let folder = example_folder();
    let solver = format!("{EXAMPLE}/nonlinear_solver.prototxt");
    let output = rcaffe_in(folder.path(), &["train", "-solver", &solver]);
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    // A test pass every 1000 of its 10000 iterations, the first before training.
    let accuracies = test_accuracies(&log);
    assert_eq!(accuracies.len(), 11, "{log}");
    let last = *accuracies.last().unwrap();
    assert!(
        last > 0.9,
        "two classes, final accuracy {last}: {accuracies:?}"
    );
    let snapshot = folder
        .path()
        .join(EXAMPLE)
        .join("data/train_iter_10000.caffemodel");
    assert!(snapshot.exists());
}

#[test]
fn the_logistic_regression_snapshots_resumes_and_scores_in_hdf5() {
    let folder = example_folder();
    // The notebook's solver for train_val.prototxt, shortened to 300 iterations, in HDF5.
    let solver = "net: \"examples/hdf5_classification/train_val.prototxt\"\n\
                  test_iter: 20 test_interval: 300 base_lr: 0.01 lr_policy: \"step\" gamma: 0.1\n\
                  stepsize: 5000 display: 100 max_iter: 300 momentum: 0.9 weight_decay: 0.0005\n\
                  snapshot: 150 snapshot_prefix: \"examples/hdf5_classification/data/train\"\n\
                  snapshot_format: HDF5 random_seed: 1 solver_mode: CPU\n";
    std::fs::write(folder.path().join("logreg_solver.prototxt"), solver).unwrap();
    let train = ["train", "-solver", "logreg_solver.prototxt"];
    let output = rcaffe_in(folder.path(), &train);
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    let accuracies = test_accuracies(&log);
    let last = *accuracies.last().unwrap();
    assert!(last > 0.85, "final accuracy {last}: {accuracies:?}");
    let data = folder.path().join(EXAMPLE).join("data");
    for n in [150, 300] {
        for kind in ["caffemodel", "solverstate"] {
            let file = data.join(format!("train_iter_{n}.{kind}.h5"));
            assert!(file.exists(), "{}", file.display());
        }
    }

    let state = format!("{EXAMPLE}/data/train_iter_150.solverstate.h5");
    let resume = [&train[..], &["-snapshot", &state]].concat();
    let output = rcaffe_in(folder.path(), &resume);
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(!log.contains("Iteration 100,"), "resumed at 150: {log}");
    let resumed = *test_accuracies(&log).last().unwrap();
    assert!(resumed > 0.85, "resumed final accuracy {resumed}");

    let weights = format!("{EXAMPLE}/data/train_iter_300.caffemodel.h5");
    let model = format!("{EXAMPLE}/train_val.prototxt");
    let score = [
        "test",
        "-model",
        &model,
        "-weights",
        &weights,
        "-iterations",
        "20",
    ];
    let output = rcaffe_in(folder.path(), &score);
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    let scored: f32 = log
        .lines()
        .filter_map(|l| l.split("] accuracy = ").nth(1))
        .map(|v| v.trim().parse().unwrap())
        .next_back()
        .unwrap_or_else(|| panic!("{log}"));
    assert!(scored > 0.85, "scored accuracy {scored}");
}
