//! The built-in chat page (src/web/chat.html) in a real browser: headless
//! Chromium driven by Selenium (tests/browser/chat_page.py) against the real
//! server, with plain TCP clients on the other side.
//!
//! The page logs in (the server asks for a password), joins a group,
//! publishes, and exchanges group and one-to-one messages with a TCP client;
//! it shows a presence event and readable errors, answers the server's
//! keep-alive pings, and reconnects by itself (log in, rejoin) when the server
//! is restarted under it. The script and this test pace each other through
//! what each side sees (the script's docstring has the sequence).
//!
//! Needs `chromium`, `chromium-driver` (Debian) and Python's `selenium`:
//! `.ci/run` installs them. Without them the test fails, saying so.
//! `SWITCHBOARD_SCREENSHOT=docs/chat-page.png cargo test --test browser`
//! saves the final screenshot there (relative to the crate) instead of a
//! temporary directory.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The page as the server embeds it.
const PAGE: &[u8] = include_bytes!("../src/web/chat.html");
/// Longest wait for the browser to do any one thing (Chromium's start included).
const BROWSER_STEP: Duration = Duration::from_secs(60);
/// The script's own limit is 120 s; this is the backstop.
const BROWSER_TOTAL: Duration = Duration::from_secs(150);

const USER: &str = "dave";
const PASSWORD: &str = "dave's secret";
const PEER: &str = "carol";
const LATE: &str = "erin";

/// Panics (the test fails, it does not skip) when a tool the test needs is missing.
fn require_tools() {
    let mut missing = Vec::new();
    if !have_program("python3") {
        missing.push("python3");
    }
    if !(have_program("chromium") || have_program("chromium-browser")) {
        missing.push("chromium");
    }
    if !have_program("chromedriver") {
        missing.push("chromium-driver (chromedriver)");
    }
    let selenium = Command::new("python3")
        .args(["-c", "import selenium"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !selenium {
        missing.push("selenium (Python)");
    }
    assert!(
        missing.is_empty(),
        "the browser test needs {}: run .ci/run, or `apt-get install chromium chromium-driver` \
         and `python3 -m pip install selenium`",
        missing.join(", ")
    );
}

/// The `ws listening on ADDR` address from the server's log.
#[track_caller]
fn ws_addr(server: &ServerProc) -> SocketAddr {
    const MARK: &str = "ws listening on ";
    let Some(line) = server.wait_log(MARK, START_TIMEOUT) else {
        panic!("the server did not log `{MARK}ADDR`\n{}", server.log_text());
    };
    let at = line.find(MARK).unwrap_or_default() + MARK.len();
    let token = line[at..].split_whitespace().next().unwrap_or_default();
    token
        .parse()
        .unwrap_or_else(|e| panic!("cannot parse the address in {line:?}: {e}"))
}

/// `GET /` without an upgrade returns the page itself, as HTML.
#[track_caller]
fn assert_serves_page(addr: SocketAddr) {
    let mut s = TcpStream::connect_timeout(&addr, READ_TIMEOUT).expect("connect to ws listener");
    s.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("write GET");
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = Instant::now() + READ_TIMEOUT;
    // Until the whole body is in (the server may keep the connection open).
    while !got.ends_with(PAGE) && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 200") && head.contains("content-type: text/html"),
        "GET / on the WebSocket listener: expected 200 and text/html, got {head:?}"
    );
    assert!(
        got.ends_with(PAGE),
        "GET / on the WebSocket listener did not return src/web/chat.html ({} bytes received)",
        got.len()
    );
}

/// The Python driver (and the chromedriver and Chromium it starts), in a
/// process group of its own so that all of it can be killed.
struct Browser {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    /// Set once the script is reaped.
    status: Option<ExitStatus>,
}

impl Browser {
    #[track_caller]
    fn start(url: &str, screenshot: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/chat_page.py");
        let shot = screenshot.to_str().expect("UTF-8 path");
        let mut child = Command::new("python3")
            .arg(&script)
            .args([url, USER, PASSWORD, PEER, LATE, shot])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let pipes: [(Option<Box<dyn Read + Send>>, &str); 2] = [
            (child.stdout.take().map(|p| Box::new(p) as _), "out"),
            (child.stderr.take().map(|p| Box::new(p) as _), "err"),
        ];
        for (pipe, tag) in pipes {
            let Some(pipe) = pipe else { continue };
            let out = Arc::clone(&out);
            readers.push(thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut v) = out.lock() {
                        v.push(format!("[browser {tag}] {line}"));
                    }
                }
            }));
        }
        Self {
            child,
            out,
            readers,
            started: Instant::now(),
            status: None,
        }
    }

    fn output(&self) -> String {
        self.out.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    /// Whether the script has exited. It is not reaped here (its state in
    /// /proc is `Z`), so its process group id stays ours until [`Browser::kill`].
    fn finished(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) {
            // `PID (COMM) STATE ...`; COMM may hold spaces.
            Ok(stat) => {
                stat.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    == Some("Z")
            }
            Err(_) => true,
        }
    }

    /// Panics with the script's output if it has exited or run too long.
    #[track_caller]
    fn assert_running(&mut self, waiting_for: &str) {
        let finished = self.finished();
        if finished || self.started.elapsed() > BROWSER_TOTAL {
            let status = self.kill();
            panic!(
                "while the TCP side waited for {waiting_for}, the browser script {}:\n{}",
                if finished {
                    match status {
                        Some(s) => format!("exited ({s})"),
                        None => String::from("exited"),
                    }
                } else {
                    format!("ran over {BROWSER_TOTAL:?} and was killed")
                },
                self.output()
            );
        }
    }

    /// Waits (bounded) for the script to finish; panics unless it passed.
    #[track_caller]
    fn expect_pass(&mut self) {
        while !self.finished() && self.started.elapsed() < BROWSER_TOTAL {
            thread::sleep(Duration::from_millis(50));
        }
        match self.kill() {
            Some(s) if s.success() => {}
            other => panic!(
                "the browser script did not pass ({other:?}):\n{}",
                self.output()
            ),
        }
    }

    /// Kills the whole process group (Python, chromedriver, Chromium: the
    /// script's leader is not reaped yet, so the group is still ours), then
    /// reaps the script; its exit status.
    fn kill(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.status = self.child.wait().ok();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.status
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("---- browser output ----\n{}\n---- end ----", self.output());
        }
    }
}

