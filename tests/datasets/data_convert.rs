//! The converters against upstream's tools: the LMDBs hold the same entry count and, for the
//! sampled keys, the same bytes as upstream's (../shared/reference/upstream/lmdb_sample/), and
//! the mean file equals upstream's `compute_image_mean` output.

use std::path::{Path, PathBuf};

use rcaffe::data::datum::{parse_datum, Datum};
use rcaffe::data::imgcodec::{encode_image, Image};
use rcaffe::data::{
    compute_image_mean, convert_cifar, convert_cifar_with, convert_imageset, convert_mnist,
    convert_mnist_with, DataError, DbBackend, ImagesetOptions, Lmdb,
};
use rcaffe::proto::read_blob_proto;

const SAMPLES: &str = "../shared/reference/upstream/lmdb_sample";
const UPSTREAM_MEAN: &str = "../shared/reference/upstream/fcifar_mini_mean.binaryproto";

fn bundled(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(path)
}

/// The entry count and the key -> value records of a sample file (a small fixed JSON
/// layout: `"entries": N` and a flat `"records": {"key": "hex", ...}` object).
fn read_sample(name: &str) -> (u64, Vec<(String, Vec<u8>)>) {
    let path = Path::new(SAMPLES).join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let entries = text
        .split("\"entries\":")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|n| n.trim().parse().ok())
        .expect("an entries count");
    let records_text = text.split("\"records\":").nth(1).expect("a records object");
    let body = &records_text[records_text.find('{').unwrap() + 1..records_text.find('}').unwrap()];
    let records = body
        .split(',')
        .filter(|pair| pair.contains(':'))
        .map(|pair| {
            let (key, hex) = pair.split_once(':').unwrap();
            let key = key.trim().trim_matches('"').to_string();
            let hex = hex.trim().trim_matches('"');
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (key, bytes)
        })
        .collect::<Vec<_>>();
    assert_eq!(records.len(), 5, "{}: five sampled records", path.display());
    (entries, records)
}

fn assert_matches_sample(lmdb: &Path, sample: &str) {
    let (entries, records) = read_sample(sample);
    let db = Lmdb::open(lmdb).unwrap();
    assert_eq!(db.len().unwrap(), entries, "{sample}: entry count");
    for (key, expected) in records {
        let found = db
            .get(key.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("{sample}: key {key} missing"));
        assert_eq!(
            found, expected,
            "{sample}: record {key} differs from upstream's"
        );
    }
}

#[test]
fn mnist_matches_upstream_convert_mnist_data() {
    let dir = tempfile::tempdir().unwrap();
    let mnist = bundled("fashion-mnist-mini");
    let train = dir.path().join("train_lmdb");
    let mut reports = Vec::new();
    let n = convert_mnist_with(
        &mnist.join("train-images-idx3-ubyte.gz"),
        &mnist.join("train-labels-idx1-ubyte.gz"),
        &train,
        DbBackend::Lmdb,
        &mut |p| reports.push((p.done, p.total)),
    )
    .unwrap();
    assert_eq!(n, 6000);
    assert_eq!(reports.last(), Some(&(6000, 6000)));
    assert!(
        reports.len() >= 6,
        "progress every 1000 records: {reports:?}"
    );
    assert_matches_sample(&train, "fmnist_mini_train_lmdb");

    let test = dir.path().join("test_lmdb");
    let n = convert_mnist(
        &mnist.join("t10k-images-idx3-ubyte.gz"),
        &mnist.join("t10k-labels-idx1-ubyte.gz"),
        &test,
    )
    .unwrap();
    assert_eq!(n, 1000);
    assert_matches_sample(&test, "fmnist_mini_test_lmdb");
}

