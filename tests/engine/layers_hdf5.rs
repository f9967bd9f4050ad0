//! HDF5 in and out: the h5py-made fixtures of tests/data/hdf5 read value for value, the
//! HDF5Data layer batch by batch across files with wrap-around (upstream's
//! src/caffe/test/test_hdf5data_layer.cpp re-derived for the smaller fixtures), shuffling,
//! bad inputs refused with the file and dataset named, HDF5Output's round trip (upstream's
//! test_hdf5_output_layer.cpp), and weights in upstream's `.caffemodel.h5` layout.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rcaffe::backend::{rng_from_seed, CpuBackend};
use rcaffe::data::hdf5::{add_root_array, write_atomically, FileBuilder, Reader};
use rcaffe::net::Net;
use rcaffe::proto::parse_text;
use rcaffe::testing::{cpu, LayerHarness};

/// The fixtures: 10 rows of 2x3x2 data counting up from 0 (the gzip file: from 120), labels
/// 1..=10 and label2 = label + 1 (see tests/data/hdf5/README.md).
const ROWS: usize = 10;
const ROW_SIZE: usize = 12;
const FILE_TOTAL: f32 = 120.0;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hdf5")
        .join(name)
}

/// A source list in `dir` naming `files` by absolute path.
fn source_list(dir: &Path, files: &[PathBuf]) -> PathBuf {
    let list = dir.join("list.txt");
    let text: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    std::fs::write(&list, text).unwrap();
    list
}

fn both_files(dir: &Path) -> PathBuf {
    source_list(
        dir,
        &[fixture("sample_data.h5"), fixture("sample_data_2_gzip.h5")],
    )
}

fn hdf5_data(source: &Path, batch_size: usize, shuffle: bool, tops: &[&str]) -> String {
    let tops: String = tops.iter().map(|t| format!("top: \"{t}\" ")).collect();
    format!(
        "name: \"h5\" type: \"HDF5Data\" {tops} hdf5_data_param {{ source: \"{}\" \
         batch_size: {batch_size} shuffle: {shuffle} }}",
        source.display()
    )
}

fn harness(text: &str) -> LayerHarness<CpuBackend> {
    LayerHarness::from_prototxt(&cpu(), text, &[], 1701).unwrap_or_else(|e| panic!("{e}"))
}

/// The error building the layer, or its first forward pass, gives, as text.
fn failure(text: &str) -> String {
    match LayerHarness::<CpuBackend>::from_prototxt(&cpu(), text, &[], 1701) {
        Err(e) => e.to_string(),
        Ok(mut h) => match h.forward() {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected an error from {text}"),
        },
    }
}

fn counting(from: f32, n: usize) -> Vec<f32> {
    (0..n).map(|i| from + i as f32).collect()
}

#[test]
fn h5py_fixtures_read_value_for_value() {
    let plain = Reader::open(&fixture("sample_data.h5")).unwrap();
    let data = plain.read_array("data").unwrap();
    assert_eq!(data.shape, [ROWS, 2, 3, 2]);
    assert_eq!(data.values, counting(0.0, ROWS * ROW_SIZE));
    let label = plain.read_array("label").unwrap();
    assert_eq!(label.shape, [ROWS, 1]);
    assert_eq!(label.values, counting(1.0, ROWS));
    let label2 = plain.read_array("label2").unwrap(); // float64
    assert_eq!(label2.values, counting(2.0, ROWS));

    // Chunked, gzip-compressed: float64 data, float32 label, uint8 label2, a 3-axis cube.
    let gzip = Reader::open(&fixture("sample_data_2_gzip.h5")).unwrap();
    let data = gzip.read_array("data").unwrap();
    assert_eq!(data.shape, [ROWS, 2, 3, 2]);
    assert_eq!(data.values, counting(FILE_TOTAL, ROWS * ROW_SIZE));
    assert_eq!(
        gzip.read_array("label").unwrap().values,
        counting(1.0, ROWS)
    );
    assert_eq!(
        gzip.read_array("label2").unwrap().values,
        counting(2.0, ROWS)
    );
    let cube = gzip.read_array("cube").unwrap();
    assert_eq!(cube.shape, [2, 3, 4]);
    assert_eq!(cube.values, counting(0.0, 24));

    let test = Reader::open(&fixture("classification/test.h5")).unwrap();
    let data = test.read_array("data").unwrap();
    assert_eq!(data.shape, [200, 4]);
    let labels = test.read_array("label").unwrap();
    assert_eq!(labels.shape, [200]);
    assert!(labels.values.iter().all(|&l| l == 0.0 || l == 1.0));
}

