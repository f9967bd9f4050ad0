//! Upstream's `tools/extra/parse_log.py` must read our training logs unchanged. This test
//! reimplements its regular expressions and row logic (and `extract_seconds.py`'s date parsing
//! of glog's classic `I1129 18:02:00.262215` prefix), feeds it the lines our solver logs, and
//! checks the rows against the solver's own records: its test scores and its learning-rate
//! schedule.

mod common;

use rcaffe::backend::CpuBackend;
use rcaffe::lr_policy::{LrSchedule, LrState};
use rcaffe::proto::caffe::SolverParameter;
use rcaffe::proto::parse_text;
use rcaffe::solver::Solver;
use regex::Regex;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Keeps every record as the glog line our binary writes.
struct KeepGlogLines;

impl log::Log for KeepGlogLines {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LINES.lock().unwrap().push(rcaffe::log::format_line(record));
    }
    fn flush(&self) {}
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    iteration: f64,
    seconds: f64,
    learning_rate: f64,
    outputs: BTreeMap<String, f64>,
}

/// extract_seconds.py: month, day and time from the prefix (`line.split()[0][1:3]` …).
fn seconds_of_day(line: &str) -> Option<f64> {
    let mut words = line.split_whitespace();
    let date = words.next()?;
    // datetime() refuses what is not a real month and day: a year-first prefix ("I20261129")
    // reads as month 20 and fails, as it does in Python.
    let month: u32 = date.get(1..3)?.parse().ok()?;
    let day: u32 = date.get(3..)?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let day = f64::from(day);
    let time = words.next()?;
    let (hms, micros) = time.rsplit_once('.')?;
    let parts: Vec<f64> = hms
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let micros: f64 = micros.parse().ok()?;
    Some(day * 86400.0 + parts[0] * 3600.0 + parts[1] * 60.0 + parts[2] + micros * 1e-6)
}

/// parse_log.py's `parse_log`, line for line.
fn parse_log(lines: &[String]) -> (Vec<Row>, Vec<Row>) {
    let iteration_re = Regex::new(r"Iteration (\d+)").unwrap();
    let train_re = Regex::new(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)").unwrap();
    let test_re = Regex::new(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)").unwrap();
    let lr_re = Regex::new(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)").unwrap();
    let start = lines
        .iter()
        .find(|l| l.contains("Solving"))
        .and_then(|l| seconds_of_day(l))
        .expect("parse_log.py needs a 'Solving' line with a classic glog date");
    let (mut iteration, mut learning_rate) = (-1.0, f64::NAN);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    let (mut train_row, mut test_row): (Option<Row>, Option<Row>) = (None, None);
    for line in lines {
        if let Some(m) = iteration_re.captures(line) {
            iteration = m[1].parse().unwrap();
        }
        if iteration == -1.0 {
            continue;
        }
        let Some(time) = seconds_of_day(line) else {
            continue;
        };
        let seconds = time - start;
        if let Some(m) = lr_re.captures(line) {
            learning_rate = m[1].parse().unwrap();
        }
        for (re, rows, row) in [
            (&train_re, &mut train, &mut train_row),
            (&test_re, &mut test, &mut test_row),
        ] {
            if let Some(m) = re.captures(line) {
                if row.as_ref().is_none_or(|r| r.iteration != iteration) {
                    if let Some(done) = row.take() {
                        rows.push(done);
                    }
                    *row = Some(Row {
                        iteration,
                        seconds,
                        learning_rate,
                        outputs: BTreeMap::new(),
                    });
                }
                let value: f64 = m[3].parse().unwrap();
                row.as_mut()
                    .unwrap()
                    .outputs
                    .insert(m[2].to_string(), value);
            }
            let complete = match (row.as_ref(), rows.first()) {
                (Some(r), Some(first)) => r.outputs.len() == first.outputs.len(),
                _ => false,
            };
            if complete {
                rows.push(row.take().unwrap());
            }
        }
    }
    for rows in [&mut train, &mut test] {
        if rows.len() > 1 {
            rows[0].learning_rate = rows[1].learning_rate;
        }
    }
    (train, test)
}

#[test]
fn the_year_first_prefix_is_what_parse_log_cannot_read() {
    let classic = "I1129 18:02:00.262215  4242 solver.rs:239] Solving tiny";
    let year_first = "I20261129 18:02:00.262215  4242 solver.cpp:239] Solving tiny";
    assert!(seconds_of_day(classic).is_some());
    assert!(seconds_of_day(year_first).is_none());
}

#[test]
fn parse_log_reads_our_logs_into_our_own_records() {
    log::set_boxed_logger(Box::new(KeepGlogLines)).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let folder = tempfile::tempdir().unwrap();
    let origin = folder.path().join("tiny.solver.prototxt");
    let mut param: SolverParameter = parse_text(common::TINY_SOLVER, &origin).unwrap();
    param.snapshot_prefix = Some(folder.path().join("tiny").to_string_lossy().into_owned());
    let backend = CpuBackend::default();
    let mut solver = Solver::new(param.clone(), Path::new(&origin), &backend).unwrap();
    solver.solve(None).unwrap();
    let lines = LINES.lock().unwrap().clone();
    let (train, test) = parse_log(&lines);

    // One train row per displayed iteration. Caffe prints "Iteration N, lr = R" after that
    // iteration's outputs, so parse_log.py gives row N the rate of iteration N - 1 (and row 0
    // the rate of row 1): the same lag it has on upstream's logs.
    let schedule = LrSchedule::new(&param).unwrap();
    let mut state = LrState::default();
    let rates: Vec<f32> = (0..=9).map(|i| schedule.rate(i, &mut state)).collect();
    let iterations: Vec<f64> = train.iter().map(|r| r.iteration).collect();
    assert_eq!(
        iterations,
        (0..9).map(f64::from).collect::<Vec<_>>(),
        "{train:?}"
    );
    for row in &train {
        let expected = f64::from(rates[(row.iteration as usize).saturating_sub(1)]);
        assert!(
            (row.learning_rate - expected).abs() <= 1e-6 * expected,
            "{row:?}"
        );
        assert!(row.outputs.contains_key("loss"), "{row:?}");
        assert!(row.seconds >= 0.0, "{row:?}");
    }

    // One test row per test pass, holding the solver's recorded scores.
    let scores = solver.test_scores();
    assert_eq!(test.len(), scores.len(), "{test:?}");
    for (row, score) in test.iter().zip(scores) {
        assert_eq!(row.iteration, f64::from(score.iter));
        for (name, value) in &score.outputs {
            let parsed = row.outputs[name];
            assert!(
                (parsed - f64::from(*value)).abs() <= 1e-5 * f64::from(value.abs()).max(1e-6),
                "{name}: parsed {parsed}, recorded {value}"
            );
        }
    }
    let tested: Vec<i32> = scores.iter().map(|s| s.iter).collect();
    assert_eq!(tested, vec![0, 3, 6, 9]);
}
