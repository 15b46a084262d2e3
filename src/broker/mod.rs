//! The messaging broker, sans-IO: sessions, users, groups and their fan-out.
//!
//! `Broker` is the messaging protocol minus sockets, clocks and connection
//! bookkeeping: it holds the registry (groups, watchers, users), the events
//! for the embedding program and the password checks to run, and it works on
//! a connection table ([`Links`], the connection layer) that the caller owns
//! and hands to every call, as quinn-proto's `Endpoint` never holds a socket.
//! The caller feeds bytes ([`Broker::handle_input`]), end of stream, time
//! ([`Broker::handle_timeout`]) and password verdicts; the broker answers
//! with frames queued in the table (read them with [`Links::output`], find
//! them with [`Links::take_dirty`]), events ([`Broker::poll_event`]),
//! password checks to run off the loop ([`Broker::poll_auth_request`]) and
//! its next deadline ([`Broker::poll_timeout`]). Tests drive it byte by byte
//! with simulated time.
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

mod authz;
mod checks;
mod cluster;
mod commands;
mod config;
mod directory;
mod event;
mod members;
mod queues;
mod registry;
mod requests;
mod session;
mod stats;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use log::{debug, info, warn};

pub use crate::conn::{CloseReason, ConnId};
pub use authz::{Attempt, Authorize, Authorizer, Verdict};
pub use checks::SharedChecks;
pub use cluster::{BadBatch, ClusterStatus, Note, QueueTurn, decode_batch, encode_batch};
pub use config::{AuthMode, BrokerConfig};
pub use directory::{MAX_PROBES, PROBE_TIMEOUT, ProbeRequest};
pub use event::Event;
use registry::{Group, Keys, user_name};
pub use requests::{MAX_PENDING_REQUESTS, RequestOutcome};
pub use session::Session;
use session::State;
pub(crate) use stats::combine as combine_figure;
pub use stats::{Figure, Kind as FigureKind, ProcessStats};

use crate::conn::tick::Tick;
use crate::conn::{Admission, Links, PeerIdentity, PushError, Shared};
use crate::error::ErrorCode;
use crate::proto::GroupId;
use crate::proto::frame::{self, PING};

/// The name on frames the server itself originates.
pub const SERVER_USER: &str = "@server";

/// The largest payload accepted before login (protocol.md 7a): a connection
/// that has not logged in holds at most one header and this much input.
pub const PRELOGIN_MAX_PAYLOAD: usize = 4 << 10;

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
    /// Set when the connection went before the check ran: skip it (no
    /// verdict is awaited any more).
    pub cancelled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The longest password accepted by `PASS` (longer: `ERR bad-args`).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Why a server-side publish or send was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryError {
    /// A listed group is not registered (`unknown-group`).
    UnknownGroup(GroupId),
    /// The user has no session (`no-such-user`).
    NoSuchUser,
    /// A name or group list that is not valid on the wire.
    BadArgs,
    /// Under `open_groups`, the groups it would create pass
    /// `max_open_groups` (`limit`).
    Limit,
    /// A request found nobody to answer it (`no-responders`).
    NoResponders,
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownGroup(g) => write!(f, "unknown group {g}"),
            Self::NoSuchUser => f.write_str("no such user online"),
            Self::BadArgs => f.write_str("invalid user name or group list"),
            Self::Limit => f.write_str("too many open groups"),
            Self::NoResponders => f.write_str("nobody answers requests on that group"),
        }
    }
}

impl std::error::Error for DeliveryError {}

/// The connection table the broker works on: `T` is what the IO layer keeps
/// with each connection (its socket; tests use `()`).
pub type Sessions<T> = Links<T, Session>;

