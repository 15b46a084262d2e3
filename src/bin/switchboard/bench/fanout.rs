//! `bench fanout`: one publisher, N subscribers in one group. Every payload
//! starts with its sequence number and send time, so each subscriber checks
//! it got every message in order and each delivery gives a latency.
//!
//! With `--threads N` the scenario starts `switchboard serve --threads N`
//! itself (issue 15) and, with `--layout`, chooses the loop of every
//! connection: the accepting loop hands the k-th connection it accepts to
//! loop k mod N, so connections are opened one at a time (each logged in
//! before the next is opened) and idle "pad" connections fill the turns of
//! the loops a connection should not go to. [`drive`] is the measurement
//! itself, shared with `bench cluster`.

use std::time::{Duration, Instant};

use super::net::{Endpoint, Net, establish, events};
use super::report::{Histogram, Report, rate};
use super::target::{Event, Target};
use super::{CommonArgs, TargetKind, proc, secs, spawn};

/// Publishes without an ACK at most this many at a time.
const WINDOW: u64 = 16;
/// Bytes of queued deliveries per subscriber the publisher may run ahead
/// of what the subscribers have read (far below the server's
/// slow-consumer limit of 8 MiB by default).
const LAG_BYTES: u64 = 2 << 20;
/// The sequence number and the send time (ns since the bench started),
/// both little-endian u64, open every payload.
pub(crate) const HEADER: usize = 16;
/// The sequence number of warm-up messages, which [`drive`] ignores.
const WARM_UP: u64 = u64::MAX;

/// Where `--threads` puts the connections.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// As the server hands them: round-robin over the loops.
    Spread,
    /// The publisher and every subscriber on loop 0.
    Same,
    /// The publisher on loop 0, the subscribers on the other loops.
    Cross,
}

#[derive(clap::Args, Debug)]
pub(crate) struct FanoutArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Subscriber connections.
    #[arg(long, value_name = "N", default_value_t = 100)]
    subscribers: usize,
    /// Payload size in bytes (at least 16: sequence number and send time).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    payload: usize,
    /// Seconds to publish.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    duration: f64,
    /// Messages per second; without it, as fast as ACKs allow (16 in flight,
    /// and never more than about 2 MiB per subscriber ahead of the readers).
    #[arg(long, value_name = "MSG_PER_S")]
    rate: Option<f64>,
    /// The group to subscribe and publish to (must exist on the server).
    #[arg(long, value_name = "G", default_value_t = 1)]
    group: u32,
    /// User names: PREFIXpub and PREFIXsubN.
    #[arg(long, value_name = "PREFIX", default_value = "f")]
    user_prefix: String,
    /// Start `switchboard serve --threads N` (this program, on a free
    /// loopback port, group --group open) and measure it instead of ADDR;
    /// its CPU is measured per loop.
    #[arg(long, value_name = "N", conflicts_with_all = ["addr", "server_pid", "tls", "ws"])]
    threads: Option<usize>,
    /// With --threads: which loops the publisher and subscribers are on.
    #[arg(long, value_enum, default_value = "spread", requires = "threads")]
    layout: Layout,
}

/// What [`drive`] needs to know of the load.
pub(crate) struct Load {
    pub(crate) group: u32,
    pub(crate) payload: usize,
    pub(crate) duration: Duration,
    pub(crate) rate: Option<f64>,
    pub(crate) timeout: Duration,
    /// Send times in payloads count from here.
    pub(crate) bench_start: Instant,
}

/// A connection's part in [`drive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Publisher,
    /// A subscriber; its latencies go to histogram `side`.
    Subscriber {
        side: usize,
    },
}

/// What [`drive`] measured.
pub(crate) struct Outcome {
    pub(crate) published: u64,
    pub(crate) acked: u64,
    pub(crate) received: u64,
    pub(crate) expected: u64,
    pub(crate) reordered: u64,
    pub(crate) drained: bool,
    /// From the first publish to the last delivery.
    pub(crate) elapsed: Duration,
    /// Latencies and deliveries by side.
    pub(crate) sides: Vec<(Histogram, u64)>,
}

impl Outcome {
    /// The figures every fan-out reports (latency over all sides).
    pub(crate) fn report(&self, report: &mut Report) {
        report.figure("published", self.published);
        report.figure("acked", self.acked);
        report.figure("deliveries", self.received);
        report.figure("expected_deliveries", self.expected);
        report.figure("loss", self.expected.saturating_sub(self.received));
        report.figure("out_of_order", self.reordered);
        report.figure("drained", self.drained);
        report.figure("elapsed_s", self.elapsed.as_secs_f64());
        report.figure("messages_per_s", rate(self.published, self.elapsed));
        report.figure("deliveries_per_s", rate(self.received, self.elapsed));
    }
}

