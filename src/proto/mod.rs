//! The wire protocol, sans-IO: bytes in, frames out, and back.
//!
//! Nothing here touches a socket, a clock or a TLS library. [`decoder`] turns a
//! byte buffer into borrowed [`Frame`]s (or says how many more bytes it needs),
//! [`frame`] encodes frames into `BytesMut`, and [`command`] gives a frame its
//! typed meaning (and writes a typed command back as a frame, for clients).
//! Every limit of protocol.md section 1 is enforced here, before
//! any length a peer declares is trusted.

pub mod command;
pub mod decoder;
pub mod frame;

pub use command::{Command, CommandError, GroupId, GroupList, OwnedCommand};
pub use decoder::{Decoded, decode};
pub use frame::{Frame, Verb};
