//! A TLS echo server with mutual authentication: clients must present a
//! certificate signed by its CA, and the server prints each client's
//! certificate subject. Certificates (a CA, the server's, and one for client
//! `alice`) are made with `switchboard::certs::generate` in a new temporary
//! directory, printed on the second line and removed when it stops: after
//! SECONDS, on Ctrl-C (SIGINT) or SIGTERM, or on an error.
//!
//! ```text
//! cargo run --example tls_echo -- 127.0.0.1:7442 [SECONDS]
//! openssl s_client -connect 127.0.0.1:7442 -CAfile DIR/ca.pem \
//!     -cert DIR/alice.pem -key DIR/alice.key
//! ```
//!
//! With SECONDS it stops by itself after that long (the tests use this).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use switchboard::certs::{generate, load_certs, load_key, load_roots};
use switchboard::framed::{FramedContext, FramedHandler, Framing};
use switchboard::tls::{ClientAuth, server_config};
use switchboard::{CloseReason, ConnId, EventLoop};

/// Echoes lines and prints who the client is.
struct TlsEcho;

impl FramedHandler for TlsEcho {
    fn on_established(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId) {
        match ctx.client_cert(conn) {
            Some(subject) => println!("{conn} client certificate subject: {subject}"),
            None => println!("{conn} no client certificate"),
        }
    }

    fn on_message(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId, message: &[u8]) {
        ctx.send(conn, message);
    }

    fn on_closed(&mut self, _ctx: &mut FramedContext<'_>, conn: ConnId, reason: CloseReason) {
        println!("{conn} closed: {reason}");
    }
}

/// This run's certificate directory, removed when dropped (however `main`
/// ends: the keys are throwaway, and private).
struct TempCerts(PathBuf);

impl Drop for TempCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory for this run's certificates.
fn cert_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "switchboard-tls-echo-{}-{nanos}",
        std::process::id()
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7442".into())
        .parse()?;
    let run_for: Option<u64> = args.next().map(|s| s.parse()).transpose()?;

    let certs = TempCerts(cert_dir());
    let dir = &certs.0;
    generate(dir, &["alice".to_string()], false)?;
    let tls = server_config(
        load_certs(&dir.join("server.pem"))?,
        load_key(&dir.join("server.key"))?,
        &ClientAuth::Required(Arc::new(load_roots(&dir.join("ca.pem"))?)),
    )?;

    let mut event_loop = EventLoop::new()?;
    let lines = Framing::Delimited {
        delimiter: b'\n',
        max_len: 4096,
    };
    let addr = event_loop.listen(listen, Some(tls), lines, TlsEcho)?;
    // Ctrl-C and SIGTERM stop the loop too, so that the keys are removed
    // (handled from before the first line: whoever reads it may signal).
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let handle = event_loop.handle();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            handle.stop();
        }
    });
    println!("listening on {addr}");
    println!("certificates in {}", dir.display());

    if let Some(secs) = run_for {
        let handle = event_loop.handle();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            handle.stop();
        });
    }
    let result = event_loop.run();
    drop(certs);
    result?;
    println!("stopped");
    Ok(())
}
