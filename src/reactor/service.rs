//! What the reactor needs from a protocol: the `Service` trait, with its two
//! implementations, the broker (`BrokerService`) and the generic layer's
//! `FramedService` (see [`crate::framed`]).
//!
//! The reactor owns sockets, readiness and buffers; a service owns the
//! per-connection protocol state and keeps the reactor's [`Conn`] in its own
//! slab (so neither side pays for a second table or a key map). The trait is
//! exactly the set of calls the reactor made on the broker before there was
//! more than one protocol, plus `after_input` (hand events to the host's
//! handler once per turn) and `handle_control` (requests from other threads).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::auth::{AuthPool, AuthVerdict};
use crate::broker::{Broker, CloseReason, ConnId};
use crate::buf::OutQueue;
use crate::conn::PeerIdentity;
use crate::framed::{FramedHandler, FramedService};
use crate::handler::{Context, Handler, dispatch};
use crate::server::Control;

use super::Conn;

/// One protocol served by the reactor. Every method mirrors the broker
/// method of the same name (see [`Broker`] for the contracts).
pub(crate) trait Service {
    /// Takes a new connection, or hands `io` back to be dropped.
    fn accept(&mut self, io: Conn, peer: SocketAddr, now: Instant) -> Result<ConnId, Conn>;
    fn io_mut(&mut self, conn: ConnId) -> Option<&mut Conn>;
    fn io_and_output(&mut self, conn: ConnId) -> Option<(&mut Conn, &mut OutQueue)>;
    fn wants_read(&self, conn: ConnId) -> bool;
    fn is_closing(&self, conn: ConnId) -> bool;
    fn finished(&self, conn: ConnId, now: Instant) -> bool;
    fn take_dirty(&mut self, into: &mut Vec<ConnId>);
    fn has_dirty(&self) -> bool;
    /// Whether `after_input` has work that cannot wait for the next event.
    fn has_events(&self) -> bool;
    fn handle_timeout(&mut self, now: Instant);
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_input(&mut self, conn: ConnId, data: &[u8], now: Instant);
    fn handle_eof(&mut self, conn: ConnId, now: Instant);
    fn handle_secured(&mut self, conn: ConnId, subject: Option<PeerIdentity>, now: Instant);
    fn touch(&mut self, conn: ConnId);
    fn resume(&mut self, conn: ConnId, now: Instant);
    fn remove(&mut self, conn: ConnId, reason: CloseReason) -> Option<Conn>;
    fn shutdown(&mut self, now: Instant);
    fn peer(&self, conn: ConnId) -> Option<SocketAddr>;
    fn len(&self) -> usize;
    /// How long a closing connection may wait for its peer.
    fn linger(&self) -> Duration;
    /// Once per turn after input and timers: hand events to the handler and
    /// queued work to workers. Returns whether the handler asked to stop.
    fn after_input(&mut self, now: Instant) -> bool;
    /// A request from another thread addressed to this service. Returns
    /// whether it asked to stop.
    fn handle_control(&mut self, control: Control, now: Instant) -> bool;
}

