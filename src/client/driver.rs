//! The client's background thread: one `mio::Poll`, one connection, one
//! [`ClientSession`].
//!
//! Requests arrive on a channel, each with its own reply channel, and a
//! `mio::Waker` wakes the loop for them. Everything else is readiness and
//! deadlines:
//!
//! ```text
//!   Connecting --connected (+TLS handshake, +WebSocket upgrade)--> LoggingIn --ACK--> Restoring --ACKs--> Ready
//!       ^                                                                              |
//!       +---------------- Waiting (backoff) <--- connection lost (reconnect on) -------+
//! ```
//!
//! Readiness is edge-triggered, so every read loop runs until `WouldBlock`
//! (or a byte budget, after which the loop polls again with a zero timeout
//! instead of waiting for an edge that will not come), and writes are tried
//! after every turn; writable interest is registered only while output is
//! pending. The poll timeout is the nearest deadline (connect, reply, backoff):
//! the thread never spins and never sleeps.
//!
//! Nothing is written before the connection is usable: for TLS that means the
//! handshake, including the server certificate's verification and the
//! caller's inspection, has completed; for WebSocket (`ws://`, `wss://`),
//! that the server accepted the upgrade, whose request is the first thing
//! written (over TLS, after that verification).
//!
//! The layers, from the socket up: TCP, then TLS ([`TlsSession`]) if
//! configured, then WebSocket ([`WsLink`]) if configured, then the
//! [`ClientSession`]. With WebSocket, each frame of the session travels in
//! a message of its own, both ways.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;

use super::session::{ClientSession, Event, Reply, Request, RequestId};
use super::tls::map_tls_error;
use super::websocket::WsLink;
use super::{Backoff, ClientError, Push};
use crate::error::ErrorCode;
use crate::tls::{Plaintext, ReadError, ReadStep, TlsSession};
use crate::ws::CloseFrame;

/// The connection's token.
const SOCKET: Token = Token(0);
/// The waker's token.
pub(super) const WAKER: Token = Token(1);
/// Most bytes read per loop turn before replies and pushes are handed out.
const READ_BUDGET: usize = 1 << 20;
/// Most TLS read steps per loop turn: bounds the steps that bring records
/// but no plaintext (the handshake, a flood of empty records).
const TLS_READ_STEPS: usize = 256;
/// Size of the read buffer (also the TLS driver's write buffer, at least
/// [`crate::tls::MIN_WRITE_SCRATCH`]).
const SCRATCH: usize = 64 << 10;

/// A push callback (see [`Client::on_push`](super::Client::on_push)).
pub(super) type Callback = Box<dyn FnMut(&Push) + Send>;
/// Where a request's outcome goes.
pub(super) type ReplyTx = mpsc::Sender<Result<Reply, ClientError>>;

/// What a [`Client`](super::Client) handle asks of the thread.
pub(super) enum Cmd {
    /// Send `req` (now, or once logged in) and answer on `reply` by `deadline`.
    Request {
        req: Request,
        reply: ReplyTx,
        deadline: Instant,
    },
    /// Deliver pushes to this callback from now on.
    OnPush(Callback),
    /// Stop the thread (the handle was dropped).
    Shutdown,
}

/// Everything the thread needs to (re)connect and log in.
pub(super) struct Setup {
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) user: String,
    pub(super) password: Option<String>,
    pub(super) tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// WebSocket on top: the `Host` value and the request target.
    pub(super) ws: Option<WsTarget>,
    pub(super) reconnect: Option<Backoff>,
    pub(super) connect_timeout: Duration,
    pub(super) reply_timeout: Duration,
    /// The local address of the current connection, for
    /// [`Client::local_addr`](super::Client::local_addr).
    pub(super) local_addr: Arc<Mutex<Option<SocketAddr>>>,
}

/// Where a WebSocket upgrade goes.
pub(super) struct WsTarget {
    /// The `Host` header: `host:port`.
    pub(super) host: String,
    /// The request target (path and query).
    pub(super) path: String,
}

