//! The server process and its limits (cli.md `serve`, protocol.md sections 3,
//! 6 keep-alive and 7): start errors, `--config`, login timeout, keep-alive,
//! graceful shutdown on SIGTERM/SIGINT, `--max-connections`, slow consumers,
//! abrupt disconnects and garbage input.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------
// Start errors
// ---------------------------------------------------------------------------

#[test]
fn start_fails_when_the_port_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port to take");
    let addr = taken.local_addr().expect("local_addr").to_string();
    let out = expect_start_failure(&[
        "serve",
        "--listen",
        &addr,
        "--tls-listen",
        "off",
        "--ws-listen",
        "off",
        "--wss-listen",
        "off",
    ]);
    assert!(
        out.stderr_lines().iter().any(|l| l.contains(&addr)),
        "the error should name the address {addr}; stderr:\n{}",
        out.stderr
    );
    drop(taken);
}

#[test]
fn start_fails_with_password_auth_and_no_passwd_file() {
    let out = expect_start_failure(&serve_args(&["--auth", "password"]));
    assert!(
        !out.stderr_lines().is_empty(),
        "the error should say what is wrong on stderr"
    );
}

#[test]
fn start_fails_when_the_passwd_file_is_missing() {
    let dir = TempDir::new("nopasswd");
    let missing = dir.join("no-such-dir").join("passwd");
    let missing = path_str(&missing);
    let out = expect_start_failure(&serve_args(&["--auth", "password", "--passwd", missing]));
    assert!(
        out.stderr_lines().iter().any(|l| l.contains(missing)),
        "the error should name the file {missing}; stderr:\n{}",
        out.stderr
    );
}

/// The WebSocket listeners start (the banner names them) and serve the
/// chat page over HTTP and HTTPS.
#[test]
fn ws_and_wss_listeners_start_and_serve_the_page() {
    let srv = ServerProc::start_raw(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "off",
        "--ws-listen",
        "127.0.0.1:0",
        "--wss-listen",
        "127.0.0.1:0",
    ]);
    let line = srv
        .wait_log("started, pid", READ_TIMEOUT)
        .expect("start banner");
    assert!(
        line.contains(" ws 127.0.0.1:") && line.contains(" wss 127.0.0.1:"),
        "the banner should name both WebSocket listeners: {line}"
    );
    let ws: std::net::SocketAddr = srv
        .wait_log("ws listening on", READ_TIMEOUT)
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("ws listening line");
    let mut s = std::net::TcpStream::connect(ws).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut page = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut page).expect("read the page to its end");
    let page = String::from_utf8_lossy(&page);
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("<html"), "{page}");
}

#[test]
fn config_file_sets_flags_and_flags_win() {
    let dir = TempDir::new("config");
    let file = dir.join("switchboard.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\n\
         tls_listen = \"off\"\n\
         ws_listen = \"off\"\n\
         wss_listen = \"off\"\n\
         max_payload = 65536\n\
         open_groups = true\n",
    )
    .expect("write config");
    let cfg = path_str(&file);

    let srv = ServerProc::start_raw(&["serve", "--config", cfg]);
    let mut c = srv.login("alice");
    let hello = c.result("HELLO 0");
    assert!(
        hello.iter().any(|l| l == "max_payload=65536"),
        "max_payload from the config file, got {hello:?}"
    );
    c.ack("SUBSCRIBE 0 1234");
    drop(srv);

    let srv = ServerProc::start_raw(&["serve", "--config", cfg, "--max-payload", "131072"]);
    let mut c = srv.login("alice");
    let hello = c.result("HELLO 0");
    assert!(
        hello.iter().any(|l| l == "max_payload=131072"),
        "the flag should win over the file, got {hello:?}"
    );
}

// ---------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------

#[test]
fn login_timeout_closes_sessions_that_do_not_log_in() {
    let srv = ServerProc::start(&["--login-timeout", "1"]);
    let t0 = Instant::now();
    let mut idle = Client::connect(srv.addr, "idle");
    let mut busy = Client::connect(srv.addr, "busy but not logged in");
    busy.result("HELLO 0");
    busy.ping();
    let mut alice = srv.login("alice");
    idle.expect_err("timeout");
    let elapsed = t0.elapsed();
    idle.expect_closed();
    assert!(
        elapsed >= Duration::from_millis(700) && elapsed <= Duration::from_secs(4),
        "the login timeout of 1 s fired after {elapsed:?}"
    );
    busy.expect_err("timeout");
    busy.expect_closed();
    // A logged-in session is not affected.
    alice.ping();
}

