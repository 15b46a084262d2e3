//! Several brokers acting as one (protocol.md section 11), sans-IO.
//!
//! A broker that is one *member* of many (a loop of a process started with
//! `--threads N`, or a node of a cluster through Redis) tells the others
//! what they need in [`Note`]s, and keeps a *view* of each other member
//! built from the notes it hears: its users, who is in which group, its
//! queue groups and its directory entries. `WHO`, `QUERY`, `SEND`'s "is the
//! user online" and the choice of a remote responder are answered from the
//! views, never by a round trip.
//!
//! - **Publish**: the publishing member delivers to its own subscribers and
//!   sends one [`Note::Publish`] carrying the `PUBLISHED` frame encoded once
//!   (in process, the same `Bytes` reaches every loop). Every other member
//!   delivers it to its subscribers of any of the groups, once per session
//!   however many of the groups it is in. A queue group is served once in
//!   the whole cluster: by the publisher's member when it has members of
//!   that queue group, else by one remote member the publisher names in the
//!   note (round-robin).
//! - **Order and exactly once** come from the carrier: the notes of one
//!   member reach each other member once, in the order sent (one channel
//!   per pair of loops; one Redis connection per node, whose pub/sub keeps a
//!   publisher's order).
//! - **Presence**: `Online`/`Offline` per session, `Joined`/`Parted` per
//!   subscription (a remote `JOINED`/`PARTED` is pushed to local watchers),
//!   queue memberships and directory entries. A member that starts, or
//!   reconnects to the engine, sends [`Note::Hello`] and its whole state
//!   ([`Note::State`]); each other member answers a `Hello` with its own.
//! - **Liveness** (clusters only): a [`Note::Beat`] every third of the
//!   expiry; a member not heard from within the expiry (default 15 s) is
//!   forgotten: its users leave `WHO`, its subscriptions are `PARTED` for
//!   the watchers, its entries leave `QUERY`, and requests it was to answer
//!   fail with `no-responders`.
//! - **Requests**: a local responder first; else one remote member with a
//!   responder for the group, which picks its own and answers with
//!   [`Note::Reply`]. A survey asks every member with subscribers of the
//!   group; their answers come back one by one until the surveyor's
//!   deadline.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::conn::tick::Tick;
use crate::proto::command::parse_group;
use crate::proto::{Decoded, GroupId, decode, frame};

/// Whether a broker is part of a cluster, and whether it reaches it
/// (`HELLO`'s `cluster=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterStatus {
    /// One broker alone (several loops of one process count as one node).
    Off,
    /// Connected to the engine.
    Ok,
    /// Serving its own clients, but cut off from the other nodes.
    Degraded,
}

impl ClusterStatus {
    /// As `HELLO` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Ok => "ok",
            Self::Degraded => "degraded",
        }
    }
}

/// A queue group a publish names for one remote member to serve:
/// (group, queue, member).
pub type QueueTurn = (GroupId, Box<str>, Arc<str>);

/// What one member tells the others. Cheap to clone: frames and payloads
/// are shared `Bytes`, names are shared strings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Note {
    /// A `PUBLISHED` frame (its header names the sender and groups) for
    /// every subscriber, and the queue groups the receiver named serves.
    Publish {
        /// The frame, encoded once by the publishing member.
        frame: Bytes,
        /// Queue groups served by a remote member.
        queues: Arc<[QueueTurn]>,
    },
    /// A `MESSAGE` frame for every session of a user (case-folded name).
    Message {
        /// The user.
        to: Arc<str>,
        /// The frame.
        frame: Bytes,
    },
    /// A session of this user logged in.
    Online(Arc<str>),
    /// A session of this user went.
    Offline(Arc<str>),
    /// A session of this user subscribed to a group.
    Joined(Arc<str>, GroupId),
    /// A session of this user left a group.
    Parted(Arc<str>, GroupId),
    /// A session joined this queue group.
    QueueJoined(GroupId, Arc<str>),
    /// A session left this queue group.
    QueueParted(GroupId, Arc<str>),
    /// A directory entry was added or replaced.
    Bound(Arc<str>, SocketAddr),
    /// A directory entry went.
    Unbound(Arc<str>),
    /// The user left the directory (`LEAVE`) here: an entry for the user
    /// on the receiving member goes too.
    Leave(Arc<str>),
    /// A request (or survey) for member `to` to serve locally.
    Request {
        /// The member asked.
        to: Arc<str>,
        /// The asker's number for it.
        n: u64,
        /// Who asks.
        sender: Arc<str>,
        /// The group.
        group: GroupId,
        /// The asker's timeout or survey deadline.
        ms: u32,
        /// A survey (every responder answers), not a request.
        survey: bool,
        /// The request.
        payload: Bytes,
    },
    /// An answer to `to`'s request `n`: the reply frame (`RESULT` or
    /// `ERR`) of a request, or one `RESPONSE` frame of a survey.
    Reply {
        /// The asking member.
        to: Arc<str>,
        /// Its number for the request.
        n: u64,
        /// Part of a survey.
        survey: bool,
        /// The frame.
        frame: Bytes,
    },
    /// Member `to`'s request `n` ended (timed out) where it was asked: a
    /// late reply to it is refused, as on one member.
    Cancel {
        /// The member serving it.
        to: Arc<str>,
        /// The asker's number for it.
        n: u64,
    },
    /// The member's whole state (see [`Note::Hello`]).
    State(Bytes),
    /// Asks every loop of the process for its `STATS` figures (`n`: the
    /// asker's number).
    StatsQuery(u64),
    /// One loop's figures for member `to`'s query `n`: `key=value` lines.
    Stats {
        /// The asking member.
        to: Arc<str>,
        /// Its query.
        n: u64,
        /// The figures.
        figures: Bytes,
    },
    /// A member (re)joined: everyone answers with its [`Note::State`].
    Hello,
    /// Still here (clusters).
    Beat,
    /// Leaving: forget me now.
    Bye,
}

