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
pub const PUSH_TYPES: [&str; 7] = [
    "MESSAGE",
    "PUBLISHED",
    "JOINED",
    "PARTED",
    "PING",
    "REQUESTED",
    "SURVEYED",
];

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
pub fn parse_listening(line: &str) -> Option<Result<SocketAddr, String>> {
    listening_addr(line, LISTENING)
}

/// Finds the address after `marker` (e.g. `tls listening on `) in a log line.
fn listening_addr(line: &str, marker: &str) -> Option<Result<SocketAddr, String>> {
    let at = line.find(marker)?;
    let rest = line[at + marker.len()..].trim();
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

/// `serve --listen 127.0.0.1:0 --tls-listen off --ws-listen off --wss-listen off` plus `extra`:
/// the arguments of [`ServerProc::start`].
pub fn serve_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    serve_args_listening(extra, "off")
}

/// `serve --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0 --ws-listen off --wss-listen off` plus `extra`.
pub fn serve_tls_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    serve_args_listening(extra, "127.0.0.1:0")
}

/// `serve --listen 127.0.0.1:0 --tls-listen TLS_LISTEN --ws-listen off --wss-listen off` plus `extra`.
fn serve_args_listening<'a>(extra: &[&'a str], tls_listen: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        tls_listen,
        "--ws-listen",
        "off",
        "--wss-listen",
        "off",
    ];
    args.extend_from_slice(extra);
    // The whole suite runs again over several loops (`.ci/run`):
    // `SWITCHBOARD_TEST_THREADS=N` adds `--threads N` to every server the
    // tests start this way.
    if let Some(n) = test_threads() {
        args.push("--threads");
        args.push(n);
    }
    args
}

/// `SWITCHBOARD_TEST_THREADS`, when set to more than one loop.
pub fn test_threads() -> Option<&'static str> {
    static THREADS: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    THREADS
        .get_or_init(|| {
            std::env::var("SWITCHBOARD_TEST_THREADS")
                .ok()
                .filter(|n| n.parse::<usize>().is_ok_and(|n| n > 1))
        })
        .as_deref()
}

/// Spawns `program ARGS` (in `cwd`, if given) with stdin, stdout and stderr
/// piped, or panics naming `label`.
#[track_caller]
pub fn spawn_piped(label: &str, program: &str, args: &[&str], cwd: Option<&Path>) -> Child {
    let mut command = Command::new(program);
    command.args(args);
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{label}: cannot spawn {program} {args:?}: {e}"))
}

/// Polls `child` every 10 ms until it exits (its status) or `timeout` passes
/// (`None`); a failed `try_wait` is returned at once.
pub fn wait_child(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait()? {
            Some(s) => return Ok(Some(s)),
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            None => return Ok(None),
        }
    }
}

