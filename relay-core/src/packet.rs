//! A media packet as the relay keeps it: the ingest fields it needs and the payload, stored once
//! and shared by the GOP cache and every viewer.

use std::sync::Arc;
use std::time::Instant;

/// One accepted ingest packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The video layer it belongs to (simulcast; 0 without, and for audio).
    pub layer: crate::layers::LayerId,
    /// Extended ingest sequence number (in its layer's sequence space).
    pub ext: u64,
    /// Ingest RTP timestamp.
    pub ts: u32,
    pub marker: bool,
    /// The first packet of a keyframe: a decoder can start here.
    pub keyframe: bool,
    /// Capture time on the relay's clock (see [`crate::clock`]).
    pub wallclock: Instant,
    pub payload: Arc<[u8]>,
}
