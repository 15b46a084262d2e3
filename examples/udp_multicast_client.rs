//! A UDP multicast receiver on the generic layer (CppServer's
//! `udp_multicast_client`): joins a group and prints what arrives. By
//! default it joins on the loopback interface only.
//!
//! ```text
//! cargo run --example udp_multicast_client -- [GROUP:PORT] [--count N] [--seconds S]
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::time::Duration;

use switchboard::EventLoop;
use switchboard::datagram::{DatagramContext, DatagramHandler, UdpOptions};

const USAGE: &str = "usage: udp_multicast_client [GROUP:PORT] [--count N] [--seconds S]
                            [--interface IP]

Joins the IPv4 multicast GROUP:PORT (default 239.255.0.1:7451) on the
interface with address IP (default 127.0.0.1: loopback only), prints
`joined GROUP:PORT on IP`, then `FROM: TEXT` for each datagram. Stops after
N datagrams, or S seconds, or when interrupted; leaves the group before it
stops.";

struct Receiver {
    group: Ipv4Addr,
    interface: Ipv4Addr,
    left: Option<u64>,
}

impl DatagramHandler for Receiver {
    fn on_datagram(&mut self, ctx: &mut DatagramContext<'_>, from: SocketAddr, payload: &[u8]) {
        println!("{from}: {}", String::from_utf8_lossy(payload));
        self.left = self.left.map(|n| n.saturating_sub(1));
        if self.left == Some(0) {
            ctx.leave_multicast_v4(self.group, self.interface);
            ctx.stop();
        }
    }

    fn on_timer(&mut self, ctx: &mut DatagramContext<'_>) {
        ctx.leave_multicast_v4(self.group, self.interface);
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
            eprintln!("udp_multicast_client: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The value after `--name`, parsed, if given.
fn flag<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, String>
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
        None => Ok(None),
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
    let count = flag::<u64>(args, "--count")?;
    let seconds = flag::<u64>(args, "--seconds")?;
    let interface = flag(args, "--interface")?.unwrap_or(Ipv4Addr::LOCALHOST);

    let mut event_loop = EventLoop::new()?;
    let options = UdpOptions::default()
        .reuse_address(true)
        .join_multicast_v4(*group.ip(), interface);
    let receiver = Receiver {
        group: *group.ip(),
        interface,
        left: count,
    };
    let bind = SocketAddr::from((Ipv4Addr::UNSPECIFIED, group.port()));
    event_loop.bind_udp(bind, options, Seconds(seconds, receiver))?;
    println!("joined {group} on {interface}");
    event_loop.run()?;
    println!("stopped");
    Ok(())
}

/// Arms the receiver's timer for `--seconds` at start.
struct Seconds(Option<u64>, Receiver);

impl DatagramHandler for Seconds {
    fn on_start(&mut self, ctx: &mut DatagramContext<'_>) {
        if let Some(s) = self.0 {
            ctx.set_timer_after(Duration::from_secs(s));
        }
    }
    fn on_datagram(&mut self, ctx: &mut DatagramContext<'_>, from: SocketAddr, payload: &[u8]) {
        self.1.on_datagram(ctx, from, payload);
    }
    fn on_timer(&mut self, ctx: &mut DatagramContext<'_>) {
        self.1.on_timer(ctx);
    }
}
