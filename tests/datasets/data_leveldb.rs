//! LevelDB: a database written by Google's C++ leveldb (tests/data/leveldb-cpp/, snappy tables
//! and a log) read record for record; the converters (MNIST, CIFAR-10, image lists) and
//! compute_image_mean on LevelDB giving what they give on LMDB; convert-mnist-siamese's pairs; and upstream's siamese example
//! training, unchanged, on LevelDB pairs from a folder laid out like upstream's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcaffe::data::convert::read_maybe_gzip;
use rcaffe::data::datum::parse_datum;
use rcaffe::data::db::count_records;
use rcaffe::data::imgcodec::{encode_image, Image};
use rcaffe::data::{
    compute_image_mean, compute_image_mean_with, convert_cifar_with, convert_imageset,
    convert_mnist, convert_mnist_siamese, convert_mnist_with, DbBackend, DbCursor, ImagesetOptions,
    Progress,
};

fn bundled(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every record of the database at `path`, in key order.
fn records(path: &Path, backend: DbBackend) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut cursor = DbCursor::open(path, backend).unwrap();
    let mut all = Vec::new();
    loop {
        all.push((cursor.key().to_vec(), cursor.value().to_vec()));
        if cursor.next_wrapping().unwrap() {
            return all;
        }
    }
}

/// Copies the files of folder `from` into a new folder `to`.
fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The MNIST-format images and labels of `part` ("train" or "t10k") of the bundled set.
fn mnist_files(part: &str) -> (PathBuf, PathBuf) {
    let dir = bundled("data/fashion-mnist-mini");
    (
        dir.join(format!("{part}-images-idx3-ubyte.gz")),
        dir.join(format!("{part}-labels-idx1-ubyte.gz")),
    )
}

#[test]
fn a_leveldb_written_by_cpp_leveldb_reads_record_for_record() {
    // Opening a LevelDB rewrites its log: read a copy.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fmnist8");
    copy_folder(&bundled("tests/data/leveldb-cpp/fmnist8"), &db);
    let (images, labels) = mnist_files("train");
    let images = read_maybe_gzip(&images, "images").unwrap();
    let labels = read_maybe_gzip(&labels, "labels").unwrap();

    let all = records(&db, DbBackend::LevelDb);
    assert_eq!(all.len(), 8, "6 records in a snappy table, 2 in the log");
    for (i, (key, value)) in all.iter().enumerate() {
        assert_eq!(key, format!("{i:08}").as_bytes());
        let datum = parse_datum(value).unwrap();
        assert_eq!(
            (datum.channels(), datum.height(), datum.width()),
            (1, 28, 28)
        );
        assert_eq!(
            datum.data(),
            &images[16 + i * 784..16 + (i + 1) * 784],
            "{i}"
        );
        assert_eq!(datum.label(), i32::from(labels[8 + i]), "{i}");
    }
    // The folder is found to be a LevelDB when no backend is named.
    assert_eq!(DbBackend::detect(&db), DbBackend::LevelDb);
    assert_eq!(count_records(&db, DbBackend::LevelDb).unwrap(), 8);
}

#[test]
fn converters_and_the_mean_give_on_leveldb_what_they_give_on_lmdb() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = mnist_files("t10k");
    let lmdb = dir.path().join("test_lmdb");
    let leveldb = dir.path().join("test_leveldb");
    convert_mnist(&images, &labels, &lmdb).unwrap();
    let mut done = 0;
    let written = convert_mnist_with(&images, &labels, &leveldb, DbBackend::LevelDb, &mut |p| {
        done = p.done
    })
    .unwrap();
    assert_eq!((written, done), (1000, 1000));
    assert!(leveldb.join("CURRENT").is_file() && !leveldb.join("data.mdb").exists());
    assert_eq!(
        records(&leveldb, DbBackend::LevelDb),
        records(&lmdb, DbBackend::Lmdb)
    );

    let mean_lmdb = compute_image_mean(&lmdb, None).unwrap();
    let mean_leveldb =
        compute_image_mean_with(&leveldb, DbBackend::LevelDb, None, &mut |_| {}).unwrap();
    assert_eq!(mean_leveldb, mean_lmdb);
    assert_eq!(mean_leveldb.count, 1000);

    // A second writer to the same path is refused, naming it.
    let e = convert_mnist_with(&images, &labels, &leveldb, DbBackend::LevelDb, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test_leveldb") && e.contains("already exists"),
        "{e}"
    );
}

