//! The reactor: one `mio::Poll` loop on one thread. The only server module
//! that names mio types.
//!
//! It is deliberately thin: readiness in, a service stepped, writes flushed.
//! It hosts several services (the broker, framed services of the host
//! program's own protocols; see [`service::Service`]) and any number of
//! listeners, each naming the service its connections belong to.
//!
//! - A connection's token encodes its service and that service's key:
//!   `key * MAX_SERVICES + service`. The waker and listener tokens sit at the
//!   top of the `usize` range, far above any key a slab reaches.
//! - Outgoing connections use mio's nonblocking connect: registered for
//!   writable at once, and checked (`take_error`, then `peer_addr`, where
//!   `NotConnected` is a spurious wakeup) before their first read or write.
//! - Sockets are edge-triggered, so every readable socket is read until
//!   `WouldBlock`, within a budget per wakeup; a connection that used up its
//!   budget is revisited on the next turn (with a zero poll timeout), so one
//!   busy client cannot starve the others.
//! - Bytes are read into one scratch buffer shared by all connections; the
//!   broker copies only a frame's unfinished tail.
//! - Output is written at most once per turn for each connection the service
//!   marked dirty (`OutQueue::write_to`: one frame as it is, small frames
//!   gathered into one slice, large ones by vectored writes), so several
//!   frames queued in one turn leave in one system call. A connection whose input was handled this turn
//!   is flushed in the same turn (replies go out at once); connections dirtied
//!   by someone else's message (fan-out) wait in a first-in first-out queue
//!   flushed [`FLUSH_BUDGET`] at a time, with new input read between batches.
//!   Under load, frames published while a sweep is under way pile up behind
//!   the subscribers it has not reached, so each write carries more of them:
//!   the system calls per delivery fall as the load rises. Writable interest
//!   is registered only while output is pending.
//! - Timers live in the services; the poll timeout is the earliest deadline.
//!   There is no sleep anywhere.
//! - A closing connection is flushed, its write side shut down, and it is
//!   dropped when the peer closes or its linger deadline passes, so the peer
//!   reads the final `ERR` instead of a reset.
//! - Spurious wakeups and events for unknown tokens are ignored.

mod datagram;
mod io;

pub(crate) use datagram::MAX_DATAGRAMS;
pub(crate) use io::bind_udp;

pub(crate) use io::bind_listener;
pub(crate) mod service;

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::conn::{Admission, CloseReason, ConnId, Table};
use crate::tls::{ReadError, ReadStep, TlsSession};
use crate::transport::{Kind, NoTls, ReadBufs, Transport, WsConfig, WsLayer};
use service::{DatagramService, Service};

/// The waker's token.
const WAKER: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 1;
/// Most listeners one loop hosts (their tokens are reserved).
pub(crate) const MAX_LISTENERS: usize = 1 << 16;
/// Most services one loop hosts; a connection token is
/// `key * MAX_SERVICES + service`.
pub(crate) const MAX_SERVICES: usize = 64;
/// Size of the shared read buffer.
const SCRATCH_LEN: usize = 64 << 10;
/// Read steps per connection per wakeup before the others get a turn (a TLS
/// connection uses about two per record: read, then hand out plaintext);
/// one while deferred flushes wait.
const READ_BUDGET: usize = 32;
/// Connections dirtied by fan-out flushed per loop turn (at least) before
/// the loop polls for input again. Smaller batches let more frames coalesce
/// into each write under load (measured at 1,000 subscribers: 0.08-0.12 µs
/// of server CPU per delivery with 16-31 a turn, 0.12-0.15 with 64, 0.17 with
/// 64 slices a write and no gathering); each batch costs one `epoll_wait`.
const FLUSH_BUDGET: usize = 16;
/// How long to stop accepting after running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A request from another thread to the loop.
pub(crate) enum Control {
    /// Stop the whole loop gracefully.
    Stop,
    /// A message for service `.0`, in that service's own type.
    Service(usize, Box<dyn std::any::Any + Send>),
    /// A connection accepted by another loop of the process, handed to
    /// this one (`--threads`).
    Adopt(Box<Adopted>),
}

/// A socket one loop accepted for another, with its listener's settings.
pub(crate) struct Adopted {
    service: usize,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    ws: Option<Arc<WsConfig>>,
}

/// Where a loop that accepts hands connections: the other loops of the
/// process, each with its control channel and waker. The accepting loop
/// keeps one connection in `1 + others.len()` and hands the rest round-robin.
pub(crate) struct Spread {
    /// Only this service's connections are spread.
    service: usize,
    others: Vec<(std::sync::mpsc::Sender<Control>, Arc<Waker>)>,
    next: usize,
}

