//! Groups and one-to-one messages (protocol.md sections 4 and 5): GROUPS,
//! SUBSCRIBE/UNSUBSCRIBE, PUBLISH fan-out, WATCH, WHO, SEND.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

const GROUPS: [&str; 6] = [
    "--group",
    "1=general",
    "--group",
    "2=random",
    "--group",
    "3=third",
];

#[test]
fn groups_lists_registered_groups_sorted_by_id() {
    let srv = ServerProc::start(&[
        "--group",
        "10=ten",
        "--group",
        "2=random",
        "--group",
        "1=general",
    ]);
    let mut c = srv.login("alice");
    assert_eq!(c.result("GROUPS 0"), ["1,general", "2,random", "10,ten"]);
}

#[test]
fn groups_empty_list_is_empty_payload() {
    let srv = ServerProc::start(&[]);
    let mut c = srv.login("alice");
    c.send_line("GROUPS 0");
    let p = c.expect_result();
    assert!(
        p.is_empty(),
        "no groups: empty payload, got {}",
        show_bytes(&p)
    );
    c.err("SUBSCRIBE 0 1", "unknown-group");
}

#[test]
fn open_groups_are_created_on_first_use() {
    let srv = ServerProc::start(&["--open-groups", "--group", "1=general"]);
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 77");
    let mut alice = srv.login("alice");
    alice.send_frame("PUBLISH", &["77"], b"hi 77");
    alice.expect_ack();
    bob.expect_published("alice", &["77"], b"hi 77");
    assert_eq!(alice.result("GROUPS 0"), ["1,general", "77,"]);
    assert_eq!(alice.result("WHO 0 77"), ["bob"]);
    alice.ack("SUBSCRIBE 0 1 4000000000");
}

#[test]
fn without_open_groups_unknown_numbers_are_refused() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut c = srv.login("alice");
    c.err("SUBSCRIBE 0 2", "unknown-group");
    c.send_frame("PUBLISH", &["2"], b"x");
    c.expect_err("unknown-group");
    c.ack("SUBSCRIBE 0 1");
}

#[test]
fn subscribe_is_all_or_nothing() {
    let srv = ServerProc::start(&GROUPS);
    let mut carol = srv.login("carol");
    carol.ack("WATCH 0 1 2");
    let mut bob = srv.login("bob");
    bob.err("SUBSCRIBE 0 1 99", "unknown-group");
    bob.err("SUBSCRIBE 0 2 99 1", "unknown-group");
    bob.err("SUBSCRIBE 0 99 2", "unknown-group");
    let mut alice = srv.login("alice");
    alice.send_frame("PUBLISH", &["1"], b"one");
    alice.expect_ack();
    alice.send_frame("PUBLISH", &["2"], b"two");
    alice.expect_ack();
    bob.expect_quiet("no group of a refused SUBSCRIBE is subscribed");
    carol.expect_quiet("no JOINED for a refused SUBSCRIBE");
    let who1 = alice.result("WHO 0 1");
    assert!(who1.is_empty(), "WHO 0 1 should be empty, got {who1:?}");
    let who2 = alice.result("WHO 0 2");
    assert!(who2.is_empty(), "WHO 0 2 should be empty, got {who2:?}");
}

#[test]
fn publish_to_unknown_group_delivers_nothing() {
    let srv = ServerProc::start(&GROUPS);
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1 2");
    let mut alice = srv.login("alice");
    alice.ack("SUBSCRIBE 0 1");
    alice.send_frame("PUBLISH", &["1", "99"], b"hello");
    alice.expect_err("unknown-group");
    alice.send_frame("PUBLISH", &["99", "2"], b"hello");
    alice.expect_err("unknown-group");
    bob.expect_quiet("a refused PUBLISH delivers nothing");
    alice.expect_quiet("a refused PUBLISH delivers nothing, not even to the publisher");
}

#[test]
fn publish_reaches_subscribers_with_sender_and_groups() {
    let srv = ServerProc::start(&GROUPS);
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1");
    let mut carol = srv.login("carol");
    carol.ack("SUBSCRIBE 0 2");
    let mut alice = srv.login("alice");
    alice.send(b"PUBLISH 5 1\nhello");
    alice.expect_ack();
    bob.expect_published("alice", &["1"], b"hello");
    // The exact bytes on the wire.
    alice.send(b"PUBLISH 3 2\nabc");
    alice.expect_ack();
    let f = carol.push();
    assert_eq!(
        (f.ty.as_str(), f.args.clone(), f.payload.clone()),
        (
            "PUBLISHED",
            vec!["alice".to_string(), "2".to_string()],
            b"abc".to_vec()
        ),
        "carol should get `PUBLISHED 3 alice 2\\nabc`"
    );
    // A publisher need not be subscribed, and then gets no copy.
    alice.expect_quiet("the publisher is not subscribed");
    bob.expect_quiet("bob is only in group 1");
    carol.expect_quiet("carol is only in group 2");
    // A group with no subscribers.
    alice.ack("PUBLISH 0 3");
}

