"""pycaffe's ``Net`` and solvers on the rcaffe engine: the Python side of the API (keyword
arguments, ordered dicts of blobs and params, batching) over the native ``caffe._caffe``."""

import itertools
from collections import OrderedDict
from functools import cached_property

import numpy as np

from caffe import _caffe

Blob = _caffe.Blob


class Layer:
    """The base of Python layers: a net built from Python with a layer of ``type: "Python"``
    and ``python_param { module: "m" layer: "C" }`` imports ``m``, builds ``C()``, sets its
    ``param_str`` and ``phase``, and calls ``setup(bottom, top)``, then ``reshape``,
    ``forward(bottom, top)`` and ``backward(top, propagate_down, bottom)`` with lists of
    ``caffe.Blob``. During each call ``self.blobs`` holds the layer's parameter blobs
    (``self.blobs.add_blob(*shape)`` in ``setup`` adds one). The blobs of a call are valid for
    that call only; arrays taken from them stay valid. ``net.layers`` gives the object itself,
    its ``blobs`` then the layer's parameter blobs in the net."""

    type = "Python"

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


class Net:
    """A net of the engine, built from a prototxt.

    ``Net(model, phase)``, ``Net(model, weights, phase)`` or ``Net(model, phase,
    weights=..., level=0, stages=[...])``; ``phase`` is ``caffe.TRAIN`` or ``caffe.TEST``.
    """

    def __init__(self, model, *args, phase=None, weights=None, level=0, stages=None):
        if len(args) == 2:
            if weights is not None:
                raise TypeError("Net: weights given both by position and by keyword")
            weights, args = args[0], args[1:]
        if len(args) == 1:
            if phase is not None:
                raise TypeError("Net: phase given both by position and by keyword")
            phase = args[0]
        elif args:
            raise TypeError("Net(model, [weights,] phase, weights=None, level=0, stages=None)")
        if phase is None:
            raise TypeError("Net: a phase is needed (caffe.TRAIN or caffe.TEST)")
        self._net = _caffe.Net(
            str(model),
            int(phase),
            None if weights is None else str(weights),
            int(level),
            list(stages or []),
        )

    @classmethod
    def _wrap(cls, native):
        net = cls.__new__(cls)
        net._net = native
        return net

    # What the net holds.

    @property
    def name(self):
        return self._net.name

    @property
    def phase(self):
        return self._net.phase

    @cached_property
    def blobs(self):
        """The activation blobs by name, in the net's order."""
        return OrderedDict(self._net.blob_list())

    @cached_property
    def layers(self):
        """The layers, in order; each has ``.type`` and ``.blobs`` (a Python layer is its own
        object)."""
        return self._net.layer_list()

    @cached_property
    def _layer_names(self):
        return self._net.layer_names()

    @cached_property
    def _blob_names(self):
        return list(self.blobs)

    @cached_property
    def layer_dict(self):
        return OrderedDict(zip(self._layer_names, self.layers))

    @cached_property
    def params(self):
        """The parameter blobs (weights, bias) of each layer that has any, by layer name."""
        return OrderedDict(
            (name, self._net.layer_params(i))
            for i, name in enumerate(self._layer_names)
            if self._net.layer_params(i)
        )

    @cached_property
    def blob_loss_weights(self):
        """Each activation blob's loss weight, by name."""
        return OrderedDict(zip(self._blob_names, self._net.blob_loss_weights()))

    @cached_property
    def inputs(self):
        return self._net.input_names()

    @cached_property
    def outputs(self):
        return self._net.output_names()

    @cached_property
    def top_names(self):
        return OrderedDict(
            (name, self._net.top_names_of(i)) for i, name in enumerate(self._layer_names)
        )

    @cached_property
    def bottom_names(self):
        return OrderedDict(
            (name, self._net.bottom_names_of(i)) for i, name in enumerate(self._layer_names)
        )

    def _layer_index(self, name, what):
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise ValueError(f"{what}: the net has no layer named '{name}'") from None

    # Running it.

    def _set_batches(self, values_by_name, expected, field, mismatch, not_batch):
        """Writes each named batch into its blob's ``field`` ("data" or "diff"); the names must
        be exactly ``expected`` (upstream's messages when they are not, or a batch is not the
        blob's batch size). Nothing given: nothing to write."""
        if not values_by_name:
            return
        if set(values_by_name) != set(expected):
            raise Exception(mismatch)
        for name, values in values_by_name.items():
            values = np.asarray(values)
            blob = self.blobs[name]
            if values.shape[0] != blob.shape[0]:
                raise Exception(not_batch)
            getattr(blob, field)[...] = values

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """Runs the net forward, from layer ``start`` to layer ``end`` (names; default all).

        Keyword arguments name the input blobs and give their values (a batch each). Returns
        a dict of the outputs' data (or ``end``'s tops), with the blobs named in ``blobs``.
        """
        blobs = list(blobs or [])
        start_index = 0 if start is None else self._layer_index(start, "forward start")
        if end is None:
            end_index = len(self.layers) - 1
            outputs = set(self.outputs + blobs)
        else:
            end_index = self._layer_index(end, "forward end")
            outputs = set(self.top_names[end] + blobs)
        self._set_batches(kwargs, self.inputs, "data", "Input blob arguments do not match "
                          "net inputs.", "Input is not batch sized")
        self._net.forward_range(start_index, end_index)
        return {name: self.blobs[name].data for name in outputs}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """Runs the net backward, from layer ``start`` down to layer ``end`` (names; default
        all).

        Keyword arguments name output blobs and give their diffs. Returns a dict of the inputs'
        diffs (or ``end``'s bottoms), with the blobs named in ``diffs``.
        """
        diffs = list(diffs or [])
        if start is None:
            start_index = len(self.layers) - 1
        else:
            start_index = self._layer_index(start, "backward start")
        if end is None:
            end_index = 0
            outputs = set(self.inputs + diffs)
        else:
            end_index = self._layer_index(end, "backward end")
            outputs = set(self.bottom_names[end] + diffs)
        self._set_batches(kwargs, self.outputs, "diff", "Top diff arguments do not match "
                          "net outputs.", "Diff is not batch sized")
        self._net.backward_range(start_index, end_index)
        return {name: self.blobs[name].diff for name in outputs}

    def forward_all(self, blobs=None, **kwargs):
        """``forward`` over inputs of any length, batch by batch; returns each output's values
        for every item, as one array."""
        outputs = {name: [] for name in set(self.outputs + list(blobs or []))}
        for batch in self._batch(kwargs):
            for name, values in self.forward(blobs=blobs, **batch).items():
                outputs[name].extend(values.copy())
        return self._unpad(outputs, kwargs)

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """``forward`` then ``backward`` over inputs of any length, batch by batch: keyword
        arguments naming inputs feed forward, those naming outputs give the diffs. Returns
        the outputs' values and the inputs' diffs for every item."""
        forward_in = {k: v for k, v in kwargs.items() if k in self.inputs}
        backward_in = {k: v for k, v in kwargs.items() if k in self.outputs}
        outputs = {name: [] for name in set(self.outputs + list(blobs or []))}
        gradients = {name: [] for name in set(self.inputs + list(diffs or []))}
        batches = zip(self._batches(forward_in), self._batches(backward_in))
        for forward_batch, backward_batch in batches:
            for name, values in self.forward(blobs=blobs, **forward_batch).items():
                outputs[name].extend(values.copy())
            for name, values in self.backward(diffs=diffs, **backward_batch).items():
                gradients[name].extend(values.copy())
        return self._unpad(outputs, kwargs), self._unpad(gradients, kwargs)

    def _batches(self, arrays):
        """``_batch``, or endless empty batches when there are no arrays to split."""
        return self._batch(arrays) if arrays else itertools.repeat({})

    def _batch(self, arrays):
        """Splits ``arrays`` (name -> values, all as long) into the net's batches, the last
        padded with zeros. With no arrays, one empty batch."""
        if not arrays:
            yield {}
            return
        length = len(next(iter(arrays.values())))
        batch_size = self.blobs[next(iter(self.blobs))].shape[0]
        for start in range(0, length, batch_size):
            batch = {}
            for name, values in arrays.items():
                chunk = np.asarray(values[start : start + batch_size])
                if len(chunk) < batch_size:
                    padding = np.zeros((batch_size - len(chunk),) + chunk.shape[1:], chunk.dtype)
                    chunk = np.concatenate([chunk, padding])
                batch[name] = chunk
            yield batch

    @staticmethod
    def _unpad(collected, kwargs):
        """The collected values as arrays, cut to the inputs' length (the last batch's
        padding dropped)."""
        if kwargs:
            length = len(next(iter(kwargs.values())))
            collected = {name: values[:length] for name, values in collected.items()}
        return {name: np.asarray(values) for name, values in collected.items()}

    def reshape(self):
        """Reshapes every layer's tops from its bottoms (after an input blob's reshape)."""
        self._net.reshape()

    def set_input_arrays(self, data, labels):
        """Feeds the first layer, a MemoryData layer, ``data`` (N x C x H x W) and ``labels``
        (N values); N must be a multiple of its batch size. The values are copied."""
        data = np.ascontiguousarray(data, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.float32).reshape(-1)
        self._net.set_input_arrays(data, labels)

    def clear_param_diffs(self):
        """Zeroes every parameter's diff."""
        self._net.clear_param_diffs()

    def save_hdf5(self, path):
        """Writes the weights as a ``.caffemodel.h5``."""
        self._net.save_hdf5(str(path))

    def load_hdf5(self, path):
        """Copies weights from a ``.caffemodel.h5`` into the layers of the same name."""
        self._net.load_hdf5(str(path))

    def save(self, path):
        """Writes the weights as a binary ``.caffemodel``."""
        self._net.save(str(path))

    def copy_from(self, path):
        """Copies weights from a ``.caffemodel`` (or ``.caffemodel.h5``) into the layers of
        the same name."""
        self._net.copy_from(str(path))

    def share_with(self, other):
        """Shares ``other``'s weights with the layers of the same name: from now on both nets
        read and write the same memory (a solver training ``other`` trains this net too).
        Arrays of this net's params taken before the call keep the old values."""
        self._net.share_with(other._net)

    def __repr__(self):
        return f"<caffe.Net '{self.name}': {len(self.layers)} layers>"


