//! `switchboard::Client`'s request/reply, queue groups, surveys, `ECHO` and
//! pipelined batches (protocol.md section 9) against the real server binary.
//!
//! Every wait is bounded: short client timeouts, and each expected push is
//! awaited for at most `WAIT`.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use switchboard::client::{Reply, Request};
use switchboard::error::ErrorCode;
use switchboard::{Client, ClientConfig, ClientError, Push};

const WAIT: Duration = Duration::from_secs(5);

#[track_caller]
fn connect(srv: &ServerProc, user: &str) -> Client {
    let mut c = ClientConfig::new(srv.addr.to_string(), user);
    c.connect_timeout = WAIT;
    c.reply_timeout = WAIT;
    Client::connect(c).unwrap_or_else(|e| panic!("{user} cannot connect: {e}"))
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, ClientError>, want: ErrorCode) {
    match result {
        Err(ClientError::Refused { code, .. }) if code == want => {}
        other => panic!("expected {want:?}, got {other:?}"),
    }
}

/// Answers `n` requests (or surveys) with the payload upper-cased, then
/// returns what it saw.
fn responder(c: Arc<Client>, n: usize) -> thread::JoinHandle<Vec<Push>> {
    thread::spawn(move || {
        let mut seen = Vec::new();
        while seen.len() < n {
            let push = c.recv(Some(WAIT)).expect("a request within WAIT");
            let (Push::Requested { rid, payload, .. } | Push::Surveyed { rid, payload, .. }) =
                &push
            else {
                continue;
            };
            c.reply(rid, &payload.to_ascii_uppercase())
                .expect("REPLY acknowledged");
            seen.push(push);
        }
        seen
    })
}

#[test]
fn request_reply_through_a_queue_group() {
    let srv = ServerProc::start(&["--group", "1=work", "--group", "2=idle"]);
    let asker = connect(&srv, "asker");
    // Nobody answers for group 2.
    assert_refused(
        asker.request(2, b"anyone?", Duration::from_millis(500)),
        ErrorCode::NoResponders,
    );
    let worker = Arc::new(connect(&srv, "worker"));
    worker.qsubscribe("pool", &[1]).expect("QSUBSCRIBE");
    let answering = responder(worker.clone(), 2);
    let reply = asker
        .request(1, b"hello", Duration::from_secs(3))
        .expect("a reply");
    assert_eq!(reply, Bytes::from_static(b"HELLO"));
    let reply = asker
        .request(1, b"again", Duration::from_secs(3))
        .expect("a reply");
    assert_eq!(reply, Bytes::from_static(b"AGAIN"));
    let seen = answering.join().expect("responder");
    assert!(matches!(
        &seen[0],
        Push::Requested { sender, group: 1, payload, .. } if sender == "asker" && payload == "hello"
    ));
    // A responder that does not answer: the server's timeout, not the client's.
    let silent = connect(&srv, "silent");
    silent.subscribe(&[2]).expect("SUBSCRIBE");
    assert_refused(
        asker.request(2, b"hm", Duration::from_millis(300)),
        ErrorCode::Timeout,
    );
    // An unknown rid.
    assert_refused(worker.reply("nope", b"x"), ErrorCode::BadArgs);
    worker.qunsubscribe("pool", &[1]).expect("QUNSUBSCRIBE");
    assert_refused(
        asker.request(1, b"gone", Duration::from_millis(500)),
        ErrorCode::NoResponders,
    );
    // Refused locally: more than 60 s.
    assert_refused(
        asker.request(1, b"x", Duration::from_secs(61)),
        ErrorCode::BadArgs,
    );
}

