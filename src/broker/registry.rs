//! The registry: groups with their subscribers and watchers, the users
//! online with their sessions, and the fan-out of a message to them.
//! Subscriber and watcher lists are sorted slab keys; a user's sessions are
//! kept inline when there is one.

use std::sync::Arc;

use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use log::{debug, info, warn};

use super::session::State;
use super::{Broker, DeliveryError, Event, Sessions};
use crate::conn::{ConnId, PushError, Shared};
use crate::proto::{GroupId, frame};

/// A fan-out delivered over several turns (see [`Broker::fanout`]).
#[derive(Debug)]
pub(super) struct Spread {
    /// The publishing session and its generation, answered when done.
    from: Option<(ConnId, u32)>,
    sender: Box<str>,
    groups: Box<[GroupId]>,
    msg: Shared,
    payload_len: usize,
    seq: u64,
    cursor: Cursor,
    delivered: usize,
}

impl Spread {
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn names(&self, g: GroupId) -> bool {
        self.groups.contains(&g)
    }
}

/// Where a spread fan-out goes on: the index of the group, and the first
/// slab key in its subscriber list not yet looked at.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    group: usize,
    key: usize,
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) name: Box<str>,
    /// Registered at start-up, as opposed to created on first use with
    /// `open_groups` (which is forgotten again once nobody uses it).
    pub(super) registered: bool,
    /// Subscribed sessions, sorted slab keys.
    pub(super) subscribers: Vec<usize>,
    /// Watching sessions, sorted slab keys.
    pub(super) watchers: Vec<usize>,
    /// Queue groups on this group (protocol.md section 9).
    pub(super) queues: Vec<super::queues::Queue>,
}

/// The sessions of one user, oldest first: almost always one, kept inline so
/// that a user table entry costs no allocation of its own. The user's display
/// name is its oldest session's (no separate copy).
#[derive(Debug, Clone)]
pub(super) enum Keys {
    One(usize),
    Many(Vec<usize>),
}

impl Keys {
    pub(super) fn push(&mut self, key: usize) {
        match self {
            Self::One(first) => *self = Self::Many(vec![*first, key]),
            Self::Many(keys) => keys.push(key),
        }
    }

    /// Removes `key`; returns whether none are left.
    pub(super) fn remove(&mut self, key: usize) -> bool {
        match self {
            Self::One(k) => *k == key,
            Self::Many(keys) => {
                keys.retain(|&k| k != key);
                if let [only] = keys.as_slice() {
                    *self = Self::One(*only);
                }
                matches!(self, Self::Many(keys) if keys.is_empty())
            }
        }
    }

    pub(super) fn as_slice(&self) -> &[usize] {
        match self {
            Self::One(k) => std::slice::from_ref(k),
            Self::Many(keys) => keys,
        }
    }
}

impl Broker {
    /// The `GROUPS` reply (`<id>,<name>` lines, by number), built only when
    /// the groups changed since the last one.
    pub(super) fn groups_reply(&mut self) -> Bytes {
        if let Some(reply) = &self.groups_reply {
            return reply.clone();
        }
        let mut list: Vec<(GroupId, &str)> =
            self.groups.iter().map(|(&id, g)| (id, &*g.name)).collect();
        // Open groups made by use on other members (their names are empty).
        let remote = if self.config.open_groups {
            self.remote_groups()
        } else {
            Vec::new()
        };
        list.extend(remote.into_iter().map(|g| (g, "")));
        list.sort_unstable_by_key(|&(id, _)| id);
        list.dedup_by_key(|&mut (id, _)| id);
        let mut out = Vec::with_capacity(list.len() * 8);
        for (id, name) in list {
            let _ = writeln!(out, "{id},{name}");
        }
        self.work += self.groups.len();
        let reply = frame::result(&out);
        self.groups_reply = Some(reply.clone());
        reply
    }
}

/// Why groups named by a command cannot be used.
#[derive(Debug, Clone, Copy)]
pub(super) enum GroupRefusal {
    /// Not registered (and groups are not open).
    Unknown(GroupId),
    /// Creating them would pass `max_open_groups`.
    Limit,
}

