//! The WebSocket transport to the key service: one persistent connection, reconnected with
//! back-off. Key lookups are JSON requests with a correlation id
//! (`{"type": "key_request", "id": 7, "channel": 77}`), answered by
//! `{"type": "key", "id": 7, "key": "..."}` or `{"type": "key", "id": 7, "error": "..."}`;
//! events go out as `{"type": "event", ...}` messages.

use std::io;
use std::time::{Duration, Instant};

use super::conn::Conn;
use tungstenite::handshake::client::ClientHandshake;
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where the link is.
pub enum Link {
    /// Waiting to (re)connect at this instant.
    Down(Instant),
    /// TCP connect in progress.
    Connecting(Conn),
    /// WebSocket handshake in progress.
    Handshaking(MidHandshake<ClientHandshake<Conn>>),
    Open(Box<WebSocket<Conn>>),
}

/// The link and its back-off.
pub struct WsLink {
    pub link: Link,
    pub url: String,
    backoff: Duration,
}

/// What reading the link produced.
pub enum Incoming {
    Key {
        id: u64,
        key: Result<String, String>,
    },
}

impl WsLink {
    pub fn new(url: String, now: Instant) -> WsLink {
        WsLink {
            link: Link::Down(now),
            url,
            backoff: Duration::from_secs(1),
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.link, Link::Open(_))
    }

    /// When the link wants to be retried, if down.
    pub fn retry_at(&self) -> Option<Instant> {
        match self.link {
            Link::Down(t) => Some(t),
            _ => None,
        }
    }

    /// The link failed: wait, then try again.
    pub fn fail(&mut self, now: Instant) {
        self.link = Link::Down(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// The TCP connection is writable: start (or continue) the handshake.
    pub fn advance(&mut self, now: Instant) {
        let link = std::mem::replace(&mut self.link, Link::Down(now));
        self.link = match link {
            Link::Connecting(mut stream) => match stream.connected() {
                Ok(false) => Link::Connecting(stream),
                Ok(true) => {
                    let config = WebSocketConfig::default()
                        .max_message_size(Some(64 * 1024))
                        .max_frame_size(Some(64 * 1024));
                    match tungstenite::client::client_with_config(
                        self.url.as_str(),
                        stream,
                        Some(config),
                    ) {
                        Ok((ws, _)) => Link::Open(Box::new(ws)),
                        Err(HandshakeError::Interrupted(mid)) => Link::Handshaking(mid),
                        Err(HandshakeError::Failure(e)) => {
                            log::warn!("key service {}: {e}", self.url);
                            self.fail(now);
                            return;
                        }
                    }
                }
                Err(e) => {
                    log::warn!("key service {}: {e}", self.url);
                    self.fail(now);
                    return;
                }
            },
            Link::Handshaking(mid) => match mid.handshake() {
                Ok((ws, _)) => Link::Open(Box::new(ws)),
                Err(HandshakeError::Interrupted(mid)) => Link::Handshaking(mid),
                Err(HandshakeError::Failure(e)) => {
                    log::warn!("key service {}: {e}", self.url);
                    self.fail(now);
                    return;
                }
            },
            other => other,
        };
        if self.is_open() {
            log::info!("key service {}: connected", self.url);
            self.backoff = Duration::from_secs(1);
        }
    }

    /// Sends a text message; `false` if the link is not open or broke.
    pub fn send(&mut self, text: String, now: Instant) -> bool {
        let Link::Open(ws) = &mut self.link else {
            return false;
        };
        match ws.send(Message::text(text)) {
            Ok(()) => true,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) => {
                log::warn!("key service {}: {e}", self.url);
                self.fail(now);
                false
            }
        }
    }

    /// Reads what arrived (bounded per call).
    pub fn read(&mut self, now: Instant) -> Vec<Incoming> {
        let mut out = Vec::new();
        for _ in 0..256 {
            let Link::Open(ws) = &mut self.link else {
                break;
            };
            match ws.read() {
                Ok(Message::Text(t)) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                    if v["type"] == "key" {
                        if let Some(id) = v["id"].as_u64() {
                            let key = match (v["key"].as_str(), v["error"].as_str()) {
                                (Some(k), _) if !k.is_empty() => Ok(k.to_owned()),
                                (_, Some(e)) => Err(e.to_owned()),
                                _ => Err("an answer without a key".to_owned()),
                            };
                            out.push(Incoming::Key { id, key });
                        }
                    }
                }
                Ok(Message::Close(_)) => {
                    self.fail(now);
                    break;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("key service {}: {e}", self.url);
                    self.fail(now);
                    break;
                }
            }
        }
        if let Link::Open(ws) = &mut self.link {
            match ws.flush() {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => self.fail(now),
            }
        }
        out
    }

    /// The socket of the link, for (re)registration.
    pub fn stream_mut(&mut self) -> Option<&mut Conn> {
        match &mut self.link {
            Link::Connecting(s) => Some(s),
            Link::Handshaking(mid) => Some(mid.get_mut().get_mut()),
            Link::Open(ws) => Some(ws.get_mut()),
            Link::Down(_) => None,
        }
    }
}
