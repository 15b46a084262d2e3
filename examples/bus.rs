//! A bus (nanomsg's BUS): three nodes on group 1 with `ECHO 0 off`, so each
//! message reaches every node but its sender.
//!
//!     cargo run --example bus -- [ADDR]

use std::time::Duration;

use switchboard::{Client, ClientConfig, ClientError, Push};

fn main() -> Result<(), ClientError> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7420".into());
    if addr == "--help" {
        println!("usage: bus [ADDR]  (every node hears every other node, not itself)");
        return Ok(());
    }
    let nodes: Vec<Client> = (0..3)
        .map(|i| Client::connect(ClientConfig::new(&addr, format!("node{i}"))))
        .collect::<Result<_, _>>()?;
    for n in &nodes {
        n.subscribe(&[1])?;
        n.echo(false)?;
    }
    for (i, n) in nodes.iter().enumerate() {
        n.publish(&[1], format!("hello from node{i}").as_bytes())?;
    }
    for (i, n) in nodes.iter().enumerate() {
        let mut heard = Vec::new();
        while let Ok(Push::Published { payload, .. }) = n.recv(Some(Duration::from_millis(300))) {
            heard.push(String::from_utf8_lossy(&payload).into_owned());
        }
        heard.sort();
        println!("node{i} heard: {}", heard.join(", "));
    }
    Ok(())
}
