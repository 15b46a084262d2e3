//! The client side of the opening handshake (RFC 6455 section 4.1), and
//! the random mask keys a client puts on its frames (section 5.3), sans-IO.
//!
//! [`ClientHandshake`] holds one random `Sec-WebSocket-Key`; it writes the
//! upgrade request ([`ClientHandshake::request`]) and checks the server's
//! answer from the bytes received so far ([`ClientHandshake::read_response`]):
//! status 101, `Upgrade: websocket`, `Connection: upgrade`, the
//! `Sec-WebSocket-Accept` that belongs to the key, `switchboard.v1` or no
//! subprotocol selected, no extension. Bytes after the response head are
//! already the WebSocket stream ([`Response::used`]).
//!
//! The response head is capped at [`MAX_HEAD`] (8 KiB), as the server's
//! request head is; it is parsed with `httparse` again from the start each
//! time more bytes arrive, so a server trickling it costs at most that
//! bound squared, and the caller's connect timeout ends it.
//!
//! [`Masks`] hands out mask keys from the system's CSPRNG (`ring`), drawn
//! 64 at a time so that a busy client does not make one system call per
//! frame. RFC 6455 wants them unpredictable to the application, so that a
//! page's script cannot shape the bytes an intermediary sees.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::error::Unspecified;
use ring::rand::{SecureRandom, SystemRandom};

use super::handshake::{has_token, single};
use super::{MAX_HEAD, MAX_HEADERS, SUBPROTOCOL, accept_key};

/// Longest part of a refusal's body quoted in [`HandshakeError::Status`].
const MAX_QUOTED_BODY: usize = 200;

/// One client opening handshake: its key and the answer that key expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandshake {
    key: String,
    accept: String,
}

/// A server's accepted upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Bytes of the input the response head took; the rest is the
    /// WebSocket stream.
    pub used: usize,
    /// Whether the server selected `switchboard.v1`. `false`: it selected
    /// none, which a switchboard server does not do when it is offered, but
    /// which RFC 6455 allows (the frames are the same).
    pub subprotocol: bool,
}

