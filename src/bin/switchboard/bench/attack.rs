//! `bench attack`: one hostile client (or a bounded set of connections of
//! the bench) against a running switchboard server, and beside it one
//! well-behaved logged-in client that sends `PING` and waits for `PONG`, one
//! after another, for the whole attack (issue 10; protocol.md 7a, "Loop
//! time": its round trip should stay in the low milliseconds).
//!
//! The pinging client (and, for `passwords`, a client that logs in again and
//! again) runs on its own thread with a blocking socket, so the attack's own
//! work in the bench never sits between its `PING` and the `PONG`. The
//! flooding publisher of `fanout` and `slow-consumers` has two threads of
//! its own too ([`Flooder`]: one writes, one reads the ACKs). The rest runs
//! on the main thread: the subscribers, watchers and listing sessions on
//! mio polls ([`super::net`]), `leave` with one blocking socket, `passwords`
//! on a poll of its own (its connections are bound to other loopback
//! addresses, which [`super::net::Net`] cannot do). Every attack is bounded
//! in connections and threads and stops at `--duration`; every connection
//! is closed at the end.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use switchboard::proto::{Decoded, decode};

use super::net::{Conn, Endpoint, Net, establish, events};
use super::report::{Histogram, Report, rate};
use super::target::{Event, MAX_PAYLOAD, Switchboard, Target};
use super::{CommonArgs, TargetKind, proc, secs};

/// A round trip above this breaks issue 10's target; the report counts them.
const TARGET: Duration = Duration::from_millis(50);
/// Groups a `SUBSCRIBE` frame names at most (a frame has 64 arguments).
const SUBSCRIBE_CHUNK: u32 = 64;
/// Groups a `PUBLISH` frame names at most.
const MAX_PUBLISH_GROUPS: u32 = switchboard::proto::command::MAX_PUBLISH_GROUPS as u32;
/// A flooding connection writes its frames this many bytes at a time.
const FLOOD_BYTES: usize = 64 * 1024;
/// How often the threads of the bench look at their stop flag.
const TICK: Duration = Duration::from_millis(100);
/// slow-consumers: PUBLISH frames the publisher has unacknowledged at most
/// (a flood all the same: the server always has a full read step of them;
/// but its ACKs stay far below any --max-pending, so it is never a slow
/// consumer itself).
const PUBLISH_WINDOW: u64 = 1024;
/// How often the server's memory is read (with `--server-pid`).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The well-behaved login waits this long before it retries after `ERR busy`.
const BUSY_RETRY: Duration = Duration::from_millis(10);

const SERVER_FLAGS: &str = "\
Every kind needs a switchboard server already running on plain TCP, started \
with the flags below (plus whatever limits are under test). Each attack is \
bounded (connections, --duration) and closes everything at the end.

  fanout          serve --open-groups
    N subscribers (--subscribers, default 1000) each subscribe to groups 1..63 \
(--groups) and read everything they receive. One attacker pipelines \
PUBLISH frames naming all those groups, unpaced: from a thread of its \
own, as fast as its socket takes them, for the whole run; and it reads its \
ACKs on another (an attacker that does not read is read no further by the \
server once its ACKs back up, which ends the attack; reading keeps the \
server working flat out).
  leave           serve --open-groups
    One session subscribes to --groups open groups (default 10000, the \
server's default --max-subscriptions; 64 a frame, pipelined), waits for the \
ACKs, disconnects, and again, for the whole run.
  passwords       serve --auth password --passwd FILE
    FILE must hold --user with --password (switchboard passwd FILE USER \
--password P). The pinging client logs in with them first. --connections \
(default 400) connections from 127.0.0.2 (--sources N: spread over \
127.0.0.2 upwards) send USER and a wrong PASS without waiting; each sends \
another wrong PASS as soon as one is answered with ERR busy, and reconnects \
when the server closes it after a failure, so that many checks are always \
asked for. A second well-behaved client logs in with --user and --password \
again and again (after ERR busy it retries 10 ms later); its login time is \
reported apart from the round trip.
  listing         serve --open-groups
    --groups groups (default 10000) are created by sessions subscribing to \
them (--groups-per-session each, default 10000: the server's default \
--max-subscriptions; more groups take more sessions, up to the server's \
--max-open-groups). Then --sessions sessions (default 100) pipeline GROUPS 0 \
and never read.
  slow-consumers  serve --open-groups   (or --group G=NAME)
    --subscribers (default 50) subscribe to group --group (default 1) and \
never read; one publisher floods small PUBLISH frames (--payload bytes, \
default 1; 1,024 unacknowledged at a time, reading its ACKs) until the server cuts them off as slow consumers (its --max-pending bounds \
what it holds for each); a session watching the group sees each one PARTED, \
and the bench reconnects it at once, for the whole run.
  none            serve
    No attack: the pinging client alone, the baseline of the machine (with \
--password, and a server with --auth password, the logging-in client too).

Reported for the pinging client: round trips, p50, p99 and maximum round \
trip, how many took over 50 ms (issue 10's target) and when the first ten \
of those started (seconds into the attack: duration). With --server-pid, \
the server's resident memory (before, and the highest seen, read every \
100 ms) and CPU time over the run.";

/// The attack.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Pipelined PUBLISH frames naming 63 groups that N subscribers share.
    Fanout,
    /// A session in N open groups disconnects, again and again.
    Leave,
    /// Many connections sending USER and a wrong PASS.
    Passwords,
    /// Sessions pipelining GROUPS 0 without reading, many groups existing.
    Listing,
    /// Subscribers that never read, cut off as slow consumers, reconnecting.
    SlowConsumers,
    /// No attack: the pinging client alone, a baseline for the machine.
    None,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Fanout => "fanout",
            Self::Leave => "leave",
            Self::Passwords => "passwords",
            Self::Listing => "listing",
            Self::SlowConsumers => "slow-consumers",
            Self::None => "none",
        }
    }
}