/// A boxed service is a service: the [`crate::EventLoop`] hosts
/// `Box<dyn Service>` to mix kinds.
impl<S: Service + ?Sized> Service for Box<S> {
    fn accept(&mut self, io: Conn, peer: SocketAddr, now: Instant) -> Result<ConnId, Conn> {
        (**self).accept(io, peer, now)
    }
    fn io_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        (**self).io_mut(conn)
    }
    fn io_and_output(&mut self, conn: ConnId) -> Option<(&mut Conn, &mut OutQueue)> {
        (**self).io_and_output(conn)
    }
    fn wants_read(&self, conn: ConnId) -> bool {
        (**self).wants_read(conn)
    }
    fn is_closing(&self, conn: ConnId) -> bool {
        (**self).is_closing(conn)
    }
    fn finished(&self, conn: ConnId, now: Instant) -> bool {
        (**self).finished(conn, now)
    }
    fn take_dirty(&mut self, into: &mut Vec<ConnId>) {
        (**self).take_dirty(into);
    }
    fn has_dirty(&self) -> bool {
        (**self).has_dirty()
    }
    fn has_events(&self) -> bool {
        (**self).has_events()
    }
    fn handle_timeout(&mut self, now: Instant) {
        (**self).handle_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
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
    fn touch(&mut self, conn: ConnId) {
        (**self).touch(conn);
    }
    fn resume(&mut self, conn: ConnId, now: Instant) {
        (**self).resume(conn, now);
    }
    fn remove(&mut self, conn: ConnId, reason: CloseReason) -> Option<Conn> {
        (**self).remove(conn, reason)
    }
    fn shutdown(&mut self, now: Instant) {
        (**self).shutdown(now);
    }
    fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        (**self).peer(conn)
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn linger(&self) -> Duration {
        (**self).linger()
    }
    fn after_input(&mut self, now: Instant) -> bool {
        (**self).after_input(now)
    }
    fn handle_control(&mut self, control: Control, now: Instant) -> bool {
        (**self).handle_control(control, now)
    }
}

/// The broker with the host's [`Handler`] and its password-check pool.
pub(crate) struct BrokerService<H> {
    pub(crate) broker: Broker<Conn>,
    pub(crate) handler: H,
    pub(crate) auth: Option<AuthPool>,
}

impl<H> std::fmt::Debug for BrokerService<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerService")
            .field("connections", &self.broker.len())
            .finish()
    }
}

impl<H: Handler> BrokerService<H> {
    pub(crate) fn new(mut broker: Broker<Conn>, handler: H, auth: Option<AuthPool>) -> Self {
        broker.set_events_enabled(handler.wants_events());
        Self {
            broker,
            handler,
            auth,
        }
    }
}

impl<H: Handler> Service for BrokerService<H> {
    fn accept(&mut self, io: Conn, peer: SocketAddr, now: Instant) -> Result<ConnId, Conn> {
        self.broker.accept(io, peer, now)
    }
    fn io_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        self.broker.io_mut(conn)
    }
    fn io_and_output(&mut self, conn: ConnId) -> Option<(&mut Conn, &mut OutQueue)> {
        self.broker.io_and_output(conn)
    }
    fn wants_read(&self, conn: ConnId) -> bool {
        self.broker.wants_read(conn)
    }
    fn is_closing(&self, conn: ConnId) -> bool {
        self.broker.is_closing(conn)
    }
    fn finished(&self, conn: ConnId, now: Instant) -> bool {
        self.broker.finished(conn, now)
    }
    fn take_dirty(&mut self, into: &mut Vec<ConnId>) {
        self.broker.take_dirty(into);
    }
    fn has_dirty(&self) -> bool {
        self.broker.has_dirty()
    }
    fn has_events(&self) -> bool {
        self.broker.has_events()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.broker.handle_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.broker.poll_timeout()
    }
    fn handle_input(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        self.broker.handle_input(conn, data, now);
    }
    fn handle_eof(&mut self, conn: ConnId, now: Instant) {
        self.broker.handle_eof(conn, now);
    }
    fn handle_secured(&mut self, conn: ConnId, subject: Option<PeerIdentity>, now: Instant) {
        self.broker.handle_secured(conn, subject, now);
    }
    fn touch(&mut self, conn: ConnId) {
        self.broker.touch(conn);
    }
    fn resume(&mut self, conn: ConnId, now: Instant) {
        self.broker.resume(conn, now);
    }
    fn remove(&mut self, conn: ConnId, reason: CloseReason) -> Option<Conn> {
        self.broker.remove(conn, reason)
    }
    fn shutdown(&mut self, now: Instant) {
        self.broker.shutdown(now);
    }
    fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        self.broker.peer(conn)
    }
    fn len(&self) -> usize {
        self.broker.len()
    }
    fn linger(&self) -> Duration {
        self.broker.config().linger
    }

    /// Hands password checks to the pool and events to the handler.
    fn after_input(&mut self, now: Instant) -> bool {
        while let Some(req) = self.broker.poll_auth_request() {
            match &self.auth {
                Some(pool) => pool.submit(req),
                None => self
                    .broker
                    .handle_auth_result(req.conn, req.ticket, false, now),
            }
        }
        let mut stop = false;
        while let Some(event) = self.broker.poll_event() {
            let mut ctx = Context {
                broker: &mut self.broker,
                now,
                stop: &mut stop,
            };
            dispatch(&mut self.handler, &mut ctx, event);
        }
        stop
    }

    fn handle_control(&mut self, control: Control, now: Instant) -> bool {
        match control {
            Control::Auth(_, AuthVerdict { conn, ticket, ok }) => {
                self.broker.handle_auth_result(conn, ticket, ok, now);
                false
            }
            Control::Call(_, f) => {
                let mut stop = false;
                let mut ctx = Context {
                    broker: &mut self.broker,
                    now,
                    stop: &mut stop,
                };
                f(&mut ctx);
                stop
            }
            Control::Stop => true,
        }
    }
}

