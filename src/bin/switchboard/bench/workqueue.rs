//! `bench workqueue`: a work queue (push/pull). W worker connections join
//! one queue group on a group; one publisher publishes numbered messages
//! with a window of publishes unacknowledged; every message must reach
//! exactly one worker.
//!
//! - switchboard: workers `QSUBSCRIBE 0 q 1`; `PUBLISH` is acknowledged by
//!   its `ACK`.
//! - nats: workers `SUB g.1 q 1`; each `PUB` is followed by `PING`, whose
//!   `PONG` is the acknowledgement (as the other NATS scenarios do).

use std::time::{Duration, Instant};

use switchboard::proto::{Decoded, decode};

use super::net::{Net, establish};
use super::report::{Report, rate};
use super::reqrep::{NatsItem, nats_next};
use super::{CommonArgs, TargetKind, proc, secs};

#[derive(clap::Args, Debug)]
pub(crate) struct WorkQueueArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Worker connections, all in one queue group.
    #[arg(long, value_name = "N", default_value_t = 4)]
    workers: usize,
    /// Publishes not yet acknowledged at most.
    #[arg(long, value_name = "N", default_value_t = 256)]
    window: usize,
    /// Bytes per message (at least 8: the message's number).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    payload: usize,
    /// Seconds to publish.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    duration: f64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Switchboard,
    Nats,
}

/// Reads `inbuf`: acknowledgements and the numbers of messages delivered.
fn consume(
    proto: Proto,
    inbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    got: &mut Vec<u64>,
) -> Result<usize, String> {
    let mut acks = 0;
    let mut pos = 0;
    let number = |p: &[u8]| {
        p.get(..8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
    };
    match proto {
        Proto::Switchboard => loop {
            match decode(&inbuf[pos..], usize::MAX) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    match frame.verb().as_bytes() {
                        b"ACK" => acks += 1,
                        b"PING" => out.extend_from_slice(b"PONG 0\n"),
                        b"PUBLISHED" => got.extend(number(frame.payload())),
                        b"ERR" => {
                            return Err(String::from_utf8_lossy(frame.payload()).into_owned());
                        }
                        _ => {}
                    }
                    pos += consumed;
                }
                Ok(Decoded::Incomplete { .. }) => break,
                Err(e) => return Err(e.to_string()),
            }
        },
        Proto::Nats => {
            while let Some((item, used)) = nats_next(&inbuf[pos..])? {
                match item {
                    NatsItem::Msg { payload, .. } => got.extend(number(payload)),
                    NatsItem::Line("PING") => out.extend_from_slice(b"PONG\r\n"),
                    NatsItem::Line("PONG") => acks += 1,
                    NatsItem::Line(l) if l.starts_with("-ERR") => return Err(l.to_owned()),
                    NatsItem::Line(_) => {}
                }
                pos += used;
            }
        }
    }
    inbuf.drain(..pos);
    Ok(acks)
}

pub(crate) fn run(args: WorkQueueArgs) -> Result<(Report, bool), String> {
    let c = &args.common;
    let proto = match c.target {
        TargetKind::Switchboard => Proto::Switchboard,
        TargetKind::Nats => Proto::Nats,
        _ => return Err("bench workqueue speaks switchboard and nats only".into()),
    };
    let (w, window) = (args.workers, args.window);
    if w == 0 || window == 0 || args.payload < 8 {
        return Err("--workers and --window at least 1, --payload at least 8".into());
    }
    let duration = secs(args.duration, "--duration")?;
    let timeout = c.timeout()?;
    let endpoint = c.endpoint(c.tls)?;
    let mut report = Report::new("workqueue");
    c.describe(&mut report, endpoint.addr, c.tls);
    report.param("workers", w);
    report.param("window", window);
    report.param("payload_bytes", args.payload);
    let target = c.target()?;
    let target = target.as_ref();
    let mut net = Net::new(endpoint)?;
    let (acks, worker_setup): (usize, fn(usize, &mut Vec<u8>)) = match proto {
        Proto::Switchboard => (2, |i, out| {
            out.extend_from_slice(format!("USER 0 worker{i}\nQSUBSCRIBE 0 q 1\n").as_bytes());
        }),
        Proto::Nats => (1, |_, out| {
            out.extend_from_slice(b"CONNECT {\"verbose\":false}\r\nSUB g.1 q 1\r\nPING\r\n");
        }),
    };
    establish(
        &mut net,
        target,
        w,
        Instant::now() + timeout,
        worker_setup,
        |_| acks,
    )?;
    establish(
        &mut net,
        target,
        1,
        Instant::now() + timeout,
        |_, out| match proto {
            Proto::Switchboard => out.extend_from_slice(b"USER 0 pusher\n"),
            Proto::Nats => out.extend_from_slice(b"CONNECT {\"verbose\":false}\r\nPING\r\n"),
        },
        |_| 1,
    )?;
    let publish = |out: &mut Vec<u8>, n: u64| {
        let mut payload = vec![b'w'; args.payload];
        payload[..8].copy_from_slice(&n.to_be_bytes());
        match proto {
            Proto::Switchboard => {
                out.extend_from_slice(format!("PUBLISH {} 1\n", payload.len()).as_bytes());
                out.extend_from_slice(&payload);
            }
            Proto::Nats => {
                out.extend_from_slice(format!("PUB g.1 {}\r\n", payload.len()).as_bytes());
                out.extend_from_slice(&payload);
                out.extend_from_slice(b"\r\nPING\r\n");
            }
        }
    };
    let cpu_before = c.server_pid.map(proc::cpu_us).transpose()?;
    let start = Instant::now();
    let end = start + duration;
    let hard = end + timeout;
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut got: Vec<u64> = Vec::new();
    let mut per_worker = vec![0u64; w];
    let mut ready = Vec::new();
    loop {
        let now = Instant::now();
        if now < end {
            let p = &mut net.conns[w];
            while sent - acked < window as u64 {
                publish(&mut p.out, sent);
                sent += 1;
            }
            p.flush().map_err(|e| format!("publisher: {e}"))?;
        } else if acked == sent && got.len() as u64 >= sent {
            break;
        }
        if now >= hard {
            return Err(format!(
                "{} of {sent} messages delivered after the timeout",
                got.len()
            ));
        }
        net.poll(Duration::from_millis(10), &mut ready)?;
        for &i in &ready {
            let conn = &mut net.conns[i];
            let before = got.len();
            let n = consume(proto, &mut conn.inbuf, &mut conn.out, &mut got)
                .map_err(|e| format!("connection {}: {e}", i + 1))?;
            if i == w {
                acked += n as u64;
            } else if let Some(c) = per_worker.get_mut(i) {
                *c += (got.len() - before) as u64;
            }
            conn.flush()
                .map_err(|e| format!("connection {}: {e}", i + 1))?;
        }
    }
    let elapsed = start.elapsed();
    let cpu_after = c.server_pid.map(proc::cpu_us).transpose()?;
    net.close_all();
    got.sort_unstable();
    let before = got.len();
    got.dedup();
    let duplicates = before - got.len();
    let lost = sent - got.len() as u64;
    report.figure("messages", sent);
    report.figure("elapsed_s", elapsed.as_secs_f64());
    report.figure("messages_per_s", rate(sent, elapsed));
    report.figure("duplicates", duplicates as u64);
    report.figure("lost", lost);
    report.figure(
        "busiest_worker_share",
        per_worker.iter().copied().max().unwrap_or(0) as f64 / sent.max(1) as f64,
    );
    report.server_cpu(cpu_before, cpu_after, "server_cpu_us_per_message", sent);
    Ok((report, c.json))
}
