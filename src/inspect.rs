//! `rcaffe inspect FILE`: what a Caffe file holds, without writing a pycaffe script.

use crate::proto::caffe::{BlobProto, NetParameter, SolverParameter, SolverState};
use crate::proto::{
    blob_proto_shape, field_line, read_blob_proto, read_caffemodel, read_file, read_net,
    read_solver, read_solverstate, FileKind, ProtoError,
};
use std::fmt::Write;
use std::path::Path;

/// A report of what `path` holds, as text. Its contents say what kind of file it is; when they
/// do not (a damaged file), its extension does, so that reading it says what is wrong.
pub fn inspect(path: &Path) -> Result<String, ProtoError> {
    // The bytes only say which reader to use; they are dropped before it reads the file, so a
    // large .caffemodel is not held twice.
    let kind = {
        let bytes = read_file(path, "file to inspect")?;
        FileKind::of_contents(&bytes).or_else(|| kind_by_extension(path, &bytes))
    };
    let kind = kind.ok_or_else(|| ProtoError::Invalid {
        path: path.to_path_buf(),
        message: "not one of Caffe's files; inspect reads .caffemodel, .solverstate, \
                      .binaryproto and .prototxt files"
            .to_string(),
    })?;
    Ok(match kind {
        FileKind::Weights => describe_caffemodel(path, &read_caffemodel(path)?),
        FileKind::SolverState => describe_solverstate(path, &read_solverstate(path)?),
        FileKind::Blob => describe_mean_blob(path, &read_blob_proto(path)?),
        FileKind::NetPrototxt => describe_net_prototxt(path, &read_net(path)?),
        FileKind::SolverPrototxt => describe_solver_prototxt(path, &read_solver(path)?),
    })
}

/// The kind a file's extension names; a prototxt is a net when it writes layers.
fn kind_by_extension(path: &Path, bytes: &[u8]) -> Option<FileKind> {
    let extension = path.extension()?.to_str()?.to_ascii_lowercase();
    match extension.as_str() {
        "caffemodel" => Some(FileKind::Weights),
        "solverstate" => Some(FileKind::SolverState),
        "binaryproto" => Some(FileKind::Blob),
        "prototxt" | "pbtxt" => {
            let text = String::from_utf8_lossy(bytes);
            let has_layers = ["layer", "layers"]
                .iter()
                .any(|field| field_line(&text, field, 0).is_some());
            Some(if has_layers {
                FileKind::NetPrototxt
            } else {
                FileKind::SolverPrototxt
            })
        }
        _ => None,
    }
}

/// min, mean and max of a blob's values (mean accumulated in f64).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValueStats {
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

pub fn value_stats(blob: &BlobProto) -> Option<ValueStats> {
    let values: Box<dyn Iterator<Item = f64>> = if blob.double_data.is_empty() {
        Box::new(blob.data.iter().map(|&v| f64::from(v)))
    } else {
        Box::new(blob.double_data.iter().copied())
    };
    let (mut min, mut max, mut sum, mut count) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
    for value in values {
        min = min.min(value);
        max = max.max(value);
        sum += value;
        count += 1;
    }
    (count > 0).then(|| ValueStats {
        min,
        mean: sum / count as f64,
        max,
    })
}

fn shape_text(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    dims.join(" ")
}

fn blob_count(blob: &BlobProto) -> usize {
    blob.data.len().max(blob.double_data.len())
}

