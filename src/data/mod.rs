//! Data: LMDB datasets of `Datum` records, the transformations a data layer applies to them,
//! the background thread that prepares batches, and the converters that build the datasets.
//!
//! The pieces, in the order a record flows through them:
//!
//! * [`lmdb`]: open an LMDB the way Caffe does (read-only, one unnamed database), walk its
//!   records in key order with wrap-around ([`lmdb::Cursor`]), and write new ones
//!   ([`lmdb::LmdbWriter`], whose memory map grows as needed).
//! * [`leveldb`]: the same for LevelDB, in Google's on-disk format (snappy blocks included).
//! * [`db`]: one cursor ([`DbCursor`]) and one writer ([`DbWriter`]) over either, chosen by
//!   [`DbBackend`], as upstream's `db::GetDB`.
//! * [`datum`]: parse a record into a [`Datum`](crate::proto::caffe::Datum), check its shape,
//!   and decode an encoded (JPEG/PNG) one into Caffe's channel-major BGR layout ([`imgcodec`]
//!   does the image work).
//! * [`transformer`]: upstream's `DataTransformer`: crop, mirror, mean subtraction and scale,
//!   with the random draws taken from a generator the caller passes in.
//! * [`prefetch`]: a thread that fills the next host batches while the net computes.
//! * [`convert`] and [`mean`]: upstream's `convert_mnist_data`, `convert_cifar_data`,
//!   `convert_imageset`, `convert_mnist_siamese_data` and `compute_image_mean`, writing LMDBs
//!   or LevelDBs and mean files byte-compatible with the ones upstream's tools write.
//!
//! The data layers themselves live in `src/layers/` (`Data` in `layers/data.rs`).

pub mod cifar_from_mnist;
pub mod convert;
pub mod datum;
pub mod db;
pub mod hdf5;
pub mod imgcodec;
pub mod leveldb;
pub mod lmdb;
pub mod mean;
pub mod prefetch;
pub mod transformer;

pub use convert::{
    convert_cifar, convert_cifar_with, convert_imageset, convert_imageset_with, convert_mnist,
    convert_mnist_siamese, convert_mnist_with, CifarSummary, ImagesetOptions, ImagesetSummary,
    Progress,
};
pub use db::{DbCursor, DbWriter};
pub use leveldb::LevelDbWriter;
pub use lmdb::{Cursor, Lmdb, LmdbWriter};
pub use mean::{compute_image_mean, compute_image_mean_with, ImageMean};
pub use transformer::DataTransformer;

use std::path::{Path, PathBuf};

use crate::proto::ProtoError;

/// The database a converter writes or a tool reads: upstream's `--backend` flag (and
/// `convert_cifar_data`'s third argument), `lmdb` or `leveldb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DbBackend {
    #[default]
    Lmdb,
    LevelDb,
}

impl DbBackend {
    /// The flag's word, as in upstream's folder names (`cifar10_train_lmdb`).
    pub fn name(self) -> &'static str {
        match self {
            DbBackend::Lmdb => "lmdb",
            DbBackend::LevelDb => "leveldb",
        }
    }
}

impl std::str::FromStr for DbBackend {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Self, String> {
        match name {
            "lmdb" => Ok(DbBackend::Lmdb),
            "leveldb" => Ok(DbBackend::LevelDb),
            other => Err(format!(
                "unknown database backend \"{other}\"; use lmdb or leveldb"
            )),
        }
    }
}

/// What can go wrong reading, transforming or writing data. Every variant names the file,
/// database, record or parameter it is about.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An LMDB could not be opened, read or written.
    #[error("LMDB {}: {message}", path.display())]
    Lmdb { path: PathBuf, message: String },
    /// A LevelDB could not be opened, read or written.
    #[error("LevelDB {}: {message}", path.display())]
    LevelDb { path: PathBuf, message: String },
    /// A file could not be read: says what was expected there. (The cause's text is part of
    /// the message, so the cause is not also given as the error's source.)
    #[error("{}: cannot read the {what}: {error}", path.display())]
    Read {
        path: PathBuf,
        what: &'static str,
        error: std::io::Error,
    },
    /// A file or folder could not be written or made: says what it was to be.
    #[error("{}: cannot write the {what}: {error}", path.display())]
    Write {
        path: PathBuf,
        what: &'static str,
        error: std::io::Error,
    },
    /// A dataset file (IDX, CIFAR batch, list file, image) is not what it should be.
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    /// One record of a database (LMDB or LevelDB) cannot be used.
    #[error("{}, record '{key}': {message}", path.display())]
    Record {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// A parameter is missing, out of range, or does not fit the data; the message names the
    /// field (and the file, for a mean file).
    #[error("{0}")]
    Invalid(String),
    /// A binary proto file (a mean file) could not be read or written.
    #[error(transparent)]
    Proto(#[from] ProtoError),
}

impl DataError {
    /// A [`DataError::Invalid`] with this message.
    pub fn invalid(message: impl Into<String>) -> Self {
        DataError::Invalid(message.into())
    }

    /// A [`DataError::Read`] of `path`, where `what` was expected.
    pub fn read(path: &Path, what: &'static str, error: std::io::Error) -> Self {
        DataError::Read {
            path: path.to_path_buf(),
            what,
            error,
        }
    }

    /// A [`DataError::Format`] for `path`.
    pub fn format(path: &Path, message: impl Into<String>) -> Self {
        DataError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// Ties an error about a record's contents ([`DataError::Invalid`]) to the record: the
    /// database and the key. Other variants already name what they are about and pass through.
    pub fn in_record(self, path: &Path, key: &[u8]) -> Self {
        match self {
            DataError::Invalid(message) => DataError::Record {
                path: path.to_path_buf(),
                key: key_string(key),
                message,
            },
            other => other,
        }
    }
}

/// Result of a data operation.
pub type Result<T> = std::result::Result<T, DataError>;

/// A database key as text (keys written by Caffe's tools are ASCII; other bytes are shown
/// lossily).
pub fn key_string(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}
