//! The WebSocket layer's tests: RFC 6455's own examples, every error with
//! its close code, every split of the input, and tungstenite (a client and
//! a server no one here wrote) over in-memory pipes.

use bytes::BytesMut;

use super::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Decodes `input` fed in the given pieces; the events, and the error that
/// stopped it if any.
fn decode_pieces<'a>(
    d: &mut Decoder,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Event>, Option<ProtocolError>) {
    let mut events = Vec::new();
    for piece in pieces {
        let mut input = piece;
        loop {
            match d.decode(&mut input) {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => {
                    assert!(input.is_empty(), "Ok(None) leaves no input");
                    break;
                }
                Err(e) => return (events, Some(e)),
            }
        }
    }
    (events, None)
}

fn decode(role: Role, limit: usize, input: &[u8]) -> (Vec<Event>, Option<ProtocolError>) {
    decode_pieces(&mut Decoder::new(role, limit), [input])
}

/// Decodes at once, byte by byte, and cut at every position; all must
/// agree. Returns the common result.
#[track_caller]
fn decode_every_split(
    role: Role,
    limit: usize,
    input: &[u8],
) -> (Vec<Event>, Option<ProtocolError>) {
    let whole = decode(role, limit, input);
    let bytewise = decode_pieces(&mut Decoder::new(role, limit), input.chunks(1));
    assert_eq!(bytewise, whole, "byte by byte");
    for i in 0..=input.len() {
        let (a, b) = input.split_at(i);
        let split = decode_pieces(&mut Decoder::new(role, limit), [a, b]);
        assert_eq!(split, whole, "split at {i}");
    }
    whole
}

fn client(op: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    client_frame(&mut out, op, fin, payload, MASK);
    out.to_vec()
}

fn server(op: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    server_frame(&mut out, op, fin, payload);
    out.to_vec()
}

#[track_caller]
fn expect_error(input: &[u8], limit: usize, want: ProtocolError, code: u16) {
    let (_, err) = decode_every_split(Role::Server, limit, input);
    assert_eq!(err, Some(want));
    assert_eq!(want.close_code(), code);
}

// --- The handshake ---

