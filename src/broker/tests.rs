//! Deterministic tests of the broker: bytes and simulated time in, bytes out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

mod acl;
mod cluster;

/// The broker and its connection table, with the calls the tests make
/// (as the IO layer would make them).
struct Endpoint {
    broker: Broker,
    links: Sessions<()>,
}

impl Endpoint {
    fn accept(&mut self, io: (), peer: SocketAddr, now: Instant) -> Result<ConnId, ()> {
        match self.broker.accept(&mut self.links, io, peer, now) {
            Admission::Open(id) | Admission::Refused(id) => Ok(id),
            Admission::Dropped(..) => Err(()),
        }
    }
    fn assert_consistent(&self) {
        self.broker.assert_consistent(&self.links);
    }
    fn client_cert(&self, c: ConnId) -> Option<&PeerIdentity> {
        self.links.identity(c)
    }
    fn finished(&self, c: ConnId, now: Instant) -> bool {
        self.links.finished(c, now)
    }
    fn groups(&self) -> Vec<(GroupId, String)> {
        self.broker.groups()
    }
    fn handle_eof(&mut self, c: ConnId, now: Instant) {
        self.broker.handle_eof(&mut self.links, c, now);
    }
    fn handle_secured(&mut self, c: ConnId, subject: Option<PeerIdentity>, now: Instant) {
        self.broker.handle_secured(&mut self.links, c, subject, now);
    }
    fn handle_input(&mut self, c: ConnId, data: &[u8], now: Instant) {
        self.broker.handle_input(&mut self.links, c, data, now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.broker.handle_timeout(&mut self.links, now);
        self.links.handle_timeout(now);
    }
    fn handle_auth_result(&mut self, c: ConnId, ticket: u32, ok: bool, now: Instant) {
        self.broker
            .handle_auth_result(&mut self.links, c, ticket, ok, now);
    }
    fn is_closing(&self, c: ConnId) -> bool {
        self.links.is_closing(c)
    }
    fn len(&self) -> usize {
        self.links.len()
    }
    fn output(&mut self, c: ConnId) -> Option<&mut crate::buf::OutQueue> {
        self.links.output(c)
    }
    fn poll_auth_request(&mut self) -> Option<AuthRequest> {
        self.broker.poll_auth_request()
    }
    fn poll_event(&mut self) -> Option<Event> {
        self.broker.poll_event()
    }
    fn remove(&mut self, c: ConnId, reason: CloseReason) -> Option<()> {
        self.broker.remove(&mut self.links, c, reason)
    }
    fn send(&mut self, sender: &str, user: &str, payload: &[u8]) -> Result<usize, DeliveryError> {
        self.broker.send(&mut self.links, sender, user, payload)
    }
    fn publish(
        &mut self,
        sender: &str,
        groups: &[GroupId],
        payload: &[u8],
    ) -> Result<usize, DeliveryError> {
        self.broker
            .publish(&mut self.links, sender, groups, payload)
    }
    fn shutdown(&mut self, now: Instant) {
        self.broker.shutdown(&mut self.links, now);
    }
    fn user_of(&self, c: ConnId) -> Option<&str> {
        self.broker.user_of(&self.links, c)
    }
    fn users(&self) -> Vec<String> {
        self.broker.users(&self.links)
    }
    fn wants_read(&self, c: ConnId) -> bool {
        self.links.wants_read(c)
    }
}

struct Harness {
    broker: Endpoint,
    now: Instant,
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000))
}

impl Harness {
    fn new(config: BrokerConfig) -> Self {
        let mut broker = Broker::new(config);
        broker.register_group(1, "general");
        broker.register_group(2, "random");
        let links = broker.new_table();
        Self {
            broker: Endpoint { broker, links },
            now: Instant::now(),
        }
    }

    fn open(&mut self) -> ConnId {
        self.broker.accept((), peer(), self.now).expect("accepted")
    }

    fn login(&mut self, name: &str) -> ConnId {
        let c = self.open();
        self.send(c, format!("USER 0 {name}\n").as_bytes());
        assert!(self.take(c).starts_with("ACK"));
        c
    }

    fn send(&mut self, c: ConnId, bytes: &[u8]) {
        self.broker.handle_input(c, bytes, self.now);
    }

    /// Everything queued for `c`, as text, consumed.
    fn take(&mut self, c: ConnId) -> String {
        let Some(out) = self.broker.output(c) else {
            return String::new();
        };
        let mut all = Vec::new();
        while !out.is_empty() {
            let mut slices = [std::io::IoSlice::new(&[]); 64];
            let n = out.fill_slices(&mut slices);
            let mut len = 0;
            for s in &slices[..n] {
                all.extend_from_slice(s);
                len += s.len();
            }
            out.consume(len);
        }
        String::from_utf8_lossy(&all).into_owned()
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.broker.handle_timeout(self.now);
    }
}

fn harness() -> Harness {
    Harness::new(BrokerConfig::default())
}

#[test]
fn login_and_hello() {
    let mut h = harness();
    let c = h.open();
    h.send(c, b"HELLO 0\n");
    let hello = h.take(c);
    assert!(hello.starts_with("RESULT "), "{hello}");
    for key in [
        "server=switchboard\n",
        "protocol=1\n",
        "max_payload=1048576\n",
        "auth=none\n",
    ] {
        assert!(hello.contains(key), "{hello}");
    }
    h.send(c, b"SUBSCRIBE 0 1\n");
    assert!(h.take(c).contains(" auth-required\n"));
    h.send(c, b"FOO 0\n");
    assert!(h.take(c).contains(" auth-required\n"));
    h.send(c, b"USER 0 Alice\nUSER 0 alice\nUSER 0 bob\nPASS 0 x\n");
    assert_eq!(
        h.take(c),
        "ACK 9\nlogged inACK 26\nalready logged in as Alice\
         ERR 26 forbidden\nalready logged in as Alice\
         ACK 16\npassword ignored"
    );
}

#[test]
fn publish_reaches_each_subscriber_once() {
    let mut h = harness();
    let a = h.login("alice");
    let b = h.login("bob");
    let c = h.login("carol");
    h.send(b, b"SUBSCRIBE 0 1 2\n");
    h.send(c, b"SUBSCRIBE 0 2\n");
    h.send(a, b"SUBSCRIBE 0 1\n");
    for x in [a, b, c] {
        assert_eq!(h.take(x), "ACK 10\nsubscribed");
    }
    h.send(a, b"PUBLISH 5 1 2\nhello");
    assert_eq!(h.take(b), "PUBLISHED 5 alice 1 2\nhello");
    assert_eq!(h.take(c), "PUBLISHED 5 alice 1 2\nhello");
    assert_eq!(
        h.take(a),
        "PUBLISHED 5 alice 1 2\nhelloACK 14\npublished to 3"
    );
    // Unknown group: nothing delivered.
    h.send(a, b"PUBLISH 1 1 9\nx");
    assert!(h.take(a).contains(" unknown-group\n"));
    assert_eq!(h.take(b), "");
    // All or nothing.
    h.send(c, b"SUBSCRIBE 0 1 9\n");
    assert!(h.take(c).contains("unknown-group"));
    h.send(a, b"PUBLISH 1 1\nz");
    assert_eq!(h.take(c), "");
    assert_eq!(h.take(b), "PUBLISHED 1 alice 1\nz");
    // Unsubscribe, also from a group not joined.
    h.send(b, b"UNSUBSCRIBE 0 1 2 1\n");
    assert!(h.take(b).starts_with("ACK"));
    h.send(a, b"PUBLISH 1 2\nq");
    assert_eq!(h.take(b), "");
    assert_eq!(h.take(c), "PUBLISHED 1 alice 2\nq");
}

