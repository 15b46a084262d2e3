//! WebSocket under the bench's switchboard target (`--ws`): the upgrade
//! request goes first (frames follow it at once, without waiting for the
//! 101), each frame queued by the target leaves as one masked message, and
//! messages received are unwrapped into the target's byte stream.
//!
//! The mask is fixed per connection: a load generator needs no
//! unpredictable masks (browsers do, against cache poisoning), and the
//! server unmasks any key at the same cost. Server frames are parsed in
//! place (no message is copied out of the read buffer but its payload), so
//! that the client's own cost does not throttle a fan-out measurement.

use bytes::BytesMut;
use switchboard::ws::{self, OpCode};

/// The response head is at most this long.
const MAX_RESPONSE_HEAD: usize = 8 << 10;

/// One connection's WebSocket state.
pub(crate) struct WsClient {
    upgraded: bool,
    /// The response head, until its end.
    head: Vec<u8>,
    /// The unfinished frame at the end of what arrived.
    partial: Vec<u8>,
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
            partial: Vec::new(),
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

    fn ingest_frames(&mut self, raw: &[u8], inbuf: &mut Vec<u8>) -> Result<(), String> {
        let joined;
        let data = if self.partial.is_empty() {
            raw
        } else {
            self.partial.extend_from_slice(raw);
            joined = std::mem::take(&mut self.partial);
            &joined[..]
        };
        let mut pos = 0;
        while let Some((op, header, len)) = server_frame_header(&data[pos..])? {
            let Some(payload) = data.get(pos + header..pos + header + len) else {
                break;
            };
            match op {
                // Text, binary (and continuations: the server sends none).
                0..=2 => inbuf.extend_from_slice(payload),
                8 => return Err(format!("WebSocket closed by the server: {payload:?}")),
                9 => {
                    let mut b = BytesMut::new();
                    ws::client_frame(&mut b, OpCode::Pong, true, payload, self.mask);
                    self.wire.extend_from_slice(&b);
                }
                10 => {}
                other => return Err(format!("WebSocket: opcode {other} from the server")),
            }
            pos += header + len;
        }
        self.partial.extend_from_slice(&data[pos..]);
        Ok(())
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

/// The opcode, header length and payload length of the server frame at the
/// front of `buf`, once its header is there.
fn server_frame_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, String> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 || b0 & 0x70 != 0 {
        return Err("WebSocket: a masked frame or reserved bits from the server".into());
    }
    let (header, len) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(l) => (4, u64::from(u16::from_be_bytes([l[0], l[1]]))),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(l) => {
                let mut b = [0; 8];
                b.copy_from_slice(l);
                (10, u64::from_be_bytes(b))
            }
            None => return Ok(None),
        },
        n => (2, u64::from(n)),
    };
    let len = usize::try_from(len).map_err(|_| "WebSocket: frame too long".to_string())?;
    Ok(Some((b0 & 0x0f, header, len)))
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
        let mut server = ws::Decoder::new(ws::Role::Server, 1 << 20);
        let mut got = Vec::new();
        while let Ok(Some(ws::Event::Text(m))) = server.decode(&mut wire) {
            got.push(m);
        }
        assert_eq!(got, [b"USER 0 a\n".to_vec(), b"PUBLISH 2 1\nhi".to_vec()]);
        let mut inbuf = Vec::new();
        let mut reply = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        let mut m = BytesMut::new();
        ws::server_frame(&mut m, OpCode::Text, true, b"ACK 0\n");
        reply.extend_from_slice(&m);
        m.clear();
        ws::server_frame(&mut m, OpCode::Binary, true, &[b'x'; 300]);
        reply.extend_from_slice(&m);
        c.ingest(&reply[..10], &mut inbuf).expect("partial head");
        for b in &reply[10..] {
            c.ingest(&[*b], &mut inbuf).expect("a byte at a time");
        }
        let mut expected = b"ACK 0\n".to_vec();
        expected.extend([b'x'; 300]);
        assert_eq!(inbuf, expected);
    }
}
