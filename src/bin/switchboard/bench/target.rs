//! Protocol targets: how a scenario's abstract steps (log in, subscribe,
//! publish, ping) become bytes on the wire, and how the bytes a server sends
//! back become [`Event`]s.
//!
//! [`Switchboard`] speaks this project's protocol; [`mqtt::Mqtt`] (MQTT 3.1.1
//! QoS 0, Mosquitto), [`redis::Redis`] (RESP2 SUBSCRIBE/PUBLISH) and
//! [`nats::Nats`] (the NATS text protocol) let the same scenarios measure the
//! servers issue 5 compares against, so every figure comes from one tool.
//! Protocols without a reply to a step (NATS SUB, MQTT QoS 0 PUBLISH) follow
//! it with their ping, and the pong is the step's acknowledgement: every
//! scenario counts [`Event::is_ack`].

pub(crate) mod mqtt;
pub(crate) mod nats;
pub(crate) mod redis;

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
    /// The server's greeting (NATS `INFO`), for targets that
    /// [`Target::greets_first`].
    Greeting,
    /// Anything else (notifications the scenario does not use).
    Other,
}

impl Event<'_> {
    /// Acknowledges the oldest outstanding request: [`Event::Ok`], or
    /// [`Event::Pong`] for steps a target follows with its ping.
    pub(crate) fn is_ack(&self) -> bool {
        matches!(self, Event::Ok | Event::Pong)
    }
}

/// One server protocol. Every encoder appends to `out`; every step is
/// answered by one acknowledgement ([`Event::is_ack`]) or a refusal.
pub(crate) trait Target {
    /// The name reported in results.
    fn name(&self) -> &'static str;
    /// The server speaks first ([`Event::Greeting`]): the login is sent only
    /// once the greeting has arrived. With TLS, the greeting comes in
    /// plaintext and the client starts TLS after it (NATS's `INFO`).
    fn greets_first(&self) -> bool {
        false
    }
    /// Whether [`Target::send_to`] exists (a message to one user).
    fn direct_messages(&self) -> bool {
        false
    }
    /// Logs in as `user`; answered by one [`Event::Ok`] (or `Refused`).
    fn login(&self, out: &mut Vec<u8>, user: &str);
    /// Subscribes to `group`; answered by one [`Event::Ok`].
    fn subscribe(&self, out: &mut Vec<u8>, group: u32);
    /// Publishes `payload` to `group`; answered by one [`Event::Ok`] once the
    /// server has taken it.
    fn publish(&self, out: &mut Vec<u8>, group: u32, payload: &[u8]);
    /// Sends `payload` to `user` (one [`Event::Delivery`] per session of the
    /// user), answered by one [`Event::Ok`]. Only where
    /// [`Target::direct_messages`]; elsewhere it queues nothing.
    fn send_to(&self, out: &mut Vec<u8>, user: &str, payload: &[u8]) {
        let _ = (out, user, payload);
    }
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
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;

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

    fn direct_messages(&self) -> bool {
        true
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

/// Test helpers shared by the adapters' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Target;

    /// Decodes all of `input` fed in pieces of `step` bytes (as a socket
    /// might deliver it) and returns each event's `Debug` text.
    pub(crate) fn decode_split(t: &dyn Target, input: &[u8], step: usize) -> Vec<String> {
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            let mut pos = 0;
            while let Some((ev, n)) = t.decode(&buf[pos..]).unwrap() {
                assert!(n > 0, "an event of zero bytes");
                seen.push(format!("{ev:?}"));
                pos += n;
            }
            buf.drain(..pos);
        }
        assert!(buf.is_empty(), "bytes left over: {buf:?}");
        seen
    }

    /// Every split of `input` gives the same events as the whole.
    pub(crate) fn check_splits(t: &dyn Target, input: &[u8]) -> Vec<String> {
        let whole = decode_split(t, input, input.len());
        for step in 1..8 {
            assert_eq!(decode_split(t, input, step), whole, "step {step}");
        }
        whole
    }

    /// Arbitrary bytes (and every prefix of them) never panic the decoder,
    /// and a decoded event never claims more bytes than it was given.
    pub(crate) fn check_garbage(t: &dyn Target, alphabet: &[u8]) {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..3000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if round % 2 == 0 {
                        r as u8
                    } else {
                        alphabet[(r % alphabet.len() as u64) as usize]
                    }
                })
                .collect();
            for end in 0..=bytes.len() {
                let mut pos = 0;
                while let Ok(Some((_, n))) = t.decode(&bytes[pos..end]) {
                    assert!(n > 0 && pos + n <= end);
                    pos += n;
                }
            }
        }
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
