//! HDF5 files in and out, through the pure-Rust `hdf5-pure` crate (no libhdf5): the arrays of
//! the HDF5Data and HDF5Output layers and of `snapshot_format: HDF5` snapshots (upstream:
//! src/caffe/util/hdf5.cpp).
//!
//! Upstream reads a dataset of any float or integer class into the blob's float type and
//! writes float32 datasets in the blob's shape; so do these. Every error names the file and,
//! where there is one, the dataset.

use std::fmt;
use std::path::{Path, PathBuf};

use hdf5_pure::{DType, GroupBuilder};
pub use hdf5_pure::{File, FileBuilder};

/// What went wrong with which HDF5 file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hdf5Error {
    /// The file.
    pub path: PathBuf,
    /// What went wrong, naming the dataset where there is one.
    pub message: String,
}

impl fmt::Display for Hdf5Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HDF5 file {}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for Hdf5Error {}

impl Hdf5Error {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        Hdf5Error {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// A dataset read as f32: its dimensions and its values in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The dataset's dimensions.
    pub shape: Vec<usize>,
    /// The values, converted to f32.
    pub values: Vec<f32>,
}

/// An HDF5 file opened for reading, with its path for the messages.
pub struct Reader {
    path: PathBuf,
    file: File,
}

/// Whether the file at `path` starts with the HDF5 signature (upstream's `H5Fis_hdf5`, which
/// picks the weights format). A file that cannot be read is not HDF5.
pub fn is_hdf5(path: &Path) -> bool {
    hdf5_pure::is_hdf5(path).unwrap_or(false)
}

impl Reader {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<Self, Hdf5Error> {
        if !path.exists() {
            return Err(Hdf5Error::new(
                path,
                "Failed opening HDF5 file: no such file",
            ));
        }
        let file = File::open(path)
            .map_err(|e| Hdf5Error::new(path, format!("Failed opening HDF5 file: {e}")))?;
        Ok(Reader {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An error about this file.
    pub fn error(&self, message: impl Into<String>) -> Hdf5Error {
        Hdf5Error::new(&self.path, message)
    }

    /// Whether a dataset `name` exists.
    pub fn has_dataset(&self, name: &str) -> bool {
        self.file.dataset(name).is_ok()
    }

    /// The dataset `name` (a path such as `data/conv1/0`) as f32 values: float and integer
    /// classes are converted, others refused.
    pub fn read_array(&self, name: &str) -> Result<Array, Hdf5Error> {
        let dataset = self
            .file
            .dataset(name)
            .map_err(|_| self.error(format!("Failed to find HDF5 dataset {name}")))?;
        let dtype = dataset
            .dtype()
            .map_err(|e| self.error(format!("dataset {name}: {e}")))?;
        let numeric = matches!(
            dtype,
            DType::F32
                | DType::F64
                | DType::I8
                | DType::I16
                | DType::I32
                | DType::I64
                | DType::U8
                | DType::U16
                | DType::U32
                | DType::U64
        );
        if !numeric {
            return Err(self.error(format!(
                "dataset {name}: unsupported datatype {dtype}; a float or integer dataset is \
                 needed"
            )));
        }
        let shape = dataset
            .shape()
            .map_err(|e| self.error(format!("dataset {name}: {e}")))?;
        let values = dataset
            .read_f32()
            .map_err(|e| self.error(format!("Failed to read dataset {name}: {e}")))?;
        Ok(Array {
            shape: shape.iter().map(|&d| d as usize).collect(),
            values,
        })
    }

    /// The integer scalar dataset `name` (upstream's `hdf5_load_int`: a 1-element dataset).
    pub fn read_int(&self, name: &str) -> Result<i32, Hdf5Error> {
        let values = self
            .file
            .dataset(name)
            .and_then(|d| d.read_i32())
            .map_err(|e| self.error(format!("Failed to load int dataset {name}: {e}")))?;
        values
            .first()
            .copied()
            .ok_or_else(|| self.error(format!("int dataset {name} is empty")))
    }

    /// The string dataset `name` (upstream's `hdf5_load_string`).
    pub fn read_string(&self, name: &str) -> Result<String, Hdf5Error> {
        let values = self
            .file
            .dataset(name)
            .and_then(|d| d.read_string())
            .map_err(|e| self.error(format!("Failed to load string dataset {name}: {e}")))?;
        let text = values.into_iter().next().unwrap_or_default();
        Ok(text.trim_end_matches('\0').to_string())
    }

    /// The names of the links (groups and datasets) in group `name` (`/` for the root), in
    /// name order as upstream lists them (`H5_INDEX_NAME`).
    pub fn links(&self, name: &str) -> Result<Vec<String>, Hdf5Error> {
        let group = self
            .file
            .group(name)
            .map_err(|_| self.error(format!("Failed to find HDF5 group {name}")))?;
        let list = |e| self.error(format!("Error while listing HDF5 group {name}: {e}"));
        let mut names = group.groups().map_err(list)?;
        names.extend(group.datasets().map_err(list)?);
        names.sort();
        Ok(names)
    }
}

/// Adds a float32 dataset `name` of `shape` holding `values` to `group`.
pub fn add_array(group: &mut GroupBuilder, name: &str, shape: &[usize], values: &[f32]) {
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    group
        .create_dataset(name)
        .with_f32_data(values)
        .with_shape(&dims);
}

/// Adds a float32 dataset `name` of `shape` holding `values` to the root of `file`.
pub fn add_root_array(file: &mut FileBuilder, name: &str, shape: &[usize], values: &[f32]) {
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    file.create_dataset(name)
        .with_f32_data(values)
        .with_shape(&dims);
}

/// Writes `file` to `path` through a temporary file and a rename, as the binaryproto
/// snapshots are written, so that a crash never leaves half a file.
pub fn write_atomically(path: &Path, file: FileBuilder) -> Result<(), Hdf5Error> {
    let bytes = file
        .finish()
        .map_err(|e| Hdf5Error::new(path, format!("Failed to assemble the file: {e}")))?;
    crate::proto::write_atomically(path, &bytes).map_err(|e| Hdf5Error::new(path, e.to_string()))
}
