//! Vision layers: Convolution, Deconvolution, Pooling, LRN, InnerProduct, Crop.
//!
//! Forward passes against references written here (naive loops in f64 straight from each
//! layer's definition, and small cases worked by hand), gradients against finite differences
//! (`rcaffe::testing::GradientChecker`), and the parameter errors.

use crate::common::assert_close;
use rcaffe::backend::CpuBackend;
use rcaffe::testing::{cpu, GradientChecker, HarnessError, LayerHarness};

// ---- helpers -----------------------------------------------------------------------------

fn harness(text: &str, shapes: &[&[usize]]) -> LayerHarness<CpuBackend> {
    LayerHarness::from_prototxt(&cpu(), text, shapes, 1701)
        .unwrap_or_else(|e| panic!("setting up {text}: {e}"))
}

/// The message of the error building this layer.
fn setup_error(text: &str, shapes: &[&[usize]]) -> String {
    match LayerHarness::from_prototxt(&cpu(), text, shapes, 1701) {
        Ok(_) => panic!("expected an error setting up {text}"),
        Err(e) => e.to_string(),
    }
}

fn assert_err_contains(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "error {err:?} should contain {p:?}");
    }
}

fn data(h: &LayerHarness<CpuBackend>, top: usize) -> Vec<f32> {
    h.top(top).data_to_vec().unwrap()
}

fn bottom_data(h: &LayerHarness<CpuBackend>, i: usize) -> Vec<f32> {
    h.bottom(i).data_to_vec().unwrap()
}

fn param_data(h: &LayerHarness<CpuBackend>, k: usize) -> Vec<f32> {
    h.param_blob(k).data_to_vec().unwrap()
}

// ---- convolution references --------------------------------------------------------------

/// Geometry of a 2-D (de)convolution for the references.
#[derive(Clone, Copy, Debug)]
struct Conv {
    num: usize,
    channels: usize,
    height: usize,
    width: usize,
    outputs: usize,
    group: usize,
    kernel: (usize, usize),
    pad: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
}

impl Conv {
    fn extent(&self) -> (usize, usize) {
        (
            self.dilation.0 * (self.kernel.0 - 1) + 1,
            self.dilation.1 * (self.kernel.1 - 1) + 1,
        )
    }
    fn conv_out(&self) -> (usize, usize) {
        let (eh, ew) = self.extent();
        (
            (self.height + 2 * self.pad.0 - eh) / self.stride.0 + 1,
            (self.width + 2 * self.pad.1 - ew) / self.stride.1 + 1,
        )
    }
    fn deconv_out(&self) -> (usize, usize) {
        let (eh, ew) = self.extent();
        (
            self.stride.0 * (self.height - 1) + eh - 2 * self.pad.0,
            self.stride.1 * (self.width - 1) + ew - 2 * self.pad.1,
        )
    }
}

