//! Building and running a server: configuration, start errors, and the
//! cross-thread handle.
//!
//! ```no_run
//! use switchboard::{Server, ServerConfig};
//!
//! let mut config = ServerConfig::default();
//! config.groups.push((1, "general".into()));
//! let server = Server::bind(config, ()).expect("listening");
//! let handle = server.handle();
//! std::thread::spawn(move || {
//!     // ... later, from any thread:
//!     let _ = handle.publish(&[1], b"hello from the host program");
//!     handle.stop();
//! });
//! server.run().expect("clean stop");
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::{fmt, io};

use log::info;
use mio::{Poll, Waker};

use crate::auth::{AuthPool, AuthVerdict, Authenticator};
use crate::broker::Sessions;
use crate::broker::{AuthMode, Broker, BrokerConfig, ClusterStatus, Note, SERVER_USER};
use crate::bus::{self, EngineLink, LoopPeers, PeerLoop};
use crate::conn::{Admission, CloseReason, ConnId, PeerIdentity, Table};
use crate::engine::{EngineConfig, EngineService, SharedEngineBoard};
use crate::handler::{Context, Handler};
use crate::handler::{HandlerAuthz, dispatch};
use crate::metrics::{MetricsService, Snapshot};
use crate::probe::{ProbeService, SharedBoard};
use crate::proto::GroupId;
use crate::proto::frame::MIN_MAX_PAYLOAD;
use crate::reactor::service::{DatagramService, Service};
use crate::reactor::{self, Conn, Control, Listener, Reactor};
use crate::transport::WsConfig;

/// Everything a server needs to start.
#[derive(Clone)]
pub struct ServerConfig {
    /// Plain TCP listeners (default `127.0.0.1:7420`).
    pub listen: Vec<SocketAddr>,
    /// TLS listeners (default none; `switchboard serve` uses `127.0.0.1:7421`).
    pub tls_listen: Vec<SocketAddr>,
    /// TLS settings for the TLS listeners (see [`crate::tls::server_config`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Broker limits, timeouts and auth mode.
    pub broker: BrokerConfig,
    /// Groups registered at start-up.
    pub groups: Vec<(GroupId, String)>,
    /// Checks passwords when `broker.auth` is [`AuthMode::Password`].
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Threads that check passwords (default 2).
    pub auth_threads: usize,
    /// Where to serve `GET /metrics` (Prometheus text; default none).
    pub metrics_listen: Option<SocketAddr>,
    /// WebSocket listeners, which also serve the chat page on `GET /`
    /// (default none; `switchboard serve` uses `127.0.0.1:7422`).
    pub ws_listen: Vec<SocketAddr>,
    /// WebSocket-over-TLS listeners, with [`ServerConfig::tls`] (default
    /// none; `switchboard serve` uses `127.0.0.1:7423`).
    pub wss_listen: Vec<SocketAddr>,
    /// Poll loops, one a thread (default 1: no thread, queue or atomic
    /// more than one loop needs). With more, the first loop accepts and
    /// hands connections round-robin to all; see [`Server::bind_threads`].
    pub threads: usize,
    /// Join a cluster through Redis at this URL
    /// (`redis://[[USER]:PASSWORD@]HOST[:PORT]`, or `rediss://...` over
    /// TLS, see [`ServerConfig::cluster_tls`]); `None` (the default): no
    /// cluster. The node's name is [`BrokerConfig::node`].
    pub cluster: Option<String>,
    /// For a `rediss://` cluster URL: how every Redis's certificate is
    /// verified (for the URL's host name), and the client certificate when
    /// Redis asks for one (its `tls-auth-clients`); the client library's
    /// `ClientTls::rustls_config` builds one. Needed with `rediss://`;
    /// `None` by default.
    pub cluster_tls: Option<Arc<rustls::ClientConfig>>,
    /// How long a silent node is remembered by the others (default 15 s;
    /// each node beats every third of it).
    pub cluster_expiry: std::time::Duration,
    /// Which loop of the server this is (set by the server for each loop).
    #[doc(hidden)]
    pub loop_index: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 7420))],
            tls_listen: Vec::new(),
            tls: None,
            broker: BrokerConfig::default(),
            groups: Vec::new(),
            authenticator: None,
            auth_threads: 2,
            metrics_listen: None,
            ws_listen: Vec::new(),
            wss_listen: Vec::new(),
            threads: 1,
            cluster: None,
            cluster_expiry: std::time::Duration::from_secs(15),
            cluster_tls: None,
            loop_index: 0,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("tls_listen", &self.tls_listen)
            .field("ws_listen", &self.ws_listen)
            .field("wss_listen", &self.wss_listen)
            .field("tls", &self.tls.is_some())
            .field("broker", &self.broker)
            .field("groups", &self.groups)
            .field("authenticator", &self.authenticator.is_some())
            .field("threads", &self.threads)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// Why a server could not start. Each displays as one line naming the
/// address or setting at fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not be bound.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A setting is out of range or settings contradict each other.
    Config(String),
    /// The poll loop or a worker thread could not be created.
    Io(io::Error),
    /// An outgoing connection could not be started.
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Self::Config(why) => f.write_str(why),
            Self::Io(e) => write!(f, "cannot start the poll loop: {e}"),
            Self::Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Bind { source, .. } | Self::Io(source) | Self::Connect { source, .. } => {
                Some(source)
            }
            Self::Config(_) => None,
        }
    }
}