/// Reads `client`'s pushed frames until one matches `want`, answering the
/// server's keep-alive pings meanwhile; panics if the browser script exits
/// or nothing matches within [`BROWSER_STEP`].
#[track_caller]
fn await_push(
    client: &mut Client,
    browser: &mut Browser,
    what: &str,
    want: impl Fn(&Frame) -> bool,
) -> Frame {
    let deadline = Instant::now() + BROWSER_STEP;
    let mut other = Vec::new();
    loop {
        browser.assert_running(what);
        assert!(
            Instant::now() < deadline,
            "{}: no {what} within {BROWSER_STEP:?}; other frames: {other:?}\n{}",
            client.label,
            browser.output()
        );
        let f = if client.pending() > 0 {
            client.push()
        } else {
            match client.read_raw(Duration::from_millis(200)) {
                Ok(f) => f,
                Err(ReadError::Timeout { .. }) => continue,
                Err(e) => panic!("{}: waiting for {what}: {e:?}", client.label),
            }
        };
        if f.is("PING", &[]) {
            client.send_line("PONG 0");
        } else if want(&f) {
            return f;
        } else {
            other.push(f);
        }
    }
}

fn screenshot_path(tmp: &TempDir) -> PathBuf {
    match std::env::var_os("SWITCHBOARD_SCREENSHOT") {
        Some(p) => Path::new(env!("CARGO_MANIFEST_DIR")).join(p),
        None => tmp.join("chat-page.png"),
    }
}

