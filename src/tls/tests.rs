//! [`TlsSession`] driven in memory: a client end and a server end joined by
//! two byte pipes, with no socket and no clock. The pipes move bytes in
//! chunks of a fixed size and would block on a fixed pattern, so every run
//! is the same.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::{AlertDescription, CommonState, HandshakeKind, ProtocolVersion};

use super::*;
use crate::client::ClientTls;

// Certificates and settings
// ---------------------------------------------------------------------------

/// A CA, a server certificate for `localhost` and a client certificate for
/// `alice`, made once for every test; and a second CA that signed nothing.
struct Fixture {
    roots: Arc<RootCertStore>,
    other_roots: Arc<RootCertStore>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    client_chain: Vec<CertificateDer<'static>>,
    client_key: Vec<u8>,
}

fn new_ca(cn: &str) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.der().clone(), Issuer::new(params, key))
}

fn new_leaf(
    issuer: &Issuer<'static, KeyPair>,
    cn: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (CertificateDer<'static>, Vec<u8>) {
    let key = KeyPair::generate().expect("leaf key");
    let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let mut params = CertificateParams::new(names).expect("leaf names");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).expect("leaf certificate");
    (cert.der().clone(), key.serialize_der())
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (ca, issuer) = new_ca("test CA");
        let (other_ca, _) = new_ca("another CA");
        let (server, server_key) = new_leaf(
            &issuer,
            "localhost",
            &["localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client, client_key) =
            new_leaf(&issuer, "alice", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let roots_of = |ca: CertificateDer<'static>| {
            let mut roots = RootCertStore::empty();
            roots.add(ca).expect("root");
            Arc::new(roots)
        };
        Fixture {
            roots: roots_of(ca),
            other_roots: roots_of(other_ca),
            server_chain: vec![server],
            server_key,
            client_chain: vec![client],
            client_key,
        }
    })
}

/// The server's own settings (`server_config`) with this fixture.
fn server_settings(auth: &ClientAuth) -> Arc<rustls::ServerConfig> {
    let f = fixture();
    let key = PrivatePkcs8KeyDer::from(f.server_key.clone()).into();
    server_config(f.server_chain.clone(), key, auth).expect("server settings")
}

/// The client library's own settings (`ClientTls::rustls_config`: TLS 1.3
/// and 1.2), trusting the fixture's CA.
fn client_settings() -> Arc<rustls::ClientConfig> {
    ClientTls::new(Arc::clone(&fixture().roots))
        .rustls_config()
        .expect("client settings")
}

/// Client settings that offer `version` only.
fn client_settings_for(
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("version")
        .with_root_certificates(Arc::clone(&fixture().roots))
        .with_no_client_auth();
    Arc::new(config)
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("name")
}

/// rustls's view of either end, for what the driver does not report.
fn common(tls: &TlsSession) -> &CommonState {
    match &tls.conn {
        Side::Server(c) => c,
        Side::Client(c) => c,
    }
}

// The pipes and the two ends
// ---------------------------------------------------------------------------

/// One direction of an in-memory connection.
#[derive(Debug, Default)]
struct Pipe {
    bytes: VecDeque<u8>,
    /// Most bytes one read or write moves (0: no limit).
    chunk: usize,
    /// Every `block_every`-th read, and every `block_every`-th write, would
    /// block (0: none does). Counted apart, so the pattern cannot fall into
    /// step with the test's loop and starve one side.
    block_every: usize,
    reads: usize,
    writes: usize,
    /// The writing end closed: reading the empty pipe is end of stream.
    closed: bool,
    /// Bytes written in all.
    written: usize,
}

impl Pipe {
    fn limited(chunk: usize, block_every: usize) -> Self {
        Self {
            chunk,
            block_every,
            ..Self::default()
        }
    }

    fn would_block(block_every: usize, calls: &mut usize) -> bool {
        *calls += 1;
        block_every != 0 && *calls % block_every == 0
    }

