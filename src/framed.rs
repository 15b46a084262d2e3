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

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, info, warn};

use crate::conn::{Admission, CloseReason, ConnId, Limits, Links, PeerIdentity, Table};
use crate::reactor::Conn;
use crate::reactor::service::Service;

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

/// A framed connection's own state, beside what the connection table keeps
/// for every connection.
#[derive(Debug, Default)]
pub(crate) struct FramedState {
    established: bool,
}

/// The connections of a framed service and its framing, apart from its
/// handler.
#[derive(Debug)]
pub(crate) struct FramedCore<T> {
    framing: Framing,
    pub(crate) links: Links<T, FramedState>,
    stop: bool,
}

impl<T> FramedCore<T> {
    fn view(&mut self) -> CoreView<'_, T> {
        CoreView {
            framing: self.framing,
            links: &mut self.links,
            stop: &mut self.stop,
        }
    }
}

/// A framed service's connections as its handler reaches them.
struct CoreView<'a, T> {
    framing: Framing,
    links: &'a mut Links<T, FramedState>,
    stop: &'a mut bool,
}

impl<T> CoreOps for CoreView<'_, T> {
    fn send(&mut self, conn: ConnId, message: &[u8]) -> bool {
        let Some(bytes) = encode(self.framing, message) else {
            return false;
        };
        self.links.push(conn, bytes).is_ok()
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
        self.links.close(conn, reason, now);
    }

    fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        self.links.peer(conn)
    }

    fn client_cert(&self, conn: ConnId) -> Option<&PeerIdentity> {
        self.links.identity(conn)
    }

    fn connections(&self) -> Vec<ConnId> {
        self.links.ids()
    }

    fn count(&self) -> usize {
        self.links.len()
    }

    fn stop(&mut self) {
        *self.stop = true;
    }
}

