//! The server side of the control channel: one [`ServerSession`] per TCP connection.
//!
//! ```text
//! AwaitHmac --HMAC--> AwaitConnect --CONNECT--> AwaitKey --provide_key--> Metadata
//!     --attributes, "."--> AwaitPort --assign_port--> Streaming --PING...--> (DISCONNECT) Closed
//! ```
//! The two decisions that need the outside world leave as events ([`ServerEvent::KeyRequested`],
//! [`ServerEvent::MetadataReady`]) and come back as calls; until then received lines stay
//! buffered (bounded) and the decision deadline runs, so a slow key service can never hold a
//! client past its own 5 s reply timeout without an answer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use log::debug;

use crate::control::auth::{self, Nonce};
use crate::control::command::Command;
use crate::control::line::LineFramer;
use crate::control::metadata::{Metadata, MetadataBuilder};
use crate::control::status::StatusCode;
use crate::types::{ChannelId, StreamKey};
use crate::Error;

/// Limits and deadlines of a server session. Every one is a bound on what a peer can make the
/// server hold or wait for.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Longest accepted line, terminator excluded.
    pub max_line: usize,
    /// Most bytes held while lines wait for a decision (pipelined input).
    pub max_buffered: usize,
    /// Most metadata attributes, known and unknown.
    pub max_attributes: usize,
    /// From connection to the first complete line. Clients send `HMAC` at once; a connection
    /// that holds its slot without a word is cut well before the whole handshake deadline.
    pub hello_timeout: Duration,
    /// From connection to the port reply.
    pub handshake_timeout: Duration,
    /// For the caller to answer a key lookup or port request. Below the client's 5 s reply
    /// timeout, so the client hears a refusal instead of timing out.
    pub decision_timeout: Duration,
    /// After the handshake, how long the client may stay silent (it pings every 5 s).
    pub keepalive_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_line: 1024,
            max_buffered: 16 * 1024,
            max_attributes: 64,
            hello_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(10),
            decision_timeout: Duration::from_secs(4),
            keepalive_timeout: Duration::from_secs(30),
        }
    }
}

/// What a server session tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// The client sent `CONNECT`: look the channel's key up, then call
    /// [`ServerSession::provide_key`] or [`ServerSession::refuse`].
    KeyRequested { channel: ChannelId },
    /// The digest matched the key: the client is who it claims to be.
    Authenticated { channel: ChannelId },
    /// The metadata is complete and valid: allocate a media port, then call
    /// [`ServerSession::assign_port`] or [`ServerSession::refuse`].
    MetadataReady {
        channel: ChannelId,
        metadata: Metadata,
    },
    /// The port reply was sent: media may flow.
    Streaming { channel: ChannelId, port: u16 },
    /// The session ended; flush [`ServerSession::poll_transmit`], then close the connection.
    Closed { reason: CloseReason },
}

/// Why a server session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent `DISCONNECT`.
    Disconnect,
    /// The TCP connection closed without `DISCONNECT`.
    PeerClosed,
    /// The client broke the protocol, failed authentication or a deadline passed; the status
    /// line for it was queued.
    Error(Error),
    /// The caller refused or ended the session with this status (channel busy, no port,
    /// replaced by a newer session, shutdown).
    Refused(StatusCode),
}

#[derive(Debug)]
enum State {
    AwaitHmac,
    AwaitConnect {
        hmac_channel: Option<ChannelId>,
    },
    AwaitKey {
        channel: ChannelId,
        digest: [u8; auth::DIGEST_LEN],
    },
    Metadata {
        channel: ChannelId,
        builder: MetadataBuilder,
    },
    AwaitPort {
        channel: ChannelId,
    },
    Streaming {
        channel: ChannelId,
    },
    Closed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitHmac => "awaiting HMAC",
            State::AwaitConnect { .. } => "awaiting CONNECT",
            State::AwaitKey { .. } => "looking up the key",
            State::Metadata { .. } => "reading metadata",
            State::AwaitPort { .. } => "assigning a port",
            State::Streaming { .. } => "streaming",
            State::Closed => "closed",
        }
    }

    fn channel(&self) -> Option<ChannelId> {
        match self {
            State::AwaitKey { channel, .. }
            | State::Metadata { channel, .. }
            | State::AwaitPort { channel }
            | State::Streaming { channel } => Some(*channel),
            _ => None,
        }
    }
}

