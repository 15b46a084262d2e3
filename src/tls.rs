//! TLS inside the loop: rustls driven by readiness, and server TLS settings.
//!
//! `TlsSession` drives rustls's unbuffered API: the server end for the
//! reactor's TLS listeners, the client end for the generic layer's outgoing
//! connections and for the client library's I/O thread (all through the same
//! code, see `Records`). It is generic over `Read`/`Write`, so it never
//! blocks and never sees a socket type: the reactor hands it the nonblocking
//! stream and its shared scratch buffers. One `TlsSession::read_step` reads
//! the socket once and processes every complete record; the reactor repeats
//! it until `WouldBlock`, within its read budget. `TlsSession::write_to`
//! encrypts queued plaintext into records and writes them until the socket
//! would block.
//!
//! The unbuffered API was chosen by measurement over `ServerConnection`: the
//! loop owns every buffer, so an idle TLS connection keeps none (see
//! `TlsSession` and the README's footprint table). Its rules, as rustls's
//! `unbuffered` module documents them: each state is handled before
//! `process_tls_records` is called again, and `discard` bytes are dropped from
//! the front of the input first; handshake records are written in the order
//! they were encoded; a TLS error is sticky, and the alert rustls prepares for
//! it is written (best effort) before the connection is dropped;
//! `close_notify` is sent when the broker (or the client) closes a session,
//! and a peer's `close_notify` is end of stream.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{
    ServerConnectionData, ServerSessionMemoryCache, UnbufferedServerConnection,
    WebPkiClientVerifier,
};
use rustls::unbuffered::{ConnectionState, EncodeError, ReadEarlyData, UnbufferedStatus};

use crate::buf::OutQueue;
use crate::certs::subject_of;
use crate::conn::PeerIdentity;

/// Whether and how clients present certificates (`--client-auth`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientAuth {
    /// No client certificates are asked for.
    None,
    /// Asked for; a connection without one is accepted, one with a
    /// certificate that does not chain to these roots is refused.
    Optional(Arc<RootCertStore>),
    /// Required, and must chain to these roots.
    Required(Arc<RootCertStore>),
}

/// Why TLS settings could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// rustls refused the certificate, the key, or the client verifier.
    Rustls(String),
}

impl std::fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rustls(why) => write!(f, "TLS settings: {why}"),
        }
    }
}

impl std::error::Error for TlsConfigError {}

/// How many TLS sessions the server remembers for resumption by session id.
pub const SESSION_CACHE_SIZE: usize = 4096;

/// Builds the server's TLS settings: TLS 1.3 and 1.2 with rustls's ring
/// provider, the given certificate chain and key, client certificates per
/// `client_auth`, and session resumption both by stateless tickets and by a
/// bounded cache of [`SESSION_CACHE_SIZE`] sessions, so a reconnect storm
/// costs abbreviated handshakes.
///
/// # Errors
///
/// [`TlsConfigError`] if rustls rejects the key (for instance, one that does
/// not match the certificate) or the client roots.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_auth: &ClientAuth,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let provider = Arc::new(server_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    let verifier = match client_auth {
        ClientAuth::None => None,
        ClientAuth::Optional(roots) => Some(
            WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(&provider))
                .allow_unauthenticated()
                .build(),
        ),
        ClientAuth::Required(roots) => Some(
            WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(&provider))
                .build(),
        ),
    };
    let builder = match verifier {
        None => builder.with_no_client_auth(),
        Some(v) => {
            builder.with_client_cert_verifier(v.map_err(|e| TlsConfigError::Rustls(e.to_string()))?)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    config.ignore_client_order = true;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// rustls's ring provider with the server's cipher-suite preference: the
/// SHA-256 suites before the SHA-384 ones, in each TLS version.
///
/// Every TLS 1.3 handshake, resumed ones most of all, is mostly key-schedule
/// HMACs over the suite's hash. SHA-256 has instructions on x86 (SHA-NI) and
/// on ARMv8; SHA-512, under SHA-384, has neither and runs in software. A
/// profile of resumed handshakes with AES-256-GCM-SHA384 (the provider's
/// first choice, which clients mostly follow) spent 15% of the server's CPU
/// in `sha512_block_data_order_nohw`. AES-128-GCM is the suite TLS 1.3
/// requires every peer to implement; the others stay for clients that want
/// them (the server picks its own order: `ignore_client_order`).
fn server_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort: SHA-256 suites first, each group in the provider's order.
    provider.cipher_suites.sort_by_key(|suite| {
        let hash = match suite {
            rustls::SupportedCipherSuite::Tls13(s) => s.common.hash_provider.algorithm(),
            rustls::SupportedCipherSuite::Tls12(s) => s.common.hash_provider.algorithm(),
        };
        hash != rustls::crypto::hash::HashAlgorithm::SHA256
    });
    provider
}

/// What one [`TlsSession::read_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadStep {
    /// `n` plaintext bytes are ready (in the plaintext buffer for TLS, in the
    /// read buffer for plain TCP).
    Data(usize),
    /// Records were read and processed, with no plaintext; call again.
    Progress,
    /// Nothing more until the socket is readable again.
    WouldBlock,
    /// The peer closed (cleanly with `close_notify`, or with a TCP EOF).
    Eof,
}

