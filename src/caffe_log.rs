//! Reading Caffe training logs, ours and upstream's: the per-iteration loss and learning rate,
//! the train net's outputs and every test pass's outputs.
//!
//! Each line may carry glog's classic prefix (`I1129 18:02:00.262215  1234 solver.cpp:239] `),
//! the newer one with the year (`I20261129 18:16:19.963060 …`) or none at all; lines that are
//! not about training (net setup, warnings, other tools' output) are skipped. The lines read:
//!
//! ```text
//! Iteration 5 (12.3 iter/s, 0.08s/1 iters), loss = 2.3      a displayed training iteration
//! Iteration 5, loss = 2.3                                   older Caffe, and the final one
//!     Train net output #0: loss = 2.3 (* 1 = 2.3 loss)
//! Iteration 5, lr = 0.01
//! Iteration 100, Testing net (#0)
//!     Test net output #0: accuracy = 0.1
//!     Test net output #1: loss = 2.3 (* 1 = 2.3 loss)
//! ```
//!
//! ```
//! let log = rcaffe::caffe_log::parse_log(
//!     "I1129 18:02:00.262215  42 solver.cpp:347] Iteration 100, Testing net (#0)\n\
//!      I1129 18:02:00.262215  42 solver.cpp:414]     Test net output #0: accuracy = 0.75\n",
//! );
//! assert_eq!(log.test_at(100, 0).unwrap().output("accuracy"), Some(0.75));
//! ```

pub mod compare;
pub mod figure;

use anyhow::Context;
use std::path::Path;

/// One named output of a net, as a `… net output #INDEX: NAME = VALUE` line reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub index: usize,
    pub name: String,
    pub value: f64,
}

/// What the log says about one displayed training iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRecord {
    pub iteration: u32,
    /// The learning rate (`Iteration N, lr = …`); the final line after training has none.
    pub lr: Option<f64>,
    /// The (smoothed) loss of `Iteration N … loss = …`.
    pub loss: Option<f64>,
    /// The train net's outputs, in the order logged.
    pub outputs: Vec<Output>,
}

/// One pass of one test net.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRecord {
    pub iteration: u32,
    /// Which test net (`Testing net (#N)`).
    pub net: usize,
    pub outputs: Vec<Output>,
}

impl TestRecord {
    /// The value of the output called `name`, if the pass logged one.
    pub fn output(&self, name: &str) -> Option<f64> {
        output_named(&self.outputs, name)
    }
}

impl TrainRecord {
    /// The value of the train net's output called `name`, if the iteration logged one.
    pub fn output(&self, name: &str) -> Option<f64> {
        output_named(&self.outputs, name)
    }
}

fn output_named(outputs: &[Output], name: &str) -> Option<f64> {
    outputs
        .iter()
        .find(|output| output.name == name)
        .map(|output| output.value)
}

/// Everything read from one log, in the order it was logged.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CaffeLog {
    pub train: Vec<TrainRecord>,
    pub tests: Vec<TestRecord>,
}

impl CaffeLog {
    /// The last record of `iteration`: a resumed run may log an iteration twice, and the later
    /// one is what the finished run went on from.
    pub fn train_at(&self, iteration: u32) -> Option<&TrainRecord> {
        self.train
            .iter()
            .rev()
            .find(|record| record.iteration == iteration)
    }

    /// The last pass of test net `net` at `iteration`.
    pub fn test_at(&self, iteration: u32, net: usize) -> Option<&TestRecord> {
        self.tests
            .iter()
            .rev()
            .find(|record| record.iteration == iteration && record.net == net)
    }

    /// True when the log holds no training iteration and no test pass.
    pub fn is_empty(&self) -> bool {
        self.train.is_empty() && self.tests.is_empty()
    }

    /// The test nets the log has passes of, in ascending order.
    pub fn test_nets(&self) -> Vec<usize> {
        let mut nets: Vec<usize> = self.tests.iter().map(|record| record.net).collect();
        nets.sort_unstable();
        nets.dedup();
        nets
    }
}

