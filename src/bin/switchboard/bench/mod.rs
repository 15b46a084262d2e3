//! `switchboard bench`: loopback load generators (cli.md "switchboard
//! bench", issue 5). Each scenario is bounded by its duration and a hard
//! `--timeout`, stops by itself, prints a table (or one JSON object with
//! `--json`), and fails with one line on standard error and status 1.
//!
//! `density`, `fanout` and `echo` run many connections on one thread and one
//! mio `Poll` ([`net`]); `handshake` does one blocking TLS connection at a
//! time. The server's memory and CPU come from `/proc/PID` ([`proc`]);
//! protocols are behind the [`target::Target`] trait. `attack` runs one
//! of issue 10's attacks beside a pinging client ([`attack`]).

mod attack;
mod cluster;
mod density;
mod echo;
mod fanout;
mod handshake;
mod net;
mod proc;
mod report;
mod reqrep;
mod spawn;
mod target;
mod workqueue;
mod ws;

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use self::net::Endpoint;
use self::report::Report;

const DEFAULT_ADDR: &str = "127.0.0.1:7420";
const DEFAULT_TLS_ADDR: &str = "127.0.0.1:7421";
const DEFAULT_CA: &str = "certs/ca.pem";

/// The server protocol a scenario speaks (`--target`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetKind {
    /// This server (docs/protocol.md).
    Switchboard,
    /// MQTT 3.1.1, QoS 0 (Mosquitto).
    Mqtt,
    /// Redis RESP2 SUBSCRIBE/PUBLISH (redis-server).
    Redis,
    /// The NATS text protocol (nats-server).
    Nats,
}

impl TargetKind {
    fn default_addr(self, tls: bool) -> &'static str {
        match self {
            Self::Switchboard if tls => DEFAULT_TLS_ADDR,
            Self::Switchboard => DEFAULT_ADDR,
            Self::Mqtt if tls => "127.0.0.1:8883",
            Self::Mqtt => "127.0.0.1:1883",
            Self::Redis => "127.0.0.1:6379",
            Self::Nats => "127.0.0.1:4222",
        }
    }
}

