//! Switchboard: secure, low-overhead messaging on one poll loop.
//!
//! One `mio` loop on one thread serves thousands of connections; each
//! connection is a session in a slab; a published frame is encoded once and
//! shared by every subscriber. The layers, with dependencies pointing down:
//!
//! ```text
//!   server.rs    ServerConfig, Server::bind/run, ServerHandle (any thread)
//!   handler.rs   Handler callbacks + Context (publish/send as @server)
//!   event_loop.rs EventLoop: several services (brokers, framed) on one loop
//!   framed.rs    the generic layer: Framing, FramedHandler, FramedContext
//!      |
//!   client/      Client: sans-IO ClientSession + a background mio thread
//!   reactor/     the only server module that names mio: poll, accept, read,
//!                write; hosts services through its Service trait
//!   tls.rs       rustls driven by readiness (TlsSession), TLS settings
//!      |
//!   broker/      sans-IO: sessions, users, groups, fan-out, deadlines
//!   auth.rs      password checks on a small worker pool, off the loop
//!      |
//!   proto/       sans-IO: frame decoder, encoder, typed commands
//!   buf.rs       per-connection output queue (shared Bytes)
//!   error.rs     ERR codes and decoder errors
//!   certs.rs     PEM loading, certificate generation, subject parsing
//!   logging.rs   a log::Log that drops and counts lines rather than block
//! ```
//!
//! `proto/` and `broker/` see no socket and no clock: they take bytes and an
//! `Instant` and give bytes, events and deadlines, so they are tested
//! deterministically, byte by byte.
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![warn(unreachable_pub, clippy::use_self, clippy::manual_let_else)]

mod atomic_file;
pub mod auth;
pub mod broker;
pub mod buf;
pub mod certs;
pub mod client;
pub mod conn;
pub mod error;
pub mod event_loop;
pub mod framed;
pub mod handler;
pub mod logging;
pub mod passwd;
pub mod proto;
mod reactor;
pub mod server;
pub mod tls;

pub use auth::Authenticator;
pub use broker::{AuthMode, BrokerConfig, DeliveryError};
pub use client::{Client, ClientConfig, ClientError, Push};
pub use conn::{CloseReason, ConnId, PeerIdentity};
pub use event_loop::{EventLoop, LoopHandle};
pub use framed::{FramedContext, FramedHandler, Framing};
pub use handler::{Context, Handler};
pub use server::{Server, ServerConfig, ServerHandle, StartError, Stopped};
