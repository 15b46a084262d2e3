//! One server over several poll loops (`--threads N`, protocol.md section
//! 11): loop 0 accepts and hands connections round-robin, so consecutive
//! clients land on different loops. A randomized publish/subscribe run
//! checked against an exact model, `STATS` and `WHO` summed over the
//! loops, a queue group spread over loops, `REQUEST` across loops, and the
//! connection limit holding for the whole server.
//!
//! The randomized run prints its seed; `SWITCHBOARD_TEST_SEED=N` replays
//! one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;

/// `serve` on loopback with `--threads N` (set here, not from
/// `SWITCHBOARD_TEST_THREADS`) and `extra`.
#[track_caller]
fn server(threads: usize, extra: &[&str]) -> ServerProc {
    let n = threads.to_string();
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "off",
        "--ws-listen",
        "off",
        "--wss-listen",
        "off",
        "--threads",
        &n,
    ];
    args.extend_from_slice(extra);
    ServerProc::start_raw(&args)
}

fn seed() -> u64 {
    std::env::var("SWITCHBOARD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0100_b55e)
}

/// A STATS figure.
#[track_caller]
fn stat(c: &mut Client, key: &str) -> u64 {
    let lines = c.result("STATS 0");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in STATS: {lines:?}"))
}

// ---------------------------------------------------------------------------
// The randomized run
// ---------------------------------------------------------------------------

const CLIENTS: usize = 30;
const GROUPS: u32 = 6;
const ROUNDS: usize = 12;

/// In rounds: every client changes its subscriptions at random (each
/// change ACKed); then a few clients publish numbered messages to random
/// sets of groups (pipelined, ACKed); then every client reads exactly what
/// the model says it is owed (every message published while it was
/// subscribed to any of its groups, once, in each publisher's order) and a
/// `PING` round trip shows nothing else came. Reading everything owed
/// before the next round's changes is the barrier that makes the model
/// exact: no publish is in flight between loops when a subscription
/// changes.
fn randomized(threads: usize) {
    let seed = seed() ^ threads as u64;
    eprintln!("loops randomized run: threads {threads}, seed {seed} (SWITCHBOARD_TEST_SEED)");
    let srv = server(threads, &["--open-groups"]);
    let mut rng = Rng::new(seed);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let mut c = srv.login(&format!("c{i}"));
            c.label = format!("c{i} (threads {threads}, seed {seed})");
            c
        })
        .collect();
    let mut subs: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); CLIENTS];
    let mut next_seq = vec![0usize; CLIENTS];
    let mut total = 0usize;
    for round in 0..ROUNDS {
        // Subscription changes.
        for (i, c) in clients.iter_mut().enumerate() {
            for _ in 0..rng.below(3) {
                let n = 1 + rng.below(3);
                let groups: BTreeSet<u32> = (0..n)
                    .map(|_| 1 + rng.below(GROUPS as usize) as u32)
                    .collect();
                let list: Vec<String> = groups.iter().map(u32::to_string).collect();
                if rng.below(3) == 0 {
                    c.ack(&format!("UNSUBSCRIBE 0 {}", list.join(" ")));
                    for g in &groups {
                        subs[i].remove(g);
                    }
                } else {
                    c.ack(&format!("SUBSCRIBE 0 {}", list.join(" ")));
                    subs[i].extend(groups);
                }
            }
        }
        // Publishes: (publisher, seq, groups).
        let mut published: Vec<(usize, usize, Vec<u32>)> = Vec::new();
        let publishers: BTreeSet<usize> =
            (0..1 + rng.below(6)).map(|_| rng.below(CLIENTS)).collect();
        for &p in &publishers {
            let count = 1 + rng.below(15);
            let mut bytes = Vec::new();
            for _ in 0..count {
                let n = 1 + rng.below(3);
                let groups: Vec<u32> = (0..n)
                    .map(|_| 1 + rng.below(GROUPS as usize) as u32)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let args: Vec<String> = groups.iter().map(u32::to_string).collect();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let seq = next_seq[p];
                next_seq[p] += 1;
                bytes.extend(frame("PUBLISH", &args, format!("c{p}:{seq}").as_bytes()));
                published.push((p, seq, groups));
            }
            clients[p].send(&bytes);
        }
        for &p in &publishers {
            let count = published.iter().filter(|m| m.0 == p).count();
            for _ in 0..count {
                clients[p].expect_ack();
            }
        }
        // Everyone reads what it is owed, and nothing more.
        for (i, c) in clients.iter_mut().enumerate() {
            let owed: Vec<&(usize, usize, Vec<u32>)> = published
                .iter()
                .filter(|(_, _, gs)| gs.iter().any(|g| subs[i].contains(g)))
                .collect();
            total += owed.len();
            let mut want: BTreeMap<usize, Vec<(Vec<String>, String)>> = BTreeMap::new();
            for (p, seq, gs) in &owed {
                want.entry(*p).or_default().push((
                    gs.iter().map(u32::to_string).collect(),
                    format!("c{p}:{seq}"),
                ));
            }
            let mut got: BTreeMap<usize, Vec<(Vec<String>, String)>> = BTreeMap::new();
            for k in 0..owed.len() {
                let f = c.push();
                let from = f
                    .args
                    .first()
                    .and_then(|s| s.strip_prefix('c'))
                    .and_then(|s| s.parse::<usize>().ok());
                let Some(from) = from.filter(|_| f.ty == "PUBLISHED") else {
                    panic!(
                        "{}: round {round}: frame {k} of {} owed is {f:?}",
                        c.label,
                        owed.len()
                    );
                };
                got.entry(from)
                    .or_default()
                    .push((f.args[1..].to_vec(), f.text()));
            }
            let extra = c.sync();
            assert!(
                extra.is_empty(),
                "{}: round {round}: more than the {} messages owed: {extra:?}",
                c.label,
                owed.len()
            );
            assert!(
                got == want,
                "{}: round {round}, subscribed to {:?}: got {got:?}\nexpected {want:?}",
                c.label,
                subs[i]
            );
        }
    }
    eprintln!("threads {threads}: {total} deliveries checked");
    assert!(total > 100, "the run checked only {total} deliveries");
    // Nothing arrives late.
    std::thread::sleep(Duration::from_millis(200));
    for c in &mut clients {
        c.expect_quiet("after the last round");
    }
}

