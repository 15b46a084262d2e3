//! WebSocket under a protocol (protocol.md section 8): the HTTP/1.1
//! upgrade, then one WebSocket message per frame each way, over plain TCP
//! or, by composition, over TLS (`wss`).
//!
//! Sans-IO like the rest of [`super::Transport`]: bytes from a `Read`,
//! bytes to a `Write`, no clock. The stages of a connection:
//!
//! 1. **HTTP.** The request head is kept (at most [`MAX_HEAD`], then
//!    released) and parsed once its end has arrived, so a client sending a
//!    byte at a time costs linear work. An upgrade is answered with `101`
//!    and the connection goes on in WebSocket; a plain `GET` gets the page
//!    of [`WsConfig`] (or a 404) and a refused request its HTTP error, and
//!    both then end. Whatever the protocol queued meanwhile (an `ERR` at the
//!    login timeout) is not for an HTTP client and is dropped.
//! 2. **Open.** Messages are decoded ([`Decoder`]: masking, fragments,
//!    UTF-8, the size limit) and their payloads handed to the protocol as
//!    its byte stream; a message without a newline ends with one (a frame
//!    with no payload, as a browser would send `PING 0`). Pings are answered
//!    with a pong (only the latest, RFC 6455 5.5.3, and not to a peer with
//!    64 KiB of output unread). The protocol's output is already one
//!    message per frame: the connection table wraps each frame
//!    ([`crate::conn::Links::set_websocket`]).
//! 3. **Closing.** A close from the peer is answered with a close and ends
//!    the input (the protocol hears the end of the stream); a protocol
//!    error sends a close with its code (1002, 1007, 1009) and ends it
//!    too, but then the connection waits for the peer's close or its TCP
//!    end ([`WsLayer::awaits_peer`], bounded by the linger) so the peer
//!    reads the code instead of a reset. When the protocol closes the
//!    connection, a close (1000) follows everything it was owed.
//!
//! Memory: an idle open connection holds this struct, boxed once: 32 bytes
//! over plain TCP, and over TLS the TLS session in the same allocation (so
//! `wss` costs one allocation, as TLS does). The HTTP stage's buffers and
//! pending control frames sit in a second box that exists only while they
//! do.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use log::debug;

use super::ReadBufs;
use crate::buf::OutQueue;
use crate::conn::PeerIdentity;
use crate::tls::{ReadError, ReadStep, TlsSession};
use crate::ws::{self, Decoder, Event, MAX_HEAD, Request, Role, close_code};

/// What a WebSocket listener needs besides TLS: the limit and the page.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// The largest message a client may send (the payload limit plus one
    /// frame header, protocol.md section 8); larger ones close with 1009.
    pub max_message: usize,
    /// The complete HTTP response to a plain `GET /` (status line, headers
    /// and the page), shared by every connection; `None`: 404 (a service
    /// without a page).
    pub page: Option<Bytes>,
    /// A byte appended to a message that holds none of it: `b'\n'` for
    /// switchboard frames (so a bare `PING 0` message is a frame), a
    /// delimited service's delimiter; `None` to hand messages over as they
    /// are.
    pub terminator: Option<u8>,
}

impl WsConfig {
    /// A 200 response carrying `html`, for [`WsConfig::page`].
    pub fn page_response(html: &[u8]) -> Bytes {
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Length: {}\r\nCache-Control: no-cache\r\n\
             X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
             Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; \
             style-src 'unsafe-inline'; img-src data:; connect-src 'self' ws: wss:; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n\
             Connection: close\r\n\r\n",
            html.len()
        )
        .into_bytes();
        out.extend_from_slice(html);
        Bytes::from(out)
    }
}

/// The answer to a plain `GET` of anything but `/`.
const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 10\r\nConnection: close\r\n\r\nnot found\n";

/// No pong is queued for a peer with this much output unread: it is not
/// reading, and pongs must not grow its queue past the output bound.
const PONG_MAX_BACKLOG: usize = 64 << 10;

