//! Nets, their blobs and layers, as Python sees them.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};

use numpy::ndarray::{ArrayViewD, IxDyn};
use numpy::{PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyIndexError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use rcaffe::backend::{CpuBackend, SharedHostMemory};
use rcaffe::blob::Blob;
use rcaffe::net::Net;
use rcaffe::proto::caffe::{NetState, Phase};
use rcaffe::solver::Solver;

use crate::engine_error;
use crate::python_layer::{PythonLayer, ScopedBlob};

/// The CPU backend every net built from Python runs on (one thread pool for them all).
pub(crate) fn backend() -> &'static CpuBackend {
    static BACKEND: OnceLock<CpuBackend> = OnceLock::new();
    BACKEND.get_or_init(CpuBackend::default)
}

/// Locks `mutex` for an engine call. Every call runs holding the GIL, so the lock is only
/// ever taken while another call of the same thread holds it (a Python signal handler run
/// while a solver polls for signals): that is an error, not a deadlock. A lock a panic left
/// poisoned is taken anyway (the panic reached Python as an exception; the net is as the
/// engine left it).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> PyResult<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Ok(guard),
        Err(TryLockError::Poisoned(poisoned)) => Ok(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => Err(PyRuntimeError::new_err(
            "this net or solver is busy: an engine call (forward, step, ...) is running; \
             it cannot be used again until that call returns",
        )),
    }
}

/// Where a net lives: on its own, or inside a solver (its train net or a test net), so that
/// `solver.net` is the solver's own net, not a copy.
#[derive(Clone)]
pub(crate) enum NetRef {
    Own(Arc<Mutex<Net<CpuBackend>>>),
    Train(Arc<Mutex<Solver<CpuBackend>>>),
    Test(Arc<Mutex<Solver<CpuBackend>>>, usize),
}

/// A net, locked (on its own, or through its solver).
pub(crate) enum LockedNet<'a> {
    Own(MutexGuard<'a, Net<CpuBackend>>),
    InSolver(MutexGuard<'a, Solver<CpuBackend>>, Option<usize>),
}

impl std::ops::Deref for LockedNet<'_> {
    type Target = Net<CpuBackend>;
    fn deref(&self) -> &Net<CpuBackend> {
        match self {
            LockedNet::Own(net) => net,
            LockedNet::InSolver(solver, None) => solver.net(),
            LockedNet::InSolver(solver, Some(i)) => &solver.test_nets()[*i],
        }
    }
}

impl std::ops::DerefMut for LockedNet<'_> {
    fn deref_mut(&mut self) -> &mut Net<CpuBackend> {
        match self {
            LockedNet::Own(net) => net,
            LockedNet::InSolver(solver, None) => solver.net_mut(),
            LockedNet::InSolver(solver, Some(i)) => &mut solver.test_nets_mut()[*i],
        }
    }
}

impl NetRef {
    /// Locks the net (or its solver); an error when the lock is taken already (see [`lock`]).
    fn lock(&self) -> PyResult<LockedNet<'_>> {
        Ok(match self {
            NetRef::Own(net) => LockedNet::Own(lock(net)?),
            NetRef::Train(solver) => LockedNet::InSolver(lock(solver)?, None),
            NetRef::Test(solver, i) => LockedNet::InSolver(lock(solver)?, Some(*i)),
        })
    }

    /// Runs `f` on the net, holding its lock (or its solver's) for the call.
    /// An error when the lock is taken already (see [`lock`]), or when the net shares weights
    /// and another such net is in an engine call (see [`run_sharing`]).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Net<CpuBackend>) -> R) -> PyResult<R> {
        let mut net = self.lock()?;
        let shares = net.shares_weights();
        run_sharing(shares, || f(&mut net))
    }

    /// Whether both stand for the same net.
    fn same_net(&self, other: &NetRef) -> bool {
        match (self, other) {
            (NetRef::Own(a), NetRef::Own(b)) => Arc::ptr_eq(a, b),
            (NetRef::Train(a), NetRef::Train(b)) => Arc::ptr_eq(a, b),
            (NetRef::Test(a, i), NetRef::Test(b, j)) => Arc::ptr_eq(a, b) && i == j,
            _ => false,
        }
    }
}

/// Set while an engine call runs on a net whose weights are another net's memory too
/// (`share_with`).
static SHARED_WEIGHTS_IN_USE: AtomicBool = AtomicBool::new(false);