/// Kills `child` if it is still running and reaps it.
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

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
    /// `serve --listen 127.0.0.1:0 --tls-listen off --ws-listen off --wss-listen off` plus `extra`.
    #[track_caller]
    pub fn start(extra: &[&str]) -> Self {
        Self::start_raw(&serve_args(extra))
    }

    /// Runs the binary with exactly `args` in a fresh temporary directory and
    /// waits for the listening line.
    #[track_caller]
    pub fn start_raw(args: &[&str]) -> Self {
        Self::start_in(TempDir::new("srv"), args)
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
        match wait_child(&mut self.child, timeout) {
            Ok(Some(s)) => {
                self.exited = Some(s);
                s
            }
            Ok(None) => panic!(
                "server did not exit within {timeout:?}\noutput:\n{}",
                self.log.text()
            ),
            Err(e) => panic!("try_wait failed: {e}"),
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
            kill_and_reap(&mut self.child);
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
    let status = match wait_child(&mut child, timeout) {
        Ok(Some(s)) => s,
        Ok(None) => {
            kill_and_reap(&mut child);
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

/// Runs the binary like [`run_bin`] (within [`EXIT_TIMEOUT`]) and asserts
/// exit status 0; `stdin_note` says what stdin carried, for the message.
#[track_caller]
pub fn run_bin_ok(args: &[&str], stdin: Option<&[u8]>, stdin_note: &str) -> RunOutput {
    let out = run_bin(args, stdin, EXIT_TIMEOUT);
    assert!(
        out.status.success(),
        "`switchboard {}`{stdin_note} failed with {}\nstderr:\n{}",
        args.join(" "),
        out.status,
        out.stderr
    );
    out
}

/// `switchboard passwd FILE USER --password P`, asserting success.
#[track_caller]
pub fn passwd(file: &Path, user: &str, password: &str) {
    run_bin_ok(
        &["passwd", path_str(file), user, "--password", password],
        None,
        "",
    );
}

/// `switchboard passwd FILE USER` with the password as one line on stdin.
#[track_caller]
pub fn passwd_stdin(file: &Path, user: &str, password: &str) {
    let line = format!("{password}\n");
    run_bin_ok(
        &["passwd", path_str(file), user],
        Some(line.as_bytes()),
        " (password on stdin)",
    );
}

/// `switchboard passwd FILE USER --delete`, asserting success.
#[track_caller]
pub fn passwd_delete(file: &Path, user: &str) {
    run_bin_ok(&["passwd", path_str(file), user, "--delete"], None, "");
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

// ---------------------------------------------------------------------------
// TLS (issue 3): servers with a TLS listener, certificates, TLS clients
// ---------------------------------------------------------------------------
//
// A TLS client reuses the plain [`Client`] (and every expect_* helper) through
// a small tunnel: [`TlsClient`] does the handshake with rustls over a real
// socket to the server, then a pump thread moves plaintext between that TLS
// session and a loopback socket whose other end is an ordinary [`Client`].
// When the server ends the TLS session, the pump records how (close_notify,
// bare EOF, TLS error) and closes the loopback socket, so `expect_closed` and
// `drain_until_closed` work as for plain TCP. Programs that speak TLS on
// their own (`openssl s_client`) are tunnelled the same way through their
// standard input and output ([`StdioClient`]).

/// The log marker that carries the TLS listener's address.
const TLS_LISTENING: &str = "tls listening on ";

impl ServerProc {
    /// `serve --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0 --ws-listen off --wss-listen off`
    /// plus `extra` (certificates, client auth, ...).
    #[track_caller]
    pub fn start_tls(extra: &[&str]) -> Self {
        Self::start_raw(&serve_tls_args(extra))
    }

    /// Like [`ServerProc::start_raw`], but runs the server in `cwd` (which it
    /// then owns; get it back with [`ServerProc::stop`]).
    #[track_caller]
    pub fn start_in(cwd: TempDir, args: &[&str]) -> Self {
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
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => match parse_listening(&line) {
                    Some(found) => break found,
                    None => continue,
                },
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    break Err(format!("no `{LISTENING}ADDR` within {START_TIMEOUT:?}"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(format!("exited before logging `{LISTENING}ADDR`"));
                }
            }
        };
        match found {
            Ok(addr) => Self {
                child,
                addr,
                log,
                readers,
                args: args.iter().map(|s| s.to_string()).collect(),
                exited: None,
                _cwd: cwd,
            },
            Err(why) => {
                kill_and_reap(&mut child);
                for r in readers {
                    let _ = r.join();
                }
                panic!("server {why}\nargs: {args:?}\noutput:\n{}", log.text());
            }
        }
    }

    /// The directory the server runs in.
    pub fn cwd(&self) -> &Path {
        self._cwd.path()
    }

    /// Kills the server and hands back the directory it ran in.
    pub fn stop(mut self) -> TempDir {
        std::mem::replace(&mut self._cwd, TempDir::new("stopped"))
        // `self` is dropped here: the process is killed and waited for.
    }

    /// The TLS listener's address, from the log line `tls listening on ADDR`
    /// (waits for it, bounded).
    #[track_caller]
    pub fn tls_addr(&self) -> SocketAddr {
        let mut found = None;
        wait_until(START_TIMEOUT, || {
            found = self
                .log
                .text()
                .lines()
                .find_map(|l| tls_listening(&strip_ansi(l)));
            found.is_some()
        });
        match found {
            Some(Ok(addr)) => addr,
            Some(Err(msg)) => panic!("{msg}\noutput:\n{}", self.log.text()),
            None => panic!(
                "server did not log `{TLS_LISTENING}ADDR` within {START_TIMEOUT:?}\noutput:\n{}",
                self.log.text()
            ),
        }
    }

    /// Waits (bounded) until a log line contains `needle`; returns that line.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let mut line = None;
        wait_until(timeout, || {
            line = self
                .log
                .text()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string);
            line.is_some()
        });
        line
    }

    /// A TLS connection (panics if the handshake fails).
    #[track_caller]
    pub fn tls_connect(&self, config: &Arc<rustls::ClientConfig>, label: &str) -> TlsClient {
        TlsClient::connect(self.tls_addr(), config, label)
    }

    /// A TLS connection logged in with `USER 0 name`.
    #[track_caller]
    pub fn tls_login(&self, config: &Arc<rustls::ClientConfig>, name: &str) -> TlsClient {
        let mut c = self.tls_connect(config, name);
        c.ack(&format!("USER 0 {name}"));
        c
    }
}

/// Finds the address in a `tls listening on ADDR` line.
fn tls_listening(line: &str) -> Option<Result<SocketAddr, String>> {
    listening_addr(line, TLS_LISTENING)
}

/// A directory of certificates made by `switchboard certs DIR --client ...`.
#[derive(Debug)]
pub struct CertDir {
    dir: TempDir,
}

impl CertDir {
    /// Runs `switchboard certs DIR --client NAME...` (asserting success).
    #[track_caller]
    pub fn new(clients: &[&str]) -> Self {
        let dir = TempDir::new("certs");
        let out = certs_cmd(dir.path(), clients, false);
        assert!(
            out.status.success(),
            "`switchboard certs` failed with {}\nstderr:\n{}",
            out.status,
            out.stderr
        );
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `DIR/NAME`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `DIR/NAME` as a string.
    pub fn arg(&self, name: &str) -> String {
        path_str(&self.dir.join(name)).to_string()
    }

    pub fn ca(&self) -> PathBuf {
        self.file("ca.pem")
    }

    /// `--cert DIR/server.pem --key DIR/server.key`.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--cert".into(),
            self.arg("server.pem"),
            "--key".into(),
            self.arg("server.key"),
        ]
    }

    /// [`CertDir::server_args`] plus `--client-ca DIR/ca.pem --client-auth MODE`.
    pub fn mutual_args(&self, mode: &str) -> Vec<String> {
        let mut v = self.server_args();
        v.extend([
            "--client-ca".into(),
            self.arg("ca.pem"),
            "--client-auth".into(),
            mode.into(),
        ]);
        v
    }

    /// A client config trusting this CA (no client certificate).
    #[track_caller]
    pub fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        tls_client_config(&self.ca(), None, versions)
    }

    /// A client config trusting this CA and presenting `NAME.pem`/`NAME.key`.
    #[track_caller]
    pub fn client_config_as(
        &self,
        name: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let cert = self.file(&format!("{name}.pem"));
        let key = self.file(&format!("{name}.key"));
        tls_client_config(&self.ca(), Some((&cert, &key)), versions)
    }
}

