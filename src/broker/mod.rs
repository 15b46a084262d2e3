//! The messaging broker, sans-IO: sessions, users, groups and their fan-out.
//!
//! `Broker` is the whole server minus sockets and clocks. The reactor feeds it
//! bytes ([`Broker::handle_input`]), end of stream, time
//! ([`Broker::handle_timeout`]) and password verdicts; it answers with bytes
//! queued per connection ([`Broker::output`]), the connections that have
//! something new to write ([`Broker::take_dirty`]), events for the embedding
//! program ([`Broker::poll_event`]), password checks to run off the loop
//! ([`Broker::poll_auth_request`]) and its next deadline
//! ([`Broker::poll_timeout`]). Tests drive it byte by byte with simulated time.
//!
//! Polling order after any input, as in quinn-proto: `take_dirty` (write, then
//! ask `finished`), `poll_event`, `poll_auth_request`, `poll_timeout`.
//!
//! Fan-out: a `PUBLISH` is encoded once into a `Bytes` and that same buffer is
//! queued to every subscriber. A connection subscribed to several of the
//! listed groups is found once through a per-publish sequence mark, without a
//! set or an allocation.
//!
//! Slow consumers (protocol.md section 7): a subscriber whose unsent output
//! would pass `max_pending` loses its unsent backlog (a partly written frame is
//! kept so the stream stays well-formed), is sent `ERR slow-consumer`, and is
//! closed; the publisher and the other subscribers are not held back.

mod config;
mod event;
mod session;
mod tick;

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use std::{cmp::Reverse, fmt::Write as _};

use tick::{Clock, Tick};

use bytes::{Bytes, BytesMut};
use log::{debug, info};
use slab::Slab;

pub use crate::conn::{CloseReason, ConnId};
pub use config::{AuthMode, BrokerConfig};
pub use event::Event;
#[cfg(test)]
pub(crate) type SessionSize = Session<crate::reactor::Conn>;
use session::{Session, State};

use crate::buf::OutQueue;
use crate::conn::PeerIdentity;
use crate::error::{ErrorCode, FrameError};
use crate::proto::command::{Command, CommandError, verb_allowed_before_login};
use crate::proto::frame::{self, PING};
use crate::proto::{Decoded, GroupId, decode};

/// The name on frames the server itself originates.
pub const SERVER_USER: &str = "@server";

/// Connections accepted over `max_connections` only to be told `server-full`;
/// beyond this many at once they are dropped without a word.
const REJECT_SLACK: usize = 64;

/// A password to check, handed out by [`Broker::poll_auth_request`].
#[derive(Debug)]
pub struct AuthRequest {
    /// The connection waiting for the answer.
    pub conn: ConnId,
    /// Pass back to [`Broker::handle_auth_result`] unchanged.
    pub ticket: u32,
    /// The user name given by `USER`.
    pub user: String,
    /// The password given by `PASS`.
    pub password: Vec<u8>,
}

/// Why a server-side publish or send was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryError {
    /// A listed group is not registered (`unknown-group`).
    UnknownGroup(GroupId),
    /// The user has no session (`no-such-user`).
    NoSuchUser,
    /// A name or group list that is not valid on the wire.
    BadArgs,
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownGroup(g) => write!(f, "unknown group {g}"),
            Self::NoSuchUser => f.write_str("no such user online"),
            Self::BadArgs => f.write_str("invalid user name or group list"),
        }
    }
}

impl std::error::Error for DeliveryError {}

#[derive(Debug)]
struct Group {
    name: Box<str>,
    /// Registered at start-up, as opposed to created on first use with
    /// `open_groups` (which is forgotten again once nobody uses it).
    registered: bool,
    /// Subscribed sessions, sorted slab keys.
    subscribers: Vec<usize>,
    /// Watching sessions, sorted slab keys.
    watchers: Vec<usize>,
}

/// The sessions of one user, oldest first: almost always one, kept inline so
/// that a user table entry costs no allocation of its own. The user's display
/// name is its oldest session's (no separate copy).
#[derive(Debug, Clone)]
enum Keys {
    One(usize),
    Many(Vec<usize>),
}

impl Keys {
    fn push(&mut self, key: usize) {
        match self {
            Self::One(first) => *self = Self::Many(vec![*first, key]),
            Self::Many(keys) => keys.push(key),
        }
    }

    /// Removes `key`; returns whether none are left.
    fn remove(&mut self, key: usize) -> bool {
        match self {
            Self::One(k) => *k == key,
            Self::Many(keys) => {
                keys.retain(|&k| k != key);
                if let [only] = keys.as_slice() {
                    *self = Self::One(*only);
                }
                matches!(self, Self::Many(keys) if keys.is_empty())
            }
        }
    }

    fn as_slice(&self) -> &[usize] {
        match self {
            Self::One(k) => std::slice::from_ref(k),
            Self::Many(keys) => keys,
        }
    }
}

/// The broker. `T` is what the reactor keeps with each connection (its
/// socket); tests use `()`.
#[derive(Debug)]
pub struct Broker<T = ()> {
    config: BrokerConfig,
    sessions: Slab<Session<T>>,
    groups: HashMap<GroupId, Group>,
    /// Online users by case-folded name, with their sessions (the key shares
    /// the session's name allocation when the name is already lower case).
    users: HashMap<Arc<str>, Keys>,
    timers: BinaryHeap<Reverse<(Tick, usize, u32)>>,
    /// Turns the caller's `Instant`s into the [`Tick`]s sessions store.
    clock: Clock,
    dirty: Vec<usize>,
    events: VecDeque<Event>,
    events_enabled: bool,
    auth_requests: VecDeque<AuthRequest>,
    next_gen: u32,
    publish_seq: u64,
    /// Sessions that count against `max_connections`.
    admitted: usize,
    /// The latest time handed in by the caller, for work that has no `now`
    /// parameter of its own (a fan-out closing a slow consumer).
    now: Tick,
    shutting_down: bool,
}

