//! Upgrades legacy nets and solvers to the current format, as upstream's
//! `src/caffe/util/upgrade_proto.cpp` does on read (`UpgradeNetAsNeeded`,
//! `UpgradeSolverAsNeeded`), and the two command-line upgrade tools
//! (`upgrade_net_proto_text`, `upgrade_solver_proto_text`).
//!
//! A net goes through these steps, in upstream's order, each only when needed:
//!
//! 1. V0 → V1: `layers { layer { type: "conv" ... } }`; `padding` layers are folded into the
//!    convolution or pooling layer they feed, and the flat V0 fields move into V1's per-type
//!    parameter messages.
//! 2. V1 data transformation: `scale`, `mean_file`, `crop_size` and `mirror` of data, image
//!    data and window data layers move into `transform_param`.
//! 3. V1 → current: `layers { type: CONVOLUTION }` becomes `layer { type: "Convolution" }`,
//!    with `blobs_lr`/`weight_decay`/`param`/`blob_share_mode` turned into `param {}` specs.
//! 4. Top-level `input` with `input_dim` or `input_shape` becomes a leading `Input` layer.
//! 5. BatchNorm layers with three `param {}` specs get `lr_mult: 0` and `decay_mult: 0` in each.
//!
//! What upstream aborts on (`LOG(FATAL)`/`CHECK`) is a [`ProtoError::Invalid`] here. What
//! upstream merely logs and continues past ("had one or more problems ... continuing anyway")
//! is logged the same way on read; the file tools still write their output but then report
//! those problems as an error, as upstream's tools exit non-zero.

use super::caffe::{
    param_spec, pooling_parameter, solver_parameter, v0_layer_parameter, v1_layer_parameter,
    BlobShape, InputParameter, LayerParameter, NetParameter, ParamSpec, SolverParameter,
    V0LayerParameter, V1LayerParameter,
};
use super::{
    print_text, read_net_as_written, read_solver_as_written, write_atomically, ProtoError,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use v1_layer_parameter::LayerType;

/// What an upgrade did: whether anything changed, and the problems upstream would only log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpgradeReport {
    /// Some upgrade step changed the message.
    pub changed: bool,
    /// Things that could not be carried over (upstream: "had one or more problems upgrading").
    pub problems: Vec<String>,
}

/// Upgrades `net` (read from `origin`) in place to the current `layer {}` format.
/// Returns whether anything was changed.
///
/// Problems upstream tolerates (a V0 field that does not apply to the layer's type, say) are
/// logged as errors and the upgrade carries on, as upstream does on read.
pub fn upgrade_net(net: &mut NetParameter, origin: &Path) -> Result<bool, ProtoError> {
    Ok(upgrade_net_report(net, origin)?.changed)
}

/// [`upgrade_net`], returning the tolerated problems too.
pub fn upgrade_net_report(
    net: &mut NetParameter,
    origin: &Path,
) -> Result<UpgradeReport, ProtoError> {
    let mut cx = Context::new(origin, None);
    let changed = upgrade_net_in(net, &mut cx)?;
    Ok(UpgradeReport {
        changed,
        problems: cx.problems,
    })
}

/// Upgrades `solver` (read from `origin`) in place: the `solver_type` enum to the `type`
/// string, and any inline legacy nets. Returns whether anything was changed.
pub fn upgrade_solver(solver: &mut SolverParameter, origin: &Path) -> Result<bool, ProtoError> {
    Ok(upgrade_solver_report(solver, origin)?.changed)
}

/// [`upgrade_solver`], returning the tolerated problems too.
///
/// Upstream upgrades only the solver type here, and never upgrades the inline nets
/// (`net_param`, `train_net_param`, `test_net_param`) at all: `Solver::InitTrainNet` and
/// `InitTestNets` copy them straight into `Net`, which only reads `layer {}`. rcaffe's net
/// likewise only understands the current format, so they are upgraded here, on read, exactly as
/// a net file is, so that files like `lenet_consolidated_solver.prototxt` (V1 inline nets) work.
pub fn upgrade_solver_report(
    solver: &mut SolverParameter,
    origin: &Path,
) -> Result<UpgradeReport, ProtoError> {
    let mut report = UpgradeReport::default();
    if solver_needs_type_upgrade(solver) {
        log::info!(
            "Attempting to upgrade input file specified using deprecated 'solver_type' field \
             (enum)': {}",
            origin.display()
        );
        upgrade_solver_type(solver, origin)?;
        log::info!(
            "Successfully upgraded file specified using deprecated 'solver_type' field (enum) \
             to 'type' field (string)."
        );
        log::warn!(
            "Note that future Caffe releases will only support 'type' field (string) for a \
             solver's type."
        );
        report.changed = true;
    }
    let mut inline: Vec<(String, &mut NetParameter)> = Vec::new();
    if let Some(net) = solver.net_param.as_mut() {
        inline.push(("net_param".to_string(), net));
    }
    if let Some(net) = solver.train_net_param.as_mut() {
        inline.push(("train_net_param".to_string(), net));
    }
    for (i, net) in solver.test_net_param.iter_mut().enumerate() {
        inline.push((format!("test_net_param[{i}]"), net));
    }
    for (field, net) in inline {
        let mut cx = Context::new(origin, Some(field));
        report.changed |= upgrade_net_in(net, &mut cx)?;
        report.problems.append(&mut cx.problems);
    }
    Ok(report)
}

/// Whether `net` uses any legacy form this module upgrades (upstream's `NetNeedsUpgrade`).
pub fn net_needs_upgrade(net: &NetParameter) -> bool {
    net_needs_v0_upgrade(net)
        || net_needs_v1_upgrade(net)
        || net_needs_data_upgrade(net)
        || net_needs_input_upgrade(net)
        || net_needs_batch_norm_upgrade(net)
}

/// Whether `solver` has the legacy `solver_type` enum or an inline net needing an upgrade.
pub fn solver_needs_upgrade(solver: &SolverParameter) -> bool {
    solver_needs_type_upgrade(solver)
        || solver
            .net_param
            .iter()
            .chain(&solver.train_net_param)
            .chain(&solver.test_net_param)
            .any(net_needs_upgrade)
}

