"""caffe.draw: nets as pydot graphs and Graphviz drawings.

Re-derives upstream's python/caffe/test/test_draw.py (draw every net of the
model zoo) and checks the graph's nodes and edges.  Needs pydot, and Graphviz's
dot for the drawings; the tests say so when they are missing.
"""

import os
import shutil
import sys

import pytest
from google.protobuf import text_format

from caffe import draw


def read_net(caffe_pb2, path):
    with open(path) as f:
        return text_format.Parse(f.read(), caffe_pb2.NetParameter())


def zoo_nets(zoo):
    for root, _, names in os.walk(zoo):
        for name in sorted(names):
            if name.endswith('.prototxt') and 'solver' not in name:
                yield os.path.join(root, name)


@pytest.fixture
def pydot():
    try:
        import pydot
    except ImportError as err:
        pytest.skip('pydot is not installed ({})'.format(err))
    return pydot


@pytest.fixture
def dot(pydot):
    if shutil.which('dot') is None:
        pytest.skip("Graphviz's dot is not installed")


@pytest.fixture
def lenet(caffe_pb2, zoo):
    return read_net(caffe_pb2, os.path.join(zoo, 'examples', 'mnist',
                                            'lenet_train_test.prototxt'))


def edge_pairs(graph):
    return {(e.get_source(), e.get_destination()) for e in graph.get_edges()}


def test_graph_has_layers_blobs_and_edges(pydot, lenet):
    graph = draw.get_pydot_graph(lenet, 'LR')
    names = {n.get_name().strip('"') for n in graph.get_nodes()}
    assert {'mnist_Data', 'conv1_Convolution', 'relu1_ReLU', 'loss_SoftmaxWithLoss',
            'data_blob', 'label_blob', 'ip1_blob', 'loss_blob'} <= names
    pairs = {(s.strip('"'), d.strip('"')) for s, d in edge_pairs(graph)}
    assert ('data_blob', 'conv1_Convolution') in pairs
    assert ('conv1_Convolution', 'conv1_blob') in pairs
    # the in-place ReLU reads and writes ip1
    assert ('ip1_blob', 'relu1_ReLU') in pairs and ('relu1_ReLU', 'ip1_blob') in pairs
    node = graph.get_node('relu1_ReLU')[0]
    assert node.get('fillcolor') == draw.NEURON_LAYER_STYLE['fillcolor']
    conv = graph.get_node('conv1_Convolution')[0]
    assert conv.get('fillcolor') == draw.choose_color_by_layertype('Convolution')
    assert 'kernel size: 5' in conv.get('label')


def test_edge_labels(pydot, lenet):
    graph = draw.get_pydot_graph(lenet, 'TB')
    labels = {(e.get_source().strip('"'), e.get_destination().strip('"')):
              e.get('label') for e in graph.get_edges()}
    assert labels[('conv1_Convolution', 'conv1_blob')] == '"20"'
    assert labels[('ip1_InnerProduct', 'ip1_blob')] == '"500"'
    assert labels[('mnist_Data', 'data_blob')] in ('"Batch 64"', '"Batch 100"')
    unlabelled = draw.get_pydot_graph(lenet, 'TB', label_edges=False)
    assert all(e.get('label') is None for e in unlabelled.get_edges())


def test_phase_selects_layers(pydot, caffe_pb2, lenet):
    def layer_nodes(phase):
        graph = draw.get_pydot_graph(lenet, 'LR', phase=phase)
        return {n.get_name().strip('"') for n in graph.get_nodes()
                if not n.get_name().strip('"').endswith('_blob')}
    assert 'accuracy_Accuracy' in layer_nodes(caffe_pb2.TEST)
    assert 'accuracy_Accuracy' not in layer_nodes(caffe_pb2.TRAIN)
    assert 'accuracy_Accuracy' in layer_nodes(None)


def test_layer_labels(caffe_pb2):
    layer = caffe_pb2.LayerParameter(name='pool1', type='Pooling')
    layer.pooling_param.pool = caffe_pb2.PoolingParameter.AVE
    layer.pooling_param.kernel_size = 3
    layer.pooling_param.stride = 2
    assert draw.get_layer_label(layer, 'TB') == \
        '"pool1\\n(Pooling)\\npool type: AVE\\nkernel size: 3\\nstride: 2\\npad: 0"'
    assert draw.get_layer_label(layer, 'LR').startswith('"pool1 (Pooling) pool')
    conv = caffe_pb2.LayerParameter(name='c', type='Convolution')
    conv.convolution_param.kernel_size.append(3)
    conv.param.add(lr_mult=2)
    assert draw.get_layer_label(conv, 'LR', display_lrm=True).endswith(
        'lr mult: 2, 1"')


def test_draw_every_zoo_net(dot, caffe_pb2, zoo):
    count = 0
    for path in zoo_nets(zoo):
        png = draw.draw_net(read_net(caffe_pb2, path), 'LR')
        assert png.startswith(b'\x89PNG'), path
        count += 1
    assert count > 0


def test_draw_net_to_file(dot, lenet, tmp_path):
    out = str(tmp_path / 'lenet.svg')
    draw.draw_net_to_file(lenet, out, 'BT')
    with open(out) as f:
        svg = f.read()
    assert '<svg' in svg and 'conv1' in svg


def test_missing_pydot_is_a_clear_error(monkeypatch, caffe_pb2):
    monkeypatch.setitem(sys.modules, 'pydot', None)
    with pytest.raises(ImportError, match='pip install pydot'):
        draw.draw_net(caffe_pb2.NetParameter(), 'LR')
