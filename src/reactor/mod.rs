//! The reactor: one `mio::Poll` loop on one thread. The only module that
//! names mio types.
//!
//! It is deliberately thin: readiness in, the broker stepped, writes flushed.
//!
//! - Sockets are edge-triggered, so every readable socket is read until
//!   `WouldBlock`, within a budget per wakeup; a connection that used up its
//!   budget is revisited on the next turn (with a zero poll timeout), so one
//!   busy client cannot starve the others.
//! - Bytes are read into one scratch buffer shared by all connections; the
//!   broker copies only a frame's unfinished tail.
//! - Output is flushed with vectored writes once per turn for each connection
//!   the broker marked dirty, so several frames queued in one turn leave in one
//!   system call. Writable interest is registered only while output is pending.
//! - Timers live in the broker's heap; the poll timeout is its next deadline.
//!   There is no sleep anywhere.
//! - A closing connection is flushed, its write side shut down, and it is
//!   dropped when the peer closes or its linger deadline passes, so the peer
//!   reads the final `ERR` instead of a reset.
//! - Spurious wakeups and events for unknown tokens are ignored.

mod io;

use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::auth::{AuthPool, AuthVerdict};
use crate::broker::{Broker, CloseReason, ConnId};
use crate::buf::MAX_IOV;
use crate::handler::{Context, Handler, dispatch};
use crate::server::Control;
use crate::tls::{ReadStep, TlsSession};

/// The waker's token.
const WAKER: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 1;
/// Size of the shared read buffer.
const SCRATCH_LEN: usize = 64 << 10;
/// Read steps per connection per wakeup before the others get a turn (a TLS
/// connection uses about two per record: read, then hand out plaintext).
const READ_BUDGET: usize = 32;
/// How long to stop accepting after running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the reactor keeps with each connection (inside the broker's slab).
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    /// The TLS state, on TLS listeners' connections (boxed: plain
    /// connections pay one pointer).
    tls: Option<Box<TlsSession>>,
    /// Writable interest is registered.
    writable: bool,
    /// The write side has been shut down (closing, all flushed).
    write_shut: bool,
    /// Reading stopped because the broker did not want input; resume when it does.
    read_stalled: bool,
}

/// A listening socket, plain or TLS.
pub(crate) struct Listener {
    pub(crate) socket: TcpListener,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

/// The loop and everything it owns.
pub(crate) struct Reactor<H> {
    poll: Poll,
    events: Events,
    listeners: Vec<Listener>,
    broker: Broker<Conn>,
    handler: H,
    scratch: Box<[u8]>,
    /// Plaintext decrypted from TLS records in one read step.
    plain: Vec<u8>,
    control: Receiver<Control>,
    auth: Option<AuthPool>,
    /// Connections whose read budget ran out.
    ready: Vec<ConnId>,
    /// Per-turn lists, kept to reuse their allocations.
    readable: Vec<ConnId>,
    writable: Vec<ConnId>,
    dirty: Vec<ConnId>,
    accept_retry_at: Option<Instant>,
    stop_deadline: Option<Instant>,
    stop_requested: bool,
}

impl<H> std::fmt::Debug for Reactor<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("listeners", &self.listeners.len())
            .field("connections", &self.broker.len())
            .finish()
    }
}

