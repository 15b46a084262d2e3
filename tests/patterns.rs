//! The patterns of protocol.md section 9 over real sockets: a work queue of
//! four workers beside a plain subscriber, request/reply through a queue
//! group with pipelined requests answered in order, a survey, ECHO off (a
//! bus), and a responder that never answers while others are served.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_work_queue_shares_the_work_and_a_plain_subscriber_sees_all() {
    let srv = ServerProc::start(&["--group", "1=jobs"]);
    let mut workers: Vec<Client> = (0..4).map(|i| srv.login(&format!("w{i}"))).collect();
    for w in &mut workers {
        w.ack("QSUBSCRIBE 0 pool 1");
    }
    let mut audit = srv.login("audit");
    audit.ack("SUBSCRIBE 0 1");
    let mut p = srv.login("boss");
    for n in 0..40 {
        p.send_frame("PUBLISH", &["1"], format!("job {n}").as_bytes());
        p.expect_ack();
    }
    let mut counts = Vec::new();
    for w in &mut workers {
        let mut got = 0;
        while let Ok(f) = w.read_raw(Duration::from_millis(200)) {
            assert!(f.is("PUBLISHED", &["boss", "1"]), "{f:?}");
            got += 1;
        }
        counts.push(got);
    }
    assert_eq!(counts, [10, 10, 10, 10], "round-robin over the pool");
    for n in 0..40 {
        audit.expect_published("boss", &["1"], format!("job {n}").as_bytes());
    }
}

#[test]
fn requests_are_answered_in_order_and_survey_collects() {
    let srv = ServerProc::start(&["--group", "1=svc"]);
    let mut resp = srv.login("resp");
    resp.ack("QSUBSCRIBE 0 svc 1");
    let mut req = srv.login("req");
    // Two requests and a PING pipelined: the replies in order.
    req.send(b"REQUEST 1 1 3000\naREQUEST 1 1 3000\nbPING 0\n");
    let mut rids = Vec::new();
    for want in [b"a", b"b"] {
        let f = resp.push();
        assert!(f.ty == "REQUESTED" && f.args[..2] == ["req", "1"], "{f:?}");
        assert_eq!(&f.payload, want);
        rids.push(f.args[2].clone());
    }
    // Answered in reverse order; the requester still sees them in its order.
    resp.send_frame("REPLY", &[&rids[1]], b"B");
    resp.expect_ack();
    resp.send_frame("REPLY", &[&rids[0]], b"A");
    resp.expect_ack();
    assert_eq!(req.expect_result(), b"A");
    assert_eq!(req.expect_result(), b"B");
    req.expect_pong();
    // A survey of the plain subscribers and queue members.
    let mut other = srv.login("other");
    other.ack("SUBSCRIBE 0 1");
    req.send_frame("SURVEY", &["1", "500"], b"ok?");
    for (c, answer) in [(&mut resp, &b"yes"[..]), (&mut other, b"no")] {
        let f = c.push();
        assert!(f.ty == "SURVEYED" && f.args[..2] == ["req", "1"], "{f:?}");
        c.send_frame("REPLY", &[&f.args[2]], answer);
        c.expect_ack();
    }
    let result = req.expect_result();
    let text = String::from_utf8_lossy(&result);
    assert!(text.contains("RESPONSE 3 resp\nyes"), "{text}");
    assert!(text.contains("RESPONSE 2 other\nno"), "{text}");
}

#[test]
fn a_silent_responder_times_out_without_holding_others_back() {
    let srv = ServerProc::start(&["--group", "1=svc"]);
    let mut silent = srv.login("silent");
    silent.ack("SUBSCRIBE 0 1");
    let mut req = srv.login("req");
    let started = Instant::now();
    req.send_frame("REQUEST", &["1", "700"], b"x");
    let mut other = srv.login("other");
    for _ in 0..5 {
        let t = Instant::now();
        other.ping();
        assert!(t.elapsed() < Duration::from_millis(200));
    }
    req.expect_err("timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // The expired request's REQUESTED; answering it late is refused.
    let old = silent.push();
    assert!(old.ty == "REQUESTED" && old.args[0] == "req", "{old:?}");
    silent.send_frame("REPLY", &[&old.args[2]], b"too late");
    silent.expect_err("bad-args");
    let mut lone = srv.login("lone");
    lone.send_frame("REQUEST", &["1"], b"x");
    let f = silent.push();
    assert!(f.ty == "REQUESTED" && f.args[..2] == ["lone", "1"], "{f:?}");
    silent.send_frame("REPLY", &[&f.args[2]], b"late but fine");
    silent.expect_ack();
    assert_eq!(lone.expect_result(), b"late but fine");
    // Nobody but oneself to ask: no-responders at once.
    silent.send_frame("REQUEST", &["1"], b"to myself?");
    silent.expect_err("no-responders");
}

#[test]
fn echo_off_makes_a_bus() {
    let srv = ServerProc::start(&["--group", "1=bus"]);
    let mut nodes: Vec<Client> = (0..3).map(|i| srv.login(&format!("n{i}"))).collect();
    for n in &mut nodes {
        n.ack("SUBSCRIBE 0 1");
        n.ack("ECHO 0 off");
    }
    nodes[0].send_frame("PUBLISH", &["1"], b"hello bus");
    nodes[0].expect_ack();
    nodes[1].expect_published("n0", &["1"], b"hello bus");
    nodes[2].expect_published("n0", &["1"], b"hello bus");
    assert!(
        nodes[0].read_raw(Duration::from_millis(200)).is_err(),
        "no echo"
    );
}