/// Direct convolution: `top[n, o, y, x] = bias[o] + sum_{c in o's group, i, j}
/// w[o, c', i, j] x[n, c, y s - p + i d, x s - p + j d]` (zero outside the image).
fn naive_conv(g: &Conv, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f64> {
    let (oh, ow) = g.conv_out();
    let (kh, kw) = g.kernel;
    let cg = g.channels / g.group;
    let og = g.outputs / g.group;
    let mut out = vec![0.0f64; g.num * g.outputs * oh * ow];
    for n in 0..g.num {
        for o in 0..g.outputs {
            let grp = o / og;
            for y in 0..oh {
                for xx in 0..ow {
                    let mut acc = bias.map_or(0.0, |b| f64::from(b[o]));
                    for c in 0..cg {
                        let ci = grp * cg + c;
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy =
                                    (y * g.stride.0 + i * g.dilation.0) as i64 - g.pad.0 as i64;
                                let ix =
                                    (xx * g.stride.1 + j * g.dilation.1) as i64 - g.pad.1 as i64;
                                if iy < 0 || ix < 0 || iy >= g.height as i64 || ix >= g.width as i64
                                {
                                    continue;
                                }
                                let xv = x[((n * g.channels + ci) * g.height + iy as usize)
                                    * g.width
                                    + ix as usize];
                                let wv = w[((o * cg + c) * kh + i) * kw + j];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    out[((n * g.outputs + o) * oh + y) * ow + xx] = acc;
                }
            }
        }
    }
    out
}

/// Direct transposed convolution: every input pixel `x[n, c, h, w]` spreads
/// `w[c, o', i, j] x` onto `top[n, o, h s - p + i d, w s - p + j d]` (dropped outside).
fn naive_deconv(g: &Conv, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f64> {
    let (oh, ow) = g.deconv_out();
    let (kh, kw) = g.kernel;
    let cg = g.channels / g.group;
    let og = g.outputs / g.group;
    let mut out = vec![0.0f64; g.num * g.outputs * oh * ow];
    for n in 0..g.num {
        for o in 0..g.outputs {
            let base = ((n * g.outputs + o) * oh) * ow;
            if let Some(b) = bias {
                out[base..base + oh * ow]
                    .iter_mut()
                    .for_each(|v| *v = f64::from(b[o]));
            }
        }
        for c in 0..g.channels {
            let grp = c / cg;
            for h in 0..g.height {
                for wi in 0..g.width {
                    let xv = f64::from(x[((n * g.channels + c) * g.height + h) * g.width + wi]);
                    for o2 in 0..og {
                        let o = grp * og + o2;
                        for i in 0..kh {
                            for j in 0..kw {
                                let y = (h * g.stride.0 + i * g.dilation.0) as i64 - g.pad.0 as i64;
                                let xx =
                                    (wi * g.stride.1 + j * g.dilation.1) as i64 - g.pad.1 as i64;
                                if y < 0 || xx < 0 || y >= oh as i64 || xx >= ow as i64 {
                                    continue;
                                }
                                let wv = f64::from(w[((c * og + o2) * kh + i) * kw + j]);
                                out[((n * g.outputs + o) * oh + y as usize) * ow + xx as usize] +=
                                    wv * xv;
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// The prototxt of a (de)convolution with this geometry, and gaussian fillers.
fn conv_text(kind: &str, g: &Conv, bias: bool, extra: &str) -> String {
    format!(
        r#"name: "conv" type: "{kind}"
        convolution_param {{
          num_output: {} group: {} bias_term: {bias}
          kernel_h: {} kernel_w: {} pad_h: {} pad_w: {} stride_h: {} stride_w: {}
          dilation: {} dilation: {}
          weight_filler {{ type: "gaussian" std: 0.5 }}
          bias_filler {{ type: "gaussian" std: 0.5 }}
          {extra}
        }}"#,
        g.outputs,
        g.group,
        g.kernel.0,
        g.kernel.1,
        g.pad.0,
        g.pad.1,
        g.stride.0,
        g.stride.1,
        g.dilation.0,
        g.dilation.1,
    )
}

fn geometries() -> Vec<Conv> {
    let base = Conv {
        num: 2,
        channels: 4,
        height: 6,
        width: 5,
        outputs: 3,
        group: 1,
        kernel: (3, 3),
        pad: (0, 0),
        stride: (1, 1),
        dilation: (1, 1),
    };
    vec![
        base,
        Conv {
            stride: (2, 2),
            pad: (1, 1),
            ..base
        },
        Conv {
            kernel: (3, 2),
            stride: (2, 1),
            pad: (2, 0),
            ..base
        },
        Conv {
            dilation: (2, 1),
            pad: (2, 1),
            ..base
        },
        Conv {
            group: 2,
            outputs: 6,
            stride: (2, 2),
            ..base
        },
        // 1x1 fast path, with and without groups.
        Conv {
            kernel: (1, 1),
            ..base
        },
        Conv {
            kernel: (1, 1),
            group: 2,
            outputs: 4,
            ..base
        },
        // A 1x1 kernel with stride or pad is not the fast path.
        Conv {
            kernel: (1, 1),
            stride: (2, 2),
            pad: (1, 0),
            ..base
        },
    ]
}

// ---- Convolution ---------------------------------------------------------------------------

#[test]
fn convolution_forward_matches_direct_convolution() {
    for g in geometries() {
        for bias in [true, false] {
            let text = conv_text("Convolution", &g, bias, "");
            let mut h = harness(&text, &[&[g.num, g.channels, g.height, g.width]]);
            h.forward().unwrap();
            let (oh, ow) = g.conv_out();
            assert_eq!(h.top(0).shape(), &[g.num, g.outputs, oh, ow], "{g:?}");
            assert_eq!(
                h.param_blob(0).shape(),
                &[g.outputs, g.channels / g.group, g.kernel.0, g.kernel.1]
            );
            assert_eq!(h.num_params(), if bias { 2 } else { 1 });
            let b = bias.then(|| param_data(&h, 1));
            let want = naive_conv(&g, &bottom_data(&h, 0), &param_data(&h, 0), b.as_deref());
            assert_close(&format!("{g:?} bias {bias}"), &data(&h, 0), &want, 1e-5);
        }
    }
}

#[test]
fn convolution_hand_case() {
    // One 3x3 image, a 2x2 kernel of ones with bias 1, stride 1: each output is 1 + the sum
    // of a 2x2 window: [1 2 3; 4 5 6; 7 8 9] -> [13 17; 25 29].
    let text = r#"name: "c" type: "Convolution" convolution_param { num_output: 1 kernel_size: 2
        weight_filler { type: "constant" value: 1 } bias_filler { type: "constant" value: 1 } }"#;
    let mut h = harness(text, &[&[1, 1, 3, 3]]);
    h.set_bottom(0, &[1., 2., 3., 4., 5., 6., 7., 8., 9.])
        .unwrap();
    h.forward().unwrap();
    assert_eq!(data(&h, 0), vec![13., 17., 25., 29.]);
    // With pad 1 and stride 2: windows at (-1,-1), (-1,1), (1,-1), (1,1):
    // 1+1, 1+2+3, 1+4+7, 1+5+6+8+9.
    let text = r#"name: "c" type: "Convolution" convolution_param { num_output: 1 kernel_size: 2
        pad: 1 stride: 2 weight_filler { type: "constant" value: 1 }
        bias_filler { type: "constant" value: 1 } }"#;
    let mut h = harness(text, &[&[1, 1, 3, 3]]);
    h.set_bottom(0, &[1., 2., 3., 4., 5., 6., 7., 8., 9.])
        .unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[1, 1, 2, 2]);
    assert_eq!(data(&h, 0), vec![2., 6., 12., 29.]);
}

#[test]
fn convolution_gradients() {
    for g in geometries() {
        for bias in [true, false] {
            let g = Conv {
                num: 2,
                height: 5,
                width: 4,
                ..g
            };
            let text = conv_text("Convolution", &g, bias, "");
            let mut h = harness(&text, &[&[g.num, g.channels, g.height, g.width]]);
            GradientChecker::new(1e-2, 1e-3)
                .check(&mut h, None)
                .unwrap_or_else(|e| panic!("{g:?} bias {bias}: {e}"));
        }
    }
}

#[test]
fn convolution_gradient_exhaustive_small() {
    let g = Conv {
        num: 1,
        channels: 2,
        height: 4,
        width: 4,
        outputs: 2,
        group: 2,
        kernel: (2, 3),
        pad: (1, 1),
        stride: (2, 1),
        dilation: (1, 2),
    };
    let mut h = harness(&conv_text("Convolution", &g, true, ""), &[&[1, 2, 4, 4]]);
    GradientChecker::new(1e-2, 1e-3)
        .check_exhaustive(&mut h, None)
        .unwrap();
}

#[test]
fn convolution_weight_gradient_accumulates_and_respects_propagate_down() {
    let g = geometries()[1];
    let text = conv_text("Convolution", &g, true, "");
    let mut h = harness(&text, &[&[g.num, g.channels, g.height, g.width]]);
    h.forward().unwrap();
    let n = h.top(0).count();
    h.top_mut(0).set_diff(&vec![1.0; n]).unwrap();
    h.backward(&[true]).unwrap();
    let once_w = h.param_blob(0).diff_to_vec().unwrap();
    let once_b = h.param_blob(1).diff_to_vec().unwrap();
    h.backward(&[true]).unwrap();
    let twice_w = h.param_blob(0).diff_to_vec().unwrap();
    let twice_b = h.param_blob(1).diff_to_vec().unwrap();
    for (a, b) in once_w
        .iter()
        .zip(&twice_w)
        .chain(once_b.iter().zip(&twice_b))
    {
        assert!((2.0 * a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} {b}");
    }
    // Bias gradient of an all-ones top diff: the number of output positions per channel.
    let (oh, ow) = g.conv_out();
    for &b in &once_b {
        assert_eq!(b, (g.num * oh * ow) as f32);
    }
    // Frozen weights: their diff stays as it was; bottom diff still computed.
    h.set_param_propagate_down(0, false);
    h.set_param_propagate_down(1, false);
    let sentinel = vec![7.0; h.param_blob(0).count()];
    h.param_blob_mut(0).set_diff(&sentinel).unwrap();
    h.backward(&[true]).unwrap();
    assert_eq!(h.param_blob(0).diff_to_vec().unwrap(), sentinel);
    assert_eq!(h.param_blob(1).diff_to_vec().unwrap(), twice_b);
    assert!(h.bottom(0).diff_to_vec().unwrap().iter().any(|&v| v != 0.0));
}

#[test]
fn convolution_several_bottoms_share_weights() {
    let text = r#"name: "c" type: "Convolution" bottom: "a" bottom: "b" top: "ta" top: "tb"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 stride: 2
        weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } }"#;
    let mut h = harness(text, &[&[2, 2, 5, 5], &[2, 2, 5, 5]]);
    h.forward().unwrap();
    let g = Conv {
        num: 2,
        channels: 2,
        height: 5,
        width: 5,
        outputs: 3,
        group: 1,
        kernel: (3, 3),
        pad: (1, 1),
        stride: (2, 2),
        dilation: (1, 1),
    };
    let (w, b) = (param_data(&h, 0), param_data(&h, 1));
    for i in 0..2 {
        let want = naive_conv(&g, &bottom_data(&h, i), &w, Some(&b));
        assert_close(&format!("top {i}"), &data(&h, i), &want, 1e-5);
    }
    GradientChecker::new(1e-2, 1e-3)
        .check(&mut h, None)
        .unwrap();
    // Bottoms of different shapes are refused.
    let err = setup_error(text, &[&[2, 2, 5, 5], &[2, 2, 5, 4]]);
    assert_err_contains(&err, &["shape mismatch"]);
}

#[test]
fn convolution_axis_and_one_spatial_axis() {
    // axis 2 of a 5-D blob: the first two axes are all images.
    let text = r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 2
        axis: 2 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.25 } }"#;
    let mut h = harness(text, &[&[2, 3, 2, 4, 4]]);
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[2, 3, 2, 3, 3]);
    let g = Conv {
        num: 6,
        channels: 2,
        height: 4,
        width: 4,
        outputs: 2,
        group: 1,
        kernel: (2, 2),
        pad: (0, 0),
        stride: (1, 1),
        dilation: (1, 1),
    };
    let want = naive_conv(
        &g,
        &bottom_data(&h, 0),
        &param_data(&h, 0),
        Some(&param_data(&h, 1)),
    );
    assert_close("axis 2", &data(&h, 0), &want, 1e-5);
    GradientChecker::new(1e-2, 1e-3)
        .check(&mut h, None)
        .unwrap();

    // One spatial axis: (num, channels, length), a 1-D kernel; the same as height 1.
    let text = r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3
        stride: 2 pad: 1 dilation: 2 weight_filler { type: "gaussian" std: 0.5 }
        bias_filler { type: "gaussian" std: 0.5 } }"#;
    let mut h = harness(text, &[&[2, 3, 9]]);
    h.forward().unwrap();
    // (9 + 2 - 5) / 2 + 1 = 4
    assert_eq!(h.top(0).shape(), &[2, 2, 4]);
    assert_eq!(h.param_blob(0).shape(), &[2, 3, 3]);
    let g = Conv {
        num: 2,
        channels: 3,
        height: 1,
        width: 9,
        outputs: 2,
        group: 1,
        kernel: (1, 3),
        pad: (0, 1),
        stride: (1, 2),
        dilation: (1, 2),
    };
    let want = naive_conv(
        &g,
        &bottom_data(&h, 0),
        &param_data(&h, 0),
        Some(&param_data(&h, 1)),
    );
    assert_close("1-D", &data(&h, 0), &want, 1e-5);
    GradientChecker::new(1e-2, 1e-3)
        .check(&mut h, None)
        .unwrap();
}

#[test]
fn convolution_repeated_fields_and_force_nd() {
    // kernel_size/pad/stride given once per spatial axis equal the _h/_w forms; force_nd_im2col
    // computes the same values.
    let a = r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3
        kernel_size: 2 pad: 1 pad: 0 stride: 2 stride: 1 dilation: 1 dilation: 2
        weight_filler { type: "gaussian" std: 0.5 } }"#;
    let b = r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_h: 3
        kernel_w: 2 pad_h: 1 pad_w: 0 stride_h: 2 stride_w: 1 dilation: 1 dilation: 2
        force_nd_im2col: true weight_filler { type: "gaussian" std: 0.5 } }"#;
    let mut ha = harness(a, &[&[1, 2, 7, 6]]);
    let mut hb = harness(b, &[&[1, 2, 7, 6]]);
    ha.forward().unwrap();
    hb.forward().unwrap();
    assert_eq!(ha.param_blob(0).shape(), &[2, 2, 3, 2]);
    assert_eq!(ha.top(0).shape(), hb.top(0).shape());
    // Same seed, same fillers: same weights and bottoms, so the same tops.
    assert_eq!(data(&ha, 0), data(&hb, 0));
}

#[test]
fn convolution_reshapes_with_its_bottom() {
    let text = conv_text("Convolution", &geometries()[1], true, "");
    let mut h = harness(&text, &[&[2, 4, 6, 5]]);
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[2, 3, 3, 3]);
    h.bottom_mut(0).reshape(&[1, 4, 9, 11]).unwrap();
    h.fill_bottom_gaussian(0, 0.0, 1.0).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[1, 3, 5, 6]);
    let g = Conv {
        num: 1,
        height: 9,
        width: 11,
        ..geometries()[1]
    };
    let want = naive_conv(
        &g,
        &bottom_data(&h, 0),
        &param_data(&h, 0),
        Some(&param_data(&h, 1)),
    );
    assert_close("reshaped", &data(&h, 0), &want, 1e-5);
    // A different channel count is refused.
    h.bottom_mut(0).reshape(&[1, 3, 9, 11]).unwrap();
    let err = h.forward().unwrap_err().to_string();
    assert_err_contains(&err, &["input size incompatible", "3 channels"]);
}

