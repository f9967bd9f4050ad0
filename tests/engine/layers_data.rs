//! Data layers fed by the program or by window files: MemoryData (upstream's
//! test_memory_data_layer.cpp: setup shapes, batches walked with wrap-around, transformed
//! Datums, set_batch_size; and `Net::set_input_arrays`) and WindowData (R-CNN window files
//! over images written here: labels and foreground fraction, warp and square crops with
//! context padding, mirroring, mean and scale, refused inputs).

use std::path::Path;

use rcaffe::backend::{rng_from_seed, CpuBackend};
use rcaffe::data::imgcodec::{encode_image, Image};
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
    h.layer_mut()
        .as_any_mut()
        .and_then(|layer| layer.downcast_mut())
        .expect("a MemoryData layer")
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

// ---- WindowData ---------------------------------------------------------------------------

/// Colours (BGR) of the left half (x < 10) and right half of the 20x20 test image.
const LEFT: [u8; 3] = [10, 20, 30];
const RIGHT: [u8; 3] = [200, 100, 50];

/// Writes `a.png` (20x20: `LEFT` then `RIGHT` halves) and `b.png` (10x10 grey 7) into `dir`.
fn write_images(dir: &Path) {
    let halves = Image {
        height: 20,
        width: 20,
        channels: 3,
        data: (0..400)
            .flat_map(|i| if i % 20 < 10 { LEFT } else { RIGHT })
            .collect(),
    };
    let grey = Image {
        height: 10,
        width: 10,
        channels: 3,
        data: vec![7; 300],
    };
    for (name, image) in [("a.png", halves), ("b.png", grey)] {
        std::fs::write(dir.join(name), encode_image(&image, "png").unwrap()).unwrap();
    }
}

/// Foreground: class 1 over the left half, class 2 over the right half; background: the
/// whole image a, and b; one window (overlap 0.3) between the thresholds, dropped.
const WINDOWS: &str = "# 0\na.png\n3\n20\n20\n4\n\
                       1 0.9 0 0 9 19\n2 0.8 10 0 19 19\n0 0.1 0 0 19 19\n3 0.3 0 0 4 4\n\
                       # 1\nb.png\n3\n10\n10\n1\n0 0 0 0 9 9\n";

fn window_data(
    dir: &Path,
    windows: &str,
    param: &str,
    transform: &str,
) -> Result<LayerHarness<CpuBackend>, String> {
    let source = dir.join("windows.txt");
    std::fs::write(&source, windows).unwrap();
    let text = format!(
        r#"name: "win" type: "WindowData" top: "data" top: "label"
           window_data_param {{ source: "{}" root_folder: "{}/" batch_size: 8
                                fg_threshold: 0.5 bg_threshold: 0.2 {param} }}
           transform_param {{ crop_size: 4 {transform} }}"#,
        source.display(),
        dir.display()
    );
    LayerHarness::from_prototxt(&cpu(), &text, &[], 5).map_err(|e| e.to_string())
}

/// The 4x4 crop of item `i`, as rows of BGR pixels.
fn crop_pixels(data: &[f32], i: usize) -> Vec<[f32; 3]> {
    let item = &data[i * 48..(i + 1) * 48];
    (0..16)
        .map(|p| [item[p], item[16 + p], item[32 + p]])
        .collect()
}

fn colour(bgr: [u8; 3]) -> [f32; 3] {
    bgr.map(f32::from)
}

