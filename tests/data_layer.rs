//! The Data layer over small LMDBs and LevelDBs written here: batch contents and labels,
//! wrap-around, rand_skip, transformations, shape errors naming the record, mismatched
//! backends; and the prefetch thread's error, panic and shutdown behaviour.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::Rng as _;
use rcaffe::backend::{rng_from_seed, CpuBackend};
use rcaffe::data::datum::{encode_datum, Datum};
use rcaffe::data::imgcodec::{encode_image, Image};
use rcaffe::data::prefetch::{Batch, BatchSource, Prefetcher};
use rcaffe::data::{DataError, LevelDbWriter, LmdbWriter};
use rcaffe::testing::{cpu, LayerHarness};

/// Record `i`: a 1 x 2 x 3 Datum with values 10 i + j and label i.
fn record(i: usize) -> Datum {
    Datum {
        channels: Some(1),
        height: Some(2),
        width: Some(3),
        data: Some((0..6).map(|j| (10 * i + j) as u8).collect()),
        label: Some(i as i32),
        ..Default::default()
    }
}

fn write_lmdb(path: &Path, records: &[Datum]) {
    let mut writer = LmdbWriter::create(path).unwrap();
    for (i, d) in records.iter().enumerate() {
        writer.put(format!("{i:08}"), encode_datum(d));
    }
    writer.finish().unwrap();
}

fn write_leveldb(path: &Path, records: &[Datum]) {
    let mut writer = LevelDbWriter::create(path).unwrap();
    for (i, d) in records.iter().enumerate() {
        writer.put(format!("{i:08}").as_bytes(), &encode_datum(d));
    }
    assert_eq!(writer.finish().unwrap(), records.len() as u64);
}

fn data_layer(source: &Path, extra: &str, tops: &str, seed: u64) -> LayerHarness<CpuBackend> {
    try_data_layer(source, extra, tops, seed).unwrap()
}

fn try_data_layer(
    source: &Path,
    extra: &str,
    tops: &str,
    seed: u64,
) -> Result<LayerHarness<CpuBackend>, String> {
    let text = format!(
        r#"name: "data" type: "Data" {tops} {extra}
           data_param {{ source: "{}" batch_size: 2 backend: LMDB }}"#,
        source.display()
    );
    LayerHarness::from_prototxt(&cpu(), &text, &[], seed).map_err(|e| e.to_string())
}

fn values(ids: &[usize], scale: f32) -> Vec<f32> {
    ids.iter()
        .flat_map(|&i| (0..6).map(move |j| (10 * i + j) as f32 * scale))
        .collect()
}

#[test]
fn batches_labels_and_wrap_around() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("five_lmdb");
    write_lmdb(&source, &(0..5).map(record).collect::<Vec<_>>());
    let mut h = data_layer(
        &source,
        "transform_param { scale: 0.5 }",
        r#"top: "data" top: "label""#,
        1,
    );
    assert_eq!(h.top(0).shape(), &[2, 1, 2, 3]);
    assert_eq!(h.top(1).shape(), &[2]);
    // Five records in batches of two: 0 1 | 2 3 | 4 0 | 1 2 | 3 4 | 0 1.
    let order = [[0, 1], [2, 3], [4, 0], [1, 2], [3, 4], [0, 1]];
    for ids in order {
        h.forward().unwrap();
        assert_eq!(h.top(0).shape(), &[2, 1, 2, 3]);
        assert_eq!(
            h.top(0).data_to_vec().unwrap(),
            values(&ids, 0.5),
            "{ids:?}"
        );
        assert_eq!(
            h.top(1).data_to_vec().unwrap(),
            ids.iter().map(|&i| i as f32).collect::<Vec<_>>()
        );
    }
}

