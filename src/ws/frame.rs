//! WebSocket frames (RFC 6455 section 5): an incremental decoder that
//! reassembles messages, and encoders for both ends.
//!
//! The decoder takes bytes in any split (one at a time works) and gives
//! [`Event`]s. Errors are [`ProtocolError`]s, each with the close code the
//! RFC gives it ([`ProtocolError::close_code`]); an error is sticky.
//!
//! Memory: an idle [`Decoder`] is two words (the limit, its flags, and one
//! pointer); while a frame or message is in progress it holds, boxed, at most
//! one partial frame header (14 bytes), one control frame's payload (125
//! bytes) and the data message being assembled, which never grows past the
//! limit: a frame whose header would take the message over it is refused
//! (1009) before any of its payload is kept. The box is freed when a
//! message completes with nothing else in progress.

use bytes::{BufMut, Bytes, BytesMut};

/// Close codes (RFC 6455 section 7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (server shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// A close frame without a code (never sent on the wire).
    pub const NO_STATUS: u16 = 1005;
    /// Data inconsistent with the message type (invalid UTF-8 in text).
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation.
    pub const POLICY: u16 = 1008;
    /// A message too big to process.
    pub const TOO_BIG: u16 = 1009;
    /// An unexpected condition on the server.
    pub const INTERNAL: u16 = 1011;
}

/// Longest payload of a control frame (ping, pong, close).
pub const MAX_CONTROL: usize = 125;

/// Longest frame header: 2 bytes, an 8-byte length, a 4-byte mask key.
const MAX_HEADER: usize = 14;

/// A frame's opcode (RFC 6455 section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: the next fragment of a message.
    Continuation,
    /// 0x1: a text message (its first fragment).
    Text,
    /// 0x2: a binary message (its first fragment).
    Binary,
    /// 0x8.
    Close,
    /// 0x9.
    Ping,
    /// 0xA.
    Pong,
}

impl OpCode {
    fn from_bits(b: u8) -> Option<Self> {
        Some(match b {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Which end a decoder or encoder serves: frames from a client are masked,
/// frames from a server never are (RFC 6455 section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Decodes client frames (which must be masked).
    Server,
    /// Decodes server frames (which must not be masked).
    Client,
}

/// What a peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete text message, reassembled; valid UTF-8 (checked).
    Text(Vec<u8>),
    /// A complete binary message, reassembled.
    Binary(Vec<u8>),
    /// A ping and its payload (at most 125 bytes): answer with a pong
    /// carrying the same payload ([`pong`]).
    Ping(Vec<u8>),
    /// A pong and its payload.
    Pong(Vec<u8>),
    /// A close frame: `None` when it carried no code (the RFC's 1005).
    /// The decoder reads nothing after it (RFC 6455 5.5.1); answer with a
    /// close frame ([`close`]) unless this end sent one first.
    Close(Option<CloseFrame>),
}

/// A close frame's code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: u16,
    /// The reason (valid UTF-8, at most 123 bytes).
    pub reason: String,
}

/// A protocol violation, fatal for the connection: send a close frame with
/// [`ProtocolError::close_code`] and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A client frame without a mask (server side), 1002.
    Unmasked,
    /// A server frame with a mask (client side), 1002.
    Masked,
    /// RSV1, RSV2 or RSV3 set (no extension is negotiated), 1002.
    ReservedBits,
    /// An opcode RFC 6455 does not define, 1002.
    BadOpcode(u8),
    /// A control frame without FIN, 1002.
    FragmentedControl,
    /// A control frame with more than 125 bytes, 1002.
    ControlTooLong,
    /// A continuation frame with no message started, 1002.
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is unfinished, 1002.
    UnfinishedMessage,
    /// A 64-bit length with its most significant bit set, 1002.
    BadLength,
    /// A close payload of one byte, or a code that may not be sent, 1002.
    BadClose,
    /// Invalid UTF-8 in a text message (across its fragments), 1007.
    InvalidUtf8,
    /// A close reason that is not UTF-8, 1007.
    InvalidCloseReason,
    /// A message over the decoder's limit (the total of its fragments),
    /// 1009.
    TooBig,
}