#[test]
fn chat_page_in_headless_chromium() {
    require_tools();
    let dir = TempDir::new("browser");
    let file = dir.join("passwd");
    for (user, password) in [(USER, PASSWORD), (PEER, "carol-pw"), (LATE, "erin-pw")] {
        passwd(&file, user, password);
    }
    let serve = |tcp: &str, ws: &str| -> ServerProc {
        ServerProc::start_raw(&[
            "serve",
            "--listen",
            tcp,
            "--tls-listen",
            "off",
            "--ws-listen",
            ws,
            "--wss-listen",
            "off",
            "--auth",
            "password",
            "--passwd",
            path_str(&file),
            "--group",
            "1=general",
            "--group",
            "2=random",
            // The page must answer the server's PINGs to stay connected.
            "--ping-interval",
            "1",
            "--ping-timeout",
            "1",
        ])
    };
    let server = serve("127.0.0.1:0", "127.0.0.1:0");
    let (tcp, ws) = (server.addr, ws_addr(&server));
    assert_serves_page(ws);

    let mut carol = server.login_password(PEER, "carol-pw");
    carol.ack("SUBSCRIBE 0 1");
    carol.ack("WATCH 0 1");

    let shot = screenshot_path(&dir);
    let _ = std::fs::remove_file(&shot);
    let mut browser = Browser::start(&format!("http://{ws}/"), &shot);

    // The page joins general and publishes.
    await_push(&mut carol, &mut browser, "the page joining general", |f| {
        f.is("JOINED", &[USER, "1"])
    });
    await_push(&mut carol, &mut browser, "the page's publish", |f| {
        f.is("PUBLISHED", &[USER, "1"]) && f.payload == b"hello from the browser"
    });

    // Group messages (UTF-8, and bytes that are not: a binary WebSocket
    // message) and a one-to-one message back.
    carol.send_frame("PUBLISH", &["1"], "hello from carol ✓ ünïcödé".as_bytes());
    carol.expect_ack();
    carol.send_frame("PUBLISH", &["1"], b"binary \xff\xfe");
    carol.expect_ack();
    carol.send_frame("SEND", &[USER], format!("psst, {USER}").as_bytes());
    carol.expect_ack();

    await_push(
        &mut carol,
        &mut browser,
        "the page's one-to-one message",
        |f| f.is("MESSAGE", &[USER]) && f.payload == b"thanks, carol",
    );

    // Presence: someone else joins the page's group.
    let mut erin = server.login_password(LATE, "erin-pw");
    erin.ack("SUBSCRIBE 0 1");
    await_push(
        &mut carol,
        &mut browser,
        "the page's request to drop",
        |f| f.is("MESSAGE", &[USER]) && f.payload == b"drop the connection",
    );

    // The server goes away under the page and comes back on the same ports.
    drop((carol, erin));
    drop(server.stop());
    let server = serve(&tcp.to_string(), &ws.to_string());
    let mut carol = server.login_password(PEER, "carol-pw");
    carol.ack("SUBSCRIBE 0 1");
    carol.ack("WATCH 0 1");
    // The page may be back already: then WHO 0 1 lists it and no JOINED comes.
    carol.send_line("WHO 0 1");
    if !carol.expect_result_lines().iter().any(|u| u == USER) {
        await_push(
            &mut carol,
            &mut browser,
            "the page rejoining general",
            |f| f.is("JOINED", &[USER, "1"]),
        );
    }
    carol.send_frame(
        "PUBLISH",
        &["1"],
        format!("welcome back, {USER}").as_bytes(),
    );
    carol.expect_ack();
    await_push(
        &mut carol,
        &mut browser,
        "the page's publish after reconnecting",
        |f| f.is("PUBLISHED", &[USER, "1"]) && f.payload == b"glad to be back",
    );

    browser.expect_pass();
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "no screenshot at {} ({} bytes)",
        shot.display(),
        png.len()
    );
    eprintln!(
        "browser test passed in {:?}; screenshot: {}",
        browser.started.elapsed(),
        shot.display()
    );
}
