//! One Redis connection's protocol, sans-IO: what was sent and awaits a
//! reply, liveness, and (on a subscriber connection) which subscriptions
//! Redis confirmed. Bytes and an `Instant` in; events, frames to send and a
//! deadline out. The engine (`src/engine.rs`) owns the sockets and decides
//! what to send where.
//!
//! Two roles:
//!
//! - **Command**: `AUTH` (first, when the URL has a password),
//!   `PUBLISH`/`SPUBLISH`, `SET .. PX`, `PING`, `CLUSTER SLOTS`, pipelined: each command sent is remembered with its length in
//!   a FIFO, and replies are matched to it in order (Redis answers every
//!   command of a connection in order). The bytes of commands sent or
//!   queued and not yet answered ([`Link::unacked`]) are what the engine
//!   bounds with `max_outgoing`: they cover both our output queue and what
//!   the kernel and a slow Redis hold.
//! - **Subscriber**: `AUTH` first (its reply is the first value),
//!   `SUBSCRIBE`/`SSUBSCRIBE` and their confirmations, and the
//!   `message`/`smessage` pushes.
//!
//! Liveness: a `PING` every [`PING_INTERVAL`]; no reply within
//! [`PING_TIMEOUT`] (or a connect that has not completed within it) is an
//! error, and the engine drops the connection and reconnects after a
//! [`Backoff`] delay.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::resp::{self, Command, Decoded, RespError, Value};
use super::slots;

/// How often each connection is pinged.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(3);
/// How long a ping (or a connect) may wait for its answer.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// The first reconnect delay.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest reconnect delay.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    /// Commands with replies, pipelined.
    Command,
    /// Subscriptions and the messages they bring.
    Subscriber,
}

/// A command sent on a command connection, awaiting its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// `PING`.
    Ping,
    /// `CLUSTER SLOTS`.
    Slots,
    /// `PUBLISH` or `SPUBLISH`.
    Publish,
    /// `SET key value PX ms`.
    Set,
    /// `AUTH [user] password`, first on the connection.
    Auth,
}

/// What a connection's input meant.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The reply to `CLUSTER SLOTS`: the map, or the error (no cluster).
    Slots(Result<Value, Bytes>),
    /// A message on a subscribed channel.
    Message { channel: String, payload: Bytes },
    /// Redis confirmed a subscription.
    Subscribed(String),
    /// Redis ended a subscription we did not ask to end (`sunsubscribe`
    /// when a slot moves): the slot map is stale.
    Revoked(String),
    /// A `-MOVED` or `-ASK` reply: the slot map is stale.
    Redirected,
    /// Redis refused the connection's `AUTH` (its error): the credentials
    /// are wrong, or this Redis has no password or no such user.
    AuthRefused(Bytes),
    /// Any other error reply, to the command it answers (if known).
    Error { sent: Option<Sent>, message: Bytes },
}

/// Why a connection must be dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkError {
    /// The input is not RESP2 we accept.
    Resp(RespError),
    /// A reply with no command waiting for it.
    UnexpectedReply,
    /// No answer to a ping, or no connection, within [`PING_TIMEOUT`].
    Timeout,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Resp(e) => write!(f, "protocol error: {e}"),
            Self::UnexpectedReply => f.write_str("protocol error: a reply to no command"),
            Self::Timeout => write!(f, "no reply within {} s", PING_TIMEOUT.as_secs()),
        }
    }
}

/// Reconnect delays: [`BACKOFF_MIN`], doubling up to [`BACKOFF_MAX`].
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay before the next attempt; doubles the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_MAX);
        d
    }

    /// Back to [`BACKOFF_MIN`] (the engine is up again).
    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// One Redis connection's protocol state.
#[derive(Debug)]
pub(crate) struct Link {
    role: Role,
    connected: bool,
    /// Commands sent and not yet answered, with their lengths.
    pending: VecDeque<(Sent, usize)>,
    /// The sum of `pending`'s lengths.
    unacked: usize,
    next_ping: Instant,
    /// When the outstanding ping (or the connect) times out.
    deadline: Option<Instant>,
    /// Subscriptions Redis confirmed.
    confirmed: BTreeSet<String>,
    /// Subscriptions asked for and not yet confirmed.
    subscribing: BTreeSet<String>,
    /// Unsubscriptions asked for and not yet confirmed.
    unsubscribing: BTreeSet<String>,
    /// The input must be at least this long for the next value to decode.
    needed: usize,
    /// On a subscriber connection: the next reply answers its `AUTH`.
    auth_pending: bool,
}

impl Link {
    /// A connection being opened at `now`: it must connect within
    /// [`PING_TIMEOUT`].
    pub(crate) fn new(role: Role, now: Instant) -> Self {
        Self {
            role,
            connected: false,
            pending: VecDeque::new(),
            unacked: 0,
            next_ping: now + PING_INTERVAL,
            deadline: Some(now + PING_TIMEOUT),
            confirmed: BTreeSet::new(),
            subscribing: BTreeSet::new(),
            unsubscribing: BTreeSet::new(),
            needed: 0,
            auth_pending: false,
        }
    }