impl Note {
    /// The one member this note is for, or `None` for everyone.
    pub fn target(&self) -> Option<&str> {
        match self {
            Self::Request { to, .. }
            | Self::Reply { to, .. }
            | Self::Stats { to, .. }
            | Self::Cancel { to, .. } => Some(to),
            _ => None,
        }
    }

    /// Bytes this note holds (for queue bounds).
    pub fn cost(&self) -> usize {
        64 + match self {
            Self::Publish { frame, .. } | Self::Message { frame, .. } => frame.len(),
            Self::Reply { frame, .. } => frame.len(),
            Self::Request { payload, .. } => payload.len(),
            Self::State(b) => b.len(),
            Self::Stats { figures, .. } => figures.len(),
            _ => 0,
        }
    }

    /// Appends the note's wire form (used between nodes): one protocol
    /// frame.
    pub fn encode(&self, out: &mut BytesMut) {
        let dec = |n: u64| n.to_string();
        match self {
            Self::Publish { frame: f, queues } => {
                let mut lines = String::new();
                for (g, q, m) in queues.iter() {
                    lines.push_str(&format!("{g} {q} {m}\n"));
                }
                let mut payload = BytesMut::with_capacity(lines.len() + f.len());
                payload.extend_from_slice(lines.as_bytes());
                payload.extend_from_slice(f);
                frame::encode(out, "PUB", &[dec(lines.len() as u64).as_bytes()], &payload);
            }
            Self::Message { to, frame: f } => frame::encode(out, "MSG", &[to.as_bytes()], f),
            Self::Online(u) => frame::encode(out, "ON", &[u.as_bytes()], b""),
            Self::Offline(u) => frame::encode(out, "OFF", &[u.as_bytes()], b""),
            Self::Joined(u, g) => {
                frame::encode(
                    out,
                    "JOIN",
                    &[u.as_bytes(), dec((*g).into()).as_bytes()],
                    b"",
                );
            }
            Self::Parted(u, g) => {
                frame::encode(
                    out,
                    "PART",
                    &[u.as_bytes(), dec((*g).into()).as_bytes()],
                    b"",
                );
            }
            Self::QueueJoined(g, q) => {
                frame::encode(
                    out,
                    "QJOIN",
                    &[dec((*g).into()).as_bytes(), q.as_bytes()],
                    b"",
                );
            }
            Self::QueueParted(g, q) => {
                frame::encode(
                    out,
                    "QPART",
                    &[dec((*g).into()).as_bytes(), q.as_bytes()],
                    b"",
                );
            }
            Self::Bound(u, a) => frame::encode(
                out,
                "BIND",
                &[
                    u.as_bytes(),
                    a.ip().to_string().as_bytes(),
                    dec(a.port().into()).as_bytes(),
                ],
                b"",
            ),
            Self::Unbound(u) => frame::encode(out, "UNBIND", &[u.as_bytes()], b""),
            Self::Leave(u) => frame::encode(out, "LEAVE", &[u.as_bytes()], b""),
            Self::Request {
                to,
                n,
                sender,
                group,
                ms,
                survey,
                payload,
            } => frame::encode(
                out,
                "REQ",
                &[
                    to.as_bytes(),
                    dec(*n).as_bytes(),
                    sender.as_bytes(),
                    dec((*group).into()).as_bytes(),
                    dec((*ms).into()).as_bytes(),
                    if *survey { b"s" } else { b"r" },
                ],
                payload,
            ),
            Self::Reply {
                to,
                n,
                survey,
                frame: f,
            } => frame::encode(
                out,
                "REP",
                &[
                    to.as_bytes(),
                    dec(*n).as_bytes(),
                    if *survey { b"s" } else { b"r" },
                ],
                f,
            ),
            Self::Cancel { to, n } => {
                frame::encode(out, "CANCEL", &[to.as_bytes(), dec(*n).as_bytes()], b"");
            }
            Self::State(b) => frame::encode(out, "STATE", &[], b),
            Self::StatsQuery(n) => frame::encode(out, "SQ", &[dec(*n).as_bytes()], b""),
            Self::Stats { to, n, figures } => {
                frame::encode(out, "ST", &[to.as_bytes(), dec(*n).as_bytes()], figures);
            }
            Self::Hello => frame::encode(out, "HELLO", &[], b""),
            Self::Beat => frame::encode(out, "BEAT", &[], b""),
            Self::Bye => frame::encode(out, "BYE", &[], b""),
        }
    }
}