#[test]
fn convolution_errors() {
    let shape: &[&[usize]] = &[&[2, 4, 5, 5]];
    let err = setup_error(
        r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 7 }"#,
        shape,
    );
    assert_err_contains(
        &err,
        &[
            "layer 'c'",
            "convolution_param.kernel_size",
            "kernel 7 larger than padded input 5",
        ],
    );
    // pad 1 makes it fit.
    harness(
        r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 7 pad: 1 }"#,
        shape,
    );
    // A dilated kernel's extent counts.
    let err = setup_error(
        r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3
            dilation: 3 }"#,
        shape,
    );
    assert_err_contains(
        &err,
        &["kernel 7 (dilated 3 by 3) larger than padded input 5"],
    );
    let err = setup_error(
        r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 group: 3 }"#,
        &[&[2, 3, 5, 5]],
    );
    assert_err_contains(
        &err,
        &[
            "convolution_param.group",
            "num_output 2 is not a multiple of group 3",
        ],
    );
    let err = setup_error(
        r#"name: "c" type: "Convolution" convolution_param { num_output: 6 kernel_size: 3 group: 3 }"#,
        shape,
    );
    assert_err_contains(
        &err,
        &[
            "convolution_param.group",
            "does not divide the 4 input channels",
        ],
    );
    let err = setup_error(
        r#"name: "c" type: "Convolution" convolution_param { kernel_size: 3 }"#,
        shape,
    );
    assert_err_contains(&err, &["convolution_param.num_output must be positive"]);
    let err = setup_error(
        r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3
            kernel_h: 3 kernel_w: 3 }"#,
        shape,
    );
    assert_err_contains(&err, &["convolution_param.kernel_size", "not both"]);
    let err = setup_error(
        r#"name: "c" type: "Convolution" convolution_param { num_output: 2 }"#,
        shape,
    );
    assert_err_contains(&err, &["convolution_param.kernel_size"]);
    let err = setup_error(
        r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3
            stride: 0 }"#,
        shape,
    );
    assert_err_contains(&err, &["convolution_param.stride"]);
    let err = setup_error(
        r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3
            kernel_size: 3 kernel_size: 3 }"#,
        shape,
    );
    assert_err_contains(
        &err,
        &["convolution_param.kernel_size", "3 given; 2 spatial dims"],
    );
    let err = setup_error(
        r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 }"#,
        &[&[1, 2, 4, 4, 4]],
    );
    assert_err_contains(&err, &["3 spatial axes", "not"]);
    let err = setup_error(
        r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3
            axis: 4 }"#,
        shape,
    );
    assert_err_contains(&err, &["convolution_param.axis"]);
    let err = setup_error(
        r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3
            weight_filler { type: "nonsense" } }"#,
        shape,
    );
    assert_err_contains(&err, &["convolution_param.weight_filler", "nonsense"]);
    let err = setup_error(
        r#"name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 }"#,
        &[&[2, 4, 5, 5], &[2, 4, 5, 5]],
    );
    assert_err_contains(&err, &["one top blob as output for each bottom"]);
}

// ---- Deconvolution -------------------------------------------------------------------------

#[test]
fn deconvolution_forward_matches_direct_transposed_convolution() {
    for g in geometries() {
        for bias in [true, false] {
            let g = Conv {
                height: 4,
                width: 3,
                ..g
            };
            let text = conv_text("Deconvolution", &g, bias, "");
            let mut h = harness(&text, &[&[g.num, g.channels, g.height, g.width]]);
            h.forward().unwrap();
            let (oh, ow) = g.deconv_out();
            assert_eq!(h.top(0).shape(), &[g.num, g.outputs, oh, ow], "{g:?}");
            assert_eq!(
                h.param_blob(0).shape(),
                &[g.channels, g.outputs / g.group, g.kernel.0, g.kernel.1]
            );
            let b = bias.then(|| param_data(&h, 1));
            let want = naive_deconv(&g, &bottom_data(&h, 0), &param_data(&h, 0), b.as_deref());
            assert_close(&format!("{g:?} bias {bias}"), &data(&h, 0), &want, 1e-5);
        }
    }
}

