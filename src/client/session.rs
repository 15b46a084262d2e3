//! The client's protocol core, sans-IO: requests in, bytes out; bytes in,
//! replies and pushes out.
//!
//! [`ClientSession`] never sees a socket, a clock or a TLS library. The
//! background thread of [`Client`](super::Client) steps it, and so can a
//! program with its own event loop:
//!
//! 1. [`ClientSession::send_request`] encodes a [`Request`] into the output
//!    buffer and returns its [`RequestId`];
//! 2. [`ClientSession::transmit`] is what should be written to the
//!    connection next, [`ClientSession::advance_transmit`] drops what was
//!    written;
//! 3. [`ClientSession::handle_input`] takes the bytes read, in any split;
//! 4. [`ClientSession::poll_event`] hands out, in arrival order, each reply
//!    (tagged with the id of the request it answers) and each pushed frame.
//!
//! Replies are matched to requests first in, first out: the contract
//! (protocol.md section 2) gives every frame exactly one reply, in order,
//! except `PONG`. A `PING` from the server is answered with `PONG` here,
//! without the caller's help. Anything the contract does not allow from a
//! server (a frame that does not parse, a reply nobody asked for, an unknown
//! push) is a [`ClientError::Protocol`], and it is sticky: a byte stream that
//! lost its framing cannot be trusted again, so the connection must be closed.

use std::collections::{BTreeSet, VecDeque};

use bytes::{Buf, Bytes, BytesMut};

use super::{ClientError, Push};
use crate::error::ErrorCode;
use crate::proto::command::{Command, CommandError, parse_group};
use crate::proto::frame::{self, Frame};
use crate::proto::{Decoded, decode};

/// The largest payload the client accepts from a server: 16 MiB.
///
/// The server's own limit (`max_payload` in `HELLO`) is not known before the
/// client asks, and a server may use a limit above the 1 MiB default, so the
/// client accepts a generous fixed cap instead. It still bounds what a hostile
/// server can make the client buffer.
pub const MAX_SERVER_PAYLOAD: usize = 16 << 20;

/// Identifies one request sent through a [`ClientSession`]; its reply carries
/// the same id. Ids grow by one per request and are never reused by a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A request a client sends; each gets exactly one [`Reply`], except
/// [`Request::Pong`].
///
/// It is the owned form of the server's [`Command`]: the same type as
/// [`OwnedCommand`](crate::proto::OwnedCommand), encoded by the same code, which the round-trip tests of
/// `proto::command` cover.
#[doc(inline)]
pub use crate::proto::command::OwnedCommand as Request;

/// A server's reply to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `ACK`: done; the text is for people.
    Ack(String),
    /// `RESULT`: done, with data (lines, per command).
    Result(Bytes),
    /// `ERR`: refused, with the contract's code and a sentence.
    Err {
        /// The `ERR` code.
        code: ErrorCode,
        /// What was wrong, in words.
        text: String,
    },
    /// `PONG`: the reply to [`Request::Ping`].
    Pong,
}

impl Reply {
    /// The reply as the outcome of a request that expects `ACK`: its text,
    /// or the typed refusal.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] for `ERR`, [`ClientError::Protocol`] for a
    /// `RESULT` or `PONG`.
    pub fn into_ack(self) -> Result<String, ClientError> {
        match self {
            Self::Ack(text) => Ok(text),
            Self::Err { code, text } => Err(ClientError::Refused { code, text }),
            other => Err(unexpected(&other, "ACK")),
        }
    }

    /// The reply as the outcome of a request that expects `RESULT`: its
    /// lines (each ended by LF in the payload; an empty payload has none).
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] for `ERR`; [`ClientError::Protocol`] for an
    /// `ACK` or `PONG`, or a payload that is not LF-terminated UTF-8 lines.
    pub fn into_lines(self) -> Result<Vec<String>, ClientError> {
        match self {
            Self::Result(data) => result_lines(&data),
            Self::Err { code, text } => Err(ClientError::Refused { code, text }),
            other => Err(unexpected(&other, "RESULT")),
        }
    }
}

fn unexpected(reply: &Reply, wanted: &str) -> ClientError {
    let got = match reply {
        Reply::Ack(_) => "ACK",
        Reply::Result(_) => "RESULT",
        Reply::Err { .. } => "ERR",
        Reply::Pong => "PONG",
    };
    ClientError::Protocol(format!("expected {wanted} from the server, got {got}"))
}

/// Splits a `RESULT` payload into lines. Every line, also the last, ends in LF
/// (a CR before it is dropped); an empty payload is no lines.
pub(crate) fn result_lines(data: &[u8]) -> Result<Vec<String>, ClientError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let Some(body) = data.strip_suffix(b"\n") else {
        return Err(ClientError::Protocol(
            "RESULT payload does not end with a line feed".into(),
        ));
    };
    body.split(|&b| b == b'\n')
        .map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            String::from_utf8(line.to_vec())
                .map_err(|_| ClientError::Protocol("RESULT line is not UTF-8".into()))
        })
        .collect()
}

/// Parses `GROUPS` lines, `<id>,<name>`.
pub(crate) fn parse_groups(lines: Vec<String>) -> Result<Vec<(u32, String)>, ClientError> {
    lines
        .into_iter()
        .map(|line| {
            let (id, name) = line.split_once(',').unwrap_or((&line, ""));
            match parse_group(id.as_bytes()) {
                Some(id) => Ok((id, name.to_owned())),
                None => Err(ClientError::Protocol(format!(
                    "GROUPS line {line:?} is not <id>,<name>"
                ))),
            }
        })
        .collect()
}

