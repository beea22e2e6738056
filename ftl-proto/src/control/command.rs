//! Client commands: parsing lines into [`Command`]s and formatting them.

use crate::control::auth::DIGEST_LEN;
use crate::types::ChannelId;
use crate::Error;

/// One line a client sends on the control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `HMAC` asks for a nonce. Older clients append their channel id.
    Hmac { channel: Option<ChannelId> },
    /// `CONNECT <channel_id> $<digest hex>`.
    Connect {
        channel: ChannelId,
        digest: [u8; DIGEST_LEN],
    },
    /// `<Name>: <value>`, a metadata attribute.
    Attribute { name: &'a str, value: &'a str },
    /// `.`, the end of the metadata.
    End,
    /// `PING <channel_id>`, the keepalive (the channel is optional here).
    Ping { channel: Option<ChannelId> },
    /// `DISCONNECT`, the end of the stream.
    Disconnect,
}

impl Command<'_> {
    /// The command's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Hmac { .. } => "HMAC",
            Command::Connect { .. } => "CONNECT",
            Command::Attribute { .. } => "attribute",
            Command::End => ".",
            Command::Ping { .. } => "PING",
            Command::Disconnect => "DISCONNECT",
        }
    }

    /// Parses one line (terminator already removed).
    pub fn parse(line: &str) -> Result<Command<'_>, Error> {
        let mut words = line.split(' ');
        let first = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        let malformed = || Error::MalformedCommand(truncate(line));
        match first {
            "HMAC" => match rest.as_slice() {
                [] => Ok(Command::Hmac { channel: None }),
                [ch] => Ok(Command::Hmac {
                    channel: Some(ch.parse()?),
                }),
                _ => Err(malformed()),
            },
            "CONNECT" => match rest.as_slice() {
                [ch, digest] => {
                    let channel = ch.parse()?;
                    let hex_digest = digest.strip_prefix('$').ok_or(Error::MalformedDigest)?;
                    let mut digest = [0u8; DIGEST_LEN];
                    hex::decode_to_slice(hex_digest, &mut digest)
                        .map_err(|_| Error::MalformedDigest)?;
                    Ok(Command::Connect { channel, digest })
                }
                _ => Err(malformed()),
            },
            "." if rest.is_empty() => Ok(Command::End),
            "PING" => match rest.as_slice() {
                [] => Ok(Command::Ping { channel: None }),
                [ch] => Ok(Command::Ping {
                    channel: Some(ch.parse()?),
                }),
                _ => Err(malformed()),
            },
            "DISCONNECT" if rest.is_empty() => Ok(Command::Disconnect),
            _ => match line.split_once(':') {
                Some((name, value)) if is_attribute_name(name) => Ok(Command::Attribute {
                    name,
                    value: value.trim(),
                }),
                _ => Err(Error::UnknownCommand(truncate(line))),
            },
        }
    }

    /// The line as a client sends it, with the reference client's doubled `\r\n\r\n`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let line = match self {
            Command::Hmac { channel: None } => "HMAC".to_owned(),
            Command::Hmac { channel: Some(c) } => format!("HMAC {c}"),
            Command::Connect { channel, digest } => {
                format!("CONNECT {channel} ${}", hex::encode(digest))
            }
            Command::Attribute { name, value } => format!("{name}: {value}"),
            Command::End => ".".to_owned(),
            Command::Ping { channel: None } => "PING".to_owned(),
            Command::Ping { channel: Some(c) } => format!("PING {c}"),
            Command::Disconnect => "DISCONNECT".to_owned(),
        };
        let mut out = line.into_bytes();
        out.extend_from_slice(b"\r\n\r\n");
        out
    }
}

fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Keeps error messages short and printable whatever the peer sent.
fn truncate(line: &str) -> String {
    line.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        assert_eq!(Command::parse("HMAC"), Ok(Command::Hmac { channel: None }));
        assert_eq!(
            Command::parse("HMAC 12"),
            Ok(Command::Hmac {
                channel: Some(ChannelId(12))
            })
        );
        let hexd = "ab".repeat(64);
        assert_eq!(
            Command::parse(&format!("CONNECT 77 ${hexd}")),
            Ok(Command::Connect {
                channel: ChannelId(77),
                digest: [0xab; 64]
            })
        );
        assert_eq!(Command::parse("."), Ok(Command::End));
        assert_eq!(
            Command::parse("PING 77"),
            Ok(Command::Ping {
                channel: Some(ChannelId(77))
            })
        );
        assert_eq!(Command::parse("DISCONNECT"), Ok(Command::Disconnect));
        assert_eq!(
            Command::parse("VideoCodec: H264"),
            Ok(Command::Attribute {
                name: "VideoCodec",
                value: "H264"
            })
        );
    }

    #[test]
    fn round_trips_through_bytes() {
        let cmds = [
            Command::Hmac { channel: None },
            Command::Connect {
                channel: ChannelId(5),
                digest: [7; 64],
            },
            Command::Attribute {
                name: "A",
                value: "b c",
            },
            Command::End,
            Command::Ping {
                channel: Some(ChannelId(5)),
            },
            Command::Disconnect,
        ];
        for c in cmds {
            let bytes = c.to_bytes();
            assert!(bytes.ends_with(b"\r\n\r\n"));
            let text = std::str::from_utf8(&bytes[..bytes.len() - 4]).unwrap();
            assert_eq!(Command::parse(text).unwrap(), c);
        }
    }

    #[test]
    fn malformed_commands() {
        assert!(matches!(
            Command::parse("HELLO"),
            Err(Error::UnknownCommand(_))
        ));
        assert!(matches!(
            Command::parse("hmac"),
            Err(Error::UnknownCommand(_))
        ));
        assert!(matches!(
            Command::parse(": value"),
            Err(Error::UnknownCommand(_))
        ));
        assert!(matches!(
            Command::parse("Bad Name: x"),
            Err(Error::UnknownCommand(_))
        ));
        assert!(matches!(
            Command::parse("HMAC 1 2"),
            Err(Error::MalformedCommand(_))
        ));
        assert!(matches!(
            Command::parse("HMAC x"),
            Err(Error::MalformedCommand(_))
        ));
        assert!(matches!(
            Command::parse("CONNECT 77"),
            Err(Error::MalformedCommand(_))
        ));
        assert!(matches!(
            Command::parse("CONNECT x $00"),
            Err(Error::MalformedCommand(_))
        ));
        assert_eq!(
            Command::parse("CONNECT 7 abcd"),
            Err(Error::MalformedDigest)
        );
        assert_eq!(
            Command::parse("CONNECT 7 $abcd"),
            Err(Error::MalformedDigest)
        );
        let not_hex = "zz".repeat(64);
        assert_eq!(
            Command::parse(&format!("CONNECT 7 ${not_hex}")),
            Err(Error::MalformedDigest)
        );
        let too_long = "ab".repeat(65);
        assert_eq!(
            Command::parse(&format!("CONNECT 7 ${too_long}")),
            Err(Error::MalformedDigest)
        );
        assert!(matches!(
            Command::parse("DISCONNECT now"),
            Err(Error::UnknownCommand(_))
        ));
        assert!(matches!(
            Command::parse("PING 1 2"),
            Err(Error::MalformedCommand(_))
        ));
    }

    #[test]
    fn errors_quote_at_most_64_characters() {
        let long = "X".repeat(500);
        match Command::parse(&long) {
            Err(Error::UnknownCommand(s)) => assert_eq!(s.len(), 64),
            other => panic!("{other:?}"),
        }
    }
}
