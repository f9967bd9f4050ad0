//! The unrolled nets of RNN and LSTM, as upstream's `FillUnrolledNet` describes them
//! (src/caffe/layers/rnn_layer.cpp, lstm_layer.cpp, recurrent_layer.cpp): the same layers,
//! names, blob names and shared parameter names, so the shared parameters come out in
//! upstream's order and shapes.
//!
//! The net is written as prototxt text and parsed: the structure then reads as upstream's
//! diagrams do. The fillers are set on the parsed layers afterwards.

use std::fmt::Write as _;
use std::path::Path;

use crate::layers::LayerError;
use crate::proto::caffe::{FillerParameter, NetParameter, NetState, Phase, RecurrentParameter};
use crate::proto::parse_text;

/// Which recurrent cell the net unrolls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// `h_t = tanh(W_hh h_{t-1} + W_xh x_t + b_h)`, `o_t = tanh(W_ho h_t + b_o)`.
    Rnn,
    /// LSTMUnit steps over the gate inputs `W_hc h_{t-1} + W_xc x_t + b_c`.
    Lstm,
}

impl Cell {
    /// The recurrent state inputs at time 0, in upstream's order (the exposed bottoms).
    pub fn state_inputs(self) -> &'static [&'static str] {
        match self {
            Cell::Rnn => &["h_0"],
            Cell::Lstm => &["h_0", "c_0"],
        }
    }
    /// The recurrent state outputs at time `T`, paired with [`Cell::state_inputs`].
    pub fn state_outputs(self, steps: usize) -> Vec<String> {
        match self {
            Cell::Rnn => vec![format!("h_{steps}")],
            Cell::Lstm => vec![format!("h_{steps}"), "c_T".to_string()],
        }
    }
    /// The output blob (the layer's first top).
    pub fn output(self) -> &'static str {
        match self {
            Cell::Rnn => "o",
            Cell::Lstm => "h",
        }
    }
}

/// What the unrolled net is built for.
pub struct Plan<'a> {
    pub cell: Cell,
    pub param: &'a RecurrentParameter,
    /// The recurrent layer's name, prefixed to every inner layer's (as upstream).
    pub layer_name: &'a str,
    pub phase: Phase,
    pub x_shape: &'a [usize],
    pub cont_shape: &'a [usize],
    pub static_shape: Option<&'a [usize]>,
    /// Whether the initial state comes from bottoms (its gradient is then wanted).
    pub expose_hidden: bool,
}

impl Plan<'_> {
    fn steps(&self) -> usize {
        self.x_shape[0]
    }
    fn streams(&self) -> usize {
        self.x_shape[1]
    }
    fn num_output(&self) -> u32 {
        self.param.num_output()
    }
}

/// The unrolled net's parameter, and the name of its last layer: a pseudo-loss that makes the
/// net compute every gradient, never run (the net runs up to the layer before it).
pub fn unrolled_net(plan: &Plan<'_>) -> Result<(NetParameter, String), LayerError> {
    let mut text = String::new();
    input_layer(&mut text, plan);
    match plan.cell {
        Cell::Rnn => rnn_layers(&mut text, plan),
        Cell::Lstm => lstm_layers(&mut text, plan),
    }
    let mut net: NetParameter = parse_text(&text, Path::new("<unrolled net>"))
        .map_err(|e| LayerError::invalid(format!("the unrolled net does not parse: {e}")))?;
    let filler = |f: &Option<FillerParameter>| Some(f.clone().unwrap_or_default());
    for layer in &mut net.layer {
        if let Some(ip) = layer.inner_product_param.as_mut() {
            ip.weight_filler = filler(&plan.param.weight_filler);
            if ip.bias_term() {
                ip.bias_filler = filler(&plan.param.bias_filler);
            }
        }
        if !plan.layer_name.is_empty() {
            layer.name = Some(format!("{}_{}", plan.layer_name, layer.name()));
        }
    }
    let output = plan.cell.output();
    let pseudo_loss = format!(
        r#"layer {{ name: "{output}_pseudoloss" type: "Reduction" bottom: "{output}"
           top: "{output}_pseudoloss" loss_weight: 1 }}"#
    );
    let loss: NetParameter = parse_text(&pseudo_loss, Path::new("<unrolled net>"))
        .map_err(|e| LayerError::invalid(format!("the unrolled net does not parse: {e}")))?;
    net.layer.extend(loss.layer);
    // A net propagates only into blobs that need it, and an Input top feeding only layers
    // without weights (the first step's state Scale) does not: force it for the exposed state.
    if plan.expose_hidden {
        net.force_backward = Some(true);
    }
    let mut state = NetState::default();
    state.set_phase(plan.phase);
    net.state = Some(state);
    Ok((net, format!("{output}_pseudoloss")))
}

