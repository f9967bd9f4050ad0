//! The engine's solver, as Python sees it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rcaffe::backend::CpuBackend;
use rcaffe::solver::Solver;

use crate::engine_error;
use crate::net::{backend, lock, NetRef, PyNet};

/// The update rules a solver can be built with, by `type` name.
const RULES: [&str; 6] = ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"];

/// A solver of the engine (its update rules, lr policies and log), on the CPU.
#[pyclass(name = "Solver", module = "caffe._caffe", frozen)]
pub struct PySolver {
    solver: Arc<Mutex<Solver<CpuBackend>>>,
}

#[pymethods]
impl PySolver {
    /// Builds the solver of the prototxt `path`; `rule` ("SGD", "Adam", ...) replaces the file's
    /// `type` when given (`caffe.AdamSolver(path)`), as upstream's per-rule classes do.
    #[new]
    #[pyo3(signature = (path, rule=None))]
    fn new(path: &str, rule: Option<&str>) -> PyResult<Self> {
        let origin = Path::new(path);
        let mut param = rcaffe::proto::read_solver(origin).map_err(engine_error)?;
        if let Some(rule) = rule {
            if !RULES.contains(&rule) {
                return Err(PyValueError::new_err(format!(
                    "unknown solver type '{rule}'; known: {}",
                    RULES.join(", ")
                )));
            }
            param.r#type = Some(rule.to_string());
        }
        let solver = Solver::new(param, origin, backend()).map_err(engine_error)?;
        Ok(Self {
            solver: Arc::new(Mutex::new(solver)),
        })
    }

    /// The update rule's name ("SGD").
    #[getter]
    fn r#type(&self) -> String {
        lock(&self.solver).param().r#type().to_string()
    }
    /// The train net: the solver's own, so its blobs and params are what the solver trains.
    #[getter]
    fn net(&self) -> PyNet {
        PyNet {
            net: NetRef::Train(Arc::clone(&self.solver)),
        }
    }
    /// The test nets (the solver copies the train net's weights into them before each test).
    #[getter]
    fn test_nets(&self) -> Vec<PyNet> {
        let count = lock(&self.solver).test_nets().len();
        (0..count)
            .map(|i| PyNet {
                net: NetRef::Test(Arc::clone(&self.solver), i),
            })
            .collect()
    }
    /// The number of iterations run so far.
    #[getter]
    fn iter(&self) -> i32 {
        lock(&self.solver).iter()
    }
    /// Runs `iters` iterations (with the tests, display and snapshots the solver file asks).
    fn step(&self, iters: i32) -> PyResult<()> {
        lock(&self.solver).step(iters).map_err(engine_error)
    }
    /// Trains to `max_iter`, first restoring `resume_file` (a `.solverstate`) when given.
    #[pyo3(signature = (resume_file=None))]
    fn solve(&self, resume_file: Option<&str>) -> PyResult<()> {
        lock(&self.solver)
            .solve(resume_file.map(Path::new))
            .map_err(engine_error)
    }
    /// Restores the weights, history and iteration of a `.solverstate`.
    fn restore(&self, state: &str) -> PyResult<()> {
        lock(&self.solver)
            .restore(Path::new(state))
            .map_err(engine_error)
    }
    /// Writes a `.caffemodel` and a `.solverstate` of the current iteration; returns their
    /// paths.
    fn snapshot(&self) -> PyResult<(String, String)> {
        let (model, state) = lock(&self.solver).snapshot().map_err(engine_error)?;
        Ok((model.display().to_string(), state.display().to_string()))
    }
    /// Applies the update rule to the train net's gradients, as one iteration ends.
    fn apply_update(&self) -> PyResult<()> {
        lock(&self.solver).apply_update().map_err(engine_error)
    }
    /// Runs every test net (`test_iter` batches each), logging their scores.
    fn test_all(&self) -> PyResult<()> {
        lock(&self.solver).test_all().map_err(engine_error)
    }
}
