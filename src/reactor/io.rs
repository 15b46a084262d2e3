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
