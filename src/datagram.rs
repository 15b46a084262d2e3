//! The generic layer for datagrams: UDP services on the same loop as the
//! stream services (CppServer's UDP server and client, its multicast
//! sender and receiver).
//!
//! A host program implements [`DatagramHandler`] and adds a socket with
//! [`crate::EventLoop::bind_udp`] (a server, a multicast receiver or
//! sender) or [`crate::EventLoop::connect_udp`] (a client socket with one
//! peer). The loop reads each datagram into its shared buffer and calls
//! [`DatagramHandler::on_datagram`]; the handler answers through a
//! [`DatagramContext`]: [`send_to`](DatagramContext::send_to) any address,
//! set a timer, join or leave a multicast group, stop the loop.
//!
//! Nothing here blocks the loop. Datagrams are queued per socket, in a
//! queue bounded by [`UdpOptions::send_queue`] datagrams and
//! [`UdpOptions::send_queue_bytes`] bytes: past either, `send_to` refuses
//! the datagram (returns `false`) instead of waiting, as a full socket
//! buffer drops datagrams. The loop sends a bounded number per turn, so a
//! handler that floods cannot starve the other services. A datagram larger
//! than [`UdpOptions::max_datagram`] is not handed over as data: the handler
//! hears [`DatagramHandler::on_oversized`] and the loop goes on.
//!
//! The state machine here is sans-IO (`DatagramCore` takes datagrams and
//! `Instant`s, and gives queued datagrams and socket options), so its unit
//! tests run without sockets.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, warn};

use crate::reactor::service::{DatagramService, SocketOp};

/// The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Settings of one datagram socket, set before it joins the loop. Build
/// with [`UdpOptions::default`] and the methods below, e.g. a multicast
/// receiver that stays on loopback:
///
/// ```
/// use std::net::Ipv4Addr;
/// use switchboard::datagram::UdpOptions;
///
/// let options = UdpOptions::default()
///     .reuse_address(true)
///     .join_multicast_v4(Ipv4Addr::new(239, 255, 0, 1), Ipv4Addr::LOCALHOST);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct UdpOptions {
    max_datagram: usize,
    send_queue: usize,
    send_queue_bytes: usize,
    reuse_address: bool,
    ops: Vec<SocketOp>,
}

impl Default for UdpOptions {
    fn default() -> Self {
        Self {
            max_datagram: MAX_UDP_PAYLOAD,
            send_queue: 1024,
            send_queue_bytes: 4 << 20,
            reuse_address: false,
            ops: Vec::new(),
        }
    }
}

impl UdpOptions {
    /// The largest datagram received or sent (default and at most
    /// [`MAX_UDP_PAYLOAD`]; at least 1). A larger one received goes to
    /// [`DatagramHandler::on_oversized`]; a larger one is not sent.
    #[must_use]
    pub fn max_datagram(mut self, bytes: usize) -> Self {
        self.max_datagram = bytes.clamp(1, MAX_UDP_PAYLOAD);
        self
    }

    /// Most datagrams waiting to be sent (default 1,024; at least 1).
    #[must_use]
    pub fn send_queue(mut self, datagrams: usize) -> Self {
        self.send_queue = datagrams.max(1);
        self
    }

    /// Most bytes of datagrams waiting to be sent (default 4 MiB).
    #[must_use]
    pub fn send_queue_bytes(mut self, bytes: usize) -> Self {
        self.send_queue_bytes = bytes;
        self
    }

    /// `SO_REUSEADDR` before binding, so several receivers of one
    /// multicast group can bind its port (default off).
    #[must_use]
    pub fn reuse_address(mut self, on: bool) -> Self {
        self.reuse_address = on;
        self
    }

    /// Joins the IPv4 multicast `group` on the interface with address
    /// `interface` (`Ipv4Addr::UNSPECIFIED`: the kernel's choice;
    /// `Ipv4Addr::LOCALHOST`: loopback only).
    #[must_use]
    pub fn join_multicast_v4(mut self, group: Ipv4Addr, interface: Ipv4Addr) -> Self {
        self.ops.push(SocketOp::JoinV4 { group, interface });
        self
    }