#[test]
fn deconvolution_hand_case() {
    // A 2x2 image [1 2; 3 4], kernel 2x2 of ones, stride 2: each pixel becomes a 2x2 block.
    let text = r#"name: "d" type: "Deconvolution" convolution_param { num_output: 1
        kernel_size: 2 stride: 2 bias_term: false weight_filler { type: "constant" value: 1 } }"#;
    let mut h = harness(text, &[&[1, 1, 2, 2]]);
    h.set_bottom(0, &[1., 2., 3., 4.]).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[1, 1, 4, 4]);
    #[rustfmt::skip]
    let want = vec![
        1., 1., 2., 2.,
        1., 1., 2., 2.,
        3., 3., 4., 4.,
        3., 3., 4., 4.,
    ];
    assert_eq!(data(&h, 0), want);
    // Stride 1 overlaps: a 3x3 output of window counts times the pixels.
    let text = r#"name: "d" type: "Deconvolution" convolution_param { num_output: 1
        kernel_size: 2 bias_term: false weight_filler { type: "constant" value: 1 } }"#;
    let mut h = harness(text, &[&[1, 1, 2, 2]]);
    h.set_bottom(0, &[1., 2., 3., 4.]).unwrap();
    h.forward().unwrap();
    assert_eq!(data(&h, 0), vec![1., 3., 2., 4., 10., 6., 3., 7., 4.]);
}

#[test]
fn deconvolution_is_the_adjoint_of_convolution() {
    // <conv_W(x), y> = <x, deconv_W(y)> with the same weights (Deconvolution's num_output is
    // Convolution's channels).
    let conv = r#"name: "c" type: "Convolution" convolution_param { num_output: 4 group: 2
        kernel_size: 3 stride: 2 pad: 1 dilation: 1 bias_term: false
        weight_filler { type: "gaussian" std: 1 } }"#;
    let deconv = r#"name: "d" type: "Deconvolution" convolution_param { num_output: 6 group: 2
        kernel_size: 3 stride: 2 pad: 1 bias_term: false weight_filler { type: "gaussian" std: 1 } }"#;
    let mut c = harness(conv, &[&[2, 6, 7, 7]]);
    c.forward().unwrap();
    assert_eq!(c.top(0).shape(), &[2, 4, 4, 4]);
    let mut d = harness(deconv, &[&[2, 4, 4, 4]]);
    let w = param_data(&c, 0);
    d.param_blob_mut(0).set_data(&w).unwrap();
    d.forward().unwrap();
    assert_eq!(d.top(0).shape(), &[2, 6, 7, 7]);
    let dot = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum()
    };
    let lhs = dot(&data(&c, 0), &bottom_data(&d, 0));
    let rhs = dot(&bottom_data(&c, 0), &data(&d, 0));
    assert!(
        (lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0),
        "{lhs} vs {rhs}"
    );
}

#[test]
fn deconvolution_gradients() {
    for g in geometries() {
        for bias in [true, false] {
            let g = Conv {
                height: 3,
                width: 4,
                ..g
            };
            let text = conv_text("Deconvolution", &g, bias, "");
            let mut h = harness(&text, &[&[g.num, g.channels, g.height, g.width]]);
            GradientChecker::new(1e-2, 1e-3)
                .check(&mut h, None)
                .unwrap_or_else(|e| panic!("{g:?} bias {bias}: {e}"));
        }
    }
}

#[test]
fn deconvolution_bottom_gradient_without_weight_gradient() {
    // With the weight gradient on, the bottom gradient reuses the columns the weight pass left
    // in the buffer; with it off, it computes them itself. Both must agree.
    for g in [geometries()[1], geometries()[4]] {
        let mut h = harness(
            &conv_text("Deconvolution", &g, true, ""),
            &[&[2, g.channels, 3, 3]],
        );
        h.forward().unwrap();
        let n = h.top(0).count();
        let dy: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        h.top_mut(0).set_diff(&dy).unwrap();
        h.backward(&[true]).unwrap();
        let with = h.bottom(0).diff_to_vec().unwrap();
        let weight_diff = h.param_blob(0).diff_to_vec().unwrap();
        h.set_param_propagate_down(0, false);
        h.bottom_mut(0).set_diff(&vec![0.0; with.len()]).unwrap();
        h.backward(&[true]).unwrap();
        assert_eq!(h.bottom(0).diff_to_vec().unwrap(), with, "{g:?}");
        assert_eq!(h.param_blob(0).diff_to_vec().unwrap(), weight_diff);
        assert!(with.iter().any(|&v| v != 0.0));
    }
}

#[test]
fn deconvolution_errors() {
    let err = setup_error(
        r#"name: "d" type: "Deconvolution" convolution_param { num_output: 2 kernel_size: 1
            pad: 1 }"#,
        &[&[1, 2, 1, 1]],
    );
    assert_err_contains(
        &err,
        &["layer 'd'", "convolution_param.pad", "leaves no output"],
    );
    let err = setup_error(
        r#"name: "d" type: "Deconvolution" convolution_param { num_output: 3 kernel_size: 2
            group: 2 }"#,
        &[&[1, 4, 2, 2]],
    );
    assert_err_contains(&err, &["convolution_param.group"]);
}

// ---- Pooling -------------------------------------------------------------------------------

fn pool(extra: &str) -> String {
    format!(r#"name: "pool" type: "Pooling" pooling_param {{ {extra} }}"#)
}

#[test]
fn max_pooling_hand_case_with_mask_top() {
    // Each of 2x2 planes:       2x2 windows, stride 1:   argmax (plane index):
    //   [1 2 5 2 3]               [9 5 5 8]                [5  2  2 9]
    //   [9 4 1 4 8]               [9 5 5 8]                [5 12 12 9]
    //   [1 2 5 2 3]
    let plane = [1., 2., 5., 2., 3., 9., 4., 1., 4., 8., 1., 2., 5., 2., 3.];
    let input: Vec<f32> = plane.iter().copied().cycle().take(60).collect();
    for tops in [1, 2] {
        let top_list = if tops == 2 {
            r#"top: "y" top: "mask""#
        } else {
            r#"top: "y""#
        };
        let text = format!(
            r#"name: "pool" type: "Pooling" bottom: "x" {top_list}
            pooling_param {{ pool: MAX kernel_size: 2 stride: 1 }}"#
        );
        let mut h = harness(&text, &[&[2, 2, 3, 5]]);
        h.set_bottom(0, &input).unwrap();
        h.forward().unwrap();
        assert_eq!(h.top(0).shape(), &[2, 2, 2, 4]);
        let want: Vec<f32> = [9., 5., 5., 8., 9., 5., 5., 8.]
            .iter()
            .copied()
            .cycle()
            .take(32)
            .collect();
        assert_eq!(data(&h, 0), want);
        if tops == 2 {
            assert_eq!(h.top(1).shape(), &[2, 2, 2, 4]);
            let mask: Vec<f32> = [5., 2., 2., 9., 5., 12., 12., 9.]
                .iter()
                .copied()
                .cycle()
                .take(32)
                .collect();
            assert_eq!(data(&h, 1), mask);
        }
        // Backward: each top gradient is added at its argmax.
        let dy: Vec<f32> = (0..32).map(|i| i as f32 + 1.0).collect();
        h.top_mut(0).set_diff(&dy).unwrap();
        h.backward(&[true]).unwrap();
        let dx = h.bottom(0).diff_to_vec().unwrap();
        // First plane: index 5 gets dy 1 + 5, index 2 gets 2 + 3, 9 gets 4 + 8, 12 gets 6 + 7.
        let mut want = [0.0f32; 15];
        want[5] = 6.0;
        want[2] = 5.0;
        want[9] = 12.0;
        want[12] = 13.0;
        assert_eq!(&dx[..15], &want[..]);
    }
}

#[test]
fn max_pooling_rectangular_hand_case() {
    // magic(4) rows; kernel 3 high, 2 wide, stride 1: 2x3 output.
    //   [16  2  3 13]
    //   [ 5 11 10  8]
    //   [ 9  7  6 12]
    //   [ 4 14 15  1]
    let x = [
        16., 2., 3., 13., 5., 11., 10., 8., 9., 7., 6., 12., 4., 14., 15., 1.,
    ];
    let mut h = harness(&pool("pool: MAX kernel_h: 3 kernel_w: 2"), &[&[1, 1, 4, 4]]);
    h.set_bottom(0, &x).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[1, 1, 2, 3]);
    assert_eq!(data(&h, 0), vec![16., 11., 13., 14., 15., 15.]);
}

