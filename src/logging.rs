//! A [`log::Log`] that never blocks the thread that logs (protocol.md 7a,
//! "Logging never blocks the loop").
//!
//! A line is formatted on the calling thread
//! (`2026-12-02T14:03:07.123Z [LEVEL] message`: the time in RFC 3339, UTC, to
//! the millisecond) and appended to a bounded queue per sink; a writer thread per sink (stderr, a log file) writes what is queued.
//! The caller holds the queue's lock only to append, and the writer only to
//! swap the queue for an empty buffer, never while it writes; so a sink that
//! stops taking bytes (a pipe nobody drains, a stuck log shipper, a paused
//! terminal) costs the poll loop nothing but the lines themselves:
//!
//! - When a sink's queue is full, the line is dropped for that sink and
//!   counted: [`Logger::lines_dropped`], and [`lines_dropped`] for the logger
//!   installed with [`Logger::install`] (the `STATS` key `log_lines_dropped`).
//! - Once the sink takes bytes again, the writer writes a `WARN` line
//!   `N log lines dropped` where the lines went missing, so a reader of the log
//!   knows there is a gap.
//!
//! Lines reach each sink in the order they were logged (one thread's lines in
//! its order; lines of several threads in the order they took the lock).
//!
//! No source location is printed (a dependency's would be an absolute path
//! into the build machine's cargo registry). With
//! [`Logger::filter_dependencies`], records of other crates (rustls, mio)
//! pass at `info` at most, whatever the level, so `trace` shows the
//! project's own modules; the environment variable
//! [`DEPENDENCIES_ENV`] (`SWITCHBOARD_LOG_DEPS=trace`) sets their level.
//!
//! ```
//! use log::LevelFilter;
//! use switchboard::logging::Logger;
//!
//! let mut logger = Logger::new(LevelFilter::Info);
//! logger.add_stderr().expect("writer thread");
//! // logger.add_file(Path::new("switchboard.log"))?;  // appended
//! // logger.install()?;                                // the global logger
//! ```

use std::cell::RefCell;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// How many bytes of formatted lines each sink's queue holds by default
/// (1 MiB: about 10,000 typical lines).
pub const DEFAULT_QUEUE_BYTES: usize = 1 << 20;

/// How long [`Log::flush`] waits for the sinks to take what is queued.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// The environment variable that sets the level of other crates' records
/// under [`Logger::filter_dependencies`]: `off`, `error`, `warn`, `info`,
/// `debug` or `trace`.
pub const DEPENDENCIES_ENV: &str = "SWITCHBOARD_LOG_DEPS";

/// Bumped by [`reopen_files`]; each file sink reopens its path before its
/// next write when it has seen an older value.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Asks every file sink (of any logger) to reopen its path before it writes
/// again (after `logrotate` moved the file: SIGHUP). Does not wait. A sink
/// whose path cannot be opened keeps writing to the file it has.
pub fn reopen_files() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

/// The installed logger's drop counter (see [`lines_dropped`]).
static INSTALLED: OnceLock<Arc<AtomicU64>> = OnceLock::new();

/// Lines the installed logger ([`Logger::install`]) has dropped since the
/// start, because a sink was too slow or failed; 0 if none is installed.
///
/// A line dropped by two sinks (stderr and a log file) counts twice.
pub fn lines_dropped() -> u64 {
    INSTALLED.get().map_or(0, |c| c.load(Ordering::Relaxed))
}

/// A logger: a level filter and sinks, each with its own bounded queue and
/// writer thread. See the [module documentation](self).
pub struct Logger {
    level: LevelFilter,
    /// With [`Logger::filter_dependencies`]: the crate whose records pass
    /// at `level`, and the level of every other crate's.
    own: Option<(&'static str, LevelFilter)>,
    queue_bytes: usize,
    sinks: Vec<Sink>,
    dropped: Arc<AtomicU64>,
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("level", &self.level)
            .field("own", &self.own)
            .field("queue_bytes", &self.queue_bytes)
            .field(
                "sinks",
                &self.sinks.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field("dropped", &self.lines_dropped())
            .finish()
    }
}

impl Logger {
    /// A logger that passes records at `level` or more severe, with no sink
    /// yet; each sink gets a queue of [`DEFAULT_QUEUE_BYTES`].
    pub fn new(level: LevelFilter) -> Self {
        Self::with_queue_bytes(level, DEFAULT_QUEUE_BYTES)
    }