#[test]
fn one_encoded_frame_is_shared_by_all_subscribers() {
    let mut h = harness();
    let subs: Vec<_> = (0..50).map(|i| h.login(&format!("u{i}"))).collect();
    for &s in &subs {
        h.send(s, b"SUBSCRIBE 0 1\n");
        h.take(s);
    }
    h.broker
        .publish(SERVER_USER, &[1], b"news")
        .expect("published");
    let mut ptrs = Vec::new();
    for &s in &subs {
        let out = h.broker.output(s).expect("open");
        let mut slices = [std::io::IoSlice::new(&[]); 1];
        assert_eq!(out.fill_slices(&mut slices), 1);
        ptrs.push(slices[0].as_ptr());
        assert_eq!(&*slices[0], b"PUBLISHED 4 @server 1\nnews");
    }
    ptrs.dedup();
    assert_eq!(ptrs.len(), 1, "one buffer shared by every subscriber");
}

#[test]
fn watchers_see_joins_and_parts() {
    let mut h = harness();
    let w = h.login("watcher");
    let a = h.login("alice");
    h.send(w, b"WATCH 0 1\n");
    assert!(h.take(w).starts_with("ACK"));
    h.send(a, b"SUBSCRIBE 0 1\nSUBSCRIBE 0 1\n");
    h.take(a);
    assert_eq!(h.take(w), "JOINED 0 alice 1\n");
    h.send(a, b"UNSUBSCRIBE 0 1\nSUBSCRIBE 0 1\n");
    assert_eq!(h.take(w), "PARTED 0 alice 1\nJOINED 0 alice 1\n");
    h.broker.handle_eof(a, h.now);
    assert_eq!(h.take(w), "PARTED 0 alice 1\n");
    h.send(w, b"UNWATCH 0 1\nWATCH 0 7\n");
    let out = h.take(w);
    assert!(
        out.starts_with("ACK") && out.contains("unknown-group"),
        "{out}"
    );
}

#[test]
fn who_groups_and_send() {
    let mut h = harness();
    let a = h.login("alice");
    let b1 = h.login("Bob");
    let b2 = h.login("bob");
    h.send(a, b"WHO 0\nGROUPS 0\n");
    assert_eq!(
        h.take(a),
        "RESULT 10\nalice\nBob\nRESULT 19\n1,general\n2,random\n"
    );
    h.send(b2, b"SUBSCRIBE 0 2\n");
    h.take(b2);
    h.send(a, b"WHO 0 2\nWHO 0 1\nWHO 0 3\n");
    let out = h.take(a);
    assert!(out.starts_with("RESULT 4\nBob\nRESULT 0\nERR"), "{out}");
    h.send(a, b"SEND 2 BOB\nhi");
    assert_eq!(h.take(a), "ACK 4\nsent");
    assert_eq!(h.take(b1), "MESSAGE 2 alice\nhi");
    assert_eq!(h.take(b2), "MESSAGE 2 alice\nhi");
    h.send(a, b"SEND 2 nobody\nhi");
    assert!(h.take(a).contains(" no-such-user\n"));
    assert_eq!(h.broker.send(SERVER_USER, "alice", b"x"), Ok(1));
    assert_eq!(h.take(a), "MESSAGE 1 @server\nx");
}

#[test]
fn unknown_command_skips_payload_and_goes_on() {
    let mut h = harness();
    let a = h.login("alice");
    h.send(a, b"FOO 5\nhelloPING 0\nSUBSCRIBE 0 x\nPONG 0\nPING 0\n");
    let out = h.take(a);
    assert_eq!(
        out,
        "ERR 19 unknown-command\nunknown command FOO\
         PONG 0\n\
         ERR 33 bad-args\ngroup numbers are 1 to 4294967295\
         PONG 0\n"
    );
    assert!(!h.broker.is_closing(a));
}

#[test]
fn bad_frame_and_too_large_close() {
    let mut h = harness();
    let a = h.login("alice");
    h.send(a, b"PUBLISH 5 1\nhel\x01\x02");
    h.send(a, b"lo\x00garbage\n");
    let out = h.take(a);
    assert!(out.starts_with("ACK 14\npublished to 0ERR "), "{out}");
    assert!(out.contains(" bad-frame\n"), "{out}");
    assert!(h.broker.is_closing(a));
    let b = h.login("bob");
    h.send(b, b"PUBLISH 1048577 1\n");
    assert!(h.take(b).contains("too-large"));
    assert!(h.broker.is_closing(b));
    // Nothing more is processed once closing.
    h.send(b, b"PING 0\n");
    assert_eq!(h.take(b), "");
}

#[test]
fn byte_by_byte_equals_all_at_once() {
    let script: &[u8] = b"USER 0 alice\r\n\nSUBSCRIBE 0 1\nPUBLISH 3 1\nabc\nWHO 0\nHELLO 0\nFOO 2\nxyPING 0\nQUIT 0\n";
    let mut h1 = harness();
    let c1 = h1.open();
    h1.send(c1, script);
    let want = h1.take(c1);
    let mut h2 = harness();
    let c2 = h2.open();
    for b in script {
        h2.send(c2, std::slice::from_ref(b));
    }
    assert_eq!(h2.take(c2), want);
    assert!(want.ends_with("ACK 3\nbye"), "{want}");
}

#[test]
fn login_timeout_and_keepalive() {
    let mut h = Harness::new(BrokerConfig {
        login_timeout: Duration::from_secs(10),
        ping_interval: Duration::from_secs(30),
        ping_timeout: Duration::from_secs(10),
        ..BrokerConfig::default()
    });
    let quiet = h.open();
    let a = h.login("alice");
    h.advance(Duration::from_secs(9));
    assert_eq!(h.take(quiet), "");
    h.advance(Duration::from_secs(1));
    assert!(h.take(quiet).contains(" timeout\n"));
    assert!(h.broker.is_closing(quiet));
    // Linger then drop.
    assert!(!h.broker.finished(quiet, h.now));
    h.advance(Duration::from_secs(2));
    assert!(h.broker.finished(quiet, h.now));
    assert!(h.broker.remove(quiet, CloseReason::Io).is_some());
    // Keep-alive: ping after 30 s of silence, answered.
    h.advance(Duration::from_secs(20));
    assert_eq!(h.take(a), "PING 0\n");
    h.advance(Duration::from_secs(5));
    h.send(a, b"PONG 0\n");
    assert_eq!(h.take(a), "");
    h.advance(Duration::from_secs(29));
    assert_eq!(h.take(a), "");
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take(a), "PING 0\n");
    h.advance(Duration::from_secs(10));
    assert!(h.take(a).contains(" timeout\n"));
    assert!(h.broker.is_closing(a));
}

