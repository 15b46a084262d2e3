//! `USER 0 <name>` and `PASS 0 <password>` (or `PASS LEN` with the password as
//! payload): logging in (protocol.md section 3).

use bytes::BytesMut;

use super::{Command, CommandError, ascii_str, no_payload};
use crate::proto::frame::{self, Frame, MAX_ARG_LEN};

/// Longest user name.
pub const MAX_USER_LEN: usize = 64;

const USER_NAME: &str = "user names are 1 to 64 of A-Z a-z 0-9 . _ -";
const USER_USAGE: &str = "usage: USER 0 <name>";
const PASS_USAGE: &str = "usage: PASS 0 <password>, or PASS LEN with the password as payload";

/// Whether `name` is a valid user name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn is_valid_user(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_LEN
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(super) fn parse_user<'a>(frame: &Frame<'a>) -> Result<Command<'a>, CommandError> {
    let name = match (frame.arg_count(), frame.args().next()) {
        (1, Some(name)) if is_valid_user(name) => name,
        (1, _) => return Err(CommandError::BadArgs(USER_NAME)),
        _ => return Err(CommandError::BadArgs(USER_USAGE)),
    };
    no_payload(frame, Command::User(ascii_str(name)))
}

pub(super) fn parse_pass<'a>(frame: &Frame<'a>) -> Result<Command<'a>, CommandError> {
    let payload = frame.payload();
    match (frame.arg_count(), frame.args().next()) {
        (1, Some(pw)) => no_payload(frame, Command::Pass(pw)),
        (0, None) if !payload.is_empty() => Ok(Command::Pass(payload)),
        _ => Err(CommandError::BadArgs(PASS_USAGE)),
    }
}

pub(super) fn check_user(name: &str) -> Result<(), CommandError> {
    if is_valid_user(name.as_bytes()) {
        Ok(())
    } else {
        Err(CommandError::BadArgs(USER_NAME))
    }
}

pub(super) fn check_pass(pw: &[u8]) -> Result<(), CommandError> {
    if pw.is_empty() {
        Err(CommandError::BadArgs("the password is empty"))
    } else {
        Ok(())
    }
}

/// `USER 0 <name>`.
pub(super) fn encode_user(out: &mut BytesMut, name: &str) {
    frame::encode(out, "USER", &[name.as_bytes()], b"");
}

/// `PASS 0 <password>` when the password can be an argument (1 to 255 bytes
/// of 0x21..=0x7E), `PASS LEN\n<password>` otherwise.
pub(super) fn encode_pass(out: &mut BytesMut, pw: &[u8]) {
    let as_arg =
        !pw.is_empty() && pw.len() <= MAX_ARG_LEN && pw.iter().all(|b| (0x21..=0x7e).contains(b));
    if as_arg {
        frame::encode(out, "PASS", &[pw], b"");
    } else {
        frame::encode(out, "PASS", &[], pw);
    }
}

#[cfg(test)]
mod tests {
    use super::super::NO_PAYLOAD;
    use super::super::testing::{refuses, round_trip};
    use super::*;

    #[test]
    fn user_round_trips() {
        assert_eq!(round_trip(Command::User("alice")), b"USER 0 alice\n");
        round_trip(Command::User("a"));
        round_trip(Command::User("A.b_c-9"));
        let longest = "z".repeat(MAX_USER_LEN);
        round_trip(Command::User(&longest));
    }

    #[test]
    fn pass_round_trips_as_argument_or_payload() {
        assert_eq!(round_trip(Command::Pass(b"pw")), b"PASS 0 pw\n");
        assert_eq!(round_trip(Command::Pass(b"a b")), b"PASS 3\na b");
        let longest_arg = [b'~'; MAX_ARG_LEN];
        let wire = round_trip(Command::Pass(&longest_arg));
        assert!(wire.starts_with(b"PASS 0 ~"));
        let too_long_for_an_arg = [b'!'; MAX_ARG_LEN + 1];
        assert!(round_trip(Command::Pass(&too_long_for_an_arg)).starts_with(b"PASS 256\n"));
        round_trip(Command::Pass(b"\x00\xff\n"));
        round_trip(Command::Pass(b"x"));
    }

    #[test]
    fn refusals() {
        let long_user = format!("USER 0 {}\n", "a".repeat(MAX_USER_LEN + 1));
        for (input, why) in [
            (&b"USER 0\n"[..], USER_USAGE),
            (b"USER 0 a b\n", USER_USAGE),
            (b"USER 0 al@ce\n", USER_NAME),
            (long_user.as_bytes(), USER_NAME),
            (b"USER 1 alice\nx", NO_PAYLOAD),
            (b"PASS 0\n", PASS_USAGE),
            (b"PASS 0 a b\n", PASS_USAGE),
            (b"PASS 1 pw\nx", NO_PAYLOAD),
        ] {
            refuses(input, CommandError::BadArgs(why));
        }
        assert!(is_valid_user(&[b'a'; MAX_USER_LEN]));
        assert!(!is_valid_user(&[b'a'; MAX_USER_LEN + 1]));
    }

    #[test]
    fn checks_what_would_not_round_trip() {
        assert_eq!(
            Command::User("").check(),
            Err(CommandError::BadArgs(USER_NAME))
        );
        assert_eq!(
            Command::User("no one").check(),
            Err(CommandError::BadArgs(USER_NAME))
        );
        assert!(Command::Pass(b"").check().is_err());
    }
}