/// Gunzipped copies of the bundled files read the same as the gzipped ones.
#[test]
fn mnist_reads_uncompressed_idx_and_checks_headers() {
    let dir = tempfile::tempdir().unwrap();
    let mnist = bundled("fashion-mnist-mini");
    let gunzip = |name: &str| {
        let bytes = rcaffe::data::convert::read_maybe_gzip(&mnist.join(name), "IDX file").unwrap();
        let out = dir.path().join(name.trim_end_matches(".gz"));
        std::fs::write(&out, bytes).unwrap();
        out
    };
    let images = gunzip("t10k-images-idx3-ubyte.gz");
    let labels = gunzip("t10k-labels-idx1-ubyte.gz");
    let out = dir.path().join("test_lmdb");
    assert_eq!(convert_mnist(&images, &labels, &out).unwrap(), 1000);
    assert_matches_sample(&out, "fmnist_mini_test_lmdb");

    // Images and labels swapped: the magic is checked, naming the file.
    let err = convert_mnist(&labels, &images, &dir.path().join("x")).unwrap_err();
    assert!(
        matches!(err, DataError::Format { ref path, .. } if path == &labels),
        "{err}"
    );
    assert!(err.to_string().contains("magic"), "{err}");

    // A truncated image file.
    let bytes = std::fs::read(&images).unwrap();
    let short = dir.path().join("short-images");
    std::fs::write(&short, &bytes[..bytes.len() - 10]).unwrap();
    let err = convert_mnist(&short, &labels, &dir.path().join("y")).unwrap_err();
    assert!(err.to_string().contains("short-images"), "{err}");

    // A header whose image size times count overflows is refused, not wrapped.
    let header = |words: &[u32]| {
        words
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect::<Vec<u8>>()
    };
    let huge_images = dir.path().join("huge-images");
    std::fs::write(&huge_images, header(&[2051, 16, 1 << 30, 1 << 30])).unwrap();
    let few_labels = dir.path().join("few-labels");
    let mut label_bytes = header(&[2049, 16]);
    label_bytes.extend([0; 16]);
    std::fs::write(&few_labels, label_bytes).unwrap();
    let err = convert_mnist(&huge_images, &few_labels, &dir.path().join("z")).unwrap_err();
    assert!(
        err.to_string().contains("huge-images") && err.to_string().contains("1073741824x"),
        "{err}"
    );

    // An existing output is not overwritten.
    let err = convert_mnist(&images, &labels, &out).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[test]
fn cifar_matches_upstream_convert_cifar_data_and_mean() {
    let dir = tempfile::tempdir().unwrap();
    let mut stages = Vec::new();
    let summary = convert_cifar_with(
        &bundled("fashion-cifar-mini"),
        dir.path(),
        DbBackend::Lmdb,
        &mut |p| stages.push(p.stage.to_string()),
    )
    .unwrap();
    assert_eq!((summary.train, summary.test), (6000, 1000));
    assert_eq!(summary.train_db, dir.path().join("cifar10_train_lmdb"));
    assert_eq!(summary.test_db, dir.path().join("cifar10_test_lmdb"));
    assert!(stages.contains(&"train".to_string()) && stages.contains(&"test".to_string()));
    assert_matches_sample(&summary.train_db, "fcifar_mini_train_lmdb");
    assert_matches_sample(&summary.test_db, "fcifar_mini_test_lmdb");

    // compute_image_mean of the training LMDB: bit-identical to upstream's file.
    let out = dir.path().join("mean.binaryproto");
    let mean = compute_image_mean(&summary.train_db, Some(&out)).unwrap();
    assert_eq!(mean.count, 6000);
    let upstream = read_blob_proto(Path::new(UPSTREAM_MEAN)).unwrap();
    let ours = read_blob_proto(&out).unwrap();
    assert_eq!(
        (ours.num(), ours.channels(), ours.height(), ours.width()),
        (1, 3, 32, 32)
    );
    assert_eq!(ours.data.len(), upstream.data.len());
    for (i, (a, b)) in ours.data.iter().zip(&upstream.data).enumerate() {
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "mean value {i}: {a} vs upstream {b}"
        );
    }
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(UPSTREAM_MEAN).unwrap(),
        "the mean file's bytes"
    );
    // The three channels are the same grey image, so their means agree; the per-channel
    // mean is the mean of the mean image's plane.
    assert_eq!(mean.channel_means.len(), 3);
    let plane: f32 = upstream.data[..1024].iter().sum::<f32>() / 1024.0;
    for m in &mean.channel_means {
        assert!((m - plane).abs() < 1e-3, "{m} vs {plane}");
    }
}

