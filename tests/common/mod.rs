//! Shared helpers for the black-box integration tests.
//!
//! The tests run the real `switchboard` binary (`serve` on `127.0.0.1:0`), find
//! its port in the log line `tcp listening on ADDR`, and talk to it over plain
//! TCP with a raw frame client ([`Client`]). Every read has a deadline, so no
//! test can hang: a missing reply fails the test after [`READ_TIMEOUT`].
//!
//! Frames are parsed by the contract's grammar (protocol.md section 1):
//! `TYPE SP LEN *(SP ARG) LF PAYLOAD`.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
/// How long a server may take to log its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for any one expected frame.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a process may take to exit when the test expects it to.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The log marker that carries the plain TCP listener's address.
const LISTENING: &str = "tcp listening on ";
/// Frame types the server pushes; they are never replies (protocol.md section 2).
pub const PUSH_TYPES: [&str; 5] = ["MESSAGE", "PUBLISHED", "JOINED", "PARTED", "PING"];

// ---------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------

/// A unique directory under cargo's per-target temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    #[track_caller]
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sb-{tag}-{}-{n}-{nanos}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&path) {
            panic!("cannot create temp dir {}: {e}", path.display());
        }
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[track_caller]
pub fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

// ---------------------------------------------------------------------------
// Process output capture
// ---------------------------------------------------------------------------

/// Lines a child wrote, kept so a failing test can print them.
#[derive(Clone, Default, Debug)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(line);
        }
    }

    fn text(&self) -> String {
        match self.0.lock() {
            Ok(v) => v.join("\n"),
            Err(_) => String::from("<log lock poisoned>"),
        }
    }
}

/// Removes ANSI escape sequences (`ESC [ ... letter`) from a log line.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads `stream` line by line in a background thread (so the child never
/// blocks on a full pipe), appends each line to `log` tagged with `tag`, and
/// forwards it to `tx` if given.
fn spawn_reader<R: Read + Send + 'static>(
    stream: R,
    tag: &'static str,
    log: Log,
    tx: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&raw);
                    let line = strip_ansi(text.trim_end_matches(['\r', '\n']));
                    log.push(format!("[{tag}] {line}"));
                    if let Some(tx) = &tx {
                        let _ = tx.send(line);
                    }
                }
            }
        }
    })
}

