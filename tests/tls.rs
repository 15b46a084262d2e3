//! TLS (protocol.md sections 3 and 8, cli.md `serve` TLS flags and
//! `switchboard certs`): every command over TLS 1.3 and 1.2, large payloads
//! and long streams, mutual TLS with `--auth cert`, session resumption, the
//! login timeout covering the handshake, development certificates, start
//! errors, and bad input on the TLS port costing only its own connection.
//!
//! The TLS client is rustls (ring provider) from the tests' side; see
//! `TlsClient` in `common` for how it reuses the plain frame client.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use rustls::{HandshakeKind, ProtocolVersion};

/// How long a well-behaved client may wait for its PONG while others misbehave.
const PROMPT: Duration = Duration::from_secs(1);

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// TLS versions tested one at a time, with the name used in messages.
const EACH_VERSION: [(&[&rustls::SupportedProtocolVersion], &str); 2] =
    [(TLS13_ONLY, "1.3"), (TLS12_ONLY, "1.2")];

/// `serve` with plain and TLS listeners on ephemeral ports and no WebSocket.
const SERVE_TLS: [&str; 9] = [
    "serve",
    "--listen",
    "127.0.0.1:0",
    "--tls-listen",
    "127.0.0.1:0",
    "--ws-listen",
    "off",
    "--wss-listen",
    "off",
];

/// `start_tls` with `args` (certificate flags) plus `extra`.
#[track_caller]
fn start_tls_with(mut args: Vec<String>, extra: &[&str]) -> ServerProc {
    args.extend(extra.iter().map(|s| s.to_string()));
    ServerProc::start_tls(&strs(&args))
}

/// `start_tls` with the certificates of `certs` plus `extra`.
#[track_caller]
fn tls_server(certs: &CertDir, extra: &[&str]) -> ServerProc {
    start_tls_with(certs.server_args(), extra)
}

/// `start_tls` with mutual TLS (`--client-ca`, `--client-auth mode`) plus `extra`.
#[track_caller]
fn mutual_server(certs: &CertDir, mode: &str, extra: &[&str]) -> ServerProc {
    start_tls_with(certs.mutual_args(mode), extra)
}

#[track_caller]
fn check_hello(c: &mut Client, auth: &str) {
    let lines = c.result("HELLO 0");
    let m = hello_map(&lines);
    for (k, v) in [
        ("server", "switchboard"),
        ("protocol", "1"),
        ("auth", auth),
        ("max_payload", "1048576"),
    ] {
        assert_eq!(m.get(k).map(String::as_str), Some(v), "HELLO {lines:?}");
    }
    assert!(
        m.contains_key("version"),
        "HELLO without version: {lines:?}"
    );
}

/// Reads `c`'s next push and asserts it is `kind args`; `who` names `c`.
#[track_caller]
fn expect_push(c: &mut Client, who: &str, kind: &str, args: &[&str]) {
    let f = c.push();
    assert!(f.is(kind, args), "{who}: {f:?}");
}

/// `PING 0` answered within [`PROMPT`].
#[track_caller]
fn ping_promptly(c: &mut Client, context: &str) {
    let t = Instant::now();
    c.ping();
    let took = t.elapsed();
    assert!(
        took < PROMPT,
        "{}: PONG took {took:?} ({context}); a misbehaving connection must not hold others back",
        c.label
    );
}

/// Reads a raw socket until the server closes it (EOF or reset) or
/// `timeout` passes. Returns the bytes and, if it closed, when.
fn raw_read_to_close(sock: &mut TcpStream, timeout: Duration) -> (Vec<u8>, Option<Duration>) {
    let t0 = Instant::now();
    let deadline = t0 + timeout;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return (got, None);
        }
        let _ = sock.set_read_timeout(Some(deadline - now));
        match sock.read(&mut chunk) {
            Ok(0) => return (got, Some(t0.elapsed())),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (got, None);
            }
            Err(_) => return (got, Some(t0.elapsed())),
        }
    }
}

/// Asserts that what a raw (non-TLS or broken-TLS) peer got back before the
/// close is at most TLS alert records: never protocol frames in clear.
#[track_caller]
fn assert_only_alerts(got: &[u8], what: &str) {
    let mut rest = got;
    while !rest.is_empty() {
        assert!(
            rest.len() >= 5 && rest[0] == 0x15 && rest[1] == 0x03,
            "{what}: the server answered with something other than a TLS alert: {}",
            show_bytes(got)
        );
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        rest = &rest[(5 + len).min(rest.len())..];
    }
}

/// A real ClientHello as rustls sends it.
fn client_hello(config: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let mut conn = rustls::ClientConnection::new(Arc::clone(config), name).expect("client");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello)
            .expect("write ClientHello to a Vec");
    }
    assert!(
        hello.len() > 100 && hello[0] == 0x16,
        "unexpected ClientHello {}",
        show_bytes(&hello)
    );
    hello
}

#[track_caller]
fn connect_raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, READ_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let _ = s.set_write_timeout(Some(READ_TIMEOUT));
    s
}