#[test]
fn randomized_pubsub_over_four_loops() {
    randomized(4);
}

#[test]
fn randomized_pubsub_over_two_loops() {
    randomized(2);
}

// ---------------------------------------------------------------------------
// STATS, WHO, queue groups, REQUEST, the connection limit
// ---------------------------------------------------------------------------

#[test]
fn stats_and_who_cover_every_loop() {
    let srv = server(4, &["--open-groups"]);
    let mut clients: Vec<Client> = (0..10).map(|i| srv.login(&format!("u{i}"))).collect();
    // One more connection, not logged in.
    let mut anon = srv.connect();
    anon.ping();
    for (i, c) in clients.iter_mut().enumerate() {
        c.ack(&format!("SUBSCRIBE 0 {}", 1 + i % 3));
    }
    let c = &mut clients[3];
    assert_eq!(stat(c, "connections"), 11);
    assert_eq!(stat(c, "sessions"), 10);
    assert_eq!(stat(c, "users"), 10);
    assert_eq!(stat(c, "subscriptions"), 10);
    let mut who = c.result("WHO 0");
    who.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
    want.sort();
    assert_eq!(who, want);
    let mut g1 = c.result("WHO 0 1");
    g1.sort();
    assert_eq!(g1, ["u0", "u3", "u6", "u9"]);
    // The same seen from every loop.
    for c in clients.iter_mut() {
        let mut w = c.result("WHO 0");
        w.sort();
        assert_eq!(w, want, "{}", c.label);
        assert_eq!(stat(c, "connections"), 11, "{}", c.label);
    }
    // A second session of a user on another loop counts once in users.
    let mut again = srv.login("u0");
    assert_eq!(stat(&mut again, "sessions"), 11);
    assert_eq!(stat(&mut again, "users"), 10);
    drop(again);
    drop(anon);
    let c = &mut clients[0];
    let ok = wait_until(Duration::from_secs(3), || stat(c, "connections") == 10);
    assert!(ok, "connections after two left: {}", stat(c, "connections"));
    // Counters sum too: every PUBLISH is counted once.
    let before = stat(c, "published");
    for c in clients.iter_mut() {
        c.send_frame("PUBLISH", &["1"], b"x");
        c.expect_ack();
    }
    let c = &mut clients[0];
    assert_eq!(stat(c, "published") - before, 10);
}

