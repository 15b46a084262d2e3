//! WebSocket between the client's session and its byte stream (TCP, or
//! TLS over TCP), for `ws://` and `wss://` addresses. Sans-IO: bytes from
//! the layer below in, bytes for it out.
//!
//! - The upgrade request is the first output; the server's response head
//!   (at most [`crate::ws::MAX_HEAD`] bytes kept) is checked by
//!   [`ClientHandshake::read_response`], and nothing of the session is
//!   sent before it is accepted.
//! - Each switchboard frame the session sends becomes one WebSocket
//!   message, masked with a fresh random key: text when the frame is valid
//!   UTF-8, binary otherwise (protocol.md section 8).
//! - Each text or binary message received is handed to the session as
//!   stream bytes, and must hold whole frames (the contract says one);
//!   a ping is answered with a pong; a close is answered with a close and
//!   ends the connection; a protocol error sends a close with the RFC's
//!   code and ends the connection with [`ClientError::Protocol`].

use std::io;

use bytes::BytesMut;

use super::ClientError;
use super::session::{ClientSession, MAX_SERVER_PAYLOAD};
use crate::ws::{
    self, ClientHandshake, CloseFrame, Decoder, Event, HandshakeError, MAX_HEAD, Masks, OpCode,
    Role,
};

/// The largest message accepted from a server: the client's payload cap
/// plus one frame header, as the server allows its clients (protocol.md
/// section 8).
const MAX_MESSAGE: usize = MAX_SERVER_PAYLOAD + 4096;

/// One connection's WebSocket layer.
#[derive(Debug)]
pub(super) struct WsLink {
    /// Until the server's 101: the handshake, and the response so far.
    handshake: Option<(ClientHandshake, Vec<u8>)>,
    decoder: Decoder,
    /// For the layer below: the upgrade request, then masked frames.
    out: BytesMut,
    masks: Masks,
    /// A close frame is queued (or sent): nothing may follow it.
    close_sent: bool,
}

fn random_failed() -> ClientError {
    ClientError::Io(io::Error::other("the system's random source failed"))
}

