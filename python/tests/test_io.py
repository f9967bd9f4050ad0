"""caffe.io: message <-> array conversions, Transformer, images, oversample.

The first cases re-derive upstream's python/caffe/test/test_io.py; the rest
check the results against direct numpy computations (and Pillow's resize).
"""

import sys

import numpy as np
import pytest

from caffe import io as caffe_io


# -- upstream's cases --------------------------------------------------------------

def test_blobproto_old_format(caffe_pb2):
    blob = caffe_pb2.BlobProto()
    blob.data.extend(list(np.zeros((10, 10)).flatten()))
    blob.num, blob.channels, blob.height, blob.width = (1, 1, 10, 10)
    assert caffe_io.blobproto_to_array(blob).shape == (1, 1, 10, 10)


def test_blobproto_new_format(caffe_pb2):
    blob = caffe_pb2.BlobProto()
    blob.data.extend(list(np.zeros((10, 10)).flatten()))
    blob.shape.dim.extend([10, 10])
    assert caffe_io.blobproto_to_array(blob).shape == (10, 10)


def test_blobproto_without_shape_is_a_value_error(caffe_pb2):
    blob = caffe_pb2.BlobProto()
    blob.data.extend(list(np.zeros((10, 10)).flatten()))
    with pytest.raises(ValueError):
        caffe_io.blobproto_to_array(blob)


def test_blobproto_scalar(caffe_pb2):
    blob = caffe_pb2.BlobProto()
    blob.data.extend([123.0])
    arr = caffe_io.blobproto_to_array(blob)
    assert arr.shape == () and arr == 123


def test_datum_without_label_is_smaller():
    with_label = caffe_io.array_to_datum(np.ones((10, 10, 3)), label=1)
    without = caffe_io.array_to_datum(np.ones((10, 10, 3)))
    assert len(with_label.SerializeToString()) > len(without.SerializeToString())
    assert not without.HasField('label')


# -- round trips ---------------------------------------------------------------------

def test_blobproto_round_trip_with_diff():
    rng = np.random.RandomState(0)
    data = rng.randn(2, 3, 4).astype(np.float32)
    diff = rng.randn(2, 3, 4).astype(np.float32)
    blob = caffe_io.array_to_blobproto(data, diff)
    assert list(blob.shape.dim) == [2, 3, 4]
    assert not blob.HasField('num')
    np.testing.assert_array_equal(caffe_io.blobproto_to_array(blob), data)
    np.testing.assert_array_equal(
        caffe_io.blobproto_to_array(blob, return_diff=True), diff)
    with pytest.raises(ValueError, match='diff shape'):
        caffe_io.array_to_blobproto(data, diff[0])


def test_blobproto_double_data(caffe_pb2):
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([3])
    blob.double_data.extend([0.1, 0.2, 0.3])
    np.testing.assert_array_equal(caffe_io.blobproto_to_array(blob),
                                  [0.1, 0.2, 0.3])


def test_blobprotovector_round_trip(caffe_pb2):
    arrays = [np.arange(6.).reshape(2, 3), np.ones((1, 2, 2, 2))]
    serialized = caffe_io.arraylist_to_blobprotovector_str(arrays)
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(serialized)
    assert len(vec.blobs) == 2
    back = caffe_io.blobprotovector_str_to_arraylist(serialized)
    for a, b in zip(arrays, back):
        np.testing.assert_array_equal(a, b)


def test_datum_uint8_round_trip():
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    datum = caffe_io.array_to_datum(arr, label=7)
    assert (datum.channels, datum.height, datum.width, datum.label) == (2, 3, 4, 7)
    assert datum.data == arr.tobytes() and len(datum.float_data) == 0
    back = caffe_io.datum_to_array(datum)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, arr)
    back[0, 0, 0] = 99  # writable, not a view of the message's bytes


