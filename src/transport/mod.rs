//! The transports under every protocol: what a connection's bytes pass
//! through between the socket and the protocol, as one type the IO layer
//! steps without knowing which it is.
//!
//! A transport is sans-IO in the way [`TlsSession`] is: generic over
//! `Read`/`Write`, so it is driven by a socket in the reactor and by
//! in-memory pipes in tests. Plain TCP hands bytes through; TLS decrypts
//! into a plaintext buffer and encrypts the protocol's output queue;
//! WebSocket ([`ws`]) answers the HTTP upgrade, then decodes messages into
//! the protocol's byte stream, over plain TCP or over TLS. The protocol
//! above (the broker, a framed service) only ever sees its own bytes, so
//! "TLS under a framed service" or "WebSocket over TLS under the broker" is
//! a composition, not new code in the reactor or in a protocol.

use std::io::{self, ErrorKind, Read, Write};

pub mod ws;

use crate::buf::OutQueue;
use crate::conn::PeerIdentity;
use crate::tls::{ReadError, ReadStep, TlsSession};
pub use ws::{NoTls, WsConfig, WsLayer};

/// The buffers one loop shares among all its connections' reads: the
/// socket's bytes, TLS plaintext, and decoded WebSocket messages.
#[derive(Debug)]
pub struct ReadBufs {
    /// Bytes as read from the socket.
    pub scratch: Box<[u8]>,
    /// Plaintext decrypted from TLS records.
    pub plain: Vec<u8>,
    /// Payloads of WebSocket messages.
    pub messages: Vec<u8>,
}

impl ReadBufs {
    /// Buffers for reads of up to `len` bytes at a time.
    pub fn new(len: usize) -> Self {
        Self {
            scratch: vec![0; len].into_boxed_slice(),
            plain: Vec::with_capacity(len),
            messages: Vec::new(),
        }
    }

    /// Frees a message buffer that a large message grew (kept up to the
    /// scratch size).
    pub fn trim(&mut self) {
        if self.messages.capacity() > self.scratch.len() {
            self.messages = Vec::new();
        }
    }
}

/// The transport of one connection. Plain costs nothing beyond the tag;
/// TLS and WebSocket are boxed (one pointer), so the enum is two words.
#[derive(Debug)]
pub enum Transport {
    /// Bytes as they come.
    Plain,
    /// TLS (either end), on rustls's unbuffered API.
    Tls(Box<TlsSession>),
    /// WebSocket (server end) over plain TCP.
    Ws(Box<WsLayer<NoTls>>),
    /// WebSocket over TLS, in one allocation with its TLS session.
    Wss(Box<WsLayer<TlsSession>>),
}