/// A connection as the reactor names it: the service, and the service's id.
type Key = (usize, ConnId);

/// Connection tokens are below this (datagram sockets' and listeners'
/// tokens above).
const CONN_TOKEN_END: usize = datagram::DATAGRAM_BASE - MAX_DATAGRAMS;

/// The token of a connection, or `None` if the key is too large to encode
/// (it would collide with the reserved datagram and listener tokens).
fn token_of((svc, conn): Key) -> Option<Token> {
    let t = conn.0.checked_mul(MAX_SERVICES)?.checked_add(svc)?;
    (t < CONN_TOKEN_END).then_some(Token(t))
}

/// The connection a token names.
fn key_of(token: usize) -> Key {
    (token % MAX_SERVICES, ConnId(token / MAX_SERVICES))
}

/// What the reactor keeps with each connection (inside a service's slab).
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    /// Plain, TLS or WebSocket (boxed: plain connections pay one word and
    /// its tag).
    transport: Transport,
    /// [`WRITABLE`], [`WRITE_SHUT`], [`READ_STALLED`], [`CONNECTING`],
    /// [`FLUSH_QUEUED`]: one byte, so the slot keeps its size.
    flags: u8,
    /// The loop turn (wrapping; a match 65,536 turns later only flushes it
    /// early) in which input from it was last handled.
    read_turn: u16,
}

/// Writable interest is registered.
const WRITABLE: u8 = 1;
/// The write side has been shut down (closing, all flushed).
const WRITE_SHUT: u8 = 2;
/// Reading stopped because the service did not want input; resume when it
/// does.
const READ_STALLED: u8 = 4;
/// An outgoing connection whose nonblocking connect has not completed.
const CONNECTING: u8 = 8;
/// In the reactor's queue of deferred flushes.
const FLUSH_QUEUED: u8 = 16;

impl Conn {
    fn new(stream: TcpStream, transport: Transport, flags: u8) -> Self {
        Self {
            stream,
            transport,
            flags,
            read_turn: 0,
        }
    }

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

    /// Clears `flag`; returns whether it was set.
    fn take(&mut self, flag: u8) -> bool {
        let was = self.has(flag);
        self.flags &= !flag;
        was
    }
}

/// A listening socket, plain or TLS, WebSocket or not, and the service it
/// feeds.
pub(crate) struct Listener {
    pub(crate) socket: TcpListener,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// WebSocket (over TLS when `tls` is set too).
    pub(crate) ws: Option<Arc<WsConfig>>,
    pub(crate) service: usize,
}

/// The loop and everything it owns. `S` is the service type: one concrete
/// type for a [`crate::Server`] (so a server is `Send` when its handler is),
/// `Box<dyn Service>` for an [`crate::EventLoop`] hosting several kinds.
/// `D` is the datagram service type: none for a server
/// ([`service::NoDatagrams`]), `Box<dyn DatagramService>` for an event loop.
pub(crate) struct Reactor<S, D = service::NoDatagrams> {
    poll: Poll,
    events: Events,
    listeners: Vec<Listener>,
    services: Vec<S>,
    /// Datagram sockets (UDP) and their services: no connections, so not
    /// in `services`.
    datagrams: Vec<datagram::Datagram<D>>,
    /// Datagram sockets whose read budget ran out (or just added).
    datagram_ready: Vec<usize>,
    /// The read buffers all connections share (also the write path's
    /// gathering buffer, `bufs.scratch`).
    bufs: ReadBufs,
    control: Receiver<Control>,
    /// Connections whose read budget ran out.
    ready: Vec<Key>,
    /// Per-turn lists, kept to reuse their allocations.
    readable: Vec<Key>,
    expired: Vec<ConnId>,
    writable: Vec<Key>,
    dirty: Vec<ConnId>,
    /// Dirty connections waiting for their write, oldest first (see
    /// [`FLUSH_BUDGET`]); an entry counts only while its `flush_queued` is set.
    deferred: VecDeque<Key>,
    /// Counts loop turns (wrapping), to tell which connections were read in
    /// this one.
    turn_no: u16,
    accept_retry_at: Option<Instant>,
    stop_deadline: Option<Instant>,
    /// Bytes written to connections this turn (see `io::TURN_WRITE_BUDGET`).
    turn_written: usize,
    stop_requested: bool,
    /// The other loops of the process, when this one accepts for them.
    spread: Option<Spread>,
}

impl<S: Service, D: DatagramService> std::fmt::Debug for Reactor<S, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("listeners", &self.listeners.len())
            .field("services", &self.services.len())
            .field("datagram_sockets", &self.datagrams.len())
            .field("connections", &self.connections())
            .finish()
    }
}

