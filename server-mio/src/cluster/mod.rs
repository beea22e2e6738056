//! More than one node: a live directory in Redis (`--cluster redis://HOST:PORT/DB`).
//!
//! Each node keeps a record of itself (`itg:node:<id>`: public URL, role, viewers, capacity,
//! delivered bitrate) and one per stream it originates (`itg:stream:<channel>`) in Redis, each
//! with a short TTL refreshed every second, so a node that dies leaves the directory by itself
//! within [`TTL`]; stream starts and stops are also announced on the `itg:events` channel. Every
//! second the node reads the whole directory back, which is what `/api/streams` shows and what
//! viewer placement and edge pulls decide on.
//!
//! Redis is never called from the media loop: [`directory::Directory`] owns a thread with the
//! `redis` crate's blocking client (every call bounded by a timeout) and hands snapshots to the
//! loop through a channel and the loop's `Waker`. With Redis down, local ingest and viewers
//! go on; the thread logs the outage once, retries with back-off and registers again when
//! Redis is back.

pub mod directory;

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a record lives without being refreshed.
pub const TTL: Duration = Duration::from_secs(5);
/// How often records are refreshed and the directory read.
pub const REFRESH: Duration = Duration::from_secs(1);

/// What a node does in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ingest and viewers.
    Any,
    /// Ingest; viewers go to an edge when one has room.
    Origin,
    /// Viewers only; channels are pulled from their origin.
    Edge,
}

/// A node as the directory keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// Its public base URL (`--node-url`), e.g. `https://edge1.example.com:8080`.
    pub url: String,
    pub role: Role,
    /// Viewers connected now, and how many it takes (`--max-viewers`).
    pub viewers: usize,
    pub capacity: usize,
    /// Media delivered to viewers, bits per second.
    pub bitrate_bps: f64,
}

/// A live stream as the directory keeps it: which node originates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub channel: u32,
    /// The origin node's id and URL.
    pub node: String,
    pub url: String,
    /// `ftl` or `whip`.
    pub protocol: String,
    /// Differs for each start of the stream on its origin (edges pull again when it changes).
    #[serde(default)]
    pub epoch: u64,
}

/// What the loop tells the directory thread every second.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalState {
    pub node: NodeRecord,
    pub streams: Vec<StreamRecord>,
}

/// The directory as last read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Whether the last exchange with Redis worked (when not, the lists are the last good ones).
    pub redis_up: bool,
    pub nodes: Vec<NodeRecord>,
    pub streams: Vec<StreamRecord>,
}

impl Snapshot {
    /// The origin of `channel`, if any node announces it.
    pub fn origin_of(&self, channel: u32) -> Option<&StreamRecord> {
        self.streams.iter().find(|s| s.channel == channel)
    }

    pub fn node(&self, id: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// Key of a node's record.
pub fn node_key(id: &str) -> String {
    format!("itg:node:{id}")
}

/// Key of a stream's record.
pub fn stream_key(channel: u32) -> String {
    format!("itg:stream:{channel}")
}

/// The pub/sub channel of stream starts and stops.
pub const EVENTS: &str = "itg:events";
