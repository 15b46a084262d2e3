//! A [`log::Log`] that never blocks the thread that logs (protocol.md 7a,
//! "Logging never blocks the loop").
//!
//! A line is formatted on the calling thread (`HH:MM:SS [LEVEL] message`, the
//! time in UTC, as `simplelog` printed it) and appended to a bounded queue per
//! sink; a writer thread per sink (stderr, a log file) writes what is queued.
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
    queue_bytes: usize,
    sinks: Vec<Sink>,
    dropped: Arc<AtomicU64>,
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("level", &self.level)
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
    pub fn install(self) -> Result<(), log::SetLoggerError> {
        let level = self.level;
        let counter = Arc::clone(&self.dropped);
        log::set_boxed_logger(Box::new(self))?;
        log::set_max_level(level);
        let _ = INSTALLED.set(counter);
        Ok(())
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
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

/// Appends `HH:MM:SS [LEVEL] message\n` (UTC) to `out`.
fn format_line(out: &mut Vec<u8>, now: SystemTime, level: Level, args: &fmt::Arguments<'_>) {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    // Writing into a Vec fails only if a Display impl fails; keep what came.
    let _ = writeln!(out, "{h:02}:{m:02}:{s:02} [{level}] {args}");
    if out.last() != Some(&b'\n') {
        out.push(b'\n');
    }
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

    /// The message part of a line `HH:MM:SS [LEVEL] message`.
    fn message(line: &str) -> &str {
        line.split_once("] ").map_or(line, |(_, m)| m)
    }

    #[test]
    fn lines_look_like_simplelog_and_the_level_filters() {
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
            let b = line.as_bytes();
            assert!(
                b.len() > 9
                    && b[..8].iter().enumerate().all(|(i, c)| if i % 3 == 2 {
                        *c == b':'
                    } else {
                        c.is_ascii_digit()
                    })
                    && b[8] == b' ',
                "{line:?} should start with HH:MM:SS"
            );
            assert_eq!(&line[9..], format!("[{level}] {msg}"));
        }
        assert_eq!(lines[3], "lines");
        assert_eq!(logger.lines_dropped(), 0);
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
        // Every line is `HH:MM:SS [INFO] line NNN\n`: 25 bytes.
        const LINE: usize = 25;
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