/// A batch of notes from one member, as it crosses the engine:
/// `FROM 0 <member>` and the notes.
pub fn encode_batch(from: &str, notes: &[Note]) -> Bytes {
    let mut out = BytesMut::with_capacity(32 + notes.iter().map(Note::cost).sum::<usize>());
    frame::encode(&mut out, "FROM", &[from.as_bytes()], b"");
    for n in notes {
        n.encode(&mut out);
    }
    out.freeze()
}

/// Why a batch could not be read (a member running other code, or
/// garbage on the channel): the rest of the batch is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBatch(pub String);

/// Reads a batch made by [`encode_batch`]: the sending member and its
/// notes. Payloads are slices of `batch`, not copies. Notes of kinds this
/// code does not know are skipped (a newer member).
///
/// # Errors
///
/// [`BadBatch`] when the batch is not well formed; the notes read before
/// the fault are not returned either.
pub fn decode_batch(batch: &Bytes) -> Result<(Arc<str>, Vec<Note>), BadBatch> {
    let bad = |what: &str| BadBatch(what.to_owned());
    let mut at = 0;
    let mut from: Option<Arc<str>> = None;
    let mut notes = Vec::new();
    while at < batch.len() {
        let rest = &batch[at..];
        let (f, consumed) = match decode(rest, usize::MAX) {
            Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
            Ok(Decoded::Incomplete { skip, .. }) if skip == rest.len() => break,
            Ok(Decoded::Incomplete { .. }) => return Err(bad("truncated note")),
            Err(e) => return Err(BadBatch(format!("bad note: {e}"))),
        };
        let payload = batch.slice_ref(f.payload());
        at += consumed;
        let args: Vec<&[u8]> = f.args().collect();
        let text = |i: usize| -> Result<&str, BadBatch> {
            let a = args.get(i).ok_or_else(|| bad("missing argument"))?;
            std::str::from_utf8(a).map_err(|_| bad("argument is not text"))
        };
        let name = |i: usize| -> Result<Arc<str>, BadBatch> { text(i).map(Arc::from) };
        let number =
            |i: usize| -> Result<u64, BadBatch> { text(i)?.parse().map_err(|_| bad("bad number")) };
        let group = |i: usize| -> Result<GroupId, BadBatch> {
            parse_group(args.get(i).ok_or_else(|| bad("missing group"))?)
                .ok_or_else(|| bad("bad group"))
        };
        let verb = f.verb();
        let note = match verb.as_str() {
            "FROM" => {
                from = Some(name(0)?);
                continue;
            }
            "PUB" => {
                let n = usize::try_from(number(0)?).map_err(|_| bad("bad length"))?;
                if n > payload.len() {
                    return Err(bad("bad publish"));
                }
                let lines = std::str::from_utf8(&payload[..n]).map_err(|_| bad("bad queues"))?;
                let mut queues = Vec::new();
                for line in lines.lines() {
                    let mut it = line.split(' ');
                    let (Some(g), Some(q), Some(m)) = (it.next(), it.next(), it.next()) else {
                        return Err(bad("bad queue line"));
                    };
                    let g = parse_group(g.as_bytes()).ok_or_else(|| bad("bad group"))?;
                    queues.push((g, Box::from(q), Arc::from(m)));
                }
                Note::Publish {
                    frame: payload.slice(n..),
                    queues: queues.into(),
                }
            }
            "MSG" => Note::Message {
                to: name(0)?,
                frame: payload,
            },
            "ON" => Note::Online(name(0)?),
            "OFF" => Note::Offline(name(0)?),
            "JOIN" => Note::Joined(name(0)?, group(1)?),
            "PART" => Note::Parted(name(0)?, group(1)?),
            "QJOIN" => Note::QueueJoined(group(0)?, name(1)?),
            "QPART" => Note::QueueParted(group(0)?, name(1)?),
            "BIND" => {
                let ip: IpAddr = text(1)?.parse().map_err(|_| bad("bad address"))?;
                let port = u16::try_from(number(2)?).map_err(|_| bad("bad port"))?;
                Note::Bound(name(0)?, SocketAddr::new(ip, port))
            }
            "UNBIND" => Note::Unbound(name(0)?),
            "LEAVE" => Note::Leave(name(0)?),
            "REQ" => Note::Request {
                to: name(0)?,
                n: number(1)?,
                sender: name(2)?,
                group: group(3)?,
                ms: u32::try_from(number(4)?).map_err(|_| bad("bad time"))?,
                survey: text(5)? == "s",
                payload,
            },
            "REP" => Note::Reply {
                to: name(0)?,
                n: number(1)?,
                survey: text(2)? == "s",
                frame: payload,
            },
            "CANCEL" => Note::Cancel {
                to: name(0)?,
                n: number(1)?,
            },
            "STATE" => Note::State(payload),
            "SQ" => Note::StatsQuery(number(0)?),
            "ST" => Note::Stats {
                to: name(0)?,
                n: number(1)?,
                figures: payload,
            },
            "HELLO" => Note::Hello,
            "BEAT" => Note::Beat,
            "BYE" => Note::Bye,
            _ => continue,
        };
        notes.push(note);
    }
    let from = from.ok_or_else(|| bad("no sender"))?;
    Ok((from, notes))
}