/// The current type string of a V1 layer type, e.g. `SOFTMAX_LOSS` → `"SoftmaxWithLoss"`;
/// `NONE` has the empty string.
pub fn v1_layer_type_name(layer_type: LayerType) -> &'static str {
    match layer_type {
        LayerType::None => "",
        LayerType::Absval => "AbsVal",
        LayerType::Accuracy => "Accuracy",
        LayerType::Argmax => "ArgMax",
        LayerType::Bnll => "BNLL",
        LayerType::Concat => "Concat",
        LayerType::ContrastiveLoss => "ContrastiveLoss",
        LayerType::Convolution => "Convolution",
        LayerType::Deconvolution => "Deconvolution",
        LayerType::Data => "Data",
        LayerType::Dropout => "Dropout",
        LayerType::DummyData => "DummyData",
        LayerType::EuclideanLoss => "EuclideanLoss",
        LayerType::Eltwise => "Eltwise",
        LayerType::Exp => "Exp",
        LayerType::Flatten => "Flatten",
        LayerType::Hdf5Data => "HDF5Data",
        LayerType::Hdf5Output => "HDF5Output",
        LayerType::HingeLoss => "HingeLoss",
        LayerType::Im2col => "Im2col",
        LayerType::ImageData => "ImageData",
        LayerType::InfogainLoss => "InfogainLoss",
        LayerType::InnerProduct => "InnerProduct",
        LayerType::Lrn => "LRN",
        LayerType::MemoryData => "MemoryData",
        LayerType::MultinomialLogisticLoss => "MultinomialLogisticLoss",
        LayerType::Mvn => "MVN",
        LayerType::Pooling => "Pooling",
        LayerType::Power => "Power",
        LayerType::Relu => "ReLU",
        LayerType::Sigmoid => "Sigmoid",
        LayerType::SigmoidCrossEntropyLoss => "SigmoidCrossEntropyLoss",
        LayerType::Silence => "Silence",
        LayerType::Softmax => "Softmax",
        LayerType::SoftmaxLoss => "SoftmaxWithLoss",
        LayerType::Split => "Split",
        LayerType::Slice => "Slice",
        LayerType::Tanh => "TanH",
        LayerType::WindowData => "WindowData",
        LayerType::Threshold => "Threshold",
    }
}

/// The V1 layer type of a V0 type string such as `"conv"`, or `None` for a type V0 lacks.
/// (`"padding"` is not one: padding layers are folded away before this is asked.)
pub fn v0_layer_type(name: &str) -> Option<LayerType> {
    Some(match name {
        "accuracy" => LayerType::Accuracy,
        "bnll" => LayerType::Bnll,
        "concat" => LayerType::Concat,
        "conv" => LayerType::Convolution,
        "data" => LayerType::Data,
        "dropout" => LayerType::Dropout,
        "euclidean_loss" => LayerType::EuclideanLoss,
        "flatten" => LayerType::Flatten,
        "hdf5_data" => LayerType::Hdf5Data,
        "hdf5_output" => LayerType::Hdf5Output,
        "im2col" => LayerType::Im2col,
        "images" => LayerType::ImageData,
        "infogain_loss" => LayerType::InfogainLoss,
        "innerproduct" => LayerType::InnerProduct,
        "lrn" => LayerType::Lrn,
        "multinomial_logistic_loss" => LayerType::MultinomialLogisticLoss,
        "pool" => LayerType::Pooling,
        "relu" => LayerType::Relu,
        "sigmoid" => LayerType::Sigmoid,
        "softmax" => LayerType::Softmax,
        "softmax_loss" => LayerType::SoftmaxLoss,
        "split" => LayerType::Split,
        "tanh" => LayerType::Tanh,
        "window_data" => LayerType::WindowData,
        _ => return None,
    })
}

/// The `type` string of a legacy `solver_type` enum value, e.g. `ADAGRAD` → `"AdaGrad"`.
pub fn solver_type_name(solver_type: solver_parameter::SolverType) -> &'static str {
    use solver_parameter::SolverType;
    match solver_type {
        SolverType::Sgd => "SGD",
        SolverType::Nesterov => "Nesterov",
        SolverType::Adagrad => "AdaGrad",
        SolverType::Rmsprop => "RMSProp",
        SolverType::Adadelta => "AdaDelta",
        SolverType::Adam => "Adam",
    }
}

/// Reads the net prototxt `input`, upgrades it and writes it as text to `output`, as upstream's
/// `upgrade_net_proto_text` does. A file already current is written unchanged (with an error
/// logged, as upstream does). If the upgrade had tolerated problems the output is still written
/// and those problems are returned as an error, as upstream's tool exits non-zero after writing.
pub fn upgrade_net_file(input: &Path, output: &Path) -> Result<(), ProtoError> {
    let mut net = read_net_as_written(input)?;
    let mut report = UpgradeReport::default();
    if net_needs_upgrade(&net) {
        report = upgrade_net_report(&mut net, input)?;
        if !report.problems.is_empty() {
            log::error!("Encountered error(s) while upgrading prototxt; see details above.");
        }
    } else {
        log::error!("File already in latest proto format: {}", input.display());
    }
    write_atomically(output, print_text(&net).as_bytes())?;
    log::info!(
        "Wrote upgraded NetParameter text proto to {}",
        output.display()
    );
    problems_to_result(input, output, report.problems)
}

/// Reads the solver prototxt `input`, upgrades it and writes it as text to `output`, as
/// upstream's `upgrade_solver_proto_text` does; unlike upstream's tool, inline legacy nets are
/// upgraded too (see [`upgrade_solver_report`]). A solver with both `solver_type` and `type` is
/// refused and nothing is written.
pub fn upgrade_solver_file(input: &Path, output: &Path) -> Result<(), ProtoError> {
    let mut solver = read_solver_as_written(input)?;
    let mut report = UpgradeReport::default();
    if solver_needs_upgrade(&solver) {
        report = upgrade_solver_report(&mut solver, input)?;
        if !report.problems.is_empty() {
            log::error!("Encountered error(s) while upgrading prototxt; see details above.");
        }
    } else {
        log::error!("File already in latest proto format: {}", input.display());
    }
    write_atomically(output, print_text(&solver).as_bytes())?;
    log::info!(
        "Wrote upgraded SolverParameter text proto to {}",
        output.display()
    );
    problems_to_result(input, output, report.problems)
}

fn problems_to_result(
    input: &Path,
    output: &Path,
    problems: Vec<String>,
) -> Result<(), ProtoError> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(ProtoError::Invalid {
        path: input.to_path_buf(),
        message: format!(
            "upgraded with problems (written to {} anyway): {}",
            output.display(),
            problems.join("; ")
        ),
    })
}

/// Where an upgrade is happening, for messages, and the problems met so far.
struct Context {
    origin: PathBuf,
    /// The solver field holding an inline net, if this net is one.
    field: Option<String>,
    problems: Vec<String>,
}