class Solver:
    """A solver of the engine, built from a solver prototxt. ``caffe.SGDSolver(path)`` and the
    other rule classes force their update rule; ``caffe.get_solver(path)`` uses the file's
    ``type``."""

    _rule = None

    def __init__(self, path):
        self._solver = _caffe.Solver(str(path), self._rule)

    @property
    def type(self):
        return self._solver.type

    @cached_property
    def net(self):
        """The train net: the solver's own, so it sees every step."""
        return Net._wrap(self._solver.net)

    @cached_property
    def test_nets(self):
        """The test nets. Their layers' parameter blobs are the train net's (by layer name, as
        upstream shares them), and a forward or backward run from here first brings the test
        net's own copy of the weights up to date."""
        return [Net._wrap(native) for native in self._solver.test_nets]

    @property
    def iter(self):
        """The number of iterations run so far."""
        return self._solver.iter

    def step(self, iters):
        """Runs ``iters`` iterations."""
        self._solver.step(int(iters))

    def solve(self, resume_file=None):
        """Trains to ``max_iter``, resuming from the ``.solverstate`` ``resume_file`` when
        given."""
        self._solver.solve(None if resume_file is None else str(resume_file))

    def restore(self, state):
        """Restores a ``.solverstate``: weights, history, iteration."""
        self._solver.restore(str(state))

    def snapshot(self):
        """Writes a ``.caffemodel`` and a ``.solverstate``; returns their paths."""
        return self._solver.snapshot()

    def apply_update(self):
        """Applies the update rule to the train net's current gradients."""
        self._solver.apply_update()

    def test_all(self):
        """Runs every test net, logging their scores."""
        self._solver.test_all()


class SGDSolver(Solver):
    _rule = "SGD"


class NesterovSolver(Solver):
    _rule = "Nesterov"


class AdaGradSolver(Solver):
    _rule = "AdaGrad"


class RMSPropSolver(Solver):
    _rule = "RMSProp"


class AdaDeltaSolver(Solver):
    _rule = "AdaDelta"


class AdamSolver(Solver):
    _rule = "Adam"


_SOLVERS = {cls._rule: cls for cls in Solver.__subclasses__()}


def get_solver(path):
    """The solver of the prototxt ``path``, of the update rule its ``type`` names."""
    solver = Solver(path)
    rule_class = _SOLVERS.get(solver.type)
    if rule_class is not None:
        solver.__class__ = rule_class
    return solver