/// A LevelDB source, named by `backend: LEVELDB` or found with the backend unset (Caffe's
/// default is LEVELDB), walks its records in key order and wraps around like an LMDB.
#[test]
fn leveldb_batches_and_wrap_around() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("five_leveldb");
    write_leveldb(&source, &(0..5).map(record).collect::<Vec<_>>());
    for backend in ["backend: LEVELDB", ""] {
        let text = format!(
            r#"name: "data" type: "Data" top: "data" top: "label"
               data_param {{ source: "{}" batch_size: 2 {backend} }}"#,
            source.display()
        );
        let mut h = LayerHarness::from_prototxt(&cpu(), &text, &[], 1).unwrap();
        assert_eq!(h.top(0).shape(), &[2, 1, 2, 3]);
        for ids in [[0, 1], [2, 3], [4, 0], [1, 2], [3, 4], [0, 1]] {
            h.forward().unwrap();
            assert_eq!(
                h.top(0).data_to_vec().unwrap(),
                values(&ids, 1.0),
                "{ids:?}"
            );
            assert_eq!(
                h.top(1).data_to_vec().unwrap(),
                ids.iter().map(|&i| i as f32).collect::<Vec<_>>()
            );
        }
    }
    // One reader at a time: a second layer on the same LevelDB is refused while the first
    // holds it, and reads it once the first is gone.
    let text = format!(
        r#"name: "d" type: "Data" top: "data"
           data_param {{ source: "{}" batch_size: 1 backend: LEVELDB }}"#,
        source.display()
    );
    let first = LayerHarness::from_prototxt(&cpu(), &text, &[], 1).unwrap();
    let e = LayerHarness::from_prototxt(&cpu(), &text, &[], 1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("five_leveldb") && e.contains("one at a time"),
        "{e}"
    );
    drop(first);
    LayerHarness::from_prototxt(&cpu(), &text, &[], 1).unwrap();

    // A LevelDB named as an LMDB is refused, saying what it is.
    let as_lmdb = format!(
        r#"name: "d" type: "Data" top: "data"
           data_param {{ source: "{}" batch_size: 1 backend: LMDB }}"#,
        source.display()
    );
    let e = LayerHarness::from_prototxt(&cpu(), &as_lmdb, &[], 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is a LevelDB, not an LMDB"), "{e}");
}

#[test]
fn one_top_means_no_labels() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("db");
    write_lmdb(&source, &(0..3).map(record).collect::<Vec<_>>());
    let mut h = data_layer(&source, "", r#"top: "data""#, 1);
    assert_eq!(h.num_top(), 1);
    h.forward().unwrap();
    assert_eq!(h.top(0).data_to_vec().unwrap(), values(&[0, 1], 1.0));
    h.forward().unwrap();
    assert_eq!(h.top(0).data_to_vec().unwrap(), values(&[2, 0], 1.0));
}

#[test]
fn rand_skip_starts_at_a_random_record() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("db");
    write_lmdb(&source, &(0..5).map(record).collect::<Vec<_>>());
    let text = |seed| {
        let _ = seed;
        format!(
            r#"name: "data" type: "Data" top: "data" top: "label"
               data_param {{ source: "{}" batch_size: 2 backend: LMDB rand_skip: 4 }}"#,
            source.display()
        )
    };
    let mut starts = std::collections::HashSet::new();
    for seed in 0..30u64 {
        // The skip is the net generator's first draw modulo rand_skip.
        let skip = (rng_from_seed(seed).next_u32() % 4) as usize;
        let mut h = LayerHarness::from_prototxt(&cpu(), &text(seed), &[], seed).unwrap();
        h.forward().unwrap();
        let labels = h.top(1).data_to_vec().unwrap();
        assert_eq!(
            labels,
            [skip as f32, ((skip + 1) % 5) as f32],
            "seed {seed}"
        );
        starts.insert(skip);
    }
    assert!(
        starts.len() >= 3,
        "different seeds skip differently: {starts:?}"
    );
}

#[test]
fn test_phase_centre_crop_and_mean_value() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("db");
    write_lmdb(&source, &(0..2).map(record).collect::<Vec<_>>());
    let mut h = data_layer(
        &source,
        "phase: TEST transform_param { crop_size: 2 mean_value: 1 scale: 2 }",
        r#"top: "data" top: "label""#,
        1,
    );
    assert_eq!(h.top(0).shape(), &[2, 1, 2, 2]);
    h.forward().unwrap();
    // 2x3 image, crop 2: centre at (0, (3 - 2) / 2 = 0); values 10 i + {0, 1, 3, 4}.
    let want: Vec<f32> = [0usize, 1]
        .iter()
        .flat_map(|&i| [0, 1, 3, 4].map(|j| ((10 * i + j) as f32 - 1.0) * 2.0))
        .collect();
    assert_eq!(h.top(0).data_to_vec().unwrap(), want);
}

