"""Relate the spatial coordinates of blobs in a net_spec net.

A layer's coordinate map is a triple ``(axis, a, b)``: an input coordinate
``x`` corresponds to the output coordinate ``a * x + b`` along the spatial axes,
those after ``axis`` (the channel axis of a convolution, 1 for N x C x H x W
blobs; None for layers that work point by point on any axis).  ``a`` and
``b`` are numpy arrays with one value per spatial axis, or a single value
when the layer's parameters are given once for all axes.

``coord_map_from_to`` composes the maps along the net between two tops, and
``crop`` uses it to make the Crop layer that aligns one top with another (as
fully convolutional nets do to undo the padding of their first layers).
"""

from __future__ import division

import numpy as np

from .net_spec import layers as L

__all__ = ['coord_map_from_to', 'crop', 'coord_map', 'compose', 'inverse',
           'UndefinedMapException', 'AxisMismatchException',
           'PASS_THROUGH_LAYERS']

# Layers whose outputs sit exactly over their inputs.
PASS_THROUGH_LAYERS = ['AbsVal', 'BatchNorm', 'Bias', 'BNLL', 'Clip', 'Dropout',
                       'Eltwise', 'ELU', 'Exp', 'Log', 'LRN', 'MVN', 'Power',
                       'PReLU', 'ReLU', 'Scale', 'Sigmoid', 'Split', 'Swish',
                       'TanH', 'Threshold']

_LEGACY_2D = {'kernel_h', 'kernel_w', 'stride_h', 'stride_w', 'pad_h', 'pad_w'}


class UndefinedMapException(Exception):
    """The layer has no coordinate map (e.g. InnerProduct)."""


class AxisMismatchException(Exception):
    """Two maps over different axes cannot be composed."""


def _spatial_params(fn, message):
    """The layer's own parameters: from ``<message>=dict(...)`` when given
    that way, from the keyword arguments otherwise."""
    return fn.params.get(message, fn.params)


def conv_params(fn):
    """``(axis, stride, effective kernel extent, pad)`` of a Convolution,
    Deconvolution, Im2col or Pooling layer, as arrays; the extent counts the
    dilation."""
    message = 'pooling_param' if fn.type_name == 'Pooling' else 'convolution_param'
    params = _spatial_params(fn, message)
    legacy = _LEGACY_2D & (set(params) | set(fn.params))
    if legacy:
        raise AssertionError('coordinate maps do not support the legacy '
                             '_h/_w parameters ({})'.format(', '.join(sorted(legacy))))
    if 'kernel_size' not in params:
        raise UndefinedMapException('{} layer without kernel_size'.format(
            fn.type_name))
    kernel = np.array(params['kernel_size'], ndmin=1)
    dilation = np.array(params.get('dilation', 1), ndmin=1)
    return (params.get('axis', 1),
            np.array(params.get('stride', 1), ndmin=1),
            (kernel - 1) * dilation + 1,
            np.array(params.get('pad', 0), ndmin=1))


def crop_params(fn):
    """``(axis, offset)`` of a Crop layer; the axis defaults to 2 as in
    Caffe (the spatial axes of N x C x H x W blobs)."""
    params = _spatial_params(fn, 'crop_param')
    return params.get('axis', 2), np.array(params.get('offset', 0), ndmin=1)


def coord_map(fn):
    """The coordinate map ``(axis, a, b)`` of one layer.

    A convolution (or pooling) of stride s, extent k and padding p takes the
    output pixel at y from the window centred on s * y - p + (k - 1) / 2; a
    deconvolution is the reverse; a crop shifts by its offset.
    """
    if fn.type_name in ('Convolution', 'Pooling', 'Im2col'):
        axis, stride, extent, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if fn.type_name == 'Deconvolution':
        axis, stride, extent, pad = conv_params(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == 'Crop':
        first_cropped, offset = crop_params(fn)
        return first_cropped - 1, 1, -offset
    raise UndefinedMapException('no coordinate map for {} layers'.format(
        fn.type_name))


def compose(base_map, next_map):
    """``next_map`` followed by ``base_map``: x -> a1 * (a2 * x + b2) + b1.

    The axis is the one map's that has an axis; two different axes raise
    ``AxisMismatchException``."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        axis = ax2
    elif ax2 is None or ax1 == ax2:
        axis = ax1
    else:
        raise AxisMismatchException('cannot compose maps over axes {} and {}'
                                    .format(ax1, ax2))
    return axis, a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The map going the other way: y -> (y - b) / a."""
    axis, a, b = coord_map
    return axis, 1 / a, -b / a


def _mappable_bottoms(top):
    # A Crop's second bottom only gives the output size, not its coordinates.
    if top.fn.type_name == 'Crop':
        return top.fn.inputs[:1]
    return top.fn.inputs


def _maps_to_ancestors(start):
    """For ``start`` and each top it is computed from through layers with a
    coordinate map: the map from that top's coordinates to ``start``'s."""
    maps = {start: (None, 1, 0)}
    pending = [start]
    while pending:
        top = pending.pop()
        try:
            layer_map = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(top):
            if bottom not in maps:
                maps[bottom] = compose(maps[top], layer_map)
                pending.append(bottom)
    return maps


def coord_map_from_to(top_from, top_to):
    """The coordinate map ``(axis, a, b)`` taking coordinates of ``top_from``
    to coordinates of ``top_to``.

    Walks back from both tops to a common ancestor.  Raises ``RuntimeError``
    when they share none through spatial layers.
    """
    from_maps = _maps_to_ancestors(top_from)
    to_maps = {top_to: (None, 1, 0)}
    pending = [top_to]
    while pending:
        top = pending.pop(0)
        if top in from_maps:
            return compose(to_maps[top], inverse(from_maps[top]))
        try:
            layer_map = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(top):
            if bottom not in to_maps:
                to_maps[bottom] = compose(to_maps[top], layer_map)
                pending.append(bottom)
    raise RuntimeError('Could not compute map between tops; are they '
                       'connected by spatial layers?')


def crop(top_from, top_to):
    """A Crop layer (a ``Top``) cutting ``top_from`` to the region that lies
    over ``top_to``, with the offsets the coordinate map gives.

    Raises ``AssertionError`` when the two differ in scale or the offsets
    would be negative or fractional.
    """
    axis, a, b = coord_map_from_to(top_from, top_to)
    assert (np.asarray(a) == 1).all(), 'scale mismatch on crop (a = {})'.format(a)
    assert (np.asarray(b) <= 0).all(), 'cannot crop negative width (b = {})'.format(b)
    assert (np.round(b) == b).all(), \
        'cannot crop noninteger width (b = {})'.format(b)
    crop_param = {'offset': [int(v) for v in -np.round(np.atleast_1d(b))]}
    if axis is not None:
        crop_param['axis'] = axis + 1  # the first spatial axis
    return L.Crop(top_from, top_to, crop_param=crop_param)