impl Context {
    fn new(origin: &Path, field: Option<String>) -> Self {
        Self {
            origin: origin.to_path_buf(),
            field,
            problems: Vec::new(),
        }
    }

    /// The file (and inline net) as the log lines name it.
    fn source(&self) -> String {
        match &self.field {
            Some(field) => format!("{} ({field})", self.origin.display()),
            None => self.origin.display().to_string(),
        }
    }

    /// An upgrade upstream refuses.
    fn refuse(&self, message: impl std::fmt::Display) -> ProtoError {
        ProtoError::Invalid {
            path: self.origin.clone(),
            message: match &self.field {
                Some(field) => format!("{field}: {message}"),
                None => message.to_string(),
            },
        }
    }

    /// A problem upstream logs and continues past.
    fn problem(&mut self, message: String) {
        let message = match &self.field {
            Some(field) => format!("{field}: {message}"),
            None => message,
        };
        log::error!("{message}");
        self.problems.push(message);
    }
}

/// How messages name a layer: `layer 'conv1' (layers[2])`.
fn layer_label(name: Option<&str>, field: &str, index: usize) -> String {
    match name {
        Some(name) => format!("layer '{name}' ({field}[{index}])"),
        None => format!("unnamed layer ({field}[{index}])"),
    }
}

fn v0_label(connection: &V1LayerParameter, index: usize) -> String {
    let name = connection.layer.as_ref().and_then(|l| l.name.as_deref());
    layer_label(name, "layers", index)
}

/// The per-type message in `slot`, created if absent.
fn get<T: Default>(slot: &mut Option<T>) -> &mut T {
    slot.get_or_insert_with(T::default)
}

/// Upstream's `UpgradeNetAsNeeded`, with its log lines.
fn upgrade_net_in(net: &mut NetParameter, cx: &mut Context) -> Result<bool, ProtoError> {
    let mut changed = false;
    if net_needs_v0_upgrade(net) {
        log::info!(
            "Attempting to upgrade input file specified using deprecated V0LayerParameter: {}",
            cx.source()
        );
        let before = cx.problems.len();
        *net = upgrade_v0_net(net, cx)?;
        if cx.problems.len() > before {
            log::error!(
                "Warning: had one or more problems upgrading V0NetParameter to NetParameter \
                 (see above); continuing anyway."
            );
        } else {
            log::info!("Successfully upgraded file specified using deprecated V0LayerParameter");
        }
        log::warn!(
            "Note that future Caffe releases will not support V0NetParameter; use \
             ./build/tools/upgrade_net_proto_text for prototxt and \
             ./build/tools/upgrade_net_proto_binary for model weights upgrade this and any \
             other net protos to the new format."
        );
        changed = true;
    }
    if net_needs_data_upgrade(net) {
        log::info!(
            "Attempting to upgrade input file specified using deprecated transformation \
             parameters: {}",
            cx.source()
        );
        upgrade_data_transformation(net);
        log::info!(
            "Successfully upgraded file specified using deprecated data transformation \
             parameters."
        );
        log::warn!(
            "Note that future Caffe releases will only support transform_param messages for \
             transformation fields."
        );
        changed = true;
    }
    if net_needs_v1_upgrade(net) {
        log::info!(
            "Attempting to upgrade input file specified using deprecated V1LayerParameter: {}",
            cx.source()
        );
        let before = cx.problems.len();
        upgrade_v1_net(net, cx)?;
        if cx.problems.len() > before {
            log::error!(
                "Warning: had one or more problems upgrading V1LayerParameter (see above); \
                 continuing anyway."
            );
        } else {
            log::info!("Successfully upgraded file specified using deprecated V1LayerParameter");
        }
        changed = true;
    }
    if net_needs_input_upgrade(net) {
        log::info!(
            "Attempting to upgrade input file specified using deprecated input fields: {}",
            cx.source()
        );
        upgrade_input(net, cx)?;
        log::info!("Successfully upgraded file specified using deprecated input fields.");
        log::warn!(
            "Note that future Caffe releases will only support input layers and not input \
             fields."
        );
        changed = true;
    }
    if net_needs_batch_norm_upgrade(net) {
        log::info!(
            "Attempting to upgrade batch norm layers using deprecated params: {}",
            cx.source()
        );
        // Upstream repeats this step on every read of such a net (the specs stay), so it
        // counts as a change only when some multiplier was not yet zero.
        changed |= upgrade_batch_norm(net);
        log::info!("Successfully upgraded batch norm layers using deprecated params.");
    }
    Ok(changed)
}

fn net_needs_v0_upgrade(net: &NetParameter) -> bool {
    net.layers.iter().any(|l| l.layer.is_some())
}

fn net_needs_v1_upgrade(net: &NetParameter) -> bool {
    !net.layers.is_empty()
}

fn net_needs_input_upgrade(net: &NetParameter) -> bool {
    !net.input.is_empty()
}

/// Whether a legacy data parameter still holds any transformation field.
macro_rules! has_transform_fields {
    ($param:expr) => {
        $param.as_ref().is_some_and(|p| {
            p.scale.is_some()
                || p.mean_file.is_some()
                || p.crop_size.is_some()
                || p.mirror.is_some()
        })
    };
}

fn v1_type(layer: &V1LayerParameter) -> Option<LayerType> {
    layer.r#type.and_then(|t| LayerType::try_from(t).ok())
}

fn net_needs_data_upgrade(net: &NetParameter) -> bool {
    net.layers.iter().any(|layer| match v1_type(layer) {
        Some(LayerType::Data) => has_transform_fields!(layer.data_param),
        Some(LayerType::ImageData) => has_transform_fields!(layer.image_data_param),
        Some(LayerType::WindowData) => has_transform_fields!(layer.window_data_param),
        _ => false,
    })
}

