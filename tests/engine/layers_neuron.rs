//! Neuron and plumbing layers: ReLU, PReLU, Sigmoid, TanH, ELU, AbsVal, Power, Exp, Log, BNLL,
//! Dropout, Concat, Slice, Eltwise, Flatten, Reshape, Silence, ArgMax; and the backend ops
//! added for them, against naive loops. Expected values are computed here from the formulas
//! (upstream: src/caffe/test/test_neuron_layer.cpp and friends for the cases).

use rcaffe::backend::{
    rng_from_seed, Axis, Backend, BackendError, Binary, Block, Broadcast, CpuBackend, CpuBuffer,
    Distribution, Src, Views,
};
use rcaffe::blob::Blob;
use rcaffe::layers::{create_layer, BlobCounts, Blobs, Context, Count, Params};
use rcaffe::proto::caffe::Phase;
use rcaffe::testing::{
    cpu, layer_param, CheckBottoms, GradientChecker, GradientError, LayerHarness,
};

pub(crate) type H = LayerHarness<CpuBackend>;

pub(crate) fn harness(text: &str, shapes: &[&[usize]]) -> H {
    LayerHarness::from_prototxt(&cpu(), text, shapes, 1701).unwrap_or_else(|e| panic!("{e}"))
}

/// The error a layer setup gives, as text.
pub(crate) fn setup_error(text: &str, shapes: &[&[usize]]) -> String {
    match LayerHarness::from_prototxt(&cpu(), text, shapes, 1701) {
        Ok(_) => panic!("expected an error building {text}"),
        Err(e) => e.to_string(),
    }
}

pub(crate) fn top(h: &H, i: usize) -> Vec<f32> {
    h.top(i).data_to_vec().unwrap()
}
fn bottom(h: &H, i: usize) -> Vec<f32> {
    h.bottom(i).data_to_vec().unwrap()
}
pub(crate) fn bottom_diff(h: &H, i: usize) -> Vec<f32> {
    h.bottom(i).diff_to_vec().unwrap()
}

/// Whether `got` is within a relative 1e-5 (absolute below 1) of `want`, NaN matching NaN.
fn close(got: f32, want: f64) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    (f64::from(got) - want).abs() <= 1e-5 * want.abs().max(1.0)
}

pub(crate) fn assert_all_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(close(g, w), "{what}: element {i}: got {g}, want {w}");
    }
}

/// Random values from the backend's Gaussian.
fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let b = cpu();
    let mut buf = b.alloc(n).unwrap();
    let standard = Distribution::Gaussian {
        mean: 0.0,
        std: 1.0,
    };
    b.random(standard, &mut rng_from_seed(seed), buf.whole_mut())
        .unwrap();
    buf.into_vec()
}

fn buf(v: &[f32]) -> CpuBuffer {
    CpuBuffer::from_vec(v.to_vec())
}

const SHAPES: [&[usize]; 3] = [&[2, 3, 4, 5], &[7], &[3, 1, 2]];