#[test]
fn encoded_records_are_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("db");
    let grey = |base: u8| Image {
        height: 2,
        width: 2,
        channels: 1,
        data: vec![base, base + 1, base + 2, base + 3],
    };
    let records: Vec<Datum> = (0..2)
        .map(|i| Datum {
            data: Some(encode_image(&grey(10 * i as u8), "png").unwrap()),
            label: Some(i + 5),
            encoded: Some(true),
            ..Default::default()
        })
        .collect();
    write_lmdb(&source, &records);
    let mut h = data_layer(&source, "", r#"top: "data" top: "label""#, 1);
    assert_eq!(h.top(0).shape(), &[2, 1, 2, 2]);
    h.forward().unwrap();
    assert_eq!(
        h.top(0).data_to_vec().unwrap(),
        [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0]
    );
    assert_eq!(h.top(1).data_to_vec().unwrap(), [5.0, 6.0]);

    // force_color: three channels.
    let mut h = data_layer(
        &source,
        "transform_param { force_color: true }",
        r#"top: "data""#,
        1,
    );
    assert_eq!(h.top(0).shape(), &[2, 3, 2, 2]);
    h.forward().unwrap();
    assert_eq!(
        &h.top(0).data_to_vec().unwrap()[..8],
        &[0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0]
    );
}

#[test]
fn a_record_of_another_shape_is_an_error_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("mixed_lmdb");
    let mut records: Vec<Datum> = (0..4).map(record).collect();
    records[3].width = Some(2);
    records[3].data.as_mut().unwrap().truncate(4);
    write_lmdb(&source, &records);
    let mut h = data_layer(&source, "", r#"top: "data" top: "label""#, 1);
    h.forward().unwrap();
    let e = h.forward().unwrap_err().to_string();
    assert!(e.contains("00000003") && e.contains("mixed_lmdb"), "{e}");
    assert!(e.contains("1x2x2") && e.contains("00000002"), "{e}");
    // The error stays: later passes say the thread stopped, and why.
    let e = h.forward().unwrap_err().to_string();
    assert!(e.contains("stopped") && e.contains("00000003"), "{e}");
}

#[test]
fn a_damaged_record_is_an_error_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("db");
    let mut writer = LmdbWriter::create(&source).unwrap();
    writer.put("00000000", encode_datum(&record(0)));
    writer.put("00000001", encode_datum(&record(1)));
    writer.put("00000002", vec![0xff, 0xff, 0xff]);
    writer.finish().unwrap();
    let mut h = data_layer(&source, "", r#"top: "data""#, 1);
    h.forward().unwrap();
    let e = h.forward().unwrap_err().to_string();
    assert!(e.contains("00000002") && e.contains("Datum"), "{e}");

    // A damaged first record fails at setup.
    let first_bad = dir.path().join("first_bad");
    let mut writer = LmdbWriter::create(&first_bad).unwrap();
    writer.put("00000000", vec![0xff, 0xff]);
    writer.finish().unwrap();
    let e = try_data_layer(&first_bad, "", r#"top: "data""#, 1)
        .err()
        .unwrap();
    assert!(e.contains("00000000") && e.contains("first_bad"), "{e}");
}

#[test]
fn sources_and_parameters_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing_lmdb");
    let e = try_data_layer(&missing, "", r#"top: "data""#, 1)
        .err()
        .unwrap();
    assert!(
        e.contains("missing_lmdb") && e.contains("layer 'data'"),
        "{e}"
    );

    let source = dir.path().join("db");
    write_lmdb(&source, &[record(0)]);
    let leveldb = format!(
        r#"name: "d" type: "Data" top: "data"
           data_param {{ source: "{}" batch_size: 2 backend: LEVELDB }}"#,
        source.display()
    );
    let e = LayerHarness::from_prototxt(&cpu(), &leveldb, &[], 1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("LevelDB") && e.contains("no CURRENT file") && e.contains("db"),
        "{e}"
    );

    // backend left at its default: an LMDB source is read.
    let default_backend = format!(
        r#"name: "d" type: "Data" top: "data" data_param {{ source: "{}" batch_size: 1 }}"#,
        source.display()
    );
    let mut h = LayerHarness::from_prototxt(&cpu(), &default_backend, &[], 1).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).data_to_vec().unwrap(), values(&[0], 1.0));

    let no_batch = format!(
        r#"name: "d" type: "Data" top: "data" data_param {{ source: "{}" backend: LMDB }}"#,
        source.display()
    );
    let e = LayerHarness::from_prototxt(&cpu(), &no_batch, &[], 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("batch_size"), "{e}");

    let crop = try_data_layer(
        &source,
        "transform_param { crop_size: 5 }",
        r#"top: "data""#,
        1,
    )
    .err()
    .unwrap();
    assert!(
        crop.contains("crop_size 5") && crop.contains("00000000"),
        "{crop}"
    );

    let e = try_data_layer(&source, "", r#"top: "a" top: "b" top: "c""#, 1)
        .err()
        .unwrap();
    assert!(e.contains("at most 2"), "{e}");
}

