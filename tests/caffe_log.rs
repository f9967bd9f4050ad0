//! Reading Caffe training logs (`rcaffe::caffe_log`), comparing them and plotting them
//! (`rcaffe compare-logs`, `rcaffe plot-log`), against upstream Caffe's logs and our own
//! solver's.

mod common;

use common::{rcaffe, stderr, stdout};
use rcaffe::backend::CpuBackend;
use rcaffe::caffe_log::compare::{compare_logs, Quantity};
use rcaffe::caffe_log::{parse_log, read_log, CaffeLog};
use rcaffe::lr_policy::{LrSchedule, LrState};
use rcaffe::proto::caffe::SolverParameter;
use rcaffe::proto::{parse_text, read_solver};
use rcaffe::solver::Solver;
use std::path::{Path, PathBuf};

const UPSTREAM: &str = "../shared/reference/upstream";

/// Every training log of upstream's runs, with its solver file: `NET/RUN.log` beside
/// `NET/RUN.solver.prototxt` (netinit/ holds no training).
fn upstream_runs() -> Vec<(PathBuf, PathBuf)> {
    let mut runs = Vec::new();
    for folder in std::fs::read_dir(UPSTREAM).unwrap() {
        let folder = folder.unwrap().path();
        if !folder.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&folder).unwrap() {
            let log = file.unwrap().path();
            if log.extension().is_some_and(|e| e == "log") {
                let solver = log.with_extension("solver.prototxt");
                if solver.exists() {
                    runs.push((log, solver));
                }
            }
        }
    }
    runs.sort();
    assert!(runs.len() >= 10, "upstream's runs not found: {runs:?}");
    runs
}

/// Lines of `text` containing `needle`: an independent count to check the parser against.
fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|line| line.contains(needle)).count()
}

#[test]
fn every_upstream_log_parses_into_one_record_per_iteration_and_test_pass() {
    for (log_path, solver_path) in upstream_runs() {
        let name = log_path.display();
        let solver = read_solver(&solver_path).unwrap();
        let text = std::fs::read_to_string(&log_path).unwrap();
        let log = read_log(&log_path).unwrap();
        assert_eq!(
            solver.display(),
            1,
            "{name}: the runs display every iteration"
        );
        let max_iter = u32::try_from(solver.max_iter()).unwrap();

        // Iterations 0 .. max_iter - 1 with loss and rate, then the final loss line.
        let iterations: Vec<u32> = log.train.iter().map(|r| r.iteration).collect();
        assert_eq!(iterations, (0..=max_iter).collect::<Vec<_>>(), "{name}");
        for record in &log.train[..max_iter as usize] {
            assert!(
                record.loss.is_some() && record.lr.is_some(),
                "{name}: {record:?}"
            );
            assert!(!record.outputs.is_empty(), "{name}: {record:?}");
        }
        let last = log.train_at(max_iter).unwrap();
        assert!(last.loss.is_some() && last.lr.is_none(), "{name}: {last:?}");

        // A pass of every test net at every multiple of test_interval up to max_iter.
        let test_interval = u32::try_from(solver.test_interval()).unwrap();
        let test_nets = solver.test_iter.len();
        let first_test = if solver.test_initialization() {
            0
        } else {
            test_interval
        };
        let tested: Vec<u32> = (first_test..=max_iter)
            .step_by(test_interval as usize)
            .collect();
        assert_eq!(log.tests.len(), tested.len() * test_nets, "{name}");
        assert_eq!(
            log.test_nets(),
            (0..test_nets).collect::<Vec<_>>(),
            "{name}"
        );
        for &iteration in &tested {
            for net in 0..test_nets {
                let record = log.test_at(iteration, net).unwrap();
                assert_eq!(
                    record.outputs.len(),
                    log.tests[net].outputs.len(),
                    "{name}: pass {iteration} of net {net}"
                );
            }
        }

        // Nothing the log says is lost.
        let test_outputs: usize = log.tests.iter().map(|r| r.outputs.len()).sum();
        let train_outputs: usize = log.train.iter().map(|r| r.outputs.len()).sum();
        let rates = log.train.iter().filter(|r| r.lr.is_some()).count();
        assert_eq!(
            test_outputs,
            count_lines(&text, "Test net output #"),
            "{name}"
        );
        assert_eq!(
            train_outputs,
            count_lines(&text, "Train net output #"),
            "{name}"
        );
        let losses = log.train.iter().filter(|r| r.loss.is_some()).count();
        assert_eq!(rates, count_lines(&text, ", lr = "), "{name}");
        assert_eq!(losses, count_lines(&text, ", loss = "), "{name}");
        assert_eq!(
            log.tests.len(),
            count_lines(&text, ", Testing net (#"),
            "{name}"
        );
    }
}

