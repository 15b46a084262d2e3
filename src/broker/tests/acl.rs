//! The ACL and the embedding program's verdicts, in the broker.

use std::sync::Arc;

use super::*;
use crate::acl::Acl;

fn with_acl(text: &str) -> Harness {
    let mut h = harness();
    h.broker
        .broker
        .set_acl(Some(Arc::new(Acl::parse(text).expect("acl"))));
    h
}

#[test]
fn acl_refusals_are_forbidden_and_all_or_nothing() {
    let mut h = with_acl(
        "default: subscribe 1 ; publish 1 ; watch 2\n\
         user boss: subscribe * ; publish * ; watch * ; send yes\n",
    );
    let a = h.login("alice");
    let boss = h.login("Boss");
    // Subscribe to 1 and 2: refused as a whole.
    h.send(a, b"SUBSCRIBE 0 1 2\n");
    let out = h.take(a);
    assert!(
        out.starts_with("ERR ") && out.contains(" forbidden\n"),
        "{out}"
    );
    assert!(out.contains("group 2"), "{out}");
    h.send(boss, b"WHO 0 1\n");
    assert!(!h.take(boss).contains("alice"));
    h.send(a, b"SUBSCRIBE 0 1\n");
    assert!(h.take(a).starts_with("ACK"));
    h.send(boss, b"SUBSCRIBE 0 1 2\n");
    assert!(h.take(boss).starts_with("ACK"));
    // Publish to 1 and 2: nothing is delivered.
    h.send(a, b"PUBLISH 2 1 2\nhi");
    assert!(h.take(a).contains(" forbidden\n"));
    assert_eq!(h.take(boss), "");
    h.send(a, b"PUBLISH 2 1\nhi");
    assert!(h.take(a).contains("ACK"));
    assert!(h.take(boss).starts_with("PUBLISHED 2 alice 1\n"));
    // Watch: 2 yes, 1 no.
    h.send(a, b"WATCH 0 1\n");
    assert!(h.take(a).contains(" forbidden\n"));
    h.send(a, b"WATCH 0 2\n");
    assert!(h.take(a).starts_with("ACK"));
    // Send: refused, even to a user who is not online; boss may.
    h.send(a, b"SEND 1 boss\nx");
    assert!(h.take(a).contains(" forbidden\n"));
    h.send(a, b"SEND 1 nobody\nx");
    assert!(h.take(a).contains(" forbidden\n"));
    assert_eq!(h.take(boss), "");
    h.send(boss, b"SEND 1 alice\nx");
    assert!(h.take(boss).starts_with("ACK"));
    assert!(h.take(a).starts_with("MESSAGE 1 Boss\n"));
    // Unsubscribe and unwatch are always allowed; the session goes on.
    h.send(a, b"UNSUBSCRIBE 0 1 2\nUNWATCH 0 1 2\nPING 0\n");
    let out = h.take(a);
    assert_eq!(out.matches("ACK").count(), 2, "{out}");
    assert!(out.ends_with("PONG 0\n"), "{out}");
    h.broker.assert_consistent();
}

#[test]
fn an_open_group_is_not_created_by_a_refused_command() {
    let mut h = Harness::new(BrokerConfig {
        open_groups: true,
        ..BrokerConfig::default()
    });
    h.broker.broker.set_acl(Some(Arc::new(
        Acl::parse("default: subscribe 1-10").unwrap(),
    )));
    let a = h.login("a");
    h.send(a, b"SUBSCRIBE 0 500\n");
    assert!(h.take(a).contains(" forbidden\n"));
    assert!(!h.broker.groups().iter().any(|(g, _)| *g == 500));
    h.broker.assert_consistent();
}

#[test]
fn the_acl_can_be_replaced_and_removed() {
    let mut h = with_acl("default: publish none");
    let a = h.login("a");
    h.send(a, b"PUBLISH 1 1\nx");
    assert!(h.take(a).contains(" forbidden\n"));
    h.broker
        .broker
        .set_acl(Some(Arc::new(Acl::parse("default: publish 1").unwrap())));
    h.send(a, b"PUBLISH 1 1\nx");
    assert!(h.take(a).starts_with("ACK"));
    h.broker.broker.set_acl(None);
    h.send(a, b"PUBLISH 1 2\nx");
    assert!(h.take(a).starts_with("ACK"));
    assert!(h.broker.broker.acl().is_none());
}

/// Refuses what its list says and records every question.
#[derive(Default)]
struct Gate {
    asked: Vec<String>,
    deny_login: &'static str,
}

impl Authorizer for Gate {
    fn authorize(&mut self, r: &Authorize<'_>) -> Verdict {
        self.asked.push(format!("{} {:?}", r.user, r.attempt));
        match r.attempt {
            Attempt::Login if r.user == self.deny_login => Verdict::Deny,
            Attempt::Publish { groups, payload } if groups.contains(&2) || payload == b"no" => {
                Verdict::Deny
            }
            Attempt::Subscribe(g) if g.contains(&2) => Verdict::Deny,
            Attempt::Send { to: "bob", .. } => Verdict::Deny,
            _ => Verdict::Allow,
        }
    }
}

#[test]
fn an_authorizer_refuses_logins_and_commands() {
    let mut h = harness();
    let mut gate = Gate {
        deny_login: "mallory",
        ..Gate::default()
    };
    let input = |h: &mut Harness, gate: &mut Gate, c: ConnId, bytes: &[u8]| {
        let now = h.now;
        let e = &mut h.broker;
        e.broker
            .handle_input_with(&mut e.links, c, bytes, now, gate);
        h.take(c)
    };
    let m = h.open();
    let out = input(&mut h, &mut gate, m, b"USER 0 mallory\n");
    assert!(
        out.starts_with("ERR ") && out.contains(" forbidden\n"),
        "{out}"
    );
    assert!(h.broker.is_closing(m));
    let a = h.open();
    assert!(input(&mut h, &mut gate, a, b"USER 0 alice\n").starts_with("ACK"));
    assert!(input(&mut h, &mut gate, a, b"SUBSCRIBE 0 1 2\n").contains(" forbidden\n"));
    assert!(input(&mut h, &mut gate, a, b"SUBSCRIBE 0 1\n").starts_with("ACK"));
    assert!(input(&mut h, &mut gate, a, b"PUBLISH 2 1\nno").contains(" forbidden\n"));
    assert!(input(&mut h, &mut gate, a, b"PUBLISH 3 1\nyes").contains("ACK"));
    assert!(input(&mut h, &mut gate, a, b"SEND 1 bob\nx").contains(" forbidden\n"));
    assert!(input(&mut h, &mut gate, a, b"SEND 1 alice\nx").contains("ACK"));
    assert!(gate.asked.iter().any(|q| q.starts_with("alice Login")));
    assert!(gate.asked.iter().any(|q| q.starts_with("alice Send")));
    h.broker.assert_consistent();
}

#[test]
fn the_acl_is_asked_before_the_authorizer() {
    let mut h = with_acl("default: publish 1");
    let mut gate = Gate::default();
    let a = h.login("a");
    let now = h.now;
    let e = &mut h.broker;
    e.broker
        .handle_input_with(&mut e.links, a, b"PUBLISH 1 3\nx", now, &mut gate);
    assert!(h.take(a).contains("may not publish to group 3"));
    assert!(gate.asked.is_empty(), "{:?}", gate.asked);
}
