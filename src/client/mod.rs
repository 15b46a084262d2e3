//! The client library: connect, verify, log in, request, follow pushes.
//!
//! [`Client`] is a cheap, thread-safe handle to one background I/O thread
//! that runs its own `mio` loop for one connection (plain TCP, TLS, mutual
//! TLS, or WebSocket over either). Each request method sends one frame and blocks until its reply (or
//! [`ClientConfig::reply_timeout`]); pushed frames arrive through
//! [`Client::recv`] or an [`Client::on_push`] callback. With
//! [`ClientConfig::reconnect`] set, a lost connection is re-established with
//! doubling backoff, logged in again, and its subscriptions and watches are
//! restored.
//!
//! Underneath is [`ClientSession`], the sans-IO protocol core (bytes in,
//! frames out, replies matched to requests in order), which a program with an
//! event loop of its own can step directly instead.
//!
//! With TLS, the server certificate is verified against
//! [`ClientTls::roots`], then shown to [`ClientTls::inspect`] if set, before
//! a single protocol byte (a user name, a password) is sent.
//!
//! # Addresses and transports
//!
//! [`ClientConfig::addr`] names the server and, as a URL, the transport
//! ([`Endpoint`] reads it):
//!
//! | `addr` | transport | [`ClientConfig::tls`] |
//! | --- | --- | --- |
//! | `host:port` | TCP, or TLS when `tls` is set (as always) | optional |
//! | `tcp://host[:port]` | TCP (port 7420 by default) | must be `None` |
//! | `tls://host[:port]` | TLS (port 7421 by default) | required |
//! | `ws://host[:port][/path]` | WebSocket over TCP (port 80 by default) | must be `None` |
//! | `wss://host[:port][/path]` | WebSocket over TLS (port 443 by default) | required |
//!
//! A scheme that contradicts `tls` is refused with [`ClientError::Config`]
//! rather than guessed around: `wss://` without `tls` would have no CA to
//! verify the server against. `wss://` verifies exactly as TLS does (the
//! same [`ClientTls`], the host of the URL as the name unless
//! [`ClientTls::server_name`] says otherwise, client certificates), and
//! only then sends the WebSocket upgrade (RFC 6455, subprotocol
//! `switchboard.v1`, on the URL's path, `/` when it has none). Each frame
//! then travels in one WebSocket message each way, client messages masked
//! with random keys (protocol.md section 8); pings are answered, and a
//! close from the server is answered and ends the connection (reconnected
//! like any other with [`ClientConfig::reconnect`]).
//!
//! ```no_run
//! # use std::path::Path;
//! # use switchboard::client::ClientTls;
//! # use switchboard::{Client, ClientConfig, ClientError};
//! # fn main() -> Result<(), ClientError> {
//! // WebSocket, as a browser would reach the server.
//! let plain = Client::connect(ClientConfig::new("ws://localhost:7422", "alice"))?;
//! // WebSocket over TLS, verified against the server's CA.
//! let mut config = ClientConfig::new("wss://localhost:7423/", "bob");
//! config.tls = Some(ClientTls::from_ca_file(Path::new("certs/ca.pem"))?);
//! let secure = Client::connect(config)?;
//! # Ok(()) }
//! ```
//!
//! # A complete program
//!
//! ```no_run
//! use std::path::Path;
//! use std::time::Duration;
//!
//! use switchboard::client::{Backoff, ClientTls};
//! use switchboard::{Client, ClientConfig, ClientError, Push};
//!
//! fn main() -> Result<(), ClientError> {
//!     let mut config = ClientConfig::new("localhost:7421", "alice");
//!     config.password = Some("correct horse".into());
//!     // Trust the server's CA, and look at its certificate before logging in.
//!     config.tls = Some(
//!         ClientTls::from_ca_file(Path::new("certs/ca.pem"))?.with_inspect(|cert| {
//!             cert.subject.cn.as_deref() == Some("localhost")
//!         }),
//!     );
//!     config.reconnect = Some(Backoff::default());
//!
//!     let client = Client::connect(config)?;
//!     client.subscribe(&[1])?;
//!     client.publish(&[1], b"hello, group 1")?;
//!     match client.send("bob", b"hi bob") {
//!         Ok(_) => {}
//!         Err(ClientError::Refused { code, text }) => eprintln!("not sent ({code}): {text}"),
//!         Err(e) => return Err(e),
//!     }
//!     println!("online: {:?}", client.who(None)?);
//!     println!("round trip: {:?}", client.ping()?);
//!
//!     // Follow pushes for a while.
//!     loop {
//!         match client.recv(Some(Duration::from_secs(5))) {
//!             Ok(Push::Published { sender, groups, payload }) => {
//!                 println!("{sender} to {groups:?}: {}", String::from_utf8_lossy(&payload));
//!             }
//!             Ok(Push::Message { sender, payload }) => {
//!                 println!("{sender} to me: {}", String::from_utf8_lossy(&payload));
//!             }
//!             Ok(other) => println!("{other:?}"),
//!             Err(ClientError::Timeout) => break,
//!             Err(e) => return Err(e),
//!         }
//!     }
//!     client.quit()
//! }
//! ```