/// Which transport a connection uses, for counts and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain TCP.
    Tcp,
    /// TLS.
    Tls,
    /// WebSocket over plain TCP.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl Transport {
    /// Whether this is plain TCP (a line can be written on it before any
    /// handshake, e.g. `ERR server-full`).
    pub fn is_plain(&self) -> bool {
        matches!(self, Self::Plain)
    }

    /// Which transport this is.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Plain => Kind::Tcp,
            Self::Tls(_) => Kind::Tls,
            Self::Ws(_) => Kind::Ws,
            Self::Wss(_) => Kind::Wss,
        }
    }

    /// Whether the connection speaks in WebSocket messages, so that the
    /// connection table wraps each frame in one.
    pub fn is_websocket(&self) -> bool {
        matches!(self, Self::Ws(_) | Self::Wss(_))
    }

    /// The connection is over the connection limit (see
    /// [`WsLayer::refuse_full`]); plain and TLS connections get the
    /// protocol's farewell instead.
    pub fn refuse_full(&mut self) {
        match self {
            Self::Ws(ws) => ws.refuse_full(),
            Self::Wss(ws) => ws.refuse_full(),
            _ => {}
        }
    }

    /// Whether the write side must stay open though everything owed is
    /// written ([`WsLayer::holds_shutdown`]).
    pub fn holds_shutdown(&self) -> bool {
        match self {
            Self::Ws(ws) => ws.holds_shutdown(),
            Self::Wss(ws) => ws.holds_shutdown(),
            _ => false,
        }
    }

    /// Whether a connection the protocol is done with should stay until
    /// the peer closes or the linger ends ([`WsLayer::awaits_peer`]).
    pub fn awaits_peer(&self) -> bool {
        match self {
            Self::Ws(ws) => ws.awaits_peer(),
            Self::Wss(ws) => ws.awaits_peer(),
            _ => false,
        }
    }

    /// Reads from `sock` once, at most `window` bytes of plain input or one
    /// scratch buffer of TLS records. [`ReadStep::Data`]`(n)`: the protocol's
    /// bytes are [`Transport::input`]`(bufs, n)`.
    ///
    /// # Errors
    ///
    /// [`ReadError::Io`] from the socket (`Interrupted`: call again), or
    /// [`ReadError::Tls`]; after that, call [`Transport::write_alert`] once
    /// and drop the connection.
    pub fn read_step<S: Read>(
        &mut self,
        sock: &mut S,
        bufs: &mut ReadBufs,
        window: usize,
    ) -> Result<ReadStep, ReadError> {
        match self {
            Self::Tls(tls) => tls.read_step(sock, &mut bufs.scratch, &mut bufs.plain),
            Self::Ws(ws) => ws.read_step(sock, bufs, window),
            Self::Wss(ws) => ws.read_step(sock, bufs, window),
            Self::Plain => {
                let scratch = &mut bufs.scratch[..];
                let buf = match scratch.len().min(window) {
                    n if n == scratch.len() => scratch,
                    n => scratch.get_mut(..n).unwrap_or_default(),
                };
                match sock.read(buf) {
                    Ok(0) => Ok(ReadStep::Eof),
                    Ok(n) => Ok(ReadStep::Data(n)),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(ReadStep::WouldBlock),
                    Err(e) => Err(ReadError::Io(e)),
                }
            }
        }
    }

    /// The protocol's bytes of a [`ReadStep::Data`]`(n)`: in `scratch` for
    /// plain TCP, in `plain` for TLS, in `messages` for WebSocket.
    pub fn input<'a>(&self, bufs: &'a ReadBufs, n: usize) -> &'a [u8] {
        let from = match self {
            Self::Plain => &bufs.scratch[..],
            Self::Tls(_) => &bufs.plain[..],
            Self::Ws(_) | Self::Wss(_) => &bufs.messages[..],
        };
        from.get(..n).unwrap_or_default()
    }

    /// An outgoing connection's TCP connect completed: a TLS client end
    /// encodes its first flight.
    pub fn start(&mut self) {
        if let Self::Tls(tls) = self {
            tls.start();
        }
    }

    /// Reports once that the connection is ready for the protocol:
    /// `Some(identity)` when a TLS handshake has just completed, or a
    /// WebSocket upgrade was accepted (after the TLS handshake under it, for
    /// `wss`), with the peer's verified certificate subject, if any. Plain
    /// TCP never reports (the IO layer treats it as established at accept or
    /// connect).
    pub fn take_established(&mut self) -> Option<Option<PeerIdentity>> {
        match self {
            Self::Tls(tls) => tls.take_established(),
            Self::Ws(ws) => ws.take_established(),
            Self::Wss(ws) => ws.take_established(),
            Self::Plain => None,
        }
    }

    /// Whether the transport has bytes of its own to write (TLS handshake
    /// records, an alert, an HTTP answer, a pong or a close).
    pub fn wants_write(&self) -> bool {
        match self {
            Self::Tls(tls) => tls.wants_write(),
            Self::Ws(ws) => ws.wants_write(),
            Self::Wss(ws) => ws.wants_write(),
            Self::Plain => false,
        }
    }

    /// Writes what the transport and `out` have, until done or the socket
    /// would block; returns whether output is still pending. When `closing`,
    /// WebSocket ends with a close frame and TLS with `close_notify` once
    /// everything owed is out.
    ///
    /// # Errors
    ///
    /// What the socket returns other than `WouldBlock` and `Interrupted`.
    pub fn write_to<S: Write>(
        &mut self,
        sock: &mut S,
        out: &mut OutQueue,
        scratch: &mut [u8],
        closing: bool,
    ) -> io::Result<bool> {
        match self {
            Self::Tls(tls) => {
                if closing {
                    tls.send_close_notify();
                }
                tls.write_to(sock, out, scratch)
            }
            Self::Ws(ws) => ws.write_to(sock, out, scratch, closing),
            Self::Wss(ws) => ws.write_to(sock, out, scratch, closing),
            Self::Plain => out.write_to(sock, scratch),
        }
    }

    /// After a failed read: writes the alert TLS prepared, best effort.
    pub fn write_alert<S: Write>(&mut self, sock: &mut S, scratch: &mut [u8]) {
        match self {
            Self::Tls(tls) => {
                let mut none = OutQueue::default();
                let _ = tls.write_to(sock, &mut none, scratch);
            }
            Self::Ws(ws) => ws.write_alert(sock, scratch),
            Self::Wss(ws) => ws.write_alert(sock, scratch),
            Self::Plain => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_is_two_words() {
        // The tag and one box; the reactor's `Conn` packs around it.
        assert_eq!(std::mem::size_of::<Transport>(), 16);
        assert!(std::mem::size_of::<WsLayer>() <= 32);
    }

    #[test]
    fn plain_reads_within_the_window_and_writes_the_queue() {
        let mut t = Transport::Plain;
        let mut input: &[u8] = b"hello world";
        let mut bufs = ReadBufs::new(64);
        let step = t.read_step(&mut input, &mut bufs, 5);
        assert!(matches!(step, Ok(ReadStep::Data(5))));
        assert_eq!(t.input(&bufs, 5), b"hello");
        let step = t.read_step(&mut input, &mut bufs, usize::MAX);
        assert!(matches!(step, Ok(ReadStep::Data(6))));
        assert_eq!(t.input(&bufs, 6), b" world");
        assert!(matches!(
            t.read_step(&mut input, &mut bufs, 5),
            Ok(ReadStep::Eof)
        ));
        let mut scratch = [0u8; 64];
        let mut out = OutQueue::default();
        out.push(bytes::Bytes::from_static(b"abc"));
        let mut sink = Vec::new();
        assert!(!t.write_to(&mut sink, &mut out, &mut scratch, true).unwrap());
        assert_eq!(sink, b"abc");
        assert!(t.take_established().is_none() && !t.wants_write() && t.is_plain());
    }
}
