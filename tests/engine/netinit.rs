//! Net initialisation against upstream's logs (../shared/reference/upstream/netinit/*.log, made
//! by `caffe time` on every zoo net).
//!
//! What is compared, line for line, are the records upstream's net.cpp and layer_factory.hpp
//! log while building a net (glog prefix stripped): the NetState filter lines, "Initializing
//! net from parameters:" with the filtered net printed as text, "Creating layer X", "Creating
//! Layer X", "X <- b", "X -> t" ("(in-place)"), "Setting up X", "Top shape: ...", "    with
//! loss weight W", "Memory required for data: N", "Sharing parameters ...", "X needs backward
//! computation." / "X does not need backward computation.", "This network produces output Y",
//! "Network initialization done.".
//!
//! * `netinit_structure_matches_upstream` needs no layer beyond the registry's Input and Split:
//!   for every log it checks the filter lines and the printed net, and that the layer list after
//!   split insertion and every "<-" / "->" line match.
//! * `netinit_matches_upstream_for_input_nets` builds the nets whose inputs are Input layers and
//!   compares every line; a layer type missing from the registry fails it with the list.
//! * `netinit_matches_upstream_for_data_nets` does the same for the train/test nets, whose
//!   LMDBs are not here: each Data layer becomes an Input layer of the name, tops and shapes
//!   upstream logged for it, and every line but the printed net (which the structure test
//!   covers) is compared.

use std::path::{Path, PathBuf};

use rcaffe::backend::{rng_from_seed, CpuBackend};
use rcaffe::layers::is_registered;
use rcaffe::net::{filter, splits, Net};
use rcaffe::proto::caffe::NetParameter;
use rcaffe::proto::print_text;
use rcaffe::proto::{parse_text, read_net};

const NETINIT: &str = "../shared/reference/upstream/netinit";
const ZOO: &str = "../shared/caffe-zoo";

/// The nets whose inputs are Input layers: (zoo path, log name).
const INPUT_NETS: &[(&str, &str)] = &[
    ("examples/mnist/lenet.prototxt", "mnist__lenet.log"),
    (
        "examples/cifar10/cifar10_quick.prototxt",
        "cifar10__cifar10_quick.log",
    ),
    (
        "examples/cifar10/cifar10_full.prototxt",
        "cifar10__cifar10_full.log",
    ),
    (
        "models/bvlc_alexnet/deploy.prototxt",
        "bvlc_alexnet__deploy.log",
    ),
    (
        "models/bvlc_googlenet/deploy.prototxt",
        "bvlc_googlenet__deploy.log",
    ),
    (
        "models/bvlc_reference_caffenet/deploy.prototxt",
        "bvlc_reference_caffenet__deploy.log",
    ),
];

/// One glog record: the source file that logged it and its message (continuation lines
/// joined with '\n').
#[derive(Debug, Clone)]
struct Record {
    file: String,
    message: String,
}

/// Splits a glog line `I20261129 18:31:02.991892 24821 net.cpp:86] message` (or the year-less
/// form) into file and message.
fn parse_prefix(line: &str) -> Option<(String, String)> {
    let mut chars = line.chars();
    let severity = chars.next()?;
    if !"IWEF".contains(severity) {
        return None;
    }
    let rest = &line[1..];
    let (date, rest) = rest.split_once(' ')?;
    if date.is_empty() || !date.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (time, rest) = rest.split_once(' ')?;
    if !time.contains(':') {
        return None;
    }
    let rest = rest.trim_start();
    let (_thread, rest) = rest.split_once(' ')?;
    let (location, message) = rest
        .split_once("] ")
        .or_else(|| rest.strip_suffix(']').map(|location| (location, "")))?;
    let (file, _line) = location.rsplit_once(':')?;
    Some((file.to_string(), message.to_string()))
}

fn parse_log(text: &str) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    for line in text.lines() {
        match parse_prefix(line) {
            Some((file, message)) => records.push(Record { file, message }),
            None => {
                if let Some(last) = records.last_mut() {
                    last.message.push('\n');
                    last.message.push_str(line);
                }
            }
        }
    }
    records
}