/// Reads the log at `path`; bytes that are not UTF-8 are replaced, not refused, since a log
/// cut off mid-write is still worth reading.
pub fn read_log(path: &Path) -> anyhow::Result<CaffeLog> {
    let bytes = std::fs::read(path).with_context(|| format!("reading log {}", path.display()))?;
    Ok(parse_log(&String::from_utf8_lossy(&bytes)))
}

/// Reads the log at `path` and refuses one with no training iteration and no test pass, which
/// is not a training log (or is the wrong file).
pub fn read_training_log(path: &Path) -> anyhow::Result<CaffeLog> {
    let log = read_log(path)?;
    if log.is_empty() {
        anyhow::bail!(
            "{}: no training iterations or test results found; is it a Caffe training log?",
            path.display()
        );
    }
    Ok(log)
}

/// Names for logs in legends and tables: their file stems, with the parent folder added
/// where two stems clash (`lenet/sgd_fixed` and `cifar10_quick/sgd_fixed`), and the path as
/// given where even that clashes.
pub fn default_labels(paths: &[&Path]) -> Vec<String> {
    let stem = |path: &Path| {
        path.file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string())
    };
    let with_folder = |path: &Path| match path.parent().and_then(Path::file_name) {
        Some(folder) => format!("{}/{}", folder.to_string_lossy(), stem(path)),
        None => stem(path),
    };
    let clashes = |names: &[String], name: &String| names.iter().filter(|n| *n == name).count() > 1;
    let stems: Vec<String> = paths.iter().map(|path| stem(path)).collect();
    let folders: Vec<String> = paths.iter().map(|path| with_folder(path)).collect();
    paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            if !clashes(&stems, &stems[i]) {
                stems[i].clone()
            } else if !clashes(&folders, &folders[i]) {
                folders[i].clone()
            } else {
                path.display().to_string()
            }
        })
        .collect()
}

/// Parses a log's text. Never fails: lines it does not recognise are skipped.
pub fn parse_log(text: &str) -> CaffeLog {
    let mut builder = LogBuilder::default();
    for line in text.lines() {
        if let Some(event) = parse_message(strip_glog_prefix(line)) {
            builder.add(event);
        }
    }
    builder.log
}

/// Which record `… net output` lines belong to: the one most recently begun.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenRecord {
    None,
    Train,
    Test,
}

/// Groups the events of consecutive lines into records.
struct LogBuilder {
    log: CaffeLog,
    open: OpenRecord,
}

impl Default for LogBuilder {
    fn default() -> Self {
        Self {
            log: CaffeLog::default(),
            open: OpenRecord::None,
        }
    }
}

impl LogBuilder {
    fn add(&mut self, event: Event) {
        match event {
            Event::TrainLoss { iteration, loss } => {
                self.log.train.push(TrainRecord {
                    iteration,
                    lr: None,
                    loss: Some(loss),
                    outputs: Vec::new(),
                });
                self.open = OpenRecord::Train;
            }
            Event::LearningRate { iteration, lr } => {
                // The rate follows its iteration's loss and outputs; on its own (a log
                // showing only rates) it starts a record.
                match self.log.train.last_mut() {
                    Some(record) if record.iteration == iteration && record.lr.is_none() => {
                        record.lr = Some(lr);
                    }
                    _ => self.log.train.push(TrainRecord {
                        iteration,
                        lr: Some(lr),
                        loss: None,
                        outputs: Vec::new(),
                    }),
                }
                self.open = OpenRecord::Train;
            }
            Event::TestStart { iteration, net } => {
                self.log.tests.push(TestRecord {
                    iteration,
                    net,
                    outputs: Vec::new(),
                });
                self.open = OpenRecord::Test;
            }
            Event::TrainOutput(output) => {
                if let (OpenRecord::Train, Some(record)) = (self.open, self.log.train.last_mut()) {
                    record.outputs.push(output);
                }
            }
            Event::TestOutput(output) => {
                if let (OpenRecord::Test, Some(record)) = (self.open, self.log.tests.last_mut()) {
                    record.outputs.push(output);
                }
            }
        }
    }
}

