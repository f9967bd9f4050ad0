//! cifar10_quick, the zoo's files unchanged, trains from our LMDBs and mean file: a working
//! directory laid out as Caffe's source tree (examples/cifar10/ holding the solver, the net,
//! `cifar10_{train,test}_lmdb` from `convert_cifar` and `mean.binaryproto` from
//! `compute_image_mean`), then `train` as `caffe train -solver
//! examples/cifar10/cifar10_quick_solver.prototxt` runs it there. Its own test binary: it sets
//! the process's working directory.

use std::path::Path;

use rcaffe::data::{compute_image_mean, convert_cifar};
use rcaffe::solver::{train, TestScores, TrainOptions};

const ITERATIONS: i32 = 40;

fn output(scores: &TestScores, name: &str) -> f32 {
    scores
        .outputs
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no test output {name} in {scores:?}"))
        .1
}

#[test]
fn cifar10_quick_trains_from_our_lmdbs() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let zoo = manifest.join("../shared/caffe-zoo/examples/cifar10");
    let root = tempfile::tempdir().unwrap();
    let examples = root.path().join("examples/cifar10");
    std::fs::create_dir_all(&examples).unwrap();
    for file in [
        "cifar10_quick_solver.prototxt",
        "cifar10_quick_train_test.prototxt",
    ] {
        std::fs::copy(zoo.join(file), examples.join(file)).unwrap();
    }
    // The net reads exactly these paths, relative to the working directory.
    let net_text =
        std::fs::read_to_string(examples.join("cifar10_quick_train_test.prototxt")).unwrap();
    for path in [
        "examples/cifar10/cifar10_train_lmdb",
        "examples/cifar10/cifar10_test_lmdb",
        "examples/cifar10/mean.binaryproto",
    ] {
        assert!(net_text.contains(&format!("\"{path}\"")), "{path}");
    }

    let summary = convert_cifar(&manifest.join("data/fashion-cifar-mini"), &examples).unwrap();
    assert_eq!((summary.train, summary.test), (6000, 1000));
    let mean = compute_image_mean(
        &examples.join("cifar10_train_lmdb"),
        Some(&examples.join("mean.binaryproto")),
    )
    .unwrap();
    assert_eq!(mean.count, 6000);
    assert!(examples.join("mean.binaryproto").is_file());

    std::env::set_current_dir(root.path()).unwrap();
    // test_interval = max_iter: a test pass before training (chance) and one at the end.
    let solver = train(
        Path::new("examples/cifar10/cifar10_quick_solver.prototxt"),
        &TrainOptions {
            max_iter: Some(ITERATIONS),
            test_interval: Some(ITERATIONS),
            display: Some(10),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(solver.iter(), ITERATIONS);

    let scores = solver.test_scores();
    let first = scores.first().expect("a test pass before training");
    let last = scores.last().expect("a test pass after training");
    assert_eq!((first.iter, last.iter), (0, ITERATIONS), "{scores:?}");
    let (accuracy_before, accuracy_after) = (output(first, "accuracy"), output(last, "accuracy"));
    let (loss_before, loss_after) = (output(first, "loss"), output(last, "loss"));
    println!(
        "test accuracy {accuracy_before} -> {accuracy_after}, test loss {loss_before} -> \
         {loss_after}, train loss at the end {}",
        solver.smoothed_loss()
    );
    // The untrained net is at chance: ln 10 = 2.303 loss; training cuts it and lifts the
    // accuracy well above 10 %.
    assert!((loss_before - 10f32.ln()).abs() < 0.1, "{loss_before}");
    assert!(
        loss_after < loss_before - 0.3,
        "{loss_before} -> {loss_after}"
    );
    assert!(
        solver.smoothed_loss() < 10f32.ln() - 0.3,
        "{}",
        solver.smoothed_loss()
    );
    assert!(
        accuracy_after > 0.4,
        "{accuracy_before} -> {accuracy_after}"
    );
    // And the snapshot after training lands where the zoo's snapshot_prefix says.
    assert!(examples
        .join(format!("cifar10_quick_iter_{ITERATIONS}.caffemodel"))
        .is_file());
    std::env::set_current_dir(manifest).unwrap();
}
