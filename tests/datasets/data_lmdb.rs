//! LMDB reading and writing: round trips, key order, wrap-around, map growth, a file written
//! by LMDB 0.9 (the version Caffe links), and the errors for sources that are not LMDBs.

use std::path::Path;

use rcaffe::data::{DataError, Lmdb, LmdbWriter};

fn write(path: &Path, records: &[(&str, &[u8])]) {
    let mut writer = LmdbWriter::create(path).unwrap();
    for (k, v) in records {
        writer.put(k.as_bytes(), v.to_vec());
    }
    assert_eq!(writer.finish().unwrap(), records.len() as u64);
}

fn message(e: DataError) -> String {
    e.to_string()
}

#[test]
fn round_trip_in_key_order_with_wrap_around() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    // Put out of order, across two commits; an overwritten key keeps the last value.
    let mut writer = LmdbWriter::create(&path).unwrap();
    writer.put("00000002", b"two".to_vec());
    writer.put("00000000", b"zero".to_vec());
    writer.commit().unwrap();
    assert_eq!(writer.written(), 2);
    writer.put("00000001", b"one".to_vec());
    writer.put("00000000", b"ZERO".to_vec());
    assert_eq!(writer.finish().unwrap(), 4);

    let db = Lmdb::open(&path).unwrap();
    assert_eq!(db.len().unwrap(), 3);
    assert_eq!(db.get(b"00000001").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(db.get(b"00000009").unwrap(), None);

    let mut all = Vec::new();
    db.for_each(|k, v| {
        all.push((k.to_vec(), v.to_vec()));
        Ok(())
    })
    .unwrap();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = [
        ("00000000", &b"ZERO"[..]),
        ("00000001", b"one"),
        ("00000002", b"two"),
    ]
    .iter()
    .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
    .collect();
    assert_eq!(all, expected);

    // The cursor walks in key order and wraps around.
    let mut cursor = db.cursor().unwrap();
    let mut seen = Vec::new();
    let mut wraps = Vec::new();
    for _ in 0..7 {
        seen.push(String::from_utf8(cursor.key().to_vec()).unwrap());
        wraps.push(cursor.next_wrapping().unwrap());
    }
    assert_eq!(
        seen,
        ["00000000", "00000001", "00000002", "00000000", "00000001", "00000002", "00000000"]
    );
    assert_eq!(wraps, [false, false, true, false, false, true, false]);
    assert_eq!(cursor.value(), b"one");

    // advance stops at the end without moving.
    let mut cursor = db.cursor().unwrap();
    assert!(cursor.advance().unwrap());
    assert!(cursor.advance().unwrap());
    assert!(!cursor.advance().unwrap());
    assert_eq!(cursor.key(), b"00000002");
    assert!(cursor.seek_to_first().unwrap());
    assert_eq!(cursor.key(), b"00000000");
}

#[test]
fn keys_compare_as_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    write(
        &path,
        &[("b", b"1"), ("a", b"2"), ("ab", b"3"), ("B", b"4")],
    );
    let db = Lmdb::open(&path).unwrap();
    let mut keys = Vec::new();
    db.for_each(|k, _| {
        keys.push(String::from_utf8(k.to_vec()).unwrap());
        Ok(())
    })
    .unwrap();
    assert_eq!(keys, ["B", "a", "ab", "b"]);
}

#[test]
fn the_map_grows_as_needed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut writer = LmdbWriter::create_with_map_size(&path, 64 * 1024).unwrap();
    let start = writer.map_size();
    let value = vec![7u8; 100_000];
    for i in 0..40 {
        writer.put(format!("{i:05}"), value.clone());
        if i % 10 == 9 {
            writer.commit().unwrap();
        }
    }
    assert!(
        writer.map_size() >= 4 * 1024 * 1024,
        "{} bytes of records need a bigger map than {start}",
        40 * value.len()
    );
    assert_eq!(writer.finish().unwrap(), 40);
    let db = Lmdb::open(&path).unwrap();
    assert_eq!(db.len().unwrap(), 40);
    assert_eq!(db.get(b"00039").unwrap().unwrap(), value);
}

