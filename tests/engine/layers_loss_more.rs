//! MultinomialLogisticLoss, InfogainLoss and ContrastiveLoss: forward passes against upstream's
//! formulas worked out here in f64, gradients against finite differences and against
//! upstream's closed forms, refused shapes and parameters, and a net that uses all three.

use crate::common::assert_close;
use rcaffe::backend::{rng_from_seed, Backend, CpuBackend, Distribution, Views};
use rcaffe::layers::create_layer;
use rcaffe::net::Net;
use rcaffe::proto::caffe::{BlobProto, NetParameter};
use rcaffe::proto::{parse_text, write_binary};
use rcaffe::testing::{cpu, layer_param, CheckBottoms, GradientChecker, LayerHarness};

type Harness = LayerHarness<CpuBackend>;

// ---- helpers ------------------------------------------------------------------------------

fn harness(text: &str, shapes: &[&[usize]]) -> Harness {
    LayerHarness::from_prototxt(&cpu(), text, shapes, 1701)
        .unwrap_or_else(|e| panic!("building `{text}`: {e}"))
}

fn build_error(text: &str, shapes: &[&[usize]]) -> String {
    match LayerHarness::from_prototxt(&cpu(), text, shapes, 1701) {
        Ok(_) => panic!("`{text}` with {shapes:?} should not build"),
        Err(e) => e.to_string(),
    }
}

/// Deterministic pseudo-random values in `[lo, hi)`.
fn values(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let be = cpu();
    let mut rng = rng_from_seed(seed);
    let mut buf = be.alloc(n).unwrap();
    be.random(Distribution::Uniform { lo, hi }, &mut rng, buf.whole_mut())
        .unwrap();
    buf.into_vec()
}

/// Deterministic labels in `0..classes`, stored as f32.
fn labels(seed: u64, n: usize, classes: usize) -> Vec<f32> {
    values(seed, n, 0.0, classes as f32)
        .into_iter()
        .map(|v| (v.floor() as usize).min(classes - 1) as f32)
        .collect()
}

fn scalar(h: &Harness) -> f32 {
    let v = h.top(0).data_to_vec().unwrap();
    assert_eq!(v.len(), 1, "a scalar top");
    v[0]
}

fn diff(h: &Harness, bottom: usize) -> Vec<f32> {
    h.bottom(bottom).diff_to_vec().unwrap()
}

// ---- MultinomialLogisticLoss --------------------------------------------------------------

const MLL_P: [f32; 6] = [0.2, 0.5, 0.3, 0.1, 0.1, 0.8];
const MLL_LABEL: [f32; 2] = [1.0, 2.0];

