//! `bench cluster` (issue 15): the cost of a delivery that crosses nodes.
//!
//! Two configurations with the same load, one after the other, each on
//! servers this scenario starts and stops itself (this program's `serve`,
//! plain TCP on free loopback ports):
//!
//! 1. **one node**: `serve` without `--cluster`; the publisher and all
//!    2 x N subscribers on it;
//! 2. **two nodes**: a `redis-server` on a free port and nodes A and B
//!    (`--cluster redis://127.0.0.1:PORT --node bench-a|bench-b`); the
//!    publisher and N subscribers on A, N subscribers on B, so half of the
//!    deliveries cross from A through Redis to B.
//!
//! Before each measurement, warm-up messages go out until every subscriber
//! has had one (in the cluster: until A knows B's subscriptions). The CPU
//! time of every process involved (`/proc/PID/stat`) is read at the edges
//! of the measurement; the extra CPU per cross-node delivery is the
//! two-node total minus what the same number of deliveries cost on one
//! node, over the deliveries made on B.

use std::time::{Duration, Instant};

use super::fanout::{HEADER, Load, Outcome, Role, drive, warm_up};
use super::net::{Endpoint, Net, establish};
use super::report::{Report, rate};
use super::spawn::{self, Spawned};
use super::target::{Switchboard, Target};
use super::{proc, secs};

#[derive(clap::Args, Debug)]
pub(crate) struct ClusterArgs {
    /// Subscribers on each node (2 x N on the single node).
    #[arg(long, value_name = "N", default_value_t = 100)]
    subscribers: usize,
    /// Payload size in bytes (at least 16: sequence number and send time).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    payload: usize,
    /// Seconds to publish, in each configuration.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    duration: f64,
    /// Messages per second; without it, as fast as ACKs allow.
    #[arg(long, value_name = "MSG_PER_S")]
    rate: Option<f64>,
    /// Loops of each node (`serve --threads`).
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// The Redis server program to start.
    #[arg(long, value_name = "PROGRAM", default_value = "redis-server")]
    redis_server: std::path::PathBuf,
    /// Print one JSON object on standard output instead of a table.
    #[arg(long)]
    json: bool,
    /// Hard limit in seconds on any phase (setup, warm-up, drain).
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    timeout: f64,
}

/// The group every configuration uses.
const GROUP: u32 = 1;

/// One configuration's measurement and its processes' CPU time.
struct Measured {
    outcome: Outcome,
    /// CPU microseconds of each process, in the order given.
    cpu_us: Vec<u64>,
    warm_up: Duration,
}

impl Measured {
    fn total_cpu(&self) -> u64 {
        self.cpu_us.iter().sum()
    }

    fn per_delivery(&self, us: u64) -> f64 {
        us as f64 / self.outcome.received.max(1) as f64
    }
}

fn serve(tag: &str, threads: usize, extra: &[String]) -> Result<Spawned, String> {
    let mut args = vec![
        "--group".to_string(),
        format!("{GROUP}=bench"),
        "--threads".into(),
        threads.to_string(),
        "--max-connections".into(),
        "100000".into(),
    ];
    args.extend_from_slice(extra);
    spawn::switchboard(tag, &args)
}

fn plain(addr: std::net::SocketAddr) -> Endpoint {
    Endpoint {
        addr,
        tls: None,
        tls_after_greeting: false,
        ws: None,
    }
}

/// Logs in the publisher and `per_node[k]` subscribers on node `k` (side
/// `k`), warms up, measures, and reads the CPU of `pids`.
fn measure(
    nodes: &[&Spawned],
    per_node: &[usize],
    pids: &[u32],
    load: &Load,
) -> Result<Measured, String> {
    let target = &Switchboard as &dyn Target;
    let deadline = Instant::now() + load.timeout;
    let mut net = Net::new(plain(nodes[0].addr))?;
    let mut roles = vec![Role::Publisher];
    establish(
        &mut net,
        target,
        1,
        deadline,
        |_, out| target.login(out, "cpub"),
        |_| 1,
    )?;
    for (side, (node, &count)) in nodes.iter().zip(per_node).enumerate() {
        net.set_addr(node.addr);
        establish(
            &mut net,
            target,
            count,
            deadline,
            |i, out| {
                target.login(out, &format!("c{side}sub{i}"));
                target.subscribe(out, GROUP);
            },
            |_| 2,
        )?;
        roles.extend(std::iter::repeat_n(Role::Subscriber { side }, count));
    }
    let warm = warm_up(&mut net, target, &roles, GROUP, load.payload, deadline)?;
    let before: Vec<u64> = pids
        .iter()
        .map(|&p| proc::cpu_us(p))
        .collect::<Result<_, _>>()?;
    let outcome = drive(&mut net, target, load, &roles)?;
    let after: Vec<u64> = pids
        .iter()
        .map(|&p| proc::cpu_us(p))
        .collect::<Result<_, _>>()?;
    net.close_all();
    Ok(Measured {
        outcome,
        cpu_us: after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect(),
        warm_up: warm,
    })
}

