//! Hosting several services on one loop: brokers and framed services of the
//! host program's own protocols (CppServer's service, TCP_ServerClient's
//! servers), all on one thread.
//!
//! ```no_run
//! use switchboard::framed::{Framing, FramedContext, FramedHandler};
//! use switchboard::{ConnId, EventLoop, ServerConfig};
//!
//! /// Sends every line back.
//! struct Echo;
//!
//! impl FramedHandler for Echo {
//!     fn on_message(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId, message: &[u8]) {
//!         ctx.send(conn, message);
//!     }
//! }
//!
//! let mut event_loop = EventLoop::new().expect("poll loop");
//! // The broker on its usual port, and a line echo service next to it.
//! let (_addrs, _broker) = event_loop
//!     .add_broker(ServerConfig::default(), ())
//!     .expect("broker");
//! let lines = Framing::Delimited { delimiter: b'\n', max_len: 4096 };
//! let addr = event_loop
//!     .listen("127.0.0.1:7000".parse().expect("address"), None, lines, Echo)
//!     .expect("echo listener");
//! println!("echo on {addr}");
//! event_loop.run().expect("clean stop");
//! ```
//!
//! Outgoing connections are plain TCP ([`EventLoop::connect`]) or TLS
//! ([`EventLoop::connect_tls`]), on the same loop as the listeners. UDP
//! sockets ([`EventLoop::bind_udp`], [`EventLoop::connect_udp`]; see
//! [`crate::datagram`]) share the loop too.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::time::Instant;
use std::{fmt, io};

use log::info;
use mio::{Poll, Waker};

use crate::datagram::{DatagramHandler, Datagrams, UdpOptions};
use crate::framed::{FramedHandler, FramedService, Framing};
use crate::handler::Handler;
use crate::reactor::service::{DatagramService, Service};
use crate::reactor::{self, Control, Listener, Reactor};
use crate::server::{ServerConfig, ServerHandle, StartError, build_broker, install_broker};
use crate::tls::TlsSession;
use crate::transport::{Transport, WsConfig};
use rustls::pki_types::ServerName;

/// One poll loop hosting any number of services (up to 64) and their
/// listeners. Build it, add services, then [`run`](EventLoop::run) it on the
/// thread that should serve them.
pub struct EventLoop {
    reactor: Reactor<Box<dyn Service>, Box<dyn DatagramService>>,
    tx: Sender<Control>,
    waker: Arc<Waker>,
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("reactor", &self.reactor)
            .finish()
    }
}

impl EventLoop {
    /// A loop with no services.
    ///
    /// # Errors
    ///
    /// [`StartError::Io`] if the poll instance or its waker cannot be created.
    pub fn new() -> Result<Self, StartError> {
        let poll = Poll::new().map_err(StartError::Io)?;
        let waker = reactor::waker(&poll).map_err(StartError::Io)?;
        let (tx, rx) = mpsc::channel();
        Ok(Self {
            reactor: Reactor::new(poll, rx),
            tx,
            waker,
        })
    }

