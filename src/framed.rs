//! The generic layer: serve any protocol on the loop, message by message.
//!
//! A host program picks a [`Framing`] and implements [`FramedHandler`]; the
//! loop ([`crate::EventLoop::listen`]) accepts TCP or TLS connections, cuts
//! their bytes into messages and calls the handler for each one. Handlers
//! answer through a [`FramedContext`]: send to any connection by its
//! [`ConnId`], close one, read its peer address and its verified client
//! certificate subject, or stop the loop.
//!
//! Messages are cut without copying when they arrive whole: the handler gets
//! a slice of the loop's read buffer, and only an unfinished message's tail is
//! kept with the connection (and freed once it is used), as in the broker.
//! Every declared or accumulated length is checked against the framing's
//! `max_len` before the loop waits for more, so a peer cannot make a
//! connection hold more than `max_len` bytes of input: a message over it
//! closes that connection (reason [`CloseReason::TooLarge`], logged), and
//! only that one.
//!
//! The state machine here is sans-IO (`FramedService` takes bytes, end of
//! stream, TLS identities and `Instant`s, and gives queued output), so its
//! unit tests drive it byte by byte without sockets.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, info};
use slab::Slab;

use crate::broker::{CloseReason, ConnId};
use crate::buf::OutQueue;
use crate::conn::PeerIdentity;

/// How a byte stream is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Framing {
    /// Messages end with `delimiter` (not part of the message), e.g. `b'\n'`
    /// for lines. A message longer than `max_len` closes the connection.
    /// [`FramedContext::send`] appends the delimiter.
    Delimited {
        /// The byte that ends a message.
        delimiter: u8,
        /// The longest message accepted, without the delimiter.
        max_len: usize,
    },
    /// Each message is preceded by its length as a 4-byte big-endian number.
    /// A declared length over `max_len` closes the connection as soon as the
    /// prefix arrives, without waiting for the body.
    /// [`FramedContext::send`] adds the prefix.
    LengthPrefixed {
        /// The longest message accepted, without the prefix.
        max_len: usize,
    },
    /// No framing: each read's bytes are handed over as they come (a
    /// "message" is whatever one read returned). [`FramedContext::send`]
    /// writes the bytes as they are.
    Raw,
}

/// The length prefix of [`Framing::LengthPrefixed`].
const PREFIX_LEN: usize = 4;
/// Input is not read from a connection while more than this much of its
/// output waits (TCP pushes back on the peer), as in the broker.
const READ_PAUSE_OUTPUT: usize = 256 << 10;
/// [`FramedContext::send`] refuses a message while this much output already
/// waits for a connection, so a peer that never reads cannot grow memory.
pub const MAX_PENDING_OUTPUT: usize = 16 << 20;
/// How long a closing connection waits for its peer to close.
const LINGER: Duration = Duration::from_secs(2);

/// A message over the framing's maximum length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLong {
    /// The declared length, or the bytes seen without a delimiter.
    len: usize,
    max_len: usize,
}

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "message of {} bytes or more is over the maximum of {}",
            self.len, self.max_len
        )
    }
}

/// Finds the first complete message in `buf`: `Ok(Some((start, end,
/// consumed)))` with the message at `buf[start..end]` and `consumed` bytes
/// used; `Ok(None)` when more input is needed.
///
/// # Errors
///
/// [`TooLong`] as soon as `buf` proves the message is over `max_len`.
pub(crate) fn next_message(
    framing: Framing,
    buf: &[u8],
) -> Result<Option<(usize, usize, usize)>, TooLong> {
    match framing {
        Framing::Delimited { delimiter, max_len } => {
            // Look no further than one past the longest message.
            let window = buf.get(..max_len.saturating_add(1)).unwrap_or(buf);
            match window.iter().position(|&b| b == delimiter) {
                Some(i) => Ok(Some((0, i, i + 1))),
                None if buf.len() > max_len => Err(TooLong {
                    len: buf.len(),
                    max_len,
                }),
                None => Ok(None),
            }
        }
        Framing::LengthPrefixed { max_len } => {
            let Some(prefix) = buf.get(..PREFIX_LEN) else {
                return Ok(None);
            };
            let mut be = [0u8; PREFIX_LEN];
            be.copy_from_slice(prefix);
            let len = usize::try_from(u32::from_be_bytes(be)).unwrap_or(usize::MAX);
            if len > max_len {
                return Err(TooLong { len, max_len });
            }
            let end = PREFIX_LEN + len;
            if buf.len() < end {
                return Ok(None);
            }
            Ok(Some((PREFIX_LEN, end, end)))
        }
        Framing::Raw => Ok((!buf.is_empty()).then_some((0, buf.len(), buf.len()))),
    }
}