#[test]
fn reads_an_lmdb_written_by_lmdb_0_9() {
    // tests/data/lmdb-0.9.24-small: three Datum records written by LMDB 0.9.24's mdb_load.
    // Copied so that opening it (which creates lock.mdb) leaves the source tree alone.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small");
    std::fs::create_dir(&path).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lmdb-0.9.24-small/data.mdb"),
        path.join("data.mdb"),
    )
    .unwrap();
    let db = Lmdb::open(&path).unwrap();
    assert_eq!(db.len().unwrap(), 3);
    let datum = rcaffe::data::datum::parse_datum(&db.get(b"00000002").unwrap().unwrap()).unwrap();
    assert_eq!((datum.channels(), datum.height(), datum.width()), (1, 2, 2));
    assert_eq!(datum.data.as_deref(), Some(&[0xff, 0xfe, 0xfd, 0xfc][..]));
    assert_eq!(datum.label(), 1);
}

#[test]
fn readers_of_one_path_share_it_and_cursors_cross_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    write(&path, &[("k1", b"a"), ("k2", b"b"), ("k3", b"c")]);
    let first = Lmdb::open(&path).unwrap();
    let second = Lmdb::open(&path).unwrap();
    let mut c1 = first.cursor().unwrap();
    let mut c2 = second.cursor().unwrap();
    c1.next_wrapping().unwrap();
    assert_eq!((c1.key(), c2.key()), (&b"k2"[..], &b"k1"[..]));
    drop(first);
    drop(second);
    // The cursor outlives the handles, and moves to another thread.
    let keys = std::thread::spawn(move || {
        let mut keys = Vec::new();
        for _ in 0..4 {
            keys.push(c2.key().to_vec());
            c2.next_wrapping().unwrap();
        }
        keys
    })
    .join()
    .unwrap();
    assert_eq!(keys, [b"k1", b"k2", b"k3", b"k1"]);
    drop(c1);
    // Reopening after every handle is gone works.
    assert_eq!(Lmdb::open(&path).unwrap().len().unwrap(), 3);
}

#[test]
fn sources_that_are_not_lmdbs_are_named() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing_lmdb");
    let e = message(Lmdb::open(&missing).unwrap_err());
    assert!(e.contains("missing_lmdb") && e.contains("no such"), "{e}");

    let file = dir.path().join("a_file");
    std::fs::write(&file, b"hello").unwrap();
    let e = message(Lmdb::open(&file).unwrap_err());
    assert!(e.contains("a_file") && e.contains("is a file"), "{e}");

    let folder = dir.path().join("plain_folder");
    std::fs::create_dir(&folder).unwrap();
    let e = message(Lmdb::open(&folder).unwrap_err());
    assert!(
        e.contains("plain_folder") && e.contains("not an LMDB"),
        "{e}"
    );

    let garbage = dir.path().join("garbage_lmdb");
    std::fs::create_dir(&garbage).unwrap();
    std::fs::write(garbage.join("data.mdb"), vec![0xabu8; 16384]).unwrap();
    let e = message(Lmdb::open(&garbage).unwrap_err());
    assert!(
        e.contains("garbage_lmdb") && e.contains("not an LMDB"),
        "{e}"
    );

    let leveldb = dir.path().join("some_leveldb");
    std::fs::create_dir(&leveldb).unwrap();
    std::fs::write(leveldb.join("CURRENT"), b"MANIFEST-000002\n").unwrap();
    let e = message(Lmdb::open(&leveldb).unwrap_err());
    assert!(e.contains("some_leveldb") && e.contains("LevelDB"), "{e}");
    assert!(e.contains("backend LEVELDB"), "says how to read it: {e}");

    let empty = dir.path().join("empty_lmdb");
    LmdbWriter::create(&empty).unwrap().finish().unwrap();
    let db = Lmdb::open(&empty).unwrap();
    assert_eq!(db.len().unwrap(), 0);
    let e = message(db.cursor().unwrap_err());
    assert!(e.contains("empty_lmdb") && e.contains("empty"), "{e}");
}

#[test]
fn writer_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    write(&path, &[("k", b"v")]);
    let e = message(LmdbWriter::create(&path).unwrap_err());
    assert!(e.contains("already exists"), "{e}");

    let e = message(LmdbWriter::create(&dir.path().join("no/such/parent")).unwrap_err());
    assert!(e.contains("no/such/parent"), "{e}");

    let long = dir.path().join("long_keys");
    let mut writer = LmdbWriter::create(&long).unwrap();
    writer.put(vec![b'x'; 600], b"v".to_vec());
    let e = message(writer.commit().unwrap_err());
    assert!(e.contains("511") && e.contains("long_keys"), "{e}");
}