impl ProtocolError {
    /// The close code RFC 6455 gives this error.
    pub fn close_code(self) -> u16 {
        match self {
            Self::InvalidUtf8 | Self::InvalidCloseReason => close_code::INVALID_DATA,
            Self::TooBig => close_code::TOO_BIG,
            _ => close_code::PROTOCOL,
        }
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unmasked => f.write_str("unmasked client frame"),
            Self::Masked => f.write_str("masked server frame"),
            Self::ReservedBits => f.write_str("reserved bits set"),
            Self::BadOpcode(op) => write!(f, "bad opcode {op:#x}"),
            Self::FragmentedControl => f.write_str("fragmented control frame"),
            Self::ControlTooLong => f.write_str("control frame over 125 bytes"),
            Self::UnexpectedContinuation => f.write_str("continuation without a message"),
            Self::UnfinishedMessage => f.write_str("new message inside a fragmented one"),
            Self::BadLength => f.write_str("frame length with the top bit set"),
            Self::BadClose => f.write_str("bad close frame"),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8 in a text message"),
            Self::InvalidCloseReason => f.write_str("close reason not UTF-8"),
            Self::TooBig => f.write_str("message too big"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// The incremental frame decoder of one connection. See the module doc
/// for its memory.
#[derive(Debug)]
pub struct Decoder {
    /// At most 4 GiB: a `u32`, so an idle decoder is two words.
    limit: u32,
    role: Role,
    /// Sticky end: an error, or `Ok` after a close frame.
    done: Option<Result<(), ProtocolError>>,
    partial: Option<Box<Partial>>,
}

/// What a decoder holds while a frame or a message is in progress.
#[derive(Debug, Default)]
struct Partial {
    head: [u8; MAX_HEADER],
    head_len: u8,
    /// The frame whose payload is being read, once its header is complete.
    frame: Option<FrameState>,
    /// The data message being assembled: `Some(true)` text, `Some(false)`
    /// binary.
    text: Option<bool>,
    msg: Vec<u8>,
    /// How much of `msg` is known to be valid UTF-8 (text only).
    checked: usize,
    control: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct FrameState {
    op: OpCode,
    fin: bool,
    mask: Option<[u8; 4]>,
    /// Payload bytes still to come.
    left: u64,
    /// Payload bytes read so far (the mask's phase).
    read: u64,
}

impl Decoder {
    /// A decoder for frames sent to `role`; messages (the total of their
    /// fragments) over `limit` bytes are refused with 1009.
    pub fn new(role: Role, limit: usize) -> Self {
        Self {
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            role,
            done: None,
            partial: None,
        }
    }

    /// Whether anything is held (a partial header, frame or message).
    pub fn is_idle(&self) -> bool {
        self.partial.is_none()
    }

    /// Bytes held for the message being assembled and a control frame.
    pub fn held(&self) -> usize {
        self.partial
            .as_ref()
            .map_or(0, |p| p.msg.len() + p.control.len() + p.head_len as usize)
    }

    /// Decodes from the front of `input`, advancing it past what was used,
    /// until one event is complete (`Ok(Some)`) or `input` is used up
    /// (`Ok(None)`, and `input` is empty). Call again while it returns
    /// events. After a close frame it returns `Ok(None)` and ignores (uses
    /// up) everything.
    ///
    /// # Errors
    ///
    /// A [`ProtocolError`]: close the connection with its code. The same
    /// error is returned by every later call.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Event>, ProtocolError> {
        match self.done {
            Some(Err(e)) => return Err(e),
            Some(Ok(())) => {
                *input = &[];
                return Ok(None);
            }
            None => {}
        }
        let out = self.step(input);
        match &out {
            Err(e) => {
                self.done = Some(Err(*e));
                self.partial = None;
            }
            Ok(Some(Event::Close(_))) => {
                self.done = Some(Ok(()));
                self.partial = None;
            }
            Ok(_) => {
                if self
                    .partial
                    .as_ref()
                    .is_some_and(|p| p.head_len == 0 && p.frame.is_none() && p.text.is_none())
                {
                    self.partial = None;
                }
            }
        }
        out
    }

    fn step(&mut self, input: &mut &[u8]) -> Result<Option<Event>, ProtocolError> {
        loop {
            if input.is_empty() {
                // A message or frame not started costs nothing; a frame
                // header with an empty payload is still handled below.
                let Some(p) = &self.partial else {
                    return Ok(None);
                };
                if p.frame.is_none_or(|f| f.left != 0) {
                    return Ok(None);
                }
            }
            let p = self.partial.get_or_insert_with(Box::default);
            let Some(frame) = p.frame else {
                if !read_header(p, input) {
                    continue;
                }
                let frame = parse_header(&p.head[..p.head_len as usize], self.role)?;
                p.head_len = 0;
                check_frame(p, &frame, self.limit as usize)?;
                p.frame = Some(frame);
                continue;
            };
            // Payload.
            let take = usize::try_from(frame.left)
                .unwrap_or(usize::MAX)
                .min(input.len());
            let (chunk, rest) = input.split_at(take);
            *input = rest;
            let dest = if frame.op.is_control() {
                &mut p.control
            } else {
                &mut p.msg
            };
            let start = dest.len();
            dest.extend_from_slice(chunk);
            if let Some(key) = frame.mask {
                unmask(&mut dest[start..], key, frame.read);
            }
            let f = p.frame.as_mut().map(|f| {
                f.left -= take as u64;
                f.read += take as u64;
                *f
            });
            if !frame.op.is_control() && p.text == Some(true) {
                check_utf8(p, f.is_some_and(|f| f.left == 0 && f.fin))?;
            }
            if f.is_some_and(|f| f.left > 0) {
                continue;
            }
            // The frame is complete.
            p.frame = None;
            match frame.op {
                OpCode::Ping => return Ok(Some(Event::Ping(std::mem::take(&mut p.control)))),
                OpCode::Pong => return Ok(Some(Event::Pong(std::mem::take(&mut p.control)))),
                OpCode::Close => return close_event(&std::mem::take(&mut p.control)).map(Some),
                _ if frame.fin => {
                    let msg = std::mem::take(&mut p.msg);
                    p.checked = 0;
                    return Ok(Some(match p.text.take() {
                        Some(true) => Event::Text(msg),
                        _ => Event::Binary(msg),
                    }));
                }
                _ => {}
            }
        }
    }
}

/// XORs `buf` with the mask `key`, `buf` starting `phase` bytes into the
/// payload: four bytes at a time, the key rotated to the phase.
fn unmask(buf: &mut [u8], key: [u8; 4], phase: u64) {
    let r = (phase % 4) as usize;
    let key = [key[r], key[(r + 1) % 4], key[(r + 2) % 4], key[(r + 3) % 4]];
    let k = u32::from_ne_bytes(key);
    let mut words = buf.chunks_exact_mut(4);
    for w in &mut words {
        let mut b = [0; 4];
        b.copy_from_slice(w);
        w.copy_from_slice(&(u32::from_ne_bytes(b) ^ k).to_ne_bytes());
    }
    for (b, m) in words.into_remainder().iter_mut().zip(key) {
        *b ^= m;
    }
}

/// Moves header bytes from `input` into `p.head`; true once the header is
/// complete.
fn read_header(p: &mut Partial, input: &mut &[u8]) -> bool {
    loop {
        let have = p.head_len as usize;
        let need = header_len(&p.head[..have]);
        if have >= need {
            return true;
        }
        let Some((&b, rest)) = input.split_first() else {
            return false;
        };
        p.head[have] = b;
        p.head_len += 1;
        *input = rest;
    }
}

/// The header's length as far as its first two bytes tell (2 until they
/// are there).
fn header_len(head: &[u8]) -> usize {
    let Some(&b1) = head.get(1) else {
        return 2;
    };
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

fn parse_header(head: &[u8], role: Role) -> Result<FrameState, ProtocolError> {
    let (b0, b1) = (head[0], head[1]);
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let op = OpCode::from_bits(b0 & 0x0F).ok_or(ProtocolError::BadOpcode(b0 & 0x0F))?;
    let masked = b1 & 0x80 != 0;
    match role {
        Role::Server if !masked => return Err(ProtocolError::Unmasked),
        Role::Client if masked => return Err(ProtocolError::Masked),
        _ => {}
    }
    let (len, at) = match b1 & 0x7F {
        126 => (u64::from(u16::from_be_bytes([head[2], head[3]])), 4),
        127 => {
            let mut b = [0; 8];
            b.copy_from_slice(&head[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if len >> 63 != 0 {
        return Err(ProtocolError::BadLength);
    }
    let mask = masked.then(|| [head[at], head[at + 1], head[at + 2], head[at + 3]]);
    Ok(FrameState {
        op,
        fin: b0 & 0x80 != 0,
        mask,
        left: len,
        read: 0,
    })
}

/// The checks a header allows before any of its payload is read.
fn check_frame(p: &mut Partial, f: &FrameState, limit: usize) -> Result<(), ProtocolError> {
    if f.op.is_control() {
        if !f.fin {
            return Err(ProtocolError::FragmentedControl);
        }
        if f.left > MAX_CONTROL as u64 {
            return Err(ProtocolError::ControlTooLong);
        }
        return Ok(());
    }
    match (f.op, p.text) {
        (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
        (OpCode::Text | OpCode::Binary, Some(_)) => return Err(ProtocolError::UnfinishedMessage),
        (OpCode::Text, None) => p.text = Some(true),
        (OpCode::Binary, None) => p.text = Some(false),
        _ => {}
    }
    if (p.msg.len() as u64).saturating_add(f.left) > limit as u64 {
        return Err(ProtocolError::TooBig);
    }
    Ok(())
}

/// Checks the text message's new bytes; `end`: the message is complete,
/// so an unfinished character at its end is an error too.
fn check_utf8(p: &mut Partial, end: bool) -> Result<(), ProtocolError> {
    match std::str::from_utf8(&p.msg[p.checked..]) {
        Ok(_) => p.checked = p.msg.len(),
        // A character cut at the end of what has arrived: keep it for later.
        Err(e) if e.error_len().is_none() && !end => p.checked += e.valid_up_to(),
        Err(_) => return Err(ProtocolError::InvalidUtf8),
    }
    Ok(())
}

fn close_event(payload: &[u8]) -> Result<Event, ProtocolError> {
    match payload {
        [] => Ok(Event::Close(None)),
        [_] => Err(ProtocolError::BadClose),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            // RFC 6455 7.4: codes an endpoint may send.
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(ProtocolError::BadClose);
            }
            let reason =
                std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok(Event::Close(Some(CloseFrame {
                code,
                reason: reason.to_string(),
            })))
        }
    }
}

/// Writes a frame header: FIN as given, no reserved bits, the mask key if
/// any (the payload is then the caller's to mask).
fn put_header(out: &mut BytesMut, op: OpCode, fin: bool, len: usize, mask: Option<[u8; 4]>) {
    out.put_u8(if fin { 0x80 } else { 0 } | op.bits());
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.put_u8(m | len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.put_u8(m | 126);
        out.put_u16(n);
    } else {
        out.put_u8(m | 127);
        out.put_u64(len as u64);
    }
    if let Some(key) = mask {
        out.put_slice(&key);
    }
}

/// Appends an unmasked (server) frame to `out`.
pub fn server_frame(out: &mut BytesMut, op: OpCode, fin: bool, payload: &[u8]) {
    out.reserve(MAX_HEADER + payload.len());
    put_header(out, op, fin, payload.len(), None);
    out.put_slice(payload);
}

/// The WebSocket message that carries one switchboard frame to a client,
/// built once so every WebSocket subscriber can share the same [`Bytes`]:
/// text when `frame` is valid UTF-8, binary otherwise (protocol.md section 8).
pub fn message_for_frame(frame: &[u8]) -> Bytes {
    let op = if std::str::from_utf8(frame).is_ok() {
        OpCode::Text
    } else {
        OpCode::Binary
    };
    let mut out = BytesMut::with_capacity(MAX_HEADER + frame.len());
    server_frame(&mut out, op, true, frame);
    out.freeze()
}

/// Appends a server close frame with `code` and `reason`, the reason cut
/// to 123 bytes (at a character boundary) so the payload fits a control
/// frame.
pub fn close(out: &mut BytesMut, code: u16, reason: &str) {
    let reason = truncate(reason, MAX_CONTROL - 2);
    let mut payload = [0u8; MAX_CONTROL];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
    server_frame(out, OpCode::Close, true, &payload[..2 + reason.len()]);
}

/// Appends a server ping; a payload over 125 bytes is cut to 125.
pub fn ping(out: &mut BytesMut, payload: &[u8]) {
    server_frame(
        out,
        OpCode::Ping,
        true,
        &payload[..payload.len().min(MAX_CONTROL)],
    );
}

/// Appends a server pong (the answer to a ping, with its payload); a
/// payload over 125 bytes is cut to 125.
pub fn pong(out: &mut BytesMut, payload: &[u8]) {
    server_frame(
        out,
        OpCode::Pong,
        true,
        &payload[..payload.len().min(MAX_CONTROL)],
    );
}

/// Appends a masked (client) frame to `out` with the mask key `mask`
/// (random for each frame in real use, RFC 6455 5.3; given here so tests
/// are deterministic).
pub fn client_frame(out: &mut BytesMut, op: OpCode, fin: bool, payload: &[u8], mask: [u8; 4]) {
    out.reserve(MAX_HEADER + payload.len());
    put_header(out, op, fin, payload.len(), Some(mask));
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// Appends a masked client close frame (reason cut as in [`close`]).
pub fn client_close(out: &mut BytesMut, code: u16, reason: &str, mask: [u8; 4]) {
    let reason = truncate(reason, MAX_CONTROL - 2);
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    client_frame(out, OpCode::Close, true, &payload, mask);
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
