//! MVN, Im2col and SPP: forward passes against reference loops written here from upstream's
//! formulas (and a few hand-computed cases), backward against numerical gradients, bad
//! parameters refused, and a net using all three (upstream: src/caffe/test/test_mvn_layer.cpp,
//! test_im2col_layer.cpp, test_spp_layer.cpp for the cases).

use std::path::Path;

use rcaffe::backend::{rng_from_seed, CpuBackend};
use rcaffe::net::Net;
use rcaffe::proto::parse_text;
use rcaffe::testing::{cpu, CheckBottoms, GradientChecker, LayerHarness};

type H = LayerHarness<CpuBackend>;

fn harness(text: &str, shapes: &[&[usize]]) -> H {
    let mut h =
        LayerHarness::from_prototxt(&cpu(), text, shapes, 1701).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..shapes.len() {
        h.fill_bottom_gaussian(i, 0.0, 1.0).unwrap();
    }
    h
}

/// The error building (or first reshaping) the layer gives, as text.
fn build_error(text: &str, shapes: &[&[usize]]) -> String {
    match LayerHarness::from_prototxt(&cpu(), text, shapes, 1701) {
        Ok(mut h) => match h.forward() {
            Ok(_) => panic!("expected an error from {text} on {shapes:?}"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

fn top(h: &H) -> Vec<f32> {
    h.top(0).data_to_vec().unwrap()
}
fn bottom(h: &H) -> Vec<f32> {
    h.bottom(0).data_to_vec().unwrap()
}

fn assert_all_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= tol * w.abs().max(1.0),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

// ---- MVN ---------------------------------------------------------------------------------

fn mvn_text(params: &str) -> String {
    format!(r#"name: "mvn" type: "MVN" bottom: "x" top: "y" mvn_param {{ {params} }}"#)
}

/// Upstream's MVN over rows of `dim` values, in f64: `x - mean`, then over
/// `sqrt(var) + eps`.
fn mvn_reference(x: &[f32], dim: usize, normalize_variance: bool, eps: f64) -> Vec<f64> {
    x.chunks(dim)
        .flat_map(|row| {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / dim as f64;
            let centred: Vec<f64> = row.iter().map(|&v| f64::from(v) - mean).collect();
            let var = centred.iter().map(|d| d * d).sum::<f64>() / dim as f64;
            let divisor = if normalize_variance {
                var.sqrt() + eps
            } else {
                1.0
            };
            centred.into_iter().map(move |d| d / divisor)
        })
        .collect()
}

#[test]
fn mvn_normalises_a_hand_computed_row() {
    let mut h = harness(&mvn_text(""), &[&[1, 1, 1, 4]]);
    h.set_bottom(0, &[1.0, 2.0, 3.0, 4.0]).unwrap();
    h.forward().unwrap();
    // mean 2.5, variance 1.25, standard deviation 1.1180340.
    let s = 1.25f64.sqrt();
    let want = [-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s];
    assert_all_close(&top(&h), &want, 1e-6, "MVN [1 2 3 4]");
}

#[test]
fn mvn_adds_eps_to_the_standard_deviation_not_the_variance() {
    let mut h = harness(&mvn_text("eps: 1"), &[&[1, 1, 1, 4]]);
    h.set_bottom(0, &[1.0, 2.0, 3.0, 4.0]).unwrap();
    h.forward().unwrap();
    // sqrt(1.25) + 1 = 2.1180340, where sqrt(1.25 + 1) would be 1.5.
    let d = 1.25f64.sqrt() + 1.0;
    let want = [-1.5 / d, -0.5 / d, 0.5 / d, 1.5 / d];
    assert_all_close(&top(&h), &want, 1e-6, "MVN eps 1");
}

#[test]
fn mvn_forward_matches_the_reference_for_every_mode() {
    let shape = [2, 3, 4, 5];
    for (params, dim, normalize) in [
        ("", 20, true),
        ("normalize_variance: false", 20, false),
        ("across_channels: true", 60, true),
        ("across_channels: true normalize_variance: false", 60, false),
    ] {
        let mut h = harness(&mvn_text(params), &[&shape]);
        h.forward().unwrap();
        assert_eq!(h.top(0).shape(), shape);
        let want = mvn_reference(&bottom(&h), dim, normalize, 1e-9);
        assert_all_close(&top(&h), &want, 1e-5, &format!("MVN {params}"));
        // As upstream's test: each row has mean 0 (and variance 1 when normalised).
        for row in top(&h).chunks(dim) {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / dim as f64;
            assert!(mean.abs() < 1e-5, "MVN {params}: row mean {mean}");
            if normalize {
                let var = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / dim as f64;
                assert!((var - 1.0).abs() < 1e-4, "MVN {params}: row variance {var}");
            }
        }
    }
}

#[test]
fn mvn_reads_fewer_axes_as_the_legacy_four() {
    // (6, 4): six rows of four unless across channels, which is the same here (height 1).
    let mut h = harness(&mvn_text(""), &[&[6, 4]]);
    h.forward().unwrap();
    let want = mvn_reference(&bottom(&h), 1, true, 1e-9);
    assert_all_close(&top(&h), &want, 1e-5, "MVN (6, 4) per channel");
    let mut h = harness(&mvn_text("across_channels: true"), &[&[6, 4]]);
    h.forward().unwrap();
    let want = mvn_reference(&bottom(&h), 4, true, 1e-9);
    assert_all_close(&top(&h), &want, 1e-5, "MVN (6, 4) across channels");
}

#[test]
fn mvn_gradients_match_finite_differences() {
    for params in [
        "",
        "normalize_variance: false",
        "across_channels: true",
        "across_channels: true normalize_variance: false",
    ] {
        let mut h = harness(&mvn_text(params), &[&[2, 3, 2, 3]]);
        GradientChecker::new(1e-3, 1e-3)
            .check_exhaustive(&mut h, CheckBottoms::All)
            .unwrap_or_else(|e| panic!("MVN {params}: {e}"));
    }
}

#[test]
fn mvn_refuses_bad_parameters_and_shapes() {
    let e = build_error(&mvn_text("eps: -1"), &[&[1, 1, 1, 4]]);
    assert!(e.contains("mvn_param.eps"), "{e}");
    let e = build_error(&mvn_text(""), &[&[1, 1, 1, 2, 2]]);
    assert!(e.contains("more than 4 axes"), "{e}");
}

// ---- Im2col ------------------------------------------------------------------------------

fn im2col_text(params: &str) -> String {
    format!(
        r#"name: "im2col" type: "Im2col" bottom: "x" top: "y" convolution_param {{ {params} }}"#
    )
}

/// Upstream's im2col of one `(c, h, w)` image: rows `(c, i, j)`, columns `(oh, ow)`.
fn im2col_reference(
    im: &[f32],
    (c, h, w): (usize, usize, usize),
    (kh, kw): (usize, usize),
    (ph, pw): (usize, usize),
    (sh, sw): (usize, usize),
    (dh, dw): (usize, usize),
) -> Vec<f64> {
    let oh = (h + 2 * ph - (dh * (kh - 1) + 1)) / sh + 1;
    let ow = (w + 2 * pw - (dw * (kw - 1) + 1)) / sw + 1;
    let mut out = Vec::new();
    for ch in 0..c {
        for i in 0..kh {
            for j in 0..kw {
                for y in 0..oh {
                    for x in 0..ow {
                        let r = (y * sh + i * dh) as i64 - ph as i64;
                        let s = (x * sw + j * dw) as i64 - pw as i64;
                        let inside = (0..h as i64).contains(&r) && (0..w as i64).contains(&s);
                        out.push(if inside {
                            f64::from(im[(ch * h + r as usize) * w + s as usize])
                        } else {
                            0.0
                        });
                    }
                }
            }
        }
    }
    out
}

#[test]
fn im2col_top_shapes_follow_upstream() {
    for (params, shape, want) in [
        ("kernel_size: 3 stride: 2", [2, 3, 6, 5], [2, 27, 2, 2]),
        (
            "kernel_size: 3 stride: 2 dilation: 3",
            [2, 3, 10, 9],
            [2, 27, 2, 2],
        ),
        (
            "kernel_h: 5 kernel_w: 3 stride: 2",
            [2, 3, 6, 5],
            [2, 45, 1, 2],
        ),
        ("kernel_size: 3 pad: 1", [2, 3, 6, 5], [2, 27, 6, 5]),
    ] {
        let h = harness(&im2col_text(params), &[&shape]);
        assert_eq!(h.top(0).shape(), want, "Im2col {params}");
    }
}

#[test]
fn im2col_forward_matches_the_reference_per_image() {
    let cases = [
        ("kernel_size: 3 stride: 2", (3, 3), (0, 0), (2, 2), (1, 1)),
        (
            "kernel_size: 3 stride: 2 dilation: 2",
            (3, 3),
            (0, 0),
            (2, 2),
            (2, 2),
        ),
        (
            "kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 2 stride_h: 1 stride_w: 2",
            (2, 3),
            (1, 2),
            (1, 2),
            (1, 1),
        ),
    ];
    for (params, kernel, pad, stride, dilation) in cases {
        let mut h = harness(&im2col_text(params), &[&[2, 3, 6, 5]]);
        h.forward().unwrap();
        let x = bottom(&h);
        let want: Vec<f64> = x
            .chunks(90)
            .flat_map(|im| im2col_reference(im, (3, 6, 5), kernel, pad, stride, dilation))
            .collect();
        assert_all_close(&top(&h), &want, 0.0, &format!("Im2col {params}"));
    }
}

#[test]
fn im2col_one_spatial_axis_runs_as_a_row() {
    let mut h = harness(&im2col_text("kernel_size: 2 stride: 1"), &[&[2, 3, 5]]);
    assert_eq!(h.top(0).shape(), [2, 6, 4]);
    h.forward().unwrap();
    let x = bottom(&h);
    let want: Vec<f64> = x
        .chunks(15)
        .flat_map(|im| im2col_reference(im, (3, 1, 5), (1, 2), (0, 0), (1, 1), (1, 1)))
        .collect();
    assert_all_close(&top(&h), &want, 0.0, "Im2col 1-D");
}

#[test]
fn im2col_gradients_match_finite_differences() {
    for params in [
        "kernel_size: 3 stride: 2",
        "kernel_size: 3 stride: 2 dilation: 2 pad: 1",
        "kernel_h: 3 kernel_w: 2 stride: 2 pad: 1",
    ] {
        let mut h = harness(&im2col_text(params), &[&[2, 2, 5, 4]]);
        GradientChecker::new(1e-2, 1e-2)
            .check_exhaustive(&mut h, CheckBottoms::All)
            .unwrap_or_else(|e| panic!("Im2col {params}: {e}"));
    }
}

#[test]
fn im2col_refuses_bad_parameters_and_shapes() {
    let e = build_error(&im2col_text("kernel_size: 2"), &[&[1, 2, 3, 3, 3]]);
    assert!(e.contains("3 spatial axes") && e.contains("N-D"), "{e}");
    let e = build_error(&im2col_text(""), &[&[1, 2, 3, 3]]);
    assert!(e.contains("convolution_param.kernel_size"), "{e}");
    let e = build_error(&im2col_text("kernel_size: 2 stride: 0"), &[&[1, 2, 3, 3]]);
    assert!(e.contains("convolution_param.stride"), "{e}");
    let e = build_error(&im2col_text("kernel_size: 5"), &[&[1, 2, 3, 3]]);
    assert!(e.contains("larger than padded input"), "{e}");
}

// ---- SPP ---------------------------------------------------------------------------------

fn spp_text(params: &str) -> String {
    format!(r#"name: "spp" type: "SPP" bottom: "x" top: "y" spp_param {{ {params} }}"#)
}

/// Upstream's pooling window for `2^level` bins over `size`, and the pooled size Pooling
/// gives it (CEIL, then the last window dropped if it starts in the padding).
fn spp_window(level: u32, size: usize) -> (usize, usize, usize) {
    let bins = 2f64.powi(level as i32);
    let kernel = (size as f64 / bins).ceil() as usize;
    let remainder = kernel * (1 << level) - size;
    let pad = remainder.div_ceil(2);
    let mut pooled = ((size + 2 * pad - kernel) as f64 / kernel as f64).ceil() as usize + 1;
    if (pooled - 1) * kernel >= size + pad {
        pooled -= 1;
    }
    (kernel, pad, pooled)
}

/// One plane pooled at `level`: MAX, or AVE dividing by the window clipped to the padded
/// image.
fn pool_plane(plane: &[f32], (h, w): (usize, usize), level: u32, max: bool) -> Vec<f64> {
    let (kh, ph, oh) = spp_window(level, h);
    let (kw, pw, ow) = spp_window(level, w);
    let mut out = Vec::new();
    for y in 0..oh {
        for x in 0..ow {
            let (h0, w0) = ((y * kh) as i64 - ph as i64, (x * kw) as i64 - pw as i64);
            let (h1, w1) = (
                (h0 + kh as i64).min((h + ph) as i64),
                (w0 + kw as i64).min((w + pw) as i64),
            );
            let size = ((h1 - h0) * (w1 - w0)) as f64;
            let values = (h0.max(0)..h1.min(h as i64))
                .flat_map(|r| (w0.max(0)..w1.min(w as i64)).map(move |s| (r, s)))
                .map(|(r, s)| f64::from(plane[r as usize * w + s as usize]));
            out.push(if max {
                values.fold(f64::NEG_INFINITY, f64::max)
            } else {
                values.sum::<f64>() / size
            });
        }
    }
    out
}

/// Upstream's SPP top: per image, each level's `(c, ph, pw)` block in level order.
fn spp_reference(x: &[f32], [n, c, h, w]: [usize; 4], levels: u32, max: bool) -> Vec<f64> {
    let mut out = Vec::new();
    for image in x.chunks(c * h * w).take(n) {
        for level in 0..levels {
            for plane in image.chunks(h * w) {
                out.extend(pool_plane(plane, (h, w), level, max));
            }
        }
    }
    out
}

#[test]
fn spp_windows_cover_the_image_as_upstream_computes_them() {
    // 9 rows in 4 bins: kernel 3, remainder 3, pad 2, and 4 windows once the fifth (starting
    // in the padding) is dropped.
    assert_eq!(spp_window(2, 9), (3, 2, 4));
    assert_eq!(spp_window(2, 8), (2, 0, 4));
    assert_eq!(rcaffe::layers::spp::level_window(2, 9), (3, 3, 2));
    assert_eq!(rcaffe::layers::spp::level_window(2, 8), (2, 2, 0));
    assert_eq!(rcaffe::layers::spp::level_window(1, 7), (4, 4, 1));
}

#[test]
fn spp_top_shape_concatenates_the_flattened_levels() {
    let h = harness(&spp_text("pyramid_height: 3"), &[&[2, 3, 9, 8]]);
    assert_eq!(h.top(0).shape(), [2, 3 * (1 + 4 + 16)]);
    // One level: the pooling's own 4-axis top, unflattened.
    let h = harness(&spp_text("pyramid_height: 1"), &[&[2, 3, 9, 8]]);
    assert_eq!(h.top(0).shape(), [2, 3, 1, 1]);
}

#[test]
fn spp_pools_a_hand_computed_image() {
    for (pool, first) in [("MAX", 4.0), ("AVE", 2.5)] {
        let mut h = harness(
            &spp_text(&format!("pyramid_height: 2 pool: {pool}")),
            &[&[1, 1, 2, 2]],
        );
        h.set_bottom(0, &[1.0, 2.0, 3.0, 4.0]).unwrap();
        h.forward().unwrap();
        assert_all_close(&top(&h), &[first, 1.0, 2.0, 3.0, 4.0], 1e-6, pool);
    }
}

#[test]
fn spp_forward_matches_the_reference() {
    for (pool, max) in [("MAX", true), ("AVE", false)] {
        for (shape, levels) in [([2, 3, 9, 8], 3), ([1, 2, 7, 5], 2), ([2, 2, 5, 6], 1)] {
            let text = spp_text(&format!("pyramid_height: {levels} pool: {pool}"));
            let mut h = harness(&text, &[&shape]);
            h.forward().unwrap();
            let want = spp_reference(&bottom(&h), shape, levels, max);
            assert_all_close(
                &top(&h),
                &want,
                1e-6,
                &format!("SPP {pool} {shape:?} {levels}"),
            );
        }
    }
}

#[test]
fn spp_gradients_match_finite_differences() {
    for pool in ["MAX", "AVE"] {
        for levels in [1, 3] {
            let text = spp_text(&format!("pyramid_height: {levels} pool: {pool}"));
            let mut h = harness(&text, &[&[1, 2, 9, 8]]);
            GradientChecker::new(1e-4, 1e-2)
                .check_exhaustive(&mut h, CheckBottoms::All)
                .unwrap_or_else(|e| panic!("SPP {pool} {levels}: {e}"));
        }
    }
}

#[test]
fn spp_refuses_bad_parameters_and_shapes() {
    let e = build_error(&spp_text(""), &[&[1, 1, 4, 4]]);
    assert!(e.contains("spp_param.pyramid_height"), "{e}");
    let e = build_error(
        &spp_text("pyramid_height: 2 pool: STOCHASTIC"),
        &[&[1, 1, 4, 4]],
    );
    assert!(e.contains("spp_param.pool"), "{e}");
    // One pixel in 2 bins: kernel 1, pad 1, which Pooling refuses.
    let e = build_error(&spp_text("pyramid_height: 3"), &[&[1, 1, 1, 1]]);
    assert!(
        e.contains("spp_param.pyramid_height") && e.contains("level 1"),
        "{e}"
    );
    let e = build_error(&spp_text("pyramid_height: 2"), &[&[1, 4, 4]]);
    assert!(e.contains("4 axes"), "{e}");
}

// ---- a net -------------------------------------------------------------------------------

#[test]
fn a_net_of_mvn_im2col_and_spp_runs_forward_and_backward() {
    let text = r#"
        name: "norm_vision" force_backward: true
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 5 } } }
        layer { name: "mvn" type: "MVN" bottom: "x" top: "n" }
        layer { name: "cols" type: "Im2col" bottom: "n" top: "c" convolution_param { kernel_size: 2 } }
        layer { name: "spp" type: "SPP" bottom: "c" top: "s" spp_param { pyramid_height: 2 } loss_weight: 1 }
    "#;
    let param = parse_text(text, Path::new("<norm_vision net>")).unwrap();
    let mut net = Net::new(&param, &cpu(), rng_from_seed(1701)).unwrap();
    let x: Vec<f32> = (0..180).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
    net.blob_by_name_mut("x").unwrap().set_data(&x).unwrap();
    let loss = net.forward().unwrap();
    assert_eq!(net.blob_by_name("c").unwrap().shape(), [2, 12, 5, 4]);
    assert_eq!(net.blob_by_name("s").unwrap().shape(), [2, 12 * 5]);
    let s = net.blob_by_name("s").unwrap().data_to_vec().unwrap();
    let sum: f32 = s.iter().sum();
    assert!(
        (loss - sum).abs() <= 1e-4 * sum.abs().max(1.0),
        "loss {loss} vs sum {sum}"
    );
    net.backward().unwrap();
    let dx = net.blob_by_name("x").unwrap().diff_to_vec().unwrap();
    assert!(dx.iter().all(|v| v.is_finite()));
    assert!(
        dx.iter().any(|&v| v != 0.0),
        "no gradient reached the input"
    );
}
