"""caffe.Net: building, blobs and params sharing the engine's memory, forward/backward with
ranges and keyword inputs, saving and loading weights (after upstream's test_net.py)."""

import gc
from collections import OrderedDict

import numpy as np
import pytest

import caffe
from conftest import NUM_OUTPUT, simple_net_text


def test_blobs_and_params_are_ordered_by_the_net(net):
    assert list(net.blobs) == ["data", "label", "conv", "ip", "loss"]
    assert list(net.params) == ["conv", "ip"]
    assert net._layer_names == ["data", "conv", "ip", "loss"]
    assert [layer.type for layer in net.layers] == [
        "DummyData",
        "Convolution",
        "InnerProduct",
        "SoftmaxWithLoss",
    ]
    assert list(net.layer_dict) == net._layer_names
    assert net.layer_dict["conv"].type == "Convolution"
    assert [p.shape for p in net.params["conv"]] == [(11, 2, 2, 2), (11,)]
    assert [p.shape for p in net.layer_dict["ip"].blobs] == [
        (NUM_OUTPUT, 11 * 8 * 9),
        (NUM_OUTPUT,),
    ]
    assert net.blobs["data"].shape == (5, 2, 3, 4)
    blob = net.blobs["data"]
    assert (blob.num, blob.channels, blob.height, blob.width, blob.count) == (5, 2, 3, 4, 120)
    assert net.blobs["loss"].shape == ()
    assert net.blob_loss_weights["loss"] == 1.0


def test_inputs_outputs(net):
    assert net.inputs == []
    assert net.outputs == ["loss"]


def test_top_and_bottom_names(net):
    assert net.top_names == OrderedDict(
        [("data", ["data", "label"]), ("conv", ["conv"]), ("ip", ["ip"]), ("loss", ["loss"])]
    )
    assert net.bottom_names == OrderedDict(
        [("data", []), ("conv", ["data"]), ("ip", ["conv"]), ("loss", ["ip", "label"])]
    )


def test_data_arrays_are_float32_views_of_the_engine(net):
    data = net.blobs["data"].data
    assert data.dtype == np.float32
    assert data.flags.writeable
    # Two reads of one blob see the same memory.
    assert np.shares_memory(data, net.blobs["data"].data)
    assert np.shares_memory(net.params["conv"][0].data, net.layer_dict["conv"].blobs[0].data)


def test_forward_backward(net):
    out = net.forward()
    assert set(out) == {"loss"}
    assert np.isfinite(out["loss"]).all()
    grads = net.backward()
    assert grads == {}
    assert np.abs(net.params["conv"][0].diff).sum() > 0
    assert np.abs(net.blobs["data"].diff).sum() > 0


def test_memory_outlives_the_net(net):
    params = [p for blobs in net.params.values() for p in blobs]
    blobs = list(net.blobs.values())
    arrays = [net.blobs["conv"].data, net.params["ip"][0].diff]
    del net
    gc.collect()
    total = 0.0
    for p in params:
        total += p.data.sum() + p.diff.sum()
    for b in blobs:
        total += b.data.sum() + b.diff.sum()
    for a in arrays:
        total += a.sum()
    assert np.isfinite(total)


def test_arrays_outlive_a_reallocating_reshape(net):
    blob = net.blobs["data"]
    old = blob.data
    old[...] = 7.0
    blob.reshape(10, 2, 3, 4)  # beyond the capacity: new memory
    assert blob.shape == (10, 2, 3, 4)
    assert (old == 7.0).all()  # the old array still reads the old values
    blob.data[...] = 1.0
    assert (old == 7.0).all()
    blob.reshape(2, 2, 3, 4)  # within the capacity: same memory
    assert np.shares_memory(blob.data, net.blobs["data"].data)


