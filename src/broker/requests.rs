//! Request/reply and surveys (protocol.md section 9), sans-IO.
//!
//! - `REQUEST` picks one responder of the group (queue members first,
//!   round-robin; else a plain subscriber other than the requester), pushes
//!   `REQUESTED LEN <sender> <g> <rid>` to it, and answers the requester
//!   with the responder's `REPLY` as `RESULT`, `ERR no-responders` at once,
//!   or `ERR timeout` at the deadline.
//! - `SURVEY` pushes `SURVEYED` to every subscriber (the surveyor
//!   excluded) and answers, at the deadline, with one `RESULT` of the
//!   `RESPONSE LEN <responder>` frames received, in arrival order.
//! - **Replies stay in order**: the requester's later frames are handled
//!   meanwhile, but their replies are held behind the pending one (a slot
//!   per pending request in the session's reply queue) and released when it
//!   is answered. Pushes are not held.
//! - **Bounded**: at most [`MAX_PENDING_REQUESTS`] requests and surveys per session
//!   (`ERR busy` past it); replies held behind them count toward the output
//!   bound; all of it is dropped when the requester goes, and a request
//!   whose responder goes is answered `ERR no-responders` at once.

use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::cluster::Note;
use super::registry::name_of;
use super::{Broker, Sessions};
use crate::conn::ConnId;
use crate::conn::tick::Tick;
use crate::error::ErrorCode;
use crate::proto::{GroupId, frame};

/// The embedding program, as a requester or responder (not a slab key).
const HOST: usize = usize::MAX;
/// Another member of the cluster, as a requester (not a slab key).
const REMOTE: usize = usize::MAX - 1;

/// How a request ended, as the embedding program hears it.
pub type RequestOutcome = Result<Bytes, ErrorCode>;

/// Requests and surveys one session may have waiting.
pub const MAX_PENDING_REQUESTS: usize = 64;

/// A reply slot of a session that waits on a request.
#[derive(Debug)]
enum Slot {
    Waiting(u64),
    Ready(Bytes),
}

/// A session's replies held behind pending requests.
#[derive(Debug, Default)]
pub(super) struct Held {
    slots: VecDeque<Slot>,
    bytes: usize,
    pending: usize,
}

#[derive(Debug)]
enum Kind {
    Request {
        responder: (usize, u32),
    },
    /// A request handed to another member to answer.
    Remote {
        member: Arc<str>,
    },
    Survey {
        answers: BytesMut,
        asked: Vec<(usize, u32)>,
        /// Other members asked too; their answers come one by one.
        remotes: Vec<Arc<str>>,
    },
}

#[derive(Debug)]
pub(super) struct Pending {
    requester: (usize, u32),
    kind: Kind,
    /// For a requester on another member: that member and its number.
    origin: Option<(Arc<str>, u64)>,
}

/// All requests and surveys under way.
#[derive(Debug, Default)]
pub(super) struct Requests {
    pending: HashMap<u64, Pending>,
    held: HashMap<usize, Held>,
    deadlines: std::collections::BinaryHeap<Reverse<(Tick, u64)>>,
    next: u64,
    /// Round-robin over plain subscribers.
    rr: usize,
    /// Groups whose requests the embedding program answers when no session
    /// does.
    host_groups: std::collections::HashSet<GroupId>,
}

fn rid_of(n: u64) -> String {
    format!("r{n}")
}

fn parse_rid(rid: &str) -> Option<u64> {
    rid.strip_prefix('r')?.parse().ok()
}

fn generation<T>(links: &Sessions<T>, key: usize) -> Option<u32> {
    if key == HOST || key == REMOTE {
        return Some(0);
    }
    let l = links.get(ConnId(key))?;
    (!l.is_closing()).then(|| l.generation())
}

impl Broker {
    /// Whether `conn`'s replies are being held behind a pending request.
    pub(super) fn holds_replies(&self, conn: ConnId) -> bool {
        self.requests.held.contains_key(&conn.0)
    }

