//! The FTL control channel (TCP, port 8084): framing, commands, metadata, the HMAC challenge,
//! and the server and client sessions built from them.

pub mod auth;
pub mod client;
pub mod command;
pub mod line;
pub mod metadata;
pub mod server;
pub mod status;

pub use auth::{Nonce, DIGEST_LEN, NONCE_LEN};
pub use client::{ClientCloseReason, ClientConfig, ClientEvent, ClientSession};
pub use command::Command;
pub use metadata::{AudioCodec, AudioTrack, Metadata, ProtocolVersion, VideoCodec, VideoTrack};
pub use server::{CloseReason, ServerConfig, ServerEvent, ServerSession};
pub use status::StatusCode;
