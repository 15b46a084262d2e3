//! Runs the examples in `examples/` against real sockets.

mod common;

use std::io::{BufRead, BufReader, Read, Write};

use common::read_to_end;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// `target/<profile>/examples/<name>`, next to this test's own `deps/` directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples").join(name)
}

/// Starts an example with `args`, and reads its `listening on ADDR` line.
fn start(name: &str, args: &[&str]) -> (Child, BufReader<ChildStdout>, String) {
    let path = example(name);
    assert!(
        path.exists(),
        "{} not built (cargo test builds examples)",
        path.display()
    );
    let mut child = Command::new(&path)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("example starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("listening line, not {line:?}"))
        .to_owned();
    (child, out, addr)
}

/// Waits for the example to stop by itself; returns the rest of its output.
fn finish(mut child: Child, mut out: BufReader<ChildStdout>) -> String {
    let status = child.wait().expect("exit");
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("stdout");
    assert!(rest.contains("stopped"), "{rest}");
    rest
}

#[test]
fn echo_server_and_client_examples() {
    let (child, out, addr) = start("echo_server", &["127.0.0.1:0", "2"]);
    let client = Command::new(example("echo_client"))
        .args([addr.as_str(), "hello", "generic layer"])
        .output()
        .expect("client runs");
    assert!(client.status.success(), "{client:?}");
    assert_eq!(
        String::from_utf8_lossy(&client.stdout),
        "echo: hello\necho: generic layer\n"
    );
    let rest = finish(child, out);
    assert!(rest.contains("said \"generic layer\""), "{rest}");
    assert!(rest.contains("closed: peer closed"), "{rest}");
}

#[test]
fn echo_client_reports_a_refused_connection() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let client = Command::new(example("echo_client"))
        .args([free.to_string().as_str(), "hello"])
        .output()
        .expect("client runs");
    assert!(!client.status.success(), "{client:?}");
    let stderr = String::from_utf8_lossy(&client.stderr);
    // One plain line, not a Debug-printed error or a panic.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("echo_client: cannot connect to {free}")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Error: "),
        "{stderr}"
    );
    assert!(client.stdout.is_empty(), "{client:?}");

    let bad = Command::new(example("echo_client"))
        .args(["not-an-address", "hello"])
        .output()
        .expect("client runs");
    assert!(!bad.status.success(), "{bad:?}");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("\"not-an-address\" is not an address"),
        "{stderr}"
    );
}

/// Issue 11: stopped by a signal (Ctrl-C), `tls_echo` removes its
/// temporary keys too, not only when it stops by itself.
#[test]
fn tls_echo_removes_its_keys_when_interrupted() {
    for signal in ["INT", "TERM"] {
        let (mut child, mut out, _addr) = start("tls_echo", &["127.0.0.1:0"]);
        let mut line = String::new();
        out.read_line(&mut line).expect("certificates line");
        let dir = PathBuf::from(
            line.trim()
                .strip_prefix("certificates in ")
                .unwrap_or_else(|| panic!("certificates line, not {line:?}")),
        );
        assert!(dir.join("server.key").exists(), "{}", dir.display());
        let killed = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tls_echo did not stop on SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "SIG{signal}: {status}");
        assert!(
            !dir.exists(),
            "SIG{signal}: {} is still there",
            dir.display()
        );
        let mut rest = String::new();
        out.read_to_string(&mut rest).expect("stdout");
        assert!(rest.contains("stopped"), "{rest}");
    }
}

#[test]
fn delimited_server_example() {
    let (child, out, addr) = start("delimited_server", &["127.0.0.1:0", "2"]);
    let mut good = TcpStream::connect(&addr).expect("connect");
    good.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut bad = TcpStream::connect(&addr).expect("connect");
    bad.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    good.write_all(b"short;").expect("write");
    let mut reply = [0u8; 8];
    good.read_exact(&mut reply).expect("reply");
    assert_eq!(&reply, b"5 bytes;");
    // Over 16 bytes without a `;`: that connection is closed, not the other.
    bad.write_all(b"this one is much too long;").expect("write");
    assert_eq!(read_to_end(&mut bad), b"");
    good.write_all(b"still here;").expect("write");
    let mut reply = [0u8; 9];
    good.read_exact(&mut reply).expect("reply");
    assert_eq!(&reply, b"10 bytes;");
    drop(good);
    let rest = finish(child, out);
    assert!(rest.contains("closed: message over 16 bytes"), "{rest}");
}

