//! The sending end of a direct peer connection: [`DialSession`], sans-IO,
//! and [`PeerLink`], the same over a blocking `std` socket with deadlines.
//!
//! The sender writes `MESSAGE LEN <sender>` + payload (and `PING 0`), and
//! the receiver answers each in order: `ACK`, `ERR code`, `PONG`
//! (protocol.md section 6). A `PING` from the receiver is answered with
//! `PONG`. Anything else (a frame that does not parse, a reply to nothing,
//! a push) is a [`PeerError::Protocol`] and sticky: the connection cannot be
//! trusted any more.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use super::PeerError;
use crate::error::ErrorCode;
use crate::proto::command::is_valid_user;
use crate::proto::frame;
use crate::proto::{Decoded, decode};

/// The largest reply payload (an `ACK` or `ERR` text) taken from a peer.
pub const MAX_REPLY_PAYLOAD: usize = 64 << 10;

/// Identifies one frame sent through a [`DialSession`]; its reply carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SentId(pub u64);

/// A receiving peer's answer to one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerReply {
    /// `ACK`: the message was taken; the text is for people.
    Ack(String),
    /// `ERR`: refused (`busy`, `too-large`, ...).
    Err {
        /// The `ERR` code.
        code: ErrorCode,
        /// The peer's sentence.
        text: String,
    },
    /// `PONG`, the answer to a `PING`.
    Pong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Ping,
}

/// The sending end of one peer connection, sans-IO: frames in, bytes out;
/// bytes in, replies out, matched to what was sent first in, first out.
#[derive(Debug, Default)]
pub struct DialSession {
    input: BytesMut,
    output: BytesMut,
    pending: VecDeque<(SentId, Kind)>,
    replies: VecDeque<(SentId, PeerReply)>,
    next_id: u64,
    /// An `ERR` that answered nothing: why the peer is closing.
    farewell: Option<(ErrorCode, String)>,
    /// Sticky: once set, the stream cannot be trusted.
    failed: Option<String>,
}

impl DialSession {
    /// A session for a new connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `MESSAGE LEN <sender>` + `payload`.
    ///
    /// # Errors
    ///
    /// [`PeerError::BadArgs`] (nothing queued) when `sender` is not a user
    /// name (1 to 64 of `A-Z a-z 0-9 . _ -`); [`PeerError::Protocol`] if
    /// the session has failed.
    pub fn send_message(&mut self, sender: &str, payload: &[u8]) -> Result<SentId, PeerError> {
        self.check()?;
        if !is_valid_user(sender.as_bytes()) {
            return Err(PeerError::BadArgs(format!(
                "invalid sender name {sender:?}: 1 to 64 of A-Z a-z 0-9 . _ -"
            )));
        }
        frame::encode(&mut self.output, "MESSAGE", &[sender.as_bytes()], payload);
        Ok(self.sent(Kind::Message))
    }

    /// Queues `PING 0`.
    ///
    /// # Errors
    ///
    /// [`PeerError::Protocol`] if the session has failed.
    pub fn send_ping(&mut self) -> Result<SentId, PeerError> {
        self.check()?;
        self.output.extend_from_slice(frame::PING);
        Ok(self.sent(Kind::Ping))
    }

    fn sent(&mut self, kind: Kind) -> SentId {
        let id = SentId(self.next_id);
        self.next_id += 1;
        self.pending.push_back((id, kind));
        id
    }

    fn check(&self) -> Result<(), PeerError> {
        match &self.failed {
            Some(why) => Err(PeerError::Protocol(why.clone())),
            None => Ok(()),
        }
    }

    /// The bytes to write next.
    pub fn transmit(&self) -> &[u8] {
        &self.output
    }

    /// Drops the first `n` bytes of [`DialSession::transmit`].
    pub fn advance_transmit(&mut self, n: usize) {
        self.output.advance(n.min(self.output.len()));
    }

    /// How many frames wait for their reply.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The next reply, with the id of the frame it answers.
    pub fn poll_reply(&mut self) -> Option<(SentId, PeerReply)> {
        self.replies.pop_front()
    }

