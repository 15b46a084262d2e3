//! Check functions for the fuzz targets (`fuzz/`, docs/fuzzing.md), one per
//! target, built only with the feature `fuzzing`. Not an API.
//!
//! Each function takes the fuzzer's bytes, drives one sans-IO piece with
//! them and panics if an invariant breaks. The fuzz targets call them, and
//! `tests/fuzz_corpus.rs` replays the committed corpus through the same
//! functions on stable Rust.
//!
//! With `SWITCHBOARD_FUZZ_TRACE` set, `broker` and `tls_server` print each
//! operation they decode from the input (to read a crash input).

use std::io::{self, IoSlice, Read};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};

use crate::broker::{AuthMode, AuthRequest, Broker, BrokerConfig, CloseReason, ConnId, Sessions};
use crate::client::ClientSession;
use crate::conn::{Admission, PeerIdentity};
use crate::passwd::PasswordFile;
use crate::proto::frame::{self, DEFAULT_MAX_PAYLOAD, MIN_MAX_PAYLOAD};
use crate::proto::{Decoded, decode};
use crate::tls::{ClientAuth, MIN_WRITE_SCRATCH, ReadStep, TlsSession, server_config};

// frame_decoder
// ---------------------------------------------------------------------------

/// The payload limits the decoder is checked with: none, tiny, the
/// pre-login limit, the smallest and the default server limits, the
/// client's, and no limit at all.
const MAX_PAYLOADS: [usize; 7] = [
    0,
    16,
    crate::broker::PRELOGIN_MAX_PAYLOAD,
    MIN_MAX_PAYLOAD,
    DEFAULT_MAX_PAYLOAD,
    crate::client::MAX_SERVER_PAYLOAD,
    usize::MAX,
];

/// `proto::decode` on `data` (the first byte picks the payload limit, the
/// second a split point): it never panics, never consumes more than it was
/// given, agrees with itself on every prefix (a prefix of a frame is
/// `Incomplete`, never an error), and a decoded frame re-encodes to a frame
/// that decodes the same.
pub fn frame_decoder(data: &[u8]) {
    let (max_payload, cut, buf) = match data {
        [a, b, rest @ ..] => (MAX_PAYLOADS[usize::from(*a) % MAX_PAYLOADS.len()], *b, rest),
        _ => return,
    };
    let full = decode(buf, max_payload);
    let cut = if buf.is_empty() {
        0
    } else {
        usize::from(cut) % (buf.len() + 1)
    };
    let prefix = decode(&buf[..cut], max_payload);
    match &full {
        Ok(Decoded::Frame { frame, consumed }) => {
            assert!(
                *consumed > 0 && *consumed <= buf.len(),
                "consumed {consumed}"
            );
            assert!(frame.payload().len() <= max_payload);
            assert!(frame.arg_count() <= frame::MAX_ARGS);
            assert_eq!(frame.args().count(), frame.arg_count());
            match prefix {
                Ok(Decoded::Frame {
                    frame: f,
                    consumed: c,
                }) => {
                    assert!(cut >= *consumed, "frame in a shorter prefix");
                    assert_eq!(c, *consumed);
                    assert_eq!(f.verb(), frame.verb());
                    assert_eq!(f.payload(), frame.payload());
                    assert!(f.args().eq(frame.args()));
                }
                Ok(Decoded::Incomplete { skip, frame_len }) => {
                    assert!(cut < *consumed, "a whole frame reported incomplete");
                    assert!(skip <= cut);
                    if let Some(len) = frame_len {
                        assert_eq!(skip + len, *consumed, "frame length");
                    }
                }
                Err(e) => panic!("prefix {cut} of a good frame rejected: {e}"),
            }
            // Re-encoded (upper-case verb, single spaces, no blank lines),
            // it decodes to the same frame.
            let args: Vec<&[u8]> = frame.args().collect();
            let again = frame::encode_to_bytes(frame.verb().as_str(), &args, frame.payload());
            match decode(&again, max_payload) {
                Ok(Decoded::Frame { frame: f, consumed }) => {
                    assert_eq!(consumed, again.len());
                    assert_eq!(f.verb(), frame.verb());
                    assert_eq!(f.payload(), frame.payload());
                    assert!(f.args().eq(frame.args()));
                }
                other => panic!("re-encoded frame {again:?} decodes as {other:?}"),
            }
        }
        Ok(Decoded::Incomplete { skip, frame_len }) => {
            assert!(*skip <= buf.len());
            if let Some(len) = frame_len {
                assert!(skip + len > buf.len(), "incomplete but all there");
            }
            assert!(
                matches!(prefix, Ok(Decoded::Incomplete { .. })),
                "prefix {cut} of an incomplete frame: {prefix:?}"
            );
        }
        Err(_) => {
            assert!(
                !matches!(prefix, Ok(Decoded::Frame { .. })),
                "a prefix decodes to a frame, the whole is an error"
            );
        }
    }
}

// passwd_file
// ---------------------------------------------------------------------------

/// `PasswordFile::parse` on `data` as text: no panic, and a file that
/// parses writes out (`to_text`) to text that parses to the same file.
pub fn passwd_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = PasswordFile::parse(text) else {
        return;
    };
    let written = file.to_text();
    let again = PasswordFile::parse(&written).expect("to_text output parses");
    assert_eq!(again.len(), file.len());
    assert_eq!(again.to_text(), written);
}

// acl_file
// ---------------------------------------------------------------------------

/// `Acl::parse` on `data` as text: no panic; an error names a line within
/// the text; a file that parses answers every check without panicking.
pub fn acl_file(data: &[u8]) {
    use crate::acl::{Acl, Action};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Acl::parse(text) {
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.is_empty());
        }
        Ok(acl) => {
            let groups = [1, 2, 100, 4_294_967_295];
            for user in ["alice", "BOB", "carol", "x"] {
                for action in [
                    Action::Subscribe,
                    Action::Publish,
                    Action::Request,
                    Action::Watch,
                    Action::Send,
                ] {
                    let _ = acl.allows(user, action, &groups);
                    let _ = acl.allows(user, action, &[]);
                }
            }
        }
    }
}

// ws
// ---------------------------------------------------------------------------

