//! Two training logs side by side: for every figure both logged (learning rate, training
//! loss, each train and test net output) at the same iteration, how far apart they are.
//!
//! ```
//! use rcaffe::caffe_log::{compare::{compare_logs, Quantity}, parse_log};
//! let ours = parse_log("Iteration 1, lr = 0.01\nIteration 2, lr = 0.02\n");
//! let theirs = parse_log("Iteration 1, lr = 0.01\nIteration 2, lr = 0.025\n");
//! let comparison = compare_logs(&ours, &theirs);
//! let lr = comparison.find(&Quantity::LearningRate).unwrap();
//! assert_eq!(lr.aligned, 2);
//! assert_eq!(lr.largest_absolute.as_ref().unwrap().iteration, 2);
//! ```

use super::figure::{training_curves, Run};
use super::{default_labels, read_training_log, CaffeLog};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::path::Path;

/// `rcaffe compare-logs`: reads both logs, compares them and returns the report; with
/// `overlay`, also writes both runs' curves in one figure (PNG or SVG by extension). `labels`
/// name the logs, the file stems where absent.
pub fn compare_log_files(
    a: &Path,
    b: &Path,
    labels: &[String],
    overlay: Option<&Path>,
) -> anyhow::Result<String> {
    if labels.len() > 2 {
        anyhow::bail!(
            "compare-logs takes at most two labels, one a log; got {}",
            labels.len()
        );
    }
    let log_a = read_training_log(a)?;
    let log_b = read_training_log(b)?;
    let mut names = default_labels(&[a, b]);
    for (name, label) in names.iter_mut().zip(labels) {
        name.clone_from(label);
    }
    let comparison = compare_logs(&log_a, &log_b);
    if let Some(path) = overlay {
        let runs = [
            Run {
                label: &names[0],
                log: &log_a,
            },
            Run {
                label: &names[1],
                log: &log_b,
            },
        ];
        training_curves(&format!("{} vs {}", names[0], names[1]), &runs).write(path)?;
    }
    Ok(comparison.report(&names[0], &names[1]))
}

/// A figure a log reports at some iterations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Quantity {
    LearningRate,
    /// The loss of the `Iteration N …, loss = X` line (smoothed over `average_loss`).
    TrainLoss,
    /// One of the train net's outputs, by name.
    TrainOutput {
        name: String,
    },
    /// One of a test net's outputs, by net and name.
    TestOutput {
        net: usize,
        name: String,
    },
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quantity::LearningRate => f.write_str("lr"),
            Quantity::TrainLoss => f.write_str("train loss"),
            Quantity::TrainOutput { name } => write!(f, "train output {name}"),
            Quantity::TestOutput { net, name } => write!(f, "test net #{net} {name}"),
        }
    }
}

/// The two logs' values of a quantity at one iteration, and how far apart they are.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub iteration: u32,
    pub a: f64,
    pub b: f64,
    /// `|a − b|`; infinite when exactly one of them is NaN.
    pub absolute: f64,
    /// `|a − b| / max(|a|, |b|)`, 0 when both are 0: symmetric, and at most 1 unless the signs
    /// differ.
    pub relative: f64,
}

impl Difference {
    fn new(iteration: u32, a: f64, b: f64) -> Self {
        let (absolute, relative) = if a == b || (a.is_nan() && b.is_nan()) {
            (0.0, 0.0)
        } else if a.is_nan() || b.is_nan() || a.is_infinite() || b.is_infinite() {
            // A run that diverged in one log only is as different as it gets.
            (f64::INFINITY, f64::INFINITY)
        } else {
            let absolute = (a - b).abs();
            (absolute, absolute / a.abs().max(b.abs()))
        };
        Self {
            iteration,
            a,
            b,
            absolute,
            relative,
        }
    }
}

/// How one quantity compares across the two logs.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityComparison {
    pub quantity: Quantity,
    /// Iterations at which both logs have the quantity.
    pub aligned: usize,
    /// Iterations at which only the first (second) log has it.
    pub only_in_a: usize,
    pub only_in_b: usize,
    /// The aligned iteration with the largest absolute (relative) difference, the earliest on
    /// a tie; `None` when nothing is aligned.
    pub largest_absolute: Option<Difference>,
    pub largest_relative: Option<Difference>,
}