#[test]
fn survey_collects_every_answer() {
    let srv = ServerProc::start(&["--group", "1=all"]);
    let asker = connect(&srv, "asker");
    assert_eq!(
        asker
            .survey(1, b"empty?", Duration::from_millis(200))
            .expect("RESULT"),
        vec![]
    );
    let names = ["ann", "ben"];
    let mut handles = Vec::new();
    for name in names {
        let c = Arc::new(connect(&srv, name));
        c.subscribe(&[1]).expect("SUBSCRIBE");
        handles.push(responder(c, 1));
    }
    let mut answers = asker
        .survey(1, b"ready?", Duration::from_millis(1500))
        .expect("RESULT");
    answers.sort();
    assert_eq!(
        answers,
        vec![
            ("ann".to_string(), Bytes::from_static(b"READY?")),
            ("ben".to_string(), Bytes::from_static(b"READY?")),
        ]
    );
    for h in handles {
        let seen = h.join().expect("responder");
        assert!(matches!(&seen[0], Push::Surveyed { sender, group: 1, .. } if sender == "asker"));
    }
}

#[test]
fn echo_off_and_a_pipelined_batch() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let c = connect(&srv, "alice");
    let replies = c.batch(vec![
        Request::Subscribe(vec![1]),
        Request::Echo(false),
        Request::Publish {
            groups: vec![1],
            payload: Bytes::from_static(b"not to me"),
        },
        Request::Subscribe(vec![99]),
        Request::Subscribe(vec![0]), // refused locally
        Request::Who(Some(1)),
        Request::Echo(true),
        Request::Publish {
            groups: vec![1],
            payload: Bytes::from_static(b"to me"),
        },
        Request::Ping,
    ]);
    assert_eq!(replies.len(), 9);
    assert!(matches!(replies[0], Ok(Reply::Ack(_))), "{replies:?}");
    assert!(matches!(replies[1], Ok(Reply::Ack(_))), "{replies:?}");
    assert!(matches!(replies[2], Ok(Reply::Ack(_))), "{replies:?}");
    assert!(
        matches!(
            replies[3],
            Ok(Reply::Err {
                code: ErrorCode::UnknownGroup,
                ..
            })
        ),
        "{replies:?}"
    );
    assert!(
        matches!(
            replies[4],
            Err(ClientError::Refused {
                code: ErrorCode::BadArgs,
                ..
            })
        ),
        "{replies:?}"
    );
    assert!(
        matches!(&replies[5], Ok(Reply::Result(who)) if who == "alice\n"),
        "{replies:?}"
    );
    assert!(matches!(replies[7], Ok(Reply::Ack(_))), "{replies:?}");
    assert!(matches!(replies[8], Ok(Reply::Pong)), "{replies:?}");
    // Only the publish made with echo on came back.
    match c.recv(Some(WAIT)) {
        Ok(Push::Published { payload, .. }) => assert_eq!(payload, "to me"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.recv(Some(Duration::from_millis(200))),
        Err(ClientError::Timeout)
    ));
    assert!(c.batch(vec![]).is_empty());
}

/// A queue membership is restored after a reconnect, like a subscription.
#[test]
fn queue_membership_survives_a_reconnect() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let listen = format!("127.0.0.1:{port}");
    let serve = || ServerProc::start_raw(&serve_args_on(&listen));
    let srv = serve();
    let mut c = ClientConfig::new(srv.addr.to_string(), "worker");
    c.reply_timeout = WAIT;
    c.reconnect = Some(switchboard::client::Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    });
    let worker = Arc::new(Client::connect(c).expect("connect"));
    worker.qsubscribe("pool", &[1]).expect("QSUBSCRIBE");
    drop(srv);
    assert_eq!(worker.recv(Some(WAIT)).ok(), Some(Push::Disconnected));
    let srv = serve();
    assert_eq!(worker.recv(Some(WAIT)).ok(), Some(Push::Reconnected));
    let answering = responder(worker.clone(), 1);
    let asker = connect(&srv, "asker");
    assert_eq!(
        asker
            .request(1, b"still there?", Duration::from_secs(3))
            .expect("answered after the reconnect"),
        Bytes::from_static(b"STILL THERE?")
    );
    answering.join().expect("responder");
}

fn serve_args_on(listen: &str) -> Vec<&str> {
    vec![
        "serve",
        "--listen",
        listen,
        "--tls-listen",
        "off",
        "--ws-listen",
        "off",
        "--wss-listen",
        "off",
        "--group",
        "1=work",
    ]
}