#[test]
fn publisher_gets_its_own_message_when_subscribed() {
    let srv = ServerProc::start(&GROUPS);
    let mut alice = srv.login("alice");
    alice.ack("SUBSCRIBE 0 1");
    alice.send_frame("PUBLISH", &["1"], b"echo");
    alice.expect_ack();
    alice.expect_published("alice", &["1"], b"echo");
    alice.expect_quiet("exactly once");
}

#[test]
fn several_groups_of_one_publish_deliver_once_with_groups_as_published() {
    let srv = ServerProc::start(&GROUPS);
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1 2 3");
    let mut carol = srv.login("carol");
    carol.ack("SUBSCRIBE 0 2");
    let mut alice = srv.login("alice");
    alice.send_frame("PUBLISH", &["1", "2"], b"m1");
    alice.expect_ack();
    alice.send_frame("PUBLISH", &["3", "2", "1"], b"m2");
    alice.expect_ack();
    bob.expect_published("alice", &["1", "2"], b"m1");
    bob.expect_published("alice", &["3", "2", "1"], b"m2");
    bob.expect_quiet("each PUBLISH once, although bob is in several of its groups");
    carol.expect_published("alice", &["1", "2"], b"m1");
    carol.expect_published("alice", &["3", "2", "1"], b"m2");
    carol.expect_quiet("each PUBLISH once");
}

#[test]
fn subscribe_twice_unsubscribe_and_unsubscribe_non_member() {
    let srv = ServerProc::start(&GROUPS);
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1");
    bob.ack("SUBSCRIBE 0 1");
    bob.ack("SUBSCRIBE 0 1 1");
    let mut alice = srv.login("alice");
    alice.send_frame("PUBLISH", &["1"], b"once");
    alice.expect_ack();
    bob.expect_published("alice", &["1"], b"once");
    bob.expect_quiet("subscribing twice still delivers once");
    bob.ack("UNSUBSCRIBE 0 2");
    bob.ack("UNSUBSCRIBE 0 1 2 3");
    alice.send_frame("PUBLISH", &["1"], b"gone");
    alice.expect_ack();
    bob.expect_quiet("unsubscribed");
    bob.ack("UNSUBSCRIBE 0 1");
    // Subscribe again after unsubscribing.
    bob.ack("SUBSCRIBE 0 2");
    alice.send_frame("PUBLISH", &["1", "2"], b"back");
    alice.expect_ack();
    bob.expect_published("alice", &["1", "2"], b"back");
    bob.expect_quiet("once");
}

#[test]
fn thousand_messages_arrive_in_order() {
    let srv = ServerProc::start(&GROUPS);
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1");
    let mut alice = srv.login("alice");
    let mut batch = Vec::new();
    for i in 0..1000 {
        batch.extend_from_slice(&frame("PUBLISH", &["1"], format!("msg-{i:04}").as_bytes()));
    }
    alice.send(&batch);
    for _ in 0..1000 {
        alice.expect_ack();
    }
    for i in 0..1000 {
        bob.label = format!("bob waiting for message {i}");
        bob.expect_published("alice", &["1"], format!("msg-{i:04}").as_bytes());
    }
    bob.expect_quiet("1000 messages, no more");
}

/// `n` sessions `sub000`... logged in and subscribed to group 1.
fn subscribers(srv: &ServerProc, n: usize) -> Vec<Client> {
    let mut subs: Vec<Client> = (0..n)
        .map(|i| {
            let name = format!("sub{i:03}");
            let mut c = Client::connect(srv.addr, &name);
            c.send(format!("USER 0 {name}\nSUBSCRIBE 0 1\n").as_bytes());
            c
        })
        .collect();
    for c in &mut subs {
        c.expect_ack();
        c.expect_ack();
    }
    subs
}

