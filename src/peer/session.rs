//! The receiving end of one direct peer connection, sans-IO: bytes in,
//! events and bytes out (protocol.md section 6).
//!
//! A peer connection has no login: whoever connects may send, in any order,
//!
//! - `PING 0` → `PONG 0` (the directory server's probe is exactly this, on a
//!   fresh connection);
//! - `PONG 0` → nothing;
//! - `MESSAGE LEN <sender>` + payload → [`PeerEvent::Message`], answered
//!   `ACK` (or `ERR`) once the program's side has said whether it took the
//!   message ([`PeerSession::answer`]);
//! - `HELLO 0` → `RESULT` (`server=switchboard`, `role=peer`, `protocol=1`,
//!   `max_payload=N`), `QUIT 0` → `ACK`, then the session closes.
//!
//! Anything else well-formed gets `ERR unknown-command` or `ERR bad-args`
//! and the session goes on; a header that does not parse gets `ERR
//! bad-frame`, a LEN over the payload limit `ERR too-large`, and the session
//! closes (the stream cannot be resynchronised), as with the server.
//!
//! Nothing is reserved for a LEN a peer declares: the input grows only with
//! bytes that arrive, and it is never longer than one header plus the
//! payload limit ([`PeerSession::wants_read`] turns false before that). A
//! session that completes no frame for the idle timeout is sent `ERR
//! timeout` and closed ([`PeerSession::handle_timeout`]).

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{ErrorCode, FrameError};
use crate::proto::command::{Command, CommandError, is_valid_user};
use crate::proto::frame::{self, MAX_HEADER_LEN};
use crate::proto::{Decoded, Frame, decode};

/// Above this many unsent bytes the session stops taking input (a peer that
/// sends requests and reads no replies is read no further).
pub const OUTPUT_PAUSE: usize = 16 << 10;

/// The limits one session enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// The largest `MESSAGE` payload taken (larger: `ERR too-large`, close).
    pub max_payload: usize,
    /// How long a connection may go without completing a frame.
    pub idle_timeout: Duration,
}

impl Default for SessionLimits {
    /// 1 MiB (the server's default payload limit), 30 s.
    fn default() -> Self {
        Self {
            max_payload: frame::DEFAULT_MAX_PAYLOAD,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// What a [`PeerSession`] hands to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A `MESSAGE` from `sender`. The session waits for
    /// [`PeerSession::answer`] before it decodes anything more: the reply
    /// (`ACK`, or the refusal) keeps its place in the order of replies.
    Message {
        /// The name the peer gave (a valid user name; not proven).
        sender: String,
        /// The message.
        payload: Bytes,
    },
    /// A `PING`, already answered with `PONG` (for counting and logs).
    Ping,
}

/// Why a session ended (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `QUIT`.
    Quit,
    /// A header that does not parse, or a LEN over the limit.
    BadFrame(FrameError),
    /// No whole frame within the idle timeout.
    Timeout,
    /// The peer closed its side.
    PeerClosed,
    /// The peer closed its side in the middle of a frame.
    Truncated,
}

/// The receiving end of one peer connection, sans-IO.
///
/// 1. [`PeerSession::handle_input`] takes bytes read, in any split
///    (while [`PeerSession::wants_read`]), [`PeerSession::handle_eof`] the
///    end of the peer's stream;
/// 2. [`PeerSession::poll_event`] decodes what it can and hands out each
///    message (answer it with [`PeerSession::answer`]) and each ping;
/// 3. [`PeerSession::transmit`] / [`PeerSession::advance_transmit`] are
///    the bytes to write;
/// 4. [`PeerSession::next_deadline`] / [`PeerSession::handle_timeout`] the
///    idle timeout; [`PeerSession::is_finished`] says when the connection
///    may be shut down (everything owed has been handed to `transmit`).
#[derive(Debug)]
pub struct PeerSession {
    limits: SessionLimits,
    input: BytesMut,
    output: BytesMut,
    /// The payload length of the last frame decoded (for
    /// [`FrameError::after_payload`]).
    previous_len: u64,
    /// A message handed out and not yet answered.
    awaiting: bool,
    /// When the last whole frame arrived (or the session began).
    last_frame: Instant,
    /// The peer's stream ended.
    eof: bool,
    ending: Option<Ending>,
}

impl PeerSession {
    /// A session for a connection accepted at `now`.
    pub fn new(limits: SessionLimits, now: Instant) -> Self {
        Self {
            limits,
            input: BytesMut::new(),
            output: BytesMut::new(),
            previous_len: 0,
            awaiting: false,
            last_frame: now,
            eof: false,
            ending: None,
        }
    }