/// A message from another thread to a broker service (sent boxed, as
/// [`Control::Service`]).
pub(crate) enum BrokerControl {
    /// A password verdict from the pool.
    Auth(AuthVerdict),
    /// A closure from [`ServerHandle::call`].
    Call(Box<dyn FnOnce(&mut Context<'_>) + Send>),
    /// From another loop of the process (`--threads`): notes, and their
    /// cost against this loop's backlog.
    Hand(bus::Hand),
}

/// A bound server, ready to [`run`](Server::run): a loop hosting one broker
/// (an [`EventLoop`](crate::EventLoop) hosts several services; a `Server` keeps the broker's
/// concrete type, so it is `Send` when its handler is).
pub struct Server<H: Handler = ()> {
    reactor: Reactor<Hosted<H>>,
    /// The other loops (`threads` > 1), each ready to run on a thread.
    others: Vec<LoopRunner>,
    local_addrs: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    handle: ServerHandle,
    /// The node's name (`HELLO`'s `node=`).
    node: String,
}

/// Runs one more loop to its end (on a thread of its own).
type LoopRunner = Box<dyn FnOnce() -> io::Result<()> + Send>;

impl<H: Handler> fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs)
            .finish()
    }
}

impl<H: Handler + 'static> Server<H> {
    /// Binds every listener and prepares the loop. Logs `tcp listening on ADDR`
    /// for each listener.
    ///
    /// # Errors
    ///
    /// [`StartError`] naming the address or setting that stopped it.
    pub fn bind(config: ServerConfig, handler: H) -> Result<Self, StartError> {
        if config.threads > 1 {
            return Err(StartError::Config(format!(
                "{} threads need one handler each: Server::bind_threads",
                config.threads
            )));
        }
        let mut handler = Some(handler);
        Self::bind_loops(config, &mut |_| handler.take(), |_| {
            unreachable!("one loop runs on the caller's thread")
        })
    }

    /// Binds every listener and prepares the loops; with
    /// [`ServerConfig::threads`] loops, `make_handler(i)` makes loop `i`'s
    /// handler. The first loop accepts every connection and hands them
    /// round-robin to all loops; each loop is today's single-threaded loop
    /// with its own connections, timers and broker, and the brokers tell
    /// each other what protocol.md section 11 needs (publishes, messages,
    /// presence, requests, the directory) through bounded in-process
    /// queues. [`Server::run`] runs loop 0 on the calling thread and the
    /// others on threads of their own; the handle's [`ServerHandle::stop`]
    /// stops them all.
    ///
    /// # Errors
    ///
    /// [`StartError`] naming the address or setting that stopped it.
    pub fn bind_threads(
        config: ServerConfig,
        mut make_handler: impl FnMut(usize) -> H,
    ) -> Result<Self, StartError>
    where
        H: Send,
    {
        Self::bind_loops(config, &mut |i| Some(make_handler(i)), |mut r| {
            Box::new(move || r.run()) as LoopRunner
        })
    }

    fn bind_loops(
        config: ServerConfig,
        make_handler: &mut dyn FnMut(usize) -> Option<H>,
        runner: impl Fn(Reactor<Hosted<H>>) -> LoopRunner,
    ) -> Result<Self, StartError> {
        let threads = config.threads.max(1);
        if threads > 64 {
            return Err(StartError::Config(format!(
                "at most 64 threads, not {threads}"
            )));
        }
        // The connection limit is the server's: the loops count together;
        // so are the directory's probes.
        let admitted = Arc::new(AtomicUsize::new(0));
        let probes = Arc::new(AtomicUsize::new(0));
        let mut loops = Vec::with_capacity(threads);
        for _ in 0..threads {
            let poll = Poll::new().map_err(StartError::Io)?;
            let waker = reactor::waker(&poll).map_err(StartError::Io)?;
            let (tx, rx) = mpsc::channel();
            loops.push((Reactor::new(poll, rx), tx, waker));
        }
        let mut config = config;
        let mut names: Vec<Arc<str>> = Vec::new();
        let backlogs: Vec<Arc<AtomicUsize>> = (0..threads)
            .map(|_| Arc::new(AtomicUsize::new(0)))
            .collect();
        let mut local_addrs = Vec::new();
        let mut metrics_addr = None;
        let mut checks: Option<crate::broker::SharedChecks> = None;
        // With a metrics listener (on the first loop), every other loop
        // fills a snapshot of its own, which the listener adds up.
        let loop_snapshots: Vec<Snapshot> = match config.metrics_listen {
            Some(_) => (1..threads).map(|_| Snapshot::default()).collect(),
            None => Vec::new(),
        };
        for (i, (reactor, tx, waker)) in loops.iter_mut().enumerate() {
            let mut c = config.clone();
            if i > 0 {
                // Only the first loop listens.
                c.listen.clear();
                c.tls_listen.clear();
                c.ws_listen.clear();
                c.wss_listen.clear();
                c.metrics_listen = None;
            }
            c.loop_index = i;
            let handler = make_handler(i)
                .ok_or_else(|| StartError::Config("no handler for a loop".into()))?;
            let mut built = build_broker(c, handler, 0, tx, waker)?;
            if i == 0 {
                // Named by the first loop's listener when no name was given.
                config
                    .broker
                    .node
                    .clone_from(&built.service.broker.config().node);
                names = (0..threads)
                    .map(|j| Arc::from(bus::member_name(&config.broker.node, threads, j)))
                    .collect();
            }
            if threads > 1 {
                built.service.links.share_admissions(Arc::clone(&admitted));
                built.service.broker.share_probe_count(Arc::clone(&probes));
                match &checks {
                    None => checks = Some(built.service.broker.password_checks()),
                    Some(c) => built.service.broker.share_password_checks(c.clone()),
                }
            }
            if threads > 1 {
                if config.cluster.is_none() {
                    built.service.broker.join_cluster(&names[i], None);
                }
                if let Some(e) = built.service.engine.as_mut() {
                    e.set_local(names.clone());
                }
                for (j, name) in names.iter().enumerate() {
                    if j != i {
                        built.service.broker.add_member(name);
                    }
                }
                built.service.loops = Some(Box::new(LoopPeers {
                    me: i,
                    names: names.clone(),
                    backlog: Arc::clone(&backlogs[i]),
                    dropped: 0,
                    peers: Vec::new(),
                }));
            }
            if i == 0 {
                metrics_addr = built.metrics.as_ref().map(|m| m.1);
                if let Some(m) = built.metrics.as_mut() {
                    for s in &loop_snapshots {
                        m.2.add_loop(Arc::clone(s));
                    }
                }
            } else if let Some(s) = loop_snapshots.get(i - 1) {
                built.service.metrics = Some(Arc::clone(s));
                built.service.refresh_metrics(std::time::Instant::now());
            }
            let addrs = install_broker(reactor, built, |s| s)?;
            if i == 0 {
                local_addrs = addrs;
            }
        }
        // Each loop reaches every other.
        let reach: Vec<(Sender<Control>, Arc<Waker>)> = loops
            .iter()
            .map(|(_, tx, w)| (tx.clone(), Arc::clone(w)))
            .collect();
        for (i, (reactor, _, _)) in loops.iter_mut().enumerate() {
            if threads == 1 {
                break;
            }
            if let Some(Hosted::Broker(b)) = reactor.service_mut(0) {
                if let Some(l) = b.loops.as_mut() {
                    l.peers = (0..threads)
                        .map(|j| {
                            (j != i).then(|| PeerLoop {
                                tx: reach[j].0.clone(),
                                waker: Arc::clone(&reach[j].1),
                                backlog: Arc::clone(&backlogs[j]),
                            })
                        })
                        .collect();
                }
            }
            if i == 0 {
                reactor.spread_to(0, reach[1..].to_vec());
            }
        }
        let mut loops = loops.into_iter();
        let Some((reactor, tx, waker)) = loops.next() else {
            return Err(StartError::Config("no loop".into()));
        };
        let others: Vec<(Sender<Control>, Arc<Waker>)> = reach[1..].to_vec();
        let others_run = loops.map(|(r, _, _)| runner(r)).collect();
        Ok(Self {
            reactor,
            others: others_run,
            local_addrs,
            metrics_addr,
            node: config.broker.node.clone(),
            handle: ServerHandle {
                tx,
                waker,
                service: 0,
                others: others.into(),
            },
        })
    }

    /// The addresses the listeners are bound to (useful with port 0): the
    /// plain ones first, then the TLS ones, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// This server's name (`--node`, or the host name and the plain
    /// listener's port), as `HELLO` shows it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The address of the metrics listener, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// A cloneable, `Send` handle for other threads.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Runs the loop on this thread until stopped (by a [`ServerHandle`], a
    /// handler, or a signal the host program turns into
    /// [`ServerHandle::stop`]) and every connection is closed.
    ///
    /// # Errors
    ///
    /// An error from `poll` itself; connection errors never end the loop.
    pub fn run(mut self) -> io::Result<()> {
        let mut threads = Vec::new();
        for (i, run) in self.others.drain(..).enumerate() {
            let spawned = std::thread::Builder::new()
                .name(format!("switchboard-loop-{}", i + 1))
                .spawn(run);
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    self.handle.stop();
                    return Err(e);
                }
            }
        }
        let first = self.reactor.run();
        // Loop 0 ended (stopped, or failed): the others follow.
        self.handle.stop();
        let mut result = first;
        for t in threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = result.and(Err(e)),
                Err(_) => result = result.and(Err(io::Error::other("a loop panicked"))),
            }
        }
        result
    }
}