#[test]
fn two_hundred_subscribers_each_get_one_publish_once() {
    let srv = ServerProc::start(&GROUPS);
    let mut subs = subscribers(&srv, 200);
    let mut alice = srv.login("alice");
    alice.send_frame("PUBLISH", &["1"], b"to all 200");
    alice.expect_ack();
    for c in &mut subs {
        c.expect_published("alice", &["1"], b"to all 200");
    }
    for c in &mut subs {
        c.send(b"PING 0\n");
    }
    for c in &mut subs {
        let f = c.next_frame();
        assert!(
            f.is("PONG", &[]),
            "{}: expected only PONG after the one message, got {f:?}",
            c.label
        );
    }
    assert_eq!(alice.result("WHO 0 1").len(), 200);
}

/// More subscribers than the reactor flushes in one turn, and a publisher
/// that pipelines frames both smaller and larger than the reactor gathers
/// into one write: every subscriber still gets every frame whole and in
/// order, and the publisher every OK.
#[test]
fn pipelined_mixed_sizes_reach_many_subscribers_whole_and_in_order() {
    const SUBS: usize = 64;
    const MESSAGES: usize = 300;
    let payload = |i: usize| {
        let len = if i % 7 == 0 { 6000 } else { 30 };
        let mut p = format!("m{i:04}-").into_bytes();
        p.resize(len, b'a' + (i % 26) as u8);
        p
    };
    let srv = ServerProc::start(&GROUPS);
    let mut subs = subscribers(&srv, SUBS);
    let mut alice = srv.login("alice");
    let mut batch = Vec::new();
    for i in 0..MESSAGES {
        batch.extend_from_slice(&frame("PUBLISH", &["1"], &payload(i)));
    }
    alice.send(&batch);
    for _ in 0..MESSAGES {
        alice.expect_ack();
    }
    for c in &mut subs {
        for i in 0..MESSAGES {
            c.expect_published("alice", &["1"], &payload(i));
        }
    }
    for c in &mut subs {
        c.ping();
    }
}

#[test]
fn send_reaches_every_session_of_the_user() {
    let srv = ServerProc::start(&GROUPS);
    let mut bob1 = srv.login("bob");
    let mut bob2 = srv.login("bob");
    let mut carol = srv.login("carol");
    let mut alice = srv.login("alice");
    // The name is compared case-insensitively.
    alice.send_frame("SEND", &["BOB"], b"hello bob");
    alice.expect_ack();
    bob1.expect_message("alice", b"hello bob");
    bob2.expect_message("alice", b"hello bob");
    alice.send_frame("SEND", &["bob"], b"again");
    alice.expect_ack();
    bob1.expect_message("alice", b"again");
    bob2.expect_message("alice", b"again");
    bob1.expect_quiet("two messages");
    bob2.expect_quiet("two messages");
    carol.expect_quiet("not addressed to carol");
    alice.expect_quiet("not addressed to alice");
    // To oneself: every session of the sender's user, the sender included.
    bob1.send_frame("SEND", &["bob"], b"note to self");
    bob1.expect_ack();
    bob1.expect_message("bob", b"note to self");
    bob2.expect_message("bob", b"note to self");
    // One session quits; the other still gets messages.
    bob2.ack("QUIT 0");
    bob2.expect_closed();
    alice.send_frame("SEND", &["bob"], b"still there?");
    alice.expect_ack();
    bob1.expect_message("alice", b"still there?");
}

#[test]
fn send_to_no_such_user() {
    let srv = ServerProc::start(&[]);
    let mut alice = srv.login("alice");
    alice.send_frame("SEND", &["nobody"], b"hello?");
    alice.expect_err("no-such-user");
    // A connection that has not logged in is not a user.
    let mut anon = srv.connect();
    anon.ping();
    alice.send_frame("SEND", &["anon"], b"hello?");
    alice.expect_err("no-such-user");
    // A user who quit is gone.
    let mut bob = srv.login("bob");
    bob.ack("QUIT 0");
    bob.expect_closed();
    alice.send_frame("SEND", &["bob"], b"hello?");
    alice.expect_err("no-such-user");
    // A user whose connection dropped is gone, once the server notices.
    let carol = srv.login("carol");
    drop(carol);
    let gone = wait_until(Duration::from_secs(3), || {
        alice.send_frame("SEND", &["carol"], b"x");
        let f = alice.reply();
        match f.ty.as_str() {
            "ACK" => false,
            "ERR" if f.is("ERR", &["no-such-user"]) => true,
            _ => panic!("SEND to carol: expected ACK or ERR no-such-user, got {f:?}"),
        }
    });
    assert!(
        gone,
        "carol disconnected but SEND to her is still ACKed after 3 s"
    );
    alice.expect_quiet("nothing delivered to alice");
}

