//! LevelDB datasets, read and written the way Caffe's `db::LevelDB` does
//! (upstream: src/caffe/util/db_leveldb.cpp), through the pure-Rust `rusty-leveldb`.
//!
//! A LevelDB is a folder holding a `CURRENT` file, a `MANIFEST-*`, table files (`*.ldb`, or
//! `*.sst` from older writers) and a write-ahead log (`*.log`). Its on-disk format is Google's:
//! what C++ leveldb writes (Caffe's tools, plyvel) reads here, snappy-compressed blocks
//! included, and what [`LevelDbWriter`] writes reads in C++ leveldb. (The first direction is
//! tested on tests/data/leveldb-cpp/, written by C++ leveldb 1.23; the second was checked by hand
//! with C++ leveldb 1.23 through python3-plyvel, see the README.) Records are walked in bytewise
//! key order, as upstream's `LevelDBCursor` walks them.
//!
//! Opening a LevelDB takes its `LOCK` file and may rewrite its log into a table, so, as in
//! upstream, the folder must be writable and one reader at a time holds it.
//!
//! The library's database handle is confined to the thread that opened it, so a [`Cursor`]
//! keeps the database on a reader thread of its own, which streams the records, in order and
//! starting again at the end, a few ahead of the cursor. That leaves the cursor free to move
//! to the Data layer's prefetch thread, like the LMDB cursor.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use rusty_leveldb::compressor::{CompressorId, SnappyCompressor};
use rusty_leveldb::{LdbIterator, Options, StatusCode, WriteBatch, DB};

use super::{DataError, Result};

