//! Snapshots and restores (upstream: `Solver::Snapshot`, `SnapshotToBinaryProto`,
//! `SGDSolver::SnapshotSolverStateToBinaryProto` and `RestoreSolverStateFromBinaryProto`).
//!
//! A snapshot is two files written atomically (a crash never leaves half of one):
//! `<prefix>_iter_N.caffemodel`, the train net's weights, and `<prefix>_iter_N.solverstate`,
//! the iteration, the schedule's `current_step`, the `.caffemodel`'s path (`learned_net`) and
//! the history blobs in upstream's order.

use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::proto::caffe::{SolverParameter, SolverState};
use crate::proto::{read_solverstate, write_binary};

use super::{Result, Solver, SolverError};

/// Upstream's `CheckSnapshotWritePermissions`: with `snapshot` set, a file must be creatable at
/// the prefix, so that a run does not fail at its first snapshot hours in.
pub(super) fn check_write_permissions(param: &SolverParameter) -> Result<()> {
    if param.snapshot() <= 0 {
        return Ok(());
    }
    let Some(prefix) = &param.snapshot_prefix else {
        return Err(SolverError::Config(
            "In solver params, snapshot is specified but snapshot_prefix is not".to_string(),
        ));
    };
    let probe = PathBuf::from(format!("{prefix}_iter_0.tempfile"));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(SolverError::Config(format!(
            "Cannot write to snapshot prefix '{prefix}' ({e}). Make sure that the directory \
             exists and is writable."
        ))),
    }
}

impl<B: Backend> Solver<B> {
    /// `<snapshot_prefix>_iter_<iter><extension>`.
    pub fn snapshot_filename(&self, extension: &str) -> PathBuf {
        PathBuf::from(format!(
            "{}_iter_{}{extension}",
            self.param.snapshot_prefix(),
            self.iter
        ))
    }

    /// Writes the `.caffemodel` (with diffs when `snapshot_diff`) and the `.solverstate` of the
    /// current iteration; returns their paths.
    pub fn snapshot(&mut self) -> Result<(PathBuf, PathBuf)> {
        let model = self.snapshot_filename(".caffemodel");
        self.log.info(format!(
            "Snapshotting to binary proto file {}",
            model.display()
        ));
        let net_param = self.net.to_proto(self.param.snapshot_diff())?;
        write_binary(&model, &net_param)?;

        let mut state = SolverState {
            iter: Some(self.iter),
            learned_net: Some(model.to_string_lossy().into_owned()),
            current_step: Some(self.lr_state.current_step),
            ..Default::default()
        };
        for blob in &self.history {
            state.history.push(blob.to_proto(false)?);
        }
        let state_file = self.snapshot_filename(".solverstate");
        self.log.info(format!(
            "Snapshotting solver state to binary proto file {}",
            state_file.display()
        ));
        write_binary(&state_file, &state)?;
        Ok((model, state_file))
    }

    /// Restores a `.solverstate`: the iteration, `current_step`, the weights of its
    /// `learned_net` (opened as written, relative to the working directory, or else beside the
    /// `.solverstate`) and the history blobs, which must match this solver's in number and shape.
    pub fn restore(&mut self, path: &Path) -> Result<()> {
        if path.extension().is_some_and(|e| e == "h5") {
            return Err(SolverError::State {
                path: path.to_path_buf(),
                message: "HDF5 solver states are not supported; use a .solverstate".to_string(),
            });
        }
        let state = read_solverstate(path)?;
        let state_error = |message: String| SolverError::State {
            path: path.to_path_buf(),
            message,
        };
        if state.history.len() != self.history.len() {
            return Err(state_error(format!(
                "Incorrect length of history blobs: the file has {}, the {} solver of this net \
                 keeps {}",
                state.history.len(),
                self.rule.type_name(),
                self.history.len()
            )));
        }
        for (i, (proto, blob)) in state.history.iter().zip(&self.history).enumerate() {
            if !blob.shape_equals(proto) {
                return Err(state_error(format!(
                    "history blob {i} has shape {:?}, but learnable parameter {} has shape {}",
                    crate::proto::blob_proto_shape(proto),
                    i % self.net.learnable_params().len().max(1),
                    blob.shape_string()
                )));
            }
        }
        self.iter = state.iter();
        if let Some(learned) = &state.learned_net {
            let as_written = PathBuf::from(learned);
            let beside = path
                .parent()
                .map(|dir| dir.join(as_written.file_name().unwrap_or_default()));
            let model = match beside {
                Some(beside) if !as_written.exists() && beside.exists() => beside,
                _ => as_written,
            };
            self.net.copy_trained_layers_from_file(&model)?;
        }
        self.lr_state.current_step = state.current_step();
        self.log.info("SGDSolver: restoring history".to_string());
        for (proto, blob) in state.history.iter().zip(&mut self.history) {
            blob.from_proto(proto, false)?;
        }
        Ok(())
    }
}