/// Why [`TlsSession::read_step`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The socket failed (`Interrupted` included: the caller may retry).
    Io(io::Error),
    /// The peer broke TLS (a bad record, a failed handshake, a fatal alert,
    /// more input than any handshake flight needs). The error is final; the
    /// alert rustls prepared for it is queued for [`TlsSession::write_to`].
    Tls(rustls::Error),
}

/// Transparent: the inner error's message (the reactor logs it after its own
/// "TLS error" or "read failed"), and its source.
impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => e.fmt(f),
            Self::Tls(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => e.source(),
            Self::Tls(e) => e.source(),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Plaintext waiting to be encrypted by [`TlsSession::write_to`]: the
/// server's [`OutQueue`], or a client's output buffer.
pub trait Plaintext {
    /// Whether nothing waits.
    fn is_empty(&self) -> bool;
    /// Copies up to `buf.len()` bytes from the front into `buf`, without
    /// consuming them; returns how many.
    fn copy_front(&self, buf: &mut [u8]) -> usize;
    /// Drops the first `n` bytes (they were encrypted).
    fn consume(&mut self, n: usize);
}

impl Plaintext for OutQueue {
    fn is_empty(&self) -> bool {
        Self::is_empty(self)
    }
    fn copy_front(&self, buf: &mut [u8]) -> usize {
        Self::copy_front(self, buf)
    }
    fn consume(&mut self, n: usize) {
        Self::consume(self, n);
    }
}

/// A byte slice as plaintext: encrypted from the front, and advanced.
impl Plaintext for &[u8] {
    fn is_empty(&self) -> bool {
        <[u8]>::is_empty(self)
    }
    fn copy_front(&self, buf: &mut [u8]) -> usize {
        let n = self.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), self.get(..n)) {
            dst.copy_from_slice(src);
        }
        n
    }
    fn consume(&mut self, n: usize) {
        *self = self.get(n..).unwrap_or_default();
    }
}

/// Most plaintext encrypted into one record.
const MAX_PLAINTEXT: usize = 16 * 1024;
/// Encrypting or encoding needs this much room beyond the plaintext.
const RECORD_OVERHEAD: usize = 256;
/// Most TLS input kept between reads: a handshake flight (rustls caps
/// handshake messages at 64 KiB) plus a record.
const MAX_INCOMING: usize = 96 * 1024;
/// The smallest `scratch` [`TlsSession::write_to`] encrypts with: one
/// record's plaintext and one full record (a smaller one only writes
/// records already encoded, and plaintext waits).
pub const MIN_WRITE_SCRATCH: usize = 2 * MAX_PLAINTEXT + RECORD_OVERHEAD;

