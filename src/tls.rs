//! TLS inside the loop: rustls driven by readiness, and server TLS settings.
//!
//! [`TlsSession`] wraps a `rustls::ServerConnection` for the reactor. It is
//! generic over `Read`/`Write`, so it never blocks and never sees a socket
//! type: the reactor hands it the nonblocking stream. One step of
//! [`TlsSession::read_step`] either hands out buffered plaintext, or reads TLS
//! records once and processes them; the reactor repeats it until
//! `WouldBlock`, within its read budget. [`TlsSession::write_to`] moves queued
//! plaintext into rustls (which encrypts it into records) and writes records
//! until the socket would block.
//!
//! rustls follows the contract of `rustls::Connection` (conn.rs): plaintext is
//! taken out after every `process_new_packets`, so its received-plaintext
//! buffer never fills; a TLS error is sticky, and the alert rustls queued for it
//! is written (best effort) before the connection is dropped; `close_notify`
//! is sent when the broker closes a session, and a peer's `close_notify` is
//! end of stream.
//!
//! Memory: rustls frees its outgoing record chunks once written, so an idle
//! TLS connection holds only its `ServerConnection` state (see the README's
//! footprint table for the measured figure).

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConnection};

use crate::buf::{MAX_IOV, OutQueue};
use crate::certs::{CertSubject, subject_of};

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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// What one [`TlsSession::read_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadStep {
    /// `n` plaintext bytes were put at the front of the buffer.
    Data(usize),
    /// Records were read and processed; call again.
    Progress,
    /// Nothing more until the socket is readable again.
    WouldBlock,
    /// The peer closed (cleanly with `close_notify`, or with a TCP EOF).
    Eof,
}

/// One TLS connection's state, as the reactor keeps it.
#[derive(Debug)]
pub(crate) struct TlsSession {
    conn: ServerConnection,
    /// The handshake completed and has been reported.
    established: bool,
    close_notify_sent: bool,
}

impl TlsSession {
    pub(crate) fn new(config: &Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: ServerConnection::new(Arc::clone(config))?,
            established: false,
            close_notify_sent: false,
        })
    }

    /// Hands out buffered plaintext, or else reads and processes TLS records once.
    ///
    /// # Errors
    ///
    /// An I/O error from the socket, or a TLS error (as `InvalidData`). After a
    /// TLS error, call [`TlsSession::write_to`] once (best effort) to send the
    /// alert rustls queued, then drop the connection.
    pub(crate) fn read_step<S: Read>(
        &mut self,
        sock: &mut S,
        buf: &mut [u8],
    ) -> io::Result<ReadStep> {
        match self.conn.reader().read(buf) {
            Ok(0) => return Ok(ReadStep::Eof),
            Ok(n) => return Ok(ReadStep::Data(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(ReadStep::Eof),
            Err(e) => return Err(e),
        }
        match self.conn.read_tls(sock) {
            Ok(0) => {
                // TCP EOF: anything rustls still holds was processed already.
                return Ok(ReadStep::Eof);
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(ReadStep::WouldBlock),
            Err(e) => return Err(e),
        }
        self.conn
            .process_new_packets()
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
        Ok(ReadStep::Progress)
    }

    /// Reports the end of the handshake once: `Some(subject)` the first time
    /// it is seen complete, where `subject` is the verified client
    /// certificate's subject, if the client sent one.
    pub(crate) fn take_established(&mut self) -> Option<Option<CertSubject>> {
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

    /// Whether rustls has records to write.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Queues `close_notify` (once).
    pub(crate) fn send_close_notify(&mut self) {
        if !self.close_notify_sent {
            self.close_notify_sent = true;
            self.conn.send_close_notify();
        }
    }

    /// Whether `close_notify` has been queued.
    pub(crate) fn close_notify_sent(&self) -> bool {
        self.close_notify_sent
    }

    /// Moves plaintext from `out` into rustls and writes records to `sock`
    /// until everything is written or the socket would block. Returns whether
    /// output is still pending (so writable interest is needed).
    ///
    /// # Errors
    ///
    /// An I/O error from the socket.
    pub(crate) fn write_to<S: Write>(
        &mut self,
        sock: &mut S,
        out: &mut OutQueue,
    ) -> io::Result<bool> {
        loop {
            // Feed plaintext only once earlier records are out, so rustls
            // buffers at most one batch (its buffer limit, 64 KiB by default).
            while !out.is_empty() && !self.conn.wants_write() {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let n = out.fill_slices(&mut slices);
                let taken = self
                    .conn
                    .writer()
                    .write_vectored(slices.get(..n).unwrap_or_default())?;
                if taken == 0 {
                    break;
                }
                out.consume(taken);
            }
            if !self.conn.wants_write() {
                // Plaintext left over while handshaking waits for the
                // handshake to finish; that is not a reason to poll for
                // writability (it would spin).
                return Ok(!out.is_empty() && !self.conn.is_handshaking());
            }
            match self.conn.write_tls(sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
