//! Python layers: `type: "Python"` with `python_param { module layer param_str }`. The net
//! imports the module, builds the class and drives its `setup`/`reshape`/`forward`/`backward`
//! with the bottoms and tops as `caffe.Blob` objects, as upstream's `PythonLayer`.
//!
//! The blobs handed to a call are valid for that call only: they point into the net while the
//! engine holds it for the layer, and say so with an error when used after the call returned
//! (arrays taken from them stay valid, as every blob array does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::exceptions::{PyIndexError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use rcaffe::backend::CpuBackend;
use rcaffe::blob::Blob;
use rcaffe::layers::{Blobs, Context, Layer, LayerError, Params};
use rcaffe::proto::caffe::LayerParameter;

use crate::engine_error;
use crate::net::{backend, PyBlob};

/// One call of a Python layer: open while the call runs.
struct Scope {
    open: AtomicBool,
}

impl Scope {
    fn check(&self) -> PyResult<()> {
        if self.open.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(PyRuntimeError::new_err(
                "this blob was handed to a Python layer for one call, which has returned; \
                 use the blobs of the current call",
            ))
        }
    }
}

/// Closes its scope when dropped, so that no path out of a call leaves it open.
struct OpenScope(Arc<Scope>);

impl OpenScope {
    fn new() -> Self {
        OpenScope(Arc::new(Scope {
            open: AtomicBool::new(true),
        }))
    }
}

impl Drop for OpenScope {
    fn drop(&mut self) {
        self.0.open.store(false, Ordering::Release);
    }
}

/// A blob reached through a pointer the engine handed to a Python layer's call.
enum BlobPtr {
    /// Read only (a bottom in forward, a top in backward): no reshape.
    Shared(*const Blob<CpuBackend>),
    Exclusive(*mut Blob<CpuBackend>),
    /// Blob `k` of the parameter list `setup` may still grow (so no pointer to the element).
    InVec(*mut Vec<Blob<CpuBackend>>, usize),
}

/// A blob of one Python layer call (see [`PyBlob`]).
pub struct ScopedBlob {
    scope: Arc<Scope>,
    ptr: BlobPtr,
}

// SAFETY: the pointers are dereferenced only while the scope is open, that is during the
// layer call that made them, on the thread that runs it and holds the GIL (which every use
// from Python needs); the engine does not touch those blobs until the call returns.
unsafe impl Send for ScopedBlob {}
// SAFETY: as for `Send`.
unsafe impl Sync for ScopedBlob {}

impl ScopedBlob {
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Blob<CpuBackend>) -> R) -> PyResult<R> {
        self.scope.check()?;
        // SAFETY: the scope is open, so the pointer is from the running call's borrow (see
        // the `Send` impl).
        Ok(match self.ptr {
            BlobPtr::Shared(ptr) => f(unsafe { &*ptr }),
            BlobPtr::Exclusive(ptr) => f(unsafe { &*ptr }),
            BlobPtr::InVec(vec, k) => f(unsafe { &(&*vec)[k] }),
        })
    }

    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut Blob<CpuBackend>) -> R) -> PyResult<R> {
        self.scope.check()?;
        match self.ptr {
            // SAFETY: as `read`; this pointer came from a `&mut` of the call.
            BlobPtr::Exclusive(ptr) => Ok(f(unsafe { &mut *ptr })),
            // SAFETY: as `read`; blobs are never removed from the list, so `k` stays in it.
            BlobPtr::InVec(vec, k) => Ok(f(unsafe { &mut (&mut *vec)[k] })),
            BlobPtr::Shared(_) => Err(PyValueError::new_err(
                "this blob is an input of the call (a bottom in forward, a top in backward): \
                 it cannot be reshaped here",
            )),
        }
    }
}

/// The blobs of a Python layer's own parameters (`self.blobs`), for one call; in `setup` the
/// layer may add to them (`self.blobs.add_blob(2, 3)`).
#[pyclass(name = "BlobVec", module = "caffe._caffe", frozen)]
pub struct PyBlobVec {
    scope: Arc<Scope>,
    blobs: BlobVecPtr,
}

enum BlobVecPtr {
    Fixed(Vec<BlobPtrCopy>),
    Growable(*mut Vec<Blob<CpuBackend>>),
}

/// A pointer of a fixed list, copied into each blob taken from it.
#[derive(Clone, Copy)]
enum BlobPtrCopy {
    Shared(*const Blob<CpuBackend>),
    Exclusive(*mut Blob<CpuBackend>),
}

impl From<BlobPtrCopy> for BlobPtr {
    fn from(ptr: BlobPtrCopy) -> Self {
        match ptr {
            BlobPtrCopy::Shared(p) => BlobPtr::Shared(p),
            BlobPtrCopy::Exclusive(p) => BlobPtr::Exclusive(p),
        }
    }
}

