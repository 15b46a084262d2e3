//! The peer endpoint over real loopback sockets: two endpoints exchanging
//! messages, a raw TCP client speaking the frames (and hostile bytes), the
//! limits. Every wait is bounded.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

fn endpoint() -> PeerEndpoint {
    PeerEndpoint::bind(PeerConfig::new(loopback())).expect("bind")
}

/// A raw connection, as `nc` would make.
fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    s
}

/// Reads until `want` has arrived (or the peer closes, or 5 s pass);
/// returns everything read.
fn read_until(s: &mut TcpStream, want: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !got.windows(want.len()).any(|w| w == want) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    got
}

/// Reads until the peer closes (or 5 s pass); returns what came and
/// whether it closed.
fn read_to_close(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => {}
        }
    }
    (got, false)
}

#[test]
fn two_endpoints_exchange_messages_both_ways() {
    let alice = endpoint();
    let bob = endpoint();
    let ack = deliver(bob.local_addr(), "alice", b"hi bob", WAIT).expect("delivered");
    assert_eq!(ack, "delivered");
    let m = bob.recv(Some(WAIT)).expect("bob got it");
    assert_eq!(m.sender, "alice");
    assert_eq!(&m.payload[..], b"hi bob");
    assert!(m.from.ip().is_loopback());
    deliver(alice.local_addr(), "bob", b"hello \x00 alice\n", WAIT).expect("delivered");
    let m = alice.recv(Some(WAIT)).expect("alice got it");
    assert_eq!(
        (m.sender.as_str(), &m.payload[..]),
        ("bob", &b"hello \x00 alice\n"[..])
    );
    // Several on one link, in order, with a ping between.
    let mut link = PeerLink::connect(bob.local_addr(), WAIT).expect("connect");
    for i in 0..50 {
        link.message("alice", format!("n{i}").as_bytes())
            .expect("acknowledged");
    }
    link.ping().expect("pong");
    link.close();
    for i in 0..50 {
        let m = bob.recv(Some(WAIT)).expect("in order");
        assert_eq!(&m.payload[..], format!("n{i}").as_bytes());
    }
    assert!(matches!(
        bob.recv(Some(Duration::from_millis(50))),
        Err(PeerError::Timeout)
    ));
    let stats = bob.stats();
    assert_eq!((stats.messages, stats.pings), (51, 1));
    assert!(stats.accepted >= 2);
}

#[test]
fn a_raw_client_speaks_the_frames_without_login() {
    let bob = endpoint();
    let mut s = raw(bob.local_addr());
    // The directory server's probe: PING on a fresh connection.
    s.write_all(b"PING 0\n").expect("write");
    assert_eq!(read_until(&mut s, b"PONG 0\n"), b"PONG 0\n");
    // A person at nc: CR LF, a blank line, the payload on its own line.
    s.write_all(b"\r\nMESSAGE 6 carol\r\nhello\n")
        .expect("write");
    assert_eq!(read_until(&mut s, b"delivered"), b"ACK 9\ndelivered");
    let m = bob.recv(Some(WAIT)).expect("message");
    assert_eq!(
        (m.sender.as_str(), &m.payload[..]),
        ("carol", &b"hello\n"[..])
    );
    s.write_all(b"HELLO 0\n").expect("write");
    let hello = read_until(&mut s, b"protocol=1\n");
    assert!(hello.starts_with(b"RESULT "), "{hello:?}");
    s.write_all(b"SUBSCRIBE 0 1\nQUIT 0\n").expect("write");
    let (rest, closed) = read_to_close(&mut s);
    let rest = String::from_utf8_lossy(&rest).into_owned();
    assert!(
        rest.starts_with("ERR ") && rest.contains("unknown-command"),
        "{rest}"
    );
    assert!(rest.ends_with("ACK 3\nbye"), "{rest}");
    assert!(closed, "QUIT closes");
    // The probe as the server makes it: PING, then the write side closed
    // at once. The PONG still comes.
    let mut s = raw(bob.local_addr());
    s.write_all(b"PING 0\n").expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    let (got, closed) = read_to_close(&mut s);
    assert_eq!((got.as_slice(), closed), (&b"PONG 0\n"[..], true));
    assert_eq!(ping(bob.local_addr(), WAIT).map(|_| ()).ok(), Some(()));
}

