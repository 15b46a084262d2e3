//! The broker's settings: limits, timeouts and the authentication mode.

use std::time::Duration;

use std::sync::Arc;

use crate::acl::Acl;
use crate::conn::Limits;
use crate::proto::frame::DEFAULT_MAX_PAYLOAD;

/// How clients log in (protocol.md section 3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthMode {
    /// `USER` alone logs in.
    #[default]
    None,
    /// `USER` then `PASS`, checked by the server's authenticator off the loop.
    Password,
    /// The verified client certificate's subject CN is the user name; the
    /// session is logged in when the TLS handshake completes.
    Cert,
}

impl AuthMode {
    /// The name used in `HELLO` and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Password => "password",
            Self::Cert => "cert",
        }
    }
}

/// Limits and timeouts of the broker. The defaults are the contract's.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// How clients log in.
    pub auth: AuthMode,
    /// Any group number may be used, created on first use.
    pub open_groups: bool,
    /// Most concurrent connections; one more gets `ERR server-full`.
    pub max_connections: usize,
    /// Largest payload accepted (at least 64 KiB).
    pub max_payload: usize,
    /// Unsent output per connection before it is a slow consumer.
    pub max_pending: usize,
    /// Unsent output above which a connection's own input is no longer read
    /// (backpressure for clients that pipeline without reading replies).
    pub read_pause: usize,
    /// Time to log in, counted from accept (TLS handshake included).
    pub login_timeout: Duration,
    /// Silence after which the server sends `PING`.
    pub ping_interval: Duration,
    /// Time to answer the server's `PING` (any input counts).
    pub ping_timeout: Duration,
    /// How long a closing connection may take to flush what it is owed
    /// (protocol.md 7a: gone within 2 s).
    pub linger: Duration,
    /// On shutdown, how long connections may take to read what they are
    /// owed before `ERR shutting-down` and the close (cli.md
    /// `--drain-timeout`).
    pub drain_timeout: Duration,
    /// Per session: group subscriptions and watches together (a
    /// subscription and a watch of one group count as two).
    pub max_subscriptions: usize,
    /// Sessions one user may have at once.
    pub max_sessions_per_user: usize,
    /// Groups created by use under `open_groups`, in total.
    pub max_open_groups: usize,
    /// Password checks waiting or running at once; one more gets `ERR busy`.
    pub max_password_checks: usize,
    /// How often each directory entry is probed again (cli.md
    /// `--probe-interval`).
    pub probe_interval: Duration,
    /// Who may subscribe, publish, watch and send (`--acl`); `None`: everyone
    /// may do everything. Replace it at run time with `Broker::set_acl`.
    pub acl: Option<Arc<Acl>>,
    /// This server's name in a cluster (`HELLO`'s `node=`; `--node`).
    /// Empty (the default): a server names itself by its host name and
    /// plain listener's port.
    pub node: String,
}

impl BrokerConfig {
    /// The connection table's share of these settings.
    pub fn limits(&self) -> Limits {
        // Input stops well before the output bound: a client that pipelines
        // requests and reads the replies is paused, never cut off as a slow
        // consumer by the replies to one read.
        let read_pause = self.read_pause.min(self.max_pending / 2).max(1);
        Limits {
            max_connections: self.max_connections,
            max_pending: self.max_pending,
            read_pause,
            untrusted_read_pause: read_pause.min(UNTRUSTED_READ_PAUSE),
            // One header and a payload of `PRELOGIN_MAX_PAYLOAD`.
            untrusted_read_window: crate::proto::frame::MAX_HEADER_LEN
                + crate::broker::PRELOGIN_MAX_PAYLOAD,
            linger: self.linger,
            drain: self.drain_timeout,
        }
    }
}

/// Output held above which a connection that has not logged in is read no
/// further (protocol.md 7a: "a small output bound" before login).
const UNTRUSTED_READ_PAUSE: usize = 16 << 10;

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            auth: AuthMode::None,
            open_groups: false,
            max_connections: 10_000,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_pending: 8 << 20,
            read_pause: 256 << 10,
            login_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(10),
            max_subscriptions: 10_000,
            max_sessions_per_user: 64,
            max_open_groups: 100_000,
            max_password_checks: 64,
            probe_interval: Duration::from_secs(30),
            acl: None,
            node: String::new(),
        }
    }
}
