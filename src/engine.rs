//! The cluster engine's transport (protocol.md section 11, `--cluster
//! redis://HOST:PORT`): Redis connections driven by the server's own loop,
//! as a reactor [`Service`]. No Redis client library, no thread, no second
//! runtime: the reactor opens each connection with its nonblocking connect
//! ([`Service::take_connects`]), the sans-IO [`crate::redis`] pieces speak
//! the protocol, and this service decides what goes where.
//!
//! # The board
//!
//! The broker's service and this one share an [`EngineBoard`] (like the
//! directory's probes, `src/probe.rs`). The broker (a lower service index)
//! fills `channels`, `outgoing` and `sets` in its `after_input`; in the same
//! turn this service's [`Service::has_events`] is true and its
//! `after_input` moves that work to the connections, appends the messages
//! received this turn to `incoming` and publishes its state (`up`,
//! `sharded`, `generation`, the counters). The broker reads `incoming` on
//! its next turn (its own `has_events` should say so when it is not empty).
//!
//! Publishes are sent only on a command connection that is ready (connected,
//! and the mode known); otherwise, or when that connection's unanswered
//! bytes would pass `max_outgoing`, they are dropped and counted: between
//! nodes delivery is at most once during an outage, like Redis pub/sub
//! itself. `SET`s follow the same rule and count in `dropped` too, and so
//! does a publish or set Redis answered `-MOVED`/`-ASK` (it was counted in
//! `published` when sent, and is not sent again). Messages are handed over
//! for every channel received, including one being unsubscribed.
//!
//! # Single Redis or Redis Cluster
//!
//! Every command connection asks `CLUSTER SLOTS` first. An error reply
//! ("cluster support disabled") means a single Redis: one command and one
//! subscriber connection, `PUBLISH` and `SUBSCRIBE`. A slot map means a
//! cluster: a command connection to every master (so any channel can be
//! published to at once), a subscriber connection to each master owning a
//! wanted channel's slot, `SPUBLISH`/`SSUBSCRIBE` routed by slot. A
//! `-MOVED`/`-ASK` reply, a `sunsubscribe` push Redis sent on its own or a
//! lost connection makes the engine ask `CLUSTER SLOTS` again (of any
//! master it still reaches, at most every [`REFRESH_MIN`]; and every
//! [`REFRESH_DOWN`] while it is not up, so that a failover's new master is
//! found), and the connections and subscriptions follow the new map; each
//! command connection also asks it when it (re)connects.
//!
//! # Up and down
//!
//! `up` turns true when every connection the mode needs is ready and every
//! wanted channel's subscription is confirmed; `generation` counts those
//! turns. It stays true when channels are added later (their subscriptions
//! follow), and turns false as soon as any needed connection is lost (a
//! read or write error, Redis closing it, a protocol error, or no `PONG`
//! within 5 s). Each connection then reconnects after a back-off (100 ms,
//! doubling to 5 s, reset when the engine is up again). Up is logged at
//! info, down at warn with its reason, each attempt at debug only (the
//! reactor itself still logs every outgoing connection: connected at info,
//! a failed connect at debug).
//!
//! # Bounds
//!
//! - Output: the bytes of commands queued or sent and not yet answered, per
//!   command connection, stay within `max_outgoing` (new publishes are
//!   dropped past it), so a slow or stopped Redis is a slow consumer with a
//!   bound of its own.
//! - Input: a reply or push is at most 512 MiB (a bulk), 1M elements and 8
//!   levels deep (see [`crate::redis::resp`]); when the broker leaves more
//!   than [`MAX_INCOMING`] messages in `incoming`, the subscriber
//!   connections stop being read (TCP pushes back, and Redis applies its own
//!   pub/sub output limit) until it has drained them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, error, info, warn};

use crate::conn::{Admission, CloseReason, ConnId, Limits, Links, PeerIdentity, Table};
use crate::reactor::Conn;
use crate::reactor::service::Service;
use crate::redis::link::{Backoff, Event, Link, LinkError, Role, Sent};
use crate::redis::resp::Command;
use crate::redis::slots::SlotMap;

/// The default bound on bytes queued or unanswered towards Redis, per
/// command connection.
pub(crate) const DEFAULT_MAX_OUTGOING: usize = 64 << 20;
/// Messages left in `incoming` above which the subscriber connections are
/// no longer read.
pub(crate) const MAX_INCOMING: usize = 1 << 16;
/// The shortest time between two `CLUSTER SLOTS` refreshes.
pub(crate) const REFRESH_MIN: Duration = Duration::from_millis(100);
/// How often a cluster engine that is not up asks `CLUSTER SLOTS` of the
/// masters it can reach (a failover promotes a replica at an address the
/// old map does not name).
pub(crate) const REFRESH_DOWN: Duration = Duration::from_secs(1);