// SAFETY: as for `ScopedBlob`.
unsafe impl Send for PyBlobVec {}
// SAFETY: as for `ScopedBlob`.
unsafe impl Sync for PyBlobVec {}

impl PyBlobVec {
    fn ptr_at(&self, index: isize) -> PyResult<BlobPtr> {
        self.scope.check()?;
        let len = self.len_unchecked();
        let k = if index < 0 {
            index + len as isize
        } else {
            index
        };
        if k < 0 || k as usize >= len {
            return Err(PyIndexError::new_err(format!(
                "blob index {index} out of range for {len} blobs"
            )));
        }
        let k = k as usize;
        Ok(match &self.blobs {
            BlobVecPtr::Fixed(ptrs) => ptrs[k].into(),
            BlobVecPtr::Growable(vec) => BlobPtr::InVec(*vec, k),
        })
    }

    fn len_unchecked(&self) -> usize {
        match &self.blobs {
            BlobVecPtr::Fixed(ptrs) => ptrs.len(),
            // SAFETY: only called with the scope open (see `ptr_at`, `__len__`).
            BlobVecPtr::Growable(vec) => unsafe { (&**vec).len() },
        }
    }
}

#[pymethods]
impl PyBlobVec {
    fn __len__(&self) -> PyResult<usize> {
        self.scope.check()?;
        Ok(self.len_unchecked())
    }
    fn __getitem__(&self, index: isize) -> PyResult<PyBlob> {
        Ok(PyBlob::scoped(ScopedBlob {
            scope: Arc::clone(&self.scope),
            ptr: self.ptr_at(index)?,
        }))
    }
    /// Adds a parameter blob of this shape, zeroed (only in `setup`).
    #[pyo3(signature = (*shape))]
    fn add_blob(&self, shape: Vec<usize>) -> PyResult<()> {
        self.scope.check()?;
        match self.blobs {
            BlobVecPtr::Growable(vec) => {
                let blob = Blob::new(backend(), &shape).map_err(engine_error)?;
                // SAFETY: the scope is open: the vector is the one `layer_setup` lends.
                unsafe { (*vec).push(blob) };
                Ok(())
            }
            BlobVecPtr::Fixed(_) => Err(PyRuntimeError::new_err(
                "a Python layer adds its parameter blobs in setup only",
            )),
        }
    }
}

/// The Python object of a `type: "Python"` layer.
pub struct PythonLayer {
    object: Py<PyAny>,
}

impl PythonLayer {
    /// The layer's Python object (what `net.layers` gives for this layer, as upstream).
    pub(crate) fn object(&self) -> &Py<PyAny> {
        &self.object
    }

    /// Imports `python_param.module`, builds its class `python_param.layer` and gives the
    /// object `param_str` and `phase`, as upstream does before `setup`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let python = param.python_param.clone().unwrap_or_default();
        Python::attach(|py| {
            let object = (|| -> PyResult<Py<PyAny>> {
                let module = py.import(python.module())?;
                let class = module.getattr(python.layer())?;
                let object = class.call0()?;
                object.setattr("param_str", python.param_str())?;
                object.setattr("phase", param.phase() as i32)?;
                Ok(object.unbind())
            })()
            .map_err(|e| python_error(py, e, "building the layer"))?;
            Ok(PythonLayer { object })
        })
    }

    /// Calls `method` with `args` (lists of blobs) after giving the object `self.blobs`.
    fn call(
        &self,
        method: &str,
        params: BlobVecPtr,
        args: impl for<'py> FnOnce(Python<'py>, &Arc<Scope>) -> PyResult<Vec<Bound<'py, PyAny>>>,
    ) -> Result<(), LayerError> {
        Python::attach(|py| {
            let scope = OpenScope::new();
            let result = (|| -> PyResult<()> {
                let blobs = PyBlobVec {
                    scope: Arc::clone(&scope.0),
                    blobs: params,
                };
                let object = self.object.bind(py);
                // The net's parameter blobs that `net.layers` gave the object, if it did: back
                // after the call, so that they outlive it as upstream's do.
                let net_blobs = object
                    .getattr_opt("blobs")?
                    .filter(|blobs| !blobs.is_instance_of::<PyBlobVec>());
                object.setattr("blobs", blobs)?;
                let args = args(py, &scope.0)?;
                let called = object.call_method1(method, pyo3::types::PyTuple::new(py, args)?);
                if let Some(net_blobs) = net_blobs {
                    object.setattr("blobs", net_blobs)?;
                }
                called.map(drop)
            })();
            drop(scope);
            result.map_err(|e| python_error(py, e, method))
        })
    }
}

