//! Recording: every stream kept as a fragmented MP4 that any player opens.
//!
//! - [`assemble`]: the relay tap's packets to access units and Opus packets, by GOP.
//! - [`fmp4`]: the muxer (init segment, one fragment per GOP).
pub mod fmp4;
pub mod assemble;
