//! One or more runs' training curves in one figure, as the CLR paper's figure 1 overlays a
//! fixed and a triangular2 run: test accuracy with the learning rate (dashed, right axis) in
//! the top panel, training loss in the bottom one. The two share iterations but not scales,
//! hence two panels rather than one crowded axis.

use super::{default_labels, read_training_log, CaffeLog, TrainRecord};
use crate::plot::{Chart, Figure, Series};
use std::path::{Path, PathBuf};

/// `rcaffe plot-log`: reads every log and writes their curves, overlaid, to `output` (PNG or
/// SVG by extension). `labels` name the logs in order, the file stems where absent; `title`
/// defaults to the labels joined by "vs".
pub fn plot_log_files(
    logs: &[PathBuf],
    labels: &[String],
    title: Option<&str>,
    output: &Path,
) -> anyhow::Result<()> {
    if logs.is_empty() {
        anyhow::bail!("plot-log needs at least one log");
    }
    if labels.len() > logs.len() {
        anyhow::bail!(
            "{} labels for {} logs: give at most one label a log",
            labels.len(),
            logs.len()
        );
    }
    let parsed = logs
        .iter()
        .map(|path| read_training_log(path))
        .collect::<anyhow::Result<Vec<CaffeLog>>>()?;
    let paths: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    let mut names = default_labels(&paths);
    for (name, label) in names.iter_mut().zip(labels) {
        name.clone_from(label);
    }
    let runs: Vec<Run<'_>> = names
        .iter()
        .zip(&parsed)
        .map(|(label, log)| Run { label, log })
        .collect();
    let joined = names.join(" vs ");
    // A title longer than the figure is wide says less than a count.
    let title = match title {
        Some(title) => title.to_owned(),
        None if joined.chars().count() <= 70 => joined,
        None => format!("{} training runs", names.len()),
    };
    training_curves(&title, &runs).write(output)?;
    Ok(())
}

/// A log and the name its curves carry in the legend.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub label: &'a str,
    pub log: &'a CaffeLog,
}