/// How to reach the engine.
#[derive(Clone)]
pub(crate) struct EngineConfig {
    /// `redis://[[USER]:PASSWORD@]HOST[:PORT]`, resolved once at start
    /// ([`parse_url`]).
    pub(crate) url: String,
    /// Bytes queued or unanswered towards Redis (per command connection)
    /// before publishes are dropped.
    pub(crate) max_outgoing: usize,
    /// For a `rediss://` URL: how Redis's certificates are verified (and
    /// the client certificate, when Redis asks for one).
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("url", &redact_url(&self.url))
            .field("max_outgoing", &self.max_outgoing)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl EngineConfig {
    /// `url` with the default bound.
    pub(crate) fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_outgoing: DEFAULT_MAX_OUTGOING,
            tls: None,
        }
    }
}

/// Who the engine says it is to Redis: `AUTH [user] password` on every
/// connection before anything else (Redis 6 ACL users, or `requirepass`
/// without a user). The password is never logged or shown.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) user: Option<String>,
    pub(crate) password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// What a `--cluster` URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The first Redis (of a cluster: any of its nodes).
    pub(crate) addr: SocketAddr,
    pub(crate) credentials: Option<Credentials>,
    /// `rediss://`: TLS, every Redis's certificate verified for this name
    /// (the URL's host).
    pub(crate) tls_name: Option<rustls::pki_types::ServerName<'static>>,
}

/// The URL's scheme and the rest: `redis://` or `rediss://` (TLS).
fn scheme(url: &str) -> Option<(bool, &str)> {
    match url.strip_prefix("rediss://") {
        Some(rest) => Some((true, rest)),
        None => url.strip_prefix("redis://").map(|rest| (false, rest)),
    }
}

/// `url` with its password (if any) replaced by `***`, for logs and
/// messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((tls, rest)) = scheme(url) else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let s = if tls { "s" } else { "" };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("redis{s}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// `%XX` escapes of a URL's user or password, decoded (as UTF-8).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The address and credentials of `redis://[[USER]:PASSWORD@]HOST[:PORT][/]`
/// (port 6379 by default; user and password `%`-escaped as in any URL), or
/// of `rediss://...` (TLS), resolved now (this blocks on DNS: call it at
/// start, not on the loop).
///
/// # Errors
///
/// A message naming the URL (its password hidden): not `redis[s]://`, a user
/// without a password, a bad `%` escape, a database or options in it (not
/// supported), no host, a bad port, or a name that does not resolve.
pub(crate) fn parse_url(url: &str) -> Result<Target, String> {
    let shown = redact_url(url);
    let bad = |why: &str| {
        format!("--cluster {shown}: {why} (expected redis[s]://[[USER]:PASSWORD@]HOST[:PORT])")
    };
    let (tls, rest) = scheme(url).ok_or_else(|| bad("not a redis:// or rediss:// URL"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (credentials, rest) = match rest.rsplit_once('@') {
        None => (None, rest),
        Some((userinfo, host)) => {
            let (user, password) = userinfo
                .split_once(':')
                .ok_or_else(|| bad("a user needs a password (USER:PASSWORD@)"))?;
            let user = percent_decode(user).ok_or_else(|| bad("a bad % escape in the user"))?;
            let password =
                percent_decode(password).ok_or_else(|| bad("a bad % escape in the password"))?;
            if password.is_empty() {
                return Err(bad("an empty password"));
            }
            let user = (!user.is_empty()).then_some(user);
            (Some(Credentials { user, password }), host)
        }
    };
    if rest.contains('/') || rest.contains('?') {
        return Err(bad("a database or options are not supported"));
    }
    if rest.is_empty() {
        return Err(bad("no host"));
    }
    // `[::1]:6379`, `host:6379`, `host`, `[::1]`.
    let has_port = match rest.rfind(']') {
        Some(close) => rest.get(close + 1..).is_some_and(|r| r.starts_with(':')),
        None => rest.contains(':'),
    };
    let target = if has_port {
        let (_, port) = rest.rsplit_once(':').ok_or_else(|| bad("bad port"))?;
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad("bad port"));
        }
        rest.to_string()
    } else {
        format!("{rest}:6379")
    };
    let mut addrs = target
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve: {e}")))?;
    let addr = addrs.next().ok_or_else(|| bad("the name has no address"))?;
    let tls_name = match tls {
        false => None,
        true => {
            let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| bad(&format!("not a name to verify a certificate for: {e}")))?;
            Some(name)
        }
    };
    Ok(Target {
        addr,
        credentials,
        tls_name,
    })
}