#[test]
fn values_are_read_as_logged() {
    let path = Path::new(UPSTREAM).join("mnist_autoencoder/sgd_step.log");
    let text = std::fs::read_to_string(&path).unwrap();
    let log = parse_log(&text);
    // Each test output line's value, read back through the record for its pass.
    let mut pass: Option<(u32, usize)> = None;
    let mut checked = 0;
    for line in text.lines() {
        if let Some((_, rest)) = line.split_once("] Iteration ") {
            if let Some((iteration, net)) = rest.split_once(", Testing net (#") {
                pass = Some((
                    iteration.parse().unwrap(),
                    net.trim_end_matches(')').parse().unwrap(),
                ));
            }
        }
        if let Some((_, rest)) = line.split_once("Test net output #") {
            let (_, assignment) = rest.split_once(": ").unwrap();
            let (output, value) = assignment.split_once(" = ").unwrap();
            let value: f64 = value.split(' ').next().unwrap().parse().unwrap();
            let (iteration, net) = pass.unwrap();
            let record = log.test_at(iteration, net).unwrap();
            assert_eq!(record.output(output), Some(value), "{line}");
            checked += 1;
        }
    }
    assert_eq!(checked, 12, "two nets, two outputs, three passes");
}

/// The same lines with glog's classic prefix, the year-first one, or none.
#[test]
fn the_prefix_does_not_matter() {
    let path = Path::new(UPSTREAM).join("lenet/sgd_triangular2.log");
    let text = std::fs::read_to_string(&path).unwrap();
    let upstream = parse_log(&text);
    let strip = |line: &str| {
        line.split_once("] ")
            .map_or(line.to_owned(), |(_, m)| m.to_owned())
    };
    let bare: String = text.lines().map(|l| strip(l) + "\n").collect();
    let classic: String = text
        .lines()
        .map(|l| format!("I1129 18:02:00.262215  4242 solver.rs:1] {}\n", strip(l)))
        .collect();
    assert_eq!(parse_log(&bare), upstream);
    assert_eq!(parse_log(&classic), upstream);
    // Windows line ends, and lines from elsewhere in between.
    let noisy: String = text
        .lines()
        .map(|l| format!("{l}\r\nW1129 18:02:00.1 7 other.cc:3] Iteration soon, lr = high\r\n"))
        .collect();
    assert_eq!(parse_log(&noisy), upstream);
}

#[test]
fn a_log_compared_with_itself_has_no_difference() {
    for (log_path, _) in upstream_runs() {
        let log = read_log(&log_path).unwrap();
        let comparison = compare_logs(&log, &log);
        assert!(comparison.is_identical(), "{}", log_path.display());
        for compared in &comparison.quantities {
            assert_eq!(compared.only_in_a + compared.only_in_b, 0);
            assert_eq!(compared.largest_absolute.as_ref().unwrap().absolute, 0.0);
            assert_eq!(compared.largest_relative.as_ref().unwrap().relative, 0.0);
        }
        let train_values = log.train.iter().filter(|r| r.loss.is_some()).count();
        let loss = comparison.find(&Quantity::TrainLoss).unwrap();
        assert_eq!(loss.aligned, train_values);
    }
}