    /// The most input a session holds: one header and one payload.
    fn max_input(&self) -> usize {
        MAX_HEADER_LEN.saturating_add(self.limits.max_payload)
    }

    /// Whether the connection should be read: not closing, no message
    /// waiting for its answer, the replies owed under [`OUTPUT_PAUSE`],
    /// and room for more input.
    pub fn wants_read(&self) -> bool {
        self.ending.is_none()
            && !self.eof
            && !self.awaiting
            && self.output.len() < OUTPUT_PAUSE
            && self.input.len() < self.max_input()
    }

    /// How many bytes the next read may bring: 0 unless
    /// [`PeerSession::wants_read`], else what is left of one header plus
    /// the payload limit. Read at most this much: more is discarded by
    /// [`PeerSession::handle_input`].
    pub fn room(&self) -> usize {
        if self.wants_read() {
            self.max_input().saturating_sub(self.input.len())
        } else {
            0
        }
    }

    /// Takes bytes read from the connection. Input after the session has
    /// decided to close is discarded; so is input beyond one header plus the
    /// payload limit (a caller that reads more than [`PeerSession::room`]).
    pub fn handle_input(&mut self, data: &[u8]) {
        if self.ending.is_some() || self.eof {
            return;
        }
        let room = self.max_input().saturating_sub(self.input.len());
        let data = data.get(..room.min(data.len())).unwrap_or_default();
        self.input.extend_from_slice(data);
    }

    /// The peer closed its side of the stream: whole frames still in the
    /// input are handled (a `PING` followed at once by a close still gets
    /// its `PONG`), then the session ends.
    pub fn handle_eof(&mut self) {
        self.eof = true;
    }

    /// The next event, decoding input as needed; `now` is when the bytes
    /// were read (a whole frame resets the idle timeout). `None` while a
    /// message waits for [`PeerSession::answer`], or when no whole frame
    /// is left.
    pub fn poll_event(&mut self, now: Instant) -> Option<PeerEvent> {
        while self.ending.is_none() && !self.awaiting {
            // Out of `self` while a frame borrows it (a move, not a copy).
            let input = std::mem::take(&mut self.input);
            let decoded = decode(&input, self.limits.max_payload);
            let (consumed, event) = match decoded {
                Ok(Decoded::Frame { frame, consumed }) => {
                    self.last_frame = now;
                    self.previous_len = frame.payload().len() as u64;
                    let event = self.execute(&frame);
                    self.input = input;
                    (consumed, event)
                }
                Ok(Decoded::Incomplete { skip, .. }) => {
                    self.input = input;
                    self.input.advance(skip.min(self.input.len()));
                    if self.eof {
                        self.end(if self.input.is_empty() {
                            Ending::PeerClosed
                        } else {
                            Ending::Truncated
                        });
                    }
                    return None;
                }
                Err(e) => {
                    let e = e.after_payload(self.previous_len);
                    self.output
                        .extend_from_slice(&frame::err(e.code(), &e.to_string()));
                    self.end(Ending::BadFrame(e));
                    return None;
                }
            };
            self.input.advance(consumed.min(self.input.len()));
            if let Some(event) = event {
                return Some(event);
            }
        }
        None
    }

    /// Answers the message last handed out: `Ok` is `ACK`, `Err` the
    /// refusal (`ERR busy` when the program's queue is full, say). An
    /// answer with no message waiting is ignored.
    pub fn answer(&mut self, verdict: Result<(), (ErrorCode, &str)>) {
        if !std::mem::take(&mut self.awaiting) {
            return;
        }
        let reply = match verdict {
            Ok(()) => frame::ack("delivered"),
            Err((code, text)) => frame::err(code, text),
        };
        self.output.extend_from_slice(&reply);
    }

