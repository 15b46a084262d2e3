//! Several brokers as one (protocol.md section 11), with simulated time:
//! each member's notes cross to the others in their wire form
//! (`encode_batch`/`decode_batch`, as through the engine) and in order.

use super::*;
use crate::broker::{decode_batch, encode_batch};

/// Members that hand each other their notes.
struct Mesh {
    members: Vec<(String, Harness)>,
}

impl Mesh {
    /// `n` members; `expiry` `None` for loops of one process, `Some` for
    /// nodes of a cluster (then each is told the engine is up).
    fn new(n: usize, expiry: Option<Duration>) -> Self {
        Self::with(n, expiry, BrokerConfig::default())
    }

    fn with(n: usize, expiry: Option<Duration>, config: BrokerConfig) -> Self {
        let mut members = Vec::new();
        for i in 0..n {
            let name = format!("node-{i}");
            let mut h = Harness::new(config.clone());
            h.broker.broker.join_cluster(&name, expiry);
            if expiry.is_some() {
                let now = h.now;
                let b = &mut h.broker;
                b.broker.set_cluster_up(&b.links, true, now);
            }
            members.push((name, h));
        }
        // The loops of one process know each other from the start.
        if expiry.is_none() {
            for (i, (_, h)) in members.iter_mut().enumerate() {
                for j in (0..n).filter(|&j| j != i) {
                    h.broker.broker.add_member(&format!("node-{j}"));
                }
            }
        }
        let mut mesh = Self { members };
        mesh.pump();
        mesh
    }

    fn h(&mut self, i: usize) -> &mut Harness {
        &mut self.members[i].1
    }

    /// A session of member `i` logged in, and the others told.
    fn login(&mut self, i: usize, name: &str) -> ConnId {
        let c = self.h(i).login(name);
        self.pump();
        c
    }

    /// Moves notes until nobody has any (each batch through the wire form).
    fn pump(&mut self) {
        for _ in 0..50 {
            let mut moved = false;
            for i in 0..self.members.len() {
                let notes = self.members[i].1.broker.broker.take_notes();
                if notes.is_empty() {
                    continue;
                }
                moved = true;
                let batch = encode_batch(&self.members[i].0, &notes);
                let (from, notes) = decode_batch(&batch).expect("a well-formed batch");
                for j in 0..self.members.len() {
                    if j == i {
                        continue;
                    }
                    let h = &mut self.members[j].1;
                    let now = h.now;
                    let b = &mut h.broker;
                    b.broker
                        .handle_notes(&mut b.links, &from, notes.clone(), now);
                    while b.broker.has_pending_notes() {
                        b.broker.process_notes(&mut b.links, now);
                    }
                }
            }
            if !moved {
                for (_, h) in &self.members {
                    h.broker.assert_consistent();
                }
                return;
            }
        }
        panic!("notes kept flowing");
    }

    fn send(&mut self, i: usize, c: ConnId, bytes: &[u8]) {
        self.h(i).send(c, bytes);
        self.pump();
    }

    fn advance(&mut self, d: Duration) {
        for (_, h) in &mut self.members {
            h.advance(d);
        }
        self.pump();
    }
}

#[test]
fn a_publish_reaches_every_member_once_and_in_order() {
    let mut m = Mesh::new(3, None);
    let a = m.login(0, "alice");
    let b = m.login(1, "bob");
    let c = m.login(2, "carol");
    m.send(1, b, b"SUBSCRIBE 0 1 2\n");
    m.send(2, c, b"SUBSCRIBE 0 2\n");
    assert_eq!(m.h(1).take(b), "ACK 10\nsubscribed");
    assert_eq!(m.h(2).take(c), "ACK 10\nsubscribed");
    for i in 0..3 {
        m.send(0, a, format!("PUBLISH 1 1 2\n{i}").as_bytes());
    }
    // Bob is in both groups: each publish once, in order.
    assert_eq!(
        m.h(1).take(b),
        "PUBLISHED 1 alice 1 2\n0PUBLISHED 1 alice 1 2\n1PUBLISHED 1 alice 1 2\n2"
    );
    assert_eq!(
        m.h(2).take(c),
        "PUBLISHED 1 alice 1 2\n0PUBLISHED 1 alice 1 2\n1PUBLISHED 1 alice 1 2\n2"
    );
    // The publisher's own ACK counts its member's deliveries.
    assert_eq!(m.h(0).take(a).matches("published to 0").count(), 3);
}