mod directory;
mod driver;
mod endpoint;
mod session;
mod tls;
mod websocket;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Poll, Waker};

pub use self::directory::DirectoryEntry;
use self::directory::parse_entries;
use self::driver::{Cmd, Driver, Setup, WsTarget};
pub use self::endpoint::{Endpoint, Scheme};
pub use self::session::{ClientSession, Event, MAX_SERVER_PAYLOAD, Reply, Request, RequestId};
use self::session::{parse_groups, parse_hello, parse_responses};
pub use self::tls::{ClientTls, InspectFn, ServerCert};
use crate::error::ErrorCode;

/// How long a handle waits beyond the driver's own deadline before it gives
/// up on the thread (which enforces every deadline itself).
const GRACE: Duration = Duration::from_secs(2);

/// Where and how a [`Client`] connects.
#[derive(Clone)]
pub struct ClientConfig {
    /// The server: `host:port`, or a URL `tcp://`, `tls://`, `ws://`,
    /// `wss://` that also names the transport (see the [module
    /// documentation](self#addresses-and-transports)). Resolved once, in
    /// [`Client::connect`].
    pub addr: String,
    /// The user name sent with `USER`. With `--auth cert` the handshake logs
    /// the client in: an empty name sends no `USER`, and the certificate's CN
    /// is accepted too.
    pub user: String,
    /// Sent with `PASS` after `USER` when set (password authentication).
    pub password: Option<String>,
    /// TLS settings; `None` is plain TCP (or `ws://`). Required for
    /// `tls://` and `wss://` addresses.
    pub tls: Option<ClientTls>,
    /// Reconnect with this backoff after the connection is lost; `None` is no
    /// automatic reconnect (requests then fail with [`ClientError::Closed`]).
    pub reconnect: Option<Backoff>,
    /// Limit for the TCP connect plus the TLS handshake and the WebSocket
    /// upgrade, per attempt. Default 10 s.
    pub connect_timeout: Duration,
    /// Limit for each reply (and for login). Default 10 s.
    pub reply_timeout: Duration,
}

impl fmt::Debug for ClientConfig {
    /// Never shows the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("reconnect", &self.reconnect)
            .field("connect_timeout", &self.connect_timeout)
            .field("reply_timeout", &self.reply_timeout)
            .finish()
    }
}

impl ClientConfig {
    /// `addr` (`host:port`, or a URL: see [`ClientConfig::addr`]) as `user`:
    /// no TLS, no password, no reconnect, 10 s timeouts.
    pub fn new(addr: impl Into<String>, user: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            user: user.into(),
            password: None,
            tls: None,
            reconnect: None,
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(10),
        }
    }
}

/// Reconnect delays: `initial`, doubling after each failed attempt, capped
/// at `max`; back to `initial` after a successful login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 100 ms, doubling up to 5 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// A frame the server pushed (never a reply), or a change of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// `PUBLISHED`: a message to groups this client is subscribed to.
    Published {
        /// Who published it (`@server` for the server itself).
        sender: String,
        /// The groups, as published.
        groups: Vec<u32>,
        /// The message.
        payload: Bytes,
    },
    /// `MESSAGE`: a message to this user.
    Message {
        /// Who sent it.
        sender: String,
        /// The message.
        payload: Bytes,
    },
    /// `JOINED`: `user` subscribed to a watched group.
    Joined {
        /// The user.
        user: String,
        /// The group.
        group: u32,
    },
    /// `PARTED`: `user` unsubscribed from (or left) a watched group.
    Parted {
        /// The user.
        user: String,
        /// The group.
        group: u32,
    },
    /// `REQUESTED`: a request to a group this client answers for (a plain
    /// or queue subscription); answer it with [`Client::reply`] and `rid`.
    Requested {
        /// Who asked.
        sender: String,
        /// The group it was sent to.
        group: u32,
        /// The server's id for it, for `REPLY`.
        rid: String,
        /// The request.
        payload: Bytes,
    },
    /// `SURVEYED`: a survey to a group this client is subscribed to; answer
    /// (if at all) with [`Client::reply`] and `rid` before its deadline.
    Surveyed {
        /// Who asked.
        sender: String,
        /// The group it was sent to.
        group: u32,
        /// The server's id for it, for `REPLY`.
        rid: String,
        /// The question.
        payload: Bytes,
    },
    /// The connection was lost. With reconnect on, [`Push::Reconnected`]
    /// follows once the client is logged in again; without, the client is closed.
    Disconnected,
    /// Logged in again after [`Push::Disconnected`], with subscriptions and
    /// watches restored. Pushes sent while disconnected are lost.
    Reconnected,
}