/// Runs `switchboard certs DIR [--client NAME...] [--force]` (any outcome).
#[track_caller]
pub fn certs_cmd(dir: &Path, clients: &[&str], force: bool) -> RunOutput {
    let mut args = vec!["certs", path_str(dir)];
    for c in clients {
        args.extend(["--client", c]);
    }
    if force {
        args.push("--force");
    }
    run_bin(&args, None, EXIT_TIMEOUT)
}

/// TLS 1.3 and 1.2.
pub const TLS_ANY: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
pub const TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
pub const TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// A rustls client config (ring provider) trusting the CA in `ca`, with an
/// optional client certificate `(cert, key)`, offering `versions`.
#[track_caller]
pub fn tls_client_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let roots = switchboard::certs::load_roots(ca)
        .unwrap_or_else(|e| panic!("cannot load CA {}: {e}", ca.display()));
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap_or_else(|e| panic!("protocol versions {versions:?}: {e}"))
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = switchboard::certs::load_certs(cert)
                .unwrap_or_else(|e| panic!("cannot load {}: {e}", cert.display()));
            let key_der = switchboard::certs::load_key(key)
                .unwrap_or_else(|e| panic!("cannot load {}: {e}", key.display()));
            builder
                .with_client_auth_cert(chain, key_der)
                .unwrap_or_else(|e| panic!("client certificate {}: {e}", cert.display()))
        }
    };
    Arc::new(config)
}