/// Every quantity either log reports, compared iteration by iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct LogComparison {
    /// In [`Quantity`]'s order: lr, train loss, train outputs, then test outputs by net.
    pub quantities: Vec<QuantityComparison>,
    pub a: LogSummary,
    pub b: LogSummary,
}

/// What a log covers, for the report's header.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSummary {
    /// Distinct training iterations.
    pub iterations: usize,
    pub first_iteration: Option<u32>,
    pub last_iteration: Option<u32>,
    /// Test passes, all nets together.
    pub test_passes: usize,
}

impl LogSummary {
    fn of(log: &CaffeLog) -> Self {
        let iterations: BTreeSet<u32> = log.train.iter().map(|record| record.iteration).collect();
        Self {
            iterations: iterations.len(),
            first_iteration: iterations.first().copied(),
            last_iteration: iterations.last().copied(),
            test_passes: log.tests.len(),
        }
    }
}

/// Compares two logs, aligning them by iteration. Where a log repeats an iteration (a
/// resumed run), its last record counts, as in [`CaffeLog::train_at`].
pub fn compare_logs(a: &CaffeLog, b: &CaffeLog) -> LogComparison {
    let values_a = quantity_values(a);
    let values_b = quantity_values(b);
    let quantities: BTreeSet<&Quantity> = values_a.keys().chain(values_b.keys()).collect();
    let empty = BTreeMap::new();
    let quantities = quantities
        .into_iter()
        .map(|quantity| {
            compare_values(
                quantity,
                values_a.get(quantity).unwrap_or(&empty),
                values_b.get(quantity).unwrap_or(&empty),
            )
        })
        .collect();
    LogComparison {
        quantities,
        a: LogSummary::of(a),
        b: LogSummary::of(b),
    }
}

/// Each quantity's value by iteration; a later record of the same iteration replaces an
/// earlier one.
fn quantity_values(log: &CaffeLog) -> BTreeMap<Quantity, BTreeMap<u32, f64>> {
    let mut values: BTreeMap<Quantity, BTreeMap<u32, f64>> = BTreeMap::new();
    let mut set = |quantity: Quantity, iteration: u32, value: f64| {
        values.entry(quantity).or_default().insert(iteration, value);
    };
    for record in &log.train {
        if let Some(lr) = record.lr {
            set(Quantity::LearningRate, record.iteration, lr);
        }
        if let Some(loss) = record.loss {
            set(Quantity::TrainLoss, record.iteration, loss);
        }
        for output in &record.outputs {
            let name = output.name.clone();
            set(
                Quantity::TrainOutput { name },
                record.iteration,
                output.value,
            );
        }
    }
    for record in &log.tests {
        for output in &record.outputs {
            let quantity = Quantity::TestOutput {
                net: record.net,
                name: output.name.clone(),
            };
            set(quantity, record.iteration, output.value);
        }
    }
    values
}

fn compare_values(
    quantity: &Quantity,
    a: &BTreeMap<u32, f64>,
    b: &BTreeMap<u32, f64>,
) -> QuantityComparison {
    let differences: Vec<Difference> = a
        .iter()
        .filter_map(|(&iteration, &value_a)| {
            let &value_b = b.get(&iteration)?;
            Some(Difference::new(iteration, value_a, value_b))
        })
        .collect();
    let aligned = differences.len();
    // Strictly greater, so the earliest iteration wins a tie.
    let largest = |key: fn(&Difference) -> f64| {
        differences
            .iter()
            .fold(None::<&Difference>, |best, candidate| match best {
                Some(best) if key(candidate) <= key(best) => Some(best),
                _ => Some(candidate),
            })
            .cloned()
    };
    QuantityComparison {
        quantity: quantity.clone(),
        aligned,
        only_in_a: a.len() - aligned,
        only_in_b: b.len() - aligned,
        largest_absolute: largest(|d| d.absolute),
        largest_relative: largest(|d| d.relative),
    }
}

