//! The activation neuron layers Clip, Swish and Threshold: forward against upstream's formulas
//! on hand-computed cases and random inputs, backward against numerical gradients, their bad
//! parameters, and a net that runs them (upstream's cases: src/caffe/test/test_neuron_layer.cpp
//! and test_clip_layer.cpp).

use std::path::Path;

use rcaffe::backend::rng_from_seed;
use rcaffe::net::Net;
use rcaffe::proto::caffe::NetParameter;
use rcaffe::proto::parse_text;
use rcaffe::testing::{cpu, GradientChecker};

use crate::layers_neuron::{
    assert_all_close, bottom_diff, harness, neuron_case, neuron_text, setup_error, top, Fill,
};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Runs `kind` forward then backward on `x` with top gradient `dy`, in place or not, and
/// returns the top and the bottom gradient.
fn forward_backward(
    kind: &str,
    params: &str,
    in_place: bool,
    x: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let mut h = harness(&neuron_text(kind, params, in_place), &[&[x.len()]]);
    h.set_bottom(0, x).unwrap();
    h.forward().unwrap();
    let y = top(&h, 0);
    h.top_mut(0).set_diff(dy).unwrap();
    h.backward(&[true]).unwrap();
    (y, bottom_diff(&h, 0))
}

// ---- Clip --------------------------------------------------------------------------------------

#[test]
fn clip_hand_case_at_and_beyond_the_bounds() {
    // The gradient passes where min <= x <= max, bounds included; a NaN input clips to min
    // (upstream's std::max(min, std::min(x, max))) and passes no gradient.
    let x = [-3.0, -1.0, -0.25, 0.5, 2.0, 5.0, f32::NAN];
    let dy = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
    let params = "clip_param { min: -1 max: 2 }";
    for in_place in [false, true] {
        let (y, dx) = forward_backward("Clip", params, in_place, &x, &dy);
        assert_eq!(
            y,
            [-1.0, -1.0, -0.25, 0.5, 2.0, 2.0, -1.0],
            "in place {in_place}"
        );
        assert_eq!(
            dx,
            [0.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0],
            "in place {in_place}"
        );
    }
}

#[test]
fn clip_forward_and_gradient() {
    // Symmetric bounds put both kinks at |x| = 1, which the checker's guard skips.
    let checker = GradientChecker::new(1e-2, 1e-3).with_kink(1.0, 0.01);
    let f = |x: f64| x.clamp(-1.0, 1.0);
    neuron_case(
        "Clip",
        "clip_param { min: -1 max: 1 }",
        Fill::Gaussian,
        f,
        checker,
    );
}

#[test]
fn clip_with_equal_bounds_is_a_constant() {
    let (y, dx) = forward_backward(
        "Clip",
        "clip_param { min: 0.5 max: 0.5 }",
        false,
        &[-1.0, 0.5, 3.0],
        &[1.0, 1.0, 1.0],
    );
    assert_eq!(y, [0.5, 0.5, 0.5]);
    assert_eq!(dx, [0.0, 1.0, 0.0]);
}

