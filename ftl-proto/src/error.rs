//! The one error type of this crate.
//!
//! Variants are grouped by who is at fault (the rustls pattern): the peer that sent the bytes
//! (`Peer*`-like variants of the control channel and every media parse error), the far end of a
//! client session (the server's replies), time running out, and the caller using the API out of
//! order. Each `Display` names the offending value so a log line alone explains a refusal.

use std::fmt;

use crate::control::StatusCode;
use crate::types::ChannelId;

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    // --- control channel: the client sent something wrong ---
    /// A line grew past the configured limit before its terminating `\n`.
    LineTooLong { limit: usize },
    /// More unprocessed bytes are pending than the configured limit (pipelining abuse).
    BufferFull { limit: usize },
    /// A line is not valid UTF-8.
    NotUtf8,
    /// The first word of a line is no FTL command and the line is no attribute.
    UnknownCommand(String),
    /// A known command arrived in a state where it is not allowed.
    UnexpectedCommand {
        command: &'static str,
        state: &'static str,
    },
    /// A command's arguments are malformed (missing channel id, extra words, ...).
    MalformedCommand(String),
    /// `CONNECT` named another channel than the preceding `HMAC <channel>` request.
    ChannelMismatch { expected: ChannelId, got: ChannelId },
    /// The digest after `$` is not 128 hexadecimal characters.
    MalformedDigest,
    /// The digest does not match the channel's key: wrong stream key.
    DigestMismatch { channel: ChannelId },
    /// The caller said the channel does not exist.
    UnknownChannel { channel: ChannelId },
    /// An attribute value is not what its name requires.
    BadAttribute {
        name: String,
        value: String,
        reason: &'static str,
    },
    /// The same typed attribute was sent twice.
    DuplicateAttribute(String),
    /// More attributes than the configured limit.
    TooManyAttributes { limit: usize },
    /// A required attribute was missing at the end-of-metadata line.
    MissingAttribute(&'static str),
    /// A codec no browser can receive through a relay that does not transcode.
    UnsupportedCodec { kind: &'static str, codec: String },
    /// Neither `Video: true` nor `Audio: true` was announced.
    NoTracks,
    /// Video and audio announced the same payload type.
    PayloadTypeCollision(u8),
    /// Video and audio announced the same SSRC.
    SsrcCollision(u32),
    /// Input arrived after the session ended (for example after `DISCONNECT`).
    SessionClosed,

    // --- control channel, client side: the server answered something wrong ---
    /// A reply line the client cannot parse.
    BadReply(String),
    /// The server refused with a status code.
    Refused { status: StatusCode, reason: String },

    // --- time ---
    /// No complete line arrived within the configured first-line deadline.
    HelloTimeout,
    /// The handshake did not complete within the configured deadline.
    HandshakeTimeout,
    /// Nothing was heard from the peer within the keepalive timeout.
    KeepaliveTimeout,
    /// The caller did not answer a decision (key lookup, port assignment) in time.
    DecisionTimeout,
    /// The server did not answer a request within the reply timeout.
    ReplyTimeout,

    // --- media: the datagram is malformed ---
    /// The buffer is shorter than the structure needs.
    Truncated {
        what: &'static str,
        needed: usize,
        got: usize,
    },
    /// The RTP/RTCP version field is not 2.
    BadVersion(u8),
    /// The padding count is zero or runs past the packet.
    BadPadding(u8),
    /// The packet type does not match the structure being parsed.
    WrongPacketType { what: &'static str, got: u8 },
    /// An H.264 payload or parameter set is malformed.
    BadH264(&'static str),

    // --- the caller used the API wrongly ---
    /// A stream key string is not `<channel>-<secret>`.
    InvalidStreamKey,
    /// A call that does not fit the session's current state.
    InvalidState(&'static str),
}

impl Error {
    /// The FTL status code a server sends when it ends a session for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::DigestMismatch { .. } => StatusCode::INVALID_STREAM_KEY,
            Error::UnknownChannel { .. } => StatusCode::UNAUTHORIZED,
            Error::SsrcCollision(_) => StatusCode::AUDIO_SSRC_COLLISION,
            Error::HelloTimeout | Error::HandshakeTimeout | Error::KeepaliveTimeout => {
                StatusCode::NO_MEDIA_TIMEOUT
            }
            Error::DecisionTimeout | Error::InvalidState(_) => StatusCode::INTERNAL_ERROR,
            Error::Refused { status, .. } => *status,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::LineTooLong { limit } => write!(f, "line longer than {limit} bytes"),
            Error::BufferFull { limit } => write!(f, "more than {limit} bytes pending"),
            Error::NotUtf8 => f.write_str("line is not UTF-8"),
            Error::UnknownCommand(c) => write!(f, "unknown command {c:?}"),
            Error::UnexpectedCommand { command, state } => {
                write!(f, "command {command} not allowed while {state}")
            }
            Error::MalformedCommand(c) => write!(f, "malformed command {c:?}"),
            Error::ChannelMismatch { expected, got } => {
                write!(
                    f,
                    "CONNECT for channel {got} after HMAC for channel {expected}"
                )
            }
            Error::MalformedDigest => f.write_str("digest is not 128 hex characters"),
            Error::DigestMismatch { channel } => {
                write!(f, "wrong stream key for channel {channel}")
            }
            Error::UnknownChannel { channel } => write!(f, "unknown channel {channel}"),
            Error::BadAttribute {
                name,
                value,
                reason,
            } => write!(f, "attribute {name}: {value:?}: {reason}"),
            Error::DuplicateAttribute(n) => write!(f, "attribute {n} sent twice"),
            Error::TooManyAttributes { limit } => write!(f, "more than {limit} attributes"),
            Error::MissingAttribute(n) => write!(f, "missing attribute {n}"),
            Error::UnsupportedCodec { kind, codec } => {
                write!(f, "unsupported {kind} codec {codec:?}")
            }
            Error::NoTracks => f.write_str("neither video nor audio announced"),
            Error::PayloadTypeCollision(pt) => {
                write!(f, "video and audio share payload type {pt}")
            }
            Error::SsrcCollision(s) => write!(f, "video and audio share SSRC {s}"),
            Error::SessionClosed => f.write_str("session already closed"),
            Error::BadReply(r) => write!(f, "unexpected reply {r:?}"),
            Error::Refused { status, reason } => {
                write!(f, "refused with {}: {reason}", status.code())
            }
            Error::HelloTimeout => f.write_str("no command within the first-line deadline"),
            Error::HandshakeTimeout => f.write_str("handshake deadline passed"),
            Error::KeepaliveTimeout => f.write_str("keepalive timeout"),
            Error::DecisionTimeout => f.write_str("no decision in time (key lookup or port)"),
            Error::ReplyTimeout => f.write_str("no reply in time"),
            Error::Truncated { what, needed, got } => {
                write!(f, "{what}: need {needed} bytes, got {got}")
            }
            Error::BadVersion(v) => write!(f, "version {v}, expected 2"),
            Error::BadPadding(p) => write!(f, "padding count {p} invalid"),
            Error::WrongPacketType { what, got } => {
                write!(f, "{what}: unexpected packet type {got}")
            }
            Error::BadH264(why) => write!(f, "malformed H.264: {why}"),
            Error::InvalidStreamKey => {
                f.write_str("stream key must be <channel>-<secret> with a decimal channel")
            }
            Error::InvalidState(why) => write!(f, "invalid call: {why}"),
        }
    }
}

impl std::error::Error for Error {}
