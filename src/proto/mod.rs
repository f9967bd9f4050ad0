//! Caffe's schema as Rust types, and the files made of it.

mod binary;
mod kind;
mod print;
mod solver_nets;
mod text;
pub mod upgrade;

pub use binary::{
    blob_proto_shape, check_blob_proto, decode_binary, read_binary, read_blob_proto,
    read_caffemodel, read_solverstate, write_atomically, write_binary,
};
pub use kind::FileKind;
pub use print::{format_g, print_text};
pub use solver_nets::{resolve_solver_nets, NetOrigin, NetSource, SolverNets};
pub(crate) use text::suggestion;
pub use text::{field_line, parse_text};

use caffe::{NetParameter, SolverParameter};
use prost_reflect::DescriptorPool;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// The types generated from proto/caffe.proto.
#[allow(clippy::all, missing_docs)]
pub mod caffe {
    include!(concat!(env!("OUT_DIR"), "/caffe.rs"));
}

/// proto/caffe.proto compiled by build.rs: a serialized `FileDescriptorSet` (what the Python
/// package builds its `caffe_pb2` message classes from).
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/caffe_descriptor.bin"));

/// The descriptors of proto/caffe.proto, for reading and printing the text format.
pub static DESCRIPTOR_POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(DESCRIPTOR_SET)
        .expect("the embedded descriptor set is produced by build.rs and always valid")
});

/// What can go wrong reading or writing Caffe's files. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A file could not be read: says what was expected there. (Here and below, the cause's
    /// text is part of the message, so the cause is not also given as the error's source.)
    #[error("{}: cannot read the {what}: {error}", path.display())]
    Read {
        path: PathBuf,
        what: &'static str,
        error: std::io::Error,
    },
    #[error("{}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Text {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: not a valid {what}: {message}", path.display())]
    Binary {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Decode { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    /// The file is another kind of Caffe file than the one expected there (`found`, `None`
    /// for binary that is none of Caffe's where text belongs): says where it goes instead.
    #[error("{}", kind::wrong_kind_message(path, *found, *expected))]
    WrongKind {
        path: PathBuf,
        found: Option<FileKind>,
        expected: FileKind,
    },
}

/// Reads a whole file, naming the file and `what` was expected there on failure.
pub(crate) fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, ProtoError> {
    std::fs::read(path).map_err(|error| ProtoError::Read {
        path: path.to_path_buf(),
        what,
        error,
    })
}

/// Reads prototxt `path`, where a file of `kind` belongs, as an `M`. A binary file, or a
/// prototxt of the other kind, is refused with what it is.
fn read_prototxt<M: prost_reflect::ReflectMessage + Default>(
    path: &Path,
    kind: FileKind,
) -> Result<M, ProtoError> {
    let bytes = read_file(path, kind.noun())?;
    kind::refuse_other_kind(&bytes, path, kind)?;
    let text = String::from_utf8(bytes).map_err(|_| ProtoError::WrongKind {
        path: path.to_path_buf(),
        found: None,
        expected: kind,
    })?;
    parse_text(&text, path).map_err(|error| kind::refuse_other_prototxt(error, &text, path, kind))
}

/// Reads a net prototxt and upgrades legacy (V0/V1, top-level input) nets to the current format.
pub fn read_net(path: &Path) -> Result<NetParameter, ProtoError> {
    let mut net = read_net_as_written(path)?;
    upgrade::upgrade_net(&mut net, path)?;
    Ok(net)
}

/// Reads a net prototxt as it is written, legacy formats and all.
pub fn read_net_as_written(path: &Path) -> Result<NetParameter, ProtoError> {
    read_prototxt(path, FileKind::NetPrototxt)
}

/// Reads a solver prototxt, upgrading the legacy `solver_type` enum and any inline legacy nets,
/// and settling `snapshot_prefix` as upstream's `ReadSolverParamsFromTextFileOrDie` does.
pub fn read_solver(path: &Path) -> Result<SolverParameter, ProtoError> {
    let mut solver = read_solver_as_written(path)?;
    upgrade::upgrade_solver(&mut solver, path)?;
    settle_snapshot_prefix(&mut solver, path);
    Ok(solver)
}

/// Reads a solver prototxt as it is written, legacy fields and all.
pub fn read_solver_as_written(path: &Path) -> Result<SolverParameter, ProtoError> {
    read_prototxt(path, FileKind::SolverPrototxt)
}

/// Without a `snapshot_prefix`, snapshots go beside the solver file, named after it; a prefix
/// that is a folder gets the solver file's stem appended.
fn settle_snapshot_prefix(solver: &mut SolverParameter, solver_path: &Path) {
    match &solver.snapshot_prefix {
        None => {
            let prefix = solver_path
                .with_extension("")
                .to_string_lossy()
                .into_owned();
            log::info!("snapshot_prefix was not specified and is set to {prefix}");
            solver.snapshot_prefix = Some(prefix);
        }
        Some(prefix) if Path::new(prefix).is_dir() => {
            let stem = solver_path.file_stem().unwrap_or_default();
            let prefix = Path::new(prefix).join(stem).to_string_lossy().into_owned();
            log::info!("snapshot_prefix was a directory and is replaced to {prefix}");
            solver.snapshot_prefix = Some(prefix);
        }
        Some(_) => {}
    }
}