    fn limit(&self, n: usize) -> usize {
        if self.chunk == 0 {
            n
        } else {
            n.min(self.chunk)
        }
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Self::would_block(self.block_every, &mut self.reads) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.bytes.is_empty() {
            return if self.closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = self.limit(buf.len()).min(self.bytes.len());
        for (dst, src) in buf.iter_mut().zip(self.bytes.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if Self::would_block(self.block_every, &mut self.writes) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.limit(buf.len());
        self.bytes.extend(&buf[..n]);
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One end: its driver, and what its application sent and received.
struct End {
    tls: TlsSession,
    /// Plaintext waiting to be encrypted.
    out: Vec<u8>,
    /// Plaintext received.
    got: Vec<u8>,
    /// What `take_established` reported, and after how many bytes of `got`.
    established: Option<(Option<PeerIdentity>, usize)>,
    /// `read_step` reported the end of the stream.
    eof: bool,
    /// The read error that ended this end.
    error: Option<ReadError>,
    /// Read steps that brought plaintext.
    data_steps: usize,
}

impl End {
    fn new(tls: TlsSession) -> Self {
        Self {
            tls,
            out: Vec::new(),
            got: Vec::new(),
            established: None,
            eof: false,
            error: None,
            data_steps: 0,
        }
    }

    fn done(&self) -> bool {
        self.eof || self.error.is_some()
    }

    /// One `write_to`; returns whether output is still pending.
    fn write(&mut self, pipe: &mut Pipe, scratch: &mut [u8]) -> bool {
        let mut rest = &self.out[..];
        let pending = self
            .tls
            .write_to(pipe, &mut rest, scratch)
            .expect("write_to");
        let encrypted = self.out.len() - rest.len();
        self.out.drain(..encrypted);
        pending
    }

    /// Read steps until `WouldBlock`, end of stream or an error.
    fn read(&mut self, pipe: &mut Pipe, scratch: &mut [u8]) {
        let mut plain = Vec::new();
        while !self.done() {
            let step = self.tls.read_step(pipe, scratch, &mut plain);
            if let Some(subject) = self.tls.take_established() {
                assert!(self.established.is_none(), "established reported twice");
                self.established = Some((subject, self.got.len()));
            }
            match step {
                Ok(ReadStep::Data(n)) => {
                    assert_eq!(n, plain.len());
                    assert!(
                        self.established.is_some(),
                        "plaintext before the handshake completed"
                    );
                    self.got.extend_from_slice(&plain);
                    self.data_steps += 1;
                }
                Ok(ReadStep::Progress) => assert!(plain.is_empty()),
                Ok(ReadStep::WouldBlock) => return,
                Ok(ReadStep::Eof) => self.eof = true,
                Err(e) => self.error = Some(e),
            }
        }
    }
}

/// A client end and a server end, joined by two pipes.
struct Pair {
    client: End,
    server: End,
    c2s: Pipe,
    s2c: Pipe,
    /// `read_step`'s buffer: any size works.
    read_scratch: Vec<u8>,
    /// `write_to`'s buffer: at least `MIN_WRITE_SCRATCH`.
    write_scratch: Vec<u8>,
}

impl Pair {
    fn new(client: Arc<rustls::ClientConfig>, server: &Arc<rustls::ServerConfig>) -> Self {
        let mut client = TlsSession::new_client(client, localhost()).expect("client end");
        client.start();
        Self {
            client: End::new(client),
            server: End::new(TlsSession::new(server).expect("server end")),
            c2s: Pipe::default(),
            s2c: Pipe::default(),
            read_scratch: vec![0; 64 << 10],
            write_scratch: vec![0; MIN_WRITE_SCRATCH],
        }
    }

    /// Both pipes move at most `chunk` bytes per call and block every
    /// `block_every`-th call; reads go through a `read_scratch`-byte buffer.
    fn paced(mut self, chunk: usize, block_every: usize, read_scratch: usize) -> Self {
        self.c2s = Pipe::limited(chunk, block_every);
        self.s2c = Pipe::limited(chunk, block_every);
        self.read_scratch = vec![0; read_scratch];
        self
    }

    fn client_writes(&mut self) -> bool {
        self.client.write(&mut self.c2s, &mut self.write_scratch)
    }

    fn server_writes(&mut self) -> bool {
        self.server.write(&mut self.s2c, &mut self.write_scratch)
    }

    fn server_reads(&mut self) {
        self.server.read(&mut self.c2s, &mut self.read_scratch);
    }

    fn client_reads(&mut self) {
        self.client.read(&mut self.s2c, &mut self.read_scratch);
    }

    /// Writes and reads both ways until nothing moves any more: every
    /// written byte read (or its reader finished), nothing left to write.
    fn run(&mut self) {
        for _ in 0..1_000_000 {
            let before = (
                self.c2s.written,
                self.s2c.written,
                self.c2s.bytes.len(),
                self.s2c.bytes.len(),
            );
            let client_pending = self.client_writes();
            self.server_reads();
            let server_pending = self.server_writes();
            self.client_reads();
            let after = (
                self.c2s.written,
                self.s2c.written,
                self.c2s.bytes.len(),
                self.s2c.bytes.len(),
            );
            let drained = (self.c2s.bytes.is_empty() || self.server.done())
                && (self.s2c.bytes.is_empty() || self.client.done());
            if before == after && drained && !client_pending && !server_pending {
                return;
            }
        }
        panic!(
            "the pair never settled: c2s {:?} s2c {:?}, client {:?} eof {} err {:?} got {} out {}, server {:?} eof {} err {:?} got {} out {}",
            (self.c2s.bytes.len(), self.c2s.written),
            (self.s2c.bytes.len(), self.s2c.written),
            self.client.tls,
            self.client.eof,
            self.client.error,
            self.client.got.len(),
            self.client.out.len(),
            self.server.tls,
            self.server.eof,
            self.server.error,
            self.server.got.len(),
            self.server.out.len(),
        );
    }

    /// Both ends hold no buffer: what an idle connection costs is rustls's
    /// state alone.
    fn assert_idle_buffers_freed(&self) {
        for (name, end) in [("client", &self.client), ("server", &self.server)] {
            assert_eq!(end.tls.incoming.capacity(), 0, "{name} keeps input");
            assert_eq!(end.tls.outgoing.capacity(), 0, "{name} keeps output");
        }
    }
}

/// A test message: `len` bytes that show where they were cut.
fn message(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

fn cn(subject: &Option<PeerIdentity>) -> Option<&str> {
    subject.as_ref().and_then(|s| s.cn.as_deref())
}

// The tests
// ---------------------------------------------------------------------------

#[test]
fn handshake_then_data_both_ways_in_tls13_and_tls12() {
    let server = server_settings(&ClientAuth::None);
    for (version, config) in [
        (ProtocolVersion::TLSv1_3, client_settings()),
        (
            ProtocolVersion::TLSv1_2,
            client_settings_for(&rustls::version::TLS12),
        ),
    ] {
        let mut pair = Pair::new(config, &server);
        // Queued before the handshake: held back until it completes.
        pair.client.out = b"USER alice\r\n".to_vec();
        pair.run();
        assert_eq!(common(&pair.server.tls).protocol_version(), Some(version));
        assert_eq!(common(&pair.client.tls).protocol_version(), Some(version));
        // The client end reports the server certificate's subject; the server
        // end reports no client certificate.
        let (subject, _) = pair.client.established.clone().expect("client end");
        assert_eq!(cn(&subject), Some("localhost"), "{version:?}");
        let (subject, at) = pair.server.established.clone().expect("server end");
        assert_eq!((subject, at), (None, 0));
        assert_eq!(pair.server.got, b"USER alice\r\n");
        pair.server.out = message(40_000, 1);
        pair.client.out = message(20_000, 2);
        pair.run();
        assert_eq!(pair.client.got, message(40_000, 1), "{version:?}");
        assert_eq!(pair.server.got[12..], message(20_000, 2)[..], "{version:?}");
        assert!(pair.client.error.is_none() && pair.server.error.is_none());
        assert!(!pair.client.tls.wants_write() && !pair.server.tls.wants_write());
        pair.assert_idle_buffers_freed();
    }
}

#[test]
fn one_byte_reads_and_writes_with_would_block() {
    let server = server_settings(&ClientAuth::None);
    // 1-byte pipes, blocking on every 3rd call; a 1-byte and a 7-byte read buffer.
    for read_scratch in [1, 7] {
        let mut pair = Pair::new(client_settings(), &server).paced(1, 3, read_scratch);
        pair.client.out = message(1_000, 3);
        pair.run();
        assert!(pair.client.established.is_some() && pair.server.established.is_some());
        // More than one record each way, every record read a byte at a time.
        pair.server.out = message(17_000, 4);
        pair.client.out.extend(message(33_000, 5));
        pair.run();
        assert_eq!(pair.client.got, message(17_000, 4));
        let mut expected = message(1_000, 3);
        expected.extend(message(33_000, 5));
        assert_eq!(pair.server.got, expected);
        assert!(pair.c2s.writes > 50_000, "the pipes really were paced");
        pair.client.tls.send_close_notify();
        pair.run();
        assert!(pair.server.eof && pair.server.error.is_none());
        pair.assert_idle_buffers_freed();
    }
}

#[test]
fn close_notify_both_ways() {
    let server = server_settings(&ClientAuth::None);
    let mut pair = Pair::new(client_settings(), &server);
    pair.run();
    // The client says goodbye after its last data; the server reads both.
    pair.client.out = b"QUIT\r\n".to_vec();
    pair.client.tls.send_close_notify();
    pair.run();
    assert_eq!(pair.server.got, b"QUIT\r\n");
    assert!(pair.server.eof && pair.server.error.is_none());
    assert!(!pair.client.eof, "the server has not closed yet");
    // The server's end is still writable: its last words, then its own
    // close_notify.
    pair.server.out = b"ACK bye\r\n".to_vec();
    pair.server.tls.send_close_notify();
    pair.run();
    assert_eq!(pair.client.got, b"ACK bye\r\n");
    assert!(pair.client.eof && pair.client.error.is_none());
    assert!(pair.client.tls.close_notify_sent && pair.server.tls.close_notify_sent);
    // End of stream stays end of stream, whatever arrives after it.
    pair.s2c.bytes.extend([0x17, 0x03, 0x03, 0x00, 0x01, 0x00]);
    let mut plain = Vec::new();
    let step = pair
        .client
        .tls
        .read_step(&mut pair.s2c, &mut pair.read_scratch, &mut plain);
    assert!(matches!(step, Ok(ReadStep::Eof)), "{step:?}");
    // Nothing more to send once close_notify is out.
    assert!(!pair.client_writes() && !pair.server_writes());
    pair.assert_idle_buffers_freed();
}

#[test]
fn close_notify_queued_behind_data_a_byte_at_a_time() {
    let server = server_settings(&ClientAuth::None);
    let mut pair = Pair::new(client_settings(), &server).paced(1, 2, 1);
    pair.run();
    pair.server.out = message(5_000, 6);
    pair.server.tls.send_close_notify();
    pair.run();
    assert_eq!(pair.client.got, message(5_000, 6));
    assert!(pair.client.eof && pair.client.error.is_none());
}

#[test]
fn a_tcp_close_without_close_notify_is_end_of_stream() {
    let server = server_settings(&ClientAuth::None);
    let mut pair = Pair::new(client_settings(), &server);
    pair.run();
    pair.c2s.closed = true;
    pair.server_reads();
    assert!(pair.server.eof && pair.server.error.is_none());
}

#[test]
fn a_corrupted_record_is_a_tls_error_and_an_alert() {
    let server = server_settings(&ClientAuth::None);
    for flip in [5, 6, 20] {
        let mut pair = Pair::new(client_settings(), &server);
        pair.run();
        pair.client.out = b"PUBLISH 1 secret\r\n".to_vec();
        assert!(!pair.client_writes());
        // One application data record: flip a byte of its ciphertext (or tag).
        assert_eq!(pair.c2s.bytes.front(), Some(&0x17));
        let at = flip.min(pair.c2s.bytes.len() - 1);
        if let Some(b) = pair.c2s.bytes.get_mut(at) {
            *b ^= 0x40;
        }
        pair.server_reads();
        assert!(pair.server.got.is_empty(), "no plaintext from a bad record");
        match &pair.server.error {
            Some(ReadError::Tls(rustls::Error::DecryptError)) => {}
            other => panic!("flip at {at}: {other:?}"),
        }
        // The alert rustls prepared is queued, and reaches the client.
        assert!(pair.server.tls.wants_write());
        assert!(!pair.server_writes());
        assert!(!pair.server.tls.wants_write());
        pair.client_reads();
        match &pair.client.error {
            Some(ReadError::Tls(rustls::Error::AlertReceived(AlertDescription::BadRecordMac))) => {}
            other => panic!("{other:?}"),
        }
        let shown = pair.client.error.as_ref().map(ToString::to_string);
        assert!(shown.is_some_and(|s| s.contains("BadRecordMac")));
    }
}

#[test]
fn a_record_split_over_several_reads() {
    let server = server_settings(&ClientAuth::None);
    let mut pair = Pair::new(client_settings(), &server);
    pair.run();
    pair.server.out = message(10_000, 7);
    assert!(!pair.server_writes());
    let record: Vec<u8> = pair.s2c.bytes.drain(..).collect();
    assert_eq!(record.first(), Some(&0x17));
    let mut plain = Vec::new();
    let mut fed = 0;
    for cut in [1, 4, 5, 300, 4_000, record.len() - 1] {
        pair.s2c.bytes.extend(&record[fed..cut]);
        fed = cut;
        let step = pair
            .client
            .tls
            .read_step(&mut pair.s2c, &mut pair.read_scratch, &mut plain);
        assert_eq!(step.ok(), Some(ReadStep::Progress), "cut at {cut}");
        assert_eq!(pair.client.tls.incoming.len(), cut, "kept until whole");
    }
    pair.s2c.bytes.extend(&record[fed..]);
    let step = pair
        .client
        .tls
        .read_step(&mut pair.s2c, &mut pair.read_scratch, &mut plain);
    assert_eq!(step.ok(), Some(ReadStep::Data(10_000)));
    assert_eq!(plain, message(10_000, 7));
    // Consumed, and freed.
    assert_eq!(pair.client.tls.incoming.capacity(), 0);
}

#[test]
fn two_records_in_one_read_and_a_third_cut() {
    let server = server_settings(&ClientAuth::None);
    let mut pair = Pair::new(client_settings(), &server);
    pair.run();
    // Three records, each its own write_to.
    let mut wire = Vec::new();
    for seed in 0..3 {
        pair.server.out = message(100, seed);
        assert!(!pair.server_writes());
        wire.extend(pair.s2c.bytes.drain(..));
    }
    let cut = wire.len() - 10;
    pair.s2c.bytes.extend(&wire[..cut]);
    let mut plain = Vec::new();
    let step = pair
        .client
        .tls
        .read_step(&mut pair.s2c, &mut pair.read_scratch, &mut plain);
    assert_eq!(step.ok(), Some(ReadStep::Data(200)));
    assert_eq!(pair.client.tls.incoming.len(), wire.len() / 3 - 10);
    pair.s2c.bytes.extend(&wire[cut..]);
    let step = pair
        .client
        .tls
        .read_step(&mut pair.s2c, &mut pair.read_scratch, &mut plain);
    assert_eq!(step.ok(), Some(ReadStep::Data(100)));
    assert_eq!(plain, message(100, 2));
}

#[test]
fn the_client_sends_nothing_to_a_server_it_cannot_verify() {
    let server = server_settings(&ClientAuth::None);
    let config = ClientTls::new(Arc::clone(&fixture().other_roots))
        .rustls_config()
        .expect("client settings");
    let mut pair = Pair::new(config, &server);
    pair.client.out = b"PASS hunter2\r\n".to_vec();
    pair.run();
    match &pair.client.error {
        Some(ReadError::Tls(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        pair.client.out, b"PASS hunter2\r\n",
        "not one byte encrypted"
    );
    assert!(pair.client.established.is_none() && pair.server.got.is_empty());
    // The client's alert told the server why.
    match &pair.server.error {
        Some(ReadError::Tls(rustls::Error::AlertReceived(AlertDescription::UnknownCA))) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn mutual_tls_reports_each_side_the_other_subject() {
    let f = fixture();
    let server = server_settings(&ClientAuth::Required(Arc::clone(&f.roots)));
    let mut tls = ClientTls::new(Arc::clone(&f.roots));
    let key = PrivatePkcs8KeyDer::from(f.client_key.clone()).into();
    tls.client_cert = Some((f.client_chain.clone(), key));
    let mut pair = Pair::new(tls.rustls_config().expect("client settings"), &server);
    pair.client.out = b"PING\r\n".to_vec();
    pair.run();
    let (subject, _) = pair.server.established.clone().expect("server end");
    assert_eq!(cn(&subject), Some("alice"));
    let (subject, _) = pair.client.established.clone().expect("client end");
    assert_eq!(cn(&subject), Some("localhost"));
    assert_eq!(pair.server.got, b"PING\r\n");

    // Without a certificate the server refuses, and says so.
    let mut pair = Pair::new(client_settings(), &server);
    pair.run();
    assert!(pair.server.established.is_none());
    assert!(matches!(
        pair.server.error,
        Some(ReadError::Tls(rustls::Error::NoCertificatesPresented))
    ));
    assert!(matches!(
        pair.client.error,
        Some(ReadError::Tls(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
        )))
    ));
}

#[test]
fn a_second_connection_resumes() {
    let server = server_settings(&ClientAuth::None);
    for config in [
        client_settings(),
        client_settings_for(&rustls::version::TLS12),
    ] {
        let mut first = Pair::new(Arc::clone(&config), &server);
        first.run();
        assert_eq!(
            common(&first.client.tls).handshake_kind(),
            Some(HandshakeKind::Full)
        );
        let mut second = Pair::new(config, &server);
        second.client.out = b"HELLO\r\n".to_vec();
        second.run();
        for tls in [&second.client.tls, &second.server.tls] {
            assert_eq!(common(tls).handshake_kind(), Some(HandshakeKind::Resumed));
        }
        assert_eq!(second.server.got, b"HELLO\r\n");
        let (subject, _) = second.client.established.clone().expect("resumed");
        // A resumed session still knows the server's certificate.
        assert_eq!(cn(&subject), Some("localhost"));
    }
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    let server = server_settings(&ClientAuth::None);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..300 {
        let mut tls = TlsSession::new(&server).expect("server end");
        let mut pipe = Pipe::limited(1 + (next() % 700) as usize, 0);
        // Half the rounds start like a handshake record, so rustls looks further.
        if round % 2 == 0 {
            pipe.bytes
                .extend([0x16, 0x03, 0x01, (next() % 0x50) as u8, 0]);
        }
        pipe.bytes.extend((0..next() % 3_000).map(|_| next() as u8));
        pipe.closed = true;
        let mut scratch = vec![0; 1 + (next() % 5_000) as usize];
        let mut plain = Vec::new();
        for _ in 0..10_000 {
            match tls.read_step(&mut pipe, &mut scratch, &mut plain) {
                Ok(ReadStep::Progress | ReadStep::Data(_)) => {}
                Ok(ReadStep::WouldBlock) => panic!("a closed pipe never blocks"),
                Ok(ReadStep::Eof) | Err(ReadError::Tls(_)) => break,
                Err(ReadError::Io(e)) => panic!("{e}"),
            }
        }
        assert!(plain.is_empty(), "no plaintext before a handshake");
        let mut sink = Pipe::default();
        let _ = tls.write_to(&mut sink, &mut &[][..], &mut vec![0; MIN_WRITE_SCRATCH]);
    }
}

#[test]
fn read_errors_are_typed_and_transparent() {
    let e = ReadError::Tls(rustls::Error::DecryptError);
    assert_eq!(e.to_string(), rustls::Error::DecryptError.to_string());
    let e = ReadError::from(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
    assert!(matches!(&e, ReadError::Io(io) if io.kind() == io::ErrorKind::ConnectionReset));
    assert_eq!(e.to_string(), "reset");
    // A socket error comes back as it is.
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::ConnectionReset.into())
        }
    }
    let mut tls = TlsSession::new(&server_settings(&ClientAuth::None)).expect("server end");
    let step = tls.read_step(&mut Broken, &mut [0; 64], &mut Vec::new());
    assert!(matches!(step, Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset));
}

/// An idle TLS connection costs its `TlsSession` and nothing else: keep it
/// this size or smaller (1144 bytes with rustls 0.23 on 64-bit targets
/// before the client moved onto it).
#[test]
fn a_tls_session_is_no_larger_than_before() {
    let size = std::mem::size_of::<TlsSession>();
    eprintln!("TlsSession: {size} bytes");
    assert!(size <= 1144, "TlsSession grew to {size} bytes");
}
