//! Command execution: each frame a session sends, decoded, checked and
//! carried out (protocol.md sections 3 to 5). The registry it changes is in
//! `registry.rs`; the connection machinery is the table's (`crate::conn`).

use std::fmt::Write as _;

use bytes::Bytes;
use log::debug;

use super::registry::{name_of, user_name};
use super::session::{Session, State};
use super::{Attempt, Authorizer};
use super::{AuthMode, AuthRequest, Broker, DeliveryError, Event, PRELOGIN_MAX_PAYLOAD, Sessions};
use crate::conn::{CloseReason, ConnId};
use crate::error::{ErrorCode, FrameError};
use crate::proto::command::{Command, CommandError, verb_allowed_before_login};
use crate::proto::frame;
use crate::proto::{Decoded, GroupId, decode};

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
        let mut used = 0;
        loop {
            if !links.can_process(conn) {
                return used;
            }
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
                    used += consumed;
                    self.execute(links, conn, &frame, authz);
                }
                Ok(Decoded::Incomplete { skip, .. }) => {
                    // No reservation for the declared size: the buffer grows
                    // only with bytes that actually arrive, so a peer that
                    // announces 1 MiB and sends one byte costs one byte.
                    return used + skip;
                }
                Err(e) => {
                    self.frame_error(links, conn, e);
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
        debug!("{conn}: {e}");
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
                let mut out = String::new();
                for (id, name) in self.groups() {
                    let _ = writeln!(out, "{id},{name}");
                }
                self.push_reply(links, conn, frame::result(out.as_bytes()));
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
                match self.fanout(links, Some(conn), &sender, groups.as_slice(), payload) {
                    Ok(n) => {
                        self.push_reply(links, conn, frame::ack(&format!("published to {n}")));
                    }
                    Err(DeliveryError::UnknownGroup(g)) => self.unknown_group(links, conn, g),
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
            Command::Directory(verb) => {
                let text = format!("{verb} is not available on this server yet");
                self.reply_err(links, conn, ErrorCode::UnknownCommand, &text);
            }
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
            return self.reply_err(links, conn, code, &text);
        }
        match self.config.auth {
            AuthMode::None => {
                if self.login_forbidden(links, conn, authz, name) {
                    return;
                }
                self.login(links, conn, name.into());
                self.push_reply(links, conn, frame::ack("logged in"));
            }
            AuthMode::Password => {
                if let State::Login { user, .. } = &mut s.state {
                    *user = Some(name.into());
                }
                self.push_reply(links, conn, frame::ack("authentication required"));
            }
            AuthMode::Cert => {
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
            user: Some(user),
            verifying,
        } = &mut s.state
        else {
            return self.reply_err(
                links,
                conn,
                ErrorCode::AuthRequired,
                "send USER before PASS",
            );
        };
        *verifying = true;
        let request = AuthRequest {
            conn,
            ticket,
            user: user.to_string(),
            password: password.to_vec(),
        };
        // Nothing more of this connection's input is processed until the
        // verdict, so its replies stay in order.
        links.set_paused(conn, true);
        self.auth_requests.push_back(request);
    }

    pub(super) fn cmd_hello<T>(&mut self, links: &mut Sessions<T>, conn: ConnId) {
        let text = format!(
            "server=switchboard\nversion={}\nprotocol=1\nmax_payload={}\nauth={}\n",
            env!("CARGO_PKG_VERSION"),
            self.config.max_payload,
            self.config.auth.as_str(),
        );
        self.push_reply(links, conn, frame::result(text.as_bytes()));
    }

    pub(super) fn cmd_subscribe<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        groups: &[GroupId],
    ) {
        if let Err(g) = self.ensure_groups(groups) {
            return self.unknown_group(links, conn, g);
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
        if let Err(g) = self.ensure_groups(groups) {
            return self.unknown_group(links, conn, g);
        }
        self.watch(links, conn, groups);
        self.push_reply(links, conn, frame::ack("watching"));
    }

    pub(super) fn cmd_who<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        group: Option<GroupId>,
    ) {
        let mut names: Vec<(String, String)> = match group {
            None => self
                .users
                .iter()
                .filter_map(|(k, keys)| Some((k.to_string(), user_name(links, keys)?.to_string())))
                .collect(),
            Some(g) => match self.groups.get(&g) {
                // Shown as in the user table, like `WHO 0`.
                Some(group) => group
                    .subscribers
                    .iter()
                    .filter_map(|&k| links.proto(ConnId(k))?.name.as_deref())
                    .filter_map(|n| {
                        let folded = n.to_ascii_lowercase();
                        let keys = self.users.get(folded.as_str())?;
                        let name = user_name(links, keys)?;
                        Some((folded, name.to_string()))
                    })
                    .collect(),
                None if self.config.open_groups => Vec::new(),
                None => return self.unknown_group(links, conn, g),
            },
        };
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        names.dedup_by(|a, b| a.0 == b.0);
        let mut out = String::new();
        for (_, name) in names {
            out.push_str(&name);
            out.push('\n');
        }
        self.push_reply(links, conn, frame::result(out.as_bytes()));
    }
}