/// What the broker and the engine exchange, once per loop turn.
#[derive(Debug, Default)]
pub(crate) struct EngineBoard {
    // broker -> engine
    /// Channels wanted: the engine subscribes and unsubscribes the
    /// difference, and subscribes all of them again after a reconnect.
    pub(crate) channels: BTreeSet<String>,
    /// To publish (`PUBLISH`, or `SPUBLISH` when sharded), in order.
    pub(crate) outgoing: VecDeque<(String, Bytes)>,
    /// `SET key value PX ttl`.
    pub(crate) sets: Vec<(String, Bytes, Duration)>,
    // engine -> broker
    /// `(channel, payload)` of the messages received, in arrival order.
    pub(crate) incoming: Vec<(String, Bytes)>,
    /// Connected, and every wanted channel's subscription confirmed (see
    /// the module doc: it stays true as channels are added).
    pub(crate) up: bool,
    /// The engine is a Redis Cluster (`SPUBLISH`/`SSUBSCRIBE` by slot);
    /// known once up.
    pub(crate) sharded: bool,
    /// +1 each time `up` turns true (the broker republishes its state).
    pub(crate) generation: u64,
    /// Publishes and sets dropped (down, over `max_outgoing`, or answered
    /// `-MOVED`/`-ASK`).
    pub(crate) dropped: u64,
    /// Publishes sent.
    pub(crate) published: u64,
    /// Messages received.
    pub(crate) received: u64,
    /// Connection attempts made after a connection was lost or failed.
    pub(crate) reconnects: u64,
    /// Bytes of commands queued or sent and not yet answered, over all
    /// command connections (each bounded by `max_outgoing`).
    pub(crate) outstanding: usize,
}

/// The board both services hold.
pub(crate) type SharedEngineBoard = Arc<Mutex<EngineBoard>>;

/// Whether an error reply to `CLUSTER SLOTS` says "not a cluster" (a
/// single Redis, or a server without the command), rather than "not now"
/// (`NOAUTH`, `LOADING`, `CLUSTERDOWN`...).
fn not_a_cluster(error: &[u8]) -> bool {
    let text = String::from_utf8_lossy(error).to_ascii_lowercase();
    text.contains("cluster support disabled") || text.starts_with("err unknown")
}

/// The board, even if a thread panicked holding it (nothing on it can be
/// half-written in a way that matters more than stopping would).
fn lock(board: &SharedEngineBoard) -> MutexGuard<'_, EngineBoard> {
    board.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One Redis connection: which node, which role, and its protocol.
#[derive(Debug)]
pub(crate) struct Peer {
    node: SocketAddr,
    link: Link,
}

/// One connection the engine keeps to a node (its command or subscriber
/// connection), across reconnects.
#[derive(Debug, Default)]
struct Endpoint {
    conn: Option<ConnId>,
    /// A connect was asked for and not yet reported.
    connecting: bool,
    /// Connected and usable (a command connection: the mode is known).
    ready: bool,
    /// Not before then (after a failure).
    retry_at: Option<Instant>,
    backoff: Backoff,
}

/// A Redis node (the server, or one cluster master).
#[derive(Debug, Default)]
struct Node {
    command: Endpoint,
    subscriber: Endpoint,
}

impl Node {
    fn endpoint(&mut self, role: Role) -> &mut Endpoint {
        match role {
            Role::Command => &mut self.command,
            Role::Subscriber => &mut self.subscriber,
        }
    }
}

/// Single Redis or cluster.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// Not known yet: only the first node's command connection.
    Unknown,
    /// One Redis.
    Single,
    /// A Redis Cluster and its slot map.
    Cluster(SlotMap),
}

/// The reactor service that drives the Redis connections.
#[derive(Debug)]
pub(crate) struct EngineService {
    links: Links<Conn, Peer>,
    board: SharedEngineBoard,
    max_outgoing: usize,
    /// The URL's address (`None`: it did not parse; the engine stays down).
    seed: Option<SocketAddr>,
    /// `AUTH` on every connection first, when the URL has a password.
    credentials: Option<Credentials>,
    /// `rediss://`: every connection is TLS, verified for this name.
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    mode: Mode,
    nodes: BTreeMap<SocketAddr, Node>,
    /// Which wanted channels each node serves (subscriber connections).
    routes: BTreeMap<SocketAddr, BTreeSet<String>>,
    wanted: BTreeSet<String>,
    connects: Vec<(u64, SocketAddr)>,
    tags: HashMap<u64, (SocketAddr, Role)>,
    next_tag: u64,
    /// Subscriptions may differ from `routes`.
    subs_dirty: bool,
    /// The slot map is stale: ask `CLUSTER SLOTS`.
    refresh: bool,
    last_refresh: Option<Instant>,
    /// Messages received this turn.
    incoming: Vec<(String, Bytes)>,
    /// Subscriber input is paused (`incoming` not drained).
    paused: bool,
    up: bool,
    generation: u64,
    dropped: u64,
    published: u64,
    received: u64,
    reconnects: u64,
    /// The first unexpected error reply was logged at warn.
    warned_error: bool,
    /// Something changed outside `after_input` (a connect completed, a
    /// connection was lost, a reply came): `after_input` must run this
    /// turn or the next (a connect completes after it in the turn).
    changed: bool,
    stopping: bool,
    /// The latest `now` seen (for `remove`, which has none).
    now: Instant,
    events: Vec<Event>,
    frames: Vec<Bytes>,
}