/// What this member knows of another.
#[derive(Debug, Default)]
pub(super) struct View {
    /// Sessions by case-folded user, with display names.
    pub(super) users: Presence,
    /// Subscriptions: group → case-folded user → count.
    pub(super) groups: HashMap<GroupId, Members>,
    /// Queue memberships: (group, queue) → count.
    pub(super) queues: HashMap<(GroupId, Arc<str>), u32>,
    /// Directory entries by case-folded user: (user, address).
    pub(super) directory: HashMap<Arc<str>, (Arc<str>, SocketAddr)>,
    /// When it was last heard from.
    pub(super) seen: Option<Tick>,
    /// A loop of this process: never expires (it beats through no engine).
    pub(super) local: bool,
}

/// `name` case-folded, borrowed when it is lower case already (no
/// allocation for the common name).
pub(super) fn fold(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase().into()
    } else {
        name.into()
    }
}

/// A member's users online: sessions by case-folded name, and each user's
/// display name (its first session's). A user online costs each other loop
/// and node one 24-byte table slot; a name in lower case already is its own
/// key (the allocation the note brought, shared by every loop's view), and
/// only a name that differs from its folded form takes an entry in `shown`
/// and a folded copy.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Presence {
    counts: HashMap<Arc<str>, u32>,
    shown: HashMap<Arc<str>, Arc<str>>,
}

impl Presence {
    /// The display name and session count of a (case-folded) user.
    pub(super) fn get(&self, folded: &str) -> Option<(&Arc<str>, u32)> {
        let (k, &n) = self.counts.get_key_value(folded)?;
        Some((self.shown.get(folded).unwrap_or(k), n))
    }

    /// The folded name as stored (to share it).
    pub(super) fn key(&self, folded: &str) -> Option<&Arc<str>> {
        self.counts.get_key_value(folded).map(|(k, _)| k)
    }

    pub(super) fn contains_key(&self, folded: &str) -> bool {
        self.counts.contains_key(folded)
    }

    /// Sets `display`'s session count (its folded form computed here).
    pub(super) fn insert(&mut self, display: &Arc<str>, n: u32) {
        match fold(display) {
            std::borrow::Cow::Owned(folded) => {
                let folded: Arc<str> = folded.into();
                self.shown.insert(Arc::clone(&folded), Arc::clone(display));
                self.counts.insert(folded, n);
            }
            std::borrow::Cow::Borrowed(_) => {
                self.shown.remove(&**display);
                self.counts.insert(Arc::clone(display), n);
            }
        }
    }