#[test]
fn clip_refuses_bad_bounds() {
    let shapes: &[&[usize]] = &[&[2, 3]];
    let e = setup_error(r#"type: "Clip" clip_param { min: 1 max: -1 }"#, shapes);
    assert!(
        e.contains("clip_param.min (1) must not exceed clip_param.max (-1)"),
        "{e}"
    );
    let e = setup_error(r#"type: "Clip" clip_param { min: nan max: 1 }"#, shapes);
    assert!(e.contains("clip_param.min"), "{e}");
    let e = setup_error(r#"type: "Clip""#, shapes);
    assert!(e.contains("clip_param"), "{e}");
}

// ---- Swish -------------------------------------------------------------------------------------

#[test]
fn swish_hand_case() {
    // beta 1: y = x sigmoid(x); dx = dy (y + sigmoid(x) (1 - y)).
    let x = [-2.0, 0.0, 1.0, 3.0];
    let dy = [1.0, 1.0, 2.0, -1.0];
    for in_place in [false, true] {
        let (y, dx) = forward_backward("Swish", "", in_place, &x, &dy);
        let what = format!("Swish in place {in_place}");
        let want_y = [-0.238_405_844, 0.0, 0.731_058_579, 2.857_722_380];
        assert_all_close(&y, &want_y, &format!("{what} forward"));
        let want_dx = [-0.090_784_249, 0.5, 1.855_341_024, -1.088_104_106];
        assert_all_close(&dx, &want_dx, &format!("{what} backward"));
    }
}

#[test]
fn swish_forward_and_gradient() {
    for beta in [1.0, 1.5, -0.75] {
        let params = if beta == 1.0 {
            String::new() // the default
        } else {
            format!("swish_param {{ beta: {beta} }}")
        };
        let f = |x: f64| x * sigmoid(beta * x);
        neuron_case(
            "Swish",
            &params,
            Fill::Gaussian,
            f,
            GradientChecker::new(1e-2, 1e-3),
        );
    }
}

#[test]
fn swish_with_beta_zero_is_half_the_identity() {
    neuron_case(
        "Swish",
        "swish_param { beta: 0 }",
        Fill::Uniform(-5.0, 5.0),
        |x| x / 2.0,
        GradientChecker::new(1e-2, 1e-3),
    );
}

// ---- Threshold ---------------------------------------------------------------------------------

#[test]
fn threshold_is_a_step_above_the_threshold() {
    let x = [-1.0, 0.0, 0.5, 0.500_1, 2.0, f32::NAN];
    for in_place in [false, true] {
        let text = neuron_text("Threshold", "threshold_param { threshold: 0.5 }", in_place);
        let mut h = harness(&text, &[&[2, 3]]);
        assert_eq!(h.is_in_place(0), in_place);
        h.set_bottom(0, &x).unwrap();
        h.forward().unwrap();
        assert_eq!(top(&h, 0), [0.0, 0.0, 0.0, 1.0, 1.0, 0.0], "{in_place}");
    }
    // Default threshold 0: strictly above.
    let mut h = harness(&neuron_text("Threshold", "", false), &[&[3]]);
    h.set_bottom(0, &[-0.5, 0.0, 1e-6]).unwrap();
    h.forward().unwrap();
    assert_eq!(top(&h, 0), [0.0, 0.0, 1.0]);
}

#[test]
fn threshold_has_no_backward() {
    let mut h = harness(&neuron_text("Threshold", "", false), &[&[2, 3]]);
    h.forward().unwrap();
    h.backward(&[false]).unwrap();
    let e = h.backward(&[true]).unwrap_err().to_string();
    assert!(e.contains("Threshold has no backward pass"), "{e}");
}

#[test]
fn registry_knows_clip_swish_and_threshold() {
    for kind in ["Clip", "Swish", "Threshold"] {
        assert!(rcaffe::layers::is_registered(kind), "{kind}");
    }
}

// ---- In a net ----------------------------------------------------------------------------------

const NET: &str = r#"
name: "activations"
layer { name: "data" type: "DummyData" top: "x" top: "t"
  dummy_data_param { data_filler { type: "gaussian" std: 2 } shape { dim: 4 dim: 5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "h"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "clip" type: "Clip" bottom: "h" top: "h" clip_param { min: -1 max: 1.5 } }
layer { name: "swish" type: "Swish" bottom: "h" top: "s" swish_param { beta: 2 } }
layer { name: "on" type: "Threshold" bottom: "s" top: "on" threshold_param { threshold: 0.5 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "s" bottom: "t" top: "loss" }
"#;

#[test]
fn a_net_with_clip_swish_and_threshold_runs_both_ways() {
    let param: NetParameter = parse_text(NET, Path::new("<activations>")).unwrap();
    let mut net = Net::new(&param, &cpu(), rng_from_seed(1701)).unwrap();
    let loss = net.forward().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    let blob = |name: &str| net.blob_by_name(name).unwrap().data_to_vec().unwrap();
    let (h, s, on) = (blob("h"), blob("s"), blob("on"));
    assert!(
        h.iter().any(|&v| v == -1.0 || v == 1.5),
        "nothing clipped: {h:?}"
    );
    assert!(h.iter().all(|&v| (-1.0..=1.5).contains(&v)), "{h:?}");
    let want_s: Vec<f64> = h
        .iter()
        .map(|&v| f64::from(v) * sigmoid(2.0 * f64::from(v)))
        .collect();
    assert_all_close(&s, &want_s, "swish in the net");
    let want_on: Vec<f32> = s.iter().map(|&v| f32::from(v > 0.5)).collect();
    assert_eq!(on, want_on);
    // Threshold feeds no loss, so the net never asks it for a gradient.
    net.backward().unwrap();
    let weight_grad = net.learnable_params()[0].asum_diff().unwrap();
    assert!(
        weight_grad.is_finite() && weight_grad > 0.0,
        "{weight_grad}"
    );
}