#[test]
fn password_login_pauses_input_until_verified() {
    let mut h = Harness::new(BrokerConfig {
        auth: AuthMode::Password,
        ..BrokerConfig::default()
    });
    let c = h.open();
    h.send(c, b"PASS 0 early\n");
    assert!(h.take(c).contains(" auth-required\n"));
    h.send(c, b"USER 0 corrado\nPASS 0 mypass\nSUBSCRIBE 0 1\n");
    assert_eq!(h.take(c), "ACK 23\nauthentication required");
    assert!(!h.broker.wants_read(c));
    let req = h.broker.poll_auth_request().expect("a check");
    assert_eq!(
        (req.user.as_str(), req.password.as_slice()),
        ("corrado", &b"mypass"[..])
    );
    h.broker
        .handle_auth_result(req.conn, req.ticket, true, h.now);
    assert_eq!(h.take(c), "ACK 9\nlogged inACK 10\nsubscribed");
    assert!(h.broker.wants_read(c));
    // Payload form and a failure.
    let d = h.open();
    h.send(d, b"USER 0 eve\nPASS 6\nwrong!");
    h.take(d);
    let req = h.broker.poll_auth_request().expect("a check");
    assert_eq!(req.password, b"wrong!");
    h.broker
        .handle_auth_result(req.conn, req.ticket, false, h.now);
    assert!(h.take(d).contains(" auth-failed\n"));
    assert!(h.broker.is_closing(d));
}

#[test]
fn slow_consumer_is_cut_off_alone() {
    let mut h = Harness::new(BrokerConfig {
        max_pending: 1000,
        ..BrokerConfig::default()
    });
    let publisher = h.login("pub");
    let slow = h.login("slow");
    let fast = h.login("fast");
    for s in [slow, fast] {
        h.send(s, b"SUBSCRIBE 0 1\n");
        h.take(s);
    }
    let payload = [b'x'; 100];
    let mut frame = b"PUBLISH 100 1\n".to_vec();
    frame.extend_from_slice(&payload);
    for _ in 0..20 {
        h.send(publisher, &frame);
        assert!(h.take(publisher).starts_with("ACK"));
        assert!(h.take(fast).starts_with("PUBLISHED 100 pub 1\n"));
    }
    let out = h.take(slow);
    assert!(
        out.ends_with("ERR 22 slow-consumer\ntoo much unread output"),
        "{out}"
    );
    assert!(h.broker.is_closing(slow));
    assert!(!h.broker.is_closing(fast));
}

#[test]
fn connection_limit() {
    let mut h = Harness::new(BrokerConfig {
        max_connections: 2,
        ..BrokerConfig::default()
    });
    let a = h.open();
    let _b = h.open();
    let c = h.open();
    assert!(h.take(c).contains(" server-full\n"));
    assert!(h.broker.is_closing(c));
    h.broker.remove(a, CloseReason::Io);
    let d = h.open();
    assert_eq!(h.take(d), "");
    assert!(!h.broker.is_closing(d));
}

#[test]
fn shutdown_tells_everyone() {
    let mut h = harness();
    let a = h.login("alice");
    h.send(a, b"PING 0\n");
    h.broker.shutdown(h.now);
    assert_eq!(
        h.take(a),
        "PONG 0\nERR 23 shutting-down\nserver is shutting down"
    );
    assert!(h.broker.accept((), peer(), h.now).is_err());
}

#[test]
fn open_groups_come_and_go() {
    let mut h = Harness::new(BrokerConfig {
        open_groups: true,
        ..BrokerConfig::default()
    });
    let a = h.login("alice");
    h.send(a, b"SUBSCRIBE 0 77\nGROUPS 0\n");
    assert_eq!(
        h.take(a),
        "ACK 10\nsubscribedRESULT 23\n1,general\n2,random\n77,\n"
    );
    h.send(a, b"UNSUBSCRIBE 0 77\nGROUPS 0\nPUBLISH 1 5\nx");
    let out = h.take(a);
    assert!(
        out.ends_with("RESULT 19\n1,general\n2,random\nACK 14\npublished to 0"),
        "{out}"
    );
}

#[test]
fn events_report_what_happened() {
    let mut h = harness();
    let a = h.login("alice");
    h.send(a, b"SUBSCRIBE 0 1\nPUBLISH 2 1\nhiSEND 1 alice\nx");
    h.broker.handle_eof(a, h.now);
    h.broker.remove(a, CloseReason::Io);
    let mut kinds = Vec::new();
    while let Some(e) = h.broker.poll_event() {
        kinds.push(
            format!("{e:?}")
                .split([' ', '{'])
                .next()
                .unwrap_or("")
                .to_owned(),
        );
    }
    assert_eq!(
        kinds,
        [
            "Connected",
            "LoggedIn",
            "Subscribed",
            "Published",
            "UserMessage",
            "Unsubscribed",
            "Closed"
        ]
    );
}

/// Random bytes on many sessions at once never panic the broker and never
/// touch a well-behaved session.
#[test]
fn randomized_garbage_stays_in_its_session() {
    let mut h = harness();
    let good = h.login("good");
    h.send(good, b"SUBSCRIBE 0 1\n");
    h.take(good);
    let mut seed = 0x1234_5678_9abc_def0_u64;
    let mut rng = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let pieces: &[&[u8]] = &[
        b"USER 0 x\n",
        b"PUBLISH 3 1\n",
        b"SUBSCRIBE 0 1 2\n",
        b"\n",
        b"\r",
        b" ",
        b"0",
        b"WATCH 0 1\n",
        b"SEND 1 good\n",
    ];
    for round in 0..3000 {
        let c = h.open();
        for _ in 0..(rng() % 8) {
            let bytes: Vec<u8> = if rng() % 2 == 0 {
                pieces[(rng() as usize) % pieces.len()].to_vec()
            } else {
                (0..rng() % 20).map(|_| rng() as u8).collect()
            };
            h.send(c, &bytes);
        }
        h.take(c);
        if round % 3 == 0 {
            h.broker.handle_eof(c, h.now);
        }
        h.broker.remove(c, CloseReason::Io);
        let out = h.take(good);
        // The good session only ever sees well-formed pushes.
        assert!(
            !out.contains("JOINED") && !out.contains("PARTED"),
            "unexpected push {out}"
        );
    }
    h.send(good, b"PING 0\n");
    assert!(h.take(good).ends_with("PONG 0\n"));
    assert_eq!(h.broker.len(), 1);
}

