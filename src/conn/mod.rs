//! The connection layer: what every protocol on the loop shares.
//!
//! A connection's id, why it closed and who the peer proved to be are named
//! here, below every protocol (the broker, the framed services) and below
//! the transports, so that none of them has to import another to talk about
//! a connection.

use std::fmt;

/// Identifies one connection while it is open. Ids are reused after a
/// connection closes; log lines name a connection by its [`LogId`] instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) usize);

impl ConnId {
    /// The id as a number (for logs).
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How log lines name a connection: `c1234`, the number the connection
/// table gave it when it was accepted (one counter for the whole process,
/// so never reused within a run, unlike a [`ConnId`]), and with
/// [`Links::log_peer`] its peer address too (`c1234 192.0.2.7:51234`).
///
/// A connection no longer in the table shows as its slot, `#12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogId {
    number: Option<u32>,
    slot: usize,
    peer: Option<std::net::SocketAddr>,
}

impl LogId {
    /// The run-wide number, if the connection was in the table.
    pub fn number(&self) -> Option<u32> {
        self.number
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.number {
            Some(n) => write!(f, "c{n}")?,
            None => write!(f, "#{}", self.slot)?,
        }
        match self.peer {
            Some(peer) => write!(f, " {peer}"),
            None => Ok(()),
        }
    }
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent `QUIT`.
    Quit,
    /// The client closed its side of the connection.
    PeerClosed,
    /// A read or write failed (e.g. connection reset).
    Io,
    /// The client sent a header that could not be parsed.
    BadFrame,
    /// The client declared a payload over the limit.
    TooLarge,
    /// Wrong password or unknown user.
    AuthFailed,
    /// No login within the login timeout.
    LoginTimeout,
    /// No answer to the server's `PING` within the ping timeout.
    PingTimeout,
    /// The client did not read its output fast enough.
    SlowConsumer,
    /// The server was at its connection limit.
    ServerFull,
    /// The server is shutting down.
    Shutdown,
    /// The embedding program closed it.
    Closed,
    /// The TLS handshake or a TLS record failed.
    Tls,
    /// An outgoing connection could not be made (refused, unreachable).
    ConnectFailed,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Quit => "quit",
            Self::PeerClosed => "peer closed",
            Self::Io => "i/o error",
            Self::BadFrame => "bad frame",
            Self::TooLarge => "payload too large",
            Self::AuthFailed => "authentication failed",
            Self::LoginTimeout => "login timeout",
            Self::PingTimeout => "ping timeout",
            Self::SlowConsumer => "slow consumer",
            Self::ServerFull => "server full",
            Self::Shutdown => "shutting down",
            Self::Closed => "closed by the server",
            Self::Tls => "TLS error",
            Self::ConnectFailed => "connect failed",
        })
    }
}

/// Who the peer proved to be: the subject of its verified certificate (the
/// client's on a mutual-TLS listener, the server's on an outgoing TLS
/// connection), as the embedding API reports it.
///
/// Each field is the first value of that attribute in the subject, or `None`
/// when the attribute is absent or its value is not a UTF-8 compatible string
/// type (UTF8String, PrintableString, IA5String or NumericString).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Country (C).
    pub c: Option<String>,
    /// State or province (ST).
    pub st: Option<String>,
    /// Locality (L).
    pub l: Option<String>,
    /// Organisation (O).
    pub o: Option<String>,
    /// Organisational unit (OU).
    pub ou: Option<String>,
    /// Common name (CN); with `--auth cert` this is the user name.
    pub cn: Option<String>,
}

impl fmt::Display for PeerIdentity {
    /// `C=FR, O=Acme, CN=alice`: the present fields in the order C, ST, L, O,
    /// OU, CN. Values are not escaped; this is for logs and messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = [
            ("C", &self.c),
            ("ST", &self.st),
            ("L", &self.l),
            ("O", &self.o),
            ("OU", &self.ou),
            ("CN", &self.cn),
        ];
        let mut sep = "";
        for (name, value) in fields {
            if let Some(value) = value {
                write!(f, "{sep}{name}={value}")?;
                sep = ", ";
            }
        }
        Ok(())
    }
}

pub mod links;
pub mod stats;
pub(crate) mod tick;

pub use links::{Admission, Limits, Link, Links, PushError, REJECT_SLACK, Shared, Table};
pub use stats::IoStats;
