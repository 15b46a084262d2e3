//! Datagram sockets on the loop: UDP services beside the stream services.
//!
//! A datagram socket has no connections, so it is not a [`Service`]: the
//! reactor keeps a list of them, each with its [`DatagramService`], and
//! gives them a token range of their own (below the listeners'). Like
//! everything else here it is edge-triggered: a readable socket is read
//! until `WouldBlock` or [`DATAGRAM_READ_BUDGET`] datagrams, and one that
//! used its budget is read again next turn (with a zero poll timeout). What
//! a service queued is sent after each turn's input, at most
//! [`DATAGRAM_SEND_BUDGET`] datagrams per socket per turn; writable interest
//! is registered only while the kernel refused a send (`WouldBlock`) and
//! datagrams still wait.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Instant;

use log::{debug, warn};
use mio::net::UdpSocket;
use mio::{Interest, Token};

use super::service::{DatagramService, Service, SocketOp};
use super::{Reactor, io};

/// Datagram socket `i` has token `DATAGRAM_BASE - i`.
pub(super) const DATAGRAM_BASE: usize = super::LISTENER_BASE - super::MAX_LISTENERS - 1;
/// Most datagram sockets one loop hosts (their tokens are reserved).
pub(crate) const MAX_DATAGRAMS: usize = 1 << 12;
/// Datagrams read from one socket per wakeup before the others get a turn.
const DATAGRAM_READ_BUDGET: usize = 128;
/// Datagrams sent from one socket per turn.
const DATAGRAM_SEND_BUDGET: usize = 256;

/// A datagram socket and its service.
pub(crate) struct Datagram<D> {
    socket: UdpSocket,
    service: D,
    /// Writable interest is registered.
    writable: bool,
    /// A send would have blocked: nothing is sent until a writable event.
    waiting: bool,
    /// The loop is stopping: nothing more is read.
    stopped: bool,
}

/// Whether `t` is a datagram socket's token; its index if so.
pub(super) fn datagram_index(t: usize) -> Option<usize> {
    (t <= DATAGRAM_BASE && t > DATAGRAM_BASE - MAX_DATAGRAMS).then(|| DATAGRAM_BASE - t)
}

impl<S: Service, D: DatagramService> Reactor<S, D> {
    /// Adds a bound datagram socket with its service (applying `ops` first);
    /// returns its local address.
    pub(crate) fn add_datagram(
        &mut self,
        mut socket: UdpSocket,
        service: D,
        ops: &[SocketOp],
        now: Instant,
    ) -> std::io::Result<SocketAddr> {
        let i = self.datagrams.len();
        if i >= MAX_DATAGRAMS {
            return Err(std::io::Error::other("too many datagram sockets"));
        }
        for &op in ops {
            io::apply_op(&socket, op)?;
        }
        let local = socket.local_addr()?;
        let peer = socket.peer_addr().ok();
        self.poll
            .registry()
            .register(&mut socket, Token(DATAGRAM_BASE - i), Interest::READABLE)?;
        let mut d = Datagram {
            socket,
            service,
            writable: false,
            waiting: false,
            stopped: self.stop_requested,
        };
        d.service.start(local, peer, now);
        self.datagrams.push(d);
        // Whatever `start` queued goes out on the first turn.
        self.datagram_ready.push(i);
        Ok(local)
    }

    /// Datagram sockets that still owe datagrams (the loop waits for them
    /// when stopping, up to its deadline).
    pub(super) fn datagrams_owing(&self) -> usize {
        self.datagrams
            .iter()
            .filter(|d| d.service.front().is_some())
            .count()
    }

    /// Whether a datagram socket needs the next poll not to wait.
    pub(super) fn datagrams_busy(&self) -> bool {
        !self.datagram_ready.is_empty()
            || self
                .datagrams
                .iter()
                .any(|d| !d.waiting && d.service.front().is_some())
    }

    /// The datagram services' earliest timer.
    pub(super) fn datagram_timeout(&self) -> Option<Instant> {
        self.datagrams
            .iter()
            .filter(|d| !d.stopped)
            .filter_map(|d| d.service.poll_timeout())
            .min()
    }