#[derive(clap::Args, Debug)]
#[command(after_long_help = SERVER_FLAGS)]
pub(crate) struct AttackArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The attack (the server flags each needs are at the end of --help).
    #[arg(long, value_enum, value_name = "KIND")]
    kind: Kind,
    /// Seconds to run the attack, with the pinging client beside it.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    /// fanout: subscribers of the groups [default: 1000]; slow-consumers:
    /// subscribers that never read [default: 50].
    #[arg(long, value_name = "N")]
    subscribers: Option<usize>,
    /// fanout: groups each PUBLISH names, at most 63 [default: 63]; leave:
    /// groups the session subscribes to before it leaves [default: 10000];
    /// listing: groups created before the listing [default: 10000].
    #[arg(long, value_name = "N")]
    groups: Option<u32>,
    /// listing: groups each of the sessions that create them subscribes to
    /// (at most the server's --max-subscriptions).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    groups_per_session: u32,
    /// listing: sessions pipelining GROUPS 0 without reading.
    #[arg(long, value_name = "N", default_value_t = 100)]
    sessions: usize,
    /// passwords: the attacker's connections.
    #[arg(long, value_name = "N", default_value_t = 400)]
    connections: usize,
    /// passwords: source addresses (127.0.0.2 upwards, 1 to 250) the
    /// attacker's connections are spread over.
    #[arg(long, value_name = "N", default_value_t = 1)]
    sources: u8,
    /// slow-consumers: payload bytes of each PUBLISH.
    #[arg(long, value_name = "BYTES", default_value_t = 1)]
    payload: usize,
    /// slow-consumers: the group subscribed to and flooded.
    #[arg(long, value_name = "G", default_value_t = 1)]
    group: u32,
    /// The well-behaved clients' user name [default: PREFIXping]; passwords:
    /// a user of the server's password file (needed).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Password of --user: the well-behaved clients log in with it (needed
    /// for passwords).
    #[arg(long, value_name = "PASSWORD")]
    password: Option<String>,
    /// User names of the bench's other sessions start with this.
    #[arg(long, value_name = "PREFIX", default_value = "atk")]
    user_prefix: String,
}

pub(crate) fn run(args: AttackArgs) -> Result<(Report, bool), String> {
    let c = &args.common;
    if c.target != TargetKind::Switchboard {
        return Err("attack runs against this server only: --target switchboard".into());
    }
    if c.tls || c.cert.is_some() {
        return Err("attack runs over plain TCP only (no --tls)".into());
    }
    let duration = secs(args.duration, "--duration")?;
    let timeout = c.timeout()?;
    let endpoint = c.endpoint(false)?;
    let mut report = Report::new("attack");
    c.describe(&mut report, endpoint.addr, false);
    report.param("kind", args.kind.name());
    report.param("duration_s", duration.as_secs_f64());

    let ping_user = args
        .user
        .clone()
        .unwrap_or_else(|| format!("{}ping", args.user_prefix));
    let login = Login {
        user: ping_user,
        password: args.password.clone(),
    };
    if args.kind == Kind::Passwords && login.password.is_none() {
        return Err(
            "--kind passwords needs --user and --password: a user of the \
                    server's --passwd file"
                .into(),
        );
    }
    // The pinging client logs in before the attack is set up.
    let mut pinger = Line::connect(endpoint.addr, None, timeout)?;
    pinger
        .login(&login, Instant::now() + timeout)
        .map_err(|e| format!("the pinging client's login: {e}"))?;
    let mut run = Run {
        endpoint,
        duration,
        timeout,
        report,
        monitor: Monitor::new(c.server_pid)?,
        pinger: Some(pinger),
        login,
    };
    match args.kind {
        Kind::Fanout => fanout(&args, &mut run)?,
        Kind::Leave => leave(&args, &mut run)?,
        Kind::Passwords => passwords(&args, &mut run)?,
        Kind::Listing => listing(&args, &mut run)?,
        Kind::SlowConsumers => slow_consumers(&args, &mut run)?,
        Kind::None => {
            // With --password, the logins too (the baseline of passwords).
            let mut window = run.start_pinger()?;
            if run.login.password.is_some() {
                run.start_logins(&mut window)?;
            }
            while window.running() {
                run.monitor.sample();
                thread::sleep(Duration::from_millis(10));
            }
            let logins = window.finish_logins()?;
            run.finish(window)?;
            if let Some(l) = logins {
                l.report(&mut run.report);
            }
        }
    }
    Ok((run.report, c.json))
}

/// Who the well-behaved clients are.
#[derive(Debug, Clone)]
struct Login {
    user: String,
    password: Option<String>,
}

/// What every kind shares: where, how long, the report, and the pinging
/// client (logged in, idle until [`Run::start_pinger`]).
struct Run {
    endpoint: Endpoint,
    duration: Duration,
    timeout: Duration,
    report: Report,
    monitor: Monitor,
    pinger: Option<Line>,
    login: Login,
}

impl Run {
    fn addr(&self) -> SocketAddr {
        self.endpoint.addr
    }

    /// A deadline for a setup phase.
    fn setup_deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Starts the pinging client's thread and the server readings; the
    /// attack starts now and ends at the returned [`Window::end`].
    fn start_pinger(&mut self) -> Result<Window, String> {
        let line = self
            .pinger
            .take()
            .ok_or("the pinging client was started twice")?;
        let stop = Arc::new(AtomicBool::new(false));
        let timeout = self.timeout;
        let flag = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("pinger".into())
            .spawn(move || ping_loop(line, &flag, timeout))
            .map_err(|e| format!("cannot start the pinging thread: {e}"))?;
        self.monitor.begin()?;
        let start = Instant::now();
        Ok(Window {
            start,
            end: start + self.duration,
            stop,
            threads: vec![],
            pinger: Some(handle),
        })
    }

    /// Starts the client that logs in again and again (passwords).
    fn start_logins(&self, window: &mut Window) -> Result<(), String> {
        let (addr, timeout) = (self.addr(), self.timeout);
        let login = self.login.clone();
        let stop = Arc::clone(&window.stop);
        let handle = thread::Builder::new()
            .name("login".into())
            .spawn(move || login_loop(addr, &login, &stop, timeout))
            .map_err(|e| format!("cannot start the login thread: {e}"))?;
        window.threads.push(handle);
        Ok(())
    }

