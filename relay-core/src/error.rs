//! The one error type of this crate: refusals of caller requests. Bad datagrams are not errors
//! here; they are counted and reported as [`crate::Drop`] values.

use std::fmt;

use ftl_proto::ChannelId;

use crate::types::ViewerId;

/// Why the relay refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No live stream and no viewers on this channel.
    UnknownChannel(ChannelId),
    /// The viewer id is not (or no longer) known.
    UnknownViewer(ViewerId),
    /// The stream has no such video layer.
    UnknownLayer(crate::layers::LayerId),
    /// Starting another stream would exceed `max_streams`.
    TooManyStreams { limit: usize },
    /// Adding a viewer would exceed `max_viewers` in total.
    TooManyViewers { limit: usize },
    /// Adding a viewer would exceed `max_viewers_per_channel`.
    ChannelFull { channel: ChannelId, limit: usize },
    /// The stream's metadata announces no track this relay can forward.
    NoTracks(ChannelId),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownChannel(c) => write!(f, "channel {c} has no stream and no viewers"),
            Error::UnknownViewer(v) => write!(f, "unknown viewer {v}"),
            Error::UnknownLayer(l) => write!(f, "no video layer {l}"),
            Error::TooManyStreams { limit } => write!(f, "stream limit of {limit} reached"),
            Error::TooManyViewers { limit } => write!(f, "viewer limit of {limit} reached"),
            Error::ChannelFull { channel, limit } => {
                write!(f, "channel {channel} has its limit of {limit} viewers")
            }
            Error::NoTracks(c) => write!(f, "channel {c} announced no video and no audio"),
        }
    }
}

impl std::error::Error for Error {}
