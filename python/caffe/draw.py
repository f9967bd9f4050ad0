"""Draw a net (a ``caffe_pb2.NetParameter``) as a graph of layers and blobs.

Drawing goes through pydot and Graphviz, which are not dependencies of the
package: ``pip install pydot`` and install Graphviz (its ``dot`` program, e.g.
``apt-get install graphviz`` or ``brew install graphviz``).
"""

from .proto import caffe_pb2

__all__ = ['get_pydot_graph', 'draw_net', 'draw_net_to_file',
           'get_layer_label', 'get_edge_label', 'choose_color_by_layertype',
           'get_pooling_types_dict']

LAYER_STYLE_DEFAULT = {'shape': 'record', 'fillcolor': '#6495ED',
                       'style': 'filled'}
NEURON_LAYER_STYLE = {'shape': 'record', 'fillcolor': '#90EE90',
                      'style': 'filled'}
BLOB_STYLE = {'shape': 'octagon', 'fillcolor': '#E0E0E0', 'style': 'filled'}

_LAYER_COLORS = {
    'Convolution': '#FF5050',
    'Deconvolution': '#FF5050',
    'Pooling': '#FF9900',
    'InnerProduct': '#CC33FF',
}

_NO_PYDOT = ('caffe.draw needs pydot and Graphviz: pip install pydot, and '
             'install Graphviz (e.g. apt-get install graphviz)')


def _pydot():
    try:
        import pydot
    except ImportError:
        raise ImportError(_NO_PYDOT)
    return pydot


def get_pooling_types_dict():
    """Map the ``PoolingParameter.PoolMethod`` values to their names."""
    methods = caffe_pb2.PoolingParameter.PoolMethod
    return {value: name for name, value in methods.items()}


def get_edge_label(layer):
    """The label of the edges leaving ``layer``: the batch size of data
    layers, the number of outputs of convolutions and inner products."""
    if layer.type == 'Data':
        return 'Batch ' + str(layer.data_param.batch_size)
    if layer.type in ('Convolution', 'Deconvolution'):
        return str(layer.convolution_param.num_output)
    if layer.type == 'InnerProduct':
        return str(layer.inner_product_param.num_output)
    return None


def get_layer_lr_mult(layer):
    """The learning-rate multipliers of a layer's weights and biases, for
    layers that learn (1 when not given)."""
    if layer.type not in ('Convolution', 'Deconvolution', 'InnerProduct'):
        return None
    return ([p.lr_mult for p in layer.param] + [1.0, 1.0])[:2]


def _first(values, default):
    return values[0] if len(values) else default


def get_layer_label(layer, rankdir, display_lrm=False):
    """The text of a layer's node: its name and type, and for convolutions
    and poolings their kernel size, stride and padding.  Fields are stacked
    when the graph runs top to bottom, side by side otherwise."""
    separator = '\\n' if rankdir in ('TB', 'BT') else ' '
    parts = [layer.name, '(' + layer.type + ')']
    if layer.type in ('Convolution', 'Deconvolution'):
        conv = layer.convolution_param
        kernel = conv.kernel_h or _first(conv.kernel_size, 1)
        stride = conv.stride_h or _first(conv.stride, 1)
        pad = conv.pad_h or _first(conv.pad, 0)
        parts += ['kernel size: %d' % kernel, 'stride: %d' % stride,
                  'pad: %d' % pad]
    elif layer.type == 'Pooling':
        pool = layer.pooling_param
        parts.insert(2, 'pool type: ' + get_pooling_types_dict()[pool.pool])
        parts += ['kernel size: %d' % (pool.kernel_h or pool.kernel_size),
                  'stride: %d' % (pool.stride_h or pool.stride),
                  'pad: %d' % (pool.pad_h or pool.pad)]
    if display_lrm:
        mults = get_layer_lr_mult(layer)
        if mults is not None:
            parts.append('lr mult: %s' % ', '.join('%g' % m for m in mults))
    return '"%s"' % separator.join(parts)


def choose_color_by_layertype(layertype):
    """The fill colour of a layer type's nodes."""
    return _LAYER_COLORS.get(layertype, LAYER_STYLE_DEFAULT['fillcolor'])


def _in_phase(layer, phase):
    """Whether Caffe keeps ``layer`` in a net of ``phase`` (phase rules only;
    None keeps every layer)."""
    if phase is None:
        return True
    if len(layer.include):
        kept = any(rule.phase == phase for rule in layer.include)
    else:
        kept = True
    return kept and not any(rule.phase == phase for rule in layer.exclude)


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None,
                    display_lrm=False):
    """A ``pydot.Dot`` graph of the net: a node per layer and per blob, edges
    from bottoms to layers to tops.

    rankdir: Graphviz's direction, 'LR', 'TB', 'BT' or 'RL'.
    label_edges: label the edges out of layers (see ``get_edge_label``).
    phase: draw only the layers of ``caffe_pb2.TRAIN`` or ``caffe_pb2.TEST``
        (None draws all).
    display_lrm: show the learning-rate multipliers of learning layers.
    """
    pydot = _pydot()
    graph = pydot.Dot(caffe_net.name or 'Net', graph_type='digraph',
                      rankdir=rankdir)
    nodes = {}
    edges = []
    for layer in caffe_net.layer:
        if not _in_phase(layer, phase):
            continue
        node_name = '%s_%s' % (layer.name, layer.type)
        label = get_layer_label(layer, rankdir, display_lrm=display_lrm)
        in_place = (len(layer.bottom) == 1 and len(layer.top) == 1
                    and layer.bottom[0] == layer.top[0])
        if in_place:
            style = NEURON_LAYER_STYLE
        else:
            style = dict(LAYER_STYLE_DEFAULT,
                         fillcolor=choose_color_by_layertype(layer.type))
        nodes[node_name] = pydot.Node(node_name, label=label, **style)
        for bottom in layer.bottom:
            blob = bottom + '_blob'
            nodes.setdefault(blob, pydot.Node(blob, label='"%s"' % bottom,
                                              **BLOB_STYLE))
            edges.append((blob, node_name, None))
        edge_label = get_edge_label(layer) if label_edges else None
        for top in layer.top:
            blob = top + '_blob'
            nodes.setdefault(blob, pydot.Node(blob, label='"%s"' % top,
                                              **BLOB_STYLE))
            edges.append((node_name, blob, edge_label))
    for node in nodes.values():
        graph.add_node(node)
    for src, dst, edge_label in edges:
        attrs = {} if edge_label is None else {'label': '"%s"' % edge_label}
        graph.add_edge(pydot.Edge(nodes[src], nodes[dst], **attrs))
    return graph


def draw_net(caffe_net, rankdir, ext='png', phase=None, display_lrm=False):
    """The drawing of the net as bytes in Graphviz's format ``ext`` ('png',
    'svg', 'pdf', 'dot', ...).  See ``get_pydot_graph`` for the others."""
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase,
                            display_lrm=display_lrm)
    try:
        return graph.create(format=ext)
    except FileNotFoundError as err:
        raise RuntimeError('caffe.draw could not run Graphviz ({}); install '
                           'Graphviz so that its dot program is on the PATH '
                           '(e.g. apt-get install graphviz)'.format(err))


def draw_net_to_file(caffe_net, filename, rankdir='LR', phase=None,
                     display_lrm=False):
    """Draw the net into ``filename``, in the format its extension names."""
    ext = filename[filename.rfind('.') + 1:]
    with open(filename, 'wb') as out:
        out.write(draw_net(caffe_net, rankdir, ext, phase=phase,
                           display_lrm=display_lrm))
