//! What flows on an FTL media port (UDP): RTP, FTL pings, sender reports, NACKs, and the H.264
//! inside the video RTP payloads. Views check lengths once at parse time and then cannot panic;
//! builders write what the reference client writes.

pub(crate) mod bytes;
pub mod classify;
pub mod h264;
pub mod nack;
pub mod packetize;
pub mod ping;
pub mod rtp;
pub mod sender_report;
pub mod sps;

pub use classify::{classify, MediaDatagram, MediaParams, TrackParams};
pub use h264::{Fragment, NalType, PayloadInfo, SliceType};
pub use nack::{Nack, NackEntry};
pub use ping::{build_ping, FtlPing};
pub use rtp::{RtpHeader, RtpPacket};
pub use sender_report::SenderReport;
pub use sps::Sps;
