//! `BIND`, `QUERY` and `LEAVE`: the directory of protocol.md section 6.
//!
//! - `BIND 0 <address> <port>`: an IPv4 or IPv6 address (IPv6 without
//!   brackets, as `Ipv6Addr` writes it) and a port from 1 to 65535.
//! - `QUERY 0` or `QUERY 0 <user>`.
//! - `LEAVE 0`.
//!
//! None takes a payload.

use std::net::IpAddr;

use bytes::BytesMut;

use super::login::is_valid_user;
use super::{Command, CommandError, ascii_str, no_payload};
use crate::proto::frame::{self, Frame};

const BIND_USAGE: &str =
    "usage: BIND 0 <address> <port> (an IP address and a port from 1 to 65535)";
const QUERY_USAGE: &str = "usage: QUERY 0 [<user>]";
const LEAVE_USAGE: &str = "usage: LEAVE 0";

pub(super) fn parse_bind<'a>(frame: &Frame<'a>) -> Result<Command<'a>, CommandError> {
    let mut args = frame.args();
    let (2, Some(address), Some(port)) = (frame.arg_count(), args.next(), args.next()) else {
        return Err(CommandError::BadArgs(BIND_USAGE));
    };
    let address = std::str::from_utf8(address)
        .ok()
        .and_then(|a| a.parse::<IpAddr>().ok());
    let port = std::str::from_utf8(port)
        .ok()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|&p| p != 0);
    match (address, port) {
        (Some(address), Some(port)) => no_payload(frame, Command::Bind { address, port }),
        _ => Err(CommandError::BadArgs(BIND_USAGE)),
    }
}

pub(super) fn parse_query<'a>(frame: &Frame<'a>) -> Result<Command<'a>, CommandError> {
    match (frame.arg_count(), frame.args().next()) {
        (0, _) => no_payload(frame, Command::Query(None)),
        (1, Some(user)) if is_valid_user(user) => {
            no_payload(frame, Command::Query(Some(ascii_str(user))))
        }
        _ => Err(CommandError::BadArgs(QUERY_USAGE)),
    }
}

pub(super) fn parse_leave<'a>(frame: &Frame<'a>) -> Result<Command<'a>, CommandError> {
    if frame.arg_count() != 0 {
        return Err(CommandError::BadArgs(LEAVE_USAGE));
    }
    no_payload(frame, Command::Leave)
}

pub(super) fn check_bind(port: u16) -> Result<(), CommandError> {
    if port == 0 {
        return Err(CommandError::BadArgs(BIND_USAGE));
    }
    Ok(())
}

pub(super) fn check_query(user: Option<&str>) -> Result<(), CommandError> {
    match user {
        Some(u) => super::login::check_user(u),
        None => Ok(()),
    }
}

/// `BIND 0 <address> <port>`.
pub(super) fn encode_bind(out: &mut BytesMut, address: IpAddr, port: u16) {
    let address = address.to_string();
    let port = port.to_string();
    frame::encode(out, "BIND", &[address.as_bytes(), port.as_bytes()], b"");
}

/// `QUERY 0 [<user>]`.
pub(super) fn encode_query(out: &mut BytesMut, user: Option<&str>) {
    match user {
        Some(u) => frame::encode(out, "QUERY", &[u.as_bytes()], b""),
        None => frame::encode(out, "QUERY", &[], b""),
    }
}

/// `LEAVE 0`.
pub(super) fn encode_leave(out: &mut BytesMut) {
    frame::encode(out, "LEAVE", &[], b"");
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::super::testing::{parse as server_parse, round_trip};
    use super::*;

    #[test]
    fn round_trips() {
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(
            round_trip(Command::Bind {
                address: v4,
                port: 5000
            }),
            b"BIND 0 127.0.0.1 5000\n"
        );
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(
            round_trip(Command::Bind {
                address: v6,
                port: 65535
            }),
            b"BIND 0 ::1 65535\n"
        );
        assert_eq!(round_trip(Command::Query(None)), b"QUERY 0\n");
        assert_eq!(round_trip(Command::Query(Some("bob"))), b"QUERY 0 bob\n");
        assert_eq!(round_trip(Command::Leave), b"LEAVE 0\n");
    }

    #[test]
    fn bad_forms_are_bad_args() {
        for frame in [
            &b"BIND 0\n"[..],
            b"BIND 0 127.0.0.1\n",
            b"BIND 0 127.0.0.1 0\n",
            b"BIND 0 127.0.0.1 65536\n",
            b"BIND 0 127.0.0.1 +80\n",
            b"BIND 0 localhost 80\n",
            b"BIND 0 [::1] 80\n",
            b"BIND 0 127.0.0.1 80 x\n",
            b"BIND 1 127.0.0.1 80\nx",
            b"QUERY 0 a b\n",
            b"QUERY 0 @server\n",
            b"LEAVE 0 x\n",
            b"LEAVE 1\nx",
        ] {
            assert!(
                matches!(server_parse(frame), Err(CommandError::BadArgs(_))),
                "{:?}",
                String::from_utf8_lossy(frame)
            );
        }
        assert_eq!(
            server_parse(b"bind 0 ::ffff:127.0.0.1 80\n"),
            Ok(Command::Bind {
                address: "::ffff:127.0.0.1".parse().expect("address"),
                port: 80
            })
        );
    }
}