impl<H: FramedHandler> Service for FramedService<Conn, H> {
    fn accept(&mut self, io: Conn, peer: SocketAddr, now: Instant) -> Result<ConnId, Conn> {
        Self::accept(self, io, peer, now)
    }
    fn io_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        Self::io_mut(self, conn)
    }
    fn io_and_output(&mut self, conn: ConnId) -> Option<(&mut Conn, &mut OutQueue)> {
        Self::io_and_output(self, conn)
    }
    fn wants_read(&self, conn: ConnId) -> bool {
        Self::wants_read(self, conn)
    }
    fn is_closing(&self, conn: ConnId) -> bool {
        Self::is_closing(self, conn)
    }
    fn finished(&self, conn: ConnId, now: Instant) -> bool {
        Self::finished(self, conn, now)
    }
    fn take_dirty(&mut self, into: &mut Vec<ConnId>) {
        Self::take_dirty(self, into);
    }
    fn has_dirty(&self) -> bool {
        Self::has_dirty(self)
    }
    fn has_events(&self) -> bool {
        // A handler may ask to stop from a callback that runs after this
        // turn's `after_input` (a close during the final flush): the next
        // poll must not block before the loop sees it.
        self.stop_requested()
    }
    fn handle_timeout(&mut self, now: Instant) {
        Self::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Self::poll_timeout(self)
    }
    fn handle_input(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        Self::handle_input(self, conn, data, now);
    }
    fn handle_eof(&mut self, conn: ConnId, now: Instant) {
        Self::handle_eof(self, conn, now);
    }
    fn handle_secured(&mut self, conn: ConnId, subject: Option<PeerIdentity>, now: Instant) {
        Self::handle_secured(self, conn, subject, now);
    }
    fn touch(&mut self, conn: ConnId) {
        Self::touch(self, conn);
    }
    fn resume(&mut self, conn: ConnId, now: Instant) {
        Self::resume(self, conn, now);
    }
    fn remove(&mut self, conn: ConnId, reason: CloseReason) -> Option<Conn> {
        // The reactor drops connections outside any turn's clock reading; the
        // handler's `close` only needs a linger start, so now is close enough.
        Self::remove(self, conn, reason, Instant::now())
    }
    fn shutdown(&mut self, now: Instant) {
        Self::shutdown(self, now);
    }
    fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        Self::peer(self, conn)
    }
    fn len(&self) -> usize {
        Self::len(self)
    }
    fn linger(&self) -> Duration {
        Self::linger(self)
    }
    fn after_input(&mut self, _now: Instant) -> bool {
        self.take_stop()
    }
    fn handle_control(&mut self, control: Control, _now: Instant) -> bool {
        matches!(control, Control::Stop)
    }
}
