"""Python layers (`type: "Python"`): the net imports the module named in python_param, builds
the class and drives setup/reshape/forward/backward with blobs (after upstream's
test_python_layer.py). The layer classes live in this module, which the nets name."""

import numpy as np
import pytest

import caffe


class AffineLayer(caffe.Layer):
    """y = a * x + b, with a and b from param_str ("a b")."""

    def setup(self, bottom, top):
        self.a, self.b = (float(v) for v in self.param_str.split())

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.a * bottom[0].data + self.b

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = self.a * top[0].diff


class ScaleParamLayer(caffe.Layer):
    """y = w * x with one learnable scalar w, its gradient sum(x * dy)."""

    def setup(self, bottom, top):
        self.blobs.add_blob(1)
        self.blobs[0].data[...] = 2.0

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data[0] * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[0] = (bottom[0].data * top[0].diff).sum()
        bottom[0].diff[...] = self.blobs[0].data[0] * top[0].diff


class PhaseLayer(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape()

    def forward(self, bottom, top):
        top[0].data[()] = self.phase


class FailingLayer(caffe.Layer):
    def setup(self, bottom, top):
        if self.param_str == "setup":
            raise ValueError("no setup for you")

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        raise KeyError("forward went wrong")


class KeepingLayer(caffe.Layer):
    """Keeps its blobs past the call, and tries to reshape a bottom."""

    kept = []

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        KeepingLayer.kept = [bottom[0], top[0]]
        with pytest.raises(ValueError, match="cannot be reshaped"):
            bottom[0].reshape(1)
        top[0].data[...] = bottom[0].data


class CallsAnotherNetLayer(caffe.Layer):
    """Runs the forward pass of ``CallsAnotherNetLayer.other`` from inside its own."""

    other = None

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        CallsAnotherNetLayer.other.forward(x=np.zeros((2, 3), np.float32))
        top[0].data[...] = bottom[0].data


def write_net(tmp_path, layers, inputs="input: 'x' input_shape { dim: 2 dim: 3 }"):
    path = tmp_path / "python.prototxt"
    path.write_text(f"name: 'py' force_backward: true\n{inputs}\n{layers}\n")
    return str(path)


def python_layer(name, bottom, top, cls, param_str=""):
    bottoms = f"bottom: '{bottom}'" if bottom else ""
    return (
        f"layer {{ type: 'Python' name: '{name}' {bottoms} top: '{top}' python_param {{ "
        f"module: 'test_python_layer' layer: '{cls}' param_str: '{param_str}' }} }}"
    )


def test_python_layers_forward_and_backward(tmp_path):
    layers = "\n".join(
        [
            python_layer("one", "x", "y1", "AffineLayer", "2 1"),
            python_layer("two", "y1", "y2", "AffineLayer", "-3 0.5"),
        ]
    )
    net = caffe.Net(write_net(tmp_path, layers), caffe.TRAIN)
    assert "Python" in caffe.layer_type_list()
    assert [layer.type for layer in net.layers] == ["Input", "Python", "Python"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = net.forward(x=x)
    np.testing.assert_allclose(out["y2"], -3 * (2 * x + 1) + 0.5)
    grads = net.backward(y2=np.ones((2, 3), np.float32))
    np.testing.assert_allclose(grads["x"], np.full((2, 3), -6.0))


def test_a_python_layer_reshapes_its_top_with_the_input(tmp_path):
    net = caffe.Net(write_net(tmp_path, python_layer("a", "x", "y", "AffineLayer", "1 0")), 0)
    net.blobs["x"].reshape(4, 5)
    net.reshape()
    assert net.blobs["y"].shape == (4, 5)


def test_python_layer_parameters_are_net_params(tmp_path):
    net_file = write_net(tmp_path, python_layer("scale", "x", "y", "ScaleParamLayer"))
    net = caffe.Net(net_file, caffe.TRAIN)
    assert list(net.params) == ["scale"]
    (w,) = net.params["scale"]
    assert w.shape == (1,) and w.data[0] == 2.0
    x = np.full((2, 3), 1.5, np.float32)
    np.testing.assert_allclose(net.forward(x=x)["y"], 3.0 * np.ones((2, 3)))
    net.backward(y=np.ones((2, 3), np.float32))
    assert w.diff[0] == pytest.approx(9.0)  # sum of x * dy
    # The parameter is saved and loaded with the others.
    w.data[0] = 5.0
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    other = caffe.Net(net_file, caffe.TRAIN, weights=weights)
    assert other.params["scale"][0].data[0] == 5.0


def test_net_layers_gives_a_python_layers_own_object(tmp_path):
    layers = "\n".join(
        [
            python_layer("affine", "x", "y", "AffineLayer", "2 1"),
            python_layer("scale", "y", "z", "ScaleParamLayer"),
        ]
    )
    net = caffe.Net(write_net(tmp_path, layers), caffe.TRAIN)
    affine, scale = net.layers[1], net.layer_dict["scale"]
    # The objects the net built and drives: what setup stored is there.
    assert isinstance(affine, AffineLayer) and (affine.a, affine.b) == (2.0, 1.0)
    assert isinstance(scale, ScaleParamLayer) and scale.type == "Python"
    # Its blobs are the net's parameter blobs, outside any call too.
    (w,) = scale.blobs
    assert w.data[0] == 2.0
    w.data[0] = 4.0
    assert net.params["scale"][0].data[0] == 4.0
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(net.forward(x=x)["z"], 4.0 * (2 * x + 1))
    net.backward(z=np.ones((2, 3), np.float32))
    # The calls had their own blobs; the net's are back after them.
    assert scale.blobs[0].data[0] == 4.0
    assert scale.blobs[0].diff[0] == pytest.approx(3 * 6.0)  # sum of y * dz, y = 3
    # State set on the object from Python reaches the next pass.
    affine.a = -1.0
    np.testing.assert_allclose(net.forward(x=x)["z"], 4.0 * (-x + 1))


def test_phase_reaches_the_layer(tmp_path):
    net_file = write_net(tmp_path, python_layer("phase", "", "phase", "PhaseLayer"), inputs="")
    assert caffe.Net(net_file, caffe.TRAIN).forward()["phase"] == caffe.TRAIN
    assert caffe.Net(net_file, caffe.TEST).forward()["phase"] == caffe.TEST


def test_python_exceptions_become_engine_errors(tmp_path):
    setup_fails = write_net(tmp_path, python_layer("bad", "x", "y", "FailingLayer", "setup"))
    with pytest.raises(RuntimeError, match="no setup for you"):
        caffe.Net(setup_fails, caffe.TRAIN)
    forward_fails = write_net(tmp_path, python_layer("bad", "x", "y", "FailingLayer"))
    net = caffe.Net(forward_fails, caffe.TRAIN)
    with pytest.raises(RuntimeError, match="forward went wrong"):
        net.forward()
    missing = write_net(tmp_path, python_layer("bad", "x", "y", "NoSuchLayer"))
    with pytest.raises(RuntimeError, match="NoSuchLayer"):
        caffe.Net(missing, caffe.TRAIN)


def test_blobs_of_a_call_are_valid_for_that_call_only(tmp_path):
    net = caffe.Net(write_net(tmp_path, python_layer("k", "x", "y", "KeepingLayer")), 0)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = net.forward(x=x)
    np.testing.assert_array_equal(out["y"], x)
    bottom, top = KeepingLayer.kept
    with pytest.raises(RuntimeError, match="has returned"):
        bottom.data
    with pytest.raises(RuntimeError, match="has returned"):
        top.reshape(1)


def test_a_solver_trains_a_python_layers_parameter(tmp_path):
    net = tmp_path / "fit.prototxt"
    net.write_text(
        """name: 'fit' force_backward: true
layer { name: 'data' type: 'DummyData' top: 'x' top: 'target'
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 3 }
    data_filler { type: 'constant' value: 1 } data_filler { type: 'constant' value: 6 } } }
"""
        + python_layer("scale", "x", "y", "ScaleParamLayer")
        + "\nlayer { name: 'loss' type: 'EuclideanLoss' bottom: 'y' bottom: 'target' top: 'loss' }\n"
    )
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(
        f"net: '{net}' base_lr: 0.05 lr_policy: 'fixed' max_iter: 100 display: 0\n"
        "snapshot_after_train: false\n"
    )
    solver = caffe.get_solver(str(solver_file))
    (w,) = solver.net.params["scale"]
    assert w.data[0] == 2.0
    first = float(solver.net.forward()["loss"])
    solver.step(40)
    # The loss is 12 * (w - 6)^2 / (2 * 4): plain gradient descent on w goes to 6.
    assert w.data[0] == pytest.approx(6.0, abs=0.05)
    assert float(solver.net.forward()["loss"]) < first / 100


def test_nets_sharing_weights_are_not_run_inside_each_other(tmp_path):
    ip = (
        "layer { type: 'InnerProduct' name: 'ip' bottom: 'x' top: 'h' "
        "inner_product_param { num_output: 3 weight_filler { type: 'gaussian' } } }"
    )
    net_file = write_net(tmp_path, ip + python_layer("call", "h", "y", "CallsAnotherNetLayer"))
    outer, inner = caffe.Net(net_file, caffe.TEST), caffe.Net(net_file, caffe.TEST)
    CallsAnotherNetLayer.other = inner
    inner.layer_dict["call"].forward = lambda bottom, top: None
    try:
        outer.forward(x=np.ones((2, 3), np.float32))  # separate weights: allowed
        inner.share_with(outer)
        with pytest.raises(RuntimeError, match="shares weights"):
            outer.forward(x=np.ones((2, 3), np.float32))
    finally:
        CallsAnotherNetLayer.other = None