#[test]
fn send_who_and_watchers_see_every_member() {
    let mut m = Mesh::new(2, None);
    let a = m.login(0, "alice");
    let b = m.login(1, "Bob");
    let b2 = m.login(0, "bob");
    m.send(0, a, b"WATCH 0 1\n");
    assert_eq!(m.h(0).take(a), "ACK 8\nwatching");
    m.send(1, b, b"SUBSCRIBE 0 1\n");
    assert_eq!(m.h(0).take(a), "JOINED 0 Bob 1\n");
    m.send(0, a, b"WHO 0\nWHO 0 1\n");
    assert_eq!(m.h(0).take(a), "RESULT 10\nalice\nbob\nRESULT 4\nBob\n");
    // Every session of the user, wherever it is.
    m.send(0, a, b"SEND 2 BOB\nhi");
    assert_eq!(m.h(0).take(a), "ACK 4\nsent");
    assert_eq!(m.h(1).take(b), "ACK 10\nsubscribedMESSAGE 2 alice\nhi");
    assert_eq!(m.h(0).take(b2), "MESSAGE 2 alice\nhi");
    // A user only on the other member.
    let h = &mut m.members[0].1;
    h.broker.remove(b2, CloseReason::PeerClosed);
    m.pump();
    m.send(1, b, b"SEND 3 alice\nyo!");
    assert_eq!(m.h(0).take(a), "MESSAGE 3 Bob\nyo!");
    m.send(1, b, b"SEND 1 nobody\nx");
    assert!(m.h(1).take(b).contains("no-such-user"));
    // Bob goes: PARTED for the watcher, and out of WHO.
    let h = &mut m.members[1].1;
    h.broker.remove(b, CloseReason::PeerClosed);
    m.pump();
    assert_eq!(m.h(0).take(a), "PARTED 0 Bob 1\n");
    m.send(0, a, b"WHO 0 1\n");
    assert_eq!(m.h(0).take(a), "RESULT 0\n");
}

#[test]
fn a_queue_group_is_served_once_per_publish_across_members() {
    let mut m = Mesh::new(3, None);
    let p = m.login(0, "pub");
    let w1 = m.login(0, "w1");
    let w2 = m.login(1, "w2");
    let w3 = m.login(2, "w3");
    m.send(0, w1, b"QSUBSCRIBE 0 work 1\n");
    m.send(1, w2, b"QSUBSCRIBE 0 work 1\n");
    m.send(2, w3, b"QSUBSCRIBE 0 work 1\n");
    for (i, c) in [(0, w1), (1, w2), (2, w3)] {
        assert_eq!(m.h(i).take(c), "ACK 10\nsubscribed");
    }
    for n in 0..30 {
        m.send(0, p, format!("PUBLISH 2 1\n{n:02}").as_bytes());
    }
    let got: Vec<usize> = [(0, w1), (1, w2), (2, w3)]
        .into_iter()
        .map(|(i, c)| m.h(i).take(c).matches("PUBLISHED").count())
        .collect();
    assert_eq!(got.iter().sum::<usize>(), 30, "each once: {got:?}");
    assert_eq!(got, vec![10, 10, 10], "round-robin over all members");
}

#[test]
fn requests_and_surveys_find_responders_on_other_members() {
    let mut m = Mesh::new(2, None);
    let asker = m.login(0, "asker");
    let r = m.login(1, "resp");
    m.send(0, asker, b"REQUEST 1 1 1000\n?");
    assert!(m.h(0).take(asker).contains("no-responders"));
    m.send(1, r, b"SUBSCRIBE 0 1\n");
    assert_eq!(m.h(1).take(r), "ACK 10\nsubscribed");
    m.send(0, asker, b"REQUEST 1 1 1000\n?PING 0\n");
    // The PONG waits behind the pending request's reply.
    assert_eq!(m.h(0).take(asker), "");
    let pushed = m.h(1).take(r);
    assert!(pushed.starts_with("REQUESTED 1 asker 1 r"), "{pushed}");
    let rid = pushed
        .split(' ')
        .nth(4)
        .unwrap()
        .split('\n')
        .next()
        .unwrap()
        .to_owned();
    m.send(1, r, format!("REPLY 2 {rid}\nok").as_bytes());
    assert_eq!(m.h(1).take(r), "ACK 7\nreplied");
    assert_eq!(m.h(0).take(asker), "RESULT 2\nokPONG 0\n");
    // A survey: answers from both members until the deadline.
    let local = m.login(0, "local");
    m.send(0, local, b"SUBSCRIBE 0 1\n");
    m.h(0).take(local);
    m.send(0, asker, b"SURVEY 1 1 200\n?");
    for (i, c) in [(0, local), (1, r)] {
        let pushed = m.h(i).take(c);
        let rid = pushed
            .split(' ')
            .nth(4)
            .unwrap()
            .split('\n')
            .next()
            .unwrap()
            .to_owned();
        m.send(i, c, format!("REPLY 1 {rid}\n{i}").as_bytes());
    }
    m.advance(Duration::from_millis(250));
    let result = m.h(0).take(asker);
    assert!(result.starts_with("RESULT "), "{result}");
    assert!(result.contains("RESPONSE 1 local\n0"), "{result}");
    assert!(result.contains("RESPONSE 1 resp\n1"), "{result}");
    // The responder's member goes: a request waiting on it fails at once.
    m.send(0, local, b"UNSUBSCRIBE 0 1\n");
    m.send(0, asker, b"REQUEST 1 1 5000\n?");
    let h = &mut m.members[1].1;
    h.broker.broker.leave_cluster();
    m.pump();
    let out = m.h(0).take(asker);
    assert!(out.contains("no-responders"), "{out}");
}