/// Runs `f`, an engine call on a net that `shares` weights or not. A net that shares weights
/// cannot be used from inside an engine call on another one (from a Python layer): the inner
/// call could write memory the outer one is reading.
pub(crate) fn run_sharing<R>(shares: bool, f: impl FnOnce() -> R) -> PyResult<R> {
    if !shares {
        return Ok(f());
    }
    if SHARED_WEIGHTS_IN_USE.swap(true, Ordering::Acquire) {
        return Err(PyRuntimeError::new_err(
            "a net that shares weights (share_with) cannot be used while an engine call on \
             another such net is running (from a Python layer inside it)",
        ));
    }
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            SHARED_WEIGHTS_IN_USE.store(false, Ordering::Release);
        }
    }
    let _release = Release;
    Ok(f())
}

/// Which blob of a net a [`PyBlob`] stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlobId {
    /// An activation blob, by blob id.
    Activation(usize),
    /// A learnable parameter, by learnable id (shared parameters have one).
    Param(usize),
}

/// Keeps a blob's host memory alive for the numpy arrays that view it (their `base`).
#[pyclass(module = "caffe._caffe", frozen)]
pub struct HostArrayOwner {
    /// Held, never read: this reference to the memory is what keeps it alive.
    _memory: SharedHostMemory,
}

/// A blob of a net: its shape, and its data and diff as numpy arrays over the engine's memory.
#[pyclass(name = "Blob", module = "caffe._caffe", frozen)]
pub struct PyBlob {
    source: BlobSource,
}

/// Where a [`PyBlob`] finds its blob.
enum BlobSource {
    /// In a net, by id: reached through the net's lock.
    Net { net: NetRef, id: BlobId },
    /// A bottom, top or parameter handed to a Python layer for one call.
    Scoped(ScopedBlob),
}

impl PyBlob {
    pub(crate) fn scoped(blob: ScopedBlob) -> Self {
        Self {
            source: BlobSource::Scoped(blob),
        }
    }

    fn in_net(net: &NetRef, id: BlobId) -> Self {
        Self {
            source: BlobSource::Net {
                net: net.clone(),
                id,
            },
        }
    }

    fn read<R>(&self, f: impl FnOnce(&Blob<CpuBackend>) -> R) -> PyResult<R> {
        match &self.source {
            BlobSource::Net { net, id } => net.with(|net| match *id {
                BlobId::Activation(id) => f(&net.blobs()[id]),
                BlobId::Param(id) => f(&net.learnable_params()[id]),
            }),
            BlobSource::Scoped(blob) => blob.read(f),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Blob<CpuBackend>) -> R) -> PyResult<R> {
        match &self.source {
            BlobSource::Net { net, id } => net.with(|net| match *id {
                BlobId::Activation(id) => f(&mut net.blobs_mut()[id]),
                BlobId::Param(id) => f(&mut net.learnable_params_mut()[id]),
            }),
            BlobSource::Scoped(blob) => blob.write(f),
        }
    }

    /// The data (or diff) as a float32 array of the blob's shape over the engine's memory.
    fn array<'py>(&self, py: Python<'py>, diff: bool) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let (memory, shape) = self.read(|blob| {
            let buffer = if diff { blob.diff() } else { blob.data() };
            (buffer.share(), blob.shape().to_vec())
        })?;
        let ptr = memory.as_ptr();
        debug_assert!(shape.iter().product::<usize>() <= memory.len());
        let owner = Bound::new(py, HostArrayOwner { _memory: memory })?;
        // SAFETY: `ptr` is the start of the blob's buffer, which holds at least the shape's
        // count of f32 (a blob's buffers are as long as its capacity), contiguous; `owner`
        // becomes the array's base and keeps that memory alive as long as the array lives.
        let view = unsafe { ArrayViewD::from_shape_ptr(IxDyn(&shape), ptr.cast_const()) };
        // SAFETY: as above; the memory is never reallocated, only replaced (and `owner` keeps
        // the old one).
        Ok(unsafe { PyArrayDyn::borrow_from_array(&view, owner.into_any()) })
    }

    fn legacy(&self, index: isize) -> PyResult<usize> {
        self.read(|blob| blob.legacy_shape(index))?
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }
}

