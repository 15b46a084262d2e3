//! Error types, and how each maps onto the wire.
//!
//! Two kinds of error live here. [`ErrorCode`] is the closed vocabulary of
//! `ERR` replies in the contract (protocol.md section 7): every refusal the
//! server sends names one of them. [`FrameError`] is why the frame decoder gave
//! up on a byte stream; it is `Copy` and allocation-free so the decoder can
//! return it from a hot path, and [`FrameError::code`] maps it onto the
//! `ERR` code the contract names (the same shape as rustls's
//! `InvalidMessage -> AlertDescription`).
//!
//! Errors that stop the server from starting are in [`StartError`](crate::StartError).

use std::fmt;

/// The `ERR` codes of protocol.md section 7, in the order the contract lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The header could not be parsed; the connection is closed.
    BadFrame,
    /// LEN is over the payload limit; the connection is closed.
    TooLarge,
    /// A well-formed frame of a type the server does not know.
    UnknownCommand,
    /// Wrong argument count or form.
    BadArgs,
    /// The command needs a logged-in session.
    AuthRequired,
    /// Login refused; the connection is closed.
    AuthFailed,
    /// A group number that is not registered.
    UnknownGroup,
    /// `SEND` to a user with no session.
    NoSuchUser,
    /// Not allowed for this session.
    Forbidden,
    /// A peer endpoint did not answer its probe.
    Unreachable,
    /// The connection's unsent output passed its limit; it is closed.
    SlowConsumer,
    /// The server is at its connection limit; the connection is closed.
    ServerFull,
    /// Login or keep-alive deadline passed; the connection is closed.
    Timeout,
    /// The server is stopping; the connection is closed.
    ShuttingDown,
    /// Something went wrong inside the server.
    Internal,
    /// A per-session or per-user limit (protocol.md 7a); nothing of the
    /// command took effect.
    Limit,
    /// A bounded queue is full (e.g. password checks); try again later.
    Busy,
    /// A request found nobody to answer it.
    NoResponders,
}

impl ErrorCode {
    /// The token sent on the wire, e.g. `bad-frame`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadFrame => "bad-frame",
            Self::TooLarge => "too-large",
            Self::UnknownCommand => "unknown-command",
            Self::BadArgs => "bad-args",
            Self::AuthRequired => "auth-required",
            Self::AuthFailed => "auth-failed",
            Self::UnknownGroup => "unknown-group",
            Self::NoSuchUser => "no-such-user",
            Self::Forbidden => "forbidden",
            Self::Unreachable => "unreachable",
            Self::SlowConsumer => "slow-consumer",
            Self::ServerFull => "server-full",
            Self::Timeout => "timeout",
            Self::ShuttingDown => "shutting-down",
            Self::Internal => "internal",
            Self::Limit => "limit",
            Self::Busy => "busy",
            Self::NoResponders => "no-responders",
        }
    }

    /// Parses a wire token back into a code (used by clients).
    pub fn from_token(token: &[u8]) -> Option<Self> {
        const ALL: [ErrorCode; 18] = [
            ErrorCode::BadFrame,
            ErrorCode::TooLarge,
            ErrorCode::UnknownCommand,
            ErrorCode::BadArgs,
            ErrorCode::AuthRequired,
            ErrorCode::AuthFailed,
            ErrorCode::UnknownGroup,
            ErrorCode::NoSuchUser,
            ErrorCode::Forbidden,
            ErrorCode::Unreachable,
            ErrorCode::SlowConsumer,
            ErrorCode::ServerFull,
            ErrorCode::Timeout,
            ErrorCode::ShuttingDown,
            ErrorCode::Internal,
            ErrorCode::Limit,
            ErrorCode::Busy,
            ErrorCode::NoResponders,
        ];
        ALL.into_iter().find(|c| c.as_str().as_bytes() == token)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the frame decoder rejected its input.
///
/// Every variant is fatal for the connection: once a header cannot be parsed the
/// stream cannot be resynchronised, so the server sends the mapped `ERR` and
/// closes (protocol.md section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// TYPE is missing, is not 1 to 16 ASCII letters, or is not followed by a space.
    BadType,
    /// LEN is missing or is not 1 to 10 decimal digits.
    BadLength,
    /// An argument holds a byte outside 0x21..=0x7E, is longer than 255 bytes,
    /// or the line ends in a space.
    BadArgument,
    /// More than 64 arguments.
    TooManyArguments,
    /// A CR that is not right before the LF.
    StrayCarriageReturn,
    /// No LF within the first 4,096 bytes of a header.
    HeaderTooLong,
    /// A header that does not parse (any of the errors above) right after a
    /// frame with a payload: most likely that frame's LEN was not the
    /// payload's length, and the header is the payload's tail (or the next
    /// frame's header cut into). See [`FrameError::after_payload`].
    AfterPayload {
        /// The payload length the previous frame declared.
        previous_len: u64,
    },
    /// LEN is over the payload limit.
    TooLarge {
        /// The declared payload length.
        len: u64,
        /// The server's payload limit.
        limit: usize,
    },
}

