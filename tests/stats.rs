//! `STATS 0` and the metrics listener (protocol.md section 10, cli.md
//! `--metrics-listen`), against the real binary on loopback; the metrics
//! are read by a parser no one here wrote (Python's `prometheus_client`).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// Every key of protocol.md section 10, in its order, then the
/// directory's (docs/protocol.md section 6).
const KEYS: [&str; 29] = [
    "uptime_s",
    "connections",
    "connections_tcp",
    "connections_tls",
    "connections_ws",
    "sessions",
    "users",
    "groups",
    "subscriptions",
    "frames_in",
    "frames_out",
    "bytes_in",
    "bytes_out",
    "published",
    "delivered",
    "slow_consumers",
    "auth_failures",
    "tls_handshakes",
    "limits_refused",
    "log_lines_dropped",
    "rss_bytes",
    "loop_turn_max_us",
    "directory_entries",
    "probes",
    "probe_failures",
    "cluster_members",
    "cluster_notes_sent",
    "cluster_notes_received",
    "cluster_dropped",
];

const COUNTERS: [&str; 16] = [
    "frames_in",
    "frames_out",
    "bytes_in",
    "bytes_out",
    "published",
    "delivered",
    "slow_consumers",
    "auth_failures",
    "tls_handshakes",
    "limits_refused",
    "log_lines_dropped",
    "probes",
    "probe_failures",
    "cluster_notes_sent",
    "cluster_notes_received",
    "cluster_dropped",
];