impl<S: Service, D: DatagramService> Reactor<S, D> {
    /// An empty loop: add services and listeners, then [`Reactor::run`].
    pub(crate) fn new(poll: Poll, control: Receiver<Control>) -> Self {
        Self {
            poll,
            events: Events::with_capacity(1024),
            listeners: Vec::new(),
            services: Vec::new(),
            datagrams: Vec::new(),
            datagram_ready: Vec::new(),
            bufs: ReadBufs::new(SCRATCH_LEN),
            control,
            ready: Vec::new(),
            readable: Vec::new(),
            expired: Vec::new(),
            writable: Vec::new(),
            dirty: Vec::new(),
            deferred: VecDeque::new(),
            turn_no: 0,
            accept_retry_at: None,
            stop_deadline: None,
            turn_written: 0,
            stop_requested: false,
            spread: None,
        }
    }

    /// Makes this loop hand the connections it accepts for `service`
    /// round-robin to itself and `others` (the other loops of the process,
    /// where that service has the same index).
    pub(crate) fn spread_to(
        &mut self,
        service: usize,
        others: Vec<(std::sync::mpsc::Sender<Control>, Arc<Waker>)>,
    ) {
        self.spread = (!others.is_empty()).then_some(Spread {
            service,
            others,
            next: 0,
        });
    }

    /// Service `i`.
    pub(crate) fn service_mut(&mut self, i: usize) -> Option<&mut S> {
        self.services.get_mut(i)
    }

    /// The index the next service added will get, or `None` when full.
    pub(crate) fn next_service(&self) -> Option<usize> {
        (self.services.len() < MAX_SERVICES).then_some(self.services.len())
    }

    /// Adds a service; returns its index (its listeners name it).
    pub(crate) fn add_service(&mut self, service: S) -> Option<usize> {
        let index = self.next_service()?;
        self.services.push(service);
        Some(index)
    }

    /// Registers a bound listener for service `listener.service`.
    pub(crate) fn add_listener(&mut self, mut listener: Listener) -> std::io::Result<()> {
        let i = self.listeners.len();
        if i >= MAX_LISTENERS {
            return Err(std::io::Error::other("too many listeners"));
        }
        self.poll.registry().register(
            &mut listener.socket,
            Token(LISTENER_BASE - i),
            Interest::READABLE,
        )?;
        self.listeners.push(listener);
        Ok(())
    }

    fn connections(&self) -> usize {
        self.services.iter().map(|s| s.links_ref().len()).sum()
    }

