//! Log lines in glog's classic format, the one upstream Caffe writes and its tools parse:
//!
//! ```text
//! I1129 18:02:00.262215  4242 solver.rs:239] Iteration 100, lr = 0.01
//! ```
//!
//! Severity letter, month and day (no year: upstream's `tools/extra/parse_log.py` fails on the
//! year-first prefix newer glog builds print), wall-clock time with microseconds, thread id,
//! source file and line. Library code logs through the `log` facade; the binary installs
//! [`GlogLogger`].

use std::io::Write;
use std::sync::Mutex;

/// Writes `log` records to stderr and, optionally, a file, in glog's format.
pub struct GlogLogger {
    level: log::LevelFilter,
    file: Option<Mutex<std::fs::File>>,
}

impl GlogLogger {
    pub fn new(level: log::LevelFilter, file: Option<std::fs::File>) -> Self {
        Self {
            level,
            file: file.map(Mutex::new),
        }
    }

    /// Installs this logger for the process. Later calls are ignored.
    pub fn install(self) {
        let level = self.level;
        if log::set_boxed_logger(Box::new(self)).is_ok() {
            log::set_max_level(level);
        }
    }
}

impl log::Log for GlogLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(record);
        // A failed write to stderr or the log file has nowhere better to be reported.
        let _ = std::io::stderr().write_all(line.as_bytes());
        if let Some(file) = &self.file {
            if let Ok(mut file) = file.lock() {
                let _ = file.write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
        if let Some(file) = &self.file {
            if let Ok(mut file) = file.lock() {
                let _ = file.flush();
            }
        }
    }
}

fn severity(level: log::Level) -> char {
    match level {
        log::Level::Error => 'E',
        log::Level::Warn => 'W',
        log::Level::Info | log::Level::Debug | log::Level::Trace => 'I',
    }
}

/// One glog line for `record`, newline included.
pub fn format_line(record: &log::Record) -> String {
    let (month, day, hour, minute, second, micros) = local_time_now();
    let file = record
        .file()
        .map(|path| path.rsplit('/').next().unwrap_or(path))
        .unwrap_or("rcaffe");
    format!(
        "{}{month:02}{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06} {:>5} {file}:{}] {}\n",
        severity(record.level()),
        thread_id(),
        record.line().unwrap_or(0),
        record.args()
    )
}

/// The kernel's id for this thread, as glog prints it.
fn thread_id() -> u64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions and cannot fail.
        unsafe { libc::gettid() as u64 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        std::process::id() as u64
    }
}

/// (month, day, hour, minute, second, microseconds) in local time.
fn local_time_now() -> (u32, u32, u32, u32, u32, u32) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = now.as_secs() as libc::time_t;
    // SAFETY: localtime_r writes into the tm we own and reads only `seconds`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&seconds, &mut tm) };
    (
        (tm.tm_mon + 1) as u32,
        tm.tm_mday as u32,
        tm.tm_hour as u32,
        tm.tm_min as u32,
        tm.tm_sec as u32,
        now.subsec_micros(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_glog_classic_prefix() {
        let line = format_line(
            &log::Record::builder()
                .args(format_args!("Iteration 0, lr = 0.01"))
                .level(log::Level::Info)
                .file(Some("src/solver/mod.rs"))
                .line(Some(42))
                .build(),
        );
        // I MMDD HH:MM:SS.uuuuuu tid file:line] message
        let (prefix, message) = line.split_once("] ").unwrap();
        assert_eq!(message, "Iteration 0, lr = 0.01\n");
        assert!(prefix.starts_with('I'));
        let date = &prefix[1..5];
        assert!(date.chars().all(|c| c.is_ascii_digit()), "{prefix}");
        assert_eq!(&prefix[5..6], " ");
        assert_eq!(&prefix[8..9], ":");
        assert_eq!(&prefix[14..15], ".");
        assert!(prefix.ends_with(" mod.rs:42"), "{prefix}");
    }
}