/// Adds a built broker to `reactor` (wrapped by `wrap` into its service
/// type) with its listeners, and its metrics service right after it; logs
/// `tcp listening on ADDR` for each listener. Returns the broker's
/// addresses.
pub(crate) fn install_broker<H: Handler + 'static, S: Service, D: DatagramService>(
    reactor: &mut Reactor<S, D>,
    built: BuiltBroker<H>,
    wrap: impl Fn(Hosted<H>) -> S,
) -> Result<Vec<SocketAddr>, StartError> {
    let too_many = || StartError::Config("the loop hosts too many services".into());
    reactor
        .add_service(wrap(Hosted::Broker(built.service)))
        .ok_or_else(too_many)?;
    let metrics = match built.metrics {
        Some((listener, addr, service)) => {
            reactor
                .add_service(wrap(Hosted::Metrics(service)))
                .ok_or_else(too_many)?;
            Some((listener, addr))
        }
        None => None,
    };
    for (l, addr) in built.listeners.into_iter().zip(&built.addrs) {
        let kind = match (l.tls.is_some(), l.ws.is_some()) {
            (false, false) => "tcp",
            (true, false) => "tls",
            (false, true) => "ws",
            (true, true) => "wss",
        };
        reactor.add_listener(l).map_err(StartError::Io)?;
        info!("{kind} listening on {addr}");
    }
    reactor
        .add_service(wrap(Hosted::Probes(built.probes)))
        .ok_or_else(too_many)?;
    if let Some(engine) = built.engine {
        reactor
            .add_service(wrap(Hosted::Engine(engine)))
            .ok_or_else(too_many)?;
    }
    if let Some((l, addr)) = metrics {
        reactor.add_listener(l).map_err(StartError::Io)?;
        info!("metrics listening on {addr} (GET /metrics)");
    }
    Ok(built.addrs)
}

