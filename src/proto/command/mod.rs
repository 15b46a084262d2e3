//! Typed commands: what a frame from a client means, and how a client writes it.
//!
//! Each command family has its own module, holding both directions, in the
//! manner of mini-redis's one file per command: `login.rs` (`USER`, `PASS`),
//! `groups.rs` (`SUBSCRIBE`, `UNSUBSCRIBE`, `WATCH`, `UNWATCH`, `GROUPS`,
//! `WHO`), `publish.rs`, `send.rs`, `session.rs` (`PING`, `PONG`, `HELLO`,
//! `QUIT`) and `directory.rs` (`BIND`, `QUERY`, `LEAVE`). Each holds the
//! command's parse, its encode and a round-trip test.
//!
//! [`Command::from_frame`] is the server's parser. It checks argument count
//! and form (protocol.md sections 3-6) and borrows everything from the frame,
//! so parsing a command allocates nothing. A well-formed frame that is not a
//! command is [`CommandError::Unknown`]; a command with the wrong arguments is
//! [`CommandError::BadArgs`] with a sentence for the `ERR bad-args` reply.
//!
//! [`Command::encode`] is the other direction, the client's: a command from
//! `from_frame` (or from [`OwnedCommand::as_command`]) encodes to a frame that
//! `from_frame` parses back to the same command. [`OwnedCommand`] is the owned
//! form a client keeps and queues (`client::Request`); it borrows back as a
//! checked [`Command`] to be encoded.

use bytes::{Bytes, BytesMut};

use super::frame::Frame;

mod directory;
mod groups;
mod login;
mod patterns;
mod publish;
mod send;
mod session;

pub use groups::{GroupId, GroupList, parse_group};
pub use login::{MAX_USER_LEN, is_valid_user};
pub use patterns::{DEFAULT_REQUEST_MS, MAX_WAIT_MS};
pub use publish::MAX_PUBLISH_GROUPS;