/// Frames `message` for sending, or `None` if the framing cannot carry it.
fn encode(framing: Framing, message: &[u8]) -> Option<Bytes> {
    match framing {
        Framing::Delimited { delimiter, max_len } => {
            if message.len() > max_len || message.contains(&delimiter) {
                return None;
            }
            let mut v = Vec::with_capacity(message.len() + 1);
            v.extend_from_slice(message);
            v.push(delimiter);
            Some(v.into())
        }
        Framing::LengthPrefixed { max_len } => {
            if message.len() > max_len {
                return None;
            }
            let len = u32::try_from(message.len()).ok()?;
            let mut v = Vec::with_capacity(message.len() + PREFIX_LEN);
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(message);
            Some(v.into())
        }
        Framing::Raw => Some(Bytes::copy_from_slice(message)),
    }
}

/// Callbacks of a framed service. They run on the loop thread and must not
/// block. `on_established` and `on_closed` come in pairs: a connection whose
/// TLS handshake never completed is never reported. The one exception is an
/// outgoing connection ([`crate::EventLoop::connect`]) that was never
/// established: it gets `on_closed` alone, with
/// [`CloseReason::ConnectFailed`] (or [`CloseReason::Tls`] for a failed
/// handshake).
#[allow(unused_variables)] // The defaults ignore their arguments by design.
pub trait FramedHandler {
    /// A connection is ready: accepted (plain TCP), connected (outgoing), or
    /// its TLS handshake completed (TLS; [`FramedContext::client_cert`] then has the verified
    /// client certificate subject, if one was presented).
    fn on_established(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId) {}
    /// A whole message arrived (without its delimiter or length prefix).
    fn on_message(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId, message: &[u8]);
    /// A connection ended (`reason` says why; [`CloseReason::TooLarge`] for a
    /// message over the maximum length). Its id may be reused afterwards.
    fn on_closed(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId, reason: CloseReason) {}
}

/// What a [`FramedHandler`] callback may do inside the loop.
pub struct FramedContext<'a> {
    core: &'a mut dyn CoreOps,
    now: Instant,
}

impl std::fmt::Debug for FramedContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedContext")
            .field("connections", &self.core.count())
            .finish()
    }
}

impl FramedContext<'_> {
    /// Queues `message` for `conn`, framed per the service's [`Framing`]
    /// (delimiter appended, length prefixed, or as is). Returns `false`, and
    /// queues nothing, when the connection is unknown or closing, when the
    /// framing cannot carry the message (over `max_len`, or containing the
    /// delimiter), or when over [`MAX_PENDING_OUTPUT`] bytes already wait.
    pub fn send(&mut self, conn: ConnId, message: &[u8]) -> bool {
        self.core.send(conn, message)
    }

    /// Starts closing `conn`: what was queued is sent first, then the write
    /// side is shut down ([`CloseReason::Closed`]).
    pub fn close(&mut self, conn: ConnId) {
        self.core.close(conn, CloseReason::Closed, self.now);
    }

    /// The peer address of `conn`.
    pub fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        self.core.peer(conn)
    }

    /// The verified client certificate subject of `conn`, on a TLS listener
    /// that asks for client certificates; on an outgoing TLS connection, the
    /// verified server certificate's subject.
    pub fn client_cert(&self, conn: ConnId) -> Option<&PeerIdentity> {
        self.core.client_cert(conn)
    }

    /// The open connections of this service (established or not).
    pub fn connections(&self) -> Vec<ConnId> {
        self.core.connections()
    }

    /// Stops the whole loop gracefully, as [`crate::LoopHandle::stop`] does.
    pub fn stop(&mut self) {
        self.core.stop();
    }
}

/// What [`FramedContext`] reaches in the service, without naming its
/// transport type.
trait CoreOps {
    fn send(&mut self, conn: ConnId, message: &[u8]) -> bool;
    fn close(&mut self, conn: ConnId, reason: CloseReason, now: Instant);
    fn peer(&self, conn: ConnId) -> Option<SocketAddr>;
    fn client_cert(&self, conn: ConnId) -> Option<&PeerIdentity>;
    fn connections(&self) -> Vec<ConnId>;
    fn count(&self) -> usize;
    fn stop(&mut self);
}