/// `text` with the value after `marker` on the first line containing `line_marker` replaced
/// by `new_value`; returns the new text and the old value.
fn edit_value(text: &str, line_marker: &str, marker: &str, new_value: f64) -> (String, f64) {
    let mut old = None;
    let edited = text
        .lines()
        .map(
            |line| match (old, line.contains(line_marker), line.split_once(marker)) {
                (None, true, Some((head, tail))) => {
                    let (value, rest) = tail.split_once(' ').unwrap_or((tail, ""));
                    old = Some(value.parse::<f64>().unwrap());
                    let space = if rest.is_empty() { "" } else { " " };
                    format!("{head}{marker}{new_value}{space}{rest}\n")
                }
                _ => format!("{line}\n"),
            },
        )
        .collect();
    (edited, old.expect("the line to edit"))
}

#[test]
fn an_edited_value_is_reported_with_its_iteration() {
    let path = Path::new(UPSTREAM).join("lenet/sgd_inv.log");
    let text = std::fs::read_to_string(&path).unwrap();
    let original = parse_log(&text);

    // A test accuracy in the middle of the run.
    let middle_test = original.tests[original.tests.len() / 2].iteration;
    let marker = format!("] Iteration {middle_test}, Testing net (#0)");
    let after_marker = &text[text.find(&marker).unwrap()..];
    let accuracy_line = after_marker
        .lines()
        .find(|l| l.contains("accuracy = "))
        .unwrap();
    let (edited, old) = edit_value(&text, accuracy_line, "accuracy = ", 0.125);
    let comparison = compare_logs(&original, &parse_log(&edited));
    let (quantity, difference) = comparison.largest_absolute().unwrap();
    let accuracy = Quantity::TestOutput {
        net: 0,
        name: "accuracy".into(),
    };
    assert_eq!(quantity, &accuracy);
    assert_eq!(difference.iteration, middle_test);
    assert_eq!((difference.a, difference.b), (old, 0.125));
    assert!((difference.absolute - (old - 0.125).abs()).abs() < 1e-12);
    // Nothing else moved.
    for compared in &comparison.quantities {
        if compared.quantity != accuracy {
            assert_eq!(compared.largest_absolute.as_ref().unwrap().absolute, 0.0);
        }
    }
    let report = comparison.report("original", "edited");
    assert!(report.contains("largest absolute difference"), "{report}");
    assert!(
        report.contains(&format!("test net #0 accuracy at iteration {middle_test}")),
        "{report}"
    );

    // A training loss, through the binary, naming it and its iteration.
    let iteration = original.train[original.train.len() / 3].iteration;
    let loss_line = format!("] Iteration {iteration} (");
    let new_loss = original.train_at(iteration).unwrap().loss.unwrap() * 3.0 + 1.0;
    let (edited, _) = edit_value(&text, &loss_line, "loss = ", new_loss);
    let folder = tempfile::tempdir().unwrap();
    let edited_path = folder.path().join("edited.log");
    std::fs::write(&edited_path, edited).unwrap();
    let output = rcaffe(&[
        "compare-logs",
        path.to_str().unwrap(),
        edited_path.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = stdout(&output);
    let overall = report.lines().find(|l| l.starts_with("overall:")).unwrap();
    assert!(
        overall.contains(&format!("train loss at iteration {iteration}")),
        "{report}"
    );
    assert!(
        report.contains("A = sgd_inv") && report.contains("B = edited"),
        "{report}"
    );
}

#[test]
fn logs_with_different_iterations_align_on_the_shared_ones() {
    let a = parse_log("Iteration 0, lr = 1\nIteration 1, lr = 2\nIteration 2, lr = 3\n");
    let b = parse_log("Iteration 1, lr = 2\nIteration 2, lr = 4\nIteration 3, lr = 9\n");
    let comparison = compare_logs(&a, &b);
    let lr = comparison.find(&Quantity::LearningRate).unwrap();
    assert_eq!((lr.aligned, lr.only_in_a, lr.only_in_b), (2, 1, 1));
    let largest = lr.largest_relative.as_ref().unwrap();
    assert_eq!((largest.iteration, largest.relative), (2, 0.25));
}

// --- our own solver's log ---------------------------------------------------------------

/// Our logs print numbers as C's `%g` does: six significant digits.
fn close(parsed: f64, recorded: f64) -> bool {
    (parsed - recorded).abs() <= 5e-6 * recorded.abs().max(1e-6)
}

#[test]
fn our_solver_logs_parse_into_the_figures_it_recorded() {
    let folder = tempfile::tempdir().unwrap();
    let origin = folder.path().join("tiny.solver.prototxt");
    let mut param: SolverParameter = parse_text(common::TINY_SOLVER, &origin).unwrap();
    param.snapshot_prefix = Some(folder.path().join("tiny").to_string_lossy().into_owned());
    let backend = CpuBackend::default();
    let mut solver = Solver::new_recording(param.clone(), &origin, &backend).unwrap();
    solver.solve(None).unwrap();
    // Each message as our binary writes it, with glog's classic prefix.
    let text: String = solver
        .take_log()
        .iter()
        .map(|message| {
            rcaffe::log::format_line(
                &log::Record::builder()
                    .args(format_args!("{message}"))
                    .level(log::Level::Info)
                    .file(Some("src/solver/mod.rs"))
                    .line(Some(239))
                    .build(),
            )
        })
        .collect();
    let log = parse_log(&text);

    let max_iter = param.max_iter() as u32;
    let iterations: Vec<u32> = log.train.iter().map(|r| r.iteration).collect();
    assert_eq!(iterations, (0..=max_iter).collect::<Vec<_>>(), "{text}");
    let schedule = LrSchedule::new(&param).unwrap();
    let mut state = LrState::default();
    for record in &log.train[..max_iter as usize] {
        let rate = f64::from(schedule.rate(record.iteration, &mut state));
        assert!(close(record.lr.unwrap(), rate), "{record:?} vs {rate}");
        assert_eq!(
            record.output("loss"),
            record.loss,
            "average_loss 1: the same figure"
        );
    }
    let final_loss = log.train_at(max_iter).unwrap().loss.unwrap();
    assert!(close(final_loss, f64::from(solver.smoothed_loss())));

    let scores = solver.test_scores();
    assert_eq!(log.tests.len(), scores.len());
    for score in scores {
        let record = log
            .test_at(u32::try_from(score.iter).unwrap(), score.net_id)
            .unwrap();
        assert_eq!(record.outputs.len(), score.outputs.len());
        for (name, value) in &score.outputs {
            let parsed = record.output(name).unwrap();
            assert!(
                close(parsed, f64::from(*value)),
                "{name}: {parsed} vs {value}"
            );
        }
    }
}

/// Decodes a PNG, returning its size and how many pixels are neither white nor grey: the
/// curves and legend samples.
fn decode_png(path: &Path) -> ((u32, u32), usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let channels = frame.color_type.samples();
    let coloured = pixels[..frame.buffer_size()]
        .chunks(channels)
        .filter(|p| p[..3].iter().max().unwrap() - p[..3].iter().min().unwrap() > 60)
        .count();
    ((frame.width, frame.height), coloured)
}

/// The text elements of an SVG document.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|element| {
            let (_, rest) = element.split_once('>')?;
            Some(rest.split_once("</text>")?.0.trim().to_owned())
        })
        .collect()
}

