//! A delimiter-framed server with a length limit: messages end with `;`
//! and may be at most 16 bytes long. Each one is answered with its length; a
//! longer one closes that connection (and only that one), with the reason
//! logged and printed.
//!
//! ```text
//! cargo run --example delimited_server -- 127.0.0.1:7441 [SECONDS]
//! printf 'short;this one is much too long;' | nc 127.0.0.1 7441
//! ```
//!
//! With SECONDS it stops by itself after that long (the tests use this).

use std::net::SocketAddr;
use std::time::Duration;

use switchboard::framed::{FramedContext, FramedHandler, Framing};
use switchboard::{CloseReason, ConnId, EventLoop};

/// The longest message accepted, without its delimiter.
const MAX_LEN: usize = 16;

/// Answers each message with its length.
struct Measure;

impl FramedHandler for Measure {
    fn on_established(&mut self, _ctx: &mut FramedContext<'_>, conn: ConnId) {
        println!("{conn} connected");
    }

    fn on_message(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId, message: &[u8]) {
        println!("{conn} sent {:?}", String::from_utf8_lossy(message));
        ctx.send(conn, format!("{} bytes", message.len()).as_bytes());
    }

    fn on_closed(&mut self, _ctx: &mut FramedContext<'_>, conn: ConnId, reason: CloseReason) {
        match reason {
            CloseReason::TooLarge => {
                println!("{conn} closed: message over {MAX_LEN} bytes ({reason})")
            }
            _ => println!("{conn} closed: {reason}"),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7441".into())
        .parse()?;
    let run_for: Option<u64> = args.next().map(|s| s.parse()).transpose()?;

    let mut event_loop = EventLoop::new()?;
    let framing = Framing::Delimited {
        delimiter: b';',
        max_len: MAX_LEN,
    };
    let addr = event_loop.listen(listen, None, framing, Measure)?;
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
