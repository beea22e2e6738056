//! Recording: every stream kept as a fragmented MP4 that any player opens.
//!
//! - [`assemble`]: the relay tap's packets to access units and Opus packets, by GOP.
//! - [`fmp4`]: the boxes (init segment, one fragment per GOP).
//! - [`mux`]: one file's muxing state: GOPs in, bytes to append out.
//! - [`writer`]: the thread that writes files and applies retention, behind a bounded queue.
//! - [`index`]: file names, listing, durations.
//! - [`reader`]: the thread that lists, reads and deletes them for HTTP, behind a bounded queue.
pub mod assemble;
pub mod fmp4;
pub mod index;
pub mod mux;
pub mod reader;
pub mod writer;
