//! Commands on groups: `SUBSCRIBE`, `UNSUBSCRIBE`, `WATCH` and `UNWATCH` (a
//! list of 1 to 64 groups), `WHO` (one group or none) and `GROUPS` (protocol.md
//! sections 4 and 5). The group list and the group number grammar are here
//! too, since `PUBLISH` shares them.

use bytes::{BufMut, BytesMut};

use super::{Command, CommandError, no_payload};
use crate::proto::frame::{Frame, MAX_ARGS, put_decimal};

/// A group number, 1 to 4294967295.
pub type GroupId = u32;

pub(super) const GROUP: &str = "group numbers are 1 to 4294967295";
pub(super) const ONE_GROUP: &str = "name at least one group";
const TOO_MANY: &str = "too many groups";
const WHO_USAGE: &str = "usage: WHO 0 [<group>]";

/// The groups named by one command: 1 to 64, kept inline (no allocation).
#[derive(Clone, Copy)]
pub struct GroupList {
    ids: [GroupId; MAX_ARGS],
    len: u8,
}

impl GroupList {
    /// A list of 1 to 64 groups, none of them 0, in the order given
    /// (duplicates kept).
    ///
    /// # Errors
    ///
    /// [`CommandError::BadArgs`] for no group, more than 64, or group 0.
    pub fn new(groups: &[GroupId]) -> Result<Self, CommandError> {
        if groups.is_empty() {
            return Err(CommandError::BadArgs(ONE_GROUP));
        }
        let mut ids = [0; MAX_ARGS];
        let slots = ids
            .get_mut(..groups.len())
            .ok_or(CommandError::BadArgs(TOO_MANY))?;
        slots.copy_from_slice(groups);
        if groups.contains(&0) {
            return Err(CommandError::BadArgs(GROUP));
        }
        Ok(Self {
            ids,
            len: groups.len() as u8,
        })
    }

    /// The groups in the order given (duplicates kept, as published).
    pub fn as_slice(&self) -> &[GroupId] {
        self.ids.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// Parses 1 to 64 group numbers.
    pub(super) fn parse<'a>(args: impl Iterator<Item = &'a [u8]>) -> Result<Self, CommandError> {
        let mut list = Self {
            ids: [0; MAX_ARGS],
            len: 0,
        };
        for arg in args {
            let id = parse_group(arg).ok_or(CommandError::BadArgs(GROUP))?;
            let slot = list
                .ids
                .get_mut(usize::from(list.len))
                .ok_or(CommandError::BadArgs(TOO_MANY))?;
            *slot = id;
            list.len += 1;
        }
        if list.len == 0 {
            return Err(CommandError::BadArgs(ONE_GROUP));
        }
        Ok(list)
    }
}

impl PartialEq for GroupList {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for GroupList {}

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

/// `SUBSCRIBE`, `UNSUBSCRIBE`, `WATCH` or `UNWATCH` (`make` says which).
pub(super) fn parse_list<'a>(
    frame: &Frame<'a>,
    make: fn(GroupList) -> Command<'a>,
) -> Result<Command<'a>, CommandError> {
    let groups = GroupList::parse(frame.args())?;
    no_payload(frame, make(groups))
}

pub(super) fn parse_who<'a>(frame: &Frame<'a>) -> Result<Command<'a>, CommandError> {
    match (frame.arg_count(), frame.args().next()) {
        (0, _) => no_payload(frame, Command::Who(None)),
        (1, Some(g)) => match parse_group(g) {
            Some(g) => no_payload(frame, Command::Who(Some(g))),
            None => Err(CommandError::BadArgs(GROUP)),
        },
        _ => Err(CommandError::BadArgs(WHO_USAGE)),
    }
}

pub(super) fn check_who(group: Option<GroupId>) -> Result<(), CommandError> {
    match group {
        Some(0) => Err(CommandError::BadArgs(GROUP)),
        _ => Ok(()),
    }
}

/// `<verb> LEN <g>...\n<payload>`, the groups written in decimal straight
/// into `out` (no argument strings).
pub(super) fn encode_with_groups(
    out: &mut BytesMut,
    verb: &str,
    groups: &[GroupId],
    payload: &[u8],
) {
    out.reserve(verb.len() + 12 + groups.len() * 11 + payload.len());
    out.put_slice(verb.as_bytes());
    out.put_u8(b' ');
    put_decimal(out, payload.len() as u64);
    for &g in groups {
        out.put_u8(b' ');
        put_decimal(out, u64::from(g));
    }
    out.put_u8(b'\n');
    out.put_slice(payload);
}