#[test]
fn window_data_labels_fg_fraction_and_warped_windows() {
    let dir = tempfile::tempdir().unwrap();
    write_images(dir.path());
    let mut h = window_data(dir.path(), WINDOWS, "fg_fraction: 0.25", "").unwrap();
    assert_eq!(h.top(0).shape(), &[8, 3, 4, 4]);
    assert_eq!(h.top(1).shape(), &[8]);
    let (l, r, grey) = (colour(LEFT), colour(RIGHT), [7.0; 3]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        h.forward().unwrap();
        let labels = h.top(1).data_to_vec().unwrap();
        let data = h.top(0).data_to_vec().unwrap();
        // floor(8 * 0.25) = 2 foreground windows, after 6 background ones.
        assert!(labels[..6].iter().all(|&v| v == 0.0), "{labels:?}");
        for (i, &label) in labels.iter().enumerate() {
            let pixels = crop_pixels(&data, i);
            let want: Vec<[f32; 3]> = match label as i32 {
                1 => vec![l; 16],
                2 => vec![r; 16],
                // Background: all of a (20 -> 4 columns sample 2, 7 | 12, 17), or grey b.
                0 if pixels[0] == grey => vec![grey; 16],
                0 => (0..16).map(|p| if p % 4 < 2 { l } else { r }).collect(),
                other => panic!("label {other}"),
            };
            assert_eq!(pixels, want, "item {i} label {label}");
            seen.insert((label as i32, pixels[0] == grey));
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [(0, false), (0, true), (1, false), (2, false)],
        "every kept window is drawn; the dropped one never"
    );
}

#[test]
fn window_data_context_pad_mirror_mean_and_scale() {
    let dir = tempfile::tempdir().unwrap();
    write_images(dir.path());
    // Window (0, 0)-(9, 19) with context_pad 1 in a crop of 4: widened to (-5, -10)-(15, 30),
    // clipped to (0, 0)-(15, 19), warped to 3 wide x 2 high at column 1, row 1 (see
    // `crop_geometry_by_hand`); its columns sample x = 2.2, 7.5 and 12.8: L L R.
    let only_left = "# 0\na.png\n3 20 20 1\n1 0.9 0 0 9 19\n";
    let params = "fg_fraction: 1 context_pad: 1 scale: 0.5";
    let mut h = window_data(dir.path(), only_left, params, "mirror: true mean_value: 10").unwrap();
    let norm = |bgr: [u8; 3]| bgr.map(|v| (f32::from(v) - 10.0) * 0.5);
    let (l, r, z) = (norm(LEFT), norm(RIGHT), [0.0; 3]);
    let plain: Vec<[f32; 3]> = [[z; 4], [z, l, l, r], [z, l, l, r], [z; 4]].concat();
    let mirrored: Vec<[f32; 3]> = [[z; 4], [r, l, l, z], [r, l, l, z], [z; 4]].concat();
    let mut kinds = [0; 2];
    for _ in 0..4 {
        h.forward().unwrap();
        let data = h.top(0).data_to_vec().unwrap();
        assert_eq!(h.top(1).data_to_vec().unwrap(), [1.0; 8]);
        for i in 0..8 {
            let pixels = crop_pixels(&data, i);
            if pixels == plain {
                kinds[0] += 1;
            } else {
                assert_eq!(pixels, mirrored, "item {i}");
                kinds[1] += 1;
            }
        }
    }
    assert!(kinds[0] > 0 && kinds[1] > 0, "{kinds:?}");
}

#[test]
fn crop_geometry_by_hand() {
    use rcaffe::layers::window_data::{CropGeometry, Placement};
    let place = |crop, context_pad, square, window, mirror| {
        CropGeometry {
            crop,
            context_pad,
            square,
        }
        .place(window, 40, 40, mirror)
        .unwrap()
    };
    let at = |region, size, offset| Placement {
        region,
        size,
        offset,
    };
    // Warp without context: the window onto the whole crop.
    assert_eq!(
        place(4, 0, false, [2, 3, 5, 9], false),
        at([2, 3, 5, 9], [4, 4], [0, 0])
    );
    // context_pad 2 of 8: the window doubles about its centre (12, 12): 8..=16.
    assert_eq!(
        place(8, 2, false, [10, 10, 13, 13], false),
        at([8, 8, 16, 16], [8, 8], [0, 0])
    );
    // At the corner: -2..=6 clipped to 0..=6, 7 of 9 columns warp to round(7 * 8 / 9) = 6 at
    // round(2 * 8 / 9) = 2; mirrored, the padding moves to the other side (none there).
    assert_eq!(
        place(8, 2, false, [0, 0, 3, 3], false),
        at([0, 0, 6, 6], [6, 6], [2, 2])
    );
    assert_eq!(
        place(8, 2, false, [0, 0, 3, 3], true),
        at([0, 0, 6, 6], [6, 6], [0, 2])
    );
    // Square: a 4 x 10 window about (12, 15) becomes 10 x 10 (rounded out to 11 pixels).
    assert_eq!(
        place(10, 0, true, [10, 10, 13, 19], false),
        at([7, 10, 17, 20], [10, 10], [0, 0])
    );
    // The layer test's window: (0, 0)-(9, 19) with context_pad 1 of 4 in a 20x20 image.
    let geometry = CropGeometry {
        crop: 4,
        context_pad: 1,
        square: false,
    };
    assert_eq!(
        geometry.place([0, 0, 9, 19], 20, 20, false).unwrap(),
        at([0, 0, 15, 19], [3, 2], [1, 1])
    );
}

#[test]
fn window_data_refuses_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    write_images(dir.path());
    let refused = |windows: &str, param: &str, transform: &str| {
        window_data(dir.path(), windows, param, transform)
            .err()
            .expect("refused")
    };
    let expect = |e: String, parts: &[&str]| {
        for part in parts {
            assert!(e.contains(part), "{part:?} in {e}");
        }
    };
    expect(
        refused("# 0\na.png\n3\n20\nx\n", "", ""),
        &["windows.txt", "line 5", "width", "\"x\""],
    );
    expect(
        refused("# 0\na.png\n3 20 20 1\n1 0.9 0 0 20 19\n", "", ""),
        &["windows.txt", "line 4", "does not lie in the 20x20 image"],
    );
    expect(
        refused("# 0\na.png\n3 20 20 1\n0 0.9 0 0 9 9\n", "", ""),
        &["line 4", "class above 0"],
    );
    expect(
        refused("# 1\na.png\n3 20 20 0\n", "", ""),
        &["line 1", "image index 1"],
    );
    expect(
        refused("# 0\na.png\n1 20 20 0\n", "", ""),
        &["line 3", "colour"],
    );
    expect(refused("", "", ""), &["windows.txt", "empty"]);
    expect(
        refused("# 0\na.png\n3 20 20 1\n1 0.9 0 0 9 9\n", "", ""),
        &["background", "has none"],
    );
    expect(
        refused(WINDOWS, "crop_mode: \"circle\"", ""),
        &["crop_mode"],
    );
    expect(refused(WINDOWS, "context_pad: 2", ""), &["context_pad"]);
    // Twice this wraps to 0 in 32 bits.
    expect(
        refused(WINDOWS, "context_pad: 2147483648", ""),
        &["context_pad"],
    );
    expect(
        refused(WINDOWS, "", "mean_value: 1 mean_value: 2"),
        &["mean_value"],
    );
    let text = format!(
        r#"name: "win" type: "WindowData" top: "data" top: "label"
           window_data_param {{ source: "{}/windows.txt" batch_size: 8 }}"#,
        dir.path().display()
    );
    let e = LayerHarness::<CpuBackend>::from_prototxt(&cpu(), &text, &[], 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("transform_param.crop_size"), "{e}");

    // A missing image, or one of another size than declared: at forward, or at setup with
    // cache_images; the error names the window file, the line and the image.
    let missing = "# 0\nnope.png\n3 20 20 2\n1 0.9 0 0 9 9\n0 0 0 0 9 9\n";
    let mut h = window_data(dir.path(), missing, "", "").unwrap();
    expect(
        h.forward().unwrap_err().to_string(),
        &["windows.txt", "line 1", "nope.png"],
    );
    expect(
        refused(missing, "cache_images: true", ""),
        &["windows.txt", "line 1", "nope.png"],
    );
    let resized = "# 0\na.png\n3 30 20 2\n1 0.9 0 0 9 9\n0 0 0 0 9 9\n";
    let mut h = window_data(dir.path(), resized, "cache_images: true", "").unwrap();
    expect(
        h.forward().unwrap_err().to_string(),
        &["windows.txt", "line 1", "a.png", "is 20x20", "says 30x20"],
    );
}

