//! Command execution: each frame a session sends, decoded, checked and
//! carried out (protocol.md sections 3 to 5). The registry it changes is in
//! `registry.rs`; the connection machinery is the table's (`crate::conn`).

use std::sync::Arc;

use bytes::Bytes;
use log::warn;

use super::checks::Refusal;
use super::registry::{GroupRefusal, name_of, user_name};
use super::session::{Session, State};
use super::{Attempt, Authorizer};
use super::{
    AuthMode, AuthRequest, Broker, DeliveryError, Event, MAX_PASSWORD_LEN, PRELOGIN_MAX_PAYLOAD,
    Sessions,
};
use crate::conn::{CloseReason, ConnId};
use crate::error::{ErrorCode, FrameError};
use crate::proto::command::{Command, CommandError, verb_allowed_before_login};
use crate::proto::frame;
use crate::proto::{Decoded, GroupId, decode};

/// Work units one connection's input may take per call before the rest
/// waits for the next turn: a frame is one, a delivery or a subscriber
/// looked at is one. A single fan-out larger than this is spread over
/// turns, this many subscribers a turn.
pub(super) const WORK_BUDGET: usize = 32_768;

impl Broker {
    /// Decodes and executes frames from `data` while the session can process
    /// input. Returns how many bytes were used.
    pub(super) fn process<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        data: &[u8],
        authz: &mut dyn Authorizer,
    ) -> usize {
        // Work done for this connection in this turn (frames, and the
        // subscribers and watchers they reach): past the budget the rest of
        // its input waits for the next turn, so one client's pipelined
        // fan-outs cannot hold the loop (issue 10). The budget is the
        // connection's for the turn: the reactor may hand it several reads
        // in one turn, and they share it (`resume` starts a new one).
        self.work = match self.work_for {
            Some((c, turn, work)) if c == conn && turn == self.now => work,
            _ => 0,
        };
        let used = self.process_frames(links, conn, data, authz);
        self.work_for = Some((conn, self.now, self.work));
        used
    }

    fn process_frames<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        data: &[u8],
        authz: &mut dyn Authorizer,
    ) -> usize {
        let mut used = 0;
        // The payload length of the frame decoded last in this call: a
        // header that fails right after a payload most likely means that
        // frame's LEN was wrong, and the error says so.
        let mut previous_len = 0;
        loop {
            if !links.can_process(conn) {
                return used;
            }
            // A fan-out spread over turns holds its publisher's input
            // until it is done, so replies stay in order.
            if self.work >= self.work_budget || self.spreading() == Some(Some(conn)) {
                links.yield_input(conn);
                return used;
            }
            self.work += 1;
            let logged_in = links.proto(conn).is_some_and(Session::is_logged_in);
            // Before login a connection may hold one header and a small
            // payload, never a whole `max_payload` (protocol.md 7a).
            let limit = if logged_in {
                self.config.max_payload
            } else {
                self.config.max_payload.min(PRELOGIN_MAX_PAYLOAD)
            };
            let rest = data.get(used..).unwrap_or_default();
            match decode(rest, limit) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    // Anyone's `PUBLISH` waits for a spread fan-out, so
                    // that per group, messages go out in the order taken.
                    if self.spread.is_some() && frame.verb().as_bytes() == b"PUBLISH" {
                        links.yield_input(conn);
                        return used;
                    }
                    used += consumed;
                    self.counters.frames_in += 1;
                    previous_len = frame.payload().len() as u64;
                    self.execute(links, conn, &frame, authz);
                }
                Ok(Decoded::Incomplete { skip, .. }) => {
                    // No reservation for the declared size: the buffer grows
                    // only with bytes that actually arrive, so a peer that
                    // announces 1 MiB and sends one byte costs one byte.
                    return used + skip;
                }
                Err(e) => {
                    self.frame_error(links, conn, e.after_payload(previous_len));
                    return data.len();
                }
            }
        }
    }

    pub(super) fn frame_error<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, e: FrameError) {
        let reason = if matches!(e, FrameError::TooLarge { .. }) {
            CloseReason::TooLarge
        } else {
            CloseReason::BadFrame
        };
        warn!("{}: {e}; closing", links.log_peer(conn));
        let text = e.to_string();
        self.fail(links, conn, e.code(), &text, reason);
    }

    pub(super) fn execute<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        frame: &crate::proto::Frame<'_>,
        authz: &mut dyn Authorizer,
    ) {
        let logged_in = links.proto(conn).is_some_and(Session::is_logged_in);
        if !logged_in && !verb_allowed_before_login(frame.verb().as_bytes()) {
            return self.reply_err(links, conn, ErrorCode::AuthRequired, "log in first (USER)");
        }
        let cmd = match Command::from_frame(frame) {
            Ok(cmd) => cmd,
            Err(CommandError::Unknown) => {
                let text = format!("unknown command {}", frame.verb().as_str());
                return self.reply_err(links, conn, ErrorCode::UnknownCommand, &text);
            }
            Err(CommandError::BadArgs(why)) => {
                // A malformed PONG gets no reply, like any PONG.
                if frame.verb().as_bytes() == b"PONG" {
                    return;
                }
                return self.reply_err(links, conn, ErrorCode::BadArgs, why);
            }
        };
        // Each group a membership command names is a unit of work (a
        // membership made or undone, and with several loops a note for each
        // of the others): 200,000 pipelined subscriptions are spread over
        // turns, not made in one.
        if let Command::Subscribe(g)
        | Command::Unsubscribe(g)
        | Command::Watch(g)
        | Command::Unwatch(g)
        | Command::QSubscribe { groups: g, .. }
        | Command::QUnsubscribe { groups: g, .. } = &cmd
        {
            self.work += g.as_slice().len();
        }
        match cmd {
            Command::User(name) => self.cmd_user(links, conn, name, authz),
            Command::Pass(pw) => self.cmd_pass(links, conn, pw),
            Command::Ping => self.push_reply(links, conn, Bytes::from_static(frame::PONG)),
            Command::Pong => {}
            Command::Hello => self.cmd_hello(links, conn),
            Command::Quit => {
                self.push_reply(links, conn, frame::ack("bye"));
                self.begin_close(links, conn, CloseReason::Quit);
            }
            Command::Groups => {
                let reply = self.groups_reply();
                self.push_reply(links, conn, reply);
            }
            Command::Subscribe(groups) => {
                let at = Attempt::Subscribe(groups.as_slice());
                if !self.forbidden(links, conn, authz, at) {
                    self.cmd_subscribe(links, conn, groups.as_slice());
                }
            }
            Command::Unsubscribe(groups) => {
                self.unsubscribe(links, conn, groups.as_slice());
                self.push_reply(links, conn, frame::ack("unsubscribed"));
            }
            Command::Publish { groups, payload } => {
                let at = Attempt::Publish {
                    groups: groups.as_slice(),
                    payload,
                };
                if self.forbidden(links, conn, authz, at) {
                    return;
                }
                let sender = name_of(links, conn);
                match self.fanout(links, Some(conn), &sender, groups.as_slice(), payload, true) {
                    Ok(Some(n)) => {
                        self.push_reply(links, conn, frame::ack(&format!("published to {n}")));
                    }
                    // Answered when the last slice is delivered.
                    Ok(None) => {}
                    Err(DeliveryError::UnknownGroup(g)) => self.unknown_group(links, conn, g),
                    Err(DeliveryError::Limit) => {
                        self.group_refused(links, conn, GroupRefusal::Limit);
                    }
                    Err(_) => self.reply_err(links, conn, ErrorCode::Internal, "publish failed"),
                }
            }
            Command::Watch(groups) => {
                if !self.forbidden(links, conn, authz, Attempt::Watch(groups.as_slice())) {
                    self.cmd_watch(links, conn, groups.as_slice());
                }
            }
            Command::Unwatch(groups) => {
                self.unwatch(links, conn, groups.as_slice());
                self.push_reply(links, conn, frame::ack("unwatched"));
            }
            Command::Who(group) => self.cmd_who(links, conn, group),
            Command::Stats => {
                if !self.stats_across_loops(links, conn) {
                    let reply = self.stats_reply(links);
                    self.push_reply(links, conn, reply);
                }
            }
            Command::Send { to, payload } => {
                if self.forbidden(links, conn, authz, Attempt::Send { to, payload }) {
                    return;
                }
                let sender = name_of(links, conn);
                match self.deliver_message(links, Some(conn), &sender, to, payload) {
                    Ok(_) => self.push_reply(links, conn, frame::ack("sent")),
                    Err(_) => {
                        let text = format!("{to} is not online");
                        self.reply_err(links, conn, ErrorCode::NoSuchUser, &text);
                    }
                }
            }
            Command::Bind { address, port } => self.cmd_bind(links, conn, address, port),
            Command::Query(user) => self.cmd_query(links, conn, user),
            Command::Leave => self.cmd_leave(links, conn),
            Command::QSubscribe { queue, groups } => {
                let at = Attempt::Subscribe(groups.as_slice());
                if !self.forbidden(links, conn, authz, at) {
                    self.cmd_qsubscribe(links, conn, queue, groups.as_slice());
                }
            }
            Command::QUnsubscribe { queue, groups } => {
                self.cmd_qunsubscribe(links, conn, queue, groups.as_slice());
            }
            Command::Echo(on) => self.cmd_echo(links, conn, on),
            Command::Request {
                group,
                timeout_ms,
                payload,
            } => {
                let at = Attempt::Request {
                    group: std::slice::from_ref(&group),
                    payload,
                };
                if !self.forbidden(links, conn, authz, at) {
                    self.cmd_request(links, conn, group, timeout_ms, payload);
                }
            }
            Command::Survey {
                group,
                deadline_ms,
                payload,
            } => {
                let at = Attempt::Request {
                    group: std::slice::from_ref(&group),
                    payload,
                };
                if !self.forbidden(links, conn, authz, at) {
                    self.cmd_survey(links, conn, group, deadline_ms, payload);
                }
            }
            Command::Reply { rid, payload } => self.cmd_reply(links, conn, rid, payload),
        }
    }

    pub(super) fn cmd_user<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        name: &str,
        authz: &mut dyn Authorizer,
    ) {
        let Some(s) = links.proto_mut(conn) else {
            return;
        };
        if let Some(current) = &s.name {
            let text = format!("already logged in as {current}");
            if current.eq_ignore_ascii_case(name) {
                return self.push_reply(links, conn, frame::ack(&text));
            }
            // In cert mode the certificate decides the name (protocol.md 3.2).
            let code = if self.config.auth == AuthMode::Cert {
                ErrorCode::AuthFailed
            } else {
                ErrorCode::Forbidden
            };
            warn!(
                "{}: {code}: USER {name} refused, {text}",
                links.log_peer(conn)
            );
            return self.reply_err(links, conn, code, &text);
        }
        match self.config.auth {
            AuthMode::None => {
                if self.login_forbidden(links, conn, authz, name) {
                    return;
                }
                let reply = if self.login(links, conn, name.into()) {
                    frame::ack("logged in")
                } else {
                    self.too_many_sessions()
                };
                self.push_reply(links, conn, reply);
            }
            AuthMode::Password => {
                if let State::Login { user, .. } = &mut s.state {
                    *user = Some(name.into());
                }
                self.push_reply(links, conn, frame::ack("authentication required"));
            }
            AuthMode::Cert => {
                warn!(
                    "{}: login failed for {name}: no client certificate to log in with",
                    links.log_peer(conn)
                );
                self.fail(
                    links,
                    conn,
                    ErrorCode::AuthFailed,
                    "log in with a client certificate (mutual TLS)",
                    CloseReason::AuthFailed,
                );
            }
        }
    }

    pub(super) fn cmd_pass<T>(&mut self, links: &mut Sessions<T>, conn: ConnId, password: &[u8]) {
        let Some(l) = links.get_mut(conn) else {
            return;
        };
        let ticket = l.generation();
        let s = &mut l.proto;
        if self.config.auth != AuthMode::Password || s.is_logged_in() {
            return self.push_reply(links, conn, frame::ack("password ignored"));
        }
        let State::Login {
            user: Some(user), ..
        } = &s.state
        else {
            return self.reply_err(
                links,
                conn,
                ErrorCode::AuthRequired,
                "send USER before PASS",
            );
        };
        if password.len() > MAX_PASSWORD_LEN {
            let text = format!("a password is at most {MAX_PASSWORD_LEN} bytes");
            return self.reply_err(links, conn, ErrorCode::BadArgs, &text);
        }
        let user = user.to_string();
        let ip = l.peer().ip();
        match self
            .checks
            .admit(ip, self.now, self.config.max_password_checks)
        {
            Ok(()) => {}
            Err(Refusal::QueueFull) => {
                let text = "too many password checks waiting; try again";
                warn!("{}: busy: {text} (login as {user})", links.log_peer(conn));
                return self.reply_err(links, conn, ErrorCode::Busy, text);
            }
            Err(Refusal::BackOff(wait)) => {
                let text = format!(
                    "too many failed logins from {ip}; try again in {} ms",
                    wait.as_millis().max(1)
                );
                warn!("{}: busy: {text} (login as {user})", links.log_peer(conn));
                return self.reply_err(links, conn, ErrorCode::Busy, &text);
            }
        }
        if let Some(State::Login { verifying, .. }) = links.proto_mut(conn).map(|s| &mut s.state) {
            *verifying = true;
        }
        let request = AuthRequest {
            conn,
            ticket,
            user,
            password: password.to_vec(),
            cancelled: self.checks.start(conn.0, ticket, ip),
        };
        // Nothing more of this connection's input is processed until the
        // verdict, so its replies stay in order.
        links.set_paused(conn, true);
        self.auth_requests.push_back(request);
    }

    pub(super) fn cmd_hello<T>(&mut self, links: &mut Sessions<T>, conn: ConnId) {
        let text = format!(
            "server=switchboard\nversion={}\nprotocol=1\nmax_payload={}\nauth={}\nnode={}\ncluster={}\n",
            env!("CARGO_PKG_VERSION"),
            self.config.max_payload,
            self.config.auth.as_str(),
            self.config.node,
            self.cluster_status().as_str(),
        );
        self.push_reply(links, conn, frame::result(text.as_bytes()));
    }

    pub(super) fn cmd_subscribe<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        groups: &[GroupId],
    ) {
        if !self.within_subscriptions(links, conn, groups, |s| &s.groups) {
            return self.subscription_limit(links, conn);
        }
        if let Err(r) = self.ensure_groups(groups) {
            return self.group_refused(links, conn, r);
        }
        let joined = self.subscribe(links, conn, groups);
        self.push_reply(links, conn, frame::ack("subscribed"));
        if !joined.is_empty() && self.events_enabled {
            let user = name_of(links, conn);
            self.emit(Event::Subscribed {
                conn,
                user,
                groups: joined,
            });
        }
    }

    pub(super) fn cmd_watch<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        groups: &[GroupId],
    ) {
        if !self.within_subscriptions(links, conn, groups, |s| &s.watching) {
            return self.subscription_limit(links, conn);
        }
        if let Err(r) = self.ensure_groups(groups) {
            return self.group_refused(links, conn, r);
        }
        self.watch(links, conn, groups);
        self.push_reply(links, conn, frame::ack("watching"));
    }

    /// Whether subscribing (or watching, per `list`) to `groups` keeps the
    /// session within `max_subscriptions`, subscriptions and watches
    /// together; groups it is in already do not count again.
    fn within_subscriptions<T>(
        &self,
        links: &Sessions<T>,
        conn: ConnId,
        groups: &[GroupId],
        list: impl Fn(&Session) -> &Vec<GroupId>,
    ) -> bool {
        let Some(s) = links.proto(conn) else {
            return false;
        };
        let held = list(s);
        let mut new: Vec<GroupId> = groups
            .iter()
            .copied()
            .filter(|g| held.binary_search(g).is_err())
            .collect();
        new.sort_unstable();
        new.dedup();
        let queues = self.queue_members.get(&conn.0).map_or(0, Vec::len);
        s.groups.len() + s.watching.len() + queues + new.len() <= self.config.max_subscriptions
    }

    fn subscription_limit<T>(&mut self, links: &mut Sessions<T>, conn: ConnId) {
        let text = format!(
            "at most {} subscriptions and watches per session",
            self.config.max_subscriptions
        );
        warn!("{}: limit: {text}", links.log_peer(conn));
        self.reply_err(links, conn, ErrorCode::Limit, &text);
    }

    pub(super) fn group_refused<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        r: GroupRefusal,
    ) {
        match r {
            GroupRefusal::Unknown(g) => self.unknown_group(links, conn, g),
            GroupRefusal::Limit => {
                let text = format!(
                    "at most {} groups may be created by use",
                    self.config.max_open_groups
                );
                warn!("{}: limit: {text}", links.log_peer(conn));
                self.reply_err(links, conn, ErrorCode::Limit, &text);
            }
        }
    }

    pub(super) fn cmd_who<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        group: Option<GroupId>,
    ) {
        let reply = match group {
            None => {
                if let Some(reply) = &self.who_reply {
                    reply.clone()
                } else {
                    let remote = self.remote_users();
                    let reply = who_list(
                        self.users
                            .iter()
                            .filter_map(|(k, keys)| Some((&**k, user_name(links, keys)?)))
                            .chain(remote.iter().map(|(k, n)| (&**k, n))),
                    );
                    self.work += self.users.len() + remote.len();
                    self.who_reply = Some(reply.clone());
                    reply
                }
            }
            Some(g) => match self.groups.get(&g) {
                // Shown as in the user table, like `WHO 0`.
                Some(group) => {
                    self.work += group.subscribers.len();
                    let names: Vec<(String, &Arc<str>)> = group
                        .subscribers
                        .iter()
                        .filter_map(|&k| links.proto(ConnId(k))?.name.as_deref())
                        .filter_map(|n| {
                            let folded = n.to_ascii_lowercase();
                            let name = user_name(links, self.users.get(folded.as_str())?)?;
                            Some((folded, name))
                        })
                        .collect();
                    let remote = self.remote_group_users(g);
                    who_list(
                        names
                            .iter()
                            .map(|(k, n)| (k.as_str(), *n))
                            .chain(remote.iter().map(|(k, n)| (&**k, n))),
                    )
                }
                None if self.in_cluster() && self.config.open_groups => {
                    let remote = self.remote_group_users(g);
                    who_list(remote.iter().map(|(k, n)| (&**k, n)))
                }
                None if self.config.open_groups => frame::result(b""),
                None => return self.unknown_group(links, conn, g),
            },
        };
        self.push_reply(links, conn, reply);
    }
}

/// A `WHO` reply: one display name a line, by case-folded name, each once.
fn who_list<'a>(names: impl Iterator<Item = (&'a str, &'a Arc<str>)>) -> Bytes {
    let mut names: Vec<(&str, &Arc<str>)> = names.collect();
    names.sort_unstable_by(|a, b| a.0.cmp(b.0));
    names.dedup_by(|a, b| a.0 == b.0);
    let mut out = Vec::with_capacity(names.iter().map(|(_, n)| n.len() + 1).sum());
    for (_, name) in names {
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    frame::result(&out)
}
