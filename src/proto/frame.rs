//! Frames: the borrowed view the decoder hands out, and the encoder.
//!
//! A frame is `TYPE SP LEN *(SP ARG) LF PAYLOAD` (protocol.md section 1). The
//! decoder validates a header once; after that [`Frame`]'s accessors cannot fail
//! or panic, in the manner of smoltcp's `new_checked` packets.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ErrorCode;

/// Longest header line, LF included.
pub const MAX_HEADER_LEN: usize = 4096;
/// Most letters in a TYPE.
pub const MAX_TYPE_LEN: usize = 16;
/// Most bytes in one argument.
pub const MAX_ARG_LEN: usize = 255;
/// Most arguments in one header.
pub const MAX_ARGS: usize = 64;
/// Most decimal digits in LEN.
pub const MAX_LEN_DIGITS: usize = 10;
/// The default payload limit (1 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
/// The smallest payload limit a server may be configured with (64 KiB).
pub const MIN_MAX_PAYLOAD: usize = 64 << 10;

/// A frame TYPE, upper-cased, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verb {
    bytes: [u8; MAX_TYPE_LEN],
    len: u8,
}

impl Verb {
    /// Builds a verb from 1 to 16 ASCII letters, upper-casing them; `None` otherwise.
    pub fn new(letters: &[u8]) -> Option<Self> {
        if letters.is_empty()
            || letters.len() > MAX_TYPE_LEN
            || !letters.iter().all(u8::is_ascii_alphabetic)
        {
            return None;
        }
        let mut bytes = [0u8; MAX_TYPE_LEN];
        for (dst, src) in bytes.iter_mut().zip(letters) {
            *dst = src.to_ascii_uppercase();
        }
        Some(Self {
            bytes,
            len: letters.len() as u8,
        })
    }

    /// The upper-case letters.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// The upper-case letters as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl std::fmt::Debug for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decoded frame, borrowing the input buffer.
///
/// Built only by [`crate::proto::decode`], which has validated every byte, so
/// none of the accessors can fail.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub(crate) verb: Verb,
    /// The argument part of the header: validated argument bytes separated by spaces.
    pub(crate) args: &'a [u8],
    pub(crate) arg_count: u8,
    pub(crate) payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The frame TYPE, upper-cased.
    pub fn verb(&self) -> Verb {
        self.verb
    }

    /// How many arguments the header carries (at most 64).
    pub fn arg_count(&self) -> usize {
        usize::from(self.arg_count)
    }

    /// The arguments, in order. Each is 1 to 255 bytes of 0x21..=0x7E.
    pub fn args(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.args.split(|&b| b == b' ').filter(|a| !a.is_empty())
    }

    /// The payload: exactly LEN bytes.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// Appends one frame to `out`. Arguments must already be valid (the encoder is
/// only fed by the server's own code); the verb is written as given.
pub fn encode(out: &mut BytesMut, verb: &str, args: &[&[u8]], payload: &[u8]) {
    let args_len: usize = args.iter().map(|a| a.len() + 1).sum();
    out.reserve(verb.len() + 12 + args_len + payload.len());
    out.put_slice(verb.as_bytes());
    out.put_u8(b' ');
    put_decimal(out, payload.len() as u64);
    for arg in args {
        out.put_u8(b' ');
        out.put_slice(arg);
    }
    out.put_u8(b'\n');
    out.put_slice(payload);
}

/// Encodes one frame into its own buffer.
pub fn encode_to_bytes(verb: &str, args: &[&[u8]], payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    encode(&mut out, verb, args, payload);
    out.freeze()
}

/// `ACK LEN\n<text>`.
pub fn ack(text: &str) -> Bytes {
    encode_to_bytes("ACK", &[], text.as_bytes())
}

/// `RESULT LEN\n<data>`.
pub fn result(data: &[u8]) -> Bytes {
    encode_to_bytes("RESULT", &[], data)
}

/// `ERR LEN CODE\n<text>`.
pub fn err(code: ErrorCode, text: &str) -> Bytes {
    encode_to_bytes("ERR", &[code.as_str().as_bytes()], text.as_bytes())
}

/// `PUBLISHED LEN <sender> <g>...\n<payload>`, encoded into one buffer sized
/// up front (one allocation per publish, whatever the number of groups).
pub fn published(sender: &str, groups: &[u32], payload: &[u8]) -> Bytes {
    let mut out =
        BytesMut::with_capacity(10 + 11 + sender.len() + groups.len() * 11 + 1 + payload.len());
    out.put_slice(b"PUBLISHED ");
    put_decimal(&mut out, payload.len() as u64);
    out.put_u8(b' ');
    out.put_slice(sender.as_bytes());
    for &g in groups {
        out.put_u8(b' ');
        put_decimal(&mut out, u64::from(g));
    }
    out.put_u8(b'\n');
    out.put_slice(payload);
    out.freeze()
}

/// `PING 0\n`.
pub const PING: &[u8] = b"PING 0\n";
/// `PONG 0\n`.
pub const PONG: &[u8] = b"PONG 0\n";

/// Writes `n` in decimal without allocating.
pub fn put_decimal(out: &mut BytesMut, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.put_slice(digits.get(i..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_header_args_payload() {
        let mut out = BytesMut::new();
        encode(&mut out, "PUBLISHED", &[b"alice", b"1", b"3"], b"hello");
        assert_eq!(&out[..], b"PUBLISHED 5 alice 1 3\nhello");
    }

    #[test]
    fn published_matches_the_generic_encoder() {
        let mut generic = BytesMut::new();
        encode(
            &mut generic,
            "PUBLISHED",
            &[b"alice", b"1", b"4294967295"],
            b"hi",
        );
        assert_eq!(
            published("alice", &[1, 4_294_967_295], b"hi"),
            generic.freeze()
        );
    }

    #[test]
    fn replies() {
        assert_eq!(&ack("ok")[..], b"ACK 2\nok");
        assert_eq!(&result(b"")[..], b"RESULT 0\n");
        assert_eq!(
            &err(ErrorCode::BadArgs, "no")[..],
            b"ERR 2 bad-args\nno".as_slice()
        );
    }

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 4096, u64::MAX] {
            let mut out = BytesMut::new();
            put_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }

    #[test]
    fn verbs() {
        assert_eq!(
            Verb::new(b"publish").map(|v| v.as_str().to_owned()),
            Some("PUBLISH".into())
        );
        assert!(Verb::new(b"").is_none());
        assert!(Verb::new(b"ABCDEFGHIJKLMNOPQ").is_none());
        assert!(Verb::new(b"AB1").is_none());
    }
}