#[test]
fn cert_mode_logs_in_by_certificate_cn() {
    use crate::conn::PeerIdentity;
    let mut h = Harness::new(BrokerConfig {
        auth: AuthMode::Cert,
        ..BrokerConfig::default()
    });
    let c = h.open();
    let subject = PeerIdentity {
        o: Some("Acme".into()),
        cn: Some("alice".into()),
        ..PeerIdentity::default()
    };
    h.broker.handle_secured(c, Some(subject.clone()), h.now);
    assert_eq!(h.broker.user_of(c), Some("alice"));
    assert_eq!(h.broker.client_cert(c), Some(&subject));
    h.send(c, b"SUBSCRIBE 0 1\nUSER 0 ALICE\nUSER 0 bob\n");
    assert_eq!(
        h.take(c),
        "ACK 10\nsubscribedACK 26\nalready logged in as alice\
         ERR 26 auth-failed\nalready logged in as alice"
    );
    assert!(!h.broker.is_closing(c));
    // No certificate: USER cannot log in, and the connection closes.
    let d = h.open();
    h.broker.handle_secured(d, None, h.now);
    h.send(d, b"USER 0 alice\n");
    assert!(h.take(d).contains(" auth-failed\n"));
    assert!(h.broker.is_closing(d));
    let secured: Vec<_> = std::iter::from_fn(|| h.broker.poll_event())
        .filter(|e| matches!(e, Event::Secured { .. }))
        .collect();
    assert_eq!(secured.len(), 2);
}

/// Random sequences of sessions, commands, disconnects and time keep every
/// cross-index of the broker consistent, and never panic.
#[test]
fn random_operations_keep_indexes_consistent() {
    let mut h = Harness::new(BrokerConfig {
        open_groups: true,
        max_pending: 4096,
        ..BrokerConfig::default()
    });
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut rng = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut open: Vec<ConnId> = Vec::new();
    let (mut max_users, mut max_groups) = (0, 0);
    for step in 0..20_000 {
        match rng() % 12 {
            0 if open.len() < 40 => {
                let c = h.open();
                open.push(c);
            }
            1 if !open.is_empty() => {
                let c = open.swap_remove((rng() as usize) % open.len());
                if rng() % 2 == 0 {
                    h.broker.handle_eof(c, h.now);
                }
                h.broker.remove(c, CloseReason::Io);
            }
            2 => h.advance(Duration::from_secs(rng() % 15)),
            _ if !open.is_empty() => {
                let c = open[(rng() as usize) % open.len()];
                let g = 1 + rng() % 5;
                let g2 = 1 + rng() % 5;
                let user = format!("u{}", rng() % 6);
                let frame = match rng() % 10 {
                    0 => format!("USER 0 {user}\n"),
                    1 => format!("SUBSCRIBE 0 {g} {g2}\n"),
                    2 => format!("UNSUBSCRIBE 0 {g}\n"),
                    3 => format!("WATCH 0 {g}\n"),
                    4 => format!("UNWATCH 0 {g} {g2}\n"),
                    5 => format!("PUBLISH 300 {g} {g2}\n{}", "x".repeat(300)),
                    6 => format!("SEND 2 {user}\nhi"),
                    7 => "WHO 0\nGROUPS 0\n".to_owned(),
                    8 => "QUIT 0\n".to_owned(),
                    _ => "PING 0\n".to_owned(),
                };
                h.send(c, frame.as_bytes());
                // Read some outputs, leave others to pile up (slow consumers).
                if rng() % 3 != 0 {
                    h.take(c);
                }
            }
            _ => {}
        }
        // Drop whatever the reactor would drop.
        open.retain(|&c| {
            if h.broker.finished(c, h.now) {
                h.broker.remove(c, CloseReason::Io);
                false
            } else {
                true
            }
        });
        while h.broker.poll_event().is_some() {}
        if step % 100 == 0 {
            h.broker.assert_consistent();
            max_users = max_users.max(h.broker.users().len());
            max_groups = max_groups.max(h.broker.groups().len());
        }
    }
    h.broker.assert_consistent();
    // The run exercised something: users logged in and open groups came and went.
    assert!(
        max_users >= 3 && max_groups >= 3,
        "{max_users} users, {max_groups} groups"
    );
}

#[test]
fn subscriptions_and_watches_per_session_are_limited_all_or_nothing() {
    let mut h = Harness::new(BrokerConfig {
        open_groups: true,
        max_subscriptions: 3,
        ..BrokerConfig::default()
    });
    let a = h.login("alice");
    h.send(a, b"SUBSCRIBE 0 1 2 2\nWATCH 0 1\n");
    assert_eq!(h.take(a), "ACK 10\nsubscribedACK 8\nwatching");
    // Again to a group one is in: does not count again.
    h.send(a, b"SUBSCRIBE 0 1\nWATCH 0 1\n");
    assert_eq!(h.take(a), "ACK 10\nsubscribedACK 8\nwatching");
    // One more of either: refused, and nothing of the command taken.
    h.send(a, b"SUBSCRIBE 0 2 5\n");
    assert!(h.take(a).contains(" limit\n"));
    h.send(a, b"WATCH 0 7\nWHO 0 5\n");
    let out = h.take(a);
    assert!(out.contains(" limit\n"), "{out}");
    assert!(out.ends_with("RESULT 0\n"), "{out}");
    h.broker.assert_consistent();
    // Leaving frees room.
    h.send(a, b"UNSUBSCRIBE 0 2\nSUBSCRIBE 0 5\n");
    assert_eq!(h.take(a), "ACK 12\nunsubscribedACK 10\nsubscribed");
    h.broker.assert_consistent();
}

#[test]
fn sessions_per_user_are_limited() {
    let mut h = Harness::new(BrokerConfig {
        max_sessions_per_user: 2,
        ..BrokerConfig::default()
    });
    let _a1 = h.login("alice");
    let _a2 = h.login("Alice");
    let a3 = h.open();
    h.send(a3, b"USER 0 alice\nGROUPS 0\n");
    let out = h.take(a3);
    assert!(out.starts_with("ERR ") && out.contains(" limit\n"), "{out}");
    assert!(out.contains(" auth-required\n"), "not logged in: {out}");
    assert!(!h.broker.is_closing(a3), "the session goes on");
    let _b = h.login("bob");
    h.broker.assert_consistent();
}

#[test]
fn groups_created_by_use_are_limited() {
    let mut h = Harness::new(BrokerConfig {
        open_groups: true,
        max_open_groups: 2,
        ..BrokerConfig::default()
    });
    let a = h.login("alice");
    h.send(a, b"SUBSCRIBE 0 10 11\n");
    assert!(h.take(a).starts_with("ACK"));
    // Registered groups do not count; new ones past the limit are refused.
    h.send(
        a,
        b"SUBSCRIBE 0 1\nSUBSCRIBE 0 12\nWATCH 0 12\nPUBLISH 1 13\nx",
    );
    let out = h.take(a);
    assert_eq!(out.matches(" limit\n").count(), 3, "{out}");
    h.broker.assert_consistent();
    // A group nobody uses is forgotten, which frees room.
    h.send(a, b"UNSUBSCRIBE 0 10\nSUBSCRIBE 0 12\n");
    assert_eq!(h.take(a), "ACK 12\nunsubscribedACK 10\nsubscribed");
    h.send(a, b"PUBLISH 1 11\ny");
    assert!(h.take(a).contains("published to 1"));
    h.broker.assert_consistent();
}