/// What one recognised line says.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    TrainLoss { iteration: u32, loss: f64 },
    LearningRate { iteration: u32, lr: f64 },
    TestStart { iteration: u32, net: usize },
    TrainOutput(Output),
    TestOutput(Output),
}

/// The message of a glog line (what follows `file:line] `), or the whole line when it has no
/// glog prefix.
fn strip_glog_prefix(line: &str) -> &str {
    let Some((prefix, message)) = line.split_once("] ") else {
        return line;
    };
    let mut words = prefix.split_whitespace();
    let date_ok = words.next().is_some_and(|word| {
        let mut chars = word.chars();
        matches!(chars.next(), Some('I' | 'W' | 'E' | 'F'))
            && chars.as_str().len() >= 4
            && chars.as_str().bytes().all(|b| b.is_ascii_digit())
    });
    let time_ok = words.next().is_some_and(|word| {
        word.bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b'.')
    });
    let thread_ok = words.next().is_some();
    let source_ok = words.next().is_some_and(|word| word.contains(':'));
    if date_ok && time_ok && thread_ok && source_ok && words.next().is_none() {
        message
    } else {
        line
    }
}

fn parse_message(message: &str) -> Option<Event> {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("Iteration ") {
        return parse_iteration_line(rest);
    }
    if let Some(rest) = message.strip_prefix("Train net output #") {
        return parse_output(rest).map(Event::TrainOutput);
    }
    if let Some(rest) = message.strip_prefix("Test net output #") {
        return parse_output(rest).map(Event::TestOutput);
    }
    None
}

/// What follows `Iteration `: `N (… iter/s, …), loss = X`, `N, loss = X`, `N, lr = X` or
/// `N, Testing net (#K)`.
fn parse_iteration_line(rest: &str) -> Option<Event> {
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let iteration: u32 = rest[..digits].parse().ok()?;
    let rest = &rest[digits..];
    if let Some(speed_and_loss) = rest.strip_prefix(" (") {
        let (_, loss) = speed_and_loss.split_once("), loss = ")?;
        return Some(Event::TrainLoss {
            iteration,
            loss: parse_number(loss)?,
        });
    }
    let rest = rest.strip_prefix(", ")?;
    if let Some(loss) = rest.strip_prefix("loss = ") {
        Some(Event::TrainLoss {
            iteration,
            loss: parse_number(loss)?,
        })
    } else if let Some(lr) = rest.strip_prefix("lr = ") {
        Some(Event::LearningRate {
            iteration,
            lr: parse_number(lr)?,
        })
    } else if let Some(net) = rest.strip_prefix("Testing net (#") {
        let (net, _) = net.split_once(')')?;
        Some(Event::TestStart {
            iteration,
            net: net.parse().ok()?,
        })
    } else {
        None
    }
}

/// What follows `net output #`: `INDEX: NAME = VALUE`, maybe with ` (* WEIGHT = … loss)`.
fn parse_output(rest: &str) -> Option<Output> {
    let (index, rest) = rest.split_once(": ")?;
    let (name, value) = rest.split_once(" = ")?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some(Output {
        index: index.parse().ok()?,
        name: name.to_owned(),
        value: parse_number(value)?,
    })
}

