//! A client for `echo_server`: sends each argument as a line and prints the
//! echo. It is a plain blocking `std` program, because the loop does not yet
//! host outgoing connections (see `docs/architecture.md`).
//!
//! ```text
//! cargo run --example echo_client -- 127.0.0.1:7440 hello world
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7440".into());
    let stream = TcpStream::connect(&addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    for message in args {
        writer.write_all(message.as_bytes())?;
        writer.write_all(b"\n")?;
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err("the server closed the connection".into());
        }
        println!("echo: {}", line.trim_end_matches('\n'));
    }
    Ok(())
}
