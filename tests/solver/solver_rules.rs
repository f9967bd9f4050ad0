//! The six update rules, applied directly to blobs: a two-step example worked by hand for each,
//! and random parameters against upstream's formulas evaluated in f64.

use crate::common::{assert_close, Tolerance};
use rcaffe::backend::{Backend, CpuBackend, Scalar, Views};
use rcaffe::blob::Blob;
use rcaffe::proto::caffe::SolverParameter;
use rcaffe::solver::update_rules::{
    compute_update_value, regularize, Regularization, Scratch, UpdateBuffers, UpdateRule,
};

fn solver_param(text: &str) -> SolverParameter {
    rcaffe::proto::parse_text(text, std::path::Path::new("test.prototxt")).unwrap()
}

fn rule(text: &str) -> UpdateRule {
    UpdateRule::from_param(&solver_param(text)).unwrap()
}

/// Applies `rule` for `grads.len()` iterations from `iter0` to a parameter starting at `w0`,
/// each iteration's gradient given; returns the parameter after each step.
fn run(rule: &UpdateRule, w0: &[f32], grads: &[Vec<f32>], rate: f32, iter0: i32) -> Vec<Vec<f32>> {
    let be = CpuBackend::default();
    let shape = [w0.len()];
    let mut param = Blob::new(&be, &shape).unwrap();
    param.set_data(w0).unwrap();
    let mut h1 = Blob::new(&be, &shape).unwrap();
    let mut h2 = Blob::new(&be, &shape).unwrap();
    let mut update = Blob::new(&be, &shape).unwrap();
    let mut temp = Blob::new(&be, &shape).unwrap();
    let mut step_scale = be.alloc(1).unwrap();
    let mut out = Vec::new();
    for (k, g) in grads.iter().enumerate() {
        param.set_diff(g).unwrap();
        let bufs = UpdateBuffers {
            history: &mut h1,
            history2: if rule.history_sets() == 2 {
                Some(&mut h2)
            } else {
                None
            },
            scratch: Some(Scratch {
                update: &mut update,
                temp: &mut temp,
            }),
        };
        // As the solver does: the step scale from device memory.
        let step = rule.step_scale(rate, iter0 + k as i32);
        be.upload(&[step], step_scale.whole_mut()).unwrap();
        compute_update_value(rule, &be, &mut param, bufs, Scalar::At(&step_scale, 0)).unwrap();
        param.update().unwrap();
        out.push(param.data_to_vec().unwrap());
    }
    out
}

// ---- two steps worked by hand: w0 = 1, g1 = 0.5, g2 = -0.25, rate 0.1 ------------------------

const W0: f32 = 1.0;
const G1: f32 = 0.5;
const G2: f32 = -0.25;

fn two_steps(r: &UpdateRule) -> (f32, f32) {
    let out = run(r, &[W0], &[vec![G1], vec![G2]], 0.1, 0);
    (out[0][0], out[1][0])
}

#[test]
fn sgd_two_steps_by_hand() {
    // h1 = 0.1*0.5 = 0.05, w1 = 0.95; h2 = 0.1*(-0.25) + 0.9*0.05 = 0.02, w2 = 0.93.
    let (w1, w2) = two_steps(&rule("type: 'SGD' momentum: 0.9"));
    assert!((w1 - 0.95).abs() < 1e-6, "{w1}");
    assert!((w2 - 0.93).abs() < 1e-6, "{w2}");
}

#[test]
fn nesterov_two_steps_by_hand() {
    // h1 = 0.05, step1 = 1.9*0.05 - 0.9*0 = 0.095, w1 = 0.905;
    // h2 = 0.02, step2 = 1.9*0.02 - 0.9*0.05 = -0.007, w2 = 0.912.
    let (w1, w2) = two_steps(&rule("type: 'Nesterov' momentum: 0.9"));
    assert!((w1 - 0.905).abs() < 1e-6, "{w1}");
    assert!((w2 - 0.912).abs() < 1e-6, "{w2}");
}

#[test]
fn adagrad_two_steps_by_hand() {
    // delta 0: h1 = 0.25, step1 = 0.1*0.5/0.5 = 0.1, w1 = 0.9;
    // h2 = 0.3125, step2 = 0.1*(-0.25)/sqrt(0.3125) = -0.0447214, w2 = 0.9447214.
    let (w1, w2) = two_steps(&rule("type: 'AdaGrad' delta: 0"));
    assert!((w1 - 0.9).abs() < 1e-6, "{w1}");
    assert!((w2 - 0.944_721_4).abs() < 1e-6, "{w2}");
}