/// Why a server's answer is not an accepted upgrade. Fatal: close the
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The host or path given to [`ClientHandshake::request`] holds bytes
    /// that cannot go into a request head (spaces, control characters,
    /// non-ASCII), or is empty.
    BadTarget,
    /// No end of the response head within [`MAX_HEAD`] bytes.
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// Not an HTTP/1.1 response head (the peer is probably not a WebSocket
    /// listener).
    Malformed,
    /// A status other than 101: the server refused the upgrade.
    Status {
        /// The HTTP status code.
        code: u16,
        /// The reason phrase, and what had arrived of the body (the server's
        /// one-line reason), printable ASCII only.
        reason: String,
    },
    /// 101 without `Upgrade: websocket`.
    NoUpgrade,
    /// 101 without `Connection: upgrade`.
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Accept` missing, repeated, or not the one for the key.
    BadAccept,
    /// A subprotocol selected other than `switchboard.v1` (which is the only
    /// one offered).
    Subprotocol(String),
    /// An extension selected, though none was offered.
    Extension,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadTarget => f.write_str("host or path not fit for an HTTP request"),
            Self::HeadTooLarge => f.write_str("response head over 8 KiB"),
            Self::TooManyHeaders => f.write_str("too many header lines in the response"),
            Self::Malformed => f.write_str("the answer is not an HTTP/1.1 response"),
            Self::Status { code, reason } => write!(f, "HTTP {code} {reason}"),
            Self::NoUpgrade => f.write_str("101 without Upgrade: websocket"),
            Self::NoConnectionUpgrade => f.write_str("101 without Connection: upgrade"),
            Self::BadAccept => f.write_str("wrong or missing Sec-WebSocket-Accept"),
            Self::Subprotocol(p) => write!(f, "subprotocol {p:?} selected, not {SUBPROTOCOL}"),
            Self::Extension => f.write_str("an extension selected that was not offered"),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl ClientHandshake {
    /// A handshake with a fresh key: 16 bytes from `rng`, base64.
    ///
    /// # Errors
    ///
    /// When `rng` fails (the system's random source is unavailable).
    pub fn new(rng: &dyn SecureRandom) -> Result<Self, Unspecified> {
        let mut nonce = [0u8; 16];
        rng.fill(&mut nonce)?;
        Ok(Self::with_nonce(nonce))
    }

    /// A handshake with the key made of `nonce` (for tests: in real use the
    /// nonce must be random, [`ClientHandshake::new`]).
    pub fn with_nonce(nonce: [u8; 16]) -> Self {
        let key = STANDARD.encode(nonce);
        let accept = accept_key(&key);
        Self { key, accept }
    }

    /// The `Sec-WebSocket-Key` sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The `GET` upgrade request for `path` (the request target, e.g. `/`
    /// or `/chat?x=1`) on `host` (the `Host` value: `name`, `name:port`,
    /// `[v6]:port`), offering `switchboard.v1`.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::BadTarget`] when `host` or `path` is empty or holds
    /// a byte outside visible ASCII (so nothing can be injected into the
    /// head), or `path` does not start with `/`.
    pub fn request(&self, host: &str, path: &str) -> Result<Vec<u8>, HandshakeError> {
        let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        if !visible(host) || !visible(path) || !path.starts_with('/') {
            return Err(HandshakeError::BadTarget);
        }
        Ok(format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n",
            self.key
        )
        .into_bytes())
    }

    /// Reads the server's response head from the start of `buf` (everything
    /// received so far).
    ///
    /// `Ok(None)`: not complete yet; call again with more bytes (the same
    /// start). `Ok(Some(response))`: the upgrade is accepted, and
    /// `response.used` bytes were its head.
    ///
    /// # Errors
    ///
    /// A [`HandshakeError`] as soon as the head (or, for an over-long one,
    /// [`MAX_HEAD`] bytes) has arrived.
    pub fn read_response(&self, buf: &[u8]) -> Result<Option<Response>, HandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let used = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(HandshakeError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
            Err(_) => return Err(HandshakeError::Malformed),
        };
        if used > MAX_HEAD {
            return Err(HandshakeError::HeadTooLarge);
        }
        let (Some(version), Some(code)) = (resp.version, resp.code) else {
            return Err(HandshakeError::Malformed);
        };
        let headers = resp.headers;
        if code != 101 {
            let mut reason = printable(resp.reason.unwrap_or("").as_bytes());
            let body = body_start(headers, &buf[used..]);
            let body = printable(body);
            if !body.is_empty() {
                reason.push_str(": ");
                reason.push_str(&body);
            }
            return Err(HandshakeError::Status { code, reason });
        }
        if version != 1 {
            return Err(HandshakeError::Malformed);
        }
        if !has_token(headers, "upgrade", "websocket") {
            return Err(HandshakeError::NoUpgrade);
        }
        if !has_token(headers, "connection", "upgrade") {
            return Err(HandshakeError::NoConnectionUpgrade);
        }
        if single(headers, "sec-websocket-accept") != Some(self.accept.as_bytes()) {
            return Err(HandshakeError::BadAccept);
        }
        if headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
        {
            return Err(HandshakeError::Extension);
        }
        let mut selected = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"));
        let subprotocol = match (selected.next(), selected.next()) {
            (None, _) => false,
            (Some(h), None) if h.value.trim_ascii() == SUBPROTOCOL.as_bytes() => true,
            (Some(h), _) => {
                return Err(HandshakeError::Subprotocol(printable(h.value.trim_ascii())));
            }
        };
        Ok(Some(Response { used, subprotocol }))
    }
}