/// The number at the start of `text`, up to the first space; `nan`, `-nan` and `inf` (as
/// glibc prints them for a diverged run) included.
fn parse_number(text: &str) -> Option<f64> {
    let word = text.split_whitespace().next()?;
    word.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = "\
I20261129 18:17:41.321591 21047 solver.cpp:347] Iteration 100, Testing net (#0)
I20261129 18:17:41.530764 21050 data_layer.cpp:73] Restarting data prefetching from start.
I20261129 18:17:41.658915 21047 solver.cpp:414]     Test net output #0: accuracy = 0.766
I20261129 18:17:41.658994 21047 solver.cpp:414]     Test net output #1: loss = 0.622914 (* 1 = 0.622914 loss)
I20261129 18:17:41.697479 21047 solver.cpp:239] Iteration 100 (2.65957 iter/s, 0.376s/1 iters), loss = 0.442251
I20261129 18:17:41.697558 21047 solver.cpp:258]     Train net output #0: loss = 0.442251 (* 1 = 0.442251 loss)
I20261129 18:17:41.697571 21047 sgd_solver.cpp:135] Iteration 100, lr = 0.00992565
W20261129 18:17:41.697600 21047 solver.cpp:1] something odd] Iteration 7, lr = 5
I20261129 18:17:51.321916 21047 solver.cpp:327] Iteration 300, loss = 0.495076
";

    #[test]
    fn reads_upstream_lines_with_the_year_prefix() {
        let log = parse_log(UPSTREAM);
        assert_eq!(log.train.len(), 2, "{log:#?}");
        let record = log.train_at(100).unwrap();
        assert_eq!(record.loss, Some(0.442251));
        assert_eq!(record.lr, Some(0.00992565));
        assert_eq!(record.output("loss"), Some(0.442251));
        let last = log.train_at(300).unwrap();
        assert_eq!((last.loss, last.lr), (Some(0.495076), None));
        let test = log.test_at(100, 0).unwrap();
        assert_eq!(test.output("accuracy"), Some(0.766));
        assert_eq!(test.output("loss"), Some(0.622914));
        assert_eq!(test.outputs[1].index, 1);
    }

    #[test]
    fn reads_classic_prefix_and_bare_lines_and_old_loss_lines() {
        let text = "\
I1129 18:02:00.262215  1234 solver.rs:209] Iteration 5, loss = 2.3
    Train net output #0: loss = 2.3 (* 1 = 2.3 loss)
Iteration 5, lr = 0.01
Iteration 6, lr = -nan
not a log line at all
";
        let log = parse_log(text);
        assert_eq!(log.train.len(), 2);
        assert_eq!(log.train[0].loss, Some(2.3));
        assert_eq!(log.train[0].lr, Some(0.01));
        assert_eq!(log.train[0].outputs.len(), 1);
        assert!(log.train[1].lr.is_some_and(f64::is_nan));
        assert_eq!(log.train[1].loss, None);
    }

    #[test]
    fn labels_are_stems_unless_they_clash() {
        let paths = [
            Path::new("runs/lenet/sgd_fixed.log"),
            Path::new("runs/cifar/sgd_fixed.log"),
            Path::new("tri.log"),
        ];
        assert_eq!(
            default_labels(&paths),
            ["lenet/sgd_fixed", "cifar/sgd_fixed", "tri"]
        );
    }

    #[test]
    fn a_repeated_iteration_reads_as_its_last_record() {
        let log = parse_log("Iteration 3, loss = 1\nIteration 3, loss = 2\n");
        assert_eq!(log.train.len(), 2);
        assert_eq!(log.train_at(3).unwrap().loss, Some(2.0));
        assert_eq!(log.train_at(4), None);
    }

    #[test]
    fn outputs_go_to_the_record_they_follow() {
        let text = "\
Iteration 0, Testing net (#1)
    Test net output #0: l2_error = 3
    Train net output #0: stray = 1
Iteration 0 (0 iter/s, 0s/1 iters), loss = 9
    Test net output #0: stray = 2
";
        let log = parse_log(text);
        assert_eq!(log.test_at(0, 1).unwrap().outputs.len(), 1);
        assert_eq!(log.test_at(0, 0), None);
        assert!(log.train_at(0).unwrap().outputs.is_empty());
    }
}
