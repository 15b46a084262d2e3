//! WebSocket (RFC 6455), sans-IO: the server's opening handshake and the
//! frame codec of both ends. Nothing here sees a socket or a clock: the
//! handshake takes the bytes received so far and gives the response bytes,
//! the decoder takes bytes in any split and gives [`Event`]s, the encoders
//! write frames into a [`bytes::BytesMut`] (or build one shared
//! [`bytes::Bytes`], [`message_for_frame`]).
//!
//! The rules of protocol.md section 8 this module carries:
//!
//! - The upgrade is a `GET` with `Upgrade: websocket` on any path. When the
//!   client offers `switchboard.v1` ([`SUBPROTOCOL`]) it is selected; a
//!   client that offers no subprotocol (a browser's `new WebSocket(url)`)
//!   is accepted without one; a client that offers only others is refused
//!   with 400 ([`Refusal::Subprotocol`]). A `GET` without `Upgrade:
//!   websocket` is [`Request::Plain`], for the caller's page.
//! - One WebSocket message carries one switchboard frame each way; the
//!   server sends text when the frame is valid UTF-8, binary otherwise
//!   ([`message_for_frame`]). Server frames are never masked, so one
//!   encoded message can go to every subscriber.
//! - Client frames must be masked; reserved bits, unknown opcodes and
//!   broken fragmentation close with 1002, invalid UTF-8 in a text message
//!   (or in a close reason) with 1007, a message over the decoder's limit
//!   with 1009 ([`ProtocolError::close_code`]).
//!
//! The transport that runs this in the loop, over plain TCP or TLS, is
//! `transport::ws`; the connection table wraps each queued frame in a
//! message with [`message_for_frame`].
//!
//! The client's end of the handshake is [`ClientHandshake`], its mask keys
//! come from [`Masks`] (the client library's `ws://` and `wss://`).

mod client;
mod frame;
mod handshake;
#[cfg(test)]
mod tests;

pub use client::{ClientHandshake, HandshakeError, Masks, Response};
pub use frame::{
    CloseFrame, Decoder, Event, MAX_CONTROL, OpCode, ProtocolError, Role, client_close,
    client_frame, close, close_code, message_for_frame, ping, pong, server_frame,
};
pub use handshake::{
    Head, MAX_HEAD, MAX_HEADERS, Refusal, Request, Upgrade, accept_key, read_request,
};

/// The subprotocol of switchboard frames over WebSocket.
pub const SUBPROTOCOL: &str = "switchboard.v1";