/// One table row per blob: label, shape, count, stats.
fn blob_rows(report: &mut String, rows: &[(String, String, &BlobProto)]) {
    let label_width = rows
        .iter()
        .map(|(l, _, _)| l.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let kind_width = rows
        .iter()
        .map(|(_, k, _)| k.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let shapes: Vec<String> = rows
        .iter()
        .map(|(_, _, blob)| shape_text(&blob_proto_shape(blob)))
        .collect();
    let shape_width = shapes.iter().map(String::len).max().unwrap_or(0).max(5);
    let _ = writeln!(
        report,
        "  {:label_width$}  {:kind_width$}  {:shape_width$}  {:>10}  {:>12}  {:>12}  {:>12}",
        "layer", "blob", "shape", "count", "min", "mean", "max"
    );
    for ((label, kind, blob), shape) in rows.iter().zip(&shapes) {
        let stats = match value_stats(blob) {
            Some(s) => format!("{:>12.6}  {:>12.6}  {:>12.6}", s.min, s.mean, s.max),
            None => format!("{:>12}  {:>12}  {:>12}", "-", "-", "-"),
        };
        let _ = writeln!(
            report,
            "  {label:label_width$}  {kind:kind_width$}  {shape:shape_width$}  {:>10}  {stats}",
            blob_count(blob)
        );
    }
}

fn describe_caffemodel(path: &Path, net: &NetParameter) -> String {
    let mut report = String::new();
    let blobs: usize = net.layer.iter().map(|l| l.blobs.len()).sum();
    let values: usize = net
        .layer
        .iter()
        .flat_map(|l| &l.blobs)
        .map(blob_count)
        .sum();
    let _ = writeln!(
        report,
        "{}: caffemodel (NetParameter), net \"{}\": {} layers, {} with weights, {} blobs, {} values",
        path.display(),
        net.name(),
        net.layer.len(),
        net.layer.iter().filter(|l| !l.blobs.is_empty()).count(),
        blobs,
        values
    );
    let rows: Vec<(String, String, &BlobProto)> = net
        .layer
        .iter()
        .flat_map(|layer| {
            layer.blobs.iter().enumerate().map(move |(index, blob)| {
                (
                    format!("{} ({})", layer.name(), layer.r#type()),
                    index.to_string(),
                    blob,
                )
            })
        })
        .collect();
    if !rows.is_empty() {
        blob_rows(&mut report, &rows);
    }
    report
}

fn describe_solverstate(path: &Path, state: &SolverState) -> String {
    let mut report = String::new();
    let _ = writeln!(
        report,
        "{}: solverstate (SolverState): iteration {}, current_step {}, learned_net \"{}\", {} history blobs",
        path.display(),
        state.iter(),
        state.current_step(),
        state.learned_net(),
        state.history.len()
    );
    let rows: Vec<(String, String, &BlobProto)> = state
        .history
        .iter()
        .enumerate()
        .map(|(index, blob)| ("history".to_string(), index.to_string(), blob))
        .collect();
    if !rows.is_empty() {
        blob_rows(&mut report, &rows);
    }
    report
}

fn describe_mean_blob(path: &Path, blob: &BlobProto) -> String {
    let mut report = String::new();
    let shape = blob_proto_shape(blob);
    let form = if blob.shape.is_some() {
        "shape"
    } else {
        "legacy num/channels/height/width"
    };
    let _ = writeln!(
        report,
        "{}: binaryproto (BlobProto), shape {} ({}, given as {form})",
        path.display(),
        shape_text(&shape),
        blob_count(blob)
    );
    if let Some(stats) = value_stats(blob) {
        let _ = writeln!(
            report,
            "  min {:.6}  mean {:.6}  max {:.6}",
            stats.min, stats.mean, stats.max
        );
    }
    // A mean image's per-channel means are what `mean_value` would take instead.
    if shape.len() == 4 && shape[1] > 0 && blob.double_data.is_empty() {
        let channels = shape[1] as usize;
        let plane = (shape[2] * shape[3]) as usize;
        if plane > 0 && blob.data.len() == channels * plane * shape[0] as usize {
            let means: Vec<String> = (0..channels)
                .map(|c| {
                    let sum: f64 = blob.data[c * plane..(c + 1) * plane]
                        .iter()
                        .map(|&v| f64::from(v))
                        .sum();
                    format!("{:.4}", sum / plane as f64)
                })
                .collect();
            let _ = writeln!(
                report,
                "  per-channel mean (of image 0): {}",
                means.join(", ")
            );
        }
    }
    report
}

fn describe_solver_prototxt(path: &Path, solver: &SolverParameter) -> String {
    format!(
        "{}: solver prototxt: type {}, lr_policy \"{}\", base_lr {}, max_iter {}\n",
        path.display(),
        solver.r#type(),
        solver.lr_policy(),
        solver.base_lr(),
        solver.max_iter()
    )
}

fn describe_net_prototxt(path: &Path, net: &NetParameter) -> String {
    let mut report = String::new();
    let _ = writeln!(
        report,
        "{}: net prototxt, net \"{}\": {} layers",
        path.display(),
        net.name(),
        net.layer.len()
    );
    for layer in &net.layer {
        let _ = writeln!(
            report,
            "  {:24} {:24} bottom [{}] top [{}]",
            layer.name(),
            layer.r#type(),
            layer.bottom.join(", "),
            layer.top.join(", ")
        );
    }
    report
}
