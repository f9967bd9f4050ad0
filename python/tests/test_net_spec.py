"""net_spec: nets written in Python become the NetParameter messages Caffe reads.

Re-derives upstream's python/caffe/test/test_net_spec.py (LeNet with named and
automatic names, top-less layers, the TypeError for a non-Top bottom) and
checks the messages field by field, including against the zoo's LeNet.
"""

import copy
import os
import tempfile

import pytest
from google.protobuf import text_format

from caffe import net_spec
from caffe.net_spec import NetSpec, layers as L, params as P


def lenet(batch_size):
    n = NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]),
                                         dict(dim=[batch_size, 1, 1, 1])],
                                  transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50,
                            weight_filler=dict(type='xavier'))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool2, num_output=500,
                           weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10,
                           weight_filler=dict(type='xavier'))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    return n.to_proto()


def anon_lenet(batch_size):
    data, label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]),
                                     dict(dim=[batch_size, 1, 1, 1])],
                              transform_param=dict(scale=1. / 255), ntop=2)
    conv1 = L.Convolution(data, kernel_size=5, num_output=20,
                          weight_filler=dict(type='xavier'))
    pool1 = L.Pooling(conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    conv2 = L.Convolution(pool1, kernel_size=5, num_output=50,
                          weight_filler=dict(type='xavier'))
    pool2 = L.Pooling(conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    ip1 = L.InnerProduct(pool2, num_output=500,
                         weight_filler=dict(type='xavier'))
    relu1 = L.ReLU(ip1, in_place=True)
    ip2 = L.InnerProduct(relu1, num_output=10,
                         weight_filler=dict(type='xavier'))
    loss = L.SoftmaxWithLoss(ip2, label)
    return loss.to_proto()


def silent_net():
    n = NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.silence_data = L.Silence(n.data, ntop=0)
    n.silence_data2 = L.Silence(n.data2, ntop=0)
    return n.to_proto()


def layer_summary(net):
    return [(layer.name, layer.type, list(layer.bottom), list(layer.top))
            for layer in net.layer]


# -- structure ---------------------------------------------------------------

def test_named_lenet_structure(caffe_pb2):
    net = lenet(50)
    assert isinstance(net, caffe_pb2.NetParameter)
    assert layer_summary(net) == [
        ('data', 'DummyData', [], ['data', 'label']),
        ('conv1', 'Convolution', ['data'], ['conv1']),
        ('pool1', 'Pooling', ['conv1'], ['pool1']),
        ('conv2', 'Convolution', ['pool1'], ['conv2']),
        ('pool2', 'Pooling', ['conv2'], ['pool2']),
        ('ip1', 'InnerProduct', ['pool2'], ['ip1']),
        ('relu1', 'ReLU', ['ip1'], ['ip1']),
        ('ip2', 'InnerProduct', ['ip1'], ['ip2']),
        ('loss', 'SoftmaxWithLoss', ['ip2', 'label'], ['loss']),
    ]
    # the ReLU is in place, as upstream's test checks
    assert net.layer[6].bottom == net.layer[6].top


def test_named_lenet_parameters(caffe_pb2):
    net = lenet(50)
    data = net.layer[0]
    assert [list(s.dim) for s in data.dummy_data_param.shape] == [
        [50, 1, 28, 28], [50, 1, 1, 1]]
    assert data.transform_param.scale == pytest.approx(1. / 255)
    conv1 = net.layer[1].convolution_param
    assert conv1.num_output == 20
    assert list(conv1.kernel_size) == [5]
    assert conv1.weight_filler.type == 'xavier'
    pool1 = net.layer[2].pooling_param
    assert pool1.pool == caffe_pb2.PoolingParameter.MAX
    assert (pool1.kernel_size, pool1.stride) == (2, 2)
    assert net.layer[5].inner_product_param.num_output == 500
    # nothing else was set
    assert not net.layer[6].HasField('relu_param')
    assert not net.layer[8].HasField('loss_param')


def test_anonymous_lenet_gets_automatic_names():
    net = anon_lenet(50)
    assert layer_summary(net) == [
        ('DummyData1', 'DummyData', [], ['DummyData1', 'DummyData2']),
        ('Convolution1', 'Convolution', ['DummyData1'], ['Convolution1']),
        ('Pooling1', 'Pooling', ['Convolution1'], ['Pooling1']),
        ('Convolution2', 'Convolution', ['Pooling1'], ['Convolution2']),
        ('Pooling2', 'Pooling', ['Convolution2'], ['Pooling2']),
        ('InnerProduct1', 'InnerProduct', ['Pooling2'], ['InnerProduct1']),
        ('ReLU1', 'ReLU', ['InnerProduct1'], ['InnerProduct1']),
        ('InnerProduct2', 'InnerProduct', ['InnerProduct1'], ['InnerProduct2']),
        ('SoftmaxWithLoss1', 'SoftmaxWithLoss', ['InnerProduct2', 'DummyData2'],
         ['SoftmaxWithLoss1']),
    ]


def test_top_less_layers_are_named_after_their_attribute():
    net = silent_net()
    assert layer_summary(net) == [
        ('data', 'DummyData', [], ['data', 'data2']),
        ('silence_data', 'Silence', ['data'], []),
        ('silence_data2', 'Silence', ['data2'], []),
    ]
    assert [list(s.dim) for s in net.layer[0].dummy_data_param.shape] == [[3]]


def test_ntop_decides_what_a_layer_call_returns():
    assert isinstance(L.Silence(ntop=0), net_spec.Function)
    assert isinstance(L.Input(), net_spec.Top)
    tops = L.DummyData(ntop=3)
    assert isinstance(tops, tuple) and len(tops) == 3
    assert all(isinstance(t, net_spec.Top) for t in tops)
    assert len({t.fn for t in tops}) == 1


def test_non_top_bottom_is_a_type_error():
    data = L.DummyData(ntop=2)  # a tuple of two tops
    expected = r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"
    with pytest.raises(TypeError, match=expected):
        L.Silence(data, ntop=0)
    L.Silence(*data, ntop=0)  # each element is a Top: fine


def test_shared_layer_appears_once_and_order_follows_the_graph():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2]))
    n.a = L.ReLU(n.data)
    n.b = L.Sigmoid(n.data)
    n.sum = L.Eltwise(n.a, n.b)
    net = n.to_proto()
    assert [layer.name for layer in net.layer] == ['data', 'a', 'b', 'sum']
    # to_proto on the last top alone reaches the same layers (auto-named)
    anon = n.sum.to_proto()
    assert [layer.type for layer in anon.layer] == ['Input', 'ReLU', 'Sigmoid', 'Eltwise']
    assert len({layer.name for layer in anon.layer}) == 4


