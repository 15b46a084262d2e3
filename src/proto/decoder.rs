//! The incremental frame decoder.
//!
//! [`decode`] looks at the bytes received so far and either returns one whole
//! frame (borrowing the buffer), says that more bytes are needed, or rejects the
//! stream. It keeps no state of its own: the caller keeps unconsumed bytes and
//! calls again when more arrive, as mini-redis's `parse_frame` does, but every
//! declared size is capped *before* the decoder waits for it:
//!
//! - a header line must end within 4,096 bytes, so a peer cannot make the server
//!   buffer an endless line;
//! - LEN is checked against the payload limit as soon as the header is complete,
//!   so a peer cannot make the server wait for (or reserve) a huge payload;
//! - the first bytes of a header are checked before its LF arrives, so binary
//!   garbage (or a TLS ClientHello on the plain port) is refused at once.
//!
//! No input makes it panic: all indexing is checked, and LEN (at most ten
//! digits) is parsed into a `u64`, which cannot overflow.

use super::frame::{
    Frame, MAX_ARG_LEN, MAX_ARGS, MAX_HEADER_LEN, MAX_LEN_DIGITS, MAX_TYPE_LEN, Verb,
};
use crate::error::FrameError;

/// How many bytes of an unfinished header line are checked before its LF arrives.
/// Bounded so that a header trickled one byte at a time costs O(1) per call.
const EARLY_CHECK_LEN: usize = 64;

/// What [`decode`] found at the start of the buffer.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A whole frame. `consumed` counts its bytes and any blank lines before it.
    Frame {
        /// The frame, borrowing the buffer.
        frame: Frame<'a>,
        /// Bytes to drop from the front of the buffer.
        consumed: usize,
    },
    /// Not enough bytes yet.
    Incomplete {
        /// Blank lines at the front that may already be dropped.
        skip: usize,
        /// Once the header is complete: the whole frame's length, counted from
        /// `skip`. The caller may reserve exactly this much (it is capped).
        frame_len: Option<usize>,
    },
}

/// Decodes the frame at the front of `buf`.
///
/// `max_payload` is the server's payload limit.
///
/// # Errors
///
/// Any [`FrameError`]: the stream cannot be resynchronised, so the caller
/// replies with [`FrameError::code`] and closes the connection.
pub fn decode(buf: &[u8], max_payload: usize) -> Result<Decoded<'_>, FrameError> {
    let skip = blank_prefix(buf);
    let rest = buf.get(skip..).unwrap_or_default();
    let window = &rest[..rest.len().min(MAX_HEADER_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        let prefix = &rest[..rest.len().min(EARLY_CHECK_LEN)];
        let prefix = prefix.strip_suffix(b"\r").unwrap_or(prefix);
        parse_line(prefix, false)?;
        if rest.len() >= MAX_HEADER_LEN {
            return Err(FrameError::HeaderTooLong);
        }
        return Ok(Decoded::Incomplete {
            skip,
            frame_len: None,
        });
    };
    let line = &window[..lf];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let header = parse_line(line, true)?.ok_or(FrameError::BadLength)?;
    if header.payload_len > max_payload as u64 {
        return Err(FrameError::TooLarge {
            len: header.payload_len,
            limit: max_payload,
        });
    }
    // Both terms are capped (4 KiB and the payload limit): no overflow.
    let payload_len = header.payload_len as usize;
    let frame_len = lf + 1 + payload_len;
    let Some(payload) = rest.get(lf + 1..frame_len) else {
        return Ok(Decoded::Incomplete {
            skip,
            frame_len: Some(frame_len),
        });
    };
    let args = line.get(header.args_start..).unwrap_or_default();
    Ok(Decoded::Frame {
        frame: Frame {
            verb: header.verb,
            args,
            arg_count: header.arg_count,
            payload,
        },
        consumed: skip + frame_len,
    })
}

/// Length of the run of empty lines (LF or CR LF) at the front of `buf`.
fn blank_prefix(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\n', ..]) => i += 1,
            Some([b'\r', b'\n', ..]) => i += 2,
            _ => return i,
        }
    }
}

struct Header {
    verb: Verb,
    args_start: usize,
    arg_count: u8,
    payload_len: u64,
}