#[test]
fn cifar_and_imageset_write_leveldb_as_they_write_lmdb() {
    let dir = tempfile::tempdir().unwrap();
    let cifar = bundled("data/fashion-cifar-mini");
    let noop = &mut |_: Progress<'_>| {};
    let lmdb = convert_cifar_with(&cifar, &dir.path().join("l"), DbBackend::Lmdb, noop).unwrap();
    let leveldb =
        convert_cifar_with(&cifar, &dir.path().join("v"), DbBackend::LevelDb, noop).unwrap();
    // Upstream names the folders after the backend: cifar10_train_leveldb.
    assert_eq!(leveldb.train_db, dir.path().join("v/cifar10_train_leveldb"));
    assert_eq!(leveldb.test_db, dir.path().join("v/cifar10_test_leveldb"));
    assert_eq!((leveldb.train, leveldb.test), (lmdb.train, lmdb.test));
    for (ours, theirs) in [
        (&leveldb.train_db, &lmdb.train_db),
        (&leveldb.test_db, &lmdb.test_db),
    ] {
        assert_eq!(
            records(ours, DbBackend::LevelDb),
            records(theirs, DbBackend::Lmdb)
        );
    }

    let root = dir.path().join("images");
    std::fs::create_dir(&root).unwrap();
    let mut list = String::new();
    for i in 0..3u8 {
        let image = Image {
            height: 2,
            width: 3,
            channels: 3,
            data: (0..18).map(|j| 18 * i + j).collect(),
        };
        let png = encode_image(&image, "png").unwrap();
        std::fs::write(root.join(format!("img{i}.png")), png).unwrap();
        list += &format!("img{i}.png {i}\n");
    }
    let list_file = dir.path().join("list.txt");
    std::fs::write(&list_file, list).unwrap();
    for encoded in [false, true] {
        let write = |name: &str, backend| {
            let out = dir.path().join(format!("{name}_{encoded}"));
            let options = ImagesetOptions {
                encoded,
                backend,
                ..Default::default()
            };
            let summary = convert_imageset(&root, &list_file, &out, &options).unwrap();
            assert_eq!(summary.written, 3);
            records(&out, backend)
        };
        assert_eq!(
            write("imageset_leveldb", DbBackend::LevelDb),
            write("imageset_lmdb", DbBackend::Lmdb),
            "encoded {encoded}"
        );
    }
}