/// The WebSocket layer (`crate::ws`) on arbitrary bytes. The first byte
/// picks the decoder's role and message limit and the chunking; the rest
/// is, at once, an HTTP request head for [`crate::ws::read_request`] and a
/// frame stream for a [`crate::ws::Decoder`].
///
/// Checks: no panic; `read_request` on every prefix of a complete head
/// says "need more" or refuses, never accepts something else, and `used`
/// is within the input; the decoder gives the same events and the same
/// error fed whole and fed in chunks, holds no more than its limit plus a
/// header and a control frame, and an error is sticky; every message it
/// decodes, masked again by a client, decodes to the same message.
pub fn ws(data: &[u8]) {
    use crate::ws::{Decoder, Event, OpCode, Role, client_frame, read_request};
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    // The request head.
    if let Ok(Some(head)) = read_request(rest) {
        assert!(head.used <= rest.len());
        for cut in [0, head.used / 2, head.used.saturating_sub(1)] {
            if cut < head.used {
                if let Ok(Some(other)) = read_request(&rest[..cut]) {
                    panic!("a prefix of {} bytes parsed as {other:?}", cut);
                }
            }
        }
    }
    // The frame stream.
    let role = if first & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let limit = [0, 1, 125, 126, 1000, 65_536][usize::from(first >> 1) % 6];
    let chunk = usize::from(first >> 4) + 1;
    let run = |chunked: bool| {
        let mut d = Decoder::new(role, limit);
        let mut events = Vec::new();
        let mut input = rest;
        let mut error = None;
        while !input.is_empty() && error.is_none() {
            let take = if chunked {
                chunk.min(input.len())
            } else {
                input.len()
            };
            let mut piece = &input[..take];
            input = &input[take..];
            loop {
                match d.decode(&mut piece) {
                    Ok(Some(e)) => events.push(e),
                    Ok(None) => break,
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
                assert!(d.held() <= limit + 14 + 125 + 8, "held {}", d.held());
            }
        }
        if let Some(e) = error {
            let mut more = &b"\x81\x00"[..];
            assert_eq!(d.decode(&mut more), Err(e), "an error is sticky");
        }
        (events, error)
    };
    let whole = run(false);
    let chunked = run(true);
    assert_eq!(whole, chunked, "fed whole and in chunks of {chunk}");
    if role == Role::Server {
        let mask = [first, first ^ 0x5a, 0x13, 0x37];
        for event in &whole.0 {
            let (op, payload) = match event {
                Event::Text(p) => (OpCode::Text, p),
                Event::Binary(p) => (OpCode::Binary, p),
                _ => continue,
            };
            let mut out = bytes::BytesMut::new();
            client_frame(&mut out, op, true, payload, mask);
            let mut d = Decoder::new(Role::Server, limit);
            let mut input = &out[..];
            assert_eq!(d.decode(&mut input), Ok(Some(event.clone())), "re-encoded");
        }
    }
}

// ws_transport
// ---------------------------------------------------------------------------

/// The server's WebSocket transport (`transport::ws`), fed arbitrary bytes
/// as its socket: the first byte picks the message limit and how the rest
/// is split into reads. Fed whole and in chunks, it must hand the protocol
/// the same bytes, end at the same point and write the same bytes;
/// protocol bytes only ever come after an accepted upgrade, and the layer
/// never holds more than its limits allow.
pub fn ws_transport(data: &[u8]) {
    use std::sync::Arc;

    use crate::buf::OutQueue;
    use crate::tls::ReadStep;
    use crate::transport::{NoTls, ReadBufs, WsConfig, WsLayer};

    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let limit = [0, 1, 125, 126, 1000, 65_536][usize::from(first & 7) % 6];
    let chunk = usize::from(first >> 3) + 1;
    let config = Arc::new(WsConfig {
        max_message: limit,
        page: Some(WsConfig::page_response(b"<html></html>")),
        terminator: Some(b'\n'),
    });
    let run = |chunked: bool| {
        let mut ws = WsLayer::new(Arc::clone(&config), NoTls);
        let mut bufs = ReadBufs::new(4096);
        let mut protocol = Vec::new();
        let mut ended = false;
        let mut input = rest;
        while !input.is_empty() && !ended {
            let take = if chunked {
                chunk.min(input.len())
            } else {
                input.len()
            };
            let mut piece = &input[..take];
            input = &input[take..];
            // A socket read takes at most the scratch buffer.
            while !piece.is_empty() && !ended {
                match ws.read_step(&mut piece, &mut bufs, usize::MAX) {
                    Ok(ReadStep::Data(n)) => {
                        assert!(ws.is_upgraded(), "protocol bytes before an upgrade");
                        protocol.extend_from_slice(&bufs.messages[..n]);
                    }
                    Ok(ReadStep::Eof) => ended = true,
                    Ok(ReadStep::Progress | ReadStep::WouldBlock) => {}
                    Err(e) => panic!("a read of bytes in memory failed: {e}"),
                }
            }
        }
        // The end due after data (a close behind a message) is reported next.
        let mut none: &[u8] = &[];
        if !ended
            && matches!(
                ws.read_step(&mut none, &mut bufs, usize::MAX),
                Ok(ReadStep::Eof)
            )
        {
            ended = true;
        }
        let mut out = OutQueue::default();
        let mut sink = Vec::new();
        let mut scratch = [0u8; 512];
        let pending = ws
            .write_to(&mut sink, &mut out, &mut scratch, true)
            .expect("writes to memory");
        assert!(!pending, "everything fits in memory");
        (protocol, ended, sink, ws.is_upgraded())
    };
    let whole = run(false);
    let chunked = run(true);
    assert_eq!(whole, chunked, "fed whole and in chunks of {chunk}");
    let (protocol, _, sink, upgraded) = whole;
    if !upgraded {
        assert!(protocol.is_empty());
    }
    if !sink.is_empty() {
        assert!(
            sink.starts_with(b"HTTP/1.1 ") || upgraded,
            "an HTTP answer first"
        );
    }
}

// peer_session
// ---------------------------------------------------------------------------

/// The receiving end of a direct peer connection (`peer::PeerSession`) fed
/// arbitrary bytes: the first byte picks the payload limit, how the rest is
/// split into reads, and which messages are refused. Fed whole (as much as
/// the session has room for) and in chunks, it must give the same events,
/// write the same bytes and end the same way; it never holds more input
/// than one header and its payload limit.
pub fn peer_session(data: &[u8]) {
    use std::time::{Duration, Instant};

    use crate::error::ErrorCode;
    use crate::peer::{PeerEvent, PeerSession, SessionLimits};

    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let limits = SessionLimits {
        max_payload: [0, 1, 16, 4096][usize::from(first & 3)],
        idle_timeout: Duration::from_secs(30),
    };
    let chunk = usize::from(first >> 3) + 1;
    let refuse_every = usize::from((first >> 2) & 1) + 2;
    let now = Instant::now();
    let run = |chunked: bool| {
        let mut s = PeerSession::new(limits, now);
        let mut events = Vec::new();
        let mut written = Vec::new();
        let mut input = rest;
        let mut messages = 0;
        let bound = crate::proto::frame::MAX_HEADER_LEN + limits.max_payload + 1;
        loop {
            // Everything owed is taken at once (a reader that keeps up).
            written.extend_from_slice(s.transmit());
            let n = s.transmit().len();
            s.advance_transmit(n);
            while let Some(e) = s.poll_event(now) {
                if let PeerEvent::Message { .. } = e {
                    messages += 1;
                    if messages % refuse_every == 0 {
                        s.answer(Err((ErrorCode::Busy, "full")));
                    } else {
                        s.answer(Ok(()));
                    }
                }
                events.push(e);
            }
            written.extend_from_slice(s.transmit());
            let n = s.transmit().len();
            s.advance_transmit(n);
            let room = s.room();
            assert!(room <= bound, "room {room} over one frame");
            if input.is_empty() || room == 0 {
                break;
            }
            let take = if chunked { chunk.min(room) } else { room };
            let take = take.min(input.len());
            s.handle_input(&input[..take]);
            input = &input[take..];
        }
        s.handle_eof();
        while let Some(e) = s.poll_event(now) {
            if let PeerEvent::Message { .. } = e {
                s.answer(Ok(()));
            }
            events.push(e);
        }
        written.extend_from_slice(s.transmit());
        (events, written, s.ending())
    };
    let whole = run(false);
    let chunked = run(true);
    assert_eq!(whole, chunked, "fed whole and in chunks of {chunk}");
}

// client_session
// ---------------------------------------------------------------------------

/// A few requests, then the server's bytes.
#[derive(Debug, Arbitrary)]
struct ClientInput {
    requests: Vec<ClientRequest>,
    /// Chunk sizes to split `bytes` by for the second session (0: the rest).
    splits: Vec<u8>,
    eof: bool,
    bytes: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum ClientRequest {
    User,
    Pass,
    Subscribe(u8),
    Unsubscribe(u8),
    Watch(u8),
    Unwatch(u8),
    Publish(u8),
    Send,
    Who(Option<u8>),
    Groups,
    Hello,
    Ping,
    Pong,
    Quit,
}

impl ClientRequest {
    fn request(&self) -> crate::client::Request {
        use crate::proto::OwnedCommand as R;
        let g = |g: &u8| vec![u32::from(*g % 8)];
        match self {
            Self::User => R::User("alice".into()),
            Self::Pass => R::Pass(b"secret".to_vec()),
            Self::Subscribe(x) => R::Subscribe(g(x)),
            Self::Unsubscribe(x) => R::Unsubscribe(g(x)),
            Self::Watch(x) => R::Watch(g(x)),
            Self::Unwatch(x) => R::Unwatch(g(x)),
            Self::Publish(x) => R::Publish {
                groups: g(x),
                payload: bytes::Bytes::from_static(b"hi"),
            },
            Self::Send => R::Send {
                to: "bob".into(),
                payload: bytes::Bytes::from_static(b"hi"),
            },
            Self::Who(x) => R::Who(x.map(|x| u32::from(x % 8))),
            Self::Groups => R::Groups,
            Self::Hello => R::Hello,
            Self::Ping => R::Ping,
            Self::Pong => R::Pong,
            Self::Quit => R::Quit,
        }
    }
}

/// What a session made of the input: its events, its output, its error.
fn run_client(input: &ClientInput, chunks: &[usize]) -> (Vec<String>, Vec<u8>, Option<String>) {
    let mut s = ClientSession::new();
    for r in input.requests.iter().take(32) {
        let _ = s.send_request(&r.request());
    }
    let sent = s.transmit().len();
    s.advance_transmit(sent);
    let mut events = Vec::new();
    let mut error = None;
    let mut rest = &input.bytes[..];
    let mut chunks = chunks.iter();
    while !rest.is_empty() {
        let n = match chunks.next() {
            Some(&n) if n > 0 => n.min(rest.len()),
            _ => rest.len(),
        };
        let result = s.handle_input(&rest[..n]);
        rest = &rest[n..];
        while let Some(e) = s.poll_event() {
            events.push(format!("{e:?}"));
        }
        if let Err(e) = result {
            // Sticky.
            assert!(s.handle_input(b"PING 0\n").is_err(), "error not sticky");
            error = Some(e.to_string());
            break;
        }
    }
    if error.is_none() && input.eof {
        if let Err(e) = s.handle_eof() {
            error = Some(e.to_string());
        }
    }
    let pending: Vec<_> = s.in_flight().collect();
    events.push(format!("in flight {pending:?}"));
    events.push(format!(
        "subs {:?} watches {:?}",
        s.subscriptions(),
        s.watches()
    ));
    (events, s.transmit().to_vec(), error)
}

/// The client's sans-IO session fed arbitrary server bytes after a few
/// requests: no panic, errors are sticky, and the bytes all at once give
/// the same events, output (PONGs) and error as the same bytes in chunks.
pub fn client_session(data: &[u8]) {
    let Ok(input) = ClientInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let whole = run_client(&input, &[]);
    let chunks: Vec<usize> = input.splits.iter().map(|&n| usize::from(n)).collect();
    if !chunks.is_empty() {
        let split = run_client(&input, &chunks);
        assert_eq!(whole, split, "split input changed the outcome");
    }
}

// broker
// ---------------------------------------------------------------------------

/// One thing that happens to the broker.
#[derive(Debug, Arbitrary)]
enum Op {
    /// A connection is accepted.
    Open,
    /// A well-formed command arrives on a connection, in chunks of `chunk`
    /// bytes (0: all at once).
    Command {
        conn: u8,
        cmd: Cmd,
        chunk: u8,
    },
    /// Raw bytes arrive.
    Raw {
        conn: u8,
        bytes: Vec<u8>,
    },
    /// The peer closes its side.
    Eof {
        conn: u8,
    },
    /// The connection fails (read or write error): dropped at once.
    Fail {
        conn: u8,
    },
    /// The TLS handshake completed, with a client certificate for `u<n>`
    /// (only on a connection that has seen no input yet).
    Secured {
        conn: u8,
        cn: Option<u8>,
    },
    /// Time passes.
    Advance {
        secs: u8,
        millis: u16,
    },
    /// A password verdict for a pending request.
    Verdict {
        which: u8,
        ok: bool,
    },
    /// A directory probe's verdict, for a pending probe.
    ProbeVerdict {
        which: u8,
        ok: bool,
    },
    /// The client reads up to `max * 16` bytes of its output (0: all).
    Drain {
        conn: u8,
        max: u8,
    },
    /// The embedding program publishes or sends as `@server`.
    ServerPublish {
        groups: Vec<u8>,
        payload: Vec<u8>,
    },
    ServerSend {
        user: u8,
        payload: Vec<u8>,
    },
    /// The embedding program closes a connection.
    Close {
        conn: u8,
    },
    /// Graceful shutdown begins.
    Shutdown,
}

/// A command, encoded as a valid frame.
#[derive(Debug, Arbitrary)]
enum Cmd {
    User(u8),
    Pass {
        password: u8,
        as_payload: bool,
    },
    Subscribe(Vec<u8>),
    Unsubscribe(Vec<u8>),
    Watch(Vec<u8>),
    Unwatch(Vec<u8>),
    Publish {
        groups: Vec<u8>,
        payload: Vec<u8>,
    },
    Send {
        user: u8,
        payload: Vec<u8>,
    },
    Who(Option<u8>),
    Groups,
    Hello,
    Ping,
    Pong,
    Quit,
    Directory(u8),
    /// Queue groups, requests, replies, surveys, ECHO (issue 14).
    Pattern(u8),
    Unknown {
        verb: u8,
        payload: Vec<u8>,
    },
}

/// Six users, spelled in two cases.
fn user(n: u8) -> String {
    let n = n % 12;
    if n < 6 {
        format!("u{n}")
    } else {
        format!("U{}", n - 6)
    }
}

/// Groups 0 (invalid) to 7; 1 and 2 are registered.
fn group_args(groups: &[u8]) -> String {
    let mut s = String::new();
    for g in groups.iter().take(70) {
        s.push(' ');
        s.push_str(&(g % 8).to_string());
    }
    s
}

impl Cmd {
    fn encode(&self) -> Vec<u8> {
        let with_payload = |head: String, payload: &[u8]| {
            let mut v = head.into_bytes();
            v.extend_from_slice(payload);
            v
        };
        let text = match self {
            Self::User(n) => format!("USER 0 {}\n", user(*n)),
            Self::Pass {
                password,
                as_payload: false,
            } => format!("PASS 0 pw{}\n", password % 4),
            Self::Pass {
                password,
                as_payload: true,
            } => format!("PASS 4\npw {}", password % 4),
            Self::Subscribe(g) => format!("SUBSCRIBE 0{}\n", group_args(g)),
            Self::Unsubscribe(g) => format!("UNSUBSCRIBE 0{}\n", group_args(g)),
            Self::Watch(g) => format!("WATCH 0{}\n", group_args(g)),
            Self::Unwatch(g) => format!("UNWATCH 0{}\n", group_args(g)),
            Self::Publish { groups, payload } => {
                let head = format!("PUBLISH {}{}\n", payload.len(), group_args(groups));
                return with_payload(head, payload);
            }
            Self::Send { user: u, payload } => {
                let head = format!("SEND {} {}\n", payload.len(), user(*u));
                return with_payload(head, payload);
            }
            Self::Who(None) => "WHO 0\n".to_owned(),
            Self::Who(Some(g)) => format!("WHO 0 {}\n", g % 8),
            Self::Groups => "GROUPS 0\n".to_owned(),
            Self::Hello => "HELLO 0\n".to_owned(),
            Self::Ping => "PING 0\n".to_owned(),
            Self::Pong => "PONG 0\n".to_owned(),
            Self::Quit => "QUIT 0\n".to_owned(),
            Self::Directory(n) => match n % 6 {
                0 => format!("BIND 0 127.0.0.1 {}\n", 4000 + u16::from(*n)),
                1 => format!("BIND 0 ::ffff:127.0.0.1 {}\n", 4000 + u16::from(*n)),
                2 => "BIND 0 10.1.2.3 5000\n".to_owned(),
                3 => "QUERY 0\n".to_owned(),
                4 => format!("QUERY 0 {}\n", user(*n)),
                _ => "LEAVE 0\n".to_owned(),
            },
            Self::Pattern(n) => match n % 8 {
                0 => format!("QSUBSCRIBE 0 q{} {}\n", n % 2, 1 + n % 3),
                1 => format!("QUNSUBSCRIBE 0 q{} {}\n", n % 2, 1 + n % 3),
                2 => format!("REQUEST 1 {} {}\nr", 1 + n % 3, 1 + u32::from(*n) * 40),
                3 => format!("REPLY 1 r{}\na", n % 16),
                4 => format!("SURVEY 1 {} {}\ns", 1 + n % 3, 1 + u32::from(*n) * 40),
                5 => "ECHO 0 off\n".to_owned(),
                6 => "ECHO 0 on\n".to_owned(),
                _ => format!("REQUEST 0 {}\n", 1 + n % 3),
            },
            Self::Unknown { verb, payload } => {
                let head = format!("X{} {}\n", verb % 4, payload.len());
                return with_payload(head, payload);
            }
        };
        text.into_bytes()
    }
}

/// One connection as its client sees it: bytes on their way to the
/// server, and whether the client has closed its side.
#[derive(Debug, Default)]
struct Peer {
    id: Option<ConnId>,
    to_server: Vec<u8>,
    eof: bool,
    eof_told: bool,
    touched: bool,
}

/// The broker and its table, driven as the reactor drives them.
struct BrokerRig {
    broker: Broker,
    links: Sessions<()>,
    peers: Vec<Peer>,
    auth: Vec<AuthRequest>,
    probes: Vec<crate::broker::ProbeRequest>,
    start: Instant,
    now: Instant,
    scratch: Vec<ConnId>,
}

impl BrokerRig {
    fn peer_index(&self, n: u8) -> Option<usize> {
        (!self.peers.is_empty()).then(|| usize::from(n) % self.peers.len())
    }

    /// Reads what the socket holds while the table wants it read, a read
    /// window at a time; then the end of stream, once read up to it.
    fn pump(&mut self, i: usize) {
        let Some(p) = self.peers.get_mut(i) else {
            return;
        };
        let Some(c) = p.id else { return };
        while !p.to_server.is_empty() && self.links.wants_read(c) {
            let n = self.links.read_window(c).min(p.to_server.len());
            let bytes: Vec<u8> = p.to_server.drain(..n).collect();
            self.broker
                .handle_input(&mut self.links, c, &bytes, self.now);
        }
        if p.eof && !p.eof_told && p.to_server.is_empty() && self.links.wants_read(c) {
            p.eof_told = true;
            self.broker.handle_eof(&mut self.links, c, self.now);
        }
    }

    /// The client reads up to `max` bytes (0: all); a closing connection
    /// whose output is out is shut; finished connections are dropped;
    /// stalled input is resumed.
    fn drain(&mut self, i: usize, max: usize) {
        let Some(c) = self.peers.get(i).and_then(|p| p.id) else {
            return;
        };
        if let Some(out) = self.links.output(c) {
            let mut left = if max == 0 { usize::MAX } else { max };
            while left > 0 && !out.is_empty() {
                let mut slices = [IoSlice::new(&[]); 16];
                let n = out.fill_slices(&mut slices);
                let len: usize = slices[..n].iter().map(|s| s.len()).sum();
                let take = len.min(left);
                out.consume(take);
                left -= take;
            }
        }
        let empty = self.links.output(c).is_none_or(|o| o.is_empty());
        if self.links.is_closing(c) && empty {
            self.links.write_done(c, self.now);
        }
        if self.links.finished(c, self.now) {
            self.remove(i, CloseReason::Io);
            return;
        }
        self.broker.resume(&mut self.links, c, self.now);
        self.pump(i);
    }

    fn remove(&mut self, i: usize, reason: CloseReason) {
        if let Some(c) = self.peers.get(i).and_then(|p| p.id) {
            self.broker.remove(&mut self.links, c, reason);
            self.peers.swap_remove(i);
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        // A loop turn: connections that used up their work budget go on,
        // then the deadlines (and a spread fan-out's next slice) run.
        self.links.take_yielded(&mut self.scratch);
        for c in std::mem::take(&mut self.scratch) {
            self.broker.resume(&mut self.links, c, self.now);
        }
        self.broker.handle_timeout(&mut self.links, self.now);
        self.links.handle_timeout(self.now);
        self.links.take_expired(&mut self.scratch);
        for c in std::mem::take(&mut self.scratch) {
            if let Some(i) = self.peers.iter().position(|p| p.id == Some(c)) {
                self.remove(i, CloseReason::Io);
            } else {
                self.broker.remove(&mut self.links, c, CloseReason::Io);
            }
        }
    }

    fn step(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Open => {
                if self.peers.len() < 12 {
                    let peer = SocketAddr::from(([127, 0, 0, 1], 5000));
                    match self.broker.accept(&mut self.links, (), peer, now) {
                        Admission::Open(id) | Admission::Refused(id) => self.peers.push(Peer {
                            id: Some(id),
                            ..Peer::default()
                        }),
                        Admission::Dropped(..) => {}
                    }
                }
            }
            Op::Command { conn, cmd, chunk } => {
                let Some(i) = self.peer_index(conn) else {
                    return;
                };
                let bytes = cmd.encode();
                let chunk = if chunk == 0 {
                    bytes.len()
                } else {
                    usize::from(chunk)
                };
                for piece in bytes.chunks(chunk.max(1)) {
                    self.send(i, piece);
                }
            }
            Op::Raw { conn, bytes } => {
                if let Some(i) = self.peer_index(conn) {
                    self.send(i, &bytes);
                }
            }
            Op::Eof { conn } => {
                if let Some(i) = self.peer_index(conn) {
                    self.peers[i].eof = true;
                    self.pump(i);
                }
            }
            Op::Fail { conn } => {
                if let Some(i) = self.peer_index(conn) {
                    self.remove(i, CloseReason::Io);
                }
            }
            Op::Secured { conn, cn } => {
                let Some(i) = self.peer_index(conn) else {
                    return;
                };
                let p = &mut self.peers[i];
                if p.touched {
                    return;
                }
                p.touched = true;
                let Some(c) = p.id else { return };
                let subject = cn.map(|n| PeerIdentity {
                    o: Some("Acme".into()),
                    cn: Some(user(n)),
                    ..PeerIdentity::default()
                });
                self.broker.handle_secured(&mut self.links, c, subject, now);
            }
            Op::Advance { secs, millis } => {
                let d = Duration::from_secs(u64::from(secs % 40))
                    + Duration::from_millis(u64::from(millis % 1000));
                self.advance(d);
            }
            Op::Verdict { which, ok } => {
                if !self.auth.is_empty() {
                    let r = self.auth.remove(usize::from(which) % self.auth.len());
                    self.broker
                        .handle_auth_result(&mut self.links, r.conn, r.ticket, ok, now);
                    if let Some(i) = self.peers.iter().position(|p| p.id == Some(r.conn)) {
                        self.pump(i);
                    }
                }
            }
            Op::ProbeVerdict { which, ok } => {
                if !self.probes.is_empty() {
                    let r = self.probes.remove(usize::from(which) % self.probes.len());
                    self.broker
                        .handle_probe_result(&mut self.links, r.id, ok, now, &mut ());
                    for i in 0..self.peers.len() {
                        self.pump(i);
                    }
                }
            }
            Op::Drain { conn, max } => {
                if let Some(i) = self.peer_index(conn) {
                    self.drain(i, usize::from(max) * 16);
                }
            }
            Op::ServerPublish { groups, payload } => {
                let groups: Vec<u32> = groups.iter().take(70).map(|g| u32::from(g % 8)).collect();
                let _ = self.broker.publish(
                    &mut self.links,
                    crate::broker::SERVER_USER,
                    &groups,
                    &payload,
                );
            }
            Op::ServerSend { user: u, payload } => {
                let _ = self.broker.send(
                    &mut self.links,
                    crate::broker::SERVER_USER,
                    &user(u),
                    &payload,
                );
            }
            Op::Close { conn } => {
                if let Some(c) = self.peer_index(conn).and_then(|i| self.peers[i].id) {
                    self.broker.close(&mut self.links, c, now);
                }
            }
            Op::Shutdown => self.broker.shutdown(&mut self.links, now),
        }
    }

    fn send(&mut self, i: usize, bytes: &[u8]) {
        let p = &mut self.peers[i];
        if p.eof {
            return;
        }
        p.touched = true;
        p.to_server.extend_from_slice(bytes);
        self.pump(i);
    }

    /// What the reactor does after every turn: password checks are taken,
    /// events read, dirty connections looked at.
    fn after_step(&mut self) {
        while let Some(r) = self.broker.poll_auth_request() {
            self.auth.push(r);
        }
        self.broker.take_probe_requests(&mut self.probes);
        while self.broker.poll_event().is_some() {}
        self.links.take_dirty(&mut self.scratch);
        self.scratch.clear();
        for i in (0..self.peers.len()).rev() {
            if let Some(c) = self.peers[i].id {
                if self.links.finished(c, self.now) {
                    self.remove(i, CloseReason::Io);
                }
            }
        }
        self.broker.assert_consistent(&self.links);
        assert_eq!(self.links.len(), self.peers.len(), "table and peers differ");
        if let Some(t) = self.broker.poll_timeout(&self.links) {
            // A deadline is never far in the past (it would spin the loop).
            assert!(t + Duration::from_secs(60) >= self.start, "deadline {t:?}");
        }
    }
}

/// The broker driven by a sequence of [`Op`]s from several sessions, as the
/// reactor drives it; its cross-indexes are checked after every step, and a
/// shutdown at the end must empty the table within the drain and linger
/// times.
pub fn broker(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((auth, open_groups, max_conns, pending)) = <(u8, bool, u8, u8)>::arbitrary(&mut u)
    else {
        return;
    };
    // `--max-pending` alone can put the read pause (256 KiB) above it (the
    // table then pauses input at half of `max_pending`).
    let (max_pending, read_pause) = [
        (512, 256),
        (4096, 1024),
        (64 << 10, 16 << 10),
        (8 << 20, 256 << 10),
        (512, 256 << 10),
        (4096, 256 << 10),
    ][usize::from(pending % 6)];
    let config = BrokerConfig {
        auth: [AuthMode::None, AuthMode::Password, AuthMode::Cert][usize::from(auth % 3)],
        open_groups,
        max_connections: 1 + usize::from(max_conns % 8),
        max_payload: MIN_MAX_PAYLOAD,
        max_pending,
        read_pause,
        ..BrokerConfig::default()
    };
    let drain = config.drain_timeout + config.linger;
    if std::env::var_os("SWITCHBOARD_FUZZ_TRACE").is_some() {
        eprintln!("{config:?}");
    }
    let mut broker = Broker::new(config);
    // Small work budgets make fan-outs spread over turns (and input yield)
    // with a handful of sessions.
    if let Some(budget) = [None, Some(1), Some(2), Some(7)][usize::from(max_conns >> 3) % 4] {
        broker.set_work_budget(budget);
    }
    broker.register_group(1, "general");
    broker.register_group(2, "random");
    let links = broker.new_table();
    let start = Instant::now();
    let mut rig = BrokerRig {
        broker,
        links,
        peers: Vec::new(),
        auth: Vec::new(),
        probes: Vec::new(),
        start,
        now: start,
        scratch: Vec::new(),
    };
    let mut steps = 0;
    let trace = std::env::var_os("SWITCHBOARD_FUZZ_TRACE").is_some();
    while let Ok(op) = Op::arbitrary(&mut u) {
        if trace {
            eprintln!("{:?} {op:?}", rig.now - rig.start);
        }
        rig.step(op);
        rig.after_step();
        steps += 1;
        if steps >= 256 || u.is_empty() {
            break;
        }
    }
    // Shutdown: every client reads what it is owed; the table empties.
    rig.broker.shutdown(&mut rig.links, rig.now);
    rig.after_step();
    for _ in 0..3 {
        for i in (0..rig.peers.len()).rev() {
            rig.drain(i, 0);
        }
        rig.after_step();
        rig.advance(drain);
        rig.after_step();
    }
    assert_eq!(rig.links.len(), 0, "connections left after shutdown");
}

// cluster_notes
// ---------------------------------------------------------------------------

/// What another member may send, or what happens locally meanwhile.
#[derive(Debug, Arbitrary)]
enum NoteOp {
    /// Raw bytes as a batch from the engine (`decode_batch`, then handled).
    Raw(Vec<u8>),
    /// A note built from arbitrary fields, from member `from` (0..3).
    Note {
        from: u8,
        kind: u8,
        user: u8,
        group: u8,
        n: u8,
        payload: Vec<u8>,
    },
    /// A local session sends protocol bytes (commands that reach members).
    Local { session: u8, command: u8 },
    /// Time passes (ms).
    Advance(u16),
    /// The engine goes down or comes up.
    Engine(bool),
}

/// A broker that is one member of a cluster, with four logged-in sessions,
/// fed arbitrary notes (raw batches and well-formed notes with arbitrary
/// fields) between local commands and time: no panic, its queues stay
/// consistent, and every session's output stays well-formed frames.
pub fn cluster_notes(data: &[u8]) {
    use crate::broker::{Note, decode_batch};
    let mut u = Unstructured::new(data);
    let Ok(node) = bool::arbitrary(&mut u) else {
        return;
    };
    let config = BrokerConfig {
        open_groups: true,
        max_payload: MIN_MAX_PAYLOAD,
        ..BrokerConfig::default()
    };
    let mut broker = Broker::new(config);
    broker.register_group(1, "general");
    broker.set_work_budget(7);
    let expiry = node.then_some(Duration::from_secs(15));
    broker.join_cluster("me", expiry);
    let mut links: Sessions<()> = broker.new_table();
    let mut now = Instant::now();
    if node {
        broker.set_cluster_up(&links, true, now);
    }
    let peer = SocketAddr::from(([127, 0, 0, 1], 4000));
    let mut sessions = Vec::new();
    for (i, setup) in [
        "USER 0 alice\nSUBSCRIBE 0 1 2\nWATCH 0 1 2\n",
        "USER 0 bob\nQSUBSCRIBE 0 q 1\n",
        "USER 0 Alice\nSUBSCRIBE 0 2\n",
        "USER 0 carol\n",
    ]
    .iter()
    .enumerate()
    {
        if let Admission::Open(c) = broker.accept(&mut links, (), peer, now) {
            broker.handle_input(&mut links, c, setup.as_bytes(), now);
            sessions.push(c);
        }
        let _ = i;
    }
    let members = ["a", "b", "me"];
    let users = ["alice", "Bob", "dave", "x"];
    let commands: [&[u8]; 8] = [
        b"PUBLISH 2 1 2\nhi",
        b"SEND 1 dave\nx",
        b"WHO 0\nWHO 0 1\nGROUPS 0\n",
        b"REQUEST 1 1 50\n?",
        b"SURVEY 1 2 50\n?",
        b"STATS 0\nQUERY 0\n",
        b"UNSUBSCRIBE 0 1\nQUNSUBSCRIBE 0 q 1\n",
        b"QUIT 0\n",
    ];
    let mut steps = 0;
    while let Ok(op) = NoteOp::arbitrary(&mut u) {
        match op {
            NoteOp::Raw(bytes) => {
                if let Ok((from, notes)) = decode_batch(&bytes::Bytes::from(bytes)) {
                    broker.handle_notes(&mut links, &from, notes, now);
                }
            }
            NoteOp::Note {
                from,
                kind,
                user,
                group,
                n,
                payload,
            } => {
                let from = members[usize::from(from % 3)];
                let user: std::sync::Arc<str> = users[usize::from(user % 4)].into();
                let g = u32::from(group % 4);
                let payload = bytes::Bytes::from(payload);
                let note = match kind % 14 {
                    0 => Note::Publish {
                        frame: frame::published("x", &[g.max(1)], &payload),
                        queues: vec![(1, "q".into(), "me".into())].into(),
                    },
                    1 => Note::Publish {
                        frame: payload.clone(),
                        queues: Vec::new().into(),
                    },
                    2 => Note::Message {
                        to: user,
                        frame: payload.clone(),
                    },
                    3 => Note::Online(user),
                    4 => Note::Offline(user),
                    5 => Note::Joined(user, g),
                    6 => Note::Parted(user, g),
                    7 => Note::QueueJoined(g, "q".into()),
                    8 => Note::QueueParted(g, "q".into()),
                    9 => Note::Request {
                        to: "me".into(),
                        n: u64::from(n),
                        sender: user,
                        group: g,
                        ms: u32::from(n) * 10,
                        survey: n % 2 == 0,
                        payload: payload.clone(),
                    },
                    10 => Note::Reply {
                        to: "me".into(),
                        n: u64::from(n % 8),
                        survey: n % 2 == 0,
                        frame: payload.clone(),
                    },
                    11 => Note::State(payload.clone()),
                    12 => [
                        Note::Hello,
                        Note::Beat,
                        Note::Bye,
                        Note::StatsQuery(u64::from(n)),
                    ][usize::from(n % 4)]
                    .clone(),
                    _ => Note::Stats {
                        to: "me".into(),
                        n: u64::from(n % 4),
                        figures: payload.clone(),
                    },
                };
                broker.handle_notes(&mut links, from, vec![note], now);
            }
            NoteOp::Local { session, command } => {
                if let Some(&c) = sessions.get(usize::from(session) % sessions.len().max(1)) {
                    let cmd = commands[usize::from(command % 8)];
                    broker.handle_input(&mut links, c, cmd, now);
                }
            }
            NoteOp::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms));
                broker.handle_timeout(&mut links, now);
                links.handle_timeout(now);
            }
            NoteOp::Engine(up) => broker.set_cluster_up(&links, up, now),
        }
        while broker.has_pending_notes() {
            broker.process_notes(&mut links, now);
        }
        let _ = broker.take_notes();
        broker.assert_consistent(&links);
        // Every session's output is whole frames.
        for &c in &sessions {
            let Some(out) = links.output(c) else { continue };
            let mut all = Vec::new();
            while !out.is_empty() {
                let mut slices = [IoSlice::new(&[]); 64];
                let n = out.fill_slices(&mut slices);
                let mut len = 0;
                for s in &slices[..n] {
                    all.extend_from_slice(s);
                    len += s.len();
                }
                out.consume(len);
            }
            let mut at = 0;
            while at < all.len() {
                match decode(&all[at..], usize::MAX) {
                    Ok(Decoded::Frame { consumed, .. }) => at += consumed,
                    other => panic!("session output is not whole frames: {other:?}"),
                }
            }
        }
        steps += 1;
        if steps >= 128 || u.is_empty() {
            break;
        }
    }
}

