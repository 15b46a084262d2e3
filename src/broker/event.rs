//! Events the broker reports to the embedding program.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::conn::PeerIdentity;
use crate::conn::{CloseReason, ConnId};
use crate::proto::GroupId;

/// Something that happened in the broker (SocketPro's OnSubscribe, OnPublish,
/// OnSendUserMessage and friends). Read with
/// [`crate::broker::Broker::poll_event`]; the server hands them to its
/// [`crate::Handler`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A connection was accepted.
    Connected {
        /// The connection.
        conn: ConnId,
        /// Its peer address.
        peer: SocketAddr,
    },
    /// A TLS handshake completed, or a WebSocket upgrade was accepted
    /// (after the TLS handshake under it, for `wss`): the connection is
    /// ready for the protocol.
    Secured {
        /// The connection.
        conn: ConnId,
        /// The verified client certificate's subject, if the client sent one.
        subject: Option<PeerIdentity>,
    },
    /// A session logged in.
    LoggedIn {
        /// The connection.
        conn: ConnId,
        /// The user name, as typed.
        user: String,
    },
    /// A session subscribed to groups it was not in.
    Subscribed {
        /// The connection.
        conn: ConnId,
        /// The user.
        user: String,
        /// The groups newly joined.
        groups: Vec<GroupId>,
    },
    /// A session left groups (by `UNSUBSCRIBE` or by disconnecting).
    Unsubscribed {
        /// The connection.
        conn: ConnId,
        /// The user.
        user: String,
        /// The groups left.
        groups: Vec<GroupId>,
    },
    /// A message was published.
    Published {
        /// The publishing connection, or `None` for the server itself.
        conn: Option<ConnId>,
        /// The sender's user name (`@server` for the server).
        sender: String,
        /// The groups, as published.
        groups: Vec<GroupId>,
        /// The payload (shared with the frame sent to subscribers).
        payload: Bytes,
        /// How many connections it was queued for.
        delivered: usize,
    },
    /// A one-to-one message was sent.
    UserMessage {
        /// The sending connection, or `None` for the server itself.
        conn: Option<ConnId>,
        /// The sender's user name (`@server` for the server).
        from: String,
        /// The recipient user name.
        to: String,
        /// The payload (shared with the frame sent to the recipient).
        payload: Bytes,
    },
    /// A user's peer endpoint entered the directory (a `BIND` whose probe
    /// answered, or the embedding program's entry), or replaced its entry.
    Bound {
        /// The user name.
        user: String,
        /// The endpoint.
        addr: std::net::SocketAddr,
    },
    /// An entry left the directory.
    Unbound {
        /// The user name.
        user: String,
        /// The endpoint it had.
        addr: std::net::SocketAddr,
        /// Why: `left` (`LEAVE`), `its probe failed`, `removed by the server`.
        reason: &'static str,
    },
    /// A request to a group the embedding program serves
    /// ([`crate::broker::Broker::serve_requests`]) that no session took:
    /// answer it with `reply_as_host(rid, ...)` before its timeout.
    Request {
        /// Names the request in the answer.
        rid: String,
        /// The requester's user name.
        from: String,
        /// The group.
        group: GroupId,
        /// The request.
        payload: Bytes,
    },
    /// The answer to a request the embedding program sent
    /// (`request_as_host`): the responder's payload, or why none
    /// (`Timeout`, `NoResponders`).
    Replied {
        /// The rid `request_as_host` returned.
        rid: String,
        /// The answer.
        outcome: crate::broker::RequestOutcome,
    },
    /// A connection ended.
    Closed {
        /// The connection.
        conn: ConnId,
        /// The user, if it had logged in.
        user: Option<String>,
        /// Why.
        reason: CloseReason,
    },
}
