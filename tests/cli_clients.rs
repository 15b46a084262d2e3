//! The command-line clients (cli.md, "Clients"; issue 4): `switchboard pub`,
//! `sub` and `chat` run as real processes against a real server, over
//! loopback, every wait bounded.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ExitStatus};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use common::*;

// ---------------------------------------------------------------------------
// A client process driven through pipes
// ---------------------------------------------------------------------------

/// A running `switchboard ARGS` with piped stdin, stdout and stderr; its
/// stdout lines arrive on a channel, its stderr is kept for failure messages.
/// Killed on drop.
struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every stdout line so far (also those taken from `lines`).
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    /// `switchboard ARGS`.
    #[track_caller]
    fn spawn(label: &str, args: &[&str]) -> Self {
        Self::start(label, BIN, args, None)
    }

    /// `program ARGS`.
    #[track_caller]
    fn spawn_program(label: &str, program: &str, args: &[&str]) -> Self {
        Self::start(label, program, args, None)
    }

    /// `program ARGS`; with `max_lines`, stdout is read for that many lines
    /// and then closed (a reader that goes away, like `head -n N`).
    #[track_caller]
    fn start(label: &str, program: &str, args: &[&str], max_lines: Option<usize>) -> Self {
        let mut child = spawn_piped(label, program, args, Some(&std::env::temp_dir()));
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let all = Arc::clone(&stdout);
            readers.push(thread::spawn(move || {
                let mut left = max_lines.unwrap_or(usize::MAX);
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut v) = all.lock() {
                        v.push(line.clone());
                    }
                    let _ = tx.send(line);
                    left -= 1;
                    if left == 0 {
                        break; // drops (closes) the pipe
                    }
                }
            }));
        }
        if let Some(err) = child.stderr.take() {
            let all = Arc::clone(&stderr);
            readers.push(thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut v) = all.lock() {
                        v.push(line);
                    }
                }
            }));
        }
        let stdin = child.stdin.take();
        Self {
            label: label.to_string(),
            child,
            stdin,
            lines,
            stdout,
            stderr,
            readers,
        }
    }

    fn stdout_text(&self) -> String {
        self.stdout.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    /// Writes `line` and a newline to the process's standard input.
    #[track_caller]
    fn send_line(&mut self, line: &str) {
        let Some(stdin) = self.stdin.as_mut() else {
            panic!("{}: stdin already closed", self.label)
        };
        if let Err(e) = stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
        {
            panic!(
                "{}: cannot write {line:?}: {e}\nstdout:\n{}\nstderr:\n{}",
                self.label,
                self.stdout_text(),
                self.stderr_text()
            );
        }
    }

    /// Closes standard input (EOF for the process).
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits (bounded) for the next stdout line that satisfies `want`; the
    /// lines before it are skipped.
    #[track_caller]
    fn expect(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no stdout line {what} within {READ_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                    self.label,
                    self.stdout_text(),
                    self.stderr_text()
                ),
            }
        }
    }

    /// Waits for a stdout line equal to `line`.
    #[track_caller]
    fn expect_line(&self, line: &str) -> String {
        self.expect(&format!("equal to {line:?}"), |l| l == line)
    }

    /// Waits for a stdout line that starts with `prefix`.
    #[track_caller]
    fn expect_prefix(&self, prefix: &str) -> String {
        self.expect(&format!("starting with {prefix:?}"), |l| {
            l.starts_with(prefix)
        })
    }

    /// Waits (bounded) for the process to exit.
    #[track_caller]
    fn wait_exit(&mut self) -> ExitStatus {
        match wait_child(&mut self.child, EXIT_TIMEOUT) {
            Ok(Some(s)) => {
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                s
            }
            Ok(None) => panic!(
                "{}: did not exit within {EXIT_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                self.label,
                self.stdout_text(),
                self.stderr_text()
            ),
            Err(e) => panic!("{}: try_wait failed: {e}", self.label),
        }
    }

    /// Waits for the process to exit and asserts status 0 with no panic.
    #[track_caller]
    fn expect_clean_exit(&mut self) {
        let status = self.wait_exit();
        assert!(
            status.success(),
            "{}: expected exit status 0, got {status}\nstdout:\n{}\nstderr:\n{}",
            self.label,
            self.stdout_text(),
            self.stderr_text()
        );
        assert!(
            !self.stderr_text().contains("panicked"),
            "{}: panicked\nstderr:\n{}",
            self.label,
            self.stderr_text()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
        if thread::panicking() {
            eprintln!(
                "---- {} stdout ----\n{}\n---- {} stderr ----\n{}\n---- end ----",
                self.label,
                self.stdout_text(),
                self.label,
                self.stderr_text()
            );
        }
    }
}

