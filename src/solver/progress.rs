//! A one-line progress bar on stderr during `rcaffe train`, shown only when stderr is a
//! terminal (never in a log file or CI output): iteration/max_iter, rate, ETA and the smoothed
//! loss, redrawn at most every 200 ms, and during a test pass that pass's progress. The rate and
//! the ETA count training time only. The solver clears it before each of its log lines, and it
//! ends with a newline.

use crate::progress::TerminalLine;
use std::time::{Duration, Instant};
/// The width of the `[####....]` part.
const BAR_WIDTH: usize = 20;

/// `secs` as `45s`, `4m 39s` or `2h 05m`; `--` when not finite or negative.
pub fn format_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "--".to_string();
    }
    let s = secs.round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// The bar's text: `iter` of `max_iter` done, `done` of them in `elapsed` (the rate and ETA
/// come from those), and the smoothed loss.
pub fn format_progress(
    iter: i32,
    max_iter: i32,
    done: i32,
    elapsed: Duration,
    loss: f32,
) -> String {
    let max = max_iter.max(1);
    let fraction = (f64::from(iter.clamp(0, max)) / f64::from(max)).clamp(0.0, 1.0);
    let filled = (fraction * BAR_WIDTH as f64).round() as usize;
    let bar: String = "#".repeat(filled) + &".".repeat(BAR_WIDTH - filled);
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 && done > 0 {
        f64::from(done) / secs
    } else {
        0.0
    };
    let remaining = f64::from((max_iter - iter).max(0));
    let eta = if remaining == 0.0 {
        "0s".to_string()
    } else if rate > 0.0 {
        format_duration(remaining / rate)
    } else {
        "--".to_string()
    };
    let rate = if rate >= 100.0 {
        format!("{rate:.0}")
    } else if rate >= 10.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.2}")
    };
    let loss = if loss != 0.0 && loss.abs() < 1e-3 {
        format!("{loss:.3e}")
    } else {
        format!("{loss:.4}")
    };
    format!(
        "Iteration {iter}/{max_iter} [{bar}] {:.0}% | {rate} iter/s | ETA {eta} | loss {loss}",
        fraction * 100.0
    )
}

/// Training time: wall time since a start, less the time spent in test passes, so that the
/// rate and the ETA count only training iterations.
#[derive(Debug, Clone, Copy)]
struct TrainingClock {
    start: Instant,
    tested: Duration,
    testing_since: Option<Instant>,
}

impl TrainingClock {
    fn new(now: Instant) -> Self {
        Self {
            start: now,
            tested: Duration::ZERO,
            testing_since: None,
        }
    }

    fn begin_test(&mut self, now: Instant) {
        self.testing_since.get_or_insert(now);
    }

    fn end_test(&mut self, now: Instant) {
        if let Some(since) = self.testing_since.take() {
            self.tested += now.saturating_duration_since(since);
        }
    }

    /// Time spent training up to `now`: a test pass under way counts as testing.
    fn training(&self, now: Instant) -> Duration {
        let testing = self
            .testing_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        now.saturating_duration_since(self.start)
            .saturating_sub(self.tested + testing)
    }
}

/// What the bar adds while test net `net` runs batch `batch` of `batches`.
fn testing_suffix(net: usize, batch: i32, batches: i32) -> String {
    format!(" | testing net #{net}: {batch}/{batches}")
}

/// The bar's state.
#[derive(Debug)]
pub(super) struct Progress {
    line: TerminalLine,
    clock: TrainingClock,
    start_iter: i32,
}

impl Progress {
    /// A bar, when stderr is a terminal.
    pub(super) fn if_terminal() -> Option<Self> {
        TerminalLine::if_terminal().map(|line| Self {
            line,
            clock: TrainingClock::new(Instant::now()),
            start_iter: 0,
        })
    }

    /// Counts the rate from iteration `iter` on, from now; the first draw comes 200 ms later,
    /// when the rate means something.
    pub(super) fn restart(&mut self, iter: i32) {
        self.clock = TrainingClock::new(Instant::now());
        self.start_iter = iter;
        self.line.defer();
    }

    fn text(&self, iter: i32, max_iter: i32, loss: f32) -> String {
        format_progress(
            iter,
            max_iter,
            iter - self.start_iter,
            self.clock.training(Instant::now()),
            loss,
        )
    }

