//! The connection table every protocol on the loop shares: [`Links`].
//!
//! A [`Link`] is what any connection has, whatever it speaks: the transport
//! the IO layer keeps with it (opaque here), the peer's address and proven
//! identity, an unfinished input tail, the output queue, and whether and why
//! it is closing. The protocol's own per-connection state (`P`) rides in the
//! same slab slot, so a connection costs one table entry.
//!
//! The table enforces the rules that hold for every protocol
//! (protocol.md 7a), in one place:
//!
//! - **Output is bounded by what it really costs.** [`Links::push`] counts a
//!   frame's bytes and the queue's bookkeeping ([`OutQueue::held`]) against
//!   `max_pending`, replies and pushes alike; past it the push is refused and
//!   the protocol closes the connection (a slow consumer).
//! - **Input pauses under backpressure.** [`Links::can_process`] is false
//!   while the output held passes the read pause (smaller before the
//!   protocol trusts the connection, e.g. before login), or while the
//!   protocol paused it; the IO layer stops reading, and TCP pushes back.
//! - **A closing connection goes at its deadline.** [`Links::close`] starts
//!   the linger; when it passes, [`Links::take_expired`] hands the
//!   connection to the IO layer to drop, whether or not its socket would
//!   take more bytes, so a peer that never reads cannot keep a slot, a file
//!   descriptor and a kernel send buffer.
//! - **The connection limit.** [`Links::accept`] admits up to
//!   `max_connections`; a few more are kept just long enough to be told so
//!   (the protocol's farewell, e.g. `ERR server-full`); past that the IO
//!   layer writes the farewell once and drops the socket, keeping no state.
//! - **Shutdown drains.** [`Links::shutdown`] queues the farewell after what
//!   each connection is owed and gives it `drain` to read it.
//!
//! Sans-IO: no socket, no clock. Times come in as `Instant`s and are stored
//! as 8-byte ticks.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, warn};
use slab::Slab;

use super::tick::{Clock, Tick};
use super::{CloseReason, ConnId, LogId, PeerIdentity};
use crate::buf::OutQueue;

/// Frames of dropped output queues freed per turn (see [`Links::reap`]).
pub const REAP_BUDGET: usize = 16_384;

/// Connections accepted over `max_connections` only to be told so; beyond
/// this many at once the IO layer writes the farewell and drops the socket.
pub const REJECT_SLACK: usize = 64;

/// The last connection number given ([`Link::generation`]): one counter
/// for every table of the process (the broker's, each framed service's), so
/// that a number names one connection in a run's log.
static LAST_GENERATION: AtomicU32 = AtomicU32::new(0);

/// The next connection number (never 0; wraps after 2^32 accepts).
fn next_generation() -> u32 {
    loop {
        let n = LAST_GENERATION
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        if n != 0 {
            return n;
        }
    }
}

/// Bounds every connection of a table shares. The defaults are the
/// contract's (cli.md).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most connections at once; one more is told `farewell_full` and closed.
    pub max_connections: usize,
    /// Output a connection may hold (bytes and bookkeeping) before it is a
    /// slow consumer.
    pub max_pending: usize,
    /// Output held above which a trusted connection's input is not read.
    pub read_pause: usize,
    /// The same before the protocol trusts the connection (before login).
    pub untrusted_read_pause: usize,
    /// Most bytes read from an untrusted connection in one step, so that
    /// what it can make the server keep of its input (an unprocessed tail
    /// while paused) stays within one header and a small payload.
    pub untrusted_read_window: usize,
    /// How long a closing connection may take to flush and see its peer
    /// close before it is dropped (protocol.md 7a: at most 2 s).
    pub linger: Duration,
    /// On shutdown, how long connections may take to read what they are owed.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_pending: 8 << 20,
            read_pause: 256 << 10,
            untrusted_read_pause: 16 << 10,
            untrusted_read_window: 8 << 10,
            linger: Duration::from_secs(2),
            drain: Duration::from_secs(10),
        }
    }
}

/// A connection that is closing.
#[derive(Debug, Clone, Copy)]
struct Closing {
    reason: CloseReason,
    deadline: Tick,
    /// The peer closed its side.
    eof: bool,
}

/// An unfinished frame's bytes, boxed so that the common case (nothing
/// kept) costs a connection one pointer, not a `Vec`'s three words.
/// The extra allocation is the point: it exists only while a tail is kept.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
struct Tail(Option<Box<Vec<u8>>>);

impl Tail {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.len())
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.capacity())
    }
    fn extend_from_slice(&mut self, data: &[u8]) {
        if !data.is_empty() {
            self.0.get_or_insert_default().extend_from_slice(data);
        }
    }
    fn take(&mut self) -> Vec<u8> {
        self.0.take().map(|b| *b).unwrap_or_default()
    }
    fn put(&mut self, v: Vec<u8>) {
        self.0 = (!v.is_empty()).then(|| Box::new(v));
    }
}

/// One connection: what every protocol's connection has, and the
/// protocol's own state `proto`.
#[derive(Debug)]
pub struct Link<T, P> {
    closing: Option<Closing>,
    /// Tells this connection apart from every other of the run (not only
    /// earlier ones in the same slot): its number in log lines ([`LogId`]).
    generation: u32,
    dirty: bool,
    /// `PAUSED`, `TRUSTED`, `ADMITTED`, `YIELDED` (one byte, so the slot
    /// keeps its size).
    flags: u8,
    out: OutQueue,
    /// The protocol's state for this connection.
    pub proto: P,
    io: T,
    peer: SocketAddr,
    identity: Option<Box<PeerIdentity>>,
    /// An unfinished frame's bytes; unallocated most of the time.
    inbuf: Tail,
}

