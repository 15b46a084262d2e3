//! The client side of every mio-based scenario: one thread, one `Poll`,
//! nonblocking sockets, optional TLS (rustls `ClientConnection`), and the
//! login phase they all share. TLS starts with the connection, or (NATS,
//! [`Endpoint::tls_after_greeting`]) once the server's plaintext greeting
//! has arrived.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;

use super::target::{Event, Target};
use super::ws::WsClient;

/// How many connections may be connecting or logging in at once: enough to
/// keep the server busy, few enough never to overflow its accept backlog
/// (mio's and std's `listen` backlog is 128; an overflow drops the SYN and
/// costs that connection a 1 s retransmission).
const CONNECT_WINDOW: usize = 64;

/// One client connection: a nonblocking socket, its TLS state, and the
/// bytes received (plaintext) and still to send.
pub(crate) struct Conn {
    sock: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
    /// A TLS session to start after the server's plaintext greeting.
    tls_pending: Option<Box<rustls::ClientConnection>>,
    /// Plaintext received and not yet decoded.
    pub(crate) inbuf: Vec<u8>,
    /// Plaintext queued and not yet handed to the socket (or to rustls).
    pub(crate) out: Vec<u8>,
    /// WebSocket between the socket (or TLS) and the target's bytes.
    ws: Option<Box<WsClient>>,
    connected: bool,
    /// The server ended the connection.
    pub(crate) closed: bool,
    /// When input was last read (for latency: the delivery's read time).
    pub(crate) read_at: Instant,
}

impl Conn {
    /// Reads everything available and writes what is queued.
    fn pump(&mut self, scratch: &mut [u8]) -> Result<(), String> {
        if !self.connected {
            if let Some(e) = self.sock.take_error().map_err(|e| e.to_string())? {
                return Err(format!("connect: {e}"));
            }
            match self.sock.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(format!("connect: {e}")),
            }
        }
        let before = self.inbuf.len();
        self.read(scratch)?;
        if let Some(ws) = self.ws.as_deref_mut() {
            if self.inbuf.len() > before {
                let raw = self.inbuf.split_off(before);
                ws.ingest(&raw, &mut self.inbuf)?;
            }
        }
        if self.inbuf.len() != before {
            self.read_at = Instant::now();
        }
        self.flush()
    }

    fn read(&mut self, scratch: &mut [u8]) -> Result<(), String> {
        loop {
            let Some(tls) = self.tls.as_deref_mut() else {
                match self.sock.read(scratch) {
                    Ok(0) => {
                        self.closed = true;
                        return Ok(());
                    }
                    Ok(n) => self.inbuf.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
                continue;
            };
            match tls.read_tls(&mut self.sock) {
                Ok(0) => {
                    self.closed = true;
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            }
            if let Err(e) = tls.process_new_packets() {
                // Best effort: the alert rustls queued.
                let _ = tls.write_tls(&mut self.sock);
                return Err(format!("TLS: {e}"));
            }
            loop {
                match tls.reader().read(scratch) {
                    Ok(0) => {
                        self.closed = true;
                        return Ok(());
                    }
                    Ok(n) => self.inbuf.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                        self.closed = true;
                        return Ok(());
                    }
                    Err(e) => return Err(format!("TLS read: {e}")),
                }
            }
        }
    }

    /// Writes what is queued, until done or the socket is full.
    pub(crate) fn flush(&mut self) -> Result<(), String> {
        if !self.connected {
            return Ok(());
        }
        let out = match self.ws.as_deref_mut() {
            Some(ws) => {
                ws.wrap(&mut self.out);
                &mut ws.wire
            }
            None => &mut self.out,
        };
        write_out(&mut self.sock, self.tls.as_deref_mut(), out)
    }

    /// Starts the TLS session that waited for the server's greeting (a
    /// no-op without one): from now on every byte goes through it.
    pub(crate) fn start_tls(&mut self) {
        if let Some(tls) = self.tls_pending.take() {
            self.tls = Some(tls);
        }
    }

    /// The negotiated TLS version and cipher suite (e.g. `TLSv1_3`,
    /// `TLS13_AES_128_GCM_SHA256`), once the handshake is done.
    pub(crate) fn tls_params(&self) -> Option<(String, String)> {
        let tls = self.tls.as_deref()?;
        let version = tls.protocol_version()?;
        let suite = tls.negotiated_cipher_suite()?;
        Some((format!("{version:?}"), format!("{:?}", suite.suite())))
    }

    /// Ends the connection politely (close_notify with TLS), best effort.
    fn close(&mut self) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
            let _ = self.flush();
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
    }
}