/// The transport: TCP, optionally with TLS on top (the client end of the
/// loop's own TLS driver, the one the server's reactor uses), optionally
/// with WebSocket on top of that.
struct Conn {
    sock: TcpStream,
    tls: Option<TlsSession>,
    ws: Option<WsLink>,
    connected: bool,
    interest: Interest,
}

/// The WebSocket layer's queued bytes, as plaintext for [`TlsSession::write_to`].
struct WsOut<'a>(&'a mut bytes::BytesMut);

impl Plaintext for WsOut<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn copy_front(&self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        n
    }
    fn consume(&mut self, n: usize) {
        bytes::Buf::advance(self.0, n.min(self.0.len()));
    }
}

/// The session's unsent bytes, as plaintext for [`TlsSession::write_to`].
struct Transmit<'a>(&'a mut ClientSession);

impl Plaintext for Transmit<'_> {
    fn is_empty(&self) -> bool {
        !self.0.wants_write()
    }
    fn copy_front(&self, buf: &mut [u8]) -> usize {
        self.0.transmit().copy_front(buf)
    }
    fn consume(&mut self, n: usize) {
        self.0.advance_transmit(n);
    }
}

impl Conn {
    /// Whether bytes are waiting to be written (or the connect to complete).
    fn wants_write(&self, session: &ClientSession) -> bool {
        if !self.connected {
            return true;
        }
        let above = match &self.ws {
            None => session.wants_write(),
            Some(ws) => ws.wants_write(session),
        };
        match &self.tls {
            None => above,
            Some(tls) => tls.wants_write() || (!tls.is_handshaking() && above),
        }
    }

    /// Whether the protocol can start: TCP is up, any TLS handshake and any
    /// WebSocket upgrade done.
    fn usable(&self) -> bool {
        self.connected
            && self.tls.as_ref().is_none_or(|t| !t.is_handshaking())
            && self.ws.as_ref().is_none_or(WsLink::is_open)
    }