#[test]
fn rmsprop_two_steps_by_hand() {
    // rms_decay 0.5, delta 0: h1 = 0.125, step1 = 0.1*0.5/sqrt(0.125) = 0.1414214, w1 = 0.8585786;
    // h2 = 0.0625 + 0.03125 = 0.09375, step2 = 0.1*(-0.25)/sqrt(0.09375) = -0.0816497,
    // w2 = 0.9402283.
    let (w1, w2) = two_steps(&rule("type: 'RMSProp' rms_decay: 0.5 delta: 0"));
    assert!((w1 - 0.858_578_6).abs() < 1e-6, "{w1}");
    assert!((w2 - 0.940_228_3).abs() < 1e-6, "{w2}");
}

#[test]
fn adadelta_two_steps_by_hand() {
    // momentum 0.5, delta 0.01:
    // E[g2]1 = 0.125; u1 = sqrt((0.01 + 0) / (0.01 + 0.125)) = 0.2721655; dx1 = 0.5 u1 = 0.1360828;
    // E[dx2]1 = 0.5*0.0185185 = 0.0092593; w1 = 1 - 0.1*0.1360828 = 0.9863917.
    // E[g2]2 = 0.0625 + 0.03125 = 0.09375; u2 = sqrt(0.0192593 / 0.10375) = 0.4308485;
    // dx2 = -0.25 u2 = -0.1077121; w2 = w1 + 0.01077121 = 0.9971629.
    let (w1, w2) = two_steps(&rule("type: 'AdaDelta' momentum: 0.5 delta: 0.01"));
    assert!((w1 - 0.986_391_7).abs() < 1e-6, "{w1}");
    assert!((w2 - 0.997_162_9).abs() < 1e-6, "{w2}");
}

#[test]
fn adam_two_steps_by_hand() {
    // beta1 0.9, beta2 0.999, eps 0 (delta: 0):
    // t=1: m = 0.05, v = 0.00025, correction = sqrt(0.001)/0.1 = 0.3162278;
    //      step = 0.1*0.3162278*0.05/0.0158114 = 0.1, w1 = 0.9.
    // t=2: m = 0.045 - 0.025 = 0.02, v = 0.00024975 + 0.0000625 = 0.00031225,
    //      correction = sqrt(1 - 0.998001)/(1 - 0.81) = 0.0447102/0.19 = 0.2353166;
    //      step = 0.1*0.2353166*0.02/0.0176706 = 0.0266337, w2 = 0.8733663.
    let (w1, w2) = two_steps(&rule(
        "type: 'Adam' momentum: 0.9 momentum2: 0.999 delta: 0",
    ));
    assert!((w1 - 0.9).abs() < 1e-6, "{w1}");
    assert!((w2 - 0.873_366_3).abs() < 2e-6, "{w2}");
}

// ---- random parameters against upstream's formulas in f64 ---------------------------------

/// A small deterministic generator for test values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

