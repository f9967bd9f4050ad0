//! Embeddings and recurrence: Embed, LSTMUnit, RNN and LSTM. Expected values are computed here
//! from upstream's formulas (cases re-derived from upstream's
//! src/caffe/test/test_{embed,lstm,rnn}_layer.cpp); gradients against central differences.

use rcaffe::backend::CpuBackend;
use rcaffe::testing::{cpu, CheckBottoms, GradientChecker, LayerHarness};

type H = LayerHarness<CpuBackend>;

fn harness(text: &str, shapes: &[&[usize]]) -> H {
    LayerHarness::from_prototxt(&cpu(), text, shapes, 1701).unwrap_or_else(|e| panic!("{e}"))
}

/// The error building the layer, or its first forward pass, gives, as text.
fn failure(text: &str, shapes: &[&[usize]], bottom0: Option<&[f32]>) -> String {
    match LayerHarness::from_prototxt(&cpu(), text, shapes, 1701) {
        Err(e) => e.to_string(),
        Ok(mut h) => {
            if let Some(values) = bottom0 {
                h.set_bottom(0, values).unwrap();
            }
            match h.forward() {
                Err(e) => e.to_string(),
                Ok(_) => panic!("expected an error from {text}"),
            }
        }
    }
}

fn top(h: &H, i: usize) -> Vec<f32> {
    h.top(i).data_to_vec().unwrap()
}

fn assert_all_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (f64::from(g) - w).abs() <= 1e-5 * w.abs().max(1.0);
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

// ---- Embed --------------------------------------------------------------------------------

fn embed(bias_term: bool) -> String {
    format!(
        r#"name: "embed" type: "Embed" embed_param {{ num_output: 3 input_dim: 5
           bias_term: {bias_term} weight_filler {{ type: "uniform" min: -1 max: 1 }}
           bias_filler {{ type: "uniform" min: -1 max: 1 }} }}"#
    )
}

#[test]
fn embed_shapes_its_weights_and_top() {
    let h = harness(&embed(true), &[&[4, 1]]);
    assert_eq!(h.top(0).shape(), [4, 1, 3]);
    assert_eq!(h.num_params(), 2);
    assert_eq!(h.param_blob(0).shape(), [5, 3]);
    assert_eq!(h.param_blob(1).shape(), [3]);
    let h = harness(&embed(false), &[&[2, 3]]);
    assert_eq!(h.top(0).shape(), [2, 3, 3]);
    assert_eq!(h.num_params(), 1);
}

#[test]
fn embed_forward_gathers_weight_rows_and_adds_the_bias() {
    for bias_term in [false, true] {
        let mut h = harness(&embed(bias_term), &[&[4]]);
        let indices = [4.0, 0.0, 2.0, 4.0];
        h.set_bottom(0, &indices).unwrap();
        h.forward().unwrap();
        let w = h.param_blob(0).data_to_vec().unwrap();
        let b = if bias_term {
            h.param_blob(1).data_to_vec().unwrap()
        } else {
            vec![0.0; 3]
        };
        let want: Vec<f64> = indices
            .iter()
            .flat_map(|&i| (0..3).map(move |j| (i as usize, j)))
            .map(|(i, j)| f64::from(w[i * 3 + j]) + f64::from(b[j]))
            .collect();
        assert_all_close(&top(&h, 0), &want, "Embed forward");
    }
}

#[test]
fn embed_backward_adds_each_row_gradient_into_its_weight_row() {
    let mut h = harness(&embed(true), &[&[3]]);
    h.set_bottom(0, &[1.0, 3.0, 1.0]).unwrap();
    h.forward().unwrap();
    let dy = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    h.top_mut(0).set_diff(&dy).unwrap();
    h.param_blob_mut(0).set_diff(&[0.0; 15]).unwrap();
    h.param_blob_mut(1).set_diff(&[0.0; 3]).unwrap();
    h.backward(&[false]).unwrap();
    let dw = h.param_blob(0).diff_to_vec().unwrap();
    let mut want = [0.0; 15];
    want[3..6].copy_from_slice(&[8.0, 10.0, 12.0]);
    want[9..12].copy_from_slice(&[4.0, 5.0, 6.0]);
    assert_eq!(dw, want);
    assert_eq!(h.param_blob(1).diff_to_vec().unwrap(), [12.0, 15.0, 18.0]);
    let error = h.backward(&[true]).unwrap_err().to_string();
    assert!(
        error.contains("cannot backpropagate to bottom 0"),
        "{error}"
    );
}

#[test]
fn embed_gradient_with_repeated_indices() {
    for bias_term in [false, true] {
        let mut h = harness(&embed(bias_term), &[&[4]]);
        h.set_bottom(0, &[2.0, 0.0, 2.0, 4.0]).unwrap();
        GradientChecker::new(1e-2, 1e-3)
            .check_exhaustive(&mut h, CheckBottoms::ParamsOnly)
            .unwrap();
    }
}

