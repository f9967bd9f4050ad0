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
    assert!(error.contains("cannot backpropagate to bottom 0"), "{error}");
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
