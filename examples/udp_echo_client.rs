//! A client for `udp_echo_server` (CppServer's `udp_echo_client`), on the
//! same loop: sends each argument as one datagram, waits for its echo
//! (sending it again after a second of silence, three times at most) and
//! prints it; or, with `--bench SECONDS`, keeps a window of datagrams in
//! flight and prints the echoes per second.
//!
//! ```text
//! cargo run --example udp_echo_client -- 127.0.0.1:7450 hello world
//! cargo run --release --example udp_echo_client -- 127.0.0.1:7450 --bench 5
//! ```
//!
//! Anything that goes wrong (no server there, a bad address) is one line on
//! standard error and exit status 1.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use switchboard::EventLoop;
use switchboard::datagram::{DatagramContext, DatagramHandler, UdpOptions};

const USAGE: &str = "usage: udp_echo_client ADDR MESSAGE...
       udp_echo_client ADDR --bench SECONDS [--size BYTES] [--window N]

Sends each MESSAGE to the UDP echo server at ADDR as one datagram and
prints `echo: MESSAGE` when it comes back (a datagram lost is sent again
after a second, three times at most). With --bench, keeps N datagrams of
BYTES bytes in flight (default 64 of 64) for SECONDS and prints
`N datagrams/s`.";

/// Sends the messages one at a time, each after the previous one's echo.
struct Client {
    to_send: VecDeque<String>,
    /// The message waiting for its echo, and how many times it was sent.
    waiting: Option<(String, u32)>,
    failure: Rc<RefCell<Option<String>>>,
}

impl Client {
    fn next(&mut self, ctx: &mut DatagramContext<'_>) {
        match self.to_send.pop_front() {
            Some(message) => {
                ctx.send(message.as_bytes());
                ctx.set_timer_after(Duration::from_secs(1));
                self.waiting = Some((message, 1));
            }
            None => ctx.stop(),
        }
    }

    fn fail(&mut self, ctx: &mut DatagramContext<'_>, why: String) {
        *self.failure.borrow_mut() = Some(why);
        ctx.stop();
    }
}

impl DatagramHandler for Client {
    fn on_start(&mut self, ctx: &mut DatagramContext<'_>) {
        self.next(ctx);
    }

    fn on_datagram(&mut self, ctx: &mut DatagramContext<'_>, _from: SocketAddr, payload: &[u8]) {
        // A late echo of a message sent again is not the next one's.
        if self
            .waiting
            .as_ref()
            .is_some_and(|(m, _)| m.as_bytes() == payload)
        {
            println!("echo: {}", String::from_utf8_lossy(payload));
            self.waiting = None;
            self.next(ctx);
        }
    }

    fn on_timer(&mut self, ctx: &mut DatagramContext<'_>) {
        match self.waiting.take() {
            Some((message, tries)) if tries < 3 => {
                ctx.send(message.as_bytes());
                ctx.set_timer_after(Duration::from_secs(1));
                self.waiting = Some((message, tries + 1));
            }
            Some((message, _)) => {
                let peer = ctx.peer().map(|p| p.to_string()).unwrap_or_default();
                self.fail(
                    ctx,
                    format!("no echo of {message:?} from {peer} after 3 tries"),
                );
            }
            None => {}
        }
    }

    fn on_error(
        &mut self,
        ctx: &mut DatagramContext<'_>,
        _to: Option<SocketAddr>,
        error: &std::io::Error,
    ) {
        let peer = ctx.peer().map(|p| p.to_string()).unwrap_or_default();
        let why = if error.kind() == std::io::ErrorKind::ConnectionRefused {
            format!(
                "no server at {peer} (connection refused; start one with \
                 `cargo run --example udp_echo_server`)"
            )
        } else {
            format!("{peer}: {error}")
        };
        self.fail(ctx, why);
    }
}

/// Keeps `window` datagrams in flight and counts echoes until `end`.
struct Bench {
    payload: Vec<u8>,
    window: usize,
    in_flight: usize,
    echoes: u64,
    started: Option<Instant>,
    seconds: u64,
    result: Rc<RefCell<Option<String>>>,
}

impl Bench {
    fn fill(&mut self, ctx: &mut DatagramContext<'_>) {
        while self.in_flight < self.window && ctx.send(&self.payload) {
            self.in_flight += 1;
        }
    }
}

impl DatagramHandler for Bench {
    fn on_start(&mut self, ctx: &mut DatagramContext<'_>) {
        self.started = Some(ctx.now());
        ctx.set_timer_after(Duration::from_secs(self.seconds));
        self.fill(ctx);
    }

    fn on_datagram(&mut self, ctx: &mut DatagramContext<'_>, _from: SocketAddr, _payload: &[u8]) {
        self.echoes += 1;
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight <= self.window / 2 {
            self.fill(ctx);
        }
    }

    fn on_timer(&mut self, ctx: &mut DatagramContext<'_>) {
        let elapsed = self
            .started
            .map_or(Duration::ZERO, |s| ctx.now() - s)
            .as_secs_f64();
        let rate = self.echoes as f64 / elapsed.max(1e-9);
        *self.result.borrow_mut() = Some(format!(
            "{rate:.0} datagrams/s ({} echoes of {} bytes in {elapsed:.2} s, window {})",
            self.echoes,
            self.payload.len(),
            self.window
        ));
        ctx.stop();
    }

    fn on_error(&mut self, _: &mut DatagramContext<'_>, _: Option<SocketAddr>, _: &std::io::Error) {
        // A datagram lost (the server's buffer full): keep the window full.
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return if args.is_empty() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp_echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut args: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    let addr = args.remove(0);
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not an address IP:PORT: {e}"))?;
    let mut event_loop = EventLoop::new()?;
    let out = Rc::new(RefCell::new(None));
    if args.first().map(String::as_str) == Some("--bench") {
        let flag = |name: &str, default: u64| -> Result<u64, String> {
            match args.iter().position(|a| a == name) {
                Some(i) => {
                    let v = args.get(i + 1).ok_or(format!("{name} needs a value"))?;
                    v.parse().map_err(|e| format!("{name} {v:?}: {e}"))
                }
                None => Ok(default),
            }
        };
        let seconds = flag("--bench", 5)?;
        let size = usize::try_from(flag("--size", 64)?)?;
        let window = usize::try_from(flag("--window", 64)?)?.max(1);
        let bench = Bench {
            payload: vec![b'x'; size],
            window,
            in_flight: 0,
            echoes: 0,
            started: None,
            seconds,
            result: Rc::clone(&out),
        };
        event_loop.connect_udp(addr, UdpOptions::default(), bench)?;
        event_loop.run()?;
        let result = out.take().ok_or("the benchmark did not finish")?;
        println!("{result}");
        return Ok(());
    }
    let client = Client {
        to_send: args.into(),
        waiting: None,
        failure: Rc::clone(&out),
    };
    event_loop.connect_udp(addr, UdpOptions::default(), client)?;
    event_loop.run()?;
    match out.take() {
        Some(why) => Err(why.into()),
        None => Ok(()),
    }
}
