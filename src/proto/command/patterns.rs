//! The patterns of protocol.md section 9: queue groups, request/reply,
//! surveys and `ECHO`.
//!
//! - `QSUBSCRIBE 0 <queue> <g>...` and `QUNSUBSCRIBE 0 <queue> <g>...`: a
//!   queue name (a token of the user-name grammar) and 1 to 63 groups.
//! - `REQUEST LEN <g> [<timeout_ms>]` + payload: timeout 1 to 60,000 ms.
//! - `REPLY LEN <rid>` + payload: the token the server gave.
//! - `SURVEY LEN <g> <deadline_ms>` + payload: deadline 1 to 60,000 ms.
//! - `ECHO 0 on|off`.

use bytes::BytesMut;

use super::groups::{GroupId, GroupList, parse_group};
use super::login::is_valid_user;
use super::{Command, CommandError, ascii_str, no_payload};
use crate::proto::frame::{self, Frame, MAX_ARGS};

/// The longest a request or survey may wait.
pub const MAX_WAIT_MS: u32 = 60_000;
/// A request's timeout when it names none.
pub const DEFAULT_REQUEST_MS: u32 = 5_000;

const QUEUE_USAGE: &str = "usage: QSUBSCRIBE 0 <queue> <group>... (1 to 63 groups)";
const REQUEST_USAGE: &str = "usage: REQUEST LEN <group> [<timeout_ms>, 1 to 60000]";
const REPLY_USAGE: &str = "usage: REPLY LEN <rid>";
const SURVEY_USAGE: &str = "usage: SURVEY LEN <group> <deadline_ms> (1 to 60000)";
const ECHO_USAGE: &str = "usage: ECHO 0 on|off";

fn millis(arg: &[u8]) -> Option<u32> {
    if arg.is_empty() || arg.len() > 5 || !arg.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = arg.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    (1..=MAX_WAIT_MS).contains(&n).then_some(n)
}

/// `QSUBSCRIBE` or `QUNSUBSCRIBE` (`join` says which).
pub(super) fn parse_queue<'a>(frame: &Frame<'a>, join: bool) -> Result<Command<'a>, CommandError> {
    let mut args = frame.args();
    let Some(queue) = args.next().filter(|q| is_valid_user(q)) else {
        return Err(CommandError::BadArgs(QUEUE_USAGE));
    };
    if frame.arg_count() > MAX_ARGS {
        return Err(CommandError::BadArgs(QUEUE_USAGE));
    }
    let groups = GroupList::parse(args)?;
    let queue = ascii_str(queue);
    let cmd = if join {
        Command::QSubscribe { queue, groups }
    } else {
        Command::QUnsubscribe { queue, groups }
    };
    no_payload(frame, cmd)
}

pub(super) fn parse_request<'a>(frame: &Frame<'a>) -> Result<Command<'a>, CommandError> {
    let mut args = frame.args();
    let group = args.next().and_then(parse_group);
    let timeout = match (frame.arg_count(), args.next()) {
        (1, _) => Some(DEFAULT_REQUEST_MS),
        (2, Some(t)) => millis(t),
        _ => None,
    };
    match (group, timeout) {
        (Some(group), Some(timeout_ms)) => Ok(Command::Request {
            group,
            timeout_ms,
            payload: frame.payload(),
        }),
        _ => Err(CommandError::BadArgs(REQUEST_USAGE)),
    }
}

pub(super) fn parse_reply<'a>(frame: &Frame<'a>) -> Result<Command<'a>, CommandError> {
    match (frame.arg_count(), frame.args().next()) {
        (1, Some(rid)) if is_valid_user(rid) => Ok(Command::Reply {
            rid: ascii_str(rid),
            payload: frame.payload(),
        }),
        _ => Err(CommandError::BadArgs(REPLY_USAGE)),
    }
}

pub(super) fn parse_survey<'a>(frame: &Frame<'a>) -> Result<Command<'a>, CommandError> {
    let mut args = frame.args();
    let (2, Some(group), Some(deadline)) = (frame.arg_count(), args.next(), args.next()) else {
        return Err(CommandError::BadArgs(SURVEY_USAGE));
    };
    match (parse_group(group), millis(deadline)) {
        (Some(group), Some(deadline_ms)) => Ok(Command::Survey {
            group,
            deadline_ms,
            payload: frame.payload(),
        }),
        _ => Err(CommandError::BadArgs(SURVEY_USAGE)),
    }
}

pub(super) fn parse_echo<'a>(frame: &Frame<'a>) -> Result<Command<'a>, CommandError> {
    let on = match (frame.arg_count(), frame.args().next()) {
        (1, Some(a)) if a.eq_ignore_ascii_case(b"on") => true,
        (1, Some(a)) if a.eq_ignore_ascii_case(b"off") => false,
        _ => return Err(CommandError::BadArgs(ECHO_USAGE)),
    };
    no_payload(frame, Command::Echo(on))
}

