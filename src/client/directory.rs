//! The directory's entries as the client reads them (protocol.md section 6):
//! each `QUERY` line is `<user>,<address>,<port>`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::ClientError;
use crate::proto::command::is_valid_user;

/// One line of the directory: where `user` accepts direct peer connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DirectoryEntry {
    /// The user who bound it.
    pub user: String,
    /// The endpoint's address (the one the user's session connected from).
    pub address: IpAddr,
    /// The endpoint's port.
    pub port: u16,
}

impl DirectoryEntry {
    /// The endpoint, to connect to.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

impl fmt::Display for DirectoryEntry {
    /// `user,address,port`, as on the wire.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.user, self.address, self.port)
    }
}

/// Parses `QUERY` lines, `<user>,<address>,<port>` (an IPv6 address as
/// `Ipv6Addr` writes it, or in brackets).
pub(crate) fn parse_entries(lines: Vec<String>) -> Result<Vec<DirectoryEntry>, ClientError> {
    lines.iter().map(|line| parse_entry(line)).collect()
}

fn parse_entry(line: &str) -> Result<DirectoryEntry, ClientError> {
    let bad = || {
        ClientError::Protocol(format!(
            "QUERY line {line:?} is not <user>,<address>,<port>"
        ))
    };
    let mut parts = line.split(',');
    let (Some(user), Some(address), Some(port), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !is_valid_user(user.as_bytes()) {
        return Err(bad());
    }
    let address = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    let address: IpAddr = address.parse().map_err(|_| bad())?;
    let port = if port.bytes().all(|b| b.is_ascii_digit()) {
        port.parse::<u16>().map_err(|_| bad())?
    } else {
        return Err(bad());
    };
    Ok(DirectoryEntry {
        user: user.to_owned(),
        address,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_query_lines() {
        let lines = vec![
            "alice,127.0.0.1,5000".to_string(),
            "bob,::1,65535".to_string(),
            "carol.c,[fe80::1],1".to_string(),
        ];
        let entries = parse_entries(lines).expect("valid");
        assert_eq!(
            entries[0].socket_addr(),
            "127.0.0.1:5000".parse().expect("addr")
        );
        assert_eq!(
            entries[1].socket_addr(),
            "[::1]:65535".parse().expect("addr")
        );
        assert_eq!(entries[2].user, "carol.c");
        assert_eq!(entries[0].to_string(), "alice,127.0.0.1,5000");
        assert_eq!(entries[1].to_string(), "bob,::1,65535");
        assert_eq!(parse_entries(Vec::new()).ok(), Some(Vec::new()));
        for bad in [
            "alice",
            "alice,127.0.0.1",
            "alice,127.0.0.1,5000,x",
            "alice,localhost,5000",
            "alice,127.0.0.1,65536",
            "alice,127.0.0.1,+5",
            "no one,127.0.0.1,5",
            ",127.0.0.1,5",
        ] {
            assert!(
                matches!(
                    parse_entries(vec![bad.into()]),
                    Err(ClientError::Protocol(_))
                ),
                "{bad}"
            );
        }
    }
}