/// `rcaffe mnist-to-cifar` on the bundled mini Fashion-MNIST gives the bundled mini
/// Fashion-CIFAR byte for byte (made independently, as ../shared/datasets describes), and
/// refuses to overwrite batches.
#[test]
fn mnist_to_cifar_remakes_the_bundled_fashion_cifar() {
    use rcaffe::data::cifar_from_mnist::mnist_to_cifar;
    use rcaffe::data::convert::read_maybe_gzip;
    let out = tempfile::tempdir().unwrap();
    let made = mnist_to_cifar(&bundled("fashion-mnist-mini"), out.path()).unwrap();
    assert_eq!((made.train, made.test), (6000, 1000));
    assert_eq!(
        made.train_batches.len(),
        1,
        "6,000 records fit one batch of 10,000"
    );
    for (ours, theirs) in [
        (&made.train_batches[0], "data_batch_1.bin.gz"),
        (&made.test_batch, "test_batch.bin.gz"),
    ] {
        let expected =
            read_maybe_gzip(&bundled("fashion-cifar-mini").join(theirs), "batch").unwrap();
        let written = std::fs::read(ours).unwrap();
        assert_eq!(written.len(), expected.len(), "{theirs}");
        assert!(written == expected, "{theirs} differs");
    }
    let again = mnist_to_cifar(&bundled("fashion-mnist-mini"), out.path()).unwrap_err();
    assert!(
        again.to_string().contains("data_batch_1.bin")
            && again.to_string().contains("must not exist"),
        "{again}"
    );
    let missing = mnist_to_cifar(out.path(), &out.path().join("x")).unwrap_err();
    assert!(
        missing.to_string().contains("train-images-idx3-ubyte"),
        "{missing}"
    );
}