// tls_server
// ---------------------------------------------------------------------------

/// A CA, its roots, a server certificate for `localhost`, the server's
/// settings and client settings for TLS 1.3 and 1.2; made once.
struct TlsFixture {
    server: Arc<rustls::ServerConfig>,
    clients: [Arc<rustls::ClientConfig>; 2],
}

fn tls_fixture() -> &'static TlsFixture {
    static FIXTURE: OnceLock<TlsFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "fuzz CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("names");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).expect("root");
        let roots = Arc::new(roots);
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into();
        let server = server_config(
            vec![cert.der().clone()],
            key,
            &ClientAuth::Optional(Arc::clone(&roots)),
        )
        .expect("server settings");
        let client = |v: &'static rustls::SupportedProtocolVersion| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[v])
                    .expect("version")
                    .with_root_certificates(Arc::clone(&roots))
                    .with_no_client_auth(),
            )
        };
        TlsFixture {
            server,
            clients: [
                client(&rustls::version::TLS13),
                client(&rustls::version::TLS12),
            ],
        }
    })
}

/// Bytes on their way to one end, read at most `chunk` at a time; empty
/// reads would block until `closed`.
#[derive(Default)]
struct Wire {
    bytes: Vec<u8>,
    chunk: usize,
    closed: bool,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.bytes.is_empty() {
            return if self.closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.bytes.len()).min(self.chunk.max(1));
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes.drain(..n);
        Ok(n)
    }
}