fn net_needs_batch_norm_upgrade(net: &NetParameter) -> bool {
    net.layer
        .iter()
        .any(|l| l.r#type.as_deref() == Some("BatchNorm") && l.param.len() == 3)
}

fn solver_needs_type_upgrade(solver: &SolverParameter) -> bool {
    solver.solver_type.is_some()
}

/// Moves the transformation fields of a legacy data parameter into `transform_param`.
macro_rules! move_transform_fields {
    ($layer:expr, $param:ident) => {{
        let layer: &mut V1LayerParameter = $layer;
        let param = get(&mut layer.$param);
        let transform = get(&mut layer.transform_param);
        if let Some(scale) = param.scale.take() {
            transform.scale = Some(scale);
        }
        if let Some(mean_file) = param.mean_file.take() {
            transform.mean_file = Some(mean_file);
        }
        if let Some(crop_size) = param.crop_size.take() {
            transform.crop_size = Some(crop_size);
        }
        if let Some(mirror) = param.mirror.take() {
            transform.mirror = Some(mirror);
        }
    }};
}

/// Upstream's `UpgradeNetDataTransformation`. Like upstream, every data, image data and window
/// data layer comes out with its parameter message and a `transform_param` present, even empty.
fn upgrade_data_transformation(net: &mut NetParameter) {
    for layer in &mut net.layers {
        match v1_type(layer) {
            Some(LayerType::Data) => move_transform_fields!(layer, data_param),
            Some(LayerType::ImageData) => move_transform_fields!(layer, image_data_param),
            Some(LayerType::WindowData) => move_transform_fields!(layer, window_data_param),
            _ => {}
        }
    }
}

/// Upstream's `UpgradeV0Net`: folds padding layers, then converts each V0 layer to V1. Like
/// upstream, only the name, `input`, `input_dim` and `force_backward` of the net are kept.
fn upgrade_v0_net(net: &NetParameter, cx: &mut Context) -> Result<NetParameter, ProtoError> {
    // Each kept layer with its index in the original file, for messages.
    let folded = fold_padding(net, cx)?;
    let mut layers = Vec::with_capacity(folded.len());
    for (index, connection) in &folded {
        layers.push(upgrade_v0_layer(connection, *index, cx)?);
    }
    Ok(NetParameter {
        name: net.name.clone(),
        input: net.input.clone(),
        input_dim: net.input_dim.clone(),
        force_backward: net.force_backward,
        layers,
        ..Default::default()
    })
}

/// Upstream's `UpgradeV0PaddingLayers`: returns a copy of the V0 `net` in which each `padding`
/// layer is dropped and its `pad` given to the convolution or pooling layer reading its output,
/// which then reads the padding layer's input instead. Errors name `origin`.
pub fn fold_v0_padding_layers(
    net: &NetParameter,
    origin: &Path,
) -> Result<NetParameter, ProtoError> {
    let layers = fold_padding(net, &Context::new(origin, None))?
        .into_iter()
        .map(|(_, layer)| layer)
        .collect();
    Ok(NetParameter {
        layers,
        ..net.clone()
    })
}

fn is_padding(layer: &V1LayerParameter) -> bool {
    layer.layer.as_ref().and_then(|l| l.r#type.as_deref()) == Some("padding")
}

fn fold_padding(
    net: &NetParameter,
    cx: &Context,
) -> Result<Vec<(usize, V1LayerParameter)>, ProtoError> {
    let mut out: Vec<(usize, V1LayerParameter)> = Vec::with_capacity(net.layers.len());
    // Which layer last wrote each blob; `None` for the net's inputs.
    let mut producer: HashMap<&str, Option<usize>> =
        net.input.iter().map(|name| (name.as_str(), None)).collect();
    for (index, connection) in net.layers.iter().enumerate() {
        let kept = !is_padding(connection);
        if kept {
            out.push((index, connection.clone()));
        }
        let v0_type = connection
            .layer
            .as_ref()
            .and_then(|l| l.r#type.as_deref())
            .unwrap_or("");
        for (slot, bottom) in connection.bottom.iter().enumerate() {
            let label = || v0_label(connection, index);
            let Some(&source_index) = producer.get(bottom.as_str()) else {
                return Err(cx.refuse(format!(
                    "{}: unknown blob input '{bottom}' in field 'bottom' (no earlier layer or \
                     net input produces it)",
                    label()
                )));
            };
            let Some(source_index) = source_index else {
                continue;
            };
            let source = &net.layers[source_index];
            if !is_padding(source) {
                continue;
            }
            let source_label = v0_label(source, source_index);
            if v0_type != "conv" && v0_type != "pool" {
                return Err(cx.refuse(format!(
                    "{}: padding layer input to non-convolutional / non-pooling layer type \
                     '{v0_type}' (bottom '{bottom}' comes from padding {source_label})",
                    label()
                )));
            }
            if connection.bottom.len() != 1 {
                return Err(cx.refuse(format!(
                    "{}: a layer fed by a padding layer must have exactly one bottom, has {}",
                    label(),
                    connection.bottom.len()
                )));
            }
            if source.bottom.len() != 1 {
                return Err(cx.refuse(format!(
                    "padding {source_label}: must have exactly one bottom, has {}",
                    source.bottom.len()
                )));
            }
            if source.top.len() != 1 {
                return Err(cx.refuse(format!(
                    "padding {source_label}: must have exactly one top, has {}",
                    source.top.len()
                )));
            }
            // The current layer is conv or pool here, so it was kept: it is the last one.
            let (_, target) = out.last_mut().expect("a conv or pool layer is always kept");
            let pad = source.layer.as_ref().and_then(|l| l.pad);
            let target_v0 = get(&mut target.layer);
            target_v0.pad = Some(pad.unwrap_or(0));
            target.bottom[slot] = source.bottom[0].clone();
        }
        for top in &connection.top {
            producer.insert(top.as_str(), Some(index));
        }
    }
    Ok(out)
}

/// Upstream's `UpgradeV0LayerParameter`: one V0 layer (inside its V1 connection) to V1.
fn upgrade_v0_layer(
    connection: &V1LayerParameter,
    index: usize,
    cx: &mut Context,
) -> Result<V1LayerParameter, ProtoError> {
    let mut out = V1LayerParameter {
        bottom: connection.bottom.clone(),
        top: connection.top.clone(),
        ..Default::default()
    };
    let Some(v0) = &connection.layer else {
        // Upstream keeps only the connections of a `layers {}` entry without a V0 layer.
        log::warn!(
            "{}: {} has no V0 'layer' in a V0 net; only its bottoms and tops are kept",
            cx.source(),
            layer_label(connection.name.as_deref(), "layers", index)
        );
        return Ok(out);
    };
    let label = layer_label(v0.name.as_deref(), "layers", index);
    let ty = v0.r#type.as_deref().unwrap_or("");
    out.name = v0.name.clone();
    if v0.r#type.is_some() {
        let Some(v1_type) = v0_layer_type(ty) else {
            return Err(cx.refuse(format!(
                "{label}: unknown V0 layer type '{ty}' in field 'type'; cannot upgrade"
            )));
        };
        out.r#type = Some(v1_type as i32);
    }
    out.blobs = v0.blobs.clone();
    out.blobs_lr = v0.blobs_lr.clone();
    out.weight_decay = v0.weight_decay.clone();

    convert_v0_fields(v0, ty, &label, &mut out, &mut |message| cx.problem(message));
    Ok(out)
}

/// The V0 layer's own fields, each moved where a layer of type `ty` keeps it in V1; a field the
/// type has no place for is reported to `problem` and dropped, as upstream does. The fields are
/// moved in upstream's order, which is the order of the reports.
fn convert_v0_fields(
    v0: &V0LayerParameter,
    ty: &str,
    label: &str,
    out: &mut V1LayerParameter,
    problem: &mut dyn FnMut(String),
) {
    let mut mover = V0FieldMover {
        ty,
        label,
        out,
        problem,
    };
    mover.move_conv_and_pool_fields(v0);
    mover.move_dropout_and_lrn_fields(v0);
    mover.move_data_fields(v0);
    mover.move_concat_window_and_output_fields(v0);
    // Like upstream, new_num and new_channels have no V1 counterpart and are dropped.
}

/// Where a layer type keeps a V0 field in V1.
type Setter<T> = fn(&mut V1LayerParameter, T);

/// Moves the fields of one V0 layer of type `ty` (called `label` in reports) into `out`.
struct V0FieldMover<'a> {
    ty: &'a str,
    label: &'a str,
    out: &'a mut V1LayerParameter,
    problem: &'a mut dyn FnMut(String),
}

impl V0FieldMover<'_> {
    /// Moves `value`, V0 field `field`, with the setter `places` lists for the layer's type; a
    /// type not listed has no place for it, which is reported.
    fn place<T>(&mut self, field: &str, value: Option<T>, places: &[(&str, Setter<T>)]) {
        let Some(value) = value else {
            return;
        };
        match places.iter().find(|(ty, _)| *ty == self.ty) {
            Some((_, set)) => set(self.out, value),
            None => self.unknown(field),
        }
    }

    fn unknown(&mut self, field: &str) {
        let message = format!(
            "{}: Unknown parameter {field} for layer type {}",
            self.label, self.ty
        );
        (self.problem)(message);
    }

    fn move_conv_and_pool_fields(&mut self, v0: &V0LayerParameter) {
        self.place(
            "num_output",
            v0.num_output,
            &[
                ("conv", |out, v| {
                    get(&mut out.convolution_param).num_output = Some(v)
                }),
                ("innerproduct", |out, v| {
                    get(&mut out.inner_product_param).num_output = Some(v)
                }),
            ],
        );
        self.place(
            "biasterm",
            v0.biasterm,
            &[
                ("conv", |out, v| {
                    get(&mut out.convolution_param).bias_term = Some(v)
                }),
                ("innerproduct", |out, v| {
                    get(&mut out.inner_product_param).bias_term = Some(v)
                }),
            ],
        );
        self.place(
            "weight_filler",
            v0.weight_filler.clone(),
            &[
                ("conv", |out, v| {
                    get(&mut out.convolution_param).weight_filler = Some(v)
                }),
                ("innerproduct", |out, v| {
                    get(&mut out.inner_product_param).weight_filler = Some(v)
                }),
            ],
        );
        self.place(
            "bias_filler",
            v0.bias_filler.clone(),
            &[
                ("conv", |out, v| {
                    get(&mut out.convolution_param).bias_filler = Some(v)
                }),
                ("innerproduct", |out, v| {
                    get(&mut out.inner_product_param).bias_filler = Some(v)
                }),
            ],
        );
        self.place(
            "pad",
            v0.pad,
            &[
                ("conv", |out, v| get(&mut out.convolution_param).pad.push(v)),
                ("pool", |out, v| get(&mut out.pooling_param).pad = Some(v)),
            ],
        );
        self.place(
            "kernelsize",
            v0.kernelsize,
            &[
                ("conv", |out, v| {
                    get(&mut out.convolution_param).kernel_size.push(v)
                }),
                ("pool", |out, v| {
                    get(&mut out.pooling_param).kernel_size = Some(v)
                }),
            ],
        );
        self.place(
            "group",
            v0.group,
            &[("conv", |out, v| {
                get(&mut out.convolution_param).group = Some(v)
            })],
        );
        self.place(
            "stride",
            v0.stride,
            &[
                ("conv", |out, v| {
                    get(&mut out.convolution_param).stride.push(v)
                }),
                ("pool", |out, v| {
                    get(&mut out.pooling_param).stride = Some(v)
                }),
            ],
        );
        self.move_pool_method(v0.pool);
    }

    fn move_pool_method(&mut self, pool: Option<i32>) {
        use pooling_parameter::PoolMethod as To;
        use v0_layer_parameter::PoolMethod as From;
        let Some(pool) = pool else {
            return;
        };
        if self.ty != "pool" {
            self.unknown("pool");
            return;
        }
        let method = match From::try_from(pool) {
            Ok(From::Max) => To::Max,
            Ok(From::Ave) => To::Ave,
            Ok(From::Stochastic) => To::Stochastic,
            Err(_) => {
                (self.problem)(format!("{}: Unknown pool method {pool}", self.label));
                return;
            }
        };
        get(&mut self.out.pooling_param).pool = Some(method as i32);
    }

    fn move_dropout_and_lrn_fields(&mut self, v0: &V0LayerParameter) {
        self.place(
            "dropout_ratio",
            v0.dropout_ratio,
            &[("dropout", |out, v| {
                get(&mut out.dropout_param).dropout_ratio = Some(v)
            })],
        );
        self.place(
            "local_size",
            v0.local_size,
            &[("lrn", |out, v| get(&mut out.lrn_param).local_size = Some(v))],
        );
        self.place(
            "alpha",
            v0.alpha,
            &[("lrn", |out, v| get(&mut out.lrn_param).alpha = Some(v))],
        );
        self.place(
            "beta",
            v0.beta,
            &[("lrn", |out, v| get(&mut out.lrn_param).beta = Some(v))],
        );
        self.place(
            "k",
            v0.k,
            &[("lrn", |out, v| get(&mut out.lrn_param).k = Some(v))],
        );
    }

    fn move_data_fields(&mut self, v0: &V0LayerParameter) {
        self.place(
            "source",
            v0.source.clone(),
            &[
                ("data", |out, v| get(&mut out.data_param).source = Some(v)),
                ("hdf5_data", |out, v| {
                    get(&mut out.hdf5_data_param).source = Some(v)
                }),
                ("images", |out, v| {
                    get(&mut out.image_data_param).source = Some(v)
                }),
                ("window_data", |out, v| {
                    get(&mut out.window_data_param).source = Some(v)
                }),
                ("infogain_loss", |out, v| {
                    get(&mut out.infogain_loss_param).source = Some(v)
                }),
            ],
        );
        // The transformation fields go to transform_param whatever the type.
        if let Some(value) = v0.scale {
            get(&mut self.out.transform_param).scale = Some(value);
        }
        if let Some(value) = &v0.meanfile {
            get(&mut self.out.transform_param).mean_file = Some(value.clone());
        }
        self.place(
            "batchsize",
            v0.batchsize,
            &[
                ("data", |out, v| {
                    get(&mut out.data_param).batch_size = Some(v)
                }),
                ("hdf5_data", |out, v| {
                    get(&mut out.hdf5_data_param).batch_size = Some(v)
                }),
                ("images", |out, v| {
                    get(&mut out.image_data_param).batch_size = Some(v)
                }),
                ("window_data", |out, v| {
                    get(&mut out.window_data_param).batch_size = Some(v)
                }),
            ],
        );
        if let Some(value) = v0.cropsize {
            get(&mut self.out.transform_param).crop_size = Some(value);
        }
        if let Some(value) = v0.mirror {
            get(&mut self.out.transform_param).mirror = Some(value);
        }
        self.place(
            "rand_skip",
            v0.rand_skip,
            &[
                ("data", |out, v| {
                    get(&mut out.data_param).rand_skip = Some(v)
                }),
                ("images", |out, v| {
                    get(&mut out.image_data_param).rand_skip = Some(v)
                }),
            ],
        );
        // Upstream's message names the new field, "shuffle".
        self.place(
            "shuffle",
            v0.shuffle_images,
            &[("images", |out, v| {
                get(&mut out.image_data_param).shuffle = Some(v)
            })],
        );
        // V0 holds these as int32, the image data parameter as uint32; the bits carry over.
        self.place(
            "new_height",
            v0.new_height,
            &[("images", |out, v| {
                get(&mut out.image_data_param).new_height = Some(v as u32)
            })],
        );
        self.place(
            "new_width",
            v0.new_width,
            &[("images", |out, v| {
                get(&mut out.image_data_param).new_width = Some(v as u32)
            })],
        );
    }

    fn move_concat_window_and_output_fields(&mut self, v0: &V0LayerParameter) {
        self.place(
            "concat_dim",
            v0.concat_dim,
            &[("concat", |out, v| {
                get(&mut out.concat_param).concat_dim = Some(v)
            })],
        );
        self.place(
            "det_fg_threshold",
            v0.det_fg_threshold,
            &[("window_data", |out, v| {
                get(&mut out.window_data_param).fg_threshold = Some(v)
            })],
        );
        self.place(
            "det_bg_threshold",
            v0.det_bg_threshold,
            &[("window_data", |out, v| {
                get(&mut out.window_data_param).bg_threshold = Some(v)
            })],
        );
        self.place(
            "det_fg_fraction",
            v0.det_fg_fraction,
            &[("window_data", |out, v| {
                get(&mut out.window_data_param).fg_fraction = Some(v)
            })],
        );
        self.place(
            "det_context_pad",
            v0.det_context_pad,
            &[("window_data", |out, v| {
                get(&mut out.window_data_param).context_pad = Some(v)
            })],
        );
        self.place(
            "det_crop_mode",
            v0.det_crop_mode.clone(),
            &[("window_data", |out, v| {
                get(&mut out.window_data_param).crop_mode = Some(v)
            })],
        );
        self.place(
            "hdf5_output_param",
            v0.hdf5_output_param.clone(),
            &[("hdf5_output", |out, v| out.hdf5_output_param = Some(v))],
        );
    }
}