def test_datum_float_round_trip():
    arr = np.linspace(-1, 1, 12).reshape(3, 2, 2)
    datum = caffe_io.array_to_datum(arr)
    assert len(datum.data) == 0 and len(datum.float_data) == 12
    np.testing.assert_allclose(caffe_io.datum_to_array(datum), arr, rtol=1e-6)


def test_datum_needs_three_axes():
    with pytest.raises(ValueError, match='3-D'):
        caffe_io.array_to_datum(np.ones((4, 4)))


# -- Transformer -------------------------------------------------------------------

def make_transformer():
    t = caffe_io.Transformer({'data': (1, 3, 4, 5)})
    t.set_transpose('data', (2, 0, 1))
    t.set_channel_swap('data', (2, 1, 0))
    t.set_raw_scale('data', 255)
    t.set_mean('data', np.array([10., 20., 30.]))
    t.set_input_scale('data', 0.5)
    return t


def test_preprocess_matches_numpy():
    rng = np.random.RandomState(1)
    image = rng.rand(4, 5, 3).astype(np.float32)
    before = image.copy()
    out = make_transformer().preprocess('data', image)
    expected = (image.transpose(2, 0, 1)[[2, 1, 0]] * 255
                - np.array([10., 20., 30.])[:, None, None]) * 0.5
    assert out.dtype == np.float32 and out.shape == (3, 4, 5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(image, before)  # the caller's image is untouched


def test_deprocess_inverts_preprocess():
    rng = np.random.RandomState(2)
    image = rng.rand(4, 5, 3).astype(np.float32)
    t = make_transformer()
    back = t.deprocess('data', t.preprocess('data', image)[np.newaxis])
    np.testing.assert_allclose(back, image, atol=1e-5)


def test_preprocess_resizes_to_the_input():
    t = caffe_io.Transformer({'data': (1, 3, 8, 6)})
    t.set_transpose('data', (2, 0, 1))
    out = t.preprocess('data', np.full((16, 12, 3), 0.25, dtype=np.float32))
    assert out.shape == (3, 8, 6)
    np.testing.assert_allclose(out, 0.25)


def test_elementwise_mean():
    t = caffe_io.Transformer({'data': (1, 2, 3, 4)})
    t.set_transpose('data', (2, 0, 1))
    mean = np.arange(24.).reshape(2, 3, 4)
    t.set_mean('data', mean)
    image = np.random.RandomState(7).rand(3, 4, 2).astype(np.float32)
    np.testing.assert_allclose(t.preprocess('data', image),
                               image.transpose(2, 0, 1) - mean, rtol=1e-6)
    # an H x W mean for a one-channel input
    t1 = caffe_io.Transformer({'data': (1, 1, 3, 4)})
    t1.set_transpose('data', (2, 0, 1))
    t1.set_mean('data', mean[0])
    np.testing.assert_allclose(t1.preprocess('data', image[:, :, :1]),
                               image[:, :, :1].transpose(2, 0, 1) - mean[0],
                               rtol=1e-6)


def test_transformer_checks():
    t = caffe_io.Transformer({'data': (1, 3, 4, 5)})
    with pytest.raises(Exception, match='not one of the net inputs'):
        t.set_raw_scale('label', 2)
    with pytest.raises(Exception, match='Transpose order'):
        t.set_transpose('data', (1, 0))
    with pytest.raises(Exception, match='Channel swap'):
        t.set_channel_swap('data', (1, 0))
    with pytest.raises(ValueError, match='Mean channels'):
        t.set_mean('data', np.zeros(2))
    with pytest.raises(ValueError, match='incompatible with input shape'):
        t.set_mean('data', np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match='Mean shape invalid'):
        t.set_mean('data', np.zeros((1, 3, 4, 5)))


# -- resize_image ------------------------------------------------------------------

def test_resize_same_size_is_identity():
    image = np.random.RandomState(3).rand(5, 7, 3).astype(np.float32)
    np.testing.assert_allclose(caffe_io.resize_image(image, (5, 7)), image)


def test_resize_constant_stays_constant():
    image = np.full((5, 7, 4), 3.5, dtype=np.float32)
    for order in (0, 1):
        out = caffe_io.resize_image(image, (11, 2), interp_order=order)
        assert out.shape == (11, 2, 4) and out.dtype == np.float32
        np.testing.assert_allclose(out, 3.5)


def test_resize_halving_averages_pixel_pairs():
    image = np.arange(4 * 6, dtype=np.float32).reshape(4, 6, 1)
    out = caffe_io.resize_image(image, (2, 3))
    # pixel centres of the half-size image fall between source pairs
    expected = image.reshape(2, 2, 3, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(out[:, :, 0], expected)


def test_resize_nearest_repeats_pixels():
    image = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = caffe_io.resize_image(image, (4, 6), interp_order=0)
    np.testing.assert_array_equal(out, image.repeat(2, 0).repeat(2, 1))


def test_resize_upsampling_matches_pillow():
    Image = pytest.importorskip('PIL.Image')
    image = np.random.RandomState(4).rand(5, 4).astype(np.float32)
    ours = caffe_io.resize_image(image, (13, 9))
    theirs = np.asarray(Image.fromarray(image, mode='F').resize(
        (9, 13), Image.BILINEAR))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


# -- load_image --------------------------------------------------------------------

@pytest.fixture
def images(tmp_path):
    Image = pytest.importorskip('PIL.Image')
    rng = np.random.RandomState(5)
    rgb = rng.randint(0, 256, (6, 8, 3)).astype(np.uint8)
    gray = rng.randint(0, 256, (6, 8)).astype(np.uint8)
    rgba = np.dstack([rgb, np.full((6, 8), 128, np.uint8)])
    paths = {}
    for name, arr in (('rgb', rgb), ('gray', gray), ('rgba', rgba)):
        paths[name] = str(tmp_path / (name + '.png'))
        Image.fromarray(arr).save(paths[name])
    return paths, rgb, gray


def test_load_color_image(images):
    paths, rgb, _ = images
    img = caffe_io.load_image(paths['rgb'])
    assert img.dtype == np.float32 and img.shape == (6, 8, 3)
    np.testing.assert_allclose(img, rgb / 255., atol=1e-6)
    # color=False only matters for grayscale files
    assert caffe_io.load_image(paths['rgb'], color=False).shape == (6, 8, 3)
    np.testing.assert_allclose(caffe_io.load_image(paths['rgba']), img)


def test_load_gray_image(images):
    paths, _, gray = images
    as_gray = caffe_io.load_image(paths['gray'], color=False)
    assert as_gray.shape == (6, 8, 1)
    np.testing.assert_allclose(as_gray[:, :, 0], gray / 255., atol=1e-6)
    as_color = caffe_io.load_image(paths['gray'])
    assert as_color.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(as_color[:, :, c], as_gray[:, :, 0])


def test_load_image_without_an_image_library(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'PIL', None)
    monkeypatch.setitem(sys.modules, 'skimage', None)
    with pytest.raises(ImportError, match='pip install Pillow'):
        caffe_io.load_image(str(tmp_path / 'any.png'))


# -- oversample --------------------------------------------------------------------

def test_oversample_corners_centre_and_mirrors():
    rng = np.random.RandomState(6)
    images = [rng.rand(7, 9, 2).astype(np.float32) for _ in range(2)]
    crops = caffe_io.oversample(images, (4, 5))
    assert crops.shape == (20, 4, 5, 2) and crops.dtype == np.float32
    for i, im in enumerate(images):
        expected = [im[:4, :5], im[:4, 4:], im[3:, :5], im[3:, 4:],
                    im[1:5, 2:7]]
        for j, crop in enumerate(expected):
            np.testing.assert_array_equal(crops[10 * i + j], crop)
            np.testing.assert_array_equal(crops[10 * i + 5 + j], crop[:, ::-1])


def test_oversample_rejects_large_crops():
    with pytest.raises(ValueError, match='larger than the images'):
        caffe_io.oversample([np.zeros((3, 3, 1))], (4, 4))