/// Waits (bounded) until `user` is subscribed to `group`, asked with `WHO`.
#[track_caller]
fn wait_subscribed(server: &ServerProc, user: &str, group: u32) {
    let mut probe = server.login("probe");
    let ok = wait_until(READ_TIMEOUT, || {
        probe
            .result(&format!("WHO 0 {group}"))
            .iter()
            .any(|u| u == user)
    });
    assert!(ok, "{user} did not subscribe to group {group} in time");
}

/// `switchboard pub ARGS` (with optional stdin).
#[track_caller]
fn run_pub(args: &[&str], stdin: Option<&[u8]>) -> RunOutput {
    run_bin(&[&["pub"], args].concat(), stdin, EXIT_TIMEOUT)
}

/// `switchboard pub ARGS` (with optional stdin), asserting exit 0.
#[track_caller]
fn run_pub_ok(args: &[&str], stdin: Option<&[u8]>) {
    run_bin_ok(&[&["pub"], args].concat(), stdin, "");
}

/// Asserts a failed run: non-zero, no panic, exactly one stderr line that
/// names the problem with one of `words`.
#[track_caller]
fn assert_one_line_failure(out: &RunOutput, what: &str, words: &[&str]) -> String {
    assert!(
        !out.status.success(),
        "{what}: expected a non-zero exit\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stderr.contains("panicked"),
        "{what}: panicked\nstderr:\n{}",
        out.stderr
    );
    let lines = out.stderr_lines();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one line on stderr, got:\n{}",
        out.stderr
    );
    let line = lines[0].to_string();
    let lower = line.to_ascii_lowercase();
    assert!(
        words.iter().any(|w| lower.contains(w)),
        "{what}: the message should say what is wrong ({words:?}), got: {line}"
    );
    line
}

fn addr_arg(addr: SocketAddr) -> String {
    addr.to_string()
}

/// A server with `--auth password` and group 1, whose passwd file (in the
/// returned directory) has `alice` with `password`.
#[track_caller]
fn password_server(tag: &str, password: &str) -> (TempDir, ServerProc) {
    let dir = TempDir::new(tag);
    let passwd_file = dir.join("passwd");
    passwd(&passwd_file, "alice", password);
    let server = ServerProc::start(&[
        "--auth",
        "password",
        "--passwd",
        path_str(&passwd_file),
        "--group",
        "1=x",
    ]);
    (dir, server)
}

// ---------------------------------------------------------------------------
// pub and sub
// ---------------------------------------------------------------------------

#[test]
fn sub_prints_what_pub_publishes_and_stops_after_count() {
    let server = ServerProc::start(&["--group", "1=news", "--group", "2=sport"]);
    let addr = addr_arg(server.addr);
    let mut sub = Proc::spawn(
        "sub",
        &[
            "sub", "--user", "reader", "--group", "1", "--count", "3", &addr,
        ],
    );
    wait_subscribed(&server, "reader", 1);

    // One message from the command line, then two lines from stdin (a CR LF
    // ending and an empty line included: the empty line is skipped).
    run_pub_ok(&["--user", "writer", "--group", "1", &addr, "one"], None);
    run_pub_ok(
        &[
            "--user", "writer", "--group", "2", "--group", "1", "--addr", &addr,
        ],
        Some(b"two\r\n\nthree\n"),
    );

    sub.expect_clean_exit();
    let out = sub.stdout_text();
    assert_eq!(out, "one\ntwo\nthree", "sub printed:\n{out}");
}