/// Parses a `SURVEY`'s `RESULT` payload: `RESPONSE LEN <responder>` frames,
/// back to back, as `(responder, payload)` in arrival order.
pub(crate) fn parse_responses(mut data: &[u8]) -> Result<Vec<(String, Bytes)>, ClientError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        match decode(data, MAX_SERVER_PAYLOAD) {
            Ok(Decoded::Frame { frame, consumed }) => {
                let mut args = frame.args();
                match (frame.verb().as_bytes(), frame.arg_count(), args.next()) {
                    (b"RESPONSE", 1, Some(who)) => out.push((
                        String::from_utf8_lossy(who).into_owned(),
                        Bytes::copy_from_slice(frame.payload()),
                    )),
                    _ => {
                        return Err(ClientError::Protocol(
                            "SURVEY result holds something other than RESPONSE <responder>".into(),
                        ));
                    }
                }
                data = data.get(consumed..).unwrap_or_default();
            }
            Ok(Decoded::Incomplete { .. }) => {
                return Err(ClientError::Protocol(
                    "SURVEY result ends inside a RESPONSE frame".into(),
                ));
            }
            Err(e) => return Err(ClientError::Protocol(format!("bad RESPONSE frame: {e}"))),
        }
    }
    Ok(out)
}

/// Parses `HELLO` lines, `<key>=<value>`.
pub(crate) fn parse_hello(lines: Vec<String>) -> Result<Vec<(String, String)>, ClientError> {
    lines
        .into_iter()
        .map(|line| match line.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(ClientError::Protocol(format!(
                "HELLO line {line:?} is not <key>=<value>"
            ))),
        })
        .collect()
}

/// What a [`ClientSession`] hands out, in the order the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The reply to request `id`.
    Reply {
        /// The request this answers.
        id: RequestId,
        /// Which request it was (its TYPE), for logs.
        verb: &'static str,
        /// The reply.
        reply: Reply,
    },
    /// A pushed frame (`PUBLISHED`, `MESSAGE`, `JOINED`, `PARTED`).
    Push(Push),
    /// An `ERR` that answers no request: the server says why it is about to
    /// close the connection (`shutting-down`, `timeout`, `slow-consumer`, ...).
    ServerError {
        /// The `ERR` code.
        code: ErrorCode,
        /// The server's sentence.
        text: String,
    },
}

/// A request sent and not yet answered.
#[derive(Debug)]
struct Pending {
    id: RequestId,
    verb: &'static str,
    /// Groups to add to (or remove from) the tracked sets once acknowledged.
    track: Track,
}

#[derive(Debug)]
enum Track {
    None,
    Subscribe(Vec<u32>),
    Unsubscribe(Vec<u32>),
    Watch(Vec<u32>),
    Unwatch(Vec<u32>),
    QSubscribe(String, Vec<u32>),
    QUnsubscribe(String, Vec<u32>),
}

/// The client side of one connection, sans-IO: requests in, bytes out;
/// bytes in, replies and pushes out.
///
/// It never sees a socket, a clock or a TLS library. The background thread
/// of [`Client`](super::Client) steps it, and so can a program with its own
/// event loop:
///
/// 1. [`ClientSession::send_request`] encodes a [`Request`] into the output
///    buffer and returns its [`RequestId`];
/// 2. [`ClientSession::transmit`] is what should be written to the
///    connection next, [`ClientSession::advance_transmit`] drops what was
///    written ([`ClientSession::wants_write`] says whether there is any);
/// 3. [`ClientSession::handle_input`] takes the bytes read, in any split, and
///    [`ClientSession::handle_eof`] the end of the stream;
/// 4. [`ClientSession::poll_event`] hands out, in arrival order, each reply
///    (tagged with the id of the request it answers) and each pushed frame.
///
/// Replies are matched to requests first in, first out: the contract gives
/// every frame exactly one reply, in order, except `PONG`. A `PING` from the
/// server is answered with `PONG` here, without the caller's help. Anything
/// the contract does not allow from a server (a frame that does not parse, a
/// reply nobody asked for, an unknown push) is a [`ClientError::Protocol`],
/// and it is sticky: a byte stream that lost its framing cannot be trusted
/// again, so the connection must be closed. Timeouts are the caller's: a
/// request whose caller gave up still holds its place in the queue, so that
/// the late reply is matched to it and not to the next request.
///
/// It also remembers which groups the server has acknowledged a
/// subscription or a watch for ([`ClientSession::subscriptions`],
/// [`ClientSession::watches`]), so that a new connection can restore them.
#[derive(Debug, Default)]
pub struct ClientSession {
    input: BytesMut,
    output: BytesMut,
    /// The length of each frame in `output` (what is left of the first),
    /// for transports that carry one frame per message.
    frames: VecDeque<usize>,
    pending: VecDeque<Pending>,
    events: VecDeque<Event>,
    next_id: u64,
    /// Sticky: once set, the stream cannot be trusted.
    failed: Option<String>,
    subscribed: BTreeSet<u32>,
    watched: BTreeSet<u32>,
    /// Acknowledged queue-group memberships, `(queue, group)`.
    queued: BTreeSet<(String, u32)>,
}

