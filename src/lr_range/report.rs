//! What a range test prints and draws: the report with its solver snippet, and the
//! accuracy-and-loss-against-rate chart (CSV, PNG, SVG).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::bounds::{format_rate, NoBound, Suggestion};
use super::{RangePoint, RangeTest, RangeTestError, Result};
use crate::plot::{Chart, Series};

/// The suggested bounds rounded as printed (two significant digits), when both were found.
pub fn rounded_bounds(suggestion: &Suggestion) -> Option<(f32, f32)> {
    let parse = |rate: f64| format_rate(rate).parse::<f32>().ok();
    match (&suggestion.base_lr, &suggestion.max_lr) {
        (Ok(base), Ok(max)) if base < max => Some((parse(*base)?, parse(*max)?)),
        _ => None,
    }
}

/// What `rcaffe lr-range` prints: where the loss diverged, the suggested bounds (or why there
/// are none), the rule of thumb, and a solver snippet with a stepsize of `stepsize_epochs`
/// epochs when the epoch is known.
pub fn report(test: &RangeTest, suggestion: &Suggestion, stepsize_epochs: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Range test: lr {} to {} over {} iterations{}, {} tests.",
        format_rate(test.min_lr),
        format_rate(test.max_lr),
        test.iterations,
        test.epoch.as_ref().map_or(String::new(), |e| format!(
            " ({:.1} epochs of {} iterations)",
            f64::from(test.iterations) / e.iterations() as f64,
            e.iterations()
        )),
        test.points.len()
    );
    if let Some(d) = &test.divergence {
        let _ = writeln!(
            out,
            "The loss diverged at iteration {} (lr {}, training loss {:.3}): stopped there. \
             Keep max_lr below {}.",
            d.iteration,
            format_rate(d.lr),
            d.loss,
            format_rate(d.lr)
        );
    }
    let bound = |b: &std::result::Result<f64, NoBound>| match b {
        Ok(rate) => format_rate(*rate),
        Err(why) => format!("none found: {why}"),
    };
    let _ = writeln!(
        out,
        "Suggested base_lr (accuracy starts to rise): {}",
        bound(&suggestion.base_lr)
    );
    let _ = writeln!(
        out,
        "Suggested max_lr (the rise stops, turns ragged or falls): {}",
        bound(&suggestion.max_lr)
    );
    if suggestion.max_lr.is_ok() {
        if let Some(stops) = suggestion.rise_stops_lr {
            let ragged = suggestion.ragged_lr.map_or_else(
                || "it does not turn ragged before the rise stops".to_string(),
                |lr| format!("it turns ragged at {}", format_rate(lr)),
            );
            let _ = writeln!(
                out,
                "  (the smoothed accuracy has made 90% of its rise at {}; {ragged})",
                format_rate(stops)
            );
        }
    }
    if let Some((third, quarter)) = suggestion.rule_of_thumb() {
        let _ = writeln!(
            out,
            "The paper's rule of thumb from max_lr: base_lr = max_lr/3 = {} or max_lr/4 = {}",
            format_rate(third),
            format_rate(quarter)
        );
    }
    let Some((base, max)) = rounded_bounds(suggestion) else {
        let _ = writeln!(out, "No solver snippet: both bounds are needed.");
        return out;
    };
    let _ = writeln!(out, "\nSolver snippet:\n");
    let _ = writeln!(out, "lr_policy: \"triangular2\"");
    let _ = writeln!(out, "base_lr: {}", format_rate(f64::from(base)));
    let _ = writeln!(out, "max_lr: {}", format_rate(f64::from(max)));
    match &test.epoch {
        Some(epoch) => {
            let per_epoch = epoch.iterations();
            let stepsize = (stepsize_epochs * per_epoch as f64).round() as u64;
            let _ = writeln!(
                out,
                "stepsize: {stepsize}  # {} epochs of {per_epoch} iterations \
                 ({} images / batch {}); the paper: 2-10 epochs",
                crate::proto::format_g(stepsize_epochs, 2),
                epoch.images,
                epoch.batch_size * epoch.iter_size
            );
            let _ = writeln!(
                out,
                "# end training at a cycle's end: max_iter = a multiple of {}",
                2 * stepsize
            );
        }
        None => {
            let _ = writeln!(
                out,
                "# stepsize: 2-10 epochs, an epoch being training images / batch size (the \
                 train net's source could not be counted)"
            );
        }
    }
    out
}