#[test]
fn embed_refuses_bad_indices_and_parameters() {
    for bad in [-1.0, 5.0, 1.5, f32::NAN] {
        let error = failure(&embed(true), &[&[3]], Some(&[0.0, bad, 1.0]));
        assert!(
            error.contains("layer 'embed'")
                && error.contains("bottom 0 element 1")
                && error.contains("not an integer index in 0..5"),
            "{bad}: {error}"
        );
    }
    let no_dim = r#"type: "Embed" embed_param { num_output: 3 }"#;
    assert!(failure(no_dim, &[&[3]], None).contains("embed_param.input_dim must be positive"));
    let no_out = r#"type: "Embed" embed_param { input_dim: 3 }"#;
    assert!(failure(no_out, &[&[3]], None).contains("embed_param.num_output must be positive"));
}

// ---- LSTMUnit -----------------------------------------------------------------------------

const LSTM_UNIT: &str = r#"name: "unit" type: "LSTMUnit""#;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Upstream's LSTMUnit for one stream: `(c, h)` from `c_prev`, the four gate inputs (i, f, o,
/// g, each `d` wide) and `cont`.
fn lstm_unit_step(c_prev: &[f64], x: &[f64], cont: f64) -> (Vec<f64>, Vec<f64>) {
    let d = c_prev.len();
    let (mut c, mut h) = (Vec::new(), Vec::new());
    for j in 0..d {
        let i = sigmoid(x[j]);
        let f = cont * sigmoid(x[d + j]);
        let o = sigmoid(x[2 * d + j]);
        let g = x[3 * d + j].tanh();
        c.push(f * c_prev[j] + i * g);
        h.push(o * c[j].tanh());
    }
    (c, h)
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

#[test]
fn lstm_unit_forward_follows_the_gate_formulas() {
    let (n, d) = (3, 2);
    let mut h = harness(LSTM_UNIT, &[&[1, n, d], &[1, n, 4 * d], &[1, n]]);
    let c_prev = [0.5, -1.0, 2.0, 0.25, -0.75, 1.5];
    let x: Vec<f32> = (0..n * 4 * d).map(|k| (k as f32 - 11.0) * 0.3).collect();
    let cont = [1.0, 0.0, 1.0];
    h.set_bottom(0, &c_prev).unwrap();
    h.set_bottom(1, &x).unwrap();
    h.set_bottom(2, &cont).unwrap();
    h.forward().unwrap();
    assert_eq!(h.top(0).shape(), [1, n, d]);
    assert_eq!(h.top(1).shape(), [1, n, d]);
    let (mut want_c, mut want_h) = (Vec::new(), Vec::new());
    for s in 0..n {
        let (c, hh) = lstm_unit_step(
            &widen(&c_prev[s * d..][..d]),
            &widen(&x[s * 4 * d..][..4 * d]),
            f64::from(cont[s]),
        );
        want_c.extend(c);
        want_h.extend(hh);
    }
    assert_all_close(&top(&h, 0), &want_c, "LSTMUnit c");
    assert_all_close(&top(&h, 1), &want_h, "LSTMUnit h");
}

#[test]
fn lstm_unit_gradient_with_and_without_cont() {
    for cont in [[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]] {
        let mut h = harness(LSTM_UNIT, &[&[1, 3, 2], &[1, 3, 8], &[1, 3]]);
        h.set_bottom(2, &cont).unwrap();
        for bottom in [0, 1] {
            GradientChecker::new(1e-2, 1e-3)
                .check_exhaustive(&mut h, Some(bottom))
                .unwrap();
        }
    }
}

#[test]
fn lstm_unit_refuses_bad_shapes_and_a_gradient_for_cont() {
    let error = failure(LSTM_UNIT, &[&[1, 3, 2], &[1, 3, 6], &[1, 3]], None);
    assert!(
        error.contains("bottom 1 (x) must have shape [1, 3, 8]"),
        "{error}"
    );
    let error = failure(LSTM_UNIT, &[&[1, 3, 2], &[1, 3, 8], &[3]], None);
    assert!(
        error.contains("bottom 2 (cont) must have shape [1, 3]"),
        "{error}"
    );
    let error = failure(LSTM_UNIT, &[&[2, 3, 2], &[1, 3, 8], &[1, 3]], None);
    assert!(
        error.contains("bottom 0 (c_prev) must have shape 1 x N x D"),
        "{error}"
    );
    let mut h = harness(LSTM_UNIT, &[&[1, 3, 2], &[1, 3, 8], &[1, 3]]);
    h.forward().unwrap();
    let error = h.backward(&[true, true, true]).unwrap_err().to_string();
    assert!(
        error.contains("cannot backpropagate to bottom 2"),
        "{error}"
    );
}