impl LogComparison {
    /// The comparison of `quantity`, if either log reports it.
    pub fn find(&self, quantity: &Quantity) -> Option<&QuantityComparison> {
        self.quantities
            .iter()
            .find(|compared| &compared.quantity == quantity)
    }

    /// Aligned values, all quantities together.
    pub fn aligned(&self) -> usize {
        self.quantities
            .iter()
            .map(|compared| compared.aligned)
            .sum()
    }

    /// The largest absolute difference of any quantity (the first listed on a tie).
    pub fn largest_absolute(&self) -> Option<(&Quantity, &Difference)> {
        self.largest_by(
            |compared| compared.largest_absolute.as_ref(),
            |d| d.absolute,
        )
    }

    /// The largest relative difference of any quantity (the first listed on a tie).
    pub fn largest_relative(&self) -> Option<(&Quantity, &Difference)> {
        self.largest_by(
            |compared| compared.largest_relative.as_ref(),
            |d| d.relative,
        )
    }

    fn largest_by<'s>(
        &'s self,
        pick: impl Fn(&'s QuantityComparison) -> Option<&'s Difference>,
        key: impl Fn(&Difference) -> f64,
    ) -> Option<(&'s Quantity, &'s Difference)> {
        self.quantities
            .iter()
            .filter_map(|compared| Some((&compared.quantity, pick(compared)?)))
            .fold(None, |best, candidate| match best {
                Some(best) if key(candidate.1) <= key(best.1) => Some(best),
                _ => Some(candidate),
            })
    }

    /// True when the logs share at least one value and every shared value is equal.
    pub fn is_identical(&self) -> bool {
        self.aligned() > 0
            && self
                .largest_absolute()
                .is_some_and(|(_, d)| d.absolute == 0.0)
    }