/// The broker: the registry of groups, watchers and users, and what it has
/// for the embedding program. The connections are in a [`Sessions`] table
/// the caller owns (make it with [`Broker::new_table`]).
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    groups: HashMap<GroupId, Group>,
    /// Online users by case-folded name, with their sessions (the key shares
    /// the session's name allocation when the name is already lower case).
    users: HashMap<Arc<str>, Keys>,
    /// Login and keep-alive deadlines: (when, slot, generation).
    timers: BinaryHeap<Reverse<(Tick, usize, u32)>>,
    events: VecDeque<Event>,
    events_enabled: bool,
    auth_requests: VecDeque<AuthRequest>,
    /// Password checks in flight and addresses backed off.
    checks: checks::Checks,
    publish_seq: u64,
    /// Groups created by use (`open_groups`), against `max_open_groups`.
    open_count: usize,
    /// Work done for the connection being processed (see `WORK_BUDGET`).
    work: usize,
    /// The connection whose input was processed last, in which turn (its
    /// `now`), and the work it has done in that turn.
    work_for: Option<(ConnId, Instant, usize)>,
    /// `WORK_BUDGET`, but for tests and fuzzing, which make it small.
    work_budget: usize,
    /// The `GROUPS` reply, encoded once and shared until a group is created,
    /// forgotten or renamed (a listing of 200,000 groups is then a reference
    /// count per request, not a sort and a megabyte each).
    groups_reply: Option<Bytes>,
    /// The `WHO 0` reply, likewise, until a user comes, goes or changes
    /// its display name (its oldest session).
    who_reply: Option<Bytes>,
    /// A fan-out too large for one turn, delivered a budget per turn.
    spread: Option<Box<registry::Spread>>,
    /// Counters and gauges for `STATS`.
    counters: stats::Counters,
    /// Where `STATS` gets the process-wide figures.
    process_stats: Option<fn() -> ProcessStats>,
    /// When the broker was made (`uptime_s`).
    started: Instant,
    /// The latest time handed in by the caller, for work that has no `now`
    /// parameter of its own (a fan-out closing a slow consumer).
    now: Instant,
    /// Where users accept direct peer connections (`BIND`, `QUERY`,
    /// `LEAVE`), and the probes that check them.
    directory: directory::Directory,
    /// Queue groups each session is in: (group, queue) by slab key.
    queue_members: HashMap<usize, Vec<(GroupId, Box<str>)>>,
    /// Sessions that said `ECHO 0 off`, by slab key.
    echo_off: std::collections::HashSet<usize>,
    /// Requests and surveys under way, and replies held behind them.
    requests: requests::Requests,
    /// The other members, when this broker is one of several (loops of a
    /// process, nodes of a cluster).
    cluster: Option<Box<cluster::Cluster>>,
}

impl Broker {
    /// A broker with no groups.
    pub fn new(config: BrokerConfig) -> Self {
        Self {
            config,
            groups: HashMap::new(),
            users: HashMap::new(),
            timers: BinaryHeap::new(),
            events: VecDeque::new(),
            events_enabled: true,
            auth_requests: VecDeque::new(),
            checks: checks::Checks::default(),
            publish_seq: 0,
            open_count: 0,
            work: 0,
            work_for: None,
            work_budget: commands::WORK_BUDGET,
            groups_reply: None,
            who_reply: None,
            spread: None,
            counters: stats::Counters::default(),
            process_stats: None,
            started: Instant::now(),
            now: Instant::now(),
            directory: directory::Directory::default(),
            queue_members: HashMap::new(),
            echo_off: std::collections::HashSet::new(),
            requests: requests::Requests::default(),
            cluster: None,
        }
    }