    /// One session of `user` more or less.
    pub(super) fn bump(&mut self, user: &Arc<str>, up: bool) {
        let folded = fold(user);
        if let Some(n) = self.counts.get_mut(&*folded) {
            if up {
                *n += 1;
            } else {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&*folded);
                    self.shown.remove(&*folded);
                }
            }
        } else if up {
            self.insert(user, 1);
        }
    }

    /// (folded, display, count) of every user.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>, u32)> {
        (self.counts.iter()).map(|(k, &n)| (k, self.shown.get(k).unwrap_or(k), n))
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// The users of one remote member in one group, with their sessions there:
/// one user (the common case, no allocation of its own) or several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Members {
    One(Arc<str>, u32),
    /// Boxed: a table slot stays at 32 bytes for the common case.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<Arc<str>, u32>>),
}

impl Members {
    /// The (case-folded) users and their counts.
    pub(super) fn iter(&self) -> Box<dyn Iterator<Item = (&Arc<str>, u32)> + '_> {
        match self {
            Self::One(u, n) => Box::new(std::iter::once((u, *n))),
            Self::Many(m) => Box::new(m.iter().map(|(u, n)| (u, *n))),
        }
    }

    /// `n` sessions of `user` more (`key`: its interned name) or one less;
    /// returns whether nobody is left.
    fn bump(&mut self, user: &str, key: Option<Arc<str>>, n: u32) -> bool {
        match (&mut *self, key) {
            (Self::One(u, c), key) if **u == *user => {
                *c = if key.is_some() {
                    c.saturating_add(n)
                } else {
                    c.saturating_sub(1)
                };
                *c == 0
            }
            (Self::One(u, c), Some(key)) => {
                let mut m = HashMap::with_capacity(2);
                m.insert(Arc::clone(u), *c);
                m.insert(key, n);
                *self = Self::Many(Box::new(m));
                false
            }
            (Self::One(..), None) => false,
            (Self::Many(m), key) => {
                match (m.get_mut(user), key) {
                    (Some(c), Some(_)) => *c = c.saturating_add(n),
                    (Some(c), None) => {
                        *c = c.saturating_sub(1);
                        if *c == 0 {
                            m.remove(user);
                        }
                    }
                    (None, Some(key)) => {
                        m.insert(key, n);
                    }
                    (None, None) => {}
                }
                m.is_empty()
            }
        }
    }
}

fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, k: K, up: bool) {
    if up {
        *map.entry(k).or_default() += 1;
    } else if let Some(c) = map.get_mut(&k) {
        *c -= 1;
        if *c == 0 {
            map.remove(&k);
        }
    }
}

impl View {
    pub(super) fn online(&mut self, user: &Arc<str>, up: bool) {
        self.users.bump(user, up);
    }

    pub(super) fn joined(&mut self, user: &str, g: GroupId, up: bool) {
        if up {
            self.join_sessions(user, g, 1);
        } else {
            self.member_change(&fold(user), g, None, 1);
        }
    }

    /// `n` sessions of `user` more in `g`.
    fn join_sessions(&mut self, user: &str, g: GroupId, n: u32) {
        let folded = fold(user);
        let key = self.intern(&folded);
        self.member_change(&folded, g, Some(key), n);
    }

    /// `n` sessions of (case-folded) `folded` more in `g` (`key`: its
    /// interned name), or with `None` one less. No allocation for a user
    /// already counted, none to fold a name that is lower case already,
    /// and the name shared with `users`: a session leaving 200,000 groups
    /// is 200,000 of these on every other member, and its memberships are
    /// held here.
    fn member_change(&mut self, folded: &str, g: GroupId, key: Option<Arc<str>>, n: u32) {
        match (self.groups.get_mut(&g), key) {
            (Some(m), key) => {
                if m.bump(folded, key, n) {
                    self.groups.remove(&g);
                }
            }
            (None, Some(key)) => {
                self.groups.insert(g, Members::One(key, n));
            }
            (None, None) => {}
        }
    }

    /// The case-folded name as an `Arc` shared with `users` when the user
    /// is known there.
    fn intern(&self, folded: &str) -> Arc<str> {
        self.users
            .key(folded)
            .map_or_else(|| Arc::from(folded), Arc::clone)
    }

    pub(super) fn queue(&mut self, g: GroupId, q: &Arc<str>, up: bool) {
        bump(&mut self.queues, (g, Arc::clone(q)), up);
    }

    /// Whether a session here subscribes to `g` or is in a queue group of it.
    pub(super) fn serves(&self, g: GroupId) -> bool {
        self.groups.contains_key(&g) || self.queues.keys().any(|(qg, _)| *qg == g)
    }

