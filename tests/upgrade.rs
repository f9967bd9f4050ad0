//! Legacy net and solver upgrades (src/proto/upgrade.rs), checked against hand-written
//! current-format fixtures (tests/data/legacy/), the current-format zoo nets, and upstream's own
//! net-initialisation log.

use rcaffe::proto::caffe::{solver_parameter::SolverType, v1_layer_parameter::LayerType};
use rcaffe::proto::caffe::{
    LayerParameter, NetParameter, NetStateRule, Phase, SolverParameter, V1LayerParameter,
};
use rcaffe::proto::upgrade::{
    fold_v0_padding_layers, net_needs_upgrade, upgrade_net, upgrade_net_file, upgrade_net_report,
    upgrade_solver, upgrade_solver_file, v0_layer_type, v1_layer_type_name,
};
use rcaffe::proto::{
    parse_text, print_text, read_net, read_net_as_written, read_solver, read_solver_as_written,
    ProtoError,
};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Once;

const ZOO: &str = "../shared/caffe-zoo";

fn legacy(name: &str) -> PathBuf {
    Path::new("tests/data/legacy").join(name)
}

/// Parses a net without upgrading it.
fn parse_net(path: &Path) -> NetParameter {
    read_net_as_written(path).unwrap()
}

fn parse_solver(path: &Path) -> SolverParameter {
    read_solver_as_written(path).unwrap()
}

/// Compares as text first, for a readable diff, then field for field.
fn assert_net_eq(actual: &NetParameter, expected: &NetParameter) {
    assert_eq!(print_text(actual), print_text(expected));
    assert_eq!(actual, expected);
}

fn invalid_message(error: ProtoError) -> (PathBuf, String) {
    match error {
        ProtoError::Invalid { path, message } => (path, message),
        other => panic!("expected ProtoError::Invalid, got {other:?}"),
    }
}

fn layer<'a>(net: &'a NetParameter, name: &str) -> &'a LayerParameter {
    net.layer
        .iter()
        .find(|l| l.name() == name)
        .unwrap_or_else(|| panic!("no layer {name}"))
}

fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rcaffe-upgrade-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// Log capture: each test runs on its own thread, so records are kept per thread.
thread_local! {
    static CAPTURED: RefCell<Vec<(log::Level, String)>> = const { RefCell::new(Vec::new()) };
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        CAPTURED.with(|c| {
            c.borrow_mut()
                .push((record.level(), record.args().to_string()))
        });
    }
    fn flush(&self) {}
}

/// Runs `f`, returning what it logged on this thread.
fn logged<T>(f: impl FnOnce() -> T) -> (T, Vec<(log::Level, String)>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_boxed_logger(Box::new(Capture)).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
    CAPTURED.with(|c| c.borrow_mut().clear());
    let value = f();
    (value, CAPTURED.with(|c| c.borrow_mut().drain(..).collect()))
}

// ---- V0 → current ------------------------------------------------------------------------

#[test]
fn v0_padding_layers_fold_into_conv_and_pool() {
    let input = legacy("v0_padding.prototxt");
    let net = read_net(&input).unwrap();
    assert_net_eq(&net, &parse_net(&legacy("v0_padding_expected.prototxt")));
}

#[test]
fn v0_padding_fold_alone_matches_upstream_step_and_is_idempotent() {
    let input = legacy("v0_padding.prototxt");
    let raw = parse_net(&input);
    let folded = fold_v0_padding_layers(&raw, &input).unwrap();
    let names: Vec<&str> = folded
        .layers
        .iter()
        .map(|l| l.layer.as_ref().unwrap().name())
        .collect();
    assert_eq!(names, ["images", "convA", "convB", "poolA", "fc", "loss"]);
    let conv_b = &folded.layers[2];
    assert_eq!(conv_b.bottom, ["img"]);
    assert_eq!(conv_b.layer.as_ref().unwrap().pad, Some(1));
    let pool = &folded.layers[3];
    assert_eq!(pool.bottom, ["convA"]);
    assert_eq!(pool.layer.as_ref().unwrap().pad, Some(2));
    // Still V0, unchanged otherwise.
    assert_eq!(folded.name, raw.name);
    assert_eq!(folded.layers[0], raw.layers[0]);
    assert_eq!(fold_v0_padding_layers(&folded, &input).unwrap(), folded);
}