/// A broker ready to join a loop: its bound listeners, their addresses, the
/// service, and its metrics listener and service (which must join the loop
/// right after it: the listener names the next service index).
pub(crate) struct BuiltBroker<H> {
    listeners: Vec<Listener>,
    addrs: Vec<SocketAddr>,
    service: BrokerService<H>,
    pub(crate) metrics: Option<(Listener, SocketAddr, MetricsService)>,
    /// The directory's probes, a service of their own after the broker's
    /// (and the metrics one).
    probes: ProbeService,
    /// The cluster engine, after the probes (`--cluster`).
    engine: Option<EngineService>,
}

/// What a broker brings to a loop: the broker itself and, with
/// `metrics_listen`, its metrics responder. One type, so that a [`Server`]
/// keeps a concrete service type.
// A loop holds one or two of these: the variants' sizes do not matter, and
// the broker is reached without a box on every call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Hosted<H> {
    Broker(BrokerService<H>),
    Metrics(MetricsService),
    Probes(ProbeService),
    /// The cluster engine's connections (`--cluster`).
    Engine(EngineService),
}

/// Calls the same method on whichever service `self` is.
macro_rules! hosted {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Hosted::Broker($s) => $call,
            Hosted::Metrics($s) => $call,
            Hosted::Probes($s) => $call,
            Hosted::Engine($s) => $call,
        }
    };
}

impl<H: Handler> Service for Hosted<H> {
    fn links(&mut self) -> &mut dyn Table<Conn> {
        hosted!(self, s => s.links())
    }
    fn links_ref(&self) -> &dyn Table<Conn> {
        hosted!(self, s => s.links_ref())
    }
    fn accept(&mut self, io: Conn, peer: SocketAddr, now: std::time::Instant) -> Admission<Conn> {
        hosted!(self, s => s.accept(io, peer, now))
    }
    fn handle_input(&mut self, conn: ConnId, data: &[u8], now: std::time::Instant) {
        hosted!(self, s => s.handle_input(conn, data, now));
    }
    fn handle_eof(&mut self, conn: ConnId, now: std::time::Instant) {
        hosted!(self, s => s.handle_eof(conn, now));
    }
    fn handle_secured(
        &mut self,
        conn: ConnId,
        subject: Option<PeerIdentity>,
        now: std::time::Instant,
    ) {
        hosted!(self, s => s.handle_secured(conn, subject, now));
    }
    fn resume(&mut self, conn: ConnId, now: std::time::Instant) {
        hosted!(self, s => s.resume(conn, now));
    }
    fn handle_timeout(&mut self, now: std::time::Instant) {
        hosted!(self, s => s.handle_timeout(now));
    }
    fn poll_timeout(&self) -> Option<std::time::Instant> {
        hosted!(self, s => s.poll_timeout())
    }
    fn remove(&mut self, conn: ConnId, reason: CloseReason) -> Option<Conn> {
        hosted!(self, s => s.remove(conn, reason))
    }
    fn shutdown(&mut self, now: std::time::Instant) {
        hosted!(self, s => s.shutdown(now));
    }
    fn has_events(&self) -> bool {
        hosted!(self, s => s.has_events())
    }
    fn after_input(&mut self, now: std::time::Instant) -> bool {
        hosted!(self, s => s.after_input(now))
    }
    fn handle_control(
        &mut self,
        message: Box<dyn std::any::Any + Send>,
        now: std::time::Instant,
    ) -> bool {
        hosted!(self, s => s.handle_control(message, now))
    }
    fn take_connects(&mut self, into: &mut Vec<(u64, SocketAddr)>) {
        hosted!(self, s => s.take_connects(into));
    }
    fn connect_transport(&mut self, tag: u64) -> io::Result<crate::transport::Transport> {
        hosted!(self, s => s.connect_transport(tag))
    }
    fn connect_started(&mut self, tag: u64, conn: io::Result<ConnId>, now: std::time::Instant) {
        hosted!(self, s => s.connect_started(tag, conn, now));
    }
}

