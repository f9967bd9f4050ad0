//! LMDB datasets, read and written the way Caffe's `db::LMDB` does
//! (upstream: src/caffe/util/db_lmdb.cpp).
//!
//! An LMDB is a folder holding `data.mdb` (and `lock.mdb`). Caffe keeps its records in the
//! environment's one unnamed database, keys compared as bytes (`%08d`-style keys therefore
//! sort numerically), and opens it for reading with `MDB_RDONLY | MDB_NOTLS`: no write lock is
//! taken, any number of readers (in this process or others) can walk it at once, and a read
//! transaction is not tied to the thread that opened it, so a [`Cursor`] can move to a
//! prefetch thread. Where the folder cannot hold a lock file (permission denied) the open is
//! retried without locking, as upstream does when built with `ALLOW_LMDB_NOLOCK`.
//!
//! LMDB refuses to open one environment twice in a process, so readers of the same path share
//! one handle (a TRAIN and a TEST net reading the same source, say); each [`Cursor`] has its own
//! read transaction.
//!
//! Writing goes through [`LmdbWriter`]: puts are buffered and written in one transaction per
//! [`LmdbWriter::commit`], and a full memory map is doubled and the transaction replayed, as
//! upstream's `LMDBTransaction::Commit` does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, MdbError, RoTxn, WithoutTls};

use super::{key_string, DataError, Result};

type RawDb = Database<'static, Bytes, Bytes>;

/// An open environment and its unnamed database, shared by every reader of one path.
struct Shared {
    env: Env<WithoutTls>,
    db: RawDb,
    path: PathBuf,
}

/// Readers open in this process, by canonical path.
static READERS: LazyLock<Mutex<HashMap<PathBuf, Weak<Shared>>>> = LazyLock::new(Default::default);

/// An LMDB opened for reading.
#[derive(Clone)]
pub struct Lmdb {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Lmdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lmdb({})", self.shared.path.display())
    }
}

fn lmdb_error(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Lmdb {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn heed_error(path: &Path, what: &str, error: heed::Error) -> DataError {
    lmdb_error(path, format!("{what}: {error}"))
}

/// Checks that `path` is a folder holding `data.mdb`, with an error that says what it is
/// instead.
fn check_lmdb_folder(path: &Path) -> Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(lmdb_error(path, "no such file or folder"));
        }
        Err(e) => return Err(lmdb_error(path, format!("cannot be read: {e}"))),
    };
    if !meta.is_dir() {
        return Err(lmdb_error(
            path,
            "is a file, not an LMDB (an LMDB is a folder holding data.mdb)",
        ));
    }
    if super::leveldb::looks_like_leveldb(path) {
        return Err(lmdb_error(
            path,
            "is a LevelDB, not an LMDB: read it with backend LEVELDB",
        ));
    }
    if !path.join("data.mdb").is_file() {
        return Err(lmdb_error(
            path,
            "is not an LMDB: the folder holds no data.mdb",
        ));
    }
    Ok(())
}

fn open_env_readonly(path: &Path) -> std::result::Result<Env<WithoutTls>, heed::Error> {
    let open = |flags: EnvFlags| {
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        // SAFETY: READ_ONLY (and NO_LOCK on the fallback) are valid flags for an existing
        // environment; heed's remaining safety requirement is that the map is not modified
        // behind LMDB's back by this process, which we never do.
        unsafe {
            options.flags(flags);
            options.open(path)
        }
    };
    match open(EnvFlags::READ_ONLY) {
        Err(heed::Error::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            log::warn!("Permission denied. Trying with MDB_NOLOCK ...");
            open(EnvFlags::READ_ONLY | EnvFlags::NO_LOCK)
        }
        other => other,
    }
}

