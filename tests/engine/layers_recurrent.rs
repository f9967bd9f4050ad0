//! Embeddings and recurrence: Embed, LSTMUnit, RNN and LSTM. Expected values are computed here
//! from upstream's formulas (cases re-derived from upstream's
//! src/caffe/test/test_{embed,lstm,rnn}_layer.cpp); gradients against central differences.

use std::path::Path;

use rcaffe::backend::{rng_from_seed, CpuBackend};
use rcaffe::net::Net;
use rcaffe::proto::parse_text;
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

// ---- RNN and LSTM -------------------------------------------------------------------------

/// A recurrent layer of `kind` with `num_output` outputs and uniform weights and biases (so
/// that every parameter matters).
fn recurrent(kind: &str, num_output: usize, expose_hidden: bool) -> String {
    format!(
        r#"name: "rec" type: "{kind}" recurrent_param {{ num_output: {num_output}
           expose_hidden: {expose_hidden}
           weight_filler {{ type: "uniform" min: -0.5 max: 0.5 }}
           bias_filler {{ type: "uniform" min: -0.5 max: 0.5 }} }}"#
    )
}

fn params(h: &H) -> Vec<Vec<f64>> {
    (0..h.num_params())
        .map(|k| widen(&h.param_blob(k).data_to_vec().unwrap()))
        .collect()
}