pub(crate) fn run(args: FanoutArgs) -> Result<(Report, bool), String> {
    let bench_start = Instant::now();
    let c = &args.common;
    let target = c.target()?;
    let target = target.as_ref();
    let n = args.subscribers;
    if n == 0 {
        return Err("--subscribers must be at least 1".into());
    }
    if args.payload < HEADER {
        return Err(format!("--payload must be at least {HEADER} bytes"));
    }
    if args.group == 0 {
        return Err("--group must be 1 to 4294967295".into());
    }
    let msg_rate = match args.rate {
        None => None,
        Some(r) if r.is_finite() && r > 0.0 => Some(r),
        Some(_) => return Err("--rate must be a positive number".into()),
    };
    let threads = match args.threads {
        None => None,
        Some(t @ 1..=64) if c.target == TargetKind::Switchboard => Some(t),
        Some(1..=64) => return Err("--threads: only for --target switchboard".into()),
        Some(_) => return Err("--threads must be 1 to 64".into()),
    };
    if threads == Some(1) && args.layout != Layout::Spread {
        return Err("--layout same or cross needs --threads 2 or more".into());
    }
    // Pads take a connection each while the layout is being set up.
    let pads = match args.layout {
        Layout::Spread => 0,
        _ => n * (threads.unwrap_or(1) - 1),
    };
    super::density::check_count(n + 1 + pads)?;
    let duration = secs(args.duration, "--duration")?;
    let timeout = c.timeout()?;
    let server = match threads {
        Some(t) => Some(spawn::switchboard(
            "fanout",
            &[
                "--group".into(),
                format!("{}=bench", args.group),
                "--threads".into(),
                t.to_string(),
                "--max-connections".into(),
                "100000".into(),
            ],
        )?),
        None => None,
    };
    let endpoint = match &server {
        // No probe: the server must see only the connections placed here.
        Some(s) => Endpoint {
            addr: s.addr,
            tls: None,
            tls_after_greeting: false,
            ws: None,
        },
        None => c.endpoint(c.tls)?,
    };
    let server_pid = server.as_ref().map(spawn::Spawned::pid).or(c.server_pid);
    let mut report = Report::new("fanout");
    c.describe(&mut report, endpoint.addr, c.tls);
    if let (Some(t), Some(s)) = (threads, &server) {
        report.param("server_pid", s.pid().to_string());
        report.param("threads", t);
        report.param(
            "layout",
            match args.layout {
                Layout::Spread => "spread",
                Layout::Same => "same",
                Layout::Cross => "cross",
            },
        );
    }
    report.param("subscribers", n);
    report.param("payload_bytes", args.payload);
    report.param("duration_s", duration.as_secs_f64());
    report.param("group", u64::from(args.group));
    match msg_rate {
        Some(r) => report.param("rate_msg_per_s", r),
        None => report.param("window", WINDOW),
    }

    let mut net = Net::new(endpoint.clone())?;
    let prefix = &args.user_prefix;
    let group = args.group;
    let deadline = Instant::now() + timeout;
    match (threads, args.layout) {
        (Some(t), layout @ (Layout::Same | Layout::Cross)) => {
            let mut pad_net = Net::new(endpoint)?;
            let mut slot = 0usize;
            let mut pads = 0usize;
            for i in 0..=n {
                let on_first = i == 0 || layout == Layout::Same;
                while (slot % t == 0) != on_first {
                    pads += 1;
                    establish(
                        &mut pad_net,
                        target,
                        1,
                        deadline,
                        |_, out| target.login(out, &format!("{prefix}pad{pads}")),
                        |_| 1,
                    )?;
                    slot += 1;
                }
                establish(
                    &mut net,
                    target,
                    1,
                    deadline,
                    |_, out| login(target, out, prefix, group, i),
                    |_| if i == 0 { 1 } else { 2 },
                )?;
                slot += 1;
            }
            pad_net.close_all();
            report.param("pad_connections", pads);
        }
        _ => {
            establish(
                &mut net,
                target,
                n + 1,
                deadline,
                |i, out| login(target, out, prefix, group, i),
                |i| if i == 0 { 1 } else { 2 },
            )?;
        }
    }

    // What the server chose (the cipher suite weighs in its CPU per delivery).
    if let Some((version, suite)) = net.conns[0].tls_params() {
        report.param("tls_version", version);
        report.param("tls_cipher_suite", suite);
    }

    let mut roles = vec![Role::Subscriber { side: 0 }; n + 1];
    roles[0] = Role::Publisher;
    let load = Load {
        group,
        payload: args.payload,
        duration,
        rate: msg_rate,
        timeout,
        bench_start,
    };
    let cpu_before = server_pid.map(proc::cpu_us).transpose()?;
    let loops_before = server.as_ref().map(|s| spawn::loop_cpu_us(s.pid()));
    let outcome = drive(&mut net, target, &load, &roles)?;
    let cpu_after = server_pid.map(proc::cpu_us).transpose()?;
    let loops_after = server.as_ref().map(|s| spawn::loop_cpu_us(s.pid()));
    net.close_all();

    outcome.report(&mut report);
    outcome.sides[0].0.report(&mut report);
    report.server_cpu(
        cpu_before,
        cpu_after,
        "server_cpu_us_per_delivery",
        outcome.received,
    );
    if let (Some(b), Some(a)) = (loops_before, loops_after) {
        let per = |us: u64| us as f64 / outcome.received.max(1) as f64;
        let (first, others) = (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1));
        report.figure("loop0_cpu_us", first);
        report.figure("other_loops_cpu_us", others);
        report.figure("loop0_cpu_us_per_delivery", per(first));
        report.figure("other_loops_cpu_us_per_delivery", per(others));
    }
    drop(server);
    Ok((report, c.json))
}