#[test]
fn dropping_the_layer_stops_its_thread() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("db");
    write_lmdb(&source, &(0..3).map(record).collect::<Vec<_>>());
    // The thread fills its four batches and waits; dropping must not hang.
    for _ in 0..5 {
        let h = data_layer(&source, "", r#"top: "data" top: "label""#, 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(h);
    }
    // And the LMDB can be opened again afterwards.
    let mut h = data_layer(&source, "", r#"top: "data""#, 1);
    h.forward().unwrap();
}

/// Counts batches; fails or panics at a chosen batch.
struct Counting {
    filled: Arc<AtomicUsize>,
    fail_at: Option<usize>,
    panic_at: Option<usize>,
}

impl BatchSource for Counting {
    fn fill(&mut self, batch: &mut Batch) -> Result<(), DataError> {
        let n = self.filled.fetch_add(1, Ordering::SeqCst);
        if self.fail_at == Some(n) {
            return Err(DataError::invalid(format!("batch {n} cannot be read")));
        }
        if self.panic_at == Some(n) {
            panic!("boom at batch {n}");
        }
        batch.shape = vec![1];
        batch.data = vec![n as f32];
        Ok(())
    }
}

#[test]
fn prefetcher_keeps_order_reports_errors_and_panics() {
    let filled = Arc::new(AtomicUsize::new(0));
    let source = Counting {
        filled: filled.clone(),
        fail_at: Some(5),
        panic_at: None,
    };
    let mut p = Prefetcher::start("counting", 2, source).unwrap();
    for expected in 0..5 {
        let batch = p.next_batch().unwrap();
        assert_eq!(batch.data, [expected as f32]);
        p.recycle(batch);
    }
    let e = p.next_batch().unwrap_err().to_string();
    assert!(e.contains("batch 5 cannot be read"), "{e}");
    let e = p.next_batch().unwrap_err().to_string();
    assert!(e.contains("stopped") && e.contains("batch 5"), "{e}");

    let source = Counting {
        filled: Arc::new(AtomicUsize::new(0)),
        fail_at: None,
        panic_at: Some(1),
    };
    let mut p = Prefetcher::start("panicky", 3, source).unwrap();
    assert_eq!(p.next_batch().unwrap().data, [0.0]);
    let e = p.next_batch().unwrap_err().to_string();
    assert!(
        e.contains("panicked") && e.contains("boom at batch 1"),
        "{e}"
    );

    // Without recycling, the thread fills exactly `count` batches and waits.
    let filled = Arc::new(AtomicUsize::new(0));
    let source = Counting {
        filled: filled.clone(),
        fail_at: None,
        panic_at: None,
    };
    let p = Prefetcher::start("bounded", 3, source).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(filled.load(Ordering::SeqCst), 3);
    drop(p);

    assert!(Prefetcher::start(
        "none",
        0,
        Counting {
            filled,
            fail_at: None,
            panic_at: None
        }
    )
    .is_err());
}

fn dummy(text: &str, seed: u64) -> Result<LayerHarness<CpuBackend>, String> {
    let text = format!(r#"name: "dummy" type: "DummyData" {text}"#);
    LayerHarness::from_prototxt(&cpu(), &text, &[], seed).map_err(|e| e.to_string())
}

#[test]
fn dummy_data_shapes_and_fillers() {
    // One shape and one constant filler for two tops.
    let mut h = dummy(
        r#"top: "a" top: "b" dummy_data_param {
             shape { dim: 2 dim: 3 } data_filler { type: "constant" value: 3 } }"#,
        1,
    )
    .unwrap();
    h.forward().unwrap();
    for i in 0..2 {
        assert_eq!(h.top(i).shape(), &[2, 3]);
        assert_eq!(h.top(i).data_to_vec().unwrap(), [3.0; 6]);
    }

    // Legacy dimensions, default filler: zeros.
    let mut h = dummy(
        r#"top: "a" dummy_data_param { num: 2 channels: 1 height: 2 width: 2 }"#,
        1,
    )
    .unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[2, 1, 2, 2]);
    assert_eq!(h.top(0).data_to_vec().unwrap(), [0.0; 8]);

    // One filler per top: the constant one is set once, the uniform one refilled each pass.
    let mut h = dummy(
        r#"top: "a" top: "b" dummy_data_param {
             shape { dim: 4 } shape { dim: 50 }
             data_filler { type: "constant" value: 1 }
             data_filler { type: "uniform" min: 2 max: 3 } }"#,
        7,
    )
    .unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).data_to_vec().unwrap(), [1.0; 4]);
    let first = h.top(1).data_to_vec().unwrap();
    assert!(first.iter().all(|&v| (2.0..=3.0).contains(&v)), "{first:?}");
    h.forward().unwrap();
    let second = h.top(1).data_to_vec().unwrap();
    assert_ne!(first, second, "a non-constant filler refills on every pass");
    assert_eq!(h.top(0).data_to_vec().unwrap(), [1.0; 4]);

    let e = dummy(
        r#"top: "a" top: "b" top: "c" dummy_data_param { shape { dim: 1 } shape { dim: 2 } }"#,
        1,
    )
    .err()
    .unwrap();
    assert!(
        e.contains("'shape' once, or once per top blob (3); specified 2"),
        "{e}"
    );
    let e = dummy(
        r#"top: "a" dummy_data_param { shape { dim: 1 } num: 1 channels: 1 height: 1 width: 1 }"#,
        1,
    )
    .err()
    .unwrap();
    assert!(e.contains("both shape and legacy"), "{e}");
    let e = dummy(
        r#"top: "a" top: "b" top: "c" dummy_data_param { shape { dim: 1 }
             data_filler { type: "constant" } data_filler { type: "constant" } }"#,
        1,
    )
    .err()
    .unwrap();
    assert!(e.contains("data fillers"), "{e}");
    let e = dummy(
        r#"top: "a" dummy_data_param { shape { dim: 1 } data_filler { type: "nonsense" } }"#,
        1,
    )
    .err()
    .unwrap();
    assert!(e.contains("data_filler[0]"), "{e}");
}