#[test]
fn window_data_net_runs_forward_and_backward() {
    let dir = tempfile::tempdir().unwrap();
    write_images(dir.path());
    let source = dir.path().join("windows.txt");
    std::fs::write(&source, WINDOWS).unwrap();
    let mut net = net(&format!(
        r#"
        layer {{ name: "win" type: "WindowData" top: "data" top: "label"
                window_data_param {{ source: "{}" root_folder: "{}/" batch_size: 4
                                     fg_threshold: 0.5 bg_threshold: 0.2 fg_fraction: 0.5
                                     context_pad: 1 crop_mode: "square" }}
                transform_param {{ crop_size: 6 mirror: true mean_value: 100 }} }}
        layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
                inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
        layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
        "#,
        source.display(),
        dir.path().display()
    ));
    for _ in 0..3 {
        let loss = net.forward().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{loss}");
        net.backward().unwrap();
        let labels = net.blob_by_name("label").unwrap().data_to_vec().unwrap();
        assert_eq!(&labels[..2], [0.0, 0.0]);
        assert!(
            labels[2..].iter().all(|&l| l == 1.0 || l == 2.0),
            "{labels:?}"
        );
    }
}

/// A backend number outside the enum (possible in a binary prototxt) is named, not read as
/// LMDB.
#[test]
fn data_refuses_an_unknown_backend() {
    use rcaffe::proto::caffe::{DataParameter, LayerParameter};
    let param = LayerParameter {
        r#type: Some("Data".into()),
        data_param: Some(DataParameter {
            source: Some("no_such_db".into()),
            batch_size: Some(1),
            backend: Some(7),
            ..Default::default()
        }),
        ..Default::default()
    };
    let error = rcaffe::layers::data::DataLayer::new(&param)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("data_param.backend 7 is neither LEVELDB (0) nor LMDB (1)"),
        "{error}"
    );
}