/// Checks a server configuration, binds its listeners and builds its broker
/// service for the loop that will host it as service `index`.
pub(crate) fn build_broker<H: Handler + 'static>(
    mut config: ServerConfig,
    handler: H,
    index: usize,
    tx: &Sender<Control>,
    waker: &Arc<Waker>,
) -> Result<BuiltBroker<H>, StartError> {
    let bc = &config.broker;
    if bc.max_payload < MIN_MAX_PAYLOAD {
        return Err(StartError::Config(format!(
            "max_payload must be at least {MIN_MAX_PAYLOAD} bytes, not {}",
            bc.max_payload
        )));
    }
    if bc.max_connections == 0 {
        return Err(StartError::Config(
            "max_connections must be at least 1".into(),
        ));
    }
    if bc.auth == AuthMode::Password && config.authenticator.is_none() {
        return Err(StartError::Config(
            "auth password needs a password file (--passwd FILE)".into(),
        ));
    }
    if !(config.tls_listen.is_empty() && config.wss_listen.is_empty()) && config.tls.is_none() {
        return Err(StartError::Config(
            "a TLS listener needs TLS settings (a certificate and key)".into(),
        ));
    }
    let mut listeners = Vec::new();
    let mut local_addrs = Vec::new();
    let ws_config = Arc::new(ws_config(bc));
    let plain = config.listen.iter().map(|a| (*a, None, None));
    let tls = (config.tls_listen.iter()).map(|a| (*a, config.tls.clone(), None));
    let ws = (config.ws_listen.iter()).map(|a| (*a, None, Some(Arc::clone(&ws_config))));
    let wss =
        (config.wss_listen.iter()).map(|a| (*a, config.tls.clone(), Some(Arc::clone(&ws_config))));
    for (addr, tls, ws) in plain.chain(tls).chain(ws).chain(wss) {
        let socket = crate::reactor::bind_listener(addr)
            .map_err(|source| StartError::Bind { addr, source })?;
        let local = socket
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        listeners.push(Listener {
            socket,
            tls,
            ws,
            service: index,
        });
        local_addrs.push(local);
    }
    if config.broker.node.is_empty() {
        config.broker.node = default_node_name(local_addrs.first().map(SocketAddr::port));
    }
    let mut broker = Broker::new(config.broker.clone());
    broker.set_process_stats(process_stats);
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let socket = crate::reactor::bind_listener(addr)
                .map_err(|source| StartError::Bind { addr, source })?;
            let local = socket
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            let listener = Listener {
                socket,
                tls: None,
                ws: None,
                service: index + 1,
            };
            let service = MetricsService::new(Snapshot::default(), Some(process_stats));
            Some((listener, local, service))
        }
        None => None,
    };
    for (id, name) in &config.groups {
        if !broker.register_group(*id, name) {
            return Err(StartError::Config(format!("invalid group number {id}")));
        }
    }
    let auth = match (&config.authenticator, config.broker.auth) {
        (Some(a), AuthMode::Password) => {
            let w = Arc::clone(waker);
            let tx = std::sync::Mutex::new(tx.clone());
            let deliver = move |v: AuthVerdict| {
                if let Ok(tx) = tx.lock() {
                    let _ = tx.send(Control::Service(index, Box::new(BrokerControl::Auth(v))));
                }
                let _ = w.wake();
            };
            Some(
                AuthPool::start(Arc::clone(a), config.auth_threads, deliver)
                    .map_err(StartError::Io)?,
            )
        }
        _ => None,
    };
    let mut service = BrokerService::new(broker, handler, auth);
    service.metrics = metrics.as_ref().map(|(_, _, m)| m.snapshot());
    // A scrape before the first turn's refresh sees the figures too.
    service.refresh_metrics(std::time::Instant::now());
    let probes = ProbeService::new(Arc::clone(&service.probes));
    let engine = match &config.cluster {
        Some(url) => {
            let target = crate::engine::parse_url(url).map_err(StartError::Config)?;
            let tls = match (&target.tls_name, &config.cluster_tls) {
                (None, _) => None,
                (Some(_), Some(t)) => Some(Arc::clone(t)),
                (Some(_), None) => {
                    return Err(StartError::Config(format!(
                        "--cluster {}: rediss:// needs --cluster-ca (the CA Redis's certificate chains to)",
                        crate::engine::redact_url(url)
                    )));
                }
            };
            let member = bus::member_name(
                &config.broker.node,
                config.threads.max(1),
                config.loop_index,
            );
            service
                .broker
                .join_cluster(&member, Some(config.cluster_expiry));
            // The other loops of a process reach the engine through loop 0.
            (config.loop_index == 0).then(|| {
                let board = SharedEngineBoard::default();
                service.engine = Some(Box::new(EngineLink::new(
                    Arc::clone(&board),
                    &member,
                    config.cluster_expiry,
                )));
                let mut engine = EngineConfig::new(url.clone());
                engine.tls = tls;
                EngineService::new(engine, board)
            })
        }
        None => None,
    };
    Ok(BuiltBroker {
        listeners,
        addrs: local_addrs,
        service,
        metrics,
        probes,
        engine,
    })
}

/// A node's name when none is given: the host name and the plain listener's
/// port (cli.md `--node`), e.g. `web-1:7420`.
fn default_node_name(port: Option<u16>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| {
            (1..=50).contains(&h.len())
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
        .unwrap_or_else(|| "switchboard".to_owned());
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

/// The built-in chat page (`src/web/chat.html`), served on `GET /` by the
/// WebSocket listeners.
pub const CHAT_PAGE: &[u8] = include_bytes!("web/chat.html");

/// The WebSocket listeners' settings: messages up to the payload limit plus
/// one frame header (protocol.md section 8), and the chat page.
fn ws_config(bc: &BrokerConfig) -> WsConfig {
    WsConfig {
        max_message: bc
            .max_payload
            .saturating_add(crate::proto::frame::MAX_HEADER_LEN),
        page: Some(WsConfig::page_response(CHAT_PAGE)),
        terminator: Some(b'\n'),
    }
}

/// The broker as a service of the loop: its connection table, the broker,
/// the host's [`Handler`] and the password-check pool.
pub(crate) struct BrokerService<H> {
    links: Sessions<Conn>,
    broker: Broker,
    handler: H,
    auth: Option<AuthPool>,
    /// The figures the metrics service serves, refreshed every turn while
    /// there is a metrics listener.
    metrics: Option<Snapshot>,
    /// Directory probes to run and their verdicts, shared with the probe
    /// service.
    probes: SharedBoard,
    /// The other loops of the process (`threads` > 1, no cluster).
    loops: Option<Box<LoopPeers>>,
    /// The other nodes, through the engine (`--cluster`).
    engine: Option<Box<EngineLink>>,
    /// Clients whose input waits for another loop to catch up.
    held_back: Vec<(ConnId, u32)>,
}

/// Checks a `--cluster` URL: `redis://[[USER]:PASSWORD@]HOST[:PORT]` (the
/// port defaults to 6379; the host is resolved now).
///
/// # Errors
///
/// What is wrong with it, in a sentence (the password hidden).
pub fn check_cluster_url(url: &str) -> Result<(), String> {
    crate::engine::parse_url(url).map(|_| ())
}

/// A `--cluster` URL as it may be shown: its password replaced by `***`.
pub fn redact_cluster_url(url: &str) -> String {
    crate::engine::redact_url(url)
}

impl<H> fmt::Debug for BrokerService<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerService")
            .field("connections", &self.links.len())
            .finish()
    }
}

