//! RESP2, the Redis serialization protocol: an incremental decoder for
//! replies and pushes, and an encoder for commands (arrays of bulk strings).
//!
//! Our own small codec rather than the `redis-protocol` crate: what we need
//! is five reply types, one command shape and three hard bounds, about 250
//! lines; the crate brings RESP3, a `BytesMut` framing model of its own and
//! a dependency tree, and its decoder does not let us cap nesting depth.
//! The decoder works on a borrowed slice (the connection table's unread
//! input), so a bulk string is copied exactly once, into the `Bytes` it is
//! returned as; the encoder shares a large payload's `Bytes` instead of
//! copying it (see [`Command::shared`]).
//!
//! Every declared size is checked before it is waited for
//! ([`MAX_BULK`], [`MAX_ARRAY`], [`MAX_DEPTH`], [`MAX_LINE`]); a prefix of
//! a valid value is [`Decoded::Incomplete`], never an error; no input
//! panics (fuzzed: `fuzz/fuzz_targets/resp.rs`).

use bytes::Bytes;

/// Longest bulk string accepted (Redis's own `proto-max-bulk-len` default).
pub(crate) const MAX_BULK: usize = 512 << 20;
/// Most elements of one array.
pub(crate) const MAX_ARRAY: usize = 1 << 20;
/// Deepest nesting of arrays (a top-level array is depth 1).
pub(crate) const MAX_DEPTH: usize = 8;
/// Longest line (simple string, error, integer or length header): Redis's
/// error messages and status replies are short, and without a cap a peer
/// that never sends `\r\n` would grow the unread input without bound.
pub(crate) const MAX_LINE: usize = 64 << 10;
/// Payloads at least this long are queued as their own `Bytes` (shared, not
/// copied) behind the command's header; shorter ones are copied into it,
/// which is cheaper than a frame of their own.
pub(crate) const SHARE_AT: usize = 4096;