#[test]
fn v0_every_field_and_type_lands_where_upstream_puts_it() {
    let input = legacy("v0_all_fields.prototxt");
    let (net, logs) = logged(|| read_net(&input).unwrap());
    assert_net_eq(&net, &parse_net(&legacy("v0_all_fields_expected.prototxt")));
    let messages: Vec<&str> = logs.iter().map(|(_, m)| m.as_str()).collect();
    let path = input.display().to_string();
    for expected in [
        format!(
            "Attempting to upgrade input file specified using deprecated V0LayerParameter: {path}"
        ),
        "Successfully upgraded file specified using deprecated V0LayerParameter".to_string(),
        format!(
            "Attempting to upgrade input file specified using deprecated V1LayerParameter: {path}"
        ),
        "Successfully upgraded file specified using deprecated V1LayerParameter".to_string(),
        format!("Attempting to upgrade input file specified using deprecated input fields: {path}"),
        "Successfully upgraded file specified using deprecated input fields.".to_string(),
    ] {
        assert!(
            messages.contains(&expected.as_str()),
            "missing log line {expected:?} in {messages:#?}"
        );
    }
    assert!(
        !logs.iter().any(|(level, _)| *level == log::Level::Error),
        "{logs:#?}"
    );
}

#[test]
fn v0_type_names_map_to_v1_types() {
    let table = [
        ("accuracy", LayerType::Accuracy),
        ("bnll", LayerType::Bnll),
        ("concat", LayerType::Concat),
        ("conv", LayerType::Convolution),
        ("data", LayerType::Data),
        ("dropout", LayerType::Dropout),
        ("euclidean_loss", LayerType::EuclideanLoss),
        ("flatten", LayerType::Flatten),
        ("hdf5_data", LayerType::Hdf5Data),
        ("hdf5_output", LayerType::Hdf5Output),
        ("im2col", LayerType::Im2col),
        ("images", LayerType::ImageData),
        ("infogain_loss", LayerType::InfogainLoss),
        ("innerproduct", LayerType::InnerProduct),
        ("lrn", LayerType::Lrn),
        (
            "multinomial_logistic_loss",
            LayerType::MultinomialLogisticLoss,
        ),
        ("pool", LayerType::Pooling),
        ("relu", LayerType::Relu),
        ("sigmoid", LayerType::Sigmoid),
        ("softmax", LayerType::Softmax),
        ("softmax_loss", LayerType::SoftmaxLoss),
        ("split", LayerType::Split),
        ("tanh", LayerType::Tanh),
        ("window_data", LayerType::WindowData),
    ];
    for (name, expected) in table {
        assert_eq!(v0_layer_type(name), Some(expected), "{name}");
    }
    for unknown in ["padding", "Convolution", "CONV", "swish", ""] {
        assert_eq!(v0_layer_type(unknown), None, "{unknown}");
    }
}

#[test]
fn v0_unknown_layer_type_is_refused_naming_layer_and_field() {
    let input = legacy("v0_unknown_type.prototxt");
    let (path, message) = invalid_message(read_net(&input).unwrap_err());
    assert_eq!(path, input);
    assert!(message.contains("'squash'"), "{message}");
    assert!(message.contains("layers[1]"), "{message}");
    assert!(message.contains("'swish'"), "{message}");
    assert!(message.contains("'type'"), "{message}");
}