    /// The role.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// The connect completed: pings start.
    pub(crate) fn connected(&mut self, now: Instant) {
        self.connected = true;
        self.deadline = None;
        self.next_ping = now + PING_INTERVAL;
    }

    /// Bytes of commands sent or queued and not yet answered.
    pub(crate) fn unacked(&self) -> usize {
        self.unacked
    }

    /// Whether a command of `len` bytes stays within `max` unanswered bytes.
    pub(crate) fn fits(&self, len: usize, max: usize) -> bool {
        self.unacked.saturating_add(len) <= max
    }

    /// Whether a command of this kind awaits its reply.
    pub(crate) fn awaits(&self, kind: Sent) -> bool {
        self.pending.iter().any(|(k, _)| *k == kind)
    }

    /// Queues a command on a command connection: its frames into `out`.
    pub(crate) fn send(&mut self, kind: Sent, command: Command, out: &mut Vec<Bytes>) {
        let len = command.finish(out);
        self.pending.push_back((kind, len));
        self.unacked += len;
    }

    /// Queues `AUTH [user] password`, to be the connection's first command
    /// (Redis answers in order, so what is pipelined after it runs
    /// authenticated). A refusal is [`Event::AuthRefused`].
    pub(crate) fn authenticate(
        &mut self,
        user: Option<&str>,
        password: &str,
        out: &mut Vec<Bytes>,
    ) {
        let mut cmd = Command::new(if user.is_some() { 3 } else { 2 });
        cmd.arg(b"AUTH");
        if let Some(u) = user {
            cmd.arg(u.as_bytes());
        }
        cmd.arg(password.as_bytes());
        match self.role {
            Role::Command => self.send(Sent::Auth, cmd, out),
            Role::Subscriber => {
                cmd.finish(out);
                self.auth_pending = true;
            }
        }
    }