    /// Writes what can be written at once, ignoring errors: the last bytes
    /// (a WebSocket close, a TLS alert or `close_notify`) of a connection
    /// about to be dropped.
    fn write_last(&mut self, scratch: &mut [u8]) {
        match (&mut self.tls, &mut self.ws) {
            // The upgrade request waits for a verified server, even here.
            (Some(tls), Some(ws)) if !tls.is_handshaking() => {
                let _ = tls.write_to(&mut self.sock, &mut WsOut(ws.out()), scratch);
            }
            (Some(tls), _) => {
                let _ = tls.write_to(&mut self.sock, &mut &[][..], scratch);
            }
            (None, Some(ws)) => {
                let out = ws.out();
                if let Ok(n) = self.sock.write(out) {
                    bytes::Buf::advance(out, n.min(out.len()));
                }
            }
            (None, None) => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TCP connect and TLS handshake, until `deadline`.
    Connecting { deadline: Instant },
    /// `USER`/`PASS` sent.
    LoggingIn,
    /// Logged in; `left` re-subscribe/re-watch replies to go.
    Restoring { left: usize },
    /// Logged in and restored.
    Ready,
    /// Backing off until the next reconnect attempt.
    Waiting { until: Instant },
    /// The thread is ending.
    Stopped,
}

/// Why a request in flight was sent, so its reply goes to the right place.
enum Purpose {
    /// A caller's request.
    Caller(ReplyTx),
    /// A caller's `QUIT`: the thread stops once it is answered.
    Quit(ReplyTx),
    /// `USER` or `PASS`; `last` is the one whose `ACK` means logged in.
    Login { last: bool },
    /// A re-subscribe or re-watch after a reconnect.
    Restore,
    /// Its caller gave up (timeout); the reply is dropped when it comes.
    Abandoned,
}

struct Waiter {
    id: RequestId,
    purpose: Purpose,
    deadline: Option<Instant>,
}

struct Queued {
    req: Request,
    reply: ReplyTx,
    deadline: Instant,
}

/// The thread's state.
pub(super) struct Driver {
    setup: Setup,
    poll: Poll,
    cmds: mpsc::Receiver<Cmd>,
    pushes: mpsc::Sender<Push>,
    callback: Option<Callback>,
    /// The answer to `Client::connect`, until the first login.
    init: Option<mpsc::Sender<Result<(), ClientError>>>,
    session: ClientSession,
    conn: Option<Conn>,
    phase: Phase,
    /// Aligned with the session's requests in flight, oldest first.
    waiters: VecDeque<Waiter>,
    /// Callers' requests made while not logged in.
    queued: VecDeque<Queued>,
    next_addr: usize,
    /// Addresses left to try before a connect attempt counts as failed.
    addrs_left: usize,
    backoff: Duration,
    /// Whether this connection got as far as logged in (for `Disconnected`).
    was_up: bool,
    /// An `ERR` the server sent that answers nothing: why it is closing.
    server_error: Option<ClientError>,
    /// The read budget ran out before `WouldBlock`: poll again at once.
    read_more: bool,
    scratch: Box<[u8]>,
    /// Plaintext of one TLS read step.
    plain: Vec<u8>,
}

impl Driver {
    pub(super) fn new(
        setup: Setup,
        poll: Poll,
        cmds: mpsc::Receiver<Cmd>,
        pushes: mpsc::Sender<Push>,
        init: mpsc::Sender<Result<(), ClientError>>,
    ) -> Self {
        let backoff = setup.reconnect.map_or(Duration::ZERO, |b| b.initial);
        Self {
            setup,
            poll,
            cmds,
            pushes,
            callback: None,
            init: Some(init),
            session: ClientSession::new(),
            conn: None,
            phase: Phase::Stopped,
            waiters: VecDeque::new(),
            queued: VecDeque::new(),
            next_addr: 0,
            addrs_left: 0,
            backoff,
            was_up: false,
            server_error: None,
            read_more: false,
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            plain: Vec::new(),
        }
    }

    /// Runs until stopped: by `QUIT`, by the handle's drop, by a failed first
    /// login, or by a lost connection with reconnect off.
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(16);
        self.addrs_left = self.setup.addrs.len();
        self.start_connect(Instant::now());
        while self.phase != Phase::Stopped {
            let timeout = if self.read_more {
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                warn!("client poll failed: {e}");
                self.lost(ClientError::Io(e), Instant::now());
                break;
            }
            let mut socket = std::mem::take(&mut self.read_more);
            let mut waker = false;
            for event in &events {
                match event.token() {
                    SOCKET => socket = true,
                    WAKER => waker = true,
                    // Spurious or stale: ignore (mio's "Spurious events").
                    _ => {}
                }
            }
            let now = Instant::now();
            if waker {
                self.drain_cmds(now);
            }
            if socket {
                self.on_socket(now);
            }
            // Requests queued by commands (and PONGs) are written now: with
            // edge-triggered readiness no writable event may come for them.
            self.flush(now);
            self.on_timers(Instant::now());
        }
        self.finish();
    }

    /// Fails everything still waiting, closes the connection politely.
    fn finish(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            if let Some(ws) = &mut conn.ws {
                let _ = ws.close(crate::ws::close_code::NORMAL, "");
            }
            match (&mut conn.tls, &mut conn.ws) {
                (Some(tls), None) => {
                    tls.send_close_notify();
                    let mut out = Transmit(&mut self.session);
                    let _ = tls.write_to(&mut conn.sock, &mut out, &mut self.scratch);
                }
                (Some(tls), Some(_)) => {
                    tls.send_close_notify();
                    conn.write_last(&mut self.scratch);
                }
                (None, Some(_)) => conn.write_last(&mut self.scratch),
                (None, None) => {}
            }
            let _ = self.poll.registry().deregister(&mut conn.sock);
        }
        for w in self.waiters.drain(..) {
            match w.purpose {
                Purpose::Caller(tx) => drop(tx.send(Err(ClientError::Closed))),
                Purpose::Quit(tx) => drop(tx.send(Ok(Reply::Ack("closed".into())))),
                _ => {}
            }
        }
        for q in self.queued.drain(..) {
            let _ = q.reply.send(Err(ClientError::Closed));
        }
        if let Some(init) = self.init.take() {
            let _ = init.send(Err(ClientError::Closed));
        }
        debug!("client thread stopped");
    }