/// `switchboard bench SCENARIO ...`
#[derive(clap::Args, Debug)]
#[command(after_long_help = "\
Targets (--target, for density, fanout and echo): \
switchboard (docs/protocol.md, default port 7420, 7421 with --tls); mqtt (MQTT \
3.1.1 at QoS 0, e.g. Mosquitto, port 1883, 8883 with --tls: CONNECT with the \
user name as client id, SUBSCRIBE g/GROUP; QoS 0 PUBLISH has no \
acknowledgement, so each publish is followed by a PINGREQ and its PINGRESP \
counts as the acknowledgement; echo is PINGREQ/PINGRESP); redis (RESP2, port \
6379: the login is PING, SUBSCRIBE gGROUP, PUBLISH gGROUP PAYLOAD \
acknowledged by its integer reply; echo is PING/PONG); nats (the NATS text \
protocol, port 4222: CONNECT after the server's INFO, SUB g.GROUP, PUB \
g.GROUP; NATS acknowledges none of these, so each is followed by PING and the \
PONG counts as the acknowledgement). With --tls every target is reached over \
TLS (rustls, verified against --ca); for nats the INFO comes in plaintext and \
the TLS handshake follows it, as nats-server expects unless it is configured \
for TLS first. echo --payload needs --target switchboard.

Loopback only. All connections come from 127.0.0.1 and use the kernel's \
ephemeral ports (ip_local_port_range, about 28,000 here): source addresses are \
not spread over 127.0.0.x, because neither std nor mio can bind a socket \
before connecting it. Keep `density` at or below about 19,000 connections \
(and below the open-file limit).")]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Subcommand, Debug)]
enum Scenario {
    /// N idle logged-in connections: time to set them up and, with
    /// --server-pid, the server's resident memory per connection.
    Density(density::DensityArgs),
    /// 1 publisher, N subscribers: deliveries per second, loss, latency
    /// percentiles and, with --server-pid, server CPU per delivery.
    Fanout(fanout::FanoutArgs),
    /// Fan-out across two nodes of a cluster (issue 15): starts a
    /// redis-server and two `serve --cluster` nodes, publishes on node A to
    /// subscribers on A and B; deliveries/s, latency on each node, and the
    /// CPU of both nodes and Redis per delivery beside one node alone.
    Cluster(cluster::ClusterArgs),
    /// Sequential round trips (PING/PONG, or SEND to oneself with
    /// --payload) on N connections: round trips per second and latency.
    Echo(echo::EchoArgs),
    /// Request/reply through a queue group (issue 14): R requesters with D
    /// requests outstanding each, W responders; requests per second,
    /// latency and server CPU per request (switchboard and nats).
    Reqrep(reqrep::ReqRepArgs),
    /// A work queue (issue 14): W workers in one queue group, one
    /// publisher; messages per second, each checked delivered exactly once
    /// (switchboard and nats).
    Workqueue(workqueue::WorkQueueArgs),
    /// TLS handshakes per second (full, or resumed with --resume) and, with
    /// --server-pid, server CPU per handshake.
    Handshake(handshake::HandshakeArgs),
    /// One hostile client (issue 10: wide fan-outs, leaving many groups,
    /// bad passwords, listings, slow consumers) beside a well-behaved one
    /// that pings: its round trips (switchboard over plain TCP only).
    Attack(attack::AttackArgs),
}

/// Flags every scenario takes.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct CommonArgs {
    /// Server address [default: 127.0.0.1:7420, or 127.0.0.1:7421 with TLS;
    /// 1883 (8883 with TLS) for mqtt, 6379 for redis, 4222 for nats].
    #[arg(value_name = "ADDR")]
    addr: Option<String>,
    /// The server's protocol (see the notes at the end of --help).
    #[arg(
        long,
        value_enum,
        value_name = "PROTOCOL",
        default_value = "switchboard"
    )]
    target: TargetKind,
    /// Connect with TLS, verifying the server against --ca.
    #[arg(long)]
    tls: bool,
    /// Speak WebSocket (switchboard only): ws://, or wss:// with --tls
    /// [default ADDR: 127.0.0.1:7422, 127.0.0.1:7423 with TLS].
    #[arg(long)]
    ws: bool,
    /// CA bundle (PEM) the server certificate must chain to.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CA)]
    ca: PathBuf,
    /// Client certificate chain (PEM) for mutual TLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Name the server certificate must be valid for [default: the host of ADDR].
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// The server's process id: read its memory and CPU time from /proc/PID.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Print one JSON object on standard output instead of a table.
    #[arg(long)]
    json: bool,
    /// Hard limit in seconds on any phase (setup, measurement, drain).
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    timeout: f64,
}