/// The input has ended (a close, an error, an HTTP answer): what arrives
/// now is read and dropped.
const ENDED: u8 = 1;
/// The end is still to be reported (`ReadStep::Eof`), after the data read
/// with it.
const EOF_DUE: u8 = 2;
/// The connection waits for the peer's close or TCP end before it is
/// dropped (see [`WsLayer::awaits_peer`]).
const AWAIT_PEER: u8 = 4;
/// A close frame has been queued (never two).
const CLOSE_SENT: u8 = 8;
/// The upgrade was accepted: the output queue holds WebSocket messages.
const UPGRADED: u8 = 16;
/// The peer's socket (or TLS stream) has ended.
const PEER_GONE: u8 = 32;
/// The upgrade was accepted and not yet reported as the connection being
/// established ([`WsLayer::take_established`]).
const READY_DUE: u8 = 64;
/// Over the connection limit: the request is answered with 503
/// ([`WsLayer::refuse_full`]).
const REFUSED: u8 = 128;

/// The answer to a request on a connection over the connection limit.
const SERVER_FULL: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 40\r\nRetry-After: 1\r\nConnection: close\r\n\r\n\
server-full: too many connections, retry\n";

/// What WebSocket runs over: plain TCP ([`NoTls`]) or TLS
/// ([`TlsSession`]), kept in the layer itself.
pub trait Lower: std::fmt::Debug {
    /// Reads once; `Data(n)`: the bytes are [`Lower::raw`]`(scratch, plain, n)`.
    ///
    /// # Errors
    ///
    /// As [`super::Transport::read_step`].
    fn read<S: Read>(
        &mut self,
        sock: &mut S,
        scratch: &mut [u8],
        plain: &mut Vec<u8>,
        window: usize,
    ) -> Result<ReadStep, ReadError>;
    /// Where the bytes of `Data(n)` are.
    fn raw<'a>(scratch: &'a [u8], plain: &'a [u8], n: usize) -> &'a [u8];
    /// Writes `out` (and, `closing`, ends the stream: `close_notify`).
    ///
    /// # Errors
    ///
    /// What the socket returns other than `WouldBlock`.
    fn write<S: Write>(
        &mut self,
        sock: &mut S,
        out: &mut OutQueue,
        scratch: &mut [u8],
        closing: bool,
    ) -> io::Result<bool>;
    /// See [`super::Transport::take_established`].
    fn take_established(&mut self) -> Option<Option<PeerIdentity>>;
    /// Bytes of its own to write (TLS handshake records).
    fn wants_write(&self) -> bool;
    /// After a failed read: the TLS alert, if any (best effort).
    fn write_alert<S: Write>(&mut self, sock: &mut S, scratch: &mut [u8]);
}

/// Plain TCP under WebSocket.
#[derive(Debug, Default)]
pub struct NoTls;