    /// Takes bytes read, in any split.
    ///
    /// # Errors
    ///
    /// [`PeerError::Protocol`] for what a receiving peer may not send: a
    /// frame that does not parse, a reply payload over
    /// [`MAX_REPLY_PAYLOAD`], a reply to nothing, a `PONG` where a message's
    /// answer is due, an unknown frame or `ERR` code. Sticky.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), PeerError> {
        self.check()?;
        self.input.extend_from_slice(data);
        loop {
            let (consumed, outcome) = match decode(&self.input, MAX_REPLY_PAYLOAD) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    let outcome = match frame.verb().as_bytes() {
                        b"PING" if frame.arg_count() == 0 => {
                            self.output.extend_from_slice(frame::PONG);
                            Ok(None)
                        }
                        b"PONG" if frame.arg_count() == 0 => Ok(Some(PeerReply::Pong)),
                        b"ACK" if frame.arg_count() == 0 => Ok(Some(PeerReply::Ack(
                            String::from_utf8_lossy(frame.payload()).into_owned(),
                        ))),
                        b"ERR" => match (frame.arg_count(), frame.args().next()) {
                            (1, Some(token)) => match ErrorCode::from_token(token) {
                                Some(code) => Ok(Some(PeerReply::Err {
                                    code,
                                    text: String::from_utf8_lossy(frame.payload()).into_owned(),
                                })),
                                None => Err(format!(
                                    "unknown ERR code {:?}",
                                    String::from_utf8_lossy(token)
                                )),
                            },
                            _ => Err("ERR without exactly one code".to_string()),
                        },
                        _ => Err(format!(
                            "a peer sent {} where a reply was due",
                            frame.verb().as_str()
                        )),
                    };
                    (consumed, outcome)
                }
                Ok(Decoded::Incomplete { skip, .. }) => {
                    self.input.advance(skip.min(self.input.len()));
                    return Ok(());
                }
                Err(e) => (0, Err(format!("the peer's reply does not parse: {e}"))),
            };
            self.input.advance(consumed.min(self.input.len()));
            let result = match outcome {
                Ok(None) => Ok(()),
                Ok(Some(reply)) => self.match_reply(reply),
                Err(why) => Err(why),
            };
            if let Err(why) = result {
                self.failed = Some(why.clone());
                return Err(PeerError::Protocol(why));
            }
        }
    }

    fn match_reply(&mut self, reply: PeerReply) -> Result<(), String> {
        let Some(&(id, kind)) = self.pending.front() else {
            return match reply {
                PeerReply::Err { code, text } => {
                    self.farewell = Some((code, text));
                    Ok(())
                }
                _ => Err("a peer replied to nothing".to_string()),
            };
        };
        match (&reply, kind) {
            (PeerReply::Pong, Kind::Message) => Err("PONG where a message's reply was due".into()),
            (PeerReply::Ack(_), Kind::Ping) => Err("ACK where a PONG was due".into()),
            _ => {
                self.pending.pop_front();
                self.replies.push_back((id, reply));
                Ok(())
            }
        }
    }

    /// The peer closed its side.
    ///
    /// # Errors
    ///
    /// With frames still unanswered: [`PeerError::Refused`] if the peer said
    /// why (an `ERR` that answered nothing, such as `server-full`),
    /// [`PeerError::Closed`] otherwise.
    pub fn handle_eof(&mut self) -> Result<(), PeerError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        Err(match self.farewell.take() {
            Some((code, text)) => PeerError::Refused { code, text },
            None => PeerError::Closed,
        })
    }
}

/// A connection to another peer over a blocking socket: each call sends one
/// frame and waits for its answer, at most the link's timeout.
#[derive(Debug)]
pub struct PeerLink {
    stream: TcpStream,
    session: DialSession,
    peer: SocketAddr,
    timeout: Duration,
}

