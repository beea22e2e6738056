//! # ftl-proto: the FTL ingest protocol, without I/O
//!
//! FTL is what OBS (up to 30.2) and Mixer's ftl-sdk speak: a TCP control channel (port 8084)
//! with an HMAC-SHA512 challenge, then H.264 and Opus as RTP over UDP to a port the server
//! hands out. This crate holds the protocol's rules and nothing else:
//!
//! - [`control`]: the control channel. [`control::ServerSession`] and
//!   [`control::ClientSession`] are state machines fed received bytes in arbitrary chunks; they
//!   return bytes to send, events and their next deadline.
//! - [`media`]: zero-copy views and builders for RTP, FTL pings, sender reports and NACKs, the
//!   classification of a media datagram, and H.264 payload and SPS inspection.
//!
//! ## Time, randomness and call order
//! Nothing here reads a clock, draws randomness or touches a socket. Every call that depends on
//! time takes `now: Instant`; the HMAC nonce is drawn by the caller. Sessions follow one shape
//! (the same as str0m's `Rtc`): feed input with `handle_input(bytes, now)`, drain
//! `poll_transmit()` and `poll_event()` until `None`, sleep until `poll_timeout()`, then call
//! `handle_timeout(now)`.
//!
//! ## Hostile input
//! No input can panic or grow memory without bound: lines, buffered bytes and attributes are
//! limited ([`control::ServerConfig`]), packet views check their length once, and every failure
//! is an [`Error`] naming what was wrong. Fuzz targets in the workspace's `fuzz/` prove it.
//!
//! ## Example: a handshake without sockets
//! ```
//! use std::time::Instant;
//! use ftl_proto::control::*;
//! use ftl_proto::{ChannelId, StreamKey};
//!
//! let now = Instant::now();
//! let (channel, key) = StreamKey::parse_obs("77-testkey").unwrap();
//! let mut client = ClientSession::new(
//!     ClientConfig::new(channel, key.clone(), Metadata::reference(77)), now);
//! let mut server = ServerSession::new(ServerConfig::default(), [7; NONCE_LEN], now);
//! for _ in 0..4 {
//!     while let Some(b) = client.poll_transmit() { server.handle_input(&b, now).unwrap(); }
//!     while let Some(ev) = server.poll_event() {
//!         match ev {
//!             ServerEvent::KeyRequested { .. } => server.provide_key(&key, now).unwrap(),
//!             ServerEvent::MetadataReady { .. } => server.assign_port(9000, now).unwrap(),
//!             _ => {}
//!         }
//!     }
//!     while let Some(b) = server.poll_transmit() { client.handle_input(&b, now).unwrap(); }
//! }
//! assert_eq!(client.poll_event(), Some(ClientEvent::Connected { port: 9000 }));
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

pub mod control;
mod error;
pub mod media;
mod types;

pub use error::Error;
pub use types::{ChannelId, Ssrc, StreamKey};
