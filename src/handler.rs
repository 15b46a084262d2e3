//! The embedding API: callbacks from the loop, and what they may do.
//!
//! A host program implements [`Handler`] to hear about connections, logins,
//! subscriptions, publishes, user messages and closes (SocketPro's
//! OnSubscribe / OnPublish / OnSendUserMessage). Every callback runs on the
//! loop thread and gets a [`Context`] through which it can publish or send as
//! `@server`, look up a connection, register groups, close a connection or
//! stop the server. Callbacks must not block: the loop serves everyone.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use std::sync::Arc;

use crate::acl::Acl;
pub use crate::broker::{Attempt, Authorize, Verdict};
use crate::broker::{
    Broker, CloseReason, ConnId, DeliveryError, Event, RequestOutcome, SERVER_USER, Sessions,
};
use crate::conn::PeerIdentity;
use crate::proto::GroupId;
use crate::reactor::Conn;

/// Callbacks from the server loop. Every method has an empty default.
#[allow(unused_variables)] // The defaults ignore their arguments by design.
pub trait Handler {
    /// Whether the server should report events at all. `false` saves an
    /// allocation per event; the no-op handler `()` says `false`.
    fn wants_events(&self) -> bool {
        true
    }
    /// Whether a session may log in, subscribe, publish, watch or send, asked
    /// before it takes effect (after the ACL, if any, allowed it). A
    /// [`Verdict::Deny`] is `ERR forbidden`: nothing of that command happens
    /// and the session goes on; a refused login is also closed. Runs on the
    /// loop, in the middle of the command: it gets no [`Context`] and must
    /// answer at once. The default allows everything.
    fn authorize(&mut self, request: &Authorize<'_>) -> Verdict {
        Verdict::Allow
    }
    /// A connection was accepted.
    fn on_connect(&mut self, ctx: &mut Context<'_>, conn: ConnId, peer: SocketAddr) {}
    /// A TLS handshake completed, or a WebSocket upgrade was accepted
    /// (after its TLS handshake, for `wss`); `subject` is the verified
    /// client certificate's subject, if the client presented one.
    fn on_secure(&mut self, ctx: &mut Context<'_>, conn: ConnId, subject: Option<&PeerIdentity>) {}
    /// A session logged in as `user`.
    fn on_login(&mut self, ctx: &mut Context<'_>, conn: ConnId, user: &str) {}
    /// A session joined `groups` (only groups it was not in already).
    fn on_subscribe(
        &mut self,
        ctx: &mut Context<'_>,
        conn: ConnId,
        user: &str,
        groups: &[GroupId],
    ) {
    }
    /// A session left `groups`, by `UNSUBSCRIBE` or by disconnecting.
    fn on_unsubscribe(
        &mut self,
        ctx: &mut Context<'_>,
        conn: ConnId,
        user: &str,
        groups: &[GroupId],
    ) {
    }
    /// A message was published and queued for `delivered` connections.
    /// `conn` is `None` when the server itself published.
    fn on_publish(
        &mut self,
        ctx: &mut Context<'_>,
        conn: Option<ConnId>,
        sender: &str,
        groups: &[GroupId],
        payload: &Bytes,
        delivered: usize,
    ) {
    }
    /// A one-to-one message was sent. `conn` is `None` when the server sent it.
    fn on_user_message(
        &mut self,
        ctx: &mut Context<'_>,
        conn: Option<ConnId>,
        from: &str,
        to: &str,
        payload: &Bytes,
    ) {
    }
    /// A connection ended.
    fn on_close(
        &mut self,
        ctx: &mut Context<'_>,
        conn: ConnId,
        user: Option<&str>,
        reason: CloseReason,
    ) {
    }
    /// A user's peer endpoint entered the directory (its `BIND` probe
    /// answered, or [`Context::bind`] added it), or replaced its entry.
    fn on_bind(&mut self, ctx: &mut Context<'_>, user: &str, addr: SocketAddr) {}
    /// An entry left the directory: `reason` is `left` (`LEAVE`), `its
    /// probe failed`, or `removed by the server` ([`Context::unbind`]).
    fn on_unbind(&mut self, ctx: &mut Context<'_>, user: &str, addr: SocketAddr, reason: &str) {}
    /// A request to a group this program serves ([`Context::serve_requests`])
    /// that no session took, or a survey of that group: answer with
    /// [`Context::reply`] (now or later, before its deadline; an unanswered
    /// request gets `ERR timeout`).
    fn on_request(
        &mut self,
        ctx: &mut Context<'_>,
        rid: &str,
        from: &str,
        group: GroupId,
        payload: &Bytes,
    ) {
    }
    /// The answer to a request this program sent ([`Context::request`]).
    fn on_reply(&mut self, ctx: &mut Context<'_>, rid: &str, outcome: RequestOutcome) {}
}

/// A handler that does nothing.
impl Handler for () {
    fn wants_events(&self) -> bool {
        false
    }
}

/// What a [`Handler`] callback (or a closure sent with
/// [`crate::ServerHandle::call`]) may do inside the loop.
pub struct Context<'a> {
    pub(crate) broker: &'a mut Broker,
    pub(crate) links: &'a mut Sessions<Conn>,
    pub(crate) now: Instant,
    pub(crate) stop: &'a mut bool,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("connections", &self.links.len())
            .finish()
    }
}

impl Context<'_> {
    /// Publishes `payload` to `groups` as `@server`. Returns how many
    /// connections it was queued for.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::UnknownGroup`] if a group is not registered.
    pub fn publish(&mut self, groups: &[GroupId], payload: &[u8]) -> Result<usize, DeliveryError> {
        self.broker
            .publish(self.links, SERVER_USER, groups, payload)
    }

    /// Sends `payload` to every session of `user` as `@server`.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::NoSuchUser`] if the user is not online.
    pub fn send(&mut self, user: &str, payload: &[u8]) -> Result<usize, DeliveryError> {
        self.broker.send(self.links, SERVER_USER, user, payload)
    }

    /// Registers (or renames) a group.
    pub fn register_group(&mut self, id: GroupId, name: &str) -> bool {
        self.broker.register_group(id, name)
    }

    /// The registered groups.
    pub fn groups(&self) -> Vec<(GroupId, String)> {
        self.broker.groups()
    }

    /// The users online.
    pub fn users(&self) -> Vec<String> {
        self.broker.users(self.links)
    }

    /// The peer address of a connection.
    pub fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        self.links.peer(conn)
    }

    /// The verified client certificate subject of a connection (C, ST, L, O,
    /// OU, CN), when it came over mutual TLS.
    pub fn client_cert(&self, conn: ConnId) -> Option<&PeerIdentity> {
        self.links.identity(conn)
    }

    /// The user a connection logged in as.
    pub fn user(&self, conn: ConnId) -> Option<&str> {
        self.broker.user_of(self.links, conn)
    }

    /// Starts closing a connection (it is flushed first).
    pub fn close(&mut self, conn: ConnId) {
        self.broker.close(self.links, conn, self.now);
    }

    /// Replaces the ACL (`None`: everyone may do everything). Sessions keep
    /// their subscriptions; the new rules apply to their next commands.
    pub fn set_acl(&mut self, acl: Option<Arc<Acl>>) {
        self.broker.set_acl(acl);
    }

    /// Adds (or replaces) a directory entry without a probe: the program's
    /// word is taken for it. It is re-probed like any other entry, and goes
    /// when a probe fails.
    pub fn bind(&mut self, user: &str, addr: SocketAddr) {
        self.broker
            .add_directory_entry(self.links, user, addr, self.now);
    }

    /// Removes a directory entry; returns whether there was one.
    pub fn unbind(&mut self, user: &str) -> bool {
        self.broker.remove_directory_entry(user)
    }

    /// The directory: `(user, endpoint)`, sorted by user.
    pub fn directory(&self) -> Vec<(String, SocketAddr)> {
        self.broker.directory()
    }

    /// Whether this program answers requests to `group` that no session
    /// takes (they arrive at [`Handler::on_request`]).
    pub fn serve_requests(&mut self, group: GroupId, on: bool) {
        self.broker.serve_requests(group, on);
    }

    /// Answers a request handed to [`Handler::on_request`]; returns whether
    /// it was still waiting.
    pub fn reply(&mut self, rid: &str, payload: &[u8]) -> bool {
        self.broker.reply_as_host(self.links, rid, payload)
    }

    /// Sends a request to a responder of `group` as `@server`; the answer
    /// comes to [`Handler::on_reply`] with the rid returned.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::UnknownGroup`], or [`DeliveryError::NoResponders`]
    /// when no session answers requests on `group`.
    pub fn request(
        &mut self,
        group: GroupId,
        payload: &[u8],
        timeout: std::time::Duration,
    ) -> Result<String, DeliveryError> {
        self.broker
            .request_as_host(self.links, group, payload, timeout)
    }

    /// Surveys `group` as `@server`; the answers (a `RESULT` payload of
    /// `RESPONSE` frames) come to [`Handler::on_reply`] at the deadline.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::UnknownGroup`], or [`DeliveryError::NoResponders`]
    /// when nobody is in `group`.
    pub fn survey(
        &mut self,
        group: GroupId,
        payload: &[u8],
        deadline: std::time::Duration,
    ) -> Result<String, DeliveryError> {
        self.broker
            .survey_as_host(self.links, group, payload, deadline)
    }

    /// Stops the server gracefully.
    pub fn stop(&mut self) {
        *self.stop = true;
    }
}

/// A handler as the broker's [`crate::broker::Authorizer`].
pub(crate) struct HandlerAuthz<'a, H>(pub(crate) &'a mut H);

impl<H: Handler> crate::broker::Authorizer for HandlerAuthz<'_, H> {
    fn authorize(&mut self, request: &Authorize<'_>) -> Verdict {
        self.0.authorize(request)
    }
}