/// The protocol paused its input (e.g. while a password is checked).
const PAUSED: u8 = 1;
/// The protocol trusts it (logged in): the larger read pause applies.
const TRUSTED: u8 = 2;
/// Counts against `max_connections` (a refused one does not).
const ADMITTED: u8 = 4;
/// The protocol stopped processing its input for this turn (its work
/// budget ran out); it goes on next turn.
const YIELDED: u8 = 8;
/// The transport is WebSocket: each frame queued goes out as one message
/// ([`Links::set_websocket`]).
const WEBSOCKET: u8 = 16;

/// A frame queued to many connections (a fan-out, presence events):
/// encoded once for each framing a connection may use, the WebSocket
/// message only when a WebSocket connection first needs it. Every
/// connection of one framing gets the same [`Bytes`].
#[derive(Debug)]
pub struct Shared {
    frame: Bytes,
    ws: std::cell::OnceCell<Bytes>,
}

impl Shared {
    /// `frame`, as plain TCP and TLS connections get it.
    pub fn new(frame: Bytes) -> Self {
        Self {
            frame,
            ws: std::cell::OnceCell::new(),
        }
    }

    /// The frame as it is.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The frame for a connection: as it is, or (`websocket`) in one
    /// WebSocket message, built on first use.
    fn for_link(&self, websocket: bool) -> &Bytes {
        if websocket {
            self.ws
                .get_or_init(|| crate::ws::message_for_frame(&self.frame))
        } else {
            &self.frame
        }
    }
}

/// `frame` as a connection with these flags gets it.
fn framed(flags: u8, frame: Bytes) -> Bytes {
    if flags & WEBSOCKET != 0 {
        crate::ws::message_for_frame(&frame)
    } else {
        frame
    }
}

impl<T, P> Link<T, P> {
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// Whether the connection is closing.
    pub fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Output held for it, bookkeeping included.
    pub fn held(&self) -> usize {
        self.out.held()
    }

    /// Tells this connection apart from earlier ones in the same slot, and
    /// from every other connection of the run: the number log lines show
    /// ([`Links::log_id`]).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Heap bytes beyond the slab slot (for footprint reports).
    pub fn heap_bytes(&self) -> usize {
        self.inbuf.capacity() + usize::from(self.inbuf.0.is_some()) * 24 + self.out.heap_bytes()
    }
}

/// What [`Links::accept`] did with a new connection.
#[derive(Debug)]
pub enum Admission<T> {
    /// Admitted and open.
    Open(ConnId),
    /// Over the connection limit: kept only to flush the farewell, already
    /// closing; the protocol should not count it as a session.
    Refused(ConnId),
    /// Not kept: the IO layer writes `farewell` (if any) once, without
    /// waiting, and drops the transport.
    Dropped(T, Option<Bytes>),
}

/// Why [`Links::push`] did not queue a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// No such connection, or it is closing (nothing more is queued then).
    Gone,
    /// The frame would take the connection's output past `max_pending`.
    Full,
}

/// The connection table: a slab of [`Link`]s, the dirty list, closing
/// deadlines and the limits. `T` is the IO layer's transport (tests use
/// `()`), `P` the protocol's per-connection state.
#[derive(Debug)]
pub struct Links<T, P> {
    slots: Slab<Link<T, P>>,
    limits: Limits,
    clock: Clock,
    /// Connections with new output or a new state, for the IO layer.
    dirty: Vec<usize>,
    /// Closing connections' deadlines (one entry per close).
    deadlines: BinaryHeap<Reverse<(Tick, usize, u32)>>,
    /// Closing connections past their deadline, for the IO layer to drop.
    expired: Vec<ConnId>,
    /// Connections whose protocol yielded this turn, to go on next turn.
    yielded: Vec<ConnId>,
    /// Output queues dropped (slow consumers, removed connections), freed
    /// [`REAP_BUDGET`] frames a turn: dropping a few hundred thousand
    /// frames at once stalled the loop.
    #[allow(clippy::vec_box)] // The rings as the queues kept them: no copy.
    graveyard: Vec<Box<std::collections::VecDeque<Bytes>>>,
    /// What a connection over the limit is told before it is closed.
    farewell_full: Option<Bytes>,
    admitted: usize,
    /// What this table and the IO layer count (protocol.md section 10).
    stats: super::IoStats,
    shutting_down: bool,
    /// Connections admitted by every table sharing the limit (the loops of
    /// one server); `None` for a table alone, which counts in `admitted`.
    shared_admitted: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
}

impl<T, P> Links<T, P> {
    /// An empty table.
    pub fn new(limits: Limits) -> Self {
        Self {
            slots: Slab::new(),
            limits,
            clock: Clock::new(Instant::now()),
            dirty: Vec::new(),
            deadlines: BinaryHeap::new(),
            expired: Vec::new(),
            yielded: Vec::new(),
            graveyard: Vec::new(),
            farewell_full: None,
            admitted: 0,
            stats: super::IoStats::default(),
            shutting_down: false,
            shared_admitted: None,
        }
    }

    /// Makes `max_connections` a limit for every table holding `counter`
    /// together (the loops of a server started with several threads).
    pub fn share_admissions(&mut self, counter: std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        self.shared_admitted = Some(counter);
    }