#[test]
fn a_silent_node_is_forgotten_within_the_expiry_and_hello_says_so() {
    let expiry = Duration::from_secs(15);
    let config = BrokerConfig {
        ping_interval: Duration::from_secs(3600),
        ..BrokerConfig::default()
    };
    let mut m = Mesh::with(2, Some(expiry), config);
    let a = m.login(0, "alice");
    let b = m.login(1, "bob");
    m.send(1, b, b"SUBSCRIBE 0 2\n");
    m.send(0, a, b"HELLO 0\nWHO 0\n");
    let out = m.h(0).take(a);
    assert!(out.contains("cluster=ok\n"), "{out}");
    assert!(out.contains("alice\nbob\n"), "{out}");
    // Beats keep it: 40 s of 1 s steps.
    for _ in 0..40 {
        m.advance(Duration::from_secs(1));
    }
    m.send(0, a, b"WHO 0\n");
    assert!(m.h(0).take(a).contains("bob"));
    // Node 1 goes silent (killed): forgotten after the expiry, not before.
    let (name, dead) = m.members.pop().unwrap();
    assert_eq!(name, "node-1");
    drop(dead);
    m.advance(Duration::from_secs(10));
    m.send(0, a, b"WHO 0\n");
    assert!(m.h(0).take(a).contains("bob"));
    m.advance(Duration::from_secs(6));
    m.send(0, a, b"WHO 0\n");
    assert_eq!(m.h(0).take(a), "RESULT 6\nalice\n");
    // The engine down: degraded, local service goes on.
    let h = m.h(0);
    let now = h.now;
    h.broker.broker.set_cluster_up(&h.broker.links, false, now);
    m.send(0, a, b"HELLO 0\nPUBLISH 1 1\nx");
    let out = m.h(0).take(a);
    assert!(
        out.contains("cluster=degraded\n") && out.contains("published to 0"),
        "{out}"
    );
}

#[test]
fn a_node_that_joins_late_learns_the_state_and_query_merges() {
    let mut m = Mesh::new(1, Some(Duration::from_secs(15)));
    let a = m.login(0, "alice");
    m.send(0, a, b"SUBSCRIBE 0 1\nQSUBSCRIBE 0 q 2\n");
    {
        let h = m.h(0);
        let now = h.now;
        let b = &mut h.broker;
        b.broker
            .add_directory_entry(&b.links, "alice", "10.1.2.3:4000".parse().unwrap(), now);
    }
    // A second node comes up later: its Hello gets the first one's state.
    let mut h = Harness::new(BrokerConfig::default());
    h.broker
        .broker
        .join_cluster("node-1", Some(Duration::from_secs(15)));
    let now = h.now;
    h.broker.broker.set_cluster_up(&h.broker.links, true, now);
    m.members.push(("node-1".into(), h));
    m.pump();
    let b = m.login(1, "bob");
    m.send(1, b, b"WHO 0 1\nQUERY 0\nQUERY 0 ALICE\nREQUEST 1 2 100\n?");
    let out = m.h(1).take(b);
    assert!(out.starts_with("RESULT 6\nalice\n"), "{out}");
    assert!(
        out.contains("RESULT 20\nalice,10.1.2.3,4000\nRESULT 20\nalice,10.1.2.3,4000\n"),
        "{out}"
    );
    // The queue member on node 0 answers requests from node 1.
    let pushed = m.h(0).take(a);
    assert!(pushed.contains("REQUESTED 1 bob 2 r"), "{pushed}");
}

