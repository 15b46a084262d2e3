//! What the reactor needs from a protocol: the `Service` trait.
//!
//! The reactor owns sockets, readiness and buffers. A service is one
//! protocol's endpoint: a connection table ([`Table`], the connection
//! layer, which holds each connection's transport, output and closing state
//! beside the protocol's own state) and the protocol that steps it. The
//! reactor reaches everything it needs of a connection through the table,
//! written once for every protocol; the trait's own methods are the events a
//! protocol reacts to. Implementations live with their protocols' embedding
//! code (`server.rs` for the broker, `framed.rs` for framed services), so
//! this module imports nothing from above it.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Instant;

use crate::conn::{Admission, CloseReason, ConnId, PeerIdentity, Table};

use super::Conn;

/// One protocol served by the reactor.
pub(crate) trait Service {
    /// The connection table, as the IO layer sees it.
    fn links(&mut self) -> &mut dyn Table<Conn>;
    /// The same, to read.
    fn links_ref(&self) -> &dyn Table<Conn>;
    /// Takes a new connection (see [`Admission`]).
    fn accept(&mut self, io: Conn, peer: SocketAddr, now: Instant) -> Admission<Conn>;
    /// Bytes received.
    fn handle_input(&mut self, conn: ConnId, data: &[u8], now: Instant);
    /// The peer closed its side.
    fn handle_eof(&mut self, conn: ConnId, now: Instant);
    /// The TLS handshake completed, or an outgoing connect did.
    fn handle_secured(&mut self, conn: ConnId, subject: Option<PeerIdentity>, now: Instant);
    /// Reading resumes after a pause: process what was kept.
    fn resume(&mut self, conn: ConnId, now: Instant);
    /// Runs due deadlines (the protocol's and the table's).
    fn handle_timeout(&mut self, now: Instant);
    /// The earliest deadline (the protocol's and the table's).
    fn poll_timeout(&self) -> Option<Instant>;
    /// Drops a connection; hands back its transport to deregister.
    fn remove(&mut self, conn: ConnId, reason: CloseReason) -> Option<Conn>;
    /// Starts a graceful shutdown of every connection.
    fn shutdown(&mut self, now: Instant);
    /// Whether `after_input` has work that cannot wait for the next event.
    fn has_events(&self) -> bool;
    /// Once per turn after input and timers: hand events to the handler and
    /// queued work to workers. Returns whether the handler asked to stop.
    fn after_input(&mut self, now: Instant) -> bool;
    /// A request from another thread addressed to this service (its own
    /// message type, boxed). Returns whether it asked to stop.
    fn handle_control(&mut self, message: Box<dyn Any + Send>, now: Instant) -> bool;
    /// Outgoing plain TCP connections the service wants opened, each with a
    /// tag of its own; asked once per turn, after input and timers. Each is
    /// then [`Service::accept`]ed (if the connect could start) and
    /// reported to [`Service::connect_started`].
    fn take_connects(&mut self, into: &mut Vec<(u64, SocketAddr)>) {
        let _ = into;
    }
    /// The transport of the outgoing connection for a
    /// [`Service::take_connects`] tag: plain unless the service says (a TLS
    /// client session, started once the connect completes; the service
    /// hears [`Service::handle_secured`] when its handshake is done).
    ///
    /// # Errors
    ///
    /// Why the connection cannot be made (reported to
    /// [`Service::connect_started`]).
    fn connect_transport(&mut self, tag: u64) -> std::io::Result<crate::transport::Transport> {
        let _ = tag;
        Ok(crate::transport::Transport::Plain)
    }
    /// The connection a [`Service::take_connects`] tag became, or why none:
    /// the connect could not even start.
    fn connect_started(&mut self, tag: u64, conn: std::io::Result<ConnId>, now: Instant) {
        let _ = (tag, conn, now);
    }
}

