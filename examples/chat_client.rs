//! A chat client on `switchboard::Client`: joins a group, says one line,
//! prints what arrives, and leaves.
//!
//! ```text
//! cargo run --example chat_client -- ADDR USER [GROUP [COUNT]]
//! cargo run --example chat_client -- 127.0.0.1:7420 alice 1 3
//! ```
//!
//! It subscribes to GROUP (default 1), publishes `hello from USER` there,
//! then prints each push until it has printed COUNT of them (default 1; its
//! own message counts, since it is subscribed) or 10 s pass without one, and
//! quits. Errors are printed as one line, with exit status 1.

use std::process::ExitCode;
use std::time::Duration;

use switchboard::{Client, ClientConfig, ClientError, Push};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(user)) = (args.first(), args.get(1)) else {
        eprintln!("usage: chat_client ADDR USER [GROUP [COUNT]]");
        return ExitCode::from(2);
    };
    let group = match args.get(2).map(|g| g.parse::<u32>()) {
        None => 1,
        Some(Ok(g)) => g,
        Some(Err(e)) => {
            eprintln!("GROUP: {e}");
            return ExitCode::from(2);
        }
    };
    let count = match args.get(3).map(|c| c.parse::<usize>()) {
        None => 1,
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            eprintln!("COUNT: {e}");
            return ExitCode::from(2);
        }
    };
    match chat(addr, user, group, count) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn chat(addr: &str, user: &str, group: u32, count: usize) -> Result<(), ClientError> {
    let client = Client::connect(ClientConfig::new(addr, user))?;
    println!("connected to {addr} as {user}");
    println!("subscribe {group}: {}", client.subscribe(&[group])?);
    let line = format!("hello from {user}");
    println!("publish: {}", client.publish(&[group], line.as_bytes())?);
    let mut printed = 0;
    while printed < count {
        match client.recv(Some(Duration::from_secs(10))) {
            Ok(push) => {
                println!("{}", show(&push));
                printed += 1;
            }
            Err(ClientError::Timeout) => {
                println!("no more messages");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    client.quit()?;
    println!("bye");
    Ok(())
}

/// One line per push.
fn show(push: &Push) -> String {
    match push {
        Push::Published {
            sender,
            groups,
            payload,
        } => format!("{groups:?} {sender}: {}", String::from_utf8_lossy(payload)),
        Push::Message { sender, payload } => {
            format!("(private) {sender}: {}", String::from_utf8_lossy(payload))
        }
        Push::Joined { user, group } => format!("{user} joined {group}"),
        Push::Parted { user, group } => format!("{user} left {group}"),
        Push::Disconnected => "disconnected".into(),
        Push::Reconnected => "reconnected".into(),
        Push::Requested { sender, group, .. } => format!("request from {sender} to {group}"),
        Push::Surveyed { sender, group, .. } => format!("survey from {sender} to {group}"),
    }
}