# -- where keyword arguments go ----------------------------------------------

def test_param_names_come_from_the_layer_parameter_descriptor(caffe_pb2):
    names = net_spec._param_names
    assert names['Convolution'] == 'convolution'
    assert names['InnerProduct'] == 'inner_product'
    assert names['Transformation'] == 'transform'
    assert names['DummyData'] == 'dummy_data'
    assert names['Python'] == 'python'
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for type_name, prefix in names.items():
        field = fields[prefix + '_param']
        assert field.message_type.name == type_name + 'Parameter'


def test_generic_fields_go_to_the_layer(caffe_pb2):
    top = L.Convolution(L.Input(), num_output=4, kernel_size=[3, 3],
                        param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)],
                        loss_weight=0.5, propagate_down=False,
                        include=dict(phase=caffe_pb2.TEST),
                        bias_filler=dict(type='constant', value=0.1))
    layer = top.to_proto().layer[1]
    assert [(p.lr_mult, p.decay_mult) for p in layer.param] == [(1, 1), (2, 0)]
    assert list(layer.loss_weight) == [0.5]   # a single value for a repeated field
    assert list(layer.propagate_down) == [False]
    assert [r.phase for r in layer.include] == [caffe_pb2.TEST]
    conv = layer.convolution_param
    assert list(conv.kernel_size) == [3, 3]
    assert conv.bias_filler.type == 'constant'
    assert conv.bias_filler.value == pytest.approx(0.1)


def test_explicit_param_messages_and_name_override(caffe_pb2):
    filler = caffe_pb2.FillerParameter(type='gaussian', std=0.01)
    top = L.InnerProduct(L.Input(), inner_product_param=dict(num_output=7),
                         weight_filler=filler, name='fc')
    layer = top.to_proto().layer[1]
    assert layer.name == 'fc'
    assert layer.inner_product_param.num_output == 7
    assert layer.inner_product_param.weight_filler == filler


def test_deconvolution_parameters_go_to_convolution_param():
    top = L.Deconvolution(L.Input(), num_output=3, kernel_size=4, stride=2)
    conv = top.to_proto().layer[1].convolution_param
    assert (conv.num_output, list(conv.kernel_size), list(conv.stride)) == (3, [4], [2])


def test_python_layer_parameters():
    top = L.Python(L.Input(), module='my_layer', layer='Double',
                   param_str='{"k": 2}')
    param = top.to_proto().layer[1].python_param
    assert (param.module, param.layer, param.param_str) == (
        'my_layer', 'Double', '{"k": 2}')


def test_unknown_keyword_is_a_clear_error():
    top = L.Convolution(L.Input(), num_output=4, kernel_sise=3)
    with pytest.raises(AttributeError, match="kernel_sise.*ConvolutionParameter"):
        top.to_proto()
    with pytest.raises(AttributeError, match="no field 'bogus'"):
        L.Convolution(L.Input(), weight_filler=dict(bogus=1)).to_proto()