    /// Holds a reply of `conn` behind its pending requests; returns whether
    /// the held replies passed the output bound.
    pub(super) fn hold_reply(&mut self, conn: ConnId, bytes: Bytes) -> bool {
        let max = self.config.max_pending;
        let Some(h) = self.requests.held.get_mut(&conn.0) else {
            return false;
        };
        h.bytes += bytes.len();
        h.slots.push_back(Slot::Ready(bytes));
        h.bytes > max
    }

    fn open_slot<T>(&mut self, links: &Sessions<T>, conn: ConnId, n: u64, deadline: Tick) -> bool {
        if generation(links, conn.0).is_none() {
            return false;
        }
        let h = self.requests.held.entry(conn.0).or_default();
        h.slots.push_back(Slot::Waiting(n));
        h.pending += 1;
        self.requests.deadlines.push(Reverse((deadline, n)));
        true
    }

    /// Whether `conn` may open another request or survey.
    fn pending_room(&self, conn: ConnId) -> bool {
        self.requests
            .held
            .get(&conn.0)
            .is_none_or(|h| h.pending < MAX_PENDING_REQUESTS)
    }

    /// `REQUEST LEN <g> [<timeout_ms>]`.
    pub(super) fn cmd_request<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        g: GroupId,
        timeout_ms: u32,
        payload: &[u8],
    ) {
        if !self.groups.contains_key(&g) && !self.config.open_groups {
            return self.unknown_group(links, conn, g);
        }
        if !self.pending_room(conn) {
            let text = format!("{MAX_PENDING_REQUESTS} requests and surveys are waiting already");
            return self.reply_err(links, conn, ErrorCode::Busy, &text);
        }
        let route = match self.pick_responder(links, conn, g) {
            Some(r) => Some(Kind::Request { responder: r }),
            None => match self.remote_responder(g) {
                Some(member) => Some(Kind::Remote { member }),
                None => self
                    .host_responder(g, conn.0)
                    .map(|responder| Kind::Request { responder }),
            },
        };
        let Some(route) = route else {
            let text = format!("nobody answers requests on group {g}");
            return self.reply_err(links, conn, ErrorCode::NoResponders, &text);
        };
        let Some(generation) = generation(links, conn.0) else {
            return;
        };
        self.requests.next += 1;
        let n = self.requests.next;
        let deadline = links.tick(self.now) + Duration::from_millis(u64::from(timeout_ms));
        let sender = name_of(links, conn);
        if !self.open_slot(links, conn, n, deadline) {
            return;
        }
        self.send_request(
            links,
            n,
            (conn.0, generation),
            route,
            &sender,
            g,
            timeout_ms,
            payload,
        );
    }

    /// Records request `n` and hands it to its responder: a session, the
    /// embedding program, or another member.
    #[allow(clippy::too_many_arguments)]
    fn send_request<T>(
        &mut self,
        links: &mut Sessions<T>,
        n: u64,
        requester: (usize, u32),
        kind: Kind,
        sender: &str,
        g: GroupId,
        ms: u32,
        payload: &[u8],
    ) {
        let rid = rid_of(n);
        let target = match &kind {
            Kind::Request { responder } => Ok(responder.0),
            Kind::Remote { member } => Err(Arc::clone(member)),
            Kind::Survey { .. } => return,
        };
        self.requests.pending.insert(
            n,
            Pending {
                requester,
                kind,
                origin: None,
            },
        );
        match target {
            Ok(HOST) => self.emit(super::Event::Request {
                rid,
                from: sender.to_owned(),
                group: g,
                payload: bytes::Bytes::copy_from_slice(payload),
            }),
            Ok(key) => {
                let msg = frame::encode_to_bytes(
                    "REQUESTED",
                    &[sender.as_bytes(), g.to_string().as_bytes(), rid.as_bytes()],
                    payload,
                );
                self.push_frame(links, ConnId(key), msg);
            }
            Err(member) => self.note(Note::Request {
                to: member,
                n,
                sender: sender.into(),
                group: g,
                ms,
                survey: false,
                payload: Bytes::copy_from_slice(payload),
            }),
        }
    }

    /// Another member's request for a responder here: a local one (or the
    /// embedding program), else `ERR no-responders` back at once.
    pub(super) fn remote_request<T>(
        &mut self,
        links: &mut Sessions<T>,
        origin: (Arc<str>, u64),
        sender: &str,
        g: GroupId,
        ms: u32,
        payload: &[u8],
    ) {
        let responder = self
            .pick_responder(links, ConnId(REMOTE), g)
            .or_else(|| self.host_responder(g, REMOTE));
        let Some(responder) = responder else {
            let text = format!("nobody answers requests on group {g}");
            self.note(Note::Reply {
                to: origin.0,
                n: origin.1,
                survey: false,
                frame: frame::err(ErrorCode::NoResponders, &text),
            });
            return;
        };
        self.requests.next += 1;
        let n = self.requests.next;
        let deadline = links.tick(self.now) + Duration::from_millis(u64::from(ms));
        self.requests.deadlines.push(Reverse((deadline, n)));
        let kind = Kind::Request { responder };
        self.send_request(links, n, (REMOTE, 0), kind, sender, g, ms, payload);
        if let Some(p) = self.requests.pending.get_mut(&n) {
            p.origin = Some(origin);
        }
    }

    /// Another member's survey: everyone here is asked; each answer goes
    /// back as it comes.
    pub(super) fn remote_survey<T>(
        &mut self,
        links: &mut Sessions<T>,
        origin: (Arc<str>, u64),
        sender: &str,
        g: GroupId,
        ms: u32,
        payload: &[u8],
    ) {
        let deadline = Duration::from_millis(u64::from(ms));
        if let Some(n) = self.start_survey(links, (REMOTE, 0), sender, g, deadline, payload) {
            if let Some(p) = self.requests.pending.get_mut(&n) {
                p.origin = Some(origin);
            }
        }
    }

    /// An answer from another member to request or survey `n`.
    pub(super) fn remote_reply<T>(
        &mut self,
        links: &mut Sessions<T>,
        from: &Arc<str>,
        n: u64,
        survey: bool,
        reply: Bytes,
    ) {
        let Some(p) = self.requests.pending.get_mut(&n) else {
            return;
        };
        match &mut p.kind {
            Kind::Remote { member } if !survey && member == from => {
                self.finish_request(links, n, reply);
            }
            Kind::Survey {
                answers, remotes, ..
            } if survey && remotes.contains(from) => {
                answers.extend_from_slice(&reply);
                if answers.len() > self.config.max_payload {
                    self.finish_survey(links, n);
                }
            }
            _ => {}
        }
    }

    /// Another member's request `n` timed out there: forgotten here, so a
    /// late reply is refused.
    pub(super) fn remote_cancel(&mut self, from: &Arc<str>, n: u64) {
        self.requests.pending.retain(|_, p| {
            p.origin
                .as_ref()
                .is_none_or(|(m, on)| !(m == from && *on == n))
        });
    }

    /// A member went: requests it was to answer fail, and its own requests
    /// here are dropped.
    pub(super) fn member_gone<T>(&mut self, links: &mut Sessions<T>, member: &Arc<str>) {
        let mut orphaned = Vec::new();
        self.requests.pending.retain(|&n, p| {
            if p.origin.as_ref().is_some_and(|(m, _)| m == member) {
                return false;
            }
            match &mut p.kind {
                Kind::Remote { member: m } if m == member => orphaned.push(n),
                Kind::Survey { remotes, .. } => remotes.retain(|m| m != member),
                _ => {}
            }
            true
        });
        for n in orphaned {
            let text = "the responder's node went away";
            self.finish_request(links, n, frame::err(ErrorCode::NoResponders, text));
        }
    }

    /// A responder for a request to `g` from `conn`: a queue member first
    /// (round-robin), else a plain subscriber; never the requester.
    fn pick_responder<T>(
        &mut self,
        links: &Sessions<T>,
        conn: ConnId,
        g: GroupId,
    ) -> Option<(usize, u32)> {
        let group = self.groups.get_mut(&g)?;
        for q in &mut group.queues {
            let n = q.members.len();
            for i in 0..n {
                let at = (q.next + i) % n;
                let key = q.members[at];
                if key == conn.0 {
                    continue;
                }
                if let Some(generation) = generation(links, key) {
                    q.next = at + 1;
                    return Some((key, generation));
                }
            }
        }
        let subs = &group.subscribers;
        let n = subs.len();
        for i in 0..n {
            let at = (self.requests.rr + i) % n;
            let key = subs[at];
            if key == conn.0 {
                continue;
            }
            if let Some(generation) = generation(links, key) {
                self.requests.rr = at + 1;
                return Some((key, generation));
            }
        }
        None
    }

    /// The host's fallback responder for `g`, if it serves it.
    fn host_responder(&self, g: GroupId, requester: usize) -> Option<(usize, u32)> {
        (requester != HOST && self.requests.host_groups.contains(&g)).then_some((HOST, 0))
    }

    /// Whether the embedding program answers requests to `g` that no
    /// session takes (see [`Broker::reply_as_host`]).
    pub fn serve_requests(&mut self, g: GroupId, on: bool) {
        if on {
            self.requests.host_groups.insert(g);
        } else {
            self.requests.host_groups.remove(&g);
        }
    }

    /// The embedding program answers request `rid` (from
    /// `Event::Request`); returns whether it was waiting for the program.
    pub fn reply_as_host<T>(&mut self, links: &mut Sessions<T>, rid: &str, payload: &[u8]) -> bool {
        let Some(n) = parse_rid(rid) else {
            return false;
        };
        match self.requests.pending.get_mut(&n).map(|p| &mut p.kind) {
            Some(Kind::Request { responder }) if responder.0 == HOST => {
                self.finish_request(links, n, frame::result(payload));
                true
            }
            Some(Kind::Survey { answers, asked, .. }) if asked.contains(&(HOST, 0)) => {
                asked.retain(|a| a.0 != HOST);
                frame::encode(
                    answers,
                    "RESPONSE",
                    &[super::SERVER_USER.as_bytes()],
                    payload,
                );
                self.forward_answers(n);
                true
            }
            _ => false,
        }
    }

    /// The embedding program sends a request to `g` as `@server`; the
    /// answer comes as `Event::Replied` with the rid returned.
    ///
    /// # Errors
    ///
    /// `UnknownGroup`, or `NoResponders` when no session serves `g`.
    pub fn request_as_host<T>(
        &mut self,
        links: &mut Sessions<T>,
        g: GroupId,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<String, super::DeliveryError> {
        if !self.groups.contains_key(&g) {
            return Err(super::DeliveryError::UnknownGroup(g));
        }
        let kind = match self.pick_responder(links, ConnId(HOST), g) {
            Some(responder) => Kind::Request { responder },
            None => Kind::Remote {
                member: self
                    .remote_responder(g)
                    .ok_or(super::DeliveryError::NoResponders)?,
            },
        };
        self.requests.next += 1;
        let n = self.requests.next;
        let rid = rid_of(n);
        let ms = timeout.min(Duration::from_millis(u64::from(
            crate::proto::command::MAX_WAIT_MS,
        )));
        let deadline = links.tick(self.now) + ms;
        self.requests.deadlines.push(Reverse((deadline, n)));
        let ms = u32::try_from(ms.as_millis()).unwrap_or(u32::MAX);
        self.send_request(
            links,
            n,
            (HOST, 0),
            kind,
            super::SERVER_USER,
            g,
            ms,
            payload,
        );
        Ok(rid)
    }

    /// `SURVEY LEN <g> <deadline_ms>`.
    pub(super) fn cmd_survey<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        g: GroupId,
        deadline_ms: u32,
        payload: &[u8],
    ) {
        if !self.groups.contains_key(&g) && !self.config.open_groups {
            return self.unknown_group(links, conn, g);
        }
        if !self.pending_room(conn) {
            let text = format!("{MAX_PENDING_REQUESTS} requests and surveys are waiting already");
            return self.reply_err(links, conn, ErrorCode::Busy, &text);
        }
        let Some(generation) = generation(links, conn.0) else {
            return;
        };
        let sender = name_of(links, conn);
        let deadline = Duration::from_millis(u64::from(deadline_ms));
        let started = self.start_survey(links, (conn.0, generation), &sender, g, deadline, payload);
        if started.is_none() {
            self.push_reply(links, conn, frame::result(b""));
        }
    }

    /// Pushes `SURVEYED` to everyone of `g` but the surveyor (and asks the
    /// embedding program when it serves `g`); returns the survey's number,
    /// or `None` when there was nobody to ask.
    fn start_survey<T>(
        &mut self,
        links: &mut Sessions<T>,
        surveyor: (usize, u32),
        sender: &str,
        g: GroupId,
        deadline: Duration,
        payload: &[u8],
    ) -> Option<u64> {
        let mut asked: Vec<usize> = Vec::new();
        if let Some(group) = self.groups.get(&g) {
            asked.extend(group.subscribers.iter().copied());
            for q in &group.queues {
                asked.extend(q.members.iter().copied());
            }
        }
        asked.sort_unstable();
        asked.dedup();
        asked.retain(|&k| k != surveyor.0);
        let mut asked: Vec<(usize, u32)> = asked
            .into_iter()
            .filter_map(|k| Some((k, generation(links, k)?)))
            .collect();
        if let Some(host) = self.host_responder(g, surveyor.0) {
            asked.push(host);
        }
        self.work += asked.len();
        // Other members are asked for a survey started here (not for one
        // another member started: it asks them itself).
        let remotes = if surveyor.0 == REMOTE {
            Vec::new()
        } else {
            self.remote_surveyed(g)
        };
        if asked.is_empty() && remotes.is_empty() {
            return None;
        }
        self.requests.next += 1;
        let n = self.requests.next;
        let at = links.tick(self.now) + deadline;
        let rid = rid_of(n);
        if surveyor.0 == HOST || surveyor.0 == REMOTE {
            self.requests.deadlines.push(Reverse((at, n)));
        } else if !self.open_slot(links, ConnId(surveyor.0), n, at) {
            return None;
        }
        let msg = crate::conn::Shared::new(frame::encode_to_bytes(
            "SURVEYED",
            &[sender.as_bytes(), g.to_string().as_bytes(), rid.as_bytes()],
            payload,
        ));
        for &(k, _) in &asked {
            if k == HOST {
                self.emit(super::Event::Request {
                    rid: rid.clone(),
                    from: sender.to_owned(),
                    group: g,
                    payload: Bytes::copy_from_slice(payload),
                });
            } else {
                self.push_shared(links, ConnId(k), &msg);
            }
        }
        let ms = u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX);
        for m in &remotes {
            self.note(Note::Request {
                to: Arc::clone(m),
                n,
                sender: sender.into(),
                group: g,
                ms,
                survey: true,
                payload: Bytes::copy_from_slice(payload),
            });
        }
        self.requests.pending.insert(
            n,
            Pending {
                requester: surveyor,
                kind: Kind::Survey {
                    answers: BytesMut::new(),
                    asked,
                    remotes,
                },
                origin: None,
            },
        );
        Some(n)
    }

    /// The embedding program surveys `g` as `@server`; the answers come as
    /// `Event::Replied` with the rid returned (a `RESULT` payload of
    /// `RESPONSE` frames).
    ///
    /// # Errors
    ///
    /// `UnknownGroup`, or `NoResponders` when nobody is there to ask.
    pub fn survey_as_host<T>(
        &mut self,
        links: &mut Sessions<T>,
        g: GroupId,
        payload: &[u8],
        deadline: Duration,
    ) -> Result<String, super::DeliveryError> {
        if !self.groups.contains_key(&g) {
            return Err(super::DeliveryError::UnknownGroup(g));
        }
        let max = Duration::from_millis(u64::from(crate::proto::command::MAX_WAIT_MS));
        let sender = super::SERVER_USER;
        self.start_survey(links, (HOST, 0), sender, g, deadline.min(max), payload)
            .map(rid_of)
            .ok_or(super::DeliveryError::NoResponders)
    }

    /// `REPLY LEN <rid>` from `conn`.
    pub(super) fn cmd_reply<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        rid: &str,
        payload: &[u8],
    ) {
        let me = generation(links, conn.0).map(|g| (conn.0, g));
        let n = parse_rid(rid);
        let entry = n.and_then(|n| self.requests.pending.get_mut(&n).map(|p| (n, p)));
        let Some((n, p)) = entry else {
            let text = format!("no request {rid} waits for an answer (unknown or expired)");
            return self.reply_err(links, conn, ErrorCode::BadArgs, &text);
        };
        match &mut p.kind {
            Kind::Request { responder } if Some(*responder) == me => {
                self.push_reply(links, conn, frame::ack("replied"));
                self.finish_request(links, n, frame::result(payload));
            }
            Kind::Survey { answers, asked, .. } if me.is_some_and(|m| asked.contains(&m)) => {
                if let Some(m) = me {
                    asked.retain(|a| *a != m);
                }
                let name = name_of(links, conn);
                frame::encode(answers, "RESPONSE", &[name.as_bytes()], payload);
                let too_big = answers.len() > self.config.max_payload;
                self.push_reply(links, conn, frame::ack("replied"));
                self.forward_answers(n);
                if too_big {
                    self.finish_survey(links, n);
                }
            }
            _ => {
                let text = format!("no request {rid} waits for an answer from you");
                self.reply_err(links, conn, ErrorCode::BadArgs, &text);
            }
        }
    }

    /// Answers request `n` with `reply` and releases the replies held
    /// behind it.
    fn finish_request<T>(&mut self, links: &mut Sessions<T>, n: u64, reply: Bytes) {
        let Some(p) = self.requests.pending.remove(&n) else {
            return;
        };
        if let Some((to, n)) = p.origin {
            self.note(Note::Reply {
                to,
                n,
                survey: false,
                frame: reply,
            });
            return;
        }
        self.fill_slot(links, p.requester, n, reply);
    }

    /// For a survey another member started: the answers so far go to it
    /// at once.
    fn forward_answers(&mut self, n: u64) {
        let Some(p) = self.requests.pending.get_mut(&n) else {
            return;
        };
        let (Some((to, origin)), Kind::Survey { answers, .. }) = (&p.origin, &mut p.kind) else {
            return;
        };
        let note = Note::Reply {
            to: Arc::clone(to),
            n: *origin,
            survey: true,
            frame: answers.split().freeze(),
        };
        self.note(note);
    }

    /// Ends survey `n`: its `RESULT` of the answers so far.
    fn finish_survey<T>(&mut self, links: &mut Sessions<T>, n: u64) {
        let Some(p) = self.requests.pending.remove(&n) else {
            return;
        };
        if p.origin.is_some() {
            // Its answers went as they came.
            return;
        }
        let answers = match p.kind {
            Kind::Survey { answers, .. } => answers,
            Kind::Request { .. } | Kind::Remote { .. } => BytesMut::new(),
        };
        self.fill_slot(links, p.requester, n, frame::result(&answers));
    }

    fn fill_slot<T>(
        &mut self,
        links: &mut Sessions<T>,
        requester: (usize, u32),
        n: u64,
        reply: Bytes,
    ) {
        let (key, generation) = requester;
        if key == HOST {
            let outcome = outcome_of(&reply);
            self.emit(super::Event::Replied {
                rid: rid_of(n),
                outcome,
            });
            return;
        }
        let live = links
            .get(ConnId(key))
            .is_some_and(|l| l.generation() == generation && !l.is_closing());
        let Some(h) = self.requests.held.get_mut(&key) else {
            return;
        };
        if !live {
            return;
        }
        for slot in &mut h.slots {
            if matches!(slot, Slot::Waiting(w) if *w == n) {
                h.bytes += reply.len();
                *slot = Slot::Ready(reply);
                h.pending -= 1;
                break;
            }
        }
        // Release what is ready at the front.
        let mut out = Vec::new();
        while let Some(Slot::Ready(_)) = h.slots.front() {
            if let Some(Slot::Ready(b)) = h.slots.pop_front() {
                h.bytes -= b.len().min(h.bytes);
                out.push(b);
            }
        }
        if h.slots.is_empty() {
            self.requests.held.remove(&key);
        }
        for b in out {
            self.push_frame(links, ConnId(key), b);
        }
    }

    /// Requests and surveys whose deadline passed are answered.
    pub(super) fn expire_requests<T>(&mut self, links: &mut Sessions<T>) {
        let now = links.tick(self.now);
        while let Some(&Reverse((at, n))) = self.requests.deadlines.peek() {
            if at > now {
                break;
            }
            self.requests.deadlines.pop();
            let survey = match self.requests.pending.get(&n) {
                None => continue,
                Some(p) => matches!(p.kind, Kind::Survey { .. }),
            };
            if survey {
                self.finish_survey(links, n);
            } else {
                if let Some(Pending {
                    kind: Kind::Remote { member },
                    ..
                }) = self.requests.pending.get(&n)
                {
                    let to = Arc::clone(member);
                    self.note(Note::Cancel { to, n });
                }
                let text = "no reply in time";
                self.finish_request(links, n, frame::err(ErrorCode::Timeout, text));
            }
        }
    }

    /// The next request or survey deadline.
    pub(super) fn next_request_deadline(&self) -> Option<Tick> {
        self.requests.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// A session is going: its own requests and held replies are dropped;
    /// requests it was to answer get `ERR no-responders` at once.
    pub(super) fn leave_requests<T>(&mut self, links: &mut Sessions<T>, conn: ConnId) {
        self.requests.held.remove(&conn.0);
        let mut orphaned = Vec::new();
        self.requests.pending.retain(|&n, p| {
            if p.requester.0 == conn.0 {
                return false;
            }
            if let Kind::Request { responder } = p.kind {
                if responder.0 == conn.0 {
                    orphaned.push(n);
                }
            }
            true
        });
        for n in orphaned {
            let text = "the responder went away";
            self.finish_request(links, n, frame::err(ErrorCode::NoResponders, text));
        }
    }
}

/// What a reply frame (`RESULT` or `ERR`) tells the embedding program.
fn outcome_of(reply: &Bytes) -> RequestOutcome {
    match crate::proto::decode(reply, usize::MAX) {
        Ok(crate::proto::Decoded::Frame { frame, .. }) if frame.verb().as_bytes() == b"RESULT" => {
            Ok(Bytes::copy_from_slice(frame.payload()))
        }
        Ok(crate::proto::Decoded::Frame { frame, .. }) => Err(frame
            .args()
            .next()
            .and_then(ErrorCode::from_token)
            .unwrap_or(ErrorCode::Internal)),
        _ => Err(ErrorCode::Internal),
    }
}