    /// Sets what a connection over the limit is told (e.g. `ERR server-full`).
    pub fn set_farewell_full(&mut self, frame: Bytes) {
        self.farewell_full = Some(frame);
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// `now` in the table's ticks.
    pub(crate) fn tick(&self, now: Instant) -> Tick {
        self.clock.tick(now)
    }

    /// The instant of a tick.
    pub(crate) fn instant(&self, t: Tick) -> Instant {
        self.clock.instant(t)
    }

    /// Connections in the table (closing ones included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether [`Links::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Takes a new connection with the protocol's initial state.
    pub fn accept(&mut self, io: T, peer: SocketAddr, proto: P, now: Instant) -> Admission<T> {
        if self.shutting_down {
            return Admission::Dropped(io, None);
        }
        let full = match &self.shared_admitted {
            None => self.admitted >= self.limits.max_connections,
            Some(all) => {
                let before = all.fetch_add(1, Ordering::Relaxed);
                let full = before >= self.limits.max_connections;
                if full {
                    all.fetch_sub(1, Ordering::Relaxed);
                }
                full
            }
        };
        if full && self.slots.len() >= self.limits.max_connections + REJECT_SLACK {
            self.stats.refused_full += 1;
            return Admission::Dropped(io, self.farewell_full.clone());
        }
        let generation = next_generation();
        let key = self.slots.insert(Link {
            io,
            proto,
            peer,
            identity: None,
            inbuf: Tail::default(),
            out: OutQueue::default(),
            closing: None,
            generation,
            dirty: false,
            flags: if full { 0 } else { ADMITTED },
        });
        let id = ConnId(key);
        if full {
            self.stats.refused_full += 1;
            warn!(
                "c{generation} {peer}: refused: at the connection limit ({} connections)",
                self.limits.max_connections
            );
            if let Some(frame) = self.farewell_full.clone() {
                self.push_final(id, frame);
            }
            self.close(id, CloseReason::ServerFull, now);
            return Admission::Refused(id);
        }
        self.admitted += 1;
        Admission::Open(id)
    }

    /// How log lines name a connection: `c1234`, a number never reused in
    /// the run (see [`LogId`]); `#12` (the slot) if it is not in the table.
    pub fn log_id(&self, id: ConnId) -> LogId {
        LogId {
            number: self.slots.get(id.0).map(|l| l.generation),
            slot: id.0,
            peer: None,
        }
    }

    /// [`Links::log_id`] with the peer's address: `c1234 192.0.2.7:51234`.
    pub fn log_peer(&self, id: ConnId) -> LogId {
        LogId {
            peer: self.slots.get(id.0).map(|l| l.peer),
            ..self.log_id(id)
        }
    }

    /// A connection.
    pub fn get(&self, id: ConnId) -> Option<&Link<T, P>> {
        self.slots.get(id.0)
    }

    /// A connection, to change its protocol state.
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Link<T, P>> {
        self.slots.get_mut(id.0)
    }

    /// The protocol state of a connection.
    pub fn proto(&self, id: ConnId) -> Option<&P> {
        self.slots.get(id.0).map(|l| &l.proto)
    }

    /// The protocol state of a connection, to change it.
    pub fn proto_mut(&mut self, id: ConnId) -> Option<&mut P> {
        self.slots.get_mut(id.0).map(|l| &mut l.proto)
    }

    /// Every connection's id and state.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &Link<T, P>)> {
        self.slots.iter().map(|(k, l)| (ConnId(k), l))
    }

    /// The ids of every connection.
    pub fn ids(&self) -> Vec<ConnId> {
        self.slots.iter().map(|(k, _)| ConnId(k)).collect()
    }

    /// The transport of a connection (the IO layer's).
    pub fn io_mut(&mut self, id: ConnId) -> Option<&mut T> {
        self.slots.get_mut(id.0).map(|l| &mut l.io)
    }

    /// The transport and the output queue of a connection, for writing.
    pub fn io_and_output(&mut self, id: ConnId) -> Option<(&mut T, &mut OutQueue)> {
        self.slots.get_mut(id.0).map(|l| (&mut l.io, &mut l.out))
    }

    /// The output queue of a connection (write from its front, then
    /// [`OutQueue::consume`]).
    pub fn output(&mut self, id: ConnId) -> Option<&mut OutQueue> {
        self.slots.get_mut(id.0).map(|l| &mut l.out)
    }

    /// The peer address of a connection.
    pub fn peer(&self, id: ConnId) -> Option<SocketAddr> {
        self.slots.get(id.0).map(|l| l.peer)
    }

    /// Who the peer proved to be (its verified certificate), if anyone.
    pub fn identity(&self, id: ConnId) -> Option<&PeerIdentity> {
        self.slots.get(id.0).and_then(|l| l.identity.as_deref())
    }

    /// Records who the peer proved to be.
    pub fn set_identity(&mut self, id: ConnId, identity: Option<PeerIdentity>) {
        if let Some(l) = self.slots.get_mut(id.0) {
            l.identity = identity.map(Box::new);
        }
    }

    /// Whether the connection is closing.
    pub fn is_closing(&self, id: ConnId) -> bool {
        self.slots.get(id.0).is_some_and(Link::is_closing)
    }

    /// The protocol trusts the connection (it logged in): the larger read
    /// pause applies from now on.
    pub fn set_trusted(&mut self, id: ConnId) {
        if let Some(l) = self.slots.get_mut(id.0) {
            l.set(TRUSTED, true);
        }
    }

    /// Pauses or resumes the processing of a connection's input (the IO
    /// layer stops reading it meanwhile). Resuming marks it dirty so the
    /// IO layer comes back to it.
    pub fn set_paused(&mut self, id: ConnId, paused: bool) {
        if let Some(l) = self.slots.get_mut(id.0) {
            l.set(PAUSED, paused);
        }
        if !paused {
            self.mark_dirty(id);
        }
    }