    /// An empty connection table with this broker's limits, whose refused
    /// connections are told `ERR server-full`.
    pub fn new_table<T>(&self) -> Sessions<T> {
        let mut links = Links::new(self.config.limits());
        links.set_farewell_full(frame::err(ErrorCode::ServerFull, "server is full"));
        links
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
        self.groups_reply = None;
        let group = self.groups.entry(id).or_insert_with(|| Group {
            name: Box::from(""),
            registered: true,
            subscribers: Vec::new(),
            watchers: Vec::new(),
            queues: Vec::new(),
        });
        group.name = name.into();
        if !group.registered {
            // An open group in use becomes a registered one.
            group.registered = true;
            self.open_count = self.open_count.saturating_sub(1);
        }
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
    pub fn users<T>(&self, links: &Sessions<T>) -> Vec<String> {
        let mut v: Vec<_> = self.users.iter().collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v.into_iter()
            .filter_map(|(_, keys)| user_name(links, keys))
            .map(|n| n.to_string())
            .collect()
    }

    /// Accepts a new connection into `links`.
    ///
    /// Over `max_connections`, the connection is still taken so that it can be
    /// told `ERR server-full`, then closed; past a small slack beyond that, or
    /// while shutting down, it is not kept ([`Admission::Dropped`]: write the
    /// farewell it carries, if any, and drop the transport).
    pub fn accept<T>(
        &mut self,
        links: &mut Sessions<T>,
        io: T,
        peer: SocketAddr,
        now: Instant,
    ) -> Admission<T> {
        self.now = now;
        let session = Session::new(links.tick(now));
        let admission = links.accept(io, peer, session, now);
        if let Admission::Open(id) = admission {
            info!("{}: connected", links.log_peer(id));
            self.emit(Event::Connected { conn: id, peer });
            self.schedule(links, id);
        }
        admission
    }

    /// The TLS handshake of a connection completed. With [`AuthMode::Cert`],
    /// a certificate whose subject CN is a valid user name logs the session in.
    pub fn handle_secured<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        subject: Option<PeerIdentity>,
        now: Instant,
    ) {
        self.handle_secured_with(links, conn, subject, now, &mut ());
    }