/// Upstream's structural net-initialisation lines: net.cpp and layer_factory.hpp records up
/// to "Network initialization done.", trailing newlines of multi-line records trimmed.
fn upstream_init_lines(log_name: &str) -> Vec<String> {
    let path = Path::new(NETINIT).join(log_name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for record in parse_log(&text) {
        if record.file != "net.cpp" && record.file != "layer_factory.hpp" {
            continue;
        }
        let message = record.message.trim_end_matches('\n').to_string();
        let done = message == "Network initialization done.";
        out.push(message);
        if done {
            break;
        }
    }
    assert!(
        out.last()
            .is_some_and(|l| l == "Network initialization done."),
        "{log_name}: no \"Network initialization done.\" line"
    );
    out
}

/// The zoo net a log was made from: `mnist__lenet_train_test.TRAIN.log` is
/// `examples/mnist/lenet_train_test.prototxt`, `bvlc_alexnet__deploy.log`
/// `models/bvlc_alexnet/deploy.prototxt`.
fn zoo_path(log_name: &str) -> PathBuf {
    let stem = log_name.strip_suffix(".log").expect("a .log file");
    let stem = stem
        .strip_suffix(".TRAIN")
        .or_else(|| stem.strip_suffix(".TEST"))
        .unwrap_or(stem);
    let (dir, file) = stem.split_once("__").expect("dir__file");
    let base = if dir.starts_with("bvlc_") {
        "models"
    } else {
        "examples"
    };
    Path::new(ZOO)
        .join(base)
        .join(dir)
        .join(format!("{file}.prototxt"))
}

/// The net file with the state upstream ran it with (read back from the printed net in the
/// log: `caffe time` sets phase, level and the `-stage` flag's stages).
fn net_param_for(log_name: &str, upstream: &[String]) -> NetParameter {
    let mut param = read_net(&zoo_path(log_name)).unwrap_or_else(|e| panic!("{log_name}: {e}"));
    let header = upstream
        .iter()
        .find_map(|l| l.strip_prefix("Initializing net from parameters: \n"))
        .unwrap_or_else(|| panic!("{log_name}: no printed net"));
    // glog cuts a record at 30,000 bytes (prefix included): read the state before the layers.
    let head = header.split("\nlayer {").next().unwrap_or(header);
    let printed: NetParameter = parse_text(head, Path::new(log_name))
        .unwrap_or_else(|e| panic!("{log_name}: upstream's printed net: {e}"));
    param.state = printed.state;
    param
}

fn all_logs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETINIT)
        .unwrap_or_else(|e| panic!("{NETINIT}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    assert!(names.len() >= 20, "expected the zoo's logs in {NETINIT}");
    names
}

/// glog truncates a record to 30,000 bytes with its prefix, so upstream's printed net is cut
/// short for a large net (GoogLeNet): such a line matches ours when it is a prefix of ours.
fn same_line(ours: &str, theirs: &str) -> bool {
    ours == theirs || (theirs.len() > 29_000 && ours.starts_with(theirs))
}

/// The first difference between two line lists, with context, or `None`.
fn first_difference(ours: &[String], theirs: &[String]) -> Option<String> {
    let n = ours.len().max(theirs.len());
    for i in 0..n {
        let a = ours.get(i);
        let b = theirs.get(i);
        let equal = match (a, b) {
            (Some(a), Some(b)) => same_line(a, b),
            _ => false,
        };
        if !equal {
            let from = i.saturating_sub(3);
            let context: Vec<String> = (from..i)
                .filter_map(|k| theirs.get(k))
                .map(|l| format!("    {l}"))
                .collect();
            return Some(format!(
                "line {i} differs (after:\n{}\n)\n  ours:     {}\n  upstream: {}",
                context.join("\n"),
                a.map_or("<none>", |s| s.as_str()),
                b.map_or("<none>", |s| s.as_str()),
            ));
        }
    }
    None
}

#[test]
fn log_parser_reads_glog_records() {
    let text = "I20261129 18:31:02.991605 24821 net.cpp:53] Initializing net from parameters: \n\
                name: \"LeNet\"\n\
                I1129 18:31:02.991868  4242 layer_factory.hpp:77] Creating layer data\n";
    let records = parse_log(text);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].file, "net.cpp");
    assert_eq!(
        records[0].message,
        "Initializing net from parameters: \nname: \"LeNet\""
    );
    assert_eq!(records[1].file, "layer_factory.hpp");
    assert_eq!(records[1].message, "Creating layer data");
}