/// Builds `type: kind` with `params`, in place or not.
pub(crate) fn neuron_text(kind: &str, params: &str, in_place: bool) -> String {
    let top = if in_place { "x" } else { "y" };
    format!(r#"name: "n" type: "{kind}" bottom: "x" top: "{top}" {params}"#)
}

/// How a neuron test fills its bottom.
#[derive(Clone, Copy)]
pub(crate) enum Fill {
    Gaussian,
    Uniform(f32, f32),
}

/// For every shape, in place and not: the forward pass against `f`, then the element-wise
/// gradient check.
pub(crate) fn neuron_case(
    kind: &str,
    params: &str,
    fill: Fill,
    f: impl Fn(f64) -> f64,
    checker: GradientChecker,
) {
    for shape in SHAPES {
        for in_place in [false, true] {
            let mut h = harness(&neuron_text(kind, params, in_place), &[shape]);
            assert_eq!(h.is_in_place(0), in_place);
            if let Fill::Uniform(lo, hi) = fill {
                h.fill_bottom_uniform(0, lo, hi).unwrap();
            }
            let x = bottom(&h, 0);
            h.forward().unwrap();
            assert_eq!(h.top(0).shape(), shape);
            let want: Vec<f64> = x.iter().map(|&v| f(f64::from(v))).collect();
            let what = format!("{kind} {params} {shape:?} in place {in_place}");
            assert_all_close(&top(&h, 0), &want, &what);
            h.set_bottom(0, &x).unwrap();
            check_eltwise(checker, &mut h).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
}

/// The checker's element-wise check without its preliminary forward pass, which in place
/// would replace the inputs by the outputs before they are recorded.
fn check_eltwise(c: GradientChecker, h: &mut H) -> Result<(), GradientError> {
    for e in 0..h.top(0).count() {
        c.check_single(h, CheckBottoms::All, Some((0, e)), true)?;
    }
    Ok(())
}

/// The checker's exhaustive check, likewise without the preliminary forward pass.
fn check_exhaustive(c: GradientChecker, h: &mut H) -> Result<(), GradientError> {
    for t in 0..h.num_top() {
        for e in 0..h.top(t).count() {
            c.check_single(h, CheckBottoms::All, Some((t, e)), false)?;
        }
    }
    Ok(())
}

pub(crate) fn kinked(stepsize: f32, threshold: f32) -> GradientChecker {
    GradientChecker::new(stepsize, threshold).with_kink(0.0, 0.01)
}

// ---- backend ops against naive loops ---------------------------------------------------------

#[test]
fn op_prelu_matches_naive_loops() {
    let b = cpu();
    let (outer, channels, inner) = (2, 3, 4);
    let n = outer * channels * inner;
    let mut x = gaussian(n, 1);
    x[5] = 0.0;
    let dy = gaussian(n, 2);
    let slope = vec![0.25, -0.5, 2.0];
    let c_of = |i: usize| (i / inner) % channels;
    let axis = Axis::new(outer, channels, inner);
    let (slope_b, xb, dyb) = (buf(&slope), buf(&x), buf(&dy));
    let (slope_v, x_v) = (slope_b.whole(), xb.whole());
    // Forward (a PRelu broadcast per channel), out of place and in place, at an offset.
    let per_channel = Broadcast::PerChannel;
    let mut y = b.alloc(n + 3).unwrap();
    b.broadcast(
        Binary::PRelu,
        per_channel,
        axis,
        slope_v,
        x_v.src(),
        y.slice_mut(3, n),
    )
    .unwrap();
    let want: Vec<f32> = (0..n)
        .map(|i| {
            if x[i] > 0.0 {
                x[i]
            } else {
                slope[c_of(i)] * x[i]
            }
        })
        .collect();
    assert_eq!(&y.as_slice()[3..], &want[..]);
    let mut z = buf(&x);
    b.broadcast(
        Binary::PRelu,
        per_channel,
        axis,
        slope_v,
        Src::InPlace,
        z.whole_mut(),
    )
    .unwrap();
    assert_eq!(z.as_slice(), &want[..]);
    // Backward.
    let want_dx: Vec<f32> = (0..n)
        .map(|i| {
            if x[i] > 0.0 {
                dy[i]
            } else {
                dy[i] * slope[c_of(i)]
            }
        })
        .collect();
    let mut dx = b.alloc(n).unwrap();
    b.prelu_backward(axis, slope_v, x_v, dyb.whole().src(), dx.whole_mut())
        .unwrap();
    assert_eq!(dx.as_slice(), &want_dx[..]);
    let mut dz = buf(&dy);
    b.prelu_backward(axis, slope_v, x_v, Src::InPlace, dz.whole_mut())
        .unwrap();
    assert_eq!(dz.as_slice(), &want_dx[..]);
    // Slope gradient accumulates.
    let mut ds = buf(&[1.0, 2.0, 3.0]);
    b.prelu_slope_grad(axis, x_v, dyb.whole(), ds.whole_mut())
        .unwrap();
    let mut want_ds = [1.0f32, 2.0, 3.0];
    for i in 0..n {
        if x[i] <= 0.0 {
            want_ds[c_of(i)] += dy[i] * x[i];
        }
    }
    for (c, (&got, &want)) in ds.as_slice().iter().zip(&want_ds).enumerate() {
        assert!((got - want).abs() < 1e-5, "channel {c}");
    }
    // Bounds are checked: an output view past the end of its buffer.
    let mut short = b.alloc(n - 1).unwrap();
    assert!(matches!(
        b.broadcast(
            Binary::PRelu,
            per_channel,
            axis,
            slope_v,
            x_v.src(),
            short.slice_mut(0, n)
        ),
        Err(BackendError::OutOfBounds {
            op: "broadcast",
            arg: "y",
            ..
        })
    ));
}

#[test]
fn op_copy_2d_matches_naive_loop() {
    let b = cpu();
    let x: Vec<f32> = (0..40).map(|v| v as f32).collect();
    let xb = buf(&x);
    let mut y = buf(&[-1.0; 30]);
    let block = |rows, cols, x_stride, y_stride| Block {
        rows,
        cols,
        x_stride,
        y_stride,
    };
    // 3 rows of 4 from stride 10 at 2 into stride 7 at 1.
    b.copy_2d(&block(3, 4, 10, 7), xb.tail(2), y.tail_mut(1))
        .unwrap();
    let mut want = [-1.0f32; 30];
    for r in 0..3 {
        for j in 0..4 {
            want[1 + r * 7 + j] = x[2 + r * 10 + j];
        }
    }
    assert_eq!(y.as_slice(), &want[..]);
    // Nothing to copy: no checks needed.
    b.copy_2d(&block(0, 4, 10, 7), xb.tail(100), y.tail_mut(100))
        .unwrap();
    b.copy_2d(&block(3, 0, 0, 0), xb.whole(), y.whole_mut())
        .unwrap();
    // Overlapping output rows, and views out of bounds, are errors.
    assert!(b
        .copy_2d(&block(2, 4, 4, 3), xb.whole(), y.whole_mut())
        .is_err());
    // 3 rows of 4, 10 apart, span 24 elements: from 20, past the 40 of x.
    assert!(matches!(
        b.copy_2d(&block(3, 4, 10, 4), xb.slice(20, 24), y.whole_mut()),
        Err(BackendError::OutOfBounds { arg: "x", .. })
    ));
    // 3 rows of 4, 4 apart, span 12: from 20, past the 30 of y.
    assert!(matches!(
        b.copy_2d(&block(3, 4, 10, 4), xb.whole(), y.slice_mut(20, 12)),
        Err(BackendError::OutOfBounds { arg: "y", .. })
    ));
}

#[test]
fn op_running_argmax_and_copy_where_eq_match_naive_loops() {
    let b = cpu();
    let x = [1.0, 5.0, -2.0, 3.0, f32::NAN];
    let y0 = [2.0, 5.0, -3.0, 1.0, 0.0];
    let (mut y, mut mask) = (buf(&y0), buf(&[7.0; 5]));
    let xb = buf(&x);
    b.running_argmax(4.0, xb.whole(), y.whole_mut(), mask.whole_mut())
        .unwrap();
    // Strictly greater only: the tie at 1 and the NaN at 4 keep the old values.
    assert_eq!(y.as_slice(), &[2.0, 5.0, -2.0, 3.0, 0.0]);
    assert_eq!(mask.as_slice(), &[7.0, 7.0, 4.0, 4.0, 7.0]);
    let m = [0.0, 1.0, 2.0, 1.0];
    let v = [10.0, 20.0, 30.0, 40.0];
    let (mb, vb) = (buf(&m), buf(&v));
    let mut out = buf(&[9.0; 5]);
    b.copy_where_eq(mb.whole(), 1.0, vb.whole(), out.slice_mut(1, 4))
        .unwrap();
    assert_eq!(out.as_slice(), &[9.0, 0.0, 20.0, 0.0, 40.0]);
}

#[test]
fn op_top_k_over_axis_matches_a_full_sort() {
    let b = cpu();
    let (outer, dim, inner, k) = (3, 6, 2, 4);
    let mut x = gaussian(outer * dim * inner, 3);
    // Ties: element (o=1, j=0) has three equal maxima at c = 1, 2, 4.
    for c in [1, 2, 4] {
        x[(dim + c) * inner] = 9.0;
    }
    let axis = Axis::new(outer, dim, inner);
    let xb = buf(&x);
    let n = outer * k * inner;
    let (mut vals, mut idx) = (b.alloc(n).unwrap(), b.alloc(n).unwrap());
    b.top_k_over_axis(axis, k, xb.whole(), [vals.whole_mut(), idx.whole_mut()])
        .unwrap();
    for o in 0..outer {
        for j in 0..inner {
            let mut pairs: Vec<(f32, usize)> = (0..dim)
                .map(|c| (x[(o * dim + c) * inner + j], c))
                .collect();
            // Descending by value, then by index.
            pairs.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(b.1.cmp(&a.1)));
            for (r, &(v, c)) in pairs[..k].iter().enumerate() {
                let at = (o * k + r) * inner + j;
                assert_eq!(vals.as_slice()[at], v);
                assert_eq!(idx.as_slice()[at], c as f32);
            }
        }
    }
    let tied: Vec<f32> = (0..3).map(|r| idx.as_slice()[(k + r) * inner]).collect();
    assert_eq!(tied, [4.0, 2.0, 1.0]);
    assert!(b
        .top_k_over_axis(
            axis,
            dim + 1,
            xb.whole(),
            [vals.whole_mut(), idx.whole_mut()]
        )
        .is_err());
}

// ---- ReLU --------------------------------------------------------------------------------------

#[test]
fn relu_forward_and_gradient() {
    neuron_case(
        "ReLU",
        "",
        Fill::Gaussian,
        |x| x.max(0.0),
        kinked(1e-2, 1e-3),
    );
}

#[test]
fn relu_negative_slope_forward_and_gradient() {
    let p = "relu_param { negative_slope: 0.01 }";
    let f = |x: f64| if x > 0.0 { x } else { 0.01 * x };
    neuron_case("ReLU", p, Fill::Gaussian, f, kinked(1e-2, 1e-3));
}

#[test]
fn relu_slope_below_zero_in_place_keeps_the_input() {
    // With a negative slope the output's sign is not the input's: backward needs the input.
    let p = "relu_param { negative_slope: -0.5 }";
    let f = |x: f64| if x > 0.0 { x } else { -0.5 * x };
    neuron_case("ReLU", p, Fill::Gaussian, f, kinked(1e-2, 1e-3));
}

#[test]
fn relu_kink_makes_the_unguarded_check_fail() {
    // The check can fail: x right at the kink, without the kink guard.
    let mut h = harness(&neuron_text("ReLU", "", false), &[&[4]]);
    h.set_bottom(0, &[0.001, -1.0, 2.0, 0.5]).unwrap();
    assert!(GradientChecker::new(1e-2, 1e-3)
        .check_eltwise(&mut h)
        .is_err());
    assert!(kinked(1e-2, 1e-3).check_eltwise(&mut h).is_ok());
}

// ---- PReLU -------------------------------------------------------------------------------------

fn prelu_expected(x: &[f32], slopes: &[f32], shape: &[usize], shared: bool) -> Vec<f64> {
    let inner: usize = shape[2..].iter().product();
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let a = if shared {
                slopes[0]
            } else {
                slopes[(i / inner) % shape[1]]
            };
            let v = f64::from(v);
            v.max(0.0) + f64::from(a) * v.min(0.0)
        })
        .collect()
}