#[pymethods]
impl PyBlob {
    /// The values, as a float32 array sharing the engine's memory.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        self.array(py, false)
    }
    /// The gradients, as a float32 array sharing the engine's memory.
    #[getter]
    fn diff<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        self.array(py, true)
    }
    /// The shape, as a tuple.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.read(|blob| blob.shape().to_vec())?)
    }
    #[getter]
    fn count(&self) -> PyResult<usize> {
        self.read(|blob| blob.count())
    }
    #[getter]
    fn num(&self) -> PyResult<usize> {
        self.legacy(0)
    }
    #[getter]
    fn channels(&self) -> PyResult<usize> {
        self.legacy(1)
    }
    #[getter]
    fn height(&self) -> PyResult<usize> {
        self.legacy(2)
    }
    #[getter]
    fn width(&self) -> PyResult<usize> {
        self.legacy(3)
    }
    /// Gives the blob a new shape (`blob.reshape(1, 3, 28, 28)`). Beyond its capacity the blob
    /// gets new, zeroed memory: arrays taken before keep the old values.
    #[pyo3(signature = (*shape))]
    fn reshape(&self, shape: Vec<isize>) -> PyResult<()> {
        let shape = shape
            .into_iter()
            .map(|d| {
                usize::try_from(d)
                    .map_err(|_| PyValueError::new_err(format!("negative dimension {d}")))
            })
            .collect::<PyResult<Vec<usize>>>()?;
        self.with(|blob| blob.reshape(&shape))?
            .map_err(engine_error)
    }
    fn __repr__(&self) -> PyResult<String> {
        Ok(format!(
            "<caffe.Blob {}>",
            self.read(|blob| blob.shape_string())?
        ))
    }
}

/// A layer of a net: its type and its parameter blobs.
#[pyclass(name = "Layer", module = "caffe._caffe", frozen)]
pub struct PyLayer {
    net: NetRef,
    index: usize,
}

#[pymethods]
impl PyLayer {
    /// The layer's type ("Convolution").
    #[getter]
    fn r#type(&self) -> PyResult<String> {
        self.net.with(|net| net.layer_type(self.index).to_string())
    }
    /// The layer's parameter blobs (weights, bias), shared with the net.
    #[getter]
    fn blobs(&self) -> PyResult<Vec<PyBlob>> {
        param_blobs(&self.net, self.index)
    }
    fn __repr__(&self) -> PyResult<String> {
        self.net.with(|net| {
            format!(
                "<caffe.Layer '{}' of type {}>",
                net.layer_name(self.index),
                net.layer_type(self.index)
            )
        })
    }
}

/// The parameter blobs of layer `layer`. A solver's test net shares the train net's weights
/// (by layer name, as upstream's `ShareTrainedLayersWith`): its layers' blobs are the train
/// net's where the train net has a layer of that name.
fn param_blobs(net: &NetRef, layer: usize) -> PyResult<Vec<PyBlob>> {
    let (name, ids) = net.with(|n| {
        let ids = n.layer_learnable_ids(layer).to_vec();
        (n.layer_name(layer).to_string(), ids)
    })?;
    if let NetRef::Test(solver, _) = net {
        let train = NetRef::Train(Arc::clone(solver));
        let train_ids = train.with(|n| {
            n.layer_index(&name)
                .map(|i| n.layer_learnable_ids(i).to_vec())
        })?;
        if let Some(train_ids) = train_ids.filter(|t| t.len() == ids.len()) {
            return Ok(train_ids
                .into_iter()
                .map(|id| PyBlob::in_net(&train, BlobId::Param(id)))
                .collect());
        }
    }
    Ok(ids
        .into_iter()
        .map(|id| PyBlob::in_net(net, BlobId::Param(id)))
        .collect())
}

/// A net of the engine, on the CPU (pycaffe's `Net`, whose Python sugar is in pycaffe.py).
#[pyclass(name = "Net", module = "caffe._caffe", frozen)]
pub struct PyNet {
    pub(crate) net: NetRef,
}

impl PyNet {
    fn checked_layer(&self, index: usize) -> PyResult<usize> {
        let layers = self.net.with(|net| net.num_layers())?;
        if index < layers {
            Ok(index)
        } else {
            Err(PyIndexError::new_err(format!(
                "layer index {index} out of range: the net has {layers} layers"
            )))
        }
    }

    fn blob_names_of(&self, ids: impl Fn(&Net<CpuBackend>) -> &[usize]) -> PyResult<Vec<String>> {
        self.net.with(|net| {
            ids(net)
                .iter()
                .map(|&id| net.blob_name(id).to_string())
                .collect()
        })
    }

    /// For a solver's test net: copies the train net's current weights in, so that a pass
    /// run from Python sees them as upstream's shared weights would.
    fn sync_test_net(&self) -> PyResult<()> {
        if let NetRef::Test(solver, id) = &self.net {
            lock(solver)?.sync_test_net(*id).map_err(engine_error)?;
        }
        Ok(())
    }

