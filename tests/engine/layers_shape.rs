//! Shape and selection layers: Tile, Reduction, Parameter, BatchReindex, Filter. Expected
//! values are computed here from upstream's formulas (cases from upstream's
//! src/caffe/test/test_{tile,reduction,batch_reindex,filter}_layer.cpp); gradients against
//! central differences; a net wiring all five runs forward and backward.

use std::path::Path;

use rcaffe::backend::{rng_from_seed, CpuBackend};
use rcaffe::layers::create_layer;
use rcaffe::net::Net;
use rcaffe::proto::caffe::{LayerParameter, ReductionParameter};
use rcaffe::proto::parse_text;
use rcaffe::testing::{cpu, CheckBottoms, GradientChecker, LayerHarness};

type H = LayerHarness<CpuBackend>;

fn harness(text: &str, shapes: &[&[usize]]) -> H {
    LayerHarness::from_prototxt(&cpu(), text, shapes, 1701).unwrap_or_else(|e| panic!("{e}"))
}

/// The error building the layer, or its first forward pass, gives, as text.
fn failure(text: &str, shapes: &[&[usize]]) -> String {
    match LayerHarness::from_prototxt(&cpu(), text, shapes, 1701) {
        Err(e) => e.to_string(),
        Ok(mut h) => match h.forward() {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected an error from {text}"),
        },
    }
}

fn top(h: &H, i: usize) -> Vec<f32> {
    h.top(i).data_to_vec().unwrap()
}
fn bottom(h: &H, i: usize) -> Vec<f32> {
    h.bottom(i).data_to_vec().unwrap()
}
fn bottom_diff(h: &H, i: usize) -> Vec<f32> {
    h.bottom(i).diff_to_vec().unwrap()
}

fn assert_all_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (f64::from(g) - w).abs() <= 1e-5 * w.abs().max(1.0);
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