/// Connects to `addr` and completes a TLS handshake (server name
/// `localhost`) over a blocking socket with 5 s read/write timeouts. The
/// client's last handshake flight is written before this returns.
pub fn tls_handshake(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> Result<(rustls::ClientConnection, TcpStream), String> {
    tls_handshake_named(addr, config, "localhost")
}

/// [`tls_handshake`] verifying the server as `server_name` (a DNS name or an
/// IP address).
pub fn tls_handshake_named(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    server_name: &str,
) -> Result<(rustls::ClientConnection, TcpStream), String> {
    tls_handshake_then(addr, config, server_name, &[])
}

/// [`tls_handshake_named`], sending `first` (plaintext) in the same write as
/// the client's last handshake flight (its `Finished`), as a client that has
/// data ready does: the server gets both in one read.
pub fn tls_handshake_then(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    server_name: &str,
    first: &[u8],
) -> Result<(rustls::ClientConnection, TcpStream), String> {
    let mut sock = TcpStream::connect_timeout(&addr, READ_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = sock.set_nodelay(true);
    let _ = sock.set_read_timeout(Some(READ_TIMEOUT));
    let _ = sock.set_write_timeout(Some(READ_TIMEOUT));
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("server name {server_name:?}: {e}"))?;
    let mut conn = rustls::ClientConnection::new(Arc::clone(config), name)
        .map_err(|e| format!("ClientConnection::new: {e}"))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
    }
    if !first.is_empty() {
        conn.writer()
            .write_all(first)
            .map_err(|e| format!("queueing the first data: {e}"))?;
    }
    let mut flight = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut flight)
            .map_err(|e| format!("encoding the last handshake flight: {e}"))?;
    }
    sock.write_all(&flight)
        .map_err(|e| format!("writing the last handshake flight to {addr}: {e}"))?;
    Ok((conn, sock))
}

/// Reads plaintext from a raw TLS session until `done(all read so far)`
/// (then the end is `None`), the session ends, or `timeout` passes (then
/// [`TlsEnd::Timeout`]). Returns what was read and how it ended.
pub fn tls_read_until(
    conn: &mut rustls::ClientConnection,
    sock: &mut TcpStream,
    timeout: Duration,
    mut done: impl FnMut(&[u8]) -> bool,
) -> (Vec<u8>, Option<TlsEnd>) {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        // Plaintext already decrypted comes first.
        loop {
            if done(&got) {
                return (got, None);
            }
            match conn.reader().read(&mut chunk) {
                Ok(0) => return (got, Some(TlsEnd::CloseNotify)),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return (got, Some(TlsEnd::Eof));
                }
                Err(e) => return (got, Some(TlsEnd::Error(e.to_string()))),
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return (got, Some(TlsEnd::Timeout));
        }
        let _ = sock.set_read_timeout(Some(deadline - now));
        match conn.read_tls(sock) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (got, Some(TlsEnd::Timeout));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return (got, Some(TlsEnd::Io(e.to_string()))),
        }
        if let Err(e) = conn.process_new_packets() {
            // Keep what was decrypted before the failure.
            while let Ok(n) = conn.reader().read(&mut chunk) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
            }
            return (got, Some(TlsEnd::Error(e.to_string())));
        }
    }
}

/// Reads plaintext from a raw TLS session until it ends or `timeout` passes.
pub fn tls_read_to_end(
    conn: &mut rustls::ClientConnection,
    sock: &mut TcpStream,
    timeout: Duration,
) -> (Vec<u8>, TlsEnd) {
    let (got, end) = tls_read_until(conn, sock, timeout, |_| false);
    (got, end.unwrap_or(TlsEnd::Timeout))
}

/// Writes plaintext on a raw TLS session (all of it).
pub fn tls_write_all(
    conn: &mut rustls::ClientConnection,
    sock: &mut TcpStream,
    bytes: &[u8],
) -> io::Result<()> {
    conn.writer().write_all(bytes)?;
    while conn.wants_write() {
        conn.write_tls(sock)?;
    }
    Ok(())
}

/// Asserts that the server refuses a TLS client with `config`: the handshake
/// fails, or (TLS 1.3, where the server checks the client's certificate after
/// the client is done) the session ends without answering `PING 0`. Returns a
/// description of how it failed.
#[track_caller]
pub fn expect_tls_refused(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    what: &str,
) -> String {
    let (mut conn, mut sock) = match tls_handshake(addr, config) {
        Err(e) => return format!("handshake failed: {e}"),
        Ok(pair) => pair,
    };
    // The client finished its side; the server must still refuse it.
    let _ = tls_write_all(&mut conn, &mut sock, b"PING 0\n");
    let (got, end) = tls_read_to_end(&mut conn, &mut sock, READ_TIMEOUT);
    assert!(
        got.is_empty() && !matches!(end, TlsEnd::Timeout),
        "{what}: the server should refuse this client, but after the handshake it got {} and then {end:?}",
        show_bytes(&got)
    );
    format!("refused after the client's handshake: {end:?}")
}