#[test]
fn v0_padding_into_non_conv_layer_is_refused() {
    let input = legacy("v0_padding_into_relu.prototxt");
    let (path, message) = invalid_message(read_net(&input).unwrap_err());
    assert_eq!(path, input);
    assert!(message.contains("'rectify'"), "{message}");
    assert!(message.contains("'pad'"), "{message}");
    assert!(message.contains("non-convolutional"), "{message}");
}

#[test]
fn v0_unknown_bottom_blob_is_refused() {
    let input = legacy("v0_unknown_bottom.prototxt");
    let (_, message) = invalid_message(read_net(&input).unwrap_err());
    assert!(message.contains("'orphan'"), "{message}");
    assert!(message.contains("'nowhere'"), "{message}");
    assert!(message.contains("'bottom'"), "{message}");
}

#[test]
fn v0_misplaced_field_is_dropped_and_reported_as_upstream_does() {
    let input = legacy("v0_misplaced_field.prototxt");
    let mut net = parse_net(&input);
    let (report, logs) = logged(|| upgrade_net_report(&mut net, &input).unwrap());
    assert!(report.changed);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("'rectify'"));
    assert!(report.problems[0].contains("Unknown parameter num_output for layer type relu"));
    assert!(logs.iter().any(|(level, m)| *level == log::Level::Error
        && m.starts_with("Warning: had one or more problems upgrading V0NetParameter")));
    let expected: NetParameter = parse_text(
        r#"name: "Misplaced"
           layer { name: "rectify" type: "ReLU" bottom: "x" top: "r" }"#,
        Path::new("inline"),
    )
    .unwrap();
    assert_net_eq(&net, &expected);
    // On read the upgrade carries on, as upstream's ReadNetParamsFromTextFileOrDie does.
    assert_net_eq(&read_net(&input).unwrap(), &expected);
}

// ---- V1 → current ------------------------------------------------------------------------

#[test]
fn v1_every_type_and_parameter_upgrades() {
    let input = legacy("v1_all_types.prototxt");
    let (net, logs) = logged(|| read_net(&input).unwrap());
    assert_net_eq(&net, &parse_net(&legacy("v1_all_types_expected.prototxt")));
    let messages: Vec<&str> = logs.iter().map(|(_, m)| m.as_str()).collect();
    let path = input.display().to_string();
    let transform = format!(
        "Attempting to upgrade input file specified using deprecated transformation parameters: {path}"
    );
    assert!(messages.contains(&transform.as_str()), "{messages:#?}");
    assert!(messages.contains(
        &"Successfully upgraded file specified using deprecated data transformation parameters."
    ));
    assert!(!messages.iter().any(|m| m.contains("V0LayerParameter")));
}

