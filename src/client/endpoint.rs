//! Where a client connects: [`ClientConfig::addr`](super::ClientConfig::addr)
//! read as `host:port` or as a URL whose scheme names the transport.

use std::fmt;

use super::ClientError;

/// The transport a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `tcp://`: plain TCP (default port 7420).
    Tcp,
    /// `tls://`: TLS (default port 7421).
    Tls,
    /// `ws://`: WebSocket over plain TCP (default port 80, RFC 6455).
    Ws,
    /// `wss://`: WebSocket over TLS (default port 443, RFC 6455).
    Wss,
}

impl Scheme {
    /// Whether the transport is TLS (`tls://`, `wss://`).
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }

    /// Whether the transport is WebSocket (`ws://`, `wss://`).
    pub fn is_websocket(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }

    /// The port when the URL gives none.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Tcp => 7420,
            Self::Tls => 7421,
            Self::Ws => 80,
            Self::Wss => 443,
        }
    }

    /// The scheme's name, as in a URL (`ws`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A server address as [`ClientConfig::addr`](super::ClientConfig::addr)
/// gives it: `host:port` (plain TCP, or TLS when
/// [`ClientConfig::tls`](super::ClientConfig::tls) is set), or a URL
/// `tcp://host[:port]`, `tls://host[:port]`, `ws://host[:port][/path]`,
/// `wss://host[:port][/path]`.
///
/// The scheme is matched ignoring case; IPv6 hosts are bracketed
/// (`ws://[::1]:7422/`). A URL with user information (`user@`), a fragment
/// (`#...`), a path on `tcp://` or `tls://`, or any byte outside visible
/// ASCII is refused: nothing in it is silently dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL's scheme; `None` for a bare `host:port`.
    pub scheme: Option<Scheme>,
    /// The host: a name or an IP address, without brackets.
    pub host: String,
    /// The port (the scheme's default when the URL gives none).
    pub port: Option<u16>,
    /// The WebSocket request target (path and query), `/` when the URL has
    /// none; empty for the other transports.
    pub path: String,
}

impl Endpoint {
    /// Reads `addr`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] naming what is wrong: an unknown scheme, a
    /// missing host, a bad port, user information, a fragment, a path
    /// where the transport has none, or a byte that cannot be sent. A bare
    /// `host:port` is not checked here beyond its form: resolving it says
    /// the rest, as before URLs were accepted.
    pub fn parse(addr: &str) -> Result<Self, ClientError> {
        let bad = |why: &str| ClientError::Config(format!("address {addr:?}: {why}"));
        let Some((scheme, rest)) = addr.split_once("://") else {
            let host = bare_host(addr);
            return Ok(Self {
                scheme: None,
                host: host.to_string(),
                port: None,
                path: String::new(),
            });
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "tcp" => Scheme::Tcp,
            "tls" => Scheme::Tls,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            other => {
                return Err(bad(&format!(
                    "unknown scheme {other:?} (tcp://, tls://, ws:// or wss://)"
                )));
            }
        };
        if !rest.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("only visible ASCII (no spaces) may be used"));
        }
        if rest.contains('#') {
            return Err(bad("a fragment (#...) has no meaning here"));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad("user information (user@) is not supported"));
        }
        let (host, port) = split_authority(authority).map_err(bad)?;
        let path = if scheme.is_websocket() {
            match path {
                "" => "/".to_string(),
                p if p.starts_with('?') => format!("/{p}"),
                p => p.to_string(),
            }
        } else if path.is_empty() || path == "/" {
            String::new()
        } else {
            return Err(bad(&format!("{scheme}:// takes no path")));
        };
        Ok(Self {
            scheme: Some(scheme),
            host: host.to_string(),
            port: Some(port.unwrap_or_else(|| scheme.default_port())),
            path,
        })
    }

    /// Whether this is a WebSocket URL.
    pub fn is_websocket(&self) -> bool {
        self.scheme.is_some_and(Scheme::is_websocket)
    }

    /// The `Host` header of a WebSocket upgrade: `host:port`, the IPv6
    /// host bracketed.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }
}