def test_parameters_give_enum_values(caffe_pb2):
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    assert P.Pooling.AVE == caffe_pb2.PoolingParameter.AVE
    assert P.Data.LMDB == caffe_pb2.DataParameter.LMDB
    assert P.Eltwise.SUM == caffe_pb2.EltwiseParameter.SUM
    with pytest.raises(AttributeError, match='PoolingParameter has no constant'):
        P.Pooling.MEDIAN
    with pytest.raises(AttributeError, match='no message NoSuchParameter'):
        P.NoSuch.X


def test_netspec_items_and_attributes():
    n = NetSpec()
    n['data'] = L.Input()
    assert n.data is n['data']
    assert 'data' in n and n.keys() == ['data']
    with pytest.raises(AttributeError):
        n.missing
    clone = copy.copy(n)
    assert clone.data is n.data
    del n.data
    assert n.keys() == []


def test_text_format_round_trip(caffe_pb2):
    net = lenet(64)
    parsed = text_format.Parse(str(net), caffe_pb2.NetParameter())
    assert parsed == net


# -- the zoo's LeNet -----------------------------------------------------------

def zoo_lenet(caffe_pb2):
    """The zoo's lenet_train_test.prototxt written with net_spec: the TEST
    net as upstream's 01-learning-lenet builds it (plus the learning-rate
    multipliers, bias fillers and accuracy of the zoo file), with the TRAIN
    data layer, made the same way, put in front."""
    def data_layer(phase, source, batch_size):
        return L.Data(name='mnist', include=dict(phase=phase),
                      transform_param=dict(scale=0.00390625),
                      source=source, batch_size=batch_size,
                      backend=P.Data.LMDB, ntop=2)

    learned = dict(param=[dict(lr_mult=1), dict(lr_mult=2)],
                   weight_filler=dict(type='xavier'),
                   bias_filler=dict(type='constant'))
    n = NetSpec()
    n.data, n.label = data_layer(caffe_pb2.TEST,
                                 'examples/mnist/mnist_test_lmdb', 100)
    n.conv1 = L.Convolution(n.data, num_output=20, kernel_size=5, stride=1,
                            **learned)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, num_output=50, kernel_size=5, stride=1,
                            **learned)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip1 = L.InnerProduct(n.pool2, num_output=500, **learned)
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10, **learned)
    n.accuracy = L.Accuracy(n.ip2, n.label, include=dict(phase=caffe_pb2.TEST))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    net = n.to_proto()

    train = NetSpec()
    train.data, train.label = data_layer(caffe_pb2.TRAIN,
                                         'examples/mnist/mnist_train_lmdb', 64)
    train_data = train.to_proto().layer[0]

    whole = caffe_pb2.NetParameter(name='LeNet')
    whole.layer.extend([train_data] + list(net.layer))
    return whole


def test_lenet_equals_the_zoo_prototxt(caffe_pb2, zoo):
    path = os.path.join(zoo, 'examples', 'mnist', 'lenet_train_test.prototxt')
    with open(path) as f:
        expected = text_format.Parse(f.read(), caffe_pb2.NetParameter())
    made = zoo_lenet(caffe_pb2)
    assert len(made.layer) == len(expected.layer)
    for ours, theirs in zip(made.layer, expected.layer):
        assert ours == theirs, '{}:\n{}\n!=\n{}'.format(theirs.name, ours, theirs)
    assert made == expected


# -- with the engine -----------------------------------------------------------

@pytest.fixture
def net_from_proto():
    """Builds a caffe.Net from a NetParameter, as upstream's test does (needs
    the native module)."""
    import caffe
    if not hasattr(caffe, 'Net'):
        pytest.skip('caffe.Net is not available (native module not built)')
    paths = []

    def build(net_param):
        with tempfile.NamedTemporaryFile('w', suffix='.prototxt',
                                         delete=False) as f:
            f.write(str(net_param))
        paths.append(f.name)
        return caffe.Net(f.name, caffe.TEST)

    yield build
    for path in paths:
        os.remove(path)


def test_lenet_builds_in_the_engine(net_from_proto):
    for net_param in (lenet(50), anon_lenet(50)):
        net = net_from_proto(net_param)
        assert len(net.layers) == 9
        assert list(net.blobs)[-1] == net_param.layer[-1].top[0]


def test_top_less_net_forward_gives_nothing(net_from_proto):
    net = net_from_proto(silent_net())
    assert len(net.forward()) == 0


def test_package_exports_the_helpers():
    import caffe
    if not hasattr(caffe, 'Net'):
        pytest.skip('caffe.Net is not available (native module not built)')
    from caffe import io as caffe_io
    assert caffe.NetSpec is NetSpec
    assert caffe.layers is L and caffe.params is P
    assert caffe.to_proto is net_spec.to_proto
    assert caffe.io is caffe_io
    assert caffe.Classifier.__module__ == 'caffe.classifier'
    assert caffe.Detector.__module__ == 'caffe.detector'