impl CommonArgs {
    fn addr(&self, tls: bool) -> Result<SocketAddr, String> {
        let default = match (self.ws, tls) {
            (true, false) => "127.0.0.1:7422",
            (true, true) => "127.0.0.1:7423",
            (false, _) => self.target.default_addr(tls),
        };
        let text = self.addr.as_deref().unwrap_or(default);
        let addr = text
            .to_socket_addrs()
            .map_err(|e| format!("bad address {text}: {e}"))?
            .next()
            .ok_or_else(|| format!("bad address {text}: no address"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address: bench is for loopback only"
            ));
        }
        Ok(addr)
    }

    /// The protocol adapter.
    fn target(&self) -> Result<Box<dyn target::Target>, String> {
        Ok(match self.target {
            TargetKind::Switchboard => Box::new(target::Switchboard),
            TargetKind::Mqtt => Box::new(target::mqtt::Mqtt),
            TargetKind::Redis => Box::new(target::redis::Redis),
            TargetKind::Nats => Box::new(target::nats::Nats),
        })
    }

    fn target_name(&self) -> &'static str {
        match self.target {
            TargetKind::Switchboard => "switchboard",
            TargetKind::Mqtt => "mqtt",
            TargetKind::Redis => "redis",
            TargetKind::Nats => "nats",
        }
    }

    fn timeout(&self) -> Result<Duration, String> {
        secs(self.timeout, "--timeout")
    }

    /// The address plus (with `tls`) the rustls configuration, after a
    /// probe that the server accepts connections at all. A target that
    /// greets first does so in plaintext, and TLS follows its greeting.
    fn endpoint(&self, tls: bool) -> Result<Endpoint, String> {
        let addr = self.addr(tls)?;
        if self.ws && !matches!(self.target, TargetKind::Switchboard) {
            return Err("--ws: only the switchboard target speaks WebSocket".into());
        }
        let tls_after_greeting = tls && self.target()?.greets_first();
        let tls = if tls {
            Some((self.tls_config(true)?, self.server_name(addr)?))
        } else {
            None
        };
        probe(addr)?;
        let ws = self
            .ws
            .then(|| self.addr.clone().unwrap_or_else(|| addr.to_string()));
        Ok(Endpoint {
            addr,
            tls,
            tls_after_greeting,
            ws,
        })
    }

    fn server_name(&self, addr: SocketAddr) -> Result<ServerName<'static>, String> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => match self.addr.as_deref() {
                Some(text) => text
                    .rsplit_once(':')
                    .map_or(text, |(h, _)| h)
                    .trim_matches(['[', ']'])
                    .to_string(),
                None => addr.ip().to_string(),
            },
        };
        ServerName::try_from(name.clone()).map_err(|e| format!("bad server name {name}: {e}"))
    }

    fn tls_config(&self, resume: bool) -> Result<Arc<rustls::ClientConfig>, String> {
        self.tls_config_for(resume, rustls::DEFAULT_VERSIONS)
    }

    /// [`CommonArgs::tls_config`] offering only `versions`.
    fn tls_config_for(
        &self,
        resume: bool,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Arc<rustls::ClientConfig>, String> {
        let roots = switchboard::certs::load_roots(&self.ca).map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = switchboard::certs::load_certs(cert).map_err(|e| e.to_string())?;
                let key = switchboard::certs::load_key(key).map_err(|e| e.to_string())?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("TLS: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Ok(Arc::new(config))
    }

    /// The parameters every report starts with.
    fn describe(&self, report: &mut Report, addr: SocketAddr, tls: bool) {
        report.param("target", self.target_name());
        report.param("addr", addr.to_string());
        report.param("tls", tls);
        report.param("websocket", self.ws);
        if let Some(pid) = self.server_pid {
            report.param("server_pid", pid.to_string());
        }
    }
}

/// A positive, finite number of seconds.
fn secs(value: f64, flag: &str) -> Result<Duration, String> {
    if value.is_finite() && value > 0.0 && value < 1e6 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!("{flag} must be a positive number of seconds"))
    }
}

/// One blocking connection, so "server not running" is one clear line.
fn probe(addr: SocketAddr) -> Result<(), String> {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map(drop)
        .map_err(|e| format!("cannot connect to {addr}: {e} (is the server running?)"))
}

/// Runs the scenario and prints its report.
pub(crate) fn run(args: BenchArgs) -> ExitCode {
    let (name, result) = match args.scenario {
        Scenario::Density(a) => ("density", density::run(a)),
        Scenario::Fanout(a) => ("fanout", fanout::run(a)),
        Scenario::Cluster(a) => ("cluster", cluster::run(a)),
        Scenario::Echo(a) => ("echo", echo::run(a)),
        Scenario::Reqrep(a) => ("reqrep", reqrep::run(a)),
        Scenario::Workqueue(a) => ("workqueue", workqueue::run(a)),
        Scenario::Handshake(a) => ("handshake", handshake::run(a)),
        Scenario::Attack(a) => ("attack", attack::run(a)),
    };
    match result {
        Ok((report, json)) => {
            if json {
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchboard bench {name}: {e}");
            ExitCode::FAILURE
        }
    }
}