impl<H: Handler> Reactor<H> {
    pub(crate) fn new(
        poll: Poll,
        listeners: Vec<Listener>,
        mut broker: Broker<Conn>,
        handler: H,
        control: Receiver<Control>,
        auth: Option<AuthPool>,
    ) -> std::io::Result<Self> {
        let mut listeners = listeners;
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry().register(
                &mut l.socket,
                Token(LISTENER_BASE - i),
                Interest::READABLE,
            )?;
        }
        broker.set_events_enabled(handler.wants_events());
        Ok(Self {
            poll,
            events: Events::with_capacity(1024),
            listeners,
            broker,
            handler,
            scratch: vec![0; SCRATCH_LEN].into_boxed_slice(),
            plain: Vec::with_capacity(SCRATCH_LEN),
            control,
            auth,
            ready: Vec::new(),
            readable: Vec::new(),
            writable: Vec::new(),
            dirty: Vec::new(),
            accept_retry_at: None,
            stop_deadline: None,
            stop_requested: false,
        })
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
            if let Some(deadline) = self.stop_deadline {
                if self.broker.is_empty() {
                    info!("stopped");
                    return Ok(());
                }
                if now >= deadline {
                    info!("stopped; {} connections cut off", self.broker.len());
                    return Ok(());
                }
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || self.broker.has_dirty() || self.broker.has_events() {
            return Some(Duration::ZERO);
        }
        [
            self.broker.poll_timeout(),
            self.accept_retry_at,
            self.stop_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
        // Round up so a deadline is never polled for a hair too early.
        .map(|t| t.saturating_duration_since(now) + Duration::from_micros(500))
    }

    /// One loop turn after `poll` returned.
    fn turn(&mut self, now: Instant) {
        let mut readable = std::mem::take(&mut self.readable);
        let mut writable = std::mem::take(&mut self.writable);
        readable.clear();
        writable.clear();
        let mut accept = Vec::new();
        let mut woken = false;
        for event in self.events.iter() {
            match event.token() {
                WAKER => woken = true,
                Token(t) if t > LISTENER_BASE - self.listeners.len() && t <= LISTENER_BASE => {
                    accept.push(LISTENER_BASE - t);
                }
                Token(key) => {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        readable.push(ConnId(key));
                    }
                    if event.is_writable() || event.is_write_closed() {
                        writable.push(ConnId(key));
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
        for &conn in readable.iter().chain(again.iter()) {
            self.read(conn, now);
        }
        again.clear();
        if self.ready.is_empty() {
            self.ready = again;
        }
        self.broker.handle_timeout(now);
        self.after_input(now);
        for &conn in &writable {
            self.flush(conn, now);
        }
        self.flush_dirty(now);
        self.readable = readable;
        self.writable = writable;
    }

    /// Hands password checks to the pool and events to the handler.
    fn after_input(&mut self, now: Instant) {
        while let Some(req) = self.broker.poll_auth_request() {
            match &self.auth {
                Some(pool) => pool.submit(req),
                None => self
                    .broker
                    .handle_auth_result(req.conn, req.ticket, false, now),
            }
        }
        let mut stop = false;
        while let Some(event) = self.broker.poll_event() {
            let mut ctx = Context {
                broker: &mut self.broker,
                now,
                stop: &mut stop,
            };
            dispatch(&mut self.handler, &mut ctx, event);
        }
        if stop {
            self.begin_stop(now);
        }
    }

    fn flush_dirty(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        self.broker.take_dirty(&mut dirty);
        for &conn in &dirty {
            self.flush(conn, now);
        }
        self.dirty = dirty;
    }

    fn drain_control(&mut self, now: Instant) {
        loop {
            match self.control.try_recv() {
                Ok(Control::Stop) => self.begin_stop(now),
                Ok(Control::Auth(AuthVerdict { conn, ticket, ok })) => {
                    self.broker.handle_auth_result(conn, ticket, ok, now);
                }
                Ok(Control::Call(f)) => {
                    let mut stop = false;
                    let mut ctx = Context {
                        broker: &mut self.broker,
                        now,
                        stop: &mut stop,
                    };
                    f(&mut ctx);
                    if stop {
                        self.begin_stop(now);
                    }
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }

    fn begin_stop(&mut self, now: Instant) {
        if self.stop_requested {
            return;
        }
        self.stop_requested = true;
        info!("shutting down: {} connections to close", self.broker.len());
        for mut l in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l.socket);
        }
        self.broker.shutdown(now);
        self.stop_deadline = Some(now + self.broker.config().linger + Duration::from_millis(500));
    }

    fn accept(&mut self, index: usize, now: Instant) {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.socket.accept() {
                Ok((stream, peer)) => {
                    let tls = listener.tls.clone();
                    self.admit(stream, peer, tls, now);
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
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        now: Instant,
    ) {
        let _ = stream.set_nodelay(true);
        let tls = match tls.map(|config| TlsSession::new(&config)) {
            None => None,
            Some(Ok(session)) => Some(Box::new(session)),
            Some(Err(e)) => {
                warn!("{peer}: cannot start TLS: {e}");
                return;
            }
        };
        let conn = Conn {
            stream,
            tls,
            writable: false,
            write_shut: false,
            read_stalled: false,
        };
        let Ok(id) = self.broker.accept(conn, peer, now) else {
            debug!("{peer}: dropped (over the connection limit)");
            return;
        };
        let registry = self.poll.registry();
        let registered = self
            .broker
            .io_mut(id)
            .map(|c| registry.register(&mut c.stream, Token(id.0), Interest::READABLE));
        if let Some(Err(e)) = registered {
            warn!("{peer}: cannot register: {e}");
            self.broker.remove(id, CloseReason::Io);
        }
    }

    /// Reads until `WouldBlock`, end of stream, the broker pausing, or the budget.
    fn read(&mut self, conn: ConnId, now: Instant) {
        for _ in 0..READ_BUDGET {
            if !self.broker.wants_read(conn) {
                if let Some(c) = self.broker.io_mut(conn) {
                    if !c.read_stalled {
                        log::trace!("{conn}: reading paused");
                    }
                    c.read_stalled = true;
                }
                return;
            }
            let Some(c) = self.broker.io_mut(conn) else {
                return;
            };
            let step = match &mut c.tls {
                Some(tls) => tls.read_step(&mut c.stream, &mut self.scratch, &mut self.plain),
                None => match c.stream.read(&mut self.scratch) {
                    Ok(0) => Ok(ReadStep::Eof),
                    Ok(n) => Ok(ReadStep::Data(n)),
                    Err(e) if io::is_would_block(&e) => Ok(ReadStep::WouldBlock),
                    Err(e) => Err(e),
                },
            };
            match step {
                Ok(ReadStep::Data(n)) => {
                    let is_tls = self.broker.io_mut(conn).is_some_and(|c| c.tls.is_some());
                    if is_tls {
                        // The handshake may have finished in the same read as
                        // this data: log in by certificate before commands run.
                        self.tls_progress(conn, now);
                    }
                    let data = if is_tls {
                        self.plain.get(..n)
                    } else {
                        self.scratch.get(..n)
                    };
                    self.broker
                        .handle_input(conn, data.unwrap_or_default(), now);
                }
                Ok(ReadStep::Progress) => self.tls_progress(conn, now),
                Ok(ReadStep::WouldBlock) => return,
                Ok(ReadStep::Eof) => {
                    self.broker.handle_eof(conn, now);
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.read_failed(conn, &e);
                    return;
                }
            }
        }
        self.ready.push(conn);
    }

    /// After TLS records were processed: report a completed handshake, and
    /// make sure handshake records get written this turn.
    fn tls_progress(&mut self, conn: ConnId, now: Instant) {
        let Some(tls) = self.broker.io_mut(conn).and_then(|c| c.tls.as_mut()) else {
            return;
        };
        let established = tls.take_established();
        let wants_write = tls.wants_write();
        if let Some(subject) = established {
            self.broker.handle_secured(conn, subject, now);
        }
        if wants_write {
            self.broker.touch(conn);
        }
    }

    /// A read failed: for TLS, send the alert rustls queued (best effort); then drop.
    fn read_failed(&mut self, conn: ConnId, e: &std::io::Error) {
        let peer = self.broker.peer(conn);
        let tls_error = e.kind() == ErrorKind::InvalidData;
        if let Some(c) = self.broker.io_mut(conn) {
            if let Some(tls) = &mut c.tls {
                let mut none = crate::buf::OutQueue::default();
                let _ = tls.write_to(&mut c.stream, &mut none, &mut self.scratch);
            }
        }
        if tls_error {
            info!(
                "{conn} {}: TLS error, closing: {e}",
                peer.map(|p| p.to_string()).unwrap_or_default()
            );
            self.drop_conn(conn, CloseReason::Tls);
        } else {
            debug!("{conn}: read failed: {e}");
            self.drop_conn(conn, CloseReason::Io);
        }
    }

    /// Writes what is queued, then settles interest, half-close and drop.
    fn flush(&mut self, conn: ConnId, now: Instant) {
        let closing = self.broker.is_closing(conn);
        let Some((c, out)) = self.broker.io_and_output(conn) else {
            return;
        };
        let written = match &mut c.tls {
            Some(tls) => {
                if closing {
                    // Sent once everything owed is out.
                    tls.send_close_notify();
                }
                tls.write_to(&mut c.stream, out, &mut self.scratch)
            }
            None => write_plain(&mut c.stream, out),
        };
        let pending = match written {
            Ok(pending) => pending,
            Err(e) => {
                debug!("{conn}: write failed: {e}");
                self.drop_conn(conn, CloseReason::Io);
                return;
            }
        };
        if pending != c.writable {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut c.stream, Token(conn.0), interest)
            {
                warn!("{conn}: cannot reregister: {e}");
                self.drop_conn(conn, CloseReason::Io);
                return;
            }
            c.writable = pending;
        }
        if closing && !pending && !c.write_shut {
            c.write_shut = true;
            let _ = c.stream.shutdown(Shutdown::Write);
        }
        if self.broker.finished(conn, now) {
            self.drop_conn(conn, CloseReason::Io);
            return;
        }
        let resume = self
            .broker
            .io_mut(conn)
            .is_some_and(|c| std::mem::take(&mut c.read_stalled));
        if resume {
            self.broker.resume(conn, now);
            self.read(conn, now);
        }
    }

    fn drop_conn(&mut self, conn: ConnId, reason: CloseReason) {
        if let Some(mut c) = self.broker.remove(conn, reason) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }
}

/// Writes queued plaintext with vectored writes until done or `WouldBlock`.
/// Returns whether output is still pending.
fn write_plain(stream: &mut TcpStream, out: &mut crate::buf::OutQueue) -> std::io::Result<bool> {
    while !out.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let n = out.fill_slices(&mut slices);
        match stream.write_vectored(slices.get(..n).unwrap_or_default()) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(written) => out.consume(written),
            Err(e) if io::is_would_block(&e) => return Ok(true),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Makes a waker for the control channel.
pub(crate) fn waker(poll: &Poll) -> std::io::Result<Arc<Waker>> {
    Ok(Arc::new(Waker::new(poll.registry(), WAKER)?))
}

#[cfg(test)]
mod tests {
    /// Memory per connection is a product feature: the slab slot of an idle
    /// session (its state, queues and socket) stays within this budget.
    /// Raise it only on purpose, with the density figures in the README.
    #[test]
    fn session_slot_stays_small() {
        let slot = std::mem::size_of::<crate::broker::SessionSize>();
        assert!(slot <= 320, "session slot grew to {slot} bytes");
        assert!(std::mem::size_of::<super::Conn>() <= 32);
    }
}
