//! The metrics listener (`--metrics-listen`, protocol.md section 10): a
//! small HTTP/1.1 responder on the same loop as the broker, serving
//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! The broker's service copies its figures ([`crate::broker::Figure`]) into
//! a snapshot shared with this service once per loop turn while a
//! metrics listener exists (two dozen numbers: nothing per connection, and
//! not the process's figures, which read `/proc`); a request is answered
//! from it at once, the process's figures read then. With several loops
//! (`--threads`) each loop fills a snapshot of its own and a request
//! combines them as `STATS` does (sums; the process-wide figures and maxima
//! once), so the metrics are the whole server's. Each connection gets one response
//! and is closed (`Connection: close`), like a Prometheus scrape expects.
//!
//! What a client can make this service hold is bounded like anywhere else
//! (protocol.md 7a): 64 connections, a request head of 8 KiB, 10 s to send
//! it, and the connection layer's closing deadline afterwards.
//!
//! [`respond`] and [`render`] are sans-IO: bytes and figures in, bytes out.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::debug;

use crate::broker::{Figure, FigureKind, ProcessStats, combine_figure};
use crate::conn::{Admission, CloseReason, ConnId, Limits, Links, PeerIdentity, Table};
use crate::reactor::Conn;
use crate::reactor::service::Service;

/// Most bytes of a request head (request line and headers).
pub const MAX_REQUEST: usize = 8 << 10;
/// How long a connection may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most metrics connections at once.
pub const MAX_CONNECTIONS: usize = 64;

/// The figures the broker last reported, shared with the metrics service.
pub(crate) type Snapshot = Arc<Mutex<Vec<Figure>>>;

/// The response to the request at the start of `input`, once its head is
/// complete (`None`: wait for more). `figures` is asked only for a
/// `GET /metrics`.
pub fn respond(input: &[u8], figures: impl FnOnce() -> Vec<Figure>) -> Option<Bytes> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(input) {
        Ok(httparse::Status::Partial) if input.len() < MAX_REQUEST => None,
        Ok(httparse::Status::Partial) => Some(reply(431, "Request Header Fields Too Large", "")),
        Err(httparse::Error::TooManyHeaders) => {
            Some(reply(431, "Request Header Fields Too Large", ""))
        }
        Err(_) => Some(reply(400, "Bad Request", "")),
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("");
            let path = path.split('?').next().unwrap_or(path);
            Some(match (req.method, path) {
                (Some("GET" | "HEAD"), "/metrics") => {
                    let body = render(&figures());
                    if req.method == Some("HEAD") {
                        head_only(&body)
                    } else {
                        reply(200, "OK", &body)
                    }
                }
                (Some("GET" | "HEAD"), _) => reply(404, "Not Found", "see /metrics\n"),
                _ => reply(405, "Method Not Allowed", ""),
            })
        }
    }
}

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn reply(status: u16, reason: &str, body: &str) -> Bytes {
    let mut out = head(status, reason, body.len());
    out.push_str(body);
    Bytes::from(out)
}

fn head_only(body: &str) -> Bytes {
    Bytes::from(head(200, "OK", body.len()))
}

