//! The README's walkthroughs, followed as written, in the order written,
//! against the server its own text starts (issue 11): if the README and the
//! server drift apart, this fails.
//!
//! - The set-up commands: the test command is the one `.ci/run` runs.
//! - "Two people chatting with `nc`": the server command's flags, then every
//!   `alice>`/`bob>` line typed and every `alice<`/`bob<` line expected, in
//!   order, on two real connections. (The listening address is the test's
//!   own loopback port instead of 7420, so that tests can run side by side.)
//! - "Peer to peer" (issue 13): the lecture's `nc` session with the
//!   directory, a `peer` terminal being the listener that answers the
//!   server's probe; then the two `chat --p2p` processes, their output line
//!   by line, with the server stopped halfway. (Ports of the README are the
//!   test's free ones, of as many digits where a LEN depends on them.)

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// The text of the README section whose heading starts with `heading`, up
/// to the next `## ` heading.
fn section(readme: &str, heading: &str) -> String {
    let start = readme
        .find(&format!("\n## {heading}"))
        .unwrap_or_else(|| panic!("no README section {heading:?}"));
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    rest[..end].to_string()
}

/// Indented code lines (four spaces), without the indent.
fn code_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("    "))
        .collect()
}

#[test]
fn the_setup_commands_are_what_ci_runs() {
    let readme = readme();
    let setup = section(&readme, "Set-up on a fresh machine");
    let code = code_lines(&setup);
    assert!(code.contains(&"cargo run --release -- serve"), "{code:?}");
    assert!(code.contains(&"cargo test"), "{code:?}");
    let ci =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "cargo test"),
        ".ci/run does not run the README's test command"
    );
}

/// One terminal of the walkthrough: its connection and what it has shown.
struct Terminal {
    stream: TcpStream,
    /// Everything received, newlines removed (nc shows frames run together;
    /// the README splits them into lines for reading).
    shown: String,
    /// Everything the README says it shows so far, likewise.
    expected: String,
}

impl Terminal {
    /// Reads until what was shown matches what the README says by now.
    #[track_caller]
    fn catch_up(&mut self, who: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 4096];
        while self.shown.len() < self.expected.len() && Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    self.shown.extend(text.chars().filter(|c| *c != '\n'));
                }
                Err(_) => {}
            }
        }
        // Over several loops, `published to N` counts this loop's
        // deliveries only (protocol.md section 11; docs/scaling.md).
        let norm = |v: &str| -> String {
            if common::test_threads().is_some() {
                published_count(v)
            } else {
                v.to_owned()
            }
        };
        assert_eq!(
            norm(&self.shown),
            norm(&self.expected),
            "{who}'s terminal differs from the README"
        );
    }
}