fn stats(c: &mut Client) -> BTreeMap<String, u64> {
    let lines = c.result("STATS 0");
    let keys: Vec<&str> = lines
        .iter()
        .map(|l| l.split_once('=').expect("key=value").0)
        .collect();
    assert_eq!(keys, KEYS, "every key, in order");
    lines
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("key=value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn stats_has_every_key_and_its_counters_move() {
    let certs = CertDir::new(&[]);
    let mut args = certs.server_args();
    args.extend(
        [
            "--open-groups",
            "--max-subscriptions",
            "2",
            "--group",
            "1=general",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProc::start_tls(&args);
    let mut anon = server.connect();
    anon.err("STATS 0", "auth-required");
    let mut a = server.login("alice");
    let before = stats(&mut a);
    assert_eq!(before["sessions"], 1);
    assert_eq!(before["users"], 1);
    assert_eq!(before["connections"], 2);
    assert_eq!(before["connections_tcp"], 2);
    assert_eq!(before["connections_tls"], 0);
    assert_eq!(before["connections_ws"], 0);
    assert_eq!(before["groups"], 1);
    assert!(before["rss_bytes"] > 1 << 20, "{before:?}");
    let tls = certs.client_config(&[&rustls::version::TLS13]);
    let _t = server.tls_login(&tls, "tina");
    let mut b = server.login("Bob");
    let _b2 = server.login("bob");
    b.ack("SUBSCRIBE 0 1 2");
    a.ack("SUBSCRIBE 0 1");
    b.err("SUBSCRIBE 0 3", "limit");
    a.ack("PUBLISH 2 1\nhi");
    b.expect_published("alice", &["1"], b"hi");
    let after = stats(&mut a);
    assert_eq!(after["sessions"], 4, "{after:?}");
    assert_eq!(after["users"], 3);
    assert_eq!(after["connections"], 5);
    assert_eq!(after["connections_tls"], 1);
    assert_eq!(after["connections_tcp"], 4);
    assert_eq!(after["tls_handshakes"], 1);
    assert_eq!(after["groups"], 2);
    assert_eq!(after["subscriptions"], 3);
    assert_eq!(after["published"], 1);
    assert_eq!(after["delivered"], 2);
    assert_eq!(after["limits_refused"], 1);
    for key in COUNTERS {
        assert!(after[key] >= before[key], "{key} went down");
    }
    for key in ["frames_in", "frames_out", "bytes_in", "bytes_out"] {
        assert!(after[key] > before[key], "{key} did not move: {after:?}");
    }
    drop(b);
    // Bob's close is read by his loop; with several loops (SWITCHBOARD_TEST_
    // THREADS), not necessarily before Alice's next command: wait, bounded.
    let mut later = stats(&mut a);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while later["sessions"] != 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        later = stats(&mut a);
    }
    assert_eq!(later["sessions"], 3, "{later:?}");
    assert_eq!(later["subscriptions"], 1);
}

#[test]
fn auth_failures_and_slow_consumers_are_counted() {
    let dir = TempDir::new("stats-passwd");
    let file = dir.join("passwd");
    passwd(&file, "alice", "right");
    let file = path_str(&file).to_string();
    let server = ServerProc::start(&[
        "--auth",
        "password",
        "--passwd",
        &file,
        "--max-pending",
        "65536",
        "--open-groups",
    ]);
    let mut bad = server.connect();
    bad.ack("USER 0 alice");
    bad.err("PASS 0 wrong", "auth-failed");
    let mut a = server.login_password("alice", "right");
    let mut check = server.login_password("alice", "right");
    // A subscriber that never reads, flooded past --max-pending.
    let mut slow = server.login_password("alice", "right");
    slow.ack("SUBSCRIBE 0 1");
    // Published in rounds until the kernel's socket buffers (which grow to
    // several megabytes on loopback) are full and the server's queue passes
    // the bound: 40 rounds of 2.4 MB at most.
    let big = "x".repeat(60_000);
    let mut s = stats(&mut check);
    for _ in 0..40 {
        for _ in 0..40 {
            a.send(format!("PUBLISH {} 1\n{big}", big.len()).as_bytes());
        }
        for _ in 0..25 {
            if s["slow_consumers"] >= 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            s = stats(&mut check);
        }
        if s["slow_consumers"] >= 1 {
            break;
        }
    }
    assert_eq!(s["auth_failures"], 1, "{s:?}");
    assert!(s["slow_consumers"] >= 1);
}

/// The metrics listener's address, from its log line.
fn metrics_addr(server: &ServerProc) -> SocketAddr {
    let line = server
        .wait_log("metrics listening on ", Duration::from_secs(10))
        .expect("metrics listener logged");
    let rest = line.split("metrics listening on ").nth(1).expect("address");
    rest.split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .expect("an address")
}

/// Scrapes `/metrics` with Python's urllib and parses it with
/// `prometheus_client`'s text parser; returns `family type sample{labels}
/// value` lines.
fn scrape(addr: SocketAddr) -> Vec<String> {
    let script = format!(
        r#"
import urllib.request
from prometheus_client.parser import text_string_to_metric_families
with urllib.request.urlopen("http://{addr}/metrics", timeout=10) as r:
    assert r.status == 200, r.status
    ctype = r.headers["Content-Type"]
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    text = r.read().decode()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = ",".join(f"{{k}}={{v}}" for k, v in sorted(s.labels.items()))
        print(family.name, family.type, s.name + "{{" + labels + "}}", int(s.value))
"#
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "scrape failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(String::from)
        .collect()
}

fn sample(lines: &[String], sample: &str) -> u64 {
    lines
        .iter()
        .find_map(|l| {
            let mut parts = l.split(' ');
            let (_, _, name, value) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            (name == sample).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no sample {sample} in {lines:#?}"))
}

#[test]
fn metrics_are_prometheus_text_that_a_real_parser_reads() {
    let server = ServerProc::start(&["--metrics-listen", "127.0.0.1:0", "--open-groups"]);
    let addr = metrics_addr(&server);
    let first = scrape(addr);
    for key in KEYS {
        let counter = COUNTERS.contains(&key);
        let (family, kind) = if counter {
            (format!("switchboard_{key}"), "counter")
        } else {
            (format!("switchboard_{key}"), "gauge")
        };
        assert!(
            first
                .iter()
                .any(|l| l.starts_with(&format!("{family} {kind} "))),
            "no {kind} {family} in {first:#?}"
        );
        if counter {
            sample(&first, &format!("switchboard_{key}_total{{}}"));
        }
    }
    for transport in ["tcp", "tls", "ws"] {
        sample(
            &first,
            &format!("switchboard_connections{{transport={transport}}}"),
        );
    }
    let mut a = server.login("alice");
    a.ack("SUBSCRIBE 0 5");
    a.ack("PUBLISH 2 5\nhi");
    a.ping();
    let second = scrape(addr);
    assert_eq!(sample(&second, "switchboard_connections{transport=tcp}"), 1);
    assert_eq!(sample(&second, "switchboard_sessions{}"), 1);
    assert_eq!(sample(&second, "switchboard_published_total{}"), 1);
    assert!(
        sample(&second, "switchboard_frames_in_total{}")
            > sample(&first, "switchboard_frames_in_total{}")
    );
    // Anything but GET /metrics.
    let other = std::process::Command::new("python3")
        .args([
            "-c",
            &format!(
                "import urllib.request, urllib.error\n\
                 try:\n    urllib.request.urlopen('http://{addr}/', timeout=10)\n\
                 except urllib.error.HTTPError as e:\n    print(e.code)"
            ),
        ])
        .output()
        .expect("python3 runs");
    assert_eq!(String::from_utf8_lossy(&other.stdout).trim(), "404");
}

/// A metrics connection that sends garbage gets 400 and is closed, and the
/// broker goes on. (One that sends nothing is answered 408 after 10 s.)
#[test]
fn metrics_connections_are_bounded() {
    use std::io::{Read, Write};
    let server = ServerProc::start(&["--metrics-listen", "127.0.0.1:0"]);
    let addr = metrics_addr(&server);
    let mut garbage = std::net::TcpStream::connect(addr).expect("connect");
    garbage
        .write_all(b"\x00\x01\x02 nonsense\r\n\r\n")
        .expect("write");
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = String::new();
    garbage.read_to_string(&mut got).expect("read to close");
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    let mut a = server.login("alice");
    a.ping();
}

/// `switchboard stats [ADDR]` prints every figure; `--watch` prints rates.
#[test]
fn the_stats_command_prints_the_figures_and_rates() {
    let server = ServerProc::start(&["--open-groups"]);
    let addr = server.addr.to_string();
    let out = run_bin(&["stats", &addr], None, Duration::from_secs(20));
    assert!(out.status.success(), "{}", out.stderr);
    let keys: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(keys, KEYS, "{}", out.stdout);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["sessions", "1"]),
        "{}",
        out.stdout
    );
    // A publisher beside --watch: the rate column moves.
    let mut a = server.login("alice");
    a.ack("SUBSCRIBE 0 1");
    let publisher = std::thread::spawn(move || {
        for _ in 0..40 {
            a.ack("PUBLISH 1 1\nx");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let out = run_bin(
        &["stats", &addr, "--watch", "0.3", "--count", "2"],
        None,
        Duration::from_secs(20),
    );
    publisher.join().expect("publisher");
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[0].split_whitespace().any(|h| h == "pub/s"));
    let pub_rate: f64 = lines[1]
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .expect("a rate");
    assert!(pub_rate > 1.0, "{}", out.stdout);
    let bad = run_bin(
        &["stats", &addr, "--watch", "0"],
        None,
        Duration::from_secs(20),
    );
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("--watch"), "{}", bad.stderr);
}