impl ClientSession {
    /// A session for a new connection, with nothing sent or received.
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes `request` into the output buffer and returns its id; its
    /// [`Event::Reply`] carries the same id.
    ///
    /// Arguments are checked here, with the checks and the encoder that the
    /// server's parser round-trips with ([`OwnedCommand::as_command`](crate::proto::OwnedCommand::as_command)), so a
    /// bad one never reaches the server.
    ///
    /// [`Request::Pong`] is the one request that gets no reply (the contract
    /// answers nothing to a `PONG`): it is written, and its id is never
    /// answered nor counted in [`ClientSession::in_flight`]. The session
    /// answers the server's `PING` by itself; there is seldom a reason to.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with [`ErrorCode::BadArgs`] (nothing is sent)
    /// for a request the server would refuse for its form: no group, group 0,
    /// more than 64 groups (63 for `PUBLISH`), an invalid user name, an empty
    /// password, a `BIND` to port 0.
    /// [`ClientError::Protocol`] if the session has failed.
    pub fn send_request(&mut self, request: &Request) -> Result<RequestId, ClientError> {
        if let Some(why) = &self.failed {
            return Err(ClientError::Protocol(why.clone()));
        }
        let command = request.as_command().map_err(|e| match e {
            CommandError::BadArgs(why) => bad_args(why),
            CommandError::Unknown => ClientError::Refused {
                code: ErrorCode::UnknownCommand,
                text: format!("unknown command {}", request.verb()),
            },
        })?;
        let before = self.output.len();
        command.encode(&mut self.output);
        self.frames.push_back(self.output.len() - before);
        let track = match request {
            Request::Subscribe(g) => Track::Subscribe(g.clone()),
            Request::Unsubscribe(g) => Track::Unsubscribe(g.clone()),
            Request::Watch(g) => Track::Watch(g.clone()),
            Request::Unwatch(g) => Track::Unwatch(g.clone()),
            Request::QSubscribe { queue, groups } => {
                Track::QSubscribe(queue.clone(), groups.clone())
            }
            Request::QUnsubscribe { queue, groups } => {
                Track::QUnsubscribe(queue.clone(), groups.clone())
            }
            _ => Track::None,
        };
        let id = RequestId(self.next_id);
        self.next_id += 1;
        if !matches!(command, Command::Pong) {
            let verb = command.verb();
            self.pending.push_back(Pending { id, verb, track });
        }
        Ok(id)
    }

    /// The bytes to write to the connection next (empty when there are none).
    /// Call [`ClientSession::advance_transmit`] with how many were written.
    pub fn transmit(&self) -> &[u8] {
        &self.output
    }

    /// The first frame of [`ClientSession::transmit`] (what is left of it,
    /// if part of it was written), empty when there is none: for a transport
    /// that carries each frame in a message of its own, such as WebSocket
    /// (protocol.md section 8). Call [`ClientSession::advance_transmit`] with
    /// its length once it is sent.
    pub fn transmit_frame(&self) -> &[u8] {
        let len = self.frames.front().copied().unwrap_or(0);
        self.output.get(..len).unwrap_or_default()
    }

    /// Drops the first `n` bytes of [`ClientSession::transmit`] (at most all).
    pub fn advance_transmit(&mut self, n: usize) {
        let mut n = n.min(self.output.len());
        self.output.advance(n);
        while n > 0 {
            let Some(first) = self.frames.front_mut() else {
                break;
            };
            if *first > n {
                *first -= n;
                break;
            }
            n -= *first;
            self.frames.pop_front();
        }
    }

    /// Whether there are bytes to write: the driver's cue for writable interest.
    pub fn wants_write(&self) -> bool {
        !self.output.is_empty()
    }

