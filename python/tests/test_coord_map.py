"""coord_map: coordinate maps between tops of net_spec nets, and crop().

Re-derives upstream's python/caffe/test/test_coord_map.py and checks the maps
against the receptive-field geometry worked out by hand.
"""

import random

import numpy as np
import pytest

from caffe.coord_map import (AxisMismatchException, compose, coord_map,
                             coord_map_from_to, crop, inverse)
from caffe.net_spec import NetSpec, layers as L, params as P


def coord_net_spec(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0):
    """Input -> Convolution -> Pooling -> Deconvolution, the deconvolution's
    kernel twice its stride (as for upsampling)."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    n.aux = L.Input(shape=dict(dim=[2, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=ks, stride=stride,
                           pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool,
                       stride=pool, pad=0)
    deconv_ks = [2 * s for s in dstride] if isinstance(dstride, list) else 2 * dstride
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=deconv_ks,
                               stride=dstride, pad=dpad)
    return n


def same(x, y):
    return np.array_equal(np.atleast_1d(x), np.atleast_1d(y))


def test_conv_pool_deconv():
    # 2x pool then 2x deconv: identity
    n = coord_net_spec()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert ax == 1 and same(a, 1) and same(b, 0)
    # 4x pool then 4x deconv: shifted by one
    n = coord_net_spec(pool=4, dstride=4)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert ax == 1 and same(a, 1) and same(b, -1)


def test_map_matches_receptive_field_geometry():
    # conv k=5 s=2 p=1: output y is centred on input 2y - 1 + 2 = 2y + 1
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 32, 32]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=5, stride=2, pad=1)
    ax, a, b = coord_map_from_to(n.data, n.conv)  # data coords -> conv coords
    assert ax == 1 and same(a, 0.5) and same(b, -0.5)
    ax, a, b = coord_map_from_to(n.conv, n.data)  # conv coords -> data coords
    assert same(a, 2) and same(b, 1)
    # dilation widens the kernel: k=3 d=2 spans 5 pixels
    n.dil = L.Convolution(n.data, num_output=1, kernel_size=3, dilation=2)
    assert same(coord_map_from_to(n.dil, n.data)[2], 2)


def test_pass_through_layers_keep_the_map():
    n = coord_net_spec()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    n.relu = L.ReLU(n.deconv)
    n.conv1x1 = L.Convolution(n.relu, num_output=10, kernel_size=1, stride=1,
                              pad=0)
    for top in (n.relu, n.conv1x1):
        ax_pass, a_pass, b_pass = coord_map_from_to(top, n.data)
        assert ax == ax_pass and same(a, a_pass) and same(b, b_pass)


def test_padding():
    n = coord_net_spec()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    pad = random.randint(0, 10)
    # conv padding shifts one way
    n = coord_net_spec(pad=pad)
    _, a_pad, b_pad = coord_map_from_to(n.deconv, n.data)
    assert same(a, a_pad) and same(b - pad, b_pad)
    # deconv padding the other
    n = coord_net_spec(dpad=pad)
    _, a_pad, b_pad = coord_map_from_to(n.deconv, n.data)
    assert same(a, a_pad) and same(b + pad, b_pad)
    # both cancel out
    n = coord_net_spec(pad=pad, dpad=pad)
    _, a_pad, b_pad = coord_map_from_to(n.deconv, n.data)
    assert same(a, a_pad) and same(b, b_pad)


def test_multi_bottom_multi_top_layer():
    n = coord_net_spec()
    n.conv_data, n.conv_aux = L.Convolution(n.data, n.aux, ntop=2,
                                            num_output=10, kernel_size=5,
                                            stride=2, pad=0)
    ax1, a1, b1 = coord_map_from_to(n.conv_data, n.data)
    ax2, a2, b2 = coord_map_from_to(n.conv_aux, n.aux)
    assert ax1 == ax2 and same(a1, a2) and same(b1, b2)


def test_anisotropic_map_is_its_isotropic_parts():
    n3x3 = coord_net_spec(ks=3, stride=1, pad=0)
    n5x5 = coord_net_spec(ks=5, stride=2, pad=10)
    n3x5 = coord_net_spec(ks=[3, 5], stride=[1, 2], pad=[0, 10])
    ax_3x3, a_3x3, b_3x3 = coord_map_from_to(n3x3.deconv, n3x3.data)
    ax_5x5, a_5x5, b_5x5 = coord_map_from_to(n5x5.deconv, n5x5.data)
    ax_3x5, a_3x5, b_3x5 = coord_map_from_to(n3x5.deconv, n3x5.data)
    assert ax_3x3 == ax_5x5 == ax_3x5
    assert same(a_3x3, a_3x5[0]) and same(b_3x3, b_3x5[0])
    assert same(a_5x5, a_3x5[1]) and same(b_5x5, b_3x5[1])


def test_nd_convolution():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 100, 100, 100]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=[3, 3, 3],
                           stride=[1, 1, 1], pad=[0, 1, 2])
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2,
                       pad=0)
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=4, stride=2,
                               pad=0)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert ax == 1
    assert len(a) == len(b) == 3
    assert np.all(a == 1)
    assert b[0] - 1 == b[1] and b[1] - 1 == b[2]


def test_crop_of_crop():
    n = coord_net_spec()
    offset = random.randint(0, 10)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=offset)
    ax_crop, a_crop, b_crop = coord_map_from_to(n.crop, n.data)
    assert ax == ax_crop and same(a, a_crop) and same(b + offset, b_crop)


def test_crop_helper_makes_the_crop_layer():
    n = coord_net_spec()
    crop(n.deconv, n.data)  # upstream's case: identity, offset 0
    n = coord_net_spec(pad=7)
    n.crop = crop(n.deconv, n.data)
    layer = n.to_proto().layer[-1]
    assert layer.type == 'Crop'
    assert list(layer.bottom) == ['deconv', 'data']
    assert layer.crop_param.axis == 2
    assert list(layer.crop_param.offset) == [7]


def test_unconnected_tops_are_a_runtime_error():
    n = coord_net_spec()
    n.ip = L.InnerProduct(n.deconv, num_output=10)
    with pytest.raises(RuntimeError, match='connected by spatial layers'):
        coord_map_from_to(n.ip, n.data)


def test_scale_mismatch_cannot_be_cropped():
    n = coord_net_spec(pool=3, dstride=2)  # 3x down, 2x up
    with pytest.raises(AssertionError, match='scale mismatch'):
        crop(n.deconv, n.data)


def test_negative_crop_is_refused():
    n = coord_net_spec(dpad=10)  # output smaller than the input
    with pytest.raises(AssertionError, match='negative'):
        crop(n.deconv, n.data)


def test_compose_and_inverse():
    assert compose((None, 2, 1), (1, 3, 4)) == (1, 6, 9)
    ax, a, b = compose((1, 2., 1.), inverse((1, 2., 1.)))
    assert (ax, a, b) == (1, 1, 0)
    with pytest.raises(AxisMismatchException):
        compose((1, 1, 0), (2, 1, 0))


def test_legacy_h_w_parameters_are_refused():
    top = L.Convolution(L.Input(), num_output=1, kernel_h=3, kernel_w=3)
    with pytest.raises(AssertionError, match='legacy'):
        coord_map(top.fn)