    /// Whether the protocol may process input of this connection now: open,
    /// not paused, and holding less output than its read pause.
    pub fn can_process(&self, id: ConnId) -> bool {
        self.slots.get(id.0).is_some_and(|l| {
            let pause = if l.has(TRUSTED) {
                self.limits.read_pause
            } else {
                self.limits.untrusted_read_pause
            };
            l.closing.is_none() && !l.has(PAUSED | YIELDED) && l.out.held() < pause
        })
    }

    /// The protocol used up its work budget for this connection this turn:
    /// what is left of its input waits (unread input stays in the socket),
    /// and [`Links::take_yielded`] hands it back next turn, so one client's
    /// pipelined work cannot hold the loop while others wait.
    pub fn yield_input(&mut self, id: ConnId) {
        if let Some(l) = self.slots.get_mut(id.0) {
            if !l.has(YIELDED) {
                l.set(YIELDED, true);
                self.yielded.push(id);
            }
        }
    }

    /// Connections that yielded, into `into` (cleared first): call the
    /// protocol's resume for each, then read them again.
    pub fn take_yielded(&mut self, into: &mut Vec<ConnId>) {
        into.clear();
        for id in self.yielded.drain(..) {
            if let Some(l) = self.slots.get_mut(id.0) {
                l.set(YIELDED, false);
                into.push(id);
            }
        }
    }

    /// What this table and the IO layer count (protocol.md section 10).
    pub fn stats(&self) -> &super::IoStats {
        &self.stats
    }

    /// The same, for the IO layer to count in.
    pub fn stats_mut(&mut self) -> &mut super::IoStats {
        &mut self.stats
    }

    /// Connections that count against the limit (open or closing, not
    /// refused ones).
    pub fn admitted(&self) -> usize {
        self.admitted
    }

    /// Whether [`Links::take_yielded`] has anything.
    pub fn has_yielded(&self) -> bool {
        !self.yielded.is_empty()
    }

    /// Most bytes the IO layer should read from the connection in one step.
    pub fn read_window(&self, id: ConnId) -> usize {
        match self.slots.get(id.0) {
            Some(l) if !l.has(TRUSTED) && l.closing.is_none() => self.limits.untrusted_read_window,
            _ => usize::MAX,
        }
    }

    /// Whether the IO layer should read from the connection now: while the
    /// protocol can take input, or while it is closing (input is then read
    /// and discarded until the peer closes, so the peer sees a clean close).
    pub fn wants_read(&self, id: ConnId) -> bool {
        self.is_closing(id) || self.can_process(id)
    }

    /// The connection's transport is WebSocket: from now each frame queued
    /// is sent as one WebSocket message (text when it is valid UTF-8,
    /// binary otherwise; protocol.md section 8), and output queued before
    /// (a farewell at accept) is dropped, as it was not framed so.
    pub fn set_websocket(&mut self, id: ConnId) {
        if let Some(l) = self.slots.get_mut(id.0) {
            l.set(WEBSOCKET, true);
            l.out.discard_unstarted();
        }
    }

    /// Whether the connection speaks WebSocket ([`Links::set_websocket`]).
    pub fn is_websocket(&self, id: ConnId) -> bool {
        self.slots.get(id.0).is_some_and(|l| l.has(WEBSOCKET))
    }

    /// [`Links::push`] of a frame shared by many connections ([`Shared`]):
    /// no copy for any of them.
    ///
    /// # Errors
    ///
    /// As [`Links::push`].
    pub fn push_shared(&mut self, id: ConnId, frame: &Shared) -> Result<(), PushError> {
        self.push_with(id, frame, |_| true).map(|_| ())
    }

    /// Queues a frame, counted against `max_pending` with its bookkeeping.
    ///
    /// # Errors
    ///
    /// [`PushError::Gone`] if the connection is closing or unknown;
    /// [`PushError::Full`] if the frame would pass the bound (nothing is
    /// queued; the protocol decides, normally [`Links::slow_consumer`]).
    pub fn push(&mut self, id: ConnId, frame: Bytes) -> Result<(), PushError> {
        let max = self.limits.max_pending;
        let l = self.slots.get_mut(id.0).ok_or(PushError::Gone)?;
        if l.closing.is_some() {
            return Err(PushError::Gone);
        }
        let frame = framed(l.flags, frame);
        if l.out.held_after_push(frame.len()) > max {
            return Err(PushError::Full);
        }
        l.out.push(frame);
        self.stats.frames_out += 1;
        if !l.dirty {
            l.dirty = true;
            self.dirty.push(id.0);
        }
        Ok(())
    }

    /// [`Links::push`] for fan-out: one slot lookup, and `admit` decides
    /// first from the protocol state (e.g. "already delivered to this
    /// one"). Returns `Ok(false)` when `admit` said no (nothing queued);
    /// the frame is cloned only when queued.
    ///
    /// # Errors
    ///
    /// As [`Links::push`].
    #[inline]
    pub fn push_with(
        &mut self,
        id: ConnId,
        frame: &Shared,
        admit: impl FnOnce(&mut P) -> bool,
    ) -> Result<bool, PushError> {
        let max = self.limits.max_pending;
        let l = self.slots.get_mut(id.0).ok_or(PushError::Gone)?;
        if l.closing.is_some() {
            return Err(PushError::Gone);
        }
        if !admit(&mut l.proto) {
            return Ok(false);
        }
        let frame = frame.for_link(l.flags & WEBSOCKET != 0);
        if l.out.held_after_push(frame.len()) > max {
            return Err(PushError::Full);
        }
        l.out.push(frame.clone());
        self.stats.frames_out += 1;
        if !l.dirty {
            l.dirty = true;
            self.dirty.push(id.0);
        }
        Ok(true)
    }