impl<H: Handler> BrokerService<H> {
    pub(crate) fn new(mut broker: Broker, handler: H, auth: Option<AuthPool>) -> Self {
        broker.set_events_enabled(handler.wants_events());
        Self {
            links: broker.new_table(),
            broker,
            handler,
            auth,
            metrics: None,
            probes: SharedBoard::default(),
            loops: None,
            engine: None,
            held_back: Vec::new(),
        }
    }

    /// Sends this loop's notes where they go: the other loops of the
    /// process, and the other nodes (through the engine this loop holds,
    /// or through loop 0's).
    fn ship(&mut self, notes: Vec<Note>) {
        let wrap = hand_off;
        match (self.loops.as_mut(), self.engine.as_mut()) {
            (Some(l), engine) => {
                let for_nodes = if self.broker.cluster_status() == ClusterStatus::Off {
                    Vec::new()
                } else {
                    l.for_nodes(&notes)
                };
                l.ship(None, &notes, &wrap);
                match engine {
                    Some(e) => ship_to_nodes(e, &self.broker, &self.links, for_nodes),
                    None => l.upstream(for_nodes, &wrap),
                }
            }
            (None, Some(e)) => ship_to_nodes(e, &self.broker, &self.links, notes),
            (None, None) => {}
        }
    }

    /// What another loop of the process handed this one.
    fn take_hand(&mut self, hand: bus::Hand, now: std::time::Instant) {
        match hand {
            bus::Hand::Notes(from, notes) => {
                let name = self.loops.as_ref().and_then(|l| l.names.get(from).cloned());
                if let Some(name) = name {
                    (self.broker).handle_counted_notes(&mut self.links, &name, notes, now);
                }
            }
            bus::Hand::Remote(from, notes) => {
                (self.broker).handle_counted_notes(&mut self.links, &from, notes, now);
            }
            bus::Hand::Upstream(from, notes) => {
                let name = self.loops.as_ref().and_then(|l| l.names.get(from).cloned());
                if let (Some(e), Some(name)) = (self.engine.as_mut(), name) {
                    e.ship(&name, notes, &self.broker.cluster_members(), None);
                }
            }
            bus::Hand::EngineUp(up) => self.broker.set_cluster_up(&self.links, up, now),
        }
        self.settle_notes();
    }

    /// Reads the engine (the loop that holds it) and relays what it brought
    /// to the other loops.
    fn poll_engine(&mut self, now: std::time::Instant) {
        let Some(e) = self.engine.as_mut() else {
            return;
        };
        let relay = e.poll(&mut self.broker, &mut self.links, now, self.loops.is_some());
        let dropped = e.dropped() + self.loops.as_ref().map_or(0, |l| l.dropped);
        self.broker.set_cluster_dropped(dropped);
        let Some(l) = self.loops.as_mut() else {
            return;
        };
        let wrap = hand_off;
        if let Some(up) = relay.up {
            l.engine_up(up, &wrap);
        }
        for (from, notes) in relay.batches {
            l.ship(Some(from), &notes, &wrap);
        }
    }

    /// Gives back to the other loops' bound what this loop has worked
    /// through of their notes.
    fn settle_notes(&mut self) {
        if let (Some(l), None) = (self.loops.as_ref(), self.engine.as_ref()) {
            self.broker.set_cluster_dropped(l.dropped);
        }
        let done = self.broker.take_processed_note_cost();
        if let (Some(l), 1..) = (self.loops.as_ref(), done) {
            l.backlog.fetch_sub(done, Ordering::Relaxed);
        }
    }

    /// Copies the figures for the metrics service, if there is one (not
    /// the process's: reading `/proc` every turn cost about 15% more
    /// server CPU at 2,000 publishes a second to 100 subscribers; the
    /// service reads them when asked).
    fn refresh_metrics(&mut self, now: std::time::Instant) {
        if let Some(snapshot) = &self.metrics {
            if let Ok(mut figures) = snapshot.lock() {
                (self.broker).stats_without_process_into(&self.links, now, &mut figures);
            }
        }
    }

    fn context<'a>(&'a mut self, now: std::time::Instant, stop: &'a mut bool) -> Context<'a> {
        Context {
            broker: &mut self.broker,
            links: &mut self.links,
            now,
            stop,
        }
    }
}

