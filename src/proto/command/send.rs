//! `SEND LEN <user>\n<payload>`: a message to one user (protocol.md section 5).

use bytes::BytesMut;

use super::login::is_valid_user;
use super::{Command, CommandError, ascii_str};
use crate::proto::frame::{self, Frame};

const USAGE: &str = "usage: SEND LEN <user>, then the message";

pub(super) fn parse<'a>(frame: &Frame<'a>) -> Result<Command<'a>, CommandError> {
    match (frame.arg_count(), frame.args().next()) {
        (1, Some(to)) if is_valid_user(to) => Ok(Command::Send {
            to: ascii_str(to),
            payload: frame.payload(),
        }),
        _ => Err(CommandError::BadArgs(USAGE)),
    }
}

pub(super) fn check(to: &str) -> Result<(), CommandError> {
    // The sentence a client sees for a bad name is about the name.
    super::login::check_user(to)
}

/// `SEND LEN <user>\n<payload>`.
pub(super) fn encode(out: &mut BytesMut, to: &str, payload: &[u8]) {
    frame::encode(out, "SEND", &[to.as_bytes()], payload);
}

#[cfg(test)]
mod tests {
    use super::super::login::MAX_USER_LEN;
    use super::super::testing::{refuses, round_trip};
    use super::*;
    use crate::proto::frame::DEFAULT_MAX_PAYLOAD;

    #[test]
    fn round_trips_at_the_limits() {
        assert_eq!(
            round_trip(Command::Send {
                to: "bob",
                payload: b"yo"
            }),
            b"SEND 2 bob\nyo"
        );
        assert_eq!(
            round_trip(Command::Send {
                to: "b",
                payload: b""
            }),
            b"SEND 0 b\n"
        );
        let longest = "x".repeat(MAX_USER_LEN);
        let largest = vec![b'\n'; DEFAULT_MAX_PAYLOAD];
        round_trip(Command::Send {
            to: &longest,
            payload: &largest,
        });
    }

    #[test]
    fn refusals() {
        for input in [
            &b"SEND 1\nx"[..],
            b"SEND 1 a b\nx",
            b"SEND 1 al@ce\nx",
            b"SEND 0\n",
        ] {
            refuses(input, CommandError::BadArgs(USAGE));
        }
        assert!(
            Command::Send {
                to: "no one",
                payload: b""
            }
            .check()
            .is_err()
        );
    }
}