#[test]
fn batches_follow_upstream_across_files_and_wrap_around() {
    let dir = tempfile::tempdir().unwrap();
    let source = both_files(dir.path());
    let batch = 5;
    let mut h = harness(&hdf5_data(
        &source,
        batch,
        false,
        &["data", "label", "label2"],
    ));
    assert_eq!(h.top(0).shape(), [batch, 2, 3, 2]);
    assert_eq!(h.top(1).shape(), [batch, 1]);
    assert_eq!(h.top(2).shape(), [batch, 1]);
    // Two batches a file; the second file's data is offset by the first's total; after both
    // files, back to the first.
    for iter in 0..10 {
        h.forward().unwrap();
        let half = if iter % 2 == 0 { 0 } else { batch };
        let file_offset = if iter % 4 < 2 { 0.0 } else { FILE_TOTAL };
        let label = counting(1.0 + half as f32, batch);
        assert_eq!(h.top(1).data_to_vec().unwrap(), label, "iter {iter}");
        let label2: Vec<f32> = label.iter().map(|l| l + 1.0).collect();
        assert_eq!(h.top(2).data_to_vec().unwrap(), label2, "iter {iter}");
        let data = counting(file_offset + (half * ROW_SIZE) as f32, batch * ROW_SIZE);
        assert_eq!(h.top(0).data_to_vec().unwrap(), data, "iter {iter}");
    }
}

#[test]
fn a_batch_larger_than_a_file_wraps_within_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_list(dir.path(), &[fixture("sample_data.h5")]);
    let mut h = harness(&hdf5_data(&source, 7, false, &["label"]));
    h.forward().unwrap();
    assert_eq!(h.top(0).data_to_vec().unwrap(), counting(1.0, 7));
    h.forward().unwrap();
    assert_eq!(
        h.top(0).data_to_vec().unwrap(),
        [8.0, 9.0, 10.0, 1.0, 2.0, 3.0, 4.0]
    );
}

/// The first value of a row of `data` names the row across both files.
fn row_ids(values: &[f32]) -> Vec<u32> {
    values
        .chunks(ROW_SIZE)
        .map(|row| (row[0] / ROW_SIZE as f32) as u32)
        .collect()
}

#[test]
fn shuffle_reads_every_row_once_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let source = both_files(dir.path());
    let batch = 5;
    let mut h = harness(&hdf5_data(&source, batch, true, &["data", "label"]));
    let per_epoch = 2 * ROWS / batch;
    let mut orders = Vec::new();
    for epoch in 0..3 {
        let mut seen = Vec::new();
        for _ in 0..per_epoch {
            h.forward().unwrap();
            let data = h.top(0).data_to_vec().unwrap();
            let labels = h.top(1).data_to_vec().unwrap();
            for (row, label) in row_ids(&data).into_iter().zip(labels) {
                // The label travels with its row.
                assert_eq!(label, (row as usize % ROWS) as f32 + 1.0, "epoch {epoch}");
                seen.push(row);
            }
        }
        let distinct: BTreeSet<u32> = seen.iter().copied().collect();
        assert_eq!(distinct, (0..2 * ROWS as u32).collect(), "epoch {epoch}");
        orders.push(seen);
    }
    let in_order: Vec<u32> = (0..2 * ROWS as u32).collect();
    assert!(orders.iter().any(|o| *o != in_order), "{orders:?}");
    assert_ne!(orders[0], orders[1], "each epoch is shuffled anew");
}