impl Lmdb {
    /// Opens the LMDB at `path` for reading, and logs upstream's `Opened lmdb <path>`.
    ///
    /// Errors name the path: it does not exist, is a file, is a LevelDB, holds no `data.mdb`,
    /// or LMDB refuses it (not an LMDB, a version mismatch).
    pub fn open(path: &Path) -> Result<Lmdb> {
        check_lmdb_folder(path)?;
        let canonical = path
            .canonicalize()
            .map_err(|e| lmdb_error(path, format!("cannot be read: {e}")))?;
        // A reader that is being dropped by another thread can still be registered with LMDB
        // for a moment after its handle is gone: retry briefly before calling it a conflict.
        let mut attempts = 0;
        let shared = loop {
            let mut readers = READERS.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(shared) = readers.get(&canonical).and_then(Weak::upgrade) {
                break shared;
            }
            match open_env_readonly(&canonical) {
                Ok(env) => {
                    let db = open_unnamed(&env, path)?;
                    let shared = Arc::new(Shared {
                        env,
                        db,
                        path: path.to_path_buf(),
                    });
                    readers.retain(|_, weak| weak.strong_count() > 0);
                    readers.insert(canonical.clone(), Arc::downgrade(&shared));
                    break shared;
                }
                Err(heed::Error::EnvAlreadyOpened) if attempts < 200 => {
                    drop(readers);
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(heed::Error::EnvAlreadyOpened) => {
                    return Err(lmdb_error(
                        path,
                        "is open for writing in this process; finish writing it first",
                    ))
                }
                Err(heed::Error::Mdb(MdbError::Invalid)) => {
                    return Err(lmdb_error(
                        path,
                        "is not an LMDB: data.mdb is not an LMDB data file",
                    ))
                }
                Err(heed::Error::Mdb(MdbError::VersionMismatch)) => {
                    return Err(lmdb_error(
                        path,
                        "was written by an incompatible LMDB version",
                    ))
                }
                Err(e) => return Err(heed_error(path, "cannot be opened", e)),
            }
        };
        log::info!("Opened lmdb {}", path.display());
        Ok(Lmdb { shared })
    }

    /// The path the LMDB was opened with.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The number of records.
    pub fn len(&self) -> Result<u64> {
        let txn = self.read_txn()?;
        self.shared
            .db
            .len(&txn)
            .map_err(|e| heed_error(self.path(), "cannot count the records", e))
    }

    /// Whether the LMDB holds no record.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The value stored under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let txn = self.read_txn()?;
        self.shared
            .db
            .get(&txn, key)
            .map(|v| v.map(<[u8]>::to_vec))
            .map_err(|e| {
                heed_error(
                    self.path(),
                    &format!("cannot read '{}'", key_string(key)),
                    e,
                )
            })
    }

    /// Calls `f(key, value)` for every record in key order, once; stops at the first error `f`
    /// returns.
    pub fn for_each<F>(&self, mut f: F) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> Result<()>,
    {
        let txn = self.read_txn()?;
        let iter = self
            .shared
            .db
            .iter(&txn)
            .map_err(|e| heed_error(self.path(), "cannot iterate", e))?;
        for entry in iter {
            let (key, value) =
                entry.map_err(|e| heed_error(self.path(), "cannot read a record", e))?;
            f(key, value)?;
        }
        Ok(())
    }

    /// A cursor on the first record. Fails, naming the path, when the LMDB is empty.
    pub fn cursor(&self) -> Result<Cursor> {
        let txn = self
            .shared
            .env
            .clone()
            .static_read_txn()
            .map_err(|e| heed_error(self.path(), "cannot start a read transaction", e))?;
        let mut cursor = Cursor {
            txn,
            shared: self.shared.clone(),
            key: Vec::new(),
            value: Vec::new(),
        };
        if !cursor.seek_to_first()? {
            return Err(lmdb_error(self.path(), "is empty: it holds no record"));
        }
        Ok(cursor)
    }

    fn read_txn(&self) -> Result<RoTxn<'_, WithoutTls>> {
        self.shared
            .env
            .read_txn()
            .map_err(|e| heed_error(self.path(), "cannot start a read transaction", e))
    }
}

