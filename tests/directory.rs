//! The directory of protocol.md section 6 against real listeners on
//! loopback: `BIND` probed by the server's own outgoing connection (a peer
//! that answers `PONG`, nothing listening, one that accepts and stays
//! silent, one that closes at once), another address forbidden, re-probes
//! removing a dead entry, `LEAVE`, an entry outliving its session, and a
//! flood of `BIND`s that cannot pass the probe bound while the loop stays
//! responsive.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// How a fake peer endpoint behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// Answers each `PING 0` with `PONG 0`.
    Pongs,
    /// Accepts and says nothing.
    Silent,
    /// Accepts and closes at once.
    Closes,
}

/// A peer endpoint on loopback, serving until dropped; counts the
/// connections it accepted.
struct FakePeer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakePeer {
    fn start(kind: Peer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, a) = (Arc::clone(&stop), Arc::clone(&accepted));
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        match kind {
                            Peer::Pongs => {
                                thread::spawn(move || pong(sock));
                            }
                            Peer::Silent => held.push(sock),
                            Peer::Closes => drop(sock),
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            addr,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers `PING 0` lines with `PONG 0` until the connection ends.
fn pong(sock: TcpStream) {
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    let mut out = sock.try_clone().expect("clone");
    let mut lines = BufReader::new(sock);
    let mut line = String::new();
    while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line.trim_end() == "PING 0" && out.write_all(b"PONG 0\n").is_err() {
            return;
        }
        line.clear();
    }
}

/// A port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn bind(c: &mut Client, port: u16) -> Frame {
    c.send_line(&format!("BIND 0 127.0.0.1 {port}"));
    c.read_raw(Duration::from_secs(8)).expect("a BIND reply")
}

fn stat(c: &mut Client, key: &str) -> u64 {
    c.result("STATS 0")
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in STATS"))
}

#[test]
fn bind_probes_the_endpoint_and_query_lists_it() {
    let srv = ServerProc::start(&[]);
    let peer = FakePeer::start(Peer::Pongs);
    let mut alice = srv.login("Alice");
    let f = bind(&mut alice, peer.port());
    assert!(f.is("ACK", &[]), "{f:?}");
    assert_eq!(peer.accepted.load(Ordering::Relaxed), 1, "one probe");
    let line = format!("Alice,127.0.0.1,{}", peer.port());
    assert_eq!(alice.result("QUERY 0"), std::slice::from_ref(&line));
    let mut bob = srv.login("bob");
    assert_eq!(bob.result("QUERY 0 alice"), [line]);
    assert!(bob.result("QUERY 0 nobody").is_empty());
    // Another address: never probed.
    bob.err("BIND 0 192.0.2.1 7000", "forbidden");
    bob.err("BIND 0 ::1 7000", "forbidden");
    bob.err("BIND 0 127.0.0.1 0", "bad-args");
    assert_eq!(stat(&mut bob, "directory_entries"), 1);
    assert_eq!(stat(&mut bob, "probes"), 1);
}

#[test]
fn unreachable_endpoints_are_refused_and_others_are_served_meanwhile() {
    let srv = ServerProc::start(&[]);
    let mut a = srv.login("alice");
    // Nothing listening: refused at once.
    let f = bind(&mut a, dead_port());
    assert!(f.is("ERR", &["unreachable"]), "{f:?}");
    // Closes at once, without a PONG.
    let closes = FakePeer::start(Peer::Closes);
    let f = bind(&mut a, closes.port());
    assert!(f.is("ERR", &["unreachable"]), "{f:?}");
    // Accepts and stays silent: 5 s, while another session's round trips
    // stay fast.
    let silent = FakePeer::start(Peer::Silent);
    let started = Instant::now();
    a.send_line(&format!("BIND 0 127.0.0.1 {}", silent.port()));
    let mut b = srv.login("bob");
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        b.ping();
        worst = worst.max(t.elapsed());
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        worst < Duration::from_millis(200),
        "round trip {worst:?} while a probe waits"
    );
    let f = a.read_raw(Duration::from_secs(8)).expect("the BIND reply");
    let took = started.elapsed();
    assert!(f.is("ERR", &["unreachable"]), "{f:?}");
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(7),
        "the silent peer's probe should end at 5 s, took {took:?}"
    );
    assert!(a.result("QUERY 0").is_empty());
    assert_eq!(stat(&mut a, "probe_failures"), 3);
}

#[test]
fn reprobes_remove_dead_entries_and_entries_outlive_their_session() {
    let srv = ServerProc::start(&["--probe-interval", "1"]);
    let live = FakePeer::start(Peer::Pongs);
    let dying = FakePeer::start(Peer::Pongs);
    let mut a = srv.login("alice");
    let mut b = srv.login("bob");
    assert!(bind(&mut a, live.port()).is("ACK", &[]));
    assert!(bind(&mut b, dying.port()).is("ACK", &[]));
    // alice's session ends; her entry stays, and is re-probed.
    a.send_line("QUIT 0");
    drop(a);
    drop(dying);
    let mut c = srv.login("carol");
    let deadline = Instant::now() + Duration::from_secs(8);
    let expected = [format!("alice,127.0.0.1,{}", live.port())];
    loop {
        let entries = c.result("QUERY 0");
        if entries == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob's dead endpoint should go within a few intervals: {entries:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        live.accepted.load(Ordering::Relaxed) >= 2,
        "the live entry was probed again"
    );
    // LEAVE removes it, from any session of the user.
    let mut a2 = srv.login("alice");
    a2.ack("LEAVE 0");
    assert!(c.result("QUERY 0").is_empty());
    a2.ack("LEAVE 0");
}

