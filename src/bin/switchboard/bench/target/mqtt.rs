//! MQTT 3.1.1 at QoS 0 (Mosquitto): CONNECT (client id = the user name,
//! clean session, keep-alive 60 s) → CONNACK; SUBSCRIBE `g/<group>` at QoS 0
//! → SUBACK; PUBLISH at QoS 0 has no acknowledgement, so each one is
//! followed by a PINGREQ and its PINGRESP is the acknowledgement (the
//! server handles a connection's packets in order, so the publish has been
//! routed by then). Deliveries are incoming PUBLISH packets.

use super::{Event, MAX_PAYLOAD, Target};

/// MQTT 3.1.1, QoS 0.
#[derive(Debug, Default)]
pub(crate) struct Mqtt;

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;

/// The largest remaining length MQTT can express (four varint bytes).
const MAX_REMAINING: usize = 268_435_455;

/// Appends the remaining-length varint (at most four bytes).
fn put_len(out: &mut Vec<u8>, len: usize) {
    debug_assert!(len <= MAX_REMAINING);
    let mut len = len.min(MAX_REMAINING);
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return;
        }
    }
}

/// Reads the remaining length at the front of `buf`: `(length, bytes
/// used)`, `None` if more bytes are needed.
fn get_len(buf: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err("MQTT: non-minimal remaining length".into());
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err("MQTT: remaining length longer than four bytes".into())
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s[..usize::from(len)]);
}

fn topic(group: u32) -> String {
    format!("g/{group}")
}

impl Target for Mqtt {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn login(&self, out: &mut Vec<u8>, user: &str) {
        let id = &user.as_bytes()[..user.len().min(65_535)];
        // Protocol name, level 4, flags (clean session), keep-alive 60 s.
        let var = [0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
        out.push(CONNECT << 4);
        put_len(out, var.len() + 2 + id.len());
        out.extend_from_slice(&var);
        put_str(out, id);
    }

    fn subscribe(&self, out: &mut Vec<u8>, group: u32) {
        let t = topic(group);
        out.push((SUBSCRIBE << 4) | 0x02);
        put_len(out, 2 + 2 + t.len() + 1);
        out.extend_from_slice(&1u16.to_be_bytes());
        put_str(out, t.as_bytes());
        out.push(0);
    }

    fn publish(&self, out: &mut Vec<u8>, group: u32, payload: &[u8]) {
        let t = topic(group);
        let payload = &payload[..payload.len().min(MAX_REMAINING - 2 - t.len())];
        out.push(PUBLISH << 4);
        put_len(out, 2 + t.len() + payload.len());
        put_str(out, t.as_bytes());
        out.extend_from_slice(payload);
        self.ping(out);
    }

    fn ping(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[PINGREQ << 4, 0]);
    }

    fn pong(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[PINGRESP << 4, 0]);
    }

    fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Event<'a>, usize)>, String> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let Some((len, n)) = get_len(&buf[1..])? else {
            return Ok(None);
        };
        if len > MAX_PAYLOAD {
            return Err(format!("MQTT: a {len}-byte packet is too large"));
        }
        let start = 1 + n;
        let Some(body) = buf.get(start..start + len) else {
            return Ok(None);
        };
        let used = start + len;
        let event = match first >> 4 {
            CONNACK => match body {
                [_, 0] => Event::Ok,
                [_, code] => Event::Refused(format!("CONNACK return code {code}")),
                _ => return Err("MQTT: malformed CONNACK".into()),
            },
            SUBACK => match body {
                [_, _, codes @ ..] if !codes.is_empty() => {
                    if codes.contains(&0x80) {
                        Event::Refused("SUBACK failure (0x80)".into())
                    } else {
                        Event::Ok
                    }
                }
                _ => return Err("MQTT: malformed SUBACK".into()),
            },
            PUBLISH => {
                let qos = (first >> 1) & 0x03;
                if qos == 3 {
                    return Err("MQTT: PUBLISH with QoS 3".into());
                }
                let Some(tlen) = body
                    .get(..2)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                else {
                    return Err("MQTT: malformed PUBLISH".into());
                };
                let skip = 2 + tlen + if qos > 0 { 2 } else { 0 };
                match body.get(skip..) {
                    Some(payload) => Event::Delivery(payload),
                    None => return Err("MQTT: malformed PUBLISH".into()),
                }
            }
            PINGRESP => Event::Pong,
            PINGREQ => Event::Ping,
            _ => Event::Other,
        };
        Ok(Some((event, used)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check_garbage, check_splits};
    use super::*;

    #[test]
    fn remaining_length_round_trips_at_the_edges() {
        for len in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            MAX_REMAINING,
        ] {
            let mut out = Vec::new();
            put_len(&mut out, len);
            assert_eq!(get_len(&out).unwrap(), Some((len, out.len())), "{len}");
            assert_eq!(get_len(&out[..out.len() - 1]).unwrap(), None);
        }
        assert!(get_len(&[0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
        assert!(get_len(&[0x80, 0x00]).is_err());
    }

    #[test]
    fn encodes_connect_subscribe_publish() {
        let t = Mqtt;
        let mut out = Vec::new();
        t.login(&mut out, "ab");
        assert_eq!(
            out,
            [
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'a', b'b'
            ]
        );
        out.clear();
        t.subscribe(&mut out, 7);
        assert_eq!(out, [0x82, 8, 0, 1, 0, 3, b'g', b'/', b'7', 0]);
        out.clear();
        t.publish(&mut out, 7, &[9; 200]);
        assert_eq!(&out[..7], [0x30, 205, 1, 0, 3, b'g', b'/']);
        assert_eq!(out.len(), 3 + 205 + 2);
        assert_eq!(&out[out.len() - 2..], [0xc0, 0]);
    }

    #[test]
    fn decodes_in_any_split() {
        let t = Mqtt;
        let mut input = vec![0x20, 2, 0, 0, 0x90, 3, 0, 1, 0, 0xd0, 0];
        input.extend_from_slice(&[0x30, 7, 0, 3, b'g', b'/', b'1', b'h', b'i']);
        input.extend_from_slice(&[0x32, 9, 0, 3, b'g', b'/', b'1', 0, 5, b'h', b'i']);
        input.extend_from_slice(&[0x20, 2, 0, 5, 0x90, 3, 0, 1, 0x80, 0xe0, 0]);
        let seen = check_splits(&t, &input);
        assert_eq!(
            seen,
            [
                "Ok",
                "Ok",
                "Pong",
                "Delivery([104, 105])",
                "Delivery([104, 105])",
                "Refused(\"CONNACK return code 5\")",
                "Refused(\"SUBACK failure (0x80)\")",
                "Other"
            ]
        );
    }

    #[test]
    fn garbage_never_panics() {
        check_garbage(
            &Mqtt,
            &[0x20, 0x30, 0x32, 0x90, 0xd0, 0, 1, 2, 3, 0x7f, 0x80, 0xff],
        );
        assert!(Mqtt.decode(&[0x36, 0]).is_err());
        assert!(Mqtt.decode(&[0x30, 1, 0]).is_err());
        assert!(Mqtt.decode(&[0x30, 2, 0, 5]).is_err());
        assert!(Mqtt.decode(&[0x90, 2, 0, 1]).is_err());
    }
}
