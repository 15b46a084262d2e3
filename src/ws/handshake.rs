//! The server side of the opening handshake (RFC 6455 section 4.2).
//!
//! [`read_request`] takes the bytes a connection has sent so far and says
//! one of: not complete yet (`Ok(None)`), a WebSocket upgrade to accept
//! ([`Request::Upgrade`], with the 101 response to write), a plain `GET`
//! that is not an upgrade ([`Request::Plain`], for the caller to serve the
//! chat page), or a refusal ([`Refusal`], with the HTTP error response to
//! write before closing). [`Head::used`] is the length of the request head:
//! bytes after it are already the WebSocket stream.
//!
//! DoS warning: the head is parsed again from the start each time it is
//! called with more bytes, so a client sending one byte at a time costs
//! O(n²) in the head's length; the head is capped at [`MAX_HEAD`] (8 KiB),
//! which bounds both that work and the bytes a caller must keep. The login
//! timeout is what ends a client that never finishes its head.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::digest;

use super::SUBPROTOCOL;

/// The longest request head accepted (request line, headers and the empty
/// line); a longer one is refused with 400 as soon as that many bytes have
/// arrived without its end.
pub const MAX_HEAD: usize = 8 << 10;

/// Most header lines in a request head.
pub const MAX_HEADERS: usize = 64;

/// The GUID RFC 6455 section 1.3 appends to the key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A complete request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the input the head took; the rest belongs to what follows
    /// (WebSocket frames after an upgrade).
    pub used: usize,
    /// What the request asks for.
    pub request: Request,
}

/// What a complete, well-formed request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A valid WebSocket upgrade: write [`Upgrade::response`], then the
    /// connection speaks WebSocket frames.
    Upgrade(Upgrade),
    /// A `GET` that is not a WebSocket upgrade (no `Upgrade: websocket`):
    /// the caller serves a page (or a 404) and closes.
    Plain {
        /// The request target, as sent (e.g. `/` or `/index.html?x=1`).
        path: String,
    },
}

/// An accepted upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The request target, as sent; the upgrade is accepted on any path.
    pub path: String,
    /// The `Sec-WebSocket-Accept` value computed from the client's key.
    pub accept: String,
    /// Whether `switchboard.v1` was offered, and so is selected. `false`:
    /// the client offered no subprotocol at all (a browser's plain
    /// `new WebSocket(url)`), which protocol.md section 8 accepts.
    pub subprotocol: bool,
}

impl Upgrade {
    /// The `101 Switching Protocols` response.
    pub fn response(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        );
        out.extend_from_slice(b"Sec-WebSocket-Accept: ");
        out.extend_from_slice(self.accept.as_bytes());
        out.extend_from_slice(b"\r\n");
        if self.subprotocol {
            out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
            out.extend_from_slice(SUBPROTOCOL.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Why a request is refused. Each maps to an HTTP response
/// ([`Refusal::response`]) after which the caller closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// No end of the head within [`MAX_HEAD`] bytes (400).
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header lines (400).
    TooManyHeaders,
    /// Not an HTTP/1.x request head (400).
    Malformed,
    /// A method other than `GET` (405, `Allow: GET`).
    Method,
    /// An upgrade over HTTP/1.0 (400).
    Version,
    /// An upgrade without a `Host` header (400).
    NoHost,
    /// `Upgrade: websocket` without `Connection: upgrade` (400).
    NoConnectionUpgrade,
    /// No `Sec-WebSocket-Version` (400).
    NoWsVersion,
    /// A `Sec-WebSocket-Version` other than 13 (426, with
    /// `Sec-WebSocket-Version: 13`, RFC 6455 section 4.4).
    WsVersion,
    /// No `Sec-WebSocket-Key`, or one that is not base64 of 16 bytes (400).
    BadKey,
    /// Subprotocols offered, `switchboard.v1` not among them (400,
    /// protocol.md section 8).
    Subprotocol,
}

impl Refusal {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            Self::Method => 405,
            Self::WsVersion => 426,
            _ => 400,
        }
    }

