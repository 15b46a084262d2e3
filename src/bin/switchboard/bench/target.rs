//! Protocol targets: how a scenario's abstract steps (log in, subscribe,
//! publish, ping) become bytes on the wire, and how the bytes a server sends
//! back become [`Event`]s.
//!
//! Only [`Switchboard`] exists today. Issue 5 wants the same scenarios run
//! against Mosquitto (MQTT 3.1.1 QoS 0), Redis (RESP SUBSCRIBE/PUBLISH) and
//! NATS (text protocol) so every figure comes from one tool; each of those is
//! one more implementation of [`Target`] (plus a `--target` flag).

use switchboard::proto::{Decoded, decode};

/// What a server sent, as a scenario needs to know it.
#[derive(Debug)]
pub(crate) enum Event<'a> {
    /// The oldest outstanding request succeeded.
    Ok,
    /// The oldest outstanding request was refused (the server's reason).
    Refused(String),
    /// A message delivered to a subscription or to this user; its payload.
    Delivery(&'a [u8]),
    /// The answer to our ping.
    Pong,
    /// The server's keep-alive ping: answer with [`Target::pong`].
    Ping,
    /// Anything else (notifications the scenario does not use).
    Other,
}

/// One server protocol. Every encoder appends to `out`.
pub(crate) trait Target {
    /// The name reported in results.
    fn name(&self) -> &'static str;
    /// Logs in as `user`; answered by one [`Event::Ok`] (or `Refused`).
    fn login(&self, out: &mut Vec<u8>, user: &str);
    /// Subscribes to `group`; answered by one [`Event::Ok`].
    fn subscribe(&self, out: &mut Vec<u8>, group: u32);
    /// Publishes `payload` to `group`; answered by one [`Event::Ok`] once the
    /// server has taken it.
    fn publish(&self, out: &mut Vec<u8>, group: u32, payload: &[u8]);
    /// Sends `payload` to `user` (one [`Event::Delivery`] per session of the
    /// user), answered by one [`Event::Ok`].
    fn send_to(&self, out: &mut Vec<u8>, user: &str, payload: &[u8]);
    /// A ping, answered by [`Event::Pong`].
    fn ping(&self, out: &mut Vec<u8>);
    /// The answer to the server's ping.
    fn pong(&self, out: &mut Vec<u8>);
    /// Decodes the event at the front of `buf` and how many bytes it used;
    /// `None` if more bytes are needed.
    fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Event<'a>, usize)>, String>;
}

/// This project's protocol (docs/protocol.md).
#[derive(Debug, Default)]
pub(crate) struct Switchboard;

/// Largest payload the client accepts from the server (the server's limit
/// is at most this in any sane configuration).
const MAX_PAYLOAD: usize = 1 << 30;

fn frame(out: &mut Vec<u8>, verb: &str, args: &[&str], payload: &[u8]) {
    out.extend_from_slice(verb.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    for a in args {
        out.push(b' ');
        out.extend_from_slice(a.as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(payload);
}

impl Target for Switchboard {
    fn name(&self) -> &'static str {
        "switchboard"
    }

    fn login(&self, out: &mut Vec<u8>, user: &str) {
        frame(out, "USER", &[user], b"");
    }

    fn subscribe(&self, out: &mut Vec<u8>, group: u32) {
        frame(out, "SUBSCRIBE", &[&group.to_string()], b"");
    }

    fn publish(&self, out: &mut Vec<u8>, group: u32, payload: &[u8]) {
        frame(out, "PUBLISH", &[&group.to_string()], payload);
    }

    fn send_to(&self, out: &mut Vec<u8>, user: &str, payload: &[u8]) {
        frame(out, "SEND", &[user], payload);
    }

    fn ping(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"PING 0\n");
    }

    fn pong(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"PONG 0\n");
    }

    fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Event<'a>, usize)>, String> {
        let (frame, consumed) = match decode(buf, MAX_PAYLOAD) {
            Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
            Ok(Decoded::Incomplete { .. }) => return Ok(None),
            Err(e) => return Err(format!("undecodable frame from the server: {e}")),
        };
        let event = match frame.verb().as_bytes() {
            b"ACK" | b"RESULT" => Event::Ok,
            b"ERR" => {
                let code = frame.args().next().unwrap_or_default();
                Event::Refused(format!(
                    "{}: {}",
                    String::from_utf8_lossy(code),
                    String::from_utf8_lossy(frame.payload())
                ))
            }
            b"PUBLISHED" | b"MESSAGE" => Event::Delivery(frame.payload()),
            b"PONG" => Event::Pong,
            b"PING" => Event::Ping,
            _ => Event::Other,
        };
        Ok(Some((event, consumed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Switchboard;
        let mut out = Vec::new();
        t.publish(&mut out, 7, b"hi");
        assert_eq!(out, b"PUBLISH 2 7\nhi");
        let input = b"ACK 2\nokPUBLISHED 2 a 7\nhiERR 4 no-such-user\nnopePONG 0\n";
        let mut pos = 0;
        let mut seen = Vec::new();
        while let Some((ev, n)) = t.decode(&input[pos..]).unwrap() {
            seen.push(format!("{ev:?}"));
            pos += n;
        }
        assert_eq!(pos, input.len());
        assert_eq!(seen.len(), 4);
        assert!(seen[1].contains("Delivery"));
        assert!(seen[2].contains("no-such-user: nope"));
        assert!(t.decode(b"ACK 5\nab").unwrap().is_none());
    }
}
