//! Queue groups and `ECHO` (protocol.md section 9).
//!
//! A queue group is a name on a group: a `PUBLISH` to the group goes to
//! every plain subscriber once and to exactly one member of each of its
//! queue groups, round-robin, skipping members whose output is backed up
//! (past the read pause) while another can take it. A session gets a
//! publish at most once however many ways it is in the groups (the same
//! `mark` as plain fan-out). Queue memberships count toward
//! `max_subscriptions` with subscriptions and watches, and are kept by the
//! broker (by slab key), not in the session's slot, so that a session that
//! uses none costs nothing more.

use super::{Broker, Sessions};
use crate::conn::{ConnId, PushError, Shared};
use crate::error::ErrorCode;
use crate::proto::{GroupId, frame};

/// One queue group on one group.
#[derive(Debug)]
pub(super) struct Queue {
    pub(super) name: Box<str>,
    /// Members, sorted slab keys.
    pub(super) members: Vec<usize>,
    /// Where the round-robin goes on.
    pub(super) next: usize,
}

impl Broker {
    /// `QSUBSCRIBE 0 <queue> <g>...`: all or nothing.
    pub(super) fn cmd_qsubscribe<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        queue: &str,
        groups: &[GroupId],
    ) {
        let held = self.queue_members.get(&conn.0).map_or(0, Vec::len);
        let mut new: Vec<GroupId> = groups
            .iter()
            .copied()
            .filter(|g| {
                !self
                    .queue_members
                    .get(&conn.0)
                    .is_some_and(|m| m.iter().any(|(mg, q)| mg == g && &**q == queue))
            })
            .collect();
        new.sort_unstable();
        new.dedup();
        let others = links
            .proto(conn)
            .map_or(0, |s| s.groups.len() + s.watching.len());
        if others + held + new.len() > self.config.max_subscriptions {
            let text = format!(
                "at most {} subscriptions, queue memberships and watches per session",
                self.config.max_subscriptions
            );
            self.counters.limits_refused += 1;
            return self.reply_err(links, conn, ErrorCode::Limit, &text);
        }
        if let Err(r) = self.ensure_groups(groups) {
            return self.group_refused(links, conn, r);
        }
        for g in new {
            let Some(group) = self.groups.get_mut(&g) else {
                continue;
            };
            let q = match group.queues.iter_mut().position(|q| &*q.name == queue) {
                Some(i) => &mut group.queues[i],
                None => {
                    group.queues.push(Queue {
                        name: queue.into(),
                        members: Vec::new(),
                        next: 0,
                    });
                    let last = group.queues.len() - 1;
                    &mut group.queues[last]
                }
            };
            if let Err(i) = q.members.binary_search(&conn.0) {
                q.members.insert(i, conn.0);
            }
            if self.in_cluster() {
                self.note(super::cluster::Note::QueueJoined(g, queue.into()));
            }
            self.queue_members
                .entry(conn.0)
                .or_default()
                .push((g, queue.into()));
        }
        self.push_reply(links, conn, frame::ack("subscribed"));
    }

    /// `QUNSUBSCRIBE 0 <queue> <g>...`: leaving a queue one is not in is fine.
    pub(super) fn cmd_qunsubscribe<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        queue: &str,
        groups: &[GroupId],
    ) {
        for &g in groups {
            self.leave_queue(conn, g, queue);
        }
        self.push_reply(links, conn, frame::ack("unsubscribed"));
    }

    /// `ECHO 0 on|off`.
    pub(super) fn cmd_echo<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, on: bool) {
        if on {
            self.echo_off.remove(&conn.0);
        } else {
            self.echo_off.insert(conn.0);
        }
        let text = if on { "echo on" } else { "echo off" };
        self.push_reply(links, conn, frame::ack(text));
    }

    fn leave_queue(&mut self, conn: ConnId, g: GroupId, queue: &str) {
        let mut left = false;
        if let Some(m) = self.queue_members.get_mut(&conn.0) {
            let before = m.len();
            m.retain(|(mg, q)| !(*mg == g && &**q == queue));
            left = m.len() < before;
            if m.is_empty() {
                self.queue_members.remove(&conn.0);
            }
        }
        if let Some(group) = self.groups.get_mut(&g) {
            if let Some(i) = group.queues.iter().position(|q| &*q.name == queue) {
                let q = &mut group.queues[i];
                if let Ok(k) = q.members.binary_search(&conn.0) {
                    q.members.remove(k);
                }
                if q.members.is_empty() {
                    group.queues.remove(i);
                }
            }
        }
        if left && self.in_cluster() {
            self.note(super::cluster::Note::QueueParted(g, queue.into()));
        }
        self.forget_if_unused(g);
    }

    /// Takes a leaving session out of every queue group, and forgets its
    /// `ECHO` setting.
    pub(super) fn leave_queues(&mut self, conn: ConnId) {
        self.echo_off.remove(&conn.0);
        let Some(memberships) = self.queue_members.remove(&conn.0) else {
            return;
        };
        for (g, q) in memberships {
            self.leave_queue(conn, g, &q);
        }
    }

    /// Queues `msg` to one member of each queue group of `groups`; returns
    /// how many got it.
    pub(super) fn deliver_to_queues<T>(
        &mut self,
        links: &mut Sessions<T>,
        msg: &Shared,
        seq: u64,
        groups: &[GroupId],
        elsewhere: &[super::cluster::QueueTurn],
    ) -> usize {
        let backed_up = self.config.limits().read_pause;
        let mut delivered = 0;
        let mut slow = Vec::new();
        for g in groups {
            let Some(group) = self.groups.get_mut(g) else {
                continue;
            };
            for q in &mut group.queues {
                let n = q.members.len();
                // Served by another member this time.
                if n == 0 || elsewhere.iter().any(|t| t.0 == *g && *t.1 == *q.name) {
                    continue;
                }
                // The first free member from the round-robin's place; if all
                // are backed up, the one whose turn it is.
                let start = q.next % n;
                let order = (0..n).map(|i| (start + i) % n);
                let mut pick = None;
                for i in order {
                    let key = q.members[i];
                    let Some(l) = links.get(ConnId(key)) else {
                        continue;
                    };
                    if l.proto.mark == seq {
                        // Has it already (another way in): this queue is served.
                        pick = Some((i, false));
                        break;
                    }
                    if l.is_closing() {
                        continue;
                    }
                    if l.held() <= backed_up {
                        pick = Some((i, true));
                        break;
                    }
                }
                let (i, send) = pick.unwrap_or((start, true));
                q.next = i + 1;
                self.work += 1;
                if !send {
                    continue;
                }
                let id = ConnId(q.members[i]);
                let first = |s: &mut super::Session| std::mem::replace(&mut s.mark, seq) != seq;
                match links.push_with(id, msg, first) {
                    Ok(true) => delivered += 1,
                    Ok(false) | Err(PushError::Gone) => {}
                    Err(PushError::Full) => slow.push(id),
                }
            }
        }
        for id in slow {
            self.slow_consumer(links, id);
        }
        delivered
    }

    /// Checks the queue indexes (for `assert_consistent`).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn assert_queues_consistent<T>(&self, links: &Sessions<T>) {
        for (&g, group) in &self.groups {
            for q in &group.queues {
                assert!(!q.members.is_empty(), "empty queue {} on {g}", q.name);
                assert!(q.members.is_sorted(), "queue {} on {g} unsorted", q.name);
                for &k in &q.members {
                    assert!(links.get(ConnId(k)).is_some(), "queue member #{k} gone");
                    assert!(
                        self.queue_members
                            .get(&k)
                            .is_some_and(|m| m.iter().any(|(mg, n)| *mg == g && n == &q.name)),
                        "#{k} in queue {} on {g} but not in its list",
                        q.name
                    );
                }
            }
        }
        for (&k, m) in &self.queue_members {
            for (g, name) in m {
                let group = self.groups.get(g).expect("queue's group exists");
                assert!(
                    group
                        .queues
                        .iter()
                        .any(|q| &q.name == name && q.members.binary_search(&k).is_ok()),
                    "#{k} lists queue {name} on {g}"
                );
            }
        }
    }
}