/// A command from a client, borrowing the frame it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command<'a> {
    /// `USER 0 <name>`.
    User(&'a str),
    /// `PASS 0 <password>` or `PASS LEN\n<password>`.
    Pass(&'a [u8]),
    /// `PING 0`.
    Ping,
    /// `PONG 0`.
    Pong,
    /// `HELLO 0`.
    Hello,
    /// `QUIT 0`.
    Quit,
    /// `GROUPS 0`.
    Groups,
    /// `STATS 0`.
    Stats,
    /// `SUBSCRIBE 0 <g>...`.
    Subscribe(GroupList),
    /// `UNSUBSCRIBE 0 <g>...`.
    Unsubscribe(GroupList),
    /// `PUBLISH LEN <g>...\n<payload>`.
    Publish {
        /// Target groups, as given.
        groups: GroupList,
        /// The message.
        payload: &'a [u8],
    },
    /// `WATCH 0 <g>...`.
    Watch(GroupList),
    /// `UNWATCH 0 <g>...`.
    Unwatch(GroupList),
    /// `WHO 0 [<g>]`.
    Who(Option<GroupId>),
    /// `SEND LEN <user>\n<payload>`.
    Send {
        /// Recipient user name.
        to: &'a str,
        /// The message.
        payload: &'a [u8],
    },
    /// `BIND 0 <address> <port>`: this user's peer endpoint.
    Bind {
        /// The address (the session's own, or the server refuses it).
        address: std::net::IpAddr,
        /// The port, 1 to 65535.
        port: u16,
    },
    /// `QUERY 0 [<user>]`: the directory, or one user's entry.
    Query(Option<&'a str>),
    /// `LEAVE 0`: removes this user's entry.
    Leave,
    /// `QSUBSCRIBE 0 <queue> <g>...`.
    QSubscribe {
        /// The queue group's name.
        queue: &'a str,
        /// The groups.
        groups: GroupList,
    },
    /// `QUNSUBSCRIBE 0 <queue> <g>...`.
    QUnsubscribe {
        /// The queue group's name.
        queue: &'a str,
        /// The groups.
        groups: GroupList,
    },
    /// `REQUEST LEN <g> [<timeout_ms>]` + payload.
    Request {
        /// The group whose responders are asked.
        group: GroupId,
        /// How long to wait (1 to 60,000 ms; 5,000 when not given).
        timeout_ms: u32,
        /// The request.
        payload: &'a [u8],
    },
    /// `REPLY LEN <rid>` + payload: the answer to a `REQUESTED` or
    /// `SURVEYED`.
    Reply {
        /// The request's id.
        rid: &'a str,
        /// The answer.
        payload: &'a [u8],
    },
    /// `SURVEY LEN <g> <deadline_ms>` + payload.
    Survey {
        /// The group asked.
        group: GroupId,
        /// When answers stop being collected (1 to 60,000 ms).
        deadline_ms: u32,
        /// The question.
        payload: &'a [u8],
    },
    /// `ECHO 0 on|off`: whether this session gets its own publishes.
    Echo(bool),
}

/// Why a frame is not a valid command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// A TYPE that names no command (`ERR unknown-command`).
    Unknown,
    /// Wrong argument count or form (`ERR bad-args`), with a reason for people.
    BadArgs(&'static str),
}

impl<'a> Command<'a> {
    /// Interprets a decoded frame.
    ///
    /// # Errors
    ///
    /// [`CommandError`]: unknown type, or arguments of the wrong count or form.
    pub fn from_frame(frame: &Frame<'a>) -> Result<Self, CommandError> {
        match frame.verb().as_bytes() {
            b"USER" => login::parse_user(frame),
            b"PASS" => login::parse_pass(frame),
            b"PING" => no_args(frame, Self::Ping),
            b"PONG" => no_args(frame, Self::Pong),
            b"HELLO" => no_args(frame, Self::Hello),
            b"QUIT" => no_args(frame, Self::Quit),
            b"GROUPS" => no_args(frame, Self::Groups),
            b"STATS" => no_args(frame, Self::Stats),
            b"SUBSCRIBE" => groups::parse_list(frame, Self::Subscribe),
            b"UNSUBSCRIBE" => groups::parse_list(frame, Self::Unsubscribe),
            b"WATCH" => groups::parse_list(frame, Self::Watch),
            b"UNWATCH" => groups::parse_list(frame, Self::Unwatch),
            b"PUBLISH" => publish::parse(frame),
            b"WHO" => groups::parse_who(frame),
            b"SEND" => send::parse(frame),
            b"BIND" => directory::parse_bind(frame),
            b"QUERY" => directory::parse_query(frame),
            b"LEAVE" => directory::parse_leave(frame),
            b"QSUBSCRIBE" => patterns::parse_queue(frame, true),
            b"QUNSUBSCRIBE" => patterns::parse_queue(frame, false),
            b"REQUEST" => patterns::parse_request(frame),
            b"REPLY" => patterns::parse_reply(frame),
            b"SURVEY" => patterns::parse_survey(frame),
            b"ECHO" => patterns::parse_echo(frame),
            _ => Err(CommandError::Unknown),
        }
    }

    /// Appends the command as one frame to `out`.
    ///
    /// A command that [`Command::check`] accepts (every command from
    /// [`Command::from_frame`] or [`OwnedCommand::as_command`]) encodes to a
    /// frame that `from_frame` parses back to the same command. One built by
    /// hand with arguments of the wrong form is written as given, and the
    /// server will refuse it.
    pub fn encode(&self, out: &mut BytesMut) {
        match *self {
            Self::User(name) => login::encode_user(out, name),
            Self::Pass(pw) => login::encode_pass(out, pw),
            Self::Ping | Self::Pong | Self::Hello | Self::Quit | Self::Groups | Self::Stats => {
                session::encode(out, self.verb());
            }
            Self::Subscribe(ref g)
            | Self::Unsubscribe(ref g)
            | Self::Watch(ref g)
            | Self::Unwatch(ref g) => groups::encode_list(out, self.verb(), g.as_slice()),
            Self::Publish {
                ref groups,
                payload,
            } => publish::encode(out, groups, payload),
            Self::Who(group) => groups::encode_who(out, group),
            Self::Send { to, payload } => send::encode(out, to, payload),
            Self::Bind { address, port } => directory::encode_bind(out, address, port),
            Self::Query(user) => directory::encode_query(out, user),
            Self::Leave => directory::encode_leave(out),
            Self::QSubscribe { queue, ref groups } => {
                patterns::encode_queue(out, "QSUBSCRIBE", queue, groups);
            }
            Self::QUnsubscribe { queue, ref groups } => {
                patterns::encode_queue(out, "QUNSUBSCRIBE", queue, groups);
            }
            Self::Request {
                group,
                timeout_ms,
                payload,
            } => patterns::encode_request(out, group, timeout_ms, payload),
            Self::Reply { rid, payload } => patterns::encode_reply(out, rid, payload),
            Self::Survey {
                group,
                deadline_ms,
                payload,
            } => patterns::encode_survey(out, group, deadline_ms, payload),
            Self::Echo(on) => patterns::encode_echo(out, on),
        }
    }

    /// Whether the command's arguments have the form [`Command::from_frame`]
    /// accepts, so that [`Command::encode`] round-trips. A [`GroupList`] is
    /// valid by construction; names, passwords and the rest are checked here.
    ///
    /// # Errors
    ///
    /// [`CommandError::BadArgs`] with the reason.
    pub fn check(&self) -> Result<(), CommandError> {
        match *self {
            Self::User(name) => login::check_user(name),
            Self::Pass(pw) => login::check_pass(pw),
            Self::Publish { ref groups, .. } => publish::check(groups),
            Self::Who(group) => groups::check_who(group),
            Self::Send { to, .. } => send::check(to),
            Self::Bind { port, .. } => directory::check_bind(port),
            Self::Query(user) => directory::check_query(user),
            Self::QSubscribe { queue, ref groups } | Self::QUnsubscribe { queue, ref groups } => {
                patterns::check_queue(queue, groups)
            }
            Self::Request {
                group, timeout_ms, ..
            } => patterns::check_wait(group, timeout_ms, true),
            Self::Survey {
                group, deadline_ms, ..
            } => patterns::check_wait(group, deadline_ms, false),
            Self::Reply { rid, .. } => patterns::check_reply(rid),
            Self::Ping
            | Self::Echo(_)
            | Self::Leave
            | Self::Pong
            | Self::Hello
            | Self::Quit
            | Self::Groups
            | Self::Stats
            | Self::Subscribe(_)
            | Self::Unsubscribe(_)
            | Self::Watch(_)
            | Self::Unwatch(_) => Ok(()),
        }
    }

    /// The frame TYPE of this command.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::User(_) => "USER",
            Self::Pass(_) => "PASS",
            Self::Ping => "PING",
            Self::Pong => "PONG",
            Self::Hello => "HELLO",
            Self::Quit => "QUIT",
            Self::Groups => "GROUPS",
            Self::Stats => "STATS",
            Self::Subscribe(_) => "SUBSCRIBE",
            Self::Unsubscribe(_) => "UNSUBSCRIBE",
            Self::Publish { .. } => "PUBLISH",
            Self::Watch(_) => "WATCH",
            Self::Unwatch(_) => "UNWATCH",
            Self::Who(_) => "WHO",
            Self::Send { .. } => "SEND",
            Self::Bind { .. } => "BIND",
            Self::Query(_) => "QUERY",
            Self::Leave => "LEAVE",
            Self::QSubscribe { .. } => "QSUBSCRIBE",
            Self::QUnsubscribe { .. } => "QUNSUBSCRIBE",
            Self::Request { .. } => "REQUEST",
            Self::Reply { .. } => "REPLY",
            Self::Survey { .. } => "SURVEY",
            Self::Echo(_) => "ECHO",
        }
    }

    /// The owned form, which outlives the frame (what a client queues).
    pub fn into_owned(self) -> OwnedCommand {
        match self {
            Self::User(name) => OwnedCommand::User(name.to_owned()),
            Self::Pass(pw) => OwnedCommand::Pass(pw.to_vec()),
            Self::Ping => OwnedCommand::Ping,
            Self::Pong => OwnedCommand::Pong,
            Self::Hello => OwnedCommand::Hello,
            Self::Quit => OwnedCommand::Quit,
            Self::Groups => OwnedCommand::Groups,
            Self::Stats => OwnedCommand::Stats,
            Self::Subscribe(g) => OwnedCommand::Subscribe(g.as_slice().to_vec()),
            Self::Unsubscribe(g) => OwnedCommand::Unsubscribe(g.as_slice().to_vec()),
            Self::Publish { groups, payload } => OwnedCommand::Publish {
                groups: groups.as_slice().to_vec(),
                payload: Bytes::copy_from_slice(payload),
            },
            Self::Watch(g) => OwnedCommand::Watch(g.as_slice().to_vec()),
            Self::Unwatch(g) => OwnedCommand::Unwatch(g.as_slice().to_vec()),
            Self::Who(group) => OwnedCommand::Who(group),
            Self::Send { to, payload } => OwnedCommand::Send {
                to: to.to_owned(),
                payload: Bytes::copy_from_slice(payload),
            },
            Self::Bind { address, port } => OwnedCommand::Bind { address, port },
            Self::Query(user) => OwnedCommand::Query(user.map(str::to_owned)),
            Self::Leave => OwnedCommand::Leave,
            Self::QSubscribe { queue, groups } => OwnedCommand::QSubscribe {
                queue: queue.to_owned(),
                groups: groups.as_slice().to_vec(),
            },
            Self::QUnsubscribe { queue, groups } => OwnedCommand::QUnsubscribe {
                queue: queue.to_owned(),
                groups: groups.as_slice().to_vec(),
            },
            Self::Request {
                group,
                timeout_ms,
                payload,
            } => OwnedCommand::Request {
                group,
                timeout_ms,
                payload: Bytes::copy_from_slice(payload),
            },
            Self::Reply { rid, payload } => OwnedCommand::Reply {
                rid: rid.to_owned(),
                payload: Bytes::copy_from_slice(payload),
            },
            Self::Survey {
                group,
                deadline_ms,
                payload,
            } => OwnedCommand::Survey {
                group,
                deadline_ms,
                payload: Bytes::copy_from_slice(payload),
            },
            Self::Echo(on) => OwnedCommand::Echo(on),
        }
    }

    /// Whether the command is allowed before login (protocol.md section 3.4).
    pub fn allowed_before_login(&self) -> bool {
        matches!(
            self,
            Self::User(_) | Self::Pass(_) | Self::Ping | Self::Pong | Self::Hello | Self::Quit
        )
    }
}