    /// One frame: its reply queued, its event returned.
    fn execute(&mut self, frame: &Frame<'_>) -> Option<PeerEvent> {
        if frame.verb().as_bytes() == b"MESSAGE" {
            let mut args = frame.args();
            return match (frame.arg_count(), args.next()) {
                (1, Some(sender)) if is_valid_user(sender) => {
                    self.awaiting = true;
                    Some(PeerEvent::Message {
                        sender: String::from_utf8_lossy(sender).into_owned(),
                        payload: Bytes::copy_from_slice(frame.payload()),
                    })
                }
                _ => {
                    self.reply_err(
                        ErrorCode::BadArgs,
                        "usage: MESSAGE LEN <sender> (a user name: 1 to 64 of A-Z a-z 0-9 . _ -)",
                    );
                    None
                }
            };
        }
        match Command::from_frame(frame) {
            Ok(Command::Ping) => {
                self.output.extend_from_slice(frame::PONG);
                Some(PeerEvent::Ping)
            }
            Ok(Command::Pong) => None,
            Ok(Command::Hello) => {
                let text = format!(
                    "server=switchboard\nrole=peer\nversion={}\nprotocol=1\nmax_payload={}\n",
                    env!("CARGO_PKG_VERSION"),
                    self.limits.max_payload
                );
                self.output
                    .extend_from_slice(&frame::result(text.as_bytes()));
                None
            }
            Ok(Command::Quit) => {
                self.output.extend_from_slice(&frame::ack("bye"));
                self.end(Ending::Quit);
                None
            }
            // A malformed PONG gets no reply, like any PONG.
            Err(CommandError::BadArgs(_)) if frame.verb().as_bytes() == b"PONG" => None,
            Err(CommandError::BadArgs(why)) => {
                self.reply_err(ErrorCode::BadArgs, why);
                None
            }
            Ok(_) | Err(CommandError::Unknown) => {
                let text = format!(
                    "unknown command {} (a peer takes MESSAGE, PING, PONG, HELLO and QUIT)",
                    frame.verb().as_str()
                );
                self.reply_err(ErrorCode::UnknownCommand, &text);
                None
            }
        }
    }

    fn reply_err(&mut self, code: ErrorCode, text: &str) {
        self.output.extend_from_slice(&frame::err(code, text));
    }

    fn end(&mut self, why: Ending) {
        if self.ending.is_none() {
            self.ending = Some(why);
            self.input = BytesMut::new();
        }
    }

    /// The bytes to write next (empty when there are none).
    pub fn transmit(&self) -> &[u8] {
        &self.output
    }

    /// Drops the first `n` bytes of [`PeerSession::transmit`] (at most all).
    pub fn advance_transmit(&mut self, n: usize) {
        self.output.advance(n.min(self.output.len()));
    }

