"""Upstream's 01-learning-lenet tutorial, its flow ported to the bundled Fashion-MNIST: make
the LMDBs, build an SGD solver, look at the blobs and params, take a step and look at the
gradients, then train by hand with `solver.step(1)`, recording the train loss and scoring the
test net between steps."""

import gzip
import subprocess

import numpy as np
import pytest

import caffe
from conftest import REPO, rcaffe_binary

MNIST = REPO / "data" / "fashion-mnist-mini"


def read_idx(path):
    """An IDX file (images or labels) as a numpy array, read here independently of the
    engine's converter."""
    raw = gzip.open(path).read()
    dims = raw[3]
    shape = np.frombuffer(raw, ">i4", count=dims, offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


@pytest.fixture(scope="module")
def lenet_solver(tmp_path_factory):
    binary = rcaffe_binary()
    work = tmp_path_factory.mktemp("lenet")
    for split, prefix in (("train", "train"), ("test", "t10k")):
        subprocess.run(
            [
                str(binary),
                "convert-mnist",
                str(MNIST / f"{prefix}-images-idx3-ubyte.gz"),
                str(MNIST / f"{prefix}-labels-idx1-ubyte.gz"),
                str(work / f"fmnist_{split}_lmdb"),
            ],
            check=True,
            capture_output=True,
        )
    net = (REPO / "models" / "lenet" / "lenet_train_test.prototxt").read_text()
    net = net.replace('source: "fmnist_', f'source: "{work}/fmnist_')
    (work / "lenet.prototxt").write_text(net)
    solver = work / "solver.prototxt"
    solver.write_text(f"""train_net: "{work / 'lenet.prototxt'}"
test_net: "{work / 'lenet.prototxt'}" test_state {{ phase: TEST }}
test_iter: 10 test_interval: 100000
base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005
lr_policy: "inv" gamma: 0.0001 power: 0.75
display: 0 max_iter: 10000 snapshot: 0 snapshot_prefix: "{work / 'lenet'}"
random_seed: 1
""")
    return solver


def test_learning_lenet(lenet_solver):
    caffe.set_mode_cpu()
    solver = caffe.SGDSolver(str(lenet_solver))

    # The blobs and params, as the tutorial prints them.
    shapes = {name: blob.data.shape for name, blob in solver.net.blobs.items()}
    assert shapes["data"] == (64, 1, 28, 28)
    assert shapes["conv1"] == (64, 20, 24, 24)
    assert shapes["pool2"] == (64, 50, 4, 4)
    assert shapes["ip2"] == (64, 10)
    assert [p.data.shape for p in solver.net.params["conv1"]] == [(20, 1, 5, 5), (20,)]
    assert [p.data.shape for p in solver.net.params["ip1"]] == [(500, 800), (500,)]

    # A forward reads the first batch of the LMDB: the IDX file's images, scaled by 1/256.
    solver.net.forward()
    solver.test_nets[0].forward()
    images = read_idx(MNIST / "train-images-idx3-ubyte.gz")
    labels = read_idx(MNIST / "train-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(
        solver.net.blobs["data"].data[:, 0], images[:64].astype(np.float32) * 0.00390625
    )
    np.testing.assert_array_equal(solver.net.blobs["label"].data, labels[:64])
    test_labels = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(solver.test_nets[0].blobs["label"].data, test_labels[:100])

    # One step: the first layer's filters get gradients.
    solver.step(1)
    assert solver.iter == 1
    assert np.abs(solver.net.params["conv1"][0].diff).sum() > 0

    # Training by hand, as the tutorial's loop: the loss after each step, test accuracy now
    # and then from the test net's scores.
    niter, test_interval = 150, 50
    train_loss = np.zeros(niter)
    test_acc = []
    for it in range(niter):
        solver.step(1)
        train_loss[it] = solver.net.blobs["loss"].data
        if it % test_interval == 0 or it == niter - 1:
            correct = 0
            for _ in range(10):
                solver.test_nets[0].forward()
                scores = solver.test_nets[0].blobs["ip2"].data
                correct += (scores.argmax(1) == solver.test_nets[0].blobs["label"].data).sum()
            test_acc.append(correct / 1000)
    assert solver.iter == niter + 1
    assert train_loss[-20:].mean() < 0.6 * train_loss[:20].mean()
    assert test_acc[-1] > 0.6, test_acc
    assert test_acc[-1] > test_acc[0]