/// Upstream's `UpgradeV1Net`: every `layers {}` entry becomes a `layer {}`.
fn upgrade_v1_net(net: &mut NetParameter, cx: &mut Context) -> Result<(), ProtoError> {
    if !net.layer.is_empty() {
        return Err(cx.refuse(
            "Refusing to upgrade inconsistent NetParameter input; the definition includes both \
             'layer' and 'layers' fields. The current format defines 'layer' fields with string \
             type like layer { type: 'Layer' ... } and not layers { type: LAYER ... }. Manually \
             switch the definition to 'layer' format to continue.",
        ));
    }
    let legacy = std::mem::take(&mut net.layers);
    let mut layers = Vec::with_capacity(legacy.len());
    for (index, v1) in legacy.into_iter().enumerate() {
        let before = cx.problems.len();
        layers.push(upgrade_v1_layer(v1, index, cx)?);
        if cx.problems.len() > before {
            log::error!("Upgrade of input layer {index} failed.");
        }
    }
    net.layer = layers;
    Ok(())
}

/// Upstream's `UpgradeV1LayerParameter`.
fn upgrade_v1_layer(
    v1: V1LayerParameter,
    index: usize,
    cx: &mut Context,
) -> Result<LayerParameter, ProtoError> {
    let label = layer_label(v1.name.as_deref(), "layers", index);
    let type_name = match v1.r#type {
        None => None,
        Some(value) => match LayerType::try_from(value) {
            Ok(layer_type) => Some(v1_layer_type_name(layer_type).to_string()),
            Err(_) => {
                return Err(cx.refuse(format!(
                    "{label}: unknown V1LayerParameter layer type {value} in field 'type'"
                )))
            }
        },
    };
    let specs = v1_param_specs(&v1, &label, cx)?;
    if v1.layer.is_some() {
        cx.problem(format!(
            "{label}: Input NetParameter has V0 layer -- ignoring."
        ));
    }
    Ok(LayerParameter {
        r#type: type_name,
        param: specs,
        ..v1_fields_kept(v1)
    })
}