/// What of a refusal's body is in `rest`, at most its `Content-Length` and
/// [`MAX_QUOTED_BODY`] bytes, up to its first line end.
fn body_start<'a>(headers: &[httparse::Header<'_>], rest: &'a [u8]) -> &'a [u8] {
    let declared = single(headers, "content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let body = &rest[..rest.len().min(declared).min(MAX_QUOTED_BODY)];
    let line = body.split(|&b| b == b'\n' || b == b'\r').next();
    line.unwrap_or_default().trim_ascii()
}

/// `bytes` with everything outside printable ASCII as `?` (for messages).
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b == b' ' || b.is_ascii_graphic() {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// Mask keys for client frames from the system's CSPRNG, drawn in batches.
pub struct Masks {
    rng: SystemRandom,
    batch: [u8; Self::BATCH * 4],
    /// Masks of `batch` already handed out.
    used: usize,
}

impl fmt::Debug for Masks {
    /// Never shows masks to come.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masks").finish_non_exhaustive()
    }
}

impl Default for Masks {
    fn default() -> Self {
        Self::new()
    }
}

impl Masks {
    /// Masks drawn per call to the system's random source.
    const BATCH: usize = 64;

    /// A source with nothing drawn yet.
    pub fn new() -> Self {
        Self {
            rng: SystemRandom::new(),
            batch: [0; Self::BATCH * 4],
            used: Self::BATCH,
        }
    }

    /// The next mask key; each is used once.
    ///
    /// # Errors
    ///
    /// When the system's random source fails.
    pub fn next_mask(&mut self) -> Result<[u8; 4], Unspecified> {
        if self.used >= Self::BATCH {
            self.rng.fill(&mut self.batch)?;
            self.used = 0;
        }
        let at = self.used * 4;
        let mut mask = [0; 4];
        mask.copy_from_slice(&self.batch[at..at + 4]);
        // Not kept once handed out.
        self.batch[at..at + 4].fill(0);
        self.used += 1;
        Ok(mask)
    }

    /// A fresh [`ClientHandshake`] from the same random source.
    ///
    /// # Errors
    ///
    /// When the system's random source fails.
    pub fn handshake(&self) -> Result<ClientHandshake, Unspecified> {
        ClientHandshake::new(&self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Head, Refusal, Request, read_request};
    use super::*;

    const NONCE: [u8; 16] = *b"the sample nonce";

    /// The server's answer to `request`, from the server side of this module.
    fn server_answer(request: &[u8]) -> Vec<u8> {
        match read_request(request) {
            Ok(Some(Head {
                used,
                request: Request::Upgrade(u),
            })) => {
                assert_eq!(used, request.len());
                u.response()
            }
            Ok(other) => panic!("not an upgrade: {other:?}"),
            Err(refusal) => refusal.response(),
        }
    }

    #[test]
    fn the_rfc_example_key() {
        // RFC 6455 section 4.1's nonce, and section 4.2.2's answer to it.
        let hs = ClientHandshake::with_nonce(NONCE);
        assert_eq!(hs.key(), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(hs.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn request_is_accepted_by_the_server_side_byte_by_byte() {
        let hs = ClientHandshake::with_nonce(NONCE);
        let req = hs.request("localhost:7422", "/chat?x=1").unwrap();
        let text = String::from_utf8(req.clone()).unwrap();
        assert!(text.starts_with("GET /chat?x=1 HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("\r\nHost: localhost:7422\r\n"), "{text}");
        assert!(text.contains("\r\nSec-WebSocket-Protocol: switchboard.v1\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        // The server side reads it whole only at its end.
        for i in 0..req.len() {
            assert_eq!(read_request(&req[..i]), Ok(None), "request prefix {i}");
        }
        let resp = server_answer(&req);
        assert!(resp.starts_with(b"HTTP/1.1 101 "));
        // A frame right behind the head (the server may send at once).
        let mut input = resp.clone();
        input.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
        for i in 0..resp.len() {
            assert_eq!(
                hs.read_response(&input[..i]),
                Ok(None),
                "response prefix {i}"
            );
        }
        for end in resp.len()..=input.len() {
            assert_eq!(
                hs.read_response(&input[..end]),
                Ok(Some(Response {
                    used: resp.len(),
                    subprotocol: true
                }))
            );
        }
    }

    #[test]
    fn keys_are_random_base64_of_16_bytes() {
        let rng = SystemRandom::new();
        let a = ClientHandshake::new(&rng).unwrap();
        let b = Masks::new().handshake().unwrap();
        assert_ne!(a.key(), b.key());
        for hs in [&a, &b] {
            assert_eq!(STANDARD.decode(hs.key()).unwrap().len(), 16);
            let resp = server_answer(&hs.request("h", "/").unwrap());
            assert!(hs.read_response(&resp).unwrap().is_some());
        }
    }

    #[test]
    fn no_subprotocol_selected_is_accepted() {
        let hs = ClientHandshake::with_nonce(NONCE);
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\n\
             connection: keep-alive, Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
            hs.accept
        );
        assert_eq!(
            hs.read_response(resp.as_bytes()),
            Ok(Some(Response {
                used: resp.len(),
                subprotocol: false
            }))
        );
    }

    #[test]
    fn an_answer_for_another_key_is_refused() {
        let ours = ClientHandshake::with_nonce(NONCE);
        let theirs = ClientHandshake::with_nonce([7; 16]);
        let resp = server_answer(&theirs.request("h", "/").unwrap());
        assert_eq!(ours.read_response(&resp), Err(HandshakeError::BadAccept));
        // Missing, or given twice.
        let good = server_answer(&ours.request("h", "/").unwrap());
        let text = String::from_utf8(good).unwrap();
        let line = format!("Sec-WebSocket-Accept: {}\r\n", ours.accept);
        let missing = text.replace(&line, "");
        assert_eq!(
            ours.read_response(missing.as_bytes()),
            Err(HandshakeError::BadAccept)
        );
        let twice = text.replace(&line, &format!("{line}{line}"));
        assert_eq!(
            ours.read_response(twice.as_bytes()),
            Err(HandshakeError::BadAccept)
        );
    }

    #[test]
    fn a_400_refusal_is_reported_with_its_reason() {
        // The server's refusal of a request offering only other subprotocols.
        let hs = ClientHandshake::with_nonce(NONCE);
        let req = String::from_utf8(hs.request("h", "/").unwrap())
            .unwrap()
            .replace("switchboard.v1", "chat");
        let Err(refusal) = read_request(req.as_bytes()) else {
            panic!("the server side accepts it");
        };
        assert_eq!(refusal, Refusal::Subprotocol);
        let resp = refusal.response();
        let err = hs.read_response(&resp).unwrap_err();
        assert_eq!(
            err,
            HandshakeError::Status {
                code: 400,
                reason: "Bad Request: subprotocol switchboard.v1 not offered".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "HTTP 400 Bad Request: subprotocol switchboard.v1 not offered"
        );
        // Only the head received: the reason phrase alone.
        let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(
            hs.read_response(&resp[..head_end]),
            Err(HandshakeError::Status {
                code: 400,
                reason: "Bad Request".into()
            })
        );
        // A 404 from something else, body and all, bytes not printable.
        let other = b"HTTP/1.1 404 Not Found\r\nContent-Length: 6\r\n\r\nno\x01pe\nmore";
        assert_eq!(
            hs.read_response(other),
            Err(HandshakeError::Status {
                code: 404,
                reason: "Not Found: no?pe".into()
            })
        );
    }

    #[test]
    fn a_wrong_subprotocol_or_an_extension_is_refused() {
        let hs = ClientHandshake::with_nonce(NONCE);
        let good = String::from_utf8(server_answer(&hs.request("h", "/").unwrap())).unwrap();
        let wrong = good.replace("switchboard.v1", "chat");
        assert_eq!(
            hs.read_response(wrong.as_bytes()),
            Err(HandshakeError::Subprotocol("chat".into()))
        );
        let two = good.replace(
            "Sec-WebSocket-Protocol: switchboard.v1\r\n",
            "Sec-WebSocket-Protocol: switchboard.v1\r\nSec-WebSocket-Protocol: switchboard.v1\r\n",
        );
        assert!(matches!(
            hs.read_response(two.as_bytes()),
            Err(HandshakeError::Subprotocol(_))
        ));
        let ext = good.replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        );
        assert_eq!(
            hs.read_response(ext.as_bytes()),
            Err(HandshakeError::Extension)
        );
    }

    #[test]
    fn upgrade_and_connection_headers_are_required() {
        let hs = ClientHandshake::with_nonce(NONCE);
        let good = String::from_utf8(server_answer(&hs.request("h", "/").unwrap())).unwrap();
        let no_upgrade = good.replace("Upgrade: websocket\r\n", "");
        assert_eq!(
            hs.read_response(no_upgrade.as_bytes()),
            Err(HandshakeError::NoUpgrade)
        );
        let other_upgrade = good.replace("Upgrade: websocket\r\n", "Upgrade: h2c\r\n");
        assert_eq!(
            hs.read_response(other_upgrade.as_bytes()),
            Err(HandshakeError::NoUpgrade)
        );
        let no_connection = good.replace("Connection: Upgrade\r\n", "Connection: close\r\n");
        assert_eq!(
            hs.read_response(no_connection.as_bytes()),
            Err(HandshakeError::NoConnectionUpgrade)
        );
        let http10 = good.replace("HTTP/1.1 101", "HTTP/1.0 101");
        assert_eq!(
            hs.read_response(http10.as_bytes()),
            Err(HandshakeError::Malformed)
        );
    }

    #[test]
    fn not_http_and_over_long_heads_are_refused() {
        let hs = ClientHandshake::with_nonce(NONCE);
        // What a plain switchboard listener answers to a GET.
        assert_eq!(
            hs.read_response(b"ERR 17 bad-frame\nmalformed frame\n"),
            Err(HandshakeError::Malformed)
        );
        let mut long = b"HTTP/1.1 101 Switching Protocols\r\nX-Pad: ".to_vec();
        long.resize(MAX_HEAD - 1, b'a');
        assert_eq!(hs.read_response(&long), Ok(None));
        long.push(b'a');
        assert_eq!(hs.read_response(&long), Err(HandshakeError::HeadTooLarge));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("HTTP/1.1 101 Switching Protocols\r\n{many}\r\n");
        assert_eq!(
            hs.read_response(many.as_bytes()),
            Err(HandshakeError::TooManyHeaders)
        );
    }

    #[test]
    fn nothing_can_be_injected_into_the_request() {
        let hs = ClientHandshake::with_nonce(NONCE);
        for (host, path) in [
            ("h\r\nX-Evil: 1", "/"),
            ("h", "/\r\nX-Evil: 1"),
            ("h", "/a b"),
            ("", "/"),
            ("h", ""),
            ("h", "chat"),
            ("hé", "/"),
        ] {
            assert_eq!(
                hs.request(host, path),
                Err(HandshakeError::BadTarget),
                "{host:?} {path:?}"
            );
        }
        assert!(hs.request("[::1]:7422", "/").is_ok());
    }

    #[test]
    fn masks_are_drawn_in_batches_and_differ() {
        let mut masks = Masks::new();
        let drawn: Vec<[u8; 4]> = (0..3 * Masks::BATCH)
            .map(|_| masks.next_mask().unwrap())
            .collect();
        let distinct: std::collections::BTreeSet<_> = drawn.iter().collect();
        // 192 random 32-bit keys: a repeat is possible, many are not.
        assert!(distinct.len() > drawn.len() - 4, "{distinct:?}");
    }
}
