//! The engine's solver, as Python sees it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rcaffe::backend::CpuBackend;
use rcaffe::solver::{Solver, SolverAction, SOLVER_TYPES};

use crate::engine_error;
use crate::net::{backend, lock, run_sharing, NetRef, PyNet};

/// A solver of the engine (its update rules, lr policies and log), on the CPU.
///
/// Between iterations it runs Python's signal handlers: Ctrl-C (a `KeyboardInterrupt`) stops
/// training after the iteration under way, and `step`/`solve` raise it once the solver has
/// stopped (with `solve`, after the snapshot at the end of training if the file asks for one).
#[pyclass(name = "Solver", module = "caffe._caffe", frozen)]
pub struct PySolver {
    solver: Arc<Mutex<Solver<CpuBackend>>>,
    /// The exception a signal handler raised while the solver ran, for the caller.
    interrupted: Arc<Mutex<Option<PyErr>>>,
}

impl PySolver {
    /// Runs a training call, then raises what a signal handler raised meanwhile, if anything.
    fn train<R>(
        &self,
        f: impl FnOnce(&mut Solver<CpuBackend>) -> rcaffe::solver::Result<R>,
    ) -> PyResult<R> {
        let mut solver = lock(&self.solver)?;
        let shares = solver.net().shares_weights();
        let result = run_sharing(shares, || f(&mut solver))?;
        let interrupted = self
            .interrupted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match interrupted {
            Some(error) => Err(error),
            None => result.map_err(engine_error),
        }
    }
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
            if !SOLVER_TYPES.contains(&rule) {
                return Err(PyValueError::new_err(format!(
                    "unknown solver type '{rule}'; known: {}",
                    SOLVER_TYPES.join(", ")
                )));
            }
            param.r#type = Some(rule.to_string());
        }
        let mut solver =
            Solver::new_with_factory(param, origin, backend(), &crate::python_layer::factory)
                .map_err(engine_error)?;
        let interrupted = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&interrupted);
        solver.set_action_source(move || {
            Python::attach(|py| match py.check_signals() {
                Ok(()) => SolverAction::None,
                Err(error) => {
                    *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error);
                    SolverAction::Stop
                }
            })
        });
        Ok(Self {
            solver: Arc::new(Mutex::new(solver)),
            interrupted,
        })
    }

    /// The update rule's name ("SGD").
    #[getter]
    fn r#type(&self) -> PyResult<String> {
        Ok(lock(&self.solver)?.param().r#type().to_string())
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
    fn test_nets(&self) -> PyResult<Vec<PyNet>> {
        let count = lock(&self.solver)?.test_nets().len();
        Ok((0..count)
            .map(|i| PyNet {
                net: NetRef::Test(Arc::clone(&self.solver), i),
            })
            .collect())
    }
    /// The number of iterations run so far.
    #[getter]
    fn iter(&self) -> PyResult<i32> {
        Ok(lock(&self.solver)?.iter())
    }
    /// Runs `iters` iterations (with the tests, display and snapshots the solver file asks).
    fn step(&self, iters: i32) -> PyResult<()> {
        self.train(|solver| solver.step(iters))
    }
    /// Trains to `max_iter`, first restoring `resume_file` (a `.solverstate`) when given.
    #[pyo3(signature = (resume_file=None))]
    fn solve(&self, resume_file: Option<&str>) -> PyResult<()> {
        self.train(|solver| solver.solve(resume_file.map(Path::new)))
    }
    /// Restores the weights, history and iteration of a `.solverstate`.
    fn restore(&self, state: &str) -> PyResult<()> {
        self.train(|solver| solver.restore(Path::new(state)))
    }
    /// Writes a `.caffemodel` and a `.solverstate` of the current iteration; returns their
    /// paths.
    fn snapshot(&self) -> PyResult<(String, String)> {
        let (model, state) = self.train(|solver| solver.snapshot())?;
        Ok((model.display().to_string(), state.display().to_string()))
    }
    /// Applies the update rule to the train net's gradients, as one iteration ends.
    fn apply_update(&self) -> PyResult<()> {
        self.train(|solver| solver.apply_update())
    }
    /// Runs every test net (`test_iter` batches each), logging their scores.
    fn test_all(&self) -> PyResult<()> {
        self.train(|solver| solver.test_all())
    }
}