/// One RESP2 value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// `+OK`.
    Simple(Bytes),
    /// `-ERR ...`: the message without the `-`.
    Error(Bytes),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nfoo`.
    Bulk(Bytes),
    /// `*2\r\n...`.
    Array(Vec<Self>),
    /// `$-1` or `*-1`.
    Null,
}

impl Value {
    /// The bytes of a simple or bulk string.
    pub(crate) fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Simple(b) | Self::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// The integer of an integer reply.
    pub(crate) fn as_integer(&self) -> Option<i64> {
        match self {
            Self::Integer(n) => Some(*n),
            _ => None,
        }
    }
}

/// Why the input is not RESP2 we accept. The connection is dropped on any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RespError {
    /// A type byte RESP2 does not have (RESP3 included).
    Type(u8),
    /// A length or integer that is not a decimal `i64` (or below -1).
    Number,
    /// A line without `\r` before its `\n`, or a bulk string not followed
    /// by `\r\n`.
    Terminator,
    /// A line longer than [`MAX_LINE`].
    LineTooLong,
    /// A bulk string declared longer than [`MAX_BULK`].
    BulkTooLarge,
    /// An array declared with more than [`MAX_ARRAY`] elements.
    ArrayTooLarge,
    /// Arrays nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl std::fmt::Display for RespError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Type(b) => write!(f, "unknown RESP type byte 0x{b:02x}"),
            Self::Number => f.write_str("bad RESP number"),
            Self::Terminator => f.write_str("missing RESP CRLF"),
            Self::LineTooLong => write!(f, "RESP line over {MAX_LINE} bytes"),
            Self::BulkTooLarge => write!(f, "RESP bulk string over {MAX_BULK} bytes"),
            Self::ArrayTooLarge => write!(f, "RESP array over {MAX_ARRAY} elements"),
            Self::TooDeep => write!(f, "RESP arrays nested deeper than {MAX_DEPTH}"),
        }
    }
}

/// What [`decode`] found at the start of its input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A whole value, `consumed` bytes long.
    Value { value: Value, consumed: usize },
    /// The input is a prefix of a value at least `needed` bytes long
    /// (always more than the input's length): decoding again before that
    /// many bytes are there is wasted work.
    Incomplete { needed: usize },
}

/// The fast path for the one value a subscriber connection receives in
/// bulk: a whole `message` or `smessage` push (`*3`, the kind, the channel
/// and the payload, all bulk strings) at the start of `input`, as
/// `(channel, payload, consumed)`; borrowed, so that the caller copies each
/// once into what it keeps, with no `Value` tree in between. `None` for
/// anything else, complete or not (then [`decode`] it): whatever this
/// returns, [`decode`] reads the same (the fuzz target checks it).
pub(crate) fn message(input: &[u8]) -> Option<(&[u8], &[u8], usize)> {
    let rest = input
        .strip_prefix(b"*3\r\n$7\r\nmessage\r\n")
        .or_else(|| input.strip_prefix(b"*3\r\n$8\r\nsmessage\r\n"))?;
    let mut c = Cursor {
        buf: input,
        pos: input.len() - rest.len(),
    };
    let channel = c.next_bulk()?;
    let payload = c.next_bulk()?;
    Some((channel, payload, c.pos))
}

/// Why decoding stopped inside the value.
enum Stop {
    Incomplete(usize),
    Bad(RespError),
}

impl From<RespError> for Stop {
    fn from(e: RespError) -> Self {
        Self::Bad(e)
    }
}

/// Decodes the value at the start of `input`.
///
/// # Errors
///
/// [`RespError`] when the input cannot start a value we accept; sticky for
/// the connection (the bytes after it mean nothing).
pub(crate) fn decode(input: &[u8]) -> Result<Decoded, RespError> {
    let mut c = Cursor { buf: input, pos: 0 };
    match c.value(1) {
        Ok(value) => Ok(Decoded::Value {
            value,
            consumed: c.pos,
        }),
        Err(Stop::Incomplete(needed)) => Ok(Decoded::Incomplete {
            needed: needed.max(input.len().saturating_add(1)),
        }),
        Err(Stop::Bad(e)) => Err(e),
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// The line at `pos` without its `\r\n`; moves past it.
    fn line(&mut self) -> Result<&'a [u8], Stop> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let window = rest.get(..MAX_LINE + 2).unwrap_or(rest);
        let Some(nl) = window.iter().position(|&b| b == b'\n') else {
            if window.len() >= MAX_LINE + 2 {
                return Err(RespError::LineTooLong.into());
            }
            return Err(Stop::Incomplete(self.pos + rest.len() + 1));
        };
        let Some([line @ .., b'\r']) = window.get(..nl) else {
            return Err(RespError::Terminator.into());
        };
        self.pos += nl + 1;
        Ok(line)
    }

    /// A line as an `i64`: an optional `-` and at least one digit.
    fn number(&mut self) -> Result<i64, Stop> {
        let line = self.line()?;
        Ok(parse_i64(line).ok_or(RespError::Number)?)
    }

    /// A length header: -1 (null) or 0..=max; `None` for null.
    fn length(&mut self, max: usize, too_large: RespError) -> Result<Option<usize>, Stop> {
        match self.number()? {
            -1 => Ok(None),
            n if n < 0 => Err(RespError::Number.into()),
            n => match usize::try_from(n) {
                Ok(n) if n <= max => Ok(Some(n)),
                _ => Err(too_large.into()),
            },
        }
    }

    /// A bulk string after its `$`: its bytes, or `None` for null.
    fn bulk_body(&mut self) -> Result<Option<&'a [u8]>, Stop> {
        let Some(len) = self.length(MAX_BULK, RespError::BulkTooLarge)? else {
            return Ok(None);
        };
        let start = self.pos;
        // No overflow: len <= MAX_BULK, and pos is within a slice.
        let end = start + len;
        let Some(crlf) = self.buf.get(end..end + 2) else {
            return Err(Stop::Incomplete(end + 2));
        };
        if crlf != b"\r\n" {
            return Err(RespError::Terminator.into());
        }
        self.pos = end + 2;
        Ok(Some(self.buf.get(start..end).unwrap_or_default()))
    }

    /// A whole, non-null bulk string at `pos` (for [`message`]).
    fn next_bulk(&mut self) -> Option<&'a [u8]> {
        if self.buf.get(self.pos) != Some(&b'$') {
            return None;
        }
        self.pos += 1;
        self.bulk_body().ok().flatten()
    }

    fn value(&mut self, depth: usize) -> Result<Value, Stop> {
        let Some(&kind) = self.buf.get(self.pos) else {
            return Err(Stop::Incomplete(self.pos + 1));
        };
        // Check the type before reading its line, so that garbage is
        // refused at its first byte rather than after a line's wait.
        if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
            return Err(RespError::Type(kind).into());
        }
        self.pos += 1;
        match kind {
            b'+' => Ok(Value::Simple(Bytes::copy_from_slice(self.line()?))),
            b'-' => Ok(Value::Error(Bytes::copy_from_slice(self.line()?))),
            b':' => Ok(Value::Integer(self.number()?)),
            b'$' => Ok(match self.bulk_body()? {
                Some(b) => Value::Bulk(Bytes::copy_from_slice(b)),
                None => Value::Null,
            }),
            _ => {
                let Some(n) = self.length(MAX_ARRAY, RespError::ArrayTooLarge)? else {
                    return Ok(Value::Null);
                };
                if depth > MAX_DEPTH {
                    return Err(RespError::TooDeep.into());
                }
                // Each element takes at least 3 bytes (`+\r\n`): wait for
                // them before allocating for n.
                let least = self.pos + 3 * n;
                if least > self.buf.len() {
                    return Err(Stop::Incomplete(least));
                }
                let mut items = Vec::with_capacity(n);
                for i in 0..n {
                    match self.value(depth + 1) {
                        Ok(v) => items.push(v),
                        // The elements after this one take 3 bytes each at
                        // least: a better lower bound, so that an array
                        // arriving in small reads is not decoded again
                        // from its start at every read.
                        Err(Stop::Incomplete(needed)) => {
                            return Err(Stop::Incomplete(needed + 3 * (n - i - 1)));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(Value::Array(items))
            }
        }
    }
}

/// A strict decimal `i64` (no `+`, no spaces, no empty string).
fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        n = n.checked_mul(10)?;
        n = if neg {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

/// Appends the decimal form of `n`.
fn push_decimal(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A command being encoded: an array of bulk strings, as one or more frames
/// (a large payload rides as its own shared `Bytes`).
#[derive(Debug)]
pub(crate) struct Command {
    frames: Vec<Bytes>,
    buf: Vec<u8>,
    len: usize,
}

impl Command {
    /// A command of `argc` arguments (the verb included); add exactly that
    /// many with [`Command::arg`] and [`Command::shared`].
    pub(crate) fn new(argc: usize) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.push(b'*');
        push_decimal(&mut buf, argc);
        buf.extend_from_slice(b"\r\n");
        Self {
            frames: Vec::new(),
            buf,
            len: 0,
        }
    }

    /// A command from its arguments, all copied.
    pub(crate) fn from_args(args: &[&[u8]]) -> Self {
        let mut c = Self::new(args.len());
        for a in args {
            c.arg(a);
        }
        c
    }

    fn header(&mut self, len: usize) {
        self.buf.push(b'$');
        push_decimal(&mut self.buf, len);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Adds an argument, copied.
    pub(crate) fn arg(&mut self, a: &[u8]) -> &mut Self {
        self.header(a.len());
        self.buf.extend_from_slice(a);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Adds an argument without copying it when it is large ([`SHARE_AT`]).
    pub(crate) fn shared(&mut self, a: &Bytes) -> &mut Self {
        if a.len() < SHARE_AT {
            return self.arg(a);
        }
        self.header(a.len());
        let head = std::mem::replace(&mut self.buf, b"\r\n".to_vec());
        self.len += head.len() + a.len();
        self.frames.push(Bytes::from(head));
        self.frames.push(a.clone());
        self
    }

    /// Bytes the command takes on the wire.
    pub(crate) fn len(&self) -> usize {
        self.len + self.buf.len()
    }

    /// The command's frames, in order, into `out`; returns its length.
    pub(crate) fn finish(mut self, out: &mut Vec<Bytes>) -> usize {
        let len = self.len();
        if !self.buf.is_empty() {
            self.frames.push(Bytes::from(self.buf));
        }
        out.append(&mut self.frames);
        len
    }
}

/// Encodes any value (for tests and the fuzz target: commands go through
/// [`Command`]).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn encode_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Simple(s) => {
            out.push(b'+');
            out.extend_from_slice(s);
            out.extend_from_slice(b"\r\n");
        }
        Value::Error(s) => {
            out.push(b'-');
            out.extend_from_slice(s);
            out.extend_from_slice(b"\r\n");
        }
        Value::Integer(n) => {
            out.extend_from_slice(format!(":{n}\r\n").as_bytes());
        }
        Value::Bulk(b) => {
            out.push(b'$');
            push_decimal(out, b.len());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::Array(items) => {
            out.push(b'*');
            push_decimal(out, items.len());
            out.extend_from_slice(b"\r\n");
            for i in items {
                encode_value(i, out);
            }
        }
        Value::Null => out.extend_from_slice(b"$-1\r\n"),
    }
}
