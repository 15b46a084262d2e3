//! A client for `echo_server` (and, with `--tls DIR`, for `tls_echo`), on the
//! same generic layer: one outgoing connection on an [`EventLoop`], sending
//! each argument as a line once connected and printing each echo, then
//! stopping.
//!
//! ```text
//! cargo run --example echo_client -- 127.0.0.1:7440 hello world
//! cargo run --example echo_client -- 127.0.0.1:7442 --tls DIR hello
//! ```
//!
//! With `--tls DIR` it verifies the server against `DIR/ca.pem`, presents the
//! client certificate `DIR/alice.pem` (mutual TLS), and prints the server
//! certificate's subject once the handshake is done.
//!
//! Anything that goes wrong (no server there, a bad address, a missing
//! certificate) is one line on standard error and exit status 1.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;

use switchboard::framed::{FramedContext, FramedHandler, Framing};
use switchboard::{CloseReason, ConnId, EventLoop};

/// Sends the messages one at a time, each after the previous one's echo.
struct Client {
    /// Where it connects (for messages).
    server: SocketAddr,
    to_send: VecDeque<String>,
    /// What went wrong, for `main` to report after the loop returns.
    failure: Rc<RefCell<Option<String>>>,
}

impl Client {
    /// Sends the next message, or stops the loop when all were echoed.
    fn next(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId) {
        match self.to_send.pop_front() {
            Some(message) => {
                if !ctx.send(conn, message.as_bytes()) {
                    *self.failure.borrow_mut() = Some(format!("cannot send {message:?}"));
                    ctx.stop();
                }
            }
            None => ctx.stop(),
        }
    }
}

impl FramedHandler for Client {
    fn on_established(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId) {
        if let Some(server) = ctx.client_cert(conn) {
            println!("server certificate subject: {server}");
        }
        self.next(ctx, conn);
    }

    fn on_message(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId, message: &[u8]) {
        println!("echo: {}", String::from_utf8_lossy(message));
        self.next(ctx, conn);
    }

    fn on_closed(&mut self, ctx: &mut FramedContext<'_>, _conn: ConnId, reason: CloseReason) {
        let peer = self.server;
        let failure = match reason {
            CloseReason::ConnectFailed => Some(format!(
                "cannot connect to {peer}: no server there? (start one with \
                 `cargo run --example echo_server`)"
            )),
            _ if !self.to_send.is_empty() => Some(format!(
                "{peer} closed the connection before every message was echoed ({reason})"
            )),
            _ => None,
        };
        if failure.is_some() {
            *self.failure.borrow_mut() = failure;
        }
        ctx.stop();
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7440".into());
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not an address IP:PORT: {e}"))?;
    let mut rest: Vec<String> = args.collect();
    let tls_dir = match rest.first().map(String::as_str) {
        Some("--tls") if rest.len() >= 2 => {
            let dir = rest.remove(1);
            rest.remove(0);
            Some(dir)
        }
        _ => None,
    };
    let failure = Rc::new(RefCell::new(None));
    let client = Client {
        server: addr,
        to_send: rest.into(),
        failure: Rc::clone(&failure),
    };
    let mut event_loop = EventLoop::new()?;
    let lines = Framing::Delimited {
        delimiter: b'\n',
        max_len: 4096,
    };
    match tls_dir {
        Some(dir) => {
            let tls = client_config(Path::new(&dir))?;
            let name = "localhost".try_into()?;
            event_loop.connect_tls(addr, tls, name, lines, client)?;
        }
        None => event_loop.connect(addr, lines, client)?,
    }
    event_loop.run()?;
    match failure.take() {
        Some(why) => Err(why.into()),
        None => Ok(()),
    }
}

/// Trusts `DIR/ca.pem` and presents `DIR/alice.pem` (mutual TLS).
fn client_config(dir: &Path) -> Result<Arc<rustls::ClientConfig>, Box<dyn std::error::Error>> {
    use switchboard::certs::{load_certs, load_key, load_roots};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(load_roots(&dir.join("ca.pem"))?)
        .with_client_auth_cert(
            load_certs(&dir.join("alice.pem"))?,
            load_key(&dir.join("alice.key"))?,
        )?;
    Ok(Arc::new(config))
}
