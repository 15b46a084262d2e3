//! Regressions from issue 9 ("one connection layer ... connections that
//! always go away on time"), each reproduced from outside with loopback
//! clients against the real binary, as they were found.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// A raw client socket with a small receive buffer, connected to `addr`:
/// a peer that reads slowly or never, so the server's output piles up in
/// the server and not in the kernel.
fn small_window(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    s.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    s.connect_timeout(&addr.into(), Duration::from_secs(5))
        .expect("connect");
    let stream: TcpStream = s.into();
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// `count` subscribers of group 1 (named `PREFIX0`, `PREFIX1`, ...) with
/// small receive windows, whose replies are never read.
fn subscribers_that_do_not_read(server: &ServerProc, count: usize, prefix: &str) -> Vec<TcpStream> {
    (0..count)
        .map(|i| {
            let mut s = small_window(server.addr);
            s.write_all(format!("USER 0 {prefix}{i}\nSUBSCRIBE 0 1\n").as_bytes())
                .expect("subscribe");
            s
        })
        .collect()
}

/// Writes `bytes` as far as the socket takes them within `budget`
/// (nonblocking); returns how many went.
fn write_while_taken(stream: &mut TcpStream, bytes: &[u8], budget: Duration) -> usize {
    stream.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + budget;
    let mut sent = 0;
    while sent < bytes.len() && Instant::now() < deadline {
        match stream.write(&bytes[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => break,
        }
    }
    stream.set_nonblocking(false).expect("blocking");
    sent
}

/// Logs in as `name` until the server admits it (it answers `ACK`) or
/// `timeout` passes; returns how long it took, or the last refusal.
fn login_within(server: &ServerProc, name: &str, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        let mut c = Client::connect(server.addr, name);
        c.send_line(&format!("USER 0 {name}"));
        match c.read_raw(Duration::from_secs(2)) {
            Ok(f) if f.ty == "ACK" => return Ok(start.elapsed()),
            Ok(f) => last = format!("{f:?}"),
            Err(e) => last = format!("{e:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}

/// Defect 1: subscribers that never read were flooded into slow-consumer
/// state; closing, with their sockets full, they kept their slots (and
/// fds, and kernel buffers) until the client went away, so new logins got
/// `ERR server-full`. A closing connection is gone at its deadline.
#[test]
fn slow_consumers_that_never_read_release_their_slots() {
    let server = ServerProc::start(&[
        "--max-connections",
        "11",
        "--max-pending",
        "262144",
        "--group",
        "1=flood",
    ]);
    let mut subs = subscribers_that_do_not_read(&server, 10, "sub");
    // Let every subscription land before the flood (their ACKs stay unread).
    std::thread::sleep(Duration::from_millis(300));
    let mut publisher = server.login("publisher");
    let payload = vec![b'x'; 16 << 10];
    let mut delivered_to = usize::MAX;
    for _ in 0..200 {
        publisher.send_frame("PUBLISH", &["1"], &payload);
        let ack = publisher.expect_ack();
        delivered_to = ack
            .text()
            .trim_start_matches("published to ")
            .parse()
            .unwrap_or(0);
        if delivered_to == 0 {
            break;
        }
    }
    assert_eq!(
        delivered_to, 0,
        "every subscriber should be a slow consumer by now"
    );
    // 10 closing subscribers + the publisher fill the limit until the
    // closes finish; they must be gone within the 2 s linger (plus slack).
    let took = login_within(&server, "newcomer", Duration::from_secs(5))
        .unwrap_or_else(|last| panic!("no slot freed within 5 s; last answer: {last}"));
    assert!(
        took < Duration::from_secs(4),
        "a slot took {took:?} to free"
    );
    // The subscribers' sockets were closed by the server (reset or FIN after
    // what was buffered), not kept open.
    for s in &mut subs {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = vec![0; 64 << 10];
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break "eof",
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
                Err(e) => panic!("subscriber socket still open: {e}"),
            }
        };
        assert!(end == "eof" || end == "reset");
    }
}

/// Defect 2: a client that never logs in and pipelines `PING 0` without
/// reading pinned ~2 MB and a slot forever: 7-byte PONGs took 32-byte
/// queue slots the read pause did not count, and (defect 1) the connection
/// never went. Replies count toward the output bound, the read pause counts
/// what is really held, and the login timeout closes it for good.
#[test]
fn unread_pongs_before_login_are_bounded_and_released() {
    let server = ServerProc::start(&["--max-connections", "8", "--login-timeout", "3"]);
    let before = rss_bytes(server.pid());
    // Eight flooders at once, well inside their login timeout.
    let flooders: Vec<_> = (0..8)
        .map(|_| {
            let mut s = small_window(server.addr);
            std::thread::spawn(move || {
                let pings = b"PING 0\n".repeat(1 << 20);
                let sent = write_while_taken(&mut s, &pings, Duration::from_millis(1500));
                (s, sent)
            })
        })
        .collect();
    let flooders: Vec<(TcpStream, usize)> = flooders
        .into_iter()
        .map(|t| t.join().expect("flooder"))
        .collect();
    let grown = rss_bytes(server.pid()).saturating_sub(before);
    let sent: usize = flooders.iter().map(|(_, n)| n).sum();
    assert!(
        sent > 8 << 20,
        "the flood was too small to show anything: {sent} bytes"
    );
    // Before: about 1.5-2 MB each. The bound is 16 KiB of output and one
    // header plus 4 KiB of input each; allow for allocator noise.
    assert!(
        grown < 4 << 20,
        "8 connections that never log in nor read grew the server by {grown} bytes"
    );
    // Login timeout (3 s from connect) + linger (2 s): the slots come back.
    let took = login_within(&server, "late", Duration::from_secs(8))
        .unwrap_or_else(|last| panic!("the flooders kept their slots; last answer: {last}"));
    assert!(took < Duration::from_secs(6), "took {took:?}");
    drop(flooders);
}

/// Defect 3: `--max-pending` counted frame bytes only, so a slow consumer
/// of small frames held 2-3 times the limit (each frame also takes a
/// 32-byte queue slot, and the ring grows by doubling). Now what is counted
/// is what is held. Twelve subscribers that never read are flooded with
/// 17-byte frames until each is cut off; the server's peak memory shows
/// what they held meanwhile: about 2.3 MB each the old way with a 1 MiB
/// bound, at most 1 MiB each now.
#[test]
fn max_pending_counts_what_small_frames_really_hold() {
    let server = ServerProc::start(&["--max-pending", "1048576", "--group", "1=small"]);
    let subs = subscribers_that_do_not_read(&server, 12, "s");
    std::thread::sleep(Duration::from_millis(300));
    let before = peak_rss_bytes(server.pid());
    let mut publisher = server.login("p");
    let batch = b"PUBLISH 1 1\nx".repeat(1000);
    let mut last = String::new();
    for _ in 0..1000 {
        publisher.send(&batch);
        for _ in 0..1000 {
            last = publisher.expect_ack().text();
        }
        if last == "published to 0" {
            break;
        }
    }
    assert_eq!(last, "published to 0", "the subscribers should be cut off");
    let grown = peak_rss_bytes(server.pid()).saturating_sub(before);
    assert!(
        grown < 18 << 20,
        "12 slow consumers with a 1 MiB bound took the server's peak up by {grown} bytes"
    );
    drop(subs);
}

/// Defect 4: before login a frame's payload could be 1 MiB and was
/// buffered for the whole login timeout. Now a frame before login whose
/// LEN is over 4 KiB gets `ERR too-large` and the connection closes.
#[test]
fn before_login_a_large_len_is_refused_at_once() {
    let server = ServerProc::start(&[]);
    for header in ["PASS 100000\n", "PASS 4097\n", "FOO 1000000\n"] {
        let mut c = server.connect();
        c.send(header.as_bytes());
        c.send(&[b'x'; 100]);
        c.expect_err("too-large");
        c.expect_closed();
    }
    // 4 KiB is still fine (a password as payload, say).
    let mut c = server.connect();
    c.send(b"PASS 4096\n");
    c.send(&[b'x'; 4096]);
    c.expect_ack();
    // And after login the payload limit is the server's.
    let mut c = server.login("big");
    c.send_frame("PUBLISH", &["1"], &[b'y'; 100_000]);
    c.expect_err("unknown-group");
}

/// Defect 6: shutdown cut readers off at linger + 0.5 s, so slow readers
/// lost messages the publisher had been told were queued, and got no
/// `ERR shutting-down`. Owed output is written within `--drain-timeout`.
/// (4 MB each at about 500 KB/s: the kernel's buffers take the first 2 MB
/// or so, the rest must wait for the reader.)
#[test]
fn shutdown_drains_what_slow_readers_are_owed() {
    let mut server = ServerProc::start(&["--group", "1=news", "--drain-timeout", "30"]);
    let mut readers = subscribers_that_do_not_read(&server, 2, "r");
    std::thread::sleep(Duration::from_millis(300));
    let mut publisher = server.login("publisher");
    let count = 4000;
    let payload = vec![b'm'; 1024];
    for _ in 0..count {
        publisher.send_frame("PUBLISH", &["1"], &payload);
        publisher.expect_ack();
    }
    server.signal("TERM");
    let threads: Vec<_> = readers
        .drain(..)
        .map(|mut s| {
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(30)))
                    .expect("timeout");
                let mut all = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => all.extend_from_slice(&buf[..n]),
                    }
                    std::thread::sleep(Duration::from_millis(8));
                }
                all
            })
        })
        .collect();
    for t in threads {
        let all = t.join().expect("reader");
        let text = String::from_utf8_lossy(&all);
        let published = text.matches("PUBLISHED 1024 publisher 1\n").count();
        assert_eq!(published, count, "a slow reader lost messages on shutdown");
        assert!(
            text.trim_end().ends_with("server is shutting down"),
            "no ERR shutting-down at the end: {:?}",
            &text[text.len().saturating_sub(80)..]
        );
    }
    assert!(server.wait_exit(Duration::from_secs(30)).success());
}

/// Defect 7: past 64 refused connections at once, the rest were dropped
/// without a word. Each gets `ERR server-full`, cheaply.
#[test]
fn every_refused_connection_is_told_server_full() {
    let server = ServerProc::start(&["--max-connections", "2"]);
    let _a = server.login("a");
    let _b = server.login("b");
    let mut refused: Vec<Client> = (0..150).map(|_| server.connect()).collect();
    for c in &mut refused {
        c.expect_err("server-full");
    }
}
