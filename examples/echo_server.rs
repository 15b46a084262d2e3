//! A line echo server on the generic layer: every line a client sends comes
//! back to it, and the host program hears about connections coming and going.
//!
//! ```text
//! cargo run --example echo_server -- 127.0.0.1:7440 [SECONDS]
//! cargo run --example echo_client -- 127.0.0.1:7440 hello world
//! ```
//!
//! With SECONDS it stops by itself after that long (the tests use this).

use std::net::SocketAddr;
use std::time::Duration;

use switchboard::framed::{FramedContext, FramedHandler, Framing};
use switchboard::{CloseReason, ConnId, EventLoop};

/// Sends every message back, and logs.
struct Echo;

impl FramedHandler for Echo {
    fn on_established(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId) {
        let peer = ctx.peer(conn).map(|p| p.to_string()).unwrap_or_default();
        println!("{conn} connected from {peer}");
    }

    fn on_message(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId, message: &[u8]) {
        println!("{conn} said {:?}", String::from_utf8_lossy(message));
        ctx.send(conn, message);
    }

    fn on_closed(&mut self, _ctx: &mut FramedContext<'_>, conn: ConnId, reason: CloseReason) {
        println!("{conn} closed: {reason}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7440".into())
        .parse()?;
    let run_for: Option<u64> = args.next().map(|s| s.parse()).transpose()?;

    let mut event_loop = EventLoop::new()?;
    let lines = Framing::Delimited {
        delimiter: b'\n',
        max_len: 4096,
    };
    let addr = event_loop.listen(listen, None, lines, Echo)?;
    println!("listening on {addr}");

    if let Some(secs) = run_for {
        let handle = event_loop.handle();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            handle.stop();
        });
    }
    event_loop.run()?;
    println!("stopped");
    Ok(())
}
