//! `caffe._caffe`: the native half of the Python package. It exposes the engine's nets,
//! blobs and solvers on the CPU backend; `python/caffe/pycaffe.py` builds pycaffe's API
//! (keyword arguments, ordered dicts, `forward_all`) on top.
//!
//! Memory: a blob's `data` and `diff` are numpy arrays over the engine's own host memory
//! ([`CpuBuffer::share`]), so writing into them feeds the net. Each array holds a reference to
//! that memory, so it stays valid after the net is gone; a blob reshaped beyond its capacity
//! gets new memory, and arrays taken before then keep the old values, detached from the net
//! (take `blob.data` again after a reshape).
//!
//! Threads: every engine call runs holding the GIL, so no Python thread can touch an array
//! while the engine reads or writes its memory.

mod net;
mod python_layer;
mod solver;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::atomic::{AtomicU64, Ordering};

pub use net::{PyBlob, PyLayer, PyNet};
pub use solver::PySolver;

/// The seed `set_random_seed` gave, plus one, or 0 when none was given (nets then seed from
/// the clock).
static RANDOM_SEED: AtomicU64 = AtomicU64::new(0);

/// The generator for the next net built from Python: from `set_random_seed`'s seed, or the
/// clock.
pub(crate) fn net_rng() -> rcaffe::backend::Rng {
    let seed = match RANDOM_SEED.load(Ordering::Relaxed) {
        0 => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        seeded => seeded - 1,
    };
    rcaffe::backend::rng_from_seed(seed)
}

/// An engine error as a Python `RuntimeError` carrying the engine's message (and its causes
/// that the message does not already include).
pub(crate) fn engine_error(error: impl std::error::Error) -> PyErr {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message = format!("{message}: {cause_text}");
        }
        source = cause.source();
    }
    PyRuntimeError::new_err(message)
}

/// proto/caffe.proto as a serialized `FileDescriptorSet` (`caffe.proto.caffe_pb2` builds its
/// message classes from it).
#[pyfunction]
fn caffe_proto_descriptor(py: Python<'_>) -> Bound<'_, PyBytes> {
    PyBytes::new(py, rcaffe::proto::DESCRIPTOR_SET)
}

/// Seeds the generators of the nets built from now on (weight fillers, dropout, shuffling).
#[pyfunction]
fn set_random_seed(seed: u64) {
    RANDOM_SEED.store(seed.saturating_add(1), Ordering::Relaxed);
}

/// Every layer type a net built from Python can have, sorted: the engine's and "Python".
#[pyfunction]
fn layer_type_list() -> Vec<&'static str> {
    let mut types = rcaffe::layers::registered_layer_types();
    types.push("Python");
    types.sort_unstable();
    types
}

/// Sends the engine's log (glog's format; `GLOG_minloglevel`, `GLOG_logtostderr` and the other
/// glog variables apply) to stderr, as `rcaffe` does.
fn install_logger() {
    let glog = rcaffe::log::GlogEnv::from_env();
    let stderr_level = glog.stderr_level(false);
    rcaffe::log::GlogLogger::new(glog.level(), stderr_level, None).install();
}

#[pymodule]
fn _caffe(m: &Bound<'_, PyModule>) -> PyResult<()> {
    install_logger();
    m.add_function(wrap_pyfunction!(caffe_proto_descriptor, m)?)?;
    m.add_function(wrap_pyfunction!(set_random_seed, m)?)?;
    m.add_function(wrap_pyfunction!(layer_type_list, m)?)?;
    m.add("TRAIN", rcaffe::proto::caffe::Phase::Train as i32)?;
    m.add("TEST", rcaffe::proto::caffe::Phase::Test as i32)?;
    m.add_class::<PyNet>()?;
    m.add_class::<PyBlob>()?;
    m.add_class::<PyLayer>()?;
    m.add_class::<PySolver>()?;
    m.add_class::<net::HostArrayOwner>()?;
    m.add_class::<python_layer::PyBlobVec>()?;
    Ok(())
}
