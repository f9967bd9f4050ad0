"""Conversions between numpy arrays and Caffe's messages, image loading and
the preprocessing that turns images into network inputs.

Only numpy is required.  ``load_image`` reads image files through Pillow or,
when Pillow is missing, scikit-image; ``resize_image`` is plain numpy for the
nearest and linear orders.
"""

import numpy as np

from .proto import caffe_pb2

__all__ = ['blobproto_to_array', 'array_to_blobproto',
           'arraylist_to_blobprotovector_str', 'blobprotovector_str_to_arraylist',
           'array_to_datum', 'datum_to_array', 'Transformer', 'load_image',
           'resize_image', 'oversample']


# -- messages <-> arrays -------------------------------------------------------

_LEGACY_DIMS = ('num', 'channels', 'height', 'width')


def blobproto_to_array(blob, return_diff=False):
    """The data (or, with ``return_diff``, the diff) of a ``BlobProto`` as an
    array of the blob's shape.

    Blobs written with the legacy num/channels/height/width fields come back
    4-D; others take ``blob.shape``.  Raises ``ValueError`` when the number of
    values does not fit the shape.
    """
    if any(blob.HasField(dim) for dim in _LEGACY_DIMS):
        shape = tuple(getattr(blob, dim) for dim in _LEGACY_DIMS)
    else:
        shape = tuple(blob.shape.dim)
    if return_diff:
        values = blob.diff if len(blob.diff) else blob.double_diff
    else:
        values = blob.data if len(blob.data) else blob.double_data
    return np.array(values, dtype=np.float64).reshape(shape)