#[test]
fn pooling_ceil_rounding_and_clipped_windows() {
    // 4x4 plane 0..15, kernel 3, stride 2, no pad. CEIL: ceil(1 / 2) + 1 = 2 windows per axis,
    // the second clipped to rows/cols 2..4. FLOOR: 1.
    let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let mut h = harness(
        &pool("pool: MAX kernel_size: 3 stride: 2"),
        &[&[1, 1, 4, 4]],
    );
    h.set_bottom(0, &x).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[1, 1, 2, 2]);
    assert_eq!(data(&h, 0), vec![10., 11., 14., 15.]);
    // AVE divides by the clipped window's size (no padding here): 45/9, 39/6, 66/6, 50/4.
    let mut h = harness(
        &pool("pool: AVE kernel_size: 3 stride: 2"),
        &[&[1, 1, 4, 4]],
    );
    h.set_bottom(0, &x).unwrap();
    h.forward().unwrap();
    assert_eq!(data(&h, 0), vec![5.0, 6.5, 11.0, 12.5]);
    let mut h = harness(
        &pool("pool: AVE kernel_size: 3 stride: 2 round_mode: FLOOR"),
        &[&[1, 1, 4, 4]],
    );
    h.set_bottom(0, &x).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[1, 1, 1, 1]);
    assert_eq!(data(&h, 0), vec![5.0]);
}

#[test]
fn pooling_padding_rules() {
    // Width 5, kernel 2, stride 2, pad 1: ceil(5 / 2) + 1 = 4, but the 4th window would start
    // at 5, in the padding, so it is dropped: 3. AVE counts the padded column in the divisor:
    // [1 2 3 4 5] -> [1/2, (2+3)/2, (4+5)/2].
    let text = pool("pool: AVE kernel_h: 1 kernel_w: 2 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 1");
    let mut h = harness(&text, &[&[1, 1, 1, 5]]);
    h.set_bottom(0, &[1., 2., 3., 4., 5.]).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[1, 1, 1, 3]);
    assert_eq!(data(&h, 0), vec![0.5, 2.5, 4.5]);
    // Width 4, kernel 3, stride 2, pad 1: windows [-1, 2), [1, 4), [3, 6). The last is clipped
    // to the padded width 5 for its divisor (2) and to the image for its sum (just 4).
    let text = pool("pool: AVE kernel_h: 1 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 1");
    let mut h = harness(&text, &[&[1, 1, 1, 4]]);
    h.set_bottom(0, &[1., 2., 3., 4.]).unwrap();
    h.forward().unwrap();
    assert_eq!(data(&h, 0), vec![1.0, 3.0, 2.0]);
    // 3x3 [1..9], kernel 3, pad 1, stride 1: every window's divisor is 9.
    let mut h = harness(&pool("pool: AVE kernel_size: 3 pad: 1"), &[&[1, 1, 3, 3]]);
    h.set_bottom(0, &[1., 2., 3., 4., 5., 6., 7., 8., 9.])
        .unwrap();
    h.forward().unwrap();
    let want: Vec<f64> = [12., 21., 16., 27., 45., 33., 24., 39., 28.]
        .iter()
        .map(|v| v / 9.0)
        .collect();
    assert_close("ave pad", &data(&h, 0), &want, 1e-6);
    // MAX with padding ignores the padding: all-negative input keeps its own maxima.
    let mut h = harness(
        &pool("pool: MAX kernel_size: 3 pad: 1 stride: 2"),
        &[&[1, 1, 3, 3]],
    );
    h.set_bottom(0, &[-1., -2., -3., -4., -5., -6., -7., -8., -9.])
        .unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[1, 1, 2, 2]);
    assert_eq!(data(&h, 0), vec![-1., -2., -4., -5.]);
}

#[test]
fn pooling_clips_both_axes_when_either_is_padded() {
    // Height 5, kernel_h 1, stride_h 3: ceil(4 / 3) + 1 = 3 windows, the third starting at 6,
    // past the image. Upstream drops it only when the layer has padding, on any axis: here
    // pad_w 1 makes the height 2.
    let text = pool("pool: MAX kernel_h: 1 kernel_w: 2 stride_h: 3 stride_w: 1 pad_h: 0 pad_w: 1");
    let mut h = harness(&text, &[&[1, 1, 5, 2]]);
    h.set_bottom(0, &[1., 2., 3., 4., 5., 6., 7., 8., 9., 10.])
        .unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[1, 1, 2, 3]);
    assert_eq!(data(&h, 0), vec![1., 2., 2., 7., 8., 8.]);
    // Without any padding the third window stays, and holds nothing: -FLT_MAX, as upstream.
    let text = pool("pool: MAX kernel_h: 1 kernel_w: 2 stride_h: 3 stride_w: 1");
    let mut h = harness(&text, &[&[1, 1, 5, 2]]);
    h.set_bottom(0, &[1., 2., 3., 4., 5., 6., 7., 8., 9., 10.])
        .unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[1, 1, 3, 1]);
    assert_eq!(data(&h, 0), vec![2., 8., -f32::MAX]);
}

#[test]
fn pooling_kernel_larger_than_input_follows_upstream_rounding() {
    // Upstream computes ceil((2 - 3) / 2) + 1 = 1: one window, clipped to the 2x2 plane.
    let mut h = harness(
        &pool("pool: MAX kernel_size: 3 stride: 2"),
        &[&[1, 1, 2, 2]],
    );
    h.set_bottom(0, &[1., 4., 3., 2.]).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[1, 1, 1, 1]);
    assert_eq!(data(&h, 0), vec![4.0]);
    // FLOOR leaves no window: an error naming the field.
    let err = setup_error(
        &pool("pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR"),
        &[&[1, 1, 2, 2]],
    );
    assert_err_contains(
        &err,
        &[
            "pooling_param.kernel_size",
            "kernel 3 larger than padded input 2",
        ],
    );
}

