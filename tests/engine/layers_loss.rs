//! Softmax, the loss layers, Accuracy, BatchNorm, Scale and Bias: forward passes against
//! values worked out here (in f64 where it matters), gradients against finite differences, and
//! the label-indexed backend ops against naive loops.

use crate::common::assert_close;
use rcaffe::backend::{
    rng_from_seed, Axis, Backend, Binary, CpuBackend, CpuBuffer, Distribution, Labels, Unary, Views,
};
use rcaffe::layers::create_layer;
use rcaffe::proto::caffe::LayerParameter;
use rcaffe::testing::{cpu, layer_param, CheckBottoms, GradientChecker, LayerHarness};

type Harness = LayerHarness<CpuBackend>;
/// `(param, bottom shape, axis, top_k, ignore_label)`.
type AccuracyCase = (&'static str, Vec<usize>, usize, usize, Option<f32>);
/// `(param, learned blob shape, (outer, dim, inner))`.
type BroadcastCase = (String, Vec<usize>, (usize, usize, usize));

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

fn data(h: &Harness, top: usize) -> Vec<f32> {
    h.top(top).data_to_vec().unwrap()
}

fn scalar(h: &Harness) -> f32 {
    let v = data(h, 0);
    assert_eq!(v.len(), 1, "a scalar top");
    v[0]
}

/// Checks the diffs of `bottoms` after one backward pass against central differences of the
/// linear objective `sum_t dot(top_t, w_t)`, where `w_t` is what top `t`'s diff holds when
/// this is called (for a loss layer: the loss weight the harness stored), or `weights` when
/// given. The bottoms' data is restored before every forward pass (in-place layers overwrite
/// it). Unlike [`GradientChecker`], the layer's parameters are not checked.
fn check_linear_objective(
    h: &mut Harness,
    bottoms: &[usize],
    weights: Option<Vec<Vec<f32>>>,
    step: f32,
    tol: f64,
) {
    let inputs: Vec<Vec<f32>> = (0..h.num_bottom())
        .map(|i| h.bottom(i).data_to_vec().unwrap())
        .collect();
    let restore = |h: &mut Harness| {
        for (i, v) in inputs.iter().enumerate() {
            h.set_bottom(i, v).unwrap();
        }
    };
    restore(h);
    h.forward().unwrap();
    let w: Vec<Vec<f32>> = match weights {
        Some(w) => w,
        None => (0..h.num_top())
            .map(|t| h.top(t).diff_to_vec().unwrap())
            .collect(),
    };
    let objective = |h: &mut Harness| -> f64 {
        h.forward().unwrap();
        (0..h.num_top())
            .map(|t| {
                let d = data(h, t);
                d.iter()
                    .zip(&w[t])
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum::<f64>()
            })
            .sum()
    };
    // Analytic.
    restore(h);
    h.forward().unwrap();
    for (t, wt) in w.iter().enumerate() {
        h.top_mut(t).set_diff(wt).unwrap();
    }
    let pd: Vec<bool> = (0..h.num_bottom()).map(|i| bottoms.contains(&i)).collect();
    h.backward(&pd).unwrap();
    let computed: Vec<Vec<f32>> = bottoms
        .iter()
        .map(|&b| h.bottom(b).diff_to_vec().unwrap())
        .collect();
    // Numeric.
    for (k, &b) in bottoms.iter().enumerate() {
        for e in 0..inputs[b].len() {
            let at = |delta: f32, h: &mut Harness| {
                restore(h);
                let mut x = inputs[b].clone();
                x[e] += delta;
                h.set_bottom(b, &x).unwrap();
                objective(h)
            };
            let plus = at(step, h);
            let minus = at(-step, h);
            let estimated = (plus - minus) / f64::from(step) / 2.0;
            let got = f64::from(computed[k][e]);
            assert!(
                (got - estimated).abs() <= tol * got.abs().max(estimated.abs()).max(1.0),
                "bottom {b} element {e}: computed {got}, estimated {estimated}"
            );
        }
    }
    restore(h);
}

/// `(outer, dim, inner)` of `shape` around `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Softmax along `axis` in f64.
fn softmax_f64(x: &[f32], shape: &[usize], axis: usize) -> Vec<f64> {
    let (outer, dim, inner) = split(shape, axis);
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

// ---- backend ops: label-indexed and the sigmoid cross-entropy ------------------------------

fn buf(v: &[f32]) -> CpuBuffer {
    CpuBuffer::from_vec(v.to_vec())
}

#[test]
fn op_label_mask_matches_naive() {
    let be = cpu();
    let label = [0.0, -1.0, 2.0, -1.5, 3.9, -0.5];
    let label_b = buf(&label);
    let mask = |ignore_label| Unary::LabelMask { ignore_label };
    let mut y = buf(&[9.0; 6]);
    be.unary(mask(Some(-1)), label_b.whole().src(), y.whole_mut())
        .unwrap();
    // trunc(-1.5) = -1 is ignored, trunc(-0.5) = 0 is not.
    let want: Vec<f32> = label
        .iter()
        .map(|&l| if (l as i32) == -1 { 0.0 } else { 1.0 })
        .collect();
    assert_eq!(y.as_slice(), &want[..]);
    assert_eq!(y.as_slice(), &[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]);
    be.unary(mask(None), label_b.whole().src(), y.whole_mut())
        .unwrap();
    assert_eq!(y.as_slice(), &[1.0; 6]);
}

#[test]
fn op_gather_and_affine_at_label_match_naive() {
    let be = cpu();
    let (outer, dim, inner) = (3, 4, 5);
    let x = values(1, outer * dim * inner, -1.0, 1.0);
    let mut label = labels(2, outer * inner, dim);
    label[3] = 7.0; // ignored below
    label[11] = 7.0;
    let axis = Axis::new(outer, dim, inner);
    let (xb, label_b) = (buf(&x), buf(&label));
    let labelled = Labels {
        values: label_b.whole(),
        ignore_label: Some(7),
    };
    let mut y = buf(&vec![0.0; outer * inner]);
    be.gather_at_label(axis, xb.whole(), labelled, -2.0, y.whole_mut())
        .unwrap();
    let mut affine = x.clone();
    let mut out = CpuBuffer::from_vec(affine.clone());
    be.affine_at_label(axis, labelled, (0.5, -1.0), out.whole_mut())
        .unwrap();
    for o in 0..outer {
        for j in 0..inner {
            let p = o * inner + j;
            let l = label[p] as usize;
            if l == 7 {
                assert_eq!(y.as_slice()[p], -2.0);
                for c in 0..dim {
                    affine[(o * dim + c) * inner + j] = 0.0;
                }
            } else {
                assert_eq!(y.as_slice()[p], x[(o * dim + l) * inner + j]);
                let v = &mut affine[(o * dim + l) * inner + j];
                *v = 0.5 * *v - 1.0;
            }
        }
    }
    assert_eq!(out.as_slice(), &affine[..]);
}

#[test]
fn op_label_ops_reject_out_of_range_labels_and_write_nothing() {
    let be = cpu();
    let x = buf(&[1.0, 2.0, 3.0, 4.0]);
    let axis = Axis::new(2, 2, 1);
    for bad in [2.0f32, -1.0, 5.5] {
        let label = buf(&[0.0, bad]);
        let labelled = Labels {
            values: label.whole(),
            ignore_label: None,
        };
        let mut y = buf(&[9.0, 9.0, 9.0, 9.0]);
        let e = be
            .affine_at_label(axis, labelled, (1.0, -1.0), y.whole_mut())
            .unwrap_err();
        assert!(e.to_string().contains("outside 0..2"), "{e}");
        assert_eq!(y.as_slice(), &[9.0; 4], "nothing written on error");
        let mut g = buf(&[9.0, 9.0]);
        assert!(be
            .gather_at_label(axis, x.whole(), labelled, 1.0, g.whole_mut())
            .is_err());
        assert!(be
            .top_k_hits(axis, 1, x.whole(), labelled, g.whole_mut())
            .is_err());
        assert!(be
            .sum_by_label(x.slice(0, 2), labelled, g.whole_mut())
            .is_err());
    }
    // An ignored label may lie outside the range.
    let label = buf(&[0.0, -1.0]);
    let labelled = Labels {
        values: label.whole(),
        ignore_label: Some(-1),
    };
    let mut g = buf(&[9.0, 9.0]);
    be.gather_at_label(axis, x.whole(), labelled, 0.5, g.whole_mut())
        .unwrap();
    assert_eq!(g.as_slice(), &[1.0, 0.5]);
}

#[test]
fn op_top_k_hits_matches_a_ranking_with_ties_against_the_label() {
    let be = cpu();
    let (outer, dim, inner) = (4, 6, 3);
    // Scores on a coarse grid so that ties are frequent.
    let x: Vec<f32> = values(3, outer * dim * inner, 0.0, 4.0)
        .into_iter()
        .map(f32::floor)
        .collect();
    let mut label = labels(4, outer * inner, dim);
    label[5] = -1.0;
    let axis = Axis::new(outer, dim, inner);
    let (xb, label_b) = (buf(&x), buf(&label));
    let labelled = Labels {
        values: label_b.whole(),
        ignore_label: Some(-1),
    };
    for top_k in 0..=dim {
        let mut y = buf(&vec![9.0; outer * inner]);
        be.top_k_hits(axis, top_k, xb.whole(), labelled, y.whole_mut())
            .unwrap();
        for o in 0..outer {
            for j in 0..inner {
                let p = o * inner + j;
                if label[p] < 0.0 {
                    assert_eq!(y.as_slice()[p], 0.0);
                    continue;
                }
                let l = label[p] as usize;
                // Rank the classes by score, the label after every class tied with it.
                let mut order: Vec<usize> = (0..dim).collect();
                let s = |c: usize| x[(o * dim + c) * inner + j];
                order.sort_by(|&a, &b| {
                    s(b).partial_cmp(&s(a))
                        .unwrap()
                        .then(((a == l) as u8).cmp(&((b == l) as u8)))
                });
                let rank = order.iter().position(|&c| c == l).unwrap();
                let want = if rank < top_k { 1.0 } else { 0.0 };
                assert_eq!(y.as_slice()[p], want, "top_k {top_k} position {p}");
            }
        }
    }
}

#[test]
fn op_sum_by_label_matches_naive() {
    let be = cpu();
    let n = 50;
    let x = values(5, n, -1.0, 1.0);
    let mut label = labels(6, n, 4);
    label[7] = 9.0;
    let (xb, label_b) = (buf(&x), buf(&label));
    let labelled = Labels {
        values: label_b.whole(),
        ignore_label: Some(9),
    };
    let mut y = buf(&[5.0; 4]);
    be.sum_by_label(xb.whole(), labelled, y.whole_mut())
        .unwrap();
    let mut want = [0f64; 4];
    for i in 0..n {
        if label[i] != 9.0 {
            want[label[i] as usize] += f64::from(x[i]);
        }
    }
    assert_close("sum_by_label", y.as_slice(), &want, 1e-6);
}

#[test]
fn op_sigmoid_cross_entropy_matches_the_naive_form() {
    let be = cpu();
    let n = 40;
    let x = values(7, n, -8.0, 8.0);
    let t = values(8, n, 0.0, 1.0);
    let (xb, tb) = (buf(&x), buf(&t));
    let mut y = buf(&vec![0.0; n]);
    be.binary(
        Binary::SigmoidCrossEntropy,
        xb.whole().src(),
        tb.whole().src(),
        y.whole_mut(),
    )
    .unwrap();
    for i in 0..n {
        let (xi, ti) = (f64::from(x[i]), f64::from(t[i]));
        let p = 1.0 / (1.0 + (-xi).exp());
        let want = -(ti * p.ln() + (1.0 - ti) * (1.0 - p).ln());
        assert_close("sigmoid_cross_entropy", &[y.as_slice()[i]], &[want], 1e-5);
    }
    // No overflow at large |x|.
    let (xb, tb) = (buf(&[200.0, -200.0]), buf(&[0.0, 0.0]));
    let mut y = buf(&[0.0; 2]);
    be.binary(
        Binary::SigmoidCrossEntropy,
        xb.whole().src(),
        tb.whole().src(),
        y.whole_mut(),
    )
    .unwrap();
    assert_eq!(y.as_slice(), &[200.0, 0.0]);
}

// ---- Softmax ----------------------------------------------------------------------------

#[test]
fn softmax_forward_matches_f64_along_each_axis() {
    let shape = [2usize, 3, 4, 5];
    for (axis, canonical) in [(1, 1), (0, 0), (-1, 3), (2, 2)] {
        let text = format!(r#"name: "s" type: "Softmax" softmax_param {{ axis: {axis} }}"#);
        let mut h = harness(&text, &[&shape]);
        let x = values(11, 120, -5.0, 5.0);
        h.set_bottom(0, &x).unwrap();
        h.forward().unwrap();
        assert_eq!(h.top(0).shape(), &shape);
        let want = softmax_f64(&x, &shape, canonical);
        assert_close(&format!("softmax axis {axis}"), &data(&h, 0), &want, 1e-6);
    }
    // Large inputs: the max is subtracted before exp, so nothing overflows.
    let mut h = harness(r#"name: "s" type: "Softmax""#, &[&[1, 3]]);
    h.set_bottom(0, &[1000.0, 1001.0, 999.0]).unwrap();
    h.forward().unwrap();
    let want = softmax_f64(&[0.0, 1.0, -1.0], &[1, 3], 1);
    assert_close("softmax of large inputs", &data(&h, 0), &want, 1e-6);
}

#[test]
fn softmax_in_place_matches_out_of_place() {
    let x = values(12, 2 * 4 * 3, -2.0, 2.0);
    let mut a = harness(
        r#"name: "s" type: "Softmax" bottom: "x" top: "y""#,
        &[&[2, 4, 3]],
    );
    let mut b = harness(
        r#"name: "s" type: "Softmax" bottom: "x" top: "x""#,
        &[&[2, 4, 3]],
    );
    assert!(b.is_in_place(0));
    a.set_bottom(0, &x).unwrap();
    b.set_bottom(0, &x).unwrap();
    a.forward().unwrap();
    b.forward().unwrap();
    assert_eq!(data(&a, 0), data(&b, 0));
}

#[test]
fn softmax_gradient() {
    let checker = GradientChecker::new(1e-2, 1e-3);
    for (text, shape) in [
        (r#"name: "s" type: "Softmax""#, vec![2, 3, 2, 2]),
        (
            r#"name: "s" type: "Softmax" softmax_param { axis: -1 }"#,
            vec![2, 2, 4],
        ),
        (
            r#"name: "s" type: "Softmax" softmax_param { axis: 0 }"#,
            vec![3, 4],
        ),
        (
            r#"name: "s" type: "Softmax" bottom: "x" top: "x""#,
            vec![2, 3, 2],
        ),
    ] {
        let mut h = harness(text, &[&shape]);
        checker
            .check_exhaustive(&mut h, None)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}

#[test]
fn softmax_rejects_a_bad_axis() {
    let e = build_error(
        r#"name: "s" type: "Softmax" softmax_param { axis: 3 }"#,
        &[&[2, 3]],
    );
    assert!(e.contains("softmax_param.axis"), "{e}");
}

// ---- SoftmaxWithLoss --------------------------------------------------------------------

/// Predictions `(2, 3, 2)`: 4 positions of 3 classes; position 2 carries label 1, which the
/// ignore cases skip.
const SWL_X: [f32; 12] = [
    1.0, -1.0, 2.0, 0.5, 0.0, 0.25, //
    -0.5, 3.0, 1.5, 0.0, -2.0, 1.0,
];
const SWL_LABEL: [f32; 4] = [2.0, 0.0, 1.0, 2.0];

/// `-ln softmax(x)[label]` at each position of [`SWL_X`], in f64.
fn swl_terms() -> Vec<f64> {
    let p = softmax_f64(&SWL_X, &[2, 3, 2], 1);
    (0..4)
        .map(|pos| {
            let (o, j) = (pos / 2, pos % 2);
            -p[(o * 3 + SWL_LABEL[pos] as usize) * 2 + j].ln()
        })
        .collect()
}

fn swl(loss_param: &str) -> Harness {
    let text = format!(
        r#"name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "loss"
           {loss_param}"#
    );
    let mut h = harness(&text, &[&[2, 3, 2], &[2, 2]]);
    h.set_bottom(0, &SWL_X).unwrap();
    h.set_bottom(1, &SWL_LABEL).unwrap();
    h
}

#[test]
fn softmax_with_loss_forward_for_every_normalization() {
    let terms = swl_terms();
    let all: f64 = terms.iter().sum();
    let valid: f64 = all - terms[2];
    let cases: [(&str, f64); 11] = [
        ("", all / 4.0),
        ("loss_param { normalization: VALID }", all / 4.0),
        ("loss_param { normalization: FULL }", all / 4.0),
        ("loss_param { normalization: BATCH_SIZE }", all / 2.0),
        ("loss_param { normalization: NONE }", all),
        ("loss_param { normalize: false }", all / 2.0),
        ("loss_param { normalize: true }", all / 4.0),
        ("loss_param { ignore_label: 1 }", valid / 3.0),
        (
            "loss_param { ignore_label: 1 normalization: FULL }",
            valid / 4.0,
        ),
        (
            "loss_param { ignore_label: 1 normalization: BATCH_SIZE }",
            valid / 2.0,
        ),
        // normalization wins over the legacy normalize.
        (
            "loss_param { ignore_label: 1 normalize: false normalization: NONE }",
            valid,
        ),
    ];
    for (param, want) in cases {
        let mut h = swl(param);
        let weighted = h.forward().unwrap();
        assert_close(param, &[scalar(&h)], &[want], 1e-6);
        assert_close(param, &[weighted], &[want], 1e-6);
    }
    // A label that is ignored everywhere: VALID divides by max(1, 0).
    let mut h = swl("loss_param { ignore_label: 1 }");
    h.set_bottom(1, &[1.0; 4]).unwrap();
    h.forward().unwrap();
    assert_eq!(scalar(&h), 0.0);
}

#[test]
fn softmax_with_loss_clamps_probabilities_at_flt_min() {
    let mut h = harness(r#"name: "loss" type: "SoftmaxWithLoss""#, &[&[1, 2], &[1]]);
    h.set_bottom(0, &[0.0, -200.0]).unwrap();
    h.set_bottom(1, &[1.0]).unwrap();
    h.forward().unwrap();
    let loss = scalar(&h);
    assert!(loss.is_finite());
    assert_close(
        "clamped loss",
        &[loss],
        &[-f64::from(f32::MIN_POSITIVE).ln()],
        1e-6,
    );
}

#[test]
fn softmax_with_loss_second_top_holds_the_probabilities() {
    let mut h = harness(
        r#"name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "l" top: "loss" top: "prob"
           loss_weight: 1 loss_weight: 0"#,
        &[&[2, 3, 2], &[2, 2]],
    );
    h.set_bottom(0, &SWL_X).unwrap();
    h.set_bottom(1, &SWL_LABEL).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(1).shape(), &[2, 3, 2]);
    assert_close(
        "prob",
        &data(&h, 1),
        &softmax_f64(&SWL_X, &[2, 3, 2], 1),
        1e-6,
    );
    let all: f64 = swl_terms().iter().sum();
    assert_close("loss", &[scalar(&h)], &[all / 4.0], 1e-6);
}

#[test]
fn softmax_with_loss_gradient() {
    let checker = GradientChecker::new(1e-2, 1e-2);
    let cases: [(&str, Vec<usize>, Vec<usize>, usize); 6] = [
        ("loss_weight: 3", vec![4, 5, 2, 2], vec![4, 1, 2, 2], 5),
        (
            "loss_param { ignore_label: 0 }",
            vec![4, 5, 2],
            vec![4, 2],
            5,
        ),
        ("loss_param { normalize: false }", vec![3, 4], vec![3], 4),
        (
            "loss_param { normalization: FULL ignore_label: 1 }",
            vec![2, 3, 3],
            vec![2, 3],
            3,
        ),
        (
            "loss_param { normalization: NONE }",
            vec![2, 3, 2],
            vec![2, 2],
            3,
        ),
        ("softmax_param { axis: 2 }", vec![2, 3, 4], vec![2, 3], 4),
    ];
    for (param, shape, label_shape, classes) in cases {
        let text = format!(r#"name: "loss" type: "SoftmaxWithLoss" {param}"#);
        let mut h = harness(&text, &[&shape, &label_shape]);
        let n = h.bottom(1).count();
        h.set_bottom(1, &labels(21, n, classes)).unwrap();
        checker
            .check_exhaustive(&mut h, CheckBottoms::Only(0))
            .unwrap_or_else(|e| panic!("{param}: {e}"));
        // And the gradient of the weighted loss itself, with the weight the net would store.
        let mut h = harness(&text, &[&shape, &label_shape]);
        h.set_bottom(1, &labels(21, n, classes)).unwrap();
        check_linear_objective(&mut h, &[0], None, 1e-2, 1e-2);
    }
}

#[test]
fn softmax_with_loss_gradient_scales_with_loss_weight() {
    let grads: Vec<Vec<f32>> = ["", "loss_weight: 2.5"]
        .iter()
        .map(|w| {
            let mut h = swl(w);
            h.forward().unwrap();
            h.backward(&[true, false]).unwrap();
            h.bottom(0).diff_to_vec().unwrap()
        })
        .collect();
    // d loss / dx = (p - onehot) / normalizer, here 4 positions.
    let p = softmax_f64(&SWL_X, &[2, 3, 2], 1);
    let mut want = p.clone();
    for pos in 0..4 {
        let (o, j) = (pos / 2, pos % 2);
        want[(o * 3 + SWL_LABEL[pos] as usize) * 2 + j] -= 1.0;
    }
    let want1: Vec<f64> = want.iter().map(|v| v / 4.0).collect();
    let want25: Vec<f64> = want.iter().map(|v| 2.5 * v / 4.0).collect();
    assert_close("weight 1", &grads[0], &want1, 1e-6);
    assert_close("weight 2.5", &grads[1], &want25, 1e-6);
}

#[test]
fn softmax_with_loss_ignored_positions_get_zero_gradient() {
    let mut h = swl("loss_param { ignore_label: 1 }");
    h.forward().unwrap();
    h.backward(&[true, false]).unwrap();
    let g = h.bottom(0).diff_to_vec().unwrap();
    // Position 2 is (o = 1, j = 0): elements 6, 8, 10.
    for e in [6, 8, 10] {
        assert_eq!(g[e], 0.0, "element {e}");
    }
    assert!(g.iter().any(|&v| v != 0.0));
}

#[test]
fn softmax_with_loss_refuses_the_label_gradient_and_bad_inputs() {
    let mut h = swl("");
    h.forward().unwrap();
    let e = h.backward(&[true, true]).unwrap_err().to_string();
    assert!(
        e.contains("SoftmaxWithLoss Layer cannot backpropagate to label inputs."),
        "{e}"
    );
    let layer =
        create_layer::<CpuBackend>(&layer_param(r#"name: "l" type: "SoftmaxWithLoss""#).unwrap())
            .unwrap();
    assert!(layer.allow_force_backward(0));
    assert!(!layer.allow_force_backward(1));

    let mut h = swl("");
    h.set_bottom(1, &[0.0, 3.0, 1.0, 2.0]).unwrap();
    let e = h.forward().unwrap_err().to_string();
    assert!(e.contains("label 3"), "{e}");

    let e = build_error(
        r#"name: "l" type: "SoftmaxWithLoss""#,
        &[&[2, 3, 2], &[2, 3]],
    );
    assert!(e.contains("Number of labels must match"), "{e}");
    let e = build_error(r#"name: "l" type: "SoftmaxWithLoss""#, &[&[2, 3], &[3]]);
    assert!(e.contains("same first dimension"), "{e}");

    let mut param = layer_param(r#"name: "l" type: "SoftmaxWithLoss""#).unwrap();
    param.loss_param = Some(rcaffe::proto::caffe::LossParameter {
        normalization: Some(9),
        ..Default::default()
    });
    let e = create_layer::<CpuBackend>(&param)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("loss_param.normalization"), "{e}");
}

// ---- Accuracy ---------------------------------------------------------------------------

#[test]
fn accuracy_top_k_with_ties_as_upstream() {
    // Four samples of four classes.
    let x = [
        1.0, 2.0, 2.0, 0.0, // label 1 ties with class 2: a miss at k = 1, a hit at k = 2
        0.5, 0.5, 0.5, 0.5, // all tied, label 0: a hit only at k = 4
        3.0, 1.0, 0.0, 2.0, // label 0 is the maximum: always a hit
        0.0, 1.0, 2.0, 3.0, // label 0 is the minimum: a hit only at k = 4
    ];
    let label = [1.0, 0.0, 0.0, 0.0];
    for (k, want) in [(1, 0.25), (2, 0.5), (3, 0.5), (4, 1.0)] {
        let text = format!(r#"name: "a" type: "Accuracy" accuracy_param {{ top_k: {k} }}"#);
        let mut h = harness(&text, &[&[4, 4], &[4]]);
        h.set_bottom(0, &x).unwrap();
        h.set_bottom(1, &label).unwrap();
        assert_eq!(h.forward().unwrap(), 0.0, "Accuracy is not a loss");
        assert_eq!(scalar(&h), want, "top_k {k}");
    }
}

/// Accuracy of `x` `(outer, dim, inner)` against `label` by sorting each position's scores.
fn accuracy_naive(
    x: &[f32],
    (outer, dim, inner): (usize, usize, usize),
    label: &[f32],
    top_k: usize,
    ignore: Option<f32>,
) -> (f64, Vec<f64>) {
    let (mut hits, mut count) = (0usize, 0usize);
    let mut per = vec![(0usize, 0usize); dim];
    for o in 0..outer {
        for j in 0..inner {
            let l = label[o * inner + j];
            if Some(l) == ignore {
                continue;
            }
            let l = l as usize;
            let truth = x[(o * dim + l) * inner + j];
            let better = (0..dim)
                .filter(|&c| c != l && x[(o * dim + c) * inner + j] >= truth)
                .count();
            count += 1;
            per[l].1 += 1;
            if better < top_k {
                hits += 1;
                per[l].0 += 1;
            }
        }
    }
    let acc = if count == 0 {
        0.0
    } else {
        hits as f64 / count as f64
    };
    let per = per
        .iter()
        .map(|&(h, n)| if n == 0 { 0.0 } else { h as f64 / n as f64 })
        .collect();
    (acc, per)
}

#[test]
fn accuracy_forward_with_axes_ignore_label_and_per_class() {
    let cases: [AccuracyCase; 4] = [
        ("accuracy_param { top_k: 1 }", vec![20, 6], 1, 1, None),
        ("accuracy_param { top_k: 3 }", vec![20, 6], 1, 3, None),
        (
            "accuracy_param { top_k: 2 ignore_label: -1 }",
            vec![5, 4, 3],
            1,
            2,
            Some(-1.0),
        ),
        (
            "accuracy_param { axis: -1 ignore_label: 2 }",
            vec![4, 3, 5],
            2,
            1,
            Some(2.0),
        ),
    ];
    for (param, shape, axis, top_k, ignore) in cases {
        let (outer, dim, inner) = split(&shape, axis);
        let text = format!(
            r#"name: "a" type: "Accuracy" bottom: "x" bottom: "l" top: "acc" top: "per"
               {param}"#
        );
        let label_shape = [outer * inner];
        let mut h = harness(&text, &[&shape, &label_shape]);
        let x: Vec<f32> = values(31, outer * dim * inner, 0.0, 3.0)
            .into_iter()
            .map(f32::floor)
            .collect();
        let mut l = labels(32, outer * inner, dim);
        if ignore == Some(-1.0) {
            l[1] = -1.0;
            l[4] = -1.0;
        }
        h.set_bottom(0, &x).unwrap();
        h.set_bottom(1, &l).unwrap();
        h.forward().unwrap();
        let (acc, per) = accuracy_naive(&x, (outer, dim, inner), &l, top_k, ignore);
        assert_close(param, &[scalar(&h)], &[acc], 1e-6);
        assert_eq!(h.top(1).shape(), &[dim]);
        assert_close(param, &data(&h, 1), &per, 1e-6);
        assert!(
            acc > 0.0 && acc < 1.0,
            "{param}: a case that can fail ({acc})"
        );
    }
}

#[test]
fn accuracy_has_no_backward_and_checks_top_k() {
    let mut h = harness(r#"name: "a" type: "Accuracy""#, &[&[2, 3], &[2]]);
    h.set_bottom(1, &[0.0, 2.0]).unwrap();
    h.forward().unwrap();
    h.backward(&[false, false]).unwrap();
    assert!(h.backward(&[true, false]).is_err());
    let e = build_error(
        r#"name: "a" type: "Accuracy" accuracy_param { top_k: 4 }"#,
        &[&[2, 3], &[2]],
    );
    assert!(e.contains("accuracy_param.top_k"), "{e}");
}

// ---- BatchNorm --------------------------------------------------------------------------

/// Per-channel mean and biased variance of `(num, channels, spatial)` data, in f64.
fn channel_stats(x: &[f32], num: usize, channels: usize, spatial: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (num * spatial) as f64;
    let mut mean = vec![0f64; channels];
    let mut var = vec![0f64; channels];
    for n in 0..num {
        for c in 0..channels {
            for s in 0..spatial {
                mean[c] += f64::from(x[(n * channels + c) * spatial + s]) / m;
            }
        }
    }
    for n in 0..num {
        for c in 0..channels {
            for s in 0..spatial {
                let d = f64::from(x[(n * channels + c) * spatial + s]) - mean[c];
                var[c] += d * d / m;
            }
        }
    }
    (mean, var)
}

fn normalized(
    x: &[f32],
    (num, channels, spatial): (usize, usize, usize),
    mean: &[f64],
    var: &[f64],
    eps: f64,
) -> Vec<f64> {
    let mut y = vec![0f64; x.len()];
    for n in 0..num {
        for c in 0..channels {
            for s in 0..spatial {
                let i = (n * channels + c) * spatial + s;
                y[i] = (f64::from(x[i]) - mean[c]) / (var[c] + eps).sqrt();
            }
        }
    }
    y
}

#[test]
fn batch_norm_forward_and_running_statistics_over_two_passes() {
    let (num, channels, spatial) = (3, 2, 4);
    let shape = [num, channels, 2, 2];
    let mut h = harness(
        r#"name: "bn" type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.9 eps: 0.001 }"#,
        &[&shape],
    );
    assert_eq!(h.num_params(), 3);
    assert_eq!(h.param_blob(0).shape(), &[2]);
    assert_eq!(h.param_blob(1).shape(), &[2]);
    assert_eq!(h.param_blob(2).shape(), &[1]);
    for k in 0..3 {
        assert!(h
            .param_blob(k)
            .data_to_vec()
            .unwrap()
            .iter()
            .all(|&v| v == 0.0));
    }
    let x1: Vec<f32> = values(41, 24, -1.0, 3.0);
    let x2: Vec<f32> = values(42, 24, 2.0, 5.0);
    let (m1, v1) = channel_stats(&x1, num, channels, spatial);
    let (m2, v2) = channel_stats(&x2, num, channels, spatial);
    h.set_bottom(0, &x1).unwrap();
    h.forward().unwrap();
    let want = normalized(&x1, (num, channels, spatial), &m1, &v1, 1e-3);
    assert_close("first pass", &data(&h, 0), &want, 1e-5);
    h.set_bottom(0, &x2).unwrap();
    h.forward().unwrap();
    let want = normalized(&x2, (num, channels, spatial), &m2, &v2, 1e-3);
    assert_close("second pass", &data(&h, 0), &want, 1e-5);

    // s = 0.9 (0.9 * 0 + 1) + 1; mean = 0.9 m1 + m2; var = 0.9 c v1 + c v2, c = m / (m - 1).
    let maf = f64::from(0.9f32);
    let m = (num * spatial) as f64;
    let c = m / (m - 1.0);
    assert_close(
        "scale factor",
        &[h.param_blob(2).data_to_vec().unwrap()[0]],
        &[maf + 1.0],
        1e-6,
    );
    let mean: Vec<f64> = (0..2).map(|k| maf * m1[k] + m2[k]).collect();
    let var: Vec<f64> = (0..2).map(|k| maf * c * v1[k] + c * v2[k]).collect();
    assert_close(
        "running mean",
        &h.param_blob(0).data_to_vec().unwrap(),
        &mean,
        1e-5,
    );
    assert_close(
        "running variance",
        &h.param_blob(1).data_to_vec().unwrap(),
        &var,
        1e-5,
    );
}

#[test]
fn batch_norm_global_stats_divide_by_the_scale_factor() {
    let shape = [2usize, 3, 2];
    let mean = [1.0f32, -2.0, 0.5];
    let var = [4.0f32, 1.0, 9.0];
    let x = values(43, 12, -3.0, 3.0);
    for (text, factor) in [
        (
            r#"name: "bn" type: "BatchNorm" batch_norm_param { use_global_stats: true }"#,
            2.0f32,
        ),
        (r#"name: "bn" type: "BatchNorm" phase: TEST"#, 2.0),
        (
            r#"name: "bn" type: "BatchNorm" phase: TEST bottom: "x" top: "x""#,
            0.5,
        ),
        (r#"name: "bn" type: "BatchNorm" phase: TEST"#, 0.0),
    ] {
        let mut h = harness(text, &[&shape]);
        h.param_blob_mut(0).set_data(&mean).unwrap();
        h.param_blob_mut(1).set_data(&var).unwrap();
        h.param_blob_mut(2).set_data(&[factor]).unwrap();
        h.set_bottom(0, &x).unwrap();
        h.forward().unwrap();
        let s = if factor == 0.0 {
            0.0
        } else {
            1.0 / f64::from(factor)
        };
        let m: Vec<f64> = mean.iter().map(|&v| f64::from(v) * s).collect();
        let v: Vec<f64> = var.iter().map(|&v| f64::from(v) * s).collect();
        let want = normalized(&x, (2, 3, 2), &m, &v, 1e-5);
        assert_close(text, &data(&h, 0), &want, 1e-5);
        // The running statistics are left alone.
        assert_eq!(
            h.param_blob(2).data_to_vec().unwrap(),
            vec![factor],
            "{text}"
        );
    }
    // TEST with use_global_stats: false uses the batch.
    let mut h = harness(
        r#"name: "bn" type: "BatchNorm" phase: TEST batch_norm_param { use_global_stats: false }"#,
        &[&shape],
    );
    h.set_bottom(0, &x).unwrap();
    h.forward().unwrap();
    let (m, v) = channel_stats(&x, 2, 3, 2);
    assert_close(
        "TEST, batch stats",
        &data(&h, 0),
        &normalized(&x, (2, 3, 2), &m, &v, 1e-5),
        1e-5,
    );
    assert_eq!(h.param_blob(2).data_to_vec().unwrap(), vec![1.0]);
}

#[test]
fn batch_norm_gradient_with_batch_statistics() {
    let checker = GradientChecker::new(1e-2, 1e-3);
    for (text, shape) in [
        (r#"name: "bn" type: "BatchNorm""#, vec![2, 3, 2, 2]),
        (
            r#"name: "bn" type: "BatchNorm" bottom: "x" top: "x""#,
            vec![3, 2, 3],
        ),
        (
            r#"name: "bn" type: "BatchNorm" batch_norm_param { eps: 0.1 }"#,
            vec![4, 2],
        ),
    ] {
        let mut h = harness(text, &[&shape]);
        checker
            .check_exhaustive(&mut h, None)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}

#[test]
fn batch_norm_gradient_with_global_statistics() {
    for text in [
        r#"name: "bn" type: "BatchNorm" batch_norm_param { use_global_stats: true }"#,
        r#"name: "bn" type: "BatchNorm" phase: TEST bottom: "x" top: "x""#,
    ] {
        let mut h = harness(text, &[&[2, 3, 2]]);
        h.param_blob_mut(0).set_data(&[0.5, -1.0, 2.0]).unwrap();
        h.param_blob_mut(1).set_data(&[3.0, 0.25, 1.0]).unwrap();
        h.param_blob_mut(2).set_data(&[1.5]).unwrap();
        let w = vec![values(44, 12, -1.0, 1.0)];
        check_linear_objective(&mut h, &[0], Some(w), 1e-2, 1e-3);
    }
}

// ---- Scale ------------------------------------------------------------------------------

/// `y[o, d, i] = x[o, d, i] s[d] (+ b[d])`.
fn broadcast(
    x: &[f32],
    (outer, dim, inner): (usize, usize, usize),
    s: &[f32],
    b: Option<&[f32]>,
) -> Vec<f64> {
    let mut y = vec![0f64; x.len()];
    for o in 0..outer {
        for d in 0..dim {
            for i in 0..inner {
                let k = (o * dim + d) * inner + i;
                y[k] = f64::from(x[k]) * f64::from(s[d]) + b.map_or(0.0, |b| f64::from(b[d]));
            }
        }
    }
    y
}

const GAUSS: &str = r#"filler { type: "gaussian" std: 1 }"#;

#[test]
fn scale_forward_against_broadcast_formulas() {
    let shape = [2usize, 3, 4, 2];
    let x = values(51, 48, -2.0, 2.0);
    // (param, learned blob shape, view)
    let cases: [BroadcastCase; 5] = [
        (format!("scale_param {{ {GAUSS} }}"), vec![3], (2, 3, 8)),
        (
            format!("scale_param {{ axis: 1 num_axes: 2 {GAUSS} }}"),
            vec![3, 4],
            (2, 12, 2),
        ),
        (
            format!("scale_param {{ axis: 0 num_axes: -1 {GAUSS} }}"),
            vec![2, 3, 4, 2],
            (1, 48, 1),
        ),
        (
            format!("scale_param {{ axis: -1 {GAUSS} }}"),
            vec![2],
            (24, 2, 1),
        ),
        (
            format!("scale_param {{ num_axes: 0 {GAUSS} }}"),
            vec![],
            (1, 1, 48),
        ),
    ];
    for (param, blob_shape, view) in cases {
        let text = format!(r#"name: "s" type: "Scale" {param}"#);
        let mut h = harness(&text, &[&shape]);
        assert_eq!(h.num_params(), 1);
        assert_eq!(h.param_blob(0).shape(), &blob_shape[..], "{param}");
        let s = h.param_blob(0).data_to_vec().unwrap();
        assert!(s.iter().any(|&v| v != 1.0), "the gaussian filler ran");
        h.set_bottom(0, &x).unwrap();
        h.forward().unwrap();
        assert_close(&param, &data(&h, 0), &broadcast(&x, view, &s, None), 1e-6);
    }
    // Default filler: constant 1, the identity.
    let mut h = harness(r#"name: "s" type: "Scale""#, &[&shape]);
    assert_eq!(h.param_blob(0).data_to_vec().unwrap(), vec![1.0; 3]);
    h.set_bottom(0, &x).unwrap();
    h.forward().unwrap();
    assert_eq!(data(&h, 0), x);
}

#[test]
fn scale_with_bias_term_and_second_bottom() {
    let shape = [2usize, 3, 4];
    let x = values(52, 24, -2.0, 2.0);
    // Learned scale and bias.
    let text = format!(
        r#"name: "s" type: "Scale" scale_param {{ {GAUSS} bias_term: true bias_filler {{ type: "uniform" min: -1 max: 1 }} }}"#
    );
    let mut h = harness(&text, &[&shape]);
    assert_eq!(h.num_params(), 2);
    assert_eq!(h.param_blob(1).shape(), &[3]);
    let s = h.param_blob(0).data_to_vec().unwrap();
    let b = h.param_blob(1).data_to_vec().unwrap();
    h.set_bottom(0, &x).unwrap();
    h.forward().unwrap();
    assert_close(
        "learned",
        &data(&h, 0),
        &broadcast(&x, (2, 3, 4), &s, Some(&b)),
        1e-6,
    );
    // Default bias filler: 0.
    let h = harness(
        r#"name: "s" type: "Scale" scale_param { bias_term: true }"#,
        &[&shape],
    );
    assert_eq!(h.param_blob(1).data_to_vec().unwrap(), vec![0.0; 3]);

    // Scale from a second bottom of shape (3, 4) at axis 1, with a learned bias of that shape.
    let mut h = harness(
        r#"name: "s" type: "Scale" scale_param { bias_term: true bias_filler { type: "gaussian" } }"#,
        &[&shape, &[3, 4]],
    );
    assert_eq!(h.num_params(), 1);
    assert_eq!(h.param_blob(0).shape(), &[3, 4]);
    let s2 = values(53, 12, -1.0, 1.0);
    h.set_bottom(0, &x).unwrap();
    h.set_bottom(1, &s2).unwrap();
    h.forward().unwrap();
    let b = h.param_blob(0).data_to_vec().unwrap();
    assert_close(
        "two bottoms",
        &data(&h, 0),
        &broadcast(&x, (2, 12, 1), &s2, Some(&b)),
        1e-6,
    );

    // A scalar second bottom applies everywhere, whatever the axis.
    let mut h = harness(
        r#"name: "s" type: "Scale" scale_param { axis: 2 }"#,
        &[&shape, &[]],
    );
    h.set_bottom(0, &x).unwrap();
    h.set_bottom(1, &[-1.5]).unwrap();
    h.forward().unwrap();
    assert_close(
        "scalar",
        &data(&h, 0),
        &broadcast(&x, (1, 1, 24), &[-1.5], None),
        1e-6,
    );
}

#[test]
fn scale_gradient() {
    let checker = GradientChecker::new(1e-2, 1e-3);
    let cases: [(String, Vec<Vec<usize>>); 8] = [
        (format!("scale_param {{ {GAUSS} }}"), vec![vec![2, 3, 2, 2]]),
        (
            format!("scale_param {{ axis: 0 num_axes: -1 {GAUSS} }}"),
            vec![vec![2, 3, 2]],
        ),
        (
            format!("scale_param {{ num_axes: 0 {GAUSS} }}"),
            vec![vec![2, 3, 2]],
        ),
        (
            format!(
                r#"scale_param {{ {GAUSS} bias_term: true bias_filler {{ type: "gaussian" }} }}"#
            ),
            vec![vec![2, 3, 2]],
        ),
        (
            format!(r#"bottom: "x" top: "x" scale_param {{ {GAUSS} bias_term: true }}"#),
            vec![vec![2, 3, 2]],
        ),
        ("".to_string(), vec![vec![2, 3, 2, 2], vec![3, 2]]),
        (
            "scale_param { axis: 0 bias_term: true }".to_string(),
            vec![vec![2, 3, 2], vec![2, 3]],
        ),
        (
            "scale_param { axis: 1 }".to_string(),
            vec![vec![2, 3, 2], vec![]],
        ),
    ];
    for (param, shapes) in cases {
        let text = format!(r#"name: "s" type: "Scale" {param}"#);
        let refs: Vec<&[usize]> = shapes.iter().map(|s| &s[..]).collect();
        let mut h = harness(&text, &refs);
        checker
            .check_exhaustive(&mut h, None)
            .unwrap_or_else(|e| panic!("{param}: {e}"));
    }
}

#[test]
fn scale_in_place_with_two_bottoms() {
    let mut h = harness(
        r#"name: "s" type: "Scale" bottom: "x" bottom: "s" top: "x""#,
        &[&[2, 3, 2], &[3]],
    );
    assert!(h.is_in_place(0));
    let x = h.bottom(0).data_to_vec().unwrap();
    let s = h.bottom(1).data_to_vec().unwrap();
    h.forward().unwrap();
    assert_close(
        "in place",
        &data(&h, 0),
        &broadcast(&x, (2, 3, 2), &s, None),
        1e-6,
    );
    h.set_bottom(0, &x).unwrap();
    let w = vec![values(54, 12, -1.0, 1.0)];
    check_linear_objective(&mut h, &[0, 1], Some(w), 1e-2, 1e-3);
}

#[test]
fn scale_rejects_bad_shapes() {
    let e = build_error(
        r#"name: "s" type: "Scale" scale_param { num_axes: -2 }"#,
        &[&[2, 3]],
    );
    assert!(e.contains("scale_param.num_axes"), "{e}");
    let e = build_error(
        r#"name: "s" type: "Scale" scale_param { num_axes: 3 }"#,
        &[&[2, 3]],
    );
    assert!(e.contains("extends past bottom[0]'s shape"), "{e}");
    let e = build_error(r#"name: "s" type: "Scale""#, &[&[2, 3, 4], &[4]]);
    assert!(e.contains("dimension mismatch"), "{e}");
    let e = build_error(
        r#"name: "s" type: "Scale" scale_param { axis: 5 }"#,
        &[&[2, 3]],
    );
    assert!(e.contains("scale_param.axis"), "{e}");
}

// ---- Bias -------------------------------------------------------------------------------

#[test]
fn bias_forward_against_broadcast_formulas() {
    let shape = [2usize, 3, 4];
    let x = values(61, 24, -2.0, 2.0);
    let ones = vec![1.0f32; 24];
    let cases: [BroadcastCase; 4] = [
        (format!("bias_param {{ {GAUSS} }}"), vec![3], (2, 3, 4)),
        (
            format!("bias_param {{ axis: 0 num_axes: 2 {GAUSS} }}"),
            vec![2, 3],
            (1, 6, 4),
        ),
        (
            format!("bias_param {{ axis: -1 {GAUSS} }}"),
            vec![4],
            (6, 4, 1),
        ),
        (
            format!("bias_param {{ num_axes: 0 {GAUSS} }}"),
            vec![],
            (1, 1, 24),
        ),
    ];
    for (param, blob_shape, view) in cases {
        let text = format!(r#"name: "b" type: "Bias" {param}"#);
        let mut h = harness(&text, &[&shape]);
        assert_eq!(h.param_blob(0).shape(), &blob_shape[..], "{param}");
        let b = h.param_blob(0).data_to_vec().unwrap();
        assert!(b.iter().any(|&v| v != 0.0));
        h.set_bottom(0, &x).unwrap();
        h.forward().unwrap();
        assert_close(
            &param,
            &data(&h, 0),
            &broadcast(&x, view, &ones, Some(&b)),
            1e-6,
        );
    }
    // Default filler: 0, the identity.
    let mut h = harness(r#"name: "b" type: "Bias""#, &[&shape]);
    h.set_bottom(0, &x).unwrap();
    h.forward().unwrap();
    assert_eq!(data(&h, 0), x);
    // Second bottom (4,) at axis 2.
    let mut h = harness(
        r#"name: "b" type: "Bias" bias_param { axis: 2 }"#,
        &[&shape, &[4]],
    );
    assert_eq!(h.num_params(), 0);
    let b = values(62, 4, -1.0, 1.0);
    h.set_bottom(0, &x).unwrap();
    h.set_bottom(1, &b).unwrap();
    h.forward().unwrap();
    assert_close(
        "two bottoms",
        &data(&h, 0),
        &broadcast(&x, (6, 4, 1), &ones, Some(&b)),
        1e-6,
    );
}

#[test]
fn bias_gradient() {
    let checker = GradientChecker::new(1e-2, 1e-3);
    let cases: [(String, Vec<Vec<usize>>); 6] = [
        (format!("bias_param {{ {GAUSS} }}"), vec![vec![2, 3, 2, 2]]),
        (
            format!("bias_param {{ axis: 0 num_axes: -1 {GAUSS} }}"),
            vec![vec![2, 3]],
        ),
        (
            format!(r#"bottom: "x" top: "x" bias_param {{ num_axes: 0 {GAUSS} }}"#),
            vec![vec![2, 3, 2]],
        ),
        ("".to_string(), vec![vec![2, 3, 2], vec![3, 2]]),
        (
            "bias_param { axis: 0 }".to_string(),
            vec![vec![2, 3, 2], vec![]],
        ),
        (
            r#"bottom: "x" bottom: "b" top: "x""#.to_string(),
            vec![vec![2, 3, 2], vec![3]],
        ),
    ];
    for (param, shapes) in cases {
        let text = format!(r#"name: "b" type: "Bias" {param}"#);
        let refs: Vec<&[usize]> = shapes.iter().map(|s| &s[..]).collect();
        let mut h = harness(&text, &refs);
        checker
            .check_exhaustive(&mut h, None)
            .unwrap_or_else(|e| panic!("{param}: {e}"));
    }
}

#[test]
fn bias_rejects_bad_shapes() {
    let e = build_error(
        r#"name: "b" type: "Bias" bias_param { num_axes: -3 }"#,
        &[&[2, 3]],
    );
    assert!(e.contains("bias_param.num_axes"), "{e}");
    let e = build_error(r#"name: "b" type: "Bias""#, &[&[2, 3, 4], &[3, 5]]);
    assert!(e.contains("dimension mismatch"), "{e}");
    let e = build_error(
        r#"name: "b" type: "Bias" bias_param { filler { type: "nope" } }"#,
        &[&[2, 3]],
    );
    assert!(e.contains("bias_param.filler"), "{e}");
}

// ---- EuclideanLoss ----------------------------------------------------------------------

#[test]
fn euclidean_loss_forward_and_gradient() {
    let shape = [5usize, 2, 3];
    let mut h = harness(r#"name: "l" type: "EuclideanLoss""#, &[&shape, &shape]);
    let a = h.bottom(0).data_to_vec().unwrap();
    let b = h.bottom(1).data_to_vec().unwrap();
    let want: f64 = a
        .iter()
        .zip(&b)
        .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
        .sum::<f64>()
        / 5.0
        / 2.0;
    h.forward().unwrap();
    assert_close("euclidean", &[scalar(&h)], &[want], 1e-6);
    let checker = GradientChecker::new(1e-2, 1e-2);
    checker.check_exhaustive(&mut h, None).unwrap();
    for text in [
        r#"name: "l" type: "EuclideanLoss""#,
        r#"name: "l" type: "EuclideanLoss" loss_weight: 2.5"#,
    ] {
        let mut h = harness(text, &[&shape, &[5, 6]]);
        check_linear_objective(&mut h, &[0, 1], None, 1e-2, 1e-2);
    }
    // Both bottoms take force_backward.
    let layer =
        create_layer::<CpuBackend>(&layer_param(r#"name: "l" type: "EuclideanLoss""#).unwrap())
            .unwrap();
    assert!(layer.allow_force_backward(1));
    let e = build_error(r#"name: "l" type: "EuclideanLoss""#, &[&[5, 6], &[5, 5]]);
    assert!(e.contains("Inputs must have the same dimension"), "{e}");
}

// ---- SigmoidCrossEntropyLoss ------------------------------------------------------------

fn sce_terms(x: &[f32], t: &[f32]) -> Vec<f64> {
    x.iter()
        .zip(t)
        .map(|(&x, &t)| {
            let (x, t) = (f64::from(x), f64::from(t));
            let p = 1.0 / (1.0 + (-x).exp());
            -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
        })
        .collect()
}

#[test]
fn sigmoid_cross_entropy_loss_forward_for_every_normalization() {
    let shape = [4usize, 3];
    let x = values(71, 12, -4.0, 4.0);
    let mut t: Vec<f32> = values(72, 12, 0.0, 1.0).iter().map(|v| v.round()).collect();
    t[3] = -1.0;
    t[7] = -1.0;
    let terms = sce_terms(&x, &t);
    let valid: f64 = terms
        .iter()
        .zip(&t)
        .filter(|(_, &t)| t != -1.0)
        .map(|(v, _)| v)
        .sum();
    let all_t: Vec<f32> = t.iter().map(|&v| v.max(0.0)).collect();
    let all: f64 = sce_terms(&x, &all_t).iter().sum();
    let cases: [(&str, bool, f64); 7] = [
        ("", false, all / 4.0),
        ("loss_param { normalization: FULL }", false, all / 12.0),
        ("loss_param { normalization: NONE }", false, all),
        ("loss_param { normalize: true }", false, all / 12.0),
        ("loss_param { ignore_label: -1 }", true, valid / 4.0),
        (
            "loss_param { ignore_label: -1 normalization: VALID }",
            true,
            valid / 10.0,
        ),
        (
            "loss_param { ignore_label: -1 normalization: FULL }",
            true,
            valid / 12.0,
        ),
    ];
    for (param, ignore, want) in cases {
        let text = format!(r#"name: "l" type: "SigmoidCrossEntropyLoss" {param}"#);
        let mut h = harness(&text, &[&shape, &shape]);
        h.set_bottom(0, &x).unwrap();
        h.set_bottom(1, if ignore { &t } else { &all_t }).unwrap();
        h.forward().unwrap();
        assert_close(param, &[scalar(&h)], &[want], 1e-5);
    }
    // Large scores stay finite.
    let mut h = harness(
        r#"name: "l" type: "SigmoidCrossEntropyLoss""#,
        &[&[1, 2], &[1, 2]],
    );
    h.set_bottom(0, &[100.0, -100.0]).unwrap();
    h.set_bottom(1, &[0.0, 1.0]).unwrap();
    h.forward().unwrap();
    assert_close("large scores", &[scalar(&h)], &[200.0], 1e-6);
}

#[test]
fn sigmoid_cross_entropy_loss_gradient() {
    let checker = GradientChecker::new(1e-2, 1e-2);
    for param in [
        "loss_weight: 3",
        "loss_param { ignore_label: -1 normalization: VALID }",
        "loss_param { normalization: NONE }",
    ] {
        let text = format!(r#"name: "l" type: "SigmoidCrossEntropyLoss" {param}"#);
        let shape = [5usize, 2, 2];
        let mut t = values(73, 20, 0.0, 1.0);
        t[2] = -1.0;
        t[9] = -1.0;
        let mut h = harness(&text, &[&shape, &shape]);
        h.set_bottom(1, &t).unwrap();
        checker
            .check_exhaustive(&mut h, CheckBottoms::Only(0))
            .unwrap_or_else(|e| panic!("{param}: {e}"));
        let mut h = harness(&text, &[&shape, &shape]);
        h.set_bottom(1, &t).unwrap();
        check_linear_objective(&mut h, &[0], None, 1e-2, 1e-2);
        if param.contains("ignore_label") {
            h.forward().unwrap();
            h.backward(&[true, false]).unwrap();
            let g = h.bottom(0).diff_to_vec().unwrap();
            assert_eq!((g[2], g[9]), (0.0, 0.0));
        }
    }
    let mut h = harness(
        r#"name: "l" type: "SigmoidCrossEntropyLoss""#,
        &[&[2, 2], &[2, 2]],
    );
    h.forward().unwrap();
    let e = h.backward(&[true, true]).unwrap_err().to_string();
    assert!(
        e.contains("SigmoidCrossEntropyLoss Layer cannot backpropagate to label inputs."),
        "{e}"
    );
    let e = build_error(
        r#"name: "l" type: "SigmoidCrossEntropyLoss""#,
        &[&[2, 2], &[2, 3]],
    );
    assert!(e.contains("same count"), "{e}");
}

// ---- HingeLoss --------------------------------------------------------------------------

fn hinge_naive(x: &[f32], label: &[f32], num: usize, dim: usize, l2: bool) -> f64 {
    let mut total = 0.0;
    for n in 0..num {
        for d in 0..dim {
            let delta = if d == label[n] as usize { 1.0 } else { -1.0 };
            let t = (1.0 - delta * f64::from(x[n * dim + d])).max(0.0);
            total += if l2 { t * t } else { t };
        }
    }
    total / num as f64
}

#[test]
fn hinge_loss_forward_l1_and_l2() {
    let shape = [6usize, 5, 1, 1];
    let x = values(81, 30, -2.0, 2.0);
    let l = labels(82, 6, 5);
    for (param, l2) in [
        ("", false),
        ("hinge_loss_param { norm: L1 }", false),
        ("hinge_loss_param { norm: L2 }", true),
    ] {
        let text = format!(r#"name: "l" type: "HingeLoss" {param}"#);
        let mut h = harness(&text, &[&shape, &[6]]);
        h.set_bottom(0, &x).unwrap();
        h.set_bottom(1, &l).unwrap();
        h.forward().unwrap();
        assert_close(param, &[scalar(&h)], &[hinge_naive(&x, &l, 6, 5, l2)], 1e-6);
    }
}

#[test]
fn hinge_loss_gradient() {
    // Upstream's test: scores of std 10, kinks at |x| = 1 left out.
    let checker = GradientChecker::new(1e-2, 2e-3).with_kink(1.0, 0.01);
    for param in ["", "hinge_loss_param { norm: L2 }", "loss_weight: 3"] {
        let text = format!(r#"name: "l" type: "HingeLoss" {param}"#);
        let mut h = harness(&text, &[&[5, 4], &[5]]);
        h.set_bottom(0, &values(83, 20, -20.0, 20.0)).unwrap();
        h.set_bottom(1, &labels(84, 5, 4)).unwrap();
        checker
            .check_exhaustive(&mut h, CheckBottoms::Only(0))
            .unwrap_or_else(|e| panic!("{param}: {e}"));
        // Small scores keep the f32 loss precise enough for the differences; none lies
        // within 0.05 of a kink.
        let x: Vec<f32> = values(85, 20, -3.0, 3.0)
            .into_iter()
            .map(|v| {
                if (v.abs() - 1.0).abs() < 0.05 {
                    v * 1.2
                } else {
                    v
                }
            })
            .collect();
        let mut h = harness(&text, &[&[5, 4], &[5]]);
        h.set_bottom(0, &x).unwrap();
        h.set_bottom(1, &labels(84, 5, 4)).unwrap();
        check_linear_objective(&mut h, &[0], None, 1e-2, 2e-3);
    }
    let mut h = harness(r#"name: "l" type: "HingeLoss""#, &[&[2, 3], &[2]]);
    h.set_bottom(1, &[0.0, 1.0]).unwrap();
    h.forward().unwrap();
    let e = h.backward(&[true, true]).unwrap_err().to_string();
    assert!(
        e.contains("HingeLoss Layer cannot backpropagate to label inputs."),
        "{e}"
    );
    let param = LayerParameter {
        name: Some("l".into()),
        r#type: Some("HingeLoss".into()),
        hinge_loss_param: Some(rcaffe::proto::caffe::HingeLossParameter { norm: Some(3) }),
        ..Default::default()
    };
    let e = create_layer::<CpuBackend>(&param)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("hinge_loss_param.norm"), "{e}");
}

#[test]
fn layer_types_are_registered() {
    for t in [
        "Softmax",
        "SoftmaxWithLoss",
        "Accuracy",
        "BatchNorm",
        "Scale",
        "Bias",
        "EuclideanLoss",
        "SigmoidCrossEntropyLoss",
        "HingeLoss",
    ] {
        assert!(rcaffe::layers::is_registered(t), "{t}");
        let layer =
            create_layer::<CpuBackend>(&layer_param(&format!(r#"name: "x" type: "{t}""#)).unwrap())
                .unwrap();
        assert_eq!(layer.layer_type(), t);
    }
}

#[test]
fn learned_scale_and_bias_gradients_accumulate() {
    for text in [
        r#"name: "s" type: "Scale" scale_param { bias_term: true }"#,
        r#"name: "s" type: "Scale" scale_param { axis: 0 num_axes: -1 }"#,
        r#"name: "b" type: "Bias""#,
    ] {
        let mut h = harness(text, &[&[2, 3, 2]]);
        h.forward().unwrap();
        h.top_mut(0).set_diff(&values(91, 12, -1.0, 1.0)).unwrap();
        h.backward(&[false]).unwrap();
        let once: Vec<Vec<f32>> = (0..h.num_params())
            .map(|k| h.param_blob(k).diff_to_vec().unwrap())
            .collect();
        assert!(once.iter().all(|d| d.iter().any(|&v| v != 0.0)), "{text}");
        h.backward(&[false]).unwrap();
        for (k, d) in once.iter().enumerate() {
            let twice: Vec<f64> = d.iter().map(|&v| 2.0 * f64::from(v)).collect();
            assert_close(text, &h.param_blob(k).diff_to_vec().unwrap(), &twice, 1e-6);
        }
    }
}
