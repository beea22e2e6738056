//! The tools beside the server, for users, tests and benchmarks: the FTL client and its WHIP
//! sibling (publish files as an encoder would), the probe viewer (a str0m viewer that records
//! what it gets, used by the tests and the load generator), the network link both use (UDP
//! or ICE-TCP), and the replay of captured
//! sessions through the cores.

pub mod client;
pub mod probe;
pub mod replay;
pub mod whip_client;