    /// [`Broker::handle_secured`], asking `authz` before a login.
    pub fn handle_secured_with<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        subject: Option<PeerIdentity>,
        now: Instant,
        authz: &mut dyn Authorizer,
    ) {
        self.now = now;
        let Some(l) = links.get(conn) else {
            return;
        };
        if l.is_closing() {
            return;
        }
        debug!(
            "{}: secured (TLS or WebSocket upgrade){}",
            links.log_peer(conn),
            subject
                .as_ref()
                .map(|c| format!(", client {c}"))
                .unwrap_or_default()
        );
        let logged_in = l.proto.is_logged_in();
        links.set_identity(conn, subject.clone());
        let cn: Option<String> = subject.as_ref().and_then(|c| c.cn.clone());
        self.emit(Event::Secured { conn, subject });
        if self.config.auth != AuthMode::Cert || logged_in {
            return;
        }
        match cn {
            Some(cn) if crate::proto::command::is_valid_user(cn.as_bytes()) => {
                if !self.login_forbidden(links, conn, authz, &cn)
                    && !self.login(links, conn, cn.into())
                {
                    let reply = self.too_many_sessions();
                    self.push_reply(links, conn, reply);
                }
            }
            Some(cn) => warn!(
                "{}: login failed: certificate CN {cn:?} is not a valid user name",
                links.log_peer(conn)
            ),
            None => debug!(
                "{}: no client certificate; cannot log in",
                links.log_peer(conn)
            ),
        }
        links.mark_dirty(conn);
    }

    /// What this broker's password checks share with other loops' (their
    /// number against `max_password_checks`, and the back-offs).
    pub fn password_checks(&self) -> checks::SharedChecks {
        self.checks.common()
    }

    /// Shares another loop's password checks (see
    /// [`Broker::password_checks`]).
    pub fn share_password_checks(&mut self, common: checks::SharedChecks) {
        self.checks.share(common);
    }

    /// The user a connection logged in as.
    pub fn user_of<'a, T>(&self, links: &'a Sessions<T>, conn: ConnId) -> Option<&'a str> {
        links.proto(conn).and_then(|s| s.name.as_deref())
    }

    /// Whether events are waiting in [`Broker::poll_event`].
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
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

    /// The earliest instant at which [`Broker::handle_timeout`] has work
    /// (the table's closing deadlines are [`Links::poll_timeout`]).
    pub fn poll_timeout<T>(&self, links: &Sessions<T>) -> Option<Instant> {
        if self.spread.is_some() || self.has_pending_notes() {
            // A fan-out, or other members' notes, go on next turn.
            return Some(self.now);
        }
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        let reprobe = self.next_reprobe();
        let request = self.next_request_deadline();
        let cluster = self.next_cluster_deadline();
        timer
            .into_iter()
            .chain(reprobe)
            .chain(request)
            .chain(cluster)
            .min()
            .map(|at| links.instant(at))
    }

    /// Bytes received from a connection.
    pub fn handle_input<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        data: &[u8],
        now: Instant,
    ) {
        self.handle_input_with(links, conn, data, now, &mut ());
    }

    /// [`Broker::handle_input`], asking `authz` before a login, subscribe,
    /// publish, watch or send (after the ACL).
    pub fn handle_input_with<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        data: &[u8],
        now: Instant,
        authz: &mut dyn Authorizer,
    ) {
        self.now = now;
        let tick = links.tick(now);
        let Some(s) = links.proto_mut(conn) else {
            return;
        };
        s.last_rx = tick;
        s.ping_sent = None;
        links.input(conn, data, |links, bytes| {
            self.process(links, conn, bytes, authz)
        });
    }

    /// Processes input kept while the connection was paused (its output
    /// drained, or a password verdict came).
    pub fn resume<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, now: Instant) {
        self.resume_with(links, conn, now, &mut ());
    }

    /// [`Broker::resume`], asking `authz` as [`Broker::handle_input_with`] does.
    pub fn resume_with<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        now: Instant,
        authz: &mut dyn Authorizer,
    ) {
        self.now = now;
        // A connection that yielded resumes in a later turn, with a new
        // budget (reads later in this turn share it).
        self.work_for = None;
        links.resume_input(conn, |links, bytes| self.process(links, conn, bytes, authz));
    }

    /// The peer closed its side: finish what is owed, then close.
    pub fn handle_eof<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, now: Instant) {
        self.now = now;
        if links.handle_eof(conn) {
            self.begin_close(links, conn, CloseReason::PeerClosed);
        }
        links.set_eof(conn);
    }

    /// Drops a connection from the table (the IO layer is done with it: it
    /// finished closing, or failed) and hands back its transport.
    pub fn remove<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        reason: CloseReason,
    ) -> Option<T> {
        if !links.is_closing(conn) {
            self.leave(links, conn);
        }
        self.checks.cancel(conn.0);
        let admitted = links.is_admitted(conn);
        let who = links.log_peer(conn);
        let (io, session, reason) = links.remove(conn, reason)?;
        if admitted {
            match &session.name {
                Some(user) => info!("{who}: closed ({reason}); user {user}"),
                None => info!("{who}: closed ({reason})"),
            }
            self.emit(Event::Closed {
                conn,
                user: session.name.as_deref().map(String::from),
                reason,
            });
        }
        Some(io)
    }

    /// Starts closing a connection from the embedding program.
    pub fn close<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, now: Instant) {
        self.now = now;
        self.begin_close(links, conn, CloseReason::Closed);
    }

    /// The verdict on an [`AuthRequest`].
    pub fn handle_auth_result<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        ticket: u32,
        ok: bool,
        now: Instant,
    ) {
        self.handle_auth_result_with(links, conn, ticket, ok, now, &mut ());
    }

    /// [`Broker::handle_auth_result`], asking `authz` before the login and
    /// the commands that follow it.
    pub fn handle_auth_result_with<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        ticket: u32,
        ok: bool,
        now: Instant,
        authz: &mut dyn Authorizer,
    ) {
        self.now = now;
        if !self.checks.finished(conn.0, ticket) {
            return;
        }
        let Some(l) = links.get_mut(conn) else {
            return;
        };
        if l.generation() != ticket || l.is_closing() {
            return;
        }
        let ip = l.peer().ip();
        let State::Login { user, verifying } = &mut l.proto.state else {
            return;
        };
        if !*verifying {
            return;
        }
        *verifying = false;
        let user = user.take();
        links.set_paused(conn, false);
        match (ok, user) {
            (true, Some(name)) => {
                self.checks.succeeded(ip);
                if self.login_forbidden(links, conn, authz, &name) {
                    return;
                }
                let reply = if self.login(links, conn, name) {
                    frame::ack("logged in")
                } else {
                    self.too_many_sessions()
                };
                self.push_reply(links, conn, reply);
                self.resume_with(links, conn, now, authz);
            }
            (_, name) => {
                warn!(
                    "{}: login failed for {}: wrong user name or password",
                    links.log_peer(conn),
                    name.as_deref().unwrap_or("?")
                );
                self.checks.failed(ip, now);
                self.fail(
                    links,
                    conn,
                    ErrorCode::AuthFailed,
                    "wrong user name or password",
                    CloseReason::AuthFailed,
                );
            }
        }
    }

    /// Runs the deadlines that are due: login timeout, keep-alive pings and
    /// their timeout. (Closing connections' deadlines are the table's:
    /// [`Links::handle_timeout`].)
    pub fn handle_timeout<T>(&mut self, links: &mut Sessions<T>, now: Instant) {
        self.now = now;
        self.continue_spread(links);
        self.reprobe_due(links);
        self.expire_requests(links);
        self.cluster_timeout(links);
        let tick = links.tick(now);
        while let Some(&Reverse((at, key, generation))) = self.timers.peek() {
            if at > tick {
                break;
            }
            self.timers.pop();
            let conn = ConnId(key);
            let Some(l) = links.get_mut(conn) else {
                continue;
            };
            if l.generation() != generation || l.is_closing() {
                continue;
            }
            if l.proto.timer_at == Some(at) {
                l.proto.timer_at = None;
            }
            self.check_deadlines(links, conn, tick);
            if links.proto(conn).is_some() && !links.is_closing(conn) {
                self.schedule(links, conn);
            }
        }
    }

    /// Starts a graceful shutdown: every connection gets `ERR shutting-down`
    /// after what it is owed (within the drain timeout), then closes. No new
    /// connection is accepted.
    pub fn shutdown<T>(&mut self, links: &mut Sessions<T>, now: Instant) {
        self.now = now;
        self.finish_spread(links);
        let open: Vec<ConnId> = links
            .iter()
            .filter(|(_, l)| !l.is_closing())
            .map(|(id, _)| id)
            .collect();
        let farewell = frame::err(ErrorCode::ShuttingDown, "server is shutting down");
        links.shutdown(Some(&farewell), now);
        for id in open {
            self.leave(links, id);
        }
    }

    /// Publishes a message as `@server` (or another sender name the embedding
    /// program chooses) to groups. Returns how many connections it was queued for.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::UnknownGroup`] when a group is not registered (and
    /// groups are not open); nothing is delivered then.
    pub fn publish<T>(
        &mut self,
        links: &mut Sessions<T>,
        sender: &str,
        groups: &[GroupId],
        payload: &[u8],
    ) -> Result<usize, DeliveryError> {
        if groups.is_empty()
            || groups.len() > crate::proto::command::MAX_PUBLISH_GROUPS
            || !is_sender_name(sender)
        {
            return Err(DeliveryError::BadArgs);
        }
        // Not to overtake a fan-out still being delivered over turns.
        self.finish_spread(links);
        let delivered = self.fanout(links, None, sender, groups, payload, false)?;
        Ok(delivered.unwrap_or_default())
    }

    /// Sends a one-to-one message as `sender` (normally `@server`) to every
    /// session of `user`. Returns how many sessions it was queued for.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::NoSuchUser`] when the user has no session.
    pub fn send<T>(
        &mut self,
        links: &mut Sessions<T>,
        sender: &str,
        user: &str,
        payload: &[u8],
    ) -> Result<usize, DeliveryError> {
        if !is_sender_name(sender) || !crate::proto::command::is_valid_user(user.as_bytes()) {
            return Err(DeliveryError::BadArgs);
        }
        self.deliver_message(links, None, sender, user, payload)
    }

    /// Slot and heap bytes held by the sessions (for footprint reports).
    pub fn session_bytes<T>(&self, links: &Sessions<T>) -> usize {
        links.footprint()
            + links
                .iter()
                .map(|(_, l)| l.proto.heap_bytes())
                .sum::<usize>()
    }

    /// Sends a final `ERR` (whatever the output bound) and starts closing.
    fn fail<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        code: ErrorCode,
        text: &str,
        reason: CloseReason,
    ) {
        if code == ErrorCode::AuthFailed {
            self.counters.auth_failures += 1;
        }
        links.push_final(conn, frame::err(code, text));
        self.begin_close(links, conn, reason);
    }

    pub(super) fn unknown_group<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, g: GroupId) {
        let text = format!("group {g} does not exist");
        self.reply_err(links, conn, ErrorCode::UnknownGroup, &text);
    }

    fn reply_err<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, code: ErrorCode, text: &str) {
        if matches!(code, ErrorCode::Limit | ErrorCode::Busy) {
            self.counters.limits_refused += 1;
        }
        self.push_reply(links, conn, frame::err(code, text));
    }

    /// Queues a reply. Replies count toward the output bound like pushed
    /// frames (protocol.md 7a); input stops being processed well before it
    /// (the read pause), so only a reply larger than the bound passes it.
    fn push_reply<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, bytes: Bytes) {
        // Behind a pending request, a reply waits its turn.
        if self.holds_replies(conn) {
            if self.hold_reply(conn, bytes) {
                self.slow_consumer(links, conn);
            }
            return;
        }
        self.push_frame(links, conn, bytes);
    }

    /// Queues a frame, enforcing the output bound: past it, the connection
    /// is a slow consumer.
    fn push_frame<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, bytes: Bytes) {
        if links.push(conn, bytes) == Err(PushError::Full) {
            self.slow_consumer(links, conn);
        }
    }

    /// [`Broker::push_frame`] of a frame several sessions get.
    fn push_shared<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, frame: &Shared) {
        if links.push_shared(conn, frame) == Err(PushError::Full) {
            self.slow_consumer(links, conn);
        }
    }

    fn slow_consumer<T>(&mut self, links: &mut Sessions<T>, conn: ConnId) {
        if links.is_closing(conn) {
            return;
        }
        self.leave(links, conn);
        self.counters.slow_consumers += 1;
        let farewell = frame::err(ErrorCode::SlowConsumer, "too much unread output");
        links.slow_consumer(conn, farewell, self.now);
    }

    /// Starts closing a session: it leaves every group and the user table
    /// at once, and the table flushes and drops it (or at its deadline).
    fn begin_close<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, reason: CloseReason) {
        if links.is_closing(conn) {
            return;
        }
        self.leave(links, conn);
        // A password check still waiting for this one is not run.
        self.checks.cancel(conn.0);
        links.close(conn, reason, self.now);
    }

    fn check_deadlines<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, now: Tick) {
        let Some(s) = links.proto_mut(conn) else {
            return;
        };
        if !s.is_logged_in() && now >= s.opened + self.config.login_timeout {
            return self.fail(
                links,
                conn,
                ErrorCode::Timeout,
                "login timed out",
                CloseReason::LoginTimeout,
            );
        }
        match s.ping_sent {
            Some(sent) if now >= sent + self.config.ping_timeout => {
                self.fail(
                    links,
                    conn,
                    ErrorCode::Timeout,
                    "no answer to PING",
                    CloseReason::PingTimeout,
                );
            }
            None if now >= s.last_rx + self.config.ping_interval => {
                s.ping_sent = Some(now);
                self.push_frame(links, conn, Bytes::from_static(PING));
            }
            _ => {}
        }
    }

    /// Makes sure the timer heap holds an entry no later than the session's next deadline.
    fn schedule<T>(&mut self, links: &mut Sessions<T>, conn: ConnId) {
        let Some(l) = links.get_mut(conn) else {
            return;
        };
        let generation = l.generation();
        let s = &mut l.proto;
        let next = s.next_deadline(&self.config);
        if s.timer_at.is_none_or(|t| next < t) {
            s.timer_at = Some(next);
            self.timers.push(Reverse((next, conn.0, generation)));
        }
    }

    fn emit(&mut self, event: Event) {
        if self.events_enabled {
            self.events.push_back(event);
        }
    }
}