/// Why a client call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket failed (connect refused, reset, ...), or the address did
    /// not resolve.
    Io(io::Error),
    /// TLS failed: a certificate that does not verify (wrong CA, wrong name),
    /// a handshake error, or TLS files that cannot be loaded.
    Tls(String),
    /// [`ClientTls::inspect`] refused the server certificate; nothing was sent.
    CertificateRejected,
    /// The server refused the request with `ERR` (or the client refused it
    /// locally with [`ErrorCode::BadArgs`], without sending it, because the
    /// server would have).
    Refused {
        /// The contract's code.
        code: ErrorCode,
        /// The server's sentence.
        text: String,
    },
    /// No reply (or no connection) within the configured time.
    Timeout,
    /// The connection is closed, or the client was stopped.
    Closed,
    /// The server sent something the contract does not allow (a malformed
    /// frame, a reply to nothing, a stream cut inside a frame), or refused
    /// or broke the WebSocket upgrade or framing (RFC 6455).
    Protocol(String),
    /// The configuration cannot be used: an address URL that does not
    /// parse, or a scheme that contradicts [`ClientConfig::tls`] (`wss://`
    /// and `tls://` need it, `ws://` and `tcp://` must not have it).
    Config(String),
}

impl ClientError {
    /// A copy for each of several waiters (`io::Error` is not `Clone`).
    fn duplicate(&self) -> Self {
        match self {
            Self::Io(e) => Self::Io(io::Error::new(e.kind(), e.to_string())),
            Self::Tls(s) => Self::Tls(s.clone()),
            Self::CertificateRejected => Self::CertificateRejected,
            Self::Refused { code, text } => Self::Refused {
                code: *code,
                text: text.clone(),
            },
            Self::Timeout => Self::Timeout,
            Self::Closed => Self::Closed,
            Self::Protocol(s) => Self::Protocol(s.clone()),
            Self::Config(s) => Self::Config(s.clone()),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::Tls(why) => write!(f, "TLS error: {why}"),
            Self::CertificateRejected => f.write_str("server certificate rejected by the client"),
            Self::Refused { code, text } => write!(f, "refused ({code}): {text}"),
            Self::Timeout => f.write_str("timed out"),
            Self::Closed => f.write_str("connection closed"),
            Self::Protocol(why) => write!(f, "protocol error: {why}"),
            Self::Config(why) => write!(f, "cannot use the configuration: {why}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A wait as whole milliseconds for the wire, saturating (0 and more than
/// 60 s are refused locally as `bad-args`).
fn wire_millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// A connection to a Switchboard server, served by a background I/O thread.
///
/// `Client` is `Send + Sync`: share it (`Arc<Client>`) between threads; each
/// call waits for its own reply, and replies are matched to requests in order.
/// Dropping it (or [`Client::quit`]) stops the thread.
///
/// Calling a request method from inside an [`Client::on_push`] callback would
/// block the thread that must read the reply: it fails at once with
/// [`ClientError::Io`] of kind `WouldBlock`.
pub struct Client {
    cmds: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
    pushes: Mutex<mpsc::Receiver<Push>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    io_thread: ThreadId,
    reply_timeout: Duration,
    addr: String,
    local_addr: Arc<Mutex<Option<SocketAddr>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects, completes the TLS handshake with verification (and
    /// [`ClientTls::inspect`]), then logs in with `USER` (+ `PASS`); returns
    /// once the server acknowledged the login.
    ///
    /// Nothing is sent before the server certificate is verified. The first
    /// connection is not retried, even with [`ClientConfig::reconnect`]: a
    /// wrong address or password is reported at once.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] (an address URL that does not parse, a scheme
    /// that contradicts [`ClientConfig::tls`]), [`ClientError::Io`]
    /// (address, connect), [`ClientError::Timeout`] (connect + handshakes
    /// over [`ClientConfig::connect_timeout`], or no login reply within
    /// [`ClientConfig::reply_timeout`]), [`ClientError::Tls`],
    /// [`ClientError::CertificateRejected`], [`ClientError::Refused`] (e.g.
    /// `auth-failed`), [`ClientError::Closed`] or [`ClientError::Protocol`]
    /// (also a refused WebSocket upgrade, with the server's status and reason).
    pub fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        // The login requests are made by the I/O thread; refuse what the
        // server would refuse for its form here, before connecting.
        if !config.user.is_empty() && !crate::proto::command::is_valid_user(config.user.as_bytes())
        {
            return Err(ClientError::Refused {
                code: crate::error::ErrorCode::BadArgs,
                text: "user names are 1 to 64 of A-Z a-z 0-9 . _ -".into(),
            });
        }
        if config.password.as_deref() == Some("") {
            return Err(ClientError::Refused {
                code: crate::error::ErrorCode::BadArgs,
                text: "empty password".into(),
            });
        }
        let endpoint = Endpoint::parse(&config.addr)?;
        match (endpoint.scheme, &config.tls) {
            (Some(s), None) if s.is_tls() => {
                return Err(ClientError::Config(format!(
                    "{}:// needs ClientConfig::tls (the CA to verify the server against)",
                    s.as_str()
                )));
            }
            (Some(s), Some(_)) if !s.is_tls() => {
                return Err(ClientError::Config(format!(
                    "{s}:// is not TLS but ClientConfig::tls is set (use {}://)",
                    if s.is_websocket() { "wss" } else { "tls" }
                )));
            }
            _ => {}
        }
        let addrs: Vec<_> = match endpoint.port {
            // A bare `host:port`: resolved as it always was.
            None => config.addr.to_socket_addrs()?.collect(),
            Some(port) => (endpoint.host.as_str(), port).to_socket_addrs()?.collect(),
        };
        if addrs.is_empty() {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} resolves to no address", config.addr),
            )));
        }
        let tls = match &config.tls {
            None => None,
            Some(t) => Some((t.rustls_config()?, tls::server_name(t, &endpoint.host)?)),
        };
        let ws = endpoint.is_websocket().then(|| WsTarget {
            host: endpoint.authority(),
            path: endpoint.path.clone(),
        });
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), driver::WAKER)?);
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (push_tx, push_rx) = mpsc::channel();
        let (init_tx, init_rx) = mpsc::channel();
        let local_addr = Arc::new(Mutex::new(None));
        let setup = Setup {
            addrs: addrs.clone(),
            user: config.user.clone(),
            password: config.password.clone(),
            tls,
            ws,
            reconnect: config.reconnect,
            connect_timeout: config.connect_timeout,
            reply_timeout: config.reply_timeout,
            local_addr: Arc::clone(&local_addr),
        };
        let driver = Driver::new(setup, poll, cmd_rx, push_tx, init_tx);
        let thread = thread::Builder::new()
            .name("switchboard-client".into())
            .spawn(move || driver.run())?;
        let client = Self {
            cmds: cmd_tx,
            waker,
            pushes: Mutex::new(push_rx),
            io_thread: thread.thread().id(),
            thread: Mutex::new(Some(thread)),
            reply_timeout: config.reply_timeout,
            addr: config.addr,
            local_addr,
        };
        // Each address gets a connect timeout, then login gets two replies.
        let attempts = u32::try_from(addrs.len()).unwrap_or(u32::MAX);
        let limit = config
            .connect_timeout
            .saturating_mul(attempts)
            .saturating_add(config.reply_timeout.saturating_mul(2))
            .saturating_add(GRACE);
        match init_rx.recv_timeout(limit) {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(RecvTimeoutError::Timeout) => Err(ClientError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(ClientError::Closed),
        }
        // On error, dropping `client` stops and joins the thread.
    }

    /// Sends one request and waits for its reply, at most
    /// [`ClientConfig::reply_timeout`].
    fn call(&self, req: Request) -> Result<Reply, ClientError> {
        self.call_for(req, self.reply_timeout)
    }

    fn not_on_io_thread(&self) -> Result<(), ClientError> {
        if thread::current().id() == self.io_thread {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::WouldBlock,
                "a client request from its own I/O thread (an on_push callback) would deadlock",
            )));
        }
        Ok(())
    }

    /// Hands `req` to the I/O thread with a reply deadline `wait` from now
    /// (not woken: the caller wakes it once for all it sent).
    fn enqueue(
        &self,
        req: Request,
        wait: Duration,
    ) -> Result<mpsc::Receiver<Result<Reply, ClientError>>, ClientError> {
        let (tx, rx) = mpsc::channel();
        self.cmds
            .send(Cmd::Request {
                req,
                reply: tx,
                deadline: Instant::now() + wait,
            })
            .map_err(|_| ClientError::Closed)?;
        Ok(rx)
    }

    /// Sends one request and waits for its reply, at most `wait`.
    fn call_for(&self, req: Request, wait: Duration) -> Result<Reply, ClientError> {
        self.not_on_io_thread()?;
        let rx = self.enqueue(req, wait)?;
        self.waker.wake()?;
        match rx.recv_timeout(wait.saturating_add(GRACE)) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(ClientError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(ClientError::Closed),
        }
    }

    /// How long to wait for the reply to `req`: the reply timeout, or for a
    /// `REQUEST` or `SURVEY` longer than the wait the server was asked for,
    /// so that its `ERR timeout` (or the survey's `RESULT`) arrives first.
    fn wait_for(&self, req: &Request) -> Duration {
        let wire = match req {
            Request::Request { timeout_ms, .. } => *timeout_ms,
            Request::Survey { deadline_ms, .. } => *deadline_ms,
            _ => 0,
        };
        if wire == 0 {
            self.reply_timeout
        } else {
            self.reply_timeout
                .max(Duration::from_millis(u64::from(wire)) + self.reply_timeout)
        }
    }

    /// Sends all of `requests` at once (pipelined: every frame is written
    /// before any reply is read) and collects their replies, in order, in one
    /// round trip; the request batching of protocol.md section 9.
    ///
    /// Each request is checked and answered on its own: one refused (locally
    /// or by the server) does not stop the others. Each waits at most
    /// [`ClientConfig::reply_timeout`] (for `REQUEST` and `SURVEY`, that
    /// beyond their own timeout).
    ///
    /// ```no_run
    /// # use bytes::Bytes;
    /// # use switchboard::client::Request;
    /// # use switchboard::{Client, ClientConfig, ClientError};
    /// # fn main() -> Result<(), ClientError> {
    /// let client = Client::connect(ClientConfig::new("localhost:7420", "alice"))?;
    /// let replies = client.batch(vec![
    ///     Request::Subscribe(vec![1]),
    ///     Request::Publish { groups: vec![1], payload: Bytes::from_static(b"hi") },
    ///     Request::Who(None),
    /// ]);
    /// assert_eq!(replies.len(), 3);
    /// # Ok(()) }
    /// ```
    pub fn batch(&self, requests: Vec<Request>) -> Vec<Result<Reply, ClientError>> {
        if let Err(e) = self.not_on_io_thread() {
            return requests.iter().map(|_| Err(e.duplicate())).collect();
        }
        let sent: Vec<_> = requests
            .into_iter()
            .map(|req| {
                let wait = self.wait_for(&req);
                self.enqueue(req, wait).map(|rx| (rx, wait))
            })
            .collect();
        let woken = self.waker.wake();
        sent.into_iter()
            .map(|r| {
                let (rx, wait) = r?;
                if let Err(e) = &woken {
                    return Err(ClientError::Io(io::Error::new(e.kind(), e.to_string())));
                }
                match rx.recv_timeout(wait.saturating_add(GRACE)) {
                    Ok(result) => result,
                    Err(RecvTimeoutError::Timeout) => Err(ClientError::Timeout),
                    Err(RecvTimeoutError::Disconnected) => Err(ClientError::Closed),
                }
            })
            .collect()
    }

    /// `REQUEST`: sends `payload` to one responder of `group` and returns its
    /// answer. The server waits `timeout` for it (1 ms to 60 s, rounded down
    /// to whole milliseconds); this call waits that plus
    /// [`ClientConfig::reply_timeout`], so the server's verdict comes first.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with `no-responders` (nobody answers for the
    /// group), `timeout` (no answer in time), `unknown-group`, `forbidden`,
    /// or `bad-args` (a timeout outside 1 ms to 60 s, refused locally); or a
    /// connection error.
    pub fn request(
        &self,
        group: u32,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let req = Request::Request {
            group,
            timeout_ms: wire_millis(timeout),
            payload: Bytes::copy_from_slice(payload),
        };
        let wait = self.wait_for(&req);
        match self.call_for(req, wait)? {
            Reply::Result(data) => Ok(data),
            Reply::Err { code, text } => Err(ClientError::Refused { code, text }),
            _ => Err(ClientError::Protocol(
                "REQUEST answered with something other than RESULT".into(),
            )),
        }
    }

    /// `SURVEY`: asks every subscriber of `group` (not this session) and
    /// returns the answers that arrived within `deadline`, as
    /// `(responder, payload)` in arrival order (empty if none).
    ///
    /// # Errors
    ///
    /// As [`Client::request`] (but never `no-responders` or `timeout`), or
    /// [`ClientError::Protocol`] for a malformed result.
    pub fn survey(
        &self,
        group: u32,
        payload: &[u8],
        deadline: Duration,
    ) -> Result<Vec<(String, Bytes)>, ClientError> {
        let req = Request::Survey {
            group,
            deadline_ms: wire_millis(deadline),
            payload: Bytes::copy_from_slice(payload),
        };
        let wait = self.wait_for(&req);
        match self.call_for(req, wait)? {
            Reply::Result(data) => parse_responses(&data),
            Reply::Err { code, text } => Err(ClientError::Refused { code, text }),
            _ => Err(ClientError::Protocol(
                "SURVEY answered with something other than RESULT".into(),
            )),
        }
    }

    /// `REPLY`: answers the request or survey `rid` (from
    /// [`Push::Requested`] or [`Push::Surveyed`]).
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with `bad-args` (an unknown or expired
    /// rid), or a connection error.
    pub fn reply(&self, rid: &str, payload: &[u8]) -> Result<String, ClientError> {
        self.call(Request::Reply {
            rid: rid.to_owned(),
            payload: Bytes::copy_from_slice(payload),
        })?
        .into_ack()
    }

    /// `QSUBSCRIBE`: joins the queue group `queue` on `groups` (each
    /// publish and request to a group goes to one member of each of its
    /// queue groups). Restored after a reconnect.
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`].
    pub fn qsubscribe(&self, queue: &str, groups: &[u32]) -> Result<String, ClientError> {
        self.call(Request::QSubscribe {
            queue: queue.to_owned(),
            groups: groups.to_vec(),
        })?
        .into_ack()
    }

    /// `QUNSUBSCRIBE`: leaves the queue group `queue` on `groups`.
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`].
    pub fn qunsubscribe(&self, queue: &str, groups: &[u32]) -> Result<String, ClientError> {
        self.call(Request::QUnsubscribe {
            queue: queue.to_owned(),
            groups: groups.to_vec(),
        })?
        .into_ack()
    }

    /// `ECHO`: whether this session receives its own publishes (default on).
    /// Not restored after a reconnect (the new session starts with it on).
    ///
    /// # Errors
    ///
    /// A connection error.
    pub fn echo(&self, on: bool) -> Result<String, ClientError> {
        self.call(Request::Echo(on))?.into_ack()
    }

    /// `SUBSCRIBE`: receive what is published to `groups` (all or nothing).
    /// The groups are re-subscribed after a reconnect.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] (`unknown-group`, `bad-args`), or a connection
    /// error ([`ClientError::Timeout`], [`ClientError::Closed`], ...).
    pub fn subscribe(&self, groups: &[u32]) -> Result<String, ClientError> {
        self.call(Request::Subscribe(groups.to_vec()))?.into_ack()
    }

    /// `UNSUBSCRIBE` from `groups` (ones not subscribed are fine).
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`].
    pub fn unsubscribe(&self, groups: &[u32]) -> Result<String, ClientError> {
        self.call(Request::Unsubscribe(groups.to_vec()))?.into_ack()
    }

    /// `WATCH`: get [`Push::Joined`] / [`Push::Parted`] for `groups`.
    /// Re-watched after a reconnect.
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`].
    pub fn watch(&self, groups: &[u32]) -> Result<String, ClientError> {
        self.call(Request::Watch(groups.to_vec()))?.into_ack()
    }

    /// `UNWATCH` `groups`.
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`].
    pub fn unwatch(&self, groups: &[u32]) -> Result<String, ClientError> {
        self.call(Request::Unwatch(groups.to_vec()))?.into_ack()
    }

    /// `PUBLISH` `payload` to `groups` (1 to 63); returns once the server has
    /// queued it for every subscriber.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] (`unknown-group`, `too-large`: the server then
    /// closes the connection), or a connection error.
    pub fn publish(&self, groups: &[u32], payload: &[u8]) -> Result<String, ClientError> {
        self.call(Request::Publish {
            groups: groups.to_vec(),
            payload: Bytes::copy_from_slice(payload),
        })?
        .into_ack()
    }

    /// `SEND` `payload` to every session of `user`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] (`no-such-user`, `bad-args`), or a connection error.
    pub fn send(&self, user: &str, payload: &[u8]) -> Result<String, ClientError> {
        self.call(Request::Send {
            to: user.to_owned(),
            payload: Bytes::copy_from_slice(payload),
        })?
        .into_ack()
    }

    /// `WHO`: the users online, or those subscribed to `group`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`], a connection error, or
    /// [`ClientError::Protocol`] for a malformed `RESULT`.
    pub fn who(&self, group: Option<u32>) -> Result<Vec<String>, ClientError> {
        self.call(Request::Who(group))?.into_lines()
    }

    /// `GROUPS`: every group, as `(id, name)`.
    ///
    /// # Errors
    ///
    /// As [`Client::who`].
    pub fn groups(&self) -> Result<Vec<(u32, String)>, ClientError> {
        parse_groups(self.call(Request::Groups)?.into_lines()?)
    }

    /// `HELLO`: the server's `key=value` facts (`server`, `version`,
    /// `protocol`, `max_payload`, `auth`, ...), in the order sent.
    ///
    /// # Errors
    ///
    /// As [`Client::who`].
    pub fn hello(&self) -> Result<Vec<(String, String)>, ClientError> {
        parse_hello(self.call(Request::Hello)?.into_lines()?)
    }

    /// `STATS`: the server's figures (protocol.md section 10), as
    /// `(key, value)` in the order sent.
    ///
    /// # Errors
    ///
    /// As [`Client::who`]; [`ClientError::Protocol`] if a line is not
    /// `key=number`.
    pub fn stats(&self) -> Result<Vec<(String, u64)>, ClientError> {
        self.call(Request::Stats)?
            .into_lines()?
            .into_iter()
            .map(|line| {
                line.split_once('=')
                    .and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                    .ok_or_else(|| ClientError::Protocol(format!("bad STATS line {line:?}")))
            })
            .collect()
    }

    /// `BIND`: registers `address:port` as this user's peer endpoint in the
    /// server's directory (protocol.md section 6). The server first probes
    /// it (connects, `PING 0`, expects `PONG 0` within 5 s), so the endpoint
    /// must be listening and answering already (`peer::PeerEndpoint`
    /// does). `address` must be the one
    /// this client connects from ([`Client::local_addr`]). A new `BIND`
    /// replaces the entry.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`]: `forbidden` (another address than this
    /// connection's), `unreachable` (the probe failed), `bad-args` (port 0,
    /// refused locally), `limit` or `busy` (probes in flight); or a
    /// connection error.
    pub fn bind(&self, address: IpAddr, port: u16) -> Result<String, ClientError> {
        self.call(Request::Bind { address, port })?.into_ack()
    }

    /// `QUERY`: every entry of the directory (`None`), or `user`'s (an
    /// empty list when that user has none).
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] (`bad-args` for an invalid user name,
    /// refused locally), a connection error, or [`ClientError::Protocol`]
    /// for a line that is not `<user>,<address>,<port>`.
    pub fn query(&self, user: Option<&str>) -> Result<Vec<DirectoryEntry>, ClientError> {
        parse_entries(
            self.call(Request::Query(user.map(str::to_owned)))?
                .into_lines()?,
        )
    }

    /// `LEAVE`: removes this user's entry from the directory.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`], or a connection error.
    pub fn leave(&self) -> Result<String, ClientError> {
        self.call(Request::Leave)?.into_ack()
    }

    /// `PING`; returns the round trip as this caller saw it.
    ///
    /// # Errors
    ///
    /// A connection error, or [`ClientError::Protocol`] if the reply is not `PONG`.
    pub fn ping(&self) -> Result<Duration, ClientError> {
        let start = Instant::now();
        match self.call(Request::Ping)? {
            Reply::Pong => Ok(start.elapsed()),
            Reply::Err { code, text } => Err(ClientError::Refused { code, text }),
            _ => Err(ClientError::Protocol(
                "PING answered with something other than PONG".into(),
            )),
        }
    }

    /// `QUIT`: waits for the server's `ACK`, then stops the I/O thread. Later
    /// calls fail with [`ClientError::Closed`]; a second `quit` is `Ok`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Timeout`] if the server does not acknowledge in time
    /// (the thread is stopped all the same).
    pub fn quit(&self) -> Result<(), ClientError> {
        let result = match self.call(Request::Quit) {
            Ok(_) | Err(ClientError::Closed) => Ok(()),
            Err(e) => Err(e),
        };
        self.stop();
        result
    }

    /// The local address of the connection to the server (of the latest
    /// one, after a reconnect): the address the server sees this client
    /// connect from, which is the one `BIND` accepts (protocol.md section 6).
    /// `None` before the first connection is made.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *self
            .local_addr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the next pushed frame (or [`Push::Disconnected`] /
    /// [`Push::Reconnected`]), at most `timeout` (`None`: no limit).
    ///
    /// While an [`Client::on_push`] callback is set, pushes go to it instead.
    ///
    /// # Errors
    ///
    /// [`ClientError::Timeout`], or [`ClientError::Closed`] once the client
    /// is stopped and every push received before has been returned.
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Push, ClientError> {
        let rx = self.pushes.lock().unwrap_or_else(PoisonError::into_inner);
        match timeout {
            None => rx.recv().map_err(|_| ClientError::Closed),
            Some(t) => rx.recv_timeout(t).map_err(|e| match e {
                RecvTimeoutError::Timeout => ClientError::Timeout,
                RecvTimeoutError::Disconnected => ClientError::Closed,
            }),
        }
    }

    /// Delivers every later push to `callback`, on the I/O thread, instead of
    /// [`Client::recv`] (pushes already waiting there stay there). A new
    /// callback replaces the previous one.
    ///
    /// The callback should be quick: the connection is not read while it
    /// runs. It must not call the client's request methods (they would fail,
    /// see [`Client`]); hand work to another thread instead.
    pub fn on_push(&self, callback: impl FnMut(&Push) + Send + 'static) {
        if self.cmds.send(Cmd::OnPush(Box::new(callback))).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Stops the thread and waits for it (unless called on it).
    fn stop(&self) {
        if self.cmds.send(Cmd::Shutdown).is_ok() {
            let _ = self.waker.wake();
        }
        if thread::current().id() == self.io_thread {
            return;
        }
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Client>();
        check::<ClientConfig>();
        check::<ClientError>();
    }

    #[test]
    fn errors_are_one_line() {
        let errors = [
            ClientError::Io(io::Error::other("boom")),
            ClientError::Tls("bad".into()),
            ClientError::CertificateRejected,
            ClientError::Refused {
                code: ErrorCode::NoSuchUser,
                text: "no bob".into(),
            },
            ClientError::Timeout,
            ClientError::Closed,
            ClientError::Protocol("junk".into()),
            ClientError::Config("no".into()),
        ];
        for e in &errors {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'), "{s:?}");
            assert_eq!(e.duplicate().to_string(), s);
        }
        assert_eq!(errors[3].to_string(), "refused (no-such-user): no bob");
    }

    #[test]
    fn config_debug_hides_the_password() {
        let mut c = ClientConfig::new("localhost:7420", "alice");
        c.password = Some("hunter2".into());
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(Backoff::default().initial, Duration::from_millis(100));
    }

    #[test]
    fn connect_to_nothing_is_an_io_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let mut c = ClientConfig::new(format!("127.0.0.1:{port}"), "alice");
        c.connect_timeout = Duration::from_secs(2);
        match Client::connect(c) {
            Err(ClientError::Io(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_scheme_that_contradicts_the_tls_settings_is_refused() {
        let roots = Arc::new(rustls::RootCertStore::empty());
        for (addr, tls, why) in [
            (
                "wss://localhost:1/",
                false,
                "wss:// needs ClientConfig::tls",
            ),
            ("tls://localhost:1", false, "tls:// needs ClientConfig::tls"),
            ("ws://localhost:1/", true, "use wss://"),
            ("tcp://localhost:1", true, "use tls://"),
            ("http://localhost:1/", false, "unknown scheme"),
        ] {
            let mut c = ClientConfig::new(addr, "alice");
            if tls {
                c.tls = Some(ClientTls::new(roots.clone()));
            }
            match Client::connect(c) {
                Err(ClientError::Config(e)) => assert!(e.contains(why), "{addr}: {e}"),
                other => panic!("{addr}: {other:?}"),
            }
        }
    }

    /// The address `local_addr` gives is the one the server sees.
    #[test]
    fn local_addr_is_what_the_server_sees() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let addr = listener.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (mut s, peer) = listener.accept().expect("accept");
            let mut buf = [0u8; 64];
            let mut got = Vec::new();
            while !got.ends_with(b"\n") {
                let n = s.read(&mut buf).expect("read");
                assert!(n > 0, "closed before USER");
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, b"USER 0 alice\n");
            s.write_all(b"ACK 9\nlogged in").expect("write");
            // Until the client goes.
            let _ = s.read(&mut buf);
            peer
        });
        let client = Client::connect(ClientConfig::new(addr.to_string(), "alice")).expect("login");
        let local = client.local_addr().expect("connected");
        drop(client);
        assert_eq!(server.join().expect("server"), local);
    }

    #[test]
    fn ws_to_nothing_is_an_io_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let mut c = ClientConfig::new(format!("ws://127.0.0.1:{port}/"), "alice");
        c.connect_timeout = Duration::from_secs(2);
        match Client::connect(c) {
            Err(ClientError::Io(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}
