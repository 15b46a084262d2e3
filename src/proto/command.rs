//! Typed commands: what a frame from a client means.
//!
//! [`Command::from_frame`] checks argument count and form (protocol.md sections
//! 3-6) and borrows everything from the frame, so parsing a command allocates
//! nothing. A well-formed frame that is not a command is
//! [`CommandError::Unknown`]; a command with the wrong arguments is
//! [`CommandError::BadArgs`] with a sentence for the `ERR bad-args` reply.

use super::frame::{Frame, MAX_ARGS};

/// A group number, 1 to 4294967295.
pub type GroupId = u32;

/// The groups named by one command: at most 64, kept inline (no allocation).
#[derive(Clone, Copy)]
pub struct GroupList {
    ids: [GroupId; MAX_ARGS],
    len: u8,
}

impl GroupList {
    /// The groups in the order given (duplicates kept, as published).
    pub fn as_slice(&self) -> &[GroupId] {
        self.ids.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// Parses 1 to 64 group numbers.
    fn parse<'a>(args: impl Iterator<Item = &'a [u8]>) -> Result<Self, CommandError> {
        let mut list = Self {
            ids: [0; MAX_ARGS],
            len: 0,
        };
        for arg in args {
            let id = parse_group(arg)
                .ok_or(CommandError::BadArgs("group numbers are 1 to 4294967295"))?;
            let slot = list
                .ids
                .get_mut(usize::from(list.len))
                .ok_or(CommandError::BadArgs("too many groups"))?;
            *slot = id;
            list.len += 1;
        }
        if list.len == 0 {
            return Err(CommandError::BadArgs("name at least one group"));
        }
        Ok(list)
    }
}

impl std::fmt::Debug for GroupList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Parses a group number: decimal digits, 1 to 4294967295.
pub fn parse_group(arg: &[u8]) -> Option<GroupId> {
    if arg.is_empty() || arg.len() > 10 || !arg.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = arg.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    u32::try_from(n).ok().filter(|&g| g != 0)
}

/// Longest user name.
pub const MAX_USER_LEN: usize = 64;