fn head(status: u16, reason: &str, len: usize) -> String {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    let _ = write!(
        out,
        "Content-Type: {CONTENT_TYPE}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    out
}

/// The Prometheus text exposition of `figures`: each as
/// `switchboard_<key>` (counters with `_total`), with `# HELP` and
/// `# TYPE`; the connections also as one family by transport
/// (`switchboard_connections{transport="tcp"}`, `"tls"`, `"ws"`).
pub fn render(figures: &[Figure]) -> String {
    let mut out = String::with_capacity(4096);
    for f in figures {
        if f.key == "connections" {
            let by = |key: &str| figures.iter().find(|f| f.key == key).map_or(0, |f| f.value);
            let _ = writeln!(
                out,
                "# HELP switchboard_connections {}\n# TYPE switchboard_connections gauge",
                f.help
            );
            for transport in ["tcp", "tls", "ws"] {
                let n = by(&format!("connections_{transport}"));
                let _ = writeln!(
                    out,
                    "switchboard_connections{{transport=\"{transport}\"}} {n}"
                );
            }
            continue;
        }
        let (kind, suffix) = match f.kind {
            FigureKind::Counter => ("counter", "_total"),
            FigureKind::Gauge => ("gauge", ""),
        };
        // In this format (0.0.4) a counter's HELP and TYPE name it with
        // its `_total`, as its sample does.
        let name = format!("switchboard_{}{suffix}", f.key);
        let _ = writeln!(
            out,
            "# HELP {name} {}\n# TYPE {name} {kind}\n{name} {}",
            f.help, f.value
        );
    }
    out
}

/// Every loop's figures together, as `STATS` adds them up; the process's
/// figures from `process`.
pub(crate) fn combined(
    snapshots: &[Snapshot],
    process: Option<fn() -> ProcessStats>,
) -> Vec<Figure> {
    let lock = |s: &Snapshot| s.lock().map(|f| f.clone()).unwrap_or_default();
    let mut figures = snapshots.first().map(lock).unwrap_or_default();
    for other in snapshots.iter().skip(1) {
        let other = lock(other);
        for f in &mut figures {
            if let Some(o) = other.iter().find(|o| o.key == f.key) {
                f.value = combine_figure(f.key, f.value, o.value);
            }
        }
    }
    if let Some(p) = process.map(|f| f()) {
        for f in &mut figures {
            match f.key {
                "rss_bytes" => f.value = p.rss_bytes,
                "log_lines_dropped" => f.value = p.log_lines_dropped,
                _ => {}
            }
        }
    }
    figures
}

/// The metrics listener's connections.
pub(crate) struct MetricsService {
    links: Links<Conn, ()>,
    /// This loop's snapshot, then the other loops' (several loops).
    snapshots: Vec<Snapshot>,
    process: Option<fn() -> ProcessStats>,
    /// Request deadlines, in accept order (so in deadline order): slot and
    /// generation.
    deadlines: VecDeque<(Instant, ConnId, u32)>,
}

impl MetricsService {
    pub(crate) fn new(snapshot: Snapshot, process: Option<fn() -> ProcessStats>) -> Self {
        Self {
            links: Links::new(Limits {
                max_connections: MAX_CONNECTIONS,
                max_pending: 1 << 20,
                ..Limits::default()
            }),
            snapshots: vec![snapshot],
            process,
            deadlines: VecDeque::new(),
        }
    }

    /// The snapshot the broker's service fills.
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.snapshots.first().cloned().unwrap_or_default()
    }

    /// Another loop's snapshot, to be added to this one's.
    pub(crate) fn add_loop(&mut self, snapshot: Snapshot) {
        self.snapshots.push(snapshot);
    }

    fn answer(&mut self, conn: ConnId, response: Bytes, now: Instant) {
        self.links.push_final(conn, response);
        self.links.close(conn, CloseReason::Closed, now);
    }
}