    /// Adds a broker with its listeners (as [`crate::Server::bind`] does).
    /// Logs `tcp listening on ADDR` / `tls listening on ADDR` for each.
    /// Returns the bound addresses (plain ones first, then TLS, in
    /// configuration order) and a handle to reach this broker from other
    /// threads.
    ///
    /// # Errors
    ///
    /// [`StartError`] naming the address or setting at fault, or
    /// [`StartError::Config`] when the loop already hosts 64 services.
    pub fn add_broker<H: Handler + 'static>(
        &mut self,
        config: ServerConfig,
        handler: H,
    ) -> Result<(Vec<SocketAddr>, ServerHandle), StartError> {
        let index = self.next_service()?;
        let built = build_broker(config, handler, index, &self.tx, &self.waker)?;
        let addrs = install_broker(&mut self.reactor, built, |s| Box::new(s))?;
        let handle = ServerHandle {
            tx: self.tx.clone(),
            waker: Arc::clone(&self.waker),
            service: index,
            others: Arc::new([]),
        };
        Ok((addrs, handle))
    }

    /// Adds a framed service on a new listener: plain TCP when `tls` is
    /// `None`, TLS with these settings otherwise (see
    /// [`crate::tls::server_config`]; with client authentication, the
    /// handler reads the subject with
    /// [`FramedContext::client_cert`](crate::framed::FramedContext::client_cert)).
    /// Logs `tcp listening on ADDR` (or `tls ...`) and returns the bound
    /// address (useful with port 0).
    ///
    /// # Errors
    ///
    /// [`StartError::Bind`] if the address cannot be bound,
    /// [`StartError::Config`] for a zero `max_len` or when the loop already
    /// hosts 64 services.
    pub fn listen<H: FramedHandler + 'static>(
        &mut self,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        framing: Framing,
        handler: H,
    ) -> Result<SocketAddr, StartError> {
        let kind = if tls.is_some() { "tls" } else { "tcp" };
        let deferred = tls.is_some();
        self.framed_listener(addr, tls, None, framing, handler, deferred, kind)
    }

    /// Adds a framed service on a new WebSocket listener (`ws`, or `wss`
    /// with `tls`): each WebSocket message a client sends is the next bytes
    /// of its stream (with [`Framing::Delimited`], a message without the
    /// delimiter gets one, so a message is a message), and each message the
    /// service sends ([`FramedContext::send`](crate::framed::FramedContext::send),
    /// framing included) is one WebSocket message, text when it is valid
    /// UTF-8. The handler hears of a connection once its upgrade is
    /// accepted. A plain `GET` gets 404. Logs `ws listening on ADDR` (or
    /// `wss ...`).
    ///
    /// # Errors
    ///
    /// As [`EventLoop::listen`].
    pub fn listen_websocket<H: FramedHandler + 'static>(
        &mut self,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        framing: Framing,
        handler: H,
    ) -> Result<SocketAddr, StartError> {
        let kind = if tls.is_some() { "wss" } else { "ws" };
        let (max_message, terminator) = match framing {
            Framing::Delimited { delimiter, max_len } => {
                (max_len.saturating_add(1), Some(delimiter))
            }
            Framing::LengthPrefixed { max_len } => (max_len.saturating_add(4), None),
            _ => (1 << 20, None),
        };
        let ws = Arc::new(WsConfig {
            max_message,
            page: None,
            terminator,
        });
        // Established at the upgrade (the transport reports it).
        self.framed_listener(addr, tls, Some(ws), framing, handler, true, kind)
    }

    /// Binds a listener for a new framed service (`deferred`: the handler
    /// hears of a connection when its transport reports it established).
    #[allow(clippy::too_many_arguments)]
    fn framed_listener<H: FramedHandler + 'static>(
        &mut self,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        ws: Option<Arc<WsConfig>>,
        framing: Framing,
        handler: H,
        deferred: bool,
        kind: &str,
    ) -> Result<SocketAddr, StartError> {
        check_framing(framing)?;
        let index = self.next_service()?;
        let socket = crate::reactor::bind_listener(addr)
            .map_err(|source| StartError::Bind { addr, source })?;
        let local = socket
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let service = FramedService::new(framing, deferred, handler);
        self.reactor.add_service(Box::new(service));
        self.reactor
            .add_listener(Listener {
                socket,
                tls,
                ws,
                service: index,
            })
            .map_err(StartError::Io)?;
        info!("{kind} listening on {local}");
        Ok(local)
    }

    /// Adds a framed service with one outgoing plain TCP connection to
    /// `addr`. The connect is nonblocking: `handler` hears
    /// [`FramedHandler::on_established`] once it completes, or
    /// [`FramedHandler::on_closed`] with
    /// [`CloseReason::ConnectFailed`](crate::CloseReason::ConnectFailed) if it
    /// fails. The connection is not remade after it closes.
    ///
    /// # Errors
    ///
    /// [`StartError::Connect`] if the connect cannot even start (e.g. no
    /// route), [`StartError::Config`] for a zero `max_len` or when the loop
    /// already hosts 64 services.
    pub fn connect<H: FramedHandler + 'static>(
        &mut self,
        addr: SocketAddr,
        framing: Framing,
        handler: H,
    ) -> Result<(), StartError> {
        check_framing(framing)?;
        let index = self.next_service()?;
        self.reactor.add_service(Box::new(
            FramedService::new(framing, true, handler).outgoing(),
        ));
        self.reactor
            .add_outgoing(index, addr, Transport::Plain)
            .map(|_| ())
            .map_err(|source| StartError::Connect { addr, source })
    }

    /// [`EventLoop::connect`] over TLS: the server's certificate is verified
    /// per `tls` (its roots, and a client certificate to present if the
    /// server asks) for the name `server_name`. `on_established` comes after
    /// the handshake, and
    /// [`FramedContext::client_cert`](crate::framed::FramedContext::client_cert)
    /// then reads the *server's* certificate subject. A handshake that fails
    /// (e.g. an untrusted server) gets `on_closed` with
    /// [`CloseReason::Tls`](crate::CloseReason::Tls).
    ///
    /// # Errors
    ///
    /// As [`EventLoop::connect`], and [`StartError::Config`] if rustls
    /// refuses the settings.
    pub fn connect_tls<H: FramedHandler + 'static>(
        &mut self,
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        framing: Framing,
        handler: H,
    ) -> Result<(), StartError> {
        check_framing(framing)?;
        let session = TlsSession::new_client(tls, server_name)
            .map_err(|e| StartError::Config(format!("TLS client settings: {e}")))?;
        let index = self.next_service()?;
        self.reactor.add_service(Box::new(
            FramedService::new(framing, true, handler).outgoing(),
        ));
        self.reactor
            .add_outgoing(index, addr, Transport::Tls(Box::new(session)))
            .map(|_| ())
            .map_err(|source| StartError::Connect { addr, source })
    }

    /// Adds a datagram service on a UDP socket bound to `addr` (port 0: any
    /// free port), with `options` (multicast groups, TTL, loopback, queue
    /// bounds) applied before it joins the loop. `handler` hears
    /// [`DatagramHandler::on_start`] at once, then every datagram. Logs
    /// `udp bound on ADDR` and returns the bound address.
    ///
    /// A multicast receiver binds the group's port on `0.0.0.0` (with
    /// [`UdpOptions::reuse_address`] when several share it) and joins the
    /// group; a sender needs no option but the TTL and interface it wants.
    ///
    /// # Errors
    ///
    /// [`StartError::Bind`] if the address cannot be bound or an option
    /// cannot be set (e.g. joining a group on an address that is no
    /// interface's), [`StartError::Config`] when the loop already hosts
    /// the most datagram sockets it can (4,096).
    pub fn bind_udp<H: DatagramHandler + 'static>(
        &mut self,
        addr: SocketAddr,
        options: UdpOptions,
        handler: H,
    ) -> Result<SocketAddr, StartError> {
        self.add_udp(addr, None, options, handler)
    }

    /// Adds a datagram service on a client UDP socket connected to `peer`
    /// (bound to any free port of the same address family): only `peer`'s
    /// datagrams arrive, [`DatagramContext::send`](crate::datagram::DatagramContext::send)
    /// sends to it, and an ICMP "port unreachable" (no socket there) comes
    /// back as [`DatagramHandler::on_error`] with `ConnectionRefused`.
    /// Returns the local address.
    ///
    /// # Errors
    ///
    /// As [`EventLoop::bind_udp`]; [`StartError::Connect`] if the socket
    /// cannot be connected (e.g. no route).
    pub fn connect_udp<H: DatagramHandler + 'static>(
        &mut self,
        peer: SocketAddr,
        options: UdpOptions,
        handler: H,
    ) -> Result<SocketAddr, StartError> {
        let any = if peer.is_ipv4() {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
        };
        self.add_udp(any, Some(peer), options, handler)
    }

    fn add_udp<H: DatagramHandler + 'static>(
        &mut self,
        addr: SocketAddr,
        peer: Option<SocketAddr>,
        options: UdpOptions,
        handler: H,
    ) -> Result<SocketAddr, StartError> {
        let socket = crate::reactor::bind_udp(addr, options.reuses_address(), peer).map_err(
            |source| match (peer, source.kind()) {
                (
                    Some(peer),
                    io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable,
                ) => StartError::Connect { addr: peer, source },
                _ => StartError::Bind { addr, source },
            },
        )?;
        let service: Box<dyn DatagramService> = Box::new(Datagrams::new(&options, handler));
        let local = self
            .reactor
            .add_datagram(socket, service, options.ops(), Instant::now())
            .map_err(|source| {
                if source.kind() == io::ErrorKind::Other {
                    StartError::Config(format!(
                        "one loop hosts at most {} datagram sockets",
                        reactor::MAX_DATAGRAMS
                    ))
                } else {
                    StartError::Bind { addr, source }
                }
            })?;
        match peer {
            Some(peer) => info!("udp bound on {local}, connected to {peer}"),
            None => info!("udp bound on {local}"),
        }
        Ok(local)
    }

    /// A cloneable, `Send` handle that stops the loop from another thread.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle {
            tx: self.tx.clone(),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Runs the loop on this thread until stopped (by a [`LoopHandle`], a
    /// [`ServerHandle`], or a handler) and every connection of every service
    /// is closed (or its linger has passed).
    ///
    /// # Errors
    ///
    /// An error from `poll` itself; connection errors never end the loop.
    pub fn run(mut self) -> io::Result<()> {
        self.reactor.run()
    }

    fn next_service(&self) -> Result<usize, StartError> {
        self.reactor.next_service().ok_or_else(|| {
            StartError::Config(format!(
                "one loop hosts at most {} services",
                reactor::MAX_SERVICES
            ))
        })
    }
}

/// Refuses a framing that could carry nothing.
fn check_framing(framing: Framing) -> Result<(), StartError> {
    match framing {
        Framing::Delimited { max_len: 0, .. } | Framing::LengthPrefixed { max_len: 0 } => Err(
            StartError::Config("a framed service's max_len must be at least 1".into()),
        ),
        _ => Ok(()),
    }
}

/// Stops an [`EventLoop`] from any thread.
#[derive(Clone)]
pub struct LoopHandle {
    tx: Sender<Control>,
    waker: Arc<Waker>,
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoopHandle")
    }
}

impl LoopHandle {
    /// Stops the loop gracefully: listeners close, every service closes its
    /// connections after what they are owed, and [`EventLoop::run`] returns.
    pub fn stop(&self) {
        if self.tx.send(Control::Stop).is_ok() {
            let _ = self.waker.wake();
        }
    }
}
