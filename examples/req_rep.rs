//! Request/reply (nanomsg's REQ/REP, NATS request/reply): a responder in a
//! queue group answers with the request upper-cased; a requester asks three
//! times and prints each answer.
//!
//!     cargo run --example req_rep -- [ADDR]     (a server with --open-groups
//!                                               or group 1 registered; default 127.0.0.1:7420)

use std::time::Duration;

use switchboard::{Client, ClientConfig, ClientError, Push};

fn main() -> Result<(), ClientError> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7420".into());
    if addr == "--help" {
        println!("usage: req_rep [ADDR]  (request/reply through a queue group on group 1)");
        return Ok(());
    }
    let responder = Client::connect(ClientConfig::new(&addr, "rep"))?;
    responder.qsubscribe("upper", &[1])?;
    let worker = std::thread::spawn(move || -> Result<(), ClientError> {
        for _ in 0..3 {
            if let Push::Requested { rid, payload, .. } =
                responder.recv(Some(Duration::from_secs(5)))?
            {
                let answer = String::from_utf8_lossy(&payload).to_uppercase();
                responder.reply(&rid, answer.as_bytes())?;
            }
        }
        Ok(())
    });
    let requester = Client::connect(ClientConfig::new(&addr, "req"))?;
    for q in ["hello", "request", "reply"] {
        let answer = requester.request(1, q.as_bytes(), Duration::from_secs(2))?;
        println!("{q} -> {}", String::from_utf8_lossy(&answer));
    }
    worker
        .join()
        .map_err(|_| ClientError::Protocol("responder panicked".into()))??;
    Ok(())
}