/// What happens on the wire once the handshake is done.
#[derive(Debug, Arbitrary)]
enum TlsOp {
    /// The client sends application data (real records).
    ClientData(Vec<u8>),
    /// The client sends `close_notify`.
    ClientClose,
    /// Raw bytes join the wire.
    Raw(Vec<u8>),
    /// A byte already on the wire is flipped.
    Flip { at: u16, xor: u8 },
    /// Bytes at the end of the wire are lost.
    Truncate(u16),
    /// The server reads, `chunk` bytes at a time at most.
    ServerReads { chunk: u16 },
    /// The server writes plaintext to the client.
    ServerWrites(Vec<u8>),
    /// The TCP stream ends.
    Eof,
}

/// Reads until `WouldBlock`, the end or an error; returns the plaintext,
/// and whether the session is finished.
fn read_all(tls: &mut TlsSession, wire: &mut Wire, scratch: &mut [u8], got: &mut Vec<u8>) -> bool {
    let mut plain = Vec::new();
    for _ in 0..100_000 {
        let step = tls.read_step(wire, scratch, &mut plain);
        let _ = tls.take_established();
        match step {
            Ok(ReadStep::Data(n)) => {
                assert_eq!(n, plain.len());
                got.extend_from_slice(&plain);
            }
            Ok(ReadStep::Progress) => assert!(plain.is_empty()),
            Ok(ReadStep::WouldBlock) => return false,
            Ok(ReadStep::Eof) | Err(_) => return true,
        }
    }
    panic!("read_step never stopped");
}