#[test]
fn compare_logs_writes_an_overlay_as_png_and_svg() {
    let folder = tempfile::tempdir().unwrap();
    let a = format!("{UPSTREAM}/cifar10_quick/sgd_fixed.log");
    let b = format!("{UPSTREAM}/cifar10_quick/sgd_triangular2.log");
    for extension in ["png", "svg"] {
        let overlay = folder.path().join(format!("overlay.{extension}"));
        let output = rcaffe(&["compare-logs", &a, &b, "-o", overlay.to_str().unwrap()]);
        assert!(output.status.success(), "{}", stderr(&output));
        let report = stdout(&output);
        for row in [
            "lr",
            "train loss",
            "test net #0 accuracy",
            "test net #0 loss",
            "overall:",
        ] {
            assert!(
                report.lines().any(|l| l.starts_with(row)),
                "no {row} in {report}"
            );
        }
        if extension == "png" {
            let ((width, height), coloured) = decode_png(&overlay);
            assert!(width >= 800 && height >= 600, "{width}×{height}");
            assert!(coloured > 2000, "{coloured} coloured pixels");
        } else {
            let texts = svg_texts(&std::fs::read_to_string(&overlay).unwrap());
            for label in [
                "sgd_fixed",
                "sgd_triangular2",
                "test accuracy",
                "training loss",
            ] {
                assert!(texts.iter().any(|t| t == label), "no {label} in {texts:?}");
            }
        }
    }
}

