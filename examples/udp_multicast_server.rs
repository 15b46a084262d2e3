//! A UDP multicast sender on the generic layer (CppServer's
//! `udp_multicast_server`): sends a numbered message to a group at an
//! interval. It stays on loopback unless told otherwise: multicast leaves
//! by the interface 127.0.0.1 with a TTL of 0 (this host only).
//!
//! ```text
//! cargo run --example udp_multicast_server -- [GROUP:PORT] [--interval MS] [--count N]
//! cargo run --example udp_multicast_client -- [GROUP:PORT]
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::time::Duration;

use switchboard::EventLoop;
use switchboard::datagram::{DatagramContext, DatagramHandler, UdpOptions};

const USAGE: &str = "usage: udp_multicast_server [GROUP:PORT] [--interval MS] [--count N]
                            [--interface IP] [--ttl N]

Sends `message N` to the IPv4 multicast GROUP:PORT (default
239.255.0.1:7451) every MS milliseconds (default 1000), N times (default:
until stopped). Multicast leaves by the interface with address IP (default
127.0.0.1: loopback only) with TTL N (default 0: this host only).
Prints `sending to GROUP:PORT` first, then one line per message.";

struct Sender {
    group: SocketAddr,
    interval: Duration,
    left: Option<u64>,
    sent: u64,
}

impl DatagramHandler for Sender {
    fn on_start(&mut self, ctx: &mut DatagramContext<'_>) {
        // The first message on the loop's first turn.
        let now = ctx.now();
        ctx.set_timer(now);
    }

    fn on_datagram(&mut self, _: &mut DatagramContext<'_>, _: SocketAddr, _: &[u8]) {}

    fn on_timer(&mut self, ctx: &mut DatagramContext<'_>) {
        if self.left == Some(0) {
            ctx.stop();
            return;
        }
        self.sent += 1;
        let message = format!("message {}", self.sent);
        if ctx.send_to(self.group, message.as_bytes()) {
            println!("sent {message}");
        }
        self.left = self.left.map(|n| n - 1);
        ctx.set_timer_after(self.interval);
    }

    fn on_error(
        &mut self,
        ctx: &mut DatagramContext<'_>,
        to: Option<SocketAddr>,
        e: &std::io::Error,
    ) {
        eprintln!("udp_multicast_server: sending to {to:?}: {e}");
        ctx.stop();
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
            eprintln!("udp_multicast_server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The value after `--name`, parsed, or `default`.
fn flag<T: std::str::FromStr>(
    args: &[String],
    name: &str,
    default: Option<T>,
) -> Result<Option<T>, String>
where
    T::Err: std::fmt::Display,
{
    match args.iter().position(|a| a == name) {
        Some(i) => {
            let v = args.get(i + 1).ok_or(format!("{name} needs a value"))?;
            v.parse()
                .map(Some)
                .map_err(|e| format!("{name} {v:?}: {e}"))
        }
        None => Ok(default),
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let group = match args.first().filter(|a| !a.starts_with("--")) {
        Some(g) => g.clone(),
        None => "239.255.0.1:7451".into(),
    };
    let group: SocketAddrV4 = group
        .parse()
        .map_err(|e| format!("{group:?} is not an IPv4 GROUP:PORT: {e}"))?;
    if !group.ip().is_multicast() {
        return Err(format!("{} is not a multicast address (224.0.0.0/4)", group.ip()).into());
    }
    let interval = flag(args, "--interval", Some(1000u64))?.unwrap_or(1000);
    let count = flag::<u64>(args, "--count", None)?;
    let interface =
        flag(args, "--interface", Some(Ipv4Addr::LOCALHOST))?.unwrap_or(Ipv4Addr::LOCALHOST);
    let ttl = flag(args, "--ttl", Some(0u32))?.unwrap_or(0);

    let mut event_loop = EventLoop::new()?;
    let options = UdpOptions::default()
        .multicast_if_v4(interface)
        .multicast_ttl_v4(ttl)
        .multicast_loop_v4(true);
    let sender = Sender {
        group: group.into(),
        interval: Duration::from_millis(interval),
        left: count,
        sent: 0,
    };
    let bind = SocketAddr::from((interface, 0));
    let local = event_loop.bind_udp(bind, options, sender)?;
    println!("sending to {group} from {local}");
    event_loop.run()?;
    println!("stopped");
    Ok(())
}