    fn next_deadline(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Connecting { deadline } => Some(deadline),
            Phase::Waiting { until } => Some(until),
            _ => None,
        };
        let waiters = self.waiters.iter().filter_map(|w| w.deadline);
        let queued = self.queued.iter().map(|q| q.deadline);
        phase.into_iter().chain(waiters).chain(queued).min()
    }

    fn logged_in(&self) -> bool {
        matches!(self.phase, Phase::Restoring { .. } | Phase::Ready)
    }

    // Commands from the handles
    // -----------------------------------------------------------------------

    fn drain_cmds(&mut self, now: Instant) {
        loop {
            match self.cmds.try_recv() {
                Ok(Cmd::Request {
                    req,
                    reply,
                    deadline,
                }) => self.on_request(req, reply, deadline, now),
                Ok(Cmd::OnPush(cb)) => self.callback = Some(cb),
                Ok(Cmd::Shutdown) | Err(TryRecvError::Disconnected) => {
                    self.phase = Phase::Stopped;
                    return;
                }
                Err(TryRecvError::Empty) => return,
            }
        }
    }

    fn on_request(&mut self, req: Request, reply: ReplyTx, deadline: Instant, now: Instant) {
        let quit = req == Request::Quit;
        if self.logged_in() {
            let purpose = if quit {
                Purpose::Quit(reply)
            } else {
                Purpose::Caller(reply)
            };
            self.send(&req, purpose, Some(deadline));
        } else if quit {
            // Not connected: there is nobody to say goodbye to.
            let _ = reply.send(Ok(Reply::Ack("not connected".into())));
            self.phase = Phase::Stopped;
        } else if self.setup.reconnect.is_some() && deadline > now {
            self.queued.push_back(Queued {
                req,
                reply,
                deadline,
            });
        } else {
            let _ = reply.send(Err(ClientError::Closed));
        }
    }

    /// Puts a request into the session; its outcome goes where `purpose` says.
    fn send(&mut self, req: &Request, purpose: Purpose, deadline: Option<Instant>) {
        match self.session.send_request(req) {
            Ok(id) => self.waiters.push_back(Waiter {
                id,
                purpose,
                deadline,
            }),
            Err(e) => match purpose {
                Purpose::Caller(tx) | Purpose::Quit(tx) => drop(tx.send(Err(e))),
                // Our own requests are well-formed (Client::connect checks
                // the user name and password first); a failed session is
                // being torn down anyway.
                _ => warn!("client: cannot send {req:?}: {e}"),
            },
        }
    }

    // Connecting and logging in
    // -----------------------------------------------------------------------

    fn start_connect(&mut self, now: Instant) {
        let Some(&addr) = self
            .setup
            .addrs
            .get(self.next_addr % self.setup.addrs.len().max(1))
        else {
            return self.lost(
                ClientError::Io(io::Error::new(ErrorKind::NotFound, "no address")),
                now,
            );
        };
        self.next_addr = self.next_addr.wrapping_add(1);
        self.session.reset();
        self.server_error = None;
        self.was_up = false;
        debug!("client: connecting to {addr}");
        let mut sock = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => return self.connect_failed(ClientError::Io(e), now),
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut sock, SOCKET, interest) {
            return self.connect_failed(ClientError::Io(e), now);
        }
        let tls = match &self.setup.tls {
            None => None,
            Some((config, name)) => match TlsSession::new_client(config.clone(), name.clone()) {
                Ok(c) => Some(c),
                Err(e) => return self.connect_failed(map_tls_error(&e), now),
            },
        };
        let ws = match &self.setup.ws {
            None => None,
            Some(target) => match WsLink::new(&target.host, &target.path) {
                Ok(w) => Some(w),
                Err(e) => return self.connect_failed(e, now),
            },
        };
        self.conn = Some(Conn {
            sock,
            tls,
            ws,
            connected: false,
            interest,
        });
        self.phase = Phase::Connecting {
            deadline: now + self.setup.connect_timeout,
        };
    }

    /// A connect attempt failed before login: try the next address, or give up.
    fn connect_failed(&mut self, err: ClientError, now: Instant) {
        self.addrs_left = self.addrs_left.saturating_sub(1);
        let retry_now = self.addrs_left > 0
            && matches!(err, ClientError::Io(_) | ClientError::Timeout)
            && self.conn.as_ref().is_none_or(|c| !c.connected);
        if retry_now {
            debug!("client: connect failed ({err}), trying the next address");
            self.drop_conn();
            return self.start_connect(now);
        }
        self.lost(err, now);
    }

    /// The connection is usable: log in (nothing was written before this).
    fn begin_login(&mut self) {
        self.phase = Phase::LoggingIn;
        let user = self.setup.user.clone();
        let password = self.setup.password.clone();
        let deadline = Some(Instant::now() + self.setup.reply_timeout);
        if user.is_empty() {
            // `--auth cert`: the handshake logged us in.
            return self.on_logged_in(Instant::now());
        }
        self.send(
            &Request::User(user),
            Purpose::Login {
                last: password.is_none(),
            },
            deadline,
        );
        if let Some(pw) = password {
            self.send(
                &Request::Pass(pw.into_bytes()),
                Purpose::Login { last: true },
                deadline,
            );
        }
    }

    fn on_logged_in(&mut self, now: Instant) {
        let first = self.init.is_some();
        if let Some(init) = self.init.take() {
            let _ = init.send(Ok(()));
        }
        self.was_up = true;
        self.addrs_left = self.setup.addrs.len();
        if let Some(b) = self.setup.reconnect {
            self.backoff = b.initial;
        }
        let mut left = 0;
        if !first {
            let deadline = Some(now + self.setup.reply_timeout);
            let subs = self.session.subscriptions();
            let watches = self.session.watches();
            for chunk in subs.chunks(64) {
                self.send(
                    &Request::Subscribe(chunk.to_vec()),
                    Purpose::Restore,
                    deadline,
                );
                left += 1;
            }
            for chunk in watches.chunks(64) {
                self.send(&Request::Watch(chunk.to_vec()), Purpose::Restore, deadline);
                left += 1;
            }
            let queues = self.session.queue_subscriptions();
            for (queue, groups) in &queues {
                for chunk in groups.chunks(63) {
                    self.send(
                        &Request::QSubscribe {
                            queue: queue.clone(),
                            groups: chunk.to_vec(),
                        },
                        Purpose::Restore,
                        deadline,
                    );
                    left += 1;
                }
            }
            info!(
                "client: logged in again; restoring {} subscriptions, {} watches",
                subs.len(),
                watches.len()
            );
        }
        self.phase = if left == 0 {
            if !first {
                self.deliver(Push::Reconnected);
            }
            Phase::Ready
        } else {
            Phase::Restoring { left }
        };
        // Requests made while disconnected go out after the restore, in order.
        while let Some(q) = self.queued.pop_front() {
            self.on_request(q.req, q.reply, q.deadline, now);
        }
    }

    // Socket I/O
    // -----------------------------------------------------------------------

    fn on_socket(&mut self, now: Instant) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if !conn.connected {
            match conn.sock.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.connect_failed(ClientError::Io(e), now),
            }
            match conn.sock.peer_addr() {
                Ok(_) => {
                    conn.connected = true;
                    let _ = conn.sock.set_nodelay(true);
                    *self
                        .setup
                        .local_addr
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = conn.sock.local_addr().ok();
                    if let Some(tls) = &mut conn.tls {
                        // The ClientHello, written by the flush of this turn.
                        tls.start();
                    }
                    debug!("client: connected");
                }
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => return self.connect_failed(ClientError::Io(e), now),
            }
        }
        let result = read_some(conn, &mut self.session, &mut self.scratch, &mut self.plain);
        self.handle_events(now);
        if self.conn.is_none() || self.phase == Phase::Stopped {
            // A reply already ended this connection (refused login, QUIT).
            return;
        }
        match result {
            Ok(ReadState::Drained) => {}
            Ok(ReadState::More) => self.read_more = true,
            Ok(ReadState::Eof) => {
                let eof = match self.conn.as_mut().and_then(|c| c.ws.as_mut()) {
                    Some(ws) => ws.handle_eof(&mut self.session),
                    None => self.session.handle_eof(),
                };
                let err = match eof {
                    Err(e) => e,
                    Ok(()) => self.server_error.take().unwrap_or(ClientError::Closed),
                };
                return self.lost(err, now);
            }
            Ok(ReadState::WsClosed(frame)) => {
                match frame {
                    Some(f) => debug!(
                        "client: the server closed the WebSocket: {} {}",
                        f.code, f.reason
                    ),
                    None => debug!("client: the server closed the WebSocket (no code)"),
                }
                let err = self.server_error.take().unwrap_or(ClientError::Closed);
                return self.lost(err, now);
            }
            Err(e) => return self.lost(e, now),
        }
        if matches!(self.phase, Phase::Connecting { .. })
            && self.conn.as_ref().is_some_and(Conn::usable)
        {
            debug!("client: connection usable, logging in");
            self.begin_login();
        }
    }

    /// Writes what is pending, and updates the writable interest.
    fn flush(&mut self, now: Instant) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if !conn.connected {
            return;
        }
        if let Err(e) = write_some(conn, &mut self.session, &mut self.scratch) {
            return self.lost(e, now);
        }
        let want = if conn.wants_write(&self.session) {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if want != conn.interest {
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.sock, SOCKET, want)
            {
                return self.lost(ClientError::Io(e), now);
            }
            conn.interest = want;
        }
    }

    fn handle_events(&mut self, now: Instant) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Push(push) => self.deliver(push),
                Event::ServerError { code, text } => {
                    warn!("client: server says {code}: {text}");
                    self.server_error = Some(ClientError::Refused { code, text });
                }
                Event::Reply { id, verb, reply } => self.on_reply(id, verb, reply, now),
            }
            if self.phase == Phase::Stopped {
                return;
            }
        }
    }

    fn on_reply(&mut self, id: RequestId, verb: &str, reply: Reply, now: Instant) {
        let Some(pos) = self.waiters.iter().position(|w| w.id == id) else {
            return;
        };
        let Some(waiter) = self.waiters.remove(pos) else {
            return;
        };
        match waiter.purpose {
            Purpose::Caller(tx) => drop(tx.send(Ok(reply))),
            Purpose::Abandoned => debug!("client: late reply to {verb} dropped"),
            Purpose::Quit(tx) => {
                let _ = tx.send(Ok(reply));
                self.phase = Phase::Stopped;
            }
            Purpose::Login { last } => match reply {
                // The server wants a password and none is configured: the
                // ACK text is for people, but this one is the contract's.
                Reply::Ack(text) if last && verb == "USER" && text == "authentication required" => {
                    self.lost(
                        ClientError::Refused {
                            code: ErrorCode::AuthRequired,
                            text: "the server requires a password".into(),
                        },
                        now,
                    );
                }
                Reply::Ack(_) if last => self.on_logged_in(now),
                Reply::Ack(_) => {}
                other => {
                    let err = match other {
                        Reply::Err { code, text } => ClientError::Refused { code, text },
                        _ => ClientError::Protocol(format!("unexpected reply to {verb}")),
                    };
                    self.lost(err, now);
                }
            },
            Purpose::Restore => {
                if let Reply::Err { code, text } = &reply {
                    warn!("client: could not restore {verb} after reconnecting: {code}: {text}");
                }
                if let Phase::Restoring { left } = self.phase {
                    if left <= 1 {
                        self.phase = Phase::Ready;
                        self.deliver(Push::Reconnected);
                    } else {
                        self.phase = Phase::Restoring { left: left - 1 };
                    }
                }
            }
        }
    }

    fn deliver(&mut self, push: Push) {
        match &mut self.callback {
            Some(cb) => cb(&push),
            None => drop(self.pushes.send(push)),
        }
    }

    // Timers and loss
    // -----------------------------------------------------------------------

    fn on_timers(&mut self, now: Instant) {
        match self.phase {
            Phase::Connecting { deadline } if now >= deadline => {
                return self.connect_failed(ClientError::Timeout, now);
            }
            Phase::Waiting { until } if now >= until => {
                self.addrs_left = self.setup.addrs.len();
                return self.start_connect(now);
            }
            _ => {}
        }
        let mut login_timed_out = false;
        for w in &mut self.waiters {
            if w.deadline.is_none_or(|d| d > now) {
                continue;
            }
            w.deadline = None;
            match std::mem::replace(&mut w.purpose, Purpose::Abandoned) {
                Purpose::Caller(tx) | Purpose::Quit(tx) => drop(tx.send(Err(ClientError::Timeout))),
                Purpose::Login { .. } | Purpose::Restore => login_timed_out = true,
                Purpose::Abandoned => {}
            }
        }
        self.queued.retain(|q| {
            let keep = q.deadline > now;
            if !keep {
                let _ = q.reply.send(Err(ClientError::Timeout));
            }
            keep
        });
        if login_timed_out {
            warn!(
                "client: no reply to login within {:?}",
                self.setup.reply_timeout
            );
            self.lost(ClientError::Timeout, now);
        }
    }

    fn drop_conn(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = self.poll.registry().deregister(&mut conn.sock);
        }
        self.read_more = false;
    }

    /// The connection is gone (or could not be made): fail what was in flight,
    /// tell the caller, and reconnect or stop.
    fn lost(&mut self, err: ClientError, now: Instant) {
        if self.phase == Phase::Stopped {
            return;
        }
        // A TLS alert for our own refusal, or a WebSocket close, goes out
        // (best effort) before the socket closes.
        if let Some(conn) = self.conn.as_mut() {
            conn.write_last(&mut self.scratch);
        }
        self.drop_conn();
        self.session.reset();
        for w in self.waiters.drain(..) {
            match w.purpose {
                Purpose::Caller(tx) => drop(tx.send(Err(err.duplicate()))),
                Purpose::Quit(tx) => {
                    // The server closed after (or instead of) its ACK: done.
                    let _ = tx.send(Ok(Reply::Ack("closed".into())));
                    self.phase = Phase::Stopped;
                }
                _ => {}
            }
        }
        if self.phase == Phase::Stopped {
            return;
        }
        if let Some(init) = self.init.take() {
            debug!("client: first connect failed: {err}");
            let _ = init.send(Err(err));
            self.phase = Phase::Stopped;
            return;
        }
        if self.was_up {
            info!("client: connection lost: {err}");
            self.was_up = false;
            self.deliver(Push::Disconnected);
        } else {
            debug!("client: reconnect attempt failed: {err}");
        }
        match self.setup.reconnect {
            Some(b) => {
                let delay = self.backoff;
                self.backoff = (delay * 2).min(b.max.max(b.initial));
                self.phase = Phase::Waiting { until: now + delay };
            }
            None => self.phase = Phase::Stopped,
        }
    }
}

