"""Shared pytest setup for the package's tests.

The tests run against the installed ``caffe`` package.  Fixtures here give
the message classes (``caffe_pb2``) and the path of the model zoo that the
Rust tests use too (``../shared/caffe-zoo`` next to the repository).
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
import types

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(TESTS_DIR)
REPO_ROOT = os.path.dirname(PYTHON_DIR)
ZOO = os.path.join(REPO_ROOT, '..', 'shared', 'caffe-zoo')


def _dev_fallback_caffe_pb2():
    """DEVELOPMENT FALLBACK, not used once the package is built.

    Lets the pure-Python helpers (net_spec, io, coord_map, draw) be tested
    from the source tree before the native module exists: when
    ``caffe.proto.caffe_pb2`` cannot be imported, compile proto/caffe.proto
    with grpcio-tools' protoc into a temporary folder and register the result
    as ``caffe.proto.caffe_pb2``.  Does nothing when the real module imports,
    and never stands in for it once the native module ``caffe._caffe``
    exists (then its import error is the one to see).
    """
    try:
        import caffe.proto.caffe_pb2  # noqa: F401
        return
    except ImportError:
        pass
    if importlib.util.find_spec('grpc_tools') is None:
        return  # the tests will report the missing caffe_pb2 themselves
    if PYTHON_DIR not in sys.path:
        sys.path.insert(0, PYTHON_DIR)
    try:
        if importlib.util.find_spec('caffe._caffe') is not None:
            return
    except ImportError:
        return
    out_dir = tempfile.mkdtemp(prefix='caffe-pb2-fallback-')
    subprocess.check_call([
        sys.executable, '-m', 'grpc_tools.protoc',
        '-I', os.path.join(REPO_ROOT, 'proto'), '--python_out=' + out_dir,
        os.path.join(REPO_ROOT, 'proto', 'caffe.proto')])
    import caffe
    if not hasattr(caffe, 'proto'):  # no python/caffe/proto/ folder yet
        caffe.proto = types.ModuleType('caffe.proto')
        caffe.proto.__path__ = []
        sys.modules['caffe.proto'] = caffe.proto
    spec = importlib.util.spec_from_file_location(
        'caffe.proto.caffe_pb2', os.path.join(out_dir, 'caffe_pb2.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules['caffe.proto.caffe_pb2'] = module
    spec.loader.exec_module(module)
    caffe.proto.caffe_pb2 = module


_dev_fallback_caffe_pb2()


@pytest.fixture(scope='session')
def caffe_pb2():
    from caffe.proto import caffe_pb2
    return caffe_pb2


@pytest.fixture(scope='session')
def zoo():
    if not os.path.isdir(ZOO):
        pytest.skip('model zoo not found at ' + os.path.normpath(ZOO))
    return os.path.normpath(ZOO)
