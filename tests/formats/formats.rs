//! Caffe's formats in and out: every zoo prototxt, the reference binary files, and bad input.

use prost::Message;
use rcaffe::proto::caffe::{BlobProto, BlobShape, NetParameter, SolverParameter, SolverState};
use rcaffe::proto::{
    blob_proto_shape, parse_text, print_text, read_blob_proto, read_caffemodel, read_net,
    read_solver, read_solverstate, resolve_solver_nets, write_binary, FileKind, ProtoError,
};
use std::path::{Path, PathBuf};

const ZOO: &str = "../shared/caffe-zoo";
const UPSTREAM: &str = "../shared/reference/upstream";

fn prototxt_files(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(prototxt_files(&path));
        } else if path.extension().is_some_and(|e| e == "prototxt") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn is_solver(path: &Path) -> bool {
    path.file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .contains("solver")
}

#[test]
fn every_zoo_prototxt_parses_and_prints_back_to_the_same_message() {
    let files = prototxt_files(Path::new(ZOO));
    assert!(files.len() >= 37, "found only {} zoo files", files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        if is_solver(&path) {
            let solver: SolverParameter = parse_text(&text, &path).unwrap();
            let again: SolverParameter = parse_text(&print_text(&solver), &path).unwrap();
            assert_eq!(again, solver, "{}", path.display());
            read_solver(&path).unwrap_or_else(|e| panic!("{e}"));
        } else {
            let net: NetParameter = parse_text(&text, &path).unwrap();
            assert!(!net.layer.is_empty(), "{}: no layers", path.display());
            let again: NetParameter = parse_text(&print_text(&net), &path).unwrap();
            assert_eq!(again, net, "{}", path.display());
        }
    }
}