/// cli.md: `pub` takes `[ADDR] [MESSAGE]` by position, never by content:
/// one argument is the MESSAGE (even one that looks like an address), two
/// are ADDR then MESSAGE, and `-m MESSAGE` also works.
#[test]
fn pub_takes_addr_and_message_by_position_and_verbose_sub() {
    let server = ServerProc::start(&["--group", "7=x"]);
    let addr = addr_arg(server.addr);
    let sub = Proc::spawn(
        "sub -v",
        &["sub", "-u", "reader", "-g", "7", "-v", "--addr", &addr],
    );
    wait_subscribed(&server, "reader", 7);
    run_pub_ok(&["--user", "w", "--group", "7", &addr, "hello there"], None);
    run_pub_ok(
        &["--user", "w", "--group", "7", "--addr", &addr, "-m", "bye"],
        None,
    );
    // A lone argument is the message, whatever it looks like.
    run_pub_ok(
        &[
            "--user",
            "w",
            "--group",
            "7",
            "--addr",
            &addr,
            "127.0.0.1:9",
        ],
        None,
    );
    sub.expect_line("[7] w: hello there");
    sub.expect_line("[7] w: bye");
    sub.expect_line("[7] w: 127.0.0.1:9");

    // -m and a positional MESSAGE: refused, pointing at --addr.
    let out = run_pub(&["--user", "w", "--group", "7", "-m", "x", &addr], None);
    let line = assert_one_line_failure(&out, "-m and a positional", &["twice"]);
    assert!(line.contains(&format!("--addr {addr}")), "{line}");
    // The message first: the first of two is the server, and the error says so.
    let out = run_pub(&["--user", "w", "--group", "7", "hello there", &addr], None);
    let line = assert_one_line_failure(&out, "message then address", &["connect"]);
    assert!(line.contains("[ADDR] [MESSAGE]"), "{line}");

    // The rule is in --help.
    let help = run_bin_ok(&["pub", "--help"], None, "");
    assert!(
        help.stdout.contains("never by what they look like")
            && help.stdout.contains("two are ADDR then MESSAGE")
            && help.stdout.contains("-m, --message"),
        "{}",
        help.stdout
    );
}

#[test]
fn sub_into_a_reader_that_stops_after_one_line_exits_quietly() {
    let server = ServerProc::start(&["--group", "1=news"]);
    let addr = addr_arg(server.addr);
    // The reader closes the pipe after one line, like `head -n 1`.
    let mut sub = Proc::start(
        "sub",
        BIN,
        &["sub", "--user", "reader", "--group", "1", &addr],
        Some(1),
    );
    wait_subscribed(&server, "reader", 1);
    run_pub_ok(&["--user", "w", "--group", "1", &addr, "first"], None);
    sub.expect_line("first");
    for i in 0..3 {
        run_pub_ok(
            &["--user", "w", "--group", "1", &addr, &format!("more {i}")],
            None,
        );
    }
    sub.expect_clean_exit();
    assert_eq!(
        sub.stderr_text(),
        "",
        "a closed pipe is a normal end: nothing to say"
    );
}

#[test]
fn sub_piped_into_head() {
    if !have_program("bash") || !have_program("head") {
        eprintln!("skipped: needs bash and head");
        return;
    }
    let server = ServerProc::start(&["--group", "1=news"]);
    let addr = addr_arg(server.addr);
    // pipefail: the pipeline's status is sub's if sub fails.
    let script = format!("set -o pipefail; '{BIN}' sub --user reader --group 1 {addr} | head -n 1");
    let mut pipeline = Proc::spawn_program("bash|head", "bash", &["-c", &script]);
    wait_subscribed(&server, "reader", 1);
    for i in 0..4 {
        run_pub_ok(
            &["--user", "w", "--group", "1", &addr, &format!("line {i}")],
            None,
        );
    }
    pipeline.expect_clean_exit();
    assert_eq!(pipeline.stdout_text(), "line 0");
    assert_eq!(pipeline.stderr_text(), "", "nothing on stderr");
}

// ---------------------------------------------------------------------------
// chat
// ---------------------------------------------------------------------------