/// A `TlsSession` server end fed arbitrary records: with the first byte
/// even, raw bytes from the start (the ClientHello and on); odd, after a
/// real in-memory handshake with a client end (TLS 1.3 or 1.2), a sequence
/// of [`TlsOp`]s mixing the client's real records with raw and corrupted
/// bytes. No panic; untampered data arrives intact.
pub fn tls_server(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = tls_fixture();
    let mut server = TlsSession::new(&f.server).expect("server end");
    let mut scratch = vec![0; 1 + usize::from(mode) * 64];
    let mut write_scratch = vec![0; MIN_WRITE_SCRATCH];
    let mut got = Vec::new();
    if mode % 2 == 0 {
        let mut wire = Wire {
            bytes: rest.to_vec(),
            chunk: 1 + usize::from(mode) * 8,
            closed: true,
        };
        read_all(&mut server, &mut wire, &mut scratch, &mut got);
        let mut sink = Vec::new();
        let _ = server.write_to(&mut sink, &mut &b""[..], &mut write_scratch);
        return;
    }
    let config = Arc::clone(&f.clients[usize::from(mode / 2) % 2]);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut client = TlsSession::new_client(config, name).expect("client end");
    client.start();
    let mut c2s = Wire {
        chunk: usize::MAX,
        ..Wire::default()
    };
    let mut s2c = Wire {
        chunk: usize::MAX,
        ..Wire::default()
    };
    let mut client_got = Vec::new();
    for _ in 0..50 {
        let _ = client.write_to(&mut c2s.bytes, &mut &b""[..], &mut write_scratch);
        assert!(!read_all(&mut server, &mut c2s, &mut scratch, &mut got));
        let _ = server.write_to(&mut s2c.bytes, &mut &b""[..], &mut write_scratch);
        assert!(!read_all(
            &mut client,
            &mut s2c,
            &mut scratch,
            &mut client_got
        ));
        if !client.is_handshaking() && !server.is_handshaking() && c2s.bytes.is_empty() {
            break;
        }
    }
    assert!(!server.is_handshaking(), "handshake did not complete");
    let mut u = Unstructured::new(rest);
    let mut sent = Vec::new();
    let mut tampered = false;
    let mut client_closed = false;
    let mut done = false;
    let mut steps = 0;
    let trace = std::env::var_os("SWITCHBOARD_FUZZ_TRACE").is_some();
    while let Ok(op) = TlsOp::arbitrary(&mut u) {
        if trace {
            eprintln!("{op:?}");
        }
        steps += 1;
        if done || steps > 64 {
            break;
        }
        match op {
            TlsOp::ClientData(d) => {
                let mut out = &d[..];
                let _ = client.write_to(&mut c2s.bytes, &mut out, &mut write_scratch);
                if !client_closed {
                    // After close_notify, the server reads no more.
                    sent.extend_from_slice(&d[..d.len() - out.len()]);
                }
            }
            TlsOp::ClientClose => {
                client.send_close_notify();
                client_closed = true;
                let _ = client.write_to(&mut c2s.bytes, &mut &b""[..], &mut write_scratch);
            }
            TlsOp::Raw(d) => {
                tampered |= !d.is_empty();
                c2s.bytes.extend_from_slice(&d);
            }
            TlsOp::Flip { at, xor } => {
                if let Some(b) = c2s.bytes.get_mut(usize::from(at)) {
                    *b ^= xor;
                    tampered |= xor != 0;
                }
            }
            TlsOp::Truncate(n) => {
                let keep = c2s.bytes.len().saturating_sub(usize::from(n));
                tampered |= keep < c2s.bytes.len();
                c2s.bytes.truncate(keep);
            }
            TlsOp::ServerReads { chunk } => {
                c2s.chunk = 1 + usize::from(chunk);
                done = read_all(&mut server, &mut c2s, &mut scratch, &mut got);
            }
            TlsOp::ServerWrites(d) => {
                let _ = server.write_to(&mut s2c.bytes, &mut &d[..], &mut write_scratch);
            }
            TlsOp::Eof => c2s.closed = true,
        }
    }
    if !done {
        c2s.chunk = usize::MAX;
        read_all(&mut server, &mut c2s, &mut scratch, &mut got);
    }
    let _ = server.write_to(&mut s2c.bytes, &mut &b""[..], &mut write_scratch);
    if !tampered {
        assert_eq!(got, sent, "untampered data changed");
    } else {
        assert!(
            got.len() <= sent.len() + rest.len(),
            "plaintext from nowhere"
        );
    }
}

