//! Newtypes for values that are easy to mix up on the wire.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A channel id as it travels in clear on the control channel (`CONNECT <channel_id> ...`).
///
/// The reference client reads it with C's `atol`, so ids of 2^31 and more print negative there;
/// [`ChannelId::MAX`] keeps ids inside the range every client handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId(pub u32);

impl ChannelId {
    /// The largest channel id every client can send correctly.
    pub const MAX: u32 = i32::MAX as u32;
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for ChannelId {
    type Err = Error;

    /// Decimal digits only (no sign, no spaces), at most [`ChannelId::MAX`].
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::MalformedCommand(format!("channel id {s:?}")));
        }
        match s.parse::<u32>() {
            Ok(v) if v <= ChannelId::MAX => Ok(ChannelId(v)),
            _ => Err(Error::MalformedCommand(format!("channel id {s:?}"))),
        }
    }
}

/// An RTP synchronisation source identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ssrc(pub u32);

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The secret half of an OBS stream key: the HMAC key. Its `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamKey(Vec<u8>);

impl StreamKey {
    /// Wraps a secret. Any bytes are allowed; OBS keys are printable ASCII.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        StreamKey(secret.into())
    }

    /// The secret's bytes, the HMAC-SHA512 key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Splits an OBS stream key `<channel_id>-<secret>` the way the reference client does: a
    /// leading `re_` is stripped, the split happens at the first `-`, `,` or `_`, and the channel
    /// id must be decimal. Unlike the client's `atol`, junk in the id is an error, not zero.
    pub fn parse_obs(obs_key: &str) -> Result<(ChannelId, StreamKey), Error> {
        let s = obs_key.trim();
        let s = s.strip_prefix("re_").unwrap_or(s);
        let (id, secret) = s
            .split_once(['-', ',', '_'])
            .ok_or(Error::InvalidStreamKey)?;
        let channel = id
            .parse::<ChannelId>()
            .map_err(|_| Error::InvalidStreamKey)?;
        if secret.is_empty() {
            return Err(Error::InvalidStreamKey);
        }
        Ok((channel, StreamKey::new(secret.as_bytes())))
    }

    /// Formats the OBS stream key for a channel: `<channel_id>-<secret>`.
    pub fn to_obs(&self, channel: ChannelId) -> String {
        format!("{channel}-{}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamKey(<{} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obs_key_splits_like_the_reference_client() {
        let (c, k) = StreamKey::parse_obs("77-abc-def").unwrap();
        assert_eq!(c, ChannelId(77));
        assert_eq!(k.as_bytes(), b"abc-def");
        let (c, k) = StreamKey::parse_obs("re_12_secret").unwrap();
        assert_eq!((c, k.as_bytes()), (ChannelId(12), &b"secret"[..]));
        let (c, _) = StreamKey::parse_obs("5,x").unwrap();
        assert_eq!(c, ChannelId(5));
        assert_eq!(k_to_obs(), "9-s3cret");
    }

    fn k_to_obs() -> String {
        StreamKey::new("s3cret").to_obs(ChannelId(9))
    }

    #[test]
    fn obs_key_rejects_junk() {
        for bad in [
            "",
            "77",
            "77-",
            "x-abc",
            "-abc",
            "-1-abc",
            "2147483648-abc",
            "1 2-abc",
        ] {
            assert_eq!(
                StreamKey::parse_obs(bad),
                Err(Error::InvalidStreamKey),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let k = StreamKey::new("hunter2");
        assert!(!format!("{k:?}").contains("hunter2"));
    }

    #[test]
    fn channel_ids_are_decimal_and_bounded() {
        assert_eq!("0".parse::<ChannelId>().unwrap(), ChannelId(0));
        assert_eq!(
            "2147483647".parse::<ChannelId>().unwrap(),
            ChannelId(2147483647)
        );
        for bad in ["", "+1", "-1", "2147483648", "99999999999", "1a", " 1"] {
            assert!(bad.parse::<ChannelId>().is_err(), "{bad}");
        }
    }
}
