//! An embedded chat server: groups registered in code, every event logged,
//! and a host thread that publishes and sends as `@server`.
//!
//! ```text
//! cargo run --example embedded_chat -- 127.0.0.1:7430 [SECONDS]
//! nc 127.0.0.1 7430
//! USER 0 alice
//! SUBSCRIBE 0 1
//! ```
//!
//! With SECONDS it stops by itself after that long (the tests use this).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use switchboard::{CloseReason, ConnId, Context, Handler, Server, ServerConfig};

/// Logs what happens and greets every user who logs in.
struct ChatLog;

impl Handler for ChatLog {
    fn on_connect(&mut self, _ctx: &mut Context<'_>, conn: ConnId, peer: SocketAddr) {
        println!("{conn} connected from {peer}");
    }

    fn on_login(&mut self, ctx: &mut Context<'_>, conn: ConnId, user: &str) {
        println!("{conn} logged in as {user}");
        let _ = ctx.send(user, format!("welcome, {user}").as_bytes());
    }

    fn on_subscribe(&mut self, _ctx: &mut Context<'_>, _conn: ConnId, user: &str, groups: &[u32]) {
        println!("{user} subscribed to {groups:?}");
    }

    fn on_unsubscribe(
        &mut self,
        _ctx: &mut Context<'_>,
        _conn: ConnId,
        user: &str,
        groups: &[u32],
    ) {
        println!("{user} unsubscribed from {groups:?}");
    }

    fn on_publish(
        &mut self,
        _ctx: &mut Context<'_>,
        _conn: Option<ConnId>,
        sender: &str,
        groups: &[u32],
        payload: &Bytes,
        delivered: usize,
    ) {
        let text = String::from_utf8_lossy(payload);
        println!("{sender} published {text:?} to {groups:?} ({delivered} deliveries)");
    }

    fn on_user_message(
        &mut self,
        _ctx: &mut Context<'_>,
        _conn: Option<ConnId>,
        from: &str,
        to: &str,
        payload: &Bytes,
    ) {
        println!("{from} -> {to}: {:?}", String::from_utf8_lossy(payload));
    }

    fn on_close(
        &mut self,
        _ctx: &mut Context<'_>,
        conn: ConnId,
        user: Option<&str>,
        reason: CloseReason,
    ) {
        println!("{conn} ({}) closed: {reason}", user.unwrap_or("-"));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7430".into())
        .parse()?;
    let run_for: Option<u64> = args.next().map(|s| s.parse()).transpose()?;

    let config = ServerConfig {
        listen: vec![listen],
        groups: vec![(1, "general".into()), (2, "random".into())],
        ..ServerConfig::default()
    };
    let server = Server::bind(config, ChatLog)?;
    for addr in server.local_addrs() {
        println!("listening on {addr}");
    }

    // The host program talks to the loop from its own thread.
    let handle = server.handle();
    std::thread::spawn(move || {
        let mut tick = 0u64;
        loop {
            std::thread::sleep(Duration::from_secs(1));
            tick += 1;
            if handle
                .publish(&[1], format!("tick {tick}").as_bytes())
                .is_err()
            {
                return;
            }
            if run_for.is_some_and(|limit| tick >= limit) {
                handle.stop();
                return;
            }
        }
    });
    server.run()?;
    println!("stopped");
    Ok(())
}