/// Finds the address in a `tcp listening on ADDR` line.
fn parse_listening(line: &str) -> Option<Result<SocketAddr, String>> {
    let at = line.find(LISTENING)?;
    let rest = line[at + LISTENING.len()..].trim();
    let token = rest.split_whitespace().next().unwrap_or("");
    let token = token.trim_end_matches([',', '.', ';', ')']);
    Some(
        token
            .parse::<SocketAddr>()
            .map_err(|e| format!("cannot parse address {token:?} in log line {line:?}: {e}")),
    )
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// A running `switchboard serve`; killed (and its output printed if the test
/// is failing) on drop.
#[derive(Debug)]
pub struct ServerProc {
    child: Child,
    /// The plain TCP listener's address, from the log.
    pub addr: SocketAddr,
    log: Log,
    readers: Vec<JoinHandle<()>>,
    args: Vec<String>,
    exited: Option<ExitStatus>,
    _cwd: TempDir,
}

impl ServerProc {
    /// `serve --listen 127.0.0.1:0 --tls-listen off --ws-listen off` plus `extra`.
    #[track_caller]
    pub fn start(extra: &[&str]) -> Self {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "off",
            "--ws-listen",
            "off",
        ];
        args.extend_from_slice(extra);
        Self::start_raw(&args)
    }

    /// Runs the binary with exactly `args` and waits for the listening line.
    #[track_caller]
    pub fn start_raw(args: &[&str]) -> Self {
        let cwd = TempDir::new("srv");
        let mut child = match Command::new(BIN)
            .args(args)
            .current_dir(cwd.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot spawn {BIN} {args:?}: {e}"),
        };
        let log = Log::default();
        let (tx, rx) = mpsc::channel();
        let mut readers = Vec::new();
        if let Some(err) = child.stderr.take() {
            readers.push(spawn_reader(err, "stderr", log.clone(), Some(tx.clone())));
        }
        if let Some(out) = child.stdout.take() {
            readers.push(spawn_reader(out, "stdout", log.clone(), Some(tx)));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            let now = Instant::now();
            if now >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not log `{LISTENING}ADDR` within {START_TIMEOUT:?}\nargs: {args:?}\noutput:\n{}",
                    log.text()
                );
            }
            match rx.recv_timeout(deadline - now) {
                Ok(line) => match parse_listening(&line) {
                    Some(Ok(addr)) => break addr,
                    Some(Err(msg)) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("{msg}\noutput:\n{}", log.text());
                    }
                    None => {}
                },
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both pipes closed: the process is gone (or closed them).
                    let status = child.wait();
                    for r in readers.drain(..) {
                        let _ = r.join();
                    }
                    panic!(
                        "server exited before logging `{LISTENING}ADDR` (status {status:?})\nargs: {args:?}\noutput:\n{}",
                        log.text()
                    );
                }
            }
        };
        Self {
            child,
            addr,
            log,
            readers,
            args: args.iter().map(|s| s.to_string()).collect(),
            exited: None,
            _cwd: cwd,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server has written so far.
    pub fn log_text(&self) -> String {
        self.log.text()
    }

    /// A new raw connection.
    #[track_caller]
    pub fn connect(&self) -> Client {
        Client::connect(self.addr, "anon")
    }

    /// A new connection logged in with `USER 0 name` (auth none).
    #[track_caller]
    pub fn login(&self, name: &str) -> Client {
        let mut c = Client::connect(self.addr, name);
        c.send_line(&format!("USER 0 {name}"));
        c.expect_ack();
        c
    }

    /// A new connection logged in with `USER 0 name` and `PASS 0 password`.
    #[track_caller]
    pub fn login_password(&self, name: &str, password: &str) -> Client {
        let mut c = Client::connect(self.addr, name);
        c.send_line(&format!("USER 0 {name}"));
        c.expect_ack();
        c.send_line(&format!("PASS 0 {password}"));
        c.expect_ack();
        c
    }

    /// Sends a signal with the `kill` command, e.g. `signal("TERM")`.
    #[track_caller]
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!("kill -{sig} {} failed: {other:?}", self.pid()),
        }
    }

    /// Waits (bounded) for the process to exit and returns its status.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.exited = Some(s);
                    return s;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => panic!(
                    "server did not exit within {timeout:?}\noutput:\n{}",
                    self.log.text()
                ),
                Err(e) => panic!("try_wait failed: {e}"),
            }
        }
    }

    /// Panics (with the log) if the server process has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        match self.child.try_wait() {
            Ok(None) => {}
            Ok(Some(s)) => {
                self.exited = Some(s);
                panic!(
                    "server process exited unexpectedly with {s}\noutput:\n{}",
                    self.log.text()
                );
            }
            Err(e) => panic!("try_wait failed: {e}"),
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if self.exited.is_none() {
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        if thread::panicking() {
            eprintln!(
                "---- server output (args {:?}) ----\n{}\n---- end of server output ----",
                self.args,
                self.log.text()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// One-shot runs of the binary (start errors, `passwd`)
// ---------------------------------------------------------------------------

/// What a finished run of the binary produced.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Runs the binary with `args` (and `stdin` bytes, if given) in a fresh temp
/// dir; kills it and panics if it has not exited within `timeout`.
#[track_caller]
pub fn run_bin(args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> RunOutput {
    let cwd = TempDir::new("run");
    let mut child = match Command::new(BIN)
        .args(args)
        .current_dir(cwd.path())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot spawn {BIN} {args:?}: {e}"),
    };
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // The child may exit without reading; a broken pipe is fine.
        let _ = pipe.write_all(bytes);
    }
    let out_log = Log::default();
    let err_log = Log::default();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(spawn_reader(out, "stdout", out_log.clone(), None));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(spawn_reader(err, "stderr", err_log.clone(), None));
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                for r in readers.drain(..) {
                    let _ = r.join();
                }
                panic!(
                    "`switchboard {}` did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    args.join(" "),
                    out_log.text(),
                    err_log.text()
                );
            }
            Err(e) => panic!("try_wait failed: {e}"),
        }
    };
    for r in readers {
        let _ = r.join();
    }
    let untag = |log: &Log, tag: &str| {
        log.text()
            .lines()
            .map(|l| l.strip_prefix(tag).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
    RunOutput {
        status,
        stdout: untag(&out_log, "[stdout] "),
        stderr: untag(&err_log, "[stderr] "),
    }
}

/// Asserts that `switchboard ARGS` fails to start: it exits non-zero (within
/// the timeout), without a panic, and returns its output.
#[track_caller]
pub fn expect_start_failure(args: &[&str]) -> RunOutput {
    let out = run_bin(args, None, EXIT_TIMEOUT);
    assert!(
        !out.status.success(),
        "`switchboard {}` should exit non-zero, got {}\nstderr:\n{}",
        args.join(" "),
        out.status,
        out.stderr
    );
    assert!(
        !out.stderr.contains("panicked"),
        "`switchboard {}` should fail with a message, not a panic\nstderr:\n{}",
        args.join(" "),
        out.stderr
    );
    assert!(
        out.stderr.lines().all(|l| !l.contains(LISTENING)),
        "`switchboard {}` started listening although it should refuse to start\nstderr:\n{}",
        args.join(" "),
        out.stderr
    );
    out
}

/// `switchboard passwd FILE USER --password P`, asserting success.
#[track_caller]
pub fn passwd(file: &Path, user: &str, password: &str) {
    let args = ["passwd", path_str(file), user, "--password", password];
    let out = run_bin(&args, None, EXIT_TIMEOUT);
    assert!(
        out.status.success(),
        "`switchboard {}` failed with {}\nstderr:\n{}",
        args.join(" "),
        out.status,
        out.stderr
    );
}

/// `switchboard passwd FILE USER` with the password as one line on stdin.
#[track_caller]
pub fn passwd_stdin(file: &Path, user: &str, password: &str) {
    let args = ["passwd", path_str(file), user];
    let line = format!("{password}\n");
    let out = run_bin(&args, Some(line.as_bytes()), EXIT_TIMEOUT);
    assert!(
        out.status.success(),
        "`switchboard {}` (password on stdin) failed with {}\nstderr:\n{}",
        args.join(" "),
        out.status,
        out.stderr
    );
}

/// `switchboard passwd FILE USER --delete`, asserting success.
#[track_caller]
pub fn passwd_delete(file: &Path, user: &str) {
    let args = ["passwd", path_str(file), user, "--delete"];
    let out = run_bin(&args, None, EXIT_TIMEOUT);
    assert!(
        out.status.success(),
        "`switchboard {}` failed with {}\nstderr:\n{}",
        args.join(" "),
        out.status,
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// One frame as received: `TYPE LEN args\n` + LEN payload bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub ty: String,
    pub args: Vec<String>,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn is_push(&self) -> bool {
        PUSH_TYPES.contains(&self.ty.as_str())
    }

    /// The payload as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// Whether this is `ty` with exactly `args`.
    pub fn is(&self, ty: &str, args: &[&str]) -> bool {
        self.ty == ty
            && self
                .args
                .iter()
                .map(String::as_str)
                .eq(args.iter().copied())
    }
}

/// Shows a payload as an escaped string, truncated.
pub fn show_bytes(b: &[u8]) -> String {
    const MAX: usize = 160;
    let shown: String = b[..b.len().min(MAX)].escape_ascii().to_string();
    if b.len() > MAX {
        format!("b\"{shown}\"... ({} bytes)", b.len())
    } else {
        format!("b\"{shown}\"")
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{} {}", self.ty, self.payload.len())?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        write!(f, "` + {}", show_bytes(&self.payload))
    }
}

/// Why a read did not produce a frame.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing (complete) arrived before the deadline.
    Timeout {
        buffered: usize,
    },
    /// The server closed the connection (EOF, or reset when `reset`).
    Closed {
        reset: bool,
        buffered: usize,
    },
    /// The bytes received do not follow the frame grammar.
    Malformed(String),
    Io(io::Error),
}

/// Builds one frame: `TYPE LEN args\n` + payload.
pub fn frame(ty: &str, args: &[&str], payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{ty} {}", payload.len()).into_bytes();
    for a in args {
        out.push(b' ');
        out.extend_from_slice(a.as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(payload);
    out
}

/// Splits a RESULT payload into its lines; each line (also the last) must
/// end with `\n`, and an empty payload is an empty list.
#[track_caller]
pub fn result_lines(payload: &[u8]) -> Vec<String> {
    if payload.is_empty() {
        return Vec::new();
    }
    assert!(
        payload.ends_with(b"\n"),
        "RESULT payload must be lines each ending in \\n (also the last): {}",
        show_bytes(payload)
    );
    let text = String::from_utf8(payload.to_vec())
        .unwrap_or_else(|_| panic!("RESULT payload is not UTF-8: {}", show_bytes(payload)));
    text[..text.len() - 1]
        .split('\n')
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// The raw client
// ---------------------------------------------------------------------------

/// A raw protocol client over a blocking `TcpStream` with read deadlines.
///
/// Replies and pushed frames may interleave (protocol.md section 2): the
/// reply helpers ([`Client::reply`], [`Client::expect_ack`], ...) set pushed
/// frames aside, and [`Client::push`] / [`Client::next_frame`] return them
/// first, in the order they arrived.
pub struct Client {
    stream: TcpStream,
    pub label: String,
    buf: Vec<u8>,
    pending: VecDeque<Frame>,
    seen: VecDeque<String>,
    pub timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("label", &self.label)
            .finish()
    }
}

impl Client {
    #[track_caller]
    pub fn connect(addr: SocketAddr, label: &str) -> Self {
        let stream = match TcpStream::connect_timeout(&addr, READ_TIMEOUT) {
            Ok(s) => s,
            Err(e) => panic!("{label}: cannot connect to {addr}: {e}"),
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        Self {
            stream,
            label: label.to_string(),
            buf: Vec::new(),
            pending: VecDeque::new(),
            seen: VecDeque::new(),
            timeout: READ_TIMEOUT,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn history(&self) -> String {
        if self.seen.is_empty() {
            String::from("(no frame received yet)")
        } else {
            self.seen.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    // -- sending ------------------------------------------------------------

    /// Writes raw bytes (panics if the write fails).
    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            panic!(
                "{}: write of {} failed: {e}; frames received so far: {}",
                self.label,
                show_bytes(bytes),
                self.history()
            );
        }
    }

    /// Writes raw bytes, reporting failure instead of panicking.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes `line` followed by LF.
    #[track_caller]
    pub fn send_line(&mut self, line: &str) {
        let mut b = line.as_bytes().to_vec();
        b.push(b'\n');
        self.send(&b);
    }

    /// Writes one frame `TYPE LEN args\n` + payload.
    #[track_caller]
    pub fn send_frame(&mut self, ty: &str, args: &[&str], payload: &[u8]) {
        let f = frame(ty, args, payload);
        self.send(&f);
    }

    /// Closes the write half (the server sees EOF).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    // -- reading ------------------------------------------------------------

    /// Parses one complete frame from the buffer, if there is one.
    fn parse_buffered(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            let Some(lf) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > 4096 {
                    return Err(ReadError::Malformed(format!(
                        "header over 4096 bytes without LF: {}",
                        show_bytes(&self.buf)
                    )));
                }
                return Ok(None);
            };
            let mut header = &self.buf[..lf];
            if header.last() == Some(&b'\r') {
                header = &header[..header.len() - 1];
            }
            if header.is_empty() {
                // An empty line between frames; ignore it.
                self.buf.drain(..=lf);
                continue;
            }
            let bad = |why: &str| {
                ReadError::Malformed(format!("{why} in header {}", show_bytes(&self.buf[..=lf])))
            };
            if lf + 1 > 4096 {
                return Err(bad("header over 4096 bytes"));
            }
            let mut parts = header.split(|&b| b == b' ').filter(|p| !p.is_empty());
            let ty = parts.next().unwrap_or_default();
            if ty.is_empty() || ty.len() > 16 || !ty.iter().all(u8::is_ascii_uppercase) {
                return Err(bad("TYPE is not 1 to 16 upper-case letters"));
            }
            let len = parts.next().unwrap_or_default();
            if len.is_empty() || len.len() > 10 || !len.iter().all(u8::is_ascii_digit) {
                return Err(bad("LEN is not 1 to 10 digits"));
            }
            let len: usize = std::str::from_utf8(len)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("LEN does not parse"))?;
            if len > 64 << 20 {
                return Err(bad("LEN over 64 MiB"));
            }
            let mut args = Vec::new();
            for a in parts {
                if a.len() > 255 || !a.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
                    return Err(bad("argument not 1 to 255 bytes of 0x21..0x7E"));
                }
                args.push(String::from_utf8_lossy(a).into_owned());
            }
            if args.len() > 64 {
                return Err(bad("more than 64 arguments"));
            }
            let ty = String::from_utf8_lossy(ty).into_owned();
            let start = lf + 1;
            if self.buf.len() < start + len {
                return Ok(None);
            }
            let payload = self.buf[start..start + len].to_vec();
            self.buf.drain(..start + len);
            let f = Frame { ty, args, payload };
            if self.seen.len() == 8 {
                self.seen.pop_front();
            }
            self.seen.push_back(format!("{f:?}"));
            return Ok(Some(f));
        }
    }

    /// Reads more bytes into the buffer, waiting until `deadline` at most.
    fn fill(&mut self, deadline: Instant) -> Result<(), ReadError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadError::Timeout {
                buffered: self.buf.len(),
            });
        }
        if let Err(e) = self.stream.set_read_timeout(Some(deadline - now)) {
            return Err(ReadError::Io(e));
        }
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(ReadError::Closed {
                reset: false,
                buffered: self.buf.len(),
            }),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(ReadError::Timeout {
                    buffered: self.buf.len(),
                })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                Err(ReadError::Closed {
                    reset: true,
                    buffered: self.buf.len(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// The next frame from the wire (not from the set-aside pushes).
    pub fn read_raw(&mut self, timeout: Duration) -> Result<Frame, ReadError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.parse_buffered()? {
                return Ok(f);
            }
            self.fill(deadline)?;
        }
    }

    #[track_caller]
    fn read_or_panic(&mut self, what: &str) -> Frame {
        match self.read_raw(self.timeout) {
            Ok(f) => f,
            Err(e) => panic!(
                "{}: expected {what}, got {e:?} after {:?}; last frames received: {}",
                self.label,
                self.timeout,
                self.history()
            ),
        }
    }

    /// The next frame of any kind: set-aside pushes first, then the wire.
    #[track_caller]
    pub fn next_frame(&mut self) -> Frame {
        match self.pending.pop_front() {
            Some(f) => f,
            None => self.read_or_panic("a frame"),
        }
    }

    /// The next reply (ACK, RESULT, ERR, PONG); pushed frames that arrive
    /// first are set aside for [`Client::push`].
    #[track_caller]
    pub fn reply(&mut self) -> Frame {
        loop {
            let f = self.read_or_panic("a reply");
            if f.is_push() {
                self.pending.push_back(f);
            } else {
                return f;
            }
        }
    }

    /// The next pushed frame (set aside earlier, or from the wire); panics if
    /// a reply comes instead.
    #[track_caller]
    pub fn push(&mut self) -> Frame {
        if let Some(f) = self.pending.pop_front() {
            return f;
        }
        let f = self.read_or_panic("a pushed frame");
        assert!(
            f.is_push(),
            "{}: expected a pushed frame, got the reply {f:?}",
            self.label
        );
        f
    }

    /// Pushed frames set aside so far, not yet taken.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    // -- expectations ---------------------------------------------------------

    #[track_caller]
    pub fn expect_ack(&mut self) -> Frame {
        let f = self.reply();
        assert!(
            f.ty == "ACK" && f.args.is_empty(),
            "{}: expected ACK, got {f:?}",
            self.label
        );
        f
    }

    #[track_caller]
    pub fn expect_err(&mut self, code: &str) -> Frame {
        let f = self.reply();
        assert!(
            f.is("ERR", &[code]),
            "{}: expected `ERR LEN {code}`, got {f:?}",
            self.label
        );
        assert!(
            !f.payload.is_empty(),
            "{}: `ERR {code}` should carry a text saying what was wrong, got {f:?}",
            self.label
        );
        f
    }

    /// Expects `RESULT` and returns its payload.
    #[track_caller]
    pub fn expect_result(&mut self) -> Vec<u8> {
        let f = self.reply();
        assert!(
            f.ty == "RESULT" && f.args.is_empty(),
            "{}: expected RESULT, got {f:?}",
            self.label
        );
        f.payload
    }

    /// Expects `RESULT` and returns its lines.
    #[track_caller]
    pub fn expect_result_lines(&mut self) -> Vec<String> {
        let p = self.expect_result();
        result_lines(&p)
    }

    #[track_caller]
    pub fn expect_pong(&mut self) {
        let f = self.reply();
        assert!(
            f.is("PONG", &[]) && f.payload.is_empty(),
            "{}: expected `PONG 0`, got {f:?}",
            self.label
        );
    }

    /// Sends `line` and expects ACK.
    #[track_caller]
    pub fn ack(&mut self, line: &str) -> Frame {
        self.send_line(line);
        self.expect_ack()
    }

    /// Sends `line` and expects `ERR code`.
    #[track_caller]
    pub fn err(&mut self, line: &str, code: &str) -> Frame {
        self.send_line(line);
        let f = self.reply();
        assert!(
            f.is("ERR", &[code]) && !f.payload.is_empty(),
            "{}: `{line}` should get `ERR LEN {code}` with a text, got {f:?}",
            self.label
        );
        f
    }

    /// Sends `line` and expects RESULT lines.
    #[track_caller]
    pub fn result(&mut self, line: &str) -> Vec<String> {
        self.send_line(line);
        self.expect_result_lines()
    }

    /// `PING 0` → `PONG 0`.
    #[track_caller]
    pub fn ping(&mut self) {
        self.send_line("PING 0");
        self.expect_pong();
    }

    /// Expects a pushed `PUBLISHED LEN sender groups...` with `payload`.
    #[track_caller]
    pub fn expect_published(&mut self, sender: &str, groups: &[&str], payload: &[u8]) {
        let f = self.push();
        let mut args = vec![sender];
        args.extend_from_slice(groups);
        assert!(
            f.is("PUBLISHED", &args) && f.payload == payload,
            "{}: expected `PUBLISHED {} {}` + {}, got {f:?}",
            self.label,
            payload.len(),
            args.join(" "),
            show_bytes(payload)
        );
    }

    /// Expects a pushed `MESSAGE LEN sender` with `payload`.
    #[track_caller]
    pub fn expect_message(&mut self, sender: &str, payload: &[u8]) {
        let f = self.push();
        assert!(
            f.is("MESSAGE", &[sender]) && f.payload == payload,
            "{}: expected `MESSAGE {} {sender}` + {}, got {f:?}",
            self.label,
            payload.len(),
            show_bytes(payload)
        );
    }

    /// Round trip: sends `PING 0` and returns every frame that comes before
    /// the `PONG` (set-aside pushes included). Since replies come in order
    /// and a PUBLISH/SEND is ACKed once its deliveries are queued, this shows
    /// exactly what was delivered up to now.
    #[track_caller]
    pub fn sync(&mut self) -> Vec<Frame> {
        self.send_line("PING 0");
        let mut before = Vec::new();
        loop {
            let f = self.next_frame();
            if f.is("PONG", &[]) {
                assert!(
                    f.payload.is_empty(),
                    "{}: PONG with a payload: {f:?}",
                    self.label
                );
                return before;
            }
            before.push(f);
        }
    }

    /// Asserts that nothing was delivered (see [`Client::sync`]).
    #[track_caller]
    pub fn expect_quiet(&mut self, context: &str) {
        let extra = self.sync();
        assert!(
            extra.is_empty(),
            "{}: expected no frame ({context}), got {extra:?}",
            self.label
        );
    }

    /// Asserts that no byte arrives within `dur`.
    #[track_caller]
    pub fn expect_silence(&mut self, dur: Duration) {
        assert!(
            self.pending.is_empty(),
            "{}: expected silence, but frames were set aside: {:?}",
            self.label,
            self.pending
        );
        match self.read_raw(dur) {
            Err(ReadError::Timeout { buffered: 0 }) => {}
            other => panic!(
                "{}: expected nothing from the server for {dur:?}, got {other:?}",
                self.label
            ),
        }
    }

    /// Asserts that the server closes the connection (EOF or reset) with no
    /// further frame, within the read timeout.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        assert!(
            self.pending.is_empty(),
            "{}: expected the connection to be closed, but frames were set aside: {:?}",
            self.label,
            self.pending
        );
        match self.read_raw(self.timeout) {
            Err(ReadError::Closed { buffered: 0, .. }) => {}
            Err(ReadError::Closed { buffered, .. }) => panic!(
                "{}: connection closed after {buffered} bytes of an incomplete frame: {}",
                self.label,
                show_bytes(&self.buf)
            ),
            Ok(f) => panic!(
                "{}: expected the connection to be closed, got {f:?}",
                self.label
            ),
            Err(e) => panic!(
                "{}: expected the connection to be closed within {:?}, got {e:?}; last frames: {}",
                self.label,
                self.timeout,
                self.history()
            ),
        }
    }

    /// Reads every frame until the server closes the connection (EOF or
    /// reset), within `timeout`; returns the frames (set-aside ones first).
    #[track_caller]
    pub fn drain_until_closed(&mut self, timeout: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + timeout;
        let mut frames: Vec<Frame> = self.pending.drain(..).collect();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_raw(left.max(Duration::from_millis(1))) {
                Ok(f) => frames.push(f),
                Err(ReadError::Closed { .. }) => return frames,
                Err(e) => panic!(
                    "{}: expected the connection to be closed within {timeout:?}, got {e:?} after {} frames; last: {}",
                    self.label,
                    frames.len(),
                    self.history()
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// A tiny deterministic PRNG (xorshift64*), for generated inputs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
