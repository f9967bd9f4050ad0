"""``rcaffe``: another name for the module ``caffe`` (``import rcaffe`` gives the very same
module object)."""

import sys

import caffe

sys.modules[__name__] = caffe