/// Validates a header line (without its LF and optional CR).
///
/// With `complete == false` the line is a prefix of a header still arriving:
/// every byte present is checked, and running out of bytes is not an error
/// (the result is then `Ok(None)`).
fn parse_line(line: &[u8], complete: bool) -> Result<Option<Header>, FrameError> {
    let at = |i: usize| line.get(i).copied();
    // TYPE
    let mut i = 0;
    while at(i).is_some_and(|b| b.is_ascii_alphabetic()) {
        i += 1;
    }
    if i > MAX_TYPE_LEN {
        return Err(FrameError::BadType);
    }
    match at(i) {
        None if !complete => return Ok(None),
        None if i == 0 => return Err(FrameError::BadType),
        None => return Err(FrameError::BadLength),
        Some(b' ') if i > 0 => {}
        Some(b'\r') => return Err(FrameError::StrayCarriageReturn),
        Some(_) => return Err(FrameError::BadType),
    }
    let verb = Verb::new(line.get(..i).unwrap_or_default()).ok_or(FrameError::BadType)?;
    // LEN
    while at(i) == Some(b' ') {
        i += 1;
    }
    let len_start = i;
    let mut payload_len: u64 = 0;
    while let Some(d) = at(i).filter(u8::is_ascii_digit) {
        if i - len_start >= MAX_LEN_DIGITS {
            return Err(FrameError::BadLength);
        }
        payload_len = payload_len * 10 + u64::from(d - b'0');
        i += 1;
    }
    match at(i) {
        None if !complete => return Ok(None),
        _ if i == len_start => return Err(FrameError::BadLength),
        None | Some(b' ') => {}
        Some(b'\r') => return Err(FrameError::StrayCarriageReturn),
        Some(_) => return Err(FrameError::BadLength),
    }
    // ARGs: each is preceded by one or more spaces; the line may not end in one.
    let args_start = i;
    let mut arg_count = 0usize;
    while at(i).is_some() {
        while at(i) == Some(b' ') {
            i += 1;
        }
        let start = i;
        while let Some(b) = at(i) {
            match b {
                0x21..=0x7e => i += 1,
                b' ' => break,
                b'\r' => return Err(FrameError::StrayCarriageReturn),
                _ => return Err(FrameError::BadArgument),
            }
        }
        let len = i - start;
        if len > MAX_ARG_LEN {
            return Err(FrameError::BadArgument);
        }
        if len == 0 {
            // Spaces with nothing after them.
            return if complete {
                Err(FrameError::BadArgument)
            } else {
                Ok(None)
            };
        }
        arg_count += 1;
        if arg_count > MAX_ARGS {
            return Err(FrameError::TooManyArguments);
        }
    }
    if !complete {
        return Ok(None);
    }
    Ok(Some(Header {
        verb,
        args_start,
        // At most MAX_ARGS (64), checked above.
        arg_count: arg_count as u8,
        payload_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    /// A decoded frame as owned (verb, args, payload).
    type Owned = (String, Vec<String>, Vec<u8>);

    /// Decodes every frame in `input`, as (verb, args, payload) triples.
    fn all(input: &[u8]) -> Result<Vec<Owned>, FrameError> {
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            match decode(rest, MAX)? {
                Decoded::Frame { frame, consumed } => {
                    let args: Vec<String> = frame
                        .args()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect();
                    out.push((
                        frame.verb().as_str().to_owned(),
                        args,
                        frame.payload().to_vec(),
                    ));
                    assert_eq!(frame.arg_count(), out.last().map_or(0, |f| f.1.len()));
                    rest = &rest[consumed..];
                }
                Decoded::Incomplete { skip, .. } => {
                    assert_eq!(skip, rest.len(), "left over: {:?}", &rest[skip..]);
                    return Ok(out);
                }
            }
        }
    }

    fn one(input: &[u8]) -> Owned {
        let mut v = all(input).expect("valid");
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0)
    }

    #[test]
    fn contract_examples() {
        assert_eq!(
            one(b"USER 0 alice\n"),
            ("USER".into(), vec!["alice".into()], vec![])
        );
        assert_eq!(
            one(b"PUBLISH 5 1 3\nhello"),
            (
                "PUBLISH".into(),
                vec!["1".into(), "3".into()],
                b"hello".to_vec()
            )
        );
        assert_eq!(
            one(b"MESSAGE 12 bob\nHello world!"),
            (
                "MESSAGE".into(),
                vec!["bob".into()],
                b"Hello world!".to_vec()
            )
        );
    }

    #[test]
    fn case_crlf_blank_lines_and_spaces() {
        assert_eq!(one(b"\n\r\n\nping 0\r\n").0, "PING");
        assert_eq!(one(b"SubScribe   0   1    2\n").1, vec!["1", "2"]);
        // The human way: header, Enter, payload, Enter.
        let v = all(b"PUBLISH 5 1\nhello\nPING 0\n").expect("valid");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].2, b"hello");
    }

    #[test]
    fn binary_payload_is_opaque() {
        let payload: Vec<u8> = (0..=255u8).collect();
        let mut input = b"PUBLISH 256 1\n".to_vec();
        input.extend_from_slice(&payload);
        assert_eq!(one(&input).2, payload);
    }

    #[test]
    fn bad_headers() {
        let cases: &[(&[u8], FrameError)] = &[
            (b"1USER 0\n", FrameError::BadType),
            (b" USER 0\n", FrameError::BadType),
            (b"ABCDEFGHIJKLMNOPQ 0\n", FrameError::BadType),
            (b"USER\n", FrameError::BadLength),
            (b"USER -1\n", FrameError::BadLength),
            (b"USER +1\n", FrameError::BadLength),
            (b"USER 12345678901\n", FrameError::BadLength),
            (b"USER x\n", FrameError::BadLength),
            (b"USER 0 \n", FrameError::BadArgument),
            (b"USER 0 a\x01b\n", FrameError::BadArgument),
            (b"USER 0 a\x7fb\n", FrameError::BadArgument),
            (b"USER 0 a\tb\n", FrameError::BadArgument),
            (b"USER 0 a\rb\n", FrameError::StrayCarriageReturn),
            (b"USER 0 a\r\r\n", FrameError::StrayCarriageReturn),
            (b"US\x00ER 0\n", FrameError::BadType),
            (b"\x16\x03\x01\x02\x00", FrameError::BadType),
        ];
        for (input, want) in cases {
            assert_eq!(decode(input, MAX).err(), Some(*want), "{input:?}");
        }
    }

    #[test]
    fn argument_limits() {
        let ok = format!("X 0 {}\n", "a".repeat(255));
        assert!(all(ok.as_bytes()).is_ok());
        let long = format!("X 0 {}\n", "a".repeat(256));
        assert_eq!(
            decode(long.as_bytes(), MAX).err(),
            Some(FrameError::BadArgument)
        );
        let sixty_four = format!("X 0{}\n", " a".repeat(64));
        assert_eq!(one(sixty_four.as_bytes()).1.len(), 64);
        let sixty_five = format!("X 0{}\n", " a".repeat(65));
        assert_eq!(
            decode(sixty_five.as_bytes(), MAX).err(),
            Some(FrameError::TooManyArguments)
        );
        assert_eq!(one(b"ABCDEFGHIJKLMNOP 0\n").0, "ABCDEFGHIJKLMNOP");
        assert_eq!(one(b"X 0000000000\n").2.len(), 0);
    }

    #[test]
    fn header_length_limit() {
        // 4,095 bytes + LF is the longest header.
        let mut ok = b"X 0".to_vec();
        while ok.len() < MAX_HEADER_LEN - 1 {
            let room = MAX_HEADER_LEN - 1 - ok.len();
            let n = room.saturating_sub(1).min(200);
            if n == 0 {
                ok.push(b' ');
                ok.pop();
                break;
            }
            ok.push(b' ');
            ok.extend(std::iter::repeat_n(b'a', n));
        }
        assert_eq!(ok.len(), MAX_HEADER_LEN - 1);
        ok.push(b'\n');
        assert!(all(&ok).is_ok());
        let mut long = b"X 0 ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEADER_LEN));
        assert_eq!(decode(&long, MAX).err(), Some(FrameError::HeaderTooLong));
    }

    #[test]
    fn payload_limit_checked_before_payload_arrives() {
        assert_eq!(
            decode(b"PUBLISH 1048577 1\n", MAX).err(),
            Some(FrameError::TooLarge {
                len: 1_048_577,
                limit: MAX
            })
        );
        assert_eq!(
            decode(b"PUBLISH 9999999999 1\n", MAX)
                .err()
                .map(|e| e.code()),
            Some(crate::error::ErrorCode::TooLarge)
        );
        match decode(b"PUBLISH 1048576 1\nabc", MAX) {
            Ok(Decoded::Incomplete {
                skip: 0,
                frame_len: Some(n),
            }) => assert_eq!(n, 18 + 1_048_576),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_refused_before_its_lf() {
        assert_eq!(decode(b"GET 1 /x", MAX).err(), None);
        assert_eq!(
            decode(b"GET / HTTP/1.1", MAX).err(),
            Some(FrameError::BadLength)
        );
        assert_eq!(decode(b"\x16\x03", MAX).err(), Some(FrameError::BadType));
        assert_eq!(
            decode(b"HELLO 0 \x00", MAX).err(),
            Some(FrameError::BadArgument)
        );
        // A CR at the end of a partial line may be the CR of CR LF.
        assert!(decode(b"HELLO 0\r", MAX).is_ok());
    }

    /// Every split point of a stream of many frames decodes to the same frames.
    #[test]
    fn every_split_position() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"USER 0 alice\r\n\nPUBLISH 5 1 2 3\nhello");
        stream.extend_from_slice(b"SEND 3 bob\n\x00\n\xffping 0\n\r\nQUIT 0\n");
        let want = all(&stream).expect("valid");
        assert_eq!(want.len(), 5);
        for cut in 0..=stream.len() {
            let got = feed_in_chunks(&stream, &[cut]);
            assert_eq!(got, want, "cut at {cut}");
        }
        // One byte at a time.
        let cuts: Vec<usize> = (0..stream.len()).collect();
        assert_eq!(feed_in_chunks(&stream, &cuts), want);
    }

    /// Feeds `stream` split at `cuts` through a buffer, as a connection would.
    fn feed_in_chunks(stream: &[u8], cuts: &[usize]) -> Vec<Owned> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut prev = 0;
        for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
            buf.extend_from_slice(&stream[prev..cut]);
            prev = cut;
            loop {
                match decode(&buf, MAX).expect("valid") {
                    Decoded::Frame { frame, consumed } => {
                        out.push((
                            frame.verb().as_str().to_owned(),
                            frame
                                .args()
                                .map(|a| String::from_utf8_lossy(a).into_owned())
                                .collect(),
                            frame.payload().to_vec(),
                        ));
                        buf.drain(..consumed);
                    }
                    Decoded::Incomplete { skip, .. } => {
                        buf.drain(..skip);
                        break;
                    }
                }
            }
        }
        out
    }

    /// A small deterministic PRNG (xorshift64*), so the randomized test is reproducible.
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// Arbitrary bytes, and arbitrary mutations of valid frames, never panic and
    /// never claim more bytes than they were given.
    #[test]
    fn randomized_input_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds: &[&[u8]] = &[
            b"PUBLISH 5 1 2\nhello",
            b"USER 0 alice\r\n",
            b"\r\n\nX 0000000001 a b c\nz",
        ];
        for round in 0..200_000 {
            let len = (rng.next() % 80) as usize;
            let mut input: Vec<u8> = if round % 2 == 0 {
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                let mut v = seeds[round % seeds.len()].to_vec();
                for _ in 0..=(rng.next() % 4) {
                    let at = (rng.next() as usize) % v.len();
                    v[at] = rng.next() as u8;
                }
                v
            };
            if round % 7 == 0 {
                input.truncate((rng.next() as usize) % (input.len() + 1));
            }
            match decode(&input, 64) {
                Ok(Decoded::Frame { consumed, frame }) => {
                    assert!(consumed <= input.len());
                    assert!(frame.payload().len() <= 64);
                    assert!(frame.arg_count() <= MAX_ARGS);
                }
                Ok(Decoded::Incomplete { skip, frame_len }) => {
                    assert!(skip <= input.len());
                    assert!(frame_len.is_none_or(|n| n <= MAX_HEADER_LEN + 64));
                }
                Err(_) => {}
            }
        }
    }
}