impl EngineService {
    /// The service, which connects on its first turn. A URL that does not
    /// parse is logged and leaves the engine down for good: check it with
    /// [`parse_url`] at start to refuse to start instead.
    pub(crate) fn new(config: EngineConfig, board: SharedEngineBoard) -> Self {
        let (mut seed, credentials, tls_name) = match parse_url(&config.url) {
            Ok(t) => (Some(t.addr), t.credentials, t.tls_name),
            Err(e) => {
                error!("{e}");
                (None, None, None)
            }
        };
        let tls = match (tls_name, &config.tls) {
            (None, _) => None,
            (Some(name), Some(c)) => Some((Arc::clone(c), name)),
            (Some(_), None) => {
                error!(
                    "--cluster {}: rediss:// needs a CA to verify Redis with",
                    redact_url(&config.url)
                );
                seed = None;
                None
            }
        };
        let max_outgoing = config.max_outgoing.max(1);
        let mut nodes = BTreeMap::new();
        if let Some(seed) = seed {
            nodes.insert(seed, Node::default());
        }
        Self {
            links: Links::new(Limits {
                max_connections: 4096,
                // Our own bound (unanswered bytes) comes first; this one
                // only catches what it cannot see (a subscriber's
                // commands), with room for the queue's bookkeeping.
                max_pending: max_outgoing.saturating_mul(2).saturating_add(1 << 20),
                // Replies are always read: a command connection's output
                // waits for Redis, not for us.
                read_pause: usize::MAX,
                untrusted_read_pause: usize::MAX,
                untrusted_read_window: usize::MAX,
                linger: Duration::from_millis(500),
                drain: Duration::from_secs(1),
            }),
            board,
            max_outgoing,
            seed,
            credentials,
            tls,
            mode: Mode::Unknown,
            nodes,
            routes: BTreeMap::new(),
            wanted: BTreeSet::new(),
            connects: Vec::new(),
            tags: HashMap::new(),
            next_tag: 1,
            subs_dirty: false,
            refresh: false,
            last_refresh: None,
            incoming: Vec::new(),
            paused: false,
            up: false,
            generation: 0,
            dropped: 0,
            published: 0,
            received: 0,
            reconnects: 0,
            warned_error: false,
            // The first turn connects.
            changed: true,
            stopping: false,
            now: Instant::now(),
            events: Vec::new(),
            frames: Vec::new(),
        }
    }

    fn sharded(&self) -> bool {
        matches!(self.mode, Mode::Cluster(_))
    }

    /// The node serving `key`.
    fn route(&self, key: &str) -> Option<SocketAddr> {
        match &self.mode {
            Mode::Unknown => None,
            Mode::Single => self.seed,
            Mode::Cluster(map) => map.master_of(key.as_bytes()),
        }
    }

    /// Recomputes which node serves which wanted channel.
    fn reroute(&mut self) {
        self.routes.clear();
        match &self.mode {
            Mode::Unknown => {}
            Mode::Single => {
                if let Some(seed) = self.seed {
                    self.routes.insert(seed, self.wanted.clone());
                }
            }
            Mode::Cluster(map) => {
                for c in &self.wanted {
                    match map.master_of(c.as_bytes()) {
                        Some(node) => {
                            self.routes.entry(node).or_default().insert(c.clone());
                        }
                        None => debug!("redis cluster: no master owns the slot of {c:?} yet"),
                    }
                }
            }
        }
        self.subs_dirty = true;
    }

    /// Whether the mode needs this connection.
    fn needs(&self, node: SocketAddr, role: Role) -> bool {
        match (&self.mode, role) {
            (Mode::Unknown, Role::Command) => Some(node) == self.seed,
            (Mode::Unknown, Role::Subscriber) => false,
            (Mode::Single, _) => Some(node) == self.seed,
            (Mode::Cluster(map), Role::Command) => map.masters().contains(&node),
            (Mode::Cluster(_), Role::Subscriber) => self.routes.contains_key(&node),
        }
    }

    /// A new mode (from a `CLUSTER SLOTS` reply).
    fn set_mode(&mut self, mode: Mode) {
        if mode == self.mode {
            return;
        }
        match &mode {
            Mode::Single => info!("redis engine: a single Redis (PUBLISH/SUBSCRIBE)"),
            Mode::Cluster(map) => info!(
                "redis engine: a Redis Cluster of {} masters (SPUBLISH/SSUBSCRIBE by slot)",
                map.masters().len()
            ),
            Mode::Unknown => {}
        }
        let was_sharded = self.sharded();
        self.mode = mode;
        let desired: BTreeSet<SocketAddr> = match &self.mode {
            Mode::Cluster(map) => map.masters().iter().copied().collect(),
            _ => self.seed.into_iter().collect(),
        };
        let gone: Vec<SocketAddr> = self
            .nodes
            .keys()
            .filter(|n| !desired.contains(n))
            .copied()
            .collect();
        for n in gone {
            if let Some(node) = self.nodes.remove(&n) {
                for conn in [node.command.conn, node.subscriber.conn]
                    .into_iter()
                    .flatten()
                {
                    self.links.close(conn, CloseReason::Closed, self.now);
                }
            }
        }
        for n in desired {
            self.nodes.entry(n).or_default();
        }
        if was_sharded != self.sharded() {
            // Subscriptions of the other kind mean nothing now.
            for node in self.nodes.values_mut() {
                if let Some(conn) = node.subscriber.conn.take() {
                    self.links.close(conn, CloseReason::Closed, self.now);
                }
                node.subscriber.ready = false;
            }
        }
        self.reroute();
    }