    /// A one-line reason, sent as the response body (and fit for a log).
    pub fn reason(self) -> &'static str {
        match self {
            Self::HeadTooLarge => "request head over 8 KiB",
            Self::TooManyHeaders => "too many header lines",
            Self::Malformed => "malformed HTTP request",
            Self::Method => "method must be GET",
            Self::Version => "WebSocket needs HTTP/1.1",
            Self::NoHost => "missing Host header",
            Self::NoConnectionUpgrade => "Connection header must include upgrade",
            Self::NoWsVersion => "missing Sec-WebSocket-Version",
            Self::WsVersion => "unsupported Sec-WebSocket-Version (13 only)",
            Self::BadKey => "Sec-WebSocket-Key must be base64 of 16 bytes",
            Self::Subprotocol => "subprotocol switchboard.v1 not offered",
        }
    }

    /// The complete HTTP response: status line, headers (`Connection:
    /// close`; `Sec-WebSocket-Version: 13` for 426; `Allow: GET` for 405)
    /// and the reason as a plain-text body.
    pub fn response(self) -> Vec<u8> {
        let status = self.status();
        let phrase = match status {
            405 => "Method Not Allowed",
            426 => "Upgrade Required",
            _ => "Bad Request",
        };
        let body = self.reason();
        let extra = match self {
            Self::WsVersion => "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n",
            Self::Method => "Allow: GET\r\n",
            _ => "",
        };
        format!(
            "HTTP/1.1 {status} {phrase}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
            body.len() + 1
        )
        .into_bytes()
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}

impl std::error::Error for Refusal {}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64 of the SHA-1 of
/// the key followed by the RFC's GUID (RFC 6455 section 4.2.2). SHA-1 is
/// what the RFC fixes here; it is not used for security.
pub fn accept_key(key: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID.as_bytes());
    STANDARD.encode(ctx.finish().as_ref())
}

/// Reads a request head from the start of `buf` (everything the connection
/// has sent so far).
///
/// `Ok(None)`: the head is not complete yet; call again with more bytes
/// (the same start). `Ok(Some(head))`: see [`Request`]; `head.used` bytes
/// were the head.
///
/// # Errors
///
/// A [`Refusal`]: write its response and close. A head longer than
/// [`MAX_HEAD`] is refused once that many bytes have arrived.
pub fn read_request(buf: &[u8]) -> Result<Option<Head>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(Refusal::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooManyHeaders),
        Err(_) => return Err(Refusal::Malformed),
    };
    if used > MAX_HEAD {
        return Err(Refusal::HeadTooLarge);
    }
    // A complete head always has a method, a path and a version.
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Refusal::Malformed);
    };
    if method != "GET" {
        return Err(Refusal::Method);
    }
    let path = path.to_string();
    let headers = req.headers;
    // RFC 6455 4.2.1: `Upgrade` must include "websocket"; any other
    // Upgrade (h2c, ...) may be ignored by a server (RFC 9110 7.8), so a
    // request without it is plain HTTP.
    if !has_token(headers, "upgrade", "websocket") {
        return Ok(Some(Head {
            used,
            request: Request::Plain { path },
        }));
    }
    if version != 1 {
        return Err(Refusal::Version);
    }
    if !headers.iter().any(|h| h.name.eq_ignore_ascii_case("host")) {
        return Err(Refusal::NoHost);
    }
    if !has_token(headers, "connection", "upgrade") {
        return Err(Refusal::NoConnectionUpgrade);
    }
    match single(headers, "sec-websocket-version") {
        None => return Err(Refusal::NoWsVersion),
        Some(v) if v == b"13" => {}
        Some(_) => return Err(Refusal::WsVersion),
    }
    let key = match single(headers, "sec-websocket-key") {
        Some(k) if is_key(k) => k,
        _ => return Err(Refusal::BadKey),
    };
    // is_key checked it is base64, hence ASCII.
    let key = std::str::from_utf8(key).map_err(|_| Refusal::BadKey)?;
    let offered = headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"));
    let subprotocol = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
        .any(|h| {
            h.value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii() == SUBPROTOCOL.as_bytes())
        });
    if offered && !subprotocol {
        return Err(Refusal::Subprotocol);
    }
    let accept = accept_key(key);
    Ok(Some(Head {
        used,
        request: Request::Upgrade(Upgrade {
            path,
            accept,
            subprotocol,
        }),
    }))
}

/// Whether a comma-separated token list in any `name` header holds `token`
/// (compared ignoring ASCII case, as RFC 6455 4.2.1 asks for `Upgrade` and
/// `Connection`; subprotocol names, by contrast, are compared exactly, as
/// browsers do).
pub(super) fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .any(|h| {
            h.value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
}

/// The value of a header that must appear once, trimmed; `None` when it is
/// absent or repeated.
pub(super) fn single<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    let mut found = headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
    let first = found.next()?;
    match found.next() {
        Some(_) => None,
        None => Some(first.value.trim_ascii()),
    }
}

/// Whether `key` is base64 (with padding) of exactly 16 bytes.
fn is_key(key: &[u8]) -> bool {
    // 16 bytes encode to 24 characters; checking the length first keeps a
    // huge value from being decoded at all.
    key.len() == 24 && STANDARD.decode(key).is_ok_and(|k| k.len() == 16)
}