/// How a TLS session ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsEnd {
    /// The server sent `close_notify`.
    CloseNotify,
    /// TCP EOF without `close_notify`.
    Eof,
    /// A TLS error (an alert received, a bad record...).
    Error(String),
    /// A socket error (reset...).
    Io(String),
    /// Nothing more came before the deadline (the session did not end).
    Timeout,
}

/// A TLS client: a [`Client`] (all its helpers, through `Deref`) tunnelled
/// over a rustls session with the server.
pub struct TlsClient {
    client: Client,
    /// The negotiated protocol version.
    pub version: Option<rustls::ProtocolVersion>,
    /// Full or resumed handshake.
    pub handshake_kind: Option<rustls::HandshakeKind>,
    /// The negotiated cipher suite.
    pub cipher_suite: Option<rustls::CipherSuite>,
    end: Arc<Mutex<Option<TlsEnd>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    pump: Option<JoinHandle<()>>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("label", &self.client.label)
            .field("version", &self.version)
            .finish()
    }
}

/// Implements `Deref`, `DerefMut`, `Borrow` and `BorrowMut` to [`Client`]
/// for a wrapper type whose `client` field is the [`Client`] it tunnels to.
macro_rules! wraps_client {
    ($wrapper:ty) => {
        impl std::ops::Deref for $wrapper {
            type Target = Client;
            fn deref(&self) -> &Client {
                &self.client
            }
        }

        impl std::ops::DerefMut for $wrapper {
            fn deref_mut(&mut self) -> &mut Client {
                &mut self.client
            }
        }

        impl std::borrow::Borrow<Client> for $wrapper {
            fn borrow(&self) -> &Client {
                &self.client
            }
        }

        impl std::borrow::BorrowMut<Client> for $wrapper {
            fn borrow_mut(&mut self) -> &mut Client {
                &mut self.client
            }
        }
    };
}

wraps_client!(TlsClient);

impl TlsClient {
    /// Connects and completes the handshake, or panics.
    #[track_caller]
    pub fn connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, label: &str) -> Self {
        match tls_handshake(addr, config) {
            Ok((conn, sock)) => Self::from_conn(conn, sock, label),
            Err(e) => panic!("{label}: {e}"),
        }
    }

    /// Connects and sends `first` together with the client's `Finished`
    /// (see [`tls_handshake_then`]), or panics.
    #[track_caller]
    pub fn connect_then(
        addr: SocketAddr,
        config: &Arc<rustls::ClientConfig>,
        label: &str,
        first: &[u8],
    ) -> Self {
        match tls_handshake_then(addr, config, "localhost", first) {
            Ok((conn, sock)) => Self::from_conn(conn, sock, label),
            Err(e) => panic!("{label}: {e}"),
        }
    }

    /// Tunnels an established session (made with [`tls_handshake`]).
    #[track_caller]
    pub fn from_conn(conn: rustls::ClientConnection, sock: TcpStream, label: &str) -> Self {
        let (client, local) = tunnel(label);
        let version = conn.protocol_version();
        let handshake_kind = conn.handshake_kind();
        let cipher_suite = conn.negotiated_cipher_suite().map(|s| s.suite());
        let end = Arc::new(Mutex::new(None));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pump = {
            let end = Arc::clone(&end);
            let stop = Arc::clone(&stop);
            thread::spawn(move || tls_pump(conn, sock, local, &end, &stop))
        };
        Self {
            client,
            version,
            handshake_kind,
            cipher_suite,
            end,
            stop,
            pump: Some(pump),
        }
    }

    /// How the server ended the session, once it has.
    pub fn tls_end(&self) -> Option<TlsEnd> {
        self.end.lock().ok().and_then(|e| e.clone())
    }

    /// Asserts that the server closes the connection with no further frame
    /// and ends the session with `close_notify`.
    #[track_caller]
    pub fn expect_close_notify(&mut self) {
        self.client.expect_closed();
        let end = self.tls_end();
        assert_eq!(
            end,
            Some(TlsEnd::CloseNotify),
            "{}: the server should end the TLS session with close_notify",
            self.client.label
        );
    }
}

impl Drop for TlsClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }
}

/// A loopback connection: a [`Client`] named `label` and the socket at the
/// other end, which carries what the client sends and receives.
#[track_caller]
fn tunnel(label: &str) -> (Client, TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("{label}: cannot bind the tunnel: {e}"));
    let local_addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{label}: tunnel address: {e}"));
    let client = Client::connect(local_addr, label);
    let (local, _) = listener
        .accept()
        .unwrap_or_else(|e| panic!("{label}: tunnel accept: {e}"));
    (client, local)
}

