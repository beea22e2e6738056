//! # relay-core: streams, loss repair, GOP cache and fan-out, without I/O
//!
//! Everything that decides what happens to a media packet between the FTL client and each
//! viewer, as a pure state machine:
//!
//! - **Streams** ([`Relay::start_stream`], [`Relay::stop_stream`]): one per channel, started
//!   from an FTL control session's metadata and peer address, or for RTP that a WebRTC peer
//!   (a WHIP publisher) already decrypted and repaired ([`StreamParams`], fed with
//!   [`Relay::handle_rtp`]); ended on `DISCONNECT`, control loss, replacement, or when media
//!   stops for `media_timeout`. A stream from a WebRTC peer can be asked for keyframes
//!   ([`Output::RequestKeyframe`]) when the GOP cache cannot serve a viewer.
//! - **Ingest validation** ([`Relay::handle_datagram`]): only the peer's IP, only the announced
//!   SSRC and payload type pairs; everything else is counted and dropped ([`Drop`]). OBS's
//!   speed-test burst on the audio SSRC is never forwarded nor NACKed.
//! - **Loss repair upstream**: sequence numbers extended once ([`seq`]), gaps NACKed on a
//!   bounded schedule ([`nack`]), duplicates and retransmissions recognised; pings echoed;
//!   sender reports map RTP time to the relay's clock for A/V sync ([`clock`]).
//! - **GOP cache** ([`gop`]) and **fan-out** ([`viewer`]): a joining viewer gets the latest GOP
//!   at once with compressed timestamps, then live packets renumbered for its own tracks; a
//!   viewer that falls behind skips to the next keyframe.
//! - **Stats** ([`Relay::stream_stats`], [`Relay::viewer_stats`]).
//!
//! ## Call order
//! Feed inputs with `now` (`handle_datagram`, `add_viewer`, `report_backlog`, ...), drain
//! [`Relay::poll_output`] until `None`, sleep until [`Relay::poll_timeout`], then call
//! [`Relay::handle_timeout`]. Nothing here reads a clock, draws randomness or touches a socket,
//! so the same inputs always give the same outputs.
//!
//! ## Hostile input
//! No datagram can panic the relay or grow its memory without bound: loss tracking, the GOP
//! cache, duplicate windows and viewer counts are all bounded by [`RelayConfig`].
//!
//! ## Example
//! ```
//! use std::time::Instant;
//! use relay_core::*;
//! use ftl_proto::{ChannelId, control::Metadata, media::MediaParams};
//!
//! let now = Instant::now();
//! let mut relay = Relay::new(RelayConfig::default());
//! let params = StreamParams::Ftl {
//!     media: MediaParams::from_metadata(&Metadata::reference(77)),
//!     peer_ip: "127.0.0.1".parse().unwrap(),
//! };
//! relay.start_stream(ChannelId(77), params, now).unwrap();
//! let viewer = relay.add_viewer(ChannelId(77), now).unwrap();
//! while let Some(out) = relay.poll_output() {
//!     if let Output::Forward(f) = out { assert_eq!(f.viewer, viewer); }
//! }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod clock;
pub mod codec;
pub mod config;
mod error;
pub mod gop;
mod ids;
pub mod ingest_rate;
pub mod layers;
pub mod nack;
mod packet;
mod relay;
pub mod repair;
pub mod seq;
pub mod stats;
mod stream;
mod types;
pub mod viewer;

pub use codec::{VideoCodec, VideoFormat, VideoInfo};
pub use config::{NackConfig, RelayConfig};
pub use error::Error;
pub use ftl_proto;
pub use layers::{LayerChooser, LayerId, LinkReport, Quality, MAX_LAYERS};
pub use packet::Packet;
pub use relay::{Relay, TapLayer};
pub use repair::RepairBudget;
pub use stats::{LayerStats, Rates, StreamCounters, StreamStats, ViewerStats};
pub use stream::{RtpIn, StreamParams, MAX_OPUS_PACKET};
pub use types::{
    Drop, EndReason, Event, Forward, Ingest, Keyframe, MediaKind, Output, SkipReason, ViewerId,
};
