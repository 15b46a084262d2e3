//! The engine against real Redis servers on loopback, started (and killed)
//! by each test: two reactors on their own threads, each hosting just an
//! [`EngineService`], with the test thread playing both brokers. Needs
//! `redis-server` and `redis-cli` (7.0 or later) on the PATH; a test fails,
//! it does not skip, without them.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Poll, Waker};

use super::*;
use crate::reactor::{self, Control, Reactor};

/// A `redis-server` on a loopback port, killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    dir: PathBuf,
}

/// A loopback port free now (and, for a cluster node, its bus port too).
fn free_port(cluster: bool) -> u16 {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = l.local_addr().expect("local address").port();
        if !cluster {
            return port;
        }
        if let Some(bus) = port.checked_add(10_000) {
            if TcpListener::bind(("127.0.0.1", bus)).is_ok() {
                return port;
            }
        }
    }
    panic!("no free loopback port");
}

impl Redis {
    fn start(cluster: bool) -> Self {
        Self::start_with(cluster, &[])
    }

    fn start_with(cluster: bool, extra: &[&str]) -> Self {
        let port = free_port(cluster);
        let dir =
            std::env::temp_dir().join(format!("switchboard-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(dir.display().to_string());
        if cluster {
            args.extend([
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
            ]);
            args.push(dir.join(format!("nodes-{port}.conf")).display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut r = Self {
            child: None,
            port,
            args,
            dir,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server (install Redis 7 or later; CI does): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(self.port) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `kill -SIG pid`.
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli (install Redis 7 or later): {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = Command::new("kill")
                .args([
                    "-CONT",
                    &self.child.as_ref().map_or(0, Child::id).to_string(),
                ])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a Redis answers `PING` on `port`.
fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    // A Redis with a password answers too, that it needs one.
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok()
        && s.read_exact(&mut buf).is_ok()
        && (&buf == b"+PONG\r\n" || &buf == b"-NOAUTH")
}

/// A reactor hosting one engine, on its own thread; stopped on drop.
struct Engine {
    board: SharedEngineBoard,
    tx: mpsc::Sender<Control>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    /// Messages taken from the board so far.
    got: Vec<(String, Bytes)>,
}

impl Engine {
    fn start(url: &str, max_outgoing: usize) -> Self {
        Self::start_on(url, max_outgoing, &[])
    }

    /// An engine whose broker wants `channels` from the start (as a
    /// server's does: so `up` means they are confirmed).
    fn start_on(url: &str, max_outgoing: usize, channels: &[&str]) -> Self {
        Self::start_tls(url, max_outgoing, channels, None)
    }

    /// [`Engine::start_on`] with a TLS client configuration (`rediss://`).
    fn start_tls(
        url: &str,
        max_outgoing: usize,
        channels: &[&str],
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        let board = SharedEngineBoard::default();
        lock(&board).channels = channels.iter().map(|c| c.to_string()).collect();
        let (tx, rx) = mpsc::channel();
        let (wtx, wrx) = mpsc::channel();
        let config = EngineConfig {
            url: url.to_string(),
            max_outgoing,
            tls,
        };
        let b = Arc::clone(&board);
        let thread = thread::spawn(move || {
            let poll = Poll::new().expect("poll");
            let waker = reactor::waker(&poll).expect("waker");
            wtx.send(waker).expect("hand the waker over");
            let mut reactor: Reactor<EngineService> = Reactor::new(poll, rx);
            reactor.add_service(EngineService::new(config, b));
            reactor.run().expect("the loop runs");
        });
        let waker = wrx.recv().expect("the waker");
        Self {
            board,
            tx,
            waker,
            thread: Some(thread),
            got: Vec::new(),
        }
    }

    /// Changes the board as the broker would, and wakes the loop.
    fn with<R>(&self, f: impl FnOnce(&mut EngineBoard) -> R) -> R {
        let r = f(&mut lock(&self.board));
        let _ = self.tx.send(Control::Service(0, Box::new(())));
        let _ = self.waker.wake();
        r
    }

    fn publish(&self, channel: &str, payloads: impl IntoIterator<Item = String>) {
        self.with(|b| {
            for p in payloads {
                b.outgoing.push_back((channel.to_string(), Bytes::from(p)));
            }
        });
    }

    /// Waits (at most `secs`) until `cond` holds of the board, taking the
    /// messages received meanwhile into `got`.
    #[track_caller]
    fn wait(
        &mut self,
        what: &str,
        secs: u64,
        cond: impl Fn(&EngineBoard, &[(String, Bytes)]) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            {
                let mut b = lock(&self.board);
                self.got.append(&mut b.incoming);
                if cond(&b, &self.got) {
                    return;
                }
                if Instant::now() > deadline {
                    panic!(
                        "timed out waiting for {what}: {b:?} ({} messages)",
                        self.got.len()
                    );
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The payloads received on `channel`, in order.
    fn payloads(&self, channel: &str) -> Vec<String> {
        self.got
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
            .collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.tx.send(Control::Stop);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn parse_url_accepts_redis_urls_and_names_the_bad_ones() {
    let addr = |url: &str| parse_url(url).map(|t| t.addr);
    assert_eq!(
        addr("redis://127.0.0.1:7000"),
        Ok(SocketAddr::from(([127, 0, 0, 1], 7000)))
    );
    assert_eq!(
        addr("redis://127.0.0.1/"),
        Ok(SocketAddr::from(([127, 0, 0, 1], 6379)))
    );
    assert_eq!(addr("redis://[::1]:7000").map(|a| a.port()), Ok(7000));
    assert_eq!(addr("redis://localhost:7000").map(|a| a.port()), Ok(7000));
    assert_eq!(
        parse_url("redis://127.0.0.1:7000").map(|t| t.credentials),
        Ok(None)
    );
    // A password alone (`requirepass`), or an ACL user and its password,
    // %-escaped; the password may hold what the host part may not.
    let credentials = |url: &str| parse_url(url).map(|t| t.credentials);
    assert_eq!(
        credentials("redis://:s3cret@127.0.0.1:7000"),
        Ok(Some(Credentials {
            user: None,
            password: "s3cret".into()
        }))
    );
    assert_eq!(
        credentials("redis://bob:p%40ss:w@rd@127.0.0.1"),
        Ok(Some(Credentials {
            user: Some("bob".into()),
            password: "p@ss:w@rd".into()
        }))
    );
    assert_eq!(
        addr("redis://bob:p%40ss:w@rd@127.0.0.1"),
        Ok(SocketAddr::from(([127, 0, 0, 1], 6379)))
    );
    // TLS: verified for the URL's host.
    let tls_name = |url: &str| parse_url(url).map(|t| t.tls_name.map(|n| n.to_str().into_owned()));
    assert_eq!(tls_name("redis://localhost:7000"), Ok(None));
    assert_eq!(
        tls_name("rediss://localhost:7000"),
        Ok(Some("localhost".into()))
    );
    assert_eq!(tls_name("rediss://:pw@[::1]"), Ok(Some("::1".into())));
    assert_eq!(
        tls_name("rediss://127.0.0.1/"),
        Ok(Some("127.0.0.1".into()))
    );
    for bad in [
        "127.0.0.1:6379",
        "https://127.0.0.1:6379",
        "redis://",
        "redis://u@127.0.0.1:6379",
        "redis://127.0.0.1:6379/2",
        "redis://127.0.0.1:0",
        "redis://127.0.0.1:99999",
        "redis://no-such-host.invalid:6379",
    ] {
        let e = parse_url(bad).expect_err(bad);
        assert!(e.contains(bad), "{e}");
    }
    // Messages never show the password.
    for (bad, shown) in [
        (
            "redis://u:hunter2@127.0.0.1:6379/2",
            "redis://u:***@127.0.0.1:6379/2",
        ),
        ("redis://:hunter2@127.0.0.1:0", "redis://:***@127.0.0.1:0"),
        ("redis://u:hunter2%zz@127.0.0.1", "redis://u:***@127.0.0.1"),
        ("redis://u:@127.0.0.1", "redis://u:***@127.0.0.1"),
        (
            "rediss://u:hunter2@127.0.0.1:0",
            "rediss://u:***@127.0.0.1:0",
        ),
    ] {
        let e = parse_url(bad).expect_err(bad);
        assert!(e.contains(shown) && !e.contains("hunter2"), "{e}");
    }
    assert_eq!(
        format!("{:?}", credentials("redis://:hunter2@127.0.0.1")),
        "Ok(Some(Credentials { user: None, password: \"***\" }))"
    );
}

#[test]
fn two_engines_exchange_messages_both_ways_in_order() {
    let redis = Redis::start(false);
    let mut a = Engine::start_on(&redis.url(), DEFAULT_MAX_OUTGOING, &["to-a"]);
    let mut b = Engine::start_on(&redis.url(), DEFAULT_MAX_OUTGOING, &["to-b"]);
    a.wait("a up", 10, |b, _| b.up && b.generation == 1 && !b.sharded);
    b.wait("b up", 10, |b, _| b.up && b.generation == 1);
    a.publish("to-b", numbered("from-a", 500));
    b.publish("to-a", numbered("from-b", 500));
    a.wait("a's messages", 10, |_, got| got.len() >= 500);
    b.wait("b's messages", 10, |_, got| got.len() >= 500);
    assert_eq!(a.payloads("to-a"), numbered("from-b", 500));
    assert_eq!(b.payloads("to-b"), numbered("from-a", 500));
    a.wait("counts", 1, |b, _| {
        b.published == 500 && b.received == 500 && b.dropped == 0
    });
    // A large payload goes through shared, not copied, and intact.
    let big: String = "x".repeat(1 << 20);
    b.publish("to-a", [big.clone()]);
    a.wait("the large message", 10, |_, got| got.len() == 501);
    assert_eq!(a.payloads("to-a").last(), Some(&big));
    // SET with an expiry.
    a.with(|b| {
        let ttl = Duration::from_secs(30);
        b.sets.push((
            "switchboard:node:a".into(),
            Bytes::from_static(b"alive"),
            ttl,
        ));
    });
    a.wait("the SET answered", 5, |b, _| b.outstanding == 0);
    assert_eq!(redis.cli(&["get", "switchboard:node:a"]).trim(), "alive");
    let pttl: i64 = redis
        .cli(&["pttl", "switchboard:node:a"])
        .trim()
        .parse()
        .unwrap_or(-9);
    assert!(pttl > 20_000 && pttl <= 30_000, "{pttl}");
}

#[test]
fn a_silent_redis_is_dropped_after_the_ping_timeout_and_reconnected() {
    let redis = Redis::start(false);
    let mut e = Engine::start_on(&redis.url(), DEFAULT_MAX_OUTGOING, &["quiet"]);
    e.wait("up", 10, |b, _| b.up);
    let stopped = Instant::now();
    redis.signal("-STOP");
    // The next ping (within 3 s) goes unanswered for 5 s.
    e.wait("down", 10, |b, _| !b.up);
    let after = stopped.elapsed();
    assert!(after >= Duration::from_secs(4), "down after {after:?}");
    redis.signal("-CONT");
    e.wait("up again", 10, |b, _| b.up && b.generation == 2);
    e.publish("quiet", ["again".to_string()]);
    e.wait("a message", 5, |_, got| got.len() == 1);
}

#[test]
fn cluster_slots_errors_tell_a_single_redis_from_one_not_ready() {
    assert!(not_a_cluster(
        b"ERR This instance has cluster support disabled"
    ));
    assert!(not_a_cluster(b"ERR unknown command 'CLUSTER'"));
    assert!(!not_a_cluster(b"NOAUTH Authentication required."));
    assert!(!not_a_cluster(
        b"LOADING Redis is loading the dataset in memory"
    ));
    assert!(!not_a_cluster(b"CLUSTERDOWN The cluster is down"));
}

#[test]
fn a_redis_with_passwords_is_reached_with_the_urls_credentials() {
    let redis = Redis::start_with(
        false,
        &[
            "--requirepass",
            "s3cret",
            "--user",
            "bob",
            "on",
            ">b0b:x",
            "~*",
            "&*",
            "+@all",
        ],
    );
    let at = |userinfo: &str| format!("redis://{userinfo}@127.0.0.1:{}", redis.port);
    // `requirepass` alone, and an ACL user (its password %-escaped).
    let chat = &["chat"];
    let mut a = Engine::start_on(&at(":s3cret"), DEFAULT_MAX_OUTGOING, chat);
    let mut b = Engine::start_on(&at("bob:b0b%3Ax"), DEFAULT_MAX_OUTGOING, chat);
    // No credentials, and a user Redis does not know yet.
    let mut none = Engine::start_on(&redis.url(), DEFAULT_MAX_OUTGOING, chat);
    let mut carol = Engine::start_on(&at("carol:c4rol"), DEFAULT_MAX_OUTGOING, chat);
    up_and_exchanging(&mut a, &mut b, 100);
    // Refused: down, and retried with the back-off (100 ms doubling).
    thread::sleep(Duration::from_millis(1500));
    none.wait("still down", 1, |b, _| !b.up && b.generation == 0);
    carol.wait("still down", 1, |b, _| !b.up && b.reconnects >= 3);
    // The operator adds the user: carol gets in at its next attempt.
    let ok = redis.cli(&[
        "--no-auth-warning",
        "-a",
        "s3cret",
        "ACL",
        "SETUSER",
        "carol",
        "on",
        ">c4rol",
        "~*",
        "&*",
        "+@all",
    ]);
    assert_eq!(ok.trim(), "OK");
    carol.wait("carol up", 10, |b, _| b.up);
    a.publish("chat", numbered("again", 5));
    carol.wait("the messages after", 10, |_, got| got.len() == 5);
    assert_eq!(carol.payloads("chat"), numbered("again", 5));
    none.wait("still down", 1, |b, _| !b.up);
}

/// Both engines come up, and `n` messages from `a` on "chat" reach `b`
/// in order.
#[track_caller]
fn up_and_exchanging(a: &mut Engine, b: &mut Engine, n: usize) {
    a.wait("a up", 10, |b, _| b.up);
    b.wait("b up", 10, |b, _| b.up);
    a.publish("chat", numbered("a", n));
    b.wait("a's messages", 10, |_, got| got.len() == n);
    assert_eq!(b.payloads("chat"), numbered("a", n));
}

/// The development certificates (`certs/`).
fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(name)
}

/// Trusts the development CA, with `client`'s certificate if given.
fn client_tls(client: Option<&str>) -> Arc<rustls::ClientConfig> {
    tls_trusting(&cert("ca.pem"), client)
}

/// Trusts the CA of `ca`, with `client`'s certificate if given.
fn tls_trusting(ca: &std::path::Path, client: Option<&str>) -> Arc<rustls::ClientConfig> {
    let tls = crate::client::ClientTls::from_ca_file(ca).expect("the CA");
    let tls = match client {
        Some(c) => tls
            .with_client_cert(&cert(&format!("{c}.pem")), &cert(&format!("{c}.key")))
            .expect("a client certificate"),
        None => tls,
    };
    tls.rustls_config().expect("a configuration")
}

#[test]
fn a_redis_over_tls_is_verified_and_asks_for_client_certificates() {
    let tls_port = free_port(false);
    let (ca, server, key) = (cert("ca.pem"), cert("server.pem"), cert("server.key"));
    let redis = Redis::start_with(
        false,
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            server.to_str().expect("a path"),
            "--tls-key-file",
            key.to_str().expect("a path"),
            "--tls-ca-cert-file",
            ca.to_str().expect("a path"),
            "--tls-auth-clients",
            "yes",
        ],
    );
    let url = format!("rediss://localhost:{tls_port}");
    let chat = &["chat"];
    let mut a = Engine::start_tls(
        &url,
        DEFAULT_MAX_OUTGOING,
        chat,
        Some(client_tls(Some("alice"))),
    );
    let mut b = Engine::start_tls(
        &url,
        DEFAULT_MAX_OUTGOING,
        chat,
        Some(client_tls(Some("bob"))),
    );
    // No client certificate: Redis ends the handshake. Plain text to the
    // TLS port: no answer Redis would give.
    let mut anonymous = Engine::start_tls(&url, DEFAULT_MAX_OUTGOING, chat, Some(client_tls(None)));
    let plain = format!("redis://127.0.0.1:{tls_port}");
    let mut cleartext = Engine::start_on(&plain, DEFAULT_MAX_OUTGOING, chat);
    // Another CA (a fresh development one): Redis's certificate is refused.
    let other = std::env::temp_dir().join(format!("switchboard-other-ca-{}", std::process::id()));
    crate::certs::generate(&other, &["carol".to_string()], true).expect("another CA");
    let stranger = tls_trusting(&other.join("ca.pem"), Some("alice"));
    let _ = std::fs::remove_dir_all(&other);
    let mut unverified = Engine::start_tls(&url, DEFAULT_MAX_OUTGOING, chat, Some(stranger));
    up_and_exchanging(&mut a, &mut b, 200);
    thread::sleep(Duration::from_millis(1500));
    anonymous.wait("down", 1, |b, _| {
        !b.up && b.generation == 0 && b.reconnects >= 2
    });
    cleartext.wait("down", 1, |b, _| !b.up && b.generation == 0);
    unverified.wait("down", 1, |b, _| {
        !b.up && b.generation == 0 && b.reconnects >= 2
    });
    assert!(anonymous.got.is_empty() && cleartext.got.is_empty() && unverified.got.is_empty());
    // The plain port of the same Redis still works as before.
    let mut c = Engine::start_on(&redis.url(), DEFAULT_MAX_OUTGOING, chat);
    c.wait("c up", 10, |b, _| b.up);
    a.publish("chat", numbered("both", 3));
    c.wait("over both", 10, |_, got| got.len() == 3);
}

#[test]
fn a_broker_that_does_not_drain_pauses_the_subscriber_without_losing_messages() {
    let redis = Redis::start(false);
    let mut a = Engine::start(&redis.url(), DEFAULT_MAX_OUTGOING);
    let mut b = Engine::start_on(&redis.url(), DEFAULT_MAX_OUTGOING, &["flood"]);
    a.wait("a up", 10, |b, _| b.up);
    b.wait("b up", 10, |b, _| b.up);
    let n = MAX_INCOMING * 2;
    a.publish("flood", (0..n).map(|i| i.to_string()));
    a.wait("all published", 10, |b, _| b.published == n as u64);
    // b's broker takes nothing for a while: what waits on the board stays
    // within the bound plus one turn's reading (32 reads of 64 KiB, at
    // least 20 bytes a message).
    let one_turn = 32 * (64 << 10) / 20;
    let mut most = 0;
    for _ in 0..50 {
        most = most.max(lock(&b.board).incoming.len());
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        most > 0 && most <= MAX_INCOMING + one_turn,
        "{most} messages waiting"
    );
    // Drained: the rest comes (within the next ping interval at most).
    b.wait("every message", 15, |_, got| got.len() == n);
    let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(b.payloads("flood"), expected);
}

#[test]
fn a_restarted_redis_is_resubscribed_and_publishes_while_down_are_dropped() {
    let mut redis = Redis::start(false);
    let mut a = Engine::start(&redis.url(), DEFAULT_MAX_OUTGOING);
    let mut b = Engine::start_on(&redis.url(), DEFAULT_MAX_OUTGOING, &["news"]);
    a.wait("a up", 10, |b, _| b.up);
    b.wait("b up", 10, |b, _| b.up && b.generation == 1);
    a.publish("news", ["before".to_string()]);
    b.wait("the first message", 5, |_, got| got.len() == 1);

    redis.kill();
    a.wait("a down", 10, |b, _| !b.up);
    b.wait("b down", 10, |b, _| !b.up);
    a.publish("news", numbered("lost", 5));
    a.wait("the drops", 5, |b, _| b.dropped == 5);

    redis.spawn();
    a.wait("a up again", 15, |b, _| {
        b.up && b.generation == 2 && b.reconnects > 0
    });
    b.wait("b up again", 15, |b, _| b.up && b.generation == 2);
    a.publish("news", ["after".to_string()]);
    b.wait("the message after", 5, |_, got| got.len() == 2);
    assert_eq!(b.payloads("news"), ["before", "after"]);
}

#[test]
fn a_stopped_redis_bounds_what_is_queued_and_drops_the_rest() {
    let redis = Redis::start(false);
    let max = 64 << 10;
    let mut e = Engine::start_on(&redis.url(), max, &["bound"]);
    e.wait("up", 10, |b, _| b.up);
    redis.signal("-STOP");
    let payload = "p".repeat(1000);
    let mut most = 0;
    for round in 0..20 {
        e.publish("bound", (0..50).map(|i| format!("{round}-{i}-{payload}")));
        thread::sleep(Duration::from_millis(20));
        most = most.max(lock(&e.board).outstanding);
    }
    e.wait("every publish sent or dropped", 5, |b, _| {
        b.published + b.dropped == 1000
    });
    let (published, dropped) = {
        let b = lock(&e.board);
        (b.published, b.dropped)
    };
    assert!(most <= max, "{most} bytes outstanding, bound {max}");
    assert!(
        dropped > 0 && published > 0,
        "{published} sent, {dropped} dropped"
    );
    assert!(
        published * 1000 < 2 * max as u64,
        "{published} sent within {max} bytes"
    );
    redis.signal("-CONT");
    // What was sent arrives, in order, once Redis runs again.
    e.wait("the sent messages", 10, |b, got| {
        b.outstanding == 0 && got.len() as u64 == published
    });
    assert!(e.got.windows(2).all(|w| {
        let n = |p: &Bytes| {
            let s = String::from_utf8_lossy(p);
            let mut it = s.split('-').map(|x| x.parse::<u32>().unwrap_or(0));
            (it.next().unwrap_or(0), it.next().unwrap_or(0))
        };
        n(&w[0].1) < n(&w[1].1)
    }));
    e.wait("still up", 1, |b, _| b.up && b.generation == 1);
}

/// A Redis Cluster of `masters` masters with `replicas` replicas each, on
/// loopback, ready (`cluster_state:ok` everywhere).
fn cluster(masters: usize, replicas: usize, extra: &[&str]) -> Vec<Redis> {
    let nodes: Vec<Redis> = (0..masters * (1 + replicas))
        .map(|_| Redis::start_with(true, extra))
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run redis-cli (install Redis 7 or later): {e}"));
    assert!(out.success(), "redis-cli --cluster create failed");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !nodes
        .iter()
        .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
    {
        assert!(Instant::now() < deadline, "the cluster did not become ok");
        thread::sleep(Duration::from_millis(50));
    }
    nodes
}

/// The port of the master owning `slot`, from `CLUSTER NODES` as `node`
/// sees it (a master marked failed does not count).
fn master_of(node: &Redis, slot: u16) -> Option<u16> {
    node.cli(&["cluster", "nodes"]).lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let flags = fields.get(2)?;
        if !flags.contains("master") || flags.contains("fail") {
            return None;
        }
        let owns = fields.iter().skip(8).any(|r| {
            let mut ends = r.split('-').map(|x| x.parse::<u16>().ok());
            match (ends.next().flatten(), ends.next()) {
                (Some(a), None) => a == slot,
                (Some(a), Some(Some(b))) => a <= slot && slot <= b,
                _ => false,
            }
        });
        let port = fields.get(1)?.split('@').next()?.rsplit(':').next()?;
        owns.then(|| port.parse().ok()).flatten()
    })
}

#[test]
fn a_cluster_failover_is_followed_to_the_new_master() {
    let mut nodes = cluster(
        3,
        1,
        &[
            "--cluster-node-timeout",
            "1000",
            "--cluster-replica-validity-factor",
            "0",
        ],
    );
    // Each replica in sync with its master before one fails.
    let deadline = Instant::now() + Duration::from_secs(15);
    while nodes.iter().any(|n| {
        let info = n.cli(&["info", "replication"]);
        info.contains("role:slave") && !info.contains("master_link_status:up")
    }) {
        assert!(Instant::now() < deadline, "the replicas did not sync");
        thread::sleep(Duration::from_millis(50));
    }
    let ca = "switchboard:{a}";
    let mut a = Engine::start_on(&nodes[0].url(), DEFAULT_MAX_OUTGOING, &[ca]);
    let mut b = Engine::start(&nodes[0].url(), DEFAULT_MAX_OUTGOING);
    a.wait("a up", 15, |b, _| b.up && b.sharded && b.generation == 1);
    b.wait("b up", 15, |b, _| b.up && b.sharded);
    b.publish(ca, ["before".to_string()]);
    a.wait("the first message", 5, |_, got| got.len() == 1);

    let old = master_of(&nodes[0], 15495).expect("a master owns {a}'s slot");
    let dead = nodes.iter().position(|n| n.port == old).expect("that node");
    nodes[dead].kill();
    let live = (dead + 1) % nodes.len();
    a.wait("a down", 5, |b, _| !b.up);
    let deadline = Instant::now() + Duration::from_secs(20);
    while master_of(&nodes[live], 15495).is_none_or(|p| p == old) {
        assert!(Instant::now() < deadline, "no failover");
        thread::sleep(Duration::from_millis(100));
    }
    a.wait("a up on the new master", 15, |b, _| {
        b.up && b.generation == 2
    });
    b.wait("b up again", 15, |b, _| b.up && b.generation == 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    while a.payloads(ca).len() == 1 {
        assert!(Instant::now() < deadline, "no message after the failover");
        b.publish(ca, [format!("after-{i}")]);
        i += 1;
        a.wait("a moment", 1, |_, _| true);
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_redis_cluster_is_detected_and_channels_are_routed_by_slot() {
    let nodes = cluster(3, 0, &[]);
    // {a}, {b} and {c} hash to slots 15495, 3300 and 7365: one on each master.
    let (ca, cb, cc) = ("switchboard:{a}", "switchboard:{b}", "switchboard:{c}");
    let mut a = Engine::start_on(&nodes[0].url(), DEFAULT_MAX_OUTGOING, &[ca, cc]);
    let mut b = Engine::start_on(&nodes[1].url(), DEFAULT_MAX_OUTGOING, &[cb]);
    a.wait("a up, sharded", 15, |b, _| {
        b.up && b.sharded && b.generation == 1
    });
    b.wait("b up, sharded", 15, |b, _| {
        b.up && b.sharded && b.generation == 1
    });
    a.publish(cb, numbered("b", 100));
    b.publish(ca, numbered("a", 100));
    b.publish(cc, numbered("c", 100));
    a.wait("a's messages", 10, |_, got| got.len() >= 200);
    b.wait("b's messages", 10, |_, got| got.len() >= 100);
    assert_eq!(a.payloads(ca), numbered("a", 100));
    assert_eq!(a.payloads(cc), numbered("c", 100));
    assert_eq!(b.payloads(cb), numbered("b", 100));
    b.wait("no drops", 1, |b, _| b.dropped == 0 && b.published == 200);

    // A SET goes to the master of its key's slot.
    a.with(|b| {
        let ttl = Duration::from_secs(30);
        b.sets.push((ca.into(), Bytes::from_static(b"here"), ttl));
    });
    // (`outstanding` is 0 before the engine has taken the SET from the
    // board too: wait for the key itself, bounded.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while nodes[2].cli(&["get", ca]).trim() != "here" {
        assert!(
            Instant::now() < deadline,
            "the SET never reached its master"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // (A slot with keys cannot be given away below.)
    assert_eq!(nodes[2].cli(&["del", ca]).trim(), "1");

    // {a}'s slot moves to the second master: the subscriber hears
    // `sunsubscribe`, the publisher `-MOVED`; both refresh the map, and
    // messages flow again through the new owner.
    let new_owner = nodes[1].cli(&["cluster", "myid"]).trim().to_string();
    for n in [&nodes[1], &nodes[2], &nodes[0]] {
        let out = n.cli(&["cluster", "setslot", "15495", "node", &new_owner]);
        assert_eq!(out.trim(), "OK", "setslot on {}", n.port);
    }
    let before = a.payloads(ca).len();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    while a.payloads(ca).len() == before {
        assert!(Instant::now() < deadline, "no message after the slot moved");
        b.publish(ca, [format!("moved-{i}")]);
        i += 1;
        a.wait("a moment", 1, |_, _| true);
        thread::sleep(Duration::from_millis(50));
    }
    // b's first publish after the move was answered -MOVED: lost, counted.
    b.wait("the MOVED publish counted", 1, |b, _| b.dropped >= 1);
    // Once through, in order and none lost.
    b.publish(ca, numbered("after", 50));
    a.wait("the messages after the move", 10, |_, got| {
        got.iter()
            .filter(|(c, p)| c == ca && p.starts_with(b"after"))
            .count()
            == 50
    });
    let after: Vec<String> = a
        .payloads(ca)
        .into_iter()
        .filter(|p| p.starts_with("after"))
        .collect();
    assert_eq!(after, numbered("after", 50));
    a.wait("a still up", 1, |b, _| b.up);
}