/// Sender names on server-originated frames: a user name, or `@` followed by one.
fn is_sender_name(name: &str) -> bool {
    let bare = name.strip_prefix('@').unwrap_or(name);
    crate::proto::command::is_valid_user(bare.as_bytes())
}

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "fuzzing"))]
impl Broker {
    /// Sets the work budget per connection and turn (and so the size past
    /// which a fan-out is spread over turns), so that small tests and the
    /// fuzzer reach what otherwise takes tens of thousands of sessions.
    pub(crate) fn set_work_budget(&mut self, budget: usize) {
        self.work_budget = budget.max(1);
    }

    /// Checks the cross-indexes (group members <-> session groups, watchers,
    /// user table <-> sessions). Panics with the first inconsistency.
    pub(crate) fn assert_consistent<T>(&self, links: &Sessions<T>) {
        self.assert_queues_consistent(links);
        let open = self.groups.values().filter(|g| !g.registered).count();
        assert_eq!(open, self.open_count, "open group count");
        for (&g, group) in &self.groups {
            assert!(
                group.subscribers.is_sorted(),
                "group {g} subscribers unsorted"
            );
            assert!(group.watchers.is_sorted(), "group {g} watchers unsorted");
            for &k in &group.subscribers {
                let l = links.get(ConnId(k)).expect("subscriber exists");
                let s = &l.proto;
                assert!(
                    s.groups.contains(&g),
                    "#{k} in group {g} but not in its list"
                );
                assert!(!l.is_closing(), "closing #{k} still subscribed to {g}");
            }
            for &k in &group.watchers {
                let s = links.proto(ConnId(k)).expect("watcher exists");
                assert!(
                    s.watching.contains(&g),
                    "#{k} watches {g} but not in its list"
                );
            }
            if !group.registered && !self.spread.as_ref().is_some_and(|s| s.names(g)) {
                assert!(
                    !group.subscribers.is_empty()
                        || !group.watchers.is_empty()
                        || !group.queues.is_empty(),
                    "unused open group {g} kept"
                );
            }
        }
        for (id, l) in links.iter() {
            let (k, s) = (id.0, &l.proto);
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
            if let (Some(name), true) = (&s.name, s.is_logged_in() && !l.is_closing()) {
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
        if let Some(c) = self.cluster.as_ref() {
            assert_eq!(
                c.users_in_process,
                self.users_in_process_counted(),
                "users online in the process, as kept and as counted"
            );
        }
        for (folded, user) in &self.users {
            assert!(!user.as_slice().is_empty(), "empty user {folded} kept");
            for &k in user.as_slice() {
                let s = links.proto(ConnId(k)).expect("user session exists");
                assert!(
                    s.is_logged_in(),
                    "user {folded} lists #{k} which is not logged in"
                );
            }
        }
    }
}