enum ReadState {
    /// Read until `WouldBlock`.
    Drained,
    /// Stopped at the budget; readable data may remain.
    More,
    /// The server closed its end (TCP FIN, or TLS `close_notify`).
    Eof,
    /// The server sent a WebSocket close frame (answered, to be written).
    WsClosed(Option<CloseFrame>),
}

/// Hands bytes read (or decrypted) to the layer above the byte stream: the
/// WebSocket link if any, else the session.
fn feed(
    ws: Option<&mut WsLink>,
    session: &mut ClientSession,
    data: &[u8],
) -> Result<Option<ReadState>, ClientError> {
    match ws {
        None => session.handle_input(data).map(|()| None),
        Some(ws) => Ok(ws.handle_input(data, session)?.map(ReadState::WsClosed)),
    }
}

fn io_err(e: io::Error) -> ClientError {
    ClientError::Io(e)
}

/// Reads until `WouldBlock`, end of stream or the budget, feeding the session.
fn read_some(
    conn: &mut Conn,
    session: &mut ClientSession,
    scratch: &mut [u8],
    plain: &mut Vec<u8>,
) -> Result<ReadState, ClientError> {
    let mut total = 0;
    match &mut conn.tls {
        None => loop {
            if total >= READ_BUDGET {
                return Ok(ReadState::More);
            }
            match conn.sock.read(scratch) {
                Ok(0) => return Ok(ReadState::Eof),
                Ok(n) => {
                    total += n;
                    let data = scratch.get(..n).unwrap_or_default();
                    if let Some(end) = feed(conn.ws.as_mut(), session, data)? {
                        return Ok(end);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(ReadState::Drained),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e)),
            }
        },
        Some(tls) => {
            for _ in 0..TLS_READ_STEPS {
                if total >= READ_BUDGET {
                    break;
                }
                match tls.read_step(&mut conn.sock, scratch, plain) {
                    Ok(ReadStep::Data(n)) => {
                        total += n;
                        let data = plain.get(..n).unwrap_or_default();
                        if let Some(end) = feed(conn.ws.as_mut(), session, data)? {
                            return Ok(end);
                        }
                    }
                    Ok(ReadStep::Progress) => {}
                    Ok(ReadStep::WouldBlock) => return Ok(ReadState::Drained),
                    // close_notify, or TCP closed without it: end of stream.
                    Ok(ReadStep::Eof) => return Ok(ReadState::Eof),
                    Err(ReadError::Io(e)) if e.kind() == ErrorKind::Interrupted => {}
                    Err(ReadError::Io(e)) => return Err(io_err(e)),
                    Err(ReadError::Tls(e)) => return Err(map_tls_error(&e)),
                }
            }
            Ok(ReadState::More)
        }
    }
}