#[test]
fn bad_inputs_are_refused_naming_the_file_and_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let tops = ["data", "label"];

    let missing_list = dir.path().join("no-list.txt");
    let err = failure(&hdf5_data(&missing_list, 2, false, &tops));
    assert!(err.contains("no-list.txt"), "{err}");

    let empty = source_list(dir.path(), &[]);
    let err = failure(&hdf5_data(&empty, 2, false, &tops));
    assert!(err.contains("at least 1 HDF5 filename"), "{err}");

    let missing_file = dir.path().join("absent.h5");
    let list = source_list(dir.path(), &[missing_file]);
    let err = failure(&hdf5_data(&list, 2, false, &tops));
    assert!(
        err.contains("absent.h5") && err.contains("Failed opening"),
        "{err}"
    );

    let list = source_list(dir.path(), &[fixture("sample_data.h5")]);
    let err = failure(&hdf5_data(&list, 2, false, &["data", "weights"]));
    assert!(
        err.contains("sample_data.h5") && err.contains("dataset weights"),
        "{err}"
    );

    // A file whose datasets disagree on the number of rows.
    let uneven = dir.path().join("uneven.h5");
    let mut file = FileBuilder::new();
    add_root_array(&mut file, "data", &[4, 2], &[0.0; 8]);
    add_root_array(&mut file, "label", &[3], &[0.0; 3]);
    write_atomically(&uneven, file).unwrap();
    let list = source_list(dir.path(), &[uneven]);
    let err = failure(&hdf5_data(&list, 2, false, &tops));
    assert!(
        err.contains("uneven.h5") && err.contains("dataset label has 3 rows"),
        "{err}"
    );

    // A later file whose rows have another shape, met on the wrap into it.
    let narrow = dir.path().join("narrow.h5");
    let mut file = FileBuilder::new();
    add_root_array(&mut file, "data", &[2, 5], &[0.0; 10]);
    add_root_array(&mut file, "label", &[2, 1], &[0.0; 2]);
    write_atomically(&narrow, file).unwrap();
    let list = source_list(dir.path(), &[fixture("sample_data.h5"), narrow]);
    let mut h = harness(&hdf5_data(&list, 5, false, &tops));
    h.forward().unwrap();
    let err = h.forward().unwrap_err().to_string();
    assert!(
        err.contains("narrow.h5") && err.contains("dataset data"),
        "{err}"
    );

    let list = source_list(dir.path(), &[fixture("sample_data.h5")]);
    let err = failure(&hdf5_data(&list, 0, false, &tops));
    assert!(err.contains("hdf5_data_param.batch_size"), "{err}");
    let with_transform = format!(
        "{} transform_param {{ scale: 2 }}",
        hdf5_data(&list, 2, false, &tops)
    );
    assert!(failure(&with_transform).contains("transform_param"));
}

#[test]
fn hdf5_output_writes_what_hdf5_data_read() {
    let dir = tempfile::tempdir().unwrap();
    let list = source_list(dir.path(), &[fixture("sample_data.h5")]);
    let out = dir.path().join("out.h5");
    let net_text = format!(
        "name: 'roundtrip'\nlayer {{ {} }}\nlayer {{ name: 'out' type: 'HDF5Output' \
         bottom: 'data' bottom: 'label' hdf5_output_param {{ file_name: '{}' }} }}",
        hdf5_data(&list, ROWS, false, &["data", "label"]),
        out.display()
    );
    let param = parse_text(&net_text, Path::new("<roundtrip>")).unwrap();
    let mut net = Net::new(&param, &cpu(), rng_from_seed(1701)).unwrap();
    net.forward().unwrap();

    let written = Reader::open(&out).unwrap();
    let data = written.read_array("data").unwrap();
    assert_eq!(data.shape, [ROWS, 2, 3, 2]);
    assert_eq!(data.values, counting(0.0, ROWS * ROW_SIZE));
    // The label is written in its legacy 4-axis shape, as upstream.
    let label = written.read_array("label").unwrap();
    assert_eq!(label.shape, [ROWS, 1, 1, 1]);
    assert_eq!(label.values, counting(1.0, ROWS));

    // Bottoms of different numbers of items are refused.
    let unequal = format!(
        "name: 'unequal'\nlayer {{ name: 'd' type: 'DummyData' top: 'x' top: 'y' \
         dummy_data_param {{ shape {{ dim: 3 dim: 2 }} shape {{ dim: 2 }} }} }}\n\
         layer {{ name: 'o' type: 'HDF5Output' bottom: 'x' bottom: 'y' \
         hdf5_output_param {{ file_name: '{}' }} }}",
        dir.path().join("unequal.h5").display()
    );
    let param = parse_text(&unequal, Path::new("<unequal>")).unwrap();
    let err = match Net::new(&param, &cpu(), rng_from_seed(1)) {
        Err(e) => e.to_string(),
        Ok(mut net) => net.forward().unwrap_err().to_string(),
    };
    assert!(
        err.contains("3 items") && err.contains("label bottom 2"),
        "{err}"
    );
}