/// `SUBSCRIBE 0 <g>...` and the like.
pub(super) fn encode_list(out: &mut BytesMut, verb: &str, groups: &[GroupId]) {
    encode_with_groups(out, verb, groups, b"");
}

/// `WHO 0` or `WHO 0 <g>`.
pub(super) fn encode_who(out: &mut BytesMut, group: Option<GroupId>) {
    encode_with_groups(out, "WHO", group.as_slice(), b"");
}

#[cfg(test)]
mod tests {
    use super::super::testing::{refuses, round_trip};
    use super::super::{NO_ARGS, NO_PAYLOAD};
    use super::*;
    use crate::proto::frame;

    fn list(groups: &[GroupId]) -> GroupList {
        GroupList::new(groups).expect("a valid list")
    }

    #[test]
    fn lists_round_trip_at_their_limits() {
        let most: Vec<GroupId> = (1..=64).map(|g| u32::MAX - g).collect();
        for groups in [&[1][..], &[u32::MAX], &[3, 3, 1], &[1; MAX_ARGS], &most] {
            let g = list(groups);
            round_trip(Command::Subscribe(g));
            round_trip(Command::Unsubscribe(g));
            round_trip(Command::Watch(g));
            round_trip(Command::Unwatch(g));
        }
        assert_eq!(
            round_trip(Command::Subscribe(list(&[1, 4_294_967_295]))),
            b"SUBSCRIBE 0 1 4294967295\n"
        );
        assert_eq!(round_trip(Command::Unwatch(list(&[7]))), b"UNWATCH 0 7\n");
    }

    #[test]
    fn who_and_groups_round_trip() {
        assert_eq!(round_trip(Command::Who(None)), b"WHO 0\n");
        assert_eq!(round_trip(Command::Who(Some(7))), b"WHO 0 7\n");
        round_trip(Command::Who(Some(1)));
        round_trip(Command::Who(Some(u32::MAX)));
        assert_eq!(round_trip(Command::Groups), b"GROUPS 0\n");
    }

    #[test]
    fn group_encoder_matches_the_generic_one() {
        let mut ours = BytesMut::new();
        encode_with_groups(&mut ours, "PUBLISH", &[1, 4_294_967_295], b"hi");
        let mut generic = BytesMut::new();
        frame::encode(&mut generic, "PUBLISH", &[b"1", b"4294967295"], b"hi");
        assert_eq!(ours, generic);
    }

    #[test]
    fn refusals() {
        for (input, why) in [
            (&b"SUBSCRIBE 0\n"[..], ONE_GROUP),
            (b"SUBSCRIBE 0 0\n", GROUP),
            (b"SUBSCRIBE 0 4294967296\n", GROUP),
            (b"SUBSCRIBE 0 -1\n", GROUP),
            (b"SUBSCRIBE 0 one\n", GROUP),
            (b"SUBSCRIBE 1 1\nx", NO_PAYLOAD),
            (b"UNSUBSCRIBE 0\n", ONE_GROUP),
            (b"WATCH 0 01234567890\n", GROUP),
            (b"UNWATCH 1\nx", ONE_GROUP),
            (b"WHO 0 1 2\n", WHO_USAGE),
            (b"WHO 0 0\n", GROUP),
            (b"WHO 1\nx", NO_PAYLOAD),
            (b"WHO 1 7\nx", NO_PAYLOAD),
            (b"GROUPS 0 1\n", NO_ARGS),
            (b"GROUPS 1\nx", NO_PAYLOAD),
        ] {
            refuses(input, CommandError::BadArgs(why));
        }
    }

    #[test]
    fn owned_lists_are_checked() {
        assert_eq!(GroupList::new(&[]), Err(CommandError::BadArgs(ONE_GROUP)));
        assert_eq!(GroupList::new(&[1, 0]), Err(CommandError::BadArgs(GROUP)));
        assert_eq!(
            GroupList::new(&[1; MAX_ARGS + 1]),
            Err(CommandError::BadArgs(TOO_MANY))
        );
        assert_eq!(
            Command::Who(Some(0)).check(),
            Err(CommandError::BadArgs(GROUP))
        );
        assert_eq!(list(&[5, 6]).as_slice(), &[5, 6]);
    }

    #[test]
    fn group_numbers() {
        assert_eq!(parse_group(b"1"), Some(1));
        assert_eq!(parse_group(b"0004294967295"), None);
        assert_eq!(parse_group(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_group(b"4294967296"), None);
        assert_eq!(parse_group(b"0"), None);
        assert_eq!(parse_group(b""), None);
        assert_eq!(parse_group(b"+1"), None);
    }
}
