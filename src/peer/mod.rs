//! Direct peer-to-peer messaging: the peer side of protocol.md section 6.
//!
//! A directory server knows where each user accepts direct connections
//! (`BIND`, `QUERY`, `LEAVE`, which the client library sends: `Client::bind`,
//! `Client::query`, `Client::leave`). Peers then speak the same frames to each other,
//! without the server and without a login:
//!
//! - `MESSAGE LEN <sender>` + payload, answered `ACK` by the receiver;
//! - `PING 0`, answered `PONG 0` (the directory server probes an endpoint
//!   with exactly this, on a fresh connection, before it accepts a `BIND`
//!   and every probe interval after).
//!
//! The pieces, sans-IO where they can be:
//!
//! | piece | what |
//! | --- | --- |
//! | [`PeerSession`] | the receiving end of one connection, sans-IO: bytes in, [`PeerEvent`]s and replies out, idle timeout |
//! | [`PeerEndpoint`] | a listener on a background thread with its own `mio` loop, serving [`PeerSession`]s; messages through [`PeerEndpoint::recv`] or a callback |
//! | [`DialSession`] | the sending end, sans-IO: `MESSAGE`/`PING` out, replies matched in order |
//! | [`PeerLink`], [`deliver`], [`ping`] | the sending end over a blocking socket, every call bounded by a timeout |
//!
//! Peers do not authenticate each other (the lecture's form): a
//! [`PeerMessage`]'s sender is the name the sending peer gave. The address
//! it came from ([`PeerMessage::from`]) can be compared with the sender's
//! directory entry.
//!
//! ```no_run
//! use std::time::Duration;
//! use switchboard::peer::{self, PeerConfig, PeerEndpoint};
//!
//! // Bob listens (and would BIND this address in the directory).
//! let bob = PeerEndpoint::bind(PeerConfig::new("127.0.0.1:0".parse()?))?;
//! // Alice found bob's address with QUERY; she delivers straight to him.
//! let ack = peer::deliver(bob.local_addr(), "alice", b"hi bob", Duration::from_secs(5))?;
//! let message = bob.recv(Some(Duration::from_secs(5)))?;
//! println!("{ack}; {}: {}", message.sender, String::from_utf8_lossy(&message.payload));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dial;
mod endpoint;
mod session;

use std::fmt;
use std::io;

pub use self::dial::{DialSession, MAX_REPLY_PAYLOAD, PeerLink, PeerReply, SentId, deliver, ping};
pub use self::endpoint::{PeerConfig, PeerEndpoint, PeerMessage, PeerStats};
pub use self::session::{Ending, OUTPUT_PAUSE, PeerEvent, PeerSession, SessionLimits};
use crate::error::ErrorCode;

/// Why a peer call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PeerError {
    /// The socket failed: connection refused, reset, unreachable.
    Io(io::Error),
    /// No connection or no answer within the timeout.
    Timeout,
    /// The peer refused with `ERR` (`busy`, `too-large`, `server-full`, ...).
    Refused {
        /// The contract's code.
        code: ErrorCode,
        /// The peer's sentence.
        text: String,
    },
    /// The peer closed the connection before it answered (or the endpoint
    /// is stopped).
    Closed,
    /// The peer sent something a receiving peer may not send.
    Protocol(String),
    /// An argument of ours is invalid (a sender that is not a user name);
    /// nothing was sent.
    BadArgs(String),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Timeout => f.write_str("no answer in time"),
            Self::Refused { code, text } => write!(f, "refused ({code}): {text}"),
            Self::Closed => f.write_str("the peer closed the connection without an answer"),
            Self::Protocol(why) => write!(f, "protocol error: {why}"),
            Self::BadArgs(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for PeerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for PeerError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

#[cfg(test)]
mod tests;