#[test]
fn siamese_pairs_stack_two_random_images_labelled_by_whether_their_classes_match() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = mnist_files("t10k");
    let pairs = dir.path().join("pairs_leveldb");
    let n = convert_mnist_siamese(&images, &labels, &pairs, DbBackend::LevelDb, 7, &mut |_| {})
        .unwrap();
    assert_eq!(n, 1000, "one pair per image, as upstream");

    let image_bytes = read_maybe_gzip(&images, "images").unwrap();
    let label_bytes = read_maybe_gzip(&labels, "labels").unwrap();
    let mut classes: HashMap<&[u8], Vec<u8>> = HashMap::new();
    for i in 0..1000 {
        let image = &image_bytes[16 + i * 784..16 + (i + 1) * 784];
        classes.entry(image).or_default().push(label_bytes[8 + i]);
    }
    let all = records(&pairs, DbBackend::LevelDb);
    assert_eq!(all.len(), 1000);
    let (mut same, mut firsts) = (0, std::collections::HashSet::new());
    for (k, (key, value)) in all.iter().enumerate() {
        assert_eq!(key, format!("{k:08}").as_bytes());
        let datum = parse_datum(value).unwrap();
        assert_eq!(
            (datum.channels(), datum.height(), datum.width()),
            (2, 28, 28)
        );
        let (first, second) = datum.data().split_at(784);
        let (a, b) = (&classes[first], &classes[second]);
        let equal = a.iter().any(|x| b.contains(x));
        assert_eq!(datum.label(), i32::from(equal), "pair {k}");
        same += usize::from(equal);
        firsts.insert(first.to_vec());
    }
    // Ten balanced classes: about one pair in ten is of one class; 1,000 draws with
    // replacement from 1,000 images hit about 632 distinct ones.
    assert!((50..=160).contains(&same), "{same} same-class pairs");
    assert!((550..=700).contains(&firsts.len()), "{}", firsts.len());

    // The seed fixes the pairing; another seed gives other pairs.
    let again = dir.path().join("again_lmdb");
    convert_mnist_siamese(&images, &labels, &again, DbBackend::Lmdb, 7, &mut |_| {}).unwrap();
    assert_eq!(records(&again, DbBackend::Lmdb), all);
    let other = dir.path().join("other_leveldb");
    convert_mnist_siamese(&images, &labels, &other, DbBackend::LevelDb, 8, &mut |_| {}).unwrap();
    assert_ne!(records(&other, DbBackend::LevelDb), all);
}

/// The `loss = X` of each `Iteration N ..., loss = X` line the solver logs.
fn iteration_losses(log: &str) -> Vec<f32> {
    log.lines()
        .filter(|line| line.contains("Iteration ") && line.contains(", loss = "))
        .filter_map(|line| line.rsplit("loss = ").next()?.trim().parse().ok())
        .collect()
}

/// Upstream's mnist_siamese_train_test.prototxt and mnist_siamese_solver.prototxt, unchanged,
/// train from a folder laid out like upstream's (the sources are relative paths) on LevelDB pairs
/// made by convert-mnist-siamese; `--max-iter` caps the run and the contrastive loss falls.
#[test]
fn upstream_siamese_example_trains_on_leveldb_pairs() {
    let root = tempfile::tempdir().unwrap();
    let siamese = root.path().join("examples/siamese");
    std::fs::create_dir_all(&siamese).unwrap();
    for file in [
        "mnist_siamese_train_test.prototxt",
        "mnist_siamese_solver.prototxt",
    ] {
        let from = bundled("tests/data/upstream-examples/siamese").join(file);
        std::fs::copy(from, siamese.join(file)).unwrap();
    }
    for (part, name) in [("train", "train"), ("t10k", "test")] {
        let (images, labels) = mnist_files(part);
        let out = siamese.join(format!("mnist_siamese_{name}_leveldb"));
        convert_mnist_siamese(&images, &labels, &out, DbBackend::LevelDb, 1, &mut |_| {}).unwrap();
    }
    let run = Command::new(env!("CARGO_BIN_EXE_rcaffe"))
        .current_dir(root.path())
        .args([
            "train",
            "--solver=examples/siamese/mnist_siamese_solver.prototxt",
            "--max-iter=60",
            "--display=1",
        ])
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&run.stderr).into_owned() + &String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{log}");
    assert!(
        log.contains("Opened leveldb examples/siamese/mnist_siamese_train_leveldb"),
        "{log}"
    );
    let losses = iteration_losses(&log);
    assert!(losses.len() >= 60, "{log}");
    let mean = |xs: &[f32]| xs.iter().sum::<f32>() / xs.len() as f32;
    let (start, end) = (mean(&losses[..10]), mean(&losses[losses.len() - 10..]));
    assert!(end < 0.8 * start, "loss {start} -> {end}: {losses:?}");
    assert!(
        siamese.join("mnist_siamese_iter_60.caffemodel").is_file(),
        "{log}"
    );
}
