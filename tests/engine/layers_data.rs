//! Data layers fed by the program or by window files: MemoryData (upstream's
//! test_memory_data_layer.cpp: setup shapes, batches walked with wrap-around, transformed
//! Datums, set_batch_size; and `Net::set_input_arrays`) and WindowData (R-CNN window files
//! over images written here: labels and foreground fraction, warp and square crops with
//! context padding, mirroring, mean and scale, refused inputs).

use std::path::Path;

use rcaffe::backend::{rng_from_seed, CpuBackend};
use rcaffe::layers::memory_data::MemoryDataLayer;
use rcaffe::net::Net;
use rcaffe::proto::caffe::{Datum, NetParameter};
use rcaffe::proto::parse_text;
use rcaffe::testing::{cpu, LayerHarness};

// ---- MemoryData ---------------------------------------------------------------------------

const BATCH: usize = 8;
const BATCHES: usize = 12;
const ITEM_LEN: usize = 4 * 7 * 11;

fn memory_data(extra: &str) -> Result<LayerHarness<CpuBackend>, String> {
    memory_data_with(&format!("batch_size: {BATCH} channels: 4"), extra)
}

fn memory_data_with(sizes: &str, extra: &str) -> Result<LayerHarness<CpuBackend>, String> {
    let text = format!(
        r#"name: "mem" type: "MemoryData" top: "data" top: "label"
           memory_data_param {{ {sizes} height: 7 width: 11 }} {extra}"#
    );
    LayerHarness::from_prototxt(&cpu(), &text, &[], 1).map_err(|e| e.to_string())
}

fn memory(h: &mut LayerHarness<CpuBackend>) -> &mut MemoryDataLayer {
    h.layer_mut().as_memory_data().expect("a MemoryData layer")
}

/// `n` items whose values are distinct (item i, value j: i + j / 1000) and labels 100 + i.
fn arrays(n: usize) -> (Vec<f32>, Vec<f32>) {
    let data = (0..n * ITEM_LEN)
        .map(|k| (k / ITEM_LEN) as f32 + (k % ITEM_LEN) as f32 / 1000.0)
        .collect();
    let labels = (0..n).map(|i| 100.0 + i as f32).collect();
    (data, labels)
}

#[test]
fn memory_data_setup_shapes() {
    let h = memory_data("").unwrap();
    assert_eq!(h.top(0).shape(), &[BATCH, 4, 7, 11]);
    assert_eq!(h.top(1).shape(), &[BATCH]);
    for (field, sizes) in [
        ("batch_size", "channels: 4"),
        ("channels", "batch_size: 8 channels: 0"),
    ] {
        let e = memory_data_with(sizes, "").err().unwrap();
        assert!(e.contains(&format!("memory_data_param.{field}")), "{e}");
    }
}

#[test]
fn memory_data_forward_walks_batches_with_wrap_around() {
    let mut h = memory_data("").unwrap();
    let e = h.forward().unwrap_err().to_string();
    assert!(e.contains("'mem'") && e.contains("set_input_arrays"), "{e}");

    let (data, labels) = arrays(BATCHES * BATCH);
    memory(&mut h)
        .reset(data.clone(), &[BATCHES * BATCH, 4, 7, 11], labels.clone())
        .unwrap();
    for i in 0..BATCHES * 6 {
        let b = i % BATCHES;
        h.forward().unwrap();
        let span = b * BATCH * ITEM_LEN..(b + 1) * BATCH * ITEM_LEN;
        assert_eq!(h.top(0).data_to_vec().unwrap(), &data[span], "batch {i}");
        assert_eq!(
            h.top(1).data_to_vec().unwrap(),
            &labels[b * BATCH..(b + 1) * BATCH]
        );
    }
}

