//! One client session: its login state, buffers, subscriptions and deadlines.
//!
//! A `Session` is plain data kept in the broker's slab; the broker steps it.
//! Its deadlines are derived from a few instants rather than kept as separate
//! timers, so activity (which happens on every read) never touches the timer
//! heap: the heap holds at most one entry per session, which re-checks the
//! derived deadline when it fires.

use super::tick::Tick;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::broker::config::BrokerConfig;
use crate::buf::OutQueue;
use crate::conn::{CloseReason, PeerIdentity};
use crate::proto::GroupId;

/// Where a session is in its life.
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
    /// Leaving: no more input is processed and nothing more is pushed; what is
    /// owed is flushed, then the connection is dropped once the peer has
    /// closed too, or at `deadline`.
    Closing {
        reason: CloseReason,
        deadline: Tick,
        eof: bool,
    },
}

/// One connection's session state. `T` is the transport the reactor keeps with
/// it (a socket); the broker stores it and never looks at it.
#[derive(Debug)]
pub(crate) struct Session<T> {
    pub(crate) io: T,
    pub(crate) peer: SocketAddr,
    /// Distinguishes this session from earlier ones in the same slab slot.
    pub(crate) generation: u32,
    pub(crate) state: State,
    /// The name this session logged in with, as typed.
    pub(crate) name: Option<Arc<str>>,
    /// The unconsumed tail of the input (a frame not fully arrived). Empty and
    /// unallocated most of the time.
    pub(crate) inbuf: Vec<u8>,
    pub(crate) out: OutQueue,
    /// The verified client certificate's subject (mutual TLS only).
    pub(crate) cert: Option<Box<PeerIdentity>>,
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
    /// Queued in the broker's dirty list.
    pub(crate) dirty: bool,
}

impl<T> Session<T> {
    pub(crate) fn new(io: T, peer: SocketAddr, generation: u32, now: Tick) -> Self {
        Self {
            io,
            peer,
            generation,
            state: State::Login {
                user: None,
                verifying: false,
            },
            name: None,
            inbuf: Vec::new(),
            out: OutQueue::default(),
            cert: None,
            groups: Vec::new(),
            watching: Vec::new(),
            opened: now,
            last_rx: now,
            ping_sent: None,
            timer_at: None,
            mark: 0,
            dirty: false,
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        matches!(self.state, State::Closing { .. })
    }

    pub(crate) fn is_logged_in(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// Whether buffered input may be processed now.
    pub(crate) fn can_process(&self, config: &BrokerConfig) -> bool {
        match self.state {
            State::Login { verifying, .. } => !verifying && self.out.len() < config.read_pause,
            State::Open => self.out.len() < config.read_pause,
            State::Closing { .. } => false,
        }
    }

    /// The next instant at which [`crate::broker::Broker::handle_timeout`]
    /// has something to do for this session.
    pub(crate) fn next_deadline(&self, config: &BrokerConfig) -> Tick {
        if let State::Closing { deadline, .. } = self.state {
            return deadline;
        }
        let keepalive = match self.ping_sent {
            Some(sent) => sent + config.ping_timeout,
            None => self.last_rx + config.ping_interval,
        };
        match self.state {
            State::Login { .. } => keepalive.min(self.opened + config.login_timeout),
            _ => keepalive,
        }
    }

    /// Heap bytes this session holds beyond its slab slot.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.inbuf.capacity()
            + self.out.heap_bytes()
            + self.name.as_ref().map_or(0, |n| n.len())
            + (self.groups.capacity() + self.watching.capacity()) * std::mem::size_of::<GroupId>()
    }
}