/// A command in owned form: [`Command`] with its arguments in buffers of its
/// own, so that it can be built, queued and sent later. The client's
/// `Request` is this type.
///
/// It is encoded through [`OwnedCommand::as_command`], which checks it and
/// borrows it back as a [`Command`]: the same encoder, and the same checks,
/// as the server's parser round-trips with.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnedCommand {
    /// `USER 0 <name>`.
    User(String),
    /// `PASS 0 <password>`, or `PASS LEN` with the password as payload when it
    /// holds a space or another byte not allowed in an argument.
    Pass(Vec<u8>),
    /// `SUBSCRIBE 0 <g>...`.
    Subscribe(Vec<GroupId>),
    /// `UNSUBSCRIBE 0 <g>...`.
    Unsubscribe(Vec<GroupId>),
    /// `WATCH 0 <g>...`.
    Watch(Vec<GroupId>),
    /// `UNWATCH 0 <g>...`.
    Unwatch(Vec<GroupId>),
    /// `PUBLISH LEN <g>...` + payload.
    Publish {
        /// Target groups (1 to 63).
        groups: Vec<GroupId>,
        /// The message.
        payload: Bytes,
    },
    /// `SEND LEN <user>` + payload.
    Send {
        /// The recipient.
        to: String,
        /// The message.
        payload: Bytes,
    },
    /// `WHO 0 [<g>]`.
    Who(Option<GroupId>),
    /// `GROUPS 0`.
    Groups,
    /// `STATS 0`.
    Stats,
    /// `HELLO 0`.
    Hello,
    /// `PING 0`; its reply is `PONG`.
    Ping,
    /// `QUIT 0`.
    Quit,
    /// `PONG 0`: the answer to a `PING`, which gets no reply of its own.
    Pong,
    /// `BIND 0 <address> <port>`.
    Bind {
        /// The peer endpoint's address.
        address: std::net::IpAddr,
        /// Its port.
        port: u16,
    },
    /// `QUERY 0 [<user>]`.
    Query(Option<String>),
    /// `LEAVE 0`.
    Leave,
    /// `QSUBSCRIBE 0 <queue> <g>...`.
    QSubscribe {
        /// The queue group.
        queue: String,
        /// The groups.
        groups: Vec<GroupId>,
    },
    /// `QUNSUBSCRIBE 0 <queue> <g>...`.
    QUnsubscribe {
        /// The queue group.
        queue: String,
        /// The groups.
        groups: Vec<GroupId>,
    },
    /// `REQUEST LEN <g> <timeout_ms>` + payload.
    Request {
        /// The group.
        group: GroupId,
        /// 1 to 60,000 ms.
        timeout_ms: u32,
        /// The request.
        payload: Bytes,
    },
    /// `REPLY LEN <rid>` + payload.
    Reply {
        /// The request's id.
        rid: String,
        /// The answer.
        payload: Bytes,
    },
    /// `SURVEY LEN <g> <deadline_ms>` + payload.
    Survey {
        /// The group.
        group: GroupId,
        /// 1 to 60,000 ms.
        deadline_ms: u32,
        /// The question.
        payload: Bytes,
    },
    /// `ECHO 0 on|off`.
    Echo(bool),
}