/// A boxed service is a service: the [`crate::EventLoop`] hosts
/// `Box<dyn Service>` to mix kinds.
impl<S: Service + ?Sized> Service for Box<S> {
    fn links(&mut self) -> &mut dyn Table<Conn> {
        (**self).links()
    }
    fn links_ref(&self) -> &dyn Table<Conn> {
        (**self).links_ref()
    }
    fn accept(&mut self, io: Conn, peer: SocketAddr, now: Instant) -> Admission<Conn> {
        (**self).accept(io, peer, now)
    }
    fn handle_input(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        (**self).handle_input(conn, data, now);
    }
    fn handle_eof(&mut self, conn: ConnId, now: Instant) {
        (**self).handle_eof(conn, now);
    }
    fn handle_secured(&mut self, conn: ConnId, subject: Option<PeerIdentity>, now: Instant) {
        (**self).handle_secured(conn, subject, now);
    }
    fn resume(&mut self, conn: ConnId, now: Instant) {
        (**self).resume(conn, now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        (**self).handle_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
    fn remove(&mut self, conn: ConnId, reason: CloseReason) -> Option<Conn> {
        (**self).remove(conn, reason)
    }
    fn shutdown(&mut self, now: Instant) {
        (**self).shutdown(now);
    }
    fn has_events(&self) -> bool {
        (**self).has_events()
    }
    fn after_input(&mut self, now: Instant) -> bool {
        (**self).after_input(now)
    }
    fn handle_control(&mut self, message: Box<dyn Any + Send>, now: Instant) -> bool {
        (**self).handle_control(message, now)
    }
    fn take_connects(&mut self, into: &mut Vec<(u64, SocketAddr)>) {
        (**self).take_connects(into);
    }
    fn connect_transport(&mut self, tag: u64) -> std::io::Result<crate::transport::Transport> {
        (**self).connect_transport(tag)
    }
    fn connect_started(&mut self, tag: u64, conn: std::io::Result<ConnId>, now: Instant) {
        (**self).connect_started(tag, conn, now);
    }
}

/// A socket option the reactor applies to a datagram socket, at bind time
/// or when a datagram handler asks (multicast membership, TTL, loopback,
/// interface, broadcast). Plain data, so the services stay sans-IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketOp {
    /// `IP_ADD_MEMBERSHIP`: receive `group` on the interface with this
    /// address (`0.0.0.0`: the kernel's choice).
    JoinV4 {
        group: std::net::Ipv4Addr,
        interface: std::net::Ipv4Addr,
    },
    /// `IP_DROP_MEMBERSHIP`.
    LeaveV4 {
        group: std::net::Ipv4Addr,
        interface: std::net::Ipv4Addr,
    },
    /// `IP_MULTICAST_TTL`.
    MulticastTtlV4(u32),
    /// `IP_MULTICAST_LOOP`.
    MulticastLoopV4(bool),
    /// `IP_MULTICAST_IF`: the interface (by address) multicast leaves by.
    MulticastIfV4(std::net::Ipv4Addr),
    /// `SO_BROADCAST`.
    Broadcast(bool),
}

/// One datagram socket's protocol: the reactor reads datagrams into its
/// scratch buffer and hands them over, and sends what the service queued.
/// A datagram socket has no connections, so this is not a [`Service`]; the
/// reactor keeps datagram sockets in a list of their own.
pub(crate) trait DatagramService {
    /// Once, when the socket joins the loop.
    fn start(&mut self, local: SocketAddr, peer: Option<SocketAddr>, now: Instant);
    /// How many bytes the next receive may bring: one more than the largest
    /// datagram accepted, so that a larger one shows as larger.
    fn recv_window(&self) -> usize;
    /// A datagram arrived (`payload` is cut at `recv_window`).
    fn handle_datagram(&mut self, from: SocketAddr, payload: &[u8], now: Instant);
    /// A receive or send failed (`to` is the destination of a failed send).
    fn handle_error(&mut self, to: Option<SocketAddr>, error: &std::io::Error, now: Instant);
    /// Runs a due timer.
    fn handle_timeout(&mut self, now: Instant);
    /// The service's timer, if set.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The next datagram to send, oldest first.
    fn front(&self) -> Option<(SocketAddr, &[u8])>;
    /// Drops the front datagram: handed to the kernel (`sent`), or failed
    /// (then [`DatagramService::handle_error`] follows).
    fn pop_front(&mut self, sent: bool);
    /// Socket options asked for since the last call.
    fn take_ops(&mut self, into: &mut Vec<SocketOp>);
    /// Whether the handler asked to stop the loop since the last call.
    fn take_stop(&mut self) -> bool;
    /// The loop is stopping: no more callbacks; what is queued is still sent.
    fn shutdown(&mut self);
}

/// No datagram service: the datagram type of a reactor that hosts none (a
/// [`crate::Server`]), so that it stays `Send`.
#[derive(Debug)]
pub(crate) enum NoDatagrams {}

impl DatagramService for NoDatagrams {
    fn start(&mut self, _: SocketAddr, _: Option<SocketAddr>, _: Instant) {
        match *self {}
    }
    fn recv_window(&self) -> usize {
        match *self {}
    }
    fn handle_datagram(&mut self, _: SocketAddr, _: &[u8], _: Instant) {
        match *self {}
    }
    fn handle_error(&mut self, _: Option<SocketAddr>, _: &std::io::Error, _: Instant) {
        match *self {}
    }
    fn handle_timeout(&mut self, _: Instant) {
        match *self {}
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match *self {}
    }
    fn front(&self) -> Option<(SocketAddr, &[u8])> {
        match *self {}
    }
    fn pop_front(&mut self, _: bool) {
        match *self {}
    }
    fn take_ops(&mut self, _: &mut Vec<SocketOp>) {
        match *self {}
    }
    fn take_stop(&mut self) -> bool {
        match *self {}
    }
    fn shutdown(&mut self) {
        match *self {}
    }
}

/// A boxed datagram service is one: the [`crate::EventLoop`] hosts
/// `Box<dyn DatagramService>`.
impl<D: DatagramService + ?Sized> DatagramService for Box<D> {
    fn start(&mut self, local: SocketAddr, peer: Option<SocketAddr>, now: Instant) {
        (**self).start(local, peer, now);
    }
    fn recv_window(&self) -> usize {
        (**self).recv_window()
    }
    fn handle_datagram(&mut self, from: SocketAddr, payload: &[u8], now: Instant) {
        (**self).handle_datagram(from, payload, now);
    }
    fn handle_error(&mut self, to: Option<SocketAddr>, error: &std::io::Error, now: Instant) {
        (**self).handle_error(to, error, now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        (**self).handle_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
    fn front(&self) -> Option<(SocketAddr, &[u8])> {
        (**self).front()
    }
    fn pop_front(&mut self, sent: bool) {
        (**self).pop_front(sent);
    }
    fn take_ops(&mut self, into: &mut Vec<SocketOp>) {
        (**self).take_ops(into);
    }
    fn take_stop(&mut self) -> bool {
        (**self).take_stop()
    }
    fn shutdown(&mut self) {
        (**self).shutdown();
    }
}
