//! The NATS text protocol (nats-server). The server greets with `INFO`; the
//! login (`CONNECT {"verbose":false,...}`) is sent after it. Nothing in NATS
//! acknowledges CONNECT, SUB or PUB when not verbose, so each is followed by
//! a `PING` and the `PONG` is the acknowledgement (the server handles a
//! connection's commands in order). Deliveries are `MSG <subject> <sid>
//! [reply-to] <len>\r\n<payload>\r\n`; the server's `PING` is answered with
//! `PONG`.

use super::{Event, MAX_PAYLOAD, Target};

/// The NATS client protocol.
#[derive(Debug, Default)]
pub(crate) struct Nats;

/// Longest control line accepted (the server's INFO is a few hundred bytes).
const MAX_LINE: usize = 64 * 1024;

fn subject(group: u32) -> String {
    format!("g.{group}")
}

/// A JSON string literal for `s`.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Target for Nats {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn greets_first(&self) -> bool {
        true
    }

    fn login(&self, out: &mut Vec<u8>, user: &str) {
        out.extend_from_slice(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":");
        out.extend_from_slice(json_string(user).as_bytes());
        out.extend_from_slice(b"}\r\n");
        self.ping(out);
    }

    fn subscribe(&self, out: &mut Vec<u8>, group: u32) {
        // One subscription per connection: sid 1.
        out.extend_from_slice(format!("SUB {} 1\r\n", subject(group)).as_bytes());
        self.ping(out);
    }

    fn publish(&self, out: &mut Vec<u8>, group: u32, payload: &[u8]) {
        out.extend_from_slice(format!("PUB {} {}\r\n", subject(group), payload.len()).as_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        self.ping(out);
    }

    fn ping(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"PING\r\n");
    }

    fn pong(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"PONG\r\n");
    }

    fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Event<'a>, usize)>, String> {
        let Some(end) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > MAX_LINE {
                return Err("NATS: control line too long".into());
            }
            return Ok(None);
        };
        if end > MAX_LINE {
            return Err("NATS: control line too long".into());
        }
        let text = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
        let after = end + 1;
        let mut words = text
            .split(|b| *b == b' ' || *b == b'\t')
            .filter(|w| !w.is_empty());
        let op = words.next().unwrap_or_default().to_ascii_uppercase();
        let event = match op.as_slice() {
            b"PING" => Event::Ping,
            b"PONG" => Event::Pong,
            b"+OK" => Event::Other,
            b"INFO" => Event::Greeting,
            b"-ERR" => {
                let why = text.get(5..).unwrap_or_default();
                Event::Refused(String::from_utf8_lossy(why).trim().to_string())
            }
            b"MSG" => {
                let args: Vec<&[u8]> = words.collect();
                if !(3..=4).contains(&args.len()) {
                    return Err("NATS: malformed MSG".into());
                }
                let len = std::str::from_utf8(args[args.len() - 1])
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .filter(|&n| n <= MAX_PAYLOAD)
                    .ok_or("NATS: bad MSG length")?;
                let Some(data) = buf.get(after..after + len + 2) else {
                    return Ok(None);
                };
                if &data[len..] != b"\r\n" {
                    return Err("NATS: MSG payload without CRLF".into());
                }
                return Ok(Some((Event::Delivery(&data[..len]), after + len + 2)));
            }
            _ => {
                return Err(format!(
                    "NATS: unexpected {:?}",
                    String::from_utf8_lossy(&text[..text.len().min(40)])
                ));
            }
        };
        Ok(Some((event, after)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check_garbage, check_splits};
    use super::*;

    #[test]
    fn encodes_connect_sub_pub() {
        let t = Nats;
        let mut out = Vec::new();
        t.login(&mut out, "a\"b");
        assert_eq!(
            out,
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"a\\\"b\"}\r\nPING\r\n"
        );
        out.clear();
        t.subscribe(&mut out, 4);
        assert_eq!(out, b"SUB g.4 1\r\nPING\r\n");
        out.clear();
        t.publish(&mut out, 4, b"x\r\ny");
        assert_eq!(out, b"PUB g.4 4\r\nx\r\ny\r\nPING\r\n");
    }

    #[test]
    fn decodes_in_any_split() {
        let input: &[u8] = b"INFO {\"server_id\":\"x\"} \r\nPONG\r\nPING\r\n\
            MSG g.1 1 4\r\na\r\nb\r\nMSG g.1 1 _INBOX.x 0\r\n\r\n+OK\r\n-ERR 'Unknown Protocol Operation'\r\n";
        let seen = check_splits(&Nats, input);
        assert_eq!(
            seen,
            [
                "Greeting",
                "Pong",
                "Ping",
                "Delivery([97, 13, 10, 98])",
                "Delivery([])",
                "Other",
                "Refused(\"'Unknown Protocol Operation'\")"
            ]
        );
    }

    #[test]
    fn garbage_never_panics() {
        check_garbage(&Nats, b"MSG PING PONG INFO -ERR +OK 0123 g.1\r\n");
        assert!(Nats.decode(b"MSG g.1 1 3\r\nabcXY").is_err());
        assert!(Nats.decode(b"MSG g.1 1 -3\r\n").is_err());
        assert!(Nats.decode(b"MSG g.1\r\n").is_err());
        assert!(Nats.decode(b"HELLO\r\n").is_err());
        assert!(Nats.decode(&[b'x'; MAX_LINE + 10]).is_err());
    }
}
