//! The transports under every protocol: what a connection's bytes pass
//! through between the socket and the protocol, as one type the IO layer
//! steps without knowing which it is.
//!
//! A transport is sans-IO in the way [`TlsSession`] is: generic over
//! `Read`/`Write`, so it is driven by a socket in the reactor and by
//! in-memory pipes in tests. Plain TCP hands bytes through; TLS decrypts
//! into a plaintext buffer and encrypts the protocol's output queue. The
//! protocol above (the broker, a framed service) only ever sees plaintext,
//! so "TLS under a framed service" is a composition, and the next transport
//! (WebSocket, over either) is one more variant here, not new code in the
//! reactor or in a protocol.

use std::io::{self, ErrorKind, Read, Write};

use crate::buf::OutQueue;
use crate::conn::PeerIdentity;
use crate::tls::{ReadError, ReadStep, TlsSession};

/// The transport of one connection. Plain costs nothing beyond the tag;
/// TLS is boxed (one pointer), so the enum is one word.
#[derive(Debug)]
pub enum Transport {
    /// Bytes as they come.
    Plain,
    /// TLS (either end), on rustls's unbuffered API.
    Tls(Box<TlsSession>),
}

impl Transport {
    /// Whether this is plain TCP (a line can be written on it before any
    /// handshake, e.g. `ERR server-full`).
    pub fn is_plain(&self) -> bool {
        matches!(self, Self::Plain)
    }

    /// Reads from `sock` once, at most `window` bytes of plain input or one
    /// scratch buffer of TLS records. [`ReadStep::Data`]`(n)`: the plaintext
    /// is [`Transport::input`]`(scratch, plain, n)`.
    ///
    /// # Errors
    ///
    /// [`ReadError::Io`] from the socket (`Interrupted`: call again), or
    /// [`ReadError::Tls`]; after that, call [`Transport::write_alert`] once
    /// and drop the connection.
    pub fn read_step<S: Read>(
        &mut self,
        sock: &mut S,
        scratch: &mut [u8],
        plain: &mut Vec<u8>,
        window: usize,
    ) -> Result<ReadStep, ReadError> {
        match self {
            Self::Tls(tls) => tls.read_step(sock, scratch, plain),
            Self::Plain => {
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

    /// The plaintext of a [`ReadStep::Data`]`(n)`: in `scratch` for plain
    /// TCP, in `plain` for TLS.
    pub fn input<'a>(&self, scratch: &'a [u8], plain: &'a [u8], n: usize) -> &'a [u8] {
        let from = match self {
            Self::Plain => scratch,
            Self::Tls(_) => plain,
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

    /// Reports once that the connection is secured: `Some(identity)` when a
    /// TLS handshake has just completed (the peer's verified certificate
    /// subject, if any). Plain TCP never reports (the IO layer treats it as
    /// established at accept or connect).
    pub fn take_established(&mut self) -> Option<Option<PeerIdentity>> {
        match self {
            Self::Tls(tls) => tls.take_established(),
            Self::Plain => None,
        }
    }

    /// Whether the transport has bytes of its own to write (TLS handshake
    /// records, an alert).
    pub fn wants_write(&self) -> bool {
        match self {
            Self::Tls(tls) => tls.wants_write(),
            Self::Plain => false,
        }
    }

    /// Writes what the transport and `out` have, until done or the socket
    /// would block; returns whether output is still pending. When `closing`,
    /// TLS ends with `close_notify` once everything owed is out.
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
            Self::Plain => out.write_to(sock, scratch),
        }
    }

    /// After a failed read: writes the alert TLS prepared, best effort.
    pub fn write_alert<S: Write>(&mut self, sock: &mut S, scratch: &mut [u8]) {
        if let Self::Tls(tls) = self {
            let mut none = OutQueue::default();
            let _ = tls.write_to(sock, &mut none, scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_is_one_word() {
        assert_eq!(std::mem::size_of::<Transport>(), 8);
    }

    #[test]
    fn plain_reads_within_the_window_and_writes_the_queue() {
        let mut t = Transport::Plain;
        let mut input: &[u8] = b"hello world";
        let mut scratch = [0u8; 64];
        let mut plain = Vec::new();
        let step = t.read_step(&mut input, &mut scratch, &mut plain, 5);
        assert!(matches!(step, Ok(ReadStep::Data(5))));
        assert_eq!(t.input(&scratch, &plain, 5), b"hello");
        let step = t.read_step(&mut input, &mut scratch, &mut plain, usize::MAX);
        assert!(matches!(step, Ok(ReadStep::Data(6))));
        assert_eq!(t.input(&scratch, &plain, 6), b" world");
        assert!(matches!(
            t.read_step(&mut input, &mut scratch, &mut plain, 5),
            Ok(ReadStep::Eof)
        ));
        let mut out = OutQueue::default();
        out.push(bytes::Bytes::from_static(b"abc"));
        let mut sink = Vec::new();
        assert!(!t.write_to(&mut sink, &mut out, &mut scratch, true).unwrap());
        assert_eq!(sink, b"abc");
        assert!(t.take_established().is_none() && !t.wants_write() && t.is_plain());
    }
}