#[test]
fn tls_echo_example() {
    let (child, mut out, addr) = start("tls_echo", &["127.0.0.1:0", "2"]);
    let mut line = String::new();
    out.read_line(&mut line).expect("certificates line");
    let dir = PathBuf::from(
        line.trim()
            .strip_prefix("certificates in ")
            .unwrap_or_else(|| panic!("certificates line, not {line:?}")),
    );
    let config = common::tls_client_config(
        &dir.join("ca.pem"),
        Some((&dir.join("alice.pem"), &dir.join("alice.key"))),
        common::TLS_ANY,
    );
    let name = "localhost".try_into().expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("client");
    let sock = TcpStream::connect(&addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"over TLS\n").expect("write");
    let mut reply = [0u8; 9];
    tls.read_exact(&mut reply).expect("echo");
    assert_eq!(&reply, b"over TLS\n");
    tls.conn.send_close_notify();
    let _ = tls.flush();
    drop(tls);
    // The other half of the pair: echo_client over mutual TLS.
    let client = Command::new(example("echo_client"))
        .args([addr.as_str(), "--tls", &dir.display().to_string(), "pair"])
        .output()
        .expect("echo_client runs");
    let printed = String::from_utf8_lossy(&client.stdout);
    assert!(client.status.success(), "{printed}");
    assert!(
        printed.contains("server certificate subject: CN=localhost"),
        "{printed}"
    );
    assert!(printed.contains("echo: pair"), "{printed}");
    let rest = finish(child, out);
    assert_eq!(
        rest.matches("client certificate subject: CN=alice").count(),
        2,
        "{rest}"
    );
    assert!(!dir.exists(), "the example removes its certificates");
}

/// Reads one frame: header line, then LEN payload bytes.
fn read_frame(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut header = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        s.read_exact(&mut byte).expect("header byte");
        header.push(byte[0]);
    }
    let header = String::from_utf8(header).expect("ascii header");
    let len: usize = header
        .split(' ')
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("LEN");
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).expect("payload");
    (header.trim_end().to_owned(), payload)
}

#[test]
fn embedded_chat_example() {
    let (child, out, addr) = start("embedded_chat", &["127.0.0.1:0", "3"]);

    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"USER 0 alice\n").expect("write");
    assert_eq!(read_frame(&mut s), ("ACK 9".into(), b"logged in".to_vec()));
    // The handler greets from inside the loop, right after the login.
    assert_eq!(
        read_frame(&mut s),
        ("MESSAGE 14 @server".into(), b"welcome, alice".to_vec())
    );
    s.write_all(b"SUBSCRIBE 0 1\n").expect("write");
    assert_eq!(read_frame(&mut s).0, "ACK 10");
    let (header, payload) = read_frame(&mut s);
    assert!(
        header.starts_with("PUBLISHED ") && header.ends_with(" @server 1"),
        "{header}"
    );
    assert!(payload.starts_with(b"tick "), "{payload:?}");

    // It stops by itself and closes the connection with ERR shutting-down.
    loop {
        let (header, payload) = read_frame(&mut s);
        if header.starts_with("ERR") {
            assert!(header.ends_with(" shutting-down"), "{header}");
            assert_eq!(payload, b"server is shutting down");
            break;
        }
    }
    let rest = finish(child, out);
    assert!(rest.contains("logged in as alice"), "{rest}");
    assert!(rest.contains("alice subscribed to [1]"), "{rest}");
}

/// Issue 14: the nanomsg patterns on the broker, each example run against a
/// real server.
#[test]
fn pattern_examples_run_against_a_server() {
    let srv = common::ServerProc::start(&["--open-groups"]);
    let addr = srv.addr.to_string();
    let run = |name: &str| {
        let out = Command::new(example(name))
            .arg(&addr)
            .output()
            .expect("example runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    assert_eq!(
        run("req_rep"),
        "hello -> HELLO\nrequest -> REQUEST\nreply -> REPLY\n"
    );
    let jobs = run("push_pull");
    assert!(jobs.ends_with("6 jobs done\n"), "{jobs}");
    for w in 0..3 {
        assert_eq!(
            jobs.matches(&format!("worker{w} took")).count(),
            2,
            "{jobs}"
        );
    }
    assert_eq!(run("survey"), "ann: yes\nbo: no\ncy: yes\n");
    assert_eq!(
        run("bus"),
        "node0 heard: hello from node1, hello from node2\n\
         node1 heard: hello from node0, hello from node2\n\
         node2 heard: hello from node0, hello from node1\n"
    );
    assert_eq!(
        run("pair"),
        "right got ping from left\nleft got pong from right\n"
    );
}
