//! Redis RESP2 (redis-server): the login is `PING` → `+PONG` (no auth);
//! `SUBSCRIBE g<group>` → the subscribe confirmation; `PUBLISH g<group>
//! <payload>` → `:<n>` (the receivers counted) as the acknowledgement;
//! deliveries are `*3 $7 message <channel> <payload>` arrays. Commands are
//! sent as arrays of binary-safe bulk strings.

use super::{Event, MAX_PAYLOAD, Target};

/// Redis RESP2 pub/sub.
#[derive(Debug, Default)]
pub(crate) struct Redis;

/// Longest `+`, `-`, `:`, `$` or `*` line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Most elements in an array, and deepest nesting, accepted.
const MAX_ITEMS: usize = 1 << 20;
const MAX_DEPTH: usize = 8;

/// One RESP2 value, arrays reduced to their element count.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int,
    Bulk(Option<&'a [u8]>),
    Array,
}

fn command(out: &mut Vec<u8>, parts: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(parts.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for p in parts {
        out.push(b'$');
        out.extend_from_slice(p.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
}

/// The line at `buf[pos..]` (without CRLF) and the position after it.
fn line(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, String> {
    let rest = buf.get(pos..).unwrap_or_default();
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end <= MAX_LINE => Ok(Some((&rest[..end], pos + end + 2))),
        Some(_) => Err("RESP: line too long".into()),
        None if rest.len() > MAX_LINE + 1 => Err("RESP: line too long".into()),
        None => Ok(None),
    }
}

/// A signed decimal length (`-1` for null).
fn number(text: &[u8]) -> Result<i64, String> {
    let s = std::str::from_utf8(text).map_err(|_| "RESP: bad number".to_string())?;
    s.parse::<i64>()
        .map_err(|_| format!("RESP: bad number {s:?}"))
}

/// A length: `None` for `-1`, an error when negative otherwise or above `max`.
fn length(text: &[u8], max: usize) -> Result<Option<usize>, String> {
    match number(text)? {
        -1 => Ok(None),
        n => match usize::try_from(n) {
            Ok(n) if n <= max => Ok(Some(n)),
            _ => Err(format!("RESP: bad length {n}")),
        },
    }
}

/// The value at `buf[pos..]`; for arrays, the first three elements go to
/// `items` (when given) and the rest are skipped. Returns `(value, end,
/// elements)`, `None` if more bytes are needed.
fn value<'a>(
    buf: &'a [u8],
    pos: usize,
    depth: usize,
    mut items: Option<&mut [Option<Value<'a>>; 3]>,
) -> Result<Option<(Value<'a>, usize, usize)>, String> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((text, next)) = line(buf, pos + 1)? else {
        return Ok(None);
    };
    Ok(Some(match kind {
        b'+' => (Value::Simple(text), next, 0),
        b'-' => (Value::Error(text), next, 0),
        b':' => {
            number(text)?;
            (Value::Int, next, 0)
        }
        b'$' => match length(text, MAX_PAYLOAD)? {
            None => (Value::Bulk(None), next, 0),
            Some(len) => {
                let Some(data) = buf.get(next..next + len + 2) else {
                    return Ok(None);
                };
                if &data[len..] != b"\r\n" {
                    return Err("RESP: bulk string without CRLF".into());
                }
                (Value::Bulk(Some(&data[..len])), next + len + 2, 0)
            }
        },
        b'*' => {
            if depth >= MAX_DEPTH {
                return Err("RESP: arrays nested too deep".into());
            }
            let count = length(text, MAX_ITEMS)?.unwrap_or(0);
            let mut at = next;
            for i in 0..count {
                let Some((v, end, _)) = value(buf, at, depth + 1, None)? else {
                    return Ok(None);
                };
                if let Some(slot) = items.as_deref_mut().and_then(|s| s.get_mut(i)) {
                    *slot = Some(v);
                }
                at = end;
            }
            (Value::Array, at, count)
        }
        other => return Err(format!("RESP: unknown type byte 0x{other:02x}")),
    }))
}

impl Target for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn login(&self, out: &mut Vec<u8>, _user: &str) {
        self.ping(out);
    }

    fn subscribe(&self, out: &mut Vec<u8>, group: u32) {
        command(out, &[b"SUBSCRIBE", format!("g{group}").as_bytes()]);
    }

    fn publish(&self, out: &mut Vec<u8>, group: u32, payload: &[u8]) {
        command(out, &[b"PUBLISH", format!("g{group}").as_bytes(), payload]);
    }

    fn ping(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    }

    /// Redis never pings a client.
    fn pong(&self, _out: &mut Vec<u8>) {}

    fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Event<'a>, usize)>, String> {
        let mut items = [None; 3];
        let Some((v, end, count)) = value(buf, 0, 0, Some(&mut items))? else {
            return Ok(None);
        };
        let event = match v {
            Value::Simple(b"PONG") => Event::Pong,
            Value::Simple(_) | Value::Int => Event::Ok,
            Value::Error(why) => Event::Refused(String::from_utf8_lossy(why).into_owned()),
            Value::Bulk(_) => Event::Other,
            Value::Array => match (count, items) {
                (3, [Some(Value::Bulk(Some(kind))), _, Some(third)]) => {
                    match (kind.to_ascii_lowercase().as_slice(), third) {
                        (b"message", Value::Bulk(Some(payload))) => Event::Delivery(payload),
                        (b"subscribe", Value::Int) => Event::Ok,
                        _ => Event::Other,
                    }
                }
                _ => Event::Other,
            },
        };
        Ok(Some((event, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check_garbage, check_splits};
    use super::*;

    #[test]
    fn encodes_binary_safe_commands() {
        let t = Redis;
        let mut out = Vec::new();
        t.publish(&mut out, 3, b"a\r\nb");
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\ng3\r\n$4\r\na\r\nb\r\n");
        out.clear();
        t.subscribe(&mut out, 3);
        assert_eq!(out, b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\ng3\r\n");
    }

    #[test]
    fn decodes_in_any_split() {
        let input: &[u8] = b"+PONG\r\n*3\r\n$9\r\nsubscribe\r\n$2\r\ng1\r\n:1\r\n:42\r\n\
            *3\r\n$7\r\nmessage\r\n$2\r\ng1\r\n$4\r\na\r\nb\r\n-ERR nope\r\n\
            *2\r\n$4\r\npong\r\n$0\r\n\r\n$-1\r\n*-1\r\n+OK\r\n*1\r\n*2\r\n:1\r\n$1\r\nx\r\n";
        let seen = check_splits(&Redis, input);
        assert_eq!(
            seen,
            [
                "Pong",
                "Ok",
                "Ok",
                "Delivery([97, 13, 10, 98])",
                "Refused(\"ERR nope\")",
                "Other",
                "Other",
                "Other",
                "Ok",
                "Other"
            ]
        );
    }

    #[test]
    fn garbage_never_panics() {
        check_garbage(&Redis, b"*$+-:\r\n0123-9abmessage");
        assert!(Redis.decode(b"$3\r\nabcXY").is_err());
        assert!(Redis.decode(b"$-2\r\n").is_err());
        assert!(Redis.decode(b"*99999999999999999999\r\n").is_err());
        assert!(Redis.decode(b"?x\r\n").is_err());
        let deep = b"*1\r\n".repeat(20);
        assert!(Redis.decode(&deep).is_err());
        assert!(Redis.decode(&[b'+'; MAX_LINE + 10]).is_err());
    }
}
