//! Values that leave the relay: per-viewer forwarding decisions, events and datagrams for the
//! ingest client.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ftl_proto::ChannelId;

/// A viewer (or tap), unique for the relay's lifetime: the low 32 bits are a slot that a later
/// viewer may take again, the high 32 bits count the slot's uses. The slot lets a caller keep
/// its own per-viewer state in a vector indexed by [`ViewerId::slot`] (no hashing per
/// forwarded packet); comparing the whole id tells a stale entry from the slot's new owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ViewerId(pub u64);

impl ViewerId {
    /// The slot: small, dense and reused once its viewer left.
    pub fn slot(self) -> usize {
        (self.0 & u64::from(u32::MAX)) as usize
    }
}

/// Why a viewer's video skipped to the next keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The stream's packets waited on this server longer than the deadline before their turn
    /// came (the machine cannot send what all viewers need): a share of the viewers skips, in
    /// turn, so the others stay live.
    Late,
    /// The socket did not take the viewer's datagrams.
    SendFailed,
}

impl fmt::Display for ViewerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Which track a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MediaKind {
    Video,
    Audio,
}

/// One packet for one viewer: the fields of that viewer's outgoing RTP packet. The payload is
/// shared by every viewer (one allocation per ingest packet); only the header differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub viewer: ViewerId,
    pub kind: MediaKind,
    /// The viewer's extended sequence number for this track (also the SRTP index): starts
    /// below 2^15 and runs on without gaps except where a packet was lost upstream for good.
    pub seq: u64,
    /// The viewer's RTP timestamp (the ingest clock rate: 90 kHz video, 48 kHz audio).
    pub timestamp: u32,
    /// When the sender captured this media, mapped to the relay's clock through the sender's
    /// reports; both tracks share the mapping, so audio and video stay in sync.
    pub wallclock: Instant,
    /// RTP marker: the last packet of a video frame.
    pub marker: bool,
    /// The first packet of a keyframe (the point a decoder can start from).
    pub keyframe: bool,
    /// Whether the packet comes from the GOP cache rather than live.
    pub cached: bool,
    pub payload: Arc<[u8]>,
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The client sent `DISCONNECT`.
    Disconnect,
    /// The control connection was lost or timed out.
    ControlLost,
    /// No media arrived for the configured time.
    MediaTimeout,
    /// A new session for the channel replaced this one.
    Replaced,
    /// The server is shutting down.
    Shutdown,
    /// The channel was removed from the key store while live.
    KeyRemoved,
    /// The channel's key was rotated while live: the session that authenticated with the
    /// old key is let go.
    KeyRotated,
}

/// Something the caller should know or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    StreamStarted {
        channel: ChannelId,
    },
    /// The stream ended; its viewers stay attached and resume when the channel goes live again.
    /// On [`EndReason::MediaTimeout`] the caller also closes the control connection.
    StreamEnded {
        channel: ChannelId,
        reason: EndReason,
    },
    /// The stream's video has B-frames (first seen now; said once per stream).
    BFrames {
        channel: ChannelId,
    },
    /// The video's real size or profile changed (read from the SPS).
    VideoFormat {
        channel: ChannelId,
        /// The layer whose format it is (0 without simulcast).
        layer: crate::layers::LayerId,
        width: u32,
        height: u32,
        codec: crate::VideoCodec,
        /// The profile as the codec's SDP parameters spell it (H.264: `42c01f`).
        profile: String,
    },
    ViewerJoined {
        channel: ChannelId,
        viewer: ViewerId,
    },
    ViewerLeft {
        channel: ChannelId,
        viewer: ViewerId,
    },
}

/// What the relay asks its caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this packet to this viewer.
    Forward(Forward),
    /// Send a datagram to the stream's ingest client from the stream's media port (ping echo,
    /// NACK).
    Transmit {
        channel: ChannelId,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    Event(Event),
    /// Ask the stream's encoder for a keyframe (a PLI to a WebRTC publisher). Only streams fed
    /// by a source that can be asked get these, at most one per
    /// [`crate::RelayConfig::upstream_keyframe_interval`].
    RequestKeyframe {
        channel: ChannelId,
        /// Of this video layer (simulcast; 0 without).
        layer: crate::layers::LayerId,
    },
}

/// What happened to one ingest datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingest {
    /// Media accepted (and forwarded to viewers that can take it).
    Media(MediaKind),
    /// A retransmission that filled a gap we had asked for.
    Recovered(MediaKind),
    /// A ping, echoed.
    Ping,
    /// A sender report, used for A/V timing.
    SenderReport,
    /// Not used; counted.
    Dropped(Drop),
}

/// Why an ingest datagram was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drop {
    /// No live stream on this channel.
    NotLive,
    /// From another IP than the stream's control connection (spoofed or stray), or through the
    /// other source kind than the stream was started with.
    ForeignSource,
    /// Well-formed, but not one of the stream's SSRC and payload type pairs.
    ForeignSsrc,
    /// Not parseable as anything FTL sends.
    Invalid(ftl_proto::Error),
    /// Already received.
    Duplicate,
    /// Older than the loss-tracking window.
    TooOld,
    /// A large jump in sequence numbers, waiting for a second packet to confirm a restart.
    SequenceJump,
    /// Audio before the first video packet, or larger than any Opus packet: OBS's speed test.
    SpeedTest,
    /// A video layer past [`crate::layers::MAX_LAYERS`] (or a second one from FTL).
    ExtraLayer,
}

/// One whole keyframe of a live stream, as its RTP payloads: what a still picture of the
/// stream (a thumbnail) is decoded from, away from the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyframe {
    pub codec: crate::VideoCodec,
    /// The layer it is from (the largest picture).
    pub layer: crate::layers::LayerId,
    /// Its RTP timestamp: a new value is a new keyframe.
    pub ts: u32,
    /// The picture size its parameter set declares, when one was read.
    pub size: Option<(u32, u32)>,
    pub payloads: Vec<Arc<[u8]>>,
}
