//! `bench fanout`: one publisher, N subscribers in one group. Every payload
//! starts with its sequence number and send time, so each subscriber checks
//! it got every message in order and each delivery gives a latency.

use std::time::{Duration, Instant};

use super::net::{Net, establish, events};
use super::report::{Histogram, Report, rate};
use super::target::Event;
use super::{CommonArgs, proc, secs};

/// Publishes without an ACK at most this many at a time.
const WINDOW: u64 = 16;
/// Bytes of queued deliveries per subscriber the publisher may run ahead
/// of what the subscribers have read (far below the server's
/// slow-consumer limit of 8 MiB by default).
const LAG_BYTES: u64 = 2 << 20;
/// The sequence number and the send time (ns since the bench started),
/// both little-endian u64, open every payload.
const HEADER: usize = 16;

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
    super::density::check_count(n + 1)?;
    let duration = secs(args.duration, "--duration")?;
    let timeout = c.timeout()?;
    let endpoint = c.endpoint(c.tls)?;
    let mut report = Report::new("fanout");
    c.describe(&mut report, endpoint.addr, c.tls);
    report.param("subscribers", n);
    report.param("payload_bytes", args.payload);
    report.param("duration_s", duration.as_secs_f64());
    report.param("group", u64::from(args.group));
    match msg_rate {
        Some(r) => report.param("rate_msg_per_s", r),
        None => report.param("window", WINDOW),
    }

    let mut net = Net::new(endpoint)?;
    let prefix = &args.user_prefix;
    let group = args.group;
    establish(
        &mut net,
        target,
        n + 1,
        Instant::now() + timeout,
        |i, out| {
            if i == 0 {
                target.login(out, &format!("{prefix}pub"));
            } else {
                target.login(out, &format!("{prefix}sub{i}"));
                target.subscribe(out, group);
            }
        },
        |i| if i == 0 { 1 } else { 2 },
    )?;

    // What the server chose (the cipher suite weighs in its CPU per delivery).
    if let Some((version, suite)) = net.conns[0].tls_params() {
        report.param("tls_version", version);
        report.param("tls_cipher_suite", suite);
    }

    let n64 = n as u64;
    let lag = (LAG_BYTES / (args.payload as u64 + 64)).clamp(4, 100_000);
    let mut payload = vec![0x5a_u8; args.payload];
    let mut next = vec![0u64; n];
    let (mut published, mut acked, mut received, mut gaps, mut reordered) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut hist = Histogram::new();
    let mut ready = Vec::new();
    let cpu_before = c.server_pid.map(proc::cpu_us).transpose()?;
    let start = Instant::now();
    let end = start + duration;
    let hard = end + timeout;
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
            let pub_conn = &mut net.conns[0];
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
            if idx == 0 {
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
            } else {
                let read_ns =
                    u64::try_from((conn.read_at - bench_start).as_nanos()).unwrap_or(u64::MAX);
                let expect = &mut next[idx - 1];
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
                    hist.record(read_ns.saturating_sub(ts));
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
                    last_delivery = last_delivery.max(conn.read_at);
                }
                if conn.closed {
                    return Err(format!(
                        "the server closed subscriber {idx} (slow consumer?) after {received} deliveries"
                    ));
                }
            }
            conn.flush()
                .map_err(|e| format!("connection {}: {e}", idx + 1))?;
        }
    }
    let cpu_after = c.server_pid.map(proc::cpu_us).transpose()?;
    let elapsed = last_delivery.saturating_duration_since(start);
    net.close_all();

    let expected = published * n64;
    report.figure("published", published);
    report.figure("acked", acked);
    report.figure("deliveries", received);
    report.figure("expected_deliveries", expected);
    report.figure("loss", expected.saturating_sub(received));
    report.figure("out_of_order", reordered);
    report.figure("drained", drained);
    report.figure("elapsed_s", elapsed.as_secs_f64());
    report.figure("messages_per_s", rate(published, elapsed));
    report.figure("deliveries_per_s", rate(received, elapsed));
    hist.report(&mut report);
    report.server_cpu(
        cpu_before,
        cpu_after,
        "server_cpu_us_per_delivery",
        received,
    );
    Ok((report, c.json))
}
