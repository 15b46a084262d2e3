//! Logging never blocks the loop (protocol.md 7a): with the server's stderr a
//! pipe nobody reads, sessions go on; `--log-file` appends.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    BIN, Client, START_TIMEOUT, ServerProc, TempDir, expect_start_failure, kill_and_reap,
    parse_listening, path_str, serve_args, wait_until,
};

/// The slowest `PING 0` round trip allowed while the log pipe is full.
const PROMPT: Duration = Duration::from_millis(200);
/// How long a `PONG` may take before the session counts as frozen.
const FROZEN: Duration = Duration::from_secs(2);
/// Connections opened and closed to fill the pipe: at `debug` each logs a
/// `connected` and a `closed` line (about 90 bytes together), so 3000 write
/// some 270 KB, four times a 64 KiB pipe.
const CHURN: usize = 3000;
/// Bound of the churn, whatever the server does.
const CHURN_TIME: Duration = Duration::from_secs(20);

/// A `switchboard serve` whose stderr is read up to the listening line and
/// then never again; killed on drop.
struct UnreadServer {
    child: Child,
    addr: SocketAddr,
    /// Held (the pipe stays open) and never read.
    stderr: Option<BufReader<ChildStderr>>,
    _cwd: TempDir,
}

impl UnreadServer {
    fn start(extra: &[&str]) -> Self {
        let cwd = TempDir::new("unread");
        let args = serve_args(extra);
        let mut child = Command::new(BIN)
            .args(&args)
            .current_dir(cwd.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN} {args:?}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        // Read on a thread, so that a server that never logs its address
        // fails the test after START_TIMEOUT instead of hanging it.
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut seen = String::new();
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Err(format!("exited before listening:\n{seen}")));
                        return;
                    }
                    Ok(_) => match parse_listening(&line) {
                        Some(Ok(addr)) => {
                            let _ = tx.send(Ok((addr, reader)));
                            return;
                        }
                        Some(Err(e)) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                        None => seen.push_str(&line),
                    },
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok((addr, reader))) => Self {
                child,
                addr,
                stderr: Some(reader),
                _cwd: cwd,
            },
            Ok(Err(why)) => {
                kill_and_reap(&mut child);
                panic!("server {args:?}: {why}");
            }
            Err(_) => {
                kill_and_reap(&mut child);
                panic!("server {args:?}: no `tcp listening on ADDR` within {START_TIMEOUT:?}");
            }
        }
    }

    /// Names of the server's threads blocked writing to a full pipe, from
    /// /proc (`wchan` is `pipe_write` or `anon_pipe_write`); `None` where
    /// /proc does not tell.
    fn threads_in_pipe_write(&self) -> Option<Vec<String>> {
        let tasks = Path::new("/proc")
            .join(self.child.id().to_string())
            .join("task");
        let mut blocked = Vec::new();
        let mut readable = false;
        for task in fs::read_dir(tasks).ok()?.flatten() {
            let Ok(wchan) = fs::read_to_string(task.path().join("wchan")) else {
                continue;
            };
            readable |= !wchan.is_empty() && wchan != "0";
            if wchan.ends_with("pipe_write") {
                let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                blocked.push(comm.trim().to_owned());
            }
        }
        (readable || !blocked.is_empty()).then_some(blocked)
    }

    /// Kills the server and returns what was left in the pipe, unread.
    fn kill_and_read_pipe(&mut self) -> Vec<u8> {
        kill_and_reap(&mut self.child);
        let mut rest = Vec::new();
        if let Some(mut reader) = self.stderr.take() {
            let _ = reader.read_to_end(&mut rest);
        }
        rest
    }
}