/// The limits of a framed service's connections: the connection layer's
/// defaults, with [`MAX_PENDING_OUTPUT`] as the output bound, and shutdown
/// waiting as long as any close does.
fn framed_limits() -> Limits {
    Limits {
        max_pending: MAX_PENDING_OUTPUT,
        read_pause: READ_PAUSE_OUTPUT,
        untrusted_read_pause: READ_PAUSE_OUTPUT,
        linger: LINGER,
        drain: LINGER,
        ..Limits::default()
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
                links: Links::new(framed_limits()),
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

    fn established(&mut self, conn: ConnId, now: Instant) {
        let Some(l) = self.core.links.get_mut(conn) else {
            return;
        };
        if l.proto.established || l.is_closing() {
            return;
        }
        l.proto.established = true;
        let mut ctx = FramedContext {
            core: &mut self.core.view(),
            now,
        };
        self.handler.on_established(&mut ctx, conn);
    }

    /// Cuts `data` into messages and hands them to the handler. Returns how
    /// many bytes were used; the rest is an unfinished message. Stops (and
    /// reports everything used) once the connection is closing.
    fn process(
        core: &mut CoreView<'_, T>,
        handler: &mut H,
        conn: ConnId,
        data: &[u8],
        now: Instant,
    ) -> usize {
        let mut used = 0;
        loop {
            if core.links.is_closing(conn) {
                return data.len();
            }
            if !core.links.can_process(conn) {
                return used;
            }
            let rest = data.get(used..).unwrap_or_default();
            match next_message(core.framing, rest) {
                Ok(Some((start, end, consumed))) => {
                    let message = rest.get(start..end).unwrap_or_default();
                    used += consumed;
                    let mut ctx = FramedContext { core, now };
                    handler.on_message(&mut ctx, conn, message);
                }
                Ok(None) => return used,
                Err(e) => {
                    too_long(core.links, conn, e, now);
                    return data.len();
                }
            }
        }
    }

    pub(crate) fn accept(&mut self, io: T, peer: SocketAddr, now: Instant) -> Admission<T> {
        let admission = self
            .core
            .links
            .accept(io, peer, FramedState::default(), now);
        if let Admission::Open(conn) = admission {
            info!("{}: connected", self.core.links.log_peer(conn));
            // No login in the generic layer: the full read pause applies.
            self.core.links.set_trusted(conn);
            if !self.deferred {
                self.established(conn, now);
            }
        }
        admission
    }

    /// Closing connections past their linger are handed to the IO layer.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.core.links.handle_timeout(now);
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.core.links.poll_timeout()
    }

    /// Bytes received: every whole message goes to the handler at once, and
    /// only an unfinished one's tail is kept.
    pub(crate) fn handle_input(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        let links = &mut self.core.links;
        if links.is_closing(conn) || data.is_empty() {
            return;
        }
        let kept = links.pending_input(conn);
        if let Framing::Delimited { delimiter, max_len } = self.core.framing {
            if kept > 0 && !data.contains(&delimiter) {
                // The kept tail has no delimiter either (it would have been
                // cut): still one unfinished message. Checking only the new
                // bytes keeps a peer that drips one byte at a time from
                // making every read rescan up to `max_len`.
                let len = kept + data.len();
                if len > max_len {
                    too_long(links, conn, TooLong { len, max_len }, now);
                } else {
                    links.keep_input(conn, data);
                }
                return;
            }
        }
        let handler = &mut self.handler;
        let framing = self.core.framing;
        let stop = &mut self.core.stop;
        self.core.links.input(conn, data, |links, bytes| {
            let mut core = CoreView {
                framing,
                links,
                stop,
            };
            Self::process(&mut core, handler, conn, bytes, now)
        });
    }

    /// The peer closed its side: an unfinished message is dropped, what is
    /// queued is flushed, then the connection closes.
    pub(crate) fn handle_eof(&mut self, conn: ConnId, now: Instant) {
        let links = &mut self.core.links;
        if links.handle_eof(conn) {
            links.close(conn, CloseReason::PeerClosed, now);
        }
        links.set_eof(conn);
    }

    /// The TLS handshake completed, or an outgoing connect did: the
    /// connection is established.
    pub(crate) fn handle_secured(
        &mut self,
        conn: ConnId,
        subject: Option<PeerIdentity>,
        now: Instant,
    ) {
        if self.core.links.get(conn).is_none() {
            return;
        }
        debug!(
            "{}: established{}",
            self.core.links.log_peer(conn),
            subject
                .as_ref()
                .map(|s| format!(", client {s}"))
                .unwrap_or_default()
        );
        self.core.links.set_identity(conn, subject);
        self.established(conn, now);
        self.core.links.mark_dirty(conn);
    }

    /// Drops a connection and tells the handler (if it was established, or
    /// is outgoing).
    pub(crate) fn remove(&mut self, conn: ConnId, reason: CloseReason, now: Instant) -> Option<T> {
        let who = self.core.links.log_peer(conn);
        let (io, state, reason) = self.core.links.remove(conn, reason)?;
        info!("{who}: closed ({reason})");
        if state.established || self.outgoing {
            let mut ctx = FramedContext {
                core: &mut self.core.view(),
                now,
            };
            self.handler.on_closed(&mut ctx, conn, reason);
        }
        Some(io)
    }

    /// Refuses new connections and closes every open one gracefully.
    pub(crate) fn shutdown(&mut self, now: Instant) {
        self.core.links.shutdown(None, now);
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

/// A message over the maximum: logged, and the connection closed.
fn too_long<T, P>(links: &mut Links<T, P>, conn: ConnId, e: TooLong, now: Instant) {
    warn!("{}: closing: {e}", links.log_peer(conn));
    links.close(conn, CloseReason::TooLarge, now);
}

impl<H: FramedHandler> Service for FramedService<Conn, H> {
    fn links(&mut self) -> &mut dyn Table<Conn> {
        &mut self.core.links
    }
    fn links_ref(&self) -> &dyn Table<Conn> {
        &self.core.links
    }
    fn accept(&mut self, io: Conn, peer: SocketAddr, now: Instant) -> Admission<Conn> {
        Self::accept(self, io, peer, now)
    }
    fn handle_input(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        Self::handle_input(self, conn, data, now);
    }
    fn handle_eof(&mut self, conn: ConnId, now: Instant) {
        Self::handle_eof(self, conn, now);
    }
    fn handle_secured(&mut self, conn: ConnId, subject: Option<PeerIdentity>, now: Instant) {
        Self::handle_secured(self, conn, subject, now);
    }
    /// Nothing kept to process: input is cut as it arrives, and only
    /// reading pauses under backpressure.
    fn resume(&mut self, _conn: ConnId, _now: Instant) {}
    fn handle_timeout(&mut self, now: Instant) {
        Self::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Self::poll_timeout(self)
    }
    fn remove(&mut self, conn: ConnId, reason: CloseReason) -> Option<Conn> {
        // The reactor drops connections outside any turn's clock reading; the
        // handler's `close` only needs a linger start, so now is close enough.
        Self::remove(self, conn, reason, Instant::now())
    }
    fn shutdown(&mut self, now: Instant) {
        Self::shutdown(self, now);
    }
    fn has_events(&self) -> bool {
        // A handler may ask to stop from a callback that runs after this
        // turn's `after_input` (a close during the final flush): the next
        // poll must not block before the loop sees it.
        self.stop_requested()
    }
    fn after_input(&mut self, _now: Instant) -> bool {
        self.take_stop()
    }
    fn handle_control(&mut self, _message: Box<dyn std::any::Any + Send>, _now: Instant) -> bool {
        false
    }
}

#[cfg(test)]
mod tests;
