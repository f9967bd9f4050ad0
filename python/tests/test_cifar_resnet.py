"""scripts/cifar_resnet.py: the CIFAR ResNets it writes are He et al.'s (depth and parameter
counts of the paper's table 6), build and train one step on the engine, and are the files
kept in models/cifar_resnet/."""

import importlib.util

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2
from conftest import REPO


def generator():
    spec = importlib.util.spec_from_file_location("cifar_resnet", REPO / "scripts" / "cifar_resnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_input(text, batch):
    """The net with an Input of `batch` images and labels in place of its LMDB Data layers."""
    net = caffe_pb2.NetParameter()
    text_format.Merge(text, net)
    layers = [layer for layer in net.layer if layer.type not in ("Data", "Accuracy")]
    del net.layer[:]
    inputs = net.layer.add(name="data", type="Input", top=["data", "label"])
    inputs.input_param.shape.add(dim=[batch, 3, 32, 32])
    inputs.input_param.shape.add(dim=[batch])
    net.layer.extend(layers)
    return text_format.MessageToString(net)


@pytest.mark.parametrize("depth, millions", [(20, 0.27), (56, 0.85)])
def test_depth_and_parameters_are_the_papers(tmp_path, depth, millions):
    path = tmp_path / "net.prototxt"
    path.write_text(with_input(generator().resnet(depth), batch=2))
    net = caffe.Net(str(path), caffe.TRAIN)
    weighted = [name for name, layer in net.layer_dict.items()
                if layer.type in ("Convolution", "InnerProduct")]
    main_path = [name for name in weighted if "shortcut" not in name]
    assert len(main_path) == depth
    # The paper counts the main path's weights and biases (its shortcuts add none).
    count = sum(blob.data.size for name in main_path for blob in net.params[name])
    assert round(count / 1e6, 2) == millions
    assert net.blobs["fc"].data.shape == (2, 10)
    assert net.blobs["res3.{}".format((depth - 2) // 6)].data.shape == (2, 64, 8, 8)


def test_it_trains(tmp_path):
    """Ten SGD steps on two fixed images bring their loss down (BatchNorm on batch
    statistics, Scale, the shortcuts' sums and projections all in the gradient)."""
    net_path = tmp_path / "net.prototxt"
    net_path.write_text(with_input(generator().resnet(20), batch=8))
    solver_path = tmp_path / "solver.prototxt"
    solver_path.write_text(
        f'net: "{net_path}"\nbase_lr: 0.05\nlr_policy: "fixed"\nmomentum: 0.9\n'
        'weight_decay: 0.0001\nmax_iter: 100\ndisplay: 0\nrandom_seed: 7\nsolver_mode: CPU\n')
    solver = caffe.get_solver(str(solver_path))
    rng = np.random.default_rng(3)
    solver.net.blobs["data"].data[...] = rng.standard_normal((8, 3, 32, 32))
    solver.net.blobs["label"].data[...] = np.arange(8) % 10
    losses = []
    for _ in range(10):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]


def test_models_folder_holds_the_generators_output():
    module = generator()
    for depth in (20, 56):
        kept = REPO / "models" / "cifar_resnet" / f"resnet{depth}_train_test.prototxt"
        assert kept.read_text() == module.resnet(depth)
        solver = (REPO / "models" / "cifar_resnet" / f"resnet{depth}_solver.prototxt").read_text()
        net = f"resnet{depth}_train_test.prototxt"
        assert solver == module.SOLVER.format(net=net, name=f"resnet{depth}")