    /// Runs until stopped and every connection has been closed.
    pub(crate) fn run(&mut self) -> std::io::Result<()> {
        loop {
            let now = Instant::now();
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut self.events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            self.turn(now);
            let end = Instant::now();
            for s in &mut self.services {
                s.links().stats_mut().turns.record(end, end - now);
            }
            if let Some(deadline) = self.stop_deadline {
                let open = self.connections() + self.datagrams_owing();
                if open == 0 {
                    info!("stopped");
                    return Ok(());
                }
                if now >= deadline {
                    info!("stopped; {open} connections cut off");
                    return Ok(());
                }
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty()
            || !self.deferred.is_empty()
            || self.datagrams_busy()
            || self.services.iter().any(|s| {
                let l = s.links_ref();
                l.has_dirty()
                    || l.has_expired()
                    || l.has_yielded()
                    || l.has_garbage()
                    || s.has_events()
            })
        {
            return Some(Duration::ZERO);
        }
        self.services
            .iter()
            .filter_map(|s| s.poll_timeout())
            .chain(self.datagram_timeout())
            .chain(
                [self.accept_retry_at, self.stop_deadline]
                    .into_iter()
                    .flatten(),
            )
            .min()
            // Round up so a deadline is never polled for a hair too early.
            .map(|t| t.saturating_duration_since(now) + Duration::from_micros(500))
    }

    /// One loop turn after `poll` returned.
    fn turn(&mut self, now: Instant) {
        self.turn_no = self.turn_no.wrapping_add(1);
        self.turn_written = 0;
        let mut readable = std::mem::take(&mut self.readable);
        let mut writable = std::mem::take(&mut self.writable);
        readable.clear();
        writable.clear();
        let mut accept = Vec::new();
        let mut woken = false;
        let mut dgram_readable = std::mem::take(&mut self.datagram_ready);
        let mut dgram_writable = Vec::new();
        for event in self.events.iter() {
            match event.token() {
                WAKER => woken = true,
                Token(t) if t > LISTENER_BASE - MAX_LISTENERS && t <= LISTENER_BASE => {
                    accept.push(LISTENER_BASE - t);
                }
                Token(t) if t >= CONN_TOKEN_END => {
                    if let Some(i) = datagram::datagram_index(t) {
                        if event.is_readable() || event.is_error() {
                            dgram_readable.push(i);
                        }
                        if event.is_writable() {
                            dgram_writable.push(i);
                        }
                    }
                }
                Token(t) => {
                    let key = key_of(t);
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        readable.push(key);
                    }
                    if event.is_writable() || event.is_write_closed() {
                        writable.push(key);
                    }
                }
            }
        }
        if woken {
            self.drain_control(now);
        }
        if self.accept_retry_at.is_some_and(|t| now >= t) {
            self.accept_retry_at = None;
            accept = (0..self.listeners.len()).collect();
        }
        for i in accept {
            self.accept(i, now);
        }
        let mut again = std::mem::take(&mut self.ready);
        // Connections whose protocol ran out of work budget last turn go
        // on with what they kept, then are read again (their socket may
        // hold more, and an edge-triggered poll will not say so twice).
        let mut yielded = std::mem::take(&mut self.expired);
        for svc in 0..self.services.len() {
            let Some(s) = self.services.get_mut(svc) else {
                continue;
            };
            s.links().take_yielded(&mut yielded);
            for &conn in &yielded {
                s.resume(conn, now);
                again.push((svc, conn));
            }
        }
        yielded.clear();
        self.expired = yielded;
        for &key in readable.iter().chain(again.iter()) {
            self.read(key, now);
        }
        dgram_readable.sort_unstable();
        dgram_readable.dedup();
        for &i in &dgram_readable {
            self.read_datagrams(i, now);
        }
        again.clear();
        if self.ready.is_empty() {
            self.ready = again;
        }
        let mut stop = false;
        for s in &mut self.services {
            s.handle_timeout(now);
            stop |= s.after_input(now);
        }
        stop |= self.datagram_turn(&dgram_writable, now);
        if stop {
            self.begin_stop(now);
        }
        self.start_connects(now);
        self.drop_expired(now);
        // Long output queues of dropped connections, freed a slice a turn.
        for s in &mut self.services {
            s.links().reap();
        }
        for &key in &writable {
            self.flush(key, now);
        }
        self.flush_dirty(now);
        self.readable = readable;
        self.writable = writable;
    }

    /// Flushes the connections read this turn, queues the other dirty ones,
    /// and flushes up to [`FLUSH_BUDGET`] of the queue's oldest.
    fn flush_dirty(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for svc in 0..self.services.len() {
            dirty.clear();
            if let Some(s) = self.services.get_mut(svc) {
                s.links().take_dirty(&mut dirty);
            }
            for &conn in &dirty {
                let Some((c, out)) = self
                    .services
                    .get_mut(svc)
                    .and_then(|s| s.links().io_and_output(conn))
                else {
                    continue;
                };
                // Replies go out at once, and so does a queue that already
                // fills a write (waiting would only let it grow towards the
                // slow-consumer limit), unless the socket itself is full.
                let fills_a_write = out.len() >= SCRATCH_LEN && !c.has(WRITABLE);
                if c.read_turn == self.turn_no || fills_a_write {
                    self.flush((svc, conn), now);
                } else if !c.has(FLUSH_QUEUED) {
                    c.set(FLUSH_QUEUED, true);
                    self.deferred.push_back((svc, conn));
                }
            }
        }
        self.dirty = dirty;
        // A sweep of the queue takes at most `READ_BUDGET` turns, and while
        // it lasts each connection gets one read step per turn (`read`). A
        // deferred queue is written as soon as it holds `SCRATCH_LEN`, so
        // deferring adds at most one read step per publisher to what a
        // subscriber's queue holds before its write.
        // (Writing the whole queue at once when a turn read nothing was
        // tried: at 1,000 subscribers x 100 msg/s it raised p99 from
        // 8.1-10.6 ms to 9.8-17.2 ms in three runs each.)
        let mut budget = FLUSH_BUDGET.max(self.deferred.len().div_ceil(READ_BUDGET));
        while budget > 0 {
            let Some((svc, conn)) = self.deferred.pop_front() else {
                break;
            };
            let Some(c) = self
                .services
                .get_mut(svc)
                .and_then(|s| s.links().io_mut(conn))
            else {
                continue;
            };
            // A stale entry (flushed since, or a new connection in a reused
            // slot) is skipped; one waiting for writable space is flushed by
            // the writable event.
            if !c.take(FLUSH_QUEUED) || c.has(WRITABLE) {
                continue;
            }
            self.flush((svc, conn), now);
            budget -= 1;
        }
    }

    fn drain_control(&mut self, now: Instant) {
        loop {
            let control = match self.control.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            };
            let (svc, message) = match control {
                Control::Stop => {
                    self.begin_stop(now);
                    continue;
                }
                Control::Service(svc, message) => (svc, message),
                Control::Adopt(a) => {
                    if !self.stop_requested {
                        let Adopted {
                            service,
                            stream,
                            peer,
                            tls,
                            ws,
                        } = *a;
                        self.admit(service, stream, peer, (tls, ws), now);
                    }
                    continue;
                }
            };
            let stop = self
                .services
                .get_mut(svc)
                .is_some_and(|s| s.handle_control(message, now));
            if stop {
                self.begin_stop(now);
            }
        }
    }