    /// The TTL of multicast datagrams sent (`IP_MULTICAST_TTL`; the
    /// system's default is 1: the local network only; 0: this host only).
    #[must_use]
    pub fn multicast_ttl_v4(mut self, ttl: u32) -> Self {
        self.ops.push(SocketOp::MulticastTtlV4(ttl));
        self
    }

    /// Whether multicast datagrams sent come back to this host's own
    /// members (`IP_MULTICAST_LOOP`; the system's default is on).
    #[must_use]
    pub fn multicast_loop_v4(mut self, on: bool) -> Self {
        self.ops.push(SocketOp::MulticastLoopV4(on));
        self
    }

    /// The interface, by address, multicast datagrams leave by
    /// (`IP_MULTICAST_IF`; `Ipv4Addr::LOCALHOST` keeps them on loopback).
    #[must_use]
    pub fn multicast_if_v4(mut self, interface: Ipv4Addr) -> Self {
        self.ops.push(SocketOp::MulticastIfV4(interface));
        self
    }

    /// `SO_BROADCAST` (default off).
    #[must_use]
    pub fn broadcast(mut self, on: bool) -> Self {
        self.ops.push(SocketOp::Broadcast(on));
        self
    }

    /// Whether `SO_REUSEADDR` is asked for.
    pub(crate) fn reuses_address(&self) -> bool {
        self.reuse_address
    }

    /// The socket options to apply once bound.
    pub(crate) fn ops(&self) -> &[SocketOp] {
        &self.ops
    }
}

/// Callbacks of a datagram service. They run on the loop thread and must
/// not block.
#[allow(unused_variables)] // The defaults ignore their arguments by design.
pub trait DatagramHandler {
    /// The socket has joined the loop ([`DatagramContext::local_addr`] is
    /// its bound address): a client sends its first datagram here.
    fn on_start(&mut self, ctx: &mut DatagramContext<'_>) {}
    /// A datagram arrived from `from`.
    fn on_datagram(&mut self, ctx: &mut DatagramContext<'_>, from: SocketAddr, payload: &[u8]);
    /// A datagram larger than [`UdpOptions::max_datagram`] arrived from
    /// `from` (`len` bytes or more); it is dropped. The default logs it.
    fn on_oversized(&mut self, ctx: &mut DatagramContext<'_>, from: SocketAddr, len: usize) {
        warn!(
            "udp {}: dropped a datagram of {len} bytes or more from {from} (over {})",
            ctx.local_addr(),
            ctx.max_datagram()
        );
    }
    /// The timer set by [`DatagramContext::set_timer`] is due.
    fn on_timer(&mut self, ctx: &mut DatagramContext<'_>) {}
    /// A send to `to` failed (the datagram is dropped), or a receive did
    /// (`to` is `None`; e.g. "connection refused" on a connected socket
    /// whose peer has no socket on that port). The default logs it.
    fn on_error(
        &mut self,
        ctx: &mut DatagramContext<'_>,
        to: Option<SocketAddr>,
        error: &std::io::Error,
    ) {
        match to {
            Some(to) => debug!("udp {}: send to {to} failed: {error}", ctx.local_addr()),
            None => debug!("udp {}: receive failed: {error}", ctx.local_addr()),
        }
    }
}

/// Counts of one datagram socket's traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatagramStats {
    /// Datagrams handed to the handler.
    pub received: u64,
    /// Datagrams received over the maximum size, dropped.
    pub oversized: u64,
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// Datagrams refused by `send_to` (queue full, too large, stopping).
    pub refused: u64,
    /// Sends or receives that failed.
    pub errors: u64,
}

/// One datagram socket's state apart from its handler: the bounded send
/// queue, the timer, socket options asked for, and counts.
#[derive(Debug)]
pub(crate) struct DatagramCore {
    max_datagram: usize,
    send_queue: usize,
    send_queue_bytes: usize,
    queue: VecDeque<(SocketAddr, Bytes)>,
    queued_bytes: usize,
    local: SocketAddr,
    peer: Option<SocketAddr>,
    timer: Option<Instant>,
    ops: Vec<SocketOp>,
    stop: bool,
    stopping: bool,
    stats: DatagramStats,
}

impl DatagramCore {
    pub(crate) fn new(options: &UdpOptions) -> Self {
        Self {
            max_datagram: options.max_datagram,
            send_queue: options.send_queue,
            send_queue_bytes: options.send_queue_bytes,
            queue: VecDeque::new(),
            queued_bytes: 0,
            local: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            peer: None,
            timer: None,
            ops: Vec::new(),
            stop: false,
            stopping: false,
            stats: DatagramStats::default(),
        }
    }

    fn push(&mut self, to: SocketAddr, payload: &[u8]) -> bool {
        let fits = payload.len() <= self.max_datagram
            && self.queue.len() < self.send_queue
            && self.queued_bytes + payload.len() <= self.send_queue_bytes
            && !self.stopping;
        if !fits {
            self.stats.refused += 1;
            return false;
        }
        self.queued_bytes += payload.len();
        self.queue.push_back((to, Bytes::copy_from_slice(payload)));
        true
    }
}

/// What a [`DatagramHandler`] callback may do inside the loop.
pub struct DatagramContext<'a> {
    core: &'a mut DatagramCore,
    now: Instant,
}

impl std::fmt::Debug for DatagramContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramContext")
            .field("local", &self.core.local)
            .field("queued", &self.core.queue.len())
            .finish()
    }
}

