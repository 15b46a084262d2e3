//! The broker as one member of many: what it tells the others and what it
//! does with what they tell it (see `cluster.rs` for the model).
//!
//! Everything here is skipped by a broker alone (`cluster` is `None`): one
//! branch on an `Option` per publish, login, subscription or directory
//! change.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{info, warn};

use super::cluster::{self, Cluster, ClusterStatus, Note, QueueTurn, View};
use super::registry::user_name;
use super::{Broker, Sessions};
use crate::conn::{ConnId, PushError, Shared};
use crate::proto::{GroupId, frame};

/// Work units a note counts for against the turn's budget, besides the
/// deliveries it makes (see `WORK_BUDGET`).
const NOTE_WORK: usize = 16;

impl Broker {
    /// Makes this broker one member of several named `member`: the loops
    /// of one process (`expiry` `None`: members never die apart) or the
    /// nodes of a cluster (a member silent for `expiry` is forgotten).
    /// Notes for the others are then read with [`Broker::take_notes`], and
    /// theirs handed in with [`Broker::handle_notes`].
    pub fn join_cluster(&mut self, member: &str, expiry: Option<Duration>) {
        self.cluster = Some(Box::new(Cluster::new(member, expiry)));
        self.recount_users_in_process();
    }

    /// Names another member before it has said anything (the loops of a
    /// process know each other from the start, so `STATS` waits for all).
    pub fn add_member(&mut self, name: &str) {
        if let Some(c) = self.cluster.as_mut() {
            if *c.me != *name && !c.members.contains_key(name) {
                let view = View {
                    local: true,
                    ..View::default()
                };
                c.members.insert(Arc::from(name), view);
            }
        }
    }

    /// `HELLO`'s `cluster=`.
    pub fn cluster_status(&self) -> ClusterStatus {
        self.cluster
            .as_ref()
            .filter(|c| c.expiry.is_some())
            .map_or(ClusterStatus::Off, |c| c.status)
    }

    /// The engine came up (`true`: this member tells the others it is
    /// here and sends its whole state, as after a restart) or went down
    /// (`false`: `cluster=degraded`; its view of the others stays until
    /// they expire).
    pub fn set_cluster_up<T>(&mut self, links: &Sessions<T>, up: bool, now: Instant) {
        self.now = now;
        let state = self.own_state(links);
        let tick = links.tick(now);
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if up {
            if c.status != ClusterStatus::Ok {
                info!("cluster: connected as {}", c.me);
            }
            c.status = ClusterStatus::Ok;
            c.send(Note::Hello);
            c.send(Note::State(state));
            c.beat_at = c.expiry.map(|e| tick + e / 3);
            for v in c.members.values_mut() {
                // Heard of again from now on.
                v.seen = Some(tick);
            }
        } else if c.status == ClusterStatus::Ok {
            warn!("cluster: cut off from the engine; serving local clients only");
            c.status = ClusterStatus::Degraded;
        }
    }

    /// This member's whole state as [`Note::State`] carries it (the engine
    /// also keeps it under a key that expires with the member).
    pub fn cluster_state<T>(&self, links: &Sessions<T>) -> Bytes {
        self.own_state(links)
    }

    /// `STATS`' cluster figures: members known, notes sent and received,
    /// and messages the carrier dropped.
    pub(super) fn cluster_figures(&self) -> (u64, u64, u64, u64) {
        self.cluster.as_ref().map_or((0, 0, 0, 0), |c| {
            (c.members.len() as u64, c.sent, c.received, c.dropped)
        })
    }

    /// What the carrier (the engine, or the other loops' queues) dropped
    /// so far, for `STATS`.
    pub fn set_cluster_dropped(&mut self, dropped: u64) {
        if let Some(c) = self.cluster.as_mut() {
            c.dropped = dropped;
        }
    }

    /// How many notes wait in [`Broker::take_notes`].
    pub fn note_count(&self) -> usize {
        self.cluster.as_ref().map_or(0, |c| c.outbox.len())
    }