fn leveldb_error(path: &Path, message: impl Into<String>) -> DataError {
    DataError::LevelDb {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Whether `path` looks like a LevelDB folder (it has LevelDB's `CURRENT` file and no
/// `data.mdb`).
pub fn looks_like_leveldb(path: &Path) -> bool {
    path.join("CURRENT").is_file() && !path.join("data.mdb").exists()
}

/// Upstream's options for its datasets (`LevelDB::Open`): 64 KiB blocks, a 256 MiB write
/// buffer, at most 100 open files; and C++ leveldb's default snappy compression for blocks
/// written.
fn caffe_options() -> Options {
    Options {
        block_size: 65536,
        write_buffer_size: 268_435_456,
        max_open_files: 100,
        compressor: SnappyCompressor::ID,
        ..Options::default()
    }
}

/// Opens the LevelDB at `path` for reading. The library would create a missing folder, so
/// the folder is checked first.
fn open_for_reading(path: &Path) -> Result<DB> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(leveldb_error(
                path,
                "is a file, not a LevelDB (a LevelDB is a folder holding CURRENT)",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(leveldb_error(path, "no such file or folder"))
        }
        Err(e) => return Err(leveldb_error(path, format!("cannot be read: {e}"))),
    }
    if !path.join("CURRENT").is_file() {
        return Err(leveldb_error(
            path,
            "is not a LevelDB: the folder holds no CURRENT file",
        ));
    }
    let options = Options {
        create_if_missing: false,
        ..caffe_options()
    };
    DB::open(path, options).map_err(|e| match e.code {
        StatusCode::LockError => leveldb_error(
            path,
            "is held by another reader: a LevelDB is read by one at a time (its LOCK file), as \
             in upstream; give each reader its own copy or use an LMDB",
        ),
        _ => leveldb_error(path, format!("cannot be opened: {e}")),
    })
}

/// One record as the reader thread sends it; `first` marks the first record of a pass.
struct Record {
    key: Vec<u8>,
    value: Vec<u8>,
    first: bool,
}

/// Records the reader thread keeps ready ahead of the cursor.
const READ_AHEAD: usize = 16;

/// A position in a LevelDB, walking its records in key order (upstream's `LevelDBCursor`).
pub struct Cursor {
    path: PathBuf,
    /// The reader thread's records; replaced by a disconnected receiver while dropping, so
    /// that the reader stops before it is joined.
    records: Receiver<Result<Record>>,
    reader: Option<JoinHandle<()>>,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl Cursor {
    /// Opens the LevelDB at `path` on a reader thread and moves to its first record; logs
    /// upstream's `Opened leveldb <path>`. Fails, naming the path, when it is missing, not a
    /// LevelDB, held by another reader, or empty.
    pub fn open(path: &Path) -> Result<Cursor> {
        let (sender, records) = sync_channel(READ_AHEAD);
        let thread_path = path.to_path_buf();
        let reader = std::thread::Builder::new()
            .name("leveldb reader".into())
            .spawn(move || stream_records(&thread_path, &sender))
            .map_err(|e| leveldb_error(path, format!("cannot start its reader thread: {e}")))?;
        let mut cursor = Cursor {
            path: path.to_path_buf(),
            records,
            reader: Some(reader),
            key: Vec::new(),
            value: Vec::new(),
        };
        cursor.receive()?;
        log::info!("Opened leveldb {}", path.display());
        Ok(cursor)
    }

    /// The LevelDB's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The current record's key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
    /// The current record's value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// Moves to the next record, or back to the first after the last. Returns true when it
    /// wrapped around.
    pub fn next_wrapping(&mut self) -> Result<bool> {
        self.receive()
    }

    /// Takes the reader's next record; true when it starts a pass.
    fn receive(&mut self) -> Result<bool> {
        let record = self
            .records
            .recv()
            .map_err(|_| leveldb_error(&self.path, "its reader thread stopped"))??;
        self.key = record.key;
        self.value = record.value;
        Ok(record.first)
    }
}

/// The reader thread: opens the LevelDB and sends its records in key order, pass after pass,
/// until the cursor hangs up. An error (the open's, an empty database) is sent and ends it.
fn stream_records(path: &Path, sender: &SyncSender<Result<Record>>) {
    let send_error = |e| {
        let _ = sender.send(Err(e));
    };
    let mut db = match open_for_reading(path) {
        Ok(db) => db,
        Err(e) => return send_error(e),
    };
    loop {
        let mut records = match db.new_iter() {
            Ok(iter) => iter,
            Err(e) => return send_error(leveldb_error(path, format!("cannot iterate: {e}"))),
        };
        let mut first = true;
        while records.advance() {
            let Some((key, value)) = records.current() else {
                break;
            };
            let record = Record {
                key: key.to_vec(),
                value: value.to_vec(),
                first,
            };
            if sender.send(Ok(record)).is_err() {
                return;
            }
            first = false;
        }
        if first {
            return send_error(leveldb_error(path, "is empty: it holds no record"));
        }
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        // Hanging up stops the reader at its next send; joining it closes the database and
        // releases its lock before the cursor is gone.
        let (_, disconnected) = sync_channel(0);
        drop(std::mem::replace(&mut self.records, disconnected));
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LevelDB cursor({} at '{}')",
            self.path.display(),
            super::key_string(&self.key)
        )
    }
}

/// The number of records in the LevelDB at `path` (a walk over all of them: LevelDB keeps no
/// count).
pub fn count_records(path: &Path) -> Result<u64> {
    let mut db = open_for_reading(path)?;
    let mut records = db
        .new_iter()
        .map_err(|e| leveldb_error(path, format!("cannot iterate: {e}")))?;
    let mut count = 0;
    while records.advance() {
        count += 1;
    }
    Ok(count)
}

/// Writes a new LevelDB with upstream's options: puts are buffered in a write batch until
/// [`LevelDbWriter::commit`] (upstream's `LevelDBTransaction`).
pub struct LevelDbWriter {
    db: DB,
    path: PathBuf,
    batch: WriteBatch,
    pending: u64,
    written: u64,
    /// The greatest key written, the end of the range compacted at the finish.
    largest_key: Vec<u8>,
}

impl LevelDbWriter {
    /// Creates the LevelDB folder `path` (which must not exist yet; its parent must).
    pub fn create(path: &Path) -> Result<LevelDbWriter> {
        if path.exists() {
            return Err(leveldb_error(
                path,
                "already exists: remove it or choose another output path",
            ));
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if parent.is_some_and(|p| !p.is_dir()) {
            return Err(leveldb_error(
                path,
                "cannot be created: no such parent folder",
            ));
        }
        // Not `error_if_exists`: the library makes the folder (for its info log) before it
        // checks, so it always fires; the check above stands for it.
        let options = Options {
            create_if_missing: true,
            ..caffe_options()
        };
        let db = DB::open(path, options)
            .map_err(|e| leveldb_error(path, format!("cannot be created: {e}")))?;
        Ok(LevelDbWriter {
            db,
            path: path.to_path_buf(),
            batch: WriteBatch::default(),
            pending: 0,
            written: 0,
            largest_key: Vec::new(),
        })
    }

    /// The LevelDB's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records written by the commits so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Buffers one record for the next commit (an existing key is overwritten).
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.batch.put(key, value);
        self.pending += 1;
        if key > self.largest_key.as_slice() {
            self.largest_key = key.to_vec();
        }
    }

    /// Writes the buffered records as one batch.
    pub fn commit(&mut self) -> Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.db
            .write(batch, false)
            .map_err(|e| leveldb_error(&self.path, format!("cannot write: {e}")))?;
        self.written += self.pending;
        self.pending = 0;
        Ok(())
    }

    /// Commits what is buffered, moves the records from the log into table files, and closes
    /// the LevelDB; returns the number of records written.
    pub fn finish(mut self) -> Result<u64> {
        self.commit()?;
        // C++ leveldb would replay the log at the next open; compacting now leaves a settled
        // database that readers need not rewrite.
        let largest = std::mem::take(&mut self.largest_key);
        self.db
            .compact_range(b"", &largest)
            .and_then(|()| self.db.close())
            .map_err(|e| leveldb_error(&self.path, format!("cannot be flushed to disk: {e}")))?;
        Ok(self.written)
    }
}

impl std::fmt::Debug for LevelDbWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LevelDbWriter({})", self.path.display())
    }
}