#[test]
fn plot_log_overlays_labelled_runs() {
    let folder = tempfile::tempdir().unwrap();
    let fixed = format!("{UPSTREAM}/cifar10_quick/sgd_fixed.log");
    let triangular2 = format!("{UPSTREAM}/cifar10_quick/sgd_triangular2.log");
    for extension in ["png", "svg"] {
        let curves = folder.path().join(format!("curves.{extension}"));
        let output = rcaffe(&[
            "plot-log",
            &fixed,
            &triangular2,
            "-o",
            curves.to_str().unwrap(),
            "--label",
            "fixed",
            "--label",
            "triangular2",
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        if extension == "png" {
            let (_, coloured) = decode_png(&curves);
            assert!(coloured > 2000, "{coloured} coloured pixels");
        } else {
            let texts = svg_texts(&std::fs::read_to_string(&curves).unwrap());
            for label in [
                "fixed vs triangular2",
                "fixed",
                "triangular2",
                "test accuracy",
                "training loss",
                "learning rate (dashed)",
            ] {
                assert!(texts.iter().any(|t| t == label), "no {label} in {texts:?}");
            }
        }
    }
}

#[test]
fn plot_log_reads_every_upstream_log() {
    let folder = tempfile::tempdir().unwrap();
    let logs: Vec<String> = upstream_runs()
        .into_iter()
        .map(|(log, _)| log.to_string_lossy().into_owned())
        .collect();
    for log in &logs {
        let curves = folder.path().join("one.svg");
        let output = rcaffe(&["plot-log", log, "-o", curves.to_str().unwrap()]);
        assert!(output.status.success(), "{log}: {}", stderr(&output));
        let texts = svg_texts(&std::fs::read_to_string(&curves).unwrap());
        let stem = Path::new(log).file_stem().unwrap().to_str().unwrap();
        assert!(
            texts.iter().any(|t| t == stem),
            "{log}: no title in {texts:?}"
        );
        assert!(
            texts.iter().any(|t| t == "training loss"),
            "{log}: {texts:?}"
        );
    }
    // All of them at once: stems that clash get their folder.
    let curves = folder.path().join("all.png");
    let mut args = vec!["plot-log", "-o", curves.to_str().unwrap()];
    args.extend(logs.iter().map(String::as_str));
    let output = rcaffe(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(decode_png(&curves).1 > 2000);
}

#[test]
fn a_file_without_iterations_is_refused_by_name() {
    let folder = tempfile::tempdir().unwrap();
    let not_a_log = folder.path().join("notes.log");
    std::fs::write(
        &not_a_log,
        "I1129 18:02:00.262215  1 net.cpp:1] Setting up data\n",
    )
    .unwrap();
    let good = format!("{UPSTREAM}/lenet/sgd_inv.log");
    let png = folder.path().join("x.png");
    for args in [
        vec!["compare-logs", &good, not_a_log.to_str().unwrap()],
        vec![
            "plot-log",
            not_a_log.to_str().unwrap(),
            "-o",
            png.to_str().unwrap(),
        ],
    ] {
        let output = rcaffe(&args);
        assert!(!output.status.success());
        let message = stderr(&output);
        assert!(
            message.contains("notes.log") && message.contains("no training iterations"),
            "{message}"
        );
    }
    let missing = folder.path().join("missing.log");
    let output = rcaffe(&[
        "plot-log",
        missing.to_str().unwrap(),
        "-o",
        png.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("missing.log"),
        "{}",
        stderr(&output)
    );
    assert!(!png.exists());
}

#[test]
fn an_empty_log_is_empty() {
    assert_eq!(parse_log(""), CaffeLog::default());
    assert!(parse_log("Iteration x, lr = 1\nIteration 3, lr = fast\n").is_empty());
}
