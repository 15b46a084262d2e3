//! The generic layer over loopback: the three framings, a message over the
//! maximum closing only its own connection, the broker and an echo service
//! on one loop at once, and TLS with the client certificate's subject in the
//! handler.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::{TLS_ANY, TempDir, read_to_end, tls_client_config};
use switchboard::framed::{FramedContext, FramedHandler, Framing};
use switchboard::tls::ClientAuth;
use switchboard::{CloseReason, ConnId, EventLoop, LoopHandle, ServerConfig};

const WAIT: Duration = Duration::from_secs(5);

/// Echoes every message and reports what happens.
struct Echo {
    events: Sender<String>,
}

impl FramedHandler for Echo {
    fn on_established(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId) {
        let subject = subject(ctx, conn);
        let peer = ctx.peer(conn).map(|p| p.to_string()).unwrap_or_default();
        let _ = self.events.send(format!("up {subject} {peer}"));
    }
    fn on_message(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId, message: &[u8]) {
        ctx.send(conn, message);
    }
    fn on_closed(&mut self, _ctx: &mut FramedContext<'_>, _conn: ConnId, reason: CloseReason) {
        let _ = self.events.send(format!("closed {reason:?}"));
    }
}

/// A loop built by `build` on its own thread (services are not `Send`).
struct Running {
    addrs: Vec<SocketAddr>,
    handle: LoopHandle,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start(build: impl FnOnce(&mut EventLoop) -> Vec<SocketAddr> + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut event_loop = EventLoop::new().expect("loop");
            let addrs = build(&mut event_loop);
            tx.send((addrs, event_loop.handle())).expect("report");
            event_loop.run().expect("run");
        });
        let (addrs, handle) = rx.recv_timeout(WAIT).expect("loop started");
        Self {
            addrs,
            handle,
            thread: Some(thread),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The client certificate's subject on `conn`, or `-` without one.
fn subject(ctx: &FramedContext<'_>, conn: ConnId) -> String {
    ctx.client_cert(conn)
        .map(|s| s.to_string())
        .unwrap_or_else(|| "-".into())
}

/// Messages ending in `\n`, at most `max_len` bytes long.
fn lines(max_len: usize) -> Framing {
    Framing::Delimited {
        delimiter: b'\n',
        max_len,
    }
}

/// An echo service with `framing` (over TLS if `tls`); returns it and its
/// event channel.
fn echo(framing: Framing, tls: Option<Arc<rustls::ServerConfig>>) -> (Running, Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let running = Running::start(move |l| {
        vec![
            l.listen(any(), tls, framing, Echo { events: tx })
                .expect("listen"),
        ]
    });
    (running, rx)
}

/// Collects events up to and including the first `closed ...` one.
fn until_closed(events: &Receiver<String>) -> Vec<String> {
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &String| e.starts_with("closed")) {
        seen.push(events.recv_timeout(WAIT).expect("event"));
    }
    seen
}

/// A new directory `name` with a CA, a server certificate and client
/// certificates for `users`.
fn cert_dir(name: &str, users: &[&str]) -> TempDir {
    let dir = TempDir::new(name);
    let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
    switchboard::certs::generate(dir.path(), &users, false).expect("certs");
    dir
}

/// Server TLS settings from the server certificate in `dir`.
fn server_tls(dir: &TempDir, client_auth: &ClientAuth) -> Arc<rustls::ServerConfig> {
    switchboard::tls::server_config(
        switchboard::certs::load_certs(&dir.join("server.pem")).expect("cert"),
        switchboard::certs::load_key(&dir.join("server.key")).expect("key"),
        client_auth,
    )
    .expect("tls settings")
}

/// Certificates in a new directory `name`: a server that requires a client
/// certificate from the CA, and a client that presents alice's.
fn mutual_tls(
    name: &str,
) -> (
    TempDir,
    Arc<rustls::ServerConfig>,
    Arc<rustls::ClientConfig>,
) {
    let dir = cert_dir(name, &["alice"]);
    let ca = dir.join("ca.pem");
    let roots = switchboard::certs::load_roots(&ca).expect("roots");
    let server = server_tls(&dir, &ClientAuth::Required(Arc::new(roots)));
    let client = tls_client_config(
        &ca,
        Some((&dir.join("alice.pem"), &dir.join("alice.key"))),
        TLS_ANY,
    );
    (dir, server, client)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s
}