impl Lower for NoTls {
    fn read<S: Read>(
        &mut self,
        sock: &mut S,
        scratch: &mut [u8],
        _plain: &mut Vec<u8>,
        window: usize,
    ) -> Result<ReadStep, ReadError> {
        let len = scratch.len().min(window);
        let buf = scratch.get_mut(..len).unwrap_or_default();
        match sock.read(buf) {
            Ok(0) => Ok(ReadStep::Eof),
            Ok(n) => Ok(ReadStep::Data(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(ReadStep::WouldBlock),
            Err(e) => Err(ReadError::Io(e)),
        }
    }
    fn raw<'a>(scratch: &'a [u8], _plain: &'a [u8], n: usize) -> &'a [u8] {
        scratch.get(..n).unwrap_or_default()
    }
    fn write<S: Write>(
        &mut self,
        sock: &mut S,
        out: &mut OutQueue,
        scratch: &mut [u8],
        _closing: bool,
    ) -> io::Result<bool> {
        out.write_to(sock, scratch)
    }
    fn take_established(&mut self) -> Option<Option<PeerIdentity>> {
        None
    }
    fn wants_write(&self) -> bool {
        false
    }
    fn write_alert<S: Write>(&mut self, _sock: &mut S, _scratch: &mut [u8]) {}
}

impl Lower for TlsSession {
    fn read<S: Read>(
        &mut self,
        sock: &mut S,
        scratch: &mut [u8],
        plain: &mut Vec<u8>,
        _window: usize,
    ) -> Result<ReadStep, ReadError> {
        self.read_step(sock, scratch, plain)
    }
    fn raw<'a>(_scratch: &'a [u8], plain: &'a [u8], n: usize) -> &'a [u8] {
        plain.get(..n).unwrap_or_default()
    }
    fn write<S: Write>(
        &mut self,
        sock: &mut S,
        out: &mut OutQueue,
        scratch: &mut [u8],
        closing: bool,
    ) -> io::Result<bool> {
        if closing {
            self.send_close_notify();
        }
        self.write_to(sock, out, scratch)
    }
    fn take_established(&mut self) -> Option<Option<PeerIdentity>> {
        Self::take_established(self)
    }
    fn wants_write(&self) -> bool {
        Self::wants_write(self)
    }
    fn write_alert<S: Write>(&mut self, sock: &mut S, scratch: &mut [u8]) {
        let mut none = OutQueue::default();
        let _ = self.write_to(sock, &mut none, scratch);
    }
}

/// The WebSocket layer of one connection, over `L`.
#[derive(Debug)]
pub struct WsLayer<L = NoTls> {
    lower: L,
    aside: Option<Box<Aside>>,
    decoder: Decoder,
    flags: u8,
    /// [`WsConfig::terminator`].
    terminator: Option<u8>,
    /// The close code queued to send ([`CLOSE_SENT`] set, not yet in the
    /// output queue), 0 if none.
    close_due: u16,
}

/// What a connection holds only for a while: the HTTP stage's request and
/// settings, and bytes waiting to go in front of the protocol's output.
#[derive(Debug, Default)]
struct Aside {
    config: Option<Arc<WsConfig>>,
    head: Vec<u8>,
    front: Option<Bytes>,
    /// The TLS handshake's result, kept until the upgrade is reported.
    secured: Option<Option<PeerIdentity>>,
}

impl<L: Lower> WsLayer<L> {
    /// A server-side connection in its HTTP stage, over `lower`.
    pub fn new(config: Arc<WsConfig>, lower: L) -> Self {
        Self {
            lower,
            decoder: Decoder::new(Role::Server, config.max_message),
            terminator: config.terminator,
            aside: Some(Box::new(Aside {
                config: Some(config),
                ..Aside::default()
            })),
            flags: 0,
            close_due: 0,
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether the upgrade was accepted.
    pub fn is_upgraded(&self) -> bool {
        self.has(UPGRADED)
    }

    /// The connection is over the connection limit: its request, once it
    /// has arrived, is answered with `503` (`server-full`) instead, where a
    /// TCP client gets `ERR server-full` at once (an HTTP client could not
    /// read that line).
    pub fn refuse_full(&mut self) {
        self.flags |= REFUSED;
    }

    /// Whether the connection must not be shut down yet though the
    /// protocol is done with it: a refused one waits (within the linger)
    /// for its request, to answer it.
    pub fn holds_shutdown(&self) -> bool {
        self.has(REFUSED) && !self.has(ENDED)
    }

    /// Whether the connection, though finished for the protocol, should
    /// stay until the peer closes (or the linger ends): after a protocol
    /// error or an HTTP answer, dropping it at once would reset a peer
    /// still sending, and it might lose the close code or the page.
    pub fn awaits_peer(&self) -> bool {
        self.has(AWAIT_PEER) && !self.has(PEER_GONE)
    }

    /// Reports once that the connection is ready for the protocol: the
    /// upgrade was accepted (over TLS, after the handshake), with the TLS
    /// peer's identity if any. The protocol hears of a WebSocket connection
    /// when it can talk on it, as it hears of a TLS one after its handshake.
    pub fn take_established(&mut self) -> Option<Option<PeerIdentity>> {
        if let Some(identity) = self.lower.take_established() {
            self.aside.get_or_insert_with(Box::default).secured = Some(identity);
        }
        if self.flags & READY_DUE == 0 {
            return None;
        }
        self.flags &= !READY_DUE;
        Some(self.aside.as_mut().and_then(|a| a.secured.take()).flatten())
    }

    /// Whether bytes of the layer's own wait to be written.
    pub fn wants_write(&self) -> bool {
        self.lower.wants_write()
            || self.close_due != 0
            || self.aside.as_ref().is_some_and(|a| a.front.is_some())
    }

    /// One read (see [`super::Transport::read_step`]); decoded payloads
    /// are in `bufs.messages`.
    pub fn read_step<S: Read>(
        &mut self,
        sock: &mut S,
        bufs: &mut ReadBufs,
        window: usize,
    ) -> Result<ReadStep, ReadError> {
        bufs.messages.clear();
        if self.flags & EOF_DUE != 0 {
            self.flags &= !EOF_DUE;
            return Ok(ReadStep::Eof);
        }
        let ReadBufs {
            scratch,
            plain,
            messages,
        } = bufs;
        let raw: &[u8] = match self.lower.read(sock, scratch, plain, window)? {
            ReadStep::Data(n) => L::raw(scratch, plain, n),
            ReadStep::Eof => return Ok(self.peer_gone()),
            other => return Ok(other),
        };
        if self.has(ENDED) {
            return Ok(ReadStep::Progress);
        }
        if self.has(UPGRADED) {
            Ok(self.ws_input(raw, messages))
        } else {
            Ok(self.http_input(raw, messages))
        }
    }

    /// The socket (or TLS stream) ended.
    fn peer_gone(&mut self) -> ReadStep {
        self.flags |= PEER_GONE | ENDED;
        ReadStep::Eof
    }

    /// Request bytes: the head is parsed once it is complete.
    fn http_input(&mut self, mut raw: &[u8], messages: &mut Vec<u8>) -> ReadStep {
        let aside = self.aside.get_or_insert_with(Box::default);
        if aside.head.is_empty() {
            // Empty lines before the request line are ignored (RFC 9112
            // 2.2), so that they cannot pass for the end of a head.
            while let Some((b'\r' | b'\n', rest)) = raw.split_first() {
                raw = rest;
            }
        }
        // Look for the head's end ("\n\r\n" or "\n\n") only among the new
        // bytes and the three before them: linear in the head, however it
        // is split.
        let ends = |tail: &[u8]| {
            tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
        };
        let head: std::borrow::Cow<'_, [u8]> = if aside.head.is_empty() && ends(raw) {
            // The whole head in one read (the usual case): parsed where it
            // is, never copied.
            std::borrow::Cow::Borrowed(raw)
        } else {
            let before = aside.head.len();
            aside.head.extend_from_slice(raw);
            let tail = aside
                .head
                .get(before.saturating_sub(3)..)
                .unwrap_or_default();
            if !ends(tail) && aside.head.len() < MAX_HEAD {
                return ReadStep::Progress;
            }
            std::borrow::Cow::Owned(std::mem::take(&mut aside.head))
        };
        let page = aside.config.as_ref().and_then(|c| c.page.clone());
        if self.has(REFUSED) {
            return self.answer(Bytes::from_static(SERVER_FULL));
        }
        match ws::read_request(&head) {
            Ok(None) => {
                // Not a head's end after all (a "\n\n" inside a header's
                // bytes cannot be, but be safe): keep reading.
                if let Some(a) = &mut self.aside {
                    a.head = head.into_owned();
                }
                ReadStep::Progress
            }
            Err(refusal) => {
                debug!("WebSocket upgrade refused: {refusal}");
                self.answer(Bytes::from(refusal.response()))
            }
            Ok(Some(h)) => match h.request {
                Request::Plain { path } => {
                    let page = if path == "/" || path.starts_with("/?") {
                        page
                    } else {
                        None
                    };
                    self.answer(page.unwrap_or_else(|| Bytes::from_static(NOT_FOUND)))
                }
                Request::Upgrade(up) => {
                    self.flags |= UPGRADED | READY_DUE;
                    if let Some(a) = &mut self.aside {
                        a.config = None;
                        a.head = Vec::new();
                        a.front = Some(Bytes::from(up.response()));
                    }
                    let rest = head.get(h.used..).unwrap_or_default();
                    self.ws_input(rest, messages)
                }
            },
        }
    }

    /// An HTTP answer after which the connection ends.
    fn answer(&mut self, response: Bytes) -> ReadStep {
        let a = self.aside.get_or_insert_with(Box::default);
        a.config = None;
        a.head = Vec::new();
        a.front = Some(response);
        self.flags |= ENDED | AWAIT_PEER;
        ReadStep::Eof
    }

    /// WebSocket frames: message payloads go to `messages`.
    fn ws_input(&mut self, mut raw: &[u8], messages: &mut Vec<u8>) -> ReadStep {
        loop {
            match self.decoder.decode(&mut raw) {
                Ok(Some(Event::Text(m) | Event::Binary(m))) => {
                    messages.extend_from_slice(&m);
                    if let Some(t) = self.terminator.filter(|t| !m.contains(t)) {
                        messages.push(t);
                    }
                }
                Ok(Some(Event::Ping(payload))) => {
                    let mut pong = BytesMut::new();
                    ws::pong(&mut pong, &payload);
                    self.aside.get_or_insert_with(Box::default).front = Some(pong.freeze());
                }
                Ok(Some(Event::Pong(_))) => {}
                Ok(Some(Event::Close(frame))) => {
                    // Echo the peer's code (RFC 6455 5.5.1); none: 1000.
                    let code = frame.map_or(close_code::NORMAL, |f| f.code);
                    self.queue_close(code);
                    // Both closes are sent: the peer is done, drop when written.
                    self.flags = (self.flags | ENDED) & !AWAIT_PEER;
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    debug!(
                        "WebSocket protocol error: {e:?}; closing with {}",
                        e.close_code()
                    );
                    self.queue_close(e.close_code());
                    self.flags |= ENDED | AWAIT_PEER;
                    break;
                }
            }
        }
        match (self.has(ENDED), messages.is_empty()) {
            (false, true) => ReadStep::Progress,
            (false, false) => ReadStep::Data(messages.len()),
            (true, true) => ReadStep::Eof,
            (true, false) => {
                self.flags |= EOF_DUE;
                ReadStep::Data(messages.len())
            }
        }
    }

    fn queue_close(&mut self, code: u16) {
        if self.flags & CLOSE_SENT == 0 {
            self.flags |= CLOSE_SENT;
            self.close_due = code;
        }
    }

    /// Writes the layer's bytes and the protocol's queue (see
    /// [`super::Transport::write_to`]): an HTTP answer or a pong in front,
    /// a close after everything, and TLS `close_notify` last.
    pub fn write_to<S: Write>(
        &mut self,
        sock: &mut S,
        out: &mut OutQueue,
        scratch: &mut [u8],
        closing: bool,
    ) -> io::Result<bool> {
        if !self.has(UPGRADED) {
            // Frames queued before an upgrade are not for an HTTP client
            // (an answer of ours, once partly written, is kept).
            out.discard_unstarted();
        }
        if let Some(a) = &mut self.aside {
            if let Some(front) = a.front.take() {
                let is_pong = self.flags & UPGRADED != 0 && self.flags & ENDED == 0;
                if !(is_pong && out.len() > PONG_MAX_BACKLOG) {
                    if let Err(front) = out.push_front(front) {
                        out.push(front);
                    }
                }
            }
            if a.config.is_none() && a.head.is_empty() && a.secured.is_none() {
                self.aside = None;
            }
        }
        if closing && self.has(UPGRADED) {
            self.queue_close(close_code::NORMAL);
            // Closing first: wait for the peer's close (bounded by the linger).
            if !self.has(ENDED) {
                self.flags |= AWAIT_PEER;
            }
        }
        if self.close_due != 0 {
            let mut frame = BytesMut::new();
            ws::close(&mut frame, self.close_due, "");
            out.push(frame.freeze());
            self.close_due = 0;
        }
        self.lower.write(sock, out, scratch, closing)
    }

    /// After a failed read: the TLS alert, if any (best effort).
    pub fn write_alert<S: Write>(&mut self, sock: &mut S, scratch: &mut [u8]) {
        self.lower.write_alert(sock, scratch);
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::ws::OpCode;

    const KEY_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: switchboard.v1\r\n\r\n";

    fn layer() -> WsLayer {
        let config = WsConfig {
            max_message: 64,
            page: Some(WsConfig::page_response(b"<html>page</html>")),
            terminator: Some(b'\n'),
        };
        WsLayer::new(Arc::new(config), NoTls)
    }

    /// One read of `input`; the step and the protocol's bytes.
    fn read(ws: &mut WsLayer, bufs: &mut ReadBufs, mut input: &[u8]) -> (String, Vec<u8>) {
        let step = ws
            .read_step(&mut input, bufs, usize::MAX)
            .expect("no read error");
        assert!(input.is_empty(), "a read takes what the socket has");
        match step {
            ReadStep::Data(n) => ("data".into(), bufs.messages[..n].to_vec()),
            ReadStep::Progress => ("progress".into(), Vec::new()),
            ReadStep::Eof => ("eof".into(), Vec::new()),
            ReadStep::WouldBlock => ("wouldblock".into(), Vec::new()),
        }
    }

    /// What a flush writes.
    fn written(ws: &mut WsLayer, out: &mut OutQueue, closing: bool) -> Vec<u8> {
        let mut sink = Vec::new();
        let mut scratch = [0u8; 256];
        let pending = ws
            .write_to(&mut sink, out, &mut scratch, closing)
            .expect("write");
        assert!(!pending);
        sink
    }

    fn client(op: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        crate::ws::client_frame(&mut b, op, fin, payload, [1, 2, 3, 4]);
        b.to_vec()
    }

    fn upgraded() -> (WsLayer, ReadBufs, OutQueue) {
        let mut ws = layer();
        let mut bufs = ReadBufs::new(1024);
        assert_eq!(read(&mut ws, &mut bufs, KEY_REQUEST).0, "progress");
        let mut out = OutQueue::default();
        let response = written(&mut ws, &mut out, false);
        assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
        (ws, bufs, out)
    }

    #[test]
    fn the_upgrade_arrives_a_byte_at_a_time_and_its_buffers_are_released() {
        let mut ws = layer();
        let mut bufs = ReadBufs::new(1024);
        for b in KEY_REQUEST {
            assert_eq!(read(&mut ws, &mut bufs, &[*b]).0, "progress");
        }
        assert!(ws.is_upgraded() && ws.wants_write());
        // An ERR queued before the upgrade (in WebSocket framing) and a
        // reply after it: the 101 goes in front of both.
        let mut out = OutQueue::default();
        out.push(crate::ws::message_for_frame(b"ACK 9\nlogged in"));
        let sent = written(&mut ws, &mut out, false);
        let text = String::from_utf8_lossy(&sent);
        assert!(
            text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{text}"
        );
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: switchboard.v1\r\n"));
        assert!(sent.ends_with(b"\x81\x0fACK 9\nlogged in"), "{text}");
        assert!(ws.aside.is_none(), "the request's buffers are freed");
        assert!(!ws.wants_write());
    }

    #[test]
    fn frames_sent_with_the_request_are_read_after_the_upgrade() {
        let mut ws = layer();
        let mut bufs = ReadBufs::new(1024);
        let mut input = KEY_REQUEST.to_vec();
        input.extend(client(OpCode::Text, true, b"USER 0 alice"));
        let (step, data) = read(&mut ws, &mut bufs, &input);
        assert_eq!(step, "data");
        assert_eq!(
            data, b"USER 0 alice\n",
            "a message without a newline gets one"
        );
    }

    #[test]
    fn fragments_and_an_interleaved_ping_give_one_frame_and_a_pong() {
        let (mut ws, mut bufs, mut out) = upgraded();
        let mut input = client(OpCode::Text, false, b"PUBLISH 5 1\nhe");
        input.extend(client(OpCode::Ping, true, b"p1"));
        input.extend(client(OpCode::Continuation, true, b"llo"));
        for b in &input[..input.len() - 1] {
            let (step, _) = read(&mut ws, &mut bufs, &[*b]);
            assert_eq!(step, "progress");
        }
        let (step, data) = read(&mut ws, &mut bufs, &input[input.len() - 1..]);
        assert_eq!(
            (step.as_str(), &data[..]),
            ("data", &b"PUBLISH 5 1\nhello"[..])
        );
        assert_eq!(written(&mut ws, &mut out, false), b"\x8a\x02p1");
    }

    #[test]
    fn binary_messages_and_pongs_pass_as_they_should() {
        let (mut ws, mut bufs, mut out) = upgraded();
        let mut input = client(OpCode::Binary, true, b"PUBLISH 2 1\n\xff\x00");
        input.extend(client(OpCode::Pong, true, b"x"));
        let (step, data) = read(&mut ws, &mut bufs, &input);
        assert_eq!(
            (step.as_str(), &data[..]),
            ("data", &b"PUBLISH 2 1\n\xff\x00"[..])
        );
        assert!(
            written(&mut ws, &mut out, false).is_empty(),
            "a pong gets nothing"
        );
    }

    #[test]
    fn a_close_is_answered_and_ends_the_input() {
        let (mut ws, mut bufs, mut out) = upgraded();
        let mut close = BytesMut::new();
        crate::ws::client_close(&mut close, 1001, "bye", [9, 9, 9, 9]);
        let mut input = client(OpCode::Text, true, b"QUIT 0\n");
        input.extend_from_slice(&close);
        let (step, data) = read(&mut ws, &mut bufs, &input);
        assert_eq!((step.as_str(), &data[..]), ("data", &b"QUIT 0\n"[..]));
        assert_eq!(read(&mut ws, &mut bufs, b"").0, "eof", "then the end");
        // The protocol's last reply, then the close echoing 1001.
        out.push(crate::ws::message_for_frame(b"ACK 3\nbye"));
        let sent = written(&mut ws, &mut out, true);
        assert_eq!(sent, b"\x81\x09ACK 3\nbye\x88\x02\x03\xe9");
        assert!(!ws.awaits_peer(), "both closes sent: drop it");
        // Whatever comes after is dropped.
        assert_eq!(read(&mut ws, &mut bufs, b"junk").0, "progress");
    }

    #[test]
    fn protocol_errors_close_with_the_rfc_codes_and_wait_for_the_peer() {
        let cases: [(Vec<u8>, u16); 4] = [
            // Unmasked.
            (b"\x81\x02hi".to_vec(), 1002),
            // A reserved bit.
            (
                client(OpCode::Text, true, b"x")
                    .iter()
                    .enumerate()
                    .map(|(i, b)| if i == 0 { b | 0x40 } else { *b })
                    .collect(),
                1002,
            ),
            (client(OpCode::Text, true, b"\xff\xfe"), 1007),
            (client(OpCode::Binary, true, &[b'a'; 65]), 1009),
        ];
        for (input, code) in cases {
            let (mut ws, mut bufs, mut out) = upgraded();
            assert_eq!(read(&mut ws, &mut bufs, &input).0, "eof", "code {code}");
            let sent = written(&mut ws, &mut out, true);
            let mut expected = vec![0x88, 0x02];
            expected.extend(code.to_be_bytes());
            assert_eq!(sent, expected);
            assert!(ws.awaits_peer(), "waits for the peer to read the code");
            assert_eq!(read(&mut ws, &mut bufs, b"more").0, "progress");
            assert_eq!(read(&mut ws, &mut bufs, b"").0, "eof");
            assert!(!ws.awaits_peer(), "until its end");
        }
    }

    #[test]
    fn a_server_close_follows_the_output_and_waits_for_the_peers_close() {
        let (mut ws, mut bufs, mut out) = upgraded();
        out.push(crate::ws::message_for_frame(b"ERR 21 login-timeout\nx"));
        let sent = written(&mut ws, &mut out, true);
        assert!(sent.ends_with(b"\x88\x02\x03\xe8"), "{sent:?}");
        assert!(ws.awaits_peer());
        assert!(
            written(&mut ws, &mut out, true).is_empty(),
            "one close only"
        );
        let mut close = BytesMut::new();
        crate::ws::client_close(&mut close, 1000, "", [1, 1, 1, 1]);
        assert_eq!(read(&mut ws, &mut bufs, &close).0, "eof");
        assert!(!ws.awaits_peer());
        assert!(
            written(&mut ws, &mut out, true).is_empty(),
            "no second close"
        );
    }

    #[test]
    fn plain_gets_are_answered_with_the_page_or_404_and_frames_are_dropped() {
        for (request, status, body) in [
            (
                &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                "200 OK",
                "<html>page</html>",
            ),
            (
                b"GET /?room=1 HTTP/1.1\r\n\r\n",
                "200 OK",
                "<html>page</html>",
            ),
            (
                b"GET /favicon.ico HTTP/1.1\r\n\r\n",
                "404 Not Found",
                "not found\n",
            ),
            (
                b"POST / HTTP/1.1\r\n\r\n",
                "405 Method Not Allowed",
                "method must be GET\n",
            ),
        ] {
            let mut ws = layer();
            let mut bufs = ReadBufs::new(1024);
            assert_eq!(read(&mut ws, &mut bufs, request).0, "eof");
            // The protocol's farewell (an ERR) is not for an HTTP client.
            let mut out = OutQueue::default();
            out.push(Bytes::from_static(b"ERR 4 server-full\n"));
            let sent = String::from_utf8(written(&mut ws, &mut out, true)).expect("text");
            assert!(
                sent.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{sent}"
            );
            assert!(sent.ends_with(body), "{sent}");
            assert!(sent.contains("Connection: close\r\n"));
            assert!(ws.awaits_peer());
            assert_eq!(read(&mut ws, &mut bufs, b"").0, "eof");
            assert!(!ws.awaits_peer());
        }
    }

    #[test]
    fn refused_upgrades_get_their_http_error() {
        let bad_protocol = String::from_utf8_lossy(KEY_REQUEST).replace("switchboard.v1", "chat");
        let old_version = String::from_utf8_lossy(KEY_REQUEST).replace("Version: 13", "Version: 8");
        for (request, status) in [
            (bad_protocol, "400"),
            (old_version, "426"),
            ("GARBAGE\r\n\r\n".into(), "400"),
        ] {
            let mut ws = layer();
            let mut bufs = ReadBufs::new(1024);
            assert_eq!(read(&mut ws, &mut bufs, request.as_bytes()).0, "eof");
            let sent =
                String::from_utf8(written(&mut ws, &mut OutQueue::default(), true)).expect("text");
            assert!(sent.starts_with(&format!("HTTP/1.1 {status} ")), "{sent}");
        }
    }

    #[test]
    fn a_connection_over_the_limit_answers_its_request_with_503() {
        let mut ws = layer();
        let mut bufs = ReadBufs::new(1024);
        ws.refuse_full();
        assert!(ws.holds_shutdown(), "waits for the request");
        assert!(written(&mut ws, &mut OutQueue::default(), true).is_empty());
        assert_eq!(read(&mut ws, &mut bufs, KEY_REQUEST).0, "eof");
        assert!(!ws.holds_shutdown() && !ws.is_upgraded());
        let sent = written(&mut ws, &mut OutQueue::default(), true);
        let text = String::from_utf8_lossy(&sent);
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nserver-full: too many connections, retry\n"));
    }

    #[test]
    fn a_head_without_an_end_is_refused_at_8_kib() {
        let mut ws = layer();
        let mut bufs = ReadBufs::new(1024);
        let line = b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        assert_eq!(
            read(&mut ws, &mut bufs, b"GET / HTTP/1.1\r\n").0,
            "progress"
        );
        let mut sent = 0;
        loop {
            let (step, _) = read(&mut ws, &mut bufs, line);
            sent += line.len();
            if step == "eof" {
                break;
            }
            assert!(sent < MAX_HEAD + line.len(), "refused by then");
        }
        let reply = written(&mut ws, &mut OutQueue::default(), true);
        assert!(reply.starts_with(b"HTTP/1.1 400 "));
    }

    /// A socket whose buffer is full.
    struct Refuse;

    impl Write for Refuse {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(ErrorKind::WouldBlock.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pongs_are_not_queued_for_a_peer_that_does_not_read() {
        let (mut ws, mut bufs, _) = upgraded();
        let mut out = OutQueue::default();
        out.push(Bytes::from(vec![0; PONG_MAX_BACKLOG + 1]));
        read(&mut ws, &mut bufs, &client(OpCode::Ping, true, b"p"));
        let before = out.len();
        let mut sink = Refuse;
        let _ = ws.write_to(&mut sink, &mut out, &mut [0; 64], false);
        assert_eq!(out.len(), before, "no pong behind 64 KiB of unread output");
    }
}
