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

/// Answers requests on group 2 with the payload upper-cased; records the
/// answers to its own requests.
struct Host {
    replies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl switchboard::Handler for Host {
    fn on_request(
        &mut self,
        ctx: &mut switchboard::Context<'_>,
        rid: &str,
        from: &str,
        group: u32,
        payload: &bytes::Bytes,
    ) {
        let answer = format!(
            "{from}@{group}: {}",
            String::from_utf8_lossy(payload).to_uppercase()
        );
        assert!(ctx.reply(rid, answer.as_bytes()));
    }
    fn on_reply(
        &mut self,
        _ctx: &mut switchboard::Context<'_>,
        rid: &str,
        outcome: switchboard::broker::RequestOutcome,
    ) {
        let text = match outcome {
            Ok(p) => format!("{rid} ok {}", String::from_utf8_lossy(&p)),
            Err(code) => format!("{rid} err {code}"),
        };
        if let Ok(mut r) = self.replies.lock() {
            r.push(text);
        }
    }
}

/// The embedding program answers requests no session takes, and sends its
/// own.
#[test]
fn the_embedding_program_answers_and_sends_requests() {
    let mut config = switchboard::ServerConfig {
        listen: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))],
        ..switchboard::ServerConfig::default()
    };
    config.groups = vec![(1, "svc".into()), (2, "host".into())];
    let replies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = switchboard::Server::bind(
        config,
        Host {
            replies: std::sync::Arc::clone(&replies),
        },
    )
    .expect("bind");
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let run = std::thread::spawn(move || server.run().expect("run"));
    handle
        .call(|ctx| ctx.serve_requests(2, true))
        .expect("call");
    let mut alice = Client::connect(addr, "alice");
    alice.send_line("USER 0 alice");
    alice.expect_ack();
    alice.send_frame("REQUEST", &["2"], b"hi");
    assert_eq!(alice.expect_result(), b"alice@2: HI");
    // The program asks alice, who serves group 1.
    alice.ack("SUBSCRIBE 0 1");
    let (tx, rx) = std::sync::mpsc::channel();
    handle
        .call(move |ctx| {
            let _ = tx.send(ctx.request(1, b"status?", Duration::from_secs(2)));
        })
        .expect("call");
    let rid = rx
        .recv_timeout(READ_TIMEOUT)
        .expect("answer")
        .expect("a responder");
    let f = alice.push();
    assert!(f.is("REQUESTED", &["@server", "1", &rid]), "{f:?}");
    alice.send_frame("REPLY", &[&rid], b"all good");
    alice.expect_ack();
    let deadline = Instant::now() + READ_TIMEOUT;
    while replies.lock().map(|r| r.is_empty()).unwrap_or(true) {
        assert!(Instant::now() < deadline, "no on_reply");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        replies.lock().map(|r| r.clone()).unwrap_or_default(),
        [format!("{rid} ok all good")]
    );
    // Surveys: the program answers one of group 2, and surveys group 1.
    alice.send_frame("SURVEY", &["2", "300"], b"who?");
    let answers = String::from_utf8_lossy(&alice.expect_result()).into_owned();
    assert_eq!(answers, "RESPONSE 13 @server\nalice@2: WHO?");
    let (tx, rx) = std::sync::mpsc::channel();
    handle
        .call(move |ctx| {
            let _ = tx.send(ctx.survey(1, b"alive?", Duration::from_millis(300)));
        })
        .expect("call");
    let rid = rx
        .recv_timeout(READ_TIMEOUT)
        .expect("answer")
        .expect("someone");
    let f = alice.push();
    assert!(f.is("SURVEYED", &["@server", "1", &rid]), "{f:?}");
    alice.send_frame("REPLY", &[&rid], b"yes");
    alice.expect_ack();
    let deadline = Instant::now() + READ_TIMEOUT;
    while replies.lock().map(|r| r.len() < 2).unwrap_or(true) {
        assert!(Instant::now() < deadline, "no survey answers");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        replies.lock().map(|r| r[1].clone()).unwrap_or_default(),
        format!("{rid} ok RESPONSE 3 alice\nyes")
    );
    handle.stop();
    let _ = run.join();
}
