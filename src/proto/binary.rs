//! Caffe's binary files: `.caffemodel` (NetParameter), `.solverstate` (SolverState),
//! `.binaryproto` (BlobProto mean files), and Datum records.

use super::caffe::{BlobProto, NetParameter, SolverState};
use super::{kind, read_file, FileKind, ProtoError};
use prost::Message;
use std::io::Write;
use std::path::Path;

/// Decodes a whole file, where a file of `kind` belongs, as one protobuf message. A file of
/// another kind is refused with what it is.
pub fn read_binary<M: Message + Default>(path: &Path, kind: FileKind) -> Result<M, ProtoError> {
    let bytes = read_file(path, kind.noun())?;
    kind::refuse_other_kind(&bytes, path, kind)?;
    decode_binary(&bytes, path, kind.noun())
}

/// Decodes `bytes` (the contents of `path`) as one protobuf message. `what` names the kind of
/// file in errors.
pub fn decode_binary<M: Message + Default>(
    bytes: &[u8],
    path: &Path,
    what: &'static str,
) -> Result<M, ProtoError> {
    if bytes.is_empty() {
        return Err(binary_error(path, what, "the file is empty"));
    }
    M::decode(bytes).map_err(|error| {
        binary_error(
            path,
            what,
            &format!("{error} (truncated, or not a {what}?)"),
        )
    })
}

fn binary_error(path: &Path, what: &'static str, message: &str) -> ProtoError {
    ProtoError::Binary {
        path: path.to_path_buf(),
        what,
        message: message.to_string(),
    }
}

/// Writes `message` to `path` atomically: a temporary file in the same directory is written,
/// flushed to disk and renamed over `path`, so a crash never leaves a half-written file.
pub fn write_binary<M: Message>(path: &Path, message: &M) -> Result<(), ProtoError> {
    write_atomically(path, &message.encode_to_vec())
}

/// Writes `bytes` to `path` through a temporary file and a rename (see [`write_binary`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ProtoError> {
    let io_error = |error| ProtoError::Write {
        path: path.to_path_buf(),
        error,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io_error(std::io::Error::other("not a file path")))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map_err(io_error)
}

/// The shape a blob record describes: `shape.dim` when present, else the legacy 4-D
/// num/channels/height/width (as upstream's `Blob::FromProto` reads old files).
pub fn blob_proto_shape(blob: &BlobProto) -> Vec<i64> {
    match &blob.shape {
        Some(shape) => shape.dim.clone(),
        None => vec![
            i64::from(blob.num()),
            i64::from(blob.channels()),
            i64::from(blob.height()),
            i64::from(blob.width()),
        ],
    }
}

/// Checks that a blob record holds as many values as its shape counts (float or double data;
/// an empty diff is allowed), so a damaged file is refused rather than half loaded.
pub fn check_blob_proto(
    blob: &BlobProto,
    path: &Path,
    what: &'static str,
    name: &str,
) -> Result<(), ProtoError> {
    let shape = blob_proto_shape(blob);
    if let Some(dim) = shape.iter().find(|&&d| d < 0) {
        return Err(binary_error(
            path,
            what,
            &format!("{name}: negative dimension {dim} in shape {shape:?}"),
        ));
    }
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| binary_error(path, what, &format!("{name}: shape {shape:?} overflows")))?;
    let stored = if blob.double_data.is_empty() {
        blob.data.len()
    } else {
        blob.double_data.len()
    };
    if stored as u64 != count {
        return Err(binary_error(
            path,
            what,
            &format!("{name}: shape {shape:?} needs {count} values but {stored} are stored"),
        ));
    }
    let diff = if blob.double_diff.is_empty() {
        blob.diff.len()
    } else {
        blob.double_diff.len()
    };
    if diff != 0 && diff as u64 != count {
        return Err(binary_error(
            path,
            what,
            &format!("{name}: shape {shape:?} needs {count} diff values but {diff} are stored"),
        ));
    }
    Ok(())
}

/// Reads a `.caffemodel` (NetParameter with weights; legacy V0/V1 layers upgraded) and checks
/// every blob holds the values its shape promises.
pub fn read_caffemodel(path: &Path) -> Result<NetParameter, ProtoError> {
    const WHAT: &str = FileKind::Weights.noun();
    let mut net: NetParameter = read_binary(path, FileKind::Weights)?;
    super::upgrade::upgrade_net(&mut net, path)?;
    if net.layer.is_empty() {
        return Err(binary_error(path, WHAT, "it holds no layers (truncated?)"));
    }
    for layer in &net.layer {
        for (index, blob) in layer.blobs.iter().enumerate() {
            check_blob_proto(
                blob,
                path,
                WHAT,
                &format!("layer '{}' blob {index}", layer.name()),
            )?;
        }
    }
    Ok(net)
}

/// Reads a `.solverstate` and checks its history blobs.
pub fn read_solverstate(path: &Path) -> Result<SolverState, ProtoError> {
    const WHAT: &str = FileKind::SolverState.noun();
    let state: SolverState = read_binary(path, FileKind::SolverState)?;
    for (index, blob) in state.history.iter().enumerate() {
        check_blob_proto(blob, path, WHAT, &format!("history blob {index}"))?;
    }
    Ok(state)
}

/// Reads a `.binaryproto` blob (a mean file), in either shape form.
pub fn read_blob_proto(path: &Path) -> Result<BlobProto, ProtoError> {
    const WHAT: &str = FileKind::Blob.noun();
    let blob: BlobProto = read_binary(path, FileKind::Blob)?;
    check_blob_proto(&blob, path, WHAT, "blob")?;
    Ok(blob)
}
