//! `bench reqrep`: request/reply through a queue group. W responder
//! connections join one queue group on a group; R requester connections
//! keep D requests each outstanding (pipelined) and count the replies.
//!
//! - switchboard: responders `QSUBSCRIBE 0 q 1`, requesters `REQUEST LEN 1
//!   5000` and read `RESULT`; responders answer `REQUESTED ... <rid>` with
//!   `REPLY LEN <rid>`.
//! - nats: responders `SUB req.1 q 1`, requesters `SUB _INBOX.<i> 1` and
//!   `PUB req.1 _INBOX.<i> LEN`; responders answer `MSG ... <reply-to>` with
//!   `PUB <reply-to> LEN`, as `nats reply` does.
//!
//! Replies are matched to the requester that waits for them (each
//! connection's own), not to a particular request: a reply ends the oldest
//! outstanding request of its connection (both servers answer a
//! connection's requests in the order a single responder gets them, and
//! the latency of the oldest is what a pipelined client sees).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use switchboard::proto::{Decoded, decode};

use super::net::{Net, establish};
use super::report::{Histogram, Report, rate};
use super::{CommonArgs, TargetKind, proc, secs};

#[derive(clap::Args, Debug)]
pub(crate) struct ReqRepArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Requester connections.
    #[arg(long, value_name = "N", default_value_t = 100)]
    requesters: usize,
    /// Responder connections, all in one queue group.
    #[arg(long, value_name = "N", default_value_t = 4)]
    responders: usize,
    /// Requests each requester keeps outstanding (pipelining).
    #[arg(long, value_name = "N", default_value_t = 1)]
    depth: usize,
    /// Bytes per request and per reply.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    payload: usize,
    /// Seconds to run.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    duration: f64,
}

/// The two protocols this scenario speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Switchboard,
    Nats,
}

impl Proto {
    fn setup_responder(self, out: &mut Vec<u8>, i: usize) {
        match self {
            Self::Switchboard => {
                out.extend_from_slice(format!("USER 0 resp{i}\nQSUBSCRIBE 0 q 1\n").as_bytes());
            }
            Self::Nats => out.extend_from_slice(
                b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB req.1 q 1\r\nPING\r\n",
            ),
        }
    }

    fn setup_requester(self, out: &mut Vec<u8>, i: usize) {
        match self {
            Self::Switchboard => out.extend_from_slice(format!("USER 0 req{i}\n").as_bytes()),
            Self::Nats => out.extend_from_slice(
                format!(
                    "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB _INBOX.{i} 1\r\nPING\r\n"
                )
                .as_bytes(),
            ),
        }
    }