/// `W v` for a row-major `W` of `v.len()` columns.
fn matvec(w: &[f64], v: &[f64]) -> Vec<f64> {
    w.chunks(v.len())
        .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// The inputs of a recurrent layer, per stream.
struct Sequence {
    steps: usize,
    streams: usize,
    x: Vec<f64>,
    cont: Vec<f64>,
    x_static: Option<Vec<f64>>,
}

impl Sequence {
    fn x_at(&self, t: usize, n: usize) -> &[f64] {
        let width = self.x.len() / (self.steps * self.streams);
        &self.x[(t * self.streams + n) * width..][..width]
    }
    fn static_at(&self, n: usize) -> Option<&[f64]> {
        self.x_static.as_ref().map(|s| {
            let width = s.len() / self.streams;
            &s[n * width..][..width]
        })
    }
}

/// Upstream's RNN from the initial state `h0` (per stream): the outputs `o`, then `h_T`.
fn rnn_reference(p: &[Vec<f64>], seq: &Sequence, h0: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let has_static = seq.x_static.is_some();
    let (w_xh, b_h) = (&p[0], &p[1]);
    let rest = if has_static { &p[3..] } else { &p[2..] };
    let (w_hh, w_ho, b_o) = (&rest[0], &rest[1], &rest[2]);
    let mut h = h0.to_vec();
    let mut out = vec![Vec::new(); seq.steps * seq.streams];
    for t in 0..seq.steps {
        for n in 0..seq.streams {
            let conted: Vec<f64> = h[n]
                .iter()
                .map(|v| v * seq.cont[t * seq.streams + n])
                .collect();
            let mut pre = add(
                &add(&matvec(w_hh, &conted), &matvec(w_xh, seq.x_at(t, n))),
                b_h,
            );
            if let Some(xs) = seq.static_at(n) {
                pre = add(&pre, &matvec(&p[2], xs));
            }
            h[n] = pre.iter().map(|v| v.tanh()).collect();
            let o = add(&matvec(w_ho, &h[n]), b_o);
            out[t * seq.streams + n] = o.iter().map(|v| v.tanh()).collect();
        }
    }
    (out.concat(), h)
}

/// Upstream's LSTM from `(h0, c0)` (per stream): the outputs `h`, then `(h_T, c_T)`.
fn lstm_reference(
    p: &[Vec<f64>],
    seq: &Sequence,
    h0: &[Vec<f64>],
    c0: &[Vec<f64>],
) -> (Vec<f64>, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let (w_xc, b_c) = (&p[0], &p[1]);
    let w_hc = p.last().unwrap();
    let (mut h, mut c) = (h0.to_vec(), c0.to_vec());
    let mut out = vec![Vec::new(); seq.steps * seq.streams];
    for t in 0..seq.steps {
        for n in 0..seq.streams {
            let cont = seq.cont[t * seq.streams + n];
            let conted: Vec<f64> = h[n].iter().map(|v| v * cont).collect();
            let mut gates = add(
                &add(&matvec(w_hc, &conted), &matvec(w_xc, seq.x_at(t, n))),
                b_c,
            );
            if let Some(xs) = seq.static_at(n) {
                gates = add(&gates, &matvec(&p[2], xs));
            }
            let (next_c, next_h) = lstm_unit_step(&c[n], &gates, cont);
            (c[n], h[n]) = (next_c, next_h.clone());
            out[t * seq.streams + n] = next_h;
        }
    }
    (out.concat(), h, c)
}

/// A harness for `kind` over `steps x streams x 3` inputs (and a `streams x 2` static input),
/// with `cont` set, and the sequence it runs on.
fn recurrent_case(
    text: &str,
    steps: usize,
    streams: usize,
    cont: &[f32],
    with_static: bool,
    hidden: &[&[usize]],
) -> (H, Sequence) {
    let (x_shape, cont_shape, static_shape) = ([steps, streams, 3], [steps, streams], [streams, 2]);
    let mut shapes: Vec<&[usize]> = vec![&x_shape, &cont_shape];
    if with_static {
        shapes.push(&static_shape);
    }
    shapes.extend_from_slice(hidden);
    let mut h = harness(text, &shapes);
    h.set_bottom(1, cont).unwrap();
    let seq = Sequence {
        steps,
        streams,
        x: widen(&h.bottom(0).data_to_vec().unwrap()),
        cont: widen(cont),
        x_static: with_static.then(|| widen(&h.bottom(2).data_to_vec().unwrap())),
    };
    (h, seq)
}

#[test]
fn recurrent_parameters_follow_upstreams_order_and_shapes() {
    let cases: [(&str, bool, &[&[usize]]); 4] = [
        ("RNN", false, &[&[5, 3], &[5], &[5, 5], &[5, 5], &[5]]),
        (
            "RNN",
            true,
            &[&[5, 3], &[5], &[5, 2], &[5, 5], &[5, 5], &[5]],
        ),
        ("LSTM", false, &[&[20, 3], &[20], &[20, 5]]),
        ("LSTM", true, &[&[20, 3], &[20], &[20, 2], &[20, 5]]),
    ];
    for (kind, with_static, want) in cases {
        let (h, _) = recurrent_case(
            &recurrent(kind, 5, false),
            3,
            2,
            &[0.0; 6],
            with_static,
            &[],
        );
        let shapes: Vec<&[usize]> = (0..h.num_params())
            .map(|k| h.param_blob(k).shape())
            .collect();
        assert_eq!(shapes, want, "{kind}, static input {with_static}");
        assert_eq!(h.top(0).shape(), [3, 2, 5], "{kind}");
    }
}

#[test]
fn rnn_forward_matches_the_formulas_for_one_to_three_steps() {
    for steps in 1..=3 {
        for with_static in [false, true] {
            let cont: Vec<f32> = (0..steps * 2)
                .map(|i| if i < 2 || i == 4 { 0.0 } else { 1.0 })
                .collect();
            let (mut h, seq) = recurrent_case(
                &recurrent("RNN", 4, false),
                steps,
                2,
                &cont,
                with_static,
                &[],
            );
            h.forward().unwrap();
            let (want, _) = rnn_reference(&params(&h), &seq, &[vec![0.0; 4], vec![0.0; 4]]);
            assert_all_close(
                &top(&h, 0),
                &want,
                &format!("RNN T={steps} static {with_static}"),
            );
        }
    }
}

#[test]
fn lstm_forward_matches_the_formulas_for_one_to_three_steps() {
    for steps in 1..=3 {
        for with_static in [false, true] {
            let cont: Vec<f32> = (0..steps * 2)
                .map(|i| if i < 2 || i == 5 { 0.0 } else { 1.0 })
                .collect();
            let (mut h, seq) = recurrent_case(
                &recurrent("LSTM", 3, false),
                steps,
                2,
                &cont,
                with_static,
                &[],
            );
            h.forward().unwrap();
            let zero = [vec![0.0; 3], vec![0.0; 3]];
            let (want, _, _) = lstm_reference(&params(&h), &seq, &zero, &zero);
            assert_all_close(
                &top(&h, 0),
                &want,
                &format!("LSTM T={steps} static {with_static}"),
            );
        }
    }
}

#[test]
fn lstm_of_one_step_is_an_lstm_unit_over_the_input_transform() {
    let (mut h, seq) = recurrent_case(&recurrent("LSTM", 2, false), 1, 3, &[0.0; 3], false, &[]);
    h.forward().unwrap();
    let p = params(&h);
    let gates: Vec<f32> = (0..3)
        .flat_map(|n| add(&matvec(&p[0], seq.x_at(0, n)), &p[1]))
        .map(|v| v as f32)
        .collect();
    let mut unit = harness(LSTM_UNIT, &[&[1, 3, 2], &[1, 3, 8], &[1, 3]]);
    unit.set_bottom(0, &[0.0; 6]).unwrap();
    unit.set_bottom(1, &gates).unwrap();
    unit.set_bottom(2, &[0.0; 3]).unwrap();
    unit.forward().unwrap();
    assert_all_close(
        &top(&h, 0),
        &widen(&top(&unit, 1)),
        "LSTM T=1 against LSTMUnit h",
    );
}

#[test]
fn the_state_carries_over_to_the_next_pass_unless_cont_is_zero() {
    for kind in ["RNN", "LSTM"] {
        let (mut h, mut seq) = recurrent_case(
            &recurrent(kind, 3, false),
            2,
            2,
            &[0.0, 0.0, 1.0, 1.0],
            false,
            &[],
        );
        h.forward().unwrap();
        h.set_bottom(1, &[1.0, 0.0, 1.0, 1.0]).unwrap();
        seq.cont = vec![1.0, 0.0, 1.0, 1.0];
        h.forward().unwrap();
        let p = params(&h);
        let zero = vec![vec![0.0; 3]; 2];
        let first_cont = [0.0, 0.0, 1.0, 1.0];
        let first = Sequence {
            cont: widen(&first_cont),
            x: seq.x.clone(),
            x_static: None,
            ..seq
        };
        let want = if kind == "RNN" {
            let (_, h_t) = rnn_reference(&p, &first, &zero);
            rnn_reference(&p, &seq, &h_t).0
        } else {
            let (_, h_t, c_t) = lstm_reference(&p, &first, &zero, &zero);
            lstm_reference(&p, &seq, &h_t, &c_t).0
        };
        assert_all_close(&top(&h, 0), &want, &format!("{kind} second pass"));
    }
}

#[test]
fn a_sequence_split_by_cont_equals_separate_runs() {
    for kind in ["RNN", "LSTM"] {
        let text = recurrent(kind, 3, false);
        let (mut whole, _) = recurrent_case(&text, 4, 1, &[0.0, 1.0, 0.0, 1.0], false, &[]);
        whole.forward().unwrap();
        let x = whole.bottom(0).data_to_vec().unwrap();
        let (mut second, _) = recurrent_case(&text, 2, 1, &[0.0, 1.0], false, &[]);
        for k in 0..whole.num_params() {
            let values = whole.param_blob(k).data_to_vec().unwrap();
            second.param_blob_mut(k).set_data(&values).unwrap();
        }
        second.set_bottom(0, &x[6..]).unwrap();
        second.forward().unwrap();
        let out = top(&whole, 0);
        assert_all_close(
            &out[6..],
            &widen(&top(&second, 0)),
            &format!("{kind} second sequence"),
        );
    }
}

#[test]
fn exposed_state_is_read_from_bottoms_and_written_to_tops() {
    let h0 = [0.3, -0.2, 0.1, 0.5, -0.4, 0.2];
    let c0 = [-0.6, 0.4, 0.9, -0.1, 0.2, 0.7];
    let rnn_state: &[&[usize]] = &[&[1, 2, 3]];
    let (mut h, seq) = recurrent_case(
        &recurrent("RNN", 3, true),
        2,
        2,
        &[1.0; 4],
        false,
        rnn_state,
    );
    h.set_bottom(2, &h0).unwrap();
    h.forward().unwrap();
    let per_stream = |v: &[f32]| vec![widen(&v[..3]), widen(&v[3..])];
    let (want, h_t) = rnn_reference(&params(&h), &seq, &per_stream(&h0));
    assert_all_close(&top(&h, 0), &want, "RNN exposed output");
    assert_all_close(&top(&h, 1), &h_t.concat(), "RNN h_T");

    let lstm_state: &[&[usize]] = &[&[1, 2, 3], &[1, 2, 3]];
    let (mut h, seq) = recurrent_case(
        &recurrent("LSTM", 3, true),
        2,
        2,
        &[1.0; 4],
        false,
        lstm_state,
    );
    h.set_bottom(2, &h0).unwrap();
    h.set_bottom(3, &c0).unwrap();
    h.forward().unwrap();
    let (want, h_t, c_t) = lstm_reference(&params(&h), &seq, &per_stream(&h0), &per_stream(&c0));
    assert_all_close(&top(&h, 0), &want, "LSTM exposed output");
    assert_all_close(&top(&h, 1), &h_t.concat(), "LSTM h_T");
    assert_all_close(&top(&h, 2), &c_t.concat(), "LSTM c_T");
}

/// Checks the gradient of each element of top 0 (the exposed final state takes none).
fn check_output_gradient(h: &mut H, bottom: usize) {
    for e in 0..h.top(0).count() {
        GradientChecker::new(1e-2, 1e-3)
            .check_single(h, Some(bottom), Some((0, e)), false)
            .unwrap();
    }
}

#[test]
fn recurrent_gradients_for_x_and_the_parameters() {
    for kind in ["RNN", "LSTM"] {
        for cont in [
            [0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
            [0.0, 0.0, 1.0, 0.0, 0.0, 1.0],
        ] {
            let (mut h, _) = recurrent_case(&recurrent(kind, 2, false), 3, 2, &cont, false, &[]);
            check_output_gradient(&mut h, 0);
        }
    }
}

#[test]
fn recurrent_gradients_for_the_static_input() {
    for kind in ["RNN", "LSTM"] {
        let cont = [0.0, 0.0, 1.0, 1.0];
        let (mut h, _) = recurrent_case(&recurrent(kind, 2, false), 2, 2, &cont, true, &[]);
        check_output_gradient(&mut h, 0);
        check_output_gradient(&mut h, 2);
    }
}

#[test]
fn recurrent_gradients_for_the_exposed_initial_state() {
    let state: &[&[usize]] = &[&[1, 2, 2], &[1, 2, 2]];
    for (kind, bottoms) in [("RNN", 1), ("LSTM", 2)] {
        let cont = [1.0, 0.0, 1.0, 1.0];
        let (mut h, _) = recurrent_case(
            &recurrent(kind, 2, true),
            2,
            2,
            &cont,
            false,
            &state[..bottoms],
        );
        for b in 0..bottoms {
            check_output_gradient(&mut h, 2 + b);
        }
        check_output_gradient(&mut h, 0);
    }
}

#[test]
fn recurrent_refuses_bad_shapes_and_parameters() {
    let no_output = r#"type: "LSTM" recurrent_param { }"#;
    let error = failure(no_output, &[&[2, 1, 3], &[2, 1]], None);
    assert!(
        error.contains("recurrent_param.num_output must be positive"),
        "{error}"
    );
    // 4 gates of 2^30 would wrap to 0 in 32 bits.
    let error = failure(
        &recurrent("LSTM", 1 << 30, false),
        &[&[2, 1, 3], &[2, 1]],
        None,
    );
    assert!(
        error.contains("recurrent_param.num_output 1073741824 is too large for LSTM"),
        "{error}"
    );
    let text = recurrent("RNN", 2, false);
    let error = failure(&text, &[&[2, 1, 3], &[2, 2]], None);
    assert!(
        error.contains("bottom 1 (cont) must have shape [2, 1]"),
        "{error}"
    );
    let error = failure(&text, &[&[2, 1, 3], &[2, 1], &[3, 4]], None);
    assert!(error.contains("bottom 2 (x_static)"), "{error}");
    let error = failure(
        &recurrent("LSTM", 2, true),
        &[&[2, 1, 3], &[2, 1], &[1, 1, 2], &[1, 1, 3]],
        None,
    );
    assert!(
        error.contains("bottom 3 (c_0) must have shape [1, 1, 2]"),
        "{error}"
    );
}

#[test]
fn recurrent_refuses_a_gradient_for_cont() {
    for kind in ["RNN", "LSTM"] {
        let mut h = harness(&recurrent(kind, 2, false), &[&[2, 1, 3], &[2, 1]]);
        h.forward().unwrap();
        let error = h.backward(&[true, true]).unwrap_err().to_string();
        assert!(
            error.contains(&format!("{kind} cannot backpropagate to bottom 1")),
            "{error}"
        );
    }
}

// ---- A net of words through an LSTM ---------------------------------------------------------

const NET: &str = r#"
name: "words"
layer { name: "in" type: "Input" top: "words" top: "cont" top: "target"
        input_param { shape { dim: 3 dim: 2 } shape { dim: 3 dim: 2 } shape { dim: 3 dim: 2 dim: 4 } } }
layer { name: "embed" type: "Embed" bottom: "words" top: "vectors"
        embed_param { num_output: 5 input_dim: 7 weight_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "lstm" type: "LSTM" bottom: "vectors" bottom: "cont" top: "h"
        recurrent_param { num_output: 4 weight_filler { type: "uniform" min: -0.5 max: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "h" bottom: "target" top: "loss" }
"#;

#[test]
fn a_net_embeds_words_and_runs_an_lstm_forward_and_backward() {
    let param = parse_text(NET, Path::new("<words net>")).unwrap();
    let mut net = Net::new(&param, &cpu(), rng_from_seed(1701)).unwrap();
    let blob = |net: &mut Net<CpuBackend>, name: &str, values: &[f32]| {
        net.blob_by_name_mut(name)
            .unwrap()
            .set_data(values)
            .unwrap()
    };
    blob(&mut net, "words", &[0.0, 6.0, 3.0, 6.0, 1.0, 2.0]);
    blob(&mut net, "cont", &[0.0, 0.0, 1.0, 1.0, 1.0, 0.0]);
    blob(&mut net, "target", &[0.25; 24]);
    // Embed's weight and bias, then the LSTM's W_xc, b_c and W_hc.
    let shapes: Vec<&[usize]> = net.learnable_params().iter().map(|b| b.shape()).collect();
    assert_eq!(shapes, [&[7, 5][..], &[5], &[16, 5], &[16], &[16, 4]]);
    net.clear_param_diffs().unwrap();
    let loss = net.forward_backward().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    for (k, blob) in net.learnable_params().iter().enumerate() {
        assert!(blob.asum_diff().unwrap() > 0.0, "param {k} got no gradient");
    }
    // Word 4 and 5 never occur: their embedding rows get no gradient.
    let embedding_diff = net.learnable_params()[0].diff_to_vec().unwrap();
    assert!(embedding_diff[20..30].iter().all(|&d| d == 0.0));
}

#[test]
fn recurrent_layers_follow_a_change_in_the_number_of_streams() {
    for kind in ["RNN", "LSTM"] {
        let (mut h, _) = recurrent_case(&recurrent(kind, 3, false), 2, 2, &[0.0; 4], true, &[]);
        h.forward().unwrap();
        let cont = [0.0, 0.0, 0.0, 1.0, 0.0, 1.0];
        let x: Vec<f32> = (0..18).map(|k| (k as f32 - 8.0) * 0.1).collect();
        let x_static = [0.3, -0.7, 0.1, 0.9, -0.2, 0.4];
        for (i, shape, values) in [
            (0, &[2, 3, 3][..], &x[..]),
            (1, &[2, 3], &cont),
            (2, &[3, 2], &x_static),
        ] {
            h.bottom_mut(i).reshape(shape).unwrap();
            h.set_bottom(i, values).unwrap();
        }
        h.forward().unwrap();
        assert_eq!(h.top(0).shape(), [2, 3, 3], "{kind}");
        let seq = Sequence {
            steps: 2,
            streams: 3,
            x: widen(&x),
            cont: widen(&cont),
            x_static: Some(widen(&x_static)),
        };
        let zero = vec![vec![0.0; 3]; 3];
        let want = if kind == "RNN" {
            rnn_reference(&params(&h), &seq, &zero).0
        } else {
            lstm_reference(&params(&h), &seq, &zero, &zero).0
        };
        assert_all_close(&top(&h, 0), &want, &format!("{kind} with 3 streams"));
    }
}