/// Queues connection `i`'s setup: the publisher's login (`i == 0`), or a
/// subscriber's login and subscription.
fn login(target: &dyn Target, out: &mut Vec<u8>, prefix: &str, group: u32, i: usize) {
    if i == 0 {
        target.login(out, &format!("{prefix}pub"));
    } else {
        target.login(out, &format!("{prefix}sub{i}"));
        target.subscribe(out, group);
    }
}

/// Publishes warm-up messages (which [`drive`] ignores) every 20 ms until
/// every subscriber has had one and every publish is acknowledged, then
/// reads for 100 ms more: in a cluster, until every node knows every
/// subscription. Returns how long it took.
pub(crate) fn warm_up(
    net: &mut Net,
    target: &dyn Target,
    roles: &[Role],
    group: u32,
    payload: usize,
    deadline: Instant,
) -> Result<Duration, String> {
    let start = Instant::now();
    let publisher = roles
        .iter()
        .position(|r| *r == Role::Publisher)
        .ok_or("no publisher")?;
    let mut body = vec![0x5a_u8; payload];
    body[..8].copy_from_slice(&WARM_UP.to_le_bytes());
    let mut heard = vec![false; roles.len()];
    heard[publisher] = true;
    let (mut published, mut acked) = (0u64, 0u64);
    let mut last_publish: Option<Instant> = None;
    let mut done_at: Option<Instant> = None;
    let mut ready = Vec::new();
    loop {
        let now = Instant::now();
        if now >= deadline {
            let missing = heard.iter().filter(|h| !**h).count();
            return Err(format!(
                "warm-up: {missing} subscribers had nothing by the deadline (raise --timeout?)"
            ));
        }
        let all = heard.iter().all(|h| *h) && acked == published;
        match done_at {
            Some(t) if now >= t => return Ok(start.elapsed()),
            None if all => done_at = Some(now + Duration::from_millis(100)),
            _ => {}
        }
        if done_at.is_none() && last_publish.is_none_or(|t| now - t >= Duration::from_millis(20)) {
            let conn = &mut net.conns[publisher];
            target.publish(&mut conn.out, group, &body);
            published += 1;
            last_publish = Some(now);
            conn.flush().map_err(|e| format!("publisher: {e}"))?;
        }
        net.poll(Duration::from_millis(10), &mut ready)?;
        for &idx in &ready {
            let conn = &mut net.conns[idx];
            events(target, conn, |ev| match ev {
                Event::Delivery(_) => {
                    heard[idx] = true;
                    Ok(())
                }
                ev if ev.is_ack() => {
                    acked += 1;
                    Ok(())
                }
                Event::Refused(why) => Err(format!("warm-up: refused: {why}")),
                _ => Ok(()),
            })?;
            if conn.closed {
                return Err(format!("warm-up: the server closed connection {}", idx + 1));
            }
            conn.flush()
                .map_err(|e| format!("connection {}: {e}", idx + 1))?;
        }
    }
}