#[test]
fn watch_gets_joined_and_parted() {
    let srv = ServerProc::start(&GROUPS);
    let mut w = srv.login("watcher");
    w.ack("WATCH 0 1 2");
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1 2 3");
    let got: BTreeSet<String> = w.sync().iter().map(|f| format!("{f:?}")).collect();
    let want: BTreeSet<String> = [
        Frame {
            ty: "JOINED".into(),
            args: vec!["bob".into(), "1".into()],
            payload: vec![],
        },
        Frame {
            ty: "JOINED".into(),
            args: vec!["bob".into(), "2".into()],
            payload: vec![],
        },
    ]
    .iter()
    .map(|f| format!("{f:?}"))
    .collect();
    assert_eq!(got, want, "watcher of 1 and 2 (not 3)");

    bob.ack("UNSUBSCRIBE 0 1");
    let f = w.push();
    assert!(
        f.is("PARTED", &["bob", "1"]) && f.payload.is_empty(),
        "{f:?}"
    );
    bob.ack("UNSUBSCRIBE 0 3");
    w.expect_quiet("group 3 is not watched");

    // Disconnecting parts every group.
    bob.ack("SUBSCRIBE 0 1");
    let f = w.push();
    assert!(f.is("JOINED", &["bob", "1"]), "{f:?}");
    drop(bob);
    let mut parted = BTreeSet::new();
    for _ in 0..2 {
        let f = w.push();
        assert!(
            f.ty == "PARTED" && f.args.len() == 2 && f.args[0] == "bob" && f.payload.is_empty(),
            "expected PARTED bob after bob disconnected, got {f:?}"
        );
        parted.insert(f.args[1].clone());
    }
    assert_eq!(parted, BTreeSet::from(["1".to_string(), "2".to_string()]));
    w.expect_quiet("one PARTED per watched group");

    // QUIT parts too.
    let mut carol = srv.login("carol");
    carol.ack("SUBSCRIBE 0 2");
    let f = w.push();
    assert!(f.is("JOINED", &["carol", "2"]), "{f:?}");
    carol.ack("QUIT 0");
    carol.expect_closed();
    let f = w.push();
    assert!(f.is("PARTED", &["carol", "2"]), "{f:?}");

    // UNWATCH stops it; a non-watcher gets nothing.
    w.ack("UNWATCH 0 1 2");
    let mut other = srv.login("other");
    let mut dave = srv.login("dave");
    dave.ack("SUBSCRIBE 0 1 2");
    dave.ack("UNSUBSCRIBE 0 1 2");
    w.expect_quiet("no longer watching");
    other.expect_quiet("never watched");
}

#[test]
fn who_lists_users_sorted_case_folded_once_each() {
    let srv = ServerProc::start(&GROUPS);
    let mut zed = srv.login("Zed");
    let mut amy = srv.login("amy");
    let mut bob1 = srv.login("bob");
    let mut bob2 = srv.login("bob");
    let mut anon = srv.connect();
    anon.ping();
    assert_eq!(amy.result("WHO 0"), ["amy", "bob", "Zed"]);
    zed.ack("SUBSCRIBE 0 1");
    amy.ack("SUBSCRIBE 0 1");
    bob1.ack("SUBSCRIBE 0 2");
    bob2.ack("SUBSCRIBE 0 2");
    assert_eq!(amy.result("WHO 0 1"), ["amy", "Zed"]);
    assert_eq!(amy.result("WHO 0 2"), ["bob"]);
    amy.send_line("WHO 0 3");
    let p = amy.expect_result();
    assert!(
        p.is_empty(),
        "WHO of an empty group: empty payload, got {}",
        show_bytes(&p)
    );
    zed.ack("QUIT 0");
    zed.expect_closed();
    assert_eq!(amy.result("WHO 0"), ["amy", "bob"]);
    assert_eq!(amy.result("WHO 0 1"), ["amy"]);
    bob1.ack("UNSUBSCRIBE 0 2");
    assert_eq!(amy.result("WHO 0 2"), ["bob"], "bob2 is still in group 2");
}

#[test]
fn who_of_unknown_group() {
    let srv = ServerProc::start(&GROUPS);
    let mut amy = srv.login("amy");
    amy.err("WHO 0 99", "unknown-group");
    amy.ping();
}