impl FrameError {
    /// The `ERR` code the contract names for this error.
    pub const fn code(self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::BadFrame,
        }
    }

    /// The error to report for `self` found right after a frame whose
    /// payload was `previous_len` bytes (more than 0): a header that does
    /// not parse there is [`FrameError::AfterPayload`], which points at that
    /// frame's LEN rather than at this header's TYPE. `TooLarge` stays as it
    /// is (its own code, `too-large`).
    #[must_use]
    pub const fn after_payload(self, previous_len: u64) -> Self {
        match self {
            Self::TooLarge { .. } | Self::AfterPayload { .. } => self,
            _ if previous_len == 0 => self,
            _ => Self::AfterPayload { previous_len },
        }
    }

    /// A sentence for people, sent as the text of the `ERR` reply.
    pub const fn message(self) -> &'static str {
        match self {
            Self::BadType => "bad frame: TYPE must be 1 to 16 letters followed by a space",
            Self::BadLength => "bad frame: LEN must be 1 to 10 decimal digits",
            Self::BadArgument => {
                "bad frame: arguments are 1 to 255 printable ASCII bytes separated by spaces"
            }
            Self::TooManyArguments => "bad frame: more than 64 arguments",
            Self::StrayCarriageReturn => "bad frame: CR is only allowed right before LF",
            Self::HeaderTooLong => "bad frame: header line longer than 4096 bytes",
            Self::AfterPayload { .. } => {
                "bad frame right after a payload: the previous frame's LEN was probably wrong \
                 (LEN counts the payload's bytes exactly)"
            }
            Self::TooLarge { .. } => "payload larger than the server's limit",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, limit } => {
                write!(f, "payload of {len} bytes is over the limit of {limit}")
            }
            Self::AfterPayload { previous_len } => write!(
                f,
                "bad frame right after a payload of {previous_len} bytes: the previous \
                 frame's LEN was probably wrong (LEN counts the payload's bytes exactly)"
            ),
            other => f.write_str(other.message()),
        }
    }
}

impl std::error::Error for FrameError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for token in [
            "bad-frame",
            "too-large",
            "unknown-command",
            "bad-args",
            "auth-required",
            "auth-failed",
            "unknown-group",
            "no-such-user",
            "forbidden",
            "unreachable",
            "slow-consumer",
            "server-full",
            "timeout",
            "shutting-down",
            "internal",
        ] {
            let code = ErrorCode::from_token(token.as_bytes()).expect("known token");
            assert_eq!(code.as_str(), token);
        }
        assert_eq!(ErrorCode::from_token(b"nope"), None);
    }

    #[test]
    fn frame_errors_map_to_contract_codes() {
        assert_eq!(FrameError::HeaderTooLong.code(), ErrorCode::BadFrame);
        let e = FrameError::TooLarge { len: 10, limit: 5 };
        assert_eq!(e.code(), ErrorCode::TooLarge);
        let after = FrameError::BadType.after_payload(3);
        assert_eq!(after, FrameError::AfterPayload { previous_len: 3 });
        assert_eq!(after.code(), ErrorCode::BadFrame);
        assert_eq!(e.after_payload(3), e, "too-large keeps its code");
        assert_eq!(FrameError::BadType.after_payload(0), FrameError::BadType);
        assert_eq!(
            after.to_string(),
            "bad frame right after a payload of 3 bytes: the previous frame's LEN was \
             probably wrong (LEN counts the payload's bytes exactly)"
        );
    }
}