/// Filter lines, the printed net, and the layer/blob wiring after split insertion, for every
/// zoo net and phase upstream logged.
#[test]
fn netinit_structure_matches_upstream() {
    let mut failures = Vec::new();
    for log_name in all_logs() {
        let upstream = upstream_init_lines(&log_name);
        let param = net_param_for(&log_name, &upstream);
        let (filtered, filter_log) = filter::filter_net(&param).expect("filter");
        let mut ours: Vec<String> = filter_log;
        ours.push(format!(
            "Initializing net from parameters: \n{}",
            print_text(&filtered).trim_end_matches('\n')
        ));
        let split = splits::insert_splits(&filtered).expect("splits");
        for layer in &split.layer {
            ours.push(format!("Creating Layer {}", layer.name()));
            for b in &layer.bottom {
                ours.push(format!("{} <- {}", layer.name(), b));
            }
            for (j, t) in layer.top.iter().enumerate() {
                if layer.bottom.get(j) == Some(t) {
                    ours.push(format!("{} -> {} (in-place)", layer.name(), t));
                } else {
                    ours.push(format!("{} -> {}", layer.name(), t));
                }
            }
        }
        let structural = |l: &String| {
            l.starts_with("The NetState")
                || l.starts_with("Initializing net from parameters")
                || l.starts_with("Creating Layer ")
                || l.contains(" <- ")
                || (l.contains(" -> ") && !l.ends_with(" -> (automatic)"))
        };
        let theirs: Vec<String> = upstream.iter().filter(|l| structural(l)).cloned().collect();
        // Upstream logs a layer's bottoms before its tops, as we list them.
        if let Some(diff) = first_difference(&ours, &theirs) {
            failures.push(format!("{log_name}: {diff}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The layer types a net uses that the registry does not have yet.
fn missing_types(param: &NetParameter) -> Vec<String> {
    let mut missing: Vec<String> = param
        .layer
        .iter()
        .map(|l| l.r#type().to_string())
        .filter(|t| !is_registered(t))
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// Every structural line, for every zoo net whose inputs are Input layers.
#[test]
fn netinit_matches_upstream_for_input_nets() {
    let cpu = CpuBackend::new(1).unwrap();
    let mut missing_report = Vec::new();
    let mut failures = Vec::new();
    for &(zoo, log_name) in INPUT_NETS {
        assert_eq!(zoo_path(log_name), Path::new(ZOO).join(zoo));
        let upstream = upstream_init_lines(log_name);
        let param = net_param_for(log_name, &upstream);
        let missing = missing_types(&param);
        if !missing.is_empty() {
            missing_report.push(format!("{zoo}: {}", missing.join(", ")));
            continue;
        }
        match Net::new(&param, &cpu, rng_from_seed(1701)) {
            Ok(net) => {
                if let Some(diff) = first_difference(net.init_log(), &upstream) {
                    failures.push(format!("{zoo}: {diff}"));
                }
            }
            Err(e) => failures.push(format!("{zoo}: building the net failed: {e}")),
        }
    }
    assert!(
        missing_report.is_empty() && failures.is_empty(),
        "layer types not registered yet:\n  {}\n\nmismatches:\n{}",
        missing_report.join("\n  "),
        failures.join("\n\n")
    );
}

/// The shapes upstream logged for the tops of layer `name` ("Setting up name" then its
/// "Top shape: 64 1 28 28 (50176)" lines).
fn logged_top_shapes(upstream: &[String], name: &str) -> Vec<Vec<i64>> {
    let start = upstream
        .iter()
        .position(|l| *l == format!("Setting up {name}"))
        .unwrap_or_else(|| panic!("no \"Setting up {name}\""));
    upstream[start + 1..]
        .iter()
        .map_while(|l| l.strip_prefix("Top shape: "))
        .map(|shape| {
            shape
                .split_whitespace()
                .filter(|d| !d.starts_with('('))
                .map(|d| d.parse().expect("a dimension"))
                .collect()
        })
        .collect()
}

#[test]
fn netinit_matches_upstream_for_data_nets() {
    let cpu = CpuBackend::new(1).unwrap();
    let mut missing_report = Vec::new();
    let mut failures = Vec::new();
    let mut compared = 0;
    for log_name in all_logs() {
        if INPUT_NETS.iter().any(|&(_, l)| l == log_name) {
            continue;
        }
        let upstream = upstream_init_lines(&log_name);
        let mut param = net_param_for(&log_name, &upstream);
        let (filtered, _) = rcaffe::net::filter::filter_net(&param).expect("filter");
        for layer in &mut param.layer {
            if layer.r#type() != "Data" || !filtered.layer.iter().any(|l| l.name() == layer.name())
            {
                continue;
            }
            let shapes = logged_top_shapes(&upstream, layer.name());
            layer.r#type = Some("Input".to_string());
            layer.data_param = None;
            layer.transform_param = None;
            layer.input_param = Some(rcaffe::proto::caffe::InputParameter {
                shape: shapes
                    .into_iter()
                    .map(|dim| rcaffe::proto::caffe::BlobShape { dim })
                    .collect(),
            });
        }
        let missing = missing_types(&param);
        if !missing.is_empty() {
            missing_report.push(format!("{log_name}: {}", missing.join(", ")));
            continue;
        }
        let header = |l: &String| l.starts_with("Initializing net from parameters");
        let theirs: Vec<String> = upstream.iter().filter(|l| !header(l)).cloned().collect();
        match Net::new(&param, &cpu, rng_from_seed(1701)) {
            Ok(net) => {
                let ours: Vec<String> = net
                    .init_log()
                    .iter()
                    .filter(|l| !header(l))
                    .cloned()
                    .collect();
                if let Some(diff) = first_difference(&ours, &theirs) {
                    failures.push(format!("{log_name}: {diff}"));
                }
                compared += 1;
            }
            Err(e) => failures.push(format!("{log_name}: building the net failed: {e}")),
        }
    }
    assert!(
        missing_report.is_empty() && failures.is_empty(),
        "layer types not registered yet:\n  {}\n\nmismatches:\n{}",
        missing_report.join("\n  "),
        failures.join("\n\n")
    );
    assert!(compared >= 18, "compared only {compared} nets");
}
