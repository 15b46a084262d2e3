//! Frame grammar (protocol.md sections 1, 2 and 7): what the server accepts,
//! what it refuses with `bad-frame` / `too-large` / `unknown-command` /
//! `bad-args`, and that the session goes on (or is closed) as the contract says.

mod common;

use common::*;

/// Each `input` (sent on its own fresh, logged-in connection) gets
/// `ERR bad-frame` and the connection is closed; the server keeps serving.
#[track_caller]
fn assert_bad_frames(inputs: &[&[u8]]) {
    let srv = ServerProc::start(&["--group", "1=general"]);
    for input in inputs {
        let mut c = srv.login("alice");
        c.label = format!("alice sending {}", show_bytes(input));
        c.send(input);
        c.expect_err("bad-frame");
        c.expect_closed();
    }
    // Other sessions are not affected.
    let mut bob = srv.login("bob");
    bob.ping();
}

#[test]
fn bad_frame_type_not_letters() {
    assert_bad_frames(&[b"P1NG 0\n", b"PI_NG 0\n", b"1 0\n"]);
}

#[test]
fn bad_frame_type_over_16_letters() {
    assert_bad_frames(&[b"ABCDEFGHIJKLMNOPQ 0\n"]);
}

#[test]
fn type_of_16_letters_is_well_formed_unknown_command() {
    let srv = ServerProc::start(&[]);
    let mut c = srv.login("alice");
    c.send(b"ABCDEFGHIJKLMNOP 0\n");
    c.expect_err("unknown-command");
    c.ping();
}

#[test]
fn bad_frame_len_with_sign() {
    assert_bad_frames(&[b"PING +0\n", b"PING -0\n", b"PUBLISH +5 1\nhello"]);
}

#[test]
fn bad_frame_len_of_11_digits() {
    assert_bad_frames(&[b"PING 00000000000\n", b"PUBLISH 10000000000 1\n"]);
}

#[test]
fn len_of_10_digits_is_well_formed() {
    let srv = ServerProc::start(&[]);
    let mut c = srv.login("alice");
    // 10 digits is within the grammar: a zero LEN written with 10 digits.
    c.send(b"PING 0000000000\n");
    c.expect_pong();
    c.ping();
}

#[test]
fn bad_frame_len_missing_or_not_decimal() {
    assert_bad_frames(&[b"PING\n", b"PING\r\n", b"USER alice\n", b"PING 0x0\n"]);
}

#[test]
fn bad_frame_header_over_4096_bytes_without_lf() {
    // Valid arguments (20 x 250 bytes), valid count, but no LF within 4,096
    // bytes: the server must not wait for the LF.
    let mut header = b"FOO 0".to_vec();
    for _ in 0..20 {
        header.push(b' ');
        header.extend(std::iter::repeat_n(b'a', 250));
    }
    assert!(header.len() > 4096);
    assert_bad_frames(&[&header]);
}

/// A header of `total` bytes including the LF, made of an unknown TYPE and
/// arguments of at most 255 bytes.
fn header_of_len(total: usize) -> Vec<u8> {
    let mut h = b"FOO 0".to_vec();
    while h.len() + 1 < total {
        let room = total - 1 - h.len() - 1; // minus LF, minus separating space
        h.push(b' ');
        h.extend(std::iter::repeat_n(b'x', room.clamp(1, 255)));
    }
    h.push(b'\n');
    assert_eq!(h.len(), total);
    h
}

#[test]
fn bad_frame_header_of_4097_bytes_with_lf() {
    let h = header_of_len(4097);
    assert_bad_frames(&[&h]);
}

#[test]
fn header_of_exactly_4096_bytes_is_accepted() {
    let srv = ServerProc::start(&[]);
    let mut c = srv.login("alice");
    let h = header_of_len(4096);
    c.send(&h);
    c.expect_err("unknown-command");
    c.ping();
}

#[test]
fn bad_frame_control_or_non_ascii_byte_in_argument() {
    assert_bad_frames(&[
        b"USER 0 al\x01ice\n",
        b"USER 0 al\x00ice\n",
        b"USER 0 al\tice\n",
        b"USER 0 al\x7fice\n",
        b"USER 0 al\xc3\xa9ice\n",
        b"SUBSCRIBE 0 1\x1b\n",
    ]);
}

