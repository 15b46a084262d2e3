//! Switchboard: secure, low-overhead messaging on one poll loop.
//!
//! One `mio` loop on one thread serves thousands of connections; each
//! connection is one slot of a connection table; a published frame is
//! encoded once and shared by every subscriber. The layers, with
//! dependencies pointing down only (each module names only modules below
//! it; `tests/layers.rs` checks this from the source):
//!
//! ```text
//!   fuzzing.rs     (feature `fuzzing` only) the fuzz targets' checks
//!   event_loop.rs  EventLoop: several services (brokers, framed) on one loop
//!   server.rs      ServerConfig, Server::bind/run, ServerHandle; BrokerService
//!   handler.rs     Handler callbacks + Context (publish/send as @server)
//!   framed.rs      the generic layer: Framing, FramedHandler, FramedContext
//!   datagram.rs    the generic layer for UDP: DatagramHandler, DatagramContext
//!   engine.rs      the cluster engine's Redis connections (a service)
//!      |
//!   reactor/       the only server module that names mio: poll, accept, read,
//!                  write, timers; reaches connections through conn::Table
//!   transport.rs   the bytes' path under any protocol: Plain | Tls
//!   auth.rs        password checks on a small worker pool, off the loop
//!   client/        Client: sans-IO ClientSession + a background mio thread
//!   peer/          direct peer messaging: sans-IO PeerSession/DialSession,
//!                  PeerEndpoint (its own mio thread), deliver/ping
//!      |
//!   broker/        sans-IO protocol: registry (groups, users), commands, fan-out
//!   tls.rs         one rustls driver (TlsSession) for server and client
//!      |
//!   certs/         PEM loading, development certificates, subject parsing
//!   conn/          sans-IO connection layer: ConnId, CloseReason, PeerIdentity,
//!                  Links (output bound, read pause, closing deadlines, limits)
//!      |
//!   acl.rs         who may subscribe, publish, request, watch, send (--acl)
//!      |
//!   proto/  redis/  buf.rs  error.rs  passwd.rs  logging.rs  atomic_file.rs
//! ```
//!
//! `proto/`, `conn/` and `broker/` see no socket and no clock: they take
//! bytes and an `Instant` and give bytes, events and deadlines, so they are
//! tested deterministically, byte by byte.
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![warn(unreachable_pub, clippy::use_self, clippy::manual_let_else)]

pub mod acl;
mod atomic_file;
pub mod auth;
pub mod broker;
pub mod buf;
mod bus;
pub mod certs;
pub mod client;
pub mod conn;
pub mod datagram;
mod engine;
pub mod error;
pub mod event_loop;
pub mod framed;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod handler;
pub mod logging;
pub mod metrics;
pub mod passwd;
pub mod peer;
mod probe;
pub mod proto;
mod reactor;
// Sans-IO Redis (RESP2, links, cluster slots) for `engine`; see `engine`.
mod redis;
pub mod server;
pub mod tls;
pub mod transport;
pub mod ws;

pub use auth::Authenticator;
pub use broker::{AuthMode, BrokerConfig, DeliveryError};
pub use client::{Client, ClientConfig, ClientError, Push};
pub use conn::{CloseReason, ConnId, PeerIdentity};
pub use datagram::{DatagramContext, DatagramHandler, UdpOptions};
pub use event_loop::{EventLoop, LoopHandle};
pub use framed::{FramedContext, FramedHandler, Framing};
pub use handler::{Attempt, Authorize, Context, Handler, Verdict};
pub use server::{
    Server, ServerConfig, ServerHandle, StartError, Stopped, check_cluster_url, redact_cluster_url,
};
