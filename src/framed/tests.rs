//! The framed service driven byte by byte, without sockets.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Up(usize),
    Msg(usize, Vec<u8>),
    Down(usize, CloseReason),
}

/// Records every callback; echoes messages when `echo` is set.
#[derive(Debug, Default)]
struct Recorder {
    events: Vec<Ev>,
    echo: bool,
    /// Closes the connection on this message.
    close_on: Option<Vec<u8>>,
}

impl FramedHandler for Recorder {
    fn on_established(&mut self, _ctx: &mut FramedContext<'_>, conn: ConnId) {
        self.events.push(Ev::Up(conn.0));
    }
    fn on_message(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId, message: &[u8]) {
        self.events.push(Ev::Msg(conn.0, message.to_vec()));
        if self.echo {
            assert!(ctx.send(conn, message));
        }
        if self.close_on.as_deref() == Some(message) {
            ctx.close(conn);
        }
    }
    fn on_closed(&mut self, _ctx: &mut FramedContext<'_>, conn: ConnId, reason: CloseReason) {
        self.events.push(Ev::Down(conn.0, reason));
    }
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000))
}

fn service(framing: Framing) -> (FramedService<(), Recorder>, ConnId, Instant) {
    let now = Instant::now();
    let mut s = FramedService::new(framing, false, Recorder::default());
    let conn = open(&mut s, now);
    (s, conn, now)
}

fn open<H: FramedHandler>(s: &mut FramedService<(), H>, now: Instant) -> ConnId {
    match s.accept((), peer(), now) {
        Admission::Open(id) => id,
        other => panic!("not admitted: {other:?}"),
    }
}

