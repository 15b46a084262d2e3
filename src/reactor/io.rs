//! Small helpers for nonblocking I/O results.

use std::io;

/// Whether an I/O error means "try again when ready".
pub(crate) fn is_would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// The accept backlog asked of the kernel (which caps it at
/// `net.core.somaxconn`, 4096 on current Linux). std and mio use 128, which a
/// reconnect storm or a benchmark's burst overflows, so connects see dropped
/// SYNs and retransmits of a second or more.
pub(crate) const LISTEN_BACKLOG: i32 = 4096;

/// Binds a nonblocking listener on `addr` with [`LISTEN_BACKLOG`].
/// `SO_REUSEADDR` is set, as std does on Unix: a port held by another
/// listener still fails with `AddrInUse`.
pub(crate) fn bind_listener(addr: std::net::SocketAddr) -> io::Result<mio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Most bytes written to one connection in one flush. Past it the rest waits
/// for a later turn (the connection is queued for another flush), so that a
/// few connections with megabytes owed (listings, a subscriber catching up)
/// cannot make one loop turn copy tens of megabytes into the kernel while
/// everyone else waits; Redis caps a write event at 64 KiB the same way.
pub(crate) const WRITE_BUDGET: usize = 256 << 10;

/// Most bytes written to all connections together in one loop turn, past
/// which each flush writes at most [`MIN_WRITE`]. What one turn copies into
/// the kernel is what everyone waits for: 100 clients owed megabytes of
/// listings each (issue 10's listing attack) made turns of 150-300 ms on
/// this machine's VM, where each fresh page of socket memory is expensive,
/// until their socket buffers were full.
pub(crate) const TURN_WRITE_BUDGET: usize = 1 << 20;

/// What a flush may always write, whatever the turn has written: a reply or
/// a few pushed frames go out at once.
pub(crate) const MIN_WRITE: usize = 16 << 10;

/// A writer that passes at most `left` bytes to `inner`, then answers
/// `WouldBlock` (and remembers that it did, as opposed to the socket).
pub(crate) struct Budgeted<'a, W> {
    pub(crate) inner: &'a mut W,
    pub(crate) left: usize,
    pub(crate) spent: bool,
}

impl<'a, W: io::Write> Budgeted<'a, W> {
    pub(crate) fn new(inner: &'a mut W, budget: usize) -> Self {
        Self {
            inner,
            left: budget,
            spent: false,
        }
    }

    fn out_of_budget(&mut self) -> io::Result<usize> {
        self.spent = true;
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl<W: io::Write> io::Write for Budgeted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            return self.out_of_budget();
        }
        let n = self.inner.write(buf.get(..self.left).unwrap_or(buf))?;
        self.left -= n.min(self.left);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if self.left == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return self.out_of_budget();
        }
        // The slices that fit whole; if not even the first does, its head.
        let mut total = 0;
        let mut count = 0;
        for b in bufs {
            if total + b.len() > self.left {
                break;
            }
            total += b.len();
            count += 1;
        }
        let n = if count == 0 {
            let first = bufs.first().map_or(&[][..], |b| &b[..]);
            self.inner.write(first.get(..self.left).unwrap_or(first))?
        } else {
            self.inner.write_vectored(&bufs[..count])?
        };
        self.left -= n.min(self.left);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Binds a nonblocking UDP socket on `addr` (`SO_REUSEADDR` first when
/// `reuse`: several receivers of one multicast group on one port), and
/// connects it to `peer` when given (then only `peer`'s datagrams arrive,
/// and ICMP errors such as "port unreachable" are reported on it).
pub(crate) fn bind_udp(
    addr: std::net::SocketAddr,
    reuse: bool,
    peer: Option<std::net::SocketAddr>,
) -> io::Result<mio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse {
        socket.set_reuse_address(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if let Some(peer) = peer {
        socket.connect(&peer.into())?;
    }
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// Applies one socket option to a datagram socket.
pub(crate) fn apply_op(
    socket: &mio::net::UdpSocket,
    op: super::service::SocketOp,
) -> io::Result<()> {
    use super::service::SocketOp;
    let sock = socket2::SockRef::from(socket);
    match op {
        SocketOp::JoinV4 { group, interface } => socket.join_multicast_v4(&group, &interface),
        SocketOp::LeaveV4 { group, interface } => socket.leave_multicast_v4(&group, &interface),
        SocketOp::MulticastTtlV4(ttl) => socket.set_multicast_ttl_v4(ttl),
        SocketOp::MulticastLoopV4(on) => socket.set_multicast_loop_v4(on),
        SocketOp::MulticastIfV4(interface) => sock.set_multicast_if_v4(&interface),
        SocketOp::Broadcast(on) => socket.set_broadcast(on),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{IoSlice, Write};

    use super::*;

    #[test]
    fn a_budgeted_writer_stops_at_its_budget() {
        let mut sink = Vec::new();
        let mut w = Budgeted::new(&mut sink, 10);
        assert_eq!(w.write(b"abcdef").expect("write"), 6);
        let slices = [IoSlice::new(b"ghi"), IoSlice::new(b"jkl")];
        assert_eq!(w.write_vectored(&slices).expect("write"), 3);
        assert_eq!(w.write_vectored(&slices[1..]).expect("write"), 1);
        assert!(!w.spent);
        let e = w.write(b"x").expect_err("out of budget");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(w.spent);
        assert_eq!(sink, b"abcdefghij");
    }
}