    /// Queues a last frame for a connection about to close, whatever its
    /// bound (one frame, so the bound is passed by one frame at most).
    pub fn push_final(&mut self, id: ConnId, frame: Bytes) {
        if let Some(l) = self.slots.get_mut(id.0) {
            if l.closing.is_none() {
                l.out.push(framed(l.flags, frame));
                self.stats.frames_out += 1;
                self.mark_dirty(id);
            }
        }
    }

    /// A slow consumer: its unsent backlog is dropped (a partly written
    /// frame is kept, so the stream stays well-formed), `farewell` is queued
    /// and the connection closes.
    pub fn slow_consumer(&mut self, id: ConnId, farewell: Bytes, now: Instant) {
        let Some(l) = self.slots.get_mut(id.0) else {
            return;
        };
        if l.closing.is_some() {
            return;
        }
        warn!(
            "c{} {}: slow consumer: {} bytes of output unread (limit {}); closing",
            l.generation,
            l.peer,
            l.out.held(),
            self.limits.max_pending
        );
        if let Some(ring) = l.out.take_unstarted() {
            self.bury(ring);
        }
        self.push_final(id, farewell);
        self.close(id, CloseReason::SlowConsumer, now);
    }

    /// Starts closing a connection: no more input is processed and nothing
    /// more is queued; what is queued is flushed, and the connection is
    /// dropped once the peer has closed too, or at the linger deadline.
    /// Returns whether it was open.
    pub fn close(&mut self, id: ConnId, reason: CloseReason, now: Instant) -> bool {
        let linger = self.limits.linger;
        self.close_within(id, reason, now, linger)
    }

    fn close_within(&mut self, id: ConnId, reason: CloseReason, now: Instant, d: Duration) -> bool {
        let deadline = self.clock.tick(now) + d;
        let Some(l) = self.slots.get_mut(id.0) else {
            return false;
        };
        if l.closing.is_some() {
            return false;
        }
        debug!("c{} {}: closing ({reason})", l.generation, l.peer);
        l.closing = Some(Closing {
            reason,
            deadline,
            eof: false,
        });
        l.inbuf = Tail::default();
        self.deadlines.push(Reverse((deadline, id.0, l.generation)));
        self.mark_dirty(id);
        true
    }

    /// The peer closed its side: records it (a closing connection with
    /// nothing left to write is then finished). Returns whether the
    /// connection was open until now (the protocol should then close it).
    pub fn handle_eof(&mut self, id: ConnId) -> bool {
        let Some(l) = self.slots.get_mut(id.0) else {
            return false;
        };
        if !l.inbuf.is_empty() {
            debug!(
                "c{}: peer closed inside a frame ({} bytes dropped)",
                l.generation,
                l.inbuf.len()
            );
        }
        let was_open = l.closing.is_none();
        self.mark_dirty(id);
        was_open
    }

    /// Marks a closing connection's peer as gone (after [`Links::close`]).
    pub fn set_eof(&mut self, id: ConnId) {
        if let Some(c) = self.slots.get_mut(id.0).and_then(|l| l.closing.as_mut()) {
            c.eof = true;
        }
        self.mark_dirty(id);
    }

    /// The IO layer wrote everything a closing connection was owed and shut
    /// down its write side: from now it waits for the peer's close no
    /// longer than a normal close would (the linger), even when it had a
    /// longer deadline to drain (a shutdown).
    pub fn write_done(&mut self, id: ConnId, now: Instant) {
        let linger = self.clock.tick(now) + self.limits.linger;
        let Some(l) = self.slots.get_mut(id.0) else {
            return;
        };
        if let Some(c) = l.closing.as_mut() {
            if linger < c.deadline {
                c.deadline = linger;
                self.deadlines.push(Reverse((linger, id.0, l.generation)));
            }
        }
    }

    /// Why a closing connection is closing.
    pub fn close_reason(&self, id: ConnId) -> Option<CloseReason> {
        self.slots.get(id.0)?.closing.map(|c| c.reason)
    }

    /// Whether the IO layer should drop the connection now: it is closing
    /// and either everything was flushed and the peer closed, or its
    /// deadline passed.
    pub fn finished(&self, id: ConnId, now: Instant) -> bool {
        let now = self.clock.tick(now);
        match self.slots.get(id.0) {
            Some(l) => l
                .closing
                .is_some_and(|c| (c.eof && l.out.is_empty()) || now >= c.deadline),
            None => true,
        }
    }