#[test]
fn bad_frame_65_arguments() {
    let mut h = String::from("SUBSCRIBE 0");
    for _ in 0..65 {
        h.push_str(" 1");
    }
    h.push('\n');
    assert_bad_frames(&[h.as_bytes()]);
}

#[test]
fn sixty_four_arguments_are_accepted() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut c = srv.login("alice");
    let mut h = String::from("SUBSCRIBE 0");
    for _ in 0..64 {
        h.push_str(" 1");
    }
    c.ack(&h);
    c.ping();
}

#[test]
fn bad_frame_argument_of_256_bytes() {
    let h = format!("FOO 0 {}\n", "a".repeat(256));
    assert_bad_frames(&[h.as_bytes()]);
}

#[test]
fn argument_of_255_bytes_is_accepted() {
    let srv = ServerProc::start(&[]);
    let mut c = srv.login("alice");
    c.send_line(&format!("FOO 0 {}", "a".repeat(255)));
    c.expect_err("unknown-command");
    c.ping();
}

#[test]
fn bad_frame_before_login_also_closes() {
    let srv = ServerProc::start(&[]);
    let mut c = srv.connect();
    c.send(b"P1NG 0\n");
    c.expect_err("bad-frame");
    c.expect_closed();
}

/// Issue 11: a LEN shorter than the payload leaves the payload's tail where
/// the next header should be. The error says the previous frame's LEN was
/// probably wrong, not that the TYPE is bad; the code stays `bad-frame`.
#[test]
fn bad_header_right_after_a_payload_blames_the_previous_len() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    for input in [
        // LEN 3 for "hello": "lo" is read as the next header.
        &b"PUBLISH 3 1\nhello\nPING 0\n"[..],
        // A payload with a space and digits in its tail: "1 2" is no TYPE.
        b"SEND 2 bob\nhi 1 2\n",
        // LEN too long: the payload swallows the next header's `PING `.
        b"PUBLISH 11 1\nhello\nPING 0\n",
    ] {
        let mut c = srv.login("alice");
        c.label = format!("alice sending {}", show_bytes(input));
        c.send(input);
        // Replies to the frame with the payload (ACK, ERR no-such-user) first.
        let err = loop {
            let f = c.reply();
            if f.is("ERR", &["bad-frame"]) {
                break f;
            }
        };
        let text = err.text();
        assert!(
            text.starts_with("bad frame right after a payload of ")
                && text.contains("the previous frame's LEN was probably wrong"),
            "{text:?}"
        );
        assert!(!text.contains("TYPE"), "{text:?}");
        c.expect_closed();
    }
    // Without a payload before it, a bad header is still about the header.
    let mut c = srv.login("alice");
    c.send(b"PING 0\n1 0\n");
    c.expect_pong();
    let err = c.expect_err("bad-frame");
    assert!(err.text().contains("TYPE must be"), "{err:?}");
}

#[test]
fn too_large_then_close() {
    let srv = ServerProc::start(&["--max-payload", "65536", "--group", "1=general"]);
    for header in ["PUBLISH 65537 1", "PUBLISH 9999999999 1", "SEND 65537 bob"] {
        let mut c = srv.login("alice");
        c.label = format!("alice sending `{header}`");
        // Only the header: the server must refuse on the declared LEN alone.
        c.send_line(header);
        c.expect_err("too-large");
        c.expect_closed();
    }
    let mut bob = srv.login("bob");
    bob.ping();
}

#[test]
fn payload_at_the_limit_is_accepted() {
    let srv = ServerProc::start(&["--max-payload", "65536", "--group", "1=general"]);
    let mut sub = srv.login("bob");
    sub.ack("SUBSCRIBE 0 1");
    let mut c = srv.login("alice");
    let hello = c.result("HELLO 0");
    assert!(
        hello.iter().any(|l| l == "max_payload=65536"),
        "HELLO should say max_payload=65536, got {hello:?}"
    );
    let payload: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    c.send_frame("PUBLISH", &["1"], &payload);
    c.expect_ack();
    sub.expect_published("alice", &["1"], &payload);
    sub.expect_quiet("after one PUBLISH");
}