/// The "done when": two chat users talk through a TLS server, in a
/// group and one-to-one, each driven through pipes.
#[test]
fn two_chats_talk_through_a_tls_server() {
    let certs = CertDir::new(&[]);
    let mut args = certs.server_args();
    args.extend(["--group".to_string(), "1=general".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProc::start_tls(&args);
    let tls_addr = addr_arg(server.tls_addr());
    let ca = certs.arg("ca.pem");
    let chat = |user: &str| {
        Proc::spawn(
            user,
            &["chat", "--user", user, "--tls", "--ca", &ca, &tls_addr],
        )
    };
    let mut alice = chat("alice");
    let mut bob = chat("bob");

    alice.send_line("hello?");
    alice.expect_line("! join a group first (/join G)");
    alice.send_line("/join 1");
    alice.expect_prefix("* joined 1");
    bob.send_line("/join 1");
    bob.expect_prefix("* joined 1");
    alice.expect_line("* bob joined 1");

    // In the group: both see the line (the sender its own too).
    alice.send_line("hi bob, welcome");
    bob.expect_line("[1] alice: hi bob, welcome");
    alice.expect_line("[1] alice: hi bob, welcome");
    bob.send_line("thanks alice");
    alice.expect_line("[1] bob: thanks alice");

    // One-to-one.
    bob.send_line("/msg alice just between us");
    bob.expect_line("-> alice: just between us");
    alice.expect_line("* bob: just between us");
    alice.send_line("/msg nobody hello");
    alice.expect_prefix("! no-such-user: ");

    // Queries.
    bob.send_line("/who 1");
    let who = bob.expect_prefix("* in 1: ");
    assert!(who.contains("alice") && who.contains("bob"), "{who}");
    bob.send_line("/groups");
    bob.expect_line("* groups: 1 (general)");
    bob.send_line("/join 99");
    let refused = bob.expect_prefix("! unknown-group: ");
    assert!(
        refused.contains("--group ID=NAME") && refused.contains("--open-groups"),
        "{refused}"
    );

    // Leaving: the watcher sees it, and plain lines need a group again.
    bob.send_line("/part 1");
    bob.expect_line("* left 1");
    alice.expect_line("* bob left 1");
    bob.send_line("anyone?");
    bob.expect_line("! join a group first (/join G)");

    alice.send_line("/quit");
    alice.expect_clean_exit();
    bob.close_stdin();
    bob.expect_clean_exit();
}

// ---------------------------------------------------------------------------
// Connection, TLS and login errors
// ---------------------------------------------------------------------------

#[test]
fn pub_with_a_wrong_password_fails_with_one_line() {
    let (dir, server) = password_server("pw", "right horse");
    let addr = addr_arg(server.addr);
    let good = dir.join("good");
    let bad = dir.join("bad");
    std::fs::write(&good, "right horse\n").expect("write password file");
    std::fs::write(&bad, "wrong horse\n").expect("write password file");

    // `pub --user alice --group 1 --password-file FILE ADDR MESSAGE`.
    let alice_args = |file, message| {
        [
            "--user",
            "alice",
            "--group",
            "1",
            "--password-file",
            path_str(file),
            addr.as_str(),
            message,
        ]
    };
    run_pub_ok(&alice_args(&good, "ok"), None);
    let out = run_pub(&alice_args(&bad, "no"), None);
    assert_one_line_failure(&out, "wrong password", &["auth-failed", "password"]);

    let missing = dir.join("missing");
    let out = run_pub(&alice_args(&missing, "no"), None);
    assert_one_line_failure(&out, "missing password file", &["missing"]);
}

/// Without a password, against a server that requires one, and without a
/// terminal to ask on (`setsid` detaches from it): one clear line, no hang.
#[test]
fn missing_password_without_a_terminal_fails_with_one_line() {
    if !have_program("setsid") {
        eprintln!("skipped: needs setsid");
        return;
    }
    let (_dir, server) = password_server("pw-none", "secret");
    let addr = addr_arg(server.addr);
    let mut p = Proc::spawn_program(
        "pub (no tty)",
        "setsid",
        &[
            "-w", BIN, "pub", "--user", "alice", "--group", "1", &addr, "x",
        ],
    );
    p.close_stdin();
    let status = p.wait_exit();
    assert!(!status.success(), "expected a failure, got {status}");
    let err = p.stderr_text();
    assert!(!err.contains("panicked"), "panicked:\n{err}");
    assert_eq!(err.lines().count(), 1, "one line expected:\n{err}");
    assert!(
        err.contains("password"),
        "should say a password is needed: {err}"
    );
}

#[test]
fn tls_with_the_wrong_ca_fails_with_one_line() {
    let server_certs = CertDir::new(&[]);
    let other_certs = CertDir::new(&[]);
    let args = server_certs.server_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProc::start_tls(&args);
    let tls_addr = addr_arg(server.tls_addr());
    let wrong_ca = other_certs.arg("ca.pem");
    let out = run_pub(
        &[
            "--user", "a", "--group", "1", "--tls", "--ca", &wrong_ca, &tls_addr, "x",
        ],
        None,
    );
    assert_one_line_failure(&out, "wrong CA", &["tls", "certificate"]);
    let out = run_bin(
        &[
            "sub", "--user", "a", "--group", "1", "--ca", &wrong_ca, &tls_addr,
        ],
        None,
        EXIT_TIMEOUT,
    );
    assert_one_line_failure(&out, "wrong CA (sub)", &["tls", "certificate"]);
}

#[test]
fn unreachable_server_and_unknown_group_fail_with_one_line() {
    // A port nothing listens on: bind, note the port, close.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port");
    let out = run_pub(
        &["--user", "a", "--group", "1", &free.to_string(), "x"],
        None,
    );
    assert_one_line_failure(&out, "nothing listening", &["connect", "refused"]);

    let server = ServerProc::start(&["--group", "1=x"]);
    let addr = addr_arg(server.addr);
    let out = run_pub(&["--user", "a", "--group", "5", &addr, "x"], None);
    let line = assert_one_line_failure(&out, "unknown group", &["unknown-group"]);
    assert!(
        line.contains("--group ID=NAME") && line.contains("--open-groups"),
        "the error should say how a server gets groups: {line}"
    );
    let out = run_bin(
        &["sub", "--user", "a", "--group", "5", &addr],
        None,
        EXIT_TIMEOUT,
    );
    let line = assert_one_line_failure(&out, "unknown group (sub)", &["unknown-group"]);
    assert!(line.contains("--open-groups"), "{line}");
}

/// `/join`, `/part` and `/who` take a group's name as well as its number.
#[test]
fn chat_joins_a_group_by_name() {
    let server = ServerProc::start(&["--group", "1=news", "--group", "2=Sport"]);
    let addr = addr_arg(server.addr);
    let mut alice = Proc::spawn("alice", &["chat", "--user", "alice", &addr]);
    alice.send_line("/join news");
    alice.expect_line("* joined 1; now talking in 1");
    alice.send_line("hello news");
    alice.expect_line("[1] alice: hello news");
    alice.send_line("/join SPORT, 1");
    alice.expect_line("* joined 2,1; now talking in 1");
    alice.send_line("/who sport");
    alice.expect_line("* in 2: alice");
    alice.send_line("/part sport");
    alice.expect_line("* left 2");
    alice.send_line("/join weather");
    let refused = alice.expect_prefix("! unknown-group: ");
    assert!(
        refused.contains("\"weather\"") && refused.contains("/groups"),
        "{refused}"
    );
    assert!(refused.contains("--group ID=NAME"), "{refused}");
    alice.send_line("/join 0");
    alice.expect_prefix("! bad-args: ");
    alice.send_line("/quit");
    alice.expect_clean_exit();
}

// ---------------------------------------------------------------------------
// request and reply (issue 14)
// ---------------------------------------------------------------------------

/// `switchboard request ARGS` (with optional stdin).
#[track_caller]
fn run_request(args: &[&str], stdin: Option<&[u8]>) -> RunOutput {
    run_bin(&[&["request"], args].concat(), stdin, EXIT_TIMEOUT)
}

#[test]
fn reply_runs_a_command_for_each_request() {
    let srv = ServerProc::start(&["--group", "1=upper"]);
    let addr = addr_arg(srv.addr);
    // Nobody answers yet.
    let out = run_request(&["-u", "asker", "-g", "1", &addr, "hello"], None);
    assert_one_line_failure(&out, "no responder", &["no-responders"]);
    let mut replier = Proc::spawn(
        "reply",
        &[
            "reply", "-u", "upper", "-g", "1", "--count", "3", &addr, "--", "tr", "a-z", "A-Z",
        ],
    );
    wait_subscribed(&srv, "upper", 1);
    // ADDR MESSAGE by position.
    let out = run_request(&["-u", "asker", "-g", "1", &addr, "hello"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "HELLO");
    // -m with --addr, and a timeout.
    let out = run_request(
        &[
            "-u",
            "asker",
            "-g",
            "1",
            "--addr",
            &addr,
            "--timeout",
            "3000",
            "-m",
            "two words",
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "TWO WORDS");
    // Standard input as the request.
    let out = run_request(
        &["-u", "asker", "-g", "1", "--addr", &addr],
        Some(b"a\nb\n"),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "A\nB");
    // After --count answers it is done.
    assert!(replier.wait_exit().success(), "{}", replier.stderr_text());
}

#[test]
fn reply_in_a_queue_and_a_command_that_runs_too_long() {
    let srv = ServerProc::start(&["--group", "1=echo", "--group", "2=slow"]);
    let addr = addr_arg(srv.addr);
    let _cat = Proc::spawn(
        "reply-cat",
        &[
            "reply", "-u", "w1", "-g", "1", "-q", "pool", &addr, "--", "cat",
        ],
    );
    let _slow = Proc::spawn(
        "reply-slow",
        &[
            "reply",
            "-u",
            "w2",
            "-g",
            "2",
            "--command-timeout",
            "200",
            &addr,
            "--",
            "sleep",
            "5",
        ],
    );
    // The queue member answers once it has joined.
    let ok = wait_until(READ_TIMEOUT, || {
        let out = run_request(&["-u", "asker", "-g", "1", &addr, "ping"], None);
        out.status.success() && out.stdout == "ping"
    });
    assert!(ok, "no answer from the queue member in time");
    wait_subscribed(&srv, "w2", 2);
    let started = Instant::now();
    let out = run_request(
        &["-u", "asker", "-g", "2", "--timeout", "1500", &addr, "zzz"],
        None,
    );
    assert_one_line_failure(&out, "a killed command", &["timeout"]);
    assert!(started.elapsed() < EXIT_TIMEOUT);
}