const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn request(extra: &str) -> String {
    format!(
        "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {RFC_KEY}\r\nOrigin: http://example.com\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

#[track_caller]
fn upgrade(req: &str) -> Upgrade {
    match read_request(req.as_bytes()) {
        Ok(Some(Head {
            used,
            request: Request::Upgrade(u),
        })) => {
            assert_eq!(used, req.len());
            u
        }
        other => panic!("not an upgrade: {other:?}"),
    }
}

#[track_caller]
fn refused(req: &str) -> Refusal {
    match read_request(req.as_bytes()) {
        Err(r) => r,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn accept_key_of_the_rfc_example() {
    assert_eq!(accept_key(RFC_KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn upgrade_selects_switchboard_v1_and_writes_101() {
    let u = upgrade(&request("Sec-WebSocket-Protocol: chat, switchboard.v1\r\n"));
    assert_eq!(u.path, "/chat");
    assert!(u.subprotocol);
    assert_eq!(
        String::from_utf8(u.response()).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
         Sec-WebSocket-Protocol: switchboard.v1\r\n\r\n"
    );
    // Offered on a second header line, too.
    let u = upgrade(&request(
        "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: switchboard.v1\r\n",
    ));
    assert!(u.subprotocol);
}

#[test]
fn no_subprotocol_offered_is_accepted_without_one() {
    let u = upgrade(&request(""));
    assert!(!u.subprotocol);
    let resp = String::from_utf8(u.response()).unwrap();
    assert!(!resp.contains("Sec-WebSocket-Protocol"), "{resp}");
}

#[test]
fn only_other_subprotocols_are_refused_with_400() {
    let r = refused(&request("Sec-WebSocket-Protocol: chat, superchat\r\n"));
    assert_eq!(r, Refusal::Subprotocol);
    assert_eq!(r.status(), 400);
    // Subprotocol names are compared exactly.
    assert_eq!(
        refused(&request("Sec-WebSocket-Protocol: Switchboard.V1\r\n")),
        Refusal::Subprotocol
    );
    let resp = String::from_utf8(r.response()).unwrap();
    assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{resp}");
    assert!(
        resp.ends_with("\r\n\r\nsubprotocol switchboard.v1 not offered\n"),
        "{resp}"
    );
    assert!(resp.contains("Content-Length: 39\r\n"), "{resp}");
}

#[test]
fn header_names_and_tokens_ignore_case_and_are_lists() {
    let req = "GET / HTTP/1.1\r\nhost: h\r\nUPGRADE: WebSocket\r\n\
               connection: keep-alive, UPGRADE\r\nsec-websocket-key:  dGhlIHNhbXBsZSBub25jZQ== \r\n\
               SEC-WEBSOCKET-VERSION: 13\r\n\r\n";
    let u = upgrade(req);
    assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(u.path, "/");
}

#[test]
fn partial_head_needs_more_at_every_prefix_and_reports_what_it_used() {
    let head = request("Sec-WebSocket-Protocol: switchboard.v1\r\n");
    let mut input = head.clone().into_bytes();
    // The client's first frame right behind the head.
    input.extend_from_slice(&client(OpCode::Text, true, b"hi"));
    for i in 0..head.len() {
        assert_eq!(read_request(&input[..i]), Ok(None), "prefix {i}");
    }
    let Ok(Some(h)) = read_request(&input) else {
        panic!("complete")
    };
    assert_eq!(h.used, head.len());
    let (events, err) = decode(Role::Server, 100, &input[h.used..]);
    assert_eq!((events, err), (vec![Event::Text(b"hi".to_vec())], None));
}

#[test]
fn head_over_8_kib_is_refused() {
    let mut req = String::from("GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ");
    while req.len() < MAX_HEAD - 1 {
        req.push('a');
    }
    assert_eq!(read_request(req.as_bytes()), Ok(None));
    req.push('a');
    assert_eq!(read_request(req.as_bytes()), Err(Refusal::HeadTooLarge));
    // Complete, but longer than the bound.
    req.push_str("\r\n\r\n");
    assert_eq!(read_request(req.as_bytes()), Err(Refusal::HeadTooLarge));
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("X-{i}: 1\r\n"))
        .collect();
    assert_eq!(
        refused(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
        Refusal::TooManyHeaders
    );
}

#[test]
fn plain_get_is_not_an_upgrade() {
    let req = "GET /?room=a HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\n\r\n";
    assert_eq!(
        read_request(req.as_bytes()),
        Ok(Some(Head {
            used: req.len(),
            request: Request::Plain {
                path: "/?room=a".into()
            }
        }))
    );
    // Another kind of upgrade is plain HTTP to us.
    let req = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n";
    assert!(matches!(
        read_request(req.as_bytes()),
        Ok(Some(Head {
            request: Request::Plain { .. },
            ..
        }))
    ));
}

#[test]
fn bad_upgrades_are_refused_with_their_status() {
    let req = request("");
    let cases = [
        (req.replacen("GET", "POST", 1), Refusal::Method, 405),
        (
            req.replacen("HTTP/1.1", "HTTP/1.0", 1),
            Refusal::Version,
            400,
        ),
        (
            req.replacen("Host: server.example.com\r\n", "", 1),
            Refusal::NoHost,
            400,
        ),
        (
            req.replacen("Connection: Upgrade", "Connection: keep-alive", 1),
            Refusal::NoConnectionUpgrade,
            400,
        ),
        (
            req.replacen("Sec-WebSocket-Version: 13\r\n", "", 1),
            Refusal::NoWsVersion,
            400,
        ),
        (
            req.replacen("Version: 13", "Version: 8", 1),
            Refusal::WsVersion,
            426,
        ),
        (
            req.replacen(RFC_KEY, "dGhlIHNhbXBsZSBub25jZQ", 1),
            Refusal::BadKey,
            400,
        ),
        // Base64 of 15 bytes, and of 17.
        (
            req.replacen(RFC_KEY, "dGhlIHNhbXBsZSBub25j", 1),
            Refusal::BadKey,
            400,
        ),
        (
            req.replacen(RFC_KEY, "dGhlIHNhbXBsZSBub25jZTEy", 1),
            Refusal::BadKey,
            400,
        ),
        (
            req.replacen(RFC_KEY, "!GhlIHNhbXBsZSBub25jZQ==", 1),
            Refusal::BadKey,
            400,
        ),
        (
            req.replacen(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n"), "", 1),
            Refusal::BadKey,
            400,
        ),
        (
            "GET\0/ HTTP/1.1\r\n\r\n".to_string(),
            Refusal::Malformed,
            400,
        ),
    ];
    for (req, want, status) in cases {
        let r = refused(&req);
        assert_eq!((r, r.status()), (want, status), "{req}");
        let resp = String::from_utf8(r.response()).unwrap();
        assert!(resp.starts_with(&format!("HTTP/1.1 {status} ")), "{resp}");
    }
    let resp = String::from_utf8(Refusal::WsVersion.response()).unwrap();
    assert!(resp.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{resp}");
    assert!(
        String::from_utf8(Refusal::Method.response())
            .unwrap()
            .contains("\r\nAllow: GET\r\n")
    );
}

// --- Frames: RFC 6455 section 5.7's examples ---

const HELLO_MASKED: [u8; 11] = [
    0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
];

#[test]
fn rfc_single_frame_unmasked_and_masked() {
    let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(server(OpCode::Text, true, b"Hello"), unmasked);
    assert_eq!(client(OpCode::Text, true, b"Hello"), HELLO_MASKED);
    let hello = (vec![Event::Text(b"Hello".to_vec())], None);
    assert_eq!(decode_every_split(Role::Client, 100, &unmasked), hello);
    assert_eq!(decode_every_split(Role::Server, 100, &HELLO_MASKED), hello);
}

#[test]
fn rfc_fragmented_unmasked_text() {
    let input = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    let mut built = server(OpCode::Text, false, b"Hel");
    built.extend(server(OpCode::Continuation, true, b"lo"));
    assert_eq!(built, input);
    let (events, err) = decode_every_split(Role::Client, 100, &input);
    assert_eq!((events, err), (vec![Event::Text(b"Hello".to_vec())], None));
}

#[test]
fn rfc_ping_and_masked_pong() {
    let ping_frame = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let mut out = BytesMut::new();
    ping(&mut out, b"Hello");
    assert_eq!(&out[..], ping_frame);
    assert_eq!(
        decode_every_split(Role::Client, 0, &ping_frame),
        (vec![Event::Ping(b"Hello".to_vec())], None)
    );
    let pong_frame = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(client(OpCode::Pong, true, b"Hello"), pong_frame);
    assert_eq!(
        decode_every_split(Role::Server, 0, &pong_frame),
        (vec![Event::Pong(b"Hello".to_vec())], None)
    );
}

#[test]
fn rfc_256_byte_and_64_kib_binary_lengths() {
    let small: Vec<u8> = (0..256).map(|i| i as u8).collect();
    let frame = server(OpCode::Binary, true, &small);
    assert_eq!(frame[..4], [0x82, 0x7E, 0x01, 0x00]);
    assert_eq!(frame.len(), 4 + 256);
    assert_eq!(
        decode(Role::Client, 256, &frame),
        (vec![Event::Binary(small.clone())], None)
    );

    let big: Vec<u8> = (0..65536).map(|i| (i * 7) as u8).collect();
    let frame = server(OpCode::Binary, true, &big);
    assert_eq!(frame[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]);
    assert_eq!(frame.len(), 10 + 65536);
    let bytewise = decode_pieces(&mut Decoder::new(Role::Client, 65536), frame.chunks(1));
    assert_eq!(bytewise, (vec![Event::Binary(big.clone())], None));
    // Masked, from a client, in uneven pieces (the mask's phase moves).
    let frame = client(OpCode::Binary, true, &big);
    assert_eq!(frame[..2], [0x82, 0xFF]);
    let got = decode_pieces(&mut Decoder::new(Role::Server, 65536), frame.chunks(7));
    assert_eq!(got, (vec![Event::Binary(big)], None));
}

// --- Fragments, control frames between them, splits ---

/// A conversation: a fragmented text with a ping and a pong between its
/// fragments, an empty text, a binary in three fragments (the last empty),
/// a close.
fn conversation() -> (Vec<u8>, Vec<Event>) {
    let mut input = client(OpCode::Text, false, "héllo ".as_bytes());
    input.extend(client(OpCode::Ping, true, b"p1"));
    input.extend(client(OpCode::Continuation, false, "wörld".as_bytes()));
    input.extend(client(OpCode::Pong, true, b""));
    input.extend(client(OpCode::Continuation, true, b"!"));
    input.extend(client(OpCode::Text, true, b""));
    let bin: Vec<u8> = (0..300).map(|i| (i % 251) as u8).collect();
    input.extend(client(OpCode::Binary, false, &bin[..200]));
    input.extend(client(OpCode::Continuation, false, &bin[200..]));
    input.extend(client(OpCode::Continuation, true, b""));
    let mut close_frame = BytesMut::new();
    client_close(&mut close_frame, 1000, "bye", MASK);
    input.extend_from_slice(&close_frame);
    let events = vec![
        Event::Ping(b"p1".to_vec()),
        Event::Pong(Vec::new()),
        Event::Text("héllo wörld!".as_bytes().to_vec()),
        Event::Text(Vec::new()),
        Event::Binary(bin),
        Event::Close(Some(CloseFrame {
            code: 1000,
            reason: "bye".into(),
        })),
    ];
    (input, events)
}

#[test]
fn control_frames_between_fragments_and_every_split_point() {
    let (input, events) = conversation();
    assert_eq!(
        decode_every_split(Role::Server, 300, &input),
        (events, None)
    );
}

#[test]
fn nothing_is_read_after_a_close() {
    let (mut input, events) = conversation();
    input.extend(client(OpCode::Text, true, b"late"));
    input.extend_from_slice(&[0xFF; 20]);
    assert_eq!(
        decode_every_split(Role::Server, 300, &input),
        (events, None)
    );
}

#[test]
fn close_without_code_and_with_utf8_reason() {
    let input = client(OpCode::Close, true, b"");
    assert_eq!(
        decode_every_split(Role::Server, 0, &input),
        (vec![Event::Close(None)], None)
    );
    let mut payload = 4000u16.to_be_bytes().to_vec();
    payload.extend_from_slice("ça va".as_bytes());
    let input = client(OpCode::Close, true, &payload);
    let want = Event::Close(Some(CloseFrame {
        code: 4000,
        reason: "ça va".into(),
    }));
    assert_eq!(
        decode_every_split(Role::Server, 0, &input),
        (vec![want], None)
    );
}

#[test]
fn idle_decoder_holds_nothing() {
    assert!(
        std::mem::size_of::<Decoder>() <= 16,
        "{}",
        std::mem::size_of::<Decoder>()
    );
    let mut d = Decoder::new(Role::Server, 100);
    let frame = client(OpCode::Text, false, b"ab");
    let (events, _) = decode_pieces(&mut d, [&frame[..3]]);
    assert!(events.is_empty());
    assert!(!d.is_idle());
    let (events, _) = decode_pieces(&mut d, [&frame[3..]]);
    assert!(events.is_empty());
    assert_eq!(d.held(), 2);
    let (events, _) = decode_pieces(&mut d, [&client(OpCode::Continuation, true, b"c")[..]]);
    assert_eq!(events, vec![Event::Text(b"abc".to_vec())]);
    assert!(d.is_idle());
    assert_eq!(d.held(), 0);
}

#[test]
fn a_close_in_the_middle_of_a_message_ends_it() {
    let mut input = client(OpCode::Text, false, b"half a mess");
    input.extend(client(OpCode::Close, true, &1001u16.to_be_bytes()));
    input.extend(client(OpCode::Continuation, true, b"age"));
    let want = vec![Event::Close(Some(CloseFrame {
        code: 1001,
        reason: String::new(),
    }))];
    assert_eq!(decode_every_split(Role::Server, 100, &input), (want, None));
}

#[test]
fn what_the_decoder_holds_stays_within_the_limit_plus_one_control_frame() {
    let limit = 1000;
    let mut input = Vec::new();
    for (i, chunk) in [0u8; 1000].chunks(90).enumerate() {
        let op = if i == 0 {
            OpCode::Binary
        } else {
            OpCode::Continuation
        };
        input.extend(client(op, false, chunk));
        input.extend(client(OpCode::Ping, true, &[7; MAX_CONTROL]));
    }
    input.extend(client(OpCode::Continuation, true, b""));
    let mut d = Decoder::new(Role::Server, limit);
    let mut most = 0;
    let mut messages = 0;
    for byte in input.chunks(1) {
        let (events, err) = decode_pieces(&mut d, [byte]);
        assert_eq!(err, None);
        messages += events
            .iter()
            .filter(|e| matches!(e, Event::Binary(_)))
            .count();
        most = most.max(d.held());
    }
    assert_eq!(messages, 1);
    assert!(most <= limit + MAX_CONTROL + 14, "{most}");
    assert!(d.is_idle());
}

#[test]
fn unmasking_in_any_pieces_matches_the_mask_byte_by_byte() {
    let payload: Vec<u8> = (0..1000).map(|i| (i * 31 % 256) as u8).collect();
    let frame = client(OpCode::Binary, true, &payload);
    for piece in 1..=9 {
        let got = decode_pieces(&mut Decoder::new(Role::Server, 1000), frame.chunks(piece));
        assert_eq!(
            got,
            (vec![Event::Binary(payload.clone())], None),
            "pieces of {piece}"
        );
    }
}

// --- Errors and their close codes ---

#[test]
fn unmasked_client_frame_is_1002() {
    expect_error(
        &server(OpCode::Text, true, b"hi"),
        100,
        ProtocolError::Unmasked,
        1002,
    );
    // And a masked one sent to a client.
    let (_, err) = decode(Role::Client, 100, &HELLO_MASKED);
    assert_eq!(err, Some(ProtocolError::Masked));
}

#[test]
fn reserved_bits_and_bad_opcodes_are_1002() {
    for rsv in [0x40, 0x20, 0x10] {
        let mut f = client(OpCode::Text, true, b"hi");
        f[0] |= rsv;
        expect_error(&f, 100, ProtocolError::ReservedBits, 1002);
    }
    for op in [0x3, 0x7, 0xB, 0xF] {
        let mut f = client(OpCode::Binary, true, b"hi");
        f[0] = 0x80 | op;
        expect_error(&f, 100, ProtocolError::BadOpcode(op), 1002);
    }
}

#[test]
fn control_frame_rules_are_1002() {
    expect_error(
        &client(OpCode::Ping, false, b"x"),
        100,
        ProtocolError::FragmentedControl,
        1002,
    );
    // Over 125 bytes: refused from the header alone.
    let f = client(OpCode::Pong, true, &[0; 126]);
    expect_error(&f[..8], 100, ProtocolError::ControlTooLong, 1002);
    expect_error(
        &client(OpCode::Close, true, &[0x03]),
        100,
        ProtocolError::BadClose,
        1002,
    );
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 2000, 5000] {
        expect_error(
            &client(OpCode::Close, true, &code.to_be_bytes()),
            100,
            ProtocolError::BadClose,
            1002,
        );
    }
}

#[test]
fn broken_fragmentation_is_1002() {
    expect_error(
        &client(OpCode::Continuation, true, b"x"),
        100,
        ProtocolError::UnexpectedContinuation,
        1002,
    );
    let mut f = client(OpCode::Text, true, b"done");
    f.extend(client(OpCode::Continuation, false, b"x"));
    expect_error(&f, 100, ProtocolError::UnexpectedContinuation, 1002);
    for op in [OpCode::Text, OpCode::Binary] {
        let mut f = client(OpCode::Binary, false, b"a");
        f.extend(client(OpCode::Ping, true, b""));
        f.extend(client(op, true, b"b"));
        let (events, err) = decode_every_split(Role::Server, 100, &f);
        assert_eq!(events, vec![Event::Ping(Vec::new())]);
        assert_eq!(err, Some(ProtocolError::UnfinishedMessage));
    }
    // A 64-bit length with its top bit set.
    let f = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
    expect_error(&f, usize::MAX, ProtocolError::BadLength, 1002);
}

#[test]
fn invalid_utf8_is_1007_across_fragments() {
    // "é" is C3 A9: cut between the fragments, it is fine.
    let mut ok = client(OpCode::Text, false, &[b'a', 0xC3]);
    ok.extend(client(OpCode::Continuation, true, &[0xA9, b'b']));
    assert_eq!(
        decode_every_split(Role::Server, 100, &ok),
        (vec![Event::Text("aéb".as_bytes().to_vec())], None)
    );
    // Cut, then not continued: 1007 at the second fragment.
    let mut bad = client(OpCode::Text, false, &[b'a', 0xC3]);
    bad.extend(client(OpCode::Continuation, true, b"b"));
    expect_error(&bad, 100, ProtocolError::InvalidUtf8, 1007);
    // Cut, and the message ends there (an empty last fragment).
    let mut bad = client(OpCode::Text, false, &[b'a', 0xE2, 0x82]);
    bad.extend(client(OpCode::Continuation, true, b""));
    expect_error(&bad, 100, ProtocolError::InvalidUtf8, 1007);
    expect_error(
        &client(OpCode::Text, true, &[0xFF]),
        100,
        ProtocolError::InvalidUtf8,
        1007,
    );
    // A binary message may hold anything.
    assert_eq!(
        decode(Role::Server, 100, &client(OpCode::Binary, true, &[0xFF])).1,
        None
    );
    // A close reason that is not UTF-8.
    expect_error(
        &client(OpCode::Close, true, &[0x03, 0xE8, 0xFF]),
        100,
        ProtocolError::InvalidCloseReason,
        1007,
    );
}

#[test]
fn invalid_utf8_fails_fast_before_the_message_ends() {
    // The frame declares 100 bytes; the bad byte is the second.
    let f = client(OpCode::Text, true, &[b'a'; 100]);
    let mut f2 = f.clone();
    let at = f.len() - 100 + 1;
    f2[at] = b'a' ^ 0xFF ^ MASK[1];
    let (_, err) = decode(Role::Server, 100, &f2[..at + 1]);
    assert_eq!(err, Some(ProtocolError::InvalidUtf8));
}

#[test]
fn too_big_is_1009_from_the_header_and_counts_fragments() {
    let f = client(OpCode::Binary, true, &[0; 11]);
    // Header only (2 bytes + mask): refused before any payload.
    expect_error(&f[..6], 10, ProtocolError::TooBig, 1009);
    assert_eq!(decode(Role::Server, 11, &f).1, None);
    let mut f = client(OpCode::Text, false, b"123456");
    f.extend(client(OpCode::Continuation, false, b"7890"));
    let second = f.len();
    f.extend(client(OpCode::Continuation, true, b"x"));
    expect_error(&f[..second + 6], 10, ProtocolError::TooBig, 1009);
    // A 64-bit length near the top.
    let f = [
        0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4,
    ];
    expect_error(&f, 1 << 20, ProtocolError::TooBig, 1009);
}

#[test]
fn errors_are_sticky() {
    let mut d = Decoder::new(Role::Server, 100);
    let mut input: &[u8] = &server(OpCode::Text, true, b"x");
    assert_eq!(d.decode(&mut input), Err(ProtocolError::Unmasked));
    let mut input: &[u8] = &HELLO_MASKED;
    assert_eq!(d.decode(&mut input), Err(ProtocolError::Unmasked));
    assert!(d.is_idle());
}

// --- Encoders ---

#[test]
fn message_for_frame_picks_text_or_binary_and_is_shared() {
    let text = message_for_frame(b"MESSAGE chat 2\nhi");
    assert_eq!(text[0], 0x81);
    assert_eq!(&text[2..], b"MESSAGE chat 2\nhi");
    let bin = message_for_frame(&[b'M', 0xFF]);
    assert_eq!(&bin[..], [0x82, 2, b'M', 0xFF]);
    // One encoding for every subscriber: clones share the allocation.
    let copy = text.clone();
    assert_eq!(copy.as_ptr(), text.as_ptr());
    let (events, _) = decode(Role::Client, 100, &bin);
    assert_eq!(events, vec![Event::Binary(vec![b'M', 0xFF])]);
}

#[test]
fn close_frames_cut_their_reason_at_a_character() {
    let mut out = BytesMut::new();
    close(&mut out, 1009, "too big");
    assert_eq!(
        &out[..],
        [
            0x88, 9, 0x03, 0xF1, b't', b'o', b'o', b' ', b'b', b'i', b'g'
        ]
    );
    let long = "é".repeat(100);
    let mut out = BytesMut::new();
    close(&mut out, 1000, &long);
    assert_eq!(out[1], 2 + 122);
    let (events, err) = decode(Role::Client, 0, &out);
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![Event::Close(Some(CloseFrame {
            code: 1000,
            reason: "é".repeat(61)
        }))]
    );
}

// --- tungstenite, a client and a server no one here wrote ---

mod tungstenite_interop {
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::io::{self, Read, Write};
    use std::rc::Rc;

    use bytes::BytesMut;
    use tungstenite::client::IntoClientRequest;
    use tungstenite::http::HeaderValue;
    use tungstenite::protocol::CloseFrame as TCloseFrame;
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode as TOpCode};
    use tungstenite::{Error, HandshakeError, Message};

    use super::super::*;
    use super::MASK;

    /// One direction of an in-memory stream.
    #[derive(Clone, Default)]
    struct Pipe(Rc<RefCell<VecDeque<u8>>>);

    impl Pipe {
        fn take(&self) -> Vec<u8> {
            self.0.borrow_mut().drain(..).collect()
        }

        fn put(&self, bytes: &[u8]) {
            self.0.borrow_mut().extend(bytes);
        }
    }

    /// One end of a duplex stream: reads `rx`, writes `tx`; a read of an
    /// empty pipe would block.
    struct End {
        rx: Pipe,
        tx: Pipe,
    }

    impl Read for End {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let mut q = self.rx.0.borrow_mut();
            if q.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = q.len().min(buf.len());
            for (slot, b) in buf.iter_mut().zip(q.drain(..n)) {
                *slot = b;
            }
            Ok(n)
        }
    }

    impl Write for End {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.tx.put(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Decodes everything waiting in `pipe`, byte by byte.
    fn events(d: &mut Decoder, pipe: &Pipe) -> Vec<Event> {
        let bytes = pipe.take();
        let (events, err) = super::decode_pieces(d, bytes.chunks(1));
        assert_eq!(err, None);
        events
    }

    #[test]
    fn tungstenite_client_against_our_server() {
        let (c2s, s2c) = (Pipe::default(), Pipe::default());
        let end = End {
            rx: s2c.clone(),
            tx: c2s.clone(),
        };
        let mut req = "ws://localhost:7422/chat".into_client_request().unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("switchboard.v1"),
        );
        let mid = match tungstenite::client(req, end) {
            Err(HandshakeError::Interrupted(mid)) => mid,
            Err(e) => panic!("handshake: {e}"),
            Ok(_) => panic!("no response was written yet"),
        };
        let head = c2s.take();
        let Ok(Some(Head {
            used,
            request: Request::Upgrade(up),
        })) = read_request(&head)
        else {
            panic!("not an upgrade: {}", String::from_utf8_lossy(&head));
        };
        assert_eq!(used, head.len());
        assert!(up.subprotocol);
        s2c.put(&up.response());
        let (mut ws, resp) = match mid.handshake() {
            Ok(done) => done,
            Err(e) => panic!("handshake: {e}"),
        };
        assert_eq!(resp.headers()["sec-websocket-protocol"], "switchboard.v1");

        let mut d = Decoder::new(Role::Server, 1 << 20);
        // Client to server: text, binary (64-bit length), fragmented text.
        ws.send(Message::text("PUBLISH chat 5\nhello")).unwrap();
        let big: Vec<u8> = (0..70_000).map(|i| (i % 253) as u8).collect();
        ws.send(Message::binary(big.clone())).unwrap();
        ws.send(Message::Frame(Frame::message(
            "Hel",
            TOpCode::Data(Data::Text),
            false,
        )))
        .unwrap();
        ws.send(Message::Ping("p".into())).unwrap();
        ws.send(Message::Frame(Frame::message(
            "lo",
            TOpCode::Data(Data::Continue),
            true,
        )))
        .unwrap();
        assert_eq!(
            events(&mut d, &c2s),
            vec![
                Event::Text(b"PUBLISH chat 5\nhello".to_vec()),
                Event::Binary(big.clone()),
                Event::Ping(b"p".to_vec()),
                Event::Text(b"Hello".to_vec()),
            ]
        );

        // Server to client: the pong, text, binary, and a server ping.
        let mut out = BytesMut::new();
        pong(&mut out, b"p");
        s2c.put(&out);
        s2c.put(&message_for_frame(b"MESSAGE chat alice 2\nhi"));
        s2c.put(&message_for_frame(&big));
        let mut out = BytesMut::new();
        ping(&mut out, b"keep");
        s2c.put(&out);
        assert_eq!(ws.read().unwrap(), Message::Pong("p".into()));
        assert_eq!(
            ws.read().unwrap(),
            Message::text("MESSAGE chat alice 2\nhi")
        );
        assert_eq!(ws.read().unwrap(), Message::binary(big));
        assert_eq!(ws.read().unwrap(), Message::Ping("keep".into()));
        ws.flush().unwrap();
        assert_eq!(events(&mut d, &c2s), vec![Event::Pong(b"keep".to_vec())]);

        // The closing handshake, started by the client.
        ws.close(Some(TCloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .unwrap();
        let got = events(&mut d, &c2s);
        assert_eq!(
            got,
            vec![Event::Close(Some(CloseFrame {
                code: 1000,
                reason: "bye".into()
            }))]
        );
        let mut out = BytesMut::new();
        close(&mut out, 1000, "bye");
        s2c.put(&out);
        match ws.read() {
            Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1000),
            other => panic!("expected our close: {other:?}"),
        }
        // The handshake is complete: nothing more is sent, and closing the
        // TCP connection is the server's (RFC 6455 7.1.1).
        assert!(matches!(ws.read(), Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock));
        assert!(c2s.take().is_empty());
    }

    #[test]
    fn tungstenite_client_sees_our_close_and_errors() {
        let (c2s, s2c) = (Pipe::default(), Pipe::default());
        let end = End {
            rx: s2c.clone(),
            tx: c2s.clone(),
        };
        // No subprotocol asked: accepted without one.
        let Err(HandshakeError::Interrupted(mid)) = tungstenite::client("ws://localhost/", end)
        else {
            panic!("expected to wait for the response");
        };
        let Ok(Some(Head {
            request: Request::Upgrade(up),
            ..
        })) = read_request(&c2s.take())
        else {
            panic!("not an upgrade");
        };
        assert!(!up.subprotocol);
        s2c.put(&up.response());
        let Ok((mut ws, _)) = mid.handshake() else {
            panic!("handshake")
        };
        // A message over our limit: we close with 1009, tungstenite answers.
        let mut d = Decoder::new(Role::Server, 10);
        ws.send(Message::text("eleven byte")).unwrap();
        let mut input: &[u8] = &c2s.take();
        let err = d.decode(&mut input).unwrap_err();
        assert_eq!(err.close_code(), 1009);
        let mut out = BytesMut::new();
        close(&mut out, err.close_code(), &err.to_string());
        s2c.put(&out);
        match ws.read() {
            Ok(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1009);
                assert_eq!(f.reason.as_str(), "message too big");
            }
            other => panic!("expected our close: {other:?}"),
        }
        ws.flush().unwrap();
        // Our decoder after an error is done; a fresh one reads the reply.
        let reply = super::decode(Role::Server, 10, &c2s.take());
        assert!(
            matches!(
                &reply.0[..],
                [Event::Close(Some(CloseFrame { code: 1009, .. }))]
            ),
            "{reply:?}"
        );
    }

    #[test]
    fn our_client_frames_against_tungstenite_server() {
        let (c2s, s2c) = (Pipe::default(), Pipe::default());
        c2s.put(
            b"GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        let mut ws = match tungstenite::accept(End {
            rx: c2s.clone(),
            tx: s2c.clone(),
        }) {
            Ok(ws) => ws,
            Err(e) => panic!("accept: {e}"),
        };
        let resp = String::from_utf8(s2c.take()).unwrap();
        // tungstenite computes the same accept key as ours.
        let line = format!(
            "sec-websocket-accept: {}\r\n",
            accept_key("dGhlIHNhbXBsZSBub25jZQ==")
        );
        let has_line = resp
            .lines()
            .any(|l| l.eq_ignore_ascii_case(line.trim_end()));
        assert!(resp.starts_with("HTTP/1.1 101") && has_line, "{resp}");

        // Client frames: text, fragmented text around a ping, big binary.
        let mut out = BytesMut::new();
        client_frame(&mut out, OpCode::Text, true, b"LOGIN alice", MASK);
        client_frame(&mut out, OpCode::Text, false, b"frag", [1, 2, 3, 4]);
        client_frame(&mut out, OpCode::Ping, true, b"are you there", [5, 6, 7, 8]);
        client_frame(
            &mut out,
            OpCode::Continuation,
            true,
            b"mented",
            [9, 10, 11, 12],
        );
        let big: Vec<u8> = (0..70_000).map(|i| (i % 249) as u8).collect();
        client_frame(
            &mut out,
            OpCode::Binary,
            true,
            &big,
            [0xde, 0xad, 0xbe, 0xef],
        );
        c2s.put(&out);
        assert_eq!(ws.read().unwrap(), Message::text("LOGIN alice"));
        assert_eq!(ws.read().unwrap(), Message::Ping("are you there".into()));
        assert_eq!(ws.read().unwrap(), Message::text("fragmented"));
        assert_eq!(ws.read().unwrap(), Message::binary(big.clone()));

        // Server frames to our client-side decoder: the pong, text, binary.
        ws.send(Message::text("OK")).unwrap();
        ws.send(Message::binary(vec![0xFF, 0])).unwrap();
        let mut d = Decoder::new(Role::Client, 1 << 20);
        assert_eq!(
            events(&mut d, &s2c),
            vec![
                Event::Pong(b"are you there".to_vec()),
                Event::Text(b"OK".to_vec()),
                Event::Binary(vec![0xFF, 0]),
            ]
        );

        // The closing handshake, started by our client.
        let mut out = BytesMut::new();
        client_close(&mut out, 1000, "done", MASK);
        c2s.put(&out);
        match ws.read() {
            Ok(Message::Close(Some(f))) => assert_eq!(f.reason.as_str(), "done"),
            other => panic!("expected the close: {other:?}"),
        }
        // tungstenite writes its answering close and reports the
        // connection closed (a server drops TCP once both closes passed).
        match ws.flush() {
            Ok(()) | Err(Error::ConnectionClosed) => {}
            Err(e) => panic!("flush: {e}"),
        }
        assert_eq!(
            events(&mut d, &s2c),
            vec![Event::Close(Some(CloseFrame {
                code: 1000,
                reason: "done".into()
            }))]
        );
    }
}
