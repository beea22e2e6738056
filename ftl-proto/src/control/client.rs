//! The client side of the control channel: what OBS's embedded ftl-sdk does, as a state machine.
//!
//! It drives the project's own FTL client and lets tests run client and server sessions against
//! each other without sockets. It is as strict as the server about what it accepts, so a test
//! failing here points at the server's bytes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::control::auth;
use crate::control::command::Command;
use crate::control::line::LineFramer;
use crate::control::metadata::Metadata;
use crate::control::status::StatusCode;
use crate::types::{ChannelId, StreamKey};
use crate::Error;

/// What a client session needs to connect, and its timers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub channel: ChannelId,
    pub key: StreamKey,
    pub metadata: Metadata,
    /// How long to wait for each handshake reply (the reference client: 5 s).
    pub reply_timeout: Duration,
    /// How often to send `PING` once streaming (the reference client: 5 s).
    pub ping_interval: Duration,
    /// Give up when no `201` arrived for this long (the reference client: 30 s).
    pub keepalive_timeout: Duration,
}

impl ClientConfig {
    /// The reference client's timers for a channel, key and metadata.
    pub fn new(channel: ChannelId, key: StreamKey, metadata: Metadata) -> Self {
        ClientConfig {
            channel,
            key,
            metadata,
            reply_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(30),
        }
    }
}

/// What a client session tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The handshake completed: send media to this UDP port of the server.
    Connected { port: u16 },
    /// The session ended; flush [`ClientSession::poll_transmit`], then close the connection.
    Closed { reason: ClientCloseReason },
}

/// Why a client session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCloseReason {
    /// [`ClientSession::disconnect`] was called; `DISCONNECT` was queued.
    Disconnected,
    /// The server closed the connection.
    PeerClosed,
    /// The server refused or ended the stream ([`Error::Refused`]), answered something
    /// unparsable, or did not answer in time.
    Error(Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitNonce,
    AwaitConnectOk,
    AwaitPort,
    Streaming,
    Closed,
}

/// The client side of one FTL control connection.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    state: State,
    framer: LineFramer,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
    reply_deadline: Option<Instant>,
    next_ping: Option<Instant>,
    last_pong: Instant,
}

/// The reference client reads each reply into a 512-byte buffer.
const MAX_REPLY: usize = 512;

