//! TLS record throughput (issue 5, "The instruments" item 2), in memory.
//!
//! Both ends are the loop's own TLS driver (`switchboard::tls::TlsSession`,
//! on rustls's unbuffered API), the code the reactor runs for every TLS
//! connection and the client library runs for its own: a server end built
//! with the server's settings (`switchboard::tls::server_config`, the ring
//! provider) and a client end with the client's defaults (ring, TLS 1.3 and
//! 1.2, so TLS 1.3 is negotiated), with development certificates made by
//! `switchboard::certs::generate` in a temporary directory. No socket:
//! records are moved between the two in `Vec`s, with the same 64 KiB scratch
//! buffer the reactor lends each connection. The figures are the server
//! end's:
//!
//! - `tls_encrypt/<size>`: the server end encrypts writes of `size` bytes
//!   (one `write_to` and one record each) into the wire;
//! - `tls_decrypt/<size>`: the server end reads the records the client end
//!   encrypted beforehand (untimed) with `read_step`, decrypting them in
//!   place and handing out the plaintext.
//!
//! Run with:
//!
//!     cargo bench --bench tls_records
//!     cargo test --benches        # smoke mode: each benchmark runs once

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use switchboard::certs::{self, DevCerts};
use switchboard::tls::{ClientAuth, ReadStep, TlsSession, server_config};

/// Write sizes, and writes per iteration (64 KiB of plaintext per iteration
/// for 64 B writes would be 1,024 records; 64 keeps smoke mode instant).
const CASES: [(&str, usize, usize); 2] = [("64B", 64, 64), ("16KiB", 16 << 10, 4)];

/// The reactor's scratch buffer size.
const SCRATCH: usize = 64 << 10;

/// A connected server/client pair.
struct Pair {
    server: TlsSession,
    client: TlsSession,
    /// Records in flight.
    wire: Vec<u8>,
    /// The driver's scratch buffer.
    scratch: Vec<u8>,
    /// Plaintext of one read step.
    plain: Vec<u8>,
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Pair {
    fn new() -> Self {
        let dir = TempDir(std::env::temp_dir().join(format!(
            "switchboard-bench-tls-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        )));
        std::fs::create_dir_all(&dir.0).expect("temp dir");
        certs::generate(&dir.0, &[], true).expect("certificates");
        let paths = DevCerts::in_dir(&dir.0);
        let chain = certs::load_certs(&paths.server_cert).expect("server.pem");
        let key = certs::load_key(&paths.server_key).expect("server.key");
        let roots = certs::load_roots(&paths.ca_cert).expect("ca.pem");
        let server_config = server_config(chain, key, &ClientAuth::None).expect("server config");
        let client_config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        let name = ServerName::try_from("localhost").expect("server name");
        let mut client = TlsSession::new_client(Arc::new(client_config), name).expect("client");
        client.start();
        let server = TlsSession::new(&server_config).expect("server");
        let mut pair = Self {
            server,
            client,
            wire: Vec::with_capacity(SCRATCH),
            scratch: vec![0; SCRATCH],
            plain: Vec::with_capacity(SCRATCH),
        };
        let mut rounds = 0;
        while pair.server.is_handshaking() || pair.client.is_handshaking() {
            let moved = pair.client_to_server() + pair.server_to_client();
            assert!(moved > 0, "handshake stalled");
            rounds += 1;
            assert!(rounds < 100, "handshake stalled");
        }
        // Session tickets and anything else still in flight.
        pair.server_to_client();
        pair.client_to_server();
        pair
    }

    /// Moves every pending record from `from` to `to`; returns the bytes moved.
    fn transfer(
        from: &mut TlsSession,
        to: &mut TlsSession,
        wire: &mut Vec<u8>,
        scratch: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> usize {
        wire.clear();
        let pending = from
            .write_to(wire, &mut &[][..], scratch)
            .expect("write_to");
        assert!(!pending, "a Vec takes everything");
        let got = read_all(to, wire, scratch, plain);
        assert_eq!(got, 0, "no application data in the handshake");
        wire.len()
    }

    fn client_to_server(&mut self) -> usize {
        Self::transfer(
            &mut self.client,
            &mut self.server,
            &mut self.wire,
            &mut self.scratch,
            &mut self.plain,
        )
    }

    fn server_to_client(&mut self) -> usize {
        Self::transfer(
            &mut self.server,
            &mut self.client,
            &mut self.wire,
            &mut self.scratch,
            &mut self.plain,
        )
    }

    /// The server end encrypts `writes` writes of `data`, taking each
    /// record out.
    fn server_encrypt(&mut self, data: &[u8], writes: usize) -> usize {
        let mut total = 0;
        for _ in 0..writes {
            self.wire.clear();
            let mut out = data;
            let pending = self
                .server
                .write_to(&mut self.wire, &mut out, &mut self.scratch)
                .expect("write_to");
            assert!(!pending && out.is_empty());
            total += black_box(self.wire.len());
        }
        total
    }

    /// The client end encrypts `writes` writes of `data` into `self.wire`
    /// (untimed).
    fn client_encrypt(&mut self, data: &[u8], writes: usize) {
        self.wire.clear();
        for _ in 0..writes {
            let mut out = data;
            self.client
                .write_to(&mut self.wire, &mut out, &mut self.scratch)
                .expect("write_to");
            assert!(out.is_empty());
        }
    }

    /// The server end reads and decrypts the records in `self.wire`.
    fn server_decrypt(&mut self) -> usize {
        read_all(
            &mut self.server,
            &self.wire,
            &mut self.scratch,
            &mut self.plain,
        )
    }
}

/// Read steps over `wire` until it is consumed; returns the plaintext bytes.
fn read_all(tls: &mut TlsSession, wire: &[u8], scratch: &mut [u8], plain: &mut Vec<u8>) -> usize {
    let mut rest = wire;
    let mut got = 0;
    while !rest.is_empty() {
        match tls.read_step(&mut rest, scratch, plain) {
            Ok(ReadStep::Data(n)) => got += black_box(n),
            Ok(ReadStep::Progress) => {}
            Ok(other) => panic!("read_step: {other:?}"),
            Err(e) => panic!("read_step: {e}"),
        }
    }
    got
}

fn bench_tls(c: &mut Criterion) {
    let mut pair = Pair::new();
    let mut group = c.benchmark_group("tls_encrypt");
    for (name, size, writes) in CASES {
        let data = vec![0x5a; size];
        group.throughput(Throughput::Bytes((size * writes) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &data, |b, data| {
            b.iter(|| pair.server_encrypt(data, writes));
        });
    }
    group.finish();
    let mut group = c.benchmark_group("tls_decrypt");
    for (name, size, writes) in CASES {
        let data = vec![0xa5; size];
        group.throughput(Throughput::Bytes((size * writes) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &data, |b, data| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    pair.client_encrypt(data, writes);
                    let start = Instant::now();
                    let got = pair.server_decrypt();
                    total += start.elapsed();
                    assert_eq!(got, size * writes);
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_tls);
criterion_main!(benches);
