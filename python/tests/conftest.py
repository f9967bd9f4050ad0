"""Shared pytest setup for the package's tests, which run against the installed ``caffe``
package: the message classes (``caffe_pb2``), the model zoo the Rust tests use too
(``../shared/caffe-zoo`` next to the repository), the `rcaffe` command line, and small nets
written for the tests (after upstream's test_net.cpp)."""

import os
from pathlib import Path

import numpy as np
import pytest

import caffe

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO.parent / "shared" / "caffe-zoo"


@pytest.fixture(scope="session")
def caffe_pb2():
    from caffe.proto import caffe_pb2

    return caffe_pb2


@pytest.fixture(scope="session")
def zoo():
    if not ZOO.is_dir():
        pytest.skip(f"model zoo not found at {os.path.normpath(ZOO)}")
    return os.path.normpath(ZOO)


def simple_net_text(num_output):
    """DummyData -> Convolution -> InnerProduct -> SoftmaxWithLoss, as upstream's pycaffe tests
    build it: 5 items of 2 x 3 x 4 and their labels."""
    return f"""name: 'testnet' force_backward: true
layer {{ type: 'DummyData' name: 'data' top: 'data' top: 'label'
  dummy_data_param {{ num: 5 channels: 2 height: 3 width: 4
    num: 5 channels: 1 height: 1 width: 1
    data_filler {{ type: 'gaussian' std: 1 }}
    data_filler {{ type: 'constant' }} }} }}
layer {{ type: 'Convolution' name: 'conv' bottom: 'data' top: 'conv'
  convolution_param {{ num_output: 11 kernel_size: 2 pad: 3
    weight_filler {{ type: 'gaussian' std: 1 }}
    bias_filler {{ type: 'constant' value: 2 }} }}
  param {{ decay_mult: 1 }} param {{ decay_mult: 0 }} }}
layer {{ type: 'InnerProduct' name: 'ip' bottom: 'conv' top: 'ip'
  inner_product_param {{ num_output: {num_output}
    weight_filler {{ type: 'gaussian' std: 2.5 }}
    bias_filler {{ type: 'constant' value: -3 }} }} }}
layer {{ type: 'SoftmaxWithLoss' name: 'loss' bottom: 'ip' bottom: 'label' top: 'loss' }}
"""


NUM_OUTPUT = 13


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "simple.prototxt"
    path.write_text(simple_net_text(NUM_OUTPUT))
    return path


@pytest.fixture
def net(net_file):
    net = caffe.Net(str(net_file), caffe.TRAIN)
    rng = np.random.default_rng(0)
    net.blobs["label"].data[...] = rng.integers(NUM_OUTPUT, size=net.blobs["label"].data.shape)
    return net


@pytest.fixture
def solver_file(tmp_path, net_file):
    path = tmp_path / "solver.prototxt"
    path.write_text(f"""net: '{net_file}'
test_iter: 10 test_interval: 10 base_lr: 0.01 momentum: 0.9
weight_decay: 0.0005 lr_policy: 'inv' gamma: 0.0001 power: 0.75
display: 100 max_iter: 100 snapshot_after_train: false
snapshot_prefix: '{tmp_path / "model"}'
""")
    return path


def rcaffe_binary():
    """The `rcaffe` command line built from this checkout (or RCAFFE_BIN); the test is skipped,
    saying why, when there is none."""
    binary = Path(os.environ.get("RCAFFE_BIN", REPO / "target" / "release" / "rcaffe"))
    if not binary.is_file():
        pytest.skip(f"no rcaffe binary at {binary} (cargo build --release; or set RCAFFE_BIN)")
    return binary
