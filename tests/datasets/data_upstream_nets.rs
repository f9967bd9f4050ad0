//! The Data layer inside upstream's nets, end to end: the bundled datasets converted by our
//! converters, read by the Data layer (scale, mean file), through LeNet and CIFAR-10 quick
//! with upstream's initial weights, give the losses and accuracies upstream logged at
//! iteration 0 (../shared/reference/upstream/{lenet,cifar10_quick}/*.log). The first TRAIN
//! batch and the whole TEST pass are deterministic (no mirror, no crop), so any difference in
//! record order, bytes, labels, scaling or mean subtraction would show.

use std::path::{Path, PathBuf};

use rcaffe::backend::rng_from_seed;
use rcaffe::data::{convert_cifar, convert_mnist};
use rcaffe::net::Net;
use rcaffe::proto::caffe::{NetParameter, NetState, Phase};
use rcaffe::proto::read_net;
use rcaffe::testing::cpu;

const UPSTREAM: &str = "../shared/reference/upstream";

fn bundled(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(path)
}

/// Converts the bundled datasets under `dir` with the names upstream's nets use, and copies
/// the mean file there.
fn prepare(dir: &Path) {
    let mnist = bundled("fashion-mnist-mini");
    convert_mnist(
        &mnist.join("train-images-idx3-ubyte.gz"),
        &mnist.join("train-labels-idx1-ubyte.gz"),
        &dir.join("fmnist_mini_train_lmdb"),
    )
    .unwrap();
    convert_mnist(
        &mnist.join("t10k-images-idx3-ubyte.gz"),
        &mnist.join("t10k-labels-idx1-ubyte.gz"),
        &dir.join("fmnist_mini_test_lmdb"),
    )
    .unwrap();
    let cifar = dir.join("cifar");
    std::fs::create_dir(&cifar).unwrap();
    let summary = convert_cifar(&bundled("fashion-cifar-mini"), &cifar).unwrap();
    std::fs::rename(summary.train_db, dir.join("fcifar_mini_train_lmdb")).unwrap();
    std::fs::rename(summary.test_db, dir.join("fcifar_mini_test_lmdb")).unwrap();
    rcaffe::data::compute_image_mean(
        &dir.join("fcifar_mini_train_lmdb"),
        Some(&dir.join("fcifar_mini_mean.binaryproto")),
    )
    .unwrap();
}

/// The net file with its data sources and mean file under `dir`, in `phase`.
fn net_param(net: &str, dir: &Path, phase: Phase) -> NetParameter {
    let mut param = read_net(&Path::new(UPSTREAM).join(net)).unwrap();
    for layer in &mut param.layer {
        if let Some(data) = &mut layer.data_param {
            let source = dir.join(data.source());
            data.source = Some(source.to_string_lossy().into_owned());
        }
        if let Some(t) = &mut layer.transform_param {
            if let Some(mean) = &t.mean_file {
                t.mean_file = Some(dir.join(mean).to_string_lossy().into_owned());
            }
        }
    }
    param.state = Some(NetState {
        phase: Some(phase as i32),
        ..Default::default()
    });
    param
}

fn scalar(net: &Net<rcaffe::backend::CpuBackend>, blob: &str) -> f32 {
    net.blob_by_name(blob).unwrap().data_to_vec().unwrap()[0]
}

/// (first TRAIN batch loss, TEST accuracy and loss over `test_iter` batches).
fn iteration_zero(folder: &str, net_file: &str, dir: &Path, test_iter: usize) -> (f32, f32, f32) {
    let weights = Path::new(UPSTREAM).join(folder).join("init.caffemodel");
    let net_path = format!("{folder}/{net_file}");
    let backend = cpu();
    let mut train = Net::new(
        &net_param(&net_path, dir, Phase::Train),
        &backend,
        rng_from_seed(1),
    )
    .unwrap();
    train.copy_trained_layers_from_file(&weights).unwrap();
    let loss = train.forward().unwrap();
    eprintln!("{folder}: TRAIN loss {loss}");

    let mut test = Net::new(
        &net_param(&net_path, dir, Phase::Test),
        &backend,
        rng_from_seed(1),
    )
    .unwrap();
    test.copy_trained_layers_from_file(&weights).unwrap();
    let (mut accuracy, mut test_loss) = (0.0f64, 0.0f64);
    for _ in 0..test_iter {
        test.forward().unwrap();
        accuracy += f64::from(scalar(&test, "accuracy"));
        test_loss += f64::from(scalar(&test, "loss"));
    }
    eprintln!(
        "{folder}: TEST accuracy {} loss {}",
        accuracy / test_iter as f64,
        test_loss / test_iter as f64
    );
    (
        loss,
        (accuracy / test_iter as f64) as f32,
        (test_loss / test_iter as f64) as f32,
    )
}

fn close(ours: f32, upstream: f32) -> bool {
    // Upstream logs 6 significant digits; the sums run in another order here.
    (ours - upstream).abs() <= 2e-5 * upstream.abs().max(1.0)
}

#[test]
fn lenet_and_cifar10_quick_at_iteration_zero_match_upstream() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());

    // lenet/sgd_inv.log: "Test net output #0: accuracy = 0.148", "#1: loss = 2.38304",
    // "Iteration 0 ..., loss = 2.35868" (test_iter 10 x 100 = the 1,000 test records).
    let (loss, accuracy, test_loss) =
        iteration_zero("lenet", "lenet_train_test.prototxt", dir.path(), 10);
    assert!(
        close(loss, 2.35868),
        "LeNet TRAIN loss {loss} vs upstream 2.35868"
    );
    assert!(
        (accuracy - 0.148).abs() < 1e-6,
        "LeNet TEST accuracy {accuracy} vs 0.148"
    );
    assert!(
        close(test_loss, 2.38304),
        "LeNet TEST loss {test_loss} vs 2.38304"
    );

    // cifar10_quick/sgd_fixed.log (mean file): accuracy 0.125, loss 2.30226; train 2.30276.
    let (loss, accuracy, test_loss) = iteration_zero(
        "cifar10_quick",
        "cifar10_quick_train_test.prototxt",
        dir.path(),
        10,
    );
    assert!(
        close(loss, 2.30276),
        "CIFAR-10 quick TRAIN loss {loss} vs upstream 2.30276"
    );
    assert!(
        (accuracy - 0.125).abs() < 1e-6,
        "accuracy {accuracy} vs 0.125"
    );
    assert!(
        close(test_loss, 2.30226),
        "TEST loss {test_loss} vs 2.30226"
    );
}