impl WsLink {
    /// A link whose output starts with the upgrade request for `path` on
    /// `host` (the `Host` value).
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] for a host or path that cannot be sent;
    /// [`ClientError::Io`] when the system's random source fails.
    pub(super) fn new(host: &str, path: &str) -> Result<Self, ClientError> {
        let masks = Masks::new();
        let handshake = masks.handshake().map_err(|_| random_failed())?;
        let request = handshake
            .request(host, path)
            .map_err(|e| ClientError::Config(format!("WebSocket upgrade to {host}{path}: {e}")))?;
        Ok(Self {
            handshake: Some((handshake, Vec::new())),
            decoder: Decoder::new(Role::Client, MAX_MESSAGE),
            out: BytesMut::from(&request[..]),
            masks,
            close_sent: false,
        })
    }

    /// Whether the upgrade is done (the session may speak).
    pub(super) fn is_open(&self) -> bool {
        self.handshake.is_none()
    }

    /// Whether anything waits to be written: queued bytes, or session frames
    /// that [`WsLink::pull`] will turn into messages.
    pub(super) fn wants_write(&self, session: &ClientSession) -> bool {
        !self.out.is_empty() || (self.is_open() && !self.close_sent && session.wants_write())
    }

    /// The bytes for the layer below; advance it by what was written.
    pub(super) fn out(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Turns every frame the session has to send into one masked message.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`] when the system's random source fails.
    pub(super) fn pull(&mut self, session: &mut ClientSession) -> Result<(), ClientError> {
        if !self.is_open() || self.close_sent {
            return Ok(());
        }
        loop {
            let frame = session.transmit_frame();
            if frame.is_empty() {
                return Ok(());
            }
            let op = if std::str::from_utf8(frame).is_ok() {
                OpCode::Text
            } else {
                OpCode::Binary
            };
            let mask = self.masks.next_mask().map_err(|_| random_failed())?;
            ws::client_frame(&mut self.out, op, true, frame, mask);
            let n = frame.len();
            session.advance_transmit(n);
        }
    }

    /// Takes bytes from the layer below: the response head, then frames
    /// (message payloads go to `session`). `Ok(Some(close))`: the server
    /// closed the WebSocket (its close frame, `None` without a code); a close
    /// is queued in answer, and the connection is over.
    ///
    /// # Errors
    ///
    /// [`ClientError::Protocol`] for a refused or broken upgrade, a
    /// WebSocket protocol error (a close with its code is queued first), or
    /// what the session finds wrong in the frames.
    pub(super) fn handle_input(
        &mut self,
        mut data: &[u8],
        session: &mut ClientSession,
    ) -> Result<Option<Option<CloseFrame>>, ClientError> {
        if let Some((handshake, head)) = &mut self.handshake {
            // Never more than MAX_HEAD kept: past it, the response is refused.
            let take = data.len().min(MAX_HEAD.saturating_sub(head.len()));
            head.extend_from_slice(&data[..take]);
            data = &data[take..];
            let response = match handshake.read_response(head) {
                Ok(None) => return Ok(None),
                Ok(Some(r)) => r,
                Err(e) => return Err(upgrade_error(&e)),
            };
            let early = head.split_off(response.used);
            self.handshake = None;
            if let Some(close) = self.frames(&early, session)? {
                return Ok(Some(close));
            }
        }
        self.frames(data, session)
    }

    fn frames(
        &mut self,
        mut data: &[u8],
        session: &mut ClientSession,
    ) -> Result<Option<Option<CloseFrame>>, ClientError> {
        loop {
            match self.decoder.decode(&mut data) {
                Ok(None) => return Ok(None),
                Ok(Some(Event::Text(m) | Event::Binary(m))) => {
                    session.handle_input(&m)?;
                    if session.partial_input() != 0 {
                        return Err(ClientError::Protocol(
                            "a WebSocket message from the server ends inside a frame \
                             (each message must carry whole frames)"
                                .into(),
                        ));
                    }
                }
                Ok(Some(Event::Ping(payload))) => {
                    if !self.close_sent {
                        let mask = self.masks.next_mask().map_err(|_| random_failed())?;
                        ws::client_frame(&mut self.out, OpCode::Pong, true, &payload, mask);
                    }
                }
                Ok(Some(Event::Pong(_))) => {}
                Ok(Some(Event::Close(frame))) => {
                    // Echo its code (RFC 6455 5.5.1).
                    match &frame {
                        Some(f) => self.close(f.code, "")?,
                        None => {
                            if !self.close_sent {
                                let mask = self.masks.next_mask().map_err(|_| random_failed())?;
                                ws::client_frame(&mut self.out, OpCode::Close, true, &[], mask);
                                self.close_sent = true;
                            }
                        }
                    }
                    return Ok(Some(frame));
                }
                Err(e) => {
                    let code = e.close_code();
                    self.close(code, &e.to_string())?;
                    return Err(ClientError::Protocol(format!(
                        "WebSocket: {e} (closed with {code})"
                    )));
                }
            }
        }
    }

    /// Queues a close frame with `code` (once; nothing is sent after it).
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`] when the system's random source fails.
    pub(super) fn close(&mut self, code: u16, reason: &str) -> Result<(), ClientError> {
        if self.close_sent || !self.is_open() {
            return Ok(());
        }
        let mask = self.masks.next_mask().map_err(|_| random_failed())?;
        ws::client_close(&mut self.out, code, reason, mask);
        self.close_sent = true;
        Ok(())
    }

    /// The stream below ended (without a close frame).
    ///
    /// # Errors
    ///
    /// [`ClientError::Protocol`] when it ended during the upgrade or inside
    /// a WebSocket frame or message, or the session's own verdict.
    pub(super) fn handle_eof(&mut self, session: &mut ClientSession) -> Result<(), ClientError> {
        if self.handshake.is_some() {
            return Err(ClientError::Protocol(
                "the server closed the connection during the WebSocket upgrade \
                 (is it a WebSocket listener?)"
                    .into(),
            ));
        }
        if !self.decoder.is_idle() {
            return Err(ClientError::Protocol(
                "the server closed the connection inside a WebSocket message".into(),
            ));
        }
        session.handle_eof()
    }
}

