//! `PING 0`, `PONG 0`, `HELLO 0` and `QUIT 0`: the commands about the
//! connection itself, allowed before login (protocol.md sections 2 and 3).
//! None takes arguments or a payload; `GROUPS 0` is written the same way.

use bytes::BytesMut;

use crate::proto::frame;

/// `<verb> 0\n`.
pub(super) fn encode(out: &mut BytesMut, verb: &str) {
    frame::encode(out, verb, &[], b"");
}

#[cfg(test)]
mod tests {
    use super::super::testing::{refuses, round_trip};
    use super::super::{Command, CommandError, NO_ARGS, NO_PAYLOAD};

    #[test]
    fn round_trip_and_match_the_frame_constants() {
        assert_eq!(round_trip(Command::Ping), crate::proto::frame::PING);
        assert_eq!(round_trip(Command::Pong), crate::proto::frame::PONG);
        assert_eq!(round_trip(Command::Hello), b"HELLO 0\n");
        assert_eq!(round_trip(Command::Quit), b"QUIT 0\n");
        for cmd in [Command::Ping, Command::Pong, Command::Hello, Command::Quit] {
            assert!(cmd.allowed_before_login());
        }
    }

    #[test]
    fn refusals() {
        for (input, why) in [
            (&b"PING 0 x\n"[..], NO_ARGS),
            (b"PONG 0 x\n", NO_ARGS),
            (b"HELLO 1\nx", NO_PAYLOAD),
            (b"QUIT 0 now\n", NO_ARGS),
            (b"PING 1 x\ny", NO_ARGS),
        ] {
            refuses(input, CommandError::BadArgs(why));
        }
    }
}