    /// Opens the connections the mode needs and closes those it does not.
    fn maintain(&mut self, now: Instant) {
        let addrs: Vec<SocketAddr> = self.nodes.keys().copied().collect();
        for addr in addrs {
            for role in [Role::Command, Role::Subscriber] {
                let needed = self.needs(addr, role);
                let stopping = self.stopping;
                let Some(ep) = self.nodes.get_mut(&addr).map(|n| n.endpoint(role)) else {
                    continue;
                };
                if !needed {
                    if let Some(conn) = ep.conn.take() {
                        ep.ready = false;
                        self.links.close(conn, CloseReason::Closed, now);
                    }
                    continue;
                }
                if stopping || ep.conn.is_some() || ep.connecting {
                    continue;
                }
                if ep.retry_at.is_some_and(|t| now < t) {
                    continue;
                }
                if ep.retry_at.take().is_some() {
                    self.reconnects += 1;
                }
                ep.connecting = true;
                let tag = self.next_tag;
                self.next_tag += 1;
                self.tags.insert(tag, (addr, role));
                self.connects.push((tag, addr));
                debug!("redis engine: connecting to {addr} ({role:?})");
            }
        }
    }

    /// A connection of `(node, role)` is gone (or never came): not ready,
    /// retried after the back-off; the engine is down.
    fn lost(&mut self, node: SocketAddr, role: Role, conn: Option<ConnId>, why: &str) {
        let now = self.now;
        self.changed = true;
        let Some(ep) = self.nodes.get_mut(&node).map(|n| n.endpoint(role)) else {
            return;
        };
        if conn.is_some() && ep.conn != conn {
            return; // An older connection of this endpoint.
        }
        ep.conn = None;
        ep.ready = false;
        ep.connecting = false;
        // The map may have changed (a failover): ask the others.
        self.refresh |= matches!(self.mode, Mode::Cluster(_));
        let delay = ep.backoff.next_delay();
        ep.retry_at = Some(now + delay);
        debug!(
            "redis engine: {node} ({role:?}): {why}; retrying in {} ms",
            delay.as_millis()
        );
        if self.up {
            self.up = false;
            warn!("redis engine down: {node} ({role:?}): {why}");
        }
    }

    /// Drops a connection for `why` (a protocol error, a timeout).
    fn fail(&mut self, conn: ConnId, reason: CloseReason, why: &str) {
        let Some(p) = self.links.proto(conn) else {
            return;
        };
        let (node, role) = (p.node, p.link.role());
        self.links.close(conn, reason, self.now);
        self.lost(node, role, Some(conn), why);
    }

    /// Queues frames on a connection (dropping it if it cannot take them).
    fn push_frames(&mut self, conn: ConnId) {
        let mut frames = std::mem::take(&mut self.frames);
        let mut failed = false;
        for f in frames.drain(..) {
            if !failed && self.links.push(conn, f).is_err() {
                failed = true;
            }
        }
        self.frames = frames;
        if failed {
            self.fail(conn, CloseReason::SlowConsumer, "output over its bound");
        }
    }

    /// The ready command connection of `node`.
    fn command_conn(&self, node: SocketAddr) -> Option<ConnId> {
        let n = self.nodes.get(&node)?;
        n.command.ready.then_some(n.command.conn).flatten()
    }

    /// Sends a command to the node serving `key`, if it is ready and the
    /// command fits the bound; counts a drop otherwise.
    fn send_routed(&mut self, key: &str, kind: Sent, command: Command) {
        let conn = self.route(key).and_then(|n| self.command_conn(n));
        let Some(p) = conn.and_then(|c| self.links.proto_mut(c)) else {
            self.dropped += 1;
            return;
        };
        if !p.link.fits(command.len(), self.max_outgoing) {
            self.dropped += 1;
            return;
        }
        p.link.send(kind, command, &mut self.frames);
        if kind == Sent::Publish {
            self.published += 1;
        }
        if let Some(conn) = conn {
            self.push_frames(conn);
        }
    }

    fn publish(&mut self, channel: &str, payload: &Bytes) {
        let verb: &[u8] = if self.sharded() {
            b"SPUBLISH"
        } else {
            b"PUBLISH"
        };
        let mut cmd = Command::new(3);
        cmd.arg(verb).arg(channel.as_bytes()).shared(payload);
        self.send_routed(channel, Sent::Publish, cmd);
    }

