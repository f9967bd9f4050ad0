//! What can stop a solver, and the solver fields that cannot be used.

use std::path::{Path, PathBuf};

use super::signals::InvalidSignalEffect;
use crate::backend::BackendError;
use crate::blob::BlobError;
use crate::lr_policy::LrPolicyError;
use crate::net::NetError;
use crate::proto::caffe::SolverParameter;
use crate::proto::ProtoError;

/// What can stop training.
#[derive(Debug, thiserror::Error)]
pub enum SolverError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error(transparent)]
    LrPolicy(#[from] LrPolicyError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The solver's settings cannot be used (a snapshot prefix that cannot be written, …).
    #[error("solver: {0}")]
    Config(String),
    /// A field of the solver file cannot be used (unknown type, momentum with AdaGrad, an
    /// lr_policy without its stepsize, …): the file, the line where the field is written (when
    /// it is), the field and why.
    #[error("{}{}: {error}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Field {
        path: PathBuf,
        line: Option<usize>,
        error: FieldError,
    },
    /// `rcaffe test` without weights (upstream's words).
    #[error("Need model weights to score: give -weights with one or more .caffemodel files")]
    NoWeights,
    /// `-sigint_effect`/`-sighup_effect` named no effect.
    #[error(transparent)]
    SignalEffect(#[from] InvalidSignalEffect),
    /// The signal handlers could not be installed.
    #[error("installing the SIGINT/SIGHUP handlers: {0}")]
    Signals(std::io::Error),
    /// A `.solverstate` does not fit this solver.
    #[error("{}: {message}", path.display())]
    State { path: PathBuf, message: String },
    /// The training loss became NaN or infinite; nothing was written after it.
    #[error(
        "Iteration {iter}: the loss is {loss} at learning rate {lr}; training stopped (no \
         snapshot written after the last good one). The learning rate is probably too high: \
         lower base_lr (or max_lr for a cyclical policy)"
    )]
    NonFiniteLoss { iter: i32, loss: f32, lr: String },
}

/// Result of a solver operation.
pub type Result<T> = std::result::Result<T, SolverError>;

/// A solver field whose value cannot be used, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    /// Which of the field's values (0-based), for a repeated field.
    pub occurrence: usize,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            occurrence: 0,
            message: message.into(),
        }
    }

    /// The error placed in solver file `path`, at the field's line when the file can be read,
    /// the field is written in it and `param` (what was checked) still has the file's value
    /// there: not after a command-line or tool override.
    pub fn in_file(self, path: &Path, param: &SolverParameter) -> SolverError {
        use prost_reflect::ReflectMessage;
        let line = std::fs::read_to_string(path).ok().and_then(|text| {
            let written: SolverParameter = crate::proto::parse_text(&text, path).ok()?;
            let value = |p: &SolverParameter| {
                let message = p.transcode_to_dynamic();
                message
                    .get_field_by_name(self.field)
                    .map(|v| v.into_owned())
            };
            if value(&written) != value(param) {
                return None;
            }
            crate::proto::field_line(&text, self.field, self.occurrence)
        });
        SolverError::Field {
            path: path.to_path_buf(),
            line,
            error: self,
        }
    }
}

impl From<LrPolicyError> for FieldError {
    fn from(error: LrPolicyError) -> Self {
        let (field, occurrence) = error.field();
        Self {
            field,
            occurrence,
            message: error.to_string(),
        }
    }
}

impl From<crate::layers::Error> for SolverError {
    fn from(e: crate::layers::Error) -> Self {
        SolverError::Net(NetError::from(e))
    }
}