    fn request(self, out: &mut Vec<u8>, i: usize, payload: &[u8]) {
        match self {
            Self::Switchboard => {
                out.extend_from_slice(format!("REQUEST {} 1 5000\n", payload.len()).as_bytes());
            }
            Self::Nats => out.extend_from_slice(
                format!("PUB req.1 _INBOX.{i} {}\r\n", payload.len()).as_bytes(),
            ),
        }
        out.extend_from_slice(payload);
        if self == Self::Nats {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// What one connection's input held.
#[derive(Default)]
struct Seen {
    /// Setup acknowledgements (`ACK`, `PONG`).
    acks: usize,
    /// Replies (requester) or requests answered (responder).
    replies: usize,
}

/// One whole item of NATS server input.
pub(super) enum NatsItem<'a> {
    /// A control line (`PING`, `PONG`, `+OK`, `-ERR ...`, `INFO ...`).
    Line(&'a str),
    /// `MSG <subject> <sid> [reply-to] <len>` and its payload.
    Msg {
        reply_to: Option<&'a str>,
        payload: &'a [u8],
    },
}

/// The whole item at the front of `rest` and the bytes it takes, if it is
/// all there.
pub(super) fn nats_next(rest: &[u8]) -> Result<Option<(NatsItem<'_>, usize)>, String> {
    let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&rest[..eol]).map_err(|e| e.to_string())?;
    let Some(msg) = line.strip_prefix("MSG ") else {
        return Ok(Some((NatsItem::Line(line), eol + 2)));
    };
    let parts: Vec<&str> = msg.split(' ').collect();
    let len: usize = parts
        .last()
        .and_then(|l| l.parse().ok())
        .ok_or("MSG without a length")?;
    let Some(payload) = rest.get(eol + 2..eol + 2 + len) else {
        return Ok(None);
    };
    if rest.len() < eol + 2 + len + 2 {
        return Ok(None);
    }
    let reply_to = (parts.len() == 4).then(|| parts[2]);
    Ok(Some((
        NatsItem::Msg { reply_to, payload },
        eol + 2 + len + 2,
    )))
}

/// Decodes `inbuf`, answering requests (responder) and the server's pings
/// into `out`; returns what it saw.
fn consume(
    proto: Proto,
    inbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    payload: &[u8],
) -> Result<Seen, String> {
    let mut seen = Seen::default();
    let mut pos = 0;
    match proto {
        Proto::Switchboard => loop {
            match decode(&inbuf[pos..], usize::MAX) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    match frame.verb().as_bytes() {
                        b"ACK" => seen.acks += 1,
                        b"RESULT" => seen.replies += 1,
                        b"PING" => out.extend_from_slice(b"PONG 0\n"),
                        b"REQUESTED" => {
                            let rid = frame.args().nth(2).ok_or("REQUESTED without a rid")?;
                            out.extend_from_slice(format!("REPLY {} ", payload.len()).as_bytes());
                            out.extend_from_slice(rid);
                            out.push(b'\n');
                            out.extend_from_slice(payload);
                            seen.replies += 1;
                        }
                        b"ERR" => {
                            return Err(format!(
                                "ERR {}",
                                String::from_utf8_lossy(frame.payload())
                            ));
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
                    NatsItem::Msg { reply_to, .. } => {
                        if let Some(to) = reply_to {
                            // A request: answer on its reply subject.
                            out.extend_from_slice(
                                format!("PUB {to} {}\r\n", payload.len()).as_bytes(),
                            );
                            out.extend_from_slice(payload);
                            out.extend_from_slice(b"\r\n");
                        }
                        seen.replies += 1;
                    }
                    NatsItem::Line("PING") => out.extend_from_slice(b"PONG\r\n"),
                    NatsItem::Line("PONG") => seen.acks += 1,
                    NatsItem::Line(l) if l.starts_with("-ERR") => return Err(l.to_owned()),
                    NatsItem::Line(_) => {}
                }
                pos += used;
            }
        }
    }
    inbuf.drain(..pos);
    Ok(seen)
}

pub(crate) fn run(args: ReqRepArgs) -> Result<(Report, bool), String> {
    let c = &args.common;
    let proto = match c.target {
        TargetKind::Switchboard => Proto::Switchboard,
        TargetKind::Nats => Proto::Nats,
        _ => return Err("bench reqrep speaks switchboard and nats only".into()),
    };
    let (r, w, depth) = (args.requesters, args.responders, args.depth);
    if r == 0 || w == 0 || depth == 0 {
        return Err("--requesters, --responders and --depth must be at least 1".into());
    }
    let duration = secs(args.duration, "--duration")?;
    let timeout = c.timeout()?;
    let endpoint = c.endpoint(c.tls)?;
    let mut report = Report::new("reqrep");
    c.describe(&mut report, endpoint.addr, c.tls);
    report.param("requesters", r);
    report.param("responders", w);
    report.param("depth", depth);
    report.param("payload_bytes", args.payload);
    let target = c.target()?;
    let target = target.as_ref();
    let mut net = Net::new(endpoint)?;
    let payload = vec![b'r'; args.payload];
    // Setup: every connection's acknowledgements, read by this scenario's
    // own decoder (the generic one knows no REQUESTED).
    let setup_acks = match proto {
        Proto::Switchboard => 2,
        Proto::Nats => 1,
    };
    establish(
        &mut net,
        target,
        w,
        Instant::now() + timeout,
        |i, out| proto.setup_responder(out, i),
        |_| setup_acks,
    )?;
    establish(
        &mut net,
        target,
        r,
        Instant::now() + timeout,
        |i, out| proto.setup_requester(out, i),
        |_| 1,
    )?;
    let cpu_before = c.server_pid.map(proc::cpu_us).transpose()?;
    let start = Instant::now();
    let end = start + duration;
    let hard = end + timeout;
    let mut outstanding: Vec<VecDeque<Instant>> = vec![VecDeque::new(); r];
    for (k, q) in outstanding.iter_mut().enumerate() {
        let conn = &mut net.conns[w + k];
        for _ in 0..depth {
            proto.request(&mut conn.out, k, &payload);
            q.push_back(Instant::now());
        }
        conn.flush()
            .map_err(|e| format!("requester {}: {e}", k + 1))?;
    }
    let mut done = 0u64;
    let mut hist = Histogram::new();
    let mut ready = Vec::new();
    let mut waiting = r * depth;
    while waiting > 0 {
        if Instant::now() >= hard {
            return Err(format!("{waiting} requests unanswered after the timeout"));
        }
        net.poll(Duration::from_millis(10), &mut ready)?;
        for &i in &ready {
            let conn = &mut net.conns[i];
            let seen = consume(proto, &mut conn.inbuf, &mut conn.out, &payload)
                .map_err(|e| format!("connection {}: {e}", i + 1))?;
            if let Some(k) = i.checked_sub(w) {
                let read_at = conn.read_at;
                for _ in 0..seen.replies {
                    let Some(sent) = outstanding[k].pop_front() else {
                        return Err(format!("requester {}: a reply it did not ask for", k + 1));
                    };
                    hist.record_duration(read_at.saturating_duration_since(sent));
                    done += 1;
                    if read_at < end {
                        proto.request(&mut conn.out, k, &payload);
                        outstanding[k].push_back(Instant::now());
                    } else {
                        waiting -= 1;
                    }
                }
            }
            if conn.closed {
                return Err(format!("connection {}: closed by the server", i + 1));
            }
            conn.flush()
                .map_err(|e| format!("connection {}: {e}", i + 1))?;
        }
    }
    let elapsed = start.elapsed();
    let cpu_after = c.server_pid.map(proc::cpu_us).transpose()?;
    net.close_all();
    report.figure("requests", done);
    report.figure("elapsed_s", elapsed.as_secs_f64());
    report.figure("requests_per_s", rate(done, elapsed));
    hist.report(&mut report);
    report.server_cpu(cpu_before, cpu_after, "server_cpu_us_per_request", done);
    Ok((report, c.json))
}