impl PeerLink {
    /// Connects to `addr` within `timeout`, which also bounds every later
    /// call (write and reply together).
    ///
    /// # Errors
    ///
    /// [`PeerError::Io`] (refused, unreachable), [`PeerError::Timeout`].
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, PeerError> {
        let timeout = timeout.max(Duration::from_millis(1));
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(io_error)?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            session: DialSession::new(),
            peer: addr,
            timeout,
        })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Sends `MESSAGE LEN <sender>` + `payload` and waits for its `ACK`;
    /// returns the ACK's text.
    ///
    /// # Errors
    ///
    /// [`PeerError::Refused`] (the peer's `ERR`: `busy`, `too-large`, ...),
    /// [`PeerError::Timeout`], [`PeerError::Closed`], [`PeerError::Io`],
    /// [`PeerError::Protocol`], [`PeerError::BadArgs`] (an invalid sender
    /// name; nothing sent).
    pub fn message(&mut self, sender: &str, payload: &[u8]) -> Result<String, PeerError> {
        let id = self.session.send_message(sender, payload)?;
        match self.exchange(id)? {
            PeerReply::Ack(text) => Ok(text),
            PeerReply::Err { code, text } => Err(PeerError::Refused { code, text }),
            PeerReply::Pong => Err(PeerError::Protocol("PONG answered a message".into())),
        }
    }

    /// Sends `PING 0` and waits for `PONG`; returns the round trip.
    ///
    /// # Errors
    ///
    /// As [`PeerLink::message`].
    pub fn ping(&mut self) -> Result<Duration, PeerError> {
        let start = Instant::now();
        let id = self.session.send_ping()?;
        match self.exchange(id)? {
            PeerReply::Pong => Ok(start.elapsed()),
            PeerReply::Err { code, text } => Err(PeerError::Refused { code, text }),
            PeerReply::Ack(_) => Err(PeerError::Protocol("ACK answered a PING".into())),
        }
    }

    /// Writes what is queued and reads until `id` is answered.
    fn exchange(&mut self, id: SentId) -> Result<PeerReply, PeerError> {
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; 4096];
        loop {
            while !self.session.transmit().is_empty() {
                self.stream
                    .set_write_timeout(Some(remaining(deadline)?))
                    .map_err(io_error)?;
                match self.stream.write(self.session.transmit()) {
                    Ok(0) => return Err(PeerError::Closed),
                    Ok(n) => self.session.advance_transmit(n),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_error(e)),
                }
            }
            while let Some((got, reply)) = self.session.poll_reply() {
                if got == id {
                    return Ok(reply);
                }
            }
            self.stream
                .set_read_timeout(Some(remaining(deadline)?))
                .map_err(io_error)?;
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.session.handle_eof()?;
                    return Err(PeerError::Closed);
                }
                Ok(n) => self.session.handle_input(&buf[..n])?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
    }

    /// Closes the connection (both directions).
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The time left until `deadline`, or [`PeerError::Timeout`].
fn remaining(deadline: Instant) -> Result<Duration, PeerError> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(PeerError::Timeout),
    }
}

/// A socket error, with timeouts told apart.
fn io_error(e: io::Error) -> PeerError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => PeerError::Timeout,
        _ => PeerError::Io(e),
    }
}

/// Connects to the peer at `addr`, delivers one `MESSAGE` from `sender` and
/// waits for its `ACK`, all within `timeout`; returns the ACK's text.
///
/// # Errors
///
/// As [`PeerLink::connect`] and [`PeerLink::message`].
pub fn deliver(
    addr: SocketAddr,
    sender: &str,
    payload: &[u8],
    timeout: Duration,
) -> Result<String, PeerError> {
    let start = Instant::now();
    if !is_valid_user(sender.as_bytes()) {
        return Err(PeerError::BadArgs(format!(
            "invalid sender name {sender:?}: 1 to 64 of A-Z a-z 0-9 . _ -"
        )));
    }
    let mut link = PeerLink::connect(addr, timeout)?;
    link.timeout = timeout.saturating_sub(start.elapsed());
    let ack = link.message(sender, payload)?;
    link.close();
    Ok(ack)
}

