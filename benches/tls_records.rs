//! TLS record throughput (issue 5, "The instruments" item 2), in memory.
//!
//! The loop's own TLS driver (`switchboard::tls::TlsSession`, on rustls's
//! unbuffered API) is crate-private, so this measures the record layer through
//! rustls's public buffered API instead: a `ServerConnection` built with the
//! server's own settings (`switchboard::tls::server_config`, the ring provider)
//! and a `ClientConnection`, with development certificates made by
//! `switchboard::certs::generate` in a temporary directory. No socket: records
//! are moved between the two in `Vec`s. The figures are the server's side:
//!
//! - `tls_encrypt/<size>`: the server writes application data in writes of
//!   `size` bytes (one record each) and takes the records out (`write_tls`);
//! - `tls_decrypt/<size>`: the server reads records the client encrypted
//!   beforehand (untimed), decrypts them (`read_tls`, `process_new_packets`)
//!   and reads the plaintext out.
//!
//! The buffered API copies plaintext once more than the loop's driver does, so
//! these are a slight underestimate of the driver's record throughput.
//!
//!     cargo bench --bench tls_records
//!     cargo test --benches        # smoke mode: each benchmark runs once

use std::hint::black_box;
use std::io::{ErrorKind, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConnection};
use switchboard::certs::{self, DevCerts};
use switchboard::tls::{ClientAuth, server_config};

/// Write sizes, and writes per iteration (64 KiB of plaintext per iteration
/// for 64 B writes would be 1,024 records; 64 keeps smoke mode instant).
const CASES: [(&str, usize, usize); 2] = [("64B", 64, 64), ("16KiB", 16 << 10, 4)];

/// A connected server/client pair.
struct Pair {
    server: Connection,
    client: Connection,
    /// Records in flight.
    wire: Vec<u8>,
    /// Plaintext read out.
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
        let client = ClientConnection::new(Arc::new(client_config), name).expect("client");
        let server = ServerConnection::new(server_config).expect("server");
        let mut pair = Self {
            server: server.into(),
            client: client.into(),
            wire: Vec::with_capacity(64 << 10),
            plain: vec![0; 64 << 10],
        };
        while pair.server.is_handshaking() || pair.client.is_handshaking() {
            let moved = pair.client_to_server() + pair.server_to_client();
            assert!(moved > 0, "handshake stalled");
        }
        // Session tickets and anything else still in flight.
        pair.server_to_client();
        pair.client_to_server();
        pair
    }

    /// Moves every pending record from `from` to `to`; returns the bytes moved.
    fn transfer(from: &mut Connection, to: &mut Connection, wire: &mut Vec<u8>) -> usize {
        wire.clear();
        while from.wants_write() {
            from.write_tls(wire).expect("write_tls");
        }
        let mut rest = &wire[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).expect("read_tls");
            to.process_new_packets().expect("process");
        }
        wire.len()
    }

    fn client_to_server(&mut self) -> usize {
        Self::transfer(&mut self.client, &mut self.server, &mut self.wire)
    }

    fn server_to_client(&mut self) -> usize {
        Self::transfer(&mut self.server, &mut self.client, &mut self.wire)
    }

    /// The server encrypts `writes` writes of `data`, taking each record out.
    fn server_encrypt(&mut self, data: &[u8], writes: usize) -> usize {
        let mut total = 0;
        for _ in 0..writes {
            self.server.writer().write_all(data).expect("write");
            self.wire.clear();
            while self.server.wants_write() {
                self.server.write_tls(&mut self.wire).expect("write_tls");
            }
            total += black_box(self.wire.len());
        }
        total
    }

    /// The client encrypts `writes` writes of `data` into `self.wire` (untimed).
    fn client_encrypt(&mut self, data: &[u8], writes: usize) {
        self.wire.clear();
        for _ in 0..writes {
            self.client.writer().write_all(data).expect("write");
            while self.client.wants_write() {
                self.client.write_tls(&mut self.wire).expect("write_tls");
            }
        }
    }

    /// The server decrypts the records in `self.wire` and reads the plaintext out.
    fn server_decrypt(&mut self) -> usize {
        let mut got = 0;
        let mut rest = &self.wire[..];
        while !rest.is_empty() {
            self.server.read_tls(&mut rest).expect("read_tls");
            self.server.process_new_packets().expect("process");
            loop {
                match self.server.reader().read(&mut self.plain) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
        got
    }
}

fn bench_tls(c: &mut Criterion) {
    let mut pair = Pair::new();
    if let Connection::Server(s) = &pair.server {
        eprintln!(
            "tls_records: {:?}, {:?}",
            s.protocol_version(),
            s.negotiated_cipher_suite().map(|cs| cs.suite())
        );
    }
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
