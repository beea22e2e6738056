//! FTL status codes: the numbers the reference client knows (`ftl_private.h`).

use std::fmt;

/// A status code of a server reply line (`<code> <text>\n`).
///
/// A newtype over the number rather than a closed enum: a client must be able to report any code
/// a server sends, known or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatusCode(pub u16);

impl StatusCode {
    /// Request accepted.
    pub const OK: StatusCode = StatusCode(200);
    /// Reply to `PING`.
    pub const PING_OK: StatusCode = StatusCode(201);
    /// Malformed handshake.
    pub const BAD_REQUEST: StatusCode = StatusCode(400);
    /// The channel is not known / not allowed to stream.
    pub const UNAUTHORIZED: StatusCode = StatusCode(401);
    /// The client's protocol version is too old.
    pub const OLD_VERSION: StatusCode = StatusCode(402);
    /// The audio SSRC collides with another stream's.
    pub const AUDIO_SSRC_COLLISION: StatusCode = StatusCode(403);
    /// The video SSRC collides with another stream's.
    pub const VIDEO_SSRC_COLLISION: StatusCode = StatusCode(404);
    /// The HMAC digest does not match: wrong stream key.
    pub const INVALID_STREAM_KEY: StatusCode = StatusCode(405);
    /// The channel is already streaming.
    pub const CHANNEL_IN_USE: StatusCode = StatusCode(406);
    /// The ingest does not serve the client's region.
    pub const REGION_UNSUPPORTED: StatusCode = StatusCode(407);
    /// No media (or control traffic) arrived in time.
    pub const NO_MEDIA_TIMEOUT: StatusCode = StatusCode(408);
    /// The game is blocked.
    pub const GAME_BLOCKED: StatusCode = StatusCode(409);
    /// The server ended the stream (for example: replaced by a newer session).
    pub const SERVER_TERMINATE: StatusCode = StatusCode(410);
    /// Something went wrong on the server (including a decision that came too late).
    pub const INTERNAL_ERROR: StatusCode = StatusCode(500);

    /// The numeric code.
    pub fn code(self) -> u16 {
        self.0
    }

    /// Whether the code means success (2xx).
    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }

    /// A short default reason phrase for a reply line.
    pub fn default_reason(self) -> &'static str {
        match self.0 {
            200 => "OK",
            201 => "pong",
            400 => "bad request",
            401 => "unauthorized channel",
            402 => "old protocol version",
            403 => "audio SSRC collision",
            404 => "video SSRC collision",
            405 => "invalid stream key",
            406 => "channel already streaming",
            407 => "region unsupported",
            408 => "no media timeout",
            409 => "game blocked",
            410 => "stream terminated by the server",
            500 => "internal server error",
            _ => "error",
        }
    }

    /// Formats a reply line. The reason is flattened to one line without `\r` or `\n` (a stray
    /// line ending would desynchronise the client) and kept short (the client reads 512 bytes).
    pub fn reply_line(self, reason: &str) -> Vec<u8> {
        let clean: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        match clean.trim() {
            "" => format!("{}\n", self.0).into_bytes(),
            text => format!("{} {text}\n", self.0).into_bytes(),
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.default_reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines_are_single_lines() {
        assert_eq!(
            StatusCode::INVALID_STREAM_KEY.reply_line("invalid stream key"),
            b"405 invalid stream key\n"
        );
        assert_eq!(StatusCode::BAD_REQUEST.reply_line("a\r\nb"), b"400 a  b\n");
        assert_eq!(StatusCode::OK.reply_line(""), b"200\n");
        assert!(StatusCode::OK.reply_line(&"x".repeat(1000)).len() < 256);
    }

    #[test]
    fn success_range() {
        assert!(StatusCode::OK.is_success());
        assert!(StatusCode::PING_OK.is_success());
        assert!(!StatusCode::SERVER_TERMINATE.is_success());
    }
}