    /// Whether every channel of `wanted` is confirmed (and not being
    /// unsubscribed).
    pub(crate) fn all_confirmed<'a>(&self, wanted: impl IntoIterator<Item = &'a String>) -> bool {
        wanted
            .into_iter()
            .all(|c| self.confirmed.contains(c) && !self.unsubscribing.contains(c))
    }

    /// Subscriptions confirmed.
    #[cfg(test)]
    pub(crate) fn confirmed(&self) -> &BTreeSet<String> {
        &self.confirmed
    }

    /// On a subscriber connection: the commands that take its
    /// subscriptions to `wanted`, into `out`. `sharded`: `SSUBSCRIBE`, one
    /// channel a command (channels of one command must share a slot);
    /// otherwise one `SUBSCRIBE` and one `UNSUBSCRIBE` for all.
    pub(crate) fn reconcile(
        &mut self,
        wanted: &BTreeSet<String>,
        sharded: bool,
        out: &mut Vec<Bytes>,
    ) {
        let (sub, unsub): (&[u8], &[u8]) = if sharded {
            (b"SSUBSCRIBE", b"SUNSUBSCRIBE")
        } else {
            (b"SUBSCRIBE", b"UNSUBSCRIBE")
        };
        let drop: Vec<String> = self
            .confirmed
            .iter()
            .chain(&self.subscribing)
            .filter(|c| !wanted.contains(*c) && !self.unsubscribing.contains(*c))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let add: Vec<String> = wanted
            .iter()
            .filter(|c| {
                !self.subscribing.contains(*c)
                    && (!self.confirmed.contains(*c) || self.unsubscribing.contains(*c))
            })
            .cloned()
            .collect();
        for (verb, list) in [(unsub, &drop), (sub, &add)] {
            if list.is_empty() {
                continue;
            }
            if sharded {
                for c in list {
                    Command::from_args(&[verb, c.as_bytes()]).finish(out);
                }
            } else {
                let mut cmd = Command::new(1 + list.len());
                cmd.arg(verb);
                for c in list {
                    cmd.arg(c.as_bytes());
                }
                cmd.finish(out);
            }
        }
        self.unsubscribing.extend(drop);
        self.subscribing.extend(add);
    }

    /// Decodes what `input` holds (the connection's unread input, from
    /// where the last call stopped); events into `events`. Returns how many
    /// bytes were used (the rest is an unfinished value, to be given again
    /// with more after it).
    ///
    /// # Errors
    ///
    /// [`LinkError`]: drop the connection.
    pub(crate) fn handle_input(
        &mut self,
        input: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<usize, LinkError> {
        if input.len() < self.needed {
            return Ok(0);
        }
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            if rest.is_empty() {
                self.needed = 0;
                return Ok(used);
            }
            if self.role == Role::Subscriber {
                if let Some((channel, payload, consumed)) = resp::message(rest) {
                    used += consumed;
                    events.push(Event::Message {
                        channel: String::from_utf8_lossy(channel).into_owned(),
                        payload: Bytes::copy_from_slice(payload),
                    });
                    continue;
                }
            }
            match resp::decode(rest).map_err(LinkError::Resp)? {
                Decoded::Value { value, consumed } => {
                    used += consumed;
                    self.on_value(value, events)?;
                }
                Decoded::Incomplete { needed } => {
                    self.needed = needed;
                    return Ok(used);
                }
            }
        }
    }

    fn on_value(&mut self, value: Value, events: &mut Vec<Event>) -> Result<(), LinkError> {
        match self.role {
            Role::Command => {
                let (kind, len) = self.pending.pop_front().ok_or(LinkError::UnexpectedReply)?;
                self.unacked -= len;
                match (kind, value) {
                    (Sent::Ping, _) => self.deadline = None,
                    (Sent::Auth, Value::Error(e)) => events.push(Event::AuthRefused(e)),
                    (Sent::Slots, Value::Error(e)) => events.push(Event::Slots(Err(e))),
                    (Sent::Slots, v) => events.push(Event::Slots(Ok(v))),
                    (_, Value::Error(e)) if slots::redirect(&e).is_some() => {
                        events.push(Event::Redirected);
                    }
                    (sent, Value::Error(message)) => events.push(Event::Error {
                        sent: Some(sent),
                        message,
                    }),
                    _ => {}
                }
            }
            Role::Subscriber => self.on_push(value, events),
        }
        Ok(())
    }

    fn on_push(&mut self, value: Value, events: &mut Vec<Event>) {
        if std::mem::take(&mut self.auth_pending) {
            // `+OK`, or why not.
            if let Value::Error(e) = value {
                events.push(Event::AuthRefused(e));
            }
            return;
        }
        let items = match value {
            Value::Array(items) => items,
            Value::Simple(s) if s.eq_ignore_ascii_case(b"PONG") => {
                self.deadline = None;
                return;
            }
            Value::Error(e) => {
                if slots::redirect(&e).is_some() {
                    // The SSUBSCRIBEs in flight went to the wrong master:
                    // ask again once the map is fresh.
                    self.subscribing.clear();
                    events.push(Event::Redirected);
                } else {
                    events.push(Event::Error {
                        sent: None,
                        message: e,
                    });
                }
                return;
            }
            _ => return,
        };
        let mut it = items.into_iter();
        let (Some(kind), Some(second)) = (it.next(), it.next()) else {
            return;
        };
        let Some(kind) = kind.as_bytes() else {
            return;
        };
        let channel = || {
            second
                .as_bytes()
                .map(|c| String::from_utf8_lossy(c).into_owned())
        };
        // Redis writes these kinds in lower case.
        match kind {
            b"message" | b"smessage" => {
                if let (Some(channel), Some(Value::Bulk(payload))) = (channel(), it.next()) {
                    events.push(Event::Message { channel, payload });
                }
            }
            b"subscribe" | b"ssubscribe" => {
                if let Some(c) = channel() {
                    self.subscribing.remove(&c);
                    self.confirmed.insert(c.clone());
                    events.push(Event::Subscribed(c));
                }
            }
            b"unsubscribe" | b"sunsubscribe" => {
                if let Some(c) = channel() {
                    if self.unsubscribing.remove(&c) {
                        if !self.subscribing.contains(&c) {
                            self.confirmed.remove(&c);
                        }
                    } else if self.confirmed.remove(&c) {
                        events.push(Event::Revoked(c));
                    }
                }
            }
            b"pong" => self.deadline = None,
            _ => {}
        }
    }

    /// Runs the timers: a ping due is queued into `out` (on a command
    /// connection, counted as a command).
    ///
    /// # Errors
    ///
    /// [`LinkError::Timeout`]: the ping (or the connect) was not answered
    /// in time; drop the connection.
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        out: &mut Vec<Bytes>,
    ) -> Result<(), LinkError> {
        if self.deadline.is_some_and(|d| now >= d) {
            return Err(LinkError::Timeout);
        }
        if self.connected && now >= self.next_ping {
            self.next_ping = now + PING_INTERVAL;
            if self.deadline.is_none() {
                self.deadline = Some(now + PING_TIMEOUT);
                let ping = Command::from_args(&[b"PING"]);
                match self.role {
                    Role::Command => self.send(Sent::Ping, ping, out),
                    Role::Subscriber => {
                        ping.finish(out);
                    }
                }
            }
        }
        Ok(())
    }

    /// When [`Link::handle_timeout`] has work.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let ping = self.connected.then_some(self.next_ping);
        ping.into_iter().chain(self.deadline).min()
    }
}
