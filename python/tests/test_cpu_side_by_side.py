"""scripts/cpu_side_by_side.py's timing nets: a deploy net and a train net rewritten into the
form rcaffe and PyTorch both time, which the engine builds and runs (PyTorch's side needs
torch, which these tests do not)."""

import importlib.util

import numpy as np
from google.protobuf import text_format

import caffe
from conftest import REPO, ZOO


def side_by_side():
    path = REPO / "scripts" / "cpu_side_by_side.py"
    spec = importlib.util.spec_from_file_location("cpu_side_by_side", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(net, tmp_path):
    path = tmp_path / "timing.prototxt"
    path.write_text(text_format.MessageToString(net))
    return caffe.Net(str(path), caffe.TRAIN)


def test_a_deploy_net_ends_in_a_loss_on_gaussian_inputs(tmp_path):
    module = side_by_side()
    deploy = module.read_net(ZOO / "models" / "bvlc_alexnet" / "deploy.prototxt")
    timing = module.timing_net(deploy, data_shape=None)
    types = [layer.type for layer in timing.layer]
    assert types[:2] == ["DummyData", "DummyData"]
    assert types[-1] == "SoftmaxWithLoss" and "Softmax" not in types
    # Weights without a filler (a deploy file's) get MSRA's, not zeros.
    convolutions = [layer for layer in timing.layer if layer.type == "Convolution"]
    assert all(layer.convolution_param.weight_filler.type == "msra" for layer in convolutions)
    net = build(timing, tmp_path)
    assert net.blobs["data"].data.shape == (10, 3, 227, 227)
    assert net.blobs["label"].data.shape == (10,)
    net.forward()
    assert np.isfinite(net.blobs["loss"].data).all() and net.blobs["loss"].data > 0
    assert net.blobs["data"].data.std() > 0.5
    net.backward()
    assert np.abs(net.params["conv1"][0].diff).sum() > 0


def test_a_train_net_keeps_its_train_phase_and_drops_accuracy(tmp_path):
    module = side_by_side()
    train = module.read_net(ZOO / "examples" / "cifar10" / "cifar10_quick_train_test.prototxt")
    timing = module.timing_net(train, data_shape=(3, 32, 32))
    names = [layer.name for layer in timing.layer]
    assert names.count("cifar") == 1 and "accuracy" not in names
    net = build(timing, tmp_path)
    assert net.blobs["data"].data.shape == (100, 3, 32, 32)
    assert (net.blobs["label"].data == 0).all()
    net.forward()
    assert np.isfinite(net.blobs["loss"].data).all()
