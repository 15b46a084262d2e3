//! Peer-to-peer messaging (issue 13, protocol.md section 6) from outside:
//! `switchboard chat --p2p` processes driven through their standard input
//! against a real server's directory, and the library's peer endpoint with
//! the client library's `bind`/`query`/`leave`. Loopback only, every wait
//! bounded.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, ExitStatus};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use switchboard::error::ErrorCode;
use switchboard::peer::{PeerConfig, PeerEndpoint};
use switchboard::{ClientConfig, ClientError};

// ---------------------------------------------------------------------------
// A chat process driven through pipes
// ---------------------------------------------------------------------------

/// A running `switchboard ARGS` with piped stdin, stdout and stderr; its
/// stdout lines arrive on a channel. Killed on drop (its output printed if
/// the test is failing).
struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    #[track_caller]
    fn spawn(label: &str, args: &[&str]) -> Self {
        let mut child = spawn_piped(label, BIN, args, Some(&std::env::temp_dir()));
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let all = Arc::clone(&stdout);
            readers.push(thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut v) = all.lock() {
                        v.push(line.clone());
                    }
                    let _ = tx.send(line);
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

    /// `switchboard chat --p2p --user USER ADDR EXTRA...`.
    #[track_caller]
    fn chat(user: &str, server: SocketAddr, extra: &[&str]) -> Self {
        let addr = server.to_string();
        let mut args = vec!["chat", "--p2p", "--user", user];
        args.extend_from_slice(extra);
        args.push(&addr);
        Self::spawn(user, &args)
    }

    fn stdout_text(&self) -> String {
        self.stdout.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

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

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits (bounded) for the next stdout line that satisfies `want`; the
    /// lines before it are skipped.
    #[track_caller]
    fn expect(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let limit = READ_TIMEOUT * 2;
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no stdout line {what} within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    self.label,
                    self.stdout_text(),
                    self.stderr_text()
                ),
            }
        }
    }

    #[track_caller]
    fn expect_line(&self, line: &str) -> String {
        self.expect(&format!("equal to {line:?}"), |l| l == line)
    }

    #[track_caller]
    fn expect_prefix(&self, prefix: &str) -> String {
        self.expect(&format!("starting with {prefix:?}"), |l| {
            l.starts_with(prefix)
        })
    }

    /// Waits for the endpoint to be bound; returns where it listens.
    #[track_caller]
    fn expect_bound(&self) -> SocketAddr {
        let line = self.expect_prefix("* direct messages: listening on ");
        line.trim_start_matches("* direct messages: listening on ")
            .split(',')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{}: no address in {line:?}", self.label))
    }

    #[track_caller]
    fn expect_clean_exit(&mut self) {
        let status: ExitStatus = match wait_child(&mut self.child, EXIT_TIMEOUT) {
            Ok(Some(s)) => s,
            Ok(None) => panic!(
                "{}: did not exit within {EXIT_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                self.label,
                self.stdout_text(),
                self.stderr_text()
            ),
            Err(e) => panic!("{}: try_wait failed: {e}", self.label),
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        assert!(
            status.success() && !self.stderr_text().contains("panicked"),
            "{}: exit {status}\nstdout:\n{}\nstderr:\n{}",
            self.label,
            self.stdout_text(),
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

/// The server's directory, asked with a raw `QUERY 0`, sorted.
fn directory(server: &ServerProc) -> Vec<String> {
    let mut c = server.login("observer");
    let mut lines = c.result("QUERY 0");
    lines.sort();
    lines
}

// ---------------------------------------------------------------------------
// chat --p2p
// ---------------------------------------------------------------------------

/// The test: two `chat --p2p` log in and bind, `/peers` shows both,
/// then the server is stopped and `/direct` messages still go both ways:
/// they never went through it.
#[test]
fn two_chat_peers_talk_directly_even_with_the_server_stopped() {
    let mut server = ServerProc::start(&[]);
    let mut alice = Proc::chat("alice", server.addr, &[]);
    let mut bob = Proc::chat("bob", server.addr, &[]);
    let alice_at = alice.expect_bound();
    let bob_at = bob.expect_bound();
    assert_eq!(alice_at.ip(), server.addr.ip(), "the default address");
    assert_ne!(alice_at.port(), 0);

    // The directory, as the server holds it and as /peers shows it.
    assert_eq!(
        directory(&server),
        vec![
            format!("alice,{},{}", alice_at.ip(), alice_at.port()),
            format!("bob,{},{}", bob_at.ip(), bob_at.port()),
        ]
    );
    for p in [&mut alice, &mut bob] {
        p.send_line("/peers");
        let peers = p.expect_prefix("* peers: ");
        assert!(
            peers.contains(&format!("alice at {alice_at}"))
                && peers.contains(&format!("bob at {bob_at}")),
            "{peers}"
        );
    }

    // Directly, with the server up.
    alice.send_line("/direct bob hi bob, straight to you");
    alice.expect_line("[direct] -> bob: hi bob, straight to you");
    bob.expect_line("[direct] alice: hi bob, straight to you");

    // The server goes away (gracefully: the chats are told).
    server.signal("TERM");
    assert!(server.wait_exit(EXIT_TIMEOUT).success());
    for p in [&alice, &bob] {
        p.expect_prefix("* the server closed the connection; direct messages go on");
    }

    // Both ways, without any server.
    alice.send_line("/direct bob still there?");
    alice.expect_prefix("* the directory is unreachable");
    alice.expect_line("[direct] -> bob: still there?");
    bob.expect_line("[direct] alice: still there?");
    bob.send_line("/direct alice yes, no server needed");
    bob.expect_line("[direct] -> alice: yes, no server needed");
    alice.expect_line("[direct] bob: yes, no server needed");
    // Nobody ever asked about carol, and there is no directory to ask.
    alice.send_line("/direct carol hello?");
    alice.expect_prefix("! cannot look carol up: the directory is unreachable");

    alice.send_line("/quit");
    alice.expect_clean_exit();
    bob.close_stdin();
    bob.expect_clean_exit();
}

/// `/direct` to someone the directory does not know, to a bound peer that
/// no longer answers, and what leaving on exit does.
#[test]
fn direct_errors_are_readable_and_exit_leaves_the_directory() {
    let server = ServerProc::start(&[]);
    let mut alice = Proc::chat("alice", server.addr, &[]);
    alice.expect_bound();
    alice.send_line("/direct nobody are you there?");
    alice.expect_line("! nobody is not in the directory (not bound, or gone: /peers lists who is)");
    alice.send_line("/direct bob");
    alice.expect_line("! usage: /direct USER TEXT");
    alice.send_line("/direct no@one hi");
    alice.expect_prefix("! bad-args: ");

    // carol binds an endpoint that answers the probe by hand, then stops
    // listening: her entry stays until the next re-probe.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let carol_at = listener.local_addr().expect("addr");
    let prober = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("the server's probe");
        s.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(b"\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(got, b"PING 0\n");
        s.write_all(b"PONG 0\n").expect("pong");
        // The listener is dropped here: nobody listens on carol_at any more.
    });
    let mut carol = server.login("carol");
    carol.ack(&format!("BIND 0 127.0.0.1 {}", carol_at.port()));
    prober.join().expect("prober");
    alice.send_line("/direct carol hello carol");
    let refused = alice.expect_prefix("! cannot reach carol's peer at ");
    assert!(refused.contains(&carol_at.to_string()), "{refused}");

    // bob comes and goes: on exit he leaves the directory.
    let mut bob = Proc::chat("bob", server.addr, &[]);
    let bob_at = bob.expect_bound();
    assert!(
        directory(&server).contains(&format!("bob,{},{}", bob_at.ip(), bob_at.port())),
        "{:?}",
        directory(&server)
    );
    bob.send_line("/quit");
    bob.expect_clean_exit();
    assert!(
        !directory(&server).iter().any(|l| l.starts_with("bob,")),
        "{:?}",
        directory(&server)
    );
    alice.send_line("/direct bob are you gone?");
    alice.expect_prefix("! bob is not in the directory");
    alice.close_stdin();
    alice.expect_clean_exit();
}

/// `--p2p-listen` on an address the session does not connect from: the
/// server refuses the BIND, and the chat says why and how to fix it.
#[test]
fn binding_another_address_is_refused_with_a_hint() {
    let server = ServerProc::start(&[]);
    // 127.0.0.2 is loopback too on Linux, but not the address the session
    // connects from.
    let alice = Proc::chat("alice", server.addr, &["--p2p-listen", "127.0.0.2"]);
    let line = alice.expect_prefix("! cannot BIND 127.0.0.2:");
    assert!(
        line.contains("forbidden") && line.contains("127.0.0.1") && line.contains("--p2p-listen"),
        "{line}"
    );
    // A bad --p2p-listen is refused before connecting.
    let out = run_bin(
        &[
            "chat",
            "--p2p",
            "--user",
            "x",
            "--p2p-listen",
            "nowhere",
            &server.addr.to_string(),
        ],
        Some(b""),
        EXIT_TIMEOUT,
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("--p2p-listen"), "{}", out.stderr);
    // Without --p2p the peer commands say what they need.
    let mut plain = Proc::spawn(
        "plain",
        &["chat", "--user", "plain", &server.addr.to_string()],
    );
    plain.send_line("/peers");
    plain.expect_line("! /peers needs --p2p (chat --p2p)");
    plain.send_line("/direct alice hi");
    plain.expect_line("! /direct needs --p2p (chat --p2p)");
    plain.close_stdin();
    plain.expect_clean_exit();
}

// ---------------------------------------------------------------------------
// The library: PeerEndpoint + Client::bind/query/leave
// ---------------------------------------------------------------------------

#[test]
fn a_library_endpoint_answers_the_servers_probe() {
    let server = ServerProc::start(&[]);
    let client = switchboard::Client::connect(ClientConfig::new(server.addr.to_string(), "dora"))
        .expect("login");
    let local = client.local_addr().expect("connected").ip();
    let endpoint =
        PeerEndpoint::bind(PeerConfig::new(SocketAddr::new(local, 0))).expect("endpoint");
    let at = endpoint.local_addr();
    client.bind(at.ip(), at.port()).expect("bound");
    assert!(endpoint.stats().pings >= 1, "{:?}", endpoint.stats());
    let all = client.query(None).expect("query");
    assert!(
        all.iter()
            .any(|e| e.user == "dora" && e.socket_addr() == at),
        "{all:?}"
    );
    let mine = client.query(Some("DORA")).expect("query one");
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert!(client.query(Some("nobody")).expect("query").is_empty());

    // Another user delivers to the address the directory gave.
    let ack = switchboard::peer::deliver(mine[0].socket_addr(), "eve", b"psst", READ_TIMEOUT)
        .expect("delivered");
    assert!(!ack.is_empty());
    let m = endpoint.recv(Some(READ_TIMEOUT)).expect("message");
    assert_eq!((m.sender.as_str(), &m.payload[..]), ("eve", &b"psst"[..]));

    // Another address than the session's: forbidden, and nothing probed.
    let pings = endpoint.stats().pings;
    match client.bind("127.0.0.2".parse().expect("ip"), at.port()) {
        Err(ClientError::Refused {
            code: ErrorCode::Forbidden,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(endpoint.stats().pings, pings);
    // Port 0 is refused before it is sent.
    assert!(matches!(
        client.bind(at.ip(), 0),
        Err(ClientError::Refused {
            code: ErrorCode::BadArgs,
            ..
        })
    ));

    client.leave().expect("left");
    assert!(client.query(Some("dora")).expect("query").is_empty());
    // An endpoint that stopped cannot be bound: the probe fails.
    endpoint.stop();
    match client.bind(at.ip(), at.port()) {
        Err(ClientError::Refused {
            code: ErrorCode::Unreachable,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    client.quit().expect("quit");
}

/// The endpoint answers the server's re-probes, so its entry stays; once
/// it stops, the next re-probe removes the entry.
#[test]
fn re_probes_are_answered_and_a_stopped_endpoint_is_dropped() {
    let server = ServerProc::start(&["--probe-interval", "1"]);
    let client = switchboard::Client::connect(ClientConfig::new(server.addr.to_string(), "fred"))
        .expect("login");
    let ip = client.local_addr().expect("connected").ip();
    let endpoint = PeerEndpoint::bind(PeerConfig::new(SocketAddr::new(ip, 0))).expect("endpoint");
    let at = endpoint.local_addr();
    client.bind(at.ip(), at.port()).expect("bound");
    // Re-probed (about every second) and still there.
    assert!(
        wait_until(Duration::from_secs(5), || endpoint.stats().pings >= 3),
        "{:?}",
        endpoint.stats()
    );
    assert_eq!(client.query(Some("fred")).expect("query").len(), 1);
    endpoint.stop();
    assert!(
        wait_until(Duration::from_secs(5), || client
            .query(Some("fred"))
            .is_ok_and(|e| e.is_empty())),
        "the entry outlived its endpoint"
    );
    client.quit().expect("quit");
}

/// With `--reconnect`, a chat that finds a new server (which has an empty
/// directory) binds its endpoint there again.
#[test]
fn a_reconnected_chat_binds_again() {
    let mut first = ServerProc::start(&[]);
    let addr = first.addr;
    let alice = Proc::chat("alice", addr, &["--reconnect"]);
    let at = alice.expect_bound();
    first.signal("KILL");
    let _ = first.wait_exit(EXIT_TIMEOUT);
    alice.expect_line("* connection lost");
    let listen = addr.to_string();
    let second = ServerProc::start_raw(&[
        "serve",
        "--listen",
        &listen,
        "--tls-listen",
        "off",
        "--ws-listen",
        "off",
        "--wss-listen",
        "off",
    ]);
    alice.expect_line("* reconnected");
    assert_eq!(alice.expect_bound(), at, "the same endpoint");
    assert_eq!(
        directory(&second),
        vec![format!("alice,{},{}", at.ip(), at.port())]
    );
}