    /// Runs a call of the engine that can fail, its error as a Python exception.
    fn engine<R, E: std::error::Error>(
        &self,
        f: impl FnOnce(&mut Net<CpuBackend>) -> Result<R, E>,
    ) -> PyResult<R> {
        self.net.with(f)?.map_err(engine_error)
    }
}

#[pymethods]
impl PyNet {
    /// Builds the net of the prototxt `model` for `phase` (`caffe.TRAIN`, `caffe.TEST`),
    /// `level` and `stages`, and copies the weights of `weights` (a `.caffemodel` or
    /// `.caffemodel.h5`) when given.
    #[new]
    #[pyo3(signature = (model, phase, weights=None, level=0, stages=Vec::new()))]
    fn new(
        model: &str,
        phase: i32,
        weights: Option<&str>,
        level: i32,
        stages: Vec<String>,
    ) -> PyResult<Self> {
        let phase = Phase::try_from(phase).map_err(|_| {
            PyValueError::new_err(format!(
                "phase must be caffe.TRAIN (0) or caffe.TEST (1), not {phase}"
            ))
        })?;
        let path = Path::new(model);
        let mut param = rcaffe::proto::read_net(path).map_err(engine_error)?;
        let state = param.state.get_or_insert_with(NetState::default);
        state.phase = Some(phase as i32);
        state.level = Some(level);
        state.stage.extend(stages);
        let mut net = Net::new_with_factory(
            &param,
            backend(),
            crate::net_rng(),
            &crate::python_layer::factory,
        )
        .map_err(|e| engine_error(e.placed_in(&rcaffe::proto::NetOrigin::file(path))))?;
        if let Some(weights) = weights {
            net.copy_trained_layers_from_file(Path::new(weights))
                .map_err(engine_error)?;
        }
        Ok(Self {
            net: NetRef::Own(Arc::new(Mutex::new(net))),
        })
    }