impl<H: Handler> Service for BrokerService<H> {
    fn links(&mut self) -> &mut dyn Table<Conn> {
        &mut self.links
    }
    fn links_ref(&self) -> &dyn Table<Conn> {
        &self.links
    }
    fn accept(&mut self, io: Conn, peer: SocketAddr, now: std::time::Instant) -> Admission<Conn> {
        self.broker.accept(&mut self.links, io, peer, now)
    }
    fn handle_input(&mut self, conn: ConnId, data: &[u8], now: std::time::Instant) {
        let notes_before = self.broker.note_count();
        let authz = &mut HandlerAuthz(&mut self.handler);
        self.broker
            .handle_input_with(&mut self.links, conn, data, now, authz);
        // A client whose input made work for another loop that is far
        // behind waits (the rest of its input kept, its socket no longer
        // read) until that loop catches up; a client that only reads, pings
        // or asks goes on.
        if self.broker.note_count() > notes_before
            && self.loops.as_ref().is_some_and(|l| l.congested())
            && self.links.can_process(conn)
        {
            self.links.set_paused(conn, true);
            if let Some(l) = self.links.get(conn) {
                self.held_back.push((conn, l.generation()));
            }
        }
    }
    fn handle_eof(&mut self, conn: ConnId, now: std::time::Instant) {
        self.broker.handle_eof(&mut self.links, conn, now);
    }
    fn handle_secured(
        &mut self,
        conn: ConnId,
        subject: Option<PeerIdentity>,
        now: std::time::Instant,
    ) {
        let authz = &mut HandlerAuthz(&mut self.handler);
        self.broker
            .handle_secured_with(&mut self.links, conn, subject, now, authz);
    }
    fn resume(&mut self, conn: ConnId, now: std::time::Instant) {
        let authz = &mut HandlerAuthz(&mut self.handler);
        self.broker.resume_with(&mut self.links, conn, now, authz);
    }
    fn handle_timeout(&mut self, now: std::time::Instant) {
        self.poll_engine(now);
        self.broker.handle_timeout(&mut self.links, now);
        if self.broker.has_pending_notes() {
            self.broker.process_notes(&mut self.links, now);
        }
        self.settle_notes();
        if !self.held_back.is_empty() && !self.loops.as_ref().is_some_and(|l| l.congested()) {
            for (conn, generation) in std::mem::take(&mut self.held_back) {
                if self
                    .links
                    .get(conn)
                    .is_some_and(|l| l.generation() == generation)
                {
                    self.links.set_paused(conn, false);
                }
            }
        }
        self.links.handle_timeout(now);
        let results = match self.probes.lock() {
            Ok(mut board) => std::mem::take(&mut board.results),
            Err(_) => Vec::new(),
        };
        let authz = &mut HandlerAuthz(&mut self.handler);
        for (id, ok) in results {
            self.broker
                .handle_probe_result(&mut self.links, id, ok, now, authz);
        }
    }
    fn poll_timeout(&self) -> Option<std::time::Instant> {
        // Clients held back for a loop that is behind: look again soon.
        if !self.held_back.is_empty() {
            return Some(std::time::Instant::now() + std::time::Duration::from_millis(1));
        }
        let protocol = self.broker.poll_timeout(&self.links);
        match (protocol, self.links.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    fn remove(&mut self, conn: ConnId, reason: CloseReason) -> Option<Conn> {
        self.broker.remove(&mut self.links, conn, reason)
    }
    fn shutdown(&mut self, now: std::time::Instant) {
        self.broker.leave_cluster();
        self.broker.shutdown(&mut self.links, now);
    }
    fn has_events(&self) -> bool {
        // Notes for the other loops or nodes made after this turn's
        // `after_input` (input read when a flush resumes a stalled
        // connection) go out next turn, not at the next unrelated wake.
        self.broker.has_events()
            || self.broker.has_notes()
            || self.broker.has_pending_notes()
            || self.engine.as_ref().is_some_and(|e| e.has_news())
            || self.broker.has_probe_requests()
            || self.probes.lock().is_ok_and(|b| !b.results.is_empty())
    }

    /// Hands password checks to the pool, probes to the probe service and
    /// events to the handler.
    fn after_input(&mut self, now: std::time::Instant) -> bool {
        if self.broker.has_probe_requests() {
            let mut requests = Vec::new();
            self.broker.take_probe_requests(&mut requests);
            if let Ok(mut board) = self.probes.lock() {
                board.requests.extend(requests);
            }
        }
        while let Some(req) = self.broker.poll_auth_request() {
            match &self.auth {
                Some(pool) => pool.submit(req),
                None => {
                    self.broker.handle_auth_result(
                        &mut self.links,
                        req.conn,
                        req.ticket,
                        false,
                        now,
                    );
                }
            }
        }
        let mut stop = false;
        while let Some(event) = self.broker.poll_event() {
            let mut ctx = Context {
                broker: &mut self.broker,
                links: &mut self.links,
                now,
                stop: &mut stop,
            };
            dispatch(&mut self.handler, &mut ctx, event);
        }
        if self.broker.has_notes() {
            let notes = self.broker.take_notes();
            self.ship(notes);
        }
        self.refresh_metrics(now);
        stop
    }

    fn handle_control(
        &mut self,
        message: Box<dyn std::any::Any + Send>,
        now: std::time::Instant,
    ) -> bool {
        let Ok(message) = message.downcast::<BrokerControl>() else {
            return false;
        };
        match *message {
            BrokerControl::Auth(AuthVerdict { conn, ticket, ok }) => {
                let authz = &mut HandlerAuthz(&mut self.handler);
                self.broker
                    .handle_auth_result_with(&mut self.links, conn, ticket, ok, now, authz);
                false
            }
            BrokerControl::Call(f) => {
                let mut stop = false;
                f(&mut self.context(now, &mut stop));
                stop
            }
            BrokerControl::Hand(hand) => {
                self.take_hand(hand, now);
                false
            }
        }
    }
}

/// Sends this loop's `notes` to the other nodes through the engine it
/// holds, with its whole state when they beat or say hello.
fn ship_to_nodes<T>(e: &mut EngineLink, broker: &Broker, links: &Sessions<T>, notes: Vec<Note>) {
    let state = (notes.iter())
        .any(|n| matches!(n, Note::Beat | Note::Hello))
        .then(|| broker.cluster_state(links));
    let me = Arc::clone(e.me());
    e.ship(&me, notes, &broker.cluster_members(), state);
}

/// Wraps what one loop hands another in the broker's control message.
fn hand_off(hand: bus::Hand, _cost: usize) -> Box<dyn std::any::Any + Send> {
    Box::new(BrokerControl::Hand(hand))
}

/// Reaches a running server from any thread. Each call queues a request and
/// wakes the loop; it does not wait for the loop to act.
#[derive(Clone)]
pub struct ServerHandle {
    pub(crate) tx: Sender<Control>,
    pub(crate) waker: Arc<Waker>,
    /// The broker's service index in its loop.
    pub(crate) service: usize,
    /// The other loops of the server (`threads` > 1).
    pub(crate) others: Arc<[(Sender<Control>, Arc<Waker>)]>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerHandle")
    }
}

/// The server has stopped; the request was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server has stopped")
    }
}