impl Drop for UnreadServer {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// One `PING 0` round trip, or why it failed.
fn timed_ping(c: &mut Client) -> Result<Duration, String> {
    let t = Instant::now();
    c.try_send(b"PING 0\n")
        .map_err(|e| format!("PING not sent: {e}"))?;
    match c.read_raw(FROZEN) {
        Ok(f) if f.is("PONG", &[]) => Ok(t.elapsed()),
        Ok(f) => Err(format!("expected PONG, got {f:?}")),
        Err(e) => Err(format!("no PONG within {FROZEN:?}: {e:?}")),
    }
}

/// Opens and closes up to `CHURN` connections (bounded by `CHURN_TIME`);
/// returns how many were opened.
fn churn(addr: SocketAddr) -> usize {
    let deadline = Instant::now() + CHURN_TIME;
    let mut opened = 0;
    for _ in 0..CHURN {
        if Instant::now() > deadline {
            break;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            opened += 1;
        }
    }
    opened
}

#[test]
fn a_log_pipe_nobody_reads_does_not_stall_sessions() {
    let mut srv = UnreadServer::start(&["--log-level", "debug"]);
    let mut alice = Client::connect(srv.addr, "alice");
    alice.ack("USER 0 alice");

    // Pings all through the churn: the pipe fills after a few hundred
    // connections, and every later connection still logs two lines.
    let addr = srv.addr;
    let churner = thread::spawn(move || churn(addr));
    let mut during = Vec::new();
    let mut failure = None;
    while !churner.is_finished() {
        match timed_ping(&mut alice) {
            Ok(rtt) => during.push(rtt),
            Err(e) => {
                failure = Some(format!("ping {} during the churn: {e}", during.len() + 1));
                break;
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
    let opened = churner.join().expect("churn thread");
    if let Some(why) = failure {
        panic!("{why} (the server's log pipe is full and nobody reads it)");
    }
    assert!(
        opened >= CHURN * 9 / 10,
        "only {opened} of {CHURN} connections were accepted"
    );

    // The pipe is full now: a thread of the server waits in pipe_write (where
    // /proc tells), and pings go on, still within PROMPT.
    let blocked = srv.threads_in_pipe_write();
    if blocked.is_some() {
        let full = wait_until(Duration::from_secs(10), || {
            srv.threads_in_pipe_write()
                .is_some_and(|names| !names.is_empty())
        });
        assert!(full, "no server thread blocks on the unread pipe");
    } else {
        eprintln!("note: /proc/PID/task/*/wchan is not readable; pipe state not checked");
    }
    let mut after = Vec::new();
    for i in 0..50 {
        match timed_ping(&mut alice) {
            Ok(rtt) => after.push(rtt),
            Err(e) => panic!("ping {} after the churn: {e}", i + 1),
        }
        thread::sleep(Duration::from_millis(5));
    }
    let still = srv.threads_in_pipe_write();
    if let Some(names) = &still {
        assert!(
            !names.is_empty(),
            "the pipe should still be full after the pings"
        );
    }

    let slowest = |v: &[Duration]| v.iter().copied().max().unwrap_or_default();
    eprintln!(
        "{opened} connections; {} pings during the churn (slowest {:?}), {} after (slowest {:?}); blocked in pipe_write: {still:?}",
        during.len(),
        slowest(&during),
        after.len(),
        slowest(&after)
    );
    assert!(!during.is_empty(), "no ping completed during the churn");
    for (when, rtts) in [("during", &during), ("after", &after)] {
        let slow: Vec<_> = rtts.iter().filter(|&&d| d >= PROMPT).collect();
        assert!(
            slow.is_empty(),
            "{} of {} round trips {when} the churn took {PROMPT:?} or more: {slow:?}",
            slow.len(),
            rtts.len()
        );
    }

    let left = srv.kill_and_read_pipe();
    eprintln!("{} bytes were left unread in the pipe", left.len());
}

#[test]
fn log_file_is_appended_to() {
    let dir = TempDir::new("logfile");
    let file = dir.join("switchboard.log");
    fs::write(&file, "an older line\n").expect("write log file");
    let srv = ServerProc::start(&["--log-file", path_str(&file)]);
    let mut alice = srv.login("alice");
    alice.ping();
    let found = wait_until(Duration::from_secs(5), || {
        fs::read_to_string(&file).is_ok_and(|t| t.contains("tcp listening on"))
    });
    let text = fs::read_to_string(&file).unwrap_or_default();
    assert!(found, "the log file should get the log lines:\n{text}");
    assert!(
        text.starts_with("an older line\n"),
        "the log file should be appended to:\n{text}"
    );
    assert!(
        srv.log_text().contains("tcp listening on"),
        "stderr should still get the log lines"
    );
}

#[test]
fn log_file_that_cannot_be_opened_stops_the_start() {
    let dir = TempDir::new("badlogfile");
    let file = dir.join("no-such-dir").join("switchboard.log");
    let file = path_str(&file);
    let out = expect_start_failure(&serve_args(&["--log-file", file]));
    assert!(
        out.stderr_lines()
            .iter()
            .any(|l| l.contains(file) && l.contains("--log-file")),
        "the error should name --log-file and {file}; stderr:\n{}",
        out.stderr
    );
}