#[test]
fn v1_layer_type_names_cover_every_enum_value() {
    let table = [
        (LayerType::None, ""),
        (LayerType::Absval, "AbsVal"),
        (LayerType::Accuracy, "Accuracy"),
        (LayerType::Argmax, "ArgMax"),
        (LayerType::Bnll, "BNLL"),
        (LayerType::Concat, "Concat"),
        (LayerType::ContrastiveLoss, "ContrastiveLoss"),
        (LayerType::Convolution, "Convolution"),
        (LayerType::Deconvolution, "Deconvolution"),
        (LayerType::Data, "Data"),
        (LayerType::Dropout, "Dropout"),
        (LayerType::DummyData, "DummyData"),
        (LayerType::EuclideanLoss, "EuclideanLoss"),
        (LayerType::Eltwise, "Eltwise"),
        (LayerType::Exp, "Exp"),
        (LayerType::Flatten, "Flatten"),
        (LayerType::Hdf5Data, "HDF5Data"),
        (LayerType::Hdf5Output, "HDF5Output"),
        (LayerType::HingeLoss, "HingeLoss"),
        (LayerType::Im2col, "Im2col"),
        (LayerType::ImageData, "ImageData"),
        (LayerType::InfogainLoss, "InfogainLoss"),
        (LayerType::InnerProduct, "InnerProduct"),
        (LayerType::Lrn, "LRN"),
        (LayerType::MemoryData, "MemoryData"),
        (
            LayerType::MultinomialLogisticLoss,
            "MultinomialLogisticLoss",
        ),
        (LayerType::Mvn, "MVN"),
        (LayerType::Pooling, "Pooling"),
        (LayerType::Power, "Power"),
        (LayerType::Relu, "ReLU"),
        (LayerType::Sigmoid, "Sigmoid"),
        (
            LayerType::SigmoidCrossEntropyLoss,
            "SigmoidCrossEntropyLoss",
        ),
        (LayerType::Silence, "Silence"),
        (LayerType::Softmax, "Softmax"),
        (LayerType::SoftmaxLoss, "SoftmaxWithLoss"),
        (LayerType::Split, "Split"),
        (LayerType::Slice, "Slice"),
        (LayerType::Tanh, "TanH"),
        (LayerType::WindowData, "WindowData"),
        (LayerType::Threshold, "Threshold"),
    ];
    // Every value of the enum (0..=39, per proto/caffe.proto) is in the table.
    let all: Vec<LayerType> = (0..64)
        .filter_map(|v| LayerType::try_from(v).ok())
        .collect();
    assert_eq!(all.len(), table.len());
    for layer_type in all {
        let (_, name) = table.iter().find(|(t, _)| *t == layer_type).unwrap();
        assert_eq!(v1_layer_type_name(layer_type), *name, "{layer_type:?}");
    }
}

#[test]
fn v1_unknown_enum_value_is_refused() {
    // Only a binary file can hold an enum number the schema lacks; build it directly.
    let mut net = NetParameter {
        layers: vec![V1LayerParameter {
            name: Some("odd".into()),
            r#type: Some(99),
            ..Default::default()
        }],
        ..Default::default()
    };
    let (path, message) =
        invalid_message(upgrade_net(&mut net, Path::new("weights.caffemodel")).unwrap_err());
    assert_eq!(path, Path::new("weights.caffemodel"));
    assert!(
        message.contains("'odd'") && message.contains("99"),
        "{message}"
    );
}

#[test]
fn v1_mixed_with_layer_is_refused() {
    let input = legacy("v1_layer_and_layers.prototxt");
    let (path, message) = invalid_message(read_net(&input).unwrap_err());
    assert_eq!(path, input);
    assert!(
        message.starts_with("Refusing to upgrade inconsistent NetParameter input"),
        "{message}"
    );
    assert!(message.contains("both 'layer' and 'layers'"), "{message}");
}

// ---- top-level inputs ----------------------------------------------------------------------

#[test]
fn input_dims_become_a_leading_input_layer() {
    let net = read_net(&legacy("input_dim.prototxt")).unwrap();
    assert_net_eq(&net, &parse_net(&legacy("input_dim_expected.prototxt")));
}

#[test]
fn input_shapes_become_a_leading_input_layer() {
    let net = read_net(&legacy("input_shape.prototxt")).unwrap();
    assert_net_eq(&net, &parse_net(&legacy("input_shape_expected.prototxt")));
}

#[test]
fn inputs_without_shapes_are_just_dropped() {
    // Legacy weight files name their inputs without shapes; upstream only strips them.
    let mut net: NetParameter = parse_text(
        r#"name: "Weights" input: "data" layer { name: "fc" type: "InnerProduct" bottom: "data" }"#,
        Path::new("inline"),
    )
    .unwrap();
    assert!(upgrade_net(&mut net, Path::new("inline")).unwrap());
    assert!(net.input.is_empty());
    assert_eq!(net.layer.len(), 1);
    assert_eq!(net.layer[0].name(), "fc");
}