/// Upstream's update rules, element-wise in f64; returns the parameter after each step.
fn reference(rule: &UpdateRule, w0: &[f32], grads: &[Vec<f32>], rate: f64) -> Vec<Vec<f64>> {
    let n = w0.len();
    let mut w: Vec<f64> = w0.iter().map(|&v| f64::from(v)).collect();
    let mut h = vec![0.0f64; n];
    let mut h2 = vec![0.0f64; n];
    let mut out = Vec::new();
    for (k, g) in grads.iter().enumerate() {
        for i in 0..n {
            let g = f64::from(g[i]);
            let step = match *rule {
                UpdateRule::Sgd { momentum } => {
                    h[i] = rate * g + f64::from(momentum) * h[i];
                    h[i]
                }
                UpdateRule::Nesterov { momentum } => {
                    let m = f64::from(momentum);
                    let old = h[i];
                    h[i] = rate * g + m * h[i];
                    (1.0 + m) * h[i] - m * old
                }
                UpdateRule::AdaGrad { delta } => {
                    h[i] += g * g;
                    rate * g / (h[i].sqrt() + f64::from(delta))
                }
                UpdateRule::RmsProp { delta, rms_decay } => {
                    let d = f64::from(rms_decay);
                    h[i] = (1.0 - d) * g * g + d * h[i];
                    rate * g / (h[i].sqrt() + f64::from(delta))
                }
                UpdateRule::AdaDelta { delta, momentum } => {
                    let m = f64::from(momentum);
                    let d = f64::from(delta);
                    h[i] = (1.0 - m) * g * g + m * h[i];
                    let dx = g * ((d + h2[i]) / (d + h[i])).sqrt();
                    h2[i] = (1.0 - m) * dx * dx + m * h2[i];
                    rate * dx
                }
                UpdateRule::Adam {
                    beta1,
                    beta2,
                    eps_hat,
                } => {
                    let (b1, b2) = (f64::from(beta1), f64::from(beta2));
                    let t = (k + 1) as i32;
                    h[i] = (1.0 - b1) * g + b1 * h[i];
                    h2[i] = (1.0 - b2) * g * g + b2 * h2[i];
                    let correction = (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
                    rate * correction * h[i] / (h2[i].sqrt() + f64::from(eps_hat))
                }
            };
            w[i] -= step;
        }
        out.push(w.clone());
    }
    out
}

const ALL_RULES: [&str; 6] = [
    "type: 'SGD' momentum: 0.9",
    "type: 'Nesterov' momentum: 0.95",
    "type: 'AdaGrad' delta: 1e-8",
    "type: 'RMSProp' rms_decay: 0.98 delta: 1e-8",
    "type: 'AdaDelta' momentum: 0.95 delta: 1e-6",
    "type: 'Adam' momentum: 0.9 momentum2: 0.999 delta: 1e-8",
];

#[test]
fn every_rule_matches_the_f64_formula_on_random_params() {
    let n = 257;
    let w0 = values(1, n);
    let grads: Vec<Vec<f32>> = (0..5).map(|k| values(10 + k, n)).collect();
    for text in ALL_RULES {
        let r = rule(text);
        let got = run(&r, &w0, &grads, 0.01, 0);
        let want = reference(&r, &w0, &grads, f64::from(0.01f32));
        for (step, (g, w)) in got.iter().zip(&want).enumerate() {
            // Steps are small next to |w|, so compare the movement, not just w.
            let moved: Vec<f32> = g.iter().zip(&w0).map(|(a, b)| a - b).collect();
            let want_moved: Vec<f64> = w.iter().zip(&w0).map(|(a, &b)| a - f64::from(b)).collect();
            for (i, (&m, &wm)) in moved.iter().zip(&want_moved).enumerate() {
                assert!(
                    (f64::from(m) - wm).abs() <= 1e-5 * wm.abs().max(1e-3) + 2e-7,
                    "{text}: step {step}, element {i}: moved {m}, want {wm}"
                );
            }
            assert_close(text, g, w, Tolerance::relative(1e-5, 0.1));
        }
    }
}

#[test]
fn history_sets_follow_upstream() {
    let sets: Vec<usize> = ALL_RULES.iter().map(|t| rule(t).history_sets()).collect();
    assert_eq!(sets, [1, 1, 1, 1, 2, 2]);
}

// ---- configuration checks -------------------------------------------------------------------

/// The error's field and message.
fn config_error(text: &str) -> String {
    match UpdateRule::from_param(&solver_param(text)) {
        Err(error) => error.to_string(),
        Ok(rule) => panic!("{text}: expected a configuration error, got {rule:?}"),
    }
}

#[test]
fn unknown_type_lists_the_valid_ones() {
    let message = config_error("type: 'Adamax'");
    assert!(message.starts_with("type: "), "{message}");
    assert!(message.contains("Adamax"), "{message}");
    for name in ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"] {
        assert!(message.contains(name), "{message}");
    }
}

#[test]
fn upstream_constructor_checks_are_errors() {
    assert!(config_error("type: 'AdaGrad' momentum: 0.9")
        .starts_with("momentum: Momentum cannot be used with AdaGrad"));
    assert!(config_error("type: 'RMSProp' momentum: 0.9")
        .contains("Momentum cannot be used with RMSProp"));
    assert!(config_error("type: 'RMSProp' rms_decay: 1").starts_with("rms_decay: "));
    assert!(config_error("type: 'RMSProp' rms_decay: -0.1").contains("rms_decay"));
    // AdaDelta takes momentum; the default type is SGD.
    assert!(UpdateRule::from_param(&solver_param("type: 'AdaDelta' momentum: 0.95")).is_ok());
    assert_eq!(rule(""), UpdateRule::Sgd { momentum: 0.0 });
}

#[test]
fn regularization_l2_and_l1() {
    let be = CpuBackend::default();
    let mut param = Blob::new(&be, &[3]).unwrap();
    let mut temp = Blob::new(&be, &[3]).unwrap();
    param.set_data(&[2.0, -4.0, 0.0]).unwrap();
    param.set_diff(&[1.0, 1.0, 1.0]).unwrap();
    // L2 needs no scratch.
    regularize(&be, Regularization::L2, 0.5, &mut param, None).unwrap();
    assert_eq!(param.diff_to_vec().unwrap(), [2.0, -1.0, 1.0]);
    regularize(&be, Regularization::L1, 0.5, &mut param, Some(&mut temp)).unwrap();
    assert_eq!(param.diff_to_vec().unwrap(), [2.5, -1.5, 1.0]);
    // L1 without its scratch is refused.
    assert!(regularize(&be, Regularization::L1, 0.5, &mut param, None).is_err());
    // A zero decay leaves the diff alone.
    regularize(&be, Regularization::L2, 0.0, &mut param, None).unwrap();
    assert_eq!(param.diff_to_vec().unwrap(), [2.5, -1.5, 1.0]);
    assert!(Regularization::from_param(&solver_param("regularization_type: 'L3'")).is_err());
}