#[test]
fn global_pooling() {
    let x: Vec<f32> = (0..2 * 3 * 4 * 5)
        .map(|v| ((v * 37) % 23) as f32 - 11.0)
        .collect();
    for (method, reduce) in [
        (
            "MAX",
            (|p: &[f32]| p.iter().copied().fold(f32::MIN, f32::max) as f64) as fn(&[f32]) -> f64,
        ),
        ("AVE", |p: &[f32]| {
            p.iter().map(|&v| f64::from(v)).sum::<f64>() / p.len() as f64
        }),
    ] {
        let mut h = harness(
            &pool(&format!("pool: {method} global_pooling: true")),
            &[&[2, 3, 4, 5]],
        );
        h.set_bottom(0, &x).unwrap();
        h.forward().unwrap();
        assert_eq!(h.top(0).shape(), &[2, 3, 1, 1]);
        let want: Vec<f64> = x.chunks(20).map(reduce).collect();
        assert_close(method, &data(&h, 0), &want, 1e-6);
        // The kernel follows the bottom on reshape.
        h.bottom_mut(0).reshape(&[1, 3, 2, 3]).unwrap();
        h.set_bottom(0, &x[..18]).unwrap();
        h.forward().unwrap();
        assert_eq!(h.top(0).shape(), &[1, 3, 1, 1]);
        let want: Vec<f64> = x[..18].chunks(6).map(reduce).collect();
        assert_close(method, &data(&h, 0), &want, 1e-6);
    }
}

#[test]
fn pooling_gradients() {
    let cases = [
        "pool: MAX kernel_size: 3 stride: 2",
        "pool: MAX kernel_h: 3 kernel_w: 2 stride: 1",
        "pool: MAX kernel_size: 3 stride: 2 pad: 1",
        "pool: MAX kernel_size: 2 stride: 2 pad_h: 1 pad_w: 0",
        "pool: AVE kernel_size: 3 stride: 2",
        "pool: AVE kernel_size: 3 stride: 2 pad: 2",
        "pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 1",
        "pool: AVE kernel_size: 2 stride: 2 round_mode: FLOOR",
        "pool: MAX global_pooling: true",
        "pool: AVE global_pooling: true",
    ];
    for case in cases {
        let mut h = harness(&pool(case), &[&[2, 2, 6, 5]]);
        GradientChecker::new(1e-4, 1e-2)
            .check_exhaustive(&mut h, None)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
    }
    // With the mask as a second top.
    let text = r#"name: "pool" type: "Pooling" bottom: "x" top: "y" top: "mask"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }"#;
    let mut h = harness(text, &[&[2, 2, 5, 6]]);
    GradientChecker::new(1e-4, 1e-2)
        .check_exhaustive(&mut h, None)
        .unwrap();
}

#[test]
fn pooling_errors() {
    let shape: &[&[usize]] = &[&[1, 1, 5, 5]];
    let cases: &[(&str, &[&str])] = &[
        (
            "pool: STOCHASTIC kernel_size: 2",
            &["pooling_param.pool", "STOCHASTIC"],
        ),
        (
            "pool: MAX global_pooling: true kernel_size: 2",
            &["global_pooling", "kernel_size"],
        ),
        (
            "pool: MAX global_pooling: true stride: 2",
            &["global_pooling", "stride = 1"],
        ),
        ("pool: MAX", &["pooling_param.kernel_size"]),
        (
            "pool: MAX kernel_h: 2",
            &["pooling_param.kernel_size", "kernel_h and kernel_w"],
        ),
        (
            "pool: MAX kernel_size: 2 kernel_h: 2 kernel_w: 2",
            &["not both"],
        ),
        (
            "pool: MAX kernel_size: 0",
            &["pooling_param.kernel_size", "zero"],
        ),
        (
            "pool: MAX kernel_size: 2 pad: 2",
            &["pooling_param.pad", "smaller than the kernel"],
        ),
        (
            "pool: MAX kernel_size: 3 pad: 1 pad_h: 1",
            &["pooling_param.pad"],
        ),
        (
            "pool: MAX kernel_size: 3 stride_h: 1",
            &["pooling_param.stride"],
        ),
        (
            "pool: MAX kernel_size: 3 stride: 0",
            &["pooling_param.stride"],
        ),
    ];
    for (params, parts) in cases {
        let err = setup_error(&pool(params), shape);
        assert_err_contains(&err, parts);
    }
    let err = setup_error(&pool("pool: MAX kernel_size: 2"), &[&[1, 5, 5]]);
    assert_err_contains(&err, &["4 axes"]);
    // AVE has no mask top.
    let text = r#"name: "pool" type: "Pooling" bottom: "x" top: "y" top: "mask"
        pooling_param { pool: AVE kernel_size: 2 }"#;
    let err = setup_error(text, shape);
    assert_err_contains(&err, &["at most 1 top"]);
}

// ---- LRN -----------------------------------------------------------------------------------

/// Upstream's definitions, directly: ACROSS `x (k + alpha/n sum_{channels} x^2)^-beta`, WITHIN
/// `x (1 + alpha/n^2 sum_{n x n window} x^2)^-beta`.
fn naive_lrn(
    x: &[f32],
    (num, ch, hh, ww): (usize, usize, usize, usize),
    size: usize,
    alpha: f64,
    beta: f64,
    k: f64,
    within: bool,
) -> Vec<f64> {
    let at =
        |n: usize, c: usize, h: usize, w: usize| f64::from(x[((n * ch + c) * hh + h) * ww + w]);
    let pre = (size - 1) / 2;
    let mut out = Vec::with_capacity(x.len());
    for n in 0..num {
        for c in 0..ch {
            for h in 0..hh {
                for w in 0..ww {
                    let scale = if within {
                        let mut s = 0.0;
                        for hy in h.saturating_sub(pre)..(h + pre + 1).min(hh) {
                            for wx in w.saturating_sub(pre)..(w + pre + 1).min(ww) {
                                s += at(n, c, hy, wx).powi(2);
                            }
                        }
                        1.0 + alpha * s / (size * size) as f64
                    } else {
                        let mut s = 0.0;
                        for c2 in c.saturating_sub(pre)..(c + pre + 1).min(ch) {
                            s += at(n, c2, h, w).powi(2);
                        }
                        k + alpha * s / size as f64
                    };
                    out.push(at(n, c, h, w) * scale.powf(-beta));
                }
            }
        }
    }
    out
}

#[test]
fn lrn_hand_cases() {
    // Across channels, one pixel, channels [1 2 3], n 3, alpha 3 (alpha/n = 1), beta 1, k 1:
    // scales 1 + (1 + 4) = 6, 1 + (1 + 4 + 9) = 15, 1 + (4 + 9) = 14.
    let text = r#"name: "n" type: "LRN" lrn_param { local_size: 3 alpha: 3 beta: 1 k: 1 }"#;
    let mut h = harness(text, &[&[1, 3, 1, 1]]);
    h.set_bottom(0, &[1., 2., 3.]).unwrap();
    h.forward().unwrap();
    assert_close(
        "across",
        &data(&h, 0),
        &[1.0 / 6.0, 2.0 / 15.0, 3.0 / 14.0],
        1e-6,
    );
    // Within a channel, a 1x2 plane [1 2], n 3, alpha 9 (alpha/n^2 = 1), beta 1; k is not
    // used: both windows cover both pixels, scale 1 + 5.
    let text = r#"name: "n" type: "LRN" lrn_param { local_size: 3 alpha: 9 beta: 1 k: 7
        norm_region: WITHIN_CHANNEL }"#;
    let mut h = harness(text, &[&[1, 1, 1, 2]]);
    h.set_bottom(0, &[1., 2.]).unwrap();
    h.forward().unwrap();
    assert_close("within", &data(&h, 0), &[1.0 / 6.0, 2.0 / 6.0], 1e-6);
}