#[test]
fn hostile_bytes_close_that_connection_only() {
    let bob = endpoint();
    let mut steady = raw(bob.local_addr());
    let cases: &[(&[u8], &str)] = &[
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "bad-frame"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "bad-frame"),
        (b"MESSAGE 2000000 alice\n", "too-large"),
        (b"MESSAGE 99999999999 alice\n", "bad-frame"),
        (b"MESSAGE 1 alice\nx1yz\n", "bad-frame"),
    ];
    for (input, code) in cases {
        let mut s = raw(bob.local_addr());
        s.write_all(input).expect("write");
        let (got, closed) = read_to_close(&mut s);
        let got = String::from_utf8_lossy(&got).into_owned();
        assert!(
            got.contains("ERR ") && got.contains(code),
            "{input:?}: {got}"
        );
        assert!(closed, "{input:?}: closed");
        // Another connection is served all along.
        steady.write_all(b"PING 0\n").expect("write");
        assert_eq!(read_until(&mut steady, b"PONG 0\n"), b"PONG 0\n");
    }
    // A header that never ends: refused at 4 KiB, not buffered.
    let mut s = raw(bob.local_addr());
    let _ = s.write_all(&[b'A'; 8192]);
    let (got, closed) = read_to_close(&mut s);
    assert!(String::from_utf8_lossy(&got).contains("bad-frame") && closed);
    // Random bytes, in pieces.
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for _ in 0..30 {
        let mut s = raw(bob.local_addr());
        let mut junk = Vec::new();
        for _ in 0..512 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            junk.push(x as u8);
        }
        for piece in junk.chunks(97) {
            if s.write_all(piece).is_err() {
                break;
            }
        }
    }
    steady.write_all(b"PING 0\n").expect("write");
    assert_eq!(read_until(&mut steady, b"PONG 0\n"), b"PONG 0\n");
    // The one whole message among them: the "x" before the bad header.
    let m = bob.recv(Some(WAIT)).expect("the x");
    assert_eq!((m.sender.as_str(), &m.payload[..]), ("alice", &b"x"[..]));
    assert!(bob.recv(Some(Duration::from_millis(50))).is_err());
}

