"""Describe Caffe nets in Python and turn them into ``NetParameter`` messages.

A layer is written as a call on the ``layers`` pseudo-module, named after the
layer type; its positional arguments are the bottoms (``Top`` objects) and its
keyword arguments become fields of the layer's message::

    from caffe import layers as L, params as P

    n = NetSpec()
    n.data, n.label = L.Data(batch_size=64, backend=P.Data.LMDB,
                             source='train_lmdb', ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    net_param = n.to_proto()

Keyword arguments are placed as follows:

* ``ntop`` (default 1) is the number of tops; ``ntop=0`` gives back the
  ``Function`` itself, ``ntop=1`` its only ``Top``, more a tuple of tops.
* ``in_place=True`` makes the layer write its tops over its bottoms.
* a name ending in ``param`` (``param``, ``transform_param``,
  ``convolution_param``, ...) is a field of ``LayerParameter`` itself;
* any other name is looked up first in the layer type's own parameter message
  (``Convolution`` -> ``convolution_param``) and then in ``LayerParameter``
  (``loss_weight``, ``include``, ``name``, ...).

Values map onto the message recursively: a dict fills a sub-message, a list
fills a repeated field (a list of dicts adds one sub-message per dict), and a
single value given for a repeated field is taken as a one-element list.

Tops assigned as attributes of a ``NetSpec`` are named after the attribute,
and so is the layer that makes a top (by its first top).  Tops reached only
through other tops get automatic names: the layer type and a counter
(``Convolution1``).  The automatic names are not meant to be stable.
"""

from collections import Counter, OrderedDict

from .proto import caffe_pb2

__all__ = ['Top', 'Function', 'NetSpec', 'Layers', 'Parameters',
           'layers', 'params', 'to_proto', 'assign_proto', 'param_name_dict']


# Layer types whose parameters live in another type's message.
_SHARED_PARAM_MESSAGES = {
    'Deconvolution': 'convolution',
    'Im2col': 'convolution',
}


def param_name_dict():
    """Map each layer type name to the prefix of its ``*_param`` field.

    Derived from the ``LayerParameter`` descriptor: every message field whose
    name ends in ``_param`` and whose type ends in ``Parameter`` pairs the type
    name (less ``Parameter``) with the field name (less ``_param``), e.g.
    ``'Convolution' -> 'convolution'`` and ``'InnerProduct' -> 'inner_product'``.
    """
    names = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        message = field.message_type
        if message is None or not field.name.endswith('_param'):
            continue
        if not message.name.endswith('Parameter'):
            continue
        names[message.name[:-len('Parameter')]] = field.name[:-len('_param')]
    return names


def _plain(value):
    """numpy scalars become the Python numbers protobuf expects."""
    item = getattr(value, 'item', None)
    if item is not None and getattr(value, 'shape', None) == ():
        return item()
    return value


def _is_repeated(field_value):
    return hasattr(field_value, 'extend') and hasattr(field_value, '__len__')


def assign_proto(proto, name, value):
    """Store ``value`` in field ``name`` of message ``proto``, recursively.

    Dicts fill sub-messages, lists (and tuples) fill repeated fields, a list
    of dicts adds one sub-message per dict, and a single value given for a
    repeated field is wrapped in a list.  Protobuf messages are copied in.
    Raises ``AttributeError`` when the message has no such field.
    """
    if name not in proto.DESCRIPTOR.fields_by_name:
        raise AttributeError('{} has no field {!r}'.format(
            proto.DESCRIPTOR.name, name))
    current = getattr(proto, name)
    if _is_repeated(current):
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, dict):
                _fill_message(current.add(), item)
            elif hasattr(item, 'DESCRIPTOR') and hasattr(current, 'add'):
                current.add().CopyFrom(item)
            else:
                current.append(_plain(item))
    elif isinstance(value, dict):
        _fill_message(current, value)
    elif hasattr(value, 'DESCRIPTOR') and hasattr(current, 'CopyFrom'):
        current.CopyFrom(value)
    else:
        setattr(proto, name, _plain(value))


def _fill_message(message, values):
    for key, value in values.items():
        assign_proto(message, key, value)


