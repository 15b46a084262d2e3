//! `STATS` (protocol.md section 10): the broker's counters, the connection
//! table's, and the process's, as one list of figures that the `STATS`
//! reply and the Prometheus exposition both print.
//!
//! Every figure is a counter bumped where the work happens or a gauge kept
//! up to date as things change (or a length the maps already know), so a
//! report costs a few dozen reads, whatever the number of connections.

use std::time::Instant;

use bytes::Bytes;

use super::{Broker, Sessions};
use crate::proto::frame;

/// The broker's own counters and gauges.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counters {
    pub(super) frames_in: u64,
    pub(super) published: u64,
    pub(super) delivered: u64,
    pub(super) slow_consumers: u64,
    pub(super) auth_failures: u64,
    pub(super) limits_refused: u64,
    /// Logged-in sessions (a gauge).
    pub(super) sessions: u64,
    /// Group subscriptions, all sessions together (a gauge).
    pub(super) subscriptions: u64,
    /// Directory probes started (`BIND`s and re-probes).
    pub(super) probes: u64,
    /// Directory probes that failed.
    pub(super) probe_failures: u64,
}

/// Figures of the whole process, which the embedding program knows and the
/// broker does not (see [`Broker::set_process_stats`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStats {
    /// Resident memory.
    pub rss_bytes: u64,
    /// Log lines dropped because the log sink was slow.
    pub log_lines_dropped: u64,
}

/// Whether a figure only grows (since start) or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Since start.
    Counter,
    /// Now.
    Gauge,
}

/// One figure of a [`Broker::stats`] report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figure {
    /// The `STATS` key (and, prefixed with `switchboard_`, the metric name).
    pub key: &'static str,
    /// Its value.
    pub value: u64,
    /// Counter or gauge.
    pub kind: Kind,
    /// One line saying what it is.
    pub help: &'static str,
}

impl Broker {
    /// Tells the broker where to get the process-wide figures of its
    /// `STATS` reply (`rss_bytes`, `log_lines_dropped`; 0 without it).
    pub fn set_process_stats(&mut self, source: fn() -> ProcessStats) {
        self.process_stats = Some(source);
    }

    /// Every figure of protocol.md section 10, in its order, as of `now`.
    /// Connections by transport come from the connection table's counts
    /// (which the IO layer keeps); WebSocket over TLS counts as WebSocket,
    /// not as TLS, so the three add up to `connections`.
    pub fn stats<T>(&self, links: &Sessions<T>, now: Instant) -> Vec<Figure> {
        let mut out = Vec::new();
        self.stats_into(links, now, &mut out);
        out
    }

    /// [`Broker::stats`] into `out` (cleared first), reusing its allocation.
    pub fn stats_into<T>(&self, links: &Sessions<T>, now: Instant, out: &mut Vec<Figure>) {
        let process = self.process_stats.map(|f| f()).unwrap_or_default();
        self.figures_into(links, now, out, process);
    }

    /// [`Broker::stats_into`] without asking the process's figures (they
    /// read `/proc`): `rss_bytes` and `log_lines_dropped` are 0, for the
    /// metrics snapshot taken every loop turn (the metrics service asks
    /// for them when it answers).
    pub(crate) fn stats_without_process_into<T>(
        &self,
        links: &Sessions<T>,
        now: Instant,
        out: &mut Vec<Figure>,
    ) {
        self.figures_into(links, now, out, ProcessStats::default());
    }