#[test]
fn memory_data_reset_refuses_wrong_arrays() {
    let mut h = memory_data("").unwrap();
    let layer = memory(&mut h);
    let (data, labels) = arrays(12);
    let e = layer
        .reset(data.clone(), &[12, 4, 7, 11], labels.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiple of the batch size"), "{e}");
    let (data, labels) = arrays(16);
    let e = layer
        .reset(data.clone(), &[16, 4, 11, 7], labels.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("[n, 4, 7, 11]"), "{e}");
    let e = layer
        .reset(data.clone(), &[16, 4, 7, 11], labels[..8].to_vec())
        .unwrap_err()
        .to_string();
    assert!(e.contains("same first dimension"), "{e}");
    let e = layer
        .reset(data[..100].to_vec(), &[16, 4, 7, 11], labels.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds 100 values"), "{e}");
    layer.reset(data, &[16, 4, 7, 11], labels).unwrap();
}

/// Datum i: label i, pixels counting on from the previous datum's (mod 256).
fn datums(n: usize) -> Vec<Datum> {
    (0..n)
        .map(|i| Datum {
            channels: Some(4),
            height: Some(7),
            width: Some(11),
            label: Some(i as i32),
            data: Some(
                (0..ITEM_LEN)
                    .map(|j| ((i * ITEM_LEN + j) % 256) as u8)
                    .collect(),
            ),
            ..Default::default()
        })
        .collect()
}

#[test]
fn memory_data_add_datums_default_transform() {
    let mut h = memory_data("").unwrap();
    let num_iter = 5;
    let added = datums(BATCH * num_iter);
    memory(&mut h).add_datums(&added).unwrap();
    let e = memory(&mut h).add_datums(&added).unwrap_err().to_string();
    assert!(e.contains("consumed"), "{e}");
    let e = memory(&mut h).set_batch_size(4).unwrap_err().to_string();
    assert!(e.contains("consumed"), "{e}");
    for iter in 0..num_iter {
        h.forward().unwrap();
        let data = h.top(0).data_to_vec().unwrap();
        let labels = h.top(1).data_to_vec().unwrap();
        for i in 0..BATCH {
            let item = iter * BATCH + i;
            assert_eq!(labels[i], item as f32);
            let want: Vec<f32> = added[item].data().iter().map(|&b| b as f32).collect();
            assert_eq!(&data[i * ITEM_LEN..(i + 1) * ITEM_LEN], &want[..]);
        }
    }
    // Every batch served: more may come.
    memory(&mut h).add_datums(&datums(BATCH)).unwrap();
}

#[test]
fn memory_data_transforms_datums_and_checks_their_shape() {
    // Scale and mean value apply to added Datums (not to reset arrays).
    let mut h = memory_data("transform_param { scale: 0.5 mean_value: 2 }").unwrap();
    let added = datums(BATCH);
    memory(&mut h).add_datums(&added).unwrap();
    h.forward().unwrap();
    let data = h.top(0).data_to_vec().unwrap();
    let want: Vec<f32> = added
        .iter()
        .flat_map(|d| d.data().iter().map(|&b| (b as f32 - 2.0) * 0.5))
        .collect();
    assert_eq!(data, want);
    let (raw, labels) = arrays(BATCH);
    memory(&mut h)
        .reset(raw.clone(), &[BATCH, 4, 7, 11], labels)
        .unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).data_to_vec().unwrap(), raw);

    let mut wrong = datums(BATCH);
    wrong[3].width = Some(10);
    wrong[3].data = Some(vec![0; 4 * 7 * 10]);
    let mut h = memory_data("").unwrap();
    let e = memory(&mut h).add_datums(&wrong).unwrap_err().to_string();
    assert!(e.contains("datum 3") && e.contains("[4, 7, 11]"), "{e}");
}

#[test]
fn memory_data_set_batch_size() {
    let mut h = memory_data("").unwrap();
    let (data, labels) = arrays(24);
    memory(&mut h)
        .reset(data.clone(), &[24, 4, 7, 11], labels.clone())
        .unwrap();
    let e = memory(&mut h).set_batch_size(5).unwrap_err().to_string();
    assert!(e.contains("not a multiple"), "{e}");
    memory(&mut h).set_batch_size(12).unwrap();
    assert_eq!(memory(&mut h).batch_size(), 12);
    for b in [0, 1, 0] {
        h.forward().unwrap();
        assert_eq!(h.top(0).shape(), &[12, 4, 7, 11]);
        assert_eq!(
            h.top(0).data_to_vec().unwrap(),
            &data[b * 12 * ITEM_LEN..(b + 1) * 12 * ITEM_LEN]
        );
        assert_eq!(
            h.top(1).data_to_vec().unwrap(),
            &labels[b * 12..(b + 1) * 12]
        );
    }
}

fn net(text: &str) -> Net<CpuBackend> {
    let param: NetParameter = parse_text(text, Path::new("<test net>")).unwrap();
    Net::new(&param, &cpu(), rng_from_seed(3)).unwrap()
}

#[test]
fn net_set_input_arrays_feeds_the_first_layer() {
    let mut net = net(r#"
        name: "memnet"
        layer { name: "mem" type: "MemoryData" top: "data" top: "label"
                memory_data_param { batch_size: 2 channels: 1 height: 1 width: 3 } }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
                inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
        "#);
    let e = net.forward().unwrap_err().to_string();
    assert!(e.contains("'mem'"), "{e}");
    let e = net
        .set_input_arrays(vec![0.0; 9], &[3, 1, 1, 3], vec![0.0; 3])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'mem'") && e.contains("multiple of the batch size"),
        "{e}"
    );
    let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
    net.set_input_arrays(data.clone(), &[4, 1, 1, 3], vec![0.0, 1.0, 1.0, 0.0])
        .unwrap();
    for b in [0, 1, 0] {
        let loss = net.forward().unwrap();
        assert!(loss.is_finite() && loss > 0.0);
        net.backward().unwrap();
        let fed = net.blob_by_name("data").unwrap().data_to_vec().unwrap();
        assert_eq!(fed, &data[b * 6..(b + 1) * 6]);
    }
    net.memory_data_layer_mut()
        .unwrap()
        .set_batch_size(4)
        .unwrap();
    net.forward().unwrap();
    assert_eq!(net.blob_by_name("ip").unwrap().shape(), &[4, 2]);

    let mut other = self::net(
        r#"
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }
        "#,
    );
    let e = other
        .set_input_arrays(vec![0.0], &[1, 1, 1, 1], vec![0.0])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("first layer is a MemoryData") && e.contains("'in'"),
        "{e}"
    );
}