impl<T> Broker<T> {
    /// A broker with no groups and no sessions.
    pub fn new(config: BrokerConfig) -> Self {
        Self {
            config,
            sessions: Slab::new(),
            groups: HashMap::new(),
            users: HashMap::new(),
            timers: BinaryHeap::new(),
            clock: Clock::new(Instant::now()),
            dirty: Vec::new(),
            events: VecDeque::new(),
            events_enabled: true,
            auth_requests: VecDeque::new(),
            next_gen: 0,
            publish_seq: 0,
            admitted: 0,
            now: Tick::EPOCH,
            shutting_down: false,
        }
    }

    /// The settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Turns event reporting on or off (off saves an allocation per event when
    /// nobody listens).
    pub fn set_events_enabled(&mut self, on: bool) {
        self.events_enabled = on;
        if !on {
            self.events.clear();
        }
    }

    /// Registers (or renames) a group. Group 0 is not a valid group.
    pub fn register_group(&mut self, id: GroupId, name: &str) -> bool {
        if id == 0 {
            return false;
        }
        let group = self.groups.entry(id).or_insert_with(|| Group {
            name: Box::from(""),
            registered: true,
            subscribers: Vec::new(),
            watchers: Vec::new(),
        });
        group.name = name.into();
        group.registered = true;
        true
    }

    /// The groups, sorted by number, with their names.
    pub fn groups(&self) -> Vec<(GroupId, String)> {
        let mut v: Vec<_> = self
            .groups
            .iter()
            .map(|(&id, g)| (id, g.name.to_string()))
            .collect();
        v.sort_unstable();
        v
    }

    /// Online user names, sorted case-insensitively.
    pub fn users(&self) -> Vec<String> {
        let mut v: Vec<_> = self.users.iter().collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v.into_iter()
            .filter_map(|(_, keys)| self.user_name(keys))
            .map(|n| n.to_string())
            .collect()
    }

    /// Open connections (including ones being closed).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Accepts a new connection.
    ///
    /// Over `max_connections`, the connection is still taken so that it can be
    /// told `ERR server-full`, then closed; past a small slack beyond that, or
    /// while shutting down, it is refused and `io` is handed back.
    ///
    /// # Errors
    ///
    /// Returns `io` when the connection should simply be dropped.
    pub fn accept(&mut self, io: T, peer: SocketAddr, now: Instant) -> Result<ConnId, T> {
        let now = self.clock.tick(now);
        self.now = self.now.max(now);
        let full = self.admitted >= self.config.max_connections;
        if self.shutting_down
            || (full && self.sessions.len() >= self.config.max_connections + REJECT_SLACK)
        {
            return Err(io);
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let key = self
            .sessions
            .insert(Session::new(io, peer, self.next_gen, now));
        if full {
            info!("{peer}: refused, at the connection limit");
            self.push_reply(key, frame::err(ErrorCode::ServerFull, "server is full"));
            self.begin_close(key, CloseReason::ServerFull, now);
        } else {
            self.admitted += 1;
            debug!("#{key} {peer}: connected");
            self.emit(Event::Connected {
                conn: ConnId(key),
                peer,
            });
            self.schedule(key);
        }
        Ok(ConnId(key))
    }

    /// The transport kept with a connection.
    pub fn io_mut(&mut self, conn: ConnId) -> Option<&mut T> {
        self.sessions.get_mut(conn.0).map(|s| &mut s.io)
    }

    /// The transport and the output queue of a connection, for flushing.
    pub fn io_and_output(&mut self, conn: ConnId) -> Option<(&mut T, &mut OutQueue)> {
        self.sessions
            .get_mut(conn.0)
            .map(|s| (&mut s.io, &mut s.out))
    }

    /// Whether events are waiting in [`Broker::poll_event`].
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The peer address of a connection.
    pub fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        self.sessions.get(conn.0).map(|s| s.peer)
    }

    /// The verified client certificate subject of a connection (mutual TLS).
    pub fn client_cert(&self, conn: ConnId) -> Option<&PeerIdentity> {
        self.sessions.get(conn.0).and_then(|s| s.cert.as_deref())
    }

    /// Marks a connection for flushing this turn (the transport has bytes of
    /// its own to write, e.g. TLS handshake records).
    pub fn touch(&mut self, conn: ConnId) {
        self.mark_dirty(conn.0);
    }

    /// The TLS handshake of a connection completed. With [`AuthMode::Cert`],
    /// a certificate whose subject CN is a valid user name logs the session in.
    pub fn handle_secured(&mut self, conn: ConnId, subject: Option<PeerIdentity>, now: Instant) {
        let now = self.clock.tick(now);
        self.now = self.now.max(now);
        let key = conn.0;
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if s.is_closing() {
            return;
        }
        debug!(
            "#{key} {}: TLS established{}",
            s.peer,
            subject
                .as_ref()
                .map(|c| format!(", client {c}"))
                .unwrap_or_default()
        );
        s.cert = subject.clone().map(Box::new);
        let logged_in = s.is_logged_in();
        let cn: Option<String> = subject.as_ref().and_then(|c| c.cn.clone());
        self.emit(Event::Secured { conn, subject });
        if self.config.auth != AuthMode::Cert || logged_in {
            return;
        }
        match cn {
            Some(cn) if crate::proto::command::is_valid_user(cn.as_bytes()) => {
                self.login(key, cn.into());
            }
            Some(cn) => info!("#{key}: certificate CN {cn:?} is not a valid user name"),
            None => debug!("#{key}: no client certificate; cannot log in"),
        }
        self.mark_dirty(key);
    }