impl ClientSession {
    /// Starts a session on a freshly connected socket: `HMAC` is queued at once.
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        let mut s = ClientSession {
            reply_deadline: Some(now + config.reply_timeout),
            config,
            state: State::AwaitNonce,
            framer: LineFramer::new(MAX_REPLY, 4 * MAX_REPLY),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            next_ping: None,
            last_pong: now,
        };
        s.send(Command::Hmac { channel: None });
        s
    }

    /// Feeds bytes received from the server.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) -> Result<(), Error> {
        if self.state == State::Closed {
            return Err(Error::SessionClosed);
        }
        if let Err(e) = self.framer.push(bytes) {
            return self.fail(e);
        }
        loop {
            let line = match self.framer.next_line() {
                Ok(Some(l)) => l,
                Ok(None) => return Ok(()),
                Err(e) => return self.fail(e),
            };
            if let Err(e) = self.handle_reply(&line, now) {
                return self.fail(e);
            }
            if self.state == State::Closed {
                return Ok(());
            }
        }
    }

    /// The server closed the connection.
    pub fn handle_eof(&mut self) {
        if self.state != State::Closed {
            self.close(ClientCloseReason::PeerClosed);
        }
    }

    /// Ends the stream politely: queues `DISCONNECT`.
    pub fn disconnect(&mut self) {
        if self.state != State::Closed {
            self.send(Command::Disconnect);
            self.close(ClientCloseReason::Disconnected);
        }
    }

    /// Next bytes to write to the connection.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// Next event for the caller.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`ClientSession::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::Streaming => {
                let keepalive = self.last_pong + self.config.keepalive_timeout;
                Some(self.next_ping.map_or(keepalive, |p| p.min(keepalive)))
            }
            _ => self.reply_deadline,
        }
    }

    /// Sends due pings; ends the session when the server stopped answering.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Closed => {}
            State::Streaming => {
                if now >= self.last_pong + self.config.keepalive_timeout {
                    let _ = self.fail(Error::KeepaliveTimeout);
                } else if self.next_ping.is_some_and(|p| p <= now) {
                    self.send(Command::Ping {
                        channel: Some(self.config.channel),
                    });
                    self.next_ping = Some(now + self.config.ping_interval);
                }
            }
            _ => {
                if self.reply_deadline.is_some_and(|d| d <= now) {
                    let _ = self.fail(Error::ReplyTimeout);
                }
            }
        }
    }

    /// Whether the session ended.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    fn handle_reply(&mut self, line: &str, now: Instant) -> Result<(), Error> {
        let (status, text) = parse_reply(line)?;
        if !status.is_success() {
            return Err(Error::Refused {
                status,
                reason: text.to_owned(),
            });
        }
        match (self.state, status) {
            (State::AwaitNonce, StatusCode::OK) => {
                // Like the reference client: an odd length or non-hex nonce breaks the handshake.
                let nonce = hex::decode(text).map_err(|_| Error::BadReply(line.to_owned()))?;
                if nonce.is_empty() {
                    return Err(Error::BadReply(line.to_owned()));
                }
                let digest = auth::digest(&self.config.key, &nonce);
                self.send(Command::Connect {
                    channel: self.config.channel,
                    digest,
                });
                self.state = State::AwaitConnectOk;
                self.reply_deadline = Some(now + self.config.reply_timeout);
            }
            (State::AwaitConnectOk, StatusCode::OK) => {
                for l in self.config.metadata.to_lines() {
                    let mut bytes = l.into_bytes();
                    bytes.extend_from_slice(b"\r\n\r\n");
                    self.transmit.push_back(bytes);
                }
                self.send(Command::End);
                self.state = State::AwaitPort;
                self.reply_deadline = Some(now + self.config.reply_timeout);
            }
            (State::AwaitPort, StatusCode::OK) => {
                let port =
                    parse_port_reply(text).ok_or_else(|| Error::BadReply(line.to_owned()))?;
                self.state = State::Streaming;
                self.reply_deadline = None;
                self.last_pong = now;
                self.next_ping = Some(now + self.config.ping_interval);
                self.events.push_back(ClientEvent::Connected { port });
            }
            (State::Streaming, StatusCode::PING_OK) => self.last_pong = now,
            _ => return Err(Error::BadReply(line.to_owned())),
        }
        Ok(())
    }

    fn send(&mut self, cmd: Command<'_>) {
        self.transmit.push_back(cmd.to_bytes());
    }

    fn fail(&mut self, err: Error) -> Result<(), Error> {
        self.close(ClientCloseReason::Error(err.clone()));
        Err(err)
    }

    fn close(&mut self, reason: ClientCloseReason) {
        self.state = State::Closed;
        self.reply_deadline = None;
        self.next_ping = None;
        self.events.push_back(ClientEvent::Closed { reason });
    }
}

/// Splits `<3-digit code>[ <text>]`.
fn parse_reply(line: &str) -> Result<(StatusCode, &str), Error> {
    let bad = || Error::BadReply(line.chars().take(64).collect());
    let code = line.get(..3).ok_or_else(bad)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let status = StatusCode(code.parse().map_err(|_| bad())?);
    let text = match line.get(3..) {
        Some("") | None => "",
        Some(rest) => rest.strip_prefix(' ').ok_or_else(bad)?,
    };
    Ok((status, text))
}

/// The reference client's parse: skip to the first `.`, then ` Use UDP port %d`.
fn parse_port_reply(text: &str) -> Option<u16> {
    let (_, after) = text.split_once('.')?;
    let digits = after.strip_prefix(" Use UDP port ")?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let port: u16 = digits.get(..end)?.parse().ok()?;
    (port != 0).then_some(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_parsing() {
        assert_eq!(parse_reply("200"), Ok((StatusCode::OK, "")));
        assert_eq!(parse_reply("201 pong"), Ok((StatusCode::PING_OK, "pong")));
        assert!(parse_reply("20").is_err());
        assert!(parse_reply("2000").is_err());
        assert!(parse_reply("abc def").is_err());
    }

    #[test]
    fn port_reply_parsing_matches_the_reference_client() {
        assert_eq!(parse_port_reply("hi. Use UDP port 9000"), Some(9000));
        assert_eq!(parse_port_reply(". Use UDP port 65535"), Some(65535));
        assert_eq!(parse_port_reply("hi. Use UDP port 0"), None);
        assert_eq!(parse_port_reply("hi. Use UDP port 70000"), None);
        assert_eq!(parse_port_reply("hi Use UDP port 9000"), None);
        assert_eq!(parse_port_reply("a.b. Use UDP port 9000"), None);
    }
}