/// The fields of a V1 layer that the current format keeps as they are. The destructuring names
/// every V1 field, so none can be forgotten; those that change are `_` here.
fn v1_fields_kept(v1: V1LayerParameter) -> LayerParameter {
    let V1LayerParameter {
        bottom,
        top,
        name,
        include,
        exclude,
        r#type: _,
        blobs,
        param: _,
        blob_share_mode: _,
        blobs_lr: _,
        weight_decay: _,
        loss_weight,
        accuracy_param,
        argmax_param,
        concat_param,
        contrastive_loss_param,
        convolution_param,
        data_param,
        dropout_param,
        dummy_data_param,
        eltwise_param,
        exp_param,
        hdf5_data_param,
        hdf5_output_param,
        hinge_loss_param,
        image_data_param,
        infogain_loss_param,
        inner_product_param,
        lrn_param,
        memory_data_param,
        mvn_param,
        pooling_param,
        power_param,
        relu_param,
        sigmoid_param,
        softmax_param,
        slice_param,
        tanh_param,
        threshold_param,
        window_data_param,
        transform_param,
        loss_param,
        layer: _,
    } = v1;
    LayerParameter {
        name,
        bottom,
        top,
        loss_weight,
        blobs,
        include,
        exclude,
        transform_param,
        loss_param,
        accuracy_param,
        argmax_param,
        concat_param,
        contrastive_loss_param,
        convolution_param,
        data_param,
        dropout_param,
        dummy_data_param,
        eltwise_param,
        exp_param,
        hdf5_data_param,
        hdf5_output_param,
        hinge_loss_param,
        image_data_param,
        infogain_loss_param,
        inner_product_param,
        lrn_param,
        memory_data_param,
        mvn_param,
        pooling_param,
        power_param,
        relu_param,
        sigmoid_param,
        softmax_param,
        slice_param,
        tanh_param,
        threshold_param,
        window_data_param,
        ..Default::default()
    }
}

