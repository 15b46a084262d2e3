//! The client library and the client commands over WebSocket (`ws://`,
//! `wss://`) against the real server binary's WebSocket listeners: a
//! library client on WebSocket chats with a plain-TCP client (publishes
//! both ways, one-to-one messages, a payload of several hundred KiB, text
//! and binary frames); `wss://` verifies the development CA the server made
//! (and a wrong CA is refused before anything is sent); `switchboard sub`
//! and `pub` take a `ws://` URL, and `stats`/`pub` a `wss://` one with a
//! client certificate (`--auth cert`); reconnecting after a graceful
//! shutdown restores subscriptions; a `ws://` URL aimed at the plain TCP port
//! fails with a clear error, not a hang.
//!
//! Every wait is bounded: the clients use short timeouts, and each expected
//! push is awaited for at most `WAIT`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use switchboard::client::ClientTls;
use switchboard::{Client, ClientConfig, ClientError, Push};

/// Longest wait for any one expected push or reply.
const WAIT: Duration = Duration::from_secs(5);

/// `serve` with plain TCP and the WebSocket listener(s) on free ports, no
/// plain TLS listener, plus `extra`.
fn serve_ws(wss: bool, extra: &[&str]) -> ServerProc {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "off",
        "--ws-listen",
        "127.0.0.1:0",
        "--wss-listen",
        if wss { "127.0.0.1:0" } else { "off" },
    ];
    args.extend_from_slice(extra);
    ServerProc::start_raw(&args)
}

/// The address of the listener the server logs as `<kind> listening on
/// ADDR` (`ws` or `wss`), waited for (bounded).
#[track_caller]
fn listener(srv: &ServerProc, kind: &str) -> SocketAddr {
    let marker = format!(" {kind} listening on ");
    let Some(line) = srv.wait_log(&marker, START_TIMEOUT) else {
        panic!(
            "no `{}ADDR` in the server log:\n{}",
            marker.trim_start(),
            srv.log_text()
        );
    };
    let at = line.find(&marker).map_or(0, |i| i + marker.len());
    let token = line[at..].split_whitespace().next().unwrap_or("");
    let token = token.trim_end_matches([',', '.', ';', ')']);
    token
        .parse()
        .unwrap_or_else(|e| panic!("cannot parse {token:?} in {line:?}: {e}"))
}

fn config(addr: String, user: &str) -> ClientConfig {
    let mut c = ClientConfig::new(addr, user);
    c.connect_timeout = WAIT;
    c.reply_timeout = WAIT;
    c
}

#[track_caller]
fn next_push(c: &Client) -> Push {
    c.recv(Some(WAIT))
        .unwrap_or_else(|e| panic!("no push within {WAIT:?}: {e}"))
}

fn published(sender: &str, groups: &[u32], payload: &[u8]) -> Push {
    Push::Published {
        sender: sender.into(),
        groups: groups.to_vec(),
        payload: bytes::Bytes::copy_from_slice(payload),
    }
}

/// `alice` (a library client, already connected over WebSocket) and `bob`
/// (a raw plain-TCP client of the tests' own) chat through `srv`.
fn chat_with_tcp_client(srv: &ServerProc, alice: &Client) {
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1");
    alice.subscribe(&[1]).expect("alice subscribes");

    // WebSocket to TCP: a publish, and a one-to-one message.
    alice
        .publish(&[1], b"hello from ws")
        .expect("alice publishes");
    assert_eq!(next_push(alice), published("alice", &[1], b"hello from ws"));
    let p = bob.push();
    assert!(p.is("PUBLISHED", &["alice", "1"]), "{p:?}");
    assert_eq!(p.payload, b"hello from ws");
    alice.send("bob", b"psst, bob").expect("alice sends");
    let m = bob.push();
    assert!(m.is("MESSAGE", &["alice"]), "{m:?}");
    assert_eq!(m.payload, b"psst, bob");

    // TCP to WebSocket: text, and bytes that are not UTF-8 (so a binary
    // WebSocket message), one-to-one too.
    bob.send_frame("PUBLISH", &["1"], b"hi from tcp");
    bob.expect_ack();
    let p = bob.push();
    assert!(p.is("PUBLISHED", &["bob", "1"]), "{p:?}");
    assert_eq!(next_push(alice), published("bob", &[1], b"hi from tcp"));
    let raw = [0xff, 0xfe, 0, b'\n', 0x80];
    bob.send_frame("PUBLISH", &["1"], &raw);
    bob.expect_ack();
    bob.push();
    assert_eq!(next_push(alice), published("bob", &[1], &raw));
    bob.send_frame("SEND", &["alice"], b"and back");
    bob.expect_ack();
    assert_eq!(
        next_push(alice),
        Push::Message {
            sender: "bob".into(),
            payload: bytes::Bytes::from_static(b"and back")
        }
    );

    // A payload far over one read or one TLS record, both ways.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    alice.send("bob", &big).expect("big send");
    let m = bob.push();
    assert!(
        m.is("MESSAGE", &["alice"]) && m.payload == big,
        "big to bob"
    );
    bob.send_frame("SEND", &["alice"], &big);
    bob.expect_ack();
    match next_push(alice) {
        Push::Message { sender, payload } => {
            assert_eq!(sender, "bob");
            assert!(payload == big, "big to alice");
        }
        other => panic!("{other:?}"),
    }

    let mut who = alice.who(Some(1)).expect("who");
    who.sort();
    assert_eq!(who, ["alice", "bob"]);
    alice.ping().expect("ping");
    alice.quit().expect("quit");
    // alice's session is gone: bob no longer finds her.
    wait_until(WAIT, || bob.result("WHO 0 1") == ["bob"]);
}

