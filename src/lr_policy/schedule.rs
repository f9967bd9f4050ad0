//! The `plot-lr` command: a solver's learning rate at every iteration, as CSV or as a chart.

use super::{LrPolicyError, LrSchedule};
use crate::plot::{Chart, ImageFormat, PlotError, Series};
use crate::proto::caffe::SolverParameter;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The output extensions [`write_lr_schedule`] understands.
pub const SCHEDULE_EXTENSIONS: [&str; 3] = ["csv", "png", "svg"];

/// Why a learning-rate schedule could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Policy(#[from] LrPolicyError),
    #[error(
        "{}: no iteration count: the solver's max_iter is {max_iter}; give the number of \
         iterations to plot",
        path.display()
    )]
    NoIterations { path: PathBuf, max_iter: i32 },
    #[error(
        "{}: unsupported output format; supported extensions: {}",
        path.display(),
        SCHEDULE_EXTENSIONS.join(", ")
    )]
    UnsupportedFormat { path: PathBuf },
    /// The cause's text is part of the message, so the cause is not also given as the error's
    /// source.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// Writes the learning rate of iterations `0..=iterations` (default: the solver's `max_iter`) to
/// `output`: `.csv` as `iteration,lr` rows (each rate printed so that it parses back to the same
/// `f32`), `.png` or `.svg` as a chart like the paper's figure 2.
pub fn write_lr_schedule(
    solver: &SolverParameter,
    iterations: Option<u32>,
    output: &Path,
) -> Result<(), ScheduleError> {
    let is_csv = output
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if !is_csv && ImageFormat::from_path(output).is_none() {
        return Err(ScheduleError::UnsupportedFormat {
            path: output.to_path_buf(),
        });
    }
    let schedule = LrSchedule::new(solver)?;
    let last = match iterations {
        Some(n) => n,
        None => u32::try_from(solver.max_iter()).map_err(|_| ScheduleError::NoIterations {
            path: output.to_path_buf(),
            max_iter: solver.max_iter(),
        })?,
    };
    let rates = (0..=last).zip(schedule.rates());

    if is_csv {
        let io_error = |error| ScheduleError::Io {
            path: output.to_path_buf(),
            error,
        };
        let file = std::fs::File::create(output).map_err(io_error)?;
        let mut out = std::io::BufWriter::new(file);
        writeln!(out, "iteration,lr").map_err(io_error)?;
        for (iter, lr) in rates {
            writeln!(out, "{iter},{lr}").map_err(io_error)?;
        }
        out.flush().map_err(io_error)
    } else {
        let points = rates
            .map(|(iter, lr)| (f64::from(iter), f64::from(lr)))
            .collect();
        Chart::new("Learning rate schedule")
            .x_label("iteration")
            .y_label("learning rate")
            .series(Series::new(schedule.policy_name(), points))
            .write(output)?;
        Ok(())
    }
}