fn mll(extra: &str) -> Harness {
    let text = format!(r#"name: "l" type: "MultinomialLogisticLoss" {extra}"#);
    let mut h = harness(&text, &[&[2, 3, 1, 1], &[2, 1, 1, 1]]);
    h.set_bottom(0, &MLL_P).unwrap();
    h.set_bottom(1, &MLL_LABEL).unwrap();
    h
}

#[test]
fn multinomial_logistic_loss_forward_and_closed_form_gradient() {
    let mut h = mll("loss_weight: 2");
    let weighted = h.forward().unwrap();
    let want = -(0.5f64.ln() + f64::from(0.8f32).ln()) / 2.0;
    assert_close("loss", &[scalar(&h)], &[want], 1e-6);
    assert_close("weighted", &[weighted], &[2.0 * want], 1e-6);
    h.backward(&[true, false]).unwrap();
    // -loss_weight / (num p) at the label, 0 elsewhere.
    let at = |p: f32| -2.0 / (2.0 * f64::from(p));
    let want = [0.0, at(0.5), 0.0, 0.0, 0.0, at(0.8)];
    assert_close("gradient", &diff(&h, 0), &want, 1e-6);
}

#[test]
fn multinomial_logistic_loss_clamps_at_the_log_threshold() {
    let mut h = mll("");
    h.set_bottom(0, &[0.2, 0.0, 0.8, 0.1, 0.1, 0.8]).unwrap();
    h.forward().unwrap();
    let want = (-f64::from(1e-20f32).ln() - f64::from(0.8f32).ln()) / 2.0;
    assert_close("clamped loss", &[scalar(&h)], &[want], 1e-6);
    h.backward(&[true, false]).unwrap();
    let g = diff(&h, 0);
    assert_close("clamped gradient", &[g[1]], &[-1.0 / (2.0 * 1e-20)], 1e-5);
}

#[test]
fn multinomial_logistic_loss_gradient() {
    // Upstream's test: positive probabilities (away from the threshold), random labels.
    let checker = GradientChecker::new(1e-2, 2e-2).with_seed(1701);
    for extra in ["", "loss_weight: 3"] {
        let text = format!(r#"name: "l" type: "MultinomialLogisticLoss" {extra}"#);
        let mut h = harness(&text, &[&[10, 5, 1, 1], &[10, 1, 1, 1]]);
        h.set_bottom(0, &values(11, 50, 0.2, 1.0)).unwrap();
        h.set_bottom(1, &labels(12, 10, 5)).unwrap();
        checker
            .check_exhaustive(&mut h, CheckBottoms::Only(0))
            .unwrap_or_else(|e| panic!("{extra}: {e}"));
    }
}

#[test]
fn multinomial_logistic_loss_refuses_labels_of_the_wrong_shape_or_range() {
    let text = r#"name: "l" type: "MultinomialLogisticLoss""#;
    let e = build_error(text, &[&[2, 3], &[2, 2]]);
    assert!(e.contains("one label per sample"), "{e}");
    let e = build_error(text, &[&[2, 3], &[3]]);
    assert!(e.contains("same first dimension"), "{e}");
    let mut h = mll("");
    h.set_bottom(1, &[1.0, 3.0]).unwrap();
    let e = h.forward().unwrap_err().to_string();
    assert!(e.contains("label 3"), "{e}");
    let mut h = mll("");
    h.forward().unwrap();
    let e = h.backward(&[true, true]).unwrap_err().to_string();
    assert!(
        e.contains("MultinomialLogisticLoss Layer cannot backpropagate to label inputs."),
        "{e}"
    );
}

// ---- InfogainLoss -------------------------------------------------------------------------

/// Softmax along the middle axis of `(outer, dim, inner)`, in f64.
fn softmax_f64(x: &[f32], (outer, dim, inner): (usize, usize, usize)) -> Vec<f64> {
    let mut y = vec![0f64; x.len()];
    for o in 0..outer {
        for j in 0..inner {
            let at = |c: usize| (o * dim + c) * inner + j;
            let sum: f64 = (0..dim).map(|c| f64::from(x[at(c)]).exp()).sum();
            for c in 0..dim {
                y[at(c)] = f64::from(x[at(c)]).exp() / sum;
            }
        }
    }
    y
}

/// Upstream's loss and gradient (before the loss weight) for the given normalization, as
/// `(loss, dx)`: `ignore` skips positions, `normalize_by` maps the valid count to the divisor.
fn infogain_naive(
    x: &[f32],
    label: &[f32],
    h: &[f32],
    (outer, dim, inner): (usize, usize, usize),
    ignore: Option<f32>,
    normalize_by: impl Fn(usize) -> f64,
) -> (f64, Vec<f64>) {
    let p = softmax_f64(x, (outer, dim, inner));
    let (mut loss, mut dx, mut valid) = (0.0, vec![0.0; x.len()], 0);
    for o in 0..outer {
        for j in 0..inner {
            let l = label[o * inner + j];
            if Some(l) == ignore {
                continue;
            }
            valid += 1;
            let row = &h[l as usize * dim..][..dim];
            let row_sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
            for (c, &weight) in row.iter().enumerate() {
                let at = (o * dim + c) * inner + j;
                loss -= f64::from(weight) * p[at].max(1e-20).ln();
                dx[at] = p[at] * row_sum - f64::from(weight);
            }
        }
    }
    let n = normalize_by(valid).max(1.0);
    (loss / n, dx.iter().map(|v| v / n).collect())
}

/// `(param, ignore_label, the normalizer of a valid count)`.
type InfogainCase = (&'static str, Option<f32>, fn(usize) -> f64);

const IG_SHAPE: [usize; 3] = [2, 3, 2];
const IG_X: [f32; 12] = [
    0.5, -1.0, 1.5, 0.25, -0.5, 2.0, 1.0, 0.0, -2.0, 0.75, 0.5, -0.25,
];
const IG_LABEL: [f32; 4] = [0.0, 2.0, 1.0, 2.0];
const IG_H: [f32; 9] = [1.0, 0.5, 0.0, 0.25, 2.0, 0.5, 0.0, 0.75, 1.5];

fn infogain_with_h_bottom(extra: &str) -> Harness {
    let text = format!(r#"name: "l" type: "InfogainLoss" {extra}"#);
    let mut h = harness(&text, &[&IG_SHAPE, &[2, 2], &[1, 1, 3, 3]]);
    h.set_bottom(0, &IG_X).unwrap();
    h.set_bottom(1, &IG_LABEL).unwrap();
    h.set_bottom(2, &IG_H).unwrap();
    h
}

#[test]
fn infogain_loss_forward_and_closed_form_gradient_for_every_normalization() {
    let view = (2, 3, 2);
    let cases: [InfogainCase; 6] = [
        ("", None, |valid| valid as f64),
        ("loss_param { normalization: FULL }", None, |_| 4.0),
        ("loss_param { normalization: BATCH_SIZE }", None, |_| 2.0),
        ("loss_param { normalization: NONE }", None, |_| 1.0),
        ("loss_param { ignore_label: 2 }", Some(2.0), |valid| {
            valid as f64
        }),
        (
            "loss_param { ignore_label: 2 normalization: FULL } loss_weight: 3",
            Some(2.0),
            |_| 4.0,
        ),
    ];
    for (extra, ignore, normalize_by) in cases {
        let (loss, dx) = infogain_naive(&IG_X, &IG_LABEL, &IG_H, view, ignore, normalize_by);
        let weight = if extra.contains("loss_weight: 3") {
            3.0
        } else {
            1.0
        };
        let mut h = infogain_with_h_bottom(extra);
        let weighted = h.forward().unwrap();
        assert_close(extra, &[scalar(&h)], &[loss], 1e-6);
        assert_close(extra, &[weighted], &[weight * loss], 1e-6);
        h.backward(&[true, false, false]).unwrap();
        let want: Vec<f64> = dx.iter().map(|v| weight * v).collect();
        assert_close(extra, &diff(&h, 0), &want, 1e-6);
    }
}

#[test]
fn infogain_loss_with_the_identity_is_softmax_with_loss() {
    let identity = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    let mut ig = infogain_with_h_bottom("");
    ig.set_bottom(2, &identity).unwrap();
    ig.forward().unwrap();
    let mut swl = harness(
        r#"name: "l" type: "SoftmaxWithLoss""#,
        &[&IG_SHAPE, &[2, 2]],
    );
    swl.set_bottom(0, &IG_X).unwrap();
    swl.set_bottom(1, &IG_LABEL).unwrap();
    swl.forward().unwrap();
    assert_close("loss", &[scalar(&ig)], &[f64::from(scalar(&swl))], 1e-6);
}

#[test]
fn infogain_loss_reads_h_from_its_source_and_gives_the_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("infogain.binaryproto");
    let blob = BlobProto {
        num: Some(1),
        channels: Some(1),
        height: Some(3),
        width: Some(3),
        data: IG_H.to_vec(),
        ..Default::default()
    };
    write_binary(&path, &blob).unwrap();
    let text = format!(
        r#"name: "l" type: "InfogainLoss" bottom: "x" bottom: "label" top: "loss" top: "prob"
           loss_weight: 1 loss_weight: 0 infogain_loss_param {{ source: "{}" }}"#,
        path.display()
    );
    let mut h = harness(&text, &[&IG_SHAPE, &[2, 2]]);
    h.set_bottom(0, &IG_X).unwrap();
    h.set_bottom(1, &IG_LABEL).unwrap();
    h.forward().unwrap();
    let view = (2, 3, 2);
    let (loss, _) = infogain_naive(&IG_X, &IG_LABEL, &IG_H, view, None, |v| v as f64);
    assert_close("loss", &[scalar(&h)], &[loss], 1e-6);
    assert_eq!(h.top(1).shape(), &IG_SHAPE);
    let prob = h.top(1).data_to_vec().unwrap();
    assert_close("prob", &prob, &softmax_f64(&IG_X, view), 1e-6);

    // A 2x2 matrix for 3 labels is refused, naming the file.
    let small = BlobProto {
        num: Some(1),
        channels: Some(1),
        height: Some(2),
        width: Some(2),
        data: vec![1.0; 4],
        ..Default::default()
    };
    write_binary(&path, &small).unwrap();
    let e = build_error(&text, &[&IG_SHAPE, &[2, 2]]);
    assert!(
        e.contains("H must be 3x3") && e.contains("infogain.binaryproto"),
        "{e}"
    );
}

#[test]
fn infogain_loss_gradient() {
    let checker = GradientChecker::new(1e-2, 1e-2);
    let cases: [(&str, Vec<usize>, Vec<usize>); 4] = [
        ("", vec![4, 5], vec![4]),
        (
            "loss_weight: 3 loss_param { ignore_label: 0 }",
            vec![3, 4, 2],
            vec![3, 2],
        ),
        ("infogain_loss_param { axis: 2 }", vec![2, 3, 4], vec![2, 3]),
        (
            "loss_param { normalization: NONE }",
            vec![2, 3, 2, 2],
            vec![2, 2, 2],
        ),
    ];
    for (extra, shape, label_shape) in cases {
        let axis = if extra.contains("axis: 2") { 2 } else { 1 };
        let classes = shape[axis];
        let text = format!(r#"name: "l" type: "InfogainLoss" {extra}"#);
        let h_shape = [classes, classes];
        let mut h = harness(&text, &[&shape, &label_shape, &h_shape]);
        let n = h.bottom(1).count();
        h.set_bottom(1, &labels(31, n, classes)).unwrap();
        h.set_bottom(2, &values(32, classes * classes, 0.0, 2.0))
            .unwrap();
        checker
            .check_exhaustive(&mut h, CheckBottoms::Only(0))
            .unwrap_or_else(|e| panic!("{extra}: {e}"));
    }
}

#[test]
fn infogain_loss_refuses_bad_inputs_and_parameters() {
    let e = build_error(
        r#"name: "l" type: "InfogainLoss""#,
        &[&IG_SHAPE, &[2, 2], &[2, 3]],
    );
    assert!(e.contains("H must be 3x3") && e.contains("bottom 2"), "{e}");
    let e = build_error(r#"name: "l" type: "InfogainLoss""#, &[&IG_SHAPE, &[2, 2]]);
    assert!(e.contains("infogain_loss_param.source"), "{e}");
    let e = build_error(
        r#"name: "l" type: "InfogainLoss" infogain_loss_param { source: "/nonexistent/h.binaryproto" }"#,
        &[&IG_SHAPE, &[2, 2]],
    );
    assert!(e.contains("infogain_loss_param.source"), "{e}");
    let e = build_error(
        r#"name: "l" type: "InfogainLoss""#,
        &[&IG_SHAPE, &[2, 3], &[3, 3]],
    );
    assert!(e.contains("Number of labels must match"), "{e}");
    let e = build_error(
        r#"name: "l" type: "InfogainLoss" infogain_loss_param { axis: 3 }"#,
        &[&IG_SHAPE, &[2, 2], &[3, 3]],
    );
    assert!(e.contains("infogain_loss_param.axis"), "{e}");
    let e = build_error(
        r#"name: "l" type: "InfogainLoss" loss_param { normalize: true }"#,
        &[&IG_SHAPE, &[2, 2], &[3, 3]],
    );
    assert!(e.contains("loss_param.normalize"), "{e}");

    let mut h = infogain_with_h_bottom("");
    h.forward().unwrap();
    let e = h.backward(&[true, false, true]).unwrap_err().to_string();
    assert!(e.contains("cannot backpropagate to infogain inputs"), "{e}");
    let e = h.backward(&[true, true, false]).unwrap_err().to_string();
    assert!(e.contains("cannot backpropagate to label inputs"), "{e}");
    h.set_bottom(1, &[0.0, 3.0, 1.0, 2.0]).unwrap();
    let e = h.forward().unwrap_err().to_string();
    assert!(e.contains("label 3"), "{e}");
}

// ---- ContrastiveLoss ----------------------------------------------------------------------

/// Upstream's loss for `num` pairs of `channels` features.
fn contrastive_naive(a: &[f32], b: &[f32], y: &[f32], margin: f64, legacy: bool) -> f64 {
    let channels = a.len() / y.len();
    let mut total = 0.0;
    for (n, &label) in y.iter().enumerate() {
        let range = n * channels..(n + 1) * channels;
        let dist_sq: f64 = a[range.clone()]
            .iter()
            .zip(&b[range])
            .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
            .sum();
        total += if label as i32 != 0 {
            dist_sq
        } else if legacy {
            (margin - dist_sq).max(0.0)
        } else {
            (margin - dist_sq.sqrt()).max(0.0).powi(2)
        };
    }
    total / y.len() as f64 / 2.0
}

#[test]
fn contrastive_loss_forward_both_versions_and_margins() {
    let (num, channels) = (8, 3);
    let a = values(41, num * channels, -1.0, 1.0);
    let b = values(42, num * channels, -1.0, 1.0);
    // Non-integer labels as upstream reads them: trunc(0.5) = 0 is dissimilar, 2 similar.
    let y = [1.0, 0.0, 0.5, 2.0, 0.0, 1.0, 0.0, 0.0];
    for (extra, margin, legacy) in [
        ("", 1.0, false),
        ("contrastive_loss_param { legacy_version: true }", 1.0, true),
        ("contrastive_loss_param { margin: 2.5 }", 2.5, false),
        (
            "contrastive_loss_param { margin: 0.5 legacy_version: true }",
            0.5,
            true,
        ),
    ] {
        let text = format!(r#"name: "l" type: "ContrastiveLoss" {extra}"#);
        let mut h = harness(
            &text,
            &[&[num, channels, 1, 1], &[num, channels, 1, 1], &[num]],
        );
        h.set_bottom(0, &a).unwrap();
        h.set_bottom(1, &b).unwrap();
        h.set_bottom(2, &y).unwrap();
        h.forward().unwrap();
        let want = contrastive_naive(&a, &b, &y, margin, legacy);
        assert_close(extra, &[scalar(&h)], &[want], 1e-6);
    }
}

#[test]
fn contrastive_loss_closed_form_gradient_of_each_kind_of_pair() {
    // Pair 0 similar; pair 1 dissimilar within the margin (d = 0.5); pair 2 beyond it (d = 2).
    let a = [0.3, 0.4, 0.0, 0.5, 2.0, 0.0];
    let b = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let y = [1.0, 0.0, 0.0];
    for (legacy, within) in [(false, -(1.0 - 0.5) / (0.5 + 1e-4)), (true, -1.0)] {
        let extra = format!("loss_weight: 2 contrastive_loss_param {{ legacy_version: {legacy} }}");
        let text = format!(r#"name: "l" type: "ContrastiveLoss" {extra}"#);
        let mut h = harness(&text, &[&[3, 2], &[3, 2], &[3, 1]]);
        h.set_bottom(0, &a).unwrap();
        h.set_bottom(1, &b).unwrap();
        h.set_bottom(2, &y).unwrap();
        h.forward().unwrap();
        h.backward(&[true, true, false]).unwrap();
        // alpha = loss_weight / num; the diff a - b is a here.
        let alpha = 2.0 / 3.0;
        let want: Vec<f64> = [1.0, 1.0, within, within, 0.0, 0.0]
            .iter()
            .zip(a)
            .map(|(c, x)| alpha * c * f64::from(x))
            .collect();
        assert_close(&extra, &diff(&h, 0), &want, 1e-6);
        let negated: Vec<f64> = want.iter().map(|v| -v).collect();
        assert_close(&extra, &diff(&h, 1), &negated, 1e-6);
    }
}

#[test]
fn contrastive_loss_gradient() {
    // Upstream's test: features in U[-1, 1], random 0/1 labels, both feature bottoms.
    let checker = GradientChecker::new(1e-2, 1e-2);
    for extra in ["", "contrastive_loss_param { legacy_version: true }"] {
        let text = format!(r#"name: "l" type: "ContrastiveLoss" {extra}"#);
        let shapes: [&[usize]; 3] = [&[6, 2, 1, 1], &[6, 2, 1, 1], &[6, 1, 1, 1]];
        for bottom in [0, 1] {
            let mut h = harness(&text, &shapes);
            h.set_bottom(0, &values(51, 12, -1.0, 1.0)).unwrap();
            h.set_bottom(1, &values(52, 12, -1.0, 1.0)).unwrap();
            h.set_bottom(2, &labels(53, 6, 2)).unwrap();
            checker
                .check_exhaustive(&mut h, CheckBottoms::Only(bottom))
                .unwrap_or_else(|e| panic!("{extra} bottom {bottom}: {e}"));
        }
    }
}

#[test]
fn contrastive_loss_refuses_bad_shapes_and_the_label_gradient_by_force() {
    let text = r#"name: "l" type: "ContrastiveLoss""#;
    let e = build_error(text, &[&[2, 3], &[2, 4], &[2]]);
    assert!(e.contains("same shape"), "{e}");
    let e = build_error(text, &[&[2, 3, 2], &[2, 3, 2], &[2]]);
    assert!(e.contains("same shape"), "{e}");
    let e = build_error(text, &[&[2, 3], &[2, 3], &[2, 2]]);
    assert!(e.contains("one similarity label per pair"), "{e}");
    let e = build_error(text, &[&[2, 3], &[2, 3], &[3]]);
    assert!(e.contains("one similarity label per pair"), "{e}");
    let layer = create_layer::<CpuBackend>(&layer_param(text).unwrap()).unwrap();
    assert!(layer.allow_force_backward(0) && layer.allow_force_backward(1));
    assert!(!layer.allow_force_backward(2));
}

// ---- registry and a net -------------------------------------------------------------------

#[test]
fn the_three_losses_are_registered() {
    for t in ["MultinomialLogisticLoss", "InfogainLoss", "ContrastiveLoss"] {
        assert!(rcaffe::layers::is_registered(t), "{t}");
        let text = format!(r#"name: "x" type: "{t}""#);
        let layer = create_layer::<CpuBackend>(&layer_param(&text).unwrap()).unwrap();
        assert_eq!(layer.layer_type(), t);
    }
}

const NET: &str = r#"
name: "losses"
layer { name: "in" type: "Input" top: "x" top: "x2" top: "label" top: "sim" top: "H"
  input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 3 } shape { dim: 4 }
                shape { dim: 4 } shape { dim: 1 dim: 1 dim: 3 dim: 3 } } }
layer { name: "fc" type: "InnerProduct" bottom: "x" top: "fc"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
layer { name: "mll" type: "MultinomialLogisticLoss" bottom: "prob" bottom: "label" top: "mll" }
layer { name: "ig" type: "InfogainLoss" bottom: "fc" bottom: "label" bottom: "H" top: "ig" }
layer { name: "cl" type: "ContrastiveLoss" bottom: "fc" bottom: "x2" bottom: "sim" top: "cl" }
"#;

#[test]
fn a_net_with_the_three_losses_runs_forward_and_backward() {
    let param: NetParameter = parse_text(NET, std::path::Path::new("<test net>")).unwrap();
    let mut net = Net::new(&param, &cpu(), rng_from_seed(1701)).unwrap();
    let inputs: [(&str, Vec<f32>); 5] = [
        ("x", values(61, 12, -1.0, 1.0)),
        ("x2", values(62, 12, -1.0, 1.0)),
        ("label", vec![0.0, 1.0, 2.0, 1.0]),
        ("sim", vec![1.0, 0.0, 1.0, 0.0]),
        ("H", vec![1.0, 0.5, 0.0, 0.5, 1.0, 0.5, 0.0, 0.5, 1.0]),
    ];
    for (name, data) in &inputs {
        net.blob_by_name_mut(name).unwrap().set_data(data).unwrap();
    }
    let total = net.forward().unwrap();
    let parts: f32 = ["mll", "ig", "cl"]
        .iter()
        .map(|name| net.blob_by_name(name).unwrap().data_to_vec().unwrap()[0])
        .sum();
    assert!(parts > 0.0 && parts.is_finite());
    assert_close("total loss", &[total], &[f64::from(parts)], 1e-6);
    net.backward().unwrap();
    let fc_grad = net.blob_by_name("fc").unwrap().diff_to_vec().unwrap();
    assert!(fc_grad.iter().all(|v| v.is_finite()));
    assert!(fc_grad.iter().any(|&v| v != 0.0));
}
