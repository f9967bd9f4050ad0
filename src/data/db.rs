//! The two databases behind one cursor and one writer (upstream: src/caffe/util/db.cpp's
//! `GetDB`): [`DbCursor`] walks an LMDB or a LevelDB in key order with wrap-around, and
//! [`DbWriter`] writes either, so the Data layer, the converters and `compute_image_mean`
//! each have one way to read or write whichever the user names.

use std::path::Path;

use super::leveldb::{self, LevelDbWriter};
use super::lmdb::{self, Lmdb, LmdbWriter};
use super::{DbBackend, Result};

impl DbBackend {
    /// The database at `path` when none is named: a LevelDB when the folder looks like one
    /// (Caffe's default backend is LEVELDB), else an LMDB.
    pub fn detect(path: &Path) -> DbBackend {
        if leveldb::looks_like_leveldb(path) {
            DbBackend::LevelDb
        } else {
            DbBackend::Lmdb
        }
    }
}

/// A position in a database, on its first record when opened.
#[derive(Debug)]
pub enum DbCursor {
    Lmdb(lmdb::Cursor),
    LevelDb(leveldb::Cursor),
}

impl DbCursor {
    /// Opens the `backend` database at `path` on its first record; fails, naming the path,
    /// when it cannot be opened or is empty.
    pub fn open(path: &Path, backend: DbBackend) -> Result<DbCursor> {
        Ok(match backend {
            DbBackend::Lmdb => DbCursor::Lmdb(Lmdb::open(path)?.cursor()?),
            DbBackend::LevelDb => DbCursor::LevelDb(leveldb::Cursor::open(path)?),
        })
    }

    /// The database's path.
    pub fn path(&self) -> &Path {
        match self {
            DbCursor::Lmdb(c) => c.path(),
            DbCursor::LevelDb(c) => c.path(),
        }
    }

    /// The current record's key.
    pub fn key(&self) -> &[u8] {
        match self {
            DbCursor::Lmdb(c) => c.key(),
            DbCursor::LevelDb(c) => c.key(),
        }
    }

    /// The current record's value.
    pub fn value(&self) -> &[u8] {
        match self {
            DbCursor::Lmdb(c) => c.value(),
            DbCursor::LevelDb(c) => c.value(),
        }
    }

    /// Moves to the next record, or back to the first after the last (upstream's
    /// `DataLayer::Next`). Returns true when it wrapped around.
    pub fn next_wrapping(&mut self) -> Result<bool> {
        match self {
            DbCursor::Lmdb(c) => c.next_wrapping(),
            DbCursor::LevelDb(c) => c.next_wrapping(),
        }
    }
}

/// The number of records in the `backend` database at `path`.
pub fn count_records(path: &Path, backend: DbBackend) -> Result<u64> {
    match backend {
        DbBackend::Lmdb => Lmdb::open(path)?.len(),
        DbBackend::LevelDb => leveldb::count_records(path),
    }
}

/// Writes a new database: puts are buffered until [`DbWriter::commit`] (upstream's
/// `Transaction`).
#[derive(Debug)]
pub enum DbWriter {
    Lmdb(LmdbWriter),
    /// Boxed: the LevelDB handle is several times the LMDB writer's size.
    LevelDb(Box<LevelDbWriter>),
}

impl DbWriter {
    /// Creates the `backend` database folder `path`, which must not exist yet.
    pub fn create(path: &Path, backend: DbBackend) -> Result<DbWriter> {
        Ok(match backend {
            DbBackend::Lmdb => DbWriter::Lmdb(LmdbWriter::create(path)?),
            DbBackend::LevelDb => DbWriter::LevelDb(Box::new(LevelDbWriter::create(path)?)),
        })
    }

    /// Buffers one record for the next commit.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        match self {
            DbWriter::Lmdb(w) => w.put(key, value),
            DbWriter::LevelDb(w) => w.put(&key.into(), &value.into()),
        }
    }

    /// Writes the buffered records.
    pub fn commit(&mut self) -> Result<()> {
        match self {
            DbWriter::Lmdb(w) => w.commit(),
            DbWriter::LevelDb(w) => w.commit(),
        }
    }

    /// Commits what is buffered and closes the database; returns the records written.
    pub fn finish(self) -> Result<u64> {
        match self {
            DbWriter::Lmdb(w) => w.finish(),
            DbWriter::LevelDb(w) => w.finish(),
        }
    }
}