/// Handshakes a raw TLS session, writes `commands` (ending in `PING 0`) and
/// asserts the answers are ACKs then the PONG; `what` names it in messages.
#[track_caller]
fn raw_tls_session(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    commands: &[u8],
    what: &str,
) -> (rustls::ClientConnection, TcpStream) {
    let (mut conn, mut sock) =
        tls_handshake(addr, config).unwrap_or_else(|e| panic!("{what}: {e}"));
    tls_write_all(&mut conn, &mut sock, commands).unwrap_or_else(|e| panic!("{what}: write: {e}"));
    let (got, end) = tls_read_until(&mut conn, &mut sock, READ_TIMEOUT, |b| {
        b.ends_with(b"PONG 0\n")
    });
    assert!(
        end.is_none() && got.starts_with(b"ACK "),
        "{what}: expected ACKs then PONG, got {} ({end:?})",
        show_bytes(&got)
    );
    (conn, sock)
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

// ---------------------------------------------------------------------------
// The protocol over TLS
// ---------------------------------------------------------------------------

#[test]
fn every_command_over_tls_with_a_plain_client_alongside() {
    let certs = CertDir::new(&[]);
    let srv = tls_server(&certs, &["--group", "1=general", "--group", "2=random"]);
    let config = certs.client_config(TLS_ANY);

    let mut alice = srv.tls_connect(&config, "alice (tls)");
    assert_eq!(
        alice.version,
        Some(ProtocolVersion::TLSv1_3),
        "TLS 1.3 should be preferred"
    );
    alice.expect_silence(Duration::from_millis(200));
    check_hello(&mut alice, "none");
    alice.err("GROUPS 0", "auth-required");
    alice.ping();
    alice.ack("USER 0 alice");
    check_hello(&mut alice, "none");
    let mut bob = srv.login("bob");

    assert_eq!(alice.result("GROUPS 0"), ["1,general", "2,random"]);
    alice.ack("WATCH 0 1");
    bob.ack("WATCH 0 1");
    bob.ack("SUBSCRIBE 0 1");
    expect_push(&mut alice, "alice", "JOINED", &["bob", "1"]);
    expect_push(&mut bob, "bob", "JOINED", &["bob", "1"]);
    alice.ack("SUBSCRIBE 0 1 2");
    expect_push(&mut alice, "alice", "JOINED", &["alice", "1"]);
    expect_push(&mut bob, "bob", "JOINED", &["alice", "1"]);

    // Plain → TLS and TLS → plain, publisher included when subscribed.
    bob.send_frame("PUBLISH", &["1"], b"from plain");
    bob.expect_ack();
    bob.expect_published("bob", &["1"], b"from plain");
    alice.expect_published("bob", &["1"], b"from plain");
    alice.send_frame("PUBLISH", &["1", "2"], b"from tls\n\0binary");
    alice.expect_ack();
    alice.expect_published("alice", &["1", "2"], b"from tls\n\0binary");
    bob.expect_published("alice", &["1", "2"], b"from tls\n\0binary");
    alice.err("SUBSCRIBE 0 3", "unknown-group");
    alice.send_frame("PUBLISH", &["3"], b"x");
    alice.expect_err("unknown-group");

    assert_eq!(alice.result("WHO 0"), ["alice", "bob"]);
    assert_eq!(alice.result("WHO 0 1"), ["alice", "bob"]);
    assert_eq!(alice.result("WHO 0 2"), ["alice"]);

    alice.send_frame("SEND", &["bob"], b"hi bob");
    alice.expect_ack();
    bob.expect_message("alice", b"hi bob");
    bob.send_frame("SEND", &["alice"], b"hi alice");
    bob.expect_ack();
    alice.expect_message("bob", b"hi alice");
    alice.send_frame("SEND", &["nobody"], b"?");
    alice.expect_err("no-such-user");

    bob.ack("UNSUBSCRIBE 0 1");
    expect_push(&mut alice, "alice", "PARTED", &["bob", "1"]);
    expect_push(&mut bob, "bob", "PARTED", &["bob", "1"]);
    alice.ack("UNWATCH 0 1");
    bob.ack("SUBSCRIBE 0 1");
    expect_push(&mut bob, "bob", "JOINED", &["bob", "1"]);
    alice.expect_quiet("alice no longer watches group 1");

    // An unknown command and bad arguments leave the session going.
    alice.send_frame("FROB", &[], b"payload");
    alice.expect_err("unknown-command");
    alice.err("SUBSCRIBE 0", "bad-args");
    alice.ping();

    // QUIT: ACK, then close_notify; bob (watching group 1) sees alice part.
    alice.ack("QUIT 0");
    alice.expect_close_notify();
    expect_push(&mut bob, "bob", "PARTED", &["alice", "1"]);
    assert_eq!(bob.result("WHO 0"), ["bob"]);

    // A bad frame over TLS: ERR bad-frame, then the session is closed.
    let mut carol = srv.tls_login(&config, "carol");
    carol.send(b"PUBLISH x 1\n");
    carol.expect_err("bad-frame");
    carol.expect_close_notify();
    bob.ping();
}

#[test]
fn tls_12_and_tls_13_sessions() {
    let certs = CertDir::new(&[]);
    let srv = tls_server(&certs, &["--group", "1=general"]);
    let mut plain = srv.login("plain");
    plain.ack("SUBSCRIBE 0 1");
    for (versions, want, user) in [
        (TLS12_ONLY, ProtocolVersion::TLSv1_2, "tls12"),
        (TLS13_ONLY, ProtocolVersion::TLSv1_3, "tls13"),
    ] {
        let config = certs.client_config(versions);
        let user = user.to_string();
        let mut c = srv.tls_connect(&config, &user);
        assert_eq!(c.version, Some(want), "{user}: negotiated version");
        assert_eq!(c.handshake_kind, Some(HandshakeKind::Full), "{user}");
        c.ack(&format!("USER 0 {user}"));
        c.ack("SUBSCRIBE 0 1");
        c.send_frame("PUBLISH", &["1"], user.as_bytes());
        c.expect_ack();
        c.expect_published(&user, &["1"], user.as_bytes());
        plain.expect_published(&user, &["1"], user.as_bytes());
        c.send_frame("SEND", &[&user], b"to myself");
        c.expect_ack();
        c.expect_message(&user, b"to myself");
        plain.send_frame("SEND", &[&user], b"from plain");
        plain.expect_ack();
        c.expect_message("plain", b"from plain");
        assert_eq!(c.result("WHO 0 1"), {
            let mut v = vec!["plain".to_string(), user.clone()];
            v.sort();
            v
        });
        c.ack("QUIT 0");
        c.expect_close_notify();
    }
}

#[test]
fn one_mib_payloads_over_tls() {
    const MIB: usize = 1 << 20;
    let certs = CertDir::new(&[]);
    let srv = tls_server(&certs, &["--group", "1=general"]);
    let c13 = certs.client_config(TLS13_ONLY);
    let c12 = certs.client_config(TLS12_ONLY);
    let mut publisher = srv.tls_login(&c13, "publisher");
    let mut sub12 = srv.tls_login(&c12, "sub12");
    let mut plain = srv.login("plain");
    sub12.ack("SUBSCRIBE 0 1");
    plain.ack("SUBSCRIBE 0 1");

    let mut rng = Rng::new(7);
    let big = random_bytes(&mut rng, MIB);
    publisher.send_frame("PUBLISH", &["1"], &big);
    publisher.expect_ack();
    sub12.expect_published("publisher", &["1"], &big);
    plain.expect_published("publisher", &["1"], &big);

    // And back: plain → TLS 1.2 → TLS 1.3, one-to-one.
    let other = random_bytes(&mut rng, MIB);
    plain.send_frame("SEND", &["sub12"], &other);
    plain.expect_ack();
    sub12.expect_message("plain", &other);
    sub12.send_frame("SEND", &["publisher"], &other);
    sub12.expect_ack();
    publisher.expect_message("sub12", &other);

    // One byte over the limit: ERR too-large, then the session is closed.
    publisher.send(format!("PUBLISH {} 1\n", MIB + 1).as_bytes());
    publisher.expect_err("too-large");
    publisher.expect_close_notify();
    sub12.expect_quiet("nothing of the refused message");
    plain.ping();
}

#[test]
fn a_thousand_messages_in_order_over_tls() {
    const N: usize = 1000;
    let certs = CertDir::new(&[]);
    let srv = tls_server(&certs, &["--group", "1=general"]);
    let config = certs.client_config(TLS_ANY);
    let mut publisher = srv.tls_login(&config, "publisher");
    let mut sub = srv.tls_login(&config, "sub");
    sub.ack("SUBSCRIBE 0 1");
    let mut batch = Vec::new();
    for i in 0..N {
        let payload = format!("message {i:04} {}", "x".repeat(i % 200));
        batch.extend_from_slice(&frame("PUBLISH", &["1"], payload.as_bytes()));
    }
    publisher.send(&batch);
    for i in 0..N {
        publisher.label = format!("publisher, ACK {i}");
        publisher.expect_ack();
    }
    for i in 0..N {
        let payload = format!("message {i:04} {}", "x".repeat(i % 200));
        sub.label = format!("sub, message {i}");
        sub.expect_published("publisher", &["1"], payload.as_bytes());
    }
    sub.expect_quiet("each message exactly once");
}

// ---------------------------------------------------------------------------
// Mutual TLS and --auth cert
// ---------------------------------------------------------------------------

#[test]
fn auth_cert_logs_in_by_certificate_cn() {
    let certs = CertDir::new(&["alice", "bob"]);
    // --client-auth defaults to required with --auth cert.
    let ca = certs.arg("ca.pem");
    let srv = start_tls_with(
        certs.server_args(),
        &["--client-ca", &ca, "--auth", "cert", "--group", "1=general"],
    );

    let mut alice = srv.tls_connect(&certs.client_config_as("alice", TLS13_ONLY), "alice");
    assert_eq!(alice.version, Some(ProtocolVersion::TLSv1_3));
    // Logged in by the handshake: no USER needed.
    alice.ack("SUBSCRIBE 0 1");
    check_hello(&mut alice, "cert");
    assert_eq!(alice.result("WHO 0"), ["alice"]);
    alice.ack("USER 0 alice");
    alice.err("USER 0 bob", "auth-failed");
    // Still logged in, still alice.
    alice.ping();
    assert_eq!(alice.result("WHO 0"), ["alice"]);

    let mut bob = srv.tls_connect(&certs.client_config_as("bob", TLS12_ONLY), "bob");
    assert_eq!(bob.version, Some(ProtocolVersion::TLSv1_2));
    bob.send_frame("SEND", &["alice"], b"hello from bob");
    bob.expect_ack();
    alice.expect_message("bob", b"hello from bob");
    bob.send_frame("PUBLISH", &["1"], b"to the group");
    bob.expect_ack();
    alice.expect_published("bob", &["1"], b"to the group");
    assert_eq!(bob.result("WHO 0"), ["alice", "bob"]);

    // Two sessions of the same certificate are two sessions of one user.
    let mut alice2 = srv.tls_connect(&certs.client_config_as("alice", TLS_ANY), "alice#2");
    alice2.send_frame("SEND", &["alice"], b"me");
    alice2.expect_ack();
    alice2.expect_message("alice", b"me");
    alice.expect_message("alice", b"me");

    // Required: no client certificate, no session.
    for (versions, v) in EACH_VERSION {
        let how = expect_tls_refused(
            srv.tls_addr(),
            &certs.client_config(versions),
            "no client certificate, --client-auth required",
        );
        eprintln!("no client certificate (TLS {v}): {how}");
    }
    alice.ping();
}

/// A client with data ready sends it right behind its `Finished`, so the
/// server reads the end of the handshake and the first command at once. The
/// session is logged in when the handshake completes, which is before that
/// command: it must not get `ERR auth-required`.
#[test]
fn auth_cert_first_command_in_the_same_read_as_the_finished() {
    let certs = CertDir::new(&["alice"]);
    let srv = mutual_server(
        &certs,
        "required",
        &["--auth", "cert", "--group", "1=general"],
    );
    let first = b"SUBSCRIBE 0 1\nWHO 0\n";
    let mut report = Vec::new();
    let mut failed = false;
    for (versions, v) in EACH_VERSION {
        let config = certs.client_config_as("alice", versions);
        // TLS 1.3 full handshake: the client's Finished is the last flight.
        // TLS 1.2: it is last only in a resumed (abbreviated) handshake.
        for attempt in ["first", "second"] {
            let label = format!("alice, TLS {v}, {attempt} connection");
            let mut c = TlsClient::connect_then(srv.tls_addr(), &config, &label, first);
            let replies = [c.reply(), c.reply()];
            let ok = replies[0].is("ACK", &[])
                && replies[1].is("RESULT", &[])
                && replies[1].payload == b"alice\n";
            failed |= !ok;
            report.push(format!(
                "{label} ({:?} handshake): {} -> {replies:?}",
                c.handshake_kind,
                if ok { "ok" } else { "WRONG" }
            ));
            c.ack("USER 0 alice");
            c.ack("QUIT 0");
            c.expect_close_notify();
        }
    }
    assert!(
        !failed,
        "`SUBSCRIBE 0 1` + `WHO 0` sent with the Finished should get ACK and RESULT alice:\n{}",
        report.join("\n")
    );
}

#[test]
fn auth_cert_without_a_certificate_cannot_log_in() {
    let certs = CertDir::new(&["alice"]);
    let srv = mutual_server(
        &certs,
        "optional",
        &["--auth", "cert", "--group", "1=general"],
    );

    // Optional: a client with a certificate is logged in by it...
    let mut alice = srv.tls_connect(&certs.client_config_as("alice", TLS_ANY), "alice");
    alice.ack("SUBSCRIBE 0 1");

    // ...one without gets through the handshake but cannot log in.
    let mut anon = srv.tls_connect(&certs.client_config(TLS_ANY), "anon (tls, no cert)");
    check_hello(&mut anon, "cert");
    anon.err("SUBSCRIBE 0 1", "auth-required");
    anon.err("USER 0 x", "auth-failed");
    anon.expect_close_notify();

    let mut anon12 = srv.tls_connect(&certs.client_config(TLS12_ONLY), "anon (tls 1.2)");
    anon12.err("USER 0 alice", "auth-failed");
    anon12.expect_closed();

    // Plain TCP in cert mode: nothing can log in.
    let mut plain = srv.connect();
    check_hello(&mut plain, "cert");
    plain.err("USER 0 x", "auth-failed");
    plain.expect_closed();
    let mut plain2 = srv.connect();
    plain2.err("USER 0 alice", "auth-failed");
    plain2.expect_closed();

    assert_eq!(alice.result("WHO 0"), ["alice"]);
}

#[test]
fn client_certificate_from_an_untrusted_ca_is_refused() {
    let trusted = CertDir::new(&["alice"]);
    let other = CertDir::new(&["alice", "mallory"]);
    for mode in ["required", "optional"] {
        let srv = mutual_server(&trusted, mode, &["--auth", "cert"]);
        let mut good = srv.tls_connect(&trusted.client_config_as("alice", TLS_ANY), "good");
        good.ping();
        for (versions, v) in EACH_VERSION {
            // Trusts the right server CA, but presents a certificate of another CA.
            let mallory = (other.file("mallory.pem"), other.file("mallory.key"));
            let how = refused_cert(&srv, &trusted, &mallory, versions, "untrusted client CA");
            eprintln!("untrusted client CA, --client-auth {mode}, TLS {v}: {how}");
            // Even with a CN that exists.
            let alice = (other.file("alice.pem"), other.file("alice.key"));
            let what = "untrusted client CA, CN=alice";
            refused_cert(&srv, &trusted, &alice, versions, what);
            ping_promptly(&mut good, "after a refused client certificate");
        }
        assert_eq!(good.result("WHO 0"), ["alice"]);
    }
}

/// `expect_tls_refused` for a client trusting `certs`' CA and presenting
/// `client` (cert, key) over `versions`; returns how it was refused.
#[track_caller]
fn refused_cert(
    srv: &ServerProc,
    certs: &CertDir,
    client: &(PathBuf, PathBuf),
    versions: &[&'static rustls::SupportedProtocolVersion],
    what: &str,
) -> String {
    let config = tls_client_config(&certs.ca(), Some((&client.0, &client.1)), versions);
    expect_tls_refused(srv.tls_addr(), &config, what)
}

/// Writes a certificate issued by `certs`' CA for `name`, valid from
/// `not_before` to `not_after`; returns (cert, key) paths.
#[track_caller]
fn issue(
    certs: &CertDir,
    dir: &TempDir,
    name: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> (PathBuf, PathBuf) {
    let ca_pem = std::fs::read_to_string(certs.file("ca.pem")).expect("read ca.pem");
    let ca_key = std::fs::read_to_string(certs.file("ca.key")).expect("read ca.key");
    let (cert, key) =
        switchboard::certs::issue_client_cert(&ca_pem, &ca_key, name, not_before, not_after)
            .unwrap_or_else(|e| panic!("issue_client_cert {name}: {e}"));
    let tag = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let cert_path = dir.join(&format!("{name}-{tag}.pem"));
    let key_path = dir.join(&format!("{name}-{tag}.key"));
    std::fs::write(&cert_path, cert).expect("write cert");
    std::fs::write(&key_path, key).expect("write key");
    (cert_path, key_path)
}

#[test]
fn expired_or_not_yet_valid_client_certificates_are_refused() {
    const DAY: Duration = Duration::from_secs(86_400);
    let certs = CertDir::new(&[]);
    let dir = TempDir::new("issued");
    let srv = mutual_server(&certs, "required", &["--auth", "cert"]);
    let now = SystemTime::now();

    // Control: a currently valid certificate from the same function works.
    let (cert, key) = issue(&certs, &dir, "valid", now - DAY, now + DAY);
    let mut valid = TlsClient::connect(
        srv.tls_addr(),
        &tls_client_config(&certs.ca(), Some((&cert, &key)), TLS_ANY),
        "valid",
    );
    assert_eq!(valid.result("WHO 0"), ["valid"]);

    let expired = issue(&certs, &dir, "expired", now - 10 * DAY, now - DAY);
    let future = issue(&certs, &dir, "future", now + DAY, now + 10 * DAY);
    for (versions, v) in EACH_VERSION {
        let what = "expired client certificate";
        let how = refused_cert(&srv, &certs, &expired, versions, what);
        eprintln!("expired client certificate, TLS {v}: {how}");
        let what = "not yet valid client certificate";
        let how = refused_cert(&srv, &certs, &future, versions, what);
        eprintln!("not-yet-valid client certificate, TLS {v}: {how}");
        ping_promptly(&mut valid, "after a refused client certificate");
    }
    assert_eq!(valid.result("WHO 0"), ["valid"]);
}

/// The server picks the cipher suite by its own order, SHA-256 suites first
/// (cheaper key schedules: docs/benchmarks.md), even from a client that
/// lists AES-256-GCM-SHA384 first, as rustls's defaults do; a client that
/// offers only a SHA-384 suite still gets it.
#[test]
fn server_prefers_sha256_suites_and_still_speaks_sha384() {
    use rustls::CipherSuite;
    let certs = CertDir::new(&[]);
    let srv = tls_server(&certs, &[]);
    for (versions, want) in [
        (TLS13_ONLY, CipherSuite::TLS13_AES_128_GCM_SHA256),
        (
            TLS12_ONLY,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
    ] {
        let config = certs.client_config(versions);
        assert!(
            config.crypto_provider().cipher_suites[0]
                .suite()
                .as_str()
                .is_some_and(|s| s.contains("SHA384")),
            "the client under test should prefer a SHA-384 suite"
        );
        let mut c = srv.tls_connect(&config, "default client");
        assert_eq!(c.cipher_suite, Some(want));
        c.ping();
    }
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| s.suite() == CipherSuite::TLS13_AES_256_GCM_SHA384);
    let roots = switchboard::certs::load_roots(&certs.ca()).expect("CA");
    let only_384 = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_protocol_versions(TLS13_ONLY)
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut c = srv.tls_connect(&only_384, "SHA-384 only");
    assert_eq!(c.cipher_suite, Some(CipherSuite::TLS13_AES_256_GCM_SHA384));
    c.ping();
}

// ---------------------------------------------------------------------------
// Session resumption
// ---------------------------------------------------------------------------

#[test]
fn sessions_resume() {
    let certs = CertDir::new(&[]);
    let srv = tls_server(&certs, &[]);
    for (versions, want) in [
        (TLS13_ONLY, ProtocolVersion::TLSv1_3),
        (TLS12_ONLY, ProtocolVersion::TLSv1_2),
    ] {
        let config = certs.client_config(versions);
        let mut first = srv.tls_connect(&config, "first");
        assert_eq!(first.handshake_kind, Some(HandshakeKind::Full));
        // A round trip, so TLS 1.3 session tickets have arrived.
        first.ack("USER 0 first");
        first.ack("QUIT 0");
        first.expect_close_notify();
        let mut second = srv.tls_connect(&config, "second");
        assert_eq!(second.version, Some(want));
        assert_eq!(
            second.handshake_kind,
            Some(HandshakeKind::Resumed),
            "{want:?}: a second connection with the same client config should resume"
        );
        second.ack("USER 0 second");
        second.ping();
    }
}

#[test]
fn resumed_mutual_tls_session_is_logged_in_by_cn() {
    let certs = CertDir::new(&["alice"]);
    let srv = mutual_server(&certs, "required", &["--auth", "cert"]);
    for versions in [TLS13_ONLY, TLS12_ONLY] {
        let config = certs.client_config_as("alice", versions);
        let mut first = srv.tls_connect(&config, "alice (full)");
        assert_eq!(first.result("WHO 0"), ["alice"]);
        first.ack("QUIT 0");
        first.expect_close_notify();
        let mut second = srv.tls_connect(&config, "alice (resumed)");
        assert_eq!(second.handshake_kind, Some(HandshakeKind::Resumed));
        assert_eq!(
            second.result("WHO 0"),
            ["alice"],
            "a resumed session should be logged in by the certificate of the session it resumes"
        );
        second.ack("USER 0 alice");
        second.ack("QUIT 0");
        second.expect_close_notify();
    }
}

// ---------------------------------------------------------------------------
// Login timeout
// ---------------------------------------------------------------------------

#[test]
fn login_timeout_covers_a_stalled_handshake() {
    let certs = CertDir::new(&[]);
    let srv = tls_server(&certs, &["--login-timeout", "1"]);
    let config = certs.client_config(TLS_ANY);
    let addr = srv.tls_addr();

    let mut good = srv.tls_login(&config, "good");
    let t0 = Instant::now();
    let mut silent = connect_raw(addr);
    let mut half = connect_raw(addr);
    let hello = client_hello(&config);
    half.write_all(&hello[..hello.len() / 2])
        .expect("write half a ClientHello");
    let mut no_user = srv.tls_connect(&config, "handshake done, no USER");

    let mut closed = Vec::new();
    for (what, sock) in [
        ("no ClientHello", &mut silent),
        ("half a ClientHello", &mut half),
    ] {
        let (got, when) = raw_read_to_close(sock, Duration::from_secs(5));
        let when = when.map(|_| t0.elapsed());
        assert!(
            when.is_some_and(|w| w < Duration::from_secs(3)),
            "{what}: with --login-timeout 1 the server should close within ~3 s; closed: {when:?}, got {}",
            show_bytes(&got)
        );
        assert_only_alerts(&got, what);
        closed.push((what, when));
    }
    let frames = no_user.drain_until_closed(Duration::from_secs(5));
    let when = t0.elapsed();
    assert!(
        frames.iter().all(|f| f.is("ERR", &["timeout"])),
        "no USER: only `ERR timeout` may come before the close, got {frames:?}"
    );
    assert!(
        when < Duration::from_secs(3),
        "no USER: closed after {when:?}"
    );
    for (what, when) in closed {
        let when = when.unwrap_or_default();
        assert!(
            when >= Duration::from_millis(800),
            "{what}: closed after {when:?}, before the 1 s login timeout"
        );
    }
    // The logged-in session is not affected by the timeout.
    ping_promptly(&mut good, "after the login timeout closed others");
}

// ---------------------------------------------------------------------------
// Bad input on the TLS port
// ---------------------------------------------------------------------------

#[test]
fn plain_text_on_the_tls_port_costs_only_its_connection() {
    let certs = CertDir::new(&[]);
    let srv = tls_server(&certs, &[]);
    let mut good = srv.tls_login(&certs.client_config(TLS_ANY), "good");
    for line in [
        &b"USER 0 x\n"[..],
        b"HELLO 0\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ] {
        let mut sock = connect_raw(srv.tls_addr());
        sock.write_all(line).expect("write plain text");
        let (got, when) = raw_read_to_close(&mut sock, READ_TIMEOUT);
        assert!(
            when.is_some(),
            "plain {} on the TLS port: the server should close the connection, got {}",
            show_bytes(line),
            show_bytes(&got)
        );
        assert_only_alerts(&got, "plain text on the TLS port");
        ping_promptly(&mut good, "after plain text on the TLS port");
    }
    let line = srv.wait_log("TLS error", READ_TIMEOUT);
    assert!(
        line.is_some(),
        "the server should log why it closed the connection (a line with `TLS error`)\nlog:\n{}",
        srv.log_text()
    );
    eprintln!("log line: {}", line.unwrap_or_default());
}

#[test]
fn garbage_during_the_handshake_costs_only_its_connection() {
    let certs = CertDir::new(&[]);
    let mut srv = tls_server(&certs, &[]);
    let config = certs.client_config(TLS_ANY);
    let mut good = srv.tls_login(&config, "good");
    let mut rng = Rng::new(42);
    let hello = client_hello(&config);

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    cases.push(("4 KiB of random bytes", random_bytes(&mut rng, 4096)));
    let mut rec = vec![0x16, 0x03, 0x01, 0x01, 0x00];
    rec.extend(random_bytes(&mut rng, 256));
    cases.push(("a handshake record of random bytes", rec));
    let mut corrupt = hello.clone();
    for b in corrupt.iter_mut().skip(9).step_by(7) {
        *b ^= 0x5a;
    }
    cases.push(("a corrupted ClientHello", corrupt));
    let mut tail = hello.clone();
    tail.extend(random_bytes(&mut rng, 2048));
    cases.push(("a ClientHello followed by random bytes", tail));
    cases.push((
        "a record header claiming 16 MiB",
        vec![0x16, 0x03, 0x03, 0xff, 0xff, 0x01, 0xff, 0xff, 0xff],
    ));

    for (what, bytes) in &cases {
        let mut sock = connect_raw(srv.tls_addr());
        // The server may close before taking it all.
        let _ = sock.write_all(bytes);
        let (got, when) = raw_read_to_close(&mut sock, READ_TIMEOUT);
        // Whatever handshake records a valid ClientHello earned, the
        // connection must end.
        assert!(
            when.is_some(),
            "{what}: the server should close the connection within {READ_TIMEOUT:?}, got {}",
            show_bytes(&got)
        );
        ping_promptly(&mut good, what);
    }
    srv.assert_running();
    // A new client still gets in.
    let mut after = srv.tls_login(&config, "after");
    after.ping();
}

#[test]
fn garbage_after_the_handshake_costs_only_its_connection() {
    let certs = CertDir::new(&[]);
    let srv = tls_server(&certs, &[]);
    let mut good = srv.tls_login(&certs.client_config(TLS_ANY), "good");
    let mut rng = Rng::new(99);
    for (versions, v) in EACH_VERSION {
        let config = certs.client_config(versions);
        let junk_cases: [(&str, Vec<u8>); 2] = [
            ("random bytes", random_bytes(&mut rng, 1024)),
            ("an application-data record with a bad MAC", {
                let mut r = vec![0x17, 0x03, 0x03, 0x00, 0x40];
                r.extend(random_bytes(&mut rng, 64));
                r
            }),
        ];
        for (what, junk) in junk_cases {
            let commands = b"USER 0 mallory\nPING 0\n";
            let (mut conn, mut sock) =
                raw_tls_session(srv.tls_addr(), &config, commands, &format!("TLS {v}"));
            assert_eq!(good.result("WHO 0"), ["good", "mallory"]);
            // Junk straight onto the socket, under the TLS session.
            sock.write_all(&junk).expect("write junk");
            let (got, end) = tls_read_to_end(&mut conn, &mut sock, READ_TIMEOUT);
            assert!(
                got.is_empty() && end != TlsEnd::Timeout,
                "TLS {v}, {what}: the server should end the session, got {} then {end:?}",
                show_bytes(&got)
            );
            eprintln!("TLS {v}, {what}: session ended with {end:?}");
            ping_promptly(&mut good, what);
            assert!(
                wait_until(READ_TIMEOUT, || good.result("WHO 0") == ["good"]),
                "TLS {v}, {what}: mallory's session should be gone"
            );
        }
    }
    assert!(
        srv.wait_log("TLS error", READ_TIMEOUT).is_some(),
        "the server should log the TLS error\nlog:\n{}",
        srv.log_text()
    );
}

#[test]
fn tls_slow_consumer_is_closed_and_holds_back_nobody() {
    const COUNT: usize = 300;
    const SIZE: usize = 60_000;
    let certs = CertDir::new(&[]);
    let srv = tls_server(&certs, &["--max-pending", "65536", "--group", "1=general"]);
    let config = certs.client_config(TLS_ANY);

    // The slow one: a raw TLS session that subscribes, then never reads.
    let commands = b"USER 0 slow\nSUBSCRIBE 0 1\nPING 0\n";
    let (slow_conn, slow_sock) = raw_tls_session(srv.tls_addr(), &config, commands, "slow");

    let mut fast = srv.tls_login(&config, "fast");
    fast.ack("SUBSCRIBE 0 1");
    let reader = read_paced(fast, COUNT, SIZE);

    let mut publisher = srv.tls_login(&config, "publisher");
    // Keep the reading subscriber connected to the end (WHO below).
    let _fast = publish_to_paced_reader(
        &mut publisher,
        reader,
        (COUNT, SIZE),
        Duration::from_secs(30),
        "reading TLS subscriber",
    );

    // Now read what the slow one got: an in-order prefix, maybe a final
    // ERR slow-consumer, then the end of the session.
    let mut slow = TlsClient::from_conn(slow_conn, slow_sock, "slow");
    let frames = slow.drain_until_closed(Duration::from_secs(10));
    let next = assert_slow_consumer_prefix(&frames, SIZE, COUNT);
    eprintln!(
        "slow TLS subscriber: {next} of {COUNT} messages, then {:?}",
        slow.tls_end()
    );
    publisher.label = String::from("publisher");
    publisher.ping();
    assert_eq!(publisher.result("WHO 0 1"), ["fast"]);
}

// ---------------------------------------------------------------------------
// Development certificates and `switchboard certs`
// ---------------------------------------------------------------------------

fn read_files(dir: &Path, names: &[&str]) -> Vec<Vec<u8>> {
    names
        .iter()
        .map(|n| {
            std::fs::read(dir.join(n))
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.join(n).display()))
        })
        .collect()
}

#[test]
fn development_certificates_are_made_on_first_start_then_reused() {
    const FILES: [&str; 4] = ["ca.pem", "ca.key", "server.pem", "server.key"];
    let srv = ServerProc::start_in(TempDir::new("devcerts"), &SERVE_TLS);
    let certs_dir = srv.cwd().join("certs");
    let ca = certs_dir.join("ca.pem");
    assert!(ca.exists(), "no {} after the first start", ca.display());
    assert!(
        srv.wait_log("clients should trust certs/ca.pem", READ_TIMEOUT)
            .is_some(),
        "the server should log which CA file clients should trust\nlog:\n{}",
        srv.log_text()
    );
    let config = tls_client_config(&ca, None, TLS_ANY);
    let mut c = srv.tls_login(&config, "alice");
    c.ping();
    // The certificate is valid for the IP address too.
    let (_conn, _sock) = tls_handshake_named(srv.tls_addr(), &config, "127.0.0.1")
        .unwrap_or_else(|e| panic!("verifying the dev certificate as 127.0.0.1: {e}"));
    let before = read_files(&certs_dir, &FILES);
    drop(c);

    let cwd = srv.stop();
    let srv = ServerProc::start_in(cwd, &SERVE_TLS);
    let mut c = srv.tls_login(&config, "alice");
    c.ping();
    assert!(
        srv.wait_log("clients should trust certs/ca.pem", READ_TIMEOUT)
            .is_some(),
        "log:\n{}",
        srv.log_text()
    );
    let after = read_files(&certs_dir, &FILES);
    for (i, name) in FILES.iter().enumerate() {
        assert!(
            before[i] == after[i],
            "certs/{name} changed on the second start: it should be reused"
        );
    }
}

#[test]
fn certs_command_writes_reuses_and_refuses_to_overwrite() {
    let dir = TempDir::new("certscmd");
    let d = dir.join("pki");
    let out = certs_cmd(&d, &["alice", "bob"], false);
    assert!(out.status.success(), "certs failed: {}", out.stderr);
    for f in [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "alice.pem",
        "alice.key",
        "bob.pem",
        "bob.key",
    ] {
        assert!(d.join(f).is_file(), "{f} not written");
    }
    for name in ["alice", "bob"] {
        let chain = switchboard::certs::load_certs(&d.join(format!("{name}.pem")))
            .unwrap_or_else(|e| panic!("{e}"));
        let subject = switchboard::certs::subject_of(&chain[0]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(subject.cn.as_deref(), Some(name), "{name}.pem subject");
    }
    // Files that a refused run or a new client must leave alone.
    const KEPT: [&str; 4] = ["ca.pem", "ca.key", "server.pem", "alice.pem"];
    let before = read_files(&d, &KEPT);

    // No overwriting without --force; the message names the file.
    let out = certs_cmd(&d, &["alice"], false);
    assert!(
        !out.status.success(),
        "certs over existing files should fail\nstderr:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("alice.pem"),
        "the error should name the file in the way:\n{}",
        out.stderr
    );
    assert!(
        read_files(&d, &KEPT) == before,
        "a refused run changed files"
    );

    // Another client later: same CA, server files untouched.
    let out = certs_cmd(&d, &["carol"], false);
    assert!(out.status.success(), "certs --client carol: {}", out.stderr);
    assert!(
        read_files(&d, &KEPT) == before,
        "adding a client changed the CA, the server certificate or alice's"
    );

    // The server certificate is for localhost and 127.0.0.1, and every
    // client certificate (carol's too) chains to the one CA.
    let (pem, key, ca) = (d.join("server.pem"), d.join("server.key"), d.join("ca.pem"));
    let args = [
        "--cert",
        path_str(&pem),
        "--key",
        path_str(&key),
        "--client-ca",
        path_str(&ca),
        "--auth",
        "cert",
    ];
    let srv = ServerProc::start_tls(&args);
    for name in ["alice", "bob", "carol"] {
        let cert = d.join(format!("{name}.pem"));
        let key = d.join(format!("{name}.key"));
        let config = tls_client_config(&ca, Some((&cert, &key)), TLS_ANY);
        let mut c = srv.tls_connect(&config, name);
        assert!(c.result("WHO 0").contains(&name.to_string()));
        let (_conn, _sock) = tls_handshake_named(srv.tls_addr(), &config, "127.0.0.1")
            .unwrap_or_else(|e| panic!("server certificate as 127.0.0.1: {e}"));
    }
    drop(srv);

    // --force makes a new CA.
    let out = certs_cmd(&d, &["alice"], true);
    assert!(out.status.success(), "certs --force: {}", out.stderr);
    let now = read_files(&d, &["ca.pem"]);
    assert!(now[0] != before[0], "--force should make a new CA");
}

// ---------------------------------------------------------------------------
// Start errors
// ---------------------------------------------------------------------------

/// `serve` with a TLS listener and `extra`; asserts it fails to start with a
/// message that mentions every one of `needles`.
#[track_caller]
fn tls_start_fails(extra: &[&str], needles: &[&str]) -> String {
    let mut args = SERVE_TLS.to_vec();
    args.extend_from_slice(extra);
    let out = expect_start_failure(&args);
    let lines = out.stderr_lines();
    let hit = lines.iter().find(|l| needles.iter().all(|n| l.contains(n)));
    assert!(
        hit.is_some(),
        "`switchboard {}`: one stderr line should say {needles:?}; stderr:\n{}",
        args.join(" "),
        out.stderr
    );
    hit.map(|s| s.to_string()).unwrap_or_default()
}

#[test]
fn tls_start_errors() {
    let a = CertDir::new(&[]);
    let b = CertDir::new(&[]);
    let dir = TempDir::new("bad-tls");
    let missing = dir.join("no-such.pem");
    let missing = path_str(&missing);
    let (a_pem, a_key, a_ca) = (a.arg("server.pem"), a.arg("server.key"), a.arg("ca.pem"));
    let b_key = b.arg("server.key");

    let empty = dir.join("empty.pem");
    std::fs::write(&empty, b"").expect("write");
    let junk = dir.join("junk.pem");
    std::fs::write(
        &junk,
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let (empty, junk) = (path_str(&empty), path_str(&junk));
    // (flags, what one stderr line must mention)
    let mut cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        // Missing files.
        (vec!["--cert", missing, "--key", &a_key], vec![missing]),
        (vec!["--cert", &a_pem, "--key", missing], vec![missing]),
        // A file with no certificate (the key given as --cert), an empty
        // file, a CERTIFICATE block that is not X.509.
        (vec!["--cert", &a_key, "--key", &a_key], vec![&a_key]),
        (vec!["--cert", empty, "--key", &a_key], vec![empty]),
        (vec!["--cert", junk, "--key", &a_key], vec![junk]),
        // A certificate given as the key.
        (vec!["--cert", &a_pem, "--key", &a_pem], vec![&a_pem, "key"]),
        // The key of another certificate.
        (vec!["--cert", &a_pem, "--key", &b_key], vec![&b_key]),
        // Half a pair.
        (vec!["--cert", &a_pem], vec!["--key"]),
        (vec!["--key", &a_key], vec!["--cert"]),
    ];
    // With a good pair (`--cert`, `--key` of `a`) plus these flags.
    let with_a_pair: Vec<(Vec<&str>, Vec<&str>)> = vec![
        // Client certificates without a CA to check them against.
        (vec!["--client-auth", "required"], vec!["--client-ca"]),
        (vec!["--client-auth", "optional"], vec!["--client-ca"]),
        // A bad client CA file.
        (
            vec!["--client-auth", "optional", "--client-ca", missing],
            vec![missing],
        ),
        (
            vec!["--client-auth", "required", "--client-ca", &a_key],
            vec![&a_key],
        ),
        (
            vec!["--client-auth", "sometimes", "--client-ca", &a_ca],
            vec!["sometimes"],
        ),
    ];
    let pair = ["--cert", &a_pem, "--key", &a_key];
    cases.extend(
        with_a_pair
            .into_iter()
            .map(|(more, needles)| ([&pair[..], &more].concat(), needles)),
    );
    for (flags, needles) in &cases {
        let line = tls_start_fails(flags, needles);
        eprintln!("start error: {line}");
    }
    // --auth cert needs a TLS listener.
    let out = expect_start_failure(&serve_args(&["--auth", "cert", "--client-ca", &a_ca]));
    assert!(
        out.stderr_lines().iter().any(|l| l.contains("cert")),
        "--auth cert with --tls-listen off: the error should say why:\n{}",
        out.stderr
    );

    // Unreadable: only testable when not running as root.
    let unreadable = dir.join("unreadable.pem");
    std::fs::copy(a.file("server.pem"), &unreadable).expect("copy");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    if std::fs::read(&unreadable).is_ok() {
        eprintln!(
            "SKIP: unreadable certificate file: this test runs as root, which can read a \
             mode-000 file, so that start error cannot be tested here"
        );
    } else {
        tls_start_fails(
            &["--cert", path_str(&unreadable), "--key", &a_key],
            &[path_str(&unreadable)],
        );
    }
}
