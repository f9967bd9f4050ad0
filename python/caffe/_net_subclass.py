"""Construction of the ``caffe.Net`` subclasses (Classifier, Detector).

``caffe.Net`` may do its work in ``__new__`` (a native class) or in
``__init__`` (a Python class); these helpers build the net either way, for
the TEST phase, with optional weights.
"""

import caffe


def new_test_net(cls, model_file, pretrained_file):
    """``cls.__new__`` for a subclass of ``caffe.Net``."""
    if caffe.Net.__new__ is object.__new__:
        return object.__new__(cls)
    return caffe.Net.__new__(cls, model_file, caffe.TEST,
                             weights=pretrained_file)


def init_test_net(net, model_file, pretrained_file):
    """The ``caffe.Net`` part of a subclass's ``__init__``."""
    if caffe.Net.__init__ is not object.__init__:
        caffe.Net.__init__(net, model_file, caffe.TEST,
                           weights=pretrained_file)