/// Which test outputs the top panel shows: those named like accuracy if any run has one
/// (the figure the paper plots), otherwise every test output (an autoencoder's losses).
fn shown_test_outputs(runs: &[Run<'_>]) -> (Vec<(usize, String)>, &'static str) {
    let mut all: Vec<(usize, String)> = Vec::new();
    for run in runs {
        for record in &run.log.tests {
            for output in &record.outputs {
                let key = (record.net, output.name.clone());
                if !all.contains(&key) {
                    all.push(key);
                }
            }
        }
    }
    all.sort_by_key(|(net, _)| *net);
    let accuracy: Vec<(usize, String)> = all
        .iter()
        .filter(|(_, name)| name.to_ascii_lowercase().contains("accuracy"))
        .cloned()
        .collect();
    if accuracy.is_empty() {
        (all, "test output")
    } else {
        (accuracy, "test accuracy")
    }
}

/// The figure of `runs`' curves. Each run keeps one colour throughout (its rate dashed)
/// unless it shows several test outputs, which then get colours of their own.
pub fn training_curves(title: &str, runs: &[Run<'_>]) -> Figure {
    let (test_outputs, test_label) = shown_test_outputs(runs);
    let several_runs = runs.len() > 1;
    let several_nets = test_outputs
        .iter()
        .any(|(net, _)| *net != test_outputs[0].0);
    // Colours per run, so a run's outputs, loss and rate are told apart from other runs'.
    let colors_per_run = test_outputs.len().max(1);
    let name = |run: &Run<'_>, what: &str| {
        if several_runs {
            format!("{} {what}", run.label)
        } else {
            what.to_owned()
        }
    };

    let losses_name_every_run = runs
        .iter()
        .all(|run| run.log.train.iter().any(|record| record.loss.is_some()));
    let rate_label = if several_runs {
        "learning rate (dashed)"
    } else {
        "learning rate"
    };
    let mut test_panel = Chart::new("")
        .x_label("iteration")
        .y_label(test_label)
        .secondary_y_label(rate_label);
    let mut loss_panel = Chart::new("")
        .x_label("iteration")
        .y_label("training loss")
        .secondary_y_label(rate_label);
    let mut rate_series = Vec::new();
    for (run_index, run) in runs.iter().enumerate() {
        let run_color = run_index * colors_per_run;
        for (output_index, (net, output)) in test_outputs.iter().enumerate() {
            let points: Vec<(f64, f64)> = run
                .log
                .tests
                .iter()
                .filter(|record| record.net == *net)
                .filter_map(|record| Some((f64::from(record.iteration), record.output(output)?)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let what = match (several_nets, test_outputs.len() > 1 || !several_runs) {
                (true, _) => format!("#{net} {output}"),
                (false, true) => output.clone(),
                (false, false) => String::new(),
            };
            let label = if several_runs && what.is_empty() {
                // The loss panel's legend names the runs in the same colours; a second
                // legend would only crowd the accuracy curves.
                if losses_name_every_run {
                    String::new()
                } else {
                    run.label.to_owned()
                }
            } else {
                name(run, &what)
            };
            test_panel =
                test_panel.series(Series::new(label, points).color(run_color + output_index));
        }
        let losses = train_points(run, |record| record.loss);
        if !losses.is_empty() {
            let label = if several_runs {
                run.label.to_owned()
            } else {
                "loss".to_owned()
            };
            loss_panel = loss_panel.series(Series::new(label, losses).color(run_color));
        }
        let rates = train_points(run, |record| record.lr);
        if !rates.is_empty() {
            // With several runs the rates share their runs' colours and legend rows (the
            // axis label says they are the dashed lines), keeping the legend short.
            // A lone run's rate takes a colour of its own, after its test outputs'.
            let (label, color) = if several_runs {
                ("", run_color)
            } else {
                ("lr", test_outputs.len())
            };
            rate_series.push(
                Series::new(label, rates)
                    .color(color)
                    .dashed()
                    .on_secondary_axis(),
            );
        }
    }
    stack_panels(title, test_panel, loss_panel, rate_series)
}

/// `(iteration, value)` for each training record of `run` that has the value.
fn train_points(run: &Run<'_>, value: impl Fn(&TrainRecord) -> Option<f64>) -> Vec<(f64, f64)> {
    run.log
        .train
        .iter()
        .filter_map(|record| Some((f64::from(record.iteration), value(record)?)))
        .collect()
}

/// The figure of the test panel over the loss panel, each shown when it has curves (the loss
/// panel also when neither has). The rate goes with the test curves, which are smooth enough
/// to read it against; with no test curves, it goes with the loss.
fn stack_panels(
    title: &str,
    mut test_panel: Chart,
    mut loss_panel: Chart,
    mut rate_series: Vec<Series>,
) -> Figure {
    let mut panels = Vec::new();
    if !test_panel.series.is_empty() {
        for series in rate_series.drain(..) {
            test_panel = test_panel.series(series);
        }
        panels.push(test_panel);
    }
    for series in rate_series {
        loss_panel = loss_panel.series(series);
    }
    if !loss_panel.series.is_empty() || panels.is_empty() {
        panels.push(loss_panel);
    }
    panels
        .into_iter()
        .fold(Figure::new(title), |figure, panel| figure.panel(panel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caffe_log::parse_log;
    use crate::plot::YAxis;

    #[test]
    fn accuracy_and_rate_above_loss_below() {
        let log = parse_log(
            "Iteration 0, Testing net (#0)\nTest net output #0: accuracy = 0.1\n\
             Test net output #1: loss = 2.3\n\
             Iteration 0 (0 iter/s, 0s/1 iters), loss = 2.4\nIteration 0, lr = 0.01\n",
        );
        let runs = [
            Run {
                label: "fixed",
                log: &log,
            },
            Run {
                label: "triangular2",
                log: &log,
            },
        ];
        let figure = training_curves("t", &runs);
        assert_eq!(figure.panels.len(), 2);
        let names: Vec<&str> = figure.panels[0]
            .series
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        // The loss panel's legend names the runs; the rates are dashed in their colours.
        assert_eq!(names, ["", "", "", ""]);
        let loss_names: Vec<&str> = figure.panels[1]
            .series
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(loss_names, ["fixed", "triangular2"]);
        assert!(figure.panels[0].series[3].dashed);
        assert_eq!(
            figure.panels[0].series[1].color,
            figure.panels[0].series[3].color
        );
        assert_eq!(figure.panels[0].series[2].axis, YAxis::Secondary);
        assert_eq!(figure.panels[1].series.len(), 2);
    }

    #[test]
    fn without_tests_the_rate_joins_the_loss() {
        let log = parse_log("Iteration 0, loss = 2\nIteration 0, lr = 0.1\n");
        let figure = training_curves(
            "t",
            &[Run {
                label: "only",
                log: &log,
            }],
        );
        assert_eq!(figure.panels.len(), 1);
        assert_eq!(figure.panels[0].series.len(), 2);
    }
}