    /// The user a connection logged in as.
    pub fn user_of(&self, conn: ConnId) -> Option<&str> {
        self.sessions.get(conn.0).and_then(|s| s.name.as_deref())
    }

    /// The bytes waiting to be written to a connection. Write from the front,
    /// then call [`OutQueue::consume`].
    pub fn output(&mut self, conn: ConnId) -> Option<&mut OutQueue> {
        self.sessions.get_mut(conn.0).map(|s| &mut s.out)
    }

    /// Whether the reactor should read from this connection now. `false` while
    /// a password is being checked or while its output is backed up; reads
    /// resume (call [`Broker::resume`]) when it turns `true` again. A closing
    /// connection is still read, and its input discarded, until the peer closes.
    pub fn wants_read(&self, conn: ConnId) -> bool {
        self.sessions
            .get(conn.0)
            .is_some_and(|s| s.is_closing() || s.can_process(&self.config))
    }

    /// Whether the connection is closing: once its output is flushed, the
    /// reactor shuts down the write side and waits for [`Broker::finished`].
    pub fn is_closing(&self, conn: ConnId) -> bool {
        self.sessions.get(conn.0).is_some_and(Session::is_closing)
    }

    /// Whether the reactor should drop the connection now (then call
    /// [`Broker::remove`]): it is closing and either everything was flushed
    /// and the peer closed, or its linger deadline passed.
    pub fn finished(&self, conn: ConnId, now: Instant) -> bool {
        let now = self.clock.tick(now);
        match self
            .sessions
            .get(conn.0)
            .map(|s| (&s.state, s.out.is_empty()))
        {
            Some((State::Closing { deadline, eof, .. }, empty)) => {
                (*eof && empty) || now >= *deadline
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Connections with new output or a new state since the last call, into
    /// `into` (cleared first).
    pub fn take_dirty(&mut self, into: &mut Vec<ConnId>) {
        into.clear();
        for key in self.dirty.drain(..) {
            if let Some(s) = self.sessions.get_mut(key) {
                s.dirty = false;
                into.push(ConnId(key));
            }
        }
    }

    /// Whether [`Broker::take_dirty`] has anything.
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The next event for the embedding program.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next password to check. Run the check off the loop and hand the
    /// verdict to [`Broker::handle_auth_result`].
    pub fn poll_auth_request(&mut self) -> Option<AuthRequest> {
        self.auth_requests.pop_front()
    }

    /// The earliest instant at which [`Broker::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers
            .peek()
            .map(|Reverse((at, _, _))| self.clock.instant(*at))
    }

    /// Bytes received from a connection.
    pub fn handle_input(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        let now = self.clock.tick(now);
        self.now = self.now.max(now);
        let key = conn.0;
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        s.last_rx = now;
        s.ping_sent = None;
        if s.is_closing() || data.is_empty() {
            return;
        }
        if s.inbuf.is_empty() && s.can_process(&self.config) {
            // The common case: parse straight from the reactor's read buffer and
            // keep only an unfinished tail.
            let used = self.process(key, data, now);
            if let Some(s) = self.sessions.get_mut(key) {
                if !s.is_closing() {
                    s.inbuf
                        .extend_from_slice(data.get(used..).unwrap_or_default());
                }
            }
        } else {
            s.inbuf.extend_from_slice(data);
            self.resume_at(conn, now);
        }
    }

    /// Processes input buffered while the connection was paused.
    pub fn resume(&mut self, conn: ConnId, now: Instant) {
        let now = self.clock.tick(now);
        self.resume_at(conn, now);
    }

    fn resume_at(&mut self, conn: ConnId, now: Tick) {
        self.now = self.now.max(now);
        let key = conn.0;
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if s.inbuf.is_empty() || !s.can_process(&self.config) {
            return;
        }
        let mut buf = std::mem::take(&mut s.inbuf);
        let used = self.process(key, &buf, now);
        if let Some(s) = self.sessions.get_mut(key) {
            if !s.is_closing() && used < buf.len() {
                buf.drain(..used);
                if buf.capacity() > 2 * buf.len() + 4096 {
                    buf.shrink_to_fit();
                }
                s.inbuf = buf;
            }
        }
    }

    /// The peer closed its side: finish what is owed, then close.
    pub fn handle_eof(&mut self, conn: ConnId, now: Instant) {
        let now = self.clock.tick(now);
        self.now = self.now.max(now);
        let key = conn.0;
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if let State::Closing { eof, .. } = &mut s.state {
            *eof = true;
        } else {
            self.begin_close(key, CloseReason::PeerClosed, now);
            if let Some(State::Closing { eof, .. }) =
                self.sessions.get_mut(key).map(|s| &mut s.state)
            {
                *eof = true;
            }
        }
        self.mark_dirty(key);
    }

    /// Closes a connection now, e.g. after an I/O error, and hands back its
    /// transport for the reactor to deregister.
    pub fn remove(&mut self, conn: ConnId, reason: CloseReason) -> Option<T> {
        let key = conn.0;
        let s = self.sessions.get(key)?;
        let reason = match s.state {
            State::Closing { reason, .. } => reason,
            _ => {
                self.leave(key);
                reason
            }
        };
        let s = self.sessions.try_remove(key)?;
        if reason != CloseReason::ServerFull {
            self.admitted = self.admitted.saturating_sub(1);
            debug!("#{key} {}: closed ({reason})", s.peer);
            self.emit(Event::Closed {
                conn,
                user: s.name.as_deref().map(String::from),
                reason,
            });
        }
        Some(s.io)
    }

    /// Starts closing a connection from the embedding program.
    pub fn close(&mut self, conn: ConnId, now: Instant) {
        let now = self.clock.tick(now);
        self.now = self.now.max(now);
        if self.sessions.contains(conn.0) {
            self.begin_close(conn.0, CloseReason::Closed, now);
        }
    }

    /// The verdict on an [`AuthRequest`].
    pub fn handle_auth_result(&mut self, conn: ConnId, ticket: u32, ok: bool, now: Instant) {
        let now = self.clock.tick(now);
        self.now = self.now.max(now);
        let key = conn.0;
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let State::Login { user, verifying } = &mut s.state else {
            return;
        };
        if s.generation != ticket || !*verifying {
            return;
        }
        *verifying = false;
        let user = user.take();
        match (ok, user) {
            (true, Some(name)) => {
                self.login(key, name);
                self.push_reply(key, frame::ack("logged in"));
                self.resume_at(conn, now);
            }
            (_, name) => {
                info!(
                    "#{key}: password login failed for {}",
                    name.as_deref().unwrap_or("?")
                );
                self.fail(
                    key,
                    ErrorCode::AuthFailed,
                    "wrong user name or password",
                    CloseReason::AuthFailed,
                    now,
                );
            }
        }
    }

    /// Runs the deadlines that are due: login timeout, keep-alive pings and
    /// their timeout, and the linger of closing connections.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.tick(now);
        self.now = self.now.max(now);
        while let Some(&Reverse((at, key, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.sessions.get_mut(key) else {
                continue;
            };
            if s.generation != generation {
                continue;
            }
            if s.timer_at == Some(at) {
                s.timer_at = None;
            }
            self.check_deadlines(key, now);
            // A closing session past its deadline waits for the reactor to drop
            // it; every other deadline has moved past `now`.
            if self
                .sessions
                .get(key)
                .is_some_and(|s| s.next_deadline(&self.config) > now)
            {
                self.schedule(key);
            }
        }
    }

    /// Starts a graceful shutdown: every connection gets `ERR shutting-down`
    /// after what it is owed, then closes. No new connection is accepted.
    pub fn shutdown(&mut self, now: Instant) {
        let now = self.clock.tick(now);
        self.now = self.now.max(now);
        self.shutting_down = true;
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            if self.sessions.get(key).is_some_and(|s| !s.is_closing()) {
                self.push_reply(
                    key,
                    frame::err(ErrorCode::ShuttingDown, "server is shutting down"),
                );
                self.begin_close(key, CloseReason::Shutdown, now);
            }
        }
    }

    /// Whether [`Broker::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Publishes a message as `@server` (or another sender name the embedding
    /// program chooses) to groups. Returns how many connections it was queued for.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::UnknownGroup`] when a group is not registered (and
    /// groups are not open); nothing is delivered then.
    pub fn publish(
        &mut self,
        sender: &str,
        groups: &[GroupId],
        payload: &[u8],
    ) -> Result<usize, DeliveryError> {
        if groups.is_empty() || groups.len() > frame::MAX_ARGS - 1 || !is_sender_name(sender) {
            return Err(DeliveryError::BadArgs);
        }
        self.fanout(None, sender, groups, payload)
    }

    /// Sends a one-to-one message as `sender` (normally `@server`) to every
    /// session of `user`. Returns how many sessions it was queued for.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::NoSuchUser`] when the user has no session.
    pub fn send(
        &mut self,
        sender: &str,
        user: &str,
        payload: &[u8],
    ) -> Result<usize, DeliveryError> {
        if !is_sender_name(sender) || !crate::proto::command::is_valid_user(user.as_bytes()) {
            return Err(DeliveryError::BadArgs);
        }
        self.deliver_message(None, sender, user, payload)
    }

    /// Heap and slot bytes held by sessions (for footprint reports).
    pub fn session_bytes(&self) -> usize {
        self.sessions.capacity() * (std::mem::size_of::<Session<T>>() + 8)
            + self
                .sessions
                .iter()
                .map(|(_, s)| s.heap_bytes())
                .sum::<usize>()
    }

    // ---- input processing ----

    /// Decodes and executes frames from `data` while the session can process
    /// input. Returns how many bytes were used.
    fn process(&mut self, key: usize, data: &[u8], now: Tick) -> usize {
        let mut used = 0;
        loop {
            let Some(s) = self.sessions.get_mut(key) else {
                return used;
            };
            if !s.can_process(&self.config) {
                return used;
            }
            let rest = data.get(used..).unwrap_or_default();
            match decode(rest, self.config.max_payload) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    used += consumed;
                    self.execute(key, &frame, now);
                }
                Ok(Decoded::Incomplete { skip, .. }) => {
                    // No reservation for the declared size: the buffer grows
                    // only with bytes that actually arrive, so a peer that
                    // announces 1 MiB and sends one byte costs one byte.
                    return used + skip;
                }
                Err(e) => {
                    self.frame_error(key, e, now);
                    return data.len();
                }
            }
        }
    }

