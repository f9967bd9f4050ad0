"""Classifier and Detector against the same computation done in numpy.

A tiny deploy net (Input -> InnerProduct -> Softmax) keeps its filler
weights; the expected scores apply those weights by hand to crops cut and
preprocessed directly with numpy.  Needs the native module (caffe.Net).
"""

import os

import numpy as np
import pytest

import caffe
from caffe import io as caffe_io
from caffe.net_spec import NetSpec, layers as L

if not hasattr(caffe, 'Net'):
    pytest.skip('caffe.Net is not available (native module not built)',
                allow_module_level=True)

from caffe.classifier import Classifier  # noqa: E402
from caffe.detector import Detector  # noqa: E402

CROP = 6
CLASSES = 4


@pytest.fixture
def deploy(tmp_path):
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[7, 3, CROP, CROP]))
    n.ip = L.InnerProduct(n.data, num_output=CLASSES,
                          weight_filler=dict(type='gaussian', std=0.5),
                          bias_filler=dict(type='gaussian', std=0.5))
    n.prob = L.Softmax(n.ip)
    path = str(tmp_path / 'deploy.prototxt')
    with open(path, 'w') as f:
        f.write(str(n.to_proto()))
    return path


def softmax_scores(net, inputs):
    """The net's output for K x H x W inputs, computed with numpy."""
    weights = np.asarray(net.params['ip'][0].data, dtype=np.float64)
    bias = np.asarray(net.params['ip'][1].data, dtype=np.float64)
    logits = np.stack([x.ravel() for x in inputs]) @ weights.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def preprocess_by_hand(crop, mean, raw_scale, channel_swap):
    return crop.transpose(2, 0, 1)[list(channel_swap)] * raw_scale - mean[:, None, None]


MEAN = np.array([0.3, 0.2, 0.1])


def test_classifier_oversampled_scores(deploy):
    clf = Classifier(deploy, None, image_dims=(9, 10), mean=MEAN,
                     raw_scale=2.0, channel_swap=(2, 1, 0))
    assert isinstance(clf, caffe.Net)
    rng = np.random.RandomState(0)
    images = [rng.rand(12, 11, 3).astype(np.float32) for _ in range(3)]
    scores = clf.predict(images)
    assert scores.shape == (3, CLASSES)

    expected = []
    for image in images:
        resized = caffe_io.resize_image(image, (9, 10))
        crops = []
        for top, left in ((0, 0), (0, 4), (3, 0), (3, 4), (1, 2)):
            crops.append(resized[top:top + CROP, left:left + CROP])
        crops += [c[:, ::-1] for c in crops]
        inputs = [preprocess_by_hand(c, MEAN, 2.0, (2, 1, 0)) for c in crops]
        expected.append(softmax_scores(clf, inputs).mean(axis=0))
    np.testing.assert_allclose(scores, np.array(expected), rtol=1e-4, atol=1e-6)


def test_classifier_centre_crop(deploy):
    clf = Classifier(deploy, None, image_dims=(8, 8))
    image = np.random.RandomState(1).rand(8, 8, 3).astype(np.float32)
    scores = clf.predict([image], oversample=False)
    crop = image[1:7, 1:7].transpose(2, 0, 1)
    np.testing.assert_allclose(scores, softmax_scores(clf, [crop]),
                               rtol=1e-4, atol=1e-6)


def test_detector_windows(deploy, tmp_path):
    Image = pytest.importorskip('PIL.Image')
    rng = np.random.RandomState(2)
    pixels = rng.randint(0, 256, (20, 16, 3)).astype(np.uint8)
    path = str(tmp_path / 'image.png')
    Image.fromarray(pixels).save(path)
    det = Detector(deploy, None, mean=MEAN, raw_scale=2.0,
                   channel_swap=(2, 1, 0))
    windows = [(0, 0, 6, 6), (2, 3, 14, 15)]
    detections = det.detect_windows([(path, windows)])
    assert [d['window'] for d in detections] == windows
    assert all(d['filename'] == path for d in detections)

    image = pixels.astype(np.float32) / 255
    inputs = []
    for ymin, xmin, ymax, xmax in windows:
        region = caffe_io.resize_image(image[ymin:ymax, xmin:xmax], (CROP, CROP))
        inputs.append(preprocess_by_hand(region, MEAN, 2.0, (2, 1, 0)))
    expected = softmax_scores(det, inputs)
    for detection, scores in zip(detections, expected):
        np.testing.assert_allclose(np.ravel(detection['prediction']), scores,
                                   rtol=1e-4, atol=1e-6)


def test_detector_context_padding_fills_with_the_mean(deploy):
    det = Detector(deploy, None, mean=MEAN, raw_scale=2.0,
                   channel_swap=(2, 1, 0), context_pad=1)
    # the mean in image space: un-swapped channels, divided by the raw scale
    np.testing.assert_allclose(det.crop_mean[0, 0], MEAN[::-1] / 2.0)
    image = np.ones((10, 10, 3), dtype=np.float32)
    # a window at the corner: the context above and left is outside the image
    crop = det.crop(image, (0, 0, 4, 4))
    assert crop.shape == (CROP, CROP, 3)
    np.testing.assert_allclose(crop[0, 0], MEAN[::-1] / 2.0)
    np.testing.assert_allclose(crop[-1, -1], 1.0)
    # the same window inside the image takes its context from the image
    np.testing.assert_allclose(det.crop(image, (3, 3, 7, 7)), 1.0)
    assert os.path.exists(deploy)