    /// The net's name.
    #[getter]
    fn name(&self) -> PyResult<String> {
        self.net.with(|net| net.name().to_string())
    }
    /// The phase it was built for (0: TRAIN, 1: TEST).
    #[getter]
    fn phase(&self) -> PyResult<i32> {
        self.net.with(|net| net.phase() as i32)
    }
    /// Every activation blob, as (name, blob), in blob id order.
    fn blob_list(&self) -> PyResult<Vec<(String, PyBlob)>> {
        let names: Vec<String> = self
            .net
            .with(|net| net.blob_names().map(String::from).collect())?;
        Ok(names
            .into_iter()
            .enumerate()
            .map(|(id, name)| (name, PyBlob::in_net(&self.net, BlobId::Activation(id))))
            .collect())
    }
    /// Every layer's name, in order.
    fn layer_names(&self) -> PyResult<Vec<String>> {
        self.net
            .with(|net| net.layer_names().map(String::from).collect())
    }
    /// Every layer, in order: a `caffe.Layer` for the engine's layers and, for a Python layer,
    /// its own object (as upstream), its `blobs` the layer's parameter blobs.
    fn layer_list(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let layers = self.net.with(|net| net.num_layers())?;
        let mut list = Vec::with_capacity(layers);
        for index in 0..layers {
            let python_object = self.net.with(|net| {
                net.layer_as::<PythonLayer>(index)
                    .map(|layer| layer.object().clone_ref(py))
            })?;
            list.push(match python_object {
                Some(object) => {
                    object.setattr(py, "blobs", param_blobs(&self.net, index)?)?;
                    object
                }
                None => Bound::new(
                    py,
                    PyLayer {
                        net: self.net.clone(),
                        index,
                    },
                )?
                .into_any()
                .unbind(),
            });
        }
        Ok(list)
    }
    /// The parameter blobs of layer `index`.
    fn layer_params(&self, index: usize) -> PyResult<Vec<PyBlob>> {
        param_blobs(&self.net, self.checked_layer(index)?)
    }
    /// The names of the input blobs.
    fn input_names(&self) -> PyResult<Vec<String>> {
        self.blob_names_of(|net| net.input_blob_ids())
    }
    /// The names of the output blobs.
    fn output_names(&self) -> PyResult<Vec<String>> {
        self.blob_names_of(|net| net.output_blob_ids())
    }
    /// The names of layer `index`'s bottoms.
    fn bottom_names_of(&self, index: usize) -> PyResult<Vec<String>> {
        let index = self.checked_layer(index)?;
        self.blob_names_of(|net| net.bottom_ids(index))
    }
    /// The names of layer `index`'s tops.
    fn top_names_of(&self, index: usize) -> PyResult<Vec<String>> {
        let index = self.checked_layer(index)?;
        self.blob_names_of(|net| net.top_ids(index))
    }
    /// Every activation blob's loss weight, in blob id order.
    fn blob_loss_weights(&self) -> PyResult<Vec<f32>> {
        self.net.with(|net| {
            (0..net.blobs().len())
                .map(|id| net.blob_loss_weight(id))
                .collect()
        })
    }
    /// Runs layers `start` to `end` (inclusive) forward; returns their loss.
    fn forward_range(&self, start: usize, end: usize) -> PyResult<f32> {
        self.sync_test_net()?;
        self.engine(|net| net.forward_from_to(start, end))
    }
    /// Runs layers `start` down to `end` (inclusive, `start >= end`) backward.
    fn backward_range(&self, start: usize, end: usize) -> PyResult<()> {
        self.sync_test_net()?;
        self.engine(|net| net.backward_from_to(start, end))
    }
    /// Reshapes every layer's tops from its bottoms (after an input changed shape).
    fn reshape(&self) -> PyResult<()> {
        self.engine(|net| net.reshape())
    }
    /// Zeroes every parameter's diff.
    fn clear_param_diffs(&self) -> PyResult<()> {
        self.engine(|net| net.clear_param_diffs())
    }
    /// Feeds the first layer, a MemoryData layer, `data` (N x C x H x W float32) and `labels`
    /// (N float32); the values are copied.
    fn set_input_arrays(
        &self,
        data: PyReadonlyArrayDyn<'_, f32>,
        labels: PyReadonlyArrayDyn<'_, f32>,
    ) -> PyResult<()> {
        if data.ndim() != 4 {
            return Err(PyValueError::new_err(format!(
                "set_input_arrays: data must be 4-D (N x C x H x W), not {}-D",
                data.ndim()
            )));
        }
        let shape = data.shape().to_vec();
        if labels.len() != shape[0] {
            return Err(PyValueError::new_err(format!(
                "set_input_arrays: {} labels for {} data items",
                labels.len(),
                shape[0]
            )));
        }
        let values: Vec<f32> = data.as_array().iter().copied().collect();
        let labels: Vec<f32> = labels.as_array().iter().copied().collect();
        self.engine(|net| net.set_input_arrays(values, &shape, labels))
    }
    /// Writes the weights as a binary `.caffemodel` (no diffs).
    fn save(&self, path: &str) -> PyResult<()> {
        let param = self.engine(|net| net.to_proto(false))?;
        rcaffe::proto::write_binary(Path::new(path), &param).map_err(engine_error)
    }
    /// Copies the weights of a `.caffemodel` (or `.caffemodel.h5`) into the layers of the
    /// same name.
    fn copy_from(&self, path: &str) -> PyResult<()> {
        self.engine(|net| net.copy_trained_layers_from_file(Path::new(path)))
    }
    /// Writes the weights as a `.caffemodel.h5` (HDF5; no diffs).
    fn save_hdf5(&self, path: &str) -> PyResult<()> {
        self.engine(|net| net.write_hdf5(Path::new(path), false))
    }
    /// Copies the weights of a `.caffemodel.h5` into the layers of the same name.
    fn load_hdf5(&self, path: &str) -> PyResult<()> {
        self.engine(|net| net.copy_trained_layers_from_hdf5(Path::new(path)))
    }
    /// Shares the weights of `other`'s layers with the layers of the same name (upstream's
    /// `ShareTrainedLayersWith`): from now on both nets read and write the same memory.
    fn share_with(&self, other: &PyNet) -> PyResult<()> {
        if self.net.same_net(&other.net) {
            return Ok(());
        }
        if matches!(self.net, NetRef::Test(..)) || matches!(other.net, NetRef::Test(..)) {
            return Err(PyValueError::new_err(
                "share_with: a solver's test net takes the train net's weights before each \
                 test, so it cannot share another net's; share with solver.net instead",
            ));
        }
        let (mut target, mut source) = (self.net.lock()?, other.net.lock()?);
        // SAFETY: every use of either net goes through its lock and runs holding the GIL, one
        // at a time; both are now marked as sharing, and `run_sharing` refuses a call on one
        // from inside a call on the other.
        unsafe { target.share_trained_layers_with(&mut source) }.map_err(engine_error)
    }
}