/// The host of a bare `host:port` (brackets of `[v6]:port` removed).
fn bare_host(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// `host[:port]` or `[v6][:port]` into the host and the port, if any.
fn split_authority(authority: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed [ in the host")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("[...] must hold an IPv6 address");
        }
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or("junk after ]")?)),
        }
    } else {
        match authority.split_once(':') {
            None => (authority, None),
            Some((_, p)) if p.contains(':') => {
                return Err("an IPv6 host must be in brackets ([::1]:7422)");
            }
            Some((h, p)) => (h, Some(p)),
        }
    };
    if host.is_empty() {
        return Err("no host");
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or("the port must be 1 to 65535")?,
        ),
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(addr: &str) -> Endpoint {
        Endpoint::parse(addr).unwrap_or_else(|e| panic!("{addr}: {e}"))
    }

    #[track_caller]
    fn refused(addr: &str, why: &str) {
        match Endpoint::parse(addr) {
            Err(ClientError::Config(e)) => assert!(e.contains(why), "{addr}: {e}"),
            other => panic!("{addr}: {other:?}"),
        }
    }

    #[test]
    fn bare_addresses_stay_as_they_were() {
        let e = ok("localhost:7421");
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (None, "localhost", None)
        );
        assert_eq!(ok("[::1]:7421").host, "::1");
        assert_eq!(ok("127.0.0.1:1").host, "127.0.0.1");
        assert_eq!(ok("example.org").host, "example.org");
    }

    #[test]
    fn urls_name_the_transport() {
        let e = ok("ws://localhost:7422");
        assert_eq!(
            e,
            Endpoint {
                scheme: Some(Scheme::Ws),
                host: "localhost".into(),
                port: Some(7422),
                path: "/".into()
            }
        );
        assert_eq!(e.authority(), "localhost:7422");
        let e = ok("WSS://[::1]:7423/chat?room=1");
        assert_eq!(e.scheme, Some(Scheme::Wss));
        assert_eq!((e.host.as_str(), e.port), ("::1", Some(7423)));
        assert_eq!(e.path, "/chat?room=1");
        assert_eq!(e.authority(), "[::1]:7423");
        assert_eq!(ok("ws://h?x").path, "/?x");
        assert_eq!(ok("ws://h").port, Some(80));
        assert_eq!(ok("wss://h/").port, Some(443));
        let e = ok("tcp://127.0.0.1");
        assert_eq!((e.scheme, e.port), (Some(Scheme::Tcp), Some(7420)));
        assert_eq!(e.path, "");
        let e = ok("tls://localhost:9/");
        assert_eq!((e.scheme, e.port), (Some(Scheme::Tls), Some(9)));
        assert!(Scheme::Wss.is_tls() && Scheme::Wss.is_websocket());
        assert!(!Scheme::Tcp.is_tls() && !Scheme::Tls.is_websocket());
    }

    #[test]
    fn what_cannot_be_used_is_refused_with_a_reason() {
        refused("http://h:1", "unknown scheme \"http\"");
        refused("ws://", "no host");
        refused("ws://:7422/", "no host");
        refused("ws://h:0/", "port");
        refused("ws://h:70000/", "port");
        refused("ws://h:x/", "port");
        refused("ws://::1:7422/", "brackets");
        refused("ws://[::1/", "unclosed");
        refused("ws://[nope]:1/", "IPv6");
        refused("ws://[::1]x/", "junk");
        refused("ws://u:p@h:1/", "user information");
        refused("ws://h:1/#top", "fragment");
        refused("ws://h:1/a b", "visible ASCII");
        refused("ws://h:1/\r\nX: 1", "visible ASCII");
        refused("ws://hé:1/", "visible ASCII");
        refused("tcp://h:1/x", "takes no path");
    }
}