#[test]
fn lrn_forward_matches_definition() {
    let shape = (2, 7, 3, 4);
    let cases = [
        ("", 5, 1.0, 0.75, 1.0, false),
        (
            "local_size: 3 alpha: 0.5 beta: 0.6 k: 2",
            3,
            0.5,
            0.6,
            2.0,
            false,
        ),
        ("local_size: 15", 15, 1.0, 0.75, 1.0, false),
        (
            "local_size: 1 alpha: 2 beta: 1.5 k: 0.5",
            1,
            2.0,
            1.5,
            0.5,
            false,
        ),
        ("norm_region: WITHIN_CHANNEL", 5, 1.0, 0.75, 1.0, true),
        (
            "norm_region: WITHIN_CHANNEL local_size: 3 alpha: 2 beta: 0.5",
            3,
            2.0,
            0.5,
            1.0,
            true,
        ),
    ];
    for (params, size, alpha, beta, k, within) in cases {
        let text = format!(r#"name: "n" type: "LRN" lrn_param {{ {params} }}"#);
        let mut h = harness(&text, &[&[shape.0, shape.1, shape.2, shape.3]]);
        h.forward().unwrap();
        assert_eq!(h.top(0).shape(), &[2, 7, 3, 4]);
        let want = naive_lrn(&bottom_data(&h, 0), shape, size, alpha, beta, k, within);
        assert_close(params, &data(&h, 0), &want, 1e-5);
    }
}

#[test]
fn lrn_gradients() {
    let cases = [
        "",
        "local_size: 3 alpha: 0.5 beta: 0.6 k: 2",
        "local_size: 15",
        "norm_region: WITHIN_CHANNEL",
        "norm_region: WITHIN_CHANNEL local_size: 3 alpha: 2 beta: 1.3",
    ];
    for params in cases {
        let text = format!(r#"name: "n" type: "LRN" lrn_param {{ {params} }}"#);
        let mut h = harness(&text, &[&[2, 7, 3, 3]]);
        GradientChecker::new(1e-2, 1e-2)
            .check_exhaustive(&mut h, None)
            .unwrap_or_else(|e| panic!("{params}: {e}"));
    }
}

#[test]
fn lrn_errors() {
    for size in [4, 0] {
        let err = setup_error(
            &format!(r#"name: "n" type: "LRN" lrn_param {{ local_size: {size} }}"#),
            &[&[1, 3, 2, 2]],
        );
        assert_err_contains(
            &err,
            &["lrn_param.local_size", "odd", &format!("got {size}")],
        );
    }
    let err = setup_error(r#"name: "n" type: "LRN""#, &[&[3, 2, 2]]);
    assert_err_contains(&err, &["4 axes"]);
}

// ---- InnerProduct --------------------------------------------------------------------------

#[test]
fn inner_product_hand_case() {
    // x = [[1 2 3], [4 5 6]], W = [[1 0 -1], [2 1 0]], b = [10, 20]:
    // y = [[1 - 3 + 10, 2 + 2 + 20], [4 - 6 + 10, 8 + 5 + 20]] = [[8 24], [8 33]].
    let text = r#"name: "ip" type: "InnerProduct" inner_product_param { num_output: 2 }"#;
    let mut h = harness(text, &[&[2, 3]]);
    h.set_bottom(0, &[1., 2., 3., 4., 5., 6.]).unwrap();
    assert_eq!(h.param_blob(0).shape(), &[2, 3]);
    h.param_blob_mut(0)
        .set_data(&[1., 0., -1., 2., 1., 0.])
        .unwrap();
    h.param_blob_mut(1).set_data(&[10., 20.]).unwrap();
    h.forward().unwrap();
    assert_eq!(data(&h, 0), vec![8., 24., 8., 33.]);
    // Backward with dy = [[1 0], [0 1]]: dx = dy W = [[1 0 -1], [2 1 0]],
    // dW = dy^T x = [[1 2 3], [4 5 6]], db = [1 1].
    h.top_mut(0).set_diff(&[1., 0., 0., 1.]).unwrap();
    h.backward(&[true]).unwrap();
    assert_eq!(
        h.bottom(0).diff_to_vec().unwrap(),
        vec![1., 0., -1., 2., 1., 0.]
    );
    assert_eq!(
        h.param_blob(0).diff_to_vec().unwrap(),
        vec![1., 2., 3., 4., 5., 6.]
    );
    assert_eq!(h.param_blob(1).diff_to_vec().unwrap(), vec![1., 1.]);
    // Parameter gradients accumulate; the bottom's is overwritten.
    h.backward(&[true]).unwrap();
    assert_eq!(
        h.bottom(0).diff_to_vec().unwrap(),
        vec![1., 0., -1., 2., 1., 0.]
    );
    assert_eq!(
        h.param_blob(0).diff_to_vec().unwrap(),
        vec![2., 4., 6., 8., 10., 12.]
    );
    assert_eq!(h.param_blob(1).diff_to_vec().unwrap(), vec![2., 2.]);

    // transpose: W stored K x N = the transpose of the above gives the same output.
    let text = r#"name: "ip" type: "InnerProduct" inner_product_param { num_output: 2
        transpose: true bias_term: false }"#;
    let mut h = harness(text, &[&[2, 3]]);
    h.set_bottom(0, &[1., 2., 3., 4., 5., 6.]).unwrap();
    assert_eq!(h.param_blob(0).shape(), &[3, 2]);
    assert_eq!(h.num_params(), 1);
    h.param_blob_mut(0)
        .set_data(&[1., 2., 0., 1., -1., 0.])
        .unwrap();
    h.forward().unwrap();
    assert_eq!(data(&h, 0), vec![-2., 4., -2., 13.]);
    h.top_mut(0).set_diff(&[1., 0., 0., 1.]).unwrap();
    h.backward(&[true]).unwrap();
    assert_eq!(
        h.bottom(0).diff_to_vec().unwrap(),
        vec![1., 0., -1., 2., 1., 0.]
    );
    assert_eq!(
        h.param_blob(0).diff_to_vec().unwrap(),
        vec![1., 4., 2., 5., 3., 6.]
    );
}

#[test]
fn inner_product_axis_and_shapes() {
    let text = r#"name: "ip" type: "InnerProduct" inner_product_param { num_output: 4 axis: 2
        weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } }"#;
    let mut h = harness(text, &[&[2, 3, 4, 5]]);
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[2, 3, 4]);
    assert_eq!(h.param_blob(0).shape(), &[4, 20]);
    let (x, w, b) = (bottom_data(&h, 0), param_data(&h, 0), param_data(&h, 1));
    let want: Vec<f64> = (0..6)
        .flat_map(|m| {
            let (x, w, b) = (&x, &w, &b);
            (0..4).map(move |n| {
                f64::from(b[n])
                    + (0..20)
                        .map(|k| f64::from(x[m * 20 + k]) * f64::from(w[n * 20 + k]))
                        .sum::<f64>()
            })
        })
        .collect();
    assert_close("axis 2", &data(&h, 0), &want, 1e-5);
    // Another batch size reshapes; another inner size is refused.
    h.bottom_mut(0).reshape(&[1, 5, 4, 5]).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[1, 5, 4]);
    h.bottom_mut(0).reshape(&[1, 5, 4, 6]).unwrap();
    let err = h.forward().unwrap_err().to_string();
    assert_err_contains(&err, &["incompatible", "24 inputs", "set up for 20"]);
    // Negative axis counts from the end.
    let text = r#"name: "ip" type: "InnerProduct" inner_product_param { num_output: 3 axis: -1 }"#;
    let mut h = harness(text, &[&[2, 3, 4]]);
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), &[2, 3, 3]);
}