/// A connection that is closing.
#[derive(Debug, Clone, Copy)]
struct Closing {
    reason: CloseReason,
    deadline: Instant,
    /// The peer closed its side.
    eof: bool,
}

/// One connection of a framed service.
#[derive(Debug)]
struct FConn<T> {
    io: T,
    peer: SocketAddr,
    cert: Option<Box<PeerIdentity>>,
    /// An unfinished message's bytes; freed when consumed.
    inbuf: Vec<u8>,
    out: OutQueue,
    established: bool,
    dirty: bool,
    closing: Option<Closing>,
}

/// The per-connection state of a framed service, apart from its handler.
#[derive(Debug)]
pub(crate) struct FramedCore<T> {
    framing: Framing,
    conns: Slab<FConn<T>>,
    dirty: Vec<usize>,
    /// Closing connections' linger deadlines.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    shutting_down: bool,
    stop: bool,
}

impl<T> FramedCore<T> {
    fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    fn begin_close(&mut self, key: usize, reason: CloseReason, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.closing.is_some() {
            return;
        }
        let deadline = now + LINGER;
        c.closing = Some(Closing {
            reason,
            deadline,
            eof: false,
        });
        c.inbuf = Vec::new();
        debug!("#{key} {}: closing ({reason})", c.peer);
        self.timers.push(Reverse((deadline, key)));
        self.mark_dirty(key);
    }

    fn is_open(&self, key: usize) -> bool {
        self.conns.get(key).is_some_and(|c| c.closing.is_none())
    }
}

impl<T> CoreOps for FramedCore<T> {
    fn send(&mut self, conn: ConnId, message: &[u8]) -> bool {
        let framing = self.framing;
        let Some(c) = self.conns.get_mut(conn.0) else {
            return false;
        };
        if c.closing.is_some() || c.out.len() > MAX_PENDING_OUTPUT {
            return false;
        }
        let Some(bytes) = encode(framing, message) else {
            return false;
        };
        c.out.push(bytes);
        self.mark_dirty(conn.0);
        true
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
        self.begin_close(conn.0, reason, now);
    }

    fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        self.conns.get(conn.0).map(|c| c.peer)
    }

    fn client_cert(&self, conn: ConnId) -> Option<&PeerIdentity> {
        self.conns.get(conn.0).and_then(|c| c.cert.as_deref())
    }

    fn connections(&self) -> Vec<ConnId> {
        self.conns.iter().map(|(k, _)| ConnId(k)).collect()
    }

    fn count(&self) -> usize {
        self.conns.len()
    }

    fn stop(&mut self) {
        self.stop = true;
    }
}

/// A framed service: connections cut into messages per a [`Framing`], handed
/// to a [`FramedHandler`]. `T` is what the reactor keeps with each
/// connection (its socket); tests use `()`.
#[derive(Debug)]
pub(crate) struct FramedService<T, H> {
    pub(crate) core: FramedCore<T>,
    pub(crate) handler: H,
    /// `on_established` waits for `handle_secured`: the connections are TLS
    /// (the handshake) or outgoing (the connect).
    deferred: bool,
    /// The connection is outgoing: one that never got established is still
    /// reported to `on_closed`, or its handler would never hear of it.
    outgoing: bool,
}

impl<T, H: FramedHandler> FramedService<T, H> {
    pub(crate) fn new(framing: Framing, deferred: bool, handler: H) -> Self {
        Self {
            core: FramedCore {
                framing,
                conns: Slab::new(),
                dirty: Vec::new(),
                timers: BinaryHeap::new(),
                shutting_down: false,
                stop: false,
            },
            handler,
            deferred,
            outgoing: false,
        }
    }

    /// Marks the service's connections as outgoing (see `on_closed`).
    pub(crate) fn outgoing(mut self) -> Self {
        self.outgoing = true;
        self
    }

    fn established(&mut self, key: usize, now: Instant) {
        let Some(c) = self.core.conns.get_mut(key) else {
            return;
        };
        if c.established || c.closing.is_some() {
            return;
        }
        c.established = true;
        let mut ctx = FramedContext {
            core: &mut self.core,
            now,
        };
        self.handler.on_established(&mut ctx, ConnId(key));
    }