impl Broker {
    /// Logs a session in as `name`; `false` (and nothing changes) when the
    /// user already has `max_sessions_per_user` sessions.
    pub(super) fn login<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        name: Box<str>,
    ) -> bool {
        let folded = name.to_ascii_lowercase();
        let sessions = self
            .users
            .get(folded.as_str())
            .map_or(0, |k| k.as_slice().len())
            + self.remote_sessions(&folded);
        if sessions >= self.config.max_sessions_per_user {
            warn!(
                "{}: login refused for {name}: limit: {sessions} sessions already",
                links.log_peer(conn)
            );
            return false;
        }
        // One allocation for the name in the common case: the session, the
        // user record and the table key share it.
        let typed: Arc<str> = match self.users.get(folded.as_str()) {
            Some(keys) => match user_name(links, keys) {
                Some(first) if **first == *name => Arc::clone(first),
                _ => Arc::from(name.as_ref()),
            },
            _ => Arc::from(name.as_ref()),
        };
        let Some(s) = links.proto_mut(conn) else {
            return false;
        };
        s.state = State::Open;
        s.name = Some(Arc::clone(&typed));
        links.set_trusted(conn);
        self.counters.sessions += 1;
        match self.users.get_mut(folded.as_str()) {
            Some(keys) => keys.push(conn.0),
            None => {
                if self.in_cluster() {
                    let elsewhere = self.other_loop_has(&folded);
                    self.count_in_process(elsewhere, true);
                }
                let table_key = if *typed == *folded {
                    Arc::clone(&typed)
                } else {
                    Arc::from(folded.as_str())
                };
                self.users.insert(table_key, Keys::One(conn.0));
                self.who_reply = None;
            }
        }
        if self.in_cluster() {
            self.note(super::cluster::Note::Online(Arc::clone(&typed)));
        }
        info!("{}: logged in as {name}", links.log_peer(conn));
        self.emit(Event::LoggedIn {
            conn,
            user: name.into(),
        });
        true
    }

    /// The reply to a login refused at `max_sessions_per_user`.
    pub(super) fn too_many_sessions(&mut self) -> bytes::Bytes {
        self.counters.limits_refused += 1;
        let text = format!(
            "this user has {} sessions already",
            self.config.max_sessions_per_user
        );
        frame::err(crate::error::ErrorCode::Limit, &text)
    }

    /// Checks that every group exists, creating them with `open_groups`.
    pub(super) fn ensure_groups(&mut self, groups: &[GroupId]) -> Result<(), GroupRefusal> {
        if self.config.open_groups {
            let mut missing: Vec<GroupId> = groups
                .iter()
                .copied()
                .filter(|g| !self.groups.contains_key(g))
                .collect();
            missing.sort_unstable();
            missing.dedup();
            // Over several members the limit counts every member's open
            // groups once (those made elsewhere, from the views).
            // Exact only near the limit: far from it, an upper bound of the
            // others' groups (their view sizes) will do, without a walk.
            let near = self.remote_group_bound() + self.open_count + missing.len()
                > self.config.max_open_groups;
            let (elsewhere, new) = if self.in_cluster() && near {
                let remote = self.remote_groups();
                let only_there = (remote.iter())
                    .filter(|g| !self.groups.contains_key(g))
                    .count();
                let new = (missing.iter())
                    .filter(|g| remote.binary_search(g).is_err())
                    .count();
                (only_there, new)
            } else {
                (0, missing.len())
            };
            // All or nothing: none is created past the limit.
            if self.open_count + elsewhere + new > self.config.max_open_groups {
                return Err(GroupRefusal::Limit);
            }
            for g in missing {
                self.open_count += 1;
                self.groups_reply = None;
                self.groups.insert(
                    g,
                    Group {
                        name: Box::from(""),
                        registered: false,
                        subscribers: Vec::new(),
                        watchers: Vec::new(),
                        queues: Vec::new(),
                    },
                );
            }
            return Ok(());
        }
        match groups.iter().find(|g| !self.groups.contains_key(g)) {
            Some(&g) => Err(GroupRefusal::Unknown(g)),
            None => Ok(()),
        }
    }

    /// Drops an open group nobody subscribes to or watches.
    pub(super) fn forget_if_unused(&mut self, g: GroupId) {
        if self.groups.get(&g).is_some_and(|gr| {
            !gr.registered
                && gr.subscribers.is_empty()
                && gr.watchers.is_empty()
                && gr.queues.is_empty()
        }) {
            self.groups.remove(&g);
            self.groups_reply = None;
            self.open_count = self.open_count.saturating_sub(1);
        }
    }

    /// Subscribes a session to the groups it is not in yet (they exist);
    /// tells their watchers. Returns the groups newly joined.
    pub(super) fn subscribe<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        groups: &[GroupId],
    ) -> Vec<GroupId> {
        let mut joined = Vec::new();
        for (n, &g) in groups.iter().enumerate() {
            // A `JOINED` can cut off a slow watcher, and that may be this
            // very session (it watches what it joins): it has left every
            // group and joins no more; open groups made for it are dropped.
            if links.is_closing(conn) {
                for &rest in groups.get(n..).unwrap_or_default() {
                    self.forget_if_unused(rest);
                }
                break;
            }
            let Some(s) = links.proto(conn) else {
                break;
            };
            let Err(i) = s.groups.binary_search(&g) else {
                continue;
            };
            // A watcher cut off by an earlier `JOINED` may have taken with
            // it an open group it alone used: made again (registered groups
            // are never dropped).
            if self.ensure_groups(&[g]).is_err() {
                continue;
            }
            let Some(group) = self.groups.get_mut(&g) else {
                continue;
            };
            if insert_sorted(&mut group.subscribers, conn.0) {
                self.counters.subscriptions += 1;
            }
            if let Some(s) = links.proto_mut(conn) {
                s.groups.insert(i, g);
            }
            joined.push(g);
            self.note_membership(links, conn, g, true);
            self.notify_watchers(links, "JOINED", conn, g);
        }
        joined
    }

    /// Adds a session to the watchers of groups (they exist).
    pub(super) fn watch<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, groups: &[GroupId]) {
        for &g in groups {
            let Some(s) = links.proto_mut(conn) else {
                return;
            };
            if let Err(i) = s.watching.binary_search(&g) {
                s.watching.insert(i, g);
                if let Some(group) = self.groups.get_mut(&g) {
                    let _ = insert_sorted(&mut group.watchers, conn.0);
                }
            }
        }
    }

    /// Takes a session off the watchers of groups; forgets open groups left
    /// unused.
    pub(super) fn unwatch<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, groups: &[GroupId]) {
        for &g in groups {
            if let Some(s) = links.proto_mut(conn) {
                if let Ok(i) = s.watching.binary_search(&g) {
                    s.watching.remove(i);
                }
            }
            if let Some(group) = self.groups.get_mut(&g) {
                let _ = remove_sorted(&mut group.watchers, conn.0);
            }
            self.forget_if_unused(g);
        }
    }

    pub(super) fn unsubscribe<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        groups: &[GroupId],
    ) {
        let mut left = Vec::new();
        for &g in groups {
            let Some(s) = links.proto_mut(conn) else {
                return;
            };
            let Ok(i) = s.groups.binary_search(&g) else {
                continue;
            };
            s.groups.remove(i);
            self.part(links, conn, g);
            left.push(g);
        }
        self.report_left(links, conn, left);
    }

    /// The group side of leaving `g`: out of its subscribers, its watchers
    /// told, the group forgotten if now unused. One or two map look-ups in
    /// the common case (no watchers): it runs once per group a leaving
    /// session was in.
    fn part<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, g: GroupId) {
        let Some(group) = self.groups.get_mut(&g) else {
            return;
        };
        if remove_sorted(&mut group.subscribers, conn.0) {
            self.counters.subscriptions -= 1;
        }
        let watched = !group.watchers.is_empty();
        self.note_membership(links, conn, g, false);
        let Some(group) = self.groups.get_mut(&g) else {
            return;
        };
        if watched {
            self.notify_watchers(links, "PARTED", conn, g);
        } else if !group.registered && group.subscribers.is_empty() && group.queues.is_empty() {
            self.groups.remove(&g);
            self.groups_reply = None;
            self.open_count = self.open_count.saturating_sub(1);
        }
    }

    fn report_left<T>(&mut self, links: &Sessions<T>, conn: ConnId, left: Vec<GroupId>) {
        if !left.is_empty() && self.events_enabled {
            let user = name_of(links, conn);
            self.emit(Event::Unsubscribed {
                conn,
                user,
                groups: left,
            });
        }
    }

    /// Takes a session out of every group, watch list and the user table.
    pub(super) fn leave<T>(&mut self, links: &mut Sessions<T>, conn: ConnId) {
        self.leave_queues(conn);
        self.leave_requests(links, conn);
        let Some(s) = links.proto_mut(conn) else {
            return;
        };
        for g in std::mem::take(&mut s.watching) {
            if let Some(group) = self.groups.get_mut(&g) {
                let _ = remove_sorted(&mut group.watchers, conn.0);
            }
            self.forget_if_unused(g);
        }
        // The whole list at once: linear in the session's groups (taking
        // them out one by one from the front was quadratic).
        let Some(s) = links.proto_mut(conn) else {
            return;
        };
        let groups = std::mem::take(&mut s.groups);
        for &g in &groups {
            self.part(links, conn, g);
        }
        self.report_left(links, conn, groups);
        let Some(s) = links.proto(conn) else {
            return;
        };
        if let Some(name) = &s.name {
            if self.cluster.is_some() {
                let note = super::cluster::Note::Offline(Arc::clone(name));
                self.note(note);
            }
            let folded = name.to_ascii_lowercase();
            if let Some(user) = self.users.get_mut(folded.as_str()) {
                // The oldest session names the user: it may change.
                self.who_reply = None;
                let before = user.as_slice().len();
                let empty = user.remove(conn.0);
                let after = if empty { 0 } else { user.as_slice().len() };
                self.counters.sessions -= (before - after) as u64;
                if empty {
                    self.users.remove(folded.as_str());
                    if self.in_cluster() {
                        let elsewhere = self.other_loop_has(&folded);
                        self.count_in_process(true, elsewhere);
                    }
                }
            }
        }
    }

    /// Pushes `JOINED 0 <user> <g>` or `PARTED 0 <user> <g>` to the group's watchers.
    pub(super) fn notify_watchers<T>(
        &mut self,
        links: &mut Sessions<T>,
        verb: &str,
        conn: ConnId,
        g: GroupId,
    ) {
        let Some(group) = self.groups.get(&g) else {
            return;
        };
        if group.watchers.is_empty() {
            return;
        }
        let user = name_of(links, conn);
        let mut gbuf = BytesMut::new();
        frame::put_decimal(&mut gbuf, u64::from(g));
        let msg = Shared::new(frame::encode_to_bytes(verb, &[user.as_bytes(), &gbuf], b""));
        let watchers = group.watchers.clone();
        for w in watchers {
            self.push_shared(links, ConnId(w), &msg);
        }
    }

    /// Encodes `PUBLISHED` once and queues it to every subscriber of any
    /// listed group. With `spread`, a fan-out larger than one turn's work
    /// budget (`WORK_BUDGET` subscribers looked at) delivers a budget's
    /// worth now and the rest a budget per turn
    /// ([`Broker::continue_spread`]), and returns `Ok(None)`; otherwise it
    /// returns how many connections it was queued for.
    pub(super) fn fanout<T>(
        &mut self,
        links: &mut Sessions<T>,
        from: Option<ConnId>,
        sender: &str,
        groups: &[GroupId],
        payload: &[u8],
        spread: bool,
    ) -> Result<Option<usize>, DeliveryError> {
        self.ensure_groups(groups).map_err(|r| match r {
            GroupRefusal::Unknown(g) => DeliveryError::UnknownGroup(g),
            GroupRefusal::Limit => DeliveryError::Limit,
        })?;
        // Encoded once, into one allocation, and shared by every subscriber.
        let msg = Shared::new(frame::published(sender, groups, payload));
        let mut remote_turns: Arc<[super::cluster::QueueTurn]> = Arc::new([]);
        if self.in_cluster() {
            remote_turns = self.remote_queue_turns(groups);
            let frame = msg.frame().clone();
            let queues = Arc::clone(&remote_turns);
            self.note(super::cluster::Note::Publish { frame, queues });
        }
        self.publish_seq += 1;
        let seq = self.publish_seq;
        let mut cursor = Cursor::default();
        let mut delivered = 0;
        // ECHO off: the publisher counts as served already.
        if let Some(c) = from.filter(|c| self.echo_off.contains(&c.0)) {
            if let Some(s) = links.proto_mut(c) {
                s.mark = seq;
            }
        }
        // One member of each queue group first (the plain subscribers' pass
        // then skips whoever got it, so nobody gets it twice).
        delivered += self.deliver_to_queues(links, &msg, seq, groups, &remote_turns);
        // One budget's worth now, whatever the turn has done: a fan-out
        // that fits is never split, and a connection's turn stays within
        // two budgets.
        let budget = if spread { self.work_budget } else { usize::MAX };
        let done = self.deliver_step(
            links,
            &msg,
            seq,
            groups,
            &mut cursor,
            &mut delivered,
            budget,
        );
        if done {
            self.fanout_done(from, sender, groups, msg.frame(), payload.len(), delivered);
            return Ok(Some(delivered));
        }
        debug!(
            "{}: fan-out to {} groups spread over turns",
            from.map_or_else(|| sender.to_owned(), |c| links.log_id(c).to_string()),
            groups.len()
        );
        self.spread = Some(Box::new(Spread {
            from: from.and_then(|c| Some((c, links.get(c)?.generation()))),
            sender: sender.into(),
            groups: groups.into(),
            msg,
            payload_len: payload.len(),
            seq,
            cursor,
            delivered,
        }));
        Ok(None)
    }

    /// Delivers the pending spread fan-out's next slice (a work budget's
    /// worth); answers its publisher once it is done. Run once per turn.
    pub(super) fn continue_spread<T>(&mut self, links: &mut Sessions<T>) {
        let Some(mut sp) = self.spread.take() else {
            return;
        };
        self.work = 0;
        let Spread {
            msg,
            seq,
            groups,
            cursor,
            delivered,
            ..
        } = &mut *sp;
        let budget = self.work_budget;
        if !self.deliver_step(links, msg, *seq, groups, cursor, delivered, budget) {
            self.spread = Some(sp);
            return;
        }
        let sp = *sp;
        if let Some((conn, generation)) = sp.from {
            let live = links
                .get(conn)
                .is_some_and(|l| l.generation() == generation && !l.is_closing());
            if live {
                let ack = frame::ack(&format!("published to {}", sp.delivered));
                self.push_reply(links, conn, ack);
            }
        }
        let from = sp.from.map(|(c, _)| c);
        self.fanout_done(
            from,
            &sp.sender,
            &sp.groups,
            sp.msg.frame(),
            sp.payload_len,
            sp.delivered,
        );
    }

    /// Finishes a pending spread fan-out at once (before a publish from the
    /// embedding program, which must not overtake it, and at shutdown).
    pub(super) fn finish_spread<T>(&mut self, links: &mut Sessions<T>) {
        while self.spread.is_some() {
            self.continue_spread(links);
        }
    }

    /// Whether a fan-out is being delivered over turns: the next `PUBLISH`
    /// of anyone waits for it (per-group order, and one dedup mark per
    /// session), and so does all input of its publisher.
    pub(super) fn spreading(&self) -> Option<Option<ConnId>> {
        self.spread.as_ref().map(|s| s.from.map(|(c, _)| c))
    }

    /// Queues `msg` to the subscribers of `groups` from `cursor` on, at most
    /// `budget` of them looked at; returns whether all were. A session in
    /// several of the groups gets it once (its `mark` is the publish's
    /// `seq`). The cursor resumes by slab key in the sorted subscriber
    /// lists, so sessions that join, leave or close between slices are
    /// neither skipped twice nor served twice.
    #[allow(clippy::too_many_arguments)]
    fn deliver_step<T>(
        &mut self,
        links: &mut Sessions<T>,
        msg: &Shared,
        seq: u64,
        groups: &[GroupId],
        cursor: &mut Cursor,
        delivered: &mut usize,
        budget: usize,
    ) -> bool {
        let mut slow = Vec::new();
        let mut left = budget;
        let mut done = true;
        while let Some(g) = groups.get(cursor.group) {
            if let Some(group) = self.groups.get(g) {
                let subs = &group.subscribers;
                let rest = &subs[subs.partition_point(|&k| k < cursor.key)..];
                let take = rest.len().min(left);
                for &sub in &rest[..take] {
                    let id = ConnId(sub);
                    // Once per connection, however many of the groups it is in.
                    let first = |s: &mut super::Session| std::mem::replace(&mut s.mark, seq) != seq;
                    match links.push_with(id, msg, first) {
                        Ok(true) => *delivered += 1,
                        Ok(false) | Err(PushError::Gone) => {}
                        Err(PushError::Full) => slow.push(id),
                    }
                }
                left -= take;
                self.work += take;
                if let Some(&next) = rest.get(take) {
                    cursor.key = next;
                    done = false;
                    break;
                }
            }
            cursor.group += 1;
            cursor.key = 0;
            if left == 0 && cursor.group < groups.len() {
                done = false;
                break;
            }
        }
        for sub in slow {
            self.slow_consumer(links, sub);
        }
        done
    }

    /// What follows a fan-out: open groups nobody uses are forgotten, and
    /// the embedding program hears of it.
    fn fanout_done(
        &mut self,
        from: Option<ConnId>,
        sender: &str,
        groups: &[GroupId],
        msg: &Bytes,
        payload_len: usize,
        delivered: usize,
    ) {
        for &g in groups {
            self.forget_if_unused(g);
        }
        self.counters.published += 1;
        self.counters.delivered += delivered as u64;
        if self.events_enabled {
            let payload = msg.slice(msg.len() - payload_len..);
            self.emit(Event::Published {
                conn: from,
                sender: sender.to_owned(),
                groups: groups.to_vec(),
                payload,
                delivered,
            });
        }
    }

    pub(super) fn deliver_message<T>(
        &mut self,
        links: &mut Sessions<T>,
        from: Option<ConnId>,
        sender: &str,
        to: &str,
        payload: &[u8],
    ) -> Result<usize, DeliveryError> {
        let folded = to.to_ascii_lowercase();
        let remote = self.remote_user(&folded);
        let msg = Shared::new(frame::encode_to_bytes(
            "MESSAGE",
            &[sender.as_bytes()],
            payload,
        ));
        if remote {
            self.note(super::cluster::Note::Message {
                to: Arc::from(folded.as_str()),
                frame: msg.frame().clone(),
            });
        }
        let Some(keys) = self.users.get(folded.as_str()) else {
            return if remote {
                Ok(0)
            } else {
                Err(DeliveryError::NoSuchUser)
            };
        };
        let targets = keys.as_slice().to_vec();
        let to_name = user_name(links, keys)
            .map(|n| n.to_string())
            .unwrap_or_default();
        for &t in &targets {
            self.push_shared(links, ConnId(t), &msg);
        }
        self.counters.delivered += targets.len() as u64;
        if self.events_enabled {
            let msg = msg.frame();
            let payload = msg.slice(msg.len() - payload.len()..);
            self.emit(Event::UserMessage {
                conn: from,
                from: sender.to_owned(),
                to: to_name,
                payload,
            });
        }
        Ok(targets.len())
    }
}

