//! Ingest sessions as pcap files: written by the server (`--capture DIR`), read back by the
//! replay library and the re-stream command.

pub mod frame;
pub mod reader;
pub mod writer;

pub use reader::{read_sessions, Recorded, WhipExchange};
pub use writer::{Limits, SessionCapture};
