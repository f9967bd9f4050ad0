//! Log lines in glog's classic format, the one upstream Caffe writes and its tools parse:
//!
//! ```text
//! I1129 18:02:00.262215  4242 solver.rs:239] Iteration 100, lr = 0.01
//! ```
//!
//! Severity letter, month and day (no year: upstream's `tools/extra/parse_log.py` fails on the
//! year-first prefix newer glog builds print), wall-clock time with microseconds, thread id,
//! source file and line. Library code logs through the `log` facade; the binary installs
//! [`GlogLogger`], configured as upstream's binary is by glog's environment variables
//! ([`GlogEnv`]).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

/// Formats a float as C++'s default `ostream <<` does (`%g` with 6 significant digits), so that
/// logged numbers read as upstream's: `1`, `0.5`, `1e-05`, `1.23457e+06`.
pub fn cpp_float(value: f64) -> String {
    crate::proto::format_g(value, 6)
}

/// What glog's environment variables ask of the log. rcaffe logs everything to stderr by
/// default (as glog with `GLOG_alsologtostderr=1`), and to a file only when given a folder.
#[derive(Debug, Clone, PartialEq)]
pub struct GlogEnv {
    /// `GLOG_minloglevel`: lines below this severity are dropped (0 when unset).
    pub min_severity: u8,
    /// `GLOG_v`: the verbosity of `VLOG`; 1 adds debug lines, 2 and above trace lines.
    pub verbosity: i32,
    /// `GLOG_log_dir`: the folder of the log file, when `--log-dir` does not name one.
    pub log_dir: Option<PathBuf>,
    /// `GLOG_logtostderr`: stderr only, no log file even with a folder.
    pub to_stderr_only: bool,
    /// `GLOG_alsologtostderr`: everything on stderr too when a log file is written (the
    /// default already; it overrides `GLOG_stderrthreshold`).
    pub also_to_stderr: bool,
    /// `GLOG_stderrthreshold`: with a log file, only lines of this severity or above on stderr.
    pub stderr_threshold: Option<u8>,
    /// The variables that could not be read, each with why: for the log, once it is set up.
    pub warnings: Vec<String>,
}

impl GlogEnv {
    /// Reads the process's environment.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Reads glog's variables through `var` (a variable's value, `None` when unset) as glog reads
    /// them: a number by its leading integer (`strtol`: none is 0), with a warning when there is
    /// more to the value; a boolean by its first character (`t`, `T`, `y`, `Y`, `1`, or an empty
    /// value, is true).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let mut warnings = Vec::new();
        let mut number = |name: &str| -> Option<i64> {
            let value = var(name)?;
            let (read, whole) = leading_integer(&value);
            if !whole {
                warnings.push(format!(
                    "{name}={value} is read as {read}, as glog reads it (its leading integer)"
                ));
            }
            Some(read)
        };
        // Severities past FATAL (3) leave nothing to log, as in glog.
        let severity = |n: i64| n.clamp(0, 4) as u8;
        let min_severity = number("GLOG_minloglevel").map_or(0, severity);
        let verbosity = number("GLOG_v").map_or(0, |v| v.clamp(0, i64::from(i32::MAX)) as i32);
        let stderr_threshold = number("GLOG_stderrthreshold").map(severity);
        let boolean = |name: &str| var(name).is_some_and(|value| glog_bool(&value));
        let to_stderr_only = boolean("GLOG_logtostderr");
        let also_to_stderr = boolean("GLOG_alsologtostderr");
        let log_dir = var("GLOG_log_dir")
            .filter(|v| !v.trim().is_empty())
            .map(PathBuf::from);
        Self {
            min_severity,
            verbosity,
            log_dir,
            to_stderr_only,
            also_to_stderr,
            stderr_threshold,
            warnings,
        }
    }

    /// The folder to write the log file in: `flag` (`--log-dir`) if given, else `GLOG_log_dir`;
    /// none with `GLOG_logtostderr=1`, which wins as in glog (with a warning when a folder was
    /// asked for).
    pub fn log_folder(&mut self, flag: Option<PathBuf>) -> Option<PathBuf> {
        let folder = flag.or_else(|| self.log_dir.clone())?;
        if self.to_stderr_only {
            self.warnings.push(format!(
                "GLOG_logtostderr is set: logging to stderr only, no log file in {}",
                folder.display()
            ));
            return None;
        }
        Some(folder)
    }

    /// The most verbose level logged at all.
    pub fn level(&self) -> log::LevelFilter {
        match (self.min_severity, self.verbosity) {
            (0, v) if v >= 2 => log::LevelFilter::Trace,
            (0, 1) => log::LevelFilter::Debug,
            (severity, _) => level_from(severity),
        }
    }

    /// The most verbose level shown on stderr: everything logged, except that with a log file
    /// (`to_file`) `GLOG_stderrthreshold` keeps the lines below it for the file.
    pub fn stderr_level(&self, to_file: bool) -> log::LevelFilter {
        match self.stderr_threshold {
            Some(threshold) if to_file && !self.also_to_stderr => {
                self.level().min(level_from(threshold))
            }
            _ => self.level(),
        }
    }
}

/// A glog boolean from the environment: true when its first character is one of `tTyY1`, or
/// when it is empty (glog's `EnvToBool`).
fn glog_bool(value: &str) -> bool {
    matches!(
        value.bytes().next(),
        None | Some(b't' | b'T' | b'y' | b'Y' | b'1')
    )
}