#[track_caller]
fn read_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    s.read_exact(&mut v).expect("read");
    v
}

#[test]
fn delimited_echo() {
    let (running, events) = echo(lines(64), None);
    let mut s = connect(running.addrs[0]);
    // Split mid-message, and two messages in one write.
    s.write_all(b"hel").expect("write");
    thread::sleep(Duration::from_millis(20));
    s.write_all(b"lo\nworld\n").expect("write");
    assert_eq!(read_n(&mut s, 12), b"hello\nworld\n");
    let up = events.recv_timeout(WAIT).expect("established");
    assert!(up.starts_with("up - 127.0.0.1:"), "{up}");
}

#[test]
fn length_prefixed_echo() {
    let (running, _events) = echo(Framing::LengthPrefixed { max_len: 100_000 }, None);
    let mut s = connect(running.addrs[0]);
    let body = vec![7u8; 70_000];
    let mut wire = (body.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(&body);
    wire.extend_from_slice(&[0, 0, 0, 0]);
    s.write_all(&wire).expect("write");
    assert_eq!(read_n(&mut s, wire.len()), wire);
}

#[test]
fn raw_echo() {
    let (running, _events) = echo(Framing::Raw, None);
    let mut s = connect(running.addrs[0]);
    s.write_all(b"no framing at all").expect("write");
    assert_eq!(read_n(&mut s, 17), b"no framing at all");
}

#[test]
fn over_max_len_closes_only_that_connection() {
    let (running, events) = echo(lines(8), None);
    let mut good = connect(running.addrs[0]);
    let mut bad = connect(running.addrs[0]);
    bad.write_all(b"this line is far too long\n")
        .expect("write");
    assert_eq!(read_to_end(&mut bad), b"");
    let seen = until_closed(&events);
    assert!(seen.contains(&"closed TooLarge".to_string()), "{seen:?}");
    good.write_all(b"ok\n").expect("write");
    assert_eq!(read_n(&mut good, 3), b"ok\n");

    // The same for a declared length: refused before the body arrives.
    let (running, _events) = echo(Framing::LengthPrefixed { max_len: 10 }, None);
    let mut bad = connect(running.addrs[0]);
    bad.write_all(&11u32.to_be_bytes()).expect("write");
    assert_eq!(read_to_end(&mut bad), b"");
}

#[test]
fn broker_and_echo_share_one_loop() {
    let (tx, _events) = mpsc::channel();
    let running = Running::start(move |l| {
        let config = ServerConfig {
            listen: vec![any()],
            ..ServerConfig::default()
        };
        let (mut addrs, _handle) = l.add_broker(config, ()).expect("broker");
        addrs.push(
            l.listen(any(), None, lines(64), Echo { events: tx })
                .expect("echo"),
        );
        addrs
    });
    let mut broker = connect(running.addrs[0]);
    let mut echo = connect(running.addrs[1]);
    for round in 0..3 {
        broker.write_all(b"PING 0\n").expect("write");
        echo.write_all(format!("round {round}\n").as_bytes())
            .expect("write");
        assert_eq!(read_n(&mut broker, 7), b"PONG 0\n");
        assert_eq!(read_n(&mut echo, 8), format!("round {round}\n").as_bytes());
    }
    broker.write_all(b"USER 0 alice\n").expect("write");
    assert_eq!(read_n(&mut broker, 15), b"ACK 9\nlogged in");
}

#[test]
fn tls_echo_sees_the_client_certificate() {
    let (_dir, server, config) = mutual_tls("framed-tls");
    let (running, events) = echo(lines(64), Some(server));
    let name = "localhost".try_into().expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("client");
    let mut tls = rustls::StreamOwned::new(conn, connect(running.addrs[0]));
    tls.write_all(b"secret\n").expect("write");
    assert_eq!(read_n(&mut tls, 7), b"secret\n");
    let up = events.recv_timeout(WAIT).expect("established");
    assert!(up.starts_with("up CN=alice "), "{up}");
}

/// Says hello when established, then echoes.
struct Greeter;

impl FramedHandler for Greeter {
    fn on_established(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId) {
        ctx.send(conn, b"hello");
    }
    fn on_message(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId, message: &[u8]) {
        ctx.send(conn, message);
    }
}

/// Issue 12: WebSocket is a transport of the generic layer too. A
/// delimited service over `ws` (tungstenite as the client): the greeting
/// sent when the handler hears of the connection arrives after the upgrade,
/// each message sent is one WebSocket message (delimiter included), a
/// message without the delimiter gets one, and two messages in one
/// WebSocket message are two messages. A length-prefixed service over `wss`
/// with the client certificate, and a plain GET gets 404.
#[test]
fn framed_services_over_websocket() {
    let (_dir, server, config) = mutual_tls("framed-ws");
    let running = Running::start(move |l| {
        vec![
            l.listen_websocket(any(), None, lines(64), Greeter)
                .expect("listen"),
            l.listen_websocket(
                any(),
                Some(server),
                Framing::LengthPrefixed { max_len: 1000 },
                Echo {
                    events: mpsc::channel().0,
                },
            )
            .expect("listen"),
        ]
    });
    use tungstenite::Message;
    let url = format!("ws://{}/", running.addrs[0]);
    let (mut ws, _) = tungstenite::client(url, connect(running.addrs[0])).expect("upgrade");
    assert_eq!(ws.read().expect("greeting"), Message::text("hello\n"));
    ws.send(Message::text("one")).expect("send");
    assert_eq!(ws.read().expect("echo"), Message::text("one\n"));
    ws.send(Message::text("two\nthree\n")).expect("send");
    assert_eq!(ws.read().expect("echo"), Message::text("two\n"));
    assert_eq!(ws.read().expect("echo"), Message::text("three\n"));
    ws.send(Message::binary(vec![0xff, b'\n'])).expect("send");
    assert_eq!(ws.read().expect("echo"), Message::binary(vec![0xff, b'\n']));
    ws.close(None).expect("close");

    let name = "localhost".try_into().expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("client");
    let tls = rustls::StreamOwned::new(conn, connect(running.addrs[1]));
    let url = format!("wss://localhost:{}/", running.addrs[1].port());
    let (mut wss, _) = tungstenite::client(url, tls).expect("upgrade over TLS");
    let mut framed = 3u32.to_be_bytes().to_vec();
    framed.extend_from_slice(b"abc");
    wss.send(Message::binary(framed.clone())).expect("send");
    // Valid UTF-8 (NUL bytes are), so a text message.
    assert_eq!(wss.read().expect("echo").into_data(), framed);

    let mut get = connect(running.addrs[0]);
    get.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let answer = String::from_utf8_lossy(&read_to_end(&mut get)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
}

/// An outgoing connection's side: sends `greeting` once connected, then
/// reports what comes back and how it ends.
struct Caller {
    greeting: &'static [u8],
    events: Sender<String>,
}

impl FramedHandler for Caller {
    fn on_established(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId) {
        let peer = subject(ctx, conn);
        let _ = self.events.send(format!("connected {peer}"));
        ctx.send(conn, self.greeting);
    }
    fn on_message(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId, message: &[u8]) {
        let _ = self
            .events
            .send(format!("got {}", String::from_utf8_lossy(message)));
        ctx.close(conn);
    }
    fn on_closed(&mut self, _ctx: &mut FramedContext<'_>, _conn: ConnId, reason: CloseReason) {
        let _ = self.events.send(format!("closed {reason:?}"));
    }
}

#[test]
fn outgoing_connection_to_a_service_on_the_same_loop() {
    let (tx, events) = mpsc::channel();
    let (server_tx, _server_events) = mpsc::channel();
    let lines = lines(64);
    let _running = Running::start(move |l| {
        let addr = l
            .listen(any(), None, lines, Echo { events: server_tx })
            .expect("listen");
        let caller = Caller {
            greeting: b"hello from the same loop",
            events: tx,
        };
        l.connect(addr, lines, caller).expect("connect");
        vec![addr]
    });
    let seen = until_closed(&events);
    assert_eq!(
        seen,
        [
            "connected -",
            "got hello from the same loop",
            "closed Closed"
        ]
    );
}

#[test]
fn outgoing_connection_refused_is_reported() {
    // A port that was just free: nothing listens there.
    let free = std::net::TcpListener::bind(any())
        .and_then(|l| l.local_addr())
        .expect("free port");
    let (tx, events) = mpsc::channel();
    let _running = Running::start(move |l| {
        let caller = Caller {
            greeting: b"anyone?",
            events: tx,
        };
        l.connect(free, Framing::Raw, caller)
            .expect("connect starts");
        Vec::new()
    });
    assert_eq!(
        events.recv_timeout(WAIT).expect("event"),
        "closed ConnectFailed"
    );
}

#[test]
fn outgoing_tls_with_a_client_certificate_on_the_same_loop() {
    let (_dir, server, client) = mutual_tls("framed-tls-out");
    let (server_tx, server_events) = mpsc::channel();
    let (tx, events) = mpsc::channel();
    let lines = lines(64);
    let _running = Running::start(move |l| {
        let addr = l
            .listen(any(), Some(server), lines, Echo { events: server_tx })
            .expect("listen");
        let caller = Caller {
            greeting: b"hello over TLS",
            events: tx,
        };
        let name = "localhost".try_into().expect("name");
        l.connect_tls(addr, client, name, lines, caller)
            .expect("connect");
        vec![addr]
    });
    let seen = until_closed(&events);
    assert!(
        seen[0].starts_with("connected ") && seen[0] != "connected -",
        "{seen:?}"
    );
    assert_eq!(seen[1..], ["got hello over TLS", "closed Closed"]);
    let up = server_events.recv_timeout(WAIT).expect("server side");
    assert!(up.starts_with("up CN=alice "), "{up}");
}

#[test]
fn outgoing_tls_to_an_untrusted_server_is_reported() {
    // The server's certificates come from one CA, the client trusts another.
    let server_dir = cert_dir("framed-tls-srv", &[]);
    let client_dir = cert_dir("framed-tls-cli", &[]);
    let server = server_tls(&server_dir, &ClientAuth::None);
    let client = tls_client_config(&client_dir.join("ca.pem"), None, TLS_ANY);
    let (server_tx, _server_events) = mpsc::channel();
    let (tx, events) = mpsc::channel();
    let _running = Running::start(move |l| {
        let addr = l
            .listen(
                any(),
                Some(server),
                Framing::Raw,
                Echo { events: server_tx },
            )
            .expect("listen");
        let caller = Caller {
            greeting: b"never sent",
            events: tx,
        };
        let name = "localhost".try_into().expect("name");
        l.connect_tls(addr, client, name, Framing::Raw, caller)
            .expect("connect");
        vec![addr]
    });
    assert_eq!(events.recv_timeout(WAIT).expect("event"), "closed Tls");
}

/// On `flood`, queues 4 MB for the connection and closes it.
struct Flood {
    events: Sender<String>,
}

impl FramedHandler for Flood {
    fn on_message(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId, message: &[u8]) {
        if message == b"flood" {
            let chunk = vec![b'z'; 60_000];
            for _ in 0..70 {
                ctx.send(conn, &chunk);
            }
            ctx.close(conn);
        }
    }
    fn on_closed(&mut self, _ctx: &mut FramedContext<'_>, _conn: ConnId, reason: CloseReason) {
        let _ = self.events.send(format!("closed {reason:?}"));
    }
}

/// The connection layer's closing deadline holds for framed services too: a
/// connection closed with megabytes queued for a peer that never reads is
/// gone at the 2 s linger (before issue 9 it stayed until the peer closed).
#[test]
fn a_closed_connection_whose_peer_never_reads_goes_at_the_linger() {
    let (tx, rx) = mpsc::channel();
    let running = Running::start(move |l| {
        let framing = Framing::Delimited {
            delimiter: b'\n',
            max_len: 100_000,
        };
        vec![
            l.listen(any(), None, framing, Flood { events: tx })
                .expect("listen"),
        ]
    });
    let sock = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    sock.connect_timeout(&running.addrs[0].into(), WAIT)
        .expect("connect");
    let mut client: TcpStream = sock.into();
    client.write_all(b"flood\n").expect("write");
    let start = std::time::Instant::now();
    let closed = rx
        .recv_timeout(Duration::from_secs(6))
        .expect("closed in time");
    assert_eq!(closed, "closed Closed");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    drop(client);
}
