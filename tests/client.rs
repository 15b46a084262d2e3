//! `switchboard::Client` against the real server binary: every method over
//! plain TCP, TLS, mutual TLS with `--auth cert` and password login; pushes
//! through `recv` and `on_push`; certificate refusal before any credential;
//! reconnect to a restarted server; and hostile fake servers (garbage, a frame
//! cut short, silence), which must give typed errors and never hang.
//!
//! Every wait is bounded: the clients use short timeouts, and each expected
//! push is awaited for at most `WAIT`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use switchboard::client::{Backoff, ClientTls};
use switchboard::error::ErrorCode;
use switchboard::{Client, ClientConfig, ClientError, Push};

/// Longest wait for any one expected push or reply.
const WAIT: Duration = Duration::from_secs(5);

fn config(addr: SocketAddr, user: &str) -> ClientConfig {
    let mut c = ClientConfig::new(addr.to_string(), user);
    c.connect_timeout = WAIT;
    c.reply_timeout = WAIT;
    c
}

#[track_caller]
fn connect(addr: SocketAddr, user: &str) -> Client {
    Client::connect(config(addr, user)).unwrap_or_else(|e| panic!("{user} cannot connect: {e}"))
}

#[track_caller]
fn next_push(c: &Client) -> Push {
    c.recv(Some(WAIT))
        .unwrap_or_else(|e| panic!("no push within {WAIT:?}: {e}"))
}

#[track_caller]
fn published(sender: &str, groups: &[u32], payload: &[u8]) -> Push {
    Push::Published {
        sender: sender.into(),
        groups: groups.to_vec(),
        payload: bytes::Bytes::copy_from_slice(payload),
    }
}

#[track_caller]
fn assert_refused(result: Result<impl std::fmt::Debug, ClientError>, want: ErrorCode) {
    match result {
        Err(ClientError::Refused { code, text }) if code == want => {
            assert!(!text.is_empty());
        }
        other => panic!("expected ERR {want}, got {other:?}"),
    }
}

#[test]
fn every_method_over_plain_tcp() {
    let srv = ServerProc::start(&["--group", "1=general", "--group", "2=random"]);
    let alice = connect(srv.addr, "alice");
    let bob = connect(srv.addr, "bob");

    let hello = alice.hello().expect("hello");
    assert!(
        hello.contains(&("server".into(), "switchboard".into())),
        "{hello:?}"
    );
    assert!(
        hello.contains(&("protocol".into(), "1".into())),
        "{hello:?}"
    );
    assert_eq!(
        alice.groups().expect("groups"),
        vec![(1, "general".into()), (2, "random".into())]
    );
    assert!(alice.ping().expect("ping") < WAIT);

    assert_eq!(alice.watch(&[1]).expect("watch"), "watching");
    assert_eq!(alice.subscribe(&[1, 2]).expect("subscribe"), "subscribed");
    bob.subscribe(&[1]).expect("bob subscribes");
    for user in ["alice", "bob"] {
        assert_eq!(
            next_push(&alice),
            Push::Joined {
                user: user.into(),
                group: 1
            }
        );
    }
    let mut who = alice.who(None).expect("who");
    who.sort();
    assert_eq!(who, vec!["alice", "bob"]);
    let mut who1 = alice.who(Some(1)).expect("who 1");
    who1.sort();
    assert_eq!(who1, vec!["alice", "bob"]);
    assert_eq!(alice.who(Some(2)).expect("who 2"), vec!["alice"]);

    bob.publish(&[1, 2], b"hi all\n\x00binary")
        .expect("publish");
    assert_eq!(
        next_push(&alice),
        published("bob", &[1, 2], b"hi all\n\x00binary")
    );
    assert_eq!(
        next_push(&bob),
        published("bob", &[1, 2], b"hi all\n\x00binary")
    );

    assert_eq!(alice.send("bob", b"psst").expect("send"), "sent");
    assert_eq!(
        next_push(&bob),
        Push::Message {
            sender: "alice".into(),
            payload: bytes::Bytes::from_static(b"psst")
        }
    );

    assert_refused(alice.send("nobody", b"x"), ErrorCode::NoSuchUser);
    assert_refused(alice.subscribe(&[99]), ErrorCode::UnknownGroup);
    assert_refused(alice.publish(&[99], b"x"), ErrorCode::UnknownGroup);
    // Refused locally, as the server would.
    assert_refused(alice.subscribe(&[]), ErrorCode::BadArgs);
    assert_refused(alice.send("not a name", b"x"), ErrorCode::BadArgs);

    bob.unsubscribe(&[1]).expect("bob unsubscribes");
    assert_eq!(
        next_push(&alice),
        Push::Parted {
            user: "bob".into(),
            group: 1
        }
    );
    assert_eq!(alice.unwatch(&[1]).expect("unwatch"), "unwatched");
    bob.subscribe(&[1]).expect("bob subscribes again");
    assert_eq!(
        alice.unsubscribe(&[1, 2]).expect("unsubscribe"),
        "unsubscribed"
    );
    bob.publish(&[1], b"anyone?").expect("publish");
    assert_eq!(next_push(&bob), published("bob", &[1], b"anyone?"));
    // Nothing for alice: not subscribed, not watching.
    alice.ping().expect("sync");
    assert!(matches!(
        alice.recv(Some(Duration::from_millis(100))),
        Err(ClientError::Timeout)
    ));

    alice.quit().expect("quit");
    assert!(matches!(alice.who(None), Err(ClientError::Closed)));
    alice.quit().expect("a second quit is fine");
    assert!(matches!(alice.recv(Some(WAIT)), Err(ClientError::Closed)));
    assert_eq!(bob.who(None).expect("who"), vec!["bob"]);
}