impl OwnedCommand {
    /// The command, checked, borrowing this one's buffers: what
    /// [`Command::encode`] writes.
    ///
    /// # Errors
    ///
    /// What [`Command::check`] finds, and for a group list: no group, group 0,
    /// or more than 64 groups.
    pub fn as_command(&self) -> Result<Command<'_>, CommandError> {
        let cmd = match self {
            Self::User(name) => Command::User(name),
            Self::Pass(pw) => Command::Pass(pw),
            Self::Subscribe(g) => Command::Subscribe(GroupList::new(g)?),
            Self::Unsubscribe(g) => Command::Unsubscribe(GroupList::new(g)?),
            Self::Watch(g) => Command::Watch(GroupList::new(g)?),
            Self::Unwatch(g) => Command::Unwatch(GroupList::new(g)?),
            Self::Publish { groups, payload } => Command::Publish {
                groups: GroupList::new(groups)?,
                payload,
            },
            Self::Send { to, payload } => Command::Send { to, payload },
            Self::Who(group) => Command::Who(*group),
            Self::Groups => Command::Groups,
            Self::Stats => Command::Stats,
            Self::Hello => Command::Hello,
            Self::Ping => Command::Ping,
            Self::Quit => Command::Quit,
            Self::Pong => Command::Pong,
            Self::Bind { address, port } => Command::Bind {
                address: *address,
                port: *port,
            },
            Self::Query(user) => Command::Query(user.as_deref()),
            Self::Leave => Command::Leave,
            Self::QSubscribe { queue, groups } => Command::QSubscribe {
                queue,
                groups: GroupList::new(groups)?,
            },
            Self::QUnsubscribe { queue, groups } => Command::QUnsubscribe {
                queue,
                groups: GroupList::new(groups)?,
            },
            Self::Request {
                group,
                timeout_ms,
                payload,
            } => Command::Request {
                group: *group,
                timeout_ms: *timeout_ms,
                payload,
            },
            Self::Reply { rid, payload } => Command::Reply { rid, payload },
            Self::Survey {
                group,
                deadline_ms,
                payload,
            } => Command::Survey {
                group: *group,
                deadline_ms: *deadline_ms,
                payload,
            },
            Self::Echo(on) => Command::Echo(*on),
        };
        cmd.check()?;
        Ok(cmd)
    }

    /// The frame TYPE this command is sent as.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::User(_) => "USER",
            Self::Pass(_) => "PASS",
            Self::Subscribe(_) => "SUBSCRIBE",
            Self::Unsubscribe(_) => "UNSUBSCRIBE",
            Self::Watch(_) => "WATCH",
            Self::Unwatch(_) => "UNWATCH",
            Self::Publish { .. } => "PUBLISH",
            Self::Send { .. } => "SEND",
            Self::Who(_) => "WHO",
            Self::Groups => "GROUPS",
            Self::Stats => "STATS",
            Self::Hello => "HELLO",
            Self::Ping => "PING",
            Self::Quit => "QUIT",
            Self::Pong => "PONG",
            Self::Bind { .. } => "BIND",
            Self::Query(_) => "QUERY",
            Self::Leave => "LEAVE",
            Self::QSubscribe { .. } => "QSUBSCRIBE",
            Self::QUnsubscribe { .. } => "QUNSUBSCRIBE",
            Self::Request { .. } => "REQUEST",
            Self::Reply { .. } => "REPLY",
            Self::Survey { .. } => "SURVEY",
            Self::Echo(_) => "ECHO",
        }
    }
}