/// Writes `out` to `sock` (through `tls` if any) until done or the socket
/// is full; drops what was written.
fn write_out(
    sock: &mut TcpStream,
    tls: Option<&mut rustls::ClientConnection>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let Some(tls) = tls else {
        let mut done = 0;
        let result = loop {
            if done == out.len() {
                break Ok(());
            }
            match sock.write(&out[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(format!("write: {e}")),
            }
        };
        out.drain(..done);
        return result;
    };
    loop {
        if !out.is_empty() {
            let n = tls.writer().write(out).map_err(|e| e.to_string())?;
            out.drain(..n);
        }
        if !tls.wants_write() {
            return Ok(());
        }
        while tls.wants_write() {
            match tls.write_tls(sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        if out.is_empty() {
            return Ok(());
        }
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// The server greets in plaintext and TLS starts after its greeting
    /// (NATS: `INFO`, then the handshake); otherwise TLS starts at once.
    pub(crate) tls_after_greeting: bool,
    /// WebSocket (switchboard only), with this `Host`.
    pub(crate) ws: Option<String>,
}

/// A poll loop over many client connections (token = index in `conns`).
pub(crate) struct Net {
    poll: Poll,
    events: Events,
    endpoint: Endpoint,
    pub(crate) conns: Vec<Conn>,
    scratch: Vec<u8>,
}

impl Net {
    pub(crate) fn new(endpoint: Endpoint) -> Result<Self, String> {
        Ok(Self {
            poll: Poll::new().map_err(|e| format!("cannot create a poll: {e}"))?,
            events: Events::with_capacity(1024),
            endpoint,
            conns: Vec::new(),
            scratch: vec![0; 64 * 1024],
        })
    }

    /// Where connections opened from now on go (`bench cluster`: the
    /// subscribers of a second node).
    pub(crate) fn set_addr(&mut self, addr: SocketAddr) {
        self.endpoint.addr = addr;
    }

    /// Starts a new connection; returns its index.
    pub(crate) fn open(&mut self) -> Result<usize, String> {
        let idx = self.conns.len();
        let addr = self.endpoint.addr;
        let mut sock = TcpStream::connect(addr)
            .map_err(|e| format!("cannot connect to {addr} (connection {}): {e}", idx + 1))?;
        let _ = sock.set_nodelay(true);
        self.poll
            .registry()
            .register(
                &mut sock,
                Token(idx),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("cannot register a socket: {e}"))?;
        let mut tls = match &self.endpoint.tls {
            None => None,
            Some((config, name)) => Some(Box::new(
                rustls::ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| format!("TLS: {e}"))?,
            )),
        };
        let tls_pending = if self.endpoint.tls_after_greeting {
            tls.take()
        } else {
            None
        };
        self.conns.push(Conn {
            sock,
            tls,
            tls_pending,
            inbuf: Vec::new(),
            out: Vec::new(),
            ws: (self.endpoint.ws.as_deref()).map(|host| Box::new(WsClient::new(host, idx))),
            connected: false,
            closed: false,
            read_at: Instant::now(),
        });
        Ok(idx)
    }

    /// Waits up to `timeout` for readiness, pumps every ready connection and
    /// puts their indices in `ready`.
    pub(crate) fn poll(&mut self, timeout: Duration, ready: &mut Vec<usize>) -> Result<(), String> {
        ready.clear();
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(format!("poll: {e}")),
        }
        for ev in &self.events {
            let idx = ev.token().0;
            if let Some(conn) = self.conns.get_mut(idx) {
                conn.pump(&mut self.scratch)
                    .map_err(|e| format!("connection {}: {e}", idx + 1))?;
                ready.push(idx);
            }
        }
        Ok(())
    }

    /// Closes every connection (close_notify first with TLS) and forgets them.
    pub(crate) fn close_all(&mut self) {
        for c in &mut self.conns {
            c.close();
        }
        self.conns.clear();
    }
}

/// Decodes every whole event in `conn`'s input, in order, through `f`, and
/// drops the decoded bytes. Answers the server's pings itself.
pub(crate) fn events(
    target: &dyn Target,
    conn: &mut Conn,
    mut f: impl FnMut(Event<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut pos = 0;
    let mut pings = 0;
    let result = loop {
        match target.decode(&conn.inbuf[pos..]) {
            Ok(Some((Event::Ping, n))) => {
                pings += 1;
                pos += n;
            }
            Ok(Some((ev, n))) => {
                pos += n;
                if let Err(e) = f(ev) {
                    break Err(e);
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    conn.inbuf.drain(..pos);
    for _ in 0..pings {
        target.pong(&mut conn.out);
    }
    result
}

/// Opens `count` connections (at most [`CONNECT_WINDOW`] unanswered at a
/// time), queues `setup(i, out)` on each (after the server's greeting for
/// targets that [`Target::greets_first`], and after starting TLS there if
/// it waited for the greeting), and waits until connection `i` has
/// had `replies(i)` acknowledgements ([`Event::is_ack`]). Fails on any
/// refusal, close or the deadline. Returns the time it took.
pub(crate) fn establish(
    net: &mut Net,
    target: &dyn Target,
    count: usize,
    deadline: Instant,
    mut setup: impl FnMut(usize, &mut Vec<u8>),
    replies: impl Fn(usize) -> usize,
) -> Result<Duration, String> {
    let start = Instant::now();
    let base = net.conns.len();
    let mut owed: Vec<usize> = Vec::with_capacity(count);
    let mut started: Vec<bool> = Vec::with_capacity(count);
    let mut done = 0;
    let mut ready = Vec::new();
    while done < count {
        while net.conns.len() - base < count && net.conns.len() - base - done < CONNECT_WINDOW {
            let i = net.conns.len() - base;
            let idx = net.open()?;
            // A server that greets first gets the setup after its greeting.
            let greets = target.greets_first();
            if !greets {
                setup(i, &mut net.conns[idx].out);
            }
            started.push(!greets);
            owed.push(replies(i));
            if owed[i] == 0 {
                done += 1;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "timed out with {done} of {count} connections set up (raise --timeout?)"
            ));
        }
        net.poll((deadline - now).min(Duration::from_millis(50)), &mut ready)?;
        for &idx in &ready {
            let Some(i) = idx.checked_sub(base) else {
                continue;
            };
            let conn = &mut net.conns[idx];
            let mut acked = 0;
            let mut greeted = false;
            events(target, conn, |ev| match ev {
                Event::Greeting => {
                    greeted = true;
                    Ok(())
                }
                ev if ev.is_ack() => {
                    acked += 1;
                    Ok(())
                }
                Event::Refused(why) => Err(format!("refused: {why}")),
                _ => Ok(()),
            })
            .map_err(|e| format!("connection {}: {e}", idx + 1))?;
            if greeted && !started[i] {
                started[i] = true;
                conn.start_tls();
                setup(i, &mut conn.out);
            }
            if acked > 0 && owed[i] > 0 {
                let left = owed[i].saturating_sub(acked);
                owed[i] = left;
                if left == 0 {
                    done += 1;
                }
            }
            if conn.closed && owed[i] > 0 {
                return Err(format!(
                    "connection {}: the server closed it during setup",
                    idx + 1
                ));
            }
            conn.flush()
                .map_err(|e| format!("connection {}: {e}", idx + 1))?;
        }
    }
    Ok(start.elapsed())
}