/// The `ParamSpec`s of a V1 layer: param, blob_share_mode, blobs_lr and weight_decay fill the
/// i-th one, creating as many as the longest of them needs.
fn v1_param_specs(
    v1: &V1LayerParameter,
    label: &str,
    cx: &mut Context,
) -> Result<Vec<ParamSpec>, ProtoError> {
    let mut specs: Vec<ParamSpec> = Vec::new();
    fn spec(specs: &mut Vec<ParamSpec>, i: usize) -> &mut ParamSpec {
        if specs.len() <= i {
            specs.resize_with(i + 1, ParamSpec::default);
        }
        &mut specs[i]
    }
    for (i, param_name) in v1.param.iter().enumerate() {
        spec(&mut specs, i).name = Some(param_name.clone());
    }
    for (i, &mode) in v1.blob_share_mode.iter().enumerate() {
        let mode = match v1_layer_parameter::DimCheckMode::try_from(mode) {
            Ok(v1_layer_parameter::DimCheckMode::Strict) => param_spec::DimCheckMode::Strict,
            Ok(v1_layer_parameter::DimCheckMode::Permissive) => {
                param_spec::DimCheckMode::Permissive
            }
            Err(_) => {
                return Err(cx.refuse(format!(
                    "{label}: unknown blob_share_mode {mode} in field 'blob_share_mode'"
                )))
            }
        };
        spec(&mut specs, i).share_mode = Some(mode as i32);
    }
    for (i, &lr) in v1.blobs_lr.iter().enumerate() {
        spec(&mut specs, i).lr_mult = Some(lr);
    }
    for (i, &decay) in v1.weight_decay.iter().enumerate() {
        spec(&mut specs, i).decay_mult = Some(decay);
    }
    Ok(specs)
}

/// Upstream's `UpgradeNetInput`: top-level inputs with shapes (`input_shape`, or four
/// `input_dim` per input) become one `Input` layer named "input" placed first; inputs without
/// any shape (legacy weight files) are simply dropped.
fn upgrade_input(net: &mut NetParameter, cx: &Context) -> Result<(), ProtoError> {
    let has_shape = !net.input_shape.is_empty();
    let has_dim = !net.input_dim.is_empty();
    if has_shape || has_dim {
        let count = net.input.len();
        let shapes: Vec<BlobShape> = if has_shape {
            if net.input_shape.len() < count {
                return Err(cx.refuse(format!(
                    "{count} inputs but only {} input_shape entries in field 'input_shape'",
                    net.input_shape.len()
                )));
            }
            net.input_shape[..count].to_vec()
        } else {
            if net.input_dim.len() < 4 * count {
                return Err(cx.refuse(format!(
                    "{count} inputs need {} input_dim values (4 per input), field 'input_dim' \
                     has {}",
                    4 * count,
                    net.input_dim.len()
                )));
            }
            net.input_dim[..4 * count]
                .chunks(4)
                .map(|dims| BlobShape {
                    dim: dims.iter().map(|&d| i64::from(d)).collect(),
                })
                .collect()
        };
        let input_layer = LayerParameter {
            name: Some("input".to_string()),
            r#type: Some("Input".to_string()),
            top: net.input.clone(),
            input_param: Some(InputParameter { shape: shapes }),
            ..Default::default()
        };
        net.layer.insert(0, input_layer);
    }
    net.input.clear();
    net.input_shape.clear();
    net.input_dim.clear();
    Ok(())
}

/// Upstream's `UpgradeNetBatchNorm`: a BatchNorm layer declaring its three statistics blobs
/// with `param {}` specs gets `lr_mult: 0` and `decay_mult: 0` in each (names kept), which is
/// what the BatchNorm layer requires of them. Returns whether any value changed.
fn upgrade_batch_norm(net: &mut NetParameter) -> bool {
    let mut changed = false;
    for layer in &mut net.layer {
        if layer.r#type.as_deref() == Some("BatchNorm") && layer.param.len() == 3 {
            for spec in &mut layer.param {
                changed |= spec.lr_mult != Some(0.0) || spec.decay_mult != Some(0.0);
                spec.lr_mult = Some(0.0);
                spec.decay_mult = Some(0.0);
            }
        }
    }
    changed
}

