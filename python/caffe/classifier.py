"""Classifier: a net for image classification, with the preprocessing and
the ten-crop oversampling of upstream's pycaffe."""

import numpy as np

import caffe
from . import io as caffe_io
from ._net_subclass import init_test_net, new_test_net

__all__ = ['Classifier']


class Classifier(caffe.Net):
    """A TEST-phase ``caffe.Net`` that classifies H x W x K images.

    model_file, pretrained_file: the deploy prototxt and its weights
        (``pretrained_file`` may be None to keep the fillers' values).
    image_dims: (height, width) the images are resized to before cropping;
        the net input's own height and width when not given.
    mean, input_scale, raw_scale, channel_swap: set on ``self.transformer``
        for the net's first input (see ``caffe.io.Transformer``).
    """

    def __new__(cls, model_file, pretrained_file=None, *args, **kwargs):
        return new_test_net(cls, model_file, pretrained_file)

    def __init__(self, model_file, pretrained_file=None, image_dims=None,
                 mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None):
        init_test_net(self, model_file, pretrained_file)
        in_ = self.inputs[0]
        self.transformer = caffe_io.Transformer(
            {in_: self.blobs[in_].data.shape})
        self.transformer.set_transpose(in_, (2, 0, 1))
        if mean is not None:
            self.transformer.set_mean(in_, mean)
        if input_scale is not None:
            self.transformer.set_input_scale(in_, input_scale)
        if raw_scale is not None:
            self.transformer.set_raw_scale(in_, raw_scale)
        if channel_swap is not None:
            self.transformer.set_channel_swap(in_, channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        if image_dims is None or len(image_dims) == 0:
            image_dims = self.crop_dims
        self.image_dims = np.array(image_dims)

    def predict(self, inputs, oversample=True):
        """Class scores for each image of ``inputs`` (H x W x K arrays, e.g.
        from ``caffe.io.load_image``), an N x classes array.

        Each image is resized to ``image_dims``; with ``oversample`` the
        scores are the mean over its ten crops (``caffe.io.oversample``),
        otherwise the centre crop is used.
        """
        if len(inputs) == 0:
            raise ValueError('predict needs at least one image')
        height, width = (int(d) for d in self.image_dims)
        channels = np.asarray(inputs[0]).shape[2]
        images = np.zeros((len(inputs), height, width, channels),
                          dtype=np.float32)
        for ix, image in enumerate(inputs):
            images[ix] = caffe_io.resize_image(image, (height, width))

        crop_h, crop_w = (int(d) for d in self.crop_dims)
        if oversample:
            crops = caffe_io.oversample(images, (crop_h, crop_w))
        else:
            top, left = (height - crop_h) // 2, (width - crop_w) // 2
            crops = images[:, top:top + crop_h, left:left + crop_w, :]

        in_ = self.inputs[0]
        caffe_in = np.zeros((len(crops), channels, crop_h, crop_w),
                            dtype=np.float32)
        for ix, crop in enumerate(crops):
            caffe_in[ix] = self.transformer.preprocess(in_, crop)
        out = self.forward_all(**{in_: caffe_in})
        predictions = np.asarray(out[self.outputs[0]])
        if oversample:
            predictions = predictions.reshape(len(inputs), 10, -1).mean(axis=1)
        return predictions
