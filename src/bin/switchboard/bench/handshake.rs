//! `bench handshake`: TLS handshakes one after another, each on a new
//! connection that is closed (close_notify) as soon as the handshake is done.
//! One connection at a time, so a blocking socket and rustls's
//! `StreamOwned` are enough here.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rustls::HandshakeKind;

use super::report::{Report, rate};
use super::{CommonArgs, proc, secs};

/// How long one connection may take (connect, handshake, close).
const PER_CONNECTION: Duration = Duration::from_secs(5);

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
}

pub(crate) fn run(args: HandshakeArgs) -> Result<(Report, bool), String> {
    let c = &args.common;
    if c.target != super::TargetKind::Switchboard {
        return Err("handshake measures this server's TLS only: --target switchboard".into());
    }
    let duration = secs(args.duration, "--duration")?;
    let addr = c.addr(true)?;
    let config = c.tls_config(args.resume)?;
    let name = c.server_name(addr)?;
    super::probe(addr)?;
    let mut report = Report::new("handshake");
    c.describe(&mut report, addr, true);
    report.param("duration_s", duration.as_secs_f64());
    report.param("resume", args.resume);

    let mut buf = [0u8; 4096];
    let (mut full, mut resumed, mut total) = (0u64, 0u64, 0u64);
    let mut version = String::new();
    std::thread::sleep(Duration::from_millis(50));
    let cpu_before = c.server_pid.map(proc::cpu_us).transpose()?;
    let start = Instant::now();
    while start.elapsed() < duration {
        let n = total + 1;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!("handshake {n} with {addr}: {what}: {e}")
        };
        let sock =
            TcpStream::connect_timeout(&addr, PER_CONNECTION).map_err(|e| fail("connect", &e))?;
        let _ = sock.set_nodelay(true);
        sock.set_read_timeout(Some(PER_CONNECTION))
            .and_then(|()| sock.set_write_timeout(Some(PER_CONNECTION)))
            .map_err(|e| fail("socket", &e))?;
        let conn = rustls::ClientConnection::new(config.clone(), name.clone())
            .map_err(|e| fail("TLS", &e))?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| fail("handshake", &e))?;
        }
        match tls.conn.handshake_kind() {
            Some(HandshakeKind::Resumed) => resumed += 1,
            _ => full += 1,
        }
        if version.is_empty() {
            version = match tls.conn.protocol_version() {
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
        total += 1;
    }
    let elapsed = start.elapsed();
    let cpu_after = c.server_pid.map(proc::cpu_us).transpose()?;

    report.figure("protocol", version);
    report.figure("handshakes", total);
    report.figure("full", full);
    report.figure("resumed", resumed);
    report.figure("elapsed_s", elapsed.as_secs_f64());
    report.figure("handshakes_per_s", rate(total, elapsed));
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let cpu = after.saturating_sub(before);
        report.figure("server_cpu_us", cpu);
        report.figure(
            "server_cpu_us_per_handshake",
            if total > 0 {
                cpu as f64 / total as f64
            } else {
                0.0
            },
        );
        report.figure("clock_ticks_per_s", proc::clock_ticks_per_second());
    }
    Ok((report, c.json))
}