    /// Moves closing connections whose deadline passed to the expired list
    /// ([`Links::take_expired`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.tick(now);
        while let Some(&Reverse((at, key, generation))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if self
                .slots
                .get(key)
                .is_some_and(|l| l.generation == generation && l.closing.is_some())
            {
                self.expired.push(ConnId(key));
            }
        }
    }

    /// The earliest closing deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines
            .peek()
            .map(|Reverse((at, _, _))| self.clock.instant(*at))
    }

    /// Closing connections past their deadline, into `into` (cleared
    /// first): drop each, flushed or not.
    pub fn take_expired(&mut self, into: &mut Vec<ConnId>) {
        into.clear();
        into.append(&mut self.expired);
    }

    /// Whether [`Links::take_expired`] has anything.
    pub fn has_expired(&self) -> bool {
        !self.expired.is_empty()
    }

    /// Drops a connection from the table; returns its transport and
    /// protocol state, and why it closed (`reason` unless it was closing
    /// already).
    pub fn remove(&mut self, id: ConnId, reason: CloseReason) -> Option<(T, P, CloseReason)> {
        let mut l = self.slots.try_remove(id.0)?;
        if let Some(ring) = l.out.take_unstarted() {
            self.bury(ring);
        }
        if l.has(ADMITTED) {
            self.admitted = self.admitted.saturating_sub(1);
            if let Some(all) = &self.shared_admitted {
                all.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let reason = l.closing.map_or(reason, |c| c.reason);
        Some((l.io, l.proto, reason))
    }

    /// Whether a connection counts against the limit (it was not refused).
    pub fn is_admitted(&self, id: ConnId) -> bool {
        self.slots.get(id.0).is_some_and(|l| l.has(ADMITTED))
    }

    #[allow(clippy::box_collection)] // See `graveyard`.
    fn bury(&mut self, ring: Box<std::collections::VecDeque<Bytes>>) {
        if ring.len() <= REAP_BUDGET / 16 {
            return; // Small: dropped here, at once.
        }
        self.graveyard.push(ring);
    }

    /// Frees up to [`REAP_BUDGET`] frames of dropped output queues; returns
    /// whether more are left (call again next turn).
    pub fn reap(&mut self) -> bool {
        let mut budget = REAP_BUDGET;
        while budget > 0 {
            let Some(ring) = self.graveyard.last_mut() else {
                break;
            };
            let n = ring.len().min(budget);
            ring.truncate(ring.len() - n);
            budget -= n;
            if ring.is_empty() {
                self.graveyard.pop();
            }
        }
        !self.graveyard.is_empty()
    }

    /// Whether [`Links::reap`] has work.
    pub fn has_garbage(&self) -> bool {
        !self.graveyard.is_empty()
    }

    /// Marks a connection for the IO layer's attention this turn.
    pub fn mark_dirty(&mut self, id: ConnId) {
        if let Some(l) = self.slots.get_mut(id.0) {
            if !l.dirty {
                l.dirty = true;
                self.dirty.push(id.0);
            }
        }
    }

    /// Connections with new output or a new state since the last call, into
    /// `into` (cleared first).
    pub fn take_dirty(&mut self, into: &mut Vec<ConnId>) {
        into.clear();
        for key in self.dirty.drain(..) {
            if let Some(l) = self.slots.get_mut(key) {
                l.dirty = false;
                into.push(ConnId(key));
            }
        }
    }

    /// Whether [`Links::take_dirty`] has anything.
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Refuses new connections; every open one gets `farewell` (if any)
    /// after what it is owed and `drain` to read it all, then is closed.
    /// The protocol releases its own state for each first.
    pub fn shutdown(&mut self, farewell: Option<&Bytes>, now: Instant) {
        self.shutting_down = true;
        let drain = self.limits.drain;
        for id in self.ids() {
            if self.is_closing(id) {
                continue;
            }
            if let Some(frame) = farewell {
                self.push_final(id, frame.clone());
            }
            self.close_within(id, CloseReason::Shutdown, now, drain);
        }
    }

    /// Feeds input to the protocol: `process` gets the bytes not yet used
    /// (the kept tail first, if any) and returns how many it used; it must
    /// stop when [`Links::can_process`] turns false. Only an unfinished
    /// tail is kept, and its buffer is freed once used. Input of a closing
    /// connection is discarded.
    pub fn input<F>(&mut self, id: ConnId, data: &[u8], process: F)
    where
        F: FnMut(&mut Self, &[u8]) -> usize,
    {
        let Some(l) = self.slots.get_mut(id.0) else {
            return;
        };
        if l.closing.is_some() || data.is_empty() {
            return;
        }
        if !l.inbuf.is_empty() {
            l.inbuf.extend_from_slice(data);
            return self.resume_input(id, process);
        }
        if !self.can_process(id) {
            if let Some(l) = self.slots.get_mut(id.0) {
                l.inbuf.extend_from_slice(data);
            }
            return;
        }
        let mut process = process;
        let used = process(self, data);
        if let Some(l) = self.slots.get_mut(id.0) {
            if l.closing.is_none() {
                l.inbuf
                    .extend_from_slice(data.get(used..).unwrap_or_default());
            }
        }
    }

    /// Processes input kept while the connection could not take it (see
    /// [`Links::input`]).
    pub fn resume_input<F>(&mut self, id: ConnId, mut process: F)
    where
        F: FnMut(&mut Self, &[u8]) -> usize,
    {
        if !self.can_process(id) {
            return;
        }
        let Some(l) = self.slots.get_mut(id.0) else {
            return;
        };
        if l.inbuf.is_empty() {
            return;
        }
        let mut buf = l.inbuf.take();
        let used = process(self, &buf);
        if let Some(l) = self.slots.get_mut(id.0) {
            if l.closing.is_none() && used < buf.len() {
                buf.drain(..used.min(buf.len()));
                if buf.capacity() > 2 * buf.len() + 4096 {
                    buf.shrink_to_fit();
                }
                l.inbuf.put(buf);
            }
        }
    }

    /// Capacity of a connection's kept-input buffer (0 when freed).
    #[cfg(test)]
    pub(crate) fn input_capacity(&self, id: ConnId) -> usize {
        self.slots.get(id.0).map_or(0, |l| l.inbuf.capacity())
    }

    /// Bytes of input kept for a connection (an unfinished frame).
    pub fn pending_input(&self, id: ConnId) -> usize {
        self.slots.get(id.0).map_or(0, |l| l.inbuf.len())
    }

    /// Appends to a connection's kept input without processing it (a
    /// protocol that can tell the new bytes finish nothing).
    pub fn keep_input(&mut self, id: ConnId, data: &[u8]) {
        if let Some(l) = self.slots.get_mut(id.0) {
            if l.closing.is_none() {
                l.inbuf.extend_from_slice(data);
            }
        }
    }

    /// Slot and heap bytes held by the table (for footprint reports).
    pub fn footprint(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Link<T, P>>()
            + self
                .slots
                .iter()
                .map(|(_, l)| l.heap_bytes())
                .sum::<usize>()
    }
}

/// A connection table as the IO layer sees it, whatever protocol state its
/// slots carry: transports, output, readiness to read, closing.
pub trait Table<T> {
    /// See [`Links::io_mut`].
    fn io_mut(&mut self, id: ConnId) -> Option<&mut T>;
    /// See [`Links::io_and_output`].
    fn io_and_output(&mut self, id: ConnId) -> Option<(&mut T, &mut OutQueue)>;
    /// See [`Links::wants_read`].
    fn wants_read(&self, id: ConnId) -> bool;
    /// See [`Links::read_window`].
    fn read_window(&self, id: ConnId) -> usize;
    /// See [`Links::is_closing`].
    fn is_closing(&self, id: ConnId) -> bool;
    /// See [`Links::finished`].
    fn finished(&self, id: ConnId, now: Instant) -> bool;
    /// See [`Links::take_dirty`].
    fn take_dirty(&mut self, into: &mut Vec<ConnId>);
    /// See [`Links::has_dirty`].
    fn has_dirty(&self) -> bool;
    /// See [`Links::mark_dirty`].
    fn mark_dirty(&mut self, id: ConnId);
    /// See [`Links::peer`].
    fn peer(&self, id: ConnId) -> Option<SocketAddr>;
    /// See [`Links::log_id`].
    fn log_id(&self, id: ConnId) -> LogId;
    /// See [`Links::log_peer`].
    fn log_peer(&self, id: ConnId) -> LogId;
    /// See [`Links::len`].
    fn len(&self) -> usize;
    /// See [`Links::is_empty`].
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// See [`Links::write_done`].
    fn write_done(&mut self, id: ConnId, now: Instant);
    /// See [`Links::reap`].
    fn reap(&mut self) -> bool;
    /// See [`Links::has_garbage`].
    fn has_garbage(&self) -> bool;
    /// See [`Links::take_yielded`].
    fn take_yielded(&mut self, into: &mut Vec<ConnId>);
    /// See [`Links::stats_mut`].
    fn stats_mut(&mut self) -> &mut super::IoStats;
    /// See [`Links::has_yielded`].
    fn has_yielded(&self) -> bool;
    /// See [`Links::take_expired`].
    fn take_expired(&mut self, into: &mut Vec<ConnId>);
    /// See [`Links::set_websocket`].
    fn set_websocket(&mut self, id: ConnId);
    /// See [`Links::has_expired`].
    fn has_expired(&self) -> bool;
    /// See [`Links::limits`].
    fn limits(&self) -> &Limits;
}

impl<T, P> Table<T> for Links<T, P> {
    fn io_mut(&mut self, id: ConnId) -> Option<&mut T> {
        Self::io_mut(self, id)
    }
    fn io_and_output(&mut self, id: ConnId) -> Option<(&mut T, &mut OutQueue)> {
        Self::io_and_output(self, id)
    }
    fn wants_read(&self, id: ConnId) -> bool {
        Self::wants_read(self, id)
    }
    fn read_window(&self, id: ConnId) -> usize {
        Self::read_window(self, id)
    }
    fn is_closing(&self, id: ConnId) -> bool {
        Self::is_closing(self, id)
    }
    fn finished(&self, id: ConnId, now: Instant) -> bool {
        Self::finished(self, id, now)
    }
    fn take_dirty(&mut self, into: &mut Vec<ConnId>) {
        Self::take_dirty(self, into);
    }
    fn has_dirty(&self) -> bool {
        Self::has_dirty(self)
    }
    fn mark_dirty(&mut self, id: ConnId) {
        Self::mark_dirty(self, id);
    }
    fn peer(&self, id: ConnId) -> Option<SocketAddr> {
        Self::peer(self, id)
    }
    fn log_id(&self, id: ConnId) -> LogId {
        Self::log_id(self, id)
    }
    fn log_peer(&self, id: ConnId) -> LogId {
        Self::log_peer(self, id)
    }
    fn len(&self) -> usize {
        Self::len(self)
    }
    fn take_expired(&mut self, into: &mut Vec<ConnId>) {
        Self::take_expired(self, into);
    }
    fn set_websocket(&mut self, id: ConnId) {
        Self::set_websocket(self, id);
    }
    fn write_done(&mut self, id: ConnId, now: Instant) {
        Self::write_done(self, id, now);
    }
    fn take_yielded(&mut self, into: &mut Vec<ConnId>) {
        Self::take_yielded(self, into);
    }
    fn stats_mut(&mut self) -> &mut super::IoStats {
        Self::stats_mut(self)
    }
    fn reap(&mut self) -> bool {
        Self::reap(self)
    }
    fn has_garbage(&self) -> bool {
        Self::has_garbage(self)
    }
    fn has_yielded(&self) -> bool {
        Self::has_yielded(self)
    }
    fn has_expired(&self) -> bool {
        Self::has_expired(self)
    }
    fn limits(&self) -> &Limits {
        Self::limits(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (Links<(), ()>, ConnId, Instant) {
        let now = Instant::now();
        let mut links = Links::new(Limits {
            max_pending: usize::MAX,
            ..Limits::default()
        });
        let Admission::Open(id) = links.accept((), SocketAddr::from(([127, 0, 0, 1], 1)), (), now)
        else {
            panic!("not admitted");
        };
        (links, id, now)
    }

    /// Issue 12: a WebSocket connection gets each frame as one message; a
    /// shared frame is encoded once for all of them (the same allocation),
    /// and plain connections keep the frame itself.
    #[test]
    fn websocket_links_get_messages_encoded_once() {
        let (mut links, plain, now) = table();
        let peer = SocketAddr::from(([127, 0, 0, 1], 2));
        let mut ws = Vec::new();
        for _ in 0..2 {
            let Admission::Open(id) = links.accept((), peer, (), now) else {
                panic!("not admitted");
            };
            // A farewell queued before the transport was known is dropped.
            links
                .push(id, Bytes::from_static(b"raw\n"))
                .expect("queued");
            links.set_websocket(id);
            assert!(links.is_websocket(id) && links.get(id).is_some_and(|l| l.held() == 0));
            ws.push(id);
        }
        let frame = Shared::new(Bytes::from_static(b"PUBLISHED 2 a 1\nhi"));
        for &id in ws.iter().chain([&plain]) {
            links.push_shared(id, &frame).expect("queued");
        }
        let front = |links: &mut Links<(), ()>, id| {
            let out = links.output(id).expect("a queue");
            (out.front().to_vec(), out.front().as_ptr())
        };
        let (a, a_ptr) = front(&mut links, ws[0]);
        let (b, b_ptr) = front(&mut links, ws[1]);
        let (p, p_ptr) = front(&mut links, plain);
        assert_eq!(a, b"\x81\x12PUBLISHED 2 a 1\nhi");
        assert_eq!((a_ptr, &b), (b_ptr, &a), "one message shared by both");
        assert_eq!(
            (&p[..], p_ptr),
            (&b"PUBLISHED 2 a 1\nhi"[..], frame.frame().as_ptr())
        );
        // A reply is wrapped too: binary when it is not UTF-8.
        links
            .push(ws[0], Bytes::from_static(b"MESSAGE 1 b\n\xff"))
            .expect("queued");
        let out = links.output(ws[0]).expect("a queue");
        let mut all = vec![0; out.len()];
        out.copy_front(&mut all);
        assert!(all.ends_with(b"\x82\x0dMESSAGE 1 b\n\xff"), "{all:?}");
    }

    /// Issue 10, defect 5: dropping slow consumers' long queues all at once
    /// stalled the loop. A long queue goes to the graveyard and is freed
    /// `REAP_BUDGET` frames a call; a short one is dropped at once.
    #[test]
    fn long_dropped_queues_are_freed_a_slice_at_a_time() {
        let (mut links, id, now) = table();
        let frame = Bytes::from_static(b"x");
        for _ in 0..100_000 {
            links.push(id, frame.clone()).expect("queued");
        }
        links.slow_consumer(id, Bytes::from_static(b"bye"), now);
        assert!(links.has_garbage());
        let mut calls = 0;
        while links.reap() {
            calls += 1;
            let left: usize = links.graveyard.iter().map(|r| r.len()).sum();
            assert_eq!(left, 100_000 - 1 - calls * REAP_BUDGET);
        }
        assert_eq!(calls, (100_000 - 1) / REAP_BUDGET);
        assert!(!links.has_garbage());
        // The farewell is queued.
        assert!(links.output(id).is_some_and(|o| !o.is_empty()));

        let (mut links, id, _) = table();
        for _ in 0..100 {
            links.push(id, frame.clone()).expect("queued");
        }
        links.remove(id, CloseReason::Io);
        assert!(!links.has_garbage(), "a short queue is dropped at once");
    }

    /// Log lines name a connection by a number never reused in the run,
    /// not by its slot, which the next connection takes.
    #[test]
    fn log_ids_are_not_reused_when_a_slot_is() {
        let (mut links, first, now) = table();
        let before = links.log_id(first);
        assert_eq!(
            before.to_string(),
            format!("c{}", before.number().expect("n"))
        );
        assert_eq!(
            links.log_peer(first).to_string(),
            format!("{before} 127.0.0.1:1")
        );
        links.remove(first, CloseReason::Quit);
        assert_eq!(
            links.log_id(first).to_string(),
            format!("#{}", first.index())
        );
        let peer = SocketAddr::from(([127, 0, 0, 1], 2));
        let Admission::Open(second) = links.accept((), peer, (), now) else {
            panic!("not admitted");
        };
        assert_eq!(second, first, "the slot is reused");
        let after = links.log_id(second);
        assert_ne!(after, before);
        assert!(after.number() > before.number(), "{before} then {after}");
        // Another table (a framed service beside the broker) draws from
        // the same counter.
        let (other, id, _) = table();
        assert_eq!(id, first);
        assert!(other.log_id(id).number() > after.number());
    }

    #[test]
    fn a_removed_connections_long_queue_goes_to_the_graveyard() {
        let (mut links, id, _) = table();
        for _ in 0..50_000 {
            links.push(id, Bytes::from_static(b"y")).expect("queued");
        }
        links.remove(id, CloseReason::Io);
        assert!(links.has_garbage());
        while links.reap() {}
        assert!(links.graveyard.is_empty());
    }
}