/// The measurement: the publisher publishes for `load.duration` (flat out
/// within [`WINDOW`] and the lag bound, or at `load.rate`), every
/// subscriber checks its sequence, and the latencies go to each
/// subscriber's side. `roles` names every connection of `net`, in order.
pub(crate) fn drive(
    net: &mut Net,
    target: &dyn Target,
    load: &Load,
    roles: &[Role],
) -> Result<Outcome, String> {
    let publisher = roles
        .iter()
        .position(|r| *r == Role::Publisher)
        .ok_or("no publisher")?;
    let n = roles.len() - 1;
    let nsides = roles
        .iter()
        .filter_map(|r| match r {
            Role::Subscriber { side } => Some(side + 1),
            Role::Publisher => None,
        })
        .max()
        .unwrap_or(1);
    let (bench_start, group, msg_rate) = (load.bench_start, load.group, load.rate);
    let n64 = n as u64;
    let lag = (LAG_BYTES / (load.payload as u64 + 64)).clamp(4, 100_000);
    let mut payload = vec![0x5a_u8; load.payload];
    let mut next = vec![0u64; roles.len()];
    let (mut published, mut acked, mut received, mut gaps, mut reordered) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut sides: Vec<(Histogram, u64)> = (0..nsides).map(|_| (Histogram::new(), 0)).collect();
    let mut ready = Vec::new();
    let start = Instant::now();
    let end = start + load.duration;
    let hard = end + load.timeout;
    let mut last_delivery = start;
    let mut drained = true;
    loop {
        let now = Instant::now();
        let publishing = now < end;
        if publishing {
            let due = match msg_rate {
                Some(r) => (r * (now - start).as_secs_f64()).ceil() as u64,
                None => u64::MAX,
            };
            let pub_conn = &mut net.conns[publisher];
            while published - acked < WINDOW
                && published * n64 - received - gaps < n64 * lag
                && published < due
            {
                let ts = u64::try_from(bench_start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                payload[..8].copy_from_slice(&published.to_le_bytes());
                payload[8..16].copy_from_slice(&ts.to_le_bytes());
                target.publish(&mut pub_conn.out, group, &payload);
                published += 1;
            }
            pub_conn.flush().map_err(|e| format!("publisher: {e}"))?;
        } else if acked == published && received + gaps >= published * n64 {
            break;
        }
        if now >= hard {
            drained = false;
            break;
        }
        let wait = match msg_rate {
            Some(r) if publishing => {
                let next_at = start + Duration::from_secs_f64((published + 1) as f64 / r);
                next_at
                    .saturating_duration_since(now)
                    .min(Duration::from_millis(10))
            }
            _ => Duration::from_millis(10),
        };
        net.poll(wait, &mut ready)?;
        for &idx in &ready {
            let conn = &mut net.conns[idx];
            match roles.get(idx) {
                Some(Role::Publisher) => {
                    events(target, conn, |ev| match ev {
                        ev if ev.is_ack() => {
                            acked += 1;
                            Ok(())
                        }
                        Event::Refused(why) => Err(format!("publish refused: {why}")),
                        _ => Ok(()),
                    })?;
                    if conn.closed {
                        return Err("the server closed the publisher's connection".into());
                    }
                }
                Some(&Role::Subscriber { side }) => {
                    let read_ns =
                        u64::try_from((conn.read_at - bench_start).as_nanos()).unwrap_or(u64::MAX);
                    let expect = &mut next[idx];
                    let hist = &mut sides[side];
                    let mut got = 0;
                    events(target, conn, |ev| {
                        let Event::Delivery(p) = ev else {
                            return Ok(());
                        };
                        let word = |at: usize| {
                            p.get(at..at + 8)
                                .and_then(|b| b.try_into().ok())
                                .map(u64::from_le_bytes)
                        };
                        let (Some(seq), Some(ts)) = (word(0), word(8)) else {
                            return Err("a delivery shorter than 16 bytes".into());
                        };
                        if seq == WARM_UP {
                            return Ok(());
                        }
                        hist.0.record(read_ns.saturating_sub(ts));
                        got += 1;
                        if seq >= *expect {
                            gaps += seq - *expect;
                            *expect = seq + 1;
                        } else {
                            reordered += 1;
                        }
                        Ok(())
                    })
                    .map_err(|e| format!("subscriber {idx}: {e}"))?;
                    if got > 0 {
                        received += got;
                        hist.1 += got;
                        last_delivery = last_delivery.max(conn.read_at);
                    }
                    if conn.closed {
                        return Err(format!(
                            "the server closed subscriber {idx} (slow consumer?) after {received} deliveries"
                        ));
                    }
                }
                None => {}
            }
            conn.flush()
                .map_err(|e| format!("connection {}: {e}", idx + 1))?;
        }
    }
    Ok(Outcome {
        published,
        acked,
        received,
        expected: published * n64,
        reordered,
        drained,
        elapsed: last_delivery.saturating_duration_since(start),
        sides,
    })
}