    /// The whole view as [`Note::State`]'s payload: one line each,
    /// `u <user> <n>`, `g <group> <user> <n>`, `q <group> <queue> <n>`,
    /// `d <user> <ip> <port>`.
    pub(super) fn encode(&self) -> Bytes {
        let mut s = String::new();
        for (_, name, n) in self.users.iter() {
            s.push_str(&format!("u {name} {n}\n"));
        }
        for (g, users) in &self.groups {
            for (u, n) in users.iter() {
                s.push_str(&format!("g {g} {u} {n}\n"));
            }
        }
        for ((g, q), n) in &self.queues {
            s.push_str(&format!("q {g} {q} {n}\n"));
        }
        for (u, a) in self.directory.values() {
            s.push_str(&format!("d {u} {} {}\n", a.ip(), a.port()));
        }
        Bytes::from(s)
    }

    /// Reads [`View::encode`]'s form; lines it cannot read are skipped.
    pub(super) fn decode(state: &[u8]) -> Self {
        let mut v = Self::default();
        let text = String::from_utf8_lossy(state);
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            let count = |s: &str| s.parse::<u32>().ok().filter(|&n| n > 0);
            let group = |s: &str| parse_group(s.as_bytes());
            match parts.as_slice() {
                ["u", user, n] => {
                    if let Some(n) = count(n) {
                        v.users.insert(&Arc::from(*user), n);
                    }
                }
                ["g", g, user, n] => {
                    if let (Some(g), Some(n)) = (group(g), count(n)) {
                        v.join_sessions(user, g, n);
                    }
                }
                ["q", g, q, n] => {
                    if let (Some(g), Some(n)) = (group(g), count(n)) {
                        v.queues.insert((g, Arc::from(*q)), n);
                    }
                }
                ["d", user, ip, port] => {
                    if let (Ok(ip), Ok(port)) = (ip.parse::<IpAddr>(), port.parse::<u16>()) {
                        let folded: Arc<str> = user.to_ascii_lowercase().into();
                        v.directory
                            .insert(folded, (Arc::from(*user), SocketAddr::new(ip, port)));
                    }
                }
                _ => {}
            }
        }
        v
    }
}

/// The cluster side of a broker.
#[derive(Debug)]
pub(super) struct Cluster {
    /// This member's name.
    pub(super) me: Arc<str>,
    /// How long a silent member is remembered (`None`: members never die
    /// apart, as the loops of one process).
    pub(super) expiry: Option<Duration>,
    pub(super) status: ClusterStatus,
    /// What this member knows of each other, by name.
    pub(super) members: HashMap<Arc<str>, View>,
    /// Notes to send, in order.
    pub(super) outbox: Vec<Note>,
    /// Round-robin over remote members for requests.
    pub(super) rr: usize,
    /// Each queue group's round-robin over its members everywhere.
    pub(super) queue_rr: HashMap<(GroupId, Arc<str>), usize>,
    /// When the next [`Note::Beat`] is due.
    pub(super) beat_at: Option<Tick>,
    /// Notes received, and batches that could not be read.
    pub(super) received: u64,
    pub(super) sent: u64,
    /// Dropped by the carrier (see `Broker::set_cluster_dropped`).
    pub(super) dropped: u64,
    /// Notes received and not yet worked through, with their senders.
    pub(super) inbox: std::collections::VecDeque<(Arc<str>, Note, bool)>,
    /// A new member was met: this one's state goes out.
    pub(super) state_due: bool,
    /// Cost of the notes worked through, for the carrier's bound.
    pub(super) processed_cost: usize,
    /// The turn (its `now`) whose notes budget was last worked from, and
    /// the work done of it: the batches handed in during one turn share
    /// one budget.
    pub(super) turn_work: Option<(Instant, usize)>,
    /// `STATS` waiting for the other loops' figures, by query number.
    pub(super) stats: HashMap<u64, StatsQuery>,
    pub(super) next_query: u64,
    /// Distinct users online on this loop or another loop of the process
    /// (`STATS`' `users`; other nodes count their own), kept as presence
    /// changes: each change looks at one user in each view, never at
    /// every user.
    pub(super) users_in_process: usize,
}