/// `text` with the counts of `ACK LEN\npublished to N` taken out.
fn published_count(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("published to ") {
        // Drop the ACK's length too ("ACK 14published to 2").
        let head = &rest[..at];
        let head = head.rfind("ACK ").map_or(head, |i| &head[..i + 4]);
        out.push_str(head);
        out.push_str("published to N");
        rest = rest[at + "published to ".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

#[test]
fn two_people_chatting_with_nc_works_as_written() {
    let readme = readme();
    let text = section(&readme, "Two people chatting with `nc`");
    // Up to the password walkthrough, which has its own test.
    let text = text.split("With passwords").next().unwrap_or_default();
    let code = code_lines(text);
    let serve = code
        .iter()
        .find_map(|l| l.strip_prefix("cargo run --release -- serve"))
        .expect("the section starts a server");
    let flags: Vec<&str> = serve.split_whitespace().collect();
    let server = ServerProc::start(&flags);
    assert!(replay(&server, &code) > 40, "too few walkthrough lines");
}

/// Replays `NAME> typed` and `NAME< shown` lines (or `> `/`< ` for a
/// single terminal) on connections to `server`, in order; returns how many
/// lines there were.
#[track_caller]
fn replay(server: &ServerProc, code: &[&str]) -> usize {
    replay_with(server, code, BTreeMap::new(), &[])
}

/// [`replay`], where the terminals named in `listeners` are not `nc` to
/// the server but `nc -lk` on that listener (their connection is the next
/// one accepted, when their first line comes), and each `(from, to)` of
/// `replace` is replaced in every line (a port of the README by the test's).
#[track_caller]
fn replay_with(
    server: &ServerProc,
    code: &[&str],
    mut listeners: BTreeMap<String, TcpListener>,
    replace: &[(&str, String)],
) -> usize {
    let mut terminals: BTreeMap<String, Terminal> = BTreeMap::new();
    let mut lines = 0;
    for line in code {
        let Some((who, rest)) = line.split_once(['>', '<']) else {
            continue;
        };
        if !who.chars().all(|c| c.is_ascii_lowercase()) {
            continue;
        }
        let typed = line.as_bytes()[who.len()] == b'>';
        let mut content = rest.strip_prefix(' ').unwrap_or(rest).to_string();
        for (from, to) in replace {
            content = content.replace(from, to);
        }
        let content = content.as_str();
        lines += 1;
        let t = terminals.entry(who.to_string()).or_insert_with(|| {
            let stream = match listeners.remove(who) {
                Some(listener) => accept_within(&listener, Duration::from_secs(5), who),
                None => TcpStream::connect(server.addr).expect("nc connects"),
            };
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            Terminal {
                stream,
                shown: String::new(),
                expected: String::new(),
            }
        });
        if typed {
            // What this terminal showed before the line was typed is there.
            t.catch_up(who);
            t.stream
                .write_all(format!("{content}\n").as_bytes())
                .expect("type a line");
        } else {
            t.expected.push_str(content);
        }
    }
    for (who, t) in &mut terminals {
        t.catch_up(who);
    }
    lines
}

/// "With passwords, as in the lecture": the password file made as written
/// (the password given on standard input, as a pipe does, rather than typed
/// twice at a terminal), the server started as written in that directory,
/// and the transcript replayed.
#[test]
fn the_password_walkthrough_works_as_written() {
    let readme = readme();
    let text = section(&readme, "Two people chatting with `nc`");
    let part = text
        .split("With passwords")
        .nth(1)
        .expect("the password walkthrough");
    let code = code_lines(part);
    let server = password_server_as_written(&code);
    assert!(replay(&server, &code) >= 6, "too few transcript lines");
}

/// "Command-line clients": the server line, the subscriber, the two
/// publishing lines (the second through `sh`, as typed), and the
/// subscriber's output, as written. `switchboard` is this build's binary,
/// and the clients get `--addr` of the test's server.
#[test]
fn command_line_clients_work_as_written() {
    let readme = readme();
    let text = section(&readme, "Command-line clients");
    let code = code_lines(&text);
    assert!(code.contains(&"cargo install --path ."), "{code:?}");
    let serve = code
        .iter()
        .find_map(|l| l.strip_prefix("switchboard serve"))
        .expect("the section starts a server");
    let flags: Vec<&str> = serve.split_whitespace().collect();
    let server = ServerProc::start(&flags);
    let addr = server.addr.to_string();
    let with_addr = |line: &str| -> String {
        let (cmd, rest) = line
            .split_once("switchboard ")
            .expect("a switchboard command");
        let (sub, args) = rest.split_once(' ').unwrap_or((rest, ""));
        format!("{cmd}{BIN} {sub} --addr {addr} {args}")
    };
    let sub_line = code
        .iter()
        .find(|l| l.starts_with("switchboard sub "))
        .expect("a subscriber");
    let mut sub = std::process::Command::new("sh")
        .args(["-c", &with_addr(sub_line)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sub starts");
    // The subscriber is in group 1 before anything is published.
    let mut check = server.login("check");
    wait_until(Duration::from_secs(10), || {
        check.result("WHO 0 1").iter().any(|u| u == "logger")
    });
    for line in code.iter().filter(|l| l.contains("switchboard pub ")) {
        let status = std::process::Command::new("sh")
            .args(["-c", &with_addr(line)])
            .status()
            .expect("pub runs");
        assert!(status.success(), "{line}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && sub.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut printed = String::new();
    if sub.try_wait().ok().flatten().is_none() {
        let _ = sub.kill();
    }
    sub.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut printed)
        .expect("read");
    let _ = sub.wait();
    // The indented block right after "The subscriber has printed".
    let after = text
        .split("The subscriber has printed")
        .nth(1)
        .expect("the expected output");
    let expected: Vec<&str> = after
        .lines()
        .skip_while(|l| !l.starts_with("    "))
        .take_while(|l| l.starts_with("    "))
        .map(str::trim)
        .collect();
    assert_eq!(printed.lines().collect::<Vec<_>>(), expected);
}

/// The next connection to `listener`, within `timeout`.
#[track_caller]
fn accept_within(listener: &TcpListener, timeout: Duration, who: &str) -> TcpStream {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).expect("blocking");
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{who}: no connection within {timeout:?}: {e}"),
        }
    }
}

/// A free loopback port with as many digits as `like` (so that a payload
/// that shows it keeps its LEN): `like` itself if it is free. The
/// listener is returned bound.
fn port_like(like: u16) -> (TcpListener, u16) {
    let digits = like.to_string().len() as u32;
    let (low, high) = (10u16.pow(digits - 1).max(1024), 10u32.pow(digits) - 1);
    let high = u16::try_from(high).unwrap_or(u16::MAX);
    let mut port = like;
    for _ in 0..2000 {
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return (l, port);
        }
        port = if port >= high { low } else { port + 1 };
    }
    panic!("no free loopback port with {digits} digits");
}

/// The README's peer-to-peer section (issue 13).
fn p2p_section() -> String {
    section(&readme(), "Peer to peer")
}

/// Makes the password file the section's `passwd` line makes (the password
/// from its comment, on standard input) in a new directory, and starts the
/// server of its `serve` line there.
#[track_caller]
fn password_server_as_written(code: &[&str]) -> ServerProc {
    let passwd = code
        .iter()
        .find_map(|l| l.strip_prefix("cargo run --release -- passwd "))
        .expect("a passwd line");
    let (args, comment) = passwd.split_once('#').expect("a comment with the password");
    let password = comment
        .split_whitespace()
        .skip_while(|w| *w != "type")
        .nth(1)
        .expect("`type PASSWORD`")
        .trim_end_matches(',');
    let dir = TempDir::new("readme-passwd");
    let mut cmd: Vec<&str> = vec!["passwd"];
    cmd.extend(args.split_whitespace());
    let out = std::process::Command::new(BIN)
        .args(&cmd)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .expect("stdin")
                .write_all(format!("{password}\n").as_bytes())?;
            c.wait_with_output()
        })
        .expect("passwd runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let serve = code
        .iter()
        .find_map(|l| l.strip_prefix("cargo run --release -- serve"))
        .expect("a serve line");
    let flags: Vec<&str> = serve.split_whitespace().collect();
    ServerProc::start_in(dir, &serve_args(&flags))
}

/// "Peer to peer", the lecture's session with `nc`: the password file and
/// the server as written, `corrado` on a connection to it, and `peer` the
/// listener that answers the server's probe (on port 5000 if it is free,
/// else another four-digit port, so that the RESULT's LEN is as written).
#[test]
fn the_directory_walkthrough_with_nc_works_as_written() {
    let text = p2p_section();
    let part = text
        .split("The same with the command-line client")
        .next()
        .unwrap_or_default();
    let code = code_lines(part);
    let server = password_server_as_written(&code);
    let (listener, port) = port_like(5000);
    let listeners = BTreeMap::from([("peer".to_string(), listener)]);
    let replace = [("5000", port.to_string())];
    assert!(
        replay_with(&server, &code, listeners, &replace) >= 19,
        "too few transcript lines"
    );
    assert!(
        part.contains("nc -lk 127.0.0.1\n5000") || part.contains("nc -lk 127.0.0.1 5000"),
        "the listener's command"
    );
}

/// One `switchboard chat` of the walkthrough: its stdout lines as shown,
/// and those the README says it shows.
struct ChatTerminal {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    shown: Vec<String>,
    expected: Vec<String>,
}

impl ChatTerminal {
    /// Reads until as many lines were shown as the README says by now.
    #[track_caller]
    fn catch_up(&mut self, who: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.shown.len() < self.expected.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.shown.push(line),
                Err(_) => break,
            }
        }
        // Over several loops, `published to N` counts this loop's
        // deliveries only (protocol.md section 11; docs/scaling.md).
        let norm = |v: &[String]| -> Vec<String> {
            if common::test_threads().is_some() {
                v.iter().map(|l| published_count(l)).collect()
            } else {
                v.to_vec()
            }
        };
        assert_eq!(
            norm(&self.shown),
            norm(&self.expected),
            "{who}'s terminal differs from the README"
        );
    }
}