    /// Like [`Logger::new`], with queues of `queue_bytes` per sink. A line
    /// longer than that is always dropped.
    pub fn with_queue_bytes(level: LevelFilter, queue_bytes: usize) -> Self {
        Self {
            level,
            own: None,
            queue_bytes,
            sinks: Vec::new(),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Adds standard error as a sink. The writer writes to a duplicate of
    /// the descriptor, so it never holds the lock of [`std::io::stderr`]
    /// (which a panic message needs); if there is no descriptor 2 to
    /// duplicate, to [`std::io::stderr`], which then discards the lines.
    pub fn add_stderr(&mut self) -> io::Result<()> {
        match io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) => self.add_sink("stderr", File::from(fd)),
            Err(_) => self.add_sink("stderr", io::stderr()),
        }
    }

    /// Adds `path` as a sink, created if missing and appended to.
    /// The file is reopened (by path) after [`reopen_files`].
    pub fn add_file(&mut self, path: &Path) -> io::Result<()> {
        let seen = REOPEN.load(Ordering::Relaxed);
        let file = open_append(path)?;
        let sink = FileSink {
            path: path.to_owned(),
            file,
            seen,
        };
        self.add_sink(&path.display().to_string(), sink)
    }

    /// Adds any writer as a sink, written by a new thread named after `name`.
    /// Each batch of lines is handed over with one `write_all` and a `flush`.
    pub fn add_sink(&mut self, name: &str, out: impl Write + Send + 'static) -> io::Result<()> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            idle: Condvar::new(),
            capacity: self.queue_bytes,
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            out: Box::new(out),
            dropped: Arc::clone(&self.dropped),
        };
        std::thread::Builder::new()
            .name("switchboard-log".into())
            .spawn(move || writer.run())?;
        self.sinks.push(Sink {
            name: name.to_owned(),
            shared,
        });
        Ok(())
    }

    /// The level filter.
    pub fn level(&self) -> LevelFilter {
        self.level
    }

    /// Passes records of crate `own` (targets `own` and `own::...`) at the
    /// logger's level, and other crates' (dependencies: rustls, mio) at
    /// `info` at most, so that `debug` and `trace` show what the project
    /// does rather than every TLS record. The environment variable
    /// [`DEPENDENCIES_ENV`] overrides their level (e.g.
    /// `SWITCHBOARD_LOG_DEPS=trace`); an unknown value is ignored.
    #[must_use]
    pub fn filter_dependencies(self, own: &'static str) -> Self {
        let from_env = std::env::var(DEPENDENCIES_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<LevelFilter>().ok());
        let deps = from_env.unwrap_or_else(|| self.level.min(LevelFilter::Info));
        self.with_dependency_level(own, deps)
    }

    /// Like [`Logger::filter_dependencies`] with other crates' level given
    /// (no environment variable is read).
    #[must_use]
    pub fn with_dependency_level(mut self, own: &'static str, deps: LevelFilter) -> Self {
        self.own = Some((own, deps));
        self
    }

    /// The most verbose level any record may pass at.
    fn max_level(&self) -> LevelFilter {
        match self.own {
            Some((_, deps)) => self.level.max(deps),
            None => self.level,
        }
    }