fn image_data(
    list: &Path,
    root: &Path,
    extra: &str,
    seed: u64,
) -> Result<LayerHarness<CpuBackend>, String> {
    let text = format!(
        r#"name: "images" type: "ImageData" top: "data" top: "label"
           image_data_param {{ source: "{}" root_folder: "{}" batch_size: 2 {extra} }}"#,
        list.display(),
        root.display()
    );
    LayerHarness::from_prototxt(&cpu(), &text, &[], seed).map_err(|e| e.to_string())
}

#[test]
fn image_data_reads_the_listed_images() {
    let dir = tempfile::tempdir().unwrap();
    // Three 2x2 grey images with values 10 i + {0, 1, 2, 3}, labels 5 + i.
    for i in 0..3u8 {
        let image = Image {
            height: 2,
            width: 2,
            channels: 1,
            data: (0..4).map(|j| 10 * i + j).collect(),
        };
        std::fs::write(
            dir.path().join(format!("img{i}.png")),
            encode_image(&image, "png").unwrap(),
        )
        .unwrap();
    }
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "img0.png 5\nimg1.png 6\nimg2.png 7\n").unwrap();
    let pixels = |i: usize| (0..4).map(move |j| (10 * i + j) as f32);

    // Grey, batches 0 1 | 2 0 | 1 2.
    let mut h = image_data(&list, dir.path(), "is_color: false", 1).unwrap();
    assert_eq!(h.top(0).shape(), &[2, 1, 2, 2]);
    for ids in [[0, 1], [2, 0], [1, 2]] {
        h.forward().unwrap();
        let want: Vec<f32> = ids.iter().flat_map(|&i| pixels(i)).collect();
        assert_eq!(h.top(0).data_to_vec().unwrap(), want);
        let labels: Vec<f32> = ids.iter().map(|&i| 5.0 + i as f32).collect();
        assert_eq!(h.top(1).data_to_vec().unwrap(), labels);
    }

    // Colour (the default): grey replicated in three channels; resized to 4x6.
    let mut h = image_data(&list, dir.path(), "new_height: 4 new_width: 6", 1).unwrap();
    assert_eq!(h.top(0).shape(), &[2, 3, 4, 6]);
    h.forward().unwrap();
    let data = h.top(0).data_to_vec().unwrap();
    assert_eq!(&data[..24], &data[24..48], "channels 0 and 1 agree");

    // Shuffled: every label appears once per pass over the list.
    let mut h = image_data(&list, dir.path(), "is_color: false shuffle: true", 3).unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        h.forward().unwrap();
        seen.extend(h.top(1).data_to_vec().unwrap());
    }
    for epoch in seen.chunks(3) {
        let mut epoch = epoch.to_vec();
        epoch.sort_by(f32::total_cmp);
        assert_eq!(epoch, [5.0, 6.0, 7.0], "{seen:?}");
    }

    // A missing image is an error naming it.
    std::fs::write(&list, "img0.png 5\nnope.png 6\n").unwrap();
    let mut h = image_data(&list, dir.path(), "", 1).unwrap();
    let e = h.forward().unwrap_err().to_string();
    assert!(e.contains("nope.png"), "{e}");

    let e = image_data(&list, dir.path(), "new_height: 4", 1)
        .err()
        .unwrap();
    assert!(e.contains("new_height and new_width"), "{e}");
    std::fs::write(&list, "").unwrap();
    let e = image_data(&list, dir.path(), "", 1).err().unwrap();
    assert!(e.contains("empty") && e.contains("list.txt"), "{e}");
}