#[test]
fn the_oversized_message_is_refused_before_it_arrives() {
    let mut config = PeerConfig::new(loopback());
    config.max_payload = 1000;
    let bob = PeerEndpoint::bind(config).expect("bind");
    match deliver(bob.local_addr(), "alice", &[b'x'; 1001], WAIT) {
        Err(PeerError::Refused {
            code: ErrorCode::TooLarge,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    deliver(bob.local_addr(), "alice", &[b'x'; 1000], WAIT).expect("at the limit");
    assert_eq!(bob.recv(Some(WAIT)).expect("message").payload.len(), 1000);
}

#[test]
fn idle_and_slow_peers_are_closed() {
    let mut config = PeerConfig::new(loopback());
    config.idle_timeout = Duration::from_millis(300);
    let bob = PeerEndpoint::bind(config).expect("bind");
    let start = Instant::now();
    let mut idle = raw(bob.local_addr());
    let mut slow = raw(bob.local_addr());
    slow.write_all(b"PI").expect("write");
    thread::sleep(Duration::from_millis(150));
    let _ = slow.write_all(b"N");
    for s in [&mut idle, &mut slow] {
        let (got, closed) = read_to_close(s);
        let got = String::from_utf8_lossy(&got).into_owned();
        assert!(got.starts_with("ERR ") && got.contains("timeout"), "{got}");
        assert!(closed);
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    wait_for(|| bob.stats().connections == 0);
}

fn wait_for(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "condition not met in time");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn at_the_connection_limit_the_quietest_makes_room() {
    let mut config = PeerConfig::new(loopback());
    config.max_connections = 3;
    let bob = PeerEndpoint::bind(config).expect("bind");
    let mut holders: Vec<TcpStream> = (0..3).map(|_| raw(bob.local_addr())).collect();
    wait_for(|| bob.stats().connections == 3);
    // The third holder is active: it will not be the one to go.
    holders[2].write_all(b"PING 0\n").expect("write");
    assert_eq!(read_until(&mut holders[2], b"PONG 0\n"), b"PONG 0\n");
    // The probe still gets in, twice; the quietest holders make room.
    for _ in 0..2 {
        ping(bob.local_addr(), WAIT).expect("pong despite the holders");
    }
    assert!(bob.stats().evicted >= 1);
    let (got, closed) = read_to_close(&mut holders[0]);
    assert!(String::from_utf8_lossy(&got).contains("server-full") && closed);
    holders[2].write_all(b"PING 0\n").expect("write");
    assert_eq!(read_until(&mut holders[2], b"PONG 0\n"), b"PONG 0\n");
}

#[test]
fn a_full_queue_is_busy_not_unbounded() {
    let mut config = PeerConfig::new(loopback());
    config.queue = 2;
    let bob = PeerEndpoint::bind(config).expect("bind");
    deliver(bob.local_addr(), "a", b"1", WAIT).expect("first");
    deliver(bob.local_addr(), "a", b"2", WAIT).expect("second");
    match deliver(bob.local_addr(), "a", b"3", WAIT) {
        Err(PeerError::Refused {
            code: ErrorCode::Busy,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(bob.stats().refused, 1);
    assert_eq!(&bob.recv(Some(WAIT)).expect("1").payload[..], b"1");
    deliver(bob.local_addr(), "a", b"4", WAIT).expect("room again");
}

#[test]
fn a_callback_gets_each_message() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let bob = PeerEndpoint::bind_with(PeerConfig::new(loopback()), move |m| {
        sink.lock().expect("lock").push(m);
    })
    .expect("bind");
    deliver(bob.local_addr(), "alice", b"via callback", WAIT).expect("delivered");
    let got = got.lock().expect("lock");
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"via callback");
    assert!(matches!(bob.recv(Some(WAIT)), Err(PeerError::Closed)));
}

#[test]
fn errors_of_the_sending_side() {
    // Nobody listening.
    let port = std::net::TcpListener::bind(loopback())
        .and_then(|l| l.local_addr())
        .expect("free port");
    assert!(matches!(
        deliver(port, "alice", b"x", WAIT),
        Err(PeerError::Io(_))
    ));
    // A listener that accepts and never answers: a timeout, on time.
    let silent = std::net::TcpListener::bind(loopback()).expect("listener");
    let start = Instant::now();
    assert!(matches!(
        deliver(
            silent.local_addr().expect("addr"),
            "alice",
            b"x",
            Duration::from_millis(300)
        ),
        Err(PeerError::Timeout)
    ));
    assert!(start.elapsed() < Duration::from_secs(2));
    // One that closes at once.
    let closer = std::net::TcpListener::bind(loopback()).expect("listener");
    let addr = closer.local_addr().expect("addr");
    let t = thread::spawn(move || {
        let (s, _) = closer.accept().expect("accept");
        drop(s);
    });
    let e = deliver(addr, "alice", b"x", WAIT).expect_err("closed");
    assert!(matches!(e, PeerError::Closed | PeerError::Io(_)), "{e:?}");
    t.join().expect("thread");
    // A bad sender name is refused before connecting.
    assert!(matches!(
        deliver(port, "not a name", b"x", WAIT),
        Err(PeerError::BadArgs(_))
    ));
}

#[test]
fn stopping_closes_connections_and_the_listener() {
    let bob = endpoint();
    let addr = bob.local_addr();
    let mut s = raw(addr);
    s.write_all(b"PING 0\n").expect("write");
    assert_eq!(read_until(&mut s, b"PONG 0\n"), b"PONG 0\n");
    bob.stop();
    let (got, closed) = read_to_close(&mut s);
    assert!(String::from_utf8_lossy(&got).contains("shutting-down") && closed);
    assert!(TcpStream::connect_timeout(&addr, WAIT).is_err());
    assert!(matches!(bob.recv(Some(WAIT)), Err(PeerError::Closed)));
    bob.stop();
}

#[test]
fn ipv6_loopback_works_too() {
    let Ok(bob) = PeerEndpoint::bind(PeerConfig::new("[::1]:0".parse().expect("v6"))) else {
        // Checked, not skipped silently: a host without IPv6 says so.
        let probe = std::net::TcpListener::bind("[::1]:0");
        assert!(probe.is_err(), "::1 binds for std but not for the endpoint");
        eprintln!("no IPv6 loopback on this host: {probe:?}");
        return;
    };
    deliver(bob.local_addr(), "alice", b"v6", WAIT).expect("delivered");
    assert_eq!(&bob.recv(Some(WAIT)).expect("message").payload[..], b"v6");
}

#[test]
fn a_connect_flood_stays_bounded_and_the_probe_gets_in() {
    let mut config = PeerConfig::new(loopback());
    config.max_connections = 8;
    let bob = PeerEndpoint::bind(config).expect("bind");
    let flood: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect_timeout(&bob.local_addr(), WAIT).ok())
        .collect();
    assert!(flood.len() > 250, "only {} connected", flood.len());
    // Every one is accepted (more than a turn's worth), none kept past the
    // bound, and the probe still gets its PONG.
    wait_for(|| bob.stats().accepted >= flood.len() as u64);
    assert!(bob.stats().connections <= 16, "{:?}", bob.stats());
    ping(bob.local_addr(), WAIT).expect("pong during the flood");
    assert!(bob.stats().connections <= 16, "{:?}", bob.stats());
}
