//! One status line on stderr, redrawn in place, shown only when stderr is a terminal (never in
//! a log file or CI output). `rcaffe train`'s bar and the dataset converters' bars draw with it.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is redrawn at most.
const REDRAW_EVERY: Duration = Duration::from_millis(200);

/// A throttled status line. Erased when dropped while drawn, so an error starts its own line.
#[derive(Debug)]
pub struct TerminalLine {
    last_draw: Option<Instant>,
    drawn: bool,
}

impl TerminalLine {
    /// A line, when stderr is a terminal.
    pub fn if_terminal() -> Option<Self> {
        std::io::stderr().is_terminal().then_some(Self {
            last_draw: None,
            drawn: false,
        })
    }

    /// Holds the next draw back for the redraw interval, from now.
    pub fn defer(&mut self) {
        self.last_draw = Some(Instant::now());
    }

    /// Whether a redraw is due (the last one is at least 200 ms old).
    pub fn due(&self) -> bool {
        self.last_draw.is_none_or(|t| t.elapsed() >= REDRAW_EVERY)
    }

    /// Replaces the line with `text`.
    pub fn draw(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        // Nothing better can be done with a failed write to the terminal.
        let _ = write!(err, "\r\x1b[2K{text}");
        let _ = err.flush();
        self.drawn = true;
        self.last_draw = Some(Instant::now());
    }

    /// Erases the line (before a log line is written); the next redraw waits a little.
    pub fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
            self.defer();
        }
    }

    /// Draws `text` one last time and ends the line.
    pub fn finish(&mut self, text: &str) {
        self.draw(text);
        let _ = writeln!(std::io::stderr());
        self.drawn = false;
        self.last_draw = None;
    }
}

impl Drop for TerminalLine {
    fn drop(&mut self) {
        self.clear();
    }
}
