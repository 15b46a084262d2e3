//! One client session's protocol state: login, subscriptions and deadlines.
//!
//! A `Session` rides in the connection table's slot ([`crate::conn::Links`]),
//! beside what every connection has (transport, buffers, closing state); the
//! broker steps it. Its deadlines are derived from a few instants rather than
//! kept as separate timers, so activity (which happens on every read) never
//! touches the timer heap: the heap holds at most one entry per session,
//! which re-checks the derived deadline when it fires.

use std::sync::Arc;

use crate::broker::config::BrokerConfig;
use crate::conn::tick::Tick;
use crate::proto::GroupId;

/// Where a session is in its login.
#[derive(Debug)]
pub(crate) enum State {
    /// Connected, not logged in. In password mode `user` holds the name given
    /// by `USER`, and `verifying` is set while its password is being checked
    /// off the loop (input processing pauses until the answer comes back, so
    /// replies stay in order).
    Login {
        user: Option<Box<str>>,
        verifying: bool,
    },
    /// Logged in.
    Open,
}

/// The broker's state for one connection (opaque outside the broker).
#[derive(Debug)]
pub struct Session {
    pub(crate) state: State,
    /// The name this session logged in with, as typed.
    pub(crate) name: Option<Arc<str>>,
    /// Groups this session is subscribed to.
    pub(crate) groups: Vec<GroupId>,
    /// Groups this session watches.
    pub(crate) watching: Vec<GroupId>,
    pub(crate) opened: Tick,
    pub(crate) last_rx: Tick,
    pub(crate) ping_sent: Option<Tick>,
    /// The deadline of this session's entry in the timer heap, if any.
    pub(crate) timer_at: Option<Tick>,
    /// The last publish sequence number delivered here (dedup across groups).
    pub(crate) mark: u64,
}

impl Session {
    pub(crate) fn new(now: Tick) -> Self {
        Self {
            state: State::Login {
                user: None,
                verifying: false,
            },
            name: None,
            groups: Vec::new(),
            watching: Vec::new(),
            opened: now,
            last_rx: now,
            ping_sent: None,
            timer_at: None,
            mark: 0,
        }
    }

    pub(crate) fn is_logged_in(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// The next instant at which [`crate::broker::Broker::handle_timeout`]
    /// has something to do for this session (closing is the table's).
    pub(crate) fn next_deadline(&self, config: &BrokerConfig) -> Tick {
        let keepalive = match self.ping_sent {
            Some(sent) => sent + config.ping_timeout,
            None => self.last_rx + config.ping_interval,
        };
        match self.state {
            State::Login { .. } => keepalive.min(self.opened + config.login_timeout),
            State::Open => keepalive,
        }
    }

    /// Heap bytes this session holds beyond its slot.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.name.as_ref().map_or(0, |n| n.len())
            + (self.groups.capacity() + self.watching.capacity()) * std::mem::size_of::<GroupId>()
    }
}