/// `GET /metrics` of a server with a metrics listener, as `name value`
/// (labels kept in the name).
fn scrape(addr: &str) -> BTreeMap<String, u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// The metrics listener (on the first loop) adds up every loop's figures
/// as `STATS` does; it reported the first loop's alone before.
#[test]
fn metrics_add_up_every_loop() {
    let srv = server(4, &["--metrics-listen", "127.0.0.1:0", "--open-groups"]);
    let line = srv
        .wait_log("metrics listening on ", Duration::from_secs(10))
        .expect("the metrics listener's line");
    let addr = line
        .split("metrics listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("its address")
        .to_owned();
    // Eight sessions over the four loops, u0 twice.
    let mut clients: Vec<Client> = (0..8).map(|i| srv.login(&format!("u{}", i % 7))).collect();
    for c in clients.iter_mut() {
        c.ack("SUBSCRIBE 0 1");
        c.ack("PUBLISH 1 1\nx");
    }
    let want = [
        ("switchboard_connections{transport=\"tcp\"}", 8),
        ("switchboard_sessions", 8),
        ("switchboard_users", 7),
        ("switchboard_subscriptions", 8),
        ("switchboard_published_total", 8),
        // The i-th publish reaches the i subscribed so far.
        ("switchboard_delivered_total", 36),
    ];
    let mut got = BTreeMap::new();
    // Each loop's figures are those of its latest turn: bounded wait.
    let ok = wait_until(Duration::from_secs(5), || {
        got = scrape(&addr);
        want.iter().all(|(k, v)| got.get(*k) == Some(v))
    });
    assert!(ok, "want {want:?}, got {got:#?}");
    assert!(
        got.get("switchboard_rss_bytes")
            .is_some_and(|&r| r > 1 << 20)
    );
    assert_eq!(stat(&mut clients[5], "users"), 7);
    assert_eq!(stat(&mut clients[5], "delivered"), 36);
}

#[test]
fn a_queue_group_over_loops_shares_work_exactly_once() {
    let srv = server(4, &["--open-groups"]);
    let mut workers: Vec<Client> = (0..8).map(|i| srv.login(&format!("w{i}"))).collect();
    for w in workers.iter_mut() {
        w.ack("QSUBSCRIBE 0 work 50");
    }
    let mut plain = srv.login("plain");
    plain.ack("SUBSCRIBE 0 50");
    let mut pubs: Vec<Client> = (0..4).map(|i| srv.login(&format!("p{i}"))).collect();
    const PER: usize = 60;
    for (i, p) in pubs.iter_mut().enumerate() {
        let mut bytes = Vec::new();
        for s in 0..PER {
            bytes.extend(frame("PUBLISH", &["50"], format!("p{i}:{s}").as_bytes()));
        }
        p.send(&bytes);
    }
    for p in pubs.iter_mut() {
        for _ in 0..PER {
            p.expect_ack();
        }
    }
    let all: BTreeSet<String> = (0..4)
        .flat_map(|i| (0..PER).map(move |s| format!("p{i}:{s}")))
        .collect();
    // The plain subscriber gets everything, in each publisher's order.
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..all.len() {
        let f = plain.push();
        assert_eq!(f.ty, "PUBLISHED", "{f:?}");
        let text = f.text();
        let (p, s) = text.split_once(':').expect("p:s");
        let s: usize = s.parse().expect("seq");
        if let Some(prev) = last.insert(p.to_string(), s) {
            assert!(s > prev, "plain: {text} after {p}:{prev}");
        }
    }
    plain.expect_quiet("every message once");
    // The workers share them: each exactly once in all.
    let mut shared: Vec<String> = Vec::new();
    let mut busy = 0;
    for w in workers.iter_mut() {
        let got: Vec<String> = w
            .sync()
            .into_iter()
            .map(|f| {
                assert_eq!(f.ty, "PUBLISHED", "{}: {f:?}", w.label);
                f.text()
            })
            .collect();
        busy += usize::from(!got.is_empty());
        shared.extend(got);
    }
    // Late arrivals from other loops: read until the count is reached.
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    while shared.len() < all.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        for w in workers.iter_mut() {
            shared.extend(w.sync().into_iter().map(|f| f.text()));
        }
    }
    let unique: BTreeSet<String> = shared.iter().cloned().collect();
    assert_eq!(
        shared.len(),
        unique.len(),
        "a message reached two workers of the queue group"
    );
    assert_eq!(unique, all, "every message reaches one worker");
    assert!(busy >= 2, "the work went to {busy} worker(s) only");
}