    /// The comparison as a table, one row per quantity, then an overall line; `label_a` and
    /// `label_b` name the logs (their file stems, say).
    pub fn report(&self, label_a: &str, label_b: &str) -> String {
        let mut out = String::new();
        for (label, summary) in [("A", label_a), ("B", label_b)]
            .into_iter()
            .zip([&self.a, &self.b])
            .map(|((letter, name), summary)| (format!("{letter} = {name}"), summary))
        {
            let span = match (summary.first_iteration, summary.last_iteration) {
                (Some(first), Some(last)) => format!(" ({first}–{last})"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "{label}: {} training iterations{span}, {} test passes",
                summary.iterations, summary.test_passes
            );
        }
        out.push('\n');

        let header = [
            "quantity",
            "aligned",
            "max |A−B|",
            "at iter",
            "A",
            "B",
            "max rel",
            "at iter",
        ];
        let mut rows: Vec<[String; 8]> = vec![header.map(str::to_owned)];
        for compared in &self.quantities {
            let mut row: [String; 8] = Default::default();
            row[0] = compared.quantity.to_string();
            row[1] = compared.aligned.to_string();
            match (&compared.largest_absolute, &compared.largest_relative) {
                // Equal everywhere: no iteration stands out.
                (Some(absolute), Some(_)) if absolute.absolute == 0.0 => {
                    row[2] = "0".to_owned();
                    row[6] = "0".to_owned();
                }
                (Some(absolute), Some(relative)) => {
                    row[2] = significant(absolute.absolute);
                    row[3] = absolute.iteration.to_string();
                    row[4] = significant(absolute.a);
                    row[5] = significant(absolute.b);
                    row[6] = significant(relative.relative);
                    row[7] = relative.iteration.to_string();
                }
                _ => {
                    let missing = match (compared.only_in_a, compared.only_in_b) {
                        (0, _) => "only in B",
                        (_, 0) => "only in A",
                        _ => "no common iteration",
                    };
                    row[2] = missing.to_owned();
                }
            }
            rows.push(row);
        }
        out.push_str(&format_table(&rows));
        out.push('\n');
        out.push_str(&self.overall_line());
        out.push('\n');
        out
    }

    fn overall_line(&self) -> String {
        let aligned = self.aligned();
        let quantities = self.quantities.iter().filter(|c| c.aligned > 0).count();
        match (self.largest_absolute(), self.largest_relative()) {
            _ if aligned == 0 => {
                "overall: nothing to compare: the logs share no iteration of any quantity"
                    .to_owned()
            }
            _ if self.is_identical() => format!(
                "overall: identical: all {aligned} aligned values of {quantities} quantities agree"
            ),
            (Some((abs_quantity, absolute)), Some((rel_quantity, relative))) => format!(
                "overall: {aligned} aligned values of {quantities} quantities; largest absolute \
                 difference {} ({abs_quantity} at iteration {}), largest relative difference {} \
                 ({rel_quantity} at iteration {})",
                significant(absolute.absolute),
                absolute.iteration,
                significant(relative.relative),
                relative.iteration
            ),
            _ => format!("overall: {aligned} aligned values of {quantities} quantities"),
        }
    }
}

/// Left-aligned first column, the others right-aligned, two spaces apart.
fn format_table(rows: &[[String; 8]]) -> String {
    let mut widths = [0usize; 8];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, (cell, &width)) in row.iter().zip(&widths).enumerate() {
            let pad = " ".repeat(width - cell.chars().count());
            if column == 0 {
                line.push_str(cell);
                line.push_str(&pad);
            } else {
                line.push_str("  ");
                line.push_str(&pad);
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Six significant digits, as C's `%g` prints them (and Caffe's logs do).
pub fn significant(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return value.to_string();
    }
    let exponent = value.abs().log10().floor() as i32;
    if (-4..6).contains(&exponent) {
        let decimals = (5 - exponent).max(0) as usize;
        trim_fraction(&format!("{value:.decimals$}")).to_owned()
    } else {
        let text = format!("{value:.5e}");
        match text.split_once('e') {
            Some((mantissa, exponent)) => format!("{}e{exponent}", trim_fraction(mantissa)),
            None => text,
        }
    }
}

fn trim_fraction(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caffe_log::parse_log;

    #[test]
    fn differences_are_symmetric_and_nan_aware() {
        let d = Difference::new(0, 2.0, 1.0);
        assert_eq!((d.absolute, d.relative), (1.0, 0.5));
        assert_eq!(Difference::new(0, f64::NAN, f64::NAN).absolute, 0.0);
        assert_eq!(Difference::new(0, f64::NAN, 1.0).relative, f64::INFINITY);
        assert_eq!(Difference::new(0, 0.0, 0.0).relative, 0.0);
    }

    #[test]
    fn test_outputs_are_compared_per_net_and_name() {
        let a = parse_log(
            "Iteration 0, Testing net (#0)\nTest net output #0: accuracy = 0.5\n\
             Iteration 0, Testing net (#1)\nTest net output #0: accuracy = 0.25\n",
        );
        let b = parse_log(
            "Iteration 0, Testing net (#0)\nTest net output #0: accuracy = 0.5\n\
             Iteration 0, Testing net (#1)\nTest net output #0: accuracy = 0.75\n",
        );
        let comparison = compare_logs(&a, &b);
        assert_eq!(comparison.quantities.len(), 2);
        let (quantity, difference) = comparison.largest_absolute().unwrap();
        assert_eq!(
            quantity,
            &Quantity::TestOutput {
                net: 1,
                name: "accuracy".into()
            }
        );
        assert_eq!(difference.absolute, 0.5);
        assert!(!comparison.is_identical());
        assert!(comparison.report("a", "b").contains("test net #1 accuracy"));
    }

    #[test]
    fn significant_prints_like_percent_g() {
        assert_eq!(significant(0.00992565), "0.00992565");
        assert_eq!(significant(956.43), "956.43");
        assert_eq!(significant(1.0 / 3.0), "0.333333");
        assert_eq!(significant(1.5e-9), "1.5e-9");
        assert_eq!(significant(7.361e-5), "7.361e-5");
        assert_eq!(significant(0.0), "0");
    }
}
