//! Per-session, per-user and open-group limits (protocol.md 7a, cli.md),
//! and work that grows with a client's input staying cheap per item
//! (issue 10), against the real binary on loopback.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn limits_refuse_with_err_limit_and_the_session_goes_on() {
    let server = ServerProc::start(&[
        "--open-groups",
        "--max-subscriptions",
        "3",
        "--max-sessions-per-user",
        "2",
        "--max-open-groups",
        "4",
    ]);
    let mut a = server.login("alice");
    a.ack("SUBSCRIBE 0 1 2");
    a.ack("WATCH 0 1");
    a.err("SUBSCRIBE 0 3", "limit");
    a.err("WATCH 0 2", "limit");
    // Nothing of a refused command took effect.
    assert!(a.result("WHO 0 3").is_empty());
    a.ack("UNWATCH 0 1");
    a.ack("SUBSCRIBE 0 3");
    // Sessions per user.
    let _a2 = server.login("Alice");
    let mut a3 = server.connect();
    a3.err("USER 0 alice", "limit");
    a3.err("GROUPS 0", "auth-required");
    a3.ack("USER 0 carol");
    // Groups created by use: 1, 2, 3 exist; one more may be made.
    let mut b = server.login("bob");
    b.ack("SUBSCRIBE 0 4");
    b.err("SUBSCRIBE 0 5", "limit");
    b.err("PUBLISH 1 6\nx", "limit");
    a.ping();
}

/// Issue 10, defect 1: one session subscribed to many open groups froze
/// the loop when it disconnected (leaving took the groups out of its sorted
/// list one by one from the front: quadratic). Another client's round trips
/// stay short while it goes.
#[test]
fn leaving_many_groups_does_not_stall_others() {
    let server = ServerProc::start(&[
        "--open-groups",
        "--max-subscriptions",
        "300000",
        "--max-open-groups",
        "300000",
    ]);
    let mut big = server.login("big");
    let groups = 200_000u32;
    let mut g = 1;
    let mut batch = String::new();
    while g <= groups {
        let last = (g + 63).min(groups);
        let list: Vec<String> = (g..=last).map(|x| x.to_string()).collect();
        batch.push_str(&format!("SUBSCRIBE 0 {}\n", list.join(" ")));
        g = last + 1;
    }
    let commands = batch.lines().count();
    big.send(batch.as_bytes());
    for _ in 0..commands {
        big.expect_ack();
    }
    let mut other = server.login("other");
    other.ping();
    drop(big);
    let mut worst = Duration::ZERO;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        let t = Instant::now();
        other.ping();
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_millis(1000),
        "a round trip took {worst:?} while a session left {groups} groups"
    );
}