    /// Whether notes wait in [`Broker::take_notes`].
    pub fn has_notes(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| !c.outbox.is_empty())
    }

    /// The notes for the other members since the last call, in order.
    pub fn take_notes(&mut self) -> Vec<Note> {
        self.cluster
            .as_mut()
            .map(|c| std::mem::take(&mut c.outbox))
            .unwrap_or_default()
    }

    /// This member leaves (shutdown): the others forget it at once.
    pub fn leave_cluster(&mut self) {
        if let Some(c) = self.cluster.as_mut() {
            c.send(Note::Bye);
        }
    }

    /// Names of the other members known now, sorted.
    pub fn cluster_members(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .cluster
            .as_ref()
            .map(|c| c.members.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    pub(super) fn note(&mut self, note: Note) {
        if let Some(c) = self.cluster.as_mut() {
            c.send(note);
        }
    }

    pub(super) fn in_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// Whether the (case-folded) user has a session on this loop or on
    /// another loop of the process: a look in each loop's view (other
    /// nodes' users are theirs to count).
    pub(super) fn in_process(&self, folded: &str) -> bool {
        self.users.contains_key(folded) || self.other_loop_has(folded)
    }

    /// Whether another loop of this process has a session of the user.
    pub(super) fn other_loop_has(&self, folded: &str) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| (c.members.values()).any(|v| v.local && v.users.contains_key(folded)))
    }

    /// A session of `user` at member `from` more (`up`) or less.
    fn remote_online(&mut self, from: &Arc<str>, user: &Arc<str>, up: bool) {
        let folded = cluster::fold(user);
        let before = self.in_process(&folded);
        if let Some(v) = self.view_mut(from) {
            v.online(user, up);
        }
        let after = self.in_process(&folded);
        self.count_in_process(before, after);
        self.who_reply = None;
    }

    /// A user's presence in the process went from `before` to `after`.
    pub(super) fn count_in_process(&mut self, before: bool, after: bool) {
        if let Some(c) = self.cluster.as_mut() {
            match (before, after) {
                (false, true) => c.users_in_process += 1,
                (true, false) => c.users_in_process = c.users_in_process.saturating_sub(1),
                _ => {}
            }
        }
    }

    /// Distinct users online on this loop and every other loop of the
    /// process, counted afresh (a loop's whole state came, or a member
    /// went: rare, and not at a client's asking).
    pub(super) fn users_in_process_counted(&self) -> usize {
        let Some(c) = self.cluster.as_ref() else {
            return self.users.len();
        };
        let mut all: std::collections::HashSet<&str> = self.users.keys().map(|k| &**k).collect();
        for v in c.members.values().filter(|v| v.local) {
            all.extend(v.users.iter().map(|(k, _, _)| &**k));
        }
        all.len()
    }

    /// `STATS`' `users`: distinct users online in the process (kept, see
    /// `Cluster::users_in_process`).
    pub(super) fn users_in_process(&self) -> u64 {
        self.cluster
            .as_ref()
            .map_or(self.users.len(), |c| c.users_in_process) as u64
    }

    fn recount_users_in_process(&mut self) {
        let n = self.users_in_process_counted();
        if let Some(c) = self.cluster.as_mut() {
            c.users_in_process = n;
        }
    }

    /// Whether another member has a session of this (case-folded) user.
    pub(super) fn remote_user(&self, folded: &str) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.has_user(folded))
    }

    /// This member's own state, as [`Note::State`] carries it.
    fn own_state<T>(&self, links: &Sessions<T>) -> Bytes {
        let mut v = View::default();
        for keys in self.users.values() {
            if let Some(name) = user_name(links, keys) {
                let n = u32::try_from(keys.as_slice().len()).unwrap_or(u32::MAX);
                v.users.insert(name, n);
            }
        }
        for (&g, group) in &self.groups {
            for &k in &group.subscribers {
                if let Some(name) = links.proto(ConnId(k)).and_then(|s| s.name.as_deref()) {
                    v.joined(name, g, true);
                }
            }
            for q in &group.queues {
                let name: Arc<str> = Arc::from(&*q.name);
                for _ in &q.members {
                    v.queue(g, &name, true);
                }
            }
        }
        for (user, addr) in self.directory() {
            let folded: Arc<str> = user.to_ascii_lowercase().into();
            v.directory.insert(folded, (Arc::from(user), addr));
        }
        cluster::state_of(&v)
    }

    /// The queue groups of `groups` that another member serves this time:
    /// each queue group's members everywhere take turns (a round-robin
    /// over the local members and every remote member's, by count), and a
    /// turn that falls on another member is named in the publish for it.
    pub(super) fn remote_queue_turns(&mut self, groups: &[GroupId]) -> Arc<[QueueTurn]> {
        let Some(c) = self.cluster.as_mut() else {
            return Arc::new([]);
        };
        let mut wanted: Vec<(GroupId, Arc<str>)> = Vec::new();
        for v in c.members.values() {
            for (g, q) in v.queues.keys() {
                if groups.contains(g) && !wanted.iter().any(|(wg, wq)| wg == g && wq == q) {
                    wanted.push((*g, Arc::clone(q)));
                }
            }
        }
        if wanted.is_empty() {
            return Arc::new([]);
        }
        wanted.sort_unstable();
        let mut turns = Vec::new();
        for (g, q) in wanted {
            let local = (self.groups.get(&g))
                .and_then(|gr| gr.queues.iter().find(|lq| *lq.name == *q))
                .map_or(0, |lq| lq.members.len());
            let mut remote: Vec<(&Arc<str>, usize)> = (c.members.iter())
                .filter_map(|(m, v)| Some((m, *v.queues.get(&(g, Arc::clone(&q)))? as usize)))
                .collect();
            remote.sort_unstable();
            let total = local + remote.iter().map(|r| r.1).sum::<usize>();
            let rr = c.queue_rr.entry((g, Arc::clone(&q))).or_default();
            let mut at = *rr % total.max(1);
            *rr = rr.wrapping_add(1);
            if at < local {
                continue;
            }
            at -= local;
            for (m, n) in remote {
                if at < n {
                    turns.push((g, Box::from(&*q), Arc::clone(m)));
                    break;
                }
                at -= n;
            }
        }
        turns.into()
    }

    /// Notes from member `from`, in the order it sent them. A budget's
    /// worth is worked through at once; the rest waits for
    /// [`Broker::process_notes`], once a turn, so that a large batch (a
    /// flood of publishes to many subscribers) is spread over loop turns.
    pub fn handle_notes<T>(
        &mut self,
        links: &mut Sessions<T>,
        from: &str,
        notes: Vec<Note>,
        now: Instant,
    ) {
        self.take_notes_in(links, from, notes, now, false);
    }

    /// [`Broker::handle_notes`] for notes whose cost the carrier counts
    /// against a bound: [`Broker::take_processed_note_cost`] gives it back
    /// as they are worked through.
    pub fn handle_counted_notes<T>(
        &mut self,
        links: &mut Sessions<T>,
        from: &str,
        notes: Vec<Note>,
        now: Instant,
    ) {
        self.take_notes_in(links, from, notes, now, true);
    }

    fn take_notes_in<T>(
        &mut self,
        links: &mut Sessions<T>,
        from: &str,
        notes: Vec<Note>,
        now: Instant,
        counted: bool,
    ) {
        self.now = now;
        let tick = links.tick(now);
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if *c.me == *from {
            return;
        }
        let from: Arc<str> = match c.members.get_key_value(from) {
            Some((k, _)) => Arc::clone(k),
            None => {
                info!("cluster: member {from} is here");
                let k: Arc<str> = Arc::from(from);
                c.members.insert(Arc::clone(&k), View::default());
                // A node met for the first time gets this one's state (on a
                // Redis Cluster it may have missed it: it was not known).
                if c.expiry.is_some() {
                    c.state_due = true;
                }
                k
            }
        };
        if let Some(v) = c.members.get_mut(&from) {
            v.seen = Some(tick);
        }
        c.received += notes.len() as u64;
        if std::mem::take(&mut c.state_due) {
            let state = self.own_state(links);
            self.note(Note::State(state));
        }
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        c.inbox
            .extend(notes.into_iter().map(|n| (Arc::clone(&from), n, counted)));
        // Worked through at once, a budget's worth (before this turn's
        // client input: a client that saw another loop's reply to a
        // `SUBSCRIBE` finds it here); the rest by `process_notes` in the
        // turns after. Batches handed in during one turn share that
        // budget: a loop woken with many batches from three others does
        // one budget's worth, not one per batch.
        let work = match c.turn_work {
            Some((turn, work)) if turn == now => work,
            _ => 0,
        };
        self.work_notes(links, now, work);
    }

    /// Whether notes from other members wait to be worked through.
    pub fn has_pending_notes(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| !c.inbox.is_empty())
    }

    /// Works through queued notes, a work budget's worth (and whatever a
    /// fan-out spread over turns leaves of it); returns the cost
    /// ([`Note::cost`]) of the notes done.
    pub fn process_notes<T>(&mut self, links: &mut Sessions<T>, now: Instant) -> usize {
        self.work_notes(links, now, 0)
    }

    /// Works through queued notes from `work` done up to the budget.
    fn work_notes<T>(&mut self, links: &mut Sessions<T>, now: Instant, work: usize) -> usize {
        self.now = now;
        self.work = work;
        let mut done = 0;
        // A fan-out spread over turns keeps one dedup mark per session: a
        // remote publish waits for it.
        while self.spread.is_none() && self.work < self.work_budget {
            let Some((from, note, counted)) =
                self.cluster.as_mut().and_then(|c| c.inbox.pop_front())
            else {
                break;
            };
            if counted {
                done += note.cost();
            }
            // A note's own handling (view look-ups, a name folded) costs
            // about what sixteen deliveries do; its fan-out counts on top.
            self.work += NOTE_WORK;
            if note.target().is_some_and(|t| Some(t) != self.member_name()) {
                continue;
            }
            // A member forgotten since (it said `Bye`) is not brought back.
            let known = self
                .cluster
                .as_ref()
                .is_some_and(|c| c.members.contains_key(&from));
            if known {
                self.handle_note(links, &from, note);
            }
        }
        if let Some(c) = self.cluster.as_mut() {
            c.turn_work = Some((now, self.work));
            c.processed_cost += done;
            // A flood's worth of room is given back once it is worked off.
            if c.inbox.is_empty() && c.inbox.capacity() > 4096 {
                c.inbox = std::collections::VecDeque::new();
            }
        }
        done
    }

    /// The cost of the notes worked through since the last call.
    pub fn take_processed_note_cost(&mut self) -> usize {
        self.cluster
            .as_mut()
            .map_or(0, |c| std::mem::take(&mut c.processed_cost))
    }

    fn member_name(&self) -> Option<&str> {
        self.cluster.as_deref().map(|c| &*c.me)
    }

    fn view_mut(&mut self, from: &Arc<str>) -> Option<&mut View> {
        self.cluster.as_mut()?.members.get_mut(from)
    }

    fn handle_note<T>(&mut self, links: &mut Sessions<T>, from: &Arc<str>, note: Note) {
        match note {
            Note::Publish { frame, queues } => self.remote_publish(links, from, frame, &queues),
            Note::Message { to, frame } => {
                if !cluster::frames_of(&frame, &["MESSAGE"], true) {
                    return;
                }
                let Some(keys) = self.users.get(&*to) else {
                    return;
                };
                let targets = keys.as_slice().to_vec();
                let msg = Shared::new(frame);
                for t in targets {
                    self.push_shared(links, ConnId(t), &msg);
                    self.counters.delivered += 1;
                }
            }
            Note::Online(user) => self.remote_online(from, &user, true),
            Note::Offline(user) => self.remote_online(from, &user, false),
            Note::Joined(user, g) => {
                if let Some(v) = self.view_mut(from) {
                    v.joined(&user, g, true);
                }
                self.groups_reply = None;
                self.notify_watchers_of(links, "JOINED", &user, g);
            }
            Note::Parted(user, g) => {
                if let Some(v) = self.view_mut(from) {
                    v.joined(&user, g, false);
                }
                self.groups_reply = None;
                self.notify_watchers_of(links, "PARTED", &user, g);
            }
            Note::QueueJoined(g, q) => {
                if let Some(v) = self.view_mut(from) {
                    v.queue(g, &q, true);
                }
            }
            Note::QueueParted(g, q) => {
                if let Some(v) = self.view_mut(from) {
                    v.queue(g, &q, false);
                }
            }
            Note::Bound(user, addr) => {
                if let Some(v) = self.view_mut(from) {
                    let folded: Arc<str> = user.to_ascii_lowercase().into();
                    v.directory.insert(folded, (user, addr));
                }
            }
            Note::Unbound(user) => {
                if let Some(v) = self.view_mut(from) {
                    v.directory.remove(user.to_ascii_lowercase().as_str());
                }
            }
            Note::Leave(user) => {
                self.remote_leave(&user);
                self.forget_remote_entry(&user);
            }
            Note::State(state) => {
                let fresh = View::decode(&state);
                if let Some(v) = self.view_mut(from) {
                    let (seen, local) = (v.seen, v.local);
                    *v = fresh;
                    v.seen = seen;
                    v.local = local;
                }
                self.recount_users_in_process();
                self.who_reply = None;
                self.groups_reply = None;
            }
            Note::Hello => {
                let state = self.own_state(links);
                self.note(Note::State(state));
            }
            Note::Beat => {}
            Note::StatsQuery(n) => {
                let figures = self.own_figures(links);
                self.note(Note::Stats {
                    to: Arc::clone(from),
                    n,
                    figures,
                });
            }
            Note::Stats { n, figures, .. } => self.add_figures(links, n, &figures),
            Note::Bye => {
                info!("cluster: member {from} left");
                self.forget_member(links, from);
            }
            Note::Request {
                n,
                sender,
                group,
                ms,
                survey,
                payload,
                ..
            } => {
                let origin = (Arc::clone(from), n);
                if survey {
                    self.remote_survey(links, origin, &sender, group, ms, &payload);
                } else {
                    self.remote_request(links, origin, &sender, group, ms, &payload);
                }
            }
            Note::Reply {
                n, survey, frame, ..
            } => {
                let fine = if survey {
                    cluster::frames_of(&frame, &["RESPONSE"], false)
                } else {
                    cluster::frames_of(&frame, &["RESULT", "ERR"], true)
                };
                if fine {
                    self.remote_reply(links, from, n, survey, frame);
                }
            }
            Note::Cancel { n, .. } => self.remote_cancel(from, n),
        }
    }

    /// Delivers another member's publish to the local subscribers (once
    /// each) and to the queue groups it named this member for.
    fn remote_publish<T>(
        &mut self,
        links: &mut Sessions<T>,
        _from: &Arc<str>,
        frame: Bytes,
        queues: &[QueueTurn],
    ) {
        let Some(groups) = cluster::published_groups(&frame) else {
            return;
        };
        let me = self.member_name().map(Arc::<str>::from);
        let msg = Shared::new(frame);
        self.publish_seq += 1;
        let seq = self.publish_seq;
        let mut delivered = 0;
        let mut slow = Vec::new();
        for (g, q, m) in queues {
            if Some(&**m) != me.as_deref() {
                continue;
            }
            let Some(group) = self.groups.get_mut(g) else {
                continue;
            };
            let Some(queue) = group.queues.iter_mut().find(|lq| *lq.name == **q) else {
                continue;
            };
            let n = queue.members.len();
            if n == 0 {
                continue;
            }
            let at = queue.next % n;
            queue.next = at + 1;
            let id = ConnId(queue.members[at]);
            let first = |s: &mut super::Session| std::mem::replace(&mut s.mark, seq) != seq;
            match links.push_with(id, &msg, first) {
                Ok(true) => delivered += 1,
                Ok(false) | Err(PushError::Gone) => {}
                Err(PushError::Full) => slow.push(id),
            }
        }
        for g in &groups {
            let Some(group) = self.groups.get(g) else {
                continue;
            };
            self.work += group.subscribers.len();
            for &sub in &group.subscribers {
                let id = ConnId(sub);
                let first = |s: &mut super::Session| std::mem::replace(&mut s.mark, seq) != seq;
                match links.push_with(id, &msg, first) {
                    Ok(true) => delivered += 1,
                    Ok(false) | Err(PushError::Gone) => {}
                    Err(PushError::Full) => slow.push(id),
                }
            }
        }
        for id in slow {
            self.slow_consumer(links, id);
        }
        self.counters.delivered += delivered as u64;
    }

    /// Pushes `JOINED`/`PARTED` for a remote user to the local watchers.
    fn notify_watchers_of<T>(
        &mut self,
        links: &mut Sessions<T>,
        verb: &str,
        user: &str,
        g: GroupId,
    ) {
        let Some(group) = self.groups.get(&g) else {
            return;
        };
        if group.watchers.is_empty() {
            return;
        }
        let msg = Shared::new(frame::encode_to_bytes(
            verb,
            &[user.as_bytes(), g.to_string().as_bytes()],
            b"",
        ));
        let watchers = group.watchers.clone();
        for w in watchers {
            self.push_shared(links, ConnId(w), &msg);
        }
    }

    /// Forgets a member (it left, or expired): its users leave `WHO`, its
    /// subscriptions are `PARTED` for local watchers, and requests it was
    /// to answer fail.
    fn forget_member<T>(&mut self, links: &mut Sessions<T>, member: &Arc<str>) {
        let Some(view) = self.cluster.as_mut().and_then(|c| c.members.remove(member)) else {
            return;
        };
        self.recount_users_in_process();
        self.who_reply = None;
        self.groups_reply = None;
        for (g, users) in &view.groups {
            for (u, _) in users.iter() {
                let name = view
                    .users
                    .get(u)
                    .map_or_else(|| Arc::clone(u), |e| Arc::clone(e.0));
                self.notify_watchers_of(links, "PARTED", &name, *g);
            }
        }
        self.member_gone(links, member);
    }

    /// Beats and expiry; run with the other deadlines.
    pub(super) fn cluster_timeout<T>(&mut self, links: &mut Sessions<T>) {
        self.expire_stats(links);
        let tick = links.tick(self.now);
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let Some(expiry) = c.expiry else {
            return;
        };
        if c.status == ClusterStatus::Ok && c.beat_at.is_some_and(|at| at <= tick) {
            c.beat_at = Some(tick + expiry / 3);
            c.send(Note::Beat);
        }
        let dead: Vec<Arc<str>> = (c.members.iter())
            .filter(|(_, v)| !v.local && v.seen.is_none_or(|s| s + expiry <= tick))
            .map(|(k, _)| Arc::clone(k))
            .collect();
        for m in dead {
            warn!("cluster: member {m} silent for {expiry:?}: forgotten");
            self.forget_member(links, &m);
        }
    }

    /// The next beat or expiry.
    pub(super) fn next_cluster_deadline(&self) -> Option<crate::conn::tick::Tick> {
        let c = self.cluster.as_ref()?;
        let stats = c.stats.values().map(|q| q.deadline).min();
        let Some(expiry) = c.expiry else {
            return stats;
        };
        let beat = c.beat_at.filter(|_| c.status == ClusterStatus::Ok);
        let oldest = (c.members.values())
            .filter(|v| !v.local)
            .filter_map(|v| v.seen)
            .min();
        beat.into_iter()
            .chain(oldest.map(|s| s + expiry))
            .chain(stats)
            .min()
    }

    /// `WHO 0`'s users of the other members: (case-folded, display).
    pub(super) fn remote_users(&self) -> Vec<(Arc<str>, Arc<str>)> {
        let Some(c) = self.cluster.as_ref() else {
            return Vec::new();
        };
        let mut v: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        for view in c.members.values() {
            for (k, name, _) in view.users.iter() {
                v.push((Arc::clone(k), Arc::clone(name)));
            }
        }
        v
    }

    /// `WHO 0 <g>`'s users of the other members.
    pub(super) fn remote_group_users(&self, g: GroupId) -> Vec<(Arc<str>, Arc<str>)> {
        let Some(c) = self.cluster.as_ref() else {
            return Vec::new();
        };
        let mut v = Vec::new();
        for view in c.members.values() {
            for k in view
                .groups
                .get(&g)
                .into_iter()
                .flat_map(|m| m.iter().map(|(k, _)| k))
            {
                let name = view
                    .users
                    .get(k)
                    .map_or_else(|| Arc::clone(k), |e| Arc::clone(e.0));
                v.push((Arc::clone(k), name));
            }
        }
        v
    }

    /// Sessions of this (case-folded) user on the other members.
    pub(super) fn remote_sessions(&self, folded: &str) -> usize {
        self.cluster.as_ref().map_or(0, |c| {
            (c.members.values())
                .filter_map(|v| v.users.get(folded))
                .map(|e| e.1 as usize)
                .sum()
        })
    }

    /// At least as many as [`Broker::remote_groups`] finds, in O(members).
    pub(super) fn remote_group_bound(&self) -> usize {
        self.cluster.as_ref().map_or(0, |c| {
            (c.members.values())
                .map(|v| v.groups.len() + v.queues.len())
                .sum()
        })
    }

    /// Groups the other members' sessions are in.
    pub(super) fn remote_groups(&self) -> Vec<GroupId> {
        let Some(c) = self.cluster.as_ref() else {
            return Vec::new();
        };
        let mut v: Vec<GroupId> = (c.members.values())
            .flat_map(|v| v.groups.keys().copied().chain(v.queues.keys().map(|k| k.0)))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Takes the user's entries out of every view (a `LEAVE`: the owners
    /// are told, and confirm with `Unbound`); returns whether there was one.
    pub(super) fn forget_remote_entry(&mut self, user: &str) -> bool {
        let folded = user.to_ascii_lowercase();
        let Some(c) = self.cluster.as_mut() else {
            return false;
        };
        let mut found = false;
        for v in c.members.values_mut() {
            found |= v.directory.remove(folded.as_str()).is_some();
        }
        found
    }

    /// `QUERY`'s entries of the other members (a local entry wins).
    pub(super) fn remote_directory(&self) -> Vec<(Arc<str>, Arc<str>, SocketAddr)> {
        let Some(c) = self.cluster.as_ref() else {
            return Vec::new();
        };
        let mut v = Vec::new();
        for view in c.members.values() {
            for (k, (user, addr)) in &view.directory {
                v.push((Arc::clone(k), Arc::clone(user), *addr));
            }
        }
        v
    }

    /// A remote member serving requests to `g`, round-robin.
    pub(super) fn remote_responder(&mut self, g: GroupId) -> Option<Arc<str>> {
        self.cluster.as_mut()?.next_member(|v| v.serves(g))
    }

    /// Every remote member with someone to survey in `g`.
    pub(super) fn remote_surveyed(&self, g: GroupId) -> Vec<Arc<str>> {
        let Some(c) = self.cluster.as_ref() else {
            return Vec::new();
        };
        let mut v: Vec<Arc<str>> = (c.members.iter())
            .filter(|(_, v)| v.serves(g))
            .map(|(k, _)| Arc::clone(k))
            .collect();
        v.sort_unstable();
        v
    }

    /// `STATS` with other loops in the process: the session waits (its
    /// input paused, so replies stay in order) for every loop's figures,
    /// summed, or 1 s. Returns `false` when there are no other loops (the
    /// caller answers from this loop's figures alone).
    pub(super) fn stats_across_loops<T>(&mut self, links: &mut Sessions<T>, conn: ConnId) -> bool {
        let Some(c) = self.cluster.as_ref() else {
            return false;
        };
        // The loops of this process (the nodes of a cluster report their own).
        let waiting = c.members.values().filter(|v| v.local).count();
        if waiting == 0 {
            return false;
        }
        let Some(generation) = links.get(conn).map(crate::conn::Link::generation) else {
            return true;
        };
        let figures = (self.stats(links, self.now).into_iter())
            .map(|f| (f.key, f.value))
            .collect();
        let deadline = links.tick(self.now) + Duration::from_secs(1);
        let Some(c) = self.cluster.as_mut() else {
            return false;
        };
        c.next_query += 1;
        let n = c.next_query;
        c.stats.insert(
            n,
            cluster::StatsQuery {
                conn: (conn.0, generation),
                waiting,
                figures,
                deadline,
            },
        );
        c.send(Note::StatsQuery(n));
        links.set_paused(conn, true);
        true
    }

    /// This loop's figures as a [`Note::Stats`] carries them.
    fn own_figures<T>(&self, links: &Sessions<T>) -> Bytes {
        let mut out = String::new();
        for f in self.stats(links, self.now) {
            out.push_str(&format!("{}={}\n", f.key, f.value));
        }
        Bytes::from(out)
    }

    /// Another loop's figures for query `n`.
    fn add_figures<T>(&mut self, links: &mut Sessions<T>, n: u64, figures: &[u8]) {
        let Some(q) = self.cluster.as_mut().and_then(|c| c.stats.get_mut(&n)) else {
            return;
        };
        let text = String::from_utf8_lossy(figures);
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            if let Some(f) = q.figures.iter_mut().find(|f| f.0 == key) {
                f.1 = super::stats::combine(f.0, f.1, value);
            }
        }
        q.waiting = q.waiting.saturating_sub(1);
        if q.waiting == 0 {
            self.answer_stats(links, n);
        }
    }

    /// Answers `STATS` query `n` with the figures gathered.
    pub(super) fn answer_stats<T>(&mut self, links: &mut Sessions<T>, n: u64) {
        let Some(q) = self.cluster.as_mut().and_then(|c| c.stats.remove(&n)) else {
            return;
        };
        let (key, generation) = q.conn;
        let conn = ConnId(key);
        if links.get(conn).is_none_or(|l| l.generation() != generation) {
            return;
        }
        let mut out = String::with_capacity(512);
        for (k, v) in &q.figures {
            out.push_str(&format!("{k}={v}\n"));
        }
        links.set_paused(conn, false);
        self.push_reply(links, conn, frame::result(out.as_bytes()));
    }

    /// `STATS` queries whose loops did not all answer within 1 s.
    pub(super) fn expire_stats<T>(&mut self, links: &mut Sessions<T>) {
        let tick = links.tick(self.now);
        let due: Vec<u64> = match self.cluster.as_ref() {
            Some(c) => (c.stats.iter())
                .filter(|(_, q)| q.deadline <= tick)
                .map(|(n, _)| *n)
                .collect(),
            None => return,
        };
        for n in due {
            self.answer_stats(links, n);
        }
    }
}