    /// Cuts `data` into messages and hands them to the handler. Returns how
    /// many bytes were used; the rest is an unfinished message. Stops (and
    /// reports everything used) once the connection is closing.
    fn process(&mut self, key: usize, data: &[u8], now: Instant) -> usize {
        let mut used = 0;
        loop {
            if !self.core.is_open(key) {
                return data.len();
            }
            let rest = data.get(used..).unwrap_or_default();
            match next_message(self.core.framing, rest) {
                Ok(Some((start, end, consumed))) => {
                    let message = rest.get(start..end).unwrap_or_default();
                    used += consumed;
                    let mut ctx = FramedContext {
                        core: &mut self.core,
                        now,
                    };
                    self.handler.on_message(&mut ctx, ConnId(key), message);
                }
                Ok(None) => return used,
                Err(e) => {
                    self.too_long(key, e, now);
                    return data.len();
                }
            }
        }
    }

    /// A message over the maximum: logged, and the connection closed.
    fn too_long(&mut self, key: usize, e: TooLong, now: Instant) {
        let peer = self.core.peer(ConnId(key));
        info!(
            "#{key} {}: closing: {e}",
            peer.map(|p| p.to_string()).unwrap_or_default()
        );
        self.core.begin_close(key, CloseReason::TooLarge, now);
    }

    pub(crate) fn accept(&mut self, io: T, peer: SocketAddr, now: Instant) -> Result<ConnId, T> {
        if self.core.shutting_down {
            return Err(io);
        }
        let key = self.core.conns.insert(FConn {
            io,
            peer,
            cert: None,
            inbuf: Vec::new(),
            out: OutQueue::default(),
            established: false,
            dirty: false,
            closing: None,
        });
        debug!("#{key} {peer}: connected");
        if !self.deferred {
            self.established(key, now);
        }
        Ok(ConnId(key))
    }

    pub(crate) fn io_mut(&mut self, conn: ConnId) -> Option<&mut T> {
        self.core.conns.get_mut(conn.0).map(|c| &mut c.io)
    }

    pub(crate) fn io_and_output(&mut self, conn: ConnId) -> Option<(&mut T, &mut OutQueue)> {
        self.core
            .conns
            .get_mut(conn.0)
            .map(|c| (&mut c.io, &mut c.out))
    }

    /// Whether to read now: not while too much output waits. A closing
    /// connection is read (and its input discarded) until the peer closes.
    pub(crate) fn wants_read(&self, conn: ConnId) -> bool {
        self.core
            .conns
            .get(conn.0)
            .is_some_and(|c| c.closing.is_some() || c.out.len() <= READ_PAUSE_OUTPUT)
    }

    pub(crate) fn is_closing(&self, conn: ConnId) -> bool {
        self.core
            .conns
            .get(conn.0)
            .is_some_and(|c| c.closing.is_some())
    }

    /// Whether to drop the connection now: closing, and either flushed with
    /// the peer gone, or past its linger deadline.
    pub(crate) fn finished(&self, conn: ConnId, now: Instant) -> bool {
        match self.core.conns.get(conn.0) {
            Some(c) => c
                .closing
                .is_some_and(|cl| (cl.eof && c.out.is_empty()) || now >= cl.deadline),
            None => true,
        }
    }

    pub(crate) fn take_dirty(&mut self, into: &mut Vec<ConnId>) {
        into.clear();
        for key in self.core.dirty.drain(..) {
            if let Some(c) = self.core.conns.get_mut(key) {
                c.dirty = false;
                into.push(ConnId(key));
            }
        }
    }

    pub(crate) fn has_dirty(&self) -> bool {
        !self.core.dirty.is_empty()
    }

