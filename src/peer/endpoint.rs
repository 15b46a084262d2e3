//! [`PeerEndpoint`]: a listener for direct peer connections on a background
//! thread with its own `mio` loop, each connection a [`PeerSession`].
//!
//! The thread accepts, reads until `WouldBlock` (at most what the session
//! has room for), hands messages to the program, writes the replies, and
//! enforces the deadlines: the idle timeout of each session, and a 2 s
//! linger for a connection it has closed (write side shut, input discarded
//! until the peer closes, then dropped whatever the peer does). The poll
//! timeout is the nearest deadline; the thread never spins.
//!
//! Bounds: at most `max_connections` open sessions (a new connection past
//! that closes the quietest one with `ERR server-full`, so that a peer that
//! holds connections open cannot keep the directory's probe out), and as
//! many again closing (past that the closing one nearest its end is dropped
//! at once); at most 256 accepts a turn; per session one header plus `max_payload` of input
//! and [`OUTPUT_PAUSE`](super::session::OUTPUT_PAUSE) of replies; at most
//! `queue` messages waiting for [`PeerEndpoint::recv`] (past that, `ERR
//! busy`).

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::PeerError;
use super::session::{Ending, PeerEvent, PeerSession, SessionLimits};
use crate::error::ErrorCode;
use crate::proto::frame;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection tokens start here.
const FIRST_CONN: usize = 2;
/// The read buffer, shared by every connection.
const SCRATCH: usize = 64 << 10;
/// Most bytes read from one connection per loop turn.
const READ_BUDGET: usize = 1 << 20;
/// Most connections accepted per loop turn.
const ACCEPTS_PER_TURN: usize = 256;
/// How long to wait before accepting again after accept failed.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How long a closed connection waits for its peer to close before it goes.
const LINGER: Duration = Duration::from_secs(2);

/// Where and how a [`PeerEndpoint`] listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The address to listen on; port 0 picks a free one
    /// ([`PeerEndpoint::local_addr`] says which).
    pub listen: SocketAddr,
    /// The largest message payload taken (larger: `ERR too-large`, and the
    /// connection is closed). Default 1 MiB, the server's default.
    pub max_payload: usize,
    /// Open connections at most (default 32); a new one past that closes
    /// the quietest.
    pub max_connections: usize,
    /// How long a connection may go without sending a whole frame
    /// (default 30 s).
    pub idle_timeout: Duration,
    /// Messages waiting for [`PeerEndpoint::recv`] at most (default
    /// 1,024); a message past that is refused with `ERR busy`. Not used
    /// with a callback ([`PeerEndpoint::bind_with`]).
    pub queue: usize,
}

impl PeerConfig {
    /// Listens on `listen`, with the default limits.
    pub fn new(listen: SocketAddr) -> Self {
        let limits = SessionLimits::default();
        Self {
            listen,
            max_payload: limits.max_payload,
            max_connections: 32,
            idle_timeout: limits.idle_timeout,
            queue: 1024,
        }
    }
}

/// A message another peer delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerMessage {
    /// The sender's name, as the sending peer gave it. Peers do not log in
    /// to each other (the lecture's form): compare [`PeerMessage::from`]
    /// with the sender's directory entry before trusting it.
    pub sender: String,
    /// The message.
    pub payload: Bytes,
    /// The address the connection came from.
    pub from: SocketAddr,
}

/// Counters of a [`PeerEndpoint`], since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Messages taken (acknowledged).
    pub messages: u64,
    /// `PING`s answered (the directory server's probes among them).
    pub pings: u64,
    /// Messages refused with `ERR busy` (the queue was full).
    pub refused: u64,
    /// Connections closed to make room for a new one.
    pub evicted: u64,
    /// Connections open now (closing ones included).
    pub connections: u64,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Messages sent to the channel and not yet taken by `recv`.
    queued: AtomicUsize,
    accepted: AtomicU64,
    messages: AtomicU64,
    pings: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    connections: AtomicU64,
}

