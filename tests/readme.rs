//! The README's walkthroughs, followed as written, in the order written,
//! against the server its own text starts (issue 11): if the README and the
//! server drift apart, this fails.
//!
//! - The set-up commands: the test command is the one `.ci/run` runs.
//! - "Two people chatting with `nc`": the server command's flags, then every
//!   `alice>`/`bob>` line typed and every `alice<`/`bob<` line expected, in
//!   order, on two real connections. (The listening address is the test's
//!   own loopback port instead of 7420, so that tests can run side by side.)

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
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
        assert_eq!(
            self.shown, self.expected,
            "{who}'s terminal differs from the README"
        );
    }
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
        let content = rest.strip_prefix(' ').unwrap_or(rest);
        lines += 1;
        let t = terminals.entry(who.to_string()).or_insert_with(|| {
            let stream = TcpStream::connect(server.addr).expect("nc connects");
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
    let server = ServerProc::start_in(dir, &serve_args(&flags));
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
