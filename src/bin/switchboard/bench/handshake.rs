//! `bench handshake`: TLS handshakes one after another, each on a new
//! connection that is closed (close_notify) as soon as the handshake is done.
//! `--concurrency N` runs N such sequences at once, each on its own thread
//! with a blocking socket and rustls's `StreamOwned` (the load generator is
//! not the server; threads keep it simple). One at a time, the server sleeps
//! and wakes for every flight, and its CPU per handshake counts those
//! wake-ups; several at a time it is what a busy server pays.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::HandshakeKind;
use rustls::pki_types::ServerName;

use super::report::{Report, rate};
use super::{CommonArgs, proc, secs};

/// How long one connection may take (connect, handshake, close).
const PER_CONNECTION: Duration = Duration::from_secs(5);
/// Most handshake sequences run at once.
const MAX_CONCURRENCY: usize = 256;

#[derive(clap::Args, Debug)]
pub(crate) struct HandshakeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Seconds to run.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    duration: f64,
    /// Keep one client session cache, so handshakes after the first resume
    /// (TLS 1.3 tickets or TLS 1.2 session ids, as the server offers).
    #[arg(long)]
    resume: bool,
    /// Offer only TLS 1.2 (by default the client offers 1.3 and 1.2).
    #[arg(long)]
    tls12: bool,
    /// Handshake sequences run at once (threads), 1 to 256.
    #[arg(long, value_name = "N", default_value_t = 1)]
    concurrency: usize,
}

pub(crate) fn run(args: HandshakeArgs) -> Result<(Report, bool), String> {
    let c = &args.common;
    if c.target != super::TargetKind::Switchboard {
        return Err("handshake measures this server's TLS only: --target switchboard".into());
    }
    let duration = secs(args.duration, "--duration")?;
    if args.concurrency == 0 || args.concurrency > MAX_CONCURRENCY {
        return Err(format!("--concurrency must be 1 to {MAX_CONCURRENCY}"));
    }
    let addr = c.addr(true)?;
    let config = if args.tls12 {
        c.tls_config_for(args.resume, &[&rustls::version::TLS12])?
    } else {
        c.tls_config(args.resume)?
    };
    let name = c.server_name(addr)?;
    super::probe(addr)?;
    let mut report = Report::new("handshake");
    c.describe(&mut report, addr, true);
    report.param("duration_s", duration.as_secs_f64());
    report.param("resume", args.resume);
    report.param("concurrency", args.concurrency);

    std::thread::sleep(Duration::from_millis(50));
    let cpu_before = c.server_pid.map(proc::cpu_us).transpose()?;
    let start = Instant::now();
    let end = start + duration;
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (config, name) = (Arc::clone(&config), name.clone());
            std::thread::spawn(move || worker(addr, &config, &name, end))
        })
        .collect();
    let mut tally = Tally::default();
    let mut failure = None;
    for w in workers {
        match w.join() {
            Ok(Ok(t)) => tally.add(&t),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some("a handshake thread panicked".to_string())),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let elapsed = start.elapsed();
    let cpu_after = c.server_pid.map(proc::cpu_us).transpose()?;

    let total = tally.full + tally.resumed;
    report.figure("protocol", tally.version);
    report.figure("handshakes", total);
    report.figure("full", tally.full);
    report.figure("resumed", tally.resumed);
    report.figure("elapsed_s", elapsed.as_secs_f64());
    report.figure("handshakes_per_s", rate(total, elapsed));
    report.server_cpu(cpu_before, cpu_after, "server_cpu_us_per_handshake", total);
    Ok((report, c.json))
}

/// Handshakes counted by one worker.
#[derive(Debug, Default)]
struct Tally {
    full: u64,
    resumed: u64,
    version: String,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.full += other.full;
        self.resumed += other.resumed;
        if self.version.is_empty() {
            self.version.clone_from(&other.version);
        }
    }
}

/// One connection after another until `end`.
fn worker(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    name: &ServerName<'static>,
    end: Instant,
) -> Result<Tally, String> {
    let mut buf = [0u8; 4096];
    let mut tally = Tally::default();
    while Instant::now() < end {
        let n = tally.full + tally.resumed + 1;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!("handshake {n} with {addr}: {what}: {e}")
        };
        let sock =
            TcpStream::connect_timeout(&addr, PER_CONNECTION).map_err(|e| fail("connect", &e))?;
        let _ = sock.set_nodelay(true);
        sock.set_read_timeout(Some(PER_CONNECTION))
            .and_then(|()| sock.set_write_timeout(Some(PER_CONNECTION)))
            .map_err(|e| fail("socket", &e))?;
        let conn = rustls::ClientConnection::new(Arc::clone(config), name.clone())
            .map_err(|e| fail("TLS", &e))?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| fail("handshake", &e))?;
        }
        match tls.conn.handshake_kind() {
            Some(HandshakeKind::Resumed) => tally.resumed += 1,
            _ => tally.full += 1,
        }
        if tally.version.is_empty() {
            tally.version = match tls.conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".into(),
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".into(),
                other => format!("{other:?}"),
            };
        }
        tls.conn.send_close_notify();
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| fail("close", &e))?;
        // Read to the server's close: session tickets arrive on the way.
        let deadline = Instant::now() + PER_CONNECTION;
        while Instant::now() < deadline {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    Ok(tally)
}