#[test]
fn too_few_input_dims_are_refused() {
    let mut net: NetParameter = parse_text(
        r#"input: "a" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4 input: "b" input_dim: 5"#,
        Path::new("short.prototxt"),
    )
    .unwrap();
    let (path, message) =
        invalid_message(upgrade_net(&mut net, Path::new("short.prototxt")).unwrap_err());
    assert_eq!(path, Path::new("short.prototxt"));
    assert!(message.contains("input_dim"), "{message}");
}

// ---- BatchNorm -------------------------------------------------------------------------------

#[test]
fn batch_norm_param_specs_get_zero_multipliers() {
    let input = legacy("batchnorm_legacy.prototxt");
    let (net, logs) = logged(|| read_net(&input).unwrap());
    assert_net_eq(
        &net,
        &parse_net(&legacy("batchnorm_legacy_expected.prototxt")),
    );
    let messages: Vec<&str> = logs.iter().map(|(_, m)| m.as_str()).collect();
    let attempt = format!(
        "Attempting to upgrade batch norm layers using deprecated params: {}",
        input.display()
    );
    assert_eq!(
        messages,
        [
            attempt.as_str(),
            "Successfully upgraded batch norm layers using deprecated params."
        ]
    );
}

/// The zoo's BatchNorm net against upstream's own log of the net it built from that file: every
/// layer upstream printed (the TRAIN-phase ones, after its upgrade) equals ours, and so do the
/// upgrade log lines.
#[test]
fn zoo_batch_norm_net_matches_upstream_netinit_log() {
    let zoo_file =
        Path::new(ZOO).join("examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt");
    let (net, logs) = logged(|| read_net(&zoo_file).unwrap());

    let log_path = Path::new(
        "../shared/reference/upstream/netinit/cifar10__cifar10_full_sigmoid_train_test_bn.TRAIN.log",
    );
    let log_text = std::fs::read_to_string(log_path).unwrap();
    let mut lines = log_text.lines();
    let mut upstream_upgrade_messages = Vec::new();
    for line in lines.by_ref() {
        if line.contains("upgrade_proto.cpp") {
            let message = line.split_once("] ").unwrap().1;
            upstream_upgrade_messages
                .push(message.replace("examples/cifar10/", &format!("{ZOO}/examples/cifar10/")));
        }
        if line.ends_with("Initializing net from parameters: ") {
            break;
        }
    }
    let block: Vec<&str> = lines
        .take_while(|l| {
            !(l.len() > 9 && l.starts_with('I') && l[1..9].bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    let upstream: NetParameter = parse_text(&block.join("\n"), log_path).unwrap();

    assert_eq!(
        upstream
            .layer
            .iter()
            .filter(|l| l.r#type() == "BatchNorm")
            .count(),
        3
    );
    for theirs in &upstream.layer {
        assert!(
            net.layer.contains(theirs),
            "upstream's layer {} differs from ours:\n{}",
            theirs.name(),
            print_text(theirs)
        );
    }
    let ours: Vec<String> = logs.into_iter().map(|(_, m)| m).collect();
    assert_eq!(upstream_upgrade_messages.len(), 2);
    assert_eq!(ours, upstream_upgrade_messages);
}

// ---- solvers -----------------------------------------------------------------------------------

#[test]
fn solver_type_enum_becomes_type_string_for_every_value() {
    let cases = [
        ("SGD", "SGD"),
        ("NESTEROV", "Nesterov"),
        ("ADAGRAD", "AdaGrad"),
        ("RMSPROP", "RMSProp"),
        ("ADADELTA", "AdaDelta"),
        ("ADAM", "Adam"),
    ];
    // The table covers the whole enum.
    assert_eq!(
        (0..16).filter(|v| SolverType::try_from(*v).is_ok()).count(),
        cases.len()
    );
    let common = r#"net: "nets/train.prototxt" weights: "a.caffemodel" weights: "b.caffemodel"
        test_iter: 10 test_interval: 50 base_lr: 0.02 momentum: 0.5 weight_decay: 0.001
        lr_policy: "step" gamma: 0.1 stepsize: 100 max_iter: 300 snapshot_prefix: "out/s"
        solver_mode: CPU "#;
    for (old, new) in cases {
        let origin = Path::new("solver.prototxt");
        let mut solver: SolverParameter =
            parse_text(&format!("{common} solver_type: {old}"), origin).unwrap();
        let expected: SolverParameter =
            parse_text(&format!("{common} type: \"{new}\""), origin).unwrap();
        let (changed, logs) = logged(|| upgrade_solver(&mut solver, origin).unwrap());
        assert!(changed);
        assert_eq!(solver, expected, "{old}");
        assert_eq!(solver.solver_type, None);
        assert!(logs.iter().any(|(_, m)| m
            == "Attempting to upgrade input file specified using deprecated 'solver_type' field (enum)': solver.prototxt"));
        assert!(
            !upgrade_solver(&mut solver, origin).unwrap(),
            "second upgrade changes nothing"
        );
    }
}

#[test]
fn solver_with_both_type_fields_is_refused() {
    let input = legacy("solver_both_types.prototxt");
    let (path, message) = invalid_message(read_solver(&input).unwrap_err());
    assert_eq!(path, input);
    assert!(
        message.contains("solver_type") && message.contains("type"),
        "{message}"
    );
    assert!(message.contains("cannot be both specified"), "{message}");
}

#[test]
fn solver_inline_nets_of_every_legacy_form_are_upgraded() {
    let input = legacy("solver_legacy.prototxt");
    let (solver, logs) = logged(|| read_solver(&input).unwrap());
    let expected = parse_solver(&legacy("solver_legacy_expected.prototxt"));
    assert_eq!(print_text(&solver), print_text(&expected));
    assert_eq!(solver, expected);
    // The log names the inline net being upgraded.
    let path = input.display();
    let v0 = format!(
        "Attempting to upgrade input file specified using deprecated V0LayerParameter: {path} (train_net_param)"
    );
    let v1 = format!(
        "Attempting to upgrade input file specified using deprecated V1LayerParameter: {path} (test_net_param[0])"
    );
    let messages: Vec<&str> = logs.iter().map(|(_, m)| m.as_str()).collect();
    assert!(messages.contains(&v0.as_str()), "{messages:#?}");
    assert!(messages.contains(&v1.as_str()), "{messages:#?}");
}

#[test]
fn inline_net_refusal_names_the_solver_field() {
    let origin = Path::new("inline_solver.prototxt");
    let mut solver: SolverParameter = parse_text(
        r#"test_net_param { name: "ok" }
           test_net_param { layers { layer { name: "weird" type: "mystery" } } }"#,
        origin,
    )
    .unwrap();
    let (path, message) = invalid_message(upgrade_solver(&mut solver, origin).unwrap_err());
    assert_eq!(path, origin);
    assert!(message.starts_with("test_net_param[1]: "), "{message}");
    assert!(
        message.contains("'weird'") && message.contains("'mystery'"),
        "{message}"
    );
}

/// The zoo's consolidated LeNet solver holds its net inline in V1 form. Upgraded, it must name
/// the current types, turn blobs_lr into lr_mult, keep the stage rules, and equal the zoo's
/// current-format lenet_train_test.prototxt wherever the two nets describe the same layer.
#[test]
fn consolidated_lenet_solver_matches_current_zoo_net() {
    let solver =
        read_solver(&Path::new(ZOO).join("examples/mnist/lenet_consolidated_solver.prototxt"))
            .unwrap();
    assert_eq!(solver.r#type, None);
    assert!(solver.train_net_param.is_none() && solver.test_net_param.is_empty());
    let net = solver.net_param.as_ref().unwrap();
    assert!(net.layers.is_empty(), "V1 layers left behind");
    assert!(!net_needs_upgrade(net));
    let types: Vec<&str> = net.layer.iter().map(|l| l.r#type()).collect();
    assert_eq!(
        types,
        [
            "Data",
            "Data",
            "Data",
            "Convolution",
            "Pooling",
            "Convolution",
            "Pooling",
            "InnerProduct",
            "ReLU",
            "InnerProduct",
            "Accuracy",
            "SoftmaxWithLoss"
        ]
    );
    for name in ["conv1", "conv2", "ip1", "ip2"] {
        let specs: Vec<(Option<f32>, Option<f32>)> = layer(net, name)
            .param
            .iter()
            .map(|p| (p.lr_mult, p.decay_mult))
            .collect();
        assert_eq!(specs, [(Some(1.0), None), (Some(2.0), None)], "{name}");
    }
    let rule = |phase: Phase, stage: Option<&str>| NetStateRule {
        phase: Some(phase as i32),
        stage: stage.into_iter().map(String::from).collect(),
        ..Default::default()
    };
    assert_eq!(net.layer[0].include, [rule(Phase::Train, None)]);
    assert_eq!(
        net.layer[1].include,
        [rule(Phase::Test, Some("test-on-test-set"))]
    );
    assert_eq!(
        net.layer[2].include,
        [rule(Phase::Test, Some("test-on-train-set"))]
    );

    let zoo = read_net(&Path::new(ZOO).join("examples/mnist/lenet_train_test.prototxt")).unwrap();
    assert_eq!(net.name, zoo.name);
    // Train data layer: identical.
    assert_eq!(net.layer[0], zoo.layer[0]);
    // The zoo's test data layer has no stage.
    let mut on_test_set = net.layer[1].clone();
    on_test_set.include[0].stage.clear();
    assert_eq!(on_test_set, zoo.layer[1]);
    // The extra test net reads the training set.
    let mut on_train_set = net.layer[2].clone();
    on_train_set.include[0].stage.clear();
    on_train_set.data_param.as_mut().unwrap().source =
        zoo.layer[1].data_param.as_ref().unwrap().source.clone();
    assert_eq!(on_train_set, zoo.layer[1]);
    // Compute layers: identical, except that the zoo restricts accuracy to the TEST phase.
    for ours in &net.layer[3..] {
        let theirs = layer(&zoo, ours.name());
        let mut ours = ours.clone();
        if ours.name() == "accuracy" {
            ours.include = vec![rule(Phase::Test, None)];
        }
        assert_eq!(&ours, theirs, "layer {}", theirs.name());
    }
    assert_eq!(net.layer.len() - 1, zoo.layer.len());
}

// ---- already current -------------------------------------------------------------------------

#[test]
fn current_zoo_files_are_left_alone() {
    for file in [
        "examples/mnist/lenet_train_test.prototxt",
        "examples/mnist/lenet.prototxt",
        "examples/cifar10/cifar10_quick_train_test.prototxt",
    ] {
        let path = Path::new(ZOO).join(file);
        let raw = parse_net(&path);
        assert!(!net_needs_upgrade(&raw), "{file}");
        let mut upgraded = raw.clone();
        let (changed, logs) = logged(|| upgrade_net(&mut upgraded, &path).unwrap());
        assert!(!changed, "{file}");
        assert!(logs.is_empty(), "{file}: {logs:?}");
        assert_eq!(upgraded, raw, "{file}");
    }
    let path = Path::new(ZOO).join("examples/mnist/lenet_solver_adam.prototxt");
    let raw = parse_solver(&path);
    assert_eq!(read_solver(&path).unwrap(), raw);
}

#[test]
fn upgrading_twice_changes_nothing_more() {
    for name in [
        "v0_all_fields.prototxt",
        "v1_all_types.prototxt",
        "v0_padding.prototxt",
    ] {
        let path = legacy(name);
        let mut net = read_net(&path).unwrap();
        let once = net.clone();
        assert!(!net_needs_upgrade(&net), "{name}");
        assert!(!upgrade_net(&mut net, &path).unwrap(), "{name}");
        assert_eq!(net, once, "{name}");
    }
    // An upgraded BatchNorm net still has its three specs, so upstream's predicate still fires
    // and the step logs again, as upstream's does on every read, but nothing changes.
    let path = legacy("batchnorm_legacy.prototxt");
    let mut net = read_net(&path).unwrap();
    let once = net.clone();
    assert!(net_needs_upgrade(&net));
    let (changed, logs) = logged(|| upgrade_net(&mut net, &path).unwrap());
    assert!(!changed);
    assert_eq!(logs.len(), 2);
    assert_eq!(net, once);
}

// ---- the file tools ------------------------------------------------------------------------------

#[test]
fn upgrade_net_file_writes_the_upgraded_net_atomically() {
    let dir = scratch_dir("net-file");
    for name in [
        "v0_padding.prototxt",
        "v1_all_types.prototxt",
        "input_dim.prototxt",
    ] {
        let input = legacy(name);
        let output = dir.join(name);
        upgrade_net_file(&input, &output).unwrap();
        let written = parse_net(&output);
        assert!(
            written.layers.is_empty() && written.input.is_empty(),
            "{name}"
        );
        assert_net_eq(&written, &read_net(&input).unwrap());
        assert!(!dir.join(format!("{name}.tmp")).exists());
    }
    // A current file comes out unchanged, and an existing output is replaced.
    let current = Path::new(ZOO).join("examples/mnist/lenet.prototxt");
    let output = dir.join("v0_padding.prototxt");
    upgrade_net_file(&current, &output).unwrap();
    assert_net_eq(&parse_net(&output), &parse_net(&current));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn upgrade_net_file_refusal_writes_nothing() {
    let dir = scratch_dir("net-refuse");
    let output = dir.join("out.prototxt");
    let input = legacy("v0_unknown_type.prototxt");
    let (path, message) = invalid_message(upgrade_net_file(&input, &output).unwrap_err());
    assert_eq!(path, input);
    assert!(message.contains("'squash'"), "{message}");
    assert!(!output.exists() && !dir.join("out.prototxt.tmp").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn upgrade_net_file_with_problems_writes_then_reports() {
    // Upstream's tool writes its output and then exits non-zero.
    let dir = scratch_dir("net-problems");
    let output = dir.join("out.prototxt");
    let input = legacy("v0_misplaced_field.prototxt");
    let (_, message) = invalid_message(upgrade_net_file(&input, &output).unwrap_err());
    assert!(message.contains("num_output"), "{message}");
    assert_eq!(parse_net(&output).layer[0].r#type(), "ReLU");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn upgrade_solver_file_round_trips() {
    let dir = scratch_dir("solver-file");
    let input = legacy("solver_legacy.prototxt");
    let output = dir.join("solver.prototxt");
    upgrade_solver_file(&input, &output).unwrap();
    let written = parse_solver(&output);
    assert_eq!(
        written,
        parse_solver(&legacy("solver_legacy_expected.prototxt"))
    );
    assert_eq!(written, read_solver(&input).unwrap());
    assert!(!dir.join("solver.prototxt.tmp").exists());

    let refused = dir.join("refused.prototxt");
    let (_, message) = invalid_message(
        upgrade_solver_file(&legacy("solver_both_types.prototxt"), &refused).unwrap_err(),
    );
    assert!(message.contains("cannot be both specified"), "{message}");
    assert!(!refused.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn upgrade_file_tools_report_unreadable_input_and_output() {
    let dir = scratch_dir("io");
    let missing = dir.join("missing.prototxt");
    assert!(matches!(
        upgrade_net_file(&missing, &dir.join("out.prototxt")),
        Err(ProtoError::Read { path, .. }) if path == missing
    ));
    let nowhere = dir.join("no/such/dir/out.prototxt");
    assert!(matches!(
        upgrade_solver_file(&legacy("solver_legacy.prototxt"), &nowhere),
        Err(ProtoError::Write { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