/// Where messages go.
enum Sink {
    Channel(mpsc::Sender<PeerMessage>),
    Callback(Box<dyn FnMut(PeerMessage) + Send>),
}

/// A listener for direct connections from other peers, served by a
/// background thread (protocol.md section 6): `PING 0` is answered `PONG 0`
/// on any connection, without login (the directory server's probe), and
/// each `MESSAGE LEN <sender>` is handed to the program and answered `ACK`.
///
/// Messages arrive through [`PeerEndpoint::recv`], or a callback given to
/// [`PeerEndpoint::bind_with`]. Dropping the endpoint (or
/// [`PeerEndpoint::stop`]) closes every connection and the listener.
///
/// ```no_run
/// use std::time::Duration;
/// use switchboard::peer::{self, PeerConfig, PeerEndpoint};
///
/// let bob = PeerEndpoint::bind(PeerConfig::new("127.0.0.1:0".parse()?))?;
/// // Elsewhere, alice delivers straight to bob's endpoint:
/// peer::deliver(bob.local_addr(), "alice", b"hi bob", Duration::from_secs(5))?;
/// let m = bob.recv(Some(Duration::from_secs(5)))?;
/// assert_eq!((m.sender.as_str(), &m.payload[..]), ("alice", &b"hi bob"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PeerEndpoint {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    messages: Mutex<mpsc::Receiver<PeerMessage>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for PeerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerEndpoint")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl PeerEndpoint {
    /// Listens on `config.listen`; messages arrive through
    /// [`PeerEndpoint::recv`].
    ///
    /// # Errors
    ///
    /// The listener cannot be bound (address in use, not local, ...), or
    /// the thread cannot start.
    pub fn bind(config: PeerConfig) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        Self::start(config, Sink::Channel(tx), rx)
    }

    /// Listens on `config.listen`; each message is given to `callback` on
    /// the endpoint's thread and acknowledged when it returns (keep it
    /// short: no connection is served while it runs).
    ///
    /// # Errors
    ///
    /// As [`PeerEndpoint::bind`].
    pub fn bind_with(
        config: PeerConfig,
        callback: impl FnMut(PeerMessage) + Send + 'static,
    ) -> io::Result<Self> {
        let (_, rx) = mpsc::channel();
        Self::start(config, Sink::Callback(Box::new(callback)), rx)
    }

    fn start(config: PeerConfig, sink: Sink, rx: mpsc::Receiver<PeerMessage>) -> io::Result<Self> {
        if config.max_connections == 0 {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "max_connections must be at least 1",
            ));
        }
        let mut listener = TcpListener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let shared = Arc::new(Shared::default());
        let worker = Worker {
            poll,
            listener,
            conns: Slab::new(),
            limits: SessionLimits {
                max_payload: config.max_payload,
                idle_timeout: config.idle_timeout,
            },
            max_connections: config.max_connections,
            queue: config.queue,
            sink,
            shared: Arc::clone(&shared),
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            retry: Vec::new(),
            accept_again: None,
        };
        let thread = thread::Builder::new()
            .name("switchboard-peer".into())
            .spawn(move || worker.run())?;
        info!("peer endpoint listening on {local_addr}");
        Ok(Self {
            local_addr,
            shared,
            waker,
            messages: Mutex::new(rx),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The address the endpoint listens on (the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next message, waiting at most `timeout` (`None`: no limit).
    ///
    /// # Errors
    ///
    /// [`PeerError::Timeout`]; [`PeerError::Closed`] once the endpoint is
    /// stopped (or has a callback) and every message received before has
    /// been returned.
    pub fn recv(&self, timeout: Option<Duration>) -> Result<PeerMessage, PeerError> {
        let rx = self.messages.lock().unwrap_or_else(PoisonError::into_inner);
        let got = match timeout {
            None => rx.recv().map_err(|_| PeerError::Closed),
            Some(t) => rx.recv_timeout(t).map_err(|e| match e {
                RecvTimeoutError::Timeout => PeerError::Timeout,
                RecvTimeoutError::Disconnected => PeerError::Closed,
            }),
        };
        if got.is_ok() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
        }
        got
    }

    /// The endpoint's counters.
    pub fn stats(&self) -> PeerStats {
        let s = &self.shared;
        PeerStats {
            accepted: s.accepted.load(Ordering::Relaxed),
            messages: s.messages.load(Ordering::Relaxed),
            pings: s.pings.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            evicted: s.evicted.load(Ordering::Relaxed),
            connections: s.connections.load(Ordering::Relaxed),
        }
    }

    /// Stops the thread (every connection is sent `ERR shutting-down` and
    /// closed, the listener closed) and waits for it. Later calls do nothing.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            if handle.thread().id() != thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for PeerEndpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One accepted connection.
struct Conn {
    sock: TcpStream,
    peer: SocketAddr,
    session: PeerSession,
    interest: Interest,
    /// The last read returned `WouldBlock`: wait for readiness.
    read_blocked: bool,
    /// The peer closed its side.
    eof: bool,
    /// Set once the write side is shut: the connection goes then.
    linger_until: Option<Instant>,
}

/// The endpoint's thread.
struct Worker {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    limits: SessionLimits,
    max_connections: usize,
    queue: usize,
    sink: Sink,
    shared: Arc<Shared>,
    scratch: Box<[u8]>,
    /// Connections whose read budget ran out: served again next turn.
    retry: Vec<usize>,
    /// Connections may be waiting in the backlog: accept again at this time.
    accept_again: Option<Instant>,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut ready = Vec::new();
        loop {
            let timeout = if self.retry.is_empty() {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                warn!("peer endpoint: poll failed: {e}; stopping");
                break;
            }
            if self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
            ready.clear();
            ready.append(&mut self.retry);
            let mut accept = false;
            for event in &events {
                match event.token() {
                    LISTENER => accept = true,
                    WAKER => {}
                    Token(t) => {
                        let key = t.wrapping_sub(FIRST_CONN);
                        if let Some(c) = self.conns.get_mut(key) {
                            if event.is_readable() || event.is_read_closed() {
                                c.read_blocked = false;
                            }
                            ready.push(key);
                        }
                    }
                }
            }
            ready.sort_unstable();
            ready.dedup();
            for &key in &ready {
                self.serve(key, Instant::now());
            }
            let now = Instant::now();
            if accept || self.accept_again.is_some_and(|t| t <= now) {
                self.accept(now);
            }
            self.on_timers(Instant::now());
        }
        self.shutdown();
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter_map(|(_, c)| c.linger_until.or_else(|| c.session.next_deadline()))
            .chain(self.accept_again)
            .min()
    }

    fn accept(&mut self, now: Instant) {
        // A flood of connects cannot keep the loop here: the rest wait in
        // the backlog for the next turn.
        // (Readiness is edge-triggered: whatever is left is tried again
        // next turn, or after a pause when accept fails.)
        self.accept_again = Some(now);
        for _ in 0..ACCEPTS_PER_TURN {
            let (mut sock, peer) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.accept_again = None;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, say: the backlog keeps the rest.
                    warn!("peer endpoint: accept failed: {e}");
                    self.accept_again = Some(now + ACCEPT_PAUSE);
                    return;
                }
            };
            self.shared.accepted.fetch_add(1, Ordering::Relaxed);
            let open = self
                .conns
                .iter()
                .filter(|(_, c)| c.session.ending().is_none())
                .count();
            if open >= self.max_connections {
                self.evict_quietest(now);
            }
            if self.conns.len() >= self.max_connections.saturating_mul(2) {
                // As many closing as open: the closing one with the least
                // time left goes now (its farewell was written, or tried).
                self.drop_oldest_closing();
            }
            if self.conns.len() >= self.max_connections.saturating_mul(2) {
                let _ = sock.write(&frame::err(
                    ErrorCode::ServerFull,
                    "too many peer connections; try again later",
                ));
                continue;
            }
            let _ = sock.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let token = Token(key + FIRST_CONN);
            let interest = Interest::READABLE;
            if let Err(e) = self.poll.registry().register(&mut sock, token, interest) {
                warn!("peer endpoint: cannot register {peer}: {e}");
                continue;
            }
            debug!("peer endpoint: connection from {peer}");
            entry.insert(Conn {
                sock,
                peer,
                session: PeerSession::new(self.limits, now),
                interest,
                read_blocked: false,
                eof: false,
                linger_until: None,
            });
            self.shared
                .connections
                .store(self.conns.len() as u64, Ordering::Relaxed);
            // Edge-triggered: bytes that came with the connection are read now.
            self.serve(key, now);
        }
    }

    /// Drops the closing connection whose linger ends first.
    fn drop_oldest_closing(&mut self) {
        let oldest = self
            .conns
            .iter()
            .filter(|(_, c)| c.session.ending().is_some())
            .min_by_key(|(_, c)| c.linger_until)
            .map(|(k, _)| k);
        if let Some(key) = oldest {
            if let Some(c) = self.conns.get_mut(key) {
                let _ = write_out(c);
            }
            self.remove(key);
        }
    }

    /// Closes the open session that has gone longest without a whole frame.
    fn evict_quietest(&mut self, now: Instant) {
        let quietest = self
            .conns
            .iter()
            .filter(|(_, c)| c.session.ending().is_none())
            .min_by_key(|(_, c)| c.session.last_frame())
            .map(|(k, _)| k);
        if let Some(key) = quietest {
            if let Some(c) = self.conns.get_mut(key) {
                debug!("peer endpoint: closing {} to make room", c.peer);
                c.session.close_with(
                    ErrorCode::ServerFull,
                    "too many peer connections; this one was the quietest",
                );
            }
            self.shared.evicted.fetch_add(1, Ordering::Relaxed);
            self.serve(key, now);
        }
    }

    /// Reads, handles and writes one connection as far as it goes now.
    fn serve(&mut self, key: usize, now: Instant) {
        let mut budget = READ_BUDGET;
        let mut gone = false;
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            // Read what the session has room for.
            if c.linger_until.is_some() {
                // Closing: the peer's bytes are discarded until it closes
                // (a budget's worth a turn; the linger bounds the rest).
                while budget > 0 {
                    match c.sock.read(&mut self.scratch) {
                        Ok(0) => {
                            gone = true;
                            break;
                        }
                        Ok(n) => {
                            budget = budget.saturating_sub(n);
                            if budget == 0 {
                                self.retry.push(key);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => {
                            gone = true;
                            break;
                        }
                    }
                }
                break;
            }
            while !c.read_blocked && !c.eof && budget > 0 {
                let room = c.session.room().min(self.scratch.len()).min(budget);
                if room == 0 {
                    break;
                }
                match c.sock.read(&mut self.scratch[..room]) {
                    Ok(0) => {
                        c.eof = true;
                        c.session.handle_eof();
                    }
                    Ok(n) => {
                        budget -= n;
                        c.session.handle_input(&self.scratch[..n]);
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => c.read_blocked = true,
                    Err(e) => {
                        debug!("peer endpoint: {}: read failed: {e}", c.peer);
                        gone = true;
                        break;
                    }
                }
            }
            if gone {
                break;
            }
            // Handle every whole frame.
            let peer = c.peer;
            while let Some(event) = c.session.poll_event(now) {
                match event {
                    PeerEvent::Ping => {
                        self.shared.pings.fetch_add(1, Ordering::Relaxed);
                    }
                    PeerEvent::Message { sender, payload } => {
                        let verdict = deliver(
                            &mut self.sink,
                            &self.shared,
                            self.queue,
                            PeerMessage {
                                sender,
                                payload,
                                from: peer,
                            },
                        );
                        c.session
                            .answer(verdict.map_err(|text| (ErrorCode::Busy, text)));
                    }
                }
            }
            // Write the replies.
            match write_out(c) {
                Ok(()) => {}
                Err(e) => {
                    debug!("peer endpoint: {}: write failed: {e}", c.peer);
                    gone = true;
                    break;
                }
            }
            if c.session.is_finished() && c.linger_until.is_none() {
                if let Some(why) = c.session.ending() {
                    log_ending(c.peer, why);
                }
                if c.eof {
                    gone = true;
                    break;
                }
                let _ = c.sock.shutdown(Shutdown::Write);
                c.linger_until = Some(now + LINGER);
                continue;
            }
            // Go on while the socket may hold more that the session can take
            // (also after replies drained: no new readiness would come).
            if c.session.room() == 0 || c.read_blocked || c.eof {
                break;
            }
            if budget == 0 {
                self.retry.push(key);
                break;
            }
        }
        if gone {
            self.remove(key);
        } else {
            self.update_interest(key);
        }
    }

    fn update_interest(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let want = if c.session.transmit().is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        if want != c.interest {
            let token = Token(key + FIRST_CONN);
            if self
                .poll
                .registry()
                .reregister(&mut c.sock, token, want)
                .is_ok()
            {
                c.interest = want;
            }
        }
    }

    fn remove(&mut self, key: usize) {
        if let Some(mut c) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut c.sock);
            debug!("peer endpoint: {} gone", c.peer);
        }
        self.shared
            .connections
            .store(self.conns.len() as u64, Ordering::Relaxed);
    }

    fn on_timers(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut timed_out = Vec::new();
        for (key, c) in &mut self.conns {
            match c.linger_until {
                Some(until) if now >= until => expired.push(key),
                Some(_) => {}
                None => {
                    if c.session.handle_timeout(now) {
                        timed_out.push(key);
                    }
                }
            }
        }
        for key in expired {
            if let Some(c) = self.conns.get_mut(key) {
                // One last try for the farewell, then it goes.
                let _ = write_out(c);
            }
            self.remove(key);
        }
        for key in timed_out {
            self.serve(key, now);
        }
    }

    /// Every connection is told, once, without waiting, and closed.
    fn shutdown(&mut self) {
        for (_, c) in &mut self.conns {
            c.session
                .close_with(ErrorCode::ShuttingDown, "the peer is leaving");
            let _ = write_out(c);
            let _ = c.sock.shutdown(Shutdown::Write);
        }
        self.conns.clear();
        self.shared.connections.store(0, Ordering::Relaxed);
        debug!("peer endpoint stopped");
    }
}