fn upgrade_error(e: &HandshakeError) -> ClientError {
    let hint = match e {
        HandshakeError::Malformed => " (is the address a WebSocket listener?)",
        _ => "",
    };
    ClientError::Protocol(format!("WebSocket upgrade failed: {e}{hint}"))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::client::session::{Event as SessionEvent, Reply, Request};
    use crate::ws::{Head, Request as HttpRequest, read_request};

    /// A link and the server end's decoder, upgraded (response fed byte by
    /// byte).
    fn open_link(session: &mut ClientSession) -> (WsLink, Decoder) {
        let mut link = WsLink::new("localhost:7422", "/chat").unwrap();
        let request = link.out().split().freeze();
        let Ok(Some(Head {
            used,
            request: HttpRequest::Upgrade(upgrade),
        })) = read_request(&request)
        else {
            panic!("not an upgrade");
        };
        assert_eq!(used, request.len());
        assert!(upgrade.subprotocol);
        assert_eq!(upgrade.path, "/chat");
        let response = upgrade.response();
        for b in &response {
            assert!(!link.is_open());
            assert_eq!(link.handle_input(&[*b], session).unwrap(), None);
        }
        assert!(link.is_open());
        (link, Decoder::new(Role::Server, 1 << 20))
    }

    /// Everything the link queued, as the server decodes it.
    fn server_reads(link: &mut WsLink, d: &mut Decoder) -> Vec<Event> {
        let bytes = link.out().split();
        let mut input = &bytes[..];
        let mut events = Vec::new();
        while let Some(e) = d.decode(&mut input).unwrap() {
            events.push(e);
        }
        assert!(input.is_empty());
        events
    }

    fn feed_bytewise(
        link: &mut WsLink,
        session: &mut ClientSession,
        bytes: &[u8],
    ) -> Result<Option<Option<CloseFrame>>, ClientError> {
        for (i, b) in bytes.iter().enumerate() {
            if let Some(end) = link.handle_input(&[*b], session)? {
                assert_eq!(i, bytes.len() - 1, "ended early");
                return Ok(Some(end));
            }
        }
        Ok(None)
    }

    #[test]
    fn frames_travel_one_per_message_both_ways() {
        let mut session = ClientSession::new();
        // Requested before the upgrade: held until it is done.
        session
            .send_request(&Request::User("alice".into()))
            .unwrap();
        let mut link = WsLink::new("h:1", "/").unwrap();
        link.pull(&mut session).unwrap();
        assert!(link.out().starts_with(b"GET / HTTP/1.1\r\n"));
        assert!(
            link.out().ends_with(b"\r\n\r\n"),
            "nothing after the request"
        );

        let (mut link, mut d) = open_link(&mut session);
        assert!(link.wants_write(&session));
        session
            .send_request(&Request::Publish {
                groups: vec![1],
                payload: bytes::Bytes::from_static(&[0xff, 0]),
            })
            .unwrap();
        link.pull(&mut session).unwrap();
        assert!(!session.wants_write());
        assert_eq!(
            server_reads(&mut link, &mut d),
            vec![
                Event::Text(b"USER 0 alice\n".to_vec()),
                Event::Binary(b"PUBLISH 2 1\n\xff\0".to_vec()),
            ]
        );

        // Server messages, byte by byte, with a ping between them.
        let mut input = BytesMut::new();
        input.extend_from_slice(&ws::message_for_frame(b"ACK 9\nlogged in"));
        ws::ping(&mut input, b"hb");
        input.extend_from_slice(&ws::message_for_frame(b"PING 0\n"));
        input.extend_from_slice(&ws::message_for_frame(b"ACK 9\npublished"));
        assert_eq!(
            feed_bytewise(&mut link, &mut session, &input).unwrap(),
            None
        );
        let events: Vec<_> = std::iter::from_fn(|| session.poll_event()).collect();
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(
            &events[0],
            SessionEvent::Reply { reply: Reply::Ack(t), .. } if t == "logged in"
        ));
        // The WebSocket ping got a pong; the switchboard PING its PONG frame.
        link.pull(&mut session).unwrap();
        assert_eq!(
            server_reads(&mut link, &mut d),
            vec![
                Event::Pong(b"hb".to_vec()),
                Event::Text(b"PONG 0\n".to_vec())
            ]
        );
    }

    #[test]
    fn masks_differ_from_message_to_message() {
        let mut session = ClientSession::new();
        let (mut link, _) = open_link(&mut session);
        for _ in 0..3 {
            session.send_request(&Request::Ping).unwrap();
        }
        link.pull(&mut session).unwrap();
        let out = link.out().split();
        // Three 7-byte payloads, each with a 2-byte header and a 4-byte key.
        assert_eq!(out.len(), 3 * 13);
        let keys: Vec<&[u8]> = out.chunks(13).map(|m| &m[2..6]).collect();
        assert!(out.chunks(13).all(|m| m[0] == 0x81 && m[1] == 0x80 | 7));
        assert!(keys[0] != keys[1] || keys[1] != keys[2], "{keys:?}");
    }

    #[test]
    fn a_close_is_answered_and_ends_the_connection() {
        let mut session = ClientSession::new();
        let (mut link, mut d) = open_link(&mut session);
        let mut input = BytesMut::new();
        ws::close(&mut input, 1001, "shutting down");
        let end = feed_bytewise(&mut link, &mut session, &input).unwrap();
        assert_eq!(
            end,
            Some(Some(CloseFrame {
                code: 1001,
                reason: "shutting down".into()
            }))
        );
        session.send_request(&Request::Ping).unwrap();
        link.pull(&mut session).unwrap();
        // The echo, and nothing after it.
        assert_eq!(
            server_reads(&mut link, &mut d),
            vec![Event::Close(Some(CloseFrame {
                code: 1001,
                reason: String::new()
            }))]
        );
        // A close without a code is answered with one without a code.
        let (mut link, mut d) = open_link(&mut session);
        let mut input = BytesMut::new();
        ws::server_frame(&mut input, OpCode::Close, true, b"");
        assert_eq!(link.handle_input(&input, &mut session).unwrap(), Some(None));
        assert_eq!(server_reads(&mut link, &mut d), vec![Event::Close(None)]);
        // Our own close (on quit) goes once.
        let (mut link, mut d) = open_link(&mut session);
        link.close(1000, "").unwrap();
        link.close(1000, "").unwrap();
        assert_eq!(
            server_reads(&mut link, &mut d),
            vec![Event::Close(Some(CloseFrame {
                code: 1000,
                reason: String::new()
            }))]
        );
    }

    #[test]
    fn protocol_errors_close_with_the_rfc_code() {
        let mut session = ClientSession::new();
        // A masked frame from a server: 1002.
        let (mut link, mut d) = open_link(&mut session);
        let mut input = BytesMut::new();
        ws::client_frame(&mut input, OpCode::Text, true, b"PING 0\n", [1, 2, 3, 4]);
        let err = link.handle_input(&input, &mut session).unwrap_err();
        assert!(err.to_string().contains("masked server frame"), "{err}");
        assert_eq!(
            server_reads(&mut link, &mut d),
            vec![Event::Close(Some(CloseFrame {
                code: 1002,
                reason: "masked server frame".into()
            }))]
        );
        // Invalid UTF-8 in a text message: 1007.
        let (mut link, mut d) = open_link(&mut session);
        let mut input = BytesMut::new();
        ws::server_frame(&mut input, OpCode::Text, true, b"ACK 1\n\xff");
        assert!(link.handle_input(&input, &mut session).is_err());
        assert!(matches!(
            server_reads(&mut link, &mut d).as_slice(),
            [Event::Close(Some(CloseFrame { code: 1007, .. }))]
        ));
        // A message cut inside a switchboard frame breaks the contract.
        let mut session = ClientSession::new();
        session.send_request(&Request::Ping).unwrap();
        let (mut link, _) = open_link(&mut session);
        let input = ws::message_for_frame(b"ACK 9\nlogg");
        let err = link.handle_input(&input, &mut session).unwrap_err();
        assert!(err.to_string().contains("inside a frame"), "{err}");
    }

    #[test]
    fn a_refused_or_broken_upgrade_is_a_clear_error() {
        let mut session = ClientSession::new();
        let mut link = WsLink::new("h:1", "/").unwrap();
        let response = crate::ws::Refusal::Subprotocol.response();
        let err = link.handle_input(&response, &mut session).unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol error: WebSocket upgrade failed: HTTP 400 Bad Request: \
             subprotocol switchboard.v1 not offered"
        );
        // Talking to a plain switchboard port.
        let mut link = WsLink::new("h:1", "/").unwrap();
        let err = link
            .handle_input(b"ERR 9 bad-frame\nnot a frame\n", &mut session)
            .unwrap_err();
        assert!(err.to_string().contains("WebSocket listener"), "{err}");
        // The answer for another key.
        let mut link = WsLink::new("h:1", "/").unwrap();
        let other = ClientHandshake::with_nonce([3; 16])
            .request("h:1", "/")
            .unwrap();
        let Ok(Some(Head {
            request: HttpRequest::Upgrade(u),
            ..
        })) = read_request(&other)
        else {
            panic!()
        };
        let err = link.handle_input(&u.response(), &mut session).unwrap_err();
        assert!(err.to_string().contains("Sec-WebSocket-Accept"), "{err}");
        // The stream ends during the upgrade, or inside a message.
        let mut link = WsLink::new("h:1", "/").unwrap();
        link.handle_input(b"HTTP/1.1 101 ", &mut session).unwrap();
        assert!(link.handle_eof(&mut session).is_err());
        let (mut link, _) = open_link(&mut session);
        assert!(link.handle_eof(&mut session).is_ok());
        link.handle_input(&[0x81, 0x05, b'P'], &mut session)
            .unwrap();
        let err = link.handle_eof(&mut session).unwrap_err();
        assert!(
            err.to_string().contains("inside a WebSocket message"),
            "{err}"
        );
        // A response head that never ends is cut at 8 KiB.
        let mut link = WsLink::new("h:1", "/").unwrap();
        let mut junk = b"HTTP/1.1 101 Switching Protocols\r\nX: ".to_vec();
        junk.resize(20_000, b'a');
        let err = link.handle_input(&junk, &mut session).unwrap_err();
        assert!(err.to_string().contains("8 KiB"), "{err}");
    }

    /// A server that accepts the connection but never answers the upgrade
    /// (or trickles it) is given up on at the connect timeout.
    #[test]
    fn an_unanswered_upgrade_times_out() {
        use std::io::{Read, Write};
        use std::time::{Duration, Instant};

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0; 1024];
            let n = sock.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /slow HTTP/1.1\r\n"));
            // A response head, one byte at a time, never finished.
            for b in b"HTTP/1.1 101 Switching Protocols\r\nX-Slow: " {
                if sock.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Until the client hangs up.
            let _ = sock.read(&mut buf);
        });
        let mut config = crate::ClientConfig::new(format!("ws://127.0.0.1:{port}/slow"), "alice");
        config.connect_timeout = Duration::from_millis(500);
        let start = Instant::now();
        match crate::Client::connect(config) {
            Err(ClientError::Timeout) => {}
            other => panic!("{other:?}"),
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(3),
            "{took:?}"
        );
        server.join().unwrap();
    }

    /// The whole client (its thread, mio, the driver) over a real socket
    /// against tungstenite's server end: a WebSocket implementation no one
    /// here wrote.
    mod against_tungstenite {
        use std::net::TcpListener;
        use std::thread;
        use std::time::Duration;

        use tungstenite::Message;
        use tungstenite::handshake::server::{ErrorResponse, Request, Response};
        use tungstenite::http::HeaderValue;
        use tungstenite::protocol::CloseFrame as TCloseFrame;
        use tungstenite::protocol::frame::coding::CloseCode;

        use crate::{Client, ClientConfig, Push};

        #[test]
        // The callback's signature is tungstenite's.
        #[allow(clippy::result_large_err)]
        fn client_chats_and_sees_the_close() {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = thread::spawn(move || {
                let (sock, _) = listener.accept().unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                let select =
                    |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
                        assert_eq!(req.uri().path(), "/sb");
                        let offered = req.headers().get("sec-websocket-protocol").cloned();
                        assert_eq!(offered, Some(HeaderValue::from_static("switchboard.v1")));
                        assert!(req.headers().get("host").is_some());
                        resp.headers_mut().insert(
                            "sec-websocket-protocol",
                            HeaderValue::from_static("switchboard.v1"),
                        );
                        Ok(resp)
                    };
                let mut ws = tungstenite::accept_hdr(sock, select).unwrap();
                assert_eq!(ws.read().unwrap(), Message::text("USER 0 alice\n"));
                ws.send(Message::text("ACK 9\nlogged in")).unwrap();
                assert_eq!(ws.read().unwrap(), Message::text("SUBSCRIBE 0 1\n"));
                ws.send(Message::text("ACK 10\nsubscribed")).unwrap();
                assert_eq!(
                    ws.read().unwrap(),
                    Message::binary(&b"PUBLISH 2 1\n\xff\0"[..])
                );
                ws.send(Message::text("ACK 9\npublished")).unwrap();
                ws.send(Message::binary(&b"PUBLISHED 2 bob 1\n\xff\0"[..]))
                    .unwrap();
                ws.send(Message::Ping(b"hb".to_vec().into())).unwrap();
                assert_eq!(ws.read().unwrap(), Message::Pong(b"hb".to_vec().into()));
                ws.close(Some(TCloseFrame {
                    code: CloseCode::Away,
                    reason: "bye".into(),
                }))
                .unwrap();
                // Our close is answered: tungstenite then reports the end.
                loop {
                    match ws.read() {
                        Ok(_) => {}
                        Err(tungstenite::Error::ConnectionClosed) => break,
                        Err(e) => panic!("after the close: {e}"),
                    }
                }
            });
            let mut config = ClientConfig::new(format!("ws://127.0.0.1:{port}/sb"), "alice");
            config.connect_timeout = Duration::from_secs(10);
            let client = Client::connect(config).unwrap();
            client.subscribe(&[1]).unwrap();
            assert_eq!(client.publish(&[1], &[0xff, 0]).unwrap(), "published");
            let timeout = Some(Duration::from_secs(10));
            assert_eq!(
                client.recv(timeout).unwrap(),
                Push::Published {
                    sender: "bob".into(),
                    groups: vec![1],
                    payload: bytes::Bytes::from_static(&[0xff, 0]),
                }
            );
            assert_eq!(client.recv(timeout).unwrap(), Push::Disconnected);
            server.join().unwrap();
        }
    }
}