#[test]
fn limits_count_every_loop() {
    let config = BrokerConfig {
        max_sessions_per_user: 2,
        open_groups: true,
        max_open_groups: 2,
        ..BrokerConfig::default()
    };
    let mut m = Mesh::with(2, None, config);
    let _a1 = m.login(0, "alice");
    let _a2 = m.login(1, "alice");
    let c = m.h(0).open();
    m.send(0, c, b"USER 0 alice\n");
    assert!(m.h(0).take(c).contains("limit"), "sessions per user");
    let b = m.login(0, "bob");
    let d = m.login(1, "dave");
    m.send(0, b, b"SUBSCRIBE 0 100\n");
    m.send(1, d, b"SUBSCRIBE 0 101\nSUBSCRIBE 0 100\nGROUPS 0\n");
    let out = m.h(1).take(d);
    assert_eq!(
        out,
        "ACK 10\nsubscribedACK 10\nsubscribedRESULT 29\n1,general\n2,random\n100,\n101,\n"
    );
    m.send(0, b, b"SUBSCRIBE 0 102\n");
    assert!(m.h(0).take(b).contains("limit"), "open groups");
    // STATS waits for the other loop's figures and adds them up.
    m.send(0, b, b"STATS 0\n");
    let out = m.h(0).take(b);
    assert!(out.contains("\nsessions=4\n"), "{out}");
}

/// `STATS`' `users` over several loops counts each user once however many
/// loops (and which case) its sessions are on, kept as sessions come and
/// go rather than counted at each `STATS` (which cost a sort of every user
/// online: 1.2 ms a `STATS` at 15,000 users and two loops, and any client
/// may ask).
#[test]
fn users_are_counted_once_across_loops() {
    let mut m = Mesh::new(3, None);
    let stats_users = |m: &mut Mesh, i: usize, c: ConnId| {
        m.send(i, c, b"STATS 0\n");
        let out = m.h(i).take(c);
        let line = out
            .lines()
            .find(|l| l.starts_with("users="))
            .map(str::to_owned);
        line.unwrap_or_else(|| panic!("{out}"))
    };
    let a0 = m.login(0, "alice");
    let a1 = m.login(1, "alice");
    let _b = m.login(2, "bob");
    let c0 = m.login(0, "Carol");
    let _c2 = m.login(2, "carol");
    assert_eq!(stats_users(&mut m, 0, c0), "users=3");
    m.members[0].1.broker.remove(a0, CloseReason::PeerClosed);
    m.pump();
    assert_eq!(stats_users(&mut m, 0, c0), "users=3");
    m.members[1].1.broker.remove(a1, CloseReason::PeerClosed);
    m.pump();
    assert_eq!(stats_users(&mut m, 0, c0), "users=2");
    let a2 = m.login(2, "ALICE");
    assert_eq!(stats_users(&mut m, 2, a2), "users=3");
    // (Each pump above checked the count kept against one made afresh.)
}

/// Batches handed in during one loop turn share one work budget: a loop
/// woken with many batches from the others does a budget's worth at once,
/// not a budget per batch (a 63-group flood from three loops held a loop
/// for 350 ms of one turn), and the turn's own call one more; the rest
/// waits for the turns after, in order.
#[test]
fn batches_handed_in_one_turn_share_one_budget() {
    let mut m = Mesh::new(2, None);
    let a = m.login(0, "alice");
    let b = m.login(1, "bob");
    m.send(1, b, b"SUBSCRIBE 0 1\n");
    assert_eq!(m.h(1).take(b), "ACK 10\nsubscribed");
    // A publish note to one subscriber costs 16 + 1: four fit in 68.
    m.h(1).broker.broker.set_work_budget(68);
    let mut batches = Vec::new();
    for i in 0..20 {
        m.h(0).send(a, format!("PUBLISH 2 1\n{i:02}").as_bytes());
        let notes = m.h(0).broker.broker.take_notes();
        batches.push(decode_batch(&encode_batch("node-0", &notes)).expect("a batch"));
    }
    let h = m.h(1);
    let now = h.now;
    for (from, notes) in batches {
        let e = &mut h.broker;
        e.broker.handle_notes(&mut e.links, &from, notes, now);
    }
    let expected = |r: std::ops::Range<usize>| -> String {
        r.map(|i| format!("PUBLISHED 2 alice 1\n{i:02}")).collect()
    };
    assert_eq!(h.take(b), expected(0..4));
    // The turn's own call: one more budget.
    let e = &mut h.broker;
    e.broker.process_notes(&mut e.links, now);
    assert_eq!(h.take(b), expected(4..8));
    // The next turns: the rest, in order.
    let mut got = String::new();
    let mut turns = 0;
    while h.broker.broker.has_pending_notes() {
        h.now += Duration::from_millis(1);
        let (e, now) = (&mut h.broker, h.now);
        e.broker.process_notes(&mut e.links, now);
        got += &h.take(b);
        turns += 1;
    }
    assert_eq!(got, expected(8..20));
    assert_eq!(turns, 3);
}