/// The paths [`write_outputs`] writes for `prefix`: CSV, PNG and SVG.
pub fn output_paths(prefix: &Path) -> [PathBuf; 3] {
    let with = |extension: &str| {
        let mut name = prefix.as_os_str().to_owned();
        name.push(format!(".{extension}"));
        PathBuf::from(name)
    };
    [with("csv"), with("png"), with("svg")]
}

/// The paper's figure: test accuracy (as tested and smoothed) against the rate, the suggested
/// bounds as vertical lines, and the training and test losses on the right axis.
pub fn range_chart(test: &RangeTest, suggestion: &Suggestion, title: &str) -> Chart {
    let accuracy = test.accuracy_curve();
    let (low, high) = accuracy
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, a)| {
            (lo.min(a), hi.max(a))
        });
    let mut chart = Chart::new(title)
        .x_label("learning rate")
        .y_label("test accuracy")
        .y_within(0.0, 1.0)
        .secondary_y_label("loss")
        .series(Series::new("test accuracy", accuracy))
        .series(Series::new(
            "smoothed accuracy",
            suggestion.smoothed.clone(),
        ));
    // Vertical lines; a NaN point breaks the line between two of them.
    let verticals = |rates: &[f64]| -> Vec<(f64, f64)> {
        rates
            .iter()
            .flat_map(|&rate| [(rate, low), (rate, high), (f64::NAN, f64::NAN)])
            .collect()
    };
    let bounds: Vec<f64> = [&suggestion.base_lr, &suggestion.max_lr]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    if !bounds.is_empty() {
        chart = chart.series(Series::new("suggested bounds", verticals(&bounds)));
    }
    // The reading behind max_lr, where the curve shows it.
    if let Some(stops) = suggestion.rise_stops_lr {
        chart = chart.series(Series::new("rise stops (90%)", verticals(&[stops])));
    }
    if let Some(ragged) = suggestion.ragged_lr {
        chart = chart.series(Series::new("turns ragged", verticals(&[ragged])));
    }
    // A diverged loss (80, NaN) would flatten the rest: losses are drawn up to twice the
    // larger of the first train and test losses, a divergence as a line hitting that ceiling.
    let ceiling = test
        .points
        .first()
        .map_or(f64::INFINITY, |p| 2.0 * p.train_loss.max(p.test_loss));
    let loss = |pick: fn(&RangePoint) -> f64| -> Vec<(f64, f64)> {
        test.points
            .iter()
            .map(|p| {
                let value = pick(p);
                let shown = if value.is_finite() {
                    value.min(ceiling)
                } else {
                    ceiling
                };
                (p.lr, shown)
            })
            .collect()
    };
    chart
        .series(Series::new("train loss", loss(|p| p.train_loss)).on_secondary_axis())
        .series(Series::new("test loss", loss(|p| p.test_loss)).on_secondary_axis())
}

/// Writes `PREFIX.csv`, `PREFIX.png` and `PREFIX.svg`; returns their paths.
pub fn write_outputs(
    test: &RangeTest,
    suggestion: &Suggestion,
    prefix: &Path,
    title: &str,
) -> Result<[PathBuf; 3]> {
    let paths = output_paths(prefix);
    let [csv, png, svg] = &paths;
    if let Some(folder) = csv.parent().filter(|f| !f.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|error| RangeTestError::Io {
            path: folder.to_path_buf(),
            error,
        })?;
    }
    std::fs::write(csv, test.to_csv()).map_err(|error| RangeTestError::Io {
        path: csv.clone(),
        error,
    })?;
    let chart = range_chart(test, suggestion, title);
    chart.write(png)?;
    chart.write(svg)?;
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_print_with_two_significant_digits() {
        assert_eq!(format_rate(0.001234), "0.0012");
        assert_eq!(format_rate(0.03), "0.03");
        assert_eq!(format_rate(0.0299), "0.03");
        assert_eq!(format_rate(1.5), "1.5");
        assert_eq!(format_rate(12.0), "12");
    }
}
