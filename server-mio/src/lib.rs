//! # server-mio: the ITG server
//!
//! The only crate of the workspace that does I/O. [`server::Server`] binds the FTL, HTTP and
//! WebRTC sockets and runs one `mio` poll loop that feeds `ftl-proto` sessions, the
//! `relay-core` relay and one str0m `Rtc` per peer (viewers and WHIP publishers). [`keys`] is
//! the stream key store, [`config`] the command line, [`tools`] the FTL and WHIP clients, the
//! probe viewer and the replay of captures.

pub mod capture;
pub mod client;
pub mod cluster;
pub mod config;
pub mod dtls;
pub mod dual_stack;
pub mod file_stamp;
pub mod hooks;
pub mod keys;
pub mod record;
pub mod recv_stamp;
pub mod send_batch;
pub mod server;
pub mod thumbnail;
pub mod tools;