fn open_unnamed(env: &Env<WithoutTls>, path: &Path) -> Result<RawDb> {
    let txn = env
        .read_txn()
        .map_err(|e| heed_error(path, "cannot start a read transaction", e))?;
    let db = env
        .open_databases_and_commit(txn, |opener, txn| {
            opener
                .open_database::<Bytes, Bytes>(txn, None)
                .map(CommitOrAbort::<_, ()>::Commit)
        })
        .map_err(|e: heed::Error| heed_error(path, "cannot open its database", e))?
        .unwrap_commit();
    db.ok_or_else(|| lmdb_error(path, "is not an LMDB: it has no main database"))
}

/// A position in an LMDB, walking its records in key order (upstream's `LMDBCursor`).
///
/// It owns a read transaction, so it sees the LMDB as it was when the cursor was made, and it
/// can be moved to another thread. The current key and value are copied out of the map.
pub struct Cursor {
    // Declared before `shared` so the transaction (which holds the environment) ends first.
    txn: RoTxn<'static, WithoutTls>,
    shared: Arc<Shared>,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl Cursor {
    /// The LMDB's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
    /// The current record's key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
    /// The current record's value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// Moves to the first record; false if there is none.
    pub fn seek_to_first(&mut self) -> Result<bool> {
        let first = self
            .shared
            .db
            .first(&self.txn)
            .map_err(|e| heed_error(&self.shared.path, "cannot read the first record", e))?;
        Ok(store(&mut self.key, &mut self.value, first))
    }

    /// Moves to the next record; false (and the position unchanged) at the end.
    pub fn advance(&mut self) -> Result<bool> {
        let next = self
            .shared
            .db
            .get_greater_than(&self.txn, &self.key)
            .map_err(|e| {
                heed_error(
                    &self.shared.path,
                    &format!("cannot read the record after '{}'", key_string(&self.key)),
                    e,
                )
            })?;
        Ok(store(&mut self.key, &mut self.value, next))
    }

    /// Moves to the next record, or back to the first after the last (upstream's
    /// `DataLayer::Next`). Returns true when it wrapped around.
    pub fn next_wrapping(&mut self) -> Result<bool> {
        if self.advance()? {
            return Ok(false);
        }
        if !self.seek_to_first()? {
            return Err(lmdb_error(
                &self.shared.path,
                "is empty: it holds no record",
            ));
        }
        Ok(true)
    }
}

/// Copies a record into the cursor's key and value; false when there is none.
fn store(key: &mut Vec<u8>, value: &mut Vec<u8>, entry: Option<(&[u8], &[u8])>) -> bool {
    match entry {
        Some((k, v)) => {
            key.clear();
            key.extend_from_slice(k);
            value.clear();
            value.extend_from_slice(v);
            true
        }
        None => false,
    }
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Cursor({} at '{}')",
            self.shared.path.display(),
            key_string(&self.key)
        )
    }
}

/// The map size a new LMDB starts with; it doubles whenever a commit finds it full.
pub const INITIAL_MAP_SIZE: usize = 64 << 20;

/// Writes a new LMDB: one unnamed database, puts buffered until [`LmdbWriter::commit`]
/// (upstream's `LMDBTransaction`).
pub struct LmdbWriter {
    env: Option<Env<WithoutTls>>,
    db: RawDb,
    path: PathBuf,
    map_size: usize,
    pending: Vec<(Vec<u8>, Vec<u8>)>,
    written: u64,
}

impl LmdbWriter {
    /// Creates the LMDB folder `path` (which must not exist yet; its parent must) with an
    /// initial map of [`INITIAL_MAP_SIZE`].
    pub fn create(path: &Path) -> Result<LmdbWriter> {
        Self::create_with_map_size(path, INITIAL_MAP_SIZE)
    }