    fn frame_error(&mut self, key: usize, e: FrameError, now: Tick) {
        let reason = if matches!(e, FrameError::TooLarge { .. }) {
            CloseReason::TooLarge
        } else {
            CloseReason::BadFrame
        };
        debug!("#{key}: {e}");
        let text = e.to_string();
        self.fail(key, e.code(), &text, reason, now);
    }

    /// Sends a final `ERR` and starts closing.
    fn fail(&mut self, key: usize, code: ErrorCode, text: &str, reason: CloseReason, now: Tick) {
        self.push_reply(key, frame::err(code, text));
        self.begin_close(key, reason, now);
    }

    fn execute(&mut self, key: usize, frame: &crate::proto::Frame<'_>, now: Tick) {
        let logged_in = self.sessions.get(key).is_some_and(Session::is_logged_in);
        if !logged_in && !verb_allowed_before_login(frame.verb().as_bytes()) {
            return self.reply_err(key, ErrorCode::AuthRequired, "log in first (USER)");
        }
        let cmd = match Command::from_frame(frame) {
            Ok(cmd) => cmd,
            Err(CommandError::Unknown) => {
                let text = format!("unknown command {}", frame.verb().as_str());
                return self.reply_err(key, ErrorCode::UnknownCommand, &text);
            }
            Err(CommandError::BadArgs(why)) => {
                // A malformed PONG gets no reply, like any PONG.
                if frame.verb().as_bytes() == b"PONG" {
                    return;
                }
                return self.reply_err(key, ErrorCode::BadArgs, why);
            }
        };
        match cmd {
            Command::User(name) => self.cmd_user(key, name),
            Command::Pass(pw) => self.cmd_pass(key, pw),
            Command::Ping => self.push_reply(key, Bytes::from_static(frame::PONG)),
            Command::Pong => {}
            Command::Hello => self.cmd_hello(key),
            Command::Quit => {
                self.push_reply(key, frame::ack("bye"));
                self.begin_close(key, CloseReason::Quit, now);
            }
            Command::Groups => {
                let mut out = String::new();
                for (id, name) in self.groups() {
                    let _ = writeln!(out, "{id},{name}");
                }
                self.push_reply(key, frame::result(out.as_bytes()));
            }
            Command::Subscribe(groups) => self.cmd_subscribe(key, groups.as_slice()),
            Command::Unsubscribe(groups) => {
                self.unsubscribe(key, groups.as_slice());
                self.push_reply(key, frame::ack("unsubscribed"));
            }
            Command::Publish { groups, payload } => {
                let sender = self.name_of(key);
                match self.fanout(Some(key), &sender, groups.as_slice(), payload) {
                    Ok(n) => self.push_reply(key, frame::ack(&format!("published to {n}"))),
                    Err(DeliveryError::UnknownGroup(g)) => self.unknown_group(key, g),
                    Err(_) => self.reply_err(key, ErrorCode::Internal, "publish failed"),
                }
            }
            Command::Watch(groups) => self.cmd_watch(key, groups.as_slice()),
            Command::Unwatch(groups) => {
                for &g in groups.as_slice() {
                    if let Some(s) = self.sessions.get_mut(key) {
                        if let Ok(i) = s.watching.binary_search(&g) {
                            s.watching.remove(i);
                        }
                    }
                    if let Some(group) = self.groups.get_mut(&g) {
                        remove_sorted(&mut group.watchers, key);
                    }
                    self.forget_if_unused(g);
                }
                self.push_reply(key, frame::ack("unwatched"));
            }
            Command::Who(group) => self.cmd_who(key, group),
            Command::Send { to, payload } => {
                let sender = self.name_of(key);
                match self.deliver_message(Some(key), &sender, to, payload) {
                    Ok(_) => self.push_reply(key, frame::ack("sent")),
                    Err(_) => {
                        let text = format!("{to} is not online");
                        self.reply_err(key, ErrorCode::NoSuchUser, &text);
                    }
                }
            }
            Command::Directory(verb) => {
                let text = format!("{verb} is not available on this server yet");
                self.reply_err(key, ErrorCode::UnknownCommand, &text);
            }
        }
    }