/// Upstream's `UpgradeSolverType`.
fn upgrade_solver_type(solver: &mut SolverParameter, origin: &Path) -> Result<(), ProtoError> {
    let refuse = |message: String| ProtoError::Invalid {
        path: origin.to_path_buf(),
        message,
    };
    let Some(value) = solver.solver_type else {
        return Ok(());
    };
    if solver.r#type.is_some() {
        return Err(refuse(
            "Failed to upgrade solver: old solver_type field (enum) and new type field (string) \
             cannot be both specified in solver proto text."
                .to_string(),
        ));
    }
    let Ok(solver_type) = solver_parameter::SolverType::try_from(value) else {
        return Err(refuse(format!(
            "unknown SolverParameter solver_type {value} in field 'solver_type'"
        )));
    };
    solver.r#type = Some(solver_type_name(solver_type).to_string());
    solver.solver_type = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::parse_text;

    fn net(text: &str) -> NetParameter {
        parse_text(text, Path::new("unit.prototxt")).unwrap()
    }

    fn refusal(result: Result<impl std::fmt::Debug, ProtoError>) -> String {
        match result {
            Err(ProtoError::Invalid { path, message }) => {
                assert_eq!(path, Path::new("unit.prototxt"));
                message
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn padding_shape_checks_are_refusals() {
        let two_bottoms_after_pad = net(r#"input: "a" input: "b"
            layers { layer { name: "p" type: "padding" pad: 1 } bottom: "a" top: "pa" }
            layers { layer { name: "c" type: "conv" } bottom: "pa" bottom: "b" top: "c" }"#);
        let message = refusal(upgrade_net(
            &mut two_bottoms_after_pad.clone(),
            Path::new("unit.prototxt"),
        ));
        assert!(
            message.contains("layer 'c'") && message.contains("one bottom"),
            "{message}"
        );

        let padding_two_tops = net(r#"input: "a"
            layers { layer { name: "p" type: "padding" } bottom: "a" top: "pa" top: "pb" }
            layers { layer { name: "q" type: "pool" } bottom: "pa" top: "q" }"#);
        let message = refusal(fold_v0_padding_layers(
            &padding_two_tops,
            Path::new("unit.prototxt"),
        ));
        assert!(
            message.contains("padding layer 'p'") && message.contains("one top"),
            "{message}"
        );

        let padding_after_padding = net(r#"input: "a"
            layers { layer { name: "p1" type: "padding" } bottom: "a" top: "b" }
            layers { layer { name: "p2" type: "padding" } bottom: "b" top: "c" }"#);
        let message = refusal(fold_v0_padding_layers(
            &padding_after_padding,
            Path::new("unit.prototxt"),
        ));
        assert!(message.contains("layer 'p2'"), "{message}");
    }

    #[test]
    fn refusals_count_layers_as_the_file_does() {
        let mut legacy = net(r#"input: "a"
            layers { layer { name: "p" type: "padding" pad: 1 } bottom: "a" top: "pa" }
            layers { layer { name: "c" type: "conv" } bottom: "pa" top: "c" }
            layers { layer { name: "bad" type: "nonsense" } bottom: "c" top: "d" }"#);
        let message = refusal(upgrade_net(&mut legacy, Path::new("unit.prototxt")));
        assert!(
            message.starts_with("layer 'bad' (layers[2]): "),
            "{message}"
        );
    }

    #[test]
    fn unset_padding_gives_an_explicit_zero_pad() {
        let folded = fold_v0_padding_layers(
            &net(r#"input: "a"
                layers { layer { name: "p" type: "padding" } bottom: "a" top: "pa" }
                layers { layer { name: "c" type: "conv" } bottom: "pa" top: "c" }"#),
            Path::new("unit.prototxt"),
        )
        .unwrap();
        assert_eq!(folded.layers.len(), 1);
        assert_eq!(folded.layers[0].layer.as_ref().unwrap().pad, Some(0));
        assert_eq!(folded.layers[0].bottom, ["a"]);
    }

    #[test]
    fn v0_net_keeps_only_what_upstream_keeps() {
        let mut legacy = net(
            r#"name: "n" input: "a" input_dim: 1 input_dim: 1 input_dim: 1
            input_dim: 1 force_backward: true debug_info: true state { phase: TRAIN }
            layers { layer { name: "r" type: "relu" } bottom: "a" top: "r" }
            layers { name: "v1" type: RELU bottom: "r" top: "s" blobs_lr: 3 }"#,
        );
        let mut cx = Context::new(Path::new("unit.prototxt"), None);
        let upgraded = upgrade_v0_net(&legacy, &mut cx).unwrap();
        assert!(cx.problems.is_empty());
        assert_eq!(upgraded.name.as_deref(), Some("n"));
        assert_eq!(upgraded.input, ["a"]);
        assert_eq!(upgraded.input_dim, [1, 1, 1, 1]);
        assert_eq!(upgraded.force_backward, Some(true));
        assert_eq!(upgraded.debug_info, None);
        assert_eq!(upgraded.state, None);
        // The entry without a V0 layer keeps only its connections.
        let v1 = &upgraded.layers[1];
        assert_eq!(
            v1,
            &V1LayerParameter {
                bottom: vec!["r".into()],
                top: vec!["s".into()],
                ..Default::default()
            }
        );
        legacy.layers.truncate(1);
        assert!(upgrade_net(&mut legacy, Path::new("unit.prototxt")).unwrap());
        assert_eq!(legacy.layer[1].r#type.as_deref(), Some("ReLU"));
    }

    #[test]
    fn unknown_v0_pool_method_is_a_problem_not_a_refusal() {
        let mut legacy = net(r#"input: "a"
            layers { layer { name: "p" type: "pool" kernelsize: 2 } bottom: "a" top: "p" }"#);
        legacy.layers[0].layer.as_mut().unwrap().pool = Some(7);
        let report = upgrade_net_report(&mut legacy, Path::new("unit.prototxt")).unwrap();
        assert_eq!(
            report.problems,
            ["layer 'p' (layers[0]): Unknown pool method 7"]
        );
        let pooling = legacy.layer[0].pooling_param.as_ref().unwrap();
        assert_eq!((pooling.pool, pooling.kernel_size), (None, Some(2)));
    }

    #[test]
    fn v0_layer_left_in_a_v1_layer_is_a_problem() {
        let mut cx = Context::new(Path::new("unit.prototxt"), None);
        let v1 = V1LayerParameter {
            name: Some("odd".into()),
            r#type: Some(LayerType::Relu as i32),
            layer: Some(V0LayerParameter::default()),
            ..Default::default()
        };
        let layer = upgrade_v1_layer(v1, 0, &mut cx).unwrap();
        assert_eq!(layer.r#type.as_deref(), Some("ReLU"));
        assert_eq!(cx.problems.len(), 1);
        assert!(cx.problems[0].contains("Input NetParameter has V0 layer -- ignoring."));
    }

    #[test]
    fn unknown_share_mode_and_solver_type_are_refusals() {
        let mut cx = Context::new(Path::new("unit.prototxt"), Some("net_param".into()));
        let v1 = V1LayerParameter {
            name: Some("shared".into()),
            blob_share_mode: vec![5],
            ..Default::default()
        };
        let message = refusal(upgrade_v1_layer(v1, 3, &mut cx));
        assert!(
            message.starts_with("net_param: layer 'shared' (layers[3])"),
            "{message}"
        );
        assert!(message.contains("blob_share_mode"), "{message}");

        let mut solver = SolverParameter {
            solver_type: Some(42),
            ..Default::default()
        };
        let message = refusal(upgrade_solver(&mut solver, Path::new("unit.prototxt")));
        assert!(
            message.contains("solver_type") && message.contains("42"),
            "{message}"
        );
    }
}