impl Service for MetricsService {
    fn links(&mut self) -> &mut dyn Table<Conn> {
        &mut self.links
    }
    fn links_ref(&self) -> &dyn Table<Conn> {
        &self.links
    }
    fn accept(&mut self, io: Conn, peer: SocketAddr, now: Instant) -> Admission<Conn> {
        let admission = self.links.accept(io, peer, (), now);
        if let Admission::Open(id) = &admission {
            if let Some(l) = self.links.get(*id) {
                self.deadlines
                    .push_back((now + REQUEST_TIMEOUT, *id, l.generation()));
            }
        }
        admission
    }
    fn handle_input(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        let (snapshots, process) = (&self.snapshots, self.process);
        let mut response = None;
        self.links.input(conn, data, |_, bytes| {
            response = respond(bytes, || combined(snapshots, process));
            if response.is_some() { bytes.len() } else { 0 }
        });
        if let Some(response) = response {
            self.answer(conn, response, now);
        }
    }
    fn handle_eof(&mut self, conn: ConnId, now: Instant) {
        if self.links.handle_eof(conn) {
            self.links.close(conn, CloseReason::PeerClosed, now);
        }
        self.links.set_eof(conn);
    }
    fn handle_secured(&mut self, _conn: ConnId, _subject: Option<PeerIdentity>, _now: Instant) {}
    /// Input is either answered or kept whole until its head is complete.
    fn resume(&mut self, _conn: ConnId, _now: Instant) {}
    fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, conn, generation)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            let waiting = self
                .links
                .get(conn)
                .is_some_and(|l| l.generation() == generation && !l.is_closing());
            if waiting {
                let who = self.links.log_peer(conn);
                debug!("metrics {who}: no request within {REQUEST_TIMEOUT:?}");
                self.answer(conn, reply(408, "Request Timeout", ""), now);
            }
        }
        self.links.handle_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        let request = self.deadlines.front().map(|&(at, _, _)| at);
        match (request, self.links.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    fn remove(&mut self, conn: ConnId, reason: CloseReason) -> Option<Conn> {
        self.links.remove(conn, reason).map(|(io, (), _)| io)
    }
    fn shutdown(&mut self, now: Instant) {
        self.links.shutdown(None, now);
    }
    fn has_events(&self) -> bool {
        false
    }
    fn after_input(&mut self, _now: Instant) -> bool {
        false
    }
    fn handle_control(&mut self, _message: Box<dyn std::any::Any + Send>, _now: Instant) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::FigureKind::{Counter, Gauge};

    fn figures() -> Vec<Figure> {
        let f = |key, value, kind| Figure {
            key,
            value,
            kind,
            help: "Help.",
        };
        vec![
            f("uptime_s", 5, Gauge),
            f("connections", 3, Gauge),
            f("connections_tcp", 2, Gauge),
            f("connections_tls", 1, Gauge),
            f("connections_ws", 0, Gauge),
            f("frames_in", 42, Counter),
        ]
    }

    fn text(b: Option<Bytes>) -> String {
        String::from_utf8(b.expect("a response").to_vec()).expect("utf-8")
    }

    #[test]
    fn a_scrape_gets_the_exposition() {
        let r = text(respond(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            figures,
        ));
        let (head, body) = r.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(head.contains("Connection: close"));
        assert!(body.contains(
            "# TYPE switchboard_frames_in_total counter\nswitchboard_frames_in_total 42\n"
        ));
        assert!(body.contains("# TYPE switchboard_uptime_s gauge\nswitchboard_uptime_s 5\n"));
        assert!(body.contains("switchboard_connections{transport=\"tcp\"} 2\n"));
        assert!(body.contains("switchboard_connections{transport=\"tls\"} 1\n"));
        assert!(body.contains("switchboard_connections_tls 1\n"));
        assert!(!body.contains("switchboard_connections 3"));
    }

    #[test]
    fn partial_bad_and_other_requests() {
        let no_figures = || -> Vec<Figure> { panic!("figures asked for") };
        assert!(respond(b"GET /metrics HTTP/1.1\r\nHost:", no_figures).is_none());
        assert!(text(respond(b"GET / HTTP/1.1\r\n\r\n", no_figures)).starts_with("HTTP/1.1 404"));
        let post = text(respond(b"POST /metrics HTTP/1.1\r\n\r\n", no_figures));
        assert!(post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"));
        assert!(
            text(respond(b"\x16\x03\x01garbage\r\n\r\n", no_figures)).starts_with("HTTP/1.1 400")
        );
        let huge = [
            b"GET /metrics HTTP/1.1\r\nX: ".as_slice(),
            &[b'a'; MAX_REQUEST],
        ]
        .concat();
        assert!(text(respond(&huge, no_figures)).starts_with("HTTP/1.1 431"));
        let head = text(respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", figures));
        assert!(head.ends_with("\r\n\r\n") && head.starts_with("HTTP/1.1 200"));
    }
}