impl Broker {
    /// Tells the other members that `conn`'s user joined or left `g`.
    fn note_membership<T>(&mut self, links: &Sessions<T>, conn: ConnId, g: GroupId, up: bool) {
        if !self.in_cluster() {
            return;
        }
        let Some(name) = links.proto(conn).and_then(|s| s.name.clone()) else {
            return;
        };
        self.note(if up {
            super::cluster::Note::Joined(name, g)
        } else {
            super::cluster::Note::Parted(name, g)
        });
    }
}

/// A user's display name: its oldest session's.
pub(super) fn user_name<'a, T>(links: &'a Sessions<T>, keys: &Keys) -> Option<&'a Arc<str>> {
    let first = *keys.as_slice().first()?;
    links.proto(ConnId(first))?.name.as_ref()
}

pub(super) fn name_of<T>(links: &Sessions<T>, conn: ConnId) -> String {
    links
        .proto(conn)
        .and_then(|s| s.name.as_deref())
        .unwrap_or("")
        .to_owned()
}

/// Inserts `key` if absent; returns whether it was.
fn insert_sorted(v: &mut Vec<usize>, key: usize) -> bool {
    match v.binary_search(&key) {
        Err(i) => {
            v.insert(i, key);
            true
        }
        Ok(_) => false,
    }
}

/// Removes `key` if present; returns whether it was.
fn remove_sorted(v: &mut Vec<usize>, key: usize) -> bool {
    let found = v.binary_search(&key).map(|i| v.remove(i)).is_ok();
    if v.is_empty() {
        *v = Vec::new();
    }
    found
}