/// Collects every log message of this test binary.
struct Capture;

static CAPTURED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        CAPTURED.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

#[test]
fn logs_upstream_lines() {
    static LOGGER: Capture = Capture;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("logged_lmdb");
    write_lmdb(&source, &(0..3).map(record).collect::<Vec<_>>());
    let mean = dir.path().join("logged_mean.binaryproto");
    rcaffe::data::compute_image_mean(&source, Some(&mean)).unwrap();
    let mut h = data_layer(
        &source,
        &format!(r#"transform_param {{ mean_file: "{}" }}"#, mean.display()),
        r#"top: "data" top: "label""#,
        1,
    );
    h.forward().unwrap();
    h.forward().unwrap();
    drop(h);
    let lines = CAPTURED.lock().unwrap().clone();
    for want in [
        format!("Opened lmdb {}", source.display()),
        format!("Loading mean file from: {}", mean.display()),
        "output data size: 2,1,2,3".to_string(),
        "Restarting data prefetching from start.".to_string(),
        // Record i holds 10 i + j: the mean of 0..6, 10..16, 20..26 is 12.5.
        "mean_value channel [0]: 12.5".to_string(),
        format!("Write to {}", mean.display()),
    ] {
        assert!(
            lines.contains(&want),
            "missing log line {want:?} in {lines:#?}"
        );
    }
}