/// Leaving every group at once is linear: 20,000 groups (each with one
/// subscriber) are left in one disconnect without re-sorting the session's
/// list for each.
#[test]
fn leaving_many_groups_is_linear() {
    let mut h = Harness::new(BrokerConfig {
        open_groups: true,
        max_subscriptions: 100_000,
        ..BrokerConfig::default()
    });
    let a = h.login("alice");
    // Descending, 60 a command.
    let mut g = 20_000u32;
    while g > 0 {
        let line: Vec<String> = (0..60.min(g)).map(|i| (g - i).to_string()).collect();
        g -= 60.min(g);
        h.send(a, format!("SUBSCRIBE 0 {}\n", line.join(" ")).as_bytes());
    }
    h.take(a);
    let start = std::time::Instant::now();
    h.broker.handle_eof(a, h.now);
    let took = start.elapsed();
    h.broker.assert_consistent();
    assert_eq!(h.broker.groups().len(), 2, "open groups forgotten");
    // Quadratic was ~0.4 s for 100,000 in a release build; this is debug.
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
}

/// Pipelined fan-outs past the work budget wait for the next turn: one
/// call processes part of the input, the connection is handed back by
/// `take_yielded`, and resuming goes on in order, each message once.
#[test]
fn pipelined_fan_out_yields_past_the_work_budget() {
    let mut h = harness();
    let subs: Vec<ConnId> = (0..2000).map(|i| h.login(&format!("s{i}"))).collect();
    for &s in &subs {
        h.send(s, b"SUBSCRIBE 0 1 2\n");
        h.take(s);
    }
    let p = h.login("p");
    let mut input = Vec::new();
    for i in 0..40 {
        input.extend_from_slice(format!("PUBLISH 2 1 2\n{i:02}").as_bytes());
    }
    h.send(p, &input);
    let first = h.take(p).matches("ACK").count();
    assert!(
        first > 0 && first < 40,
        "{first} of 40 processed in one call"
    );
    let mut yielded = Vec::new();
    let mut acks = first;
    for _ in 0..100 {
        h.broker.links.take_yielded(&mut yielded);
        if yielded.is_empty() {
            break;
        }
        assert_eq!(yielded, [p]);
        h.broker.broker.resume(&mut h.broker.links, p, h.now);
        acks += h.take(p).matches("ACK").count();
    }
    assert_eq!(acks, 40);
    let got = h.take(subs[7]);
    let expected: String = (0..40)
        .map(|i| format!("PUBLISHED 2 p 1 2\n{i:02}"))
        .collect();
    assert_eq!(got, expected, "in order, each once");
    h.broker.assert_consistent();
}

/// The work budget is a connection's for a turn, however many reads the
/// reactor hands it in that turn (one 64 KiB read after another of
/// pipelined `SUBSCRIBE`s over 200,000 groups held a loop for half a
/// second); each group a membership command names counts. A resumed
/// connection starts a new budget.
#[test]
fn reads_in_one_turn_share_the_connection_budget() {
    let mut h = harness();
    let c = h.login("c");
    h.broker.broker.set_work_budget(30);
    h.now += Duration::from_millis(1);
    // A frame is one unit and each of its groups one more: three each.
    h.send(c, &b"SUBSCRIBE 0 1 2\n".repeat(5));
    assert_eq!(h.take(c).matches("subscribed").count(), 5);
    h.send(c, &b"SUBSCRIBE 0 1 2\n".repeat(10));
    assert_eq!(
        h.take(c).matches("subscribed").count(),
        5,
        "15 + 5 x 3 = 30"
    );
    let mut yielded = Vec::new();
    h.broker.links.take_yielded(&mut yielded);
    assert_eq!(yielded, [c]);
    h.broker.broker.resume(&mut h.broker.links, c, h.now);
    assert_eq!(h.take(c).matches("subscribed").count(), 5);
    // A new turn, a new budget.
    h.now += Duration::from_millis(1);
    h.send(c, &b"SUBSCRIBE 0 1 2\n".repeat(10));
    assert_eq!(h.take(c).matches("subscribed").count(), 10);
}

/// Fuzz crash `broker` crash-c9aee087 (docs/fuzzing.md): a `JOINED` that
/// overflows a watcher cuts it off mid-`SUBSCRIBE`; its leaving forgot an
/// open group it alone used, which the same `SUBSCRIBE` was about to join,
/// so the subscriber listed a group that no longer existed. Swept over every
/// fill level of the watcher's output so that the overflow lands on each
/// notification in turn; the subscriber watching what it joins is cut off by
/// its own `JOINED` and must not join the groups after it.
#[test]
fn fuzz_broker_slow_watcher_cut_off_mid_subscribe() {
    for fill in 0..400 {
        for self_watch in [false, true] {
            let mut h = Harness::new(BrokerConfig {
                open_groups: true,
                // Below the default read pause (as `--max-pending` may set
                // it), so the subscriber's own input is not paused first.
                max_pending: 512,
                ..BrokerConfig::default()
            });
            let w = h.login("watcher");
            let a = h.login("alice");
            let watcher = if self_watch { a } else { w };
            h.send(watcher, b"SUBSCRIBE 0 1\nWATCH 0 3 7\n");
            h.take(watcher);
            h.broker
                .publish(SERVER_USER, &[1], &vec![b'x'; fill])
                .expect("published");
            h.send(a, b"SUBSCRIBE 0 3 7 9\n");
            h.broker.assert_consistent();
            h.take(a);
            h.take(w);
            h.advance(Duration::from_secs(3));
            for c in [a, w] {
                if h.broker.finished(c, h.now) {
                    h.broker.remove(c, CloseReason::Io);
                }
            }
            h.broker.assert_consistent();
        }
    }
}

fn big_harness() -> Harness {
    Harness::new(BrokerConfig {
        max_connections: 100_000,
        ..BrokerConfig::default()
    })
}

impl Harness {
    /// One loop turn without input: deadlines (a spread fan-out's next
    /// slice), then the connections that yielded go on.
    fn turn(&mut self) {
        self.advance(Duration::ZERO);
        let mut yielded = Vec::new();
        self.broker.links.take_yielded(&mut yielded);
        for c in yielded {
            self.broker
                .broker
                .resume(&mut self.broker.links, c, self.now);
        }
    }
}