/// Writes pending output until done or `WouldBlock`.
fn write_some(
    conn: &mut Conn,
    session: &mut ClientSession,
    scratch: &mut [u8],
) -> Result<(), ClientError> {
    match (&mut conn.tls, &mut conn.ws) {
        (None, Some(ws)) => loop {
            ws.pull(session)?;
            let out = ws.out();
            if out.is_empty() {
                break;
            }
            match conn.sock.write(out) {
                Ok(0) => return Err(io_err(ErrorKind::WriteZero.into())),
                Ok(n) => bytes::Buf::advance(out, n.min(out.len())),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e)),
            }
        },
        (Some(tls), Some(ws)) => {
            ws.pull(session)?;
            tls.write_to(&mut conn.sock, &mut WsOut(ws.out()), scratch)
                .map_err(io_err)?;
        }
        (None, None) => {
            while session.wants_write() {
                match conn.sock.write(session.transmit()) {
                    Ok(0) => return Err(io_err(ErrorKind::WriteZero.into())),
                    Ok(n) => session.advance_transmit(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_err(e)),
                }
            }
        }
        // Handshake records first; plaintext waits for the handshake (and so
        // for verification).
        (Some(tls), None) => {
            tls.write_to(&mut conn.sock, &mut Transmit(session), scratch)
                .map_err(io_err)?;
        }
    }
    Ok(())
}