#[test]
fn zoo_values_arrive_in_the_right_fields() {
    let net = read_net(&Path::new(ZOO).join("examples/mnist/lenet_train_test.prototxt")).unwrap();
    assert_eq!(net.name(), "LeNet");
    let conv1 = net.layer.iter().find(|l| l.name() == "conv1").unwrap();
    assert_eq!(conv1.r#type(), "Convolution");
    let conv = conv1.convolution_param.as_ref().unwrap();
    assert_eq!(conv.num_output(), 20);
    assert_eq!(conv.kernel_size, vec![5]);
    assert_eq!(conv.weight_filler.as_ref().unwrap().r#type(), "xavier");
    assert_eq!(conv1.param.len(), 2);
    assert_eq!(conv1.param[1].lr_mult(), 2.0);
    let solver = read_solver(&Path::new(ZOO).join("examples/mnist/lenet_solver.prototxt")).unwrap();
    assert_eq!(solver.base_lr(), 0.01f32);
    assert_eq!(solver.lr_policy(), "inv");
    assert_eq!(solver.gamma(), 0.0001f32);
    assert_eq!(solver.power(), 0.75f32);
    assert_eq!(solver.max_iter(), 10000);
    assert_eq!(solver.test_iter, vec![100]);
    assert_eq!(
        solver.solver_mode(),
        rcaffe::proto::caffe::solver_parameter::SolverMode::Gpu
    );
}

#[test]
fn the_paper_fields_read_from_the_reference_solvers() {
    let path = Path::new(UPSTREAM).join("lenet/sgd_triangular2.solver.prototxt");
    let solver = read_solver(&path).unwrap();
    assert_eq!(solver.lr_policy(), "triangular2");
    assert_eq!(solver.max_lr(), 0.006f32);
    assert_eq!(solver.stepsize(), 50);
}

#[test]
fn clr_fields_have_the_numbers_after_upstreams_last() {
    let solver = SolverParameter {
        start_lr_policy: Some(1.5),
        max_lr: Some(0.25),
        ..Default::default()
    };
    // Field 43, fixed32: tag (43 << 3 | 5) = 349 = varint [0xdd, 0x02]; 44 -> 357 = [0xe5, 0x02].
    let bytes = solver.encode_to_vec();
    let mut expected = vec![0xdd, 0x02];
    expected.extend(1.5f32.to_le_bytes());
    expected.extend([0xe5, 0x02]);
    expected.extend(0.25f32.to_le_bytes());
    assert_eq!(bytes, expected);
}

#[test]
fn upstream_caffemodels_load_with_their_layers_and_shapes() {
    let net = read_caffemodel(&Path::new(UPSTREAM).join("lenet/init.caffemodel")).unwrap();
    let with_blobs: Vec<(&str, Vec<Vec<i64>>)> = net
        .layer
        .iter()
        .filter(|l| !l.blobs.is_empty())
        .map(|l| (l.name(), l.blobs.iter().map(blob_proto_shape).collect()))
        .collect();
    assert_eq!(
        with_blobs,
        vec![
            ("conv1", vec![vec![20, 1, 5, 5], vec![20]]),
            ("conv2", vec![vec![50, 20, 5, 5], vec![50]]),
            ("ip1", vec![vec![500, 800], vec![500]]),
            ("ip2", vec![vec![10, 500], vec![10]]),
        ]
    );
    for entry in std::fs::read_dir(UPSTREAM).unwrap() {
        let folder = entry.unwrap().path();
        let model = folder.join("init.caffemodel");
        if model.exists() {
            let net = read_caffemodel(&model).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                net.layer.iter().any(|l| !l.blobs.is_empty()),
                "{}",
                model.display()
            );
        }
    }
}

#[test]
fn a_caffemodel_we_write_decodes_field_for_field_to_what_we_wrote() {
    let original = read_caffemodel(&Path::new(UPSTREAM).join("lenet/init.caffemodel")).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("copy.caffemodel");
    write_binary(&path, &original).unwrap();
    let again = read_caffemodel(&path).unwrap();
    assert_eq!(again, original);
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(folder.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn upstream_solverstate_loads() {
    let state =
        read_solverstate(&Path::new(UPSTREAM).join("lenet/sgd_inv_iter_150.solverstate")).unwrap();
    assert_eq!(state.iter(), 150);
    assert!(state.learned_net().ends_with("sgd_inv_iter_150.caffemodel"));
    // SGD keeps one momentum blob per learnable parameter: LeNet has 8.
    assert_eq!(state.history.len(), 8);
    assert_eq!(blob_proto_shape(&state.history[0]), vec![20, 1, 5, 5]);
}

#[test]
fn mean_files_load_in_both_shape_forms() {
    let upstream =
        read_blob_proto(&Path::new(UPSTREAM).join("fcifar_mini_mean.binaryproto")).unwrap();
    assert_eq!(blob_proto_shape(&upstream), vec![1, 3, 32, 32]);
    assert_eq!(upstream.data.len(), 3 * 32 * 32);

    let folder = tempfile::tempdir().unwrap();
    let legacy = BlobProto {
        num: Some(1),
        channels: Some(3),
        height: Some(2),
        width: Some(4),
        data: (0..24).map(|v| v as f32).collect(),
        ..Default::default()
    };
    let path = folder.path().join("legacy.binaryproto");
    write_binary(&path, &legacy).unwrap();
    let loaded = read_blob_proto(&path).unwrap();
    assert_eq!(blob_proto_shape(&loaded), vec![1, 3, 2, 4]);

    let modern = BlobProto {
        shape: Some(BlobShape { dim: vec![3, 8] }),
        data: (0..24).map(|v| v as f32).collect(),
        ..Default::default()
    };
    write_binary(&path, &modern).unwrap();
    assert_eq!(
        blob_proto_shape(&read_blob_proto(&path).unwrap()),
        vec![3, 8]
    );
}

fn text_error<M: prost_reflect::ReflectMessage + Default + std::fmt::Debug>(text: &str) -> String {
    parse_text::<M>(text, Path::new("models/bad.prototxt"))
        .unwrap_err()
        .to_string()
}

#[test]
fn a_misspelt_field_names_file_line_column_and_message() {
    let error = text_error::<NetParameter>(
        "name: \"x\"\nlayer {\n  name: \"conv\"\n  type: \"Convolution\"\n  convolution_param { num_ouput: 3 }\n}\n",
    );
    assert!(error.starts_with("models/bad.prototxt:5:23: "), "{error}");
    assert!(error.contains("num_ouput"), "{error}");
    assert!(error.contains("caffe.ConvolutionParameter"), "{error}");
    assert!(error.contains("did you mean 'num_output'"), "{error}");
}

#[test]
fn a_wrong_enum_value_lists_the_valid_ones() {
    let error = text_error::<NetParameter>("layer {\n  pooling_param { pool: MEAN }\n}");
    assert!(error.starts_with("models/bad.prototxt:2:25: "), "{error}");
    assert!(error.contains("MEAN"), "{error}");
    assert!(error.contains("MAX, AVE, STOCHASTIC"), "{error}");
    let error = text_error::<SolverParameter>("base_lr: 0.1\nsolver_mode: TPU\n");
    assert!(error.starts_with("models/bad.prototxt:2:14: "), "{error}");
    assert!(error.contains("CPU, GPU"), "{error}");
}

#[test]
fn malformed_text_names_the_token() {
    let error = text_error::<NetParameter>("layer {\n  name: \"a\"\n");
    assert!(error.starts_with("models/bad.prototxt:3:1: "), "{error}");
    assert!(error.contains("end of input"), "{error}");
    let error = text_error::<NetParameter>("layer {\n  name \"a\" }\n  top: x\n");
    assert!(error.starts_with("models/bad.prototxt:2:"), "{error}");
    let error = text_error::<SolverParameter>("base_lr: 0.1\nmax_iter: ten\n");
    assert!(error.starts_with("models/bad.prototxt:2:11: "), "{error}");
    let error = text_error::<SolverParameter>("base_lr: 0.1\nmax_iter: 10\nmax_iter: 20\n");
    assert!(error.starts_with("models/bad.prototxt:3:"), "{error}");
    assert!(error.contains("max_iter"), "{error}");
}

#[test]
fn a_missing_file_is_named_with_what_was_expected_there() {
    let error = read_net(Path::new("no/such/net.prototxt")).unwrap_err();
    assert!(matches!(error, ProtoError::Read { .. }));
    assert!(
        error
            .to_string()
            .starts_with("no/such/net.prototxt: cannot read the net prototxt: "),
        "{error}"
    );
}

#[test]
fn every_reference_file_is_told_apart_by_its_contents() {
    let upstream = Path::new(UPSTREAM);
    for (file, kind) in [
        ("lenet/init.caffemodel", FileKind::Weights),
        ("lenet/sgd_inv_iter_150.caffemodel", FileKind::Weights),
        ("lenet/sgd_inv_iter_150.solverstate", FileKind::SolverState),
        ("fcifar_mini_mean.binaryproto", FileKind::Blob),
        ("lenet/lenet_train_test.prototxt", FileKind::NetPrototxt),
        ("lenet/sgd_inv.solver.prototxt", FileKind::SolverPrototxt),
    ] {
        let bytes = std::fs::read(upstream.join(file)).unwrap();
        assert_eq!(FileKind::of_contents(&bytes), Some(kind), "{file}");
    }
    for path in prototxt_files(Path::new(ZOO)) {
        let kind = if is_solver(&path) {
            FileKind::SolverPrototxt
        } else {
            FileKind::NetPrototxt
        };
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            FileKind::of_contents(&bytes),
            Some(kind),
            "{}",
            path.display()
        );
    }
    // None of Caffe's: nothing, other text, other bytes.
    for bytes in [&b""[..], b"hello world\n", &[0xff, 0x00, 0x13]] {
        assert_eq!(FileKind::of_contents(bytes), None, "{bytes:?}");
    }
}

#[test]
fn a_file_of_another_kind_is_refused_with_what_it_is() {
    use FileKind::*;
    let upstream = Path::new(UPSTREAM);
    let model = upstream.join("lenet/init.caffemodel");
    let state = upstream.join("lenet/sgd_inv_iter_150.solverstate");
    let mean = upstream.join("fcifar_mini_mean.binaryproto");
    let solver = upstream.join("lenet/sgd_inv.solver.prototxt");
    let folder = tempfile::tempdir().unwrap();
    let noise = write_bytes(folder.path(), "noise.prototxt", &[0x00, 0xff, 0xfe, 0x07]);
    let kinds = |error: ProtoError| match error {
        ProtoError::WrongKind {
            found, expected, ..
        } => (found, expected),
        other => panic!("not refused for its kind: {other}"),
    };
    assert_eq!(
        kinds(read_caffemodel(&state).unwrap_err()),
        (Some(SolverState), Weights)
    );
    assert_eq!(
        kinds(read_caffemodel(&mean).unwrap_err()),
        (Some(Blob), Weights)
    );
    assert_eq!(
        kinds(read_caffemodel(&solver).unwrap_err()),
        (Some(SolverPrototxt), Weights)
    );
    assert_eq!(
        kinds(read_solverstate(&model).unwrap_err()),
        (Some(Weights), SolverState)
    );
    assert_eq!(
        kinds(read_blob_proto(&model).unwrap_err()),
        (Some(Weights), Blob)
    );
    assert_eq!(
        kinds(read_net(&model).unwrap_err()),
        (Some(Weights), NetPrototxt)
    );
    assert_eq!(
        kinds(read_net(&solver).unwrap_err()),
        (Some(SolverPrototxt), NetPrototxt)
    );
    assert_eq!(kinds(read_net(&noise).unwrap_err()), (None, NetPrototxt));
    assert_eq!(
        kinds(read_solver(&state).unwrap_err()),
        (Some(SolverState), SolverPrototxt)
    );
    assert_eq!(
        read_caffemodel(&state).unwrap_err().to_string(),
        format!(
            "{} is a solver state (.solverstate), not a model's weights (.caffemodel): resume \
             from it with -snapshot",
            state.display()
        )
    );
    assert_eq!(
        read_net(&noise).unwrap_err().to_string(),
        format!("{} is not text, so not a net prototxt", noise.display())
    );
}

fn write_bytes(folder: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = folder.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn truncated_or_corrupt_binary_files_are_refused_with_the_file_named() {
    let folder = tempfile::tempdir().unwrap();
    let model = std::fs::read(Path::new(UPSTREAM).join("lenet/init.caffemodel")).unwrap();
    for cut in [model.len() / 2, model.len() - 3, 7] {
        let path = write_bytes(folder.path(), "cut.caffemodel", &model[..cut]);
        let error = read_caffemodel(&path).unwrap_err().to_string();
        assert!(error.starts_with(&path.display().to_string()), "{error}");
        assert!(error.contains("caffemodel"), "{error}");
    }
    let path = write_bytes(folder.path(), "empty.caffemodel", &[]);
    assert!(read_caffemodel(&path)
        .unwrap_err()
        .to_string()
        .contains("empty"));

    let state =
        std::fs::read(Path::new(UPSTREAM).join("lenet/sgd_inv_iter_150.solverstate")).unwrap();
    let path = write_bytes(
        folder.path(),
        "cut.solverstate",
        &state[..state.len() - 100],
    );
    let error = read_solverstate(&path).unwrap_err().to_string();
    assert!(
        error.contains("cut.solverstate") && error.contains("solverstate"),
        "{error}"
    );

    let path = write_bytes(folder.path(), "text.binaryproto", b"name: \"not binary\"\n");
    let error = read_blob_proto(&path).unwrap_err().to_string();
    assert!(
        error.contains("text.binaryproto") && error.contains("binaryproto"),
        "{error}"
    );
}

#[test]
fn a_blob_whose_values_do_not_fill_its_shape_is_refused() {
    let folder = tempfile::tempdir().unwrap();
    let short = BlobProto {
        shape: Some(BlobShape { dim: vec![2, 3] }),
        data: vec![1.0; 5],
        ..Default::default()
    };
    let path = folder.path().join("short.binaryproto");
    write_binary(&path, &short).unwrap();
    let error = read_blob_proto(&path).unwrap_err().to_string();
    assert!(error.contains("needs 6 values but 5 are stored"), "{error}");

    let mut net = read_caffemodel(&Path::new(UPSTREAM).join("lenet/init.caffemodel")).unwrap();
    let ip1 = net.layer.iter_mut().find(|l| l.name() == "ip1").unwrap();
    ip1.blobs[0].data.truncate(1000);
    let path = folder.path().join("damaged.caffemodel");
    write_binary(&path, &net).unwrap();
    let error = read_caffemodel(&path).unwrap_err().to_string();
    assert!(error.contains("layer 'ip1' blob 0"), "{error}");
}

#[test]
fn solver_state_round_trips() {
    let folder = tempfile::tempdir().unwrap();
    let state = SolverState {
        iter: Some(42),
        learned_net: Some("x_iter_42.caffemodel".into()),
        current_step: Some(3),
        history: vec![BlobProto {
            shape: Some(BlobShape { dim: vec![2] }),
            data: vec![0.5, -0.25],
            ..Default::default()
        }],
    };
    let path = folder.path().join("x.solverstate");
    write_binary(&path, &state).unwrap();
    assert_eq!(read_solverstate(&path).unwrap(), state);
}

#[test]
fn solver_nets_resolve_as_caffe_resolves_them() {
    // lenet_solver.prototxt names `net: "examples/mnist/lenet_train_test.prototxt"`, relative to
    // the working directory (Caffe's root). From the crate root that path does not exist.
    let solver_path = Path::new(ZOO).join("examples/mnist/lenet_solver.prototxt");
    let solver = read_solver(&solver_path).unwrap();
    let error = resolve_solver_nets(&solver, &solver_path)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("examples/mnist/lenet_train_test.prototxt"),
        "{error}"
    );
    assert!(
        error.contains("relative to the working directory"),
        "{error}"
    );

    // One generic net serves as train net and as the test net for each test_iter.
    let net = read_net(&Path::new(ZOO).join("examples/mnist/lenet_train_test.prototxt")).unwrap();
    let mut solver = solver.clone();
    solver.net = None;
    solver.net_param = Some(net.clone());
    solver.test_iter = vec![100, 7];
    let nets = resolve_solver_nets(&solver, &solver_path).unwrap();
    assert_eq!(
        nets.train.param.state.as_ref().unwrap().phase(),
        rcaffe::proto::caffe::Phase::Train
    );
    assert_eq!(nets.tests.len(), 2);
    assert!(nets
        .tests
        .iter()
        .all(
            |t| t.param.state.as_ref().unwrap().phase() == rcaffe::proto::caffe::Phase::Test
                && t.description == "net_param"
        ));

    // The autoencoder's test_state stages reach its two test nets, in order.
    let solver_path = Path::new(ZOO).join("examples/mnist/mnist_autoencoder_solver.prototxt");
    let mut solver = read_solver(&solver_path).unwrap();
    let net = read_net(&Path::new(ZOO).join("examples/mnist/mnist_autoencoder.prototxt")).unwrap();
    solver.net = None;
    solver.net_param = Some(net);
    let nets = resolve_solver_nets(&solver, &solver_path).unwrap();
    let stages: Vec<Vec<String>> = nets
        .tests
        .iter()
        .map(|t| t.param.state.as_ref().unwrap().stage.clone())
        .collect();
    assert_eq!(
        stages,
        vec![
            vec!["test-on-train".to_string()],
            vec!["test-on-test".to_string()]
        ]
    );

    // Two train-net fields at once are refused, naming both.
    solver.train_net = Some("x.prototxt".into());
    let error = resolve_solver_nets(&solver, &solver_path)
        .unwrap_err()
        .to_string();
    assert!(error.contains("net_param, train_net"), "{error}");
}

#[test]
fn snapshot_prefix_is_settled_as_upstream_settles_it() {
    let folder = tempfile::tempdir().unwrap();
    let solver_path = folder.path().join("my_solver.prototxt");
    std::fs::write(&solver_path, "base_lr: 0.1\n").unwrap();
    let solver = read_solver(&solver_path).unwrap();
    assert_eq!(
        solver.snapshot_prefix(),
        folder.path().join("my_solver").to_str().unwrap()
    );

    let snapshots = folder.path().join("snapshots");
    std::fs::create_dir(&snapshots).unwrap();
    std::fs::write(
        &solver_path,
        format!("snapshot_prefix: \"{}\"\n", snapshots.display()),
    )
    .unwrap();
    let solver = read_solver(&solver_path).unwrap();
    assert_eq!(
        solver.snapshot_prefix(),
        snapshots.join("my_solver").to_str().unwrap()
    );

    std::fs::write(&solver_path, "snapshot_prefix: \"runs/lenet\"\n").unwrap();
    assert_eq!(
        read_solver(&solver_path).unwrap().snapshot_prefix(),
        "runs/lenet"
    );
}

#[test]
fn the_projects_own_models_parse_and_their_schedules_validate() {
    // models/cifar10_clr/ names the zoo nets by their paths from Caffe's source root:
    // tests/schedules/models_clr.rs checks those solvers.
    let files: Vec<_> = prototxt_files(Path::new("models"))
        .into_iter()
        .filter(|path| !path.starts_with("models/cifar10_clr"))
        .collect();
    assert!(files.len() >= 6, "found only {} model files", files.len());
    for path in files {
        if is_solver(&path) {
            let solver = read_solver(&path).unwrap_or_else(|e| panic!("{e}"));
            rcaffe::lr_policy::LrSchedule::new(&solver)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Each solver names the net file beside it.
            let net = path.with_file_name(solver.net());
            read_net(&net).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        } else {
            read_net(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
