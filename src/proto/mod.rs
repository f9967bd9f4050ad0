//! Caffe's schema as Rust types, and the files made of it.

mod binary;
mod print;
mod solver_nets;
mod text;
pub mod upgrade;

pub use binary::{
    blob_proto_shape, check_blob_proto, decode_binary, read_binary, read_blob_proto,
    read_caffemodel, read_solverstate, write_atomically, write_binary,
};
pub use print::{format_g, print_text};
pub use solver_nets::{resolve_solver_nets, NetSource, SolverNets};
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

/// The descriptors of proto/caffe.proto, for reading and printing the text format.
pub static DESCRIPTOR_POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(
        include_bytes!(concat!(env!("OUT_DIR"), "/caffe_descriptor.bin")).as_ref(),
    )
    .expect("the embedded descriptor set is produced by build.rs and always valid")
});

/// What can go wrong reading or writing Caffe's files. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
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
}

/// Reads a whole file as UTF-8 text, naming the file on failure.
pub fn read_text_file(path: &Path) -> Result<String, ProtoError> {
    std::fs::read_to_string(path).map_err(|source| ProtoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a net prototxt and upgrades legacy (V0/V1, top-level input) nets to the current format.
pub fn read_net(path: &Path) -> Result<NetParameter, ProtoError> {
    let mut net: NetParameter = parse_text(&read_text_file(path)?, path)?;
    upgrade::upgrade_net(&mut net, path)?;
    Ok(net)
}

/// Reads a solver prototxt, upgrading the legacy `solver_type` enum and any inline legacy nets,
/// and settling `snapshot_prefix` as upstream's `ReadSolverParamsFromTextFileOrDie` does.
pub fn read_solver(path: &Path) -> Result<SolverParameter, ProtoError> {
    let mut solver: SolverParameter = parse_text(&read_text_file(path)?, path)?;
    upgrade::upgrade_solver(&mut solver, path)?;
    settle_snapshot_prefix(&mut solver, path);
    Ok(solver)
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