impl std::fmt::Debug for OwnedCommand {
    /// Like a derived `Debug`, except that a password is never printed, and
    /// payloads are shown by their length.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(u) => f.debug_tuple("User").field(u).finish(),
            Self::Pass(_) => f.write_str("Pass(<redacted>)"),
            Self::Subscribe(g) => f.debug_tuple("Subscribe").field(g).finish(),
            Self::Unsubscribe(g) => f.debug_tuple("Unsubscribe").field(g).finish(),
            Self::Watch(g) => f.debug_tuple("Watch").field(g).finish(),
            Self::Unwatch(g) => f.debug_tuple("Unwatch").field(g).finish(),
            Self::Publish { groups, payload } => f
                .debug_struct("Publish")
                .field("groups", groups)
                .field("len", &payload.len())
                .finish(),
            Self::Send { to, payload } => f
                .debug_struct("Send")
                .field("to", to)
                .field("len", &payload.len())
                .finish(),
            Self::Who(g) => f.debug_tuple("Who").field(g).finish(),
            Self::Groups => f.write_str("Groups"),
            Self::Stats => f.write_str("Stats"),
            Self::Hello => f.write_str("Hello"),
            Self::Ping => f.write_str("Ping"),
            Self::Quit => f.write_str("Quit"),
            Self::Pong => f.write_str("Pong"),
            Self::Bind { address, port } => f
                .debug_struct("Bind")
                .field("address", address)
                .field("port", port)
                .finish(),
            Self::Query(user) => f.debug_tuple("Query").field(user).finish(),
            Self::Leave => f.write_str("Leave"),
            Self::QSubscribe { queue, groups } => f
                .debug_struct("QSubscribe")
                .field("queue", queue)
                .field("groups", groups)
                .finish(),
            Self::QUnsubscribe { queue, groups } => f
                .debug_struct("QUnsubscribe")
                .field("queue", queue)
                .field("groups", groups)
                .finish(),
            Self::Request {
                group,
                timeout_ms,
                payload,
            } => f
                .debug_struct("Request")
                .field("group", group)
                .field("timeout_ms", timeout_ms)
                .field("len", &payload.len())
                .finish(),
            Self::Reply { rid, payload } => f
                .debug_struct("Reply")
                .field("rid", rid)
                .field("len", &payload.len())
                .finish(),
            Self::Survey {
                group,
                deadline_ms,
                payload,
            } => f
                .debug_struct("Survey")
                .field("group", group)
                .field("deadline_ms", deadline_ms)
                .field("len", &payload.len())
                .finish(),
            Self::Echo(on) => f.debug_tuple("Echo").field(on).finish(),
        }
    }
}