    /// When [`PeerSession::handle_timeout`] should be called next (`None`
    /// once the session is ending).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.ending.is_some() {
            return None;
        }
        self.last_frame.checked_add(self.limits.idle_timeout)
    }

    /// When the last whole frame arrived (or the session began): the
    /// quietest session is the one to make room for a new connection.
    pub fn last_frame(&self) -> Instant {
        self.last_frame
    }

    /// Ends the session with `ERR timeout` if no whole frame arrived within
    /// the idle timeout before `now`; returns whether it did.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.next_deadline() {
            Some(deadline) if now >= deadline && !self.awaiting => {
                let text = format!(
                    "no whole frame in {} s; closing",
                    self.limits.idle_timeout.as_secs()
                );
                self.reply_err(ErrorCode::Timeout, &text);
                self.end(Ending::Timeout);
                true
            }
            _ => false,
        }
    }

    /// Ends the session at once with `ERR code text` (the endpoint is
    /// stopping, or making room); the text is queued like any reply.
    pub fn close_with(&mut self, code: ErrorCode, text: &str) {
        if self.ending.is_none() {
            self.reply_err(code, text);
            self.end(Ending::PeerClosed);
        }
    }

    /// Why the session ended, once it has.
    pub fn ending(&self) -> Option<Ending> {
        self.ending
    }

    /// Whether the connection is done: the session has ended and every byte
    /// it owes has been taken from [`PeerSession::transmit`].
    pub fn is_finished(&self) -> bool {
        self.ending.is_some() && self.output.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SessionLimits {
        SessionLimits {
            max_payload: 64,
            idle_timeout: Duration::from_secs(30),
        }
    }

    /// Feeds `input` in pieces of `step` bytes, acknowledging every message
    /// (refusing those whose text is "refuse"), then the end of the stream;
    /// returns the events and everything written.
    fn run(input: &[u8], step: usize) -> (Vec<PeerEvent>, Vec<u8>, Option<Ending>) {
        let now = Instant::now();
        let mut s = PeerSession::new(limits(), now);
        let mut events = Vec::new();
        let mut out = Vec::new();
        let mut drain = |s: &mut PeerSession, events: &mut Vec<PeerEvent>| {
            while let Some(e) = s.poll_event(now) {
                if let PeerEvent::Message { payload, .. } = &e {
                    if &payload[..] == b"refuse" {
                        s.answer(Err((ErrorCode::Busy, "full")));
                    } else {
                        s.answer(Ok(()));
                    }
                }
                events.push(e);
            }
            out.extend_from_slice(s.transmit());
            let n = s.transmit().len();
            s.advance_transmit(n);
        };
        for chunk in input.chunks(step.max(1)) {
            s.handle_input(chunk);
            drain(&mut s, &mut events);
        }
        s.handle_eof();
        drain(&mut s, &mut events);
        assert!(s.is_finished(), "ended after EOF: {:?}", s.ending());
        (events, out, s.ending())
    }

    fn msg(sender: &str, payload: &[u8]) -> PeerEvent {
        PeerEvent::Message {
            sender: sender.into(),
            payload: Bytes::copy_from_slice(payload),
        }
    }

    const STREAM: &[u8] = b"PING 0\n\
        MESSAGE 2 alice\nhi\
        \r\n\
        message 7 bob.b\n\x00\nline\n\
        PONG 0\n\
        HELLO 0\n\
        MESSAGE 6 carol\nrefuse\
        MESSAGE 0 dave\n\
        QUIT 0\n\
        MESSAGE 2 eve\nno";

    fn expected_out() -> String {
        let hello = format!(
            "server=switchboard\nrole=peer\nversion={}\nprotocol=1\nmax_payload=64\n",
            env!("CARGO_PKG_VERSION")
        );
        format!(
            "PONG 0\nACK 9\ndeliveredACK 9\ndeliveredRESULT {}\n{hello}ERR 4 busy\nfull\
             ACK 9\ndeliveredACK 3\nbye",
            hello.len()
        )
    }

    #[test]
    fn a_stream_at_every_split_and_byte_by_byte() {
        let want_events = vec![
            PeerEvent::Ping,
            msg("alice", b"hi"),
            msg("bob.b", b"\x00\nline\n"),
            msg("carol", b"refuse"),
            msg("dave", b""),
        ];
        for step in 1..=STREAM.len() {
            let (events, out, ending) = run(STREAM, step);
            assert_eq!(events, want_events, "step {step}");
            assert_eq!(String::from_utf8_lossy(&out), expected_out(), "step {step}");
            assert_eq!(ending, Some(Ending::Quit));
        }
    }

    #[test]
    fn the_servers_probe_gets_its_pong_even_when_the_peer_closes_at_once() {
        let (events, out, ending) = run(b"PING 0\n", 7);
        assert_eq!(events, vec![PeerEvent::Ping]);
        assert_eq!(out, b"PONG 0\n");
        assert_eq!(ending, Some(Ending::PeerClosed));
        // CR LF, as nc -C sends it.
        let (_, out, _) = run(b"PING 0\r\n", 1);
        assert_eq!(out, b"PONG 0\n");
    }

    #[test]
    fn refusals_keep_the_session() {
        for (input, want) in [
            (&b"MESSAGE 1\nx"[..], " bad-args\n"),
            (b"MESSAGE 1 a b\nx", " bad-args\n"),
            (b"MESSAGE 1 no@name\nx", " bad-args\n"),
            (b"PING 0 x\n", " bad-args\n"),
            (b"PUBLISH 1 1\nx", " unknown-command\n"),
            (b"USER 0 alice\n", " unknown-command\n"),
            (b"SEND 1 bob\nx", " unknown-command\n"),
            (b"BOGUS 3\nabc", " unknown-command\n"),
        ] {
            let mut stream = input.to_vec();
            stream.extend_from_slice(b"PING 0\n");
            let (events, out, ending) = run(&stream, 3);
            let out = String::from_utf8_lossy(&out).into_owned();
            assert!(
                out.starts_with("ERR ")
                    && out
                        .split('\n')
                        .next()
                        .is_some_and(|h| h.ends_with(want.trim_end())),
                "{input:?}: {out:?}"
            );
            assert!(out.ends_with("PONG 0\n"), "{input:?}: {out:?}");
            assert_eq!(events, vec![PeerEvent::Ping], "{input:?}");
            assert_eq!(ending, Some(Ending::PeerClosed));
        }
        // A malformed PONG gets nothing, like any PONG.
        let (_, out, _) = run(b"PONG 0 x\nPING 0\n", 1);
        assert_eq!(out, b"PONG 0\n");
    }

    #[test]
    fn bad_frames_and_large_payloads_end_the_session() {
        for (input, code) in [
            (&b"\x16\x03\x01\x02\x00"[..], "bad-frame"),
            (b"GET / HTTP/1.1\r\n", "bad-frame"),
            (b"MESSAGE 65 alice\n", "too-large"),
            (b"MESSAGE 99999999999 alice\n", "bad-frame"),
            // LEN one short: the payload's tail is taken for a header.
            (b"MESSAGE 1 alice\nx1yz\n", "bad-frame"),
        ] {
            for step in [1, 2, input.len()] {
                let (events, out, ending) = run(input, step);
                let out = String::from_utf8_lossy(&out).into_owned();
                let err = out.find("ERR ").map(|at| &out[at..]).unwrap_or_default();
                assert!(
                    err.split('\n').next().is_some_and(|h| h.ends_with(code)),
                    "{input:?}: {out:?}"
                );
                assert!(matches!(ending, Some(Ending::BadFrame(_))), "{input:?}");
                // Only the message before the bad header, if any.
                assert!(events.len() <= 1, "{input:?}: {events:?}");
            }
        }
        // Input after the end is not read.
        let mut s = PeerSession::new(limits(), Instant::now());
        s.handle_input(b"\x00\x01");
        assert!(s.poll_event(Instant::now()).is_none());
        assert!(!s.wants_read());
        s.handle_input(b"PING 0\n");
        assert!(s.poll_event(Instant::now()).is_none());
        assert!(!String::from_utf8_lossy(s.transmit()).contains("PONG"));
    }

    #[test]
    fn a_stream_cut_inside_a_frame_ends_quietly() {
        let (events, out, ending) = run(b"PING 0\nMESSAGE 5 alice\nhel", 4);
        assert_eq!(events, vec![PeerEvent::Ping]);
        assert_eq!(out, b"PONG 0\n");
        assert_eq!(ending, Some(Ending::Truncated));
    }

    #[test]
    fn a_message_waits_for_its_answer_and_input_pauses() {
        let now = Instant::now();
        let mut s = PeerSession::new(limits(), now);
        s.handle_input(b"MESSAGE 1 a\nxPING 0\n");
        assert_eq!(s.poll_event(now), Some(msg("a", b"x")));
        // Nothing more is decoded (the PING waits behind the answer).
        assert!(!s.wants_read());
        assert_eq!(s.poll_event(now), None);
        assert!(s.transmit().is_empty());
        s.answer(Ok(()));
        assert_eq!(s.poll_event(now), Some(PeerEvent::Ping));
        assert_eq!(s.transmit(), b"ACK 9\ndeliveredPONG 0\n");
        // A stray answer changes nothing.
        s.answer(Err((ErrorCode::Busy, "x")));
        assert_eq!(s.transmit(), b"ACK 9\ndeliveredPONG 0\n");
    }

    #[test]
    fn unread_replies_pause_the_input() {
        let now = Instant::now();
        let mut s = PeerSession::new(limits(), now);
        let pings = b"PING 0\n".repeat(100);
        let mut rounds = 0;
        while s.wants_read() {
            rounds += 1;
            assert!(rounds < 1000, "never paused");
            let room = s.room();
            s.handle_input(&pings[..room.min(pings.len())]);
            while s.poll_event(now).is_some() {}
        }
        assert!(s.transmit().len() >= OUTPUT_PAUSE);
        assert_eq!(s.room(), 0);
        s.advance_transmit(s.transmit().len());
        assert!(s.wants_read());
    }

    #[test]
    fn input_is_bounded_by_one_header_and_one_payload() {
        let now = Instant::now();
        let mut s = PeerSession::new(limits(), now);
        // A header without its LF, 4 KiB and more: refused once it is too long.
        s.handle_input(&[b'A'; 10_000]);
        assert!(s.input.len() <= MAX_HEADER_LEN + 64);
        assert!(s.poll_event(now).is_none());
        assert!(matches!(s.ending(), Some(Ending::BadFrame(_))));
        // A long argument list that is nearly a whole header, then a payload
        // that trickles in: the input never passes the bound.
        let mut s = PeerSession::new(limits(), now);
        s.handle_input(b"MESSAGE 64 alice\n");
        for _ in 0..200 {
            if s.wants_read() {
                s.handle_input(b"x");
            }
            let _ = s.poll_event(now);
        }
        assert!(s.input.len() <= MAX_HEADER_LEN + 64);
    }

    #[test]
    fn idle_and_slow_peers_time_out() {
        let start = Instant::now();
        let mut s = PeerSession::new(limits(), start);
        assert_eq!(s.next_deadline(), Some(start + Duration::from_secs(30)));
        // A frame trickled byte by byte does not count as activity...
        s.handle_input(b"PIN");
        assert!(s.poll_event(start + Duration::from_secs(20)).is_none());
        assert!(!s.handle_timeout(start + Duration::from_secs(29)));
        // ...a whole one does.
        s.handle_input(b"G 0\n");
        assert_eq!(
            s.poll_event(start + Duration::from_secs(29)),
            Some(PeerEvent::Ping)
        );
        assert!(!s.handle_timeout(start + Duration::from_secs(58)));
        assert!(s.handle_timeout(start + Duration::from_secs(59)));
        assert_eq!(s.ending(), Some(Ending::Timeout));
        let out = String::from_utf8_lossy(s.transmit()).into_owned();
        assert!(
            out.ends_with("ERR 31 timeout\nno whole frame in 30 s; closing"),
            "{out}"
        );
        assert_eq!(s.next_deadline(), None);
        assert!(!s.is_finished());
        s.advance_transmit(usize::MAX);
        assert!(s.is_finished());
    }

    #[test]
    fn close_with_queues_the_farewell() {
        let mut s = PeerSession::new(limits(), Instant::now());
        s.close_with(ErrorCode::ShuttingDown, "bye");
        assert_eq!(s.transmit(), b"ERR 3 shutting-down\nbye");
        s.close_with(ErrorCode::ServerFull, "again");
        assert_eq!(s.transmit(), b"ERR 3 shutting-down\nbye");
    }

    #[test]
    fn random_input_never_panics_and_stays_bounded() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let now = Instant::now();
        for round in 0..20_000 {
            let mut input = STREAM.to_vec();
            for _ in 0..=(next() % 4) {
                let at = (next() as usize) % input.len();
                input[at] = next() as u8;
            }
            if round % 3 == 0 {
                input.truncate((next() as usize) % input.len());
            }
            let mut s = PeerSession::new(limits(), now);
            let step = 1 + (next() as usize) % 16;
            for chunk in input.chunks(step) {
                s.handle_input(chunk);
                while let Some(e) = s.poll_event(now) {
                    if matches!(e, PeerEvent::Message { .. }) {
                        s.answer(Ok(()));
                    }
                }
                assert!(s.input.len() <= MAX_HEADER_LEN + 64);
            }
            s.handle_eof();
            while s.poll_event(now).is_some() {
                s.answer(Ok(()));
            }
            assert!(s.ending().is_some(), "{input:?}");
        }
    }
}