/// Issue 10: one `PUBLISH` reaching more subscriptions than a turn's work
/// budget is delivered a budget per turn. Meanwhile other sessions are
/// served, the publisher's own later frames and anyone's `PUBLISH` wait
/// (replies and per-group order kept), and sessions that leave, close or
/// join between slices get the message at most once, the others exactly
/// once.
#[test]
fn a_fan_out_larger_than_a_turn_is_spread_over_turns() {
    let mut h = big_harness();
    let n = commands::WORK_BUDGET + 500;
    let subs: Vec<ConnId> = (0..n).map(|i| h.login(&format!("s{i}"))).collect();
    // Every other one is in both groups: it gets the message once.
    for (i, &s) in subs.iter().enumerate() {
        h.send(
            s,
            if i % 2 == 0 {
                b"SUBSCRIBE 0 1 2\n"
            } else {
                b"SUBSCRIBE 0 1\n"
            },
        );
        h.take(s);
    }
    let p = h.login("p");
    let q = h.login("q");
    let x = h.login("x");
    h.send(p, b"PUBLISH 2 1 2\nhiPING 0\n");
    assert_eq!(h.take(p), "", "answered only once delivered");
    let got = |h: &mut Harness| {
        subs.iter()
            .filter(|&&s| h.broker.output(s).is_some_and(|o| !o.is_empty()))
            .count()
    };
    let first = got(&mut h);
    assert!(first > 0 && first < n, "{first} of {n} in the first slice");
    h.broker.assert_consistent();
    // Another session is served meanwhile; its PUBLISH waits its turn.
    h.send(x, b"PING 0\n");
    assert_eq!(h.take(x), "PONG 0\n");
    h.send(q, b"PUBLISH 2 1\nq1");
    assert_eq!(h.take(q), "");
    // Between slices: one leaves the groups, one closes, one joins.
    let (left, closed) = (subs[n - 1], subs[n - 2]);
    h.send(left, b"UNSUBSCRIBE 0 1 2\n");
    h.take(left);
    h.broker.broker.close(&mut h.broker.links, closed, h.now);
    let late = h.login("late");
    h.send(late, b"SUBSCRIBE 0 2\n");
    h.take(late);
    h.broker.assert_consistent();
    let mut turns = 0;
    while h.broker.broker.spreading().is_some() {
        h.turn();
        h.broker.assert_consistent();
        turns += 1;
        assert!(turns < 10, "still spreading");
    }
    h.turn();
    let ack = |text: String| format!("ACK {}\n{text}", text.len());
    let late_got = h.take(late);
    let late_had_it = late_got.starts_with("PUBLISHED 2 p");
    assert!(
        late_got.is_empty() || late_got == "PUBLISHED 2 p 1 2\nhi",
        "{late_got}"
    );
    let to = n - 2 + usize::from(late_had_it);
    assert_eq!(h.take(p), ack(format!("published to {to}")) + "PONG 0\n");
    h.turn();
    assert_eq!(h.take(q), ack(format!("published to {}", n - 2)));
    for &s in &subs[..n - 2] {
        assert_eq!(
            h.take(s),
            "PUBLISHED 2 p 1 2\nhiPUBLISHED 2 q 1\nq1",
            "in order, once each"
        );
    }
    assert_eq!(h.take(left), "");
    h.broker.assert_consistent();
}

/// A publish from the embedding program does not overtake a fan-out still
/// spreading (it finishes it first), and shutdown finishes it too.
#[test]
fn server_publish_and_shutdown_finish_a_spread_fan_out() {
    let mut h = big_harness();
    let n = commands::WORK_BUDGET / 2 + 10;
    let subs: Vec<ConnId> = (0..n).map(|i| h.login(&format!("s{i}"))).collect();
    for &s in &subs {
        h.send(s, b"SUBSCRIBE 0 1 2\n");
        h.take(s);
    }
    let p = h.login("p");
    h.send(p, b"PUBLISH 1 1 2\na");
    assert!(h.broker.broker.spreading().is_some());
    assert_eq!(h.broker.publish(SERVER_USER, &[1], b"b"), Ok(n));
    assert!(h.broker.broker.spreading().is_none());
    h.turn();
    assert_eq!(h.take(p), format!("ACK 18\npublished to {n}"));
    for &s in &subs {
        assert_eq!(
            h.take(s),
            format!("PUBLISHED 1 p 1 2\naPUBLISHED 1 {SERVER_USER} 1\nb")
        );
    }
    h.send(p, b"PUBLISH 1 1 2\nc");
    assert!(h.broker.broker.spreading().is_some());
    h.broker.shutdown(h.now);
    assert!(h.broker.broker.spreading().is_none());
    for &s in &subs {
        assert!(h.take(s).starts_with("PUBLISHED 1 p 1 2\nc"));
    }
}

/// `WHO 0` is built once and shared until the users change: a new user, a
/// user gone, and the display name passing to the next-oldest session.
#[test]
fn who_reply_is_shared_until_the_users_change() {
    let mut h = harness();
    let a = h.login("Alice");
    let w = h.login("w");
    h.send(w, b"WHO 0\n");
    assert_eq!(h.take(w), "RESULT 8\nAlice\nw\n");
    let a2 = h.login("ALICE");
    h.send(w, b"WHO 0\nWHO 0\n");
    assert_eq!(h.take(w), "RESULT 8\nAlice\nw\n".repeat(2));
    let b = h.login("bob");
    h.send(w, b"WHO 0\n");
    assert_eq!(h.take(w), "RESULT 12\nAlice\nbob\nw\n");
    h.broker.broker.close(&mut h.broker.links, a, h.now);
    h.send(w, b"WHO 0\n");
    assert_eq!(h.take(w), "RESULT 12\nALICE\nbob\nw\n");
    h.broker.broker.close(&mut h.broker.links, b, h.now);
    h.broker.broker.close(&mut h.broker.links, a2, h.now);
    h.send(w, b"WHO 0\n");
    assert_eq!(h.take(w), "RESULT 2\nw\n");
}

// ---------------------------------------------------------------------------
// The directory (issue 13)
// ---------------------------------------------------------------------------

impl Harness {
    fn probes(&mut self) -> Vec<ProbeRequest> {
        let mut v = Vec::new();
        self.broker.broker.take_probe_requests(&mut v);
        v
    }
    fn probe_result(&mut self, id: u64, ok: bool) {
        let now = self.now;
        let e = &mut self.broker;
        e.broker
            .handle_probe_result(&mut e.links, id, ok, now, &mut ());
    }
}

/// Re-probes every 30 s, and no keep-alive pings in the way.
fn quiet() -> Harness {
    Harness::new(BrokerConfig {
        probe_interval: Duration::from_secs(30),
        ping_interval: Duration::from_secs(3600),
        ..BrokerConfig::default()
    })
}

#[test]
fn bind_is_probed_and_replies_stay_in_order() {
    let mut h = harness();
    let a = h.login("Alice");
    // The probe runs while later commands wait, so their replies follow.
    h.send(a, b"BIND 0 127.0.0.1 7000\nPING 0\nQUERY 0\n");
    assert_eq!(h.take(a), "", "nothing until the probe's verdict");
    let probes = h.probes();
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].addr, SocketAddr::from(([127, 0, 0, 1], 7000)));
    h.probe_result(probes[0].id, true);
    assert_eq!(
        h.take(a),
        "ACK 5\nboundPONG 0\nRESULT 21\nAlice,127.0.0.1,7000\n"
    );
    // Another user sees it, by name in any case; an unknown one is empty.
    let b = h.login("bob");
    h.send(b, b"QUERY 0 alice\nQUERY 0 carol\n");
    assert_eq!(h.take(b), "RESULT 21\nAlice,127.0.0.1,7000\nRESULT 0\n");
}

#[test]
fn bind_of_another_address_is_forbidden_and_mapped_addresses_are_the_same() {
    let mut h = harness();
    let a = h.login("alice");
    h.send(a, b"BIND 0 10.0.0.9 7000\n");
    let reply = h.take(a);
    assert!(
        reply.starts_with("ERR ") && reply.contains(" forbidden\n"),
        "{reply}"
    );
    assert!(h.probes().is_empty(), "no connection to a third party");
    h.send(a, b"BIND 0 ::1 7000\n");
    assert!(h.take(a).contains(" forbidden\n"));
    // The session connects from 127.0.0.1: its IPv4-mapped form is it.
    h.send(a, b"BIND 0 ::ffff:127.0.0.1 7001\n");
    assert_eq!(h.probes().len(), 1);
}