/// Whether a frame of this type is allowed before login, judged from its TYPE
/// alone (so that a bad `SUBSCRIBE` before login still gets `auth-required`).
pub fn verb_allowed_before_login(verb: &[u8]) -> bool {
    matches!(
        verb,
        b"USER" | b"PASS" | b"PING" | b"PONG" | b"HELLO" | b"QUIT"
    )
}

const NO_PAYLOAD: &str = "this command takes no payload (LEN 0)";
const NO_ARGS: &str = "this command takes no arguments";

/// `cmd`, if the frame has no payload.
fn no_payload<'a>(frame: &Frame<'a>, cmd: Command<'a>) -> Result<Command<'a>, CommandError> {
    if frame.payload().is_empty() {
        Ok(cmd)
    } else {
        Err(CommandError::BadArgs(NO_PAYLOAD))
    }
}

/// `cmd`, if the frame has neither arguments nor payload.
fn no_args<'a>(frame: &Frame<'a>, cmd: Command<'a>) -> Result<Command<'a>, CommandError> {
    if frame.arg_count() != 0 {
        Err(CommandError::BadArgs(NO_ARGS))
    } else {
        no_payload(frame, cmd)
    }
}

/// Frames carry only ASCII in arguments; a validated argument is valid UTF-8.
fn ascii_str(arg: &[u8]) -> &str {
    std::str::from_utf8(arg).unwrap_or_default()
}