fn widened(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

// ---- Tile ---------------------------------------------------------------------------------

/// `top[o, t, r] = bottom[o, r]` with `r` over the `inner` elements from the axis on.
fn tiled(x: &[f32], outer: usize, tiles: usize) -> Vec<f64> {
    let inner = x.len() / outer;
    (0..outer)
        .flat_map(|o| (0..tiles).flat_map(move |_| (0..inner).map(move |r| o * inner + r)))
        .map(|i| f64::from(x[i]))
        .collect()
}

#[test]
fn tile_forward_repeats_the_blocks_from_the_axis_on() {
    let shape: &[usize] = &[2, 3, 4, 5];
    // (axis, tiles, outer, top shape)
    let cases: [(i32, usize, usize, [usize; 4]); 5] = [
        (0, 3, 1, [6, 3, 4, 5]),
        (1, 3, 2, [2, 9, 4, 5]),
        (1, 1, 2, [2, 3, 4, 5]),
        (3, 2, 24, [2, 3, 4, 10]),
        (-1, 2, 24, [2, 3, 4, 10]),
    ];
    for (axis, tiles, outer, want_shape) in cases {
        let text = format!(r#"type: "Tile" tile_param {{ axis: {axis} tiles: {tiles} }} top: "y""#);
        let mut h = harness(&text, &[shape]);
        h.forward().unwrap();
        assert_eq!(h.top(0).shape(), want_shape, "{text}");
        let want = tiled(&bottom(&h, 0), outer, tiles);
        assert_all_close(&top(&h, 0), &want, &text);
    }
}

#[test]
fn tile_gradient() {
    for axis in [0, 1, -1] {
        let text = format!(r#"type: "Tile" tile_param {{ axis: {axis} tiles: 3 }}"#);
        let mut h = harness(&text, &[&[2, 3, 2]]);
        GradientChecker::new(1e-2, 1e-2)
            .check_exhaustive(&mut h, None)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}

#[test]
fn tile_backward_sums_the_copies() {
    let mut h = harness(r#"type: "Tile" tile_param { tiles: 2 }"#, &[&[1, 2]]);
    h.forward().unwrap();
    h.top_mut(0).set_diff(&[1.0, 2.0, 10.0, 20.0]).unwrap();
    h.backward(&[true]).unwrap();
    assert_eq!(bottom_diff(&h, 0), [11.0, 22.0]);
}

#[test]
fn tile_refuses_bad_parameters() {
    let shapes: &[&[usize]] = &[&[2, 3]];
    let missing = failure(r#"type: "Tile" tile_param { axis: 1 }"#, shapes);
    assert!(
        missing.contains("tile_param.tiles must be specified"),
        "{missing}"
    );
    let zero = failure(r#"type: "Tile" tile_param { tiles: 0 }"#, shapes);
    assert!(zero.contains("tile_param.tiles must be positive"), "{zero}");
    let axis = failure(r#"type: "Tile" tile_param { axis: 2 tiles: 2 }"#, shapes);
    assert!(axis.contains("tile_param.axis"), "{axis}");
}

// ---- Reduction ----------------------------------------------------------------------------

/// Each of the `num` rows of `x` reduced as `op` says, times `coeff` (over the row's length
/// for MEAN).
fn reduced(x: &[f32], num: usize, op: &str, coeff: f64) -> Vec<f64> {
    let dim = x.len() / num;
    x.chunks(dim)
        .map(|row| {
            let row = widened(row);
            let value: f64 = match op {
                "SUM" => row.iter().sum(),
                "MEAN" => row.iter().sum::<f64>() / dim as f64,
                "ASUM" => row.iter().map(|v| v.abs()).sum(),
                "SUMSQ" => row.iter().map(|v| v * v).sum(),
                _ => unreachable!("{op}"),
            };
            coeff * value
        })
        .collect()
}

const REDUCTIONS: [&str; 4] = ["SUM", "MEAN", "ASUM", "SUMSQ"];

fn reduction_text(op: &str, axis: Option<i32>, coeff: Option<f32>) -> String {
    let axis = axis.map_or(String::new(), |a| format!("axis: {a}"));
    let coeff = coeff.map_or(String::new(), |c| format!("coeff: {c}"));
    format!(r#"type: "Reduction" reduction_param {{ operation: {op} {axis} {coeff} }}"#)
}

#[test]
fn reduction_forward_reduces_every_axis_from_axis_on() {
    let shape: &[usize] = &[2, 3, 4, 5];
    // (axis, num, top shape)
    let axes: [(Option<i32>, usize, &[usize]); 4] = [
        (None, 1, &[]),
        (Some(1), 2, &[2]),
        (Some(3), 24, &[2, 3, 4]),
        (Some(-2), 6, &[2, 3]),
    ];
    for op in REDUCTIONS {
        for (axis, num, want_shape) in axes {
            for coeff in [None, Some(2.3)] {
                let text = reduction_text(op, axis, coeff);
                let mut h = harness(&text, &[shape]);
                h.forward().unwrap();
                assert_eq!(h.top(0).shape(), want_shape, "{text}");
                let want = reduced(&bottom(&h, 0), num, op, f64::from(coeff.unwrap_or(1.0)));
                assert_all_close(&top(&h, 0), &want, &text);
            }
        }
    }
}

#[test]
fn reduction_backward_spreads_each_items_gradient() {
    let x = [1.0, -2.0, 0.0, 3.0];
    let dy = [0.5, -4.0];
    // d/dx of coeff * op(row) times dy, coeff 2, rows [1, -2] and [0, 3].
    let cases: [(&str, [f32; 4]); 4] = [
        ("SUM", [1.0, 1.0, -8.0, -8.0]),
        ("MEAN", [0.5, 0.5, -4.0, -4.0]),
        ("ASUM", [1.0, -1.0, 0.0, -8.0]),
        ("SUMSQ", [2.0, -4.0, 0.0, -48.0]),
    ];
    for (op, want) in cases {
        let text = reduction_text(op, Some(1), Some(2.0));
        let mut h = harness(&text, &[&[2, 2]]);
        h.set_bottom(0, &x).unwrap();
        h.forward().unwrap();
        h.top_mut(0).set_diff(&dy).unwrap();
        h.backward(&[true]).unwrap();
        assert_eq!(bottom_diff(&h, 0), want, "{text}");
    }
}

#[test]
fn reduction_gradient() {
    for op in REDUCTIONS {
        for (axis, coeff) in [(None, None), (Some(1), Some(2.3)), (Some(-1), Some(-0.5))] {
            let text = reduction_text(op, axis, coeff);
            let mut h = harness(&text, &[&[2, 3, 2]]);
            let mut checker = GradientChecker::new(1e-2, 2e-3);
            if op == "ASUM" {
                // |x| has a kink at 0 that a step of 1e-2 straddles.
                checker = checker.with_kink(0.0, 2e-2);
            }
            checker
                .check_exhaustive(&mut h, None)
                .unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }
}

#[test]
fn reduction_refuses_bad_parameters() {
    let axis = failure(&reduction_text("SUM", Some(4), None), &[&[2, 3, 4, 5]]);
    assert!(axis.contains("reduction_param.axis"), "{axis}");
    let mut param = LayerParameter {
        r#type: Some("Reduction".into()),
        reduction_param: Some(ReductionParameter {
            operation: Some(7),
            ..Default::default()
        }),
        ..Default::default()
    };
    param.name = Some("r".into());
    let error = create_layer::<CpuBackend>(&param)
        .err()
        .expect("operation 7 refused");
    assert!(
        error.to_string().contains("reduction_param.operation 7"),
        "{error}"
    );
}

// ---- Parameter ----------------------------------------------------------------------------

#[test]
fn parameter_top_is_its_parameter() {
    let text = r#"type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } } top: "p""#;
    let mut h = harness(text, &[]);
    assert_eq!(h.num_params(), 1);
    assert_eq!(h.param_blob(0).shape(), [2, 3]);
    assert_eq!(h.param_blob(0).data_to_vec().unwrap(), [0.0; 6]);
    let values = [1.0, -2.0, 3.0, 0.5, 4.0, -6.0];
    h.param_blob_mut(0).set_data(&values).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), [2, 3]);
    assert_eq!(top(&h, 0), values);

    // Backward adds the top's gradient to the parameter's (the solver zeroes it).
    h.param_blob_mut(0).set_diff(&[1.0; 6]).unwrap();
    h.top_mut(0).set_diff(&values).unwrap();
    h.backward(&[]).unwrap();
    let want: Vec<f32> = values.iter().map(|v| v + 1.0).collect();
    assert_eq!(h.param_blob(0).diff_to_vec().unwrap(), want);

    h.param_blob_mut(0).set_diff(&[0.0; 6]).unwrap();
    h.set_param_propagate_down(0, false);
    h.backward(&[]).unwrap();
    assert_eq!(h.param_blob(0).diff_to_vec().unwrap(), [0.0; 6]);
}

#[test]
fn parameter_gradient() {
    let text = r#"type: "Parameter" parameter_param { shape { dim: 3 dim: 2 } }"#;
    let mut h = harness(text, &[]);
    let values = [0.3, -1.2, 2.0, 0.7, -0.4, 1.5];
    h.param_blob_mut(0).set_data(&values).unwrap();
    GradientChecker::new(1e-2, 1e-3)
        .check_exhaustive(&mut h, CheckBottoms::ParamsOnly)
        .unwrap();
}

// ---- BatchReindex -------------------------------------------------------------------------

const REINDEX: &str = r#"type: "BatchReindex""#;

#[test]
fn batch_reindex_gathers_items_by_index() {
    let mut h = harness(REINDEX, &[&[5, 4, 3, 2], &[6]]);
    let indices = [2.0, 0.0, 1.0, 2.0, 4.0, 0.0];
    h.set_bottom(1, &indices).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), [6, 4, 3, 2]);
    let x = bottom(&h, 0);
    let item = 24;
    let want: Vec<f64> = indices
        .iter()
        .flat_map(|&n| widened(&x[n as usize * item..][..item]))
        .collect();
    assert_all_close(&top(&h, 0), &want, "BatchReindex forward");
}

#[test]
fn batch_reindex_backward_adds_into_each_picked_item() {
    let mut h = harness(REINDEX, &[&[3, 2], &[4]]);
    h.set_bottom(1, &[2.0, 0.0, 2.0, 2.0]).unwrap();
    h.forward().unwrap();
    h.top_mut(0)
        .set_diff(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
        .unwrap();
    h.backward(&[true, false]).unwrap();
    // Item 0 from top item 1, item 1 never picked, item 2 from top items 0, 2 and 3.
    assert_eq!(bottom_diff(&h, 0), [3.0, 4.0, 0.0, 0.0, 13.0, 16.0]);
    let error = h.backward(&[true, true]).unwrap_err().to_string();
    assert!(
        error.contains("cannot backpropagate to bottom 1"),
        "{error}"
    );
}

#[test]
fn batch_reindex_gradient() {
    let mut h = harness(REINDEX, &[&[4, 3, 2], &[5]]);
    h.set_bottom(1, &[3.0, 1.0, 3.0, 0.0, 1.0]).unwrap();
    GradientChecker::new(1e-2, 1e-3)
        .check_exhaustive(&mut h, Some(0))
        .unwrap();
}

#[test]
fn batch_reindex_refuses_indices_outside_the_batch() {
    for bad in [-1.0, 4.0, f32::NAN] {
        let mut h = harness(REINDEX, &[&[4, 2], &[3]]);
        h.set_bottom(1, &[0.0, bad, 1.0]).unwrap();
        let error = h.forward().unwrap_err().to_string();
        assert!(
            error.contains("bottom 1 (the indices) element 1") && error.contains("outside 0..4"),
            "{bad}: {error}"
        );
    }
    let shape = failure(REINDEX, &[&[4, 2], &[3, 1]]);
    assert!(shape.contains("must have 1 axis"), "{shape}");
}

// ---- Filter -------------------------------------------------------------------------------

const FILTER: &str = r#"type: "Filter" bottom: "a" bottom: "b" bottom: "s" top: "fa" top: "fb""#;

#[test]
fn filter_keeps_the_selected_items_of_every_bottom() {
    let mut h = harness(FILTER, &[&[4, 3, 2], &[4, 2], &[4, 1, 1]]);
    // Setup keeps every item, as upstream's first reshape.
    assert_eq!(h.top(0).shape(), [4, 3, 2]);
    h.set_bottom(2, &[0.0, 1.0, 0.0, -2.5]).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), [2, 3, 2]);
    assert_eq!(h.top(1).shape(), [2, 2]);
    for (i, item) in [(0, 6), (1, 2)] {
        let x = bottom(&h, i);
        let want: Vec<f64> = [1, 3]
            .iter()
            .flat_map(|&n| widened(&x[n * item..][..item]))
            .collect();
        assert_all_close(&top(&h, i), &want, &format!("Filter top {i}"));
    }
}

#[test]
fn filter_backward_returns_gradients_to_the_selected_items() {
    let mut h = harness(FILTER, &[&[3, 2], &[3], &[3]]);
    h.set_bottom(2, &[1.0, 0.0, 1.0]).unwrap();
    h.forward().unwrap();
    h.top_mut(0).set_diff(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    h.top_mut(1).set_diff(&[5.0, 6.0]).unwrap();
    h.bottom_mut(0).set_diff(&[9.0; 6]).unwrap();
    h.backward(&[true, true, false]).unwrap();
    assert_eq!(bottom_diff(&h, 0), [1.0, 2.0, 0.0, 0.0, 3.0, 4.0]);
    assert_eq!(bottom_diff(&h, 1), [5.0, 0.0, 6.0]);
    let error = h.backward(&[true, true, true]).unwrap_err().to_string();
    assert!(
        error.contains("cannot backpropagate to the selector"),
        "{error}"
    );
}

#[test]
fn filter_with_nothing_selected_gives_empty_tops_and_zero_gradients() {
    let mut h = harness(FILTER, &[&[3, 2], &[3], &[3]]);
    h.set_bottom(2, &[0.0; 3]).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), [0, 2]);
    assert_eq!(h.top(1).shape(), [0]);
    h.bottom_mut(0).set_diff(&[9.0; 6]).unwrap();
    h.backward(&[true, false, false]).unwrap();
    assert_eq!(bottom_diff(&h, 0), [0.0; 6]);
}

#[test]
fn filter_gradient() {
    let mut h = harness(FILTER, &[&[4, 3, 2], &[4, 2], &[4]]);
    h.set_bottom(2, &[1.0, 0.0, 1.0, 1.0]).unwrap();
    GradientChecker::new(1e-2, 1e-3)
        .check_exhaustive(&mut h, CheckBottoms::Only(0))
        .unwrap();
    GradientChecker::new(1e-2, 1e-3)
        .check_exhaustive(&mut h, CheckBottoms::Only(1))
        .unwrap();
}

#[test]
fn filter_refuses_mismatched_blobs() {
    let selector = failure(FILTER, &[&[3, 2], &[3], &[3, 2]]);
    assert!(
        selector.contains("every axis but the first a singleton"),
        "{selector}"
    );
    let num = failure(FILTER, &[&[3, 2], &[2], &[3]]);
    assert!(num.contains("Filter bottom 1 has shape"), "{num}");
    let tops = failure(
        r#"type: "Filter" bottom: "a" bottom: "s" top: "x" top: "y""#,
        &[&[3], &[3]],
    );
    assert!(tops.contains("one top per filtered bottom"), "{tops}");
}

// ---- A net using all five -----------------------------------------------------------------

const NET: &str = r#"
name: "shape_layers"
force_backward: true
layer { name: "in" type: "Input" top: "x" top: "idx" top: "sel"
        input_param { shape { dim: 4 dim: 2 } shape { dim: 3 } shape { dim: 4 dim: 1 } } }
layer { name: "pick" type: "BatchReindex" bottom: "x" bottom: "idx" top: "picked" }
layer { name: "keep" type: "Filter" bottom: "x" bottom: "sel" top: "kept" }
layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 1 dim: 2 } } }
layer { name: "tile" type: "Tile" bottom: "p" top: "pt" tile_param { axis: 0 tiles: 3 } }
layer { name: "sum" type: "Eltwise" bottom: "picked" bottom: "pt" top: "s" }
layer { name: "sq" type: "Reduction" bottom: "s" top: "sq"
        reduction_param { operation: SUMSQ } loss_weight: 1 }
layer { name: "total" type: "Reduction" bottom: "kept" top: "total" loss_weight: 1 }
"#;

#[test]
fn a_net_of_the_shape_layers_runs_forward_and_backward() {
    let param = parse_text(NET, Path::new("<shape net>")).unwrap();
    let mut net = Net::new(&param, &cpu(), rng_from_seed(1701)).unwrap();
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let p = [0.5, -1.0];
    net.blob_by_name_mut("x").unwrap().set_data(&x).unwrap();
    net.blob_by_name_mut("idx")
        .unwrap()
        .set_data(&[3.0, 0.0, 3.0])
        .unwrap();
    net.blob_by_name_mut("sel")
        .unwrap()
        .set_data(&[1.0, 0.0, 0.0, 1.0])
        .unwrap();
    net.learnable_params_mut()[0].set_data(&p).unwrap();
    net.clear_param_diffs().unwrap();
    let loss = net.forward_backward().unwrap();

    // Rows 3, 0, 3 of x plus p, squared and summed; plus rows 0 and 3 of x summed.
    let rows = [3, 0, 3];
    let shifted: Vec<f32> = rows
        .iter()
        .flat_map(|&n| (0..2).map(move |j| x[n * 2 + j] + p[j]))
        .collect();
    let squares: f32 = shifted.iter().map(|v| v * v).sum();
    let kept: f32 = x[0] + x[1] + x[6] + x[7];
    assert!((loss - (squares + kept)).abs() < 1e-4, "loss {loss}");

    // d/dp[j] = sum over the picked rows of 2 (x + p); d/dx from both paths.
    let dp: Vec<f32> = (0..2)
        .map(|j| rows.iter().map(|&n| 2.0 * (x[n * 2 + j] + p[j])).sum())
        .collect();
    assert_eq!(net.learnable_params()[0].diff_to_vec().unwrap(), dp);
    let mut dx = vec![0.0f32; 8];
    for (k, &n) in rows.iter().enumerate() {
        for j in 0..2 {
            dx[n * 2 + j] += 2.0 * shifted[k * 2 + j];
        }
    }
    for n in [0, 3] {
        dx[n * 2] += 1.0;
        dx[n * 2 + 1] += 1.0;
    }
    let got = net.blob_by_name("x").unwrap().diff_to_vec().unwrap();
    assert_eq!(got, dx);
}