#[test]
fn unknown_command_skips_its_payload() {
    let srv = ServerProc::start(&[]);
    let mut c = srv.login("alice");
    c.send(b"FOO 5\nhellePING 0\n");
    c.expect_err("unknown-command");
    c.expect_pong();
    // A payload that looks like frames is skipped, not parsed.
    c.send(b"BAR 14\nPING 0\nPING 0\nPING 0\n");
    c.expect_err("unknown-command");
    c.expect_pong();
    c.expect_quiet("the skipped payload must not produce replies");
    // Arguments do not change that.
    c.send(b"FOO 0 a b c\n");
    c.expect_err("unknown-command");
    c.ping();
}

#[test]
fn unknown_command_as_in_the_issue() {
    let srv = ServerProc::start(&[]);
    let mut c = srv.login("alice");
    c.send(b"FOO 5\nhello");
    c.send(b"PING 0\n");
    c.expect_err("unknown-command");
    c.expect_pong();
}

#[test]
fn bad_args_and_the_session_goes_on() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1");
    let mut c = srv.login("alice");
    for line in [
        "SUBSCRIBE 0",
        "SUBSCRIBE 0 abc",
        "SUBSCRIBE 0 1 x",
        "UNSUBSCRIBE 0",
        "UNSUBSCRIBE 0 abc",
        "WATCH 0",
        "UNWATCH 0",
        "WATCH 0 abc",
        "GROUPS 0 1",
        "HELLO 0 x",
        "WHO 0 1 1",
        "WHO 0 abc",
        "USER 0",
        "USER 0 alice bob",
    ] {
        c.err(line, "bad-args");
    }
    // PUBLISH and SEND with a wrong argument: the payload is consumed.
    for (ty, args) in [
        ("PUBLISH", &[][..]),
        ("PUBLISH", &["x"][..]),
        ("SEND", &[][..]),
        ("SEND", &["bob", "carol"][..]),
    ] {
        c.label = format!("alice sending {ty} {args:?}");
        c.send_frame(ty, args, b"PING 0\n");
        c.expect_err("bad-args");
    }
    c.ping();
    bob.expect_quiet("nothing was published");
}

#[test]
fn group_numbers_out_of_range_are_bad_args() {
    let srv = ServerProc::start(&["--open-groups"]);
    let mut c = srv.login("alice");
    for line in [
        "SUBSCRIBE 0 0",
        "SUBSCRIBE 0 4294967296",
        "SUBSCRIBE 0 -1",
        "SUBSCRIBE 0 99999999999",
    ] {
        c.err(line, "bad-args");
    }
    c.ack("SUBSCRIBE 0 4294967295");
    c.send_frame("PUBLISH", &["4294967295"], b"max");
    c.expect_ack();
    c.expect_published("alice", &["4294967295"], b"max");
    c.send_frame("PUBLISH", &["0"], b"zero");
    c.expect_err("bad-args");
    c.expect_quiet("nothing more delivered");
}

#[test]
fn no_payload_command_with_payload_is_bad_args() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    // Before login.
    let mut c = srv.connect();
    c.send(b"USER 5 alice\nhello");
    c.expect_err("bad-args");
    c.send(b"HELLO 3\nabc");
    c.expect_err("bad-args");
    c.ping();
    c.ack("USER 0 alice");
    // After login; each payload is consumed (it looks like a frame).
    for (ty, args) in [
        ("GROUPS", &[][..]),
        ("SUBSCRIBE", &["1"][..]),
        ("UNSUBSCRIBE", &["1"][..]),
        ("WATCH", &["1"][..]),
        ("UNWATCH", &["1"][..]),
        ("WHO", &[][..]),
        ("HELLO", &[][..]),
        ("PING", &[][..]),
        ("USER", &["alice"][..]),
        ("QUIT", &[][..]),
    ] {
        c.label = format!("alice sending {ty} {args:?} with a payload");
        c.send_frame(ty, args, b"PING 0\n");
        c.expect_err("bad-args");
    }
    c.label = String::from("alice");
    // The session goes on, and the failed SUBSCRIBE subscribed nothing.
    c.ping();
    let who = c.result("WHO 0 1");
    assert!(
        who.is_empty(),
        "no one is subscribed to group 1, got {who:?}"
    );
}