#[test]
fn pushes_through_a_callback_and_from_many_threads() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let alice = Arc::new(connect(srv.addr, "alice"));
    let bob = connect(srv.addr, "bob");
    alice.subscribe(&[1]).expect("subscribe");
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    alice.on_push(move |push| {
        let _ = tx.lock().expect("lock").send(push.clone());
    });
    // Requests from several threads at once, each matched to its own reply.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let alice = alice.clone();
            thread::spawn(move || {
                for j in 0..10 {
                    let text = format!("{i}-{j}");
                    alice.publish(&[1], text.as_bytes()).expect("publish");
                    assert_eq!(alice.who(Some(1)).expect("who").len(), 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    bob.send("alice", b"direct").expect("send");
    let mut got = Vec::new();
    while got.len() < 41 {
        match rx.recv_timeout(WAIT) {
            Ok(p) => got.push(p),
            Err(e) => panic!("callback got {} pushes, then {e}", got.len()),
        }
    }
    assert_eq!(
        got.iter()
            .filter(|p| matches!(p, Push::Published { .. }))
            .count(),
        40
    );
    assert!(got.contains(&Push::Message {
        sender: "bob".into(),
        payload: bytes::Bytes::from_static(b"direct")
    }));
    // While a callback is set, recv gets nothing.
    assert!(matches!(
        alice.recv(Some(Duration::from_millis(50))),
        Err(ClientError::Timeout)
    ));
}

#[test]
fn password_login() {
    let dir = TempDir::new("client-passwd");
    let file = dir.join("passwd");
    passwd(&file, "alice", "open sesame");
    let srv = ServerProc::start(&["--auth", "password", "--passwd", path_str(&file)]);

    let mut good = config(srv.addr, "alice");
    good.password = Some("open sesame".into());
    let alice = Client::connect(good).expect("right password");
    assert_eq!(alice.who(None).expect("who"), vec!["alice"]);

    let mut bad = config(srv.addr, "alice");
    bad.password = Some("wrong".into());
    assert_refused(Client::connect(bad), ErrorCode::AuthFailed);

    // No password: USER alone is not a login.
    assert_refused(
        Client::connect(config(srv.addr, "alice")),
        ErrorCode::AuthRequired,
    );
}

#[test]
fn tls_verified_then_logged_in() {
    let certs = CertDir::new(&[]);
    let srv = ServerProc::start_tls(&strs(&certs.server_args()));
    let addr = srv.tls_addr();
    let seen = Arc::new(Mutex::new(None));
    let seen2 = seen.clone();
    let mut c = config(addr, "alice");
    c.tls = Some(
        ClientTls::from_ca_file(&certs.ca())
            .expect("CA")
            .with_inspect(move |cert| {
                *seen2.lock().expect("lock") = cert.subject.cn.clone();
                true
            }),
    );
    let alice = Client::connect(c).expect("TLS connect");
    assert_eq!(seen.lock().expect("lock").as_deref(), Some("localhost"));
    alice.subscribe(&[1]).expect_err("no groups registered");
    alice.send("alice", b"to myself over TLS").expect("send");
    assert_eq!(
        next_push(&alice),
        Push::Message {
            sender: "alice".into(),
            payload: bytes::Bytes::from_static(b"to myself over TLS")
        }
    );
    let big = vec![7u8; 300_000];
    alice.send("alice", &big).expect("big send");
    match next_push(&alice) {
        Push::Message { payload, .. } => assert_eq!(payload.len(), big.len()),
        other => panic!("{other:?}"),
    }
    alice.ping().expect("ping");
    alice.quit().expect("quit");

    // By name instead of address.
    let mut c = ClientConfig::new(format!("localhost:{}", addr.port()), "bob");
    c.tls = Some(ClientTls::from_ca_file(&certs.ca()).expect("CA"));
    let bob = Client::connect(c).expect("TLS by name");
    bob.ping().expect("ping");
}

#[test]
fn wrong_ca_and_refused_certificate_send_nothing() {
    let certs = CertDir::new(&[]);
    let other = CertDir::new(&[]);
    let srv = ServerProc::start_tls(&strs(&certs.server_args()));
    let addr = srv.tls_addr();

    let mut c = config(addr, "mallory");
    c.tls = Some(ClientTls::from_ca_file(&other.ca()).expect("other CA"));
    match Client::connect(c) {
        Err(ClientError::Tls(why)) => assert!(!why.is_empty()),
        other => panic!("wrong CA: {other:?}"),
    }

    let asked = Arc::new(AtomicBool::new(false));
    let asked2 = asked.clone();
    let mut c = config(addr, "mallory");
    c.tls = Some(
        ClientTls::from_ca_file(&certs.ca())
            .expect("CA")
            .with_inspect(move |_| {
                asked2.store(true, Ordering::SeqCst);
                false
            }),
    );
    match Client::connect(c) {
        Err(ClientError::CertificateRejected) => {}
        other => panic!("refused certificate: {other:?}"),
    }
    assert!(asked.load(Ordering::SeqCst));

    // The server never saw a login from mallory.
    let watcher = connect(srv.addr, "watcher");
    assert_eq!(watcher.who(None).expect("who"), vec!["watcher"]);
    assert!(!srv.log_text().contains("mallory"), "{}", srv.log_text());

    // A missing CA file is a TLS error naming it.
    match ClientTls::from_ca_file(&certs.file("nope.pem")) {
        Err(ClientError::Tls(why)) => assert!(why.contains("nope.pem"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn mutual_tls_with_cert_auth() {
    let certs = CertDir::new(&["alice"]);
    let mut args = certs.mutual_args("required");
    args.extend(["--auth".into(), "cert".into()]);
    let srv = ServerProc::start_tls(&strs(&args));
    let addr = srv.tls_addr();
    let tls = ClientTls::from_ca_file(&certs.ca())
        .expect("CA")
        .with_client_cert(&certs.file("alice.pem"), &certs.file("alice.key"))
        .expect("client cert");

    let mut c = config(addr, "alice");
    c.tls = Some(tls.clone());
    let alice = Client::connect(c).expect("mutual TLS as alice");
    assert_eq!(alice.who(None).expect("who"), vec!["alice"]);

    // No USER at all: the certificate is the login.
    let mut c = config(addr, "");
    c.tls = Some(tls.clone());
    let again = Client::connect(c).expect("mutual TLS, no USER");
    assert_eq!(
        again
            .hello()
            .expect("hello")
            .iter()
            .find(|(k, _)| k == "auth")
            .map(|(_, v)| v.as_str()),
        Some("cert")
    );

    // Another name than the certificate's is refused.
    let mut c = config(addr, "bob");
    c.tls = Some(tls);
    assert_refused(Client::connect(c), ErrorCode::AuthFailed);

    // No client certificate: the handshake fails.
    let mut c = config(addr, "alice");
    c.tls = Some(ClientTls::from_ca_file(&certs.ca()).expect("CA"));
    match Client::connect(c) {
        Err(ClientError::Tls(_) | ClientError::Io(_) | ClientError::Closed) => {}
        other => panic!("no client certificate: {other:?}"),
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn serve_on(port: u16) -> ServerProc {
    let listen = format!("127.0.0.1:{port}");
    ServerProc::start_raw(&[
        "serve",
        "--listen",
        &listen,
        "--tls-listen",
        "off",
        "--ws-listen",
        "off",
        "--wss-listen",
        "off",
        "--group",
        "1=general",
    ])
}

#[test]
fn reconnects_resubscribes_and_receives() {
    let port = free_port();
    let srv = serve_on(port);
    let mut c = config(srv.addr, "alice");
    c.reconnect = Some(Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    });
    let alice = Arc::new(Client::connect(c).expect("connect"));
    alice.subscribe(&[1]).expect("subscribe");
    alice.watch(&[1]).expect("watch");

    drop(srv);
    assert_eq!(next_push(&alice), Push::Disconnected);
    // A request made while disconnected waits for the new connection, and
    // goes out after the restored subscription.
    let asker = {
        let alice = alice.clone();
        thread::spawn(move || alice.who(Some(1)))
    };
    thread::sleep(Duration::from_millis(300));
    let srv = serve_on(port);
    assert_eq!(
        asker.join().expect("thread").expect("who after reconnect"),
        vec!["alice"]
    );
    assert_eq!(next_push(&alice), Push::Reconnected);

    let bob = connect(srv.addr, "bob");
    bob.subscribe(&[1]).expect("bob subscribes");
    assert_eq!(
        next_push(&alice),
        Push::Joined {
            user: "bob".into(),
            group: 1
        }
    );
    bob.publish(&[1], b"welcome back").expect("publish");
    assert_eq!(next_push(&alice), published("bob", &[1], b"welcome back"));

    // The server goes away again: dropping the client while it backs off
    // stops its thread at once.
    drop(srv);
    assert_eq!(next_push(&alice), Push::Disconnected);
    let start = Instant::now();
    drop(Arc::try_unwrap(alice).expect("last handle"));
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn without_reconnect_a_lost_server_closes_the_client() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let alice = connect(srv.addr, "alice");
    alice.subscribe(&[1]).expect("subscribe");
    drop(srv);
    assert_eq!(next_push(&alice), Push::Disconnected);
    assert!(matches!(alice.recv(Some(WAIT)), Err(ClientError::Closed)));
    assert!(matches!(alice.ping(), Err(ClientError::Closed)));
    alice.quit().expect("quit after close");
}

/// A one-connection fake server: `script` gets the accepted stream.
fn fake_server(
    script: impl FnOnce(TcpStream) + Send + 'static,
) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            let _ = s.set_read_timeout(Some(WAIT));
            script(s);
        }
    });
    (addr, handle)
}

/// Reads one line (a header with no payload).
fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while s.read(&mut byte).unwrap_or(0) == 1 {
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[test]
fn garbage_from_the_server_is_a_protocol_error() {
    let (addr, h) = fake_server(|mut s| {
        assert_eq!(read_line(&mut s), "USER 0 alice\n");
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n\x00\x01\x02");
        thread::sleep(Duration::from_millis(200));
    });
    let start = Instant::now();
    match Client::connect(config(addr, "alice")) {
        Err(ClientError::Protocol(why)) => assert!(why.contains("bad frame"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < WAIT);
    h.join().expect("fake server");
}

#[test]
fn a_frame_cut_short_is_a_protocol_error() {
    let (addr, h) = fake_server(|mut s| {
        assert_eq!(read_line(&mut s), "USER 0 alice\n");
        let _ = s.write_all(b"ACK 9\nlogged in");
        assert_eq!(read_line(&mut s), "WHO 0\n");
        // Half a reply, then the server goes away.
        let _ = s.write_all(b"RESULT 50\nalice\n");
    });
    let alice = Client::connect(config(addr, "alice")).expect("login");
    match alice.who(None) {
        Err(ClientError::Protocol(why)) => assert!(why.contains("middle of a frame"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(next_push(&alice), Push::Disconnected);
    assert!(matches!(alice.ping(), Err(ClientError::Closed)));
    h.join().expect("fake server");
}

#[test]
fn silent_reset_and_refusing_servers_give_typed_errors() {
    // Accepts, reads, never answers: the login times out.
    let (addr, h) = fake_server(|mut s| {
        let _ = read_line(&mut s);
        thread::sleep(Duration::from_millis(1500));
    });
    let mut c = config(addr, "alice");
    c.reply_timeout = Duration::from_millis(500);
    let start = Instant::now();
    assert!(matches!(Client::connect(c), Err(ClientError::Timeout)));
    assert!(start.elapsed() < Duration::from_secs(3));
    h.join().expect("fake server");

    // Accepts and closes at once.
    let (addr, h) = fake_server(drop);
    assert!(matches!(
        Client::connect(config(addr, "alice")),
        Err(ClientError::Closed | ClientError::Io(_))
    ));
    h.join().expect("fake server");

    // Refuses with server-full, as the contract says, and closes.
    let (addr, h) = fake_server(|mut s| {
        // Read USER first: closing with unread input would reset the
        // connection, and a reset may discard the ERR on the client's side.
        let _ = read_line(&mut s);
        let _ = s.write_all(b"ERR 15 server-full\ntoo many people");
    });
    assert_refused(
        Client::connect(config(addr, "alice")),
        ErrorCode::ServerFull,
    );
    h.join().expect("fake server");

    // Answers a PING with garbage after logging in; a server PING gets a PONG.
    let (addr, h) = fake_server(|mut s| {
        assert_eq!(read_line(&mut s), "USER 0 alice\n");
        let _ = s.write_all(b"ACK 9\nlogged inPING 0\n");
        assert_eq!(read_line(&mut s), "PONG 0\n");
        assert_eq!(read_line(&mut s), "PING 0\n");
        let _ = s.write_all(b"ACK 0\n");
        thread::sleep(Duration::from_millis(200));
    });
    let alice = Client::connect(config(addr, "alice")).expect("login");
    assert!(matches!(alice.ping(), Err(ClientError::Protocol(_))));
    h.join().expect("fake server");
}

/// `target/<profile>/examples/<name>`, next to this test's own `deps/` directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples").join(name)
}

#[test]
fn chat_client_example() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let path = example("chat_client");
    assert!(
        path.exists(),
        "{} not built (cargo test builds examples)",
        path.display()
    );
    let mut child = Command::new(&path)
        .args([&srv.addr.to_string(), "alice", "1", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("example starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !lines.iter().any(|l: &String| l.starts_with("publish:")) {
        assert!(Instant::now() < deadline, "{lines:?}");
        let mut line = String::new();
        if out.read_line(&mut line).expect("stdout") == 0 {
            panic!("example ended early: {lines:?}");
        }
        lines.push(line.trim_end().to_owned());
    }
    let mut bob = srv.login("bob");
    bob.send_frame("PUBLISH", &["1"], b"hi from bob");
    bob.expect_ack();
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("stdout");
    let status = child.wait().expect("exit");
    assert!(status.success(), "{lines:?}\n{rest}");
    assert_eq!(lines[0], format!("connected to {} as alice", srv.addr));
    assert!(rest.contains("[1] alice: hello from alice"), "{rest}");
    assert!(rest.contains("[1] bob: hi from bob"), "{rest}");
    assert!(rest.ends_with("bye\n"), "{rest}");
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// CPU time (clock ticks) used so far by the client I/O threads of this
/// process (thread name `switchboard-client`, shown truncated as
/// `switchboard-cli`).
fn client_threads_cpu_ticks() -> (usize, u64) {
    let mut total = 0;
    let mut threads = 0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0, 0);
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: fields after the closing parenthesis.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(switchboard-cli") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after `)`.
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total += ticks(11) + ticks(12);
        threads += 1;
    }
    (threads, total)
}

#[test]
fn idle_and_backing_off_clients_do_not_spin() {
    let port = free_port();
    let srv = serve_on(port);
    let idle = connect(srv.addr, "idle");
    idle.subscribe(&[1]).expect("subscribe");
    let mut c = config(srv.addr, "retrier");
    c.reconnect = Some(Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
    });
    let retrier = Client::connect(c).expect("connect");
    let (threads, before) = client_threads_cpu_ticks();
    assert!(threads >= 2, "client threads not found in /proc/self/task");
    thread::sleep(Duration::from_millis(500));
    drop(srv);
    assert_eq!(next_push(&retrier), Push::Disconnected);
    // Retrying every 100 ms against a closed port for a second.
    thread::sleep(Duration::from_secs(1));
    let used = client_threads_cpu_ticks().1.saturating_sub(before);
    // A spinning thread would use about 150 ticks (1.5 s at 100 Hz).
    assert!(used < 30, "client threads used {used} ticks while idle");
    drop(idle);
}

#[test]
fn bad_user_name_or_empty_password_fail_at_once() {
    // Nothing listens here: the checks come before any connection.
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let start = Instant::now();
    assert_refused(Client::connect(config(addr, "al ice")), ErrorCode::BadArgs);
    let mut c = config(addr, "alice");
    c.password = Some(String::new());
    assert_refused(Client::connect(c), ErrorCode::BadArgs);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn reconnects_over_tls_and_verifies_again() {
    let certs = CertDir::new(&[]);
    let port = free_port();
    let tls_listen = format!("127.0.0.1:{port}");
    let start = |certs: &CertDir| {
        let mut args = vec![
            "serve".to_owned(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--tls-listen".into(),
            tls_listen.clone(),
            "--ws-listen".into(),
            "off".into(),
            "--wss-listen".into(),
            "off".into(),
            "--group".into(),
            "1=general".into(),
        ];
        args.extend(certs.server_args());
        ServerProc::start_raw(&strs(&args))
    };
    let srv = start(&certs);
    let checks = Arc::new(Mutex::new(0));
    let checks2 = checks.clone();
    let mut c = config(srv.tls_addr(), "alice");
    c.tls = Some(
        ClientTls::from_ca_file(&certs.ca())
            .expect("CA")
            .with_inspect(move |_| {
                *checks2.lock().expect("lock") += 1;
                true
            }),
    );
    c.reconnect = Some(Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    });
    let alice = Client::connect(c).expect("TLS connect");
    alice.subscribe(&[1]).expect("subscribe");
    drop(srv);
    assert_eq!(next_push(&alice), Push::Disconnected);
    let srv = start(&certs);
    assert_eq!(next_push(&alice), Push::Reconnected);
    // The new TLS session verified (and inspected) the server again.
    assert_eq!(*checks.lock().expect("lock"), 2);
    let bob = connect(srv.addr, "bob");
    bob.publish(&[1], b"over TLS again").expect("publish");
    assert_eq!(next_push(&alice), published("bob", &[1], b"over TLS again"));
    alice.quit().expect("quit");
}

#[test]
fn a_request_the_server_never_answers_times_out() {
    let (addr, h) = fake_server(|mut s| {
        assert_eq!(read_line(&mut s), "USER 0 alice\n");
        let _ = s.write_all(b"ACK 9\nlogged in");
        assert_eq!(read_line(&mut s), "WHO 0\n");
        // Never answers; stays connected a while.
        thread::sleep(Duration::from_millis(1500));
    });
    let mut c = config(addr, "alice");
    c.reply_timeout = Duration::from_millis(300);
    let alice = Client::connect(c).expect("login");
    let start = Instant::now();
    assert!(matches!(alice.who(None), Err(ClientError::Timeout)));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    h.join().expect("fake server");
}
