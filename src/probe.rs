//! Directory probes (protocol.md section 6) as outgoing connections of the
//! loop: connect to a peer endpoint, send `PING 0`, expect `PONG 0` within
//! [`PROBE_TIMEOUT`], report, close.
//!
//! The broker decides what to probe ([`crate::broker::ProbeRequest`]); its
//! service hands the requests over on a board shared with this one, and
//! takes the verdicts back from it, once per loop turn. This service asks
//! the reactor for each connection ([`Service::take_connects`]), so probes
//! are connections of the connection layer like any other: nonblocking
//! connect, a bounded output queue, a closing deadline, with a deadline of
//! their own on top. Nothing here blocks: a peer that accepts and stays
//! silent costs one slot until its deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::debug;

use crate::broker::{MAX_PROBES, PROBE_TIMEOUT, ProbeRequest};
use crate::conn::{Admission, CloseReason, ConnId, Limits, Links, PeerIdentity, Table};
use crate::proto::{Decoded, decode};
use crate::reactor::Conn;
use crate::reactor::service::Service;

/// Most bytes read from a probed peer before its `PONG`.
const MAX_INPUT: usize = 4096;

/// Requests from the broker and verdicts back, between the two services.
#[derive(Debug, Default)]
pub(crate) struct Board {
    pub(crate) requests: VecDeque<ProbeRequest>,
    pub(crate) results: Vec<(u64, bool)>,
}

/// The board both services hold.
pub(crate) type SharedBoard = Arc<Mutex<Board>>;

/// One probe connection.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    /// The request's id; 0 until [`Service::connect_started`] names it.
    id: u64,
    /// The verdict has been reported.
    done: bool,
}

/// The service that runs directory probes.
#[derive(Debug)]
pub(crate) struct ProbeService {
    links: Links<Conn, Probe>,
    board: SharedBoard,
    /// Probe deadlines: (when, slot, generation).
    deadlines: BinaryHeap<Reverse<(Instant, usize, u32)>>,
}

impl ProbeService {
    pub(crate) fn new(board: SharedBoard) -> Self {
        Self {
            links: Links::new(Limits {
                max_connections: 2 * MAX_PROBES,
                max_pending: 4096,
                read_pause: 4096,
                untrusted_read_pause: 4096,
                untrusted_read_window: MAX_INPUT,
                linger: Duration::from_millis(500),
                drain: Duration::from_millis(500),
            }),
            board,
            deadlines: BinaryHeap::new(),
        }
    }

    /// Reports a probe's verdict once and closes its connection.
    fn finish(&mut self, conn: ConnId, ok: bool, now: Instant) {
        let Some(p) = self.links.proto_mut(conn) else {
            return;
        };
        if p.done || p.id == 0 {
            return;
        }
        p.done = true;
        let id = p.id;
        debug!(
            "probe {}: {}",
            self.links.log_peer(conn),
            if ok { "PONG" } else { "failed" }
        );
        if let Ok(mut b) = self.board.lock() {
            b.results.push((id, ok));
        }
        self.links.close(conn, CloseReason::Quit, now);
    }
}

/// Whether `input` holds a `PONG 0` frame (frames before it are skipped);
/// `None` while more could tell.
fn pong_in(mut input: &[u8]) -> Option<bool> {
    loop {
        match decode(input, MAX_INPUT) {
            Ok(Decoded::Frame {
                frame,
                consumed: used,
            }) => {
                if frame.verb().as_bytes() == b"PONG" {
                    return Some(true);
                }
                input = input.get(used..).unwrap_or_default();
            }
            Ok(Decoded::Incomplete { .. }) if input.len() < MAX_INPUT => return None,
            // Not our protocol, or too much of it.
            _ => return Some(false),
        }
    }
}

impl Service for ProbeService {
    fn links(&mut self) -> &mut dyn Table<Conn> {
        &mut self.links
    }
    fn links_ref(&self) -> &dyn Table<Conn> {
        &self.links
    }
    fn accept(&mut self, io: Conn, peer: SocketAddr, now: Instant) -> Admission<Conn> {
        let admission = self.links.accept(io, peer, Probe::default(), now);
        if let Admission::Open(id) = &admission {
            if let Some(l) = self.links.get(*id) {
                let generation = l.generation();
                self.deadlines
                    .push(Reverse((now + PROBE_TIMEOUT, id.0, generation)));
            }
        }
        admission
    }
    fn take_connects(&mut self, into: &mut Vec<(u64, SocketAddr)>) {
        if let Ok(mut b) = self.board.lock() {
            into.extend(b.requests.drain(..).map(|r| (r.id, r.addr)));
        }
    }
    fn connect_started(&mut self, tag: u64, conn: std::io::Result<ConnId>, _now: Instant) {
        match conn {
            Ok(conn) => {
                if let Some(p) = self.links.proto_mut(conn) {
                    p.id = tag;
                }
            }
            Err(e) => {
                debug!("probe {tag}: cannot connect: {e}");
                if let Ok(mut b) = self.board.lock() {
                    b.results.push((tag, false));
                }
            }
        }
    }
    fn handle_input(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        let mut verdict = None;
        self.links.input(conn, data, |_, bytes| {
            verdict = pong_in(bytes);
            0
        });
        if let Some(ok) = verdict {
            self.finish(conn, ok, now);
        }
    }
    fn handle_eof(&mut self, conn: ConnId, now: Instant) {
        self.finish(conn, false, now);
        self.links.handle_eof(conn);
        self.links.set_eof(conn);
    }
    /// The connect completed: ask.
    fn handle_secured(&mut self, conn: ConnId, _subject: Option<PeerIdentity>, _now: Instant) {
        let _ = self.links.push(conn, Bytes::from_static(b"PING 0\n"));
    }
    fn resume(&mut self, _conn: ConnId, _now: Instant) {}
    fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, key, generation))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let conn = ConnId(key);
            let live = self
                .links
                .get(conn)
                .is_some_and(|l| l.generation() == generation);
            if live {
                self.finish(conn, false, now);
            }
        }
        self.links.handle_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        let probe = self.deadlines.peek().map(|Reverse((at, _, _))| *at);
        probe.into_iter().chain(self.links.poll_timeout()).min()
    }
    fn remove(&mut self, conn: ConnId, reason: CloseReason) -> Option<Conn> {
        let (io, probe, _) = self.links.remove(conn, reason)?;
        if !probe.done && probe.id != 0 {
            if let Ok(mut b) = self.board.lock() {
                b.results.push((probe.id, false));
            }
        }
        Some(io)
    }
    fn shutdown(&mut self, now: Instant) {
        self.links.shutdown(None, now);
    }
    fn has_events(&self) -> bool {
        self.board.lock().is_ok_and(|b| !b.requests.is_empty())
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

    #[test]
    fn a_pong_is_found_behind_other_frames_and_garbage_fails() {
        assert_eq!(pong_in(b"PONG 0\n"), Some(true));
        assert_eq!(pong_in(b"PING 0\nPONG 0\n"), Some(true));
        assert_eq!(pong_in(b"PON"), None);
        assert_eq!(pong_in(b"HTTP/1.1 400 Bad Request\r\n"), Some(false));
        assert_eq!(pong_in(&[b'x'; 5000]), Some(false));
    }
}