    fn set(&mut self, key: &str, value: &Bytes, ttl: Duration) {
        let ms = ttl.as_millis().max(1).to_string();
        let mut cmd = Command::new(5);
        cmd.arg(b"SET")
            .arg(key.as_bytes())
            .shared(value)
            .arg(b"PX")
            .arg(ms.as_bytes());
        self.send_routed(key, Sent::Set, cmd);
    }

    /// Brings each ready subscriber connection's subscriptions to its
    /// node's wanted channels.
    fn resubscribe(&mut self) {
        self.subs_dirty = false;
        let sharded = self.sharded();
        let empty = BTreeSet::new();
        let conns: Vec<(ConnId, SocketAddr)> = self
            .nodes
            .iter()
            .filter_map(|(addr, n)| {
                let s = &n.subscriber;
                s.ready.then_some(s.conn).flatten().map(|c| (c, *addr))
            })
            .collect();
        for (conn, addr) in conns {
            let wanted = self.routes.get(&addr).unwrap_or(&empty);
            if let Some(p) = self.links.proto_mut(conn) {
                p.link.reconcile(wanted, sharded, &mut self.frames);
            }
            self.push_frames(conn);
        }
    }

    /// Asks `CLUSTER SLOTS` again, if due.
    fn maybe_refresh(&mut self, now: Instant) {
        if !self.refresh || self.last_refresh.is_some_and(|t| now < t + REFRESH_MIN) {
            return;
        }
        let conn = self.nodes.values().find_map(|n| {
            let c = n.command.ready.then_some(n.command.conn).flatten()?;
            let p = self.links.proto(c)?;
            (!p.link.awaits(Sent::Slots)).then_some(c)
        });
        let Some(conn) = conn else {
            return;
        };
        self.refresh = false;
        self.last_refresh = Some(now);
        if let Some(p) = self.links.proto_mut(conn) {
            p.link.send(
                Sent::Slots,
                Command::from_args(&[b"CLUSTER", b"SLOTS"]),
                &mut self.frames,
            );
        }
        self.push_frames(conn);
    }

    /// Every needed connection ready and every wanted channel confirmed.
    fn ready_now(&self) -> bool {
        if self.mode == Mode::Unknown {
            return false;
        }
        for (addr, node) in &self.nodes {
            if self.needs(*addr, Role::Command) && !node.command.ready {
                return false;
            }
            if self.needs(*addr, Role::Subscriber) && !node.subscriber.ready {
                return false;
            }
        }
        self.routes.iter().all(|(addr, channels)| {
            self.nodes
                .get(addr)
                .and_then(|n| n.subscriber.conn)
                .and_then(|c| self.links.proto(c))
                .is_some_and(|p| p.link.all_confirmed(channels))
        })
    }

    fn on_event(&mut self, conn: ConnId, node: SocketAddr, event: Event) {
        self.changed = true;
        match event {
            Event::Message { channel, payload } => {
                self.received += 1;
                self.incoming.push((channel, payload));
            }
            Event::Subscribed(_) => {}
            Event::Slots(reply) => {
                let mode = match reply {
                    Err(e) if not_a_cluster(&e) => {
                        debug!(
                            "redis engine: CLUSTER SLOTS: {}",
                            String::from_utf8_lossy(&e)
                        );
                        Mode::Single
                    }
                    Err(e) => {
                        // NOAUTH, LOADING, CLUSTERDOWN...: not an answer
                        // about the mode; try again later.
                        let why = format!("CLUSTER SLOTS: {}", String::from_utf8_lossy(&e));
                        if !self.warned_error {
                            self.warned_error = true;
                            warn!("redis engine: {node}: {why} (further errors at debug)");
                        }
                        self.fail(conn, CloseReason::Closed, &why);
                        return;
                    }
                    Ok(v) => match SlotMap::from_reply(&v, node) {
                        Some(map) if !map.masters().is_empty() => Mode::Cluster(map),
                        _ => {
                            self.fail(
                                conn,
                                CloseReason::BadFrame,
                                "unreadable CLUSTER SLOTS reply",
                            );
                            return;
                        }
                    },
                };
                self.set_mode(mode);
                if let Some(n) = self.nodes.get_mut(&node) {
                    if n.command.conn == Some(conn) {
                        n.command.ready = true;
                    }
                }
            }
            Event::Revoked(channel) => {
                debug!("redis engine: {node} ended the subscription to {channel:?}");
                self.refresh = true;
                self.subs_dirty = true;
            }
            Event::Redirected => {
                self.refresh = true;
                // On a command connection it answered a publish or a set,
                // which is lost.
                let command = self
                    .links
                    .proto(conn)
                    .is_some_and(|p| p.link.role() == Role::Command);
                if command {
                    self.dropped += 1;
                }
            }
            Event::AuthRefused(message) => {
                // Wrong credentials do not mend by themselves, but the
                // operator may fix Redis's: said at warn (the first error
                // reply is; later ones at debug), and retried with the
                // back-off like any lost connection.
                let why = format!("AUTH refused: {}", String::from_utf8_lossy(&message));
                if !self.warned_error {
                    self.warned_error = true;
                    warn!("redis engine: {node}: {why} (further errors at debug)");
                }
                self.fail(conn, CloseReason::Closed, &why);
            }
            Event::Error { sent, message } => {
                let text = String::from_utf8_lossy(&message);
                if self.warned_error {
                    debug!("redis engine: {node}: {sent:?}: {text}");
                } else {
                    self.warned_error = true;
                    warn!("redis engine: {node}: {sent:?}: {text} (further errors at debug)");
                }
            }
        }
    }

    fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        let subs: Vec<ConnId> = self
            .nodes
            .values()
            .filter_map(|n| n.subscriber.conn)
            .collect();
        for conn in subs {
            self.links.set_paused(conn, paused);
        }
    }
}

impl Service for EngineService {
    fn links(&mut self) -> &mut dyn Table<Conn> {
        &mut self.links
    }
    fn links_ref(&self) -> &dyn Table<Conn> {
        &self.links
    }
    fn accept(&mut self, io: Conn, peer: SocketAddr, now: Instant) -> Admission<Conn> {
        self.now = now;
        let proto = Peer {
            node: peer,
            link: Link::new(Role::Command, now),
        };
        let admission = self.links.accept(io, peer, proto, now);
        if let Admission::Open(id) = &admission {
            self.links.set_trusted(*id);
        }
        admission
    }
    fn take_connects(&mut self, into: &mut Vec<(u64, SocketAddr)>) {
        into.append(&mut self.connects);
    }
    fn connect_transport(&mut self, _tag: u64) -> std::io::Result<crate::transport::Transport> {
        use crate::transport::Transport;
        match &self.tls {
            None => Ok(Transport::Plain),
            Some((config, name)) => {
                let session = crate::tls::TlsSession::new_client(Arc::clone(config), name.clone())
                    .map_err(std::io::Error::other)?;
                Ok(Transport::Tls(Box::new(session)))
            }
        }
    }
    fn connect_started(&mut self, tag: u64, conn: std::io::Result<ConnId>, now: Instant) {
        self.now = now;
        let Some((node, role)) = self.tags.remove(&tag) else {
            return;
        };
        match conn {
            Ok(conn) => {
                let current = self.nodes.get_mut(&node).map(|n| n.endpoint(role));
                match current {
                    Some(ep) if ep.connecting => {
                        ep.connecting = false;
                        ep.conn = Some(conn);
                        if let Some(p) = self.links.proto_mut(conn) {
                            p.node = node;
                            p.link = Link::new(role, now);
                        }
                    }
                    // No longer wanted (the map changed meanwhile).
                    _ => {
                        self.links.close(conn, CloseReason::Closed, now);
                    }
                }
            }
            Err(e) => {
                if let Some(ep) = self.nodes.get_mut(&node).map(|n| n.endpoint(role)) {
                    ep.connecting = false;
                }
                self.lost(node, role, None, &format!("cannot connect: {e}"));
            }
        }
    }
    fn handle_input(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        self.now = now;
        let mut events = std::mem::take(&mut self.events);
        let mut error = None;
        self.links.input(conn, data, |links, bytes| {
            let Some(p) = links.proto_mut(conn) else {
                return bytes.len();
            };
            match p.link.handle_input(bytes, &mut events) {
                Ok(used) => used,
                Err(e) => {
                    error = Some(e);
                    bytes.len()
                }
            }
        });
        let node = self.links.proto(conn).map(|p| p.node);
        if let Some(node) = node {
            for e in events.drain(..) {
                self.on_event(conn, node, e);
            }
        }
        events.clear();
        self.events = events;
        if let Some(e) = error {
            self.fail(conn, CloseReason::BadFrame, &e.to_string());
        }
    }
    fn handle_eof(&mut self, conn: ConnId, now: Instant) {
        self.now = now;
        if self.links.handle_eof(conn) {
            self.fail(conn, CloseReason::PeerClosed, "Redis closed the connection");
        }
        self.links.set_eof(conn);
    }
    fn handle_secured(&mut self, conn: ConnId, _subject: Option<PeerIdentity>, now: Instant) {
        self.now = now;
        let Some(p) = self.links.proto_mut(conn) else {
            return;
        };
        p.link.connected(now);
        if let Some(c) = &self.credentials {
            p.link
                .authenticate(c.user.as_deref(), &c.password, &mut self.frames);
        }
        let (node, role) = (p.node, p.link.role());
        self.changed = true;
        match role {
            Role::Command => {
                p.link.send(
                    Sent::Slots,
                    Command::from_args(&[b"CLUSTER", b"SLOTS"]),
                    &mut self.frames,
                );
                self.push_frames(conn);
            }
            Role::Subscriber => {
                self.push_frames(conn);
                if let Some(n) = self.nodes.get_mut(&node) {
                    if n.subscriber.conn == Some(conn) {
                        n.subscriber.ready = true;
                        self.subs_dirty = true;
                    }
                }
                if self.paused {
                    self.links.set_paused(conn, true);
                }
            }
        }
        debug!("redis engine: connected to {node} ({role:?})");
    }
    fn resume(&mut self, _conn: ConnId, _now: Instant) {}
    fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        for conn in self.links.ids() {
            if self.links.is_closing(conn) {
                continue;
            }
            let Some(p) = self.links.proto_mut(conn) else {
                continue;
            };
            match p.link.handle_timeout(now, &mut self.frames) {
                Ok(()) => self.push_frames(conn),
                Err(e @ LinkError::Timeout) => {
                    self.frames.clear();
                    self.fail(conn, CloseReason::PingTimeout, &e.to_string());
                }
                Err(e) => {
                    self.frames.clear();
                    self.fail(conn, CloseReason::BadFrame, &e.to_string());
                }
            }
        }
        self.maintain(now);
        self.links.handle_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        let links = self
            .links
            .iter()
            .filter(|(_, l)| !l.is_closing())
            .filter_map(|(_, l)| l.proto.link.poll_timeout());
        let retries = self.nodes.values().flat_map(|n| {
            [&n.command, &n.subscriber]
                .into_iter()
                .filter(|e| e.conn.is_none() && !e.connecting)
                .filter_map(|e| e.retry_at)
        });
        let refresh = if self.refresh {
            self.last_refresh.map(|t| t + REFRESH_MIN)
        } else if !self.up && self.sharded() {
            self.last_refresh.map(|t| t + REFRESH_DOWN)
        } else {
            None
        };
        links
            .chain(retries)
            .chain(refresh)
            .chain(self.links.poll_timeout())
            .min()
    }
    fn remove(&mut self, conn: ConnId, reason: CloseReason) -> Option<Conn> {
        let (io, peer, reason) = self.links.remove(conn, reason)?;
        self.lost(peer.node, peer.link.role(), Some(conn), &reason.to_string());
        Some(io)
    }
    fn shutdown(&mut self, now: Instant) {
        self.now = now;
        self.stopping = true;
        self.up = false;
        self.links.shutdown(None, now);
    }
    fn has_events(&self) -> bool {
        if self.changed {
            return true;
        }
        let b = lock(&self.board);
        !b.outgoing.is_empty() || !b.sets.is_empty() || b.channels != self.wanted
    }
    fn after_input(&mut self, now: Instant) -> bool {
        self.now = now;
        self.changed = false;
        let board = Arc::clone(&self.board);
        let mut b = lock(&board);
        if self.paused && b.incoming.is_empty() {
            self.set_paused(false);
        }
        b.incoming.append(&mut self.incoming);
        if !self.paused && b.incoming.len() > MAX_INCOMING {
            debug!(
                "redis engine: {} messages not taken; pausing",
                b.incoming.len()
            );
            self.set_paused(true);
        }
        if b.channels != self.wanted {
            self.wanted.clone_from(&b.channels);
            self.reroute();
        }
        let outgoing = std::mem::take(&mut b.outgoing);
        for (channel, payload) in &outgoing {
            self.publish(channel, payload);
        }
        // Hand the (now empty) deque back to keep its allocation.
        let mut outgoing = outgoing;
        outgoing.clear();
        if b.outgoing.is_empty() {
            b.outgoing = outgoing;
        }
        for (key, value, ttl) in std::mem::take(&mut b.sets) {
            self.set(&key, &value, ttl);
        }
        self.maintain(now);
        if self.subs_dirty {
            self.resubscribe();
        }
        if !self.up && self.sharded() && self.last_refresh.is_none_or(|t| now >= t + REFRESH_DOWN) {
            self.refresh = true;
        }
        self.maybe_refresh(now);
        if !self.up && !self.stopping && self.ready_now() {
            self.up = true;
            self.generation += 1;
            for n in self.nodes.values_mut() {
                n.command.backoff.reset();
                n.subscriber.backoff.reset();
            }
            info!(
                "redis engine up ({}, generation {})",
                if self.sharded() {
                    "cluster"
                } else {
                    "single Redis"
                },
                self.generation
            );
        }
        b.up = self.up;
        b.sharded = self.sharded();
        b.generation = self.generation;
        b.dropped = self.dropped;
        b.published = self.published;
        b.received = self.received;
        b.reconnects = self.reconnects;
        b.outstanding = self
            .links
            .iter()
            .filter(|(_, l)| l.proto.link.role() == Role::Command)
            .map(|(_, l)| l.proto.link.unacked())
            .sum();
        false
    }
    fn handle_control(&mut self, _message: Box<dyn std::any::Any + Send>, _now: Instant) -> bool {
        // A wake-up: the board has work (the broker on another thread, in
        // tests); `after_input` runs this turn.
        false
    }
}

#[cfg(test)]
mod tests;
