//! A UDP echo server on the generic layer (CppServer's `udp_echo_server`):
//! every datagram comes back to its sender.
//!
//! ```text
//! cargo run --example udp_echo_server -- [ADDR] [SECONDS]
//! cargo run --example udp_echo_client -- 127.0.0.1:7450 hello world
//! ```
//!
//! ADDR defaults to `127.0.0.1:7450`. With SECONDS it stops by itself after
//! that long (the tests use this) and prints how many datagrams it echoed.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use switchboard::EventLoop;
use switchboard::datagram::{DatagramContext, DatagramHandler, UdpOptions};

const USAGE: &str = "usage: udp_echo_server [ADDR] [SECONDS]

Echoes every UDP datagram back to its sender. ADDR defaults to
127.0.0.1:7450 (port 0: any free port; the bound address is printed as
`listening on ADDR`). With SECONDS it stops by itself after that long.";

/// Sends every datagram back; counts.
struct Echo {
    echoed: u64,
    /// Print each datagram (off under load: printing would be the bottleneck).
    verbose: bool,
}

impl DatagramHandler for Echo {
    fn on_datagram(&mut self, ctx: &mut DatagramContext<'_>, from: SocketAddr, payload: &[u8]) {
        if self.verbose {
            println!("{from} said {:?}", String::from_utf8_lossy(payload));
        }
        if ctx.send_to(from, payload) {
            self.echoed += 1;
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        println!("echoed {} datagrams", self.echoed);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp_echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let listen = args.first().map_or("127.0.0.1:7450", String::as_str);
    let listen: SocketAddr = listen
        .parse()
        .map_err(|e| format!("{listen:?} is not an address IP:PORT: {e}"))?;
    let run_for: Option<u64> = args
        .get(1)
        .map(|s| s.parse().map_err(|e| format!("SECONDS {s:?}: {e}")))
        .transpose()?;
    let verbose = std::env::var_os("UDP_ECHO_QUIET").is_none();

    let mut event_loop = EventLoop::new()?;
    let echo = Echo { echoed: 0, verbose };
    let addr = event_loop.bind_udp(listen, UdpOptions::default(), echo)?;
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