    /// As [`LmdbWriter::create`], with an initial map of `map_size` bytes (rounded up to
    /// the page size).
    pub fn create_with_map_size(path: &Path, map_size: usize) -> Result<LmdbWriter> {
        if path.exists() {
            return Err(lmdb_error(
                path,
                "already exists: remove it or choose another output path",
            ));
        }
        std::fs::create_dir(path)
            .map_err(|e| lmdb_error(path, format!("cannot create the folder: {e}")))?;
        let page = page_size();
        let map_size = map_size.max(page).div_ceil(page) * page;
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(map_size);
        // SAFETY: a fresh folder this writer created; only this writer maps it.
        let env =
            unsafe { options.open(path) }.map_err(|e| heed_error(path, "cannot be created", e))?;
        let txn = env
            .write_txn()
            .map_err(|e| heed_error(path, "cannot start a write transaction", e))?;
        let db = env
            .create_databases_and_commit(txn, |opener, txn| {
                opener
                    .create_database::<Bytes, Bytes>(txn, None)
                    .map(CommitOrAbort::<_, ()>::Commit)
            })
            .map_err(|e: heed::Error| heed_error(path, "cannot create its database", e))?
            .unwrap_commit();
        Ok(LmdbWriter {
            env: Some(env),
            db,
            path: path.to_path_buf(),
            map_size,
            pending: Vec::new(),
            written: 0,
        })
    }

    /// The LMDB's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current map size in bytes.
    pub fn map_size(&self) -> usize {
        self.map_size
    }

    /// Records written by the commits so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Buffers one record for the next commit (an existing key is overwritten, as upstream's
    /// `mdb_put` without flags does).
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.pending.push((key.into(), value.into()));
    }

    /// Writes the buffered records in one transaction, doubling the map as often as needed.
    pub fn commit(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        loop {
            match self.try_commit() {
                Ok(()) => break,
                Err(heed::Error::Mdb(MdbError::MapFull)) => self.double_map_size()?,
                Err(heed::Error::Mdb(MdbError::BadValSize)) => {
                    let key = self
                        .pending
                        .iter()
                        .find(|(k, _)| k.is_empty() || k.len() > 511)
                        .map(|(k, _)| key_string(k))
                        .unwrap_or_default();
                    return Err(lmdb_error(
                        &self.path,
                        format!(
                            "key '{key}' is empty or longer than LMDB's 511 bytes: cannot be \
                             written"
                        ),
                    ));
                }
                Err(e) => return Err(heed_error(&self.path, "cannot write", e)),
            }
        }
        self.written += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Commits what is buffered and closes the LMDB; returns the number of records written.
    pub fn finish(mut self) -> Result<u64> {
        self.commit()?;
        if let Some(env) = self.env.take() {
            env.force_sync()
                .map_err(|e| heed_error(&self.path, "cannot be flushed to disk", e))?;
        }
        // LMDB creates its files private to the owner; make them readable by others, as
        // upstream's mode 0664 under the usual umask 022 leaves them.
        #[cfg(unix)]
        for name in ["data.mdb", "lock.mdb"] {
            use std::os::unix::fs::PermissionsExt;
            let file = self.path.join(name);
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).map_err(
                    |e| lmdb_error(&self.path, format!("cannot set {name}'s mode: {e}")),
                )?;
            }
        }
        Ok(self.written)
    }

    fn env(&self) -> &Env<WithoutTls> {
        self.env
            .as_ref()
            .expect("the environment lives until finish")
    }

    fn try_commit(&self) -> std::result::Result<(), heed::Error> {
        let mut txn = self.env().write_txn()?;
        for (key, value) in &self.pending {
            self.db.put(&mut txn, key, value)?;
        }
        txn.commit()
    }

    fn double_map_size(&mut self) -> Result<()> {
        let new_size = self
            .map_size
            .checked_mul(2)
            .ok_or_else(|| lmdb_error(&self.path, "map size overflow"))?;
        log::debug!("Doubling LMDB map size to {}MB ...", new_size >> 20);
        // SAFETY: every transaction of this environment has ended (try_commit's transaction is
        // committed or dropped before it returns) and only this writer uses it.
        unsafe { self.env().resize(new_size) }
            .map_err(|e| heed_error(&self.path, "cannot grow its map", e))?;
        self.map_size = new_size;
        Ok(())
    }
}

impl std::fmt::Debug for LmdbWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LmdbWriter({})", self.path.display())
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}