    /// Reads datagram socket `i` until `WouldBlock` or the budget.
    pub(super) fn read_datagrams(&mut self, i: usize, now: Instant) {
        let Some(d) = self.datagrams.get_mut(i) else {
            return;
        };
        if d.stopped {
            return;
        }
        let window = d.service.recv_window().clamp(1, self.bufs.scratch.len());
        for _ in 0..DATAGRAM_READ_BUDGET {
            let Some(buf) = self.bufs.scratch.get_mut(..window) else {
                return;
            };
            match d.socket.recv_from(buf) {
                Ok((n, from)) => {
                    let payload = buf.get(..n).unwrap_or_default();
                    d.service.handle_datagram(from, payload, now);
                }
                Err(e) if io::is_would_block(&e) => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. a connected socket's "connection refused" (an
                    // ICMP port unreachable): reported, and reading goes on.
                    debug!("udp {:?}: receive failed: {e}", d.socket.local_addr());
                    d.service.handle_error(None, &e, now);
                }
            }
        }
        self.datagram_ready.push(i);
    }

    /// One turn's datagram work after the stream services': timers, socket
    /// options asked for, stop requests, and sending what is queued.
    /// Returns whether a handler asked to stop.
    pub(super) fn datagram_turn(&mut self, writable: &[usize], now: Instant) -> bool {
        let mut stop = false;
        let mut ops = Vec::new();
        for &i in writable {
            if let Some(d) = self.datagrams.get_mut(i) {
                // Interest settles below once the queue drains.
                d.waiting = false;
            }
        }
        for d in &mut self.datagrams {
            if !d.stopped && d.service.poll_timeout().is_some_and(|t| t <= now) {
                d.service.handle_timeout(now);
            }
            d.service.take_ops(&mut ops);
            for op in ops.drain(..) {
                if let Err(e) = io::apply_op(&d.socket, op) {
                    warn!("udp: {op:?} failed: {e}");
                    d.service.handle_error(None, &e, now);
                }
            }
            stop |= d.service.take_stop();
        }
        for i in 0..self.datagrams.len() {
            self.send_datagrams(i, now);
        }
        stop
    }

    /// Sends up to [`DATAGRAM_SEND_BUDGET`] queued datagrams of socket `i`,
    /// then settles its writable interest.
    fn send_datagrams(&mut self, i: usize, now: Instant) {
        let Some(d) = self.datagrams.get_mut(i) else {
            return;
        };
        if d.waiting {
            // Waiting for the kernel to take more.
            return;
        }
        let mut blocked = false;
        let mut sent = 0;
        while sent < DATAGRAM_SEND_BUDGET {
            let Some((to, payload)) = d.service.front() else {
                break;
            };
            match d.socket.send_to(payload, to) {
                Ok(_) => {
                    d.service.pop_front(true);
                    sent += 1;
                }
                Err(e) if io::is_would_block(&e) => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("udp: send to {to} failed: {e}");
                    d.service.pop_front(false);
                    d.service.handle_error(Some(to), &e, now);
                    sent += 1;
                }
            }
        }
        let want = if blocked {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        // Registered writable only while a send would block; an edge comes
        // when the kernel's buffer drains. (Left registered, a UDP socket
        // would report an edge for every datagram the kernel sends.)
        if blocked != d.writable {
            let token = Token(DATAGRAM_BASE - i);
            match self.poll.registry().reregister(&mut d.socket, token, want) {
                Ok(()) => d.writable = blocked,
                Err(e) => warn!("udp: cannot reregister: {e}"),
            }
        }
        d.waiting = blocked && d.writable;
    }

    /// The loop is stopping: datagram services hear nothing more, and what
    /// they queued is still sent (until the loop's stop deadline).
    pub(super) fn stop_datagrams(&mut self) {
        for d in &mut self.datagrams {
            d.stopped = true;
            d.service.shutdown();
        }
    }
}
