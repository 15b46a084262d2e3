//! The codec byte by byte, the link with simulated time, the slot map.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::link::{BACKOFF_MAX, Backoff, Event, Link, LinkError, PING_INTERVAL, PING_TIMEOUT};
use super::link::{Role, Sent};
use super::resp::{self, Command, Decoded, RespError, Value};
use super::slots::{self, SlotMap};

fn bulk(s: &str) -> Value {
    Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn enc(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    resp::encode_value(v, &mut out);
    out
}

/// Every value kind, nulls and nesting included.
fn samples() -> Vec<Value> {
    vec![
        Value::Simple(Bytes::from_static(b"OK")),
        Value::Simple(Bytes::new()),
        Value::Error(Bytes::from_static(b"ERR unknown command")),
        Value::Integer(0),
        Value::Integer(-7),
        Value::Integer(i64::MAX),
        Value::Integer(i64::MIN),
        bulk(""),
        bulk("hello"),
        Value::Bulk(Bytes::from_static(b"a\r\nb\0\xff")),
        Value::Null,
        Value::Array(vec![]),
        Value::Array(vec![bulk("message"), bulk("ch"), bulk("payload")]),
        Value::Array(vec![
            Value::Integer(1),
            Value::Array(vec![Value::Null, Value::Array(vec![bulk("x")])]),
            Value::Error(Bytes::from_static(b"E")),
        ]),
    ]
}

#[test]
fn every_value_decodes_whole_and_every_prefix_is_incomplete() {
    for v in samples() {
        let bytes = enc(&v);
        for cut in 0..bytes.len() {
            match resp::decode(&bytes[..cut]) {
                Ok(Decoded::Incomplete { needed }) => {
                    assert!(
                        needed > cut && needed <= bytes.len(),
                        "{v:?} at {cut}: {needed}"
                    );
                }
                other => panic!("{v:?} cut at {cut}: {other:?}"),
            }
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"+next\r\n");
        assert_eq!(
            resp::decode(&longer),
            Ok(Decoded::Value {
                value: v.clone(),
                consumed: bytes.len()
            })
        );
    }
    // `*-1` is a null too.
    assert_eq!(
        resp::decode(b"*-1\r\n"),
        Ok(Decoded::Value {
            value: Value::Null,
            consumed: 5
        })
    );
}

#[test]
fn bad_input_is_an_error_not_a_wait() {
    let bad: &[(&[u8], RespError)] = &[
        (b"!x\r\n", RespError::Type(b'!')),
        (b"%1\r\n", RespError::Type(b'%')),
        (b"GET x\r\n", RespError::Type(b'G')),
        (b":12a\r\n", RespError::Number),
        (b":\r\n", RespError::Number),
        (b":-\r\n", RespError::Number),
        (b":+1\r\n", RespError::Number),
        (b":9223372036854775808\r\n", RespError::Number),
        (b"$abc\r\n", RespError::Number),
        (b"$-2\r\n", RespError::Number),
        (b"*-5\r\n", RespError::Number),
        (b"+OK\n", RespError::Terminator),
        (b"$3\r\nfooXY", RespError::Terminator),
        (b"*2\r\n:1\r\n!\r\n", RespError::Type(b'!')),
    ];
    for (input, want) in bad {
        assert_eq!(
            resp::decode(input),
            Err(*want),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn declared_sizes_are_capped_before_they_are_waited_for() {
    let max = format!("${}\r\n", resp::MAX_BULK);
    assert!(matches!(
        resp::decode(max.as_bytes()),
        Ok(Decoded::Incomplete { .. })
    ));
    let over = format!("${}\r\n", resp::MAX_BULK + 1);
    assert_eq!(resp::decode(over.as_bytes()), Err(RespError::BulkTooLarge));
    let huge = b"$99999999999999999999999\r\n";
    assert!(resp::decode(huge).is_err());
    let arr = format!("*{}\r\n", resp::MAX_ARRAY);
    match resp::decode(arr.as_bytes()) {
        // Waits for 3 bytes an element, without allocating for them.
        Ok(Decoded::Incomplete { needed }) => assert!(needed >= 3 * resp::MAX_ARRAY),
        other => panic!("{other:?}"),
    }
    // Part of a long array: the rest is waited for, 3 bytes an element.
    let mut part = b"*1000\r\n".to_vec();
    part.extend(b":100000\r\n".repeat(500));
    part.extend(b"$5\r\nab");
    match resp::decode(&part) {
        Ok(Decoded::Incomplete { needed }) => assert_eq!(needed, part.len() + 5 + 3 * 499),
        other => panic!("{other:?}"),
    }
    let arr = format!("*{}\r\n", resp::MAX_ARRAY + 1);
    assert_eq!(resp::decode(arr.as_bytes()), Err(RespError::ArrayTooLarge));
    // Depth 8 is fine, 9 is not.
    let nested = |depth: usize| {
        let mut v = "*1\r\n".repeat(depth).into_bytes();
        v.extend_from_slice(b":1\r\n");
        v
    };
    assert!(matches!(
        resp::decode(&nested(resp::MAX_DEPTH)),
        Ok(Decoded::Value { .. })
    ));
    assert_eq!(
        resp::decode(&nested(resp::MAX_DEPTH + 1)),
        Err(RespError::TooDeep)
    );
    // A line that never ends.
    let mut long = vec![b'+'];
    long.resize(resp::MAX_LINE, b'a');
    assert!(matches!(
        resp::decode(&long),
        Ok(Decoded::Incomplete { .. })
    ));
    long.resize(resp::MAX_LINE + 10, b'a');
    assert_eq!(resp::decode(&long), Err(RespError::LineTooLong));
}

#[test]
fn commands_are_arrays_of_bulk_strings_and_large_payloads_are_shared() {
    let mut out = Vec::new();
    let n = Command::from_args(&[b"PUBLISH", b"ch", b"hi"]).finish(&mut out);
    assert_eq!(
        out.concat(),
        b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$2\r\nhi\r\n"
    );
    assert_eq!(n, out.concat().len());

    let payload = Bytes::from(vec![7u8; resp::SHARE_AT]);
    let mut cmd = Command::new(3);
    cmd.arg(b"PUBLISH").arg(b"ch").shared(&payload);
    let mut out = Vec::new();
    let n = cmd.finish(&mut out);
    assert_eq!(out.len(), 3, "header, payload, trailer");
    assert_eq!(
        out[1].as_ptr(),
        payload.as_ptr(),
        "the payload is not copied"
    );
    let mut copied = Vec::new();
    Command::from_args(&[b"PUBLISH", b"ch", &payload]).finish(&mut copied);
    assert_eq!(out.concat(), copied.concat());
    assert_eq!(n, copied.concat().len());
    match resp::decode(&out.concat()) {
        Ok(Decoded::Value {
            value: Value::Array(items),
            ..
        }) => assert_eq!(items[2], Value::Bulk(payload)),
        other => panic!("{other:?}"),
    }
}

/// Feeds `input` to a link in pieces of `step` bytes, keeping the unused
/// tail as the connection table does.
fn feed(link: &mut Link, input: &[u8], step: usize) -> Result<Vec<Event>, LinkError> {
    let mut events = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    for chunk in input.chunks(step.max(1)) {
        tail.extend_from_slice(chunk);
        let used = link.handle_input(&tail, &mut events)?;
        tail.drain(..used);
    }
    assert!(tail.is_empty(), "{} bytes left", tail.len());
    Ok(events)
}

fn pushes() -> Vec<u8> {
    let mut input = Vec::new();
    for v in [
        Value::Array(vec![bulk("subscribe"), bulk("a"), Value::Integer(1)]),
        Value::Array(vec![bulk("message"), bulk("a"), bulk("one")]),
        Value::Array(vec![bulk("pong"), bulk("")]),
        Value::Array(vec![
            bulk("smessage"),
            bulk("a"),
            Value::Bulk(Bytes::from(vec![b'x'; 70_000])),
        ]),
        Value::Array(vec![bulk("message"), bulk("a"), bulk("")]),
    ] {
        input.extend(enc(&v));
    }
    input
}

#[test]
fn a_subscriber_link_reads_the_same_byte_by_byte_as_at_once() {
    let t = Instant::now();
    let input = pushes();
    let mut whole = Link::new(Role::Subscriber, t);
    let all = feed(&mut whole, &input, input.len()).expect("at once");
    for step in [1, 2, 7, 1000] {
        let mut link = Link::new(Role::Subscriber, t);
        assert_eq!(
            feed(&mut link, &input, step).expect("split"),
            all,
            "step {step}"
        );
    }
    assert_eq!(all.len(), 4);
    assert_eq!(all[0], Event::Subscribed("a".into()));
    assert_eq!(
        all[1],
        Event::Message {
            channel: "a".into(),
            payload: Bytes::from_static(b"one")
        }
    );
    assert!(whole.confirmed().contains("a"));
}

#[test]
fn replies_are_matched_to_commands_in_order() {
    let t = Instant::now();
    let mut link = Link::new(Role::Command, t);
    link.connected(t);
    let mut out = Vec::new();
    link.send(
        Sent::Slots,
        Command::from_args(&[b"CLUSTER", b"SLOTS"]),
        &mut out,
    );
    link.send(
        Sent::Publish,
        Command::from_args(&[b"PUBLISH", b"c", b"x"]),
        &mut out,
    );
    link.send(
        Sent::Set,
        Command::from_args(&[b"SET", b"k", b"v"]),
        &mut out,
    );
    link.send(
        Sent::Publish,
        Command::from_args(&[b"SPUBLISH", b"c", b"x"]),
        &mut out,
    );
    let sent: usize = out.iter().map(Bytes::len).sum();
    assert_eq!(link.unacked(), sent);
    assert!(link.awaits(Sent::Slots));
    let input =
        b"-ERR This instance has cluster support disabled\r\n:1\r\n+OK\r\n-MOVED 3999 127.0.0.1:7001\r\n";
    let events = feed(&mut link, input, 1).expect("replies");
    assert_eq!(
        events,
        vec![
            Event::Slots(Err(Bytes::from_static(
                b"ERR This instance has cluster support disabled"
            ))),
            Event::Redirected,
        ]
    );
    assert_eq!(link.unacked(), 0);
    assert!(!link.awaits(Sent::Slots));
    assert_eq!(
        feed(&mut link, b"+OK\r\n", 1),
        Err(LinkError::UnexpectedReply)
    );
}

#[test]
fn the_bound_counts_unanswered_bytes() {
    let t = Instant::now();
    let mut link = Link::new(Role::Command, t);
    link.connected(t);
    let mut out = Vec::new();
    let max = 100;
    let mut sent = 0;
    let mut dropped = 0;
    for _ in 0..10 {
        let cmd = Command::from_args(&[b"PUBLISH", b"chan", b"0123456789"]);
        if link.fits(cmd.len(), max) {
            link.send(Sent::Publish, cmd, &mut out);
            sent += 1;
        } else {
            dropped += 1;
        }
    }
    assert!(link.unacked() <= max);
    assert_eq!((sent, dropped), (2, 8));
    // One answer makes room for one more.
    feed(&mut link, b":1\r\n", 4).expect("reply");
    assert!(link.fits(
        Command::from_args(&[b"PUBLISH", b"chan", b"0123456789"]).len(),
        max
    ));
}

#[test]
fn pings_are_sent_every_interval_and_a_missing_pong_times_out() {
    let t = Instant::now();
    let mut link = Link::new(Role::Command, t);
    let mut out = Vec::new();
    // Not connected within the timeout.
    assert_eq!(link.poll_timeout(), Some(t + PING_TIMEOUT));
    assert!(
        link.handle_timeout(t + PING_TIMEOUT - Duration::from_millis(1), &mut out)
            .is_ok()
    );
    assert_eq!(
        link.handle_timeout(t + PING_TIMEOUT, &mut out),
        Err(LinkError::Timeout)
    );

    let mut link = Link::new(Role::Command, t);
    link.connected(t);
    assert_eq!(link.poll_timeout(), Some(t + PING_INTERVAL));
    link.handle_timeout(t + PING_INTERVAL - Duration::from_millis(1), &mut out)
        .expect("early");
    assert!(out.is_empty());
    let t1 = t + PING_INTERVAL;
    link.handle_timeout(t1, &mut out).expect("ping");
    assert_eq!(out.concat(), b"*1\r\n$4\r\nPING\r\n");
    out.clear();
    // Answered: the next one 3 s later.
    feed(&mut link, b"+PONG\r\n", 1).expect("pong");
    assert_eq!(link.poll_timeout(), Some(t1 + PING_INTERVAL));
    let t2 = t1 + PING_INTERVAL;
    link.handle_timeout(t2, &mut out).expect("second ping");
    assert_eq!(out.len(), 1);
    out.clear();
    // Not answered: no second ping while one is out, then the timeout.
    link.handle_timeout(t2 + PING_INTERVAL, &mut out)
        .expect("still waiting");
    assert!(out.is_empty());
    assert_eq!(link.poll_timeout(), Some(t2 + PING_TIMEOUT));
    assert_eq!(
        link.handle_timeout(t2 + PING_TIMEOUT, &mut out),
        Err(LinkError::Timeout)
    );

    // A subscriber's pong is a push.
    let mut sub = Link::new(Role::Subscriber, t);
    sub.connected(t);
    sub.handle_timeout(t1, &mut out).expect("ping");
    feed(
        &mut sub,
        &enc(&Value::Array(vec![bulk("pong"), bulk("")])),
        3,
    )
    .expect("pong");
    assert!(sub.handle_timeout(t1 + PING_TIMEOUT, &mut out).is_ok());
}

#[test]
fn the_back_off_doubles_to_five_seconds_and_resets() {
    let mut b = Backoff::default();
    let ms: Vec<u128> = (0..9).map(|_| b.next_delay().as_millis()).collect();
    assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    assert_eq!(BACKOFF_MAX, Duration::from_secs(5));
    b.reset();
    assert_eq!(b.next_delay(), Duration::from_millis(100));
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn commands(out: &mut Vec<Bytes>) -> Vec<Vec<String>> {
    let bytes = out.concat();
    out.clear();
    let mut rest = &bytes[..];
    let mut all = Vec::new();
    while !rest.is_empty() {
        let Ok(Decoded::Value {
            value: Value::Array(items),
            consumed,
        }) = resp::decode(rest)
        else {
            panic!("not a command")
        };
        all.push(
            items
                .iter()
                .map(|i| String::from_utf8_lossy(i.as_bytes().unwrap_or_default()).into_owned())
                .collect(),
        );
        rest = &rest[consumed..];
    }
    all
}

fn confirm(link: &mut Link, kind: &str, channels: &[&str]) -> Vec<Event> {
    let mut input = Vec::new();
    for c in channels {
        input.extend(enc(&Value::Array(vec![
            bulk(kind),
            bulk(c),
            Value::Integer(1),
        ])));
    }
    feed(link, &input, 5).expect("confirmations")
}

#[test]
fn subscriptions_follow_the_wanted_set_and_are_all_asked_again_after_a_reconnect() {
    let t = Instant::now();
    let mut out = Vec::new();
    let mut link = Link::new(Role::Subscriber, t);
    link.connected(t);
    let wanted = set(&["a", "b"]);
    link.reconcile(&wanted, false, &mut out);
    assert_eq!(commands(&mut out), vec![vec!["SUBSCRIBE", "a", "b"]]);
    // Nothing more while they are in flight.
    link.reconcile(&wanted, false, &mut out);
    assert!(out.is_empty());
    assert!(!link.all_confirmed(&wanted));
    confirm(&mut link, "subscribe", &["a", "b"]);
    assert!(link.all_confirmed(&wanted));
    let wanted = set(&["a", "c"]);
    link.reconcile(&wanted, false, &mut out);
    assert_eq!(
        commands(&mut out),
        vec![vec!["UNSUBSCRIBE", "b"], vec!["SUBSCRIBE", "c"]]
    );
    confirm(&mut link, "unsubscribe", &["b"]);
    confirm(&mut link, "subscribe", &["c"]);
    assert_eq!(link.confirmed(), &wanted);

    // A reconnect is a new link: everything is asked again.
    let mut link = Link::new(Role::Subscriber, t);
    link.connected(t);
    link.reconcile(&wanted, false, &mut out);
    assert_eq!(commands(&mut out), vec![vec!["SUBSCRIBE", "a", "c"]]);

    // Sharded: one channel a command (they may be in different slots).
    let mut link = Link::new(Role::Subscriber, t);
    link.connected(t);
    link.reconcile(&wanted, true, &mut out);
    assert_eq!(
        commands(&mut out),
        vec![vec!["SSUBSCRIBE", "a"], vec!["SSUBSCRIBE", "c"]]
    );
    confirm(&mut link, "ssubscribe", &["a", "c"]);
    // Redis ending one on its own (the slot moved) is a revocation.
    let events = confirm(&mut link, "sunsubscribe", &["a"]);
    assert_eq!(events, vec![Event::Revoked("a".into())]);
    link.reconcile(&wanted, true, &mut out);
    assert_eq!(commands(&mut out), vec![vec!["SSUBSCRIBE", "a"]]);
    // A MOVED for an SSUBSCRIBE: asked again after the map refresh.
    let events = feed(&mut link, b"-MOVED 15495 127.0.0.1:7003\r\n", 2).expect("moved");
    assert_eq!(events, vec![Event::Redirected]);
    link.reconcile(&wanted, true, &mut out);
    assert_eq!(commands(&mut out), vec![vec!["SSUBSCRIBE", "a"]]);
}

#[test]
fn an_unsubscribe_then_subscribe_again_ends_subscribed() {
    let t = Instant::now();
    let mut out = Vec::new();
    let mut link = Link::new(Role::Subscriber, t);
    link.reconcile(&set(&["a"]), false, &mut out);
    confirm(&mut link, "subscribe", &["a"]);
    link.reconcile(&set(&[]), false, &mut out);
    link.reconcile(&set(&["a"]), false, &mut out);
    assert_eq!(
        commands(&mut out),
        vec![
            vec!["SUBSCRIBE", "a"],
            vec!["UNSUBSCRIBE", "a"],
            vec!["SUBSCRIBE", "a"]
        ]
    );
    confirm(&mut link, "unsubscribe", &["a"]);
    confirm(&mut link, "subscribe", &["a"]);
    assert!(link.all_confirmed(&set(&["a"])));
}

#[test]
fn key_slots_are_crc16_of_the_key_or_its_hashtag() {
    assert_eq!(slots::crc16(b"123456789"), 0x31C3);
    assert_eq!(slots::key_slot(b"foo"), 12182);
    assert_eq!(slots::key_slot(b"bar"), 5061);
    assert_eq!(
        slots::key_slot(b"{user1000}.following"),
        slots::key_slot(b"user1000")
    );
    assert_eq!(
        slots::key_slot(b"foo{}{bar}"),
        slots::crc16(b"foo{}{bar}") % 16384
    );
    assert_eq!(slots::key_slot(b"foo{{bar}}zap"), slots::key_slot(b"{bar"));
    assert_eq!(slots::key_slot(b"foo{bar}{zap}"), slots::key_slot(b"bar"));
    assert_eq!(slots::key_slot(b"switchboard:{a}"), 15495);
    assert_eq!(slots::key_slot(b"switchboard:{b}"), 3300);
    assert_eq!(slots::key_slot(b"switchboard:{c}"), 7365);
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A `CLUSTER SLOTS` reply: `(start, end, master port)`.
fn slots_reply(ranges: &[(i64, i64, u16)]) -> Value {
    Value::Array(
        ranges
            .iter()
            .map(|&(start, end, port)| {
                Value::Array(vec![
                    Value::Integer(start),
                    Value::Integer(end),
                    Value::Array(vec![
                        bulk("127.0.0.1"),
                        Value::Integer(port.into()),
                        bulk("id"),
                    ]),
                    Value::Array(vec![bulk(""), Value::Integer(9999), bulk("replica")]),
                ])
            })
            .collect(),
    )
}

#[test]
fn a_scripted_slot_map_routes_and_a_moved_reply_asks_for_a_new_one() {
    let seed = addr(7001);
    let map = SlotMap::from_reply(
        &slots_reply(&[(0, 5460, 7001), (5461, 10922, 7002), (10923, 16383, 7003)]),
        seed,
    )
    .expect("map");
    assert_eq!(map.masters(), &[addr(7001), addr(7002), addr(7003)]);
    assert_eq!(map.master_of(b"switchboard:{b}"), Some(addr(7001)));
    assert_eq!(map.master_of(b"switchboard:{c}"), Some(addr(7002)));
    assert_eq!(map.master_of(b"switchboard:{a}"), Some(addr(7003)));

    // An SPUBLISH answered with MOVED: the engine is told to refresh.
    let t = Instant::now();
    let mut link = Link::new(Role::Command, t);
    link.connected(t);
    let mut out = Vec::new();
    link.send(
        Sent::Publish,
        Command::from_args(&[b"SPUBLISH", b"switchboard:{a}", b"x"]),
        &mut out,
    );
    let events = feed(&mut link, b"-MOVED 15495 127.0.0.1:7002\r\n", 1).expect("moved");
    assert_eq!(events, vec![Event::Redirected]);
    assert_eq!(
        slots::redirect(b"MOVED 15495 127.0.0.1:7002"),
        Some((15495, "127.0.0.1:7002", false))
    );
    assert_eq!(
        slots::redirect(b"ASK 1 127.0.0.1:7002"),
        Some((1, "127.0.0.1:7002", true))
    );
    assert_eq!(slots::redirect(b"MOVED 16384 x"), None);
    assert_eq!(slots::redirect(b"ERR x"), None);

    // The refreshed map: slot 15495 moved to 7002.
    let moved = SlotMap::from_reply(
        &slots_reply(&[(0, 5460, 7001), (5461, 15495, 7002), (15496, 16383, 7003)]),
        seed,
    )
    .expect("map");
    assert_ne!(moved, map);
    assert_eq!(moved.master_of(b"switchboard:{a}"), Some(addr(7002)));
    // An empty ip is the node asked.
    let empty_ip = Value::Array(vec![Value::Array(vec![
        Value::Integer(0),
        Value::Integer(16383),
        Value::Array(vec![bulk(""), Value::Integer(7005)]),
    ])]);
    let m = SlotMap::from_reply(&empty_ip, seed).expect("map");
    assert_eq!(m.masters(), &[addr(7005)]);
    // Nonsense is refused, not trusted.
    for bad in [
        Value::Integer(1),
        slots_reply(&[(5, 4, 7001)]),
        slots_reply(&[(0, 16384, 7001)]),
        slots_reply(&[(-1, 3, 7001)]),
        Value::Array(vec![Value::Array(vec![Value::Integer(0)])]),
    ] {
        assert_eq!(SlotMap::from_reply(&bad, seed), None, "{bad:?}");
    }
}

/// Decode cost, for the report: `cargo test --release --lib
/// decode_cost -- --ignored --nocapture`. The input comes in 64 KiB reads
/// (the reactor's), the unused tail kept as the connection table keeps it,
/// and the messages are dropped after each read (as the broker takes them
/// every turn), so that the allocator reuses their memory.
#[test]
#[ignore = "a measurement, not a check"]
fn decode_cost() {
    for size in [64usize, 1024, 16 * 1024] {
        let one = enc(&Value::Array(vec![
            bulk("message"),
            bulk("switchboard:node:abc"),
            Value::Bulk(Bytes::from(vec![b'x'; size])),
        ]));
        let input = one.repeat((8 << 20) / one.len());
        let mut best = Duration::MAX;
        let mut n = 0;
        for _ in 0..5 {
            let start = Instant::now();
            let mut link = Link::new(Role::Subscriber, start);
            let mut events = Vec::new();
            let mut tail: Vec<u8> = Vec::new();
            n = 0;
            for chunk in input.chunks(64 << 10) {
                // As `Links::input`: the read itself when nothing is kept.
                if tail.is_empty() {
                    let used = link.handle_input(chunk, &mut events).expect("decode");
                    tail.extend_from_slice(&chunk[used..]);
                } else {
                    tail.extend_from_slice(chunk);
                    let used = link.handle_input(&tail, &mut events).expect("decode");
                    tail.drain(..used);
                }
                n += events.len();
                events.clear();
            }
            best = best.min(start.elapsed());
        }
        let per = best / u32::try_from(n).unwrap_or(u32::MAX);
        let rate = (n * one.len()) as f64 / best.as_secs_f64() / f64::from(1 << 20);
        println!(
            "{size}-byte payload: {per:?} per message, {rate:.0} MiB/s ({n} messages, best of 5)"
        );
    }
}

#[test]
fn auth_goes_first_and_a_refusal_is_its_own_event() {
    let t = Instant::now();
    let refused =
        Bytes::from_static(b"WRONGPASS invalid username-password pair or user is disabled.");
    // A command connection: AUTH user password, then what follows, matched
    // in order; its error is `AuthRefused`, not a generic error.
    let mut link = Link::new(Role::Command, t);
    link.connected(t);
    let mut out = Vec::new();
    link.authenticate(Some("bob"), "s3cret", &mut out);
    link.send(
        Sent::Slots,
        Command::from_args(&[b"CLUSTER", b"SLOTS"]),
        &mut out,
    );
    assert_eq!(
        commands(&mut out),
        vec![vec!["AUTH", "bob", "s3cret"], vec!["CLUSTER", "SLOTS"]]
    );
    assert!(link.awaits(Sent::Auth));
    let events = feed(&mut link, b"+OK\r\n-ERR cluster support disabled\r\n", 1).expect("ok");
    assert_eq!(
        events,
        vec![Event::Slots(Err(Bytes::from_static(
            b"ERR cluster support disabled"
        )))]
    );
    assert_eq!(link.unacked(), 0);
    let mut link = Link::new(Role::Command, t);
    link.connected(t);
    link.authenticate(None, "pw", &mut out);
    assert_eq!(commands(&mut out), vec![vec!["AUTH", "pw"]]);
    let mut input = b"-".to_vec();
    input.extend_from_slice(&refused);
    input.extend_from_slice(b"\r\n");
    let events = feed(&mut link, &input, 3).expect("refused");
    assert_eq!(events, vec![Event::AuthRefused(refused.clone())]);

    // A subscriber connection: the first reply answers AUTH (`+OK` says
    // nothing), then pushes as usual.
    let mut link = Link::new(Role::Subscriber, t);
    link.connected(t);
    link.authenticate(None, "pw", &mut out);
    link.reconcile(&set(&["a"]), false, &mut out);
    assert_eq!(
        commands(&mut out),
        vec![vec!["AUTH", "pw"], vec!["SUBSCRIBE", "a"]]
    );
    let mut input = b"+OK\r\n".to_vec();
    input.extend(pushes());
    let events = feed(&mut link, &input, 2).expect("pushes");
    assert_eq!(events.first(), Some(&Event::Subscribed("a".into())));
    assert_eq!(events.len(), 4);
    // Refused: one event, and the NOAUTH of the SUBSCRIBE after it is an
    // ordinary error.
    let mut link = Link::new(Role::Subscriber, t);
    link.connected(t);
    link.authenticate(None, "wrong", &mut out);
    let mut input = b"-".to_vec();
    input.extend_from_slice(&refused);
    input.extend_from_slice(b"\r\n-NOAUTH Authentication required.\r\n");
    let events = feed(&mut link, &input, 1).expect("refused");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0], Event::AuthRefused(refused));
    assert!(matches!(events[1], Event::Error { sent: None, .. }));
}