/// A `STATS` waiting for the other loops.
#[derive(Debug)]
pub(super) struct StatsQuery {
    /// The asking session and its generation.
    pub(super) conn: (usize, u32),
    /// Loops yet to answer.
    pub(super) waiting: usize,
    /// The figures so far, in `STATS` order.
    pub(super) figures: Vec<(&'static str, u64)>,
    /// When to answer with what has come.
    pub(super) deadline: Tick,
}

impl Cluster {
    pub(super) fn new(me: &str, expiry: Option<Duration>) -> Self {
        Self {
            me: Arc::from(me),
            expiry,
            status: if expiry.is_some() {
                ClusterStatus::Degraded
            } else {
                ClusterStatus::Off
            },
            members: HashMap::new(),
            outbox: Vec::new(),
            rr: 0,
            queue_rr: HashMap::new(),
            beat_at: None,
            received: 0,
            sent: 0,
            dropped: 0,
            inbox: std::collections::VecDeque::new(),
            processed_cost: 0,
            turn_work: None,
            state_due: false,
            stats: HashMap::new(),
            next_query: 0,
            users_in_process: 0,
        }
    }

    pub(super) fn send(&mut self, note: Note) {
        self.sent += 1;
        self.outbox.push(note);
    }

    /// Whether any other member has a session of this (case-folded) user.
    pub(super) fn has_user(&self, folded: &str) -> bool {
        self.members.values().any(|v| v.users.contains_key(folded))
    }