/// The two ends rustls's unbuffered API drives the same way.
trait Records {
    /// The side's connection data type.
    type Data;
    /// `process_tls_records`.
    fn records<'c, 'i>(&'c mut self, buf: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    /// Takes early data as plaintext; returns the bytes to discard.
    fn read_early(early: &mut ReadEarlyData<'_, '_, Self::Data>, plain: &mut Vec<u8>) -> usize;
}

impl Records for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn records<'c, 'i>(&'c mut self, buf: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(buf)
    }
    fn read_early(early: &mut ReadEarlyData<'_, '_, Self::Data>, plain: &mut Vec<u8>) -> usize {
        let mut discard = 0;
        while let Some(Ok(record)) = early.next_record() {
            discard += record.discard;
            plain.extend_from_slice(record.payload);
        }
        discard
    }
}

impl Records for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn records<'c, 'i>(&'c mut self, buf: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(buf)
    }
    /// A client never receives early data (rustls never reports it).
    fn read_early(_early: &mut ReadEarlyData<'_, '_, Self::Data>, _plain: &mut Vec<u8>) -> usize {
        0
    }
}

/// Which end of the handshake this connection is.
enum Side {
    /// Accepted by a TLS listener.
    Server(UnbufferedServerConnection),
    /// An outgoing connection.
    Client(UnbufferedClientConnection),
}

impl Side {
    fn process(
        &mut self,
        buf: &mut [u8],
        outgoing: &mut Vec<u8>,
        plain: &mut Vec<u8>,
    ) -> (usize, Processed) {
        match self {
            Self::Server(c) => process(c, buf, outgoing, plain),
            Self::Client(c) => process(c, buf, outgoing, plain),
        }
    }

    fn is_handshaking(&self) -> bool {
        match self {
            Self::Server(c) => c.is_handshaking(),
            Self::Client(c) => c.is_handshaking(),
        }
    }

    fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match self {
            Self::Server(c) => c.peer_certificates(),
            Self::Client(c) => c.peer_certificates(),
        }
    }
}

/// One TLS connection's state, as the reactor keeps it.
///
/// Built on rustls's unbuffered API, so the loop owns the buffers: records are
/// read into the reactor's shared scratch buffer and processed there, and only
/// a partial record (or an unfinished handshake flight) is copied into
/// `incoming`; records are encrypted into the shared scratch buffer and
/// written at once, and only what the socket would not take is copied into
/// `outgoing`. Both are freed as soon as they empty, so an idle TLS connection
/// holds rustls's connection state and nothing else (measured: 3.8 KB of
/// server memory per idle connection against 8.0 KB with the buffered
/// `ServerConnection`, whose receive buffer never shrinks below 4 KiB).
///
/// The same driver serves the server end (the reactor's TLS listeners) and
/// the client end (outgoing connections of the generic layer, and the
/// [`Client`](crate::Client) library's I/O thread). The caller's loop:
/// [`TlsSession::start`] once connected (client end); on readable,
/// [`TlsSession::read_step`] until `WouldBlock`, handing out plaintext and
/// checking [`TlsSession::take_established`]; on writable or after queueing
/// plaintext, [`TlsSession::write_to`], with writable interest while it
/// returns `true` ([`TlsSession::wants_write`] says so too).
pub struct TlsSession {
    conn: Side,
    /// Received TLS bytes not yet consumed by rustls.
    incoming: Vec<u8>,
    /// Encoded TLS bytes not yet written to the socket.
    outgoing: Vec<u8>,
    /// The handshake completed and has been reported.
    established: bool,
    peer_closed: bool,
    close_requested: bool,
    close_notify_sent: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("incoming", &self.incoming.len())
            .field("outgoing", &self.outgoing.len())
            .field("established", &self.established)
            .finish()
    }
}

/// What processing buffered records found.
#[derive(Default)]
struct Processed {
    eof: bool,
    error: Option<rustls::Error>,
}

