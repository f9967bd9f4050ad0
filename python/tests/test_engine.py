"""Python against the engine itself: a forward from Python scores what the `rcaffe` command
line scores with the same weights, and blob values match hand computations."""

import os
import re
import subprocess
import numpy as np
import pytest

import caffe
from conftest import rcaffe_binary

NET = """name: 'cli'
layer { name: 'data' type: 'DummyData' top: 'data'
  dummy_data_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 }
    data_filler { type: 'uniform' min: -1 max: 1 } } }
layer { name: 'conv' type: 'Convolution' bottom: 'data' top: 'conv'
  convolution_param { num_output: 4 kernel_size: 3 stride: 2
    weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'constant' value: 0.1 } } }
layer { name: 'relu' type: 'ReLU' bottom: 'conv' top: 'conv' }
layer { name: 'ip' type: 'InnerProduct' bottom: 'conv' top: 'ip'
  inner_product_param { num_output: 3
    weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'constant' value: -0.2 } } }
"""


def conv_relu_ip(data, conv_w, conv_b, ip_w, ip_b):
    """The net's forward in numpy: 3x3 convolution with stride 2, ReLU, inner product."""
    n, _, h, w = data.shape
    out_h, out_w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    conv = np.empty((n, conv_w.shape[0], out_h, out_w))
    for y in range(out_h):
        for x in range(out_w):
            patch = data[:, :, 2 * y : 2 * y + 3, 2 * x : 2 * x + 3].astype(np.float64)
            conv[:, :, y, x] = np.einsum("nchw,ochw->no", patch, conv_w) + conv_b
    conv = np.maximum(conv, 0)
    return conv.reshape(n, -1) @ ip_w.T.astype(np.float64) + ip_b


@pytest.fixture
def cli_net(tmp_path):
    path = tmp_path / "cli.prototxt"
    path.write_text(NET)
    return path


def test_forward_matches_a_numpy_computation(cli_net):
    net = caffe.Net(str(cli_net), caffe.TEST)
    out = net.forward()
    conv_w, conv_b = (p.data for p in net.params["conv"])
    ip_w, ip_b = (p.data for p in net.params["ip"])
    expected = conv_relu_ip(net.blobs["data"].data, conv_w, conv_b, ip_w, ip_b)
    np.testing.assert_allclose(out["ip"], expected, rtol=1e-5, atol=1e-5)


def test_forward_matches_the_command_line(cli_net, tmp_path):
    binary = rcaffe_binary()
    # Constant data, so that both runs see the same input; the weights travel in a file.
    fixed = tmp_path / "fixed.prototxt"
    fixed.write_text(NET.replace("type: 'uniform' min: -1 max: 1", "type: 'constant' value: 0.37"))
    net = caffe.Net(str(fixed), caffe.TEST)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    python_out = net.forward()["ip"]
    run = subprocess.run(
        [
            str(binary),
            "test",
            "--model",
            str(fixed),
            "--weights",
            str(weights),
            "--iterations",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GLOG_minloglevel": "0"},
    )
    scores = [float(v) for v in re.findall(r"Batch 0, ip = (\S+)", run.stderr)]
    assert len(scores) == python_out.size, run.stderr
    np.testing.assert_allclose(np.array(scores), python_out.ravel(), rtol=1e-5, atol=1e-5)