#[test]
fn library_over_ws_chats_with_a_tcp_client() {
    let srv = serve_ws(false, &["--group", "1=general"]);
    let ws = listener(&srv, "ws");
    let alice = Client::connect(config(format!("ws://{ws}/"), "alice"))
        .unwrap_or_else(|e| panic!("ws connect: {e}\n{}", srv.log_text()));
    chat_with_tcp_client(&srv, &alice);

    // Any path, and no path at all, upgrades as well.
    for url in [format!("ws://{ws}"), format!("ws://{ws}/chat?room=1")] {
        let c =
            Client::connect(config(url.clone(), "carol")).unwrap_or_else(|e| panic!("{url}: {e}"));
        c.ping().expect("ping");
        c.quit().expect("quit");
    }
}

#[test]
fn library_over_wss_verifies_the_dev_ca() {
    let srv = serve_ws(true, &["--group", "1=general"]);
    let wss = listener(&srv, "wss");
    // With no --cert/--key the server made a development CA in its directory.
    let ca: PathBuf = srv.cwd().join("certs").join("ca.pem");
    let url = format!("wss://localhost:{}/", wss.port());
    let mut c = config(url.clone(), "alice");
    c.tls = Some(ClientTls::from_ca_file(&ca).expect("the dev CA"));
    let alice = Client::connect(c).unwrap_or_else(|e| panic!("wss connect: {e}"));
    chat_with_tcp_client(&srv, &alice);

    // By address too (the dev certificate names 127.0.0.1).
    let mut c = config(format!("wss://{wss}"), "dave");
    c.tls = Some(ClientTls::from_ca_file(&ca).expect("the dev CA"));
    let dave = Client::connect(c).expect("wss by address");
    dave.ping().expect("ping");
    dave.quit().expect("quit");

    // Another CA: refused during the TLS handshake, before the upgrade and
    // the user name; the server never sees a session.
    let other = TempDir::new("other-ca");
    let out = run_bin(
        &["certs", path_str(other.path())],
        None,
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "switchboard certs: {}", out.stderr);
    let mut c = config(url, "mallory");
    c.tls = Some(ClientTls::from_ca_file(&other.join("ca.pem")).expect("other CA"));
    match Client::connect(c) {
        Err(ClientError::Tls(why)) => assert!(!why.is_empty()),
        other => panic!("wrong CA: {other:?}"),
    }
    let mut check = srv.login("check");
    assert!(!check.result("WHO 0").contains(&"mallory".to_string()));
}

#[test]
fn reconnects_over_ws_after_a_graceful_shutdown() {
    // A port of our own, so the second server listens where the first did.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let ws_listen = format!("127.0.0.1:{port}");
    let start = || {
        ServerProc::start_raw(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "off",
            "--ws-listen",
            &ws_listen,
            "--wss-listen",
            "off",
            "--group",
            "1=general",
        ])
    };
    let mut srv = start();
    let mut c = config(format!("ws://{ws_listen}/"), "alice");
    c.reconnect = Some(switchboard::client::Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    });
    let alice = Client::connect(c).expect("ws connect");
    alice.subscribe(&[1]).expect("subscribe");
    // SIGTERM: the server says goodbye (over WebSocket, a close frame).
    srv.signal("TERM");
    assert!(srv.wait_exit(EXIT_TIMEOUT).success(), "{}", srv.log_text());
    assert_eq!(next_push(&alice), Push::Disconnected);
    let srv = start();
    assert_eq!(next_push(&alice), Push::Reconnected);
    // The subscription came back with the new session.
    let mut bob = srv.login("bob");
    bob.send_frame("PUBLISH", &["1"], b"over ws again");
    bob.expect_ack();
    assert_eq!(next_push(&alice), published("bob", &[1], b"over ws again"));
    alice.quit().expect("quit");
}