/// Hands a message to the program; `Err` is the text of the `ERR busy`.
fn deliver(
    sink: &mut Sink,
    shared: &Shared,
    queue: usize,
    message: PeerMessage,
) -> Result<(), &'static str> {
    match sink {
        Sink::Callback(f) => f(message),
        Sink::Channel(tx) => {
            if shared.queued.load(Ordering::SeqCst) >= queue {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                return Err("the receiver has too many messages waiting; try again later");
            }
            shared.queued.fetch_add(1, Ordering::SeqCst);
            if tx.send(message).is_err() {
                shared.queued.fetch_sub(1, Ordering::SeqCst);
                shared.refused.fetch_add(1, Ordering::Relaxed);
                return Err("the receiver is not taking messages");
            }
        }
    }
    shared.messages.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Writes what the session owes until done or `WouldBlock`.
fn write_out(c: &mut Conn) -> io::Result<()> {
    while !c.session.transmit().is_empty() {
        match c.sock.write(c.session.transmit()) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => c.session.advance_transmit(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn log_ending(peer: SocketAddr, why: Ending) {
    match why {
        Ending::BadFrame(e) => info!("peer endpoint: {peer}: {e}; closing"),
        Ending::Timeout => info!("peer endpoint: {peer}: idle; closing"),
        Ending::Truncated => debug!("peer endpoint: {peer}: closed inside a frame"),
        Ending::Quit | Ending::PeerClosed => debug!("peer endpoint: {peer}: done"),
    }
}