pub(crate) fn run(args: ClusterArgs) -> Result<(Report, bool), String> {
    let bench_start = Instant::now();
    let n = args.subscribers;
    if n == 0 {
        return Err("--subscribers must be at least 1".into());
    }
    if args.payload < HEADER {
        return Err(format!("--payload must be at least {HEADER} bytes"));
    }
    if !(1..=64).contains(&args.threads) {
        return Err("--threads must be 1 to 64".into());
    }
    let rate_arg = match args.rate {
        None => None,
        Some(r) if r.is_finite() && r > 0.0 => Some(r),
        Some(_) => return Err("--rate must be a positive number".into()),
    };
    super::density::check_count(2 * n + 1)?;
    let load = Load {
        group: GROUP,
        payload: args.payload,
        duration: secs(args.duration, "--duration")?,
        rate: rate_arg,
        timeout: secs(args.timeout, "--timeout")?,
        bench_start,
    };
    let mut report = Report::new("cluster");
    report.param("subscribers_per_node", n);
    report.param("payload_bytes", args.payload);
    report.param("duration_s", load.duration.as_secs_f64());
    report.param("threads_per_node", args.threads);
    if let Some(r) = rate_arg {
        report.param("rate_msg_per_s", r);
    }

    // 1. One node, 2 x N subscribers.
    let single = {
        let node = serve("single", args.threads, &[])?;
        measure(&[&node], &[2 * n], &[node.pid()], &load)?
    };

    // 2. Redis and two nodes, N subscribers on each.
    let redis = spawn::redis(&args.redis_server)?;
    let url = format!("redis://{}", redis.addr);
    let node = |name: &str| {
        serve(
            name,
            args.threads,
            &[
                "--cluster".into(),
                url.clone(),
                "--node".into(),
                format!("bench-{name}"),
            ],
        )
    };
    let (a, b) = (node("a")?, node("b")?);
    let pids = [a.pid(), b.pid(), redis.pid()];
    let two = measure(&[&a, &b], &[n, n], &pids, &load)?;
    let version = std::process::Command::new(&args.redis_server)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            v.split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_string))
        });
    drop((a, b, redis));
    if let Some(v) = version {
        report.param("redis_version", v);
    }

    let s = &single.outcome;
    report.figure("single_published", s.published);
    report.figure("single_deliveries", s.received);
    report.figure("single_loss", s.expected.saturating_sub(s.received));
    report.figure("single_deliveries_per_s", rate(s.received, s.elapsed));
    report.figure("single_latency_p50_us", s.sides[0].0.quantile_us(0.50));
    report.figure("single_latency_p99_us", s.sides[0].0.quantile_us(0.99));
    report.figure("single_server_cpu_us", single.total_cpu());
    let single_per = single.per_delivery(single.total_cpu());
    report.figure("single_cpu_us_per_delivery", single_per);

    let t = &two.outcome;
    report.figure("published", t.published);
    report.figure("deliveries", t.received);
    report.figure("expected_deliveries", t.expected);
    report.figure("loss", t.expected.saturating_sub(t.received));
    report.figure("out_of_order", t.reordered);
    report.figure("drained", t.drained);
    report.figure("warm_up_s", two.warm_up.as_secs_f64());
    report.figure("elapsed_s", t.elapsed.as_secs_f64());
    report.figure("messages_per_s", rate(t.published, t.elapsed));
    report.figure("deliveries_per_s", rate(t.received, t.elapsed));
    let (ha, da) = &t.sides[0];
    let (hb, db) = &t.sides[1];
    report.figure("node_a_deliveries", *da);
    report.figure("node_b_deliveries", *db);
    report.figure("node_a_latency_p50_us", ha.quantile_us(0.50));
    report.figure("node_a_latency_p99_us", ha.quantile_us(0.99));
    report.figure("node_b_latency_p50_us", hb.quantile_us(0.50));
    report.figure("node_b_latency_p99_us", hb.quantile_us(0.99));
    report.figure("node_a_cpu_us", two.cpu_us[0]);
    report.figure("node_b_cpu_us", two.cpu_us[1]);
    report.figure("redis_cpu_us", two.cpu_us[2]);
    let total = two.total_cpu();
    report.figure("cpu_us", total);
    report.figure("cpu_us_per_delivery", two.per_delivery(total));
    report.figure(
        "node_a_cpu_us_per_delivery",
        two.per_delivery(two.cpu_us[0]),
    );
    report.figure(
        "node_b_cpu_us_per_node_b_delivery",
        two.cpu_us[1] as f64 / (*db).max(1) as f64,
    );
    report.figure(
        "redis_cpu_us_per_message",
        two.cpu_us[2] as f64 / t.published.max(1) as f64,
    );
    // What the two-node run cost beyond the same deliveries on one node,
    // charged to the deliveries that crossed.
    let extra = total as f64 - single_per * t.received as f64;
    report.figure(
        "extra_cpu_us_per_cross_node_delivery",
        extra / (*db).max(1) as f64,
    );
    report.figure("clock_ticks_per_s", proc::clock_ticks_per_second());
    Ok((report, args.json))
}