    /// Takes bytes read from the connection, in any split, and decodes every
    /// whole frame: replies and pushes become [`Event`]s, a `PING` queues a
    /// `PONG` in the output.
    ///
    /// # Errors
    ///
    /// [`ClientError::Protocol`] for anything the server may not send: a frame
    /// that does not parse (the decoder's [`FrameError`](crate::error::FrameError)),
    /// a payload over [`MAX_SERVER_PAYLOAD`], a reply with no request waiting
    /// for it, an `ERR` with an unknown code, an unknown frame TYPE, or a push
    /// with bad arguments. The error is sticky: every later call returns it
    /// again, and the connection should be closed. Events decoded before the
    /// bad frame are still handed out.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), ClientError> {
        if let Some(why) = &self.failed {
            return Err(ClientError::Protocol(why.clone()));
        }
        self.input.extend_from_slice(data);
        loop {
            let (consumed, result) = match decode(&self.input, MAX_SERVER_PAYLOAD) {
                Ok(Decoded::Frame { frame, consumed }) => (consumed, Self::classify(&frame)),
                Ok(Decoded::Incomplete { skip, frame_len }) => {
                    self.input.advance(skip);
                    if let Some(len) = frame_len {
                        // Capped by the decoder (header + MAX_SERVER_PAYLOAD).
                        self.input.reserve(len.saturating_sub(self.input.len()));
                    }
                    return Ok(());
                }
                Err(e) => (0, Err(format!("bad frame from the server: {e}"))),
            };
            self.input.advance(consumed);
            let step = result.and_then(|incoming| self.dispatch(incoming));
            if let Err(why) = step {
                self.failed = Some(why.clone());
                self.input.clear();
                return Err(ClientError::Protocol(why));
            }
        }
    }

    /// How many bytes of a frame received in part are held, waiting for the
    /// rest (0 when everything received was whole frames): a transport that
    /// carries whole frames in each message (WebSocket) checks it after each.
    pub fn partial_input(&self) -> usize {
        if self.failed.is_some() {
            0
        } else {
            self.input.len()
        }
    }

    /// Tells the session that the server closed its end of the stream.
    ///
    /// # Errors
    ///
    /// [`ClientError::Protocol`] if the stream ended inside a frame (a header
    /// or payload was cut short). A clean end returns `Ok`; the requests still
    /// waiting (see [`ClientSession::in_flight`]) will get no reply.
    pub fn handle_eof(&mut self) -> Result<(), ClientError> {
        if let Some(why) = &self.failed {
            return Err(ClientError::Protocol(why.clone()));
        }
        if self.input.is_empty() {
            Ok(())
        } else {
            let why = format!(
                "the server closed the connection in the middle of a frame ({} bytes of it received)",
                self.input.len()
            );
            self.failed = Some(why.clone());
            Err(ClientError::Protocol(why))
        }
    }

    /// The next reply or push, in the order the server sent them.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The ids of the requests sent and not yet answered, oldest first.
    pub fn in_flight(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.pending.iter().map(|p| p.id)
    }

    /// Groups the server has acknowledged a subscription to (and no
    /// unsubscription since), in ascending order.
    pub fn subscriptions(&self) -> Vec<u32> {
        self.subscribed.iter().copied().collect()
    }

    /// Groups the server has acknowledged a watch for, in ascending order.
    pub fn watches(&self) -> Vec<u32> {
        self.watched.iter().copied().collect()
    }

    /// Queue groups the server has acknowledged joining (and no leaving
    /// since), as `(queue, groups)` in ascending order of queue and group.
    pub fn queue_subscriptions(&self) -> Vec<(String, Vec<u32>)> {
        let mut out: Vec<(String, Vec<u32>)> = Vec::new();
        for (queue, group) in &self.queued {
            match out.last_mut() {
                Some((q, groups)) if q == queue => groups.push(*group),
                _ => out.push((queue.clone(), vec![*group])),
            }
        }
        out
    }

    /// Starts over for a new connection: drops buffered bytes, unanswered
    /// requests (returned, oldest first: they will get no reply) and pending
    /// events, and clears a failure. The subscriptions and watches are kept,
    /// so that they can be restored on the new connection.
    pub fn reset(&mut self) -> Vec<RequestId> {
        self.input.clear();
        self.output.clear();
        self.frames.clear();
        self.events.clear();
        self.failed = None;
        self.pending.drain(..).map(|p| p.id).collect()
    }

    /// Turns a decoded frame into owned data (so the input buffer can move on).
    fn classify(frame: &Frame<'_>) -> Result<Incoming, String> {
        let verb = frame.verb();
        let n = frame.arg_count();
        let mut args = frame.args();
        let payload = frame.payload();
        let text = || String::from_utf8_lossy(payload).into_owned();
        let arg_str = |a: &[u8]| String::from_utf8_lossy(a).into_owned();
        let no_args = |what: Incoming| {
            if n == 0 {
                Ok(what)
            } else {
                Err(format!("{} from the server with arguments", verb.as_str()))
            }
        };
        match verb.as_bytes() {
            b"ACK" => no_args(Incoming::Reply(Reply::Ack(text()))),
            b"RESULT" => no_args(Incoming::Reply(Reply::Result(Bytes::copy_from_slice(
                payload,
            )))),
            b"PONG" => no_args(Incoming::Pong),
            b"PING" => no_args(Incoming::Ping),
            b"ERR" => {
                let code = match (n, args.next()) {
                    (1, Some(token)) => ErrorCode::from_token(token)
                        .ok_or_else(|| format!("ERR with unknown code {:?}", arg_str(token)))?,
                    _ => return Err("ERR from the server without exactly one code".into()),
                };
                Ok(Incoming::Err { code, text: text() })
            }
            b"PUBLISHED" => {
                let sender = args
                    .next()
                    .map(arg_str)
                    .ok_or("PUBLISHED without a sender")?;
                let groups = args
                    .map(|g| {
                        parse_group(g)
                            .ok_or_else(|| format!("PUBLISHED with bad group {:?}", arg_str(g)))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if groups.is_empty() {
                    return Err("PUBLISHED without a group".into());
                }
                Ok(Incoming::Push(Push::Published {
                    sender,
                    groups,
                    payload: Bytes::copy_from_slice(payload),
                }))
            }
            b"MESSAGE" => match (n, args.next()) {
                (1, Some(sender)) => Ok(Incoming::Push(Push::Message {
                    sender: arg_str(sender),
                    payload: Bytes::copy_from_slice(payload),
                })),
                _ => Err("MESSAGE without exactly one sender".into()),
            },
            b"JOINED" | b"PARTED" => {
                let (user, group) = match (n, args.next(), args.next()) {
                    (2, Some(u), Some(g)) => (
                        arg_str(u),
                        parse_group(g).ok_or_else(|| {
                            format!("{} with bad group {:?}", verb.as_str(), arg_str(g))
                        })?,
                    ),
                    _ => return Err(format!("{} without <user> <group>", verb.as_str())),
                };
                Ok(Incoming::Push(if verb.as_bytes() == b"JOINED" {
                    Push::Joined { user, group }
                } else {
                    Push::Parted { user, group }
                }))
            }
            b"REQUESTED" | b"SURVEYED" => {
                let (sender, group, rid) = match (n, args.next(), args.next(), args.next()) {
                    (3, Some(s), Some(g), Some(r)) => (
                        arg_str(s),
                        parse_group(g).ok_or_else(|| {
                            format!("{} with bad group {:?}", verb.as_str(), arg_str(g))
                        })?,
                        arg_str(r),
                    ),
                    _ => {
                        return Err(format!("{} without <sender> <group> <rid>", verb.as_str()));
                    }
                };
                let payload = Bytes::copy_from_slice(payload);
                Ok(Incoming::Push(if verb.as_bytes() == b"REQUESTED" {
                    Push::Requested {
                        sender,
                        group,
                        rid,
                        payload,
                    }
                } else {
                    Push::Surveyed {
                        sender,
                        group,
                        rid,
                        payload,
                    }
                }))
            }
            _ => Err(format!(
                "unexpected frame {} from the server",
                verb.as_str()
            )),
        }
    }

    fn dispatch(&mut self, incoming: Incoming) -> Result<(), String> {
        match incoming {
            Incoming::Ping => {
                self.output.extend_from_slice(frame::PONG);
                self.frames.push_back(frame::PONG.len());
                Ok(())
            }
            Incoming::Push(push) => {
                self.events.push_back(Event::Push(push));
                Ok(())
            }
            Incoming::Pong => match self.pending.front() {
                Some(p) if p.verb == "PING" => self.answer(Reply::Pong),
                Some(p) => Err(format!("PONG from the server in reply to {}", p.verb)),
                // A PONG nobody asked for is harmless (a late keep-alive).
                None => Ok(()),
            },
            Incoming::Err { code, text } => {
                if self.pending.is_empty() {
                    self.events.push_back(Event::ServerError { code, text });
                    Ok(())
                } else {
                    self.answer(Reply::Err { code, text })
                }
            }
            Incoming::Reply(reply) => self.answer(reply),
        }
    }

    fn answer(&mut self, reply: Reply) -> Result<(), String> {
        let Some(p) = self.pending.pop_front() else {
            return Err("a reply from the server to no request".into());
        };
        if matches!(reply, Reply::Ack(_)) {
            match p.track {
                Track::None => {}
                Track::Subscribe(g) => self.subscribed.extend(g),
                Track::Unsubscribe(g) => g.iter().for_each(|g| {
                    self.subscribed.remove(g);
                }),
                Track::Watch(g) => self.watched.extend(g),
                Track::Unwatch(g) => g.iter().for_each(|g| {
                    self.watched.remove(g);
                }),
                Track::QSubscribe(q, g) => {
                    self.queued.extend(g.into_iter().map(|g| (q.clone(), g)))
                }
                Track::QUnsubscribe(q, g) => g.into_iter().for_each(|g| {
                    self.queued.remove(&(q.clone(), g));
                }),
            }
        }
        self.events.push_back(Event::Reply {
            id: p.id,
            verb: p.verb,
            reply,
        });
        Ok(())
    }
}

/// A frame from the server, owned.
enum Incoming {
    Reply(Reply),
    Err { code: ErrorCode, text: String },
    Pong,
    Ping,
    Push(Push),
}

fn bad_args(text: &str) -> ClientError {
    ClientError::Refused {
        code: ErrorCode::BadArgs,
        text: text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(s: &mut ClientSession) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn sent(s: &mut ClientSession) -> Vec<u8> {
        let out = s.transmit().to_vec();
        s.advance_transmit(out.len());
        out
    }

    #[test]
    fn transmit_frame_gives_one_frame_at_a_time() {
        let mut s = ClientSession::new();
        assert_eq!(s.transmit_frame(), b"");
        s.send_request(&Request::User("alice".into())).unwrap();
        s.send_request(&Request::Publish {
            groups: vec![1],
            payload: Bytes::from_static(b"a\nb"),
        })
        .unwrap();
        // The server's PING is answered with a PONG frame of its own.
        s.handle_input(b"PING 0\n").unwrap();
        assert_eq!(s.transmit_frame(), b"USER 0 alice\n");
        // Part of it written (a byte stream): the rest of it.
        s.advance_transmit(5);
        assert_eq!(s.transmit_frame(), b"0 alice\n");
        s.advance_transmit(s.transmit_frame().len());
        assert_eq!(s.transmit_frame(), b"PUBLISH 3 1\na\nb");
        s.advance_transmit(s.transmit_frame().len());
        assert_eq!(s.transmit_frame(), b"PONG 0\n");
        // Across frames at once.
        s.send_request(&Request::Ping).unwrap();
        s.advance_transmit(9);
        assert_eq!(s.transmit_frame(), b"NG 0\n");
        s.advance_transmit(100);
        assert_eq!((s.transmit_frame(), s.wants_write()), (&b""[..], false));
        s.send_request(&Request::Hello).unwrap();
        s.reset();
        assert_eq!(s.transmit_frame(), b"");
    }

    #[test]
    fn encodes_requests() {
        let mut s = ClientSession::new();
        let reqs = [
            Request::User("alice".into()),
            Request::Pass(b"pw".to_vec()),
            Request::Pass(b"a b".to_vec()),
            Request::Subscribe(vec![1, 2]),
            Request::Unsubscribe(vec![2]),
            Request::Watch(vec![3]),
            Request::Unwatch(vec![3]),
            Request::Publish {
                groups: vec![1],
                payload: Bytes::from_static(b"hi"),
            },
            Request::Send {
                to: "bob".into(),
                payload: Bytes::from_static(b"yo"),
            },
            Request::Who(None),
            Request::Who(Some(7)),
            Request::Groups,
            Request::Hello,
            Request::Ping,
            Request::Quit,
        ];
        for (i, r) in reqs.iter().enumerate() {
            assert_eq!(s.send_request(r).ok(), Some(RequestId(i as u64)));
        }
        let want = "USER 0 alice\nPASS 0 pw\nPASS 3\na bSUBSCRIBE 0 1 2\nUNSUBSCRIBE 0 2\n\
                    WATCH 0 3\nUNWATCH 0 3\nPUBLISH 2 1\nhiSEND 2 bob\nyoWHO 0\nWHO 0 7\n\
                    GROUPS 0\nHELLO 0\nPING 0\nQUIT 0\n";
        let wire = sent(&mut s);
        assert_eq!(String::from_utf8_lossy(&wire), want);
        assert_eq!(s.in_flight().count(), reqs.len());
        // What the client wrote is what the server's parser reads back.
        let mut rest = &wire[..];
        for r in &reqs {
            match decode(rest, MAX_SERVER_PAYLOAD) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    let parsed = Command::from_frame(&frame).map(Command::into_owned);
                    assert_eq!(parsed.as_ref(), Ok(r));
                    rest = &rest[consumed..];
                }
                other => panic!("{r:?}: {other:?}"),
            }
        }
        assert!(rest.is_empty());
        assert!(!format!("{:?}", Request::Pass(b"secret".to_vec())).contains("secret"));
    }

    #[test]
    fn refuses_bad_arguments_locally() {
        let mut s = ClientSession::new();
        let bad = [
            Request::Subscribe(vec![]),
            Request::Subscribe(vec![0]),
            Request::Watch(vec![1; 65]),
            Request::Publish {
                groups: vec![1; 64],
                payload: Bytes::new(),
            },
            Request::Send {
                to: "no one".into(),
                payload: Bytes::new(),
            },
            Request::User(String::new()),
            Request::Pass(Vec::new()),
            Request::Who(Some(0)),
        ];
        for r in &bad {
            match s.send_request(r) {
                Err(ClientError::Refused {
                    code: ErrorCode::BadArgs,
                    ..
                }) => {}
                other => panic!("{r:?}: {other:?}"),
            }
        }
        assert!(s.transmit().is_empty());
        assert_eq!(s.in_flight().count(), 0);
    }

    #[test]
    fn pong_gets_no_reply_and_directory_commands_do() {
        let mut s = ClientSession::new();
        let pong = s.send_request(&Request::Pong).expect("valid");
        let query = s.send_request(&Request::Query(None)).expect("valid");
        assert_eq!(sent(&mut s), b"PONG 0\nQUERY 0\n");
        assert_eq!(s.in_flight().collect::<Vec<_>>(), vec![query]);
        assert_ne!(pong, query);
        s.handle_input(b"RESULT 19\nbob,127.0.0.1,5000\n")
            .expect("valid");
        assert!(matches!(
            events(&mut s).as_slice(),
            [Event::Reply { id, verb: "QUERY", reply: Reply::Result(_) }] if *id == query
        ));
        assert!(matches!(
            s.send_request(&Request::Bind {
                address: std::net::IpAddr::from([127, 0, 0, 1]),
                port: 0
            }),
            Err(ClientError::Refused {
                code: ErrorCode::BadArgs,
                ..
            })
        ));
        assert!(s.transmit().is_empty());
    }

    /// Sends the requests that `SERVER_STREAM` answers.
    fn session_with_requests() -> ClientSession {
        let mut s = ClientSession::new();
        for r in [
            Request::User("alice".into()),
            Request::Subscribe(vec![1, 2]),
            Request::Who(None),
            Request::Ping,
            Request::Send {
                to: "bob".into(),
                payload: Bytes::from_static(b"x"),
            },
        ] {
            s.send_request(&r).expect("valid request");
        }
        sent(&mut s);
        s
    }

    const SERVER_STREAM: &[u8] = b"ACK 9\nlogged in\
        PING 0\r\n\
        PUBLISHED 5 bob 1 2\nhello\
        ACK 10\nsubscribed\
        \r\nJOINED 0 carol 1\n\
        RESULT 11\nalice\nbob\r\n\
        PONG 0\n\
        MESSAGE 3 @server\n\x00\xff\n\
        PARTED 0 carol 1\n\
        ERR 13 no-such-user\nnobody is bob\
        ERR 9 shutting-down\nbye bye!!";

    fn expected_events() -> Vec<Event> {
        let reply = |id, verb, reply| Event::Reply {
            id: RequestId(id),
            verb,
            reply,
        };
        vec![
            reply(0, "USER", Reply::Ack("logged in".into())),
            Event::Push(Push::Published {
                sender: "bob".into(),
                groups: vec![1, 2],
                payload: Bytes::from_static(b"hello"),
            }),
            reply(1, "SUBSCRIBE", Reply::Ack("subscribed".into())),
            Event::Push(Push::Joined {
                user: "carol".into(),
                group: 1,
            }),
            reply(
                2,
                "WHO",
                Reply::Result(Bytes::from_static(b"alice\nbob\r\n")),
            ),
            reply(3, "PING", Reply::Pong),
            Event::Push(Push::Message {
                sender: "@server".into(),
                payload: Bytes::from_static(b"\x00\xff\n"),
            }),
            Event::Push(Push::Parted {
                user: "carol".into(),
                group: 1,
            }),
            reply(
                4,
                "SEND",
                Reply::Err {
                    code: ErrorCode::NoSuchUser,
                    text: "nobody is bob".into(),
                },
            ),
            Event::ServerError {
                code: ErrorCode::ShuttingDown,
                text: "bye bye!!".into(),
            },
        ]
    }

    #[test]
    fn replies_and_pushes_at_every_split() {
        for cut in 0..=SERVER_STREAM.len() {
            let mut s = session_with_requests();
            let mut got = Vec::new();
            for part in [&SERVER_STREAM[..cut], &SERVER_STREAM[cut..]] {
                s.handle_input(part).expect("valid stream");
                got.extend(events(&mut s));
            }
            assert_eq!(got, expected_events(), "cut at {cut}");
            assert_eq!(sent(&mut s), b"PONG 0\n", "cut at {cut}");
            assert_eq!(s.in_flight().count(), 0);
            assert_eq!(s.subscriptions(), vec![1, 2]);
            assert_eq!(s.handle_eof().ok(), Some(()));
        }
        // One byte at a time.
        let mut s = session_with_requests();
        let mut got = Vec::new();
        for b in SERVER_STREAM {
            s.handle_input(std::slice::from_ref(b))
                .expect("valid stream");
            got.extend(events(&mut s));
        }
        assert_eq!(got, expected_events());
    }

    #[test]
    fn eof_inside_a_frame_is_a_protocol_error() {
        for cut in 1..SERVER_STREAM.len() {
            let mut s = session_with_requests();
            s.handle_input(&SERVER_STREAM[..cut]).expect("valid prefix");
            let mid_frame = !s.input.is_empty();
            match s.handle_eof() {
                Err(ClientError::Protocol(_)) => assert!(mid_frame, "cut at {cut}"),
                Ok(()) => assert!(!mid_frame, "cut at {cut}"),
                Err(e) => panic!("cut at {cut}: {e}"),
            }
        }
    }

    #[test]
    fn malformed_server_input_is_a_sticky_protocol_error() {
        let cases: &[&[u8]] = &[
            b"\x16\x03\x01\x00",
            b"HTTP/1.1 200 OK\r\n",
            b"ACK 1 extra\nx",
            b"ACK 2\nokACK 2\nok", // the second answers nothing
            b"ERR 1\nx",
            b"ERR 1 no-such-code\nx",
            b"PUBLISHED 1 bob\nx",
            b"PUBLISHED 1 bob 0\nx",
            b"PUBLISHED 1 bob one\nx",
            b"MESSAGE 1\nx",
            b"JOINED 0 carol\n",
            b"PARTED 0 carol 99999999999\n",
            b"BOGUS 0\n",
            b"PONG 0\n", // the pending request is USER, not PING
            b"PING 0 x\n",
            b"PUBLISHED 16777217 bob 1\n",
        ];
        for input in cases {
            for cut in 0..=input.len() {
                let mut s = ClientSession::new();
                s.send_request(&Request::User("a".into())).expect("valid");
                let first = s.handle_input(&input[..cut]);
                let second = s.handle_input(&input[cut..]);
                let err = first.and(second);
                assert!(
                    matches!(err, Err(ClientError::Protocol(_))),
                    "{:?} cut {cut}: {err:?}",
                    String::from_utf8_lossy(input)
                );
                // Sticky.
                assert!(matches!(
                    s.handle_input(b"ACK 0\n"),
                    Err(ClientError::Protocol(_))
                ));
                assert!(matches!(
                    s.send_request(&Request::Ping),
                    Err(ClientError::Protocol(_))
                ));
                // reset() starts over.
                assert!(s.reset().len() <= 1);
                assert!(s.handle_input(b"").is_ok());
            }
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        for round in 0..20_000 {
            let mut s = session_with_requests();
            let mut input = SERVER_STREAM.to_vec();
            for _ in 0..=(next() % 3) {
                let at = (next() as usize) % input.len();
                input[at] = next() as u8;
            }
            if round % 3 == 0 {
                input.truncate((next() as usize) % input.len());
            }
            let _ = s.handle_input(&input);
            let _ = events(&mut s);
            let _ = s.handle_eof();
        }
    }

    #[test]
    fn tracks_acknowledged_subscriptions_and_watches() {
        let mut s = ClientSession::new();
        s.send_request(&Request::Subscribe(vec![1, 2, 3]))
            .expect("valid");
        s.send_request(&Request::Subscribe(vec![9])).expect("valid");
        s.send_request(&Request::Watch(vec![4])).expect("valid");
        s.send_request(&Request::Unsubscribe(vec![2]))
            .expect("valid");
        s.handle_input(b"ACK 0\nERR 1 unknown-group\nxACK 0\nACK 0\n")
            .expect("valid");
        assert_eq!(s.subscriptions(), vec![1, 3]);
        assert_eq!(s.watches(), vec![4]);
        s.send_request(&Request::Ping).expect("valid");
        assert_eq!(s.reset(), vec![RequestId(4)]);
        assert_eq!(s.subscriptions(), vec![1, 3]);
        assert!(s.transmit().is_empty());
    }

    #[test]
    fn request_reply_survey_frames_byte_by_byte() {
        let mut s = ClientSession::new();
        let reqs = [
            Request::QSubscribe {
                queue: "workers".into(),
                groups: vec![1, 2],
            },
            Request::Request {
                group: 1,
                timeout_ms: 250,
                payload: Bytes::from_static(b"ping?"),
            },
            Request::Reply {
                rid: "r7".into(),
                payload: Bytes::from_static(b"pong"),
            },
            Request::Survey {
                group: 2,
                deadline_ms: 100,
                payload: Bytes::from_static(b"who?"),
            },
            Request::Echo(false),
            Request::QUnsubscribe {
                queue: "workers".into(),
                groups: vec![2],
            },
        ];
        for r in &reqs {
            s.send_request(r).expect("valid");
        }
        assert_eq!(
            String::from_utf8_lossy(&sent(&mut s)),
            "QSUBSCRIBE 0 workers 1 2\nREQUEST 5 1 250\nping?REPLY 4 r7\npong\
             SURVEY 4 2 100\nwho?ECHO 0 off\nQUNSUBSCRIBE 0 workers 2\n"
        );
        let stream: &[u8] = b"ACK 0\n\
            REQUESTED 3 bob 1 r9\nabc\
            RESULT 4\nPONG\
            ACK 0\n\
            SURVEYED 0 carol 2 r10\n\
            RESULT 36\nRESPONSE 2 bob\nhiRESPONSE 3 dave\na\nb\
            ACK 0\nACK 0\n";
        let mut got = Vec::new();
        for b in stream {
            s.handle_input(std::slice::from_ref(b)).expect("valid");
            got.extend(events(&mut s));
        }
        let pushes: Vec<_> = got
            .iter()
            .filter_map(|e| match e {
                Event::Push(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            pushes,
            vec![
                Push::Requested {
                    sender: "bob".into(),
                    group: 1,
                    rid: "r9".into(),
                    payload: Bytes::from_static(b"abc"),
                },
                Push::Surveyed {
                    sender: "carol".into(),
                    group: 2,
                    rid: "r10".into(),
                    payload: Bytes::new(),
                },
            ]
        );
        let replies: Vec<_> = got
            .into_iter()
            .filter_map(|e| match e {
                Event::Reply { verb, reply, .. } => Some((verb, reply)),
                _ => None,
            })
            .collect();
        assert_eq!(replies.len(), 6);
        assert_eq!(
            replies[1],
            ("REQUEST", Reply::Result(Bytes::from_static(b"PONG")))
        );
        let Reply::Result(survey) = &replies[3].1 else {
            panic!("{replies:?}");
        };
        assert_eq!(
            parse_responses(survey).ok(),
            Some(vec![
                ("bob".into(), Bytes::from_static(b"hi")),
                ("dave".into(), Bytes::from_static(b"a\nb")),
            ])
        );
        // Joined 1 and 2, then left 2.
        assert_eq!(s.queue_subscriptions(), vec![("workers".into(), vec![1])]);
        assert!(s.subscriptions().is_empty());
    }

    #[test]
    fn bad_pattern_frames_are_protocol_errors() {
        for input in [
            &b"REQUESTED 1 bob 1\nx"[..],
            b"REQUESTED 1 bob 0 r1\nx",
            b"SURVEYED 1 bob 1 r1 extra\nx",
        ] {
            let mut s = ClientSession::new();
            assert!(
                matches!(s.handle_input(input), Err(ClientError::Protocol(_))),
                "{input:?}"
            );
        }
        assert_eq!(parse_responses(b"").ok(), Some(vec![]));
        for bad in [&b"RESPONSE 5 bob\nhi"[..], b"ACK 0\n", b"RESPONSE 0\n"] {
            assert!(
                matches!(parse_responses(bad), Err(ClientError::Protocol(_))),
                "{bad:?}"
            );
        }
        let mut s = ClientSession::new();
        for r in [
            Request::QSubscribe {
                queue: "no queue".into(),
                groups: vec![1],
            },
            Request::Request {
                group: 1,
                timeout_ms: 60_001,
                payload: Bytes::new(),
            },
            Request::Survey {
                group: 0,
                deadline_ms: 10,
                payload: Bytes::new(),
            },
        ] {
            assert!(
                matches!(
                    s.send_request(&r),
                    Err(ClientError::Refused {
                        code: ErrorCode::BadArgs,
                        ..
                    })
                ),
                "{r:?}"
            );
        }
    }

    #[test]
    fn result_payloads() {
        assert_eq!(result_lines(b"").ok(), Some(vec![]));
        assert_eq!(
            result_lines(b"a\r\nb\n").ok(),
            Some(vec!["a".into(), "b".into()])
        );
        assert!(result_lines(b"a").is_err());
        assert!(result_lines(b"\xff\n").is_err());
        assert_eq!(
            parse_groups(vec!["1,general".into(), "7,".into()]).ok(),
            Some(vec![(1, "general".into()), (7, String::new())])
        );
        assert!(parse_groups(vec!["x,y".into()]).is_err());
        assert_eq!(
            parse_hello(vec!["a=b=c".into()]).ok(),
            Some(vec![("a".into(), "b=c".into())])
        );
        assert!(parse_hello(vec!["nokey".into()]).is_err());
        assert_eq!(Reply::Ack("ok".into()).into_ack().ok(), Some("ok".into()));
        assert!(matches!(
            Reply::Pong.into_ack(),
            Err(ClientError::Protocol(_))
        ));
        assert!(matches!(
            Reply::Err {
                code: ErrorCode::Forbidden,
                text: String::new()
            }
            .into_lines(),
            Err(ClientError::Refused { .. })
        ));
    }
}
