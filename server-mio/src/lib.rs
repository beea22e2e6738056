//! # server-mio: the ITG server
//!
//! The only crate of the workspace that does I/O. [`server::Server`] binds the FTL, HTTP and
//! WebRTC sockets and runs one `mio` poll loop that feeds `ftl-proto` sessions, the
//! `relay-core` relay and one str0m `Rtc` per viewer. [`keys`] is the stream key store,
//! [`config`] the command line, [`client`] the project's own FTL client and
//! [`whip_client`] its WHIP sibling.

pub mod capture;
pub mod client;
pub mod config;
pub mod hooks;
pub mod keys;
pub mod probe;
pub mod replay;
pub mod server;
pub mod whip_client;
