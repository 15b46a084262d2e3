//! A client for `echo_server`, on the same generic layer: one outgoing
//! connection on an [`EventLoop`], sending each argument as a line once
//! connected and printing each echo, then stopping.
//!
//! ```text
//! cargo run --example echo_client -- 127.0.0.1:7440 hello world
//! ```

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;

use switchboard::framed::{FramedContext, FramedHandler, Framing};
use switchboard::{CloseReason, ConnId, EventLoop};

/// Sends the messages one at a time, each after the previous one's echo.
struct Client {
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
        self.next(ctx, conn);
    }

    fn on_message(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId, message: &[u8]) {
        println!("echo: {}", String::from_utf8_lossy(message));
        self.next(ctx, conn);
    }

    fn on_closed(&mut self, ctx: &mut FramedContext<'_>, _conn: ConnId, reason: CloseReason) {
        if !self.to_send.is_empty() || reason == CloseReason::ConnectFailed {
            *self.failure.borrow_mut() = Some(format!("connection ended early: {reason}"));
        }
        ctx.stop();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7440".into())
        .parse()?;
    let failure = Rc::new(RefCell::new(None));
    let client = Client {
        to_send: args.collect(),
        failure: Rc::clone(&failure),
    };
    let mut event_loop = EventLoop::new()?;
    let lines = Framing::Delimited {
        delimiter: b'\n',
        max_len: 4096,
    };
    event_loop.connect(addr, lines, client)?;
    event_loop.run()?;
    match failure.take() {
        Some(why) => Err(why.into()),
        None => Ok(()),
    }
}