#[test]
fn pub_and_sub_commands_take_a_ws_url() {
    let srv = serve_ws(false, &["--group", "1=general"]);
    let url = format!("ws://{}", listener(&srv, "ws"));
    let mut sub = Command::new(BIN)
        .args([
            "sub", "--user", "logger", "--group", "1", "--count", "3", &url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sub starts");
    let mut check = srv.login("check");
    wait_until(Duration::from_secs(10), || {
        check.result("WHO 0 1").iter().any(|u| u == "logger")
    });
    // The address positional, then by --addr with standard input.
    let out = run_bin(
        &[
            "pub",
            "--user",
            "sensor",
            "--group",
            "1",
            &url,
            "temperature 21.5",
        ],
        None,
        WAIT * 2,
    );
    assert!(out.status.success(), "pub: {}", out.stderr);
    let out = run_bin(
        &["pub", "--user", "sensor", "--group", "1", "--addr", &url],
        Some(b"tick 1\ntick 2\n"),
        WAIT * 2,
    );
    assert!(out.status.success(), "pub from stdin: {}", out.stderr);
    let status = wait_child(&mut sub, WAIT * 2).expect("wait for sub");
    let Some(status) = status else {
        kill_and_reap(&mut sub);
        panic!("sub did not exit after 3 messages");
    };
    let mut stdout = String::new();
    if let Some(mut o) = sub.stdout.take() {
        std::io::Read::read_to_string(&mut o, &mut stdout).expect("sub output");
    }
    assert!(status.success(), "sub: {status:?}");
    assert_eq!(stdout, "temperature 21.5\ntick 1\ntick 2\n");

    // A TLS flag with ws:// is refused, not guessed around.
    let out = run_bin(
        &["pub", "--user", "s", "--group", "1", "--tls", &url, "x"],
        None,
        WAIT,
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("use wss://"), "{}", out.stderr);
}

#[test]
fn a_ws_url_on_the_plain_port_is_a_clear_error() {
    let srv = ServerProc::start(&[]);
    let url = format!("ws://{}/", srv.addr);
    match Client::connect(config(url.clone(), "alice")) {
        Err(ClientError::Protocol(why)) => {
            assert!(why.contains("WebSocket"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let out = run_bin(
        &["pub", "--user", "s", "--group", "1", &url, "x"],
        None,
        WAIT * 2,
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("WebSocket"), "{}", out.stderr);
}

#[test]
fn cli_over_wss_with_a_client_certificate() {
    // `--auth cert`: the client certificate (given with --cert/--key, as
    // for tls://) is the login, over wss:// as over TLS.
    let certs = CertDir::new(&["alice"]);
    let mut extra: Vec<String> = certs.mutual_args("required");
    extra.extend(["--auth", "cert", "--group", "1=general"].map(String::from));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let srv = serve_ws(true, &extra);
    let url = format!("wss://localhost:{}/", listener(&srv, "wss").port());
    let (ca, cert, key) = (
        certs.arg("ca.pem"),
        certs.arg("alice.pem"),
        certs.arg("alice.key"),
    );
    let tls = ["--ca", &ca, "--cert", &cert, "--key", &key];
    let mut args = vec!["stats", "--user", "alice"];
    args.extend(tls);
    args.push(&url);
    let out = run_bin(&args, None, WAIT * 2);
    assert!(out.status.success(), "stats over wss: {}", out.stderr);
    assert!(out.stdout.contains("connections"), "{}", out.stdout);
    let mut args = vec!["pub", "--user", "alice", "--group", "1"];
    args.extend(tls);
    args.extend([url.as_str(), "signed"]);
    let out = run_bin(&args, None, WAIT * 2);
    assert!(out.status.success(), "pub over wss: {}", out.stderr);
    // Without the certificate the server refuses the handshake, and the
    // command says what is missing.
    let out = run_bin(
        &[
            "pub", "--user", "alice", "--group", "1", "--ca", &ca, &url, "x",
        ],
        None,
        WAIT * 2,
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("--cert and --key"), "{}", out.stderr);
}
