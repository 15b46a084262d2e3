//! `BIND`, `QUERY` and `LEAVE`: the directory commands of protocol.md
//! section 6, which this server does not offer yet. Any arguments and payload
//! are accepted and ignored (the server answers `ERR unknown-command`), so a
//! client writes them bare.

use bytes::BytesMut;

use super::{Command, CommandError};
use crate::proto::frame::{self, Frame};

/// The directory commands, as [`Command::Directory`] names them.
const VERBS: [&str; 3] = ["BIND", "QUERY", "LEAVE"];

/// `Directory`, for a frame whose TYPE is one of [`VERBS`].
pub(super) fn parse<'a>(frame: &Frame<'a>) -> Result<Command<'a>, CommandError> {
    VERBS
        .into_iter()
        .find(|v| v.as_bytes() == frame.verb().as_bytes())
        .map(Command::Directory)
        .ok_or(CommandError::Unknown)
}

pub(super) fn check(verb: &str) -> Result<(), CommandError> {
    if VERBS.contains(&verb) {
        Ok(())
    } else {
        Err(CommandError::Unknown)
    }
}

/// `<verb> 0\n`.
pub(super) fn encode(out: &mut BytesMut, verb: &str) {
    frame::encode(out, verb, &[], b"");
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse as server_parse, round_trip};
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(round_trip(Command::Directory("BIND")), b"BIND 0\n");
        assert_eq!(round_trip(Command::Directory("QUERY")), b"QUERY 0\n");
        assert_eq!(round_trip(Command::Directory("LEAVE")), b"LEAVE 0\n");
    }

    #[test]
    fn any_arguments_are_accepted() {
        assert_eq!(
            server_parse(b"bind 3 127.0.0.1 5000\nabc"),
            Ok(Command::Directory("BIND"))
        );
        assert_eq!(server_parse(b"Leave 0\n"), Ok(Command::Directory("LEAVE")));
        assert_eq!(
            Command::Directory("JOIN").check(),
            Err(CommandError::Unknown)
        );
    }
}
