//! WebSocket under the bench's switchboard target (`--ws`): the upgrade
//! request goes first (frames follow it at once, without waiting for the
//! 101), each frame queued by the target leaves as one masked message, and
//! messages received are unwrapped into the target's byte stream.
//!
//! The mask is fixed per connection: a load generator needs no
//! unpredictable masks (browsers do, against cache poisoning), and the
//! server unmasks any key at the same cost.

use bytes::BytesMut;
use switchboard::ws::{self, Decoder, Event, OpCode, Role};

use super::target::MAX_PAYLOAD;

/// The response head is at most this long.
const MAX_RESPONSE_HEAD: usize = 8 << 10;

/// One connection's WebSocket state.
pub(crate) struct WsClient {
    upgraded: bool,
    /// The response head, until its end.
    head: Vec<u8>,
    decoder: Decoder,
    /// Bytes ready for the socket (or TLS): the request, then messages.
    pub(crate) wire: Vec<u8>,
    mask: [u8; 4],
}

impl WsClient {
    /// A client that will ask `host` for an upgrade to `switchboard.v1`.
    pub(crate) fn new(host: &str, n: usize) -> Self {
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {}\r\n\r\n",
            ws::SUBPROTOCOL
        );
        Self {
            upgraded: false,
            head: Vec::new(),
            decoder: Decoder::new(Role::Client, MAX_PAYLOAD),
            wire: request.into_bytes(),
            mask: (n as u32 ^ 0x5bd1_e995).to_be_bytes(),
        }
    }

    /// Wire bytes received: the response head, then messages whose
    /// payloads are appended to `inbuf`; server pings are answered.
    pub(crate) fn ingest(&mut self, mut raw: &[u8], inbuf: &mut Vec<u8>) -> Result<(), String> {
        if !self.upgraded {
            self.head.extend_from_slice(raw);
            let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.head.len() > MAX_RESPONSE_HEAD {
                    return Err("WebSocket: no end of the response head".into());
                }
                return Ok(());
            };
            if !self.head.starts_with(b"HTTP/1.1 101 ") {
                let line = self.head.split(|&b| b == b'\r').next().unwrap_or_default();
                return Err(format!(
                    "WebSocket upgrade refused: {}",
                    String::from_utf8_lossy(line)
                ));
            }
            self.upgraded = true;
            let head = std::mem::take(&mut self.head);
            let rest = &head[end + 4..];
            return self.ingest_frames(rest, inbuf);
        }
        self.ingest_frames(std::mem::take(&mut raw), inbuf)
    }

    fn ingest_frames(&mut self, mut raw: &[u8], inbuf: &mut Vec<u8>) -> Result<(), String> {
        loop {
            match self.decoder.decode(&mut raw) {
                Ok(Some(Event::Text(m) | Event::Binary(m))) => inbuf.extend_from_slice(&m),
                Ok(Some(Event::Ping(p))) => {
                    let mut b = BytesMut::new();
                    ws::client_frame(&mut b, OpCode::Pong, true, &p, self.mask);
                    self.wire.extend_from_slice(&b);
                }
                Ok(Some(Event::Pong(_))) => {}
                Ok(Some(Event::Close(c))) => {
                    return Err(format!("WebSocket closed by the server: {c:?}"));
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("WebSocket: {e:?}")),
            }
        }
    }

    /// Moves the whole frames at the front of `out` to the wire, one masked
    /// message each (text when UTF-8, as a browser sends them).
    pub(crate) fn wrap(&mut self, out: &mut Vec<u8>) {
        let mut pos = 0;
        let mut b = BytesMut::new();
        while let Some(len) = frame_len(&out[pos..]) {
            let frame = &out[pos..pos + len];
            let op = if std::str::from_utf8(frame).is_ok() {
                OpCode::Text
            } else {
                OpCode::Binary
            };
            ws::client_frame(&mut b, op, true, frame, self.mask);
            pos += len;
        }
        self.wire.extend_from_slice(&b);
        out.drain(..pos);
    }
}

/// The length of the switchboard frame at the front of `buf` (`TYPE LEN
/// args\n` and LEN bytes), if it is all there.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    let len: usize = std::str::from_utf8(&buf[..nl])
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()?;
    let total = nl + 1 + len;
    (buf.len() >= total).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_become_one_message_each_and_back() {
        let mut c = WsClient::new("127.0.0.1:7422", 1);
        let request_len = c.wire.len();
        let mut out = b"USER 0 a\nPUBLISH 2 1\nhiPING".to_vec();
        c.wrap(&mut out);
        assert_eq!(out, b"PING", "an unfinished frame waits");
        let mut wire: &[u8] = &c.wire[request_len..];
        let mut server = Decoder::new(Role::Server, 1 << 20);
        let mut got = Vec::new();
        while let Ok(Some(Event::Text(m))) = server.decode(&mut wire) {
            got.push(m);
        }
        assert_eq!(got, [b"USER 0 a\n".to_vec(), b"PUBLISH 2 1\nhi".to_vec()]);
        let mut inbuf = Vec::new();
        let mut reply = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        let mut m = BytesMut::new();
        ws::server_frame(&mut m, OpCode::Text, true, b"ACK 0\n");
        reply.extend_from_slice(&m);
        c.ingest(&reply[..10], &mut inbuf).expect("partial head");
        c.ingest(&reply[10..], &mut inbuf).expect("rest");
        assert_eq!(inbuf, b"ACK 0\n");
    }
}