#[test]
fn an_unreachable_endpoint_is_refused_and_not_listed() {
    let mut h = harness();
    let a = h.login("alice");
    h.send(a, b"BIND 0 127.0.0.1 7000\n");
    let p = h.probes();
    h.probe_result(p[0].id, false);
    let reply = h.take(a);
    assert!(
        reply.contains(" unreachable\nno PONG from 127.0.0.1:7000"),
        "{reply}"
    );
    h.send(a, b"QUERY 0\n");
    assert_eq!(h.take(a), "RESULT 0\n");
}

#[test]
fn entries_outlive_sessions_and_go_when_a_reprobe_fails_or_on_leave() {
    let mut h = quiet();
    let a = h.login("alice");
    let b = h.login("bob");
    for (c, port) in [(a, "7000"), (b, "7001")] {
        h.send(c, format!("BIND 0 127.0.0.1 {port}\n").as_bytes());
        let p = h.probes();
        h.probe_result(p[0].id, true);
        assert!(h.take(c).starts_with("ACK"));
    }
    // alice's session goes; her entry stays.
    h.broker.remove(a, CloseReason::PeerClosed);
    h.send(b, b"QUERY 0\n");
    assert_eq!(
        h.take(b),
        "RESULT 40\nalice,127.0.0.1,7000\nbob,127.0.0.1,7001\n"
    );
    // Nothing is due before 27 s (30 s less a tenth at most).
    h.advance(Duration::from_secs(26));
    assert!(h.probes().is_empty());
    h.advance(Duration::from_secs(8));
    let due = h.probes();
    assert_eq!(due.len(), 2, "both re-probed within 33 s");
    let alice = due
        .iter()
        .find(|p| p.addr.port() == 7000)
        .expect("alice's probe");
    let bob = due.iter().find(|p| p.addr.port() == 7001).expect("bob's");
    h.probe_result(alice.id, false);
    h.probe_result(bob.id, true);
    h.send(b, b"QUERY 0\n");
    assert_eq!(h.take(b), "RESULT 19\nbob,127.0.0.1,7001\n");
    h.send(b, b"LEAVE 0\nQUERY 0\nLEAVE 0\n");
    assert_eq!(
        h.take(b),
        "ACK 18\nleft the directoryRESULT 0\nACK 20\nnot in the directory"
    );
    let events: Vec<_> = std::iter::from_fn(|| h.broker.poll_event()).collect();
    let unbound: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Unbound { user, reason, .. } => Some((user.as_str(), *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(unbound, [("alice", "its probe failed"), ("bob", "left")]);
}

#[test]
fn a_rebind_replaces_and_a_stale_reprobe_does_nothing() {
    let mut h = quiet();
    let a = h.login("alice");
    h.send(a, b"BIND 0 127.0.0.1 7000\n");
    let p = h.probes();
    h.probe_result(p[0].id, true);
    h.take(a);
    h.advance(Duration::from_secs(34));
    let reprobe = h.probes();
    assert_eq!(reprobe.len(), 1);
    // A new BIND while the old entry's re-probe is out.
    h.send(a, b"BIND 0 127.0.0.1 7002\n");
    let p = h.probes();
    h.probe_result(p[0].id, true);
    assert!(h.take(a).starts_with("ACK"));
    // The old re-probe fails late: the new entry stays.
    h.probe_result(reprobe[0].id, false);
    h.send(a, b"QUERY 0\n");
    assert_eq!(h.take(a), "RESULT 21\nalice,127.0.0.1,7002\n");
}

#[test]
fn probes_in_flight_are_bounded() {
    let mut h = harness();
    let users: Vec<_> = (0..MAX_PROBES + 3)
        .map(|i| h.login(&format!("u{i}")))
        .collect();
    for (i, &c) in users.iter().enumerate() {
        h.send(c, format!("BIND 0 127.0.0.1 {}\n", 7000 + i).as_bytes());
    }
    assert_eq!(h.probes().len(), MAX_PROBES);
    for &c in &users[MAX_PROBES..] {
        let reply = h.take(c);
        assert!(reply.contains(" busy\n"), "{reply}");
    }
    // One session's flood: one probe at a time (its input waits).
    let mut h = harness();
    let a = h.login("flood");
    let flood: String = (0..1000)
        .map(|i| format!("BIND 0 127.0.0.1 {}\n", 7000 + i))
        .collect();
    h.send(a, flood.as_bytes());
    assert_eq!(h.probes().len(), 1);
}

// ---------------------------------------------------------------------------
// Queue groups and ECHO (issue 14)
// ---------------------------------------------------------------------------

#[test]
fn a_queue_group_gets_each_publish_once_round_robin_beside_plain_subscribers() {
    let mut h = harness();
    let p = h.login("pub");
    let plain = h.login("plain");
    h.send(plain, b"SUBSCRIBE 0 1\n");
    h.take(plain);
    let workers: Vec<_> = (0..3).map(|i| h.login(&format!("w{i}"))).collect();
    for &w in &workers {
        h.send(w, b"QSUBSCRIBE 0 jobs 1\n");
        assert_eq!(h.take(w), "ACK 10\nsubscribed");
    }
    // A second queue group with one member who is also a plain subscriber.
    h.send(plain, b"QSUBSCRIBE 0 audit 1\n");
    h.take(plain);
    let mut got = [0; 3];
    for n in 0..6 {
        h.send(p, format!("PUBLISH 1 1\n{n}").as_bytes());
        assert_eq!(h.take(p), "ACK 14\npublished to 2", "publish {n}");
        assert_eq!(h.take(plain), format!("PUBLISHED 1 pub 1\n{n}"), "once");
        for (i, &w) in workers.iter().enumerate() {
            let out = h.take(w);
            if !out.is_empty() {
                assert_eq!(out, format!("PUBLISHED 1 pub 1\n{n}"));
                got[i] += 1;
            }
        }
        assert_eq!(got.iter().sum::<i32>(), n + 1, "exactly one worker");
    }
    assert_eq!(got, [2, 2, 2], "round-robin");
    h.broker.assert_consistent();
    // Leaving: by command, and by closing.
    h.send(
        workers[0],
        b"QUNSUBSCRIBE 0 jobs 1\nQUNSUBSCRIBE 0 nope 1\n",
    );
    assert_eq!(
        h.take(workers[0]),
        "ACK 12\nunsubscribedACK 12\nunsubscribed"
    );
    h.broker.remove(workers[1], CloseReason::PeerClosed);
    h.broker.assert_consistent();
    h.send(p, b"PUBLISH 1 1\nx");
    assert_eq!(h.take(workers[2]), "PUBLISHED 1 pub 1\nx");
    assert_eq!(h.take(workers[0]), "");
}

#[test]
fn a_backed_up_member_is_skipped_and_unknown_groups_are_refused() {
    let mut h = Harness::new(BrokerConfig {
        read_pause: 64,
        ..BrokerConfig::default()
    });
    let p = h.login("pub");
    let (a, b) = (h.login("a"), h.login("b"));
    for c in [a, b] {
        h.send(c, b"QSUBSCRIBE 0 q 1\n");
        h.take(c);
    }
    // a never reads: once it holds more than the read pause, b gets them all.
    for _ in 0..20 {
        h.send(p, b"PUBLISH 10 1\n0123456789");
        h.take(p);
        h.take(b);
    }
    let held = h.take(a);
    assert!(
        held.len() < 200,
        "a stopped getting work: {} bytes",
        held.len()
    );
    h.send(a, b"QSUBSCRIBE 0 q 1 9\n");
    assert!(h.take(a).contains(" unknown-group\n"));
    h.broker.assert_consistent();
}

#[test]
fn echo_off_keeps_a_publisher_out_of_its_own_publishes() {
    let mut h = harness();
    let (a, b) = (h.login("a"), h.login("b"));
    for c in [a, b] {
        h.send(c, b"SUBSCRIBE 0 1\n");
        h.take(c);
    }
    h.send(a, b"ECHO 0 off\nPUBLISH 2 1\nhiECHO 0 on\nPUBLISH 2 1\nyo");
    assert_eq!(
        h.take(a),
        "ACK 8\necho offACK 14\npublished to 1ACK 7\necho onPUBLISHED 2 a 1\nyoACK 14\npublished to 2"
    );
    assert_eq!(h.take(b), "PUBLISHED 2 a 1\nhiPUBLISHED 2 a 1\nyo");
    h.send(a, b"ECHO 0 maybe\n");
    assert!(h.take(a).contains(" bad-args\n"));
}

// ---------------------------------------------------------------------------
// Request/reply and surveys (issue 14)
// ---------------------------------------------------------------------------

/// The rid in a `REQUESTED`/`SURVEYED` push.
fn rid_in(push: &str) -> String {
    push.lines()
        .next()
        .and_then(|l| l.split(' ').nth(4))
        .expect("a rid")
        .to_owned()
}

#[test]
fn a_request_goes_to_one_responder_and_replies_stay_in_order() {
    let mut h = quiet();
    let (req, plain, worker) = (h.login("req"), h.login("plain"), h.login("worker"));
    h.send(plain, b"SUBSCRIBE 0 1\n");
    h.take(plain);
    h.send(worker, b"QSUBSCRIBE 0 w 1\n");
    h.take(worker);
    // The requester's later frames are handled; their replies wait.
    h.send(req, b"REQUEST 3 1 1000\nq1?PING 0\n");
    assert_eq!(h.take(req), "");
    let push = h.take(worker);
    assert!(
        push.starts_with("REQUESTED 3 req 1 r"),
        "queue member first: {push}"
    );
    assert!(push.ends_with("\nq1?"));
    assert_eq!(h.take(plain), "", "one responder only");
    let rid = rid_in(&push);
    h.send(worker, format!("REPLY 3 {rid}\nyes").as_bytes());
    assert_eq!(h.take(worker), "ACK 7\nreplied");
    assert_eq!(h.take(req), "RESULT 3\nyesPONG 0\n");
    // Answered already: the rid is gone.
    h.send(worker, format!("REPLY 1 {rid}\nx").as_bytes());
    assert!(h.take(worker).contains(" bad-args\n"));
    // Nobody but the requester: no responders, at once.
    let lone = h.login("lone");
    h.send(lone, b"SUBSCRIBE 0 2\nREQUEST 1 2\nx");
    let out = h.take(lone);
    assert!(
        out.ends_with("no-responders\nnobody answers requests on group 2"),
        "{out}"
    );
    // A responder that never answers: ERR timeout at the deadline.
    h.send(req, b"REQUEST 1 1 500\nzPING 0\n");
    h.take(worker);
    h.take(plain);
    h.advance(Duration::from_millis(499));
    assert_eq!(h.take(req), "");
    h.advance(Duration::from_millis(2));
    assert_eq!(h.take(req), "ERR 16 timeout\nno reply in timePONG 0\n");
}

#[test]
fn request_state_goes_with_either_side() {
    let mut h = quiet();
    let (req, resp) = (h.login("req"), h.login("resp"));
    h.send(resp, b"SUBSCRIBE 0 1\n");
    h.take(resp);
    h.send(req, b"REQUEST 1 1\nx");
    h.take(resp);
    // The responder goes: no-responders at once.
    h.broker.remove(resp, CloseReason::PeerClosed);
    let out = h.take(req);
    assert!(
        out.contains(" no-responders\nthe responder went away"),
        "{out}"
    );
    // The requester goes: its responder's late reply is refused.
    let resp = h.login("resp2");
    h.send(resp, b"SUBSCRIBE 0 1\n");
    h.take(resp);
    h.send(req, b"REQUEST 1 1\nx");
    let rid = rid_in(&h.take(resp));
    h.broker.remove(req, CloseReason::PeerClosed);
    h.send(resp, format!("REPLY 1 {rid}\ny").as_bytes());
    assert!(h.take(resp).contains(" bad-args\n"));
    h.broker.assert_consistent();
}

#[test]
fn requests_waiting_per_session_are_bounded() {
    let mut h = quiet();
    let (req, resp) = (h.login("req"), h.login("resp"));
    h.send(resp, b"SUBSCRIBE 0 1\n");
    h.take(resp);
    let many = "REQUEST 1 1\nx".repeat(MAX_PENDING_REQUESTS + 1);
    h.send(req, many.as_bytes());
    // The last one is refused, behind the 64 waiting (in order).
    assert_eq!(h.take(req), "");
    h.advance(Duration::from_secs(6));
    let out = h.take(req);
    assert_eq!(out.matches(" timeout\n").count(), MAX_PENDING_REQUESTS);
    assert!(
        out.ends_with("requests and surveys are waiting already"),
        "{out}"
    );
}

#[test]
fn a_survey_collects_answers_until_its_deadline() {
    let mut h = quiet();
    let s = h.login("boss");
    let voters: Vec<_> = (0..3).map(|i| h.login(&format!("v{i}"))).collect();
    for &v in &voters {
        h.send(v, b"SUBSCRIBE 0 1\n");
        h.take(v);
    }
    h.send(s, b"SURVEY 6 1 1000\nlunch?");
    let rid = rid_in(&h.take(voters[0]));
    assert_eq!(
        h.take(voters[1]),
        format!("SURVEYED 6 boss 1 {rid}\nlunch?")
    );
    h.send(voters[1], format!("REPLY 2 {rid}\nno").as_bytes());
    h.send(voters[0], format!("REPLY 3 {rid}\nyes").as_bytes());
    assert_eq!(h.take(voters[0]), "ACK 7\nreplied");
    assert_eq!(h.take(s), "");
    h.advance(Duration::from_millis(1001));
    assert_eq!(h.take(s), "RESULT 33\nRESPONSE 2 v1\nnoRESPONSE 3 v0\nyes");
    // Late answers are refused; a survey nobody can answer ends at once.
    h.send(voters[2], format!("REPLY 1 {rid}\nx").as_bytes());
    assert!(h.take(voters[2]).contains(" bad-args\n"));
    h.send(s, b"SURVEY 0 2 1000\n");
    assert_eq!(h.take(s), "RESULT 0\n");
}