def test_writing_an_input_feeds_the_net(tmp_path):
    path = tmp_path / "scale.prototxt"
    path.write_text("""name: 'scale' force_backward: true
input: 'x' input_shape { dim: 2 dim: 3 }
layer { name: 'double' type: 'Power' bottom: 'x' top: 'y' power_param { scale: 2 shift: 1 } }
""")
    net = caffe.Net(str(path), caffe.TEST)
    assert net.inputs == ["x"]
    assert net.outputs == ["y"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    net.blobs["x"].data[...] = x
    out = net.forward()
    np.testing.assert_array_equal(out["y"], 2 * x + 1)
    # Keyword inputs do the same.
    out = net.forward(x=-x)
    np.testing.assert_array_equal(out["y"], -2 * x + 1)
    # And backward takes the output's diff.
    grads = net.backward(y=np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(grads["x"], np.full((2, 3), 2, np.float32))
    # A reshape of the input, then of the net.
    net.blobs["x"].reshape(4, 3)
    net.reshape()
    assert net.blobs["y"].shape == (4, 3)


def test_keyword_inputs_are_checked(tmp_path):
    path = tmp_path / "scale.prototxt"
    path.write_text(
        "input: 'x' input_shape { dim: 2 dim: 3 }\n"
        "layer { name: 'p' type: 'Power' bottom: 'x' top: 'y' }\n"
    )
    net = caffe.Net(str(path), caffe.TEST)
    with pytest.raises(Exception, match="do not match net inputs"):
        net.forward(z=np.zeros((2, 3)))
    with pytest.raises(Exception, match="batch sized"):
        net.forward(x=np.zeros((3, 3)))


def test_forward_start_end_is_the_inner_product(net):
    conv = net.blobs["conv"]
    rng = np.random.default_rng(1)
    conv.data[...] = rng.uniform(size=conv.data.shape).astype(np.float32)
    out = net.forward(start="ip", end="ip")
    assert set(out) == {"ip"}
    weights, bias = (p.data for p in net.params["ip"])
    expected = conv.data.reshape(5, -1) @ weights.T + bias
    np.testing.assert_allclose(net.blobs["ip"].data, expected, rtol=1e-4, atol=1e-3)


def test_backward_start_end_is_the_inner_product(net):
    ip = net.blobs["ip"]
    rng = np.random.default_rng(2)
    ip.diff[...] = rng.uniform(size=ip.diff.shape).astype(np.float32)
    out = net.backward(start="ip", end="ip")
    assert "conv" in out
    weights = net.params["ip"][0].data
    expected = (ip.diff @ weights).reshape(net.blobs["conv"].shape)
    np.testing.assert_allclose(net.blobs["conv"].diff, expected, rtol=1e-4, atol=1e-3)


def test_clear_param_diffs(net):
    net.forward()
    net.backward()
    diff = net.params["conv"][0].diff
    assert np.abs(diff).sum() > 0
    net.clear_param_diffs()
    assert (diff == 0).all()


def test_unknown_layer_names_are_errors(net):
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        net.forward(start="nope")


def test_save_and_read(net, net_file, tmp_path):
    weights = tmp_path / "net.caffemodel"
    net.save(str(weights))
    net2 = caffe.Net(str(net_file), str(weights), caffe.TRAIN)
    net3 = caffe.Net(str(net_file), caffe.TRAIN, weights=str(weights))
    net4 = caffe.Net(str(net_file), caffe.TRAIN)
    net4.copy_from(str(weights))
    for other in (net2, net3, net4):
        for name, blobs in net.params.items():
            for mine, theirs in zip(blobs, other.params[name]):
                np.testing.assert_array_equal(mine.data, theirs.data)


def test_save_and_load_hdf5(net, net_file, tmp_path):
    weights = tmp_path / "net.caffemodel.h5"
    net.save_hdf5(str(weights))
    net2 = caffe.Net(str(net_file), caffe.TRAIN)
    net2.load_hdf5(str(weights))
    for name, blobs in net.params.items():
        for mine, theirs in zip(blobs, net2.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)


def test_share_with_shares_the_weights_memory(net, net_file):
    other = caffe.Net(str(net_file), caffe.TEST)
    other.share_with(net)
    for name in ["conv", "ip"]:
        for mine, theirs in zip(other.params[name], net.params[name]):
            assert np.shares_memory(mine.data, theirs.data)
            assert not np.shares_memory(mine.diff, theirs.diff)
    # A write through either net is the other's: the next forward uses it.
    net.params["ip"][1].data[...] = 7.0
    assert (other.params["ip"][1].data == 7.0).all()
    other.params["ip"][0].data[...] = 0.0
    other.forward()
    np.testing.assert_array_equal(other.blobs["ip"].data, np.full((5, NUM_OUTPUT), 7.0))
    # Diffs stay each net's own.
    net.forward()
    net.backward()
    assert np.abs(net.params["ip"][0].diff).sum() > 0
    assert np.abs(other.params["ip"][0].diff).sum() == 0


def test_share_with_checks_the_shapes(tmp_path, net):
    path = tmp_path / "wider.prototxt"
    path.write_text(simple_net_text(NUM_OUTPUT + 1))
    with pytest.raises(RuntimeError, match="Cannot share param 0 weights from layer 'ip'"):
        caffe.Net(str(path), caffe.TEST).share_with(net)


def test_forward_all_batches_and_unpads(tmp_path):
    path = tmp_path / "affine.prototxt"
    path.write_text("""force_backward: true
input: 'x' input_shape { dim: 4 dim: 3 }
layer { name: 'p' type: 'Power' bottom: 'x' top: 'y' power_param { scale: 3 shift: -1 } }
""")
    net = caffe.Net(str(path), caffe.TEST)
    x = np.random.default_rng(3).normal(size=(10, 3)).astype(np.float32)
    out = net.forward_all(x=x)
    assert out["y"].shape == (10, 3)
    np.testing.assert_allclose(out["y"], 3 * x - 1, rtol=1e-6)
    outs, diffs = net.forward_backward_all(x=x, y=np.ones((10, 3), np.float32))
    np.testing.assert_allclose(outs["y"], 3 * x - 1, rtol=1e-6)
    np.testing.assert_array_equal(diffs["x"], np.full((10, 3), 3, np.float32))


def test_levels_and_stages(tmp_path):
    path = tmp_path / "staged.prototxt"
    path.write_text("""input: 'x' input_shape { dim: 1 dim: 2 }
layer { name: 'always' type: 'Power' bottom: 'x' top: 'a' }
layer { name: 'deep' type: 'Power' bottom: 'x' top: 'b' include { min_level: 1 } }
layer { name: 'staged' type: 'Power' bottom: 'x' top: 'c' include { stage: 'deploy' } }
""")
    assert caffe.Net(str(path), caffe.TEST).outputs == ["a"]
    assert caffe.Net(str(path), caffe.TEST, level=1).outputs == ["a", "b"]
    assert caffe.Net(str(path), caffe.TEST, stages=["deploy"]).outputs == ["a", "c"]


def test_set_input_arrays_feeds_memory_data(tmp_path):
    path = tmp_path / "memory.prototxt"
    path.write_text("""layer { name: 'data' type: 'MemoryData' top: 'data' top: 'label'
  memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }
""")
    net = caffe.Net(str(path), caffe.TEST)
    data = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    labels = np.array([3, 1, 4, 1], dtype=np.float32)
    net.set_input_arrays(data, labels)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[:2])
    np.testing.assert_array_equal(net.blobs["label"].data.ravel(), labels[:2])
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[2:])