impl TlsSession {
    /// The server end of an accepted connection, per `config`.
    ///
    /// # Errors
    ///
    /// What rustls returns for an unusable `config`.
    pub fn new(config: &Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: Side::Server(UnbufferedServerConnection::new(Arc::clone(config))?),
            incoming: Vec::new(),
            outgoing: Vec::new(),
            established: false,
            peer_closed: false,
            close_requested: false,
            close_notify_sent: false,
        })
    }

    /// The client end of an outgoing connection to `name`, verified per
    /// `config`. Call [`TlsSession::start`] once the TCP connect completes.
    ///
    /// # Errors
    ///
    /// What rustls returns for an unusable `config`.
    pub fn new_client(
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: Side::Client(UnbufferedClientConnection::new(config, name)?),
            incoming: Vec::new(),
            outgoing: Vec::new(),
            established: false,
            peer_closed: false,
            close_requested: false,
            close_notify_sent: false,
        })
    }

    /// Encodes the client's first handshake flight for
    /// [`TlsSession::write_to`] (a server end has nothing to say first).
    pub fn start(&mut self) {
        let mut plain = Vec::new();
        let _ = self.conn.process(&mut [], &mut self.outgoing, &mut plain);
    }

    /// Reads from the socket once (into `scratch`) and processes every
    /// complete record: plaintext is appended to `plain` (cleared first),
    /// handshake records to send are kept for [`TlsSession::write_to`].
    ///
    /// Any `scratch` size works (the reactor's is 64 KiB); a bigger one
    /// takes more records per step.
    ///
    /// # Errors
    ///
    /// [`ReadError::Io`] from the socket (`Interrupted`: call again), or
    /// [`ReadError::Tls`]. After a TLS error, call [`TlsSession::write_to`]
    /// once (best effort) to send the alert rustls prepared, then drop the
    /// connection.
    pub fn read_step<S: Read>(
        &mut self,
        sock: &mut S,
        scratch: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> Result<ReadStep, ReadError> {
        plain.clear();
        if self.peer_closed {
            return Ok(ReadStep::Eof);
        }
        let n = match sock.read(scratch) {
            Ok(0) => return Ok(ReadStep::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(ReadStep::WouldBlock),
            Err(e) => return Err(ReadError::Io(e)),
        };
        let fresh = scratch.get_mut(..n).unwrap_or_default();
        let processed = if self.incoming.is_empty() {
            // The common case: process in place, keep only a partial record.
            let (used, processed) = self.conn.process(fresh, &mut self.outgoing, plain);
            self.incoming
                .extend_from_slice(fresh.get(used..).unwrap_or_default());
            processed
        } else {
            if self.incoming.len() + n > MAX_INCOMING {
                // More than any handshake flight: rustls never asked to
                // stop, so this is a peer sending what it may not.
                return Err(ReadError::Tls(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::MessageTooLarge,
                )));
            }
            self.incoming.extend_from_slice(fresh);
            let mut buf = std::mem::take(&mut self.incoming);
            let (used, processed) = self.conn.process(&mut buf, &mut self.outgoing, plain);
            buf.drain(..used.min(buf.len()));
            if !buf.is_empty() {
                self.incoming = buf;
            }
            processed
        };
        if let Some(e) = processed.error {
            return Err(ReadError::Tls(e));
        }
        if processed.eof {
            self.peer_closed = true;
        }
        if !plain.is_empty() {
            Ok(ReadStep::Data(plain.len()))
        } else if processed.eof {
            Ok(ReadStep::Eof)
        } else {
            Ok(ReadStep::Progress)
        }
    }

    /// Reports the end of the handshake once: `Some(subject)` the first time
    /// it is seen complete, where `subject` is the verified client
    /// certificate's subject, if the client sent one.
    ///
    /// For a client end the subject is the server certificate's (already
    /// verified by rustls against the client's roots).
    pub fn take_established(&mut self) -> Option<Option<PeerIdentity>> {
        if self.established || self.conn.is_handshaking() {
            return None;
        }
        self.established = true;
        let subject = self
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| subject_of(leaf).ok());
        Some(subject)
    }

    /// Whether encoded records wait to be written.
    pub fn wants_write(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether the handshake is still under way: plaintext given to
    /// [`TlsSession::write_to`] waits until it is not (so, on a client end,
    /// until the server's certificate has been verified).
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Asks for `close_notify` to be sent once the queued output is out.
    pub fn send_close_notify(&mut self) {
        self.close_requested = true;
    }

    /// Writes pending records, then encrypts queued plaintext from `out` (and
    /// `close_notify` when asked for) into `scratch` and writes it, until
    /// everything is written or the socket would block. Returns whether output
    /// is still pending (so writable interest is needed). Plaintext queued
    /// before the handshake completes waits for it. `scratch` must hold at
    /// least [`MIN_WRITE_SCRATCH`] bytes for plaintext to be encrypted.
    ///
    /// # Errors
    ///
    /// An I/O error from the socket, or a TLS error (as `InvalidData`).
    pub fn write_to<S: Write, P: Plaintext + ?Sized>(
        &mut self,
        sock: &mut S,
        out: &mut P,
        scratch: &mut [u8],
    ) -> io::Result<bool> {
        loop {
            if !self.outgoing.is_empty() {
                match sock.write(&self.outgoing) {
                    Ok(0) => return Err(ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.outgoing.drain(..n.min(self.outgoing.len()));
                        if self.outgoing.is_empty() {
                            self.outgoing = Vec::new();
                        }
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            let want_close = self.close_requested && !self.close_notify_sent && out.is_empty();
            if (out.is_empty() && !want_close) || self.conn.is_handshaking() {
                return Ok(false);
            }
            let produced = self.encrypt(out, scratch, want_close)?;
            if produced == 0 {
                return Ok(!self.outgoing.is_empty());
            }
            let mut sent = 0;
            let cipher = scratch.get(..produced).unwrap_or_default();
            while sent < cipher.len() {
                match sock.write(cipher.get(sent..).unwrap_or_default()) {
                    Ok(0) => return Err(ErrorKind::WriteZero.into()),
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if sent < cipher.len() {
                self.outgoing
                    .extend_from_slice(cipher.get(sent..).unwrap_or_default());
                return Ok(true);
            }
        }
    }

    /// Encrypts queued plaintext (or `close_notify`) into the front of
    /// `scratch`; returns how many bytes were produced.
    fn encrypt<P: Plaintext + ?Sized>(
        &mut self,
        out: &mut P,
        scratch: &mut [u8],
        want_close: bool,
    ) -> io::Result<usize> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let mut flags = Flags {
            close_notify_sent: self.close_notify_sent,
            peer_closed: self.peer_closed,
        };
        let (discard, result) = match &mut self.conn {
            Side::Server(c) => encrypt_step(
                c,
                &mut incoming,
                out,
                scratch,
                want_close,
                &mut self.outgoing,
                &mut flags,
            ),
            Side::Client(c) => encrypt_step(
                c,
                &mut incoming,
                out,
                scratch,
                want_close,
                &mut self.outgoing,
                &mut flags,
            ),
        };
        self.close_notify_sent = flags.close_notify_sent;
        self.peer_closed = flags.peer_closed;
        incoming.drain(..discard.min(incoming.len()));
        if !incoming.is_empty() {
            self.incoming = incoming;
        }
        result
    }
}

/// Connection flags [`encrypt_step`] may set.
struct Flags {
    close_notify_sent: bool,
    peer_closed: bool,
}

/// One `process_tls_records` call for writing: encrypts queued plaintext
/// (or `close_notify`) into the front of `scratch`, or encodes handshake
/// records into `outgoing`. Returns the input bytes to discard and how many
/// ciphertext bytes were produced.
fn encrypt_step<C: Records, P: Plaintext + ?Sized>(
    conn: &mut C,
    incoming: &mut [u8],
    out: &mut P,
    scratch: &mut [u8],
    want_close: bool,
    outgoing: &mut Vec<u8>,
    flags: &mut Flags,
) -> (usize, io::Result<usize>) {
    let (cipher, plain) = scratch.split_at_mut(scratch.len().saturating_sub(MAX_PLAINTEXT));
    let mut produced = 0;
    let status = conn.records(incoming);
    let discard = status.discard;
    let result = match status.state {
        Ok(ConnectionState::WriteTraffic(mut wt)) => {
            let mut result = Ok(());
            if want_close {
                match wt.queue_close_notify(cipher) {
                    Ok(n) => {
                        produced = n;
                        flags.close_notify_sent = true;
                    }
                    Err(e) => result = Err(io::Error::other(e.to_string())),
                }
            }
            while result.is_ok()
                && !out.is_empty()
                && cipher.len() - produced >= MAX_PLAINTEXT + RECORD_OVERHEAD
            {
                let len = out.copy_front(plain);
                match wt.encrypt(
                    plain.get(..len).unwrap_or_default(),
                    cipher.get_mut(produced..).unwrap_or_default(),
                ) {
                    Ok(n) => {
                        produced += n;
                        out.consume(len);
                    }
                    Err(e) => result = Err(io::Error::other(e.to_string())),
                }
            }
            result
        }
        Ok(ConnectionState::EncodeTlsData(mut enc)) => {
            encode_into(outgoing, |buf| enc.encode(buf));
            Ok(())
        }
        Ok(ConnectionState::TransmitTlsData(t)) => {
            t.done();
            Ok(())
        }
        Ok(ConnectionState::PeerClosed) => {
            flags.peer_closed = true;
            Ok(())
        }
        // Plaintext waiting (it is handed out by the next read step),
        // a closed connection, or a handshake waiting for input.
        Ok(_) => Ok(()),
        Err(e) => Err(io::Error::new(ErrorKind::InvalidData, e)),
    };
    (discard, result.map(|()| produced))
}

/// Encodes one handshake record at the end of `out`, growing it as needed.
fn encode_into(out: &mut Vec<u8>, mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>) {
    let start = out.len();
    let mut room = 4096;
    loop {
        out.resize(start + room, 0);
        match encode(out.get_mut(start..).unwrap_or_default()) {
            Ok(n) => {
                out.truncate(start + n);
                return;
            }
            Err(EncodeError::InsufficientSize(e)) if e.required_size > room => {
                room = e.required_size;
            }
            Err(_) => {
                out.truncate(start);
                return;
            }
        }
    }
}

/// Runs rustls over `buf` until it needs more input: plaintext goes to
/// `plain`, handshake records to `outgoing`. Returns how many bytes of `buf`
/// rustls consumed, and whether the peer closed or an error occurred.
fn process<C: Records>(
    conn: &mut C,
    buf: &mut [u8],
    outgoing: &mut Vec<u8>,
    plain: &mut Vec<u8>,
) -> (usize, Processed) {
    let mut used = 0;
    let mut processed = Processed::default();
    loop {
        let rest = buf.get_mut(used..).unwrap_or_default();
        let UnbufferedStatus { discard, state } = conn.records(rest);
        let mut discard = discard;
        let mut again = false;
        match state {
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                while let Some(record) = traffic.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            plain.extend_from_slice(record.payload);
                        }
                        Err(e) => {
                            processed.error = Some(e);
                            break;
                        }
                    }
                }
                again = processed.error.is_none();
            }
            Ok(ConnectionState::ReadEarlyData(mut early)) => {
                // Early data is off in our settings; take it as plaintext anyway.
                discard += C::read_early(&mut early, plain);
                again = true;
            }
            Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                encode_into(outgoing, |b| enc.encode(b));
                again = true;
            }
            Ok(ConnectionState::TransmitTlsData(t)) => {
                // Records are written in order from `outgoing` by write_to.
                t.done();
                again = true;
            }
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => processed.eof = true,
            Ok(_) => {} // BlockedHandshake, WriteTraffic: needs more input.
            Err(e) => {
                used += discard;
                // rustls has queued the fatal alert: encode it for write_to.
                let rest = buf.get_mut(used..).unwrap_or_default();
                let UnbufferedStatus { discard, state } = conn.records(rest);
                if let Ok(ConnectionState::EncodeTlsData(mut enc)) = state {
                    encode_into(outgoing, |b| enc.encode(b));
                }
                used += discard;
                processed.error = Some(e);
                return (used.min(buf.len()), processed);
            }
        }
        used += discard;
        if !again || used > buf.len() {
            return (used.min(buf.len()), processed);
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod side_size {
    /// Outgoing TLS costs accepted connections nothing: the client end fits
    /// in the server end's room (measured: 1088 and 976 bytes, rustls 0.23).
    #[test]
    fn a_server_side_is_no_larger_than_before() {
        assert!(
            std::mem::size_of::<super::Side>()
                <= std::mem::size_of::<rustls::server::UnbufferedServerConnection>() + 8
        );
    }
}