    fn begin_stop(&mut self, now: Instant) {
        if self.stop_requested {
            return;
        }
        self.stop_requested = true;
        info!("shutting down: {} connections to close", self.connections());
        for mut l in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l.socket);
        }
        self.stop_datagrams();
        let mut drain = Duration::ZERO;
        for s in &mut self.services {
            s.shutdown(now);
            drain = drain.max(s.links_ref().limits().drain);
        }
        // Each connection is dropped at its own drain deadline; this is the
        // backstop.
        self.stop_deadline = Some(now + drain + Duration::from_millis(500));
    }

    fn accept(&mut self, index: usize, now: Instant) {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.socket.accept() {
                Ok((stream, peer)) => {
                    let tls = listener.tls.clone();
                    let ws = listener.ws.clone();
                    let svc = listener.service;
                    if let Some(sp) = self.spread.as_mut().filter(|sp| sp.service == svc) {
                        let n = sp.others.len() + 1;
                        let turn = sp.next % n;
                        sp.next = sp.next.wrapping_add(1);
                        if let Some((tx, waker)) =
                            turn.checked_sub(1).and_then(|i| sp.others.get(i))
                        {
                            let adopted = Adopted {
                                service: svc,
                                stream,
                                peer,
                                tls,
                                ws,
                            };
                            // A loop that has stopped drops the socket.
                            if tx.send(Control::Adopt(Box::new(adopted))).is_ok() {
                                let _ = waker.wake();
                            }
                            continue;
                        }
                    }
                    self.admit(svc, stream, peer, (tls, ws), now);
                }
                Err(e) if io::is_would_block(&e) => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: the backlog stays readable, but with
                    // edge-triggered readiness nobody will tell us again, so
                    // retry on a timer instead of spinning.
                    error!("accept failed: {e}; retrying in {ACCEPT_BACKOFF:?}");
                    self.accept_retry_at = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn admit(
        &mut self,
        svc: usize,
        stream: TcpStream,
        peer: SocketAddr,
        (tls, ws): (Option<Arc<rustls::ServerConfig>>, Option<Arc<WsConfig>>),
        now: Instant,
    ) {
        let _ = stream.set_nodelay(true);
        let tls = match tls.map(|config| TlsSession::new(&config)) {
            None => None,
            Some(Ok(session)) => Some(session),
            Some(Err(e)) => {
                warn!("{peer}: cannot start TLS: {e}");
                return;
            }
        };
        let transport = match (tls, ws) {
            (Some(tls), Some(ws)) => Transport::Wss(Box::new(WsLayer::new(ws, tls))),
            (None, Some(ws)) => Transport::Ws(Box::new(WsLayer::new(ws, NoTls))),
            (Some(tls), None) => Transport::Tls(Box::new(tls)),
            (None, None) => Transport::Plain,
        };
        let conn = Conn::new(stream, transport, 0);
        let Some(service) = self.services.get_mut(svc) else {
            return;
        };
        let id = match service.accept(conn, peer, now) {
            Admission::Open(id) => id,
            Admission::Refused(id) => {
                // A WebSocket client is told with an HTTP answer, once its
                // request has arrived.
                if let Some(c) = service.links().io_mut(id) {
                    c.transport.refuse_full();
                }
                id
            }
            Admission::Dropped(mut c, farewell) => {
                // Only a connection over the limit gets a farewell (not one
                // arriving during a shutdown).
                if farewell.is_some() {
                    warn!("{peer}: refused: over the connection limit, not kept");
                }
                // No state kept: the farewell is written once, without
                // waiting (plain connections only: a TLS client could not
                // read it before a handshake), then the socket is closed.
                if let (Some(farewell), true) = (farewell, c.transport.is_plain()) {
                    let _ = std::io::Write::write(&mut c.stream, &farewell);
                    let _ = c.stream.shutdown(Shutdown::Write);
                }
                return;
            }
        };
        count_open(service.links(), id, 1);
        let websocket = service
            .links()
            .io_mut(id)
            .is_some_and(|c| c.transport.is_websocket());
        if websocket {
            service.links().set_websocket(id);
        }
        let registry = self.poll.registry();
        let registered = match (token_of((svc, id)), service.links().io_mut(id)) {
            (Some(token), Some(c)) => registry.register(&mut c.stream, token, Interest::READABLE),
            (None, _) => Err(std::io::Error::other("connection key out of token range")),
            (_, None) => Ok(()),
        };
        if let Err(e) = registered {
            warn!("{}: cannot register: {e}", service.links_ref().log_peer(id));
            count_open(service.links(), id, -1);
            service.remove(id, CloseReason::Io);
        }
    }

    /// Opens the outgoing connections services asked for this turn.
    fn start_connects(&mut self, now: Instant) {
        let mut wanted = Vec::new();
        for svc in 0..self.services.len() {
            if let Some(s) = self.services.get_mut(svc) {
                s.take_connects(&mut wanted);
            }
            for (tag, addr) in wanted.drain(..) {
                let transport = match self.services.get_mut(svc) {
                    Some(s) => s.connect_transport(tag),
                    None => Ok(Transport::Plain),
                };
                let started = if self.stop_requested {
                    Err(std::io::Error::other("shutting down"))
                } else {
                    transport.and_then(|t| self.add_outgoing(svc, addr, t))
                };
                if let Some(s) = self.services.get_mut(svc) {
                    s.connect_started(tag, started, now);
                }
            }
        }
    }

    /// Starts an outgoing connection for service `svc`, plain or (with
    /// `tls`) TLS, by mio's nonblocking connect: register for writable, then
    /// check the result when the socket says so (see
    /// [`Reactor::check_connect`]).
    pub(crate) fn add_outgoing(
        &mut self,
        svc: usize,
        addr: SocketAddr,
        transport: Transport,
    ) -> std::io::Result<ConnId> {
        let stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        let conn = Conn::new(stream, transport, WRITABLE | CONNECTING);
        let service = self
            .services
            .get_mut(svc)
            .ok_or_else(|| std::io::Error::other("no such service"))?;
        let (Admission::Open(id) | Admission::Refused(id)) =
            service.accept(conn, addr, Instant::now())
        else {
            return Err(std::io::Error::other("the service refused the connection"));
        };
        count_open(service.links(), id, 1);
        let token = token_of((svc, id));
        let registered = match (token, service.links().io_mut(id)) {
            (Some(token), Some(c)) => self.poll.registry().register(
                &mut c.stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ),
            _ => Err(std::io::Error::other("connection key out of token range")),
        };
        if let Err(e) = registered {
            count_open(service.links(), id, -1);
            service.remove(id, CloseReason::ConnectFailed);
            return Err(e);
        }
        Ok(id)
    }

    /// For a connection still connecting: whether the connect has completed
    /// (then the service hears of it as established). A failed connect drops
    /// the connection; a spurious wakeup leaves it waiting.
    fn check_connect(&mut self, key: Key, now: Instant) -> bool {
        let (svc, conn) = key;
        let Some(service) = self.services.get_mut(svc) else {
            return false;
        };
        let closing = service.links_ref().is_closing(conn);
        let Some(c) = service.links().io_mut(conn) else {
            return false;
        };
        if !c.has(CONNECTING) {
            return true;
        }
        if closing {
            // Closed (e.g. by a shutdown) before the connect completed.
            self.drop_conn(key, CloseReason::ConnectFailed);
            return false;
        }
        let failure = match c.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match c.stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == ErrorKind::NotConnected => return false,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failure {
            // The service that asked for it reports it as it sees fit (the
            // cluster engine once per outage, not once per retry).
            debug!(
                "{}: connect failed: {e}",
                service.links_ref().log_peer(conn)
            );
            self.drop_conn(key, CloseReason::ConnectFailed);
            return false;
        }
        c.set(CONNECTING, false);
        c.transport.start();
        let plain = c.transport.is_plain();
        info!(
            "{}: connected (outgoing)",
            service.links_ref().log_peer(conn)
        );
        if plain {
            service.handle_secured(conn, None, now);
        } else {
            // Established once the handshake completes (`tls_progress`).
            service.links().mark_dirty(conn);
        }
        true
    }

    /// Reads until `WouldBlock`, end of stream, the service pausing, or the budget.
    fn read(&mut self, key: Key, now: Instant) {
        let (svc, conn) = key;
        if !self.check_connect(key, now) {
            return;
        }
        // One step per turn while deferred flushes are waiting (see
        // `flush_dirty`), so input cannot outrun the writes.
        let steps = if self.deferred.is_empty() {
            READ_BUDGET
        } else {
            1
        };
        for _ in 0..steps {
            let Some(service) = self.services.get_mut(svc) else {
                return;
            };
            if !service.links_ref().wants_read(conn) {
                let who = service.links_ref().log_id(conn);
                if let Some(c) = service.links().io_mut(conn) {
                    if !c.has(READ_STALLED) {
                        log::trace!("{who}: reading paused");
                    }
                    c.set(READ_STALLED, true);
                }
                return;
            }
            let window = service.links_ref().read_window(conn);
            let Some(c) = service.links().io_mut(conn) else {
                return;
            };
            // Whatever this read brings (data, handshake records, the end of
            // the stream), the replies to it go out this turn.
            c.read_turn = self.turn_no;
            // A plain connection the protocol does not trust yet is read a
            // window at a time (see `Links::read_window`).
            let step = c.transport.read_step(&mut c.stream, &mut self.bufs, window);
            match step {
                Ok(ReadStep::Data(n)) => {
                    // The handshake may have finished in the same read as
                    // this data: log in by certificate before commands run.
                    self.tls_progress(key, now);
                    if let Some(service) = self.services.get_mut(svc) {
                        let links = service.links();
                        let data = match links.io_mut(conn) {
                            Some(c) => c.transport.input(&self.bufs, n),
                            None => &[],
                        };
                        links.stats_mut().bytes_in += data.len() as u64;
                        service.handle_input(conn, data, now);
                    }
                }
                Ok(ReadStep::Progress) => self.tls_progress(key, now),
                Ok(ReadStep::WouldBlock) => return,
                Ok(ReadStep::Eof) => {
                    service_eof(&mut self.services, key, now);
                    return;
                }
                Err(ReadError::Io(e)) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.read_failed(key, &e);
                    return;
                }
            }
        }
        self.ready.push(key);
    }

    /// After TLS records were processed: report a completed handshake, and
    /// make sure handshake records get written this turn.
    fn tls_progress(&mut self, (svc, conn): Key, now: Instant) {
        let Some(service) = self.services.get_mut(svc) else {
            return;
        };
        let Some(c) = service.links().io_mut(conn) else {
            return;
        };
        let established = c.transport.take_established();
        let wants_write = c.transport.wants_write();
        if established.is_some() && matches!(c.transport.kind(), Kind::Tls | Kind::Wss) {
            service.links().stats_mut().tls_handshakes += 1;
        }
        if let Some(subject) = established {
            service.handle_secured(conn, subject, now);
        }
        if wants_write {
            service.links().mark_dirty(conn);
        }
    }

    /// A read failed: for TLS, send the alert rustls queued (best effort); then drop.
    fn read_failed(&mut self, key: Key, e: &ReadError) {
        let (svc, conn) = key;
        let Some(service) = self.services.get_mut(svc) else {
            return;
        };
        let who = service.links_ref().log_peer(conn);
        let tls_error = matches!(e, ReadError::Tls(_));
        if let Some(c) = service.links().io_mut(conn) {
            c.transport
                .write_alert(&mut c.stream, &mut self.bufs.scratch);
        }
        if tls_error {
            warn!("{who}: TLS error, closing: {e}");
            self.drop_conn(key, CloseReason::Tls);
        } else {
            debug!("{who}: read failed: {e}");
            self.drop_conn(key, CloseReason::Io);
        }
    }

    /// Writes what is queued, then settles interest, half-close and drop.
    fn flush(&mut self, key: Key, now: Instant) {
        let (svc, conn) = key;
        if !self.check_connect(key, now) {
            return;
        }
        let Some(service) = self.services.get_mut(svc) else {
            return;
        };
        let closing = service.links_ref().is_closing(conn);
        let Some((c, out)) = service.links().io_and_output(conn) else {
            return;
        };
        c.set(FLUSH_QUEUED, false);
        let queued = out.len();
        // Closing: TLS sends close_notify once everything owed is out. At
        // most `WRITE_BUDGET` bytes this turn; the rest is flushed again
        // next turn (the socket would take more, so no writable event will
        // say so).
        let budget = io::TURN_WRITE_BUDGET
            .saturating_sub(self.turn_written)
            .clamp(io::MIN_WRITE, io::WRITE_BUDGET);
        let mut sock = io::Budgeted::new(&mut c.stream, budget);
        let written = c
            .transport
            .write_to(&mut sock, out, &mut self.bufs.scratch, closing);
        let more = sock.spent;
        self.turn_written += budget - sock.left;
        let sent = queued.saturating_sub(out.len()) as u64;
        let pending = match written {
            Ok(pending) => pending && !more,
            Err(e) => {
                debug!("{}: write failed: {e}", service.links_ref().log_peer(conn));
                self.drop_conn(key, CloseReason::Io);
                return;
            }
        };
        if pending != c.has(WRITABLE) {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let rereg = match token_of(key) {
                Some(token) => self
                    .poll
                    .registry()
                    .reregister(&mut c.stream, token, interest),
                None => Err(std::io::Error::other("connection key out of token range")),
            };
            if let Err(e) = rereg {
                warn!(
                    "{}: cannot reregister: {e}",
                    service.links_ref().log_peer(conn)
                );
                self.drop_conn(key, CloseReason::Io);
                return;
            }
            c.set(WRITABLE, pending);
        }
        if more && !c.has(FLUSH_QUEUED) {
            c.set(FLUSH_QUEUED, true);
            self.deferred.push_back(key);
        }
        // A WebSocket that ended on an error waits for its peer (bounded
        // by the linger) instead of resetting it.
        let awaits = c.transport.awaits_peer();
        if closing && !pending && !more && !c.has(WRITE_SHUT) && !c.transport.holds_shutdown() {
            c.set(WRITE_SHUT, true);
            let _ = c.stream.shutdown(Shutdown::Write);
            service.links().write_done(conn, now);
        }
        service.links().stats_mut().bytes_out += sent;
        if service.links_ref().finished(conn, now) && !awaits {
            self.drop_conn(key, CloseReason::Io);
            return;
        }
        let resume = service
            .links()
            .io_mut(conn)
            .is_some_and(|c| c.take(READ_STALLED));
        if resume {
            service.resume(conn, now);
            self.read(key, now);
        }
    }

    /// Closing connections past their deadline are written to one last
    /// time (without waiting) and dropped, whether or not their socket would
    /// take more: a peer that never reads cannot keep its slot, its file
    /// descriptor or its kernel buffers (protocol.md 7a).
    fn drop_expired(&mut self, now: Instant) {
        let mut expired = std::mem::take(&mut self.expired);
        for svc in 0..self.services.len() {
            if let Some(s) = self.services.get_mut(svc) {
                s.links().take_expired(&mut expired);
            }
            for &conn in &expired {
                if let Some(s) = self.services.get(svc) {
                    debug!("{}: closing deadline passed", s.links_ref().log_peer(conn));
                }
                self.flush((svc, conn), now);
                self.drop_conn((svc, conn), CloseReason::Io);
            }
        }
        self.expired = expired;
    }

    fn drop_conn(&mut self, (svc, conn): Key, reason: CloseReason) {
        let removed = self.services.get_mut(svc).and_then(|s| {
            count_open(s.links(), conn, -1);
            s.remove(conn, reason)
        });
        if let Some(mut c) = removed {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }
}

/// Keeps the table's counts of open TLS and WebSocket connections
/// (`connections_tls`, `connections_ws`).
fn count_open(links: &mut dyn Table<Conn>, conn: ConnId, delta: i8) {
    let kind = links.io_mut(conn).map(|c| c.transport.kind());
    let stats = links.stats_mut();
    let open = match kind {
        Some(Kind::Tls) => &mut stats.open_tls,
        Some(Kind::Ws | Kind::Wss) => &mut stats.open_ws,
        Some(Kind::Tcp) | None => return,
    };
    *open = if delta > 0 {
        *open + 1
    } else {
        open.saturating_sub(1)
    };
}

/// The peer closed its side.
fn service_eof<S: Service>(services: &mut [S], (svc, conn): Key, now: Instant) {
    if let Some(s) = services.get_mut(svc) {
        s.handle_eof(conn, now);
    }
}

/// Makes a waker for the control channel.
pub(crate) fn waker(poll: &Poll) -> std::io::Result<Arc<Waker>> {
    Ok(Arc::new(Waker::new(poll.registry(), WAKER)?))
}

#[cfg(test)]
mod tests {
    /// The reactor's part of every connection stays small (the whole slot
    /// is guarded in `server.rs`): the socket, the transport (a tag and a
    /// box), a flag byte and the turn. 24 bytes in release builds, where a
    /// mio socket is a file descriptor; debug builds add mio's selector id.
    #[test]
    fn conn_stays_small() {
        let socket = std::mem::size_of::<mio::net::TcpStream>();
        let budget = (socket + 16 + 3).next_multiple_of(8);
        assert!(std::mem::size_of::<super::Conn>() <= budget);
        if !cfg!(debug_assertions) {
            assert!(std::mem::size_of::<super::Conn>() <= 24);
        }
    }

    #[test]
    fn tokens_round_trip_and_stay_below_listeners() {
        use super::*;
        for key in [
            (0, ConnId(0)),
            (3, ConnId(7)),
            (MAX_SERVICES - 1, ConnId(1 << 20)),
        ] {
            let t = token_of(key).expect("encodable");
            assert_eq!(key_of(t.0), key);
            assert!(t.0 <= LISTENER_BASE - MAX_LISTENERS);
            assert_eq!(datagram::datagram_index(t.0), None);
        }
        assert_eq!(token_of((0, ConnId(usize::MAX / 2))), None);
    }
}