#[test]
fn crlf_and_empty_lines_are_accepted() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut c = srv.connect();
    c.send(b"\r\n\n\r\nUSER 0 alice\r\n\r\n");
    c.expect_ack();
    c.send(b"SUBSCRIBE 0 1\r\n");
    c.expect_ack();
    // As a person types it: the header, Enter, the payload, Enter.
    c.send(b"PUBLISH 5 1\r\nhello\r\n");
    c.expect_ack();
    c.expect_published("alice", &["1"], b"hello");
    c.send(b"PUBLISH 5 1\nworld\n\n");
    c.expect_ack();
    c.expect_published("alice", &["1"], b"world");
    c.send(b"PING 0\r\n");
    c.expect_pong();
    c.expect_quiet("the empty lines get no reply");
}

#[test]
fn lower_case_types_are_accepted_replies_upper_case() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut c = srv.connect();
    c.ack("user 0 alice");
    let hello = c.result("hello 0");
    assert!(hello.iter().any(|l| l == "protocol=1"), "{hello:?}");
    c.ack("Subscribe 0 1");
    c.send(b"publish 2 1\nhi");
    c.expect_ack();
    c.expect_published("alice", &["1"], b"hi");
    c.send_line("pInG 0");
    c.expect_pong();
    let groups = c.result("groups 0");
    assert_eq!(groups, ["1,general"]);
    c.ack("quit 0");
    c.expect_closed();
}

#[test]
fn pipelined_frames_get_replies_in_order() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut c = srv.connect();
    let mut batch = Vec::new();
    batch.extend_from_slice(b"USER 0 alice\nHELLO 0\nSUBSCRIBE 0 1\nPING 0\n");
    batch.extend_from_slice(b"PUBLISH 3 1\nabcGROUPS 0\nFOO 2\nxySUBSCRIBE 0 99\n");
    batch.extend_from_slice(b"WHO 0\nPONG 0\nSEND 2 alice\nhiSUBSCRIBE 0\n");
    for _ in 0..100 {
        batch.extend_from_slice(b"PING 0\n");
    }
    batch.extend_from_slice(b"QUIT 0\n");
    c.send(&batch);
    c.expect_ack(); // USER
    c.expect_result(); // HELLO
    c.expect_ack(); // SUBSCRIBE
    c.expect_pong();
    c.expect_ack(); // PUBLISH
    assert_eq!(c.expect_result_lines(), ["1,general"]);
    c.expect_err("unknown-command");
    c.expect_err("unknown-group");
    assert_eq!(c.expect_result_lines(), ["alice"]);
    // PONG gets no reply.
    c.expect_ack(); // SEND
    c.expect_err("bad-args");
    for _ in 0..100 {
        c.expect_pong();
    }
    c.expect_ack(); // QUIT
    // The pushes came in between, in order.
    c.expect_published("alice", &["1"], b"abc");
    c.expect_message("alice", b"hi");
    c.expect_closed();
}

#[test]
fn frames_split_into_single_bytes() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut c = srv.connect();
    let input = b"USER 0 alice\r\nSUBSCRIBE 0 1\n\r\nPUBLISH 11 1\nhello worldPING 0\r\n";
    for b in input {
        c.send(&[*b]);
        std::thread::sleep(std::time::Duration::from_micros(300));
    }
    c.expect_ack();
    c.expect_ack();
    c.expect_ack();
    c.expect_pong();
    c.expect_published("alice", &["1"], b"hello world");
    c.expect_quiet("one PUBLISH, one delivery");
}

#[test]
fn binary_payloads_of_all_byte_values() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1");
    let mut alice = srv.login("alice");
    let all: Vec<u8> = (0..=255u8).collect();
    let mut reversed = all.clone();
    reversed.reverse();
    let tricky = b"\n\r\nPING 0\nPUBLISHED 3 x 1\nabc\0\xff".to_vec();
    for payload in [&all, &reversed, &tricky] {
        alice.send_frame("PUBLISH", &["1"], payload);
        alice.expect_ack();
        bob.expect_published("alice", &["1"], payload);
        alice.send_frame("SEND", &["bob"], payload);
        alice.expect_ack();
        bob.expect_message("alice", payload);
    }
    // The streams stay in sync.
    alice.expect_quiet("after binary payloads");
    bob.expect_quiet("after binary payloads");
}

#[test]
fn empty_payloads() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1");
    let mut alice = srv.login("alice");
    alice.ack("PUBLISH 0 1");
    bob.expect_published("alice", &["1"], b"");
    alice.ack("SEND 0 bob");
    bob.expect_message("alice", b"");
    bob.expect_quiet("two empty messages only");
}