const IP_NET: &str = r#"
name: "ip"
layer {
  name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 1 dim: 3 } shape { dim: 1 dim: 2 } }
}
layer {
  name: "ip" type: "InnerProduct" bottom: "x" top: "p"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } }
}
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
"#;

fn net(text: &str) -> Net<CpuBackend> {
    let param = parse_text(text, Path::new("<net>")).unwrap();
    Net::new(&param, &cpu(), rng_from_seed(1701)).unwrap()
}

#[test]
fn a_caffemodel_h5_written_by_h5py_in_upstreams_layout_loads() {
    let mut net = net(IP_NET);
    net.copy_trained_layers_from_file(&fixture("upstream_layout.caffemodel.h5"))
        .unwrap();
    let weights: Vec<f32> = (0..6).map(|i| (i as f32 - 2.5) / 4.0).collect();
    assert_eq!(net.learnable_params()[0].data_to_vec().unwrap(), weights);
    assert_eq!(
        net.learnable_params()[1].data_to_vec().unwrap(),
        [0.5, -0.25]
    );

    // The same layer with another shape is refused, naming the dataset.
    let mut wider = self::net(
        &IP_NET
            .replace("num_output: 2", "num_output: 3")
            .replace("shape { dim: 1 dim: 2 }", "shape { dim: 1 dim: 3 }"),
    );
    let err = wider
        .copy_trained_layers_from_file(&fixture("upstream_layout.caffemodel.h5"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data/ip/0") && err.contains("shape mismatch"),
        "{err}"
    );
}

const SHARED_NET: &str = r#"
name: "shared"
layer {
  name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 } }
}
layer {
  name: "ip1" type: "InnerProduct" bottom: "x" top: "h" param { name: "w" }
  inner_product_param { num_output: 3 bias_term: false weight_filler { type: "gaussian" std: 1 } }
}
layer {
  name: "ip2" type: "InnerProduct" bottom: "h" top: "p" param { name: "w" }
  inner_product_param { num_output: 3 bias_term: false weight_filler { type: "gaussian" std: 1 } }
}
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
"#;

#[test]
fn weights_round_trip_through_hdf5_with_a_shared_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.caffemodel.h5");
    let mut trained = net(SHARED_NET);
    trained.forward_backward().unwrap();
    trained.write_hdf5(&path, true).unwrap();

    let file = Reader::open(&path).unwrap();
    assert_eq!(file.links("data").unwrap(), ["data", "ip1", "ip2", "loss"]);
    // The shared weight is stored once, under its owner; its diff under both layers.
    assert!(file.has_dataset("data/ip1/0") && !file.has_dataset("data/ip2/0"));
    assert!(file.has_dataset("diff/ip1/0") && file.has_dataset("diff/ip2/0"));
    let want = trained.learnable_params()[0].data_to_vec().unwrap();
    assert_eq!(file.read_array("data/ip1/0").unwrap().values, want);
    assert_eq!(
        file.read_array("diff/ip2/0").unwrap().values,
        trained.learnable_params()[0].diff_to_vec().unwrap()
    );

    let mut fresh = {
        let param = parse_text(SHARED_NET, Path::new("<net>")).unwrap();
        Net::new(&param, &cpu(), rng_from_seed(7)).unwrap()
    };
    assert_ne!(fresh.learnable_params()[0].data_to_vec().unwrap(), want);
    fresh.copy_trained_layers_from_file(&path).unwrap();
    assert_eq!(fresh.learnable_params()[0].data_to_vec().unwrap(), want);
}

#[test]
fn weights_in_hdf5_refuse_layer_names_the_layout_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twice.caffemodel.h5");
    let twice = IP_NET.replace(
        r#"layer { name: "loss""#,
        r#"layer { name: "ip" type: "InnerProduct" bottom: "p" top: "q"
                   inner_product_param { num_output: 2 } }
           layer { name: "loss""#,
    );
    let err = net(&twice)
        .write_hdf5(&path, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("twice.caffemodel.h5") && err.contains("\"ip\" names two layers"),
        "{err}"
    );
    assert!(!path.exists());
    let slash = IP_NET.replace(r#"name: "ip""#, r#"name: "a/ip""#);
    let err = net(&slash)
        .write_hdf5(&path, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"a/ip\" is not a valid HDF5 group name"),
        "{err}"
    );
}
