//! `PUBLISH LEN <g>...\n<payload>`: a message to 1 to 63 groups (protocol.md
//! section 4).

use bytes::BytesMut;

use super::groups::{self, GroupList};
use super::{Command, CommandError};
use crate::proto::frame::{Frame, MAX_ARGS};

/// `PUBLISHED` carries the sender before the groups, and a frame has at most
/// 64 arguments: so a `PUBLISH` names at most 63 groups.
pub const MAX_PUBLISH_GROUPS: usize = MAX_ARGS - 1;

const TOO_MANY: &str = "a PUBLISH names at most 63 groups";

pub(super) fn parse<'a>(frame: &Frame<'a>) -> Result<Command<'a>, CommandError> {
    if frame.arg_count() > MAX_PUBLISH_GROUPS {
        return Err(CommandError::BadArgs(TOO_MANY));
    }
    Ok(Command::Publish {
        groups: GroupList::parse(frame.args())?,
        payload: frame.payload(),
    })
}

pub(super) fn check(groups: &GroupList) -> Result<(), CommandError> {
    if groups.as_slice().len() > MAX_PUBLISH_GROUPS {
        Err(CommandError::BadArgs(TOO_MANY))
    } else {
        Ok(())
    }
}

/// `PUBLISH LEN <g>...\n<payload>`.
pub(super) fn encode(out: &mut BytesMut, groups: &GroupList, payload: &[u8]) {
    groups::encode_with_groups(out, "PUBLISH", groups.as_slice(), payload);
}

#[cfg(test)]
mod tests {
    use super::super::OwnedCommand;
    use super::super::groups::{GROUP, ONE_GROUP};
    use super::super::testing::{refuses, round_trip};
    use super::*;
    use crate::proto::frame::DEFAULT_MAX_PAYLOAD;

    fn list(groups: &[u32]) -> GroupList {
        GroupList::new(groups).expect("a valid list")
    }

    #[test]
    fn round_trips_at_the_limits() {
        assert_eq!(
            round_trip(Command::Publish {
                groups: list(&[3, 3]),
                payload: b"hi"
            }),
            b"PUBLISH 2 3 3\nhi"
        );
        assert_eq!(
            round_trip(Command::Publish {
                groups: list(&[1]),
                payload: b""
            }),
            b"PUBLISH 0 1\n"
        );
        let most: Vec<u32> = (1..=63).map(|g| u32::MAX - g).collect();
        let largest = vec![0xa5; DEFAULT_MAX_PAYLOAD];
        round_trip(Command::Publish {
            groups: list(&most),
            payload: &largest,
        });
        round_trip(Command::Publish {
            groups: list(&[u32::MAX]),
            payload: b"\n\r\x00 PUBLISH 1 1\n",
        });
    }

    #[test]
    fn refusals() {
        let publish_64 = format!("PUBLISH 0{}\n", " 1".repeat(64));
        refuses(publish_64.as_bytes(), CommandError::BadArgs(TOO_MANY));
        refuses(b"PUBLISH 1\nx", CommandError::BadArgs(ONE_GROUP));
        refuses(b"PUBLISH 1 0\nx", CommandError::BadArgs(GROUP));
        // 64 groups fit a list, not a PUBLISH.
        let owned = OwnedCommand::Publish {
            groups: vec![1; 64],
            payload: bytes::Bytes::new(),
        };
        assert_eq!(owned.as_command(), Err(CommandError::BadArgs(TOO_MANY)));
    }
}
