"""Detector: classify windows of images, as R-CNN does (Girshick et al.,
"Rich feature hierarchies for accurate object detection and semantic
segmentation", 2014).

Windows are given as (ymin, xmin, ymax, xmax) pixel boxes; each is cut out
(optionally with context around it), warped to the net's input size and
classified.  Selective Search proposals need the separate
``selective_search_ijcv_with_python`` module.
"""

import os

import numpy as np

import caffe
from . import io as caffe_io
from ._net_subclass import init_test_net, new_test_net

__all__ = ['Detector']


class Detector(caffe.Net):
    """A TEST-phase ``caffe.Net`` that classifies image windows.

    mean, input_scale, raw_scale, channel_swap: as for ``Classifier``.
    context_pad: pixels of context, at the net's input size, kept around each
        window (R-CNN uses 16); the part outside the image is filled with the
        mean.
    """

    def __new__(cls, model_file, pretrained_file=None, *args, **kwargs):
        return new_test_net(cls, model_file, pretrained_file)

    def __init__(self, model_file, pretrained_file=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None,
                 context_pad=None):
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
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """Classify windows of images.

        images_windows: (image filename, list of windows) pairs.
        Gives a list of dicts with 'filename', 'window' and 'prediction'
        (the net's first output for the window), in input order.
        """
        images_windows = [(name, list(windows))
                          for name, windows in images_windows]
        crops = []
        for filename, windows in images_windows:
            image = caffe_io.load_image(filename).astype(np.float32)
            for window in windows:
                crops.append(self.crop(image, window))
        if not crops:
            return []
        in_ = self.inputs[0]
        shape = (len(crops), crops[0].shape[2]) + tuple(
            self.blobs[in_].data.shape[2:])
        caffe_in = np.zeros(shape, dtype=np.float32)
        for ix, crop in enumerate(crops):
            caffe_in[ix] = self.transformer.preprocess(in_, crop)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]

        detections = []
        ix = 0
        for filename, windows in images_windows:
            for window in windows:
                detections.append({'window': window,
                                   'prediction': predictions[ix],
                                   'filename': filename})
                ix += 1
        return detections

    def detect_selective_search(self, image_fnames):
        """Classify the Selective Search proposals of each image (needs the
        ``selective_search_ijcv_with_python`` module and MATLAB)."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise ImportError(
                'detect_selective_search needs selective_search_ijcv_with_python '
                '(https://github.com/sergeyk/selective_search_ijcv_with_python)')
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows_list = selective_search.get_windows(
            image_fnames, cmd='selective_search_rcnn')
        return self.detect_windows(zip(image_fnames, windows_list))

    def crop(self, im, window):
        """The H x W x K region of ``im`` for ``window`` (ymin, xmin, ymax,
        xmax); with context padding, the window grown so that, warped to the
        input size, it keeps ``context_pad`` pixels of surroundings."""
        ymin, xmin, ymax, xmax = (int(v) for v in window[:4])
        if not self.context_pad:
            return im[ymin:ymax, xmin:xmax]

        crop_h, crop_w = (int(d) for d in self.crop_dims[:2])
        pad = self.context_pad
        # grow the box about its centre so that the window proper fills the
        # input less the padding on each side
        scale_y = crop_h / float(crop_h - 2 * pad)
        scale_x = crop_w / float(crop_w - 2 * pad)
        half_h = (ymax - ymin) / 2.0 * scale_y
        half_w = (xmax - xmin) / 2.0 * scale_x
        centre_y = (ymin + ymax) / 2.0
        centre_x = (xmin + xmax) / 2.0
        box = np.round([centre_y - half_h, centre_x - half_w,
                        centre_y + half_h, centre_x + half_w]).astype(int)
        # pixels per input pixel, then the part of the box inside the image
        per_y = (box[2] - box[0]) / float(crop_h)
        per_x = (box[3] - box[1]) / float(crop_w)
        im_h, im_w = im.shape[:2]
        inside = np.clip(box, 0, [im_h, im_w, im_h, im_w])
        if inside[2] <= inside[0] or inside[3] <= inside[1]:
            raise ValueError('window {} lies outside the image'.format(window))
        top = min(int(round((inside[0] - box[0]) / per_y)), crop_h - 1)
        left = min(int(round((inside[1] - box[1]) / per_x)), crop_w - 1)
        height = max(1, min(int(round((inside[2] - inside[0]) / per_y)),
                            crop_h - top))
        width = max(1, min(int(round((inside[3] - inside[1]) / per_x)),
                           crop_w - left))

        crop = np.empty((crop_h, crop_w, im.shape[2]), dtype=np.float32)
        crop[...] = self.crop_mean
        region = im[inside[0]:inside[2], inside[1]:inside[3]]
        crop[top:top + height, left:left + width] = caffe_io.resize_image(
            region, (height, width))
        return crop

    def configure_crop(self, context_pad):
        """Set the crop size (the input's, as H x W x K) and the context
        padding, and the fill of padding outside the image: the mean in image
        space (before channel swap and raw scale), or zero."""
        in_ = self.inputs[0]
        input_shape = np.array(self.blobs[in_].data.shape[1:])
        transpose = self.transformer.transpose.get(in_)
        if transpose is not None:
            input_shape = input_shape[np.argsort(transpose)]
        self.crop_dims = input_shape
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(tuple(self.crop_dims), dtype=np.float32)
            return
        crop_mean = np.broadcast_to(
            mean, tuple(self.blobs[in_].data.shape[1:])).astype(np.float32)
        if transpose is not None:
            crop_mean = crop_mean.transpose(np.argsort(transpose))
        channel_swap = self.transformer.channel_swap.get(in_)
        if channel_swap is not None:
            crop_mean = crop_mean[:, :, np.argsort(channel_swap)]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