// resp
// ---------------------------------------------------------------------------

/// The RESP2 decoder (`redis::resp::decode`) on arbitrary bytes, the first
/// byte picking a cut point, and a subscriber link fed the same bytes whole
/// and in pieces (the second byte picks their size): it never panics,
/// never consumes more than it was given, a prefix of a value is
/// `Incomplete` (with `needed` between the prefix and the value's length),
/// a decoded value re-encodes to bytes that decode to the same value, the
/// fast path for `message` pushes reads what the decoder reads, and the
/// link gives the same events whatever the pieces, and the same error (or,
/// in pieces, none yet: see below).
pub fn resp(data: &[u8]) {
    use crate::redis::link::{Link, Role};
    use crate::redis::resp::{Decoded, decode, encode_value};

    let (cut, step, buf) = match data {
        [a, b, rest @ ..] => (*a, usize::from(*b % 16) + 1, rest),
        _ => return,
    };
    let full = decode(buf);
    let cut = usize::from(cut) % (buf.len() + 1);
    let prefix = decode(&buf[..cut]);
    match &full {
        Ok(Decoded::Value { value, consumed }) => {
            assert!(*consumed <= buf.len() && *consumed > 0);
            if cut < *consumed {
                match prefix {
                    Ok(Decoded::Incomplete { needed }) => {
                        assert!(needed > cut && needed <= *consumed, "needed {needed}");
                    }
                    other => panic!("a prefix of a value: {other:?}"),
                }
            }
            let mut again = Vec::new();
            encode_value(value, &mut again);
            assert_eq!(
                decode(&again),
                Ok(Decoded::Value {
                    value: value.clone(),
                    consumed: again.len()
                })
            );
        }
        Ok(Decoded::Incomplete { needed }) => {
            assert!(*needed > buf.len());
            assert!(
                matches!(prefix, Ok(Decoded::Incomplete { .. })),
                "{prefix:?}"
            );
        }
        Err(e) => assert!(
            matches!(prefix, Ok(Decoded::Incomplete { .. })) || prefix == Err(*e),
            "{prefix:?} / {e:?}"
        ),
    }

    // The subscriber's fast path reads what the decoder reads.
    if let Some((channel, payload, consumed)) = crate::redis::resp::message(buf) {
        match &full {
            Ok(Decoded::Value {
                value: crate::redis::resp::Value::Array(items),
                consumed: n,
            }) => {
                assert_eq!(*n, consumed);
                assert_eq!(items.len(), 3);
                assert_eq!(items[1].as_bytes(), Some(channel));
                assert_eq!(items[2].as_bytes(), Some(payload));
                assert!(matches!(items[2], crate::redis::resp::Value::Bulk(_)));
            }
            other => panic!("the fast path read a message, the decoder {other:?}"),
        }
    }

    let now = Instant::now();
    let run = |step: usize| {
        let mut link = Link::new(Role::Subscriber, now);
        let mut events = Vec::new();
        let mut tail: Vec<u8> = Vec::new();
        for chunk in buf.chunks(step) {
            tail.extend_from_slice(chunk);
            match link.handle_input(&tail, &mut events) {
                Ok(used) => {
                    assert!(used <= tail.len());
                    tail.drain(..used);
                }
                Err(e) => return (events, Some(e)),
            }
        }
        (events, None)
    };
    let (whole, whole_error) = run(buf.len().max(1));
    let (split, split_error) = run(step);
    assert_eq!(whole, split);
    // An error can go unseen in pieces, and only there: the link does not
    // decode again before the least length a valid value could have (a
    // long array's remaining elements, 3 bytes each), which bad input may
    // never reach. Valid input always does.
    assert!(
        split_error == whole_error || split_error.is_none(),
        "{whole_error:?} / {split_error:?}"
    );
}