impl Drop for ChatTerminal {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// Replays `NAME>`/`NAME<` lines on the chat processes `chats` (NAME to
/// process). `* connected as` lines are left out: a chat shows them only on
/// a terminal.
#[track_caller]
fn replay_chats(
    chats: &mut BTreeMap<String, ChatTerminal>,
    code: &[&str],
    replace: &[(&str, String)],
) -> usize {
    let mut lines = 0;
    for line in code {
        let Some((who, rest)) = line.split_once(['>', '<']) else {
            continue;
        };
        if !chats.contains_key(who) {
            continue;
        }
        let typed = line.as_bytes()[who.len()] == b'>';
        let mut content = rest.strip_prefix(' ').unwrap_or(rest).to_string();
        for (from, to) in replace {
            content = content.replace(from, to);
        }
        lines += 1;
        if typed {
            // Everything shown before this line was typed, in every
            // terminal, is there.
            for (other, o) in chats.iter_mut() {
                o.catch_up(other);
            }
            let t = chats.get_mut(who).expect("a chat");
            let stdin = t.stdin.as_mut().expect("stdin");
            stdin
                .write_all(format!("{content}\n").as_bytes())
                .and_then(|()| stdin.flush())
                .expect("type a line");
        } else if !content.starts_with("* connected as ") {
            if let Some(t) = chats.get_mut(who) {
                t.expected.push(content);
            }
        }
    }
    for (who, t) in chats.iter_mut() {
        t.catch_up(who);
    }
    lines
}

/// "Peer to peer", the two `chat --p2p` terminals: the server and the chats
/// as written (each chat with `--addr` of the test's server, and its
/// `--p2p-listen` port a free one), the first transcript, the server
/// stopped, the second transcript; alice exits on `/quit`, bob at the end
/// of his input, both with status 0.
#[test]
fn two_chat_peers_work_as_written() {
    let text = p2p_section();
    let part = text
        .split("The same with the command-line client")
        .nth(1)
        .expect("the chat walkthrough");
    let (before, after) = part
        .split_once("Now stop the server")
        .expect("the server is stopped halfway");
    let code = code_lines(before);
    let serve = code
        .iter()
        .find_map(|l| l.strip_prefix("switchboard serve"))
        .expect("a serve line");
    let flags: Vec<&str> = serve.split_whitespace().collect();
    let mut server = ServerProc::start(&flags);
    let addr = server.addr.to_string();
    let mut replace: Vec<(String, String)> = Vec::new();
    let mut chats = BTreeMap::new();
    for line in code.iter().filter(|l| l.starts_with("switchboard chat ")) {
        let mut args: Vec<String> = line.split_whitespace().skip(1).map(String::from).collect();
        let user = args
            .iter()
            .skip_while(|a| *a != "--user")
            .nth(1)
            .expect("--user NAME")
            .clone();
        if let Some(listen) = args.iter_mut().skip_while(|a| *a != "--p2p-listen").nth(1) {
            let written: std::net::SocketAddr = listen.parse().expect("IP:PORT");
            let (free, port) = port_like(written.port());
            drop(free);
            replace.push((written.port().to_string(), port.to_string()));
            *listen = format!("{}:{port}", written.ip());
        }
        args.extend(["--addr".to_string(), addr.clone()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = spawn_piped(&user, BIN, &args, None);
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let stdin = child.stdin.take();
        chats.insert(
            user,
            ChatTerminal {
                child,
                stdin,
                lines,
                shown: Vec::new(),
                expected: Vec::new(),
            },
        );
    }
    assert_eq!(chats.len(), 2, "two chats");
    let replace: Vec<(&str, String)> = replace
        .iter()
        .map(|(from, to)| (from.as_str(), to.clone()))
        .collect();
    let first = replay_chats(&mut chats, &code, &replace);
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    let second = replay_chats(&mut chats, &code_lines(after), &replace);
    assert!(
        first >= 11 && second >= 7,
        "too few lines: {first}, {second}"
    );
    for (who, t) in chats.iter_mut() {
        // alice typed /quit; bob's input ends.
        t.stdin = None;
        let status = wait_child(&mut t.child, Duration::from_secs(10))
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("{who} did not exit"));
        assert!(status.success(), "{who}: {status}");
    }
}