#[test]
fn cifar_takes_several_batches_of_any_size_gzipped_or_not() {
    let input = tempfile::tempdir().unwrap();
    let record = |label: u8, fill: u8| {
        let mut r = vec![fill; 3073];
        r[0] = label;
        r
    };
    // Batch 2 uncompressed with 2 records, batch 1 gzipped with 3, batch 10 with 1: keys count
    // across batches in numeric order.
    let batch1: Vec<u8> = (0..3).flat_map(|i| record(i, 10 + i)).collect();
    let batch2: Vec<u8> = (0..2).flat_map(|i| record(5 + i, 20 + i)).collect();
    let batch10: Vec<u8> = record(9, 99);
    let gz = |bytes: &[u8]| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    std::fs::write(input.path().join("data_batch_1.bin.gz"), gz(&batch1)).unwrap();
    std::fs::write(input.path().join("data_batch_2.bin"), &batch2).unwrap();
    std::fs::write(input.path().join("data_batch_10.bin"), &batch10).unwrap();
    std::fs::write(input.path().join("test_batch.bin"), record(4, 7)).unwrap();
    std::fs::write(input.path().join("readme.txt"), "not a batch").unwrap();

    let out = tempfile::tempdir().unwrap();
    let summary = convert_cifar(input.path(), out.path()).unwrap();
    assert_eq!((summary.train, summary.test), (6, 1));
    let db = Lmdb::open(&summary.train_db).unwrap();
    let mut seen = Vec::new();
    db.for_each(|key, value| {
        let d = parse_datum(value).unwrap();
        let data = d.data.clone().unwrap();
        assert_eq!(data.len(), 3072);
        assert_eq!((d.channels(), d.height(), d.width()), (3, 32, 32));
        seen.push((String::from_utf8(key.to_vec()).unwrap(), d.label(), data[0]));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        seen,
        vec![
            ("00000".into(), 0, 10),
            ("00001".into(), 1, 11),
            ("00002".into(), 2, 12),
            ("00003".into(), 5, 20),
            ("00004".into(), 6, 21),
            ("00005".into(), 9, 99),
        ]
    );

    // A batch that is not a whole number of records is refused, naming it.
    std::fs::write(input.path().join("data_batch_3.bin"), vec![0u8; 3074]).unwrap();
    let out2 = tempfile::tempdir().unwrap();
    let err = convert_cifar(input.path(), out2.path()).unwrap_err();
    assert!(err.to_string().contains("data_batch_3.bin"), "{err}");
    assert!(err.to_string().contains("whole number"), "{err}");

    // No test batch.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("data_batch_1.bin"), record(1, 1)).unwrap();
    let err = convert_cifar(empty.path(), out2.path()).unwrap_err();
    assert!(err.to_string().contains("test batch"), "{err}");
}

fn write_png(path: &Path, image: &Image) {
    std::fs::write(path, encode_image(image, "png").unwrap()).unwrap();
}

#[test]
fn imageset_raw_encoded_and_resized() {
    let root = tempfile::tempdir().unwrap();
    // 2x3 colour image: pixel (y, x) is BGR (10y + x, 100 + x, 200 - y).
    let colour = Image {
        height: 2,
        width: 3,
        channels: 3,
        data: (0..2)
            .flat_map(|y| (0..3).flat_map(move |x| [10 * y + x, 100 + x, 200 - y]))
            .map(|v| v as u8)
            .collect(),
    };
    write_png(&root.path().join("a.png"), &colour);
    std::fs::create_dir(root.path().join("sub")).unwrap();
    let grey = Image {
        height: 2,
        width: 2,
        channels: 1,
        data: vec![0, 50, 100, 150],
    };
    write_png(&root.path().join("sub/b.png"), &grey);
    let list = root.path().join("list.txt");
    std::fs::write(&list, "a.png 3\nsub/b.png 7\nmissing.png 1\n").unwrap();

    // Raw BGR, channel-major; the missing file is skipped and its line number not reused.
    let out = tempfile::tempdir().unwrap();
    let lmdb = out.path().join("raw");
    let summary = convert_imageset(root.path(), &list, &lmdb, &ImagesetOptions::default()).unwrap();
    assert_eq!(summary.total, 3);
    assert_eq!(summary.written, 2);
    assert_eq!(summary.skipped, vec![root.path().join("missing.png")]);
    let db = Lmdb::open(&lmdb).unwrap();
    assert_eq!(db.len().unwrap(), 2);
    let a = parse_datum(&db.get(b"00000000_a.png").unwrap().unwrap()).unwrap();
    assert_eq!(
        (a.channels(), a.height(), a.width(), a.label()),
        (3, 2, 3, 3)
    );
    assert_eq!(a.encoded, Some(false), "CVMatToDatum sets encoded: false");
    assert_eq!(a.data.as_deref().unwrap(), &colour.to_chw()[..]);
    assert_eq!(
        &a.data.as_deref().unwrap()[..6],
        &[0, 1, 2, 10, 11, 12],
        "channel 0 is blue"
    );
    // Grey read in colour: replicated into three channels.
    let b = parse_datum(&db.get(b"00000001_sub/b.png").unwrap().unwrap()).unwrap();
    assert_eq!(
        (b.channels(), b.height(), b.width(), b.label()),
        (3, 2, 2, 7)
    );
    assert_eq!(b.data.as_deref().unwrap(), &[0, 50, 100, 150].repeat(3)[..]);
    drop(db);

    // Grey.
    let lmdb = out.path().join("gray");
    let options = ImagesetOptions {
        gray: true,
        ..Default::default()
    };
    convert_imageset(root.path(), &list, &lmdb, &options).unwrap();
    let db = Lmdb::open(&lmdb).unwrap();
    let b = parse_datum(&db.get(b"00000001_sub/b.png").unwrap().unwrap()).unwrap();
    assert_eq!(
        (b.channels(), b.data.as_deref().unwrap()),
        (1, &[0u8, 50, 100, 150][..])
    );
    drop(db);

    // Encoded, same type as the file: the file's own bytes.
    let lmdb = out.path().join("encoded");
    let options = ImagesetOptions {
        encoded: true,
        ..Default::default()
    };
    convert_imageset(root.path(), &list, &lmdb, &options).unwrap();
    let db = Lmdb::open(&lmdb).unwrap();
    let a: Datum = parse_datum(&db.get(b"00000000_a.png").unwrap().unwrap()).unwrap();
    assert_eq!(a.encoded, Some(true));
    assert_eq!(a.channels, None, "an encoded Datum has no shape");
    assert_eq!(
        a.data.unwrap(),
        std::fs::read(root.path().join("a.png")).unwrap()
    );
    drop(db);

    // Resized: a new size, and (encode_type given) re-encoded; the pixels are checked against
    // OpenCV's in `imageset_resize_matches_opencv`.
    let lmdb = out.path().join("resized");
    let options = ImagesetOptions {
        resize_height: 4,
        resize_width: 6,
        encode_type: "png".into(),
        ..Default::default()
    };
    convert_imageset(root.path(), &list, &lmdb, &options).unwrap();
    let db = Lmdb::open(&lmdb).unwrap();
    let a = parse_datum(&db.get(b"00000000_a.png").unwrap().unwrap()).unwrap();
    let decoded =
        rcaffe::data::datum::decode_datum(&a, rcaffe::data::imgcodec::ColorMode::Native).unwrap();
    assert_eq!(
        (decoded.channels(), decoded.height(), decoded.width()),
        (3, 4, 6)
    );
    drop(db);
}

/// Every key of an LMDB, in the database's (key) order.
fn lmdb_keys(lmdb: &Path) -> Vec<String> {
    let mut keys = Vec::new();
    Lmdb::open(lmdb)
        .unwrap()
        .for_each(|k, _| {
            keys.push(String::from_utf8(k.to_vec()).unwrap());
            Ok(())
        })
        .unwrap();
    keys
}

/// `--shuffle` as upstream's convert_imageset: the list is permuted before writing, and each key
/// is the image's position in the permuted list (8 digits), `_`, its file name; the record under
/// a key is that file's image and label.
#[test]
fn imageset_shuffle_writes_a_permutation_keyed_in_its_order() {
    let root = tempfile::tempdir().unwrap();
    let count = 30u8;
    let mut list = String::new();
    for i in 0..count {
        let image = Image {
            height: 1,
            width: 1,
            channels: 1,
            data: vec![i],
        };
        write_png(&root.path().join(format!("img{i}.png")), &image);
        list += &format!("img{i}.png {i}\n");
    }
    let list_file = root.path().join("list.txt");
    std::fs::write(&list_file, &list).unwrap();
    let in_order: Vec<String> = (0..count).map(|i| format!("img{i}.png")).collect();

    let out = tempfile::tempdir().unwrap();
    let shuffled = |seed: u64, name: &str| -> Vec<String> {
        let lmdb = out.path().join(name);
        let options = ImagesetOptions {
            shuffle: true,
            seed,
            gray: true,
            ..Default::default()
        };
        convert_imageset(root.path(), &list_file, &lmdb, &options).unwrap();
        let db = Lmdb::open(&lmdb).unwrap();
        let keys = lmdb_keys(&lmdb);
        let mut files = Vec::new();
        for (position, key) in keys.iter().enumerate() {
            let (number, file) = key.split_once('_').unwrap();
            assert_eq!(number, format!("{position:08}"), "{key}");
            let datum = parse_datum(&db.get(key.as_bytes()).unwrap().unwrap()).unwrap();
            let value: u8 = file["img".len()..file.len() - ".png".len()]
                .parse()
                .unwrap();
            assert_eq!(datum.label(), i32::from(value), "{key}");
            assert_eq!(datum.data.as_deref(), Some(&[value][..]), "{key}");
            files.push(file.to_owned());
        }
        files
    };
    let first = shuffled(5, "s5");
    assert_ne!(first, in_order, "shuffled");
    let mut sorted = first.clone();
    sorted.sort_by_key(|file| file["img".len()..file.len() - 4].parse::<u8>().unwrap());
    assert_eq!(sorted, in_order, "a permutation of the list");
    assert_eq!(
        first,
        shuffled(5, "s5_again"),
        "the same seed, the same order"
    );
    assert_ne!(first, shuffled(6, "s6"), "another seed, another order");
}

/// The shuffle draws every permutation equally often, as upstream's (Fisher-Yates with a
/// uniform draw from 0..=i at each step): over 60,000 shuffles of four items each of the 24
/// orders comes about 2,500 times. A no-op shuffle, or the naive swap with any position (which
/// favours some orders by up to 50%), is far outside the bound.
#[test]
fn the_shuffle_is_uniform_over_permutations() {
    let mut rng = rcaffe::backend::rng_from_seed(1701);
    let mut counts = std::collections::BTreeMap::new();
    let draws = 60_000;
    for _ in 0..draws {
        let mut items = [0u8, 1, 2, 3];
        rcaffe::data::convert::shuffle(&mut items, &mut rng);
        *counts.entry(items).or_insert(0u32) += 1;
    }
    assert_eq!(counts.len(), 24, "every order occurs");
    let expected = f64::from(draws) / 24.0;
    // Pearson's chi-squared with 23 degrees of freedom: 49.7 is its 99.9th percentile.
    let chi2: f64 = counts
        .values()
        .map(|&n| (f64::from(n) - expected).powi(2) / expected)
        .sum();
    assert!(chi2 < 49.7, "chi-squared {chi2:.1}: {counts:?}");
}

/// The resize of `--resize_height/--resize_width` against OpenCV's own `cv::resize` with
/// `INTER_LINEAR` (the call upstream makes), for a 5x7 BGR image shrunk, enlarged, stretched,
/// doubled exactly (a size OpenCV may route to a special path) and widened to rows of 291 values
/// (not a whole number of vector blocks): `tests/data/resize/` holds OpenCV's outputs (see its
/// README).
#[test]
fn imageset_resize_matches_opencv() {
    let root = tempfile::tempdir().unwrap();
    // The same 5x7 image the reference was made from: BGR value (37x + 91y + 53c) mod 256.
    let image = Image {
        height: 5,
        width: 7,
        channels: 3,
        data: (0..5)
            .flat_map(|y| {
                (0..7).flat_map(move |x| (0..3).map(move |c| (37 * x + 91 * y + 53 * c) % 256))
            })
            .map(|v| v as u8)
            .collect(),
    };
    write_png(&root.path().join("image.png"), &image);
    let list = root.path().join("list.txt");
    std::fs::write(&list, "image.png 0\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    for (height, width) in [(4u32, 6u32), (9, 11), (3, 13), (10, 14), (7, 97)] {
        let lmdb = out.path().join(format!("{height}x{width}"));
        let options = ImagesetOptions {
            resize_height: height,
            resize_width: width,
            ..Default::default()
        };
        convert_imageset(root.path(), &list, &lmdb, &options).unwrap();
        let db = Lmdb::open(&lmdb).unwrap();
        let datum = parse_datum(&db.get(b"00000000_image.png").unwrap().unwrap()).unwrap();
        let opencv = Image {
            height: height as usize,
            width: width as usize,
            channels: 3,
            data: std::fs::read(format!(
                "tests/data/resize/opencv_linear_5x7_to_{height}x{width}.bgr"
            ))
            .unwrap(),
        };
        assert_eq!(
            datum.data.as_deref().unwrap(),
            &opencv.to_chw()[..],
            "{height}x{width}"
        );
    }
}
