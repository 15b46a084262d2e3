//! TLS with clients nobody here wrote (protocol.md section 8): `openssl
//! s_client` and Python's `ssl` module (OpenSSL underneath), TLS 1.2 and 1.3,
//! with and without a client certificate, each driving a real session.
//!
//! If `openssl` or `python3` is not installed, its tests print `SKIP: ...`
//! and pass.

mod common;

use common::*;

/// Whether `program` is installed; prints a loud SKIP line if not.
fn need(program: &str) -> bool {
    if have_program(program) {
        true
    } else {
        eprintln!("SKIP: {program} not found; this interop test is skipped");
        false
    }
}

/// Starts the server with TLS settings `args` followed by `extra`.
fn start_tls(mut args: Vec<String>, extra: &[&str]) -> ServerProc {
    args.extend(extra.iter().map(|s| s.to_string()));
    ServerProc::start_tls(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `openssl s_client` to the server's TLS port, verifying the server with
/// `ca`; `extra` adds the version and client certificate flags.
#[track_caller]
fn s_client(srv: &ServerProc, ca: &std::path::Path, extra: &[&str], label: &str) -> StdioClient {
    let connect = srv.tls_addr().to_string();
    let mut args = vec![
        "s_client",
        "-connect",
        &connect,
        "-CAfile",
        path_str(ca),
        "-quiet",
        "-verify_return_error",
    ];
    args.extend_from_slice(extra);
    StdioClient::spawn("openssl", &args, label)
}

/// Sends `QUIT 0`; asserts the ACK, the server's close and the program's
/// clean exit after it.
#[track_caller]
fn quit(c: &mut StdioClient) {
    c.ack("QUIT 0");
    c.expect_closed();
    let label = c.label.clone();
    match c.wait_exit(EXIT_TIMEOUT) {
        Some(s) if s.success() => {}
        other => panic!(
            "{label}: expected a clean exit after the server closed, got {other:?}\nstderr:\n{}",
            c.stderr_text()
        ),
    }
}

/// Asserts that the program exits with a failure; `what` says why it should.
#[track_caller]
fn expect_exit_failure(c: &mut StdioClient, what: &str) {
    let status = c.wait_exit(EXIT_TIMEOUT);
    assert!(
        status.is_some_and(|s| !s.success()),
        "{what}, got {status:?}\nstderr:\n{}",
        c.stderr_text()
    );
}

#[test]
fn openssl_s_client_sessions_tls12_and_tls13() {
    if !need("openssl") {
        return;
    }
    let certs = CertDir::new(&["alice"]);
    // Client certificates asked for but optional: one server for both kinds.
    let srv = start_tls(certs.mutual_args("optional"), &["--group", "1=general"]);
    let mut plain = srv.login("plain");
    plain.ack("SUBSCRIBE 0 1");

    let alice_pem = certs.arg("alice.pem");
    let alice_key = certs.arg("alice.key");
    let cases: [(&str, Vec<&str>); 4] = [
        ("ossl12", vec!["-tls1_2", "-verify_ip", "127.0.0.1"]),
        (
            "ossl13",
            vec![
                "-tls1_3",
                "-servername",
                "localhost",
                "-verify_hostname",
                "localhost",
            ],
        ),
        (
            "ossl12cert",
            vec!["-tls1_2", "-cert", &alice_pem, "-key", &alice_key],
        ),
        (
            "ossl13cert",
            vec!["-tls1_3", "-cert", &alice_pem, "-key", &alice_key],
        ),
    ];
    for (user, extra) in cases {
        let mut c = s_client(&srv, &certs.ca(), &extra, user);
        c.ack(&format!("USER 0 {user}"));
        c.ack("SUBSCRIBE 0 1");
        let text = format!("hello from {user}");
        c.send_frame("PUBLISH", &["1"], text.as_bytes());
        c.expect_ack();
        c.expect_published(user, &["1"], text.as_bytes());
        plain.expect_published(user, &["1"], text.as_bytes());
        plain.send_frame("SEND", &[user], b"back to you");
        plain.expect_ack();
        c.expect_message("plain", b"back to you");
        // A payload with a CR LF inside and binary bytes.
        c.send_frame("PUBLISH", &["1"], b"line\r\nnext\0\xff");
        c.expect_ack();
        c.expect_published(user, &["1"], b"line\r\nnext\0\xff");
        plain.expect_published(user, &["1"], b"line\r\nnext\0\xff");
        assert_eq!(c.result("WHO 0 1"), {
            let mut v = vec!["plain".to_string(), user.to_string()];
            v.sort();
            v
        });
        quit(&mut c);
        let err = c.stderr_text();
        assert!(
            !err.contains("unexpected eof"),
            "{user}: the server should end the session with close_notify; s_client stderr:\n{err}"
        );
    }
}

#[test]
fn openssl_s_client_with_auth_cert_needs_no_user() {
    if !need("openssl") {
        return;
    }
    let certs = CertDir::new(&["alice", "bob"]);
    let srv = start_tls(
        certs.mutual_args("required"),
        &["--auth", "cert", "--group", "1=general"],
    );
    for (version, name) in [("-tls1_2", "alice"), ("-tls1_3", "bob")] {
        let pem = certs.arg(&format!("{name}.pem"));
        let key = certs.arg(&format!("{name}.key"));
        let mut c = s_client(
            &srv,
            &certs.ca(),
            &[version, "-cert", &pem, "-key", &key],
            name,
        );
        // Logged in by the certificate: no USER.
        c.ack("SUBSCRIBE 0 1");
        c.send_frame("PUBLISH", &["1"], b"signed in by certificate");
        c.expect_ack();
        c.expect_published(name, &["1"], b"signed in by certificate");
        assert_eq!(c.result("WHO 0"), [name]);
        c.ack(&format!("USER 0 {name}"));
        c.err("USER 0 mallory", "auth-failed");
        c.ping();
        quit(&mut c);
    }
    // Without a certificate, s_client gets no session.
    let mut c = s_client(&srv, &certs.ca(), &["-tls1_2"], "no cert");
    let frames = c.drain_until_closed(EXIT_TIMEOUT);
    assert!(frames.is_empty(), "no cert: got {frames:?}");
    expect_exit_failure(
        &mut c,
        "no cert, --client-auth required: s_client should fail",
    );
}

#[test]
fn openssl_s_client_fails_verification_with_the_wrong_ca() {
    if !need("openssl") {
        return;
    }
    let certs = CertDir::new(&[]);
    let other = CertDir::new(&[]);
    let srv = start_tls(certs.server_args(), &[]);
    for version in ["-tls1_2", "-tls1_3"] {
        let mut c = s_client(&srv, &other.ca(), &[version], "wrong CA");
        let frames = c.drain_until_closed(EXIT_TIMEOUT);
        assert!(frames.is_empty(), "wrong CA: got {frames:?}");
        expect_exit_failure(
            &mut c,
            &format!("s_client trusting another CA should fail ({version})"),
        );
        let err = c.stderr_text();
        assert!(
            err.contains("verify error") || err.contains("certificate verify failed"),
            "s_client should report the failed verification ({version}):\n{err}"
        );
    }
    // The wrong IP for the certificate fails too.
    let mut c = s_client(&srv, &certs.ca(), &["-verify_ip", "127.0.0.2"], "wrong IP");
    expect_exit_failure(
        &mut c,
        "the server certificate should not verify as 127.0.0.2",
    );
    // And the server is fine.
    let mut ok = srv.tls_login(&certs.client_config(TLS_ANY), "ok");
    ok.ping();
}

/// A Python TLS client: reads all of stdin, connects with
/// `ssl.create_default_context(cafile=...)` (server name `localhost`), sends
/// it, and writes everything it receives to stdout until the server closes.
/// Its stderr says the version and how the session ended.
const PY_CLIENT: &str = r#"
import socket, ssl, sys
host, port, cafile, ver = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
if ver == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
elif ver == "1.3":
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
if len(sys.argv) > 6:
    ctx.load_cert_chain(sys.argv[5], sys.argv[6])
data = sys.stdin.buffer.read()
with socket.create_connection((host, port), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as s:
        sys.stderr.write("version=%s\n" % s.version())
        sys.stderr.flush()
        s.sendall(data)
        out = sys.stdout.buffer
        while True:
            try:
                d = s.recv(65536)
            except ssl.SSLEOFError as e:
                sys.stderr.write("end=eof without close_notify: %s\n" % e)
                break
            if not d:
                sys.stderr.write("end=close_notify\n")
                break
            out.write(d)
            out.flush()
"#;

/// Starts [`PY_CLIENT`] against the server's TLS port, trusting `ca`, and
/// gives it all of `input` (then end of file).
fn python_client(
    srv: &ServerProc,
    ca: &std::path::Path,
    version: &str,
    cert: Option<(&str, &str)>,
    input: &[u8],
    label: &str,
) -> StdioClient {
    let port = srv.tls_addr().port().to_string();
    let mut args = vec!["-c", PY_CLIENT, "127.0.0.1", &port, path_str(ca), version];
    if let Some((c, k)) = cert {
        args.extend([c, k]);
    }
    let mut c = StdioClient::spawn("python3", &args, label);
    c.send(input);
    c.shutdown_write();
    c
}

/// Runs [`PY_CLIENT`] against the server: sends `input`, returns the frames
/// received and the script's stderr.
#[track_caller]
fn python_session(
    srv: &ServerProc,
    ca: &std::path::Path,
    version: &str,
    cert: Option<(&str, &str)>,
    input: &[u8],
    label: &str,
) -> (Vec<Frame>, String) {
    let mut c = python_client(srv, ca, version, cert, input, label);
    let frames = c.drain_until_closed(EXIT_TIMEOUT);
    let status = c.wait_exit(EXIT_TIMEOUT);
    let err = c.stderr_text();
    assert!(
        status.is_some_and(|s| s.success()),
        "{label}: the Python client failed ({status:?})\nstderr:\n{err}\nframes: {frames:?}"
    );
    (frames, err)
}

#[track_caller]
fn expect_frames(label: &str, frames: &[Frame], want: &[(&str, &[&str], &[u8])]) {
    let ok = frames.len() == want.len()
        && frames.iter().zip(want).all(|(f, (ty, args, payload))| {
            f.is(ty, args) && (payload.is_empty() || f.payload == *payload)
        });
    assert!(
        ok,
        "{label}: expected {want:?}\n got {frames:?}",
        want = want
            .iter()
            .map(|(t, a, p)| format!("{t} {} + {}", a.join(" "), show_bytes(p)))
            .collect::<Vec<_>>()
    );
}

#[test]
fn python_ssl_sessions_tls12_and_tls13() {
    if !need("python3") {
        return;
    }
    let certs = CertDir::new(&[]);
    let srv = start_tls(certs.server_args(), &["--group", "1=general"]);
    let mut plain = srv.login("plain");
    plain.ack("SUBSCRIBE 0 1");
    for (version, user, want_version) in [("1.2", "py12", "TLSv1.2"), ("1.3", "py13", "TLSv1.3")] {
        let text = format!("hello from {user}");
        let mut input = format!("USER 0 {user}\nSUBSCRIBE 0 1\n").into_bytes();
        input.extend(frame("PUBLISH", &["1"], text.as_bytes()));
        input.extend(frame("SEND", &[user], b"note to self"));
        input.extend(b"QUIT 0\n");
        let (frames, err) = python_session(&srv, &certs.ca(), version, None, &input, user);
        // The publisher is subscribed: its PUBLISHED is queued before the ACK.
        expect_frames(
            user,
            &frames,
            &[
                ("ACK", &[], b""),
                ("ACK", &[], b""),
                ("PUBLISHED", &[user, "1"], text.as_bytes()),
                ("ACK", &[], b""),
                ("MESSAGE", &[user], b"note to self"),
                ("ACK", &[], b""),
                ("ACK", &[], b""),
            ],
        );
        assert!(
            err.contains(&format!("version={want_version}")),
            "{user}: expected {want_version}; stderr:\n{err}"
        );
        assert!(
            err.contains("end=close_notify"),
            "{user}: the server should end the session with close_notify; stderr:\n{err}"
        );
        plain.expect_published(user, &["1"], text.as_bytes());
    }
    // Python refuses a server its CA file does not vouch for.
    let other = CertDir::new(&[]);
    let mut c = python_client(
        &srv,
        &other.ca(),
        "any",
        None,
        b"USER 0 x\n",
        "python, wrong CA",
    );
    let frames = c.drain_until_closed(EXIT_TIMEOUT);
    let status = c.wait_exit(EXIT_TIMEOUT);
    assert!(
        frames.is_empty() && status.is_some_and(|s| !s.success()),
        "python trusting another CA should fail: {status:?}, {frames:?}\nstderr:\n{}",
        c.stderr_text()
    );
    assert!(
        c.stderr_text().contains("CERTIFICATE_VERIFY_FAILED"),
        "stderr:\n{}",
        c.stderr_text()
    );
    plain.ping();
}

#[test]
fn python_ssl_mutual_tls_with_auth_cert() {
    if !need("python3") {
        return;
    }
    let certs = CertDir::new(&["alice"]);
    let srv = start_tls(
        certs.mutual_args("required"),
        &["--auth", "cert", "--group", "1=general"],
    );
    let pem = certs.arg("alice.pem");
    let key = certs.arg("alice.key");
    for version in ["1.2", "1.3"] {
        let label = format!("python alice TLS {version}");
        // No USER: the certificate logs the session in.
        let mut input = b"SUBSCRIBE 0 1\n".to_vec();
        input.extend(frame("PUBLISH", &["1"], b"by certificate"));
        input.extend(b"WHO 0\nUSER 0 alice\nUSER 0 bob\nQUIT 0\n");
        let (frames, err) = python_session(
            &srv,
            &certs.ca(),
            version,
            Some((&pem, &key)),
            &input,
            &label,
        );
        expect_frames(
            &label,
            &frames,
            &[
                ("ACK", &[], b""),
                ("PUBLISHED", &["alice", "1"], b"by certificate"),
                ("ACK", &[], b""),
                ("RESULT", &[], b"alice\n"),
                ("ACK", &[], b""),
                ("ERR", &["auth-failed"], b""),
                ("ACK", &[], b""),
            ],
        );
        assert!(
            err.contains(&format!("version=TLSv{version}")),
            "{label}: stderr:\n{err}"
        );
    }
    // Without a client certificate: refused.
    let mut c = python_client(
        &srv,
        &certs.ca(),
        "1.3",
        None,
        b"SUBSCRIBE 0 1\nQUIT 0\n",
        "python, no certificate",
    );
    let frames = c.drain_until_closed(EXIT_TIMEOUT);
    let _ = c.wait_exit(EXIT_TIMEOUT);
    assert!(
        frames.is_empty(),
        "python without a client certificate got {frames:?}\nstderr:\n{}",
        c.stderr_text()
    );
}