#[test]
fn a_flood_of_binds_stays_within_the_probe_bound() {
    let srv = ServerProc::start(&["--max-sessions-per-user", "200"]);
    let silent = FakePeer::start(Peer::Silent);
    // 100 sessions each BIND to a silent peer; one session floods.
    let mut clients: Vec<Client> = (0..100).map(|i| srv.login(&format!("u{i}"))).collect();
    for c in &mut clients {
        c.send_line(&format!("BIND 0 127.0.0.1 {}", silent.port()));
    }
    let mut flood = srv.login("flood");
    let lines: String = (0..500)
        .map(|_| format!("BIND 0 127.0.0.1 {}\n", silent.port()))
        .collect();
    flood.send(lines.as_bytes());
    let mut pinger = srv.login("pinger");
    let t = Instant::now();
    pinger.ping();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    thread::sleep(Duration::from_millis(500));
    let accepted = silent.accepted.load(Ordering::Relaxed);
    assert!(
        accepted <= 64,
        "at most 64 probes in flight, the peer saw {accepted} connections"
    );
    // Those past the bound were told at once.
    let mut busy = 0;
    for c in &mut clients {
        if let Ok(f) = c.read_raw(Duration::from_millis(50)) {
            assert!(f.is("ERR", &["busy"]), "{f:?}");
            busy += 1;
        }
    }
    assert!(busy >= 100 - 64, "{busy} told busy");
    let t = Instant::now();
    pinger.ping();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

/// Records the directory's events.
struct Watcher {
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl switchboard::Handler for Watcher {
    fn on_bind(&mut self, _ctx: &mut switchboard::Context<'_>, user: &str, addr: SocketAddr) {
        if let Ok(mut s) = self.seen.lock() {
            s.push(format!("bind {user} {addr}"));
        }
    }
    fn on_unbind(
        &mut self,
        _ctx: &mut switchboard::Context<'_>,
        user: &str,
        addr: SocketAddr,
        reason: &str,
    ) {
        if let Ok(mut s) = self.seen.lock() {
            s.push(format!("unbind {user} {addr} {reason}"));
        }
    }
}

/// The embedding program sees entries come and go, and adds and removes
/// its own (taken on its word, then re-probed like the others).
#[test]
fn the_embedding_program_sees_and_edits_the_directory() {
    let config = switchboard::ServerConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        broker: switchboard::BrokerConfig {
            probe_interval: Duration::from_millis(500),
            ..switchboard::BrokerConfig::default()
        },
        ..switchboard::ServerConfig::default()
    };
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = switchboard::Server::bind(
        config,
        Watcher {
            seen: Arc::clone(&seen),
        },
    )
    .expect("bind");
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let run = thread::spawn(move || server.run().expect("run"));
    let peer = FakePeer::start(Peer::Pongs);
    let mut a = Client::connect(addr, "alice");
    a.send_line("USER 0 alice");
    a.expect_ack();
    assert!(bind(&mut a, peer.port()).is("ACK", &[]));
    // An entry of the program's own, for an endpoint that is not there.
    let ghost = SocketAddr::from(([127, 0, 0, 1], dead_port()));
    handle
        .call(move |ctx| ctx.bind("ghost", ghost))
        .expect("call");
    let (tx, rx) = std::sync::mpsc::channel();
    handle
        .call(move |ctx| {
            let _ = tx.send(ctx.directory());
        })
        .expect("call");
    let listed = rx.recv_timeout(READ_TIMEOUT).expect("directory");
    assert_eq!(
        listed,
        [
            (
                "alice".to_owned(),
                SocketAddr::from(([127, 0, 0, 1], peer.port()))
            ),
            ("ghost".to_owned(), ghost)
        ]
    );
    // The ghost fails its first re-probe; alice's entry is removed by the program.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen
        .lock()
        .is_ok_and(|s| s.iter().any(|e| e.starts_with("unbind ghost")))
    {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            seen.lock().map(|s| s.clone())
        );
        thread::sleep(Duration::from_millis(50));
    }
    handle
        .call(|ctx| {
            assert!(ctx.unbind("ALICE"));
        })
        .expect("call");
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.result("QUERY 0") != Vec::<String>::new() {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(20));
    }
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let p = peer.port();
    assert_eq!(
        seen.first(),
        Some(&format!("bind alice 127.0.0.1:{p}")),
        "{seen:?}"
    );
    assert!(seen.contains(&format!("bind ghost {ghost}")), "{seen:?}");
    assert!(
        seen.contains(&format!("unbind ghost {ghost} its probe failed")),
        "{seen:?}"
    );
    assert!(
        seen.contains(&format!("unbind alice 127.0.0.1:{p} removed by the server")),
        "{seen:?}"
    );
    handle.stop();
    let _ = run.join();
}