impl PythonLayer {
    /// Calls `method(bottom, top)` (setup, reshape, forward) with `params` as `self.blobs`.
    fn call_on_bottom_top(
        &self,
        method: &str,
        blobs: &mut Blobs<'_, CpuBackend>,
        params: BlobVecPtr,
    ) -> Result<(), LayerError> {
        let (bottom, top) = blobs.forward_all()?;
        let (bottom, top) = (shared(bottom), exclusive(top));
        self.call(method, params, |py, scope| {
            Ok(vec![
                blob_list(py, scope, bottom)?,
                blob_list(py, scope, top)?,
            ])
        })
    }
}

/// A Python exception as a layer error: its traceback printed (as upstream's `PyErr_Print`),
/// its message kept.
fn python_error(py: Python<'_>, error: PyErr, during: &str) -> LayerError {
    let message = error.to_string();
    error.print(py);
    LayerError::invalid(format!("Python layer, in {during}: {message}"))
}

fn blob_list<'py>(
    py: Python<'py>,
    scope: &Arc<Scope>,
    ptrs: impl IntoIterator<Item = BlobPtr>,
) -> PyResult<Bound<'py, PyAny>> {
    let blobs: Vec<PyBlob> = ptrs
        .into_iter()
        .map(|ptr| {
            PyBlob::scoped(ScopedBlob {
                scope: Arc::clone(scope),
                ptr,
            })
        })
        .collect();
    Ok(PyList::new(py, blobs)?.into_any())
}

fn shared(blobs: Vec<&Blob<CpuBackend>>) -> Vec<BlobPtr> {
    blobs
        .into_iter()
        .map(|b| BlobPtr::Shared(b as *const _))
        .collect()
}

fn exclusive(blobs: Vec<&mut Blob<CpuBackend>>) -> Vec<BlobPtr> {
    blobs
        .into_iter()
        .map(|b| BlobPtr::Exclusive(b as *mut _))
        .collect()
}

fn fixed_params(params: &mut Params<'_, CpuBackend>) -> BlobVecPtr {
    BlobVecPtr::Fixed(
        params
            .all_mut()
            .into_iter()
            .map(|b| BlobPtrCopy::Exclusive(b as *mut _))
            .collect(),
    )
}

impl Layer<CpuBackend> for PythonLayer {
    fn layer_type(&self) -> &'static str {
        "Python"
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn layer_setup(
        &mut self,
        _ctx: &mut Context<'_, CpuBackend>,
        blobs: &mut Blobs<'_, CpuBackend>,
        params: &mut Vec<Blob<CpuBackend>>,
    ) -> Result<(), LayerError> {
        self.call_on_bottom_top("setup", blobs, BlobVecPtr::Growable(params))
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, CpuBackend>,
        blobs: &mut Blobs<'_, CpuBackend>,
        params: &Params<'_, CpuBackend>,
    ) -> Result<(), LayerError> {
        let params = BlobVecPtr::Fixed(
            (0..params.len())
                .map(|k| BlobPtrCopy::Shared(params.get(k) as *const _))
                .collect(),
        );
        self.call_on_bottom_top("reshape", blobs, params)
    }

    fn forward(
        &mut self,
        _ctx: &mut Context<'_, CpuBackend>,
        blobs: &mut Blobs<'_, CpuBackend>,
        params: &mut Params<'_, CpuBackend>,
    ) -> Result<(), LayerError> {
        self.call_on_bottom_top("forward", blobs, fixed_params(params))
    }

    fn backward(
        &mut self,
        _ctx: &mut Context<'_, CpuBackend>,
        blobs: &mut Blobs<'_, CpuBackend>,
        propagate_down: &[bool],
        params: &mut Params<'_, CpuBackend>,
    ) -> Result<(), LayerError> {
        let (top, bottom) = blobs.backward_all()?;
        let (top, bottom) = (shared(top), exclusive(bottom));
        let propagate_down = propagate_down.to_vec();
        self.call("backward", fixed_params(params), |py, scope| {
            Ok(vec![
                blob_list(py, scope, top)?,
                PyList::new(py, propagate_down)?.into_any(),
                blob_list(py, scope, bottom)?,
            ])
        })
    }
}

/// The layer factory the nets built from Python use: `type: "Python"` layers.
pub fn factory(param: &LayerParameter) -> Option<Result<Box<dyn Layer<CpuBackend>>, LayerError>> {
    (param.r#type() == "Python")
        .then(|| PythonLayer::new(param).map(|layer| Box::new(layer) as Box<dyn Layer<CpuBackend>>))
}