/// What the per-command tests share: parse a byte string as the server does,
/// and check that a command survives encode, decode and parse.
#[cfg(test)]
mod testing {
    use bytes::BytesMut;

    use super::{Command, CommandError};
    use crate::proto::frame::DEFAULT_MAX_PAYLOAD;
    use crate::proto::{Decoded, decode};

    /// The server's reading of `input`: one whole frame, then `from_frame`.
    pub(super) fn parse(input: &[u8]) -> Result<Command<'_>, CommandError> {
        match decode(input, DEFAULT_MAX_PAYLOAD) {
            Ok(Decoded::Frame { frame, .. }) => Command::from_frame(&frame),
            other => panic!("not one frame: {other:?}"),
        }
    }

    /// Encodes `cmd`, decodes and parses it back, and checks that the same
    /// command comes out; the same for its owned form, which must encode to
    /// the same bytes. Returns the wire bytes.
    pub(super) fn round_trip(cmd: Command<'_>) -> Vec<u8> {
        assert_eq!(cmd.check(), Ok(()), "{cmd:?}");
        let mut out = BytesMut::new();
        cmd.encode(&mut out);
        match decode(&out, DEFAULT_MAX_PAYLOAD) {
            Ok(Decoded::Frame { consumed, .. }) => assert_eq!(consumed, out.len(), "one frame"),
            other => panic!("{cmd:?} does not encode to one frame: {other:?}"),
        }
        assert_eq!(parse(&out), Ok(cmd), "{:?}", String::from_utf8_lossy(&out));
        let owned = cmd.into_owned();
        assert_eq!(owned.verb(), cmd.verb());
        assert_eq!(owned.as_command(), Ok(cmd));
        let mut again = BytesMut::new();
        owned.as_command().map(|c| c.encode(&mut again)).ok();
        assert_eq!(again, out);
        out.to_vec()
    }

    /// Asserts that the server refuses `input` with `err`.
    pub(super) fn refuses(input: &[u8], err: CommandError) {
        assert_eq!(
            parse(input),
            Err(err),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{parse, refuses, round_trip};
    use super::*;

    fn cmd(input: &[u8]) -> Result<String, CommandError> {
        parse(input).map(|c| format!("{c:?}"))
    }

    #[test]
    fn parses_each_command() {
        assert_eq!(cmd(b"user 0 Alice\n").as_deref(), Ok("User(\"Alice\")"));
        assert_eq!(cmd(b"PASS 0 pw\n").as_deref(), Ok("Pass([112, 119])"));
        assert_eq!(
            cmd(b"PASS 4\na b \n").as_deref(),
            Ok("Pass([97, 32, 98, 32])")
        );
        assert_eq!(
            cmd(b"SUBSCRIBE 0 1 4294967295\n").as_deref(),
            Ok("Subscribe([1, 4294967295])")
        );
        assert_eq!(
            cmd(b"PUBLISH 2 3 3\nhi").as_deref(),
            Ok("Publish { groups: [3, 3], payload: [104, 105] }")
        );
        assert_eq!(cmd(b"WHO 0\n").as_deref(), Ok("Who(None)"));
        assert_eq!(cmd(b"WHO 0 7\n").as_deref(), Ok("Who(Some(7))"));
        assert_eq!(
            cmd(b"SEND 0 bob\n").as_deref(),
            Ok("Send { to: \"bob\", payload: [] }")
        );
        assert_eq!(
            cmd(b"BIND 0 127.0.0.1 5000\n").as_deref(),
            Ok("Bind { address: 127.0.0.1, port: 5000 }")
        );
    }

    #[test]
    fn unknown_types() {
        refuses(b"FOO 5\nhello", CommandError::Unknown);
        refuses(b"PUBLISHED 0 alice 1\n", CommandError::Unknown);
        refuses(b"ACK 0\n", CommandError::Unknown);
    }

    #[test]
    fn every_verb_round_trips_and_names_its_type() {
        let payload = b"x";
        let g = GroupList::new(&[1]).expect("one group");
        for cmd in [
            Command::User("a"),
            Command::Pass(b"p"),
            Command::Ping,
            Command::Pong,
            Command::Hello,
            Command::Quit,
            Command::Groups,
            Command::Subscribe(g),
            Command::Unsubscribe(g),
            Command::Publish { groups: g, payload },
            Command::Watch(g),
            Command::Unwatch(g),
            Command::Who(None),
            Command::Send { to: "b", payload },
            Command::Query(None),
            Command::Leave,
            Command::Bind {
                address: std::net::IpAddr::from([127, 0, 0, 1]),
                port: 80,
            },
        ] {
            let wire = round_trip(cmd);
            assert!(wire.starts_with(cmd.verb().as_bytes()), "{cmd:?}");
            assert_eq!(
                cmd.allowed_before_login(),
                verb_allowed_before_login(cmd.verb().as_bytes())
            );
        }
    }

    #[test]
    fn owned_debug_hides_the_password() {
        let pw = OwnedCommand::Pass(b"secret".to_vec());
        assert_eq!(format!("{pw:?}"), "Pass(<redacted>)");
        let publish = OwnedCommand::Publish {
            groups: vec![1],
            payload: Bytes::from_static(b"hi"),
        };
        assert_eq!(format!("{publish:?}"), "Publish { groups: [1], len: 2 }");
    }
}