pub(super) fn check_queue(queue: &str, groups: &GroupList) -> Result<(), CommandError> {
    if !is_valid_user(queue.as_bytes()) || groups.as_slice().len() >= MAX_ARGS {
        return Err(CommandError::BadArgs(QUEUE_USAGE));
    }
    Ok(())
}

pub(super) fn check_wait(group: GroupId, ms: u32, usage_request: bool) -> Result<(), CommandError> {
    let usage = if usage_request {
        REQUEST_USAGE
    } else {
        SURVEY_USAGE
    };
    if group == 0 || !(1..=MAX_WAIT_MS).contains(&ms) {
        return Err(CommandError::BadArgs(usage));
    }
    Ok(())
}

pub(super) fn check_reply(rid: &str) -> Result<(), CommandError> {
    if is_valid_user(rid.as_bytes()) {
        Ok(())
    } else {
        Err(CommandError::BadArgs(REPLY_USAGE))
    }
}

pub(super) fn encode_queue(out: &mut BytesMut, verb: &str, queue: &str, groups: &GroupList) {
    let nums: Vec<String> = groups.as_slice().iter().map(u32::to_string).collect();
    let mut args: Vec<&[u8]> = vec![queue.as_bytes()];
    args.extend(nums.iter().map(|n| n.as_bytes()));
    frame::encode(out, verb, &args, b"");
}

pub(super) fn encode_request(out: &mut BytesMut, group: GroupId, ms: u32, payload: &[u8]) {
    let (g, t) = (group.to_string(), ms.to_string());
    frame::encode(out, "REQUEST", &[g.as_bytes(), t.as_bytes()], payload);
}

pub(super) fn encode_reply(out: &mut BytesMut, rid: &str, payload: &[u8]) {
    frame::encode(out, "REPLY", &[rid.as_bytes()], payload);
}

pub(super) fn encode_survey(out: &mut BytesMut, group: GroupId, ms: u32, payload: &[u8]) {
    let (g, t) = (group.to_string(), ms.to_string());
    frame::encode(out, "SURVEY", &[g.as_bytes(), t.as_bytes()], payload);
}

pub(super) fn encode_echo(out: &mut BytesMut, on: bool) {
    let arg: &[u8] = if on { b"on" } else { b"off" };
    frame::encode(out, "ECHO", &[arg], b"");
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse as server_parse, round_trip};
    use super::*;

    #[test]
    fn round_trips() {
        let g = GroupList::new(&[1, 2]).expect("groups");
        assert_eq!(
            round_trip(Command::QSubscribe {
                queue: "workers",
                groups: g
            }),
            b"QSUBSCRIBE 0 workers 1 2\n"
        );
        assert_eq!(
            round_trip(Command::QUnsubscribe {
                queue: "workers",
                groups: g
            }),
            b"QUNSUBSCRIBE 0 workers 1 2\n"
        );
        assert_eq!(
            round_trip(Command::Request {
                group: 3,
                timeout_ms: 250,
                payload: b"q?"
            }),
            b"REQUEST 2 3 250\nq?"
        );
        assert_eq!(
            round_trip(Command::Reply {
                rid: "r7",
                payload: b"ok"
            }),
            b"REPLY 2 r7\nok"
        );
        assert_eq!(
            round_trip(Command::Survey {
                group: 3,
                deadline_ms: 60_000,
                payload: b""
            }),
            b"SURVEY 0 3 60000\n"
        );
        assert_eq!(round_trip(Command::Echo(false)), b"ECHO 0 off\n");
        assert_eq!(
            server_parse(b"REQUEST 1 9\nx"),
            Ok(Command::Request {
                group: 9,
                timeout_ms: DEFAULT_REQUEST_MS,
                payload: b"x"
            })
        );
    }

    #[test]
    fn bad_forms_are_bad_args() {
        for frame in [
            &b"QSUBSCRIBE 0 workers\n"[..],
            b"QSUBSCRIBE 0 @q 1\n",
            b"QSUBSCRIBE 0 q 0\n",
            b"REQUEST 0\n",
            b"REQUEST 0 1 0\n",
            b"REQUEST 0 1 60001\n",
            b"REQUEST 0 1 5 6\n",
            b"REPLY 0\n",
            b"REPLY 0 a b\n",
            b"SURVEY 0 1\n",
            b"SURVEY 0 1 999999\n",
            b"ECHO 0\n",
            b"ECHO 0 maybe\n",
            b"ECHO 1 on\nx",
        ] {
            assert!(
                matches!(server_parse(frame), Err(CommandError::BadArgs(_))),
                "{:?}",
                String::from_utf8_lossy(frame)
            );
        }
    }
}