    /// The members (sorted, so the round-robin is the same everywhere) for
    /// which `pick` holds; the next of them in the round-robin.
    pub(super) fn next_member(&mut self, pick: impl Fn(&View) -> bool) -> Option<Arc<str>> {
        let mut names: Vec<&Arc<str>> = (self.members.iter())
            .filter(|(_, v)| pick(v))
            .map(|(n, _)| n)
            .collect();
        if names.is_empty() {
            return None;
        }
        names.sort_unstable();
        self.rr = self.rr.wrapping_add(1);
        Some(Arc::clone(names[self.rr % names.len()]))
    }
}

/// The whole state of this member as [`Note::State`]'s payload, from its
/// own tables (see [`View::encode`]).
pub(super) fn state_of(view: &View) -> Bytes {
    view.encode()
}

/// Whether `bytes` is whole frames, each of one of `verbs`, and at least
/// one (and exactly one with `one`): what another member hands to
/// sessions is checked before it is queued to them, so a bad member (or
/// anyone who can publish on the engine) cannot break a client's stream.
pub(super) fn frames_of(bytes: &[u8], verbs: &[&str], one: bool) -> bool {
    let mut at = 0;
    let mut count = 0;
    while at < bytes.len() {
        match decode(&bytes[at..], usize::MAX) {
            Ok(Decoded::Frame { frame, consumed }) if verbs.contains(&frame.verb().as_str()) => {
                at += consumed;
                count += 1;
            }
            _ => return false,
        }
    }
    count > 0 && (!one || count == 1)
}

/// Skips a [`Note::Publish`] frame's header: the groups it names (after
/// the sender).
pub(super) fn published_groups(frame: &Bytes) -> Option<Vec<GroupId>> {
    match decode(frame, usize::MAX) {
        Ok(Decoded::Frame { frame: f, consumed })
            if f.verb().as_str() == "PUBLISHED" && consumed == frame.len() =>
        {
            f.args().skip(1).map(parse_group).collect()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_note_survives_the_wire() {
        let frame = frame::published("alice", &[1, 2], b"hi");
        let notes = vec![
            Note::Publish {
                frame: frame.clone(),
                queues: vec![(2, Box::from("work"), Arc::from("node-b"))].into(),
            },
            Note::Publish {
                frame,
                queues: Vec::new().into(),
            },
            Note::Message {
                to: "bob".into(),
                frame: frame::encode_to_bytes("MESSAGE", &[b"alice"], b"x\ny"),
            },
            Note::Online("Alice".into()),
            Note::Offline("Alice".into()),
            Note::Joined("Alice".into(), 7),
            Note::Parted("Alice".into(), 7),
            Note::QueueJoined(7, "work".into()),
            Note::QueueParted(7, "work".into()),
            Note::Bound("bob".into(), "127.0.0.1:9000".parse().unwrap()),
            Note::Bound("bob".into(), "[::1]:9000".parse().unwrap()),
            Note::Unbound("bob".into()),
            Note::Leave("bob".into()),
            Note::Request {
                to: "node:7420".into(),
                n: 9,
                sender: "alice".into(),
                group: 3,
                ms: 5000,
                survey: true,
                payload: Bytes::from_static(b"q?"),
            },
            Note::Reply {
                to: "node:7420".into(),
                n: 9,
                survey: false,
                frame: frame::result(b"yes"),
            },
            Note::State(Bytes::from_static(b"u alice 2\n")),
            Note::StatsQuery(4),
            Note::Cancel {
                to: "b".into(),
                n: 7,
            },
            Note::Stats {
                to: "a".into(),
                n: 4,
                figures: Bytes::from_static(b"connections=3\n"),
            },
            Note::Hello,
            Note::Beat,
            Note::Bye,
        ];
        let batch = encode_batch("node-a:7420", &notes);
        let (from, back) = decode_batch(&batch).unwrap();
        assert_eq!(&*from, "node-a:7420");
        assert_eq!(back, notes);
        // Garbage and truncation are refused, not a panic.
        assert!(decode_batch(&batch.slice(..batch.len() - 1)).is_err());
        assert!(decode_batch(&Bytes::from_static(b"PUB 3 9\nabc")).is_err());
        assert!(decode_batch(&Bytes::from_static(b"ON 0 x\n")).is_err());
        // An unknown note is skipped.
        let (_, n) = decode_batch(&Bytes::from_static(b"FROM 0 a\nNEWTHING 0\nBEAT 0\n")).unwrap();
        assert_eq!(n, vec![Note::Beat]);
    }

    #[test]
    fn a_view_survives_its_state() {
        let mut v = View::default();
        let alice: Arc<str> = "Alice".into();
        v.online(&alice, true);
        v.online(&alice, true);
        v.joined("Alice", 4, true);
        v.queue(4, &Arc::from("w"), true);
        v.directory.insert(
            "alice".into(),
            ("Alice".into(), "10.0.0.1:5".parse().unwrap()),
        );
        let back = View::decode(&v.encode());
        assert_eq!(back.users, v.users);
        assert_eq!(back.groups, v.groups);
        assert_eq!(back.queues, v.queues);
        assert_eq!(back.directory, v.directory);
        v.online(&alice, false);
        assert_eq!(v.users.get("alice").map(|e| e.1), Some(1));
        assert_eq!(v.users.get("alice").map(|e| &**e.0), Some("Alice"));
        // A lower-case name is its own key: the note's allocation, no copy
        // and no display entry; the first session's name is the one shown.
        let bob: Arc<str> = Arc::from("bob");
        v.online(&bob, true);
        v.online(&Arc::from("BOB"), true);
        assert!(Arc::ptr_eq(v.users.key("bob").expect("bob"), &bob));
        assert_eq!(v.users.get("bob").map(|e| (&**e.0, e.1)), Some(("bob", 2)));
        v.online(&bob, false);
        v.online(&bob, false);
        assert!(!v.users.contains_key("bob"));
        assert_eq!(v.users.shown.len(), 1, "Alice's display name only");
        v.online(&alice, false);
        assert!(v.users.is_empty() && v.users.shown.is_empty());
        v.joined("alice", 4, false);
        assert!(v.groups.is_empty() && v.serves(4));
    }

    /// A member's state names its session counts; reading them costs a
    /// line each, whatever the counts say (a count was once added one
    /// session at a time: a state of large counts from another member
    /// held the loop).
    #[test]
    fn a_state_counts_sessions_in_one_step() {
        let v = View::decode(b"u Bob 4000000000\ng 4 Bob 4000000000\ng 4 carol 2\n");
        assert_eq!(
            v.users.get("bob").map(|e| (&**e.0, e.1)),
            Some(("Bob", 4_000_000_000))
        );
        let mut members: Vec<(String, u32)> = (v.groups.get(&4).expect("group 4").iter())
            .map(|(u, n)| (u.to_string(), n))
            .collect();
        members.sort();
        assert_eq!(
            members,
            [("bob".into(), 4_000_000_000), ("carol".into(), 2)]
        );
    }

    /// A remote member's group membership is held by every other loop and
    /// node: its table slot stays small (measured: 200,000 memberships of
    /// one remote user cost about 30 MB a loop with 64-byte slots, about 20
    /// with these).
    #[test]
    fn a_remote_membership_slot_stays_small() {
        assert!(std::mem::size_of::<(GroupId, Members)>() <= 32);
    }

    #[test]
    fn published_groups_are_read_from_the_frame() {
        let f = frame::published("a", &[3, 9], b"x");
        assert_eq!(published_groups(&f), Some(vec![3, 9]));
        assert_eq!(published_groups(&frame::ack("no")), None);
        let mut two = f.to_vec();
        two.extend_from_slice(b"junk");
        assert_eq!(published_groups(&Bytes::from(two)), None);
        let r = frame::encode_to_bytes("RESPONSE", &[b"a"], b"1");
        let rr = [r.clone(), r.clone()].concat();
        assert!(frames_of(&rr, &["RESPONSE"], false));
        assert!(!frames_of(&rr, &["RESPONSE"], true));
        assert!(!frames_of(b"", &["RESPONSE"], false));
        assert!(!frames_of(b"RESPONSE 9 a\n1", &["RESPONSE"], false));
    }
}