/// Moves plaintext between the TLS session (`tls`) and the tunnel's socket
/// (`local`), both nonblocking, until the test drops the client.
fn tls_pump(
    mut conn: rustls::ClientConnection,
    mut tls: TcpStream,
    mut local: TcpStream,
    end_slot: &Mutex<Option<TlsEnd>>,
    stop: &std::sync::atomic::AtomicBool,
) {
    use io::ErrorKind::{Interrupted, UnexpectedEof, WouldBlock};
    if tls.set_nonblocking(true).is_err() || local.set_nonblocking(true).is_err() {
        return;
    }
    let mut chunk = vec![0u8; 64 * 1024];
    let mut to_server: Vec<u8> = Vec::new();
    let mut to_local: Vec<u8> = Vec::new();
    let mut local_eof = false;
    let mut tcp_eof = false;
    let mut end: Option<TlsEnd> = None;
    let mut local_shut = false;
    let mut write_failed = false;
    let mut idle = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let mut progress = false;
        // Test → tunnel → rustls.
        if !local_eof && to_server.len() < 1 << 20 {
            match local.read(&mut chunk) {
                Ok(0) => {
                    local_eof = true;
                    progress = true;
                    if end.is_none() {
                        conn.send_close_notify();
                    }
                }
                Ok(n) => {
                    to_server.extend_from_slice(&chunk[..n]);
                    progress = true;
                }
                Err(e) if matches!(e.kind(), WouldBlock | Interrupted) => {}
                Err(_) => local_eof = true,
            }
        }
        if end.is_none() && !to_server.is_empty() {
            if let Ok(n) = conn.writer().write(&to_server) {
                to_server.drain(..n);
                progress |= n > 0;
            }
        }
        // rustls → server.
        while end.is_none() && !write_failed && conn.wants_write() {
            match conn.write_tls(&mut tls) {
                Ok(_) => progress = true,
                Err(e) if e.kind() == WouldBlock => break,
                Err(e) if e.kind() == Interrupted => {}
                // The server closed: what it sent before is still to be
                // read, and reading will find the end.
                Err(_) => write_failed = true,
            }
        }
        // Server → rustls → tunnel (paused while the test is not reading).
        if end.is_none() && to_local.len() < 256 * 1024 {
            match conn.read_tls(&mut tls) {
                Ok(0) => {
                    tcp_eof = true;
                    progress = true;
                }
                Ok(_) => progress = true,
                Err(e) if matches!(e.kind(), WouldBlock | Interrupted) => {}
                Err(e) => end = Some(TlsEnd::Io(format!("read: {e}"))),
            }
            let failed = conn.process_new_packets().err();
            loop {
                match conn.reader().read(&mut chunk) {
                    Ok(0) => {
                        end.get_or_insert(TlsEnd::CloseNotify);
                        break;
                    }
                    Ok(n) => to_local.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == UnexpectedEof => {
                        end.get_or_insert(TlsEnd::Eof);
                        break;
                    }
                    Err(e) if e.kind() == WouldBlock => {
                        if tcp_eof {
                            end.get_or_insert(TlsEnd::Eof);
                        }
                        break;
                    }
                    Err(e) => {
                        end.get_or_insert(TlsEnd::Error(e.to_string()));
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                end.get_or_insert(TlsEnd::Error(e.to_string()));
                // Best effort: the alert rustls queued.
                let _ = conn.write_tls(&mut tls);
            }
        }
        // Tunnel → test.
        if !to_local.is_empty() {
            match local.write(&to_local) {
                Ok(n) => {
                    to_local.drain(..n);
                    progress |= n > 0;
                }
                Err(e) if matches!(e.kind(), WouldBlock | Interrupted) => {}
                Err(_) => to_local.clear(),
            }
        }
        // The session ended and the test got everything: tell it (EOF).
        if let Some(e) = &end {
            if to_local.is_empty() && !local_shut {
                if let Ok(mut slot) = end_slot.lock() {
                    *slot = Some(e.clone());
                }
                let _ = local.shutdown(Shutdown::Write);
                let _ = tls.shutdown(Shutdown::Both);
                local_shut = true;
            }
            if local_shut && local_eof {
                return;
            }
        }
        if progress {
            idle = 0;
        } else {
            idle = idle.saturating_add(1);
            // Spin briefly for low latency, then back off to 1 ms naps.
            if idle > 50 {
                thread::sleep(Duration::from_millis(1));
            } else {
                thread::yield_now();
            }
        }
    }
}

/// A program that speaks TLS on its own (`openssl s_client`), tunnelled
/// through its standard input and output to a [`Client`]; killed on drop.
pub struct StdioClient {
    client: Client,
    child: Child,
    stderr: Log,
    readers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for StdioClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdioClient")
            .field("label", &self.client.label)
            .finish()
    }
}