    /// Stops the pinging client and puts its figures and the server's in
    /// the report.
    fn finish(&mut self, mut window: Window) -> Result<(), String> {
        let elapsed = window.start.elapsed();
        window.stop.store(true, Ordering::Relaxed);
        let stats = window
            .pinger
            .take()
            .ok_or("no pinging thread")?
            .join()
            .map_err(|_| "the pinging thread panicked".to_string())??;
        self.monitor.end(&mut self.report, elapsed)?;
        let r = &mut self.report;
        r.figure("ping_round_trips", stats.trips);
        r.figure("ping_rtt_p50_us", stats.hist.quantile_us(0.50));
        r.figure("ping_rtt_p99_us", stats.hist.quantile_us(0.99));
        r.figure("ping_rtt_max_us", stats.hist.max_us());
        r.figure("ping_rtt_over_50ms", stats.over);
        if !stats.slow.is_empty() {
            let list: Vec<String> = stats
                .slow
                .iter()
                .map(|(at, rtt)| format!("{:.2}s:{}ms", at.as_secs_f64(), rtt.as_millis()))
                .collect();
            r.figure("ping_over_50ms_at", list.join(" "));
        }
        r.figure("elapsed_s", elapsed.as_secs_f64());
        Ok(())
    }
}

/// The attack's time window and the well-behaved threads beside it.
struct Window {
    start: Instant,
    end: Instant,
    stop: Arc<AtomicBool>,
    pinger: Option<JoinHandle<Result<PingStats, String>>>,
    threads: Vec<JoinHandle<Result<LoginStats, String>>>,
}

impl Window {
    fn running(&self) -> bool {
        Instant::now() < self.end
    }

    /// Stops the logging-in client, if one ran, and returns its figures.
    fn finish_logins(&mut self) -> Result<Option<LoginStats>, String> {
        self.stop.store(true, Ordering::Relaxed);
        let Some(handle) = self.threads.pop() else {
            return Ok(None);
        };
        let stats = handle
            .join()
            .map_err(|_| "the login thread panicked".to_string())??;
        Ok(Some(stats))
    }
}

impl Drop for Window {
    /// A failed attack still stops its threads.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct PingStats {
    hist: Histogram,
    trips: u64,
    over: u64,
    /// The first few round trips over [`TARGET`]: when they started
    /// (seconds into the attack) and how long they took.
    slow: Vec<(Duration, Duration)>,
}

/// Round trips over the target listed in the report at most.
const SLOW_LISTED: usize = 10;

/// `PING` and wait for `PONG`, one after another, until `stop`.
fn ping_loop(mut line: Line, stop: &AtomicBool, timeout: Duration) -> Result<PingStats, String> {
    let mut stats = PingStats {
        hist: Histogram::new(),
        trips: 0,
        over: 0,
        slow: Vec::new(),
    };
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        line.send(b"PING 0\n")?;
        line.until(sent + timeout, |ev| match ev {
            Event::Pong => Ok(true),
            Event::Refused(why) => Err(format!("PING refused: {why}")),
            _ => Ok(false),
        })
        .map_err(|e| format!("the pinging client, after {} round trips: {e}", stats.trips))?;
        let rtt = line.read_at.saturating_duration_since(sent);
        stats.hist.record_duration(rtt);
        stats.trips += 1;
        if rtt > TARGET {
            stats.over += 1;
            if stats.slow.len() < SLOW_LISTED {
                stats.slow.push((sent - start, rtt));
            }
        }
    }
    Ok(stats)
}

/// The server's memory and CPU time over the attack (`--server-pid`).
struct Monitor {
    pid: Option<u32>,
    rss_before: u64,
    rss_max: u64,
    cpu_before: u64,
    next: Instant,
}

impl Monitor {
    fn new(pid: Option<u32>) -> Result<Self, String> {
        if let Some(pid) = pid {
            proc::rss_kib(pid)?;
        }
        Ok(Self {
            pid,
            rss_before: 0,
            rss_max: 0,
            cpu_before: 0,
            next: Instant::now(),
        })
    }

    fn begin(&mut self) -> Result<(), String> {
        if let Some(pid) = self.pid {
            self.rss_before = proc::rss_kib(pid)?;
            self.rss_max = self.rss_before;
            self.cpu_before = proc::cpu_us(pid)?;
            self.next = Instant::now() + SAMPLE_EVERY;
        }
        Ok(())
    }

    /// Reads the server's memory if a reading is due.
    fn sample(&mut self) {
        let Some(pid) = self.pid else {
            return;
        };
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + SAMPLE_EVERY;
        if let Ok(rss) = proc::rss_kib(pid) {
            self.rss_max = self.rss_max.max(rss);
        }
    }

