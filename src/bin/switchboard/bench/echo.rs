//! `bench echo`: N connections, each doing round trips one after another:
//! `PING`/`PONG`, or with `--payload` a `SEND` to its own user (the
//! `MESSAGE` comes back, then the `ACK` that ends the round trip).

use std::time::{Duration, Instant};

use super::net::{Net, establish, events};
use super::report::{Histogram, Report, rate};
use super::target::Event;
use super::{CommonArgs, secs};

#[derive(clap::Args, Debug)]
pub(crate) struct EchoArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Connections, each with one round trip outstanding at a time.
    #[arg(long, value_name = "N", default_value_t = 10)]
    connections: usize,
    /// Seconds to run.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    duration: f64,
    /// Bytes per round trip: 0 uses PING/PONG, more sends a message to
    /// oneself and waits for it and its ACK.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    payload: usize,
    /// User names are this prefix plus the connection's number.
    #[arg(long, value_name = "PREFIX", default_value = "e")]
    user_prefix: String,
}

struct State {
    sent_at: Instant,
    busy: bool,
    delivered: bool,
}

pub(crate) fn run(args: EchoArgs) -> Result<(Report, bool), String> {
    let c = &args.common;
    let target = c.target()?;
    let target = target.as_ref();
    let n = args.connections;
    if n == 0 {
        return Err("--connections must be at least 1".into());
    }
    if args.payload > 0 && !target.direct_messages() {
        return Err(format!(
            "--payload (a message to oneself) is not supported for --target {} yet",
            target.name()
        ));
    }
    super::density::check_count(n)?;
    let duration = secs(args.duration, "--duration")?;
    let timeout = c.timeout()?;
    let endpoint = c.endpoint(c.tls)?;
    let mut report = Report::new("echo");
    c.describe(&mut report, endpoint.addr, c.tls);
    report.param("connections", n);
    report.param("duration_s", duration.as_secs_f64());
    report.param("payload_bytes", args.payload);
    report.param(
        "round_trip",
        if args.payload == 0 {
            "PING/PONG"
        } else {
            "SEND to self, MESSAGE + ACK"
        },
    );

    let mut net = Net::new(endpoint)?;
    let names: Vec<String> = (0..n).map(|i| format!("{}{i}", args.user_prefix)).collect();
    establish(
        &mut net,
        target,
        n,
        Instant::now() + timeout,
        |i, out| target.login(out, &names[i]),
        |_| 1,
    )?;

    let payload = vec![b'e'; args.payload];
    let request = |out: &mut Vec<u8>, i: usize| {
        if payload.is_empty() {
            target.ping(out);
        } else {
            target.send_to(out, &names[i], &payload);
        }
    };
    let start = Instant::now();
    let end = start + duration;
    let hard = end + timeout;
    let mut state: Vec<State> = (0..n)
        .map(|_| State {
            sent_at: start,
            busy: true,
            delivered: false,
        })
        .collect();
    for (i, conn) in net.conns.iter_mut().enumerate() {
        request(&mut conn.out, i);
        conn.flush()
            .map_err(|e| format!("connection {}: {e}", i + 1))?;
    }
    let mut busy = n;
    let mut trips = 0u64;
    let mut hist = Histogram::new();
    let mut ready = Vec::new();
    while busy > 0 {
        let now = Instant::now();
        if now >= hard {
            return Err(format!("{busy} round trips unanswered after the timeout"));
        }
        net.poll(Duration::from_millis(10), &mut ready)?;
        for &i in &ready {
            let conn = &mut net.conns[i];
            let st = &mut state[i];
            let mut done = false;
            let with_payload = !payload.is_empty();
            events(target, conn, |ev| {
                match ev {
                    Event::Pong if !with_payload => done = true,
                    Event::Delivery(_) if with_payload => st.delivered = true,
                    Event::Ok if with_payload => {
                        if !st.delivered {
                            return Err("ACK without the MESSAGE to itself".into());
                        }
                        done = true;
                    }
                    Event::Refused(why) => return Err(format!("refused: {why}")),
                    _ => {}
                }
                Ok(())
            })
            .map_err(|e| format!("connection {}: {e}", i + 1))?;
            if done && st.busy {
                let read_at = conn.read_at;
                hist.record_duration(read_at.saturating_duration_since(st.sent_at));
                trips += 1;
                st.delivered = false;
                if read_at < end {
                    st.sent_at = Instant::now();
                    request(&mut conn.out, i);
                } else {
                    st.busy = false;
                    busy -= 1;
                }
            }
            if conn.closed && st.busy {
                return Err(format!("connection {}: closed by the server", i + 1));
            }
            conn.flush()
                .map_err(|e| format!("connection {}: {e}", i + 1))?;
        }
    }
    let elapsed = start.elapsed();
    net.close_all();
    report.figure("round_trips", trips);
    report.figure("elapsed_s", elapsed.as_secs_f64());
    report.figure("round_trips_per_s", rate(trips, elapsed));
    hist.report(&mut report);
    Ok((report, c.json))
}