wraps_client!(StdioClient);

impl StdioClient {
    /// Spawns `program args...`; its stdout becomes what the [`Client`] reads,
    /// what the client sends goes to its stdin.
    #[track_caller]
    pub fn spawn(program: &str, args: &[&str], label: &str) -> Self {
        let mut child = spawn_piped(label, program, args, None);
        let (client, local) = tunnel(label);
        let stderr = Log::default();
        let mut readers = Vec::new();
        if let Some(err) = child.stderr.take() {
            readers.push(spawn_reader(err, "stderr", stderr.clone(), None));
        }
        // Child stdout → tunnel; EOF on stdout is EOF for the client.
        if let (Some(mut out), Ok(mut to_client)) = (child.stdout.take(), local.try_clone()) {
            readers.push(thread::spawn(move || {
                copy_plain(&mut out, &mut to_client);
                let _ = to_client.shutdown(Shutdown::Write);
            }));
        }
        // Tunnel → child stdin (ends when the client closes or shuts down its write side).
        if let Some(mut stdin) = child.stdin.take() {
            let mut from_client = local;
            thread::spawn(move || {
                copy_plain(&mut from_client, &mut stdin);
            });
        }
        Self {
            client,
            child,
            stderr,
            readers,
        }
    }

    /// What the program wrote on stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }

    /// Waits (bounded) for the program to exit; `None` if it did not.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_child(&mut self.child, timeout).ok().flatten()?;
        // The stderr reader finishes once the pipe closes.
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Some(status)
    }
}

impl Drop for StdioClient {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
        if thread::panicking() {
            eprintln!(
                "---- {} stderr ----\n{}\n---- end ----",
                self.client.label,
                self.stderr.text()
            );
        }
    }
}

/// Copies `from` to `to` until EOF or an error, with plain reads and writes.
/// (`io::copy` would use `splice(2)` between a socket and a pipe, which
/// holds the pipe's lock while it waits: the child could not exit, stuck
/// closing its end of the pipe.)
fn copy_plain(from: &mut impl Read, to: &mut impl Write) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Parses `bytes` as a stream of frames (through a loopback socket and a
/// [`Client`], so the same grammar checks apply).
#[track_caller]
pub fn parse_frames(bytes: &[u8], label: &str) -> Vec<Frame> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("{label}: cannot bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{label}: local_addr: {e}"));
    let data = bytes.to_vec();
    let writer = thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(&data);
            let _ = s.shutdown(Shutdown::Write);
            // Wait for the reader to finish, so no reset loses data.
            let mut sink = [0u8; 64];
            let _ = s.set_read_timeout(Some(EXIT_TIMEOUT));
            let _ = s.read(&mut sink);
        }
    });
    let mut c = Client::connect(addr, label);
    let frames = c.drain_until_closed(EXIT_TIMEOUT);
    drop(c);
    let _ = writer.join();
    frames
}

/// `which NAME`: whether the program is on the PATH.
pub fn have_program(name: &str) -> bool {
    Command::new("which")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Publishes `count` messages of `size` bytes to group 1, each starting with
/// its sequence number (big-endian u32), staying at most one message ahead of
/// a reader that reports each message it got on `progress`. Returns the
/// slowest ACK and the time for all of them.
#[track_caller]
pub fn publish_paced(
    publisher: &mut Client,
    progress: &mpsc::Receiver<usize>,
    count: usize,
    size: usize,
) -> (Duration, Duration) {
    let t0 = Instant::now();
    let mut slowest_ack = Duration::ZERO;
    for i in 0..count {
        if i > 0 && progress.recv_timeout(READ_TIMEOUT).is_err() {
            break; // the reader failed: its panic is reported by the caller
        }
        let mut payload = vec![(i % 256) as u8; size];
        payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
        let t = Instant::now();
        publisher.label = format!("publisher, message {i}");
        publisher.send_frame("PUBLISH", &["1"], &payload);
        publisher.expect_ack();
        slowest_ack = slowest_ack.max(t.elapsed());
    }
    (slowest_ack, t0.elapsed())
}

/// Parses HELLO's `key=value` lines.
#[track_caller]
pub fn hello_map(lines: &[String]) -> std::collections::BTreeMap<String, String> {
    lines
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => panic!("HELLO line {l:?} is not key=value (all lines: {lines:?})"),
        })
        .collect()
}

