//! A survey (nanomsg's SURVEYOR/RESPONDENT): three respondents on group 1
//! vote; the surveyor prints the answers collected by the deadline.
//!
//!     cargo run --example survey -- [ADDR]

use std::time::Duration;

use switchboard::{Client, ClientConfig, ClientError, Push};

fn main() -> Result<(), ClientError> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7420".into());
    if addr == "--help" {
        println!("usage: survey [ADDR]  (three respondents answer one survey)");
        return Ok(());
    }
    let mut voters = Vec::new();
    for (name, vote) in [("ann", "yes"), ("bo", "no"), ("cy", "yes")] {
        let c = Client::connect(ClientConfig::new(&addr, name))?;
        c.subscribe(&[1])?;
        voters.push(std::thread::spawn(move || -> Result<(), ClientError> {
            if let Push::Surveyed { rid, .. } = c.recv(Some(Duration::from_secs(5)))? {
                c.reply(&rid, vote.as_bytes())?;
            }
            Ok(())
        }));
    }
    let surveyor = Client::connect(ClientConfig::new(&addr, "boss"))?;
    let mut answers = surveyor.survey(1, b"pizza?", Duration::from_millis(800))?;
    answers.sort();
    for (who, answer) in answers {
        println!("{who}: {}", String::from_utf8_lossy(&answer));
    }
    for v in voters {
        v.join()
            .map_err(|_| ClientError::Protocol("voter panicked".into()))??;
    }
    Ok(())
}
