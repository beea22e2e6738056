//! # relay-core: streams, loss repair, GOP cache and fan-out, without I/O
//!
//! Fed by `server-mio` with datagrams and the current time; decides what each viewer receives.
#![forbid(unsafe_code)]

pub use ftl_proto;