    fn end(&mut self, report: &mut Report, elapsed: Duration) -> Result<(), String> {
        let Some(pid) = self.pid else {
            return Ok(());
        };
        self.next = Instant::now();
        self.sample();
        let cpu = proc::cpu_us(pid)?.saturating_sub(self.cpu_before);
        report.figure("server_rss_before_kib", self.rss_before);
        report.figure("server_rss_max_kib", self.rss_max);
        report.figure("server_cpu_us", cpu);
        report.figure(
            "server_cpu_cores",
            cpu as f64 / (elapsed.as_micros().max(1) as f64),
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Frames and a blocking client
// ---------------------------------------------------------------------------

/// Appends `VERB LEN ARGS\nPAYLOAD` (`args` already space-separated).
fn frame(out: &mut Vec<u8>, verb: &str, args: &str, payload: &[u8]) {
    out.extend_from_slice(verb.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    if !args.is_empty() {
        out.push(b' ');
        out.extend_from_slice(args.as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(payload);
}

/// `first..=last` as space-separated numbers.
fn group_list(first: u32, last: u32) -> String {
    let list: Vec<String> = (first..=last).map(|g| g.to_string()).collect();
    list.join(" ")
}

/// `SUBSCRIBE` frames for groups `first..=last`, 64 a frame; their count.
fn subscribe_frames(out: &mut Vec<u8>, first: u32, last: u32) -> usize {
    let mut frames = 0;
    let mut g = first;
    while g <= last {
        let end = last.min(g.saturating_add(SUBSCRIBE_CHUNK - 1));
        frame(out, "SUBSCRIBE", &group_list(g, end), b"");
        frames += 1;
        match end.checked_add(1) {
            Some(next) => g = next,
            None => break,
        }
    }
    frames
}

/// The hint a refusal of groups deserves.
fn hint(e: String) -> String {
    if e.contains("unknown-group") {
        format!("{e} (start the server with --open-groups)")
    } else if e.contains("limit") {
        format!(
            "{e} (a server limit: --max-subscriptions, --max-open-groups, --max-sessions-per-user)"
        )
    } else {
        e
    }
}

/// One blocking connection (the well-behaved clients, `leave`,
/// slow-consumer subscribers): decodes what it reads into [`Event`]s and
/// answers the server's pings itself.
struct Line {
    sock: TcpStream,
    inbuf: Vec<u8>,
    scratch: Vec<u8>,
    /// When input was last read.
    read_at: Instant,
}

impl Line {
    /// Connects to `addr`, from `from` if given (any 127.x.y.z is this
    /// machine's loopback).
    fn connect(addr: SocketAddr, from: Option<IpAddr>, timeout: Duration) -> Result<Self, String> {
        let sock = match from {
            None => TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| format!("cannot connect to {addr}: {e}"))?,
            Some(ip) => connect_from(ip, addr, timeout)?,
        };
        let _ = sock.set_nodelay(true);
        Ok(Self {
            sock,
            inbuf: Vec::new(),
            scratch: vec![0; 64 * 1024],
            read_at: Instant::now(),
        })
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.sock
            .write_all(bytes)
            .map_err(|e| format!("write: {e}"))
    }

    /// Reads and decodes until `f` returns true for an event (the events
    /// after it stay buffered), or fails at `deadline`.
    fn until(
        &mut self,
        deadline: Instant,
        mut f: impl FnMut(Event<'_>) -> Result<bool, String>,
    ) -> Result<(), String> {
        loop {
            let mut pos = 0;
            let mut pings = 0;
            let mut done = false;
            let mut failed = None;
            while let Some((ev, n)) = Switchboard.decode(&self.inbuf[pos..])? {
                pos += n;
                if let Event::Ping = ev {
                    pings += 1;
                    continue;
                }
                match f(ev) {
                    Ok(true) => {
                        done = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            self.inbuf.drain(..pos);
            for _ in 0..pings {
                self.send(b"PONG 0\n")?;
            }
            if let Some(e) = failed {
                return Err(e);
            }
            if done {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("no answer before the deadline (--timeout)".into());
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(|e| format!("set_read_timeout: {e}"))?;
            match self.sock.read(&mut self.scratch) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => {
                    self.read_at = Instant::now();
                    self.inbuf.extend_from_slice(&self.scratch[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err("no answer before the deadline (--timeout)".into());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Waits for `n` acknowledgements; a refusal fails.
    fn acks(&mut self, n: usize, deadline: Instant) -> Result<(), String> {
        let mut left = n;
        if left == 0 {
            return Ok(());
        }
        self.until(deadline, |ev| match ev {
            Event::Ok => {
                left -= 1;
                Ok(left == 0)
            }
            Event::Refused(why) => Err(format!("refused: {why}")),
            _ => Ok(false),
        })
    }

    /// Logs in (`USER`, then `PASS` with a password; after `ERR busy` the
    /// `PASS` is sent again [`BUSY_RETRY`] later). Returns how many times
    /// it was busy.
    fn login(&mut self, login: &Login, deadline: Instant) -> Result<u64, String> {
        let mut out = Vec::new();
        frame(&mut out, "USER", &login.user, b"");
        let pass = login.password.as_ref().map(|p| {
            let mut f = Vec::new();
            frame(&mut f, "PASS", "", p.as_bytes());
            f
        });
        if let Some(p) = &pass {
            out.extend_from_slice(p);
        }
        self.send(&out)?;
        self.acks(1, deadline)?;
        let Some(pass) = pass else {
            return Ok(0);
        };
        let mut busy = 0;
        loop {
            let mut verdict = None;
            self.until(deadline, |ev| match ev {
                Event::Ok => {
                    verdict = Some(Ok(()));
                    Ok(true)
                }
                Event::Refused(why) => {
                    verdict = Some(Err(why));
                    Ok(true)
                }
                _ => Ok(false),
            })?;
            match verdict {
                Some(Ok(())) => return Ok(busy),
                Some(Err(why)) if why.starts_with("busy") => {
                    busy += 1;
                    thread::sleep(BUSY_RETRY);
                    self.send(&pass)?;
                }
                Some(Err(why)) => return Err(format!("PASS refused: {why}")),
                None => return Err("no verdict".into()),
            }
        }
    }
}

/// A blocking connection from `from` to `to`.
fn connect_from(from: IpAddr, to: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| format!("socket: {e}"))?;
    s.bind(&SockAddr::from(SocketAddr::new(from, 0)))
        .map_err(|e| format!("cannot bind to {from}: {e}"))?;
    s.connect_timeout(&SockAddr::from(to), timeout)
        .map_err(|e| format!("cannot connect to {to} from {from}: {e}"))?;
    Ok(s.into())
}

/// Raw frames of a mio connection, decoded and dropped: `f(verb, args)`
/// for each, the server's pings answered.
fn raw_frames(conn: &mut Conn, mut f: impl FnMut(&[u8], &[&[u8]])) -> Result<(), String> {
    let mut pos = 0;
    let mut pings = 0;
    loop {
        match decode(&conn.inbuf[pos..], MAX_PAYLOAD) {
            Ok(Decoded::Frame { frame, consumed }) => {
                pos += consumed;
                let verb = frame.verb();
                if verb.as_bytes() == b"PING" {
                    pings += 1;
                    continue;
                }
                let args: Vec<&[u8]> = frame.args().collect();
                f(verb.as_bytes(), &args);
            }
            Ok(Decoded::Incomplete { .. }) => break,
            Err(e) => return Err(format!("undecodable frame from the server: {e}")),
        }
    }
    conn.inbuf.drain(..pos);
    for _ in 0..pings {
        conn.out.extend_from_slice(b"PONG 0\n");
    }
    Ok(())
}

/// A flooding client on two threads of its own, so that the bench's other
/// work (reading a thousand subscribers) never lets its socket run dry: one
/// writes the same frame again and again, without pacing or with at most
/// `window` unacknowledged; the other reads and counts the ACKs (a client
/// that does not read its replies is read no further by the server). It
/// never answers the server's keep-alive `PING`: the server pings only a
/// silent connection, and this one never is.
struct Flooder {
    stop: Arc<AtomicBool>,
    writer: Option<JoinHandle<Result<u64, String>>>,
    reader: Option<JoinHandle<Result<FloodAcks, String>>>,
}

/// What the flooder's reader saw.
struct FloodAcks {
    acks: u64,
    /// The server closed the connection before the end.
    closed: bool,
}

impl Flooder {
    /// Logs in as `user` on a new connection and starts sending `frame`.
    fn start(
        addr: SocketAddr,
        user: &str,
        frame: Vec<u8>,
        window: Option<u64>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut line = Line::connect(addr, None, timeout)?;
        let login = Login {
            user: user.to_string(),
            password: None,
        };
        line.login(&login, Instant::now() + timeout)
            .map_err(|e| format!("the attacker's login: {e}"))?;
        let mut wsock = line
            .sock
            .try_clone()
            .map_err(|e| format!("cannot clone a socket: {e}"))?;
        let mut rsock = line.sock;
        for (sock, what) in [(&wsock, "write"), (&rsock, "read")] {
            let set = if what == "write" {
                sock.set_write_timeout(Some(TICK))
            } else {
                sock.set_read_timeout(Some(TICK))
            };
            set.map_err(|e| format!("set_{what}_timeout: {e}"))?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicU64::new(0));
        let (stop_w, acks_w) = (Arc::clone(&stop), Arc::clone(&acks));
        let writer = thread::Builder::new()
            .name("flood-write".into())
            .spawn(move || {
                let per = frame.len() as u64;
                let batch = frame.repeat((FLOOD_BYTES / frame.len()).max(1));
                let (mut written, mut off) = (0u64, 0usize);
                while !stop_w.load(Ordering::Relaxed) {
                    let mut end = batch.len();
                    if let Some(w) = window {
                        let in_flight =
                            (written / per).saturating_sub(acks_w.load(Ordering::Relaxed));
                        if in_flight >= w {
                            thread::sleep(Duration::from_micros(200));
                            continue;
                        }
                        let room = (w - in_flight) * per - written % per;
                        end = end.min(off + room as usize);
                    }
                    match wsock.write(&batch[off..end]) {
                        Ok(n) => {
                            written += n as u64;
                            off = (off + n) % batch.len();
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::WouldBlock
                                    | ErrorKind::TimedOut
                                    | ErrorKind::Interrupted
                            ) => {}
                        // The reader reports the close.
                        Err(_) => break,
                    }
                }
                Ok(written / per)
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        let stop_r = Arc::clone(&stop);
        let reader = thread::Builder::new()
            .name("flood-read".into())
            .spawn(move || {
                let mut inbuf = Vec::new();
                let mut scratch = vec![0u8; 64 * 1024];
                let mut closed = false;
                while !stop_r.load(Ordering::Relaxed) {
                    match rsock.read(&mut scratch) {
                        Ok(0) => {
                            closed = true;
                            break;
                        }
                        Ok(n) => inbuf.extend_from_slice(&scratch[..n]),
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::WouldBlock
                                    | ErrorKind::TimedOut
                                    | ErrorKind::Interrupted
                            ) =>
                        {
                            continue;
                        }
                        Err(_) => {
                            closed = true;
                            break;
                        }
                    }
                    let mut pos = 0;
                    while let Some((ev, n)) = Switchboard.decode(&inbuf[pos..])? {
                        pos += n;
                        match ev {
                            Event::Ok => {
                                acks.fetch_add(1, Ordering::Relaxed);
                            }
                            Event::Refused(why) => {
                                return Err(hint(format!("the attacker's PUBLISH refused: {why}")));
                            }
                            _ => {}
                        }
                    }
                    inbuf.drain(..pos);
                }
                Ok(FloodAcks {
                    acks: acks.load(Ordering::Relaxed),
                    closed,
                })
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        Ok(Self {
            stop,
            writer: Some(writer),
            reader: Some(reader),
        })
    }

    /// Stops; frames sent (whole), ACKs, whether the server closed it.
    fn finish(mut self) -> Result<(u64, FloodAcks), String> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = join(self.writer.take())?;
        let acks = join(self.reader.take())?;
        Ok((sent, acks))
    }
}

/// Joins a flooding thread and returns its result.
fn join<T>(h: Option<JoinHandle<Result<T, String>>>) -> Result<T, String> {
    h.ok_or("no flooding thread")?
        .join()
        .map_err(|_| "a flooding thread panicked".to_string())?
}

impl Drop for Flooder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Counts the frames of type `verb` in a connection's input and drops
/// them, reading only each header's `TYPE LEN` (a full decode of 63-group
/// `PUBLISHED` headers made the bench, not the server, the bottleneck);
/// answers the server's pings.
fn skim(conn: &mut Conn, verb: &[u8]) -> Result<u64, String> {
    let buf = &conn.inbuf;
    let (mut pos, mut count, mut pings) = (0, 0u64, 0);
    while let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') {
        let mut tokens = buf[pos..pos + nl]
            .split(|&b| b == b' ')
            .filter(|t| !t.is_empty());
        let Some(v) = tokens.next() else {
            pos += nl + 1;
            continue;
        };
        let len: usize = tokens
            .next()
            .and_then(|t| std::str::from_utf8(t).ok()?.parse().ok())
            .ok_or("a frame header without a length from the server")?;
        let end = pos + nl + 1 + len;
        if end > buf.len() {
            break;
        }
        if v == verb {
            count += 1;
        } else if v == b"PING" {
            pings += 1;
        }
        pos = end;
    }
    conn.inbuf.drain(..pos);
    for _ in 0..pings {
        conn.out.extend_from_slice(b"PONG 0\n");
    }
    Ok(count)
}

// ---------------------------------------------------------------------------
// fanout
// ---------------------------------------------------------------------------

fn fanout(a: &AttackArgs, run: &mut Run) -> Result<(), String> {
    let n = a.subscribers.unwrap_or(1000);
    let groups = a.groups.unwrap_or(MAX_PUBLISH_GROUPS);
    if n == 0 {
        return Err("--subscribers must be at least 1".into());
    }
    if groups == 0 || groups > MAX_PUBLISH_GROUPS {
        return Err(format!(
            "--groups must be 1 to {MAX_PUBLISH_GROUPS} for fanout"
        ));
    }
    super::density::check_count(n + 2)?;
    run.report.param("subscribers", n);
    run.report.param("groups", u64::from(groups));
    let list = group_list(1, groups);
    let p = &a.user_prefix;
    let t = Switchboard;
    let mut net = Net::new(run.endpoint.clone())?;
    establish(
        &mut net,
        &t,
        n,
        run.setup_deadline(),
        |i, out| {
            frame(out, "USER", &format!("{p}sub{i}"), b"");
            frame(out, "SUBSCRIBE", &list, b"");
        },
        |_| 2,
    )
    .map_err(|e| hint(format!("setting up the subscribers: {e}")))?;
    let mut publish = Vec::new();
    frame(&mut publish, "PUBLISH", &list, b"x");

    let window = run.start_pinger()?;
    let flood = Flooder::start(run.addr(), &format!("{p}flood"), publish, None, run.timeout)?;
    let (mut deliveries, mut cut) = (0u64, 0u64);
    let mut alive = vec![true; n];
    let mut ready = Vec::new();
    while window.running() {
        net.poll(Duration::from_millis(10), &mut ready)?;
        for &idx in &ready {
            let conn = &mut net.conns[idx];
            deliveries += skim(conn, b"PUBLISHED").map_err(|e| format!("subscriber {idx}: {e}"))?;
            if conn.closed && alive[idx] {
                alive[idx] = false;
                cut += 1;
            }
            conn.flush().map_err(|e| format!("subscriber {idx}: {e}"))?;
        }
        run.monitor.sample();
    }
    let elapsed = window.start.elapsed();
    run.finish(window)?;
    let (sent, acked) = flood.finish()?;
    net.close_all();
    let r = &mut run.report;
    r.figure("publishes_sent", sent);
    r.figure("publishes_acked", acked.acks);
    r.figure("publishes_acked_per_s", rate(acked.acks, elapsed));
    r.figure("deliveries", deliveries);
    r.figure("deliveries_per_s", rate(deliveries, elapsed));
    r.figure("subscribers_cut", cut);
    r.figure("attacker_closed", acked.closed);
    Ok(())
}

// ---------------------------------------------------------------------------
// leave
// ---------------------------------------------------------------------------

fn leave(a: &AttackArgs, run: &mut Run) -> Result<(), String> {
    let groups = a.groups.unwrap_or(10_000);
    if groups == 0 {
        return Err("--groups must be at least 1".into());
    }
    run.report.param("groups", u64::from(groups));
    // Sent 64 frames (4,096 groups) at a time, each batch's ACKs read before
    // the next: a client that does not read its replies is read no further.
    let per_batch = SUBSCRIBE_CHUNK * 64;
    let mut batches: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut first = 1u32;
    loop {
        let last = groups.min(first.saturating_add(per_batch - 1));
        let mut out = Vec::new();
        let n = subscribe_frames(&mut out, first, last);
        batches.push((out, n));
        if last == groups {
            break;
        }
        first = last + 1;
    }
    let mut user = Vec::new();
    frame(&mut user, "USER", &format!("{}leave", a.user_prefix), b"");
    let addr = run.addr();
    let timeout = run.timeout;

    let window = run.start_pinger()?;
    let mut cycles = 0u64;
    let mut hist = Histogram::new();
    while window.running() {
        let t0 = Instant::now();
        let mut line = Line::connect(addr, None, timeout)?;
        for (i, (bytes, n)) in batches.iter().enumerate() {
            let mut extra = 0;
            if i == 0 {
                line.send(&user)?;
                extra = 1;
            }
            line.send(bytes)?;
            line.acks(n + extra, Instant::now() + timeout)
                .map_err(|e| hint(format!("cycle {}: {e}", cycles + 1)))?;
        }
        hist.record_duration(t0.elapsed());
        // The disconnect: the server leaves every group (and forgets them).
        drop(line);
        cycles += 1;
        run.monitor.sample();
    }
    run.finish(window)?;
    let r = &mut run.report;
    r.figure("cycles", cycles);
    r.figure("subscriptions_left", cycles * u64::from(groups));
    r.figure("subscribe_p50_us", hist.quantile_us(0.5));
    r.figure("subscribe_max_us", hist.max_us());
    Ok(())
}

// ---------------------------------------------------------------------------
// passwords
// ---------------------------------------------------------------------------

struct LoginStats {
    hist: Histogram,
    logins: u64,
    busy: u64,
}

impl LoginStats {
    fn report(&self, r: &mut Report) {
        r.figure("logins", self.logins);
        r.figure("login_busy_retries", self.busy);
        r.figure("login_p50_us", self.hist.quantile_us(0.50));
        r.figure("login_p99_us", self.hist.quantile_us(0.99));
        r.figure("login_max_us", self.hist.max_us());
    }
}

/// Logs in with `login` on a new connection, again and again until `stop`
/// (each session ends with `QUIT`).
fn login_loop(
    addr: SocketAddr,
    login: &Login,
    stop: &AtomicBool,
    timeout: Duration,
) -> Result<LoginStats, String> {
    let mut stats = LoginStats {
        hist: Histogram::new(),
        logins: 0,
        busy: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let mut line = Line::connect(addr, None, timeout)?;
        stats.busy += line
            .login(login, t0 + timeout)
            .map_err(|e| format!("the well-behaved login #{}: {e}", stats.logins + 1))?;
        stats
            .hist
            .record_duration(line.read_at.saturating_duration_since(t0));
        stats.logins += 1;
        let _ = line.send(b"QUIT 0\n");
    }
    Ok(stats)
}

/// One of the attacker's connections.
struct Hostile {
    sock: mio::net::TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    closed: bool,
}

impl Hostile {
    fn open(
        poll: &mio::Poll,
        i: usize,
        from: IpAddr,
        to: SocketAddr,
        timeout: Duration,
    ) -> Result<Self, String> {
        let std = connect_from(from, to, timeout)?;
        std.set_nonblocking(true)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
        let _ = std.set_nodelay(true);
        let mut sock = mio::net::TcpStream::from_std(std);
        poll.registry()
            .register(
                &mut sock,
                mio::Token(i),
                mio::Interest::READABLE | mio::Interest::WRITABLE,
            )
            .map_err(|e| format!("cannot register a socket: {e}"))?;
        Ok(Self {
            sock,
            inbuf: Vec::new(),
            out: Vec::new(),
            closed: false,
        })
    }

    fn read(&mut self, scratch: &mut [u8]) {
        loop {
            match self.sock.read(scratch) {
                Ok(0) => {
                    self.closed = true;
                    return;
                }
                Ok(n) => self.inbuf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    fn flush(&mut self) {
        let mut done = 0;
        while done < self.out.len() {
            match self.sock.write(&self.out[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        self.out.drain(..done);
    }
}

fn passwords(a: &AttackArgs, run: &mut Run) -> Result<(), String> {
    let n = a.connections;
    if n == 0 {
        return Err("--connections must be at least 1".into());
    }
    if a.sources == 0 || a.sources > 250 {
        return Err("--sources must be 1 to 250".into());
    }
    super::density::check_count(n + 3)?;
    run.report.param("connections", n);
    run.report.param("sources", u64::from(a.sources));
    run.report.param("user", run.login.user.as_str());
    let addr = run.addr();
    let timeout = run.timeout;
    let source =
        |i: usize| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % a.sources as usize) as u8));
    let mut user = Vec::new();
    frame(&mut user, "USER", &format!("{}mallory", a.user_prefix), b"");
    let wrong = b"PASS 0 wrong\n";

    let mut poll = mio::Poll::new().map_err(|e| format!("cannot create a poll: {e}"))?;
    let mut mio_events = mio::Events::with_capacity(1024);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(Hostile::open(&poll, i, source(i), addr, timeout)?);
    }

    let mut window = run.start_pinger()?;
    run.start_logins(&mut window)?;
    let (mut attempts, mut busy, mut failed, mut other, mut reconnects) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut first_other: Option<String> = None;
    for c in &mut conns {
        c.out.extend_from_slice(&user);
        c.out.extend_from_slice(wrong);
        attempts += 1;
        c.flush();
    }
    let mut scratch = vec![0u8; 64 * 1024];
    let t = Switchboard;
    while window.running() {
        match poll.poll(&mut mio_events, Some(Duration::from_millis(10))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        let ready: Vec<usize> = mio_events.iter().map(|e| e.token().0).collect();
        for i in ready {
            let Some(c) = conns.get_mut(i) else {
                continue;
            };
            c.read(&mut scratch);
            let mut pos = 0;
            while let Some((ev, used)) = t.decode(&c.inbuf[pos..])? {
                pos += used;
                match ev {
                    Event::Ping => c.out.extend_from_slice(b"PONG 0\n"),
                    Event::Refused(why) if why.starts_with("busy") => {
                        busy += 1;
                        c.out.extend_from_slice(wrong);
                        attempts += 1;
                    }
                    Event::Refused(why) if why.starts_with("auth-failed") => failed += 1,
                    Event::Refused(why) => {
                        other += 1;
                        first_other.get_or_insert(why);
                    }
                    _ => {}
                }
            }
            c.inbuf.drain(..pos);
            c.flush();
            if c.closed && window.running() {
                let _ = poll.registry().deregister(&mut c.sock);
                *c = Hostile::open(&poll, i, source(i), addr, timeout)?;
                c.out.extend_from_slice(&user);
                c.out.extend_from_slice(wrong);
                attempts += 1;
                reconnects += 1;
                c.flush();
            }
        }
        run.monitor.sample();
    }
    window.stop.store(true, Ordering::Relaxed);
    let logins = window.finish_logins()?.ok_or("no login thread")?;
    run.finish(window)?;
    drop(conns);
    let r = &mut run.report;
    r.figure("pass_attempts", attempts);
    r.figure("err_busy", busy);
    r.figure("err_auth_failed", failed);
    r.figure("other_refusals", other);
    if let Some(why) = first_other {
        r.figure("first_other_refusal", why);
    }
    r.figure("attacker_reconnects", reconnects);
    logins.report(r);
    Ok(())
}

// ---------------------------------------------------------------------------
// listing
// ---------------------------------------------------------------------------

fn listing(a: &AttackArgs, run: &mut Run) -> Result<(), String> {
    let groups = a.groups.unwrap_or(10_000);
    let per = a.groups_per_session;
    let n = a.sessions;
    if groups == 0 || per == 0 || n == 0 {
        return Err("--groups, --groups-per-session and --sessions must be at least 1".into());
    }
    let holders = groups.div_ceil(per) as usize;
    super::density::check_count(holders + n + 2)?;
    run.report.param("groups", u64::from(groups));
    run.report.param("holder_sessions", holders);
    run.report.param("sessions", n);
    let p = &a.user_prefix;
    let t = Switchboard;
    // Holder i subscribes to its share of 1..=groups, and stays.
    let share = |i: usize| {
        let first = i as u32 * per + 1;
        (first, groups.min(first + (per - 1)))
    };
    let mut holder_net = Net::new(run.endpoint.clone())?;
    establish(
        &mut holder_net,
        &t,
        holders,
        run.setup_deadline(),
        |i, out| {
            let (first, last) = share(i);
            frame(out, "USER", &format!("{p}hold{i}"), b"");
            subscribe_frames(out, first, last);
        },
        |i| {
            let (first, last) = share(i);
            1 + (last - first + 1).div_ceil(SUBSCRIBE_CHUNK) as usize
        },
    )
    .map_err(|e| hint(format!("creating the groups: {e}")))?;
    let mut list_net = Net::new(run.endpoint.clone())?;
    establish(
        &mut list_net,
        &t,
        n,
        run.setup_deadline(),
        |i, out| frame(out, "USER", &format!("{p}list{i}"), b""),
        |_| 1,
    )
    .map_err(|e| format!("the listing sessions' logins: {e}"))?;
    let request = b"GROUPS 0\n";
    let mut batch = Vec::new();
    for _ in 0..64 {
        batch.extend_from_slice(request);
    }

    let window = run.start_pinger()?;
    let mut queued = 0u64;
    let mut closed = 0u64;
    let mut dead = vec![false; n];
    let mut ready = Vec::new();
    while window.running() {
        // Never read: only write, as much as the sockets take.
        for (i, conn) in list_net.conns.iter_mut().enumerate() {
            if dead[i] {
                continue;
            }
            if conn.out.len() < 4096 {
                conn.out.extend_from_slice(&batch);
                queued += 64;
            }
            if conn.flush().is_err() {
                dead[i] = true;
                closed += 1;
            }
        }
        holder_net.poll(Duration::ZERO, &mut ready)?;
        for &idx in &ready {
            let conn = &mut holder_net.conns[idx];
            events(&t, conn, |_| Ok(()))?;
            if conn.closed {
                return Err(format!("the server closed group holder {idx}"));
            }
            conn.flush()?;
        }
        run.monitor.sample();
        thread::sleep(Duration::from_millis(5));
    }
    run.finish(window)?;
    let unsent: usize = list_net.conns.iter().map(|c| c.out.len()).sum();
    let sent = queued - (unsent / request.len()) as u64;
    list_net.close_all();
    holder_net.close_all();
    let r = &mut run.report;
    r.figure("groups_requests_sent", sent);
    r.figure("listing_sessions_closed", closed);
    Ok(())
}

// ---------------------------------------------------------------------------
// slow-consumers
// ---------------------------------------------------------------------------

fn slow_consumers(a: &AttackArgs, run: &mut Run) -> Result<(), String> {
    let n = a.subscribers.unwrap_or(50);
    let group = a.group;
    if n == 0 {
        return Err("--subscribers must be at least 1".into());
    }
    if group == 0 {
        return Err("--group must be 1 to 4294967295".into());
    }
    super::density::check_count(n + 3)?;
    run.report.param("subscribers", n);
    run.report.param("group", u64::from(group));
    run.report.param("payload_bytes", a.payload);
    let p = a.user_prefix.clone();
    let t = Switchboard;
    let g = group.to_string();
    let mut net = Net::new(run.endpoint.clone())?;
    // Watches the group: sees each subscriber PARTED.
    establish(
        &mut net,
        &t,
        1,
        run.setup_deadline(),
        |_, out| {
            frame(out, "USER", &format!("{p}watch"), b"");
            frame(out, "WATCH", &g, b"");
        },
        |_| 2,
    )
    .map_err(|e| hint(format!("the watching session: {e}")))?;
    let addr = run.addr();
    let timeout = run.timeout;
    let slow_name = format!("{p}slow");
    // Subscriber i's user name is PREFIXslow<i>.<generation>: a PARTED
    // for an earlier connection of the slot is told apart. None: cut off
    // before its SUBSCRIBE was answered (the server drops a slow
    // consumer's unsent replies with its backlog).
    let subscribe = |i: usize, generation: u64| -> Result<Option<Line>, String> {
        let mut line = Line::connect(addr, None, timeout)?;
        let mut out = Vec::new();
        frame(
            &mut out,
            "USER",
            &format!("{slow_name}{i}.{generation}"),
            b"",
        );
        frame(&mut out, "SUBSCRIBE", &g, b"");
        line.send(&out)?;
        // The two ACKs are read; nothing after them ever is.
        match line.acks(2, Instant::now() + timeout) {
            Ok(()) => Ok(Some(line)),
            Err(e) if e.contains("slow-consumer") || e.contains("closed") => Ok(None),
            Err(e) => Err(hint(format!("slow subscriber {i}: {e}"))),
        }
    };
    let mut generations = vec![0u64; n];
    let mut subs: Vec<Option<Line>> = Vec::with_capacity(n);
    for i in 0..n {
        let line = subscribe(i, 0)?.ok_or("a subscriber was cut off before any flood")?;
        subs.push(Some(line));
    }
    let mut publish = Vec::new();
    frame(&mut publish, "PUBLISH", &g, &vec![b'x'; a.payload]);

    let window = run.start_pinger()?;
    let flood = Flooder::start(
        addr,
        &format!("{p}pub"),
        publish,
        Some(PUBLISH_WINDOW),
        timeout,
    )?;
    let (mut cuts, mut setup_cuts) = (0u64, 0u64);
    let mut ready = Vec::new();
    while window.running() {
        net.poll(Duration::from_millis(10), &mut ready)?;
        let mut gone = Vec::new();
        if !ready.is_empty() {
            let conn = &mut net.conns[0];
            raw_frames(conn, |verb, args| {
                if verb == b"PARTED"
                    && let Some(i) = args
                        .first()
                        .and_then(|u| std::str::from_utf8(u).ok())
                        .and_then(|u| u.strip_prefix(slow_name.as_str()))
                        .and_then(|u| u.split_once('.'))
                        .and_then(|(i, g)| Some((i.parse::<usize>().ok()?, g.parse::<u64>().ok()?)))
                {
                    gone.push(i);
                }
            })?;
            if conn.closed {
                return Err("the server closed the watching session".into());
            }
            conn.flush()
                .map_err(|e| format!("the watching session: {e}"))?;
        }
        for (i, generation) in gone {
            if i >= n || generations[i] != generation {
                continue;
            }
            // Cut off: close ours (unread input, so a reset) and come back.
            subs[i] = None;
            cuts += 1;
            while window.running() {
                generations[i] += 1;
                match subscribe(i, generations[i])? {
                    Some(line) => {
                        subs[i] = Some(line);
                        break;
                    }
                    None => setup_cuts += 1,
                }
            }
        }
        run.monitor.sample();
    }
    let elapsed = window.start.elapsed();
    run.finish(window)?;
    let (sent, acked) = flood.finish()?;
    drop(subs);
    net.close_all();
    let r = &mut run.report;
    r.figure("publishes_sent", sent);
    r.figure("publishes_acked", acked.acks);
    r.figure("publishes_acked_per_s", rate(acked.acks, elapsed));
    r.figure("subscribers_cut", cuts);
    r.figure("cuts_per_s", rate(cuts, elapsed));
    r.figure("cut_before_subscribe_ack", setup_cuts);
    r.figure("publisher_closed", acked.closed);
    Ok(())
}