impl DatagramContext<'_> {
    /// Queues `payload` for `to`; it leaves this turn or, if the kernel's
    /// buffer is full, as soon as it drains. Returns `false`, and queues
    /// nothing, when the payload is over [`UdpOptions::max_datagram`],
    /// when the send queue is full (datagrams or bytes), or when the loop
    /// is stopping. A datagram may still be lost on the way, as any.
    pub fn send_to(&mut self, to: SocketAddr, payload: &[u8]) -> bool {
        self.core.push(to, payload)
    }

    /// [`DatagramContext::send_to`] the connected peer (a socket from
    /// [`crate::EventLoop::connect_udp`]); `false` on a socket without one.
    pub fn send(&mut self, payload: &[u8]) -> bool {
        match self.core.peer {
            Some(peer) => self.core.push(peer, payload),
            None => false,
        }
    }

    /// The socket's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.local
    }

    /// The connected peer, for a socket from
    /// [`crate::EventLoop::connect_udp`].
    pub fn peer(&self) -> Option<SocketAddr> {
        self.core.peer
    }

    /// The largest datagram sent or received ([`UdpOptions::max_datagram`]).
    pub fn max_datagram(&self) -> usize {
        self.core.max_datagram
    }

    /// Datagrams waiting to be sent.
    pub fn queued(&self) -> usize {
        self.core.queue.len()
    }

    /// Counts of this socket's traffic so far.
    pub fn stats(&self) -> DatagramStats {
        self.core.stats
    }

    /// The time the loop read for this turn.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Calls [`DatagramHandler::on_timer`] at `at` (replacing any timer
    /// set before).
    pub fn set_timer(&mut self, at: Instant) {
        self.core.timer = Some(at);
    }

    /// [`DatagramContext::set_timer`] `after` from now.
    pub fn set_timer_after(&mut self, after: Duration) {
        self.core.timer = Some(self.now + after);
    }

    /// Cancels the timer.
    pub fn cancel_timer(&mut self) {
        self.core.timer = None;
    }

    /// Joins an IPv4 multicast group (as [`UdpOptions::join_multicast_v4`]);
    /// done after this callback, a failure reported to
    /// [`DatagramHandler::on_error`].
    pub fn join_multicast_v4(&mut self, group: Ipv4Addr, interface: Ipv4Addr) {
        self.core.ops.push(SocketOp::JoinV4 { group, interface });
    }

    /// Leaves an IPv4 multicast group joined before.
    pub fn leave_multicast_v4(&mut self, group: Ipv4Addr, interface: Ipv4Addr) {
        self.core.ops.push(SocketOp::LeaveV4 { group, interface });
    }

    /// As [`UdpOptions::multicast_ttl_v4`], from now on.
    pub fn set_multicast_ttl_v4(&mut self, ttl: u32) {
        self.core.ops.push(SocketOp::MulticastTtlV4(ttl));
    }

    /// As [`UdpOptions::multicast_loop_v4`], from now on.
    pub fn set_multicast_loop_v4(&mut self, on: bool) {
        self.core.ops.push(SocketOp::MulticastLoopV4(on));
    }

    /// Stops the whole loop gracefully, as [`crate::LoopHandle::stop`]
    /// does (datagrams already queued are still sent).
    pub fn stop(&mut self) {
        self.core.stop = true;
    }
}