/// Reads until end of stream (or a reset); returns what came.
pub fn read_to_end(s: &mut impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return v,
            Ok(n) => v.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return v,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Publishes `count` messages of `size` bytes paced by the reader of
/// [`read_paced`], then checks the reader got all of them in order and the
/// publisher was never held back (slowest ACK under 2 s, all within
/// `max_total`). Returns the reader's client.
#[track_caller]
#[must_use = "dropping the reading client disconnects it"]
pub fn publish_to_paced_reader<C>(
    publisher: &mut Client,
    (reader, progress): (JoinHandle<(Vec<u32>, C)>, mpsc::Receiver<usize>),
    (count, size): (usize, usize),
    max_total: Duration,
    what: &str,
) -> C {
    let (slowest_ack, publish_time) = publish_paced(publisher, &progress, count, size);
    let (got, client) = match reader.join() {
        Ok(g) => g,
        Err(e) => std::panic::resume_unwind(e),
    };
    let want: Vec<u32> = (0..count as u32).collect();
    assert!(
        got == want,
        "the {what} got messages out of order or lost some"
    );
    assert!(
        slowest_ack < Duration::from_secs(2) && publish_time < max_total,
        "the publisher was held back: slowest ACK {slowest_ack:?}, all {count} in {publish_time:?}"
    );
    client
}

/// Checks what a subscriber cut off as a slow consumer received: PUBLISHED
/// frames of `size` bytes numbered 0, 1, ... (big-endian in their first four
/// bytes), fewer than `count`, optionally followed by one final
/// `ERR slow-consumer`. Returns how many messages it got.
#[track_caller]
pub fn assert_slow_consumer_prefix(frames: &[Frame], size: usize, count: usize) -> usize {
    let mut next = 0u32;
    for (k, f) in frames.iter().enumerate() {
        if f.ty == "ERR" {
            assert!(
                f.is("ERR", &["slow-consumer"]) && k == frames.len() - 1,
                "slow subscriber: only a final ERR slow-consumer may follow the messages, got {f:?} at {k}"
            );
            continue;
        }
        assert!(
            f.ty == "PUBLISHED" && f.payload.len() == size,
            "slow subscriber: unexpected {f:?}"
        );
        let idx = u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]);
        assert_eq!(idx, next, "slow subscriber: messages out of order");
        next += 1;
    }
    let got = next as usize;
    assert!(
        got < count,
        "the slow subscriber got all {count} messages: it was never treated as a slow consumer"
    );
    got
}

/// The reading side of [`publish_paced`]: a thread that takes `count`
/// PUBLISHED frames of `size` bytes from `publisher` in group 1 on `fast`,
/// reports each on the returned channel, checks nothing more arrives, and
/// returns the sequence numbers it saw (and the client).
pub fn read_paced<C>(
    mut fast: C,
    count: usize,
    size: usize,
) -> (JoinHandle<(Vec<u32>, C)>, mpsc::Receiver<usize>)
where
    C: std::borrow::BorrowMut<Client> + Send + 'static,
{
    let (received, progress) = mpsc::channel::<usize>();
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        for i in 0..count {
            let client = fast.borrow_mut();
            client.label = format!("fast subscriber waiting for message {i}");
            let f = client.push();
            assert!(
                f.ty == "PUBLISHED" && f.args == ["publisher", "1"] && f.payload.len() == size,
                "fast subscriber: expected PUBLISHED {size} publisher 1, got {f:?}"
            );
            got.push(u32::from_be_bytes([
                f.payload[0],
                f.payload[1],
                f.payload[2],
                f.payload[3],
            ]));
            let _ = received.send(i);
        }
        fast.borrow_mut().expect_quiet("every message exactly once");
        (got, fast)
    });
    (reader, progress)
}

/// The server's resident memory, from /proc.
pub fn rss_bytes(pid: u32) -> usize {
    proc_status_bytes(pid, "VmRSS:")
}

/// The server's peak resident memory so far, from /proc.
pub fn peak_rss_bytes(pid: u32) -> usize {
    proc_status_bytes(pid, "VmHWM:")
}

pub fn proc_status_bytes(pid: u32, key: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}