    /// Lines this logger has dropped so far (counted once per sink).
    pub fn lines_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every sink has written what was queued before the call,
    /// or `timeout` passes; whether they did.
    pub fn flush_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.sinks.iter().all(|s| s.shared.wait_idle(deadline))
    }

    /// Makes this the global logger ([`log::set_boxed_logger`]) and sets the
    /// global maximum level; [`lines_dropped`] then reads its counter. Fails
    /// if a logger is installed already.
    ///
    /// When [`Logger::filter_dependencies`] holds back other crates' records
    /// at this level, it says so in one `info` line (and how to see them).
    pub fn install(self) -> Result<(), log::SetLoggerError> {
        let max = self.max_level();
        let held_back = match self.own {
            Some((own, deps)) if deps < self.level => Some((own, self.level, deps)),
            _ => None,
        };
        let counter = Arc::clone(&self.dropped);
        log::set_boxed_logger(Box::new(self))?;
        log::set_max_level(max);
        let _ = INSTALLED.set(counter);
        if let Some((own, level, deps)) = held_back {
            let level = level.as_str().to_ascii_lowercase();
            log::info!(
                target: own,
                "log level {level} for {own}; other crates' records at {deps} at most \
                 ({DEPENDENCIES_ENV}={level} shows theirs too)",
                deps = deps.as_str().to_ascii_lowercase(),
            );
        }
        Ok(())
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let level = match self.own {
            Some((own, deps)) if !is_in_crate(metadata.target(), own) => deps,
            _ => self.level,
        };
        metadata.level() <= level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) || self.sinks.is_empty() {
            return;
        }
        let offer = |line: &[u8]| {
            for sink in &self.sinks {
                if !sink.shared.offer(line) {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        // One formatting buffer per thread, reused; a fresh one if it is in
        // use (a Display impl that logs) or gone (thread teardown).
        let reused = LINE.try_with(|cell| {
            let Ok(mut line) = cell.try_borrow_mut() else {
                return false;
            };
            line.clear();
            format_line(&mut line, SystemTime::now(), record.level(), record.args());
            offer(&line);
            if line.capacity() > LINE_KEEP {
                *line = Vec::new();
            }
            true
        });
        if !matches!(reused, Ok(true)) {
            let mut line = Vec::new();
            format_line(&mut line, SystemTime::now(), record.level(), record.args());
            offer(&line);
        }
    }

    /// Waits up to [`FLUSH_TIMEOUT`] for the sinks (call it before exiting).
    fn flush(&self) {
        self.flush_within(FLUSH_TIMEOUT);
    }
}

impl Drop for Logger {
    /// Tells the writers to write what is queued and stop; does not wait.
    fn drop(&mut self) {
        for sink in &self.sinks {
            sink.shared.lock().closed = true;
            sink.shared.wake.notify_all();
        }
    }
}

thread_local! {
    /// The calling thread's formatting buffer.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A formatting buffer grown past this by a long line is freed afterwards.
const LINE_KEEP: usize = 4 << 10;

/// Whether a record's `target` (a module path, unless the call named one)
/// is crate `own` or one of its modules.
fn is_in_crate(target: &str, own: &str) -> bool {
    target
        .strip_prefix(own)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// Appends `2026-12-02T14:03:07.123Z [LEVEL] message\n` (RFC 3339, UTC) to
/// `out`.
fn format_line(out: &mut Vec<u8>, now: SystemTime, level: Level, args: &fmt::Arguments<'_>) {
    // Writing into a Vec fails only if a Display impl fails; keep what came.
    let _ = writeln!(out, "{} [{level}] {args}", Rfc3339(now));
    if out.last() != Some(&b'\n') {
        out.push(b'\n');
    }
}

/// A time as RFC 3339 in UTC with milliseconds (`2026-12-02T14:03:07.123Z`);
/// a time before 1970 shows as 1970-01-01T00:00:00.000Z.
struct Rfc3339(SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (days, in_day) = (secs / 86_400, secs % 86_400);
        let (y, mo, d) = civil_from_days(days);
        let (h, mi, s) = (in_day / 3600, in_day / 60 % 60, in_day % 60);
        let ms = since.subsec_millis();
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }
}

/// The proleptic Gregorian (year, month, day) of a day count since
/// 1970-01-01 (Howard Hinnant's `civil_from_days`, for days >= 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shifted to 0000-03-01, so that the leap day ends each 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], from March
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// One sink as the logging threads see it.
struct Sink {
    name: String,
    shared: Arc<Shared>,
}

/// A sink's queue, shared by the logging threads and its writer.
struct Shared {
    state: Mutex<State>,
    /// The writer waits here for lines, drops or `closed`.
    wake: Condvar,
    /// [`Logger::flush_within`] waits here for an empty queue and idle writer.
    idle: Condvar,
    /// Bound of `State::buf` in bytes.
    capacity: usize,
}

#[derive(Default)]
struct State {
    /// Formatted lines not yet handed to the writer, each ending in LF.
    buf: Vec<u8>,
    /// Lines in `buf`.
    lines: u64,
    /// Lines refused since the writer last took the queue.
    dropped: u64,
    /// The writer is writing a batch it took.
    writing: bool,
    /// The logger is gone: write what is left and stop.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `line` unless that would pass the bound; whether it did. Never
    /// waits for the writer beyond the lock, which the writer holds only to
    /// swap buffers.
    fn offer(&self, line: &[u8]) -> bool {
        let mut st = self.lock();
        let was_waiting = st.buf.is_empty() && st.dropped == 0;
        let taken = st.buf.len() + line.len() <= self.capacity;
        if taken {
            st.buf.extend_from_slice(line);
            st.lines += 1;
        } else {
            st.dropped += 1;
        }
        drop(st);
        if was_waiting {
            self.wake.notify_one();
        }
        taken
    }

    /// Waits until nothing is queued or being written, or `deadline`.
    fn wait_idle(&self, deadline: Instant) -> bool {
        let mut st = self.lock();
        loop {
            if st.buf.is_empty() && st.dropped == 0 && !st.writing {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .idle
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// A log file that follows its path after [`reopen_files`].
struct FileSink {
    path: std::path::PathBuf,
    file: File,
    seen: u64,
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let now = REOPEN.load(Ordering::Relaxed);
        if now != self.seen {
            self.seen = now;
            // On failure the old file is kept: lines somewhere beat none.
            if let Ok(file) = open_append(&self.path) {
                self.file = file;
            }
        }
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A sink's writer thread.
struct Writer {
    shared: Arc<Shared>,
    out: Box<dyn Write + Send>,
    /// The logger's drop counter, for lines lost to a failed write.
    dropped: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::new();
        // Lines lost (refused, or in a failed write) not yet announced.
        let mut missing = 0u64;
        loop {
            let lines = {
                let mut st = self.shared.lock();
                st.writing = false;
                if st.buf.is_empty() && st.dropped == 0 {
                    self.shared.idle.notify_all();
                }
                while st.buf.is_empty() && st.dropped == 0 && !st.closed {
                    st = self
                        .shared
                        .wake
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if st.buf.is_empty() && st.dropped == 0 {
                    return; // closed, and everything written
                }
                batch.clear();
                std::mem::swap(&mut batch, &mut st.buf);
                st.writing = true;
                missing += std::mem::take(&mut st.dropped);
                std::mem::take(&mut st.lines)
            };
            if self.write(&batch).is_err() {
                self.dropped.fetch_add(lines, Ordering::Relaxed);
                missing += lines;
            }
            // Lines are refused only while the queue is full, so the ones
            // refused by now went missing after this batch and before
            // anything queued from now on: the notice goes here.
            if missing > 0 && self.announce(missing).is_ok() {
                missing = 0;
            }
            // A burst's buffer is not kept for the quiet times after it.
            batch.shrink_to(LINE_KEEP * 16);
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.out.flush()
    }

    /// Writes the `N log lines dropped` notice.
    fn announce(&mut self, missing: u64) -> io::Result<()> {
        let mut line = Vec::new();
        let what = if missing == 1 { "line" } else { "lines" };
        format_line(
            &mut line,
            SystemTime::now(),
            Level::Warn,
            &format_args!("{missing} log {what} dropped (the log output was too slow)"),
        );
        self.write(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A sink the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Shared {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A sink whose first write blocks until the test opens the gate (a
    /// pipe nobody drains); it says on `entered` when it blocks.
    struct Gated {
        inner: Shared,
        entered: Option<mpsc::Sender<()>>,
        gate: Option<mpsc::Receiver<()>>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(tx) = self.entered.take() {
                let _ = tx.send(());
            }
            if let Some(gate) = self.gate.take() {
                let _ = gate.recv();
            }
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A sink that always fails.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn log(logger: &Logger, level: Level, args: fmt::Arguments<'_>) {
        logger.log(&Record::builder().level(level).args(args).build());
    }

    /// The message part of a line `TIME [LEVEL] message`.
    fn message(line: &str) -> &str {
        line.split_once("] ").map_or(line, |(_, m)| m)
    }

    /// Whether `s` is `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    fn is_rfc3339_millis(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 24
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                19 => *c == b'.',
                23 => *c == b'Z',
                _ => c.is_ascii_digit(),
            })
    }

    #[test]
    fn lines_start_with_an_rfc3339_utc_time_and_the_level_filters() {
        let sink = Shared::default();
        let mut logger = Logger::new(LevelFilter::Info);
        logger.add_sink("test", sink.clone()).expect("sink");
        log(
            &logger,
            Level::Info,
            format_args!("tcp listening on {}", "127.0.0.1:1"),
        );
        log(&logger, Level::Debug, format_args!("not shown"));
        log(&logger, Level::Warn, format_args!("careful"));
        log(&logger, Level::Error, format_args!("two\nlines"));
        assert!(logger.flush_within(Duration::from_secs(5)));
        let lines = sink.lines();
        assert_eq!(lines.len(), 4, "{lines:?}");
        for (line, (level, msg)) in lines.iter().zip([
            ("INFO", "tcp listening on 127.0.0.1:1"),
            ("WARN", "careful"),
            ("ERROR", "two"),
        ]) {
            let (time, rest) = line.split_once(' ').expect("a space after the time");
            assert!(
                is_rfc3339_millis(time),
                "{line:?} should start with the time"
            );
            assert_eq!(rest, format!("[{level}] {msg}"));
        }
        assert_eq!(lines[3], "lines");
        assert_eq!(logger.lines_dropped(), 0);
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        let at = |secs: u64, ms: u64| {
            Rfc3339(UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms)).to_string()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(1_796_220_187, 123), "2026-12-02T14:03:07.123Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
        assert_eq!(
            Rfc3339(UNIX_EPOCH - Duration::from_secs(1)).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        // Every day from 1970 to 2100 follows the one before it.
        let mut prev = civil_from_days(0);
        for day in 1..47_500 {
            let next = civil_from_days(day);
            let ok = if next.2 == 1 {
                (next.1 == prev.1 + 1 && next.0 == prev.0)
                    || (next.1 == 1 && prev.1 == 12 && next.0 == prev.0 + 1)
            } else {
                next.0 == prev.0 && next.1 == prev.1 && next.2 == prev.2 + 1
            };
            assert!(ok, "day {day}: {prev:?} then {next:?}");
            prev = next;
        }
    }

    fn log_from(logger: &Logger, target: &str, level: Level, msg: &str) {
        logger.log(
            &Record::builder()
                .target(target)
                .level(level)
                .file(Some("/root/.cargo/registry/src/index/dep-1.0/src/lib.rs"))
                .line(Some(7))
                .args(format_args!("{msg}"))
                .build(),
        );
    }

    #[test]
    fn other_crates_are_held_back_at_info_and_no_source_path_is_printed() {
        let sink = Shared::default();
        let mut logger = Logger::new(LevelFilter::Trace)
            .with_dependency_level("switchboard", LevelFilter::Trace.min(LevelFilter::Info));
        logger.add_sink("test", sink.clone()).expect("sink");
        for (target, level, msg) in [
            ("switchboard", Level::Trace, "own crate root"),
            ("switchboard::broker", Level::Trace, "own module"),
            ("rustls::server::hs", Level::Trace, "dependency trace"),
            ("rustls::server::hs", Level::Debug, "dependency debug"),
            ("mio::poll", Level::Info, "dependency info"),
            ("switchboardx", Level::Debug, "another crate"),
        ] {
            log_from(&logger, target, level, msg);
        }
        assert!(logger.flush_within(Duration::from_secs(5)));
        let lines = sink.lines();
        let msgs: Vec<&str> = lines.iter().map(|l| message(l)).collect();
        assert_eq!(msgs, ["own crate root", "own module", "dependency info"]);
        assert!(lines.iter().all(|l| !l.contains(".cargo")), "{lines:?}");
        assert_eq!(logger.max_level(), LevelFilter::Trace);

        // Asked for: dependencies at trace too.
        let sink = Shared::default();
        let mut logger = Logger::new(LevelFilter::Debug)
            .with_dependency_level("switchboard", LevelFilter::Trace);
        logger.add_sink("test", sink.clone()).expect("sink");
        log_from(
            &logger,
            "rustls::server::hs",
            Level::Trace,
            "dependency trace",
        );
        log_from(&logger, "switchboard::conn", Level::Trace, "own trace");
        assert!(logger.flush_within(Duration::from_secs(5)));
        let lines = sink.lines();
        assert_eq!(
            lines.iter().map(|l| message(l)).collect::<Vec<_>>(),
            ["dependency trace"]
        );
        assert_eq!(logger.max_level(), LevelFilter::Trace);

        // Without the filter, every crate passes at the logger's level.
        let logger = Logger::new(LevelFilter::Debug);
        assert!(
            logger.enabled(
                &Metadata::builder()
                    .target("rustls")
                    .level(Level::Debug)
                    .build()
            )
        );
    }

    #[test]
    fn order_is_kept_across_threads_and_batches() {
        let sink = Shared::default();
        let mut logger = Logger::with_queue_bytes(LevelFilter::Trace, 1 << 20);
        logger.add_sink("test", sink.clone()).expect("sink");
        let logger = Arc::new(logger);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let logger = Arc::clone(&logger);
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        log(&logger, Level::Trace, format_args!("t{t} {i}"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("logging thread");
        }
        assert!(logger.flush_within(Duration::from_secs(10)));
        assert_eq!(logger.lines_dropped(), 0);
        let lines = sink.lines();
        assert_eq!(lines.len(), 8000);
        for t in 0..4 {
            let got: Vec<usize> = lines
                .iter()
                .filter_map(|l| message(l).strip_prefix(&format!("t{t} ")))
                .map(|n| n.parse().expect("number"))
                .collect();
            assert_eq!(got, (0..2000).collect::<Vec<_>>(), "thread {t}'s lines");
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking_then_says_so() {
        // Every line is `2026-12-02T14:03:07.123Z [INFO] line NNN\n`: 41 bytes.
        const LINE: usize = 41;
        let sink = Shared::default();
        let (entered_tx, entered) = mpsc::channel();
        let (open, gate) = mpsc::channel();
        let mut logger = Logger::with_queue_bytes(LevelFilter::Info, 10 * LINE);
        let gated = Gated {
            inner: sink.clone(),
            entered: Some(entered_tx),
            gate: Some(gate),
        };
        logger.add_sink("gated", gated).expect("sink");
        let logger = Arc::new(logger);

        // Line 0 goes to the writer, which then blocks in write().
        log(&logger, Level::Info, format_args!("line {:03}", 0));
        entered
            .recv_timeout(Duration::from_secs(5))
            .expect("the writer should write line 0");
        // Lines 1..=10 fill the queue; 11..=49 are dropped. On another
        // thread, so that a logger that blocks fails the test, not hangs it.
        let (done_tx, done) = mpsc::channel();
        let l = Arc::clone(&logger);
        std::thread::spawn(move || {
            let t = Instant::now();
            for i in 1..50 {
                log(&l, Level::Info, format_args!("line {i:03}"));
            }
            let _ = done_tx.send(t.elapsed());
        });
        let took = done
            .recv_timeout(Duration::from_secs(5))
            .expect("logging must not wait for a blocked sink");
        assert!(took < Duration::from_secs(1), "49 lines took {took:?}");
        assert_eq!(logger.lines_dropped(), 39);
        assert!(
            !logger.flush_within(Duration::from_millis(50)),
            "flush cannot finish while the sink is blocked"
        );

        open.send(()).expect("gate");
        assert!(logger.flush_within(Duration::from_secs(5)));
        log(&logger, Level::Info, format_args!("line {:03}", 50));
        assert!(logger.flush_within(Duration::from_secs(5)));

        let lines = sink.lines();
        let mut want: Vec<String> = (0..=10).map(|i| format!("line {i:03}")).collect();
        want.push("39 log lines dropped (the log output was too slow)".into());
        want.push("line 050".into());
        assert_eq!(lines.iter().map(|l| message(l)).collect::<Vec<_>>(), want);
        assert!(lines[..11].iter().all(|l| l.len() + 1 == LINE), "{lines:?}");
        assert!(lines[11].contains("[WARN] "), "{}", lines[11]);
        assert_eq!(logger.lines_dropped(), 39, "the notice is not a drop");
    }

    #[test]
    fn a_line_longer_than_the_queue_is_dropped() {
        let sink = Shared::default();
        let mut logger = Logger::with_queue_bytes(LevelFilter::Info, 64);
        logger.add_sink("test", sink.clone()).expect("sink");
        log(&logger, Level::Info, format_args!("{}", "x".repeat(100)));
        assert!(logger.flush_within(Duration::from_secs(5)));
        log(&logger, Level::Info, format_args!("short"));
        assert!(logger.flush_within(Duration::from_secs(5)));
        let lines = sink.lines();
        let msgs: Vec<&str> = lines.iter().map(|l| message(l)).collect();
        assert_eq!(
            msgs,
            ["1 log line dropped (the log output was too slow)", "short"]
        );
        assert_eq!(logger.lines_dropped(), 1);
    }

    #[test]
    fn a_failing_sink_counts_its_lost_lines_and_spares_the_others() {
        let sink = Shared::default();
        let mut logger = Logger::new(LevelFilter::Info);
        logger.add_sink("broken", Broken).expect("sink");
        logger.add_sink("good", sink.clone()).expect("sink");
        for i in 0..5 {
            log(&logger, Level::Info, format_args!("line {i}"));
        }
        assert!(logger.flush_within(Duration::from_secs(5)));
        assert_eq!(logger.lines_dropped(), 5);
        assert_eq!(sink.lines().len(), 5);
    }

    #[test]
    fn dropping_the_logger_writes_what_is_queued() {
        let sink = Shared::default();
        let mut logger = Logger::new(LevelFilter::Info);
        logger.add_sink("test", sink.clone()).expect("sink");
        for i in 0..100 {
            log(&logger, Level::Info, format_args!("line {i}"));
        }
        drop(logger);
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.lines().len() < 100 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.lines().len(), 100);
    }
}