#[test]
fn request_across_loops() {
    let srv = server(4, &["--open-groups"]);
    let mut responder = srv.login("responder");
    responder.ack("SUBSCRIBE 0 60");
    let mut askers: Vec<Client> = (0..6).map(|i| srv.login(&format!("asker{i}"))).collect();
    for round in 0..3 {
        for (i, a) in askers.iter_mut().enumerate() {
            let q = format!("q{round}.{i}");
            a.send_frame("REQUEST", &["60", "5000"], q.as_bytes());
            let f = responder.push();
            assert!(
                f.ty == "REQUESTED" && f.args.len() == 3 && f.args[0] == format!("asker{i}"),
                "{f:?}"
            );
            assert_eq!(f.text(), q);
            responder.send_frame("REPLY", &[&f.args[2]], format!("a:{q}").as_bytes());
            responder.expect_ack();
            assert_eq!(a.expect_result(), format!("a:{q}").as_bytes());
        }
    }
    // Pipelined: every asker asks before the responder answers.
    for (i, a) in askers.iter_mut().enumerate() {
        a.send_frame("REQUEST", &["60"], format!("p{i}").as_bytes());
    }
    let mut asked = Vec::new();
    for _ in 0..askers.len() {
        let f = responder.push();
        assert_eq!(f.ty, "REQUESTED", "{f:?}");
        asked.push(f);
    }
    for f in asked.iter().rev() {
        responder.send_frame("REPLY", &[&f.args[2]], format!("r-{}", f.text()).as_bytes());
        responder.expect_ack();
    }
    for (i, a) in askers.iter_mut().enumerate() {
        assert_eq!(a.expect_result(), format!("r-p{i}").as_bytes());
    }
    // Nobody on any loop.
    askers[1].send_frame("REQUEST", &["61"], b"anyone?");
    askers[1].expect_err("no-responders");
    // The responder leaves; its loop's view is gone everywhere.
    responder.ack("UNSUBSCRIBE 0 60");
    for a in askers.iter_mut() {
        a.send_frame("REQUEST", &["60"], b"still?");
        a.expect_err("no-responders");
    }
}

#[test]
fn max_connections_holds_for_the_whole_server() {
    let srv = server(4, &["--max-connections", "10"]);
    let mut held: Vec<Client> = (0..10).map(|i| srv.login(&format!("h{i}"))).collect();
    for _ in 0..3 {
        let mut extra = Client::connect(srv.addr, "over the limit");
        extra.expect_err("server-full");
        extra.expect_closed();
    }
    // The refused connections leave the table once their peers' closes are
    // read (on whichever loop they were handed to): wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut connections = stat(&mut held[5], "connections");
    while connections != 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        connections = stat(&mut held[5], "connections");
    }
    assert_eq!(connections, 10);
    for c in held.iter_mut() {
        c.ping();
    }
    // Room for exactly one after one leaves.
    drop(held.pop());
    let mut admitted = None;
    let ok = wait_until(Duration::from_secs(3), || {
        let mut c = Client::connect(srv.addr, "after one left");
        if c.try_send(b"USER 0 newcomer\n").is_err() {
            return false;
        }
        match c.read_raw(READ_TIMEOUT) {
            Ok(f) if f.ty == "ACK" => {
                admitted = Some(c);
                true
            }
            Ok(f) if f.is("ERR", &["server-full"]) => false,
            Err(ReadError::Closed { .. }) => false,
            other => panic!("expected ACK or ERR server-full, got {other:?}"),
        }
    });
    assert!(ok, "no room 3 s after a connection left");
    let mut extra = Client::connect(srv.addr, "over the limit again");
    extra.expect_err("server-full");
    extra.expect_closed();
    // The refused connection counts while it closes; then 10 again.
    let c = &mut held[0];
    let ok = wait_until(Duration::from_secs(3), || stat(c, "connections") == 10);
    assert!(ok, "connections: {}", stat(c, "connections"));
}
