//! Snapshots and restores (upstream: `Solver::Snapshot`, `SnapshotToBinaryProto`,
//! `SGDSolver::SnapshotSolverStateToBinaryProto` and `RestoreSolverStateFromBinaryProto`).
//!
//! A snapshot is two files written atomically (a crash never leaves half of one):
//! `<prefix>_iter_N.caffemodel`, the train net's weights, and `<prefix>_iter_N.solverstate`,
//! the iteration, the schedule's `current_step`, the `.caffemodel`'s path (`learned_net`) and
//! the history blobs in upstream's order. With `snapshot_format: HDF5` they are
//! `.caffemodel.h5` and `.solverstate.h5` in upstream's HDF5 layout
//! (`SGDSolver::SnapshotSolverStateToHDF5`): int32 datasets `iter` and `current_step` of one
//! element, a string dataset `learned_net`, and a group `history` of float32 datasets `0`, `1`,
//! … in the blobs' shapes.

use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::data::hdf5::{add_array, write_atomically, FileBuilder, Hdf5Error, Reader};
use crate::proto::caffe::solver_parameter::SnapshotFormat;
use crate::proto::caffe::{BlobProto, BlobShape, SolverParameter, SolverState};
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
    /// current iteration, in `snapshot_format`; returns their paths.
    pub fn snapshot(&mut self) -> Result<(PathBuf, PathBuf)> {
        let hdf5 = self.param.snapshot_format() == SnapshotFormat::Hdf5;
        let extension = if hdf5 { ".h5" } else { "" };
        let format = if hdf5 { "HDF5" } else { "binary proto" };
        let model = self.snapshot_filename(&format!(".caffemodel{extension}"));
        self.log
            .info(format!("Snapshotting to {format} file {}", model.display()));
        if hdf5 {
            self.net.write_hdf5(&model, self.param.snapshot_diff())?;
        } else {
            let net_param = self.net.to_proto(self.param.snapshot_diff())?;
            write_binary(&model, &net_param)?;
        }

        let state_file = self.snapshot_filename(&format!(".solverstate{extension}"));
        self.log.info(format!(
            "Snapshotting solver state to {format} file {}",
            state_file.display()
        ));
        let learned_net = model.to_string_lossy().into_owned();
        if hdf5 {
            self.write_state_hdf5(&state_file, &learned_net)?;
        } else {
            let mut state = SolverState {
                iter: Some(self.iter),
                learned_net: Some(learned_net),
                current_step: Some(self.lr_state.current_step),
                ..Default::default()
            };
            for blob in &self.history {
                state.history.push(blob.to_proto(false)?);
            }
            write_binary(&state_file, &state)?;
        }
        Ok((model, state_file))
    }

    fn write_state_hdf5(&self, path: &Path, learned_net: &str) -> Result<()> {
        let hdf5_error = |e: Hdf5Error| SolverError::State {
            path: path.to_path_buf(),
            message: e.message,
        };
        let mut file = FileBuilder::new();
        file.create_dataset("iter")
            .with_i32_data(&[self.iter])
            .with_shape(&[1]);
        file.create_dataset("learned_net")
            .with_ascii_strings(&[learned_net])
            .map_err(|e| SolverError::State {
                path: path.to_path_buf(),
                message: format!("Failed to save string dataset learned_net: {e}"),
            })?
            .with_shape(&[]);
        file.create_dataset("current_step")
            .with_i32_data(&[self.lr_state.current_step])
            .with_shape(&[1]);
        let mut history = file.create_group("history");
        for (i, blob) in self.history.iter().enumerate() {
            add_array(
                &mut history,
                &i.to_string(),
                blob.shape(),
                &blob.data_to_vec()?,
            );
        }
        file.add_group(history.finish());
        write_atomically(path, file).map_err(hdf5_error)
    }

    /// Restores a `.solverstate` (or, by its `.h5` extension as upstream, a `.solverstate.h5`):
    /// the iteration, `current_step`, the weights of its
    /// `learned_net` (opened as written, relative to the working directory, or else beside the
    /// `.solverstate`) and the history blobs, which must match this solver's in number and shape.
    pub fn restore(&mut self, path: &Path) -> Result<()> {
        let state = if path.extension().is_some_and(|e| e == "h5") {
            read_state_hdf5(path).map_err(|e| SolverError::State {
                path: path.to_path_buf(),
                message: e.message,
            })?
        } else {
            read_solverstate(path)?
        };
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

/// A `.solverstate.h5` as the `SolverState` a `.solverstate` holds (upstream:
/// `SGDSolver::RestoreSolverStateFromHDF5`; `learned_net` is optional there too).
fn read_state_hdf5(path: &Path) -> std::result::Result<SolverState, Hdf5Error> {
    let reader = Reader::open(path)?;
    let learned_net = if reader.has_dataset("learned_net") {
        Some(reader.read_string("learned_net")?)
    } else {
        None
    };
    let mut state = SolverState {
        iter: Some(reader.read_int("iter")?),
        learned_net,
        current_step: Some(reader.read_int("current_step")?),
        ..Default::default()
    };
    for i in 0..reader.links("history")?.len() {
        let array = reader.read_array(&format!("history/{i}"))?;
        state.history.push(BlobProto {
            shape: Some(BlobShape {
                dim: array.shape.iter().map(|&d| d as i64).collect(),
            }),
            data: array.values,
            ..Default::default()
        });
    }
    Ok(state)
}