#[test]
fn prelu_default_slopes_are_a_quarter() {
    let h = harness(r#"type: "PReLU""#, &[&[2, 3, 4, 5]]);
    assert_eq!(h.num_params(), 1);
    assert_eq!(h.param_blob(0).shape(), &[3]);
    assert_eq!(h.param_blob(0).data_to_vec().unwrap(), vec![0.25; 3]);
    let h = harness(
        r#"type: "PReLU" prelu_param { channel_shared: true }"#,
        &[&[2, 3, 4]],
    );
    assert_eq!(h.param_blob(0).shape(), &[] as &[usize]);
    assert_eq!(h.param_blob(0).data_to_vec().unwrap(), vec![0.25]);
    let text = r#"type: "PReLU" prelu_param { filler { type: "constant" value: -0.1 } }"#;
    let h = harness(text, &[&[2, 2]]);
    assert_eq!(h.param_blob(0).data_to_vec().unwrap(), vec![-0.1; 2]);
}

#[test]
fn prelu_forward_and_gradient() {
    for shared in [false, true] {
        for shape in [&[2, 3, 4, 5][..], &[3, 2], &[2, 4, 3]] {
            for in_place in [false, true] {
                let params = format!(
                    "prelu_param {{ channel_shared: {shared} filler {{ type: \"gaussian\" }} }}"
                );
                let mut h = harness(&neuron_text("PReLU", &params, in_place), &[shape]);
                let slopes = h.param_blob(0).data_to_vec().unwrap();
                assert!(slopes.iter().all(|&a| a != 0.25), "the filler was used");
                let x = bottom(&h, 0);
                h.forward().unwrap();
                let what = format!("PReLU shared {shared} {shape:?} in place {in_place}");
                assert_all_close(
                    &top(&h, 0),
                    &prelu_expected(&x, &slopes, shape, shared),
                    &what,
                );
                h.set_bottom(0, &x).unwrap();
                check_exhaustive(kinked(1e-2, 1e-3), &mut h)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            }
        }
    }
}

#[test]
fn prelu_in_place_matches_out_of_place() {
    let shape: &[usize] = &[2, 3, 4, 5];
    let text = r#"prelu_param { filler { type: "gaussian" } }"#;
    let mut a = harness(&neuron_text("PReLU", text, false), &[shape]);
    let mut b = harness(&neuron_text("PReLU", text, true), &[shape]);
    assert_eq!(bottom(&a, 0), bottom(&b, 0));
    assert_eq!(a.param_blob(0).data_to_vec(), b.param_blob(0).data_to_vec());
    a.forward().unwrap();
    b.forward().unwrap();
    assert_eq!(top(&a, 0), top(&b, 0));
    let dy = gaussian(120, 9);
    a.top_mut(0).set_diff(&dy).unwrap();
    b.top_mut(0).set_diff(&dy).unwrap();
    a.backward(&[true]).unwrap();
    b.backward(&[true]).unwrap();
    assert_eq!(bottom_diff(&a, 0), bottom_diff(&b, 0));
    let (da, db) = (
        a.param_blob(0).diff_to_vec().unwrap(),
        b.param_blob(0).diff_to_vec().unwrap(),
    );
    assert_eq!(da, db);
    assert!(da.iter().any(|&v| v != 0.0));
}

#[test]
fn prelu_matches_relu_with_slope_a_quarter() {
    let shape: &[usize] = &[2, 3, 4, 5];
    let mut p = harness(&neuron_text("PReLU", "", false), &[shape]);
    let mut r = harness(
        &neuron_text("ReLU", "relu_param { negative_slope: 0.25 }", false),
        &[shape],
    );
    r.set_bottom(0, &bottom(&p, 0)).unwrap();
    p.forward().unwrap();
    r.forward().unwrap();
    assert_eq!(top(&p, 0), top(&r, 0));
    let dy = gaussian(120, 4);
    p.top_mut(0).set_diff(&dy).unwrap();
    r.top_mut(0).set_diff(&dy).unwrap();
    p.backward(&[true]).unwrap();
    r.backward(&[true]).unwrap();
    assert_eq!(bottom_diff(&p, 0), bottom_diff(&r, 0));
}

#[test]
fn prelu_needs_two_axes_and_consistent_slopes() {
    let e = setup_error(r#"type: "PReLU""#, &[&[5]]);
    assert!(e.contains("at least 2 axes"), "{e}");
    // Slopes that do not fit the configuration (upstream checks loaded ones).
    let mut h = harness(r#"type: "PReLU""#, &[&[2, 3]]);
    h.param_blob_mut(0).reshape(&[2]).unwrap();
    let e = h.forward().unwrap_err().to_string();
    assert!(e.contains("channel_shared"), "{e}");
    let e = setup_error(
        r#"type: "PReLU" prelu_param { filler { type: "nope" } }"#,
        &[&[2, 3]],
    );
    assert!(e.contains("nope"), "{e}");
}

// ---- Sigmoid, TanH, ELU, BNLL --------------------------------------------------------------------

#[test]
fn sigmoid_forward_and_gradient() {
    let f = |x: f64| 1.0 / (1.0 + (-x).exp());
    neuron_case("Sigmoid", "", Fill::Gaussian, f, kinked(1e-2, 1e-3));
}

#[test]
fn tanh_forward_and_gradient() {
    neuron_case(
        "TanH",
        "",
        Fill::Gaussian,
        f64::tanh,
        GradientChecker::new(1e-2, 1e-3),
    );
}

#[test]
fn elu_forward_and_gradient() {
    let f = |x: f64| if x > 0.0 { x } else { 0.5 * (x.exp() - 1.0) };
    neuron_case(
        "ELU",
        "elu_param { alpha: 0.5 }",
        Fill::Gaussian,
        f,
        kinked(1e-2, 1e-3),
    );
    // Default alpha 1.
    let f = |x: f64| if x > 0.0 { x } else { x.exp() - 1.0 };
    neuron_case("ELU", "", Fill::Gaussian, f, kinked(1e-2, 1e-3));
}

#[test]
fn elu_as_relu_and_with_negative_alpha() {
    neuron_case(
        "ELU",
        "elu_param { alpha: 0 }",
        Fill::Gaussian,
        |x| x.max(0.0),
        kinked(1e-2, 1e-3),
    );
    let f = |x: f64| if x > 0.0 { x } else { -0.7 * (x.exp() - 1.0) };
    neuron_case(
        "ELU",
        "elu_param { alpha: -0.7 }",
        Fill::Gaussian,
        f,
        kinked(1e-2, 1e-3),
    );
}

#[test]
fn bnll_forward_and_gradient() {
    let f = |x: f64| (1.0 + x.exp()).ln();
    neuron_case(
        "BNLL",
        "",
        Fill::Gaussian,
        f,
        GradientChecker::new(1e-2, 1e-3),
    );
    // Large inputs stay finite.
    let mut h = harness(&neuron_text("BNLL", "", false), &[&[3]]);
    h.set_bottom(0, &[100.0, -100.0, 0.0]).unwrap();
    h.forward().unwrap();
    assert_all_close(
        &top(&h, 0),
        &[100.0, (-100f64).exp(), 2f64.ln()],
        "BNLL extremes",
    );
}

// ---- AbsVal ------------------------------------------------------------------------------------

#[test]
fn absval_forward_and_gradient() {
    for shape in SHAPES {
        let mut h = harness(&neuron_text("AbsVal", "", false), &[shape]);
        let x = bottom(&h, 0);
        h.forward().unwrap();
        let want: Vec<f64> = x.iter().map(|&v| f64::from(v).abs()).collect();
        assert_all_close(&top(&h, 0), &want, "AbsVal");
        kinked(1e-2, 1e-3).check_eltwise(&mut h).unwrap();
    }
}

#[test]
fn absval_refuses_in_place() {
    let e = setup_error(&neuron_text("AbsVal", "", true), &[&[3]]);
    assert!(
        e.contains("AbsVal Layer does not allow in-place computation"),
        "{e}"
    );
}

// ---- Power, Exp, Log ---------------------------------------------------------------------------

#[test]
fn power_forward_and_gradient() {
    // (power, scale, shift, fill): fractional powers get inputs with a positive base.
    let cases = [
        (0.37f32, 0.83f32, -2.4f32, Fill::Uniform(3.1, 5.0)),
        (0.37, 0.83, 0.0, Fill::Uniform(0.2, 2.0)),
        (0.0, 0.83, -2.4, Fill::Gaussian),
        (1.0, 0.83, -2.4, Fill::Gaussian),
        (2.0, 0.34, -2.4, Fill::Gaussian),
        (2.0, 0.5, 0.0, Fill::Gaussian),
        (3.0, -1.5, 0.5, Fill::Gaussian),
        (-1.0, 1.0, 4.0, Fill::Uniform(-1.0, 2.0)),
    ];
    for (p, a, s, fill) in cases {
        let params = format!("power_param {{ power: {p} scale: {a} shift: {s} }}");
        let f = |x: f64| (f64::from(s) + f64::from(a) * x).powf(f64::from(p));
        neuron_case("Power", &params, fill, f, GradientChecker::new(1e-3, 1e-2));
    }
}

#[test]
fn power_special_cases_as_upstream() {
    // A negative base to a fractional power is NaN; power 0 ignores the input entirely.
    let mut h = harness(
        &neuron_text("Power", "power_param { power: 0.5 }", false),
        &[&[2]],
    );
    h.set_bottom(0, &[-4.0, 4.0]).unwrap();
    h.forward().unwrap();
    let y = top(&h, 0);
    assert!(y[0].is_nan() && y[1] == 2.0, "{y:?}");
    let p = "power_param { power: 0 shift: 3 }";
    let mut h = harness(&neuron_text("Power", p, false), &[&[2]]);
    h.set_bottom(0, &[f32::NAN, 1.0]).unwrap();
    h.forward().unwrap();
    assert_eq!(top(&h, 0), [1.0, 1.0]);
    h.top_mut(0).set_diff(&[f32::NAN, 5.0]).unwrap();
    h.backward(&[true]).unwrap();
    assert_eq!(bottom_diff(&h, 0), [0.0, 0.0]);
    // Scale 0: shift^power everywhere.
    let p = "power_param { power: 2 scale: 0 shift: 3 }";
    let mut h = harness(&neuron_text("Power", p, false), &[&[2]]);
    h.set_bottom(0, &[f32::INFINITY, 1.0]).unwrap();
    h.forward().unwrap();
    assert_eq!(top(&h, 0), [9.0, 9.0]);
}

#[test]
fn exp_forward_and_gradient() {
    for (base, scale, shift) in [
        (-1.0f64, 1.0f64, 0.0f64),
        (-1.0, 1.0, 1.0),
        (2.0, 1.0, 0.0),
        (2.0, 1.0, 1.0),
        (2.0, 3.0, 0.0),
        (2.0, 3.0, 1.0),
        (0.5, -1.0, 0.3),
    ] {
        let params = format!("exp_param {{ base: {base} scale: {scale} shift: {shift} }}");
        let f = |x: f64| {
            let e = shift + scale * x;
            if base == -1.0 {
                e.exp()
            } else {
                base.powf(e)
            }
        };
        neuron_case(
            "Exp",
            &params,
            Fill::Gaussian,
            f,
            GradientChecker::new(1e-2, 1e-3),
        );
    }
}

#[test]
fn log_forward_and_gradient() {
    for (base, scale, shift) in [
        (-1.0f64, 1.0f64, 0.0f64),
        (2.0, 1.0, 0.0),
        (2.0, 1.0, 1.0),
        (2.0, 3.0, 0.0),
        (2.0, 3.0, 1.0),
        (10.0, 0.5, 0.25),
    ] {
        let params = format!("log_param {{ base: {base} scale: {scale} shift: {shift} }}");
        let f = |x: f64| {
            let v = (shift + scale * x).ln();
            if base == -1.0 {
                v
            } else {
                v / base.ln()
            }
        };
        neuron_case(
            "Log",
            &params,
            Fill::Uniform(0.5, 3.0),
            f,
            GradientChecker::new(1e-2, 1e-2),
        );
    }
}

#[test]
fn exp_and_log_reject_bad_bases() {
    for (kind, field) in [("Exp", "exp_param"), ("Log", "log_param")] {
        for base in ["0", "-2"] {
            let e = setup_error(
                &neuron_text(kind, &format!("{field} {{ base: {base} }}"), false),
                &[&[2]],
            );
            assert!(
                e.contains(&format!("{field}.base")),
                "{kind} base {base}: {e}"
            );
        }
    }
    // Base 1 has ln 0: fine for Exp (always 1), an error for Log.
    let mut h = harness(&neuron_text("Exp", "exp_param { base: 1 }", false), &[&[3]]);
    h.forward().unwrap();
    assert_eq!(top(&h, 0), [1.0; 3]);
    let e = setup_error(&neuron_text("Log", "log_param { base: 1 }", false), &[&[2]]);
    assert!(e.contains("log_param.base"), "{e}");
}

// ---- Dropout -----------------------------------------------------------------------------------

fn dropout_train_statistics(ratio: f32) {
    // Without dropout_param the default ratio, 0.5, applies.
    let params = if ratio == 0.5 {
        String::new()
    } else {
        format!("dropout_param {{ dropout_ratio: {ratio} }}")
    };
    let mut h = harness(&neuron_text("Dropout", &params, false), &[&[100, 100]]);
    assert_eq!(h.phase(), Phase::Train);
    let x = bottom(&h, 0);
    h.forward().unwrap();
    let y = top(&h, 0);
    let scale = 1.0 / (1.0 - ratio);
    let mut kept = 0;
    for (&a, &b) in x.iter().zip(&y) {
        if b != 0.0 {
            kept += 1;
            assert_eq!(b, a * scale, "a kept element is scaled by 1 / (1 - ratio)");
        }
    }
    let n = x.len() as f64;
    let dropped = 1.0 - f64::from(kept) / n;
    let se = (f64::from(ratio) * (1.0 - f64::from(ratio)) / n).sqrt();
    assert!(
        (dropped - f64::from(ratio)).abs() <= 4.0 * se,
        "dropped {dropped} for ratio {ratio}"
    );
    // Backward uses the same mask and scale.
    h.top_mut(0).set_diff(&vec![1.0; x.len()]).unwrap();
    h.backward(&[true]).unwrap();
    let dx = bottom_diff(&h, 0);
    for (&d, &b) in dx.iter().zip(&y) {
        assert_eq!(d, if b != 0.0 { scale } else { 0.0 });
    }
    // A new forward pass draws a new mask.
    h.forward().unwrap();
    assert_ne!(top(&h, 0), y);
}

#[test]
fn dropout_half_in_train() {
    dropout_train_statistics(0.5);
}

#[test]
fn dropout_three_quarters_in_train() {
    dropout_train_statistics(0.75);
}

#[test]
fn dropout_is_the_identity_in_test() {
    for in_place in [false, true] {
        let text = neuron_text(
            "Dropout",
            "phase: TEST dropout_param { dropout_ratio: 0.3 }",
            in_place,
        );
        let mut h = harness(&text, &[&[2, 3, 4, 5]]);
        assert_eq!(h.phase(), Phase::Test);
        let x = bottom(&h, 0);
        h.forward().unwrap();
        assert_eq!(top(&h, 0), x);
        let dy = gaussian(120, 5);
        h.top_mut(0).set_diff(&dy).unwrap();
        h.backward(&[true]).unwrap();
        assert_eq!(bottom_diff(&h, 0), dy);
        check_eltwise(GradientChecker::new(1e-2, 1e-3), &mut h).unwrap();
    }
}

/// Dropout in TRAIN: each output is the input times 0 or `1 / (1 - ratio)`, the gradient is
/// the top's times the same factor (the mask the forward pass drew, read back from its output),
/// in place as out of place; each pass draws a new mask (the layer's stream advances), so a
/// numerical gradient check, which reruns the forward pass, does not apply.
#[test]
fn dropout_in_place_matches_out_of_place_and_its_own_mask() {
    let shape: &[usize] = &[2, 3, 4, 5];
    let ratio = 0.3f32;
    let p = format!("dropout_param {{ dropout_ratio: {ratio} }}");
    let scale = (1.0 / (1.0 - f64::from(ratio))) as f32;
    let mut a = harness(&neuron_text("Dropout", &p, false), &[shape]);
    let mut b = harness(&neuron_text("Dropout", &p, true), &[shape]);
    let mut previous_mask = None;
    for pass in 0..2 {
        // The in-place layer overwrote its input: give it the input again.
        b.set_bottom(0, &bottom(&a, 0)).unwrap();
        a.forward().unwrap();
        b.forward().unwrap();
        assert_eq!(top(&a, 0), top(&b, 0), "pass {pass}");
        let x = bottom(&a, 0);
        let mask: Vec<f32> = top(&a, 0)
            .iter()
            .zip(&x)
            .map(|(&y, &x)| {
                assert!(
                    y == 0.0 || y == x * scale,
                    "pass {pass}: output {y} from {x}"
                );
                if y == 0.0 {
                    0.0
                } else {
                    scale
                }
            })
            .collect();
        let dy = gaussian(120, 6);
        a.top_mut(0).set_diff(&dy).unwrap();
        b.top_mut(0).set_diff(&dy).unwrap();
        a.backward(&[true]).unwrap();
        b.backward(&[true]).unwrap();
        let want: Vec<f32> = dy.iter().zip(&mask).map(|(d, m)| d * m).collect();
        assert_eq!(bottom_diff(&a, 0), want, "pass {pass}");
        assert_eq!(bottom_diff(&b, 0), want, "pass {pass}");
        assert_ne!(
            previous_mask.as_ref(),
            Some(&mask),
            "pass {pass} repeats the mask"
        );
        previous_mask = Some(mask);
    }
}

#[test]
fn dropout_ratio_must_be_below_one() {
    for ratio in ["1", "-0.1", "1.5"] {
        let p = format!("dropout_param {{ dropout_ratio: {ratio} }}");
        let e = setup_error(&neuron_text("Dropout", &p, false), &[&[2]]);
        assert!(e.contains("dropout_param.dropout_ratio"), "{e}");
    }
}

// ---- Concat and Slice ----------------------------------------------------------------------------

/// Concatenation along `axis` by index arithmetic.
fn naive_concat(parts: &[(Vec<f32>, &[usize])], axis: usize) -> Vec<f32> {
    let shape = parts[0].1;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for (data, s) in parts {
            let len = s[axis] * inner;
            out.extend_from_slice(&data[o * len..(o + 1) * len]);
        }
    }
    out
}

#[test]
fn concat_hand_case() {
    let mut h = harness(r#"type: "Concat""#, &[&[2, 2], &[2, 1]]);
    h.set_bottom(0, &[1.0, 2.0, 3.0, 4.0]).unwrap();
    h.set_bottom(1, &[5.0, 6.0]).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[2, 3]);
    assert_eq!(top(&h, 0), [1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
    h.top_mut(0)
        .set_diff(&[10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
        .unwrap();
    h.backward(&[true, true]).unwrap();
    assert_eq!(bottom_diff(&h, 0), [10.0, 20.0, 40.0, 50.0]);
    assert_eq!(bottom_diff(&h, 1), [30.0, 60.0]);
}

#[test]
fn concat_shapes_and_values() {
    type Case<'a> = (&'a str, &'a [&'a [usize]], usize, &'a [usize]);
    let cases: [Case; 5] = [
        (
            "concat_param { axis: 0 }",
            &[&[2, 3, 6, 5], &[5, 3, 6, 5]],
            0,
            &[7, 3, 6, 5],
        ),
        ("", &[&[2, 3, 6, 5], &[2, 5, 6, 5]], 1, &[2, 8, 6, 5]),
        (
            "concat_param { concat_dim: 0 }",
            &[&[1, 3], &[2, 3], &[4, 3]],
            0,
            &[7, 3],
        ),
        (
            "concat_param { axis: -1 }",
            &[&[2, 3, 1], &[2, 3, 4]],
            2,
            &[2, 3, 5],
        ),
        ("", &[&[2, 3, 4]], 1, &[2, 3, 4]),
    ];
    for (params, shapes, axis, want) in cases {
        let mut h = harness(&format!(r#"type: "Concat" {params}"#), shapes);
        h.forward().unwrap();
        assert_eq!(h.top(0).shape(), want, "{params}");
        let parts: Vec<(Vec<f32>, &[usize])> = (0..shapes.len())
            .map(|i| (bottom(&h, i), shapes[i]))
            .collect();
        assert_eq!(top(&h, 0), naive_concat(&parts, axis), "{params}");
    }
}

#[test]
fn concat_gradient() {
    let cases: [(&str, &[&[usize]]); 4] = [
        ("concat_param { axis: 0 }", &[&[2, 3, 2], &[1, 3, 2]]),
        ("", &[&[2, 3, 2], &[2, 1, 2], &[2, 2, 2]]),
        ("concat_param { axis: -1 }", &[&[2, 2, 1], &[2, 2, 3]]),
        ("", &[&[2, 3]]),
    ];
    for (params, shapes) in cases {
        let mut h = harness(&format!(r#"type: "Concat" {params}"#), shapes);
        GradientChecker::new(1e-2, 1e-2)
            .check_exhaustive(&mut h, None)
            .unwrap_or_else(|e| panic!("{params}: {e}"));
    }
    // Only bottom 1 propagates: bottom 0's diff is left alone.
    let mut h = harness(r#"type: "Concat""#, &[&[2, 3], &[2, 2]]);
    h.bottom_mut(0).set_diff(&[7.0; 6]).unwrap();
    h.forward().unwrap();
    h.top_mut(0).set_diff(&[1.0; 10]).unwrap();
    h.backward(&[false, true]).unwrap();
    assert_eq!(bottom_diff(&h, 0), [7.0; 6]);
    assert_eq!(bottom_diff(&h, 1), [1.0; 4]);
}

#[test]
fn concat_errors() {
    let e = setup_error(
        r#"type: "Concat" concat_param { axis: 1 concat_dim: 1 }"#,
        &[&[2, 3]],
    );
    assert!(e.contains("not both"), "{e}");
    let e = setup_error(r#"type: "Concat""#, &[&[2, 3, 4], &[3, 3, 4]]);
    assert!(e.contains("same shape except at axis 1"), "{e}");
    let e = setup_error(r#"type: "Concat""#, &[&[2, 3, 4], &[2, 3]]);
    assert!(e.contains("same number of axes"), "{e}");
    let e = setup_error(
        r#"type: "Concat" concat_param { concat_dim: 2 }"#,
        &[&[2, 3], &[2, 3]],
    );
    assert!(e.contains("concat_param.concat_dim 2 out of range"), "{e}");
    let e = setup_error(
        r#"type: "Concat" concat_param { axis: -3 }"#,
        &[&[2, 3], &[2, 3]],
    );
    assert!(e.contains("axis -3"), "{e}");
}

#[test]
fn slice_shapes_and_values() {
    let mut h = harness(
        r#"type: "Slice" top: "a" top: "b" top: "c" slice_param { slice_point: 1 slice_point: 3 }"#,
        &[&[2, 5, 3]],
    );
    h.forward().unwrap();
    let x = bottom(&h, 0);
    for (t, (start, len)) in [(0, 1), (1, 2), (3, 2)].into_iter().enumerate() {
        assert_eq!(h.top(t).shape(), &[2, len, 3]);
        let mut want = Vec::new();
        for n in 0..2 {
            for c in start..start + len {
                for j in 0..3 {
                    want.push(x[(n * 5 + c) * 3 + j]);
                }
            }
        }
        assert_eq!(top(&h, t), want, "top {t}");
    }
    // Even split along axis 0, and the legacy slice_dim.
    for params in ["slice_param { axis: 0 }", "slice_param { slice_dim: 0 }"] {
        let text = format!(r#"type: "Slice" top: "a" top: "b" top: "c" {params}"#);
        let mut h = harness(&text, &[&[6, 2]]);
        h.forward().unwrap();
        let x = bottom(&h, 0);
        for t in 0..3 {
            assert_eq!(h.top(t).shape(), &[2, 2]);
            assert_eq!(top(&h, t), x[t * 4..t * 4 + 4].to_vec());
        }
    }
    // A last slice of length 0 is allowed, as upstream.
    let text = r#"type: "Slice" top: "a" top: "b" slice_param { axis: -1 slice_point: 4 }"#;
    let mut h = harness(text, &[&[2, 4]]);
    h.forward().unwrap();
    assert_eq!(h.top(1).shape(), &[2, 0]);
    assert_eq!(top(&h, 0), bottom(&h, 0));
}

#[test]
fn slice_gradient() {
    let cases: [(&str, &[usize]); 3] = [
        (
            r#"top: "a" top: "b" slice_param { slice_point: 1 }"#,
            &[2, 3, 2],
        ),
        (
            r#"top: "a" top: "b" top: "c" slice_param { axis: 0 }"#,
            &[3, 2, 2],
        ),
        (
            r#"top: "a" top: "b" slice_param { axis: -1 slice_point: 3 }"#,
            &[2, 4],
        ),
    ];
    for (params, shape) in cases {
        let mut h = harness(&format!(r#"type: "Slice" {params}"#), &[shape]);
        GradientChecker::new(1e-2, 1e-2)
            .check_exhaustive(&mut h, None)
            .unwrap_or_else(|e| panic!("{params}: {e}"));
    }
}

#[test]
fn slice_then_concat_round_trip() {
    for (axis, shape) in [(0usize, [6usize, 3, 2]), (1, [2, 6, 3]), (2, [2, 3, 6])] {
        let text = format!(
            r#"type: "Slice" top: "a" top: "b" top: "c" slice_param {{ axis: {axis} slice_point: 1 slice_point: 4 }}"#
        );
        let mut s = harness(&text, &[&shape]);
        s.forward().unwrap();
        let shapes: Vec<Vec<usize>> = (0..3).map(|t| s.top(t).shape().to_vec()).collect();
        let refs: Vec<&[usize]> = shapes.iter().map(|v| v.as_slice()).collect();
        let mut c = harness(
            &format!(r#"type: "Concat" concat_param {{ axis: {axis} }}"#),
            &refs,
        );
        for t in 0..3 {
            c.set_bottom(t, &top(&s, t)).unwrap();
        }
        c.forward().unwrap();
        assert_eq!(c.top(0).shape(), &shape);
        assert_eq!(top(&c, 0), bottom(&s, 0), "axis {axis}");
    }
}

#[test]
fn slice_errors() {
    let two = r#"type: "Slice" top: "a" top: "b" "#;
    let e = setup_error(
        &format!("{two} slice_param {{ axis: 1 slice_dim: 1 }}"),
        &[&[2, 4]],
    );
    assert!(e.contains("not both"), "{e}");
    let e = setup_error(two, &[&[2, 3]]);
    assert!(e.contains("evenly divide"), "{e}");
    let e = setup_error(
        &format!("{two} slice_param {{ slice_point: 1 slice_point: 2 }}"),
        &[&[2, 4]],
    );
    assert!(
        e.contains("slice_param.slice_point has 2 points for 2 tops"),
        "{e}"
    );
    let three = r#"type: "Slice" top: "a" top: "b" top: "c" "#;
    let e = setup_error(
        &format!("{three} slice_param {{ slice_point: 2 slice_point: 2 }}"),
        &[&[2, 4]],
    );
    assert!(e.contains("strictly increasing"), "{e}");
    let e = setup_error(
        &format!("{two} slice_param {{ slice_point: 0 }}"),
        &[&[2, 4]],
    );
    assert!(e.contains("strictly increasing"), "{e}");
    let e = setup_error(
        &format!("{two} slice_param {{ slice_point: 5 }}"),
        &[&[2, 4]],
    );
    assert!(e.contains("beyond"), "{e}");
    let e = setup_error(&format!("{two} slice_param {{ slice_dim: 2 }}"), &[&[2, 4]]);
    assert!(e.contains("slice_param.slice_dim 2 out of range"), "{e}");
}

// ---- Eltwise -------------------------------------------------------------------------------------

fn eltwise3(params: &str, uniform: bool) -> H {
    let mut h = harness(
        &format!(r#"type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" {params}"#),
        &[&[2, 3, 4, 5], &[2, 3, 4, 5], &[2, 3, 4, 5]],
    );
    if uniform {
        for i in 0..3 {
            h.fill_bottom_uniform(i, 0.1, 1.0).unwrap();
        }
    }
    h
}

fn elementwise3(h: &H, f: impl Fn(f64, f64, f64) -> f64) -> Vec<f64> {
    let (a, b, c) = (bottom(h, 0), bottom(h, 1), bottom(h, 2));
    (0..a.len())
        .map(|i| f(a[i].into(), b[i].into(), c[i].into()))
        .collect()
}

#[test]
fn eltwise_sum_prod_max_forward() {
    let mut h = eltwise3("", false);
    h.forward().unwrap();
    assert_all_close(&top(&h, 0), &elementwise3(&h, |a, b, c| a + b + c), "SUM");
    let mut h = eltwise3(
        "eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }",
        false,
    );
    h.forward().unwrap();
    let want = elementwise3(&h, |a, b, c| a - 0.5 * b + 2.0 * c);
    assert_all_close(&top(&h, 0), &want, "SUM with coefficients");
    let mut h = eltwise3("eltwise_param { operation: PROD }", true);
    h.forward().unwrap();
    assert_all_close(&top(&h, 0), &elementwise3(&h, |a, b, c| a * b * c), "PROD");
    let mut h = eltwise3("eltwise_param { operation: MAX }", false);
    h.forward().unwrap();
    assert_all_close(
        &top(&h, 0),
        &elementwise3(&h, |a, b, c| a.max(b).max(c)),
        "MAX",
    );
}

#[test]
fn eltwise_gradients() {
    let cases = [
        ("", false, GradientChecker::new(1e-2, 1e-3)),
        (
            "eltwise_param { coeff: 1 coeff: -0.5 coeff: 2 }",
            false,
            GradientChecker::new(1e-2, 1e-3),
        ),
        (
            "eltwise_param { operation: PROD }",
            true,
            GradientChecker::new(1e-2, 1e-3),
        ),
        (
            "eltwise_param { operation: PROD stable_prod_grad: false }",
            true,
            GradientChecker::new(1e-2, 1e-3),
        ),
        (
            "eltwise_param { operation: MAX }",
            false,
            GradientChecker::new(1e-4, 1e-2),
        ),
    ];
    for (params, uniform, checker) in cases {
        let mut h = eltwise3(params, uniform);
        checker
            .check_eltwise(&mut h)
            .unwrap_or_else(|e| panic!("{params}: {e}"));
    }
    // Exhaustive on a small shape, two bottoms.
    for op in ["SUM coeff: 3 coeff: -1", "PROD", "MAX"] {
        let text = format!(r#"type: "Eltwise" eltwise_param {{ operation: {op} }}"#);
        let mut h = harness(&text, &[&[2, 3], &[2, 3]]);
        GradientChecker::new(1e-3, 1e-2)
            .check_exhaustive(&mut h, None)
            .unwrap_or_else(|e| panic!("{op}: {e}"));
    }
}

#[test]
fn eltwise_prod_gradient_is_the_product_of_the_others() {
    // With a zero input the stable gradient is exact; top / bottom would be 0 / 0.
    let text = r#"type: "Eltwise" eltwise_param { operation: PROD }"#;
    let mut h = harness(text, &[&[2], &[2], &[2]]);
    h.set_bottom(0, &[0.0, 2.0]).unwrap();
    h.set_bottom(1, &[3.0, 4.0]).unwrap();
    h.set_bottom(2, &[5.0, 0.5]).unwrap();
    h.forward().unwrap();
    assert_eq!(top(&h, 0), [0.0, 4.0]);
    h.top_mut(0).set_diff(&[1.0, 2.0]).unwrap();
    h.backward(&[true, true, true]).unwrap();
    assert_eq!(bottom_diff(&h, 0), [15.0, 4.0]);
    assert_eq!(bottom_diff(&h, 1), [0.0, 2.0]);
    assert_eq!(bottom_diff(&h, 2), [0.0, 16.0]);
    let text = r#"type: "Eltwise" eltwise_param { operation: PROD stable_prod_grad: false }"#;
    let mut h = harness(text, &[&[1], &[1]]);
    h.set_bottom(0, &[0.0]).unwrap();
    h.set_bottom(1, &[3.0]).unwrap();
    h.forward().unwrap();
    h.top_mut(0).set_diff(&[1.0]).unwrap();
    h.backward(&[true, true]).unwrap();
    assert!(
        bottom_diff(&h, 0)[0].is_nan(),
        "top / bottom at a zero bottom"
    );
}

#[test]
fn eltwise_max_ties_as_upstream() {
    let mut h = eltwise3("eltwise_param { operation: MAX }", false);
    for (i, v) in [
        [1.0, 2.0, 3.0, 3.0],
        [1.0, 1.0, 3.0, 0.0],
        [0.0, 2.0, 3.0, 3.0],
    ]
    .iter()
    .enumerate()
    {
        h.bottom_mut(i).reshape(&[4]).unwrap();
        h.set_bottom(i, v).unwrap();
    }
    h.forward().unwrap();
    assert_eq!(top(&h, 0), [1.0, 2.0, 3.0, 3.0]);
    h.top_mut(0).set_diff(&[10.0, 20.0, 30.0, 40.0]).unwrap();
    h.backward(&[true, true, true]).unwrap();
    // A tie between bottoms 0 and 1 goes to 1; later bottoms must be strictly greater.
    assert_eq!(bottom_diff(&h, 0), [0.0, 20.0, 0.0, 40.0]);
    assert_eq!(bottom_diff(&h, 1), [10.0, 0.0, 30.0, 0.0]);
    assert_eq!(bottom_diff(&h, 2), [0.0; 4]);
}

#[test]
fn eltwise_errors() {
    let two: &[&[usize]] = &[&[2, 3], &[2, 3]];
    let e = setup_error(
        r#"type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 2 }"#,
        two,
    );
    assert!(e.contains("only takes coefficients for summation"), "{e}");
    let e = setup_error(r#"type: "Eltwise" eltwise_param { coeff: 1 }"#, two);
    assert!(e.contains("one coefficient per bottom"), "{e}");
    let e = setup_error(r#"type: "Eltwise""#, &[&[2, 3], &[3, 2]]);
    assert!(e.contains("same shape"), "{e}");
    let e = setup_error(r#"type: "Eltwise""#, &[&[2, 3]]);
    assert!(e.contains("at least 2 bottom"), "{e}");
}

// ---- Flatten and Reshape -------------------------------------------------------------------------

#[test]
fn flatten_shapes() {
    let cases: [(&str, &[usize]); 7] = [
        ("", &[2, 90]),
        ("flatten_param { axis: 2 }", &[2, 3, 30]),
        ("flatten_param { end_axis: -2 }", &[2, 18, 5]),
        ("flatten_param { axis: 0 }", &[180]),
        ("flatten_param { axis: 0 end_axis: 0 }", &[2, 3, 6, 5]),
        ("flatten_param { axis: 1 end_axis: 0 }", &[2, 1, 3, 6, 5]),
        ("flatten_param { axis: -3 end_axis: 2 }", &[2, 18, 5]),
    ];
    for (params, want) in cases {
        let mut h = harness(&format!(r#"type: "Flatten" {params}"#), &[&[2, 3, 6, 5]]);
        h.forward().unwrap();
        assert_eq!(h.top(0).shape(), want, "{params}");
        assert_eq!(top(&h, 0), bottom(&h, 0));
    }
    let e = setup_error(
        r#"type: "Flatten" flatten_param { axis: 3 end_axis: 1 }"#,
        &[&[2, 3, 6, 5]],
    );
    assert!(e.contains("flatten_param.end_axis"), "{e}");
    let e = setup_error(
        r#"type: "Flatten" flatten_param { axis: 4 }"#,
        &[&[2, 3, 6, 5]],
    );
    assert!(e.contains("axis 4"), "{e}");
    let e = setup_error(r#"type: "Flatten" bottom: "x" top: "x""#, &[&[2, 3]]);
    assert!(
        e.contains("Flatten Layer does not allow in-place computation"),
        "{e}"
    );
}

#[test]
fn flatten_and_reshape_gradients() {
    let mut h = harness(r#"type: "Flatten""#, &[&[2, 3, 2]]);
    GradientChecker::new(1e-2, 1e-2)
        .check_exhaustive(&mut h, None)
        .unwrap();
    let text = r#"type: "Reshape" reshape_param { shape { dim: 3 dim: -1 } }"#;
    let mut h = harness(text, &[&[2, 3, 2]]);
    GradientChecker::new(1e-2, 1e-2)
        .check_exhaustive(&mut h, None)
        .unwrap();
}

fn reshape_top(params: &str, shape: &[usize]) -> Vec<usize> {
    let mut h = harness(&format!(r#"type: "Reshape" {params}"#), &[shape]);
    h.forward().unwrap();
    assert_eq!(top(&h, 0), bottom(&h, 0));
    h.top(0).shape().to_vec()
}

#[test]
fn reshape_shape_rules() {
    let s: &[usize] = &[2, 3, 6, 5];
    let dims = |d: &str| format!("reshape_param {{ shape {{ {d} }} }}");
    assert_eq!(
        reshape_top(&dims("dim: 0 dim: -1 dim: 1 dim: 1"), s),
        [2, 90, 1, 1]
    );
    assert_eq!(
        reshape_top(&dims("dim: 0 dim: 0 dim: 0 dim: 0"), s),
        [2, 3, 6, 5]
    );
    assert_eq!(
        reshape_top(&dims("dim: 0 dim: 3 dim: 10 dim: -1"), s),
        [2, 3, 10, 3]
    );
    assert_eq!(
        reshape_top(&dims("dim: 6 dim: 2 dim: 3 dim: 5"), s),
        [6, 2, 3, 5]
    );
    let with = |d: &str, rest: &str| format!("reshape_param {{ shape {{ {d} }} {rest} }}");
    let p = with("dim: 3 dim: 10 dim: -1", "axis: 1");
    assert_eq!(reshape_top(&p, s), [2, 3, 10, 3]);
    let ones = "dim: 1 dim: 1 dim: 1";
    assert_eq!(
        reshape_top(&with(ones, "axis: 0 num_axes: 0"), s),
        [1, 1, 1, 2, 3, 6, 5]
    );
    assert_eq!(
        reshape_top(&with(ones, "axis: 2 num_axes: 0"), s),
        [2, 3, 1, 1, 1, 6, 5]
    );
    assert_eq!(
        reshape_top(&with(ones, "axis: -1 num_axes: 0"), s),
        [2, 3, 6, 5, 1, 1, 1]
    );
    assert_eq!(
        reshape_top(&with("dim: -1", "axis: 1 num_axes: 2"), s),
        [2, 18, 5]
    );
    // A 0 copies the bottom dimension at its own position, also after `axis`.
    assert_eq!(
        reshape_top(&with("dim: 0 dim: -1", "axis: 2"), s),
        [2, 3, 6, 5]
    );
    // No shape at all: only a single element can become a scalar.
    assert_eq!(reshape_top("", &[1, 1]), [] as [usize; 0]);
}

#[test]
fn reshape_follows_a_new_bottom_shape() {
    let text = r#"type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }"#;
    let mut h = harness(text, &[&[2, 3, 4]]);
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[2, 12]);
    h.bottom_mut(0).reshape(&[5, 2, 2]).unwrap();
    h.fill_bottom_gaussian(0, 0.0, 1.0).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[5, 4]);
    assert_eq!(top(&h, 0), bottom(&h, 0));
}

#[test]
fn reshape_errors() {
    let s: &[&[usize]] = &[&[2, 3, 6, 5]];
    let err = |p: &str| setup_error(&format!(r#"type: "Reshape" reshape_param {{ {p} }}"#), s);
    let e = err("shape { dim: -1 dim: -1 }");
    assert!(e.contains("multiple -1"), "{e}");
    let e = err("shape { dim: -2 dim: 90 }");
    assert!(e.contains("dimension -2"), "{e}");
    let e = err("shape { dim: 7 dim: -1 }");
    assert!(e.contains("divisible"), "{e}");
    let e = err("shape { dim: 2 dim: 3 }");
    assert!(e.contains("output count must match input count"), "{e}");
    let e = err("shape { dim: 1 dim: 1 dim: 0 } axis: 3 num_axes: 0");
    assert!(e.contains("no bottom axis 5 to copy"), "{e}");
    let e = err("shape { dim: 1 } axis: 5");
    assert!(e.contains("reshape_param.axis 5 out of range"), "{e}");
    let e = err("shape { dim: 1 } axis: 2 num_axes: 3");
    assert!(e.contains("num_axes"), "{e}");
    let e = err("shape { dim: 1 } num_axes: -2");
    assert!(e.contains("reshape_param.num_axes"), "{e}");
    let e = setup_error(r#"type: "Reshape" bottom: "x" top: "x""#, &[&[1]]);
    assert!(
        e.contains("Reshape Layer does not allow in-place computation"),
        "{e}"
    );
}

// ---- Silence ---------------------------------------------------------------------------------

#[test]
fn silence_takes_bottoms_and_zeroes_their_gradient() {
    let b = cpu();
    let param = layer_param(r#"name: "s" type: "Silence" bottom: "a" bottom: "b""#).unwrap();
    let mut layer = create_layer::<CpuBackend>(&param).unwrap();
    assert_eq!(
        layer.counts(),
        BlobCounts::new(Count::AtLeast(1), Count::Exactly(0))
    );
    let mut store = vec![
        Blob::new(&b, &[2, 3]).unwrap(),
        Blob::new(&b, &[4]).unwrap(),
    ];
    store[0].set_diff(&[1.0; 6]).unwrap();
    store[1].set_diff(&[2.0; 4]).unwrap();
    let mut rng = rng_from_seed(1);
    let mut ctx = Context {
        backend: &b,
        phase: Phase::Train,
        rng: &mut rng,
    };
    let (bottoms, tops) = ([0usize, 1], []);
    let mut blobs = Blobs::new(&mut store, &bottoms, &tops);
    let mut no_params: Vec<Blob<CpuBackend>> = Vec::new();
    layer
        .layer_setup(&mut ctx, &mut blobs, &mut no_params)
        .unwrap();
    let mut params = Params::new(&mut no_params, &[], &[]);
    layer.reshape(&mut ctx, &mut blobs, &params).unwrap();
    layer.forward(&mut ctx, &mut blobs, &mut params).unwrap();
    layer
        .backward(&mut ctx, &mut blobs, &[false, true], &mut params)
        .unwrap();
    assert_eq!(store[0].diff_to_vec().unwrap(), [1.0; 6]);
    assert_eq!(store[1].diff_to_vec().unwrap(), [0.0; 4]);
}

// ---- ArgMax ----------------------------------------------------------------------------------

/// The `k` best `(index, value)` of `v`: descending values, equal values by descending index.
fn naive_top_k(v: &[f32], k: usize) -> Vec<(f32, f32)> {
    let mut p: Vec<(usize, f32)> = v.iter().copied().enumerate().collect();
    p.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(b.0.cmp(&a.0)));
    p[..k].iter().map(|&(i, x)| (i as f32, x)).collect()
}

#[test]
fn argmax_per_item() {
    let shape: &[usize] = &[4, 3, 5];
    for (params, k, with_val) in [
        ("", 1, false),
        ("argmax_param { out_max_val: true }", 1, true),
        ("argmax_param { top_k: 4 }", 4, false),
        ("argmax_param { top_k: 4 out_max_val: true }", 4, true),
    ] {
        let mut h = harness(&format!(r#"type: "ArgMax" {params}"#), &[shape]);
        h.forward().unwrap();
        let rows = if with_val { 2 } else { 1 };
        assert_eq!(h.top(0).shape(), &[4, rows, k], "{params}");
        let (x, y) = (bottom(&h, 0), top(&h, 0));
        for n in 0..4 {
            let best = naive_top_k(&x[n * 15..(n + 1) * 15], k);
            for (r, &(i, v)) in best.iter().enumerate() {
                assert_eq!(y[n * rows * k + r], i, "{params} item {n} rank {r}");
                if with_val {
                    assert_eq!(y[n * rows * k + k + r], v, "{params} item {n} rank {r}");
                }
            }
        }
    }
    // Fewer than three axes are padded to three; ties rank the larger index first.
    let mut h = harness(r#"type: "ArgMax" argmax_param { top_k: 2 }"#, &[&[2, 4]]);
    h.set_bottom(0, &[1.0, 3.0, 3.0, 0.0, 5.0, 5.0, 5.0, 5.0])
        .unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[2, 1, 2]);
    assert_eq!(top(&h, 0), [2.0, 1.0, 3.0, 2.0]);
}

#[test]
fn argmax_along_an_axis() {
    let shape: &[usize] = &[2, 5, 3];
    for (params, k, values) in [
        ("argmax_param { axis: 1 }", 1, false),
        ("argmax_param { axis: 1 top_k: 3 }", 3, false),
        (
            "argmax_param { axis: -2 top_k: 2 out_max_val: true }",
            2,
            true,
        ),
    ] {
        let mut h = harness(&format!(r#"type: "ArgMax" {params}"#), &[shape]);
        h.forward().unwrap();
        assert_eq!(h.top(0).shape(), &[2, k, 3], "{params}");
        let (x, y) = (bottom(&h, 0), top(&h, 0));
        for n in 0..2 {
            for j in 0..3 {
                let column: Vec<f32> = (0..5).map(|c| x[(n * 5 + c) * 3 + j]).collect();
                for (r, &(i, v)) in naive_top_k(&column, k).iter().enumerate() {
                    let want = if values { v } else { i };
                    assert_eq!(y[(n * k + r) * 3 + j], want, "{params} ({n}, {r}, {j})");
                }
            }
        }
    }
    let mut h = harness(r#"type: "ArgMax" argmax_param { axis: 0 }"#, &[&[3, 2]]);
    h.set_bottom(0, &[1.0, 9.0, 4.0, 2.0, 0.0, 3.0]).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[1, 2]);
    assert_eq!(top(&h, 0), [1.0, 0.0]);
}

#[test]
fn argmax_errors_and_no_backward() {
    let e = setup_error(r#"type: "ArgMax" argmax_param { top_k: 0 }"#, &[&[2, 3]]);
    assert!(e.contains("argmax_param.top_k"), "{e}");
    let e = setup_error(r#"type: "ArgMax" argmax_param { top_k: 7 }"#, &[&[2, 3, 2]]);
    assert!(e.contains("flattened bottom blob per instance"), "{e}");
    let e = setup_error(
        r#"type: "ArgMax" argmax_param { top_k: 4 axis: 1 }"#,
        &[&[2, 3, 2]],
    );
    assert!(e.contains("dimension of the axis"), "{e}");
    let e = setup_error(r#"type: "ArgMax" argmax_param { axis: 3 }"#, &[&[2, 3, 2]]);
    assert!(e.contains("axis 3"), "{e}");
    let mut h = harness(r#"type: "ArgMax""#, &[&[2, 3]]);
    h.forward().unwrap();
    h.backward(&[false]).unwrap();
    assert!(h.backward(&[true]).is_err());
}

#[test]
fn registry_knows_every_layer_here() {
    for kind in [
        "ReLU", "PReLU", "Sigmoid", "TanH", "ELU", "AbsVal", "Power", "Exp", "Log", "BNLL",
        "Dropout", "Concat", "Slice", "Eltwise", "Flatten", "Reshape", "Silence", "ArgMax",
    ] {
        assert!(rcaffe::layers::is_registered(kind), "{kind}");
        let param = layer_param(&format!(r#"name: "l" type: "{kind}""#)).unwrap();
        let layer = create_layer::<CpuBackend>(&param).unwrap();
        assert_eq!(layer.layer_type(), kind);
    }
}

#[test]
fn exhaustive_checks_start_from_the_inputs_for_in_place_layers() {
    // An in-place layer overwrites its bottom on the checker's first forward pass; the
    // exhaustive and element-wise checks must still difference the original inputs.
    for kind in ["Log", "Exp", "Power"] {
        let params = match kind {
            "Power" => "power_param { power: 2 shift: 1 scale: 0.5 }",
            _ => "",
        };
        let mut h = harness(&neuron_text(kind, params, true), &[&[2, 3]]);
        h.fill_bottom_uniform(0, 0.5, 1.5).unwrap();
        let checker = GradientChecker::new(1e-3, 1e-2);
        checker
            .check_exhaustive(&mut h, CheckBottoms::All)
            .unwrap_or_else(|e| panic!("{kind} exhaustive: {e}"));
        checker
            .check_eltwise(&mut h)
            .unwrap_or_else(|e| panic!("{kind} eltwise: {e}"));
    }
}