#[test]
fn inner_product_gradients() {
    for params in [
        "num_output: 5",
        "num_output: 5 bias_term: false",
        "num_output: 5 transpose: true",
        "num_output: 4 axis: 2 transpose: true",
    ] {
        let text = format!(
            r#"name: "ip" type: "InnerProduct" inner_product_param {{ {params}
            weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" std: 0.5 }} }}"#
        );
        let mut h = harness(&text, &[&[2, 3, 2, 2]]);
        GradientChecker::new(1e-2, 1e-3)
            .check_exhaustive(&mut h, None)
            .unwrap_or_else(|e| panic!("{params}: {e}"));
    }
}

#[test]
fn inner_product_errors() {
    let err = setup_error(r#"name: "ip" type: "InnerProduct""#, &[&[2, 3]]);
    assert_err_contains(&err, &["inner_product_param.num_output must be positive"]);
    let err = setup_error(
        r#"name: "ip" type: "InnerProduct" inner_product_param { num_output: 2 axis: 3 }"#,
        &[&[2, 3]],
    );
    assert_err_contains(&err, &["inner_product_param.axis"]);
}

// ---- Crop ----------------------------------------------------------------------------------

/// `x[index]` for a row-major shape.
fn at(x: &[f32], shape: &[usize], index: &[usize]) -> f32 {
    let mut off = 0;
    for (d, &i) in shape.iter().zip(index) {
        off = off * d + i;
    }
    x[off]
}

/// Every index of a shape, row-major.
fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let mut all = vec![vec![]];
    for &d in shape {
        all = all
            .into_iter()
            .flat_map(|p| {
                (0..d).map(move |i| {
                    let mut q = p.clone();
                    q.push(i);
                    q
                })
            })
            .collect();
    }
    all
}

#[test]
fn crop_forward_and_backward() {
    // (axis, offsets, bottom 0 shape, bottom 1 shape, expected top shape, offsets per axis)
    type Case<'a> = (
        i32,
        &'a [u32],
        &'a [usize],
        &'a [usize],
        &'a [usize],
        &'a [usize],
    );
    let cases: &[Case] = &[
        (
            2,
            &[],
            &[2, 3, 6, 5],
            &[1, 1, 4, 3],
            &[2, 3, 4, 3],
            &[0, 0, 0, 0],
        ),
        (
            2,
            &[1],
            &[2, 3, 6, 5],
            &[1, 1, 4, 3],
            &[2, 3, 4, 3],
            &[0, 0, 1, 1],
        ),
        (
            2,
            &[2, 1],
            &[2, 3, 6, 5],
            &[5, 5, 4, 3],
            &[2, 3, 4, 3],
            &[0, 0, 2, 1],
        ),
        (
            1,
            &[1, 0, 2],
            &[2, 3, 6, 5],
            &[1, 2, 6, 3],
            &[2, 2, 6, 3],
            &[0, 1, 0, 2],
        ),
        (
            0,
            &[1],
            &[3, 3, 4, 4],
            &[2, 2, 2, 2],
            &[2, 2, 2, 2],
            &[1, 1, 1, 1],
        ),
        (
            -1,
            &[2],
            &[2, 3, 4, 6],
            &[2, 3, 4, 3],
            &[2, 3, 4, 3],
            &[0, 0, 0, 2],
        ),
        (
            3,
            &[0],
            &[2, 3, 4, 6],
            &[2, 3, 4, 6],
            &[2, 3, 4, 6],
            &[0, 0, 0, 0],
        ),
        (1, &[1], &[4, 5], &[1, 3], &[4, 3], &[0, 1]),
    ];
    for &(axis, offsets, s0, s1, top_shape, offs) in cases {
        let offset_text: String = offsets.iter().map(|o| format!("offset: {o} ")).collect();
        let text =
            format!(r#"name: "crop" type: "Crop" crop_param {{ axis: {axis} {offset_text} }}"#);
        let mut h = harness(&text, &[s0, s1]);
        h.forward().unwrap();
        assert_eq!(h.top(0).shape(), top_shape, "{text}");
        let (x, y) = (bottom_data(&h, 0), data(&h, 0));
        let want: Vec<f64> = indices(top_shape)
            .iter()
            .map(|i| {
                let src: Vec<usize> = i.iter().zip(offs).map(|(a, b)| a + b).collect();
                f64::from(at(&x, s0, &src))
            })
            .collect();
        assert_close(&text, &y, &want, 0.0);
        // Backward: the top's diff placed back, zero elsewhere; nothing for bottom 1.
        let dy: Vec<f32> = (0..y.len()).map(|i| i as f32 + 1.0).collect();
        h.top_mut(0).set_diff(&dy).unwrap();
        h.bottom_mut(0).set_diff(&vec![-1.0; x.len()]).unwrap();
        h.backward(&[true, true]).unwrap();
        let dx = h.bottom(0).diff_to_vec().unwrap();
        let mut want = vec![0.0f32; x.len()];
        for (k, i) in indices(top_shape).iter().enumerate() {
            let src: Vec<usize> = i.iter().zip(offs).map(|(a, b)| a + b).collect();
            let mut off = 0;
            for (d, &j) in s0.iter().zip(&src) {
                off = off * d + j;
            }
            want[off] = dy[k];
        }
        assert_eq!(dx, want, "{text}");
    }
}

#[test]
fn crop_gradient() {
    let text = r#"name: "crop" type: "Crop" crop_param { axis: 1 offset: 1 offset: 2 offset: 0 }"#;
    let mut h = harness(text, &[&[2, 3, 5, 4], &[2, 2, 3, 3]]);
    GradientChecker::new(1e-2, 1e-3)
        .check_exhaustive(&mut h, Some(0))
        .unwrap();
}

#[test]
fn crop_errors() {
    let err = setup_error(
        r#"name: "crop" type: "Crop" crop_param { axis: 2 offset: 3 }"#,
        &[&[2, 3, 6, 5], &[1, 1, 4, 3]],
    );
    assert_err_contains(
        &err,
        &[
            "crop_param.offset",
            "dimension 2 is out of bounds with size 4 and offset 3",
        ],
    );
    let err = setup_error(
        r#"name: "crop" type: "Crop" crop_param { axis: 1 offset: 1 offset: 1 }"#,
        &[&[2, 3, 6, 5], &[1, 1, 4, 3]],
    );
    assert_err_contains(&err, &["crop_param.offset", "2 values given"]);
    let err = setup_error(
        r#"name: "crop" type: "Crop" crop_param { axis: 4 }"#,
        &[&[2, 3, 6, 5], &[1, 1, 4, 3]],
    );
    assert_err_contains(&err, &["crop_param.axis"]);
    let err = setup_error(r#"name: "crop" type: "Crop""#, &[&[2, 3, 6, 5], &[4, 3]]);
    assert_err_contains(&err, &["fewer axes"]);
    let err = setup_error(r#"name: "crop" type: "Crop""#, &[&[2, 3, 6, 5]]);
    assert_err_contains(&err, &["takes 2 bottom"]);
}

#[test]
fn registry_knows_the_vision_layers() {
    for kind in [
        "Convolution",
        "Deconvolution",
        "Pooling",
        "LRN",
        "InnerProduct",
        "Crop",
    ] {
        assert!(rcaffe::layers::is_registered(kind), "{kind}");
    }
    // A HarnessError names the layer.
    let err = LayerHarness::from_prototxt(
        &cpu(),
        r#"name: "c" type: "Convolution" convolution_param { num_output: 1 kernel_size: 9 }"#,
        &[&[1, 1, 3, 3]],
        1,
    )
    .err()
    .unwrap();
    assert!(matches!(err, HarnessError::Layer(_)));
}
