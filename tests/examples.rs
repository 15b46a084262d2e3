//! Runs the examples in `examples/` against real sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `target/<profile>/examples/<name>`, next to this test's own `deps/` directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples").join(name)
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
    let path = example("embedded_chat");
    assert!(
        path.exists(),
        "{} not built (cargo test builds examples)",
        path.display()
    );
    let mut child = Command::new(&path)
        .args(["127.0.0.1:0", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("example starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();

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
    let status = child.wait().expect("exit");
    assert!(status.success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("stdout");
    assert!(rest.contains("logged in as alice"), "{rest}");
    assert!(rest.contains("alice subscribed to [1]"), "{rest}");
    assert!(rest.contains("stopped"), "{rest}");
}