/// A datagram service: a socket's [`DatagramCore`] and its handler.
#[derive(Debug)]
pub(crate) struct Datagrams<H> {
    pub(crate) core: DatagramCore,
    pub(crate) handler: H,
}

impl<H: DatagramHandler> Datagrams<H> {
    pub(crate) fn new(options: &UdpOptions, handler: H) -> Self {
        Self {
            core: DatagramCore::new(options),
            handler,
        }
    }

    fn ctx(core: &mut DatagramCore, now: Instant) -> DatagramContext<'_> {
        DatagramContext { core, now }
    }
}

impl<H: DatagramHandler> DatagramService for Datagrams<H> {
    fn start(&mut self, local: SocketAddr, peer: Option<SocketAddr>, now: Instant) {
        self.core.local = local;
        self.core.peer = peer;
        if self.core.stopping {
            return;
        }
        self.handler.on_start(&mut Self::ctx(&mut self.core, now));
    }

    fn recv_window(&self) -> usize {
        self.core.max_datagram + 1
    }

    fn handle_datagram(&mut self, from: SocketAddr, payload: &[u8], now: Instant) {
        if self.core.stopping {
            return;
        }
        let mut ctx = Self::ctx(&mut self.core, now);
        if payload.len() > ctx.core.max_datagram {
            ctx.core.stats.oversized += 1;
            self.handler.on_oversized(&mut ctx, from, payload.len());
        } else {
            ctx.core.stats.received += 1;
            self.handler.on_datagram(&mut ctx, from, payload);
        }
    }

    fn handle_error(&mut self, to: Option<SocketAddr>, error: &std::io::Error, now: Instant) {
        self.core.stats.errors += 1;
        if self.core.stopping {
            return;
        }
        self.handler
            .on_error(&mut Self::ctx(&mut self.core, now), to, error);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.core.stopping || self.core.timer.is_none_or(|t| t > now) {
            return;
        }
        self.core.timer = None;
        self.handler.on_timer(&mut Self::ctx(&mut self.core, now));
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.core.timer.filter(|_| !self.core.stopping)
    }

    fn front(&self) -> Option<(SocketAddr, &[u8])> {
        self.core.queue.front().map(|(to, b)| (*to, &b[..]))
    }

    fn pop_front(&mut self, sent: bool) {
        if let Some((_, b)) = self.core.queue.pop_front() {
            self.core.queued_bytes -= b.len();
            self.core.stats.sent += u64::from(sent);
        }
    }

    fn take_ops(&mut self, into: &mut Vec<SocketOp>) {
        into.append(&mut self.core.ops);
    }

    fn take_stop(&mut self) -> bool {
        std::mem::take(&mut self.core.stop)
    }

    fn shutdown(&mut self) {
        self.core.stopping = true;
    }
}

#[cfg(test)]
mod tests;
