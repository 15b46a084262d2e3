//! A pipeline (nanomsg's PUSH/PULL): three workers in one queue group on
//! group 1 share six jobs, each job going to exactly one of them.
//!
//!     cargo run --example push_pull -- [ADDR]

use std::time::Duration;

use switchboard::{Client, ClientConfig, ClientError, Push};

fn main() -> Result<(), ClientError> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7420".into());
    if addr == "--help" {
        println!("usage: push_pull [ADDR]  (six jobs shared by three workers)");
        return Ok(());
    }
    let workers: Vec<Client> = (0..3)
        .map(|i| Client::connect(ClientConfig::new(&addr, format!("worker{i}"))))
        .collect::<Result<_, _>>()?;
    for w in &workers {
        w.qsubscribe("pool", &[1])?;
    }
    let pusher = Client::connect(ClientConfig::new(&addr, "pusher"))?;
    for n in 1..=6 {
        pusher.publish(&[1], format!("job {n}").as_bytes())?;
    }
    let mut total = 0;
    for (i, w) in workers.iter().enumerate() {
        while let Ok(Push::Published { payload, .. }) = w.recv(Some(Duration::from_millis(300))) {
            println!("worker{i} took {}", String::from_utf8_lossy(&payload));
            total += 1;
        }
    }
    println!("{total} jobs done");
    Ok(())
}