    /// Redraws the bar if the last draw is at least 200 ms old.
    pub(super) fn tick(&mut self, iter: i32, max_iter: i32, loss: f32) {
        if self.line.due() {
            let text = self.text(iter, max_iter, loss);
            self.line.draw(&text);
        }
    }

    /// A test pass begins: its time is left out of the rate and the ETA.
    pub(super) fn begin_test(&mut self) {
        self.clock.begin_test(Instant::now());
    }

    /// Redraws the bar during a test pass, with the pass's progress, if a draw is due.
    pub(super) fn test_tick(&mut self, training: (i32, i32, f32), net: usize, batch: i32, of: i32) {
        if self.line.due() {
            let (iter, max_iter, loss) = training;
            let text = self.text(iter, max_iter, loss) + &testing_suffix(net, batch, of);
            self.line.draw(&text);
        }
    }

    /// The test pass is over; training time counts again.
    pub(super) fn end_test(&mut self) {
        self.clock.end_test(Instant::now());
    }

    /// Erases the bar's line, before a log line is written.
    pub(super) fn clear(&mut self) {
        self.line.clear();
    }

    /// Draws the final state and ends the line.
    pub(super) fn finish(&mut self, iter: i32, max_iter: i32, loss: f32) {
        let text = self.text(iter, max_iter, loss);
        self.line.finish(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_passes_are_left_out_of_the_training_time() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut clock = TrainingClock::new(t0);
        assert_eq!(clock.training(at(2)), Duration::from_secs(2));
        clock.begin_test(at(2));
        // During the pass the training time stands still.
        assert_eq!(clock.training(at(7)), Duration::from_secs(2));
        clock.end_test(at(10));
        assert_eq!(clock.training(at(12)), Duration::from_secs(4));
        // A second pass adds up; an unmatched end changes nothing.
        clock.begin_test(at(12));
        clock.end_test(at(14));
        clock.end_test(at(20));
        assert_eq!(clock.training(at(20)), Duration::from_secs(10));
        // 40 iterations in those 10 s of training, 60 left: 15 s, not the 25 s the wall time
        // (20 s) would give.
        let line = format_progress(40, 100, 40, clock.training(at(20)), 1.0);
        assert!(line.contains("| 4.00 iter/s | ETA 15s |"), "{line}");
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0.0), "0s");
        assert_eq!(format_duration(44.6), "45s");
        assert_eq!(format_duration(279.0), "4m 39s");
        assert_eq!(format_duration(7500.0), "2h 05m");
        assert_eq!(format_duration(f64::INFINITY), "--");
        assert_eq!(format_duration(-1.0), "--");
    }

    #[test]
    fn rate_eta_and_bar() {
        // 100 iterations in 4 s: 25 iter/s; 900 left: 36 s.
        let line = format_progress(100, 1000, 100, Duration::from_secs(4), 0.123456);
        assert_eq!(
            line,
            "Iteration 100/1000 [##..................] 10% | 25.0 iter/s | ETA 36s | loss 0.1235"
        );
        // Resumed at 500: the rate counts only the iterations run here.
        let line = format_progress(600, 1000, 100, Duration::from_secs(10), 1.0);
        assert!(line.contains("| 10.0 iter/s"), "{line}");
        assert!(line.contains("ETA 40s"), "{line}");
        // Nothing run yet: no rate, no ETA.
        let line = format_progress(0, 1000, 0, Duration::ZERO, 0.0);
        assert!(line.contains("0.00 iter/s | ETA --"), "{line}");
        // Done; a fast rate without decimals, a small loss in scientific notation.
        let line = format_progress(1000, 1000, 1000, Duration::from_millis(500), 0.00012);
        assert!(
            line.contains("[####################] 100%") && line.contains("ETA 0s"),
            "{line}"
        );
        assert!(line.contains("| 2000 iter/s |"), "{line}");
        assert!(line.ends_with("loss 1.200e-4"), "{line}");
        let line = format_progress(3, 10, 3, Duration::from_secs(2), 2.5);
        assert!(
            line.contains("| 1.50 iter/s | ETA 5s | loss 2.5000"),
            "{line}"
        );
    }
}