/// Connects to the peer at `addr`, sends `PING 0` and waits for `PONG 0`
/// within `timeout`, as the directory server's probe does; returns the
/// round trip (connect included).
///
/// # Errors
///
/// As [`PeerLink::connect`] and [`PeerLink::ping`].
pub fn ping(addr: SocketAddr, timeout: Duration) -> Result<Duration, PeerError> {
    let start = Instant::now();
    let mut link = PeerLink::connect(addr, timeout)?;
    link.timeout = timeout.saturating_sub(start.elapsed());
    link.ping()?;
    link.close();
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(s: &mut DialSession) -> Vec<(SentId, PeerReply)> {
        std::iter::from_fn(|| s.poll_reply()).collect()
    }

    #[test]
    fn encodes_and_matches_replies_at_every_split() {
        let input: &[u8] = b"ACK 9\ndeliveredPING 0\r\n\r\nPONG 0\nERR 4 busy\nfull";
        for cut in 0..=input.len() {
            let mut s = DialSession::new();
            let a = s.send_message("alice", b"hi\n").expect("valid");
            let b = s.send_ping().expect("valid");
            let c = s.send_message("alice", b"").expect("valid");
            assert_eq!(
                s.transmit(),
                b"MESSAGE 3 alice\nhi\nPING 0\nMESSAGE 0 alice\n"
            );
            s.advance_transmit(usize::MAX);
            s.handle_input(&input[..cut]).expect("valid");
            s.handle_input(&input[cut..]).expect("valid");
            assert_eq!(
                replies(&mut s),
                vec![
                    (a, PeerReply::Ack("delivered".into())),
                    (b, PeerReply::Pong),
                    (
                        c,
                        PeerReply::Err {
                            code: ErrorCode::Busy,
                            text: "full".into()
                        }
                    ),
                ],
                "cut at {cut}"
            );
            // The receiver's PING got its PONG.
            assert_eq!(s.transmit(), b"PONG 0\n");
            assert_eq!(s.in_flight(), 0);
            assert!(s.handle_eof().is_ok());
        }
    }

    #[test]
    fn a_bad_sender_name_is_refused_locally() {
        let mut s = DialSession::new();
        for name in ["", "no one", "a,b", &"x".repeat(65)] {
            assert!(matches!(
                s.send_message(name, b"x"),
                Err(PeerError::BadArgs(_))
            ));
        }
        assert!(s.transmit().is_empty());
    }

    #[test]
    fn what_a_receiver_may_not_send_is_a_sticky_protocol_error() {
        for input in [
            &b"RESULT 0\n"[..],
            b"PONG 0\n",
            b"ACK 0\nACK 0\n",
            b"ERR 1 nope\nx",
            b"ERR 1\nx",
            b"MESSAGE 1 bob\nx",
            b"\x16\x03\x01",
            b"ACK 65537\n",
            b"ACK 0 x\n",
        ] {
            let mut s = DialSession::new();
            s.send_message("a", b"x").expect("valid");
            assert!(
                matches!(s.handle_input(input), Err(PeerError::Protocol(_))),
                "{input:?}"
            );
            assert!(matches!(s.handle_input(b""), Err(PeerError::Protocol(_))));
            assert!(matches!(s.send_ping(), Err(PeerError::Protocol(_))));
        }
    }

    #[test]
    fn a_farewell_err_explains_the_close() {
        let mut s = DialSession::new();
        s.send_message("a", b"x").expect("valid");
        s.handle_input(b"ERR 4 timeout\nslow").expect("valid");
        // The ERR answered the message (first in, first out).
        assert!(matches!(
            replies(&mut s).as_slice(),
            [(
                _,
                PeerReply::Err {
                    code: ErrorCode::Timeout,
                    ..
                }
            )]
        ));
        // An ERR with nothing in flight is kept to explain the end.
        s.handle_input(b"ERR 3 shutting-down\nbye").expect("valid");
        assert!(s.handle_eof().is_ok());
        s.send_ping().expect("valid");
        assert!(matches!(
            s.handle_eof(),
            Err(PeerError::Refused {
                code: ErrorCode::ShuttingDown,
                ..
            })
        ));
        let mut s = DialSession::new();
        s.send_ping().expect("valid");
        assert!(matches!(s.handle_eof(), Err(PeerError::Closed)));
    }

    #[test]
    fn random_replies_never_panic() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let base: &[u8] = b"ACK 9\ndeliveredPING 0\nPONG 0\nERR 4 busy\nfull";
        for _ in 0..20_000 {
            let mut input = base.to_vec();
            for _ in 0..=(next() % 3) {
                let at = (next() as usize) % input.len();
                input[at] = next() as u8;
            }
            let mut s = DialSession::new();
            let _ = s.send_message("a", b"x");
            let _ = s.send_ping();
            let _ = s.send_message("a", b"y");
            for chunk in input.chunks(1 + (next() as usize) % 8) {
                let _ = s.handle_input(chunk);
            }
            let _ = replies(&mut s);
            let _ = s.handle_eof();
        }
    }
}