/// The server side of one FTL control connection.
#[derive(Debug)]
pub struct ServerSession {
    config: ServerConfig,
    nonce: Nonce,
    state: State,
    framer: LineFramer,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<ServerEvent>,
    hello_deadline: Option<Instant>,
    handshake_deadline: Option<Instant>,
    decision_deadline: Option<Instant>,
    keepalive_deadline: Option<Instant>,
}

impl ServerSession {
    /// A session for a connection accepted at `now`. `nonce` must come from a cryptographic RNG.
    pub fn new(config: ServerConfig, nonce: Nonce, now: Instant) -> Self {
        ServerSession {
            framer: LineFramer::new(config.max_line, config.max_buffered),
            hello_deadline: Some(now + config.hello_timeout),
            handshake_deadline: Some(now + config.handshake_timeout),
            config,
            nonce,
            state: State::AwaitHmac,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            decision_deadline: None,
            keepalive_deadline: None,
        }
    }

    /// Feeds bytes received on the connection. An `Err` means the session just ended because
    /// of them (the status line and a [`ServerEvent::Closed`] are queued) or had already ended.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::SessionClosed);
        }
        if let Err(e) = self.framer.push(bytes) {
            return self.fail(e);
        }
        if matches!(self.state, State::Streaming { .. }) {
            self.keepalive_deadline = Some(now + self.config.keepalive_timeout);
        }
        self.process(now)
    }

    /// The connection reached end of file without `DISCONNECT`.
    pub fn handle_eof(&mut self) {
        if !self.is_closed() {
            self.close(CloseReason::PeerClosed);
        }
    }

    /// Answers [`ServerEvent::KeyRequested`] with the channel's secret. The digest is checked
    /// in constant time; a mismatch ends the session with `405`.
    pub fn provide_key(&mut self, key: &StreamKey, now: Instant) -> Result<(), Error> {
        let State::AwaitKey { channel, digest } = &self.state else {
            return Err(Error::InvalidState(
                "provide_key without a pending key request",
            ));
        };
        let channel = *channel;
        if !auth::verify(key, &self.nonce, digest) {
            return self.fail(Error::DigestMismatch { channel });
        }
        self.decision_deadline = None;
        self.reply(StatusCode::OK.reply_line(""));
        self.events
            .push_back(ServerEvent::Authenticated { channel });
        self.state = State::Metadata {
            channel,
            builder: MetadataBuilder::default(),
        };
        self.process(now)
    }

    /// Answers [`ServerEvent::KeyRequested`]: the channel does not exist (`401`).
    pub fn reject_unknown_channel(&mut self) -> Result<(), Error> {
        let State::AwaitKey { channel, .. } = self.state else {
            return Err(Error::InvalidState("reject without a pending key request"));
        };
        let _ = self.fail(Error::UnknownChannel { channel });
        Ok(())
    }

    /// Answers [`ServerEvent::MetadataReady`] with the media port the client must send to.
    pub fn assign_port(&mut self, port: u16, now: Instant) -> Result<(), Error> {
        let State::AwaitPort { channel } = self.state else {
            return Err(Error::InvalidState("assign_port without pending metadata"));
        };
        // The client skips to the first '.', then parses " Use UDP port %d": no '.' before it.
        self.reply(format!("200 hi. Use UDP port {port}\n").into_bytes());
        self.decision_deadline = None;
        self.handshake_deadline = None;
        self.keepalive_deadline = Some(now + self.config.keepalive_timeout);
        self.state = State::Streaming { channel };
        self.events
            .push_back(ServerEvent::Streaming { channel, port });
        self.process(now)
    }

    /// Ends the session from the server's side in any state: sends `<status> <reason>` and
    /// closes (`406` channel busy, `500` no port, `410` replaced by a newer session, ...).
    pub fn refuse(&mut self, status: StatusCode, reason: &str) {
        if self.is_closed() {
            return;
        }
        self.reply(status.reply_line(reason));
        self.close(CloseReason::Refused(status));
    }

    /// Next bytes to write to the connection.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// Next event for the caller.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`ServerSession::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.hello_deadline,
            self.handshake_deadline,
            self.decision_deadline,
            self.keepalive_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Ends the session if one of its deadlines has passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        let passed = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        let err = if passed(self.decision_deadline) {
            Error::DecisionTimeout
        } else if passed(self.hello_deadline) {
            Error::HelloTimeout
        } else if passed(self.handshake_deadline) {
            Error::HandshakeTimeout
        } else if passed(self.keepalive_deadline) {
            Error::KeepaliveTimeout
        } else {
            return;
        };
        let _ = self.fail(err);
    }

    /// Whether the session ended; the caller closes the connection once transmits are flushed.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether the handshake completed and the client may send media.
    pub fn is_streaming(&self) -> bool {
        matches!(self.state, State::Streaming { .. })
    }

    /// The channel the client connected for, once it sent `CONNECT`.
    pub fn channel(&self) -> Option<ChannelId> {
        self.state.channel()
    }

    /// Handles buffered lines until input runs out or a decision is pending.
    fn process(&mut self, now: Instant) -> Result<(), Error> {
        loop {
            if matches!(
                self.state,
                State::AwaitKey { .. } | State::AwaitPort { .. } | State::Closed
            ) {
                return Ok(());
            }
            let line = match self.framer.next_line() {
                Ok(Some(line)) => {
                    self.hello_deadline = None;
                    line
                }
                Ok(None) => return Ok(()),
                Err(e) => return self.fail(e),
            };
            let result = Command::parse(&line).and_then(|cmd| self.handle_command(cmd, now));
            if let Err(e) = result {
                return self.fail(e);
            }
        }
    }

    fn handle_command(&mut self, cmd: Command<'_>, now: Instant) -> Result<(), Error> {
        let unexpected = |cmd: &Command<'_>, state: &State| Error::UnexpectedCommand {
            command: cmd.name(),
            state: state.name(),
        };
        if cmd == Command::Disconnect {
            debug!("control: DISCONNECT while {}", self.state.name());
            self.close(CloseReason::Disconnect);
            return Ok(());
        }
        match (&mut self.state, cmd) {
            (State::AwaitHmac, Command::Hmac { channel }) => {
                let mut line = b"200 ".to_vec();
                line.extend_from_slice(hex::encode(self.nonce).as_bytes());
                line.push(b'\n');
                self.reply(line);
                self.state = State::AwaitConnect {
                    hmac_channel: channel,
                };
            }
            (State::AwaitConnect { hmac_channel }, Command::Connect { channel, digest }) => {
                if let Some(expected) = *hmac_channel {
                    if expected != channel {
                        return Err(Error::ChannelMismatch {
                            expected,
                            got: channel,
                        });
                    }
                }
                self.state = State::AwaitKey { channel, digest };
                self.decision_deadline = Some(now + self.config.decision_timeout);
                self.events.push_back(ServerEvent::KeyRequested { channel });
            }
            (State::Metadata { builder, .. }, Command::Attribute { name, value }) => {
                builder.add(name, value, self.config.max_attributes)?;
            }
            (State::Metadata { channel, builder }, Command::End) => {
                let channel = *channel;
                let metadata = std::mem::take(builder).finish()?;
                self.state = State::AwaitPort { channel };
                self.decision_deadline = Some(now + self.config.decision_timeout);
                self.events
                    .push_back(ServerEvent::MetadataReady { channel, metadata });
            }
            (State::Streaming { channel }, Command::Ping { channel: pinged }) => {
                if let Some(p) = pinged {
                    if p != *channel {
                        return Err(Error::ChannelMismatch {
                            expected: *channel,
                            got: p,
                        });
                    }
                }
                self.reply(b"201\n".to_vec());
            }
            (state, cmd) => return Err(unexpected(&cmd, state)),
        }
        Ok(())
    }

    fn reply(&mut self, line: Vec<u8>) {
        self.transmit.push_back(line);
    }

    fn fail(&mut self, err: Error) -> Result<(), Error> {
        debug!(
            "control: closing{}: {err}",
            self.state
                .channel()
                .map(|c| format!(" channel {c}"))
                .unwrap_or_default()
        );
        self.reply(err.status().reply_line(&err.to_string()));
        self.close(CloseReason::Error(err.clone()));
        Err(err)
    }

    fn close(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.hello_deadline = None;
        self.handshake_deadline = None;
        self.decision_deadline = None;
        self.keepalive_deadline = None;
        self.events.push_back(ServerEvent::Closed { reason });
    }
}