fn messages(s: &FramedService<(), Recorder>) -> Vec<Vec<u8>> {
    s.handler
        .events
        .iter()
        .filter_map(|e| match e {
            Ev::Msg(_, m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn output(s: &mut FramedService<(), Recorder>, conn: ConnId) -> Vec<u8> {
    let Some((_, out)) = s.core.links.io_and_output(conn) else {
        return Vec::new();
    };
    let mut slices = [std::io::IoSlice::new(&[]); 64];
    let n = out.fill_slices(&mut slices);
    let bytes: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
    out.consume(bytes.len());
    bytes
}

const LINES: Framing = Framing::Delimited {
    delimiter: b'\n',
    max_len: 8,
};

#[test]
fn delimited_split_at_every_position() {
    let input = b"hello\n\nworld!\nab";
    for cut in 0..=input.len() {
        let (mut s, conn, now) = service(LINES);
        s.handle_input(conn, &input[..cut], now);
        s.handle_input(conn, &input[cut..], now);
        assert_eq!(
            messages(&s),
            vec![b"hello".to_vec(), Vec::new(), b"world!".to_vec()],
            "cut at {cut}"
        );
        assert!(!s.core.links.is_closing(conn));
    }
}

#[test]
fn delimited_byte_by_byte_frees_the_tail() {
    let (mut s, conn, now) = service(LINES);
    for &b in b"one\ntwo\n" {
        s.handle_input(conn, &[b], now);
    }
    assert_eq!(messages(&s), vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(s.core.links.input_capacity(conn), 0);
}

#[test]
fn delimited_max_len_is_inclusive_and_over_it_closes() {
    let (mut s, conn, now) = service(LINES);
    s.handle_input(conn, b"12345678\n", now);
    assert_eq!(messages(&s), vec![b"12345678".to_vec()]);
    assert!(!s.core.links.is_closing(conn));
    // Nine bytes and no delimiter: closed before any more arrives.
    for &b in b"123456789" {
        s.handle_input(conn, &[b], now);
    }
    assert!(s.core.links.is_closing(conn));
    assert_eq!(s.core.links.input_capacity(conn), 0);
    // Input after the close is discarded.
    s.handle_input(conn, b"x\n", now);
    assert_eq!(messages(&s).len(), 1);
    s.handle_eof(conn, now);
    assert!(s.core.links.finished(conn, now));
    assert!(s.remove(conn, CloseReason::Io, now).is_some());
    assert_eq!(
        s.handler.events.last(),
        Some(&Ev::Down(conn.0, CloseReason::TooLarge))
    );
}

#[test]
fn dripped_over_long_message_closes_without_rescanning() {
    let framing = Framing::Delimited {
        delimiter: b'\n',
        max_len: 1000,
    };
    let (mut s, conn, now) = service(framing);
    for _ in 0..1000 {
        s.handle_input(conn, b"x", now);
    }
    assert!(!s.core.links.is_closing(conn));
    assert_eq!(s.core.links.pending_input(conn), 1000);
    s.handle_input(conn, b"\n", now);
    assert_eq!(messages(&s), vec![vec![b'x'; 1000]]);
    for _ in 0..1001 {
        s.handle_input(conn, b"y", now);
    }
    assert!(s.core.links.is_closing(conn));
}

#[test]
fn a_stop_from_a_late_callback_is_seen() {
    let (mut s, conn, now) = service(LINES);
    assert!(!s.stop_requested());
    let mut ctx = FramedContext {
        core: &mut s.core.view(),
        now,
    };
    ctx.stop();
    assert!(s.stop_requested());
    assert!(s.take_stop());
    assert!(!s.stop_requested());
    assert!(s.core.links.peer(conn).is_some());
}

#[test]
fn over_long_message_closes_only_that_connection() {
    let (mut s, a, now) = service(LINES);
    let b = open(&mut s, now);
    s.handle_input(a, b"way too long for this\n", now);
    s.handle_input(b, b"fine\n", now);
    assert!(s.core.links.is_closing(a));
    assert!(!s.core.links.is_closing(b));
    assert_eq!(messages(&s), vec![b"fine".to_vec()]);
}

const PREFIXED: Framing = Framing::LengthPrefixed { max_len: 16 };

#[test]
fn length_prefixed_split_at_every_position() {
    let mut input = Vec::new();
    for m in [&b"abc"[..], b"", b"0123456789abcdef"] {
        input.extend_from_slice(&(m.len() as u32).to_be_bytes());
        input.extend_from_slice(m);
    }
    for cut in 0..=input.len() {
        let (mut s, conn, now) = service(PREFIXED);
        s.handle_input(conn, &input[..cut], now);
        s.handle_input(conn, &input[cut..], now);
        assert_eq!(
            messages(&s),
            vec![b"abc".to_vec(), Vec::new(), b"0123456789abcdef".to_vec()],
            "cut at {cut}"
        );
    }
    let (mut s, conn, now) = service(PREFIXED);
    for &b in &input {
        s.handle_input(conn, &[b], now);
    }
    assert_eq!(messages(&s).len(), 3);
    assert_eq!(s.core.links.input_capacity(conn), 0);
}

#[test]
fn length_prefix_over_max_closes_before_the_body() {
    let (mut s, conn, now) = service(PREFIXED);
    s.handle_input(conn, &[0, 0, 0], now);
    assert!(!s.core.links.is_closing(conn));
    s.handle_input(conn, &[17], now);
    assert!(s.core.links.is_closing(conn));
    // A huge declared length is refused the same way, not waited for.
    let (mut s, conn, now) = service(PREFIXED);
    s.handle_input(conn, &u32::MAX.to_be_bytes(), now);
    assert!(s.core.links.is_closing(conn));
}

#[test]
fn raw_hands_over_bytes_as_they_come() {
    let (mut s, conn, now) = service(Framing::Raw);
    s.handle_input(conn, b"ab", now);
    s.handle_input(conn, b"", now);
    s.handle_input(conn, b"c\n", now);
    assert_eq!(messages(&s), vec![b"ab".to_vec(), b"c\n".to_vec()]);
}

#[test]
fn send_frames_per_framing() {
    for (framing, wire) in [
        (LINES, b"hi\n".to_vec()),
        (PREFIXED, vec![0, 0, 0, 2, b'h', b'i']),
        (Framing::Raw, b"hi".to_vec()),
    ] {
        let (mut s, conn, now) = service(framing);
        s.handler.echo = true;
        s.handle_input(conn, &wire, now);
        let mut dirty = Vec::new();
        s.core.links.take_dirty(&mut dirty);
        assert_eq!(dirty, vec![conn]);
        assert_eq!(output(&mut s, conn), wire, "{framing:?}");
    }
}

#[test]
fn send_refuses_what_the_framing_cannot_carry() {
    let (mut s, conn, now) = service(LINES);
    let mut ctx = FramedContext {
        core: &mut s.core.view(),
        now,
    };
    assert!(!ctx.send(conn, b"has\nnewline"));
    assert!(!ctx.send(conn, b"123456789"));
    assert!(!ctx.send(ConnId(99), b"x"));
    assert!(ctx.send(conn, b"12345678"));
    ctx.close(conn);
    assert!(!ctx.send(conn, b"late"));
    assert_eq!(output(&mut s, conn), b"12345678\n");
}

#[test]
fn handler_close_stops_processing_and_lingers() {
    let (mut s, conn, now) = service(LINES);
    s.handler.close_on = Some(b"bye".to_vec());
    s.handle_input(conn, b"a\nbye\nb\n", now);
    assert_eq!(messages(&s), vec![b"a".to_vec(), b"bye".to_vec()]);
    assert!(s.core.links.is_closing(conn));
    assert!(!s.core.links.finished(conn, now));
    let deadline = s.poll_timeout().expect("linger deadline");
    s.handle_timeout(deadline);
    assert!(s.core.links.finished(conn, deadline));
    s.remove(conn, CloseReason::Io, deadline);
    assert_eq!(
        s.handler.events.last(),
        Some(&Ev::Down(conn.0, CloseReason::Closed))
    );
}

#[test]
fn tls_connections_are_established_after_the_handshake() {
    let now = Instant::now();
    let mut s = FramedService::new(LINES, true, Recorder::default());
    let conn = open(&mut s, now);
    assert!(s.handler.events.is_empty());
    let subject = PeerIdentity {
        cn: Some("alice".into()),
        ..PeerIdentity::default()
    };
    s.handle_secured(conn, Some(subject.clone()), now);
    assert_eq!(s.handler.events, vec![Ev::Up(conn.0)]);
    let ctx = FramedContext {
        core: &mut s.core.view(),
        now,
    };
    assert_eq!(ctx.client_cert(conn), Some(&subject));
    assert_eq!(ctx.peer(conn), Some(peer()));
    // One that never finished its handshake is never reported.
    let other = open(&mut s, now);
    s.remove(other, CloseReason::Tls, now);
    assert_eq!(s.handler.events, vec![Ev::Up(conn.0)]);
}

#[test]
fn shutdown_closes_everything_and_refuses_new() {
    let (mut s, conn, now) = service(LINES);
    s.shutdown(now);
    assert!(s.core.links.is_closing(conn));
    assert!(matches!(s.accept((), peer(), now), Admission::Dropped(..)));
}