fn shape_text(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| format!("dim: {d}")).collect();
    format!("shape {{ {} }}", dims.join(" "))
}

/// The inputs every recurrent net has, then the cell's initial state.
fn input_layer(text: &mut String, plan: &Plan<'_>) {
    let mut tops = r#"top: "x" top: "cont""#.to_string();
    let mut shapes = format!(
        "{} {}",
        shape_text(plan.x_shape),
        shape_text(plan.cont_shape)
    );
    if let Some(shape) = plan.static_shape {
        tops.push_str(r#" top: "x_static""#);
        shapes = format!("{shapes} {}", shape_text(shape));
    }
    let _ = writeln!(
        text,
        r#"layer {{ name: "input" type: "Input" {tops} input_param {{ {shapes} }} }}"#
    );
    let state = shape_text(&[1, plan.streams(), plan.num_output() as usize]);
    let (tops, shapes) = match plan.cell {
        Cell::Rnn => (r#"top: "h_0""#, state.clone()),
        Cell::Lstm => (r#"top: "c_0" top: "h_0""#, format!("{state} {state}")),
    };
    let _ = writeln!(
        text,
        r#"layer {{ name: "state_input" type: "Input" {tops} input_param {{ {shapes} }} }}"#
    );
}

/// The shape of an InnerProduct layer of the unrolled net.
struct Transform<'a> {
    /// Its shared blobs' names (a bias when there are two).
    params: &'a [&'a str],
    num_output: u32,
    axis: u32,
    /// Whether the gradient of its bottom is wanted although the bottom is an input.
    to_input: bool,
}

fn inner_product(name: &str, bottom: &str, top: &str, t: Transform<'_>) -> String {
    let shared: String = t
        .params
        .iter()
        .map(|p| format!(r#"param {{ name: "{p}" }} "#))
        .collect();
    let (out, axis, bias) = (t.num_output, t.axis, t.params.len() == 2);
    let wanted = if t.to_input {
        "propagate_down: true"
    } else {
        ""
    };
    format!(
        r#"layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top}" {shared}
           inner_product_param {{ num_output: {out} bias_term: {bias} axis: {axis} }} {wanted} }}"#
    )
}

fn hidden<'a>(params: &'a [&'a str], num_output: u32) -> Transform<'a> {
    Transform {
        params,
        num_output,
        axis: 2,
        to_input: false,
    }
}

/// The layers shared by both cells before the time steps: the cont and input-transform
/// slices, the static input's transform. `width` is the transform's output width, `w_x` and
/// `b` the names of its weight and bias, `w_static` the static weight's; the transformed
/// input is `{w_x}_x`.
fn common_front(
    text: &mut String,
    plan: &Plan<'_>,
    width: u32,
    w_x: &str,
    b: &str,
    w_static: &str,
) {
    let steps = plan.steps();
    let cont_tops: String = (1..=steps)
        .map(|t| format!(r#"top: "cont_{t}" "#))
        .collect();
    let _ = writeln!(
        text,
        r#"layer {{ name: "cont_slice" type: "Slice" bottom: "cont" {cont_tops} slice_param {{ axis: 0 }} }}"#
    );
    let weights = [w_x, b];
    let of_input = Transform {
        to_input: true,
        ..hidden(&weights, width)
    };
    let _ = writeln!(
        text,
        "{}",
        inner_product("x_transform", "x", &format!("{w_x}_x"), of_input)
    );
    if plan.static_shape.is_some() {
        let preshape = format!("{w_x}_x_static_preshape");
        let weights = [w_static];
        let of_static = Transform {
            axis: 1,
            to_input: true,
            ..hidden(&weights, width)
        };
        let layer = inner_product(&format!("{w_x}_x_static"), "x_static", &preshape, of_static);
        let _ = writeln!(text, "{layer}");
        let _ = writeln!(
            text,
            r#"layer {{ name: "{w_x}_x_static_reshape" type: "Reshape" bottom: "{preshape}"
               top: "{w_x}_x_static" reshape_param {{ shape {{ dim: 1 dim: -1 dim: {width} }} }} }}"#
        );
    }
    let x_tops: String = (1..=steps)
        .map(|t| format!(r#"top: "{w_x}_x_{t}" "#))
        .collect();
    let _ = writeln!(
        text,
        r#"layer {{ name: "{w_x}_x_slice" type: "Slice" bottom: "{w_x}_x" {x_tops} slice_param {{ axis: 0 }} }}"#
    );
}

/// `h_conted_{t-1} = cont_t h_{t-1}` (a new sequence starts from 0), with the initial
/// state's gradient wanted when it is exposed.
fn conted_state(text: &mut String, plan: &Plan<'_>, t: usize) {
    let tm1 = t - 1;
    let wanted = if t == 1 && plan.expose_hidden {
        "propagate_down: true propagate_down: false"
    } else {
        ""
    };
    let _ = writeln!(
        text,
        r#"layer {{ name: "h_conted_{tm1}" type: "Scale" bottom: "h_{tm1}" bottom: "cont_{t}"
           top: "h_conted_{tm1}" scale_param {{ axis: 0 }} {wanted} }}"#
    );
}

/// The sum of the recurrent and input transforms (and the static one) into `top`.
fn input_sum(
    text: &mut String,
    plan: &Plan<'_>,
    name: &str,
    bottoms: [String; 2],
    w_x: &str,
    top: &str,
) {
    let static_bottom = if plan.static_shape.is_some() {
        format!(r#"bottom: "{w_x}_x_static""#)
    } else {
        String::new()
    };
    let [a, b] = bottoms;
    let _ = writeln!(
        text,
        r#"layer {{ name: "{name}" type: "Eltwise" bottom: "{a}" bottom: "{b}" {static_bottom}
           top: "{top}" eltwise_param {{ operation: SUM }} }}"#
    );
}

fn rnn_layers(text: &mut String, plan: &Plan<'_>) {
    let out = plan.num_output();
    common_front(text, plan, out, "W_xh", "b_h", "W_xh_static");
    let mut outputs = String::new();
    for t in 1..=plan.steps() {
        let tm1 = t - 1;
        conted_state(text, plan, t);
        let recurrent = format!("W_hh_h_{tm1}");
        let _ = writeln!(
            text,
            "{}",
            inner_product(
                &recurrent,
                &format!("h_conted_{tm1}"),
                &recurrent,
                hidden(&["W_hh"], out)
            )
        );
        let sum = format!("h_neuron_input_{t}");
        input_sum(
            text,
            plan,
            &format!("h_input_sum_{t}"),
            [recurrent, format!("W_xh_x_{t}")],
            "W_xh",
            &sum,
        );
        let _ = writeln!(
            text,
            r#"layer {{ name: "h_neuron_{t}" type: "TanH" bottom: "{sum}" top: "h_{t}" }}"#
        );
        let output = format!("W_ho_h_{t}");
        let _ = writeln!(
            text,
            "{}",
            inner_product(
                &output,
                &format!("h_{t}"),
                &output,
                hidden(&["W_ho", "b_o"], out)
            )
        );
        let _ = writeln!(
            text,
            r#"layer {{ name: "o_neuron_{t}" type: "TanH" bottom: "{output}" top: "o_{t}" }}"#
        );
        let _ = write!(outputs, r#"bottom: "o_{t}" "#);
    }
    let _ = writeln!(
        text,
        r#"layer {{ name: "o_concat" type: "Concat" {outputs} top: "o" concat_param {{ axis: 0 }} }}"#
    );
}

fn lstm_layers(text: &mut String, plan: &Plan<'_>) {
    let out = plan.num_output();
    common_front(text, plan, 4 * out, "W_xc", "b_c", "W_xc_static");
    let mut outputs = String::new();
    for t in 1..=plan.steps() {
        let tm1 = t - 1;
        conted_state(text, plan, t);
        let recurrent = format!("W_hc_h_{tm1}");
        let _ = writeln!(
            text,
            "{}",
            inner_product(
                &format!("transform_{t}"),
                &format!("h_conted_{tm1}"),
                &recurrent,
                hidden(&["W_hc"], 4 * out)
            )
        );
        let gates = format!("gate_input_{t}");
        input_sum(
            text,
            plan,
            &gates,
            [recurrent, format!("W_xc_x_{t}")],
            "W_xc",
            &gates,
        );
        let wanted = if t == 1 && plan.expose_hidden {
            "propagate_down: true propagate_down: true propagate_down: false"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            r#"layer {{ name: "unit_{t}" type: "LSTMUnit" bottom: "c_{tm1}" bottom: "{gates}"
               bottom: "cont_{t}" top: "c_{t}" top: "h_{t}" {wanted} }}"#
        );
        let _ = write!(outputs, r#"bottom: "h_{t}" "#);
    }
    let steps = plan.steps();
    let _ = writeln!(
        text,
        r#"layer {{ name: "c_T_copy" type: "Split" bottom: "c_{steps}" top: "c_T" }}"#
    );
    let _ = writeln!(
        text,
        r#"layer {{ name: "h_concat" type: "Concat" {outputs} top: "h" concat_param {{ axis: 0 }} }}"#
    );
}
