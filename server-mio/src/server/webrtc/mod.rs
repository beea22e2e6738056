//! Every WebRTC peer of the server, on the one UDP port: viewers (WHEP and the WebSocket
//! protocol), WHIP publishers, and the helper thread that builds their `Rtc`s.
//!
//! - [`peers`]: the one table of str0m peers: routing by source address and ICE username,
//!   the timeout heap, `catch_unwind` around every call; viewers fed by the relay.
//! - [`whip`]: publishers: the WHIP endpoint and their RTP into the relay.
//! - [`codec_choice`]: a publisher whose answer names several video codecs: the first video
//!   packet tells its stream's.
//! - [`feedback`]: congestion feedback to publishers (TWCC, REMB, the operator's cap).
//! - [`layers`]: simulcast on the wire: a publisher's RIDs as layers, the WHEP layer extension.
//! - [`pool`]: `Rtc`s built off the loop and handed over through the `mio::Waker`.
//! - [`estimate`]: a simulcast viewer's bandwidth estimate, read for its layer choice.
//! - [`keepalive`]: binding requests made for peers whose ICE sends none once connected.
//! - [`vp8`]: VP8 picture IDs that run on across a viewer's layer switches.

pub(super) mod admission;
pub(super) mod codec_choice;
pub(super) mod estimate;
pub(super) mod feedback;
pub(super) mod keepalive;
pub(super) mod layers;
pub(super) mod peers;
pub(super) mod pool;
pub(super) mod pull;
pub(super) mod tcp;
pub(super) mod vp8;
pub(super) mod whip;