#[test]
fn keep_alive_pings_silent_sessions_and_closes_unanswered() {
    let srv = ServerProc::start(&["--ping-interval", "1", "--ping-timeout", "1"]);
    let t0 = Instant::now();
    let mut alice = srv.login("alice");
    let mut anon = Client::connect(srv.addr, "not logged in");

    let f = alice.push();
    let elapsed = t0.elapsed();
    assert!(
        f.is("PING", &[]) && f.payload.is_empty(),
        "expected PING 0, got {f:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(500),
        "pinged after only {elapsed:?} of silence (interval 1 s)"
    );
    alice.send(b"PONG 0\n");

    // A session that has not logged in is pinged too.
    let f = anon.push();
    assert!(f.is("PING", &[]), "expected PING 0, got {f:?}");
    anon.send(b"PONG 0\n");
    anon.ack("USER 0 bob");

    // Answering keeps the session open.
    let f = alice.push();
    assert!(f.is("PING", &[]), "expected a second PING 0, got {f:?}");
    alice.send(b"PONG 0\n");
    alice.ping();
    assert_eq!(alice.result("WHO 0"), ["alice", "bob"]);

    // Not answering closes it.
    let f = alice.push();
    assert!(f.is("PING", &[]), "expected PING 0, got {f:?}");
    alice.expect_err("timeout");
    alice.expect_closed();
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

#[track_caller]
fn graceful_shutdown(signal: &str) {
    let mut srv = ServerProc::start(&["--group", "1=general"]);
    let mut alice = srv.login("alice");
    alice.ack("SUBSCRIBE 0 1");
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1");
    let mut anon = srv.connect();
    anon.ping();
    srv.signal(signal);
    for c in [&mut alice, &mut bob, &mut anon] {
        c.expect_err("shutting-down");
        c.expect_closed();
    }
    let status = srv.wait_exit(EXIT_TIMEOUT);
    assert_eq!(
        status.code(),
        Some(0),
        "after SIG{signal} the server should exit 0, got {status}"
    );
}

#[test]
fn sigterm_shuts_down_gracefully() {
    graceful_shutdown("TERM");
}

#[test]
fn sigint_shuts_down_gracefully() {
    graceful_shutdown("INT");
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

#[test]
fn max_connections_refuses_with_server_full() {
    let srv = ServerProc::start(&["--max-connections", "2"]);
    let mut alice = srv.login("alice");
    let mut anon = srv.connect();
    anon.ping();
    let mut third = Client::connect(srv.addr, "third connection");
    // Without sending anything first.
    third.expect_err("server-full");
    third.expect_closed();
    alice.ping();
    anon.ping();
    // Once a connection is gone, there is room again.
    drop(anon);
    let mut tries = 0;
    let admitted = wait_until(Duration::from_secs(3), || {
        tries += 1;
        let mut c = Client::connect(srv.addr, "after one left");
        if c.try_send(b"PING 0\n").is_err() {
            return false;
        }
        match c.read_raw(READ_TIMEOUT) {
            Ok(f) if f.is("PONG", &[]) => true,
            Ok(f) if f.is("ERR", &["server-full"]) => false,
            Ok(f) => panic!("expected PONG or ERR server-full, got {f:?}"),
            Err(ReadError::Closed { .. }) => false,
            Err(e) => panic!("expected PONG or ERR server-full, got {e:?}"),
        }
    });
    assert!(
        admitted,
        "a new connection is still refused 3 s after one closed ({tries} tries)"
    );
    alice.ping();
}

#[test]
fn slow_consumer_is_closed_and_holds_back_nobody() {
    const COUNT: usize = 300;
    // Below the 64 KiB limit even with its header, so one message in flight
    // never makes a reading subscriber a slow consumer.
    const SIZE: usize = 60_000;
    let srv = ServerProc::start(&["--max-pending", "65536", "--group", "1=general"]);
    let mut slow = srv.login("slow");
    slow.ack("SUBSCRIBE 0 1");
    let mut fast = srv.login("fast");
    fast.ack("SUBSCRIBE 0 1");
    let reader = read_paced(fast, COUNT, SIZE);

    // The publisher keeps pace with the reading subscriber (at most one
    // message ahead of it), so only the subscriber that never reads falls
    // behind, however the threads are scheduled.
    let mut publisher = srv.login("publisher");
    // Keep the reading subscriber connected to the end (WHO below).
    let _fast = publish_to_paced_reader(
        &mut publisher,
        reader,
        (COUNT, SIZE),
        Duration::from_secs(20),
        "reading subscriber",
    );

    // The slow one was closed; what it got is an in-order prefix, maybe
    // followed by ERR slow-consumer (best effort).
    let frames = slow.drain_until_closed(Duration::from_secs(10));
    assert_slow_consumer_prefix(&frames, SIZE, COUNT);
    // The server still serves.
    publisher.label = String::from("publisher");
    publisher.ping();
    assert_eq!(publisher.result("WHO 0 1"), ["fast"]);
}

// ---------------------------------------------------------------------------
// Abrupt disconnects and garbage
// ---------------------------------------------------------------------------

#[test]
fn abrupt_disconnects_mid_frame_do_not_affect_others() {
    let mut srv = ServerProc::start(&["--group", "1=general"]);
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1");

    let mut c = srv.login("p1");
    c.send(b"PUBLISH 100 1\nhel");
    drop(c);
    let mut c = srv.login("p2");
    c.send(b"PUBL");
    drop(c);
    let mut c = srv.connect();
    c.send(b"USER 0 al");
    drop(c);
    let mut c = srv.login("p3");
    c.send(b"PUBLISH 10 1\n");
    c.shutdown_write();
    drop(c);
    let mut c = srv.login("p4");
    c.send(b"SEND 5 bob\nhe");
    c.shutdown_write();
    drop(c);
    // A subscriber that leaves while messages are on their way to it.
    let mut gone = srv.login("gone");
    gone.ack("SUBSCRIBE 0 1");
    let mut alice = srv.login("alice");
    let big = vec![b'x'; 100_000];
    alice.send_frame("PUBLISH", &["1"], &big);
    drop(gone);
    alice.expect_ack();
    bob.expect_published("alice", &["1"], &big);
    for i in 0..20 {
        alice.send_frame("PUBLISH", &["1"], format!("after {i}").as_bytes());
        alice.expect_ack();
    }
    for i in 0..20 {
        bob.expect_published("alice", &["1"], format!("after {i}").as_bytes());
    }
    bob.expect_quiet("incomplete frames are never delivered");
    srv.assert_running();
    let mut carol = srv.login("carol");
    carol.ping();
}

#[test]
fn a_stalled_frame_does_not_block_others() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1");
    // Half a header, and half a payload, left hanging.
    let mut half_header = srv.login("half-header");
    half_header.send(b"PUBLISH 5");
    let mut stalled = srv.login("stalled");
    stalled.send(b"PUBLISH 1000 1\nabc");
    let mut alice = srv.login("alice");
    for i in 0..10 {
        alice.send_frame("PUBLISH", &["1"], format!("meanwhile {i}").as_bytes());
        alice.expect_ack();
        bob.expect_published("alice", &["1"], format!("meanwhile {i}").as_bytes());
    }
    bob.expect_quiet("the stalled frames are incomplete");
    // Completing them later works.
    stalled.send(&[b'z'; 997]);
    stalled.expect_ack();
    let mut want = b"abc".to_vec();
    want.extend_from_slice(&[b'z'; 997]);
    bob.expect_published("stalled", &["1"], &want);
    half_header.send(b" 1\nhello");
    half_header.expect_ack();
    bob.expect_published("half-header", &["1"], b"hello");
    bob.expect_quiet("two completed frames");
}

#[test]
fn garbage_input_never_takes_the_server_down() {
    let mut srv = ServerProc::start(&["--open-groups", "--max-payload", "65536"]);
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1");
    let pieces: [&[u8]; 16] = [
        b"PUBLISH ",
        b"USER 0 ",
        b"SEND ",
        b"SUBSCRIBE 0 ",
        b"FOO ",
        b" ",
        b"\n",
        b"\r\n",
        b"1",
        b"65536",
        b"4294967295",
        b"9999999999",
        b"bob",
        b"\x00\xff",
        b"PING 0\n",
        b"-",
    ];
    let mut rng = Rng::new(0x5eed_cafe);
    for round in 0..40 {
        let mut c = if round % 2 == 0 {
            srv.connect()
        } else {
            srv.login(&format!("fuzz{round}"))
        };
        let mut input = Vec::new();
        let n = 1 + rng.below(300);
        for _ in 0..n {
            if rng.below(4) == 0 {
                input.push(rng.next_u64() as u8);
            } else {
                input.extend_from_slice(pieces[rng.below(pieces.len())]);
            }
        }
        // The server may close the connection at any point.
        let _ = c.try_send(&input);
        drop(c);
    }
    srv.assert_running();
    // Existing and new sessions still work (bob may have been sent
    // something by the garbage; that is fine).
    let mut frames = bob.sync();
    frames.retain(|f| !f.is_push());
    assert!(frames.is_empty(), "bob: unexpected replies {frames:?}");
    let mut carol = srv.login("carol");
    carol.ack("SUBSCRIBE 0 1");
    carol.send_frame("PUBLISH", &["1"], b"still alive");
    carol.expect_ack();
    carol.expect_published("carol", &["1"], b"still alive");
    srv.assert_running();
}