def array_to_blobproto(arr, diff=None):
    """A ``BlobProto`` holding ``arr`` (any number of axes) and, when given,
    ``diff`` (which must have the same shape)."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(float).flat)
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise ValueError('diff shape {} differs from data shape {}'.format(
                diff.shape, arr.shape))
        blob.diff.extend(diff.astype(float).flat)
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    """A list of arrays as a serialized ``BlobProtoVector``."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(arr) for arr in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(serialized):
    """The arrays of a serialized ``BlobProtoVector``."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(serialized)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr, label=None):
    """A ``Datum`` holding a channels x height x width array.

    uint8 arrays are stored as bytes in ``data``, others as ``float_data``.
    The label is set only when given.
    """
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError('array_to_datum needs a 3-D (channels x height x '
                         'width) array, got shape {}'.format(arr.shape))
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).flat)
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    """A ``Datum``'s values as a channels x height x width array: uint8 when
    stored as bytes, float otherwise.  The label is ``datum.label``."""
    shape = (datum.channels, datum.height, datum.width)
    if datum.encoded:
        raise ValueError('the datum holds an encoded image; decode it first '
                         '(e.g. with Pillow) instead of datum_to_array')
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()
    return np.array(datum.float_data, dtype=float).reshape(shape)


# -- preprocessing ---------------------------------------------------------------

class Transformer(object):
    """Turns images into a net's input format, and back.

    ``inputs`` maps input blob names to their shapes, e.g.
    ``{'data': net.blobs['data'].data.shape}``.  For each input one may set a
    transpose (e.g. ``(2, 0, 1)`` from H x W x K to K x H x W), a channel swap
    (e.g. ``(2, 1, 0)`` from RGB to BGR), a raw scale (e.g. 255 for models
    trained on [0, 255] pixels), a mean to subtract and an input scale.
    ``preprocess`` applies them in that order after resizing to the input's
    height and width; ``deprocess`` undoes them.
    """

    def __init__(self, inputs):
        self.inputs = {name: tuple(shape) for name, shape in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise Exception('{} is not one of the net inputs: {}'.format(
                in_, self.inputs))

    def preprocess(self, in_, data):
        """An (H' x W' x K) image as a (K x H x W) float32 input for ``in_``:
        resized, transposed, channel-swapped, raw-scaled, mean-subtracted and
        input-scaled as set."""
        self._check_input(in_)
        caffe_in = np.asarray(data, dtype=np.float32)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        transpose = self.transpose.get(in_)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        raw_scale = self.raw_scale.get(in_)
        if raw_scale is not None:
            caffe_in = caffe_in * raw_scale
        mean = self.mean.get(in_)
        if mean is not None:
            caffe_in = caffe_in - mean
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            caffe_in = caffe_in * input_scale
        return np.ascontiguousarray(caffe_in, dtype=np.float32)

    def deprocess(self, in_, data):
        """Undo ``preprocess``: from the net's (K x H x W) input (a leading
        axis of 1 is dropped) back to an image (without undoing the resize)."""
        self._check_input(in_)
        image = np.array(data, dtype=np.float32).squeeze()
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            image /= input_scale
        mean = self.mean.get(in_)
        if mean is not None:
            image += mean
        raw_scale = self.raw_scale.get(in_)
        if raw_scale is not None:
            image /= raw_scale
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            image = image[np.argsort(channel_swap), :, :]
        transpose = self.transpose.get(in_)
        if transpose is not None:
            image = image.transpose(np.argsort(transpose))
        return image

    def set_transpose(self, in_, order):
        """Order in which to transpose the image's axes, e.g. ``(2, 0, 1)``
        for H x W x K images and K x H x W inputs."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise Exception('Transpose order needs to have the same number of '
                            'dimensions as the input.')
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """Order in which to take the channels (after the transpose), e.g.
        ``(2, 1, 0)`` for RGB to BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise Exception('Channel swap needs to have the same number of '
                            'dimensions as the input channels.')
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """Scale applied to the raw image before the mean is subtracted
        (255 for models that take [0, 255] pixels, as images load in
        [0, 1])."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Mean to subtract: one value per channel (1-D) or a K x H x W (or
        H x W) array matching the input."""
        self._check_input(in_)
        mean = np.asarray(mean)
        channels = self.inputs[in_][1]
        if mean.ndim == 1:
            if mean.shape[0] != channels:
                raise ValueError('Mean channels incompatible with input.')
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            shape = mean.shape
            if len(shape) == 2:
                shape = (1,) + shape
            if len(shape) != 3:
                raise ValueError('Mean shape invalid')
            if shape != self.inputs[in_][1:]:
                raise ValueError('Mean shape {} incompatible with input shape '
                                 '{}.'.format(mean.shape, self.inputs[in_]))
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Scale applied last, after the mean is subtracted."""
        self._check_input(in_)
        self.input_scale[in_] = scale


# -- images ------------------------------------------------------------------------

_NO_IMAGE_LIBRARY = ('caffe.io.load_image needs an image library: '
                     'pip install Pillow (or pip install scikit-image)')


def _read_with_pillow(filename):
    from PIL import Image
    with Image.open(filename) as img:
        if img.mode in ('1', 'L', 'I', 'I;16', 'F'):
            return np.array(img)
        if img.mode in ('LA', 'La'):
            return np.array(img.convert('L'))
        if img.mode.startswith('I;16'):
            return np.array(img.convert('I'))
        return np.array(img.convert('RGB'))


def _read_with_skimage(filename):
    import skimage.io
    return skimage.io.imread(filename)


def _as_unit_float(img):
    """Pixel values as float32 in [0, 1]: integers are divided by the largest
    value of their type (16 bits for int32, which Pillow uses for 16-bit
    images); floats are kept."""
    if img.dtype == np.bool_:
        return img.astype(np.float32)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255
    if img.dtype in (np.uint16, np.int32, np.int16):
        return img.astype(np.float32) / 65535
    return img.astype(np.float32)


def load_image(filename, color=True):
    """Load an image as float32 in [0, 1], H x W x 3 (RGB) or, for a grayscale
    image with ``color=False``, H x W x 1.  Alpha channels are dropped and
    grayscale images are repeated into three channels when ``color``.

    Reads through Pillow, or scikit-image when Pillow is not installed.
    """
    try:
        img = _read_with_pillow(filename)
    except ImportError:
        try:
            img = _read_with_skimage(filename)
        except ImportError:
            raise ImportError(_NO_IMAGE_LIBRARY)
    img = _as_unit_float(img)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return img