/// Whether `name` is a valid user name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn is_valid_user(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_LEN
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A command from a client, borrowing the frame it came in.
#[derive(Debug, Clone, Copy)]
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
    /// `BIND`, `QUERY` or `LEAVE`: directory commands this server does not offer yet.
    Directory(&'static str),
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
        let verb = frame.verb();
        let n = frame.arg_count();
        let payload = frame.payload();
        let mut args = frame.args();
        let no_payload = |cmd: Self| {
            if payload.is_empty() {
                Ok(cmd)
            } else {
                Err(CommandError::BadArgs(
                    "this command takes no payload (LEN 0)",
                ))
            }
        };
        let no_args = |cmd: Self| {
            if n != 0 {
                Err(CommandError::BadArgs("this command takes no arguments"))
            } else {
                no_payload(cmd)
            }
        };
        match verb.as_bytes() {
            b"USER" => {
                let name = match (n, args.next()) {
                    (1, Some(name)) if is_valid_user(name) => name,
                    (1, _) => {
                        return Err(CommandError::BadArgs(
                            "user names are 1 to 64 of A-Z a-z 0-9 . _ -",
                        ));
                    }
                    _ => return Err(CommandError::BadArgs("usage: USER 0 <name>")),
                };
                no_payload(Self::User(ascii_str(name)))
            }
            b"PASS" => match (n, args.next()) {
                (1, Some(pw)) => no_payload(Self::Pass(pw)),
                (0, None) if !payload.is_empty() => Ok(Self::Pass(payload)),
                _ => Err(CommandError::BadArgs(
                    "usage: PASS 0 <password>, or PASS LEN with the password as payload",
                )),
            },
            b"PING" => no_args(Self::Ping),
            b"PONG" => no_args(Self::Pong),
            b"HELLO" => no_args(Self::Hello),
            b"QUIT" => no_args(Self::Quit),
            b"GROUPS" => no_args(Self::Groups),
            b"SUBSCRIBE" => no_payload(Self::Subscribe(GroupList::parse(args)?)),
            b"UNSUBSCRIBE" => no_payload(Self::Unsubscribe(GroupList::parse(args)?)),
            b"WATCH" => no_payload(Self::Watch(GroupList::parse(args)?)),
            b"UNWATCH" => no_payload(Self::Unwatch(GroupList::parse(args)?)),
            // PUBLISHED carries the sender before the groups, and a frame has
            // at most 64 arguments: so at most 63 groups.
            b"PUBLISH" if n >= MAX_ARGS => {
                Err(CommandError::BadArgs("a PUBLISH names at most 63 groups"))
            }
            b"PUBLISH" => Ok(Self::Publish {
                groups: GroupList::parse(args)?,
                payload,
            }),
            b"WHO" => match (n, args.next()) {
                (0, _) => no_payload(Self::Who(None)),
                (1, Some(g)) => match parse_group(g) {
                    Some(g) => no_payload(Self::Who(Some(g))),
                    None => Err(CommandError::BadArgs("group numbers are 1 to 4294967295")),
                },
                _ => Err(CommandError::BadArgs("usage: WHO 0 [<group>]")),
            },
            b"SEND" => match (n, args.next()) {
                (1, Some(to)) if is_valid_user(to) => Ok(Self::Send {
                    to: ascii_str(to),
                    payload,
                }),
                _ => Err(CommandError::BadArgs(
                    "usage: SEND LEN <user>, then the message",
                )),
            },
            b"BIND" => Ok(Self::Directory("BIND")),
            b"QUERY" => Ok(Self::Directory("QUERY")),
            b"LEAVE" => Ok(Self::Directory("LEAVE")),
            _ => Err(CommandError::Unknown),
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

/// Frames carry only ASCII in arguments; a validated argument is valid UTF-8.
fn ascii_str(arg: &[u8]) -> &str {
    std::str::from_utf8(arg).unwrap_or_default()
}

/// Whether a frame of this type is allowed before login, judged from its TYPE
/// alone (so that a bad `SUBSCRIBE` before login still gets `auth-required`).
pub fn verb_allowed_before_login(verb: &[u8]) -> bool {
    matches!(
        verb,
        b"USER" | b"PASS" | b"PING" | b"PONG" | b"HELLO" | b"QUIT"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Decoded, decode};

    fn cmd(input: &[u8]) -> Result<String, CommandError> {
        match decode(input, 1 << 20) {
            Ok(Decoded::Frame { frame, .. }) => {
                Command::from_frame(&frame).map(|c| format!("{c:?}"))
            }
            other => panic!("not a frame: {other:?}"),
        }
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
            Ok("Directory(\"BIND\")")
        );
    }

    #[test]
    fn refuses_bad_arguments() {
        for input in [
            &b"USER 0\n"[..],
            b"USER 0 a b\n",
            b"USER 0 al@ce\n",
            b"USER 1 alice\nx",
            b"PASS 0\n",
            b"PASS 1 pw\nx",
            b"PING 0 x\n",
            b"HELLO 1\nx",
            b"SUBSCRIBE 0\n",
            b"SUBSCRIBE 0 0\n",
            b"SUBSCRIBE 0 4294967296\n",
            b"SUBSCRIBE 0 -1\n",
            b"SUBSCRIBE 0 one\n",
            b"PUBLISH 1\nx",
            b"WHO 0 1 2\n",
            b"SEND 1\nx",
            b"SEND 1 a b\nx",
            format!("PUBLISH 0{}\n", " 1".repeat(64)).as_bytes(),
        ] {
            assert!(
                matches!(cmd(input), Err(CommandError::BadArgs(_))),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(cmd(b"FOO 5\nhello"), Err(CommandError::Unknown));
        assert!(is_valid_user(&[b'a'; 64]));
        assert!(!is_valid_user(&[b'a'; 65]));
    }

    /// The exact refusal for each bad form: the `ERR bad-args` sentence a
    /// client sees. Pinned before the parser is split into one module per
    /// command family.
    #[test]
    fn refusals_are_pinned() {
        const NO_PAYLOAD: &str = "this command takes no payload (LEN 0)";
        const NO_ARGS: &str = "this command takes no arguments";
        const GROUP: &str = "group numbers are 1 to 4294967295";
        const ONE_GROUP: &str = "name at least one group";
        const USER_NAME: &str = "user names are 1 to 64 of A-Z a-z 0-9 . _ -";
        const USER_USAGE: &str = "usage: USER 0 <name>";
        const PASS_USAGE: &str =
            "usage: PASS 0 <password>, or PASS LEN with the password as payload";
        const SEND_USAGE: &str = "usage: SEND LEN <user>, then the message";
        let long_user = format!("USER 0 {}\n", "a".repeat(65));
        let publish_64 = format!("PUBLISH 0{}\n", " 1".repeat(64));
        let cases: &[(&[u8], &str)] = &[
            (b"USER 0\n", USER_USAGE),
            (b"USER 0 a b\n", USER_USAGE),
            (b"USER 0 al@ce\n", USER_NAME),
            (long_user.as_bytes(), USER_NAME),
            (b"USER 1 alice\nx", NO_PAYLOAD),
            (b"PASS 0\n", PASS_USAGE),
            (b"PASS 0 a b\n", PASS_USAGE),
            (b"PASS 1 pw\nx", NO_PAYLOAD),
            (b"PING 0 x\n", NO_ARGS),
            (b"PONG 0 x\n", NO_ARGS),
            (b"HELLO 1\nx", NO_PAYLOAD),
            (b"QUIT 0 now\n", NO_ARGS),
            (b"GROUPS 0 1\n", NO_ARGS),
            (b"SUBSCRIBE 0\n", ONE_GROUP),
            (b"SUBSCRIBE 0 0\n", GROUP),
            (b"SUBSCRIBE 0 4294967296\n", GROUP),
            (b"SUBSCRIBE 0 -1\n", GROUP),
            (b"SUBSCRIBE 0 one\n", GROUP),
            (b"SUBSCRIBE 1 1\nx", NO_PAYLOAD),
            (b"UNSUBSCRIBE 0\n", ONE_GROUP),
            (b"WATCH 0 01234567890\n", GROUP),
            (b"UNWATCH 1\nx", ONE_GROUP),
            (b"PUBLISH 1\nx", ONE_GROUP),
            (b"PUBLISH 1 0\nx", GROUP),
            (publish_64.as_bytes(), "a PUBLISH names at most 63 groups"),
            (b"WHO 0 1 2\n", "usage: WHO 0 [<group>]"),
            (b"WHO 0 0\n", GROUP),
            (b"WHO 1\nx", NO_PAYLOAD),
            (b"WHO 1 7\nx", NO_PAYLOAD),
            (b"SEND 1\nx", SEND_USAGE),
            (b"SEND 1 a b\nx", SEND_USAGE),
            (b"SEND 1 al@ce\nx", SEND_USAGE),
        ];
        for &(input, why) in cases {
            assert_eq!(
                cmd(input),
                Err(CommandError::BadArgs(why)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
