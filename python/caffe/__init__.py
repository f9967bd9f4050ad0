"""pycaffe's API on rcaffe, a Rust reimplementation of Caffe: ``caffe.Net``, the solvers,
``caffe.proto.caffe_pb2`` and the module-level settings, running on the engine's CPU backend,
with upstream's pure-Python helpers (net_spec, io, Classifier, Detector; ``caffe.draw`` and
``caffe.coord_map`` are imported by name, as upstream)."""

from caffe._caffe import TEST, TRAIN, layer_type_list, set_random_seed
from caffe.pycaffe import (
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    Blob,
    Layer,
    Net,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
    Solver,
    get_solver,
)
from caffe import io
from caffe.classifier import Classifier
from caffe.detector import Detector
from caffe.net_spec import NetSpec, layers, params, to_proto

__version__ = "0.1.0"

__all__ = [
    "TRAIN",
    "TEST",
    "Net",
    "Blob",
    "Layer",
    "Solver",
    "SGDSolver",
    "NesterovSolver",
    "AdaGradSolver",
    "RMSPropSolver",
    "AdaDeltaSolver",
    "AdamSolver",
    "get_solver",
    "layer_type_list",
    "set_random_seed",
    "set_mode_cpu",
    "set_mode_gpu",
    "set_device",
    "io",
    "Classifier",
    "Detector",
    "NetSpec",
    "layers",
    "params",
    "to_proto",
]

_mode = {"gpu": False, "device": 0}


def set_mode_cpu():
    """Runs nets on the CPU (the only mode of the Python package)."""
    _mode["gpu"] = False


def set_mode_gpu():
    """Refused: nets built from Python run on the CPU backend. (The engine's CUDA backend is
    reached from the command line: ``rcaffe train -gpu 0``.)"""
    raise RuntimeError(
        "caffe.set_mode_gpu(): the rcaffe Python package runs nets on the CPU only; "
        "call caffe.set_mode_cpu(), or train on a GPU with `rcaffe train -gpu 0`"
    )


def set_device(device_id):
    """Records the GPU to use; without GPU mode it changes nothing, as upstream's CPU mode."""
    _mode["device"] = int(device_id)