def test_engine_errors_are_python_exceptions(tmp_path, net):
    with pytest.raises(RuntimeError, match="no-such-file"):
        caffe.Net(str(tmp_path / "no-such-file.prototxt"), caffe.TEST)
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer { name: 'x' type: 'NoSuchLayer' top: 'x' }\n")
    with pytest.raises(RuntimeError, match="NoSuchLayer"):
        caffe.Net(str(bad), caffe.TEST)
    with pytest.raises(RuntimeError, match="MemoryData"):
        net.set_input_arrays(np.zeros((5, 2, 3, 4), np.float32), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="phase"):
        caffe.Net(str(bad), 7)


def test_module_settings():
    caffe.set_mode_cpu()
    caffe.set_device(0)
    with pytest.raises(RuntimeError, match="CPU only"):
        caffe.set_mode_gpu()
    types = caffe.layer_type_list()
    assert len(types) == len(set(types))
    assert {"Convolution", "InnerProduct", "MemoryData"} <= set(types)


def test_random_seed_makes_weights_repeatable(net_file):
    caffe.set_random_seed(1701)
    first = caffe.Net(str(net_file), caffe.TEST).params["conv"][0].data.copy()
    caffe.set_random_seed(1701)
    second = caffe.Net(str(net_file), caffe.TEST).params["conv"][0].data.copy()
    np.testing.assert_array_equal(first, second)


def test_rcaffe_is_caffe():
    import rcaffe

    assert rcaffe is caffe
    assert rcaffe.Net is caffe.Net


def test_simple_net_text_is_a_valid_netparameter():
    from google.protobuf import text_format

    from caffe.proto import caffe_pb2

    param = caffe_pb2.NetParameter()
    text_format.Merge(simple_net_text(NUM_OUTPUT), param)
    assert [layer.name for layer in param.layer] == ["data", "conv", "ip", "loss"]
    assert param.layer[1].convolution_param.num_output == 11