def _sample_positions(n_in, n_out):
    """Source coordinates of the output pixel centres, clamped to the image."""
    scale = n_in / float(n_out)
    pos = (np.arange(n_out) + 0.5) * scale - 0.5
    return np.clip(pos, 0, n_in - 1)


def resize_image(im, new_dims, interp_order=1):
    """Resize an H x W x K (or H x W) image to ``new_dims`` (height, width).

    ``interp_order`` 0 is nearest neighbour and 1 (the default) bilinear,
    sampling at pixel centres with the edges repeated; higher orders use
    scikit-image's resize when it is installed.  Gives float32.
    """
    im = np.asarray(im)
    new_h, new_w = (int(d) for d in new_dims)
    if im.ndim not in (2, 3):
        raise ValueError('resize_image needs an H x W or H x W x K image, got '
                         'shape {}'.format(im.shape))
    flat = im.ndim == 2
    if flat:
        im = im[:, :, np.newaxis]
    h, w = im.shape[:2]
    im = im.astype(np.float32)
    if interp_order == 0:
        rows = np.minimum((np.arange(new_h) * h) // new_h, h - 1)
        cols = np.minimum((np.arange(new_w) * w) // new_w, w - 1)
        out = im[rows][:, cols]
    elif interp_order == 1:
        y = _sample_positions(h, new_h)
        x = _sample_positions(w, new_w)
        y0 = np.floor(y).astype(int)
        x0 = np.floor(x).astype(int)
        y1 = np.minimum(y0 + 1, h - 1)
        x1 = np.minimum(x0 + 1, w - 1)
        wy = (y - y0).astype(np.float32)[:, np.newaxis, np.newaxis]
        wx = (x - x0).astype(np.float32)[np.newaxis, :, np.newaxis]
        top = im[y0][:, x0] * (1 - wx) + im[y0][:, x1] * wx
        bottom = im[y1][:, x0] * (1 - wx) + im[y1][:, x1] * wx
        out = top * (1 - wy) + bottom * wy
    else:
        try:
            from skimage.transform import resize
        except ImportError:
            raise ImportError('resize_image with interp_order={} needs '
                              'scikit-image: pip install scikit-image (orders '
                              '0 and 1 need nothing)'.format(interp_order))
        out = resize(im, (new_h, new_w), order=interp_order, mode='edge',
                     anti_aliasing=False, preserve_range=True)
    out = np.ascontiguousarray(out, dtype=np.float32)
    return out[:, :, 0] if flat else out


def oversample(images, crop_dims):
    """Ten crops of each H x W x K image: the four corners and the centre,
    then the same five mirrored left to right.

    Gives a (10 * N) x h x w x K float32 array for ``crop_dims`` (h, w).
    """
    crop_h, crop_w = (int(d) for d in crop_dims)
    if len(images) == 0:
        raise ValueError('oversample needs at least one image')
    height, width, channels = np.asarray(images[0]).shape
    if crop_h > height or crop_w > width:
        raise ValueError('crop {} is larger than the images {}'.format(
            (crop_h, crop_w), (height, width)))
    corners = [(0, 0), (0, width - crop_w), (height - crop_h, 0),
               (height - crop_h, width - crop_w),
               ((height - crop_h) // 2, (width - crop_w) // 2)]
    crops = np.empty((10 * len(images), crop_h, crop_w, channels),
                     dtype=np.float32)
    for i, image in enumerate(images):
        image = np.asarray(image)
        for j, (top, left) in enumerate(corners):
            crop = image[top:top + crop_h, left:left + crop_w, :]
            crops[10 * i + j] = crop
            crops[10 * i + 5 + j] = crop[:, ::-1, :]
    return crops