impl std::error::Error for Stopped {}

impl ServerHandle {
    /// Runs `f` inside the loop with a [`Context`].
    ///
    /// # Errors
    ///
    /// [`Stopped`] if the loop is gone.
    pub fn call(&self, f: impl FnOnce(&mut Context<'_>) + Send + 'static) -> Result<(), Stopped> {
        self.tx
            .send(Control::Service(
                self.service,
                Box::new(BrokerControl::Call(Box::new(f))),
            ))
            .map_err(|_| Stopped)?;
        self.waker.wake().map_err(|_| Stopped)
    }

    /// Publishes as `@server` (errors such as an unknown group are logged).
    ///
    /// # Errors
    ///
    /// [`Stopped`] if the loop is gone.
    pub fn publish(&self, groups: &[GroupId], payload: &[u8]) -> Result<(), Stopped> {
        let groups = groups.to_vec();
        let payload = payload.to_vec();
        self.call(move |ctx| {
            if let Err(e) = ctx.publish(&groups, &payload) {
                log::warn!("publish from {SERVER_USER}: {e}");
            }
        })
    }

    /// Sends to every session of `user` as `@server` (a missing user is logged).
    ///
    /// # Errors
    ///
    /// [`Stopped`] if the loop is gone.
    pub fn send(&self, user: &str, payload: &[u8]) -> Result<(), Stopped> {
        let user = user.to_owned();
        let payload = payload.to_vec();
        self.call(move |ctx| {
            if let Err(e) = ctx.send(&user, &payload) {
                log::warn!("message from {SERVER_USER} to {user}: {e}");
            }
        })
    }

    /// Stops the server gracefully: listeners close, each connection gets
    /// `ERR shutting-down` after what it is owed, and [`Server::run`] returns.
    /// When the broker shares an [`EventLoop`](crate::EventLoop) with other services, this stops
    /// the whole loop.
    pub fn stop(&self) {
        let first = std::iter::once((&self.tx, &self.waker));
        for (tx, waker) in first.chain(self.others.iter().map(|(t, w)| (t, w))) {
            if tx.send(Control::Stop).is_ok() {
                let _ = waker.wake();
            }
        }
    }

    /// Runs `f` in every loop of the server (one, unless it was started
    /// with several threads), e.g. to replace the ACL everywhere.
    ///
    /// # Errors
    ///
    /// [`Stopped`] if the first loop is gone.
    pub fn call_each(
        &self,
        f: impl Fn(&mut Context<'_>) + Send + Sync + 'static,
    ) -> Result<(), Stopped> {
        let f = Arc::new(f);
        for (tx, waker) in self.others.iter() {
            let f = Arc::clone(&f);
            let call = BrokerControl::Call(Box::new(move |ctx| f(ctx)));
            if tx
                .send(Control::Service(self.service, Box::new(call)))
                .is_ok()
            {
                let _ = waker.wake();
            }
        }
        self.call(move |ctx| f(ctx))
    }
}

/// The process-wide figures of `STATS`: resident memory (from
/// `/proc/self/status`; 0 where there is none) and the log lines the
/// installed logger dropped.
fn process_stats() -> crate::broker::ProcessStats {
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    crate::broker::ProcessStats {
        rss_bytes: rss_kib * 1024,
        log_lines_dropped: crate::logging::lines_dropped(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory per connection is a product feature: the table slot of an
    /// idle broker connection (the connection layer's part, the session and
    /// the reactor's socket) stays within this budget. Raise it only on
    /// purpose, with the density figures in the README. (Measured: 280 B in
    /// release builds before the connection layer was split out; debug
    /// builds add 16 B of mio's selector id and padding to the reactor's
    /// part.)
    #[test]
    fn session_slot_stays_small() {
        let slot = std::mem::size_of::<crate::conn::Link<Conn, crate::broker::Session>>();
        let budget = if cfg!(debug_assertions) { 296 } else { 280 };
        assert!(slot <= budget, "session slot grew to {slot} bytes");
    }

    /// A server can be bound on one thread and run on another, as before the
    /// loop could host several services.
    #[test]
    fn a_server_is_send_when_its_handler_is() {
        fn assert_send<T: Send>() {}
        assert_send::<Server<()>>();
        assert_send::<ServerHandle>();
    }
}