    fn cmd_user(&mut self, key: usize, name: &str) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if let Some(current) = &s.name {
            let text = format!("already logged in as {current}");
            if current.eq_ignore_ascii_case(name) {
                return self.push_reply(key, frame::ack(&text));
            }
            // In cert mode the certificate decides the name (protocol.md 3.2).
            let code = if self.config.auth == AuthMode::Cert {
                ErrorCode::AuthFailed
            } else {
                ErrorCode::Forbidden
            };
            return self.reply_err(key, code, &text);
        }
        match self.config.auth {
            AuthMode::None => {
                self.login(key, name.into());
                self.push_reply(key, frame::ack("logged in"));
            }
            AuthMode::Password => {
                if let State::Login { user, .. } = &mut s.state {
                    *user = Some(name.into());
                }
                self.push_reply(key, frame::ack("authentication required"));
            }
            AuthMode::Cert => {
                let now = self.now;
                self.fail(
                    key,
                    ErrorCode::AuthFailed,
                    "log in with a client certificate (mutual TLS)",
                    CloseReason::AuthFailed,
                    now,
                );
            }
        }
    }

    fn cmd_pass(&mut self, key: usize, password: &[u8]) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if self.config.auth != AuthMode::Password || s.is_logged_in() {
            return self.push_reply(key, frame::ack("password ignored"));
        }
        let State::Login {
            user: Some(user),
            verifying,
        } = &mut s.state
        else {
            return self.reply_err(key, ErrorCode::AuthRequired, "send USER before PASS");
        };
        *verifying = true;
        let request = AuthRequest {
            conn: ConnId(key),
            ticket: s.generation,
            user: user.to_string(),
            password: password.to_vec(),
        };
        self.auth_requests.push_back(request);
    }

    fn cmd_hello(&mut self, key: usize) {
        let text = format!(
            "server=switchboard\nversion={}\nprotocol=1\nmax_payload={}\nauth={}\n",
            env!("CARGO_PKG_VERSION"),
            self.config.max_payload,
            self.config.auth.as_str(),
        );
        self.push_reply(key, frame::result(text.as_bytes()));
    }

    fn cmd_subscribe(&mut self, key: usize, groups: &[GroupId]) {
        if let Err(g) = self.ensure_groups(groups) {
            return self.unknown_group(key, g);
        }
        let mut joined = Vec::new();
        for &g in groups {
            let Some(s) = self.sessions.get_mut(key) else {
                return;
            };
            let Err(i) = s.groups.binary_search(&g) else {
                continue;
            };
            s.groups.insert(i, g);
            if let Some(group) = self.groups.get_mut(&g) {
                insert_sorted(&mut group.subscribers, key);
            }
            joined.push(g);
            self.notify_watchers("JOINED", key, g);
        }
        self.push_reply(key, frame::ack("subscribed"));
        if !joined.is_empty() && self.events_enabled {
            let user = self.name_of(key);
            self.emit(Event::Subscribed {
                conn: ConnId(key),
                user,
                groups: joined,
            });
        }
    }

    fn cmd_watch(&mut self, key: usize, groups: &[GroupId]) {
        if let Err(g) = self.ensure_groups(groups) {
            return self.unknown_group(key, g);
        }
        for &g in groups {
            let Some(s) = self.sessions.get_mut(key) else {
                return;
            };
            if let Err(i) = s.watching.binary_search(&g) {
                s.watching.insert(i, g);
                if let Some(group) = self.groups.get_mut(&g) {
                    insert_sorted(&mut group.watchers, key);
                }
            }
        }
        self.push_reply(key, frame::ack("watching"));
    }

    fn cmd_who(&mut self, key: usize, group: Option<GroupId>) {
        let mut names: Vec<(String, &str)> = match group {
            None => self
                .users
                .iter()
                .filter_map(|(k, keys)| Some((k.to_string(), &**self.user_name(keys)?)))
                .collect(),
            Some(g) => match self.groups.get(&g) {
                // Shown as in the user table, like `WHO 0`.
                Some(group) => group
                    .subscribers
                    .iter()
                    .filter_map(|&k| self.sessions.get(k)?.name.as_deref())
                    .filter_map(|n| {
                        let folded = n.to_ascii_lowercase();
                        let keys = self.users.get(folded.as_str())?;
                        let name = self.user_name(keys)?;
                        Some((folded, &**name))
                    })
                    .collect(),
                None if self.config.open_groups => Vec::new(),
                None => return self.unknown_group(key, g),
            },
        };
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        names.dedup_by(|a, b| a.0 == b.0);
        let mut out = String::new();
        for (_, name) in names {
            out.push_str(name);
            out.push('\n');
        }
        self.push_reply(key, frame::result(out.as_bytes()));
    }

    // ---- broker state ----

    fn login(&mut self, key: usize, name: Box<str>) {
        let folded = name.to_ascii_lowercase();
        // One allocation for the name in the common case: the session, the
        // user record and the table key share it.
        let typed: Arc<str> = match self.users.get(folded.as_str()) {
            Some(keys) => match self.user_name(keys) {
                Some(first) if **first == *name => Arc::clone(first),
                _ => Arc::from(name.as_ref()),
            },
            _ => Arc::from(name.as_ref()),
        };
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        s.state = State::Open;
        s.name = Some(Arc::clone(&typed));
        match self.users.get_mut(folded.as_str()) {
            Some(keys) => keys.push(key),
            None => {
                let table_key = if *typed == *folded {
                    Arc::clone(&typed)
                } else {
                    Arc::from(folded.as_str())
                };
                self.users.insert(table_key, Keys::One(key));
            }
        }
        debug!("#{key}: logged in as {name}");
        self.emit(Event::LoggedIn {
            conn: ConnId(key),
            user: name.into(),
        });
    }

    /// Checks that every group exists, creating them with `open_groups`.
    fn ensure_groups(&mut self, groups: &[GroupId]) -> Result<(), GroupId> {
        if self.config.open_groups {
            for &g in groups {
                self.groups.entry(g).or_insert_with(|| Group {
                    name: Box::from(""),
                    registered: false,
                    subscribers: Vec::new(),
                    watchers: Vec::new(),
                });
            }
            return Ok(());
        }
        match groups.iter().find(|g| !self.groups.contains_key(g)) {
            Some(&g) => Err(g),
            None => Ok(()),
        }
    }

    /// Drops an open group nobody subscribes to or watches.
    fn forget_if_unused(&mut self, g: GroupId) {
        if self
            .groups
            .get(&g)
            .is_some_and(|gr| !gr.registered && gr.subscribers.is_empty() && gr.watchers.is_empty())
        {
            self.groups.remove(&g);
        }
    }

    fn unsubscribe(&mut self, key: usize, groups: &[GroupId]) {
        let mut left = Vec::new();
        for &g in groups {
            let Some(s) = self.sessions.get_mut(key) else {
                return;
            };
            let Ok(i) = s.groups.binary_search(&g) else {
                continue;
            };
            s.groups.remove(i);
            if let Some(group) = self.groups.get_mut(&g) {
                remove_sorted(&mut group.subscribers, key);
            }
            left.push(g);
            self.notify_watchers("PARTED", key, g);
            self.forget_if_unused(g);
        }
        if !left.is_empty() && self.events_enabled {
            let user = self.name_of(key);
            self.emit(Event::Unsubscribed {
                conn: ConnId(key),
                user,
                groups: left,
            });
        }
    }

    /// Takes a session out of every group, watch list and the user table.
    fn leave(&mut self, key: usize) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        for g in std::mem::take(&mut s.watching) {
            if let Some(group) = self.groups.get_mut(&g) {
                remove_sorted(&mut group.watchers, key);
            }
            self.forget_if_unused(g);
        }
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let groups = s.groups.clone();
        self.unsubscribe(key, &groups);
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if let Some(name) = &s.name {
            let folded = name.to_ascii_lowercase();
            if let Some(user) = self.users.get_mut(folded.as_str()) {
                if user.remove(key) {
                    self.users.remove(folded.as_str());
                }
            }
        }
    }

    /// Pushes `JOINED 0 <user> <g>` or `PARTED 0 <user> <g>` to the group's watchers.
    fn notify_watchers(&mut self, verb: &str, key: usize, g: GroupId) {
        let Some(group) = self.groups.get(&g) else {
            return;
        };
        if group.watchers.is_empty() {
            return;
        }
        let user = self.name_of(key);
        let mut gbuf = BytesMut::new();
        frame::put_decimal(&mut gbuf, u64::from(g));
        let msg = frame::encode_to_bytes(verb, &[user.as_bytes(), &gbuf], b"");
        let watchers = group.watchers.clone();
        for w in watchers {
            self.push_frame(w, msg.clone());
        }
    }

    /// Encodes `PUBLISHED` once and queues it to every subscriber of any listed group.
    fn fanout(
        &mut self,
        from: Option<usize>,
        sender: &str,
        groups: &[GroupId],
        payload: &[u8],
    ) -> Result<usize, DeliveryError> {
        self.ensure_groups(groups)
            .map_err(DeliveryError::UnknownGroup)?;
        // Encoded once, into one allocation, and shared by every subscriber.
        let msg = frame::published(sender, groups, payload);
        self.publish_seq += 1;
        let seq = self.publish_seq;
        let mut delivered = 0;
        let mut slow = Vec::new();
        for g in groups {
            let Some(group) = self.groups.get(g) else {
                continue;
            };
            for &sub in &group.subscribers {
                let Some(s) = self.sessions.get_mut(sub) else {
                    continue;
                };
                if s.mark == seq || s.is_closing() {
                    continue;
                }
                s.mark = seq;
                if s.out.len() + msg.len() > self.config.max_pending {
                    slow.push(sub);
                    continue;
                }
                s.out.push(msg.clone());
                if !s.dirty {
                    s.dirty = true;
                    self.dirty.push(sub);
                }
                delivered += 1;
            }
        }
        for &g in groups {
            self.forget_if_unused(g);
        }
        for sub in slow {
            self.slow_consumer(sub);
        }
        if self.events_enabled {
            let payload = msg.slice(msg.len() - payload.len()..);
            self.emit(Event::Published {
                conn: from.map(ConnId),
                sender: sender.to_owned(),
                groups: groups.to_vec(),
                payload,
                delivered,
            });
        }
        Ok(delivered)
    }

    fn deliver_message(
        &mut self,
        from: Option<usize>,
        sender: &str,
        to: &str,
        payload: &[u8],
    ) -> Result<usize, DeliveryError> {
        let folded = to.to_ascii_lowercase();
        let Some(keys) = self.users.get(folded.as_str()) else {
            return Err(DeliveryError::NoSuchUser);
        };
        let msg = frame::encode_to_bytes("MESSAGE", &[sender.as_bytes()], payload);
        let targets = keys.as_slice().to_vec();
        let to_name = self
            .user_name(keys)
            .map(|n| n.to_string())
            .unwrap_or_default();
        for &t in &targets {
            self.push_frame(t, msg.clone());
        }
        if self.events_enabled {
            let payload = msg.slice(msg.len() - payload.len()..);
            self.emit(Event::UserMessage {
                conn: from.map(ConnId),
                from: sender.to_owned(),
                to: to_name,
                payload,
            });
        }
        Ok(targets.len())
    }

    fn unknown_group(&mut self, key: usize, g: GroupId) {
        let text = format!("group {g} does not exist");
        self.reply_err(key, ErrorCode::UnknownGroup, &text);
    }

    fn reply_err(&mut self, key: usize, code: ErrorCode, text: &str) {
        self.push_reply(key, frame::err(code, text));
    }

    /// Queues a reply. Replies are what the client asked for, so they are not
    /// counted against the slow-consumer limit (reading stops instead: see
    /// `read_pause`).
    fn push_reply(&mut self, key: usize, bytes: Bytes) {
        if let Some(s) = self.sessions.get_mut(key) {
            if s.is_closing() {
                return;
            }
            s.out.push(bytes);
            self.mark_dirty(key);
        }
    }

    /// Queues a pushed frame, enforcing the slow-consumer limit.
    fn push_frame(&mut self, key: usize, bytes: Bytes) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if s.is_closing() {
            return;
        }
        if s.out.len() + bytes.len() > self.config.max_pending {
            self.slow_consumer(key);
            return;
        }
        s.out.push(bytes);
        self.mark_dirty(key);
    }

    fn slow_consumer(&mut self, key: usize) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if s.is_closing() {
            return;
        }
        info!("#{key} {}: slow consumer, closing", s.peer);
        s.out.discard_unstarted();
        // Best effort: the peer may never read it.
        let now = self.now;
        self.push_reply(
            key,
            frame::err(ErrorCode::SlowConsumer, "too much unread output"),
        );
        self.begin_close(key, CloseReason::SlowConsumer, now);
    }

    /// Moves a session to `Closing`: it leaves every group and the user table
    /// at once, and is dropped after flushing (or at the linger deadline).
    fn begin_close(&mut self, key: usize, reason: CloseReason, now: Tick) {
        if self.sessions.get(key).is_none_or(Session::is_closing) {
            return;
        }
        self.leave(key);
        let linger = self.config.linger;
        if let Some(s) = self.sessions.get_mut(key) {
            let deadline = now + linger;
            s.state = State::Closing {
                reason,
                deadline,
                eof: false,
            };
            s.inbuf = Vec::new();
        }
        self.mark_dirty(key);
        self.schedule(key);
    }

    fn check_deadlines(&mut self, key: usize, now: Tick) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        match s.state {
            State::Closing { deadline, .. } => {
                if now >= deadline {
                    self.mark_dirty(key);
                }
            }
            _ => {
                if !s.is_logged_in() && now >= s.opened + self.config.login_timeout {
                    return self.fail(
                        key,
                        ErrorCode::Timeout,
                        "login timed out",
                        CloseReason::LoginTimeout,
                        now,
                    );
                }
                match s.ping_sent {
                    Some(sent) if now >= sent + self.config.ping_timeout => {
                        self.fail(
                            key,
                            ErrorCode::Timeout,
                            "no answer to PING",
                            CloseReason::PingTimeout,
                            now,
                        );
                    }
                    None if now >= s.last_rx + self.config.ping_interval => {
                        s.ping_sent = Some(now);
                        self.push_frame(key, Bytes::from_static(PING));
                    }
                    _ => {}
                }
            }
        }
    }

    /// Makes sure the timer heap holds an entry no later than the session's next deadline.
    fn schedule(&mut self, key: usize) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let next = s.next_deadline(&self.config);
        if s.timer_at.is_none_or(|t| next < t) {
            s.timer_at = Some(next);
            self.timers.push(Reverse((next, key, s.generation)));
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(s) = self.sessions.get_mut(key) {
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    fn emit(&mut self, event: Event) {
        if self.events_enabled {
            self.events.push_back(event);
        }
    }

    /// A user's display name: its oldest session's.
    fn user_name(&self, keys: &Keys) -> Option<&Arc<str>> {
        let first = *keys.as_slice().first()?;
        self.sessions.get(first)?.name.as_ref()
    }

    fn name_of(&self, key: usize) -> String {
        self.sessions
            .get(key)
            .and_then(|s| s.name.as_deref())
            .unwrap_or("")
            .to_owned()
    }
}

/// Sender names on server-originated frames: a user name, or `@` followed by one.
fn is_sender_name(name: &str) -> bool {
    let bare = name.strip_prefix('@').unwrap_or(name);
    crate::proto::command::is_valid_user(bare.as_bytes())
}

fn insert_sorted(v: &mut Vec<usize>, key: usize) {
    if let Err(i) = v.binary_search(&key) {
        v.insert(i, key);
    }
}

fn remove_sorted(v: &mut Vec<usize>, key: usize) {
    if let Ok(i) = v.binary_search(&key) {
        v.remove(i);
    }
    if v.is_empty() {
        *v = Vec::new();
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
impl<T> Broker<T> {
    /// Checks the cross-indexes (group members <-> session groups, watchers,
    /// user table <-> sessions). Panics with the first inconsistency.
    pub(crate) fn assert_consistent(&self) {
        for (&g, group) in &self.groups {
            assert!(
                group.subscribers.is_sorted(),
                "group {g} subscribers unsorted"
            );
            assert!(group.watchers.is_sorted(), "group {g} watchers unsorted");
            for &k in &group.subscribers {
                let s = self.sessions.get(k).expect("subscriber exists");
                assert!(
                    s.groups.contains(&g),
                    "#{k} in group {g} but not in its list"
                );
                assert!(!s.is_closing(), "closing #{k} still subscribed to {g}");
            }
            for &k in &group.watchers {
                let s = self.sessions.get(k).expect("watcher exists");
                assert!(
                    s.watching.contains(&g),
                    "#{k} watches {g} but not in its list"
                );
            }
            if !group.registered {
                assert!(
                    !group.subscribers.is_empty() || !group.watchers.is_empty(),
                    "unused open group {g} kept"
                );
            }
        }
        for (k, s) in &self.sessions {
            for g in &s.groups {
                let group = self.groups.get(g).expect("group exists");
                assert!(
                    group.subscribers.binary_search(&k).is_ok(),
                    "#{k} lists {g}"
                );
            }
            for g in &s.watching {
                let group = self.groups.get(g).expect("group exists");
                assert!(group.watchers.binary_search(&k).is_ok(), "#{k} watches {g}");
            }
            if let (Some(name), true) = (&s.name, s.is_logged_in()) {
                let user = self
                    .users
                    .get(name.to_ascii_lowercase().as_str())
                    .expect("user entry");
                assert!(
                    user.as_slice().contains(&k),
                    "#{k} missing from user {name}"
                );
            }
        }
        for (folded, user) in &self.users {
            assert!(!user.as_slice().is_empty(), "empty user {folded} kept");
            for &k in user.as_slice() {
                let s = self.sessions.get(k).expect("user session exists");
                assert!(
                    s.is_logged_in(),
                    "user {folded} lists #{k} which is not logged in"
                );
            }
        }
    }
}