    /// Closing connections past their linger are marked for the reactor to drop.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, key))) = self.core.timers.peek() {
            if at > now {
                break;
            }
            self.core.timers.pop();
            let due = self
                .core
                .conns
                .get(key)
                .and_then(|c| c.closing)
                .is_some_and(|cl| cl.deadline <= now);
            if due {
                self.core.mark_dirty(key);
            }
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.core.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Bytes received: every whole message goes to the handler at once, and
    /// only an unfinished one's tail is kept.
    pub(crate) fn handle_input(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        let key = conn.0;
        let Some(c) = self.core.conns.get_mut(key) else {
            return;
        };
        if c.closing.is_some() || data.is_empty() {
            return;
        }
        if c.inbuf.is_empty() {
            let used = self.process(key, data, now);
            if let Some(c) = self.core.conns.get_mut(key) {
                if c.closing.is_none() {
                    c.inbuf
                        .extend_from_slice(data.get(used..).unwrap_or_default());
                }
            }
        } else {
            if let Framing::Delimited { delimiter, max_len } = self.core.framing {
                if !data.contains(&delimiter) {
                    // The kept tail has no delimiter either (it would have
                    // been cut): still one unfinished message. Checking only
                    // the new bytes keeps a peer that drips one byte at a
                    // time from making every read rescan up to `max_len`.
                    let len = c.inbuf.len() + data.len();
                    if len > max_len {
                        self.too_long(key, TooLong { len, max_len }, now);
                    } else {
                        c.inbuf.extend_from_slice(data);
                    }
                    return;
                }
            }
            c.inbuf.extend_from_slice(data);
            let buf = std::mem::take(&mut c.inbuf);
            let used = self.process(key, &buf, now);
            if let Some(c) = self.core.conns.get_mut(key) {
                if c.closing.is_none() && used < buf.len() {
                    let mut buf = buf;
                    buf.drain(..used);
                    if buf.capacity() > 2 * buf.len() + 4096 {
                        buf.shrink_to_fit();
                    }
                    c.inbuf = buf;
                }
            }
        }
    }

    /// The peer closed its side: an unfinished message is dropped, what is
    /// queued is flushed, then the connection closes.
    pub(crate) fn handle_eof(&mut self, conn: ConnId, now: Instant) {
        let key = conn.0;
        let Some(c) = self.core.conns.get_mut(key) else {
            return;
        };
        if !c.inbuf.is_empty() {
            debug!(
                "#{key}: peer closed inside a message ({} bytes dropped)",
                c.inbuf.len()
            );
        }
        self.core.begin_close(key, CloseReason::PeerClosed, now);
        if let Some(cl) = self
            .core
            .conns
            .get_mut(key)
            .and_then(|c| c.closing.as_mut())
        {
            cl.eof = true;
        }
        self.core.mark_dirty(key);
    }

    /// The TLS handshake completed, or an outgoing connect did: the
    /// connection is established.
    pub(crate) fn handle_secured(
        &mut self,
        conn: ConnId,
        subject: Option<PeerIdentity>,
        now: Instant,
    ) {
        let Some(c) = self.core.conns.get_mut(conn.0) else {
            return;
        };
        debug!(
            "{conn} {}: TLS established{}",
            c.peer,
            subject
                .as_ref()
                .map(|s| format!(", client {s}"))
                .unwrap_or_default()
        );
        c.cert = subject.map(Box::new);
        self.established(conn.0, now);
        self.core.mark_dirty(conn.0);
    }

    pub(crate) fn touch(&mut self, conn: ConnId) {
        self.core.mark_dirty(conn.0);
    }

    /// Nothing to do: input is processed as it arrives, and only reading
    /// pauses under backpressure.
    pub(crate) fn resume(&mut self, _conn: ConnId, _now: Instant) {}

    /// Drops a connection and tells the handler (if it was established, or
    /// is outgoing).
    pub(crate) fn remove(&mut self, conn: ConnId, reason: CloseReason, now: Instant) -> Option<T> {
        let c = self.core.conns.try_remove(conn.0)?;
        let reason = c.closing.map_or(reason, |cl| cl.reason);
        debug!("{conn} {}: closed ({reason})", c.peer);
        if c.established || self.outgoing {
            let mut ctx = FramedContext {
                core: &mut self.core,
                now,
            };
            self.handler.on_closed(&mut ctx, conn, reason);
        }
        Some(c.io)
    }

    /// Refuses new connections and closes every open one gracefully.
    pub(crate) fn shutdown(&mut self, now: Instant) {
        self.core.shutting_down = true;
        let keys: Vec<usize> = self.core.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.core.begin_close(key, CloseReason::Shutdown, now);
        }
    }

    pub(crate) fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        self.core.peer(conn)
    }

    pub(crate) fn len(&self) -> usize {
        self.core.conns.len()
    }

    pub(crate) fn linger(&self) -> Duration {
        LINGER
    }

    /// Whether a handler asked to stop and [`FramedService::take_stop`] has
    /// not reported it yet.
    pub(crate) fn stop_requested(&self) -> bool {
        self.core.stop
    }

    /// Whether a handler asked to stop since the last call.
    pub(crate) fn take_stop(&mut self) -> bool {
        std::mem::take(&mut self.core.stop)
    }
}

#[cfg(test)]
mod tests;
