//! A pair (nanomsg's PAIR): two users exchanging one-to-one messages with
//! `SEND`.
//!
//!     cargo run --example pair -- [ADDR]

use std::time::Duration;

use switchboard::{Client, ClientConfig, ClientError, Push};

fn main() -> Result<(), ClientError> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7420".into());
    if addr == "--help" {
        println!("usage: pair [ADDR]  (ping and pong between two users)");
        return Ok(());
    }
    let left = Client::connect(ClientConfig::new(&addr, "left"))?;
    let right = Client::connect(ClientConfig::new(&addr, "right"))?;
    left.send("right", b"ping")?;
    if let Push::Message { sender, payload } = right.recv(Some(Duration::from_secs(2)))? {
        println!(
            "right got {} from {sender}",
            String::from_utf8_lossy(&payload)
        );
        right.send(&sender, b"pong")?;
    }
    if let Push::Message { sender, payload } = left.recv(Some(Duration::from_secs(2)))? {
        println!(
            "left got {} from {sender}",
            String::from_utf8_lossy(&payload)
        );
    }
    Ok(())
}