/// Hands one broker event to the handler.
pub(crate) fn dispatch<H: Handler>(handler: &mut H, ctx: &mut Context<'_>, event: Event) {
    match event {
        Event::Connected { conn, peer } => handler.on_connect(ctx, conn, peer),
        Event::Secured { conn, subject } => handler.on_secure(ctx, conn, subject.as_ref()),
        Event::LoggedIn { conn, user } => handler.on_login(ctx, conn, &user),
        Event::Subscribed { conn, user, groups } => handler.on_subscribe(ctx, conn, &user, &groups),
        Event::Unsubscribed { conn, user, groups } => {
            handler.on_unsubscribe(ctx, conn, &user, &groups)
        }
        Event::Published {
            conn,
            sender,
            groups,
            payload,
            delivered,
        } => handler.on_publish(ctx, conn, &sender, &groups, &payload, delivered),
        Event::UserMessage {
            conn,
            from,
            to,
            payload,
        } => handler.on_user_message(ctx, conn, &from, &to, &payload),
        Event::Closed { conn, user, reason } => {
            handler.on_close(ctx, conn, user.as_deref(), reason)
        }
        Event::Bound { user, addr } => handler.on_bind(ctx, &user, addr),
        Event::Unbound { user, addr, reason } => handler.on_unbind(ctx, &user, addr, reason),
        Event::Request {
            rid,
            from,
            group,
            payload,
        } => handler.on_request(ctx, &rid, &from, group, &payload),
        Event::Replied { rid, outcome } => handler.on_reply(ctx, &rid, outcome),
    }
}