/// `value`'s leading integer as C's `strtol` reads it (leading white space, a sign, digits;
/// 0 without any), and whether that was all of it (but trailing white space).
fn leading_integer(value: &str) -> (i64, bool) {
    let start = value.trim_start();
    let sign_len = usize::from(start.starts_with(['+', '-']));
    let digits = start[sign_len..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    let number = &start[..sign_len + digits];
    let read = if digits == 0 {
        0
    } else {
        number.parse::<i64>().unwrap_or(if number.starts_with('-') {
            i64::MIN
        } else {
            i64::MAX
        })
    };
    (
        read,
        digits > 0 && start[sign_len + digits..].trim().is_empty(),
    )
}

/// The most verbose level at or above glog severity `severity` (3, FATAL: none of `log`'s).
fn level_from(severity: u8) -> log::LevelFilter {
    match severity {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Warn,
        2 => log::LevelFilter::Error,
        _ => log::LevelFilter::Off,
    }
}

/// Writes `log` records to stderr and, optionally, a file, in glog's format.
pub struct GlogLogger {
    /// The most verbose level written anywhere.
    level: log::LevelFilter,
    /// The most verbose level written to stderr (at most `level`).
    stderr_level: log::LevelFilter,
    file: Option<Mutex<std::fs::File>>,
}

impl GlogLogger {
    pub fn new(
        level: log::LevelFilter,
        stderr_level: log::LevelFilter,
        file: Option<std::fs::File>,
    ) -> Self {
        Self {
            level,
            stderr_level: stderr_level.min(level),
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
        if record.level() <= self.stderr_level {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
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
    use log::LevelFilter;

    fn env(vars: &[(&str, &str)]) -> GlogEnv {
        GlogEnv::from_vars(|name| {
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| value.to_string())
        })
    }

    #[test]
    fn minloglevel_and_v_set_the_level_as_in_glog() {
        assert_eq!(env(&[]).level(), LevelFilter::Info);
        for (minloglevel, level) in [
            ("0", LevelFilter::Info),
            ("1", LevelFilter::Warn),
            ("2", LevelFilter::Error),
            ("3", LevelFilter::Off),
        ] {
            assert_eq!(env(&[("GLOG_minloglevel", minloglevel)]).level(), level);
        }
        assert_eq!(env(&[("GLOG_v", "1")]).level(), LevelFilter::Debug);
        assert_eq!(env(&[("GLOG_v", "3")]).level(), LevelFilter::Trace);
        // VLOG lines are INFO lines: a higher minloglevel drops them.
        let both = env(&[("GLOG_v", "2"), ("GLOG_minloglevel", "1")]);
        assert_eq!(both.level(), LevelFilter::Warn);
        assert!(env(&[("GLOG_minloglevel", "1")]).warnings.is_empty());
    }

    #[test]
    fn values_are_read_as_glog_reads_them() {
        let read = env(&[
            ("GLOG_minloglevel", "abc"),
            ("GLOG_stderrthreshold", "4"),
            ("GLOG_v", "1.5"),
            ("GLOG_logtostderr", "maybe"),
            ("GLOG_alsologtostderr", ""),
        ]);
        // strtol: "abc" is 0, "1.5" is 1; 4 is past FATAL.
        assert_eq!(read.min_severity, 0);
        assert_eq!(read.verbosity, 1);
        assert_eq!(read.stderr_threshold, Some(4));
        // alsologtostderr (set, empty) keeps every line on stderr despite the threshold.
        assert_eq!(read.stderr_level(true), LevelFilter::Debug);
        // First character: "maybe" is false; an empty value is true.
        assert!(!read.to_stderr_only);
        assert!(read.also_to_stderr);
        assert_eq!(
            read.warnings,
            [
                "GLOG_minloglevel=abc is read as 0, as glog reads it (its leading integer)",
                "GLOG_v=1.5 is read as 1, as glog reads it (its leading integer)",
            ]
        );
        for (value, yes) in [("true", true), ("Yes", true), ("1", true), ("0", false)] {
            assert_eq!(glog_bool(value), yes, "{value}");
        }
        assert_eq!(leading_integer(" -2 "), (-2, true));
        assert_eq!(leading_integer("+3x"), (3, false));
    }

    #[test]
    fn log_folder_flag_wins_and_logtostderr_writes_no_file() {
        let mut read = env(&[("GLOG_log_dir", "/tmp/from-env")]);
        assert_eq!(read.log_folder(None), Some(PathBuf::from("/tmp/from-env")));
        let flag = Some(PathBuf::from("from-flag"));
        assert_eq!(read.log_folder(flag.clone()), flag);
        assert!(read.warnings.is_empty());
        let mut stderr_only = env(&[("GLOG_logtostderr", "true")]);
        assert_eq!(stderr_only.log_folder(None), None);
        assert!(stderr_only.warnings.is_empty());
        assert_eq!(stderr_only.log_folder(flag), None);
        assert_eq!(stderr_only.warnings.len(), 1);
    }

    #[test]
    fn stderrthreshold_keeps_lines_below_it_for_the_log_file() {
        let read = env(&[("GLOG_stderrthreshold", "1")]);
        assert_eq!(read.stderr_level(true), LevelFilter::Warn);
        // Without a file every line stays on stderr; alsologtostderr overrides the threshold.
        assert_eq!(read.stderr_level(false), LevelFilter::Info);
        let also = env(&[("GLOG_stderrthreshold", "2"), ("GLOG_alsologtostderr", "1")]);
        assert_eq!(also.stderr_level(true), LevelFilter::Info);
        let quiet = env(&[("GLOG_stderrthreshold", "0"), ("GLOG_minloglevel", "2")]);
        assert_eq!(quiet.stderr_level(true), LevelFilter::Error);
    }

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