    fn figures_into<T>(
        &self,
        links: &Sessions<T>,
        now: Instant,
        out: &mut Vec<Figure>,
        process: ProcessStats,
    ) {
        use Kind::{Counter, Gauge};
        let io = links.stats();
        let c = &self.counters;
        let connections = links.len() as u64;
        let tls = io.open_tls.min(connections);
        let ws = io.open_ws.min(connections - tls);
        let figure = |key, value, kind, help| Figure {
            key,
            value,
            kind,
            help,
        };
        out.clear();
        out.extend([
            figure(
                "uptime_s",
                now.saturating_duration_since(self.started).as_secs(),
                Gauge,
                "Seconds since the server started.",
            ),
            figure(
                "connections",
                connections,
                Gauge,
                "Open connections (closing ones included).",
            ),
            figure(
                "connections_tcp",
                connections - tls - ws,
                Gauge,
                "Open plain TCP connections.",
            ),
            figure("connections_tls", tls, Gauge, "Open TLS connections."),
            figure(
                "connections_ws",
                ws,
                Gauge,
                "Open WebSocket connections (ws and wss).",
            ),
            figure("sessions", c.sessions, Gauge, "Logged-in connections."),
            figure(
                "users",
                self.users_in_process(),
                Gauge,
                "Distinct users online.",
            ),
            figure(
                "groups",
                self.groups.len() as u64,
                Gauge,
                "Groups (registered and open).",
            ),
            figure(
                "subscriptions",
                c.subscriptions,
                Gauge,
                "Group subscriptions of all sessions.",
            ),
            figure(
                "frames_in",
                c.frames_in,
                Counter,
                "Frames received from clients.",
            ),
            figure(
                "frames_out",
                io.frames_out,
                Counter,
                "Frames queued for clients (replies and pushes).",
            ),
            figure(
                "bytes_in",
                io.bytes_in,
                Counter,
                "Bytes received from clients (after TLS).",
            ),
            figure(
                "bytes_out",
                io.bytes_out,
                Counter,
                "Bytes written to clients (before TLS).",
            ),
            figure(
                "published",
                c.published,
                Counter,
                "Messages published (PUBLISH, and by the server).",
            ),
            figure(
                "delivered",
                c.delivered,
                Counter,
                "Messages queued for recipients (PUBLISHED and MESSAGE).",
            ),
            figure(
                "slow_consumers",
                c.slow_consumers,
                Counter,
                "Connections closed as slow consumers.",
            ),
            figure("auth_failures", c.auth_failures, Counter, "Failed logins."),
            figure(
                "tls_handshakes",
                io.tls_handshakes,
                Counter,
                "Completed TLS handshakes.",
            ),
            figure(
                "limits_refused",
                c.limits_refused + io.refused_full,
                Counter,
                "Requests and connections refused by a limit (ERR limit, ERR busy, ERR server-full).",
            ),
            figure(
                "log_lines_dropped",
                process.log_lines_dropped,
                Counter,
                "Log lines dropped because the log sink was slow.",
            ),
            figure(
                "rss_bytes",
                process.rss_bytes,
                Gauge,
                "Resident memory of the process.",
            ),
            figure(
                "loop_turn_max_us",
                io.turns.max_us(now),
                Gauge,
                "The longest loop turn in the last 10 seconds, in microseconds.",
            ),
            figure(
                "directory_entries",
                self.directory_len() as u64,
                Gauge,
                "Users in the peer directory (BIND).",
            ),
            figure(
                "probes",
                c.probes,
                Counter,
                "Directory probes started (BINDs and re-probes).",
            ),
            figure(
                "probe_failures",
                c.probe_failures,
                Counter,
                "Directory probes that got no PONG in time.",
            ),
            figure(
                "cluster_members",
                self.cluster_figures().0,
                Gauge,
                "Other loops and nodes this one knows (section 11).",
            ),
            figure(
                "cluster_notes_sent",
                self.cluster_figures().1,
                Counter,
                "Notes sent to the other loops and nodes.",
            ),
            figure(
                "cluster_notes_received",
                self.cluster_figures().2,
                Counter,
                "Notes received from the other loops and nodes.",
            ),
            figure(
                "cluster_dropped",
                self.cluster_figures().3,
                Counter,
                "Messages to other nodes dropped by the engine (down, or over its bound) or to other loops (far behind).",
            ),
        ]);
    }

    /// The `STATS 0` reply: `key=value` lines.
    pub(super) fn stats_reply<T>(&self, links: &Sessions<T>) -> Bytes {
        let mut out = String::with_capacity(512);
        for f in self.stats(links, self.now) {
            out.push_str(f.key);
            out.push('=');
            out.push_str(&f.value.to_string());
            out.push('\n');
        }
        frame::result(out.as_bytes())
    }
}

/// Two loops' values of one `STATS` figure: process-wide figures and
/// maxima are the same or the larger, the rest add up.
pub(crate) fn combine(key: &str, a: u64, b: u64) -> u64 {
    match key {
        // The same for every loop, or the worst of them; `groups` are
        // configured alike (open groups made by use may differ).
        "uptime_s" | "rss_bytes" | "log_lines_dropped" | "loop_turn_max_us" | "groups"
        | "cluster_members" => a.max(b),
        // Every loop counts the users of the whole process (a user with
        // sessions on two loops is one user).
        "users" => a,
        _ => a.saturating_add(b),
    }
}