def to_proto(*tops):
    """A ``NetParameter`` with every layer needed to compute ``tops``.

    Blobs and layers not named through a ``NetSpec`` get automatic names.
    """
    layers = OrderedDict()
    autonames = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class Top(object):
    """One output blob of a layer: the ``n``-th top of ``Function`` ``fn``."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """A ``NetParameter`` with every layer needed to compute this top."""
        return to_proto(self)

    def _update(self, params):
        self.fn._update(params)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)

    def __repr__(self):
        return '<Top {} of {}>'.format(self.n, self.fn.type_name)


class Function(object):
    """A layer: its type, its bottoms (``Top`` objects) and its parameters."""

    def __init__(self, type_name, inputs, params):
        for index, bottom in enumerate(inputs):
            if not isinstance(bottom, Top):
                raise TypeError('%s input %d is not a Top (type is %s)'
                                % (type_name, index, type(bottom)))
        self.type_name = type_name
        self.inputs = inputs
        self.params = dict(params)
        self.ntop = self.params.pop('ntop', 1)
        self.in_place = self.params.pop('in_place', False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _update(self, params):
        self.params.update(params)

    def _get_name(self, names, autonames):
        if self not in names:
            if self.ntop > 0:
                names[self] = self._get_top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _param_message(self, layer):
        """The layer type's own ``*_param`` message in ``layer``, or None."""
        prefix = _param_names.get(self.type_name)
        if prefix is None:
            prefix = _SHARED_PARAM_MESSAGES.get(self.type_name)
        if prefix is None:
            return None
        return getattr(layer, prefix + '_param')

    def _assign(self, layer, key, value):
        if key.endswith('param'):
            assign_proto(layer, key, value)
            return
        own = self._param_message(layer)
        if own is not None and key in own.DESCRIPTOR.fields_by_name:
            assign_proto(own, key, value)
        elif key in layer.DESCRIPTOR.fields_by_name:
            assign_proto(layer, key, value)
        else:
            where = 'LayerParameter'
            if own is not None:
                where = '{} or LayerParameter'.format(own.DESCRIPTOR.name)
            raise AttributeError('{} layer: no field {!r} in {}'.format(
                self.type_name, key, where))

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottom_names = []
        for bottom in self.inputs:
            bottom._to_proto(layers, names, autonames)
            bottom_names.append(layers[bottom.fn].top[bottom.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        for key, value in self.params.items():
            self._assign(layer, key, value)
        layers[self] = layer

    def __repr__(self):
        return '<Function {} ({} bottoms, {} tops)>'.format(
            self.type_name, len(self.inputs), self.ntop)


class NetSpec(object):
    """A set of named tops, assigned as attributes (or items).

    ``to_proto`` gives a ``NetParameter`` with all the layers needed to produce
    the assigned tops, in the order they were assigned; each assigned top (and
    the layer making it) is named after its attribute.
    """

    def __init__(self):
        super(NetSpec, self).__setattr__('tops', OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        if name == 'tops' or name.startswith('__'):
            raise AttributeError(name)  # e.g. copy's probes of a bare instance
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError('NetSpec has no top named {!r}'.format(name))

    def __delattr__(self, name):
        try:
            del self.tops[name]
        except KeyError:
            raise AttributeError('NetSpec has no top named {!r}'.format(name))

    def __setitem__(self, name, value):
        self.tops[name] = value

    def __getitem__(self, name):
        return self.tops[name]

    def __delitem__(self, name):
        del self.tops[name]

    def __contains__(self, name):
        return name in self.tops

    def keys(self):
        return list(self.tops.keys())

    def to_proto(self):
        names = {value: key for key, value in self.tops.items()}
        autonames = Counter()
        layers = OrderedDict()
        for value in self.tops.values():
            value._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers(object):
    """Pseudo-module of layer constructors: ``Layers().Convolution(bottom,
    kernel_size=3)`` describes a 3x3 convolution of ``bottom``.

    Gives the ``Function`` when ``ntop=0``, its ``Top`` when ``ntop=1`` (the
    default), and a tuple of tops otherwise.
    """

    def __getattr__(self, type_name):
        if type_name.startswith('__'):
            raise AttributeError(type_name)

        def layer_fn(*bottoms, **kwargs):
            fn = Function(type_name, bottoms, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops

        layer_fn.__name__ = type_name
        return layer_fn


class _ParameterConstants(object):
    """The enum values of one ``<Name>Parameter`` message, as attributes."""

    def __init__(self, message_name):
        self._message_name = message_name

    def __getattr__(self, constant):
        if constant.startswith('__'):
            raise AttributeError(constant)
        message = getattr(caffe_pb2, self._message_name, None)
        if message is None:
            raise AttributeError('caffe_pb2 has no message {}'.format(
                self._message_name))
        try:
            return getattr(message, constant)
        except AttributeError:
            raise AttributeError('{} has no constant {!r}'.format(
                self._message_name, constant))


class Parameters(object):
    """Pseudo-module of parameter constants: ``Parameters().Pooling.MAX`` is
    ``caffe_pb2.PoolingParameter.MAX``."""

    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _ParameterConstants(name + 'Parameter')


_param_names = param_name_dict()
layers = Layers()
params = Parameters()
